//! Static addressing from the recipe or from deploy-time configuration: IPv4 through
//! `net.rs`'s ioctls, IPv6 with the AF_INET6 variants (`SIOCSIFADDR` with `in6_ifreq`,
//! `SIOCADDRT` with `in6_rtmsg`), and `/run/resolv.conf` for both address families.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use guest_init::config::StaticNetworkConfig;
use guest_init::deploy::Settings;

use crate::log::info;
use crate::net;

/// `struct in6_ifreq` from `<linux/ipv6.h>`.
#[repr(C)]
struct In6Ifreq {
    addr: libc::in6_addr,
    prefixlen: u32,
    ifindex: libc::c_int,
}

/// `struct in6_rtmsg` from `<linux/ipv6_route.h>`.
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

fn socket6() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before being wrapped.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(fd: &OwnedFd, request: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: callers pass a request with a pointer to the struct that request expects
    // (in6_ifreq or in6_rtmsg), valid for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn in6(ip: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: ip.octets(),
    }
}

fn ifindex(name: &str) -> io::Result<libc::c_int> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    libc::c_int::try_from(index)
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(io::Error::last_os_error)
}

/// Assigns `address/prefix` to an interface.
pub fn set_address6(name: &str, address: Ipv6Addr, prefix: u8) -> io::Result<()> {
    let fd = socket6()?;
    let mut req = In6Ifreq {
        addr: in6(address),
        prefixlen: u32::from(prefix),
        ifindex: ifindex(name)?,
    };
    ioctl(&fd, libc::SIOCSIFADDR, (&raw mut req).cast())
}

/// Adds the IPv6 default route via `gateway` on interface `name`.
pub fn add_default_route6(name: &str, gateway: Ipv6Addr) -> io::Result<()> {
    let fd = socket6()?;
    let mut route = In6Rtmsg {
        dst: in6(Ipv6Addr::UNSPECIFIED),
        src: in6(Ipv6Addr::UNSPECIFIED),
        gateway: in6(gateway),
        kind: 0,
        dst_len: 0,
        src_len: 0,
        metric: 1024,
        info: 0,
        flags: u32::from(libc::RTF_UP | libc::RTF_GATEWAY),
        ifindex: ifindex(name)?,
    };
    ioctl(&fd, libc::SIOCADDRT, (&raw mut route).cast())
}

/// The recipe's `[network.static]` as settings.
pub fn settings_of(config: &StaticNetworkConfig) -> Settings {
    Settings {
        hostname: None,
        ipv4: Some((config.address, config.prefix)),
        gateway4: config.gateway,
        ipv6: config.ipv6.as_ref().map(|v6| (v6.address, v6.prefix)),
        gateway6: config.ipv6.as_ref().and_then(|v6| v6.gateway),
        dns: config.dns.clone(),
    }
}

/// `/run/resolv.conf` for servers of both families.
pub fn resolv_conf(servers: &[IpAddr]) -> String {
    let mut text = String::from("# written by jeos guest-init\n");
    for s in servers {
        writeln!(text, "nameserver {s}").expect("writing to a String cannot fail");
    }
    text
}

/// Sends one empty datagram to the gateway's discard port. Resolving the gateway makes the
/// kernel broadcast an ARP request carrying our new address, so the router (and QEMU's
/// user network, which learns guests only from their traffic) can reach a statically
/// configured appliance before it has sent anything else.
fn announce(address: std::net::Ipv4Addr, gateway: std::net::Ipv4Addr) {
    if let Ok(socket) = std::net::UdpSocket::bind((address, 0)) {
        let _ = socket.send_to(&[], (gateway, 9));
    }
}

/// Applies a static configuration to `interface`; failures are logged, not fatal.
pub fn apply_static(interface: &str, settings: &Settings) {
    if let Some((address, prefix)) = settings.ipv4 {
        match net::set_address(interface, address, prefix) {
            Ok(()) => info!("{interface}: {address}/{prefix}"),
            Err(err) => info!("cannot set {address}/{prefix} on {interface}: {err}"),
        }
        if let Some(gw) = settings.gateway4 {
            if let Err(err) = net::add_default_route(gw)
                && err.raw_os_error() != Some(libc::EEXIST)
            {
                info!("cannot add the default route via {gw}: {err}");
            }
            announce(address, gw);
        }
    }
    if let Some((address, prefix)) = settings.ipv6 {
        match set_address6(interface, address, prefix) {
            Ok(()) => info!("{interface}: {address}/{prefix}"),
            Err(err) => info!("cannot set {address}/{prefix} on {interface}: {err}"),
        }
        if let Some(gw) = settings.gateway6
            && let Err(err) = add_default_route6(interface, gw)
            && err.raw_os_error() != Some(libc::EEXIST)
        {
            info!("cannot add the IPv6 default route via {gw}: {err}");
        }
    }
    if !settings.dns.is_empty()
        && let Err(err) = std::fs::write("/run/resolv.conf", resolv_conf(&settings.dns))
    {
        info!("cannot write /run/resolv.conf: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_struct_layouts() {
        assert_eq!(std::mem::size_of::<In6Ifreq>(), 24);
        assert_eq!(std::mem::size_of::<In6Rtmsg>(), 80);
    }

    #[test]
    fn resolv_conf_has_both_families() {
        let text = resolv_conf(&[
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ]);
        assert!(text.contains("nameserver 192.0.2.53\nnameserver 2001:db8::53\n"));
    }

    #[test]
    fn loopback_has_an_index() {
        assert!(ifindex("lo").is_ok_and(|i| i > 0));
        assert!(ifindex("no-such-if0").is_err());
    }
}
