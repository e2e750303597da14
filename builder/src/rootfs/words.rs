//! Splitting a line into words the way a POSIX shell (and systemd's config parsers) would:
//! blanks separate words, `'…'` is literal, `"…"` keeps blanks and honours `\"`, `\\`,
//! `\$` and `` \` ``, and an unquoted backslash escapes the next character. Parameter
//! expansion and command substitution are not performed: a word containing an unescaped
//! `$` or `` ` `` is marked [`Word::expands`] so callers can skip it.

/// One word of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word with quotes removed.
    pub text: String,
    /// It contains an unquoted or double-quoted `$` or backquote: its value is only known
    /// at run time.
    pub expands: bool,
    /// It is a shell control operator (`;`, `&&`, `||`, `|`, `&`, `(`, `)`), only produced
    /// when splitting in shell mode.
    pub operator: bool,
}

/// Why a line could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnterminatedQuote;

/// Splits `line` into words. In `shell` mode, unquoted `;`, `&`, `|`, `(` and `)` end a word
/// and become operator words of their own, and `#` at the start of a word begins a comment.
pub fn split_words(line: &str, shell: bool) -> Result<Vec<Word>, UnterminatedQuote> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    let mut current: Option<Word> = None;
    let new_word = || Word {
        text: String::new(),
        expands: false,
        operator: false,
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if let Some(word) = current.take() {
                    words.push(word);
                }
            }
            '#' if shell && current.is_none() => break,
            ';' | '&' | '|' | '(' | ')' if shell => {
                if let Some(word) = current.take() {
                    words.push(word);
                }
                let mut op = c.to_string();
                if (c == '&' || c == '|') && chars.peek() == Some(&c) {
                    op.push(c);
                    chars.next();
                }
                words.push(Word {
                    text: op,
                    expands: false,
                    operator: true,
                });
            }
            '\'' => {
                let word = current.get_or_insert_with(new_word);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.text.push(c),
                        None => return Err(UnterminatedQuote),
                    }
                }
            }
            '"' => {
                let word = current.get_or_insert_with(new_word);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.text.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                word.text.push('\\');
                                word.text.push(other);
                            }
                            None => return Err(UnterminatedQuote),
                        },
                        Some(c) => {
                            if c == '$' || c == '`' {
                                word.expands = true;
                            }
                            word.text.push(c);
                        }
                        None => return Err(UnterminatedQuote),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(e) => current.get_or_insert_with(new_word).text.push(e),
                None => {}
            },
            c => {
                let word = current.get_or_insert_with(new_word);
                if c == '$' || c == '`' {
                    word.expands = true;
                }
                word.text.push(c);
            }
        }
    }
    if let Some(word) = current.take() {
        words.push(word);
    }
    Ok(words)
}

/// The words' texts (for config formats where expansion does not apply).
pub fn split_plain(line: &str) -> Result<Vec<String>, UnterminatedQuote> {
    Ok(split_words(line, false)?
        .into_iter()
        .map(|w| w.text)
        .collect())
}

/// Splits off the first `count` blank-separated fields of a systemd-style config line
/// (a field may be `"double quoted"` with `\"` inside) and returns them with the rest of
/// the line, verbatim and left-trimmed, if any.
pub fn split_fields(
    line: &str,
    count: usize,
) -> Result<(Vec<String>, Option<&str>), UnterminatedQuote> {
    let mut fields = Vec::new();
    let mut rest = line.trim_start();
    while fields.len() < count && !rest.is_empty() {
        let mut field = String::new();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut end = None;
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) => field.push(e),
                        None => return Err(UnterminatedQuote),
                    },
                    c => field.push(c),
                }
            }
            rest = &quoted[end.ok_or(UnterminatedQuote)?..];
        } else {
            let end = rest.find([' ', '\t']).unwrap_or(rest.len());
            field.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        fields.push(field);
        rest = rest.trim_start();
    }
    Ok((fields, (!rest.is_empty()).then_some(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str, shell: bool) -> Vec<String> {
        split_words(line, shell)
            .unwrap()
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(
            texts(r#"u foo - "Foo \"Bar\"" '/x y' a\ b"#, false),
            ["u", "foo", "-", "Foo \"Bar\"", "/x y", "a b"]
        );
        assert_eq!(texts("a\"b\"'c'", false), ["abc"]);
        assert_eq!(split_words("'open", false), Err(UnterminatedQuote));
        assert_eq!(split_words("\"open", false), Err(UnterminatedQuote));
    }

    #[test]
    fn fields_then_verbatim_rest() {
        let (fields, rest) = split_fields("f  \"/a b\" - - - - x\\ny  z", 6).unwrap();
        assert_eq!(fields, ["f", "/a b", "-", "-", "-", "-"]);
        assert_eq!(rest, Some("x\\ny  z"));
        assert_eq!(
            split_fields("d /x", 6).unwrap(),
            (vec!["d".to_owned(), "/x".to_owned()], None)
        );
        assert_eq!(split_fields("d \"/x", 6), Err(UnterminatedQuote));
    }

    #[test]
    fn shell_mode_splits_operators_and_comments() {
        assert_eq!(
            texts("a;b && c||d # comment", true),
            ["a", ";", "b", "&&", "c", "||", "d"]
        );
        assert_eq!(texts("a;b # c", false), ["a;b", "#", "c"]);
    }

    #[test]
    fn expansion_is_flagged_not_performed() {
        let words = split_words(r#"x "$1" '$2' \$3 `cmd`"#, true).unwrap();
        let flags: Vec<bool> = words.iter().map(|w| w.expands).collect();
        assert_eq!(flags, [false, true, false, false, true]);
        assert_eq!(words[3].text, "$3");
    }
}
