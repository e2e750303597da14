//! Parsed-index cache: a verified `Packages` index stored once in a compact binary form,
//! so a fresh solve does not parse 57 MB of text again.
//!
//! ```text
//! <cache>/parsed/v<FORMAT>-<arch>-<sha256 of the Packages text>
//!
//! ┌──────────────┬─────────┬──────────┬─────────┬──────────────────┬─────────┬────────┐
//! │ text (UTF-8) │ entries │ provided │ by_name │ provided_by_name │ trailer │ SHA-256│
//! │ kept fields  │ N × 150 │ P × 20   │ N × u32 │ P × u32          │ 40 B    │ 32 B   │
//! └──────────────┴─────────┴──────────┴─────────┴──────────────────┴─────────┴────────┘
//! ```
//!
//! Only the fields [`PackageIndex`] keeps are stored (spans into the text section, which
//! becomes the index's buffer as it is: the file is read once and truncated, not copied).
//! Integers are little-endian; records have a fixed size, so the file could be mapped.
//!
//! The bytes are untrusted when read back (another process, a full disk or a bit flip may
//! have damaged them): the SHA-256 over everything before it must match, the trailer's
//! counts must add up to the file size exactly, every span must lie inside the text on
//! character boundaries, every id inside its table, every version must parse and the
//! name order must be sorted. A failing entry is [`IndexCacheError::Corrupt`]; [`load`]
//! deletes it and reports a miss, so the caller parses the verified text again. Decoding
//! never panics and allocates no more than the input's size implies.
//!
//! Indices with skipped stanzas (warnings) are not stored: their warnings come from
//! parsing, so they are parsed every time.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::packages::{Entry, MultiArch, PackageIndex, Provided, Span};
use crate::version::Version;

/// Version of the binary layout; part of the file name and of the trailer.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"JEOSPIDX";
/// Spans per entry record, in [`ENTRY_SPANS`] order.
const SPANS: usize = 15;
const ENTRY_BYTES: usize = 4 + SPANS * 8 + 2 + 16 + 8;
const PROVIDED_BYTES: usize = 8 + 8 + 4;
/// magic, format, arch length, arch (16 bytes, NUL-padded), text length, N, P.
const TRAILER_BYTES: usize = 8 + 4 + 4 + 16 + 4 + 4 + 4;
const HASH_BYTES: usize = 32;
/// Marks an absent provided version.
const NO_VERSION: u32 = u32::MAX;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum IndexCacheError {
    /// Filesystem error.
    #[error("parsed-index cache IO error on `{path}`")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid parsed index.
    #[error("corrupt parsed index: {what}")]
    Corrupt {
        /// What is wrong.
        what: &'static str,
    },
    /// The index has no room in the format (more than 4 GiB, an architecture name longer
    /// than 16 bytes).
    #[error("the index cannot be stored: {what}")]
    Unsupported {
        /// Why.
        what: &'static str,
    },
}

fn corrupt(what: &'static str) -> IndexCacheError {
    IndexCacheError::Corrupt { what }
}

/// The spans of an entry, in record order.
fn entry_spans(e: &Entry) -> [Span; SPANS - 1] {
    [
        e.name,
        e.arch,
        e.filename,
        e.sha256,
        e.priority,
        e.section,
        e.source,
        e.description,
        e.depends,
        e.pre_depends,
        e.conflicts,
        e.breaks,
        e.replaces,
        e.provides_raw,
    ]
}

/// Appends `s` to the compact text and returns its span there.
fn push_text(text: &mut String, s: &str) -> Result<Span, IndexCacheError> {
    let too_large = || IndexCacheError::Unsupported {
        what: "more than 4 GiB of text",
    };
    let start = u32::try_from(text.len()).map_err(|_| too_large())?;
    text.push_str(s);
    let end = u32::try_from(text.len()).map_err(|_| too_large())?;
    Ok(Span { start, end })
}

