//! virtio-vsock (virtio 1.2 §5.10), device id 19, over virtio-mmio: the guest's rx, tx
//! and event queues on one side, [`muxer::VsockMuxer`] (Unix sockets on the host,
//! Firecracker's hybrid model) on the other.
//!
//! ```text
//! guest tx queue ─▶ read_chain (§2.7 rules) ─▶ header checks (packet.rs) ─▶ muxer ─▶ host
//! guest rx queue ◀─ write header + payload ◀── muxer (credit-limited reads) ◀──────── host
//! ```
//! Every chain the driver offers is returned to the used ring, broken or not; each broken
//! rule is one [`VsockError`] variant. Only stream sockets are offered (no
//! `VIRTIO_VSOCK_F_SEQPACKET`); the event queue is never used (no live migration, so no
//! `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`).

pub mod muxer;
pub mod packet;

use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use self::muxer::VsockMuxer;
use self::packet::{HEADER_BYTES, MAX_PAYLOAD_BYTES, VsockHeader, check_tx_header};
use super::virtio_blk::{Descriptor, VIRTIO_F_VERSION_1, VirtioBlkError, read_chain};
use crate::memory::GuestMemoryMmap;

/// Device id of the socket device (§5.10.1).
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// The CID the guest gets (the lowest one not reserved, §5.10.4).
pub const GUEST_CID: u64 = 3;
/// Queue index: device → driver packets.
pub const RX_QUEUE: usize = 0;
/// Queue index: driver → device packets.
pub const TX_QUEUE: usize = 1;
/// Queue index: device events.
pub const EVENT_QUEUE: usize = 2;

