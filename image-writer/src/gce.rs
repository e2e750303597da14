//! Google Compute Engine image archive: the raw disk as `disk.raw`, the only member of a
//! gzip-compressed GNU tar (`--format=oldgnu`), which is what `gcloud compute images
//! create --source-uri` imports.
//!
//! Reproducible: the tar header carries SOURCE_DATE_EPOCH, owner 0/0 and mode 0644, the
//! gzip header no time stamp and no file name, and the compression level is fixed.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};

use crate::ova::atomic::AtomicFile;
use crate::ova::reporter::PublishReporter;

/// The member name GCE looks for.
pub const MEMBER: &str = "disk.raw";
/// gzip level (zlib's default).
pub const LEVEL: u32 = 6;
const BLOCK: u64 = 512;
const RECORD: u64 = 10_240;

/// Errors of the GCE writer.
#[derive(Debug, thiserror::Error)]
pub enum GceError {
    /// Reading the raw disk or writing the archive failed.
    #[error("i/o error on `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The raw disk changed size while it was archived.
    #[error("the raw disk changed while it was archived")]
    Changed,
}

/// Writes a numeric header field: octal when it fits, else GNU base-256.
fn numeric(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if value < 1u64 << (3 * digits) {
        let s = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
    }
}

/// The GNU (`oldgnu`) header block of `disk.raw`.
pub fn tar_header(size: u64, mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..MEMBER.len()].copy_from_slice(MEMBER.as_bytes());
    numeric(&mut h[100..108], 0o644);
    numeric(&mut h[108..116], 0);
    numeric(&mut h[116..124], 0);
    numeric(&mut h[124..136], size);
    numeric(&mut h[136..148], mtime.min(0o777_7777_7777));
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar  \0");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Writes `out` (`<name>.tar.gz`) from the raw disk atomically; returns its size.
pub fn write_gce(
    raw: &Path,
    out: &Path,
    epoch: i64,
    reporter: &dyn PublishReporter,
) -> Result<u64, GceError> {
    let in_err = |source| GceError::Io {
        path: raw.to_path_buf(),
        source,
    };
    let out_err = |source| GceError::Io {
        path: out.to_path_buf(),
        source,
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut src = File::open(raw).map_err(in_err)?;
    let size = src.metadata().map_err(in_err)?.len();
    reporter.on_file_started(&name, size);
    let dest = AtomicFile::create(out).map_err(out_err)?;
    let mut gz = GzBuilder::new()
        .operating_system(3)
        .write(dest, Compression::new(LEVEL));
    let mtime = u64::try_from(epoch).unwrap_or(0);
    gz.write_all(&tar_header(size, mtime)).map_err(out_err)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(in_err(e)),
        };
        copied += u64::try_from(n).expect("usize fits in u64");
        if copied > size {
            return Err(GceError::Changed);
        }
        gz.write_all(&buf[..n]).map_err(out_err)?;
        reporter.on_file_progress(&name, copied);
    }
    if copied != size {
        return Err(GceError::Changed);
    }
    let body = BLOCK + size.next_multiple_of(BLOCK);
    let end = (body + 2 * BLOCK).next_multiple_of(RECORD);
    let pad = usize::try_from(end - BLOCK - size).expect("below one record plus a block");
    gz.write_all(&vec![0u8; pad]).map_err(out_err)?;
    let dest = gz.finish().map_err(out_err)?;
    dest.commit().map_err(out_err)?;
    let total = std::fs::metadata(out).map_err(out_err)?.len();
    reporter.on_file_finished(&name, total);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_oldgnu_with_a_valid_checksum() {
        let h = tar_header(1 << 20, 1_700_000_000);
        assert_eq!(&h[..8], b"disk.raw");
        assert_eq!(&h[257..265], b"ustar  \0");
        assert_eq!(&h[124..136], b"00004000000\0");
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h;
        copy[148..156].fill(b' ');
        assert_eq!(stored, copy.iter().map(|b| u32::from(*b)).sum::<u32>());
    }

    #[test]
    fn sizes_beyond_8_gib_use_base_256() {
        let h = tar_header(10 << 30, 0);
        assert_eq!(h[124], 0x80);
        assert_eq!(&h[128..136], &(10u64 << 30).to_be_bytes());
    }
}
