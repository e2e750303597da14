//! Booting built images for `jeos test` and `jeos run`: extract the boot files from the
//! image's EFI system partition into a work directory, build the [`RunConfig`], and render
//! smoke-test results as a table, JSON or JUnit XML.
//!
//! The image itself is attached copy-on-write by both backends (QEMU `snapshot=on`, the
//! embedded runner's overlay), so testing never modifies the artifact.

use std::path::{Path, PathBuf};
use std::time::Duration;

use guest_init::protocol::{CheckStatus, Event};
use image_writer::esp::{EspError, read_boot_files};
use test_vm::{ExitReason, RunConfig, RunOutcome};

use crate::recipe::CheckFrom;

/// Defaults of `jeos test` / `jeos run`.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// Default vCPUs.
pub const DEFAULT_CPUS: u32 = 1;
/// Default `jeos test` timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// Errors of [`find_image`] and [`prepare_run`].
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BootError {
    /// The image path does not exist.
    #[error("`{}` does not exist", .path.display())]
    #[diagnostic(help(
        "pass the `.raw` image or the `DIR/<name>-<version>/` directory `jeos build` wrote"
    ))]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A directory without exactly one `.raw` image.
    #[error("`{}` holds {count} `.raw` images, expected one", .path.display())]
    #[diagnostic(help("pass the `.raw` file itself"))]
    NoSingleImage {
        /// The directory.
        path: PathBuf,
        /// How many were found.
        count: usize,
    },
    /// A directory could not be listed.
    #[error("cannot list `{}`", .path.display())]
    ListDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The boot files could not be read from the image.
    #[error("cannot read the boot files from `{}`", .image.display())]
    #[diagnostic(help("is this a disk image written by `jeos build`?"))]
    Esp {
        /// The image.
        image: PathBuf,
        /// The cause.
        #[source]
        source: EspError,
    },
    /// Writing the extracted kernel or initramfs failed.
    #[error("cannot write `{}`", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Accepts the `.raw` image or the `DIR/<name>-<version>/` directory holding it.
///
/// # Errors
/// [`BootError::Missing`], [`BootError::NoSingleImage`], [`BootError::ListDir`].
pub fn find_image(path: &Path) -> Result<PathBuf, BootError> {
    if path.is_file() {
        return Ok(path.to_owned());
    }
    if !path.is_dir() {
        return Err(BootError::Missing {
            path: path.to_owned(),
        });
    }
    let list = |source| BootError::ListDir {
        path: path.to_owned(),
        source,
    };
    let mut raws = Vec::new();
    for entry in std::fs::read_dir(path).map_err(list)? {
        let entry = entry.map_err(list)?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "raw") && p.is_file() {
            raws.push(p);
        }
    }
    if raws.len() == 1 {
        Ok(raws.remove(0))
    } else {
        Err(BootError::NoSingleImage {
            path: path.to_owned(),
            count: raws.len(),
        })
    }
}

/// What a run needs beyond the image.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Where the console is written.
    pub console_log: PathBuf,
    /// Run the appliance's checks (`jeos.test=1`).
    pub smoke_test: bool,
}

impl RunOptions {
    /// Defaults: 512 MiB, 1 vCPU, 180 s, smoke test on.
    #[must_use]
    pub fn new(console_log: PathBuf) -> Self {
        Self {
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: DEFAULT_CPUS,
            timeout: DEFAULT_TIMEOUT,
            console_log,
            smoke_test: true,
        }
    }
}

/// Extracts the kernel and initramfs of `image` into `work` and returns a direct-boot
/// config with the image's own command line and the image as the (copy-on-write) disk.
///
/// # Errors
/// [`BootError::Esp`] when the image's boot files cannot be read, [`BootError::Write`].
pub fn prepare_run(image: &Path, work: &Path, opts: &RunOptions) -> Result<RunConfig, BootError> {
    let files = read_boot_files(image).map_err(|source| BootError::Esp {
        image: image.to_owned(),
        source,
    })?;
    let write = |name: &str, bytes: &[u8]| {
        let path = work.join(name);
        std::fs::write(&path, bytes).map_err(|source| BootError::Write {
            path: path.clone(),
            source,
        })?;
        Ok::<_, BootError>(path)
    };
    let kernel = write("vmlinuz", &files.kernel)?;
    let initramfs = if files.initramfs.is_empty() {
        None
    } else {
        Some(write("initrd.img", &files.initramfs)?)
    };
    let mut config = RunConfig::new(kernel, &files.cmdline, opts.console_log.clone());
    config.initramfs = initramfs;
    config.smoke_test = opts.smoke_test;
    config.disk = Some(image.to_owned());
    config.memory_mib = opts.memory_mib;
    config.vcpus = opts.vcpus;
    config.timeout = opts.timeout;
    Ok(config)
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Passed?
    pub passed: bool,
    /// Milliseconds it took.
    pub ms: u64,
    /// What it saw or why it failed.
    pub detail: String,
    /// Run by guest-init in the guest, or by `jeos test` on the host (`from = "host"`).
    pub from: CheckFrom,
}

