//! ext4 root file system from a staging directory, without root or mounts.
//!
//! `mkfs.ext4 -d <staging>` (e2fsprogs, rootless) copies the tree; then one
//! `debugfs -w -f <script>` run sets owners, modes and timestamps from the [`Ext4Metadata`]
//! list, creates device nodes and hard links. Both run with
//! `E2FSPROGS_FAKE_TIME`/`SOURCE_DATE_EPOCH` set, the UUID and directory hash seed derived
//! from the seed, a generated `mke2fs.conf` (so the host's defaults do not leak in), and
//! every inode's atime/mtime/ctime/crtime rewritten: two runs give identical bytes.
//!
//! Journal: a 4 MiB journal (the mkfs minimum, 1024 blocks). The appliance mounts its root
//! read-write and is powered off by hypervisors; without a journal an unclean stop leaves
//! an fs that needs a full fsck. 4 MiB is enough for the small metadata traffic of an
//! appliance and costs nothing once compressed (qcow2/VMDK skip zeros).
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::gpt::Guid;
use crate::layout::{ALIGNMENT_BYTES, Seed, round_up};

/// Block size written.
pub const BLOCK_SIZE: u64 = 4096;
/// Inode size written.
pub const INODE_SIZE: u64 = 256;
/// Journal size in MiB.
pub const JOURNAL_MIB: u64 = 4;

/// What a metadata entry describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ext4NodeKind {
    /// A regular file present in the staging directory.
    File,
    /// A directory present in the staging directory.
    Dir,
    /// A symlink present in the staging directory.
    Symlink,
    /// A character device to create (not in the staging directory).
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device to create.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A FIFO to create.
    Fifo,
    /// A hard link to another path of the file system (absolute).
    HardLink {
        /// The existing path.
        target: String,
    },
}

/// Ownership and mode of one path of the root file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Metadata {
    /// Absolute path inside the file system (`/etc/shadow`).
    pub path: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (`0o4755`).
    pub permissions: u32,
    /// Modification time; `None` means the config's timestamp.
    pub mtime: Option<u64>,
    /// What it is.
    pub kind: Ext4NodeKind,
}

/// How big the file system should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext4Size {
    /// The smallest size that fits, plus this much free space.
    Auto {
        /// Extra free bytes.
        free_space_bytes: u64,
    },
    /// Exactly this many bytes (rounded up to 1 MiB).
    Exact(u64),
}

/// Input of [`write_ext4`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Config {
    /// The unpacked, customised root tree.
    pub staging_dir: PathBuf,
    /// Owners, modes, device nodes and hard links.
    pub metadata: Vec<Ext4Metadata>,
    /// Size policy.
    pub size: Ext4Size,
    /// Source of the UUID and hash seed.
    pub seed: Seed,
    /// Volume label (at most 16 bytes).
    pub label: String,
    /// `SOURCE_DATE_EPOCH`: every timestamp.
    pub timestamp: u64,
}

/// What [`write_ext4`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Report {
    /// File-system UUID (`root=UUID=`).
    pub uuid: Guid,
    /// Size of the image in bytes.
    pub size_bytes: u64,
}

/// Errors from building the root file system.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// A needed e2fsprogs tool is not installed.
    #[error("`{tool}` not found; install the Debian package `e2fsprogs`")]
    ToolMissing {
        /// `mkfs.ext4` or `debugfs`.
        tool: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The requested size cannot hold the tree.
    #[error("root file system needs about {needed} bytes but {given} were requested")]
    TooSmall {
        /// Estimated bytes needed.
        needed: u64,
        /// Bytes requested.
        given: u64,
    },
    /// The host file system holding the image is full: not the image's size, the disk the
    /// image is written to.
    #[error(
        "no space left on the device holding `{path}`: the image needs {needed} more bytes, {available} are available"
    )]
    NoSpace {
        /// The image being written.
        path: PathBuf,
        /// Bytes of the image not yet allocated on the host.
        needed: u64,
        /// Bytes available to the build on that file system.
        available: u64,
    },
    /// A tool failed.
    #[error("`{tool}` failed on `{path}`: {stderr}")]
    ToolFailed {
        /// The tool.
        tool: &'static str,
        /// The image.
        path: PathBuf,
        /// Its error output (trimmed).
        stderr: String,
    },
    /// A path cannot be expressed in a debugfs script.
    #[error("unsupported path `{path}` (quotes, newlines or not absolute)")]
    BadPath {
        /// The path.
        path: String,
    },
    /// Reading the staging directory or writing the image failed.
    #[error("I/O on `{path}`")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The file-system UUID derived from `seed` (known before the fs is built, so the kernel
