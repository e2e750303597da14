//! OVF 1.x descriptor (DMTF DSP0243, namespace `http://schemas.dmtf.org/ovf/envelope/1`)
//! rendered from `templates/ovf.hbs` with handlebars in strict mode, plus a compatibility
//! lint for settings known to break imports.
//!
//! Choices, all overridable in [`OvfVm`] / [`OvfOs`]:
//! - `vmx-14` as `vssd:VirtualSystemType`: the newest hardware family ESXi 6.7 runs, also
//!   accepted by Workstation/Fusion 15+ (which run up to 16+) and by VirtualBox (which
//!   ignores the family). Newer hosts upgrade it on demand; older ones refuse newer values.
//! - `ovf:id="96"` (CIM "Debian 64-Bit") with `vmw:osType="debian10_64Guest"`: known to
//!   ESXi 6.7 and Workstation 15; `debian12_64Guest` exists only from ESXi 8, where an
//!   unknown osType makes the import fail. The kernel is the same kind either way.
//! - The RASD children of each `Item` are in the schema's order, which is alphabetical
//!   (the CIM RASD type is an `xs:sequence`); vSphere's OVF parser is strict about it.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use handlebars::Handlebars;
use serde::Serialize;

/// The OVF template, embedded at build time.
pub const OVF_TEMPLATE: &str = include_str!("../../templates/ovf.hbs");

/// Errors of OVF rendering.
#[derive(Debug, thiserror::Error)]
pub enum OvfError {
    /// The template failed to compile or render (a missing variable in strict mode).
    #[error("rendering the ovf descriptor failed")]
    Render {
        /// The handlebars error.
        #[source]
        source: Box<handlebars::RenderError>,
    },
    /// The template does not parse.
    #[error("the ovf template does not parse")]
    Template {
        /// The handlebars error.
        #[source]
        source: Box<handlebars::TemplateError>,
    },
    /// A context value cannot be represented.
    #[error("invalid ovf value for `{field}`: {reason}")]
    InvalidValue {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Boot firmware (`vmw:Config firmware`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Legacy BIOS.
    Bios,
    /// UEFI.
    Efi,
}

/// The disk controller the disks hang off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskController {
    /// SCSI LSI Logic parallel (ResourceType 6, `lsilogic`): the most portable choice.
    LsiLogic,
    /// VMware paravirtual SCSI (ResourceType 6, `VirtualSCSI`).
    Pvscsi,
    /// SATA AHCI (ResourceType 20, `vmware.sata.ahci`); needs vmx-10 or newer.
    Sata,
    /// IDE (ResourceType 5, `PIIX4`).
    Ide,
}

/// The network adapter model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    /// Intel E1000: every hypervisor emulates it.
    E1000,
    /// VMware VMXNET3 (paravirtual).
    Vmxnet3,
}

/// One disk of the package: its file in References and its DiskSection entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvfDisk {
    /// File name inside the package (`ovf:href`).
    pub href: String,
    /// Exact size of that file in bytes.
    pub file_bytes: u64,
    /// Virtual capacity in bytes.
    pub capacity_bytes: u64,
    /// Bytes of the disk holding data (from the VMDK writer).
    pub populated_bytes: u64,
}

/// Virtual hardware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvfVm {
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Boot firmware.
    pub firmware: Firmware,
    /// Disk controller.
    pub controller: DiskController,
    /// Network adapter.
    pub nic: NicModel,
    /// `vmx-NN` hardware family.
    pub hardware_version: u32,
}

/// Guest operating system identification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvfOs {
    /// CIM operating system id (96 = Debian 64-Bit).
    pub cim_id: u16,
    /// VMware guest id.
    pub vmw_os_type: String,
    /// Human-readable description.
    pub description: String,
}

impl Default for OvfOs {
    fn default() -> Self {
        Self {
            cim_id: 96,
            vmw_os_type: "debian10_64Guest".into(),
            description: "Debian GNU/Linux (64-bit)".into(),
        }
    }
}

