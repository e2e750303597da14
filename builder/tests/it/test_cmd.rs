//! `jeos test` and `jeos run` end to end on the example appliances: passing checks with a
//! JUnit report, a failing check, a service that never gets ready, and an interactive run
//! whose forwarded port serves the page while the image stays unmodified.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::appliances::{Built, build_into, built};
use crate::common::{TestDir, free_port, jeos};

fn qemu_available() -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    crate::common::prerequisite(
        ok,
        "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)",
    )
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).expect("read image")).to_vec()
}

struct TestRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn jeos_test(raw: &Path, extra: &[&str]) -> TestRun {
    let start = Instant::now();
    let output = jeos()
        .arg("test")
        .arg(raw)
        .args(extra)
        .output()
        .expect("run jeos test");
    TestRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// Counts `<testcase` and `<failure` in a JUnit file.
fn junit_counts(path: &Path) -> (usize, usize, String) {
    let xml = std::fs::read_to_string(path).expect("junit file");
    (
        xml.matches("<testcase ").count(),
        xml.matches("<failure ").count(),
        xml,
    )
}

#[test]
fn examples_pass_with_a_junit_report() {
    if !qemu_available() {
        return;
    }
    // nginx's third check runs on the host, through QEMU's forward (issue #13).
    for (name, checks) in [("nginx", 3usize), ("redis", 2)] {
        let Some(Built { raw, .. }) = built(name) else {
            return;
        };
        let dir = TestDir::new();
        let junit = dir.path().join("junit.xml");
        let log = dir.path().join("console.log");
        let before = sha256(&raw);
        let run = jeos_test(
            &raw,
            &[
                "--junit",
                junit.to_str().expect("utf-8"),
                "--keep-log",
                log.to_str().expect("utf-8"),
            ],
        );
        eprintln!(
            "jeos test {name}: {:.1} s wall\n{}{}",
            run.elapsed.as_secs_f64(),
            run.stdout,
            run.stderr
        );
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("vmm: "), "{}", run.stderr);
        assert!(run.stderr.contains(" — "), "the vmm line says why");
        assert!(run.stdout.contains("passed"), "{}", run.stdout);
        if name == "nginx" {
            let host = run
                .stdout
                .lines()
                .find(|l| l.starts_with("serves the page from outside (host)"))
                .unwrap_or_else(|| panic!("no host check line:\n{}", run.stdout));
            assert!(host.contains(" pass "), "{host}");
            assert!(host.contains("from the host"), "{host}");
        }
        let (cases, failures, xml) = junit_counts(&junit);
        assert_eq!((cases, failures), (checks, 0), "{xml}");
        assert!(xml.contains(&format!("<testsuite name=\"{name}-1.0.0\"")));
        let console = std::fs::read_to_string(&log).expect("console log kept");
        // The console is a log: results travel on COM2 and show up here only as log lines.
        assert!(
            console.contains("jeos: result: ready boot_ms="),
            "{console}"
        );
        assert!(!console.contains("JEOS1 "), "{console}");
        assert_eq!(sha256(&raw), before, "jeos test modified the image");
    }
}

