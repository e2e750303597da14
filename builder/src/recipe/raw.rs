//! The recipe exactly as written: serde structs mirroring the TOML tables.
//!
//! Every table rejects unknown keys and uses kebab-case names. Fields whose value needs a
//! semantic check keep their byte span (`Spanned<T>`) so that `validate` can point at the
//! value. Nothing here interprets values: that is `validate.rs`'s job.
//!
//! These structs are also the recipe reference. Their doc comments and
//! `#[schemars(extend("default" = …, "examples" = […], "enum" = …))]` attributes become the
//! JSON Schema (`jeos schema`), the linter's key and type rules (`lint.rs`) and
//! `docs/recipe.md` (`jeos schema --format markdown`). A new key needs a doc comment and
//! the regenerated `docs/recipe.md`; tests fail otherwise.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Visitor};

pub use super::spanned::Spanned;

/// A string value with its byte span.
pub type Str = Spanned<String>;

/// The whole recipe file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RecipeFile {
    /// Identity of the appliance: its name and version name the output files.
    pub appliance: Spanned<ApplianceRaw>,
    /// Where packages come from: a Debian suite, verified against its archive key.
    pub source: Spanned<SourceRaw>,
    /// What the appliance is for; the solver adds only what these packages depend on.
    pub packages: Spanned<PackagesRaw>,
    /// The Debian kernel package and what goes into the initramfs.
    #[serde(default)]
    pub kernel: Option<KernelRaw>,
    /// Hostname, time zone, locale and the accounts the services use.
    #[serde(default)]
    pub system: Option<SystemRaw>,
    /// Processes guest-init (PID 1) starts and supervises, in `after` order.
    #[serde(default)]
    pub service: Vec<Spanned<ServiceRaw>>,
    /// `[[task]]`: programs run to completion at boot (first boot only, or every boot).
    #[serde(default)]
    pub task: Vec<Spanned<TaskRaw>>,
    /// Files written into the image. Exactly one of `content`, `source` or `template`.
    #[serde(default)]
    pub file: Vec<Spanned<FileRaw>>,
    /// Directories created in the image with their owner and mode.
    #[serde(default)]
    pub directory: Vec<Spanned<DirectoryRaw>>,
    /// Symbolic links created in the image.
    #[serde(default)]
    pub symlink: Vec<Spanned<SymlinkRaw>>,
    /// How the first network interface is configured.
    #[serde(default)]
    pub network: Option<Spanned<NetworkRaw>>,
    /// Size, formats and file system of the disk image.
    #[serde(default)]
    pub disk: Option<DiskRaw>,
    /// Virtual hardware: the OVF VirtualHardwareSection.
    #[serde(default)]
    pub vm: Option<VmRaw>,
    /// What the OVF descriptor says beyond the hardware.
    #[serde(default)]
    pub ovf: Option<OvfRaw>,
    /// Smoke tests `jeos test` runs inside the booted appliance.
    #[serde(default)]
    pub test: Option<TestRaw>,
}

/// `[appliance]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApplianceRaw {
    /// Appliance name: lowercase letters, digits and `-`, starting with a letter or digit, at
    /// most 63 characters. Used in file names and as the default hostname.
    #[schemars(extend("examples" = ["nginx"]))]
    pub name: Str,
    /// Free-form version, part of the output directory name (`dist/NAME-VERSION/`).
    #[schemars(extend("examples" = ["1.0.0"]))]
    pub version: Str,
    /// One-line description (OVF `ProductSection/Info`).
    #[schemars(extend("examples" = ["Static web server"]))]
    #[serde(default)]
    pub description: Option<String>,
    /// Vendor (OVF `Vendor`).
    #[schemars(extend("examples" = ["Example Org"]))]
    #[serde(default)]
    pub vendor: Option<String>,
    /// Vendor URL (OVF `VendorUrl`): `http://` or `https://`.
    #[schemars(extend("examples" = ["https://example.org"]))]
    #[serde(default)]
    pub url: Option<Str>,
}

