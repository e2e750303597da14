//! ACPI tables: RSDP → XSDT → {FADT → DSDT, MADT} (ACPI 6.5 §5.2).
//!
//! The machine is *hardware-reduced* ACPI (FADT flag `HW_REDUCED_ACPI`, as Firecracker,
//! cloud-hypervisor and QEMU's microvm do): no PM1 event/control blocks, no SCI, no PM
//! timer. Shutdown goes through the FADT `SLEEP_CONTROL_REG` (an I/O port, see
//! [`crate::devices::acpi_pm`]): Linux evaluates `\_S5` and writes
//! `SLP_TYPx << 2 | SLP_EN` there. In hardware-reduced mode the PM1a control block is
//! ignored by the OS (§4.1), so the sleep control register *is* the S5 path. Reset goes
//! through the FADT `RESET_REG`, pointed at the i8042 command port with value 0xFE, the
//! same path `reboot=k` takes.
//!
//! The DSDT describes COM1 and COM2 (`PNP0501`) and each virtio-mmio device as `LNRO0005` with a
//! `Memory32Fixed` window and an edge-triggered interrupt, which is how the Debian cloud
//! kernel (no `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`) finds the disk. The MADT lists one
//! local APIC per vCPU and the IOAPIC, which SMP needs (no `CONFIG_X86_MPPARSE`).
//!
//! Hardware-reduced ACPI has no fixed power button (the FADT says so with `PWR_BUTTON`), so
//! the DSDT has a control-method one, `\_SB.PWRB` (`PNP0C0C`), and a Generic Event Device
//! `\_SB.GED0` (`ACPI0013`, §5.6.9) with one edge interrupt whose `_EVT` reads the event
//! register and notifies `PWRB` with 0x80 ("button pressed", §4.8.3.1.1); see
//! [`crate::devices::ged`]. `\_SB.PEVT` is QEMU's pvpanic device (`QEMU0001`, one I/O
//! port) so a guest panic stops the run even when the console text is lost.

pub mod aml;

use crate::arch::x86_64::layout::{
    ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, GED_IRQ, GED_MMIO_BASE, GED_MMIO_SIZE,
    I8042_COMMAND_PORT, IOAPIC_ADDR, LAPIC_ADDR, PROTOCOL_IRQ, PROTOCOL_PORT_BASE, PVPANIC_PORT,
    SERIAL_IRQ, SERIAL_PORT_BASE,
};
use crate::devices::ged::EVENT_POWER_BUTTON;

/// Errors while planning the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// Too many vCPUs for xAPIC ids.
    #[error("{count} vCPUs exceed the 254 a local APIC table entry can name")]
    TooManyVcpus {
        /// vCPUs requested.
        count: u32,
    },
    /// The tables do not fit the reserved area.
    #[error("ACPI tables of {size_bytes} bytes exceed the {limit_bytes}-byte area")]
    TooLarge {
        /// Size of all tables.
        size_bytes: usize,
        /// Reserved area.
        limit_bytes: u64,
    },
}

/// One virtio-mmio device to describe in the DSDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Base of its register window.
    pub base: u64,
    /// Window size in bytes.
    pub size_bytes: u32,
    /// GSI.
    pub irq: u32,
}

/// Inputs of [`plan_acpi`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// virtio-mmio devices.
    pub mmio_devices: Vec<MmioDeviceInfo>,
    /// Guest address where the blob (starting with the RSDP) is placed.
    pub base: u64,
    /// Size of the reserved area for the blob.
    pub limit_bytes: u64,
}

/// The planned tables: one blob to copy at `AcpiConfig::base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiLayout {
    /// RSDP, XSDT, FADT, MADT, DSDT.
    pub bytes: Vec<u8>,
    /// Guest address of the RSDP (= base).
    pub rsdp_address: u64,
    /// Guest address of each table by signature.
    pub tables: Vec<([u8; 4], u64)>,
}

