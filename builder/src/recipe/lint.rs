//! The structural linter: every syntax, unknown-key, wrong-type and missing-key problem of
//! a recipe at once, each with its span.
//!
//! serde stops at the first problem, so a recipe with four mistakes would report one. The
//! linter instead parses the text into a spanned TOML tree (recovering from syntax errors)
//! and walks it against the recipe's JSON Schema ([`super::schema`]), which is derived from
//! the same structs serde uses, so the two agree on every key.
//!
//! It also returns the recipe text with every offending `key = value` entry blanked out
//! (same length, newlines kept, so spans stay valid): when that text deserializes, the
//! semantic validation runs on it too and its problems are reported alongside.

use std::ops::Range;

use serde_json::Value;
use toml::de::{DeTable, DeValue};

use super::error::RecipeErrorKind as K;
use super::schema::{recipe_schema, resolve, types};

/// One structural problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong.
    pub kind: K,
    /// Where (byte range).
    pub span: Range<usize>,
}

/// The linter's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// Every problem, in file order.
    pub findings: Vec<Finding>,
    /// The text with offending entries blanked; `None` when the text has syntax errors.
    pub repaired: Option<String>,
}

/// Lints `text` against the recipe schema.
pub fn lint_structure(text: &str) -> Lint {
    let (document, syntax) = DeTable::parse_recoverable(text);
    let mut walker = Walker {
        root: recipe_schema(),
        text,
        findings: Vec::new(),
        blank: Vec::new(),
    };
    for error in &syntax {
        let message = error.message().trim();
        walker.findings.push(Finding {
            kind: K::Syntax {
                message: message.lines().next().unwrap_or_default().to_owned(),
            },
            span: error.span().unwrap_or(0..0),
        });
    }
    let root = walker.root;
    walker.table(document.get_ref(), 0..0, root, "");
    if !syntax.is_empty() {
        // After a syntax error the parser drops what follows, so "missing" keys are noise.
        // And a value that failed to parse has a made-up type in the recovered tree.
        let bad: Vec<Range<usize>> = syntax.iter().filter_map(toml::de::Error::span).collect();
        walker.findings.retain(|f| match f.kind {
            K::MissingKey { .. } => false,
            K::WrongType { .. } => !bad.iter().any(|b| {
                b.start < f.span.end.max(f.span.start + 1) && f.span.start < b.end.max(b.start + 1)
            }),
            _ => true,
        });
    }
    let repaired = syntax.is_empty().then(|| {
        let mut bytes = text.as_bytes().to_vec();
        for range in &walker.blank {
            for byte in &mut bytes[range.clone()] {
                if *byte != b'\n' {
                    *byte = b' ';
                }
            }
        }
        // Blanking whole UTF-8 sequences and only them keeps the text valid UTF-8.
        String::from_utf8(bytes).unwrap_or_default()
    });
    let mut findings = walker.findings;
    findings.sort_by_key(|f| (f.span.start, f.span.end));
    findings.dedup();
    Lint { findings, repaired }
}

/// Warnings for a recipe that is valid: checks on ports that no service's readiness probe
/// names (the check would run before the service listens, or test the wrong port).
pub fn port_warnings(text: &str) -> Vec<Finding> {
    let Ok(file) = toml::from_str::<super::raw::RecipeFile>(text) else {
        return Vec::new();
    };
    let mut ready_ports = Vec::new();
    for service in &file.service {
        if let Some(ready) = &service.get_ref().ready {
            let ready = ready.get_ref();
            ready_ports.extend(ready.tcp.as_ref().map(|p| *p.get_ref()));
            ready_ports.extend(ready.http.as_ref().map(|h| *h.port.get_ref()));
        }
    }
    let mut findings = Vec::new();
    for check in file.test.iter().flat_map(|t| &t.check) {
        let check = check.get_ref();
        let port = check
            .http
            .as_ref()
            .map(|h| &h.port)
            .or(check.tcp.as_ref().map(|t| &t.port));
        if let Some(port) = port
            && !ready_ports.contains(port.get_ref())
        {
            findings.push(Finding {
                kind: K::UnprobedPort {
                    check: check.name.get_ref().clone(),
                    port: *port.get_ref(),
                },
                span: port.span(),
            });
        }
    }
    findings
}

struct Walker<'a> {
    root: &'static Value,
    text: &'a str,
    findings: Vec<Finding>,
    blank: Vec<Range<usize>>,
}

/// The JSON type name of a TOML value.
fn json_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "integer",
        DeValue::Float(_) => "number",
        DeValue::Boolean(_) => "boolean",
        DeValue::Datetime(_) => "datetime",
        DeValue::Array(_) => "array",
        DeValue::Table(_) => "object",
    }
}

