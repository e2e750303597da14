//! Issue #14: the step caches (root filesystem tree, initramfs) and the parsed-index cache
//! change nothing in the outputs, and a damaged entry is noticed, removed and rebuilt.

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

/// Builds `recipe` into `out` and returns (digests of raw/qcow2/ova, initramfs cached?,
/// stderr).
fn build(cache: &Path, recipe: &Path, out: &Path) -> (Vec<String>, bool, String) {
    let (digests, cached, log) = build_steps(cache, recipe, out);
    (digests, cached.iter().any(|s| s == "build_initramfs"), log)
}

/// Builds `recipe` into `out` and returns (digests of raw/qcow2/ova, the steps that hit
/// their cache, stderr).
fn build_steps(cache: &Path, recipe: &Path, out: &Path) -> (Vec<String>, Vec<String>, String) {
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
        .filter(|s| s["cached"] == true)
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    (
        digests,
        cached,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn flip_a_byte_in_every_file(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("cache entries").flatten() {
        if entry.path().is_dir() {
            continue;
        }
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

/// The one `<key>.tree/` of the root filesystem step cache.
fn rootfs_tree(cache: &Path) -> PathBuf {
    let trees: Vec<PathBuf> = std::fs::read_dir(cache.join("steps/rootfs"))
        .expect("rootfs step cache")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tree"))
        .collect();
    assert_eq!(trees.len(), 1, "one tree per package set: {trees:?}");
    trees.into_iter().next().expect("one tree")
}

#[test]
fn issue_14_rootfs_tree_cache_changes_no_output_and_damaged_trees_are_rebuilt() {
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
    let hit = |steps: &[String]| steps.iter().any(|s| s == "unpack_rootfs");
    let (fresh, fresh_steps, _) = build_steps(&cache, &recipe, &dir.path().join("a"));
    assert!(!hit(&fresh_steps), "an empty step cache cannot hit");
    let (warm, warm_steps, _) = build_steps(&cache, &recipe, &dir.path().join("b"));
    assert!(
        hit(&warm_steps),
        "the second build reuses the tree: {warm_steps:?}"
    );
    assert_eq!(fresh, warm, "outputs differ with the root filesystem cache");

    // A file of the cached tree changed (same size): noticed while copying, rebuilt.
    let tree = rootfs_tree(&cache);
    let victim = tree.join("usr/sbin/nginx");
    let mut bytes = std::fs::read(&victim).expect("cached nginx");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&victim, bytes).expect("damage the cached tree");
    let (rebuilt, steps, log) = build_steps(&cache, &recipe, &dir.path().join("c"));
    assert!(!hit(&steps), "a damaged tree is not used: {steps:?}");
    assert!(
        log.contains("the cached root filesystem tree is damaged"),
        "{log}"
    );
    assert_eq!(rebuilt, fresh, "outputs differ after rebuilding the tree");
    let (_, steps, _) = build_steps(&cache, &recipe, &dir.path().join("d"));
    assert!(hit(&steps), "the rebuilt tree is stored again: {steps:?}");

    // A damaged entry file (its digest) is noticed as well.
    assert_eq!(flip_a_byte_in_every_file(&cache.join("steps/rootfs")), 1);
    let (again, steps, log) = build_steps(&cache, &recipe, &dir.path().join("e"));
    assert!(!hit(&steps));
    assert!(
        log.contains("the cached root filesystem tree is damaged"),
        "{log}"
    );
    assert_eq!(again, fresh);
    assert!(rootfs_tree(&cache).is_dir());

    // `jeos cache` lists and verifies the step cache.
    let ls = jeos(&cache, &["--json", "cache", "ls"]);
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("cache ls JSON");
    let steps = ls["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .find(|k| k["kind"] == "step cache entry")
        .expect("step cache entries are listed");
    assert!(steps["entries"].as_u64() >= Some(2), "{steps}");
    assert!(
        steps["bytes"].as_u64() > Some(1 << 20),
        "the tree counts: {steps}"
    );
    let victim = rootfs_tree(&cache).join("usr/sbin/nginx");
    std::fs::write(&victim, b"not nginx").expect("damage the cached tree");
    let verify = Command::new(env!("CARGO_BIN_EXE_jeos"))
        .env("NO_COLOR", "1")
        .arg("--cache-dir")
        .arg(&cache)
        .args(["--json", "cache", "verify"])
        .output()
        .expect("run jeos cache verify");
    let verify: serde_json::Value =
        serde_json::from_slice(&verify.stdout).expect("cache verify JSON");
    let removed = verify["removed_corrupt"].to_string();
    assert!(removed.contains("steps/rootfs"), "{verify}");
    assert!(
        !cache
            .join("steps/rootfs")
            .read_dir()
            .expect("dir")
            .any(|e| e
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == "tree"))
    );
}