/// OEM id in every header.
pub const OEM_ID: &[u8; 6] = b"JEOS  ";
/// OEM table id in every header.
pub const OEM_TABLE_ID: &[u8; 8] = b"JEOSVM  ";
/// FADT flag: the power button is a control-method device (none here).
pub const FADT_PWR_BUTTON: u32 = 1 << 4;
/// FADT flag: no RTC wake from S4 (none here).
pub const FADT_SLP_BUTTON: u32 = 1 << 5;
/// FADT flag: `RESET_REG` is supported.
pub const FADT_RESET_REG_SUP: u32 = 1 << 10;
/// FADT flag: hardware-reduced ACPI.
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// IAPC_BOOT_ARCH: VGA not present.
pub const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// IAPC_BOOT_ARCH: CMOS RTC not present.
pub const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
/// The `_S5` sleep type value written to the sleep control register on power-off.
pub const S5_SLEEP_TYPE: u8 = 5;
/// Length of the FADT (revision 6).
pub const FADT_LEN: usize = 276;

/// Byte sum of `bytes` is zero when this is stored in the checksum field.
#[must_use]
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b)))
}

fn header(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(36 + body.len()).expect("tables are far below 4 GiB");
    let mut table = Vec::with_capacity(36 + body.len());
    table.extend_from_slice(signature);
    table.extend_from_slice(&length.to_le_bytes());
    table.push(revision);
    table.push(0); // checksum, filled below
    table.extend_from_slice(OEM_ID);
    table.extend_from_slice(OEM_TABLE_ID);
    table.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    table.extend_from_slice(b"JEOS"); // creator id
    table.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    table.extend_from_slice(body);
    table[9] = checksum(&table);
    table
}

