//! Plain `step: message` lines, for logs, pipes and `--verbose`.

use std::io::Write;

use super::{Event, Render, SharedWriter, format_bytes, format_elapsed, step_title};

pub(crate) struct PlainRenderer {
    out: SharedWriter,
}

impl PlainRenderer {
    pub(crate) fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: SharedWriter::new(out),
        }
    }
}

impl Render for PlainRenderer {
    fn render(&self, event: Event<'_>) {
        let line = match event {
            Event::StepStarted { name } => format!("{}: started", step_title(name)),
            Event::StepFinished { name, elapsed } => {
                format!("{}: done in {}", step_title(name), format_elapsed(elapsed))
            }
            // One line per download, when it is complete: progress ticks would flood logs.
            Event::DownloadStarted { .. } | Event::DownloadProgress { .. } => return,
            Event::DownloadFinished { name, bytes, .. } => {
                format!("download: {name} ({})", format_bytes(bytes))
            }
            Event::Warning { message } => format!("warning: {message}"),
            Event::Info { message } => format!("info: {message}"),
        };
        self.out.line(&line);
    }
}
