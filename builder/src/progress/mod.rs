//! The one place that draws: progress, warnings and step timings for every command.
//!
//! A [`Ui`] is chosen once from the command line and shared (`Arc<Ui>`) with the pipeline
//! and with the adapters that implement the libraries' reporter traits; it is
//! `Send + Sync` because downloads report from worker threads. Three renderers:
//!
//! | mode | when | output |
//! |---|---|---|
//! | [`UiMode::Tty`] | stderr is a terminal and not `--verbose` | indicatif spinners and bars |
//! | [`UiMode::Plain`] | otherwise | `step: message` lines on stderr |
//! | [`UiMode::Json`] | `--json` | one JSON object per line on stdout |
//!
//! Step timings for the build report are kept by the pipeline (`BuildContext::step`).

mod json;
mod plain;
mod printer;
mod tty;

pub use printer::{Printer, terminal_width};

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

/// Identifies one download between `download_started` and `download_finished`.
pub type DownloadId = u64;

/// How the UI renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiMode {
    /// Spinners and progress bars (indicatif) on stderr.
    Tty,
    /// Plain `step: message` lines on stderr.
    Plain,
    /// JSON lines on stdout.
    Json,
}

impl UiMode {
    /// The mode for this process: JSON when asked, indicatif only on a terminal and
    /// when `--verbose` is off (debug logs would tear the bars), plain lines otherwise.
    pub fn detect(json: bool, verbose: bool, stderr_is_terminal: bool) -> Self {
        if json {
            Self::Json
        } else if stderr_is_terminal && !verbose {
            Self::Tty
        } else {
            Self::Plain
        }
    }
}

/// The name people read for a pipeline step: `unpack_boot_loaders` -> `unpack boot
/// loaders` (steps are verb_noun functions, so their names read as sentences).
pub fn step_title(name: &str) -> String {
    name.replace('_', " ")
}

/// Wraps `text` to `width` columns; continuation lines start with `indent` spaces.
pub fn wrap(text: &str, width: usize, indent: usize) -> Vec<String> {
    let width = width.max(indent + 20);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let prefix = if lines.is_empty() { 0 } else { indent };
        if !line.is_empty() && prefix + line.chars().count() + 1 + word.chars().count() > width {
            lines.push(line);
            line = String::new();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l
            } else {
                format!("{}{l}", " ".repeat(indent))
            }
        })
        .collect()
}

/// A progress event, as handed to renderers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Event<'a> {
    StepStarted {
        name: &'a str,
    },
    StepFinished {
        name: &'a str,
        elapsed: Duration,
    },
    DownloadStarted {
        id: DownloadId,
        name: &'a str,
        size: Option<u64>,
    },
    DownloadProgress {
        id: DownloadId,
        bytes: u64,
    },
    DownloadFinished {
        id: DownloadId,
        name: &'a str,
        bytes: u64,
    },
    Warning {
        message: &'a str,
    },
    Info {
        message: &'a str,
    },
}

