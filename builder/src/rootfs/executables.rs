//! Checking that each service's program is in the image and executable, before the image
//! is written: a typo in `exec` should fail the build, not the boot.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::staging::{Staging, StagingError};
use super::tree::{EntryKind, Tree, TreeError};

/// Errors from the executable check.
#[derive(Debug, Error)]
pub enum ExecutableError {
    /// The program path is not absolute (guest-init does no `PATH` search).
    #[error("service `{service}`: program `{path}` must be an absolute path")]
    NotAbsolute {
        /// Service name.
        service: String,
        /// The path.
        path: String,
    },
    /// The program (or a symlink on the way) is missing.
    #[error("service `{service}`: program `{path}` is not in the image")]
    Missing {
        /// Service name.
        service: String,
        /// The path.
        path: String,
        /// The lookup failure.
        #[source]
        source: TreeError,
    },
    /// It resolves to something that is not a regular file.
    #[error(
        "service `{service}`: program `{path}` resolves to `/{resolved}`, which is not a regular file"
    )]
    NotAFile {
        /// Service name.
        service: String,
        /// The path.
        path: String,
        /// Where it resolved.
        resolved: PathBuf,
    },
    /// It has no execute bit.
    #[error(
        "service `{service}`: program `{path}` (`/{resolved}`, mode {mode:04o}) is not executable"
    )]
    NotExecutable {
        /// Service name.
        service: String,
        /// The path.
        path: String,
        /// Where it resolved.
        resolved: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

/// Errors from the interpreter check.
#[derive(Debug, Error)]
pub enum InterpreterError {
    /// Reading the script failed.
    #[error("service `{service}`: cannot read program `{path}`")]
    Read {
        /// Service name.
        service: String,
        /// The program.
        path: String,
        /// Why.
        #[source]
        source: Box<StagingError>,
    },
    /// The `#!` interpreter is not in the image or not executable.
    #[error(
        "service `{service}`: program `{path}` needs interpreter `{interpreter}`, which is not in the image"
    )]
    Missing {
        /// Service name.
        service: String,
        /// The program.
        path: String,
        /// The interpreter (or the program `env` would look for).
        interpreter: String,
    },
}

/// Directories `/usr/bin/env` searches in an appliance (guest-init's default `PATH`).
pub const ENV_PATH: &[&str] = &["usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin"];

fn is_executable_file(tree: &Tree, path: &Path) -> bool {
    tree.lookup(path)
        .is_ok_and(|(_, e)| e.is_file() && e.mode & 0o111 != 0)
}

/// For programs that are scripts, checks that the `#!` interpreter exists and is executable
/// (and, for `#!/usr/bin/env prog`, that `prog` is on [`ENV_PATH`]). Binaries pass.
/// Run after [`check_executables`].
pub fn check_interpreters(
    staging: &Staging,
    programs: &[ServiceExec],
) -> Result<(), InterpreterError> {
    for ServiceExec { service, path } in programs {
        let head =
            staging
                .read_head(Path::new(path), 256)
                .map_err(|source| InterpreterError::Read {
                    service: service.clone(),
                    path: path.clone(),
                    source: Box::new(source),
                })?;
        let Some(rest) = head.strip_prefix(b"#!") else {
            continue;
        };
        let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let Some(interpreter) = words.next() else {
            continue;
        };
        let missing = |interpreter: &str| InterpreterError::Missing {
            service: service.clone(),
            path: path.clone(),
            interpreter: interpreter.to_owned(),
        };
        if !is_executable_file(staging.tree(), Path::new(interpreter)) {
            return Err(missing(interpreter));
        }
        if Path::new(interpreter)
            .file_name()
            .is_some_and(|n| n == "env")
            && let Some(program) = words.find(|w| !w.starts_with('-') && !w.contains('='))
        {
            let found = if program.starts_with('/') {
                is_executable_file(staging.tree(), Path::new(program))
            } else {
                ENV_PATH
                    .iter()
                    .any(|dir| is_executable_file(staging.tree(), &Path::new(dir).join(program)))
            };
            if !found {
                return Err(missing(program));
            }
        }
    }
    Ok(())
}

/// One program to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceExec {
    /// Service name, for the message.
    pub service: String,
    /// Absolute program path (`exec[0]`).
    pub path: String,
}

