//! The host side of the vsock device: Firecracker's hybrid model over Unix sockets.
//!
//! - Host-initiated: a host program connects to the VM's socket and writes
//!   `CONNECT <port>\n`; the muxer sends the guest a `REQUEST` to that port from a fresh
//!   host port and, once the guest answers `RESPONSE`, writes `OK <host port>\n` back and
//!   relays bytes both ways.
//! - Guest-initiated: a guest `connect(2, P)` makes the muxer connect to `<socket>_<P>`;
//!   no listener there means a `RST`.
//!
//! Memory is bounded however the guest behaves: each connection buffers at most
//! [`BUFFER_BYTES`] towards the host (the `buf_alloc` it advertises; a guest that sends
//! beyond its credit is reset, §5.10.6.3), reads from the host only as much as the guest
//! has credit for and one packet at a time, at most [`MAX_CONNECTIONS`] connections and
//! [`MAX_PENDING_HOST`] half-open host connections exist, and queued control packets
//! (replies the guest has not fetched yet) are capped at [`MAX_CONTROL_PACKETS`].

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::VsockError;
use super::packet::{
    HOST_CID, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM, VsockHeader,
};

/// Receive buffer per connection, advertised as `buf_alloc`.
pub const BUFFER_BYTES: u32 = 256 * 1024;
/// Most connections at once; more are refused with a RST.
pub const MAX_CONNECTIONS: usize = 64;
/// Most host connections still sending their `CONNECT` line.
pub const MAX_PENDING_HOST: usize = 16;
/// Most queued control packets (RSTs for unknown connections) not fetched by the guest.
pub const MAX_CONTROL_PACKETS: usize = 256;
/// Longest `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// First host port handed out for host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;

/// (host port, guest port).
type Key = (u32, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// REQUEST queued or sent to the guest, waiting for its RESPONSE.
    HostConnecting,
    Established,
}

#[derive(Debug, Default)]
struct Pending {
    request: bool,
    response: bool,
    credit_update: bool,
    rst: bool,
}

#[derive(Debug)]
struct Connection {
    stream: UnixStream,
    state: State,
    /// `OK <port>\n` for the host, written before any guest byte and not counted as one.
    preamble: Vec<u8>,
    /// Guest bytes not yet written to the host stream (at most [`BUFFER_BYTES`]).
    to_host: VecDeque<u8>,
    /// Bytes written to the host so far (our `fwd_cnt`).
    fwd_cnt: u32,
    advertised_fwd_cnt: u32,
    /// Bytes sent to the guest so far.
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    pending: Pending,
    host_eof: bool,
    guest_shutdown: u32,
}

impl Connection {
    fn new(stream: UnixStream, state: State) -> Self {
        Self {
            stream,
            state,
            preamble: Vec::new(),
            to_host: VecDeque::new(),
            fwd_cnt: 0,
            advertised_fwd_cnt: 0,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            pending: Pending::default(),
            host_eof: false,
            guest_shutdown: 0,
        }
    }

    /// Bytes the guest can still accept (§5.10.6.3: `buf_alloc - (tx_cnt - fwd_cnt)`).
    fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn wants_host_input(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && self.guest_shutdown & SHUTDOWN_RCV == 0
            && self.peer_credit() > 0
    }

    /// Writes what the host accepts; the rest stays buffered.
    fn flush(&mut self) {
        while !self.preamble.is_empty() {
            match self.stream.write(&self.preamble) {
                Ok(n) if n > 0 => {
                    self.preamble.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => {
                    self.pending.rst = true;
                    return;
                }
            }
        }
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => {
                    self.pending.rst = true;
                    break;
                }
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt = self
                        .fwd_cnt
                        .wrapping_add(u32::try_from(n).expect("<= buffer size"));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.pending.rst = true;
                    self.to_host.clear();
                    break;
                }
            }
        }
        if self.fwd_cnt.wrapping_sub(self.advertised_fwd_cnt) >= BUFFER_BYTES / 4 {
            self.pending.credit_update = true;
        }
        if self.to_host.is_empty() && self.guest_shutdown & SHUTDOWN_SEND != 0 {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
            if self.guest_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
                // The guest closed both ways: confirm with a RST (§5.10.6.6).
                self.pending.rst = true;
            }
        }
    }
}

