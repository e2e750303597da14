//! Deploy-time configuration: what the platform hands the appliance when it is deployed,
//! parsed without touching the guest (the binary's `deploy.rs` finds the bytes).
//!
//! Sources, read at boot in this order (an earlier source wins for each setting):
//! 1. the OVF environment (`ovf-env.xml` on an ISO 9660 CD-ROM, DSP0243 "iso" transport;
//!    on VMware also `guestinfo.ovfEnv` through the backdoor RPC, [`vmware`]),
//! 2. a cloud-init NoCloud seed (ISO 9660 volume labelled `cidata`: `meta-data`, and a
//!    subset of `network-config` version 2; `user-data` is ignored),
//! 3. QEMU `fw_cfg` files `opt/jeos/<key>` (one property each).
//!
//! Every source reduces to property values ([`Properties`]); the well-known keys of
//! [`keys`] configure the host name and a static network ([`Settings::from_properties`]),
//! and all of them feed boot-time templates ([`template`]).

pub mod iso9660;
pub mod nocloud;
pub mod ovfenv;
pub mod template;
pub mod vmware;
pub mod yaml;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Property key -> value.
pub type Properties = BTreeMap<String, String>;

/// Largest file read from any source (ovf-env.xml, meta-data, network-config, fw_cfg).
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// The property keys jeos itself understands (the builder declares them in the OVF).
pub mod keys {
    /// Host name (RFC 1123).
    pub const HOSTNAME: &str = "jeos.hostname";
    /// IPv4 address with prefix, `192.0.2.10/24`; empty means DHCP.
    pub const IPV4_ADDRESS: &str = "jeos.ipv4.address";
    /// IPv4 default gateway.
    pub const IPV4_GATEWAY: &str = "jeos.ipv4.gateway";
    /// IPv6 address with prefix, `2001:db8::10/64`.
    pub const IPV6_ADDRESS: &str = "jeos.ipv6.address";
    /// IPv6 default gateway.
    pub const IPV6_GATEWAY: &str = "jeos.ipv6.gateway";
    /// Name servers, separated by commas or spaces.
    pub const DNS: &str = "jeos.dns";
    /// Every key above, in OVF order.
    pub const ALL: [&str; 6] = [
        HOSTNAME,
        IPV4_ADDRESS,
        IPV4_GATEWAY,
        IPV6_ADDRESS,
        IPV6_GATEWAY,
        DNS,
    ];
}

/// A problem with one value; the value is ignored and the boot goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The property key.
    pub key: String,
    /// The rejected value.
    pub value: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ignoring invalid `{}` value `{}`", self.key, self.value)
    }
}

/// What the deploy-time sources configure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Host name.
    pub hostname: Option<String>,
    /// Static IPv4 address and prefix.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv4 gateway.
    pub gateway4: Option<Ipv4Addr>,
    /// Static IPv6 address and prefix.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// IPv6 gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// Name servers.
    pub dns: Vec<IpAddr>,
}

impl Settings {
    /// Whether any static address is set.
    pub fn is_static(&self) -> bool {
        self.ipv4.is_some() || self.ipv6.is_some()
    }

