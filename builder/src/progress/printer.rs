//! Command results and diagnostics: what a command prints besides progress.
//!
//! Diagnostics are drawn with miette's graphical handler (source snippet, caret, label,
//! help) on stderr; colours only when enabled (a terminal and no `NO_COLOR`, or
//! `--color always`). Results meant for programs (`--json`) go to stdout.

use std::io::{self, Write};

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};

/// Where a command writes its results and diagnostics.
pub struct Printer {
    color: bool,
    width: usize,
    stdout: Box<dyn Write + Send>,
    stderr: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Printer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer")
            .field("color", &self.color)
            .field("width", &self.width)
            .finish_non_exhaustive()
    }
}

/// Terminal width for wrapping: `COLUMNS` when set (tests fix it), else the width of the
/// terminal on stderr, else 100; never more than [`MAX_WIDTH`].
pub fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .or_else(|| {
            console::Term::stderr()
                .size_checked()
                .map(|(_, columns)| usize::from(columns))
        })
        .filter(|w: &usize| *w >= 40)
        .unwrap_or(100)
        .min(MAX_WIDTH)
}

/// Widest line jeos writes, even on a wider terminal (long lines are hard to read).
pub const MAX_WIDTH: usize = 120;

impl Printer {
    /// Prints to the process's stdout and stderr.
    pub fn stdio(color: bool) -> Self {
        Self::new(
            color,
            terminal_width(),
            Box::new(io::stdout()),
            Box::new(io::stderr()),
        )
    }

    /// Prints to the given writers (tests).
    pub fn new(
        color: bool,
        width: usize,
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
    ) -> Self {
        Self {
            color,
            width,
            stdout,
            stderr,
        }
    }

    /// Columns to fit lines into.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether colours are on.
    pub fn color(&self) -> bool {
        self.color
    }

    /// Renders a diagnostic (with its source snippet) as text.
    pub fn render_diagnostic(&self, diagnostic: &dyn Diagnostic) -> String {
        let theme = if self.color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(self.width)
            .with_links(false)
            .with_context_lines(1);
        let mut out = String::new();
        if handler.render_report(&mut out, diagnostic).is_err() {
            out = format!("error: {diagnostic}\n");
        }
        out
    }

    /// Writes a diagnostic to stderr.
    pub fn diagnostic(&mut self, diagnostic: &dyn Diagnostic) {
        let text = self.render_diagnostic(diagnostic);
        let _ = write!(self.stderr, "{text}");
        let _ = self.stderr.flush();
    }

    /// A line on stdout (results for programs).
    pub fn stdout_line(&mut self, line: &str) {
        let _ = writeln!(self.stdout, "{line}");
        let _ = self.stdout.flush();
    }

    /// Raw bytes on stdout (`jeos cat`).
    pub fn stdout_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stdout.write_all(bytes);
        let _ = self.stdout.flush();
    }

    /// Text on stdout exactly as given (generated files: schema, completions, man pages).
    pub fn stdout_raw(&mut self, text: &str) {
        let _ = write!(self.stdout, "{text}");
        let _ = self.stdout.flush();
    }

    /// A line on stderr (messages for people).
    pub fn stderr_line(&mut self, line: &str) {
        let _ = writeln!(self.stderr, "{line}");
        let _ = self.stderr.flush();
    }

    /// `hint: ...` line on stderr (uv style).
    pub fn hint(&mut self, text: &str) {
        let label = self.paint("36;1", "hint");
        self.stderr_line(&format!("{label}: {text}"));
    }

    /// Wraps `text` in an ANSI colour when colours are on.
    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}
