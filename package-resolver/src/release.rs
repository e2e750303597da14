//! `InRelease`: the OpenPGP cleartext-signed `Release` file of a Debian suite.
//!
//! ```text
//! -----BEGIN PGP SIGNED MESSAGE-----     RFC 4880 §7: cleartext signature framework
//! Hash: SHA512                           armor header(s), then one empty line
//!
//! Origin: Debian                          the signed text: a deb822 `Release` paragraph
//! ...                                     (lines starting with `-` are escaped as `- -`)
//! SHA256:
//!  <hex> <size> main/binary-amd64/Packages.xz
//! -----BEGIN PGP SIGNATURE-----          one or more signature packets (Debian: three)
//! ...
//! -----END PGP SIGNATURE-----
//! ```
//!
//! Verification (RFC 4880 §7.1): the signed data is the text between the empty line after the
//! armor headers and the line before `-----BEGIN PGP SIGNATURE-----`, with dash-escaping
//! removed, trailing spaces and tabs removed from every line, lines joined with `\r\n`, and no
//! line ending after the last line. Exactly these canonical lines (joined with `\n`) are what
//! [`parse_release`] reads, so nothing unsigned is ever parsed.
//!
//! A release is accepted when at least one signature verifies against a key of the keyring
//! that was valid (not revoked, not expired, signing-capable, accepted by sequoia's standard
//! policy) at the signature's creation time; the other signatures are reported in
//! [`VerifiedRelease::signatures`]. `Valid-Until` is checked against a caller-supplied `now`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sequoia_openpgp as openpgp;

use openpgp::cert::CertParser;
use openpgp::parse::Parse;
use openpgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use openpgp::{Cert, KeyHandle, Packet, PacketPile};
use sha2::{Digest, Sha256};

use crate::deb822;

/// Default keyring of the Debian archive (from the `debian-archive-keyring` package).
pub const DEBIAN_ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// How far in the future a release's `Date` may lie (clock skew between the archive and
/// this host); beyond it the release is refused, since its date would become the image's
/// `SOURCE_DATE_EPOCH` and pin out every later release.
pub const MAX_FUTURE_DATE: Duration = Duration::from_secs(3600);

