//! Crash-safe replacement of an output directory: at every moment `DIR/<name>-<version>`
//! is either the previous complete build or the new complete build, never missing and
//! never half-written.
//!
//! 1. `renameat2(RENAME_EXCHANGE)` swaps the new directory and the old one atomically
//!    (Linux 3.15+, ext4/xfs/btrfs/tmpfs); the old build, now at the stage path, is deleted
//!    with the work directory.
//! 2. Where the exchange is unsupported, the old directory is moved aside, the new one moved
//!    in, and only then is the old one deleted. If the second rename fails, the old build is
//!    moved back before the error is returned.

use std::io;
use std::path::Path;

/// The renames used, replaceable in tests to inject failures.
pub(super) trait Renamer {
    /// Atomically exchanges `a` and `b`; `Unsupported` when the file system cannot.
    fn exchange(&self, a: &Path, b: &Path) -> io::Result<()>;
    /// `rename(2)`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// The real system calls.
pub(super) struct SystemRenamer;

impl Renamer for SystemRenamer {
    fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(|e| {
            if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS {
                io::Error::new(io::ErrorKind::Unsupported, e)
            } else {
                io::Error::from(e)
            }
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
}

/// What failed, for the caller's error.
#[derive(Debug)]
pub(super) struct ReplaceError {
    pub action: &'static str,
    pub path: std::path::PathBuf,
    pub source: io::Error,
}

fn fail(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReplaceError + use<> {
    let path = path.to_owned();
    move |source| ReplaceError {
        action,
        path,
        source,
    }
}

/// Moves the complete directory `stage` to `target`, replacing a previous `target`.
pub(super) fn replace_dir(
    stage: &Path,
    target: &Path,
    renamer: &dyn Renamer,
) -> Result<(), ReplaceError> {
    if target.symlink_metadata().is_err() {
        return renamer
            .rename(stage, target)
            .map_err(fail("rename into", target));
    }
    match renamer.exchange(stage, target) {
        Ok(()) => {
            // `stage` now holds the previous build.
            let _ = std::fs::remove_dir_all(stage);
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
        Err(e) => return Err(fail("exchange with", target)(e)),
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    let aside = tempfile::Builder::new()
        .prefix(".jeos-build-old-")
        .tempdir_in(parent)
        .map_err(fail("create a directory in", parent))?;
    let old = aside.path().join("previous");
    renamer
        .rename(target, &old)
        .map_err(fail("move aside", target))?;
    if let Err(source) = renamer.rename(stage, target) {
        // Put the previous build back; keep it on disk even if that fails too.
        if renamer.rename(&old, target).is_err() {
            let _ = aside.keep();
        }
        return Err(ReplaceError {
            action: "rename into",
            path: target.to_owned(),
            source,
        });
    }
    drop(aside);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// No exchange support; the `fail_on`-th rename (1-based) fails.
    struct Flaky {
        calls: Cell<u32>,
        fail_on: u32,
    }

    impl Renamer for Flaky {
        fn exchange(&self, _: &Path, _: &Path) -> io::Result<()> {
            Err(io::Error::new(io::ErrorKind::Unsupported, "test"))
        }

        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.calls.set(self.calls.get() + 1);
            if self.calls.get() == self.fail_on {
                return Err(io::Error::other("injected failure"));
            }
            std::fs::rename(from, to)
        }
    }

    fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage");
        let target = dir.path().join("out");
        std::fs::create_dir(&stage).unwrap();
        std::fs::write(stage.join("disk.raw"), "new").unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("disk.raw"), "old").unwrap();
        (dir, stage, target)
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn exchange_replaces_the_previous_build() {
        let (dir, stage, target) = dirs();
        replace_dir(&stage, &target, &SystemRenamer).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("disk.raw")).unwrap(),
            "new"
        );
        assert_eq!(leftovers(dir.path()), ["out"]);
    }

    #[test]
    fn fallback_replaces_and_cleans_up() {
        let (dir, stage, target) = dirs();
        let renamer = Flaky {
            calls: Cell::new(0),
            fail_on: 0,
        };
        replace_dir(&stage, &target, &renamer).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("disk.raw")).unwrap(),
            "new"
        );
        assert_eq!(leftovers(dir.path()), ["out"]);
    }

    /// Issue #10: a failed second rename used to delete the previous good build.
    #[test]
    fn issue_10_failed_second_rename_keeps_the_previous_build() {
        let (dir, stage, target) = dirs();
        let renamer = Flaky {
            calls: Cell::new(0),
            fail_on: 2,
        };
        let err = replace_dir(&stage, &target, &renamer).unwrap_err();
        assert_eq!(err.action, "rename into");
        assert_eq!(
            std::fs::read_to_string(target.join("disk.raw")).unwrap(),
            "old"
        );
        assert_eq!(
            std::fs::read_to_string(stage.join("disk.raw")).unwrap(),
            "new"
        );
        assert_eq!(leftovers(dir.path()), ["out", "stage"]);
    }

    #[test]
    fn first_build_is_a_plain_rename() {
        let (_dir, stage, target) = dirs();
        std::fs::remove_dir_all(&target).unwrap();
        replace_dir(&stage, &target, &SystemRenamer).unwrap();
        assert_eq!(
            std::fs::read_to_string(target.join("disk.raw")).unwrap(),
            "new"
        );
    }
}
