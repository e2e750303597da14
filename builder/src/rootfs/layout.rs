//! The skeleton every appliance gets: merged-/usr symlinks, the base directories (as
//! Debian's `base-files` and the FHS lay them out), and `/sbin/init` plus the
//! `poweroff`/`reboot`/`halt` names pointing at guest-init, which is a multi-call binary.

use std::path::{Path, PathBuf};

use super::staging::FsOp;
use super::tree::{EntryKind, Ownership, Tree};

/// Merged-/usr top-level links (Debian since bookworm: `usrmerge` is part of the base
/// system, and packages' `/bin` paths were already rewritten by the unpacker).
pub const MERGED_USR_LINKS: &[(&str, &str)] = &[
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

/// Base directories with their modes (base-files' layout). `tmp` and `var/tmp` are sticky
/// and world-writable; `root` is private.
pub const BASE_DIRS: &[(&str, u32)] = &[
    ("boot", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("etc/jeos", 0o755),
    ("home", 0o755),
    ("media", 0o755),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("srv", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/lib", 0o755),
    ("usr/lib/jeos", 0o755),
    ("usr/lib64", 0o755),
    ("usr/local", 0o755),
    ("usr/local/bin", 0o755),
    ("usr/local/lib", 0o755),
    ("usr/local/sbin", 0o755),
    ("usr/local/share", 0o755),
    ("usr/sbin", 0o755),
    ("usr/share", 0o755),
    ("var", 0o755),
    ("var/backups", 0o755),
    ("var/cache", 0o755),
    ("var/lib", 0o755),
    ("var/lib/misc", 0o755),
    ("var/local", 0o2775),
    ("var/log", 0o755),
    ("var/mail", 0o2775),
    ("var/opt", 0o755),
    ("var/spool", 0o755),
    ("var/tmp", 0o1777),
];

/// Compatibility links base-files ships: `/var/run` and `/var/lock` point into `/run`.
pub const VAR_LINKS: &[(&str, &str)] = &[("var/run", "/run"), ("var/lock", "/run/lock")];

/// Names under `usr/sbin` that link to guest-init (it dispatches on `argv[0]`).
pub const INIT_ALIASES: &[&str] = &["init", "poweroff", "reboot", "halt"];

/// Plans the skeleton. `init_path` is where guest-init is installed (e.g.
/// `/usr/lib/jeos/init`); `/sbin/init` resolves through the `sbin` link to
/// `/usr/sbin/init`. Existing entries are kept, except that an `init`/`poweroff`/...
/// shipped by a package is replaced: PID 1 is ours.
pub fn plan_layout(tree: &Tree, init_path: &Path) -> Vec<FsOp> {
    let mut ops = Vec::new();
    for (path, mode) in BASE_DIRS {
        // `/var/mail` and `/var/local` are group `mail`/`staff` in Debian.
        let gid = match *path {
            "var/mail" => 8,
            "var/local" => 50,
            _ => 0,
        };
        ops.push(FsOp::CreateDir {
            path: PathBuf::from(path),
            own: Ownership {
                mode: *mode,
                uid: 0,
                gid,
            },
            update: false,
        });
    }
    for (link, target) in MERGED_USR_LINKS.iter().chain(VAR_LINKS) {
        let link_path = Path::new(link);
        let already = matches!(
            tree.get(link_path).map(|e| &e.kind),
            Some(EntryKind::Symlink { target: t }) if t.as_path() == Path::new(target)
        );
        if !already && !tree.get(link_path).is_some_and(|e| e.is_dir()) {
            ops.push(FsOp::Symlink {
                path: PathBuf::from(link),
                target: PathBuf::from(target),
            });
        }
    }
    // /run/lock is what /var/lock points to; it lives on the tmpfs the init mounts on /run,
    // so nothing is created for it here.
    for alias in INIT_ALIASES {
        ops.push(FsOp::Symlink {
            path: Path::new("usr/sbin").join(alias),
            target: init_path.to_path_buf(),
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_links_dirs_and_init_aliases() {
        let tree = Tree::new(0);
        let ops = plan_layout(&tree, Path::new("/usr/lib/jeos/init"));
        assert!(ops.contains(&FsOp::Symlink {
            path: "bin".into(),
            target: "usr/bin".into()
        }));
        assert!(ops.contains(&FsOp::Symlink {
            path: "usr/sbin/poweroff".into(),
            target: "/usr/lib/jeos/init".into()
        }));
        assert!(ops.contains(&FsOp::CreateDir {
            path: "tmp".into(),
            own: Ownership::root(0o1777),
            update: false
        }));
        assert!(ops.contains(&FsOp::CreateDir {
            path: "root".into(),
            own: Ownership::root(0o700),
            update: false
        }));
        // Directories come before the links that go into them.
        let dir = ops.iter().position(
            |o| matches!(o, FsOp::CreateDir { path, .. } if path == Path::new("usr/sbin")),
        );
        let link = ops.iter().position(
            |o| matches!(o, FsOp::Symlink { path, .. } if path == Path::new("usr/sbin/init")),
        );
        assert!(dir < link);
    }

    #[test]
    fn keeps_existing_merged_usr_links() {
        let mut tree = Tree::new(0);
        tree.add_symlink(Path::new("bin"), Path::new("usr/bin"), 0, 0, 0)
            .unwrap();
        let ops = plan_layout(&tree, Path::new("/usr/lib/jeos/init"));
        assert!(
            !ops.iter()
                .any(|o| matches!(o, FsOp::Symlink { path, .. } if path == Path::new("bin")))
        );
    }
}
