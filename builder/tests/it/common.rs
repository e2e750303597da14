//! Shared helpers: `TestDir` for inline fixtures, and `jeos_snapshot!`, which runs the real
//! binary and snapshots its exit code, stdout and stderr; the prerequisite rule (a loud skip,
//! a failure under `CI=true`), OVMF's files, free ports and QEMU's accelerator for the tests
//! that boot images themselves.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary directory holding fixtures written inline by the test.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("jeos-test-")
                .tempdir()
                .expect("create a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` to `name` (parents created) and returns the full path.
    pub fn create(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent directory");
        }
        std::fs::write(&path, content).expect("write fixture");
        path
    }

    /// `jeos ARGS...` running inside this directory with a stable environment.
    pub fn jeos(&self) -> Command {
        let mut cmd = jeos();
        cmd.current_dir(self.path());
        cmd
    }

    /// Filters that hide this directory's absolute path.
    pub fn filters(&self) -> Vec<(String, String)> {
        let path = self.path().display().to_string();
        let mut filters = vec![(regex_escape(&path), "[TEMP]".to_owned())];
        if let Ok(canonical) = self.path().canonicalize() {
            filters.push((
                regex_escape(&canonical.display().to_string()),
                "[TEMP]".to_owned(),
            ));
        }
        filters
    }
}

/// `jeos` with no colours, a fixed width and no inherited terminal settings.
pub fn jeos() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jeos"));
    cmd.env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("FORCE_COLOR")
        .env_remove("RUST_BACKTRACE");
    cmd
}

/// The repository's `recipes/` directory.
pub fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes")
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Runs `cmd`, returns a snapshot text (exit code, stdout, stderr) and the raw output.
pub fn run_and_format(cmd: &mut Command) -> (String, std::process::Output) {
    let output = cmd.output().expect("run jeos");
    let code = output
        .status
        .code()
        .map_or_else(|| "signal".to_owned(), |c| c.to_string());
    let text = format!(
        "success: {}\nexit_code: {code}\n----- stdout -----\n{}\n----- stderr -----\n{}\n",
        output.status.success(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    (text, output)
}

/// `jeos_snapshot!(name, filters, command)`: file snapshot of exit code, stdout, stderr.
macro_rules! jeos_snapshot {
    ($name:expr, $filters:expr, $cmd:expr) => {{
        let (snapshot, output) = $crate::common::run_and_format($cmd);
        let mut settings = insta::Settings::clone_current();
        settings.set_prepend_module_to_snapshot(false);
        for (pattern, replacement) in $filters {
            settings.add_filter(&pattern, replacement);
        }
        settings.bind(|| insta::assert_snapshot!($name, snapshot));
        output
    }};
}

/// Whether the tests run under CI (`CI=true`), where a skip is not a pass.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `ok`; or, when a prerequisite is missing: a failure under `CI=true`, elsewhere a loud
/// `SKIPPED: why` and `false`.
pub fn prerequisite(ok: bool, why: &str) -> bool {
    if !ok {
        assert!(!in_ci(), "prerequisite missing under CI=true: {why}");
        eprintln!("SKIPPED: {why}");
    }
    ok
}

/// OVMF's code and variable files (Debian's `ovmf`), 4 MiB build first.
pub const OVMF_CODE: [&str; 2] = [
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_CODE.fd",
];
/// See [`OVMF_CODE`].
pub const OVMF_VARS: [&str; 2] = [
    "/usr/share/OVMF/OVMF_VARS_4M.fd",
    "/usr/share/OVMF/OVMF_VARS.fd",
];

/// The first of `candidates` that is a file.
pub fn first_file(candidates: &[&'static str]) -> Option<&'static str> {
    candidates.iter().copied().find(|p| Path::new(p).is_file())
}

/// A 127.0.0.1 port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// QEMU's `-accel`: `kvm` where this host's KVM can run Linux, else `tcg`.
pub fn qemu_accel() -> &'static str {
    if test_vm::host::check_host().can_boot_linux() {
        "kvm"
    } else {
        "tcg"
    }
}
