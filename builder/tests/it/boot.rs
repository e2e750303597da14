//! The built images boot on real firmware: QEMU with SeaBIOS (BIOS) and OVMF (UEFI), KVM
//! when it can run Linux here, else TCG. Through QEMU's user network the host gets the
//! nginx page and a `PONG` from redis. Also: reproducible images and bad-input errors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::appliances::{build_into, built};
use crate::common::{OVMF_CODE, OVMF_VARS, TestDir, free_port, qemu_accel, recipes_dir};
use crate::resolve::reachable_mirror;

#[derive(Clone, Copy, Debug)]
enum Firmware {
    Bios,
    Efi,
}

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

/// A running QEMU; killed on drop.
struct Vm {
    child: Child,
    log: PathBuf,
    _dir: TestDir,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

fn boot(disk: &Path, firmware: Firmware, guest_port: u16, host_port: u16) -> Option<Vm> {
    let format = if disk.extension().is_some_and(|e| e == "vmdk") {
        "vmdk"
    } else {
        "raw"
    };
    let dir = TestDir::new();
    let log = dir.path().join("console.log");
    let accel = qemu_accel();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel", accel, "-m", "512", "-smp", "1", "-display", "none",
    ])
    .args(["-no-reboot", "-monitor", "none"])
    .arg("-serial")
    .arg(format!("file:{}", log.display()))
    .arg("-drive")
    .arg(format!(
        "file={},format={format},snapshot=on",
        disk.display()
    ))
    .arg("-nic")
    .arg(format!(
        "user,model=e1000,hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"
    ));
    if let Firmware::Efi = firmware {
        let (Some(code), Some(vars)) = (
            OVMF_CODE.iter().find(|p| Path::new(p).is_file()),
            OVMF_VARS.iter().find(|p| Path::new(p).is_file()),
        ) else {
            crate::common::prerequisite(false, "OVMF firmware is not installed (Debian: ovmf)");
            return None;
        };
        let vars_copy = dir.path().join("vars.fd");
        std::fs::copy(vars, &vars_copy).expect("copy OVMF vars");
        cmd.arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={code}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars_copy.display()));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");
    Some(Vm {
        child,
        log,
        _dir: dir,
    })
}

/// One request/response over TCP; the whole answer as text.
fn exchange(port: u16, request: &[u8]) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.len() > 65536 || answer.ends_with(b"\r\n") && request.starts_with(b"PING") {
            break;
        }
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// Boots `raw` and polls the forwarded port until `expect` appears in the answer.
fn boots_and_answers(
    raw: &Path,
    firmware: Firmware,
    guest_port: u16,
    request: &[u8],
    expect: &str,
) {
    let host_port = free_port();
    let Some(vm) = boot(raw, firmware, guest_port, host_port) else {
        return;
    };
    let start = Instant::now();
    let deadline = Duration::from_secs(240);
    let mut last = None;
    while start.elapsed() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        last = exchange(host_port, request);
        if last.as_deref().is_some_and(|a| a.contains(expect)) {
            break;
        }
    }
    let console = vm.console();
    assert!(
        last.as_deref().is_some_and(|a| a.contains(expect)),
        "{firmware:?}: no `{expect}` on port {guest_port} after {:?}; last answer {last:?}\nconsole:\n{console}",
        start.elapsed()
    );
    // The stable ready line of guest-init, after the services' readiness probes.
    assert!(
        console.contains("JEOS1 ready boot_ms="),
        "{firmware:?}: no ready line\n{console}"
    );
    eprintln!(
        "{firmware:?}: `{expect}` answered {:.1}s after QEMU started",
        start.elapsed().as_secs_f64()
    );
}

const HTTP_GET: &[u8] = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
const REDIS_PING: &[u8] = b"PING\r\n";

#[test]
fn nginx_boots_with_seabios_and_serves_the_page() {
    if !qemu_available() {
        return;
    }
    let Some(app) = built("nginx") else { return };
    boots_and_answers(&app.raw, Firmware::Bios, 80, HTTP_GET, "hello from jeos");
}

#[test]
fn nginx_boots_with_ovmf_and_serves_the_page() {
    if !qemu_available() {
        return;
    }
    let Some(app) = built("nginx") else { return };
    boots_and_answers(&app.raw, Firmware::Efi, 80, HTTP_GET, "hello from jeos");
}

#[test]
fn redis_boots_with_seabios_and_answers_ping() {
    if !qemu_available() {
        return;
    }
    let Some(app) = built("redis") else { return };
    boots_and_answers(&app.raw, Firmware::Bios, 6379, REDIS_PING, "+PONG");
}

#[test]
fn redis_boots_with_ovmf_and_answers_ping() {
    if !qemu_available() {
        return;
    }
    let Some(app) = built("redis") else { return };
    boots_and_answers(&app.raw, Firmware::Efi, 6379, REDIS_PING, "+PONG");
}