/// A packet or chain that broke a rule of the virtio spec, or a connection-level rule.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The descriptor chain itself is malformed (§2.7.5 rules, shared with virtio-blk).
    #[error("malformed descriptor chain")]
    Chain(#[source] VirtioBlkError),
    /// §5.10.6.4: tx buffers are device-readable ("The driver queues outgoing packets on
    /// the tx virtqueue"); the device writes nothing into them.
    #[error("tx chain {head} has a device-writable descriptor")]
    TxChainWritable {
        /// Chain head.
        head: u16,
    },
    /// §5.10.6.4: rx buffers are device-writable ("The driver queues incoming buffers on
    /// the rx virtqueue").
    #[error("rx chain {head} has a device-readable descriptor")]
    RxChainReadable {
        /// Chain head.
        head: u16,
    },
    /// §5.10.6: every packet starts with the 44-byte `struct virtio_vsock_hdr`.
    #[error("tx chain {head} has {readable} bytes, less than the 44-byte header")]
    HeaderTooShort {
        /// Chain head.
        head: u16,
        /// Readable bytes.
        readable: u64,
    },
    /// §5.10.6.4: an rx buffer must hold at least a header.
    #[error("rx chain {head} has {writable} writable bytes, less than the 44-byte header")]
    RxBufferTooSmall {
        /// Chain head.
        head: u16,
        /// Writable bytes.
        writable: u64,
    },
    /// §5.10.6.2: "The upper 32 bits of src_cid and dst_cid are reserved and zeroed."
    #[error("CID {cid:#x} has reserved upper bits set")]
    ReservedCidBits {
        /// The CID.
        cid: u64,
    },
    /// §5.10.6.2: the driver sends from its own CID (`guest_cid` in config space).
    #[error("packet from CID {src_cid}, but the guest's CID is {guest_cid}")]
    SourceCidNotGuest {
        /// `src_cid`.
        src_cid: u64,
        /// The configured CID.
        guest_cid: u64,
    },
    /// §5.10.4: the device connects the guest with the host (CID 2) only.
    #[error("packet for CID {dst_cid}; only the host (CID 2) is reachable")]
    DestinationNotHost {
        /// `dst_cid`.
        dst_cid: u64,
    },
    /// §5.10.6.6: "When the device receives a packet with an unknown type value ... it
    /// MUST reply with VIRTIO_VSOCK_OP_RST" (only streams exist without SEQPACKET).
    #[error("packet of unknown socket type {socket_type}")]
    UnknownType {
        /// `type`.
        socket_type: u16,
    },
    /// §5.10.6: `op` is one of `VIRTIO_VSOCK_OP_*` (1 to 7).
    #[error("packet with unknown op {op}")]
    UnknownOp {
        /// `op`.
        op: u16,
    },
    /// A payload larger than any driver sends (64 KiB, Linux's maximum packet buffer).
    #[error("packet payload of {len} bytes exceeds 64 KiB")]
    PayloadTooLarge {
        /// `len`.
        len: u32,
    },
    /// §5.10.6.4: the payload of `len` bytes follows the header in the chain.
    #[error("packet announces {len} payload bytes but its chain carries {available}")]
    PayloadTruncated {
        /// `len`.
        len: u32,
        /// Bytes after the header.
        available: u64,
    },
    /// §5.10.6.4: only `VIRTIO_VSOCK_OP_RW` carries data.
    #[error("control packet (op {op}) carries {len} payload bytes")]
    PayloadOnControlPacket {
        /// `op`.
        op: u16,
        /// `len`.
        len: u32,
    },
    /// §5.10.6.6: `VIRTIO_VSOCK_OP_SHUTDOWN` flags are `VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE`
    /// and `..._F_SEND`.
    #[error("shutdown flags {flags:#x} are not RECEIVE/SEND bits")]
    InvalidShutdownFlags {
        /// `flags`.
        flags: u32,
    },
    /// §5.10.6.3.1: "VIRTIO_VSOCK_OP_RW data packets MUST only be transmitted when the
    /// peer has sufficient free buffer space for the payload." The connection is reset.
    #[error("guest port {port} sent {len} bytes with only {free} bytes of credit")]
    CreditExceeded {
        /// Guest port.
        port: u32,
        /// Payload bytes.
        len: u32,
        /// Free buffer space.
        free: u32,
    },
    /// §5.10.6.6: an op that is invalid in the connection's state (data before the
    /// connection is established, a RESPONSE to nothing). The connection is reset.
    #[error("guest port {port} sent op {op}, which its connection state does not allow")]
    UnexpectedOp {
        /// `op`.
        op: u16,
        /// Guest port.
        port: u32,
    },
    /// A REQUEST for a connection that already exists; both are reset.
    #[error("guest port {port} requested a connection that already exists")]
    DuplicateRequest {
        /// Guest port.
        port: u32,
    },
    /// More than [`muxer::MAX_CONNECTIONS`] connections; the request is refused.
    #[error("too many vsock connections (limit {})", muxer::MAX_CONNECTIONS)]
    TooManyConnections,
    /// Writing a packet into guest memory failed although the range was checked.
    #[error("rx chain {head}: guest memory access at {address:#x} failed")]
    GuestMemory {
        /// Chain head.
        head: u16,
        /// Address.
        address: u64,
    },
    /// Updating a used ring failed (its address was validated when the queue became ready).
    #[error("cannot add chain {head} to the used ring")]
    UsedRing {
        /// Chain head.
        head: u16,
        /// virtio-queue's error.
        #[source]
        source: virtio_queue::Error,
    },
    /// §2.7.2: the available ring index moved by more than the queue size.
    #[error("available ring index jumped by more than the queue size")]
    AvailRing {
        /// virtio-queue's error.
        #[source]
        source: virtio_queue::Error,
    },
}

impl VsockError {
    /// Whether the spec asks the device to answer the packet with a RST.
    #[must_use]
    pub fn wants_reset(&self) -> bool {
        matches!(
            self,
            VsockError::UnknownType { .. }
                | VsockError::UnknownOp { .. }
                | VsockError::DestinationNotHost { .. }
                | VsockError::InvalidShutdownFlags { .. }
                | VsockError::PayloadOnControlPacket { .. }
        )
    }
}

/// What one queue pass did.
#[derive(Debug, Default)]
pub struct VsockReport {
    /// Rules broken, in order.
    pub errors: Vec<VsockError>,
    /// Chains returned to a used ring.
    pub used: usize,
    /// Whether the driver wants an interrupt.
    pub needs_interrupt: bool,
}

