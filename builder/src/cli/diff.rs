//! `jeos diff IMAGE_A IMAGE_B`: packages added, removed, upgraded and downgraded (from each
//! image's dpkg database), and files added, removed and changed (kind, content, mode, owner,
//! symlink target; times with `--times`). The two images may be of different formats.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use image_writer::image::rootfs::{FsEntry, FsKind, RootFs, RootFsError};
use package_resolver::version::Version;
use serde::Serialize;

use super::image::{open, root_fs_error};
use super::inspect::{InstalledPackage, packages};
use super::{ExitStatus, Session};

/// `jeos diff`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  jeos diff old/nginx-1.0.0/nginx-1.0.0.qcow2 dist/nginx-1.0.0/nginx-1.0.0.qcow2\n  jeos diff --exit-code a.raw b.ova && echo identical"
)]
pub struct DiffArgs {
    /// The old image (`.raw`, `.qcow2`, `.vmdk` or `.ova`).
    #[arg(value_name = "IMAGE_A")]
    pub a: PathBuf,
    /// The new image.
    #[arg(value_name = "IMAGE_B")]
    pub b: PathBuf,
    /// Also report files whose modification time differs.
    #[arg(long)]
    pub times: bool,
    /// Exit with 1 when the images differ (like `diff`), 0 when they do not.
    #[arg(long)]
    pub exit_code: bool,
}

/// A package present in both images with different versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct VersionChange {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// How the package sets differ.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub(super) struct PackageDiff {
    pub added: Vec<InstalledPackage>,
    pub removed: Vec<InstalledPackage>,
    pub upgraded: Vec<VersionChange>,
    pub downgraded: Vec<VersionChange>,
}

impl PackageDiff {
    fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.upgraded.is_empty()
            && self.downgraded.is_empty()
    }
}

/// One file difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct FileChange {
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// For `changed`: `kind`, `content`, `size`, `mode`, `owner`, `target`, `mtime`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<&'static str>,
}

/// Compares two package lists (pure); versions ordered by Debian's rules.
pub(super) fn diff_packages(a: &[InstalledPackage], b: &[InstalledPackage]) -> PackageDiff {
    let old: BTreeMap<&str, &InstalledPackage> = a.iter().map(|p| (p.name.as_str(), p)).collect();
    let new: BTreeMap<&str, &InstalledPackage> = b.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut diff = PackageDiff::default();
    for (name, p) in &old {
        match new.get(name) {
            None => diff.removed.push((*p).clone()),
            Some(q) if q.version != p.version => {
                let change = VersionChange {
                    name: (*name).to_owned(),
                    from: p.version.clone(),
                    to: q.version.clone(),
                };
                let newer = match (Version::parse(&p.version), Version::parse(&q.version)) {
                    (Ok(x), Ok(y)) => y > x,
                    _ => q.version > p.version,
                };
                if newer {
                    diff.upgraded.push(change);
                } else {
                    diff.downgraded.push(change);
                }
            }
            Some(_) => {}
        }
    }
    diff.added = new
        .iter()
        .filter(|(name, _)| !old.contains_key(*name))
        .map(|(_, p)| (*p).clone())
        .collect();
    diff
}

/// Compares two walks (pure apart from `same_content`, asked for regular files of equal
/// size in both).
pub(super) fn diff_entries(
    a: &[FsEntry],
    b: &[FsEntry],
    times: bool,
    mut same_content: impl FnMut(&str) -> Result<bool, RootFsError>,
) -> Result<Vec<FileChange>, RootFsError> {
    let old: BTreeMap<&str, &FsEntry> = a.iter().map(|e| (e.path.as_str(), e)).collect();
    let new: BTreeMap<&str, &FsEntry> = b.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut paths: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    let mut changes = Vec::new();
    for path in paths {
        let change = |change, what| FileChange {
            path: path.to_owned(),
            change,
            what,
        };
        match (old.get(path), new.get(path)) {
            (Some(_), None) => changes.push(change("removed", Vec::new())),
            (None, Some(_)) => changes.push(change("added", Vec::new())),
            (Some(x), Some(y)) => {
                let mut what = Vec::new();
                if x.kind != y.kind {
                    what.push("kind");
                } else if x.kind == FsKind::File {
                    if x.size != y.size {
                        what.push("size");
                        what.push("content");
                    } else if !same_content(path)? {
                        what.push("content");
                    }
                }
                if x.mode != y.mode {
                    what.push("mode");
                }
                if (x.uid, x.gid) != (y.uid, y.gid) {
                    what.push("owner");
                }
                if x.target != y.target {
                    what.push("target");
                }
                if times && x.mtime != y.mtime {
                    what.push("mtime");
                }
                if !what.is_empty() {
                    changes.push(change("changed", what));
                }
            }
            (None, None) => unreachable!("path came from one of the maps"),
        }
    }
    Ok(changes)
}

