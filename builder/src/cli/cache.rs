//! `jeos cache ls|verify|prune|clean` over the package cache, and `jeos clean` for
//! output directories.
//!
//! The cache layout is package-resolver's (`cache.rs`): `debs/<sha256>.deb` and
//! `indices/<sha256>` are content-addressed (a file's SHA-256 is its name), `releases/`
//! holds the last verified InRelease per mirror and suite, `tmp/` partial downloads,
//! `verified/` the verified stamps of entries and `locks/` empty lock files. The derived
//! caches: `parsed/` (parsed indices, `index_cache.rs`), `unpacked/<key>/` (kernel and
//! boot loader trees, `unpacked.rs`) and `steps/<step>/<key>` (step caches, with a
//! `<key>.tree/` for the root filesystem, `stepcache.rs`). Removing entries is safe while other builds run: a reader
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
    /// Re-hash every package, index, parsed index, unpacked tree and step cache entry;
    /// remove entries whose content does not match.
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

/// One cache entry: a file, or a directory tree (an unpacked tree; a step entry's
/// `<key>.tree/` counts with its entry file).
struct Entry {
    kind: &'static str,
    path: PathBuf,
    /// A step entry's tree, removed with it.
    tree: Option<PathBuf>,
    bytes: u64,
    /// The later of access and modification time.
    last_use: SystemTime,
}

/// (directory, kind, layout) of every kind of entry.
const KINDS: [(&str, &str, Layout); 8] = [
    ("debs", "package", Layout::Files),
    ("indices", "index", Layout::Files),
    ("parsed", "parsed index", Layout::Files),
    ("unpacked", "unpacked tree", Layout::Trees),
    ("steps", "step cache entry", Layout::Steps),
    ("verified", "verified stamp", Layout::Files),
    ("releases", "release", Layout::Files),
    ("tmp", "partial download", Layout::Files),
];

/// How a kind's directory holds its entries.
#[derive(Clone, Copy)]
enum Layout {
    /// One file per entry.
    Files,
    /// One directory tree per entry.
    Trees,
    /// `<step>/<key>` files, each with an optional `<key>.tree/` directory.
    Steps,
}

fn last_use(meta: &fs::Metadata) -> SystemTime {
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    modified.max(meta.accessed().unwrap_or(modified))
}

/// Bytes of the files below `dir` and the latest use of its top-level files.
fn tree_size(dir: &Path) -> (u64, SystemTime) {
    let mut bytes = 0;
    let mut latest = fs::symlink_metadata(dir).map_or(SystemTime::UNIX_EPOCH, |m| last_use(&m));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(list) = fs::read_dir(&current) else {
            continue;
        };
        for item in list.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            if meta.is_dir() {
                stack.push(item.path());
            } else {
                bytes += meta.len();
                if current == dir {
                    latest = latest.max(last_use(&meta));
                }
            }
        }
    }
    (bytes, latest)
}

/// The entries of one kind's directory.
fn entries_in(dir: &Path, kind: &'static str, layout: Layout, out: &mut Vec<Entry>) {
    let Ok(list) = fs::read_dir(dir) else {
        return;
    };
    for item in list.flatten() {
        let path = item.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        match layout {
            Layout::Files if meta.is_file() => out.push(Entry {
                kind,
                path,
                tree: None,
                bytes: meta.len(),
                last_use: last_use(&meta),
            }),
            Layout::Trees if meta.is_dir() => {
                let (bytes, last_use) = tree_size(&path);
                out.push(Entry {
                    kind,
                    path,
                    tree: None,
                    bytes,
                    last_use,
                });
            }
            Layout::Steps if meta.is_dir() => step_entries(&path, kind, out),
            _ => {}
        }
    }
}

/// The entries of one step's directory (`steps/<step>/`).
fn step_entries(dir: &Path, kind: &'static str, out: &mut Vec<Entry>) {
    let Ok(list) = fs::read_dir(dir) else {
        return;
    };
    for item in list.flatten() {
        let path = item.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            let tree = path.with_extension("tree");
            let (tree_bytes, _) = tree_size(&tree);
            out.push(Entry {
                kind,
                tree: tree.is_dir().then_some(tree),
                path,
                bytes: meta.len() + tree_bytes,
                last_use: last_use(&meta),
            });
        } else if meta.is_dir() && !path.with_extension("").is_file() {
            // A tree without its entry, or a killed writer's `.unpack-*` directory.
            let (bytes, last_use) = tree_size(&path);
            out.push(Entry {
                kind,
                path,
                tree: None,
                bytes,
                last_use,
            });
        }
    }
}

fn entries(root: &Path) -> Result<Vec<Entry>, CacheCmdError> {
    let mut out = Vec::new();
    for (dir, kind, layout) in KINDS {
        entries_in(&root.join(dir), kind, layout, &mut out);
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
            .map(|(_, kind, _)| {
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
    for (_, kind, _) in KINDS {
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

/// Whether an entry's content is what its name or its own digest says (`None`: a kind
/// without a check, such as stamps and partial downloads). Nothing is trusted: every
/// file is read and hashed.
fn is_intact(entry: &Entry) -> Result<Option<bool>, CacheCmdError> {
    let name = entry
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    Ok(Some(match entry.kind {
        "package" | "index" => sha256_of(&entry.path)? == name.trim_end_matches(".deb"),
        "parsed index" => {
            let bytes = fs::read(&entry.path).map_err(io_err(&entry.path))?;
            package_resolver::index_cache::decode(&bytes).is_ok()
        }
        "unpacked tree" => crate::unpacked::is_intact_full(&entry.path, &name),
        "step cache entry" => crate::stepcache::verify_entry(&entry.path),
        _ => return Ok(None),
    }))
}

fn verify(root: &Path, session: &mut Session) -> miette::Result<ExitStatus> {
    let mut checked = 0usize;
    let mut corrupt = Vec::new();
    let mut damaged = Vec::new();
    for entry in entries(root)? {
        let Some(intact) = is_intact(&entry)? else {
            continue;
        };
        checked += 1;
        if !intact {
            corrupt.push(entry.path.display().to_string());
            damaged.push(entry);
        }
    }
    remove_entries(&damaged)?;
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
        // The entry file first: a tree without its entry is never used.
        let removed = if entry.path.is_dir() {
            fs::remove_dir_all(&entry.path)
        } else {
            fs::remove_file(&entry.path)
        };
        match removed {
            Ok(()) => freed += entry.bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&entry.path)(e)),
        }
        if let Some(tree) = &entry.tree {
            match fs::remove_dir_all(tree) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(tree)(e)),
            }
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
