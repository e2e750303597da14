//! Integrity of the unpacked-tree cache (`<cache>/unpacked/<key>/`): the kernel and the
//! boot loaders are unpacked once and reused, so a tree changed after unpacking (bytes
//! appended to a cached `vmlinuz`) would silently end up in every later image. Each tree's
//! `.complete` marker holds the key and a digest of the whole tree (paths, kinds, symlink
//! targets, file contents); the tree is used only when the digest still matches, and is
//! unpacked again otherwise.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
/// Reading the tree failed, or it holds something other than directories, regular files
/// and symlinks (jeos never unpacks other kinds onto disk; opening a fifo would hang).
pub fn tree_digest(dir: &Path) -> io::Result<String> {
    walk(dir, None)
}

/// Copies the tree below `src` into the empty directory `dst` (directories, files with
/// their permission bits, symlinks as symlinks: none is followed) and returns the digest
/// of what was read, as [`tree_digest`] of `src` would: one pass reads, hashes and writes
/// every file, so a restored cache tree is verified by the copy itself.
///
/// # Errors
/// Reading `src` or writing `dst` failed, or `src` holds another kind of file.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<String> {
    walk(src, Some(dst))
}

/// Visits every entry below `dir` (not following symlinks) in a fixed order, skipping
/// jeos's own derived files at the top; `visit` gets the path, the path relative to `dir`
/// and the entry's metadata, and returns whether to descend (for a directory).
fn visit_sorted(
    dir: &Path,
    mut visit: impl FnMut(&Path, &Path, &fs::Metadata) -> io::Result<bool>,
) -> io::Result<()> {
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
            if visit(&path, relative, &meta)? && meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Lower-case hex of a SHA-256 state's digest.
pub(crate) fn hex_digest(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn walk(dir: &Path, copy_to: Option<&Path>) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    visit_sorted(dir, |path, relative, meta| {
        let mode = meta.permissions().mode();
        let target = copy_to.map(|d| d.join(relative));
        hasher.update(relative.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(mode.to_le_bytes());
        if meta.is_dir() {
            hasher.update(b"d");
            if let Some(target) = &target {
                fs::create_dir(target)?;
                fs::set_permissions(target, fs::Permissions::from_mode(mode & 0o7777))?;
            }
        } else if meta.file_type().is_symlink() {
            hasher.update(b"l");
            let link = fs::read_link(path)?;
            hasher.update(link.as_os_str().as_encoded_bytes());
            if let Some(target) = &target {
                std::os::unix::fs::symlink(&link, target)?;
            }
        } else if meta.is_file() {
            hasher.update(b"f");
            hasher.update(hash_file(path, target.as_deref(), mode, &mut buf)?);
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("`{}` is not a file, directory or symlink", path.display()),
            ));
        }
        hasher.update([0]);
        Ok(true)
    })?;
    Ok(hex_digest(hasher))
}

/// The SHA-256 of the file at `path`, copied to `target` (with `mode`) when given.
fn hash_file(
    path: &Path,
    target: Option<&Path>,
    mode: u32,
    buf: &mut [u8],
) -> io::Result<[u8; 32]> {
    use std::io::{Read, Write};
    let mut file = fs::File::open(path)?;
    let mut out = match target {
        Some(t) => Some(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode & 0o7777)
                .open(t)?,
        ),
        None => None,
    };
    let mut content = Sha256::new();
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        content.update(&buf[..n]);
        if let Some(out) = &mut out {
            out.write_all(&buf[..n])?;
        }
    }
    if let (Some(out), Some(t)) = (&out, target) {
        // `create_new` applied the umask: set the bits exactly.
        out.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", t.display())))?;
    }
    Ok(content.finalize().into())
}

/// The tree digest a cached tree's marker records, if it has one (the marker is verified
/// before a cached tree is used).
pub fn marked_digest(dir: &Path) -> Option<String> {
    let marker = fs::read_to_string(dir.join(MARKER)).ok()?;
    marker.lines().nth(1).map(str::to_owned)
}

/// The marker text for a tree with `key`.
///
/// # Errors
/// Reading the tree failed.
pub fn marker_text(dir: &Path, key: &str) -> io::Result<String> {
    Ok(format!("{key}\n{}\n", tree_digest(dir)?))
}

