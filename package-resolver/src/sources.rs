//! Find the Debian mirror in the host's apt configuration.
//!
//! Reads, under a root directory (`/` on a real host, a temp dir in tests):
//! - `etc/apt/sources.list` and `etc/apt/sources.list.d/*.list`: one-line format,
//!   `deb [opt=value ...] uri suite [component...]` (`sources.list(5)`, "ONE-LINE-STYLE");
//! - `etc/apt/sources.list.d/*.sources`: deb822 format with `Types`, `URIs`, `Suites`,
//!   `Components`, `Signed-By`, `Enabled` ("DEB822-STYLE").
//!
//! Files are read in apt's order: `sources.list` first, then `sources.list.d` sorted by name;
//! files with other extensions (`.disabled`, `.save`, ...) are ignored as apt does.
//!
//! [`AptSources::mirror_for_suite`] picks the entry that serves the Debian archive itself
//! (not `debian-security`, ports, debug or third-party repositories): an enabled `deb` entry
//! with component `main` whose URI path ends in `/debian` or which is signed by the Debian
//! archive keyring. An entry listing the requested suite wins; otherwise the first Debian
//! archive entry's URI is reused for the requested suite (a bookworm host building a trixie
//! appliance). No host name is ever assumed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::deb822;
use crate::release::{Keyring, ReleaseError};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    /// A file or directory could not be read.
    #[error("cannot read `{path}`")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A one-line entry is malformed.
    #[error("{path}:{line}: {reason}")]
    Syntax {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A `.sources` file is not valid deb822.
    #[error("`{path}` is not a valid deb822 `.sources` file")]
    Deb822 {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: deb822::Deb822Error,
    },
    /// A deb822 stanza lacks a required field.
    #[error("{path}:{line}: stanza has no `{field}` field")]
    MissingField {
        /// File.
        path: PathBuf,
        /// 1-based line of the stanza.
        line: usize,
        /// Field name.
        field: &'static str,
    },
    /// No entry serves the Debian archive.
    #[error(
        "no Debian archive entry for suite `{suite}` in the apt configuration (read: {files})\nhint: set `source.mirror` in the recipe or pass `--mirror`",
        files = list_files(.files_read)
    )]
    NoDebianMirror {
        /// Requested suite.
        suite: String,
        /// Every file that was read.
        files_read: Vec<PathBuf>,
    },
    /// No entry names the Debian security archive.
    #[error(
        "no Debian security archive entry for `{suite}` in the apt configuration (read: {files})\nhint: set `security-mirror` in the recipe's `[source]`, or `security = false` to build without security updates",
        files = list_files(.files_read)
    )]
    NoSecurityMirror {
        /// Requested suite (`trixie-security`).
        suite: String,
        /// Every file that was read.
        files_read: Vec<PathBuf>,
    },
}

fn list_files(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "no apt source files found".to_owned();
    }
    let mut out = String::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "`{}`", f.display());
    }
    out
}

/// `deb` (binary packages) or `deb-src`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    /// Binary packages.
    Deb,
    /// Source packages.
    DebSrc,
}

/// How the repository's signatures are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// Keyring files (or fingerprints, kept verbatim).
    Keyrings(Vec<String>),
    /// An armored key embedded in a `.sources` file.
    Inline(String),
}

impl SignedBy {
    fn mentions_debian_archive_keyring(&self) -> bool {
        match self {
            Self::Keyrings(k) => k.iter().any(|k| k.contains("debian-archive-keyring")),
            Self::Inline(_) => false,
        }
    }
}

/// One repository entry (a one-line entry or one deb822 stanza, expanded per type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// `deb` or `deb-src`.
    pub kind: SourceType,
    /// Repository URIs (a one-line entry has one).
    pub uris: Vec<String>,
    /// Suites (codenames or `stable`-like names; a trailing `/` marks a flat repository).
    pub suites: Vec<String>,
    /// Components.
    pub components: Vec<String>,
    /// `signed-by` option / `Signed-By` field.
    pub signed_by: Option<SignedBy>,
    /// `false` for `Enabled: no` stanzas.
    pub enabled: bool,
    /// File it came from.
    pub file: PathBuf,
    /// 1-based line of the entry (or stanza).
    pub line: usize,
}

