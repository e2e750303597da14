//! The schema of `/etc/jeos/init.json`, the file builder writes into the root filesystem
//! and guest-init reads at boot (feature `config`).
//!
//! The JSON mirrors the recipe's `[system]`, `[network]`, `[[service]]` and `[[test.check]]`
//! tables. Unknown keys are rejected so a builder/init version skew fails loudly.
//!
//! ```json
//! {
//!   "hostname": "nginx",
//!   "network": "dhcp",
//!   "services": [{
//!     "name": "nginx", "exec": ["/usr/sbin/nginx", "-g", "daemon off;"],
//!     "restart": "always", "ready": { "tcp": 80, "timeout_ms": 20000 }
//!   }],
//!   "checks": [{ "name": "serves the page",
//!                "http": { "port": 80, "path": "/", "status": 200, "body_contains": "hello" } }]
//! }
//! ```
//!
//! `tasks` (optional; absent in configurations written before tasks existed) are run to
//! completion at boot, before the services they name:
//! `{"name": "initdb", "exec": [...], "when": "first-boot", "user": "postgres",
//! "timeout_ms": 600000, "before": ["postgres"]}`. `runtime_dirs` entries may carry
//! `content` (a file) or `symlink` (a link target) instead of being directories.
//!
//! `network` is `"none"`, `"dhcp"` (default) or
//! `{"static": {"address": "10.0.2.15", "prefix": 24, "gateway": "10.0.2.2", "dns": ["10.0.2.3"]}}`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Where guest-init reads its configuration.
pub const CONFIG_PATH: &str = "/etc/jeos/init.json";

/// Default readiness-probe timeout per service.
pub const DEFAULT_READY_TIMEOUT_MS: u64 = 30_000;
/// Default timeout for one check.
pub const DEFAULT_CHECK_TIMEOUT_MS: u64 = 10_000;

/// The whole `/etc/jeos/init.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// Host name set with `sethostname`; default `jeos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// How the first non-loopback interface is configured.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Remount the root filesystem read-write at boot (it is mounted read-only by default).
    #[serde(default)]
    pub root_rw: bool,
    /// Services, started in order of their `after` dependencies (then file order).
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Checks run in test mode (`jeos.test=1`), in file order.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    /// Checks the host runs (`from = "host"`: `jeos test` through a forwarded port, after
    /// the guest's own checks). guest-init never runs them; with any declared, it stays up
    /// in test mode after its `done` line until the host releases it (a power-off request:
    /// the ACPI power button or the vsock control port), bounded by `test_timeout_ms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_checks: Vec<CheckConfig>,
    /// Overall budget for the checks in test mode, from the ready line.
    #[serde(default = "default_test_timeout_ms")]
    pub test_timeout_ms: u64,
    /// How long services get between SIGTERM and SIGKILL at shutdown.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Directories created on the fresh `/run` and `/tmp` tmpfs at boot: what packages'
    /// `tmpfiles.d` entries ask for there (the build applies the others to the image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_dirs: Vec<RuntimeDirConfig>,
    /// Tasks: programs run to completion at boot, supervised like services (see
    /// [`InitConfig::units`]). Absent in configurations written before tasks existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskConfig>,
    /// Deploy-time properties and their defaults (the recipe's `[[ovf.property]]` and the
    /// well-known `jeos.*` keys); the OVF environment, a NoCloud seed or fw_cfg override
    /// them at boot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// Files rendered at boot from the properties, before services start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_files: Vec<BootFileConfig>,
}

/// Where first-boot tasks leave their markers (`<name>.done`) on the root file system.
pub const TASK_MARKER_DIR: &str = "/var/lib/jeos/tasks";

/// Default deadline of a task.
pub const DEFAULT_TASK_TIMEOUT_MS: u64 = 300_000;

/// When a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskWhen {
    /// Once; a marker in [`TASK_MARKER_DIR`] records that it succeeded.
    #[default]
    FirstBoot,
    /// On every boot.
    EveryBoot,
}

