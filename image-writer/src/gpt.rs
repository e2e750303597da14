//! GUID Partition Table (UEFI spec 2.10 §5.3) and the protective MBR (§5.2.3).
//!
//! [`encode_gpt`] turns a [`DiskLayout`] into the bytes of the protective MBR, the primary
//! header and entry array, and the backup entry array and header (pure); [`write_gpt`] puts
//! them into a disk file. [`read_gpt`] parses both copies back and validates signatures,
//! CRC32s and their agreement; the tests use it, and so can `jeos inspect`.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::layout::{
    DiskLayout, GPT_ENTRY_COUNT, GPT_ENTRY_SECTORS, GPT_ENTRY_SIZE, Lba, SECTOR_SIZE,
};

/// A GUID, stored in RFC 4122 (big-endian, "as printed") byte order. GPT stores the first
/// three fields little-endian; [`Guid::to_gpt_bytes`] does that conversion.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds a GUID from its printed fields (`d1-d2-d3-d4[0..2]-d4[2..8]`).
    #[must_use]
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_be_bytes();
        let b = d2.to_be_bytes();
        let c = d3.to_be_bytes();
        Self([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// The mixed-endian on-disk form used by GPT and EFI.
    #[must_use]
    pub fn to_gpt_bytes(self) -> [u8; 16] {
        let g = self.0;
        [
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15],
        ]
    }

    /// Inverse of [`Guid::to_gpt_bytes`].
    #[must_use]
    pub fn from_gpt_bytes(b: [u8; 16]) -> Self {
        Self([
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ])
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// EFI system partition type (UEFI spec table 5-7).
pub const ESP_TYPE: Guid = Guid::from_fields(
    0xC12A_7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);
/// Root partition (x86-64), Discoverable Partitions Specification.
pub const LINUX_ROOT_X86_64_TYPE: Guid = Guid::from_fields(
    0x4F68_BCE3,
    0xE8CD,
    0x4DB1,
    [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09],
);
/// BIOS boot partition ("Hah!IdontNeedEFI"), used by GRUB i386-pc.
pub const BIOS_BOOT_TYPE: Guid = Guid::from_fields(
    0x2168_6148,
    0x6449,
    0x6E6F,
    [0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49],
);

/// "EFI PART", the header signature.
pub const GPT_SIGNATURE: [u8; 8] = *b"EFI PART";
/// GPT revision 1.0.
pub const GPT_REVISION: u32 = 0x0001_0000;
/// Size of the header fields covered by the header CRC.
pub const GPT_HEADER_SIZE: u32 = 92;
/// Bytes available for boot code at the start of the MBR.
pub const MBR_BOOT_CODE_SIZE: usize = 440;
/// Length of a partition name in UTF-16 code units.
pub const NAME_UNITS: usize = 36;

/// Errors from encoding, writing or reading a GPT.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// A partition name does not fit in 36 UTF-16 code units.
    #[error("partition name `{name}` is longer than 36 UTF-16 code units")]
    NameTooLong {
        /// The name.
        name: String,
    },
    /// More partitions than entries.
    #[error("{count} partitions do not fit in {GPT_ENTRY_COUNT} entries")]
    TooManyPartitions {
        /// Number of partitions.
        count: usize,
    },
    /// MBR boot code is longer than 440 bytes.
    #[error("MBR boot code is {len} bytes, at most 440 fit")]
    BootCodeTooLong {
        /// Its length.
        len: usize,
    },
    /// Reading or writing the disk failed.
    #[error("I/O on disk `{path}`")]
    Io {
        /// The disk.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The header at `lba` lacks the `EFI PART` signature.
    #[error("no GPT signature at {lba}")]
    BadSignature {
        /// Where the header was expected.
        lba: Lba,
    },
    /// A header field is out of range.
    #[error("GPT header at {lba}: {what}")]
    BadHeader {
        /// Header location.
        lba: Lba,
        /// What is wrong.
        what: &'static str,
    },
    /// The header CRC does not match.
    #[error("GPT header CRC mismatch at {lba}: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        /// Header location.
        lba: Lba,
        /// CRC in the header.
        stored: u32,
        /// CRC computed over the header.
        computed: u32,
    },
    /// The partition entry array CRC does not match.
    #[error(
        "GPT entry array CRC mismatch for header at {lba}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    EntriesCrc {
        /// Header location.
        lba: Lba,
        /// CRC in the header.
        stored: u32,
        /// CRC computed over the entries.
        computed: u32,
    },
    /// Primary and backup tables differ.
    #[error("primary and backup GPT disagree: {what}")]
    BackupMismatch {
        /// What differs.
        what: &'static str,
    },
    /// The protective MBR is missing or wrong.
    #[error("protective MBR: {what}")]
    BadProtectiveMbr {
        /// What is wrong.
        what: &'static str,
    },
}

