//! VirtualBox's own machine description inside the OVF (`vbox:Machine`, namespace
//! `http://www.virtualbox.org/ovf/machine`), written for the `virtualbox` target.
//!
//! VirtualBox maps the DMTF hardware items to a new machine but has no reading for the
//! firmware: it ignores `vmw:Config firmware` and would create a BIOS machine for an
//! appliance that asks for UEFI. When a `VirtualSystem` carries a `vbox:Machine`, VirtualBox
//! imports that configuration instead (its OVF reader looks for the element first, and its
//! import then builds the machine from it), so the element must be complete: name, UUID,
//! OS type, CPUs, memory, firmware, boot order, the network adapter and the storage
//! controller with the disk attached by UUID. The disk's UUID is also written on the
//! `DiskSection/Disk` as `vbox:uuid`, which is how VirtualBox matches the two.
//!
//! The settings format version is 1.12 (VirtualBox 4.2 and newer read it; storage
//! controllers are siblings of `Hardware` there). Other hypervisors skip the element: it
//! is marked `ovf:required="false"`, and DSP8023 admits elements of other namespaces in a
//! `VirtualSystem`.
//!
//! The UUIDs are derived from the appliance name, version and disk file (SHA-256, shaped as
//! RFC 9562 version 8), so a rebuild gives the same descriptor.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ovf::{DiskController, Firmware, NicModel, OvfContext};

/// The settings format version written.
pub const SETTINGS_VERSION: &str = "1.12-linux";
/// VirtualBox's OS type for 64-bit Debian.
pub const OS_TYPE: &str = "Debian_64";

/// One disk attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VboxDisk {
    /// The disk's UUID (`vbox:uuid` on the OVF disk).
    pub uuid: String,
    /// The same in braces (`Image uuid` in the attachment, as VirtualBox writes it).
    pub uuid_braced: String,
    /// Controller port.
    pub port: usize,
    /// Device on the port.
    pub device: usize,
}

/// What the `vbox:Machine` element says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VboxMachine {
    /// Settings format version.
    pub version: &'static str,
    /// Machine UUID, in braces.
    pub uuid_braced: String,
    /// Machine name.
    pub name: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// OS type.
    pub os_type: &'static str,
    /// `BIOS` or `EFI`.
    pub firmware: &'static str,
    /// Network adapter type (`82540EM` is VirtualBox's E1000, `virtio` its virtio-net).
    pub adapter: &'static str,
    /// Storage controller name.
    pub controller_name: &'static str,
    /// Storage controller type (`LsiLogic`, `AHCI`, `PIIX4`).
    pub controller_type: &'static str,
    /// Ports of the controller.
    pub port_count: usize,
    /// The disks.
    pub disks: Vec<VboxDisk>,
}

/// A deterministic version-8 UUID from `parts`.
pub fn derived_uuid(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"jeos vbox uuid");
    for part in parts {
        hasher.update([0u8]);
        hasher.update(part.as_bytes());
    }
    let mut b: [u8; 16] = hasher.finalize()[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The machine for `ctx` (its `virtualbox` target).
pub fn machine(ctx: &OvfContext) -> VboxMachine {
    let version = ctx.product.version.as_str();
    let (controller_name, controller_type, port_count, per_port) = match ctx.vm.controller {
        // VirtualBox has no PVSCSI; the OVF lint warns about it. LSI Logic is the nearest.
        DiskController::LsiLogic | DiskController::Pvscsi => ("SCSI", "LsiLogic", 16, 1),
        DiskController::Sata => ("SATA", "AHCI", ctx.disks.len().max(1), 1),
        // IDE: two channels of two devices.
        DiskController::Ide => ("IDE", "PIIX4", 2, 2),
    };
    let disks = ctx
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let uuid = derived_uuid(&["disk", &ctx.name, version, &d.href]);
            VboxDisk {
                uuid_braced: format!("{{{uuid}}}"),
                uuid,
                port: i / per_port,
                device: i % per_port,
            }
        })
        .collect();
    VboxMachine {
        version: SETTINGS_VERSION,
        uuid_braced: format!("{{{}}}", derived_uuid(&["machine", &ctx.name, version])),
        name: ctx.name.clone(),
        cpus: ctx.vm.cpus,
        memory_mib: ctx.vm.memory_mib,
        os_type: OS_TYPE,
        firmware: match ctx.vm.firmware {
            Firmware::Bios => "BIOS",
            Firmware::Efi => "EFI",
        },
        adapter: match ctx.vm.nic {
            NicModel::Virtio => "virtio",
            // VirtualBox has no VMXNET3; the OVF lint warns about it.
            NicModel::E1000 | NicModel::Vmxnet3 => "82540EM",
        },
        controller_name,
        controller_type,
        port_count,
        disks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_version_8_and_distinct() {
        let a = derived_uuid(&["machine", "nginx", "1.0.0"]);
        assert_eq!(a, derived_uuid(&["machine", "nginx", "1.0.0"]));
        assert_ne!(a, derived_uuid(&["machine", "nginx", "1.0.1"]));
        assert_ne!(a, derived_uuid(&["machinenginx", "", "1.0.0"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}
