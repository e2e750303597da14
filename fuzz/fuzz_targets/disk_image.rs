//! Whole images as `jeos inspect/ls/cat/diff` open them: format detection (raw, qcow2,
//! VMDK, OVA), the GPT, the FAT ESP reader (boot loader entry, kernel, initramfs) and the
//! ext4 root through ext4-view. Any bytes give errors or data, never a panic. Seeds:
//! `image-writer` unit tests write `corpus/disk_image/` (a small GPT disk with an ESP).
#![no_main]

use image_writer::image::open_image;
use libfuzzer_sys::fuzz_target;

fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("jeos-fuzz-image-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(&path, data).expect("scratch file");
    let Ok(image) = open_image(&path) else { return };
    let _ = image.partitions();
    let _ = image.boot_files();
    if let Ok(root) = image.root_fs() {
        if let Ok(entries) = root.list("/") {
            for entry in entries.iter().take(16) {
                let _ = root.read(&entry.path);
                let _ = root.list(&entry.path);
            }
        }
    }
});
