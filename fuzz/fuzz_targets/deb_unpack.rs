//! `.deb` files are untrusted until their hash is checked, and the unpacker is the last line
//! of defence against path escapes: any input must either fail cleanly or unpack strictly
//! inside the staging tree, never touching the canary directory next to it.
#![no_main]

use std::io::Cursor;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use package_resolver::deb::{UnpackDir, UnpackOptions};

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("jeos-fuzz-deb-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let base = scratch();
    let root = base.join("root");
    let canary = base.join("canary");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&canary).expect("scratch dir");
    let mut staging = UnpackDir::new(&root).expect("staging dir");
    let options = UnpackOptions {
        max_data_bytes: 64 << 20,
        ..UnpackOptions::default()
    };
    let len = data.len() as u64;
    let _ = staging.unpack_reader(&mut Cursor::new(data), len, &options);
    for path in staging.manifest().keys() {
        assert!(!path.starts_with('/'), "absolute path in manifest: {path}");
        assert!(
            !path.split('/').any(|c| c == ".." || c.is_empty()),
            "bad path: {path}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&canary).expect("canary").count(),
        0,
        "something was written next to the staging tree"
    );
    let siblings = std::fs::read_dir(&base).expect("base").count();
    assert_eq!(siblings, 2, "only `root` and `canary` may exist");
});