/// A renderer draws events. Implementations serialise their own output.
pub(crate) trait Render: Send + Sync {
    fn render(&self, event: Event<'_>);
    fn finish(&self) {}
}

#[derive(Debug, Default)]
struct Download {
    name: String,
    received: u64,
}

#[derive(Debug, Default)]
struct State {
    downloads: HashMap<DownloadId, Download>,
    downloaded_bytes: u64,
    downloads_finished: u64,
    warnings: usize,
}

/// The user interface of one `jeos` run. Cheap to call from any thread.
pub struct Ui {
    renderer: Box<dyn Render>,
    quiet: bool,
    state: Mutex<State>,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui")
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl Ui {
    /// A UI drawing to the process's stderr (Tty, Plain) or stdout (Json).
    /// `quiet` drops info and step lines; warnings are always shown.
    pub fn new(mode: UiMode, quiet: bool, color: bool) -> Self {
        match mode {
            UiMode::Tty => Self::with_renderer(Box::new(tty::TtyRenderer::new(color)), quiet),
            UiMode::Plain => Self::with_writer(mode, quiet, Box::new(io::stderr())),
            UiMode::Json => Self::with_writer(mode, quiet, Box::new(io::stdout())),
        }
    }

    /// A plain or JSON UI writing to `out` (tests capture output this way). `Tty` mode
    /// falls back to plain lines, since indicatif draws only to a terminal.
    pub fn with_writer(mode: UiMode, quiet: bool, out: Box<dyn Write + Send>) -> Self {
        let renderer: Box<dyn Render> = match mode {
            UiMode::Json => Box::new(json::JsonRenderer::new(out)),
            UiMode::Tty | UiMode::Plain => Box::new(plain::PlainRenderer::new(out)),
        };
        Self::with_renderer(renderer, quiet)
    }

    fn with_renderer(renderer: Box<dyn Render>, quiet: bool) -> Self {
        Self {
            renderer,
            quiet,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pipeline step begins.
    pub fn step_started(&self, name: &str) {
        if !self.quiet {
            self.renderer.render(Event::StepStarted { name });
        }
    }

    /// A pipeline step ended after `elapsed` (the build report keeps its own timings).
    pub fn step_finished(&self, name: &str, elapsed: Duration) {
        if !self.quiet {
            self.renderer.render(Event::StepFinished { name, elapsed });
        }
    }

    /// A download of `size` bytes (if known) begins.
    pub fn download_started(&self, id: DownloadId, name: &str, size: Option<u64>) {
        self.state().downloads.insert(
            id,
            Download {
                name: name.to_owned(),
                received: 0,
            },
        );
        if !self.quiet {
            self.renderer
                .render(Event::DownloadStarted { id, name, size });
        }
    }

    /// `bytes` more bytes of download `id` arrived (an increment, not a total).
    pub fn download_progress(&self, id: DownloadId, bytes: u64) {
        {
            let mut state = self.state();
            state.downloaded_bytes = state.downloaded_bytes.saturating_add(bytes);
            if let Some(d) = state.downloads.get_mut(&id) {
                d.received = d.received.saturating_add(bytes);
            }
        }
        if !self.quiet {
            self.renderer.render(Event::DownloadProgress { id, bytes });
        }
    }

    /// Download `id` is complete. Unknown ids are ignored.
    pub fn download_finished(&self, id: DownloadId) {
        let Some(download) = ({
            let mut state = self.state();
            let removed = state.downloads.remove(&id);
            if removed.is_some() {
                state.downloads_finished += 1;
            }
            removed
        }) else {
            return;
        };
        if !self.quiet {
            self.renderer.render(Event::DownloadFinished {
                id,
                name: &download.name,
                bytes: download.received,
            });
        }
    }

    /// Something the user should know about; shown even with `--quiet`.
    pub fn warning(&self, message: &str) {
        self.state().warnings += 1;
        self.renderer.render(Event::Warning { message });
    }

    /// A neutral message.
    pub fn info(&self, message: &str) {
        if !self.quiet {
            self.renderer.render(Event::Info { message });
        }
    }

    /// Clears bars and flushes; call once at the end of the command.
    pub fn finish(&self) {
        self.renderer.finish();
    }

    /// Total bytes reported through `download_progress`.
    pub fn downloaded_bytes(&self) -> u64 {
        self.state().downloaded_bytes
    }

    /// Downloads completed so far (package files and indexes fetched, not taken from the
    /// cache).
    pub fn downloads_finished(&self) -> u64 {
        self.state().downloads_finished
    }

    /// Number of warnings shown.
    pub fn warning_count(&self) -> usize {
        self.state().warnings
    }
}

/// `1.23s`, `45ms`, `2m03s`: short and stable.
pub fn format_elapsed(elapsed: Duration) -> String {
    let millis = elapsed.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        format!("{}.{:02}s", millis / 1000, (millis % 1000) / 10)
    } else {
        let secs = elapsed.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// `1.5MiB`, `812KiB`, `12B`: binary units, one decimal.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1}{unit}")
}

/// A writer shared by a renderer; output errors (closed pipe) are ignored on purpose:
/// progress must never abort a build.
pub(crate) struct SharedWriter(Mutex<Box<dyn Write + Send>>);

impl SharedWriter {
    pub(crate) fn new(out: Box<dyn Write + Send>) -> Self {
        Self(Mutex::new(out))
    }

    pub(crate) fn line(&self, text: &str) {
        let mut out = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A `Write` that appends into shared memory.
    #[derive(Clone, Default)]
    pub(crate) struct Capture(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("utf-8")
        }
    }

    fn run_pipeline(ui: &Ui) {
        ui.step_started("resolve_packages");
        ui.info("trixie main: 63421 packages");
        ui.step_finished("resolve_packages", Duration::from_millis(1234));
        ui.step_started("fetch_packages");
        ui.download_started(1, "nginx_1.26.3-3_amd64.deb", Some(2048));
        ui.download_progress(1, 1024);
        ui.download_progress(1, 1024);
        ui.download_finished(1);
        ui.download_finished(99);
        ui.warning("excluded `perl-base`, a dependency of `nginx`");
        ui.step_finished("fetch_packages", Duration::from_millis(45));
        ui.finish();
    }

    #[test]
    fn step_titles_and_wrapping() {
        assert_eq!(step_title("unpack_boot_loaders"), "unpack boot loaders");
        let lines = wrap("steps: a 1s, bb 2s, ccc 3s, dddd 4s, e 5s", 30, 7);
        assert!(lines.iter().all(|l| l.chars().count() <= 30), "{lines:?}");
        assert!(lines[1].starts_with("       "), "{lines:?}");
        assert_eq!(lines.join(" ").split_whitespace().count(), 11);
    }

    #[test]
    fn plain_lines() {
        let out = Capture::default();
        let ui = Ui::with_writer(UiMode::Plain, false, Box::new(out.clone()));
        run_pipeline(&ui);
        assert_eq!(
            out.text(),
            "resolve packages: started\n\
             info: trixie main: 63421 packages\n\
             resolve packages: done in 1.23s\n\
             fetch packages: started\n\
             download: nginx_1.26.3-3_amd64.deb (2.0KiB)\n\
             warning: excluded `perl-base`, a dependency of `nginx`\n\
             fetch packages: done in 45ms\n"
        );
        assert_eq!(ui.downloaded_bytes(), 2048);
        assert_eq!(ui.warning_count(), 1);
    }

    #[test]
    fn quiet_keeps_warnings() {
        let out = Capture::default();
        let ui = Ui::with_writer(UiMode::Plain, true, Box::new(out.clone()));
        run_pipeline(&ui);
        assert_eq!(
            out.text(),
            "warning: excluded `perl-base`, a dependency of `nginx`\n"
        );
    }

    #[test]
    fn json_lines() {
        let out = Capture::default();
        let ui = Ui::with_writer(UiMode::Json, false, Box::new(out.clone()));
        run_pipeline(&ui);
        let text = out.text();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        assert_eq!(events.len(), 10);
        assert_eq!(events[0]["event"], "step_started");
        assert_eq!(events[2]["event"], "step_finished");
        assert_eq!(events[2]["elapsed_ms"], 1234);
        assert_eq!(events[4]["size"], 2048);
        assert_eq!(events[7]["event"], "download_finished");
        assert_eq!(events[7]["bytes"], 2048);
        assert_eq!(
            events[8]["message"],
            "excluded `perl-base`, a dependency of `nginx`"
        );
    }

    #[test]
    fn ui_is_shareable_across_threads() {
        let out = Capture::default();
        let ui = Arc::new(Ui::with_writer(UiMode::Json, false, Box::new(out.clone())));
        let handles: Vec<_> = (0..4)
            .map(|id| {
                let ui = Arc::clone(&ui);
                std::thread::spawn(move || {
                    ui.download_started(id, "x.deb", None);
                    for _ in 0..100 {
                        ui.download_progress(id, 10);
                    }
                    ui.download_finished(id);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread finished");
        }
        assert_eq!(ui.downloaded_bytes(), 4000);
        assert_eq!(out.text().lines().count(), 4 * 102);
    }

    #[test]
    fn tty_renderer_handles_every_event() {
        // Under `cargo test` stderr is not a terminal, so indicatif hides the bars: this
        // exercises the bookkeeping (bars added, advanced, removed) without drawing.
        let ui = Ui::new(UiMode::Tty, false, false);
        run_pipeline(&ui);
        ui.download_started(7, "unsized.deb", None);
        ui.download_progress(7, 10);
        ui.finish();
        assert_eq!(ui.downloaded_bytes(), 2058);
    }

    #[test]
    fn mode_detection() {
        assert_eq!(UiMode::detect(true, false, true), UiMode::Json);
        assert_eq!(UiMode::detect(false, false, true), UiMode::Tty);
        assert_eq!(UiMode::detect(false, true, true), UiMode::Plain);
        assert_eq!(UiMode::detect(false, false, false), UiMode::Plain);
    }

    #[test]
    fn formats() {
        assert_eq!(format_elapsed(Duration::from_millis(45)), "45ms");
        assert_eq!(format_elapsed(Duration::from_millis(1234)), "1.23s");
        assert_eq!(format_elapsed(Duration::from_secs(123)), "2m03s");
        assert_eq!(format_bytes(12), "12B");
        assert_eq!(format_bytes(1536 * 1024), "1.5MiB");
    }
}
