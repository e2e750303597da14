//! A CD-ROM's bytes are untrusted: the ISO 9660 reader must bounds-check every record and
//! never read more than the limit it is given.
#![no_main]

use guest_init::deploy::iso9660;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The volume descriptors start at 32 KiB: place the input there.
    let mut image = vec![0u8; 16 * 2048];
    image.extend_from_slice(data);
    let mut dev: &[u8] = &image;
    if let Some(volume) = iso9660::open(&mut dev) {
        for name in ["ovf-env.xml", "meta-data", "network-config"] {
            if let Some(file) = iso9660::read_root_file(&mut dev, &volume, name, 4096) {
                assert!(file.len() <= 4096);
            }
        }
    }
});