/// The repository chosen for a suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorChoice {
    /// Base URI of the archive (without trailing `/`), e.g. `http://mirror.invalid/debian`.
    pub uri: String,
    /// Requested suite.
    pub suite: String,
    /// Keyring from the entry, if any.
    pub signed_by: Option<SignedBy>,
    /// `true` when the entry listed the suite; `false` when its URI was reused.
    pub suite_listed: bool,
    /// File and line of the chosen entry.
    pub file: PathBuf,
    /// 1-based line of the chosen entry.
    pub line: usize,
}

impl MirrorChoice {
    /// The keyring file to verify this mirror with: the entry's first `Signed-By` file, or
    /// `default` (normally [`crate::release::DEBIAN_ARCHIVE_KEYRING`]) when the entry names
    /// none or embeds the key inline.
    #[must_use]
    pub fn keyring_path(&self, default: &Path) -> PathBuf {
        match &self.signed_by {
            Some(SignedBy::Keyrings(k)) => k
                .iter()
                .find(|k| k.starts_with('/'))
                .map_or_else(|| default.to_owned(), PathBuf::from),
            _ => default.to_owned(),
        }
    }

    /// Load the keyring for this mirror: an inline `Signed-By` key block, else
    /// [`Self::keyring_path`].
    pub fn load_keyring(&self, default: &Path) -> Result<Keyring, ReleaseError> {
        match &self.signed_by {
            Some(SignedBy::Inline(text)) => {
                // In deb822, a line holding only `.` stands for an empty line.
                let armored = text
                    .lines()
                    .map(|l| if l.trim() == "." { "" } else { l })
                    .collect::<Vec<_>>()
                    .join("\n");
                Keyring::from_bytes(armored.as_bytes(), &self.file)
            }
            _ => Keyring::from_file(&self.keyring_path(default)),
        }
    }
}

/// Every apt source entry of a root directory.
#[derive(Debug, Clone, Default)]
pub struct AptSources {
    /// Entries in apt's order.
    pub entries: Vec<SourceEntry>,
    /// Files that were read, in order.
    pub files_read: Vec<PathBuf>,
}

