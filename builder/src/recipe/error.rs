//! Recipe diagnostics: what is wrong (`RecipeErrorKind`), where (`span`), and the source
//! text the renderer quotes.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// What is wrong with a recipe. Display is the headline of the diagnostic; `label` is the
/// text under the caret and `help` the hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipeErrorKind {
    /// The TOML itself does not parse.
    #[error("invalid TOML: {message}")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// A key that no table of the schema has.
    #[error("unknown key `{key}`")]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The keys valid at that place.
        expected: Vec<String>,
    },
    /// A value of the wrong TOML type.
    #[error("{}", wrong_type(.key, .expected, .found))]
    WrongType {
        /// Dotted key path (`vm.cpus`); empty when unknown.
        key: String,
        /// What the schema wants.
        expected: String,
        /// What the recipe has.
        found: String,
    },
    /// A required key is absent.
    #[error("missing key `{key}`")]
    MissingKey {
        /// The missing key.
        key: String,
    },
    /// A value that does not satisfy the schema's rule.
    #[error("invalid value `{value}` for `{key}`")]
    Invalid {
        /// Dotted key path (`appliance.name`).
        key: String,
        /// The value as written (possibly shortened).
        value: String,
        /// What was expected, shown under the caret.
        reason: String,
        /// An optional hint.
        hint: Option<String>,
    },
    /// A size that is not an integer or a number with a binary unit.
    #[error("invalid size `{value}` for `{key}`")]
    InvalidSize {
        /// Dotted key path.
        key: String,
        /// The value as written.
        value: String,
        /// Why it was rejected.
        reason: String,
        /// Corrected spelling, if clear.
        suggestion: Option<String>,
    },
    /// A value outside a fixed set of choices.
    #[error("unknown {what} `{value}`")]
    UnknownChoice {
        /// What kind of value (`suite`, `firmware`).
        what: &'static str,
        /// The value as written.
        value: String,
        /// The valid values.
        choices: Vec<&'static str>,
    },
    /// A file the recipe refers to does not exist.
    #[error("file `{}` not found", .path.display())]
    MissingFile {
        /// The key whose value names the file.
        key: String,
        /// The resolved path that was looked for.
        path: PathBuf,
    },
    /// The same name is defined twice.
    #[error("duplicate {what} `{name}`")]
    Duplicate {
        /// What kind of thing (`service`, `user`).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A reference to something the recipe does not define.
    #[error("unknown {what} `{name}`")]
    UnknownReference {
        /// What kind of thing is referenced.
        what: &'static str,
        /// The referenced name.
        name: String,
        /// Names that could be meant.
        known: Vec<String>,
        /// How to define it.
        hint: Option<String>,
    },
    /// Services whose `after` lists form a cycle.
    #[error("services wait for each other in a cycle: {}", .cycle.join(" -> "))]
    DependencyCycle {
        /// The services in the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// A package the suite's index does not have (`jeos check` with an index).
    #[error("unknown package `{name}` in `{suite}`")]
    UnknownPackage {
        /// The package name.
        name: String,
        /// The suite searched.
        suite: String,
        /// Close names from the index.
        suggestions: Vec<String>,
    },
    /// A service's or task's program that no package of the closure ships (`jeos check`
    /// with an index).
    #[error("no package of the closure provides `{program}`")]
    MissingProgram {
        /// The program (`exec[0]`).
        program: String,
        /// `service` or `task`.
        what: &'static str,
    },
    /// The programs could not be checked against the closure (a warning): why.
    #[error("the service and task programs were not checked: {why}")]
    ProgramsNotChecked {
        /// Why (e.g. the packages are not in the cache).
        why: String,
    },
    /// The requested packages cannot be installed together.
    #[error("the packages cannot be resolved: {message}")]
    Unresolvable {
        /// The solver's explanation.
        message: String,
    },
    /// A check probes a port that no service's readiness probe names (a warning).
    #[error("check `{check}` probes port {port}, which no service's `ready` names")]
    UnprobedPort {
        /// The check's name.
        check: String,
        /// The port.
        port: i64,
    },
    /// A table needs exactly one of several keys.
    #[error("`{table}` needs exactly one of {}", backticked(.keys))]
    ExactlyOne {
        /// The table (`service.ready`, `test.check`).
        table: String,
        /// The alternatives.
        keys: Vec<&'static str>,
        /// How many were given.
        found: usize,
    },
}

fn wrong_type(key: &str, expected: &str, found: &str) -> String {
    if key.is_empty() {
        format!("expected {expected}, found {found}")
    } else {
        format!("`{key}` must be {expected}, found {found}")
    }
}

fn backticked(items: &[impl AsRef<str>]) -> String {
    let quoted: Vec<String> = items.iter().map(|k| format!("`{}`", k.as_ref())).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

/// Returns the candidate closest to `input`, if close enough to be a plausible typo.
pub(crate) fn closest<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let normalized = input.to_ascii_lowercase().replace('_', "-");
    candidates
        .into_iter()
        .map(|c| {
            let distance = if c == normalized {
                0
            } else {
                strsim::damerau_levenshtein(&normalized, c).max(1)
            };
            (distance, c)
        })
        .filter(|(distance, c)| *distance <= 2.max(c.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

impl RecipeErrorKind {
    /// The text under the caret.
    pub fn label(&self) -> String {
        match self {
            Self::Syntax { .. } => "here".into(),
            Self::UnknownKey { .. } => "unknown key".into(),
            Self::WrongType { expected, .. } => format!("expected {expected}"),
            Self::MissingKey { key } => format!("`{key}` is required in this table"),
            Self::Invalid { reason, .. } | Self::InvalidSize { reason, .. } => reason.clone(),
            Self::UnknownChoice { what, .. } => format!("not a known {what}"),
            Self::MissingFile { .. } => "no such file".into(),
            Self::Duplicate { .. } => "defined again here".into(),
            Self::UnknownReference { what, .. } => format!("no such {what} in this recipe"),
            Self::DependencyCycle { .. } => "this service is part of the cycle".into(),
            Self::UnprobedPort { .. } => "no service is known to listen here".into(),
            Self::UnknownPackage { .. } => "not in the package index".into(),
            Self::MissingProgram { what, .. } => {
                format!("this {what}'s program is not in the image")
            }
            Self::ProgramsNotChecked { .. } => "not checked".into(),
            Self::Unresolvable { .. } => "resolving these fails".into(),
            Self::ExactlyOne { found: 0, .. } => "none given".into(),
            Self::ExactlyOne { found, .. } => format!("{found} given"),
        }
    }

    /// The hint shown after the snippet.
    pub fn help(&self) -> Option<String> {
        match self {
            Self::Syntax { message }
                if ["invalid boolean", "invalid float", "invalid integer", "invalid datetime"]
                    .iter()
                    .any(|m| message.contains(m)) =>
            {
                Some("text values need double quotes, e.g. `suite = \"trixie\"`".into())
            }
            Self::Syntax { .. } | Self::MissingKey { .. } => None,
            Self::WrongType {
                expected, found, ..
            } => match (expected.as_str(), found.as_str()) {
                ("an integer", f) if f.starts_with("a string") => {
                    Some("write the number without quotes".into())
                }
                ("a string", _) => Some("put the value in double quotes".into()),
                ("an array", _) => Some("write a list, e.g. `[\"value\"]`".into()),
                _ => None,
            },
            Self::UnknownKey { key, expected } => {
                let names = expected.iter().map(String::as_str);
                match closest(key, names) {
                    Some(close) => Some(format!("did you mean `{close}`?")),
                    None if expected.is_empty() => Some("this table takes no keys".into()),
                    None => Some(format!("valid keys here: {}", backticked(expected))),
                }
            }
            Self::Invalid { hint, .. } => hint.clone(),
            Self::InvalidSize { suggestion, .. } => Some(match suggestion {
                Some(s) => format!("use `{s}` (units: KiB, MiB, GiB)"),
                None => {
                    "write an integer number of bytes or a size like `64MiB` (units: KiB, MiB, GiB)"
                        .into()
                }
            }),
            Self::UnknownChoice { value, choices, .. } => {
                Some(match closest(value, choices.iter().copied()) {
                    Some(close) => {
                        format!("did you mean `{close}`? (one of {})", backticked(choices))
                    }
                    None => format!("use one of {}", backticked(choices)),
                })
            }
            Self::MissingFile { key, .. } => Some(format!(
                "`{key}` paths are relative to the directory that holds the recipe"
            )),
            Self::Duplicate { what, .. } => Some(format!("each {what} must have a unique name")),
            Self::UnknownReference {
                known, hint, name, ..
            } => match closest(name, known.iter().map(String::as_str)) {
                Some(close) => Some(format!("did you mean `{close}`?")),
                None => hint.clone(),
            },
            Self::DependencyCycle { .. } => {
                Some("remove one of the `after` entries to break the cycle".into())
            }
            Self::ExactlyOne { keys, .. } => Some(format!("keep one of {}", backticked(keys))),
            Self::UnknownPackage {
                name, suggestions, ..
            } => Some(match closest(name, suggestions.iter().map(String::as_str)) {
                Some(close) => format!("did you mean `{close}`?"),
                None if !suggestions.is_empty() => {
                    format!("similar names: {}", backticked(suggestions))
                }
                None => "check the name and the recipe's `[source] suite` and `components`".into(),
            }),
            Self::Unresolvable { .. } => Some(
                "`jeos resolve --why PACKAGE RECIPE` shows why a package is needed; `exclude` drops one".into(),
            ),
            Self::ProgramsNotChecked { .. } => Some(
                "`jeos check --online` downloads the packages (or build once: the cache then has them)".into(),
            ),
            Self::MissingProgram { program, .. } => Some(
                match crate::rootfs::executables::provided_by(program) {
                    Some(package) => format!(
                        "`{package}` ships it: add it to `[packages] install`, or install the file with a `[[file]]`"
                    ),
                    None => "add the package that ships it to `[packages] install` (`apt-file search` names it), check the path, or install the file with a `[[file]]`".into(),
                },
            ),
            Self::UnprobedPort { port, .. } => Some(format!(
                "add `ready = {{ tcp = {port} }}` to the service that listens on it, so `jeos test` waits for it"
            )),
        }
    }
}

/// One problem in one recipe, with the recipe's text so it can be rendered on its own.
#[derive(Clone)]
pub struct RecipeError {
    /// What is wrong.
    pub kind: RecipeErrorKind,
    /// Byte range in the recipe text.
    pub span: Range<usize>,
    /// A warning: reported, but the recipe is still valid.
    pub warning: bool,
    source: Arc<NamedSource<Arc<str>>>,
    text: Arc<str>,
}

impl RecipeError {
    pub(crate) fn new(
        kind: RecipeErrorKind,
        span: Range<usize>,
        name: &str,
        text: &Arc<str>,
    ) -> Self {
        let len = text.len();
        let start = span.start.min(len);
        let end = span.end.clamp(start, len);
        Self {
            kind,
            span: start..end,
            warning: false,
            source: Arc::new(NamedSource::new(name, Arc::clone(text)).with_language("toml")),
            text: Arc::clone(text),
        }
    }

    /// The name the recipe is shown under (usually its path as given).
    pub fn file_name(&self) -> &str {
        self.source.name()
    }

    /// One-based line and column (in characters) of the start of the span.
    pub fn line_column(&self) -> (usize, usize) {
        let before = &self.text[..floor_char_boundary(&self.text, self.span.start)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

impl fmt::Debug for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecipeError")
            .field("file", &self.file_name())
            .field("kind", &self.kind)
            .field("span", &self.span)
            .finish()
    }
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for RecipeError {}

impl Diagnostic for RecipeError {
    fn severity(&self) -> Option<miette::Severity> {
        Some(if self.warning {
            miette::Severity::Warning
        } else {
            miette::Severity::Error
        })
    }

    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        None
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.kind
            .help()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self.source.as_ref())
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = LabeledSpan::new_with_span(Some(self.kind.label()), self.span.clone());
        Some(Box::new(std::iter::once(span)))
    }
}

/// Every problem found in one recipe file (never empty).
#[derive(Debug, Clone, thiserror::Error)]
#[error("recipe `{name}` has {} problem{}", .errors.len(), if .errors.len() == 1 { "" } else { "s" })]
pub struct RecipeErrors {
    /// The name the recipe is shown under.
    pub name: String,
    /// The problems, in the order of the file.
    pub errors: Vec<RecipeError>,
}

impl Diagnostic for RecipeErrors {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.errors.iter().map(|e| e as &dyn Diagnostic)))
    }
}

/// Reading a recipe failed before it could be parsed.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum RecipeLoadError {
    /// The file could not be read.
    #[error("cannot read recipe `{}`", .path.display())]
    Io {
        /// The recipe path as given.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The recipe was read but has problems.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] RecipeErrors),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_prefers_kebab_spelling() {
        let keys = ["size", "free-space", "formats", "filesystem"];
        assert_eq!(closest("free_space", keys), Some("free-space"));
        assert_eq!(closest("fromats", keys), Some("formats"));
        assert_eq!(closest("colour", keys), None);
    }

    #[test]
    fn line_column_counts_characters() {
        let text: Arc<str> = Arc::from("a = 1\nbé = \"x\"\n");
        let err = RecipeError::new(
            RecipeErrorKind::MissingKey { key: "k".into() },
            12..13,
            "r.toml",
            &text,
        );
        assert_eq!(err.line_column(), (2, 6));
    }

    #[test]
    fn backticked_lists() {
        assert_eq!(backticked(&["a"]), "`a`");
        assert_eq!(backticked(&["a", "b", "c"]), "`a`, `b`, or `c`");
    }
}