fn put_span(out: &mut Vec<u8>, span: Span) {
    out.extend_from_slice(&span.start.to_le_bytes());
    out.extend_from_slice(&span.end.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: usize) -> Result<(), IndexCacheError> {
    let value = u32::try_from(value).map_err(|_| IndexCacheError::Unsupported {
        what: "more than 4 Gi records",
    })?;
    out.extend_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Encodes `index` (see the module documentation).
///
/// # Errors
/// [`IndexCacheError::Unsupported`] for an index the format cannot hold.
pub fn encode(index: &PackageIndex) -> Result<Vec<u8>, IndexCacheError> {
    if index.arch.len() > 16 {
        return Err(IndexCacheError::Unsupported {
            what: "an architecture name longer than 16 bytes",
        });
    }
    let mut text = Interner::default();
    let mut records = Vec::with_capacity(index.entries.len() * ENTRY_BYTES);
    for e in &index.entries {
        records.extend_from_slice(&e.source_index.to_le_bytes());
        put_span(&mut records, text.shared(e.version.as_str())?);
        for (i, span) in entry_spans(e).into_iter().enumerate() {
            let s = index.text(span);
            // Name, file name, SHA-256 and description are (nearly) unique: no lookup.
            let span = if matches!(i, 0 | 2 | 3 | 7) {
                push_text(&mut text.text, s)?
            } else {
                text.shared(s)?
            };
            put_span(&mut records, span);
        }
        records.push(multi_arch_code(e.multi_arch));
        records.push(u8::from(e.essential));
        records.extend_from_slice(&e.installed_size_kib.to_le_bytes());
        records.extend_from_slice(&e.size_bytes.to_le_bytes());
        records.extend_from_slice(&e.provides.start.to_le_bytes());
        records.extend_from_slice(&e.provides.end.to_le_bytes());
    }
    for p in &index.provided {
        put_span(&mut records, text.shared(index.text(p.name))?);
        match &p.version {
            Some(v) => put_span(&mut records, text.shared(v.as_str())?),
            None => put_span(
                &mut records,
                Span {
                    start: NO_VERSION,
                    end: NO_VERSION,
                },
            ),
        }
        records.extend_from_slice(&p.provider.to_le_bytes());
    }
    for &id in index.by_name.iter().chain(&index.provided_by_name) {
        records.extend_from_slice(&id.to_le_bytes());
    }
    let mut out = text.text.into_bytes();
    let text_len = out.len();
    out.extend_from_slice(&records);
    drop(records);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    put_u32(&mut out, index.arch.len())?;
    let mut arch = [0u8; 16];
    arch[..index.arch.len()].copy_from_slice(index.arch.as_bytes());
    out.extend_from_slice(&arch);
    put_u32(&mut out, text_len)?;
    put_u32(&mut out, index.entries.len())?;
    put_u32(&mut out, index.provided.len())?;
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

/// The compact text, storing repeated strings once.
#[derive(Default)]
struct Interner<'a> {
    text: String,
    seen: HashMap<&'a str, Span>,
}

impl<'a> Interner<'a> {
    fn shared(&mut self, s: &'a str) -> Result<Span, IndexCacheError> {
        if let Some(span) = self.seen.get(s) {
            return Ok(*span);
        }
        let span = push_text(&mut self.text, s)?;
        self.seen.insert(s, span);
        Ok(span)
    }
}

fn multi_arch_code(m: MultiArch) -> u8 {
    match m {
        MultiArch::No => 0,
        MultiArch::Same => 1,
        MultiArch::Foreign => 2,
        MultiArch::Allowed => 3,
    }
}

/// A bounds-checked little-endian reader over one table.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], IndexCacheError> {
        let end = self.at.checked_add(N).ok_or_else(|| corrupt("truncated"))?;
        let chunk = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| corrupt("truncated"))?;
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(chunk);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, IndexCacheError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, IndexCacheError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, IndexCacheError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn usize(&mut self) -> Result<usize, IndexCacheError> {
        usize::try_from(self.u32()?).map_err(|_| corrupt("count out of range"))
    }
}

/// A span read from a record, checked against the text.
fn read_span(r: &mut Reader<'_>, text: &str) -> Result<Span, IndexCacheError> {
    let span = Span {
        start: r.u32()?,
        end: r.u32()?,
    };
    check_span(span, text)?;
    Ok(span)
}

