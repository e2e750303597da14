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

#[cfg(test)]
pub(crate) mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;

    use super::muxer::{BUFFER_BYTES, MAX_CONNECTIONS, MAX_CONTROL_PACKETS};
    use super::packet::tests::guest_header;
    use super::packet::*;
    use super::*;
    use crate::devices::virtio_blk::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};

    const TX: (u64, u64, u64) = (0x1000, 0x2000, 0x3000);
    const RX: (u64, u64, u64) = (0x4000, 0x5000, 0x6000);
    const TX_BUFFER: u64 = 0x1_0000;
    const RX_BUFFER: u64 = 0x3_0000;
    const QSIZE: u16 = 16;

    fn queue(mem: &GuestMemoryMmap, (desc, avail, used): (u64, u64, u64)) -> Queue {
        let mut queue = Queue::new(QSIZE).unwrap();
        queue.set_size(QSIZE);
        queue.set_desc_table_address(Some(desc as u32), Some(0));
        queue.set_avail_ring_address(Some(avail as u32), Some(0));
        queue.set_used_ring_address(Some(used as u32), Some(0));
        queue.set_ready(true);
        assert!(queue.is_valid(mem));
        queue
    }

    fn put_desc(mem: &GuestMemoryMmap, table: u64, index: u16, d: (u64, u32, u16, u16)) {
        let base = table + u64::from(index) * 16;
        mem.write_obj(d.0, GuestAddress(base)).unwrap();
        mem.write_obj(d.1, GuestAddress(base + 8)).unwrap();
        mem.write_obj(d.2, GuestAddress(base + 12)).unwrap();
        mem.write_obj(d.3, GuestAddress(base + 14)).unwrap();
    }

    fn offer(mem: &GuestMemoryMmap, avail: u64, idx: &mut u16, head: u16) {
        mem.write_obj(head, GuestAddress(avail + 4 + 2 * u64::from(*idx % QSIZE)))
            .unwrap();
        *idx = idx.wrapping_add(1);
        mem.write_obj(*idx, GuestAddress(avail + 2)).unwrap();
    }

    /// A guest driver over real guest memory and a muxer on a real Unix socket.
    pub(crate) struct Guest {
        pub mem: GuestMemoryMmap,
        pub device: VsockDevice,
        tx: Queue,
        rx: Queue,
        tx_idx: u16,
        rx_idx: u16,
        rx_outstanding: bool,
        pub dir: tempfile::TempDir,
    }

    impl Guest {
        pub(crate) fn new() -> Self {
            let mem = crate::devices::virtio_blk::tests::memory();
            let dir = tempfile::tempdir().unwrap();
            let muxer = VsockMuxer::bind(GUEST_CID, &dir.path().join("v.sock")).unwrap();
            Self {
                tx: queue(&mem, TX),
                rx: queue(&mem, RX),
                mem,
                device: VsockDevice::new(GUEST_CID, muxer),
                tx_idx: 0,
                rx_idx: 0,
                rx_outstanding: false,
                dir,
            }
        }

        pub(crate) fn socket(&self) -> PathBuf {
            self.dir.path().join("v.sock")
        }

        /// Sends raw chain descriptors (address, len, flags) as one packet.
        fn send_chain(&mut self, descriptors: &[(u64, u32, u16)]) -> VsockReport {
            for (i, &(address, len, flags)) in descriptors.iter().enumerate() {
                let i = u16::try_from(i).unwrap();
                put_desc(&self.mem, TX.0, i, (address, len, flags, i + 1));
            }
            offer(&self.mem, TX.1, &mut self.tx_idx, 0);
            self.device.process_tx(&self.mem, &mut self.tx)
        }

        pub(crate) fn send(&mut self, header: &VsockHeader, payload: &[u8]) -> VsockReport {
            let mut bytes = header.encode().to_vec();
            bytes.extend_from_slice(payload);
            self.mem
                .write_slice(&bytes, GuestAddress(TX_BUFFER))
                .unwrap();
            let len = u32::try_from(bytes.len()).unwrap();
            self.send_chain(&[(TX_BUFFER, len, 0)])
        }

        /// Posts one 4 KiB rx buffer (if none is outstanding) and fetches a packet.
        pub(crate) fn recv(&mut self) -> Option<(VsockHeader, Vec<u8>)> {
            if !self.rx_outstanding {
                let len = (HEADER_BYTES + 4096) as u32;
                put_desc(&self.mem, RX.0, 0, (RX_BUFFER, len, VIRTQ_DESC_F_WRITE, 0));
                offer(&self.mem, RX.1, &mut self.rx_idx, 0);
                self.rx_outstanding = true;
            }
            self.device.muxer.pump_host();
            let report = self.device.fill_rx(&self.mem, &mut self.rx);
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            if report.used == 0 {
                return None;
            }
            self.rx_outstanding = false;
            let slot = u64::from(self.rx_idx.wrapping_sub(1) % QSIZE);
            let used: u32 = self
                .mem
                .read_obj(GuestAddress(RX.2 + 8 + slot * 8))
                .unwrap();
            let mut raw = [0u8; HEADER_BYTES];
            self.mem
                .read_slice(&mut raw, GuestAddress(RX_BUFFER))
                .unwrap();
            let header = VsockHeader::decode(&raw);
            let mut payload = vec![0u8; used as usize - HEADER_BYTES];
            self.mem
                .read_slice(&mut payload, GuestAddress(RX_BUFFER + HEADER_BYTES as u64))
                .unwrap();
            assert_eq!(payload.len(), header.len as usize);
            Some((header, payload))
        }

        /// Receives until a packet arrives (host IO may take a moment).
        pub(crate) fn recv_wait(&mut self) -> (VsockHeader, Vec<u8>) {
            for _ in 0..500 {
                if let Some(packet) = self.recv() {
                    return packet;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            panic!("no packet for the guest");
        }
    }

    fn header(op: u16, src_port: u32, dst_port: u32, len: u32) -> VsockHeader {
        VsockHeader {
            src_port,
            dst_port,
            ..guest_header(op, len)
        }
    }

    /// Host connects with `CONNECT 80`, the guest accepts: returns the host stream and the
    /// host port of the connection.
    fn host_connection(guest: &mut Guest) -> (UnixStream, u32) {
        let mut host = UnixStream::connect(guest.socket()).unwrap();
        host.write_all(b"CONNECT 80\n").unwrap();
        let (request, _) = guest.recv_wait();
        assert_eq!(request.op, OP_REQUEST);
        assert_eq!((request.src_cid, request.dst_cid), (HOST_CID, GUEST_CID));
        assert_eq!(request.dst_port, 80);
        assert_eq!(request.buf_alloc, BUFFER_BYTES);
        let report = guest.send(&header(OP_RESPONSE, 80, request.src_port, 0), &[]);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let mut line = [0u8; 14];
        host.read_exact(&mut line).unwrap();
        assert_eq!(&line, format!("OK {}\n", request.src_port).as_bytes());
        (host, request.src_port)
    }

    #[test]
    fn host_initiated_connection_relays_both_ways_and_closes() {
        let mut guest = Guest::new();
        let (mut host, port) = host_connection(&mut guest);
        let report = guest.send(&header(OP_RW, 80, port, 5), b"hello");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.used, 1);
        let mut got = [0u8; 5];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        host.write_all(b"world").unwrap();
        let (data, payload) = guest.recv_wait();
        assert_eq!((data.op, data.src_port, data.dst_port), (OP_RW, port, 80));
        assert_eq!(payload, b"world");
        // fwd_cnt counts guest bytes only, not the `OK` line.
        assert_eq!(data.fwd_cnt, 5);
        drop(host);
        let (shutdown, _) = guest.recv_wait();
        assert_eq!((shutdown.op, shutdown.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
        let mut close = header(OP_SHUTDOWN, 80, port, 0);
        close.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        guest.send(&close, &[]);
        let (rst, _) = guest.recv_wait();
        assert_eq!(rst.op, OP_RST);
        assert_eq!(guest.device.muxer.connection_count(), 0);
    }

    #[test]
    fn guest_initiated_connection_goes_to_socket_underscore_port() {
        let mut guest = Guest::new();
        let listener = UnixListener::bind(guest.dir.path().join("v.sock_5000")).unwrap();
        guest.send(&header(OP_REQUEST, 1234, 5000, 0), &[]);
        let (response, _) = guest.recv_wait();
        assert_eq!(
            (response.op, response.src_port, response.dst_port),
            (OP_RESPONSE, 5000, 1234)
        );
        let (mut host, _) = listener.accept().unwrap();
        guest.send(&header(OP_RW, 1234, 5000, 3), b"abc");
        let mut got = [0u8; 3];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abc");
        // No listener for port 5001: refused with a RST.
        guest.send(&header(OP_REQUEST, 1235, 5001, 0), &[]);
        let (rst, _) = guest.recv_wait();
        assert_eq!((rst.op, rst.dst_port), (OP_RST, 1235));
    }

    #[test]
    fn packets_for_no_connection_get_a_rst_but_rsts_do_not() {
        let mut guest = Guest::new();
        guest.send(&header(OP_RW, 1, 2, 1), b"x");
        let (rst, _) = guest.recv_wait();
        assert_eq!((rst.op, rst.src_port, rst.dst_port), (OP_RST, 2, 1));
        guest.send(&header(OP_RST, 1, 2, 0), &[]);
        assert!(guest.recv().is_none());
    }

    #[test]
    fn unknown_type_and_op_are_answered_with_rst() {
        let mut guest = Guest::new();
        let mut seqpacket = header(OP_REQUEST, 7, 80, 0);
        seqpacket.socket_type = 2;
        let report = guest.send(&seqpacket, &[]);
        assert!(matches!(
            report.errors[..],
            [VsockError::UnknownType { socket_type: 2 }]
        ));
        assert_eq!(guest.recv_wait().0.op, OP_RST);
        let report = guest.send(&header(9, 7, 80, 0), &[]);
        assert!(matches!(
            report.errors[..],
            [VsockError::UnknownOp { op: 9 }]
        ));
        assert_eq!(guest.recv_wait().0.op, OP_RST);
    }

    #[test]
    fn data_beyond_the_advertised_credit_resets_the_connection() {
        let mut guest = Guest::new();
        let (_host, port) = host_connection(&mut guest);
        // The host never reads: once its socket buffer is full, the device buffers up to
        // the advertised `buf_alloc` and resets a guest that sends beyond it.
        let chunk = vec![0x55u8; 4096];
        let mut error = None;
        for _ in 0..4096 {
            let mut report = guest.send(&header(OP_RW, 80, port, 4096), &chunk);
            assert!(guest.device.muxer.buffered_bytes() <= BUFFER_BYTES as usize);
            if let Some(e) = report.errors.pop() {
                error = Some(e);
                break;
            }
        }
        assert!(
            matches!(
                error,
                Some(VsockError::CreditExceeded {
                    port: 80,
                    len: 4096,
                    ..
                })
            ),
            "{error:?}"
        );
        assert_eq!(guest.device.muxer.connection_count(), 0);
        assert_eq!(guest.device.muxer.buffered_bytes(), 0);
        // Drain until the RST (a credit update may come first).
        let mut ops = Vec::new();
        while let Some((h, _)) = guest.recv() {
            ops.push(h.op);
        }
        assert!(ops.contains(&OP_RST), "{ops:?}");
    }

    #[test]
    fn a_flooding_guest_cannot_grow_host_memory_without_bound() {
        let mut guest = Guest::new();
        // Requests to ports nobody listens on, with no rx buffers to take the RSTs.
        for port in 0..(MAX_CONTROL_PACKETS as u32 * 4) {
            guest.send(&header(OP_REQUEST, port, 9, 0), &[]);
        }
        assert_eq!(guest.device.muxer.control_len(), MAX_CONTROL_PACKETS);
        assert_eq!(
            guest.device.muxer.dropped_control(),
            MAX_CONTROL_PACKETS as u64 * 3
        );
        // Connections are capped too.
        let _listener = UnixListener::bind(guest.dir.path().join("v.sock_9")).unwrap();
        let mut refused = 0;
        for port in 0..(MAX_CONNECTIONS as u32 + 10) {
            let report = guest.send(&header(OP_REQUEST, 10_000 + port, 9, 0), &[]);
            if matches!(report.errors[..], [VsockError::TooManyConnections]) {
                refused += 1;
            }
        }
        assert_eq!(guest.device.muxer.connection_count(), MAX_CONNECTIONS);
        assert_eq!(refused, 10);
    }

    #[test]
    fn host_input_is_limited_by_the_guest_credit() {
        let mut guest = Guest::new();
        let mut host = UnixStream::connect(guest.socket()).unwrap();
        host.write_all(b"CONNECT 80\n").unwrap();
        let (request, _) = guest.recv_wait();
        let mut response = header(OP_RESPONSE, 80, request.src_port, 0);
        response.buf_alloc = 10;
        guest.send(&response, &[]);
        host.write_all(&[1u8; 100]).unwrap();
        let (data, payload) = guest.recv_wait();
        assert_eq!((data.op, payload.len()), (OP_RW, 10));
        assert!(guest.recv().is_none(), "no credit left");
        // The guest consumed the bytes: credit for 10 more.
        let mut update = header(OP_CREDIT_UPDATE, 80, request.src_port, 0);
        update.buf_alloc = 10;
        update.fwd_cnt = 10;
        guest.send(&update, &[]);
        assert_eq!(guest.recv_wait().1.len(), 10);
    }

    #[test]
    fn credit_request_gets_a_credit_update() {
        let mut guest = Guest::new();
        let (_host, port) = host_connection(&mut guest);
        guest.send(&header(OP_CREDIT_REQUEST, 80, port, 0), &[]);
        let (update, _) = guest.recv_wait();
        assert_eq!(
            (update.op, update.buf_alloc),
            (OP_CREDIT_UPDATE, BUFFER_BYTES)
        );
    }

    #[test]
    fn data_before_the_response_is_an_unexpected_op() {
        let mut guest = Guest::new();
        let mut host = UnixStream::connect(guest.socket()).unwrap();
        host.write_all(b"CONNECT 80\n").unwrap();
        let (request, _) = guest.recv_wait();
        let report = guest.send(&header(OP_RW, 80, request.src_port, 1), b"x");
        assert!(matches!(
            report.errors[..],
            [VsockError::UnexpectedOp {
                op: OP_RW,
                port: 80
            }]
        ));
        assert_eq!(guest.recv_wait().0.op, OP_RST);
        // The host connection is closed.
        let mut byte = [0u8; 1];
        assert_eq!(host.read(&mut byte).unwrap(), 0);
    }

    #[test]
    fn duplicate_request_resets() {
        let mut guest = Guest::new();
        let _listener = UnixListener::bind(guest.dir.path().join("v.sock_7")).unwrap();
        guest.send(&header(OP_REQUEST, 1, 7, 0), &[]);
        let report = guest.send(&header(OP_REQUEST, 1, 7, 0), &[]);
        assert!(matches!(
            report.errors[..],
            [VsockError::DuplicateRequest { port: 1 }]
        ));
        assert_eq!(guest.device.muxer.connection_count(), 0);
    }

    #[test]
    fn bad_connect_lines_are_dropped() {
        let mut guest = Guest::new();
        let mut host = UnixStream::connect(guest.socket()).unwrap();
        host.write_all(b"HELLO 80\n").unwrap();
        assert!(guest.recv().is_none());
        let mut byte = [0u8; 1];
        host.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert_eq!(host.read(&mut byte).unwrap(), 0);
    }

    #[test]
    fn tx_chain_rules() {
        let mut guest = Guest::new();
        let report = guest.send_chain(&[(TX_BUFFER, 44, VIRTQ_DESC_F_WRITE)]);
        assert!(matches!(
            report.errors[..],
            [VsockError::TxChainWritable { head: 0 }]
        ));
        let report = guest.send_chain(&[(TX_BUFFER, 20, 0)]);
        assert!(matches!(
            report.errors[..],
            [VsockError::HeaderTooShort {
                head: 0,
                readable: 20
            }]
        ));
        let report = guest.send_chain(&[(0xff_0000_0000, 44, 0)]);
        assert!(matches!(report.errors[..], [VsockError::Chain(_)]));
        // A header split over two descriptors is fine (layout independence, §2.7.4).
        let bytes = header(OP_RST, 1, 2, 0).encode();
        guest
            .mem
            .write_slice(&bytes, GuestAddress(TX_BUFFER))
            .unwrap();
        let report =
            guest.send_chain(&[(TX_BUFFER, 10, VIRTQ_DESC_F_NEXT), (TX_BUFFER + 10, 34, 0)]);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.used, 1);
    }

    #[test]
    fn header_errors_from_a_chain_are_reported() {
        let mut guest = Guest::new();
        let mut spoofed = header(OP_REQUEST, 1, 2, 0);
        spoofed.src_cid = 42;
        let report = guest.send(&spoofed, &[]);
        assert!(matches!(
            report.errors[..],
            [VsockError::SourceCidNotGuest { .. }]
        ));
        let report = guest.send(&header(OP_RW, 1, 2, 10), b"abc");
        assert!(matches!(
            report.errors[..],
            [VsockError::PayloadTruncated {
                len: 10,
                available: 3
            }]
        ));
    }

    #[test]
    fn rx_chain_rules() {
        let mut guest = Guest::new();
        guest.send(&header(OP_RW, 1, 2, 1), b"x"); // queues a RST
        put_desc(&guest.mem, RX.0, 0, (RX_BUFFER, 4096, 0, 0));
        offer(&guest.mem, RX.1, &mut guest.rx_idx, 0);
        let report = guest.device.fill_rx(&guest.mem, &mut guest.rx);
        assert!(matches!(
            report.errors[..],
            [VsockError::RxChainReadable { head: 0 }]
        ));
        put_desc(&guest.mem, RX.0, 0, (RX_BUFFER, 43, VIRTQ_DESC_F_WRITE, 0));
        offer(&guest.mem, RX.1, &mut guest.rx_idx, 0);
        let report = guest.device.fill_rx(&guest.mem, &mut guest.rx);
        assert!(matches!(
            report.errors[..],
            [VsockError::RxBufferTooSmall {
                head: 0,
                writable: 43
            }]
        ));
        assert!(guest.device.rx_starved);
        // The RST is still there for a good buffer.
        assert_eq!(guest.recv_wait().0.op, OP_RST);
    }

    /// The whole host path: a TCP client → `TcpForwarder` → the device's Unix socket →
    /// the guest's rx queue, and the guest's answer back out to the TCP client.
    #[test]
    fn tcp_forward_reaches_the_guest_and_back() {
        use crate::config::PortForward;
        use crate::forward::TcpForwarder;
        let mut guest = Guest::new();
        let forwarder =
            TcpForwarder::bind(&[PortForward { host: 0, guest: 80 }], &guest.socket()).unwrap();
        let address = forwarder.addresses()[0];
        let client = std::thread::spawn(move || {
            let mut tcp = std::net::TcpStream::connect(address).unwrap();
            tcp.write_all(b"ping").unwrap();
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).unwrap();
            answer
        });
        let (request, _) = guest.recv_wait();
        assert_eq!((request.op, request.dst_port), (OP_REQUEST, 80));
        let port = request.src_port;
        guest.send(&header(OP_RESPONSE, 80, port, 0), &[]);
        let (data, payload) = guest.recv_wait();
        assert_eq!((data.op, payload.as_slice()), (OP_RW, &b"ping"[..]));
        guest.send(&header(OP_RW, 80, port, 4), b"pong");
        let mut close = header(OP_SHUTDOWN, 80, port, 0);
        close.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        guest.send(&close, &[]);
        assert_eq!(client.join().unwrap(), b"pong");
    }

    #[test]
    fn config_space_holds_the_guest_cid() {
        let guest = Guest::new();
        assert_eq!(guest.device.config_space(), 3u64.to_le_bytes());
        assert_eq!(device_features(), 1 << 32);
    }
}
