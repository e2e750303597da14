//! Spinners and progress bars on a terminal (indicatif). Used only when stderr is a TTY
//! and `--verbose` is off; finished steps stay on screen as `✓ step (1.23s)` lines.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Render, format_elapsed};

pub(crate) struct TtyRenderer {
    multi: MultiProgress,
    color: bool,
    steps: Mutex<HashMap<String, ProgressBar>>,
    downloads: Mutex<HashMap<u64, ProgressBar>>,
}

impl TtyRenderer {
    pub(crate) fn new(color: bool) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            color,
            steps: Mutex::new(HashMap::new()),
            downloads: Mutex::new(HashMap::new()),
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
                bar.set_message(name.to_owned());
                bar.enable_steady_tick(Duration::from_millis(100));
                lock(&self.steps).insert(name.to_owned(), bar);
            }
            Event::StepFinished { name, elapsed } => {
                if let Some(bar) = lock(&self.steps).remove(name) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let tick = self.paint("32", "✓");
                self.println(&format!("{tick} {name} ({})", format_elapsed(elapsed)));
            }
            Event::DownloadStarted { id, name, size } => {
                let bar = match size {
                    Some(total) => {
                        let bar = ProgressBar::new(total);
                        bar.set_style(
                            ProgressStyle::with_template(
                                "  {msg:30!} [{bar:25}] {bytes}/{total_bytes}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                        );
                        bar
                    }
                    None => ProgressBar::new_spinner(),
                };
                let bar = self.multi.add(bar);
                bar.set_message(name.to_owned());
                lock(&self.downloads).insert(id, bar);
            }
            Event::DownloadProgress { id, bytes } => {
                if let Some(bar) = lock(&self.downloads).get(&id) {
                    bar.inc(bytes);
                }
            }
            Event::DownloadFinished { id, .. } => {
                if let Some(bar) = lock(&self.downloads).remove(&id) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
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
        for (_, bar) in lock(&self.downloads).drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}
