//! OVF 1.x descriptor (DMTF DSP0243, namespace `http://schemas.dmtf.org/ovf/envelope/1`)
//! rendered from `templates/ovf.hbs` with handlebars in strict mode, plus a compatibility
//! lint for settings known to break imports.
//!
//! Choices, all overridable in [`OvfVm`] / [`OvfOs`]:
//! - Targets ([`OvfTarget`]): `vmware` lists every `vmx-NN` family from the lowest the
//!   hardware needs ([`min_hardware_version`], at least vmx-07 = ESXi 4) up to
//!   [`MAX_HARDWARE_VERSION`] in `vssd:VirtualSystemType` (space-separated, as DSP0243
//!   allows; each host picks the newest it runs); `virtualbox` adds `virtualbox-2.2`,
//!   VirtualBox's own `vbox:OSType` and a complete `vbox:Machine` (the only place VirtualBox
//!   reads the firmware from; [`crate::vbox`]); `generic` (virt-v2v, oVirt, OpenStack) uses only
//!   DMTF elements. Devices a target lacks are lint errors or warnings for that target.
//! - `ovf:transport="iso com.vmware.guestInfo"` on the hardware section when the product
//!   declares properties: the deployer hands the OVF environment to the guest on a CD-ROM
//!   or through VMware guestinfo, and guest-init reads it at boot.
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
    /// virtio-net (KVM, VirtualBox `virtio-net`); VMware has none.
    Virtio,
}

/// A hypervisor family the descriptor is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OvfTarget {
    /// VMware ESXi, Workstation, Fusion.
    Vmware,
    /// Oracle VirtualBox.
    Virtualbox,
    /// DMTF-only readers: virt-v2v, oVirt, OpenStack, Proxmox.
    Generic,
}

impl OvfTarget {
    /// The recipe spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vmware => "vmware",
            Self::Virtualbox => "virtualbox",
            Self::Generic => "generic",
        }
    }
}

/// Newest VMware hardware family listed (ESXi 8.0 U2).
pub const MAX_HARDWARE_VERSION: u32 = 21;

/// Lowest VMware hardware family that has every device of `vm`: vmx-07 (ESXi 4: LSI Logic,
/// PVSCSI, E1000, VMXNET3, 8 vCPUs), vmx-08 for EFI firmware or up to 32 vCPUs, vmx-09
/// for 64, vmx-10 for SATA, vmx-11 beyond 64 vCPUs.
pub fn min_hardware_version(vm: &OvfVm) -> u32 {
    let mut version = 7;
    if vm.firmware == Firmware::Efi || vm.cpus > 8 {
        version = 8;
    }
    if vm.cpus > 32 {
        version = 9;
    }
    if vm.controller == DiskController::Sata {
        version = version.max(10);
    }
    if vm.cpus > 64 {
        version = 11;
    }
    version
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
    /// Lowest `vmx-NN` hardware family (see [`min_hardware_version`]); also the VMDK's
    /// `ddb.virtualHWVersion`.
    pub hardware_version: u32,
    /// Hypervisor families the descriptor is written for (at least one).
    pub targets: Vec<OvfTarget>,
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
    /// A secret (`ovf:password`): deployment tools mask it.
    pub password: bool,
    /// The `Category` heading it appears under, if any (consecutive properties with the
    /// same category share one heading).
    pub category: Option<String>,
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
    /// `vbox:uuid`, for the `virtualbox` target.
    vbox_uuid: Option<String>,
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
struct PropertyView<'a> {
    property: &'a OvfProperty,
    category: Option<&'a str>,
}

#[derive(Serialize)]
struct View<'a> {
    ctx: &'a OvfContext,
    disks: Vec<DiskView<'a>>,
    controller: ControllerView,
    nic: NicView,
    system_types: String,
    transport: bool,
    /// VirtualBox's machine description, for the `virtualbox` target.
    virtualbox: Option<crate::vbox::VboxMachine>,
    properties: Vec<PropertyView<'a>>,
}

/// `vssd:VirtualSystemType`: the families of every target, space-separated.
pub fn system_types(vm: &OvfVm) -> String {
    let mut types = Vec::new();
    if vm.targets.contains(&OvfTarget::Vmware) {
        types.extend(
            (vm.hardware_version.max(7)..=MAX_HARDWARE_VERSION.max(vm.hardware_version))
                .map(|n| format!("vmx-{n:02}")),
        );
    }
    if vm.targets.contains(&OvfTarget::Virtualbox) {
        types.push("virtualbox-2.2".into());
    }
    if types.is_empty() {
        // Generic only: DMTF defines no family names; say which one the disk was made for.
        types.push(format!("vmx-{:02}", vm.hardware_version));
    }
    types.join(" ")
}

