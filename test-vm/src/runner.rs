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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::acpi::{self, AcpiConfig, MmioDeviceInfo};
use crate::arch::x86_64::layout::{
    ACPI_MAX_BYTES, ACPI_START, GED_IRQ, PROTOCOL_IRQ, SERIAL_IRQ, VIRTIO_MMIO_SIZE,
    virtio_mmio_slot,
};
use crate::arch::x86_64::regs;
use crate::boot::{self, BootParamsConfig};
use crate::config::{ExitReason, RunConfig, RunOutcome, RunReporter, VSOCK_FLAG, VmmKind};
use crate::console::{ConsoleCapture, ConsoleError};
use crate::devices::ged::PowerButton;
use crate::devices::mmio::MmioTransport;
use crate::devices::overlay::{OverlayDisk, OverlayError};
use crate::devices::serial::SerialDevice;
use crate::devices::vsock::muxer::VsockMuxer;
use crate::devices::vsock::{GUEST_CID, VsockDevice};
use crate::devices::{Devices, VirtioSlot};
use crate::forward::{ForwardError, TcpForwarder, request_poweroff};
use crate::memory::{self, MemoryError};
use crate::vcpu::{self, ExitAction, StopReason, VcpuError};
use crate::vm::{Vm, VmError};

/// How long the guest may keep printing after a panic line before it is stopped.
pub const PANIC_GRACE: Duration = Duration::from_millis(500);
/// How often the supervisor checks timeout, panic and stop reasons.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// Upper bound on how long the vsock loop sleeps without an event.
const VSOCK_POLL_MS: libc::c_int = 50;
/// The console escape key (`Ctrl-A`, as QEMU's `mon:stdio`).
const CTRL_A: u8 = 0x01;
/// How long `Ctrl-A X` waits for the guest to power off before stopping it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

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
    /// The vsock device's host socket.
    #[error("cannot create the vsock socket `{}`", path.display())]
    Vsock {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `--forward` host port.
    #[error("cannot forward a host port")]
    Forward(#[source] ForwardError),
    /// Raising the power button's interrupt for a press made before the start.
    #[error("cannot connect the ACPI power button")]
    PowerButton(#[source] std::io::Error),
    /// Spawning a vCPU thread or installing the kick signal handler.
    #[error("cannot start the vCPU threads")]
    Thread(#[source] std::io::Error),
}

/// The first stop reason wins.
#[derive(Debug, Default)]
struct StopState {
    flag: AtomicBool,
    reason: Mutex<Option<ExitReason>>,
    /// When the boot vCPU first entered `KVM_RUN`.
    first_run: std::sync::OnceLock<Instant>,
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
        StopReason::Panic => ExitReason::Panic,
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
                if index == 0 {
                    let _ = stop.first_run.set(Instant::now());
                }
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

/// A built machine, ready for its vCPUs to run.
struct Machine {
    vm: Vm,
    devices: Arc<Mutex<Devices>>,
    vcpus: Vec<kvm_ioctls::VcpuFd>,
    console: ConsoleCapture,
    protocol: ConsoleCapture,
    /// The vsock host loop's wake-up eventfd, when a vsock device exists.
    vsock_wake: Option<EventFd>,
    /// The vsock device's host socket.
    vsock_socket: Option<PathBuf>,
    /// Keeps a temporary vsock socket directory alive for the run.
    _vsock_dir: Option<tempfile::TempDir>,
    /// Host TCP listeners relaying into the guest; stopped when dropped.
    _forwarder: Option<TcpForwarder>,
}

/// Boots `config` in the embedded runner and waits for it to stop.
///
/// # Errors
///
/// [`RunnerError`] when the VM cannot be built; everything after the first instruction is
/// an [`ExitReason`].
pub fn run_embedded(
    mut config: RunConfig,
    reporter: Arc<dyn RunReporter>,
) -> Result<RunOutcome, RunnerError> {
    let started = Instant::now();
    let machine = build_machine(&mut config, &reporter, started)?;
    Ok(supervise(machine, config, &reporter, started))
}

/// Setup: guest memory, kernel, ACPI, boot parameters, devices and vCPUs.
fn build_machine(
    config: &mut RunConfig,
    reporter: &Arc<dyn RunReporter>,
    started: Instant,
) -> Result<Machine, RunnerError> {
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
    let mut cmdline = config.effective_cmdline(true);
    let (virtio, vsock) = plan_virtio_devices(config)?;
    if vsock.socket.is_some() {
        cmdline.push(' ');
        cmdline.push_str(VSOCK_FLAG);
    }
    if let Some(flag) = config.forward_flag() {
        cmdline.push(' ');
        cmdline.push_str(&flag);
    }
    let cmdline_len =
        boot::write_cmdline(&memory, &cmdline, &kernel.header).map_err(RunnerError::Boot)?;
    regs::write_boot_structures(&memory).map_err(RunnerError::Regs)?;

    let mmio_devices = virtio
        .iter()
        .map(|d| MmioDeviceInfo {
            base: d.base,
            size_bytes: u32::try_from(VIRTIO_MMIO_SIZE).expect("4 KiB"),
            irq: d.irq,
        })
        .collect();
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

    let (devices, console, protocol, vsock_wake) =
        attach_devices(&vm, &memory, config, reporter, started, virtio)?;
    let vcpus = create_vcpus(&vm, vcpu_count, kernel.entry)?;
    Ok(Machine {
        vm,
        devices: Arc::new(Mutex::new(devices)),
        vcpus,
        console,
        protocol,
        vsock_wake,
        vsock_socket: vsock.socket,
        _vsock_dir: vsock.dir,
        _forwarder: vsock.forwarder,
    })
}

/// The bus: COM1 (console capture), COM2 (protocol), the planned virtio-mmio devices.
fn attach_devices(
    vm: &Vm,
    memory: &memory::GuestMemoryMmap,
    config: &mut RunConfig,
    reporter: &Arc<dyn RunReporter>,
    started: Instant,
    virtio: Vec<PlannedSlot>,
) -> Result<(Devices, ConsoleCapture, ConsoleCapture, Option<EventFd>), RunnerError> {
    let console = ConsoleCapture::create(
        &config.console_log,
        config.echo_console.take(),
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
    if let Some(button) = &config.power_button {
        let irq = vm.irq_line(GED_IRQ).map_err(RunnerError::Vm)?;
        button.attach(irq).map_err(RunnerError::PowerButton)?;
        devices.ged.button = Some(button.clone());
    }
    let mut vsock_wake = None;
    for device in virtio {
        let transport = match device.kind {
            PlannedVirtio::Block(overlay) => {
                MmioTransport::new_block(Box::new(overlay), config.read_only_disk)
            }
            PlannedVirtio::Vsock(mut vsock) => {
                let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(RunnerError::Thread)?;
                vsock.wake = Some(wake.try_clone().map_err(RunnerError::Thread)?);
                vsock_wake = Some(wake);
                MmioTransport::new_vsock(*vsock)
            }
        };
        devices.virtio.push(VirtioSlot {
            base: device.base,
            transport,
            interrupt: vm.irq_line(device.irq).map_err(RunnerError::Vm)?,
        });
    }
    Ok((devices, console, protocol, vsock_wake))
}

/// A virtio-mmio device before it is attached.
enum PlannedVirtio {
    Block(OverlayDisk),
    Vsock(Box<VsockDevice>),
}

struct PlannedSlot {
    base: u64,
    irq: u32,
    kind: PlannedVirtio,
}

/// What the vsock device keeps alive beyond the bus.
#[derive(Default)]
struct VsockExtras {
    socket: Option<PathBuf>,
    dir: Option<tempfile::TempDir>,
    forwarder: Option<TcpForwarder>,
}

/// The disk (slot 0) and the vsock device (next slot) with its host socket and TCP
/// forwards, which are bound before the VM starts.
fn plan_virtio_devices(config: &RunConfig) -> Result<(Vec<PlannedSlot>, VsockExtras), RunnerError> {
    let mut slots = Vec::new();
    if let Some(path) = &config.disk {
        let overlay = OverlayDisk::open(path).map_err(RunnerError::Disk)?;
        let (base, irq) = virtio_mmio_slot(0);
        slots.push(PlannedSlot {
            base,
            irq,
            kind: PlannedVirtio::Block(overlay),
        });
    }
    let mut extras = VsockExtras::default();
    let socket = match (&config.vsock_socket, config.port_forwards.is_empty()) {
        (Some(path), _) => Some(path.clone()),
        (None, false) => {
            let dir = tempfile::Builder::new()
                .prefix("jeos-vsock-")
                .tempdir()
                .map_err(|source| RunnerError::Vsock {
                    path: std::env::temp_dir(),
                    source,
                })?;
            let path = dir.path().join("vsock");
            extras.dir = Some(dir);
            Some(path)
        }
        (None, true) => None,
    };
    if let Some(socket) = socket {
        let muxer = VsockMuxer::bind(GUEST_CID, &socket).map_err(|source| RunnerError::Vsock {
            path: socket.clone(),
            source,
        })?;
        if !config.port_forwards.is_empty() {
            extras.forwarder = Some(
                TcpForwarder::bind(&config.port_forwards, &socket).map_err(RunnerError::Forward)?,
            );
        }
        extras.socket = Some(socket.clone());
        let (base, irq) = virtio_mmio_slot(u32::try_from(slots.len()).expect("< 2 slots"));
        slots.push(PlannedSlot {
            base,
            irq,
            kind: PlannedVirtio::Vsock(Box::new(VsockDevice::new(GUEST_CID, muxer))),
        });
    }
    Ok((slots, extras))
}

fn create_vcpus(
    vm: &Vm,
    vcpu_count: u8,
    entry: GuestAddress,
) -> Result<Vec<kvm_ioctls::VcpuFd>, RunnerError> {
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
        vcpu::configure_vcpu(&fd, index, vcpu_count, &supported, entry)
            .map_err(RunnerError::Vcpu)?;
        vcpus.push(fd);
    }
    Ok(vcpus)
}

/// Exit handling: run the vCPUs (and the vsock and console-input loops) until a stop
/// reason, the timeout or a panic on the console; then collect the outcome.
fn supervise(
    machine: Machine,
    mut config: RunConfig,
    reporter: &Arc<dyn RunReporter>,
    started: Instant,
) -> RunOutcome {
    let Machine {
        vm,
        devices,
        vcpus,
        console,
        protocol,
        vsock_wake,
        vsock_socket,
        _vsock_dir,
        _forwarder,
    } = machine;
    let stop = Arc::new(StopState::default());
    if let Err(e) = install_kick_handler() {
        stop.stop(ExitReason::VmmError(error_chain(&e)));
    }
    let mut helpers = Vec::new();
    if let Some(wake) = vsock_wake {
        helpers.extend(spawn_vsock_loop(&devices, wake, reporter, &stop));
    }
    if let Some(input) = config.console_input.take() {
        spawn_console_input(input, &devices, &stop, vsock_socket);
    }
    let threads = if stop.flag.load(Ordering::SeqCst) {
        Vec::new()
    } else {
        spawn_vcpu_threads(vcpus, &devices, reporter, &stop)
    };
    let button = config.power_button.take();
    wait_for_stop(&stop, &console, button.as_ref(), started + config.timeout);
    // Kick until every vCPU thread has left KVM_RUN and returned.
    while threads.iter().any(|t| !t.is_finished()) {
        for thread in threads.iter().filter(|t| !t.is_finished()) {
            // The thread may exit between the check and the kill: ESRCH is harmless.
            let _ = thread.kill(kick_signal());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    for thread in threads.into_iter().chain(helpers) {
        let _ = thread.join();
    }
    let duration = started.elapsed();
    drop(vm);
    let mut outcome = collect_outcome(&stop, &console, &protocol, duration);
    if outcome.exit == ExitReason::PowerOff && button.is_some_and(|b| b.pressed_at().is_some()) {
        outcome.exit = ExitReason::PoweredOffOnRequest;
    }
    outcome.first_instruction_at = stop.first_run.get().map(|t| t.duration_since(started));
    outcome
}

/// Waits for a stop reason, a panic on the console, the power button's grace period to
/// run out after a press, or the deadline; raises an unread power-button event again.
fn wait_for_stop(
    stop: &StopState,
    console: &ConsoleCapture,
    button: Option<&PowerButton>,
    deadline: Instant,
) {
    loop {
        if stop.flag.load(Ordering::SeqCst) {
            break;
        }
        if let Some(button) = button {
            if button.grace_expired() {
                stop.stop(ExitReason::ShutdownIgnored {
                    grace: button.grace(),
                });
                break;
            }
            button.repulse();
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
}

fn collect_outcome(
    stop: &StopState,
    console: &ConsoleCapture,
    protocol: &ConsoleCapture,
    duration: Duration,
) -> RunOutcome {
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
    RunOutcome {
        exit,
        console_tail: state.tail(),
        duration,
        first_byte_at: state.first_byte_at,
        first_instruction_at: None,
        events: results.events.clone(),
        ready_at: results.ready_at,
        protocol_errors: results.protocol_errors.clone(),
        device_warnings,
        vmm: VmmKind::Embedded,
    }
}

fn lock_devices(devices: &Mutex<Devices>) -> std::sync::MutexGuard<'_, Devices> {
    devices
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The vsock host loop: poll the device's sockets (and the wake eventfd the device writes
/// on queue notifies), then let the device move bytes.
fn spawn_vsock_loop(
    devices: &Arc<Mutex<Devices>>,
    wake: EventFd,
    reporter: &Arc<dyn RunReporter>,
    stop: &Arc<StopState>,
) -> Option<JoinHandle<()>> {
    let (devices, reporter, stop) = (devices.clone(), reporter.clone(), stop.clone());
    std::thread::Builder::new()
        .name("vsock".into())
        .spawn(move || {
            while !stop.flag.load(Ordering::SeqCst) {
                let interest = lock_devices(&devices).vsock_poll_interest();
                let mut fds: Vec<libc::pollfd> = interest
                    .iter()
                    .map(|i| libc::pollfd {
                        fd: i.fd,
                        events: if i.read { libc::POLLIN } else { 0 }
                            | if i.write { libc::POLLOUT } else { 0 },
                        revents: 0,
                    })
                    .collect();
                fds.push(libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
                // SAFETY: `fds` is a valid, initialized array of `count` pollfd entries that
                // lives across the call; poll(2) only writes their `revents`. A descriptor
                // closed meanwhile reports POLLNVAL, which is harmless.
                unsafe { libc::poll(fds.as_mut_ptr(), count, VSOCK_POLL_MS) };
                let _ = wake.read();
                let mut bus = lock_devices(&devices);
                bus.pump_vsock();
                for warning in bus.take_warnings() {
                    reporter.on_device_warning(&error_chain(&warning));
                }
            }
        })
        .ok()
}

/// Strips the `Ctrl-A` escape from console input: returns the bytes for the guest and
/// whether `Ctrl-A X` was typed (the bytes after it are dropped). `escape` carries a
/// trailing `Ctrl-A` over to the next read.
fn filter_console_input(escape: &mut bool, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(bytes.len());
    for &byte in bytes {
        match (*escape, byte) {
            (false, CTRL_A) => *escape = true,
            (true, b'x' | b'X') => return (out, true),
            (true, other) => {
                *escape = false;
                out.push(other);
            }
            (false, other) => out.push(other),
        }
    }
    (out, false)
}

/// `Ctrl-A X`: ask guest-init for a clean power-off over vsock and give it
/// [`SHUTDOWN_GRACE`]; without vsock (or when the request fails) stop at once.
fn quit(stop: &StopState, socket: Option<&Path>) {
    if let Some(socket) = socket
        && request_poweroff(socket).is_ok()
    {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline && !stop.flag.load(Ordering::SeqCst) {
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    stop.stop(ExitReason::PowerOff);
}

/// Feeds console input into COM1. `Ctrl-A X` powers the guest off (see [`quit`]);
/// `Ctrl-A Ctrl-A` sends one Ctrl-A.
fn spawn_console_input(
    mut input: Box<dyn std::io::Read + Send>,
    devices: &Arc<Mutex<Devices>>,
    stop: &Arc<StopState>,
    socket: Option<PathBuf>,
) {
    let (devices, stop) = (devices.clone(), stop.clone());
    // Detached: a blocking terminal read cannot be interrupted; it ends with the process.
    let _ = std::thread::Builder::new()
        .name("console-input".into())
        .spawn(move || {
            let mut escape = false;
            let mut buffer = [0u8; 64];
            while !stop.flag.load(Ordering::SeqCst) {
                let n = match input.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let (out, quit_requested) = filter_console_input(&mut escape, &buffer[..n]);
                if quit_requested {
                    quit(&stop, socket.as_deref());
                    return;
                }
                let mut pending = out.as_slice();
                while !pending.is_empty() && !stop.flag.load(Ordering::SeqCst) {
                    let taken = devices
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .serial
                        .enqueue_input(pending);
                    pending = &pending[taken..];
                    if taken == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        });
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
    fn console_escape_is_ctrl_a_x() {
        let mut escape = false;
        assert_eq!(
            filter_console_input(&mut escape, b"ls\r"),
            (b"ls\r".to_vec(), false)
        );
        // Ctrl-A Ctrl-A sends one Ctrl-A; a split escape carries over.
        assert_eq!(
            filter_console_input(&mut escape, &[1, 1, b'a', 1]),
            (vec![1, b'a'], false)
        );
        assert!(escape);
        assert_eq!(
            filter_console_input(&mut escape, b"xyz"),
            (Vec::new(), true)
        );
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
