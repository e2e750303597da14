//! OVF manifest (`.mf`, DSP0243 section 5.1): one `ALG(<file>)= <hex digest>` line per
//! file of the package, the `.ovf` first and then the References in order. SHA-256 is
//! the default (OVF 2.0 and ovftool 4 default); SHA-1 for very old importers, SHA-512
//! on request.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::ova::atomic::{from_hex, to_hex};

/// Errors of manifest digesting, parsing and verification.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading a file failed.
    #[error("i/o error on `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A manifest line does not have the `ALG(file)= hex` form.
    #[error("manifest line {line} is malformed: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A file's digest differs from the manifest.
    #[error("digest of `{file}` does not match the manifest")]
    Mismatch {
        /// The file name as written in the manifest.
        file: String,
    },
    /// A manifest file name would leave the package directory.
    #[error("manifest names `{file}`, which is not a plain file name")]
    UnsafeName {
        /// The file name.
        file: String,
    },
}

/// Digest algorithm of a manifest line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum DigestAlgorithm {
    /// SHA-1 (OVF 1.x default; only for old importers).
    Sha1,
    /// SHA-256.
    #[default]
    Sha256,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// The spelling used in manifest and certificate lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha512 => "SHA512",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s {
            "SHA1" => Some(Self::Sha1),
            "SHA256" => Some(Self::Sha256),
            "SHA512" => Some(Self::Sha512),
            _ => None,
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// One manifest line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// File name inside the package.
    pub file: String,
    /// Algorithm.
    pub algorithm: DigestAlgorithm,
    /// Raw digest bytes.
    pub digest: Vec<u8>,
}

impl ManifestEntry {
    /// The digest in lowercase hex.
    pub fn hex(&self) -> String {
        to_hex(&self.digest)
    }
}

enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Digests a file in 1 MiB chunks.
pub fn digest_file(path: &Path, algorithm: DigestAlgorithm) -> Result<Vec<u8>, ManifestError> {
    let io_err = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = match algorithm {
        DigestAlgorithm::Sha1 => Hasher::Sha1(Sha1::new()),
        DigestAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        DigestAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        match &mut hasher {
            Hasher::Sha1(h) => h.update(&buf[..n]),
            Hasher::Sha256(h) => h.update(&buf[..n]),
            Hasher::Sha512(h) => h.update(&buf[..n]),
        }
    }
    Ok(match hasher {
        Hasher::Sha1(h) => h.finalize().to_vec(),
        Hasher::Sha256(h) => h.finalize().to_vec(),
        Hasher::Sha512(h) => h.finalize().to_vec(),
    })
}

/// Digests `files` (in order) in `dir`.
pub fn build_manifest(
    dir: &Path,
    files: &[&str],
    algorithm: DigestAlgorithm,
) -> Result<Vec<ManifestEntry>, ManifestError> {
    files
        .iter()
        .map(|f| {
            check_name(f)?;
            Ok(ManifestEntry {
                file: (*f).to_owned(),
                algorithm,
                digest: digest_file(&dir.join(f), algorithm)?,
            })
        })
        .collect()
}

/// Renders the manifest text: `SHA256(name)= hex` lines, each ending in `\n`.
pub fn render_manifest(entries: &[ManifestEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}({})= {}\n", e.algorithm.name(), e.file, e.hex()))
        .collect()
}

fn check_name(file: &str) -> Result<(), ManifestError> {
    let bad = file.is_empty()
        || file == "."
        || file == ".."
        || file.contains(['/', '\\', '\0', '\n', '\r', '(', ')']);
    if bad {
        return Err(ManifestError::UnsafeName {
            file: file.to_owned(),
        });
    }
    Ok(())
}

/// Parses a manifest (tolerates `\r\n` and blank lines; digests in either case).
pub fn parse_manifest(text: &str) -> Result<Vec<ManifestEntry>, ManifestError> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim_end_matches('\r');
        if raw.trim().is_empty() {
            continue;
        }
        let malformed = |reason| ManifestError::Malformed { line, reason };
        let open = raw.find('(').ok_or_else(|| malformed("no `(`"))?;
        let close = raw.rfind(")= ").ok_or_else(|| malformed("no `)= `"))?;
        if close < open {
            return Err(malformed("`)= ` before `(`"));
        }
        let algorithm = DigestAlgorithm::from_name(&raw[..open])
            .ok_or_else(|| malformed("unknown algorithm (expected SHA1, SHA256 or SHA512)"))?;
        let file = &raw[open + 1..close];
        check_name(file)?;
        let digest =
            from_hex(raw[close + 3..].trim()).ok_or_else(|| malformed("digest is not hex"))?;
        if digest.len() != algorithm.digest_len() {
            return Err(malformed("digest length does not match the algorithm"));
        }
        entries.push(ManifestEntry {
            file: file.to_owned(),
            algorithm,
            digest,
        });
    }
    Ok(entries)
}

/// Recomputes every digest of `text` over the files in `dir`.
pub fn verify_manifest(text: &str, dir: &Path) -> Result<Vec<ManifestEntry>, ManifestError> {
    let entries = parse_manifest(text)?;
    for e in &entries {
        if digest_file(&dir.join(&e.file), e.algorithm)? != e.digest {
            return Err(ManifestError::Mismatch {
                file: e.file.clone(),
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_and_format() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.ovf"), b"abc").unwrap();
        for (alg, hex) in [
            (
                DigestAlgorithm::Sha1,
                "a9993e364706816aba3e25717850c26c9cd0d89d",
            ),
            (
                DigestAlgorithm::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
        ] {
            let e = build_manifest(dir.path(), &["a.ovf"], alg).unwrap();
            let text = render_manifest(&e);
            assert_eq!(text, format!("{}(a.ovf)= {hex}\n", alg.name()));
            assert_eq!(verify_manifest(&text, dir.path()).unwrap(), e);
        }
        let e = build_manifest(dir.path(), &["a.ovf"], DigestAlgorithm::Sha512).unwrap();
        assert_eq!(e[0].digest.len(), 64);
    }

    #[test]
    fn verify_detects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.ovf"), b"abc").unwrap();
        let text = render_manifest(
            &build_manifest(dir.path(), &["a.ovf"], DigestAlgorithm::Sha256).unwrap(),
        );
        std::fs::write(dir.path().join("a.ovf"), b"abd").unwrap();
        let err = verify_manifest(&text, dir.path()).unwrap_err();
        assert!(matches!(err, ManifestError::Mismatch { file } if file == "a.ovf"));
    }

    #[test]
    fn parse_rejects_malformed_lines() {
        let ok = "SHA256(x.vmdk)= ".to_owned() + &"0".repeat(64);
        assert_eq!(parse_manifest(&format!("{ok}\r\n\n")).unwrap().len(), 1);
        for (text, line) in [
            ("MD5(x)= 00", 1),
            ("\nSHA256 x= 00", 2),
            ("SHA256(x)= zz", 1),
            ("SHA256(x)= 00", 1),
        ] {
            let err = parse_manifest(text).unwrap_err();
            assert!(
                matches!(err, ManifestError::Malformed { line: l, .. } if l == line),
                "{text}: {err}"
            );
        }
        let err = parse_manifest(&format!("SHA1(../etc/passwd)= {}", "0".repeat(40))).unwrap_err();
        assert!(matches!(err, ManifestError::UnsafeName { .. }));
    }
}
