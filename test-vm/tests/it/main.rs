//! Integration tests: synthetic guests under this machine's /dev/kvm. Real Linux in the
//! embedded runner is builder's `nested` test (a hardware-style /dev/kvm one level down),
//! which asserts the ready line and the check results.
#![allow(
    clippy::too_many_lines,
    reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
)]
#![allow(
    clippy::print_stderr,
    clippy::tests_outside_test_module,
    reason = "integration tests are test code throughout and print `SKIPPED:` lines"
)]

mod guest;
mod kvm;
mod qemu;
mod vsock;

/// A missing prerequisite (a usable /dev/kvm, QEMU, binutils): the test returns after a
/// loud `SKIPPED` line, and fails instead under `CI=true`, where every one is there.
pub fn prerequisite(present: bool, what: &str) -> bool {
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prerequisite missing under CI=true: {what}"
        );
        eprintln!("SKIPPED: {what}");
    }
    present
}
