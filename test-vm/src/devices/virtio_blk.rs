//! virtio-blk request processing (virtio 1.2 §5.2), over a split virtqueue (§2.7).
//!
//! Pure with respect to the host: it reads requests from guest memory through vm-memory's
//! checked accessors and talks to a [`BlockBackend`]. Every guest-supplied index, address and
//! length is checked before use; each rule of the spec that a request can violate has its
//! own [`VirtioBlkError`] variant quoting the rule, and a test below.
//!
//! The device does not assume a descriptor layout (virtio 1.x has no `ANY_LAYOUT`
//! negotiation: "The device MUST NOT make assumptions about the particular arrangement of
//! descriptors", §2.7.4): the device-readable part of a chain is one byte stream (16-byte
//! header, then data for writes), the device-writable part another (data for reads, then the
//! status byte as its last byte).

use std::io;
use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::memory::GuestMemoryMmap;

/// Sector size in bytes (§5.2.6: sectors are always 512 bytes).
pub const SECTOR_SIZE: u64 = 512;
/// Read request.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Write request.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Flush request.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Get the device id string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: IO error.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: unsupported request.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// Length of the device id string.
pub const VIRTIO_BLK_ID_BYTES: usize = 20;
/// Feature bit: the device is read-only.
pub const VIRTIO_BLK_F_RO: u32 = 5;
/// Feature bit: the device supports the flush command.
pub const VIRTIO_BLK_F_FLUSH: u32 = 9;
/// Feature bit: indirect descriptors.
pub const VIRTIO_F_INDIRECT_DESC: u32 = 28;
/// Feature bit: virtio 1.x.
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// virtio device id of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Size of `struct virtio_blk_req`'s header (type, reserved, sector).
pub const REQUEST_HEADER_BYTES: u64 = 16;
/// Largest queue this device offers.
pub const QUEUE_MAX_SIZE: u16 = 256;
/// Descriptor flag: the chain continues at `next`.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: device-writable buffer.
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is an indirect descriptor table.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
const DESCRIPTOR_BYTES: u64 = 16;
const COPY_CHUNK_BYTES: usize = 64 * 1024;

