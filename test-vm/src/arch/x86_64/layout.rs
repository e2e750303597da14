//! The guest physical memory map.
//!
//! ```text
//!  0x0000_0000 ┌──────────────────────────────┐
//!              │ real-mode IVT / BDA (unused) │
//!  0x0000_0500 │ GDT                          │
//!  0x0000_0520 │ IDT (empty)                  │
//!  0x0000_7000 │ zero page (boot_params)      │
//!  0x0000_9000 │ PML4                         │
//!  0x0000_a000 │ PDPT                         │
//!  0x0000_b000 │ 4 page directories (4 GiB)   │
//!  0x0002_0000 │ kernel command line          │
//!  0x0009_fc00 ├──────────────────────────────┤ E820: end of low RAM
//!  0x000e_0000 │ ACPI: RSDP, XSDT, FADT,      │ E820: reserved
//!              │       MADT, DSDT             │
//!  0x0010_0000 ├──────────────────────────────┤
//!              │ protected-mode kernel        │ E820: RAM up to the end of guest RAM
//!              │ ...                          │
//!              │ initramfs (top of RAM)       │
//!  mem end     ├──────────────────────────────┤
//!  0xd000_0000 │ virtio-mmio devices (4 KiB   │ MMIO hole, no memslot: every access
//!              │ each, IRQ 5, 6, ...)         │ is a KVM_EXIT_MMIO
//!  0xd100_0000 │ ACPI GED event register (4 B)│ power button, GSI 23
//!  0xfec0_0000 │ IOAPIC                       │
//!  0xfee0_0000 │ local APIC                   │
//!  0x1_0000_0000
//! ```

/// GDT location.
pub const GDT_ADDR: u64 = 0x500;
/// IDT location (an empty IDT: the kernel installs its own).
pub const IDT_ADDR: u64 = 0x520;
/// The zero page (`struct boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Level-4 page table.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First of four page directories, identity mapping 4 GiB with 2 MiB pages.
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Largest command line we accept (including the NUL); Linux x86 accepts 2048 by default.
pub const CMDLINE_MAX_BYTES: usize = 4096;
/// End of low RAM (start of the EBDA in a PC).
pub const EBDA_START: u64 = 0x9_fc00;
/// ACPI tables: the RSDP is here, inside the 0xE0000..0xFFFFF range Linux scans.
pub const ACPI_START: u64 = 0xe_0000;
/// Maximum size of all ACPI tables.
pub const ACPI_MAX_BYTES: u64 = 0x2_0000;
/// Where high memory (and the protected-mode kernel) starts.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO hole: guest RAM must end below this.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// First virtio-mmio device.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of the window of one virtio-mmio device.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IRQ (GSI) of the first virtio-mmio device.
pub const VIRTIO_FIRST_IRQ: u32 = 5;
/// IOAPIC base address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC base address.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// KVM's TSS (three pages) just below the IOAPIC, outside guest RAM.
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// 16550 UART COM1.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
/// COM1 IRQ.
pub const SERIAL_IRQ: u32 = 4;
/// 16550 UART COM2: the smoke-test protocol channel (guest `/dev/ttyS1`).
pub const PROTOCOL_PORT_BASE: u16 = 0x2f8;
/// COM2 IRQ.
pub const PROTOCOL_IRQ: u32 = 3;
/// i8042 command/status port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// ACPI sleep control register (hardware-reduced ACPI, FADT `SLEEP_CONTROL_REG`).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x3c0;
/// ACPI sleep status register (FADT `SLEEP_STATUS_REG`).
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x3c1;

/// The ACPI Generic Event Device's event register (a DWord read by its `_EVT`; reading
/// clears it). MMIO, so no legacy driver probing ISA ports can consume an event.
pub const GED_MMIO_BASE: u64 = 0xd100_0000;
/// Size of the GED register window.
pub const GED_MMIO_SIZE: u64 = 4;
/// GSI of the GED interrupt: the IOAPIC's last pin, clear of the ISA IRQs and of the
/// virtio-mmio IRQs that grow upwards from [`VIRTIO_FIRST_IRQ`].
pub const GED_IRQ: u32 = 23;
/// QEMU's pvpanic ISA port (`QEMU0001`): the guest writes 1 here when it panics.
pub const PVPANIC_PORT: u16 = 0x505;

/// Guest physical address of the `index`-th virtio-mmio device and its IRQ.
#[must_use]
pub fn virtio_mmio_slot(index: u32) -> (u64, u32) {
    (
        VIRTIO_MMIO_START + u64::from(index) * VIRTIO_MMIO_SIZE,
        VIRTIO_FIRST_IRQ + index,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_memory_structures_do_not_overlap() {
        let regions = [
            (GDT_ADDR, 0x20),
            (IDT_ADDR, 0x10),
            (ZERO_PAGE_ADDR, 0x1000),
            (PML4_ADDR, 0x1000),
            (PDPT_ADDR, 0x1000),
            (PD_ADDR, 0x4000),
            (CMDLINE_ADDR, CMDLINE_MAX_BYTES as u64),
        ];
        for (i, &(a, al)) in regions.iter().enumerate() {
            assert!(a + al <= EBDA_START);
            for &(b, bl) in &regions[i + 1..] {
                assert!(a + al <= b || b + bl <= a, "{a:#x} overlaps {b:#x}");
            }
        }
        assert!(ACPI_START + ACPI_MAX_BYTES <= HIMEM_START);
        assert!(VIRTIO_MMIO_START >= MMIO_HOLE_START);
        assert_eq!(virtio_mmio_slot(1), (0xd000_1000, 6));
        // The GED register sits above any virtio slot the IRQs below it allow.
        let (last_slot, last_irq) = virtio_mmio_slot(GED_IRQ - VIRTIO_FIRST_IRQ - 1);
        assert!(last_slot + VIRTIO_MMIO_SIZE <= GED_MMIO_BASE);
        assert!(last_irq < GED_IRQ);
    }
}
