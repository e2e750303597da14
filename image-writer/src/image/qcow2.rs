//! Random access to a qcow2 image (versions 2 and 3; no backing file, no encryption, no
//! external data file, zlib compression, standard L2 entries). See the qcow2 spec in
//! QEMU's `docs/interop/qcow2.txt`.

use std::io;

use flate2::{Decompress, FlushDecompress};

use super::{ByteSource, check_range, invalid_data};

/// Bits 9..=55 of L1 and standard L2 entries hold the host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const FLAG_COMPRESSED: u64 = 1 << 62;
/// Standard cluster descriptor bit 0 (v3): the cluster reads as zeros.
const FLAG_ZERO: u64 = 1;
/// Incompatible feature bits we can ignore: dirty (0) and corrupt (1).
const IGNORABLE_INCOMPATIBLE: u64 = 0b11;

/// A qcow2 image over an inner byte source.
pub struct Qcow2Source {
    inner: Box<dyn ByteSource>,
    size: u64,
    cluster_bits: u32,
    l1: Vec<u64>,
    l2_cache: Option<(u64, Vec<u64>)>,
    cluster_cache: Option<(u64, Vec<u8>)>,
    inflate: Decompress,
}

fn be32(h: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]])
}

fn be64(h: &[u8], o: usize) -> u64 {
    (u64::from(be32(h, o)) << 32) | u64::from(be32(h, o + 4))
}

impl Qcow2Source {
    /// Parses and checks the header and loads the L1 table.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] naming the problem.
    pub fn open(mut inner: Box<dyn ByteSource>) -> io::Result<Self> {
        let file_len = inner.len();
        let mut h = [0u8; 104];
        let n = usize::try_from(file_len.min(104)).unwrap_or(104);
        if n < 72 {
            return Err(invalid_data(0, "qcow2 header truncated"));
        }
        inner.read_at(0, &mut h[..n])?;
        if be32(&h, 0) != crate::qcow2::QCOW2_MAGIC {
            return Err(invalid_data(0, "bad qcow2 magic"));
        }
        let version = be32(&h, 4);
        if !(2..=3).contains(&version) {
            return Err(invalid_data(4, format!("qcow2 version {version}")));
        }
        if version == 3 {
            if n < 104 {
                return Err(invalid_data(0, "qcow2 v3 header truncated"));
            }
            let incompatible = be64(&h, 72);
            if incompatible & !IGNORABLE_INCOMPATIBLE != 0 {
                return Err(invalid_data(
                    72,
                    format!("unsupported incompatible features {incompatible:#x}"),
                ));
            }
        }
        if be64(&h, 8) != 0 {
            return Err(invalid_data(8, "backing files are not supported"));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(invalid_data(20, format!("cluster_bits {cluster_bits}")));
        }
        if be32(&h, 32) != 0 {
            return Err(invalid_data(32, "encrypted images are not supported"));
        }
        let size = be64(&h, 24);
        let l1_size = u64::from(be32(&h, 36));
        let l1_offset = be64(&h, 40);
        let cluster = 1u64 << cluster_bits;
        let per_l1 = cluster * (cluster / 8);
        if l1_size < size.div_ceil(per_l1) {
            return Err(invalid_data(36, "L1 table too small for the disk size"));
        }
        let l1_bytes = l1_size * 8;
        if l1_offset.checked_add(l1_bytes).is_none_or(|e| e > file_len) {
            return Err(invalid_data(40, "L1 table out of range"));
        }
        let mut raw = vec![0u8; usize::try_from(l1_bytes).map_err(|_| invalid_data(36, "L1"))?];
        inner.read_at(l1_offset, &mut raw)?;
        let l1 = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(Self {
            inner,
            size,
            cluster_bits,
            l1,
            l2_cache: None,
            cluster_cache: None,
            inflate: Decompress::new_with_window_bits(false, 12),
        })
    }

