//! Debian package versions: `[epoch:]upstream_version[-debian_revision]`, ordered as in
//! Debian Policy §5.6.12 and dpkg's `verrevcmp`.
//!
//! Comparison, for upstream version and then revision: alternate non-digit and digit runs.
//! Non-digit runs compare character by character where `~` sorts before everything (even
//! the end of the string), then the end of the string, then letters (ASCII order), then
//! all other characters (ASCII order). Digit runs compare numerically with arbitrary length
//! (leading zeros are ignored, no integer conversion, so no overflow). A missing revision
//! compares as the empty string, which equals `0` (dpkg does the same: `1.0` == `1.0-0`).
//!
//! Equality is the ordering's equality (`1.0` == `1.00` == `0:1.0`), while [`Display`]
//! reproduces the string as written.
//!
//! [`Display`]: std::fmt::Display

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Maximum epoch accepted (dpkg rejects epochs above `i32::MAX`).
const MAX_EPOCH: u64 = i32::MAX as u64;
/// Maximum length of a version string we accept from untrusted input.
const MAX_LEN: usize = 256;

/// Why a version string is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Empty string (after trimming).
    #[error("version is empty")]
    Empty,
    /// Longer than 256 bytes.
    #[error("version `{version}...` is longer than 256 bytes")]
    TooLong {
        /// The first 32 bytes.
        version: String,
    },
    /// Whitespace inside the version.
    #[error("version `{version}` contains whitespace")]
    EmbeddedWhitespace {
        /// The version as given.
        version: String,
    },
    /// Epoch is not a number, or larger than dpkg allows.
    #[error("version `{version}` has an invalid epoch")]
    InvalidEpoch {
        /// The version as given.
        version: String,
    },
    /// Upstream part is empty (`1:` or `-1`).
    #[error("version `{version}` has an empty upstream version")]
    EmptyUpstream {
        /// The version as given.
        version: String,
    },
    /// Upstream part does not start with a digit (Policy §5.6.12 "must").
    #[error("version `{version}`: upstream version does not start with a digit")]
    UpstreamNotDigit {
        /// The version as given.
        version: String,
    },
    /// Trailing `-` with nothing after it.
    #[error("version `{version}` has an empty revision")]
    EmptyRevision {
        /// The version as given.
        version: String,
    },
    /// A character outside `[A-Za-z0-9.+~-]` (upstream; `:` only with an epoch) or
    /// `[A-Za-z0-9.+~]` (revision).
    #[error("version `{version}` contains invalid character `{character}`")]
    InvalidCharacter {
        /// The version as given.
        version: String,
        /// The first offending character.
        character: char,
    },
}

/// A parsed, validated Debian version.
#[derive(Clone)]
pub struct Version {
    raw: Box<str>,
    epoch: u32,
    /// Byte range of the upstream version inside `raw`.
    upstream: (u16, u16),
    /// Byte range of the revision inside `raw` (empty when absent).
    revision: (u16, u16),
}

impl Version {
    /// Parses and validates `s` (surrounding whitespace is ignored).
    ///
    /// # Errors
    /// A [`VersionError`] describing the first problem found.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(VersionError::Empty);
        }
        if s.len() > MAX_LEN {
            let mut end = 32;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            return Err(VersionError::TooLong {
                version: s[..end].to_owned(),
            });
        }
        let owned = || s.to_owned();
        if s.chars().any(char::is_whitespace) {
            return Err(VersionError::EmbeddedWhitespace { version: owned() });
        }
        let (epoch, upstream_start) = match s.find(':') {
            Some(i) => {
                let digits = &s[..i];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VersionError::InvalidEpoch { version: owned() });
                }
                let significant = digits.trim_start_matches('0');
                let epoch = if significant.len() > 10 {
                    u64::MAX
                } else {
                    significant.parse::<u64>().unwrap_or(0)
                };
                if epoch > MAX_EPOCH {
                    return Err(VersionError::InvalidEpoch { version: owned() });
                }
                (u32::try_from(epoch).expect("bounded by MAX_EPOCH"), i + 1)
            }
            None => (0, 0),
        };
        let (upstream_end, revision) = match s[upstream_start..].rfind('-') {
            Some(i) => {
                let dash = upstream_start + i;
                if dash + 1 == s.len() {
                    return Err(VersionError::EmptyRevision { version: owned() });
                }
                (dash, (dash + 1, s.len()))
            }
            None => (s.len(), (s.len(), s.len())),
        };
        let upstream = &s[upstream_start..upstream_end];
        if upstream.is_empty() {
            return Err(VersionError::EmptyUpstream { version: owned() });
        }
        if !upstream.as_bytes()[0].is_ascii_digit() {
            return Err(VersionError::UpstreamNotDigit { version: owned() });
        }
        let has_epoch = upstream_start > 0;
        let bad_upstream = upstream.chars().find(|&c| {
            !(c.is_ascii_alphanumeric()
                || matches!(c, '.' | '+' | '~' | '-')
                || (c == ':' && has_epoch))
        });
        let bad_revision = s[revision.0..revision.1]
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~')));
        if let Some(character) = bad_upstream.or(bad_revision) {
            return Err(VersionError::InvalidCharacter {
                version: owned(),
                character,
            });
        }
        let to16 = |n: usize| u16::try_from(n).expect("length bounded by MAX_LEN");
        Ok(Self {
            raw: s.into(),
            epoch,
            upstream: (to16(upstream_start), to16(upstream_end)),
            revision: (to16(revision.0), to16(revision.1)),
        })
    }

    /// The epoch (0 when absent).
    #[must_use]
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The upstream version.
    #[must_use]
    pub fn upstream(&self) -> &str {
        &self.raw[usize::from(self.upstream.0)..usize::from(self.upstream.1)]
    }

    /// The Debian revision (empty when absent).
    #[must_use]
    pub fn revision(&self) -> &str {
        &self.raw[usize::from(self.revision.0)..usize::from(self.revision.1)]
    }

    /// The version exactly as written (trimmed).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

