//! OVF package signature (`.cert`, DSP0243 section 5.2), as VMware ovftool writes it:
//!
//! ```text
//! SHA256(<name>.mf)= <hex RSA PKCS#1 v1.5 signature of the manifest bytes>
//! -----BEGIN CERTIFICATE-----
//! ...
//! -----END CERTIFICATE-----
//! ```
//! The key is RSA in PEM, PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE
//! KEY`). PKCS#1 v1.5 signatures are deterministic, so the `.cert` is reproducible.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha2::Sha256;

use crate::ova::atomic::to_hex;

/// Errors of package signing.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key is neither a PKCS#8 nor a PKCS#1 RSA private key in PEM.
    #[error("the signing key is not an RSA private key in PEM (PKCS#8 or PKCS#1)")]
    Key,
    /// The certificate text has no PEM certificate block.
    #[error("the certificate has no `-----BEGIN CERTIFICATE-----` block")]
    Certificate,
    /// The manifest name cannot appear in a certificate line.
    #[error("manifest name `{name}` is not a plain `.mf` file name")]
    ManifestName {
        /// The name.
        name: String,
    },
    /// RSA signing failed.
    #[error("rsa signing failed")]
    Rsa {
        /// The cause.
        #[source]
        source: rsa::signature::Error,
    },
}

/// Parses an RSA private key in PEM (PKCS#8 first, then PKCS#1).
pub fn parse_private_key(pem: &str) -> Result<RsaPrivateKey, SignError> {
    RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| SignError::Key)
}

/// Extracts the PEM certificate blocks (chain order kept) from `pem`.
fn certificate_blocks(pem: &str) -> Result<String, SignError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = String::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start..];
        let end = after.find(END).ok_or(SignError::Certificate)? + END.len();
        for line in after[..end].lines() {
            out.push_str(line.trim_end_matches('\r'));
            out.push('\n');
        }
        rest = &after[end..];
    }
    if out.is_empty() {
        return Err(SignError::Certificate);
    }
    Ok(out)
}

/// Signs the manifest bytes and returns the `.cert` text.
pub fn sign_manifest(
    manifest: &[u8],
    manifest_name: &str,
    key_pem: &str,
    certificate_pem: &str,
) -> Result<String, SignError> {
    if !manifest_name.ends_with(".mf") || manifest_name.contains(['/', '\\', '(', ')', '\n']) {
        return Err(SignError::ManifestName {
            name: manifest_name.to_owned(),
        });
    }
    let key = parse_private_key(key_pem)?;
    let certs = certificate_blocks(certificate_pem)?;
    let signer = SigningKey::<Sha256>::new(key);
    let signature = signer
        .try_sign(manifest)
        .map_err(|source| SignError::Rsa { source })?;
    Ok(format!(
        "SHA256({manifest_name})= {}\n{certs}",
        to_hex(&signature.to_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_key_cert_and_name() {
        let err = sign_manifest(b"x", "a.mf", "not a key", "").unwrap_err();
        assert!(matches!(err, SignError::Key));
        assert!(matches!(
            certificate_blocks("nothing"),
            Err(SignError::Certificate)
        ));
        assert!(matches!(
            certificate_blocks("-----BEGIN CERTIFICATE-----\nabc"),
            Err(SignError::Certificate)
        ));
        let err = sign_manifest(b"x", "../a.mf", "", "").unwrap_err();
        assert!(matches!(err, SignError::ManifestName { .. }));
    }

    #[test]
    fn certificate_blocks_keep_chain_and_normalise_newlines() {
        let pem = "junk\r\n-----BEGIN CERTIFICATE-----\r\nAAA\r\n-----END CERTIFICATE-----\r\n\
                   -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certificate_blocks(pem).unwrap(),
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n"
        );
    }
}
