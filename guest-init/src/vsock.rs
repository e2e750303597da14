//! Port forwarding over virtio-vsock (the embedded runner's network): for every port N
//! named by `jeos.forward=N,M,...` on the kernel command line, listen on vsock port N and
//! splice each connection to `127.0.0.1:N` inside the guest. The host side (the runner)
//! connects to the guest's CID on port N for each TCP connection it accepts.
//!
//! With `jeos.vsock=1` (the runner attached a vsock device) guest-init also listens on
//! [`CONTROL_PORT`]: a connection that sends `poweroff\n` (or `reboot\n`) asks for a
//! clean shutdown, services stopped in order, as a power button press would.
//!
//! `unsafe` here: `socket`, `bind`, `listen`, `accept4` and `shutdown` on AF_VSOCK
//! sockets, which std has no type for.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::log::info;

/// The vsock port of the shutdown request ("JEOS" in ASCII: above every TCP port, so it
/// never collides with a forwarded one). Keep in sync with test-vm's `CONTROL_PORT`.
pub const CONTROL_PORT: u32 = 0x4a45_4f53;

/// How long to retry creating a listener while the vsock transport module loads.
const LISTEN_RETRY: Duration = Duration::from_secs(5);

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A listening AF_VSOCK stream socket on `port` (any local CID).
fn listen(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) has no memory arguments; the result is checked before use.
    let fd =
        check(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor returned by socket(2) that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let address = libc::sockaddr_vm {
        svm_family: libc::AF_VSOCK as libc::sa_family_t,
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: libc::VMADDR_CID_ANY,
        svm_zero: [0; 4],
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_vm>())
        .expect("sockaddr_vm is 16 bytes");
    // SAFETY: `address` is a valid, initialized sockaddr_vm of `len` bytes that outlives
    // the call; `fd` is an open socket.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&address).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    // SAFETY: plain system call on an open socket.
    check(unsafe { libc::listen(fd.as_raw_fd(), 64) })?;
    Ok(fd)
}

fn accept(listener: &OwnedFd) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: null address and length pointers are allowed (the peer address is not
        // wanted); `listener` is an open listening socket.
        let rc = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        match check(rc) {
            // SAFETY: `fd` is a fresh descriptor returned by accept4(2), owned by nobody else.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn shutdown_write(file: &File) {
    // SAFETY: plain system call on a descriptor `file` keeps open for the call.
    let _ = unsafe { libc::shutdown(file.as_raw_fd(), libc::SHUT_WR) };
}

/// Parses `jeos.forward=80,443`: ports 1 to 65535, duplicates dropped.
pub fn parse_ports(value: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = value
        .split(',')
        .filter_map(|p| p.trim().parse::<u16>().ok())
        .filter(|&p| p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Starts one listener thread per port; failures are logged (the appliance runs on).
pub fn start_forwarders(ports: &[u16]) {
    for &port in ports {
        let spawned = std::thread::Builder::new()
            .name(format!("vsock-{port}"))
            .spawn(move || serve(port));
        if let Err(err) = spawned {
            info!("vsock forward {port}: cannot start a thread: {err}");
        }
    }
}

/// Listens on `port`, retrying while the transport module may still be loading.
fn listen_retrying(port: u32) -> io::Result<OwnedFd> {
    let started = std::time::Instant::now();
    loop {
        match listen(port) {
            Ok(listener) => return Ok(listener),
            Err(_) if started.elapsed() < LISTEN_RETRY => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Starts the shutdown-request listener on [`CONTROL_PORT`].
pub fn start_control(events: &std::sync::mpsc::Sender<crate::supervisor::Event>) {
    let events = events.clone();
    let spawned = std::thread::Builder::new()
        .name("vsock-control".into())
        .spawn(move || {
            let listener = match listen_retrying(CONTROL_PORT) {
                Ok(listener) => listener,
                Err(err) => {
                    info!("vsock control port: cannot listen: {err}");
                    return;
                }
            };
            while let Ok(connection) = accept(&listener) {
                let mut request = [0u8; 16];
                let mut file = File::from(connection);
                let n = file.read(&mut request).unwrap_or(0);
                let kind = match &request[..n] {
                    b"poweroff\n" => crate::shutdown::ShutdownKind::Poweroff,
                    b"reboot\n" => crate::shutdown::ShutdownKind::Reboot,
                    _ => continue,
                };
                info!("shutdown requested by the host over vsock");
                let _ = file.write_all(b"OK\n");
                let _ = events.send(crate::supervisor::Event::Shutdown(kind));
            }
        });
    if let Err(err) = spawned {
        info!("vsock control port: cannot start a thread: {err}");
    }
}

fn serve(port: u16) {
    let listener = match listen_retrying(u32::from(port)) {
        Ok(listener) => listener,
        Err(err) => {
            info!("vsock forward {port}: cannot listen: {err}");
            return;
        }
    };
    info!("vsock port {port} forwards to 127.0.0.1:{port}");
    loop {
        match accept(&listener) {
            Ok(connection) => {
                let _ = std::thread::Builder::new()
                    .name(format!("vsock-{port}-conn"))
                    .spawn(move || relay(File::from(connection), port));
            }
            Err(err) => {
                info!("vsock forward {port}: accept failed: {err}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Copies both ways until both directions have ended.
fn relay(vsock: File, port: u16) {
    let tcp = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(tcp) => tcp,
        Err(err) => {
            info!("vsock forward {port}: cannot connect to 127.0.0.1:{port}: {err}");
            return; // dropping `vsock` resets the host side
        }
    };
    let (Ok(mut vsock_reader), Ok(mut tcp_writer)) = (vsock.try_clone(), tcp.try_clone()) else {
        return;
    };
    let inbound = std::thread::spawn(move || {
        let _ = copy(&mut vsock_reader, &mut tcp_writer);
        let _ = tcp_writer.shutdown(Shutdown::Write);
    });
    let mut tcp_reader = tcp;
    let mut vsock_writer = vsock;
    let _ = copy(&mut tcp_reader, &mut vsock_writer);
    shutdown_write(&vsock_writer);
    let _ = inbound.join();
}

fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forward_ports() {
        assert_eq!(parse_ports("80,443,80, 8080,0,x,70000"), [80, 443, 8080]);
        assert!(parse_ports("").is_empty());
    }
}