/// command line can name it).
#[must_use]
pub fn root_fs_uuid(seed: &Seed) -> Guid {
    seed.guid("ext4:uuid")
}

struct TreeStats {
    /// Every path (absolute inside the fs) found in the staging directory, sorted.
    paths: Vec<String>,
    data_bytes: u64,
}

fn scan(staging: &Path) -> Result<TreeStats, Ext4Error> {
    let mut stats = TreeStats {
        paths: Vec::new(),
        data_bytes: 0,
    };
    let mut stack = vec![(staging.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let io = |source| Ext4Error::Io {
            path: dir.clone(),
            source,
        };
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        names.sort_by_key(std::fs::DirEntry::file_name);
        stats.data_bytes += BLOCK_SIZE;
        for entry in names {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{prefix}/{name}");
            let meta = entry
                .path()
                .symlink_metadata()
                .map_err(|source| Ext4Error::Io {
                    path: entry.path(),
                    source,
                })?;
            if meta.is_dir() {
                stack.push((entry.path(), path.clone()));
            } else if meta.is_file() {
                stats.data_bytes += round_up(meta.len(), BLOCK_SIZE).unwrap_or(u64::MAX);
            }
            stats.paths.push(path);
        }
    }
    stats.paths.sort();
    Ok(stats)
}

fn quote(path: &str) -> Result<String, Ext4Error> {
    if !path.starts_with('/') || path.contains(['"', '\n', '\r', '\0']) {
        return Err(Ext4Error::BadPath {
            path: path.to_owned(),
        });
    }
    Ok(format!("\"{path}\""))
}

/// Builds the debugfs script (pure): timestamps for every path, then metadata entries.
///
/// # Errors
/// [`Ext4Error::BadPath`].
pub fn debugfs_script(
    tree_paths: &[String],
    metadata: &[Ext4Metadata],
    timestamp: u64,
) -> Result<String, Ext4Error> {
    let mut s = String::new();
    // debugfs reads a bare number as a `YYYYMMDD[HHMM[SS]]` date when its digits form
    // one (1733123456 would be year 1733) and only `@N` as seconds since the epoch.
    let stamp = |s: &mut String, q: &str, t: u64| {
        for field in ["atime", "mtime", "ctime", "crtime"] {
            let value = if field == "mtime" { t } else { timestamp };
            let _ = writeln!(s, "sif {q} {field} @{value}");
        }
    };
    // Create nodes that are not in the staging tree first.
    let mut links: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
    for m in metadata {
        let q = quote(&m.path)?;
        let (parent, name) = m.path.rsplit_once('/').unwrap_or(("", &m.path));
        let parent = if parent.is_empty() { "/" } else { parent };
        match &m.kind {
            Ext4NodeKind::CharDevice { major, minor } => {
                let _ = writeln!(
                    s,
                    "cd {}\nmknod \"{name}\" c {major} {minor}",
                    quote(parent)?
                );
            }
            Ext4NodeKind::BlockDevice { major, minor } => {
                let _ = writeln!(
                    s,
                    "cd {}\nmknod \"{name}\" b {major} {minor}",
                    quote(parent)?
                );
            }
            Ext4NodeKind::Fifo => {
                let _ = writeln!(s, "cd {}\nmknod \"{name}\" p", quote(parent)?);
            }
            Ext4NodeKind::HardLink { target } => {
                let _ = writeln!(s, "ln {} {q}", quote(target)?);
                *links.entry(target.as_str()).or_insert(1) += 1;
            }
            _ => {}
        }
    }
    let _ = writeln!(s, "cd /");
    for (target, count) in &links {
        let _ = writeln!(s, "sif {} links_count {count}", quote(target)?);
    }
    stamp(&mut s, "/", timestamp);
    for p in tree_paths {
        stamp(&mut s, &quote(p)?, timestamp);
    }
    for m in metadata {
        if matches!(m.kind, Ext4NodeKind::HardLink { .. }) {
            continue;
        }
        let q = quote(&m.path)?;
        let type_bits = match m.kind {
            Ext4NodeKind::File => 0o100_000,
            Ext4NodeKind::Dir => 0o040_000,
            Ext4NodeKind::Symlink => 0o120_000,
            Ext4NodeKind::CharDevice { .. } => 0o020_000,
            Ext4NodeKind::BlockDevice { .. } => 0o060_000,
            Ext4NodeKind::Fifo => 0o010_000,
            Ext4NodeKind::HardLink { .. } => unreachable!("skipped above"),
        };
        let _ = writeln!(s, "sif {q} uid {}", m.uid);
        let _ = writeln!(s, "sif {q} gid {}", m.gid);
        let _ = writeln!(
            s,
            "sif {q} mode 0{:o}",
            type_bits | (m.permissions & 0o7777)
        );
        stamp(&mut s, &q, m.mtime.unwrap_or(timestamp));
    }
    Ok(s)
}

fn mke2fs_conf() -> &'static str {
    // Fixed feature set, independent of the host's /etc/mke2fs.conf. All supported by
    // Linux 6.1 (bookworm) and later.
    "[defaults]\n\tblocksize = 4096\n\tinode_size = 256\n\n[fs_types]\n\text4 = {\n\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize,ext_attr,dir_index,filetype,sparse_super,large_file,^resize_inode\n\t}\n\tfloppy = {\n\t}\n\tsmall = {\n\t}\n\tdefault = {\n\t}\n\tbig = {\n\t}\n\thuge = {\n\t}\n"
}

