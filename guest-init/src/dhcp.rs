//! DHCPv4 messages (RFC 2131) and options (RFC 2132): encoding the client's DISCOVER and
//! REQUEST, decoding the server's OFFER/ACK/NAK. Pure; `net.rs` does the socket work.

use std::net::Ipv4Addr;

/// `op` values.
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// RFC 2131 §3: the options field starts with this magic cookie.
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of the options field (236 fixed bytes + cookie).
const OPTIONS_OFFSET: usize = 240;
/// RFC 2131 §2: the BROADCAST flag asks the server to broadcast its reply, which we can
/// receive before the interface has an address.
const FLAG_BROADCAST: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETER_LIST: u8 = 55;
const OPT_END: u8 = 255;

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Client looks for servers.
    Discover = 1,
    /// Server offers an address.
    Offer = 2,
    /// Client requests the offered address.
    Request = 3,
    /// Server refuses.
    Nak = 6,
    /// Server confirms.
    Ack = 5,
}

impl MessageType {
    fn from_u8(value: u8) -> Option<MessageType> {
        Some(match value {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            _ => return None,
        })
    }
}

/// What a server reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// OFFER, ACK or NAK.
    pub message_type: MessageType,
    /// The address offered/assigned (`yiaddr`).
    pub address: Ipv4Addr,
    /// Server identifier (option 54).
    pub server_id: Option<Ipv4Addr>,
    /// Subnet mask (option 1).
    pub subnet_mask: Option<Ipv4Addr>,
    /// First router (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (option 51).
    pub lease_secs: Option<u32>,
}

/// Why a datagram is not a reply for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpError {
    /// Shorter than the fixed header plus cookie.
    TooShort,
    /// Not a BOOTREPLY, wrong cookie, or wrong hardware type.
    NotReply,
    /// A different transaction or client.
    NotForUs,
    /// An option runs past the end of the packet.
    TruncatedOption {
        /// The option code.
        code: u8,
    },
    /// No or unknown message type.
    MessageType,
}

impl std::fmt::Display for DhcpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DhcpError::TooShort => write!(f, "DHCP packet too short"),
            DhcpError::NotReply => write!(f, "not a DHCP reply"),
            DhcpError::NotForUs => write!(f, "DHCP reply for another transaction"),
            DhcpError::TruncatedOption { code } => write!(f, "DHCP option {code} is truncated"),
            DhcpError::MessageType => write!(f, "DHCP reply without a known message type"),
        }
    }
}

/// Encodes a client message. `requested` and `server_id` are set for REQUEST.
pub fn encode_request(
    message_type: MessageType,
    xid: u32,
    mac: [u8; 6],
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    hostname: Option<&str>,
) -> Vec<u8> {
    let mut packet = vec![0u8; OPTIONS_OFFSET];
    packet[0] = BOOTREQUEST;
    packet[1] = 1; // htype: Ethernet
    packet[2] = 6; // hlen
    packet[4..8].copy_from_slice(&xid.to_be_bytes());
    packet[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
    packet[28..34].copy_from_slice(&mac);
    packet[236..240].copy_from_slice(&MAGIC_COOKIE);
    packet.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, message_type as u8]);
    if let Some(ip) = requested {
        packet.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
        packet.extend_from_slice(&ip.octets());
    }
    if let Some(ip) = server_id {
        packet.extend_from_slice(&[OPT_SERVER_ID, 4]);
        packet.extend_from_slice(&ip.octets());
    }
    if let Some(name) = hostname.filter(|n| !n.is_empty() && n.len() <= 255) {
        packet.extend_from_slice(&[OPT_HOSTNAME, name.len() as u8]);
        packet.extend_from_slice(name.as_bytes());
    }
    packet.extend_from_slice(&[
        OPT_PARAMETER_LIST,
        4,
        OPT_SUBNET_MASK,
        OPT_ROUTER,
        OPT_DNS,
        OPT_LEASE_TIME,
    ]);
    packet.push(OPT_END);
    // RFC 1542 §3.2: some relays drop BOOTP messages shorter than 300 bytes.
    if packet.len() < 300 {
        packet.resize(300, OPT_PAD);
    }
    packet
}

