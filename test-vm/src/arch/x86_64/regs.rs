//! Boot-time vCPU registers for the 64-bit boot protocol: long mode, paging on, identity
//! mapped low 4 GiB, `rip` at the kernel's 64-bit entry, `rsi` at the zero page.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::gdt::{self, BOOT_CS, BOOT_DS, BOOT_TSS};
use super::layout::{GDT_ADDR, IDT_ADDR, PD_ADDR, PDPT_ADDR, PML4_ADDR, ZERO_PAGE_ADDR};
use crate::memory::GuestMemoryMmap;

/// Errors while writing the boot structures into guest memory.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A write into guest memory failed (guest RAM too small for the fixed layout).
    #[error("cannot write the {what} at guest address {address:#x}")]
    Write {
        /// Which structure.
        what: &'static str,
        /// Where.
        address: u64,
        /// The vm-memory error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const PAGE_PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Writes the GDT, an empty IDT and page tables identity mapping the low 4 GiB
/// (2 MiB pages) into guest memory.
///
/// # Errors
///
/// [`RegsError::Write`] if guest memory does not cover the fixed low-memory layout.
pub fn write_boot_structures(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let write = |what, address: u64, bytes: &[u8]| {
        mem.write_slice(bytes, GuestAddress(address))
            .map_err(|source| RegsError::Write {
                what,
                address,
                source,
            })
    };
    let gdt: Vec<u8> = gdt::boot_gdt()
        .iter()
        .flat_map(|e| e.to_le_bytes())
        .collect();
    write("GDT", GDT_ADDR, &gdt)?;
    write("IDT", IDT_ADDR, &0u64.to_le_bytes())?;
    write(
        "PML4",
        PML4_ADDR,
        &(PDPT_ADDR | PAGE_PRESENT_RW).to_le_bytes(),
    )?;
    let pdpt: Vec<u8> = (0..4u64)
        .flat_map(|i| ((PD_ADDR + i * 0x1000) | PAGE_PRESENT_RW).to_le_bytes())
        .collect();
    write("PDPT", PDPT_ADDR, &pdpt)?;
    let pd: Vec<u8> = (0..2048u64)
        .flat_map(|i| ((i << 21) | PAGE_PRESENT_RW | PAGE_SIZE_2M).to_le_bytes())
        .collect();
    write("page directories", PD_ADDR, &pd)
}

/// Special registers for 64-bit entry, starting from the vCPU's current `sregs` (which keep
/// KVM's APIC base and other state we do not set).
#[must_use]
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let gdt = gdt::boot_gdt();
    let code = gdt::segment_from_entry(gdt[usize::from(BOOT_CS / 8)], BOOT_CS);
    let data = gdt::segment_from_entry(gdt[usize::from(BOOT_DS / 8)], BOOT_DS);
    let tss = gdt::segment_from_entry(gdt[usize::from(BOOT_TSS / 8)], BOOT_TSS);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = u16::try_from(std::mem::size_of_val(&gdt) - 1).expect("40-byte GDT");
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// General-purpose registers at the 64-bit entry point: `rsi` points to the zero page as
/// the boot protocol requires; `rflags` has only the reserved bit 1 set (interrupts off).
#[must_use]
pub fn boot_regs(entry: GuestAddress) -> kvm_regs {
    kvm_regs {
        rip: entry.0,
        rsi: ZERO_PAGE_ADDR,
        rflags: 0x2,
        // A stack below the zero page, in case an early synthetic guest needs one.
        rsp: ZERO_PAGE_ADDR - 0x10,
        rbp: ZERO_PAGE_ADDR - 0x10,
        ..Default::default()
    }
}

/// FPU state as after `FNINIT` with SSE exceptions masked.
#[must_use]
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::Bytes;

    use super::*;
    use crate::memory::create_guest_memory;

    #[test]
    fn page_tables_identity_map_4_gib() {
        let mem = create_guest_memory(16).unwrap();
        write_boot_structures(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        for i in 0..4u64 {
            let pdpte: u64 = mem.read_obj(GuestAddress(PDPT_ADDR + i * 8)).unwrap();
            assert_eq!(pdpte, (PD_ADDR + i * 0x1000) | 3);
        }
        // The entry mapping 0xd000_0000 (virtio-mmio) is identity.
        let index = 0xd000_0000u64 >> 21;
        let pde: u64 = mem.read_obj(GuestAddress(PD_ADDR + index * 8)).unwrap();
        assert_eq!(pde & !0xfff, 0xd000_0000);
        assert_eq!(pde & 0xff, 0x83);
        let gdt2: u64 = mem.read_obj(GuestAddress(GDT_ADDR + 16)).unwrap();
        assert_eq!(gdt2, 0x00af_9b00_0000_ffff);
    }

    #[test]
    fn write_fails_without_low_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0x10_0000), 0x1000)]).unwrap();
        assert!(matches!(
            write_boot_structures(&mem),
            Err(RegsError::Write { what: "GDT", .. })
        ));
    }

    #[test]
    fn sregs_enable_long_mode() {
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_ne!(s.cr4 & X86_CR4_PAE, 0);
        assert_eq!((s.cs.selector, s.cs.l), (BOOT_CS, 1));
        assert_eq!(s.ds.selector, BOOT_DS);
        assert_eq!(s.gdt.limit, 39);
        let r = boot_regs(GuestAddress(0x10_0200));
        assert_eq!((r.rip, r.rsi, r.rflags), (0x10_0200, ZERO_PAGE_ADDR, 2));
    }
}
