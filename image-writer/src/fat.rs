//! In-process FAT16/FAT32 writer for the EFI system partition (Microsoft FAT spec 1.03,
//! "FAT: General Overview of On-Disk Format").
//!
//! [`build_fat`] turns an in-memory [`FatDir`] tree into a complete file-system image:
//! FAT32 when the volume has at least 65 525 clusters of one sector, else FAT16; 512-byte
//! sectors; two FATs; VFAT long names with correct 8.3 aliases and checksums; timestamps
//! from `SOURCE_DATE_EPOCH`; serial number from the seed. Every file is stored in one run of
//! consecutive clusters, and [`FatImage::file_extent`] tells where, so a boot loader
//! installer (SYSLINUX) can patch its sector list without reading the FAT back.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::collections::BTreeMap;

/// Bytes per sector.
pub const SECTOR: usize = 512;
/// Fewest clusters a FAT32 volume may have (fewer means FAT16, per the spec).
pub const FAT32_MIN_CLUSTERS: u64 = 65_525;
/// Fewest clusters a FAT16 volume may have (fewer means FAT12, which we do not write).
pub const FAT16_MIN_CLUSTERS: u64 = 4_085;
const FAT16_ROOT_ENTRIES: u64 = 512;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0F;

/// A directory of the tree to write: names map to files or subdirectories.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FatDir {
    /// Entries by long name (case preserved; FAT compares case-insensitively).
    pub entries: BTreeMap<String, FatNode>,
}

/// A node of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FatNode {
    /// A regular file.
    File(Vec<u8>),
    /// A subdirectory.
    Dir(FatDir),
}

impl FatDir {
    /// Adds a file at a `/`-separated path, creating parent directories.
    ///
    /// # Errors
    /// [`FatError::BadPath`] when a component is empty, `.`/`..`, or a file is in the way.
    pub fn insert_file(&mut self, path: &str, data: Vec<u8>) -> Result<(), FatError> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let bad = || FatError::BadPath {
            path: path.to_owned(),
        };
        let (name, parents) = parts.split_last().ok_or_else(bad)?;
        let mut dir = self;
        for part in parents {
            if part.is_empty() || *part == "." || *part == ".." {
                return Err(bad());
            }
            let node = dir
                .entries
                .entry((*part).to_owned())
                .or_insert_with(|| FatNode::Dir(FatDir::default()));
            dir = match node {
                FatNode::Dir(d) => d,
                FatNode::File(_) => return Err(bad()),
            };
        }
        if name.is_empty() || *name == "." || *name == ".." {
            return Err(bad());
        }
        dir.entries.insert((*name).to_owned(), FatNode::File(data));
        Ok(())
    }
}

/// Which FAT variant was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatType {
    /// 16-bit FAT entries, fixed root directory.
    Fat16,
    /// 32-bit (28 used) FAT entries, root directory in a cluster chain.
    Fat32,
}

/// Options for [`build_fat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatConfig {
    /// Size of the volume in bytes (a multiple of 512).
    pub size_bytes: u64,
    /// Volume label (up to 11 characters, uppercase ASCII recommended).
    pub volume_label: String,
    /// Volume serial number.
    pub volume_id: u32,
    /// Seconds since the Unix epoch for every timestamp (`SOURCE_DATE_EPOCH`).
    pub timestamp: u64,
    /// Sectors before the volume on its disk (the partition start LBA; boot code uses it).
    pub hidden_sectors: u32,
}

/// Where a file's data lies: one run of consecutive clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileExtent {
    /// First cluster (0 for an empty file).
    pub first_cluster: u32,
    /// First sector relative to the start of the volume.
    pub first_sector: u64,
    /// Length of the file in bytes.
    pub len: u64,
}

/// Errors from building a FAT image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FatError {
    /// The volume has too few clusters even for FAT16.
    #[error(
        "FAT volume of {size_bytes} bytes is too small (FAT16 needs {FAT16_MIN_CLUSTERS} clusters)"
    )]
    VolumeTooSmall {
        /// Requested size.
        size_bytes: u64,
    },
    /// The volume is larger than FAT32 can address with 512-byte sectors.
    #[error("FAT volume of {size_bytes} bytes is too large")]
    VolumeTooLarge {
        /// Requested size.
        size_bytes: u64,
    },
    /// The files do not fit.
    #[error("files need {needed_clusters} clusters but the volume has {free_clusters}")]
    NoSpace {
        /// Clusters needed.
        needed_clusters: u64,
        /// Clusters available.
        free_clusters: u64,
    },
    /// A path cannot be stored.
    #[error("invalid FAT path `{path}`")]
    BadPath {
        /// The path.
        path: String,
    },
    /// A name is longer than 255 UTF-16 units or has characters FAT forbids.
    #[error("invalid FAT file name `{name}`")]
    BadName {
        /// The name.
        name: String,
    },
    /// Two names in one directory differ only in case.
    #[error("names in one directory differ only in case: `{name}`")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// [`FatImage::overwrite_file`] got the wrong length or an unknown path.
    #[error("cannot overwrite `{path}`: not a file of that length")]
    Overwrite {
        /// The path.
        path: String,
    },
}