    fn cluster_bytes(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The L2 entry for virtual cluster `index` (0 when unallocated).
    fn l2_entry(&mut self, index: u64) -> io::Result<u64> {
        let per_l2 = self.cluster_bytes() / 8;
        let l1_index = usize::try_from(index / per_l2).map_err(|_| invalid_data(0, "index"))?;
        let l2_offset = self.l1.get(l1_index).copied().unwrap_or(0) & OFFSET_MASK;
        if l2_offset == 0 {
            return Ok(0);
        }
        if self.l2_cache.as_ref().is_none_or(|(o, _)| *o != l2_offset) {
            let cluster = usize::try_from(self.cluster_bytes()).expect("at most 2 MiB");
            if l2_offset
                .checked_add(self.cluster_bytes())
                .is_none_or(|e| e > self.inner.len())
            {
                return Err(invalid_data(l2_offset, "L2 table out of range"));
            }
            let mut raw = vec![0u8; cluster];
            self.inner.read_at(l2_offset, &mut raw)?;
            let table = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                .collect();
            self.l2_cache = Some((l2_offset, table));
        }
        let (_, table) = self.l2_cache.as_ref().expect("filled above");
        let slot = usize::try_from(index % per_l2).expect("below the table size");
        Ok(table[slot])
    }

    /// Loads virtual cluster `index` into the cluster cache (`None`: reads as zeros).
    fn load_cluster(&mut self, index: u64) -> io::Result<bool> {
        if self
            .cluster_cache
            .as_ref()
            .is_some_and(|(i, _)| *i == index)
        {
            return Ok(true);
        }
        let entry = self.l2_entry(index)?;
        let cluster = self.cluster_bytes();
        let cluster_len = usize::try_from(cluster).expect("at most 2 MiB");
        let file_len = self.inner.len();
        let mut data = self
            .cluster_cache
            .take()
            .map(|(_, d)| d)
            .unwrap_or_else(|| vec![0u8; cluster_len]);
        if entry & FLAG_COMPRESSED != 0 {
            let offset_bits = 62 - (self.cluster_bits - 8);
            let host = entry & ((1u64 << offset_bits) - 1);
            let sectors = ((entry >> offset_bits) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
            // The stored length is an upper bound ending on a sector; the file may end
            // sooner (the last compressed cluster of an image).
            let end = (host & !511).saturating_add(sectors * 512).min(file_len);
            if host >= end {
                return Err(invalid_data(host, "compressed cluster out of range"));
            }
            let mut packed = vec![0u8; usize::try_from(end - host).expect("below 2 clusters")];
            self.inner.read_at(host, &mut packed)?;
            self.inflate.reset(false);
            let result = self
                .inflate
                .decompress(&packed, &mut data, FlushDecompress::Finish);
            if result.is_err() || self.inflate.total_out() != cluster {
                return Err(invalid_data(
                    host,
                    "compressed cluster does not inflate to a cluster",
                ));
            }
        } else {
            let host = entry & OFFSET_MASK;
            if host == 0 || entry & FLAG_ZERO != 0 {
                self.cluster_cache = None;
                return Ok(false);
            }
            if host.checked_add(cluster).is_none_or(|e| e > file_len) {
                return Err(invalid_data(host, "data cluster out of range"));
            }
            self.inner.read_at(host, &mut data)?;
        }
        self.cluster_cache = Some((index, data));
        Ok(true)
    }
}

impl ByteSource for Qcow2Source {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        let cluster = self.cluster_bytes();
        super::read_by_blocks(buf, offset, cluster, |index, within, out| {
            if self.load_cluster(index)? {
                let (_, data) = self.cluster_cache.as_ref().expect("loaded");
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
    use crate::qcow2::{Qcow2Config, write_qcow2};

    fn disk() -> Vec<u8> {
        let mut d = vec![0u8; 3 * 65536 + 1024];
        for (i, b) in d.iter_mut().enumerate() {
            if (i / 65536) != 1 {
                *b = u8::try_from(i % 251).unwrap();
            }
        }
        d
    }

    /// Writes `disk()` as qcow2; also used as a fuzz seed.
    pub(crate) fn sample(compress: bool) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.raw"), disk()).unwrap();
        let out = dir.path().join("d.qcow2");
        write_qcow2(
            &dir.path().join("d.raw"),
            &out,
            &Qcow2Config { compress },
            &NoReporter,
        )
        .unwrap();
        std::fs::read(out).unwrap()
    }

    #[test]
    fn random_access_matches_the_disk() {
        crate::image::tests::write_seed("qcow2", "plain.qcow2", &sample(false));
        crate::image::tests::write_seed("qcow2", "compressed.qcow2", &sample(true));
        let expected = disk();
        for compress in [false, true] {
            let mut src = Qcow2Source::open(Box::new(MemSource(sample(compress)))).unwrap();
            assert_eq!(src.len(), expected.len() as u64);
            for (offset, len) in [
                (0usize, 10usize),
                (65530, 20),
                (65536, 65536),
                (3 * 65536, 1024),
                (0, expected.len()),
            ] {
                let mut buf = vec![0xeeu8; len];
                src.read_at(offset as u64, &mut buf).unwrap();
                assert!(
                    buf == expected[offset..offset + len],
                    "compress={compress} at {offset}"
                );
            }
            let mut past = [0u8; 2];
            assert!(src.read_at(expected.len() as u64 - 1, &mut past).is_err());
        }
    }

    #[test]
    fn truncated_and_corrupt_images_are_errors() {
        let image = sample(true);
        for cut in [0, 50, 104, 1000, image.len() / 2] {
            let result =
                Qcow2Source::open(Box::new(MemSource(image[..cut].to_vec()))).and_then(|mut s| {
                    let mut buf = vec![0u8; usize::try_from(s.len()).unwrap()];
                    s.read_at(0, &mut buf)
                });
            assert!(result.is_err(), "cut at {cut}");
        }
        let mut bad = image.clone();
        bad[8] = 1; // backing file offset
        assert!(Qcow2Source::open(Box::new(MemSource(bad))).is_err());
    }
}
