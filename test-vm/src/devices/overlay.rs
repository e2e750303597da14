//! Copy-on-write disk: reads fall through to the image file, writes land in an anonymous
//! sparse scratch file (unlinked at creation, so it vanishes with the process). The image is
//! opened read-only and is never modified.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::virtio_blk::{BlockBackend, SECTOR_SIZE};

/// Errors while opening the overlay.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The image cannot be opened or inspected.
    #[error("cannot open disk image `{path}`")]
    Open {
        /// Image path.
        path: PathBuf,
        /// IO error.
        #[source]
        source: std::io::Error,
    },
    /// The scratch file cannot be created.
    #[error("cannot create the copy-on-write scratch file")]
    Scratch {
        /// IO error.
        #[source]
        source: std::io::Error,
    },
}

/// The copy-on-write disk.
#[derive(Debug)]
pub struct OverlayDisk {
    image: File,
    scratch: File,
    /// One bit per sector: set when the sector lives in `scratch`.
    written: Vec<u64>,
    capacity_sectors: u64,
}

impl OverlayDisk {
    /// Opens `path` read-only with an empty overlay. A trailing partial sector is not exposed.
    ///
    /// # Errors
    ///
    /// [`OverlayError`].
    pub fn open(path: &Path) -> Result<Self, OverlayError> {
        let open_error = |source| OverlayError::Open {
            path: path.to_owned(),
            source,
        };
        let image = File::open(path).map_err(open_error)?;
        let len = image.metadata().map_err(open_error)?.len();
        let capacity_sectors = len / SECTOR_SIZE;
        let scratch = tempfile::tempfile().map_err(|source| OverlayError::Scratch { source })?;
        let words =
            usize::try_from(capacity_sectors.div_ceil(64)).map_err(|_| OverlayError::Open {
                path: path.to_owned(),
                source: std::io::ErrorKind::FileTooLarge.into(),
            })?;
        Ok(Self {
            image,
            scratch,
            written: vec![0; words],
            capacity_sectors,
        })
    }

    fn is_written(&self, sector: u64) -> bool {
        let word = usize::try_from(sector / 64).expect("sector < capacity, bitmap sized to it");
        self.written[word] & (1 << (sector % 64)) != 0
    }

    /// Number of sectors that have been written (and live in the scratch file).
    #[must_use]
    pub fn written_sectors(&self) -> u64 {
        self.written.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    fn check(&self, offset: u64, len: usize) -> std::io::Result<()> {
        let aligned =
            offset.is_multiple_of(SECTOR_SIZE) && (len as u64).is_multiple_of(SECTOR_SIZE);
        let end = offset.checked_add(len as u64);
        if !aligned || end.is_none_or(|e| e > self.capacity_sectors * SECTOR_SIZE) {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        Ok(())
    }
}

impl BlockBackend for OverlayDisk {
    fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.check(offset, buf.len())?;
        // Copy runs of sectors that share a source.
        let first = offset / SECTOR_SIZE;
        let count = buf.len() as u64 / SECTOR_SIZE;
        let mut start = 0u64;
        while start < count {
            let from_scratch = self.is_written(first + start);
            let mut end = start + 1;
            while end < count && self.is_written(first + end) == from_scratch {
                end += 1;
            }
            let range = usize::try_from(start * SECTOR_SIZE).expect("within buf")
                ..usize::try_from(end * SECTOR_SIZE).expect("within buf");
            let file = if from_scratch {
                &self.scratch
            } else {
                &self.image
            };
            file.read_exact_at(&mut buf[range], (first + start) * SECTOR_SIZE)?;
            start = end;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.check(offset, buf.len())?;
        self.scratch.write_all_at(buf, offset)?;
        let first = offset / SECTOR_SIZE;
        for sector in first..first + buf.len() as u64 / SECTOR_SIZE {
            let word = usize::try_from(sector / 64).expect("checked against capacity");
            self.written[word] |= 1 << (sector % 64);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The scratch file is discarded at exit: nothing needs to be durable.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_go_to_scratch_and_image_stays_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let original: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let mut disk = OverlayDisk::open(&path).unwrap();
        assert_eq!(disk.capacity_sectors(), 8);
        disk.write_at(1024, &[0xee; 1024]).unwrap();
        let mut all = vec![0u8; 4096];
        disk.read_at(0, &mut all).unwrap();
        assert_eq!(all[..1024], original[..1024]);
        assert_eq!(all[1024..2048], [0xee; 1024]);
        assert_eq!(all[2048..], original[2048..]);
        assert_eq!(disk.written_sectors(), 2);
        assert_eq!(std::fs::read(&path).unwrap(), original);
    }

    #[test]
    fn rejects_unaligned_and_out_of_range_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        std::fs::write(&path, vec![0u8; 1000]).unwrap(); // one full sector + a partial one
        let mut disk = OverlayDisk::open(&path).unwrap();
        assert_eq!(disk.capacity_sectors(), 1);
        assert!(disk.read_at(512, &mut [0u8; 512]).is_err());
        assert!(disk.read_at(1, &mut [0u8; 512]).is_err());
        assert!(disk.write_at(0, &[0u8; 100]).is_err());
        assert!(disk.read_at(u64::MAX - 511, &mut [0u8; 512]).is_err());
    }

    #[test]
    fn missing_image_is_an_open_error() {
        let err = OverlayDisk::open(Path::new("/nonexistent/disk.raw")).unwrap_err();
        assert!(matches!(err, OverlayError::Open { .. }));
    }
}