/// Upper bound for an InRelease file (Debian's are ~200 KiB).
pub const MAX_INRELEASE_BYTES: u64 = 16 * 1024 * 1024;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The file is not a cleartext-signed message (for example a plain `Release`).
    #[error("release file is not OpenPGP-signed (no `-----BEGIN PGP SIGNED MESSAGE-----`)")]
    Unsigned,
    /// A signature from a key of the keyring does not match the signed text, and no other
    /// signature was good.
    #[error(
        "bad signature by key `{key}`: the signed text was altered or the signature is corrupt"
    )]
    BadSignature {
        /// Fingerprint of the key whose signature failed.
        key: String,
    },
    /// No signature was made by a valid key of the keyring.
    #[error(
        "no signature by a trusted key (signed by: {keys}); is the keyring `{keyring}` up to date?",
        keys = join_or_none(.keys)
    )]
    NoTrustedSignature {
        /// Issuer key ids/fingerprints of the signatures (hex).
        keys: Vec<String>,
        /// Keyring that was used.
        keyring: String,
    },
    /// `Valid-Until` lies before `now`.
    #[error("release expired: `Valid-Until: {valid_until}` is before now (`{now}`)")]
    Expired {
        /// `Valid-Until` as written.
        valid_until: String,
        /// Now, in the same format.
        now: String,
    },
    /// `Date` lies further in the future than [`MAX_FUTURE_DATE`].
    #[error(
        "release is dated `{date}`, in the future (now `{now}`); is the mirror or this host's clock wrong?"
    )]
    FutureDate {
        /// `Date` as written.
        date: String,
        /// Now.
        now: String,
    },
    /// The release is older than one already seen for the same suite (a rollback).
    #[error(
        "release dated `{date}` is older than `{newest}`, already seen for this suite: refusing a rollback"
    )]
    Rollback {
        /// `Date` of the release offered.
        date: String,
        /// `Date` of the newest release seen.
        newest: String,
    },
    /// The release is for another suite.
    #[error("release is for suite `{found}`, expected `{expected}`")]
    SuiteMismatch {
        /// Requested suite.
        expected: String,
        /// `Suite`/`Codename` found.
        found: String,
    },
    /// A required field is absent.
    #[error("release has no `{field}` field")]
    MissingField {
        /// Field name.
        field: &'static str,
    },
    /// Structure error, with the 1-based line in the InRelease file (0: no specific line).
    #[error("malformed release at line {line}: {reason}")]
    Malformed {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The keyring could not be read.
    #[error("cannot read keyring `{path}`")]
    KeyringIo {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The keyring holds no usable certificate.
    #[error("keyring `{path}` holds no OpenPGP certificate")]
    KeyringInvalid {
        /// Path (or `<memory>`).
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn join_or_none(keys: &[String]) -> String {
    if keys.is_empty() {
        "no issuer recorded".to_owned()
    } else {
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The pieces of a cleartext-signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleartext {
    /// Values of the `Hash:` armor headers.
    pub hash_headers: Vec<String>,
    /// Signed text as parsed: canonical lines joined with `\n` (with a final `\n`).
    pub text: String,
    /// The exact bytes the signatures cover (canonical lines joined with `\r\n`).
    pub signed_bytes: Vec<u8>,
    /// The armored signature block, from `-----BEGIN PGP SIGNATURE-----` to its end line.
    pub signature_armor: String,
    /// 1-based line of the first signed line in the input (for error positions).
    pub first_text_line: usize,
}

const BEGIN_SIGNED: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &str = "-----END PGP SIGNATURE-----";

/// Split a cleartext-signed message (RFC 4880 §7). Pure; no cryptography.
pub fn split_cleartext(input: &[u8]) -> Result<Cleartext, ReleaseError> {
    let text = std::str::from_utf8(input).map_err(|e| {
        let line = 1 + input[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ReleaseError::Malformed {
            line,
            reason: "not valid UTF-8".to_owned(),
        }
    })?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l));
    // Leading blank lines are tolerated; anything else before the header is not.
    let first = loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some(found) => break found,
            None => return Err(ReleaseError::Unsigned),
        }
    };
    if first.1.trim_end() != BEGIN_SIGNED {
        if first.1.starts_with("-----BEGIN PGP") {
            return Err(ReleaseError::Malformed {
                line: first.0,
                reason: format!("expected `{BEGIN_SIGNED}`"),
            });
        }
        return Err(ReleaseError::Unsigned);
    }
    let malformed = |line: usize, reason: &str| ReleaseError::Malformed {
        line,
        reason: reason.to_owned(),
    };
    let mut hash_headers = Vec::new();
    let mut last_line = first.0;
    loop {
        let (n, l) = lines
            .next()
            .ok_or_else(|| malformed(last_line, "message ends inside the armor headers"))?;
        last_line = n;
        if l.trim_end().is_empty() {
            break;
        }
        let (key, value) = l
            .split_once(": ")
            .ok_or_else(|| malformed(n, "expected an armor header `Hash: ...`"))?;
        if key != "Hash" {
            return Err(malformed(n, &format!("unexpected armor header `{key}`")));
        }
        hash_headers.extend(value.split(',').map(|v| v.trim().to_owned()));
    }
    let first_text_line = last_line + 1;
    let mut canonical: Vec<&str> = Vec::new();
    let mut found_signature = false;
    for (n, l) in lines.by_ref() {
        last_line = n;
        if l.trim_end() == BEGIN_SIGNATURE {
            found_signature = true;
            break;
        }
        let unescaped = if let Some(rest) = l.strip_prefix("- ") {
            rest
        } else if l.starts_with('-') {
            return Err(malformed(n, "line starting with `-` is not dash-escaped"));
        } else {
            l
        };
        canonical.push(unescaped.trim_end_matches([' ', '\t']));
    }
    if !found_signature {
        return Err(malformed(last_line, "no `-----BEGIN PGP SIGNATURE-----`"));
    }
    let mut signature_armor = String::from(BEGIN_SIGNATURE);
    signature_armor.push('\n');
    let mut ended = false;
    for (_, l) in lines.by_ref() {
        signature_armor.push_str(l);
        signature_armor.push('\n');
        if l.trim_end() == END_SIGNATURE {
            ended = true;
            break;
        }
    }
    if !ended {
        return Err(malformed(
            0,
            "signature block has no `-----END PGP SIGNATURE-----`",
        ));
    }
    // Nothing may follow the signature: a second message could smuggle unsigned text.
    if let Some((n, _)) = lines.find(|(_, l)| !l.trim().is_empty()) {
        return Err(malformed(n, "text after the end of the signature"));
    }
    let mut text_out = canonical.join("\n");
    text_out.push('\n');
    Ok(Cleartext {
        hash_headers,
        text: text_out,
        signed_bytes: canonical.join("\r\n").into_bytes(),
        signature_armor,
        first_text_line,
    })
}

/// One file listed in the `SHA256` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A date of a Release file, kept with its original spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseDate {
    /// As written, e.g. `Sat, 08 Nov 2025 09:51:04 UTC`.
    pub text: String,
    /// Seconds since the Unix epoch.
    pub unix_seconds: i64,
}

/// The fields of a `Release` file that jeos uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `Origin`.
    pub origin: Option<String>,
    /// `Label`.
    pub label: Option<String>,
    /// `Suite` (e.g. `stable`).
    pub suite: Option<String>,
    /// `Codename` (e.g. `trixie`).
    pub codename: Option<String>,
    /// `Date`.
    pub date: ReleaseDate,
    /// `Valid-Until`.
    pub valid_until: Option<ReleaseDate>,
    /// `Architectures`.
    pub architectures: Vec<String>,
    /// `Components`.
    pub components: Vec<String>,
    /// `Acquire-By-Hash: yes`.
    pub acquire_by_hash: bool,
    /// `SHA256` entries by path (relative to `dists/<suite>/`).
    pub sha256: BTreeMap<String, ReleaseFile>,
}