/// The bytes of a complete GPT, ready to be written at fixed offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptImage {
    /// LBA 0: protective MBR (with boot code if given).
    pub protective_mbr: [u8; 512],
    /// LBA 1..=33: primary header sector followed by the entry array.
    pub primary: Vec<u8>,
    /// The backup entry array followed by the backup header sector.
    pub backup: Vec<u8>,
    /// Byte offset of [`GptImage::backup`] on the disk.
    pub backup_offset_bytes: u64,
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}
fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

/// Encodes the partition entry array (128 entries of 128 bytes).
///
/// # Errors
/// [`GptError::NameTooLong`], [`GptError::TooManyPartitions`].
pub fn encode_entries(layout: &DiskLayout) -> Result<Vec<u8>, GptError> {
    let entry_size = GPT_ENTRY_SIZE as usize;
    let mut entries = vec![0u8; GPT_ENTRY_COUNT as usize * entry_size];
    if layout.partitions.len() > GPT_ENTRY_COUNT as usize {
        return Err(GptError::TooManyPartitions {
            count: layout.partitions.len(),
        });
    }
    for (i, p) in layout.partitions.iter().enumerate() {
        let e = &mut entries[i * entry_size..(i + 1) * entry_size];
        e[0..16].copy_from_slice(&p.type_guid.to_gpt_bytes());
        e[16..32].copy_from_slice(&p.unique_guid.to_gpt_bytes());
        put_u64(e, 32, p.first_lba.0);
        put_u64(e, 40, p.last_lba.0);
        put_u64(e, 48, p.attributes);
        let units: Vec<u16> = p.name.encode_utf16().collect();
        if units.len() > NAME_UNITS {
            return Err(GptError::NameTooLong {
                name: p.name.clone(),
            });
        }
        for (j, unit) in units.iter().enumerate() {
            put_u16(e, 56 + 2 * j, *unit);
        }
    }
    Ok(entries)
}

fn encode_header(layout: &DiskLayout, backup: bool, entries_crc: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    let (my, alternate, entries_lba) = if backup {
        (
            layout.backup_header,
            layout.primary_header,
            layout.backup_entries,
        )
    } else {
        (
            layout.primary_header,
            layout.backup_header,
            layout.primary_entries,
        )
    };
    h[0..8].copy_from_slice(&GPT_SIGNATURE);
    put_u32(&mut h, 8, GPT_REVISION);
    put_u32(&mut h, 12, GPT_HEADER_SIZE);
    put_u64(&mut h, 24, my.0);
    put_u64(&mut h, 32, alternate.0);
    put_u64(&mut h, 40, layout.first_usable.0);
    put_u64(&mut h, 48, layout.last_usable.0);
    h[56..72].copy_from_slice(&layout.disk_guid.to_gpt_bytes());
    put_u64(&mut h, 72, entries_lba.0);
    put_u32(&mut h, 80, GPT_ENTRY_COUNT);
    put_u32(&mut h, 84, GPT_ENTRY_SIZE);
    put_u32(&mut h, 88, entries_crc);
    let crc = crc32fast::hash(&h[..GPT_HEADER_SIZE as usize]);
    put_u32(&mut h, 16, crc);
    h
}

