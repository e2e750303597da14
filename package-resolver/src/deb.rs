//! Unpack `.deb` files into a staging directory without root.
//!
//! ```text
//! .deb = ar archive (`!<arch>\n`, 60-byte member headers, data padded to even offsets)
//!   debian-binary        "2.0\n"
//!   control.tar[.xz|.zst|.gz]   ./control, maintainer scripts (kept as text in the report)
//!   data.tar[.xz|.zst|.gz]      the files; read entry by entry with `tar`'s iterator
//! ```
//!
//! The `ar` container is parsed here, defensively: every size is bounded by the file size,
//! at most 16 members, the member order of `deb(5)`. Tar entries are never unpacked with the
//! `tar` crate's `unpack` functions; each entry is checked and written by hand:
//!
//! - paths are relative, without `..`, NUL or non-UTF-8 bytes (leading `./` and `/` of the
//!   root entry are dropped; an absolute path is an error);
//! - with [`UnpackOptions::merged_usr`], the usrmerge alias prefixes `bin/ sbin/ lib/ lib32/
//!   lib64/ libx32/` become `usr/...` first (for entries and hard-link targets); a symlink that
//!   *is* an alias root (`bin -> usr/bin`) is kept verbatim;
//! - no parent component may be a symlink or a non-directory, neither in the manifest (from
//!   any earlier package) nor on disk; files are created with `O_EXCL` after removing any
//!   previous non-directory, so nothing is ever written through a symlink;
//! - hard links must point to a regular file this same package already shipped; a real hard
//!   link is made in the staging tree;
//! - device nodes and FIFOs are only recorded in the [`Manifest`], never created;
//! - an entry whose data ends before its declared size is a [`DebError::LyingSize`].
//!
//! Files on disk get mode 0644 (0755 if any execute bit is set) and directories 0755, so the
//! unprivileged builder can read everything; the [`Manifest`] keeps the real owner, mode
//! (including setuid/setgid), mtime and kind for the image writer.
//!
//! Several packages may be unpacked into one [`UnpackDir`]: directories are shared; when two
//! packages ship the same non-directory path, the later package wins and the pair is recorded
//! in [`UnpackDir::overlaps`] (dpkg would need `Replaces`; jeos reports it instead of failing).
//! On error the staging tree may hold a partial package, but never anything outside itself.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::deb822;

