//! The IO edge of root filesystem customisation: a staging directory plus its [`Tree`].
//!
//! Planning steps return [`FsOp`] lists; [`Staging::apply`] performs them on disk and
//! records them in the tree, so both always agree. Every path is resolved through the tree
//! (symlinks followed inside the root, never out of it) and then checked on disk: no
//! component of the physical path may be a symlink there, so a write can never land outside
//! the staging directory even if disk and tree disagreed.
//!
//! On-disk modes stay permissive (0644/0755, no chown): the tree holds the real ones.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::tree::{Entry, EntryKind, Ownership, Tree, TreeError, normalize};

/// Largest file [`Staging::read_file`] will load (configuration snippets, scripts).
pub const MAX_READ_BYTES: u64 = 64 * 1024 * 1024;

/// Errors from applying operations to the staging directory.
#[derive(Debug, Error)]
pub enum StagingError {
    /// A tree operation failed.
    #[error("cannot update `/{path}` in the root filesystem")]
    Tree {
        /// The path being changed.
        path: PathBuf,
        /// Why.
        #[source]
        source: TreeError,
    },
    /// Reading or writing the staging directory failed.
    #[error("cannot access `{path}`")]
    Io {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The staging directory has a symlink where the tree has a directory.
    #[error("`{path}` is a symlink on disk but not in the metadata; refusing to write through it")]
    SymlinkOnDisk {
        /// The host path.
        path: PathBuf,
    },
    /// An existing non-directory is in the way of a directory.
    #[error("`/{path}` exists and is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The path to read or change does not exist.
    #[error("`/{path}` does not exist in the root filesystem")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A file to read is not a regular file.
    #[error("`/{path}` is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A file to read is too large.
    #[error("`/{path}` is larger than {limit} bytes")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// An existing directory would be replaced by a file or symlink.
    #[error("`/{path}` is a directory, refusing to replace it")]
    IsADirectory {
        /// The path.
        path: PathBuf,
    },
}

/// One change to the root filesystem, planned by a pure step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsOp {
    /// `mkdir -p`: missing parents get 0755 root:root; an existing directory keeps its
    /// metadata unless `update` is set.
    CreateDir {
        /// Path inside the root.
        path: PathBuf,
        /// Metadata of the last component.
        own: Ownership,
        /// Overwrite the metadata of an existing directory.
        update: bool,
    },
    /// Write a regular file, replacing a file or symlink (not followed) already there.
    WriteFile {
        /// Path inside the root (parents must exist; symlinked parents are followed).
        path: PathBuf,
        /// The bytes.
        contents: Vec<u8>,
        /// Metadata.
        own: Ownership,
    },
    /// Create a symlink, replacing a file or symlink already there.
    Symlink {
        /// Path of the link.
        path: PathBuf,
        /// Its target, verbatim.
        target: PathBuf,
    },
    /// Copy a regular file inside the root.
    CopyFile {
        /// Source (symlinks followed).
        from: PathBuf,
        /// Destination.
        to: PathBuf,
        /// Metadata of the copy.
        own: Ownership,
    },
    /// Record a device node or FIFO in the tree only (the ext4 writer creates it; nothing
    /// is written to the staging directory).
    Node {
        /// Path.
        path: PathBuf,
        /// `CharDevice`, `BlockDevice` or `Fifo`.
        kind: EntryKind,
        /// Metadata.
        own: Ownership,
    },
    /// Change metadata of an existing path (symlinks followed), optionally recursively.
    SetMetadata {
        /// Path.
        path: PathBuf,
        /// New permission bits.
        mode: Option<u32>,
        /// New owner.
        uid: Option<u32>,
        /// New group.
        gid: Option<u32>,
        /// Apply to everything below too (symlinks below are not followed).
        recursive: bool,
    },
    /// Remove a path and everything below it (a missing path is fine).
    Remove {
        /// Path (the last component is not followed).
        path: PathBuf,
    },
}

/// A staging directory and its metadata.
#[derive(Debug)]
pub struct Staging {
    root: PathBuf,
    tree: Tree,
    epoch: i64,
}

