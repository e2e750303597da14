//! Appliance recipes: the TOML a user writes, parsed and validated into an immutable
//! [`Recipe`].
//!
//! Two layers, as in ripgrep's flags: [`raw::RecipeFile`] mirrors the TOML (serde, unknown
//! keys rejected, spans kept), and [`validate`](validate::validate) turns it into plain typed
//! values while collecting *every* semantic problem ([`RecipeErrors`]). Parsing and
//! validation are pure except for checking that files the recipe refers to exist, which is
//! done only when a base directory is given.
//!
//! ```
//! let text = r#"
//! [appliance]
//! name = "demo"
//! version = "1.0"
//! [source]
//! suite = "trixie"
//! [packages]
//! install = ["hello"]
//! "#;
//! let recipe = builder::recipe::parse_str("demo.toml", text, None).unwrap();
//! assert_eq!(recipe.appliance.name.as_str(), "demo");
//! ```

pub mod error;
pub mod lint;
pub mod names;
pub mod raw;
pub mod schema;
pub mod size;
mod spanned;
mod starter;
mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{RecipeError, RecipeErrorKind, RecipeErrors, RecipeLoadError};
pub use names::AppName;
pub use size::ByteSize;
pub use spanned::Spanned;
pub use starter::{StarterTemplate, starter, starter_recipe};
pub use validate::parse_duration;

/// A validated appliance recipe. Immutable: the pipeline only reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// `[appliance]`
    pub appliance: Appliance,
    /// `[source]`
    pub source: Source,
    /// `[packages]`
    pub packages: Packages,
    /// `[kernel]`
    pub kernel: Kernel,
    /// `[system]`
    pub system: System,
    /// `[[service]]`, in file order.
    pub services: Vec<Service>,
    /// `[[task]]`, in file order.
    pub tasks: Vec<Task>,
    /// `[[file]]`
    pub files: Vec<FileEntry>,
    /// `[[directory]]`
    pub directories: Vec<DirectoryEntry>,
    /// `[[symlink]]`
    pub symlinks: Vec<SymlinkEntry>,
    /// `[network]`
    pub network: Network,
    /// `[disk]`
    pub disk: Disk,
    /// `[vm]`
    pub vm: Vm,
    /// `[ovf]`
    pub ovf: Ovf,
    /// `[test]`
    pub test: Test,
}

/// `[appliance]`: identity of the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    /// Used in file names and as the default hostname.
    pub name: AppName,
    /// Free-form version (`1.0.0`), used in output names.
    pub version: String,
    /// One-line description (OVF `ProductSection/Info`).
    pub description: Option<String>,
    /// OVF `Vendor`.
    pub vendor: Option<String>,
    /// OVF `VendorUrl`.
    pub url: Option<String>,
}

/// Debian suites the resolver knows. Aliases such as `stable` are rejected: they move, and
/// a recipe must mean the same thing next year.
pub const KNOWN_SUITES: [&str; 5] = ["bullseye", "bookworm", "trixie", "forky", "sid"];

/// Components of the Debian archive.
pub const KNOWN_COMPONENTS: [&str; 4] = ["main", "contrib", "non-free", "non-free-firmware"];

/// `[source]`: where packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Always `debian` for now.
    pub distribution: String,
    /// A codename from [`KNOWN_SUITES`].
    pub suite: String,
    /// Explicit mirror; `None` means the host's apt sources.
    pub mirror: Option<String>,
    /// Archive components, default `["main"]`.
    pub components: Vec<String>,
    /// Keyring to verify `InRelease` with (absolute, resolved against the recipe);
    /// `None` means the Debian archive keyring of the host.
    pub keyring: Option<PathBuf>,
    /// `security-mirror`: base URL of the Debian security archive that serves
    /// `<suite>-security`; `None` means the host's apt sources.
    pub security_mirror: Option<String>,
    /// `updates` (default `true`): the index includes `<suite>-updates`.
    pub updates: bool,
    /// `security` (default `true`): the index includes `<suite>-security`.
    pub security: bool,
}

/// A package to install, optionally with a version constraint (`nginx (>= 1.22)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    /// Debian package name.
    pub name: String,
    /// Version constraint.
    pub constraint: Option<(VersionOp, String)>,
}

/// Debian relation operators (Policy §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOp {
    /// `<<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `=`
    Equal,
    /// `>=`
    GreaterOrEqual,
    /// `>>`
    Greater,
}

impl VersionOp {
    /// The operator as Debian writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Less => "<<",
            Self::LessOrEqual => "<=",
            Self::Equal => "=",
            Self::GreaterOrEqual => ">=",
            Self::Greater => ">>",
        }
    }
}

