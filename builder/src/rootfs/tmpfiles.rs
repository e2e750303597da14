//! `tmpfiles.d(5)` entries shipped by packages, applied at build time.
//!
//! What is done with each line type (modifiers `!` and `-` are accepted; `!` lines are
//! applied because the build is the image's "boot of record"):
//!
//! | type | build time |
//! |---|---|
//! | `d` `D` `v` `q` `Q` | create the directory (subvolume types fall back to `d`, as systemd does off btrfs); an existing one gets the mode/owner unless the mode starts with `:` |
//! | `f` `f+` | create the file with the argument as content (`+` truncates an existing one); an existing one gets mode/owner adjusted |
//! | `L` `L+` | create the symlink (`+` replaces what is there) |
//! | `p` `p+`, `c` `b` | record a FIFO/device node in the metadata |
//! | `C` `C+` | copy a file or directory tree if the target is missing |
//! | `z` `Z` | adjust mode/owner of an existing path (`Z` recursively) |
//! | `e` | adjust mode/owner of an existing directory (its cleaning age is irrelevant in an image) |
//! | `w` | write the argument into an existing file, keeping its metadata |
//! | `x` `X` | nothing to do: they exclude paths from cleaning, and an image is never cleaned |
//! | `w+` `r` `R` `a` `A` `h` `H` `t` `T` | skipped with a note: they act on live state (appending, removal at boot, ACLs, attributes) |
//!
//! Paths under `/run`, `/tmp`, `/dev`, `/proc` and `/sys` are mounted over at boot (guest-init
//! mounts tmpfs on `/run` and `/tmp`), so `d D v q Q` directories, `f F` files and `L`
//! symlinks there are returned as [`RuntimeDir`]s for the init to create instead. Specifiers
//! are expanded with [`Specifiers`] (in the path and in the argument of `f w L C`); lines
//! using a run-time-only specifier, globs, credentials (`^`) or base64 arguments (`~`) are
//! skipped, as are lines whose owner is unknown; every skip is noted for the build report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::accounts::Accounts;
use super::specifiers::{Flavour, Specifiers};
use super::staging::FsOp;
use super::tree::{EntryKind, Ownership, Tree, normalize};
use super::words::split_fields;

/// Directories searched, lowest priority first.
pub const TMPFILES_DIRS: &[&str] = &["usr/lib/tmpfiles.d", "etc/tmpfiles.d"];

/// Mount points whose content only exists at run time.
pub const RUNTIME_PREFIXES: &[&str] = &["run", "tmp", "dev", "proc", "sys"];

/// Errors from tmpfiles.d files.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TmpfilesError {
    /// A line could not be parsed.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfilesEntry {
    /// File it came from.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Type letter.
    pub kind: char,
    /// `+` modifier.
    pub plus: bool,
    /// `-` modifier (failures are ignored).
    pub ignore_errors: bool,
    /// Path with specifiers expanded, or `None` when it uses an unsupported one.
    pub path: Option<String>,
    /// Mode (`None` for `-`).
    pub mode: Option<u32>,
    /// Mode only applies on creation (`:` prefix).
    pub mode_on_create_only: bool,
    /// User column (`None` for `-`).
    pub user: Option<String>,
    /// Group column (`None` for `-`).
    pub group: Option<String>,
    /// Argument column.
    pub argument: Option<String>,
    /// Why the line cannot be applied at all, if so.
    pub unsupported: Option<String>,
}

/// What a [`RuntimeDir`] entry creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeKind {
    /// A directory.
    Directory,
    /// A file with this content.
    File(String),
    /// A symbolic link to this target.
    Symlink(String),
}

/// A directory (or file, or symlink) guest-init should create at boot, on a runtime mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDir {
    /// Absolute path.
    pub path: String,
    /// Mode.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// What to create.
    pub kind: RuntimeKind,
}

/// What applying the tmpfiles.d entries means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TmpfilesPlan {
    /// Changes to the image.
    pub ops: Vec<FsOp>,
    /// Directories to create at boot.
    pub runtime_dirs: Vec<RuntimeDir>,
    /// Skipped lines, for the build report.
    pub notes: Vec<String>,
}

