//! The recipe's `[[file]]` entries: inline content, a source file (path resolved by the
//! caller), a handlebars template (strict mode, rendered from a JSON value), a directory or
//! a symlink, with mode and owner names resolved through the generated account database.
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