impl AptSources {
    /// Read `root/etc/apt/sources.list` and `root/etc/apt/sources.list.d/*.{list,sources}`.
    /// Missing files and directories are fine (they give no entries).
    pub fn load(root: &Path) -> Result<Self, SourcesError> {
        let mut out = Self::default();
        let main = root.join("etc/apt/sources.list");
        if let Some(text) = read_optional(&main)? {
            out.entries.extend(parse_one_line(&text, &main)?);
            out.files_read.push(main);
        }
        let dir = root.join("etc/apt/sources.list.d");
        let mut names = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(rd) => {
                for entry in rd {
                    let entry = entry.map_err(|source| SourcesError::Io {
                        path: dir.clone(),
                        source,
                    })?;
                    names.push(entry.path());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(SourcesError::Io { path: dir, source }),
        }
        names.sort();
        for path in names {
            let ext = path.extension().and_then(|e| e.to_str());
            let is_list = ext == Some("list");
            let is_sources = ext == Some("sources");
            if !is_list && !is_sources {
                continue;
            }
            let Some(text) = read_optional(&path)? else {
                continue;
            };
            if is_list {
                out.entries.extend(parse_one_line(&text, &path)?);
            } else {
                out.entries.extend(parse_deb822(&text, &path)?);
            }
            out.files_read.push(path);
        }
        Ok(out)
    }

    /// The Debian archive entry to use for `suite` (see the module documentation).
    pub fn mirror_for_suite(&self, suite: &str) -> Result<MirrorChoice, SourcesError> {
        let candidates = || {
            self.entries
                .iter()
                .filter(|e| is_debian_archive(e))
                .flat_map(|e| e.uris.iter().map(move |u| (e, u)))
                .filter(|(_, u)| !is_special_archive_uri(u))
        };
        let listed = candidates().find(|(e, _)| e.suites.iter().any(|s| s == suite));
        let chosen = listed
            .map(|c| (c, true))
            .or_else(|| candidates().next().map(|c| (c, false)));
        match chosen {
            Some(((entry, uri), suite_listed)) => Ok(MirrorChoice {
                uri: uri.trim_end_matches('/').to_owned(),
                suite: suite.to_owned(),
                signed_by: entry.signed_by.clone(),
                suite_listed,
                file: entry.file.clone(),
                line: entry.line,
            }),
            None => Err(SourcesError::NoDebianMirror {
                suite: suite.to_owned(),
                files_read: self.files_read.clone(),
            }),
        }
    }
}

impl AptSources {
    /// The Debian security archive entry to use for `<suite>-security`: an enabled `deb`
    /// entry with component `main` that lists a `*-security` suite or whose URI ends in
    /// `/debian-security`. One listing `<suite>-security` itself wins; otherwise the first
    /// security entry's URI is reused (a bookworm host building a trixie appliance).
    pub fn security_mirror_for_suite(&self, suite: &str) -> Result<MirrorChoice, SourcesError> {
        let wanted = format!("{suite}-security");
        let candidates = || {
            self.entries
                .iter()
                .filter(|e| {
                    e.enabled
                        && e.kind == SourceType::Deb
                        && e.components.iter().any(|c| c == "main")
                })
                .flat_map(|e| e.uris.iter().map(move |u| (e, u)))
                .filter(|(e, u)| {
                    uri_path(u).rsplit('/').next() == Some("debian-security")
                        || e.suites.iter().any(|s| s.ends_with("-security"))
                })
        };
        let listed = candidates().find(|(e, _)| e.suites.contains(&wanted));
        let chosen = listed
            .map(|c| (c, true))
            .or_else(|| candidates().next().map(|c| (c, false)));
        match chosen {
            Some(((entry, uri), suite_listed)) => Ok(MirrorChoice {
                uri: uri.trim_end_matches('/').to_owned(),
                suite: wanted,
                signed_by: entry.signed_by.clone(),
                suite_listed,
                file: entry.file.clone(),
                line: entry.line,
            }),
            None => Err(SourcesError::NoSecurityMirror {
                suite: wanted,
                files_read: self.files_read.clone(),
            }),
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, SourcesError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SourcesError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Path part of a URI (`http://h/a/b/` -> `/a/b`), without trailing slashes.
fn uri_path(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.trim_end_matches('/')
}

/// The last path segment names the archive: `debian` is the main archive; `debian-security`,
/// `debian-ports`, `debian-debug`, ... are special archives that never serve `trixie` itself.
fn is_special_archive_uri(uri: &str) -> bool {
    let last = uri_path(uri).rsplit('/').next().unwrap_or("");
    last.starts_with("debian-") || last.ends_with("-security")
}

fn is_debian_archive(e: &SourceEntry) -> bool {
    let keyring = e
        .signed_by
        .as_ref()
        .is_some_and(SignedBy::mentions_debian_archive_keyring);
    let path_debian = e
        .uris
        .iter()
        .any(|u| uri_path(u).rsplit('/').next() == Some("debian"));
    e.enabled
        && e.kind == SourceType::Deb
        && e.components.iter().any(|c| c == "main")
        && e.suites.iter().all(|s| !s.ends_with('/'))
        && (keyring || path_debian)
}

/// Parse the one-line format. `path` is used in entries and errors.
pub fn parse_one_line(text: &str, path: &Path) -> Result<Vec<SourceEntry>, SourcesError> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let syntax = |reason: &str| SourcesError::Syntax {
            path: path.to_owned(),
            line,
            reason: reason.to_owned(),
        };
        let (kind_word, rest) = content
            .split_once(char::is_whitespace)
            .ok_or_else(|| syntax("expected `deb uri suite [component...]`"))?;
        let kind = match kind_word {
            "deb" => SourceType::Deb,
            "deb-src" => SourceType::DebSrc,
            other => return Err(syntax(&format!("unknown type `{other}`"))),
        };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(after) = rest.strip_prefix('[') {
            let end = after
                .find(']')
                .ok_or_else(|| syntax("option list `[` is not closed by `]`"))?;
            for option in after[..end].split_whitespace() {
                let (key, value) = option
                    .split_once('=')
                    .ok_or_else(|| syntax(&format!("option `{option}` has no `=`")))?;
                if key == "signed-by" {
                    signed_by = Some(SignedBy::Keyrings(
                        value.split(',').map(str::to_owned).collect(),
                    ));
                }
            }
            rest = after[end + 1..].trim_start();
        }
        let mut words = rest.split_whitespace();
        let uri = words.next().ok_or_else(|| syntax("missing URI"))?;
        let suite = words.next().ok_or_else(|| syntax("missing suite"))?;
        let components: Vec<String> = words.map(str::to_owned).collect();
        if components.is_empty() && !suite.ends_with('/') {
            return Err(syntax("missing component"));
        }
        out.push(SourceEntry {
            kind,
            uris: vec![uri.to_owned()],
            suites: vec![suite.to_owned()],
            components,
            signed_by,
            enabled: true,
            file: path.to_owned(),
            line,
        });
    }
    Ok(out)
}

/// Parse the deb822 `.sources` format. `path` is used in entries and errors.
pub fn parse_deb822(text: &str, path: &Path) -> Result<Vec<SourceEntry>, SourcesError> {
    let paragraphs = deb822::parse(text).map_err(|source| SourcesError::Deb822 {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for p in &paragraphs {
        let line = p.line();
        let required = |field: &'static str| {
            p.get(field).ok_or_else(|| SourcesError::MissingField {
                path: path.to_owned(),
                line,
                field,
            })
        };
        let words = |v: &str| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let types = words(required("Types")?);
        let uris = words(required("URIs")?);
        let suites = words(required("Suites")?);
        let components = p.get("Components").map(words).unwrap_or_default();
        let enabled = !p
            .get("Enabled")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("no"));
        let signed_by = p.get("Signed-By").map(|v| {
            if v.contains("-----BEGIN PGP") {
                SignedBy::Inline(v.to_owned())
            } else {
                SignedBy::Keyrings(words(v))
            }
        });
        for t in &types {
            let kind = match t.as_str() {
                "deb" => SourceType::Deb,
                "deb-src" => SourceType::DebSrc,
                other => {
                    return Err(SourcesError::Syntax {
                        path: path.to_owned(),
                        line,
                        reason: format!("unknown type `{other}`"),
                    });
                }
            };
            out.push(SourceEntry {
                kind,
                uris: uris.clone(),
                suites: suites.clone(),
                components: components.clone(),
                signed_by: signed_by.clone(),
                enabled,
                file: path.to_owned(),
                line,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PathBuf {
        PathBuf::from("/etc/apt/sources.list")
    }

    #[test]
    fn the_security_archive_is_found_for_another_release() {
        let text = "deb http://deb.invalid/debian bookworm main\n\
            deb http://sec.invalid/debian-security bookworm-security main\n";
        let sources = AptSources {
            entries: parse_one_line(text, Path::new("sources.list")).unwrap(),
            files_read: vec![],
        };
        let choice = sources.security_mirror_for_suite("trixie").unwrap();
        assert_eq!(choice.uri, "http://sec.invalid/debian-security");
        assert_eq!(choice.suite, "trixie-security");
        assert!(!choice.suite_listed);
        assert_eq!(choice.line, 2);
        let plain = AptSources {
            entries: parse_one_line(
                "deb http://deb.invalid/debian trixie main\n",
                Path::new("s"),
            )
            .unwrap(),
            files_read: vec![],
        };
        assert!(plain.security_mirror_for_suite("trixie").is_err());
    }

    #[test]
    fn one_line_with_options_and_comments() {
        let text = "# comment\n\
            deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.invalid/debian trixie main contrib # tail\n\
            deb-src http://mirror.invalid/debian trixie main\n\
            \n   # indented comment\n";
        let e = parse_one_line(text, &p()).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kind, SourceType::Deb);
        assert_eq!(e[0].uris, ["http://mirror.invalid/debian"]);
        assert_eq!(e[0].suites, ["trixie"]);
        assert_eq!(e[0].components, ["main", "contrib"]);
        assert_eq!(e[0].line, 2);
        assert!(
            e[0].signed_by
                .as_ref()
                .unwrap()
                .mentions_debian_archive_keyring()
        );
        assert_eq!(e[1].kind, SourceType::DebSrc);
    }

    #[test]
    fn one_line_errors_have_line_numbers() {
        let err = parse_one_line("\ndeb http://x.invalid/debian\n", &p()).unwrap_err();
        assert!(matches!(err, SourcesError::Syntax { line: 2, .. }), "{err}");
        let err = parse_one_line("deb [arch=amd64 http://x trixie main\n", &p()).unwrap_err();
        assert!(matches!(err, SourcesError::Syntax { line: 1, .. }));
        let err = parse_one_line("rpm http://x trixie main\n", &p()).unwrap_err();
        assert!(err.to_string().contains("unknown type `rpm`"));
        let err = parse_one_line("deb http://x trixie\n", &p()).unwrap_err();
        assert!(err.to_string().contains("missing component"));
    }

    #[test]
    fn deb822_stanzas() {
        let text = "Types: deb deb-src\n\
            # a comment between fields\n\
            URIs: http://a.invalid/debian http://b.invalid/debian\n\
            Suites: bookworm bookworm-updates\n\
            Components: main\n\
            Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
            \n\
            Types: deb\n\
            URIs: http://c.invalid/debian\n\
            Suites: trixie\n\
            Components: main\n\
            Enabled: no\n";
        let e = parse_deb822(text, Path::new("x.sources")).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].uris.len(), 2);
        assert_eq!(e[1].kind, SourceType::DebSrc);
        assert!(!e[2].enabled);
    }

    #[test]
    fn deb822_missing_field() {
        let err = parse_deb822("Types: deb\nSuites: x\n", Path::new("x.sources")).unwrap_err();
        assert!(matches!(
            err,
            SourcesError::MissingField { field: "URIs", .. }
        ));
    }

    #[test]
    fn inline_key_loads_as_keyring() {
        use sequoia_openpgp::serialize::SerializeInto;
        let (cert, _) = sequoia_openpgp::cert::CertBuilder::new()
            .add_userid("inline")
            .generate()
            .unwrap();
        let armored = String::from_utf8(cert.armored().to_vec().unwrap()).unwrap();
        let mut text = String::from(
            "Types: deb\nURIs: http://x.invalid/debian\nSuites: trixie\nComponents: main\nSigned-By:\n",
        );
        for line in armored.lines() {
            text.push(' ');
            text.push_str(if line.is_empty() { "." } else { line });
            text.push('\n');
        }
        let s = sources(parse_deb822(&text, Path::new("x.sources")).unwrap());
        let m = s.mirror_for_suite("trixie").unwrap();
        let keyring = m.load_keyring(Path::new("/nonexistent")).unwrap();
        assert_eq!(keyring.certs().len(), 1);
        assert_eq!(keyring.certs()[0].fingerprint(), cert.fingerprint());
    }

    #[test]
    fn deb822_inline_key() {
        let text = "Types: deb\nURIs: http://x.invalid/debian\nSuites: trixie\nComponents: main\n\
            Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n -----END PGP PUBLIC KEY BLOCK-----\n";
        let e = parse_deb822(text, Path::new("x.sources")).unwrap();
        assert!(matches!(e[0].signed_by, Some(SignedBy::Inline(_))));
    }

    fn sources(entries: Vec<SourceEntry>) -> AptSources {
        AptSources {
            entries,
            files_read: vec![p()],
        }
    }

    #[test]
    fn picks_entry_listing_the_suite() {
        let text = "deb http://a.invalid/debian bookworm main\n\
            deb http://sec.invalid/debian-security trixie-security main\n\
            deb http://b.invalid/debian trixie main\n";
        let s = sources(parse_one_line(text, &p()).unwrap());
        let m = s.mirror_for_suite("trixie").unwrap();
        assert_eq!(m.uri, "http://b.invalid/debian");
        assert!(m.suite_listed);
        assert_eq!(m.line, 3);
    }

    #[test]
    fn reuses_first_debian_uri_for_another_suite() {
        let text = "deb http://sec.invalid/debian-security bookworm-security main\n\
            deb https://download.invalid/linux/debian bookworm stable\n\
            deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.invalid/debian/ bookworm main\n";
        let s = sources(parse_one_line(text, &p()).unwrap());
        let m = s.mirror_for_suite("trixie").unwrap();
        assert_eq!(m.uri, "http://mirror.invalid/debian");
        assert_eq!(m.suite, "trixie");
        assert!(!m.suite_listed);
        assert_eq!(
            m.keyring_path(Path::new("/default.gpg")),
            Path::new("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
    }

    #[test]
    fn keyring_signed_mirror_under_other_path() {
        let text = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://m.invalid/pub/linux bookworm main\n";
        let s = sources(parse_one_line(text, &p()).unwrap());
        assert_eq!(
            s.mirror_for_suite("trixie").unwrap().uri,
            "http://m.invalid/pub/linux"
        );
    }

    #[test]
    fn no_mirror_error_lists_files_and_hint() {
        let text = "deb http://sec.invalid/debian-security trixie-security main\n\
            deb https://packages.invalid/apt cloud-sdk main\n";
        let s = sources(parse_one_line(text, &p()).unwrap());
        let err = s.mirror_for_suite("trixie").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`/etc/apt/sources.list`"), "{msg}");
        assert!(msg.contains("hint: set `source.mirror`"), "{msg}");
    }

    #[test]
    fn disabled_stanza_is_skipped() {
        let text = "Types: deb\nURIs: http://off.invalid/debian\nSuites: trixie\nComponents: main\nEnabled: no\n\n\
            Types: deb\nURIs: http://on.invalid/debian\nSuites: bookworm\nComponents: main\n";
        let s = sources(parse_deb822(text, Path::new("d.sources")).unwrap());
        assert_eq!(
            s.mirror_for_suite("trixie").unwrap().uri,
            "http://on.invalid/debian"
        );
    }

    #[test]
    fn load_reads_files_in_apt_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(dir.path().join("etc/apt/sources.list"), "# only comments\n").unwrap();
        std::fs::write(
            d.join("b.sources"),
            "Types: deb\nURIs: http://b.invalid/debian\nSuites: trixie\nComponents: main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("a.list"),
            "deb http://a.invalid/debian trixie main\n",
        )
        .unwrap();
        std::fs::write(d.join("c.list.disabled"), "garbage\n").unwrap();
        let s = AptSources::load(dir.path()).unwrap();
        assert_eq!(s.files_read.len(), 3);
        assert_eq!(
            s.mirror_for_suite("trixie").unwrap().uri,
            "http://a.invalid/debian"
        );
    }

    #[test]
    fn load_of_empty_root_gives_no_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let s = AptSources::load(dir.path()).unwrap();
        let err = s.mirror_for_suite("trixie").unwrap_err();
        assert!(err.to_string().contains("no apt source files found"));
    }
}