/// A finished FAT volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatImage {
    /// FAT16 or FAT32.
    pub fat_type: FatType,
    /// The complete volume.
    pub bytes: Vec<u8>,
    /// Sectors per cluster.
    pub sectors_per_cluster: u32,
    /// First sector of cluster 2.
    pub data_start_sector: u64,
    extents: BTreeMap<String, FileExtent>,
}

impl FatImage {
    /// Where a file (path like `/syslinux/ldlinux.sys`, case-sensitive as inserted) is.
    #[must_use]
    pub fn file_extent(&self, path: &str) -> Option<FileExtent> {
        self.extents.get(&normalize(path)).copied()
    }

    /// Replaces a file's bytes in place with bytes of the same length (used by boot loader
    /// installers that patch a file after learning where it landed).
    ///
    /// # Errors
    /// [`FatError::Overwrite`].
    pub fn overwrite_file(&mut self, path: &str, data: &[u8]) -> Result<(), FatError> {
        let err = || FatError::Overwrite {
            path: path.to_owned(),
        };
        let extent = self.file_extent(path).ok_or_else(err)?;
        if extent.len != data.len() as u64 {
            return Err(err());
        }
        let start = usize::try_from(extent.first_sector).map_err(|_| err())? * SECTOR;
        self.bytes
            .get_mut(start..start + data.len())
            .ok_or_else(err)?
            .copy_from_slice(data);
        Ok(())
    }

    /// Installs boot code into the boot sector (and the FAT32 backup boot sector) while
    /// keeping the BPB: `head` replaces bytes 0..11 (jump + OEM name) and `code` replaces
    /// bytes 0x5A..0x1FE (after the FAT32 extended BPB, the layout SYSLINUX uses).
    ///
    /// # Panics
    /// Never: the lengths are fixed by the array types.
    pub fn install_boot_code(&mut self, head: &[u8; 11], code: &[u8; 420]) {
        let copies: &[usize] = match self.fat_type {
            FatType::Fat16 => &[0],
            FatType::Fat32 => &[0, 6],
        };
        for &sector in copies {
            let base = sector * SECTOR;
            self.bytes[base..base + 11].copy_from_slice(head);
            self.bytes[base + 0x5A..base + 0x1FE].copy_from_slice(code);
        }
    }
}