/// Parses one tmpfiles.d file, expanding specifiers with `specifiers`.
pub fn parse_tmpfiles(
    file: &Path,
    text: &str,
    specifiers: &Specifiers,
) -> Result<Vec<TmpfilesEntry>, TmpfilesError> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |message: String| TmpfilesError::Parse {
            file: file.to_path_buf(),
            line,
            message,
        };
        let (fields, argument) =
            split_fields(trimmed, 6).map_err(|_| err("unterminated quote".to_owned()))?;
        if fields.len() < 2 {
            return Err(err("missing path".to_owned()));
        }
        let type_field = &fields[0];
        let mut chars = type_field.chars();
        let kind = chars.next().ok_or_else(|| err("empty type".to_owned()))?;
        if !"fFwdDevqQpLcbCxXrRzZtThHaA".contains(kind) {
            return Err(err(format!("unknown line type `{type_field}`")));
        }
        let mut entry = TmpfilesEntry {
            file: file.to_path_buf(),
            line,
            kind,
            plus: false,
            ignore_errors: false,
            path: None,
            mode: None,
            mode_on_create_only: false,
            user: None,
            group: None,
            argument: None,
            unsupported: None,
        };
        for modifier in chars {
            match modifier {
                '+' => entry.plus = true,
                '-' => entry.ignore_errors = true,
                '!' | '=' => {}
                '^' => {
                    entry.unsupported =
                        Some("credentials (`^`) are not available at build time".to_owned())
                }
                '~' => {
                    entry.unsupported = Some("base64 arguments (`~`) are not supported".to_owned())
                }
                other => return Err(err(format!("unknown modifier `{other}` in `{type_field}`"))),
            }
        }
        match specifiers.expand(&fields[1], Flavour::Tmpfiles) {
            Ok(path) => entry.path = Some(path),
            Err(why) => {
                entry.unsupported.get_or_insert_with(|| why.to_string());
            }
        }
        let column = |i: usize| fields.get(i).map(String::as_str).filter(|v| *v != "-");
        if let Some(mode) = column(2) {
            let (on_create, digits) = match mode.strip_prefix(':') {
                Some(rest) => (true, rest),
                None => (false, mode),
            };
            let digits = digits.strip_prefix('~').unwrap_or(digits);
            entry.mode = Some(
                u32::from_str_radix(digits, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| err(format!("invalid mode `{mode}`")))?,
            );
            entry.mode_on_create_only = on_create;
        }
        entry.user = column(3).map(str::to_owned);
        entry.group = column(4).map(str::to_owned);
        entry.argument = match argument {
            Some(argument) if "fFwLC".contains(kind) => {
                match specifiers.expand(argument, Flavour::Tmpfiles) {
                    Ok(expanded) => Some(expanded),
                    Err(why) => {
                        entry.unsupported.get_or_insert_with(|| why.to_string());
                        None
                    }
                }
            }
            other => other.map(str::to_owned),
        };
        entries.push(entry);
    }
    Ok(entries)
}

fn is_runtime(path: &Path) -> bool {
    path.components()
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .is_some_and(|first| RUNTIME_PREFIXES.contains(&first))
}

/// Unescapes the C-style escapes tmpfiles allows in `f`/`w` arguments.
fn unescape(argument: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = argument.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            Some('"') => out.push(b'"'),
            Some('\'') => out.push(b'\''),
            Some(other) => {
                out.push(b'\\');
                let mut buf = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
            None => out.push(b'\\'),
        }
    }
    out
}

