//! Host TCP ports relayed into the guest through the vsock device's Unix socket
//! (Firecracker's hybrid model): each accepted TCP connection opens a Unix connection,
//! sends `CONNECT <guest port>\n`, waits for `OK <port>\n` and then copies bytes both ways.
//! In the guest, guest-init relays vsock port N to `127.0.0.1:N`.
//!
//! The listeners are bound before the VM starts, so a busy host port is an error of
//! [`TcpForwarder::bind`], not a failure halfway through the boot.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::PortForward;

/// How often an idle listener checks whether it should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// How long the guest may take to accept a forwarded connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// guest-init's vsock port for shutdown requests (`poweroff\n`); "JEOS" in ASCII, above
/// every TCP port so no forward collides with it.
pub const CONTROL_PORT: u32 = 0x4a45_4f53;

/// Asks the guest for a clean power-off through guest-init's control port.
///
/// # Errors
///
/// IO errors (no vsock, guest-init not listening).
pub fn request_poweroff(socket: &Path) -> io::Result<()> {
    let mut unix = connect_guest(socket, CONTROL_PORT)?;
    unix.write_all(b"poweroff\n")?;
    Ok(())
}

/// Errors of [`TcpForwarder::bind`].
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The host port is taken (or not allowed).
    #[error("cannot listen on 127.0.0.1:{port} for `--forward`")]
    Bind {
        /// Host port.
        port: u16,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Listeners relaying host TCP ports into the guest; stopped when dropped.
#[derive(Debug)]
pub struct TcpForwarder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    addresses: Vec<SocketAddr>,
}

impl TcpForwarder {
    /// Binds `127.0.0.1:<host>` for every forward (port 0 picks a free port, see
    /// [`TcpForwarder::addresses`]) and relays connections to `socket`.
    ///
    /// # Errors
    ///
    /// [`ForwardError::Bind`] when a port cannot be bound (nothing stays bound then).
    pub fn bind(forwards: &[PortForward], socket: &Path) -> Result<Self, ForwardError> {
        let mut listeners = Vec::new();
        for forward in forwards {
            let listener = TcpListener::bind(("127.0.0.1", forward.host))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| ForwardError::Bind {
                    port: forward.host,
                    source,
                })?;
            listeners.push((listener, forward.guest));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut forwarder = Self {
            stop: stop.clone(),
            threads: Vec::new(),
            addresses: Vec::new(),
        };
        for (listener, guest) in listeners {
            if let Ok(address) = listener.local_addr() {
                forwarder.addresses.push(address);
            }
            let (stop, socket) = (stop.clone(), socket.to_owned());
            let thread = std::thread::Builder::new()
                .name(format!("forward-{guest}"))
                .spawn(move || accept_loop(&listener, guest, &socket, &stop));
            if let Ok(thread) = thread {
                forwarder.threads.push(thread);
            }
        }
        Ok(forwarder)
    }

    /// The bound addresses, in the order of the forwards.
    #[must_use]
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
}

impl Drop for TcpForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, guest: u16, socket: &Path, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((tcp, _)) => {
                let socket: PathBuf = socket.to_owned();
                let _ = std::thread::Builder::new()
                    .name(format!("forward-{guest}-conn"))
                    .spawn(move || {
                        let _ = relay(tcp, guest, &socket);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Opens a vsock connection to guest `port` through the device's Unix socket
/// (`CONNECT <port>\n` → `OK <host port>\n`).
///
/// # Errors
///
/// IO errors, or `ConnectionRefused` when the guest refuses (nothing listens on `port`).
pub fn connect_guest(socket: &Path, port: u32) -> io::Result<UnixStream> {
    let mut unix = UnixStream::connect(socket)?;
    unix.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    unix.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    // Byte by byte: data after the line belongs to the stream.
    let mut byte = [0u8; 1];
    while line.len() < 32 {
        if unix.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the guest refused vsock port {port}"),
            ));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    if !line.starts_with(b"OK ") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected answer from the vsock device",
        ));
    }
    unix.set_read_timeout(None)?;
    Ok(unix)
}

fn relay(tcp: TcpStream, guest: u16, socket: &Path) -> io::Result<()> {
    let unix = connect_guest(socket, u32::from(guest))?;
    let (mut tcp_reader, mut unix_writer) = (tcp.try_clone()?, unix.try_clone()?);
    let outbound = std::thread::spawn(move || {
        let _ = io::copy(&mut tcp_reader, &mut unix_writer);
        let _ = unix_writer.shutdown(Shutdown::Write);
    });
    let mut reader = BufReader::new(unix);
    let mut tcp_writer = tcp;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        tcp_writer.write_all(chunk)?;
        reader.consume(n);
    }
    let _ = tcp_writer.shutdown(Shutdown::Write);
    let _ = outbound.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_port_is_a_bind_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let error = TcpForwarder::bind(
            &[PortForward {
                host: port,
                guest: 80,
            }],
            &dir.path().join("v.sock"),
        )
        .unwrap_err();
        assert!(matches!(error, ForwardError::Bind { port: p, .. } if p == port));
    }

    #[test]
    fn relays_through_a_hybrid_vsock_socket() {
        // A stand-in for the device's socket that speaks the host side of the protocol
        // and echoes in upper case.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("v.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut unix, _) = listener.accept().unwrap();
            let mut line = [0u8; 11];
            unix.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"CONNECT 80\n");
            unix.write_all(b"OK 1073741824\n").unwrap();
            let mut text = String::new();
            unix.read_to_string(&mut text).unwrap();
            unix.write_all(text.to_uppercase().as_bytes()).unwrap();
        });
        let forwarder = TcpForwarder::bind(&[PortForward { host: 0, guest: 80 }], &socket).unwrap();
        let mut tcp = TcpStream::connect(forwarder.addresses()[0]).unwrap();
        tcp.write_all(b"hello").unwrap();
        tcp.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "HELLO");
        server.join().unwrap();
    }
}