fn normalize(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

/// DOS date and time (local time = UTC here) for a Unix timestamp, clamped to 1980..=2107.
#[must_use]
pub fn dos_date_time(unix_seconds: u64) -> (u16, u16) {
    const MIN: u64 = 315_532_800; // 1980-01-01
    const MAX: u64 = 4_354_819_198; // 2107-12-31 23:59:58
    let t = unix_seconds.clamp(MIN, MAX);
    let days = t / 86_400;
    let secs = t % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let date = ((year - 1980) << 9) | (month << 5) | day;
    let time = ((secs / 3600) << 11) | (((secs % 3600) / 60) << 5) | ((secs % 60) / 2);
    (
        u16::try_from(date).expect("year clamped to 1980..=2107"),
        u16::try_from(time).expect("hours < 24"),
    )
}

/// Checksum of an 11-byte short name, stored in every long-name entry.
#[must_use]
pub fn short_name_checksum(name: &[u8; 11]) -> u8 {
    name.iter()
        .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

fn valid_short_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || b"$%'-_@~`!(){}^#&".contains(&c)
}

/// If `name` is already a valid upper-case 8.3 name, its 11-byte form.
fn exact_short_name(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.rfind('.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || (name.contains('.') && ext.is_empty())
    {
        return None;
    }
    if !base.bytes().chain(ext.bytes()).all(valid_short_char) {
        return None;
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base.as_bytes());
    out[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Some(out)
}

/// The numeric-tail 8.3 alias for a long name (`BASIS~N.EXT`), following the spec's basis
/// name generation: upper-case, drop spaces and leading dots, replace other invalid
/// characters with `_`, base up to 6 characters plus `~N`, extension up to 3.
fn alias_short_name(name: &str, taken: &dyn Fn(&[u8; 11]) -> bool) -> Option<[u8; 11]> {
    let clean = |s: &str| -> Vec<u8> {
        s.chars()
            .filter(|c| *c != ' ' && *c != '.')
            .map(|c| {
                let u = c.to_ascii_uppercase();
                if u.is_ascii() && valid_short_char(u as u8) {
                    u as u8
                } else {
                    b'_'
                }
            })
            .collect()
    };
    let trimmed = name.trim_start_matches('.');
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (clean(&trimmed[..i]), clean(&trimmed[i + 1..])),
        None => (clean(trimmed), Vec::new()),
    };
    let base = if base.is_empty() { b"_".to_vec() } else { base };
    for n in 1..1_000_000u32 {
        let tail = format!("~{n}");
        let keep = (8 - tail.len()).min(base.len());
        let mut out = [b' '; 11];
        out[..keep].copy_from_slice(&base[..keep]);
        out[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        let ext_len = ext.len().min(3);
        out[8..8 + ext_len].copy_from_slice(&ext[..ext_len]);
        if !taken(&out) {
            return Some(out);
        }
    }
    None
}

fn valid_long_name(name: &str) -> bool {
    !name.is_empty()
        && name.encode_utf16().count() <= 255
        && !name.chars().any(|c| c < ' ' || "\"*/:<>?\\|".contains(c))
        && name != "."
        && name != ".."
}

/// One 32-byte directory entry plus its long-name entries.
struct DirRecord {
    long_name: Option<String>,
    short: [u8; 11],
    attr: u8,
    first_cluster: u32,
    size: u32,
}

struct Planned {
    /// Per directory path: the records it will contain (in order).
    dirs: BTreeMap<String, Vec<DirRecord>>,
    /// Directory path -> first cluster (0 = FAT16 root region).
    dir_clusters: BTreeMap<String, (u32, u32)>,
}

struct Geometry {
    fat_type: FatType,
    total_sectors: u64,
    reserved: u64,
    fat_sectors: u64,
    root_dir_sectors: u64,
    sectors_per_cluster: u64,
    clusters: u64,
}

impl Geometry {
    fn data_start(&self) -> u64 {
        self.reserved + 2 * self.fat_sectors + self.root_dir_sectors
    }
    fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster * SECTOR as u64
    }
    fn cluster_sector(&self, cluster: u32) -> u64 {
        self.data_start() + (u64::from(cluster) - 2) * self.sectors_per_cluster
    }
}

fn geometry_for(total_sectors: u64, fat_type: FatType, spc: u64) -> Geometry {
    let (reserved, root_dir_sectors, entry_bytes) = match fat_type {
        FatType::Fat16 => (4, FAT16_ROOT_ENTRIES * 32 / SECTOR as u64, 2),
        FatType::Fat32 => (32, 0, 4),
    };
    // Fixed point: the FAT must cover every cluster left after the FATs themselves.
    let mut fat_sectors = 1;
    loop {
        let data = total_sectors.saturating_sub(reserved + 2 * fat_sectors + root_dir_sectors);
        let clusters = data / spc;
        let needed = ((clusters + 2) * entry_bytes).div_ceil(SECTOR as u64);
        if needed <= fat_sectors {
            return Geometry {
                fat_type,
                total_sectors,
                reserved,
                fat_sectors,
                root_dir_sectors,
                sectors_per_cluster: spc,
                clusters,
            };
        }
        fat_sectors = needed;
    }
}

fn choose_geometry(size_bytes: u64) -> Result<Geometry, FatError> {
    let total_sectors = size_bytes / SECTOR as u64;
    if total_sectors > u64::from(u32::MAX) {
        return Err(FatError::VolumeTooLarge { size_bytes });
    }
    let mut spc = 1;
    loop {
        let g = geometry_for(total_sectors, FatType::Fat32, spc);
        if g.clusters < FAT32_MIN_CLUSTERS {
            break;
        }
        // Keep FATs modest: at most 1 Mi clusters (4 MiB per FAT).
        if g.clusters <= 1 << 20 || spc == 64 {
            return Ok(g);
        }
        spc *= 2;
    }
    for spc in [1, 2, 4, 8, 16, 32, 64] {
        let g = geometry_for(total_sectors, FatType::Fat16, spc);
        if g.clusters < FAT16_MIN_CLUSTERS {
            return Err(FatError::VolumeTooSmall { size_bytes });
        }
        if g.clusters < FAT32_MIN_CLUSTERS {
            return Ok(g);
        }
    }
    Err(FatError::VolumeTooLarge { size_bytes })
}

/// Builds a FAT volume holding `root` (pure; the result is a byte vector): plan where
/// every directory and file goes ([`plan_fat`]), then encode the bytes ([`encode_fat`]).
///
/// # Errors
/// Size, name and space errors ([`FatError`]).
pub fn build_fat(config: &FatConfig, root: &FatDir) -> Result<FatImage, FatError> {
    let g = choose_geometry(config.size_bytes)?;
    let plan = plan_fat(config, root, &g)?;
    let img = encode_fat(config, &g, &plan)?;
    Ok(FatImage {
        fat_type: g.fat_type,
        bytes: img,
        sectors_per_cluster: u32::try_from(g.sectors_per_cluster).expect("<= 64"),
        data_start_sector: g.data_start(),
        extents: plan.extents,
    })
}

/// Where every directory and file of a volume goes.
struct FatPlan<'a> {
    /// Every directory, depth-first in sorted order, with its path.
    all_dirs: Vec<(String, &'a FatDir)>,
    /// The directories' records and clusters.
    planned: Planned,
    /// Where each file's data lies.
    extents: BTreeMap<String, FileExtent>,
    /// Allocated runs: (first cluster, cluster count).
    fat_runs: Vec<(u32, u32)>,
    /// First cluster not allocated.
    next_cluster: u64,
}

/// Pass 1: assign directory clusters (breadth of the sorted tree, depth-first order) and
/// file clusters, in one deterministic walk. Directory sizes depend on the entry counts.
fn plan_fat<'a>(
    config: &FatConfig,
    root: &'a FatDir,
    g: &Geometry,
) -> Result<FatPlan<'a>, FatError> {
    let cluster_bytes = g.cluster_bytes();
    let mut next_cluster: u64 = 2;
    let mut planned = Planned {
        dirs: BTreeMap::new(),
        dir_clusters: BTreeMap::new(),
    };
    let mut extents = BTreeMap::new();
    let mut fat_runs: Vec<(u32, u32)> = Vec::new(); // (first cluster, cluster count)

    let alloc = |next: &mut u64, count: u64, runs: &mut Vec<(u32, u32)>| -> Result<u32, FatError> {
        if count == 0 {
            return Ok(0);
        }
        let first = *next;
        let end = first + count;
        if end > g.clusters + 2 {
            return Err(FatError::NoSpace {
                needed_clusters: end - 2,
                free_clusters: g.clusters,
            });
        }
        *next = end;
        let first = u32::try_from(first).map_err(|_| FatError::VolumeTooLarge {
            size_bytes: config.size_bytes,
        })?;
        let count = u32::try_from(count).map_err(|_| FatError::VolumeTooLarge {
            size_bytes: config.size_bytes,
        })?;
        runs.push((first, count));
        Ok(first)
    };

    // Collect directories in depth-first sorted order.
    fn walk<'a>(dir: &'a FatDir, path: String, out: &mut Vec<(String, &'a FatDir)>) {
        out.push((path.clone(), dir));
        for (name, node) in &dir.entries {
            if let FatNode::Dir(sub) = node {
                let child = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                walk(sub, child, out);
            }
        }
    }
    let mut all_dirs = Vec::new();
    walk(root, "/".to_owned(), &mut all_dirs);

    let names = short_names(&all_dirs)?;
    let dir_entry_count = |path: &str| -> u64 {
        let list = &names[path];
        let mut n: u64 = if path == "/" { 1 } else { 2 }; // volume label or . and ..
        for (name, _, long) in list {
            n += 1;
            if *long {
                n += (name.encode_utf16().count() as u64).div_ceil(13);
            }
        }
        n
    };

    for (path, _) in &all_dirs {
        let bytes = dir_entry_count(path) * 32;
        if path == "/" && g.fat_type == FatType::Fat16 {
            if bytes > FAT16_ROOT_ENTRIES * 32 {
                return Err(FatError::NoSpace {
                    needed_clusters: bytes.div_ceil(cluster_bytes),
                    free_clusters: 0,
                });
            }
            planned.dir_clusters.insert(path.clone(), (0, 0));
            continue;
        }
        let count = bytes.div_ceil(cluster_bytes).max(1);
        let first = alloc(&mut next_cluster, count, &mut fat_runs)?;
        planned.dir_clusters.insert(
            path.clone(),
            (
                first,
                u32::try_from(count * cluster_bytes).unwrap_or(u32::MAX),
            ),
        );
    }
    // Files, in the same order.
    for (path, dir) in &all_dirs {
        let mut records = Vec::new();
        for (name, short, long) in &names[path] {
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            let (attr, first_cluster, size) = match &dir.entries[name] {
                FatNode::Dir(_) => (ATTR_DIRECTORY, planned.dir_clusters[&child].0, 0),
                FatNode::File(data) => {
                    let len = data.len() as u64;
                    let size = u32::try_from(len).map_err(|_| FatError::BadPath {
                        path: child.clone(),
                    })?;
                    let first = alloc(
                        &mut next_cluster,
                        len.div_ceil(cluster_bytes),
                        &mut fat_runs,
                    )?;
                    let first_sector = if first == 0 {
                        0
                    } else {
                        g.cluster_sector(first)
                    };
                    extents.insert(
                        child.clone(),
                        FileExtent {
                            first_cluster: first,
                            first_sector,
                            len,
                        },
                    );
                    (ATTR_ARCHIVE, first, size)
                }
            };
            records.push(DirRecord {
                long_name: long.then(|| name.clone()),
                short: *short,
                attr,
                first_cluster,
                size,
            });
        }
        planned.dirs.insert(path.clone(), records);
    }
    Ok(FatPlan {
        all_dirs,
        planned,
        extents,
        fat_runs,
        next_cluster,
    })
}

