//! Issue #8: a full host disk says "no space left" (and how to get room), not that a
//! package is "truncated or corrupt" or the image "needs about N bytes".

use std::process::Command;

use crate::appliances::built;
use crate::common::TestDir;
use crate::resolve::shared_cache;

/// A tmpfs of `bytes` (needs root), unmounted on drop.
struct SmallFs {
    dir: TestDir,
}

impl SmallFs {
    fn mount(bytes: u64) -> Option<Self> {
        let dir = TestDir::new();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "jeos-full"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            crate::docs::skip_or_fail("cannot mount a small tmpfs (needs root)");
            return None;
        }
        Some(Self { dir })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn issue_8_building_onto_a_full_disk_says_no_space_left() {
    let Some(nginx) = built("nginx") else { return };
    // Room for the work directory's first packages, not for the root file system.
    let Some(full) = SmallFs::mount(8 * 1024 * 1024) else {
        return;
    };
    let output = crate::common::jeos()
        .arg("--cache-dir")
        .arg(shared_cache())
        .arg("build")
        .arg(&nginx.recipe)
        .arg("-o")
        .arg(full.dir.path())
        .output()
        .expect("run jeos");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("no space left on"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: the disk is full"), "{stderr}");
    assert!(!stderr.contains("truncated or corrupt"), "{stderr}");
    assert!(!stderr.contains("needs about"), "{stderr}");
    // Nothing half-written is left behind.
    let left: Vec<_> = std::fs::read_dir(full.dir.path())
        .expect("read output dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the output directory: {left:?}");
}
