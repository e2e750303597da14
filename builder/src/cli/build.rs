//! `jeos build`: recipe → bootable disk image (and the formats the recipe asks for).

use std::path::PathBuf;

use clap::Args;

use super::{ExitStatus, Session, load_recipe_or_report, resolve_options};
use crate::pipeline::{self, BuildOptions, BuildReport};
use crate::progress::{format_bytes, format_elapsed, step_title, wrap};
use crate::publish::PublishOptions;
use crate::resolve::LockMode;

/// `jeos build`
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The appliance recipe.
    #[arg(value_name = "RECIPE")]
    pub recipe: PathBuf,
    /// Output directory; artifacts go to `DIR/<name>-<version>/`.
    #[arg(short, long, value_name = "DIR", default_value = "dist")]
    pub output: PathBuf,
    /// Fail if the lock file is missing or does not match the recipe.
    #[arg(long)]
    pub locked: bool,
    /// RSA private key (PEM) that signs the OVF manifest (with `--sign-cert`).
    #[arg(long, value_name = "KEY.pem", requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    /// Certificate (PEM) written into the `.cert` file (with `--sign-key`).
    #[arg(long, value_name = "CERT.pem", requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
}

/// `SOURCE_DATE_EPOCH` from the environment, if set to a number.
fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

pub(super) fn build(args: &BuildArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let Some(recipe) = load_recipe_or_report(&args.recipe, session) else {
        return Ok(ExitStatus::Error);
    };
    let mode = if args.locked {
        LockMode::Locked
    } else {
        LockMode::Use
    };
    let options = BuildOptions {
        resolve: resolve_options(session, mode)?,
        out_dir: args.output.clone(),
        source_date_epoch: source_date_epoch(),
        publish: PublishOptions {
            sign_key: args.sign_key.clone(),
            sign_cert: args.sign_cert.clone(),
            ..PublishOptions::default()
        },
    };
    let report = pipeline::build(&recipe, &args.recipe, &options, session.ui.clone())?;
    session.ui.finish();
    if session.global.json {
        let value = serde_json::to_value(&report).expect("the report serialises");
        session
            .printer
            .stdout_line(&serde_json::json!({ "build": value }).to_string());
    } else {
        print_report(&report, session);
    }
    Ok(ExitStatus::Success)
}

fn print_report(report: &BuildReport, session: &mut Session) {
    let p = &mut session.printer;
    p.stdout_line(&format!(
        "Built {} {} in {}",
        report.name,
        report.version,
        format_elapsed(std::time::Duration::from_secs_f64(
            report.steps.iter().map(|s| s.seconds).sum()
        ))
    ));
    p.stdout_line(&format!(
        "  image     {} ({})",
        report.raw_image.display(),
        format_bytes(report.image_bytes)
    ));
    p.stdout_line(&format!(
        "  root fs   {}   boot partition {}   initramfs {}",
        format_bytes(report.root_fs_bytes),
        format_bytes(report.esp_bytes),
        format_bytes(report.initramfs_bytes)
    ));
    p.stdout_line(&format!(
        "  kernel    {} with {} modules",
        report.kernel,
        report.modules.len()
    ));
    let unpacked: u64 = report.packages.iter().map(|p| p.bytes).sum();
    let pruned: u64 = report.pruned.values().sum();
    p.stdout_line(&format!(
        "  packages  {} ({} unpacked, {} pruned)",
        report.packages.len(),
        format_bytes(unpacked),
        format_bytes(pruned)
    ));
    if let Some(published) = &report.published {
        for file in &published.files {
            p.stdout_line(&format!(
                "  {:9} {} ({})",
                file.path
                    .extension()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                report
                    .output
                    .join(file.path.file_name().unwrap_or_default())
                    .display(),
                format_bytes(file.size_bytes)
            ));
        }
    }
    if !report.overwrites.is_empty() {
        p.stdout_line(&format!(
            "  replaced  {} package file(s) with the recipe's: {}",
            report.overwrites.len(),
            report.overwrites.join(", ")
        ));
    }
    if session.global.quiet {
        return;
    }
    let p = &mut session.printer;
    if !report.maintainer_scripts.is_empty() {
        let names: Vec<&str> = report
            .maintainer_scripts
            .keys()
            .map(String::as_str)
            .collect();
        let note = format!(
            "note: maintainer scripts were not run for: {}",
            names.join(", ")
        );
        for line in wrap(&note, p.width(), 6) {
            p.stderr_line(&line);
        }
    }
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} {}{}",
                step_title(&s.name),
                format_elapsed(std::time::Duration::from_secs_f64(s.seconds)),
                if s.cached { " (cached)" } else { "" }
            )
        })
        .collect();
    for line in wrap(&format!("steps: {}", steps.join(", ")), p.width(), 7) {
        p.stderr_line(&line);
    }
    if session.global.verbose {
        let downloads = super::build_details::Downloads {
            files: session.ui.downloads_finished(),
            bytes: session.ui.downloaded_bytes(),
        };
        let p = &mut session.printer;
        for (step, detail) in super::build_details::step_details(report, downloads) {
            for line in wrap(&format!("  {step}: {detail}"), p.width(), 6) {
                p.stderr_line(&line);
            }
        }
    }
    let p = &mut session.printer;
    p.stderr_line(&format!(
        "report: {}",
        report.output.join("build-report.json").display()
    ));
    let next = session.printer.paint("36;1", "next");
    session.printer.stderr_line(&format!(
        "{next}: `jeos test {0}` boots it and runs its checks",
        report.output.display()
    ));
}