/// The protective MBR (UEFI spec §5.2.3): one partition of type 0xEE from LBA 1 to the end
/// of the disk (size capped at 0xFFFFFFFF), boot indicator 0, and optional boot code
/// (for example SYSLINUX's `gptmbr.bin`) in the first 440 bytes.
///
/// # Errors
/// [`GptError::BootCodeTooLong`].
pub fn encode_protective_mbr(
    total_sectors: u64,
    boot_code: Option<&[u8]>,
) -> Result<[u8; 512], GptError> {
    let mut mbr = [0u8; 512];
    if let Some(code) = boot_code {
        if code.len() > MBR_BOOT_CODE_SIZE {
            return Err(GptError::BootCodeTooLong { len: code.len() });
        }
        mbr[..code.len()].copy_from_slice(code);
    }
    let entry = &mut mbr[446..462];
    entry[0] = 0x00; // not active, as §5.2.3 requires
    entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    entry[4] = 0xEE;
    entry[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    put_u32(entry, 8, 1);
    let size = u32::try_from(total_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
    put_u32(entry, 12, size);
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    Ok(mbr)
}

/// Encodes the protective MBR and both GPT copies for `layout` (pure).
///
/// # Errors
/// See [`encode_entries`] and [`encode_protective_mbr`].
pub fn encode_gpt(layout: &DiskLayout, mbr_boot_code: Option<&[u8]>) -> Result<GptImage, GptError> {
    let entries = encode_entries(layout)?;
    let entries_crc = crc32fast::hash(&entries);
    let mut primary = encode_header(layout, false, entries_crc).to_vec();
    primary.extend_from_slice(&entries);
    let mut backup = entries;
    backup.extend_from_slice(&encode_header(layout, true, entries_crc));
    Ok(GptImage {
        protective_mbr: encode_protective_mbr(layout.total_sectors(), mbr_boot_code)?,
        primary,
        backup,
        backup_offset_bytes: layout.backup_entries.offset_bytes(),
    })
}

/// Writes the GPT for `layout` into an existing disk file of the right size.
///
/// # Errors
/// Encoding errors and [`GptError::Io`].
pub fn write_gpt(
    path: &Path,
    layout: &DiskLayout,
    mbr_boot_code: Option<&[u8]>,
) -> Result<(), GptError> {
    let image = encode_gpt(layout, mbr_boot_code)?;
    let io = |source| GptError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::options().write(true).open(path).map_err(io)?;
    file.write_all(&image.protective_mbr).map_err(io)?;
    file.write_all(&image.primary).map_err(io)?;
    file.seek(SeekFrom::Start(image.backup_offset_bytes))
        .map_err(io)?;
    file.write_all(&image.backup).map_err(io)?;
    Ok(())
}

/// A decoded GPT header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptHeader {
    /// Where this header is.
    pub my_lba: Lba,
    /// Where the other copy is.
    pub alternate_lba: Lba,
    /// First usable sector.
    pub first_usable: Lba,
    /// Last usable sector.
    pub last_usable: Lba,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Start of the entry array.
    pub entries_lba: Lba,
    /// Number of entries.
    pub entry_count: u32,
    /// Size of one entry.
    pub entry_size: u32,
    /// CRC32 of the entry array.
    pub entries_crc: u32,
}

/// A decoded, used partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptEntry {
    /// 1-based partition number.
    pub number: usize,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID.
    pub unique_guid: Guid,
    /// First sector.
    pub first_lba: Lba,
    /// Last sector (inclusive).
    pub last_lba: Lba,
    /// Attribute bits.
    pub attributes: u64,
    /// Name.
    pub name: String,
}

/// A GPT read back from a disk, both copies validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptTable {
    /// The primary header.
    pub header: GptHeader,
    /// Used entries.
    pub entries: Vec<GptEntry>,
    /// The 440 bytes of MBR boot code.
    pub mbr_boot_code: Vec<u8>,
}