/// A half-open host connection still sending `CONNECT <port>\n`.
#[derive(Debug)]
struct PendingHost {
    stream: UnixStream,
    line: Vec<u8>,
}

/// What the poll loop should wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollInterest {
    /// The descriptor.
    pub fd: std::os::fd::RawFd,
    /// Wait for input.
    pub read: bool,
    /// Wait for output space.
    pub write: bool,
}

/// The host side of one vsock device.
#[derive(Debug)]
pub struct VsockMuxer {
    guest_cid: u64,
    socket_path: PathBuf,
    listener: UnixListener,
    pending_host: Vec<PendingHost>,
    connections: BTreeMap<Key, Connection>,
    control: VecDeque<VsockHeader>,
    dropped_control: u64,
    next_host_port: u32,
    cursor: Option<Key>,
}

impl VsockMuxer {
    /// Listens on `socket_path` (which must not exist) for host connections.
    ///
    /// # Errors
    ///
    /// The bind error.
    pub fn bind(guest_cid: u64, socket_path: &Path) -> io::Result<Self> {
        let listener = UnixListener::bind(socket_path)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            guest_cid,
            socket_path: socket_path.to_owned(),
            listener,
            pending_host: Vec::new(),
            connections: BTreeMap::new(),
            control: VecDeque::new(),
            dropped_control: 0,
            next_host_port: FIRST_HOST_PORT,
            cursor: None,
        })
    }

    /// The socket host programs connect to.
    #[must_use]
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Open connections.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Queued control packets.
    #[must_use]
    pub fn control_len(&self) -> usize {
        self.control.len()
    }

    /// Control packets dropped because the queue was full.
    #[must_use]
    pub fn dropped_control(&self) -> u64 {
        self.dropped_control
    }

    /// Bytes buffered towards the host over all connections.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.connections.values().map(|c| c.to_host.len()).sum()
    }

    /// Drops every connection (device reset).
    pub fn reset(&mut self) {
        self.connections.clear();
        self.pending_host.clear();
        self.control.clear();
        self.cursor = None;
    }

    /// Queues a control packet for the guest (dropped when [`MAX_CONTROL_PACKETS`] wait).
    pub fn queue_control(&mut self, header: VsockHeader) {
        if self.control.len() >= MAX_CONTROL_PACKETS {
            self.dropped_control += 1;
        } else {
            self.control.push_back(header);
        }
    }

    /// Descriptors to poll; host input is only wanted when the guest has rx buffers.
    #[must_use]
    pub fn poll_interest(&self, rx_buffers_available: bool) -> Vec<PollInterest> {
        use std::os::fd::AsRawFd;
        let mut out = vec![PollInterest {
            fd: self.listener.as_raw_fd(),
            read: true,
            write: false,
        }];
        out.extend(self.pending_host.iter().map(|p| PollInterest {
            fd: p.stream.as_raw_fd(),
            read: true,
            write: false,
        }));
        for connection in self.connections.values() {
            let read = rx_buffers_available && connection.wants_host_input();
            let write = !connection.to_host.is_empty() || !connection.preamble.is_empty();
            if read || write {
                out.push(PollInterest {
                    fd: connection.stream.as_raw_fd(),
                    read,
                    write,
                });
            }
        }
        out
    }

    /// Accepts host connections, reads their `CONNECT` lines and flushes buffered guest
    /// bytes. Never blocks.
    pub fn pump_host(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.pending_host.len() >= MAX_PENDING_HOST || stream.set_nonblocking(true).is_err()
            {
                continue; // dropped: the host sees EOF
            }
            self.pending_host.push(PendingHost {
                stream,
                line: Vec::new(),
            });
        }
        let pending = std::mem::take(&mut self.pending_host);
        for mut host in pending {
            match read_connect_line(&mut host) {
                LineState::Incomplete => self.pending_host.push(host),
                LineState::Invalid => {}
                LineState::Port(port) => self.open_host_connection(host.stream, port),
            }
        }
        for connection in self.connections.values_mut() {
            connection.flush();
        }
    }

    fn open_host_connection(&mut self, stream: UnixStream, guest_port: u32) {
        if self.connections.len() >= MAX_CONNECTIONS {
            return;
        }
        let mut host_port = self.next_host_port;
        while self.connections.contains_key(&(host_port, guest_port)) {
            host_port = host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        }
        self.next_host_port = host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        let mut connection = Connection::new(stream, State::HostConnecting);
        connection.pending.request = true;
        self.connections.insert((host_port, guest_port), connection);
    }

    /// Handles one checked packet from the guest's tx queue.
    ///
    /// # Errors
    ///
    /// The connection-level rules of [`VsockError`] the packet broke (the connection is
    /// then reset).
    pub fn handle_guest_packet(
        &mut self,
        header: &VsockHeader,
        payload: &[u8],
    ) -> Result<(), VsockError> {
        let key = (header.dst_port, header.src_port);
        if header.op == OP_REQUEST {
            return self.handle_request(header, key);
        }
        let Some(connection) = self.connections.get_mut(&key) else {
            // §5.10.6.6: a packet for no connection is answered with a RST (never a RST
            // for a RST).
            if header.op != OP_RST {
                self.queue_control(header.reset_reply());
            }
            return Ok(());
        };
        connection.peer_buf_alloc = header.buf_alloc;
        connection.peer_fwd_cnt = header.fwd_cnt;
        let result = match (header.op, connection.state) {
            (OP_RST, _) => {
                self.connections.remove(&key);
                return Ok(());
            }
            (OP_RESPONSE, State::HostConnecting) => {
                connection.state = State::Established;
                connection.preamble = format!("OK {}\n", header.dst_port).into_bytes();
                Ok(())
            }
            (OP_RW, State::Established) => {
                let free =
                    BUFFER_BYTES as usize - connection.to_host.len().min(BUFFER_BYTES as usize);
                if payload.len() > free {
                    Err(VsockError::CreditExceeded {
                        port: header.src_port,
                        len: header.len,
                        free: u32::try_from(free).expect("<= BUFFER_BYTES"),
                    })
                } else {
                    connection.to_host.extend(payload);
                    Ok(())
                }
            }
            (OP_SHUTDOWN, _) => {
                connection.guest_shutdown |= header.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                Ok(())
            }
            (OP_CREDIT_UPDATE, _) => Ok(()),
            (OP_CREDIT_REQUEST, _) => {
                connection.pending.credit_update = true;
                Ok(())
            }
            (op, _) => Err(VsockError::UnexpectedOp {
                op,
                port: header.src_port,
            }),
        };
        match result {
            Ok(()) => connection.flush(),
            Err(_) => {
                self.connections.remove(&key);
                self.queue_control(header.reset_reply());
            }
        }
        result
    }

    fn handle_request(&mut self, header: &VsockHeader, key: Key) -> Result<(), VsockError> {
        let refuse = |this: &mut Self, error: Option<VsockError>| {
            this.queue_control(header.reset_reply());
            error.map_or(Ok(()), Err)
        };
        if self.connections.contains_key(&key) {
            self.connections.remove(&key);
            return refuse(
                self,
                Some(VsockError::DuplicateRequest {
                    port: header.src_port,
                }),
            );
        }
        if self.connections.len() >= MAX_CONNECTIONS {
            return refuse(self, Some(VsockError::TooManyConnections));
        }
        let mut path = self.socket_path.clone().into_os_string();
        path.push(format!("_{}", header.dst_port));
        let stream = match UnixStream::connect(&path) {
            Ok(stream) if stream.set_nonblocking(true).is_ok() => stream,
            // Nobody listens on the host for that port: connection refused.
            _ => return refuse(self, None),
        };
        let mut connection = Connection::new(stream, State::Established);
        connection.peer_buf_alloc = header.buf_alloc;
        connection.peer_fwd_cnt = header.fwd_cnt;
        connection.pending.response = true;
        self.connections.insert(key, connection);
        Ok(())
    }

    /// The next packet for the guest's rx queue, with at most `max_payload` payload bytes;
    /// `None` when there is nothing to send.
    pub fn next_rx_packet(&mut self, max_payload: usize) -> Option<(VsockHeader, Vec<u8>)> {
        if let Some(header) = self.control.pop_front() {
            return Some((header, Vec::new()));
        }
        let keys: Vec<Key> = match self.cursor {
            Some(cursor) => {
                let after = self.connections.range((
                    std::ops::Bound::Excluded(cursor),
                    std::ops::Bound::Unbounded,
                ));
                let before = self.connections.range(..=cursor);
                after.chain(before).map(|(k, _)| *k).collect()
            }
            None => self.connections.keys().copied().collect(),
        };
        for key in keys {
            let connection = self.connections.get_mut(&key).expect("key from the map");
            if let Some((op, flags, payload)) = next_connection_packet(connection, max_payload) {
                let header = VsockHeader {
                    src_cid: HOST_CID,
                    dst_cid: self.guest_cid,
                    src_port: key.0,
                    dst_port: key.1,
                    len: u32::try_from(payload.len()).expect("<= max payload"),
                    socket_type: TYPE_STREAM,
                    op,
                    flags,
                    buf_alloc: BUFFER_BYTES,
                    fwd_cnt: connection.fwd_cnt,
                };
                connection.advertised_fwd_cnt = connection.fwd_cnt;
                if op == OP_RST {
                    self.connections.remove(&key);
                }
                self.cursor = Some(key);
                return Some((header, payload));
            }
        }
        None
    }
}

