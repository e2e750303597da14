//! Issue #14: the step caches (initramfs) and the parsed-index cache change nothing in the
//! outputs, and a damaged entry is noticed, removed and rebuilt.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::appliances::built;
use crate::common::TestDir;
use crate::resolve::shared_cache;

fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read output");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A cache of its own for the derived caches (`steps/`, `parsed/`), sharing the
/// downloads and unpacked trees of the suite's cache through symlinks.
fn private_cache(dir: &TestDir) -> PathBuf {
    let shared = shared_cache();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    for sub in ["debs", "indices", "releases", "locks", "tmp", "unpacked"] {
        std::fs::create_dir_all(shared.join(sub)).expect("shared cache dir");
        std::os::unix::fs::symlink(shared.join(sub), cache.join(sub)).expect("symlink");
    }
    cache
}

fn jeos(cache: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_jeos"))
        .env("NO_COLOR", "1")
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .expect("run jeos");
    assert!(
        output.status.success(),
        "jeos {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Builds `recipe` into `out` and returns (digests of raw/qcow2/ova, initramfs cached?).
fn build(cache: &Path, recipe: &Path, out: &Path) -> (Vec<String>, bool, String) {
    let output = jeos(
        cache,
        &[
            "build",
            recipe.to_str().expect("utf-8 path"),
            "-o",
            out.to_str().expect("utf-8 path"),
        ],
    );
    let dir = out.join("nginx-1.0.0");
    let digests = ["nginx-1.0.0.raw", "nginx-1.0.0.qcow2", "nginx-1.0.0.ova"]
        .iter()
        .map(|f| sha256_file(&dir.join(f)))
        .collect();
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("build-report.json")).expect("build report"),
    )
    .expect("report is JSON");
    let cached = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .any(|s| s["name"] == "build_initramfs" && s["cached"] == true);
    (
        digests,
        cached,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn flip_a_byte_in_every_file(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("cache entries").flatten() {
        let mut bytes = std::fs::read(entry.path()).expect("entry");
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(entry.path(), bytes).expect("damage entry");
        n += 1;
    }
    n
}

#[test]
fn issue_14_step_caches_change_no_output_and_damaged_entries_are_rebuilt() {
    // https://github.com/jeos/jeos/issues/14
    let Some(first) = built("nginx") else { return };
    let dir = TestDir::new();
    let cache = private_cache(&dir);
    let recipe = dir.create(
        "nginx.toml",
        &std::fs::read_to_string(&first.recipe).expect("recipe"),
    );
    std::fs::copy(
        first.recipe.with_extension("lock"),
        recipe.with_extension("lock"),
    )
    .expect("copy lock");
    // Without entries (the step runs), with them (it is skipped), with a damaged one.
    let (fresh, fresh_cached, _) = build(&cache, &recipe, &dir.path().join("a"));
    let (warm, warm_cached, warm_log) = build(&cache, &recipe, &dir.path().join("b"));
    assert!(!fresh_cached, "an empty step cache cannot hit");
    assert!(warm_cached, "the second build must reuse the initramfs");
    assert!(
        warm_log.contains("(cached)"),
        "the step list says so: {warm_log}"
    );
    assert_eq!(fresh, warm, "outputs differ with the step cache");
    let entries = cache.join("steps/initramfs");
    assert_eq!(flip_a_byte_in_every_file(&entries), 1);
    let (rebuilt, rebuilt_cached, log) = build(&cache, &recipe, &dir.path().join("c"));
    assert!(!rebuilt_cached);
    assert!(log.contains("the cached initramfs is damaged"), "{log}");
    assert_eq!(rebuilt, fresh, "outputs differ after rebuilding the entry");
    let (_, cached_again, _) = build(&cache, &recipe, &dir.path().join("d"));
    assert!(cached_again, "the rebuilt entry is stored again");

    // The parsed-index cache: a fresh parse, a hit and a damaged entry solve the same.
    let recipe = recipe.to_str().expect("utf-8 path");
    let lock = |tag: &str| {
        jeos(&cache, &["resolve", "--update", recipe]);
        let text = std::fs::read_to_string(Path::new(recipe).with_extension("lock")).expect("lock");
        assert!(!text.is_empty(), "{tag}");
        text
    };
    let parsed_fresh = lock("fresh parse");
    assert!(cache.join("parsed").read_dir().expect("parsed").count() >= 1);
    let parsed_hit = lock("cache hit");
    assert_eq!(
        parsed_fresh, parsed_hit,
        "the parsed-index cache changed the lock"
    );
    assert!(flip_a_byte_in_every_file(&cache.join("parsed")) >= 1);
    let output = jeos(&cache, &["resolve", "--update", recipe]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is damaged"), "{stderr}");
    let after = std::fs::read_to_string(Path::new(recipe).with_extension("lock")).expect("lock");
    assert_eq!(after, parsed_fresh, "a damaged entry changed the lock");
    assert_eq!(lock("rebuilt entry"), parsed_fresh);
}
