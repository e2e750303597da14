//! The boot GDT.
//!
//! The 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit BOOT PROTOCOL") asks
//! for a GDT with a flat 4 GiB code segment at selector `__BOOT_CS` (0x10) and a flat data
//! segment at `__BOOT_DS` (0x18). Entry 4 is a TSS so that `TR` holds a valid descriptor.

use kvm_bindings::kvm_segment;

/// Selector of the 64-bit code segment (`__BOOT_CS`).
pub const BOOT_CS: u16 = 0x10;
/// Selector of the data segment (`__BOOT_DS`).
pub const BOOT_DS: u16 = 0x18;
/// Selector of the TSS.
pub const BOOT_TSS: u16 = 0x20;

/// Builds one 8-byte GDT descriptor from its flags (type/S/DPL/P in bits 0..8, AVL/L/D/G in
/// bits 12..16), base and limit.
#[must_use]
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// The boot GDT: null, null, code64, data, TSS.
#[must_use]
pub fn boot_gdt() -> [u64; 5] {
    [
        0,
        0,
        gdt_entry(0xa09b, 0, 0xfffff), // present, DPL0, code exec/read, L=1, G=1
        gdt_entry(0xc093, 0, 0xfffff), // present, DPL0, data read/write, D/B=1, G=1
        gdt_entry(0x808b, 0, 0xfffff), // present, busy 64-bit TSS
    ]
}

/// Decodes a descriptor into the `kvm_segment` KVM wants in `KVM_SET_SREGS`.
#[must_use]
pub fn segment_from_entry(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit_raw = (entry & 0xffff) | ((entry >> 32) & 0x000f_0000);
    let granularity = (entry >> 55) & 1;
    // With G=1 the limit is in 4 KiB units.
    let limit = if granularity == 1 {
        (limit_raw << 12) | 0xfff
    } else {
        limit_raw
    };
    let bit = |n: u32| u8::from((entry >> n) & 1 == 1);
    kvm_segment {
        base,
        limit: u32::try_from(limit).expect("a 20-bit limit scaled by 4 KiB fits 32 bits"),
        selector,
        type_: u8::try_from((entry >> 40) & 0xf).expect("masked to 4 bits"),
        present: bit(47),
        dpl: u8::try_from((entry >> 45) & 3).expect("masked to 2 bits"),
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit_flat() {
        let gdt = boot_gdt();
        let cs = segment_from_entry(gdt[usize::from(BOOT_CS / 8)], BOOT_CS);
        assert_eq!((cs.l, cs.db, cs.present, cs.s, cs.type_), (1, 0, 1, 1, 0xb));
        assert_eq!((cs.base, cs.limit, cs.g), (0, 0xffff_ffff, 1));
        let ds = segment_from_entry(gdt[usize::from(BOOT_DS / 8)], BOOT_DS);
        assert_eq!((ds.l, ds.db, ds.type_), (0, 1, 3));
        let tss = segment_from_entry(gdt[usize::from(BOOT_TSS / 8)], BOOT_TSS);
        assert_eq!((tss.s, tss.type_), (0, 0xb));
        assert_eq!(segment_from_entry(0, 0).unusable, 1);
    }

    #[test]
    fn entry_encoding_matches_known_values() {
        // The classic flat 64-bit code descriptor.
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        let e = gdt_entry(0x808b, 0x1234_5678, 0x67);
        assert_eq!(segment_from_entry(e, 0).base, 0x1234_5678);
        // G=1 in 0x808b: the limit is in 4 KiB units.
        assert_eq!(segment_from_entry(e, 0).limit, 0x67fff);
        assert_eq!(
            segment_from_entry(gdt_entry(0x008b, 0, 0x67), 0).limit,
            0x67
        );
    }
}
