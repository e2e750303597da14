//! `jeos run` on the embedded runner: the image's own kernel, initramfs and command line
//! booted directly under KVM (the disk copy-on-write), the serial console on the terminal
//! (raw mode; `Ctrl-A X` asks guest-init for a clean power-off), `--forward` relayed over
//! virtio-vsock. Nothing but `jeos` and `/dev/kvm` is needed.

use std::io::{self, IsTerminal};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use test_vm::runner::{RunnerError, run_embedded};
use test_vm::{ExitReason, NoReporter};

use super::run::{RunArgs, RunCmdError};
use super::{ExitStatus, Session};
use crate::boot::{self, RunOptions};

/// An interactive run has no deadline worth the name (a year).
const INTERACTIVE_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

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
    }
    let raw = RawTerminal::enter();
    let result = run_embedded(config, Arc::new(NoReporter));
    drop(raw);
    let outcome = result.map_err(|e| match e {
        RunnerError::Forward(test_vm::forward::ForwardError::Bind { port, source }) => {
            RunCmdError::PortBusy { port, source }
        }
        other => RunCmdError::Embedded(other),
    })?;
    let clean = matches!(outcome.exit, ExitReason::PowerOff | ExitReason::Reset);
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
