//! In-memory index of one or more `Packages` files (the `binary-<arch>` index of each
//! component; `Architecture: all` packages are listed there too).
//!
//! Speed matters (the trixie main index is ~57 MB): the index copies all texts into one
//! owned buffer, scans it line by line with `memchr`, and keeps only byte ranges into that
//! buffer for the fields jeos uses. Fields it doesn't use are skipped without allocation.
//! Only versions and `Provides` entries are parsed eagerly (for ordering and the virtual
//! package map); relationship fields are parsed on demand with [`crate::relation`].
//!
//! Untrusted input: a malformed stanza (syntax error, missing `Package`/`Version`/
//! `Architecture`/`Filename`/`Size`/`SHA256`, invalid version, number or `Provides`) is
//! skipped and recorded as a [`PackagesWarning`] with its line number; parsing never panics.
//! Packages for other architectures than the index's (and `all`) are ignored.

use std::fmt;
use std::ops::Range;

use crate::relation::{self, Clause, Relation, RelationError};
use crate::version::{Version, VersionError};

/// Errors that prevent building an index at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackagesError {
    /// The texts together exceed the 4 GiB the compact index can address.
    #[error("package indices total {bytes} bytes, more than the 4 GiB supported")]
    TooLarge {
        /// Total size in bytes.
        bytes: usize,
    },
}

/// Why a stanza was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StanzaError {
    /// Line without `:` inside a stanza.
    #[error("expected `Field: value`")]
    MissingColon,
    /// Continuation line without a field before it.
    #[error("continuation line without a field")]
    ContinuationWithoutField,
    /// A field given twice.
    #[error("duplicate field `{0}`")]
    DuplicateField(&'static str),
    /// A required field is absent or empty.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// `Version` does not parse.
    #[error("invalid `Version`")]
    InvalidVersion(#[source] VersionError),
    /// A size field is not a decimal number.
    #[error("invalid number in `{0}`")]
    InvalidNumber(&'static str),
    /// `Provides` does not parse.
    #[error("invalid `Provides`")]
    InvalidProvides(#[source] RelationError),
}

/// A skipped stanza: which input, which line, which package (when known), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Packages index {source_index}, line {line}: skipped stanza{}", package.as_ref().map(|p| format!(" `{p}`")).unwrap_or_default())]
pub struct PackagesWarning {
    /// Index into the texts given to [`PackageIndex::parse`].
    pub source_index: usize,
    /// 1-based line of the offending stanza (or field).
    pub line: usize,
    /// Package name, when the stanza had one.
    pub package: Option<String>,
    /// What was wrong.
    #[source]
    pub problem: StanzaError,
}

/// `Multi-Arch` field values (see the Debian MultiArch specification).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MultiArch {
    /// Absent or `no`.
    #[default]
    No,
    /// `same`: co-installable across architectures.
    Same,
    /// `foreign`: satisfies dependencies of any architecture.
    Foreign,
    /// `allowed`: may satisfy `pkg:any` dependencies.
    Allowed,
}

impl MultiArch {
    fn parse(value: &str) -> Self {
        if value.eq_ignore_ascii_case("same") {
            Self::Same
        } else if value.eq_ignore_ascii_case("foreign") {
            Self::Foreign
        } else if value.eq_ignore_ascii_case("allowed") {
            Self::Allowed
        } else {
            Self::No
        }
    }

    /// The field value (`no`, `same`, `foreign`, `allowed`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Same => "same",
            Self::Foreign => "foreign",
            Self::Allowed => "allowed",
        }
    }
}

