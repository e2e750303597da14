//! `jeos check`: a linter. Every syntax, unknown-key, type and semantic problem of every
//! recipe at once, each with its span, plus warnings (checks on ports that no service's
//! readiness probe names). With the suite's index it also resolves the packages, and with
//! their `.deb`s it finds every service and task program in the closure (`check_exec`).

use std::path::{Path, PathBuf};

use clap::Args;

use package_resolver::solver::SolveError;

use super::check_exec::{self, ExecCheck};
use super::{ExitStatus, Session, plural};
use crate::recipe::{self, Recipe, RecipeError, RecipeErrorKind, RecipeErrors, raw};
use crate::resolve::{self, LockMode, ResolveOptions};

/// `jeos check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Recipe files to validate.
    #[arg(required = true, value_name = "RECIPE")]
    pub recipes: Vec<PathBuf>,
    /// Also resolve the packages when the suite's index is not cached (fetches it), and
    /// download the closure's packages that are not cached, to find every service and task
    /// program in them. With a cached index (and packages) this happens anyway.
    #[arg(long)]
    pub online: bool,
}

/// What checking one recipe found.
enum Outcome {
    /// Valid, possibly with warnings.
    Valid(Vec<RecipeError>),
    /// Problems (errors, then any warnings are not computed).
    Invalid(RecipeErrors),
    /// The file could not be read.
    Unreadable(std::io::Error),
}

fn check_one(path: &Path, options: Option<&ResolveOptions>) -> Outcome {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => return Outcome::Unreadable(error),
    };
    let name = path.display().to_string();
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match recipe::parse_str(&name, &text, Some(base)) {
        Ok(parsed) => {
            let (notes, problems): (Vec<_>, Vec<_>) = options
                .map(|o| package_problems(&parsed, &name, &text, o))
                .unwrap_or_default()
                .into_iter()
                .partition(|p| p.warning);
            if problems.is_empty() {
                let mut warnings = recipe::warnings(&name, &text);
                warnings.extend(notes);
                Outcome::Valid(warnings)
            } else {
                Outcome::Invalid(RecipeErrors {
                    name,
                    errors: problems,
                })
            }
        }
        Err(errors) => Outcome::Invalid(errors),
    }
}

/// Resolves the recipe's packages against the suite's index (cached, or fetched with
/// `--online`): unknown packages and unsatisfiable requests, with the span of the
/// `install` entry. Nothing when no index is available.
fn package_problems(
    parsed: &Recipe,
    name: &str,
    text: &str,
    options: &ResolveOptions,
) -> Vec<RecipeError> {
    let reporter = std::sync::Arc::new(package_resolver::reporter::NoReporter);
    let Ok(repos) = resolve::open_repositories(&parsed.source, options, reporter) else {
        return Vec::new();
    };
    let Ok((index, _, _)) =
        resolve::load_index(&parsed.source, &repos, std::time::SystemTime::now())
    else {
        return Vec::new();
    };
    let error = match package_resolver::solver::solve(&index, &resolve::solve_request(parsed)) {
        Ok(resolution) => {
            return match check_exec::exec_problems(parsed, name, text, &resolution, &repos, options)
            {
                ExecCheck::Missing(errors) => errors,
                // Without `--online` the programs are looked up only when the packages are
                // cached (after a build); said only when asked to go online.
                ExecCheck::NotChecked(warnings) if !options.offline => warnings,
                ExecCheck::NotChecked(_) | ExecCheck::Found => Vec::new(),
            };
        }
        Err(error) => error,
    };
    let Ok(file) = toml::from_str::<raw::RecipeFile>(text) else {
        return Vec::new();
    };
    let install = &file.packages.get_ref().install;
    let shared: std::sync::Arc<str> = std::sync::Arc::from(text);
    let (kind, span) = match error {
        SolveError::UnknownPackage {
            name: package,
            suggestions,
        } => {
            let entry = install.get_ref().iter().find(|entry| {
                entry
                    .get_ref()
                    .split([' ', '('])
                    .next()
                    .is_some_and(|n| n == package)
            });
            let span = entry.map_or_else(|| install.span(), raw::Spanned::span);
            let kind = RecipeErrorKind::UnknownPackage {
                name: package,
                suite: parsed.source.suite.clone(),
                suggestions,
            };
            (kind, span)
        }
        other => (
            RecipeErrorKind::Unresolvable {
                message: other.to_string(),
            },
            install.span(),
        ),
    };
    vec![RecipeError::new(kind, span, name, &shared)]
}

/// Counts for the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    total: usize,
    invalid: usize,
    unreadable: usize,
    problems: usize,
    warnings: usize,
}

