//! `jeos audit RECIPE|LOCK|IMAGE`: pending updates of an appliance; exit 1 when a security
//! update is pending (a CI gate), 0 when current.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::{ExitStatus, Session, load_recipe_or_report, resolve_options};
use package_resolver::lock::LockFile;

use crate::audit::{self, AuditReport, AuditTarget};
use crate::reporters::UiResolverReporter;
use crate::resolve::LockMode;

/// `jeos audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A recipe (its lock file is audited), a lock file, or a built image (`.raw`,
    /// `.qcow2`, `.vmdk`, `.ova`, or the build's output directory).
    #[arg(value_name = "RECIPE|LOCK|IMAGE")]
    pub target: PathBuf,
}

pub(super) fn audit(args: &AuditArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let target = AuditTarget::from_path(&args.target);
    let recipe = match &target {
        AuditTarget::Recipe(path) => match load_recipe_or_report(path, session) {
            Some(recipe) => Some(recipe),
            None => return Ok(ExitStatus::Error),
        },
        _ => None,
    };
    let (lock, lock_path) = audit::read_target(&target)?;
    let source = audit::audit_source(&lock, recipe.as_ref().map(|r| &r.source));
    let options = resolve_options(session, LockMode::Use)?;
    let reporter = Arc::new(UiResolverReporter::new(Arc::clone(&session.ui)));
    let result = audit::audit_lock(&lock, &lock_path, &source, &options, reporter);
    session.ui.finish();
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            not_compared(&lock, &lock_path, &error, session);
            return Ok(ExitStatus::NotCompared);
        }
    };
    if session.global.json {
        session
            .printer
            .stdout_line(&serde_json::to_string(&report).expect("report serialises"));
    } else {
        print_report(&report, session);
    }
    Ok(if report.security_pending() {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

/// Without the current index: say so, list what the appliance contains (from its lock or
/// the image's own manifest), and leave the verdict open (exit 3).
fn not_compared(
    lock: &LockFile,
    lock_path: &Path,
    error: &audit::AuditError,
    session: &mut Session,
) {
    if session.global.json {
        let packages: Vec<serde_json::Value> = lock
            .packages
            .iter()
            .map(|p| serde_json::json!({ "name": p.name, "version": p.version }))
            .collect();
        let mut reason = crate::cli::error_json(error);
        if let Some(object) = reason.as_object_mut() {
            object.remove("event");
            object.remove("exit_code");
        }
        let value = serde_json::json!({
            "target": lock_path.display().to_string(),
            "compared": false,
            "reason": reason,
            "packages": packages,
            "exit_code": ExitStatus::NotCompared.code(),
        });
        session.printer.stdout_line(&value.to_string());
        return;
    }
    let text = session.printer.render_diagnostic(error);
    session.printer.stderr_line(text.trim_end());
    if session.global.quiet {
        return;
    }
    for p in &lock.packages {
        session
            .printer
            .stdout_line(&format!("{}  {}", p.name, p.version));
    }
    session.printer.stderr_line(&format!(
        "audit: {} packages in `{}`, not compared with the suites now (exit 3)",
        lock.packages.len(),
        lock_path.display()
    ));
}

fn print_report(report: &AuditReport, session: &mut Session) {
    let width = report
        .updates
        .iter()
        .map(|u| u.name.len())
        .max()
        .unwrap_or(7)
        .max(7);
    if !report.updates.is_empty() {
        session.printer.stdout_line(&format!(
            "{:width$}  {:24}  {:24}  suite",
            "package", "installed", "available"
        ));
    }
    for u in &report.updates {
        let mark = if u.security { "  (security)" } else { "" };
        session.printer.stdout_line(&format!(
            "{:width$}  {:24}  {:24}  {}{mark}",
            u.name, u.installed, u.available, u.suite
        ));
    }
    for name in &report.gone {
        session
            .printer
            .stderr_line(&format!("note: `{name}` is no longer in any suite"));
    }
    let security = report.updates.iter().filter(|u| u.security).count();
    let suites: Vec<String> = report
        .suites
        .iter()
        .map(|(s, d)| format!("{s} ({d})"))
        .collect();
    session.printer.stderr_line(&format!(
        "audit: {} packages of `{}` against {}: {} with updates, {security} security",
        report.packages,
        report.target,
        suites.join(", "),
        report.updates.len()
    ));
    if security > 0 {
        session
            .printer
            .hint("run `jeos resolve --update RECIPE` and rebuild to take the security updates");
    }
}
