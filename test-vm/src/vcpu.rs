//! vCPU setup and exit handling.
//!
//! [`handle_exit`] is a free function over a plain [`VmExit`] and the device bus, so every
//! exit path is unit-tested without a VM.

use kvm_bindings::{CpuId, Msrs, kvm_cpuid_entry2};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestAddress;

use crate::arch::x86_64::{cpuid, msr, regs};
use crate::devices::{BusEvent, Devices};

/// Errors while configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed.
    #[error("vcpu {index}: `{ioctl}` failed")]
    Ioctl {
        /// vCPU index.
        index: u8,
        /// Which ioctl.
        ioctl: &'static str,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Building a FAM structure failed (too many entries).
    #[error("vcpu {index}: cannot build the {what} list")]
    Fam {
        /// vCPU index.
        index: u8,
        /// CPUID or MSR.
        what: &'static str,
    },
    /// KVM accepted fewer MSRs than given.
    #[error("vcpu {index}: KVM set {set} of {wanted} boot MSRs")]
    Msrs {
        /// vCPU index.
        index: u8,
        /// Accepted.
        set: usize,
        /// Given.
        wanted: usize,
    },
}

/// A VM exit, decoupled from `kvm_run` so [`handle_exit`] is testable.
#[derive(Debug)]
pub enum VmExit<'a> {
    /// `in` from a port.
    IoIn(u16, &'a mut [u8]),
    /// `out` to a port.
    IoOut(u16, &'a [u8]),
    /// Read of unbacked guest physical memory.
    MmioRead(u64, &'a mut [u8]),
    /// Write to unbacked guest physical memory.
    MmioWrite(u64, &'a [u8]),
    /// `hlt` reached userspace (only without an in-kernel LAPIC).
    Hlt,
    /// KVM_EXIT_SHUTDOWN: a triple fault.
    Shutdown,
    /// KVM_EXIT_SYSTEM_EVENT (type).
    SystemEvent(u32),
    /// KVM_RUN was interrupted by a signal (the kick), or `immediate_exit` was set.
    Interrupted,
    /// VM entry failed (hardware reason).
    FailEntry(u64),
    /// KVM internal error (e.g. emulation failure).
    InternalError,
    /// Anything else, named.
    Other(String),
}

/// What the vCPU loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Re-enter the guest.
    Continue,
    /// Stop the machine.
    Stop(StopReason),
}

/// Why a vCPU stopped the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// i8042 or ACPI reset, or a KVM reset system event.
    Reset,
    /// ACPI S5, or a KVM shutdown system event.
    PowerOff,
    /// Triple fault.
    TripleFault,
    /// The guest reported a panic (pvpanic).
    Panic,
    /// An exit we cannot handle.
    Unhandled(String),
}

/// KVM_SYSTEM_EVENT_SHUTDOWN.
pub const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// KVM_SYSTEM_EVENT_RESET.
pub const SYSTEM_EVENT_RESET: u32 = 2;

/// Handles one exit against the device bus.
pub fn handle_exit(exit: VmExit<'_>, devices: &mut Devices) -> ExitAction {
    let event = match exit {
        VmExit::IoIn(port, data) => {
            devices.pio_read(port, data);
            BusEvent::None
        }
        VmExit::IoOut(port, data) => devices.pio_write(port, data),
        VmExit::MmioRead(address, data) => {
            devices.mmio_read(address, data);
            BusEvent::None
        }
        VmExit::MmioWrite(address, data) => devices.mmio_write(address, data),
        VmExit::Hlt | VmExit::Interrupted => BusEvent::None,
        VmExit::Shutdown => return ExitAction::Stop(StopReason::TripleFault),
        VmExit::SystemEvent(SYSTEM_EVENT_SHUTDOWN) => BusEvent::PowerOff,
        VmExit::SystemEvent(SYSTEM_EVENT_RESET) => BusEvent::Reset,
        VmExit::SystemEvent(kind) => {
            return ExitAction::Stop(StopReason::Unhandled(format!("system event {kind}")));
        }
        VmExit::FailEntry(reason) => {
            return ExitAction::Stop(StopReason::Unhandled(format!(
                "VM entry failed (hardware reason {reason:#x})"
            )));
        }
        VmExit::InternalError => {
            return ExitAction::Stop(StopReason::Unhandled(
                "KVM internal error (instruction emulation failed)".into(),
            ));
        }
        VmExit::Other(name) => {
            return ExitAction::Stop(StopReason::Unhandled(format!("unexpected exit {name}")));
        }
    };
    match event {
        BusEvent::None => ExitAction::Continue,
        BusEvent::Reset => ExitAction::Stop(StopReason::Reset),
        BusEvent::PowerOff => ExitAction::Stop(StopReason::PowerOff),
        BusEvent::Panic => ExitAction::Stop(StopReason::Panic),
    }
}

/// Runs the vCPU once and converts the exit. `Err` only for ioctl errors other than
/// `EINTR`/`EAGAIN`.
///
/// # Errors
///
/// The KVM_RUN error.
pub fn run_once<F>(vcpu: &mut VcpuFd, on_exit: F) -> Result<ExitAction, kvm_ioctls::Error>
where
    F: FnOnce(VmExit<'_>) -> ExitAction,
{
    let exit = match vcpu.run() {
        Ok(VcpuExit::IoIn(port, data)) => VmExit::IoIn(port, data),
        Ok(VcpuExit::IoOut(port, data)) => VmExit::IoOut(port, data),
        Ok(VcpuExit::MmioRead(address, data)) => VmExit::MmioRead(address, data),
        Ok(VcpuExit::MmioWrite(address, data)) => VmExit::MmioWrite(address, data),
        Ok(VcpuExit::Hlt) => VmExit::Hlt,
        Ok(VcpuExit::Shutdown) => VmExit::Shutdown,
        Ok(VcpuExit::SystemEvent(kind, _)) => VmExit::SystemEvent(kind),
        Ok(VcpuExit::Intr) => VmExit::Interrupted,
        Ok(VcpuExit::FailEntry(reason, _)) => VmExit::FailEntry(reason),
        Ok(VcpuExit::InternalError) => VmExit::InternalError,
        Ok(other) => VmExit::Other(format!("{other:?}")),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => VmExit::Interrupted,
        Err(e) => return Err(e),
    };
    Ok(on_exit(exit))
}

/// Configures CPUID, MSRs, FPU, special and general registers of a vCPU. Only the boot
/// vCPU (index 0) gets the entry registers; the others wait for INIT/SIPI in the in-kernel
/// LAPIC.
///
/// # Errors
///
/// [`VcpuError`].
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    index: u8,
    count: u8,
    supported_cpuid: &CpuId,
    entry: GuestAddress,
) -> Result<(), VcpuError> {
    let ioctl = |ioctl| {
        move |source| VcpuError::Ioctl {
            index,
            ioctl,
            source,
        }
    };
    let tsc_khz = vcpu.get_tsc_khz().unwrap_or(0);
    let mut entries: Vec<kvm_cpuid_entry2> = supported_cpuid.as_slice().to_vec();
    cpuid::patch_cpuid(
        &mut entries,
        cpuid::CpuidConfig {
            vcpu_id: index,
            vcpu_count: count,
            tsc_khz,
        },
    );
    let cpuid = CpuId::from_entries(&entries).map_err(|_| VcpuError::Fam {
        index,
        what: "CPUID",
    })?;
    vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    let boot_msrs = msr::boot_msrs();
    let msrs = Msrs::from_entries(&boot_msrs).map_err(|_| VcpuError::Fam { index, what: "MSR" })?;
    let set = vcpu.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
    if set != boot_msrs.len() {
        return Err(VcpuError::Msrs {
            index,
            set,
            wanted: boot_msrs.len(),
        });
    }
    if index == 0 {
        vcpu.set_fpu(&regs::boot_fpu())
            .map_err(ioctl("KVM_SET_FPU"))?;
        let sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&regs::long_mode_sregs(sregs))
            .map_err(ioctl("KVM_SET_SREGS"))?;
        vcpu.set_regs(&regs::boot_regs(entry))
            .map_err(ioctl("KVM_SET_REGS"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::devices::serial::SerialDevice;

    fn devices() -> Devices {
        let serial = SerialDevice::new(
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            Box::new(std::io::sink()),
        );
        Devices::new(crate::devices::virtio_blk::tests::memory(), serial)
    }

    #[test]
    fn i8042_reset_stops_with_reset() {
        let mut bus = devices();
        assert_eq!(
            handle_exit(VmExit::IoOut(0x64, &[0xfe]), &mut bus),
            ExitAction::Stop(StopReason::Reset)
        );
        assert_eq!(
            handle_exit(VmExit::IoOut(0x64, &[0xaa]), &mut bus),
            ExitAction::Continue
        );
    }

    #[test]
    fn acpi_s5_stops_with_power_off() {
        let mut bus = devices();
        assert_eq!(
            handle_exit(VmExit::IoOut(0x3c0, &[0x34]), &mut bus),
            ExitAction::Stop(StopReason::PowerOff)
        );
    }

    #[test]
    fn pvpanic_write_stops_with_panic() {
        let mut bus = devices();
        assert_eq!(
            handle_exit(VmExit::IoOut(0x505, &[1]), &mut bus),
            ExitAction::Stop(StopReason::Panic)
        );
    }

    #[test]
    fn shutdown_exit_is_a_triple_fault() {
        let mut bus = devices();
        assert_eq!(
            handle_exit(VmExit::Shutdown, &mut bus),
            ExitAction::Stop(StopReason::TripleFault)
        );
    }

    #[test]
    fn system_events_map_to_reset_and_power_off() {
        let mut bus = devices();
        assert_eq!(
            handle_exit(VmExit::SystemEvent(SYSTEM_EVENT_RESET), &mut bus),
            ExitAction::Stop(StopReason::Reset)
        );
        assert_eq!(
            handle_exit(VmExit::SystemEvent(SYSTEM_EVENT_SHUTDOWN), &mut bus),
            ExitAction::Stop(StopReason::PowerOff)
        );
        assert!(matches!(
            handle_exit(VmExit::SystemEvent(9), &mut bus),
            ExitAction::Stop(StopReason::Unhandled(_))
        ));
    }

    #[test]
    fn unknown_and_failed_exits_stop_with_a_reason() {
        let mut bus = devices();
        let ExitAction::Stop(StopReason::Unhandled(text)) =
            handle_exit(VmExit::InternalError, &mut bus)
        else {
            panic!("internal error must stop");
        };
        assert!(text.contains("emulation"));
        assert!(matches!(
            handle_exit(VmExit::FailEntry(0x80000021), &mut bus),
            ExitAction::Stop(StopReason::Unhandled(t)) if t.contains("0x80000021")
        ));
        assert!(matches!(
            handle_exit(VmExit::Other("Debug".into()), &mut bus),
            ExitAction::Stop(StopReason::Unhandled(t)) if t.contains("Debug")
        ));
    }

    #[test]
    fn port_and_mmio_accesses_continue() {
        let mut bus = devices();
        let mut data = [0u8; 1];
        assert_eq!(
            handle_exit(VmExit::IoIn(0x3fd, &mut data), &mut bus),
            ExitAction::Continue
        );
        assert_eq!(data[0] & 0x20, 0x20);
        let mut four = [0u8; 4];
        assert_eq!(
            handle_exit(VmExit::MmioRead(0xfed0_0000, &mut four), &mut bus),
            ExitAction::Continue
        );
        assert_eq!(
            handle_exit(VmExit::Interrupted, &mut bus),
            ExitAction::Continue
        );
        assert_eq!(handle_exit(VmExit::Hlt, &mut bus), ExitAction::Continue);
    }
}
