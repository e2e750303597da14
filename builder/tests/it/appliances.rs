//! Builds the example appliances once per test run, for every test that boots them.
//!
//! `built("nginx")` runs `jeos build recipes/nginx.toml` (real Debian mirror, shared cache)
//! into `$CARGO_TARGET_TMPDIR/appliances/<run>/` the first time it is called and returns the
//! output directory afterwards. `None` (after a loud `SKIPPED:`) when the mirror is
//! unreachable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::common::{TestDir, recipes_dir};
use crate::resolve::{reachable_mirror, shared_cache};

/// One built appliance.
#[derive(Debug, Clone)]
pub struct Built {
    /// `DIR/<name>-<version>/`.
    pub dir: PathBuf,
    /// The raw disk image.
    pub raw: PathBuf,
    /// The recipe used (a copy, with its lock beside it).
    pub recipe: PathBuf,
}

static BUILT: OnceLock<Mutex<HashMap<String, Option<Built>>>> = OnceLock::new();
static VARIANTS: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();

/// A variant of the nginx appliance that must build (see [`variant`]).
pub fn nginx_variant(base: &Built, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    variant(base, name, edits)
        .unwrap_or_else(|stderr| panic!("jeos build {name} failed:\n{stderr}"))
}

/// A variant of an example appliance: its recipe with `(from, to)` replacements, built once
/// per test run under `name` with the example's lock (nothing is re-resolved). `Ok` is the
/// `.raw` image, `Err` the failed build's stderr.
pub fn variant(base: &Built, name: &str, edits: &[(&str, &str)]) -> Result<PathBuf, String> {
    let map = VARIANTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(result) = map.get(name) {
        return result.clone();
    }
    let mut text = std::fs::read_to_string(&base.recipe).expect("recipe");
    for (from, to) in edits {
        assert!(text.contains(from), "the nginx recipe has `{from}`");
        text = text.replace(from, to);
    }
    let dir = work();
    let file = base.recipe.file_name().expect("recipe file name");
    let recipe = dir.create(
        &format!("variants/{name}/{}", file.to_string_lossy()),
        &text,
    );
    std::fs::copy(
        base.recipe.with_extension("lock"),
        recipe.with_extension("lock"),
    )
    .expect("copy lock");
    let out = dir.path().join(format!("variants/{name}/dist"));
    let output = build_into(&recipe, &out, &[]);
    let result = if output.status.success() {
        let dist = base.dir.file_name().expect("output dir name");
        let raw = out.join(dist).join(base.raw.file_name().expect("raw name"));
        assert!(raw.is_file(), "{} missing", raw.display());
        Ok(raw)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    };
    map.insert(name.to_owned(), result.clone());
    result
}
static WORK: OnceLock<TestDir> = OnceLock::new();

/// Where this run builds.
fn work() -> &'static TestDir {
    WORK.get_or_init(TestDir::new)
}

/// Runs `jeos build` for `recipes/<name>.toml` into `out` with the shared cache.
pub fn build_into(recipe: &Path, out: &Path, extra_env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jeos"));
    cmd.env("NO_COLOR", "1")
        .arg("--cache-dir")
        .arg(shared_cache())
        .arg("build")
        .arg(recipe)
        .arg("-o")
        .arg(out);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("run jeos build")
}

/// The example appliance `name` (`nginx`, `redis`, ...), built once.
pub fn built(name: &str) -> Option<Built> {
    let map = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(done) = map.get(name) {
        return done.clone();
    }
    let result = (|| {
        reachable_mirror("trixie")?;
        let dir = work();
        let text = std::fs::read_to_string(recipes_dir().join(format!("{name}.toml")))
            .expect("example recipe");
        let recipe = dir.create(&format!("{name}/{name}.toml"), &text);
        let out = dir.path().join("dist");
        let output = build_into(&recipe, &out, &[]);
        assert!(
            output.status.success(),
            "jeos build {name} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let dir = out.join(format!("{name}-1.0.0"));
        let raw = dir.join(format!("{name}-1.0.0.raw"));
        assert!(raw.is_file(), "{} missing", raw.display());
        Some(Built { dir, raw, recipe })
    })();
    map.insert(name.to_owned(), result.clone());
    result
}
