//! `jeos run` on the embedded runner: the image's own kernel, initramfs and command line
//! booted directly under KVM (the disk copy-on-write), the serial console on the terminal
//! (raw mode; `Ctrl-A X` asks guest-init for a clean power-off), `--forward` relayed over
//! virtio-vsock. SIGTERM/SIGINT press the VM's ACPI power button (guest-init stops the
//! services in order and powers off; the runner stops the VM hard after the button's grace
//! period); a second signal more than two seconds later ends the process at once. Nothing but `jeos` and `/dev/kvm` is
//! needed.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use test_vm::runner::{RunnerError, run_embedded};
use test_vm::{NoReporter, PowerButton};

use super::run::{RunArgs, RunCmdError};
use super::{ExitStatus, Session};
use crate::boot::{self, RunOptions};

/// An interactive run has no deadline worth the name (a year).
const INTERACTIVE_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The power button of this process's running VM, for the binary's signal handler.
static ACTIVE_POWER_BUTTON: Mutex<Option<PowerButton>> = Mutex::new(None);

/// A repeat signal this soon after the press is the same stop request delivered twice
/// (GNU `timeout` signals its child and then its whole process group; a service manager
/// may signal the process and its group), not a user asking again.
const REPEAT_SIGNAL_WINDOW: Duration = Duration::from_secs(2);

/// Presses the ACPI power button of the VM `jeos run --vmm embedded` is running: true if
/// the signal is handled that way (the caller then lets the run end by itself), false
/// when no VM runs or the button was pressed more than [`REPEAT_SIGNAL_WINDOW`] ago (the
/// caller then exits at once).
pub fn press_power_button() -> bool {
    let slot = ACTIVE_POWER_BUTTON
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(button) = slot.as_ref() else {
        return false;
    };
    match button.pressed_at() {
        None => button.press().is_ok(),
        Some(at) => at.elapsed() < REPEAT_SIGNAL_WINDOW,
    }
}

/// Registers a button for [`press_power_button`] while it lives.
struct ActivePowerButton;

impl ActivePowerButton {
    fn register(button: &PowerButton) -> Self {
        *ACTIVE_POWER_BUTTON
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(button.clone());
        Self
    }
}

impl Drop for ActivePowerButton {
    fn drop(&mut self) {
        ACTIVE_POWER_BUTTON
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// Puts the terminal in raw mode (`stty raw -echo`) and restores it when dropped, so
/// Ctrl-C and friends reach the guest.
struct RawTerminal {
    saved: Option<String>,
}

impl RawTerminal {
    fn enter() -> Self {
        if !io::stdin().is_terminal() {
            return Self { saved: None };
        }
        let stty = |args: &[&str]| {
            Command::new("stty")
                .env("LC_ALL", "C")
                .args(args)
                .stdin(Stdio::inherit())
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
        };
        let saved = stty(&["-g"]).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if saved.is_some() {
            let _ = stty(&["raw", "-echo"]);
        }
        Self { saved }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = Command::new("stty")
                .env("LC_ALL", "C")
                .arg(saved)
                .stdin(Stdio::inherit())
                .status();
        }
    }
}

pub(super) fn run(
    args: &RunArgs,
    image: &Path,
    session: &mut Session,
) -> miette::Result<ExitStatus> {
    let scratch = tempfile::Builder::new()
        .prefix("jeos-run-")
        .tempdir()
        .map_err(|source| RunCmdError::Prepare {
            path: std::env::temp_dir(),
            source,
        })?;
    let mut options = RunOptions::new(scratch.path().join("console.log"));
    options.memory_mib = args.memory;
    options.vcpus = args.cpus;
    options.smoke_test = false;
    options.timeout = INTERACTIVE_TIMEOUT;
    let mut config =
        boot::prepare_run(image, scratch.path(), &options).map_err(RunCmdError::from)?;
    config.port_forwards = args.forward.clone();
    let socket = scratch.path().join("vsock");
    config.vsock_socket = Some(socket.clone());
    config.echo_console = Some(Box::new(io::stdout()));
    config.console_input = Some(Box::new(io::stdin()));
    let button = PowerButton::default();
    config.power_button = Some(button.clone());
    if !session.global.quiet {
        let p = &mut session.printer;
        p.stderr_line(&format!(
            "Booting {} with the embedded runner (KVM, direct kernel boot, {} MiB, {} vCPU); the image is not modified",
            image.display(),
            args.memory,
            args.cpus
        ));
        for f in &args.forward {
            p.stderr_line(&format!(
                "  forward   127.0.0.1:{} -> guest port {} (vsock)",
                f.host, f.guest
            ));
        }
        p.stderr_line(&format!(
            "  vsock     {} (CONNECT <port>)",
            socket.display()
        ));
        p.stderr_line("  quit      Ctrl-A X   (clean power-off)");
        p.stderr_line(&format!(
            "  stop      SIGTERM    (ACPI power button; hard stop after {} s)",
            button.grace().as_secs()
        ));
    }
    let raw = RawTerminal::enter();
    let registered = ActivePowerButton::register(&button);
    let result = run_embedded(config, Arc::new(NoReporter));
    drop(registered);
    drop(raw);
    let outcome = result.map_err(|e| match e {
        RunnerError::Forward(test_vm::forward::ForwardError::Bind { port, source }) => {
            RunCmdError::PortBusy { port, source }
        }
        other => RunCmdError::Embedded(other),
    })?;
    let clean = outcome.exit.is_clean();
    if !session.global.quiet || !clean {
        session.printer.stderr_line(&format!(
            "{}the VM stopped: {} after {:.1} s",
            if clean { "" } else { "error: " },
            outcome.exit,
            outcome.duration.as_secs_f64()
        ));
    }
    Ok(if clean {
        ExitStatus::Success
    } else {
        ExitStatus::Error
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_stop_signal_presses_once_and_a_late_one_gives_up() {
        assert!(!press_power_button(), "no VM runs: the signal exits");
        let button = PowerButton::new(Duration::from_secs(20));
        let registered = ActivePowerButton::register(&button);
        assert!(press_power_button(), "the first signal presses the button");
        let first = button.pressed_at().expect("pressed");
        // `timeout` sends the child SIGTERM and then its process group SIGTERM: the copy
        // is not a second request.
        assert!(press_power_button());
        assert_eq!(button.pressed_at(), Some(first));
        std::thread::sleep(REPEAT_SIGNAL_WINDOW);
        assert!(!press_power_button(), "a later signal exits at once");
        drop(registered);
        assert!(!press_power_button());
    }
}
