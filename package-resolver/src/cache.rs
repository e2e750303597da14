//! Content-addressed download cache.
//!
//! ```text
//! <root>/                  default `$XDG_CACHE_HOME/jeos`, else `~/.cache/jeos`
//!   debs/<sha256>.deb      verified package files
//!   indices/<sha256>       verified `Packages.gz`/`.xz` as downloaded, named by their
//!                          SHA-256 as listed in the Release file (caches of earlier
//!                          versions hold the decompressed text, named likewise)
//!   releases/<key>         last verified InRelease per mirror+suite (for `--offline`)
//!   locks/<sha256>.lock    per-entry lock files (never deleted; empty)
//!   verified/<kind>-<sha256>  verified stamps: an entry's file identity and times when it
//!                          was last hashed, so an unchanged entry is not re-hashed
//!   tmp/                   partial downloads, same filesystem as the final names
//! ```
//!
//! Invariant: a file under `debs/` or `indices/` has exactly the SHA-256 of its name.
//! [`TempEntry`] hashes while writing; [`Cache::commit`] fsyncs, compares the hash, and only
//! then renames atomically into place (then fsyncs the directory). Readers re-hash entries
//! (unless their verified stamp still matches, see [`Cache::get`]) and drop corrupt ones,
//! so a damaged or changed entry cannot feed wrong bytes into a build.
//!
//! Concurrency: renames are atomic, so readers never see partial files. Writers of the same
//! entry serialise on [`Cache::lock_entry`] (an exclusive `flock` via std's `File::lock`), so
//! two builds needing the same package download it once: the second one waits and then finds
//! the entry. Temp files left by a killed process stay in `tmp/` under unique names;
//! [`Cache::clean_tmp`] removes old ones.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::release::to_hex;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Filesystem error.
    #[error("cache IO error on `{path}`")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Content does not have the expected hash; it was not stored.
    #[error("`{name}`: SHA-256 mismatch (expected {expected}, got {actual}); not cached")]
    HashMismatch {
        /// What was being stored.
        name: String,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
    /// Content does not have the expected size; it was not stored.
    #[error("`{name}`: size mismatch (expected {expected} bytes, got {actual}); not cached")]
    SizeMismatch {
        /// What was being stored.
        name: String,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A key is not a lowercase hex SHA-256.
    #[error("`{0}` is not a lowercase hex SHA-256")]
    InvalidHash(String),
    /// No cache directory could be derived from the environment.
    #[error("cannot find a cache directory: neither `XDG_CACHE_HOME` nor `HOME` is set")]
    NoCacheDir,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Kind of cached entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A `.deb` file.
    Deb,
    /// A decompressed index.
    Index,
}

/// Validate and return a lowercase hex SHA-256.
fn check_hash(sha256: &str) -> Result<&str, CacheError> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(sha256)
    } else {
        Err(CacheError::InvalidHash(sha256.chars().take(80).collect()))
    }
}

