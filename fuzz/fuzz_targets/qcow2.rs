//! qcow2 images are untrusted input to `jeos inspect/ls/cat/diff` and to the writer's
//! read-back: any bytes must give a clean error or data, never a panic, an out-of-bounds
//! read or an allocation beyond a couple of clusters. Seeds: `image-writer` unit tests
//! write `corpus/qcow2/`.
#![no_main]

use std::io::sink;

use image_writer::image::qcow2::Qcow2Source;
use image_writer::image::{ByteSource, MemSource};
use libfuzzer_sys::fuzz_target;

fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("jeos-fuzz-qcow2-{}.qcow2", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mut disk) = Qcow2Source::open(Box::new(MemSource(data.to_vec()))) {
        let len = disk.len();
        let mut buf = vec![0u8; 256 * 1024];
        for offset in [0, len / 3, len.saturating_sub(buf.len() as u64)] {
            let n = (len - offset.min(len)).min(buf.len() as u64) as usize;
            let _ = disk.read_at(offset, &mut buf[..n]);
        }
    }
    // The streaming reader writes the whole virtual disk: only for small ones.
    let size = data.get(24..32).map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
    if size <= 16 << 20 {
        let path = scratch();
        std::fs::write(&path, data).expect("scratch file");
        let _ = image_writer::qcow2::read_qcow2(&path, &mut sink());
    }
});