/// Parses and validates one header sector found at `lba` (pure).
///
/// # Errors
/// [`GptError::BadSignature`], [`GptError::BadHeader`], [`GptError::HeaderCrc`].
pub fn parse_header(sector: &[u8], lba: Lba) -> Result<GptHeader, GptError> {
    if sector.len() < 512 || sector[0..8] != GPT_SIGNATURE {
        return Err(GptError::BadSignature { lba });
    }
    let size = get_u32(sector, 12);
    if !(GPT_HEADER_SIZE..=512).contains(&size) {
        return Err(GptError::BadHeader {
            lba,
            what: "header size out of range",
        });
    }
    let size = usize::try_from(size).map_err(|_| GptError::BadHeader {
        lba,
        what: "header size out of range",
    })?;
    let stored = get_u32(sector, 16);
    let mut copy = sector[..size].to_vec();
    copy[16..20].fill(0);
    let computed = crc32fast::hash(&copy);
    if stored != computed {
        return Err(GptError::HeaderCrc {
            lba,
            stored,
            computed,
        });
    }
    let header = GptHeader {
        my_lba: Lba(get_u64(sector, 24)),
        alternate_lba: Lba(get_u64(sector, 32)),
        first_usable: Lba(get_u64(sector, 40)),
        last_usable: Lba(get_u64(sector, 48)),
        disk_guid: Guid::from_gpt_bytes(sector[56..72].try_into().expect("16-byte slice")),
        entries_lba: Lba(get_u64(sector, 72)),
        entry_count: get_u32(sector, 80),
        entry_size: get_u32(sector, 84),
        entries_crc: get_u32(sector, 88),
    };
    if header.my_lba != lba {
        return Err(GptError::BadHeader {
            lba,
            what: "my-LBA field does not point at the header",
        });
    }
    if header.entry_size < 128 || !header.entry_size.is_multiple_of(8) || header.entry_size > 4096 {
        return Err(GptError::BadHeader {
            lba,
            what: "entry size is not a multiple of 8 in 128..=4096",
        });
    }
    if header.entry_count == 0 || header.entry_count > 4096 {
        return Err(GptError::BadHeader {
            lba,
            what: "entry count out of range",
        });
    }
    Ok(header)
}

/// Parses the used entries of an entry array after checking its CRC (pure).
///
/// # Errors
/// [`GptError::EntriesCrc`], [`GptError::BadHeader`].
pub fn parse_entries(bytes: &[u8], header: &GptHeader) -> Result<Vec<GptEntry>, GptError> {
    let entry_size = header.entry_size as usize;
    let len = entry_size * header.entry_count as usize;
    let Some(bytes) = bytes.get(..len) else {
        return Err(GptError::BadHeader {
            lba: header.my_lba,
            what: "entry array is truncated",
        });
    };
    let computed = crc32fast::hash(bytes);
    if computed != header.entries_crc {
        return Err(GptError::EntriesCrc {
            lba: header.my_lba,
            stored: header.entries_crc,
            computed,
        });
    }
    let mut entries = Vec::new();
    for (i, e) in bytes.chunks_exact(entry_size).enumerate() {
        let type_guid = Guid::from_gpt_bytes(e[0..16].try_into().expect("16-byte slice"));
        if type_guid.0 == [0; 16] {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0)
            .collect();
        entries.push(GptEntry {
            number: i + 1,
            type_guid,
            unique_guid: Guid::from_gpt_bytes(e[16..32].try_into().expect("16-byte slice")),
            first_lba: Lba(get_u64(e, 32)),
            last_lba: Lba(get_u64(e, 40)),
            attributes: get_u64(e, 48),
            name: String::from_utf16_lossy(&units),
        });
    }
    Ok(entries)
}