fn check_span(span: Span, text: &str) -> Result<(), IndexCacheError> {
    let (start, end) = (span.start as usize, span.end as usize);
    if start > end
        || end > text.len()
        || !text.is_char_boundary(start)
        || !text.is_char_boundary(end)
    {
        return Err(corrupt("span outside the text"));
    }
    Ok(())
}

fn span_text(text: &str, span: Span) -> &str {
    // Checked by `check_span`; an unchecked span yields "" rather than a panic.
    text.get(span.start as usize..span.end as usize)
        .unwrap_or_default()
}

/// The section sizes of a file, from its trailer.
struct Layout {
    text_len: usize,
    entries: usize,
    provided: usize,
    arch: String,
}

/// Bytes read at an offset: a file or a buffer.
trait Source {
    /// Fills `buf` from `offset`; a short source is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let chunk = usize::try_from(offset)
            .ok()
            .and_then(|at| self.get(at..at.checked_add(buf.len())?))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(chunk);
        Ok(())
    }
}

impl Source for fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// Decode failures: corrupt bytes, or the source could not be read.
enum Failure {
    Corrupt(&'static str),
    Io(std::io::Error),
}

impl From<IndexCacheError> for Failure {
    fn from(e: IndexCacheError) -> Self {
        match e {
            IndexCacheError::Corrupt { what } | IndexCacheError::Unsupported { what } => {
                Self::Corrupt(what)
            }
            IndexCacheError::Io { source, .. } => Self::Io(source),
        }
    }
}

fn read_trailer(source: &(impl Source + ?Sized), len: u64) -> Result<Layout, Failure> {
    let tail = (TRAILER_BYTES + HASH_BYTES) as u64;
    let at = len
        .checked_sub(tail)
        .ok_or(Failure::Corrupt("shorter than its trailer"))?;
    let mut bytes = [0u8; TRAILER_BYTES];
    source.read_at(&mut bytes, at).map_err(Failure::Io)?;
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
    };
    if &r.take::<8>()? != MAGIC {
        return Err(Failure::Corrupt("bad magic"));
    }
    if r.u32()? != FORMAT_VERSION {
        return Err(Failure::Corrupt("unknown format version"));
    }
    let arch_len = r.usize()?;
    let arch_bytes = r.take::<16>()?;
    let arch = arch_bytes
        .get(..arch_len)
        .and_then(|a| std::str::from_utf8(a).ok())
        .ok_or(Failure::Corrupt("bad architecture"))?
        .to_owned();
    let layout = Layout {
        text_len: r.usize()?,
        entries: r.usize()?,
        provided: r.usize()?,
        arch,
    };
    let body = layout
        .entries
        .checked_mul(ENTRY_BYTES + 4)
        .zip(layout.provided.checked_mul(PROVIDED_BYTES + 4))
        .and_then(|(a, b)| a.checked_add(b))
        .and_then(|t| t.checked_add(layout.text_len))
        .and_then(|t| u64::try_from(t).ok())
        .ok_or(Failure::Corrupt("counts overflow"))?;
    if body != at {
        return Err(Failure::Corrupt("counts do not match the file size"));
    }
    Ok(layout)
}

