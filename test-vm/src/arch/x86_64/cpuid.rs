//! CPUID as the guest sees it: KVM's supported CPUID, patched per vCPU.
//!
//! * leaf 0x1: initial APIC id in EBX[31:24], logical processor count in EBX[23:16]; the
//!   hypervisor bit ECX[31] set so the kernel looks at the 0x4000_0000 leaves;
//! * leaf 0xb: x2APIC id in EDX;
//! * leaves 0x15/0x16 and KVM's 0x4000_0010 ("timing information"): the TSC frequency, so
//!   the kernel does not have to calibrate the TSC against a PIT/HPET that a microVM may
//!   not emulate faithfully (without it a kernel can hang or take seconds in calibration);
//! * leaf 0x4000_0000: `KVMKVMKVM` signature with the maximum leaf raised to 0x4000_0010.

use kvm_bindings::kvm_cpuid_entry2;

/// KVM's hypervisor CPUID signature leaf.
pub const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
/// KVM/VMware-style timing leaf: EAX = TSC kHz, EBX = APIC bus kHz.
pub const TIMING_LEAF: u32 = 0x4000_0010;
/// APIC timer bus frequency KVM emulates (1 GHz).
pub const APIC_BUS_KHZ: u32 = 1_000_000;
const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1;

/// Per-vCPU inputs of the CPUID patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidConfig {
    /// This vCPU's index (= APIC id).
    pub vcpu_id: u8,
    /// Number of vCPUs in the VM.
    pub vcpu_count: u8,
    /// TSC frequency from `KVM_GET_TSC_KHZ`.
    pub tsc_khz: u32,
}

fn entry_mut(
    entries: &mut Vec<kvm_cpuid_entry2>,
    function: u32,
    index: u32,
) -> &mut kvm_cpuid_entry2 {
    let position = entries
        .iter()
        .position(|e| e.function == function && e.index == index);
    let position = if let Some(position) = position {
        position
    } else {
        entries.push(kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        });
        entries.len() - 1
    };
    &mut entries[position]
}

/// Patches KVM's supported CPUID (`entries`) for one vCPU.
pub fn patch_cpuid(entries: &mut Vec<kvm_cpuid_entry2>, config: CpuidConfig) {
    // Basic leaves: make sure 0x15 and 0x16 exist and are reported.
    let max_basic = entry_mut(entries, 0, 0);
    max_basic.eax = max_basic.eax.max(0x16);

    let leaf1 = entry_mut(entries, 1, 0);
    leaf1.ebx = (leaf1.ebx & 0x0000_ffff)
        | (u32::from(config.vcpu_id) << 24)
        | (u32::from(config.vcpu_count) << 16);
    leaf1.ecx |= 1 << 31; // hypervisor present
    if config.vcpu_count > 1 {
        leaf1.edx |= 1 << 28; // HTT: the logical-processor count is valid
    }

    for entry in entries.iter_mut().filter(|e| e.function == 0xb) {
        entry.edx = u32::from(config.vcpu_id);
    }

    if config.tsc_khz != 0 {
        // TSC = ECX * EBX / EAX (Hz): crystal = TSC, ratio 1/1.
        let leaf15 = entry_mut(entries, 0x15, 0);
        leaf15.eax = 1;
        leaf15.ebx = 1;
        leaf15.ecx = config.tsc_khz.saturating_mul(1000);
        leaf15.edx = 0;
        let leaf16 = entry_mut(entries, 0x16, 0);
        leaf16.eax = config.tsc_khz / 1000; // base MHz
        leaf16.ebx = config.tsc_khz / 1000; // max MHz
        leaf16.ecx = APIC_BUS_KHZ / 1000; // bus MHz
        let timing = entry_mut(entries, TIMING_LEAF, 0);
        timing.eax = config.tsc_khz;
        timing.ebx = APIC_BUS_KHZ;
    }

    let signature = entry_mut(entries, KVM_SIGNATURE_LEAF, 0);
    signature.eax = signature.eax.max(TIMING_LEAF);
    signature.ebx = u32::from_le_bytes(*b"KVMK");
    signature.ecx = u32::from_le_bytes(*b"VMKV");
    signature.edx = u32::from_le_bytes(*b"M\0\0\0");

    for entry in entries.iter_mut() {
        if matches!(entry.function, 0x15 | 0x16 | TIMING_LEAF) {
            entry.flags &= !KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(entries: &[kvm_cpuid_entry2], function: u32) -> kvm_cpuid_entry2 {
        *entries.iter().find(|e| e.function == function).unwrap()
    }

    #[test]
    fn patches_apic_id_and_timing_leaves() {
        let mut entries = vec![
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0xd,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0801,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ];
        patch_cpuid(
            &mut entries,
            CpuidConfig {
                vcpu_id: 3,
                vcpu_count: 4,
                tsc_khz: 2_500_000,
            },
        );
        assert_eq!(lookup(&entries, 0).eax, 0x16);
        let leaf1 = lookup(&entries, 1);
        assert_eq!(leaf1.ebx, 0x0304_0801);
        assert_ne!(leaf1.ecx & (1 << 31), 0);
        assert_eq!(lookup(&entries, 0xb).edx, 3);
        let leaf15 = lookup(&entries, 0x15);
        assert_eq!(
            u64::from(leaf15.ecx) * u64::from(leaf15.ebx) / u64::from(leaf15.eax),
            2_500_000_000
        );
        assert_eq!(lookup(&entries, 0x16).eax, 2500);
        let timing = lookup(&entries, TIMING_LEAF);
        assert_eq!((timing.eax, timing.ebx), (2_500_000, APIC_BUS_KHZ));
        let signature = lookup(&entries, KVM_SIGNATURE_LEAF);
        assert_eq!(signature.eax, TIMING_LEAF);
        let mut name = signature.ebx.to_le_bytes().to_vec();
        name.extend(signature.ecx.to_le_bytes());
        name.extend(signature.edx.to_le_bytes());
        assert_eq!(&name[..9], b"KVMKVMKVM");
    }

    #[test]
    fn unknown_tsc_frequency_leaves_timing_leaves_out() {
        let mut entries = Vec::new();
        patch_cpuid(
            &mut entries,
            CpuidConfig {
                vcpu_id: 0,
                vcpu_count: 1,
                tsc_khz: 0,
            },
        );
        assert!(entries.iter().all(|e| e.function != 0x15));
        assert!(entries.iter().all(|e| e.function != TIMING_LEAF));
    }
}