/// `[packages]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packages {
    /// What the appliance is for; the solver adds their dependencies.
    pub install: Vec<PackageSpec>,
    /// Dependencies to leave out on purpose.
    pub exclude: Vec<String>,
    /// Alternatives to prefer when a dependency can be satisfied several ways.
    pub prefer: Vec<String>,
}

/// Kernel flavour: which Debian kernel package is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFlavour {
    /// `linux-image-amd64`: drives the default hardware of VMware and VirtualBox
    /// (e1000, LSI Logic, AHCI), hence the default.
    Generic,
    /// `linux-image-cloud-amd64`: smaller, virtio/KVM/Hyper-V/Xen-oriented.
    Cloud,
}

/// `[kernel]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The flavour (ignored when `package` is set).
    pub flavour: KernelFlavour,
    /// The kernel package to install.
    pub package: String,
    /// Modules added to the initramfs beyond the ones the VM hardware needs.
    pub extra_modules: Vec<String>,
    /// Extra kernel command-line arguments.
    pub cmdline: Vec<String>,
}

/// `[system]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct System {
    /// RFC 1123 hostname; defaults to the appliance name.
    pub hostname: String,
    /// tzdata name, default `UTC`.
    pub timezone: String,
    /// Locale, default `C.UTF-8`.
    pub locale: String,
    /// Accounts to create.
    pub users: Vec<User>,
    /// Groups to create.
    pub groups: Vec<Group>,
}

/// `[[system.user]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Fixed uid, else allocated at build time.
    pub uid: Option<u32>,
    /// Primary group (defaults to a group named like the user).
    pub group: String,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
    /// System account (uid below 1000, no login by default).
    pub system: bool,
}

/// `[[system.group]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Fixed gid.
    pub gid: Option<u32>,
    /// System group.
    pub system: bool,
}

/// What guest-init does when a service exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Leave it stopped.
    No,
    /// Restart after a non-zero exit or a signal.
    OnFailure,
    /// Always restart.
    Always,
}

/// How guest-init decides that a service is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyProbe {
    /// A TCP connection to this port on localhost succeeds.
    Tcp(u16),
    /// This file exists.
    File(String),
    /// This command exits 0.
    Command(Vec<String>),
    /// An HTTP GET of `path` on localhost:`port` answers 2xx.
    Http {
        /// TCP port.
        port: u16,
        /// Request path.
        path: String,
    },
}

/// Readiness probe with its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The probe.
    pub probe: ReadyProbe,
    /// How long to wait before declaring the service failed (default 30 s).
    pub timeout: Duration,
}

/// `[[service]]`: a process guest-init supervises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// argv; the first element is an absolute path.
    pub exec: Vec<String>,
    /// User to run as (default `root`).
    pub user: String,
    /// Group to run as (default: the user's primary group).
    pub group: Option<String>,
    /// Extra environment.
    pub environment: BTreeMap<String, String>,
    /// Working directory (default `/`).
    pub working_directory: String,
    /// Restart policy (default `on-failure`).
    pub restart: Restart,
    /// Services that must be ready before this one starts.
    pub after: Vec<String>,
    /// Readiness probe.
    pub ready: Option<Ready>,
}

/// When a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskWhen {
    /// Once: on the first boot, then never again (a marker on the root file system).
    FirstBoot,
    /// On every boot.
    EveryBoot,
}

/// `[[task]]`: a program run to completion at boot, before the services it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Unique name (among services and tasks).
    pub name: String,
    /// argv; the first element is an absolute path.
    pub exec: Vec<String>,
    /// First boot only (default) or every boot.
    pub when: TaskWhen,
    /// User to run as (default `root`).
    pub user: String,
    /// Group to run as (default: the user's primary group).
    pub group: Option<String>,
    /// Extra environment.
    pub environment: BTreeMap<String, String>,
    /// Working directory (`None`: the user's home if it exists, else `/`).
    pub working_directory: Option<String>,
    /// Deadline (default 5 minutes).
    pub timeout: Duration,
    /// Services that wait for this task (every service when `before` and `after` are
    /// both empty).
    pub before: Vec<String>,
    /// Services this task waits for.
    pub after: Vec<String>,
}

/// Where a `[[file]]`'s bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// Inline `content`, or a `template` already rendered with the recipe values.
    Inline(String),
    /// `source`: a host file or directory (copied recursively, host modes, recipe owner),
    /// resolved against the recipe's directory.
    Source(PathBuf),
    /// `template-at = "boot"`: rendered by the appliance's init from the deploy-time
    /// properties (`{{ovf.<key>}}`); the image holds a symlink into `/run/jeos/files`.
    BootTemplate(String),
}

