//! The recipe exactly as written: serde structs mirroring the TOML tables.
//!
//! Every table rejects unknown keys and uses kebab-case names. Fields whose value needs a
//! semantic check keep their byte span (`Spanned<T>`) so that `validate` can point at the
//! value. Nothing here interprets values: that is `validate.rs`'s job.

#![allow(
    missing_docs,
    reason = "fields mirror the TOML keys, documented in the starter recipe and in `Recipe`"
)]

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};
use toml::Spanned;

/// A string value with its byte span.
pub type Str = Spanned<String>;

/// The whole recipe file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RecipeFile {
    pub appliance: Spanned<ApplianceRaw>,
    pub source: Spanned<SourceRaw>,
    pub packages: Spanned<PackagesRaw>,
    #[serde(default)]
    pub kernel: Option<KernelRaw>,
    #[serde(default)]
    pub system: Option<SystemRaw>,
    #[serde(default)]
    pub service: Vec<Spanned<ServiceRaw>>,
    /// `[[task]]`: programs run to completion at boot (first boot only, or every boot).
    #[serde(default)]
    pub task: Vec<Spanned<TaskRaw>>,
    #[serde(default)]
    pub file: Vec<Spanned<FileRaw>>,
    #[serde(default)]
    pub directory: Vec<Spanned<DirectoryRaw>>,
    #[serde(default)]
    pub symlink: Vec<Spanned<SymlinkRaw>>,
    #[serde(default)]
    pub network: Option<Spanned<NetworkRaw>>,
    #[serde(default)]
    pub disk: Option<DiskRaw>,
    #[serde(default)]
    pub vm: Option<VmRaw>,
    #[serde(default)]
    pub ovf: Option<OvfRaw>,
    #[serde(default)]
    pub test: Option<TestRaw>,
}

/// `[appliance]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApplianceRaw {
    pub name: Str,
    pub version: Str,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub url: Option<Str>,
}

/// `[source]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceRaw {
    #[serde(default)]
    pub distribution: Option<Str>,
    pub suite: Str,
    #[serde(default)]
    pub mirror: Option<Str>,
    #[serde(default)]
    pub components: Option<Spanned<Vec<Str>>>,
    #[serde(default)]
    pub keyring: Option<Str>,
    /// Base URL of the Debian security archive (`<suite>-security`); default: the host's
    /// apt sources.
    #[serde(default)]
    pub security_mirror: Option<Str>,
    /// Include `<suite>-updates` (default `true`).
    #[serde(default)]
    pub updates: Option<bool>,
    /// Include `<suite>-security` (default `true`).
    #[serde(default)]
    pub security: Option<bool>,
}

/// `[packages]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PackagesRaw {
    pub install: Spanned<Vec<Str>>,
    #[serde(default)]
    pub exclude: Vec<Str>,
    #[serde(default)]
    pub prefer: Vec<Str>,
}

/// `[kernel]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KernelRaw {
    #[serde(default)]
    pub flavour: Option<Str>,
    #[serde(default)]
    pub package: Option<Str>,
    #[serde(default)]
    pub extra_modules: Vec<Str>,
    #[serde(default)]
    pub cmdline: Vec<Str>,
}

/// `[system]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SystemRaw {
    #[serde(default)]
    pub hostname: Option<Str>,
    #[serde(default)]
    pub timezone: Option<Str>,
    #[serde(default)]
    pub locale: Option<Str>,
    #[serde(default)]
    pub user: Vec<Spanned<UserRaw>>,
    #[serde(default)]
    pub group: Vec<Spanned<GroupRaw>>,
}

/// `[[system.user]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UserRaw {
    pub name: Str,
    #[serde(default)]
    pub uid: Option<Spanned<i64>>,
    #[serde(default)]
    pub group: Option<Str>,
    #[serde(default)]
    pub groups: Vec<Str>,
    #[serde(default)]
    pub home: Option<Str>,
    #[serde(default)]
    pub shell: Option<Str>,
    #[serde(default)]
    pub system: bool,
}

