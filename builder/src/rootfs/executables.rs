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
    #[error("{kind} `{service}`: program `{path}` must be an absolute path")]
    NotAbsolute {
        /// Service name.
        service: String,
        /// Service or task.
        kind: UnitKind,
        /// The path.
        path: String,
    },
    /// The program (or a symlink on the way) is missing.
    #[error(
        "{kind} `{service}`: program `{path}` is not in the image{}",
        provider_hint(path)
    )]
    Missing {
        /// Service name.
        service: String,
        /// Service or task.
        kind: UnitKind,
        /// The path.
        path: String,
        /// The lookup failure.
        #[source]
        source: TreeError,
    },
    /// It resolves to something that is not a regular file.
    #[error(
        "{kind} `{service}`: program `{path}` resolves to `/{resolved}`, which is not a regular file"
    )]
    NotAFile {
        /// Service name.
        service: String,
        /// Service or task.
        kind: UnitKind,
        /// The path.
        path: String,
        /// Where it resolved.
        resolved: PathBuf,
    },
    /// It has no execute bit.
    #[error(
        "{kind} `{service}`: program `{path}` (`/{resolved}`, mode {mode:04o}) is not executable"
    )]
    NotExecutable {
        /// Service name.
        service: String,
        /// Service or task.
        kind: UnitKind,
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
    #[error("{kind} `{service}`: cannot read program `{path}`")]
    Read {
        /// Service name.
        service: String,
        /// Service or task.
        kind: UnitKind,
        /// The program.
        path: String,
        /// Why.
        #[source]
        source: Box<StagingError>,
    },
    /// The `#!` interpreter is not in the image or not executable.
    #[error(
        "{kind} `{service}`: program `{path}` needs interpreter `{interpreter}`, which is not in the image{}",
        provider_hint(interpreter)
    )]
    Missing {
        /// Service name.
        service: String,
        /// Service or task.
        kind: UnitKind,
        /// The program.
        path: String,
        /// The interpreter (or the program `env` would look for).
        interpreter: String,
    },
}

/// Packages that provide the interpreters and shells services and tasks most often need
/// (the closure leaves out Essential packages, so `/bin/sh` is not there by itself).
const PROVIDERS: &[(&str, &str)] = &[
    ("sh", "dash"),
    ("dash", "dash"),
    ("bash", "bash"),
    ("perl", "perl-base"),
    ("python3", "python3-minimal"),
    ("env", "coreutils"),
    ("awk", "mawk"),
    ("mawk", "mawk"),
    ("gawk", "gawk"),
    ("ruby", "ruby"),
    ("node", "nodejs"),
    ("nodejs", "nodejs"),
    ("php", "php-cli"),
    ("tclsh", "tcl"),
    ("lua5.4", "lua5.4"),
    ("busybox", "busybox"),
];

/// The Debian package that provides a standard interpreter, by program name.
pub fn provided_by(program: &str) -> Option<&'static str> {
    let name = program.rsplit('/').next()?;
    let standard = program == name
        || ["/bin/", "/usr/bin/", "/sbin/", "/usr/sbin/"]
            .iter()
            .any(|dir| program.strip_prefix(dir) == Some(name));
    PROVIDERS
        .iter()
        .find(|(p, _)| standard && *p == name)
        .map(|(_, package)| *package)
}

fn provider_hint(program: &str) -> String {
    provided_by(program).map_or_else(String::new, |package| {
        format!(" (Debian package `{package}` provides it: add it to `[packages] install`)")
    })
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
    for ServiceExec {
        service,
        path,
        kind,
    } in programs
    {
        let head =
            staging
                .read_head(Path::new(path), 256)
                .map_err(|source| InterpreterError::Read {
                    service: service.clone(),
                    kind: *kind,
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
            kind: *kind,
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

/// Whether a program belongs to a `[[service]]` or a `[[task]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnitKind {
    /// A service.
    #[default]
    Service,
    /// A task.
    Task,
}

impl std::fmt::Display for UnitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Service => "service",
            Self::Task => "task",
        })
    }
}

