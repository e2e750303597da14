//! Progress events of the publishing writers (VMDK, qcow2, OVF package). Every method has
//! a no-op default, so a caller implements only what it renders; this crate never prints.

/// Receives progress events from the publishing writers.
pub trait PublishReporter: Send + Sync {
    /// A writer started producing `file` from `total_bytes` of input.
    fn on_file_started(&self, _file: &str, _total_bytes: u64) {}
    /// `done_bytes` of the input of `file` have been consumed.
    fn on_file_progress(&self, _file: &str, _done_bytes: u64) {}
    /// `file` is complete and renamed into place with `size_bytes`.
    fn on_file_finished(&self, _file: &str, _size_bytes: u64) {}
    /// A compatibility finding about the OVF settings (see [`crate::ovf::lint_ovf`]).
    fn on_finding(&self, _finding: &crate::ovf::Finding) {}
}

/// A reporter that ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReporter;

impl PublishReporter for NoReporter {}