impl Staging {
    /// Wraps an unpacked staging directory and its metadata. Everything created later gets
    /// mtime `source_date_epoch`.
    pub fn new(root: impl Into<PathBuf>, tree: Tree, source_date_epoch: i64) -> Self {
        Self {
            root: root.into(),
            tree,
            epoch: source_date_epoch,
        }
    }

    /// Builds a tree from what is on disk (owners and modes as found) and wraps it. Used by
    /// tests and measurements; the build pipeline converts the unpacker's manifest instead.
    pub fn scan(root: impl Into<PathBuf>, source_date_epoch: i64) -> Result<Self, StagingError> {
        let root = root.into();
        let mut tree = Tree::new(source_date_epoch);
        scan_dir(&root, Path::new(""), &mut tree)?;
        Ok(Self::new(root, tree, source_date_epoch))
    }

    /// The staging directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The metadata.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The timestamp given to everything created.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Gives the metadata back (for the image writer).
    pub fn into_tree(self) -> Tree {
        self.tree
    }

    /// Reads a regular file (symlinks followed inside the root), at most `MAX_READ_BYTES`.
    pub fn read_file(&self, path: &Path) -> Result<Vec<u8>, StagingError> {
        let bytes = self.read_head(path, MAX_READ_BYTES + 1)?;
        if bytes.len() as u64 > MAX_READ_BYTES {
            let physical = self
                .tree
                .lookup(path)
                .map_or_else(|_| path.to_path_buf(), |(p, _)| p);
            return Err(StagingError::TooLarge {
                path: physical,
                limit: MAX_READ_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Reads at most `max` bytes from the start of a regular file (symlinks followed).
    pub fn read_head(&self, path: &Path, max: u64) -> Result<Vec<u8>, StagingError> {
        let (physical, entry) = self
            .tree
            .lookup(path)
            .map_err(|source| StagingError::Tree {
                path: path.to_path_buf(),
                source,
            })?;
        let physical = match &entry.kind {
            EntryKind::File { .. } => physical,
            EntryKind::HardLink { target } => target.clone(),
            _ => return Err(StagingError::NotAFile { path: physical }),
        };
        let host = self.host_path(&physical)?;
        let file = fs::File::open(&host).map_err(|source| StagingError::Io {
            path: host.clone(),
            source,
        })?;
        let mut bytes = Vec::new();
        file.take(max)
            .read_to_end(&mut bytes)
            .map_err(|source| StagingError::Io { path: host, source })?;
        Ok(bytes)
    }

    /// Host path of a physical tree path, refusing symlinks on disk in any component.
    fn host_path(&self, physical: &Path) -> Result<PathBuf, StagingError> {
        let mut host = self.root.clone();
        for component in physical.components() {
            host.push(component);
            match fs::symlink_metadata(&host) {
                Ok(meta)
                    if meta.file_type().is_symlink()
                        && host.as_path() != self.root.join(physical) =>
                {
                    return Err(StagingError::SymlinkOnDisk { path: host });
                }
                _ => {}
            }
        }
        Ok(host)
    }

    fn tree_err(path: &Path) -> impl FnOnce(TreeError) -> StagingError + '_ {
        move |source| StagingError::Tree {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Resolves the parent of `path` through the tree and returns the physical path of the
    /// last component (not followed).
    fn physical_for_write(&self, path: &Path) -> Result<PathBuf, StagingError> {
        let resolved = self
            .tree
            .resolve(path, false)
            .map_err(Self::tree_err(path))?;
        Ok(resolved.path)
    }

    /// Applies every operation in order.
    pub fn apply(&mut self, ops: &[FsOp]) -> Result<(), StagingError> {
        ops.iter().try_for_each(|op| self.apply_one(op))
    }

    /// Applies one operation.
    pub fn apply_one(&mut self, op: &FsOp) -> Result<(), StagingError> {
        match op {
            FsOp::CreateDir { path, own, update } => self.create_dir_all(path, *own, *update),
            FsOp::WriteFile {
                path,
                contents,
                own,
            } => self.write_file(path, contents, *own),
            FsOp::Symlink { path, target } => self.symlink(path, target),
            FsOp::CopyFile { from, to, own } => {
                let bytes = self.read_file(from)?;
                self.write_file(to, &bytes, *own)
            }
            FsOp::Node { path, kind, own } => {
                let physical = self.physical_for_write(path)?;
                self.make_room(&physical)?;
                let entry = Entry {
                    kind: kind.clone(),
                    mode: own.mode,
                    uid: own.uid,
                    gid: own.gid,
                    mtime: self.epoch,
                };
                self.tree
                    .insert(&physical, entry)
                    .map_err(Self::tree_err(path))
            }
            FsOp::SetMetadata {
                path,
                mode,
                uid,
                gid,
                recursive,
            } => {
                let (physical, _) = self.tree.lookup(path).map_err(Self::tree_err(path))?;
                let targets: Vec<PathBuf> = if *recursive {
                    self.tree
                        .subtree(&physical)
                        .map(|(p, _)| p.to_path_buf())
                        .collect()
                } else {
                    vec![physical]
                };
                for target in targets {
                    if let Some(entry) = self.tree.get_mut(&target) {
                        if entry.is_symlink() {
                            continue;
                        }
                        if let Some(mode) = mode {
                            entry.mode = mode & 0o7777;
                        }
                        if let Some(uid) = uid {
                            entry.uid = *uid;
                        }
                        if let Some(gid) = gid {
                            entry.gid = *gid;
                        }
                    }
                }
                Ok(())
            }
            FsOp::Remove { path } => {
                let physical = match self.tree.resolve(path, false) {
                    Ok(r) if r.exists => r.path,
                    _ => return Ok(()),
                };
                self.remove_physical(&physical)
            }
        }
    }

    /// Removes a physical path from disk and tree.
    pub(crate) fn remove_physical(&mut self, physical: &Path) -> Result<(), StagingError> {
        if physical.as_os_str().is_empty() {
            return Ok(());
        }
        let host = self.host_path(physical)?;
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&host),
            Ok(_) => fs::remove_file(&host),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(|source| StagingError::Io { path: host, source })?;
        self.tree.remove(physical);
        Ok(())
    }

    /// Removes a non-directory at `physical` so something else can take its place.
    fn make_room(&mut self, physical: &Path) -> Result<(), StagingError> {
        match self.tree.get(physical) {
            None => Ok(()),
            Some(e) if e.is_dir() => Err(StagingError::IsADirectory {
                path: physical.to_path_buf(),
            }),
            Some(_) => self.remove_physical(physical),
        }
    }

    fn create_dir_all(
        &mut self,
        path: &Path,
        own: Ownership,
        update: bool,
    ) -> Result<(), StagingError> {
        let path = normalize(path).map_err(Self::tree_err(path))?;
        let mut current = PathBuf::new();
        let count = path.components().count();
        for (index, component) in path.components().enumerate() {
            let is_last = index + 1 == count;
            let candidate = current.join(component);
            // Follow symlinks in existing components (e.g. `var/run -> /run`).
            let resolved = self
                .tree
                .resolve(&candidate, true)
                .map_err(Self::tree_err(&candidate))?;
            if resolved.exists {
                match self.tree.get(&resolved.path) {
                    Some(e) if e.is_dir() => {
                        if is_last && update {
                            let entry = self.tree.get_mut(&resolved.path).expect("checked above");
                            entry.mode = own.mode & 0o7777;
                            entry.uid = own.uid;
                            entry.gid = own.gid;
                        }
                    }
                    _ => {
                        return Err(StagingError::NotADirectory {
                            path: resolved.path,
                        });
                    }
                }
            } else {
                let host = self.host_path(&resolved.path)?;
                match fs::create_dir(&host) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && host.is_dir() => {}
                    Err(source) => return Err(StagingError::Io { path: host, source }),
                }
                let meta = if is_last { own } else { Ownership::root(0o755) };
                self.tree
                    .add_dir(&resolved.path, meta, self.epoch)
                    .map_err(Self::tree_err(&resolved.path))?;
            }
            current = resolved.path;
        }
        Ok(())
    }

    fn write_file(
        &mut self,
        path: &Path,
        contents: &[u8],
        own: Ownership,
    ) -> Result<(), StagingError> {
        let physical = self.physical_for_write(path)?;
        self.make_room(&physical)?;
        let host = self.host_path(&physical)?;
        fs::write(&host, contents).map_err(|source| StagingError::Io {
            path: host.clone(),
            source,
        })?;
        let disk_mode = if own.mode & 0o111 != 0 { 0o755 } else { 0o644 };
        fs::set_permissions(&host, fs::Permissions::from_mode(disk_mode)).map_err(|source| {
            StagingError::Io {
                path: host.clone(),
                source,
            }
        })?;
        self.tree
            .add_file(&physical, contents.len() as u64, own, self.epoch)
            .map_err(Self::tree_err(path))
    }

    fn symlink(&mut self, path: &Path, target: &Path) -> Result<(), StagingError> {
        let physical = self.physical_for_write(path)?;
        self.make_room(&physical)?;
        let host = self.host_path(&physical)?;
        std::os::unix::fs::symlink(target, &host).map_err(|source| StagingError::Io {
            path: host.clone(),
            source,
        })?;
        self.tree
            .add_symlink(&physical, target, 0, 0, self.epoch)
            .map_err(Self::tree_err(path))
    }
}

fn scan_dir(root: &Path, relative: &Path, tree: &mut Tree) -> Result<(), StagingError> {
    let host = root.join(relative);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StagingError::Io { path, source }
    };
    let mut names: Vec<_> = fs::read_dir(&host)
        .map_err(io_err(&host))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(&host))?;
    names.sort();
    for name in names {
        let rel = relative.join(&name);
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let own = Ownership {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        };
        let mtime = meta.mtime();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink {
                target: fs::read_link(&path).map_err(io_err(&path))?,
            }
        } else if ft.is_file() {
            EntryKind::File { size: meta.len() }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            // Sockets and device nodes are not expected in an unpacked tree: skip them.
            continue;
        };
        let is_dir = matches!(kind, EntryKind::Dir);
        let entry = Entry {
            kind,
            mode: own.mode,
            uid: own.uid,
            gid: own.gid,
            mtime,
        };
        tree.insert(&rel, entry)
            .map_err(|source| StagingError::Tree {
                path: rel.clone(),
                source,
            })?;
        if is_dir {
            scan_dir(root, &rel, tree)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staging() -> (tempfile::TempDir, Staging) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        fs::write(root.join("usr/lib/a"), b"hello").unwrap();
        let s = Staging::scan(&root, 42).unwrap();
        (dir, s)
    }

    #[test]
    fn scan_records_kinds() {
        let (_d, s) = staging();
        assert!(s.tree().get(Path::new("usr/lib")).unwrap().is_dir());
        assert!(s.tree().get(Path::new("lib")).unwrap().is_symlink());
        assert_eq!(s.tree().file_size(Path::new("usr/lib/a")), Some(5));
    }

    #[test]
    fn writes_follow_symlinked_parents_and_record_metadata() {
        let (d, mut s) = staging();
        let op = FsOp::WriteFile {
            path: "/lib/b".into(),
            contents: b"xy".to_vec(),
            own: Ownership {
                mode: 0o640,
                uid: 0,
                gid: 42,
            },
        };
        s.apply(&[op]).unwrap();
        assert_eq!(fs::read(d.path().join("usr/lib/b")).unwrap(), b"xy");
        let e = s.tree().get(Path::new("usr/lib/b")).unwrap();
        assert_eq!((e.mode, e.gid, e.mtime), (0o640, 42, 42));
        assert_eq!(s.read_file(Path::new("/lib/b")).unwrap(), b"xy");
    }

    #[test]
    fn absolute_symlink_to_root_stays_inside() {
        let (d, mut s) = staging();
        let op = FsOp::WriteFile {
            path: "/escape/etc-x".into(),
            contents: b"1".to_vec(),
            own: Ownership::root(0o644),
        };
        s.apply(&[op]).unwrap();
        assert!(d.path().join("etc-x").is_file());
    }

    #[test]
    fn create_dir_all_makes_parents_and_updates_when_asked() {
        let (d, mut s) = staging();
        let own = Ownership {
            mode: 0o1777,
            uid: 0,
            gid: 0,
        };
        s.apply(&[FsOp::CreateDir {
            path: "var/tmp".into(),
            own,
            update: false,
        }])
        .unwrap();
        assert!(d.path().join("var/tmp").is_dir());
        assert_eq!(s.tree().get(Path::new("var")).unwrap().mode, 0o755);
        assert_eq!(s.tree().get(Path::new("var/tmp")).unwrap().mode, 0o1777);
        let own2 = Ownership {
            mode: 0o700,
            uid: 1,
            gid: 1,
        };
        s.apply(&[FsOp::CreateDir {
            path: "var/tmp".into(),
            own: own2,
            update: false,
        }])
        .unwrap();
        assert_eq!(s.tree().get(Path::new("var/tmp")).unwrap().mode, 0o1777);
        s.apply(&[FsOp::CreateDir {
            path: "var/tmp".into(),
            own: own2,
            update: true,
        }])
        .unwrap();
        assert_eq!(s.tree().get(Path::new("var/tmp")).unwrap().uid, 1);
    }

    #[test]
    fn create_dir_over_a_file_fails() {
        let (_d, mut s) = staging();
        let err = s.apply(&[FsOp::CreateDir {
            path: "usr/lib/a/b".into(),
            own: Ownership::root(0o755),
            update: false,
        }]);
        assert!(matches!(err, Err(StagingError::NotADirectory { .. })));
    }

    #[test]
    fn symlink_replaces_file_but_not_directory() {
        let (d, mut s) = staging();
        s.apply(&[FsOp::Symlink {
            path: "usr/lib/a".into(),
            target: "b".into(),
        }])
        .unwrap();
        assert!(
            fs::symlink_metadata(d.path().join("usr/lib/a"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let err = s
            .apply(&[FsOp::Symlink {
                path: "usr/lib".into(),
                target: "b".into(),
            }])
            .unwrap_err();
        assert!(matches!(err, StagingError::IsADirectory { .. }));
    }

    #[test]
    fn disk_symlink_not_in_tree_is_refused() {
        let (d, mut s) = staging();
        fs::create_dir(d.path().join("etc")).unwrap();
        // The tree thinks `etc` is missing; create it in the tree only as a directory, then
        // make it a symlink on disk behind the tree's back.
        s.apply(&[FsOp::CreateDir {
            path: "etc".into(),
            own: Ownership::root(0o755),
            update: false,
        }])
        .unwrap();
        fs::remove_dir(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/tmp", d.path().join("etc")).unwrap();
        let op = FsOp::WriteFile {
            path: "etc/x".into(),
            contents: vec![],
            own: Ownership::root(0o644),
        };
        assert!(matches!(
            s.apply(&[op]),
            Err(StagingError::SymlinkOnDisk { .. })
        ));
    }

    #[test]
    fn set_metadata_recursive_and_remove() {
        let (d, mut s) = staging();
        s.apply(&[FsOp::SetMetadata {
            path: "/lib".into(),
            mode: None,
            uid: Some(5),
            gid: None,
            recursive: true,
        }])
        .unwrap();
        assert_eq!(s.tree().get(Path::new("usr/lib/a")).unwrap().uid, 5);
        assert_eq!(s.tree().get(Path::new("lib")).unwrap().uid, 0);
        s.apply(&[FsOp::Remove {
            path: "usr/lib".into(),
        }])
        .unwrap();
        assert!(!d.path().join("usr/lib").exists());
        assert!(!s.tree().contains(Path::new("usr/lib/a")));
        s.apply(&[FsOp::Remove {
            path: "nope/x".into(),
        }])
        .unwrap();
    }

    #[test]
    fn read_file_rejects_directories() {
        let (_d, s) = staging();
        assert!(matches!(
            s.read_file(Path::new("usr")),
            Err(StagingError::NotAFile { .. })
        ));
    }
}
