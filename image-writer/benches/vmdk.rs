//! VMDK (and qcow2) write throughput against `qemu-img convert`, printed as a table.
//!
//! Run: `cargo bench -p image-writer --bench vmdk`. Builds a 256 MiB raw disk holding
//! ~60 MB of filesystem-like data (real shared libraries from /usr/lib plus generated
//! text, at 4 KiB-aligned offsets with holes between them), then times each writer
//! (best of 5) and reports output sizes. `qemu-img` rows are skipped when it is absent.
#![allow(clippy::print_stdout, reason = "a benchmark report is its output")]

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use image_writer::ova::reporter::NoReporter;
use image_writer::qcow2::{Qcow2Config, write_qcow2};
use image_writer::vmdk::{VmdkConfig, write_vmdk};

const DISK_BYTES: u64 = 256 << 20;
const DATA_TARGET: u64 = 60_000_000;

fn library_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/bin"] {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        files.extend(names.into_iter().filter(|p| p.is_file()));
    }
    files
}

fn make_disk(path: &Path) -> u64 {
    let mut f = fs::File::create(path).expect("create raw");
    f.set_len(DISK_BYTES).expect("size raw");
    let mut offset = 1 << 20;
    let mut written = 0u64;
    let mut text_seed = 1u64;
    let files = library_files();
    let mut next_file = files.iter();
    while written < DATA_TARGET {
        // Two thirds binaries, one third text (logs, configs, docs).
        let bytes = if !written.is_multiple_of(3) || files.is_empty() {
            match next_file.next().and_then(|p| fs::read(p).ok()) {
                Some(b) if !b.is_empty() && b.len() < 8 << 20 => b,
                Some(_) => continue,
                None => break,
            }
        } else {
            text_seed += 1;
            text(text_seed, 200_000)
        };
        let len = u64::try_from(bytes.len()).expect("fits");
        if offset + len > DISK_BYTES - (1 << 20) {
            break;
        }
        f.seek(SeekFrom::Start(offset)).expect("seek");
        f.write_all(&bytes).expect("write");
        written += len;
        // Leave free space between files, as a filesystem does.
        offset = (offset + len + (len / 4)).next_multiple_of(4096);
    }
    f.sync_all().expect("sync");
    written
}

fn text(seed: u64, len: usize) -> Vec<u8> {
    let words = [
        "the",
        "appliance",
        "nginx",
        "request",
        "GET",
        "/index.html",
        "200",
        "debian",
        "kernel",
        "module",
        "loaded",
        "systemd",
        "jeos",
        "config",
        "=",
        "true",
        "\n",
        " ",
        " ",
        "2026-11-22",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[usize::try_from(x % 20).expect("small")].as_bytes());
    }
    out.truncate(len);
    out
}

fn best_of(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("n > 0")
}

fn qemu_img_present() -> bool {
    Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    let dir = std::env::temp_dir().join(format!("jeos-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("bench dir");
    let raw = dir.join("disk.raw");
    let data = make_disk(&raw);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "raw disk: {} MiB, {:.1} MB of data, {cpus} CPU(s) available",
        DISK_BYTES >> 20,
        data as f64 / 1e6
    );
    println!(
        "{:<44} {:>9} {:>10} {:>12}",
        "writer", "time s", "MiB/s", "size bytes"
    );
    let mut rows: Vec<(String, Duration, u64)> = Vec::new();
    let mut run = |name: String, out: &Path, f: &mut dyn FnMut()| {
        let t = best_of(5, f);
        let size = fs::metadata(out).map_or(0, |m| m.len());
        println!(
            "{name:<44} {:>9.3} {:>10.1} {size:>12}",
            t.as_secs_f64(),
            (DISK_BYTES >> 20) as f64 / t.as_secs_f64()
        );
        rows.push((name, t, size));
    };
    let out = dir.join("out.vmdk");
    if qemu_img_present() {
        run(
            "qemu-img convert -O vmdk streamOptimized".into(),
            &out,
            &mut || {
                let s = Command::new("qemu-img")
                    .args([
                        "convert",
                        "-f",
                        "raw",
                        "-O",
                        "vmdk",
                        "-o",
                        "subformat=streamOptimized",
                    ])
                    .arg(&raw)
                    .arg(&out)
                    .status()
                    .expect("qemu-img");
                assert!(s.success());
            },
        );
    } else {
        println!("SKIPPED: qemu-img rows (qemu-img not found)");
    }
    for (level, threads) in [(1, 0), (3, 0), (4, 0), (6, 0), (4, 1), (6, 1)] {
        let config = VmdkConfig {
            level,
            threads,
            ..VmdkConfig::default()
        };
        let t = if threads == 0 {
            "all".to_owned()
        } else {
            threads.to_string()
        };
        run(
            format!("jeos vmdk level {level}, threads {t}"),
            &out,
            &mut || {
                write_vmdk(&raw, &out, &config, &NoReporter).expect("write_vmdk");
            },
        );
    }
    let out = dir.join("out.qcow2");
    if qemu_img_present() {
        run("qemu-img convert -O qcow2".into(), &out, &mut || {
            let s = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&out)
                .status()
                .expect("qemu-img");
            assert!(s.success());
        });
    }
    run("jeos qcow2".into(), &out, &mut || {
        write_qcow2(&raw, &out, &Qcow2Config::default(), &NoReporter).expect("write_qcow2");
    });
    if let Some((_, q, qsize)) = rows
        .first()
        .filter(|r| r.0.starts_with("qemu-img"))
        .cloned()
    {
        for (name, t, size) in rows.iter().filter(|r| r.0.starts_with("jeos vmdk")) {
            println!(
                "{name}: {:.2}x faster than qemu-img, size {:+.1}%",
                q.as_secs_f64() / t.as_secs_f64(),
                (*size as f64 / qsize as f64 - 1.0) * 100.0
            );
        }
    }
    let _ = fs::remove_dir_all(&dir);
}
