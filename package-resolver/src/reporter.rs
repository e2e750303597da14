//! Progress and warning events of the resolver's IO edge.
//!
//! The library never prints: the builder implements [`ResolverReporter`] and renders the
//! events (TTY bars, plain lines or JSON). Every method has a no-op default so an
//! implementation only overrides what it shows. [`RecordingReporter`] collects the events in
//! order, for tests and snapshots.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one download between [`ResolverReporter::on_download_start`] and
/// [`ResolverReporter::on_download_complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownloadId(pub u64);

/// Something the user should know about that did not stop the work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverWarning {
    /// A signature of the InRelease file could not be verified (another one was good).
    SignatureNotVerified {
        /// Suite whose InRelease carried the signature.
        suite: String,
        /// Issuer key id or fingerprint (hex), or `unknown`.
        key: String,
        /// Why it was not accepted.
        reason: String,
    },
    /// The by-hash location of an index was missing; the plain path was used instead.
    ByHashFallback {
        /// The by-hash URL that returned 404.
        url: String,
    },
    /// The InRelease could not be fetched; the cached copy was used (offline mode).
    UsingCachedRelease {
        /// Suite name.
        suite: String,
    },
    /// Two packages ship the same file; the later one won.
    FileOverlap {
        /// Path inside the root filesystem.
        path: String,
        /// Package unpacked first.
        first: String,
        /// Package unpacked later, whose file was kept.
        second: String,
    },
    /// A parsed-index cache entry failed verification; it was removed and the verified
    /// `Packages` text parsed again.
    ParsedIndexRebuilt {
        /// The index (`main/binary-amd64/Packages` of a suite).
        index: String,
        /// What was wrong with the entry.
        reason: String,
    },
}

impl std::fmt::Display for ResolverWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignatureNotVerified { suite, key, reason } => write!(
                f,
                "signature by `{key}` on the `{suite}` InRelease not verified: {reason}"
            ),
            Self::ByHashFallback { url } => {
                write!(f, "`{url}` not found, falling back to the plain index path")
            }
            Self::UsingCachedRelease { suite } => {
                write!(f, "using the cached InRelease of `{suite}` (offline)")
            }
            Self::FileOverlap {
                path,
                first,
                second,
            } => write!(
                f,
                "`{path}` is shipped by both `{first}` and `{second}`; keeping `{second}`'s"
            ),
            Self::ParsedIndexRebuilt { index, reason } => write!(
                f,
                "the cached parsed form of `{index}` is damaged ({reason}); parsed the verified index again"
            ),
        }
    }
}

/// Receives progress events. Implementations must be cheap and must not block: events come
/// from download threads.
pub trait ResolverReporter: Send + Sync {
    /// An index (`Packages`) of `suite`/`component` was fetched and verified; `bytes` is its
    /// uncompressed size.
    fn on_index_fetched(&self, suite: &str, component: &str, bytes: u64) {
        let _ = (suite, component, bytes);
    }

    /// A download of `name` (`size` bytes if known) starts.
    fn on_download_start(&self, name: &str, size: Option<u64>) -> DownloadId {
        let _ = (name, size);
        DownloadId(0)
    }

    /// `bytes` more bytes of download `id` arrived.
    fn on_download_progress(&self, id: DownloadId, bytes: u64) {
        let _ = (id, bytes);
    }

    /// Download `id` finished (successfully or not).
    fn on_download_complete(&self, id: DownloadId) {
        let _ = id;
    }

    /// `name` was served from the cache; nothing was downloaded.
    fn on_cache_hit(&self, name: &str) {
        let _ = name;
    }

    /// A transient error on `url`; attempt number `attempt` (1-based) follows.
    fn on_retry(&self, url: &str, attempt: u32, error: &str) {
        let _ = (url, attempt, error);
    }

    /// A warning.
    fn on_warning(&self, warning: ResolverWarning) {
        let _ = warning;
    }
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReporter;

impl ResolverReporter for NoReporter {}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverEvent {
    /// See [`ResolverReporter::on_index_fetched`].
    IndexFetched {
        /// Suite.
        suite: String,
        /// Component.
        component: String,
        /// Uncompressed size.
        bytes: u64,
    },
    /// See [`ResolverReporter::on_download_start`].
    DownloadStart {
        /// Id handed out.
        id: DownloadId,
        /// Item name.
        name: String,
        /// Expected size.
        size: Option<u64>,
    },
    /// See [`ResolverReporter::on_download_progress`].
    DownloadProgress {
        /// Download.
        id: DownloadId,
        /// Bytes in this chunk.
        bytes: u64,
    },
    /// See [`ResolverReporter::on_download_complete`].
    DownloadComplete {
        /// Download.
        id: DownloadId,
    },
    /// See [`ResolverReporter::on_cache_hit`].
    CacheHit {
        /// Item name.
        name: String,
    },
    /// See [`ResolverReporter::on_retry`].
    Retry {
        /// URL.
        url: String,
        /// Attempt number.
        attempt: u32,
        /// Error text.
        error: String,
    },
    /// See [`ResolverReporter::on_warning`].
    Warning(ResolverWarning),
}

/// Records every event in order (for tests and snapshots).
#[derive(Debug, Default)]
pub struct RecordingReporter {
    events: Mutex<Vec<ResolverEvent>>,
    next_id: AtomicU64,
}

impl RecordingReporter {
    /// An empty recorder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events so far.
    #[must_use]
    pub fn events(&self) -> Vec<ResolverEvent> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ResolverEvent>> {
        // A panic while holding the lock only loses the event being pushed.
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, event: ResolverEvent) {
        self.lock().push(event);
    }
}

impl ResolverReporter for RecordingReporter {
    fn on_index_fetched(&self, suite: &str, component: &str, bytes: u64) {
        self.push(ResolverEvent::IndexFetched {
            suite: suite.to_owned(),
            component: component.to_owned(),
            bytes,
        });
    }

    fn on_download_start(&self, name: &str, size: Option<u64>) -> DownloadId {
        let id = DownloadId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        self.push(ResolverEvent::DownloadStart {
            id,
            name: name.to_owned(),
            size,
        });
        id
    }

    fn on_download_progress(&self, id: DownloadId, bytes: u64) {
        self.push(ResolverEvent::DownloadProgress { id, bytes });
    }

    fn on_download_complete(&self, id: DownloadId) {
        self.push(ResolverEvent::DownloadComplete { id });
    }

    fn on_cache_hit(&self, name: &str) {
        self.push(ResolverEvent::CacheHit {
            name: name.to_owned(),
        });
    }

    fn on_retry(&self, url: &str, attempt: u32, error: &str) {
        self.push(ResolverEvent::Retry {
            url: url.to_owned(),
            attempt,
            error: error.to_owned(),
        });
    }

    fn on_warning(&self, warning: ResolverWarning) {
        self.push(ResolverEvent::Warning(warning));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reporter_accepts_everything() {
        let r: &dyn ResolverReporter = &NoReporter;
        let id = r.on_download_start("hello", Some(3));
        r.on_download_progress(id, 3);
        r.on_download_complete(id);
        assert_eq!(id, DownloadId(0));
    }

    #[test]
    fn recording_reporter_keeps_order_and_unique_ids() {
        let r = RecordingReporter::new();
        let a = r.on_download_start("a", None);
        let b = r.on_download_start("b", Some(1));
        assert_ne!(a, b);
        r.on_cache_hit("c");
        let events = r.events();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[2],
            ResolverEvent::CacheHit {
                name: "c".to_owned()
            }
        );
    }
}
