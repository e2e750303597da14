//! The common run API of both backends: [`RunConfig`] in, [`RunOutcome`] out, a
//! [`RunReporter`] for live events.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use guest_init::protocol::{CheckStatus, Event};

/// Kernel command-line flag that makes guest-init run the smoke test.
pub const SMOKE_TEST_FLAG: &str = "jeos.test=1";
/// Kernel command-line flag naming the protocol channel (the second serial port, COM2,
/// which both backends attach): results travel there, never on the console.
pub const PROTOCOL_FLAG: &str = "jeos.protocol=/dev/ttyS1";
/// Kernel command-line flag telling guest-init the machine has no NIC (the embedded
/// runner has none), so an appliance asking for DHCP does not wait for one.
pub const NO_NIC_FLAG: &str = "jeos.nic=none";

/// Firmware for a QEMU whole-disk boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS.
    Bios,
    /// OVMF (UEFI).
    Efi,
}

/// The network adapter QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    /// virtio-net (PCI).
    Virtio,
    /// Intel 82540EM (`e1000`).
    E1000,
    /// Intel 82574L (`e1000e`).
    E1000e,
    /// VMware vmxnet3.
    Vmxnet3,
}

impl NicModel {
    /// QEMU's `-device` name.
    #[must_use]
    pub fn qemu_device(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Vmxnet3 => "vmxnet3",
        }
    }
}

/// The disk controller QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk (PCI).
    Virtio,
    /// The q35 machine's ICH9 AHCI (SATA) controller.
    Ahci,
    /// VMware PVSCSI.
    Pvscsi,
}

/// Kernel command-line flag listing the guest ports guest-init relays from vsock (the
/// embedded runner's forwarding), e.g. `jeos.forward=80,443`.
pub const FORWARD_FLAG: &str = "jeos.forward";

/// Kernel command-line flag telling guest-init a vsock device exists (it then accepts
/// shutdown requests on its control port).
pub const VSOCK_FLAG: &str = "jeos.vsock=1";

/// A host TCP port forwarded to a guest port (QEMU user networking, or vsock and
/// guest-init's relay in the embedded runner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    /// Host port on 127.0.0.1.
    pub host: u16,
    /// Guest port.
    pub guest: u16,
}

/// One VM run (user input; validated when the backend starts).
pub struct RunConfig {
    /// bzImage; required for direct kernel boot (always for the embedded runner).
    pub kernel: Option<PathBuf>,
    /// initramfs (cpio) for direct kernel boot.
    pub initramfs: Option<PathBuf>,
    /// Kernel command line for direct kernel boot.
    pub cmdline: String,
    /// Append [`SMOKE_TEST_FLAG`] to the command line.
    pub smoke_test: bool,
    /// Disk image; attached copy-on-write, never modified.
    pub disk: Option<PathBuf>,
    /// Present the disk read-only to the guest (writes fail with an IO error).
    pub read_only_disk: bool,
    /// Guest RAM.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Hard wall-clock limit.
    pub timeout: Duration,
    /// Where the whole serial console is written.
    pub console_log: PathBuf,
    /// Also copy console bytes here (for `jeos run --console`).
    pub echo_console: Option<Box<dyn Write + Send>>,
    /// Host → guest TCP forwards on 127.0.0.1 (QEMU: user networking; embedded runner:
    /// vsock, with guest-init relaying to the guest port).
    pub port_forwards: Vec<PortForward>,
    /// Embedded runner: the vsock device's host socket (Firecracker's hybrid model:
    /// connect and send `CONNECT <port>\n`; guest connections to port P go to
    /// `<socket>_<P>`). With forwards but no socket, a temporary one is used.
    pub vsock_socket: Option<PathBuf>,
    /// Embedded runner: bytes typed on the console (the guest's serial input).
    pub console_input: Option<Box<dyn std::io::Read + Send>>,
    /// Embedded runner: the ACPI power button; keep a clone and
    /// [`press`](crate::devices::ged::PowerButton::press) it to ask the guest for a clean
    /// shutdown (the exit is then [`ExitReason::PoweredOffOnRequest`], or
    /// [`ExitReason::ShutdownIgnored`] after the button's grace period).
    pub power_button: Option<crate::devices::ged::PowerButton>,
    /// QEMU only: boot the whole disk through firmware instead of direct kernel boot.
    pub firmware: Option<Firmware>,
    /// QEMU only: the network adapter (the embedded runner has none).
    pub nic: NicModel,
    /// QEMU only: the disk controller (the embedded runner has virtio-mmio).
    pub disk_bus: DiskBus,
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunConfig")
            .field("kernel", &self.kernel)
            .field("initramfs", &self.initramfs)
            .field("cmdline", &self.cmdline)
            .field("disk", &self.disk)
            .field("memory_mib", &self.memory_mib)
            .field("vcpus", &self.vcpus)
            .field("timeout", &self.timeout)
            .field("firmware", &self.firmware)
            .field("nic", &self.nic)
            .field("disk_bus", &self.disk_bus)
            .finish_non_exhaustive()
    }
}

