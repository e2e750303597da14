use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use test_vm::boot::synthetic_bzimage;
use test_vm::{
    ExitReason, NoReporter, PowerButton, RunConfig, RunOutcome, RunReporter, check_host,
};

use crate::guest::{LINUX_STAND_IN, assemble};

fn kvm_or_skip() -> bool {
    let status = check_host();
    crate::prerequisite(status.can_open(), status.reason())
}

fn write_kernel(dir: &Path, name: &str, body: &str) -> Option<PathBuf> {
    let code = assemble(dir, name, body)?;
    let path = dir.join(format!("{name}.bzImage"));
    std::fs::write(&path, synthetic_bzimage(&code)).unwrap();
    Some(path)
}

fn run(config: RunConfig) -> RunOutcome {
    test_vm::runner::run_embedded(config, Arc::new(NoReporter)).expect("the VM starts")
}

fn line<'a>(outcome: &'a RunOutcome, prefix: &str) -> Vec<&'a str> {
    outcome
        .console_tail
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

fn hex(value: u64) -> String {
    format!("{value:016x}")
}

#[test]
fn linux_stand_in_reads_boot_info_acpi_and_disk_then_resets() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(kernel) = write_kernel(dir.path(), "standin", LINUX_STAND_IN) else {
        return;
    };
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, b"INITRAMFS-payload-bytes").unwrap();
    let disk = dir.path().join("disk.raw");
    let image: Vec<u8> = (0..16 * 512u32)
        .map(|i| ((i / 512) * 16 + i % 7) as u8)
        .collect();
    std::fs::write(&disk, &image).unwrap();

    let mut config = RunConfig::new(
        kernel,
        "console=ttyS0 reboot=k",
        dir.path().join("console.log"),
    );
    config.initramfs = Some(initrd);
    config.disk = Some(disk.clone());
    config.memory_mib = 64;
    config.smoke_test = true;
    config.timeout = Duration::from_secs(20);
    let outcome = run(config);
    let log = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
    assert_eq!(outcome.exit, ExitReason::Reset, "console:\n{log}");
    assert!(!log.contains("FAIL"), "{log}");

    let mem_end: u64 = 64 << 20;
    assert_eq!(line(&outcome, "E820 ")[0], hex(3));
    assert_eq!(
        line(&outcome, "E820 ")[1],
        format!("{} {} {}", hex(0), hex(0x9fc00), hex(1))
    );
    assert_eq!(
        line(&outcome, "E820 ")[2],
        format!("{} {} {}", hex(0xe0000), hex(0x20000), hex(2))
    );
    assert_eq!(
        line(&outcome, "E820 ")[3],
        format!("{} {} {}", hex(0x10_0000), hex(mem_end - 0x10_0000), hex(1))
    );
    assert_eq!(
        line(&outcome, "CMDLINE "),
        ["console=ttyS0 reboot=k jeos.protocol=/dev/ttyS1 jeos.test=1 jeos.nic=none"]
    );
    let first8 = u64::from_le_bytes(*b"INITRAMF");
    assert_eq!(
        line(&outcome, "INITRD "),
        [format!(
            "{} {} {}",
            hex(mem_end - 0x1000),
            hex(23),
            hex(first8)
        )]
    );
    assert_eq!(line(&outcome, "MMIO "), [hex(0xd000_0000)]);
    assert_eq!(line(&outcome, "DEV "), [hex(2)]);
    assert_eq!(line(&outcome, "USED "), [hex(1)]);
    assert_eq!(line(&outcome, "STATUS "), [hex(0)]);
    let sector3 = u64::from_le_bytes(image[3 * 512..3 * 512 + 8].try_into().unwrap());
    assert_eq!(line(&outcome, "DATA "), [hex(sector3)]);
    assert_eq!(line(&outcome, "WRITE "), [hex(0)]);
    assert_eq!(line(&outcome, "READBACK "), [hex(0x5a5a_5a5a_5a5a_5a5a)]);
    // The guest wrote sector 5: the image file is unchanged (copy-on-write overlay).
    assert_eq!(std::fs::read(&disk).unwrap(), image);
    assert!(outcome.first_byte_at.is_some());
    assert!(
        outcome.device_warnings.is_empty(),
        "{:?}",
        outcome.device_warnings
    );
}

#[test]
fn hanging_guest_ends_at_the_timeout() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(kernel) = write_kernel(
        dir.path(),
        "hang",
        "    mov al, 0x48\n    call putc\n    cli\n9:  hlt\n    jmp 9b\n",
    ) else {
        return;
    };
    let mut config = RunConfig::new(kernel, "", dir.path().join("console.log"));
    config.memory_mib = 32;
    config.timeout = Duration::from_millis(500);
    let outcome = run(config);
    assert_eq!(outcome.exit, ExitReason::Timeout);
    assert_eq!(outcome.console_tail, "H");
    assert!(outcome.duration >= Duration::from_millis(500));
    assert!(
        outcome.duration < Duration::from_secs(5),
        "{:?}",
        outcome.duration
    );
}