impl VsockReport {
    fn merge(&mut self, other: VsockReport) {
        self.errors.extend(other.errors);
        self.used += other.used;
        self.needs_interrupt |= other.needs_interrupt;
    }
}

/// The device behind the transport.
#[derive(Debug)]
pub struct VsockDevice {
    /// The guest's CID (config space).
    pub guest_cid: u64,
    /// The host side.
    pub muxer: VsockMuxer,
    /// Set when the last rx pass ran out of guest buffers; cleared by an rx notify.
    pub rx_starved: bool,
    /// Written on every queue notify so the host poll loop re-evaluates its interest.
    pub wake: Option<EventFd>,
}

/// Features offered: `VIRTIO_F_VERSION_1` only.
#[must_use]
pub fn device_features() -> u64 {
    1 << VIRTIO_F_VERSION_1
}

impl VsockDevice {
    /// A device for `guest_cid` over `muxer`.
    #[must_use]
    pub fn new(guest_cid: u64, muxer: VsockMuxer) -> Self {
        Self {
            guest_cid,
            muxer,
            rx_starved: false,
            wake: None,
        }
    }

    /// `struct virtio_vsock_config`: `le64 guest_cid`.
    #[must_use]
    pub fn config_space(&self) -> [u8; 8] {
        self.guest_cid.to_le_bytes()
    }

    /// The guest notified queue `index`.
    pub fn notify(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        index: usize,
    ) -> VsockReport {
        if let Some(wake) = &self.wake {
            let _ = wake.write(1);
        }
        let mut report = VsockReport::default();
        if index == TX_QUEUE
            && let Some(tx) = queues.get_mut(TX_QUEUE)
        {
            report.merge(self.process_tx(mem, tx));
        }
        if index == RX_QUEUE {
            self.rx_starved = false;
        }
        if let Some(rx) = queues.get_mut(RX_QUEUE).filter(|q| q.ready()) {
            report.merge(self.fill_rx(mem, rx));
        }
        report
    }

    /// Host IO happened: accept, flush and move host bytes into the rx queue.
    pub fn pump(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue]) -> VsockReport {
        self.muxer.pump_host();
        match queues.get_mut(RX_QUEUE).filter(|q| q.ready()) {
            Some(rx) => self.fill_rx(mem, rx),
            None => VsockReport::default(),
        }
    }

    /// Drains the tx queue: every packet is checked and handed to the muxer.
    pub fn process_tx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> VsockReport {
        let mut report = VsockReport::default();
        let heads: Vec<u16> = match queue.iter(mem) {
            Ok(iter) => iter.map(|chain| chain.head_index()).collect(),
            Err(source) => {
                report.errors.push(VsockError::AvailRing { source });
                return report;
            }
        };
        let desc_table = GuestAddress(queue.desc_table());
        for head in heads {
            let result = read_chain(mem, desc_table, queue.size(), head, false)
                .map_err(VsockError::Chain)
                .and_then(|chain| self.handle_tx_chain(mem, head, &chain));
            if let Err(error) = result {
                report.errors.push(error);
            }
            // tx buffers are read-only for the device: the used length is 0.
            match queue.add_used(mem, head, 0) {
                Ok(()) => report.used += 1,
                Err(source) => report.errors.push(VsockError::UsedRing { head, source }),
            }
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        report.needs_interrupt = report.used > 0 && queue.needs_notification(mem).unwrap_or(true);
        report
    }

    fn handle_tx_chain(
        &mut self,
        mem: &GuestMemoryMmap,
        head: u16,
        chain: &[Descriptor],
    ) -> Result<(), VsockError> {
        if chain.iter().any(|d| d.writable) {
            return Err(VsockError::TxChainWritable { head });
        }
        let readable: u64 = chain.iter().map(|d| u64::from(d.len)).sum();
        // Copy at most one header and the largest payload: a bigger chain is rejected by
        // the length checks, never buffered.
        let limit = HEADER_BYTES + MAX_PAYLOAD_BYTES as usize;
        let bytes =
            gather(mem, chain, limit).ok_or(VsockError::HeaderTooShort { head, readable })?;
        let Some((raw, payload)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
            return Err(VsockError::HeaderTooShort { head, readable });
        };
        let header = VsockHeader::decode(raw);
        if let Err(error) = check_tx_header(&header, self.guest_cid, readable - HEADER_BYTES as u64)
        {
            if error.wants_reset() {
                self.muxer.queue_control(header.reset_reply());
            }
            return Err(error);
        }
        let len = usize::try_from(header.len).expect("<= 64 KiB");
        self.muxer.handle_guest_packet(&header, &payload[..len])
    }

    /// Moves packets from the muxer into rx buffers until one side runs out.
    pub fn fill_rx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> VsockReport {
        let mut report = VsockReport::default();
        let desc_table = GuestAddress(queue.desc_table());
        let size = queue.size();
        loop {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                self.rx_starved = true;
                break;
            };
            let head = chain.head_index();
            let written = match read_chain(mem, desc_table, size, head, false) {
                Err(error) => Err(VsockError::Chain(error)),
                Ok(descriptors) => match rx_capacity(head, &descriptors) {
                    Err(error) => Err(error),
                    Ok(capacity) => {
                        let max_payload = (capacity - HEADER_BYTES).min(MAX_PAYLOAD_BYTES as usize);
                        let Some((header, payload)) = self.muxer.next_rx_packet(max_payload) else {
                            // Nothing to send: give the buffer back for later.
                            queue.go_to_previous_position();
                            break;
                        };
                        write_packet(mem, head, &descriptors, &header, &payload)
                    }
                },
            };
            let len = match written {
                Ok(len) => len,
                Err(error) => {
                    report.errors.push(error);
                    0
                }
            };
            match queue.add_used(mem, head, len) {
                Ok(()) => report.used += 1,
                Err(source) => report.errors.push(VsockError::UsedRing { head, source }),
            }
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        report.needs_interrupt = report.used > 0 && queue.needs_notification(mem).unwrap_or(true);
        report
    }
}

