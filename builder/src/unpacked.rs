//! Integrity of the unpacked-tree cache (`<cache>/unpacked/<key>/`): the kernel and the
//! boot loaders are unpacked once and reused, so a tree changed after unpacking (bytes
//! appended to a cached `vmlinuz`) would silently end up in every later image. Each tree's
//! `.complete` marker holds the key and a digest of the whole tree (paths, kinds, symlink
//! targets, file contents); the tree is used only when the digest still matches, and is
//! unpacked again otherwise.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The marker file at the top of a complete tree.
pub const MARKER: &str = ".complete";

/// Files jeos itself adds to a cached tree after unpacking (derived caches), skipped by
/// the digest.
fn is_derived(name: &str) -> bool {
    name == MARKER || name.starts_with(".jeos-")
}

/// SHA-256 (hex) over every entry below `dir`, in sorted order.
///
/// # Errors
/// Reading the tree failed.
pub fn tree_digest(dir: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&current)?
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<_>>()?;
        entries.sort();
        for path in entries.into_iter().rev() {
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            if current == dir && relative.to_str().is_some_and(is_derived) {
                continue;
            }
            let meta = fs::symlink_metadata(&path)?;
            hasher.update(relative.as_os_str().as_encoded_bytes());
            hasher.update([0]);
            hasher.update(meta.permissions().mode().to_le_bytes());
            if meta.is_dir() {
                hasher.update(b"d");
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                hasher.update(b"l");
                hasher.update(fs::read_link(&path)?.as_os_str().as_encoded_bytes());
            } else {
                hasher.update(b"f");
                let mut file = fs::File::open(&path)?;
                let mut content = Sha256::new();
                io::copy(&mut file, &mut content)?;
                hasher.update(content.finalize());
            }
            hasher.update([0]);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The marker text for a tree with `key`.
///
/// # Errors
/// Reading the tree failed.
pub fn marker_text(dir: &Path, key: &str) -> io::Result<String> {
    Ok(format!("{key}\n{}\n", tree_digest(dir)?))
}

/// Whether the cached tree at `dir` is complete and unchanged since it was unpacked.
#[must_use]
pub fn is_intact(dir: &Path, key: &str) -> bool {
    let Ok(marker) = fs::read_to_string(dir.join(MARKER)) else {
        return false;
    };
    marker_text(dir, key).is_ok_and(|now| now == marker)
}

/// Why a file cannot be read from an unpacked tree without leaving it.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The file, or a directory on the way to it, is a symlink or of another kind:
    /// following it could pull a file of the build host into the image.
    #[error(
        "`/{path}` is a symlink or not a regular file; refusing to follow it out of the package"
    )]
    NotConfined {
        /// Path inside the tree.
        path: PathBuf,
    },
    /// Reading the tree failed.
    #[error("cannot read `{path}`")]
    Io {
        /// Host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Whether `rel` exists under `root` as a regular file reached without any symlink. A
/// symlink (or a non-directory) at any component is [`ConfineError::NotConfined`];
/// absence is `Ok(false)`. Used for every file jeos copies out of a package tree onto the
/// image's ESP or into the initramfs (kernel, modules lists, boot loaders).
///
/// # Errors
/// [`ConfineError`].
pub fn confined_file(root: &Path, rel: &Path) -> Result<bool, ConfineError> {
    let mut current = root.to_path_buf();
    let components: Vec<_> = rel.components().collect();
    for (i, component) in components.iter().enumerate() {
        if !matches!(component, std::path::Component::Normal(_)) {
            return Err(ConfineError::NotConfined {
                path: rel.to_path_buf(),
            });
        }
        current.push(component);
        let meta = match fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(ConfineError::Io {
                    path: current,
                    source,
                });
            }
        };
        let last = i + 1 == components.len();
        let ok = if last { meta.is_file() } else { meta.is_dir() };
        if !ok {
            return Err(ConfineError::NotConfined {
                path: rel.to_path_buf(),
            });
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #8: bytes appended to a cached `vmlinuz` are noticed.
    #[test]
    fn issue_8_a_changed_cached_tree_is_not_intact() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join("boot/vmlinuz-1"), b"MZkernel").unwrap();
        std::os::unix::fs::symlink("vmlinuz-1", root.join("boot/vmlinuz")).unwrap();
        fs::write(root.join(MARKER), marker_text(root, "k").unwrap()).unwrap();
        assert!(is_intact(root, "k"));
        assert!(!is_intact(root, "other-key"));
        // jeos's own derived caches do not count.
        fs::write(root.join(".jeos-module-aliases"), b"index").unwrap();
        assert!(is_intact(root, "k"));
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(root.join("boot/vmlinuz-1"))
            .unwrap();
        io::Write::write_all(&mut file, b"evil").unwrap();
        assert!(!is_intact(root, "k"));
        fs::write(root.join("boot/vmlinuz-1"), b"MZkernel").unwrap();
        assert!(is_intact(root, "k"));
        fs::remove_file(root.join("boot/vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("boot/vmlinuz")).unwrap();
        assert!(!is_intact(root, "k"));
        fs::remove_file(root.join(MARKER)).unwrap();
        assert!(!is_intact(root, "k"));
    }

    #[test]
    fn confined_file_refuses_links_and_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::write(root.join("usr/lib/real"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("usr/lib/link")).unwrap();
        std::os::unix::fs::symlink("lib", root.join("usr/libx")).unwrap();
        assert!(confined_file(root, Path::new("usr/lib/real")).unwrap());
        assert!(!confined_file(root, Path::new("usr/lib/absent")).unwrap());
        for bad in [
            "usr/lib/link",
            "usr/libx/real",
            "usr/lib/../lib/real",
            "usr/lib",
        ] {
            assert!(
                matches!(
                    confined_file(root, Path::new(bad)),
                    Err(ConfineError::NotConfined { .. })
                ),
                "{bad}"
            );
        }
    }
}
