//! Reading built images offline, without root, loop devices or mounts.
//!
//! [`open_image`] detects the format of a `.raw`, `.qcow2`, stream-optimized `.vmdk` or
//! `.ova` (the first disk member inside the tar) and returns a [`DiskImage`]: a random-access
//! view of the virtual disk's bytes ([`ByteSource`]). [`DiskImage::partitions`] reads the
//! GPT from it, and [`rootfs::RootFs`] opens the ext4 root partition with the `ext4-view`
//! crate; [`DiskImage::boot_files`] reads the EFI system partition.
//!
//! ```text
//!   file ──▶ FileSource ──┬─ raw ────────────────┐
//!                         ├─ Qcow2Source ────────┤
//!                         ├─ VmdkSource ─────────┼─▶ DiskImage ─▶ GPT ─▶ ESP (FAT) / root (ext4)
//!                         └─ tar member ─▶ (vmdk/qcow2/raw, detected again)
//! ```
//!
//! Every byte of the file is untrusted: offsets and lengths are bounds-checked against the
//! file, tables are bounded by the file size, and decompression is limited to one cluster
//! or grain.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::esp::{BootFiles, EspError};
use crate::gpt::{
    ESP_TYPE, GptEntry, GptError, LINUX_ROOT_X86_64_TYPE, parse_entries, parse_header,
};
use crate::layout::Lba;
use crate::layout::SECTOR_SIZE;

pub mod qcow2;
pub mod rootfs;
pub mod vmdk;

/// Random access to the bytes of a (virtual) disk or a file.
pub trait ByteSource: Send {
    /// Size in bytes.
    fn len(&self) -> u64;

    /// Whether the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`; reading past [`ByteSource::len`] is an error.
    ///
    /// # Errors
    /// IO errors, or [`io::ErrorKind::InvalidData`] for a corrupt container.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// An error for a container whose bytes are inconsistent.
pub(crate) fn invalid_data(offset: u64, reason: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{reason} (at byte {offset})"),
    )
}

/// Checks `offset..offset+len` against `size`.
pub(crate) fn check_range(offset: u64, len: usize, size: u64) -> io::Result<()> {
    let len = u64::try_from(len).map_err(|_| invalid_data(offset, "read too large"))?;
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read of {len} bytes at {offset} past the end ({size} bytes)"),
        )),
    }
}

/// Fills `buf` (the bytes at `offset`) block by block for sparse formats whose data comes
/// in fixed-size blocks (qcow2 clusters, VMDK grains): `fill(index, within, out)` writes
/// the part `out` of block `index` starting `within` bytes into it.
pub(crate) fn read_by_blocks(
    buf: &mut [u8],
    offset: u64,
    block_bytes: u64,
    mut fill: impl FnMut(u64, usize, &mut [u8]) -> io::Result<()>,
) -> io::Result<()> {
    let block =
        usize::try_from(block_bytes).map_err(|_| invalid_data(offset, "block too large"))?;
    let mut done = 0usize;
    while done < buf.len() {
        let position = offset + done as u64;
        let within = usize::try_from(position % block_bytes).expect("below a block");
        let n = (buf.len() - done).min(block - within);
        fill(position / block_bytes, within, &mut buf[done..done + n])?;
        done += n;
    }
    Ok(())
}

/// A window `start..start+len` of a file.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    start: u64,
    len: u64,
}

impl FileSource {
    /// The whole file.
    ///
    /// # Errors
    /// IO errors.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            start: 0,
            len,
        })
    }

    /// `len` bytes from `start` of the same file.
    ///
    /// # Errors
    /// IO errors (cloning the handle), or a window past the end.
    pub fn window(&self, start: u64, len: u64) -> io::Result<Self> {
        let end = start.checked_add(len).filter(|e| *e <= self.len);
        if end.is_none() {
            return Err(invalid_data(
                start,
                "member extends past the end of the file",
            ));
        }
        Ok(Self {
            file: self.file.try_clone()?,
            start: self.start + start,
            len,
        })
    }
}

impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.file.seek(SeekFrom::Start(self.start + offset))?;
        self.file.read_exact(buf)
    }
}

/// Bytes in memory (tests and fuzz targets).
#[derive(Debug, Clone)]
pub struct MemSource(pub Vec<u8>);

impl ByteSource for MemSource {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.len())?;
        let start = usize::try_from(offset).map_err(|_| invalid_data(offset, "offset"))?;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
}

/// The container format of an image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// A flat disk.
    Raw,
    /// qcow2.
    Qcow2,
    /// Stream-optimized VMDK.
    Vmdk,
    /// An OVA (tar) holding a disk.
    Ova,
}

impl ImageFormat {
    /// `raw`, `qcow2`, `vmdk` or `ova`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
            Self::Ova => "ova",
        }
    }
}

/// Errors of [`open_image`] and the readers built on it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file cannot be opened or read.
    #[error("cannot read `{}`", .path.display())]
    Io {
        /// The image file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is none of the supported formats.
    #[error("`{}` is not a disk image (raw with a GPT, qcow2, stream-optimized VMDK or OVA): {what}", .path.display())]
    NotAnImage {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        what: String,
    },
    /// The container is corrupt or uses features this reader does not support.
    #[error("`{}` is not a valid {format} image", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `qcow2`, `vmdk` or `ova`.
        format: &'static str,
        /// What is wrong.
        #[source]
        source: io::Error,
    },
    /// The partition table is missing or invalid.
    #[error("cannot read the partition table of `{}`", .path.display())]
    Gpt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: GptError,
    },
    /// No partition of the wanted type.
    #[error("`{}` has no {what} partition", .path.display())]
    NoPartition {
        /// The file.
        path: PathBuf,
        /// `root` or `EFI system`.
        what: &'static str,
    },
    /// The EFI system partition cannot be read.
    #[error("cannot read the EFI system partition of `{}`", .path.display())]
    Esp {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<EspError>,
    },
}

type SharedSource = Arc<Mutex<Box<dyn ByteSource>>>;

/// An opened image: its format and the virtual disk's bytes.
pub struct DiskImage {
    path: PathBuf,
    format: ImageFormat,
    /// Format of the disk inside an OVA.
    inner_format: ImageFormat,
    file_bytes: u64,
    allocated_bytes: u64,
    disk: SharedSource,
}

impl std::fmt::Debug for DiskImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskImage")
            .field("path", &self.path)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// A partition found in the GPT.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionInfo {
    /// 1-based number.
    pub number: usize,
    /// GPT name.
    pub name: String,
    /// `esp`, `root`, `bios-boot` or the type GUID.
    pub kind: String,
    /// Byte offset on the disk.
    pub offset_bytes: u64,
    /// Size in bytes.
    pub size_bytes: u64,
}

fn sniff(source: &mut dyn ByteSource) -> io::Result<Option<ImageFormat>> {
    let mut head = [0u8; 512];
    let n = usize::try_from(source.len().min(512)).unwrap_or(512);
    source.read_at(0, &mut head[..n])?;
    if head[..4] == crate::qcow2::QCOW2_MAGIC.to_be_bytes() {
        return Ok(Some(ImageFormat::Qcow2));
    }
    if head[..4] == crate::vmdk::VMDK_MAGIC.to_le_bytes() {
        return Ok(Some(ImageFormat::Vmdk));
    }
    if head[257..263] == *b"ustar\0" {
        return Ok(Some(ImageFormat::Ova));
    }
    if source.len() >= 2 * SECTOR_SIZE {
        let mut gpt = [0u8; 8];
        source.read_at(SECTOR_SIZE, &mut gpt)?;
        if gpt == crate::gpt::GPT_SIGNATURE || head[510..512] == [0x55, 0xaa] {
            return Ok(Some(ImageFormat::Raw));
        }
    }
    Ok(None)
}

