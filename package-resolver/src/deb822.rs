//! Borrowing parser for the deb822 control-file syntax (`Release`, `InRelease`, `Packages`,
//! `.sources`), as described in `deb822(5)` and Debian Policy §5.1.
//!
//! ```text
//! Package: hello            <- field "Package", value "hello"
//! Description: short        <- first line of a multi-line value
//!  long text                <- continuation line (starts with space or tab)
//!  .                        <- kept literally; `.` means "empty line" to Description readers
//!                           <- blank line: end of paragraph
//! # comment                 <- ignored (only at the start of a line, outside a value)
//! ```
//!
//! Whitespace rules of [`Paragraph::get`]:
//! - the text after `Field:` is trimmed of leading and trailing whitespace;
//! - each continuation line loses its first character (the space or tab that marks it) and
//!   its trailing whitespace; any further leading whitespace is kept (it is significant in
//!   `Description`);
//! - lines are joined with `\n`; when the first line is empty (as in `SHA256:` of a Release
//!   file) the value starts directly with the first continuation line;
//! - `\r\n` line endings are accepted and the `\r` is dropped;
//! - a line of only spaces/tabs ends the paragraph like an empty line (apt does the same).
//!
//! Field names are matched ASCII case-insensitively. A paragraph may not contain the same
//! field twice. Nothing here allocates for single-line values: they borrow from the input.

use std::borrow::Cow;

/// Errors from [`parse`] and [`Paragraphs`]. Line numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Deb822Error {
    /// A line starting with whitespace appeared where no field was open.
    #[error("line {line}: continuation line without a field")]
    ContinuationWithoutField {
        /// Line number.
        line: usize,
    },
    /// A field line without `:`.
    #[error("line {line}: expected `Field: value`, found no `:`")]
    MissingColon {
        /// Line number.
        line: usize,
    },
    /// A field line whose name is empty or contains characters not allowed in field names.
    #[error("line {line}: invalid field name `{name}`")]
    InvalidFieldName {
        /// Line number.
        line: usize,
        /// The offending name (truncated to 64 bytes).
        name: String,
    },
    /// The same field appears twice in one paragraph.
    #[error("line {line}: duplicate field `{name}` (first at line {first_line})")]
    DuplicateField {
        /// Line number of the second occurrence.
        line: usize,
        /// Line number of the first occurrence.
        first_line: usize,
        /// Field name as written the second time.
        name: String,
    },
}

impl Deb822Error {
    /// 1-based line number of the error.
    #[must_use]
    pub fn line(&self) -> usize {
        match self {
            Self::ContinuationWithoutField { line }
            | Self::MissingColon { line }
            | Self::InvalidFieldName { line, .. }
            | Self::DuplicateField { line, .. } => *line,
        }
    }
}

/// One `Field: value` of a paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    name: &'a str,
    value: Cow<'a, str>,
    line: usize,
}

impl Field<'_> {
    /// Field name as written.
    #[must_use]
    pub fn name(&self) -> &str {
        self.name
    }

    /// Value, with the whitespace rules described in the module documentation.
    #[must_use]
    pub fn value(&self) -> &str {
        &self.value
    }

    /// 1-based line number of the field's first line.
    #[must_use]
    pub fn line(&self) -> usize {
        self.line
    }
}

/// One paragraph (stanza): fields in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    fields: Vec<Field<'a>>,
    line: usize,
}

impl<'a> Paragraph<'a> {
    /// Value of the field `name` (ASCII case-insensitive), if present.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.field(name).map(Field::value)
    }

    /// The field `name` (ASCII case-insensitive), with its line number.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// All fields in input order.
    pub fn fields(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields.iter()
    }

    /// Number of fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the paragraph has no fields (never true for parser output).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// 1-based line number of the paragraph's first field.
    #[must_use]
    pub fn line(&self) -> usize {
        self.line
    }
}

/// Parses all paragraphs of `text`.
///
/// # Errors
/// The first syntax error, with its line number.
pub fn parse(text: &str) -> Result<Vec<Paragraph<'_>>, Deb822Error> {
    paragraphs(text).collect()
}

/// Lazily iterates over the paragraphs of `text`; suited to very large files. After an
/// error the iterator skips to the next paragraph, so callers may record and continue.
#[must_use]
pub fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs {
        rest: text,
        line: 0,
    }
}

/// Iterator returned by [`paragraphs`].
#[derive(Debug, Clone)]
pub struct Paragraphs<'a> {
    rest: &'a str,
    /// Number of lines consumed so far.
    line: usize,
}

