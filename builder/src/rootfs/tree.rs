//! The metadata model of the root filesystem: what each path is, with its owner, mode and
//! mtime.
//!
//! Packages are unpacked without root, so the files in the staging directory carry
//! permissive modes and belong to the build user. The truth about ownership, modes,
//! device nodes and hard links lives here, and the ext4 writer reads it from here.
//!
//! Paths are relative to the root (`usr/bin/env`, never `/usr/bin/env`) and physical: no
//! component of a key is a symlink. The root itself is the empty path. Iteration is sorted
//! component-wise, so a parent always comes before its children and the output is
//! deterministic.

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// How many symlinks one lookup may follow before it is called a loop (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINK_FOLLOWS: usize = 40;

/// Errors from [`Tree`] operations.
#[derive(Debug, Error)]
pub enum TreeError {
    /// A path contains `..` or is otherwise not a plain path inside the root.
    #[error("path `{path}` is not a plain path inside the root")]
    InvalidPath {
        /// The offending path.
        path: PathBuf,
    },
    /// An entry is added under a parent that does not exist.
    #[error("parent directory of `/{path}` does not exist")]
    ParentMissing {
        /// The path being added.
        path: PathBuf,
    },
    /// An entry is added under something that is not a directory.
    #[error("`/{parent}` is not a directory, cannot hold `/{path}`")]
    ParentNotDirectory {
        /// The path being added.
        path: PathBuf,
        /// Its parent.
        parent: PathBuf,
    },
    /// A path component that must be a directory is something else.
    #[error("`/{path}` is not a directory")]
    NotADirectory {
        /// The component that is not a directory.
        path: PathBuf,
    },
    /// A path (or one of its parents) does not exist.
    #[error("`/{path}` does not exist")]
    NotFound {
        /// The first missing component.
        path: PathBuf,
    },
    /// Too many symlinks were followed.
    #[error("too many levels of symbolic links resolving `{path}`")]
    SymlinkLoop {
        /// The path being resolved.
        path: PathBuf,
    },
    /// A hard link points at nothing or at a non-file.
    #[error("hard link `/{path}` points at `/{target}`, which is not a regular file in the tree")]
    BadHardlink {
        /// The hard link.
        path: PathBuf,
        /// What it points at.
        target: PathBuf,
    },
}

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes (its content lives in the staging directory).
    File {
        /// Size in bytes.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link (the target is stored verbatim, relative or absolute).
    Symlink {
        /// The link's target.
        target: PathBuf,
    },
    /// A hard link to another regular file of the tree (a root-relative physical path).
    HardLink {
        /// The file it shares an inode with.
        target: PathBuf,
    },
    /// A character device node.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device node.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One path's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits including set-uid, set-gid and sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

impl Entry {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }

    /// Whether this is a symlink.
    pub fn is_symlink(&self) -> bool {
        matches!(self.kind, EntryKind::Symlink { .. })
    }

    /// Whether this is a regular file (or a hard link to one).
    pub fn is_file(&self) -> bool {
        matches!(
            self.kind,
            EntryKind::File { .. } | EntryKind::HardLink { .. }
        )
    }
}

/// Owner, group and mode for a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Ownership {
    /// `mode` owned by root:root.
    pub const fn root(mode: u32) -> Self {
        Self {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// The result of resolving a path inside the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The physical path (no component is a symlink, except the last one when the lookup
    /// did not follow it).
    pub path: PathBuf,
    /// Whether that path exists in the tree.
    pub exists: bool,
}

/// The metadata of a whole root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new(0)
    }
}