/// One task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Unique among services and tasks; the console prefix.
    pub name: String,
    /// Program (absolute path) and arguments.
    pub exec: Vec<String>,
    /// First boot only or every boot.
    #[serde(default)]
    pub when: TaskWhen,
    /// User name or numeric uid (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group name or numeric gid (default the user's primary group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Working directory (default `/`, or the user's home if it exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Kill it and fail the boot after this long (default 5 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Services that start only after this task succeeded. Empty together with `after`:
    /// every service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<String>,
    /// Services that must be ready before the task runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

impl TaskConfig {
    /// The task's deadline in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TASK_TIMEOUT_MS)
    }

    /// The marker of a first-boot task (`None` for every-boot tasks).
    pub fn marker(&self) -> Option<String> {
        (self.when == TaskWhen::FirstBoot).then(|| format!("{TASK_MARKER_DIR}/{}.done", self.name))
    }

    fn runs_before(&self, service: &str) -> bool {
        if self.before.is_empty() && self.after.is_empty() {
            return true;
        }
        self.before.iter().any(|b| b == service)
    }
}

/// Where boot-time files are written; the image has a symlink at each file's path.
pub const BOOT_FILES_DIR: &str = "/run/jeos/files";

/// Where the image keeps boot-time templates (owner and mode as the rendered file gets).
pub const BOOT_TEMPLATES_DIR: &str = "/usr/lib/jeos/boot-templates";

/// A `[[file]] template-at = "boot"` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFileConfig {
    /// Absolute path in the appliance (a symlink into [`BOOT_FILES_DIR`]).
    pub path: String,
}

impl BootFileConfig {
    /// Where the rendered file lives: [`BOOT_FILES_DIR`] + the path.
    pub fn runtime_path(&self) -> String {
        format!("{BOOT_FILES_DIR}/{}", self.path.trim_start_matches('/'))
    }

    /// The template (`{{ovf.<key>}}` placeholders): [`BOOT_TEMPLATES_DIR`] + the path; its
    /// owner and mode are the rendered file's.
    pub fn template_path(&self) -> String {
        format!("{BOOT_TEMPLATES_DIR}/{}", self.path.trim_start_matches('/'))
    }
}

/// One directory to create at boot under `/run` or `/tmp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeDirConfig {
    /// Absolute path below `/run/` or `/tmp/`.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Create a file with this content instead of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Create a symbolic link to this target instead of a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink: Option<String>,
}

impl RuntimeDirConfig {
    /// Whether the path is absolute, below `/run/` or `/tmp/`, and free of `..`.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        (self.path.starts_with("/run/") || self.path.starts_with("/tmp/"))
            && !self.path.split('/').any(|c| c == ".." || c == ".")
    }
}

fn default_test_timeout_ms() -> u64 {
    120_000
}

fn default_shutdown_timeout_ms() -> u64 {
    10_000
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            hostname: None,
            network: NetworkConfig::default(),
            root_rw: false,
            services: Vec::new(),
            checks: Vec::new(),
            host_checks: Vec::new(),
            test_timeout_ms: default_test_timeout_ms(),
            shutdown_timeout_ms: default_shutdown_timeout_ms(),
            runtime_dirs: Vec::new(),
            tasks: Vec::new(),
            properties: BTreeMap::new(),
            boot_files: Vec::new(),
        }
    }
}

/// Network configuration of the first non-loopback interface.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkConfig {
    /// Only loopback.
    None,
    /// DHCPv4.
    #[default]
    Dhcp,
    /// A fixed address.
    Static(StaticNetworkConfig),
}

/// A fixed IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticIpv6Config {
    /// Interface address.
    pub address: Ipv6Addr,
    /// Prefix length (0..=128).
    pub prefix: u8,
    /// Default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv6Addr>,
}

/// A fixed IPv4 configuration (plus, optionally, IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNetworkConfig {
    /// Interface address.
    pub address: Ipv4Addr,
    /// Prefix length (0..=32).
    pub prefix: u8,
    /// Default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Name servers written to `/run/resolv.conf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// A static IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<StaticIpv6Config>,
}

/// When a service is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// When it exits non-zero or is killed by a signal.
    OnFailure,
    /// Whenever it exits.
    Always,
}