/// Maximum number of ar members.
const MAX_AR_MEMBERS: usize = 16;
/// usrmerge alias directories (DEP 17).
const USR_ALIASES: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Maintainer scripts whose text is kept.
const SCRIPTS: [&str; 6] = [
    "preinst", "postinst", "prerm", "postrm", "config", "triggers",
];

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// Wraps an error with the `.deb` file it happened in.
    #[error("cannot unpack `{deb}`")]
    InFile {
        /// The `.deb`.
        deb: PathBuf,
        /// Cause.
        #[source]
        source: Box<DebError>,
    },
    /// Not an ar archive.
    #[error("not a .deb: missing `!<arch>` magic")]
    NotAr,
    /// An ar member header is malformed.
    #[error("ar header at offset {offset}: {reason}")]
    ArHeader {
        /// Byte offset of the header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An ar member claims more bytes than the file holds.
    #[error("ar member `{member}` claims {size} bytes but only {remaining} remain")]
    ArMemberTooLarge {
        /// Member name.
        member: String,
        /// Declared size.
        size: u64,
        /// Bytes left in the file.
        remaining: u64,
    },
    /// Member order/name not as `deb(5)` requires.
    #[error("unexpected ar member `{found}` (expected {expected})")]
    UnexpectedMember {
        /// Found name.
        found: String,
        /// What was expected.
        expected: &'static str,
    },
    /// `debian-binary` is not format 2.x.
    #[error("unsupported .deb format version `{0}`")]
    FormatVersion(String),
    /// Compression not supported.
    #[error("unsupported compression of member `{0}`")]
    UnsupportedCompression(String),
    /// A control member is too large.
    #[error("control member `{member}` is {size} bytes (limit {limit})")]
    ControlMemberTooLarge {
        /// Member name.
        member: String,
        /// Size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// No or invalid `control` file.
    #[error("invalid control file: {0}")]
    Control(String),
    /// A tar path contains `..`.
    #[error("path `{path}` contains `..`")]
    PathTraversal {
        /// Path as written.
        path: String,
    },
    /// A tar path is absolute.
    #[error("path `{path}` is absolute")]
    AbsolutePath {
        /// Path as written.
        path: String,
    },
    /// A path is not valid UTF-8 or contains NUL.
    #[error("path `{path}` is not valid UTF-8 or contains NUL")]
    InvalidPath {
        /// Path (lossy).
        path: String,
    },
    /// A parent component is a symlink.
    #[error("`{path}` would be written through the symlink `{symlink}`")]
    PathThroughSymlink {
        /// Entry path.
        path: String,
        /// The symlink component.
        symlink: String,
    },
    /// A parent component is not a directory.
    #[error("parent `{parent}` of `{path}` is not a directory")]
    ParentNotDirectory {
        /// Entry path.
        path: String,
        /// The parent.
        parent: String,
    },
    /// An entry conflicts with an existing one of another type (e.g. file over directory).
    #[error("`{path}` is a {existing} and cannot be replaced by a {new}")]
    TypeConflict {
        /// Path.
        path: String,
        /// Existing kind.
        existing: &'static str,
        /// New kind.
        new: &'static str,
    },
    /// A hard link target is absent or not a regular file of this package.
    #[error("hard link `{path}` points to `{target}`, which is not a file of this package")]
    HardLinkTarget {
        /// Link path.
        path: String,
        /// Target as written.
        target: String,
    },
    /// A symlink has an empty or NUL-containing target.
    #[error("symlink `{path}` has an invalid target")]
    SymlinkTarget {
        /// Link path.
        path: String,
    },
    /// An entry's data ends before its declared size.
    #[error("`{path}` declares {declared} bytes but the archive holds only {actual}")]
    LyingSize {
        /// Path.
        path: String,
        /// Declared size.
        declared: u64,
        /// Bytes available.
        actual: u64,
    },
    /// Unsupported tar entry type.
    #[error("`{path}`: unsupported tar entry type {kind}")]
    UnsupportedEntry {
        /// Path.
        path: String,
        /// Type byte.
        kind: u8,
    },
    /// Uncompressed data exceeds [`UnpackOptions::max_data_bytes`].
    #[error("data archive exceeds the limit of {limit} bytes")]
    DataTooLarge {
        /// Limit.
        limit: u64,
    },
    /// The archive is truncated or corrupt (decompression or tar structure).
    #[error("member `{member}` is truncated or corrupt")]
    Corrupt {
        /// Member.
        member: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing an unpacked file failed because the host file system is full.
    #[error("no space left on the device holding `{}`", .path.display())]
    NoSpace {
        /// The file being written.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A required member is missing.
    #[error("missing member `{0}`")]
    MissingMember(&'static str),
    /// Filesystem error.
    #[error("IO error on `{path}`")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl DebError {
    /// The error without the [`DebError::InFile`] wrapper.
    #[must_use]
    pub fn innermost(&self) -> &DebError {
        match self {
            Self::InFile { source, .. } => source.innermost(),
            other => other,
        }
    }
}

/// Options of the unpacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Rewrite `bin/ sbin/ lib*/` to `usr/...` (merged-/usr targets such as trixie).
    pub merged_usr: bool,
    /// Maximum size of one kept control member (`control`, scripts).
    pub max_control_member: u64,
    /// Maximum uncompressed size of `control.tar`.
    pub max_control_tar: u64,
    /// Maximum uncompressed size of `data.tar`.
    pub max_data_bytes: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            merged_usr: true,
            max_control_member: 4 << 20,
            max_control_tar: 64 << 20,
            max_data_bytes: 16 << 30,
        }
    }
}

/// Kind of manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink {
        /// Target as written.
        target: String,
    },
    /// Hard link to another path of the manifest.
    HardLink {
        /// Normalised target path.
        target: String,
    },
    /// Character device (recorded only).
    CharDev {
        /// Major.
        major: u32,
        /// Minor.
        minor: u32,
    },
    /// Block device (recorded only).
    BlockDev {
        /// Major.
        major: u32,
        /// Minor.
        minor: u32,
    },
    /// Named pipe (recorded only).
    Fifo,
}

impl EntryKind {
    fn noun(&self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "directory",
            Self::Symlink { .. } => "symlink",
            Self::HardLink { .. } => "hard link",
            Self::CharDev { .. } => "character device",
            Self::BlockDev { .. } => "block device",
            Self::Fifo => "fifo",
        }
    }
}

/// Metadata of one path of the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// Kind.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// Owner name from the archive.
    pub uname: String,
    /// Group name from the archive.
    pub gname: String,
    /// Modification time (Unix seconds).
    pub mtime: u64,
    /// Size in bytes (files and hard links).
    pub size: u64,
    /// Package that shipped it.
    pub package: String,
}

/// Metadata of the whole staging tree, by relative path (`usr/bin/hostname`).
pub type Manifest = BTreeMap<String, ManifestEntry>;