fn run(tool: &'static str, cmd: &mut Command, image: &Path) -> Result<(), Ext4Error> {
    let out = cmd
        .output()
        .map_err(|source| Ext4Error::ToolMissing { tool, source })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // debugfs reports script errors on stderr but exits 0.
    let failed = !out.status.success()
        || (tool == "debugfs"
            && stderr
                .lines()
                .any(|l| !l.starts_with("debugfs ") && !l.trim().is_empty()));
    if failed {
        return Err(Ext4Error::ToolFailed {
            tool,
            path: image.to_owned(),
            stderr: stderr.trim().chars().take(2000).collect(),
        });
    }
    Ok(())
}

fn mkfs(config: &Ext4Config, out: &Path, size: u64, inodes: Option<u64>) -> Result<(), Ext4Error> {
    let io = |source| Ext4Error::Io {
        path: out.to_owned(),
        source,
    };
    let file = std::fs::File::create(out).map_err(io)?;
    file.set_len(size).map_err(io)?;
    drop(file);
    let conf = out.with_extension("mke2fs.conf");
    std::fs::write(&conf, mke2fs_conf()).map_err(|source| Ext4Error::Io {
        path: conf.clone(),
        source,
    })?;
    let uuid = root_fs_uuid(&config.seed);
    let hash_seed = config.seed.guid("ext4:hash-seed");
    let mut cmd = Command::new("mkfs.ext4");
    cmd.env("LC_ALL", "C")
        .env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", config.timestamp.to_string())
        .env("SOURCE_DATE_EPOCH", config.timestamp.to_string())
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0",
        ])
        .args(["-J", &format!("size={JOURNAL_MIB}")])
        .args(["-U", &uuid.to_string(), "-L", &config.label])
        .arg("-E")
        .arg(format!(
            "hash_seed={hash_seed},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard"
        ));
    if let Some(n) = inodes {
        cmd.args(["-N", &n.to_string()]);
    }
    cmd.arg("-d").arg(&config.staging_dir).arg(out);
    let result = run("mkfs.ext4", &mut cmd, out);
    let _ = std::fs::remove_file(&conf);
    result
}

/// Whether the host file system holding `out` cannot take the rest of the `size`-byte
/// image: then a failed write inside mkfs/debugfs ("No space left on device") is the
/// host's disk being full, not the image being too small. Returns the error to report.
fn host_out_of_space(out: &Path, size: u64) -> Option<Ext4Error> {
    use std::os::unix::fs::MetadataExt;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stat = rustix::fs::statvfs(dir).ok()?;
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    let allocated = std::fs::metadata(out).map_or(0, |m| m.blocks().saturating_mul(512));
    let needed = size.saturating_sub(allocated);
    (available < needed).then(|| Ext4Error::NoSpace {
        path: out.to_owned(),
        needed,
        available,
    })
}

