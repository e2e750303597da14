//! The recipe's `[[file]]` entries: inline content, a source file or directory (path
//! resolved by the caller; a directory is copied recursively with the host's modes and the
//! recipe's owner), a handlebars template (strict mode, rendered from a JSON value), a
//! directory or a symlink, with mode and owner names resolved through the generated account
//! database. [`package_overwrites`] names the package files the recipe replaces.
//!
//! Paths must be absolute and plain (no `..`); the parent is resolved inside the image, so
//! a symlinked parent pointing "outside" still lands inside the root (chroot semantics).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use thiserror::Error;

use super::accounts::Accounts;
use super::staging::FsOp;
use super::tree::{Ownership, normalize};

/// Errors from planning recipe files.
#[derive(Debug, Error)]
pub enum FilesError {
    /// The destination is not an absolute plain path.
    #[error("file path `{path}` must be absolute and must not contain `..`")]
    InvalidPath {
        /// The path.
        path: String,
    },
    /// The owner is not in `/etc/passwd`.
    #[error("unknown owner `{owner}` for `{path}`")]
    UnknownOwner {
        /// The file.
        path: String,
        /// The owner.
        owner: String,
    },
    /// The group is not in `/etc/group`.
    #[error("unknown group `{group}` for `{path}`")]
    UnknownGroup {
        /// The file.
        path: String,
        /// The group.
        group: String,
    },
    /// The mode has bits beyond `0o7777`.
    #[error("invalid mode {mode:#o} for `{path}`")]
    InvalidMode {
        /// The file.
        path: String,
        /// The mode.
        mode: u32,
    },
    /// Reading a source file failed.
    #[error("cannot read source `{source_path}` for `{path}`")]
    Source {
        /// The file.
        path: String,
        /// The source on the host.
        source_path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A source directory holds something that is not a file, directory or symlink.
    #[error("source `{source_path}` for `{path}` holds `{}`, which is not a file, directory or symlink", .entry.display())]
    SpecialFile {
        /// The file.
        path: String,
        /// The source directory on the host.
        source_path: PathBuf,
        /// The offending entry.
        entry: PathBuf,
    },
    /// A template failed to render (unknown variable in strict mode, syntax error).
    #[error("cannot render the template for `{path}`")]
    Template {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Box<handlebars::RenderError>,
    },
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum FileContent {
    /// Literal bytes.
    Inline(Vec<u8>),
    /// A host file (already resolved relative to the recipe by the caller).
    Source(PathBuf),
    /// A handlebars template and the context to render it with.
    Template {
        /// Template text.
        template: String,
        /// Its data.
        context: serde_json::Value,
    },
    /// A directory.
    Directory,
    /// A symlink to the given target.
    Symlink(String),
}

/// One recipe file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileConfig {
    /// Absolute destination path.
    pub path: String,
    /// Content.
    pub content: FileContent,
    /// Mode; default 0644 (files) or 0755 (directories).
    pub mode: Option<u32>,
    /// Owner name or uid; default root.
    pub owner: Option<String>,
    /// Group name or gid; default the owner's primary group, else root.
    pub group: Option<String>,
}

/// Plans the recipe's files, in order (later entries win).
pub fn plan_files(files: &[FileConfig], accounts: &Accounts) -> Result<Vec<FsOp>, FilesError> {
    let mut ops = Vec::new();
    for file in files {
        let path = &file.path;
        let relative = match normalize(Path::new(path)) {
            Ok(p) if path.starts_with('/') && !p.as_os_str().is_empty() => p,
            _ => return Err(FilesError::InvalidPath { path: path.clone() }),
        };
        let uid = match &file.owner {
            None => 0,
            Some(owner) => accounts
                .resolve_uid(owner)
                .ok_or_else(|| FilesError::UnknownOwner {
                    path: path.clone(),
                    owner: owner.clone(),
                })?,
        };
        let gid = match &file.group {
            Some(group) => accounts
                .resolve_gid(group)
                .ok_or_else(|| FilesError::UnknownGroup {
                    path: path.clone(),
                    group: group.clone(),
                })?,
            None => accounts
                .users()
                .iter()
                .find(|u| u.uid == uid)
                .map_or(0, |u| u.gid),
        };
        let is_dir = matches!(file.content, FileContent::Directory);
        let mode = file.mode.unwrap_or(if is_dir { 0o755 } else { 0o644 });
        if mode > 0o7777 {
            return Err(FilesError::InvalidMode {
                path: path.clone(),
                mode,
            });
        }
        let own = Ownership { mode, uid, gid };
        let parent = relative.parent().map(Path::to_path_buf).unwrap_or_default();
        let parent_op = FsOp::CreateDir {
            path: parent,
            own: Ownership::root(0o755),
            update: false,
        };
        let contents = match &file.content {
            FileContent::Directory => {
                ops.push(FsOp::CreateDir {
                    path: relative,
                    own,
                    update: true,
                });
                continue;
            }
            FileContent::Symlink(target) => {
                ops.push(parent_op);
                ops.push(FsOp::Symlink {
                    path: relative,
                    target: PathBuf::from(target),
                });
                continue;
            }
            FileContent::Source(source) if source.is_dir() => {
                ops.push(parent_op);
                plan_tree(path, source, &relative, own, &mut ops)?;
                continue;
            }
            FileContent::Inline(bytes) => bytes.clone(),
            FileContent::Source(source) => fs::read(source).map_err(|e| FilesError::Source {
                path: path.clone(),
                source_path: source.clone(),
                source: e,
            })?,
            FileContent::Template { template, context } => {
                render_template(path, template, context)?.into_bytes()
            }
        };
        ops.push(parent_op);
        ops.push(FsOp::WriteFile {
            path: relative,
            contents,
            own,
        });
    }
    Ok(ops)
}

/// Copies the host directory `source` to `dest` (recursively, sorted, symlinks not
/// followed): permission bits from the host, owner and group from the recipe.
fn plan_tree(
    path: &str,
    source: &Path,
    dest: &Path,
    own: Ownership,
    ops: &mut Vec<FsOp>,
) -> Result<(), FilesError> {
    let err = |e, at: &Path| FilesError::Source {
        path: path.to_owned(),
        source_path: at.to_owned(),
        source: e,
    };
    let host_mode = |meta: &fs::Metadata| {
        use std::os::unix::fs::PermissionsExt as _;
        meta.permissions().mode() & 0o7777
    };
    let top = fs::metadata(source).map_err(|e| err(e, source))?;
    ops.push(FsOp::CreateDir {
        path: dest.to_owned(),
        own: Ownership {
            mode: host_mode(&top),
            ..own
        },
        update: true,
    });
    let mut stack = vec![(source.to_owned(), dest.to_owned())];
    while let Some((dir, inside)) = stack.pop() {
        let mut entries = fs::read_dir(&dir)
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| err(e, &dir))?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let host = entry.path();
            let target = inside.join(entry.file_name());
            let meta = fs::symlink_metadata(&host).map_err(|e| err(e, &host))?;
            let mode = host_mode(&meta);
            if meta.is_dir() {
                ops.push(FsOp::CreateDir {
                    path: target.clone(),
                    own: Ownership { mode, ..own },
                    update: true,
                });
                stack.push((host, target));
            } else if meta.is_file() {
                ops.push(FsOp::WriteFile {
                    path: target,
                    contents: fs::read(&host).map_err(|e| err(e, &host))?,
                    own: Ownership { mode, ..own },
                });
            } else if meta.file_type().is_symlink() {
                ops.push(FsOp::Symlink {
                    path: target,
                    target: fs::read_link(&host).map_err(|e| err(e, &host))?,
                });
            } else {
                return Err(FilesError::SpecialFile {
                    path: path.to_owned(),
                    source_path: source.to_owned(),
                    entry: host,
                });
            }
        }
    }
    Ok(())
}

