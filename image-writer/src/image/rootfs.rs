//! The ext4 root file system of an image, read with the `ext4-view` crate (read-only, no
//! mounts): metadata, directory listings, file contents and a full walk.

use std::path::{Path, PathBuf};

use ext4_view::{Ext4, Ext4Error, FileType, Metadata};

use super::{ImageError, PartitionReader};

/// Errors reading the root file system.
#[derive(Debug, thiserror::Error)]
pub enum RootFsError {
    /// The image itself could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The ext4 file system is invalid or unreadable.
    #[error("cannot read the ext4 root file system of `{}`", .image.display())]
    Ext4 {
        /// The image file.
        image: PathBuf,
        /// The cause.
        #[source]
        source: Ext4Error,
    },
    /// A path does not exist in the image.
    #[error("`{path}` does not exist in `{}`", .image.display())]
    NotFound {
        /// The image file.
        image: PathBuf,
        /// The path inside.
        path: String,
    },
    /// A path is a directory where a file is needed.
    #[error("`{path}` is a directory in `{}`", .image.display())]
    IsADirectory {
        /// The image file.
        image: PathBuf,
        /// The path inside.
        path: String,
    },
    /// A path is a device, FIFO or socket where a file is needed.
    #[error("`{path}` is not a regular file in `{}`", .image.display())]
    NotAFile {
        /// The image file.
        image: PathBuf,
        /// The path inside.
        path: String,
    },
    /// The path is not absolute or not valid.
    #[error("invalid path `{path}`: paths inside the image are absolute, like `/etc/os-release`")]
    BadPath {
        /// The path as given.
        path: String,
    },
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// FIFO.
    Fifo,
    /// Socket.
    Socket,
}

impl FsKind {
    /// The `ls -l` type letter.
    #[must_use]
    pub fn letter(self) -> char {
        match self {
            Self::File => '-',
            Self::Dir => 'd',
            Self::Symlink => 'l',
            Self::CharDevice => 'c',
            Self::BlockDevice => 'b',
            Self::Fifo => 'p',
            Self::Socket => 's',
        }
    }
}

/// One file-system entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FsEntry {
    /// Absolute path.
    pub path: String,
    /// Kind.
    pub kind: FsKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds since the epoch).
    pub mtime: i64,
    /// Symlink target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// An opened root file system.
pub struct RootFs {
    fs: Ext4,
    image: PathBuf,
}

impl std::fmt::Debug for RootFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootFs")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

fn kind_of(t: FileType) -> FsKind {
    match t {
        FileType::Directory => FsKind::Dir,
        FileType::Symlink => FsKind::Symlink,
        FileType::CharacterDevice => FsKind::CharDevice,
        FileType::BlockDevice => FsKind::BlockDevice,
        FileType::Fifo => FsKind::Fifo,
        FileType::Socket => FsKind::Socket,
        _ => FsKind::File,
    }
}

/// `/a/b/` and `a//b` become `/a/b`; `.` and `..` are refused (no resolution needed).
fn clean(path: &str) -> Result<String, RootFsError> {
    if !path.starts_with('/') {
        return Err(RootFsError::BadPath { path: path.into() });
    }
    let mut out = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(RootFsError::BadPath { path: path.into() });
        }
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

impl RootFs {
    pub(crate) fn load(reader: PartitionReader, image: &Path) -> Result<Self, RootFsError> {
        let fs = Ext4::load(Box::new(reader)).map_err(|source| RootFsError::Ext4 {
            image: image.to_owned(),
            source,
        })?;
        Ok(Self {
            fs,
            image: image.to_owned(),
        })
    }

    /// The volume label.
    #[must_use]
    pub fn label(&self) -> String {
        self.fs.label().to_str().unwrap_or_default().to_owned()
    }

    /// The file-system UUID.
    #[must_use]
    pub fn uuid(&self) -> String {
        self.fs.uuid().to_string()
    }