/// Generic Address Structure for a byte-wide I/O port.
fn gas_io_port(port: u16) -> [u8; 12] {
    let mut gas = [0u8; 12];
    gas[0] = 1; // SystemIO
    gas[1] = 8; // bit width
    gas[3] = 1; // byte access
    gas[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    gas
}

/// `Notify` value of a power button: "button pressed" (§4.8.3.1.1).
pub const NOTIFY_BUTTON_PRESSED: u64 = 0x80;

/// `\_SB.PWRB`, `\_SB.GED0` and `\_SB.PEVT`:
///
/// ```text
/// Device (PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, 0) }
/// Device (GED0) {
///     Name (_HID, "ACPI0013") Name (_UID, 0)
///     Name (_CRS, ResourceTemplate () { Interrupt (, Edge, ActiveHigh, Exclusive) { 23 } })
///     OperationRegion (GDST, SystemMemory, 0xD1000000, 4)
///     Field (GDST, DWordAcc, NoLock, WriteAsZeros) { GDAT, 32 }
///     Method (_EVT, 1, Serialized) {
///         Store (GDAT, Local0)
///         If (And (Local0, 1)) { Notify (\_SB.PWRB, 0x80) }
///     }
/// }
/// Device (PEVT) { Name (_HID, "QEMU0001") Name (_CRS, ResourceTemplate () { IO (Decode16, 0x505, 0x505, 1, 1) }) }
/// ```
fn event_devices() -> Vec<u8> {
    use aml::{
        FIELD_DWORD_NOLOCK_WRITE_ZEROS, LOCAL0, RegionSpace, and, device, eisa_id,
        extended_interrupt, field, if_then, integer, io_port, method, name, notify,
        operation_region, resource_template, root_path2, store, string,
    };
    let button = device(
        "PWRB",
        &[name("_HID", &eisa_id("PNP0C0C")), name("_UID", &integer(0))].concat(),
    );
    let evt = method(
        "_EVT",
        1,
        true,
        &[
            store(b"GDAT", &[LOCAL0]),
            if_then(
                &and(&[LOCAL0], &integer(u64::from(EVENT_POWER_BUTTON))),
                &notify(&root_path2("_SB", "PWRB"), NOTIFY_BUTTON_PRESSED),
            ),
        ]
        .concat(),
    );
    let ged = device(
        "GED0",
        &[
            name("_HID", &string("ACPI0013")),
            name("_UID", &integer(0)),
            name("_CRS", &resource_template(&[extended_interrupt(GED_IRQ)])),
            operation_region(
                "GDST",
                RegionSpace::SystemMemory,
                GED_MMIO_BASE,
                GED_MMIO_SIZE,
            ),
            field(
                "GDST",
                FIELD_DWORD_NOLOCK_WRITE_ZEROS,
                &[("GDAT", u32::try_from(GED_MMIO_SIZE * 8).expect("32 bits"))],
            ),
            evt,
        ]
        .concat(),
    );
    let pvpanic = device(
        "PEVT",
        &[
            name("_HID", &string("QEMU0001")),
            name("_CRS", &resource_template(&[io_port(PVPANIC_PORT, 1)])),
        ]
        .concat(),
    );
    [button, ged, pvpanic].concat()
}

/// The DSDT's AML: `\_S5` plus `\_SB.COM1`, `\_SB.COM2`, `\_SB.Vnnn` and the event
/// devices ([`event_devices`]).
#[must_use]
pub fn dsdt_aml(mmio_devices: &[MmioDeviceInfo]) -> Vec<u8> {
    use aml::{
        device, eisa_id, extended_interrupt, integer, io_port, irq_no_flags, memory32_fixed, name,
        package, resource_template, scope_root, string,
    };
    let serial_irq = u8::try_from(SERIAL_IRQ).expect("ISA IRQ");
    let mut devices = device(
        "COM1",
        &[
            name("_HID", &eisa_id("PNP0501")),
            name("_UID", &integer(0)),
            name(
                "_CRS",
                &resource_template(&[io_port(SERIAL_PORT_BASE, 8), irq_no_flags(serial_irq)]),
            ),
        ]
        .concat(),
    );
    let protocol_irq = u8::try_from(PROTOCOL_IRQ).expect("ISA IRQ");
    devices.extend(device(
        "COM2",
        &[
            name("_HID", &eisa_id("PNP0501")),
            name("_UID", &integer(1)),
            name(
                "_CRS",
                &resource_template(&[io_port(PROTOCOL_PORT_BASE, 8), irq_no_flags(protocol_irq)]),
            ),
        ]
        .concat(),
    ));
    for (index, dev) in mmio_devices.iter().enumerate() {
        let base = u32::try_from(dev.base).expect("virtio-mmio windows live below 4 GiB");
        devices.extend(device(
            &format!("V{index:03}"),
            &[
                name("_HID", &string("LNRO0005")),
                name("_UID", &integer(index as u64)),
                name(
                    "_CRS",
                    &resource_template(&[
                        memory32_fixed(base, dev.size_bytes),
                        extended_interrupt(dev.irq),
                    ]),
                ),
            ]
            .concat(),
        ));
    }
    devices.extend(event_devices());
    let s5 = name(
        "_S5",
        &package(&[
            integer(u64::from(S5_SLEEP_TYPE)),
            integer(u64::from(S5_SLEEP_TYPE)),
            integer(0),
            integer(0),
        ]),
    );
    [s5, scope_root("_SB", &devices)].concat()
}

fn fadt(dsdt_address: u64) -> Vec<u8> {
    let mut body = vec![0u8; FADT_LEN - 36];
    let mut put = |offset: usize, bytes: &[u8]| {
        body[offset - 36..offset - 36 + bytes.len()].copy_from_slice(bytes);
    };
    put(
        109,
        &(IAPC_VGA_NOT_PRESENT | IAPC_CMOS_RTC_NOT_PRESENT).to_le_bytes(),
    );
    put(
        112,
        &(FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP | FADT_PWR_BUTTON | FADT_SLP_BUTTON)
            .to_le_bytes(),
    );
    put(116, &gas_io_port(I8042_COMMAND_PORT));
    put(128, &[0xfe]); // RESET_VALUE
    put(131, &[0]); // FADT minor version: 6.0
    put(140, &dsdt_address.to_le_bytes()); // X_DSDT
    put(244, &gas_io_port(ACPI_SLEEP_CONTROL_PORT));
    put(256, &gas_io_port(ACPI_SLEEP_STATUS_PORT));
    put(268, b"JEOSVM\0\0"); // hypervisor vendor identity
    header(b"FACP", 6, &body)
}

fn madt(vcpus: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: KVM's irqchip has 8259s
    for id in 0..vcpus {
        let id = u8::try_from(id).expect("checked by plan_acpi");
        // Processor Local APIC: type 0, length 8, UID, APIC id, flags = enabled.
        body.extend_from_slice(&[0, 8, id, id, 1, 0, 0, 0]);
    }
    // I/O APIC: type 1, length 12, id, reserved, address, GSI base 0.
    body.extend_from_slice(&[1, 12, 0, 0]);
    body.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Interrupt Source Override: ISA IRQ 0 -> GSI 2 (the PIT), conforming flags.
    body.extend_from_slice(&[2, 10, 0, 0]);
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    header(b"APIC", 5, &body)
}

fn align8(value: usize) -> usize {
    (value + 7) & !7
}

/// Plans all tables as one blob placed at `config.base`.
///
/// # Errors
///
/// [`AcpiError::TooManyVcpus`], [`AcpiError::TooLarge`].
pub fn plan_acpi(config: &AcpiConfig) -> Result<AcpiLayout, AcpiError> {
    if config.vcpus == 0 || config.vcpus > 254 {
        return Err(AcpiError::TooManyVcpus {
            count: config.vcpus,
        });
    }
    let dsdt = header(b"DSDT", 2, &dsdt_aml(&config.mmio_devices));
    let madt = madt(config.vcpus);
    let rsdp_len = 36;
    let xsdt_off = 64;
    let xsdt_len = 36 + 2 * 8;
    let fadt_off = align8(xsdt_off + xsdt_len);
    let madt_off = align8(fadt_off + FADT_LEN);
    let dsdt_off = align8(madt_off + madt.len());
    let total = dsdt_off + dsdt.len();
    if total as u64 > config.limit_bytes {
        return Err(AcpiError::TooLarge {
            size_bytes: total,
            limit_bytes: config.limit_bytes,
        });
    }
    let at = |offset: usize| config.base + offset as u64;
    let fadt = fadt(at(dsdt_off));
    let mut xsdt_body = Vec::new();
    xsdt_body.extend_from_slice(&at(fadt_off).to_le_bytes());
    xsdt_body.extend_from_slice(&at(madt_off).to_le_bytes());
    let xsdt = header(b"XSDT", 1, &xsdt_body);

    let mut rsdp = Vec::with_capacity(rsdp_len);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+
    rsdp.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&at(xsdt_off).to_le_bytes());
    rsdp.push(0); // extended checksum
    rsdp.extend_from_slice(&[0; 3]);
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);

    let mut bytes = vec![0u8; total];
    for (offset, table) in [
        (0, &rsdp),
        (xsdt_off, &xsdt),
        (fadt_off, &fadt),
        (madt_off, &madt),
        (dsdt_off, &dsdt),
    ] {
        bytes[offset..offset + table.len()].copy_from_slice(table);
    }
    Ok(AcpiLayout {
        bytes,
        rsdp_address: config.base,
        tables: vec![
            (*b"XSDT", at(xsdt_off)),
            (*b"FACP", at(fadt_off)),
            (*b"APIC", at(madt_off)),
            (*b"DSDT", at(dsdt_off)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xe_0000;

    fn config(vcpus: u32) -> AcpiConfig {
        AcpiConfig {
            vcpus,
            mmio_devices: vec![MmioDeviceInfo {
                base: 0xd000_0000,
                size_bytes: 0x1000,
                irq: 5,
            }],
            base: BASE,
            limit_bytes: 0x2_0000,
        }
    }

    fn table<'a>(layout: &'a AcpiLayout, signature: &[u8; 4]) -> &'a [u8] {
        let (_, address) = layout.tables.iter().find(|(s, _)| s == signature).unwrap();
        let offset = usize::try_from(address - BASE).unwrap();
        let len = u32::from_le_bytes(layout.bytes[offset + 4..offset + 8].try_into().unwrap());
        &layout.bytes[offset..offset + len as usize]
    }

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    #[test]
    fn checksums_are_valid() {
        let layout = plan_acpi(&config(2)).unwrap();
        let rsdp = &layout.bytes[..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp.iter().take(20).fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(rsdp.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        for signature in [b"XSDT", b"FACP", b"APIC", b"DSDT"] {
            let t = table(&layout, signature);
            assert_eq!(&t[..4], signature);
            assert_eq!(
                t.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
                0,
                "{signature:?}"
            );
        }
    }

    #[test]
    fn pointers_chain_rsdp_xsdt_fadt_dsdt() {
        let layout = plan_acpi(&config(1)).unwrap();
        let xsdt_address = u64_at(&layout.bytes, 24);
        let xsdt = table(&layout, b"XSDT");
        assert_eq!(xsdt_address, layout.tables[0].1);
        assert_eq!(xsdt.len(), 52);
        let fadt = table(&layout, b"FACP");
        assert_eq!(u64_at(xsdt, 36), layout.tables[1].1);
        assert_eq!(u64_at(xsdt, 44), layout.tables[2].1);
        assert_eq!(fadt.len(), FADT_LEN);
        assert_eq!(u64_at(fadt, 140), layout.tables[3].1);
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & FADT_HW_REDUCED_ACPI, 0);
        // Sleep control register: SystemIO at 0x3c0.
        assert_eq!(fadt[244], 1);
        assert_eq!(u64_at(fadt, 248), 0x3c0);
        // Reset register: port 0x64, value 0xfe.
        assert_eq!(u64_at(fadt, 120), 0x64);
        assert_eq!(fadt[128], 0xfe);
    }

    #[test]
    fn madt_lists_each_vcpu_and_the_ioapic() {
        let layout = plan_acpi(&config(3)).unwrap();
        let madt = table(&layout, b"APIC");
        let mut entries = Vec::new();
        let mut offset = 44;
        while offset < madt.len() {
            entries.push((madt[offset], madt[offset + 2], madt[offset + 3]));
            offset += usize::from(madt[offset + 1]);
        }
        assert_eq!(offset, madt.len());
        assert_eq!(
            entries,
            vec![(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 0, 0), (2, 0, 0)]
        );
    }

    #[test]
    fn dsdt_contains_the_virtio_device_window() {
        let layout = plan_acpi(&config(1)).unwrap();
        let dsdt = table(&layout, b"DSDT");
        let find = |needle: &[u8]| dsdt.windows(needle.len()).position(|w| w == needle);
        assert!(find(b"LNRO0005\0").is_some());
        let m = find(&[0x86, 0x09, 0x00, 0x01]).unwrap();
        assert_eq!(&dsdt[m + 4..m + 12], &[0, 0, 0, 0xd0, 0, 0x10, 0, 0]);
        assert!(find(b"_S5_").is_some());
        assert!(find(&[0x0c, 0x41, 0xd0, 0x05, 0x01]).is_some()); // PNP0501
    }

    #[test]
    fn dsdt_has_the_power_button_ged_and_pvpanic() {
        let aml = event_devices();
        let find = |needle: &[u8]| aml.windows(needle.len()).position(|w| w == needle);
        // PWRB first (GED0's _EVT names it), then GED0, then PEVT.
        let pwrb = find(b"PWRB").unwrap();
        let ged = find(b"GED0").unwrap();
        let pevt = find(b"PEVT").unwrap();
        assert!(pwrb < ged && ged < pevt);
        assert_eq!(&aml[..2], &[0x5b, 0x82]);
        // EISAID("PNP0C0C") == 0x0C0CD041.
        assert!(find(&[0x0c, 0x41, 0xd0, 0x0c, 0x0c]).is_some());
        assert!(find(b"ACPI0013\0").is_some());
        assert!(find(b"QEMU0001\0").is_some());
        // _CRS: one extended interrupt on GSI 23, edge, active high, exclusive.
        assert!(find(&[0x89, 0x06, 0x00, 0x03, 0x01, 23, 0, 0, 0, 0x79, 0x00]).is_some());
        // OperationRegion(GDST, SystemMemory, 0xd1000000, 4).
        let region = find(&[0x5b, 0x80]).unwrap();
        assert_eq!(
            &aml[region + 2..region + 14],
            &[b'G', b'D', b'S', b'T', 0, 0x0c, 0, 0, 0, 0xd1, 0x0a, 4]
        );
        // _EVT takes one argument, serialized; reads GDAT into Local0; notifies PWRB 0x80.
        let evt = find(b"_EVT").unwrap();
        assert_eq!(aml[evt - 2], 0x14);
        assert_eq!(aml[evt + 4], 0x09);
        assert!(find(&[0x70, b'G', b'D', b'A', b'T', 0x60]).is_some());
        let notify = [&[0x86, b'\\', 0x2e][..], b"_SB_PWRB", &[0x0a, 0x80]].concat();
        assert!(find(&notify).is_some());
        // pvpanic: IO(Decode16, 0x505, 0x505, 1, 1).
        assert!(find(&[0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01]).is_some());
        // And it is part of the DSDT.
        let layout = plan_acpi(&config(1)).unwrap();
        let dsdt = table(&layout, b"DSDT");
        assert!(dsdt.windows(aml.len()).any(|w| w == aml.as_slice()));
    }

    #[test]
    fn rejects_bad_vcpu_counts_and_small_areas() {
        assert!(matches!(
            plan_acpi(&config(0)),
            Err(AcpiError::TooManyVcpus { count: 0 })
        ));
        assert!(matches!(
            plan_acpi(&config(255)),
            Err(AcpiError::TooManyVcpus { count: 255 })
        ));
        let mut small = config(1);
        small.limit_bytes = 128;
        assert!(matches!(plan_acpi(&small), Err(AcpiError::TooLarge { .. })));
    }

    #[test]
    fn iasl_disassembles_the_dsdt() {
        let Ok(output) = std::process::Command::new("iasl").arg("-v").output() else {
            eprintln!("SKIPPED: iasl (acpica-tools) not installed");
            return;
        };
        assert!(output.status.success() || !output.stdout.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let layout = plan_acpi(&config(2)).unwrap();
        for signature in [b"DSDT", b"FACP", b"APIC"] {
            let name = String::from_utf8_lossy(signature).to_lowercase();
            let path = dir.path().join(format!("{name}.dat"));
            std::fs::write(&path, table(&layout, signature)).unwrap();
            let status = std::process::Command::new("iasl")
                .arg("-d")
                .arg(&path)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(status.status.success(), "iasl -d {name}: {status:?}");
        }
        let dsl = std::fs::read_to_string(dir.path().join("dsdt.dsl")).unwrap();
        for needle in [
            "Device (V000)",
            "\"LNRO0005\"",
            "Memory32Fixed (ReadWrite,",
            "0xD0000000,",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
            "EisaId (\"PNP0501\")",
            "Name (_S5, Package (0x04)",
            "EisaId (\"PNP0C0C\")",
            "\"ACPI0013\"",
            "0x00000017,",
            "OperationRegion (GDST, SystemMemory, 0xD1000000, 0x04)",
            "Field (GDST, DWordAcc, NoLock, WriteAsZeros)",
            "GDAT,   32",
            "Method (_EVT, 1, Serialized)",
            "Local0 = GDAT",
            "If ((Local0 & One))",
            "Notify (\\_SB.PWRB, 0x80)",
            "\"QEMU0001\"",
            "IO (Decode16,",
            "0x0505,",
        ] {
            assert!(dsl.contains(needle), "{needle} missing from:\n{dsl}");
        }
        // The disassembly compiles back (names resolve, methods are well-formed).
        let compiled = std::process::Command::new("iasl")
            .arg("-p")
            .arg(dir.path().join("recompiled"))
            .arg(dir.path().join("dsdt.dsl"))
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(
            compiled.status.success(),
            "iasl dsdt.dsl: {}\n{}",
            String::from_utf8_lossy(&compiled.stdout),
            String::from_utf8_lossy(&compiled.stderr)
        );
        let fadt = std::fs::read_to_string(dir.path().join("facp.dsl")).unwrap();
        assert!(fadt.contains("Hardware Reduced (V5) : 1"), "{fadt}");
        assert!(!fadt.contains("Invalid"), "{fadt}");
    }
}
