//! The recipe's JSON Schema (draft 2020-12) and the Markdown reference, both derived from
//! the raw recipe structs ([`raw::RecipeFile`]), so the parser, `jeos schema`, the linter
//! and `docs/recipe.md` cannot disagree about which keys exist and what type they take.
//!
//! Editors use the schema through taplo / Even Better TOML: a `#:schema PATH` comment on
//! the first line of a recipe points at a file written by `jeos schema`.

use std::fmt::Write as _;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use super::raw;

/// `$id` of the schema: where `jeos schema` output is conventionally stored.
pub const SCHEMA_ID: &str = "https://jeos.invalid/schema/recipe.schema.json";

/// The recipe schema as JSON (computed once).
pub fn recipe_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = SchemaSettings::draft2020_12()
            .into_generator()
            .into_root_schema_for::<raw::RecipeFile>();
        let mut value = schema.to_value();
        // TOML has no null: an absent key is how a recipe says "default".
        remove_null(&mut value);
        if let Some(object) = value.as_object_mut() {
            object.insert("$id".into(), Value::String(SCHEMA_ID.into()));
            object.insert("title".into(), Value::String("jeos recipe".into()));
            object.insert(
                "description".into(),
                Value::String(
                    "An appliance recipe for jeos (`jeos check` validates it; \
                     docs/recipe.md is the reference)."
                        .into(),
                ),
            );
        }
        value
    })
}

/// Drops the `null` that `Option<T>` adds (`"type": ["string", "null"]`, or a
/// `{"type": "null"}` alternative of an `anyOf`).
fn remove_null(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            if let Some(Value::Array(list)) = map.get_mut("type") {
                list.retain(|t| t != "null");
                if list.len() == 1 {
                    let only = list.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(list)) = map.get_mut("anyOf") {
                list.retain(|alternative| alternative.get("type").is_none_or(|t| t != "null"));
                if list.len() == 1 {
                    let only = list.remove(0);
                    map.remove("anyOf");
                    if let Value::Object(inner) = only {
                        for (k, v) in inner {
                            map.entry(k).or_insert(v);
                        }
                    }
                }
            }
            for child in map.values_mut() {
                remove_null(child);
            }
        }
        Value::Array(list) => list.iter_mut().for_each(remove_null),
        _ => {}
    }
}

/// The schema pretty-printed, as `jeos schema` prints it.
pub fn recipe_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(recipe_schema()).expect("a JSON value prints");
    text.push('\n');
    text
}

/// Follows a `$ref` into `$defs` (only local references are generated).
pub(crate) fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..16 {
        match node.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference.rsplit('/').next().unwrap_or_default();
                match root.get("$defs").and_then(|d| d.get(name)) {
                    Some(target) => node = target,
                    None => return node,
                }
            }
            None => return node,
        }
    }
    node
}

/// The JSON types a schema node allows (`type` as a string or a list).
pub(crate) fn types(node: &Value) -> Vec<&str> {
    match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Human name of a schema node's type, as the reference and diagnostics write it.
pub(crate) fn type_name(root: &Value, node: &Value) -> String {
    let node = resolve(root, node);
    let kinds = types(node);
    if kinds.contains(&"integer") && kinds.contains(&"string") {
        return "integer or string".into();
    }
    match kinds.first().copied() {
        Some("array") => {
            let item = node
                .get("items")
                .map_or_else(|| "values".into(), |i| type_name(root, i));
            if item == "table" {
                "array of tables".into()
            } else {
                format!("array of {item}s")
            }
        }
        Some("object") => "table".into(),
        Some(other) => other.into(),
        None => "value".into(),
    }
}

/// Renders a JSON value as TOML (inline form), for defaults and examples.
pub(crate) fn toml_inline(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).expect("a string prints"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_inline(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

/// A table of the reference: its TOML header and the schema object describing it.
struct Section<'a> {
    header: String,
    description: Option<&'a str>,
    required: bool,
    node: &'a Value,
}

/// The Markdown reference (`docs/recipe.md`), generated from the schema.
pub fn reference_markdown() -> String {
    let root = recipe_schema();
    let mut sections = Vec::new();
    collect_sections(root, root, "", &mut sections);
    // The order a recipe is written in (the starter's), not the alphabet; tables the
    // starter does not show go last.
    let starter = super::starter_recipe(&super::AppName::new("app").expect("valid name"));
    let position = |header: &str| {
        let path = header.trim_matches(['[', ']']);
        let mut prefix = path;
        loop {
            for candidate in [format!("[{prefix}]"), format!("[[{prefix}]]")] {
                if let Some(at) = starter.find(&candidate) {
                    return (at, path.len());
                }
            }
            match prefix.rsplit_once('.') {
                Some((parent, _)) => prefix = parent,
                None => return (usize::MAX, path.len()),
            }
        }
    };
    sections.sort_by_key(|s| position(&s.header));
    let mut out = String::new();
    out.push_str(
        "# Recipe reference\n\n\
         <!-- Generated by `jeos schema --format markdown` from the recipe model \
         (builder/src/recipe/raw.rs); do not edit. -->\n\n\
         A recipe is a TOML file. Keys are kebab-case; unknown keys are errors. Sizes are \
         integer bytes or strings with a binary unit (`\"512KiB\"`, `\"64MiB\"`, `\"2GiB\"`); \
         durations are integer seconds or strings such as `\"30s\"`, `\"500ms\"`, `\"2m\"`; \
         host paths are relative to the recipe's directory. `jeos check RECIPE` validates a \
         recipe, `jeos schema` prints this reference as a JSON Schema (draft 2020-12) for \
         editors: save it and start the recipe with `#:schema ./jeos.schema.json` for \
         taplo / Even Better TOML.\n\n",
    );
    out.push_str("Tables:");
    for section in &sections {
        let anchor: String = section
            .header
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let _ = write!(out, " [`{}`](#{anchor})", section.header);
    }
    out.push_str("\n\n");
    for section in &sections {
        write_section(&mut out, root, section);
    }
    out
}

fn collect_sections<'a>(root: &'a Value, node: &'a Value, path: &str, out: &mut Vec<Section<'a>>) {
    let node = resolve(root, node);
    let Some(properties) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required = required_keys(node);
    for (key, property) in properties {
        let target = resolve(root, property);
        let dotted = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let (header, table) = if types(target).contains(&"object") && has_properties(target) {
            (format!("[{dotted}]"), target)
        } else if types(target).contains(&"array")
            && let Some(items) = target.get("items").map(|i| resolve(root, i))
            && has_properties(items)
        {
            (format!("[[{dotted}]]"), items)
        } else {
            continue;
        };
        // Tables written inline (`ready = { … }`) are listed under their parent only when
        // they nest further tables; their keys still get a section of their own.
        out.push(Section {
            header,
            description: property.get("description").and_then(Value::as_str),
            required: required.contains(&key.as_str()),
            node: table,
        });
        collect_sections(root, table, &dotted, out);
    }
}

fn has_properties(node: &Value) -> bool {
    node.get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty())
}

