//! Fixed VHD (Microsoft "Virtual Hard Disk Image Format Specification" 1.0): the raw disk
//! byte for byte, then a 512-byte footer. Azure and Hyper-V import this form.
//!
//! Choices:
//! - The virtual size is the raw disk's size, which must be a whole number of MiB (Azure
//!   refuses anything else).
//! - Geometry: 16 heads x 128 sectors per track (2048 sectors = 1 MiB per cylinder), so
//!   cylinders x heads x sectors is *exactly* the disk size up to 65535 MiB; readers that
//!   size the disk from the geometry (Virtual PC, QEMU for creator `jeos`) and readers that
//!   use `current_size` (Hyper-V, Azure) agree. Larger disks get the maximum geometry
//!   65535/16/255, which readers take as "use `current_size`".
//! - The timestamp is SOURCE_DATE_EPOCH, the unique id is derived from the disk's SHA-256
//!   (an RFC 4122 version-4-shaped id), so the same disk gives the same file.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ova::atomic::AtomicFile;
use crate::ova::reporter::PublishReporter;

const MIB: u64 = 1024 * 1024;
/// Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z).
const VHD_EPOCH: i64 = 946_684_800;
/// Largest disk the exact 16 x 128 geometry describes (65535 cylinders of 1 MiB).
const EXACT_GEOMETRY_LIMIT: u64 = 65_535 * MIB;

/// Errors of the VHD writer.
#[derive(Debug, thiserror::Error)]
pub enum VhdError {
    /// Reading the raw disk or writing the VHD failed.
    #[error("i/o error on `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The raw disk is not a whole number of MiB.
    #[error("the raw disk is {size} bytes, not a whole number of MiB")]
    Unaligned {
        /// Its size.
        size: u64,
    },
    /// The raw disk changed size while it was copied.
    #[error("the raw disk changed while it was copied")]
    Changed,
}

/// The VHD footer fields jeos chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhdFooter {
    /// Disk size in bytes (`original_size` = `current_size`).
    pub size_bytes: u64,
    /// SOURCE_DATE_EPOCH (Unix seconds); clamped to the VHD epoch.
    pub epoch: i64,
    /// Unique id.
    pub unique_id: [u8; 16],
}

/// Cylinders, heads, sectors per track for a disk of `size_bytes`.
pub fn geometry(size_bytes: u64) -> (u16, u8, u8) {
    if size_bytes <= EXACT_GEOMETRY_LIMIT && size_bytes.is_multiple_of(MIB) {
        let cylinders = u16::try_from(size_bytes / MIB).expect("at most 65535 MiB");
        (cylinders, 16, 128)
    } else {
        (65_535, 16, 255)
    }
}

/// The ones' complement of the byte sum with the checksum field taken as zero.
fn checksum(footer: &[u8; 512]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |acc, (_, b)| acc.wrapping_add(u32::from(*b)));
    !sum
}

/// Encodes the 512-byte footer (all fields big-endian).
pub fn encode_footer(footer: &VhdFooter) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit always set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version 1.0
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none (fixed disk)
    let seconds = u32::try_from((footer.epoch - VHD_EPOCH).max(0)).unwrap_or(u32::MAX);
    f[24..28].copy_from_slice(&seconds.to_be_bytes());
    f[28..32].copy_from_slice(b"jeos");
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // creator version
    f[36..40].copy_from_slice(b"Wi2k"); // creator host OS: the spec knows Wi2k and Mac only
    f[40..48].copy_from_slice(&footer.size_bytes.to_be_bytes());
    f[48..56].copy_from_slice(&footer.size_bytes.to_be_bytes());
    let (cylinders, heads, sectors) = geometry(footer.size_bytes);
    f[56..58].copy_from_slice(&cylinders.to_be_bytes());
    f[58] = heads;
    f[59] = sectors;
    f[60..64].copy_from_slice(&2u32.to_be_bytes()); // disk type: fixed
    f[68..84].copy_from_slice(&footer.unique_id);
    // saved state (84) 0, reserved zero.
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// A decoded footer, as [`read_footer`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FooterInfo {
    /// `current_size`.
    pub size_bytes: u64,
    /// Disk type (2 = fixed).
    pub disk_type: u32,
    /// Whether the stored checksum matches.
    pub checksum_ok: bool,
    /// Geometry.
    pub geometry: (u16, u8, u8),
}

