//! Network bring-up: loopback, the first non-loopback interface, DHCPv4 or a static
//! address. Addresses and routes are set with the classic ioctls (SIOCSIFADDR,
//! SIOCSIFNETMASK, SIOCADDRT), which the kernel still supports and need no netlink code.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use guest_init::config::NetworkConfig;

use crate::dhcp::{self, MessageType, Reply};
use crate::log::info;

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before being wrapped.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: ifreq is plain old data (arrays, integers, a union of those); all zeroes is
    // a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes and the kernel interprets this
    // sockaddr by its family field, exactly as C code casts between them.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(fd: &OwnedFd, request: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: callers pass a request together with a pointer to the struct type that
    // request expects (ifreq or rtentry), valid for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets IFF_UP on an interface.
pub fn interface_up(name: &str) -> io::Result<()> {
    let fd = control_socket()?;
    let mut req = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFFLAGS, (&raw mut req).cast())?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(&fd, libc::SIOCSIFFLAGS, (&raw mut req).cast())
}

/// Assigns `address/prefix` to an interface.
pub fn set_address(name: &str, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let fd = control_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(address);
    ioctl(&fd, libc::SIOCSIFADDR, (&raw mut req).cast())?;
    req.ifr_ifru.ifru_netmask = sockaddr(dhcp::netmask(prefix));
    ioctl(&fd, libc::SIOCSIFNETMASK, (&raw mut req).cast())
}

/// `struct rtentry` from `<net/route.h>` (the libc crate has it only for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// Adds the default route via `gateway`.
pub fn add_default_route(gateway: Ipv4Addr) -> io::Result<()> {
    let fd = control_socket()?;
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr(gateway),
        rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(&fd, libc::SIOCADDRT, (&raw mut route).cast())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The first Ethernet-type interface other than loopback, by name, waiting up to
/// `timeout` for the driver to register one.
pub fn first_interface(timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n != "lo")
                    .filter(|n| {
                        // ARPHRD_ETHER = 1 (skips tunnels, sit0, etc.).
                        std::fs::read_to_string(format!("/sys/class/net/{n}/type"))
                            .is_ok_and(|t| t.trim() == "1")
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if let Some(first) = names.into_iter().next() {
            return Some(first);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why DHCP failed.
#[derive(Debug)]
pub enum NetError {
    /// A socket call failed.
    Io {
        /// The step.
        step: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// No usable answer in time.
    Timeout {
        /// The interface.
        interface: String,
    },
    /// The interface has no readable MAC address.
    NoMac {
        /// The interface.
        interface: String,
    },
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Io { step, source } => write!(f, "cannot {step}: {source}"),
            NetError::Timeout { interface } => write!(f, "no DHCP lease on {interface}"),
            NetError::NoMac { interface } => write!(f, "no MAC address for {interface}"),
        }
    }
}

fn io_step(step: &'static str) -> impl FnOnce(io::Error) -> NetError {
    move |source| NetError::Io { step, source }
}

fn dhcp_socket(interface: &str) -> Result<UdpSocket, NetError> {
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))
        .map_err(io_step("bind UDP port 68"))?;
    socket
        .set_broadcast(true)
        .map_err(io_step("enable broadcast"))?;
    let name = interface.as_bytes();
    // SAFETY: the pointer/length pair describes `name`, alive for the call; the kernel
    // copies the interface name.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(NetError::Io {
            step: "bind the DHCP socket to the interface",
            source: io::Error::last_os_error(),
        });
    }
    Ok(socket)
}

fn transaction_id(mac: [u8; 6]) -> u32 {
    let nanos = crate::log::since_boot().subsec_nanos();
    u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ nanos
}

