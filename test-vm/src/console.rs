//! Serial capture shared by both backends, for two ports:
//!
//! - the **console** (COM1, [`ConsoleCapture::create`]): every byte goes to the log file,
//!   the optional echo writer and a bounded tail; complete lines are scanned for
//!   `Kernel panic`. It is a log: nothing on it is taken as a result, so a service that
//!   prints protocol lines changes nothing;
//! - the **protocol channel** (COM2, [`ConsoleCapture::protocol`]): complete lines are
//!   parsed as smoke-test protocol lines (`guest_init::protocol`); only guest-init writes
//!   there.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use guest_init::protocol::{Event, parse_line};

use crate::config::RunReporter;

/// Bytes of console kept for [`crate::RunOutcome::console_tail`].
pub const TAIL_BYTES: usize = 16 * 1024;
/// Longest line scanned; longer ones are split (a guest cannot make us buffer unboundedly).
pub const MAX_LINE_BYTES: usize = 4096;
/// Marker of a Linux panic.
pub const PANIC_MARKER: &str = "Kernel panic";

/// Errors of the console capture.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The log file cannot be created.
    #[error("cannot create console log `{path}`")]
    Create {
        /// Log path.
        path: std::path::PathBuf,
        /// IO error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything observed on the console so far.
pub struct ConsoleState {
    log: Option<BufWriter<File>>,
    /// This capture is the protocol channel (parse lines as results).
    protocol: bool,
    echo: Option<Box<dyn Write + Send>>,
    tail: VecDeque<u8>,
    line: Vec<u8>,
    started: Instant,
    /// Time of the first byte since start.
    pub first_byte_at: Option<Duration>,
    /// When a panic line was seen.
    pub panic_at: Option<Instant>,
    /// Protocol events.
    pub events: Vec<Event>,
    /// When (since start) the `ready` event arrived.
    pub ready_at: Option<Duration>,
    /// Malformed protocol lines.
    pub protocol_errors: Vec<String>,
    /// First IO error writing the log or echo (reported at the end).
    pub write_error: Option<std::io::Error>,
    reporter: Arc<dyn RunReporter>,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl ConsoleState {
    fn push(&mut self, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        if self.first_byte_at.is_none() {
            self.first_byte_at = Some(self.started.elapsed());
        }
        if let Some(log) = self.log.as_mut()
            && let Err(e) = log.write_all(buf)
        {
            self.write_error.get_or_insert(e);
        }
        if let Some(echo) = self.echo.as_mut()
            && let Err(e) = echo.write_all(buf).and_then(|()| echo.flush())
        {
            self.write_error.get_or_insert(e);
        }
        self.tail.extend(buf);
        let excess = self.tail.len().saturating_sub(TAIL_BYTES);
        self.tail.drain(..excess);
        for &byte in buf {
            if byte == b'\n' || self.line.len() >= MAX_LINE_BYTES {
                self.finish_line();
                if byte == b'\n' {
                    continue;
                }
            }
            self.line.push(byte);
        }
    }

    fn finish_line(&mut self) {
        let raw = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches('\r');
        if !self.protocol {
            self.reporter.on_console_line(text);
            if text.contains(PANIC_MARKER) && self.panic_at.is_none() {
                self.panic_at = Some(Instant::now());
            }
            return;
        }
        if text.is_empty() {
            return;
        }
        match parse_line(text) {
            Some(Ok(event)) => {
                if matches!(event, Event::Ready { .. }) && self.ready_at.is_none() {
                    self.ready_at = Some(self.started.elapsed());
                }
                self.reporter.on_protocol_event(&event);
                self.events.push(event);
            }
            Some(Err(error)) => self.protocol_errors.push(format!("{text}: {error}")),
            None => self
                .protocol_errors
                .push(format!("{text}: not a protocol line")),
        }
    }

    /// Flushes a partial last line and the log file.
    pub fn finish(&mut self) {
        if !self.line.is_empty() {
            self.finish_line();
        }
        if let Some(log) = self.log.as_mut()
            && let Err(e) = log.flush()
        {
            self.write_error.get_or_insert(e);
        }
    }

    /// The tail, lossily decoded.
    #[must_use]
    pub fn tail(&self) -> String {
        let (a, b) = self.tail.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// A cloneable writer feeding one [`ConsoleState`].
#[derive(Clone)]
pub struct ConsoleCapture {
    state: Arc<Mutex<ConsoleState>>,
}

impl std::fmt::Debug for ConsoleCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleCapture").finish_non_exhaustive()
    }
}

impl ConsoleCapture {
    /// Creates (truncates) the log at `path`; first-byte times are measured from `started`
    /// (the start of the run).
    ///
    /// # Errors
    ///
    /// [`ConsoleError::Create`].
    pub fn create(
        path: &Path,
        echo: Option<Box<dyn Write + Send>>,
        reporter: Arc<dyn RunReporter>,
        started: Instant,
    ) -> Result<Self, ConsoleError> {
        let file = File::create(path).map_err(|source| ConsoleError::Create {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new(
            Some(BufWriter::new(file)),
            false,
            echo,
            reporter,
            started,
        ))
    }

    /// The protocol channel: lines are parsed as results, nothing is written anywhere.
    #[must_use]
    pub fn protocol(reporter: Arc<dyn RunReporter>, started: Instant) -> Self {
        Self::new(None, true, None, reporter, started)
    }

    fn new(
        log: Option<BufWriter<File>>,
        protocol: bool,
        echo: Option<Box<dyn Write + Send>>,
        reporter: Arc<dyn RunReporter>,
        started: Instant,
    ) -> Self {
        Self {
            state: Arc::new(Mutex::new(ConsoleState {
                log,
                protocol,
                echo,
                tail: VecDeque::with_capacity(TAIL_BYTES),
                line: Vec::new(),
                started,
                first_byte_at: None,
                panic_at: None,
                events: Vec::new(),
                ready_at: None,
                protocol_errors: Vec::new(),
                write_error: None,
                reporter,
            })),
        }
    }

    /// Locks the state (a poisoned lock still yields the data: capture never panics while
    /// holding it, and the data stays consistent byte by byte).
    pub fn lock(&self) -> MutexGuard<'_, ConsoleState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Write for ConsoleCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoReporter;

    #[derive(Default)]
    struct Recording(Mutex<Vec<String>>);

    impl RunReporter for Recording {
        fn on_console_line(&self, line: &str) {
            self.0.lock().unwrap().push(format!("line {line}"));
        }
        fn on_protocol_event(&self, event: &Event) {
            self.0.lock().unwrap().push(format!("event {event:?}"));
        }
    }

    #[test]
    fn console_is_a_log_and_forged_results_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let reporter = Arc::new(Recording::default());
        let mut capture =
            ConsoleCapture::create(&path, None, reporter.clone(), Instant::now()).unwrap();
        capture
            .write_all(
                b"[    0.1] Linux version\r\n[  1.0] x JEOS1 done passed=9 failed=0\r\nJEOS1 bad\n",
            )
            .unwrap();
        capture
            .write_all(b"Kernel panic - not syncing: VFS\npartial")
            .unwrap();
        let mut state = capture.lock();
        state.finish();
        assert!(state.events.is_empty(), "the console carries no results");
        assert!(state.protocol_errors.is_empty());
        assert!(state.panic_at.is_some());
        assert!(state.first_byte_at.is_some());
        assert!(state.tail().ends_with("VFS\npartial"));
        drop(state);
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(log.starts_with("[    0.1] Linux version\r\n"));
        let seen = reporter.0.lock().unwrap().clone();
        assert_eq!(seen[0], "line [    0.1] Linux version");
        assert_eq!(seen.last().unwrap(), "line partial");
        assert!(!seen.iter().any(|l| l.starts_with("event")));
    }

    #[test]
    fn protocol_channel_parses_results() {
        let reporter = Arc::new(Recording::default());
        let mut capture = ConsoleCapture::protocol(reporter.clone(), Instant::now());
        capture
            .write_all(b"JEOS1 ready boot_ms=12 cpus=2 initramfs_ms=3 root_ms=5 services_ms=6\r\n\r\nJEOS1 done passed=x failed=0\nnoise\n")
            .unwrap();
        let mut state = capture.lock();
        state.finish();
        assert!(matches!(
            state.events[..],
            [Event::Ready { boot_ms: 12, phases }] if phases.cpus == 2 && phases.root_ms == 5
        ));
        assert!(state.ready_at.is_some());
        assert_eq!(
            state.protocol_errors.len(),
            2,
            "{:?}",
            state.protocol_errors
        );
        assert!(state.panic_at.is_none());
        let seen = reporter.0.lock().unwrap().clone();
        assert!(seen[0].starts_with("event Ready"), "{seen:?}");
        assert_eq!(seen.len(), 1, "protocol lines are not console lines");
    }

    #[test]
    fn long_lines_are_split_and_tail_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut capture = ConsoleCapture::create(
            &dir.path().join("log"),
            None,
            Arc::new(NoReporter),
            Instant::now(),
        )
        .unwrap();
        capture.write_all(&vec![b'a'; 3 * TAIL_BYTES]).unwrap();
        let state = capture.lock();
        assert_eq!(state.tail().len(), TAIL_BYTES);
        assert!(state.line.len() <= MAX_LINE_BYTES);
    }

    #[test]
    fn unwritable_log_is_an_error() {
        let err = ConsoleCapture::create(
            Path::new("/nonexistent/dir/log"),
            None,
            Arc::new(NoReporter),
            Instant::now(),
        )
        .unwrap_err();
        assert!(matches!(err, ConsoleError::Create { .. }));
    }
}
