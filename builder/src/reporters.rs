//! Adapters from the libraries' reporter traits to the [`Ui`]: the libraries never print,
//! they report events, and this is where the events become progress bars or lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use package_resolver::reporter::{DownloadId, ResolverReporter, ResolverWarning};

use crate::progress::{Ui, format_bytes};

/// Forwards package-resolver events to the [`Ui`].
#[derive(Debug)]
pub struct UiResolverReporter {
    ui: Arc<Ui>,
    next_id: AtomicU64,
}

impl UiResolverReporter {
    /// A reporter drawing on `ui`.
    pub fn new(ui: Arc<Ui>) -> Self {
        Self {
            ui,
            next_id: AtomicU64::new(1),
        }
    }
}

impl ResolverReporter for UiResolverReporter {
    fn on_index_fetched(&self, suite: &str, component: &str, bytes: u64) {
        self.ui.info(&format!(
            "index {suite}/{component} verified ({})",
            format_bytes(bytes)
        ));
    }

    fn on_download_start(&self, name: &str, size: Option<u64>) -> DownloadId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.ui.download_started(id, name, size);
        DownloadId(id)
    }

    fn on_download_progress(&self, id: DownloadId, bytes: u64) {
        self.ui.download_progress(id.0, bytes);
    }

    fn on_download_complete(&self, id: DownloadId) {
        self.ui.download_finished(id.0);
    }

    fn on_retry(&self, url: &str, attempt: u32, error: &str) {
        self.ui
            .warning(&format!("retrying `{url}` (attempt {attempt}): {error}"));
    }

    fn on_warning(&self, warning: ResolverWarning) {
        self.ui.warning(&warning.to_string());
    }
}
