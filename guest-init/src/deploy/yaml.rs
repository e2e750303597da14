//! The YAML subset cloud-init seeds use: block mappings and sequences by indentation,
//! flow sequences (`[a, b]`) and flow mappings of scalars (`{to: default, via: x}`),
//! plain, single- and double-quoted scalars, `#` comments and a leading `---`.
//! Anchors, tags, multi-line scalars and multiple documents are not supported (their
//! lines parse as plain text or are rejected). Depth and size are bounded.

/// A parsed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A scalar (quotes removed).
    Scalar(String),
    /// A sequence.
    Seq(Vec<Value>),
    /// A mapping, in document order.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The scalar text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Sequence items (a scalar counts as a one-item sequence).
    pub fn items(&self) -> Vec<&Value> {
        match self {
            Value::Seq(items) => items.iter().collect(),
            Value::Scalar(_) => vec![self],
            Value::Map(_) => Vec::new(),
        }
    }
}

/// Why a document does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone)]
struct Line {
    number: usize,
    indent: usize,
    text: String,
}

/// Removes a `#` comment that is outside quotes and preceded by a space (or at the start).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return &line[..i],
            None => {}
        }
        previous = c;
    }
    line
}

fn unquote(text: &str) -> String {
    let t = text.trim();
    if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
        return t[1..t.len() - 1].replace("''", "'");
    }
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        return t[1..t.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\n", "\n")
            .replace("\\\\", "\\");
    }
    t.to_owned()
}

/// Splits flow content at top-level commas.
fn split_flow(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    for (i, c) in inner.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    parts.push(&inner[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// `key: value` split at the first `:` followed by a space or the end, outside quotes.
fn split_key(text: &str) -> Option<(String, &str)> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == ':' => {
                let rest = &text[i + 1..];
                if rest.is_empty() || rest.starts_with(' ') {
                    return Some((unquote(&text[..i]), rest.trim()));
                }
            }
            None => {}
        }
    }
    None
}

fn inline_value(text: &str, depth: usize, line: usize) -> Result<Value, YamlError> {
    if depth > MAX_DEPTH {
        return Err(YamlError {
            line,
            reason: "nested too deeply",
        });
    }
    let t = text.trim();
    if let Some(inner) = t.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(YamlError {
            line,
            reason: "`[` without `]`",
        })?;
        let items = split_flow(inner)
            .into_iter()
            .map(|p| inline_value(p, depth + 1, line))
            .collect::<Result<_, _>>()?;
        return Ok(Value::Seq(items));
    }
    if let Some(inner) = t.strip_prefix('{') {
        let inner = inner.strip_suffix('}').ok_or(YamlError {
            line,
            reason: "`{` without `}`",
        })?;
        let mut entries = Vec::new();
        for part in split_flow(inner) {
            let (k, v) = split_key(part.trim()).ok_or(YamlError {
                line,
                reason: "expected `key: value` in a flow mapping",
            })?;
            entries.push((k, inline_value(v, depth + 1, line)?));
        }
        return Ok(Value::Map(entries));
    }
    Ok(Value::Scalar(unquote(t)))
}

