//! Integration tests: synthetic guests under this machine's /dev/kvm, plus a Linux boot
//! that runs only on hardware KVM with `JEOS_TEST_KERNEL`/`JEOS_TEST_INITRD` set.

#![allow(
    clippy::print_stderr,
    clippy::tests_outside_test_module,
    reason = "integration tests are test code throughout and print `SKIPPED:` lines"
)]

mod guest;
mod kvm;
mod qemu;