/// `[[system.group]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GroupRaw {
    pub name: Str,
    #[serde(default)]
    pub gid: Option<Spanned<i64>>,
    #[serde(default)]
    pub system: bool,
}

/// `[[service]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceRaw {
    pub name: Str,
    pub exec: Spanned<Vec<Str>>,
    #[serde(default)]
    pub user: Option<Str>,
    #[serde(default)]
    pub group: Option<Str>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub working_directory: Option<Str>,
    #[serde(default)]
    pub restart: Option<Str>,
    #[serde(default)]
    pub after: Vec<Str>,
    #[serde(default)]
    pub ready: Option<Spanned<ReadyRaw>>,
}

/// `[[task]]`: a program guest-init runs to completion at boot, supervised and logged like
/// a service; the appliance is ready only when every task has succeeded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskRaw {
    /// Unique among services and tasks.
    pub name: Str,
    /// argv; the program is an absolute path.
    pub exec: Spanned<Vec<Str>>,
    /// `first-boot` (default: once, then a marker on the root file system) or `every-boot`.
    #[serde(default)]
    pub when: Option<Str>,
    /// User to run as (default `root`).
    #[serde(default)]
    pub user: Option<Str>,
    /// Group to run as (default the user's primary group).
    #[serde(default)]
    pub group: Option<Str>,
    /// Extra environment variables.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Working directory (default the user's home, else `/`).
    #[serde(default)]
    pub working_directory: Option<Str>,
    /// Give up (and fail the boot) after this long; default `5m`.
    #[serde(default)]
    pub timeout: Option<Spanned<Scalar>>,
    /// Services that start only after this task succeeded (default: every service,
    /// unless `after` is given).
    #[serde(default)]
    pub before: Vec<Str>,
    /// Services that must be ready before this task runs.
    #[serde(default)]
    pub after: Vec<Str>,
}

/// `ready = { ... }`: exactly one probe plus an optional timeout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReadyRaw {
    #[serde(default)]
    pub tcp: Option<Spanned<i64>>,
    #[serde(default)]
    pub file: Option<Str>,
    #[serde(default)]
    pub command: Option<Spanned<Vec<Str>>>,
    #[serde(default)]
    pub http: Option<HttpProbeRaw>,
    #[serde(default)]
    pub timeout: Option<Spanned<Scalar>>,
}

/// `http = { port, path }` inside `ready`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpProbeRaw {
    pub port: Spanned<i64>,
    #[serde(default)]
    pub path: Option<Str>,
}

/// `[[file]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileRaw {
    pub path: Str,
    #[serde(default)]
    pub content: Option<Str>,
    #[serde(default)]
    pub source: Option<Str>,
    #[serde(default)]
    pub template: Option<Str>,
    /// When `template` is rendered: `build` (default, from the recipe) or `boot` (by the
    /// appliance's init before services start, from the deploy-time OVF properties).
    #[serde(default)]
    pub template_at: Option<Str>,
    #[serde(default)]
    pub mode: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub owner: Option<Str>,
    #[serde(default)]
    pub group: Option<Str>,
}

/// `[[directory]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DirectoryRaw {
    pub path: Str,
    #[serde(default)]
    pub mode: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub owner: Option<Str>,
    #[serde(default)]
    pub group: Option<Str>,
}

/// `[[symlink]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SymlinkRaw {
    pub path: Str,
    pub target: Str,
}

/// `[network]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkRaw {
    #[serde(default)]
    pub dhcp: Option<Spanned<bool>>,
    #[serde(default, rename = "static")]
    pub static_: Option<StaticRaw>,
}

/// `[network.static]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StaticRaw {
    pub address: Str,
    #[serde(default)]
    pub gateway: Option<Str>,
    /// IPv6 address with prefix length, e.g. `2001:db8::10/64`.
    #[serde(default)]
    pub address6: Option<Str>,
    /// IPv6 default gateway.
    #[serde(default)]
    pub gateway6: Option<Str>,
    #[serde(default)]
    pub dns: Vec<Str>,
}

