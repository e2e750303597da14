//! The appliance's software bill of materials: an SPDX 2.3 JSON document written by every
//! build (`<name>-<version>.spdx.json` beside the images, and `/jeos/sbom.spdx.json` on the
//! ESP).
//!
//! One SPDX package per installed Debian package (name, version, the `.deb`'s SHA-256, a
//! `pkg:deb` purl, the licences declared in its machine-readable `copyright` file, DEP-5),
//! one for the kernel, one for jeos itself (guest-init, PID 1) and one for the appliance
//! that `DESCRIBES` and `CONTAINS` them. Deterministic: the creation time is
//! `SOURCE_DATE_EPOCH`, the namespace is derived from the lock's hash.
//!
//! Plan only: [`render_spdx`] and [`licenses_from_copyright`] are pure.

use std::collections::{BTreeMap, BTreeSet};

use package_resolver::lock::LockFile;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Inputs of [`render_spdx`].
#[derive(Debug, Clone)]
pub struct SbomInput<'a> {
    /// Appliance name.
    pub name: &'a str,
    /// Appliance version.
    pub version: &'a str,
    /// The lock the image was built from.
    pub lock: &'a LockFile,
    /// Package name -> SPDX licence expression (from its copyright file).
    pub licenses: &'a BTreeMap<String, String>,
    /// Kernel release (`6.12.118+deb13-amd64`).
    pub kernel_release: &'a str,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: i64,
    /// SHA-256 (hex) of the guest-init binary in the image.
    pub guest_init_sha256: String,
}