/// Turns `path` (absolute or relative, e.g. `/usr/bin/env` or `usr/bin/env`) into the
/// tree's key form. `.` components are dropped; `..` is rejected, since every path jeos
/// writes is spelled out plainly.
pub fn normalize(path: &Path) -> Result<PathBuf, TreeError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(TreeError::InvalidPath {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    Ok(out)
}

impl Tree {
    /// A tree holding only the root directory (0755 root:root, mtime `mtime`).
    pub fn new(mtime: i64) -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(
            PathBuf::new(),
            Entry {
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime,
            },
        );
        Self { entries }
    }

    /// Adds (or replaces) an entry. The parent must exist and be a directory; a directory
    /// cannot be replaced by a non-directory while it has children.
    pub fn insert(&mut self, path: &Path, entry: Entry) -> Result<(), TreeError> {
        let path = normalize(path)?;
        let Some(parent) = path.parent() else {
            // The root itself: only its metadata may change.
            if !entry.is_dir() {
                return Err(TreeError::InvalidPath { path });
            }
            self.entries.insert(path, entry);
            return Ok(());
        };
        match self.entries.get(parent) {
            None => return Err(TreeError::ParentMissing { path }),
            Some(p) if !p.is_dir() => {
                return Err(TreeError::ParentNotDirectory {
                    parent: parent.to_path_buf(),
                    path,
                });
            }
            Some(_) => {}
        }
        if let EntryKind::HardLink { target } = &entry.kind {
            let target = normalize(target)?;
            if !matches!(
                self.entries.get(&target).map(|e| &e.kind),
                Some(EntryKind::File { .. })
            ) {
                return Err(TreeError::BadHardlink { path, target });
            }
        }
        if !entry.is_dir() && self.children(&path).next().is_some() {
            return Err(TreeError::NotADirectory { path });
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    fn add(
        &mut self,
        path: &Path,
        kind: EntryKind,
        own: Ownership,
        mtime: i64,
    ) -> Result<(), TreeError> {
        self.insert(
            path,
            Entry {
                kind,
                mode: own.mode & 0o7777,
                uid: own.uid,
                gid: own.gid,
                mtime,
            },
        )
    }

    /// Adds a directory.
    pub fn add_dir(&mut self, path: &Path, own: Ownership, mtime: i64) -> Result<(), TreeError> {
        self.add(path, EntryKind::Dir, own, mtime)
    }

    /// Adds a regular file of `size` bytes.
    pub fn add_file(
        &mut self,
        path: &Path,
        size: u64,
        own: Ownership,
        mtime: i64,
    ) -> Result<(), TreeError> {
        self.add(path, EntryKind::File { size }, own, mtime)
    }

    /// Adds a symlink (mode 0777, as Linux reports).
    pub fn add_symlink(
        &mut self,
        path: &Path,
        target: &Path,
        uid: u32,
        gid: u32,
        mtime: i64,
    ) -> Result<(), TreeError> {
        let own = Ownership {
            mode: 0o777,
            uid,
            gid,
        };
        self.add(
            path,
            EntryKind::Symlink {
                target: target.to_path_buf(),
            },
            own,
            mtime,
        )
    }

    /// Adds a hard link to the regular file `target` (a root-relative path).
    pub fn add_hardlink(
        &mut self,
        path: &Path,
        target: &Path,
        own: Ownership,
        mtime: i64,
    ) -> Result<(), TreeError> {
        let target = normalize(target)?;
        self.add(path, EntryKind::HardLink { target }, own, mtime)
    }

    /// Adds a character device node.
    pub fn add_char_device(
        &mut self,
        path: &Path,
        major: u32,
        minor: u32,
        own: Ownership,
        mtime: i64,
    ) -> Result<(), TreeError> {
        self.add(path, EntryKind::CharDevice { major, minor }, own, mtime)
    }

    /// Adds a block device node.
    pub fn add_block_device(
        &mut self,
        path: &Path,
        major: u32,
        minor: u32,
        own: Ownership,
        mtime: i64,
    ) -> Result<(), TreeError> {
        self.add(path, EntryKind::BlockDevice { major, minor }, own, mtime)
    }

    /// Adds a named pipe.
    pub fn add_fifo(&mut self, path: &Path, own: Ownership, mtime: i64) -> Result<(), TreeError> {
        self.add(path, EntryKind::Fifo, own, mtime)
    }

    /// The entry at the physical path `path` (symlinks are not followed).
    pub fn get(&self, path: &Path) -> Option<&Entry> {
        self.entries.get(&normalize(path).ok()?)
    }

    /// Mutable access to the entry at the physical path `path`.
    pub fn get_mut(&mut self, path: &Path) -> Option<&mut Entry> {
        self.entries.get_mut(&normalize(path).ok()?)
    }

    /// Whether the physical path exists.
    pub fn contains(&self, path: &Path) -> bool {
        self.get(path).is_some()
    }

    /// Removes `path` and everything below it; returns the removed entries in sorted order.
    /// Removing the root removes only its children.
    pub fn remove(&mut self, path: &Path) -> Vec<(PathBuf, Entry)> {
        let Ok(path) = normalize(path) else {
            return Vec::new();
        };
        let doomed: Vec<PathBuf> = self
            .entries
            .range(path.clone()..)
            .take_while(|(p, _)| p.starts_with(&path))
            .map(|(p, _)| p.clone())
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        doomed
            .into_iter()
            .filter_map(|p| self.entries.remove(&p).map(|e| (p, e)))
            .collect()
    }

    /// The direct children of the directory `path`, sorted.
    pub fn children<'a>(
        &'a self,
        path: &'a Path,
    ) -> impl Iterator<Item = (&'a Path, &'a Entry)> + 'a {
        let start = path.to_path_buf();
        let depth = path.components().count();
        self.entries
            .range(start..)
            .skip_while(move |(p, _)| p.as_path() == path)
            .take_while(move |(p, _)| p.starts_with(path))
            .filter(move |(p, _)| p.components().count() == depth + 1)
            .map(|(p, e)| (p.as_path(), e))
    }

    /// `path` and everything below it, sorted.
    pub fn subtree<'a>(
        &'a self,
        path: &'a Path,
    ) -> impl Iterator<Item = (&'a Path, &'a Entry)> + 'a {
        self.entries
            .range(path.to_path_buf()..)
            .take_while(move |(p, _)| p.starts_with(path))
            .map(|(p, e)| (p.as_path(), e))
    }

    /// Every entry, sorted (parents before children), including the root (the empty path).
    pub fn iter(&self) -> btree_map::Iter<'_, PathBuf, Entry> {
        self.entries.iter()
    }

    /// Number of entries, the root included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree holds only its root.
    pub fn is_empty(&self) -> bool {
        self.entries.len() <= 1
    }

    /// The size in bytes of the regular file (or hard link) at the physical path.
    pub fn file_size(&self, path: &Path) -> Option<u64> {
        match &self.get(path)?.kind {
            EntryKind::File { size } => Some(*size),
            EntryKind::HardLink { target } => match self.get(target)?.kind {
                EntryKind::File { size } => Some(size),
                _ => None,
            },
            _ => None,
        }
    }

    /// Resolves `path` (absolute or relative to the root) to a physical path, following
    /// symlinks in every component and, if `follow_final`, in the last one.
    ///
    /// Resolution has chroot semantics: absolute targets start at the tree's root and `..`
    /// at the root stays at the root, so a lookup can never leave the tree. A missing last
    /// component is fine (`exists: false`, useful before creating it); a missing parent is
    /// [`TreeError::NotFound`].
    pub fn resolve(&self, path: &Path, follow_final: bool) -> Result<Resolved, TreeError> {
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, path);
        let mut current = PathBuf::new();
        let mut follows = 0usize;
        // `pending` is a stack: the next component to process is at the end.
        while let Some(name) = pending.pop() {
            if name == ".." {
                current.pop();
                continue;
            }
            let candidate = current.join(&name);
            let is_last = pending.is_empty();
            match self.entries.get(&candidate) {
                None if is_last => {
                    return Ok(Resolved {
                        path: candidate,
                        exists: false,
                    });
                }
                None => return Err(TreeError::NotFound { path: candidate }),
                Some(entry) => match &entry.kind {
                    EntryKind::Symlink { target } if !is_last || follow_final => {
                        follows += 1;
                        if follows > MAX_SYMLINK_FOLLOWS {
                            return Err(TreeError::SymlinkLoop {
                                path: path.to_path_buf(),
                            });
                        }
                        if target.has_root() {
                            current = PathBuf::new();
                        }
                        push_components(&mut pending, target);
                    }
                    EntryKind::Dir => current = candidate,
                    _ if is_last => {
                        return Ok(Resolved {
                            path: candidate,
                            exists: true,
                        });
                    }
                    _ => return Err(TreeError::NotADirectory { path: candidate }),
                },
            }
        }
        Ok(Resolved {
            path: current,
            exists: true,
        })
    }

    /// Resolves `path` following every symlink and returns the entry it ends at.
    pub fn lookup(&self, path: &Path) -> Result<(PathBuf, &Entry), TreeError> {
        let resolved = self.resolve(path, true)?;
        match self.entries.get(&resolved.path) {
            Some(entry) => Ok((resolved.path, entry)),
            None => Err(TreeError::NotFound {
                path: resolved.path,
            }),
        }
    }

    /// Whether `path` resolves (following symlinks) to an existing entry.
    pub fn exists_following(&self, path: &Path) -> bool {
        self.lookup(path).is_ok()
    }
}