/// Writes the root file system image to `out` (created or truncated).
///
/// # Errors
/// [`Ext4Error`]: missing tools, a size too small, tool failures, IO.
pub fn write_ext4(config: &Ext4Config, out: &Path) -> Result<Ext4Report, Ext4Error> {
    let stats = scan(&config.staging_dir)?;
    let extra_nodes = config.metadata.len() as u64;
    let inodes = (stats.paths.len() as u64 + extra_nodes) * 5 / 4 + 64;
    let journal = JOURNAL_MIB * ALIGNMENT_BYTES;
    let estimate = stats.data_bytes + inodes * INODE_SIZE + journal;
    let estimate = estimate + estimate / 10 + 2 * ALIGNMENT_BYTES;
    let mut size = match config.size {
        Ext4Size::Auto { free_space_bytes } => estimate.saturating_add(free_space_bytes),
        Ext4Size::Exact(bytes) => bytes,
    };
    size = round_up(size, ALIGNMENT_BYTES).unwrap_or(u64::MAX);
    let mut attempts = 0;
    loop {
        let inode_count = match config.size {
            Ext4Size::Auto { .. } => Some(inodes),
            Ext4Size::Exact(_) => None,
        };
        match mkfs(config, out, size, inode_count) {
            Ok(()) => break,
            Err(Ext4Error::ToolFailed { .. } | Ext4Error::Io { .. })
                if let Some(full) = host_out_of_space(out, size) =>
            {
                return Err(full);
            }
            Err(Ext4Error::ToolFailed { stderr, .. })
                if stderr.contains("No space")
                    || stderr.contains("Could not allocate")
                    || stderr.contains("too small")
                    || stderr.contains("too big for filesystem")
                    || stderr.contains("Not enough space") =>
            {
                match config.size {
                    Ext4Size::Exact(given) => {
                        return Err(Ext4Error::TooSmall {
                            needed: estimate.max(given + 1),
                            given,
                        });
                    }
                    Ext4Size::Auto { .. } if attempts < 6 => {
                        attempts += 1;
                        size = round_up(size + size / 4, ALIGNMENT_BYTES).unwrap_or(u64::MAX);
                    }
                    Ext4Size::Auto { .. } => {
                        return Err(Ext4Error::TooSmall {
                            needed: size,
                            given: size,
                        });
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    let script = debugfs_script(&stats.paths, &config.metadata, config.timestamp)?;
    let script_path = out.with_extension("debugfs");
    std::fs::write(&script_path, script).map_err(|source| Ext4Error::Io {
        path: script_path.clone(),
        source,
    })?;
    let result = run(
        "debugfs",
        Command::new("debugfs")
            .env("LC_ALL", "C")
            .env("E2FSPROGS_FAKE_TIME", config.timestamp.to_string())
            .env("SOURCE_DATE_EPOCH", config.timestamp.to_string())
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(out),
        out,
    );
    let _ = std::fs::remove_file(&script_path);
    if result.is_err()
        && let Some(full) = host_out_of_space(out, size)
    {
        return Err(full);
    }
    result?;
    Ok(Ext4Report {
        uuid: root_fs_uuid(&config.seed),
        size_bytes: size,
    })
}

#[cfg(test)]
#[allow(clippy::print_stderr, reason = "skipped tests say so on stderr")]
mod tests {
    use super::*;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("-V").output().is_ok()
    }

    fn staging() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "jeos\n").unwrap();
        std::fs::write(dir.path().join("etc/shadow"), "root:*:1::::::\n").unwrap();
        std::fs::write(dir.path().join("usr/bin/tool"), vec![0x7f; 300_000]).unwrap();
        std::os::unix::fs::symlink("tool", dir.path().join("usr/bin/link")).unwrap();
        dir
    }

    fn config(dir: &Path, size: Ext4Size) -> Ext4Config {
        Ext4Config {
            staging_dir: dir.to_owned(),
            metadata: vec![
                Ext4Metadata {
                    path: "/etc/shadow".into(),
                    uid: 0,
                    gid: 42,
                    permissions: 0o640,
                    mtime: None,
                    kind: Ext4NodeKind::File,
                },
                Ext4Metadata {
                    path: "/usr/bin/tool".into(),
                    uid: 0,
                    gid: 0,
                    permissions: 0o4755,
                    // Its digits form a date (2012-12-31 23h): debugfs must still read it
                    // as seconds.
                    mtime: Some(2_012_123_123),
                    kind: Ext4NodeKind::File,
                },
                Ext4Metadata {
                    path: "/dev/console".into(),
                    uid: 0,
                    gid: 5,
                    permissions: 0o600,
                    mtime: None,
                    kind: Ext4NodeKind::CharDevice { major: 5, minor: 1 },
                },
                Ext4Metadata {
                    path: "/usr/bin/tool2".into(),
                    uid: 0,
                    gid: 0,
                    permissions: 0,
                    mtime: None,
                    kind: Ext4NodeKind::HardLink {
                        target: "/usr/bin/tool".into(),
                    },
                },
            ],
            size,
            seed: Seed::from_bytes(b"ext4"),
            label: "root".into(),
            timestamp: 1_700_000_000,
        }
    }

    #[test]
    fn script_quotes_and_rejects_bad_paths() {
        let s = debugfs_script(&["/a b".into()], &[], 5).unwrap();
        assert!(s.contains("sif \"/a b\" mtime @5"), "{s}");
        assert!(matches!(
            debugfs_script(&["/a\"b".into()], &[], 5),
            Err(Ext4Error::BadPath { .. })
        ));
        assert!(matches!(
            debugfs_script(&["relative".into()], &[], 5),
            Err(Ext4Error::BadPath { .. })
        ));
    }

    #[test]
    fn builds_checks_and_reproduces() {
        if !have("mkfs.ext4") || !have("e2fsck") {
            crate::skip_test("mkfs.ext4/e2fsck (e2fsprogs) not installed");
            return;
        }
        let dir = staging();
        let work = tempfile::tempdir().unwrap();
        let a = work.path().join("a.img");
        let b = work.path().join("b.img");
        let cfg = config(
            dir.path(),
            Ext4Size::Auto {
                free_space_bytes: 0,
            },
        );
        let report = write_ext4(&cfg, &a).unwrap();
        // Touch the staging tree: host timestamps must not leak into the image.
        std::fs::write(dir.path().join("etc/hostname"), "jeos\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        write_ext4(&cfg, &b).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "reproducible"
        );
        assert_eq!(std::fs::metadata(&a).unwrap().len(), report.size_bytes);

        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&a)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );

        let stat = |p: &str| {
            let out = Command::new("debugfs")
                .env("LC_ALL", "C")
                .arg("-R")
                .arg(format!("stat {p}"))
                .arg(&a)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let shadow = stat("/etc/shadow");
        assert!(shadow.contains("Mode:  0640"), "{shadow}");
        assert!(shadow.contains("Group:    42"), "{shadow}");
        let tool = stat("/usr/bin/tool");
        assert!(tool.contains("Mode:  04755"), "{tool}");
        assert!(tool.contains("Links: 2"), "{tool}");
        assert!(tool.contains("mtime: 0x77ee8ff3"), "{tool}");
        let console = stat("/dev/console");
        assert!(console.contains("Type: character special"), "{console}");
        assert!(
            console.contains("major: 5, minor: 1")
                || console.contains("Device major/minor number: 05:01"),
            "{console}"
        );
        let hostname = stat("/etc/hostname");
        assert!(hostname.contains("ctime: 0x6553f100"), "{hostname}");
    }

    #[test]
    fn explicit_size_too_small_is_reported() {
        if !have("mkfs.ext4") {
            crate::skip_test("mkfs.ext4 (e2fsprogs) not installed");
            return;
        }
        let dir = staging();
        std::fs::write(dir.path().join("big"), vec![1u8; 9 * 1024 * 1024]).unwrap();
        let work = tempfile::tempdir().unwrap();
        let err = write_ext4(
            &config(dir.path(), Ext4Size::Exact(8 * 1024 * 1024)),
            &work.path().join("x.img"),
        )
        .unwrap_err();
        assert!(
            matches!(err, Ext4Error::TooSmall { given, .. } if given == 8 * 1024 * 1024),
            "{err:?}"
        );
    }

    /// A tmpfs of `bytes` on a fresh directory (needs root), unmounted on drop.
    struct SmallFs {
        dir: tempfile::TempDir,
    }

    impl SmallFs {
        fn mount(bytes: u64) -> Option<Self> {
            let dir = tempfile::tempdir().ok()?;
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "jeos-full"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            mounted.then_some(Self { dir })
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }

    /// Issue #8: a full host disk (the output directory on a full file system) was reported
    /// as "root file system needs about N bytes but N were requested".
    #[test]
    fn issue_8_a_full_host_disk_is_no_space_not_too_small() {
        if !have("mkfs.ext4") {
            crate::skip_test("mkfs.ext4 (e2fsprogs) not installed");
            return;
        }
        let Some(full) = SmallFs::mount(2 * 1024 * 1024) else {
            crate::skip_test("cannot mount a small tmpfs (needs root)");
            return;
        };
        let dir = staging();
        std::fs::write(dir.path().join("big"), vec![7u8; 3 * 1024 * 1024]).unwrap();
        let out = full.dir.path().join("root.img");
        for size in [
            Ext4Size::Auto {
                free_space_bytes: 0,
            },
            Ext4Size::Exact(16 * 1024 * 1024),
        ] {
            let err = write_ext4(&config(dir.path(), size), &out).unwrap_err();
            assert!(matches!(err, Ext4Error::NoSpace { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .starts_with("no space left on the device holding"),
                "{err}"
            );
        }
    }
}