/// Paths (relative to the root) that planned ops write as files or symlinks.
pub fn written_paths(ops: &[FsOp]) -> Vec<PathBuf> {
    ops.iter()
        .filter_map(|op| match op {
            FsOp::WriteFile { path, .. } | FsOp::Symlink { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// The package files among `paths` (relative, as [`written_paths`] gives them): what a
/// recipe's files replace, as `/path (package)`, sorted and without duplicates.
pub fn package_overwrites(
    paths: &[PathBuf],
    manifest: &package_resolver::deb::Manifest,
) -> Vec<String> {
    let mut out: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            let key = p.to_str()?;
            let entry = manifest.get(key)?;
            (!matches!(entry.kind, package_resolver::deb::EntryKind::Dir))
                .then(|| format!("/{key} ({})", entry.package))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Renders a template in strict mode without HTML escaping (these are config files).
pub fn render_template(
    path: &str,
    template: &str,
    context: &serde_json::Value,
) -> Result<String, FilesError> {
    let mut handlebars = Handlebars::new();
    handlebars.set_strict_mode(true);
    handlebars.register_escape_fn(handlebars::no_escape);
    handlebars
        .render_template(template, context)
        .map_err(|source| FilesError::Template {
            path: path.to_owned(),
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: FileContent) -> FileConfig {
        FileConfig {
            path: path.into(),
            content,
            mode: None,
            owner: None,
            group: None,
        }
    }

    #[test]
    fn inline_template_dir_symlink_and_owners() {
        let accounts = Accounts::debian_base("/bin/sh");
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("index.html");
        fs::write(&src, b"<h1>hi</h1>").unwrap();
        let mut owned = file("/var/www/html/index.html", FileContent::Source(src));
        owned.owner = Some("www-data".into());
        owned.mode = Some(0o640);
        let files = vec![
            file("/etc/motd", FileContent::Inline(b"hello\n".to_vec())),
            owned,
            file(
                "/etc/app.conf",
                FileContent::Template {
                    template: "port={{port}} <{{name}}>".into(),
                    context: serde_json::json!({"port": 80, "name": "a&b"}),
                },
            ),
            file("/srv/data", FileContent::Directory),
            file("/etc/link", FileContent::Symlink("/etc/motd".into())),
        ];
        let ops = plan_files(&files, &accounts).unwrap();
        assert!(ops.contains(&FsOp::WriteFile {
            path: "etc/motd".into(),
            contents: b"hello\n".to_vec(),
            own: Ownership::root(0o644)
        }));
        assert!(ops.contains(&FsOp::WriteFile {
            path: "var/www/html/index.html".into(),
            contents: b"<h1>hi</h1>".to_vec(),
            own: Ownership {
                mode: 0o640,
                uid: 33,
                gid: 33
            }
        }));
        assert!(ops.contains(&FsOp::WriteFile {
            path: "etc/app.conf".into(),
            contents: b"port=80 <a&b>".to_vec(),
            own: Ownership::root(0o644)
        }));
        assert!(ops.contains(&FsOp::CreateDir {
            path: "srv/data".into(),
            own: Ownership::root(0o755),
            update: true
        }));
        assert!(ops.contains(&FsOp::Symlink {
            path: "etc/link".into(),
            target: "/etc/motd".into()
        }));
    }

    #[test]
    fn source_directory_is_copied_with_host_modes_and_recipe_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let accounts = Accounts::debian_base("/bin/sh");
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        fs::create_dir_all(site.join("css")).unwrap();
        fs::write(site.join("index.html"), b"<h1>site</h1>").unwrap();
        fs::write(site.join("css/a.css"), b"body{}").unwrap();
        fs::write(site.join("run.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(site.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::set_permissions(&site, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("index.html", site.join("home.html")).unwrap();
        let mut entry = file("/var/www/html", FileContent::Source(site.clone()));
        entry.owner = Some("www-data".into());
        let ops = plan_files(&[entry], &accounts).unwrap();
        let www = |mode| Ownership {
            mode,
            uid: 33,
            gid: 33,
        };
        assert!(ops.contains(&FsOp::CreateDir {
            path: "var/www/html".into(),
            own: www(0o755),
            update: true
        }));
        assert!(ops.contains(&FsOp::CreateDir {
            path: "var/www/html/css".into(),
            own: www(0o755),
            update: true
        }));
        assert!(ops.contains(&FsOp::WriteFile {
            path: "var/www/html/css/a.css".into(),
            contents: b"body{}".to_vec(),
            own: www(0o644)
        }));
        assert!(ops.contains(&FsOp::WriteFile {
            path: "var/www/html/run.sh".into(),
            contents: b"#!/bin/sh\n".to_vec(),
            own: www(0o750)
        }));
        assert!(ops.contains(&FsOp::Symlink {
            path: "var/www/html/home.html".into(),
            target: "index.html".into()
        }));
        let written = written_paths(&ops);
        assert_eq!(written.len(), 4, "{written:?}");
    }

    #[test]
    fn source_directory_with_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        fs::create_dir(&site).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            site.join("pipe").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from(0o644),
            0,
        )
        .unwrap();
        let err = plan_files(
            &[file("/srv", FileContent::Source(site))],
            &Accounts::debian_base("/bin/sh"),
        )
        .unwrap_err();
        assert!(matches!(err, FilesError::SpecialFile { .. }), "{err:?}");
    }

    #[test]
    fn overwritten_package_files_are_named() {
        use package_resolver::deb::{EntryKind, ManifestEntry};
        let entry = |kind, package: &str| ManifestEntry {
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
            mtime: 0,
            size: 1,
            package: package.into(),
        };
        let mut manifest = package_resolver::deb::Manifest::new();
        manifest.insert(
            "var/www/html/index.nginx-debian.html".into(),
            entry(EntryKind::File, "nginx"),
        );
        manifest.insert("var/www/html".into(), entry(EntryKind::Dir, "nginx"));
        let paths = [
            PathBuf::from("var/www/html/index.nginx-debian.html"),
            PathBuf::from("var/www/html"),
            PathBuf::from("var/www/html/new.html"),
        ];
        assert_eq!(
            package_overwrites(&paths, &manifest),
            ["/var/www/html/index.nginx-debian.html (nginx)"]
        );
    }

    #[test]
    fn errors() {
        let accounts = Accounts::debian_base("/bin/sh");
        let plan = |f: FileConfig| plan_files(&[f], &accounts);
        assert!(matches!(
            plan(file("etc/x", FileContent::Directory)),
            Err(FilesError::InvalidPath { .. })
        ));
        assert!(matches!(
            plan(file("/etc/../x", FileContent::Directory)),
            Err(FilesError::InvalidPath { .. })
        ));
        assert!(matches!(
            plan(file("/", FileContent::Directory)),
            Err(FilesError::InvalidPath { .. })
        ));
        let mut f = file("/x", FileContent::Directory);
        f.owner = Some("nosuch".into());
        assert!(matches!(plan(f), Err(FilesError::UnknownOwner { .. })));
        let mut f = file("/x", FileContent::Directory);
        f.group = Some("nosuch".into());
        assert!(matches!(plan(f), Err(FilesError::UnknownGroup { .. })));
        let mut f = file("/x", FileContent::Directory);
        f.mode = Some(0o10000);
        assert!(matches!(plan(f), Err(FilesError::InvalidMode { .. })));
        let t = FileContent::Template {
            template: "{{missing}}".into(),
            context: serde_json::json!({}),
        };
        assert!(matches!(
            plan(file("/x", t)),
            Err(FilesError::Template { .. })
        ));
        assert!(matches!(
            plan(file("/x", FileContent::Source("/nonexistent/jeos".into()))),
            Err(FilesError::Source { .. })
        ));
    }
}