/// Writable bytes of an rx chain (at least a header).
fn rx_capacity(head: u16, chain: &[Descriptor]) -> Result<usize, VsockError> {
    if chain.iter().any(|d| !d.writable) {
        return Err(VsockError::RxChainReadable { head });
    }
    let writable: u64 = chain.iter().map(|d| u64::from(d.len)).sum();
    match usize::try_from(writable) {
        Ok(capacity) if capacity >= HEADER_BYTES => Ok(capacity),
        _ => Err(VsockError::RxBufferTooSmall { head, writable }),
    }
}

/// The first `limit` bytes of a readable chain; `None` when guest memory fails.
fn gather(mem: &GuestMemoryMmap, chain: &[Descriptor], limit: usize) -> Option<Vec<u8>> {
    let total: usize = chain
        .iter()
        .map(|d| usize::try_from(d.len).unwrap_or(usize::MAX))
        .fold(0usize, usize::saturating_add)
        .min(limit);
    let mut out = vec![0u8; total];
    let mut at = 0;
    for d in chain {
        if at == total {
            break;
        }
        let part = (total - at).min(usize::try_from(d.len).unwrap_or(usize::MAX));
        mem.read_slice(&mut out[at..at + part], GuestAddress(d.address))
            .ok()?;
        at += part;
    }
    Some(out)
}

/// Scatters header and payload over a writable chain; returns the used length.
fn write_packet(
    mem: &GuestMemoryMmap,
    head: u16,
    chain: &[Descriptor],
    header: &VsockHeader,
    payload: &[u8],
) -> Result<u32, VsockError> {
    let encoded = header.encode();
    let mut source = encoded.iter().chain(payload.iter()).copied();
    let total = HEADER_BYTES + payload.len();
    let mut written = 0usize;
    for d in chain {
        if written == total {
            break;
        }
        let part = (total - written).min(usize::try_from(d.len).unwrap_or(usize::MAX));
        let bytes: Vec<u8> = source.by_ref().take(part).collect();
        mem.write_slice(&bytes, GuestAddress(d.address))
            .map_err(|_| VsockError::GuestMemory {
                head,
                address: d.address,
            })?;
        written += part;
    }
    Ok(u32::try_from(written).expect("<= 64 KiB + header"))
}
