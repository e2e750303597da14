//! qcow2 version 3 writer (and a small reader for tests), per QEMU's `docs/interop/qcow2.txt`.
//!
//! ```text
//! cluster 0          header (104 bytes, v3) + header-extension end marker
//! then, per 512 MiB of disk (one L2 table = 8192 entries of 64 KiB clusters):
//!                    data clusters of the non-zero disk clusters, in disk order
//!                    (compressed: packed raw-deflate streams, not cluster aligned)
//!                    the L2 table (only if the region has data)
//! L1 table           one entry per L2 region
//! refcount blocks    16-bit refcounts of every cluster of the file
//! refcount table     one entry per refcount block
//! ```
//! All-zero clusters stay unallocated (L2 entry 0), so the image is sparse. The file is
//! written front to back with memory bounded by one L2 table plus 2 bytes of refcount
//! per output cluster; only the header is rewritten at the end, when the table offsets
//! are known. Every cluster gets the refcount of its users, and `COPIED` is set on L1 and
//! uncompressed L2 entries (refcount 1), so `qemu-img check` reports no errors or leaks.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::ova::atomic::{AtomicFile, is_zero};
use crate::ova::reporter::PublishReporter;
use crate::vmdk::{next_data, read_full_at};

/// `QFI\xfb`.
pub const QCOW2_MAGIC: u32 = 0x5146_49fb;
/// log2 of the cluster size.
pub const CLUSTER_BITS: u32 = 16;
/// Cluster size in bytes (64 KiB, qemu's default).
pub const CLUSTER_BYTES: u64 = 1 << CLUSTER_BITS;
/// L2 entries per L2 table (one cluster of u64).
pub const L2_ENTRIES: u64 = CLUSTER_BYTES / 8;
/// Refcount entries per refcount block (16-bit refcounts).
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER_BYTES / 2;
const HEADER_LENGTH: u32 = 104;
/// L1/L2 flag: refcount is exactly one.
const OFLAG_COPIED: u64 = 1 << 63;
/// L2 flag: compressed cluster.
const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Bits of a compressed cluster descriptor holding the host offset: 62 - (cluster_bits - 8).
const COMPRESSED_OFFSET_BITS: u32 = 62 - (CLUSTER_BITS - 8);
/// Window of qemu's raw-deflate decompressor (`inflateInit2(-12)`).
const QEMU_WINDOW_BITS: u8 = 12;

/// Errors of the qcow2 writer and reader.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// Reading or writing a file failed.
    #[error("i/o error on `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The raw image size is not a whole number of 512-byte sectors.
    #[error("raw image `{path}` is {size} bytes, not a multiple of 512")]
    UnalignedSize {
        /// The raw image.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// zlib failed on a cluster.
    #[error("compressing the cluster at disk offset {offset} failed")]
    Compress {
        /// Disk offset of the cluster.
        offset: u64,
    },
    /// The file is not a qcow2 image this reader understands.
    #[error("invalid qcow2 `{path}` at byte {offset}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// User settings of the qcow2 writer.
#[derive(Debug, Clone, Default)]
pub struct Qcow2Config {
    /// Store non-zero clusters raw-deflate compressed (off by default: compressed
    /// clusters are slower to read and are decompressed on first write by the guest).
    pub compress: bool,
}

/// What [`write_qcow2`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Report {
    /// Virtual disk size in bytes.
    pub capacity_bytes: u64,
    /// Allocated (non-zero) disk clusters.
    pub data_clusters: u64,
    /// Size of the `.qcow2` file.
    pub file_bytes: u64,
}

/// The fixed fields of a version 3 header this writer emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qcow2Header {
    /// Virtual size in bytes.
    pub size: u64,
    /// L1 entries.
    pub l1_size: u32,
    /// L1 table offset.
    pub l1_table_offset: u64,
    /// Refcount table offset.
    pub refcount_table_offset: u64,
    /// Refcount table length in clusters.
    pub refcount_table_clusters: u32,
}