/// What one unpacked package contained.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageReport {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `Architecture`.
    pub architecture: String,
    /// The `control` file text.
    pub control: String,
    /// Maintainer scripts present, name → text (lossy UTF-8).
    pub scripts: BTreeMap<String, String>,
    /// Paths listed in the `conffiles` control member (absolute, as dpkg records them).
    pub conffiles: Vec<String>,
    /// The `md5sums` control member (`<md5>  <path>` lines), if the package has one.
    pub md5sums: Option<String>,
    /// Non-directory entries.
    pub files: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

/// A path shipped by two packages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overlap {
    /// Path.
    pub path: String,
    /// Package unpacked first.
    pub first: String,
    /// Package unpacked later (its version was kept).
    pub second: String,
}

/// A directory being filled with packages (the unpacked root filesystem and its
/// manifest).
#[derive(Debug)]
pub struct UnpackDir {
    root: PathBuf,
    manifest: Manifest,
    overlaps: Vec<Overlap>,
    packages: Vec<PackageReport>,
}

/// One ar member's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArMember {
    /// Name (without GNU `/` terminator).
    pub name: String,
    /// Offset of the data.
    pub offset: u64,
    /// Data size.
    pub size: u64,
}

/// List the members of an ar archive of `len` bytes. Pure apart from reading `r`.
pub fn read_ar_members<R: Read + Seek>(r: &mut R, len: u64) -> Result<Vec<ArMember>, DebError> {
    let io = |source| DebError::Corrupt {
        member: "ar".to_owned(),
        source,
    };
    let mut magic = [0u8; 8];
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    if len < 8 || r.read_exact(&mut magic).is_err() || &magic != b"!<arch>\n" {
        return Err(DebError::NotAr);
    }
    let mut members = Vec::new();
    let mut pos = 8u64;
    while pos < len {
        if members.len() >= MAX_AR_MEMBERS {
            return Err(DebError::ArHeader {
                offset: pos,
                reason: format!("more than {MAX_AR_MEMBERS} members"),
            });
        }
        let bad = |reason: &str| DebError::ArHeader {
            offset: pos,
            reason: reason.to_owned(),
        };
        if len - pos < 60 {
            return Err(bad("truncated header"));
        }
        let mut h = [0u8; 60];
        r.seek(SeekFrom::Start(pos)).map_err(io)?;
        r.read_exact(&mut h).map_err(io)?;
        if &h[58..60] != b"`\n" {
            return Err(bad("bad header terminator"));
        }
        let name = std::str::from_utf8(&h[0..16])
            .map_err(|_| bad("name is not ASCII"))?
            .trim_end_matches(' ')
            .trim_end_matches('/')
            .to_owned();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("invalid member name"));
        }
        let size_text = std::str::from_utf8(&h[48..58])
            .map_err(|_| bad("size is not ASCII"))?
            .trim_end_matches(' ');
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("size is not a decimal number"));
        }
        let size: u64 = size_text.parse().map_err(|_| bad("size out of range"))?;
        let offset = pos + 60;
        let remaining = len - offset;
        if size > remaining {
            return Err(DebError::ArMemberTooLarge {
                member: name,
                size,
                remaining,
            });
        }
        members.push(ArMember { name, offset, size });
        // Data is padded to an even offset; the pad byte may be missing at the very end.
        pos = offset + size + (size & 1);
    }
    Ok(members)
}

enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

fn compression_of(member: &str, base: &str) -> Result<Compression, DebError> {
    match member.strip_prefix(base) {
        Some("") => Ok(Compression::None),
        Some(".xz") => Ok(Compression::Xz),
        Some(".zst") => Ok(Compression::Zstd),
        Some(".gz") => Ok(Compression::Gzip),
        _ => Err(DebError::UnsupportedCompression(member.to_owned())),
    }
}

fn decompressor<'a, R: Read + 'a>(
    c: &Compression,
    inner: R,
    member: &str,
) -> Result<Box<dyn Read + 'a>, DebError> {
    Ok(match c {
        Compression::None => Box::new(inner),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(inner)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
        Compression::Zstd => {
            Box::new(ruzstd::decoding::StreamingDecoder::new(inner).map_err(|e| {
                DebError::Corrupt {
                    member: member.to_owned(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                }
            })?)
        }
    })
}

/// A reader that fails (instead of ending) once more than `limit` bytes were read.
struct CappedReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        if n64 > self.remaining {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "uncompressed size limit exceeded",
            ));
        }
        self.remaining -= n64;
        Ok(n)
    }
}

fn is_too_large(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::FileTooLarge
}

