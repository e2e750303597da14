//! JSON lines on stdout for `--json`: one object per event, with an `event` field.

use std::io::Write;

use serde_json::json;

use super::{Event, Render, SharedWriter, step_title};

pub(crate) struct JsonRenderer {
    out: SharedWriter,
}

impl JsonRenderer {
    pub(crate) fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: SharedWriter::new(out),
        }
    }
}

impl Render for JsonRenderer {
    fn render(&self, event: Event<'_>) {
        let value = match event {
            Event::StepStarted { name } => {
                json!({ "event": "step_started", "step": name, "title": step_title(name) })
            }
            Event::StepFinished { name, elapsed } => json!({
                "event": "step_finished",
                "step": name,
                "title": step_title(name),
                "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            }),
            Event::DownloadStarted { id, name, size } => {
                json!({ "event": "download_started", "id": id, "name": name, "size": size })
            }
            Event::DownloadProgress { id, bytes } => {
                json!({ "event": "download_progress", "id": id, "bytes": bytes })
            }
            Event::DownloadFinished { id, name, bytes } => {
                json!({ "event": "download_finished", "id": id, "name": name, "bytes": bytes })
            }
            Event::Warning { message } => json!({ "event": "warning", "message": message }),
            Event::Info { message } => json!({ "event": "info", "message": message }),
        };
        self.out.line(&value.to_string());
    }
}