/// Reads `count` records of `size` bytes from `offset` in chunks, hashing them, decoding
/// each with `f`. Memory: one chunk plus the decoded records.
fn read_records<T>(
    source: &(impl Source + ?Sized),
    offset: &mut u64,
    (count, size): (usize, usize),
    hasher: &mut Sha256,
    mut f: impl FnMut(&mut Reader<'_>) -> Result<T, IndexCacheError>,
) -> Result<Vec<T>, Failure> {
    const CHUNK_RECORDS: usize = 4096;
    let mut out = Vec::with_capacity(count);
    let mut buf = vec![0u8; CHUNK_RECORDS.min(count) * size];
    let mut left = count;
    while left > 0 {
        let n = left.min(CHUNK_RECORDS);
        let chunk = &mut buf[..n * size];
        source.read_at(chunk, *offset).map_err(Failure::Io)?;
        hasher.update(&*chunk);
        *offset += (n * size) as u64;
        let mut r = Reader {
            bytes: chunk,
            at: 0,
        };
        for _ in 0..n {
            out.push(f(&mut r)?);
        }
        left -= n;
    }
    Ok(out)
}

fn read_entry(r: &mut Reader<'_>, text: &str, provided: u32) -> Result<Entry, IndexCacheError> {
    let source_index = r.u32()?;
    let version_span = read_span(r, text)?;
    let version =
        Version::parse(span_text(text, version_span)).map_err(|_| corrupt("invalid version"))?;
    let mut spans = [Span::default(); SPANS - 1];
    for span in &mut spans {
        *span = read_span(r, text)?;
    }
    let [
        name,
        arch,
        filename,
        sha256,
        priority,
        section,
        source,
        description,
        depends,
        pre_depends,
        conflicts,
        breaks,
        replaces,
        provides_raw,
    ] = spans;
    let multi_arch = match r.u8()? {
        0 => MultiArch::No,
        1 => MultiArch::Same,
        2 => MultiArch::Foreign,
        3 => MultiArch::Allowed,
        _ => return Err(corrupt("bad Multi-Arch code")),
    };
    let essential = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(corrupt("bad Essential flag")),
    };
    let installed_size_kib = r.u64()?;
    let size_bytes = r.u64()?;
    let provides: Range<u32> = r.u32()?..r.u32()?;
    if provides.start > provides.end || provides.end > provided {
        return Err(corrupt("provides range outside the table"));
    }
    Ok(Entry {
        source_index,
        name,
        version,
        arch,
        multi_arch,
        essential,
        installed_size_kib,
        size_bytes,
        filename,
        sha256,
        priority,
        section,
        source,
        description,
        depends,
        pre_depends,
        conflicts,
        breaks,
        replaces,
        provides_raw,
        provides,
    })
}

fn read_provided(
    r: &mut Reader<'_>,
    text: &str,
    entries: u32,
) -> Result<Provided, IndexCacheError> {
    let name = read_span(r, text)?;
    let version = Span {
        start: r.u32()?,
        end: r.u32()?,
    };
    let version = if version.start == NO_VERSION && version.end == NO_VERSION {
        None
    } else {
        check_span(version, text)?;
        Some(
            Version::parse(span_text(text, version))
                .map_err(|_| corrupt("invalid provided version"))?,
        )
    };
    let provider = r.u32()?;
    if provider >= entries {
        return Err(corrupt("provider outside the table"));
    }
    Ok(Provided {
        name,
        version,
        provider,
    })
}

fn read_id(r: &mut Reader<'_>, bound: u32) -> Result<u32, IndexCacheError> {
    let id = r.u32()?;
    if id >= bound {
        return Err(corrupt("id outside the table"));
    }
    Ok(id)
}

/// Decodes from `source` of `len` bytes; the file is hashed while it is read, and nothing
/// is returned unless the digest matches.
fn decode_from(source: &(impl Source + ?Sized), len: u64) -> Result<PackageIndex, Failure> {
    let layout = read_trailer(source, len)?;
    let mut hasher = Sha256::new();
    let mut text = vec![0u8; layout.text_len];
    source.read_at(&mut text, 0).map_err(Failure::Io)?;
    hasher.update(&text);
    let text = String::from_utf8(text).map_err(|_| Failure::Corrupt("text is not UTF-8"))?;
    let count = |n: usize| u32::try_from(n).map_err(|_| Failure::Corrupt("count out of range"));
    let (n_entries, n_provided) = (count(layout.entries)?, count(layout.provided)?);
    let mut at = text.len() as u64;
    let entries = read_records(
        source,
        &mut at,
        (layout.entries, ENTRY_BYTES),
        &mut hasher,
        |r| read_entry(r, &text, n_provided),
    )?;
    let provided = read_records(
        source,
        &mut at,
        (layout.provided, PROVIDED_BYTES),
        &mut hasher,
        |r| read_provided(r, &text, n_entries),
    )?;
    let by_name = read_records(source, &mut at, (layout.entries, 4), &mut hasher, |r| {
        read_id(r, n_entries)
    })?;
    let provided_by_name = read_records(source, &mut at, (layout.provided, 4), &mut hasher, |r| {
        read_id(r, n_provided)
    })?;
    let mut tail = [0u8; TRAILER_BYTES + HASH_BYTES];
    source.read_at(&mut tail, at).map_err(Failure::Io)?;
    hasher.update(&tail[..TRAILER_BYTES]);
    if hasher.finalize().as_slice() != &tail[TRAILER_BYTES..] {
        return Err(Failure::Corrupt("SHA-256 mismatch"));
    }
    let name_of = |id: u32| span_text(&text, entries[id as usize].name);
    if by_name.windows(2).any(|w| name_of(w[0]) > name_of(w[1])) {
        return Err(Failure::Corrupt("names out of order"));
    }
    let provided_name = |i: u32| span_text(&text, provided[i as usize].name);
    if provided_by_name
        .windows(2)
        .any(|w| provided_name(w[0]) > provided_name(w[1]))
    {
        return Err(Failure::Corrupt("provided names out of order"));
    }
    Ok(PackageIndex {
        buf: text,
        arch: layout.arch,
        entries,
        by_name,
        provided,
        provided_by_name,
        warnings: Vec::new(),
    })
}

