//! Package relationship fields (Debian Policy §7.1): `Depends`, `Pre-Depends`, `Conflicts`,
//! `Breaks`, `Replaces`, `Provides`.
//!
//! ```text
//! libc6 (>= 2.36), debconf (>= 0.5) | debconf-2.0, python3:any, foo [amd64 !i386] <!nocheck>
//! └── clause ───┘  └──── clause: two alternatives ────┘  └─ :any ─┘  └ arch list ┘ └ profile ┘
//! ```
//!
//! - Operators: `<<`, `<=`, `=`, `>=`, `>>`; the obsolete `<` and `>` mean `<=` and `>=`
//!   (Policy §7.1 footnote; dpkg still accepts them).
//! - Architecture qualifier after the name (`:any`, `:native`, `:amd64`) is kept on the
//!   [`Relation`] for the solver (Multi-Arch, Policy §7.1 and the MultiArch spec).
//! - Architecture restriction lists (`[amd64 !i386]`, wildcards like `linux-any`) are
//!   evaluated for the target architecture given to [`parse_relations`]: an alternative that
//!   does not apply is removed, and a clause whose alternatives all vanish is removed.
//! - Build profile formulas (`<!nocheck>`) only matter for source packages; they are parsed
//!   and dropped.
//!
//! Parsed relations borrow names from the field text, so parsing a whole `Packages` file
//! allocates only for versions.

use std::fmt;

use crate::version::{Version, VersionError};

/// Errors from relation parsing. `offset` is the byte offset into the field text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationError {
    /// An alternative without a package name (`a | | b`, `(>= 1)`).
    #[error("missing package name at byte {offset}")]
    MissingName {
        /// Byte offset.
        offset: usize,
    },
    /// A package name with characters outside `[a-z0-9+.-]` (Policy §5.6.1).
    #[error("invalid package name `{name}` at byte {offset}")]
    InvalidName {
        /// Byte offset.
        offset: usize,
        /// The name as written.
        name: String,
    },
    /// An empty architecture qualifier (`foo:`).
    #[error("empty architecture qualifier at byte {offset}")]
    EmptyArchQualifier {
        /// Byte offset.
        offset: usize,
    },
    /// `(` without `)`.
    #[error("unterminated version constraint at byte {offset}")]
    UnterminatedConstraint {
        /// Byte offset.
        offset: usize,
    },
    /// A constraint whose operator is not one of `<< <= = >= >> < >`.
    #[error("invalid version operator at byte {offset}")]
    InvalidOperator {
        /// Byte offset.
        offset: usize,
    },
    /// A constraint whose version does not parse.
    #[error("invalid version in constraint at byte {offset}")]
    InvalidVersion {
        /// Byte offset.
        offset: usize,
        /// Why the version is invalid.
        #[source]
        source: VersionError,
    },
    /// `[` without `]`, `<` without `>`, or an empty list.
    #[error("unterminated or empty `{open}` list at byte {offset}")]
    UnterminatedList {
        /// Byte offset.
        offset: usize,
        /// The opening bracket.
        open: char,
    },
    /// Anything else where a `,`, `|` or the end of the field was expected.
    #[error("unexpected `{character}` at byte {offset}")]
    UnexpectedCharacter {
        /// Byte offset.
        offset: usize,
        /// The character found.
        character: char,
    },
    /// `Provides` with alternatives, or with an operator other than `=` (Policy §7.5).
    #[error("invalid `Provides` entry `{entry}`: only `name` or `name (= version)` is allowed")]
    InvalidProvides {
        /// The entry as written.
        entry: String,
    },
}

/// Version relation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `<<` strictly earlier.
    Lt,
    /// `<=` (also the obsolete `<`).
    Le,
    /// `=` exactly equal.
    Eq,
    /// `>=` (also the obsolete `>`).
    Ge,
    /// `>>` strictly later.
    Gt,
}

