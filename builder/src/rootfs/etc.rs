//! System files in `/etc`: host name, hosts, resolver, os-release, machine-id, fstab,
//! nsswitch and time zone.
//!
//! Decisions:
//! - `/etc/resolv.conf` is a symlink to `/run/resolv.conf` when guest-init manages DNS (DHCP,
//!   or a static network whose servers the init writes there), because the root is mounted
//!   read-only; with [`ResolvConfig::Static`] it is a plain file.
//! - `/etc/machine-id` is empty: programs treat that as "not yet initialised" and nothing
//!   in the image is tied to one machine (systemd's documented convention for images).
//! - os-release keeps Debian's identity (`ID=debian`, `VERSION_ID`, as inspection tools such
//!   as libguestfs/virt-v2v need) and names the appliance in `VARIANT`/`VARIANT_ID` and
//!   `IMAGE_ID`/`IMAGE_VERSION`; `/etc/os-release` is a relative symlink to
//!   `../usr/lib/os-release`, as in Debian; `/etc/debian_version` is written when no
//!   package supplies it.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::staging::FsOp;
use super::tree::{Ownership, Tree};

/// Errors from planning the system files.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EtcError {
    /// A host name that is not a valid RFC 1123 label sequence.
    #[error("invalid hostname `{hostname}`")]
    InvalidHostname {
        /// The value.
        hostname: String,
    },
    /// The configured time zone has no file under `/usr/share/zoneinfo`.
    #[error(
        "time zone `{timezone}` is not in the image (`/usr/share/zoneinfo/{timezone}` is missing)"
    )]
    TimezoneMissing {
        /// The value.
        timezone: String,
    },
    /// A time zone name with `..` or other non-plain components.
    #[error("invalid time zone `{timezone}`")]
    InvalidTimezone {
        /// The value.
        timezone: String,
    },
    /// A value that would break a `KEY="value"` line.
    #[error("os-release field `{field}` contains a newline")]
    InvalidOsReleaseField {
        /// The field.
        field: &'static str,
    },
}

/// How `/etc/resolv.conf` is provided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResolvConfig {
    /// Symlink to `/run/resolv.conf`, written by guest-init at boot (DHCP or static
    /// network with DNS servers in the init config).
    #[default]
    Runtime,
    /// A fixed file.
    Static {
        /// `nameserver` lines.
        nameservers: Vec<IpAddr>,
        /// `search` domains.
        search: Vec<String>,
    },
}

/// What to do when the time zone's data is not in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingTimezone {
    /// Fail the build (the recipe asked for a zone; tzdata should be installed).
    #[default]
    Error,
    /// Write `/etc/timezone` only and leave `/etc/localtime` out (programs use UTC).
    Skip,
}

/// Identity of the appliance for os-release.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OsReleaseConfig {
    /// Appliance name (`[a-z0-9-]+`), e.g. `nginx`.
    pub name: String,
    /// Appliance version, e.g. `1.0.0`.
    pub version: String,
    /// Human description, e.g. `Static web server`.
    pub description: Option<String>,
    /// Vendor, e.g. `Example Org`.
    pub vendor: Option<String>,
    /// Debian suite the packages come from, e.g. `trixie`.
    pub suite: String,
    /// Build identifier (e.g. the lock file digest or a date); omitted when `None`.
    pub build_id: Option<String>,
    /// Project home page.
    pub home_url: Option<String>,
}

/// System file settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcConfig {
    /// Host name (`/etc/hostname`, `/etc/hosts`).
    pub hostname: String,
    /// Resolver configuration.
    pub resolv: ResolvConfig,
    /// os-release identity.
    pub os_release: OsReleaseConfig,
    /// Time zone, e.g. `Europe/Paris`; `None` leaves the image on UTC.
    pub timezone: Option<String>,
    /// Behaviour when the zone file is missing.
    pub missing_timezone: MissingTimezone,
}

/// Whether `hostname` is valid: dot-separated labels of 1-63 `[a-zA-Z0-9-]` characters not
/// starting or ending with `-`, 253 bytes at most (RFC 1123 §2.1).
pub fn is_valid_hostname(hostname: &str) -> bool {
    !hostname.is_empty()
        && hostname.len() <= 253
        && hostname.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn quote(field: &'static str, value: &str) -> Result<String, EtcError> {
    if value.contains('\n') {
        return Err(EtcError::InvalidOsReleaseField { field });
    }
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('$', "\\$")
        .replace('`', "\\`");
    Ok(format!("\"{escaped}\""))
}

/// Debian's release number for a suite (`VERSION_ID` and `/etc/debian_version`); `None`
/// for `sid` and unknown suites, which Debian's own os-release leaves without one.
pub fn debian_release(suite: &str) -> Option<&'static str> {
    match suite {
        "buster" => Some("10"),
        "bullseye" => Some("11"),
        "bookworm" => Some("12"),
        "trixie" => Some("13"),
        "forky" => Some("14"),
        _ => None,
    }
}

