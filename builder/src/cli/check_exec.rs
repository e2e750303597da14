//! `jeos check` with an index: every `[[service]]` and `[[task]]` program must exist in the
//! image that the closure makes. The closure's `.deb`s (from the cache; `--online` also
//! downloads the missing ones) are unpacked into a temporary directory exactly as a build
//! does (merged `/usr`), and each `exec[0]` is looked up in that manifest, following
//! symlinks inside it, in the recipe's `[[file]]` paths and in the links that the
//! packages' `update-alternatives --install` calls create.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use package_resolver::cache::EntryKind as CacheKind;
use package_resolver::deb::{EntryKind, Manifest, UnpackDir, UnpackOptions};
use package_resolver::fetch::{self, FetchItem, FetchOptions};
use package_resolver::solver::{Resolution, ResolvedPackage};

use crate::recipe::{Recipe, RecipeError, RecipeErrorKind, raw};
use crate::resolve::{self, Archive, Repositories, ResolveOptions};
use crate::rootfs::alternatives;

/// Symlink hops followed before giving up (as the kernel's 40, but a program path needs few).
const MAX_HOPS: usize = 16;

/// What the executable check found: errors with spans, or why it could not run.
pub(super) enum ExecCheck {
    /// Every program was found (or none is named).
    Found,
    /// Programs no package of the closure (nor a `[[file]]`) provides.
    Missing(Vec<RecipeError>),
    /// Not checked (the `.deb`s are not in the cache, or could not be read): a warning
    /// saying why, on the first program.
    NotChecked(Vec<RecipeError>),
}

/// Checks every service's and task's program against the closure `resolution`.
pub(super) fn exec_problems(
    parsed: &Recipe,
    name: &str,
    text: &str,
    resolution: &Resolution,
    repos: &Repositories,
    options: &ResolveOptions,
) -> ExecCheck {
    let programs = programs(parsed);
    if programs.is_empty() {
        return ExecCheck::Found;
    }
    let not_checked = |why: String| {
        let first = programs.first().map(|(i, task, _)| (*i, *task, why));
        let mut warnings = spanned(name, text, first.as_slice(), |why| {
            RecipeErrorKind::ProgramsNotChecked { why: why.clone() }
        });
        for w in &mut warnings {
            w.warning = true;
        }
        ExecCheck::NotChecked(warnings)
    };
    let debs = match closure_debs(parsed, resolution, repos, options) {
        Ok(debs) => debs,
        Err(why) => return not_checked(why),
    };
    let tmp = match tempfile::tempdir() {
        Ok(tmp) => tmp,
        Err(e) => return not_checked(format!("no temporary directory: {e}")),
    };
    let (manifest, links) = match unpack_closure(tmp.path(), &debs) {
        Ok(found) => found,
        Err(why) => return not_checked(why),
    };
    let recipe_paths: Vec<&str> = parsed.files.iter().map(|f| f.path.as_str()).collect();
    let missing: Vec<(usize, bool, String)> = programs
        .into_iter()
        .filter(|(_, _, program)| {
            !provided_by_recipe(program, &recipe_paths)
                && !links.contains(program.as_str())
                && !in_manifest(&manifest, &links, program)
        })
        .collect();
    if missing.is_empty() {
        return ExecCheck::Found;
    }
    let kind = |program: &String| RecipeErrorKind::MissingProgram {
        program: program.clone(),
        what: "program",
    };
    ExecCheck::Missing(spanned(name, text, &missing, kind))
}

/// `(index, is_task, program)` of every service and task.
fn programs(parsed: &Recipe) -> Vec<(usize, bool, String)> {
    let services = parsed
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (i, false, &s.exec));
    let tasks = parsed
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (i, true, &t.exec));
    services
        .chain(tasks)
        .filter_map(|(i, task, exec)| exec.first().map(|p| (i, task, p.clone())))
        .filter(|(_, _, p)| p.starts_with('/'))
        .collect()
}