/// Sends `packet` and waits for a matching reply of one of `wanted`, retransmitting with
/// backoff (1 s, 2 s, 4 s...) until `deadline`.
fn exchange(
    socket: &UdpSocket,
    packet: &[u8],
    xid: u32,
    mac: [u8; 6],
    wanted: &[MessageType],
    deadline: Instant,
) -> Option<Reply> {
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut wait = Duration::from_secs(1);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Err(err) = socket.send_to(packet, server) {
            info!("dhcp: send failed: {err}");
        }
        let resend_at = (Instant::now() + wait).min(deadline);
        loop {
            let left = resend_at.saturating_duration_since(Instant::now());
            if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                break;
            }
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                break;
            };
            if let Ok(reply) = dhcp::decode_reply(&buf[..n], xid, mac)
                && wanted.contains(&reply.message_type)
            {
                return Some(reply);
            }
        }
        wait = (wait * 2).min(Duration::from_secs(8));
    }
    None
}

/// A lease, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds.
    pub lease_secs: Option<u32>,
}

/// Runs DISCOVER/OFFER/REQUEST/ACK on `interface` (RFC 2131 §3.1).
pub fn dhcp_lease(
    interface: &str,
    hostname: Option<&str>,
    timeout: Duration,
) -> Result<Lease, NetError> {
    let mac_text =
        std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).unwrap_or_default();
    let mac = parse_mac(&mac_text).ok_or_else(|| NetError::NoMac {
        interface: interface.to_owned(),
    })?;
    let socket = dhcp_socket(interface)?;
    let deadline = Instant::now() + timeout;
    let timed_out = || NetError::Timeout {
        interface: interface.to_owned(),
    };
    while Instant::now() < deadline {
        let xid = transaction_id(mac);
        let discover = dhcp::encode_request(MessageType::Discover, xid, mac, None, None, hostname);
        let offer = exchange(
            &socket,
            &discover,
            xid,
            mac,
            &[MessageType::Offer],
            deadline,
        )
        .ok_or_else(timed_out)?;
        let request = dhcp::encode_request(
            MessageType::Request,
            xid,
            mac,
            Some(offer.address),
            offer.server_id,
            hostname,
        );
        let wanted = [MessageType::Ack, MessageType::Nak];
        let Some(ack) = exchange(&socket, &request, xid, mac, &wanted, deadline) else {
            break;
        };
        if ack.message_type == MessageType::Nak {
            info!("dhcp: server refused {}, starting over", offer.address);
            continue;
        }
        let mask = ack.subnet_mask.or(offer.subnet_mask);
        return Ok(Lease {
            address: ack.address,
            prefix: mask.and_then(dhcp::prefix_len).unwrap_or(24),
            gateway: ack.router.or(offer.router),
            dns: if ack.dns.is_empty() {
                offer.dns
            } else {
                ack.dns
            },
            lease_secs: ack.lease_secs,
        });
    }
    Err(timed_out())
}

fn apply(
    interface: &str,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dns: &[Ipv4Addr],
) {
    if let Err(err) = set_address(interface, address, prefix) {
        info!("cannot set {address}/{prefix} on {interface}: {err}");
        return;
    }
    if let Some(gateway) = gateway {
        match add_default_route(gateway) {
            // Renewing with the same gateway: the route is already there.
            Err(err) if err.raw_os_error() != Some(libc::EEXIST) => {
                info!("cannot add the default route via {gateway}: {err}");
            }
            _ => {}
        }
    }
    if !dns.is_empty()
        && let Err(err) = std::fs::write("/run/resolv.conf", dhcp::resolv_conf(dns))
    {
        info!("cannot write /run/resolv.conf: {err}");
    }
    let via = gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    info!("{interface}: {address}/{prefix}{via}");
}

fn apply_lease(interface: &str, lease: &Lease) {
    apply(
        interface,
        lease.address,
        lease.prefix,
        lease.gateway,
        &lease.dns,
    );
}

/// When to renew: at T1 = half the lease (RFC 2131 §4.4.5), at least a minute from now.
pub fn renewal_delay(lease_secs: Option<u32>) -> Option<Duration> {
    let secs = lease_secs.filter(|&s| s != u32::MAX)?; // 0xffffffff = infinite
    Some(Duration::from_secs(u64::from(secs / 2).max(60)))
}