impl Release {
    /// `true` when `name` is this release's `Suite` or `Codename`.
    #[must_use]
    pub fn serves(&self, name: &str) -> bool {
        self.suite.as_deref() == Some(name) || self.codename.as_deref() == Some(name)
    }

    /// Check that `Date` is not beyond `now` + [`MAX_FUTURE_DATE`].
    pub fn check_date_not_future(&self, now: SystemTime) -> Result<(), ReleaseError> {
        let now_seconds = unix_seconds(now);
        let limit =
            now_seconds.saturating_add(i64::try_from(MAX_FUTURE_DATE.as_secs()).unwrap_or(0));
        if self.date.unix_seconds > limit {
            return Err(ReleaseError::FutureDate {
                date: self.date.text.clone(),
                now: format_rfc2822(now_seconds),
            });
        }
        Ok(())
    }

    /// Check `Valid-Until` against `now`.
    pub fn check_valid_until(&self, now: SystemTime) -> Result<(), ReleaseError> {
        if let Some(valid_until) = &self.valid_until {
            let now_seconds = unix_seconds(now);
            if valid_until.unix_seconds < now_seconds {
                return Err(ReleaseError::Expired {
                    valid_until: valid_until.text.clone(),
                    now: format_rfc2822(now_seconds),
                });
            }
        }
        Ok(())
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Parse the signed text of a Release file. `first_line` is the 1-based line of the text in
/// its file (1 for a plain `Release`), used in error positions.
pub fn parse_release(text: &str, first_line: usize) -> Result<Release, ReleaseError> {
    let at = |line: usize| first_line + line.saturating_sub(1);
    let paragraphs = deb822::parse(text).map_err(|e| ReleaseError::Malformed {
        line: at(e.line()),
        reason: e.to_string(),
    })?;
    let p = match paragraphs.as_slice() {
        [p] => p,
        [] => return Err(ReleaseError::MissingField { field: "Suite" }),
        [_, second, ..] => {
            return Err(ReleaseError::Malformed {
                line: at(second.line()),
                reason: "more than one paragraph".to_owned(),
            });
        }
    };
    let owned = |name: &str| p.get(name).map(str::to_owned);
    let words = |name: &str| {
        p.get(name)
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let date_field = |name: &'static str| -> Result<Option<ReleaseDate>, ReleaseError> {
        let Some(field) = p.field(name) else {
            return Ok(None);
        };
        let value = field.value().trim();
        let unix_seconds = parse_rfc2822(value).ok_or_else(|| ReleaseError::Malformed {
            line: at(field.line()),
            reason: format!("`{name}` is not an RFC 2822 date: `{value}`"),
        })?;
        Ok(Some(ReleaseDate {
            text: value.to_owned(),
            unix_seconds,
        }))
    };
    if p.get("Suite").is_none() && p.get("Codename").is_none() {
        return Err(ReleaseError::MissingField { field: "Suite" });
    }
    let date = date_field("Date")?.ok_or(ReleaseError::MissingField { field: "Date" })?;
    let valid_until = date_field("Valid-Until")?;
    let sha_field = p
        .field("SHA256")
        .ok_or(ReleaseError::MissingField { field: "SHA256" })?;
    let mut sha256 = BTreeMap::new();
    for (i, line) in sha_field.value().lines().enumerate() {
        // The value starts on the line after `SHA256:` when the first line is empty.
        let line_no = at(sha_field.line() + i + usize::from(!sha_field.value().is_empty()));
        let mut parts = line.split_whitespace();
        let (Some(hash), Some(size), Some(path), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(ReleaseError::Malformed {
                line: line_no,
                reason: "expected `<sha256> <size> <path>`".to_owned(),
            });
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReleaseError::Malformed {
                line: line_no,
                reason: format!("`{hash}` is not a SHA-256"),
            });
        }
        let size: u64 = size.parse().map_err(|_| ReleaseError::Malformed {
            line: line_no,
            reason: format!("`{size}` is not a size"),
        })?;
        if path.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(ReleaseError::Malformed {
                line: line_no,
                reason: format!("unsafe path `{path}`"),
            });
        }
        sha256.insert(
            path.to_owned(),
            ReleaseFile {
                sha256: hash.to_ascii_lowercase(),
                size,
            },
        );
    }
    Ok(Release {
        origin: owned("Origin"),
        label: owned("Label"),
        suite: owned("Suite"),
        codename: owned("Codename"),
        date,
        valid_until,
        architectures: words("Architectures"),
        components: words("Components"),
        acquire_by_hash: p
            .get("Acquire-By-Hash")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes")),
        sha256,
    })
}