/// `[[file]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute, normalized guest path.
    pub path: String,
    /// Content.
    pub content: FileContent,
    /// Permission bits (default 0o644).
    pub mode: u32,
    /// Owner (default `root`).
    pub owner: String,
    /// Group (default `root`).
    pub group: String,
}

/// `[[directory]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// Absolute, normalized guest path.
    pub path: String,
    /// Permission bits (default 0o755).
    pub mode: u32,
    /// Owner (default `root`).
    pub owner: String,
    /// Group (default `root`).
    pub group: String,
}

/// `[[symlink]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymlinkEntry {
    /// Absolute, normalized guest path of the link.
    pub path: String,
    /// Link target, written as is.
    pub target: String,
}

/// A static IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNetwork {
    /// Address.
    pub address: Ipv4Addr,
    /// Prefix length (0-32).
    pub prefix: u8,
    /// Default gateway, inside the subnet.
    pub gateway: Option<Ipv4Addr>,
    /// Name servers.
    pub dns: Vec<IpAddr>,
    /// `address6`: IPv6 address and prefix.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// `gateway6`.
    pub gateway6: Option<Ipv6Addr>,
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// DHCP on the first NIC (default).
    Dhcp,
    /// Static address on the first NIC.
    Static(StaticNetwork),
    /// Loopback only (`dhcp = false` and no `static`).
    None,
}

/// Output disk formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskFormat {
    /// Raw GPT disk image.
    Raw,
    /// QEMU copy-on-write v3.
    Qcow2,
    /// VMDK streamOptimized.
    Vmdk,
    /// OVF package in one tar (implies a VMDK inside).
    Ova,
    /// Fixed VHD (Azure, Hyper-V): `<name>-<version>.vhd`.
    Vhd,
    /// Google Compute Engine image: `disk.raw` in `<name>-<version>.gce.tar.gz`.
    Gce,
}

/// `[disk]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `None` = "auto": the smallest size that fits, plus `free_space`.
    pub size: Option<ByteSize>,
    /// Free space left in the root filesystem with `size = "auto"` (default 64 MiB).
    pub free_space: ByteSize,
    /// Formats to write, sorted, without duplicates (default raw).
    pub formats: Vec<DiskFormat>,
    /// Root filesystem type; only `ext4`.
    pub filesystem: String,
    /// `[disk] convertible`: the image carries what virt-v2v needs to convert it.
    pub convertible: bool,
}

/// Firmware the VM boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS (default: every hypervisor supports it).
    Bios,
    /// UEFI.
    Efi,
}

/// Disk controller the OVF declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskController {
    /// LSI Logic parallel SCSI (VMware's default; `mptspi`).
    LsiLogic,
    /// AHCI SATA (VirtualBox's default; `ahci`).
    Sata,
}

/// Network adapter the OVF declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nic {
    /// Intel e1000 (default: understood by every hypervisor).
    E1000,
    /// VMware vmxnet3.
    Vmxnet3,
    /// virtio-net.
    Virtio,
}

/// `[vm]`: virtual hardware, the OVF VirtualHardwareSection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// 1..=64 (default 1).
    pub cpus: u32,
    /// At least 64 MiB, whole MiB (default 256 MiB).
    pub memory: ByteSize,
    /// Default BIOS.
    pub firmware: Firmware,
    /// Default LSI Logic.
    pub disk_controller: DiskController,
    /// Default e1000.
    pub nic: Nic,
}

/// OVF property types (DSP0243 §9.5).
pub const OVF_PROPERTY_TYPES: [&str; 12] = [
    "string", "boolean", "uint8", "sint8", "uint16", "sint16", "uint32", "sint32", "uint64",
    "sint64", "real32", "real64",
];

/// `[[ovf.property]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfProperty {
    /// `ovf:key`
    pub key: String,
    /// `ovf:type`, one of [`OVF_PROPERTY_TYPES`] (default `string`).
    pub type_: String,
    /// Default value.
    pub value: Option<String>,
    /// Label shown by the hypervisor.
    pub label: Option<String>,
    /// Whether the user may change it at deploy time.
    pub user_configurable: bool,
    /// Help text for the deployment wizard.
    pub description: Option<String>,
    /// A secret (`ovf:password`).
    pub password: bool,
}

/// `[ovf] targets` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OvfTarget {
    /// VMware ESXi/Workstation/Fusion.
    Vmware,
    /// VirtualBox.
    Virtualbox,
    /// virt-v2v, oVirt, OpenStack, Proxmox (DMTF elements only).
    Generic,
}

