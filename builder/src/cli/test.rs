//! `jeos test`: boot a built image with the smoke test on and report every check.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use miette::Diagnostic;
use test_vm::{PowerButton, RunConfig, RunError, RunOutcome, RunReporter, Vmm, VmmKind};

use super::{ExitStatus, Session, test_target};
use crate::boot::{self, BootError, CheckResult, RunOptions};
use crate::host_check::{GuestDoneReporter, HostChecks};
use crate::ovf_hardware;
use crate::reporters::UiRunReporter;

/// `--vmm`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmmChoice {
    /// The embedded KVM runner when /dev/kvm can boot Linux, else QEMU.
    Auto,
    /// The embedded KVM runner.
    Embedded,
    /// qemu-system-x86_64 (KVM when usable, else TCG).
    Qemu,
}

impl From<VmmChoice> for Vmm {
    fn from(choice: VmmChoice) -> Self {
        match choice {
            VmmChoice::Auto => Vmm::Auto,
            VmmChoice::Embedded => Vmm::Embedded,
            VmmChoice::Qemu => Vmm::Qemu,
        }
    }
}

/// `--boot`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootChoice {
    /// Load the kernel and initramfs from the image's ESP directly (both VMMs).
    Direct,
    /// QEMU boots the whole disk through SeaBIOS or OVMF (the OVF's firmware).
    Firmware,
}

/// `jeos test`
#[derive(Debug, Args)]
pub struct TestArgs {
    /// A recipe (built first when needed), an appliance directory, `dist/` (every
    /// appliance in it), or a `.raw`, `.qcow2`, `.vmdk` or `.ova` image.
    #[arg(value_name = "TARGET")]
    pub image: PathBuf,
    /// Which virtual machine monitor boots the image.
    #[arg(long, value_enum, default_value_t = VmmChoice::Auto)]
    pub vmm: VmmChoice,
    /// Give up after this long (`180s`, `3m`).
    #[arg(long, value_name = "DURATION", default_value = "180s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write the results as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Stream the serial console to stderr (also with `--verbose`).
    #[arg(long)]
    pub console: bool,
    /// Guest memory (`512MiB`, `1GiB`) [default: the OVF's, i.e. the recipe's `[vm] memory`].
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_mib)]
    pub memory: Option<u64>,
    /// Virtual CPUs [default: the OVF's, i.e. the recipe's `[vm] cpus`].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: Option<u32>,
    /// How the VM boots: `direct` (kernel and initramfs from the ESP) or `firmware` (QEMU
    /// boots the disk through the OVF's firmware, NIC and disk controller).
    #[arg(long, value_enum, default_value_t = BootChoice::Direct)]
    pub boot: BootChoice,
    /// Keep the console log at FILE [default: `<image>.console.log` beside the image].
    #[arg(long, value_name = "FILE")]
    pub keep_log: Option<PathBuf>,
}

/// `180s`, `3m`, `500ms`, `90` (seconds): [`crate::recipe::parse_duration`], not zero.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    crate::recipe::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}` is not a positive duration like `180s` or `3m`"))
}

/// `512MiB`, `1GiB`, `512M`, `512` (MiB).
pub(super) fn parse_memory_mib(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(end);
    let bad = || format!("`{text}` is not a memory size like `512MiB` or `1GiB`");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mib = match unit.trim() {
        "" | "M" | "MiB" => Some(n),
        "G" | "GiB" => n.checked_mul(1024),
        _ => None,
    }
    .ok_or_else(bad)?;
    if !(64..=1024 * 1024).contains(&mib) {
        return Err(format!("`{text}`: memory must be between 64MiB and 1TiB"));
    }
    Ok(mib)
}

