//! What the appliance ships as: the virtual hardware its OVF descriptor declares (vCPUs,
//! memory, firmware, NIC, disk controller), read back from the `.ovf` beside the image, and
//! its mapping onto what QEMU emulates. `jeos test` boots with it by default.
//!
//! The reader is a small, tolerant scan of the descriptor jeos itself writes (`Item`s of the
//! `VirtualHardwareSection` by CIM `ResourceType`, DSP0243 / CIM_ResourceAllocationSettingData):
//! 3 = processor, 4 = memory (MiB), 6 = parallel SCSI HBA, 20 = SATA (AHCI), 10 = Ethernet.

use std::path::{Path, PathBuf};

use test_vm::{DiskBus, Firmware, NicModel};

/// The OVF's virtual hardware (fields the descriptor lacks are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OvfHardware {
    /// Virtual CPUs.
    pub cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// `vmw:key="firmware"`: `bios` or `efi`.
    pub firmware: Option<Firmware>,
    /// The Ethernet item's `ResourceSubType` (`E1000`, `E1000e`, `VmxNet3`, `virtio-net`).
    pub nic: Option<String>,
    /// The disk controller's `ResourceSubType` (`lsilogic`, `AHCI`, `VirtualSCSI`, ...).
    pub disk_controller: Option<String>,
}

fn tag<'a>(item: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<rasd:{name}>");
    let start = item.find(&open)? + open.len();
    let end = start + item[start..].find('<')?;
    Some(item[start..end].trim())
}

/// Reads the hardware from descriptor text (pure).
#[must_use]
pub fn parse_ovf_hardware(ovf: &str) -> OvfHardware {
    let mut hardware = OvfHardware::default();
    for item in ovf.split("<Item>").skip(1) {
        let item = item.split("</Item>").next().unwrap_or_default();
        let quantity = tag(item, "VirtualQuantity");
        let subtype = tag(item, "ResourceSubType").map(str::to_owned);
        match tag(item, "ResourceType") {
            Some("3") => hardware.cpus = quantity.and_then(|q| q.parse().ok()),
            Some("4") => hardware.memory_mib = quantity.and_then(|q| q.parse().ok()),
            Some("5" | "6" | "20") => hardware.disk_controller = subtype.or(Some("AHCI".into())),
            Some("10") => hardware.nic = subtype,
            _ => {}
        }
    }
    if let Some(at) = ovf.find("vmw:key=\"firmware\"") {
        let rest = &ovf[at..];
        hardware.firmware = match rest.split("vmw:value=\"").nth(1) {
            Some(v) if v.starts_with("efi\"") => Some(Firmware::Efi),
            Some(v) if v.starts_with("bios\"") => Some(Firmware::Bios),
            _ => None,
        };
    }
    hardware
}

/// The single `.ovf` in the image's directory, if there is exactly one.
#[must_use]
pub fn find_ovf(image: &Path) -> Option<PathBuf> {
    let dir = image.parent()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ovf"))
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// The hardware of the OVF beside `image` (default when there is none).
#[must_use]
pub fn read_beside(image: &Path) -> (OvfHardware, Option<PathBuf>) {
    let Some(ovf) = find_ovf(image) else {
        return (OvfHardware::default(), None);
    };
    let text = std::fs::read_to_string(&ovf).unwrap_or_default();
    (parse_ovf_hardware(&text), Some(ovf))
}

/// QEMU's nearest NIC for an OVF subtype, and a note when it is not the same device.
#[must_use]
pub fn qemu_nic(subtype: Option<&str>) -> (NicModel, Option<String>) {
    match subtype.map(str::to_ascii_lowercase).as_deref() {
        None => (NicModel::Virtio, None),
        Some("e1000") => (NicModel::E1000, None),
        Some("e1000e") => (NicModel::E1000e, None),
        Some("vmxnet3") => (NicModel::Vmxnet3, None),
        Some("virtio" | "virtio-net") => (NicModel::Virtio, None),
        Some(other) => (
            NicModel::E1000,
            Some(format!(
                "QEMU does not emulate the OVF's NIC `{other}`; using an e1000 instead"
            )),
        ),
    }
}

/// QEMU's nearest disk controller for an OVF subtype, and a note when it is not the same.
#[must_use]
pub fn qemu_disk_bus(subtype: Option<&str>) -> (DiskBus, Option<String>) {
    match subtype.map(str::to_ascii_lowercase).as_deref() {
        None => (DiskBus::Virtio, None),
        Some("ahci" | "sata" | "vmware.sata.ahci") => (DiskBus::Ahci, None),
        Some("virtualscsi" | "pvscsi") => (DiskBus::Pvscsi, None),
        Some("virtio" | "virtio-blk") => (DiskBus::Virtio, None),
        Some("lsilogic") => (
            DiskBus::Ahci,
            Some(
                "QEMU does not emulate the OVF's LSI Logic 53C1030 (`lsilogic`, Linux `mptspi`); \
                 the disk is on QEMU's AHCI (SATA) controller instead, which the image also drives"
                    .into(),
            ),
        ),
        Some(other) => (
            DiskBus::Ahci,
            Some(format!(
                "QEMU does not emulate the OVF's disk controller `{other}`; using AHCI (SATA)"
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVF: &str = r#"<VirtualHardwareSection>
      <Item>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>256</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>"#;

    #[test]
    fn reads_the_hardware_jeos_writes() {
        let hw = parse_ovf_hardware(OVF);
        assert_eq!(hw.cpus, Some(2));
        assert_eq!(hw.memory_mib, Some(256));
        assert_eq!(hw.firmware, Some(Firmware::Efi));
        assert_eq!(hw.nic.as_deref(), Some("E1000"));
        assert_eq!(hw.disk_controller.as_deref(), Some("lsilogic"));
        assert_eq!(parse_ovf_hardware("<Envelope/>"), OvfHardware::default());
        assert_eq!(
            parse_ovf_hardware("<Item><rasd:ResourceType>3"),
            OvfHardware::default()
        );
    }

    #[test]
    fn maps_onto_qemu_devices() {
        assert_eq!(qemu_nic(Some("E1000")), (NicModel::E1000, None));
        assert_eq!(qemu_nic(Some("VmxNet3")).0, NicModel::Vmxnet3);
        assert!(qemu_nic(Some("PCNet32")).1.is_some());
        let (bus, note) = qemu_disk_bus(Some("lsilogic"));
        assert_eq!(bus, DiskBus::Ahci);
        assert!(note.unwrap().contains("LSI Logic"));
        assert_eq!(qemu_disk_bus(Some("AHCI")), (DiskBus::Ahci, None));
        assert_eq!(qemu_disk_bus(None), (DiskBus::Virtio, None));
    }
}