/// The boot phases the `ready` event reported (milliseconds since the kernel started), and
/// when the host saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BootPhasesReport {
    /// The initramfs's `/init` started.
    pub initramfs_ms: u64,
    /// The root filesystem was switched to (PID 1 started there).
    pub root_switched_ms: u64,
    /// Every service was started.
    pub services_started_ms: u64,
    /// Every service was ready.
    pub ready_ms: u64,
    /// Online CPUs the guest saw.
    pub cpus: u32,
    /// From the VMM's start to the host receiving `ready`.
    pub vmm_start_to_ready_ms: Option<u64>,
}

impl BootPhasesReport {
    /// `kernel 0 → initramfs 812 → root 1510 → services 1600 → ready 2100 ms, 2 CPUs`.
    #[must_use]
    pub fn render(&self) -> String {
        let mut line = format!(
            "boot phases: kernel 0 → initramfs {} → root switched {} → services started {} → ready {} ms; the guest saw {} CPU{}",
            self.initramfs_ms,
            self.root_switched_ms,
            self.services_started_ms,
            self.ready_ms,
            self.cpus,
            if self.cpus == 1 { "" } else { "s" }
        );
        if let Some(ms) = self.vmm_start_to_ready_ms {
            line.push_str(&format!("; VMM start → ready {:.1} s", ms as f64 / 1000.0));
        }
        line
    }
}

/// The results of one `jeos test` run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestSummary {
    /// Appliance name (the JUnit suite name).
    pub name: String,
    /// Every check reported, in order.
    pub checks: Vec<CheckResult>,
    /// Milliseconds from kernel start to `ready`, if the appliance got ready.
    pub ready_ms: Option<u64>,
    /// The boot phases of the `ready` event.
    pub boot: Option<BootPhasesReport>,
    /// Why the run failed outside the checks (never ready, timeout, panic...).
    pub failure: Option<String>,
    /// How the VM stopped.
    pub exit: String,
    /// Wall-clock milliseconds of the VM.
    pub duration_ms: u64,
    /// All checks passed and the VM ended cleanly.
    pub passed: bool,
}

/// Reduces a run outcome to results (pure).
#[must_use]
pub fn summarize(name: &str, outcome: &RunOutcome) -> TestSummary {
    let mut checks = Vec::new();
    let mut ready_ms = None;
    let mut boot = None;
    let mut error = None;
    let mut done = false;
    for event in &outcome.events {
        match event {
            Event::Ready { boot_ms, phases } => {
                ready_ms = Some(*boot_ms);
                boot = Some(BootPhasesReport {
                    initramfs_ms: phases.initramfs_ms,
                    root_switched_ms: phases.root_ms,
                    services_started_ms: phases.services_ms,
                    ready_ms: *boot_ms,
                    cpus: phases.cpus,
                    vmm_start_to_ready_ms: outcome
                        .ready_at
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                });
            }
            Event::Check {
                status,
                ms,
                name,
                detail,
                ..
            } => checks.push(CheckResult {
                name: name.clone(),
                passed: *status == CheckStatus::Pass,
                ms: *ms,
                detail: detail.clone(),
                from: CheckFrom::Guest,
            }),
            Event::Done { .. } => done = true,
            Event::Error { detail } => error = Some(detail.clone()),
        }
    }
    let failure = if let Some(detail) = error {
        Some(if ready_ms.is_none() {
            format!("the appliance never became ready: {detail}")
        } else {
            detail
        })
    } else if !outcome.protocol_errors.is_empty() {
        Some(format!(
            "malformed result lines: {}",
            outcome.protocol_errors.join("; ")
        ))
    } else {
        match &outcome.exit {
            ExitReason::Timeout if ready_ms.is_none() => Some(format!(
                "the appliance never became ready: timed out after {:.0} s",
                outcome.duration.as_secs_f64()
            )),
            ExitReason::Timeout if !done => Some(format!(
                "the checks did not finish: timed out after {:.0} s",
                outcome.duration.as_secs_f64()
            )),
            exit if exit.is_clean() && done => None,
            exit if exit.is_clean() => Some(format!(
                "the VM stopped ({}) before the checks finished",
                outcome.exit
            )),
            other if !done || ready_ms.is_none() => Some(format!("the VM stopped early: {other}")),
            other => Some(format!("the VM did not shut down cleanly: {other}")),
        }
    };
    let passed = failure.is_none() && outcome.passed() && checks.iter().all(|c| c.passed);
    TestSummary {
        name: name.to_owned(),
        checks,
        ready_ms,
        boot,
        failure,
        exit: outcome.exit.to_string(),
        duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        passed,
    }
}