/// One supervised service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique name, used as the console prefix.
    pub name: String,
    /// Program and arguments; the program is an absolute path (no `PATH` search).
    pub exec: Vec<String>,
    /// User name or numeric uid (default root), resolved from `/etc/passwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group name or numeric gid (default the user's primary group), from `/etc/group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Extra environment variables (on top of `PATH`, `HOME`, `USER`, `LOGNAME`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Working directory (default `/`, or the user's home if it exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Services that must be ready before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Readiness probe; without one the service is ready as soon as it is started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyConfig>,
}

/// A readiness probe: one [`Probe`] and its timeout. In JSON the probe is one key of the
/// object (`{"tcp": 80, "timeout_ms": 5000}`), see [`ReadyWire`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReadyWire", into = "ReadyWire")]
pub struct ReadyConfig {
    /// What must succeed.
    pub probe: Probe,
    /// Give up after this long (default 30 s).
    pub timeout_ms: Option<u64>,
}

/// [`ReadyConfig`] as JSON: exactly one of `tcp`, `file`, `command`, `http`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyWire {
    /// Ready when 127.0.0.1:`tcp` accepts a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<u16>,
    /// Ready when this path exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Ready when this command exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Ready when an HTTP GET answers 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbeConfig>,
    /// Give up after this long (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Target of an HTTP readiness probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeConfig {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Request path (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_path() -> String {
    "/".to_owned()
}

/// What a readiness probe waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// TCP connect to 127.0.0.1:port.
    Tcp(u16),
    /// Path exists.
    File(String),
    /// Command exits 0.
    Command(Vec<String>),
    /// HTTP GET answers 2xx/3xx.
    Http(HttpProbeConfig),
}

impl TryFrom<ReadyWire> for ReadyConfig {
    type Error = ConfigError;

    fn try_from(wire: ReadyWire) -> Result<Self, ConfigError> {
        let mut probes = Vec::new();
        probes.extend(wire.tcp.map(Probe::Tcp));
        probes.extend(wire.file.map(Probe::File));
        probes.extend(wire.command.map(Probe::Command));
        probes.extend(wire.http.map(Probe::Http));
        match (probes.pop(), probes.is_empty()) {
            (Some(probe), true) => Ok(Self {
                probe,
                timeout_ms: wire.timeout_ms,
            }),
            _ => Err(kind_error(ConfigError::ProbeKind)),
        }
    }
}

impl From<ReadyConfig> for ReadyWire {
    fn from(config: ReadyConfig) -> Self {
        let mut wire = ReadyWire {
            timeout_ms: config.timeout_ms,
            ..ReadyWire::default()
        };
        match config.probe {
            Probe::Tcp(port) => wire.tcp = Some(port),
            Probe::File(path) => wire.file = Some(path),
            Probe::Command(argv) => wire.command = Some(argv),
            Probe::Http(http) => wire.http = Some(http),
        }
        wire
    }
}

impl ReadyConfig {
    /// A probe with the default timeout.
    pub fn new(probe: Probe) -> Self {
        Self {
            probe,
            timeout_ms: None,
        }
    }

    /// The probe timeout in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_READY_TIMEOUT_MS)
    }
}

/// One test check: a name, one [`CheckKind`] and a timeout. In JSON the kind is one key of
/// the object (`{"name": "page", "http": {...}}`), see [`CheckWire`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CheckWire", into = "CheckWire")]
pub struct CheckConfig {
    /// Name printed in the result line.
    pub name: String,
    /// What is checked.
    pub kind: CheckKind,
    /// Timeout for this check (default 10 s).
    pub timeout_ms: Option<u64>,
}

/// [`CheckConfig`] as JSON: a name plus exactly one of `http`, `tcp`, `command`, `file`,
/// `service`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckWire {
    /// Name printed in the result line.
    pub name: String,
    /// HTTP GET against 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheckConfig>,
    /// TCP connect to 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheckConfig>,
    /// Run a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheckConfig>,
    /// A path exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileCheckConfig>,
    /// A service is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceCheckConfig>,
    /// Timeout for this check (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// HTTP check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckConfig {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Request path (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Expected status (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// The body must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
}

