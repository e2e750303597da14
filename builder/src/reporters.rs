//! Adapters from the libraries' reporter traits to the [`Ui`]: the libraries never print,
//! they report events, and this is where the events become progress bars or lines. Every
//! implementation of a library reporter trait in builder is here:
//!
//! | trait | library | adapter |
//! |---|---|---|
//! | `ResolverReporter` | package-resolver | [`UiResolverReporter`] |
//! | `PublishReporter` | image-writer | [`UiPublishReporter`] |
//! | `RunReporter` | test-vm | [`UiRunReporter`] |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use image_writer::PublishReporter;
use package_resolver::reporter::{DownloadId, ResolverReporter, ResolverWarning};
use test_vm::{RunReporter, VmmKind};

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

/// Forwards image-writer's progress events to the [`Ui`] as info lines.
pub struct UiPublishReporter<'a> {
    /// Where the lines go.
    pub ui: &'a Ui,
}

impl PublishReporter for UiPublishReporter<'_> {
    fn on_file_started(&self, file: &str, total_bytes: u64) {
        self.ui.info(&format!(
            "writing {file} from {} of raw disk",
            format_bytes(total_bytes)
        ));
    }

    fn on_file_finished(&self, file: &str, size_bytes: u64) {
        self.ui
            .info(&format!("wrote {file} ({})", format_bytes(size_bytes)));
    }

    // Findings are linted and shown before anything is written; see `publish_artifacts`.
}

/// Says which VMM runs, and why, as soon as it is chosen (an info line: dropped with
/// `--quiet`).
#[derive(Debug)]
pub struct UiRunReporter {
    ui: Arc<Ui>,
}

impl UiRunReporter {
    /// A reporter drawing on `ui`.
    pub fn new(ui: Arc<Ui>) -> Self {
        Self { ui }
    }
}

impl RunReporter for UiRunReporter {
    fn on_vmm_selected(&self, vmm: VmmKind, reason: &str) {
        self.ui.info(&vmm_line(
            vmm,
            reason,
            test_vm::check_host().can_boot_linux(),
        ));
    }
}

/// `vmm: qemu (TCG) — /dev/kvm is kvm_pvm, …` (pure).
pub fn vmm_line(vmm: VmmKind, reason: &str, kvm: bool) -> String {
    let name = match vmm {
        VmmKind::Embedded => "embedded (KVM)",
        VmmKind::Qemu if kvm => "qemu (KVM)",
        VmmKind::Qemu => "qemu (TCG)",
    };
    let reason = reason
        .strip_prefix("qemu: ")
        .or_else(|| reason.strip_prefix("embedded runner: "))
        .unwrap_or(reason);
    format!("vmm: {name} — {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_lines() {
        assert_eq!(
            vmm_line(VmmKind::Qemu, "qemu: /dev/kvm is kvm_pvm", false),
            "vmm: qemu (TCG) — /dev/kvm is kvm_pvm"
        );
        assert!(vmm_line(VmmKind::Embedded, "embedded runner requested", true).contains("KVM"));
    }
}
