//! Commands that describe jeos itself: `jeos schema`, `jeos completions`, `jeos man`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, ValueEnum};
use miette::Diagnostic;

use super::{Cli, ExitStatus, Session};
use crate::recipe::schema;

/// `jeos schema`
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// What to print.
    #[arg(long, value_enum, default_value_t = SchemaFormat::Json)]
    pub format: SchemaFormat,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `jeos schema --format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaFormat {
    /// JSON Schema (draft 2020-12) for editors and validators.
    Json,
    /// The Markdown recipe reference (docs/recipe.md).
    Markdown,
}

/// `jeos completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Shells `jeos completions` supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// GNU Bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// `jeos man`
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `jeos.1` and one `jeos-COMMAND.1` per command into DIR (created if missing)
    /// instead of printing `jeos.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Why writing generated documentation failed.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum DocsError {
    /// A file or directory could not be written.
    #[error("cannot write `{}`", .path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DocsError> {
    let wrap = |source| DocsError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp~");
    fs::write(&tmp, bytes).map_err(wrap)?;
    fs::rename(&tmp, path).map_err(wrap)
}

/// `jeos schema`
pub fn schema(args: &SchemaArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let text = match args.format {
        SchemaFormat::Json => schema::recipe_schema_text(),
        SchemaFormat::Markdown => schema::reference_markdown(),
    };
    match &args.output {
        Some(path) => write_file(path, text.as_bytes())?,
        None => session.printer.stdout_raw(&text),
    }
    Ok(ExitStatus::Success)
}

/// `jeos completions`
pub fn completions(args: &CompletionsArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, "jeos", &mut out);
    session.printer.stdout_raw(&String::from_utf8_lossy(&out));
    Ok(ExitStatus::Success)
}

/// Man pages: `jeos.1` plus `jeos-COMMAND.1` for each (visible) subcommand.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let command = Cli::command();
    let mut pages = Vec::new();
    let mut render = |name: String, cmd: clap::Command| {
        let mut bytes = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut bytes)
            .expect("rendering into memory cannot fail");
        pages.push((format!("{name}.1"), bytes));
    };
    render("jeos".into(), command.clone());
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("jeos-{}", sub.get_name());
        let bin = format!("jeos {}", sub.get_name());
        render(name.clone(), sub.clone().display_name(name).bin_name(bin));
    }
    pages
}

/// `jeos man`
pub fn man(args: &ManArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let pages = man_pages();
    match &args.dir {
        None => {
            let (_, main) = &pages[0];
            session.printer.stdout_raw(&String::from_utf8_lossy(main));
        }
        Some(dir) => {
            fs::create_dir_all(dir).map_err(|source| DocsError::Write {
                path: dir.clone(),
                source,
            })?;
            for (name, bytes) in &pages {
                write_file(&dir.join(name), bytes)?;
            }
            if !session.global.quiet {
                session.printer.stderr_line(&format!(
                    "Wrote {} man pages to `{}`",
                    pages.len(),
                    dir.display()
                ));
            }
        }
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_man_page_per_command() {
        let pages = man_pages();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"jeos.1"));
        assert!(names.contains(&"jeos-check.1"));
        assert!(names.contains(&"jeos-build.1"));
        let check = &pages
            .iter()
            .find(|(n, _)| n == "jeos-check.1")
            .expect("page")
            .1;
        assert!(String::from_utf8_lossy(check).contains(".TH jeos-check 1"));
    }
}
