//! The VMware host's answers to the RPCI steps are untrusted register values: whatever they
//! say, reading `guestinfo.ovfEnv` terminates without panicking and never returns (or
//! allocates for) more than the limit.
#![no_main]

use guest_init::deploy::vmware::{self, Backdoor, Regs};
use libfuzzer_sys::fuzz_target;

/// Answers each call with the next 24 bytes of the input (then zeros).
struct Scripted<'a> {
    data: &'a [u8],
    calls: usize,
}

impl Backdoor for Scripted<'_> {
    fn call(&mut self, _regs: Regs) -> Regs {
        self.calls += 1;
        assert!(self.calls < 100_000, "unbounded backdoor calls");
        let word = |at: usize| {
            let mut w = [0u8; 4];
            for (i, b) in w.iter_mut().enumerate() {
                *b = self.data.get(at + i).copied().unwrap_or(0);
            }
            u32::from_le_bytes(w)
        };
        let regs = Regs {
            eax: word(0),
            ebx: word(4),
            ecx: word(8),
            edx: word(12),
            esi: word(16),
            edi: word(20),
        };
        self.data = self.data.get(24..).unwrap_or(&[]);
        regs
    }
}

fuzz_target!(|data: &[u8]| {
    let mut host = Scripted { data, calls: 0 };
    if let Ok(Some(value)) = vmware::guestinfo(&mut host, "ovfEnv", 4096) {
        assert!(value.len() <= 4096);
    }
});
