//! `jeos resolve` against the real Debian archive that this host's apt sources name.
//! Skips loudly when that mirror cannot be reached.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use builder::resolve::{self, LockMode, ResolveOptions};
use package_resolver::lock::LockFile;
use package_resolver::reporter::NoReporter;
use package_resolver::solver;
use package_resolver::sources::AptSources;

use crate::common::{TestDir, recipes_dir};

/// A cache shared by the tests of one `cargo test` run (and kept between runs).
pub fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("jeos-cache")
}

/// The host's Debian mirror, if it answers on TCP; `None` after printing why not (a
/// failure under `CI=true`, where the mirror is a prerequisite).
pub fn reachable_mirror(suite: &str) -> Option<String> {
    let sources = match AptSources::load(Path::new("/")) {
        Ok(s) => s,
        Err(e) => {
            crate::common::prerequisite(false, &format!("cannot read the host's apt sources: {e}"));
            return None;
        }
    };
    let mirror = match sources.mirror_for_suite(suite) {
        Ok(m) => m.uri,
        Err(e) => {
            crate::common::prerequisite(
                false,
                &format!("the host's apt sources name no Debian mirror: {e}"),
            );
            return None;
        }
    };
    let rest = mirror.split_once("://").map_or(mirror.as_str(), |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let reachable = with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok());
    if reachable {
        Some(mirror)
    } else {
        crate::common::prerequisite(
            false,
            &format!("the Debian mirror `{mirror}` is not reachable from this machine"),
        );
        None
    }
}

fn copy_recipe(dir: &TestDir, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(recipes_dir().join(name)).expect("read example recipe");
    dir.create(name, &text)
}

fn resolve_json(dir: &TestDir, recipe: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let output = dir
        .jeos()
        .arg("--json")
        .arg("--cache-dir")
        .arg(shared_cache())
        .arg("resolve")
        .args(extra)
        .arg(recipe)
        .output()
        .expect("run jeos");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "jeos resolve failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Progress events are JSON lines too; the result is the last line.
    let last = stdout.lines().last().expect("output");
    (serde_json::from_str(last).expect("json result"), stderr)
}

/// Resolves the example recipe with the binary, then checks the lock against an independent
/// library resolution: closed, conflict-free and minimal (`verify_closure`), identical sets.
fn check_example(name: &str, app: &str, must_not_contain: &[&str]) {
    let Some(_) = reachable_mirror("trixie") else {
        return;
    };
    let dir = TestDir::new();
    let recipe_path = copy_recipe(&dir, name);
    let (json, _) = resolve_json(&dir, &recipe_path, &[]);
    assert_eq!(json["lock_status"], "created");
    let lock_text =
        std::fs::read_to_string(recipe_path.with_extension("lock")).expect("lock written");
    let lock = LockFile::parse(&lock_text, Path::new("lock")).expect("lock parses");

    let recipe = builder::recipe::load(&recipe_path).expect("recipe loads");
    let options = ResolveOptions {
        mirror_override: None,
        cache_dir: shared_cache(),
        offline: false,
        allow_downgrade: false,
        lock_mode: LockMode::Update,
        apt_root: PathBuf::from("/"),
    };
    let repos = resolve::open_repositories(&recipe.source, &options, Arc::new(NoReporter))
        .expect("repository");
    let (index, releases, text_suites) =
        resolve::load_index(&recipe.source, &repos, SystemTime::now()).expect("index");
    let resolution = solver::solve(&index, &resolve::solve_request(&recipe)).expect("solves");
    solver::verify_closure(&index, &resolution).expect("closed, conflict-free and minimal");

    let from_lock: Vec<&str> = lock.packages.iter().map(|p| p.name.as_str()).collect();
    let from_library: Vec<&str> = resolution
        .packages
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(from_lock, from_library);
    assert!(from_lock.contains(&app), "{from_lock:?}");
    assert!(from_lock.contains(&"linux-image-amd64"), "{from_lock:?}");
    for absent in must_not_contain {
        assert!(!from_lock.contains(absent), "`{absent}` in {from_lock:?}");
    }
    // The kernel's initramfs tooling is reported as dropped, not installed.
    let dropped = json["dropped"].as_array().expect("dropped list");
    assert!(
        dropped.iter().any(|d| d["relation"]
            .as_str()
            .unwrap_or("")
            .contains("linux-initramfs-tool")),
        "{dropped:?}"
    );
    // Every package carries a pool path and a SHA-256 taken from the verified index: the
    // highest version of the three suites, and the suite it came from.
    for p in &lock.packages {
        let indexed = index.candidate(&p.name).expect("in the index");
        assert_eq!(p.sha256, indexed.sha256());
        assert_eq!(p.filename, indexed.filename());
        assert_eq!(
            p.suite.as_deref(),
            Some(text_suites[indexed.source_index()].as_str())
        );
    }
    // The lock names three suites, each with its verified InRelease date and hash.
    let suites: Vec<&str> = lock
        .source
        .releases
        .iter()
        .map(|r| r.suite.as_str())
        .collect();
    assert_eq!(suites, ["trixie", "trixie-updates", "trixie-security"]);
    for (locked, fetched) in lock.source.releases.iter().zip(&releases) {
        assert_eq!(locked.sha256, fetched.release.inrelease_sha256);
        assert_eq!(locked.date, fetched.release.release.date.text);
    }
    assert_eq!(lock.source.releases[2].archive, "security");

    // A second run uses the lock as is; `--locked` accepts it.
    let (again, _) = resolve_json(&dir, &recipe_path, &["--locked"]);
    assert_eq!(again["lock_status"], "used");
    assert_eq!(again["packages"], json["packages"]);
}