/// The cached `.deb` of every member of the closure; with `--online` the missing ones are
/// downloaded (and verified) first.
fn closure_debs(
    parsed: &Recipe,
    resolution: &Resolution,
    repos: &Repositories,
    options: &ResolveOptions,
) -> Result<Vec<PathBuf>, String> {
    let cache = resolve::open_cache(&options.cache_dir).map_err(|e| e.to_string())?;
    let suites = resolve::index_suites(&parsed.source);
    let per_suite = parsed.source.components.len().max(1);
    let archive_of = |p: &ResolvedPackage| {
        suites
            .get(p.source_index / per_suite)
            .map_or(Archive::Main, |(_, a)| *a)
    };
    let mut paths = Vec::new();
    for archive in [Archive::Main, Archive::Security] {
        let items: Vec<FetchItem> = (resolution.packages.iter())
            .filter(|p| archive_of(p) == archive)
            .map(|p| FetchItem {
                name: p.name.clone(),
                filename: p.filename.clone(),
                size: p.size,
                sha256: p.sha256.clone(),
            })
            .collect();
        if items.is_empty() {
            continue;
        }
        if options.offline {
            paths.extend(cached(&cache, &items)?);
            continue;
        }
        let fetch_options = FetchOptions {
            parallel: 4,
            offline: false,
        };
        let fetched = fetch::fetch_all(repos.get(archive), &cache, &items, fetch_options)
            .map_err(|e| e.to_string())?;
        paths.extend(fetched);
    }
    Ok(paths)
}

/// The cache paths of `items`; an error naming the first few that are not cached.
fn cached(
    cache: &package_resolver::cache::Cache,
    items: &[FetchItem],
) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    let mut absent = Vec::new();
    for item in items {
        match cache.get(CacheKind::Deb, &item.sha256, Some(item.size)) {
            Ok(Some(path)) => paths.push(path),
            _ => absent.push(item.name.as_str()),
        }
    }
    if absent.is_empty() {
        return Ok(paths);
    }
    let shown: Vec<&str> = absent.iter().copied().take(3).collect();
    Err(format!(
        "{} of the closure's packages are not in the cache ({}{}); `jeos check --online` downloads them",
        absent.len(),
        shown.join(", "),
        if absent.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    ))
}

/// Unpacks `debs` under `root` as a build does; the manifest and the alternatives links
/// their postinsts register.
fn unpack_closure(root: &Path, debs: &[PathBuf]) -> Result<(Manifest, BTreeSet<String>), String> {
    let dir = root.join("root");
    let mut staging = UnpackDir::new(&dir).map_err(|e| e.to_string())?;
    let options = UnpackOptions {
        merged_usr: true,
        ..UnpackOptions::default()
    };
    for deb in debs {
        staging
            .unpack_deb(deb, &options)
            .map_err(|e| format!("{}: {e}", deb.display()))?;
    }
    let postinsts: Vec<(String, String)> = (staging.packages().iter())
        .filter_map(|p| {
            p.scripts
                .get("postinst")
                .map(|s| (p.name.clone(), s.clone()))
        })
        .collect();
    let links = alternatives::scan_postinsts(&postinsts)
        .candidates
        .into_iter()
        .flat_map(|c| std::iter::once(c.link).chain(c.slaves.into_iter().map(|s| s.link)))
        .collect();
    Ok((staging.manifest().clone(), links))
}