/// A set of OpenPGP certificates (a binary keyring of concatenated certs, or armored).
#[derive(Debug, Clone)]
pub struct Keyring {
    certs: Vec<Cert>,
    source: PathBuf,
}

impl Keyring {
    /// Read a keyring file.
    pub fn from_file(path: &Path) -> Result<Self, ReleaseError> {
        let bytes = std::fs::read(path).map_err(|source| ReleaseError::KeyringIo {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parse keyring bytes; `source` names them in errors.
    pub fn from_bytes(bytes: &[u8], source: &Path) -> Result<Self, ReleaseError> {
        let invalid = |reason: String| ReleaseError::KeyringInvalid {
            path: source.to_owned(),
            reason,
        };
        let parser = CertParser::from_bytes(bytes).map_err(|e| invalid(e.to_string()))?;
        // Certificates that fail to parse are skipped, as gpgv does; the rest still count.
        let certs: Vec<Cert> = parser.filter_map(Result::ok).collect();
        if certs.is_empty() {
            return Err(invalid("no certificate parsed".to_owned()));
        }
        Ok(Self {
            certs,
            source: source.to_owned(),
        })
    }

    /// The certificates.
    #[must_use]
    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    /// Where the keyring came from.
    #[must_use]
    pub fn source(&self) -> &Path {
        &self.source
    }
}

/// Outcome of one signature of an InRelease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Verified by the key with this fingerprint.
    Good {
        /// Fingerprint of the (sub)key that made it.
        key: String,
    },
    /// Made by a key of the keyring, but the cryptographic check failed.
    Bad {
        /// Fingerprint of the (sub)key.
        key: String,
        /// Why.
        reason: String,
    },
    /// No valid signing key of the keyring matches the issuer.
    UnknownKey {
        /// Issuers named by the signature.
        issuers: Vec<String>,
    },
    /// The signature itself is not acceptable (policy: weak hash, expired signature, ...).
    Rejected {
        /// Issuers named by the signature.
        issuers: Vec<String>,
        /// Why.
        reason: String,
    },
}

/// A verified InRelease.
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    /// Parsed fields.
    pub release: Release,
    /// The requested suite name.
    pub suite: String,
    /// Lowercase hex SHA-256 of the InRelease bytes as fetched (for the lock file).
    pub inrelease_sha256: String,
    /// Fingerprint of the key of the first good signature.
    pub signed_by: String,
    /// Every signature, in order.
    pub signatures: Vec<SignatureStatus>,
}

/// Lowercase hex of a SHA-256 digest.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// Verify the signatures of `inrelease` against `keyring` and parse it. Checks that the
/// release serves `suite` (as `Suite` or `Codename`) and that `Valid-Until` is after `now`.
pub fn verify_inrelease(
    inrelease: &[u8],
    keyring: &Keyring,
    suite: &str,
    now: SystemTime,
) -> Result<VerifiedRelease, ReleaseError> {
    let clear = split_cleartext(inrelease)?;
    let signatures = verify_signatures_at(&clear, keyring, now)?;
    let Some(signed_by) = signatures.iter().find_map(|s| match s {
        SignatureStatus::Good { key } => Some(key.clone()),
        _ => None,
    }) else {
        if let Some(key) = signatures.iter().find_map(|s| match s {
            SignatureStatus::Bad { key, .. } => Some(key.clone()),
            _ => None,
        }) {
            return Err(ReleaseError::BadSignature { key });
        }
        let keys = signatures
            .iter()
            .flat_map(|s| match s {
                SignatureStatus::UnknownKey { issuers }
                | SignatureStatus::Rejected { issuers, .. } => issuers.clone(),
                _ => Vec::new(),
            })
            .collect();
        return Err(ReleaseError::NoTrustedSignature {
            keys,
            keyring: keyring.source.display().to_string(),
        });
    };
    let release = parse_release(&clear.text, clear.first_text_line)?;
    if !release.serves(suite) {
        return Err(ReleaseError::SuiteMismatch {
            expected: suite.to_owned(),
            found: release
                .codename
                .clone()
                .or_else(|| release.suite.clone())
                .unwrap_or_default(),
        });
    }
    release.check_valid_until(now)?;
    release.check_date_not_future(now)?;
    Ok(VerifiedRelease {
        release,
        suite: suite.to_owned(),
        inrelease_sha256: sha256_hex(inrelease),
        signed_by,
        signatures,
    })
}

/// Check every signature of `clear` (no parsing of the text), with the keys as they are
/// now (see [`verify_signatures_at`]).
pub fn verify_signatures(
    clear: &Cleartext,
    keyring: &Keyring,
) -> Result<Vec<SignatureStatus>, ReleaseError> {
    verify_signatures_at(clear, keyring, SystemTime::now())
}

/// Check every signature of `clear`. As gpgv does, the signing key must be valid both when
/// the signature was made and at `now`: a key that has expired or been revoked since
/// (EXPKEYSIG / REVKEYSIG in gpgv's terms) no longer vouches for anything.
pub fn verify_signatures_at(
    clear: &Cleartext,
    keyring: &Keyring,
    now: SystemTime,
) -> Result<Vec<SignatureStatus>, ReleaseError> {
    let malformed = |reason: String| ReleaseError::Malformed { line: 0, reason };
    let pile = PacketPile::from_bytes(clear.signature_armor.as_bytes())
        .map_err(|e| malformed(format!("cannot parse the signature block: {e}")))?;
    let policy = StandardPolicy::new();
    let mut out = Vec::new();
    for packet in pile.descendants() {
        let Packet::Signature(sig) = packet else {
            return Err(malformed(format!(
                "unexpected {} packet in the signature block",
                packet.tag()
            )));
        };
        out.push(check_signature(
            sig,
            &clear.signed_bytes,
            keyring,
            &policy,
            now,
        ));
    }
    if out.is_empty() {
        return Err(malformed("signature block holds no signature".to_owned()));
    }
    Ok(out)
}

fn check_signature(
    sig: &openpgp::packet::Signature,
    signed: &[u8],
    keyring: &Keyring,
    policy: &StandardPolicy<'_>,
    now: SystemTime,
) -> SignatureStatus {
    let issuers: Vec<KeyHandle> = sig.get_issuers();
    let issuer_names = issuers.iter().map(|h| h.to_hex()).collect::<Vec<_>>();
    let rejected = |reason: String| SignatureStatus::Rejected {
        issuers: issuer_names.clone(),
        reason,
    };
    if sig.typ() != openpgp::types::SignatureType::Text
        && sig.typ() != openpgp::types::SignatureType::Binary
    {
        return rejected(format!("unexpected signature type {}", sig.typ()));
    }
    if let Err(e) = policy.signature(sig, HashAlgoSecurity::CollisionResistance) {
        return rejected(format!("rejected by policy: {e}"));
    }
    let Some(created) = sig.signature_creation_time() else {
        return rejected("signature has no creation time".to_owned());
    };
    // Debian signs with no signature expiry; a signature that does carry one must be alive
    // now (the release's own `Valid-Until` bounds replay separately).
    if let Err(e) = sig.signature_alive(None, Duration::from_secs(0)) {
        return rejected(format!("signature not alive: {e}"));
    }
    let mut first_bad = None;
    let mut stale_key = None;
    for cert in &keyring.certs {
        let Ok(valid) = cert.with_policy(policy, created) else {
            continue;
        };
        // The certificate and the issuing key must still be valid now.
        let now_check = cert.with_policy(policy, now).ok().filter(|v| {
            !matches!(
                v.revocation_status(),
                openpgp::types::RevocationStatus::Revoked(_)
            ) && v.alive().is_ok()
        });
        let Some(valid_now) = now_check else {
            if valid.keys().key_handles(issuers.iter()).next().is_some() {
                stale_key.get_or_insert(cert.fingerprint().to_hex());
            }
            continue;
        };
        let alive_now: Vec<openpgp::Fingerprint> = valid_now
            .keys()
            .for_signing()
            .alive()
            .revoked(false)
            .key_handles(issuers.iter())
            .map(|ka| ka.key().fingerprint())
            .collect();
        let keys = valid
            .keys()
            .for_signing()
            .alive()
            .revoked(false)
            .key_handles(issuers.iter());
        for ka in keys {
            let key = ka.key();
            if !alive_now.contains(&key.fingerprint()) {
                stale_key.get_or_insert(key.fingerprint().to_hex());
                continue;
            }
            match sig.verify_message(key, signed) {
                Ok(()) => {
                    return SignatureStatus::Good {
                        key: key.fingerprint().to_hex(),
                    };
                }
                Err(e) => {
                    first_bad.get_or_insert((key.fingerprint().to_hex(), e.to_string()));
                }
            }
        }
    }
    match (first_bad, stale_key) {
        (Some((key, reason)), _) => SignatureStatus::Bad { key, reason },
        (None, Some(key)) => rejected(format!(
            "the signing key `{key}` has expired or been revoked since"
        )),
        (None, None) => SignatureStatus::UnknownKey {
            issuers: issuer_names,
        },
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count since 1970-01-01 (proleptic Gregorian; the inverse
/// of `days_from_civil`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parse `[Day, ]DD Mon YYYY HH:MM:SS ZONE` (zone `UTC`, `GMT`, `Z` or `+hhmm`/`-hhmm`).
#[must_use]
pub fn parse_rfc2822(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = match s.split_once(',') {
        Some((_, rest)) => rest.trim_start(),
        None => s,
    };
    let mut parts = s.split_whitespace();
    let day: i64 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = i64::try_from(
        MONTHS
            .iter()
            .position(|m| m.eq_ignore_ascii_case(month_name))?,
    )
    .ok()?
        + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let hour: i64 = hms.next()?.parse().ok()?;
    let minute: i64 = hms.next()?.parse().ok()?;
    let second: i64 = hms.next().map_or(Some(0), |v| v.parse().ok())?;
    let zone = parts.next()?;
    if parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    let offset = match zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let v: i64 = z[1..].parse().ok()?;
            let minutes = (v / 100) * 60 + v % 100;
            if z.starts_with('-') {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    if !(1..=31).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..=60).contains(&second)
        || !(1..=9999).contains(&year)
    {
        return None;
    }
    Some(
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
            - offset * 60,
    )
}

/// Format Unix seconds as `Sat, 08 Nov 2025 09:51:04 UTC`.
#[must_use]
pub fn format_rfc2822(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = WEEKDAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let month = MONTHS[usize::try_from(m - 1).unwrap_or(0)];
    format!(
        "{weekday}, {d:02} {month} {y:04} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Debian\nLabel: Debian\nSuite: testing\nCodename: trixie\n\
        Date: Sat, 08 Nov 2025 09:51:04 UTC\nValid-Until: Sat, 15 Nov 2025 09:51:04 UTC\n\
        Acquire-By-Hash: yes\nArchitectures: amd64 arm64\nComponents: main contrib\n\
        Description: x\nSHA256:\n \
        0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 123 main/binary-amd64/Packages.xz\n \
        fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210 456 main/binary-amd64/Packages\n";

    #[test]
    fn parse_release_fields() {
        let r = parse_release(RELEASE, 1).unwrap();
        assert_eq!(r.codename.as_deref(), Some("trixie"));
        assert!(r.serves("trixie") && r.serves("testing") && !r.serves("bookworm"));
        assert!(r.acquire_by_hash);
        assert_eq!(r.architectures, ["amd64", "arm64"]);
        assert_eq!(r.components, ["main", "contrib"]);
        assert_eq!(r.sha256.len(), 2);
        assert_eq!(r.sha256["main/binary-amd64/Packages.xz"].size, 123);
        assert_eq!(r.date.unix_seconds, 1_762_595_464);
    }

    #[test]
    fn parse_release_errors() {
        let no_sha = RELEASE.split("SHA256:").next().unwrap();
        assert!(matches!(
            parse_release(no_sha, 1),
            Err(ReleaseError::MissingField { field: "SHA256" })
        ));
        let no_date = RELEASE.replace("Date: Sat, 08 Nov 2025 09:51:04 UTC\n", "");
        assert!(matches!(
            parse_release(&no_date, 1),
            Err(ReleaseError::MissingField { field: "Date" })
        ));
        let bad = RELEASE.replace(" 123 ", " x12 ");
        let err = parse_release(&bad, 10).unwrap_err();
        assert!(
            matches!(err, ReleaseError::Malformed { line: 21, .. }),
            "{err:?}"
        );
        let traversal = RELEASE.replace("main/binary-amd64/Packages\n", "../x\n");
        assert!(matches!(
            parse_release(&traversal, 1),
            Err(ReleaseError::Malformed { .. })
        ));
        let bad_date = RELEASE.replace("Sat, 08 Nov", "Sat, 08 Foo");
        assert!(matches!(
            parse_release(&bad_date, 1),
            Err(ReleaseError::Malformed { line: 5, .. })
        ));
    }

    #[test]
    fn valid_until() {
        let r = parse_release(RELEASE, 1).unwrap();
        let before = UNIX_EPOCH + Duration::from_secs(1_762_595_464);
        r.check_valid_until(before).unwrap();
        let after = before + Duration::from_secs(8 * 86_400);
        let err = r.check_valid_until(after).unwrap_err();
        assert!(matches!(err, ReleaseError::Expired { .. }));
        assert_eq!(
            err.to_string(),
            "release expired: `Valid-Until: Sat, 15 Nov 2025 09:51:04 UTC` is before now (`Sun, 16 Nov 2025 09:51:04 UTC`)"
        );
    }

    #[test]
    fn dates_round_trip() {
        for t in [0_i64, 951_782_400, 1_762_595_464, 4_102_444_800] {
            assert_eq!(parse_rfc2822(&format_rfc2822(t)), Some(t));
        }
        assert_eq!(
            parse_rfc2822("08 Nov 2025 10:51:04 +0100"),
            Some(1_762_595_464)
        );
        assert_eq!(
            parse_rfc2822("Sat, 08 Nov 2025 09:51 UTC"),
            Some(1_762_595_460)
        );
        assert_eq!(parse_rfc2822("Sat, 08 Nov 2025 09:51:04 CET"), None);
        assert_eq!(parse_rfc2822("Sat, 32 Nov 2025 09:51:04 UTC"), None);
        assert_eq!(parse_rfc2822(""), None);
    }

    fn signed(body: &str) -> String {
        format!("{BEGIN_SIGNED}\nHash: SHA512\n\n{body}{BEGIN_SIGNATURE}\n\nabc\n{END_SIGNATURE}\n")
    }

    #[test]
    fn split_canonicalizes() {
        let c = split_cleartext(signed("A: b  \r\n- -dash\t\nC: d\n").as_bytes()).unwrap();
        assert_eq!(c.hash_headers, ["SHA512"]);
        assert_eq!(c.text, "A: b\n-dash\nC: d\n");
        assert_eq!(c.signed_bytes, b"A: b\r\n-dash\r\nC: d");
        assert_eq!(c.first_text_line, 4);
        assert!(c.signature_armor.ends_with("-----END PGP SIGNATURE-----\n"));
    }

    #[test]
    fn split_errors() {
        assert!(matches!(
            split_cleartext(RELEASE.as_bytes()),
            Err(ReleaseError::Unsigned)
        ));
        assert!(matches!(split_cleartext(b""), Err(ReleaseError::Unsigned)));
        let undashed = signed("A: b\n-x\n");
        assert!(matches!(
            split_cleartext(undashed.as_bytes()),
            Err(ReleaseError::Malformed { line: 5, .. })
        ));
        let trailing = format!("{}Extra: unsigned\n", signed("A: b\n"));
        assert!(matches!(
            split_cleartext(trailing.as_bytes()),
            Err(ReleaseError::Malformed { .. })
        ));
        let header = format!("{BEGIN_SIGNED}\nComment: x\n\nA: b\n");
        assert!(matches!(
            split_cleartext(header.as_bytes()),
            Err(ReleaseError::Malformed { line: 2, .. })
        ));
        let no_sig = format!("{BEGIN_SIGNED}\nHash: SHA256\n\nA: b\n");
        assert!(matches!(
            split_cleartext(no_sig.as_bytes()),
            Err(ReleaseError::Malformed { .. })
        ));
        assert!(matches!(
            split_cleartext(b"\xff\xfe"),
            Err(ReleaseError::Malformed { line: 1, .. })
        ));
    }

    #[test]
    fn mutated_inputs_never_panic() {
        // The `inrelease` fuzz target does this at scale.
        let base = signed(RELEASE).into_bytes();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..2000 {
            let mut bytes = base.clone();
            for _ in 0..1 + round % 3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = usize::try_from(seed % bytes.len() as u64).unwrap();
                bytes[i] = [b'\n', b'-', b' ', b':', b'\r', 0xff, b'x'][(seed >> 40) as usize % 7];
            }
            if let Ok(c) = split_cleartext(&bytes) {
                let _ = parse_release(&c.text, c.first_text_line);
            }
        }
    }

    #[test]
    fn keyring_errors() {
        assert!(matches!(
            Keyring::from_file(Path::new("/nonexistent/keyring.gpg")),
            Err(ReleaseError::KeyringIo { .. })
        ));
        assert!(matches!(
            Keyring::from_bytes(b"not a key", Path::new("<memory>")),
            Err(ReleaseError::KeyringInvalid { .. })
        ));
    }

    #[test]
    fn hex() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
