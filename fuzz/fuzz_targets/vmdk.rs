//! Stream-optimized VMDKs are untrusted input to `jeos inspect/ls/cat/diff` and to the
//! writer's validating reader: any bytes give a clean error or data, never a panic or an
//! unbounded allocation. Seeds: `image-writer` unit tests write `corpus/vmdk/`.
#![no_main]

use std::io::sink;

use image_writer::image::vmdk::VmdkSource;
use image_writer::image::{ByteSource, MemSource};
use libfuzzer_sys::fuzz_target;

fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("jeos-fuzz-vmdk-{}.vmdk", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mut disk) = VmdkSource::open(Box::new(MemSource(data.to_vec()))) {
        let len = disk.len();
        let mut buf = vec![0u8; 256 * 1024];
        for offset in [0, len / 3, len.saturating_sub(buf.len() as u64)] {
            let n = (len - offset.min(len)).min(buf.len() as u64) as usize;
            let _ = disk.read_at(offset, &mut buf[..n]);
        }
    }
    // The validating reader emits the whole disk: only for small capacities (sectors).
    let capacity = data.get(12..20).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    if capacity <= 32 << 10 {
        let path = scratch();
        std::fs::write(&path, data).expect("scratch file");
        let mut out = sink();
        let _ = image_writer::vmdk::read_vmdk(&path, Some(&mut out));
    }
});
