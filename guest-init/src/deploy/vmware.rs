//! VMware's guest RPC ("RPCI" over the backdoor's low-bandwidth message channel), enough to
//! ask the host for one guestinfo value: vSphere hands the OVF environment to a guest
//! deployed with `ovf:transport="com.vmware.guestInfo"` as `guestinfo.ovfEnv`, which the
//! guest reads with the RPCI request `info-get guestinfo.ovfEnv`.
//!
//! The backdoor is an `in eax, dx` on I/O port `0x5658` with the magic `0x564D5868` in
//! `eax` and a command in `cx`; VMware intercepts it and answers in the registers. The
//! message command (30) carries the message type in the high half of `ecx`, the channel id
//! in the high half of `edx` and the channel's two cookies in `esi`/`edi`:
//!
//! | step | `ecx` high | `ebx` in | answer |
//! |---|---|---|---|
//! | open | 0 | `0x49435052` (`RPCI`) \| cookie flag | channel in `edx` high, cookies in `esi`/`edi` |
//! | send size | 1 | request length | status |
//! | send payload | 2 | next 4 request bytes, little-endian | status |
//! | receive size | 3 | — | status (`DORECV` when a reply waits), length in `ebx` |
//! | receive payload | 4 | status of the previous step (`SUCCESS`) | next 4 reply bytes in `ebx` |
//! | receive status | 5 | `SUCCESS` | status |
//! | close | 6 | — | status |
//!
//! A status is the high half of the answer's `ecx`; bit 0 means success. The reply to
//! `info-get` is `1 <value>` when the key exists and `0 <reason>` otherwise.
//!
//! This module only encodes and decodes: the [`Backdoor`] trait performs one call, so the
//! protocol is tested without VMware. The binary implements it with the `in` instruction
//! and calls it only after the CPUID hypervisor leaf or SMBIOS said VMware
//! ([`is_vmware_signature`], [`is_vmware_vendor`]): on other hypervisors, and on bare
//! metal, that port is not VMware's and the instruction must not run. Every length the
//! host reports is checked against a caller's limit before anything is allocated.

/// `eax` of every backdoor call.
pub const MAGIC: u32 = 0x564D_5868;
/// The backdoor's I/O port (`dx`).
pub const PORT: u16 = 0x5658;
/// Backdoor command "message" (the low half of `ecx`).
pub const CMD_MESSAGE: u32 = 30;
/// The RPCI protocol number (`RPCI`), sent when opening a channel.
pub const RPCI_PROTOCOL: u32 = 0x4943_5052;
/// Asks the host for cookies, so that no other process can use the channel.
pub const FLAG_COOKIE: u32 = 0x8000_0000;
/// Status bit: the step succeeded.
pub const STATUS_SUCCESS: u32 = 0x0001;
/// Status bit: the host has a reply waiting.
pub const STATUS_DORECV: u32 = 0x0002;
/// Status bit: a checkpoint (suspend/resume) interrupted the step; retry it.
pub const STATUS_CPT: u32 = 0x0010;
/// The CPUID hypervisor signature (leaf `0x4000_0000`, `ebx ecx edx`).
pub const CPUID_SIGNATURE: &[u8; 12] = b"VMwareVMware";
/// How often a step interrupted by a checkpoint is tried again.
const CHECKPOINT_RETRIES: usize = 3;

/// The message types (the high half of `ecx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MessageType {
    /// Open a channel.
    Open = 0,
    /// Announce the length of a request.
    SendSize = 1,
    /// Four bytes of the request.
    SendPayload = 2,
    /// Ask for the length of the reply.
    ReceiveSize = 3,
    /// Four bytes of the reply.
    ReceivePayload = 4,
    /// Acknowledge the reply.
    ReceiveStatus = 5,
    /// Close the channel.
    Close = 6,
}

/// The registers of one backdoor call (in or out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    /// `eax`.
    pub eax: u32,
    /// `ebx`.
    pub ebx: u32,
    /// `ecx`.
    pub ecx: u32,
    /// `edx`.
    pub edx: u32,
    /// `esi`.
    pub esi: u32,
    /// `edi`.
    pub edi: u32,
}