/// `[source]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceRaw {
    /// The distribution; only `debian` for now.
    #[schemars(extend("default" = "debian", "enum" = ["debian"]))]
    #[serde(default)]
    pub distribution: Option<Str>,
    /// A Debian codename. Aliases such as `stable` are rejected: they move.
    #[schemars(extend("examples" = ["trixie"], "enum" = super::KNOWN_SUITES))]
    pub suite: Str,
    /// Mirror URL. Default: the Debian mirror named in the host's apt sources. `--mirror`
    /// overrides it.
    #[schemars(extend("examples" = ["http://deb.debian.org/debian"]))]
    #[serde(default)]
    pub mirror: Option<Str>,
    /// Archive components.
    #[schemars(extend("default" = ["main"], "examples" = [["main", "contrib"]]))]
    #[serde(default)]
    pub components: Option<Spanned<Vec<Str>>>,
    /// OpenPGP keyring that verifies `InRelease`, relative to the recipe. Default: the host's
    /// Debian archive keyring.
    #[schemars(extend("examples" = ["keys/archive.gpg"]))]
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
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PackagesRaw {
    /// Packages the appliance is for, optionally with a version constraint.
    #[schemars(extend("examples" = [["nginx", "curl (>= 8.0)"]]))]
    pub install: Spanned<Vec<Str>>,
    /// Dependencies to leave out on purpose (the build warns about each).
    #[schemars(extend("default" = [], "examples" = [["iproute2"]]))]
    #[serde(default)]
    pub exclude: Vec<Str>,
    /// Alternatives to prefer when a dependency can be satisfied several ways.
    #[schemars(extend("default" = [], "examples" = [["mawk"]]))]
    #[serde(default)]
    pub prefer: Vec<Str>,
}

/// `[kernel]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KernelRaw {
    /// `generic` (`linux-image-amd64`) drives VMware/VirtualBox default hardware (e1000, LSI
    /// Logic, AHCI); `cloud` (`linux-image-cloud-amd64`) is smaller and virtio-oriented.
    /// Ignored when `package` is set.
    #[schemars(extend("default" = "generic", "enum" = ["generic", "cloud"]))]
    #[serde(default)]
    pub flavour: Option<Str>,
    /// An explicit kernel package instead of `flavour`.
    #[schemars(extend("examples" = ["linux-image-amd64"]))]
    #[serde(default)]
    pub package: Option<Str>,
    /// Kernel modules added to the initramfs beyond the ones the virtual hardware needs.
    #[schemars(extend("default" = [], "examples" = [["vfat"]]))]
    #[serde(default)]
    pub extra_modules: Vec<Str>,
    /// Extra kernel command-line arguments, one per string.
    #[schemars(extend("default" = [], "examples" = [["quiet"]]))]
    #[serde(default)]
    pub cmdline: Vec<Str>,
}

/// `[system]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SystemRaw {
    /// RFC 1123 host name. Default: the appliance name.
    #[schemars(extend("examples" = ["web"]))]
    #[serde(default)]
    pub hostname: Option<Str>,
    /// A tzdata name.
    #[schemars(extend("default" = "UTC", "examples" = ["Europe/Paris"]))]
    #[serde(default)]
    pub timezone: Option<Str>,
    /// Locale.
    #[schemars(extend("default" = "C.UTF-8"))]
    #[serde(default)]
    pub locale: Option<Str>,
    /// Accounts to create (package maintainer scripts do not run, so declare the accounts your
    /// services use).
    #[serde(default)]
    pub user: Vec<Spanned<UserRaw>>,
    /// Groups to create.
    #[serde(default)]
    pub group: Vec<Spanned<GroupRaw>>,
}

/// `[[system.user]]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UserRaw {
    /// Login name.
    #[schemars(extend("examples" = ["app"]))]
    pub name: Str,
    /// Fixed uid. Default: allocated at build time.
    #[schemars(extend("examples" = [990]))]
    #[serde(default)]
    pub uid: Option<Spanned<i64>>,
    /// Primary group. Default: a group named like the user.
    #[schemars(extend("examples" = ["app"]))]
    #[serde(default)]
    pub group: Option<Str>,
    /// Supplementary groups.
    #[schemars(extend("default" = [], "examples" = [["adm"]]))]
    #[serde(default)]
    pub groups: Vec<Str>,
    /// Home directory. Default: `/nonexistent` for system accounts, else `/home/NAME`.
    #[schemars(extend("examples" = ["/var/lib/app"]))]
    #[serde(default)]
    pub home: Option<Str>,
    /// Login shell. Default: `/usr/sbin/nologin` for system accounts, else `/bin/sh`.
    #[schemars(extend("examples" = ["/usr/sbin/nologin"]))]
    #[serde(default)]
    pub shell: Option<Str>,
    /// System account (uid below 1000, no login).
    #[schemars(extend("default" = false))]
    #[serde(default)]
    pub system: bool,
}