/// Wraps `file` as the virtual disk of `format` (not an OVA).
fn disk_source(format: ImageFormat, file: FileSource) -> io::Result<Box<dyn ByteSource>> {
    Ok(match format {
        ImageFormat::Raw | ImageFormat::Ova => Box::new(file),
        ImageFormat::Qcow2 => Box::new(qcow2::Qcow2Source::open(Box::new(file))?),
        ImageFormat::Vmdk => Box::new(vmdk::VmdkSource::open(Box::new(file))?),
    })
}

/// The first disk member of an OVA: its window and format.
fn ova_disk(path: &Path, file: &FileSource) -> Result<(FileSource, ImageFormat), ImageError> {
    let entries = crate::ova::list_ova(path).map_err(|e| ImageError::Invalid {
        path: path.to_owned(),
        format: "ova",
        source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    })?;
    for entry in entries
        .iter()
        .filter(|e| e.typeflag == b'0' || e.typeflag == 0)
    {
        let io = |source| ImageError::Io {
            path: path.to_owned(),
            source,
        };
        let mut member = file.window(entry.data_offset, entry.size).map_err(io)?;
        match sniff(&mut member).map_err(io)? {
            Some(format @ (ImageFormat::Vmdk | ImageFormat::Qcow2 | ImageFormat::Raw)) => {
                return Ok((member, format));
            }
            _ => continue,
        }
    }
    Err(ImageError::NotAnImage {
        path: path.to_owned(),
        what: "the OVA holds no disk (.vmdk, .qcow2 or raw member)".into(),
    })
}

/// Opens an image file of any supported format.
///
/// # Errors
/// [`ImageError::NotAnImage`] for other files, [`ImageError::Invalid`] for corrupt ones.
pub fn open_image(path: &Path) -> Result<DiskImage, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(ImageError::NotAnImage {
            path: path.to_owned(),
            what: "it is a directory".into(),
        });
    }
    let mut file = FileSource::open(path).map_err(io)?;
    let file_bytes = file.len();
    let allocated_bytes = {
        use std::os::unix::fs::MetadataExt as _;
        meta.blocks().saturating_mul(512)
    };
    let format = sniff(&mut file)
        .map_err(io)?
        .ok_or_else(|| ImageError::NotAnImage {
            path: path.to_owned(),
            what: describe_non_image(path),
        })?;
    let (inner, inner_format) = if format == ImageFormat::Ova {
        ova_disk(path, &file)?
    } else {
        (file, format)
    };
    let disk = disk_source(inner_format, inner).map_err(|source| {
        if source.kind() == io::ErrorKind::InvalidData
            || source.kind() == io::ErrorKind::UnexpectedEof
        {
            ImageError::Invalid {
                path: path.to_owned(),
                format: inner_format.as_str(),
                source,
            }
        } else {
            io(source)
        }
    })?;
    Ok(DiskImage {
        path: path.to_owned(),
        format,
        inner_format,
        file_bytes,
        allocated_bytes,
        disk: Arc::new(Mutex::new(disk)),
    })
}

fn describe_non_image(path: &Path) -> String {
    let mut head = [0u8; 64];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    if n == 0 {
        "the file is empty".into()
    } else if path.extension().is_some_and(|e| e == "toml") {
        "it is a text file (a recipe? build it with `jeos build` first)".into()
    } else if std::str::from_utf8(head).is_ok() {
        "it is a text file".into()
    } else {
        "no qcow2, VMDK, tar or GPT signature found".into()
    }
}

impl DiskImage {
    /// The image file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its container format.
    #[must_use]
    pub fn format(&self) -> ImageFormat {
        self.format
    }

    /// The format of the disk (inside an OVA, the member's format).
    #[must_use]
    pub fn disk_format(&self) -> ImageFormat {
        self.inner_format
    }

