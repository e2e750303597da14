//! Random access to a stream-optimized VMDK (VMware Virtual Disk Format 1.1, §4 "Stream-
//! Optimized Compressed Sparse Extents"): the grain directory named by the footer, grain
//! tables, and one deflated grain per lookup.

use std::io;

use flate2::{Decompress, FlushDecompress, Status};

use super::{ByteSource, check_range, invalid_data};
use crate::vmdk::{GD_AT_END, GRAIN_BYTES, GRAIN_SECTORS, GTES_PER_GT, SECTOR, SparseExtentHeader};

/// A stream-optimized VMDK over an inner byte source.
pub struct VmdkSource {
    inner: Box<dyn ByteSource>,
    capacity_bytes: u64,
    /// Grain-table sector per grain table (0: none).
    directory: Vec<u64>,
    gt_cache: Option<(u64, Vec<u64>)>,
    grain_cache: Option<(u64, Vec<u8>)>,
    compressed: Vec<u8>,
    inflate: Decompress,
}

fn header_at(inner: &mut dyn ByteSource, offset: u64) -> io::Result<SparseExtentHeader> {
    let mut sector = [0u8; 512];
    inner.read_at(offset, &mut sector)?;
    SparseExtentHeader::decode(&sector).map_err(|reason| invalid_data(offset, reason))
}

impl VmdkSource {
    /// Reads the header (and the footer when the directory is at the end) and loads the
    /// grain directory.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] naming the problem.
    pub fn open(mut inner: Box<dyn ByteSource>) -> io::Result<Self> {
        let len = inner.len();
        if len < 4 * SECTOR {
            return Err(invalid_data(0, "VMDK shorter than 4 sectors"));
        }
        let mut header = header_at(inner.as_mut(), 0)?;
        if header.gd_offset == GD_AT_END {
            // The footer is the second-to-last sector.
            let footer = header_at(inner.as_mut(), len - 2 * SECTOR)?;
            if footer.capacity != header.capacity {
                return Err(invalid_data(
                    len - 2 * SECTOR,
                    "footer capacity differs from header",
                ));
            }
            header = footer;
        }
        let tables = header.capacity.div_ceil(GRAIN_SECTORS * GTES_PER_GT);
        let gd_bytes = tables * 4;
        let gd_start = header
            .gd_offset
            .checked_mul(SECTOR)
            .filter(|s| s.checked_add(gd_bytes).is_some_and(|e| e <= len))
            .ok_or_else(|| invalid_data(56, "grain directory out of range"))?;
        let mut raw = vec![0u8; usize::try_from(gd_bytes).map_err(|_| invalid_data(56, "GD"))?];
        inner.read_at(gd_start, &mut raw)?;
        let directory = raw
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes"))))
            .collect();
        Ok(Self {
            inner,
            capacity_bytes: header.capacity * SECTOR,
            directory,
            gt_cache: None,
            grain_cache: None,
            compressed: Vec::new(),
            inflate: Decompress::new(true),
        })
    }

    /// The sector of grain `index`'s marker (0: unallocated).
    fn grain_sector(&mut self, index: u64) -> io::Result<u64> {
        let table = index / GTES_PER_GT;
        let gt_sector = self
            .directory
            .get(usize::try_from(table).map_err(|_| invalid_data(0, "index"))?)
            .copied()
            .unwrap_or(0);
        if gt_sector == 0 {
            return Ok(0);
        }
        if self.gt_cache.as_ref().is_none_or(|(t, _)| *t != table) {
            let start = gt_sector * SECTOR;
            let mut raw = vec![0u8; usize::try_from(GTES_PER_GT * 4).expect("2 KiB")];
            if start
                .checked_add(raw.len() as u64)
                .is_none_or(|e| e > self.inner.len())
            {
                return Err(invalid_data(start, "grain table out of range"));
            }
            self.inner.read_at(start, &mut raw)?;
            let entries = raw
                .chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes"))))
                .collect();
            self.gt_cache = Some((table, entries));
        }
        let (_, entries) = self.gt_cache.as_ref().expect("filled above");
        Ok(entries[usize::try_from(index % GTES_PER_GT).expect("below 512")])
    }

