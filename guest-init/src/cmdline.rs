//! The kernel command line (`/proc/cmdline`), as far as guest-init cares.
//!
//! | parameter | meaning |
//! |---|---|
//! | `root=UUID=<uuid>` or `root=/dev/<name>` | root filesystem (initramfs role) |
//! | `rootfstype=<fs>` | root filesystem type, default `ext4` |
//! | `ro` / `rw` | mount the root read-only (default) or read-write |
//! | `rootwait=<seconds>` / `jeos.rootwait=<seconds>` | how long to wait for the root device (default 30) |
//! | `jeos.test=1` | test mode: run the checks, print protocol lines, power off |
//! | `jeos.protocol=<device>` | write protocol lines to this device (e.g. `/dev/ttyS1`), not the console |
//! | `jeos.nic=none` | the VMM gives this machine no network interface (do not wait for one) |
//! | `jeos.forward=<port>,...` | relay vsock port N to `127.0.0.1:N` (embedded runner forwarding) |
//! | `jeos.vsock=1` | the VMM attached virtio-vsock: accept shutdown requests on the control port |

use std::time::Duration;

/// How the root device is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// `root=UUID=...`: the filesystem UUID.
    Uuid([u8; 16]),
    /// `root=/dev/...`.
    Path(String),
}

/// Parsed kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// The root device, if given and well-formed.
    pub root: Option<RootSpec>,
    /// Root filesystem type.
    pub rootfstype: String,
    /// Mount the root read-write.
    pub rw: bool,
    /// How long to wait for the root device.
    pub root_wait: Duration,
    /// `jeos.test=1`.
    pub test: bool,
    /// Device for protocol lines.
    pub protocol_device: Option<String>,
    /// `jeos.nic=none`: the VMM provides no NIC (the embedded runner).
    pub no_nic: bool,
    /// `jeos.forward=80,443`: guest ports reachable over vsock.
    pub forward_ports: Vec<u16>,
    /// `jeos.vsock=1`: listen for host shutdown requests over vsock.
    pub vsock_control: bool,
}

/// Splits a command line into words; double quotes group words, as the kernel does.
pub fn split(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

/// Parses a UUID in its canonical 8-4-4-4-12 hex form (case-insensitive).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Formats a UUID canonically (lower case).
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

impl Cmdline {
    /// Parses `/proc/cmdline` text; unknown parameters are ignored (they are the kernel's).
    pub fn parse(text: &str) -> Cmdline {
        let mut cmdline = Cmdline {
            root: None,
            rootfstype: "ext4".to_owned(),
            rw: false,
            root_wait: Duration::from_secs(30),
            test: false,
            protocol_device: None,
            no_nic: false,
            forward_ports: Vec::new(),
            vsock_control: false,
        };
        for word in split(text) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.as_str(), None),
            };
            match (key, value) {
                ("root", Some(v)) => {
                    cmdline.root = match v.strip_prefix("UUID=") {
                        Some(uuid) => parse_uuid(uuid).map(RootSpec::Uuid),
                        None if v.starts_with("/dev/") => Some(RootSpec::Path(v.to_owned())),
                        None => None,
                    }
                }
                ("rootfstype", Some(v)) if !v.is_empty() => cmdline.rootfstype = v.to_owned(),
                ("ro", None) => cmdline.rw = false,
                ("rw", None) => cmdline.rw = true,
                ("rootwait" | "jeos.rootwait", Some(v)) => {
                    if let Ok(secs) = v.parse::<u64>() {
                        cmdline.root_wait = Duration::from_secs(secs);
                    }
                }
                ("jeos.test", Some(v)) => cmdline.test = v == "1",
                ("jeos.nic", Some(v)) => cmdline.no_nic = v == "none",
                ("jeos.vsock", Some(v)) => cmdline.vsock_control = v == "1",
                ("jeos.forward", Some(v)) => cmdline.forward_ports = crate::vsock::parse_ports(v),
                ("jeos.protocol", Some(v)) if v.starts_with("/dev/") => {
                    cmdline.protocol_device = Some(v.to_owned());
                }
                _ => {}
            }
        }
        cmdline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_quotes() {
        assert_eq!(
            split(" a  b=\"c d\" \"e\"f\n"),
            ["a", "b=c d", "ef"].map(String::from)
        );
        assert!(split("   ").is_empty());
    }

    #[test]
    fn parses_jeos_parameters() {
        let c = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz root=UUID=0A1B2C3D-0000-4000-8000-00000000ABCD rw \
             console=ttyS0 jeos.test=1 rootwait=5 jeos.protocol=/dev/ttyS1 rootfstype=ext2 jeos.nic=none jeos.forward=80,443 jeos.vsock=1\n",
        );
        let uuid = parse_uuid("0a1b2c3d-0000-4000-8000-00000000abcd").expect("valid");
        assert_eq!(c.root, Some(RootSpec::Uuid(uuid)));
        assert_eq!(format_uuid(&uuid), "0a1b2c3d-0000-4000-8000-00000000abcd");
        assert!(c.rw && c.test);
        assert_eq!(c.root_wait, Duration::from_secs(5));
        assert_eq!(c.protocol_device.as_deref(), Some("/dev/ttyS1"));
        assert!(c.no_nic);
        assert_eq!(c.forward_ports, [80, 443]);
        assert!(c.vsock_control);
        assert_eq!(c.rootfstype, "ext2");
    }

    #[test]
    fn defaults_and_bad_values() {
        let c = Cmdline::parse("root=UUID=nope ro jeos.test=0 rootwait=x");
        assert_eq!(c.root, None);
        assert!(!c.rw && !c.test);
        assert_eq!(c.root_wait, Duration::from_secs(30));
        assert_eq!(c.rootfstype, "ext4");
        let d = Cmdline::parse("rw ro root=/dev/vda2");
        assert!(!d.rw);
        assert_eq!(d.root, Some(RootSpec::Path("/dev/vda2".into())));
        assert_eq!(parse_uuid("0a1b2c3d00004000800000000000abcd"), None);
    }
}