/// Decodes a parsed index held in memory (see the module documentation).
///
/// # Errors
/// [`IndexCacheError::Corrupt`] for anything but an intact file of this format.
pub fn decode(bytes: &[u8]) -> Result<PackageIndex, IndexCacheError> {
    decode_from(bytes, bytes.len() as u64).map_err(|e| match e {
        Failure::Corrupt(what) => corrupt(what),
        Failure::Io(_) => corrupt("truncated"),
    })
}

/// Replaces the last 32 bytes of `bytes` with the SHA-256 of the rest, so that a fuzzer's
/// input reaches the table checks behind the digest. Not for anything else.
#[doc(hidden)]
pub fn reseal(bytes: &mut [u8]) {
    if let Some(body_len) = bytes.len().checked_sub(HASH_BYTES) {
        let digest = Sha256::digest(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(&digest);
    }
}

/// Where the parsed form of the `Packages` text with `sha256` for `arch` is kept.
#[must_use]
pub fn entry_path(cache: &Cache, sha256: &str, arch: &str) -> PathBuf {
    let arch: String = arch
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let sha: String = sha256
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(64)
        .collect();
    cache
        .root()
        .join("parsed")
        .join(format!("v{FORMAT_VERSION}-{arch}-{sha}"))
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// An intact entry.
    Hit(PackageIndex),
    /// No entry.
    Miss,
    /// An entry that failed verification; it was removed.
    Corrupt(IndexCacheError),
}

/// The cached parsed index of the `Packages` text with `sha256`, if present and intact.
///
/// # Errors
/// Reading failed for another reason than absence.
pub fn load(cache: &Cache, sha256: &str, arch: &str) -> Result<Loaded, IndexCacheError> {
    let path = entry_path(cache, sha256, arch);
    let io = |source| IndexCacheError::Io {
        path: path.clone(),
        source,
    };
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Miss),
        Err(source) => return Err(io(source)),
    };
    let len = file.metadata().map_err(io)?.len();
    match decode_from(&file, len) {
        Ok(index) if index.arch == arch => Ok(Loaded::Hit(index)),
        Ok(_) => Ok(drop_entry(
            &path,
            corrupt("architecture differs from its name"),
        )),
        Err(Failure::Corrupt(what)) => Ok(drop_entry(&path, corrupt(what))),
        // Shorter than its trailer says (truncated while being read).
        Err(Failure::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Ok(drop_entry(&path, corrupt("truncated")))
        }
        Err(Failure::Io(source)) => Err(io(source)),
    }
}

fn drop_entry(path: &Path, error: IndexCacheError) -> Loaded {
    let _ = fs::remove_file(path);
    Loaded::Corrupt(error)
}