    /// Loads grain `index` into the cache; `false` when it reads as zeros.
    fn load_grain(&mut self, index: u64) -> io::Result<bool> {
        if self.grain_cache.as_ref().is_some_and(|(i, _)| *i == index) {
            return Ok(true);
        }
        let sector = self.grain_sector(index)?;
        // GTE 1 marks an explicitly zeroed grain in some writers.
        if sector <= 1 {
            return Ok(false);
        }
        let start = sector
            .checked_mul(SECTOR)
            .filter(|s| s.checked_add(SECTOR).is_some_and(|e| e <= self.inner.len()))
            .ok_or_else(|| invalid_data(sector, "grain out of range"))?;
        let mut marker = [0u8; 12];
        self.inner.read_at(start, &mut marker)?;
        let lba = u64::from_le_bytes(marker[0..8].try_into().expect("8 bytes"));
        let size = u64::from(u32::from_le_bytes(
            marker[8..12].try_into().expect("4 bytes"),
        ));
        if lba != index * GRAIN_SECTORS {
            return Err(invalid_data(
                start,
                format!("grain marker LBA {lba}, expected {}", index * GRAIN_SECTORS),
            ));
        }
        if size == 0 || size > 2 * GRAIN_BYTES || start + 12 + size > self.inner.len() {
            return Err(invalid_data(
                start + 8,
                format!("grain size {size} out of range"),
            ));
        }
        self.compressed
            .resize(usize::try_from(size).expect("below 128 KiB"), 0);
        self.inner.read_at(start + 12, &mut self.compressed)?;
        let mut data = self
            .grain_cache
            .take()
            .map(|(_, d)| d)
            .unwrap_or_else(|| vec![0u8; usize::try_from(GRAIN_BYTES).expect("64 KiB")]);
        self.inflate.reset(true);
        let status = self
            .inflate
            .decompress(&self.compressed, &mut data, FlushDecompress::Finish);
        if !matches!(status, Ok(Status::StreamEnd)) || self.inflate.total_out() != GRAIN_BYTES {
            return Err(invalid_data(start, "grain does not inflate to 64 KiB"));
        }
        self.grain_cache = Some((index, data));
        Ok(true)
    }
}

impl ByteSource for VmdkSource {
    fn len(&self) -> u64 {
        self.capacity_bytes
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.capacity_bytes)?;
        super::read_by_blocks(buf, offset, GRAIN_BYTES, |index, within, out| {
            if self.load_grain(index)? {
                let (_, data) = self.grain_cache.as_ref().expect("loaded");
                out.copy_from_slice(&data[within..within + out.len()]);
            } else {
                out.fill(0);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MemSource;
    use crate::ova::reporter::NoReporter;
    use crate::vmdk::{VmdkConfig, write_vmdk};

    fn disk() -> Vec<u8> {
        let mut d = vec![0u8; 1030 * 65536];
        for (i, b) in d[..200_000].iter_mut().enumerate() {
            *b = u8::try_from(i % 253).unwrap();
        }
        let n = d.len();
        d[n - 70_000..n - 1].fill(0x5a);
        d
    }

    /// Writes `disk()` as a stream-optimized VMDK; also used as a fuzz seed.
    pub(crate) fn sample() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.raw"), disk()).unwrap();
        let out = dir.path().join("d.vmdk");
        write_vmdk(
            &dir.path().join("d.raw"),
            &out,
            &VmdkConfig::default(),
            &NoReporter,
        )
        .unwrap();
        std::fs::read(out).unwrap()
    }

    #[test]
    fn random_access_matches_the_disk() {
        crate::image::tests::write_seed("vmdk", "stream.vmdk", &sample());
        let expected = disk();
        let mut src = VmdkSource::open(Box::new(MemSource(sample()))).unwrap();
        assert_eq!(src.len(), expected.len() as u64);
        let n = expected.len();
        for (offset, len) in [
            (0usize, 10usize),
            (65530, 20),
            (100_000, 150_000),
            (n - 70_001, 70_001),
            (0, n),
        ] {
            let mut buf = vec![0xeeu8; len];
            src.read_at(offset as u64, &mut buf).unwrap();
            assert!(buf == expected[offset..offset + len], "at {offset}");
        }
    }

    #[test]
    fn truncated_and_corrupt_images_are_errors() {
        let image = sample();
        for cut in [0, 1000, 2048, image.len() / 2, image.len() - 512] {
            let result =
                VmdkSource::open(Box::new(MemSource(image[..cut].to_vec()))).and_then(|mut s| {
                    let mut buf = vec![0u8; usize::try_from(s.len()).unwrap()];
                    s.read_at(0, &mut buf)
                });
            assert!(result.is_err(), "cut at {cut}");
        }
    }
}
