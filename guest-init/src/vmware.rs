//! VMware's backdoor, used for one thing: reading `guestinfo.ovfEnv` (the OVF environment
//! vSphere gives a guest deployed with the `com.vmware.guestInfo` transport). The protocol
//! is encoded in the library (`guest_init::deploy::vmware`); this module detects VMware and
//! performs the `in` instruction.
//!
//! The I/O port is touched only when the CPUID hypervisor leaf says `VMwareVMware` or the
//! SMBIOS system vendor is VMware: elsewhere port `0x5658` belongs to someone else (or to
//! nobody) and an unexpected `in` is at best garbage. `ioperm(2)` grants the port first, so
//! even a wrong detection reads a value instead of faulting.

use guest_init::deploy::vmware::{self, Backdoor, PORT, Regs};

/// Where the kernel exposes the SMBIOS system vendor.
const SYS_VENDOR: &str = "/sys/class/dmi/id/sys_vendor";

/// Whether the guest runs on VMware (CPUID hypervisor leaf, else SMBIOS).
pub fn detected() -> bool {
    cpuid_says_vmware()
        || std::fs::read_to_string(SYS_VENDOR).is_ok_and(|v| vmware::is_vmware_vendor(&v))
}

#[cfg(target_arch = "x86_64")]
fn cpuid_says_vmware() -> bool {
    use std::arch::x86_64::__cpuid;
    // Leaf 1, ECX bit 31: "running under a hypervisor"; only then is leaf 0x4000_0000
    // the hypervisor's (on bare metal it repeats the highest basic leaf).
    let features = __cpuid(1);
    if features.ecx & (1 << 31) == 0 {
        return false;
    }
    let leaf = __cpuid(0x4000_0000);
    vmware::is_vmware_signature(leaf.ebx, leaf.ecx, leaf.edx)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_says_vmware() -> bool {
    false
}

/// The backdoor of the VMware host this guest runs on.
pub struct Port(());

impl Port {
    /// Access to the port, once [`detected`] said VMware; `None` when the kernel refuses
    /// `ioperm`.
    pub fn open() -> Option<Self> {
        // SAFETY: ioperm only changes this process's I/O permission bitmap; no memory is
        // passed.
        let rc = unsafe { libc::ioperm(libc::c_ulong::from(PORT), 1, 1) };
        (rc == 0).then_some(Port(()))
    }
}

impl Backdoor for Port {
    #[cfg(target_arch = "x86_64")]
    fn call(&mut self, regs: Regs) -> Regs {
        let (mut eax, mut ecx, mut edx, mut esi, mut edi) =
            (regs.eax, regs.ecx, regs.edx, regs.esi, regs.edi);
        let mut rbx = u64::from(regs.ebx);
        // SAFETY: `in eax, dx` on the backdoor port, which `Port::open` made accessible
        // to this process; VMware answers in eax, ebx, ecx, edx, esi, edi, all declared as
        // outputs. rbx is reserved by LLVM, so it is swapped with a scratch register around
        // the instruction. No memory is touched and the stack is not used.
        unsafe {
            std::arch::asm!(
                "xchg {bx}, rbx",
                "in eax, dx",
                "xchg {bx}, rbx",
                bx = inout(reg) rbx,
                inout("eax") eax,
                inout("ecx") ecx,
                inout("edx") edx,
                inout("esi") esi,
                inout("edi") edi,
                options(nostack, nomem, preserves_flags),
            );
        }
        Regs {
            eax,
            // The upper half of rbx is whatever the instruction left; ebx is the answer.
            ebx: rbx as u32,
            ecx,
            edx,
            esi,
            edi,
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn call(&mut self, regs: Regs) -> Regs {
        regs
    }
}
