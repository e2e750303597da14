//! Spinners and progress bars on a terminal (indicatif). Used only when stderr is a TTY
//! and `--verbose` is off; finished steps stay on screen as `✓ step (1.23s)` lines.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Render, format_elapsed, step_title};

pub(crate) struct TtyRenderer {
    multi: MultiProgress,
    color: bool,
    steps: Mutex<HashMap<String, ProgressBar>>,
    downloads: Mutex<Downloads>,
}

/// One bar for every download together: bytes, speed and time left over all files.
#[derive(Default)]
struct Downloads {
    bar: Option<ProgressBar>,
    started: u64,
    finished: u64,
    /// Files without a known size: counted, but they cannot feed the ETA.
    without_size: u64,
}

impl Downloads {
    fn message(&self) -> String {
        format!("{}/{} files", self.finished, self.started)
    }
}

impl TtyRenderer {
    pub(crate) fn new(color: bool) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            color,
            steps: Mutex::new(HashMap::new()),
            downloads: Mutex::new(Downloads::default()),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn println(&self, line: &str) {
        // Fails only when the terminal went away; nothing useful to do then.
        let _ = self.multi.println(line);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Render for TtyRenderer {
    fn render(&self, event: Event<'_>) {
        match event {
            Event::StepStarted { name } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(step_title(name));
                bar.enable_steady_tick(Duration::from_millis(100));
                lock(&self.steps).insert(name.to_owned(), bar);
            }
            Event::StepFinished { name, elapsed } => {
                if let Some(bar) = lock(&self.steps).remove(name) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let tick = self.paint("32", "✓");
                self.println(&format!(
                    "{tick} {} ({})",
                    step_title(name),
                    format_elapsed(elapsed)
                ));
            }
            Event::DownloadStarted { size, .. } => {
                let mut downloads = lock(&self.downloads);
                let bar = downloads.bar.get_or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new(0));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "  downloading {msg:12} [{bar:25}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar
                });
                match size {
                    Some(total) => bar.inc_length(total),
                    None => downloads.without_size += 1,
                }
                downloads.started += 1;
                let message = downloads.message();
                if let Some(bar) = &downloads.bar {
                    bar.set_message(message);
                }
            }
            Event::DownloadProgress { bytes, .. } => {
                if let Some(bar) = &lock(&self.downloads).bar {
                    bar.inc(bytes);
                }
            }
            Event::DownloadFinished { .. } => {
                let mut downloads = lock(&self.downloads);
                downloads.finished += 1;
                let message = downloads.message();
                let done = downloads.finished >= downloads.started;
                if let Some(bar) = &downloads.bar {
                    bar.set_message(message);
                }
                if done && let Some(bar) = downloads.bar.take() {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                    *downloads = Downloads::default();
                }
            }
            Event::Warning { message } => {
                let label = self.paint("33;1", "warning");
                self.println(&format!("{label}: {message}"));
            }
            Event::Info { message } => self.println(message),
        }
    }

    fn finish(&self) {
        for (_, bar) in lock(&self.steps).drain() {
            bar.finish_and_clear();
        }
        if let Some(bar) = lock(&self.downloads).bar.take() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}