impl RunConfig {
    /// A direct-kernel-boot config with 256 MiB, one vCPU and a 60 s timeout.
    #[must_use]
    pub fn new(kernel: PathBuf, cmdline: &str, console_log: PathBuf) -> Self {
        Self {
            kernel: Some(kernel),
            initramfs: None,
            cmdline: cmdline.to_owned(),
            smoke_test: false,
            disk: None,
            read_only_disk: false,
            memory_mib: 256,
            vcpus: 1,
            timeout: Duration::from_secs(60),
            console_log,
            echo_console: None,
            port_forwards: Vec::new(),
            vsock_socket: None,
            console_input: None,
            power_button: None,
            firmware: None,
            nic: NicModel::Virtio,
            disk_bus: DiskBus::Virtio,
        }
    }

    /// The command line actually passed to the kernel: the image's, plus the protocol
    /// channel, plus [`SMOKE_TEST_FLAG`] for a smoke test, plus [`NO_NIC_FLAG`] when the
    /// backend gives the machine no NIC (each once).
    #[must_use]
    pub fn effective_cmdline(&self, no_nic: bool) -> String {
        let mut words: Vec<&str> = self.cmdline.split_whitespace().collect();
        let mut add = |flag: &'static str, wanted: bool| {
            if wanted && !words.contains(&flag) {
                words.push(flag);
            }
        };
        add(PROTOCOL_FLAG, true);
        add(SMOKE_TEST_FLAG, self.smoke_test);
        add(NO_NIC_FLAG, no_nic);
        words.join(" ")
    }

    /// `jeos.forward=<guest ports>` for the embedded runner, if anything is forwarded.
    #[must_use]
    pub fn forward_flag(&self) -> Option<String> {
        let mut ports: Vec<u16> = self.port_forwards.iter().map(|f| f.guest).collect();
        ports.sort_unstable();
        ports.dedup();
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        (!list.is_empty()).then(|| format!("{FORWARD_FLAG}={}", list.join(",")))
    }
}

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// ACPI S5 (or QEMU guest shutdown).
    PowerOff,
    /// ACPI S5 after the host pressed the power button: a clean shutdown on request.
    PoweredOffOnRequest,
    /// The guest did not power off within `grace` of the power-button press and was
    /// stopped hard.
    ShutdownIgnored {
        /// The grace period it had.
        grace: Duration,
    },
    /// The guest reset the machine (i8042, ACPI reset register).
    Reset,
    /// The wall-clock timeout expired.
    Timeout,
    /// "Kernel panic" appeared on the console.
    Panic,
    /// The CPU triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// The VMM itself failed or hit an exit it cannot handle; the text says which.
    VmmError(String),
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::PowerOff => f.write_str("power off"),
            ExitReason::PoweredOffOnRequest => {
                f.write_str("powered off on request (ACPI power button)")
            }
            ExitReason::ShutdownIgnored { grace } => write!(
                f,
                "no power-off within {:.1} s of the ACPI power-button press: stopped hard",
                grace.as_secs_f64()
            ),
            ExitReason::Reset => f.write_str("reset"),
            ExitReason::Timeout => f.write_str("timeout"),
            ExitReason::Panic => f.write_str("kernel panic"),
            ExitReason::TripleFault => f.write_str("triple fault"),
            ExitReason::VmmError(message) => write!(f, "vmm error: {message}"),
        }
    }
}

impl ExitReason {
    /// A clean end: the guest powered off (on its own or on request) or reset.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            ExitReason::PowerOff | ExitReason::PoweredOffOnRequest | ExitReason::Reset
        )
    }
}

/// Which backend ran the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmKind {
    /// This crate's KVM runner.
    Embedded,
    /// qemu-system-x86_64.
    Qemu,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Why it stopped.
    pub exit: ExitReason,
    /// Last console bytes (up to 16 KiB), lossily decoded.
    pub console_tail: String,
    /// Wall-clock time from start to exit.
    pub duration: Duration,
    /// Time from start to the first console byte.
    pub first_byte_at: Option<Duration>,
    /// Time from start to the first `KVM_RUN` of the boot vCPU, i.e. the first guest
    /// instruction (embedded runner only).
    pub first_instruction_at: Option<Duration>,
    /// Smoke-test protocol events, in order (from the protocol channel only).
    pub events: Vec<Event>,
    /// When (since the VMM started) the `ready` event arrived.
    pub ready_at: Option<Duration>,
    /// Malformed protocol lines (the line and the parse error).
    pub protocol_errors: Vec<String>,
    /// Device problems the guest caused (driver rule violations), rendered.
    pub device_warnings: Vec<String>,
    /// Which backend ran.
    pub vmm: VmmKind,
}