/// A vApp property (`ProductSection/Property`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvfProperty {
    /// `ovf:key`: `[A-Za-z0-9_.-]+`.
    pub key: String,
    /// `ovf:type`, e.g. `string`, `boolean`, `uint16`.
    pub kind: String,
    /// Default value.
    pub value: String,
    /// Whether the user may change it at deployment.
    pub user_configurable: bool,
    /// Short label.
    pub label: String,
    /// Longer description.
    pub description: String,
}

/// Product information.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvfProduct {
    /// Product name.
    pub product: String,
    /// Vendor.
    pub vendor: String,
    /// Short version.
    pub version: String,
    /// Full version (e.g. with build metadata).
    pub full_version: String,
    /// Product URL, if any.
    pub product_url: Option<String>,
    /// vApp properties.
    pub properties: Vec<OvfProperty>,
}

/// The logical network the NIC connects to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvfNetwork {
    /// Network name (`VM Network` is what vSphere maps by default).
    pub name: String,
    /// Description.
    pub description: String,
}

/// Everything the descriptor says; rendered by [`render_ovf`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OvfContext {
    /// Appliance name (VirtualSystem id and name).
    pub name: String,
    /// Disks, in References order.
    pub disks: Vec<OvfDisk>,
    /// The network.
    pub network: OvfNetwork,
    /// Virtual hardware.
    pub vm: OvfVm,
    /// Guest OS.
    pub os: OvfOs,
    /// Product section.
    pub product: OvfProduct,
    /// Annotation text, if any.
    pub annotation: Option<String>,
    /// EULA text, if any.
    pub eula: Option<String>,
}

#[derive(Serialize)]
struct DiskView<'a> {
    href: &'a str,
    file_id: String,
    disk_id: String,
    file_bytes: u64,
    capacity_bytes: u64,
    populated_bytes: u64,
    instance_id: usize,
    address_on_parent: usize,
}

#[derive(Serialize)]
struct ControllerView {
    resource_type: u16,
    subtype: &'static str,
    element_name: &'static str,
    description: &'static str,
}

#[derive(Serialize)]
struct NicView {
    subtype: &'static str,
    description: &'static str,
    instance_id: usize,
}

#[derive(Serialize)]
struct View<'a> {
    ctx: &'a OvfContext,
    disks: Vec<DiskView<'a>>,
    controller: ControllerView,
    nic: NicView,
}

/// XML escaping for text and attribute values. Characters XML 1.0 cannot carry at all
/// (most C0 controls) become U+FFFD.
pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if u32::from(c) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Renders the descriptor.
pub fn render_ovf(ctx: &OvfContext) -> Result<String, OvfError> {
    if ctx.disks.is_empty() {
        return Err(OvfError::InvalidValue {
            field: "disks",
            reason: "at least one disk is needed".into(),
        });
    }
    let controller = match ctx.vm.controller {
        DiskController::LsiLogic => ControllerView {
            resource_type: 6,
            subtype: "lsilogic",
            element_name: "SCSI Controller 0",
            description: "SCSI Controller",
        },
        DiskController::Pvscsi => ControllerView {
            resource_type: 6,
            subtype: "VirtualSCSI",
            element_name: "SCSI Controller 0",
            description: "SCSI Controller",
        },
        DiskController::Sata => ControllerView {
            resource_type: 20,
            subtype: "vmware.sata.ahci",
            element_name: "SATA Controller 0",
            description: "SATA Controller",
        },
        DiskController::Ide => ControllerView {
            resource_type: 5,
            subtype: "PIIX4",
            element_name: "IDE Controller 0",
            description: "IDE Controller",
        },
    };
    let disks: Vec<DiskView<'_>> = ctx
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| DiskView {
            href: &d.href,
            file_id: format!("file{}", i + 1),
            disk_id: format!("vmdisk{}", i + 1),
            file_bytes: d.file_bytes,
            capacity_bytes: d.capacity_bytes,
            populated_bytes: d.populated_bytes,
            instance_id: 4 + i,
            address_on_parent: i,
        })
        .collect();
    let nic = NicView {
        subtype: match ctx.vm.nic {
            NicModel::E1000 => "E1000",
            NicModel::Vmxnet3 => "VmxNet3",
        },
        description: match ctx.vm.nic {
            NicModel::E1000 => "E1000",
            NicModel::Vmxnet3 => "VmxNet3",
        },
        instance_id: 4 + disks.len(),
    };
    let view = View {
        ctx,
        disks,
        controller,
        nic,
    };
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(escape_xml);
    hb.register_template_string("ovf", OVF_TEMPLATE)
        .map_err(|e| OvfError::Template {
            source: Box::new(e),
        })?;
    hb.render("ovf", &view).map_err(|e| OvfError::Render {
        source: Box::new(e),
    })
}

