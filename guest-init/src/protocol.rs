//! The smoke-test result-line format shared by guest-init (writer) and test-vm (reader).
//!
//! guest-init prints one line per event on the console. Each line starts with the marker
//! `JEOS1` (format version 1), then the event kind, then `key=value` fields in a fixed order:
//!
//! ```text
//! JEOS1 ready boot_ms=<u64> cpus=<u32> initramfs_ms=<u64> root_ms=<u64> services_ms=<u64>
//! JEOS1 check index=<u32> status=<pass|fail> ms=<u64> name=<pct> detail=<pct>
//! JEOS1 done passed=<u32> failed=<u32>
//! JEOS1 error detail=<pct>
//! ```
//!
//! The `ready` line carries the boot phases, each in milliseconds since the kernel started
//! (CLOCK_BOOTTIME): the initramfs's `/init` started (`initramfs_ms`), the root filesystem
//! was switched to (`root_ms`), every service was started (`services_ms`), every service
//! was ready (`boot_ms`); `cpus` is the number of online CPUs the guest saw.
//!
//! The lines travel on their own channel (a second serial port, `jeos.protocol=/dev/ttyS1`),
//! not on the console, so a service cannot forge them by printing.
//!
//! `<pct>` is percent-encoded UTF-8: space, `%`, `=`, control characters (including DEL) and
//! every non-ASCII byte become `%XX` (upper-case hex), so a value never contains a space and
//! a line never contains a control character. The console may put kernel messages in front
//! of the marker on the same line, so the reader looks for `JEOS1 ` anywhere in the line.
//!
//! ```
//! use guest_init::protocol::{format, parse_line, Event};
//! let line = format(&Event::Error { detail: "nginx not ready".into() });
//! assert_eq!(line, "JEOS1 error detail=nginx%20not%20ready");
//! let noisy = format!("[    1.5] random: crng init done{line}\r");
//! assert_eq!(parse_line(&noisy), Some(Ok(Event::Error { detail: "nginx not ready".into() })));
//! assert_eq!(parse_line("[    0.0] Linux version 6.1"), None);
//! ```

use std::fmt;

/// The marker that starts every protocol line (including its trailing space).
pub const MARKER: &str = "JEOS1 ";

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// The check passed.
    Pass,
    /// The check failed; `detail` says why.
    Fail,
}

impl CheckStatus {
    fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "fail",
        }
    }
}

/// One protocol event, as printed by guest-init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Every service is up and ready; `boot_ms` is the time since the kernel started.
    Ready {
        /// Milliseconds since boot (CLOCK_BOOTTIME) when the last service became ready.
        boot_ms: u64,
        /// The earlier boot phases and what the guest saw.
        phases: BootPhases,
    },
    /// The result of one `[[test.check]]`.
    Check {
        /// Zero-based position of the check in the recipe.
        index: u32,
        /// Pass or fail.
        status: CheckStatus,
        /// How long the check took.
        ms: u64,
        /// The check's name from the recipe.
        name: String,
        /// Human-readable detail (why it failed, or what it saw).
        detail: String,
    },
    /// All checks ran.
    Done {
        /// Number of passed checks.
        passed: u32,
        /// Number of failed checks.
        failed: u32,
    },
    /// The appliance could not be tested (a service never became ready, bad config...).
    Error {
        /// What went wrong.
        detail: String,
    },
}

/// The boot phases of a `ready` event (milliseconds since the kernel started) and the
/// number of CPUs the guest saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootPhases {
    /// Online CPUs.
    pub cpus: u32,
    /// The initramfs's `/init` started.
    pub initramfs_ms: u64,
    /// PID 1 started in the root filesystem.
    pub root_ms: u64,
    /// Every service was started.
    pub services_ms: u64,
}