/// A request or chain that breaks a rule of the virtio spec, or a backend failure.
#[derive(Debug, thiserror::Error)]
pub enum VirtioBlkError {
    /// §2.7.2: the available ring index moved by more than the queue size.
    #[error("available ring index jumped by more than the queue size")]
    AvailRing {
        /// virtio-queue's error.
        #[source]
        source: virtio_queue::Error,
    },
    /// §2.7.5: "next" must index the descriptor table.
    #[error("descriptor {index} in chain {head} is outside the {queue_size}-entry table")]
    DescriptorIndexOutOfRange {
        /// Chain head.
        head: u16,
        /// Offending index.
        index: u16,
        /// Queue size.
        queue_size: u16,
    },
    /// §2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total"
    /// and a chain can never be longer than the queue: a longer one loops.
    #[error("descriptor chain {head} loops or is longer than the queue ({queue_size})")]
    ChainLoop {
        /// Chain head.
        head: u16,
        /// Queue size.
        queue_size: u16,
    },
    /// §2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total".
    #[error("descriptor chain {head} is longer than 2^32 bytes")]
    ChainTooLarge {
        /// Chain head.
        head: u16,
    },
    /// §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag unless the
    /// VIRTIO_F_INDIRECT_DESC feature was negotiated".
    #[error("descriptor {index} in chain {head} is indirect, which was not negotiated")]
    IndirectNotNegotiated {
        /// Chain head.
        head: u16,
        /// Offending descriptor.
        index: u16,
    },
    /// §2.7.4.2: "The driver MUST place any device-writable descriptor elements after any
    /// device-readable descriptor elements".
    #[error("descriptor {index} in chain {head} is device-readable after a writable one")]
    ReadableAfterWritable {
        /// Chain head.
        head: u16,
        /// Offending descriptor.
        index: u16,
    },
    /// A buffer (or the descriptor table entry itself) is not inside guest memory.
    #[error("descriptor {index} in chain {head} points outside guest memory ({address:#x}+{len})")]
    OutsideGuestMemory {
        /// Chain head.
        head: u16,
        /// Offending descriptor.
        index: u16,
        /// Buffer address.
        address: u64,
        /// Buffer length.
        len: u32,
    },
    /// §5.2.6: the request starts with a 16-byte device-readable header.
    #[error("request {head} has {readable} readable bytes, less than the 16-byte header")]
    HeaderTooShort {
        /// Chain head.
        head: u16,
        /// Readable bytes in the chain.
        readable: u64,
    },
    /// §5.2.6: the request ends with a 1-byte device-writable status.
    #[error("request {head} has no device-writable status byte")]
    MissingStatus {
        /// Chain head.
        head: u16,
    },
    /// §5.2.6.2: data of a read is device-writable, data of a write device-readable.
    #[error("request {head} of type {request_type} has data in the wrong direction")]
    DataDirection {
        /// Chain head.
        head: u16,
        /// `type` field.
        request_type: u32,
    },
    /// §5.2.6.2: "A driver MUST NOT submit a request which would cause a read or write beyond
    /// capacity" and data is a multiple of 512 bytes.
    #[error("request {head} carries {len} data bytes, not a multiple of 512")]
    DataNotSectorMultiple {
        /// Chain head.
        head: u16,
        /// Data bytes.
        len: u64,
    },
    /// §5.2.6.2: "A driver MUST NOT submit a request which would cause a read or write beyond
    /// capacity".
    #[error("request {head} accesses sectors {sector}+{sectors} beyond the capacity of {capacity}")]
    SectorOutOfRange {
        /// Chain head.
        head: u16,
        /// First sector.
        sector: u64,
        /// Sector count.
        sectors: u64,
        /// Capacity in sectors.
        capacity: u64,
    },
    /// §5.2.6.1: "A device MUST set the status byte to VIRTIO_BLK_S_IOERR for a write request
    /// if the VIRTIO_BLK_F_RO feature if offered, and MUST NOT write any data".
    #[error("request {head} writes sector {sector} of a read-only device")]
    WriteToReadOnly {
        /// Chain head.
        head: u16,
        /// First sector.
        sector: u64,
    },
    /// §5.2.6.1: "A device MUST set the status byte to VIRTIO_BLK_S_UNSUPP for requests that
    /// it does not support".
    #[error("request {head} has unsupported type {request_type}")]
    Unsupported {
        /// Chain head.
        head: u16,
        /// `type` field.
        request_type: u32,
    },
    /// Reading or writing the backing image failed.
    #[error("request {head}: backend IO at byte offset {offset} failed")]
    Backend {
        /// Chain head.
        head: u16,
        /// Disk byte offset.
        offset: u64,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// Writing into guest memory failed although the range was checked (a bug or a race
    /// with memory hot-unplug, which this VMM does not do).
    #[error("request {head}: guest memory access at {address:#x} failed")]
    GuestMemory {
        /// Chain head.
        head: u16,
        /// Address.
        address: u64,
    },
    /// Updating the used ring failed (its address was validated when the queue became ready).
    #[error("cannot add chain {head} to the used ring")]
    UsedRing {
        /// Chain head.
        head: u16,
        /// virtio-queue's error.
        #[source]
        source: virtio_queue::Error,
    },
}

impl VirtioBlkError {
    /// The status byte the device reports for this error.
    #[must_use]
    pub fn status(&self) -> u8 {
        match self {
            VirtioBlkError::Unsupported { .. } => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        }
    }
}

/// Storage behind the device.
pub trait BlockBackend: Send {
    /// Size in 512-byte sectors.
    fn capacity_sectors(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset` (both within capacity).
    ///
    /// # Errors
    ///
    /// IO errors of the backing store.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `buf` at `offset` (both within capacity).
    ///
    /// # Errors
    ///
    /// IO errors of the backing store.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes earlier writes durable.
    ///
    /// # Errors
    ///
    /// IO errors of the backing store.
    fn flush(&mut self) -> io::Result<()>;
}

/// A disk held in memory (tests, fuzzing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryBackend {
    /// The disk bytes (a multiple of 512).
    pub bytes: Vec<u8>,
}

impl BlockBackend for MemoryBackend {
    fn capacity_sectors(&self) -> u64 {
        self.bytes.len() as u64 / SECTOR_SIZE
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let range = byte_range(offset, buf.len(), self.bytes.len())?;
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let range = byte_range(offset, buf.len(), self.bytes.len())?;
        self.bytes[range].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn byte_range(offset: u64, len: usize, size: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let end = start
        .checked_add(len)
        .filter(|&end| end <= size)
        .ok_or(io::ErrorKind::UnexpectedEof)?;
    Ok(start..end)
}

/// Device configuration relevant to request processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkConfig {
    /// Offer `VIRTIO_BLK_F_RO` and refuse writes.
    pub read_only: bool,
    /// Negotiated features (bit n = feature n).
    pub acked_features: u64,
    /// The `GET_ID` string (up to 20 bytes; shorter ones are NUL-terminated).
    pub id: [u8; VIRTIO_BLK_ID_BYTES],
}

impl BlkConfig {
    /// Read-write device without indirect descriptors, id `jeos`.
    #[must_use]
    pub fn new(read_only: bool) -> Self {
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
        id[..4].copy_from_slice(b"jeos");
        Self {
            read_only,
            acked_features: 1 << VIRTIO_F_VERSION_1,
            id,
        }
    }
}

/// Features this device offers.
#[must_use]
pub fn device_features(read_only: bool) -> u64 {
    let mut features = (1u64 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_BLK_F_FLUSH);
    if read_only {
        features |= 1 << VIRTIO_BLK_F_RO;
    }
    features
}

/// One descriptor as read from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Its index in the table.
    pub index: u16,
    /// Buffer address.
    pub address: u64,
    /// Buffer length.
    pub len: u32,
    /// Device-writable.
    pub writable: bool,
}

/// Walks the chain starting at `head`, checking every rule of §2.7.5 a device can check.
///
/// # Errors
///
/// The chain-shape variants of [`VirtioBlkError`].
pub fn read_chain(
    mem: &GuestMemoryMmap,
    desc_table: GuestAddress,
    queue_size: u16,
    head: u16,
    indirect_negotiated: bool,
) -> Result<Vec<Descriptor>, VirtioBlkError> {
    let mut chain = Vec::new();
    let mut index = head;
    let mut total: u64 = 0;
    let mut seen_writable = false;
    loop {
        if index >= queue_size {
            return Err(VirtioBlkError::DescriptorIndexOutOfRange {
                head,
                index,
                queue_size,
            });
        }
        if chain.len() >= usize::from(queue_size) {
            return Err(VirtioBlkError::ChainLoop { head, queue_size });
        }
        let entry_address = desc_table
            .0
            .checked_add(u64::from(index) * DESCRIPTOR_BYTES)
            .map(GuestAddress);
        let mut raw = [0u8; 16];
        entry_address
            .and_then(|a| mem.read_slice(&mut raw, a).ok())
            .ok_or(VirtioBlkError::OutsideGuestMemory {
                head,
                index,
                address: desc_table.0,
                len: 16,
            })?;
        let address = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
        let flags = u16::from_le_bytes(raw[12..14].try_into().expect("2 bytes"));
        let next = u16::from_le_bytes(raw[14..16].try_into().expect("2 bytes"));
        if flags & VIRTQ_DESC_F_INDIRECT != 0 && !indirect_negotiated {
            return Err(VirtioBlkError::IndirectNotNegotiated { head, index });
        }
        let writable = flags & VIRTQ_DESC_F_WRITE != 0;
        if seen_writable && !writable {
            return Err(VirtioBlkError::ReadableAfterWritable { head, index });
        }
        seen_writable |= writable;
        let in_memory = len == 0
            || usize::try_from(len).is_ok_and(|l| {
                mem.check_range(GuestAddress(address), l, vm_memory::Permissions::Read)
            });
        if !in_memory {
            return Err(VirtioBlkError::OutsideGuestMemory {
                head,
                index,
                address,
                len,
            });
        }
        total += u64::from(len);
        if total > u64::from(u32::MAX) {
            return Err(VirtioBlkError::ChainTooLarge { head });
        }
        chain.push(Descriptor {
            index,
            address,
            len,
            writable,
        });
        if flags & VIRTQ_DESC_F_NEXT == 0 {
            return Ok(chain);
        }
        index = next;
    }
}

/// A byte stream scattered over descriptors.
struct Stream<'a> {
    segments: Vec<&'a Descriptor>,
}

impl Stream<'_> {
    fn len(&self) -> u64 {
        self.segments.iter().map(|d| u64::from(d.len)).sum()
    }

    /// Guest ranges covering stream bytes `[start, start + len)`.
    fn ranges(&self, start: u64, len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut position = 0u64;
        let end = start + len;
        for d in &self.segments {
            let (s, e) = (position, position + u64::from(d.len));
            let (from, to) = (s.max(start), e.min(end));
            if from < to {
                out.push((d.address + (from - s), to - from));
            }
            position = e;
        }
        out
    }
}

/// What one request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Chain head.
    pub head: u16,
    /// Status byte written.
    pub status: u8,
    /// Bytes written into device-writable buffers (the used-ring `len`).
    pub written: u32,
}

fn memory_error(head: u16, address: u64) -> VirtioBlkError {
    VirtioBlkError::GuestMemory { head, address }
}

/// Processes one request chain: parse, check, run against `backend`, write the status.
/// Returns the completion; the error, if any, is the rule the request broke (its status is
/// already written when the chain had a status byte).
pub fn process_request(
    mem: &GuestMemoryMmap,
    chain: &[Descriptor],
    head: u16,
    backend: &mut dyn BlockBackend,
    config: &BlkConfig,
) -> (Completion, Option<VirtioBlkError>) {
    let readable = Stream {
        segments: chain.iter().filter(|d| !d.writable).collect(),
    };
    let writable = Stream {
        segments: chain.iter().filter(|d| d.writable).collect(),
    };
    let writable_len = writable.len();
    let Some(data_in_len) = writable_len.checked_sub(1) else {
        let completion = Completion {
            head,
            status: VIRTIO_BLK_S_IOERR,
            written: 0,
        };
        return (completion, Some(VirtioBlkError::MissingStatus { head }));
    };
    let status_address = writable
        .ranges(data_in_len, 1)
        .first()
        .map(|r| r.0)
        .expect("a writable stream of >= 1 byte has a last byte");
    let finish = |status: u8, written: u32, error: Option<VirtioBlkError>| {
        let error = match mem.write_obj(status, GuestAddress(status_address)) {
            Ok(()) => error,
            Err(_) => Some(memory_error(head, status_address)),
        };
        (
            Completion {
                head,
                status,
                written: written.saturating_add(1),
            },
            error,
        )
    };
    match execute(
        mem,
        &readable,
        &writable,
        data_in_len,
        head,
        backend,
        config,
    ) {
        Ok(written) => finish(VIRTIO_BLK_S_OK, written, None),
        Err(error) => finish(error.status(), 0, Some(error)),
    }
}

fn execute(
    mem: &GuestMemoryMmap,
    readable: &Stream<'_>,
    writable: &Stream<'_>,
    data_in_len: u64,
    head: u16,
    backend: &mut dyn BlockBackend,
    config: &BlkConfig,
) -> Result<u32, VirtioBlkError> {
    let readable_len = readable.len();
    if readable_len < REQUEST_HEADER_BYTES {
        return Err(VirtioBlkError::HeaderTooShort {
            head,
            readable: readable_len,
        });
    }
    let mut header = Vec::with_capacity(16);
    for (address, len) in readable.ranges(0, REQUEST_HEADER_BYTES) {
        let mut part = vec![0u8; usize::try_from(len).expect("<= 16")];
        mem.read_slice(&mut part, GuestAddress(address))
            .map_err(|_| memory_error(head, address))?;
        header.extend(part);
    }
    let request_type = u32::from_le_bytes(header[0..4].try_into().expect("16-byte header"));
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("16-byte header"));
    let data_out_len = readable_len - REQUEST_HEADER_BYTES;
    match request_type {
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
            let is_read = request_type == VIRTIO_BLK_T_IN;
            let (data_len, wrong_way) = if is_read {
                (data_in_len, data_out_len)
            } else {
                (data_out_len, data_in_len)
            };
            if wrong_way != 0 {
                return Err(VirtioBlkError::DataDirection { head, request_type });
            }
            if data_len % SECTOR_SIZE != 0 {
                return Err(VirtioBlkError::DataNotSectorMultiple {
                    head,
                    len: data_len,
                });
            }
            let sectors = data_len / SECTOR_SIZE;
            let capacity = backend.capacity_sectors();
            if sector.checked_add(sectors).is_none_or(|end| end > capacity) {
                return Err(VirtioBlkError::SectorOutOfRange {
                    head,
                    sector,
                    sectors,
                    capacity,
                });
            }
            if !is_read && config.read_only {
                return Err(VirtioBlkError::WriteToReadOnly { head, sector });
            }
            // sector + sectors <= capacity, so the byte offset fits u64.
            let mut offset = sector * SECTOR_SIZE;
            let ranges = if is_read {
                writable.ranges(0, data_len)
            } else {
                readable.ranges(REQUEST_HEADER_BYTES, data_len)
            };
            let mut buffer = Vec::new();
            for (address, len) in ranges {
                let mut done = 0u64;
                while done < len {
                    let chunk = (len - done).min(COPY_CHUNK_BYTES as u64);
                    buffer.resize(usize::try_from(chunk).expect("<= 64 KiB"), 0);
                    let guest = GuestAddress(address + done);
                    if is_read {
                        backend.read_at(offset, &mut buffer).map_err(|source| {
                            VirtioBlkError::Backend {
                                head,
                                offset,
                                source,
                            }
                        })?;
                        mem.write_slice(&buffer, guest)
                            .map_err(|_| memory_error(head, guest.0))?;
                    } else {
                        mem.read_slice(&mut buffer, guest)
                            .map_err(|_| memory_error(head, guest.0))?;
                        backend.write_at(offset, &buffer).map_err(|source| {
                            VirtioBlkError::Backend {
                                head,
                                offset,
                                source,
                            }
                        })?;
                    }
                    done += chunk;
                    offset += chunk;
                }
            }
            Ok(if is_read {
                u32::try_from(data_len).expect("chains are at most 2^32 bytes")
            } else {
                0
            })
        }
        VIRTIO_BLK_T_FLUSH => {
            backend.flush().map_err(|source| VirtioBlkError::Backend {
                head,
                offset: 0,
                source,
            })?;
            Ok(0)
        }
        VIRTIO_BLK_T_GET_ID => {
            if data_out_len != 0 {
                return Err(VirtioBlkError::DataDirection { head, request_type });
            }
            let len = data_in_len.min(VIRTIO_BLK_ID_BYTES as u64);
            let mut copied = 0usize;
            for (address, part) in writable.ranges(0, len) {
                let part = usize::try_from(part).expect("<= 20");
                mem.write_slice(&config.id[copied..copied + part], GuestAddress(address))
                    .map_err(|_| memory_error(head, address))?;
                copied += part;
            }
            Ok(u32::try_from(len).expect("<= 20"))
        }
        _ => Err(VirtioBlkError::Unsupported { head, request_type }),
    }
}

/// What [`process_queue`] did.
#[derive(Debug, Default)]
pub struct QueueReport {
    /// Completed requests (added to the used ring).
    pub completions: Vec<Completion>,
    /// Rules broken by the driver and backend failures, in order.
    pub errors: Vec<VirtioBlkError>,
    /// Whether the driver wants an interrupt for the new used entries.
    pub needs_interrupt: bool,
}

/// Drains the available ring of `queue`: every chain is processed and returned to the used
/// ring (with `len` 0 when the chain was too malformed to carry a status byte).
pub fn process_queue(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    backend: &mut dyn BlockBackend,
    config: &BlkConfig,
) -> QueueReport {
    let mut report = QueueReport::default();
    let indirect = config.acked_features & (1 << VIRTIO_F_INDIRECT_DESC) != 0;
    let heads: Vec<u16> = match queue.iter(mem) {
        Ok(iter) => iter.map(|chain| chain.head_index()).collect(),
        Err(source) => {
            report.errors.push(VirtioBlkError::AvailRing { source });
            return report;
        }
    };
    let desc_table = GuestAddress(queue.desc_table());
    let queue_size = queue.size();
    for head in heads {
        let completion = match read_chain(mem, desc_table, queue_size, head, indirect) {
            Ok(chain) => {
                let (completion, error) = process_request(mem, &chain, head, backend, config);
                report.errors.extend(error);
                completion
            }
            Err(error) => {
                report.errors.push(error);
                Completion {
                    head,
                    status: VIRTIO_BLK_S_IOERR,
                    written: 0,
                }
            }
        };
        match queue.add_used(mem, completion.head, completion.written) {
            Ok(()) => report.completions.push(completion),
            Err(source) => report
                .errors
                .push(VirtioBlkError::UsedRing { head, source }),
        }
    }
    std::sync::atomic::fence(Ordering::SeqCst);
    report.needs_interrupt =
        !report.completions.is_empty() && queue.needs_notification(mem).unwrap_or(true);
    report
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const DESC: u64 = 0x1000;
    pub(crate) const AVAIL: u64 = 0x2000;
    pub(crate) const USED: u64 = 0x3000;
    const QSIZE: u16 = 16;

    pub(crate) fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn disk(sectors: usize) -> MemoryBackend {
        MemoryBackend {
            bytes: (0..sectors * 512)
                .map(|i| (i / 512) as u8 ^ (i as u8))
                .collect(),
        }
    }

    fn put_desc(mem: &GuestMemoryMmap, index: u16, address: u64, len: u32, flags: u16, next: u16) {
        let base = GuestAddress(DESC + u64::from(index) * 16);
        mem.write_obj(address, base).unwrap();
        mem.write_obj(len, GuestAddress(base.0 + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(base.0 + 12)).unwrap();
        mem.write_obj(next, GuestAddress(base.0 + 14)).unwrap();
    }

    fn put_header(mem: &GuestMemoryMmap, address: u64, request_type: u32, sector: u64) {
        mem.write_obj(request_type, GuestAddress(address)).unwrap();
        mem.write_obj(0u32, GuestAddress(address + 4)).unwrap();
        mem.write_obj(sector, GuestAddress(address + 8)).unwrap();
    }

    /// A chain of (address, len, writable) buffers starting at descriptor 0.
    fn put_chain(mem: &GuestMemoryMmap, buffers: &[(u64, u32, bool)]) {
        for (i, &(address, len, writable)) in buffers.iter().enumerate() {
            let i = u16::try_from(i).unwrap();
            let last = usize::from(i) + 1 == buffers.len();
            let flags = if writable { VIRTQ_DESC_F_WRITE } else { 0 }
                | if last { 0 } else { VIRTQ_DESC_F_NEXT };
            put_desc(mem, i, address, len, flags, i + 1);
        }
    }

    pub(crate) fn ready_queue(mem: &GuestMemoryMmap, heads: &[u16]) -> Queue {
        let mut queue = Queue::new(QSIZE).unwrap();
        queue.set_size(QSIZE);
        queue.set_desc_table_address(Some(DESC as u32), Some(0));
        queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        queue.set_used_ring_address(Some(USED as u32), Some(0));
        queue.set_ready(true);
        for (i, &head) in heads.iter().enumerate() {
            mem.write_obj(head, GuestAddress(AVAIL + 4 + 2 * i as u64))
                .unwrap();
        }
        mem.write_obj(u16::try_from(heads.len()).unwrap(), GuestAddress(AVAIL + 2))
            .unwrap();
        queue
    }

    fn run(mem: &GuestMemoryMmap, backend: &mut MemoryBackend, config: &BlkConfig) -> QueueReport {
        let mut queue = ready_queue(mem, &[0]);
        process_queue(mem, &mut queue, backend, config)
    }

    fn used_len(mem: &GuestMemoryMmap) -> u32 {
        mem.read_obj(GuestAddress(USED + 8)).unwrap()
    }

    fn status(mem: &GuestMemoryMmap, address: u64) -> u8 {
        mem.read_obj(GuestAddress(address)).unwrap()
    }

    #[test]
    fn read_request_copies_sectors() {
        let mem = memory();
        let mut backend = disk(8);
        put_header(&mem, 0x4000, VIRTIO_BLK_T_IN, 2);
        put_chain(
            &mem,
            &[(0x4000, 16, false), (0x5000, 1024, true), (0x6000, 1, true)],
        );
        let report = run(&mem, &mut backend, &BlkConfig::new(false));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.needs_interrupt);
        let mut data = vec![0u8; 1024];
        mem.read_slice(&mut data, GuestAddress(0x5000)).unwrap();
        assert_eq!(data, backend.bytes[1024..2048]);
        assert_eq!(status(&mem, 0x6000), VIRTIO_BLK_S_OK);
        assert_eq!(used_len(&mem), 1025);
    }

    #[test]
    fn layout_agnostic_header_data_and_status_in_one_buffer_each_way() {
        // Header split over two descriptors; data and status in one writable descriptor.
        let mem = memory();
        let mut backend = disk(4);
        put_header(&mem, 0x4000, VIRTIO_BLK_T_IN, 1);
        put_chain(
            &mem,
            &[(0x4000, 8, false), (0x4008, 8, false), (0x5000, 513, true)],
        );
        let report = run(&mem, &mut backend, &BlkConfig::new(false));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let mut data = vec![0u8; 512];
        mem.read_slice(&mut data, GuestAddress(0x5000)).unwrap();
        assert_eq!(data, backend.bytes[512..1024]);
        assert_eq!(status(&mem, 0x5200), VIRTIO_BLK_S_OK);
    }

    #[test]
    fn write_request_updates_backend() {
        let mem = memory();
        let mut backend = disk(4);
        put_header(&mem, 0x4000, VIRTIO_BLK_T_OUT, 3);
        mem.write_slice(&[0xab; 512], GuestAddress(0x5000)).unwrap();
        put_chain(
            &mem,
            &[(0x4000, 16, false), (0x5000, 512, false), (0x6000, 1, true)],
        );
        let report = run(&mem, &mut backend, &BlkConfig::new(false));
        assert!(report.errors.is_empty());
        assert_eq!(backend.bytes[1536..2048], [0xab; 512]);
        assert_eq!(status(&mem, 0x6000), VIRTIO_BLK_S_OK);
        assert_eq!(used_len(&mem), 1);
    }

    #[test]
    fn flush_succeeds() {
        let mem = memory();
        let mut backend = disk(1);
        put_header(&mem, 0x4000, VIRTIO_BLK_T_FLUSH, 0);
        put_chain(&mem, &[(0x4000, 16, false), (0x6000, 1, true)]);
        let report = run(&mem, &mut backend, &BlkConfig::new(false));
        assert!(report.errors.is_empty());
        assert_eq!(status(&mem, 0x6000), VIRTIO_BLK_S_OK);
    }

    #[test]
    fn get_id_writes_the_id_string() {
        let mem = memory();
        let mut backend = disk(1);
        put_header(&mem, 0x4000, VIRTIO_BLK_T_GET_ID, 0);
        put_chain(
            &mem,
            &[(0x4000, 16, false), (0x5000, 20, true), (0x6000, 1, true)],
        );
        let report = run(&mem, &mut backend, &BlkConfig::new(false));
        assert!(report.errors.is_empty());
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(0x5000)).unwrap();
        assert_eq!(&id[..5], b"jeos\0");
        assert_eq!(used_len(&mem), 21);
        assert_eq!(status(&mem, 0x6000), VIRTIO_BLK_S_OK);
    }

    #[test]
    fn unsupported_type_gets_unsupp() {
        let mem = memory();
        let mut backend = disk(1);
        put_header(&mem, 0x4000, 11, 0); // VIRTIO_BLK_T_DISCARD, not offered
        put_chain(&mem, &[(0x4000, 16, false), (0x6000, 1, true)]);
        let report = run(&mem, &mut backend, &BlkConfig::new(false));
        assert!(matches!(
            report.errors[..],
            [VirtioBlkError::Unsupported {
                request_type: 11,
                ..
            }]
        ));
        assert_eq!(status(&mem, 0x6000), VIRTIO_BLK_S_UNSUPP);
        assert_eq!(used_len(&mem), 1);
    }

    fn expect_ioerr(
        buffers: &[(u64, u32, bool)],
        request_type: u32,
        sector: u64,
    ) -> VirtioBlkError {
        let mem = memory();
        let mut backend = disk(4);
        let before = backend.clone();
        put_header(&mem, 0x4000, request_type, sector);
        mem.write_obj(0xffu8, GuestAddress(0x6000)).unwrap();
        put_chain(&mem, buffers);
        let mut report = run(&mem, &mut backend, &BlkConfig::new(false));
        assert_eq!(report.completions.len(), 1, "the chain is always returned");
        assert_eq!(backend, before, "a rejected request changes nothing");
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        report.errors.remove(0)
    }

    #[test]
    fn header_too_short() {
        let e = expect_ioerr(
            &[(0x4000, 15, false), (0x6000, 1, true)],
            VIRTIO_BLK_T_IN,
            0,
        );
        assert!(matches!(
            e,
            VirtioBlkError::HeaderTooShort { readable: 15, .. }
        ));
    }

    #[test]
    fn missing_status_byte() {
        let e = expect_ioerr(
            &[(0x4000, 16, false), (0x5000, 512, false)],
            VIRTIO_BLK_T_OUT,
            0,
        );
        assert!(matches!(e, VirtioBlkError::MissingStatus { .. }));
    }

    #[test]
    fn read_with_readable_data_is_wrong_direction() {
        let e = expect_ioerr(
            &[(0x4000, 16, false), (0x5000, 512, false), (0x6000, 1, true)],
            VIRTIO_BLK_T_IN,
            0,
        );
        assert!(matches!(
            e,
            VirtioBlkError::DataDirection {
                request_type: 0,
                ..
            }
        ));
    }

    #[test]
    fn write_with_writable_data_is_wrong_direction() {
        let e = expect_ioerr(
            &[(0x4000, 16, false), (0x5000, 512, true), (0x6000, 1, true)],
            VIRTIO_BLK_T_OUT,
            0,
        );
        assert!(matches!(
            e,
            VirtioBlkError::DataDirection {
                request_type: 1,
                ..
            }
        ));
    }

    #[test]
    fn data_not_multiple_of_512() {
        let e = expect_ioerr(
            &[(0x4000, 16, false), (0x5000, 100, true), (0x6000, 1, true)],
            VIRTIO_BLK_T_IN,
            0,
        );
        assert!(matches!(
            e,
            VirtioBlkError::DataNotSectorMultiple { len: 100, .. }
        ));
    }

    #[test]
    fn sector_beyond_capacity() {
        let e = expect_ioerr(
            &[(0x4000, 16, false), (0x5000, 1024, true), (0x6000, 1, true)],
            VIRTIO_BLK_T_IN,
            3,
        );
        assert!(matches!(
            e,
            VirtioBlkError::SectorOutOfRange {
                sector: 3,
                sectors: 2,
                capacity: 4,
                ..
            }
        ));
        let e = expect_ioerr(
            &[(0x4000, 16, false), (0x5000, 512, true), (0x6000, 1, true)],
            VIRTIO_BLK_T_IN,
            u64::MAX,
        );
        assert!(matches!(e, VirtioBlkError::SectorOutOfRange { .. }));
    }

    #[test]
    fn write_to_read_only_device() {
        let mem = memory();
        let mut backend = disk(4);
        let before = backend.clone();
        put_header(&mem, 0x4000, VIRTIO_BLK_T_OUT, 0);
        put_chain(
            &mem,
            &[(0x4000, 16, false), (0x5000, 512, false), (0x6000, 1, true)],
        );
        let report = run(&mem, &mut backend, &BlkConfig::new(true));
        assert!(matches!(
            report.errors[..],
            [VirtioBlkError::WriteToReadOnly { sector: 0, .. }]
        ));
        assert_eq!(status(&mem, 0x6000), VIRTIO_BLK_S_IOERR);
        assert_eq!(backend, before);
        assert_ne!(device_features(true) & (1 << VIRTIO_BLK_F_RO), 0);
    }

    #[test]
    fn readable_after_writable() {
        let e = expect_ioerr(
            &[(0x4000, 16, false), (0x6000, 1, true), (0x5000, 512, false)],
            VIRTIO_BLK_T_OUT,
            0,
        );
        assert!(matches!(
            e,
            VirtioBlkError::ReadableAfterWritable { index: 2, .. }
        ));
    }

    #[test]
    fn buffer_outside_guest_memory() {
        let e = expect_ioerr(
            &[
                (0x4000, 16, false),
                (0xfff_ff00, 512, true),
                (0x6000, 1, true),
            ],
            VIRTIO_BLK_T_IN,
            0,
        );
        assert!(matches!(
            e,
            VirtioBlkError::OutsideGuestMemory {
                index: 1,
                address: 0xfff_ff00,
                ..
            }
        ));
        let e = expect_ioerr(
            &[
                (0x4000, 16, false),
                (u64::MAX - 10, 512, true),
                (0x6000, 1, true),
            ],
            VIRTIO_BLK_T_IN,
            0,
        );
        assert!(matches!(e, VirtioBlkError::OutsideGuestMemory { .. }));
    }

    #[test]
    fn chain_loop_is_detected() {
        let mem = memory();
        put_header(&mem, 0x4000, VIRTIO_BLK_T_IN, 0);
        put_desc(&mem, 0, 0x4000, 16, VIRTQ_DESC_F_NEXT, 1);
        put_desc(
            &mem,
            1,
            0x5000,
            512,
            VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            1,
        );
        let mut backend = disk(1);
        let report = run(&mem, &mut backend, &BlkConfig::new(false));
        assert!(matches!(
            report.errors[..],
            [VirtioBlkError::ChainLoop {
                head: 0,
                queue_size: 16
            }]
        ));
        assert_eq!(report.completions[0].written, 0);
        assert_eq!(used_len(&mem), 0);
    }

    #[test]
    fn next_index_out_of_range() {
        let mem = memory();
        put_desc(&mem, 0, 0x4000, 16, VIRTQ_DESC_F_NEXT, 16);
        let mut backend = disk(1);
        let report = run(&mem, &mut backend, &BlkConfig::new(false));
        assert!(matches!(
            report.errors[..],
            [VirtioBlkError::DescriptorIndexOutOfRange { index: 16, .. }]
        ));
    }

    #[test]
    fn head_index_out_of_range_is_not_added_to_used_ring() {
        let mem = memory();
        let mut queue = ready_queue(&mem, &[40]);
        let report = process_queue(&mem, &mut queue, &mut disk(1), &BlkConfig::new(false));
        assert!(matches!(
            report.errors[..],
            [
                VirtioBlkError::DescriptorIndexOutOfRange { index: 40, .. },
                VirtioBlkError::UsedRing { head: 40, .. }
            ]
        ));
        assert!(!report.needs_interrupt);
    }

    #[test]
    fn indirect_without_negotiation() {
        let mem = memory();
        put_desc(&mem, 0, 0x4000, 32, VIRTQ_DESC_F_INDIRECT, 0);
        let report = run(&mem, &mut disk(1), &BlkConfig::new(false));
        assert!(matches!(
            report.errors[..],
            [VirtioBlkError::IndirectNotNegotiated { index: 0, .. }]
        ));
    }

    #[test]
    fn chain_larger_than_4_gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0100_0000)]);
        let Ok(mem) = mem else {
            eprintln!("SKIPPED: cannot reserve 4 GiB of address space");
            return;
        };
        put_desc(&mem, 0, 0x10_0000, u32::MAX, VIRTQ_DESC_F_NEXT, 1);
        put_desc(&mem, 1, 0x10_0000, 16, VIRTQ_DESC_F_WRITE, 0);
        let err = read_chain(&mem, GuestAddress(DESC), 16, 0, false).unwrap_err();
        assert!(matches!(err, VirtioBlkError::ChainTooLarge { head: 0 }));
    }

    #[test]
    fn avail_index_jump_is_rejected() {
        let mem = memory();
        let mut queue = ready_queue(&mem, &[0]);
        mem.write_obj(100u16, GuestAddress(AVAIL + 2)).unwrap();
        let report = process_queue(&mem, &mut queue, &mut disk(1), &BlkConfig::new(false));
        assert!(matches!(
            report.errors[..],
            [VirtioBlkError::AvailRing { .. }]
        ));
    }

    #[test]
    fn backend_failure_is_ioerr() {
        struct Failing;
        impl BlockBackend for Failing {
            fn capacity_sectors(&self) -> u64 {
                8
            }
            fn read_at(&mut self, _: u64, _: &mut [u8]) -> io::Result<()> {
                Err(io::Error::other("disk on fire"))
            }
            fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
                Err(io::Error::other("disk on fire"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mem = memory();
        put_header(&mem, 0x4000, VIRTIO_BLK_T_IN, 0);
        put_chain(
            &mem,
            &[(0x4000, 16, false), (0x5000, 512, true), (0x6000, 1, true)],
        );
        let mut queue = ready_queue(&mem, &[0]);
        let report = process_queue(&mem, &mut queue, &mut Failing, &BlkConfig::new(false));
        assert!(matches!(
            report.errors[..],
            [VirtioBlkError::Backend { offset: 0, .. }]
        ));
        assert_eq!(status(&mem, 0x6000), VIRTIO_BLK_S_IOERR);
    }

    /// The fuzz target's property on deterministic pseudo-random memory: never panics, and
    /// the used index equals the number of completions.
    #[test]
    fn random_rings_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..300u64 {
            let mem = memory();
            let mut bytes = vec![0u8; 0x4000];
            for chunk in bytes.chunks_mut(8) {
                let value = next();
                // Bias addresses into guest memory half of the time.
                let value = if round % 2 == 0 {
                    value & 0x7_ffff
                } else {
                    value
                };
                chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
            }
            mem.write_slice(&bytes, GuestAddress(0)).unwrap();
            mem.write_obj(u16::try_from(next() % 40).unwrap(), GuestAddress(AVAIL + 2))
                .unwrap();
            mem.write_obj(0u16, GuestAddress(USED + 2)).unwrap();
            let mut queue = Queue::new(QSIZE).unwrap();
            queue.set_size(QSIZE);
            queue.set_desc_table_address(Some(DESC as u32), Some(0));
            queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
            queue.set_used_ring_address(Some(USED as u32), Some(0));
            queue.set_ready(true);
            let mut backend = disk(8);
            let report = process_queue(
                &mem,
                &mut queue,
                &mut backend,
                &BlkConfig::new(round % 3 == 0),
            );
            let used: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
            assert_eq!(usize::from(used), report.completions.len());
            assert_eq!(backend.bytes.len(), 8 * 512);
        }
    }

    #[test]
    fn several_requests_in_one_notification() {
        let mem = memory();
        let mut backend = disk(4);
        put_header(&mem, 0x4000, VIRTIO_BLK_T_IN, 0);
        put_header(&mem, 0x4100, VIRTIO_BLK_T_IN, 1);
        put_desc(&mem, 0, 0x4000, 16, VIRTQ_DESC_F_NEXT, 1);
        put_desc(&mem, 1, 0x5000, 513, VIRTQ_DESC_F_WRITE, 0);
        put_desc(&mem, 2, 0x4100, 16, VIRTQ_DESC_F_NEXT, 3);
        put_desc(&mem, 3, 0x6000, 513, VIRTQ_DESC_F_WRITE, 0);
        let mut queue = ready_queue(&mem, &[0, 2]);
        let report = process_queue(&mem, &mut queue, &mut backend, &BlkConfig::new(false));
        assert_eq!(report.completions.len(), 2);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 2);
        let mut second = vec![0u8; 512];
        mem.read_slice(&mut second, GuestAddress(0x6000)).unwrap();
        assert_eq!(second, backend.bytes[512..1024]);
    }
}