/// Sort weight of one non-digit position (`None` = end of string), as in dpkg's `order()`.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp` over bytes, with digit runs compared as unbounded numbers.
fn compare_part(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit run.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // Digit run: skip leading zeros, then longer is larger, then lexicographic.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let a_end = i + a[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let b_end = j + b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        let ordering = (a_end - i)
            .cmp(&(b_end - j))
            .then_with(|| a[i..a_end].cmp(&b[j..b_end]));
        if ordering != Ordering::Equal {
            return ordering;
        }
        i = a_end;
        j = b_end;
    }
    Ordering::Equal
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream().as_bytes(), other.upstream().as_bytes()))
            .then_with(|| compare_part(self.revision().as_bytes(), other.revision().as_bytes()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({:?})", &*self.raw)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_components() {
        let x = v("2:1.2.3~rc1+dfsg-4+deb12u1");
        assert_eq!(x.epoch(), 2);
        assert_eq!(x.upstream(), "1.2.3~rc1+dfsg");
        assert_eq!(x.revision(), "4+deb12u1");
        assert_eq!(x.to_string(), "2:1.2.3~rc1+dfsg-4+deb12u1");
        let y = v("1:2:3-4-5");
        assert_eq!((y.epoch(), y.upstream(), y.revision()), (1, "2:3-4", "5"));
        let z = v(" 7 ");
        assert_eq!((z.epoch(), z.upstream(), z.revision()), (0, "7", ""));
    }

    #[test]
    fn orders_like_policy() {
        let ordered = [
            "1.0~~",
            "1.0~~a",
            "1.0~",
            "1.0",
            "1.0a",
            "1.0+",
            "1.0.1",
            "1.0.10",
            "1.1",
            "1.1-1",
            "1.1-1ubuntu1",
            "1.1-2",
            "1.10",
            "2",
            "1:0.1",
            "1:0.1-1",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1.0"), v("1.00"));
        assert_eq!(v("0:1.0"), v("1.0"));
        assert_eq!(v("1.0"), v("1.0-0"));
        assert!(v("1.099999999999999999999999999999") > v("1.99999999999999999999"));
        assert!(v("1.00000000000000000000000000001") == v("1.1"));
    }

    #[test]
    fn rejects_invalid() {
        type Check = fn(&VersionError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, VersionError::Empty)),
            ("1 0", |e| {
                matches!(e, VersionError::EmbeddedWhitespace { .. })
            }),
            ("a:1", |e| matches!(e, VersionError::InvalidEpoch { .. })),
            (":1", |e| matches!(e, VersionError::InvalidEpoch { .. })),
            ("99999999999:1", |e| {
                matches!(e, VersionError::InvalidEpoch { .. })
            }),
            ("1:", |e| matches!(e, VersionError::EmptyUpstream { .. })),
            ("-1", |e| matches!(e, VersionError::EmptyUpstream { .. })),
            ("1.0-", |e| matches!(e, VersionError::EmptyRevision { .. })),
            ("a1.0", |e| {
                matches!(e, VersionError::UpstreamNotDigit { .. })
            }),
            ("1.0_1", |e| {
                matches!(e, VersionError::InvalidCharacter { character: '_', .. })
            }),
            ("1:0-1:2", |e| {
                matches!(e, VersionError::InvalidCharacter { character: ':', .. })
            }),
            ("1.0:2", |e| matches!(e, VersionError::InvalidEpoch { .. })),
        ];
        for (input, check) in cases {
            let err = Version::parse(input).unwrap_err();
            assert!(check(&err), "{input:?} gave {err:?}");
        }
        let long = "1".repeat(300);
        assert!(matches!(
            Version::parse(&long),
            Err(VersionError::TooLong { .. })
        ));
        assert_eq!(
            Version::parse("1.0_1").unwrap_err().to_string(),
            "version `1.0_1` contains invalid character `_`"
        );
    }

    /// Generates tricky but valid versions: epochs, `~`, `+`, `.`, leading zeros, letters,
    /// long digit runs, with and without revision.
    pub(crate) fn version_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            3 => "[0-9]{1,3}",
            1 => "0{1,3}[0-9]{0,2}",
            1 => "[0-9]{18,25}",
            2 => "[a-zA-Z]{1,2}",
            2 => Just("~".to_owned()),
            2 => Just(".".to_owned()),
            1 => Just("+".to_owned()),
            1 => Just("~~".to_owned()),
        ];
        let upstream = ("[0-9]{1,2}", prop::collection::vec(piece.clone(), 0..5))
            .prop_map(|(first, rest)| format!("{first}{}", rest.concat()));
        let revision = prop::option::of(
            (piece.clone(), prop::collection::vec(piece, 0..3))
                .prop_map(|(first, rest)| format!("{first}{}", rest.concat())),
        );
        let epoch = prop::option::of(prop_oneof![Just(0u32), Just(1), 0u32..20]);
        (epoch, upstream, revision).prop_map(|(epoch, upstream, revision)| {
            let mut s = String::new();
            if let Some(e) = epoch {
                s.push_str(&format!("{e}:"));
            }
            s.push_str(&upstream);
            if let Some(r) = revision {
                s.push('-');
                s.push_str(&r);
            }
            s
        })
    }

    /// Pairs that are often close to each other (same prefix) so that deep comparisons run.
    fn pair_strategy() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            (version_strategy(), version_strategy()),
            (version_strategy(), "[0-9a-z.~+]{0,3}").prop_map(|(a, suffix)| {
                let b = format!("{a}{suffix}");
                (a, b)
            }),
        ]
    }

    proptest! {
        #[test]
        fn generated_versions_parse_and_roundtrip(s in version_strategy()) {
            let parsed = Version::parse(&s).unwrap();
            prop_assert_eq!(parsed.to_string(), s);
        }

        #[test]
        fn ordering_is_antisymmetric_and_transitive(
            a in version_strategy(), b in version_strategy(), c in version_strategy()
        ) {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
        }
    }

    /// Compares ≥10,000 generated pairs with the host's `dpkg --compare-versions`. One dpkg
    /// call per pair asks for the relation we computed; the pairs are split over several
    /// `sh` processes so this takes seconds.
    #[test]
    #[allow(clippy::print_stderr, reason = "skip notice when dpkg is absent")]
    fn agrees_with_dpkg_compare_versions() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        if Command::new("dpkg").arg("--version").output().is_err() {
            eprintln!("SKIPPED: `dpkg` not found, cannot cross-check version ordering");
            return;
        }
        const PAIRS: usize = 10_240;
        const WORKERS: usize = 8;
        let mut runner = TestRunner::deterministic();
        let strategy = pair_strategy();
        let mut pairs = Vec::with_capacity(PAIRS);
        while pairs.len() < PAIRS {
            let (a, b) = strategy.new_tree(&mut runner).unwrap().current();
            let (pa, pb) = (v(&a), v(&b));
            let op = match pa.cmp(&pb) {
                Ordering::Less => "lt",
                Ordering::Equal => "eq",
                Ordering::Greater => "gt",
            };
            pairs.push((a, op, b));
        }
        let children: Vec<_> = pairs
            .chunks(PAIRS.div_ceil(WORKERS))
            .map(|chunk| {
                // Versions only contain [A-Za-z0-9.+~:-], so single quotes are safe.
                let mut script = String::new();
                for (a, op, b) in chunk {
                    script.push_str(&format!(
                        "dpkg --compare-versions '{a}' {op} '{b}' || echo \"MISMATCH {a} {op} {b}\"\n"
                    ));
                }
                let mut child = Command::new("sh")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn sh");
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(script.as_bytes())
                    .unwrap();
                child
            })
            .collect();
        let mut mismatches = String::new();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            mismatches.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        assert!(
            mismatches.is_empty(),
            "disagreements with dpkg:\n{mismatches}"
        );
    }
}