impl Qcow2Header {
    /// Encodes the header, followed by the header-extension end marker.
    pub fn encode(&self) -> [u8; 112] {
        let mut b = [0u8; 112];
        b[0..4].copy_from_slice(&QCOW2_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        // backing_file_offset (8..16) and backing_file_size (16..20) stay 0.
        b[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
        b[24..32].copy_from_slice(&self.size.to_be_bytes());
        // crypt_method (32..36) = 0.
        b[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        b[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        b[56..60].copy_from_slice(&self.refcount_table_clusters.to_be_bytes());
        // nb_snapshots, snapshots_offset, incompatible/compatible/autoclear features = 0.
        b[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit
        b[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
        // 104..112: header extension type 0 (end), length 0.
        b
    }
}

/// Output position and per-cluster refcounts of the file being written.
struct Output {
    dest: AtomicFile,
    /// Byte position of the next write.
    pos: u64,
    /// Refcount of every cluster of the file so far.
    refcounts: Vec<u16>,
}

impl Output {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.dest.write_all(bytes)?;
        let len = u64::try_from(bytes.len()).expect("usize fits in u64");
        if len > 0 {
            self.reference(self.pos, len);
        }
        self.pos += len;
        Ok(())
    }

    /// One more reference to every cluster overlapping `[start, start + len)`.
    fn reference(&mut self, start: u64, len: u64) {
        let first = start / CLUSTER_BYTES;
        let last = (start + len - 1) / CLUSTER_BYTES;
        let need = usize::try_from(last + 1).expect("cluster count fits in usize");
        if self.refcounts.len() < need {
            self.refcounts.resize(need, 0);
        }
        for c in first..=last {
            let slot = &mut self.refcounts[usize::try_from(c).expect("checked above")];
            *slot = slot.saturating_add(1);
        }
    }

    /// Pads with zeros to the next cluster boundary (padding belongs to the cluster
    /// already referenced, so refcounts do not change).
    fn align(&mut self) -> io::Result<()> {
        let pad = self.pos.next_multiple_of(CLUSTER_BYTES) - self.pos;
        let zeros = vec![0u8; usize::try_from(pad).expect("below 64 KiB")];
        self.dest.write_all(&zeros)?;
        self.pos += pad;
        Ok(())
    }
}

/// Converts the raw image at `raw` into a qcow2 v3 image at `out` (atomically).
pub fn write_qcow2(
    raw: &Path,
    out: &Path,
    config: &Qcow2Config,
    reporter: &dyn PublishReporter,
) -> Result<Qcow2Report, Qcow2Error> {
    let in_err = |source| Qcow2Error::Io {
        path: raw.to_path_buf(),
        source,
    };
    let out_err = |source| Qcow2Error::Io {
        path: out.to_path_buf(),
        source,
    };
    let file = File::open(raw).map_err(in_err)?;
    let size = file.metadata().map_err(in_err)?.len();
    if size % 512 != 0 {
        return Err(Qcow2Error::UnalignedSize {
            path: raw.to_path_buf(),
            size,
        });
    }
    let label = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    reporter.on_file_started(&label, size);
    let clusters = size.div_ceil(CLUSTER_BYTES);
    let l1_size = clusters.div_ceil(L2_ENTRIES);
    let mut output = Output {
        dest: AtomicFile::create(out).map_err(out_err)?,
        pos: 0,
        refcounts: Vec::new(),
    };
    // Placeholder header cluster, rewritten at the end.
    output
        .write(&vec![0u8; usize::try_from(CLUSTER_BYTES).expect("64 KiB")])
        .map_err(out_err)?;

    let (l1, data_clusters) = write_data(&file, &mut output, config, reporter, &label, size)
        .map_err(|e| e.with_paths(raw, out))?;

    // L1 table, cluster aligned, padded to whole clusters.
    output.align().map_err(out_err)?;
    let l1_offset = output.pos;
    let mut l1_bytes = be_bytes(&l1);
    l1_bytes.resize(
        l1_bytes
            .len()
            .next_multiple_of(usize::try_from(CLUSTER_BYTES).expect("64 KiB"))
            .max(usize::try_from(CLUSTER_BYTES).expect("64 KiB")),
        0,
    );
    output.write(&l1_bytes).map_err(out_err)?;

    let (table_offset, table, total_clusters) = write_refcounts(&mut output).map_err(out_err)?;
    let file_bytes = total_clusters * CLUSTER_BYTES;

    let header = Qcow2Header {
        size,
        l1_size: u32::try_from(l1_size).map_err(|_| Qcow2Error::UnalignedSize {
            path: raw.to_path_buf(),
            size,
        })?,
        l1_table_offset: l1_offset,
        refcount_table_offset: table_offset,
        refcount_table_clusters: u32::try_from(table).expect("small"),
    };
    let w = output.dest.writer();
    w.seek(SeekFrom::Start(0)).map_err(out_err)?;
    w.write_all(&header.encode()).map_err(out_err)?;
    output.dest.commit().map_err(out_err)?;
    reporter.on_file_finished(&label, file_bytes);
    Ok(Qcow2Report {
        capacity_bytes: size,
        data_clusters,
        file_bytes,
    })
}

/// Why [`write_data`] failed, before the paths are known.
enum DataError {
    Input(io::Error),
    Output(io::Error),
    Compress { offset: u64 },
}

impl DataError {
    fn with_paths(self, raw: &Path, out: &Path) -> Qcow2Error {
        match self {
            Self::Input(source) => Qcow2Error::Io {
                path: raw.to_path_buf(),
                source,
            },
            Self::Output(source) => Qcow2Error::Io {
                path: out.to_path_buf(),
                source,
            },
            Self::Compress { offset } => Qcow2Error::Compress { offset },
        }
    }
}

/// Writes the data clusters (compressed when `config.compress` and it saves a sector)
/// and their L2 tables; returns the L1 table and the number of data clusters.
fn write_data(
    file: &File,
    output: &mut Output,
    config: &Qcow2Config,
    reporter: &dyn PublishReporter,
    label: &str,
    size: u64,
) -> Result<(Vec<u64>, u64), DataError> {
    let clusters = size.div_ceil(CLUSTER_BYTES);
    let l1_size = clusters.div_ceil(L2_ENTRIES);
    let mut compress = config
        .compress
        .then(|| Compress::new_with_window_bits(Compression::default(), false, QEMU_WINDOW_BITS));
    let mut l1 = Vec::with_capacity(usize::try_from(l1_size).unwrap_or(0));
    let mut l2 = vec![0u64; usize::try_from(L2_ENTRIES).expect("8192")];
    let mut buf = vec![0u8; usize::try_from(CLUSTER_BYTES).expect("64 KiB")];
    let mut packed = Vec::with_capacity(buf.len() * 2);
    let mut data_clusters = 0u64;
    let mut data_at = 0u64;
    for region in 0..l1_size {
        l2.fill(0);
        let mut used = false;
        let first = region * L2_ENTRIES;
        let last = (first + L2_ENTRIES).min(clusters);
        for cluster in first..last {
            let offset = cluster * CLUSTER_BYTES;
            if data_at < offset {
                data_at = next_data(file, offset);
            }
            if data_at >= offset + CLUSTER_BYTES {
                continue; // a hole of the sparse raw file
            }
            buf.fill(0);
            read_full_at(file, &mut buf, offset).map_err(DataError::Input)?;
            if is_zero(&buf) {
                continue;
            }
            let slot = usize::try_from(cluster - first).expect("below 8192");
            used = true;
            data_clusters += 1;
            let stored = match compress.as_mut() {
                Some(c) => {
                    compress_cluster(c, &buf, &mut packed).ok_or(DataError::Compress { offset })?
                }
                None => false,
            };
            if stored {
                // Compressed descriptor: host byte offset, plus the number of additional
                // 512-byte sectors the stream touches.
                let host = output.pos;
                let len = u64::try_from(packed.len()).expect("usize fits in u64");
                let extra = (host + len - 1) / 512 - host / 512;
                l2[slot] = OFLAG_COMPRESSED | (extra << COMPRESSED_OFFSET_BITS) | host;
                output.write(&packed).map_err(DataError::Output)?;
            } else {
                output.align().map_err(DataError::Output)?;
                l2[slot] = output.pos | OFLAG_COPIED;
                output.write(&buf).map_err(DataError::Output)?;
            }
            if cluster % 1024 == 1023 {
                reporter.on_file_progress(label, offset + CLUSTER_BYTES);
            }
        }
        if used {
            output.align().map_err(DataError::Output)?;
            l1.push(output.pos | OFLAG_COPIED);
            output.write(&be_bytes(&l2)).map_err(DataError::Output)?;
        } else {
            l1.push(0);
        }
    }
    Ok((l1, data_clusters))
}

/// Writes the refcount blocks and then the refcount table after everything else; returns
/// the table's offset, its clusters and the clusters of the whole file.
fn write_refcounts(output: &mut Output) -> io::Result<(u64, u64, u64)> {
    // Refcount blocks then the refcount table: find the smallest counts that cover every
    // cluster including themselves.
    let base = output.pos / CLUSTER_BYTES;
    let (mut blocks, mut table) = (1u64, 1u64);
    loop {
        let total = base + blocks + table;
        let need_blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let need_table = (need_blocks * 8).div_ceil(CLUSTER_BYTES);
        if need_blocks <= blocks && need_table <= table {
            break;
        }
        blocks = need_blocks.max(blocks);
        table = need_table.max(table);
    }
    let blocks_offset = output.pos;
    let table_offset = blocks_offset + blocks * CLUSTER_BYTES;
    let total_clusters = base + blocks + table;
    let mut refcounts = std::mem::take(&mut output.refcounts);
    refcounts.resize(
        usize::try_from(blocks * REFCOUNTS_PER_BLOCK).expect("refcounts fit in memory"),
        0,
    );
    for c in base..total_clusters {
        refcounts[usize::try_from(c).expect("fits")] = 1;
    }
    let mut block_bytes = Vec::with_capacity(refcounts.len() * 2);
    for r in &refcounts {
        block_bytes.extend_from_slice(&r.to_be_bytes());
    }
    output.dest.write_all(&block_bytes)?;
    let table_entries: Vec<u64> = (0..blocks)
        .map(|i| blocks_offset + i * CLUSTER_BYTES)
        .collect();
    let mut table_bytes = be_bytes(&table_entries);
    table_bytes.resize(
        usize::try_from(table * CLUSTER_BYTES).expect("table fits in memory"),
        0,
    );
    output.dest.write_all(&table_bytes)?;
    Ok((table_offset, table, total_clusters))
}

/// Raw-deflates `data` into `out`; `Some(false)` when compression does not save a sector
/// (then the cluster is stored uncompressed, as qemu does).
fn compress_cluster(c: &mut Compress, data: &[u8], out: &mut Vec<u8>) -> Option<bool> {
    c.reset();
    out.clear();
    out.reserve(data.len());
    let status = c.compress_vec(data, out, FlushCompress::Finish).ok()?;
    Some(status == Status::StreamEnd && out.len() + 512 < data.len())
}

fn be_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

/// Reads a qcow2 image written by [`write_qcow2`] (v3, 64 KiB clusters, no backing file,
/// no snapshots, no encryption) and writes the flat disk content to `out`; returns the
/// virtual size. Untrusted input: every offset is bounds-checked.
pub fn read_qcow2(path: &Path, out: &mut dyn Write) -> Result<u64, Qcow2Error> {
    let io_err = |source| Qcow2Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |offset: u64, reason: &str| Qcow2Error::Invalid {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_owned(),
    };
    let mut f = File::open(path).map_err(io_err)?;
    let len = f.metadata().map_err(io_err)?.len();
    let mut h = [0u8; 104];
    f.read_exact(&mut h).map_err(io_err)?;
    let be32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let be64 = |o: usize| (u64::from(be32(o)) << 32) | u64::from(be32(o + 4));
    if be32(0) != QCOW2_MAGIC || be32(4) != 3 {
        return Err(invalid(0, "not a qcow2 version 3 image"));
    }
    if be32(20) != CLUSTER_BITS || be64(8) != 0 || be32(32) != 0 || be32(60) != 0 {
        return Err(invalid(
            20,
            "unsupported cluster size, backing file, encryption or snapshots",
        ));
    }
    let size = be64(24);
    let l1_size = u64::from(be32(36));
    let l1_offset = be64(40);
    if l1_size != size.div_ceil(CLUSTER_BYTES * L2_ENTRIES)
        || l1_offset.checked_add(l1_size * 8).is_none_or(|e| e > len)
    {
        return Err(invalid(36, "L1 table out of range"));
    }
    let mut l1 = vec![0u8; usize::try_from(l1_size * 8).map_err(|_| invalid(36, "L1 size"))?];
    f.seek(SeekFrom::Start(l1_offset)).map_err(io_err)?;
    f.read_exact(&mut l1).map_err(io_err)?;
    let cluster = usize::try_from(CLUSTER_BYTES).expect("64 KiB");
    let mut l2 = vec![0u8; cluster];
    let mut data = vec![0u8; cluster];
    let zeros = vec![0u8; cluster];
    let mut packed = Vec::new();
    let mut inflate = Decompress::new_with_window_bits(false, QEMU_WINDOW_BITS);
    let mask = (1u64 << 56) - 1;
    let mut disk = 0u64;
    for e in l1.chunks_exact(8) {
        let entry = u64::from_be_bytes(e.try_into().expect("8 bytes"));
        let l2_offset = entry & mask & !(CLUSTER_BYTES - 1);
        let have_l2 = l2_offset != 0;
        if have_l2 {
            if l2_offset + CLUSTER_BYTES > len {
                return Err(invalid(l1_offset, "L2 table out of range"));
            }
            f.seek(SeekFrom::Start(l2_offset)).map_err(io_err)?;
            f.read_exact(&mut l2).map_err(io_err)?;
        }
        for i in 0..L2_ENTRIES {
            if disk >= size {
                break;
            }
            let n = usize::try_from(CLUSTER_BYTES.min(size - disk)).expect("64 KiB");
            let slot = usize::try_from(i * 8).expect("small");
            let entry = if have_l2 {
                u64::from_be_bytes(l2[slot..slot + 8].try_into().expect("8 bytes"))
            } else {
                0
            };
            if entry == 0 {
                out.write_all(&zeros[..n]).map_err(io_err)?;
            } else if entry & OFLAG_COMPRESSED != 0 {
                let host = entry & ((1u64 << COMPRESSED_OFFSET_BITS) - 1);
                let sectors = ((entry & !OFLAG_COMPRESSED) >> COMPRESSED_OFFSET_BITS) + 1;
                // The stored length ends on a sector boundary and may run past the end
                // of the file; the data itself must start inside it.
                let end = ((host & !511) + sectors * 512).min(len);
                if host >= end {
                    return Err(invalid(
                        l2_offset + i * 8,
                        "compressed cluster out of range",
                    ));
                }
                packed.resize(usize::try_from(end - host).expect("below 2 clusters"), 0);
                f.seek(SeekFrom::Start(host)).map_err(io_err)?;
                f.read_exact(&mut packed).map_err(io_err)?;
                inflate.reset(false);
                let st = inflate
                    .decompress(&packed, &mut data, FlushDecompress::Finish)
                    .map_err(|_| invalid(host, "compressed cluster does not inflate"))?;
                if inflate.total_out() != CLUSTER_BYTES || st == Status::BufError {
                    return Err(invalid(
                        host,
                        "compressed cluster does not inflate to 64 KiB",
                    ));
                }
                out.write_all(&data[..n]).map_err(io_err)?;
            } else {
                let host = entry & mask & !(CLUSTER_BYTES - 1);
                if host + CLUSTER_BYTES > len {
                    return Err(invalid(l2_offset + i * 8, "data cluster out of range"));
                }
                f.seek(SeekFrom::Start(host)).map_err(io_err)?;
                f.read_exact(&mut data).map_err(io_err)?;
                out.write_all(&data[..n]).map_err(io_err)?;
            }
            disk += CLUSTER_BYTES;
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ova::reporter::NoReporter;

    fn disk() -> Vec<u8> {
        // 5 clusters + 3 sectors: text, zeros, random-ish, zeros, text tail.
        let mut d = vec![0u8; 5 * 65536 + 3 * 512];
        for (i, b) in d[..65536].iter_mut().enumerate() {
            *b = b"qcow2 text "[i % 11];
        }
        let mut x = 99u32;
        for b in &mut d[2 * 65536..3 * 65536] {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = x.to_be_bytes()[0];
        }
        let n = d.len();
        d[n - 100..].fill(0x5a);
        d
    }

    #[test]
    fn header_layout() {
        let h = Qcow2Header {
            size: 1 << 30,
            l1_size: 2,
            l1_table_offset: 0x30000,
            refcount_table_offset: 0x50000,
            refcount_table_clusters: 1,
        }
        .encode();
        assert_eq!(&h[0..4], b"QFI\xfb");
        assert_eq!(h[7], 3);
        assert_eq!(h[23], 16);
        assert_eq!(h[99], 4);
        assert_eq!(h[103], 104);
        assert_eq!(&h[104..112], &[0u8; 8]);
    }

    #[test]
    fn round_trip_plain_and_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        let data = disk();
        std::fs::write(&raw, &data).unwrap();
        for compress in [false, true] {
            let out = dir.path().join(format!("d{compress}.qcow2"));
            let r = write_qcow2(&raw, &out, &Qcow2Config { compress }, &NoReporter).unwrap();
            assert_eq!(r.data_clusters, 3);
            assert_eq!(r.file_bytes, std::fs::metadata(&out).unwrap().len());
            let mut back = Vec::new();
            assert_eq!(
                read_qcow2(&out, &mut back).unwrap(),
                u64::try_from(data.len()).unwrap()
            );
            assert!(back == data, "content differs (compress={compress})");
        }
    }

    /// Issue #10: a compressed cluster starting past the end of a file whose length is not
    /// a multiple of 512 underflowed the length computation (panic or a huge allocation).
    #[test]
    fn issue_10_compressed_cluster_past_an_unaligned_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        std::fs::write(&raw, disk()).unwrap();
        let out = dir.path().join("d.qcow2");
        write_qcow2(&raw, &out, &Qcow2Config { compress: false }, &NoReporter).unwrap();
        let mut image = std::fs::read(&out).unwrap();
        image.extend_from_slice(&[0xa5; 100]);
        let len = u64::try_from(image.len()).unwrap();
        let be64 = |b: &[u8], o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
        let l1_offset = usize::try_from(be64(&image, 40)).unwrap();
        let l2_offset = usize::try_from(be64(&image, l1_offset) & ((1 << 56) - 1)).unwrap();
        // One sector (size field 0) at `len + 1`: inside the rounded-up length.
        let entry = OFLAG_COMPRESSED | (len + 1);
        image[l2_offset..l2_offset + 8].copy_from_slice(&entry.to_be_bytes());
        std::fs::write(&out, &image).unwrap();
        let err = read_qcow2(&out, &mut std::io::sink()).unwrap_err();
        assert!(
            matches!(&err, Qcow2Error::Invalid { reason, .. } if reason.contains("compressed cluster out of range")),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_unaligned_and_bad_magic() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        std::fs::write(&raw, [0u8; 100]).unwrap();
        let out = dir.path().join("d.qcow2");
        let err = write_qcow2(&raw, &out, &Qcow2Config::default(), &NoReporter).unwrap_err();
        assert!(matches!(err, Qcow2Error::UnalignedSize { size: 100, .. }));
        std::fs::write(&out, [0u8; 4096]).unwrap();
        let err = read_qcow2(&out, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Qcow2Error::Invalid { offset: 0, .. }));
    }
}
