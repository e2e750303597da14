//! The QEMU backend on real QEMU: a SeaBIOS boot of a disk whose boot sector prints
//! protocol lines on COM1 and then resets or powers off (ICH9 PM1a_CNT, `SLP_EN`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use test_vm::{ExitReason, Firmware, NoReporter, RunConfig, VmmKind};

fn qemu_or_skip() -> bool {
    crate::prerequisite(
        Command::new(test_vm::qemu::QEMU_BINARY)
            .arg("--version")
            .output()
            .is_ok(),
        "qemu-system-x86_64 is not installed",
    )
}

/// Builds a 1 MiB disk whose MBR prints `message` on the console (COM1), then `protocol`
/// on the protocol channel (COM2), and then runs `finish`.
pub fn boot_sector_disk(
    dir: &Path,
    message: &str,
    protocol: &str,
    finish: &str,
) -> Option<std::path::PathBuf> {
    if !crate::prerequisite(
        Command::new("as").arg("--version").output().is_ok(),
        "binutils `as` is not installed",
    ) {
        return None;
    }
    let source = format!(
        r#".intel_syntax noprefix
.code16
.text
.globl _start
_start:
    cli
    xor ax, ax
    mov ds, ax
    mov si, offset msg
1:  lodsb
    test al, al
    jz 2f
    mov dx, 0x3f8
    out dx, al
    jmp 1b
2:  mov si, offset proto
4:  lodsb
    test al, al
    jz 5f
    mov dx, 0x2f8
    out dx, al
    jmp 4b
5:
{finish}
3:  hlt
    jmp 3b
msg: .asciz "{message}"
proto: .asciz "{protocol}"
.org 510
.word 0xaa55
"#
    );
    let s = dir.join("mbr.S");
    let o = dir.join("mbr.o");
    let bin = dir.join("mbr.bin");
    std::fs::write(&s, source).unwrap();
    assert!(
        Command::new("as")
            .args(["--32", "-o"])
            .arg(&o)
            .arg(&s)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("ld")
            .args([
                "-m",
                "elf_i386",
                "--oformat",
                "binary",
                "-Ttext=0x7c00",
                "-o"
            ])
            .arg(&bin)
            .arg(&o)
            .status()
            .unwrap()
            .success()
    );
    let mut disk = std::fs::read(&bin).unwrap();
    assert_eq!(disk.len(), 512);
    disk.resize(1 << 20, 0);
    let path = dir.join("disk.raw");
    std::fs::write(&path, disk).unwrap();
    Some(path)
}

fn config(dir: &Path, disk: std::path::PathBuf) -> RunConfig {
    let mut config = RunConfig::new("unused".into(), "", dir.join("console.log"));
    config.kernel = None;
    config.firmware = Some(Firmware::Bios);
    config.disk = Some(disk);
    config.memory_mib = 64;
    config.timeout = Duration::from_secs(60);
    config
}

#[test]
fn qemu_bios_boot_collects_protocol_and_reset() {
    if !qemu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = boot_sector_disk(
        dir.path(),
        "JEOS1 check index=0 status=fail ms=1 name=forged detail=x\\n",
        "JEOS1 ready boot_ms=5 cpus=1 initramfs_ms=1 root_ms=2 services_ms=3\\nJEOS1 done passed=0 failed=0\\n",
        "    mov al, 0xfe\n    out 0x64, al",
    ) else {
        return;
    };
    let before = std::fs::read(&disk).unwrap();
    let kvm = test_vm::check_host().can_boot_linux();
    let outcome =
        test_vm::qemu::run_qemu(config(dir.path(), disk.clone()), Arc::new(NoReporter), kvm)
            .unwrap();
    assert_eq!(outcome.vmm, VmmKind::Qemu);
    assert_eq!(outcome.exit, ExitReason::Reset, "{outcome:?}");
    assert_eq!(outcome.events.len(), 2, "{outcome:?}");
    assert!(outcome.passed());
    assert_eq!(std::fs::read(&disk).unwrap(), before);
    let log = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
    // The console carries the forged line, and it is not a result.
    assert!(log.contains("name=forged"), "{log}");
    assert!(!format!("{:?}", outcome.events).contains("forged"));
}

#[test]
fn qemu_power_off_and_timeout() {
    if !qemu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = boot_sector_disk(
        dir.path(),
        "bye\\n",
        "",
        "    mov dx, 0x604\n    mov ax, 0x2000\n    out dx, ax",
    ) else {
        return;
    };
    let kvm = test_vm::check_host().can_boot_linux();
    let outcome =
        test_vm::qemu::run_qemu(config(dir.path(), disk), Arc::new(NoReporter), kvm).unwrap();
    assert_eq!(outcome.exit, ExitReason::PowerOff, "{outcome:?}");

    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = boot_sector_disk(dir.path(), "spin\\n", "", "    jmp 5b") else {
        return;
    };
    let mut cfg = config(dir.path(), disk);
    cfg.timeout = Duration::from_secs(3);
    let outcome = test_vm::qemu::run_qemu(cfg, Arc::new(NoReporter), kvm).unwrap();
    assert_eq!(outcome.exit, ExitReason::Timeout, "{outcome:?}");
    assert_eq!(outcome.console_tail, "spin\n");
}

/// A write to the pvpanic port (0x505) ends the run as a panic at once, with no console
/// text to go by.
#[test]
fn qemu_pvpanic_write_is_a_panic() {
    if !qemu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = boot_sector_disk(
        dir.path(),
        "quiet\\n",
        "",
        "    mov dx, 0x505\n    mov al, 1\n    out dx, al",
    ) else {
        return;
    };
    let kvm = test_vm::check_host().can_boot_linux();
    let outcome =
        test_vm::qemu::run_qemu(config(dir.path(), disk), Arc::new(NoReporter), kvm).unwrap();
    assert_eq!(outcome.exit, ExitReason::Panic, "{outcome:?}");
    assert!(outcome.duration < Duration::from_secs(30), "{outcome:?}");
}