/// Debian short licence names (copyright-format 1.0 §7.2) with their SPDX identifiers.
const DEBIAN_TO_SPDX: [(&str, &str); 28] = [
    ("apache-2.0", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-2.0", "Artistic-2.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("cc0-1.0", "CC0-1.0"),
    ("expat", "MIT"),
    ("mit", "MIT"),
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("isc", "ISC"),
    ("zlib", "Zlib"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("openssl", "OpenSSL"),
    ("public-domain", "LicenseRef-public-domain"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
];

/// An SPDX identifier for one Debian licence name; unknown names become `LicenseRef-*`.
fn spdx_id(debian: &str) -> String {
    let lower = debian.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix(" with openssl exception")
        .unwrap_or(&lower);
    if let Some((_, id)) = DEBIAN_TO_SPDX.iter().find(|(d, _)| *d == lower) {
        return (*id).to_owned();
    }
    let clean: String = debian
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("LicenseRef-{}", clean.trim_matches('-'))
}

/// The licences of a machine-readable (DEP-5) copyright file as one SPDX expression
/// (`A AND B`, `(A OR B)` for a dual licence), or `None` when the file is not in that
/// format or names none.
#[must_use]
pub fn licenses_from_copyright(text: &str) -> Option<String> {
    let first = text.lines().next()?;
    if !first.starts_with("Format:") || !first.contains("copyright-format") {
        return None;
    }
    let mut terms = BTreeSet::new();
    for line in text.lines() {
        let Some(value) = line.strip_prefix("License:") else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let alternatives: Vec<String> = value
            .split(" or ")
            .map(|part| {
                let all: Vec<String> = part.split(" and ").map(spdx_id).collect();
                all.join(" AND ")
            })
            .collect();
        let term = if alternatives.len() > 1 {
            format!("({})", alternatives.join(" OR "))
        } else {
            alternatives.join("")
        };
        terms.insert(term);
    }
    if terms.is_empty() {
        return None;
    }
    Some(terms.into_iter().collect::<Vec<_>>().join(" AND "))
}

/// `SPDXRef-` identifiers allow letters, digits, `.` and `-`.
fn spdx_ref(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{prefix}-{clean}")
}

/// Percent-encodes a purl component (RFC 3986 unreserved characters stay).
fn purl_escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn iso8601(epoch: i64) -> String {
    let (year, month, day) = package_resolver::release::civil_from_days(epoch.div_euclid(86_400));
    let rest = epoch.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

/// The SPDX 2.3 document (see the module documentation).
#[must_use]
pub fn render_spdx(input: &SbomInput<'_>) -> Value {
    let lock = input.lock;
    let distro = format!("debian-{}", lock.source.codename);
    let mut packages = Vec::new();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Appliance",
    })];
    let mut extracted = BTreeSet::new();
    packages.push(json!({
        "SPDXID": "SPDXRef-Appliance",
        "name": input.name,
        "versionInfo": input.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING_SYSTEM",
        "comment": format!("jeos appliance built from Debian {} ({})", lock.source.codename,
            lock.source.releases.iter().map(|r| r.suite.as_str()).collect::<Vec<_>>().join(", ")),
    }));
    for p in &lock.packages {
        let id = spdx_ref("Package", &p.name);
        let license = input
            .licenses
            .get(&p.name)
            .cloned()
            .unwrap_or_else(|| "NOASSERTION".to_owned());
        for term in license.split([' ', '(', ')']) {
            if term.starts_with("LicenseRef-") {
                extracted.insert(term.to_owned());
            }
        }
        let purl = format!(
            "pkg:deb/debian/{}@{}?arch={}&distro={distro}",
            purl_escape(&p.name),
            purl_escape(&p.version.to_string()),
            purl_escape(&p.arch)
        );
        let kernel = crate::resolve::is_kernel_package(lock, p);
        let mut package = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version.to_string(),
            "supplier": "Organization: Debian",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "packageFileName": p.filename,
            "checksums": [{ "algorithm": "SHA256", "checksumValue": p.sha256 }],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license,
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }],
            "primaryPackagePurpose": if kernel { "OPERATING_SYSTEM" } else { "LIBRARY" },
        });
        if let Some(suite) = &p.suite {
            package["comment"] = json!(format!("from the Debian suite {suite}"));
        }
        packages.push(package);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Appliance",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    packages.push(json!({
        "SPDXID": "SPDXRef-Kernel",
        "name": "linux",
        "versionInfo": input.kernel_release,
        "supplier": "Organization: Debian",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "GPL-2.0-only",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING_SYSTEM",
        "comment": "the kernel booted from the EFI system partition",
    }));
    packages.push(json!({
        "SPDXID": "SPDXRef-jeos",
        "name": "jeos",
        "versionInfo": env!("CARGO_PKG_VERSION"),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [{ "algorithm": "SHA256", "checksumValue": input.guest_init_sha256 }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "Apache-2.0",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "APPLICATION",
        "comment": "jeos guest-init, the appliance's PID 1 (checksum of the binary)",
    }));
    for id in ["SPDXRef-Kernel", "SPDXRef-jeos"] {
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Appliance",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let namespace_hash: String = Sha256::digest(lock.to_toml_string().as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", input.name, input.version),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/jeos/{}-{}-{namespace_hash}",
            input.name, input.version
        ),
        "creationInfo": {
            "created": iso8601(input.epoch),
            "creators": [format!("Tool: jeos-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(
            extracted
                .into_iter()
                .map(|id| {
                    json!({
                        "licenseId": id,
                        "extractedText": "see the package's /usr/share/doc/<package>/copyright",
                    })
                })
                .collect(),
        );
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz_seed::write_seed;

    #[test]
    fn dep5_licences_become_one_spdx_expression() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: *\nCopyright: me\nLicense: BSD-2-clause\n\nFiles: debian/*\nLicense: GPL-2+ or Artistic\n\nLicense: BSD-2-clause\n text\n";
        assert_eq!(
            licenses_from_copyright(text).as_deref(),
            Some("(GPL-2.0-or-later OR Artistic-1.0-Perl) AND BSD-2-Clause")
        );
        assert_eq!(licenses_from_copyright("This is free software.\n"), None);
        let odd = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nLicense: Custom licence!\n";
        write_seed("copyright", "dep5", text.as_bytes());
        write_seed("copyright", "odd", odd.as_bytes());
        write_seed("copyright", "free", b"This is free software.\n");
        assert_eq!(
            licenses_from_copyright(odd).as_deref(),
            Some("LicenseRef-Custom-licence")
        );
    }

    #[test]
    fn dates_and_purls_are_formatted() {
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(purl_escape("1:2.3+dfsg-1"), "1%3A2.3%2Bdfsg-1");
        assert_eq!(
            spdx_ref("Package", "libc6:amd64"),
            "SPDXRef-Package-libc6-amd64"
        );
    }
}