/// Short names per directory (exact 8.3 names first, then aliases), and whether each
/// entry needs long-name entries.
#[allow(clippy::type_complexity)]
fn short_names(
    all_dirs: &[(String, &FatDir)],
) -> Result<BTreeMap<String, Vec<(String, [u8; 11], bool)>>, FatError> {
    let mut names: BTreeMap<String, Vec<(String, [u8; 11], bool)>> = BTreeMap::new();
    for (path, dir) in all_dirs {
        let mut list: Vec<(String, [u8; 11], bool)> = Vec::new();
        let mut seen_lower = std::collections::BTreeSet::new();
        // Exact 8.3 names first so aliases never collide with them.
        for name in dir.entries.keys() {
            if !valid_long_name(name) {
                return Err(FatError::BadName { name: name.clone() });
            }
            if !seen_lower.insert(name.to_lowercase()) {
                return Err(FatError::DuplicateName { name: name.clone() });
            }
        }
        let exact: BTreeMap<&String, [u8; 11]> = dir
            .entries
            .keys()
            .filter_map(|n| exact_short_name(n).map(|s| (n, s)))
            .collect();
        let mut taken: Vec<[u8; 11]> = exact.values().copied().collect();
        for name in dir.entries.keys() {
            if let Some(short) = exact.get(name) {
                list.push((name.clone(), *short, false));
            } else {
                let short = alias_short_name(name, &|s| taken.contains(s))
                    .ok_or_else(|| FatError::BadName { name: name.clone() })?;
                taken.push(short);
                list.push((name.clone(), short, true));
            }
        }
        names.insert(path.clone(), list);
    }
    Ok(names)
}