/// Renders `/usr/lib/os-release` (os-release(5)): Debian's identity (`ID=debian`,
/// `VERSION_ID`, `VERSION_CODENAME`), so inspection tools (libguestfs, virt-v2v, cloud
/// importers) recognise the distribution, and the appliance in `VARIANT`/`VARIANT_ID`
/// and `IMAGE_ID`/`IMAGE_VERSION`, the fields os-release(5) defines for images.
pub fn render_os_release(config: &OsReleaseConfig) -> Result<String, EtcError> {
    let OsReleaseConfig {
        name,
        version,
        description,
        vendor,
        suite,
        build_id,
        home_url,
    } = config;
    let release = debian_release(suite);
    let debian = match release {
        Some(n) => format!("Debian GNU/Linux {n} ({suite})"),
        None => format!("Debian GNU/Linux {suite}"),
    };
    let title = description.as_deref().unwrap_or(name);
    let mut out = String::new();
    let mut line = |key: &'static str, value: &str| -> Result<(), EtcError> {
        writeln!(out, "{key}={}", quote(key, value)?).expect("writing to a String cannot fail");
        Ok(())
    };
    line(
        "PRETTY_NAME",
        &format!("{title} {version} (jeos appliance, {debian})"),
    )?;
    line("NAME", "Debian GNU/Linux")?;
    if let Some(n) = release {
        line("VERSION_ID", n)?;
        line("VERSION", &format!("{n} ({suite})"))?;
    }
    line("VERSION_CODENAME", suite)?;
    line("ID", "debian")?;
    line("VARIANT", &format!("jeos {name} appliance"))?;
    line("VARIANT_ID", name)?;
    line("IMAGE_ID", name)?;
    line("IMAGE_VERSION", version)?;
    if let Some(build_id) = build_id {
        line("BUILD_ID", build_id)?;
    }
    if let Some(vendor) = vendor {
        line("VENDOR_NAME", vendor)?;
    }
    line(
        "HOME_URL",
        home_url.as_deref().unwrap_or("https://www.debian.org/"),
    )?;
    line("SUPPORT_URL", "https://www.debian.org/support")?;
    line("BUG_REPORT_URL", "https://bugs.debian.org/")?;
    Ok(out)
}

/// `/etc/debian_version` when the image has none (base-files ships it; jeos appliances
/// rarely install base-files): the suite's release number, or `<suite>/sid`.
pub fn render_debian_version(suite: &str) -> String {
    match debian_release(suite) {
        Some(n) => format!("{n}\n"),
        None => format!("{suite}/sid\n"),
    }
}