/// Checks every program, following symlinks inside the image (e.g. an alternatives chain
/// `/usr/bin/awk -> /etc/alternatives/awk -> /usr/bin/mawk`). Returns the first failure.
pub fn check_executables(tree: &Tree, programs: &[ServiceExec]) -> Result<(), ExecutableError> {
    for ServiceExec { service, path } in programs {
        if !path.starts_with('/') {
            return Err(ExecutableError::NotAbsolute {
                service: service.clone(),
                path: path.clone(),
            });
        }
        let (resolved, entry) =
            tree.lookup(Path::new(path))
                .map_err(|source| ExecutableError::Missing {
                    service: service.clone(),
                    path: path.clone(),
                    source,
                })?;
        let mode = match &entry.kind {
            EntryKind::File { .. } | EntryKind::Hardlink { .. } => entry.mode,
            _ => {
                return Err(ExecutableError::NotAFile {
                    service: service.clone(),
                    path: path.clone(),
                    resolved,
                });
            }
        };
        if mode & 0o111 == 0 {
            return Err(ExecutableError::NotExecutable {
                service: service.clone(),
                path: path.clone(),
                resolved,
                mode,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::Ownership;

    fn tree() -> Tree {
        let mut t = Tree::new(0);
        for d in ["usr", "usr/bin", "usr/sbin", "etc", "etc/alternatives"] {
            t.add_dir(Path::new(d), Ownership::root(0o755), 0).unwrap();
        }
        t.add_symlink(Path::new("bin"), Path::new("usr/bin"), 0, 0, 0)
            .unwrap();
        t.add_file(Path::new("usr/sbin/nginx"), 1, Ownership::root(0o755), 0)
            .unwrap();
        t.add_file(
            Path::new("usr/bin/redis-check-rdb"),
            1,
            Ownership::root(0o755),
            0,
        )
        .unwrap();
        t.add_symlink(
            Path::new("usr/bin/redis-server"),
            Path::new("redis-check-rdb"),
            0,
            0,
            0,
        )
        .unwrap();
        t.add_file(Path::new("usr/bin/mawk"), 1, Ownership::root(0o755), 0)
            .unwrap();
        t.add_symlink(
            Path::new("etc/alternatives/awk"),
            Path::new("/usr/bin/mawk"),
            0,
            0,
            0,
        )
        .unwrap();
        t.add_symlink(
            Path::new("usr/bin/awk"),
            Path::new("/etc/alternatives/awk"),
            0,
            0,
            0,
        )
        .unwrap();
        t.add_file(Path::new("usr/bin/data"), 1, Ownership::root(0o644), 0)
            .unwrap();
        t.add_symlink(Path::new("usr/bin/dangling"), Path::new("nowhere"), 0, 0, 0)
            .unwrap();
        t
    }

    fn check(path: &str) -> Result<(), ExecutableError> {
        check_executables(
            &tree(),
            &[ServiceExec {
                service: "svc".into(),
                path: path.into(),
            }],
        )
    }

    #[test]
    fn accepts_files_and_symlink_chains() {
        for ok in ["/usr/sbin/nginx", "/usr/bin/redis-server", "/bin/awk"] {
            check(ok).unwrap();
        }
    }

    #[test]
    fn rejects_with_service_and_path() {
        let err = check("/usr/sbin/nginz").unwrap_err();
        assert_eq!(
            err.to_string(),
            "service `svc`: program `/usr/sbin/nginz` is not in the image"
        );
        assert!(matches!(
            check("/usr/bin/dangling"),
            Err(ExecutableError::Missing { .. })
        ));
        assert!(matches!(
            check("/usr/bin"),
            Err(ExecutableError::NotAFile { .. })
        ));
        assert!(matches!(
            check("/usr/bin/data"),
            Err(ExecutableError::NotExecutable { mode: 0o644, .. })
        ));
        assert!(matches!(
            check("nginx"),
            Err(ExecutableError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn script_interpreters_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            let mut perms = std::fs::metadata(&path).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            std::fs::set_permissions(&path, perms).unwrap();
        };
        w("usr/bin/dash", "\x7fELF");
        w("usr/bin/env", "\x7fELF");
        w("usr/bin/ok.sh", "#!/usr/bin/dash -e\necho\n");
        w("usr/bin/env-ok", "#!/usr/bin/env dash\n");
        w("usr/bin/py", "#!/usr/bin/python3\n");
        w("usr/bin/env-py", "#!/usr/bin/env -S python3 -u\n");
        let staging = Staging::scan(dir.path(), 0).unwrap();
        let run = |path: &str| {
            check_interpreters(
                &staging,
                &[ServiceExec {
                    service: "s".into(),
                    path: path.into(),
                }],
            )
        };
        run("/usr/bin/ok.sh").unwrap();
        run("/usr/bin/env-ok").unwrap();
        run("/usr/bin/dash").unwrap();
        let err = run("/usr/bin/py").unwrap_err();
        assert_eq!(
            err.to_string(),
            "service `s`: program `/usr/bin/py` needs interpreter `/usr/bin/python3`, which is not in the image"
        );
        assert!(
            matches!(run("/usr/bin/env-py"), Err(InterpreterError::Missing { interpreter, .. }) if interpreter == "python3")
        );
        assert!(matches!(
            run("/usr/bin/none"),
            Err(InterpreterError::Read { .. })
        ));
    }
}