impl fmt::Display for MultiArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies a package inside one [`PackageIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageId(u32);

impl PackageId {
    /// Position in the index (0-based, in input order).
    #[must_use]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Byte range into the index buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Which of the input texts of [`PackageIndex::parse`] it came from.
    pub(crate) source_index: u32,
    pub(crate) name: Span,
    pub(crate) version: Version,
    pub(crate) arch: Span,
    pub(crate) multi_arch: MultiArch,
    pub(crate) essential: bool,
    pub(crate) installed_size_kib: u64,
    pub(crate) size_bytes: u64,
    pub(crate) filename: Span,
    pub(crate) sha256: Span,
    pub(crate) priority: Span,
    pub(crate) section: Span,
    pub(crate) source: Span,
    pub(crate) description: Span,
    pub(crate) depends: Span,
    pub(crate) pre_depends: Span,
    pub(crate) conflicts: Span,
    pub(crate) breaks: Span,
    pub(crate) replaces: Span,
    pub(crate) provides_raw: Span,
    pub(crate) provides: Range<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct Provided {
    pub(crate) name: Span,
    pub(crate) version: Option<Version>,
    pub(crate) provider: u32,
}

/// Index of the packages of one architecture, from one or more `Packages` texts.
#[derive(Debug, Clone)]
pub struct PackageIndex {
    pub(crate) buf: String,
    pub(crate) arch: String,
    pub(crate) entries: Vec<Entry>,
    /// Entry ids sorted by name, then version (highest first), then input order.
    pub(crate) by_name: Vec<u32>,
    pub(crate) provided: Vec<Provided>,
    /// Indices into `provided`, sorted by provided name then provider name.
    pub(crate) provided_by_name: Vec<u32>,
    pub(crate) warnings: Vec<PackagesWarning>,
}

/// A package of a [`PackageIndex`]; cheap to copy, borrows the index.
#[derive(Clone, Copy)]
pub struct Package<'a> {
    index: &'a PackageIndex,
    id: PackageId,
    entry: &'a Entry,
}

impl fmt::Debug for Package<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Package({} {} {})",
            self.name(),
            self.version(),
            self.architecture()
        )
    }
}

impl<'a> Package<'a> {
    fn text(&self, span: Span) -> &'a str {
        self.index.text(span)
    }

    /// Its id in the index.
    #[must_use]
    pub fn id(&self) -> PackageId {
        self.id
    }
    /// `Package`.
    #[must_use]
    pub fn name(&self) -> &'a str {
        self.text(self.entry.name)
    }
    /// `Version`.
    #[must_use]
    pub fn version(&self) -> &'a Version {
        &self.entry.version
    }
    /// `Architecture` (the index's architecture or `all`).
    #[must_use]
    pub fn architecture(&self) -> &'a str {
        self.text(self.entry.arch)
    }
    /// `Multi-Arch`.
    #[must_use]
    pub fn multi_arch(&self) -> MultiArch {
        self.entry.multi_arch
    }
    /// `Essential: yes`.
    #[must_use]
    pub fn essential(&self) -> bool {
        self.entry.essential
    }
    /// `Installed-Size` in KiB (0 when absent).
    #[must_use]
    pub fn installed_size_kib(&self) -> u64 {
        self.entry.installed_size_kib
    }
    /// `Size` of the `.deb` in bytes.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.entry.size_bytes
    }
    /// `Filename`: pool path relative to the mirror root.
    #[must_use]
    pub fn filename(&self) -> &'a str {
        self.text(self.entry.filename)
    }
    /// Index of the `Packages` text (in [`PackageIndex::parse`]'s input) it came from:
    /// with one text per suite, the suite that ships this version.
    #[must_use]
    pub fn source_index(&self) -> usize {
        self.entry.source_index as usize
    }
    /// `SHA256` of the `.deb` (lowercase hex as in the index).
    #[must_use]
    pub fn sha256(&self) -> &'a str {
        self.text(self.entry.sha256)
    }
    /// `Priority` (empty when absent).
    #[must_use]
    pub fn priority(&self) -> &'a str {
        self.text(self.entry.priority)
    }
    /// `Section` (empty when absent).
    #[must_use]
    pub fn section(&self) -> &'a str {
        self.text(self.entry.section)
    }
    /// Source package name: `Source` without its optional `(version)`, else `Package`.
    #[must_use]
    pub fn source(&self) -> &'a str {
        let source = self.text(self.entry.source);
        match source.split_ascii_whitespace().next() {
            Some(name) => name,
            None => self.name(),
        }
    }
    /// First line of `Description`.
    #[must_use]
    pub fn description(&self) -> &'a str {
        self.text(self.entry.description)
    }
    /// Raw `Depends` text (empty when absent).
    #[must_use]
    pub fn depends_raw(&self) -> &'a str {
        self.text(self.entry.depends)
    }
    /// Raw `Pre-Depends` text.
    #[must_use]
    pub fn pre_depends_raw(&self) -> &'a str {
        self.text(self.entry.pre_depends)
    }
    /// Raw `Conflicts` text.
    #[must_use]
    pub fn conflicts_raw(&self) -> &'a str {
        self.text(self.entry.conflicts)
    }
    /// Raw `Breaks` text.
    #[must_use]
    pub fn breaks_raw(&self) -> &'a str {
        self.text(self.entry.breaks)
    }
    /// Raw `Replaces` text.
    #[must_use]
    pub fn replaces_raw(&self) -> &'a str {
        self.text(self.entry.replaces)
    }
    /// Raw `Provides` text.
    #[must_use]
    pub fn provides_raw(&self) -> &'a str {
        self.text(self.entry.provides_raw)
    }

    /// Parsed `Pre-Depends` followed by `Depends`, for the index's architecture.
    ///
    /// # Errors
    /// A relation syntax error in either field.
    pub fn dependencies(&self) -> Result<Vec<Clause<'a>>, RelationError> {
        let mut clauses = relation::parse_relations(self.pre_depends_raw(), &self.index.arch)?;
        clauses.extend(relation::parse_relations(
            self.depends_raw(),
            &self.index.arch,
        )?);
        Ok(clauses)
    }

    /// Parsed `Conflicts` followed by `Breaks` (both forbid co-installation in an image
    /// that is never upgraded in place).
    ///
    /// # Errors
    /// A relation syntax error in either field.
    pub fn conflicts(&self) -> Result<Vec<Clause<'a>>, RelationError> {
        let mut clauses = relation::parse_relations(self.conflicts_raw(), &self.index.arch)?;
        clauses.extend(relation::parse_relations(
            self.breaks_raw(),
            &self.index.arch,
        )?);
        Ok(clauses)
    }

    /// `Provides` entries: virtual name and optional provided version.
    pub fn provides(&self) -> impl Iterator<Item = (&'a str, Option<&'a Version>)> + 'a {
        let index = self.index;
        let range = self.entry.provides.start as usize..self.entry.provides.end as usize;
        index.provided[range]
            .iter()
            .map(move |p| (index.text(p.name), p.version.as_ref()))
    }
}

/// Which field a header line is, for the fields the index keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Package,
    Version,
    Architecture,
    MultiArch,
    Essential,
    InstalledSize,
    Size,
    Filename,
    Sha256,
    Priority,
    Section,
    Source,
    Description,
    Depends,
    PreDepends,
    Conflicts,
    Breaks,
    Replaces,
    Provides,
}

const KNOWN: [(&str, Known); 19] = [
    ("Package", Known::Package),
    ("Version", Known::Version),
    ("Architecture", Known::Architecture),
    ("Multi-Arch", Known::MultiArch),
    ("Essential", Known::Essential),
    ("Installed-Size", Known::InstalledSize),
    ("Size", Known::Size),
    ("Filename", Known::Filename),
    ("SHA256", Known::Sha256),
    ("Priority", Known::Priority),
    ("Section", Known::Section),
    ("Source", Known::Source),
    ("Description", Known::Description),
    ("Depends", Known::Depends),
    ("Pre-Depends", Known::PreDepends),
    ("Conflicts", Known::Conflicts),
    ("Breaks", Known::Breaks),
    ("Replaces", Known::Replaces),
    ("Provides", Known::Provides),
];

fn classify(name: &str) -> Option<Known> {
    // Exact (canonical) spelling first: that is what real indices use.
    KNOWN
        .iter()
        .find(|(n, _)| n.len() == name.len() && (*n == name || n.eq_ignore_ascii_case(name)))
        .map(|(_, k)| *k)
}

/// Field spans of the stanza being scanned; index = `Known as usize`.
#[derive(Default)]
struct RawStanza {
    spans: [Option<Span>; 19],
    line: usize,
    error: Option<(usize, StanzaError)>,
}

impl PackageIndex {
    /// Builds an index for architecture `arch` (e.g. `amd64`) from `Packages` texts.
    ///
    /// # Errors
    /// [`PackagesError::TooLarge`] when the texts exceed 4 GiB. Malformed stanzas are not
    /// errors: they are skipped and listed in [`PackageIndex::warnings`].
    pub fn parse<S: AsRef<str>>(texts: &[S], arch: &str) -> Result<Self, PackagesError> {
        let total: usize = texts.iter().map(|t| t.as_ref().len() + 2).sum();
        if u32::try_from(total).is_err() {
            return Err(PackagesError::TooLarge { bytes: total });
        }
        let mut buf = String::with_capacity(total);
        let mut bounds = Vec::with_capacity(texts.len());
        for text in texts {
            let start = buf.len();
            buf.push_str(text.as_ref());
            bounds.push(start..buf.len());
            // Guarantee a stanza break between inputs.
            buf.push_str("\n\n");
        }
        let mut index = Self {
            buf: String::new(),
            arch: arch.to_owned(),
            entries: Vec::new(),
            by_name: Vec::new(),
            provided: Vec::new(),
            provided_by_name: Vec::new(),
            warnings: Vec::new(),
        };
        for (source_index, range) in bounds.into_iter().enumerate() {
            index.scan(&buf, range, source_index);
        }
        index.buf = buf;
        index.by_name = (0..to_u32(index.entries.len())).collect();
        index.provided_by_name = (0..to_u32(index.provided.len())).collect();
        index.sort();
        Ok(index)
    }

    /// One index from several, in order: the packages of `parts[i]` get source index `i`
    /// (each part must come from one `Packages` text, as [`PackageIndex::parse`] of one
    /// text or [`crate::index_cache`] gives). The result is the index
    /// [`PackageIndex::parse`] builds from the parts' texts in the same order.
    ///
    /// # Errors
    /// [`PackagesError::TooLarge`] when the parts together exceed 4 GiB of text.
    pub fn merge(parts: Vec<Self>) -> Result<Self, PackagesError> {
        let total: usize = parts.iter().map(|p| p.buf.len()).sum();
        if u32::try_from(total).is_err() {
            return Err(PackagesError::TooLarge { bytes: total });
        }
        let mut iter = parts.into_iter();
        let Some(mut index) = iter.next() else {
            return Ok(Self {
                buf: String::new(),
                arch: String::new(),
                entries: Vec::new(),
                by_name: Vec::new(),
                provided: Vec::new(),
                provided_by_name: Vec::new(),
                warnings: Vec::new(),
            });
        };
        index.buf.reserve(total - index.buf.len());
        let mut by_name_runs = vec![std::mem::take(&mut index.by_name)];
        let mut provided_runs = vec![std::mem::take(&mut index.provided_by_name)];
        for (source, part) in iter.enumerate() {
            let source = to_u32(source + 1);
            let text_base = to_u32(index.buf.len());
            let entry_base = to_u32(index.entries.len());
            let provided_base = to_u32(index.provided.len());
            let shift = |s: Span| Span {
                start: s.start + text_base,
                end: s.end + text_base,
            };
            index.buf.push_str(&part.buf);
            by_name_runs.push(part.by_name.iter().map(|i| i + entry_base).collect());
            provided_runs.push(
                part.provided_by_name
                    .iter()
                    .map(|i| i + provided_base)
                    .collect(),
            );
            index
                .provided
                .extend(part.provided.into_iter().map(|p| Provided {
                    name: shift(p.name),
                    version: p.version,
                    provider: p.provider + entry_base,
                }));
            index
                .entries
                .extend(part.entries.into_iter().map(|e| Entry {
                    source_index: source,
                    name: shift(e.name),
                    arch: shift(e.arch),
                    filename: shift(e.filename),
                    sha256: shift(e.sha256),
                    priority: shift(e.priority),
                    section: shift(e.section),
                    source: shift(e.source),
                    description: shift(e.description),
                    depends: shift(e.depends),
                    pre_depends: shift(e.pre_depends),
                    conflicts: shift(e.conflicts),
                    breaks: shift(e.breaks),
                    replaces: shift(e.replaces),
                    provides_raw: shift(e.provides_raw),
                    provides: e.provides.start + provided_base..e.provides.end + provided_base,
                    ..e
                }));
            index
                .warnings
                .extend(part.warnings.into_iter().map(|w| PackagesWarning {
                    source_index: w.source_index + source as usize,
                    ..w
                }));
        }
        // Each part's orders are sorted already: merge them (linear, same order as sorting).
        let by_name = merge_runs(by_name_runs, |a, b| index.cmp_entries(a, b));
        let provided_by_name = merge_runs(provided_runs, |a, b| index.cmp_provided(a, b));
        index.by_name = by_name;
        index.provided_by_name = provided_by_name;
        Ok(index)
    }

    /// Scans `buf[range]` and appends its stanzas.
    fn scan(&mut self, buf: &str, range: Range<usize>, source_index: usize) {
        let bytes = buf.as_bytes();
        let mut pos = range.start;
        let mut line_no = 0usize;
        let mut stanza = RawStanza::default();
        let mut in_stanza = false;
        // Field that continuation lines extend (only multi-line-capable kept fields).
        let mut last: Option<Known> = None;
        let mut last_field_seen = false;
        while pos < range.end {
            let line_end =
                memchr::memchr(b'\n', &bytes[pos..range.end]).map_or(range.end, |i| pos + i);
            line_no += 1;
            let mut content_end = line_end;
            if content_end > pos && bytes[content_end - 1] == b'\r' {
                content_end -= 1;
            }
            let line = &bytes[pos..content_end];
            let line_start = pos;
            pos = line_end + 1;
            if line.iter().all(|b| matches!(b, b' ' | b'\t')) {
                if in_stanza {
                    self.finish(buf, std::mem::take(&mut stanza), source_index);
                    in_stanza = false;
                    last = None;
                    last_field_seen = false;
                }
                continue;
            }
            if line[0] == b'#' {
                continue;
            }
            if !in_stanza {
                in_stanza = true;
                stanza.line = line_no;
            }
            if stanza.error.is_some() {
                continue;
            }
            if matches!(line[0], b' ' | b'\t') {
                if !last_field_seen {
                    stanza.error = Some((line_no, StanzaError::ContinuationWithoutField));
                    continue;
                }
                if let Some(kind) = last
                    && let Some(span) = &mut stanza.spans[kind as usize]
                {
                    span.end = to_u32(content_end);
                }
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                stanza.error = Some((line_no, StanzaError::MissingColon));
                continue;
            };
            last_field_seen = true;
            let name = &buf[line_start..line_start + colon];
            let Some(kind) = classify(name) else {
                last = None;
                continue;
            };
            let slot = &mut stanza.spans[kind as usize];
            if slot.is_some() {
                stanza.error = Some((line_no, StanzaError::DuplicateField(KNOWN[kind as usize].0)));
                continue;
            }
            let mut start = line_start + colon + 1;
            while start < content_end && matches!(bytes[start], b' ' | b'\t') {
                start += 1;
            }
            *slot = Some(Span {
                start: to_u32(start),
                end: to_u32(content_end),
            });
            // Description keeps only its first line; relation fields may be wrapped.
            last = match kind {
                Known::Depends
                | Known::PreDepends
                | Known::Conflicts
                | Known::Breaks
                | Known::Replaces
                | Known::Provides => Some(kind),
                _ => None,
            };
        }
        if in_stanza {
            self.finish(buf, stanza, source_index);
        }
    }

    /// Validates one stanza and appends it, or records a warning.
    fn finish(&mut self, buf: &str, stanza: RawStanza, source_index: usize) {
        let text = |span: Option<Span>| {
            span.map_or("", |s| buf[s.start as usize..s.end as usize].trim_end())
        };
        let get = |k: Known| stanza.spans[k as usize];
        let package = get(Known::Package)
            .map(|s| text(Some(s)).to_owned())
            .filter(|p| !p.is_empty());
        let mut warn = |line: usize, problem: StanzaError| {
            self.warnings.push(PackagesWarning {
                source_index,
                line,
                package: package.clone(),
                problem,
            });
        };
        if let Some((line, problem)) = stanza.error {
            warn(line, problem);
            return;
        }
        for required in [
            Known::Package,
            Known::Version,
            Known::Architecture,
            Known::Filename,
            Known::Size,
            Known::Sha256,
        ] {
            if text(get(required)).is_empty() {
                warn(
                    stanza.line,
                    StanzaError::MissingField(KNOWN[required as usize].0),
                );
                return;
            }
        }
        let arch = text(get(Known::Architecture));
        if arch != self.arch && arch != "all" {
            return;
        }
        let version = match Version::parse(text(get(Known::Version))) {
            Ok(v) => v,
            Err(e) => {
                warn(stanza.line, StanzaError::InvalidVersion(e));
                return;
            }
        };
        let number = |k: Known| -> Result<u64, StanzaError> {
            let t = text(get(k));
            if t.is_empty() && k == Known::InstalledSize {
                return Ok(0);
            }
            t.parse::<u64>()
                .map_err(|_| StanzaError::InvalidNumber(KNOWN[k as usize].0))
        };
        let (installed_size_kib, size_bytes) =
            match (number(Known::InstalledSize), number(Known::Size)) {
                (Ok(i), Ok(s)) => (i, s),
                (Err(e), _) | (_, Err(e)) => {
                    warn(stanza.line, e);
                    return;
                }
            };
        let provides_text = text(get(Known::Provides));
        let provides_base = self.provided.len();
        let id = u32::try_from(self.entries.len()).expect("fewer entries than buffer bytes");
        if !provides_text.is_empty() {
            match relation::parse_provides(provides_text, &self.arch) {
                Ok(list) => {
                    let base = buf.as_ptr() as usize;
                    for Relation {
                        name, constraint, ..
                    } in list
                    {
                        let start = name.as_ptr() as usize - base;
                        self.provided.push(Provided {
                            name: Span {
                                start: to_u32(start),
                                end: to_u32(start + name.len()),
                            },
                            version: constraint.map(|c| c.version),
                            provider: id,
                        });
                    }
                }
                Err(e) => {
                    warn(stanza.line, StanzaError::InvalidProvides(e));
                    return;
                }
            }
        }
        let span = |k: Known| {
            get(k).map_or(Span::default(), |s| {
                let t = text(Some(s));
                Span {
                    start: s.start,
                    end: s.start + to_u32(t.len()),
                }
            })
        };
        let essential = text(get(Known::Essential)).eq_ignore_ascii_case("yes");
        let description = {
            let s = span(Known::Description);
            let t = &buf[s.start as usize..s.end as usize];
            let first = memchr::memchr(b'\n', t.as_bytes()).map_or(t.len(), |i| i);
            Span {
                start: s.start,
                end: s.start + to_u32(first),
            }
        };
        self.entries.push(Entry {
            source_index: to_u32(source_index),
            name: span(Known::Package),
            version,
            arch: span(Known::Architecture),
            multi_arch: MultiArch::parse(text(get(Known::MultiArch))),
            essential,
            installed_size_kib,
            size_bytes,
            filename: span(Known::Filename),
            sha256: span(Known::Sha256),
            priority: span(Known::Priority),
            section: span(Known::Section),
            source: span(Known::Source),
            description,
            depends: span(Known::Depends),
            pre_depends: span(Known::PreDepends),
            conflicts: span(Known::Conflicts),
            breaks: span(Known::Breaks),
            replaces: span(Known::Replaces),
            provides_raw: span(Known::Provides),
            provides: to_u32(provides_base)..to_u32(self.provided.len()),
        });
    }

    /// Sorts `by_name` and `provided_by_name` (which hold every id once, in any order).
    fn sort(&mut self) {
        let mut by_name = std::mem::take(&mut self.by_name);
        by_name.sort_by(|&a, &b| self.cmp_entries(a, b));
        self.by_name = by_name;
        let mut provided = std::mem::take(&mut self.provided_by_name);
        provided.sort_by(|&a, &b| self.cmp_provided(a, b));
        self.provided_by_name = provided;
    }

    /// The `by_name` order: name, then version (highest first), then input order.
    fn cmp_entries(&self, a: u32, b: u32) -> std::cmp::Ordering {
        let (ea, eb) = (&self.entries[a as usize], &self.entries[b as usize]);
        self.text(ea.name)
            .cmp(self.text(eb.name))
            .then_with(|| eb.version.cmp(&ea.version))
            .then(a.cmp(&b))
    }

    /// The `provided_by_name` order: provided name, provider name, provider version
    /// (highest first), input order.
    fn cmp_provided(&self, a: u32, b: u32) -> std::cmp::Ordering {
        let (pa, pb) = (&self.provided[a as usize], &self.provided[b as usize]);
        let (ea, eb) = (
            &self.entries[pa.provider as usize],
            &self.entries[pb.provider as usize],
        );
        self.text(pa.name)
            .cmp(self.text(pb.name))
            .then_with(|| self.text(ea.name).cmp(self.text(eb.name)))
            .then_with(|| eb.version.cmp(&ea.version))
            .then(a.cmp(&b))
    }

    pub(crate) fn text(&self, span: Span) -> &str {
        &self.buf[span.start as usize..span.end as usize]
    }

    fn package(&self, id: u32) -> Package<'_> {
        Package {
            index: self,
            id: PackageId(id),
            entry: &self.entries[id as usize],
        }
    }

    /// The architecture this index was built for.
    #[must_use]
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Number of packages (all versions).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no packages.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Stanzas that were skipped, with line numbers.
    #[must_use]
    pub fn warnings(&self) -> &[PackagesWarning] {
        &self.warnings
    }

    /// The package with this id.
    ///
    /// # Panics
    /// If `id` comes from another index with more packages.
    #[must_use]
    pub fn get(&self, id: PackageId) -> Package<'_> {
        self.package(id.0)
    }

    /// All packages in input order.
    pub fn iter(&self) -> impl Iterator<Item = Package<'_>> {
        (0..to_u32(self.entries.len())).map(|i| self.package(i))
    }

    fn name_range(&self, name: &str) -> Range<usize> {
        let start = self
            .by_name
            .partition_point(|&i| self.text(self.entries[i as usize].name) < name);
        let len = self.by_name[start..]
            .iter()
            .take_while(|&&i| self.text(self.entries[i as usize].name) == name)
            .count();
        start..start + len
    }

    /// All versions of `name`, highest first.
    pub fn versions(&self, name: &str) -> impl Iterator<Item = Package<'_>> {
        self.by_name[self.name_range(name)]
            .iter()
            .map(|&i| self.package(i))
    }

    /// The candidate version of `name`: the highest version in the index (jeos has no pin
    /// priorities; a suite snapshot normally carries one version per package).
    #[must_use]
    pub fn candidate(&self, name: &str) -> Option<Package<'_>> {
        self.versions(name).next()
    }

    /// Packages that provide the virtual name `name`, with the provided version, ordered by
    /// provider name then version (highest first).
    pub fn providers(&self, name: &str) -> impl Iterator<Item = (Package<'_>, Option<&Version>)> {
        let start = self
            .provided_by_name
            .partition_point(|&i| self.text(self.provided[i as usize].name) < name);
        self.provided_by_name[start..]
            .iter()
            .map(|&i| &self.provided[i as usize])
            .take_while(move |p| self.text(p.name) == name)
            .map(|p| (self.package(p.provider), p.version.as_ref()))
    }

    /// Distinct package names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut previous: Option<&str> = None;
        self.by_name.iter().filter_map(move |&i| {
            let name = self.text(self.entries[i as usize].name);
            if previous == Some(name) {
                None
            } else {
                previous = Some(name);
                Some(name)
            }
        })
    }

    /// Distinct virtual (provided) names in sorted order.
    pub fn virtual_names(&self) -> impl Iterator<Item = &str> {
        let mut previous: Option<&str> = None;
        self.provided_by_name.iter().filter_map(move |&i| {
            let name = self.text(self.provided[i as usize].name);
            if previous == Some(name) {
                None
            } else {
                previous = Some(name);
                Some(name)
            }
        })
    }
}

/// Merges sorted runs into one sorted list.
fn merge_runs(runs: Vec<Vec<u32>>, cmp: impl Fn(u32, u32) -> std::cmp::Ordering) -> Vec<u32> {
    let mut runs = runs.into_iter();
    let mut merged = runs.next().unwrap_or_default();
    for run in runs {
        let mut out = Vec::with_capacity(merged.len() + run.len());
        let (mut a, mut b) = (merged.iter().peekable(), run.iter().peekable());
        while let (Some(&&x), Some(&&y)) = (a.peek(), b.peek()) {
            if cmp(x, y).is_le() {
                out.push(x);
                a.next();
            } else {
                out.push(y);
                b.next();
            }
        }
        out.extend(a);
        out.extend(b);
        merged = out;
    }
    merged
}

/// Offsets are bounded by the total size checked in [`PackageIndex::parse`].
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("offset bounded by the 4 GiB check in PackageIndex::parse")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a stanza with sensible defaults for tests; `extra` holds more fields.
    pub(crate) fn stanza(name: &str, version: &str, extra: &str) -> String {
        let mut s = format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nInstalled-Size: 100\n\
             Filename: pool/main/{name}_{version}_amd64.deb\nSize: 1000\nSHA256: {:064x}\n",
            name.len()
        );
        for line in extra.lines() {
            s.push_str(line.trim_start());
            s.push('\n');
        }
        s.push('\n');
        s
    }

    #[test]
    fn parses_fields() {
        let text = "Package: nginx\nSource: nginx (1.26.3-3)\nVersion: 1.26.3-3\n\
            Installed-Size: 1234\nMaintainer: x\nArchitecture: amd64\nMulti-Arch: foreign\n\
            Depends: libc6 (>= 2.34),\n libpcre2-8-0 (>= 10.22)\nPre-Depends: dpkg\n\
            Provides: httpd, nginx-abi (= 1)\nConflicts: a\nBreaks: b\nReplaces: c\n\
            Description: small, powerful web server\n nginx is a web server.\n\
            Essential: yes\nPriority: optional\nSection: httpd\n\
            Filename: pool/main/n/nginx/nginx_1.26.3-3_amd64.deb\nSize: 600000\n\
            SHA256: abcd\n\n";
        let index = PackageIndex::parse(&[text], "amd64").unwrap();
        assert!(index.warnings().is_empty(), "{:?}", index.warnings());
        let p = index.candidate("nginx").unwrap();
        assert_eq!(p.version().as_str(), "1.26.3-3");
        assert_eq!(p.architecture(), "amd64");
        assert_eq!(p.multi_arch(), MultiArch::Foreign);
        assert_eq!(p.installed_size_kib(), 1234);
        assert_eq!(p.size_bytes(), 600_000);
        assert_eq!(p.filename(), "pool/main/n/nginx/nginx_1.26.3-3_amd64.deb");
        assert_eq!(p.sha256(), "abcd");
        assert!(p.essential());
        assert_eq!(p.priority(), "optional");
        assert_eq!(p.section(), "httpd");
        assert_eq!(p.source(), "nginx");
        assert_eq!(p.description(), "small, powerful web server");
        let deps: Vec<String> = p
            .dependencies()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(deps, ["dpkg", "libc6 (>= 2.34)", "libpcre2-8-0 (>= 10.22)"]);
        let conflicts: Vec<String> = p
            .conflicts()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(conflicts, ["a", "b"]);
        assert_eq!(p.replaces_raw(), "c");
        let provides: Vec<(&str, Option<String>)> = p
            .provides()
            .map(|(n, v)| (n, v.map(ToString::to_string)))
            .collect();
        assert_eq!(provides, [("httpd", None), ("nginx-abi", Some("1".into()))]);
        let providers: Vec<&str> = index.providers("httpd").map(|(p, _)| p.name()).collect();
        assert_eq!(providers, ["nginx"]);
        assert!(index.providers("nothing").next().is_none());
    }

    #[test]
    fn versions_sorted_and_candidate_is_highest() {
        let text = [
            stanza("a", "1.0", ""),
            stanza("b", "1", ""),
            stanza("a", "1.10", ""),
            stanza("a", "1.9", ""),
        ]
        .concat();
        let index = PackageIndex::parse(&[text], "amd64").unwrap();
        let versions: Vec<&str> = index.versions("a").map(|p| p.version().as_str()).collect();
        assert_eq!(versions, ["1.10", "1.9", "1.0"]);
        assert_eq!(index.candidate("a").unwrap().version().as_str(), "1.10");
        assert!(index.candidate("c").is_none());
        assert_eq!(index.names().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn multiple_texts_and_other_arches() {
        let one = stanza("a", "1", "").replace("amd64\n", "all\n");
        let two = stanza("b", "1", "").replace("Architecture: amd64", "Architecture: i386");
        let three = format!("{}{}", stanza("c", "1", "Provides: v (= 2)"), "Package: d");
        let index = PackageIndex::parse(&[one, two, three], "amd64").unwrap();
        assert_eq!(index.names().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(index.candidate("a").unwrap().architecture(), "all");
        assert_eq!(index.virtual_names().collect::<Vec<_>>(), ["v"]);
        // `Package: d` without the rest: skipped with a warning naming source 2.
        assert_eq!(index.warnings().len(), 1);
        let w = &index.warnings()[0];
        assert_eq!((w.source_index, w.package.as_deref()), (2, Some("d")));
        assert_eq!(w.problem, StanzaError::MissingField("Version"));
    }

    #[test]
    fn malformed_stanzas_are_skipped_with_line_numbers() {
        let text = [
            stanza("ok1", "1", ""),
            "Package: nocolon\nthis line is broken\n\n".to_owned(),
            stanza("badversion", "x1", ""),
            stanza("badsize", "1", "").replace("Size: 1000", "Size: lots"),
            stanza("dup", "1", "Version: 2"),
            stanza("badprov", "1", "Provides: a | b"),
            " continuation\nPackage: x\n\n".to_owned(),
            stanza("ok2", "1", ""),
        ]
        .concat();
        let index = PackageIndex::parse(&[text], "amd64").unwrap();
        assert_eq!(index.names().collect::<Vec<_>>(), ["ok1", "ok2"]);
        let problems: Vec<(usize, String)> = index
            .warnings()
            .iter()
            .map(|w| (w.line, w.problem.to_string()))
            .collect();
        assert_eq!(
            problems,
            [
                (10, "expected `Field: value`".to_owned()),
                (12, "invalid `Version`".to_owned()),
                (20, "invalid number in `Size`".to_owned()),
                (35, "duplicate field `Version`".to_owned()),
                (37, "invalid `Provides`".to_owned()),
                (46, "continuation line without a field".to_owned()),
            ]
        );
        assert_eq!(
            index.warnings()[1].to_string(),
            "Packages index 0, line 12: skipped stanza `badversion`"
        );
    }

    #[test]
    fn crlf_and_garbage_never_panic() {
        let text = stanza("a", "1", "Depends: b\r").replace('\n', "\r\n");
        let index = PackageIndex::parse(&[text], "amd64").unwrap();
        assert_eq!(index.candidate("a").unwrap().depends_raw(), "b");
        assert_eq!(
            index.candidate("a").unwrap().filename(),
            "pool/main/a_1_amd64.deb"
        );
        for garbage in [
            "",
            "\n",
            ":",
            "\u{0}",
            "Package:",
            " \n \t",
            "Package: é\nVersion: 1",
        ] {
            let _ = PackageIndex::parse(&[garbage], "amd64").unwrap();
        }
    }
}