/// Decodes a footer; `None` when the cookie is not `conectix`.
pub fn read_footer(bytes: &[u8; 512]) -> Option<FooterInfo> {
    if &bytes[0..8] != b"conectix" {
        return None;
    }
    let be32 = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let size = u64::from_be_bytes(bytes[48..56].try_into().expect("8 bytes"));
    Some(FooterInfo {
        size_bytes: size,
        disk_type: be32(60),
        checksum_ok: be32(64) == checksum(bytes),
        geometry: (
            u16::from_be_bytes([bytes[56], bytes[57]]),
            bytes[58],
            bytes[59],
        ),
    })
}

/// Unique id from the disk digest, shaped as an RFC 4122 version-4 id.
fn unique_id(digest: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Copies `raw` to `out` (sparse where the raw disk holds zeros) while hashing it.
/// Returns the bytes copied and the digest.
pub(crate) fn copy_sparse(
    raw: &Path,
    out: &mut (impl Write + Seek),
    out_path: &Path,
    reporter: &dyn PublishReporter,
    name: &str,
) -> Result<(u64, [u8; 32]), VhdError> {
    let in_err = |source| VhdError::Io {
        path: raw.to_path_buf(),
        source,
    };
    let out_err = |source| VhdError::Io {
        path: out_path.to_path_buf(),
        source,
    };
    let mut src = File::open(raw).map_err(in_err)?;
    let size = src.metadata().map_err(in_err)?.len();
    reporter.on_file_started(name, size);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(in_err(e)),
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        if crate::ova::atomic::is_zero(chunk) {
            out.seek(SeekFrom::Current(i64::try_from(n).expect("1 MiB")))
                .map_err(out_err)?;
        } else {
            out.write_all(chunk).map_err(out_err)?;
        }
        copied += u64::try_from(n).expect("usize fits in u64");
        reporter.on_file_progress(name, copied);
    }
    if copied != size {
        return Err(VhdError::Changed);
    }
    Ok((copied, hasher.finalize().into()))
}

/// Writes the fixed VHD `out` from the raw disk `raw` atomically; returns its size.
pub fn write_vhd(
    raw: &Path,
    out: &Path,
    epoch: i64,
    reporter: &dyn PublishReporter,
) -> Result<u64, VhdError> {
    let out_err = |source| VhdError::Io {
        path: out.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(raw)
        .map_err(|source| VhdError::Io {
            path: raw.to_path_buf(),
            source,
        })?
        .len();
    if size == 0 || !size.is_multiple_of(MIB) {
        return Err(VhdError::Unaligned { size });
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut dest = AtomicFile::create(out).map_err(out_err)?;
    let (copied, digest) = copy_sparse(raw, dest.writer(), out, reporter, &name)?;
    let footer = encode_footer(&VhdFooter {
        size_bytes: copied,
        epoch,
        unique_id: unique_id(&digest),
    });
    dest.writer().write_all(&footer).map_err(out_err)?;
    dest.commit().map_err(out_err)?;
    let total = copied + 512;
    reporter.on_file_finished(&name, total);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer(size: u64) -> [u8; 512] {
        encode_footer(&VhdFooter {
            size_bytes: size,
            epoch: 1_700_000_000,
            unique_id: unique_id(&[7u8; 32]),
        })
    }

    #[test]
    fn footer_fields_and_checksum() {
        let f = footer(256 * MIB);
        let info = read_footer(&f).unwrap();
        assert!(info.checksum_ok);
        assert_eq!(info.disk_type, 2);
        assert_eq!(info.size_bytes, 256 * MIB);
        assert_eq!(info.geometry, (256, 16, 128));
        assert_eq!(
            u32::from_be_bytes(f[24..28].try_into().unwrap()),
            1_700_000_000 - 946_684_800
        );
        assert_eq!(f[68 + 6] >> 4, 4);
    }

    #[test]
    fn corrupt_footer_fails_the_checksum() {
        let mut f = footer(MIB);
        f[45] ^= 1;
        assert!(!read_footer(&f).unwrap().checksum_ok);
        f[0] = b'x';
        assert!(read_footer(&f).is_none());
    }

    #[test]
    fn geometry_is_exact_up_to_65535_mib_then_maximal() {
        for mib in [1u64, 255, 1024, 65_535] {
            let (c, h, s) = geometry(mib * MIB);
            assert_eq!(u64::from(c) * u64::from(h) * u64::from(s) * 512, mib * MIB);
        }
        assert_eq!(geometry(65_536 * MIB), (65_535, 16, 255));
    }

    #[test]
    fn timestamps_before_2000_clamp_to_zero() {
        let f = encode_footer(&VhdFooter {
            size_bytes: MIB,
            epoch: 0,
            unique_id: [0; 16],
        });
        assert_eq!(&f[24..28], &[0, 0, 0, 0]);
    }
}