/// Pushes `path`'s components onto the stack so that the first one is popped first.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let mut names: Vec<OsString> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name.to_os_string()),
            Component::ParentDir => names.push(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    stack.extend(names.into_iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    fn sample() -> Tree {
        let mut t = Tree::new(7);
        let d = Ownership::root(0o755);
        t.add_dir(p("usr"), d, 1).unwrap();
        t.add_dir(p("usr/bin"), d, 1).unwrap();
        t.add_dir(p("usr/lib"), d, 1).unwrap();
        t.add_symlink(p("bin"), p("usr/bin"), 0, 0, 1).unwrap();
        t.add_symlink(p("lib"), p("usr/lib"), 0, 0, 1).unwrap();
        t.add_file(p("usr/bin/env"), 100, Ownership::root(0o755), 1)
            .unwrap();
        t.add_symlink(p("usr/bin/up"), p("../../../../etc/passwd"), 0, 0, 1)
            .unwrap();
        t.add_dir(p("etc"), d, 1).unwrap();
        t.add_file(p("etc/passwd"), 5, Ownership::root(0o644), 1)
            .unwrap();
        t.add_symlink(p("usr/bin/abs"), p("/bin/env"), 0, 0, 1)
            .unwrap();
        t.add_symlink(p("loop1"), p("loop2"), 0, 0, 1).unwrap();
        t.add_symlink(p("loop2"), p("/loop1"), 0, 0, 1).unwrap();
        t
    }

    #[test]
    fn normalize_strips_root_and_rejects_dotdot() {
        assert_eq!(
            normalize(p("/usr/./bin/")).unwrap(),
            PathBuf::from("usr/bin")
        );
        assert!(matches!(
            normalize(p("/usr/../etc")),
            Err(TreeError::InvalidPath { .. })
        ));
    }

    #[test]
    fn add_requires_existing_directory_parent() {
        let mut t = sample();
        let err = t
            .add_file(p("nope/x"), 0, Ownership::root(0o644), 0)
            .unwrap_err();
        assert!(matches!(err, TreeError::ParentMissing { .. }));
        let err = t
            .add_file(p("etc/passwd/x"), 0, Ownership::root(0o644), 0)
            .unwrap_err();
        assert!(matches!(err, TreeError::ParentNotDirectory { .. }));
        // Adding through a symlinked parent is refused: keys are physical.
        let err = t
            .add_file(p("bin/x"), 0, Ownership::root(0o644), 0)
            .unwrap_err();
        assert!(matches!(err, TreeError::ParentNotDirectory { .. }));
    }

    #[test]
    fn directory_with_children_cannot_become_a_file() {
        let mut t = sample();
        let err = t
            .add_file(p("usr/bin"), 0, Ownership::root(0o644), 0)
            .unwrap_err();
        assert!(matches!(err, TreeError::NotADirectory { .. }));
    }

    #[test]
    fn hardlinks_must_point_at_files() {
        let mut t = sample();
        t.add_hardlink(
            p("usr/bin/env2"),
            p("/usr/bin/env"),
            Ownership::root(0o755),
            0,
        )
        .unwrap();
        assert_eq!(t.file_size(p("usr/bin/env2")), Some(100));
        let err = t
            .add_hardlink(p("usr/bin/x"), p("usr/bin"), Ownership::root(0o755), 0)
            .unwrap_err();
        assert!(matches!(err, TreeError::BadHardlink { .. }));
    }

    #[test]
    fn resolve_follows_relative_and_absolute_links() {
        let t = sample();
        assert_eq!(
            t.resolve(p("/bin/env"), true).unwrap().path,
            PathBuf::from("usr/bin/env")
        );
        assert_eq!(
            t.resolve(p("usr/bin/abs"), true).unwrap().path,
            PathBuf::from("usr/bin/env")
        );
        // Not following the final component keeps the link itself.
        let r = t.resolve(p("usr/bin/abs"), false).unwrap();
        assert_eq!(r.path, PathBuf::from("usr/bin/abs"));
        // A missing final component resolves through its parent.
        let r = t.resolve(p("/lib/new.so"), true).unwrap();
        assert_eq!(
            r,
            Resolved {
                path: PathBuf::from("usr/lib/new.so"),
                exists: false
            }
        );
    }

    #[test]
    fn resolve_never_escapes_the_root() {
        let t = sample();
        // `../../../../etc/passwd` from usr/bin climbs past the root and stays there.
        assert_eq!(
            t.resolve(p("usr/bin/up"), true).unwrap().path,
            PathBuf::from("etc/passwd")
        );
        assert_eq!(
            t.resolve(p("../../etc"), true).unwrap().path,
            PathBuf::from("etc")
        );
    }

    #[test]
    fn resolve_reports_loops_missing_parents_and_files_as_dirs() {
        let t = sample();
        assert!(matches!(
            t.resolve(p("loop1"), true),
            Err(TreeError::SymlinkLoop { .. })
        ));
        assert!(matches!(
            t.resolve(p("nope/x"), true),
            Err(TreeError::NotFound { .. })
        ));
        assert!(matches!(
            t.resolve(p("etc/passwd/x"), true),
            Err(TreeError::NotADirectory { .. })
        ));
        assert!(t.lookup(p("usr/missing")).is_err());
    }

    #[test]
    fn iteration_is_sorted_parents_first() {
        let t = sample();
        let paths: Vec<String> = t.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(paths[0], "");
        let pos = |s: &str| paths.iter().position(|x| x == s).unwrap();
        assert!(pos("usr") < pos("usr/bin") && pos("usr/bin") < pos("usr/bin/env"));
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
        assert_eq!(paths, sorted);
    }

    #[test]
    fn children_subtree_and_remove() {
        let mut t = sample();
        let kids: Vec<_> = t.children(p("usr")).map(|(p, _)| p.to_path_buf()).collect();
        assert_eq!(
            kids,
            vec![PathBuf::from("usr/bin"), PathBuf::from("usr/lib")]
        );
        assert_eq!(t.subtree(p("usr/bin")).count(), 4);
        let removed = t.remove(p("usr/bin"));
        assert_eq!(removed.len(), 4);
        assert!(!t.contains(p("usr/bin/env")));
        assert!(t.contains(p("usr")));
        assert!(t.contains(p("")));
    }
}