#[test]
fn busy_looping_guest_ends_at_the_timeout() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(kernel) = write_kernel(dir.path(), "spin", "9:  jmp 9b\n") else {
        return;
    };
    let mut config = RunConfig::new(kernel, "", dir.path().join("console.log"));
    config.memory_mib = 32;
    config.timeout = Duration::from_millis(300);
    let outcome = run(config);
    assert_eq!(outcome.exit, ExitReason::Timeout);
    assert!(
        outcome.duration < Duration::from_secs(5),
        "{:?}",
        outcome.duration
    );
}

#[test]
fn triple_fault_is_reported() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The boot IDT is empty: #UD -> #NP -> #DF -> triple fault.
    let Some(kernel) = write_kernel(dir.path(), "tf", "    ud2\n") else {
        return;
    };
    let mut config = RunConfig::new(kernel, "", dir.path().join("console.log"));
    config.memory_mib = 32;
    config.timeout = Duration::from_secs(10);
    let outcome = run(config);
    assert_eq!(outcome.exit, ExitReason::TripleFault, "{outcome:?}");
}

/// Results come from COM2 only: the same lines on the console (COM1) are a log.
#[test]
fn protocol_lines_come_from_com2_and_console_lines_are_a_log() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
    lea rdi, [rip + s_forged]
    call puts
    lea rsi, [rip + s_lines]
    mov dx, 0x2f8
1:  mov al, byte ptr [rsi]
    test al, al
    jz 2f
    out dx, al
    inc rsi
    jmp 1b
2:  lea rdi, [rip + s_panic]
    call puts
9:  jmp 9b
s_forged: .ascii "[ 0.5] noise JEOS1 check index=0 status=fail ms=3 name=forged detail=x\n"
    .asciz "JEOS1 done passed=0 failed=1\n"
s_lines: .ascii "JEOS1 ready boot_ms=42 cpus=1 initramfs_ms=10 root_ms=20 services_ms=30\n"
    .ascii "JEOS1 check index=0 status=pass ms=3 name=serves%20page detail=ok\n"
    .asciz "JEOS1 done passed=1 failed=0\n"
s_panic: .asciz "Kernel panic - not syncing: test\n"
"#;
    let Some(kernel) = write_kernel(dir.path(), "panic", body) else {
        return;
    };
    let mut config = RunConfig::new(kernel, "", dir.path().join("console.log"));
    config.memory_mib = 32;
    config.timeout = Duration::from_secs(20);
    let outcome = run(config);
    assert_eq!(outcome.exit, ExitReason::Panic);
    assert_eq!(outcome.events.len(), 3, "{:?}", outcome.events);
    assert!(
        outcome
            .events
            .iter()
            .all(|e| !format!("{e:?}").contains("forged")),
        "{:?}",
        outcome.events
    );
    assert!(
        outcome.protocol_errors.is_empty(),
        "{:?}",
        outcome.protocol_errors
    );
    assert!(outcome.ready_at.is_some());
    assert!(outcome.console_tail.contains("name=forged"));
    assert!(outcome.duration < Duration::from_secs(10));
    assert!(!outcome.passed(), "a panic is never a pass");
}

#[test]
fn power_off_through_acpi_sleep_register() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let body = "    mov al, 0x34\n    mov dx, 0x3c0\n    out dx, al\n9:  jmp 9b\n";
    let Some(kernel) = write_kernel(dir.path(), "s5", body) else {
        return;
    };
    let mut config = RunConfig::new(kernel, "", dir.path().join("console.log"));
    config.memory_mib = 32;
    config.vcpus = 2;
    let outcome = run(config);
    assert_eq!(outcome.exit, ExitReason::PowerOff);
}

/// Presses the power button when the guest prints `READY` (it has set up its handler).
struct PressWhenReady(PowerButton);

impl RunReporter for PressWhenReady {
    fn on_console_line(&self, line: &str) {
        if line == "READY" {
            self.0.press().expect("the GED interrupt is raised");
        }
    }
}

fn run_with_button(kernel: PathBuf, dir: &Path, grace: Duration) -> RunOutcome {
    let button = PowerButton::new(grace);
    let mut config = RunConfig::new(kernel, "", dir.join("console.log"));
    config.memory_mib = 32;
    config.timeout = Duration::from_secs(30);
    config.power_button = Some(button.clone());
    let outcome = test_vm::runner::run_embedded(config, Arc::new(PressWhenReady(button.clone())))
        .expect("the VM starts");
    assert!(button.pressed_at().is_some(), "{outcome:?}");
    outcome
}