    /// The settings named by the well-known [`keys`]; empty values are unset.
    pub fn from_properties(properties: &Properties) -> (Self, Vec<Invalid>) {
        let mut invalid = Vec::new();
        let get = |key: &str| -> Option<String> {
            properties
                .get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut bad = |key: &str, value: &str| {
            invalid.push(Invalid {
                key: key.to_owned(),
                value: value.to_owned(),
            });
        };
        let mut s = Settings::default();
        if let Some(h) = get(keys::HOSTNAME) {
            if is_valid_hostname(&h) {
                s.hostname = Some(h);
            } else {
                bad(keys::HOSTNAME, &h);
            }
        }
        if let Some(v) = get(keys::IPV4_ADDRESS) {
            s.ipv4 = parse_cidr4(&v);
            if s.ipv4.is_none() {
                bad(keys::IPV4_ADDRESS, &v);
            }
        }
        if let Some(v) = get(keys::IPV4_GATEWAY) {
            s.gateway4 = v.parse().ok();
            if s.gateway4.is_none() {
                bad(keys::IPV4_GATEWAY, &v);
            }
        }
        if let Some(v) = get(keys::IPV6_ADDRESS) {
            s.ipv6 = parse_cidr6(&v);
            if s.ipv6.is_none() {
                bad(keys::IPV6_ADDRESS, &v);
            }
        }
        if let Some(v) = get(keys::IPV6_GATEWAY) {
            s.gateway6 = v.parse().ok();
            if s.gateway6.is_none() {
                bad(keys::IPV6_GATEWAY, &v);
            }
        }
        if let Some(v) = get(keys::DNS) {
            for server in v.split([',', ' ']).filter(|x| !x.is_empty()) {
                match server.parse() {
                    Ok(ip) => s.dns.push(ip),
                    Err(_) => bad(keys::DNS, server),
                }
            }
        }
        (s, invalid)
    }

    /// Fills what `self` leaves unset from `other` (an earlier source wins).
    pub fn merge(&mut self, other: Settings) {
        let other_static = other.is_static();
        if self.hostname.is_none() {
            self.hostname = other.hostname;
        }
        if !self.is_static() && other_static {
            self.ipv4 = other.ipv4;
            self.gateway4 = other.gateway4;
            self.ipv6 = other.ipv6;
            self.gateway6 = other.gateway6;
        }
        if self.dns.is_empty() {
            self.dns = other.dns;
        }
    }
}

/// RFC 1123 host name: dot-separated labels of 1-63 `[A-Za-z0-9-]`, not starting or
/// ending with `-`, at most 253 bytes.
pub fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `a.b.c.d/n`.
pub fn parse_cidr4(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = text.trim().split_once('/')?;
    let prefix: u8 = p.parse().ok().filter(|p| *p <= 32)?;
    Some((a.parse().ok()?, prefix))
}

/// `x:y::z/n`.
pub fn parse_cidr6(text: &str) -> Option<(Ipv6Addr, u8)> {
    let (a, p) = text.trim().split_once('/')?;
    let prefix: u8 = p.parse().ok().filter(|p| *p <= 128)?;
    Some((a.parse().ok()?, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn well_known_keys_become_settings() {
        let (s, bad) = Settings::from_properties(&props(&[
            (keys::HOSTNAME, "web1.example.org"),
            (keys::IPV4_ADDRESS, "192.0.2.10/24"),
            (keys::IPV4_GATEWAY, "192.0.2.1"),
            (keys::IPV6_ADDRESS, "2001:db8::10/64"),
            (keys::IPV6_GATEWAY, "2001:db8::1"),
            (keys::DNS, "192.0.2.53, 2001:db8::53"),
        ]));
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(s.hostname.as_deref(), Some("web1.example.org"));
        assert_eq!(s.ipv4, Some(("192.0.2.10".parse().unwrap(), 24)));
        assert_eq!(s.gateway6, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(s.dns.len(), 2);
    }

    #[test]
    fn invalid_and_empty_values_are_ignored() {
        let (s, bad) = Settings::from_properties(&props(&[
            (keys::HOSTNAME, "-bad-"),
            (keys::IPV4_ADDRESS, "192.0.2.10/33"),
            (keys::IPV6_ADDRESS, ""),
            (keys::DNS, "x"),
        ]));
        assert_eq!(s, Settings::default());
        assert_eq!(bad.len(), 3);
        assert!(bad[0].to_string().contains("jeos.hostname"));
    }

    #[test]
    fn earlier_sources_win() {
        let mut a = Settings {
            hostname: Some("a".into()),
            ..Settings::default()
        };
        a.merge(Settings {
            hostname: Some("b".into()),
            ipv4: Some((Ipv4Addr::new(10, 0, 0, 2), 8)),
            ..Settings::default()
        });
        assert_eq!(a.hostname.as_deref(), Some("a"));
        assert!(a.ipv4.is_some());
    }
}
