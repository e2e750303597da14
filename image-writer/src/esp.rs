//! Reading the boot files back from a disk image: the kernel, the initramfs and the command
//! line that the systemd-boot entry on the EFI system partition names.
//!
//! The image is untrusted input: the GPT is validated by [`crate::gpt::read_gpt`], the FAT
//! (12, 16 or 32) is parsed read-only with bounds checks on every field, cluster chains are
//! checked for range and loops, and every allocation is capped. Lookups are
//! case-insensitive and match the VFAT long name or the 8.3 name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::gpt::{ESP_TYPE, GptError, read_gpt};
use crate::layout::SECTOR_SIZE;

/// Largest kernel or initramfs read (each).
pub const MAX_BOOT_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// Largest loader entry read.
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024;
/// Largest FAT (one copy) read into memory.
const MAX_FAT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest directory read (bytes of directory entries).
const MAX_DIR_BYTES: u64 = 4 * 1024 * 1024;
/// Deepest path followed.
const MAX_PATH_DEPTH: usize = 16;
/// Where systemd-boot looks for entries.
pub const LOADER_ENTRIES_DIR: &str = "/loader/entries";

/// What the boot loader entry boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    /// The kernel (`linux` line).
    pub kernel: Vec<u8>,
    /// The initramfs (`initrd` lines, concatenated in order; empty when there is none).
    pub initramfs: Vec<u8>,
    /// The kernel command line (`options` lines joined with spaces).
    pub cmdline: String,
    /// The entry file used, e.g. `/loader/entries/jeos.conf`.
    pub entry: String,
}