/// Stores the parsed form of `index` (parsed from the text with `sha256`), atomically.
/// Indices with warnings are not stored (see the module documentation).
///
/// # Errors
/// Writing failed, or the index does not fit the format.
pub fn store(cache: &Cache, sha256: &str, index: &PackageIndex) -> Result<(), IndexCacheError> {
    if !index.warnings.is_empty() {
        return Ok(());
    }
    store_bytes(cache, sha256, &index.arch, &encode(index)?)
}

/// Stores `bytes` from [`encode`] as the parsed form of the text with `sha256`, atomically.
///
/// # Errors
/// Writing failed.
pub fn store_bytes(
    cache: &Cache,
    sha256: &str,
    arch: &str,
    bytes: &[u8],
) -> Result<(), IndexCacheError> {
    let path = entry_path(cache, sha256, arch);
    let dir = path.parent().unwrap_or(cache.root()).to_owned();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| IndexCacheError::Io { path, source }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut tmp = tempfile_in(&dir).map_err(io(&dir))?;
    tmp.1.write_all(bytes).map_err(io(&tmp.0))?;
    tmp.1.sync_all().map_err(io(&tmp.0))?;
    fs::rename(&tmp.0, &path).map_err(io(&path))?;
    tmp.0 = PathBuf::new();
    Ok(())
}