    /// Size of the image file.
    #[must_use]
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Bytes the file occupies on the host file system (less than the size when sparse).
    #[must_use]
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated_bytes
    }

    /// Size of the virtual disk.
    #[must_use]
    pub fn disk_bytes(&self) -> u64 {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn ByteSource>> {
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads bytes of the virtual disk.
    ///
    /// # Errors
    /// [`ImageError::Io`] / [`ImageError::Invalid`].
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        self.lock()
            .read_at(offset, buf)
            .map_err(|source| self.read_error(source))
    }

    fn read_error(&self, source: io::Error) -> ImageError {
        if source.kind() == io::ErrorKind::InvalidData {
            ImageError::Invalid {
                path: self.path.clone(),
                format: self.inner_format.as_str(),
                source,
            }
        } else {
            ImageError::Io {
                path: self.path.clone(),
                source,
            }
        }
    }

    fn gpt_entries(&self) -> Result<Vec<GptEntry>, ImageError> {
        let gpt = |source| ImageError::Gpt {
            path: self.path.clone(),
            source,
        };
        let mut sector = [0u8; 512];
        self.read_at(SECTOR_SIZE, &mut sector)?;
        let header = parse_header(&sector, Lba(1)).map_err(gpt)?;
        let len = usize::try_from(u64::from(header.entry_size) * u64::from(header.entry_count))
            .expect("at most 16 MiB");
        let mut entries = vec![0u8; len];
        self.read_at(
            header.entries_lba.0.saturating_mul(SECTOR_SIZE),
            &mut entries,
        )?;
        parse_entries(&entries, &header).map_err(gpt)
    }

    /// The partitions of the GPT.
    ///
    /// # Errors
    /// [`ImageError::Gpt`] and read errors.
    pub fn partitions(&self) -> Result<Vec<PartitionInfo>, ImageError> {
        Ok(self
            .gpt_entries()?
            .into_iter()
            .map(|e| PartitionInfo {
                number: e.number,
                kind: if e.type_guid == ESP_TYPE {
                    "esp".into()
                } else if e.type_guid == LINUX_ROOT_X86_64_TYPE {
                    "root".into()
                } else if e.type_guid == crate::gpt::BIOS_BOOT_TYPE {
                    "bios-boot".into()
                } else {
                    e.type_guid.to_string()
                },
                name: e.name,
                offset_bytes: e.first_lba.0.saturating_mul(SECTOR_SIZE),
                size_bytes: (e.last_lba.0.saturating_sub(e.first_lba.0) + 1)
                    .saturating_mul(SECTOR_SIZE),
            })
            .collect())
    }

    /// A window of the virtual disk for partition `kind` (`esp` or `root`).
    fn partition_window(&self, kind: &'static str) -> Result<PartitionReader, ImageError> {
        let part = self
            .partitions()?
            .into_iter()
            .find(|p| p.kind == kind)
            .ok_or_else(|| ImageError::NoPartition {
                path: self.path.clone(),
                what: if kind == "esp" { "EFI system" } else { "root" },
            })?;
        let disk_len = self.disk_bytes();
        if part
            .offset_bytes
            .checked_add(part.size_bytes)
            .is_none_or(|e| e > disk_len)
        {
            return Err(ImageError::Gpt {
                path: self.path.clone(),
                source: GptError::BadHeader {
                    lba: Lba(1),
                    what: "a partition extends past the end of the disk",
                },
            });
        }
        Ok(PartitionReader {
            disk: Arc::clone(&self.disk),
            start: part.offset_bytes,
            len: part.size_bytes,
            position: 0,
        })
    }

    /// Kernel, initramfs and command line from the EFI system partition.
    ///
    /// # Errors
    /// [`ImageError::Esp`], [`ImageError::NoPartition`].
    pub fn boot_files(&self) -> Result<BootFiles, ImageError> {
        let esp = self.partition_window("esp")?;
        let len = esp.len;
        crate::esp::read_boot_files_from(esp, &self.path, len).map_err(|source| ImageError::Esp {
            path: self.path.clone(),
            source: Box::new(source),
        })
    }

    /// The file at `path` (absolute, `/` separators) on the EFI system partition, at most
    /// `max_bytes` (the lock file and SBOM jeos stores there).
    ///
    /// # Errors
    /// [`ImageError::Esp`], [`ImageError::NoPartition`].
    pub fn esp_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, ImageError> {
        let esp = self.partition_window("esp")?;
        let len = esp.len;
        crate::esp::read_esp_file_from(esp, &self.path, len, path, max_bytes).map_err(|source| {
            ImageError::Esp {
                path: self.path.clone(),
                source: Box::new(source),
            }
        })
    }

    /// Opens the ext4 root file system.
    ///
    /// # Errors
    /// [`ImageError::NoPartition`], or [`rootfs::RootFsError`] wrapped.
    pub fn root_fs(&self) -> Result<rootfs::RootFs, rootfs::RootFsError> {
        let window = self.partition_window("root")?;
        rootfs::RootFs::load(window, &self.path)
    }
}