fn block(
    lines: &mut [Line],
    i: &mut usize,
    indent: usize,
    depth: usize,
) -> Result<Value, YamlError> {
    let here = lines.get(*i).map_or(0, |l| l.number);
    if depth > MAX_DEPTH {
        return Err(YamlError {
            line: here,
            reason: "nested too deeply",
        });
    }
    let is_item = |l: &Line| l.text == "-" || l.text.starts_with("- ");
    if lines.get(*i).is_some_and(is_item) {
        let mut items = Vec::new();
        while let Some(l) = lines.get(*i) {
            if l.indent != indent || !is_item(l) {
                break;
            }
            let rest = l.text[1..].trim_start().to_owned();
            if rest.is_empty() {
                *i += 1;
                let deeper = lines.get(*i).map_or(0, |n| n.indent);
                if deeper > indent {
                    items.push(block(lines, i, deeper, depth + 1)?);
                } else {
                    items.push(Value::Scalar(String::new()));
                }
            } else if split_key(&rest).is_some() && !rest.starts_with('{') {
                // `- key: value` starts a mapping indented at the item's content.
                let content = indent + (l.text.len() - rest.len());
                lines[*i].indent = content;
                lines[*i].text = rest;
                items.push(block(lines, i, content, depth + 1)?);
            } else {
                items.push(inline_value(&rest, depth + 1, l.number)?);
                *i += 1;
            }
        }
        return Ok(Value::Seq(items));
    }
    let mut entries = Vec::new();
    while let Some(l) = lines.get(*i) {
        if l.indent < indent {
            break;
        }
        if l.indent > indent {
            return Err(YamlError {
                line: l.number,
                reason: "unexpected indentation",
            });
        }
        let number = l.number;
        let (key, rest) = split_key(&l.text).ok_or(YamlError {
            line: number,
            reason: "expected `key: value`",
        })?;
        let rest = rest.to_owned();
        *i += 1;
        let value = if !rest.is_empty() {
            inline_value(&rest, depth + 1, number)?
        } else {
            match lines.get(*i) {
                Some(n) if n.indent > indent => {
                    let deeper = n.indent;
                    block(lines, i, deeper, depth + 1)?
                }
                Some(n) if n.indent == indent && is_item(n) => block(lines, i, indent, depth + 1)?,
                _ => Value::Scalar(String::new()),
            }
        };
        entries.push((key, value));
    }
    Ok(Value::Map(entries))
}

/// Parses a document.
pub fn parse(text: &str) -> Result<Value, YamlError> {
    let mut lines = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let stripped = strip_comment(raw).trim_end();
        if stripped.trim().is_empty() || (lines.is_empty() && stripped.trim() == "---") {
            continue;
        }
        if stripped.contains('\t') && stripped.trim_start().len() != stripped.len() {
            let lead = &stripped[..stripped.len() - stripped.trim_start().len()];
            if lead.contains('\t') {
                return Err(YamlError {
                    line: n + 1,
                    reason: "tabs are not allowed for indentation",
                });
            }
        }
        let indent = stripped.len() - stripped.trim_start().len();
        lines.push(Line {
            number: n + 1,
            indent,
            text: stripped.trim_start().to_owned(),
        });
    }
    let mut i = 0;
    let first = lines.first().map_or(0, |l| l.indent);
    let value = block(&mut lines, &mut i, first, 0)?;
    if let Some(l) = lines.get(i) {
        return Err(YamlError {
            line: l.number,
            reason: "unexpected indentation",
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Scalar(v.into())
    }

    #[test]
    fn mappings_sequences_and_flow() {
        let v = parse(
            "---\n# seed\nversion: 2\nethernets:\n  eth0:\n    addresses:\n      - 192.0.2.10/24 # v4\n      - \"2001:db8::10/64\"\n    routes:\n    - to: default\n      via: 192.0.2.1\n    nameservers: {addresses: [192.0.2.53, '2001:db8::53']}\n",
        )
        .unwrap();
        assert_eq!(v.get("version"), Some(&s("2")));
        let eth = v.get("ethernets").unwrap().get("eth0").unwrap();
        assert_eq!(
            eth.get("addresses").unwrap(),
            &Value::Seq(vec![s("192.0.2.10/24"), s("2001:db8::10/64")])
        );
        let route = &eth.get("routes").unwrap().items()[0];
        assert_eq!(route.get("via"), Some(&s("192.0.2.1")));
        let ns = eth.get("nameservers").unwrap().get("addresses").unwrap();
        assert_eq!(ns.items().len(), 2);
    }

    #[test]
    fn errors_carry_lines() {
        assert_eq!(parse("a: 1\n   b: 2\n").unwrap_err().line, 2);
        assert_eq!(parse("a: [1, 2\n").unwrap_err().line, 1);
        assert_eq!(parse("a:\n\t- x\n").unwrap_err().line, 2);
        assert!(parse("just text\n").is_err());
        let deep: String = (0..40)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(parse(&deep).is_err());
        assert_eq!(parse("").unwrap(), Value::Map(vec![]));
    }
}
