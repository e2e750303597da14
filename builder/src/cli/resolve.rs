//! `jeos resolve`: print the minimal package closure of a recipe and keep its lock file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use package_resolver::lock::LockFile;

use super::{ExitStatus, Session, load_recipe_or_report, resolve_options};
use crate::progress::{format_bytes, format_elapsed};
use crate::reporters::UiResolverReporter;
use crate::resolve::{self, LockMode, LockStatus, Resolved};

/// `jeos resolve`
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The recipe whose packages to resolve.
    #[arg(value_name = "RECIPE")]
    pub recipe: PathBuf,
    /// Solve again from the current index and rewrite the lock file.
    #[arg(long, conflicts_with = "locked")]
    pub update: bool,
    /// Fail if the lock file is missing or does not match the recipe.
    #[arg(long)]
    pub locked: bool,
    /// Show the chain of dependencies from the recipe to this package.
    #[arg(long, value_name = "PACKAGE")]
    pub why: Option<String>,
}

/// The chain from a root to `name` as recorded in the lock file: `(package, relation)`
/// pairs, root first. `None` when `name` is not in the lock.
pub fn why_from_lock(lock: &LockFile, name: &str) -> Option<Vec<(String, String)>> {
    let find = |n: &str| lock.packages.iter().find(|p| p.name == n);
    let mut chain = Vec::new();
    let mut current = find(name)?;
    loop {
        chain.push((
            current.name.clone(),
            current.relation.clone().unwrap_or_default(),
        ));
        match &current.parent {
            Some(parent) if chain.len() <= lock.packages.len() => current = find(parent)?,
            Some(_) => return None,
            None => break,
        }
    }
    chain.reverse();
    Some(chain)
}

pub(super) fn resolve(args: &ResolveArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let Some(recipe) = load_recipe_or_report(&args.recipe, session) else {
        return Ok(ExitStatus::Error);
    };
    let mode = if args.update {
        LockMode::Update
    } else if args.locked {
        LockMode::Locked
    } else {
        LockMode::Use
    };
    let options = resolve_options(session, mode)?;
    let reporter = Arc::new(UiResolverReporter::new(Arc::clone(&session.ui)));
    let start = Instant::now();
    session.ui.step_started("resolve_packages");
    let resolved = resolve::resolve_packages(&recipe, &args.recipe, &options, reporter)?;
    session
        .ui
        .step_finished("resolve_packages", start.elapsed());
    session.ui.finish();

    if let Some(name) = &args.why {
        return Ok(print_why(&resolved, name, session));
    }
    if session.global.json {
        session
            .printer
            .stdout_line(&resolve_json(&resolved).to_string());
    } else {
        print_closure(&resolved, session);
    }
    Ok(ExitStatus::Success)
}

fn print_why(resolved: &Resolved, name: &str, session: &mut Session) -> ExitStatus {
    let Some(chain) = why_from_lock(&resolved.lock, name) else {
        session.printer.stderr_line(&format!(
            "error: `{name}` is not in the closure of `{}`",
            resolved.lock_path.display()
        ));
        session
            .printer
            .hint("`jeos resolve RECIPE` lists every package of the closure");
        return ExitStatus::Failure;
    };
    if session.global.json {
        let steps: Vec<serde_json::Value> = chain
            .iter()
            .map(|(package, relation)| serde_json::json!({ "package": package, "relation": relation }))
            .collect();
        session
            .printer
            .stdout_line(&serde_json::json!({ "package": name, "chain": steps }).to_string());
        return ExitStatus::Success;
    }
    for (depth, (package, relation)) in chain.iter().enumerate() {
        let line = if depth == 0 {
            format!("{package}  (requested as `{relation}`)")
        } else {
            format!(
                "{}└─ {package}  (via `{relation}`)",
                "   ".repeat(depth - 1)
            )
        };
        session.printer.stdout_line(&line);
    }
    ExitStatus::Success
}