/// One backdoor call: the registers in, the registers VMware answered.
pub trait Backdoor {
    /// Performs the call.
    fn call(&mut self, regs: Regs) -> Regs;
}

/// An open RPCI channel: its id and cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Channel id (the high half of `edx`).
    pub id: u16,
    /// First cookie (`esi`).
    pub cookie_high: u32,
    /// Second cookie (`edi`).
    pub cookie_low: u32,
}

/// Why an RPC did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcError {
    /// The host refused to open a channel (no RPC, or the backdoor is restricted).
    Open,
    /// A step failed; the status is the high half of `ecx`.
    Step {
        /// The step.
        step: MessageType,
        /// The status the host returned.
        status: u32,
    },
    /// The request is longer than a message may be.
    RequestTooLong(usize),
    /// The reply is longer than the caller accepts.
    ReplyTooLong {
        /// The length the host announced.
        len: u32,
        /// The caller's limit.
        max: usize,
    },
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open => write!(f, "the host did not open an rpci channel"),
            Self::Step { step, status } => {
                write!(f, "rpci step {step:?} failed (status {status:#06x})")
            }
            Self::RequestTooLong(n) => write!(f, "rpci request of {n} bytes is too long"),
            Self::ReplyTooLong { len, max } => {
                write!(f, "rpci reply of {len} bytes exceeds the limit of {max}")
            }
        }
    }
}

/// Whether CPUID leaf `0x4000_0000`'s `ebx`, `ecx`, `edx` spell VMware's signature.
pub fn is_vmware_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&ecx.to_le_bytes());
    sig[8..].copy_from_slice(&edx.to_le_bytes());
    &sig == CPUID_SIGNATURE
}

/// Whether an SMBIOS system vendor (`/sys/class/dmi/id/sys_vendor`) is VMware's.
pub fn is_vmware_vendor(sys_vendor: &str) -> bool {
    sys_vendor.trim().starts_with("VMware")
}

/// The registers of a message step on `channel` (`None` while opening).
pub fn message_regs(step: MessageType, ebx: u32, channel: Option<&Channel>) -> Regs {
    let (id, esi, edi) = channel.map_or((0, 0, 0), |c| (c.id, c.cookie_high, c.cookie_low));
    Regs {
        eax: MAGIC,
        ebx,
        ecx: CMD_MESSAGE | ((step as u32) << 16),
        edx: u32::from(PORT) | (u32::from(id) << 16),
        esi,
        edi,
    }
}

/// The status half of an answer.
fn status(answer: &Regs) -> u32 {
    answer.ecx >> 16
}

/// One step, retried when a checkpoint interrupted it; the answer on success.
fn step<B: Backdoor>(
    backdoor: &mut B,
    step: MessageType,
    ebx: u32,
    channel: &Channel,
) -> Result<Regs, RpcError> {
    let mut answer = Regs::default();
    for _ in 0..CHECKPOINT_RETRIES {
        answer = backdoor.call(message_regs(step, ebx, Some(channel)));
        let s = status(&answer);
        if s & STATUS_SUCCESS != 0 {
            return Ok(answer);
        }
        if s & STATUS_CPT == 0 {
            break;
        }
    }
    Err(RpcError::Step {
        step,
        status: status(&answer),
    })
}

/// Opens an RPCI channel.
pub fn open<B: Backdoor>(backdoor: &mut B) -> Result<Channel, RpcError> {
    let answer = backdoor.call(message_regs(
        MessageType::Open,
        RPCI_PROTOCOL | FLAG_COOKIE,
        None,
    ));
    if status(&answer) & STATUS_SUCCESS == 0 {
        return Err(RpcError::Open);
    }
    Ok(Channel {
        id: (answer.edx >> 16) as u16,
        cookie_high: answer.esi,
        cookie_low: answer.edi,
    })
}