/// Why a line that carries the `JEOS1` marker is not a valid protocol line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The event kind after the marker is not one of `ready`, `check`, `done`, `error`.
    UnknownKind {
        /// The kind found.
        kind: String,
    },
    /// A field is missing, misnamed or out of order.
    MissingField {
        /// The field expected at this position.
        field: &'static str,
    },
    /// A numeric field does not hold a number of the expected width.
    InvalidNumber {
        /// The field name.
        field: &'static str,
        /// The raw value.
        value: String,
    },
    /// `status=` is neither `pass` nor `fail`.
    InvalidStatus {
        /// The raw value.
        value: String,
    },
    /// A percent-encoded field has a bad escape or does not decode to UTF-8.
    InvalidEncoding {
        /// The field name.
        field: &'static str,
    },
    /// Extra text after the last field.
    TrailingData,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::UnknownKind { kind } => write!(f, "unknown event kind `{kind}`"),
            ProtocolError::MissingField { field } => write!(f, "missing field `{field}`"),
            ProtocolError::InvalidNumber { field, value } => {
                write!(f, "invalid number `{value}` in field `{field}`")
            }
            ProtocolError::InvalidStatus { value } => {
                write!(f, "invalid status `{value}`, expected `pass` or `fail`")
            }
            ProtocolError::InvalidEncoding { field } => {
                write!(f, "invalid percent-encoding in field `{field}`")
            }
            ProtocolError::TrailingData => write!(f, "unexpected data after the last field"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Renders an event as one line (without the line terminator).
pub fn format(event: &Event) -> String {
    match event {
        Event::Ready { boot_ms, phases } => format!(
            "{MARKER}ready boot_ms={boot_ms} cpus={} initramfs_ms={} root_ms={} services_ms={}",
            phases.cpus, phases.initramfs_ms, phases.root_ms, phases.services_ms
        ),
        Event::Check {
            index,
            status,
            ms,
            name,
            detail,
        } => format!(
            "{MARKER}check index={index} status={} ms={ms} name={} detail={}",
            status.as_str(),
            encode(name),
            encode(detail)
        ),
        Event::Done { passed, failed } => {
            format!("{MARKER}done passed={passed} failed={failed}")
        }
        Event::Error { detail } => format!("{MARKER}error detail={}", encode(detail)),
    }
}

/// Parses one console line.
///
/// Returns `None` when the line carries no `JEOS1 ` marker (ordinary console output), and
/// `Some(Err(_))` when it carries the marker but is malformed. Text before the marker and
/// trailing `\r`/`\n` are ignored.
pub fn parse_line(line: &str) -> Option<Result<Event, ProtocolError>> {
    let start = line.find(MARKER)?;
    let rest = line[start + MARKER.len()..].trim_end_matches(['\r', '\n']);
    Some(parse_fields(rest))
}

fn parse_fields(rest: &str) -> Result<Event, ProtocolError> {
    let mut tokens = rest.split(' ');
    let kind = tokens.next().unwrap_or_default();
    let mut fields = Fields { tokens };
    let event = match kind {
        "ready" => Event::Ready {
            boot_ms: fields.number("boot_ms")?,
            phases: BootPhases {
                cpus: fields.number("cpus")?,
                initramfs_ms: fields.number("initramfs_ms")?,
                root_ms: fields.number("root_ms")?,
                services_ms: fields.number("services_ms")?,
            },
        },
        "check" => Event::Check {
            index: fields.number("index")?,
            status: match fields.raw("status")? {
                "pass" => CheckStatus::Pass,
                "fail" => CheckStatus::Fail,
                other => {
                    return Err(ProtocolError::InvalidStatus {
                        value: other.to_owned(),
                    });
                }
            },
            ms: fields.number("ms")?,
            name: fields.text("name")?,
            detail: fields.text("detail")?,
        },
        "done" => Event::Done {
            passed: fields.number("passed")?,
            failed: fields.number("failed")?,
        },
        "error" => Event::Error {
            detail: fields.text("detail")?,
        },
        other => {
            return Err(ProtocolError::UnknownKind {
                kind: other.to_owned(),
            });
        }
    };
    if fields.tokens.next().is_some() {
        return Err(ProtocolError::TrailingData);
    }
    Ok(event)
}

struct Fields<'a> {
    tokens: std::str::Split<'a, char>,
}

impl<'a> Fields<'a> {
    fn raw(&mut self, field: &'static str) -> Result<&'a str, ProtocolError> {
        self.tokens
            .next()
            .and_then(|token| token.split_once('='))
            .filter(|(key, _)| *key == field)
            .map(|(_, value)| value)
            .ok_or(ProtocolError::MissingField { field })
    }

    fn number<T: std::str::FromStr>(&mut self, field: &'static str) -> Result<T, ProtocolError> {
        let value = self.raw(field)?;
        // `FromStr` for integers accepts a leading `+`; the format never writes one.
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProtocolError::InvalidNumber {
                field,
                value: value.to_owned(),
            });
        }
        value.parse().map_err(|_| ProtocolError::InvalidNumber {
            field,
            value: value.to_owned(),
        })
    }

    fn text(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        decode(self.raw(field)?).ok_or(ProtocolError::InvalidEncoding { field })
    }
}

fn needs_escape(byte: u8) -> bool {
    matches!(byte, b' ' | b'%' | b'=') || byte.is_ascii_control() || !byte.is_ascii()
}

/// Percent-encodes a field value (see the module docs for the escaped set).
pub fn encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        if needs_escape(byte) {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        } else {
            out.push(char::from(byte));
        }
    }
    out
}