/// Adds the host checks' results after the guest's; any failure fails the run (pure).
pub fn add_host_checks(summary: &mut TestSummary, results: Vec<CheckResult>) {
    summary.passed &= results.iter().all(|c| c.passed);
    summary.checks.extend(results);
}

/// A check's name as the table and JUnit show it: host checks carry ` (host)`.
fn shown_name(check: &CheckResult) -> String {
    match check.from {
        CheckFrom::Guest => check.name.clone(),
        CheckFrom::Host => format!("{} (host)", check.name),
    }
}

/// The last `n` non-empty console lines (pure).
#[must_use]
pub fn console_tail(console: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = console
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// A plain-text table: check, result, time, detail (pure).
#[must_use]
pub fn render_table(summary: &TestSummary) -> String {
    let name_w = summary
        .checks
        .iter()
        .map(|c| shown_name(c).chars().count())
        .chain(std::iter::once("check".len()))
        .max()
        .unwrap_or(5);
    let mut out = format!(
        "{:<name_w$}  {:<6}  {:>7}  detail\n",
        "check", "result", "ms"
    );
    for c in &summary.checks {
        out.push_str(&format!(
            "{:<name_w$}  {:<6}  {:>7}  {}\n",
            shown_name(c),
            if c.passed { "pass" } else { "FAIL" },
            c.ms,
            shorten_detail(&c.detail, 60)
        ));
    }
    out
}

/// One line of at most `max` characters: a response body pasted into a detail would
/// otherwise break the table (the full text stays in `--json` and JUnit).
#[must_use]
pub fn shorten_detail(detail: &str, max: usize) -> String {
    let line = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut short: String = line.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// Escapes text for an XML attribute or text node (pure): image-writer's escaper, with
/// the control characters XML 1.0 cannot carry shown as `\xNN` (people read these
/// details) rather than replaced.
#[must_use]
pub fn xml_escape(text: &str) -> String {
    let mut visible = String::with_capacity(text.len());
    for c in text.chars() {
        if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') {
            visible.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            visible.push(c);
        }
    }
    image_writer::ovf::escape_xml(&visible)
}

/// JUnit XML: one `<testcase>` per check, plus a `boot` test case that fails when the
/// appliance never got ready or the run failed outside the checks (pure).
#[must_use]
pub fn render_junit(summary: &TestSummary) -> String {
    let suite = xml_escape(&summary.name);
    let mut cases = String::new();
    let mut tests = 0usize;
    let mut failures = 0usize;
    if let Some(failure) = &summary.failure {
        tests += 1;
        failures += 1;
        let f = xml_escape(failure);
        cases.push_str(&format!(
            "  <testcase classname=\"{suite}\" name=\"boot\" time=\"{:.3}\">\n    <failure message=\"{f}\">{f}</failure>\n  </testcase>\n",
            summary.duration_ms as f64 / 1000.0
        ));
    }
    for c in &summary.checks {
        tests += 1;
        let name = xml_escape(&shown_name(c));
        let time = c.ms as f64 / 1000.0;
        if c.passed {
            cases.push_str(&format!(
                "  <testcase classname=\"{suite}\" name=\"{name}\" time=\"{time:.3}\"/>\n"
            ));
        } else {
            failures += 1;
            let d = xml_escape(&c.detail);
            cases.push_str(&format!(
                "  <testcase classname=\"{suite}\" name=\"{name}\" time=\"{time:.3}\">\n    <failure message=\"{d}\">{d}</failure>\n  </testcase>\n"
            ));
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">\n{cases}</testsuite>\n",
        summary.duration_ms as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_vm::VmmKind;

    fn outcome(exit: ExitReason, events: Vec<Event>) -> RunOutcome {
        RunOutcome {
            exit,
            console_tail: String::new(),
            duration: Duration::from_millis(7500),
            first_byte_at: None,
            first_instruction_at: None,
            events,
            ready_at: Some(Duration::from_millis(8000)),
            protocol_errors: Vec::new(),
            device_warnings: Vec::new(),
            vmm: VmmKind::Qemu,
        }
    }

    fn check(name: &str, pass: bool, detail: &str) -> Event {
        Event::Check {
            index: 0,
            status: if pass {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            ms: 12,
            name: name.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn passing_run() {
        let s = summarize(
            "nginx",
            &outcome(
                ExitReason::PowerOff,
                vec![
                    Event::Ready {
                        boot_ms: 6900,
                        phases: guest_init::protocol::BootPhases {
                            cpus: 2,
                            initramfs_ms: 900,
                            root_ms: 3000,
                            services_ms: 3100,
                        },
                    },
                    check("serves the page", true, "200"),
                    Event::Done {
                        passed: 1,
                        failed: 0,
                    },
                ],
            ),
        );
        assert!(s.passed);
        assert_eq!(s.ready_ms, Some(6900));
        assert_eq!(s.failure, None);
        let boot = s.boot.expect("phases");
        assert_eq!((boot.cpus, boot.root_switched_ms), (2, 3000));
        assert_eq!(
            boot.render(),
            "boot phases: kernel 0 → initramfs 900 → root switched 3000 → services started 3100 → ready 6900 ms; the guest saw 2 CPUs; VMM start → ready 8.0 s"
        );
        let junit = render_junit(&s);
        assert!(junit.contains("tests=\"1\" failures=\"0\""), "{junit}");
        assert!(junit.contains("name=\"serves the page\""));
        assert!(render_table(&s).contains("serves the page  pass"));
    }

    #[test]
    fn host_checks_are_marked_and_a_failing_one_fails_the_run() {
        let mut s = summarize(
            "nginx",
            &outcome(
                ExitReason::PowerOff,
                vec![
                    check("serves the page", true, "200"),
                    Event::Done {
                        passed: 1,
                        failed: 0,
                    },
                ],
            ),
        );
        assert!(s.passed);
        let host = |passed: bool| CheckResult {
            name: "from outside".into(),
            passed,
            ms: 3,
            detail:
                "from the host (127.0.0.1:4000 → guest port 80): expected status 200, got 404: x"
                    .into(),
            from: CheckFrom::Host,
        };
        let mut ok = s.clone();
        add_host_checks(&mut ok, vec![host(true)]);
        assert!(ok.passed);
        add_host_checks(&mut s, vec![host(false)]);
        assert!(!s.passed);
        assert!(render_table(&s).contains("from outside (host)  FAIL"));
        let junit = render_junit(&s);
        assert!(junit.contains("tests=\"2\" failures=\"1\""), "{junit}");
        assert!(junit.contains("name=\"from outside (host)\""), "{junit}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["checks"][0]["from"], "guest");
        assert_eq!(json["checks"][1]["from"], "host");
    }

    #[test]
    fn failing_check_is_escaped_in_junit() {
        let s = summarize(
            "nginx",
            &outcome(
                ExitReason::PowerOff,
                vec![
                    Event::Ready {
                        boot_ms: 1,
                        phases: guest_init::protocol::BootPhases::default(),
                    },
                    check("a<b", false, "body lacks \"x\" & <y>"),
                    check("ok", true, ""),
                    Event::Done {
                        passed: 1,
                        failed: 1,
                    },
                ],
            ),
        );
        assert!(!s.passed);
        assert_eq!(s.failure, None);
        let junit = render_junit(&s);
        assert!(junit.contains("tests=\"2\" failures=\"1\""), "{junit}");
        assert!(junit.contains("name=\"a&lt;b\""));
        assert!(junit.contains("message=\"body lacks &quot;x&quot; &amp; &lt;y&gt;\""));
        assert!(render_table(&s).contains("FAIL"));
    }

    #[test]
    fn never_ready_is_a_boot_failure() {
        let s = summarize(
            "nginx",
            &outcome(
                ExitReason::PowerOff,
                vec![Event::Error {
                    detail: "service nginx not ready".into(),
                }],
            ),
        );
        assert!(!s.passed);
        let failure = s.failure.clone().unwrap();
        assert!(failure.contains("never became ready") && failure.contains("nginx"));
        let junit = render_junit(&s);
        assert!(junit.contains("name=\"boot\""));
        assert!(junit.contains("tests=\"1\" failures=\"1\""));

        let timeout = summarize("x", &outcome(ExitReason::Timeout, vec![]));
        assert!(timeout.failure.unwrap().contains("timed out"));
        let panic = summarize("x", &outcome(ExitReason::Panic, vec![]));
        assert!(panic.failure.unwrap().contains("kernel panic"));
    }

    #[test]
    fn tail_and_escape() {
        assert_eq!(console_tail("a\r\n\nb\nc\n", 2), ["b", "c"]);
        assert_eq!(xml_escape("a\u{1}b"), "a\\x01b");
    }

    #[test]
    fn find_image_accepts_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            find_image(dir.path()),
            Err(BootError::NoSingleImage { count: 0, .. })
        ));
        let raw = dir.path().join("x-1.0.raw");
        std::fs::write(&raw, b"").unwrap();
        assert_eq!(find_image(dir.path()).unwrap(), raw);
        assert_eq!(find_image(&raw).unwrap(), raw);
        assert!(matches!(
            find_image(&dir.path().join("nope")),
            Err(BootError::Missing { .. })
        ));
    }
}