fn article(json: &str) -> &'static str {
    match json {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "array" => "an array",
        "object" => "a table",
        "datetime" => "a date-time",
        _ => "a value",
    }
}

fn expected_text(allowed: &[&str]) -> String {
    let words: Vec<&str> = allowed.iter().map(|t| article(t)).collect();
    match words.as_slice() {
        [] => "a value".into(),
        [one] => (*one).into(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

impl Walker<'_> {
    fn table(&mut self, table: &DeTable<'_>, span: Range<usize>, schema: &Value, path: &str) {
        let node = resolve(self.root, schema);
        let properties = node.get("properties").and_then(Value::as_object);
        let closed = node.get("additionalProperties") == Some(&Value::Bool(false));
        let extra = node
            .get("additionalProperties")
            .filter(|v| v.is_object())
            .cloned();
        let inline = self.text.as_bytes().get(span.start) == Some(&b'{');
        for (key, value) in table {
            let name: &str = key.get_ref();
            let dotted = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            };
            // Inside an inline table, blanking one entry would leave a stray comma, so
            // the whole inline table goes.
            let entry = if inline {
                span.clone()
            } else {
                self.entry_range(key.span(), value.span())
            };
            match properties.and_then(|p| p.get(name)) {
                Some(property) => {
                    self.value(value.get_ref(), value.span(), property, &dotted, entry)
                }
                None if closed => {
                    let expected = properties
                        .map(|p| p.keys().cloned().collect())
                        .unwrap_or_default();
                    self.findings.push(Finding {
                        kind: K::UnknownKey {
                            key: name.to_owned(),
                            expected,
                        },
                        span: key.span(),
                    });
                    self.blank.push(entry);
                }
                None => {
                    if let Some(extra) = &extra {
                        self.value(value.get_ref(), value.span(), extra, &dotted, entry);
                    }
                }
            }
        }
        self.missing_keys(table, span, node);
    }

    fn missing_keys(&mut self, table: &DeTable<'_>, span: Range<usize>, node: &Value) {
        let required = node.get("required").and_then(Value::as_array);
        for key in required.into_iter().flatten().filter_map(Value::as_str) {
            if !table.keys().any(|k| {
                let k: &str = k.get_ref();
                k == key
            }) {
                // The header line of the table (or the start of the file).
                let end = self.text[span.start.min(self.text.len())..]
                    .find('\n')
                    .map_or(self.text.len(), |i| span.start + i);
                self.findings.push(Finding {
                    kind: K::MissingKey {
                        key: key.to_owned(),
                    },
                    span: span.start..end.max(span.start),
                });
            }
        }
    }

    /// `key = value` including a `[`/`[[` header opener, so blanking it leaves valid TOML.
    fn entry_range(&self, key: Range<usize>, value: Range<usize>) -> Range<usize> {
        let before = &self.text[..key.start.min(self.text.len())];
        let trimmed = before.trim_end_matches([' ', '\t', '[']);
        let start = if before[trimmed.len()..].contains('[') {
            trimmed.len()
        } else {
            key.start
        };
        let mut end = value.end.max(key.end).min(self.text.len());
        // Close the header of a table whose body the value span does not include.
        if let Some(rest) = self.text.get(end..)
            && let Some(close) = rest
                .strip_prefix("]]")
                .map(|_| 2)
                .or(rest.strip_prefix(']').map(|_| 1))
        {
            end += close;
        }
        start..end
    }

    fn value(
        &mut self,
        value: &DeValue<'_>,
        span: Range<usize>,
        schema: &Value,
        path: &str,
        entry: Range<usize>,
    ) {
        let node = self.alternative(resolve(self.root, schema), value);
        let allowed = types(node);
        let actual = json_type(value);
        let fits = allowed.is_empty()
            || allowed.contains(&actual)
            || (actual == "integer" && allowed.contains(&"number"));
        if !fits {
            self.findings.push(Finding {
                kind: K::WrongType {
                    key: path.to_owned(),
                    expected: expected_text(&allowed),
                    found: self.found(value, span.clone()),
                },
                span,
            });
            self.blank.push(entry);
            return;
        }
        match value {
            DeValue::Array(items) => {
                if let Some(item_schema) = node.get("items") {
                    for item in items.iter() {
                        self.value(
                            item.get_ref(),
                            item.span(),
                            item_schema,
                            path,
                            entry.clone(),
                        );
                    }
                }
            }
            DeValue::Table(table) => self.table(table, span, node, path),
            _ => {}
        }
    }

    /// `a string `"two"``: the type, and the value as written when it is short.
    fn found(&self, value: &DeValue<'_>, span: Range<usize>) -> String {
        let kind = article(json_type(value));
        let written = self.text.get(span).unwrap_or_default();
        let scalar = !matches!(value, DeValue::Array(_) | DeValue::Table(_));
        if scalar && written.chars().count() <= 40 && !written.contains('\n') {
            format!("{kind} `{written}`")
        } else {
            kind.to_owned()
        }
    }

    /// For `anyOf`/`oneOf`, the first alternative that takes a value of this type.
    fn alternative<'s>(&self, node: &'s Value, value: &DeValue<'_>) -> &'s Value
    where
        'static: 's,
    {
        let alternatives = node
            .get("anyOf")
            .or_else(|| node.get("oneOf"))
            .and_then(Value::as_array);
        let Some(alternatives) = alternatives else {
            return node;
        };
        let actual = json_type(value);
        alternatives
            .iter()
            .map(|a| resolve(self.root, a))
            .find(|a| types(a).contains(&actual))
            .unwrap_or(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "[appliance]\nname = \"demo\"\nversion = \"1.0\"\n\n[source]\nsuite = \"trixie\"\n\n[packages]\ninstall = [\"hello\"]\n";

    fn kinds(text: &str) -> Vec<K> {
        lint_structure(text)
            .findings
            .into_iter()
            .map(|f| f.kind)
            .collect()
    }

    #[test]
    fn valid_recipe_has_no_findings() {
        let lint = lint_structure(HEADER);
        assert!(lint.findings.is_empty(), "{:?}", lint.findings);
        assert_eq!(lint.repaired.as_deref(), Some(HEADER));
    }

    #[test]
    fn reports_every_unknown_key_and_wrong_type() {
        let text = format!(
            "{HEADER}\n[vm]\ncpus = \"two\"\nmemroy = \"1GiB\"\n\n[disk]\nfree_space = 3\nformats = \"raw\"\n"
        );
        let found = kinds(&text);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found.contains(&K::WrongType {
            key: "vm.cpus".into(),
            expected: "an integer".into(),
            found: "a string `\"two\"`".into()
        }));
        assert!(found.contains(&K::WrongType {
            key: "disk.formats".into(),
            expected: "an array".into(),
            found: "a string `\"raw\"`".into()
        }));
        assert!(
            found
                .iter()
                .any(|k| matches!(k, K::UnknownKey { key, .. } if key == "memroy"))
        );
    }

    #[test]
    fn blanked_text_keeps_spans_and_parses() {
        let text = format!("{HEADER}\n[vm]\ncpus = \"two\"\nnic = \"e1000\"\n\n[vms]\nx = 1\n");
        let lint = lint_structure(&text);
        let repaired = lint.repaired.expect("no syntax errors");
        assert_eq!(repaired.len(), text.len());
        let value: toml::Table = toml::from_str(&repaired).expect("repaired text parses");
        assert_eq!(value["vm"]["nic"].as_str(), Some("e1000"));
        assert!(value["vm"].get("cpus").is_none());
        assert!(value.get("vms").is_none());
    }

    #[test]
    fn missing_keys_and_nested_tables() {
        let text = "[appliance]\nname = \"demo\"\n\n[packages]\ninstall = [\"a\", 3]\n\n[[service]]\nname = \"x\"\nexec = [\"/bin/x\"]\nready = { tcp = \"80\" }\n";
        let found = kinds(text);
        assert!(found.contains(&K::MissingKey {
            key: "version".into()
        }));
        assert!(found.contains(&K::MissingKey {
            key: "source".into()
        }));
        assert!(found.contains(&K::WrongType {
            key: "packages.install".into(),
            expected: "a string".into(),
            found: "an integer `3`".into()
        }));
        assert!(found.contains(&K::WrongType {
            key: "service.ready.tcp".into(),
            expected: "an integer".into(),
            found: "a string `\"80\"`".into()
        }));
    }

    #[test]
    fn warns_about_checks_on_ports_no_service_names() {
        let text = format!(
            "{HEADER}\n[[service]]\nname = \"web\"\nexec = [\"/bin/web\"]\nready = {{ tcp = 80 }}\n\n\
             [[test.check]]\nname = \"page\"\nhttp = {{ port = 80 }}\n\n\
             [[test.check]]\nname = \"admin\"\ntcp = {{ port = 8080 }}\n"
        );
        let warnings = port_warnings(&text);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            warnings[0].kind,
            K::UnprobedPort {
                check: "admin".into(),
                port: 8080
            }
        );
        assert_eq!(&text[warnings[0].span.clone()], "8080");
    }

    #[test]
    fn syntax_errors_are_all_reported() {
        let text = "[appliance]\nname = \"demo\nversion = 1.0.0\n[source\n";
        let lint = lint_structure(text);
        assert!(lint.repaired.is_none());
        let syntax = lint
            .findings
            .iter()
            .filter(|f| matches!(f.kind, K::Syntax { .. }))
            .count();
        assert!(syntax >= 2, "{:#?}", lint.findings);
    }
}