/// A partition of a [`DiskImage`]: `Read + Seek` for the FAT reader, [`ext4_view::Ext4Read`]
/// for ext4.
pub struct PartitionReader {
    disk: SharedSource,
    start: u64,
    len: u64,
    position: u64,
}

impl PartitionReader {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read_at(self.start + offset, buf)
    }
}

impl Read for PartitionReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.position);
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        self.read_exact_at(self.position, &mut buf[..n])?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for PartitionReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = target.ok_or_else(|| invalid_data(0, "seek before the start"))?;
        Ok(self.position)
    }
}

impl ext4_view::Ext4Read for PartitionReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.read_exact_at(start_byte, dst)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a seed input for fuzz target `target` (`fuzz/corpus/<target>/`, ignored by git):
    /// the fuzz crate's corpora come from these unit-test inputs.
    pub(crate) fn write_seed(target: &str, name: &str, bytes: &[u8]) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn non_images_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let recipe = dir.path().join("site.toml");
        std::fs::write(&recipe, "[appliance]\nname = \"x\"\n").unwrap();
        let err = open_image(&recipe).unwrap_err();
        assert!(
            matches!(&err, ImageError::NotAnImage { what, .. } if what.contains("text file")),
            "{err:?}"
        );
        let err = open_image(dir.path()).unwrap_err();
        assert!(matches!(&err, ImageError::NotAnImage { what, .. } if what.contains("directory")));
        let empty = dir.path().join("empty.raw");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            open_image(&empty),
            Err(ImageError::NotAnImage { .. })
        ));
        assert!(matches!(
            open_image(&dir.path().join("missing.qcow2")),
            Err(ImageError::Io { .. })
        ));
    }

    #[test]
    fn corrupt_containers_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.qcow2");
        let mut bytes = crate::qcow2::QCOW2_MAGIC.to_be_bytes().to_vec();
        bytes.resize(4096, 0);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            open_image(&path),
            Err(ImageError::Invalid {
                format: "qcow2",
                ..
            })
        ));
    }

    #[test]
    fn mem_and_file_sources_check_ranges() {
        let mut mem = MemSource(vec![1, 2, 3]);
        let mut buf = [0u8; 2];
        mem.read_at(1, &mut buf).unwrap();
        assert_eq!(buf, [2, 3]);
        assert!(mem.read_at(2, &mut buf).is_err());
        assert!(mem.read_at(u64::MAX, &mut buf).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = FileSource::open(&path).unwrap();
        let mut window = file.window(2, 5).unwrap();
        let mut five = [0u8; 5];
        window.read_at(0, &mut five).unwrap();
        assert_eq!(&five, b"23456");
        assert!(window.read_at(1, &mut five).is_err());
        assert!(file.window(8, 5).is_err());
    }
}