/// `[[system.group]]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GroupRaw {
    /// Group name.
    #[schemars(extend("examples" = ["app"]))]
    pub name: Str,
    /// Fixed gid. Default: allocated at build time.
    #[schemars(extend("examples" = [990]))]
    #[serde(default)]
    pub gid: Option<Spanned<i64>>,
    /// System group (gid below 1000).
    #[schemars(extend("default" = false))]
    #[serde(default)]
    pub system: bool,
}

/// `[[service]]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceRaw {
    /// Unique service name.
    #[schemars(extend("examples" = ["nginx"]))]
    pub name: Str,
    /// argv; the first element is an absolute path that a package (or a `[[file]]`) provides.
    #[schemars(extend("examples" = [["/usr/sbin/nginx", "-g", "daemon off;"]]))]
    pub exec: Spanned<Vec<Str>>,
    /// User to run as.
    #[schemars(extend("default" = "root"))]
    #[serde(default)]
    pub user: Option<Str>,
    /// Group to run as. Default: the user's primary group.
    #[serde(default)]
    pub group: Option<Str>,
    /// Extra environment variables.
    #[schemars(extend("default" = {}, "examples" = [{"LANG": "C.UTF-8"}]))]
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Working directory.
    #[schemars(extend("default" = "/"))]
    #[serde(default)]
    pub working_directory: Option<Str>,
    /// What guest-init does when the service exits.
    #[schemars(extend("default" = "on-failure", "enum" = ["no", "on-failure", "always"]))]
    #[serde(default)]
    pub restart: Option<Str>,
    /// Services that must be ready before this one starts.
    #[schemars(extend("default" = [], "examples" = [["db"]]))]
    #[serde(default)]
    pub after: Vec<Str>,
    /// Readiness probe: exactly one of `tcp`, `file`, `command` or `http`, plus an optional
    /// `timeout`. Without it the service is ready once started.
    #[schemars(extend("examples" = [{"tcp": 80, "timeout": "30s"}]))]
    #[serde(default)]
    pub ready: Option<Spanned<ReadyRaw>>,
}

/// `[[task]]`: a program guest-init runs to completion at boot, supervised and logged like
/// a service; the appliance is ready only when every task has succeeded.
#[derive(Debug, Deserialize, JsonSchema)]
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
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReadyRaw {
    /// Ready when a TCP connection to this port on localhost succeeds.
    #[schemars(extend("examples" = [80]))]
    #[serde(default)]
    pub tcp: Option<Spanned<i64>>,
    /// Ready when this file exists.
    #[schemars(extend("examples" = ["/run/app.pid"]))]
    #[serde(default)]
    pub file: Option<Str>,
    /// Ready when this command exits 0.
    #[schemars(extend("examples" = [["/usr/bin/redis-cli", "ping"]]))]
    #[serde(default)]
    pub command: Option<Spanned<Vec<Str>>>,
    /// Ready when an HTTP GET on localhost answers 2xx.
    #[schemars(extend("examples" = [{"port": 80, "path": "/"}]))]
    #[serde(default)]
    pub http: Option<HttpProbeRaw>,
    /// How long to wait before the service counts as failed: integer seconds or `"30s"`,
    /// `"500ms"`, `"2m"`.
    #[schemars(extend("default" = "30s"))]
    #[serde(default)]
    pub timeout: Option<Spanned<Scalar>>,
}

/// `http = { port, path }` inside `ready`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpProbeRaw {
    /// TCP port.
    #[schemars(extend("examples" = [80]))]
    pub port: Spanned<i64>,
    /// Request path.
    #[schemars(extend("default" = "/"))]
    #[serde(default)]
    pub path: Option<Str>,
}