/// Normalise a tar path: drop `./` and `.` components, reject `..`, absolute, NUL and
/// non-UTF-8. Returns `None` for the root itself.
fn normalize_path(
    raw: &[u8],
    merged_usr: bool,
    is_symlink: bool,
) -> Result<Option<String>, DebError> {
    let lossy = || String::from_utf8_lossy(raw).into_owned();
    let text = std::str::from_utf8(raw).map_err(|_| DebError::InvalidPath { path: lossy() })?;
    if text.contains('\0') {
        return Err(DebError::InvalidPath { path: lossy() });
    }
    if text.starts_with('/') {
        // `/` alone is sometimes used for the root entry; anything else is absolute.
        if text.trim_start_matches('/').is_empty() {
            return Ok(None);
        }
        return Err(DebError::AbsolutePath { path: lossy() });
    }
    let mut parts = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(DebError::PathTraversal { path: lossy() }),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    // A symlink that is exactly an alias root (`bin -> usr/bin`) stays where it is.
    let alias_root = is_symlink && parts.len() == 1;
    if merged_usr && !alias_root && USR_ALIASES.contains(&parts[0]) {
        parts.insert(0, "usr");
    }
    Ok(Some(parts.join("/")))
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DebError + '_ {
    move |source| {
        if is_no_space(&source) {
            DebError::NoSpace {
                path: path.to_owned(),
                source,
            }
        } else {
            DebError::Io {
                path: path.to_owned(),
                source,
            }
        }
    }
}

impl UnpackDir {
    /// A staging tree at `root` (created if absent; it should be empty).
    pub fn new(root: &Path) -> Result<Self, DebError> {
        std::fs::create_dir_all(root).map_err(io_at(root))?;
        Ok(Self {
            root: root.to_owned(),
            manifest: Manifest::new(),
            overlaps: Vec::new(),
            packages: Vec::new(),
        })
    }

    /// A staging tree at `root` whose packages were unpacked before (a restored cache
    /// entry): its manifest, overlaps and package reports as that unpacking recorded them.
    #[must_use]
    pub fn from_parts(
        root: &Path,
        manifest: Manifest,
        overlaps: Vec<Overlap>,
        packages: Vec<PackageReport>,
    ) -> Self {
        Self {
            root: root.to_owned(),
            manifest,
            overlaps,
            packages,
        }
    }

    /// Root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Metadata of everything unpacked so far.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Paths shipped by two packages.
    #[must_use]
    pub fn overlaps(&self) -> &[Overlap] {
        &self.overlaps
    }

    /// Reports of the packages unpacked so far.
    #[must_use]
    pub fn packages(&self) -> &[PackageReport] {
        &self.packages
    }

    /// Unpack the `.deb` at `path`.
    pub fn unpack_deb(
        &mut self,
        path: &Path,
        options: &UnpackOptions,
    ) -> Result<&PackageReport, DebError> {
        self.unpack_deb_observed(path, options, &mut |_| {})
    }

    /// [`Self::unpack_deb`], calling `on_file` with each regular file's path (relative to
    /// the root, normalised) once it is written and closed, so a caller can start work on
    /// it while the rest of the archive unpacks. A path written twice is reported twice.
    pub fn unpack_deb_observed(
        &mut self,
        path: &Path,
        options: &UnpackOptions,
        on_file: &mut dyn FnMut(&str),
    ) -> Result<&PackageReport, DebError> {
        let wrap = |source| DebError::InFile {
            deb: path.to_owned(),
            source: Box::new(source),
        };
        let mut file = File::open(path).map_err(|e| wrap(io_at(path)(e)))?;
        let len = file.metadata().map_err(|e| wrap(io_at(path)(e)))?.len();
        self.unpack_reader_observed(&mut file, len, options, on_file)
            .map_err(wrap)
    }

    /// Unpack a `.deb` of `len` bytes from `r`.
    pub fn unpack_reader<R: Read + Seek>(
        &mut self,
        r: &mut R,
        len: u64,
        options: &UnpackOptions,
    ) -> Result<&PackageReport, DebError> {
        self.unpack_reader_observed(r, len, options, &mut |_| {})
    }