fn read_at(file: &mut File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, GptError> {
    let io = |source| GptError::Io {
        path: path.to_owned(),
        source,
    };
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    file.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

/// Reads the protective MBR and both GPT copies of a disk file and validates them.
///
/// # Errors
/// Any [`GptError`] describing the first problem found.
pub fn read_gpt(path: &Path) -> Result<GptTable, GptError> {
    let io = |source| GptError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let disk_size = file.metadata().map_err(io)?.len();
    let total_sectors = disk_size / SECTOR_SIZE;
    let mbr = read_at(&mut file, path, 0, 512)?;
    if mbr[510..512] != [0x55, 0xAA] {
        return Err(GptError::BadProtectiveMbr {
            what: "missing 0x55AA signature",
        });
    }
    if mbr[446 + 4] != 0xEE || get_u32(&mbr, 446 + 8) != 1 {
        return Err(GptError::BadProtectiveMbr {
            what: "first partition is not type 0xEE starting at LBA 1",
        });
    }
    let expected_size = u32::try_from(total_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
    if get_u32(&mbr, 446 + 12) != expected_size {
        return Err(GptError::BadProtectiveMbr {
            what: "0xEE partition does not cover the disk",
        });
    }
    let primary_sector = read_at(&mut file, path, SECTOR_SIZE, 512)?;
    let primary = parse_header(&primary_sector, Lba(1))?;
    let entries_len = primary.entry_size as usize * primary.entry_count as usize;
    let primary_entries = read_at(
        &mut file,
        path,
        primary.entries_lba.offset_bytes(),
        entries_len,
    )?;
    let entries = parse_entries(&primary_entries, &primary)?;

    let backup_lba = Lba(total_sectors.saturating_sub(1));
    if primary.alternate_lba != backup_lba {
        return Err(GptError::BadHeader {
            lba: Lba(1),
            what: "alternate LBA is not the last sector of the disk",
        });
    }
    let backup_sector = read_at(&mut file, path, backup_lba.offset_bytes(), 512)?;
    let backup = parse_header(&backup_sector, backup_lba)?;
    if backup.entries_lba.0 + GPT_ENTRY_SECTORS > backup_lba.0 {
        return Err(GptError::BadHeader {
            lba: backup_lba,
            what: "backup entry array overlaps the backup header",
        });
    }
    let backup_entries = read_at(
        &mut file,
        path,
        backup.entries_lba.offset_bytes(),
        entries_len,
    )?;
    parse_entries(&backup_entries, &backup)?;
    if backup_entries != primary_entries {
        return Err(GptError::BackupMismatch {
            what: "entry arrays differ",
        });
    }
    if backup.disk_guid != primary.disk_guid
        || backup.first_usable != primary.first_usable
        || backup.last_usable != primary.last_usable
        || backup.alternate_lba != Lba(1)
    {
        return Err(GptError::BackupMismatch {
            what: "header fields differ",
        });
    }
    for e in &entries {
        if e.first_lba < primary.first_usable
            || e.last_lba > primary.last_usable
            || e.last_lba < e.first_lba
        {
            return Err(GptError::BadHeader {
                lba: Lba(1),
                what: "a partition lies outside the usable range",
            });
        }
    }
    Ok(GptTable {
        header: primary,
        entries,
        mbr_boot_code: mbr[..MBR_BOOT_CODE_SIZE].to_vec(),
    })
}

#[cfg(test)]
#[allow(clippy::print_stderr, reason = "skipped tests say so on stderr")]
mod tests {
    use super::*;
    use crate::layout::{DiskSpec, PartitionRole, Seed};

    const MIB: u64 = 1024 * 1024;

    fn layout() -> DiskLayout {
        DiskLayout::plan(&DiskSpec {
            esp_size_bytes: 2 * MIB,
            root_size_bytes: 3 * MIB,
            bios_boot: true,
            esp_legacy_bootable: true,
            seed: Seed::from_bytes(b"gpt"),
        })
        .unwrap()
    }

    fn write_disk(layout: &DiskLayout, code: Option<&[u8]>) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(layout.total_size_bytes).unwrap();
        write_gpt(file.path(), layout, code).unwrap();
        file
    }

    #[test]
    fn type_guids_print_as_in_the_specs() {
        assert_eq!(ESP_TYPE.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(
            LINUX_ROOT_X86_64_TYPE.to_string(),
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
        );
        assert_eq!(
            BIOS_BOOT_TYPE.to_string(),
            "21686148-6449-6e6f-744e-656564454649"
        );
        // On disk the ESP type starts 28 73 2a c1 (UEFI spec example).
        assert_eq!(&ESP_TYPE.to_gpt_bytes()[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(Guid::from_gpt_bytes(ESP_TYPE.to_gpt_bytes()), ESP_TYPE);
    }

    #[test]
    fn write_then_read_round_trips() {
        let layout = layout();
        let code = [0xAAu8; 440];
        let disk = write_disk(&layout, Some(&code));
        let table = read_gpt(disk.path()).unwrap();
        assert_eq!(table.header.disk_guid, layout.disk_guid);
        assert_eq!(table.mbr_boot_code, code.to_vec());
        assert_eq!(table.entries.len(), 3);
        for (entry, plan) in table.entries.iter().zip(&layout.partitions) {
            assert_eq!(entry.type_guid, plan.type_guid);
            assert_eq!(entry.unique_guid, plan.unique_guid);
            assert_eq!(entry.first_lba, plan.first_lba);
            assert_eq!(entry.last_lba, plan.last_lba);
            assert_eq!(entry.attributes, plan.attributes);
            assert_eq!(entry.name, plan.name);
        }
        let esp = &table.entries[1];
        assert_eq!(esp.type_guid, PartitionRole::Esp.type_guid());
        assert_eq!(esp.attributes & 4, 4, "legacy BIOS bootable");
    }

    #[test]
    fn protective_mbr_caps_size() {
        let mbr = encode_protective_mbr(1 << 40, None).unwrap();
        assert_eq!(get_u32(&mbr, 446 + 12), u32::MAX);
        assert_eq!(mbr[446 + 4], 0xEE);
        assert_eq!(mbr[446], 0);
        let small = encode_protective_mbr(100, None).unwrap();
        assert_eq!(get_u32(&small, 446 + 12), 99);
    }

    #[test]
    fn boot_code_too_long_is_rejected() {
        let err = encode_protective_mbr(100, Some(&[0u8; 441])).unwrap_err();
        assert!(matches!(err, GptError::BootCodeTooLong { len: 441 }));
    }

    #[test]
    fn name_too_long_is_rejected() {
        let mut layout = layout();
        layout.partitions[0].name = "x".repeat(37);
        assert!(matches!(
            encode_entries(&layout),
            Err(GptError::NameTooLong { .. })
        ));
    }

    #[test]
    fn corrupted_header_crc_is_detected() {
        let layout = layout();
        let image = encode_gpt(&layout, None).unwrap();
        assert!(parse_header(&image.primary[..512], Lba(1)).is_ok());
        let mut header = image.primary[..512].to_vec();
        header[40] ^= 1;
        assert!(matches!(
            parse_header(&header, Lba(1)),
            Err(GptError::HeaderCrc { .. })
        ));
        let mut bad = image.primary[..512].to_vec();
        bad[0] = b'X';
        assert!(matches!(
            parse_header(&bad, Lba(1)),
            Err(GptError::BadSignature { .. })
        ));
        assert!(matches!(
            parse_header(&image.primary[..512], Lba(7)),
            Err(GptError::BadHeader { .. })
        ));
    }

    #[test]
    fn corrupted_entries_are_detected() {
        let layout = layout();
        let disk = write_disk(&layout, None);
        let mut bytes = std::fs::read(disk.path()).unwrap();
        bytes[1024 + 60] ^= 0xFF; // a byte of the first entry's name
        std::fs::write(disk.path(), &bytes).unwrap();
        assert!(matches!(
            read_gpt(disk.path()),
            Err(GptError::EntriesCrc { .. })
        ));
    }

    #[test]
    fn missing_backup_is_detected() {
        let layout = layout();
        let disk = write_disk(&layout, None);
        let mut bytes = std::fs::read(disk.path()).unwrap();
        let n = bytes.len();
        bytes[n - 512..].fill(0);
        std::fs::write(disk.path(), &bytes).unwrap();
        assert!(matches!(
            read_gpt(disk.path()),
            Err(GptError::BadSignature { .. })
        ));
    }

    #[test]
    fn sgdisk_verifies_the_table() {
        if std::process::Command::new("sgdisk")
            .arg("--version")
            .output()
            .is_err()
        {
            crate::skip_test("sgdisk (package gdisk) not installed");
            return;
        }
        let layout = layout();
        let disk = write_disk(&layout, None);
        let out = std::process::Command::new("sgdisk")
            .arg("-v")
            .arg(disk.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("No problems found"), "{text}");
    }
}