/// `[[file]]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileRaw {
    /// Absolute, normalized guest path.
    #[schemars(extend("examples" = ["/var/www/html/index.html"]))]
    pub path: Str,
    /// Inline content.
    #[schemars(extend("examples" = ["hello\n"]))]
    #[serde(default)]
    pub content: Option<Str>,
    /// A host file to copy, relative to the recipe's directory.
    #[schemars(extend("examples" = ["files/index.html"]))]
    #[serde(default)]
    pub source: Option<Str>,
    /// Handlebars text rendered with `appliance.*`, `system.*`, `vm.cpus` and `vm.memory_mib`.
    #[schemars(extend("examples" = ["{{appliance.name}} {{appliance.version}}\n"]))]
    #[serde(default)]
    pub template: Option<Str>,
    /// When `template` is rendered: `build` (default, from the recipe) or `boot` (by the
    /// appliance's init before services start, from the deploy-time OVF properties).
    #[serde(default)]
    pub template_at: Option<Str>,
    /// Permission bits as an octal string.
    #[schemars(extend("default" = "0644", "examples" = ["0600"]))]
    #[serde(default)]
    pub mode: Option<Spanned<Scalar>>,
    /// Owner (a user of the image).
    #[schemars(extend("default" = "root"))]
    #[serde(default)]
    pub owner: Option<Str>,
    /// Group.
    #[schemars(extend("default" = "root"))]
    #[serde(default)]
    pub group: Option<Str>,
}

/// `[[directory]]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DirectoryRaw {
    /// Absolute, normalized guest path.
    #[schemars(extend("examples" = ["/var/lib/app"]))]
    pub path: Str,
    /// Permission bits as an octal string.
    #[schemars(extend("default" = "0755", "examples" = ["0750"]))]
    #[serde(default)]
    pub mode: Option<Spanned<Scalar>>,
    /// Owner.
    #[schemars(extend("default" = "root"))]
    #[serde(default)]
    pub owner: Option<Str>,
    /// Group.
    #[schemars(extend("default" = "root"))]
    #[serde(default)]
    pub group: Option<Str>,
}

/// `[[symlink]]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SymlinkRaw {
    /// Absolute, normalized guest path of the link.
    #[schemars(extend("examples" = ["/etc/localtime"]))]
    pub path: Str,
    /// Link target, written as is.
    #[schemars(extend("examples" = ["/usr/share/zoneinfo/UTC"]))]
    pub target: Str,
}

/// `[network]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkRaw {
    /// DHCP on the first interface. `false` without `static` leaves only loopback.
    #[schemars(extend("default" = true))]
    #[serde(default)]
    pub dhcp: Option<Spanned<bool>>,
    /// A static IPv4 configuration instead of DHCP.
    #[serde(default, rename = "static")]
    pub static_: Option<StaticRaw>,
}

/// `[network.static]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StaticRaw {
    /// Address with prefix length.
    #[schemars(extend("examples" = ["10.0.2.15/24"]))]
    pub address: Str,
    /// Default gateway, inside the subnet.
    #[schemars(extend("examples" = ["10.0.2.2"]))]
    #[serde(default)]
    pub gateway: Option<Str>,
    /// IPv6 address with prefix length, e.g. `2001:db8::10/64`.
    #[serde(default)]
    pub address6: Option<Str>,
    /// IPv6 default gateway.
    #[serde(default)]
    pub gateway6: Option<Str>,
    /// Name servers.
    #[schemars(extend("default" = [], "examples" = [["10.0.2.3"]]))]
    #[serde(default)]
    pub dns: Vec<Str>,
}