/// How serious a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Some hypervisors will import it with reduced function or a prompt.
    Warning,
    /// Known to make an import fail or the appliance not boot.
    Error,
}

/// A compatibility problem found by [`lint_ovf`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// What is wrong (lowercase, no trailing period).
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

const MIB: u64 = 1024 * 1024;

/// Most vCPUs each hardware family accepts (VMware "hardware features by version").
fn max_cpus(hardware_version: u32) -> u32 {
    match hardware_version {
        0..=6 => 4,
        7 => 8,
        8 => 32,
        9 | 10 => 64,
        11..=14 => 128,
        _ => 256,
    }
}

/// Checks settings known to break imports on common hypervisors.
pub fn lint_ovf(ctx: &OvfContext) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut add = |severity, message: String, hint: &str| {
        findings.push(Finding {
            severity,
            message,
            hint: hint.to_owned(),
        });
    };
    let vm = &ctx.vm;
    if vm.firmware == Firmware::Efi && vm.controller == DiskController::Ide {
        add(
            Severity::Error,
            "`efi` firmware cannot boot from an `ide` disk on VMware".into(),
            "use the `lsilogic` or `sata` controller with `efi`",
        );
    }
    if vm.nic == NicModel::Vmxnet3 {
        add(
            Severity::Warning,
            "VirtualBox has no `vmxnet3` adapter; it substitutes an emulated one".into(),
            "use `e1000` for an appliance meant for every hypervisor",
        );
    }
    if vm.controller == DiskController::Pvscsi {
        add(
            Severity::Warning,
            "VirtualBox has no `pvscsi` controller; the disk may not be found".into(),
            "use `lsilogic` for an appliance meant for every hypervisor",
        );
    }
    if vm.controller == DiskController::Sata && vm.hardware_version < 10 {
        add(
            Severity::Error,
            format!(
                "the `sata` controller needs vmx-10 or newer, not vmx-{}",
                vm.hardware_version
            ),
            "raise the hardware version or use `lsilogic`",
        );
    }
    if vm.memory_mib == 0 || !vm.memory_mib.is_multiple_of(4) {
        add(
            Severity::Error,
            format!(
                "memory of {} MiB is not a positive multiple of 4 MiB",
                vm.memory_mib
            ),
            "ESXi rejects it: round the memory to a multiple of 4 MiB",
        );
    }
    if vm.cpus == 0 || vm.cpus > max_cpus(vm.hardware_version) {
        add(
            Severity::Error,
            format!(
                "{} vCPUs are not allowed with vmx-{}",
                vm.cpus, vm.hardware_version
            ),
            "use between 1 and the family's maximum vCPUs, or a newer hardware version",
        );
    } else if vm.cpus > 8 && vm.hardware_version < 11 {
        add(
            Severity::Warning,
            format!(
                "{} vCPUs with vmx-{} exceed what older hosts license",
                vm.cpus, vm.hardware_version
            ),
            "keep at most 8 vCPUs or use vmx-11 or newer",
        );
    }
    for d in &ctx.disks {
        if d.capacity_bytes % MIB != 0 {
            add(
                Severity::Warning,
                format!(
                    "disk `{}` capacity {} is not a multiple of 1 MiB",
                    d.href, d.capacity_bytes
                ),
                "vSphere rounds or rejects such disks: size the raw image in whole MiB",
            );
        }
    }
    for p in &ctx.product.properties {
        let key_ok = !p.key.is_empty()
            && p.key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !key_ok {
            add(
                Severity::Error,
                format!(
                    "vApp property key `{}` has characters other than letters, digits, `_`, `.`, `-`",
                    p.key
                ),
                "rename the property",
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn context() -> OvfContext {
        OvfContext {
            name: "nginx".into(),
            disks: vec![OvfDisk {
                href: "nginx-disk1.vmdk".into(),
                file_bytes: 123_456,
                capacity_bytes: 1024 * MIB,
                populated_bytes: 65_536_000,
            }],
            network: OvfNetwork {
                name: "VM Network".into(),
                description: "The VM Network network".into(),
            },
            vm: OvfVm {
                cpus: 1,
                memory_mib: 256,
                firmware: Firmware::Bios,
                controller: DiskController::LsiLogic,
                nic: NicModel::E1000,
                hardware_version: 14,
            },
            os: OvfOs::default(),
            product: OvfProduct {
                product: "nginx".into(),
                vendor: "Example Org".into(),
                version: "1.0.0".into(),
                full_version: "1.0.0".into(),
                product_url: None,
                properties: vec![],
            },
            annotation: None,
            eula: None,
        }
    }

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            escape_xml("a<b>&\"'\u{1}"),
            "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}"
        );
    }

    #[test]
    fn render_needs_a_disk() {
        let mut c = context();
        c.disks.clear();
        assert!(matches!(
            render_ovf(&c),
            Err(OvfError::InvalidValue { field: "disks", .. })
        ));
    }

    #[test]
    fn render_escapes_values() {
        let mut c = context();
        c.product.vendor = "A & B <x>".into();
        let xml = render_ovf(&c).unwrap();
        assert!(xml.contains("<Vendor>A &amp; B &lt;x&gt;</Vendor>"));
        assert!(!xml.contains("&#x"));
    }

    #[test]
    fn typical_context_has_no_findings() {
        assert!(lint_ovf(&context()).is_empty());
    }

    fn lint_with(f: impl FnOnce(&mut OvfContext)) -> Vec<Finding> {
        let mut c = context();
        f(&mut c);
        lint_ovf(&c)
    }

    #[test]
    fn lint_efi_with_ide() {
        let f = lint_with(|c| {
            c.vm.firmware = Firmware::Efi;
            c.vm.controller = DiskController::Ide;
        });
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0].message.contains("ide"));
    }

    #[test]
    fn lint_vmxnet3_and_pvscsi_warn() {
        let f = lint_with(|c| {
            c.vm.nic = NicModel::Vmxnet3;
            c.vm.controller = DiskController::Pvscsi;
        });
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.severity == Severity::Warning));
    }

    #[test]
    fn lint_memory_multiple_of_4_mib() {
        let f = lint_with(|c| c.vm.memory_mib = 258);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("258"));
        assert!(lint_with(|c| c.vm.memory_mib = 260).is_empty());
    }

    #[test]
    fn lint_cpus_against_hardware_version() {
        let f = lint_with(|c| {
            c.vm.cpus = 16;
            c.vm.hardware_version = 7;
        });
        assert_eq!(f[0].severity, Severity::Error);
        let f = lint_with(|c| {
            c.vm.cpus = 16;
            c.vm.hardware_version = 9;
        });
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(lint_with(|c| c.vm.cpus = 16).is_empty());
        assert_eq!(lint_with(|c| c.vm.cpus = 0).len(), 1);
    }

    #[test]
    fn lint_disk_capacity_multiple_of_1_mib() {
        let f = lint_with(|c| c.disks[0].capacity_bytes = 1024 * MIB + 512);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("nginx-disk1.vmdk"));
    }

    #[test]
    fn lint_sata_needs_vmx_10() {
        let f = lint_with(|c| {
            c.vm.controller = DiskController::Sata;
            c.vm.hardware_version = 9;
        });
        assert_eq!(f.len(), 1);
        assert!(lint_with(|c| c.vm.controller = DiskController::Sata).is_empty());
    }

    #[test]
    fn lint_property_keys() {
        let f = lint_with(|c| {
            c.product.properties.push(OvfProperty {
                key: "bad key".into(),
                kind: "string".into(),
                value: String::new(),
                user_configurable: true,
                label: "x".into(),
                description: "y".into(),
            });
        });
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
    }
}