/// Sends `request` and receives the reply (at most `max_reply` bytes) on `channel`.
pub fn exchange<B: Backdoor>(
    backdoor: &mut B,
    channel: &Channel,
    request: &[u8],
    max_reply: usize,
) -> Result<Vec<u8>, RpcError> {
    let len = u32::try_from(request.len()).map_err(|_| RpcError::RequestTooLong(request.len()))?;
    step(backdoor, MessageType::SendSize, len, channel)?;
    for chunk in request.chunks(4) {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        step(
            backdoor,
            MessageType::SendPayload,
            u32::from_le_bytes(word),
            channel,
        )?;
    }
    let size = step(backdoor, MessageType::ReceiveSize, 0, channel)?;
    if status(&size) & STATUS_DORECV == 0 {
        return Ok(Vec::new());
    }
    let reply_len = size.ebx;
    let n = usize::try_from(reply_len)
        .ok()
        .filter(|n| *n <= max_reply)
        .ok_or(RpcError::ReplyTooLong {
            len: reply_len,
            max: max_reply,
        })?;
    let mut reply = Vec::with_capacity(n);
    while reply.len() < n {
        let word = step(
            backdoor,
            MessageType::ReceivePayload,
            STATUS_SUCCESS,
            channel,
        )?;
        let take = (n - reply.len()).min(4);
        reply.extend_from_slice(&word.ebx.to_le_bytes()[..take]);
    }
    step(
        backdoor,
        MessageType::ReceiveStatus,
        STATUS_SUCCESS,
        channel,
    )?;
    Ok(reply)
}

/// Closes `channel` (errors are of no consequence: the host drops idle channels).
pub fn close<B: Backdoor>(backdoor: &mut B, channel: &Channel) {
    let _ = backdoor.call(message_regs(MessageType::Close, 0, Some(channel)));
}

/// One RPCI request on a fresh channel.
pub fn rpc<B: Backdoor>(
    backdoor: &mut B,
    request: &[u8],
    max_reply: usize,
) -> Result<Vec<u8>, RpcError> {
    let channel = open(backdoor)?;
    let result = exchange(backdoor, &channel, request, max_reply);
    close(backdoor, &channel);
    result
}

/// The value of an `info-get` reply: `Some` for `1 <value>`, `None` for `0 <reason>` or
/// anything else.
pub fn info_get_value(reply: &[u8]) -> Option<&[u8]> {
    reply.strip_prefix(b"1 ")
}

