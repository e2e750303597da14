//! Model-specific registers set at boot (the rest keep KVM's reset values).

use kvm_bindings::kvm_msr_entry;

/// `IA32_TSC`.
pub const MSR_IA32_TSC: u32 = 0x10;
/// `IA32_MISC_ENABLE`.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// `IA32_MISC_ENABLE.FAST_STRING`: Linux expects it set by firmware.
pub const MISC_ENABLE_FAST_STRING: u64 = 1;
/// `IA32_SYSENTER_CS`, `_ESP`, `_EIP`.
pub const MSR_IA32_SYSENTER: [u32; 3] = [0x174, 0x175, 0x176];
/// `STAR`, `LSTAR`, `CSTAR`, `SYSCALL_MASK`, `KERNEL_GS_BASE`.
pub const MSR_SYSCALL: [u32; 5] = [
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0102,
];

/// The boot MSR list: syscall/sysenter MSRs cleared, TSC at 0, fast strings on.
#[must_use]
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let mut msrs: Vec<kvm_msr_entry> = MSR_IA32_SYSENTER
        .iter()
        .chain(MSR_SYSCALL.iter())
        .map(|&index| entry(index, 0))
        .collect();
    msrs.push(entry(MSR_IA32_TSC, 0));
    msrs.push(entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING));
    msrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_enable_fast_strings() {
        let msrs = boot_msrs();
        assert_eq!(msrs.len(), 10);
        let misc = msrs
            .iter()
            .find(|m| m.index == MSR_IA32_MISC_ENABLE)
            .unwrap();
        assert_eq!(misc.data, MISC_ENABLE_FAST_STRING);
    }
}
