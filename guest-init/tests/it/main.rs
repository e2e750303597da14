//! Integration tests for guest-init: the binary as a host process, and (when a Debian
//! kernel is provided) a real boot in QEMU.
#![allow(
    clippy::too_many_lines,
    reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
)]
#![allow(
    clippy::tests_outside_test_module,
    clippy::print_stderr,
    reason = "an integration-test crate is all tests, and skips are reported on stderr"
)]

mod cli;
mod qemu_boot;

use std::path::{Path, PathBuf};

/// A temporary directory removed on drop, with helpers to write fixture files.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let path =
            std::env::temp_dir().join(format!("guest-init-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` at `relative`, creating parent directories.
    pub fn create(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(relative);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write fixture");
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