/// The cache (cheap to clone; holds only its root path).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// `$XDG_CACHE_HOME/jeos`, else `$HOME/.cache/jeos`.
    pub fn default_dir() -> Result<PathBuf, CacheError> {
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(x).join("jeos"));
        }
        std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(".cache/jeos"))
            .ok_or(CacheError::NoCacheDir)
    }

    /// Open (creating directories as needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        for sub in ["debs", "indices", "releases", "locks", "tmp", "verified"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Final path of an entry (whether or not it exists).
    pub fn entry_path(&self, kind: EntryKind, sha256: &str) -> Result<PathBuf, CacheError> {
        let sha = check_hash(sha256)?;
        Ok(match kind {
            EntryKind::Deb => self.root.join("debs").join(format!("{sha}.deb")),
            EntryKind::Index => self.root.join("indices").join(sha),
        })
    }

    /// The entry, if present and intact. A present entry whose content does not match its
    /// name (or `size`, when given) is deleted and reported as absent.
    pub fn get(
        &self,
        kind: EntryKind,
        sha256: &str,
        size: Option<u64>,
    ) -> Result<Option<PathBuf>, CacheError> {
        let path = self.entry_path(kind, sha256)?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let stamp_path = self.stamp_path(kind, sha256);
        let before = file
            .metadata()
            .ok()
            .filter(|m| size.is_none_or(|s| s == m.len()))
            .map(|m| stamp_text(sha256, &m));
        if let Some(before) = &before
            && std::fs::read(&stamp_path).is_ok_and(|s| s == before.as_bytes())
        {
            refresh_stamp(&stamp_path, before);
            return Ok(Some(path));
        }
        let (actual, actual_size) = hash_reader(&mut file).map_err(io_err(&path))?;
        if actual != sha256 || size.is_some_and(|s| s != actual_size) {
            // Corrupt entry: remove it so it is downloaded again.
            let _ = std::fs::remove_file(&stamp_path);
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            return Ok(None);
        }
        // Stamp only a file that did not change while it was hashed.
        let after = file.metadata().map(|m| stamp_text(sha256, &m)).ok();
        if let (Some(before), Some(after)) = (before, after)
            && before == after
        {
            let _ = write_stamp(&stamp_path, &before);
        }
        Ok(Some(path))
    }

    /// Where the verified stamp of an entry lives (`verified/<kind>-<sha256>`).
    fn stamp_path(&self, kind: EntryKind, sha256: &str) -> PathBuf {
        let kind = match kind {
            EntryKind::Deb => "deb",
            EntryKind::Index => "index",
        };
        self.root.join("verified").join(format!("{kind}-{sha256}"))
    }

    /// Take the exclusive lock of an entry; released when the guard drops.
    #[allow(
        clippy::incompatible_msrv,
        reason = "File::lock is stable since 1.89 and the toolchain is 1.95; the workspace rust-version should be raised"
    )]
    pub fn lock_entry(&self, sha256: &str) -> Result<EntryLock, CacheError> {
        let sha = check_hash(sha256)?;
        let path = self.root.join("locks").join(format!("{sha}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.lock().map_err(io_err(&path))?;
        Ok(EntryLock { _file: file })
    }

    /// A new temp file in `tmp/`, hashed while written.
    pub fn temp_entry(&self) -> Result<TempEntry, CacheError> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = self
            .root
            .join("tmp")
            .join(format!("{}-{n}-{nanos}.part", std::process::id()));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(TempEntry {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Verify `temp` against `sha256` (and `size` if given), fsync it, and rename it into
    /// place. On mismatch the temp file is deleted and nothing enters the cache.
    pub fn commit(
        &self,
        mut temp: TempEntry,
        kind: EntryKind,
        name: &str,
        sha256: &str,
        size: Option<u64>,
    ) -> Result<PathBuf, CacheError> {
        let target = self.entry_path(kind, sha256)?;
        let actual = to_hex(&std::mem::take(&mut temp.hasher).finalize());
        if let Some(expected) = size.filter(|&s| s != temp.size) {
            return Err(CacheError::SizeMismatch {
                name: name.to_owned(),
                expected,
                actual: temp.size,
            });
        }
        if actual != sha256 {
            return Err(CacheError::HashMismatch {
                name: name.to_owned(),
                expected: sha256.to_owned(),
                actual,
            });
        }
        let file = temp
            .file
            .take()
            .expect("a TempEntry is committed only once");
        file.sync_all().map_err(io_err(&temp.path))?;
        drop(file);
        std::fs::rename(&temp.path, &target).map_err(io_err(&target))?;
        // The rename is done; TempEntry's Drop must not delete anything now.
        temp.path = PathBuf::new();
        if let Some(dir) = target.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(target)
    }

    /// Store `bytes` as entry `sha256` (verified).
    pub fn insert_bytes(
        &self,
        kind: EntryKind,
        name: &str,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, CacheError> {
        let mut temp = self.temp_entry()?;
        temp.write_all(bytes).map_err(io_err(&temp.path.clone()))?;
        self.commit(temp, kind, name, sha256, Some(len_u64(bytes.len())))
    }

    /// Path of the cached InRelease copy for a mirror and suite.
    #[must_use]
    pub fn release_path(&self, mirror: &str, suite: &str) -> PathBuf {
        let key: String = format!("{mirror}_{suite}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // Two different mirrors can sanitise to the same name; the hash suffix keeps them apart.
        let digest = to_hex(&Sha256::digest(format!("{mirror}\n{suite}").as_bytes()));
        self.root
            .join("releases")
            .join(format!("{key}-{}.InRelease", &digest[..16]))
    }

    /// Replace the cached InRelease for `mirror`/`suite` atomically.
    pub fn store_release(&self, mirror: &str, suite: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let mut temp = self.temp_entry()?;
        temp.write_all(bytes).map_err(io_err(&temp.path.clone()))?;
        let file = temp.file.take().expect("fresh TempEntry has its file");
        file.sync_all().map_err(io_err(&temp.path))?;
        drop(file);
        let target = self.release_path(mirror, suite);
        std::fs::rename(&temp.path, &target).map_err(io_err(&target))?;
        temp.path = PathBuf::new();
        Ok(())
    }

    /// The cached InRelease for `mirror`/`suite`, if any (still to be verified by the caller).
    pub fn load_release(&self, mirror: &str, suite: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.release_path(mirror, suite);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Remove temp files older than `age` (left behind by killed processes).
    pub fn clean_tmp(&self, age: Duration) -> Result<usize, CacheError> {
        let dir = self.root.join("tmp");
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|e| e > age);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Reclaims what killed runs left behind and nobody else can finish: temp downloads in
    /// `tmp/` and half-unpacked `unpacked/.unpack-*` trees older than `age` (a concurrent
    /// run's are younger). Returns how many entries were removed.
    ///
    /// # Errors
    /// [`CacheError::Io`] when `tmp/` cannot be listed.
    pub fn reclaim_leftovers(&self, age: Duration) -> Result<usize, CacheError> {
        let mut removed = self.clean_tmp(age)?;
        let unpacked = self.root.join("unpacked");
        let Ok(entries) = std::fs::read_dir(&unpacked) else {
            return Ok(removed);
        };
        for entry in entries.flatten() {
            let leftover = entry.file_name().to_string_lossy().starts_with(".unpack-")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|e| e > age);
            if leftover && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// SHA-256 (hex) and length of everything `reader` yields.
pub fn hash_reader(reader: &mut impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += len_u64(n);
    }
    Ok((to_hex(&hasher.finalize()), total))
}

/// The verified stamp of an entry named `sha256` whose file has `meta`: its SHA-256 and
/// the file's identity and times (inode, device, size, modification and change times in
/// nanoseconds). [`Cache::get`] re-hashes an entry only when its stamp does not match:
/// every write to the file (or its replacement) changes its change time, which no
/// unprivileged program can set back. The stamps are in the cache directory, so whoever
/// can write the cache can forge one, as they could replace the entry itself: the trust
/// boundary stays the cache directory's permissions. Media silently flipping bits under an
/// unchanged inode is not caught here; `jeos cache verify` re-hashes every entry.
fn stamp_text(sha256: &str, meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{sha256} {} {} {} {}.{:09} {}.{:09}\n",
        meta.size(),
        meta.ino(),
        meta.dev(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

fn write_stamp(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Rewrites a stamp last written more than a day ago, so `jeos cache prune` (which goes
/// by modification and access times) sees that its entry is still used although the entry
/// itself is no longer read.
fn refresh_stamp(path: &Path, text: &str) {
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > Duration::from_secs(86_400));
    if old {
        let _ = write_stamp(path, text);
    }
}

/// Holds an entry's lock until dropped.
#[derive(Debug)]
pub struct EntryLock {
    _file: File,
}

/// A file being written into `tmp/`; deleted on drop unless committed.
#[derive(Debug)]
pub struct TempEntry {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl TempEntry {
    /// Bytes written so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Path of the temp file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Discard everything written so far (for a retried download).
    pub fn reset(&mut self) -> std::io::Result<()> {
        if let Some(f) = &mut self.file {
            f.set_len(0)?;
            std::io::Seek::rewind(f)?;
        }
        self.hasher = Sha256::new();
        self.size = 0;
        Ok(())
    }
}

impl Write for TempEntry {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("temp entry already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += len_u64(n);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), File::flush)
    }
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn hex_of(b: &[u8]) -> String {
        to_hex(&Sha256::digest(b))
    }

    #[test]
    fn leftovers_of_killed_runs_are_reclaimed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(7200);
        let part = c.root().join("tmp/123-0-0.part");
        std::fs::write(&part, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&part)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let unpack = c.root().join("unpacked/.unpack-abc");
        std::fs::create_dir_all(unpack.join("usr")).unwrap();
        std::fs::write(unpack.join("usr/big"), b"x").unwrap();
        std::fs::File::open(&unpack)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let fresh = c.root().join("unpacked/.unpack-fresh");
        std::fs::create_dir_all(&fresh).unwrap();
        let done = c.root().join("unpacked/0123abcd");
        std::fs::create_dir_all(&done).unwrap();
        std::fs::File::open(&done)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(c.reclaim_leftovers(Duration::from_secs(3600)).unwrap(), 2);
        assert!(!part.exists() && !unpack.exists());
        assert!(fresh.exists(), "a concurrent run's tree is kept");
        assert!(done.exists(), "complete trees are kept");
    }

    fn tmp_is_empty(c: &Cache) -> bool {
        std::fs::read_dir(c.root().join("tmp")).unwrap().count() == 0
    }

    #[test]
    fn insert_and_get() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let h = hex_of(b"hello");
        assert_eq!(c.get(EntryKind::Deb, &h, None).unwrap(), None);
        let p = c
            .insert_bytes(EntryKind::Deb, "hello", &h, b"hello")
            .unwrap();
        assert!(p.ends_with(format!("debs/{h}.deb")));
        assert_eq!(c.get(EntryKind::Deb, &h, Some(5)).unwrap(), Some(p.clone()));
        assert_eq!(c.get(EntryKind::Deb, &h, Some(6)).unwrap(), None);
        assert!(!p.exists(), "entry with wrong size is dropped");
        assert!(tmp_is_empty(&c));
    }

    /// Issue #14: a verified entry is not re-hashed while its stamp matches, and any
    /// change to it (even one that keeps its size and modification time) is noticed.
    #[test]
    fn issue_14_stamped_entries_skip_the_hash_until_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let h = hex_of(b"hello");
        let p = c
            .insert_bytes(EntryKind::Deb, "hello", &h, b"hello")
            .unwrap();
        assert_eq!(c.get(EntryKind::Deb, &h, Some(5)).unwrap(), Some(p.clone()));
        let stamp = c.stamp_path(EntryKind::Deb, &h);
        assert!(stamp.is_file(), "a verified entry is stamped");
        assert_eq!(c.get(EntryKind::Deb, &h, Some(5)).unwrap(), Some(p.clone()));
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::fs::write(&p, b"jello").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(c.get(EntryKind::Deb, &h, Some(5)).unwrap(), None);
        assert!(
            !p.exists() && !stamp.exists(),
            "the changed entry and its stamp are gone"
        );
        // A forged stamp for another file's identity does not match.
        let p = c
            .insert_bytes(EntryKind::Deb, "hello", &h, b"hello")
            .unwrap();
        std::fs::write(&stamp, format!("{h} 5 1 1 0.000000000 0.000000000\n")).unwrap();
        assert_eq!(c.get(EntryKind::Deb, &h, Some(5)).unwrap(), Some(p));
        assert_ne!(
            std::fs::read_to_string(&stamp).unwrap(),
            format!("{h} 5 1 1 0.000000000 0.000000000\n")
        );
    }

    #[test]
    fn mismatch_never_enters_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let mut t = c.temp_entry().unwrap();
        t.write_all(b"not empty").unwrap();
        let err = c
            .commit(t, EntryKind::Index, "x", EMPTY, Some(0))
            .unwrap_err();
        assert!(matches!(err, CacheError::SizeMismatch { .. }), "{err}");
        let h = hex_of(b"abc");
        let err = c
            .insert_bytes(EntryKind::Index, "x", &h, b"abd")
            .unwrap_err();
        assert!(matches!(err, CacheError::HashMismatch { .. }), "{err}");
        assert!(!c.entry_path(EntryKind::Index, &h).unwrap().exists());
        assert!(tmp_is_empty(&c));
        assert_eq!(
            std::fs::read_dir(dir.path().join("indices"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn corrupt_entry_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let h = hex_of(b"abc");
        let p = c.insert_bytes(EntryKind::Index, "x", &h, b"abc").unwrap();
        std::fs::write(&p, b"abd").unwrap();
        assert_eq!(c.get(EntryKind::Index, &h, None).unwrap(), None);
        assert!(!p.exists());
    }

    #[test]
    fn invalid_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        for bad in ["../../etc/passwd", "ABC", &EMPTY.to_uppercase()] {
            assert!(matches!(
                c.entry_path(EntryKind::Deb, bad),
                Err(CacheError::InvalidHash(_))
            ));
        }
    }

    #[test]
    fn temp_reset_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let mut t = c.temp_entry().unwrap();
        t.write_all(b"garbage").unwrap();
        t.reset().unwrap();
        t.write_all(b"abc").unwrap();
        let p = c
            .commit(t, EntryKind::Deb, "abc", &hex_of(b"abc"), Some(3))
            .unwrap();
        assert_eq!(std::fs::read(p).unwrap(), b"abc");
        let mut t = c.temp_entry().unwrap();
        t.write_all(b"x").unwrap();
        drop(t);
        assert!(tmp_is_empty(&c));
    }

    #[test]
    fn releases_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        assert_eq!(
            c.load_release("http://m.invalid/debian", "trixie").unwrap(),
            None
        );
        c.store_release("http://m.invalid/debian", "trixie", b"one")
            .unwrap();
        c.store_release("http://m.invalid/debian", "trixie", b"two")
            .unwrap();
        assert_eq!(
            c.load_release("http://m.invalid/debian", "trixie").unwrap(),
            Some(b"two".to_vec())
        );
        assert_eq!(
            c.load_release("http://m.invalid/debian/", "trixie")
                .unwrap(),
            None
        );
    }

    #[test]
    fn entry_lock_is_exclusive_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let h = hex_of(b"x");
        let guard = c.lock_entry(&h).unwrap();
        let c2 = c.clone();
        let h2 = h.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _g = c2.lock_entry(&h2).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(guard);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }
}
