//! `jeos cache ls|verify|prune|clean` over the package cache, and `jeos clean` for
//! output directories.
//!
//! The cache layout is package-resolver's (`cache.rs`): `debs/<sha256>.deb` and
//! `indices/<sha256>` are content-addressed (a file's SHA-256 is its name), `releases/`
//! holds the last verified InRelease per mirror and suite, `tmp/` partial downloads and
//! `locks/` empty lock files. Removing entries is safe while other builds run: a reader
//! that misses an entry downloads it again, and a writer renames complete files only.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use miette::Diagnostic;

use super::{ExitStatus, Session, plural};
use crate::progress::format_bytes;

/// `jeos cache`
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// What to do (default: `ls`).
    #[command(subcommand)]
    pub action: Option<CacheAction>,
}

/// `jeos cache` actions.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Sizes and last use of the cache, per kind (every entry with `--verbose`).
    Ls,
    /// Re-hash every package and index; remove entries whose content does not match.
    Verify,
    /// Remove entries not used for a while, and stale partial downloads.
    Prune {
        /// Remove what was last used longer ago than this (`30d`, `12h`).
        #[arg(long, value_name = "AGE", default_value = "30d", value_parser = parse_age)]
        older_than: Duration,
    },
    /// Remove everything in the cache.
    Clean,
}

/// `jeos clean`
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Output directories to clean (what `jeos build -o` wrote).
    #[arg(value_name = "DIR", default_value = "dist")]
    pub dirs: Vec<PathBuf>,
}

/// Why a cache command failed.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum CacheCmdError {
    /// A file or directory could not be read or removed.
    #[error("cannot access `{}`", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheCmdError + '_ {
    move |source| CacheCmdError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `30d`, `12h`, `90m` (pure).
fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not an age like `30d` or `12h`"))?;
    let seconds = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" | "" => Some(n),
        _ => None,
    };
    seconds
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is not an age like `30d` or `12h`"))
}

/// One cache file.
struct Entry {
    kind: &'static str,
    path: PathBuf,
    bytes: u64,
    /// The later of access and modification time.
    last_use: SystemTime,
}

const KINDS: [(&str, &str); 4] = [
    ("debs", "package"),
    ("indices", "index"),
    ("releases", "release"),
    ("tmp", "partial download"),
];

fn entries(root: &Path) -> Result<Vec<Entry>, CacheCmdError> {
    let mut out = Vec::new();
    for (dir, kind) in KINDS {
        let dir = root.join(dir);
        let Ok(list) = fs::read_dir(&dir) else {
            continue;
        };
        for item in list {
            let item = item.map_err(io_err(&dir))?;
            let meta = item.metadata().map_err(io_err(&item.path()))?;
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let accessed = meta.accessed().unwrap_or(modified);
            out.push(Entry {
                kind,
                path: item.path(),
                bytes: meta.len(),
                last_use: modified.max(accessed),
            });
        }
    }
    Ok(out)
}

fn age_text(time: SystemTime) -> String {
    let age = time.elapsed().unwrap_or_default().as_secs();
    match age {
        0..120 => "just now".into(),
        120..7200 => format!("{} min ago", age / 60),
        7200..172_800 => format!("{} h ago", age / 3600),
        _ => format!("{} days ago", age / 86_400),
    }
}

/// `jeos cache`
pub fn cache(args: &CacheArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let root = super::resolve_options(session, crate::resolve::LockMode::Use)?.cache_dir;
    match &args.action {
        None | Some(CacheAction::Ls) => ls(&root, session),
        Some(CacheAction::Verify) => verify(&root, session),
        Some(CacheAction::Prune { older_than }) => prune(&root, *older_than, session),
        Some(CacheAction::Clean) => clean_cache(&root, session),
    }
}

fn ls(root: &Path, session: &mut Session) -> miette::Result<ExitStatus> {
    let list = entries(root)?;
    if session.global.json {
        let kinds: Vec<serde_json::Value> = KINDS
            .iter()
            .map(|(_, kind)| {
                let of: Vec<&Entry> = list.iter().filter(|e| e.kind == *kind).collect();
                serde_json::json!({
                    "kind": kind,
                    "entries": of.len(),
                    "bytes": of.iter().map(|e| e.bytes).sum::<u64>(),
                })
            })
            .collect();
        let value = serde_json::json!({ "cache": root.display().to_string(), "kinds": kinds });
        session.printer.stdout_line(&value.to_string());
        return Ok(ExitStatus::Success);
    }
    session
        .printer
        .stdout_line(&format!("cache: {}", root.display()));
    for (_, kind) in KINDS {
        let of: Vec<&Entry> = list.iter().filter(|e| e.kind == kind).collect();
        let last = of.iter().map(|e| e.last_use).max();
        session.printer.stdout_line(&format!(
            "  {:18} {:>6}  {:>10}  last used {}",
            format!("{kind}s"),
            of.len(),
            format_bytes(of.iter().map(|e| e.bytes).sum()),
            last.map_or_else(|| "never".into(), age_text)
        ));
        if session.global.verbose {
            for entry in of {
                session.printer.stdout_line(&format!(
                    "    {}  {:>10}  {}",
                    entry.path.file_name().unwrap_or_default().to_string_lossy(),
                    format_bytes(entry.bytes),
                    age_text(entry.last_use)
                ));
            }
        }
    }
    let total: u64 = list.iter().map(|e| e.bytes).sum();
    session
        .printer
        .stdout_line(&format!("  total {}", format_bytes(total)));
    Ok(ExitStatus::Success)
}