    fn unpack_reader_observed<R: Read + Seek>(
        &mut self,
        r: &mut R,
        len: u64,
        options: &UnpackOptions,
        on_file: &mut dyn FnMut(&str),
    ) -> Result<&PackageReport, DebError> {
        let members = read_ar_members(r, len)?;
        let mut iter = members.iter().filter(|m| !m.name.starts_with('_'));
        let binary = iter
            .next()
            .ok_or(DebError::MissingMember("debian-binary"))?;
        if binary.name != "debian-binary" {
            return Err(DebError::UnexpectedMember {
                found: binary.name.clone(),
                expected: "`debian-binary`",
            });
        }
        if binary.size > 64 {
            return Err(DebError::FormatVersion("(oversized)".to_owned()));
        }
        let mut version = Vec::new();
        member_reader(r, binary)?
            .read_to_end(&mut version)
            .map_err(|source| DebError::Corrupt {
                member: binary.name.clone(),
                source,
            })?;
        let version = String::from_utf8_lossy(&version).trim().to_owned();
        if !version.starts_with("2.") {
            return Err(DebError::FormatVersion(version));
        }
        let control = iter.next().ok_or(DebError::MissingMember("control.tar"))?;
        let control_c = if control.name.starts_with("control.tar") {
            compression_of(&control.name, "control.tar")?
        } else {
            return Err(DebError::UnexpectedMember {
                found: control.name.clone(),
                expected: "`control.tar*`",
            });
        };
        let mut report = read_control(r, control, &control_c, options)?;
        let data = iter.next().ok_or(DebError::MissingMember("data.tar"))?;
        let data_c = if data.name.starts_with("data.tar") {
            compression_of(&data.name, "data.tar")?
        } else {
            return Err(DebError::UnexpectedMember {
                found: data.name.clone(),
                expected: "`data.tar*`",
            });
        };
        let reader = member_reader(r, data)?;
        let reader = decompressor(&data_c, reader, &data.name)?;
        let reader = CappedReader {
            inner: reader,
            remaining: options.max_data_bytes,
        };
        self.unpack_data(reader, &data.name, &mut report, options, on_file)?;
        self.packages.push(report);
        Ok(self.packages.last().expect("just pushed"))
    }