fn walk(image: &std::path::Path, root: &RootFs) -> miette::Result<Vec<FsEntry>> {
    Ok(root.walk().map_err(|e| root_fs_error(image, e))?)
}

fn render(packages: &PackageDiff, files: &[FileChange]) -> Vec<String> {
    let mut out = Vec::new();
    if packages.is_empty() && files.is_empty() {
        out.push("No differences".to_owned());
        return out;
    }
    out.push(format!(
        "Packages: {} added, {} removed, {} upgraded, {} downgraded",
        packages.added.len(),
        packages.removed.len(),
        packages.upgraded.len(),
        packages.downgraded.len()
    ));
    out.extend(
        packages
            .added
            .iter()
            .map(|p| format!("  + {} {}", p.name, p.version)),
    );
    out.extend(
        packages
            .removed
            .iter()
            .map(|p| format!("  - {} {}", p.name, p.version)),
    );
    for c in packages.upgraded.iter().chain(&packages.downgraded) {
        out.push(format!("  ~ {} {} -> {}", c.name, c.from, c.to));
    }
    let count = |kind| files.iter().filter(|f| f.change == kind).count();
    out.push(format!(
        "Files: {} added, {} removed, {} changed",
        count("added"),
        count("removed"),
        count("changed")
    ));
    for f in files {
        let sign = match f.change {
            "added" => "+",
            "removed" => "-",
            _ => "M",
        };
        let what = if f.what.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.what.join(", "))
        };
        out.push(format!("  {sign} {}{what}", f.path));
    }
    out
}

pub(super) fn diff(args: &DiffArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let a = open(&args.a)?;
    let b = open(&args.b)?;
    let packages = diff_packages(
        &packages(&a.root).unwrap_or_default(),
        &packages(&b.root).unwrap_or_default(),
    );
    let files = diff_entries(
        &walk(&args.a, &a.root)?,
        &walk(&args.b, &b.root)?,
        args.times,
        |path| {
            let x = a.root.read(path)?;
            let y = b.root.read(path)?;
            Ok(x == y)
        },
    )
    .map_err(|e| root_fs_error(&args.a, e))?;
    let differ = !packages.is_empty() || !files.is_empty();
    if session.global.json {
        let value = serde_json::json!({
            "a": args.a,
            "b": args.b,
            "identical": !differ,
            "packages": packages,
            "files": files,
        });
        session.printer.stdout_line(&value.to_string());
    } else {
        for line in render(&packages, &files) {
            session.printer.stdout_line(&line);
        }
    }
    Ok(if differ && args.exit_code {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str) -> InstalledPackage {
        InstalledPackage {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
        }
    }

    fn file(path: &str, size: u64, mode: u32) -> FsEntry {
        FsEntry {
            path: path.into(),
            kind: FsKind::File,
            mode,
            uid: 0,
            gid: 0,
            size,
            mtime: 1,
            target: None,
        }
    }

    #[test]
    fn package_changes_use_debian_version_order() {
        let a = [
            pkg("nginx", "1.26.3-2"),
            pkg("old", "1"),
            pkg("libc6", "2.41-10"),
        ];
        let b = [
            pkg("nginx", "1.26.3-10"),
            pkg("new", "2"),
            pkg("libc6", "2.41-9"),
        ];
        let d = diff_packages(&a, &b);
        assert_eq!(d.added, [pkg("new", "2")]);
        assert_eq!(d.removed, [pkg("old", "1")]);
        assert_eq!(d.upgraded.len(), 1);
        assert_eq!(d.upgraded[0].to, "1.26.3-10");
        assert_eq!(d.downgraded[0].name, "libc6");
        assert!(diff_packages(&a, &a).is_empty());
    }

    #[test]
    fn file_changes() {
        let a = [
            file("/a", 3, 0o644),
            file("/b", 3, 0o644),
            file("/c", 3, 0o644),
            file("/gone", 1, 0o644),
        ];
        let mut b = vec![
            file("/a", 3, 0o644),
            file("/b", 4, 0o644),
            file("/c", 3, 0o600),
            file("/new", 1, 0o644),
        ];
        b[0].mtime = 9;
        let changes = diff_entries(&a, &b, false, |p| Ok(p != "/c")).unwrap();
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.path.as_str(), c.change, c.what.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("/b", "changed", vec!["size", "content"]),
                ("/c", "changed", vec!["content", "mode"]),
                ("/gone", "removed", vec![]),
                ("/new", "added", vec![]),
            ]
        );
        let with_times = diff_entries(&a, &b, true, |_| Ok(true)).unwrap();
        assert!(
            with_times
                .iter()
                .any(|c| c.path == "/a" && c.what == ["mtime"])
        );
    }
}