/// Renews the lease in the background by repeating the exchange at T1; a changed address
/// or gateway is applied. (A full DISCOVER rather than a unicast REQUEST: simpler, and
/// every server answers it.)
fn keep_lease(interface: String, hostname: Option<String>, mut lease: Lease) {
    let spawned = std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || {
            while let Some(delay) = renewal_delay(lease.lease_secs) {
                std::thread::sleep(delay);
                match dhcp_lease(&interface, hostname.as_deref(), Duration::from_secs(60)) {
                    Ok(renewed) if renewed == lease => info!("dhcp: renewed {}", lease.address),
                    Ok(renewed) => {
                        info!("dhcp: lease changed to {}", renewed.address);
                        apply_lease(&interface, &renewed);
                        lease = renewed;
                    }
                    Err(err) => info!("dhcp: renewal failed: {err}"),
                }
            }
        });
    if let Err(err) = spawned {
        info!("dhcp: cannot start the renewal thread: {err}");
    }
}

/// Brings up loopback and configures the first interface per `config`, or with the
/// deploy-time static settings when the platform supplied some (`deployed`).
///
/// # Errors
/// Why the network the appliance asked for is not there: no interface (with DHCP or a
/// static address), or no DHCP lease.
pub fn configure(
    config: &NetworkConfig,
    hostname: Option<&str>,
    no_nic: bool,
    deployed: Option<&guest_init::deploy::Settings>,
) -> Result<(), String> {
    if let Err(err) = set_address("lo", Ipv4Addr::LOCALHOST, 8).and_then(|()| interface_up("lo")) {
        info!("cannot bring up loopback: {err}");
    }
    if *config == NetworkConfig::None && deployed.is_none() {
        return Ok(());
    }
    if no_nic {
        info!(
            "the virtual machine has no network interface (jeos.nic=none): network not configured"
        );
        return Ok(());
    }
    let Some(interface) = first_interface(Duration::from_secs(5)) else {
        return Err("no network interface found (is the NIC's driver in the kernel?)".into());
    };
    interface_up(&interface).map_err(|err| format!("cannot bring up {interface}: {err}"))?;
    if let Some(settings) = deployed {
        crate::net6::apply_static(&interface, settings);
        return Ok(());
    }
    match config {
        NetworkConfig::None => Ok(()),
        NetworkConfig::Static(s) => {
            crate::net6::apply_static(&interface, &crate::net6::settings_of(s));
            Ok(())
        }
        NetworkConfig::Dhcp => {
            let started = Instant::now();
            let lease = dhcp_lease(&interface, hostname, Duration::from_secs(30))
                .map_err(|err| format!("no address on {interface}: dhcp: {err}"))?;
            info!(
                "dhcp: lease on {interface} in {} ms ({} s)",
                started.elapsed().as_millis(),
                lease.lease_secs.unwrap_or(0)
            );
            apply_lease(&interface, &lease);
            keep_lease(interface, hostname.map(str::to_owned), lease);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_half_the_lease() {
        assert_eq!(
            renewal_delay(Some(86_400)),
            Some(Duration::from_secs(43_200))
        );
        assert_eq!(renewal_delay(Some(10)), Some(Duration::from_secs(60)));
        assert_eq!(renewal_delay(Some(u32::MAX)), None);
        assert_eq!(renewal_delay(None), None);
    }

    #[test]
    fn parses_mac_addresses() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56\n"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("zz:54:00:12:34:56"), None);
    }

    #[test]
    fn rejects_bad_interface_names() {
        assert!(ifreq("").is_err());
        assert!(ifreq("a-very-long-interface-name").is_err());
        assert!(ifreq("eth0").is_ok());
    }

    #[test]
    fn rtentry_matches_the_kernel_layout() {
        // x86-64 <net/route.h>: 120 bytes, rt_flags at 56, rt_dev at 88.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
    }

    #[test]
    fn loopback_flags_query_works_unprivileged() {
        let fd = control_socket().expect("socket");
        let mut req = ifreq("lo").expect("name");
        ioctl(&fd, libc::SIOCGIFFLAGS, (&raw mut req).cast()).expect("SIOCGIFFLAGS on lo");
        // SAFETY: SIOCGIFFLAGS filled `ifru_flags`.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        assert_ne!(flags & libc::IFF_LOOPBACK as libc::c_short, 0);
    }
}