/// `[disk]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskRaw {
    #[serde(default)]
    pub size: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub free_space: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub formats: Option<Spanned<Vec<Str>>>,
    #[serde(default)]
    pub filesystem: Option<Str>,
}

/// `[vm]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VmRaw {
    #[serde(default)]
    pub cpus: Option<Spanned<i64>>,
    #[serde(default)]
    pub memory: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub firmware: Option<Str>,
    #[serde(default)]
    pub disk_controller: Option<Str>,
    #[serde(default)]
    pub nic: Option<Str>,
}

/// `[ovf]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OvfRaw {
    #[serde(default)]
    pub product_url: Option<Str>,
    #[serde(default)]
    pub eula: Option<Str>,
    #[serde(default)]
    pub annotation: Option<String>,
    /// Hypervisor families the descriptor is written for: `vmware`, `virtualbox`,
    /// `generic` (default: every one the `[vm]` hardware allows).
    #[serde(default)]
    pub targets: Option<Spanned<Vec<Str>>>,
    /// Add the deploy-time network properties (`jeos.hostname`, `jeos.ipv4.address`,
    /// ...) to the OVF (default: true).
    #[serde(default)]
    pub network_properties: Option<bool>,
    #[serde(default)]
    pub property: Vec<Spanned<OvfPropertyRaw>>,
}

/// `[[ovf.property]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OvfPropertyRaw {
    pub key: Str,
    #[serde(default, rename = "type")]
    pub type_: Option<Str>,
    /// The default value (`value` is accepted too).
    #[serde(default, rename = "default", alias = "value")]
    pub value: Option<Str>,
    #[serde(default)]
    pub label: Option<String>,
    /// Longer help text shown by the deployment wizard.
    #[serde(default)]
    pub description: Option<String>,
    /// A secret: deployment tools mask the input.
    #[serde(default)]
    pub password: bool,
    /// Whether the user may change it at deployment (default: false).
    #[serde(default)]
    pub user_configurable: bool,
}

/// `[test]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TestRaw {
    #[serde(default)]
    pub timeout: Option<Spanned<Scalar>>,
    #[serde(default)]
    pub check: Vec<Spanned<CheckRaw>>,
}

/// `[[test.check]]`: a name plus exactly one probe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckRaw {
    pub name: Str,
    #[serde(default)]
    pub http: Option<HttpCheckRaw>,
    #[serde(default)]
    pub tcp: Option<TcpCheckRaw>,
    #[serde(default)]
    pub command: Option<CommandCheckRaw>,
    #[serde(default)]
    pub file: Option<FileCheckRaw>,
    #[serde(default)]
    pub service: Option<ServiceCheckRaw>,
}

/// `http = { port, path, status, body-contains }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpCheckRaw {
    pub port: Spanned<i64>,
    #[serde(default)]
    pub path: Option<Str>,
    #[serde(default)]
    pub status: Option<Spanned<i64>>,
    #[serde(default)]
    pub body_contains: Option<String>,
}

/// `tcp = { port }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TcpCheckRaw {
    pub port: Spanned<i64>,
}

/// `command = { run, exit-code, stdout-contains }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandCheckRaw {
    pub run: Spanned<Vec<Str>>,
    #[serde(default)]
    pub exit_code: Option<Spanned<i64>>,
    #[serde(default)]
    pub stdout_contains: Option<String>,
}

/// `file = { path }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileCheckRaw {
    pub path: Str,
}

/// `service = { name }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceCheckRaw {
    pub name: Str,
}

/// A value that may be written as an integer or a string (`size = 1048576` or
/// `size = "1MiB"`, `mode = "0644"`, `timeout = 30` or `"30s"`). Which spellings are
/// valid is decided by `validate`, which can then explain a wrong one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Integer(i64),
    String(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Integer)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::String(v.to_owned()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}