    fn unpack_data(
        &mut self,
        reader: impl Read,
        member: &str,
        report: &mut PackageReport,
        options: &UnpackOptions,
        on_file: &mut dyn FnMut(&str),
    ) -> Result<(), DebError> {
        let corrupt = |source: std::io::Error| {
            if is_too_large(&source) {
                DebError::DataTooLarge {
                    limit: options.max_data_bytes,
                }
            } else {
                DebError::Corrupt {
                    member: member.to_owned(),
                    source,
                }
            }
        };
        let mut archive = tar::Archive::new(reader);
        let mut this_package_files: std::collections::HashSet<String> = Default::default();
        for entry in archive.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let header = entry.header().clone();
            let etype = header.entry_type();
            if etype.is_pax_global_extensions() {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let Some(path) = normalize_path(&raw, options.merged_usr, etype.is_symlink())? else {
                continue;
            };
            let field = |r: std::io::Result<u64>| r.map_err(corrupt);
            let mode = u32::try_from(field(header.mode().map(u64::from))? & 0o7777).unwrap_or(0);
            let kind = if etype.is_file() || etype == tar::EntryType::Continuous {
                EntryKind::File
            } else if etype.is_dir() {
                EntryKind::Dir
            } else if etype.is_symlink() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                match String::from_utf8(target) {
                    Ok(t) if !t.is_empty() && !t.contains('\0') => EntryKind::Symlink { target: t },
                    _ => return Err(DebError::SymlinkTarget { path }),
                }
            } else if etype.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let bad = || DebError::HardLinkTarget {
                    path: path.clone(),
                    target: String::from_utf8_lossy(&target).into_owned(),
                };
                let normalized = normalize_path(&target, options.merged_usr, false)
                    .map_err(|_| bad())?
                    .ok_or_else(bad)?;
                let is_own_file = this_package_files.contains(&normalized)
                    && matches!(
                        self.manifest.get(&normalized).map(|e| &e.kind),
                        Some(EntryKind::File)
                    );
                if !is_own_file {
                    return Err(bad());
                }
                EntryKind::HardLink { target: normalized }
            } else if etype.is_character_special() || etype.is_block_special() {
                let major = header.device_major().map_err(corrupt)?.unwrap_or(0);
                let minor = header.device_minor().map_err(corrupt)?.unwrap_or(0);
                if etype.is_character_special() {
                    EntryKind::CharDev { major, minor }
                } else {
                    EntryKind::BlockDev { major, minor }
                }
            } else if etype.is_fifo() {
                EntryKind::Fifo
            } else {
                return Err(DebError::UnsupportedEntry {
                    path,
                    kind: etype.as_byte(),
                });
            };
            self.check_parents(&path)?;
            let declared = entry.size();
            let size = self.write_entry(&path, &kind, &mut entry, declared, mode, options)?;
            if let Some(prev) = self.manifest.get(&path) {
                let both_dirs = prev.kind == EntryKind::Dir && kind == EntryKind::Dir;
                if !both_dirs && prev.package != report.name {
                    self.overlaps.push(Overlap {
                        path: path.clone(),
                        first: prev.package.clone(),
                        second: report.name.clone(),
                    });
                }
                if both_dirs {
                    continue;
                }
            }
            if kind != EntryKind::Dir {
                report.files += 1;
            }
            if kind == EntryKind::File {
                report.bytes += size;
                this_package_files.insert(path.clone());
                on_file(&path);
            }
            let text = |b: Option<&[u8]>| {
                b.map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default()
            };
            self.manifest.insert(
                path,
                ManifestEntry {
                    kind,
                    mode,
                    uid: field(header.uid())?,
                    gid: field(header.gid())?,
                    uname: text(header.username_bytes()),
                    gname: text(header.groupname_bytes()),
                    mtime: field(header.mtime())?,
                    size,
                    package: report.name.clone(),
                },
            );
        }
        Ok(())
    }

    /// Every proper prefix of `path` must be a directory (manifest first, then disk).
    fn check_parents(&mut self, path: &str) -> Result<(), DebError> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            end += i + 1;
            match self.manifest.get(parent).map(|e| &e.kind) {
                Some(EntryKind::Dir) => continue,
                Some(EntryKind::Symlink { .. }) => {
                    return Err(DebError::PathThroughSymlink {
                        path: path.to_owned(),
                        symlink: parent.to_owned(),
                    });
                }
                Some(_) => {
                    return Err(DebError::ParentNotDirectory {
                        path: path.to_owned(),
                        parent: parent.to_owned(),
                    });
                }
                None => {}
            }
            let on_disk = self.root.join(parent);
            match std::fs::symlink_metadata(&on_disk) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(DebError::PathThroughSymlink {
                        path: path.to_owned(),
                        symlink: parent.to_owned(),
                    });
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(DebError::ParentNotDirectory {
                        path: path.to_owned(),
                        parent: parent.to_owned(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&on_disk).map_err(io_at(&on_disk))?;
                    set_mode(&on_disk, 0o755)?;
                }
                Err(e) => return Err(io_at(&on_disk)(e)),
            }
        }
        Ok(())
    }

    /// Create `path` on disk (files, dirs, symlinks, hard links); returns the size written.
    fn write_entry(
        &mut self,
        path: &str,
        kind: &EntryKind,
        data: &mut impl Read,
        declared: u64,
        mode: u32,
        options: &UnpackOptions,
    ) -> Result<u64, DebError> {
        let on_disk = self.root.join(path);
        let existing = std::fs::symlink_metadata(&on_disk).ok();
        let existing_is_dir = existing.as_ref().is_some_and(|m| m.is_dir());
        if existing_is_dir {
            if *kind == EntryKind::Dir {
                return Ok(0);
            }
            return Err(DebError::TypeConflict {
                path: path.to_owned(),
                existing: "directory",
                new: kind.noun(),
            });
        }
        if let Some(prev) = self.manifest.get(path)
            && prev.kind != EntryKind::Dir
            && *kind == EntryKind::Dir
        {
            return Err(DebError::TypeConflict {
                path: path.to_owned(),
                existing: prev.kind.noun(),
                new: kind.noun(),
            });
        }
        if existing.is_some() {
            // Never follow: remove the old file/symlink, then create a new one.
            std::fs::remove_file(&on_disk).map_err(io_at(&on_disk))?;
        }
        match kind {
            EntryKind::Dir => {
                std::fs::create_dir(&on_disk).map_err(io_at(&on_disk))?;
                set_mode(&on_disk, 0o755)?;
                Ok(0)
            }
            EntryKind::File => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&on_disk)
                    .map_err(io_at(&on_disk))?;
                let copied = std::io::copy(data, &mut f).map_err(|source| {
                    if is_too_large(&source) {
                        DebError::DataTooLarge {
                            limit: options.max_data_bytes,
                        }
                    } else if is_no_space(&source) {
                        DebError::NoSpace {
                            path: on_disk.clone(),
                            source,
                        }
                    } else if source.kind() == std::io::ErrorKind::UnexpectedEof {
                        DebError::LyingSize {
                            path: path.to_owned(),
                            declared,
                            actual: 0,
                        }
                    } else {
                        DebError::Corrupt {
                            member: path.to_owned(),
                            source,
                        }
                    }
                })?;
                if copied != declared {
                    return Err(DebError::LyingSize {
                        path: path.to_owned(),
                        declared,
                        actual: copied,
                    });
                }
                drop(f);
                set_mode(&on_disk, if mode & 0o111 != 0 { 0o755 } else { 0o644 })?;
                Ok(copied)
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &on_disk).map_err(io_at(&on_disk))?;
                Ok(0)
            }
            EntryKind::HardLink { target } => {
                let src = self.root.join(target);
                std::fs::hard_link(&src, &on_disk).map_err(io_at(&on_disk))?;
                Ok(self.manifest.get(target).map_or(0, |e| e.size))
            }
            EntryKind::CharDev { .. } | EntryKind::BlockDev { .. } | EntryKind::Fifo => Ok(0),
        }
    }
}