/// `guestinfo.<key>` from the host, `None` when unset; `Err` when the RPC itself failed.
pub fn guestinfo<B: Backdoor>(
    backdoor: &mut B,
    key: &str,
    max: usize,
) -> Result<Option<Vec<u8>>, RpcError> {
    let request = format!("info-get guestinfo.{key}");
    // The reply carries the `1 ` prefix on top of the value.
    let reply = rpc(backdoor, request.as_bytes(), max.saturating_add(2))?;
    Ok(info_get_value(&reply).map(<[u8]>::to_vec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host side of the RPCI channel as VMware's documentation of the protocol
    /// describes it: it checks every register a guest sends and answers as the host does.
    struct Host {
        guestinfo: Vec<(String, String)>,
        id: u16,
        cookies: (u32, u32),
        open: bool,
        expected_len: Option<usize>,
        request: Vec<u8>,
        reply: Vec<u8>,
        sent: usize,
        calls: Vec<Regs>,
        checkpoint_once: Option<MessageType>,
    }

    impl Host {
        fn new(guestinfo: &[(&str, &str)]) -> Self {
            Self {
                guestinfo: guestinfo
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
                id: 7,
                cookies: (0x1122_3344, 0x5566_7788),
                open: false,
                expected_len: None,
                request: Vec::new(),
                reply: Vec::new(),
                sent: 0,
                calls: Vec::new(),
                checkpoint_once: None,
            }
        }

        fn answer(status: u32) -> Regs {
            Regs {
                ecx: status << 16,
                ..Regs::default()
            }
        }

        fn handle_request(&mut self) {
            let text = String::from_utf8(self.request.clone()).expect("utf-8 request");
            let key = text
                .strip_prefix("info-get guestinfo.")
                .expect("an info-get request");
            self.reply = match self.guestinfo.iter().find(|(k, _)| k == key) {
                Some((_, v)) => format!("1 {v}").into_bytes(),
                None => b"0 No value found".to_vec(),
            };
            self.sent = 0;
        }
    }

    impl Backdoor for Host {
        fn call(&mut self, regs: Regs) -> Regs {
            self.calls.push(regs);
            assert_eq!(regs.eax, MAGIC);
            assert_eq!(regs.ecx & 0xffff, CMD_MESSAGE);
            assert_eq!(regs.edx & 0xffff, u32::from(PORT));
            let kind = regs.ecx >> 16;
            if kind != MessageType::Open as u32 {
                assert!(self.open, "step {kind} on a closed channel");
                assert_eq!(regs.edx >> 16, u32::from(self.id), "channel id");
                assert_eq!((regs.esi, regs.edi), self.cookies, "cookies");
            }
            if self.checkpoint_once.is_some_and(|k| k as u32 == kind) {
                self.checkpoint_once = None;
                return Self::answer(STATUS_CPT);
            }
            match kind {
                0 => {
                    assert_eq!(regs.ebx, RPCI_PROTOCOL | FLAG_COOKIE);
                    self.open = true;
                    Regs {
                        ecx: STATUS_SUCCESS << 16,
                        edx: u32::from(self.id) << 16,
                        esi: self.cookies.0,
                        edi: self.cookies.1,
                        ..Regs::default()
                    }
                }
                1 => {
                    self.expected_len = Some(regs.ebx as usize);
                    self.request.clear();
                    Self::answer(STATUS_SUCCESS)
                }
                2 => {
                    let want = self.expected_len.expect("size before payload");
                    let take = (want - self.request.len()).min(4);
                    self.request
                        .extend_from_slice(&regs.ebx.to_le_bytes()[..take]);
                    if self.request.len() == want {
                        self.handle_request();
                    }
                    Self::answer(STATUS_SUCCESS)
                }
                3 => Regs {
                    ebx: self.reply.len() as u32,
                    ecx: (STATUS_SUCCESS | STATUS_DORECV) << 16,
                    ..Regs::default()
                },
                4 => {
                    assert_eq!(regs.ebx, STATUS_SUCCESS);
                    let mut word = [0u8; 4];
                    let end = (self.sent + 4).min(self.reply.len());
                    word[..end - self.sent].copy_from_slice(&self.reply[self.sent..end]);
                    self.sent = end;
                    Regs {
                        ebx: u32::from_le_bytes(word),
                        ecx: STATUS_SUCCESS << 16,
                        ..Regs::default()
                    }
                }
                5 => {
                    assert_eq!(regs.ebx, STATUS_SUCCESS);
                    assert_eq!(self.sent, self.reply.len(), "reply fully read");
                    Self::answer(STATUS_SUCCESS)
                }
                6 => {
                    self.open = false;
                    Self::answer(STATUS_SUCCESS)
                }
                other => panic!("unknown message type {other}"),
            }
        }
    }

    #[test]
    fn registers_of_each_step() {
        let open = message_regs(MessageType::Open, RPCI_PROTOCOL | FLAG_COOKIE, None);
        assert_eq!(
            open,
            Regs {
                eax: 0x564D_5868,
                ebx: 0xC943_5052,
                ecx: 0x0000_001E,
                edx: 0x0000_5658,
                esi: 0,
                edi: 0,
            }
        );
        let channel = Channel {
            id: 3,
            cookie_high: 0xAAAA_0001,
            cookie_low: 0xBBBB_0002,
        };
        let size = message_regs(MessageType::SendSize, 26, Some(&channel));
        assert_eq!(size.ecx, 0x0001_001E);
        assert_eq!(size.edx, 0x0003_5658);
        assert_eq!(
            (size.ebx, size.esi, size.edi),
            (26, 0xAAAA_0001, 0xBBBB_0002)
        );
        assert_eq!(
            message_regs(MessageType::ReceivePayload, 1, Some(&channel)).ecx,
            0x0004_001E
        );
        assert_eq!(
            message_regs(MessageType::Close, 0, Some(&channel)).ecx,
            0x0006_001E
        );
    }

    #[test]
    fn the_request_is_sent_four_bytes_at_a_time_little_endian() {
        let mut host = Host::new(&[("ovfEnv", "x")]);
        guestinfo(&mut host, "ovfEnv", 64).expect("rpc");
        let payload: Vec<u32> = host
            .calls
            .iter()
            .filter(|r| r.ecx >> 16 == MessageType::SendPayload as u32)
            .map(|r| r.ebx)
            .collect();
        // "info-get guestinfo.ovfEnv" is 25 bytes: 7 words, the last padded with zeros.
        assert_eq!(payload.len(), 7);
        assert_eq!(payload[0], u32::from_le_bytes(*b"info"));
        assert_eq!(payload[6], u32::from_le_bytes([b'v', 0, 0, 0]));
        let size = host
            .calls
            .iter()
            .find(|r| r.ecx >> 16 == MessageType::SendSize as u32)
            .expect("send size");
        assert_eq!(size.ebx, 25);
    }

    #[test]
    fn reads_the_ovf_environment_from_guestinfo() {
        let xml = "<?xml version=\"1.0\"?><Environment><PropertySection>\
                   <Property oe:key=\"jeos.hostname\" oe:value=\"web-vmw\"/>\
                   </PropertySection></Environment>";
        let mut host = Host::new(&[("ovfEnv", xml)]);
        let value = guestinfo(&mut host, "ovfEnv", 4096)
            .expect("rpc")
            .expect("a value");
        assert_eq!(value, xml.as_bytes());
        assert!(!host.open, "the channel is closed afterwards");
        let props = super::super::ovfenv::parse(&String::from_utf8(value).unwrap());
        assert_eq!(
            props.get("jeos.hostname").map(String::as_str),
            Some("web-vmw")
        );
    }

    #[test]
    fn an_unset_key_is_none() {
        let mut host = Host::new(&[]);
        assert_eq!(guestinfo(&mut host, "ovfEnv", 4096), Ok(None));
    }

    #[test]
    fn a_checkpoint_is_retried() {
        let mut host = Host::new(&[("ovfEnv", "abc")]);
        host.checkpoint_once = Some(MessageType::ReceivePayload);
        assert_eq!(
            guestinfo(&mut host, "ovfEnv", 64),
            Ok(Some(b"abc".to_vec()))
        );
    }

    #[test]
    fn a_reply_over_the_limit_is_refused_before_reading_it() {
        let mut host = Host::new(&[("ovfEnv", &"x".repeat(100))]);
        let err = guestinfo(&mut host, "ovfEnv", 10).unwrap_err();
        assert_eq!(err, RpcError::ReplyTooLong { len: 102, max: 12 });
        assert!(
            !host
                .calls
                .iter()
                .any(|r| r.ecx >> 16 == MessageType::ReceivePayload as u32)
        );
        assert!(!host.open, "closed after the error");
    }

    /// A host that leaves the registers as they were (no RPC behind the port).
    struct Silent;

    impl Backdoor for Silent {
        fn call(&mut self, regs: Regs) -> Regs {
            regs
        }
    }

    #[test]
    fn no_rpc_when_the_host_does_not_answer() {
        assert_eq!(guestinfo(&mut Silent, "ovfEnv", 64), Err(RpcError::Open));
    }

    #[test]
    fn detection() {
        let word = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap());
        assert!(is_vmware_signature(
            word(b"VMwa"),
            word(b"reVM"),
            word(b"ware")
        ));
        assert!(!is_vmware_signature(
            word(b"KVMK"),
            word(b"VMKV"),
            word(b"M\0\0\0")
        ));
        assert!(is_vmware_vendor("VMware, Inc.\n"));
        assert!(!is_vmware_vendor("QEMU\n"));
    }
}
