//! Whole-disk tests: write a disk with `write_disk`, check it is reproducible and valid,
//! and boot it under QEMU with SeaBIOS (SYSLINUX) and OVMF (systemd-boot).
//!
//! The boot tests need, and skip loudly without (fail under `CI=true`):
//! - `JEOS_TEST_KERNEL`: a Debian x86-64 kernel image (e.g. `boot/vmlinuz-*-cloud-amd64`);
//! - `JEOS_TEST_LOADERS`: a directory where `syslinux`, `syslinux-common` and
//!   `systemd-boot-efi` were extracted (`dpkg-deb -x`);
//! - `qemu-system-x86_64`, `/usr/share/OVMF/OVMF_CODE.fd` + `OVMF_VARS.fd`, `gcc` (static
//!   /init), `mkfs.ext4`.

#![allow(
    clippy::print_stderr,
    reason = "skipped tests and measurements go to stderr"
)]
#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live in tests/it"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use image_writer::bootloader::{BootloaderFiles, DiskPlan, write_disk};
use image_writer::cpio::{CpioEntry, write_initramfs};
use image_writer::ext4::{Ext4Config, Ext4Metadata, Ext4NodeKind, Ext4Size, root_fs_uuid};
use image_writer::gpt::read_gpt;
use image_writer::layout::{PartitionRole, Seed};

const EPOCH: u64 = 1_700_000_000;
const MARKER: &str = "JEOS-INIT-REACHED";

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool).arg(arg).output().is_ok()
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.exists())
}

/// A static /init that prints the marker and powers off (reboot(RB_POWER_OFF)).
fn build_init(dir: &Path) -> Option<Vec<u8>> {
    let src = dir.join("init.c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n#include <unistd.h>\n#include <sys/reboot.h>\n\
             int main(void) {{ printf(\"{MARKER}\\n\"); fflush(stdout); sync(); \
             reboot(RB_POWER_OFF); return 0; }}\n"
        ),
    )
    .unwrap();
    let out = dir.join("init");
    let status = Command::new("gcc")
        .args(["-static", "-Os", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .ok()?;
    status.success().then(|| std::fs::read(&out).unwrap())
}

fn staging(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::write(root.join("etc/hostname"), "jeos\n").unwrap();
    root
}

fn plan(dir: &Path, kernel: Vec<u8>, init: Vec<u8>, loaders: BootloaderFiles) -> DiskPlan {
    let seed = Seed::from_bytes(b"jeos-disk-test");
    let initramfs = write_initramfs(
        &[
            CpioEntry::file("init", 0o755, init),
            CpioEntry::dir("dev"),
            CpioEntry::dev_console(),
        ],
        EPOCH,
    )
    .unwrap();
    DiskPlan {
        kernel,
        initramfs,
        // console=ttyS0,115200: serial console for the test; panic=-1: reboot at once on a
        // panic; reboot=k: keyboard-controller reset, which QEMU with -no-reboot turns
        // into an exit; root=UUID=...: the ext4 root (unused by this /init).
        cmdline: format!(
            "console=ttyS0,115200 panic=-1 reboot=k root=UUID={}",
            root_fs_uuid(&seed)
        ),
        loaders,
        root: Ext4Config {
            staging_dir: staging(dir),
            metadata: vec![Ext4Metadata {
                path: "/dev/console".into(),
                uid: 0,
                gid: 5,
                permissions: 0o600,
                mtime: None,
                kind: Ext4NodeKind::CharDevice { major: 5, minor: 1 },
            }],
            size: Ext4Size::Auto {
                free_space_bytes: 1024 * 1024,
            },
            seed,
            label: "root".into(),
            timestamp: EPOCH,
        },
        esp_size_bytes: None,
        extra_esp_files: Vec::new(),
        seed,
        timestamp: EPOCH,
        grub: None,
    }
}

fn boot(disk: &Path, work: &Path, uefi: bool) -> (bool, Duration, String) {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
    ])
    .args(["-serial", "stdio", "-monitor", "none"])
    .arg("-drive")
    .arg(format!("file={},format=raw,if=ide", disk.display()));
    if uefi {
        let vars = work.join("OVMF_VARS.fd");
        std::fs::copy("/usr/share/OVMF/OVMF_VARS.fd", &vars).unwrap();
        cmd.arg("-drive")
            .arg("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd")
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = start + Duration::from_secs(300);
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut buf = [0u8; 4096];
        let mut reached = None;
        loop {
            match std::io::Read::read(&mut stdout, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.extend_from_slice(&buf[..n]);
                    if reached.is_none() && String::from_utf8_lossy(&log).contains(MARKER) {
                        reached = Some(start.elapsed());
                    }
                }
            }
        }
        (reached, log)
    });
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (reached, log) = reader.join().unwrap();
    let log = String::from_utf8_lossy(&log).into_owned();
    (reached.is_some(), reached.unwrap_or_default(), log)
}