/// A write failed because the file system (or the user's quota on it) is full.
#[must_use]
pub fn is_no_space(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

fn set_mode(path: &Path, mode: u32) -> Result<(), DebError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_at(path))
}

fn member_reader<'r, R: Read + Seek>(
    r: &'r mut R,
    m: &ArMember,
) -> Result<std::io::Take<&'r mut R>, DebError> {
    r.seek(SeekFrom::Start(m.offset))
        .map_err(|source| DebError::Corrupt {
            member: m.name.clone(),
            source,
        })?;
    Ok(r.take(m.size))
}

fn read_control<R: Read + Seek>(
    r: &mut R,
    member: &ArMember,
    compression: &Compression,
    options: &UnpackOptions,
) -> Result<PackageReport, DebError> {
    let corrupt = |source: std::io::Error| {
        if is_too_large(&source) {
            DebError::ControlMemberTooLarge {
                member: member.name.clone(),
                size: options.max_control_tar.saturating_add(1),
                limit: options.max_control_tar,
            }
        } else {
            DebError::Corrupt {
                member: member.name.clone(),
                source,
            }
        }
    };
    let reader = decompressor(compression, member_reader(r, member)?, &member.name)?;
    let reader = CappedReader {
        inner: reader,
        remaining: options.max_control_tar,
    };
    let mut archive = tar::Archive::new(reader);
    let mut control = None;
    let mut conffiles = Vec::new();
    let mut md5sums = None;
    let mut scripts = BTreeMap::new();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let Some(name) = normalize_path(&raw, false, false)? else {
            continue;
        };
        let keep = ["control", "conffiles", "md5sums"].contains(&name.as_str())
            || SCRIPTS.contains(&name.as_str());
        if !keep {
            continue;
        }
        let size = entry.size();
        if size > options.max_control_member {
            return Err(DebError::ControlMemberTooLarge {
                member: name,
                size,
                limit: options.max_control_member,
            });
        }
        let mut buf = Vec::new();
        let n = entry.read_to_end(&mut buf).map_err(corrupt)?;
        if u64::try_from(n).unwrap_or(u64::MAX) != size {
            return Err(DebError::LyingSize {
                path: name,
                declared: size,
                actual: u64::try_from(n).unwrap_or(u64::MAX),
            });
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        if name == "control" {
            control = Some(text);
        } else if name == "conffiles" {
            conffiles = parse_conffiles(&text);
        } else if name == "md5sums" {
            md5sums = Some(text);
        } else {
            scripts.insert(name, text);
        }
    }
    let control = control.ok_or_else(|| DebError::Control("no `control` member".to_owned()))?;
    let (name, version, architecture) = {
        let paragraphs = deb822::parse(&control).map_err(|e| DebError::Control(e.to_string()))?;
        let p = paragraphs
            .first()
            .ok_or_else(|| DebError::Control("empty".to_owned()))?;
        let get = |f: &str| {
            p.get(f)
                .map(str::to_owned)
                .ok_or_else(|| DebError::Control(format!("no `{f}` field")))
        };
        (
            get("Package")?,
            get("Version")?,
            get("Architecture").unwrap_or_default(),
        )
    };
    Ok(PackageReport {
        name,
        version,
        architecture,
        control,
        scripts,
        conffiles,
        md5sums,
        files: 0,
        bytes: 0,
    })
}

