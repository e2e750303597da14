//! The `virtio_vsock_hdr` packet header (virtio 1.2 §5.10.6): parsing, encoding and the
//! checks a device can make on a header the driver put on the tx queue. Pure: no guest
//! memory, no sockets, so it is unit-tested and fuzzed directly.
//!
//! ```text
//! offset  0 le64 src_cid     8 le64 dst_cid    16 le32 src_port   20 le32 dst_port
//!        24 le32 len        28 le16 type       30 le16 op         32 le32 flags
//!        36 le32 buf_alloc  40 le32 fwd_cnt    (44 bytes, then `len` payload bytes)
//! ```

use super::VsockError;

/// Size of `struct virtio_vsock_hdr`.
pub const HEADER_BYTES: usize = 44;
/// The host's CID (§5.10.4: "The CID 2 is reserved for the host").
pub const HOST_CID: u64 = 2;
/// Largest payload accepted in one packet (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PAYLOAD_BYTES: u32 = 64 * 1024;

/// `type`: stream socket.
pub const TYPE_STREAM: u16 = 1;
/// `op`: connection request.
pub const OP_REQUEST: u16 = 1;
/// `op`: connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// `op`: connection reset (or refused).
pub const OP_RST: u16 = 3;
/// `op`: the sender will not receive and/or send any more.
pub const OP_SHUTDOWN: u16 = 4;
/// `op`: payload.
pub const OP_RW: u16 = 5;
/// `op`: the sender's buffer space changed.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// `op`: the sender asks for a credit update.
pub const OP_CREDIT_REQUEST: u16 = 7;
/// `flags` of `OP_SHUTDOWN`: no more data will be received.
pub const SHUTDOWN_RCV: u32 = 1;
/// `flags` of `OP_SHUTDOWN`: no more data will be sent.
pub const SHUTDOWN_SEND: u32 = 2;

/// One decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VsockHeader {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload bytes following the header.
    pub len: u32,
    /// Socket type.
    pub socket_type: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags (shutdown bits).
    pub flags: u32,
    /// The sender's receive buffer size for this stream.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer so far.
    pub fwd_cnt: u32,
}