/// A uniquely named temp file in `dir`, removed on drop unless its path is cleared.
struct Temp(PathBuf, fs::File);

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.0);
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<Temp> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path = dir.join(format!(".tmp-{}-{nanos}", std::process::id()));
    let file = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)?;
    Ok(Temp(path, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::tests::stanza;

    /// Everything an index answers, as text, to compare two indices.
    pub(crate) fn describe(index: &PackageIndex) -> Vec<String> {
        let mut out = vec![format!("arch {}", index.arch())];
        for p in index.iter() {
            out.push(format!(
                "{:?} {} {} {} {:?} {} {} {} {} {} {} {} {} {}|{}|{}|{}|{}|{}|{}|{}",
                p.id(),
                p.name(),
                p.version(),
                p.architecture(),
                p.multi_arch(),
                p.essential(),
                p.installed_size_kib(),
                p.size_bytes(),
                p.filename(),
                p.source_index(),
                p.sha256(),
                p.priority(),
                p.section(),
                p.source(),
                p.description(),
                p.depends_raw(),
                p.pre_depends_raw(),
                p.conflicts_raw(),
                p.breaks_raw(),
                p.replaces_raw(),
                p.provides_raw(),
            ));
            for (name, version) in p.provides() {
                out.push(format!("  provides {name} {version:?}"));
            }
        }
        for name in index.names() {
            let versions: Vec<String> = index.versions(name).map(|p| format!("{p:?}")).collect();
            out.push(format!("name {name}: {}", versions.join(", ")));
        }
        for name in index.virtual_names() {
            let providers: Vec<String> = index
                .providers(name)
                .map(|(p, v)| format!("{p:?}={v:?}"))
                .collect();
            out.push(format!("virtual {name}: {}", providers.join(", ")));
        }
        out
    }

    pub(crate) fn sample_texts() -> [String; 3] {
        let main = [
            stanza(
                "nginx",
                "1.26.3-3",
                "Multi-Arch: foreign\nDepends: libc6 (>= 2.34), libssl3t64\nProvides: httpd, nginx-abi (= 1)\nDescription: web server\nPriority: optional\nSection: httpd\nSource: nginx (1.26.3-3)",
            ),
            stanza("libc6", "2.41-12", "Essential: yes\nMulti-Arch: same"),
            stanza("libssl3t64", "3.5.1-1", "Provides: libssl3 (= 3.5.1-1)"),
            stanza("zlib1g", "1:1.3.dfsg-3", "Pre-Depends: libc6\nBreaks: a\nReplaces: b\nConflicts: c"),
        ]
        .concat();
        let updates = [stanza(
            "libssl3t64",
            "3.5.1-1+deb13u1",
            "Provides: libssl3 (= 3.5.1-1+deb13u1)",
        )]
        .concat();
        let security = [
            stanza("nginx", "1.26.3-3+deb13u1", "Provides: httpd"),
            stanza("aaa-ünïcode", "1.0", "Description: ünïcode"),
        ]
        .concat();
        [main, updates, security]
    }

    fn round_trip(text: &str) -> PackageIndex {
        let index = PackageIndex::parse(&[text], "amd64").unwrap();
        decode(&encode(&index).unwrap()).unwrap()
    }

    #[test]
    fn round_trip_and_merge_equal_parsing_the_texts_together() {
        let texts = sample_texts();
        let together = PackageIndex::parse(&texts, "amd64").unwrap();
        assert!(together.warnings().is_empty(), "{:?}", together.warnings());
        assert_eq!(together.len(), 7);
        let parts: Vec<PackageIndex> = texts.iter().map(|t| round_trip(t)).collect();
        let merged = PackageIndex::merge(parts).unwrap();
        assert_eq!(describe(&merged), describe(&together));
        assert_eq!(merged.candidate("nginx").unwrap().source_index(), 2);
        // The compact text is smaller than the input.
        assert!(merged.buf.len() < texts.iter().map(String::len).sum());
        let empty = PackageIndex::parse(&[""], "amd64").unwrap();
        assert_eq!(describe(&round_trip("")), describe(&empty));
    }

    #[test]
    fn every_flipped_bit_or_truncation_is_detected() {
        let index = PackageIndex::parse(&[&sample_texts()[0]], "amd64").unwrap();
        let bytes = encode(&index).unwrap();
        for at in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(
                matches!(decode(&bad), Err(IndexCacheError::Corrupt { .. })),
                "{at}"
            );
        }
        for len in [0, 1, 31, 32, bytes.len() - 1] {
            assert!(decode(&bytes[..len]).is_err(), "{len}");
        }
    }

    #[test]
    fn a_consistent_but_wrong_table_is_rejected_by_the_checks() {
        // A file whose hash matches but whose tables lie (as a buggy writer would make).
        let index = PackageIndex::parse(&[&sample_texts()[0]], "amd64").unwrap();
        let mut bytes = encode(&index).unwrap();
        bytes.truncate(bytes.len() - HASH_BYTES);
        // Point the first entry's name span past the text.
        let layout_text = {
            let mut with_hash = bytes.clone();
            with_hash.extend_from_slice(&Sha256::digest(&bytes));
            let Ok(layout) = read_trailer(&with_hash[..], with_hash.len() as u64) else {
                panic!("trailer");
            };
            layout.text_len
        };
        let name_at = layout_text + 4 + 8;
        bytes[name_at + 4..name_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        assert!(matches!(
            decode(&bytes),
            Err(IndexCacheError::Corrupt {
                what: "span outside the text"
            })
        ));
    }

    #[test]
    fn store_load_and_a_corrupted_entry_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let sha = "ab".repeat(32);
        assert!(matches!(load(&cache, &sha, "amd64").unwrap(), Loaded::Miss));
        let index = PackageIndex::parse(&[&sample_texts()[0]], "amd64").unwrap();
        store(&cache, &sha, &index).unwrap();
        let Loaded::Hit(back) = load(&cache, &sha, "amd64").unwrap() else {
            panic!("expected a hit");
        };
        assert_eq!(describe(&back), describe(&index));
        let path = entry_path(&cache, &sha, "amd64");
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            load(&cache, &sha, "amd64").unwrap(),
            Loaded::Corrupt(_)
        ));
        assert!(!path.exists());
        // Indices with skipped stanzas are not stored.
        let warned = PackageIndex::parse(&["Package: x\n\n"], "amd64").unwrap();
        assert!(!warned.warnings().is_empty());
        store(&cache, &sha, &warned).unwrap();
        assert!(!path.exists());
    }

    /// Seeds the fuzz corpus (`fuzz/corpus/index_cache/`) from the encoder.
    #[test]
    fn write_fuzz_seed_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/index_cache");
        if fs::create_dir_all(&dir).is_err() {
            return;
        }
        for (i, text) in sample_texts().iter().enumerate() {
            let index = PackageIndex::parse(&[text], "amd64").unwrap();
            let _ = fs::write(dir.join(format!("seed-{i}")), encode(&index).unwrap());
        }
    }
}