fn property_views(properties: &[OvfProperty]) -> Vec<PropertyView<'_>> {
    let mut previous: Option<&str> = None;
    properties
        .iter()
        .map(|p| {
            let current = p.category.as_deref();
            let category = current.filter(|c| previous != Some(*c));
            previous = current;
            PropertyView {
                property: p,
                category,
            }
        })
        .collect()
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
    let vbox = ctx
        .vm
        .targets
        .contains(&OvfTarget::Virtualbox)
        .then(|| crate::vbox::machine(ctx));
    let disks: Vec<DiskView<'_>> = ctx
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| DiskView {
            vbox_uuid: vbox.as_ref().map(|m| m.disks[i].uuid.clone()),
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
    if ctx.vm.targets.is_empty() {
        return Err(OvfError::InvalidValue {
            field: "targets",
            reason: "at least one target is needed".into(),
        });
    }
    let (subtype, description) = match ctx.vm.nic {
        NicModel::E1000 => ("E1000", "E1000"),
        NicModel::Vmxnet3 => ("VmxNet3", "VmxNet3"),
        // VirtualBox reads `virtio-net`; virt-v2v keeps any other name as the source model.
        NicModel::Virtio => ("virtio-net", "virtio-net"),
    };
    let nic = NicView {
        subtype,
        description,
        instance_id: 4 + disks.len(),
    };
    let view = View {
        ctx,
        disks,
        controller,
        nic,
        system_types: system_types(&ctx.vm),
        transport: !ctx.product.properties.is_empty(),
        virtualbox: vbox,
        properties: property_views(&ctx.product.properties),
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
    let vmware = vm.targets.contains(&OvfTarget::Vmware);
    let virtualbox = vm.targets.contains(&OvfTarget::Virtualbox);
    let generic = vm.targets.contains(&OvfTarget::Generic);
    if vmware && vm.firmware == Firmware::Efi && vm.controller == DiskController::Ide {
        add(
            Severity::Error,
            "vmware: `efi` firmware cannot boot from an `ide` disk".into(),
            "use the `lsilogic` or `sata` controller with `efi`",
        );
    }
    if vmware && vm.nic == NicModel::Virtio {
        add(
            Severity::Error,
            "vmware: VMware has no virtio-net adapter".into(),
            "use `nic = \"e1000\"` or `\"vmxnet3\"`, or leave `vmware` out of `[ovf] targets`",
        );
    }
    if virtualbox && vm.nic == NicModel::Vmxnet3 {
        add(
            Severity::Warning,
            "virtualbox: VirtualBox has no `vmxnet3` adapter; it substitutes an emulated one"
                .into(),
            "use `e1000` for an appliance meant for every hypervisor",
        );
    }
    if generic && vm.nic == NicModel::Vmxnet3 {
        add(
            Severity::Warning,
            "generic: KVM-based platforms have no `vmxnet3` adapter; importers substitute one"
                .into(),
            "use `e1000` or `virtio` for an appliance meant for KVM platforms",
        );
    }
    if (virtualbox || generic) && vm.controller == DiskController::Pvscsi {
        add(
            Severity::Warning,
            "virtualbox/generic: there is no `pvscsi` controller outside VMware; the disk may \
             not be found"
                .into(),
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
                targets: vec![OvfTarget::Vmware, OvfTarget::Virtualbox, OvfTarget::Generic],
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
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f.iter().all(|f| f.severity == Severity::Warning));
        // VMware alone has both devices.
        assert!(
            lint_with(|c| {
                c.vm.nic = NicModel::Vmxnet3;
                c.vm.controller = DiskController::Pvscsi;
                c.vm.targets = vec![OvfTarget::Vmware];
            })
            .is_empty()
        );
    }

    #[test]
    fn virtio_is_an_error_for_vmware_only() {
        let f = lint_with(|c| c.vm.nic = NicModel::Virtio);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0].message.starts_with("vmware:"));
        let ok = lint_with(|c| {
            c.vm.nic = NicModel::Virtio;
            c.vm.targets = vec![OvfTarget::Virtualbox, OvfTarget::Generic];
        });
        assert!(ok.is_empty());
        let mut c = context();
        c.vm.nic = NicModel::Virtio;
        c.vm.targets = vec![OvfTarget::Virtualbox, OvfTarget::Generic];
        let xml = render_ovf(&c).unwrap();
        assert!(xml.contains("<rasd:ResourceSubType>virtio-net</rasd:ResourceSubType>"));
        assert!(xml.contains("<vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>"));
        assert!(xml.contains("<vbox:OSType ovf:required=\"false\">Debian_64</vbox:OSType>"));
    }

    #[test]
    fn virtualbox_gets_its_machine_with_the_firmware_and_the_disk_by_uuid() {
        let mut c = context();
        c.vm.firmware = Firmware::Efi;
        c.vm.controller = DiskController::Sata;
        c.vm.hardware_version = 10;
        c.vm.nic = NicModel::Virtio;
        c.vm.targets = vec![OvfTarget::Virtualbox, OvfTarget::Generic];
        let xml = render_ovf(&c).unwrap();
        let machine = crate::vbox::machine(&c);
        let disk = &machine.disks[0];
        assert!(
            xml.contains(&format!(" vbox:uuid=\"{}\"/>", disk.uuid)),
            "{xml}"
        );
        assert!(
            xml.contains(&format!("<Image uuid=\"{{{}}}\"/>", disk.uuid)),
            "{xml}"
        );
        for needle in [
            "<vbox:Machine ovf:required=\"false\" version=\"1.12-linux\"",
            "OSType=\"Debian_64\">",
            "<Firmware type=\"EFI\"/>",
            "<Adapter slot=\"0\" enabled=\"true\" type=\"virtio\">",
            "<StorageController name=\"SATA\" type=\"AHCI\" PortCount=\"1\"",
            "<CPU count=\"1\">",
        ] {
            assert!(xml.contains(needle), "`{needle}` not in {xml}");
        }
        // The machine element comes after the hardware section, inside the VirtualSystem.
        let hw_end = xml.find("</VirtualHardwareSection>").unwrap();
        let machine_at = xml.find("<vbox:Machine").unwrap();
        assert!(machine_at > hw_end && machine_at < xml.find("</VirtualSystem>").unwrap());
        // BIOS, LSI Logic and E1000 for the default hardware.
        let mut c = context();
        c.vm.targets = vec![OvfTarget::Virtualbox];
        let xml = render_ovf(&c).unwrap();
        assert!(xml.contains("<Firmware type=\"BIOS\"/>"));
        assert!(xml.contains("type=\"LsiLogic\" PortCount=\"16\""));
        assert!(xml.contains("type=\"82540EM\""));
        // Without the target, nothing of it.
        c.vm.targets = vec![OvfTarget::Vmware, OvfTarget::Generic];
        let xml = render_ovf(&c).unwrap();
        assert!(!xml.contains("vbox:Machine") && !xml.contains("vbox:uuid"));
    }

    #[test]
    fn hardware_families_from_the_lowest_needed() {
        let mut c = context();
        assert_eq!(min_hardware_version(&c.vm), 7);
        c.vm.firmware = Firmware::Efi;
        assert_eq!(min_hardware_version(&c.vm), 8);
        c.vm.controller = DiskController::Sata;
        assert_eq!(min_hardware_version(&c.vm), 10);
        c.vm.hardware_version = 10;
        let types = system_types(&c.vm);
        assert!(types.starts_with("vmx-10 vmx-11 "), "{types}");
        assert!(types.ends_with("vmx-21 virtualbox-2.2"), "{types}");
        c.vm.targets = vec![OvfTarget::Generic];
        assert_eq!(system_types(&c.vm), "vmx-10");
    }

    #[test]
    fn properties_get_transport_categories_and_password() {
        let mut c = context();
        assert!(!render_ovf(&c).unwrap().contains("ovf:transport"));
        for (key, category, password) in [
            ("jeos.hostname", Some("Network"), false),
            ("jeos.dns", Some("Network"), false),
            ("app.secret", Some("Application"), true),
        ] {
            c.product.properties.push(OvfProperty {
                key: key.into(),
                kind: "string".into(),
                value: String::new(),
                user_configurable: true,
                label: key.into(),
                description: String::new(),
                password,
                category: category.map(str::to_owned),
            });
        }
        let xml = render_ovf(&c).unwrap();
        assert!(
            xml.contains("<VirtualHardwareSection ovf:transport=\"iso com.vmware.guestInfo\">")
        );
        assert_eq!(xml.matches("<Category>Network</Category>").count(), 1);
        assert_eq!(xml.matches("<Category>Application</Category>").count(), 1);
        assert!(xml.contains("ovf:key=\"app.secret\" ovf:password=\"true\""));
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
                password: false,
                category: None,
            });
        });
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
    }
}