/// A guest that takes the GED interrupt the way an OS does: IOAPIC pin 23 (the GSI the
/// DSDT's `_CRS` names) routed to vector 0x30, the local APIC enabled, an IDT gate for the
/// vector. Its handler reads the event register the DSDT's `_EVT` reads (0xd100_0000),
/// prints it and, for the power-button bit, powers off through the sleep register.
const GED_GUEST: &str = r#"
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
    mov rdi, 0x300300
    lea rax, [rip + on_irq]
    mov word ptr [rdi], ax
    mov word ptr [rdi + 2], cs
    mov word ptr [rdi + 4], 0x8e00
    shr rax, 16
    mov word ptr [rdi + 6], ax
    shr rax, 16
    mov dword ptr [rdi + 8], eax
    mov dword ptr [rdi + 12], 0
    mov rdi, 0x300ff0
    mov word ptr [rdi], 0x30f
    mov qword ptr [rdi + 2], 0x300000
    lidt [rdi]
    mov rdi, 0xfee000f0
    mov dword ptr [rdi], 0x1ff
    mov rdi, 0xfec00000
    mov dword ptr [rdi], 0x3e
    mov dword ptr [rdi + 0x10], 0x30
    mov dword ptr [rdi], 0x3f
    mov dword ptr [rdi + 0x10], 0
    lea rdi, [rip + s_ready]
    call puts
    sti
1:  hlt
    jmp 1b
on_irq:
    mov rbx, 0xd1000000
    mov eax, dword ptr [rbx]
    lea rdi, [rip + s_ged]
    call puts
    call puthex
    call nl
    test eax, 1
    jz 2f
    mov eax, dword ptr [rbx]
    lea rdi, [rip + s_ged]
    call puts
    call puthex
    call nl
    mov al, 0x34
    mov dx, 0x3c0
    out dx, al
2:  lea rdi, [rip + s_fail]
    call puts
    jmp reset
s_ready: .asciz "READY\n"
s_ged: .asciz "GED "
s_fail: .asciz "FAIL\n"
"#;

#[test]
fn power_button_press_reaches_the_guest_through_the_ged_and_it_powers_off() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(kernel) = write_kernel(dir.path(), "ged", GED_GUEST) else {
        return;
    };
    let outcome = run_with_button(kernel, dir.path(), Duration::from_secs(10));
    assert_eq!(
        outcome.exit,
        ExitReason::PoweredOffOnRequest,
        "console:\n{}",
        outcome.console_tail
    );
    assert!(outcome.exit.is_clean());
    // The first read has the button bit; the read cleared it.
    assert_eq!(
        line(&outcome, "GED "),
        [hex(1), hex(0)],
        "{}",
        outcome.console_tail
    );
    assert!(!outcome.console_tail.contains("FAIL"));
    assert!(
        outcome.duration < Duration::from_secs(10),
        "{:?}",
        outcome.duration
    );
}

#[test]
fn guest_ignoring_the_power_button_is_stopped_after_the_grace_period() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let body = "    lea rdi, [rip + s_ready]\n    call puts\n    cli\n9:  hlt\n    jmp 9b\ns_ready: .asciz \"READY\\n\"\n";
    let Some(kernel) = write_kernel(dir.path(), "deaf", body) else {
        return;
    };
    let grace = Duration::from_millis(400);
    let outcome = run_with_button(kernel, dir.path(), grace);
    assert_eq!(outcome.exit, ExitReason::ShutdownIgnored { grace });
    assert!(!outcome.exit.is_clean());
    assert!(outcome.exit.to_string().contains("stopped hard"));
    assert_eq!(outcome.console_tail, "READY\n");
    assert!(outcome.duration >= grace);
    assert!(
        outcome.duration < Duration::from_secs(10),
        "{:?}",
        outcome.duration
    );
}

#[test]
fn pvpanic_write_ends_the_run_as_a_panic_without_console_text() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Reads the device's features (bit 0: panic) and reports a panic only if offered.
    let body = "    mov dx, 0x505\n    in al, dx\n    and al, 1\n    out dx, al\n9:  jmp 9b\n";
    let Some(kernel) = write_kernel(dir.path(), "pvpanic", body) else {
        return;
    };
    let mut config = RunConfig::new(kernel, "", dir.path().join("console.log"));
    config.memory_mib = 32;
    config.timeout = Duration::from_secs(10);
    let outcome = run(config);
    assert_eq!(outcome.exit, ExitReason::Panic, "{outcome:?}");
    assert_eq!(outcome.console_tail, "");
    assert!(outcome.duration < Duration::from_secs(5));
}
