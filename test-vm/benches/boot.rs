//! Runner start → first guest instruction → first serial byte → exit, plus peak RSS and
//! CPU time, for a trivial guest: the embedded runner against
//! `qemu-system-x86_64 -accel kvm` running the same instructions (real mode from `-bios`,
//! since QEMU cannot enter a bzImage's 64-bit entry directly). Every sample runs in its
//! own process (this binary re-executed for the embedded runner), so peak RSS and CPU time
//! are the VMM's alone. Prints a table; compare with Firecracker's published figures
//! (<= 125 ms from API call to guest init, 8 CPU-ms VMM start).
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
/// Set in the re-executed child: run one embedded boot and print its timings.
const CHILD_ENV: &str = "JEOS_BENCH_EMBEDDED_CHILD";

/// mov al,'H'; mov dx,0x3f8; out dx,al; mov al,0xfe; out 0x64,al; hlt; jmp $-1
/// (the same bytes decode identically in 16- and 64-bit mode with the 0x66 prefix adjusted).
const GUEST_64: [u8; 14] = [
    0xb0, 0x48, 0x66, 0xba, 0xf8, 0x03, 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd,
];
const GUEST_16: [u8; 13] = [
    0xb0, 0x48, 0xba, 0xf8, 0x03, 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd,
];

/// One sample: first instruction (if known), first byte, exit, peak RSS, CPU time.
#[derive(Clone, Copy)]
struct Sample {
    first_instruction: Option<Duration>,
    first_byte: Duration,
    exit: Duration,
    rss_kib: i64,
    cpu: Duration,
}

fn median<T: Copy + PartialOrd>(mut samples: Vec<T>) -> T {
    samples.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:8.2} ms", d.as_secs_f64() * 1000.0)
}

/// Peak RSS (KiB) and CPU time of the waited-for children so far.
fn children_usage() -> (i64, Duration) {
    // SAFETY: `usage` is a valid, writable rusage; getrusage only writes it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    (usage.ru_maxrss, time(usage.ru_utime) + time(usage.ru_stime))
}

/// The child: one embedded boot, timings on stdout as `first_instruction_ns first_byte_ns exit_ns`.
fn embedded_child(kernel: &str) {
    let mut config = RunConfig::new(
        kernel.into(),
        "",
        std::env::temp_dir().join("jeos-bench.log"),
    );
    config.memory_mib = 32;
    config.timeout = Duration::from_secs(10);
    let outcome = test_vm::runner::run_embedded(config, Arc::new(NoReporter)).expect("boots");
    assert_eq!(outcome.exit, ExitReason::Reset);
    assert_eq!(outcome.console_tail, "H");
    let ns = |d: Option<Duration>| d.map_or(0, |d| d.as_nanos());
    println!(
        "{} {} {}",
        ns(outcome.first_instruction_at),
        ns(outcome.first_byte_at),
        outcome.duration.as_nanos()
    );
}

fn bench_embedded(dir: &std::path::Path) -> Option<Vec<Sample>> {
    let kernel = dir.join("guest.bzImage");
    std::fs::write(&kernel, synthetic_bzimage(&GUEST_64)).ok()?;
    let exe = std::env::current_exe().ok()?;
    let mut samples = Vec::new();
    for _ in 0..ITERATIONS {
        let before = children_usage().1;
        let output = Command::new(&exe)
            .env(CHILD_ENV, &kernel)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let (rss_kib, cpu) = children_usage();
        let text = String::from_utf8(output.stdout).ok()?;
        let values: Vec<u64> = text
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let [first_instruction, first_byte, exit] = values[..] else {
            return None;
        };
        samples.push(Sample {
            first_instruction: Some(Duration::from_nanos(first_instruction)),
            first_byte: Duration::from_nanos(first_byte),
            exit: Duration::from_nanos(exit),
            rss_kib,
            cpu: cpu.saturating_sub(before),
        });
    }
    Some(samples)
}

fn bench_qemu(dir: &std::path::Path, machine: &str) -> Option<Vec<Sample>> {
    // A 64 KiB BIOS image: the reset vector at 0xffff0 holds the guest.
    let mut bios = vec![0xf4u8; 64 * 1024];
    bios[0xfff0..0xfff0 + GUEST_16.len()].copy_from_slice(&GUEST_16);
    let path = dir.join("bios.bin");
    std::fs::write(&path, bios).ok()?;
    let mut samples = Vec::new();
    for _ in 0..ITERATIONS {
        let before = children_usage().1;
        let started = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .env("LC_ALL", "C")
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
        let first_byte = started.elapsed();
        assert_eq!(byte[0], b'H');
        child.wait().ok()?;
        let exit = started.elapsed();
        let (rss_kib, cpu) = children_usage();
        samples.push(Sample {
            first_instruction: None,
            first_byte,
            exit,
            rss_kib,
            cpu: cpu.saturating_sub(before),
        });
    }
    Some(samples)
}

fn print_row(label: &str, samples: &[Sample]) {
    let instructions: Vec<Duration> = samples.iter().filter_map(|s| s.first_instruction).collect();
    let instruction = if instructions.is_empty() {
        format!("{:>11}", "n/a")
    } else {
        ms(median(instructions))
    };
    // Peak RSS over children is a running maximum: the last sample bounds every run.
    let rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    println!(
        "{label:<34} {instruction} {} {} {:>9.1} MiB {}",
        ms(median(samples.iter().map(|s| s.first_byte).collect())),
        ms(median(samples.iter().map(|s| s.exit).collect())),
        rss as f64 / 1024.0,
        ms(median(samples.iter().map(|s| s.cpu).collect())),
    );
}

fn main() {
    if let Ok(kernel) = std::env::var(CHILD_ENV) {
        embedded_child(&kernel);
        return;
    }
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
    println!(
        "{:<34} {:>11} {:>11} {:>11} {:>13} {:>11}",
        "backend", "1st instr", "1st byte", "exit", "peak RSS", "CPU"
    );
    match bench_embedded(dir.path()) {
        Some(samples) => print_row("embedded runner (64-bit entry)", &samples),
        None => println!("{:<34} failed", "embedded runner"),
    }
    // Measured after the embedded runs: RUSAGE_CHILDREN's peak RSS is a running maximum.
    let machine = "pc";
    let label = format!("qemu -accel kvm -M {machine} (-bios)");
    match bench_qemu(dir.path(), machine) {
        Some(samples) => print_row(&label, &samples),
        None => println!("{label:<34} SKIPPED (qemu missing or failed)"),
    }
}