fn default_status() -> u16 {
    200
}

/// TCP check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheckConfig {
    /// Port on 127.0.0.1.
    pub port: u16,
}

/// Command check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCheckConfig {
    /// Program (absolute path) and arguments.
    pub run: Vec<String>,
    /// Expected exit code (default 0).
    #[serde(default)]
    pub exit_code: i32,
    /// Standard output must contain this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_contains: Option<String>,
}

/// File check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCheckConfig {
    /// Absolute path that must exist.
    pub path: String,
}

/// Service check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCheckConfig {
    /// Name of a configured service that must be running.
    pub name: String,
}

/// What a check tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// HTTP GET.
    Http(HttpCheckConfig),
    /// TCP connect.
    Tcp(TcpCheckConfig),
    /// Run a command.
    Command(CommandCheckConfig),
    /// Path exists.
    File(FileCheckConfig),
    /// Service running.
    Service(ServiceCheckConfig),
}

impl TryFrom<CheckWire> for CheckConfig {
    type Error = ConfigError;

    fn try_from(wire: CheckWire) -> Result<Self, ConfigError> {
        let mut kinds = Vec::new();
        kinds.extend(wire.http.map(CheckKind::Http));
        kinds.extend(wire.tcp.map(CheckKind::Tcp));
        kinds.extend(wire.command.map(CheckKind::Command));
        kinds.extend(wire.file.map(CheckKind::File));
        kinds.extend(wire.service.map(CheckKind::Service));
        match (kinds.pop(), kinds.is_empty()) {
            (Some(kind), true) => Ok(Self {
                name: wire.name,
                kind,
                timeout_ms: wire.timeout_ms,
            }),
            _ => Err(kind_error(ConfigError::CheckKind { check: wire.name })),
        }
    }
}

impl From<CheckConfig> for CheckWire {
    fn from(config: CheckConfig) -> Self {
        let mut wire = CheckWire {
            name: config.name,
            timeout_ms: config.timeout_ms,
            ..CheckWire::default()
        };
        match config.kind {
            CheckKind::Http(http) => wire.http = Some(http),
            CheckKind::Tcp(tcp) => wire.tcp = Some(tcp),
            CheckKind::Command(command) => wire.command = Some(command),
            CheckKind::File(file) => wire.file = Some(file),
            CheckKind::Service(service) => wire.service = Some(service),
        }
        wire
    }
}

impl CheckConfig {
    /// A check with the default timeout.
    pub fn new(name: impl Into<String>, kind: CheckKind) -> Self {
        Self {
            name: name.into(),
            kind,
            timeout_ms: None,
        }
    }

    /// The check timeout in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_CHECK_TIMEOUT_MS)
    }
}

