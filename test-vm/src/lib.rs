//! Boots a jeos appliance and runs its smoke test: an embedded KVM microVM runner
//! (Firecracker-style, rust-vmm crates) and a QEMU backend behind one API.
//!
//! What it does: load a bzImage with the 64-bit boot protocol, an initramfs and a command
//! line; give the guest RAM, a 16550 console, an i8042 (reset), ACPI tables (for the
//! virtio-mmio disk, SMP and S5 power-off) and a virtio-blk disk backed copy-on-write by the
//! image (the image file is never modified); enforce a wall-clock timeout; capture the
//! console; collect the guest-init smoke-test protocol lines; an ACPI power button the
//! host can press ([`PowerButton`]: a clean shutdown, or a hard stop after a grace
//! period) and a pvpanic port; a virtio-vsock device on a
//! host Unix socket (Firecracker's hybrid model) and host TCP ports relayed through it
//! ([`forward`]).
//! What it does not do: IP networking in the embedded runner (vsock only; QEMU has user
//! networking), firmware boot in the embedded runner (QEMU only), anything but x86_64.
//!
//! Entry points: [`run`] with a [`Vmm`] choice, a [`RunConfig`] and a [`RunReporter`];
//! [`host::check_host`] for the KVM status.
//!
//! ```no_run
//! use std::sync::Arc;
//! use test_vm::{NoReporter, RunConfig, Vmm, run};
//! let mut config = RunConfig::new("vmlinuz".into(), "console=ttyS0 reboot=k", "console.log".into());
//! config.initramfs = Some("initrd.img".into());
//! config.smoke_test = true;
//! let outcome = run(Vmm::Auto, config, Arc::new(NoReporter))?;
//! println!("{} in {:?}: passed={}", outcome.exit, outcome.duration, outcome.passed());
//! # Ok::<(), test_vm::RunError>(())
//! ```
//!
//! Unsafe code is confined to [`vm`] (registering guest RAM with KVM), the no-op signal
//! handler and the vsock loop's poll(2) in [`runner`]; vm-memory's checked accessors are
//! used for every guest access.
#![cfg_attr(
    test,
    allow(
        clippy::too_many_lines,
        reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
    )
)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]
// Tests print `SKIPPED:` lines (project rule) and build fixtures with small literal casts.
#![cfg_attr(
    test,
    allow(
        clippy::print_stderr,
        clippy::cast_possible_truncation,
        clippy::assertions_on_constants
    )
)]

pub mod acpi;
pub mod arch;
pub mod boot;
pub mod config;
pub mod console;
pub mod devices;
pub mod forward;
pub mod host;
pub mod memory;
pub mod qemu;
pub mod runner;
pub mod vcpu;
pub mod vm;

use std::sync::Arc;

/// Re-exported so the fuzz target (and callers of
/// [`devices::virtio_blk::process_queue`]) use the same versions.
pub use virtio_queue;
/// Re-exported for the same reason as [`virtio_queue`].
pub use vm_memory;

pub use config::{
    DiskBus, ExitReason, Firmware, NicModel, NoReporter, PortForward, RunConfig, RunOutcome,
    RunReporter, VmmKind,
};
pub use devices::ged::PowerButton;
pub use host::{KvmStatus, check_host};

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    /// The embedded runner (needs /dev/kvm).
    Embedded,
    /// qemu-system-x86_64 (KVM when usable, else TCG).
    Qemu,
    /// Embedded on hardware KVM, QEMU otherwise.
    Auto,
}

/// Errors of [`run`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The embedded runner could not start the VM.
    #[error("embedded runner failed")]
    Embedded(#[source] runner::RunnerError),
    /// QEMU could not be started.
    #[error("qemu backend failed")]
    Qemu(#[source] qemu::QemuError),
}

/// Resolves [`Vmm::Auto`] (and explicit choices) to a backend with the reason.
#[must_use]
pub fn select_vmm(requested: Vmm, kvm: &KvmStatus, firmware_boot: bool) -> (VmmKind, String) {
    match requested {
        Vmm::Embedded => (VmmKind::Embedded, "embedded runner requested".into()),
        Vmm::Qemu => (VmmKind::Qemu, "qemu requested".into()),
        Vmm::Auto if firmware_boot => (
            VmmKind::Qemu,
            "firmware boot needs qemu (the embedded runner boots kernels directly)".into(),
        ),
        Vmm::Auto if kvm.can_boot_linux() => (
            VmmKind::Embedded,
            format!("embedded runner: {}", kvm.reason()),
        ),
        Vmm::Auto => (VmmKind::Qemu, format!("qemu: {}", kvm.reason())),
    }
}

/// Runs a VM with the chosen backend.
///
/// # Errors
///
/// [`RunError`] when the VM cannot be started; guest failures are reported in
/// [`RunOutcome::exit`].
pub fn run(
    vmm: Vmm,
    config: RunConfig,
    reporter: Arc<dyn RunReporter>,
) -> Result<RunOutcome, RunError> {
    let status = check_host();
    let (kind, reason) = select_vmm(vmm, &status, config.firmware.is_some());
    reporter.on_vmm_selected(kind, &reason);
    match kind {
        VmmKind::Embedded => runner::run_embedded(config, reporter).map_err(RunError::Embedded),
        VmmKind::Qemu => {
            qemu::run_qemu(config, reporter, status.can_boot_linux()).map_err(RunError::Qemu)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_selection() {
        let usable = KvmStatus::Usable {
            reason: "ok".into(),
        };
        let pvm = KvmStatus::Pvm {
            reason: "pvm".into(),
        };
        assert_eq!(select_vmm(Vmm::Auto, &usable, false).0, VmmKind::Embedded);
        assert_eq!(select_vmm(Vmm::Auto, &pvm, false).0, VmmKind::Qemu);
        assert!(select_vmm(Vmm::Auto, &pvm, false).1.contains("pvm"));
        assert_eq!(select_vmm(Vmm::Auto, &usable, true).0, VmmKind::Qemu);
        assert_eq!(select_vmm(Vmm::Embedded, &pvm, false).0, VmmKind::Embedded);
    }
}