/// Errors of [`read_boot_files`].
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    /// The partition table is missing or invalid.
    #[error("cannot read the partition table of `{}`", .path.display())]
    Gpt {
        /// The image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: GptError,
    },
    /// No partition has the EFI system partition type.
    #[error("`{}` has no EFI system partition", .path.display())]
    NoEsp {
        /// The image.
        path: PathBuf,
    },
    /// Reading the image failed (including reads past its end).
    #[error("cannot read {len} bytes at offset {offset} of `{}`", .path.display())]
    Io {
        /// The image.
        path: PathBuf,
        /// Byte offset in the image.
        offset: u64,
        /// Bytes wanted.
        len: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The FAT boot sector is not valid.
    #[error("invalid FAT boot sector at offset {offset}: {what}")]
    BadBootSector {
        /// Byte offset of the boot sector in the image.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A cluster chain leaves the volume, ends early or loops.
    #[error("broken cluster chain of `{path}` at cluster {cluster}: {what}")]
    BadChain {
        /// The file or directory.
        path: String,
        /// The offending cluster number.
        cluster: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// A file or directory is larger than this reader accepts.
    #[error("`{path}` is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A path does not exist on the partition.
    #[error("`{path}` not found on the EFI system partition")]
    NotFound {
        /// The path.
        path: String,
    },
    /// A path component is a file where a directory is needed, or the reverse.
    #[error("`{path}` is not a {expected}")]
    WrongKind {
        /// The path.
        path: String,
        /// `file` or `directory`.
        expected: &'static str,
    },
    /// `/loader/entries` holds no `.conf` file.
    #[error("no boot loader entry (`{LOADER_ENTRIES_DIR}/*.conf`) on the EFI system partition")]
    NoEntry,
    /// The entry is not usable.
    #[error("boot loader entry `{entry}` is invalid: {what}")]
    BadEntry {
        /// The entry path.
        entry: String,
        /// What is wrong.
        what: String,
    },
}

/// Reads the kernel, initramfs and command line named by the first (in sorted order)
/// systemd-boot entry on the image's EFI system partition.
///
/// # Errors
/// [`EspError`] describing the first problem found.
pub fn read_boot_files(raw: &Path) -> Result<BootFiles, EspError> {
    let mut volume = open_esp(raw)?;
    read_entry(&mut volume)
}

/// Reads the file at `path` (absolute, `/` separators) from the image's EFI system
/// partition, at most `max_bytes`.
///
/// # Errors
/// [`EspError`]: no GPT or ESP, the file is absent or larger than `max_bytes`, a damaged FAT.
pub fn read_esp_file(raw: &Path, path: &str, max_bytes: u64) -> Result<Vec<u8>, EspError> {
    let mut volume = open_esp(raw)?;
    volume.read_file(path, max_bytes)
}

fn open_esp(raw: &Path) -> Result<FatVolume<File>, EspError> {
    let table = read_gpt(raw).map_err(|source| EspError::Gpt {
        path: raw.to_owned(),
        source,
    })?;
    let esp = table
        .entries
        .iter()
        .find(|e| e.type_guid == ESP_TYPE)
        .ok_or_else(|| EspError::NoEsp {
            path: raw.to_owned(),
        })?;
    let offset = esp.first_lba.0.saturating_mul(SECTOR_SIZE);
    let len = (esp.last_lba.0.saturating_sub(esp.first_lba.0) + 1).saturating_mul(SECTOR_SIZE);
    let file = File::open(raw).map_err(|source| EspError::Io {
        path: raw.to_owned(),
        offset: 0,
        len: 0,
        source,
    })?;
    FatVolume::open(file, raw, offset, len)
}

/// Like [`read_boot_files`], for an EFI system partition of `len` bytes read through
/// `reader` (a partition of an image opened by [`crate::image::open_image`]); `name` is
/// used in errors.
///
/// # Errors
/// [`EspError`] describing the first problem found.
pub fn read_boot_files_from<R: Read + Seek>(
    reader: R,
    name: &Path,
    len: u64,
) -> Result<BootFiles, EspError> {
    let mut volume = FatVolume::open(reader, name, 0, len)?;
    read_entry(&mut volume)
}

/// Like [`read_esp_file`], for an EFI system partition of `len` bytes read through
/// `reader` (a partition of an image opened by [`crate::image::open_image`]).
///
/// # Errors
/// [`EspError`]: the file is absent or larger than `max_bytes`, a damaged FAT.
pub fn read_esp_file_from<R: Read + Seek>(
    reader: R,
    name: &Path,
    len: u64,
    path: &str,
    max_bytes: u64,
) -> Result<Vec<u8>, EspError> {
    let mut volume = FatVolume::open(reader, name, 0, len)?;
    volume.read_file(path, max_bytes)
}

fn read_entry<R: Read + Seek>(volume: &mut FatVolume<R>) -> Result<BootFiles, EspError> {
    let Found::Dir(dir) = volume.lookup(LOADER_ENTRIES_DIR, Kind::Dir)? else {
        return Err(EspError::WrongKind {
            path: LOADER_ENTRIES_DIR.into(),
            expected: "directory",
        });
    };
    let mut names: Vec<String> = volume
        .list(&dir, LOADER_ENTRIES_DIR)?
        .into_iter()
        .filter(|e| !e.is_dir && e.name.to_ascii_lowercase().ends_with(".conf"))
        .map(|e| e.name)
        .collect();
    names.sort();
    let name = names.first().ok_or(EspError::NoEntry)?;
    let entry = format!("{LOADER_ENTRIES_DIR}/{name}");
    let text = volume.read_file(&entry, MAX_ENTRY_BYTES)?;
    let text = String::from_utf8(text).map_err(|_| EspError::BadEntry {
        entry: entry.clone(),
        what: "not UTF-8".into(),
    })?;
    let parsed = parse_entry(&text).map_err(|what| EspError::BadEntry {
        entry: entry.clone(),
        what,
    })?;
    let kernel = volume.read_file(&parsed.linux, MAX_BOOT_FILE_BYTES)?;
    let mut initramfs = Vec::new();
    for initrd in &parsed.initrds {
        let bytes = volume.read_file(initrd, MAX_BOOT_FILE_BYTES)?;
        if initramfs.len() as u64 + bytes.len() as u64 > MAX_BOOT_FILE_BYTES {
            return Err(EspError::TooLarge {
                path: initrd.clone(),
                size: initramfs.len() as u64 + bytes.len() as u64,
                limit: MAX_BOOT_FILE_BYTES,
            });
        }
        initramfs.extend_from_slice(&bytes);
    }
    Ok(BootFiles {
        kernel,
        initramfs,
        cmdline: parsed.options,
        entry,
    })
}

/// The fields of a systemd-boot entry this reader uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderEntry {
    /// `linux` path (with `/` separators).
    pub linux: String,
    /// `initrd` paths, in order.
    pub initrds: Vec<String>,
    /// `options` lines joined with single spaces.
    pub options: String,
}

/// Parses a systemd-boot entry (`key value` lines, `#` comments) (pure).
///
/// # Errors
/// Why the entry is unusable: no `linux` line, or two of them.
pub fn parse_entry(text: &str) -> Result<LoaderEntry, String> {
    let mut linux = None;
    let mut initrds = Vec::new();
    let mut options: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(|c: char| c.is_ascii_whitespace())
            .map_or((line, ""), |(k, v)| (k, v.trim()));
        let path = || value.replace('\\', "/");
        match key {
            "linux" => {
                if linux.is_some() {
                    return Err("more than one `linux` line".into());
                }
                if value.is_empty() {
                    return Err("empty `linux` line".into());
                }
                linux = Some(path());
            }
            "initrd" if !value.is_empty() => initrds.push(path()),
            "options" if !value.is_empty() => options.push(value),
            _ => {}
        }
    }
    Ok(LoaderEntry {
        linux: linux.ok_or_else(|| "no `linux` line".to_owned())?,
        initrds,
        options: options.join(" "),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FatKind {
    Fat12,
    Fat16,
    Fat32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

/// Where a directory's entries are.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DirLoc {
    /// The FAT12/16 root directory: fixed sectors (byte offset in the volume, length).
    FixedRoot { offset: u64, len: u64 },
    /// A cluster chain starting here.
    Chain(u32),
}

/// What [`FatVolume::lookup`] found.
enum Found {
    Dir(DirLoc),
    /// A file: its first cluster (0 when empty) and size.
    File {
        first_cluster: u32,
        size: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DirEntry {
    name: String,
    short: String,
    is_dir: bool,
    first_cluster: u32,
    size: u32,
}

/// A FAT volume inside an image, read on demand.
struct FatVolume<R> {
    reader: R,
    path: PathBuf,
    /// Byte offset of the volume in the image.
    base: u64,
    kind: FatKind,
    cluster_bytes: u64,
    /// Byte offset of cluster 2 in the volume.
    data_offset: u64,
    /// Valid clusters are `2..cluster_count + 2`.
    cluster_count: u32,
    fat: Vec<u8>,
    root: DirLoc,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<R: Read + Seek> FatVolume<R> {
    fn read_at(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, EspError> {
        let abs = self.base.saturating_add(offset);
        let io = |source| EspError::Io {
            path: self.path.clone(),
            offset: abs,
            len,
            source,
        };
        let size = usize::try_from(len)
            .map_err(|_| io(std::io::Error::other("length does not fit in memory")))?;
        self.reader.seek(SeekFrom::Start(abs)).map_err(io)?;
        let mut buf = vec![0u8; size];
        self.reader.read_exact(&mut buf).map_err(io)?;
        Ok(buf)
    }

    /// Parses and checks the boot sector, then loads the first FAT.
    fn open(reader: R, path: &Path, base: u64, volume_len: u64) -> Result<Self, EspError> {
        let mut volume = Self {
            reader,
            path: path.to_owned(),
            base,
            kind: FatKind::Fat16,
            cluster_bytes: 0,
            data_offset: 0,
            cluster_count: 0,
            fat: Vec::new(),
            root: DirLoc::Chain(0),
        };
        let bad = |what| EspError::BadBootSector { offset: base, what };
        if volume_len < 512 {
            return Err(bad("partition is smaller than one sector"));
        }
        let b = volume.read_at(0, 512)?;
        if b[510..512] != [0x55, 0xAA] {
            return Err(bad("missing 0x55AA signature"));
        }
        let bps = u64::from(le16(&b, 11));
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            return Err(bad("bytes per sector is not 512, 1024, 2048 or 4096"));
        }
        let spc = u64::from(b[13]);
        if spc == 0 || !spc.is_power_of_two() {
            return Err(bad("sectors per cluster is not a power of two"));
        }
        let reserved = u64::from(le16(&b, 14));
        if reserved == 0 {
            return Err(bad("no reserved sectors"));
        }
        let fats = u64::from(b[16]);
        if fats == 0 || fats > 4 {
            return Err(bad("number of FATs is not 1 to 4"));
        }
        let root_entries = u64::from(le16(&b, 17));
        let total16 = u64::from(le16(&b, 19));
        let total = if total16 != 0 {
            total16
        } else {
            u64::from(le32(&b, 32))
        };
        let fat16_size = u64::from(le16(&b, 22));
        let fat_sectors = if fat16_size != 0 {
            fat16_size
        } else {
            u64::from(le32(&b, 36))
        };
        if fat_sectors == 0 {
            return Err(bad("FAT size is zero"));
        }
        if total == 0 || total.saturating_mul(bps) > volume_len {
            return Err(bad("total sectors is zero or exceeds the partition"));
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let data_start = reserved + fats * fat_sectors + root_sectors;
        if data_start >= total {
            return Err(bad("no room for data after the FATs"));
        }
        let clusters = (total - data_start) / spc;
        let kind = if clusters < 4085 {
            FatKind::Fat12
        } else if clusters < 65_525 {
            FatKind::Fat16
        } else {
            FatKind::Fat32
        };
        if kind == FatKind::Fat32 {
            if root_entries != 0 || fat16_size != 0 {
                return Err(bad("FAT32 volume with FAT16 fields set"));
            }
        } else if root_entries == 0 {
            return Err(bad("FAT12/16 volume without root directory entries"));
        }
        if clusters == 0 || clusters > 0x0FFF_FFF5 {
            return Err(bad("cluster count out of range"));
        }
        let entry_bits: u64 = match kind {
            FatKind::Fat12 => 12,
            FatKind::Fat16 => 16,
            FatKind::Fat32 => 32,
        };
        let fat_needed = ((clusters + 2) * entry_bits).div_ceil(8);
        let fat_bytes = fat_sectors * bps;
        if fat_bytes < fat_needed {
            return Err(bad("FAT too small for the cluster count"));
        }
        if fat_needed > MAX_FAT_BYTES {
            return Err(bad("FAT larger than this reader accepts"));
        }
        volume.kind = kind;
        volume.cluster_bytes = spc * bps;
        volume.data_offset = data_start * bps;
        volume.cluster_count = u32::try_from(clusters).map_err(|_| bad("too many clusters"))?;
        volume.fat = volume.read_at(reserved * bps, fat_needed)?;
        volume.root = if kind == FatKind::Fat32 {
            let root = le32(&b, 44) & 0x0FFF_FFFF;
            if !volume.valid_cluster(root) {
                return Err(bad("root directory cluster out of range"));
            }
            DirLoc::Chain(root)
        } else {
            DirLoc::FixedRoot {
                offset: (reserved + fats * fat_sectors) * bps,
                len: root_sectors * bps,
            }
        };
        Ok(volume)
    }

    fn valid_cluster(&self, cluster: u32) -> bool {
        cluster >= 2 && u64::from(cluster) < u64::from(self.cluster_count) + 2
    }

    /// The FAT entry of `cluster` (which must be valid).
    fn next(&self, cluster: u32) -> u32 {
        let c = cluster as usize;
        match self.kind {
            FatKind::Fat12 => {
                let at = c + c / 2;
                let v = le16(&self.fat, at);
                u32::from(if c.is_multiple_of(2) {
                    v & 0x0FFF
                } else {
                    v >> 4
                })
            }
            FatKind::Fat16 => u32::from(le16(&self.fat, c * 2)),
            FatKind::Fat32 => le32(&self.fat, c * 4) & 0x0FFF_FFFF,
        }
    }

    fn is_end(&self, value: u32) -> bool {
        match self.kind {
            FatKind::Fat12 => value >= 0x0FF8,
            FatKind::Fat16 => value >= 0xFFF8,
            FatKind::Fat32 => value >= 0x0FFF_FFF8,
        }
    }

    /// The clusters of a chain: at most `want` of them (`None`: until the end mark).
    fn chain(&self, path: &str, first: u32, want: Option<u64>) -> Result<Vec<u32>, EspError> {
        let broken = |cluster, what| EspError::BadChain {
            path: path.to_owned(),
            cluster,
            what,
        };
        let mut out = Vec::new();
        // One bit per cluster: a chain that revisits a cluster loops.
        let mut seen = vec![0u64; (self.cluster_count as usize + 2).div_ceil(64)];
        let mut cluster = first;
        loop {
            if !self.valid_cluster(cluster) {
                return Err(broken(cluster, "cluster out of range"));
            }
            let (word, bit) = (cluster as usize / 64, 1u64 << (cluster % 64));
            if seen[word] & bit != 0 {
                return Err(broken(cluster, "chain loops"));
            }
            seen[word] |= bit;
            out.push(cluster);
            if want.is_some_and(|w| out.len() as u64 >= w) {
                return Ok(out);
            }
            let next = self.next(cluster);
            if self.is_end(next) {
                return match want {
                    Some(_) => Err(broken(cluster, "chain ends before the file does")),
                    None => Ok(out),
                };
            }
            cluster = next;
        }
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * self.cluster_bytes
    }

    /// Reads `clusters` and keeps the first `len` bytes, coalescing consecutive runs.
    fn read_clusters(&mut self, clusters: &[u32], len: u64) -> Result<Vec<u8>, EspError> {
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let mut i = 0;
        while i < clusters.len() && (out.len() as u64) < len {
            let start = clusters[i];
            let mut run = 1usize;
            while i + run < clusters.len()
                && u64::from(clusters[i + run]) == u64::from(start) + run as u64
            {
                run += 1;
            }
            let remaining = len - out.len() as u64;
            let bytes = (run as u64 * self.cluster_bytes).min(remaining);
            let data = self.read_at(self.cluster_offset(start), bytes)?;
            out.extend_from_slice(&data);
            i += run;
        }
        Ok(out)
    }

    fn read_dir(&mut self, dir: &DirLoc, path: &str) -> Result<Vec<u8>, EspError> {
        match *dir {
            DirLoc::FixedRoot { offset, len } => self.read_at(offset, len.min(MAX_DIR_BYTES)),
            DirLoc::Chain(first) => {
                let clusters = self.chain(path, first, None)?;
                let len = clusters.len() as u64 * self.cluster_bytes;
                if len > MAX_DIR_BYTES {
                    return Err(EspError::TooLarge {
                        path: path.to_owned(),
                        size: len,
                        limit: MAX_DIR_BYTES,
                    });
                }
                self.read_clusters(&clusters, len)
            }
        }
    }

    fn list(&mut self, dir: &DirLoc, path: &str) -> Result<Vec<DirEntry>, EspError> {
        let bytes = self.read_dir(dir, path)?;
        Ok(parse_dir(&bytes))
    }

    /// Finds `path` (absolute, `/`-separated, case-insensitive).
    fn lookup(&mut self, path: &str, want: Kind) -> Result<Found, EspError> {
        let parts: Vec<&str> = path
            .split(['/', '\\'])
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.len() > MAX_PATH_DEPTH || parts.contains(&"..") {
            return Err(EspError::NotFound {
                path: path.to_owned(),
            });
        }
        let mut dir = self.root.clone();
        for (i, part) in parts.iter().enumerate() {
            let entries = self.list(&dir, path)?;
            let found = entries
                .into_iter()
                .find(|e| e.name.eq_ignore_ascii_case(part) || e.short.eq_ignore_ascii_case(part))
                .ok_or_else(|| EspError::NotFound {
                    path: path.to_owned(),
                })?;
            let last = i + 1 == parts.len();
            if last && want == Kind::File {
                if found.is_dir {
                    return Err(EspError::WrongKind {
                        path: path.to_owned(),
                        expected: "file",
                    });
                }
                return Ok(Found::File {
                    first_cluster: found.first_cluster,
                    size: found.size,
                });
            }
            if !found.is_dir {
                return Err(EspError::WrongKind {
                    path: path.to_owned(),
                    expected: "directory",
                });
            }
            dir = if found.first_cluster == 0 {
                // `..` of a first-level directory points at the root as cluster 0.
                self.root.clone()
            } else {
                DirLoc::Chain(found.first_cluster)
            };
        }
        if want == Kind::File {
            return Err(EspError::WrongKind {
                path: path.to_owned(),
                expected: "file",
            });
        }
        Ok(Found::Dir(dir))
    }

    fn read_file(&mut self, path: &str, limit: u64) -> Result<Vec<u8>, EspError> {
        let Found::File {
            first_cluster: first,
            size,
        } = self.lookup(path, Kind::File)?
        else {
            return Err(EspError::WrongKind {
                path: path.to_owned(),
                expected: "file",
            });
        };
        let size = u64::from(size);
        if size > limit {
            return Err(EspError::TooLarge {
                path: path.to_owned(),
                size,
                limit,
            });
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let clusters = self.chain(path, first, Some(size.div_ceil(self.cluster_bytes)))?;
        self.read_clusters(&clusters, size)
    }
}

fn short_name_text(raw: &[u8]) -> String {
    let mut base: Vec<u8> = raw[0..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xE5;
    }
    let base = String::from_utf8_lossy(&base).trim_end().to_owned();
    let ext = String::from_utf8_lossy(&raw[8..11]).trim_end().to_owned();
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

fn short_checksum(raw: &[u8]) -> u8 {
    raw[..11]
        .iter()
        .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// Decodes 32-byte directory entries, attaching valid VFAT long names (pure).
fn parse_dir(bytes: &[u8]) -> Vec<DirEntry> {
    const ATTR_LONG: u8 = 0x0F;
    const ATTR_VOLUME: u8 = 0x08;
    const ATTR_DIR: u8 = 0x10;
    let mut out = Vec::new();
    // Long-name pieces collected so far: (expected next ordinal, checksum, UTF-16 units).
    let mut long: Option<(u8, u8, Vec<u16>)> = None;
    for e in bytes.chunks_exact(32) {
        match e[0] {
            0x00 => break,
            0xE5 => {
                long = None;
                continue;
            }
            _ => {}
        }
        let attr = e[11];
        if attr & 0x3F == ATTR_LONG {
            let ord = e[0] & 0x1F;
            let units: Vec<u16> = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
                .iter()
                .map(|&at| le16(e, at))
                .collect();
            if e[0] & 0x40 != 0 {
                // The last piece comes first; it holds the end of the name.
                long = (ord >= 1).then(|| (ord, e[13], units));
            } else if let Some((expect, sum, acc)) = long.take()
                && ord + 1 == expect
                && sum == e[13]
            {
                let mut piece = units;
                piece.extend_from_slice(&acc);
                long = Some((ord, sum, piece));
            }
            continue;
        }
        let pieces = long.take();
        if attr & ATTR_VOLUME != 0 {
            continue;
        }
        let short = short_name_text(&e[0..11]);
        if short == "." || short == ".." {
            continue;
        }
        let name = match pieces {
            Some((1, sum, units)) if sum == short_checksum(&e[0..11]) => {
                let end = units
                    .iter()
                    .position(|&u| u == 0x0000)
                    .unwrap_or(units.len());
                String::from_utf16(&units[..end]).unwrap_or_else(|_| short.clone())
            }
            _ => short.clone(),
        };
        let first_cluster = (u32::from(le16(e, 20)) << 16) | u32::from(le16(e, 26));
        out.push(DirEntry {
            name,
            short,
            is_dir: attr & ATTR_DIR != 0,
            first_cluster,
            size: le32(e, 28),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fat::{FatConfig, FatDir, build_fat};
    use crate::gpt::write_gpt;
    use crate::layout::{DiskLayout, DiskSpec, PartitionRole, Seed};
    use std::io::Write;

    const MIB: u64 = 1024 * 1024;
    const ENTRY: &str = "title jeos\n# a comment\nlinux /vmlinuz\ninitrd /initrd.img\noptions root=UUID=1234 console=ttyS0,115200 quiet\n";

    fn kernel() -> Vec<u8> {
        (0..300_000u32).map(|i| (i % 251) as u8).collect()
    }

    fn tree(entry: &str) -> FatDir {
        let mut root = FatDir::default();
        root.insert_file("/vmlinuz", kernel()).unwrap();
        root.insert_file("/initrd.img", b"070701 cpio".repeat(5000))
            .unwrap();
        root.insert_file("/loader/entries/jeos.conf", entry.as_bytes().to_vec())
            .unwrap();
        root.insert_file("/loader/entries/zz-other.conf", b"linux /nope".to_vec())
            .unwrap();
        root.insert_file("/syslinux.cfg", b"DEFAULT jeos".to_vec())
            .unwrap();
        root
    }

    /// A GPT disk whose ESP holds `root`; returns the file and the ESP's byte offset.
    fn disk(esp_mib: u64, root: &FatDir) -> (tempfile::NamedTempFile, u64) {
        let layout = DiskLayout::plan(&DiskSpec {
            esp_size_bytes: esp_mib * MIB,
            root_size_bytes: MIB,
            bios_boot: false,
            esp_legacy_bootable: true,
            seed: Seed::from_bytes(b"esp"),
        })
        .unwrap();
        let esp = layout.partition(PartitionRole::Esp).unwrap().clone();
        let fat = build_fat(
            &FatConfig {
                size_bytes: esp.size_bytes(),
                volume_label: "JEOS".into(),
                volume_id: 1,
                timestamp: 0,
                hidden_sectors: 2048,
            },
            root,
        )
        .unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(layout.total_size_bytes).unwrap();
        write_gpt(file.path(), &layout, None).unwrap();
        file.seek(SeekFrom::Start(esp.offset_bytes())).unwrap();
        file.write_all(&fat.bytes).unwrap();
        file.flush().unwrap();
        (file, esp.offset_bytes())
    }

    fn patch(file: &tempfile::NamedTempFile, offset: u64, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(file.path())
            .unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(bytes).unwrap();
    }

    /// The same ESP through `image::open_image` as raw, qcow2 and VMDK (the readers of
    /// `jeos inspect`); the compressed copies seed the `disk_image` fuzz target.
    #[test]
    fn reads_back_through_every_image_format() {
        use crate::ova::reporter::NoReporter;
        let (file, _) = disk(8, &tree(ENTRY));
        let dir = tempfile::tempdir().unwrap();
        let qcow2 = dir.path().join("esp.qcow2");
        crate::qcow2::write_qcow2(
            file.path(),
            &qcow2,
            &crate::qcow2::Qcow2Config { compress: true },
            &NoReporter,
        )
        .unwrap();
        let vmdk = dir.path().join("esp.vmdk");
        crate::vmdk::write_vmdk(
            file.path(),
            &vmdk,
            &crate::vmdk::VmdkConfig::default(),
            &NoReporter,
        )
        .unwrap();
        for path in [file.path(), qcow2.as_path(), vmdk.as_path()] {
            let image = crate::image::open_image(path).unwrap();
            let boot = image.boot_files().unwrap();
            assert!(boot.kernel == kernel(), "{}", path.display());
            assert_eq!(boot.cmdline, "root=UUID=1234 console=ttyS0,115200 quiet");
            let kinds: Vec<_> = image
                .partitions()
                .unwrap()
                .into_iter()
                .map(|p| p.kind)
                .collect();
            assert_eq!(kinds, ["esp", "root"]);
            // The root partition holds no ext4 here.
            assert!(image.root_fs().is_err());
        }
        for path in [&qcow2, &vmdk] {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            crate::image::tests::write_seed("disk_image", &name, &std::fs::read(path).unwrap());
        }
    }

    #[test]
    fn reads_back_fat16_and_fat32() {
        for esp_mib in [8, 40] {
            let (file, _) = disk(esp_mib, &tree(ENTRY));
            let boot = read_boot_files(file.path()).unwrap();
            assert!(boot.kernel == kernel(), "{esp_mib} MiB");
            assert_eq!(boot.initramfs, b"070701 cpio".repeat(5000));
            assert_eq!(boot.cmdline, "root=UUID=1234 console=ttyS0,115200 quiet");
            assert_eq!(boot.entry, "/loader/entries/jeos.conf");
        }
    }

    #[test]
    fn lookup_is_case_insensitive_and_matches_short_names() {
        let entry = "linux \\EFI\\Linux\\VMLINUZ-LONGNAME\ninitrd /a.img\ninitrd /b.img\noptions x\noptions y\n";
        let mut root = FatDir::default();
        root.insert_file("/EFI/Linux/vmlinuz-longname", b"KERNEL".to_vec())
            .unwrap();
        root.insert_file("/a.img", b"AAA".to_vec()).unwrap();
        root.insert_file("/B.IMG", b"BBB".to_vec()).unwrap();
        root.insert_file("/Loader/Entries/A.CONF", entry.as_bytes().to_vec())
            .unwrap();
        let (file, _) = disk(8, &root);
        let boot = read_boot_files(file.path()).unwrap();
        assert_eq!(boot.kernel, b"KERNEL");
        assert_eq!(boot.initramfs, b"AAABBB");
        assert_eq!(boot.cmdline, "x y");
        // 8.3 alias of a long name.
        let mut fh = File::open(file.path()).unwrap();
        let table = read_gpt(file.path()).unwrap();
        let esp = &table.entries[0];
        let _ = &mut fh;
        let mut vol = FatVolume::open(
            fh,
            file.path(),
            esp.first_lba.0 * 512,
            (esp.last_lba.0 - esp.first_lba.0 + 1) * 512,
        )
        .unwrap();
        assert_eq!(
            vol.read_file("/efi/linux/VMLINU~1", 100).unwrap(),
            b"KERNEL"
        );
    }

    #[test]
    fn entry_parsing() {
        let e = parse_entry(ENTRY).unwrap();
        assert_eq!(e.linux, "/vmlinuz");
        assert_eq!(e.initrds, ["/initrd.img"]);
        assert!(parse_entry("title x\n").unwrap_err().contains("no `linux`"));
        assert!(parse_entry("linux /a\nlinux /b\n").is_err());
    }

    #[test]
    fn missing_pieces_are_named() {
        let mut root = FatDir::default();
        root.insert_file("/loader/entries/jeos.conf", b"linux /vmlinuz\n".to_vec())
            .unwrap();
        let (file, _) = disk(8, &root);
        let err = read_boot_files(file.path()).map(|_| ()).unwrap_err();
        assert!(
            matches!(err, EspError::NotFound { ref path } if path == "/vmlinuz"),
            "{err}"
        );

        let mut root = FatDir::default();
        root.insert_file("/loader/loader.conf", b"x".to_vec())
            .unwrap();
        root.insert_file("/loader/entries/readme.txt", b"x".to_vec())
            .unwrap();
        let (file, _) = disk(8, &root);
        assert!(matches!(
            read_boot_files(file.path()),
            Err(EspError::NoEntry)
        ));
    }

    #[test]
    fn truncated_image_is_an_error() {
        let (file, esp) = disk(8, &tree(ENTRY));
        // Keep the GPT valid-looking is impossible after truncation: the GPT check fails.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(file.path())
            .unwrap();
        f.set_len(esp + 4096).unwrap();
        assert!(matches!(
            read_boot_files(file.path()),
            Err(EspError::Gpt { .. })
        ));
        // A volume that claims more than the reader gets: reads past the end fail cleanly.
        let bytes = std::fs::read(file.path()).unwrap();
        let mut vol = FatVolume::open(std::io::Cursor::new(bytes), file.path(), esp, 8 * MIB);
        if let Ok(v) = vol.as_mut() {
            assert!(v.read_file("/vmlinuz", MAX_BOOT_FILE_BYTES).is_err());
        }
    }

    #[test]
    fn bad_boot_sectors_are_rejected() {
        let cases: [(usize, &[u8], &str); 5] = [
            (510, &[0, 0], "0x55AA"),
            (11, &[0x00, 0x03], "bytes per sector"),
            (13, &[3], "power of two"),
            (16, &[0], "number of FATs"),
            (14, &[0, 0], "reserved"),
        ];
        for (at, bytes, expect) in cases {
            let (file, esp) = disk(8, &tree(ENTRY));
            patch(&file, esp + at as u64, bytes);
            let err = read_boot_files(file.path()).map(|_| ()).unwrap_err();
            assert!(
                matches!(err, EspError::BadBootSector { .. }) && err.to_string().contains(expect),
                "{at}: {err}"
            );
        }
    }

    /// Offset of the first FAT, the cluster of `/vmlinuz` and the FAT entry width.
    fn fat16_vmlinuz(file: &tempfile::NamedTempFile, esp: u64) -> (u64, u32) {
        let bytes = std::fs::read(file.path()).unwrap();
        let b = &bytes[esp as usize..];
        let reserved = u64::from(le16(b, 14));
        let fat_offset = esp + reserved * 512;
        let root_offset = reserved + 2 * u64::from(le16(b, 22));
        let root = &b[(root_offset * 512) as usize..][..512 * 32];
        let entry = parse_dir(root)
            .into_iter()
            .find(|e| e.name == "vmlinuz")
            .unwrap();
        (fat_offset, entry.first_cluster)
    }

    #[test]
    fn chain_loops_and_out_of_range_clusters_are_errors() {
        let (file, esp) = disk(8, &tree(ENTRY));
        let (fat, first) = fat16_vmlinuz(&file, esp);
        // Second cluster points back to the first: a loop.
        patch(
            &file,
            fat + u64::from(first + 1) * 2,
            &(first as u16).to_le_bytes(),
        );
        let err = read_boot_files(file.path()).map(|_| ()).unwrap_err();
        assert!(matches!(err, EspError::BadChain { .. }), "{err}");
        // A loop within a directory chain (no size bound) is caught too.
        let (file, esp) = disk(8, &tree(ENTRY));
        let (fat, first) = fat16_vmlinuz(&file, esp);
        patch(&file, fat + u64::from(first) * 2, &0xFFF0u16.to_le_bytes());
        let err = read_boot_files(file.path()).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        // Early end of chain.
        let (file, esp) = disk(8, &tree(ENTRY));
        let (fat, first) = fat16_vmlinuz(&file, esp);
        patch(&file, fat + u64::from(first) * 2, &0xFFFFu16.to_le_bytes());
        let err = read_boot_files(file.path()).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("ends before"), "{err}");
    }

    #[test]
    fn directory_loop_is_detected() {
        let (file, esp) = disk(8, &tree(ENTRY));
        let bytes = std::fs::read(file.path()).unwrap();
        let b = &bytes[esp as usize..];
        let reserved = u64::from(le16(b, 14));
        let root_offset = reserved + 2 * u64::from(le16(b, 22));
        let root = &b[(root_offset * 512) as usize..][..512 * 32];
        let loader = parse_dir(root)
            .into_iter()
            .find(|e| e.name == "loader")
            .unwrap();
        let fat = esp + reserved * 512;
        patch(
            &file,
            fat + u64::from(loader.first_cluster) * 2,
            &(loader.first_cluster as u16).to_le_bytes(),
        );
        let err = read_boot_files(file.path()).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("loops"), "{err}");
    }

    #[test]
    fn huge_sizes_are_capped() {
        let (file, esp) = disk(8, &tree(ENTRY));
        let bytes = std::fs::read(file.path()).unwrap();
        let b = &bytes[esp as usize..];
        let reserved = u64::from(le16(b, 14));
        let root_offset = (reserved + 2 * u64::from(le16(b, 22))) * 512;
        let root = &b[root_offset as usize..][..512 * 32];
        // The short entry follows the long-name entries and carries the checksum.
        let index = root
            .chunks_exact(32)
            .position(|e| {
                e[11] != 0x0F
                    && parse_dir(e)
                        .first()
                        .is_some_and(|d| d.short.starts_with("VMLINU"))
            })
            .unwrap();
        patch(
            &file,
            esp + root_offset + index as u64 * 32 + 28,
            &u32::MAX.to_le_bytes(),
        );
        let err = read_boot_files(file.path()).map(|_| ()).unwrap_err();
        assert!(matches!(err, EspError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn random_corruption_never_panics() {
        let (file, esp) = disk(8, &tree(ENTRY));
        let clean = std::fs::read(file.path()).unwrap();
        let mut state = 0x1234_5678u32;
        for _ in 0..200 {
            let mut bytes = clean.clone();
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                // Corrupt the boot sector, the FAT and the root directory.
                let at = esp as usize + (state as usize % (64 * 1024));
                bytes[at] = (state >> 24) as u8;
            }
            let len = bytes.len() as u64;
            if let Ok(mut v) =
                FatVolume::open(std::io::Cursor::new(bytes), file.path(), esp, len - esp)
            {
                let _ = read_entry(&mut v);
            }
        }
    }
}
