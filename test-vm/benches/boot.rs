//! Start → first serial byte → exit for a trivial guest: the embedded runner against
//! `qemu-system-x86_64 -accel kvm` running the same instructions (real mode from `-bios`,
//! since QEMU cannot enter a bzImage's 64-bit entry directly). Prints a table.
//!
//! Run: `cargo bench -p test-vm --bench boot` (target: embedded <= 1/5 of QEMU).
#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use test_vm::boot::synthetic_bzimage;
use test_vm::{ExitReason, NoReporter, RunConfig, check_host};

const ITERATIONS: usize = 20;

/// mov al,'H'; mov dx,0x3f8; out dx,al; mov al,0xfe; out 0x64,al; hlt; jmp $-1
/// (the same bytes decode identically in 16- and 64-bit mode with the 0x66 prefix adjusted).
const GUEST_64: [u8; 14] = [
    0xb0, 0x48, 0x66, 0xba, 0xf8, 0x03, 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd,
];
const GUEST_16: [u8; 13] = [
    0xb0, 0x48, 0xba, 0xf8, 0x03, 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd,
];

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:8.2} ms", d.as_secs_f64() * 1000.0)
}

fn bench_embedded(dir: &std::path::Path) -> Option<(Duration, Duration)> {
    let kernel = dir.join("guest.bzImage");
    std::fs::write(&kernel, synthetic_bzimage(&GUEST_64)).ok()?;
    let (mut first, mut total) = (Vec::new(), Vec::new());
    for _ in 0..ITERATIONS {
        let mut config = RunConfig::new(kernel.clone(), "", dir.join("console.log"));
        config.memory_mib = 32;
        config.timeout = Duration::from_secs(10);
        let outcome = test_vm::runner::run_embedded(config, Arc::new(NoReporter)).ok()?;
        assert_eq!(outcome.exit, ExitReason::Reset);
        assert_eq!(outcome.console_tail, "H");
        first.push(outcome.first_byte_at?);
        total.push(outcome.duration);
    }
    Some((median(first), median(total)))
}

fn bench_qemu(dir: &std::path::Path, machine: &str) -> Option<(Duration, Duration)> {
    // A 64 KiB BIOS image: the reset vector at 0xffff0 holds the guest.
    let mut bios = vec![0xf4u8; 64 * 1024];
    bios[0xfff0..0xfff0 + GUEST_16.len()].copy_from_slice(&GUEST_16);
    let path = dir.join("bios.bin");
    std::fs::write(&path, bios).ok()?;
    let (mut first, mut total) = (Vec::new(), Vec::new());
    for _ in 0..ITERATIONS {
        let started = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
            .args(["-accel", "kvm", "-m", "32M", "-machine", machine, "-bios"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut stdout = child.stdout.take()?;
        let mut byte = [0u8; 1];
        stdout.read_exact(&mut byte).ok()?;
        first.push(started.elapsed());
        assert_eq!(byte[0], b'H');
        child.wait().ok()?;
        total.push(started.elapsed());
    }
    Some((median(first), median(total)))
}

fn main() {
    let status = check_host();
    if !status.can_open() {
        println!("SKIPPED: {}", status.reason());
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "boot benchmark, median of {ITERATIONS} runs ({})",
        status.reason()
    );
    println!("{:<34} {:>11} {:>11}", "backend", "first byte", "exit");
    let embedded = bench_embedded(dir.path());
    match embedded {
        Some((f, t)) => println!(
            "{:<34} {} {}",
            "embedded runner (64-bit entry)",
            ms(f),
            ms(t)
        ),
        None => println!("{:<34} failed", "embedded runner"),
    }
    {
        let machine = "pc";
        let label = format!("qemu -accel kvm -M {machine} (-bios)");
        match bench_qemu(dir.path(), machine) {
            Some((f, t)) => {
                let ratio = embedded.map_or(String::new(), |(_, e)| {
                    format!("  (embedded = 1/{:.1})", t.as_secs_f64() / e.as_secs_f64())
                });
                println!("{label:<34} {} {}{ratio}", ms(f), ms(t));
            }
            None => println!("{label:<34} SKIPPED (qemu missing or failed)"),
        }
    }
}