/// Pass 2: the bytes of the volume planned in `plan`.
fn encode_fat(config: &FatConfig, g: &Geometry, plan: &FatPlan<'_>) -> Result<Vec<u8>, FatError> {
    let (date, time) = dos_date_time(config.timestamp);
    let next_cluster = plan.next_cluster;
    let total = usize::try_from(g.total_sectors).map_err(|_| FatError::VolumeTooLarge {
        size_bytes: config.size_bytes,
    })? * SECTOR;
    let mut img = vec![0u8; total];
    let used_clusters = next_cluster - 2;
    write_boot_sector(&mut img, g, config);
    if g.fat_type == FatType::Fat32 {
        let base = SECTOR;
        img[base..base + 4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
        img[base + 484..base + 488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
        let free = u32::try_from(g.clusters - used_clusters).unwrap_or(u32::MAX);
        img[base + 488..base + 492].copy_from_slice(&free.to_le_bytes());
        let next_free = u32::try_from(next_cluster).unwrap_or(u32::MAX);
        img[base + 492..base + 496].copy_from_slice(&next_free.to_le_bytes());
        img[base + 508..base + 512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
        // Backup boot sector (6) and backup FSInfo (7).
        let (head, tail) = img.split_at_mut(6 * SECTOR);
        tail[..2 * SECTOR].copy_from_slice(&head[..2 * SECTOR]);
    }

    // FAT (two copies).
    let fat = fat_table(g, &plan.fat_runs);
    let fat_bytes = fat.len();
    let fat_start = usize::try_from(g.reserved).expect("small") * SECTOR;
    img[fat_start..fat_start + fat_bytes].copy_from_slice(&fat);
    img[fat_start + fat_bytes..fat_start + 2 * fat_bytes].copy_from_slice(&fat);

    write_directories(&mut img, config, g, &plan.planned, (date, time));
    // File data.
    let sector_offset = |sector: u64| usize::try_from(sector).expect("within image") * SECTOR;
    for (path, dir) in &plan.all_dirs {
        for (name, node) in &dir.entries {
            if let FatNode::File(data) = node {
                let child = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                let extent = plan.extents[&child];
                if extent.first_cluster != 0 {
                    let start = sector_offset(extent.first_sector);
                    img[start..start + data.len()].copy_from_slice(data);
                }
            }
        }
    }

    Ok(img)
}

/// The file allocation table: the two reserved entries, then one chain per run.
fn fat_table(g: &Geometry, fat_runs: &[(u32, u32)]) -> Vec<u8> {
    let fat_bytes = usize::try_from(g.fat_sectors).expect("FAT size fits memory") * SECTOR;
    let mut fat = vec![0u8; fat_bytes];
    let set = |fat: &mut [u8], cluster: u32, value: u32| match g.fat_type {
        FatType::Fat16 => {
            let at = cluster as usize * 2;
            fat[at..at + 2]
                .copy_from_slice(&(u16::try_from(value & 0xFFFF).expect("masked")).to_le_bytes());
        }
        FatType::Fat32 => {
            let at = cluster as usize * 4;
            fat[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
    };
    let eoc = match g.fat_type {
        FatType::Fat16 => 0xFFFF,
        FatType::Fat32 => 0x0FFF_FFFF,
    };
    set(
        &mut fat,
        0,
        match g.fat_type {
            FatType::Fat16 => 0xFFF8,
            FatType::Fat32 => 0x0FFF_FFF8,
        },
    );
    set(&mut fat, 1, eoc);
    for (first, count) in fat_runs {
        for i in 0..*count {
            let c = first + i;
            set(&mut fat, c, if i + 1 == *count { eoc } else { c + 1 });
        }
    }
    fat
}

/// Writes every directory's entries (volume label or `.`/`..`, then the records).
fn write_directories(
    img: &mut [u8],
    config: &FatConfig,
    g: &Geometry,
    planned: &Planned,
    (date, time): (u16, u16),
) {
    let sector_offset = |sector: u64| usize::try_from(sector).expect("within image") * SECTOR;
    for (path, records) in &planned.dirs {
        let (cluster, _) = planned.dir_clusters[path];
        let mut out: Vec<u8> = Vec::new();
        if path == "/" {
            let mut label = [b' '; 11];
            for (i, b) in config.volume_label.bytes().take(11).enumerate() {
                label[i] = b.to_ascii_uppercase();
            }
            out.extend_from_slice(&short_entry(&label, ATTR_VOLUME_ID, 0, 0, date, time));
        } else {
            let parent = match path.rfind('/') {
                Some(0) | None => "/".to_owned(),
                Some(i) => path[..i].to_owned(),
            };
            let parent_cluster = if parent == "/" {
                0
            } else {
                planned.dir_clusters[&parent].0
            };
            out.extend_from_slice(&short_entry(
                b".          ",
                ATTR_DIRECTORY,
                cluster,
                0,
                date,
                time,
            ));
            out.extend_from_slice(&short_entry(
                b"..         ",
                ATTR_DIRECTORY,
                parent_cluster,
                0,
                date,
                time,
            ));
        }
        for r in records {
            if let Some(long) = &r.long_name {
                out.extend_from_slice(&long_entries(long, &r.short));
            }
            out.extend_from_slice(&short_entry(
                &r.short,
                r.attr,
                r.first_cluster,
                r.size,
                date,
                time,
            ));
        }
        let start = if cluster == 0 {
            sector_offset(g.reserved + 2 * g.fat_sectors)
        } else {
            sector_offset(g.cluster_sector(cluster))
        };
        img[start..start + out.len()].copy_from_slice(&out);
    }
}

fn short_entry(
    name: &[u8; 11],
    attr: u8,
    cluster: u32,
    size: u32,
    date: u16,
    time: u16,
) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    e[14..16].copy_from_slice(&time.to_le_bytes()); // creation time
    e[16..18].copy_from_slice(&date.to_le_bytes()); // creation date
    e[18..20].copy_from_slice(&date.to_le_bytes()); // last access date
    e[20..22].copy_from_slice(&u16::try_from(cluster >> 16).expect("shifted").to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes());
    e[24..26].copy_from_slice(&date.to_le_bytes());
    e[26..28].copy_from_slice(
        &u16::try_from(cluster & 0xFFFF)
            .expect("masked")
            .to_le_bytes(),
    );
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// Long-name entries for `name`, in on-disk order (last part first, flagged 0x40).
fn long_entries(name: &str, short: &[u8; 11]) -> Vec<u8> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let parts = units.len().div_ceil(13);
    let checksum = short_name_checksum(short);
    let mut out = Vec::with_capacity(parts * 32);
    for part in (0..parts).rev() {
        let mut chunk = [0xFFFFu16; 13];
        for (i, slot) in chunk.iter_mut().enumerate() {
            let idx = part * 13 + i;
            if idx < units.len() {
                *slot = units[idx];
            } else if idx == units.len() {
                *slot = 0;
            }
        }
        let mut e = [0u8; 32];
        let seq = u8::try_from(part + 1).expect("at most 20 parts");
        e[0] = if part + 1 == parts { seq | 0x40 } else { seq };
        e[11] = ATTR_LONG_NAME;
        e[13] = checksum;
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (unit, at) in chunk.iter().zip(offsets) {
            e[at..at + 2].copy_from_slice(&unit.to_le_bytes());
        }
        out.extend_from_slice(&e);
    }
    out
}

fn write_boot_sector(img: &mut [u8], g: &Geometry, config: &FatConfig) {
    let b = &mut img[..SECTOR];
    b[0..3].copy_from_slice(match g.fat_type {
        FatType::Fat16 => &[0xEB, 0x3C, 0x90],
        FatType::Fat32 => &[0xEB, 0x58, 0x90],
    });
    b[3..11].copy_from_slice(b"JEOS    ");
    b[11..13].copy_from_slice(&512u16.to_le_bytes());
    b[13] = u8::try_from(g.sectors_per_cluster).expect("<= 64");
    b[14..16].copy_from_slice(&u16::try_from(g.reserved).expect("small").to_le_bytes());
    b[16] = 2;
    let root_entries: u16 = match g.fat_type {
        FatType::Fat16 => 512,
        FatType::Fat32 => 0,
    };
    b[17..19].copy_from_slice(&root_entries.to_le_bytes());
    let (small, huge) = match u16::try_from(g.total_sectors) {
        Ok(s) if g.fat_type == FatType::Fat16 => (s, 0),
        _ => (
            0,
            u32::try_from(g.total_sectors).expect("checked in choose_geometry"),
        ),
    };
    b[19..21].copy_from_slice(&small.to_le_bytes());
    b[21] = 0xF8;
    b[24..26].copy_from_slice(&63u16.to_le_bytes());
    b[26..28].copy_from_slice(&255u16.to_le_bytes());
    b[28..32].copy_from_slice(&config.hidden_sectors.to_le_bytes());
    b[32..36].copy_from_slice(&huge.to_le_bytes());
    let mut label = [b' '; 11];
    for (i, c) in config.volume_label.bytes().take(11).enumerate() {
        label[i] = c.to_ascii_uppercase();
    }
    let fat_sectors = u32::try_from(g.fat_sectors).expect("FAT size fits 32 bits");
    let ext = match g.fat_type {
        FatType::Fat16 => {
            b[22..24].copy_from_slice(
                &u16::try_from(fat_sectors)
                    .expect("a FAT16 FAT has at most 256 sectors")
                    .to_le_bytes(),
            );
            36
        }
        FatType::Fat32 => {
            b[36..40].copy_from_slice(&fat_sectors.to_le_bytes());
            b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root cluster
            b[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo
            b[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
            64
        }
    };
    b[ext] = 0x80; // drive number
    b[ext + 2] = 0x29; // extended boot signature
    b[ext + 3..ext + 7].copy_from_slice(&config.volume_id.to_le_bytes());
    b[ext + 7..ext + 18].copy_from_slice(&label);
    b[ext + 18..ext + 26].copy_from_slice(match g.fat_type {
        FatType::Fat16 => b"FAT16   ",
        FatType::Fat32 => b"FAT32   ",
    });
    // Boot code: INT 18h ("boot failed, try the next device") until a loader is installed.
    b[ext + 26] = 0xCD;
    b[ext + 27] = 0x18;
    b[510] = 0x55;
    b[511] = 0xAA;
}

#[cfg(test)]
#[allow(clippy::print_stderr, reason = "skipped tests say so on stderr")]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn tree() -> FatDir {
        let mut root = FatDir::default();
        root.insert_file("/EFI/BOOT/BOOTX64.EFI", vec![0x4D; 3000])
            .unwrap();
        root.insert_file("/loader/entries/jeos.conf", b"title jeos\n".to_vec())
            .unwrap();
        root.insert_file("/loader/loader.conf", b"default jeos.conf\n".to_vec())
            .unwrap();
        root.insert_file(
            "/vmlinuz",
            (0..100_000u32).map(|i| (i % 251) as u8).collect(),
        )
        .unwrap();
        root.insert_file("/A Long File Name With Spaces.txt", b"long".to_vec())
            .unwrap();
        root.insert_file("/syslinux.cfg", b"DEFAULT linux\n".to_vec())
            .unwrap();
        root.insert_file("/empty", Vec::new()).unwrap();
        root.insert_file("/README", b"x".to_vec()).unwrap();
        root
    }

    fn config(size: u64) -> FatConfig {
        FatConfig {
            size_bytes: size,
            volume_label: "ESP".into(),
            volume_id: 0x1234_5678,
            timestamp: 1_700_000_000,
            hidden_sectors: 2048,
        }
    }

    #[test]
    fn dos_time_of_known_date() {
        // 2023-11-14 22:13:20 UTC
        let (date, time) = dos_date_time(1_700_000_000);
        assert_eq!(date >> 9, 2023 - 1980);
        assert_eq!((date >> 5) & 0xF, 11);
        assert_eq!(date & 0x1F, 14);
        assert_eq!(time >> 11, 22);
        assert_eq!((time >> 5) & 0x3F, 13);
        assert_eq!(time & 0x1F, 10);
        assert_eq!(dos_date_time(0), (1 << 5 | 1, 0), "clamped to 1980-01-01");
    }

    #[test]
    fn checksum_matches_spec_example() {
        // Computed by hand with the spec's rotate-and-add.
        let mut sum = 0u8;
        for c in b"README  TXT" {
            sum = (if sum & 1 != 0 { 0x80 } else { 0 }) + (sum >> 1);
            sum = sum.wrapping_add(*c);
        }
        assert_eq!(short_name_checksum(b"README  TXT"), sum);
    }

    #[test]
    fn short_names() {
        assert_eq!(exact_short_name("README"), Some(*b"README     "));
        assert_eq!(exact_short_name("BOOTX64.EFI"), Some(*b"BOOTX64 EFI"));
        assert_eq!(exact_short_name("vmlinuz"), None);
        let none = |_: &[u8; 11]| false;
        assert_eq!(alias_short_name("vmlinuz", &none), Some(*b"VMLINU~1   "));
        assert_eq!(alias_short_name("initrd.img", &none), Some(*b"INITRD~1IMG"));
        assert_eq!(alias_short_name(".hidden", &none), Some(*b"HIDDEN~1   "));
        let taken = |s: &[u8; 11]| s == b"VMLINU~1   ";
        assert_eq!(alias_short_name("vmlinuz", &taken), Some(*b"VMLINU~2   "));
    }

    #[test]
    fn picks_fat_type_by_cluster_count() {
        assert_eq!(choose_geometry(16 * MIB).unwrap().fat_type, FatType::Fat16);
        assert_eq!(choose_geometry(64 * MIB).unwrap().fat_type, FatType::Fat32);
        let g = choose_geometry(64 * MIB).unwrap();
        assert!(g.clusters >= FAT32_MIN_CLUSTERS);
        assert!(matches!(
            choose_geometry(MIB),
            Err(FatError::VolumeTooSmall { .. })
        ));
    }

    #[test]
    fn files_are_contiguous_and_readable_from_extents() {
        let root = tree();
        let img = build_fat(&config(16 * MIB), &root).unwrap();
        let extent = img.file_extent("/vmlinuz").unwrap();
        let start = usize::try_from(extent.first_sector).unwrap() * SECTOR;
        let FatNode::File(data) = &root.entries["vmlinuz"] else {
            panic!()
        };
        assert_eq!(&img.bytes[start..start + data.len()], data.as_slice());
        assert_eq!(img.file_extent("/empty").unwrap().first_cluster, 0);
    }

    #[test]
    fn too_many_files_is_no_space() {
        let mut root = FatDir::default();
        root.insert_file("/big", vec![1; 20 * 1024 * 1024]).unwrap();
        assert!(matches!(
            build_fat(&config(16 * MIB), &root),
            Err(FatError::NoSpace { .. })
        ));
    }

    #[test]
    fn bad_names_are_rejected() {
        let mut root = FatDir::default();
        root.insert_file("/a:b", vec![]).unwrap();
        assert!(matches!(
            build_fat(&config(16 * MIB), &root),
            Err(FatError::BadName { .. })
        ));
        let mut root = FatDir::default();
        root.insert_file("/Foo", vec![]).unwrap();
        root.insert_file("/foo", vec![]).unwrap();
        assert!(matches!(
            build_fat(&config(16 * MIB), &root),
            Err(FatError::DuplicateName { .. })
        ));
        assert!(FatDir::default().insert_file("/a/../b", vec![]).is_err());
    }

    #[test]
    fn overwrite_checks_length() {
        let mut img = build_fat(&config(16 * MIB), &tree()).unwrap();
        assert!(img.overwrite_file("/README", b"y").is_ok());
        assert!(matches!(
            img.overwrite_file("/README", b"yy"),
            Err(FatError::Overwrite { .. })
        ));
    }

    #[test]
    fn output_is_reproducible() {
        let a = build_fat(&config(40 * MIB), &tree()).unwrap();
        let b = build_fat(&config(40 * MIB), &tree()).unwrap();
        assert_eq!(a, b);
    }

    fn tool(name: &str) -> bool {
        std::process::Command::new(name)
            .arg("--help")
            .output()
            .is_ok()
    }

    fn check_with_tools(size: u64, expected: FatType) {
        if !tool("fsck.fat") || !tool("mtype") {
            crate::skip_test("fsck.fat (dosfstools) or mtype (mtools) not installed");
            return;
        }
        let root = tree();
        let img = build_fat(&config(size), &root).unwrap();
        assert_eq!(img.fat_type, expected);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &img.bytes).unwrap();
        let out = std::process::Command::new("fsck.fat")
            .args(["-n", "-v"])
            .arg(file.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("differ"), "{text}");
        for (path, expect) in [
            ("/vmlinuz", &root.entries["vmlinuz"]),
            (
                "/A Long File Name With Spaces.txt",
                &root.entries["A Long File Name With Spaces.txt"],
            ),
        ] {
            let FatNode::File(expect) = expect else {
                panic!()
            };
            let out = std::process::Command::new("mtype")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(file.path())
                .arg(format!("::{path}"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(&out.stdout, expect, "{path}");
        }
        let out = std::process::Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(file.path())
            .arg("::/loader/entries/jeos.conf")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"title jeos\n");
    }

    #[test]
    fn fat16_passes_fsck_and_mtools() {
        check_with_tools(16 * MIB, FatType::Fat16);
    }

    #[test]
    fn fat32_passes_fsck_and_mtools() {
        check_with_tools(64 * MIB, FatType::Fat32);
    }
}
