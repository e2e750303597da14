//! Disk writer timings (image-disk): FAT ESP, initramfs and ext4 root of about 40 MB.
//! Prints a table; run with `cargo bench -p image-writer --bench disk` (or
//! `cargo test -p image-writer --bench disk` for a quick unoptimised-crate run).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a bench prints its table"
)]

use std::time::Instant;

use image_writer::cpio::{CpioEntry, write_initramfs};
use image_writer::ext4::{Ext4Config, Ext4Size, write_ext4};
use image_writer::fat::{FatConfig, FatDir, build_fat};
use image_writer::layout::Seed;

const MIB: usize = 1024 * 1024;

/// Deterministic, moderately compressible bytes (like binaries).
fn payload(len: usize, salt: u32) -> Vec<u8> {
    let mut x = salt.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i % 4 == 0 {
                (x & 0xFF) as u8
            } else {
                (i % 7) as u8
            }
        })
        .collect()
}

fn main() {
    let files: Vec<(String, Vec<u8>)> = (0..400)
        .map(|i| (format!("usr/lib/f{i:03}.so"), payload(100 * 1024, i)))
        .collect();
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    println!("| step | input | output | time |");
    println!("|---|---|---|---|");

    let mut tree = FatDir::default();
    for (p, d) in &files[..200] {
        tree.insert_file(p, d.clone()).expect("valid path");
    }
    let start = Instant::now();
    let fat = build_fat(
        &FatConfig {
            size_bytes: 64 * MIB as u64,
            volume_label: "ESP".into(),
            volume_id: 1,
            timestamp: 0,
            hidden_sectors: 2048,
        },
        &tree,
    )
    .expect("fits");
    println!(
        "| FAT ESP ({:?}) | {} MB | {} MB | {:?} |",
        fat.fat_type,
        total / 2 / MIB,
        fat.bytes.len() / MIB,
        start.elapsed()
    );

    let entries: Vec<CpioEntry> = files
        .iter()
        .map(|(p, d)| CpioEntry::file(p, 0o644, d.clone()))
        .collect();
    let start = Instant::now();
    let initramfs = write_initramfs(&entries, 0).expect("valid");
    println!(
        "| initramfs (cpio+zstd) | {} MB | {} MB | {:?} |",
        total / MIB,
        initramfs.len() / MIB,
        start.elapsed()
    );

    if std::process::Command::new("mkfs.ext4")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: ext4 row: mkfs.ext4 (e2fsprogs) not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (p, d) in &files {
        let path = dir.path().join("root").join(p);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, d).expect("write");
    }
    let start = Instant::now();
    let report = write_ext4(
        &Ext4Config {
            staging_dir: dir.path().join("root"),
            metadata: Vec::new(),
            size: Ext4Size::Auto {
                free_space_bytes: 0,
            },
            seed: Seed::from_bytes(b"bench"),
            label: "root".into(),
            timestamp: 0,
        },
        &dir.path().join("root.img"),
    )
    .expect("ext4");
    println!(
        "| ext4 root (auto size) | {} MB | {} MB | {:?} |",
        total / MIB,
        report.size_bytes / MIB as u64,
        start.elapsed()
    );
}
