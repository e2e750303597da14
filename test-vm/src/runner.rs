//! The embedded runner: builds the microVM from a [`RunConfig`] and runs it to an
//! [`ExitReason`].
//!
//! Boot steps (each a function call below, in order): create guest memory → create the VM
//! (irqchip, PIT, memslot) → load the bzImage → load the initramfs → write the command
//! line → write GDT and page tables → plan and write ACPI tables → plan E820 and write the
//! zero page → attach serial, i8042 and virtio-blk devices → create and configure vCPUs →
//! run vCPU threads until a stop reason, the timeout, or a panic on the console.
//!
//! Stopping: a shared flag is set and every vCPU thread is kicked with a real-time signal
//! (a no-op handler) until it leaves `KVM_RUN` with `EINTR` and sees the flag; the kick is
//! repeated, so a signal landing just before `KVM_RUN` is not lost.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::acpi::{self, AcpiConfig, MmioDeviceInfo};
use crate::arch::x86_64::layout::{
    ACPI_MAX_BYTES, ACPI_START, PROTOCOL_IRQ, SERIAL_IRQ, VIRTIO_MMIO_SIZE, virtio_mmio_slot,
};
use crate::arch::x86_64::regs;
use crate::boot::{self, BootParamsConfig};
use crate::config::{ExitReason, RunConfig, RunOutcome, RunReporter, VmmKind};
use crate::console::{ConsoleCapture, ConsoleError};
use crate::devices::mmio::MmioTransport;
use crate::devices::overlay::{OverlayDisk, OverlayError};
use crate::devices::serial::SerialDevice;
use crate::devices::{Devices, VirtioSlot};
use crate::memory::{self, MemoryError};
use crate::vcpu::{self, ExitAction, StopReason, VcpuError};
use crate::vm::{Vm, VmError};