/// Plans the entries against the tree, resolving owners with `accounts`. Entries are
/// taken in order; a later creating line for a path already handled is skipped, as
/// systemd-tmpfiles does for duplicates.
pub fn plan_tmpfiles(entries: &[TmpfilesEntry], tree: &Tree, accounts: &Accounts) -> TmpfilesPlan {
    let mut plan = TmpfilesPlan::default();
    let mut seen: BTreeSet<(bool, PathBuf)> = BTreeSet::new();
    let mut created: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for entry in entries {
        let where_ = format!("{}:{}", entry.file.display(), entry.line);
        let mut skip = |reason: &str| {
            plan.notes
                .push(format!("{where_}: skipped `{}`: {reason}", entry.kind))
        };
        if let Some(reason) = &entry.unsupported {
            skip(reason);
            continue;
        }
        if "xX".contains(entry.kind) {
            continue;
        }
        if "rRaAhHtT".contains(entry.kind) || (entry.kind == 'w' && entry.plus) {
            skip("acts on live state only");
            continue;
        }
        let Some(raw_path) = entry.path.as_deref() else {
            continue;
        };
        if raw_path.contains(['*', '?', '[']) {
            skip("globs are not expanded at build time");
            continue;
        }
        let Ok(path) = normalize(Path::new(raw_path)) else {
            skip("path is not plain");
            continue;
        };
        if path.as_os_str().is_empty() {
            skip("refusing to touch the root directory");
            continue;
        }
        let uid = match &entry.user {
            None => Some(0),
            Some(user) => accounts.resolve_uid(user),
        };
        let gid = match &entry.group {
            None => Some(0),
            Some(group) => accounts.resolve_gid(group),
        };
        let (Some(uid), Some(gid)) = (uid, gid) else {
            skip(&format!(
                "unknown owner `{}:{}`",
                entry.user.as_deref().unwrap_or("root"),
                entry.group.as_deref().unwrap_or("root")
            ));
            continue;
        };
        let adjusts = "zZew".contains(entry.kind);
        if !seen.insert((adjusts, path.clone())) {
            skip("an earlier line handles this path");
            continue;
        }
        let default_mode = match entry.kind {
            'd' | 'D' | 'v' | 'q' | 'Q' => 0o755,
            'L' => 0o777,
            _ => 0o644,
        };
        let mode = entry.mode.unwrap_or(default_mode);
        let own = Ownership { mode, uid, gid };
        if is_runtime(&path) {
            match runtime_entry(entry, &path, own) {
                Some(dir) => plan.runtime_dirs.push(dir),
                None if entry.kind == 'e' => {}
                None => skip("on a runtime mount; nothing to do in the image"),
            }
            continue;
        }
        // Existence as seen by the tree or by earlier lines of this plan.
        let existing = tree
            .resolve(&path, false)
            .ok()
            .filter(|r| r.exists)
            .and_then(|r| tree.get(&r.path));
        let exists = existing.is_some() || created.contains_key(&path);
        let line = Line {
            entry,
            path: &path,
            own,
            uid,
            gid,
            existing,
            exists,
        };
        match plan_line(&line, tree, &mut plan.ops) {
            Ok(Some(is_dir)) => {
                created.insert(path.clone(), is_dir);
            }
            Ok(None) => {}
            Err(reason) => skip(&reason),
        }
    }
    plan
}

/// One line to plan, with what the plan knows about its path.
struct Line<'a> {
    entry: &'a TmpfilesEntry,
    path: &'a Path,
    own: Ownership,
    uid: u32,
    gid: u32,
    existing: Option<&'a super::tree::Entry>,
    exists: bool,
}

/// Plans one line outside the runtime mounts. `Ok(Some(is_dir))`: the path was created;
/// `Err`: why the line is skipped.
fn plan_line(line: &Line<'_>, tree: &Tree, ops: &mut Vec<FsOp>) -> Result<Option<bool>, String> {
    let Line {
        entry,
        path,
        own,
        uid,
        gid,
        existing,
        exists,
    } = *line;
    let path = path.to_path_buf();
    let parent_op = || FsOp::CreateDir {
        path: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        own: Ownership::root(0o755),
        update: false,
    };
    let adjust_op = |recursive: bool| FsOp::SetMetadata {
        path: path.clone(),
        mode: (!entry.mode_on_create_only).then_some(entry.mode).flatten(),
        uid: entry.user.as_ref().map(|_| uid),
        gid: entry.group.as_ref().map(|_| gid),
        recursive,
    };
    match entry.kind {
        'd' | 'D' | 'v' | 'q' | 'Q' => {
            if existing.is_some_and(|e| !e.is_dir() && !e.is_symlink()) {
                return Err("exists and is not a directory".to_owned());
            }
            ops.push(FsOp::CreateDir {
                path: path.clone(),
                own,
                update: !entry.mode_on_create_only,
            });
            return Ok(Some(true));
        }
        'f' | 'F' => {
            if exists && !entry.plus && entry.kind == 'f' {
                ops.push(adjust_op(false));
                return Ok(None);
            }
            let contents = entry.argument.as_deref().map(unescape).unwrap_or_default();
            ops.push(parent_op());
            ops.push(FsOp::WriteFile {
                path: path.clone(),
                contents,
                own,
            });
            return Ok(Some(false));
        }
        'L' => {
            if exists && !entry.plus {
                return Ok(None);
            }
            let target = entry
                .argument
                .clone()
                .unwrap_or_else(|| format!("/usr/share/factory/{}", path.display()));
            ops.push(parent_op());
            ops.push(FsOp::Symlink {
                path: path.clone(),
                target: PathBuf::from(target),
            });
            return Ok(Some(false));
        }
        'p' | 'c' | 'b' => {
            if exists && !entry.plus {
                return Ok(None);
            }
            let kind = if entry.kind == 'p' {
                EntryKind::Fifo
            } else {
                let numbers = entry
                    .argument
                    .as_deref()
                    .and_then(|a| a.split_once(':'))
                    .and_then(|(a, b)| {
                        Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
                    });
                let Some((major, minor)) = numbers else {
                    return Err("device node without `major:minor`".to_owned());
                };
                if entry.kind == 'c' {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                }
            };
            ops.push(parent_op());
            ops.push(FsOp::Node {
                path: path.clone(),
                kind,
                own,
            });
            return Ok(Some(false));
        }
        'C' => {
            if exists && !entry.plus {
                return Ok(None);
            }
            let source = entry
                .argument
                .clone()
                .unwrap_or_else(|| format!("/usr/share/factory/{}", path.display()));
            match plan_copy(tree, Path::new(&source), &path) {
                Some(copies) => {
                    ops.push(parent_op());
                    ops.extend(copies);
                    return Ok(Some(true));
                }
                None => return Err(format!("copy source `{source}` is missing")),
            }
        }
        'z' | 'Z' => {
            if exists {
                ops.push(adjust_op(entry.kind == 'Z'));
            } else {
                return Err("path does not exist".to_owned());
            }
        }
        'e' => {
            if existing.is_some_and(super::tree::Entry::is_dir) {
                ops.push(adjust_op(false));
            }
        }
        'w' => match existing {
            Some(e) if e.is_file() => ops.push(FsOp::WriteFile {
                path: path.clone(),
                contents: entry.argument.as_deref().map(unescape).unwrap_or_default(),
                own: Ownership {
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                },
            }),
            _ => return Err("`w` writes only to an existing file".to_owned()),
        },
        _ => return Err("unsupported type".to_owned()),
    }
    Ok(None)
}