/// Largest configuration file scanned by [`config_program_warnings`].
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The interpreter a script's `#!` line names, if the file is a script.
fn shebang(staging: &Staging, path: &Path) -> Option<String> {
    let head = staging.read_head(path, 256).ok()?;
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    line.split_whitespace().next().map(str::to_owned)
}

/// Absolute paths named on the non-comment lines of a configuration file.
fn named_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        for word in line.split(|c: char| c.is_whitespace() || "\"'=,;()[]{}<>|`".contains(c)) {
            let word = word.trim_end_matches(':');
            if word.len() > 1
                && word.starts_with('/')
                && !word.contains(['*', '?', '$', '%'])
                && !word.ends_with('/')
            {
                out.push((index + 1, word.to_owned()));
            }
        }
    }
    out
}

fn in_program_dir(path: &str) -> bool {
    [
        "/bin/",
        "/sbin/",
        "/usr/bin/",
        "/usr/sbin/",
        "/usr/local/bin/",
        "/usr/local/sbin/",
    ]
    .iter()
    .any(|dir| {
        path.strip_prefix(dir)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    })
}

/// Configuration under `/etc` of tools an appliance never runs (package management,
/// account tools, other init systems, shells lists): not scanned.
const UNSCANNED_CONFIG: &[&str] = &[
    "etc/apt",
    "etc/dpkg",
    "etc/debconf.conf",
    "etc/default/useradd",
    "etc/adduser.conf",
    "etc/deluser.conf",
    "etc/login.defs",
    "etc/shells",
    "etc/logrotate.d",
    "etc/cron.d",
    "etc/cron.daily",
    "etc/cron.weekly",
    "etc/cron.monthly",
    "etc/cron.hourly",
    "etc/init.d",
    "etc/sv",
    "etc/runit",
    "etc/systemd",
    "etc/ufw",
    "etc/kernel",
    "etc/skel",
    "etc/profile.d",
    "etc/bash_completion.d",
];

/// Warnings for configuration files under `/etc` (not executable ones) that name programs the image cannot run:
/// a program in a `bin`/`sbin` directory that is missing, or an existing script whose
/// `#!` interpreter is missing (lighttpd's `include_shell` of a Perl script, say).
pub fn config_program_warnings(staging: &Staging) -> Vec<String> {
    let tree = staging.tree();
    let mut warnings = Vec::new();
    let configs: Vec<PathBuf> = tree
        .iter()
        .filter(|(path, entry)| {
            // Executables under /etc are init scripts, not configuration.
            path.starts_with("etc")
                && !UNSCANNED_CONFIG.iter().any(|dir| path.starts_with(dir))
                && entry.is_file()
                && entry.mode & 0o111 == 0
                && tree.file_size(path).is_some_and(|n| n <= MAX_CONFIG_BYTES)
        })
        .map(|(path, _)| path.clone())
        .collect();
    for config in configs {
        let Ok(bytes) = staging.read_file(&config) else {
            continue;
        };
        if bytes.contains(&0) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut seen = std::collections::BTreeSet::new();
        for (line, program) in named_paths(&text) {
            if !seen.insert(program.clone()) {
                continue;
            }
            let path = Path::new(&program);
            let where_ = format!("/{}:{line}", config.display());
            if is_executable_file(tree, path) {
                if let Some(interpreter) = shebang(staging, path)
                    && !is_executable_file(tree, Path::new(&interpreter))
                {
                    warnings.push(format!(
                        "{where_} runs `{program}`, whose interpreter `{interpreter}` is not in the image{}",
                        provider_hint(&interpreter)
                    ));
                }
            } else if in_program_dir(&program) && !tree.exists_following(path) {
                warnings.push(format!(
                    "{where_} names program `{program}`, which is not in the image{}",
                    provider_hint(&program)
                ));
            }
        }
    }
    warnings
}

/// One program to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceExec {
    /// Service or task name, for the message.
    pub service: String,
    /// Service or task.
    pub kind: UnitKind,
    /// Absolute program path (`exec[0]`).
    pub path: String,
}

