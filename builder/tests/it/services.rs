//! Real services as appliances (issue #11): the openssh, postgresql and dnsmasq examples
//! build and pass `jeos test` (QEMU, KVM when it can run Linux here, else TCG); the
//! postgresql appliance keeps its cluster across boots of a writable copy without running
//! initdb again; a task that needs a `/bin/sh` the closure lacks fails the build.
//!
//! Under `CI=true` a missing prerequisite (QEMU, the Debian mirror) fails these tests.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::appliances::{Built, build_into, built};
use crate::common::{TestDir, jeos, qemu_accel};

use crate::common::prerequisite as require;

fn qemu() -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require(
        ok,
        "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)",
    )
}

fn example(name: &str) -> Option<Built> {
    let found = built(name);
    let why = format!("the Debian mirror is unreachable, `{name}` was not built");
    if require(found.is_some(), &why) {
        found
    } else {
        None
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    console: String,
    wall: Duration,
}

/// One boot of these tests at a time: the machine running them may have few cores.
static BOOTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_boot() -> std::sync::MutexGuard<'static, ()> {
    BOOTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn jeos_test(raw: &Path) -> Run {
    let _boot = one_boot();
    let dir = TestDir::new();
    let log = dir.path().join("console.log");
    let start = Instant::now();
    let output = jeos()
        .arg("test")
        .arg(raw)
        .arg("--keep-log")
        .arg(&log)
        .output()
        .expect("run jeos test");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        console: std::fs::read_to_string(&log).unwrap_or_default(),
        wall: start.elapsed(),
    }
}

/// `ready 27.4 s after boot` from `jeos test`'s summary.
fn ready_after(stdout: &str) -> Option<f64> {
    // Other lines say "ready" too (boot phases: `→ ready 7646 ms`).
    let before = &stdout[..stdout.find(" s after boot")?];
    before.rsplit("ready ").next()?.trim().parse().ok()
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Prints what the issue asks to report: packages, image and OVA size, time to ready.
fn report(name: &str, built: &Built, run: &Run) {
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(built.dir.join("build-report.json")).expect("build report"),
    )
    .expect("build report is JSON");
    let packages = report["packages"].as_array().map_or(0, Vec::len);
    let ova = built.dir.join(format!("{name}-1.0.0.ova"));
    eprintln!(
        "{name}: {packages} packages, image {:.1} MiB, OVA {:.1} MiB, ready {} s after boot, jeos test {:.1} s wall",
        file_size(&built.raw) as f64 / 1048576.0,
        file_size(&ova) as f64 / 1048576.0,
        ready_after(&run.stdout).map_or_else(|| "?".to_owned(), |s| format!("{s:.1}")),
        run.wall.as_secs_f64()
    );
}

fn assert_passes(name: &str, checks: usize) -> Option<(Built, Run)> {
    let built = example(name)?;
    let run = jeos_test(&built.raw);
    assert_eq!(
        run.code,
        Some(0),
        "jeos test {name}:\n{}\n{}\n{}",
        run.stdout,
        run.stderr,
        run.console
    );
    assert!(
        run.stdout
            .contains(&format!("passed: {checks}/{checks} checks passed")),
        "{}",
        run.stdout
    );
    report(name, &built, &run);
    Some((built, run))
}

#[test]
fn openssh_generates_host_keys_and_accepts_the_declared_key() {
    if !qemu() {
        return;
    }
    let Some((_, run)) = assert_passes("openssh", 3) else {
        return;
    };
    // The task ran before sshd started, and the login went through sshd's key check.
    let task = run
        .console
        .find("task host-keys finished")
        .expect("task ran");
    let sshd = run.console.find("started sshd").expect("sshd started");
    assert!(task < sshd, "{}", run.console);
    assert!(
        run.console.contains("Accepted publickey for admin"),
        "{}",
        run.console
    );
}