/// `[ovf]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovf {
    /// `ProductUrl`
    pub product_url: Option<String>,
    /// EULA text file (absolute, resolved against the recipe).
    pub eula: Option<PathBuf>,
    /// `AnnotationSection`
    pub annotation: Option<String>,
    /// `ProductSection` properties.
    pub properties: Vec<OvfProperty>,
    /// `[ovf] targets`; empty means every target the `[vm]` hardware allows.
    pub targets: Vec<OvfTarget>,
    /// Declare the deploy-time network properties (`jeos.hostname`, ...); default true.
    pub network_properties: bool,
}

impl Default for Ovf {
    fn default() -> Self {
        Self {
            product_url: None,
            eula: None,
            annotation: None,
            properties: Vec::new(),
            targets: Vec::new(),
            network_properties: true,
        }
    }
}

/// What a check probes inside the booted appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// HTTP GET on localhost.
    Http {
        /// TCP port.
        port: u16,
        /// Request path (default `/`).
        path: String,
        /// Expected status (default 200).
        status: u16,
        /// Text the body must contain.
        body_contains: Option<String>,
    },
    /// A TCP connection succeeds.
    Tcp {
        /// TCP port.
        port: u16,
    },
    /// A command's outcome.
    Command {
        /// argv, first element absolute.
        run: Vec<String>,
        /// Expected exit code (default 0).
        exit_code: i32,
        /// Text stdout must contain.
        stdout_contains: Option<String>,
    },
    /// A file exists.
    File {
        /// Absolute guest path.
        path: String,
    },
    /// A recipe service is running and ready.
    Service {
        /// A `[[service]]` name.
        name: String,
    },
}

/// Where a check runs (`from`; `"guest"` or `"host"` in `jeos test --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckFrom {
    /// Inside the guest, by guest-init, against the guest's 127.0.0.1.
    #[default]
    Guest,
    /// On the host, by `jeos test`, through a port forwarded into the guest.
    Host,
}

/// `[[test.check]]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Unique, human-readable name.
    pub name: String,
    /// What to probe.
    pub kind: CheckKind,
    /// Where it runs.
    pub from: CheckFrom,
}

/// `[test]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    /// Wall-clock limit for boot plus checks (default 120 s).
    pub timeout: Duration,
    /// Checks, in file order.
    pub checks: Vec<Check>,
}

/// Parses and validates recipe text. `name` is how the recipe is shown in diagnostics;
/// `base_dir`, when given, is where relative `source`, `keyring` and `eula` paths are
/// resolved and checked for existence.
pub fn parse_str(name: &str, text: &str, base_dir: Option<&Path>) -> Result<Recipe, RecipeErrors> {
    let shared: Arc<str> = Arc::from(text);
    validate::parse_and_validate(name, &shared, base_dir)
}

/// Warnings about a valid recipe (checks on ports no service's readiness probe names).
pub fn warnings(name: &str, text: &str) -> Vec<RecipeError> {
    let shared: Arc<str> = Arc::from(text);
    lint::port_warnings(text)
        .into_iter()
        .map(|finding| {
            let mut error = RecipeError::new(finding.kind, finding.span, name, &shared);
            error.warning = true;
            error
        })
        .collect()
}

/// Reads and validates the recipe at `path` (relative files resolve against its directory).
pub fn load(path: &Path) -> Result<Recipe, RecipeLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecipeLoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(parse_str(&path.display().to_string(), &text, Some(base))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the fuzz target asserts, over every truncation and some byte edits of the
    /// starter recipe: no panic, spans inside the text, never an empty error list.
    #[test]
    fn truncated_and_edited_recipes_never_panic() {
        let name = AppName::new("fuzz").expect("valid name");
        let text = starter_recipe(&name);
        let mut inputs: Vec<String> = (0..text.len())
            .step_by(5)
            .filter(|i| text.is_char_boundary(*i))
            .map(|i| text[..i].to_owned())
            .collect();
        for (from, to) in [("\"", ""), ("=", "=="), ("]", ""), ("1", "-1"), ("\n", " ")] {
            for (i, _) in text.match_indices(from).step_by(3) {
                let mut edited = text.clone();
                edited.replace_range(i..i + from.len(), to);
                inputs.push(edited);
            }
        }
        for input in &inputs {
            match parse_str("fuzz.toml", input, None) {
                Ok(recipe) => assert!(!recipe.packages.install.is_empty()),
                Err(errors) => {
                    assert!(!errors.errors.is_empty());
                    for error in &errors.errors {
                        assert!(error.span.end <= input.len());
                        let _ = error.line_column();
                        let _ = error.kind.help();
                    }
                }
            }
        }
    }

    #[test]
    fn load_reports_io_errors_with_the_path() {
        let err = load(Path::new("/nonexistent/jeos/recipe.toml")).expect_err("missing");
        assert!(
            matches!(&err, RecipeLoadError::Io { path, .. } if path == Path::new("/nonexistent/jeos/recipe.toml"))
        );
    }
}