fn required_keys(node: &Value) -> Vec<&str> {
    node.get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn write_section(out: &mut String, root: &Value, section: &Section<'_>) {
    let _ = writeln!(out, "## `{}`\n", section.header);
    if let Some(description) = section.description {
        let _ = write!(out, "{}", description.replace('\n', " "));
        out.push_str(if section.required {
            " Required.\n\n"
        } else {
            "\n\n"
        });
    }
    let required = required_keys(section.node);
    let properties = section
        .node
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(Map::new);
    out.push_str("| key | type | default | description |\n|---|---|---|---|\n");
    let mut example = Vec::new();
    let mut keys: Vec<(&String, &Value)> = properties.iter().collect();
    keys.sort_by_key(|(k, _)| !required.contains(&k.as_str()));
    for (key, property) in keys {
        let target = resolve(root, property);
        let default = if required.contains(&key.as_str()) {
            "required".to_owned()
        } else {
            property
                .get("default")
                .map_or_else(|| "—".to_owned(), |d| format!("`{}`", toml_inline(d)))
        };
        let mut description = property
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        if let Some(choices) = property.get("enum").and_then(Value::as_array) {
            let choices: Vec<String> = choices
                .iter()
                .map(|c| format!("`{}`", toml_inline(c)))
                .collect();
            let _ = write!(description, " One of {}.", choices.join(", "));
        }
        let _ = writeln!(
            out,
            "| `{key}` | {} | {default} | {description} |",
            type_name(root, target)
        );
        let sample = property
            .get("examples")
            .and_then(|e| e.get(0))
            .or_else(|| property.get("default"));
        if let Some(sample) = sample {
            example.push(format!("{key} = {}", toml_inline(sample)));
        }
    }
    if !example.is_empty() {
        let _ = writeln!(
            out,
            "\nExample:\n\n```toml\n{}\n{}\n```\n",
            section.header,
            example.join("\n")
        );
    } else {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of the model is documented: a key added without a doc comment would give
    /// an empty reference row and an editor tooltip with nothing in it.
    #[test]
    fn every_key_has_a_description() {
        let root = recipe_schema();
        let mut missing = Vec::new();
        let mut stack = vec![("".to_owned(), root)];
        while let Some((path, node)) = stack.pop() {
            let node = resolve(root, node);
            let items = node.get("items").map(|i| resolve(root, i));
            for table in [Some(node), items].into_iter().flatten() {
                for (key, property) in table
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let dotted = format!("{path}{key}");
                    if property.get("description").is_none() {
                        missing.push(dotted.clone());
                    }
                    stack.push((format!("{dotted}."), property));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys without a doc comment: {missing:?}"
        );
    }

    #[test]
    fn schema_is_draft_2020_12_and_closed() {
        let root = recipe_schema();
        assert_eq!(
            root["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(root["additionalProperties"], false);
        let vm = resolve(root, &root["properties"]["vm"]);
        assert_eq!(types(&vm["properties"]["cpus"]), ["integer"]);
        assert_eq!(vm["properties"]["firmware"]["enum"][1], "efi");
    }

    #[test]
    fn reference_lists_every_table() {
        let text = reference_markdown();
        for header in [
            "[appliance]",
            "[[service]]",
            "[service.ready]",
            "[[test.check]]",
        ] {
            assert!(text.contains(&format!("## `{header}`")), "{header}");
        }
        assert!(text.contains("| `cpus` | integer | `1` |"));
    }

    #[test]
    fn toml_rendering_of_examples() {
        let value = serde_json::json!({ "port": 80, "path": "/", "ok": [true] });
        assert_eq!(
            toml_inline(&value),
            r#"{ ok = [true], path = "/", port = 80 }"#
        );
    }
}