/// Checks every program, following symlinks inside the image (e.g. an alternatives chain
/// `/usr/bin/awk -> /etc/alternatives/awk -> /usr/bin/mawk`). Returns the first failure.
pub fn check_executables(tree: &Tree, programs: &[ServiceExec]) -> Result<(), ExecutableError> {
    for ServiceExec {
        service,
        path,
        kind,
    } in programs
    {
        if !path.starts_with('/') {
            return Err(ExecutableError::NotAbsolute {
                service: service.clone(),
                kind: *kind,
                path: path.clone(),
            });
        }
        let (resolved, entry) =
            tree.lookup(Path::new(path))
                .map_err(|source| ExecutableError::Missing {
                    service: service.clone(),
                    kind: *kind,
                    path: path.clone(),
                    source,
                })?;
        let mode = match &entry.kind {
            EntryKind::File { .. } | EntryKind::HardLink { .. } => entry.mode,
            _ => {
                return Err(ExecutableError::NotAFile {
                    service: service.clone(),
                    kind: *kind,
                    path: path.clone(),
                    resolved,
                });
            }
        };
        if mode & 0o111 == 0 {
            return Err(ExecutableError::NotExecutable {
                service: service.clone(),
                kind: *kind,
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
                kind: UnitKind::Service,
                path: path.into(),
            }],
        )
    }

    #[test]
    fn config_files_naming_missing_programs_warn() {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str, mode: u32| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            let mut perms = std::fs::metadata(&path).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, mode);
            std::fs::set_permissions(&path, perms).unwrap();
        };
        w(
            "usr/share/lighttpd/create-mime.conf.pl",
            "#!/usr/bin/perl -w\n",
            0o755,
        );
        w("usr/bin/dash", "\x7fELF", 0o755);
        w("usr/share/ok.sh", "#!/usr/bin/dash\n", 0o755);
        w(
            "etc/lighttpd/lighttpd.conf",
            concat!(
                "server.document-root = \"/var/www/html\"\n",
                "# include_shell \"/usr/bin/commented-out\"\n",
                "include_shell \"/usr/share/lighttpd/create-mime.conf.pl\"\n",
                "include_shell \"/usr/share/ok.sh\"\n",
                "cgi.assign = ( \".py\" => \"/usr/bin/python3\" )\n",
            ),
            0o644,
        );
        w("etc/shells", "/bin/sh\n/usr/bin/bash\n", 0o644);
        w(
            "etc/apt/apt.conf.d/70debconf",
            "Pre-Invoke {\"/usr/sbin/dpkg-preconfigure\";};\n",
            0o644,
        );
        let staging = Staging::scan(dir.path(), 0).unwrap();
        let warnings = config_program_warnings(&staging);
        assert_eq!(
            warnings,
            [
                "/etc/lighttpd/lighttpd.conf:3 runs `/usr/share/lighttpd/create-mime.conf.pl`, whose interpreter `/usr/bin/perl` is not in the image (Debian package `perl-base` provides it: add it to `[packages] install`)",
                "/etc/lighttpd/lighttpd.conf:5 names program `/usr/bin/python3`, which is not in the image (Debian package `python3-minimal` provides it: add it to `[packages] install`)",
            ]
        );
    }

    #[test]
    fn missing_shells_name_their_package() {
        let err = check("/bin/sh").unwrap_err();
        assert_eq!(
            err.to_string(),
            "service `svc`: program `/bin/sh` is not in the image (Debian package `dash` provides it: add it to `[packages] install`)"
        );
        assert_eq!(provided_by("/usr/bin/perl"), Some("perl-base"));
        assert_eq!(provided_by("python3"), Some("python3-minimal"));
        assert_eq!(provided_by("/opt/x/bin/sh"), None);
        assert_eq!(provided_by("/usr/bin/nginx"), None);
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
                    kind: UnitKind::Task,
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
            "task `s`: program `/usr/bin/py` needs interpreter `/usr/bin/python3`, which is not in the image (Debian package `python3-minimal` provides it: add it to `[packages] install`)"
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
