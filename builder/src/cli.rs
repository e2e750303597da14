//! The `jeos` command line: clap types and one function per subcommand.
//!
//! Adding a subcommand is a variant of [`Command`] with its `*Args` struct and a
//! `fn name(args, &mut Session) -> miette::Result<ExitStatus>` dispatched in [`run`].
//! Commands never print directly: they go through [`Printer`] and [`Ui`] (progress/).

use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use miette::Diagnostic;

use crate::progress::{Printer, Ui, UiMode};
use crate::recipe::{self, AppName, Recipe, RecipeLoadError};
use crate::resolve::{LockMode, ResolveOptions};

mod audit;
mod build;
mod build_details;
mod cache;
mod check;
mod check_exec;
mod diff;
mod docs;
mod image;
mod inspect;
mod resolve;
mod run;
mod run_embedded;
mod test;
mod test_counts;
mod test_target;

pub use resolve::why_from_lock;
pub use run_embedded::press_power_button;

const EXIT_CODES: &str = "\
Examples:
  jeos new web && jeos check web.toml
  jeos build recipes/nginx.toml && jeos test dist/nginx-1.0.0
  jeos help build

Exit status:
  0    success
  1    what was checked failed: `jeos check` found problems in a recipe, `jeos test`
       found a failing appliance check (or the appliance never became ready), or
       `jeos resolve --why PACKAGE` found PACKAGE outside the closure
  2    usage error, unreadable recipe, environment error or internal error
  3    `jeos audit` listed the appliance's packages but could not compare them with
       the suites now (no network and no cached index)
  130  interrupted (Ctrl-C or SIGTERM); a build removes its work directory first

Environment:
  NO_COLOR                        disable colours (same as `--color never`)
  COLUMNS                         width used to wrap diagnostics and summaries
  SOURCE_DATE_EPOCH               timestamp for reproducible images
  http_proxy, https_proxy, no_proxy
                                  HTTP proxies for the Debian mirror (e.g. apt-cacher-ng)

Reference: `jeos schema --format markdown` (docs/recipe.md); `jeos man --dir DIR`.";

const NEW_HELP: &str = "\
Examples:
  jeos new web                 # writes web.toml and jeos.schema.json (for editors)
  jeos new cache --dir appliances";