/// Decodes a percent-encoded field value; `None` on a bad escape, a raw byte that should
/// have been escaped, or invalid UTF-8.
pub fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else if needs_escape(byte) {
            return None;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, detail: &str) -> Event {
        Event::Check {
            index: 3,
            status: CheckStatus::Fail,
            ms: 12,
            name: name.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn formats_each_kind_exactly() {
        assert_eq!(
            format(&Event::Ready {
                boot_ms: 1234,
                phases: BootPhases {
                    cpus: 2,
                    initramfs_ms: 700,
                    root_ms: 900,
                    services_ms: 950
                }
            }),
            "JEOS1 ready boot_ms=1234 cpus=2 initramfs_ms=700 root_ms=900 services_ms=950"
        );
        assert_eq!(
            format(&check("serves the page", "status 404 = bad; 100%\n")),
            "JEOS1 check index=3 status=fail ms=12 name=serves%20the%20page \
             detail=status%20404%20%3D%20bad;%20100%25%0A"
        );
        assert_eq!(
            format(&Event::Done {
                passed: 2,
                failed: 1
            }),
            "JEOS1 done passed=2 failed=1"
        );
        assert_eq!(
            format(&Event::Error {
                detail: "é".into()
            }),
            "JEOS1 error detail=%C3%A9"
        );
    }

    #[test]
    fn round_trips_with_noise_before_marker() {
        let events = [
            Event::Ready {
                boot_ms: u64::MAX,
                phases: BootPhases::default(),
            },
            check("", ""),
            check("tab\there", "ünïcode ✓ \u{7f}"),
            Event::Done {
                passed: 0,
                failed: u32::MAX,
            },
            Event::Error {
                detail: "a=b c%d".into(),
            },
        ];
        for event in events {
            let line = format!("[    2.000] virtio_net: noise {}\r\n", format(&event));
            assert_eq!(parse_line(&line), Some(Ok(event)));
        }
    }

    #[test]
    fn ignores_lines_without_marker() {
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("JEOS1"), None);
        assert_eq!(parse_line("JEOS2 ready boot_ms=1"), None);
        assert_eq!(
            parse_line("JEOS1 ready boot_ms=1"),
            Some(Err(ProtocolError::MissingField { field: "cpus" }))
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        let cases: &[(&str, ProtocolError)] = &[
            (
                "JEOS1 reddy boot_ms=1",
                ProtocolError::UnknownKind {
                    kind: "reddy".into(),
                },
            ),
            (
                "JEOS1 ready",
                ProtocolError::MissingField { field: "boot_ms" },
            ),
            (
                "JEOS1 ready boot_ms=1 cpus=1 initramfs_ms=1 root_ms=1",
                ProtocolError::MissingField {
                    field: "services_ms",
                },
            ),
            (
                "JEOS1 ready ms=1",
                ProtocolError::MissingField { field: "boot_ms" },
            ),
            (
                "JEOS1 ready boot_ms=+1",
                ProtocolError::InvalidNumber {
                    field: "boot_ms",
                    value: "+1".into(),
                },
            ),
            (
                "JEOS1 done passed=1 failed=4294967296",
                ProtocolError::InvalidNumber {
                    field: "failed",
                    value: "4294967296".into(),
                },
            ),
            (
                "JEOS1 check index=0 status=ok ms=1 name=a detail=b",
                ProtocolError::InvalidStatus { value: "ok".into() },
            ),
            (
                "JEOS1 check index=0 status=pass ms=1 name=%4 detail=b",
                ProtocolError::InvalidEncoding { field: "name" },
            ),
            (
                "JEOS1 error detail=%FF",
                ProtocolError::InvalidEncoding { field: "detail" },
            ),
            (
                "JEOS1 error detail=a=b",
                ProtocolError::InvalidEncoding { field: "detail" },
            ),
            ("JEOS1 error detail=a b", ProtocolError::TrailingData),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_line(line), Some(Err(expected.clone())), "{line}");
            assert!(!expected.to_string().is_empty());
        }
    }

    /// xorshift64*: a dependency-free generator for the property test below.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn text(&mut self) -> String {
            let len = self.next() % 24;
            (0..len)
                .map(|_| match self.next() % 4 {
                    0 => char::from_u32(u32::try_from(self.next() % 0x80).unwrap_or(0)),
                    1 => char::from_u32(u32::try_from(self.next() % 0x11_0000).unwrap_or(0)),
                    _ => Some(char::from(b" %=a\t\r\n"[(self.next() % 7) as usize])),
                })
                .map(|c| c.unwrap_or('?'))
                .collect()
        }
    }

    #[test]
    fn property_round_trip_and_no_control_chars() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5_000 {
            let event = match rng.next() % 4 {
                0 => Event::Ready {
                    boot_ms: rng.next(),
                    phases: BootPhases {
                        cpus: rng.next() as u32,
                        initramfs_ms: rng.next(),
                        root_ms: rng.next(),
                        services_ms: rng.next(),
                    },
                },
                1 => Event::Check {
                    index: rng.next() as u32,
                    status: if rng.next().is_multiple_of(2) {
                        CheckStatus::Pass
                    } else {
                        CheckStatus::Fail
                    },
                    ms: rng.next(),
                    name: rng.text(),
                    detail: rng.text(),
                },
                2 => Event::Done {
                    passed: rng.next() as u32,
                    failed: rng.next() as u32,
                },
                _ => Event::Error { detail: rng.text() },
            };
            let line = format(&event);
            assert!(line.is_ascii() && !line.bytes().any(|b| b.is_ascii_control()));
            assert_eq!(parse_line(&line), Some(Ok(event)));
        }
    }

    #[test]
    fn property_arbitrary_lines_never_panic() {
        let mut rng = Rng(42);
        for _ in 0..5_000 {
            let line = format!("{MARKER}{}", rng.text());
            let _ = parse_line(&line);
        }
    }
}