fn sha256_of(path: &Path) -> Result<String, CacheCmdError> {
    let mut file = fs::File::open(path).map_err(io_err(path))?;
    let (hash, _) = package_resolver::cache::hash_reader(&mut file).map_err(io_err(path))?;
    Ok(hash)
}

fn verify(root: &Path, session: &mut Session) -> miette::Result<ExitStatus> {
    let mut checked = 0usize;
    let mut corrupt = Vec::new();
    for entry in entries(root)? {
        if !matches!(entry.kind, "package" | "index") {
            continue;
        }
        let name = entry.path.file_name().unwrap_or_default().to_string_lossy();
        let expected = name.trim_end_matches(".deb").to_owned();
        checked += 1;
        if sha256_of(&entry.path)? != expected {
            fs::remove_file(&entry.path).map_err(io_err(&entry.path))?;
            corrupt.push(entry.path.display().to_string());
        }
    }
    if session.global.json {
        let value = serde_json::json!({ "verified": checked, "removed_corrupt": corrupt });
        session.printer.stdout_line(&value.to_string());
    } else {
        for path in &corrupt {
            session
                .printer
                .stderr_line(&format!("corrupt (removed): {path}"));
        }
        session.printer.stdout_line(&format!(
            "Verified {}: {}",
            plural(checked, "entry").replace("entrys", "entries"),
            if corrupt.is_empty() {
                "all intact".to_owned()
            } else {
                format!("{} corrupt, removed", corrupt.len())
            }
        ));
    }
    Ok(if corrupt.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn remove_entries(list: &[Entry]) -> Result<u64, CacheCmdError> {
    let mut freed = 0;
    for entry in list {
        match fs::remove_file(&entry.path) {
            Ok(()) => freed += entry.bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&entry.path)(e)),
        }
    }
    Ok(freed)
}

fn prune(root: &Path, older_than: Duration, session: &mut Session) -> miette::Result<ExitStatus> {
    let day = Duration::from_secs(86_400);
    let old: Vec<Entry> = entries(root)?
        .into_iter()
        .filter(|e| {
            let limit = if e.kind == "partial download" {
                day.min(older_than)
            } else {
                older_than
            };
            e.last_use.elapsed().unwrap_or_default() > limit
        })
        .collect();
    let freed = remove_entries(&old)?;
    report_removed(session, old.len(), freed);
    Ok(ExitStatus::Success)
}

fn clean_cache(root: &Path, session: &mut Session) -> miette::Result<ExitStatus> {
    let all = entries(root)?;
    let freed = remove_entries(&all)?;
    report_removed(session, all.len(), freed);
    Ok(ExitStatus::Success)
}

fn report_removed(session: &mut Session, count: usize, freed: u64) {
    if session.global.json {
        let value = serde_json::json!({ "removed": count, "freed_bytes": freed });
        session.printer.stdout_line(&value.to_string());
    } else if !session.global.quiet {
        session.printer.stdout_line(&format!(
            "Removed {} ({} freed)",
            plural(count, "file"),
            format_bytes(freed)
        ));
    }
}

/// `jeos clean`: removes what `jeos build` wrote into output directories (appliance
/// directories holding a `build-report.json`, and left-over `.jeos-build-*` work
/// directories), nothing else.
pub fn clean(args: &CleanArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let mut removed = Vec::new();
    for dir in &args.dirs {
        let Ok(list) = fs::read_dir(dir) else {
            continue;
        };
        for item in list.flatten() {
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            let ours = path.is_dir()
                && (name.starts_with(".jeos-build-") || path.join("build-report.json").is_file());
            if ours {
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
                removed.push(path.display().to_string());
            }
        }
        // The output directory itself, when nothing else is left in it.
        if fs::read_dir(dir).is_ok_and(|mut l| l.next().is_none()) {
            let _ = fs::remove_dir(dir);
        }
    }
    if session.global.json {
        session
            .printer
            .stdout_line(&serde_json::json!({ "removed": removed }).to_string());
    } else if !session.global.quiet {
        for path in &removed {
            session.printer.stderr_line(&format!("removed {path}"));
        }
        session.printer.stdout_line(&format!(
            "Removed {}",
            plural(removed.len(), "appliance directory").replace("directorys", "directories")
        ));
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("3w").is_err());
    }

    #[test]
    fn entries_are_listed_by_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("debs")).expect("mkdir");
        fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
        fs::write(dir.path().join("debs/abc.deb"), b"12345").expect("write");
        fs::write(dir.path().join("tmp/x"), b"1").expect("write");
        let list = entries(dir.path()).expect("list");
        assert_eq!(list.len(), 2);
        assert!(list.iter().any(|e| e.kind == "package" && e.bytes == 5));
        assert_eq!(remove_entries(&list).expect("remove"), 6);
        assert!(entries(dir.path()).expect("list").is_empty());
    }
}