/// `jeos check`
pub fn check(args: &CheckArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let mut tally = Tally {
        total: args.recipes.len(),
        ..Tally::default()
    };
    let mut options = super::resolve_options(session, LockMode::Use).ok();
    if let Some(options) = &mut options {
        options.offline = session.global.offline || !args.online;
    }
    let reports: Vec<(&PathBuf, Outcome)> = args
        .recipes
        .iter()
        .map(|path| (path, check_one(path, options.as_ref())))
        .collect();
    for (_, outcome) in &reports {
        match outcome {
            Outcome::Valid(warnings) => tally.warnings += warnings.len(),
            Outcome::Invalid(errors) => {
                tally.invalid += 1;
                tally.problems += errors.errors.len();
            }
            Outcome::Unreadable(_) => tally.unreadable += 1,
        }
    }
    if session.global.json {
        let files: Vec<serde_json::Value> = reports
            .iter()
            .map(|(path, outcome)| check_json(path, outcome))
            .collect();
        let value = serde_json::json!({
            "recipes": files,
            "summary": {
                "checked": tally.total,
                "invalid": tally.invalid,
                "unreadable": tally.unreadable,
                "problems": tally.problems,
                "warnings": tally.warnings,
            },
        });
        session.printer.stdout_line(&value.to_string());
    } else {
        for (path, outcome) in &reports {
            print_outcome(path, outcome, session);
        }
        if !(session.global.quiet && tally.invalid + tally.unreadable + tally.warnings == 0) {
            session.printer.stderr_line(&check_summary(tally));
        }
    }
    Ok(if tally.unreadable > 0 {
        ExitStatus::Error
    } else if tally.invalid > 0 {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

fn print_outcome(path: &Path, outcome: &Outcome, session: &mut Session) {
    match outcome {
        Outcome::Valid(warnings) => {
            for warning in warnings {
                session.printer.diagnostic(warning);
                session.printer.stderr_line("");
            }
            if !session.global.quiet {
                let ok = session.printer.paint("32", "ok");
                session
                    .printer
                    .stderr_line(&format!("{ok}: {}", path.display()));
            }
        }
        Outcome::Invalid(errors) => {
            for error in &errors.errors {
                session.printer.diagnostic(error);
                session.printer.stderr_line("");
            }
        }
        Outcome::Unreadable(source) => {
            let err = recipe::RecipeLoadError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            };
            let text = session.printer.render_diagnostic(&err);
            session.printer.stderr_line(text.trim_end());
            session.printer.stderr_line("");
        }
    }
}

fn check_summary(tally: Tally) -> String {
    let warnings = if tally.warnings > 0 {
        format!(" ({})", plural(tally.warnings, "warning"))
    } else {
        String::new()
    };
    if tally.invalid + tally.unreadable == 0 {
        return format!(
            "Checked {}: no problems found{warnings}",
            plural(tally.total, "recipe")
        );
    }
    let mut parts = Vec::new();
    if tally.invalid > 0 {
        parts.push(format!(
            "{} in {}",
            plural(tally.problems, "problem"),
            plural(tally.invalid, "recipe")
        ));
    }
    if tally.unreadable > 0 {
        parts.push(format!("{} unreadable", plural(tally.unreadable, "recipe")));
    }
    format!(
        "Checked {}: {}{warnings}",
        plural(tally.total, "recipe"),
        parts.join(", ")
    )
}

pub(crate) fn diagnostic_json(file: &str, error: &RecipeError) -> serde_json::Value {
    let (line, column) = error.line_column();
    serde_json::json!({
        "file": file,
        "severity": if error.warning { "warning" } else { "error" },
        "line": line,
        "column": column,
        "offset": error.span.start,
        "length": error.span.len(),
        "message": error.kind.to_string(),
        "label": error.kind.label(),
        "help": error.kind.help(),
    })
}

fn check_json(path: &Path, outcome: &Outcome) -> serde_json::Value {
    let file = path.display().to_string();
    match outcome {
        Outcome::Valid(warnings) => {
            let diagnostics: Vec<serde_json::Value> =
                warnings.iter().map(|w| diagnostic_json(&file, w)).collect();
            serde_json::json!({ "file": file, "valid": true, "diagnostics": diagnostics })
        }
        Outcome::Unreadable(source) => serde_json::json!({
            "file": file,
            "valid": false,
            "diagnostics": [{
                "file": file,
                "severity": "error",
                "message": format!("cannot read recipe: {source}"),
            }],
        }),
        Outcome::Invalid(errors) => {
            let diagnostics: Vec<serde_json::Value> = errors
                .errors
                .iter()
                .map(|e| diagnostic_json(&file, e))
                .collect();
            serde_json::json!({ "file": file, "valid": false, "diagnostics": diagnostics })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(total: usize, invalid: usize, unreadable: usize, problems: usize) -> Tally {
        Tally {
            total,
            invalid,
            unreadable,
            problems,
            warnings: 0,
        }
    }

    #[test]
    fn summaries() {
        assert_eq!(
            check_summary(tally(3, 0, 0, 0)),
            "Checked 3 recipes: no problems found"
        );
        assert_eq!(
            check_summary(tally(2, 1, 0, 4)),
            "Checked 2 recipes: 4 problems in 1 recipe"
        );
        assert_eq!(
            check_summary(tally(2, 1, 1, 1)),
            "Checked 2 recipes: 1 problem in 1 recipe, 1 recipe unreadable"
        );
        let mut warned = tally(1, 0, 0, 0);
        warned.warnings = 2;
        assert_eq!(
            check_summary(warned),
            "Checked 1 recipe: no problems found (2 warnings)"
        );
    }
}