/// What guest-init creates at boot for a line on `/run` or `/tmp` (`None`: nothing, and
/// nothing at all for `/dev`, `/proc` and `/sys`, which the kernel fills).
fn runtime_entry(entry: &TmpfilesEntry, path: &Path, own: Ownership) -> Option<RuntimeDir> {
    let first = path.components().next()?.as_os_str().to_str()?;
    if first != "run" && first != "tmp" {
        return None;
    }
    let kind = match entry.kind {
        'd' | 'D' | 'v' | 'q' | 'Q' => RuntimeKind::Directory,
        'f' | 'F' => RuntimeKind::File(
            String::from_utf8_lossy(&entry.argument.as_deref().map(unescape).unwrap_or_default())
                .into_owned(),
        ),
        'L' => RuntimeKind::Symlink(entry.argument.clone()?),
        _ => return None,
    };
    Some(RuntimeDir {
        path: format!("/{}", path.display()),
        mode: own.mode,
        uid: own.uid,
        gid: own.gid,
        kind,
    })
}

/// Plans copying `source` (a file or a directory tree of the image) to `target`.
fn plan_copy(tree: &Tree, source: &Path, target: &Path) -> Option<Vec<FsOp>> {
    let (physical, entry) = tree.lookup(source).ok()?;
    let own_of = |e: &super::tree::Entry| Ownership {
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
    };
    if !entry.is_dir() {
        return entry.is_file().then(|| {
            vec![FsOp::CopyFile {
                from: physical.clone(),
                to: target.to_path_buf(),
                own: own_of(entry),
            }]
        });
    }
    let mut ops = Vec::new();
    for (path, e) in tree.subtree(&physical) {
        let relative = path.strip_prefix(&physical).ok()?;
        let to = target.join(relative);
        match &e.kind {
            EntryKind::Dir => ops.push(FsOp::CreateDir {
                path: to,
                own: own_of(e),
                update: true,
            }),
            EntryKind::File { .. } | EntryKind::HardLink { .. } => {
                ops.push(FsOp::CopyFile {
                    from: path.to_path_buf(),
                    to,
                    own: own_of(e),
                });
            }
            EntryKind::Symlink { target } => ops.push(FsOp::Symlink {
                path: to,
                target: target.clone(),
            }),
            kind => ops.push(FsOp::Node {
                path: to,
                kind: kind.clone(),
                own: own_of(e),
            }),
        }
    }
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Specifiers {
        Specifiers {
            hostname: "box".into(),
            ..Specifiers::default()
        }
    }

    fn parse(text: &str) -> Vec<TmpfilesEntry> {
        parse_tmpfiles(Path::new("usr/lib/tmpfiles.d/t.conf"), text, &specs()).unwrap()
    }

    fn tree() -> Tree {
        let mut t = Tree::new(0);
        for d in [
            "usr",
            "usr/share",
            "usr/share/factory",
            "usr/share/factory/etc",
            "var",
            "var/log",
            "etc",
        ] {
            t.add_dir(Path::new(d), Ownership::root(0o755), 0).unwrap();
        }
        t.add_file(
            Path::new("usr/share/factory/etc/issue"),
            3,
            Ownership::root(0o644),
            0,
        )
        .unwrap();
        t.add_file(Path::new("etc/existing"), 3, Ownership::root(0o600), 0)
            .unwrap();
        t
    }

    #[test]
    fn parses_columns_modifiers_and_specifiers() {
        let e = parse("d- %L/app 0750 www-data adm 10d\nf+! /etc/motd - - - - hello\\nworld\n");
        assert_eq!(e[0].kind, 'd');
        assert!(e[0].ignore_errors);
        assert_eq!(e[0].path.as_deref(), Some("/var/log/app"));
        assert_eq!(
            (e[0].mode, e[0].user.as_deref(), e[0].group.as_deref()),
            (Some(0o750), Some("www-data"), Some("adm"))
        );
        assert!(e[1].plus);
        assert_eq!(e[1].argument.as_deref(), Some("hello\\nworld"));
        let e = parse("d %h/x\nf /x :0600\nd /var/lib/%m\nL /run/%H - - - - %t/x\n");
        assert_eq!(e[0].path.as_deref(), Some("/root/x"));
        assert!(e[1].mode_on_create_only);
        assert!(e[2].unsupported.as_deref().unwrap().contains("%m"));
        assert_eq!(e[3].path.as_deref(), Some("/run/box"));
        assert_eq!(e[3].argument.as_deref(), Some("/run/x"));
    }

    #[test]
    fn parse_errors() {
        let p = |t: &str| parse_tmpfiles(Path::new("a.conf"), t, &specs());
        assert_eq!(
            p("y /x").unwrap_err().to_string(),
            "a.conf:1: unknown line type `y`"
        );
        assert!(p("d /x 99999").is_err());
        assert!(p("d").is_err());
        assert!(p("d? /x").is_err());
    }

    #[test]
    fn plans_creation_with_resolved_owners() {
        let accounts = Accounts::debian_base("/bin/sh");
        let entries = parse(concat!(
            "d /var/log/app 0750 www-data adm -\n",
            "f /etc/motd 0644 - - - hi\\n\n",
            "f /etc/existing 0640 - shadow\n",
            "L /etc/issue\n",
            "C /etc/issue2 - - - - /usr/share/factory/etc/issue\n",
            "Z /var/log 0755 root root\n",
            "d /run/app 0755 www-data www-data\n",
            "r /var/tmp/x\n",
            "d /var/log/nope 0755 nosuchuser -\n",
            "d /var/log/app 0700\n",
        ));
        let plan = plan_tmpfiles(&entries, &tree(), &accounts);
        let own = Ownership {
            mode: 0o750,
            uid: 33,
            gid: 4,
        };
        assert!(plan.ops.contains(&FsOp::CreateDir {
            path: "var/log/app".into(),
            own,
            update: true
        }));
        assert!(plan.ops.contains(&FsOp::WriteFile {
            path: "etc/motd".into(),
            contents: b"hi\n".to_vec(),
            own: Ownership::root(0o644)
        }));
        assert!(plan.ops.contains(&FsOp::SetMetadata {
            path: "etc/existing".into(),
            mode: Some(0o640),
            uid: None,
            gid: Some(42),
            recursive: false
        }));
        assert!(plan.ops.contains(&FsOp::Symlink {
            path: "etc/issue".into(),
            target: "/usr/share/factory/etc/issue".into()
        }));
        assert!(
            plan.ops
                .iter()
                .any(|o| matches!(o, FsOp::CopyFile { to, .. } if to == Path::new("etc/issue2")))
        );
        assert!(plan.ops.iter().any(|o| matches!(
            o,
            FsOp::SetMetadata {
                recursive: true,
                ..
            }
        )));
        assert_eq!(
            plan.runtime_dirs,
            vec![RuntimeDir {
                path: "/run/app".into(),
                mode: 0o755,
                uid: 33,
                gid: 33,
                kind: RuntimeKind::Directory,
            }]
        );
        // r, the unknown owner and the duplicate are noted.
        assert_eq!(plan.notes.len(), 3, "{:?}", plan.notes);
    }

    #[test]
    fn every_type_of_the_man_page() {
        let accounts = Accounts::debian_base("/bin/sh");
        let entries = parse(concat!(
            "D /var/lib/d 0700\n",
            "v /var/lib/v\n",
            "q /var/lib/q\n",
            "Q /var/lib/qq\n",
            "e /var/log 0700\n",
            "e /var/nothing 0700\n",
            "w /etc/existing - - - - on\n",
            "w /etc/missing - - - - on\n",
            "w+ /etc/existing - - - - more\n",
            "x /var/tmp/keep*\n",
            "X /var/tmp/keep\n",
            "f /run/app.pid 0644 www-data - -\n",
            "f /run/motd - - - - hi\\n\n",
            "L /run/link - - - - /etc/existing\n",
            "L+ /tmp/l2 - - - - %t/x\n",
            "e /run/app\n",
            "d /dev/shm/x\n",
            "w /proc/sys/net/ipv4/ip_forward - - - - 1\n",
            "a /var/log - - - - u:www-data:rwx\n",
            "h /var/log - - - - +i\n",
            "t /var/log - - - - user.x=y\n",
            "R /var/tmp/old\n",
        ));
        let plan = plan_tmpfiles(&entries, &tree(), &accounts);
        for dir in ["var/lib/d", "var/lib/v", "var/lib/q", "var/lib/qq"] {
            assert!(
                plan.ops
                    .iter()
                    .any(|o| matches!(o, FsOp::CreateDir { path, .. } if path == Path::new(dir))),
                "{dir}"
            );
        }
        assert!(plan.ops.contains(&FsOp::SetMetadata {
            path: "var/log".into(),
            mode: Some(0o700),
            uid: None,
            gid: None,
            recursive: false
        }));
        assert!(plan.ops.contains(&FsOp::WriteFile {
            path: "etc/existing".into(),
            contents: b"on".to_vec(),
            own: Ownership::root(0o600)
        }));
        let runtime: Vec<(&str, &RuntimeKind)> = plan
            .runtime_dirs
            .iter()
            .map(|d| (d.path.as_str(), &d.kind))
            .collect();
        assert_eq!(
            runtime,
            [
                ("/run/app.pid", &RuntimeKind::File(String::new())),
                ("/run/motd", &RuntimeKind::File("hi\n".into())),
                ("/run/link", &RuntimeKind::Symlink("/etc/existing".into())),
                ("/tmp/l2", &RuntimeKind::Symlink("/run/x".into())),
            ]
        );
        assert_eq!(plan.runtime_dirs[0].uid, 33);
        // Noted: `w` of a missing file, `w+`, /dev, /proc, a, h, t, R.
        assert_eq!(plan.notes.len(), 8, "{:#?}", plan.notes);
        assert!(
            !plan
                .notes
                .iter()
                .any(|n| n.contains("`x`") || n.contains("`X`")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn copy_of_a_directory_tree() {
        let accounts = Accounts::debian_base("/bin/sh");
        let entries = parse("C /etc/fac - - - - /usr/share/factory\nC /etc/none - - - - /nope\n");
        let plan = plan_tmpfiles(&entries, &tree(), &accounts);
        assert!(plan.ops.iter().any(
            |o| matches!(o, FsOp::CreateDir { path, .. } if path == Path::new("etc/fac/etc"))
        ));
        assert!(plan.ops.iter().any(
            |o| matches!(o, FsOp::CopyFile { to, .. } if to == Path::new("etc/fac/etc/issue"))
        ));
        assert_eq!(plan.notes.len(), 1);
    }

    #[test]
    fn devices_and_fifos_are_metadata_only() {
        let accounts = Accounts::debian_base("/bin/sh");
        let entries =
            parse("c /var/lib/null 0666 - - - 1:3\np /var/lib/fifo\nb /var/lib/bad - - - - x\n");
        let plan = plan_tmpfiles(&entries, &tree(), &accounts);
        assert!(plan.ops.iter().any(|o| matches!(
            o,
            FsOp::Node {
                kind: EntryKind::CharDevice { major: 1, minor: 3 },
                ..
            }
        )));
        assert!(plan.ops.iter().any(|o| matches!(
            o,
            FsOp::Node {
                kind: EntryKind::Fifo,
                ..
            }
        )));
        assert_eq!(plan.notes.len(), 1);
    }
}