fn print_closure(resolved: &Resolved, session: &mut Session) {
    let lock = &resolved.lock;
    let width = lock
        .packages
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let vwidth = lock
        .packages
        .iter()
        .map(|p| p.version.to_string().len())
        .max()
        .unwrap_or(7)
        .max(7);
    session.printer.stdout_line(&format!(
        "{:width$}  {:vwidth$}  {:>10}  {:>10}",
        "package", "version", "installed", "download"
    ));
    let mut installed_kib = 0u64;
    let mut download = 0u64;
    for p in &lock.packages {
        installed_kib += p.installed_size;
        download += p.size;
        let kernel = if resolve::is_kernel_package(lock, p) {
            "  (kernel)"
        } else {
            ""
        };
        let from = match p.suite.as_deref() {
            Some(s) if s.ends_with("-security") => "  (security)",
            Some(s) if s.ends_with("-updates") => "  (updates)",
            _ => "",
        };
        session.printer.stdout_line(&format!(
            "{:width$}  {:vwidth$}  {:>10}  {:>10}{kernel}{from}",
            p.name,
            p.version.to_string(),
            format_bytes(p.installed_size * 1024),
            format_bytes(p.size),
        ));
    }
    session.printer.stdout_line(&format!(
        "total: {} packages, {} installed, {} to download",
        lock.packages.len(),
        format_bytes(installed_kib * 1024),
        format_bytes(download)
    ));
    if session.global.quiet {
        return;
    }
    let kernel = lock.request.kernel.as_deref().unwrap_or("none");
    session.printer.stderr_line(&format!(
        "note: `{kernel}` goes to the boot partition and the initramfs, not the root filesystem"
    ));
    match &resolved.resolution {
        Some(resolution) => {
            for dropped in &resolution.dropped {
                session.printer.stderr_line(&format!(
                    "note: not installed: `{}` of `{}` ({})",
                    dropped.relation, dropped.package, dropped.reason
                ));
            }
            for warning in &resolution.warnings {
                session.printer.stderr_line(&format!("warning: {warning}"));
            }
        }
        None => {
            for drop in &lock.request.drop {
                session.printer.stderr_line(&format!(
                    "note: relations naming `{}` are not followed ({})",
                    drop.name, drop.reason
                ));
            }
        }
    }
    if let Some(index) = &resolved.index {
        let security = index
            .security_mirror
            .as_ref()
            .map(|m| format!(", security from {} ({})", m.url, m.origin))
            .unwrap_or_default();
        session.printer.stderr_line(&format!(
            "index: {} from {} ({}){security}, {} packages, signed by {}, {}",
            index.suites.join(" + "),
            index.mirror.url,
            index.mirror.origin,
            index.packages,
            index.signed_by,
            format_elapsed(index.elapsed)
        ));
    }
    let status = match resolved.lock_status {
        LockStatus::Used => "used as is",
        LockStatus::Created => "created",
        LockStatus::Updated => "updated",
    };
    session.printer.stderr_line(&format!(
        "lock: {} ({status})",
        resolved.lock_path.display()
    ));
}

fn resolve_json(resolved: &Resolved) -> serde_json::Value {
    let lock = &resolved.lock;
    let packages: Vec<serde_json::Value> = lock
        .packages
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "version": p.version.to_string(),
                "arch": p.arch,
                "installed_size": p.installed_size * 1024,
                "download_size": p.size,
                "sha256": p.sha256,
                "filename": p.filename,
                "suite": p.suite,
                "kernel": resolve::is_kernel_package(lock, p),
                "parent": p.parent,
            })
        })
        .collect();
    let dropped: Vec<serde_json::Value> = resolved
        .resolution
        .iter()
        .flat_map(|r| r.dropped.iter())
        .map(|d| serde_json::json!({ "package": d.package, "relation": d.relation, "reason": d.reason }))
        .collect();
    serde_json::json!({
        "suite": lock.source.suite,
        "codename": lock.source.codename,
        "inrelease_sha256": lock.source.sha256,
        "releases": lock.source.releases.iter().map(|r| serde_json::json!({
            "suite": r.suite, "archive": r.archive, "date": r.date, "sha256": r.sha256,
        })).collect::<Vec<_>>(),
        "lock": resolved.lock_path.display().to_string(),
        "lock_status": resolved.lock_status,
        "packages": packages,
        "dropped": dropped,
        "total": {
            "packages": lock.packages.len(),
            "installed_size": lock.packages.iter().map(|p| p.installed_size * 1024).sum::<u64>(),
            "download_size": lock.packages.iter().map(|p| p.size).sum::<u64>(),
        },
    })
}