/// Whether the cached tree at `dir` is complete and unchanged since it was unpacked.
///
/// The full check re-hashes every file. A tree that passed it gets a stamp
/// ([`STAMP`]): the digest it passed with and a digest of every entry's metadata (path,
/// kind, mode, size, inode, device, modification and change times in nanoseconds, symlink
/// target). While the metadata digest is unchanged the tree is taken as verified without
/// reading the files: any write to a file, a rename, a new or removed entry or a `chmod`
/// changes its change time, which no unprivileged program can set back. The stamp lives
/// in the cache like the tree itself, so whoever can write the cache can forge it (as
/// they could rewrite the tree and its marker): the trust boundary stays the cache
/// directory's permissions. It does not catch media that silently flip bits under an
/// unchanged inode; `jeos cache verify` re-hashes everything.
#[must_use]
pub fn is_intact(dir: &Path, key: &str) -> bool {
    let Ok(marker) = fs::read_to_string(dir.join(MARKER)) else {
        return false;
    };
    let Some(digest) = marker
        .strip_prefix(key)
        .and_then(|r| r.strip_prefix('\n'))
        .and_then(|r| r.strip_suffix('\n'))
    else {
        return false;
    };
    let Ok(before) = stat_digest(dir) else {
        return false;
    };
    let stamp = format!("{before}\n{digest}\n");
    if fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == stamp) {
        // Rewritten once a day, so `jeos cache prune` sees the tree is still used.
        let stale = fs::metadata(dir.join(STAMP))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 86_400);
        if stale {
            let _ = write_atomically(&dir.join(STAMP), stamp.as_bytes());
        }
        return true;
    }
    if !tree_digest(dir).is_ok_and(|now| now == digest) {
        return false;
    }
    // Stamp only a tree that did not change while it was hashed.
    if stat_digest(dir).is_ok_and(|after| after == before) {
        let _ = write_atomically(&dir.join(STAMP), stamp.as_bytes());
    }
    true
}

/// [`is_intact`] re-hashing every file (ignoring and refreshing the stamp).
#[must_use]
pub fn is_intact_full(dir: &Path, key: &str) -> bool {
    let _ = fs::remove_file(dir.join(STAMP));
    is_intact(dir, key)
}

/// The verified-stamp file of a cached tree (see [`is_intact`]).
pub const STAMP: &str = ".jeos-verified";

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// SHA-256 (hex) over the metadata of every entry below `dir` (no file is read).
///
/// # Errors
/// Reading the tree failed.
pub fn stat_digest(dir: &Path) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut hasher = Sha256::new();
    visit_sorted(dir, |path, relative, meta| {
        hasher.update(relative.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        for field in [
            u64::from(meta.mode()),
            meta.size(),
            meta.ino(),
            meta.dev(),
            meta.mtime().cast_unsigned(),
            meta.mtime_nsec().cast_unsigned(),
            meta.ctime().cast_unsigned(),
            meta.ctime_nsec().cast_unsigned(),
        ] {
            hasher.update(field.to_le_bytes());
        }
        if meta.file_type().is_symlink() {
            hasher.update(fs::read_link(path)?.as_os_str().as_encoded_bytes());
        }
        hasher.update([0]);
        Ok(true)
    })?;
    Ok(hex_digest(hasher))
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

    /// Issue #14: a verified tree is stamped; a change that keeps the size and the
    /// modification time is still noticed, and copying a tree yields its digest.
    #[test]
    fn issue_14_stamped_trees_notice_changes_and_copies_carry_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::write(root.join("usr/lib/a.ko"), b"module").unwrap();
        std::os::unix::fs::symlink("a.ko", root.join("usr/lib/b.ko")).unwrap();
        fs::set_permissions(root.join("usr/lib/a.ko"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(root.join(MARKER), marker_text(&root, "k").unwrap()).unwrap();
        assert!(is_intact(&root, "k"));
        assert!(root.join(STAMP).is_file(), "a verified tree is stamped");
        assert!(is_intact(&root, "k"), "and passes on its stamp");
        let copy = dir.path().join("copy");
        fs::create_dir(&copy).unwrap();
        let digest = copy_tree(&root, &copy).unwrap();
        assert_eq!(digest, tree_digest(&root).unwrap());
        assert_eq!(
            tree_digest(&copy).unwrap(),
            digest,
            "the copy is the same tree"
        );
        assert!(!copy.join(MARKER).exists(), "derived files are not copied");
        let file = root.join("usr/lib/a.ko");
        let mtime = fs::metadata(&file).unwrap().modified().unwrap();
        fs::write(&file, b"MODULE").unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(!is_intact(&root, "k"), "same size and mtime, other bytes");
        fs::write(&file, b"module").unwrap();
        assert!(is_intact(&root, "k"));
        assert!(is_intact_full(&root, "k"));
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("usr/fifo"))
            .env("LC_ALL", "C")
            .status()
            .unwrap();
        assert!(made.success());
        assert!(tree_digest(&root).is_err(), "a fifo is refused, not opened");
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