const CHECK_HELP: &str = "\
Examples:
  jeos check recipes/*.toml    # every problem of every file, with line and column
  jeos check --json web.toml   # diagnostics as one JSON object on stdout

Exit status: 0 no problems, 1 problems found, 2 a recipe could not be read.";

const CACHE_HELP: &str = "\
Examples:
  jeos cache                     # sizes and last use per kind (every entry with -v)
  jeos cache verify              # re-hash every package and index; exit 1 if one was corrupt
  jeos cache prune --older-than 14d
  jeos --cache-dir /srv/jeos cache clean";

const CLEAN_HELP: &str = "\
Examples:
  jeos clean                     # appliance directories under dist/
  jeos clean out other-dist";

const SCHEMA_HELP: &str = "\
Examples:
  jeos schema > jeos.schema.json     # then `#:schema ./jeos.schema.json` atop a recipe
  jeos schema --format markdown -o docs/recipe.md";

const COMPLETIONS_HELP: &str = "\
Examples:
  jeos completions bash > ~/.local/share/bash-completion/completions/jeos
  jeos completions zsh > ~/.zfunc/_jeos
  jeos completions fish > ~/.config/fish/completions/jeos.fish";

const MAN_HELP: &str = "\
Examples:
  jeos man | man -l -
  jeos man --dir target/man   # jeos.1 and jeos-COMMAND.1 for every command";

const RESOLVE_HELP: &str = "\
Examples:
  jeos resolve recipes/nginx.toml            # writes recipes/nginx.lock
  jeos resolve --why libssl3t64 recipes/nginx.toml
  jeos resolve --update recipes/nginx.toml   # newest versions, new lock file

Exit status: 0 resolved, 1 `--why PACKAGE` is not in the closure, 2 error.";

const BUILD_HELP: &str = "\
Examples:
  jeos build recipes/nginx.toml              # dist/nginx-1.0.0/
  jeos build --locked -o out recipes/nginx.toml
  SOURCE_DATE_EPOCH=1700000000 jeos build recipes/nginx.toml

Exit status: 0 built, 2 error, 130 interrupted (nothing partial is left behind).";

const TEST_HELP: &str = "\
Examples:
  jeos test dist/nginx-1.0.0
  jeos test recipes/nginx.toml               # builds first when needed
  jeos test dist/                            # every appliance in it
  jeos test nginx-1.0.0.qcow2                # also .raw, .vmdk and .ova

Exit status: 0 every check passed, 1 a check failed, 2 error.";

const AUDIT_HELP: &str = "\
Examples:
  jeos audit recipes/nginx.toml            # the lock beside the recipe against the suites now
  jeos audit dist/nginx-1.0.0/nginx-1.0.0.raw --json
  jeos audit --offline dist/nginx-1.0.0/nginx-1.0.0.ova   # cached index only

An image (`.raw`, `.qcow2`, `.vmdk`, `.ova` or the build directory) carries its own package
manifest, so the contents are always listed from the image file alone; comparing them needs
the suites' current index (fetched, or cached with `--offline`).

Exit status:
  0  up to date (no pending updates, or none from -security)
  1  security updates pending
  2  error (unreadable target, bad lock file, usage)
  3  not compared: the packages are listed, but the current index could not be had
     (no network and nothing cached)";

const RUN_HELP: &str = "\
Examples:
  jeos run dist/nginx-1.0.0 --forward 127.0.0.1:8080:80   # Ctrl-A X quits
  jeos run dist/nginx-1.0.0 --vmm qemu --firmware efi";

/// Turn a short TOML recipe into a small bootable Debian appliance.
#[derive(Debug, Parser)]
#[command(
    name = "jeos",
    version,
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// Options shared by every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Print more: step details, and the full cause chain of errors.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output: JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// When to use colours.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    /// Cache for package indices and .debs [default: $XDG_CACHE_HOME/jeos].
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use only the cache; never touch the network.
    #[arg(long, global = true)]
    pub offline: bool,
    /// Debian mirror URL, overriding the recipe and the host's apt sources.
    #[arg(long, global = true, value_name = "URL")]
    pub mirror: Option<String>,
    /// Accept a release older than the newest one already seen for the same suite
    /// (normally refused as a rollback).
    #[arg(long, global = true)]
    pub allow_downgrade: bool,
}

/// `--color`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colours when writing to a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Resolves `auto` against the environment.
    pub fn enabled(self, is_terminal: bool, no_color_env: bool) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => is_terminal && !no_color_env,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented starter recipe.
    #[command(after_help = NEW_HELP)]
    New(NewArgs),
    /// Validate recipes and report every problem found.
    #[command(after_help = CHECK_HELP)]
    Check(check::CheckArgs),
    /// Resolve the minimal package closure and write the lock file.
    #[command(after_help = RESOLVE_HELP)]
    Resolve(resolve::ResolveArgs),
    /// Build the appliance's disk image (and the formats the recipe lists).
    #[command(after_help = BUILD_HELP)]
    Build(build::BuildArgs),
    /// Boot a built image, run the recipe's checks inside it and report the results.
    #[command(after_help = TEST_HELP)]
    Test(test::TestArgs),
    /// Boot a built image interactively (embedded KVM runner or QEMU, console on the tty)
    #[command(after_help = RUN_HELP)]
    Run(run::RunArgs),
    /// List an appliance's pending updates; exit 1 when a security update is pending.
    #[command(after_help = AUDIT_HELP)]
    Audit(audit::AuditArgs),
    /// Show what an image holds: packages, services, kernel, sizes, SBOM (no root needed).
    Inspect(inspect::InspectArgs),
    /// List a directory inside an image (`.raw`, `.qcow2`, `.vmdk`, `.ova`).
    Ls(image::LsArgs),
    /// Print files from inside an image.
    Cat(image::CatArgs),
    /// Compare two images: packages and files added, removed and changed.
    Diff(diff::DiffArgs),
    /// Show, verify, prune or empty the package cache.
    #[command(after_help = CACHE_HELP)]
    Cache(cache::CacheArgs),
    /// Remove appliance directories `jeos build` wrote (default: under `dist/`).
    #[command(after_help = CLEAN_HELP)]
    Clean(cache::CleanArgs),
    /// Print the recipe's JSON Schema (draft 2020-12) or its Markdown reference.
    #[command(after_help = SCHEMA_HELP)]
    Schema(docs::SchemaArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write one per command.
    #[command(after_help = MAN_HELP)]
    Man(docs::ManArgs),
}

/// `jeos new`
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Appliance name: lowercase letters, digits and `-`; the recipe is `NAME.toml`.
    pub name: String,
    /// Directory to write the recipe in (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Starter to write: `full` documents every key; `web` (nginx), `database`
    /// (PostgreSQL, initdb on first boot), `ssh` (OpenSSH, host keys on first boot) and
    /// `minimal` are short working appliances.
    #[arg(long, value_enum, value_name = "TEMPLATE", default_value = "full")]
    pub template: recipe::StarterTemplate,
}

/// How a command ended, mapped to the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0
    Success,
    /// 1: the command ran, and what it checked failed.
    Failure,
    /// 2: usage, recipe or environment error.
    Error,
    /// 3: `jeos audit` read the appliance's packages but could not compare them with the
    /// suites now (no network, nothing cached).
    NotCompared,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Error => 2,
            Self::NotCompared => 3,
        }
    }
}

/// What every command gets: the parsed global options and the output channels.
#[derive(Debug)]
pub struct Session {
    /// Global options.
    pub global: GlobalArgs,
    /// Results and diagnostics.
    pub printer: Printer,
    /// Progress (steps, downloads, warnings).
    pub ui: std::sync::Arc<Ui>,
}

impl Session {
    /// Chooses colours and the progress renderer from the options and the environment.
    pub fn from_env(global: GlobalArgs) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let stderr_tty = io::stderr().is_terminal();
        let color = global.color.enabled(stderr_tty, no_color);
        let mode = UiMode::detect(global.json, global.verbose, stderr_tty);
        Self {
            printer: Printer::stdio(color),
            ui: std::sync::Arc::new(Ui::new(mode, global.quiet, color)),
            global,
        }
    }
}

/// Runs one parsed command line.
pub fn run(command: Command, session: &mut Session) -> miette::Result<ExitStatus> {
    let status = match command {
        Command::New(args) => new(&args, session),
        Command::Check(args) => check::check(&args, session),
        Command::Resolve(args) => resolve::resolve(&args, session),
        Command::Build(args) => build::build(&args, session),
        Command::Test(args) => test::test(&args, session),
        Command::Run(args) => run::run(&args, session),
        Command::Audit(args) => audit::audit(&args, session),
        Command::Inspect(args) => inspect::inspect(&args, session),
        Command::Ls(args) => image::ls(&args, session),
        Command::Cat(args) => image::cat(&args, session),
        Command::Diff(args) => diff::diff(&args, session),
        Command::Cache(args) => cache::cache(&args, session),
        Command::Clean(args) => cache::clean(&args, session),
        Command::Schema(args) => docs::schema(&args, session),
        Command::Completions(args) => docs::completions(&args, session),
        Command::Man(args) => docs::man(&args, session),
    };
    session.ui.finish();
    status
}

/// The final JSON object of a failed command under `--json`: the message, the chain of
/// causes and the hint, as `{"event": "error", ...}`.
pub fn error_json(error: &dyn Diagnostic) -> serde_json::Value {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    serde_json::json!({
        "event": "error",
        "message": error.to_string(),
        "causes": causes,
        "help": error.help().map(|h| h.to_string()),
        "exit_code": ExitStatus::Error.code(),
    })
}

/// Why `jeos new` failed.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum NewError {
    /// The name is not a valid appliance name.
    #[error("invalid appliance name `{name}`: {reason}")]
    #[diagnostic(help(
        "use lowercase letters, digits and `-`, starting with a letter or digit (at most 63 characters), e.g. `web-server`"
    ))]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The recipe file exists already.
    #[error("`{}` already exists", .path.display())]
    #[diagnostic(help("choose another name or `--dir`, or remove the file first"))]
    AlreadyExists {
        /// The recipe path.
        path: PathBuf,
    },
    /// The directory could not be created.
    #[error("cannot create directory `{}`", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The recipe could not be written.
    #[error("cannot write `{}`", .path.display())]
    Write {
        /// The recipe path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn new(args: &NewArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let name = AppName::new(&args.name).map_err(|reason| NewError::InvalidName {
        name: args.name.clone(),
        reason,
    })?;
    fs::create_dir_all(&args.dir).map_err(|source| NewError::CreateDir {
        path: args.dir.clone(),
        source,
    })?;
    let file_name = format!("{name}.toml");
    let path = if args.dir == Path::new(".") {
        PathBuf::from(file_name)
    } else {
        args.dir.join(file_name)
    };
    let text = recipe::starter(&name, args.template);
    write_new_file(&path, &text).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            NewError::AlreadyExists { path: path.clone() }
        } else {
            NewError::Write {
                path: path.clone(),
                source,
            }
        }
    })?;
    // The schema the starter's `#:schema` line names; generated, so refreshed every time.
    let schema_path = path.with_file_name(SCHEMA_FILE);
    write_generated(&schema_path, &recipe::schema::recipe_schema_text()).map_err(|source| {
        NewError::Write {
            path: schema_path.clone(),
            source,
        }
    })?;
    if session.global.json {
        let value = serde_json::json!({
            "created": path.display().to_string(),
            "schema": schema_path.display().to_string(),
            "name": name.as_str(),
        });
        session.printer.stdout_line(&value.to_string());
    } else if !session.global.quiet {
        session
            .printer
            .stderr_line(&format!("Created `{}`", path.display()));
        session.printer.hint(&format!(
            "edit it, then run `jeos check {}`",
            path.display()
        ));
    }
    Ok(ExitStatus::Success)
}

/// File name of the JSON Schema `jeos new` writes beside a starter recipe.
const SCHEMA_FILE: &str = "jeos.schema.json";

/// Writes a generated file atomically (temporary file, then rename).
fn write_generated(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp~");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn write_new_file(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn colour_choice() {
        assert!(ColorChoice::Auto.enabled(true, false));
        assert!(!ColorChoice::Auto.enabled(true, true));
        assert!(!ColorChoice::Auto.enabled(false, false));
        assert!(ColorChoice::Always.enabled(false, true));
        assert!(!ColorChoice::Never.enabled(true, false));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ExitStatus::Success.code(), 0);
        assert_eq!(ExitStatus::Failure.code(), 1);
        assert_eq!(ExitStatus::Error.code(), 2);
    }
}

/// Loads a recipe; on failure renders every diagnostic and returns `None` (exit 2).
fn load_recipe_or_report(path: &Path, session: &mut Session) -> Option<Recipe> {
    match recipe::load(path) {
        Ok(recipe) => Some(recipe),
        Err(RecipeLoadError::Invalid(errors)) => {
            if session.global.json {
                let file = path.display().to_string();
                let diagnostics: Vec<serde_json::Value> = errors
                    .errors
                    .iter()
                    .map(|e| check::diagnostic_json(&file, e))
                    .collect();
                let value = serde_json::json!({
                    "event": "error",
                    "message": errors.to_string(),
                    "diagnostics": diagnostics,
                    "exit_code": ExitStatus::Error.code(),
                });
                session.printer.stdout_line(&value.to_string());
            }
            for error in &errors.errors {
                session.printer.diagnostic(error);
                session.printer.stderr_line("");
            }
            session.printer.stderr_line(&format!(
                "error: `{}` has {}; `jeos check` lists them too",
                path.display(),
                plural(errors.errors.len(), "problem")
            ));
            None
        }
        Err(err @ RecipeLoadError::Io { .. }) => {
            if session.global.json {
                session.printer.stdout_line(&error_json(&err).to_string());
            }
            let text = session.printer.render_diagnostic(&err);
            session.printer.stderr_line(text.trim_end());
            None
        }
    }
}

/// Why the environment is unusable.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum EnvironmentError {
    /// No cache directory could be determined.
    #[error("cannot determine the cache directory")]
    #[diagnostic(help("set `XDG_CACHE_HOME` or `HOME`, or pass `--cache-dir DIR`"))]
    NoCacheDir {
        /// Cause.
        #[source]
        source: package_resolver::cache::CacheError,
    },
}

/// Resolver options from the global flags.
fn resolve_options(session: &Session, lock_mode: LockMode) -> miette::Result<ResolveOptions> {
    let cache_dir = match &session.global.cache_dir {
        Some(dir) => dir.clone(),
        None => package_resolver::cache::Cache::default_dir()
            .map_err(|source| EnvironmentError::NoCacheDir { source })?,
    };
    Ok(ResolveOptions {
        mirror_override: session.global.mirror.clone(),
        cache_dir,
        offline: session.global.offline,
        allow_downgrade: session.global.allow_downgrade,
        lock_mode,
        apt_root: PathBuf::from("/"),
    })
}