/// Why `jeos test` could not run the test (exit 2).
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum TestError {
    /// Finding or preparing the image failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Boot(#[from] BootError),
    /// No work directory.
    #[error("cannot create a temporary directory")]
    TempDir(#[source] io::Error),
    /// The VM could not be started.
    #[error("cannot boot `{}`", .image.display())]
    #[diagnostic(help(
        "`--vmm qemu` needs qemu-system-x86_64 (Debian: qemu-system-x86); the embedded runner needs a usable /dev/kvm"
    ))]
    Run {
        /// The image.
        image: PathBuf,
        /// The cause.
        #[source]
        source: RunError,
    },
    /// No free port on 127.0.0.1 for the host checks' forwards.
    #[error("cannot pick a free port on 127.0.0.1 for the host checks")]
    HostPorts(#[source] io::Error),
    /// `--boot firmware` with `--vmm embedded`.
    #[error("the embedded runner boots the kernel directly; `--boot firmware` needs QEMU")]
    #[diagnostic(help("use `--vmm qemu --boot firmware`, or `--boot direct`"))]
    FirmwareNeedsQemu,
    /// Writing the JUnit file failed.
    #[error("cannot write `{}`", .path.display())]
    WriteJunit {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Gives QEMU the NIC and disk controller the OVF declares (the nearest it emulates, with a
/// note when that differs), and for `--boot firmware` the OVF's firmware; returns the VMM.
fn shipped_hardware(
    args: &TestArgs,
    hardware: &ovf_hardware::OvfHardware,
    config: &mut test_vm::RunConfig,
    session: &mut Session,
) -> Result<Vmm, TestError> {
    let (nic, nic_note) = ovf_hardware::qemu_nic(hardware.nic.as_deref());
    let (disk_bus, disk_note) = ovf_hardware::qemu_disk_bus(hardware.disk_controller.as_deref());
    config.nic = nic;
    config.disk_bus = disk_bus;
    let mut vmm: Vmm = args.vmm.into();
    if args.boot == BootChoice::Firmware {
        if args.vmm == VmmChoice::Embedded {
            return Err(TestError::FirmwareNeedsQemu);
        }
        vmm = Vmm::Qemu;
        config.firmware = Some(hardware.firmware.unwrap_or(test_vm::Firmware::Bios));
    }
    let uses_qemu = vmm == Vmm::Qemu || !test_vm::check_host().can_boot_linux();
    if uses_qemu && !session.global.quiet {
        for note in [nic_note, disk_note].into_iter().flatten() {
            session.printer.stderr_line(&format!("note: {note}"));
        }
    }
    Ok(vmm)
}

/// `<image>.console.log` beside the image if it can be created there, else in a kept
/// temporary directory.
fn default_log(image: &Path) -> Result<PathBuf, TestError> {
    let beside = image.with_extension("console.log");
    if std::fs::File::create(&beside).is_ok() {
        return Ok(beside);
    }
    let dir = tempfile::Builder::new()
        .prefix("jeos-test-")
        .tempdir()
        .map_err(TestError::TempDir)?
        .keep();
    Ok(dir.join("console.log"))
}

/// `jeos test`: every image the argument stands for (see `test_target`), one after the
/// other; the exit status is the worst of them.
pub(super) fn test(args: &TestArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let images = if test_target::is_recipe(&args.image) {
        match test_target::recipe_images(&args.image, session)? {
            Some(images) => images,
            None => return Ok(ExitStatus::Error),
        }
    } else {
        test_target::images_of(&args.image)?
    };
    let mut worst = ExitStatus::Success;
    let mut failed = Vec::new();
    for image in &images {
        let status = test_image(args, image, session)?;
        if status != ExitStatus::Success {
            failed.push(image.name.clone());
            worst = status;
        }
    }
    if images.len() > 1 && !session.global.json {
        session.printer.stdout_line(&format!(
            "Tested {} appliances: {} passed{}",
            images.len(),
            images.len() - failed.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(", failed: {}", failed.join(", "))
            }
        ));
    }
    Ok(worst)
}

/// Runs the VM; with host checks, runs them on the host once the guest reports `done`
/// and then presses the power button, which releases the guest (see `host_check`).
fn run_with_host_checks(
    vmm: Vmm,
    mut config: RunConfig,
    reporter: Arc<dyn RunReporter>,
    host_checks: &HostChecks,
) -> Result<(RunOutcome, Vec<CheckResult>), RunError> {
    if host_checks.is_empty() {
        return test_vm::run(vmm, config, reporter).map(|outcome| (outcome, Vec::new()));
    }
    let button = PowerButton::default();
    config.power_button = Some(button.clone());
    let (turn, wait) = mpsc::channel();
    let reporter = Arc::new(GuestDoneReporter::new(reporter, turn.clone()));
    std::thread::scope(|scope| {
        let host = scope.spawn(move || {
            // `true`: the guest is done with its checks; `false`: the run ended first.
            if wait.recv() == Ok(true) {
                let results = host_checks.run();
                // A failed interrupt write leaves the event pending; the runner raises it
                // again, and the run's timeout still bounds the wait.
                let _ = button.press();
                Some(results)
            } else {
                None
            }
        });
        let outcome = test_vm::run(vmm, config, reporter);
        let _ = turn.send(false);
        // Not run (the guest never finished its own checks): the summary counts them as
        // not run and says why the run failed.
        let results = host.join().ok().flatten().unwrap_or_default();
        outcome.map(|outcome| (outcome, results))
    })
}

fn test_image(
    args: &TestArgs,
    target: &test_target::TestImage,
    session: &mut Session,
) -> miette::Result<ExitStatus> {
    let image = target.raw.clone();
    let name = target.name.clone();
    let console_log = match &args.keep_log {
        Some(path) => path.clone(),
        None => default_log(&target.origin)?,
    };
    let work = tempfile::Builder::new()
        .prefix("jeos-boot-")
        .tempdir()
        .map_err(TestError::TempDir)?;
    let (hardware, ovf) = ovf_hardware::read_beside(&target.ovf_near);
    let mut options = RunOptions::new(console_log.clone());
    options.memory_mib = args
        .memory
        .or(hardware.memory_mib)
        .unwrap_or(boot::DEFAULT_MEMORY_MIB);
    options.vcpus = args.cpus.or(hardware.cpus).unwrap_or(boot::DEFAULT_CPUS);
    options.timeout = args.timeout;
    let mut config = boot::prepare_run(&image, work.path(), &options).map_err(TestError::from)?;
    let vmm = shipped_hardware(args, &hardware, &mut config, session)?;
    let image_config = super::test_counts::image_config(&image);
    let host_checks = HostChecks::prepare(
        image_config
            .as_ref()
            .map(|c| c.host_checks.clone())
            .unwrap_or_default(),
    )
    .map_err(TestError::HostPorts)?;
    config
        .port_forwards
        .extend_from_slice(host_checks.forwards());
    if args.console || session.global.verbose {
        config.echo_console = Some(Box::new(io::stderr()));
    }
    if !session.global.quiet {
        session.printer.stderr_line(&format!(
            "Testing {} ({} MiB, {} vCPU{}, {} boot, timeout {} s)",
            image.display(),
            options.memory_mib,
            options.vcpus,
            if ovf.is_some() {
                " as its OVF declares"
            } else {
                ""
            },
            match args.boot {
                BootChoice::Direct => "direct kernel",
                BootChoice::Firmware => "firmware",
            },
            args.timeout.as_secs()
        ));
    }
    let reporter = Arc::new(UiRunReporter::new(Arc::clone(&session.ui)));
    let (outcome, host_results) = run_with_host_checks(vmm, config, reporter, &host_checks)
        .map_err(|source| TestError::Run {
            image: image.clone(),
            source,
        })?;
    let mut summary = boot::summarize(&name, &outcome);
    boot::add_host_checks(&mut summary, host_results);
    if let Some(path) = &args.junit {
        std::fs::write(path, boot::render_junit(&summary)).map_err(|source| {
            TestError::WriteJunit {
                path: path.clone(),
                source,
            }
        })?;
    }
    let console = std::fs::read(&console_log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| outcome.console_tail.clone());
    let planned = super::test_counts::planned_checks(image_config.as_ref());
    if session.global.json {
        let mut value = serde_json::to_value(&summary).expect("the summary serialises");
        value["not_run"] =
            serde_json::json!(super::test_counts::not_run(summary.checks.len(), planned));
        value["image"] = serde_json::json!(target.origin.display().to_string());
        value["console_log"] = serde_json::json!(console_log.display().to_string());
        value["vmm"] = serde_json::json!(match outcome.vmm {
            VmmKind::Embedded => "embedded",
            VmmKind::Qemu => "qemu",
        });
        session
            .printer
            .stdout_line(&serde_json::json!({ "test": value }).to_string());
    } else {
        if !summary.checks.is_empty() {
            session
                .printer
                .stdout_line(boot::render_table(&summary).trim_end());
        }
        if let Some(phases) = &summary.boot {
            session.printer.stdout_line(&phases.render());
        }
        let passed = summary.checks.iter().filter(|c| c.passed).count();
        let ready = summary
            .ready_ms
            .map(|ms| format!(", ready {:.1} s after boot", ms as f64 / 1000.0))
            .unwrap_or_default();
        let verdict = if summary.passed {
            session.printer.paint("32", "passed")
        } else {
            session.printer.paint("31", "FAILED")
        };
        let counted =
            super::test_counts::counted(passed, summary.checks.len(), planned, summary.passed);
        session.printer.stdout_line(&format!(
            "{name}: {verdict}: {counted}{ready}, VM {} after {:.1} s",
            summary.exit,
            summary.duration_ms as f64 / 1000.0
        ));
    }
    for warning in &outcome.device_warnings {
        session.printer.stderr_line(&format!("warning: {warning}"));
    }
    if !summary.passed {
        let reason = summary.failure.clone().unwrap_or_else(|| {
            let failed: Vec<String> = summary
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("`{}`: {}", c.name, c.detail))
                .collect();
            format!("check failed: {}", failed.join("; "))
        });
        session.printer.stderr_line(&format!("error: {reason}"));
        if !(args.console || session.global.verbose) {
            session.printer.stderr_line("last console lines:");
            for line in boot::console_tail(&console, 20) {
                session.printer.stderr_line(&format!("  | {line}"));
            }
        }
    }
    if !session.global.quiet {
        session
            .printer
            .stderr_line(&format!("console log: {}", console_log.display()));
    }
    Ok(if summary.passed {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("180s"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_memory_mib("512MiB"), Ok(512));
        assert_eq!(parse_memory_mib("1GiB"), Ok(1024));
        assert!(parse_memory_mib("12").is_err());
        assert!(parse_memory_mib("1TB").is_err());
    }
}