    fn error(&self, path: &str, source: Ext4Error) -> RootFsError {
        match source {
            Ext4Error::NotFound | Ext4Error::NotADirectory => RootFsError::NotFound {
                image: self.image.clone(),
                path: path.into(),
            },
            Ext4Error::IsADirectory => RootFsError::IsADirectory {
                image: self.image.clone(),
                path: path.into(),
            },
            Ext4Error::IsASpecialFile => RootFsError::NotAFile {
                image: self.image.clone(),
                path: path.into(),
            },
            Ext4Error::NotAbsolute | Ext4Error::MalformedPath | Ext4Error::PathTooLong => {
                RootFsError::BadPath { path: path.into() }
            }
            source => RootFsError::Ext4 {
                image: self.image.clone(),
                source,
            },
        }
    }

    fn entry(&self, path: &str, meta: &Metadata) -> Result<FsEntry, RootFsError> {
        let kind = kind_of(meta.file_type());
        let target = if kind == FsKind::Symlink {
            let link = self.fs.read_link(path).map_err(|e| self.error(path, e))?;
            Some(String::from_utf8_lossy(link.as_ref()).into_owned())
        } else {
            None
        };
        Ok(FsEntry {
            path: path.to_owned(),
            kind,
            mode: u32::from(meta.mode()),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
            mtime: meta.modified().seconds(),
            target,
        })
    }

    /// Metadata of `path` (a symlink itself, not its target).
    ///
    /// # Errors
    /// [`RootFsError::NotFound`], [`RootFsError::BadPath`], [`RootFsError::Ext4`].
    pub fn stat(&self, path: &str) -> Result<FsEntry, RootFsError> {
        let path = clean(path)?;
        let meta = self
            .fs
            .symlink_metadata(path.as_str())
            .map_err(|e| self.error(&path, e))?;
        self.entry(&path, &meta)
    }

    /// The entries of directory `path`, sorted by name (`path` itself when it is not a
    /// directory, like `ls`).
    ///
    /// # Errors
    /// As [`RootFs::stat`].
    pub fn list(&self, path: &str) -> Result<Vec<FsEntry>, RootFsError> {
        let top = self.stat(path)?;
        if top.kind != FsKind::Dir {
            return Ok(vec![top]);
        }
        let mut entries = Vec::new();
        let dir = self
            .fs
            .read_dir(top.path.as_str())
            .map_err(|e| self.error(&top.path, e))?;
        for item in dir {
            let item = item.map_err(|e| self.error(&top.path, e))?;
            let name = item.file_name();
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let child = if top.path == "/" {
                format!("/{name}")
            } else {
                format!("{}/{name}", top.path)
            };
            let meta = item.metadata().map_err(|e| self.error(&child, e))?;
            entries.push(self.entry(&child, &meta)?);
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Every entry below `/` (and `/` itself), sorted by path; symlinks are not followed.
    ///
    /// # Errors
    /// As [`RootFs::stat`].
    pub fn walk(&self) -> Result<Vec<FsEntry>, RootFsError> {
        let mut out = vec![self.stat("/")?];
        let mut stack = vec!["/".to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in self.list(&dir)? {
                if entry.kind == FsKind::Dir {
                    stack.push(entry.path.clone());
                }
                out.push(entry);
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The contents of file `path` (symlinks followed inside the image).
    ///
    /// # Errors
    /// [`RootFsError::NotFound`], [`RootFsError::IsADirectory`], [`RootFsError::NotAFile`].
    pub fn read(&self, path: &str) -> Result<Vec<u8>, RootFsError> {
        let path = clean(path)?;
        self.fs
            .read(path.as_str())
            .map_err(|e| self.error(&path, e))
    }

    /// Whether `path` exists (following symlinks).
    #[must_use]
    pub fn exists(&self, path: &str) -> bool {
        clean(path).is_ok_and(|p| self.fs.exists(p.as_str()).unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_or_refused() {
        assert_eq!(clean("/").unwrap(), "/");
        assert_eq!(clean("//etc//os-release/").unwrap(), "/etc/os-release");
        assert!(matches!(clean("etc"), Err(RootFsError::BadPath { .. })));
        assert!(matches!(
            clean("/etc/../x"),
            Err(RootFsError::BadPath { .. })
        ));
    }
}