/// The next packet one connection has for the guest: (op, flags, payload).
fn next_connection_packet(
    connection: &mut Connection,
    max_payload: usize,
) -> Option<(u16, u32, Vec<u8>)> {
    let pending = &mut connection.pending;
    if std::mem::take(&mut pending.rst) {
        return Some((OP_RST, 0, Vec::new()));
    }
    if std::mem::take(&mut pending.request) {
        return Some((OP_REQUEST, 0, Vec::new()));
    }
    if std::mem::take(&mut pending.response) {
        return Some((OP_RESPONSE, 0, Vec::new()));
    }
    if connection.wants_host_input() && max_payload > 0 {
        let credit = usize::try_from(connection.peer_credit()).unwrap_or(usize::MAX);
        let mut buffer = vec![0u8; max_payload.min(credit)];
        match connection.stream.read(&mut buffer) {
            Ok(0) => {
                connection.host_eof = true;
                return Some((OP_SHUTDOWN, SHUTDOWN_SEND, Vec::new()));
            }
            Ok(n) => {
                buffer.truncate(n);
                connection.tx_cnt = connection
                    .tx_cnt
                    .wrapping_add(u32::try_from(n).expect("<= max payload"));
                return Some((OP_RW, 0, buffer));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Some((OP_RST, 0, Vec::new())),
        }
    }
    if std::mem::take(&mut connection.pending.credit_update) {
        return Some((OP_CREDIT_UPDATE, 0, Vec::new()));
    }
    None
}

enum LineState {
    Incomplete,
    Invalid,
    Port(u32),
}

/// Reads what is available of `CONNECT <port>\n` (byte by byte, so no stream data after
/// the line is consumed).
fn read_connect_line(host: &mut PendingHost) -> LineState {
    let mut byte = [0u8; 1];
    loop {
        match host.stream.read(&mut byte) {
            Ok(0) => return LineState::Invalid,
            Ok(_) if byte[0] == b'\n' => return parse_connect_line(&host.line),
            Ok(_) if host.line.len() >= MAX_CONNECT_LINE => return LineState::Invalid,
            Ok(_) => host.line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return LineState::Incomplete,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return LineState::Invalid,
        }
    }
}

fn parse_connect_line(line: &[u8]) -> LineState {
    std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.trim_end_matches('\r').strip_prefix("CONNECT "))
        .and_then(|port| port.parse::<u32>().ok())
        .map_or(LineState::Invalid, LineState::Port)
}