#[test]
fn nginx_closure_is_closed_conflict_free_and_minimal() {
    check_example(
        "nginx.toml",
        "nginx",
        &["initramfs-tools", "kmod", "systemd", "perl-base", "apt"],
    );
}

#[test]
fn redis_closure_is_closed_conflict_free_and_minimal() {
    check_example(
        "redis.toml",
        "redis-server",
        &["initramfs-tools", "kmod", "apt", "dpkg"],
    );
}

/// Issue #8: the nginx lock takes `nginx` from `trixie-security` whenever that suite has a
/// newer version than `trixie` (and from the newest suite in any case).
#[test]
fn issue_8_nginx_comes_from_security_when_that_is_newest() {
    let Some(_) = reachable_mirror("trixie") else {
        return;
    };
    let dir = TestDir::new();
    let recipe_path = copy_recipe(&dir, "nginx.toml");
    resolve_json(&dir, &recipe_path, &[]);
    let lock_path = recipe_path.with_extension("lock");
    let lock = LockFile::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path)
        .expect("lock parses");
    let recipe = builder::recipe::load(&recipe_path).expect("recipe loads");
    let options = ResolveOptions {
        mirror_override: None,
        cache_dir: shared_cache(),
        offline: false,
        allow_downgrade: false,
        lock_mode: LockMode::Update,
        apt_root: PathBuf::from("/"),
    };
    let repos = resolve::open_repositories(&recipe.source, &options, Arc::new(NoReporter))
        .expect("repository");
    let (index, _, text_suites) =
        resolve::load_index(&recipe.source, &repos, SystemTime::now()).expect("index");
    let versions: Vec<(String, String)> = index
        .versions("nginx")
        .map(|p| {
            (
                p.version().to_string(),
                text_suites[p.source_index()].clone(),
            )
        })
        .collect();
    let nginx = lock
        .packages
        .iter()
        .find(|p| p.name == "nginx")
        .expect("nginx");
    eprintln!(
        "nginx versions: {versions:?}; locked {} from {:?}",
        nginx.version, nginx.suite
    );
    assert_eq!(
        nginx.version.to_string(),
        versions[0].0,
        "the highest version wins"
    );
    let security_newest = versions[0].1 == "trixie-security";
    if security_newest {
        assert_eq!(nginx.suite.as_deref(), Some("trixie-security"));
    }
    let (json, _) = resolve_json(&dir, &recipe_path, &["--locked"]);
    assert_eq!(json["releases"].as_array().map(Vec::len), Some(3), "{json}");
}

#[test]
fn why_shows_the_chain_from_the_application() {
    let Some(_) = reachable_mirror("trixie") else {
        return;
    };
    let dir = TestDir::new();
    let recipe_path = copy_recipe(&dir, "nginx.toml");
    let output = dir
        .jeos()
        .arg("--cache-dir")
        .arg(shared_cache())
        .args(["resolve", "--why", "libc6"])
        .arg(&recipe_path)
        .output()
        .expect("run jeos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("nginx "), "{stdout}");
    assert!(lines.last().expect("chain").contains("libc6"), "{stdout}");

    let missing = dir
        .jeos()
        .arg("--cache-dir")
        .arg(shared_cache())
        .args(["resolve", "--why", "systemd"])
        .arg(&recipe_path)
        .output()
        .expect("run jeos");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not in the closure"));
}

#[test]
fn locked_fails_when_the_recipe_changed() {
    let Some(_) = reachable_mirror("trixie") else {
        return;
    };
    let dir = TestDir::new();
    let recipe_path = copy_recipe(&dir, "nginx.toml");
    resolve_json(&dir, &recipe_path, &[]);
    let text = std::fs::read_to_string(&recipe_path).expect("read");
    std::fs::write(
        &recipe_path,
        text.replace("install = [\"nginx\"]", "install = [\"nginx\", \"curl\"]"),
    )
    .expect("write");
    let output = dir
        .jeos()
        .arg("--cache-dir")
        .arg(shared_cache())
        .args(["resolve", "--locked"])
        .arg(&recipe_path)
        .output()
        .expect("run jeos");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("out of date"), "{stderr}");
    assert!(stderr.contains("`curl` added to the recipe"), "{stderr}");
    assert!(stderr.contains("jeos resolve --update"), "{stderr}");
    // Without --locked the lock follows the recipe.
    let (json, _) = resolve_json(&dir, &recipe_path, &[]);
    assert_eq!(json["lock_status"], "updated");
    let names: Vec<&str> = json["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"curl"), "{names:?}");
}

#[test]
fn unknown_package_gets_suggestions() {
    let Some(_) = reachable_mirror("trixie") else {
        return;
    };
    let dir = TestDir::new();
    let recipe_path = dir.create(
        "typo.toml",
        "[appliance]\nname = \"typo\"\nversion = \"1\"\n\n[source]\nsuite = \"trixie\"\n\n[packages]\ninstall = [\"ngin\"]\n",
    );
    let output = dir
        .jeos()
        .arg("--cache-dir")
        .arg(shared_cache())
        .arg("resolve")
        .arg(&recipe_path)
        .output()
        .expect("run jeos");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown package `ngin`"), "{stderr}");
    assert!(stderr.contains("did you mean `nginx`"), "{stderr}");
    assert!(!recipe_path.with_extension("lock").exists());
}
