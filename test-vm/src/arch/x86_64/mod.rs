//! x86_64 machine setup: memory layout, GDT, page tables, registers, CPUID and MSRs.

pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod msr;
pub mod regs;