impl RunOutcome {
    /// True if the guest reported `done` with no failed check, no `error` event, no malformed
    /// protocol line, and shut down or reset cleanly.
    #[must_use]
    pub fn passed(&self) -> bool {
        let clean_exit = self.exit.is_clean();
        let done_ok = self
            .events
            .iter()
            .any(|e| matches!(e, Event::Done { failed: 0, .. }));
        let failures = self.events.iter().any(|e| {
            matches!(
                e,
                Event::Error { .. }
                    | Event::Check {
                        status: CheckStatus::Fail,
                        ..
                    }
            )
        });
        clean_exit && done_ok && !failures && self.protocol_errors.is_empty()
    }
}

/// Live events of a run. All methods have no-op defaults.
pub trait RunReporter: Send + Sync {
    /// The backend was chosen (by [`crate::Vmm::Auto`] or explicitly), and why.
    fn on_vmm_selected(&self, _vmm: VmmKind, _reason: &str) {}
    /// One complete console line (without the line end).
    fn on_console_line(&self, _line: &str) {}
    /// One smoke-test protocol event.
    fn on_protocol_event(&self, _event: &Event) {}
    /// A device problem caused by the guest (the run continues).
    fn on_device_warning(&self, _warning: &str) {}
}

/// A reporter that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReporter;

impl RunReporter for NoReporter {}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(exit: ExitReason, events: Vec<Event>) -> RunOutcome {
        RunOutcome {
            exit,
            console_tail: String::new(),
            duration: Duration::ZERO,
            first_byte_at: None,
            first_instruction_at: None,
            events,
            ready_at: None,
            protocol_errors: Vec::new(),
            device_warnings: Vec::new(),
            vmm: VmmKind::Embedded,
        }
    }

    #[test]
    fn passed_needs_done_without_failures_and_clean_exit() {
        let done = Event::Done {
            passed: 1,
            failed: 0,
        };
        assert!(outcome(ExitReason::PowerOff, vec![done.clone()]).passed());
        assert!(!outcome(ExitReason::Timeout, vec![done.clone()]).passed());
        assert!(!outcome(ExitReason::PowerOff, vec![]).passed());
        let error = Event::Error { detail: "x".into() };
        assert!(!outcome(ExitReason::PowerOff, vec![error, done]).passed());
        let failed = Event::Done {
            passed: 0,
            failed: 1,
        };
        assert!(!outcome(ExitReason::Reset, vec![failed]).passed());
    }

    #[test]
    fn exit_reasons_say_whether_they_are_clean() {
        assert!(ExitReason::PoweredOffOnRequest.is_clean());
        assert!(ExitReason::PowerOff.is_clean());
        let ignored = ExitReason::ShutdownIgnored {
            grace: Duration::from_millis(1500),
        };
        assert!(!ignored.is_clean());
        assert_eq!(
            ignored.to_string(),
            "no power-off within 1.5 s of the ACPI power-button press: stopped hard"
        );
        assert!(!ExitReason::Panic.is_clean());
    }

    #[test]
    fn forward_flag_lists_each_guest_port_once() {
        let mut config = RunConfig::new("k".into(), "", "log".into());
        assert_eq!(config.forward_flag(), None);
        config.port_forwards = vec![
            PortForward {
                host: 8443,
                guest: 443,
            },
            PortForward {
                host: 8080,
                guest: 80,
            },
            PortForward {
                host: 8081,
                guest: 80,
            },
        ];
        assert_eq!(
            config.forward_flag().as_deref(),
            Some("jeos.forward=80,443")
        );
    }

    #[test]
    fn flags_are_appended_once() {
        let mut config = RunConfig::new("k".into(), "console=ttyS0", "log".into());
        assert_eq!(
            config.effective_cmdline(false),
            "console=ttyS0 jeos.protocol=/dev/ttyS1"
        );
        config.smoke_test = true;
        assert_eq!(
            config.effective_cmdline(true),
            "console=ttyS0 jeos.protocol=/dev/ttyS1 jeos.test=1 jeos.nic=none"
        );
        config.cmdline = "jeos.test=1 quiet".into();
        assert_eq!(
            config.effective_cmdline(false),
            "jeos.test=1 quiet jeos.protocol=/dev/ttyS1"
        );
    }
}