/// The VMDK inside the OVA is the disk a hypervisor imports: it boots too.
#[test]
fn the_vmdk_from_the_ova_boots() {
    if !qemu_available() {
        return;
    }
    let Some(app) = built("nginx") else { return };
    let ova = app.dir.join("nginx-1.0.0.ova");
    let dir = TestDir::new();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&ova)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success());
    let vmdk = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "vmdk"))
        .expect("a .vmdk in the OVA");
    // Its content is the raw disk, and QEMU boots the streamOptimized VMDK itself, as an
    // importing hypervisor would (a copy-on-write overlay keeps the file unchanged).
    let raw = dir.path().join("from-ova.raw");
    let status = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&vmdk)
        .arg(&raw)
        .status()
        .expect("qemu-img");
    assert!(status.success());
    assert_eq!(
        sha256_file(&raw),
        sha256_file(&app.raw),
        "VMDK content differs"
    );
    let before = sha256_file(&vmdk);
    boots_and_answers(&vmdk, Firmware::Bios, 80, HTTP_GET, "hello from jeos");
    assert_eq!(sha256_file(&vmdk), before, "booting modified the VMDK");
}

fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).expect("open");
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).expect("hash");
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn two_builds_give_identical_images() {
    let Some(first) = built("nginx") else { return };
    let dir = TestDir::new();
    let recipe = dir.create(
        "nginx.toml",
        &std::fs::read_to_string(&first.recipe).expect("recipe"),
    );
    // Same recipe and same lock file.
    std::fs::copy(
        first.recipe.with_extension("lock"),
        recipe.with_extension("lock"),
    )
    .expect("copy lock");
    let out = dir.path().join("dist");
    let output = build_into(&recipe, &out, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let second = out.join("nginx-1.0.0");
    for file in ["nginx-1.0.0.raw", "nginx-1.0.0.ova", "nginx-1.0.0.qcow2"] {
        assert_eq!(
            sha256_file(&first.dir.join(file)),
            sha256_file(&second.join(file)),
            "{file} differs between two builds"
        );
    }
}

/// Runs a failing build of `recipe_text` and checks the error and that the output
/// directory holds nothing.
fn build_fails(recipe_text: &str, expect: &[&str]) {
    if reachable_mirror("trixie").is_none() {
        return;
    }
    let dir = TestDir::new();
    let recipe = dir.create("bad/bad.toml", recipe_text);
    let out = dir.path().join("dist");
    let output = build_into(&recipe, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "`{e}` not in:\n{stderr}");
    }
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&out)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "left in the output dir: {leftovers:?}"
    );
}

fn nginx_recipe() -> String {
    std::fs::read_to_string(recipes_dir().join("nginx.toml")).expect("nginx recipe")
}

#[test]
fn a_service_binary_absent_from_the_image_is_an_error() {
    build_fails(
        &nginx_recipe().replace("/usr/sbin/nginx", "/usr/sbin/nginx-absent"),
        &["nginx-absent", "service `nginx`"],
    );
}

#[test]
fn an_explicit_disk_size_too_small_is_an_error() {
    build_fails(
        &nginx_recipe().replace("size = \"auto\"", "size = \"16MiB\""),
        &["cannot write the disk image", "were requested"],
    );
}

#[test]
fn a_missing_kernel_package_is_an_error() {
    build_fails(
        &nginx_recipe().replace(
            "flavour = \"generic\"",
            "package = \"linux-image-does-not-exist\"",
        ),
        &["unknown package `linux-image-does-not-exist`"],
    );
}

#[test]
fn a_missing_source_file_is_an_error() {
    let text = nginx_recipe().replace(
        "template = \"{{ovf.page.text}}\\n\"\ntemplate-at = \"boot\"",
        "source = \"files/missing.html\"",
    );
    assert!(text.contains("files/missing.html"));
    let dir = TestDir::new();
    let recipe = dir.create("bad.toml", &text);
    let out = dir.path().join("dist");
    let output = build_into(&recipe, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("files/missing.html"), "{stderr}");
    assert!(!out.exists() || std::fs::read_dir(&out).expect("dir").next().is_none());
}

/// Ctrl-C in the middle of a build leaves nothing in the output directory.
#[test]
fn an_interrupted_build_leaves_nothing_behind() {
    let Some(app) = built("nginx") else { return };
    let dir = TestDir::new();
    let recipe = dir.create(
        "nginx.toml",
        &std::fs::read_to_string(&app.recipe).expect("recipe"),
    );
    std::fs::copy(
        app.recipe.with_extension("lock"),
        recipe.with_extension("lock"),
    )
    .expect("copy lock");
    let out = dir.path().join("dist");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jeos"))
        .env("NO_COLOR", "1")
        .arg("--cache-dir")
        .arg(crate::resolve::shared_cache())
        .arg("build")
        .arg(&recipe)
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start jeos build");
    // Wait until the build has started writing, then interrupt it.
    let start = Instant::now();
    let started = loop {
        let busy = std::fs::read_dir(&out)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".jeos-build-"))
            })
            .unwrap_or(false);
        if busy || start.elapsed() > Duration::from_secs(60) {
            break busy;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(started, "the build never created its work directory");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    if exit.success() {
        eprintln!("note: the build finished before the interrupt arrived");
        return;
    }
    assert_eq!(exit.code(), Some(130));
    let left: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("output dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