impl<'a> Paragraphs<'a> {
    /// Takes the next line (without its terminator and a trailing `\r`).
    fn next_line(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match memchr::memchr(b'\n', self.rest.as_bytes()) {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, ""),
        };
        self.rest = rest;
        self.line += 1;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }

    /// Peeks whether the next line is a continuation line.
    fn next_is_continuation(&self) -> bool {
        matches!(self.rest.as_bytes().first(), Some(b' ' | b'\t'))
            && !is_blank(first_line(self.rest))
    }

    /// After an error: drop lines up to and including the next blank line.
    fn skip_paragraph(&mut self) {
        while let Some(line) = self.next_line() {
            if is_blank(line) {
                break;
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    match memchr::memchr(b'\n', s.as_bytes()) {
        Some(i) => &s[..i],
        None => s,
    }
}

fn is_blank(line: &str) -> bool {
    line.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// Field names: printable US-ASCII except `:`, not starting with `#` or `-` (deb822(5)).
fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['#', '-'])
        && name
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Result<Paragraph<'a>, Deb822Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut fields: Vec<Field<'a>> = Vec::new();
        let mut start_line = 0;
        while let Some(line) = self.next_line() {
            if is_blank(line) {
                if fields.is_empty() {
                    continue;
                }
                break;
            }
            if line.starts_with('#') {
                continue;
            }
            let line_no = self.line;
            if line.starts_with([' ', '\t']) {
                self.skip_paragraph();
                return Some(Err(Deb822Error::ContinuationWithoutField { line: line_no }));
            }
            let Some(colon) = line.find(':') else {
                self.skip_paragraph();
                return Some(Err(Deb822Error::MissingColon { line: line_no }));
            };
            let name = &line[..colon];
            if !valid_field_name(name) {
                self.skip_paragraph();
                return Some(Err(Deb822Error::InvalidFieldName {
                    line: line_no,
                    name: truncate(name, 64).to_owned(),
                }));
            }
            if let Some(first) = fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)) {
                let first_line = first.line;
                self.skip_paragraph();
                return Some(Err(Deb822Error::DuplicateField {
                    line: line_no,
                    first_line,
                    name: name.to_owned(),
                }));
            }
            let first_value = line[colon + 1..].trim_matches([' ', '\t']);
            let mut value = Cow::Borrowed(first_value);
            while self.next_is_continuation() {
                let cont = self.next_line().expect("peeked a non-empty line");
                let cont = cont[1..].trim_end_matches([' ', '\t']);
                let owned = value.to_mut();
                if !owned.is_empty() {
                    owned.push('\n');
                }
                owned.push_str(cont);
            }
            if fields.is_empty() {
                start_line = line_no;
            }
            fields.push(Field {
                name,
                value,
                line: line_no,
            });
        }
        if fields.is_empty() {
            None
        } else {
            Some(Ok(Paragraph {
                fields,
                line: start_line,
            }))
        }
    }
}

/// Truncates to at most `max` bytes on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paragraphs_and_fields() {
        let text = "Package: a\nVersion: 1.0\n\n\nPackage: b\nversion:2\n";
        let ps = parse(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("package"), Some("a"));
        assert_eq!(ps[0].get("VERSION"), Some("1.0"));
        assert_eq!(ps[0].line(), 1);
        assert_eq!(ps[1].get("Version"), Some("2"));
        assert_eq!(ps[1].line(), 5);
        assert_eq!(ps[1].field("version").unwrap().line(), 6);
        assert_eq!(ps[1].get("Missing"), None);
    }

    #[test]
    fn continuation_lines_are_joined() {
        let text =
            "Description: short  \n long line\n  indented\n .\nSHA256:\n abc 12 main/x\n def 3 y\n";
        let ps = parse(text).unwrap();
        assert_eq!(
            ps[0].get("Description"),
            Some("short\nlong line\n indented\n.")
        );
        assert_eq!(ps[0].get("sha256"), Some("abc 12 main/x\ndef 3 y"));
    }

    #[test]
    fn comments_crlf_and_whitespace_only_separators() {
        let text = "# header\r\nA: 1\r\n# inside\r\nB:\t2 \r\n \t \r\nC: 3\r\n";
        let ps = parse(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("a"), Some("1"));
        assert_eq!(ps[0].get("b"), Some("2"));
        assert_eq!(ps[1].get("c"), Some("3"));
        assert!(parse("").unwrap().is_empty());
        assert!(parse("\n\n# only a comment\n").unwrap().is_empty());
    }

    #[test]
    fn continuation_without_field_fails() {
        let err = parse("A: 1\n\n b\n").unwrap_err();
        assert_eq!(err, Deb822Error::ContinuationWithoutField { line: 3 });
        assert_eq!(err.line(), 3);
    }

    #[test]
    fn missing_colon_fails() {
        let err = parse("A: 1\nB\n").unwrap_err();
        assert_eq!(err, Deb822Error::MissingColon { line: 2 });
        assert_eq!(
            err.to_string(),
            "line 2: expected `Field: value`, found no `:`"
        );
    }

    #[test]
    fn invalid_field_name_fails() {
        let err = parse(": x\n").unwrap_err();
        assert!(matches!(err, Deb822Error::InvalidFieldName { line: 1, .. }));
        let err = parse("A b: x\n").unwrap_err();
        assert!(matches!(err, Deb822Error::InvalidFieldName { line: 1, .. }));
    }

    #[test]
    fn duplicate_field_fails() {
        let err = parse("A: 1\nB: 2\na: 3\n").unwrap_err();
        assert_eq!(
            err,
            Deb822Error::DuplicateField {
                line: 3,
                first_line: 1,
                name: "a".into()
            }
        );
    }

    #[test]
    fn iterator_recovers_after_error() {
        let items: Vec<_> = paragraphs("A: 1\nbad\nC: 2\n\nD: 4\n").collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_err());
        assert_eq!(items[1].as_ref().unwrap().get("d"), Some("4"));
        assert_eq!(items[1].as_ref().unwrap().line(), 5);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for text in [
            "\u{feff}A: 1",
            "A:",
            ":",
            "\t",
            "é: ü\n ß",
            "A: 1\n\t\n",
            "\r",
            "-A: 1",
        ] {
            let _ = parse(text);
        }
    }
}