/// `[disk]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiskRaw {
    /// `"auto"` (the smallest size that fits, plus `free-space`) or a size: integer bytes or a
    /// number with a binary unit (`"2GiB"`).
    #[schemars(extend("default" = "auto", "examples" = ["1GiB"]))]
    #[serde(default)]
    pub size: Option<Spanned<Scalar>>,
    /// Free space left in the root file system with `size = "auto"`.
    #[schemars(extend("default" = "64MiB"))]
    #[serde(default)]
    pub free_space: Option<Spanned<Scalar>>,
    /// Formats to write: `raw`, `qcow2`, `vmdk` (streamOptimized), `ova` (OVF in one tar).
    #[schemars(extend("default" = ["raw"], "examples" = [["raw", "qcow2", "vmdk", "ova"]]))]
    #[serde(default)]
    pub formats: Option<Spanned<Vec<Str>>>,
    /// Root file system type.
    #[schemars(extend("default" = "ext4", "enum" = ["ext4"]))]
    #[serde(default)]
    pub filesystem: Option<Str>,
    /// Make the image convertible by virt-v2v (`virt-v2v -i ova`): UEFI boots through
    /// Debian's GRUB (`grub-efi-amd64-bin`) with a GRUB-legacy `/EFI/BOOT/menu.lst` as its
    /// real configuration, the kernel is also at `/boot/vmlinuz-VERSION` and its initramfs
    /// modules under `/lib/modules/VERSION` (both listed in the dpkg database), `dash`
    /// (`/bin/sh`, with `dpkg`) is installed and `/etc/fstab` names the root and the ESP.
    /// BIOS keeps SYSLINUX; virt-v2v converts the UEFI boot. On the nginx example this
    /// costs 26 MB of root file system (12 MB of it the kernel's copy) and 18 MB of OVA.
    #[schemars(extend("default" = false))]
    #[serde(default)]
    pub convertible: Option<bool>,
}

/// `[vm]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VmRaw {
    /// Virtual CPUs, 1 to 64.
    #[schemars(extend("default" = 1))]
    #[serde(default)]
    pub cpus: Option<Spanned<i64>>,
    /// Memory: at least 64MiB, whole MiB.
    #[schemars(extend("default" = "256MiB", "examples" = ["512MiB"]))]
    #[serde(default)]
    pub memory: Option<Spanned<Scalar>>,
    /// Firmware the VM boots with.
    #[schemars(extend("default" = "bios", "enum" = ["bios", "efi"]))]
    #[serde(default)]
    pub firmware: Option<Str>,
    /// Disk controller the OVF declares: LSI Logic SCSI (VMware) or AHCI SATA (VirtualBox).
    #[schemars(extend("default" = "lsilogic", "enum" = ["lsilogic", "sata"]))]
    #[serde(default)]
    pub disk_controller: Option<Str>,
    /// Network adapter the OVF declares.
    #[schemars(extend("default" = "e1000", "enum" = ["e1000", "vmxnet3", "virtio"]))]
    #[serde(default)]
    pub nic: Option<Str>,
}

/// `[ovf]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OvfRaw {
    /// OVF `ProductUrl`.
    #[schemars(extend("examples" = ["https://example.org/app"]))]
    #[serde(default)]
    pub product_url: Option<Str>,
    /// A text file shown as the EULA, relative to the recipe.
    #[schemars(extend("examples" = ["EULA.txt"]))]
    #[serde(default)]
    pub eula: Option<Str>,
    /// OVF `AnnotationSection` text.
    #[schemars(extend("examples" = ["Built with jeos"]))]
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
    /// OVF `ProductSection` properties a hypervisor can show or set at deploy time.
    #[serde(default)]
    pub property: Vec<Spanned<OvfPropertyRaw>>,
}

/// `[[ovf.property]]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OvfPropertyRaw {
    /// `ovf:key`.
    #[schemars(extend("examples" = ["app.greeting"]))]
    pub key: Str,
    /// `ovf:type` (DSP0243).
    #[schemars(extend("default" = "string", "enum" = super::OVF_PROPERTY_TYPES))]
    #[serde(default, rename = "type")]
    pub type_: Option<Str>,
    /// The default value, valid for `type` (`value` is accepted too).
    #[schemars(extend("examples" = ["hello"]))]
    #[serde(default, rename = "default", alias = "value")]
    pub value: Option<Str>,
    /// Label shown by the hypervisor.
    #[schemars(extend("examples" = ["Greeting"]))]
    #[serde(default)]
    pub label: Option<String>,
    /// Longer help text shown by the deployment wizard.
    #[serde(default)]
    pub description: Option<String>,
    /// A secret: deployment tools mask the input.
    #[serde(default)]
    pub password: bool,
    /// Whether the user may change it at deploy time.
    #[schemars(extend("default" = false))]
    #[serde(default)]
    pub user_configurable: bool,
}

