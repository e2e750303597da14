//! Boot-time templates: text with `{{ovf.<key>}}` placeholders, rendered by guest-init from
//! the deploy-time property values before services start. The builder checks templates
//! with [`parse`] at build time, so an unknown key is a recipe error, not a boot surprise.
//! Values are inserted verbatim; `{{{{` writes a literal `{{`.

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// `{{ovf.<key>}}`.
    Property(&'a str),
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

/// Splits a template into text and placeholders.
pub fn parse(text: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        if rest[start..].starts_with("{{{{") {
            pieces.push(Piece::Text(&rest[..start + 2]));
            rest = &rest[start + 4..];
            offset += start + 4;
            continue;
        }
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(TemplateError {
                offset: offset + start,
                reason: "`{{` without a closing `}}`",
            });
        };
        let inner = after[..end].trim();
        let Some(key) = inner.strip_prefix("ovf.") else {
            return Err(TemplateError {
                offset: offset + start,
                reason: "boot-time templates only know `{{ovf.<key>}}`",
            });
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(TemplateError {
                offset: offset + start,
                reason: "a property key has only letters, digits and `._-`",
            });
        }
        pieces.push(Piece::Property(key));
        let consumed = start + 2 + end + 2;
        rest = &rest[consumed..];
        offset += consumed;
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// The keys a template uses, in order of first use.
pub fn keys(text: &str) -> Result<Vec<&str>, TemplateError> {
    let mut out: Vec<&str> = Vec::new();
    for piece in parse(text)? {
        if let Piece::Property(k) = piece
            && !out.contains(&k)
        {
            out.push(k);
        }
    }
    Ok(out)
}

/// Renders with `lookup` giving each key's value (unknown keys render empty).
pub fn render<'a>(
    text: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    for piece in parse(text)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Property(k) => out.push_str(lookup(k).unwrap_or_default()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_properties_and_escapes() {
        let t = "<h1>{{ovf.page.title}}</h1> {{ ovf.x }} {{{{literal}}";
        assert_eq!(keys(t).unwrap(), vec!["page.title", "x"]);
        let out = render(t, |k| (k == "page.title").then_some("Hello")).unwrap();
        assert_eq!(out, "<h1>Hello</h1>  {{literal}}");
    }

    #[test]
    fn rejects_other_expressions() {
        assert_eq!(parse("a {{appliance.name}}").unwrap_err().offset, 2);
        assert!(parse("{{ovf.}}").is_err());
        assert!(parse("{{ovf.a b}}").is_err());
        assert!(parse("{{ovf.a").is_err());
        assert_eq!(parse("plain").unwrap(), vec![Piece::Text("plain")]);
    }
}