/// Why an `init.json` is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The JSON does not match the schema.
    Syntax {
        /// serde_json's message (line and column included).
        message: String,
    },
    /// A readiness probe names zero or several kinds.
    ProbeKind,
    /// A check names zero or several kinds.
    CheckKind {
        /// The check.
        check: String,
    },
    /// Two services share a name.
    DuplicateService {
        /// The name.
        service: String,
    },
    /// A service has an empty `exec` or a relative program path.
    InvalidExec {
        /// The service.
        service: String,
    },
    /// `after` names a service that does not exist.
    UnknownDependency {
        /// The service.
        service: String,
        /// The missing dependency.
        dependency: String,
    },
    /// The `after` graph has a cycle.
    DependencyCycle {
        /// The services on the cycle, in order.
        services: Vec<String>,
    },
    /// A `service` check names a service that does not exist.
    UnknownCheckService {
        /// The check.
        check: String,
        /// The missing service.
        service: String,
    },
    /// A static prefix is larger than 32.
    InvalidPrefix {
        /// The prefix.
        prefix: u8,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Syntax { message } => write!(f, "invalid init config: {message}"),
            ConfigError::ProbeKind => write!(
                f,
                "a `ready` probe needs exactly one of `tcp`, `file`, `command`, `http`"
            ),
            ConfigError::CheckKind { check } => write!(
                f,
                "check `{check}` needs exactly one of `http`, `tcp`, `command`, `file`, `service`"
            ),
            ConfigError::DuplicateService { service } => {
                write!(f, "service `{service}` is defined twice")
            }
            ConfigError::InvalidExec { service } => write!(
                f,
                "service `{service}` needs an `exec` starting with an absolute path"
            ),
            ConfigError::UnknownDependency {
                service,
                dependency,
            } => write!(
                f,
                "service `{service}` starts after unknown service `{dependency}`"
            ),
            ConfigError::DependencyCycle { services } => {
                write!(
                    f,
                    "services depend on each other: {}",
                    services.join(" -> ")
                )
            }
            ConfigError::UnknownCheckService { check, service } => {
                write!(f, "check `{check}` names unknown service `{service}`")
            }
            ConfigError::InvalidPrefix { prefix } => {
                write!(f, "network prefix `/{prefix}` is larger than 32")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

thread_local! {
    /// The last probe/check kind error of this thread's deserialisation: serde can only
    /// carry it as text, [`InitConfig::from_json`] returns it typed.
    static KIND_ERROR: std::cell::RefCell<Option<ConfigError>> =
        const { std::cell::RefCell::new(None) };
}

fn kind_error(error: ConfigError) -> ConfigError {
    KIND_ERROR.with(|last| *last.borrow_mut() = Some(error.clone()));
    error
}

impl InitConfig {
    /// Parses and validates `init.json` text.
    pub fn from_json(text: &str) -> Result<InitConfig, ConfigError> {
        KIND_ERROR.with(|last| last.borrow_mut().take());
        let config: InitConfig = serde_json::from_str(text).map_err(|err| {
            KIND_ERROR
                .with(|last| last.borrow_mut().take())
                .unwrap_or_else(|| ConfigError::Syntax {
                    message: err.to_string(),
                })
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything serde cannot: unique names, known and acyclic dependencies,
    /// absolute programs (one kind per probe/check is a property of the types).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let NetworkConfig::Static(net) = &self.network
            && net.prefix > 32
        {
            return Err(ConfigError::InvalidPrefix { prefix: net.prefix });
        }
        let units = self.units();
        let mut names = BTreeSet::new();
        for service in &units {
            if !names.insert(service.name.as_str()) {
                return Err(ConfigError::DuplicateService {
                    service: service.name.clone(),
                });
            }
            if !service.exec.first().is_some_and(|p| p.starts_with('/')) {
                return Err(ConfigError::InvalidExec {
                    service: service.name.clone(),
                });
            }
        }
        for task in &self.tasks {
            for service in task.before.iter().chain(&task.after) {
                if !self.services.iter().any(|s| s.name == *service) {
                    return Err(ConfigError::UnknownDependency {
                        service: task.name.clone(),
                        dependency: service.clone(),
                    });
                }
            }
        }
        self.start_order()?;
        for check in &self.checks {
            if let CheckKind::Service(svc) = &check.kind
                && !names.contains(svc.name.as_str())
            {
                return Err(ConfigError::UnknownCheckService {
                    check: check.name.clone(),
                    service: svc.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Services and tasks as one list for the supervisor: the tasks first (as services
    /// that never restart and have no probe, waiting for their `after` services), then the
    /// services, each also waiting for the tasks that run before it.
    pub fn units(&self) -> Vec<ServiceConfig> {
        let tasks = self.tasks.iter().map(|t| ServiceConfig {
            name: t.name.clone(),
            exec: t.exec.clone(),
            user: t.user.clone(),
            group: t.group.clone(),
            environment: t.environment.clone(),
            working_directory: t.working_directory.clone(),
            restart: RestartPolicy::No,
            after: t.after.clone(),
            ready: None,
        });
        let services = self.services.iter().map(|s| {
            let mut s = s.clone();
            s.after.extend(
                self.tasks
                    .iter()
                    .filter(|t| t.runs_before(&s.name))
                    .map(|t| t.name.clone()),
            );
            s
        });
        tasks.chain(services).collect()
    }

    /// Indices of [`InitConfig::units`] in start order: every unit after the ones in its
    /// `after` list, otherwise list order (a stable topological sort).
    pub fn start_order(&self) -> Result<Vec<usize>, ConfigError> {
        let units = InitConfig {
            services: self.units(),
            tasks: Vec::new(),
            ..InitConfig::default()
        };
        units.service_order()
    }

    fn service_order(&self) -> Result<Vec<usize>, ConfigError> {
        let index_of = |name: &str| self.services.iter().position(|s| s.name == name);
        let mut deps = Vec::with_capacity(self.services.len());
        for service in &self.services {
            let mut list = Vec::new();
            for dependency in &service.after {
                list.push(
                    index_of(dependency).ok_or_else(|| ConfigError::UnknownDependency {
                        service: service.name.clone(),
                        dependency: dependency.clone(),
                    })?,
                );
            }
            deps.push(list);
        }
        // 0 = unvisited, 1 = on the current path, 2 = done.
        let mut state = vec![0u8; self.services.len()];
        let mut order = Vec::with_capacity(self.services.len());
        let mut path = Vec::new();
        for root in 0..self.services.len() {
            self.visit(root, &deps, &mut state, &mut path, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        node: usize,
        deps: &[Vec<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), ConfigError> {
        match state[node] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|&n| n == node).unwrap_or(0);
                let mut services: Vec<String> = path[start..]
                    .iter()
                    .map(|&n| self.services[n].name.clone())
                    .collect();
                services.push(self.services[node].name.clone());
                return Err(ConfigError::DependencyCycle { services });
            }
            _ => {}
        }
        state[node] = 1;
        path.push(node);
        for &dep in &deps[node] {
            self.visit(dep, deps, state, path, order)?;
        }
        path.pop();
        state[node] = 2;
        order.push(node);
        Ok(())
    }
}

#[cfg(test)]
mod runtime_dir_tests {
    use super::*;

    #[test]
    fn runtime_dirs_stay_below_run_and_tmp() {
        let dir = |path: &str| RuntimeDirConfig {
            path: path.into(),
            mode: 0o755,
            uid: 0,
            gid: 0,
            content: None,
            symlink: None,
        };
        assert!(dir("/run/nginx").is_allowed());
        assert!(dir("/tmp/app/cache").is_allowed());
        assert!(!dir("/etc/x").is_allowed());
        assert!(!dir("/run/../etc").is_allowed());
        assert!(!dir("run/x").is_allowed());
        let json = r#"{"runtime_dirs":[{"path":"/run/a","mode":493,"uid":33,"gid":33}]}"#;
        let config = InitConfig::from_json(json).expect("parses");
        assert_eq!(config.runtime_dirs[0].uid, 33);
        let json = r#"{"runtime_dirs":[{"path":"/run/a","mode":420,"uid":0,"gid":0,"content":"x"},{"path":"/run/l","mode":511,"uid":0,"gid":0,"symlink":"/etc/x"}]}"#;
        let config = InitConfig::from_json(json).expect("parses");
        assert_eq!(config.runtime_dirs[0].content.as_deref(), Some("x"));
        assert_eq!(config.runtime_dirs[1].symlink.as_deref(), Some("/etc/x"));
    }
}

#[cfg(test)]
mod task_tests {
    use super::*;

    fn config(json: &str) -> Result<InitConfig, ConfigError> {
        InitConfig::from_json(json)
    }

    #[test]
    fn tasks_run_before_services_unless_told_otherwise() {
        let c = config(
            r#"{"services":[{"name":"db","exec":["/db"]},{"name":"web","exec":["/web"]}],
                "tasks":[{"name":"init","exec":["/init"]},
                         {"name":"keys","exec":["/keys"],"when":"every-boot","before":["web"]},
                         {"name":"seed","exec":["/seed"],"after":["db"],"timeout_ms":5}]}"#,
        )
        .expect("valid");
        let units = c.units();
        let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["init", "keys", "seed", "db", "web"]);
        assert_eq!(units[3].after, ["init"]);
        assert_eq!(units[4].after, ["init", "keys"]);
        assert_eq!(units[2].after, ["db"]);
        assert!(units.iter().take(3).all(|u| u.restart == RestartPolicy::No));
        let order: Vec<&str> = c
            .start_order()
            .expect("acyclic")
            .into_iter()
            .map(|i| names[i])
            .collect();
        assert_eq!(order, ["init", "keys", "db", "seed", "web"]);
        assert_eq!(
            c.tasks[0].marker().as_deref(),
            Some("/var/lib/jeos/tasks/init.done")
        );
        assert_eq!(c.tasks[1].marker(), None);
        assert_eq!(c.tasks[2].timeout_ms(), 5);
        assert_eq!(c.tasks[0].timeout_ms(), DEFAULT_TASK_TIMEOUT_MS);
    }

    #[test]
    fn task_errors() {
        let unknown = config(r#"{"tasks":[{"name":"t","exec":["/t"],"before":["nope"]}]}"#);
        assert!(matches!(
            unknown,
            Err(ConfigError::UnknownDependency { .. })
        ));
        let dup = config(
            r#"{"services":[{"name":"t","exec":["/s"]}],"tasks":[{"name":"t","exec":["/t"]}]}"#,
        );
        assert!(matches!(dup, Err(ConfigError::DuplicateService { .. })));
        let relative = config(r#"{"tasks":[{"name":"t","exec":["t"]}]}"#);
        assert!(matches!(relative, Err(ConfigError::InvalidExec { .. })));
        let cycle = config(
            r#"{"services":[{"name":"s","exec":["/s"]}],"tasks":[{"name":"t","exec":["/t"],"before":["s"],"after":["s"]}]}"#,
        );
        assert!(matches!(cycle, Err(ConfigError::DependencyCycle { .. })));
        // A configuration without tasks is unchanged.
        assert!(config(r#"{"services":[{"name":"s","exec":["/s"]}]}"#).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, after: &[&str]) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            exec: vec!["/bin/true".into()],
            user: None,
            group: None,
            environment: BTreeMap::new(),
            working_directory: None,
            restart: RestartPolicy::No,
            after: after.iter().map(|s| s.to_string()).collect(),
            ready: None,
        }
    }

    #[test]
    fn parses_full_config() {
        let text = r#"{
          "hostname": "web",
          "network": {"static": {"address": "10.0.2.15", "prefix": 24, "gateway": "10.0.2.2",
                                 "dns": ["10.0.2.3"]}},
          "root_rw": true,
          "services": [
            {"name": "db", "exec": ["/usr/bin/db"], "user": "db", "restart": "on-failure",
             "ready": {"file": "/run/db.sock", "timeout_ms": 5000}},
            {"name": "web", "exec": ["/usr/sbin/nginx", "-g", "daemon off;"], "after": ["db"],
             "environment": {"A": "1"}, "working_directory": "/srv", "restart": "always",
             "ready": {"http": {"port": 80}}}
          ],
          "checks": [
            {"name": "page", "http": {"port": 80, "path": "/", "status": 200,
                                      "body_contains": "hello"}},
            {"name": "port", "tcp": {"port": 80}},
            {"name": "cmd", "command": {"run": ["/bin/echo", "hi"], "stdout_contains": "hi"}},
            {"name": "file", "file": {"path": "/etc/hostname"}},
            {"name": "svc", "service": {"name": "web"}, "timeout_ms": 100}
          ],
          "test_timeout_ms": 60000,
          "shutdown_timeout_ms": 3000
        }"#;
        let config = InitConfig::from_json(text).expect("valid config");
        assert_eq!(config.hostname.as_deref(), Some("web"));
        assert!(matches!(&config.network, NetworkConfig::Static(s) if s.prefix == 24));
        assert_eq!(config.services[1].restart, RestartPolicy::Always);
        let ready = config.services[1].ready.as_ref().expect("has probe");
        assert_eq!(
            ready.probe,
            Probe::Http(HttpProbeConfig {
                port: 80,
                path: "/".into()
            })
        );
        assert_eq!(ready.timeout_ms(), DEFAULT_READY_TIMEOUT_MS);
        assert_eq!(config.checks[4].timeout_ms(), 100);
        assert!(matches!(&config.checks[2].kind, CheckKind::Command(c) if c.exit_code == 0));
        assert_eq!(config.start_order(), Ok(vec![0, 1]));
        // Serializing and parsing again gives the same config (builder writes it this way).
        let json = serde_json::to_string(&config).expect("serializable");
        assert_eq!(InitConfig::from_json(&json), Ok(config));
    }

    #[test]
    fn defaults_and_network_strings() {
        let config = InitConfig::from_json("{}").expect("empty config is valid");
        assert_eq!(config, InitConfig::default());
        assert_eq!(config.network, NetworkConfig::Dhcp);
        let none = InitConfig::from_json(r#"{"network": "none"}"#).expect("valid");
        assert_eq!(none.network, NetworkConfig::None);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_kinds() {
        assert!(matches!(
            InitConfig::from_json(r#"{"hostnme": "x"}"#),
            Err(ConfigError::Syntax { message }) if message.contains("hostnme")
        ));
        let two =
            r#"{"services": [{"name": "a", "exec": ["/a"], "ready": {"tcp": 1, "file": "/x"}}]}"#;
        assert_eq!(InitConfig::from_json(two), Err(ConfigError::ProbeKind));
        let none = r#"{"checks": [{"name": "c"}]}"#;
        assert_eq!(
            InitConfig::from_json(none),
            Err(ConfigError::CheckKind { check: "c".into() })
        );
        let relative = r#"{"services": [{"name": "a", "exec": ["nginx"]}]}"#;
        assert_eq!(
            InitConfig::from_json(relative),
            Err(ConfigError::InvalidExec {
                service: "a".into()
            })
        );
        let prefix = r#"{"network": {"static": {"address": "1.2.3.4", "prefix": 33}}}"#;
        assert_eq!(
            InitConfig::from_json(prefix),
            Err(ConfigError::InvalidPrefix { prefix: 33 })
        );
        let svc = r#"{"checks": [{"name": "c", "service": {"name": "x"}}]}"#;
        assert_eq!(
            InitConfig::from_json(svc),
            Err(ConfigError::UnknownCheckService {
                check: "c".into(),
                service: "x".into()
            })
        );
    }

    #[test]
    fn start_order_respects_after() {
        let config = InitConfig {
            services: vec![
                service("web", &["app"]),
                service("app", &["db", "cache"]),
                service("db", &[]),
                service("cache", &["db"]),
                service("log", &[]),
            ],
            ..InitConfig::default()
        };
        let order: Vec<&str> = config
            .start_order()
            .expect("acyclic")
            .into_iter()
            .map(|i| config.services[i].name.as_str())
            .collect();
        assert_eq!(order, ["db", "cache", "app", "web", "log"]);
    }

    #[test]
    fn start_order_detects_cycles_and_unknown_names() {
        let cyclic = InitConfig {
            services: vec![
                service("a", &["b"]),
                service("b", &["c"]),
                service("c", &["b"]),
            ],
            ..InitConfig::default()
        };
        assert_eq!(
            cyclic.start_order(),
            Err(ConfigError::DependencyCycle {
                services: vec!["b".into(), "c".into(), "b".into()]
            })
        );
        let own = InitConfig {
            services: vec![service("a", &["a"])],
            ..InitConfig::default()
        };
        assert!(matches!(
            own.validate(),
            Err(ConfigError::DependencyCycle { .. })
        ));
        let unknown = InitConfig {
            services: vec![service("a", &["zz"])],
            ..InitConfig::default()
        };
        assert_eq!(
            unknown.validate(),
            Err(ConfigError::UnknownDependency {
                service: "a".into(),
                dependency: "zz".into()
            })
        );
        let duplicate = InitConfig {
            services: vec![service("a", &[]), service("a", &[])],
            ..InitConfig::default()
        };
        assert_eq!(
            duplicate.validate(),
            Err(ConfigError::DuplicateService {
                service: "a".into()
            })
        );
    }
}