/// A recipe `[[file]]` is the program, or a directory source above it.
fn provided_by_recipe(program: &str, recipe_paths: &[&str]) -> bool {
    recipe_paths.iter().any(|p| {
        program == *p
            || program
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The manifest path of an absolute guest path, with `/bin`, `/sbin` and `/lib*` under
/// `/usr` as the merged-`/usr` unpack stores them.
fn manifest_key(path: &str) -> String {
    let rel = path.trim_start_matches('/');
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        if rel == top || rel.starts_with(&format!("{top}/")) {
            return format!("usr/{rel}");
        }
    }
    rel.to_owned()
}

/// `program` is a regular file of the manifest, after following symlinks inside it.
fn in_manifest(manifest: &Manifest, links: &BTreeSet<String>, program: &str) -> bool {
    let mut path = program.to_owned();
    for _ in 0..MAX_HOPS {
        let key = manifest_key(&path);
        let Some(entry) = manifest.get(&key) else {
            return links.contains(&path);
        };
        match &entry.kind {
            EntryKind::File | EntryKind::HardLink { .. } => return true,
            EntryKind::Symlink { target } => path = link_target(&path, target),
            _ => return false,
        }
    }
    false
}

/// The absolute, normalised path a symlink at `link` pointing to `target` names.
fn link_target(link: &str, target: &str) -> String {
    let base = if target.starts_with('/') {
        String::new()
    } else {
        link.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned()
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in base.split('/').chain(target.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// One diagnostic per `(index, is_task, value)`, made by `kind` from the value, with the
/// span of that service's or task's `exec` array.
fn spanned(
    name: &str,
    text: &str,
    items: &[(usize, bool, String)],
    kind: impl Fn(&String) -> RecipeErrorKind,
) -> Vec<RecipeError> {
    let Ok(file) = toml::from_str::<raw::RecipeFile>(text) else {
        return Vec::new();
    };
    let shared: Arc<str> = Arc::from(text);
    items
        .iter()
        .filter_map(|(i, task, value)| {
            let span = if *task {
                file.task.get(*i).map(|t| t.get_ref().exec.span())
            } else {
                file.service.get(*i).map(|s| s.get_ref().exec.span())
            }?;
            let mut kind = kind(value);
            if let RecipeErrorKind::MissingProgram { what, .. } = &mut kind {
                *what = if *task { "task" } else { "service" };
            }
            Some(RecipeError::new(kind, span, name, &shared))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_are_normalised() {
        assert_eq!(
            link_target("/usr/bin/awk", "/etc/alternatives/awk"),
            "/etc/alternatives/awk"
        );
        assert_eq!(link_target("/usr/sbin/x", "../bin/y"), "/usr/bin/y");
        assert_eq!(link_target("/usr/bin/sh", "dash"), "/usr/bin/dash");
        assert_eq!(link_target("/a", "../../../etc"), "/etc");
    }

    #[test]
    fn merged_usr_keys() {
        assert_eq!(manifest_key("/bin/sh"), "usr/bin/sh");
        assert_eq!(manifest_key("/sbin/init"), "usr/sbin/init");
        assert_eq!(manifest_key("/lib64/ld.so"), "usr/lib64/ld.so");
        assert_eq!(manifest_key("/usr/sbin/nginx"), "usr/sbin/nginx");
        assert_eq!(manifest_key("/libexec/x"), "libexec/x");
    }

    #[test]
    fn recipe_files_and_directories_provide_programs() {
        assert!(provided_by_recipe("/opt/app/run", &["/opt/app"]));
        assert!(provided_by_recipe("/opt/app/run", &["/opt/app/run"]));
        assert!(!provided_by_recipe("/opt/application", &["/opt/app"]));
    }

    #[test]
    fn symlink_chains_and_loops() {
        use package_resolver::deb::ManifestEntry;
        let entry = |kind| ManifestEntry {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 0,
            size: 0,
            package: "p".into(),
        };
        let mut m = Manifest::new();
        m.insert("usr/bin/dash".into(), entry(EntryKind::File));
        m.insert(
            "usr/bin/sh".into(),
            entry(EntryKind::Symlink {
                target: "dash".into(),
            }),
        );
        m.insert(
            "usr/bin/loop".into(),
            entry(EntryKind::Symlink {
                target: "loop".into(),
            }),
        );
        m.insert(
            "usr/bin/awk".into(),
            entry(EntryKind::Symlink {
                target: "/etc/alternatives/awk".into(),
            }),
        );
        let links = BTreeSet::from(["/etc/alternatives/awk".to_owned()]);
        assert!(in_manifest(&m, &links, "/bin/sh"));
        assert!(in_manifest(&m, &links, "/usr/bin/awk"));
        assert!(!in_manifest(&m, &links, "/usr/bin/loop"));
        assert!(!in_manifest(&m, &links, "/usr/sbin/nginx"));
    }
}
