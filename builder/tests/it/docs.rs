//! The recipe reference stays in step with the parser: the JSON Schema printed by
//! `jeos schema` accepts every example recipe and the starter (checked by an independent
//! JSON Schema validator), rejects what `jeos check` rejects, and the committed
//! `docs/recipe.md` and `docs/recipe.schema.json` are exactly what the generator prints.
//! Also the generated shell completions and man pages, smoke-tested.

use std::path::Path;
use std::process::Command;

use crate::common::{TestDir, jeos, recipes_dir};

/// A missing prerequisite fails under `CI=true` and skips loudly elsewhere.
pub fn skip_or_fail(why: &str) {
    crate::common::prerequisite(false, why);
}

fn docs_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run jeos");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn schema_validator() -> jsonschema::Validator {
    let text = stdout_of(jeos().arg("schema"));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::draft202012::new(&schema).expect("a valid draft 2020-12 schema")
}

fn recipe_as_json(text: &str) -> serde_json::Value {
    toml::from_str(text).expect("recipe is TOML")
}

#[test]
fn schema_validates_every_example_recipe_and_the_starter() {
    let validator = schema_validator();
    let mut checked = 0;
    for entry in std::fs::read_dir(recipes_dir()).expect("recipes/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let value = recipe_as_json(&std::fs::read_to_string(&path).expect("read"));
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 3, "found only {checked} example recipes");
    let dir = TestDir::new();
    stdout_of(dir.jeos().args(["new", "demo"]));
    let starter = std::fs::read_to_string(dir.path().join("demo.toml")).expect("starter");
    assert!(starter.starts_with("#:schema ./jeos.schema.json\n"));
    assert!(validator.is_valid(&recipe_as_json(&starter)));
    let written = std::fs::read_to_string(dir.path().join("jeos.schema.json")).expect("schema");
    assert_eq!(written, stdout_of(jeos().arg("schema")));
}

#[test]
fn schema_rejects_what_check_rejects() {
    let validator = schema_validator();
    let base = std::fs::read_to_string(recipes_dir().join("nginx.toml")).expect("nginx");
    for (bad, why) in [
        ("[vm]\ncpus = 1\n", "[vm]\ncpus = \"two\"\n"),
        ("[vm]\ncpus = 1\n", "[vm]\ncpus = 1\ncolour = \"red\"\n"),
        ("[disk]\n", "[disk]\nfree_space = \"1MiB\"\n"),
    ] {
        let text = base.replacen(bad, why, 1);
        assert_ne!(text, base, "fixture {bad:?} not found in nginx.toml");
        assert!(
            !validator.is_valid(&recipe_as_json(&text)),
            "schema accepted {why:?}"
        );
        let dir = TestDir::new();
        dir.create("bad.toml", &text);
        let out = dir
            .jeos()
            .args(["check", "bad.toml"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "jeos check accepted {why:?}");
    }
}

/// `docs/recipe.md` and `docs/recipe.schema.json` are generated; regenerate them with
/// `cargo run -p builder -- schema --format markdown -o docs/recipe.md` and
/// `cargo run -p builder -- schema -o docs/recipe.schema.json`.
#[test]
fn committed_reference_matches_the_generator() {
    let markdown = stdout_of(jeos().args(["schema", "--format", "markdown"]));
    let committed = std::fs::read_to_string(docs_dir().join("recipe.md")).unwrap_or_default();
    assert!(
        committed == markdown,
        "docs/recipe.md is stale: run `cargo run -p builder -- schema --format markdown -o docs/recipe.md`"
    );
    let schema = stdout_of(jeos().arg("schema"));
    let committed =
        std::fs::read_to_string(docs_dir().join("recipe.schema.json")).unwrap_or_default();
    assert!(
        committed == schema,
        "docs/recipe.schema.json is stale: run `cargo run -p builder -- schema -o docs/recipe.schema.json`"
    );
    for key in [
        "`disk-controller`",
        "`body-contains`",
        "`free-space`",
        "`[[system.user]]`",
    ] {
        assert!(markdown.contains(key), "reference lacks {key}");
    }
}

#[test]
fn bash_completion_completes_subcommands_and_options() {
    let script = stdout_of(jeos().args(["completions", "bash"]));
    let dir = TestDir::new();
    let path = dir.create("jeos.bash", &script);
    let probe = format!(
        "source {}; COMP_WORDS=(jeos ch); COMP_CWORD=1; _jeos jeos ch jeos; echo \"${{COMPREPLY[@]}}\"; \
         COMP_WORDS=(jeos build --lo); COMP_CWORD=2; _jeos jeos --lo build; echo \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .env("LC_ALL", "C")
        .output()
        .expect("run bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .split(' ')
            .any(|w| w == "check"),
        "{text}"
    );
    assert!(
        lines.next().unwrap_or_default().contains("--locked"),
        "{text}"
    );
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    let zsh = stdout_of(jeos().args(["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef jeos"));
    let fish = stdout_of(jeos().args(["completions", "fish"]));
    for command in ["new", "check", "resolve", "build", "test", "run", "schema"] {
        assert!(zsh.contains(&format!("'{command}:")), "zsh lacks {command}");
        assert!(
            fish.contains(&format!("-a \"{command}\"")),
            "fish lacks {command}"
        );
    }
    let out = jeos().args(["completions", "tcsh"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_for_every_command_render_without_warnings() {
    let dir = TestDir::new();
    let out = dir
        .jeos()
        .args(["man", "--dir", "man"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = stdout_of(jeos().arg("--help"));
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 6, "{commands:?}");
    for command in commands {
        let page = dir.path().join("man").join(format!("jeos-{command}.1"));
        assert!(page.is_file(), "no man page for {command}");
        let rendered = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("LC_ALL", "C")
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output();
        let Ok(rendered) = rendered else {
            skip_or_fail("`man` is not installed (Debian package man-db)");
            return;
        };
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(rendered.status.success(), "man -l {command}");
        assert!(text.contains(&format!("jeos-{command}")), "{text}");
        assert!(
            text.contains("Examples:"),
            "jeos-{command}.1 has no examples"
        );
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(warnings.trim().is_empty(), "jeos-{command}.1: {warnings}");
    }
}

/// Every subcommand's `--help` shows examples (a new command without them fails here).
#[test]
fn every_help_has_examples() {
    let help = stdout_of(jeos().arg("--help"));
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    for command in commands {
        let text = stdout_of(jeos().args([command, "--help"]));
        assert!(
            text.contains("Examples:"),
            "`jeos {command} --help` has no examples"
        );
        let via_help = stdout_of(jeos().args(["help", command]));
        assert_eq!(via_help, text, "`jeos help {command}` differs from --help");
    }
    assert!(help.contains("130"), "exit code 130 undocumented");
}