struct Fixture {
    _work: tempfile::TempDir,
    disk: PathBuf,
    work: PathBuf,
}

fn fixture(esp_size_bytes: Option<u64>) -> Option<Fixture> {
    let Some(kernel) = env_path("JEOS_TEST_KERNEL") else {
        crate::skip("JEOS_TEST_KERNEL is not set to a kernel image");
        return None;
    };
    let Some(loaders) = env_path("JEOS_TEST_LOADERS") else {
        crate::skip("JEOS_TEST_LOADERS is not set to extracted loader packages");
        return None;
    };
    if !have("mkfs.ext4", "-V") || !have("gcc", "--version") {
        crate::skip("mkfs.ext4 (e2fsprogs) or gcc not installed");
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(init) = build_init(work.path()) else {
        crate::skip("gcc -static failed (libc6-dev static libraries missing?)");
        return None;
    };
    let loaders = BootloaderFiles::from_extracted(&loaders).unwrap();
    let mut plan = plan(work.path(), std::fs::read(kernel).unwrap(), init, loaders);
    plan.esp_size_bytes = esp_size_bytes;
    let disk = work.path().join("disk.raw");
    let start = Instant::now();
    let report = write_disk(&plan, &disk).unwrap();
    eprintln!(
        "write_disk: {:?}, disk {} bytes, ESP {} bytes ({:?}), root {} bytes",
        start.elapsed(),
        report.size_bytes,
        report.esp_size_bytes,
        report.esp_fat_type,
        report.root_size_bytes
    );
    let table = read_gpt(&disk).unwrap();
    let esp = report.layout.partition(PartitionRole::Esp).unwrap();
    assert_eq!(table.entries[0].unique_guid, esp.unique_guid);
    assert_eq!(table.entries[0].attributes & 4, 4);
    // Same plan, same bytes.
    let again = work.path().join("again.raw");
    write_disk(&plan, &again).unwrap();
    assert!(
        std::fs::read(&disk).unwrap() == std::fs::read(&again).unwrap(),
        "write_disk is not reproducible"
    );
    std::fs::remove_file(&again).unwrap();
    let work_path = work.path().to_owned();
    Some(Fixture {
        _work: work,
        disk,
        work: work_path,
    })
}

fn qemu_ready(uefi: bool) -> bool {
    if !have("qemu-system-x86_64", "--version") {
        crate::skip("qemu-system-x86_64 (qemu-system-x86) not installed");
        return false;
    }
    if uefi && !Path::new("/usr/share/OVMF/OVMF_CODE.fd").exists() {
        crate::skip("/usr/share/OVMF/OVMF_CODE.fd (ovmf) not installed");
        return false;
    }
    true
}

#[test]
fn disk_boots_with_seabios() {
    if !qemu_ready(false) {
        return;
    }
    let Some(f) = fixture(None) else { return };
    let (ok, elapsed, log) = boot(&f.disk, &f.work, false);
    assert!(ok, "BIOS boot did not reach /init; console:\n{log}");
    eprintln!("BIOS (SeaBIOS + SYSLINUX) boot to /init under TCG: {elapsed:?}");
}

/// A 64 MiB ESP is FAT32: SYSLINUX and OVMF must both read it.
#[test]
fn disk_with_fat32_esp_boots_with_seabios_and_ovmf() {
    if !qemu_ready(true) {
        return;
    }
    let Some(f) = fixture(Some(64 * 1024 * 1024)) else {
        return;
    };
    for uefi in [false, true] {
        let (ok, elapsed, log) = boot(&f.disk, &f.work, uefi);
        assert!(
            ok,
            "FAT32 ESP boot (uefi={uefi}) did not reach /init; console:\n{log}"
        );
        eprintln!("FAT32 ESP, uefi={uefi}: boot to /init under TCG: {elapsed:?}");
    }
}

#[test]
fn disk_boots_with_ovmf() {
    if !qemu_ready(true) {
        return;
    }
    let Some(f) = fixture(None) else { return };
    let (ok, elapsed, log) = boot(&f.disk, &f.work, true);
    assert!(ok, "UEFI boot did not reach /init; console:\n{log}");
    eprintln!("UEFI (OVMF + systemd-boot) boot to /init under TCG: {elapsed:?}");
}