/// Renders `/etc/hosts`.
pub fn render_hosts(hostname: &str) -> String {
    let short = hostname.split('.').next().unwrap_or(hostname);
    let names = if short == hostname {
        hostname.to_owned()
    } else {
        format!("{hostname} {short}")
    };
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n\n\
         # The following lines are desirable for IPv6 capable hosts\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

/// `/etc/nsswitch.conf`: only `files` (and `dns` for hosts); no NSS modules beyond glibc's.
pub const NSSWITCH: &str = "\
# jeos: local files only (plus DNS for host names)
passwd:         files
group:          files
shadow:         files
gshadow:        files

hosts:          files dns
networks:       files

protocols:      files
services:       files
ethers:         files
rpc:            files

netgroup:       files
";

/// `/etc/fstab`: the root is mounted by the init from the kernel command line; the file
/// documents that and gives tools that read it (e.g. `findmnt --fstab`) a valid file.
pub const FSTAB: &str = "\
# /etc/fstab: static file system information.
# jeos's init mounts the root file system (ext4, by UUID from the kernel command line,
# read-write as its `rw` says) and tmpfs on /run and /tmp; nothing is mounted from here.
";

/// Plans the system files.
pub fn plan_etc(config: &EtcConfig, tree: &Tree) -> Result<Vec<FsOp>, EtcError> {
    if !is_valid_hostname(&config.hostname) {
        return Err(EtcError::InvalidHostname {
            hostname: config.hostname.clone(),
        });
    }
    let file = |path: &str, contents: String| FsOp::WriteFile {
        path: PathBuf::from(path),
        contents: contents.into_bytes(),
        own: Ownership::root(0o644),
    };
    let mut ops = vec![
        FsOp::CreateDir {
            path: "etc/jeos".into(),
            own: Ownership::root(0o755),
            update: false,
        },
        file("etc/hostname", format!("{}\n", config.hostname)),
        file("etc/hosts", render_hosts(&config.hostname)),
        file("etc/machine-id", String::new()),
        file("etc/fstab", FSTAB.to_owned()),
        file("etc/nsswitch.conf", NSSWITCH.to_owned()),
        file("usr/lib/os-release", render_os_release(&config.os_release)?),
        FsOp::Symlink {
            path: "etc/os-release".into(),
            target: "../usr/lib/os-release".into(),
        },
        // virt-v2v adds its modprobe configuration here; libguestfs requires the directory.
        FsOp::CreateDir {
            path: "etc/modprobe.d".into(),
            own: Ownership::root(0o755),
            update: true,
        },
    ];
    if !tree
        .lookup(Path::new("etc/debian_version"))
        .is_ok_and(|(_, e)| e.is_file())
    {
        ops.push(file(
            "etc/debian_version",
            render_debian_version(&config.os_release.suite),
        ));
    }
    match &config.resolv {
        ResolvConfig::Runtime => {
            ops.push(FsOp::Symlink {
                path: "etc/resolv.conf".into(),
                target: "/run/resolv.conf".into(),
            });
        }
        ResolvConfig::Static {
            nameservers,
            search,
        } => {
            let mut text = String::from("# jeos: static resolver configuration\n");
            if !search.is_empty() {
                writeln!(text, "search {}", search.join(" "))
                    .expect("writing to a String cannot fail");
            }
            for server in nameservers {
                writeln!(text, "nameserver {server}").expect("writing to a String cannot fail");
            }
            ops.push(file("etc/resolv.conf", text));
        }
    }
    let timezone = config.timezone.as_deref().unwrap_or("Etc/UTC");
    let plain = timezone
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..");
    if !plain || timezone.starts_with('/') {
        return Err(EtcError::InvalidTimezone {
            timezone: timezone.to_owned(),
        });
    }
    ops.push(file("etc/timezone", format!("{timezone}\n")));
    let zone = Path::new("usr/share/zoneinfo").join(timezone);
    let present = tree.lookup(&zone).is_ok_and(|(_, e)| e.is_file());
    if present {
        ops.push(FsOp::Symlink {
            path: "etc/localtime".into(),
            target: Path::new("/").join(&zone),
        });
    } else if config.timezone.is_some() && config.missing_timezone == MissingTimezone::Error {
        return Err(EtcError::TimezoneMissing {
            timezone: timezone.to_owned(),
        });
    } else {
        // Without zone data glibc falls back to UTC; remove a dangling link if one exists.
        ops.push(FsOp::Remove {
            path: "etc/localtime".into(),
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_says_how_the_command_line_mounts_the_root() {
        let cmdline = crate::plan::disk::kernel_cmdline("u", &[]);
        assert!(cmdline.split(' ').any(|p| p == "rw"), "{cmdline}");
        assert!(FSTAB.contains("read-write") && !FSTAB.contains("read-only"));
    }

    fn config() -> EtcConfig {
        EtcConfig {
            hostname: "web.example.org".into(),
            os_release: OsReleaseConfig {
                name: "nginx".into(),
                version: "1.0.0".into(),
                description: Some("Static web server".into()),
                vendor: Some("Example \"Org\"".into()),
                suite: "trixie".into(),
                build_id: Some("20260101".into()),
                home_url: None,
            },
            ..EtcConfig::default()
        }
    }

    fn zone_tree() -> Tree {
        let mut t = Tree::new(0);
        for d in [
            "usr",
            "usr/share",
            "usr/share/zoneinfo",
            "usr/share/zoneinfo/Europe",
            "usr/share/zoneinfo/Etc",
        ] {
            t.add_dir(Path::new(d), Ownership::root(0o755), 0).unwrap();
        }
        t.add_file(
            Path::new("usr/share/zoneinfo/Europe/Paris"),
            10,
            Ownership::root(0o644),
            0,
        )
        .unwrap();
        t.add_file(
            Path::new("usr/share/zoneinfo/Etc/UTC"),
            10,
            Ownership::root(0o644),
            0,
        )
        .unwrap();
        t
    }

    fn written(ops: &[FsOp], path: &str) -> Option<String> {
        ops.iter().find_map(|o| match o {
            FsOp::WriteFile {
                path: p, contents, ..
            } if p == Path::new(path) => Some(String::from_utf8(contents.clone()).unwrap()),
            _ => None,
        })
    }

    #[test]
    fn os_release_fields() {
        let text = render_os_release(&config().os_release).unwrap();
        assert_eq!(
            text,
            concat!(
                "PRETTY_NAME=\"Static web server 1.0.0 (jeos appliance, Debian GNU/Linux 13 (trixie))\"\n",
                "NAME=\"Debian GNU/Linux\"\n",
                "VERSION_ID=\"13\"\n",
                "VERSION=\"13 (trixie)\"\n",
                "VERSION_CODENAME=\"trixie\"\n",
                "ID=\"debian\"\n",
                "VARIANT=\"jeos nginx appliance\"\n",
                "VARIANT_ID=\"nginx\"\n",
                "IMAGE_ID=\"nginx\"\n",
                "IMAGE_VERSION=\"1.0.0\"\n",
                "BUILD_ID=\"20260101\"\n",
                "VENDOR_NAME=\"Example \\\"Org\\\"\"\n",
                "HOME_URL=\"https://www.debian.org/\"\n",
                "SUPPORT_URL=\"https://www.debian.org/support\"\n",
                "BUG_REPORT_URL=\"https://bugs.debian.org/\"\n",
            )
        );
        let mut sid = config().os_release;
        sid.suite = "sid".into();
        let text = render_os_release(&sid).unwrap();
        assert!(!text.contains("VERSION_ID") && text.contains("ID=\"debian\""));
        assert_eq!(render_debian_version("sid"), "sid/sid\n");
        assert_eq!(render_debian_version("bookworm"), "12\n");
        let mut bad = config().os_release;
        bad.version = "1\n2".into();
        assert_eq!(
            render_os_release(&bad),
            Err(EtcError::InvalidOsReleaseField {
                field: "PRETTY_NAME"
            })
        );
    }

    #[test]
    fn hosts_hostname_and_runtime_resolver() {
        let ops = plan_etc(&config(), &zone_tree()).unwrap();
        assert_eq!(written(&ops, "etc/hostname").unwrap(), "web.example.org\n");
        assert!(
            written(&ops, "etc/hosts")
                .unwrap()
                .contains("127.0.1.1\tweb.example.org web\n")
        );
        assert_eq!(written(&ops, "etc/machine-id").unwrap(), "");
        assert!(ops.contains(&FsOp::Symlink {
            path: "etc/resolv.conf".into(),
            target: "/run/resolv.conf".into()
        }));
        assert!(ops.contains(&FsOp::Symlink {
            path: "etc/localtime".into(),
            target: "/usr/share/zoneinfo/Etc/UTC".into()
        }));
    }

    #[test]
    fn static_resolver_and_timezone() {
        let mut c = config();
        c.resolv = ResolvConfig::Static {
            nameservers: vec!["10.0.2.3".parse().unwrap()],
            search: vec!["lan".into()],
        };
        c.timezone = Some("Europe/Paris".into());
        let ops = plan_etc(&c, &zone_tree()).unwrap();
        assert_eq!(
            written(&ops, "etc/resolv.conf").unwrap(),
            "# jeos: static resolver configuration\nsearch lan\nnameserver 10.0.2.3\n"
        );
        assert_eq!(written(&ops, "etc/timezone").unwrap(), "Europe/Paris\n");
        assert!(ops.contains(&FsOp::Symlink {
            path: "etc/localtime".into(),
            target: "/usr/share/zoneinfo/Europe/Paris".into()
        }));
    }

    #[test]
    fn timezone_errors_and_skip() {
        let mut c = config();
        c.timezone = Some("Mars/Olympus".into());
        assert!(matches!(
            plan_etc(&c, &zone_tree()),
            Err(EtcError::TimezoneMissing { .. })
        ));
        c.missing_timezone = MissingTimezone::Skip;
        let ops = plan_etc(&c, &zone_tree()).unwrap();
        assert!(!ops.iter().any(
            |o| matches!(o, FsOp::Symlink { path, .. } if path == Path::new("etc/localtime"))
        ));
        c.timezone = Some("../etc/passwd".into());
        assert!(matches!(
            plan_etc(&c, &zone_tree()),
            Err(EtcError::InvalidTimezone { .. })
        ));
    }

    #[test]
    fn hostnames() {
        assert!(is_valid_hostname("nginx") && is_valid_hostname("a-1.b"));
        for bad in ["", "-a", "a-", "a..b", "a_b", &"a".repeat(64)] {
            assert!(!is_valid_hostname(bad), "{bad}");
        }
        let mut c = config();
        c.hostname = "bad_name".into();
        assert!(matches!(
            plan_etc(&c, &Tree::new(0)),
            Err(EtcError::InvalidHostname { .. })
        ));
    }
}