#[test]
fn dnsmasq_answers_for_its_local_zone() {
    if !qemu() {
        return;
    }
    let Some((_, run)) = assert_passes("dnsmasq", 2) else {
        return;
    };
    assert!(
        run.console
            .contains("config www.appliance.test is 10.0.0.42"),
        "the answer came from dnsmasq: {}",
        run.console
    );
}

/// Boots a writable disk image once (firmware boot, writes kept) until the appliance is
/// ready, then presses the power button and waits for QEMU to exit. Returns the console.
fn boot_writable(disk: &Path, timeout: Duration) -> String {
    let _boot = one_boot();
    let dir = TestDir::new();
    let log = dir.path().join("console.log");
    let monitor = dir.path().join("monitor.sock");
    let accel = qemu_accel();
    let mut child = Command::new("qemu-system-x86_64")
        .env("LC_ALL", "C")
        .args([
            "-accel", accel, "-m", "512", "-smp", "1", "-display", "none",
        ])
        .args(["-no-reboot", "-nodefaults"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .args(["-nic", "user,model=virtio-net-pci"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");
    let console = || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + timeout;
    while !console().contains("JEOS1 ready") {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("first boot did not become ready:\n{}", console());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut socket = UnixStream::connect(&monitor).expect("QEMU monitor");
    socket
        .write_all(b"system_powerdown\n")
        .expect("press the power button");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the appliance did not power off:\n{}", console());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    console()
}

#[test]
fn postgresql_runs_initdb_once_and_keeps_its_cluster() {
    if !qemu() {
        return;
    }
    let Some((built, run)) = assert_passes("postgresql", 2) else {
        return;
    };
    assert!(run.console.contains("started initdb"), "{}", run.console);
    // A writable copy: the first boot runs initdb and leaves its marker on the disk...
    let dir = TestDir::new();
    let copy = dir.path().join("postgresql.raw");
    std::fs::copy(&built.raw, &copy).expect("copy the image");
    let start = Instant::now();
    let first = boot_writable(&copy, Duration::from_secs(600));
    assert!(first.contains("task initdb finished"), "{first}");
    assert!(first.contains("powering off"), "clean shutdown: {first}");
    eprintln!(
        "postgresql: first boot of the writable copy {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // ...and the second boot skips initdb and answers from the same cluster.
    let second = jeos_test(&copy);
    assert_eq!(
        second.code,
        Some(0),
        "{}\n{}\n{}",
        second.stdout,
        second.stderr,
        second.console
    );
    assert!(
        second
            .console
            .contains("task initdb already succeeded on an earlier boot; skipped"),
        "{}",
        second.console
    );
    assert!(
        !second.console.contains("started initdb"),
        "{}",
        second.console
    );
    eprintln!(
        "postgresql: second boot ready {} s after boot (first boot: {} s)",
        ready_after(&second.stdout).map_or_else(|| "?".to_owned(), |s| format!("{s:.1}")),
        ready_after(&run.stdout).map_or_else(|| "?".to_owned(), |s| format!("{s:.1}")),
    );
}

/// Issue #11: a task whose program needs `/bin/sh` fails the build, naming the task and
/// the package that provides the shell.
#[test]
fn issue_11_task_needing_a_missing_shell_fails_the_build() {
    let Some(base) = example("dnsmasq") else {
        return;
    };
    let dir = TestDir::new();
    let text = std::fs::read_to_string(&base.recipe).expect("recipe");
    let variant = format!(
        "{text}\n[[task]]\nname = \"seed-zone\"\nexec = [\"/bin/sh\", \"-c\", \"echo seeded\"]\n"
    );
    let recipe = dir.create("variant/dnsmasq.toml", &variant);
    let lock = base.recipe.with_extension("lock");
    if lock.is_file() {
        std::fs::copy(&lock, recipe.with_extension("lock")).expect("copy lock");
    }
    let out = dir.path().join("dist");
    let output = build_into(&recipe, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("task `seed-zone`: program `/bin/sh` is not in the image"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Debian package `dash` provides it"),
        "{stderr}"
    );
    assert!(
        !out.join("dnsmasq-1.0.0").exists(),
        "nothing is written on failure"
    );
}