/// How long the guest may keep printing after a panic line before it is stopped.
pub const PANIC_GRACE: Duration = Duration::from_millis(500);
/// How often the supervisor checks timeout, panic and stop reasons.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Errors that prevent the VM from starting.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// No kernel given.
    #[error("the embedded runner needs a kernel (direct kernel boot)")]
    NoKernel,
    /// vCPU count out of range.
    #[error("{count} vCPUs requested; the embedded runner supports 1 to 32")]
    VcpuCount {
        /// Requested.
        count: u32,
    },
    /// Guest memory.
    #[error("guest memory")]
    Memory(#[source] MemoryError),
    /// Creating the VM.
    #[error("cannot create the VM")]
    Vm(#[source] VmError),
    /// Kernel, initramfs, command line, zero page.
    #[error("cannot load the kernel")]
    Boot(#[source] boot::BootError),
    /// GDT and page tables.
    #[error("cannot write the boot page tables")]
    Regs(#[source] regs::RegsError),
    /// ACPI tables.
    #[error("cannot build the ACPI tables")]
    Acpi(#[source] acpi::AcpiError),
    /// Writing the ACPI tables.
    #[error("cannot write the ACPI tables into guest memory")]
    AcpiWrite(#[source] vm_memory::GuestMemoryError),
    /// The disk image.
    #[error("cannot attach the disk")]
    Disk(#[source] OverlayError),
    /// The console log.
    #[error("cannot capture the console")]
    Console(#[source] ConsoleError),
    /// vCPU configuration.
    #[error("cannot configure a vCPU")]
    Vcpu(#[source] VcpuError),
    /// A KVM ioctl outside vCPU configuration.
    #[error("`{ioctl}` failed")]
    Kvm {
        /// Which ioctl.
        ioctl: &'static str,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Spawning a vCPU thread or installing the kick signal handler.
    #[error("cannot start the vCPU threads")]
    Thread(#[source] std::io::Error),
}

/// The first stop reason wins.
#[derive(Debug, Default)]
struct StopState {
    flag: AtomicBool,
    reason: Mutex<Option<ExitReason>>,
}

impl StopState {
    fn stop(&self, reason: ExitReason) {
        let mut slot = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(reason);
        self.flag.store(true, Ordering::SeqCst);
    }

    fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn kick_signal() -> libc::c_int {
    SIGRTMIN() + 1
}

fn install_kick_handler() -> Result<(), RunnerError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| RunnerError::Thread(std::io::Error::from_raw_os_error(e.errno())));
    });
    result
}

fn stop_reason_to_exit(reason: StopReason) -> ExitReason {
    match reason {
        StopReason::Reset => ExitReason::Reset,
        StopReason::PowerOff => ExitReason::PowerOff,
        StopReason::TripleFault => ExitReason::TripleFault,
        StopReason::Unhandled(text) => ExitReason::VmmError(text),
    }
}

/// Starts one thread per vCPU running `KVM_RUN` until `stop` is set; a thread that cannot
/// be spawned stops the machine with a VMM error.
fn spawn_vcpu_threads(
    vcpus: Vec<kvm_ioctls::VcpuFd>,
    devices: &Arc<Mutex<Devices>>,
    reporter: &Arc<dyn RunReporter>,
    stop: &Arc<StopState>,
) -> Vec<JoinHandle<()>> {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (index, mut fd) in vcpus.into_iter().enumerate() {
        let thread_stop = stop.clone();
        let devices = devices.clone();
        let reporter = reporter.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                let stop = thread_stop;
                while !stop.flag.load(Ordering::SeqCst) {
                    let result = vcpu::run_once(&mut fd, |exit| {
                        let mut bus = devices
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let action = vcpu::handle_exit(exit, &mut bus);
                        for warning in bus.take_warnings() {
                            reporter.on_device_warning(&error_chain(&warning));
                        }
                        action
                    });
                    match result {
                        Ok(ExitAction::Continue) => {}
                        Ok(ExitAction::Stop(reason)) => stop.stop(stop_reason_to_exit(reason)),
                        Err(e) => stop.stop(ExitReason::VmmError(format!("KVM_RUN failed: {e}"))),
                    }
                }
            });
        match thread {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                stop.stop(ExitReason::VmmError(format!(
                    "cannot spawn a vCPU thread: {e}"
                )));
                break;
            }
        }
    }
    threads
}

/// Boots `config` in the embedded runner and waits for it to stop.
///
/// # Errors
///
/// [`RunnerError`] when the VM cannot be built; everything after the first instruction is
/// an [`ExitReason`].
#[allow(
    clippy::too_many_lines,
    reason = "split into setup and exit handling by the vsock work (issue 12 leaves it to that branch)"
)]
pub fn run_embedded(
    config: RunConfig,
    reporter: Arc<dyn RunReporter>,
) -> Result<RunOutcome, RunnerError> {
    let started = Instant::now();
    let kernel_path: PathBuf = config.kernel.clone().ok_or(RunnerError::NoKernel)?;
    let vcpu_count = u8::try_from(config.vcpus)
        .ok()
        .filter(|c| (1..=32).contains(c))
        .ok_or(RunnerError::VcpuCount {
            count: config.vcpus,
        })?;
    let memory = memory::create_guest_memory(config.memory_mib).map_err(RunnerError::Memory)?;
    let vm = Vm::create(&memory).map_err(RunnerError::Vm)?;

    let kernel = boot::load_bzimage(&memory, &kernel_path).map_err(RunnerError::Boot)?;
    let initramfs = match &config.initramfs {
        Some(path) => {
            Some(boot::load_initramfs(&memory, path, &kernel).map_err(RunnerError::Boot)?)
        }
        None => None,
    };
    // The embedded runner has no NIC: guest-init must not wait for one.
    let cmdline = config.effective_cmdline(true);
    let cmdline_len =
        boot::write_cmdline(&memory, &cmdline, &kernel.header).map_err(RunnerError::Boot)?;
    regs::write_boot_structures(&memory).map_err(RunnerError::Regs)?;

    let mut mmio_devices = Vec::new();
    let mut disk = None;
    if let Some(path) = &config.disk {
        let overlay = OverlayDisk::open(path).map_err(RunnerError::Disk)?;
        let (base, irq) = virtio_mmio_slot(0);
        mmio_devices.push(MmioDeviceInfo {
            base,
            size_bytes: u32::try_from(VIRTIO_MMIO_SIZE).expect("4 KiB"),
            irq,
        });
        disk = Some((overlay, base, irq));
    }
    let acpi_layout = acpi::plan_acpi(&AcpiConfig {
        vcpus: config.vcpus,
        mmio_devices,
        base: ACPI_START,
        limit_bytes: ACPI_MAX_BYTES,
    })
    .map_err(RunnerError::Acpi)?;
    memory
        .write_slice(&acpi_layout.bytes, GuestAddress(ACPI_START))
        .map_err(RunnerError::AcpiWrite)?;
    let params = boot::build_boot_params(&BootParamsConfig {
        header: kernel.header,
        cmdline_len,
        initramfs,
        e820: boot::plan_e820(memory.last_addr().0 + 1),
        rsdp_address: acpi_layout.rsdp_address,
    })
    .map_err(RunnerError::Boot)?;
    boot::write_boot_params(&memory, &params).map_err(RunnerError::Boot)?;

    let console = ConsoleCapture::create(
        &config.console_log,
        config.echo_console,
        reporter.clone(),
        started,
    )
    .map_err(RunnerError::Console)?;
    let serial_irq = vm.irq_line(SERIAL_IRQ).map_err(RunnerError::Vm)?;
    let serial = SerialDevice::new(serial_irq, Box::new(console.clone()));
    let mut devices = Devices::new(memory.clone(), serial);
    let protocol = ConsoleCapture::protocol(reporter.clone(), started);
    devices.protocol = Some(SerialDevice::new(
        vm.irq_line(PROTOCOL_IRQ).map_err(RunnerError::Vm)?,
        Box::new(protocol.clone()),
    ));
    if let Some((overlay, base, irq)) = disk {
        devices.virtio.push(VirtioSlot {
            base,
            transport: MmioTransport::new_block(Box::new(overlay), config.read_only_disk),
            interrupt: vm.irq_line(irq).map_err(RunnerError::Vm)?,
        });
    }
    let devices = Arc::new(Mutex::new(devices));

    let supported = vm
        .kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| RunnerError::Kvm {
            ioctl: "KVM_GET_SUPPORTED_CPUID",
            source,
        })?;
    let mut vcpus = Vec::new();
    for index in 0..vcpu_count {
        let fd = vm
            .fd
            .create_vcpu(u64::from(index))
            .map_err(|source| RunnerError::Kvm {
                ioctl: "KVM_CREATE_VCPU",
                source,
            })?;
        vcpu::configure_vcpu(&fd, index, vcpu_count, &supported, kernel.entry)
            .map_err(RunnerError::Vcpu)?;
        vcpus.push(fd);
    }

    install_kick_handler()?;
    let stop = Arc::new(StopState::default());
    let threads = spawn_vcpu_threads(vcpus, &devices, &reporter, &stop);

    let deadline = started + config.timeout;
    loop {
        if stop.flag.load(Ordering::SeqCst) {
            break;
        }
        if let Some(panic_at) = console.lock().panic_at
            && panic_at.elapsed() >= PANIC_GRACE
        {
            stop.stop(ExitReason::Panic);
            break;
        }
        if Instant::now() >= deadline {
            stop.stop(ExitReason::Timeout);
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    // Kick until every vCPU thread has left KVM_RUN and returned.
    while threads.iter().any(|t| !t.is_finished()) {
        for thread in threads.iter().filter(|t| !t.is_finished()) {
            // The thread may exit between the check and the kill: ESRCH is harmless.
            let _ = thread.kill(kick_signal());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    for thread in threads {
        let _ = thread.join();
    }
    let duration = started.elapsed();
    drop(vm);

    let mut results = protocol.lock();
    results.finish();
    let mut state = console.lock();
    state.finish();
    let mut exit = stop
        .reason()
        .unwrap_or_else(|| ExitReason::VmmError("stopped without a reason".into()));
    if state.panic_at.is_some() && !matches!(exit, ExitReason::VmmError(_)) {
        exit = ExitReason::Panic;
    }
    let mut device_warnings = Vec::new();
    if let Some(e) = state.write_error.take() {
        device_warnings.push(format!("console log write failed: {e}"));
    }
    Ok(RunOutcome {
        exit,
        console_tail: state.tail(),
        duration,
        first_byte_at: state.first_byte_at,
        events: results.events.clone(),
        ready_at: results.ready_at,
        protocol_errors: results.protocol_errors.clone(),
        device_warnings,
        vmm: VmmKind::Embedded,
    })
}

/// `error: cause: cause` rendering for reporter messages.
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_reason_wins() {
        let stop = StopState::default();
        assert_eq!(stop.reason(), None);
        stop.stop(ExitReason::Reset);
        stop.stop(ExitReason::Timeout);
        assert_eq!(stop.reason(), Some(ExitReason::Reset));
        assert!(stop.flag.load(Ordering::SeqCst));
    }

    #[test]
    fn stop_reasons_map_to_exit_reasons() {
        assert_eq!(
            stop_reason_to_exit(StopReason::TripleFault),
            ExitReason::TripleFault
        );
        assert_eq!(
            stop_reason_to_exit(StopReason::Unhandled("x".into())),
            ExitReason::VmmError("x".into())
        );
    }

    #[test]
    fn rejects_missing_kernel_and_bad_vcpu_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RunConfig::new("k".into(), "", dir.path().join("log"));
        config.kernel = None;
        assert!(matches!(
            run_embedded(config, Arc::new(crate::NoReporter)),
            Err(RunnerError::NoKernel)
        ));
        let mut config = RunConfig::new("k".into(), "", dir.path().join("log"));
        config.vcpus = 0;
        assert!(matches!(
            run_embedded(config, Arc::new(crate::NoReporter)),
            Err(RunnerError::VcpuCount { count: 0 })
        ));
    }

    #[test]
    fn error_chain_joins_sources() {
        let error = RunnerError::Memory(MemoryError::TooSmall {
            size_mib: 1,
            minimum_mib: 16,
        });
        assert_eq!(
            error_chain(&error),
            "guest memory: guest memory of 1 MiB is too small (minimum 16 MiB)"
        );
    }
}