/// `[test]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TestRaw {
    /// Wall-clock limit for boot plus all checks: integer seconds or `"120s"`, `"2m"`.
    #[schemars(extend("default" = "120s"))]
    #[serde(default)]
    pub timeout: Option<Spanned<Scalar>>,
    /// Checks, run in file order. Each has a `name` and exactly one of `http`, `tcp`,
    /// `command`, `file` or `service`.
    #[serde(default)]
    pub check: Vec<Spanned<CheckRaw>>,
}

/// `[[test.check]]`: a name plus exactly one probe.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckRaw {
    /// Unique, human-readable name.
    #[schemars(extend("examples" = ["serves the page"]))]
    pub name: Str,
    /// Where the check runs: `"guest"` inside the appliance against its 127.0.0.1, or
    /// `"host"`: `jeos test` runs it on the host through a forwarded port (vsock in the
    /// embedded runner, user-network forwarding in QEMU) after the guest's own checks, to
    /// prove the service is reachable from outside. `host` is for `http` and `tcp` checks.
    #[schemars(extend("default" = "guest", "enum" = ["guest", "host"]))]
    #[serde(default)]
    pub from: Option<Str>,
    /// An HTTP GET on localhost.
    #[schemars(extend("examples" = [{"port": 80, "path": "/", "status": 200, "body-contains": "hello"}]))]
    #[serde(default)]
    pub http: Option<HttpCheckRaw>,
    /// A TCP connection to localhost succeeds.
    #[schemars(extend("examples" = [{"port": 6379}]))]
    #[serde(default)]
    pub tcp: Option<TcpCheckRaw>,
    /// A command's exit code and output.
    #[schemars(extend("examples" = [{"run": ["/usr/bin/redis-cli", "ping"], "stdout-contains": "PONG"}]))]
    #[serde(default)]
    pub command: Option<CommandCheckRaw>,
    /// A file exists.
    #[schemars(extend("examples" = [{"path": "/etc/motd"}]))]
    #[serde(default)]
    pub file: Option<FileCheckRaw>,
    /// A `[[service]]` is running and ready.
    #[schemars(extend("examples" = [{"name": "nginx"}]))]
    #[serde(default)]
    pub service: Option<ServiceCheckRaw>,
}

/// `http = { port, path, status, body-contains }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpCheckRaw {
    /// TCP port.
    #[schemars(extend("examples" = [80]))]
    pub port: Spanned<i64>,
    /// Request path.
    #[schemars(extend("default" = "/"))]
    #[serde(default)]
    pub path: Option<Str>,
    /// Expected HTTP status.
    #[schemars(extend("default" = 200))]
    #[serde(default)]
    pub status: Option<Spanned<i64>>,
    /// Text the body must contain.
    #[schemars(extend("examples" = ["hello"]))]
    #[serde(default)]
    pub body_contains: Option<String>,
}

/// `tcp = { port }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TcpCheckRaw {
    /// TCP port.
    #[schemars(extend("examples" = [6379]))]
    pub port: Spanned<i64>,
}

/// `command = { run, exit-code, stdout-contains }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandCheckRaw {
    /// argv, first element absolute.
    #[schemars(extend("examples" = [["/bin/true"]]))]
    pub run: Spanned<Vec<Str>>,
    /// Expected exit code.
    #[schemars(extend("default" = 0))]
    #[serde(default)]
    pub exit_code: Option<Spanned<i64>>,
    /// Text stdout must contain.
    #[schemars(extend("examples" = ["PONG"]))]
    #[serde(default)]
    pub stdout_contains: Option<String>,
}

/// `file = { path }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileCheckRaw {
    /// Absolute guest path.
    #[schemars(extend("examples" = ["/etc/motd"]))]
    pub path: Str,
}

/// `service = { name }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceCheckRaw {
    /// A `[[service]]` name.
    #[schemars(extend("examples" = ["nginx"]))]
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

impl JsonSchema for Scalar {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scalar".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["integer", "string"] })
    }
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