fn le_u32(bytes: &[u8; HEADER_BYTES], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(bytes: &[u8; HEADER_BYTES], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn le_u16(bytes: &[u8; HEADER_BYTES], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

impl VsockHeader {
    /// Decodes the little-endian wire form.
    #[must_use]
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Self {
        Self {
            src_cid: le_u64(bytes, 0),
            dst_cid: le_u64(bytes, 8),
            src_port: le_u32(bytes, 16),
            dst_port: le_u32(bytes, 20),
            len: le_u32(bytes, 24),
            socket_type: le_u16(bytes, 28),
            op: le_u16(bytes, 30),
            flags: le_u32(bytes, 32),
            buf_alloc: le_u32(bytes, 36),
            fwd_cnt: le_u32(bytes, 40),
        }
    }

    /// Encodes the little-endian wire form.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        out[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        out[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        out[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        out[24..28].copy_from_slice(&self.len.to_le_bytes());
        out[28..30].copy_from_slice(&self.socket_type.to_le_bytes());
        out[30..32].copy_from_slice(&self.op.to_le_bytes());
        out[32..36].copy_from_slice(&self.flags.to_le_bytes());
        out[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        out[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        out
    }

    /// The RST answering this packet (ports and CIDs swapped, §5.10.6.6).
    #[must_use]
    pub fn reset_reply(&self) -> Self {
        Self {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            socket_type: TYPE_STREAM,
            op: OP_RST,
            ..Self::default()
        }
    }
}

/// Checks the header of a packet the driver queued on tx, given the payload bytes its chain
/// carries after the header. Returns the rule it broke; the caller answers with a RST where
/// the spec asks for one ([`VsockError::wants_reset`]).
///
/// # Errors
///
/// The header variants of [`VsockError`].
pub fn check_tx_header(
    header: &VsockHeader,
    guest_cid: u64,
    payload_available: u64,
) -> Result<(), VsockError> {
    // §5.10.6.2 Addressing: "The upper 32 bits of src_cid and dst_cid are reserved and
    // zeroed."
    for cid in [header.src_cid, header.dst_cid] {
        if cid >> 32 != 0 {
            return Err(VsockError::ReservedCidBits { cid });
        }
    }
    // §5.10.6.2: the driver sends from its own CID (config space `guest_cid`).
    if header.src_cid != guest_cid {
        return Err(VsockError::SourceCidNotGuest {
            src_cid: header.src_cid,
            guest_cid,
        });
    }
    if header.dst_cid != HOST_CID {
        return Err(VsockError::DestinationNotHost {
            dst_cid: header.dst_cid,
        });
    }
    // §5.10.6.6: only stream sockets exist without VIRTIO_VSOCK_F_SEQPACKET (not offered);
    // "When the device receives a packet with an unknown type value ... it MUST reply
    // with VIRTIO_VSOCK_OP_RST".
    if header.socket_type != TYPE_STREAM {
        return Err(VsockError::UnknownType {
            socket_type: header.socket_type,
        });
    }
    if !(OP_REQUEST..=OP_CREDIT_REQUEST).contains(&header.op) {
        return Err(VsockError::UnknownOp { op: header.op });
    }
    if header.len > MAX_PAYLOAD_BYTES {
        return Err(VsockError::PayloadTooLarge { len: header.len });
    }
    // §5.10.6.4: the `len` payload bytes follow the header in the same buffer chain.
    if u64::from(header.len) > payload_available {
        return Err(VsockError::PayloadTruncated {
            len: header.len,
            available: payload_available,
        });
    }
    // Only VIRTIO_VSOCK_OP_RW carries data (§5.10.6.4).
    if header.op != OP_RW && header.len != 0 {
        return Err(VsockError::PayloadOnControlPacket {
            op: header.op,
            len: header.len,
        });
    }
    if header.op == OP_SHUTDOWN && header.flags & !(SHUTDOWN_RCV | SHUTDOWN_SEND) != 0 {
        return Err(VsockError::InvalidShutdownFlags {
            flags: header.flags,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn guest_header(op: u16, len: u32) -> VsockHeader {
        VsockHeader {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1000,
            dst_port: 80,
            len,
            socket_type: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 0,
        }
    }

    fn check(header: &VsockHeader, available: u64) -> Result<(), VsockError> {
        check_tx_header(header, 3, available)
    }

    #[test]
    fn encode_decode_round_trip_and_reset_reply() {
        let header = guest_header(OP_RW, 5);
        let bytes = header.encode();
        assert_eq!(&bytes[24..28], &5u32.to_le_bytes());
        assert_eq!(VsockHeader::decode(&bytes), header);
        let rst = header.reset_reply();
        assert_eq!((rst.src_cid, rst.dst_cid), (HOST_CID, 3));
        assert_eq!((rst.src_port, rst.dst_port, rst.op), (80, 1000, OP_RST));
        assert!(check(&header, 5).is_ok());
    }

    #[test]
    fn reserved_cid_bits_must_be_zero() {
        let mut header = guest_header(OP_REQUEST, 0);
        header.dst_cid |= 1 << 40;
        assert!(matches!(
            check(&header, 0),
            Err(VsockError::ReservedCidBits { .. })
        ));
    }

    #[test]
    fn source_must_be_the_guest_cid() {
        let mut header = guest_header(OP_REQUEST, 0);
        header.src_cid = 7;
        assert!(matches!(
            check(&header, 0),
            Err(VsockError::SourceCidNotGuest {
                src_cid: 7,
                guest_cid: 3
            })
        ));
    }

    #[test]
    fn destination_must_be_the_host() {
        let mut header = guest_header(OP_REQUEST, 0);
        header.dst_cid = 5;
        let error = check(&header, 0).unwrap_err();
        assert!(matches!(
            error,
            VsockError::DestinationNotHost { dst_cid: 5 }
        ));
        assert!(error.wants_reset());
    }

    #[test]
    fn unknown_type_is_answered_with_rst() {
        let mut header = guest_header(OP_REQUEST, 0);
        header.socket_type = 2; // SEQPACKET, not negotiated
        let error = check(&header, 0).unwrap_err();
        assert!(matches!(error, VsockError::UnknownType { socket_type: 2 }));
        assert!(error.wants_reset());
    }

    #[test]
    fn unknown_op_is_answered_with_rst() {
        for op in [0, 8, 0xffff] {
            let error = check(&guest_header(op, 0), 0).unwrap_err();
            assert!(matches!(error, VsockError::UnknownOp { .. }), "{op}");
            assert!(error.wants_reset());
        }
    }

    #[test]
    fn payload_is_bounded() {
        let header = guest_header(OP_RW, MAX_PAYLOAD_BYTES + 1);
        assert!(matches!(
            check(&header, u64::MAX),
            Err(VsockError::PayloadTooLarge { .. })
        ));
        assert!(check(&guest_header(OP_RW, MAX_PAYLOAD_BYTES), u64::MAX).is_ok());
    }

    #[test]
    fn payload_must_be_in_the_chain() {
        assert!(matches!(
            check(&guest_header(OP_RW, 100), 99),
            Err(VsockError::PayloadTruncated {
                len: 100,
                available: 99
            })
        ));
    }

    #[test]
    fn control_packets_carry_no_payload() {
        assert!(matches!(
            check(&guest_header(OP_CREDIT_UPDATE, 4), 4),
            Err(VsockError::PayloadOnControlPacket { op: 6, len: 4 })
        ));
    }

    #[test]
    fn shutdown_flags_are_rcv_and_send_only() {
        let mut header = guest_header(OP_SHUTDOWN, 0);
        header.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        assert!(check(&header, 0).is_ok());
        header.flags = 4;
        assert!(matches!(
            check(&header, 0),
            Err(VsockError::InvalidShutdownFlags { flags: 4 })
        ));
    }
}