fn ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Decodes a server reply to transaction `xid` from client `mac`.
pub fn decode_reply(packet: &[u8], xid: u32, mac: [u8; 6]) -> Result<Reply, DhcpError> {
    if packet.len() < OPTIONS_OFFSET {
        return Err(DhcpError::TooShort);
    }
    if packet[0] != BOOTREPLY || packet[1] != 1 || packet[236..240] != MAGIC_COOKIE {
        return Err(DhcpError::NotReply);
    }
    if packet[4..8] != xid.to_be_bytes() || packet[28..34] != mac {
        return Err(DhcpError::NotForUs);
    }
    let mut reply = Reply {
        message_type: MessageType::Discover,
        address: ipv4(&packet[16..20]).unwrap_or(Ipv4Addr::UNSPECIFIED),
        server_id: None,
        subnet_mask: None,
        router: None,
        dns: Vec::new(),
        lease_secs: None,
    };
    let mut message_type = None;
    let mut options = &packet[OPTIONS_OFFSET..];
    while let Some((&code, rest)) = options.split_first() {
        match code {
            OPT_PAD => {
                options = rest;
                continue;
            }
            OPT_END => break,
            _ => {}
        }
        let (&len, rest) = rest
            .split_first()
            .ok_or(DhcpError::TruncatedOption { code })?;
        let len = usize::from(len);
        if rest.len() < len {
            return Err(DhcpError::TruncatedOption { code });
        }
        let (value, rest) = rest.split_at(len);
        match code {
            OPT_MESSAGE_TYPE => {
                message_type = value.first().copied().and_then(MessageType::from_u8)
            }
            OPT_SUBNET_MASK => reply.subnet_mask = ipv4(value),
            OPT_ROUTER => reply.router = ipv4(value),
            OPT_DNS => reply.dns = value.chunks_exact(4).filter_map(ipv4).collect(),
            OPT_SERVER_ID => reply.server_id = ipv4(value),
            OPT_LEASE_TIME => {
                reply.lease_secs = value
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            _ => {}
        }
        options = rest;
    }
    reply.message_type = match message_type {
        Some(t @ (MessageType::Offer | MessageType::Ack | MessageType::Nak)) => t,
        _ => return Err(DhcpError::MessageType),
    };
    Ok(reply)
}

/// Prefix length of a contiguous netmask (`None` if not contiguous).
pub fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(u8::try_from(ones).unwrap_or(32))
}

/// The netmask for a prefix length (clamped to 32).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let prefix = u32::from(prefix.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0))
}

/// Renders `/run/resolv.conf`.
pub fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    dns.iter()
        .take(3) // glibc reads at most MAXNS = 3 servers
        .map(|ip| format!("nameserver {ip}\n"))
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// Builds a server reply like QEMU's slirp does (used by net.rs tests too).
    pub fn server_reply(message_type: u8, xid: u32, mac: [u8; 6]) -> Vec<u8> {
        let mut p = vec![0u8; OPTIONS_OFFSET];
        p[0] = BOOTREPLY;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&xid.to_be_bytes());
        p[16..20].copy_from_slice(&[10, 0, 2, 15]);
        p[28..34].copy_from_slice(&mac);
        p[236..240].copy_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[53, 1, message_type, 0, 0]);
        p.extend_from_slice(&[
            54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2,
        ]);
        p.extend_from_slice(&[6, 8, 10, 0, 2, 3, 1, 1, 1, 1, 51, 4, 0, 1, 81, 128, 255]);
        p
    }

    #[test]
    fn encodes_discover_and_request() {
        let d = encode_request(
            MessageType::Discover,
            0xdead_beef,
            MAC,
            None,
            None,
            Some("web"),
        );
        assert_eq!(d.len(), 300);
        assert_eq!((d[0], d[1], d[2]), (1, 1, 6));
        assert_eq!(&d[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&d[10..12], &[0x80, 0]);
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[236..243], &[99, 130, 83, 99, 53, 1, 1]);
        assert_eq!(&d[243..248], b"\x0c\x03web");
        let r = encode_request(
            MessageType::Request,
            1,
            MAC,
            Some(Ipv4Addr::new(10, 0, 2, 15)),
            Some(Ipv4Addr::new(10, 0, 2, 2)),
            None,
        );
        assert_eq!(
            &r[240..255],
            &[53, 1, 3, 50, 4, 10, 0, 2, 15, 54, 4, 10, 0, 2, 2]
        );
        assert_eq!(&r[255..262], &[55, 4, 1, 3, 6, 51, 255]);
    }

    #[test]
    fn decodes_offer_options() {
        let reply = decode_reply(&server_reply(2, 7, MAC), 7, MAC).expect("offer");
        assert_eq!(
            reply,
            Reply {
                message_type: MessageType::Offer,
                address: Ipv4Addr::new(10, 0, 2, 15),
                server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
                subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)],
                lease_secs: Some(86_400),
            }
        );
        let ack = decode_reply(&server_reply(5, 7, MAC), 7, MAC).expect("ack");
        assert_eq!(ack.message_type, MessageType::Ack);
    }

    #[test]
    fn rejects_foreign_and_malformed_replies() {
        let good = server_reply(2, 7, MAC);
        assert_eq!(decode_reply(&good[..100], 7, MAC), Err(DhcpError::TooShort));
        assert_eq!(decode_reply(&good, 8, MAC), Err(DhcpError::NotForUs));
        assert_eq!(decode_reply(&good, 7, [0; 6]), Err(DhcpError::NotForUs));
        let mut request = good.clone();
        request[0] = BOOTREQUEST;
        assert_eq!(decode_reply(&request, 7, MAC), Err(DhcpError::NotReply));
        let mut truncated = good[..OPTIONS_OFFSET + 3].to_vec();
        truncated.extend_from_slice(&[6, 200, 1]);
        assert_eq!(
            decode_reply(&truncated, 7, MAC),
            Err(DhcpError::TruncatedOption { code: 6 })
        );
        let mut discover = good;
        discover[OPTIONS_OFFSET + 2] = 1;
        assert_eq!(decode_reply(&discover, 7, MAC), Err(DhcpError::MessageType));
    }

    #[test]
    fn masks_and_resolv_conf() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(netmask(20), Ipv4Addr::new(255, 255, 240, 0));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(40), Ipv4Addr::BROADCAST);
        let ips = [Ipv4Addr::new(10, 0, 2, 3); 4];
        assert_eq!(resolv_conf(&ips).lines().count(), 3);
    }
}