impl Op {
    /// Whether `candidate op reference` holds.
    #[must_use]
    pub fn holds(self, candidate: &Version, reference: &Version) -> bool {
        let ordering = candidate.cmp(reference);
        match self {
            Self::Lt => ordering.is_lt(),
            Self::Le => ordering.is_le(),
            Self::Eq => ordering.is_eq(),
            Self::Ge => ordering.is_ge(),
            Self::Gt => ordering.is_gt(),
        }
    }

    /// The canonical spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lt => "<<",
            Self::Le => "<=",
            Self::Eq => "=",
            Self::Ge => ">=",
            Self::Gt => ">>",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version constraint `(op version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// Operator.
    pub op: Op,
    /// Reference version.
    pub version: Version,
}

impl Constraint {
    /// Whether `candidate` satisfies the constraint.
    #[must_use]
    pub fn matches(&self, candidate: &Version) -> bool {
        self.op.holds(candidate, &self.version)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.version)
    }
}

/// One alternative: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation<'a> {
    /// Package (or virtual package) name.
    pub name: &'a str,
    /// Architecture qualifier after `:` (`any`, `native`, `amd64`), if any.
    pub arch_qualifier: Option<&'a str>,
    /// Version constraint, if any.
    pub constraint: Option<Constraint>,
}

impl Relation<'_> {
    /// Whether `version` satisfies the constraint (true when unversioned).
    #[must_use]
    pub fn version_matches(&self, version: &Version) -> bool {
        self.constraint.as_ref().is_none_or(|c| c.matches(version))
    }
}

impl fmt::Display for Relation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        if let Some(arch) = self.arch_qualifier {
            write!(f, ":{arch}")?;
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// A comma-separated clause: one or more `|` alternatives, any of which satisfies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause<'a> {
    /// Alternatives that apply to the target architecture, in the order written.
    pub alternatives: Vec<Relation<'a>>,
}

impl fmt::Display for Clause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, alternative) in self.alternatives.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{alternative}")?;
        }
        Ok(())
    }
}

/// Parses a relationship field for the target architecture `arch` (e.g. `amd64`).
///
/// # Errors
/// The first syntax error with its byte offset.
pub fn parse_relations<'a>(text: &'a str, arch: &str) -> Result<Vec<Clause<'a>>, RelationError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let mut clauses = Vec::new();
    loop {
        parser.skip_ws();
        if parser.at_end() {
            break;
        }
        if parser.peek() == Some(b',') {
            // Empty clause (`a, , b` or a trailing comma): tolerated like apt does.
            parser.pos += 1;
            continue;
        }
        let mut alternatives = Vec::new();
        loop {
            let (relation, applies) = parser.alternative(arch)?;
            if applies {
                alternatives.push(relation);
            }
            parser.skip_ws();
            match parser.peek() {
                Some(b'|') => parser.pos += 1,
                Some(b',') => {
                    parser.pos += 1;
                    break;
                }
                None => break,
                Some(_) => return Err(parser.unexpected()),
            }
        }
        if !alternatives.is_empty() {
            clauses.push(Clause { alternatives });
        }
    }
    Ok(clauses)
}

/// Parses a single relation without alternatives, such as a root request `nginx (>= 1.26)`.
///
/// # Errors
/// A syntax error, or [`RelationError::UnexpectedCharacter`] for trailing text.
pub fn parse_relation(text: &str) -> Result<Relation<'_>, RelationError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    let (relation, _) = parser.alternative("")?;
    parser.skip_ws();
    if parser.at_end() {
        Ok(relation)
    } else {
        Err(parser.unexpected())
    }
}

/// Parses a `Provides` field: a list of `name` or `name (= version)` (Policy §7.5).
///
/// # Errors
/// Syntax errors, or [`RelationError::InvalidProvides`] for alternatives or other operators.
pub fn parse_provides<'a>(text: &'a str, arch: &str) -> Result<Vec<Relation<'a>>, RelationError> {
    let clauses = parse_relations(text, arch)?;
    let mut out = Vec::with_capacity(clauses.len());
    for mut clause in clauses {
        let valid = clause.alternatives.len() == 1
            && clause.alternatives[0]
                .constraint
                .as_ref()
                .is_none_or(|c| c.op == Op::Eq);
        if !valid {
            return Err(RelationError::InvalidProvides {
                entry: clause.to_string(),
            });
        }
        out.push(clause.alternatives.remove(0));
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
}

impl<'a> Parser<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn unexpected(&self) -> RelationError {
        let character = self.text[self.pos..].chars().next().unwrap_or('\0');
        RelationError::UnexpectedCharacter {
            offset: self.pos,
            character,
        }
    }

    /// Takes bytes while `pred` holds.
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// One alternative; returns whether it applies to `arch` (always true when `arch` is
    /// empty, which is used for requests that carry no restriction lists).
    fn alternative(&mut self, arch: &str) -> Result<(Relation<'a>, bool), RelationError> {
        self.skip_ws();
        let start = self.pos;
        // Accept uppercase and `_` here only to report them as invalid names, not as
        // "unexpected character" somewhere later.
        let name = self.take_while(|b| is_name_byte(b) || b.is_ascii_uppercase() || b == b'_');
        if name.is_empty() {
            return Err(RelationError::MissingName { offset: start });
        }
        if !name.bytes().all(is_name_byte) {
            return Err(RelationError::InvalidName {
                offset: start,
                name: name.to_owned(),
            });
        }
        let mut arch_qualifier = None;
        if self.peek() == Some(b':') {
            self.pos += 1;
            let qualifier_start = self.pos;
            let qualifier = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-');
            if qualifier.is_empty() {
                return Err(RelationError::EmptyArchQualifier {
                    offset: qualifier_start,
                });
            }
            arch_qualifier = Some(qualifier);
        }
        self.skip_ws();
        let mut constraint = None;
        if self.peek() == Some(b'(') {
            constraint = Some(self.constraint()?);
            self.skip_ws();
        }
        let mut applies = true;
        if self.peek() == Some(b'[') {
            let list_start = self.pos;
            let list = self.bracketed(b'[', b']')?;
            applies = arch.is_empty() || arch_list_matches(list, arch);
            if list.split_ascii_whitespace().next().is_none() {
                return Err(RelationError::UnterminatedList {
                    offset: list_start,
                    open: '[',
                });
            }
            self.skip_ws();
        }
        while self.peek() == Some(b'<') {
            // Build profiles: irrelevant for binary packages.
            self.bracketed(b'<', b'>')?;
            self.skip_ws();
        }
        Ok((
            Relation {
                name,
                arch_qualifier,
                constraint,
            },
            applies,
        ))
    }

    fn constraint(&mut self) -> Result<Constraint, RelationError> {
        let open = self.pos;
        self.pos += 1; // '('
        self.skip_ws();
        let op_start = self.pos;
        let op_text = self.take_while(|b| matches!(b, b'<' | b'>' | b'='));
        let op = match op_text {
            "<<" => Op::Lt,
            "<=" | "<" => Op::Le,
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            _ => return Err(RelationError::InvalidOperator { offset: op_start }),
        };
        self.skip_ws();
        let version_start = self.pos;
        let Some(close) = memchr::memchr(b')', &self.bytes[self.pos..]) else {
            return Err(RelationError::UnterminatedConstraint { offset: open });
        };
        let version_text = &self.text[self.pos..self.pos + close];
        self.pos += close + 1;
        let version =
            Version::parse(version_text).map_err(|source| RelationError::InvalidVersion {
                offset: version_start,
                source,
            })?;
        Ok(Constraint { op, version })
    }

    /// Returns the text between `open` and `close` (exclusive) and moves past `close`.
    fn bracketed(&mut self, open: u8, close: u8) -> Result<&'a str, RelationError> {
        let start = self.pos;
        self.pos += 1;
        let Some(end) = memchr::memchr(close, &self.bytes[self.pos..]) else {
            return Err(RelationError::UnterminatedList {
                offset: start,
                open: char::from(open),
            });
        };
        let inner = &self.text[self.pos..self.pos + end];
        if inner
            .bytes()
            .any(|b| matches!(b, b',' | b'|' | b'(' | b')' | b'[' | b'<'))
        {
            return Err(RelationError::UnterminatedList {
                offset: start,
                open: char::from(open),
            });
        }
        self.pos += end + 1;
        Ok(inner)
    }
}

/// Evaluates an architecture restriction list (`amd64 !i386 linux-any`) for `arch`.
///
/// Positive entries: applies when any entry matches. Negated entries: applies unless one of
/// them matches. Policy forbids mixing both; if mixed, a matching positive entry wins and
/// otherwise negations are honoured (dpkg's behaviour).
#[must_use]
pub fn arch_list_matches(list: &str, arch: &str) -> bool {
    let mut any_positive = false;
    let mut positive_match = false;
    let mut negative_match = false;
    for token in list.split_ascii_whitespace() {
        if let Some(negated) = token.strip_prefix('!') {
            negative_match |= arch_matches(negated, arch);
        } else {
            any_positive = true;
            positive_match |= arch_matches(token, arch);
        }
    }
    if positive_match {
        true
    } else if any_positive {
        false
    } else {
        !negative_match
    }
}

/// Whether the architecture name or wildcard `pattern` (`any`, `linux-any`, `any-amd64`)
/// matches the concrete Debian architecture `arch`.
#[must_use]
pub fn arch_matches(pattern: &str, arch: &str) -> bool {
    if pattern == arch || pattern == "any" {
        return true;
    }
    // A Debian architecture is `[os-]cpu` where a bare cpu means Linux.
    let (os, cpu) = arch.split_once('-').unwrap_or(("linux", arch));
    match pattern.split_once('-') {
        Some(("any", pattern_cpu)) => pattern_cpu == cpu,
        Some((pattern_os, "any")) => pattern_os == os,
        Some((pattern_os, pattern_cpu)) => pattern_os == os && pattern_cpu == cpu,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(text: &str) -> Vec<Clause<'_>> {
        parse_relations(text, "amd64").unwrap()
    }

    #[test]
    fn parses_clauses_alternatives_and_constraints() {
        let clauses =
            rel("libc6 (>= 2.36), debconf (>= 0.5) | debconf-2.0,python3:any,\n  zlib1g (<<1:2)");
        assert_eq!(clauses.len(), 4);
        assert_eq!(clauses[0].alternatives[0].name, "libc6");
        let c = clauses[0].alternatives[0].constraint.as_ref().unwrap();
        assert_eq!((c.op, c.version.as_str()), (Op::Ge, "2.36"));
        assert_eq!(clauses[1].alternatives.len(), 2);
        assert_eq!(clauses[1].alternatives[1].name, "debconf-2.0");
        assert_eq!(clauses[2].alternatives[0].arch_qualifier, Some("any"));
        assert_eq!(clauses[3].to_string(), "zlib1g (<< 1:2)");
        assert_eq!(clauses[1].to_string(), "debconf (>= 0.5) | debconf-2.0");
    }

    #[test]
    fn all_operators_including_obsolete() {
        let cases = [
            ("<<", Op::Lt),
            ("<=", Op::Le),
            ("<", Op::Le),
            ("=", Op::Eq),
            (">=", Op::Ge),
            (">", Op::Ge),
            (">>", Op::Gt),
        ];
        for (text, op) in cases {
            let field = format!("a ({text} 1.0)");
            let clauses = parse_relations(&field, "amd64").unwrap();
            assert_eq!(
                clauses[0].alternatives[0].constraint.as_ref().unwrap().op,
                op
            );
        }
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(Op::Lt.holds(&v("1"), &v("2")));
        assert!(!Op::Lt.holds(&v("2"), &v("2")));
        assert!(Op::Le.holds(&v("2"), &v("2")));
        assert!(Op::Eq.holds(&v("2.0"), &v("2.00")));
        assert!(Op::Gt.holds(&v("2.1"), &v("2")));
        assert!(!Op::Ge.holds(&v("1.9"), &v("2")));
    }

    #[test]
    fn arch_restrictions_are_evaluated() {
        let clauses = rel(
            "a [amd64], b [!amd64], c [i386 arm64] | d, e [!i386 !arm64], f [linux-any], g [any-i386]",
        );
        let names: Vec<String> = clauses.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["a", "d", "e", "f"]);
        assert!(arch_matches("any-amd64", "amd64"));
        assert!(!arch_matches("kfreebsd-any", "amd64"));
        assert!(arch_list_matches("amd64 !i386", "amd64"));
    }

    #[test]
    fn build_profiles_are_dropped() {
        let clauses = rel("a <!nocheck>, b [amd64] <!cross> <stage1 !nodoc>");
        assert_eq!(clauses.len(), 2);
        assert_eq!(clauses[1].to_string(), "b");
    }

    #[test]
    fn empty_fields_and_clauses_are_tolerated() {
        assert!(rel("").is_empty());
        assert!(rel("  \n ").is_empty());
        assert_eq!(rel("a, , b,").len(), 2);
    }

    #[test]
    fn parses_single_relation() {
        let r = parse_relation(" nginx (>= 1.26) ").unwrap();
        assert_eq!(r.name, "nginx");
        assert_eq!(r.to_string(), "nginx (>= 1.26)");
        assert!(parse_relation("a | b").is_err());
    }

    #[test]
    fn provides_allow_only_equal() {
        let p = parse_provides("foo (= 1.2), bar, baz:amd64", "amd64").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].constraint.as_ref().unwrap().version.as_str(), "1.2");
        assert!(matches!(
            parse_provides("foo (>= 1)", "amd64"),
            Err(RelationError::InvalidProvides { .. })
        ));
        assert!(matches!(
            parse_provides("foo | bar", "amd64"),
            Err(RelationError::InvalidProvides { .. })
        ));
    }

    #[test]
    fn errors_have_offsets() {
        let err = |text: &str| parse_relations(text, "amd64").unwrap_err();
        assert_eq!(err("a | | b"), RelationError::MissingName { offset: 4 });
        assert_eq!(
            err("a, Foo"),
            RelationError::InvalidName {
                offset: 3,
                name: "Foo".into()
            }
        );
        assert_eq!(err("a:"), RelationError::EmptyArchQualifier { offset: 2 });
        assert_eq!(
            err("a (>= 1"),
            RelationError::UnterminatedConstraint { offset: 2 }
        );
        assert_eq!(err("a (~ 1)"), RelationError::InvalidOperator { offset: 3 });
        assert!(matches!(
            err("a (>= x)"),
            RelationError::InvalidVersion { offset: 6, .. }
        ));
        assert_eq!(
            err("a [amd64"),
            RelationError::UnterminatedList {
                offset: 2,
                open: '['
            }
        );
        assert_eq!(
            err("a []"),
            RelationError::UnterminatedList {
                offset: 2,
                open: '['
            }
        );
        assert_eq!(
            err("a <!x"),
            RelationError::UnterminatedList {
                offset: 2,
                open: '<'
            }
        );
        assert_eq!(
            err("a b"),
            RelationError::UnexpectedCharacter {
                offset: 2,
                character: 'b'
            }
        );
        assert_eq!(
            err("a (= 1) x"),
            RelationError::UnexpectedCharacter {
                offset: 8,
                character: 'x'
            }
        );
    }

    #[test]
    fn odd_input_never_panics() {
        for text in [
            "(", ")", "[", "<", "a (", "a ()", "a (=)", "é", "a:é", "a [", "|", ",|,",
        ] {
            let _ = parse_relations(text, "amd64");
            let _ = parse_relation(text);
        }
    }
}