/// The `conffiles` member: one absolute path per line; dpkg ≥ 1.20 allows a `remove-on-upgrade`
/// flag before the path. Relative or empty lines are ignored (dpkg rejects such packages).
/// Public for the fuzz target; [`read_package_control`] and the unpacker use it.
#[must_use]
pub fn parse_conffiles(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line
                .strip_prefix("remove-on-upgrade ")
                .unwrap_or(line)
                .trim();
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

/// Reads only the control member of the `.deb` at `path` (no data is unpacked): its
/// `control` text, maintainer scripts and conffiles. `files` and `bytes` are 0.
///
/// # Errors
/// [`DebError`] for an unreadable or malformed package (wrapped with the path).
pub fn read_package_control(
    path: &Path,
    options: &UnpackOptions,
) -> Result<PackageReport, DebError> {
    let wrap = |source| DebError::InFile {
        deb: path.to_owned(),
        source: Box::new(source),
    };
    let mut file = File::open(path).map_err(|e| wrap(io_at(path)(e)))?;
    let len = file.metadata().map_err(|e| wrap(io_at(path)(e)))?.len();
    let members = read_ar_members(&mut file, len).map_err(wrap)?;
    let control = members
        .iter()
        .find(|m| m.name.starts_with("control.tar"))
        .ok_or(DebError::MissingMember("control.tar"))
        .map_err(wrap)?;
    let compression = compression_of(&control.name, "control.tar").map_err(wrap)?;
    read_control(&mut file, control, &compression, options).map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a seed input for fuzz target `target` (`fuzz/corpus/<target>/`, ignored by
    /// git): the fuzz crate's corpora come from these unit-test inputs.
    fn write_seed(target: &str, name: &str, bytes: &[u8]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn conffiles_keep_absolute_paths_only() {
        let text =
            "/etc/a.conf\nremove-on-upgrade /etc/old.conf\n\nrelative/path\n  /etc/b.conf  \n";
        write_seed("conffiles", "mixed", text.as_bytes());
        assert_eq!(
            parse_conffiles(text),
            ["/etc/a.conf", "/etc/old.conf", "/etc/b.conf"]
        );
    }

    #[test]
    fn normalize() {
        let n = |p: &str, m: bool| normalize_path(p.as_bytes(), m, false);
        assert_eq!(
            n("./usr/bin/x", true).unwrap().as_deref(),
            Some("usr/bin/x")
        );
        assert_eq!(n("./bin/sh", true).unwrap().as_deref(), Some("usr/bin/sh"));
        assert_eq!(n("./bin/sh", false).unwrap().as_deref(), Some("bin/sh"));
        assert_eq!(n("./lib64/", true).unwrap().as_deref(), Some("usr/lib64"));
        assert_eq!(
            n("./libexec/x", true).unwrap().as_deref(),
            Some("libexec/x")
        );
        assert_eq!(n("./", true).unwrap(), None);
        assert_eq!(n("/", true).unwrap(), None);
        assert!(matches!(
            n("../x", true),
            Err(DebError::PathTraversal { .. })
        ));
        assert!(matches!(
            n("./a/../../x", true),
            Err(DebError::PathTraversal { .. })
        ));
        assert!(matches!(
            n("/etc/passwd", true),
            Err(DebError::AbsolutePath { .. })
        ));
        assert!(matches!(
            normalize_path(b"a\xff", true, false),
            Err(DebError::InvalidPath { .. })
        ));
        assert_eq!(
            normalize_path(b"./bin", true, true).unwrap().as_deref(),
            Some("bin"),
            "alias-root symlink stays"
        );
    }

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            out.extend_from_slice(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    "100644",
                    data.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn ar_members() {
        let a = ar(&[("debian-binary", b"2.0\n"), ("x", b"abc")]);
        let m = read_ar_members(&mut std::io::Cursor::new(&a), a.len() as u64).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].name, "x");
        assert_eq!(m[1].size, 3);
        assert_eq!(&a[m[1].offset as usize..][..3], b"abc");
    }

    #[test]
    fn ar_errors() {
        let parse = |a: &[u8]| read_ar_members(&mut std::io::Cursor::new(a), a.len() as u64);
        assert!(matches!(parse(b"garbage!"), Err(DebError::NotAr)));
        let mut a = ar(&[("debian-binary", b"2.0\n")]);
        a.truncate(a.len() - 2);
        assert!(matches!(
            parse(&a),
            Err(DebError::ArMemberTooLarge {
                size: 4,
                remaining: 2,
                ..
            })
        ));
        let mut a = ar(&[("x", b"ab")]);
        a[8 + 58] = b'X';
        assert!(matches!(
            parse(&a),
            Err(DebError::ArHeader { offset: 8, .. })
        ));
        let mut a = ar(&[("x", b"ab")]);
        a[8 + 48] = b'-';
        assert!(matches!(parse(&a), Err(DebError::ArHeader { .. })));
        let many: Vec<(&str, &[u8])> = (0..17).map(|_| ("x", &b"a"[..])).collect();
        assert!(matches!(parse(&ar(&many)), Err(DebError::ArHeader { .. })));
    }

    #[test]
    fn capped_reader() {
        let mut r = CappedReader {
            inner: &b"abcdef"[..],
            remaining: 3,
        };
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert!(is_too_large(&err));
    }
}