/// Builds a variant of the nginx recipe (with nginx's lock, so nothing is re-resolved).
fn build_variant(base: &Built, dir: &TestDir, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(&base.recipe).expect("recipe");
    assert!(text.contains(from), "the nginx recipe has `{from}`");
    let recipe = dir.create("variant/nginx.toml", &text.replace(from, to));
    let lock = base.recipe.with_extension("lock");
    if lock.is_file() {
        std::fs::copy(&lock, recipe.with_extension("lock")).expect("copy lock");
    }
    let out = dir.path().join("dist");
    let output = build_into(&recipe, &out, &[]);
    assert!(
        output.status.success(),
        "jeos build variant failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out.join("nginx-1.0.0")
}

#[test]
fn failing_check_and_never_ready_exit_1() {
    if !qemu_available() {
        return;
    }
    let Some(base) = built("nginx") else {
        return;
    };

    // A check that fails: the page lacks the text.
    let dir = TestDir::new();
    let out = build_variant(
        &base,
        &dir,
        "body-contains = \"hello from jeos\"",
        "body-contains = \"text-that-is-not-there\"",
    );
    let junit = dir.path().join("junit.xml");
    // The output directory is accepted as IMAGE too.
    let run = jeos_test(&out, &["--junit", junit.to_str().expect("utf-8")]);
    eprintln!("failing check:\n{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("serves the page"), "{}", run.stdout);
    assert!(run.stdout.contains("FAIL"), "{}", run.stdout);
    assert!(
        run.stderr.contains("check failed: `serves the page`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("text-that-is-not-there"),
        "{}",
        run.stderr
    );
    // Issue #13: the host check (the same page, through QEMU's forward) fails too, with
    // what it expected and what it saw.
    assert!(
        run.stderr
            .contains("`serves the page from outside`: from the host (127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "→ guest port 80): body does not contain `text-that-is-not-there`: hello from jeos"
        ),
        "{}",
        run.stderr
    );
    let (cases, failures, xml) = junit_counts(&junit);
    assert_eq!((cases, failures), (3, 2), "{xml}");
    assert!(
        xml.contains("name=\"serves the page from outside (host)\""),
        "{xml}"
    );
    assert!(
        out.join("nginx-1.0.0.console.log").is_file(),
        "default log beside the image"
    );

    // A service that never becomes ready.
    let dir = TestDir::new();
    let out = build_variant(
        &base,
        &dir,
        "ready = { tcp = 80, timeout = \"30s\" }",
        "ready = { tcp = 81, timeout = \"5s\" }",
    );
    let raw = out.join("nginx-1.0.0.raw");
    let run = jeos_test(&raw, &["--timeout", "120s"]);
    eprintln!(
        "never ready ({:.1} s):\n{}{}",
        run.elapsed.as_secs_f64(),
        run.stdout,
        run.stderr
    );
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("never became ready"), "{}", run.stderr);
    assert!(
        run.stdout.contains("0/3 checks passed, 3 not run"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("nginx"),
        "names the service: {}",
        run.stderr
    );
    assert!(run.stderr.contains("last console lines:"), "{}", run.stderr);
    assert!(run.stderr.contains("  | "), "shows the console tail");
    assert!(run.elapsed < Duration::from_secs(120), "within the timeout");
}

fn http_get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Kills a process group on drop.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id();
        let _ = Command::new("kill")
            .arg("--")
            .arg(format!("-{pgid}"))
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn run_forwards_a_port_and_keeps_the_image() {
    use std::os::unix::process::CommandExt;
    if !qemu_available() {
        return;
    }
    let Some(Built { raw, .. }) = built("nginx") else {
        return;
    };
    let before = sha256(&raw);
    let port = free_port();
    let child = jeos()
        .arg("run")
        .arg(&raw)
        .arg("--forward")
        .arg(format!("127.0.0.1:{port}:80"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start jeos run");
    let mut group = Group(child);
    let start = Instant::now();
    let mut page = None;
    while start.elapsed() < Duration::from_secs(90) {
        if let Some(body) = http_get(port).filter(|b| b.contains("hello from jeos")) {
            page = Some(body);
            break;
        }
        if let Ok(Some(status)) = group.0.try_wait() {
            panic!("jeos run exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "jeos run: page after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    drop(group);
    let page = page.expect("the forwarded port serves the page within 90 s");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert_eq!(sha256(&raw), before, "jeos run modified the image");
}

/// Results travel on their own channel: nginx's access log (its stdout, so the console)
/// prints a forged failing check, an error and a summary for every request, and the run
/// still reports exactly its own three passing checks (two in the guest, one from the
/// host; QEMU; the embedded runner's twin is in `nested`).
#[test]
fn forged_protocol_lines_on_the_console_change_nothing() {
    if !qemu_available() {
        return;
    }
    let Some(base) = built("nginx") else { return };
    let raw = crate::nested::forged_nginx(&base);
    let dir = TestDir::new();
    let log = dir.path().join("console.log");
    let run = jeos_test(
        &raw,
        &["--vmm", "qemu", "--keep-log", log.to_str().expect("utf-8")],
    );
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "forged ({:.1} s):\n{}{}",
        run.elapsed.as_secs_f64(),
        run.stdout,
        run.stderr
    );
    assert!(
        console.contains("JEOS1 check index=0 status=fail ms=1 name=forged"),
        "the service printed forged lines:\n{console}"
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("3/3 checks passed"), "{}", run.stdout);
    assert!(!run.stdout.contains("forged"), "{}", run.stdout);
}

/// `--boot firmware`: QEMU boots the disk through the OVF's firmware (SeaBIOS) with the
/// OVF's NIC (e1000) and, for its LSI Logic controller which QEMU lacks, AHCI with a note;
/// memory and vCPUs come from the OVF.
#[test]
fn firmware_boot_uses_the_hardware_the_ovf_declares() {
    if !qemu_available() {
        return;
    }
    let Some(Built { raw, .. }) = built("nginx") else {
        return;
    };
    let run = jeos_test(&raw, &["--vmm", "qemu", "--boot", "firmware"]);
    eprintln!(
        "firmware boot ({:.1} s):\n{}{}",
        run.elapsed.as_secs_f64(),
        run.stdout,
        run.stderr
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("(256 MiB, 1 vCPU as its OVF declares, firmware boot"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("note: QEMU does not emulate the OVF's LSI Logic"),
        "{}",
        run.stderr
    );
    // The host check runs through QEMU's forward on the firmware boot too (issue #13).
    assert!(run.stdout.contains("3/3 checks passed"), "{}", run.stdout);
    assert!(
        run.stdout.contains("serves the page from outside (host)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("boot phases: kernel 0 → initramfs "),
        "{}",
        run.stdout
    );
}

/// An appliance whose `[network]` asks for DHCP is not ready without an address: memcached
/// on the cloud kernel (no e1000 driver) with `nic = "e1000"` fails, at build time or in
/// `jeos test`.
#[test]
fn dhcp_without_a_driven_nic_is_not_ready() {
    if !qemu_available() {
        return;
    }
    let Some(base) = built("memcached") else {
        return;
    };
    let raw = match crate::appliances::variant(
        &base,
        "memcached-e1000",
        &[
            ("nic = \"virtio\"", "nic = \"e1000\""),
            // The OVF is what `jeos test` reads the hardware from.
            (
                "formats = [\"raw\", \"qcow2\"]",
                "formats = [\"raw\", \"qcow2\", \"ova\"]",
            ),
        ],
    ) {
        Ok(raw) => raw,
        Err(stderr) => {
            assert!(stderr.contains("e1000"), "a clear build error: {stderr}");
            return;
        }
    };
    let run = jeos_test(&raw, &["--vmm", "qemu", "--timeout", "150s"]);
    eprintln!(
        "memcached e1000 ({:.1} s):\n{}{}",
        run.elapsed.as_secs_f64(),
        run.stdout,
        run.stderr
    );
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("never became ready: network: no network interface"),
        "{}",
        run.stderr
    );
}

/// Issue #10: `jeos test` boots the `.qcow2`, the stream-optimized `.vmdk` and the `.ova`
/// of the nginx build (each converted to a temporary raw disk; one boot per format) with
/// the hardware their OVF declares, and none of them is modified.
#[test]
fn issue_10_test_boots_the_qcow2_vmdk_and_ova_of_a_build() {
    if !qemu_available() {
        return;
    }
    let Some(Built { raw, dir, .. }) = built("nginx") else {
        return;
    };
    let stem = raw
        .file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned();
    for file in [
        format!("{stem}.qcow2"),
        format!("{stem}-disk1.vmdk"),
        format!("{stem}.ova"),
    ] {
        let image = dir.join(&file);
        let before = sha256(&image);
        let run = jeos_test(&image, &["--timeout", "150s"]);
        eprintln!(
            "jeos test {file}: {:.1} s wall\n{}{}",
            run.elapsed.as_secs_f64(),
            run.stdout,
            run.stderr
        );
        assert_eq!(run.code, Some(0), "{file}:\n{}\n{}", run.stdout, run.stderr);
        // nginx's two guest checks and its host check.
        assert!(run.stdout.contains("3/3 checks passed"), "{}", run.stdout);
        // The hardware of the OVF beside the file (inside the OVA), not the defaults.
        assert!(
            run.stderr.contains("(256 MiB, 1 vCPU as its OVF declares"),
            "{file}: {}",
            run.stderr
        );
        assert_eq!(sha256(&image), before, "jeos test modified {file}");
    }
}
