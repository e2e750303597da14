//! `from = "host"` checks: `jeos test` runs them on the host, against the appliance's
//! ports forwarded to the host's 127.0.0.1 (embedded runner: vsock and guest-init's relay;
//! QEMU: user-network `hostfwd`), so a test proves the service answers from outside the
//! guest, not only on the guest's own loopback.
//!
//! The hand-shake: the image's `init.json` lists the host checks apart from the guest's
//! (`host_checks`), so guest-init never runs them; in test mode it reports its own checks
//! and `done`, then stays up. [`HostChecks::prepare`] picks one free host port per distinct
//! guest port before the VM starts; [`GuestDoneReporter`] sees the `done` event; the host
//! checks run (each with the check's timeout, like the guest's); then the run's
//! [`test_vm::PowerButton`] is pressed (the ACPI power button: QMP `system_powerdown`
//! under QEMU, the embedded runner's GED) and the guest powers off cleanly. A guest the host
//! never releases powers off at the test timeout with an `error` line.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use guest_init::config::{CheckConfig, CheckKind};
use guest_init::protocol::Event;
use test_vm::{PortForward, RunReporter, VmmKind};

use crate::boot::CheckResult;
use crate::recipe::CheckFrom;

/// How long a TCP check watches a fresh connection: a forward (vsock relay, QEMU's
/// `hostfwd`) accepts on the host at once and closes the connection when nothing in the
/// guest accepts it, so "connected" alone proves nothing.
const TCP_SETTLE: Duration = Duration::from_millis(750);

/// The host checks of one run and the forwards they go through.
#[derive(Debug, Clone)]
pub struct HostChecks {
    checks: Vec<CheckConfig>,
    forwards: Vec<PortForward>,
}

/// The guest port a host check targets (`None` for kinds the host cannot run; recipe
/// validation allows only `http` and `tcp`).
fn guest_port(check: &CheckConfig) -> Option<u16> {
    match &check.kind {
        CheckKind::Http(http) => Some(http.port),
        CheckKind::Tcp(tcp) => Some(tcp.port),
        CheckKind::Command(_) | CheckKind::File(_) | CheckKind::Service(_) => None,
    }
}

/// A port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

impl HostChecks {
    /// Picks a free 127.0.0.1 port for every distinct guest port the checks target.
    ///
    /// # Errors
    ///
    /// When no port can be bound on 127.0.0.1.
    pub fn prepare(checks: Vec<CheckConfig>) -> io::Result<Self> {
        let mut forwards: Vec<PortForward> = Vec::new();
        for guest in checks.iter().filter_map(guest_port) {
            if forwards.iter().any(|f| f.guest == guest) {
                continue;
            }
            let host = loop {
                let port = free_port()?;
                // Two picks in a row may return the same port: it is free again.
                if !forwards.iter().any(|f| f.host == port) {
                    break port;
                }
            };
            forwards.push(PortForward { host, guest });
        }
        Ok(Self { checks, forwards })
    }

    /// The forwards the run must set up (`RunConfig::port_forwards`).
    #[must_use]
    pub fn forwards(&self) -> &[PortForward] {
        &self.forwards
    }

    /// How many checks there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.checks.len()
    }

    /// No checks at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Runs every check, in order, through its forward.
    #[must_use]
    pub fn run(&self) -> Vec<CheckResult> {
        self.checks
            .iter()
            .map(|check| {
                let host = guest_port(check)
                    .and_then(|g| self.forwards.iter().find(|f| f.guest == g))
                    .map(|f| f.host);
                run_check(check, host)
            })
            .collect()
    }
}

fn result(check: &CheckConfig, passed: bool, ms: u64, detail: String) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        passed,
        ms,
        detail,
        from: CheckFrom::Host,
    }
}

/// Runs one host check against 127.0.0.1:`host_port` (the forward of its guest port).
#[must_use]
pub fn run_check(check: &CheckConfig, host_port: Option<u16>) -> CheckResult {
    let started = Instant::now();
    let timeout = Duration::from_millis(check.timeout_ms());
    let (Some(guest), Some(host)) = (guest_port(check), host_port) else {
        return result(
            check,
            false,
            0,
            "only `http` and `tcp` checks can run from the host".into(),
        );
    };
    let via = format!("127.0.0.1:{host} → guest port {guest}");
    let verdict = match &check.kind {
        CheckKind::Http(http) => guest_init::http::get(host, &http.path, timeout).and_then(|r| {
            guest_init::http::judge_response(&r, http.status, http.body_contains.as_deref())
        }),
        _ => tcp_open(host, guest, timeout),
    };
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match verdict {
        Ok(seen) => result(check, true, ms, format!("{seen} (from the host, {via})")),
        Err(seen) => result(check, false, ms, format!("from the host ({via}): {seen}")),
    }
}

/// Connects and watches the connection for [`TCP_SETTLE`] (or the timeout, if shorter):
/// open or talking means the guest accepted; closed at once means nothing did.
fn tcp_open(host: u16, guest: u16, timeout: Duration) -> Result<String, String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, host));
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| format!("expected port {guest} open, cannot connect to {address}: {e}"))?;
    let settle = TCP_SETTLE.min(timeout);
    stream
        .set_read_timeout(Some(settle))
        .map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => Err(format!(
            "expected port {guest} open, the connection was closed at once (nothing in the guest accepts port {guest})"
        )),
        Ok(_) => Ok(format!("port {guest} open")),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(format!("port {guest} open"))
        }
        Err(e) => Err(format!(
            "expected port {guest} open, the connection failed: {e}"
        )),
    }
}

/// Passes every event on to `inner` and says on `done` when the guest's `done` line
/// arrives (the host checks' turn).
pub struct GuestDoneReporter {
    inner: Arc<dyn RunReporter>,
    done: Mutex<Option<Sender<bool>>>,
}

impl GuestDoneReporter {
    /// Sends `true` on `done` once, at the guest's `done` event.
    pub fn new(inner: Arc<dyn RunReporter>, done: Sender<bool>) -> Self {
        Self {
            inner,
            done: Mutex::new(Some(done)),
        }
    }
}

impl RunReporter for GuestDoneReporter {
    fn on_vmm_selected(&self, vmm: VmmKind, reason: &str) {
        self.inner.on_vmm_selected(vmm, reason);
    }

    fn on_console_line(&self, line: &str) {
        self.inner.on_console_line(line);
    }

    fn on_protocol_event(&self, event: &Event) {
        self.inner.on_protocol_event(event);
        if matches!(event, Event::Done { .. })
            && let Some(done) = self
                .done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        {
            let _ = done.send(true);
        }
    }

    fn on_device_warning(&self, warning: &str) {
        self.inner.on_device_warning(warning);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use guest_init::config::{HttpCheckConfig, TcpCheckConfig};

    use super::*;

    /// A one-shot HTTP server on 127.0.0.1 answering `response` to every connection.
    fn serve(response: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(response.as_bytes());
            }
        });
        port
    }

    fn http(port: u16, status: u16, body_contains: Option<&str>) -> CheckConfig {
        CheckConfig::new(
            "serves the page from outside",
            CheckKind::Http(HttpCheckConfig {
                port,
                path: "/".into(),
                status,
                body_contains: body_contains.map(str::to_owned),
            }),
        )
    }

    const PAGE: &str =
        "HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\nhello from jeos";

    #[test]
    fn http_check_passes() {
        let port = serve(PAGE);
        let r = run_check(&http(80, 200, Some("hello")), Some(port));
        assert!(r.passed, "{r:?}");
        assert_eq!(r.from, CheckFrom::Host);
        assert!(r.detail.contains("status 200, 15 bytes"), "{}", r.detail);
        assert!(
            r.detail
                .contains(&format!("127.0.0.1:{port} → guest port 80"))
        );
    }

    #[test]
    fn http_check_wrong_status() {
        let port = serve("HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope");
        let r = run_check(&http(80, 200, None), Some(port));
        assert!(!r.passed);
        assert!(
            r.detail.ends_with("expected status 200, got 404: nope"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn http_check_missing_body_text() {
        let port = serve(PAGE);
        let r = run_check(&http(80, 200, Some("goodbye")), Some(port));
        assert!(!r.passed);
        assert!(
            r.detail
                .ends_with("body does not contain `goodbye`: hello from jeos"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn refused_connections_fail() {
        let port = free_port().unwrap();
        let r = run_check(&http(80, 200, None), Some(port));
        assert!(!r.passed);
        assert!(r.detail.contains("cannot connect"), "{}", r.detail);
        let tcp = CheckConfig::new("tcp", CheckKind::Tcp(TcpCheckConfig { port: 6379 }));
        let r = run_check(&tcp, Some(port));
        assert!(!r.passed);
        assert!(r.detail.contains("expected port 6379 open"), "{}", r.detail);
    }

    #[test]
    fn tcp_check_needs_the_connection_to_stay_open() {
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = open.local_addr().unwrap().port();
        // Accepts and holds the connection, as a listening guest service does.
        let holder = std::thread::spawn(move || open.accept().map(|(s, _)| s));
        let tcp = CheckConfig::new("tcp", CheckKind::Tcp(TcpCheckConfig { port: 6379 }));
        let r = run_check(&tcp, Some(port));
        assert!(r.passed, "{r:?}");
        drop(holder.join());

        // A forward whose guest side refused: accepted, then closed at once.
        let closing = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closing.local_addr().unwrap().port();
        std::thread::spawn(move || drop(closing.accept()));
        let r = run_check(&tcp, Some(port));
        assert!(!r.passed);
        assert!(r.detail.contains("closed at once"), "{}", r.detail);
    }

    #[test]
    fn one_forward_per_guest_port() {
        let checks = vec![
            http(80, 200, None),
            http(80, 404, None),
            CheckConfig::new("tcp", CheckKind::Tcp(TcpCheckConfig { port: 443 })),
        ];
        let plan = HostChecks::prepare(checks).unwrap();
        let guests: Vec<u16> = plan.forwards().iter().map(|f| f.guest).collect();
        assert_eq!(guests, [80, 443]);
        assert_ne!(plan.forwards()[0].host, plan.forwards()[1].host);
        assert_eq!(plan.len(), 3);
    }

    #[test]
    fn done_event_is_signalled_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        let reporter = GuestDoneReporter::new(Arc::new(test_vm::NoReporter), tx);
        reporter.on_protocol_event(&Event::Error { detail: "x".into() });
        assert!(rx.try_recv().is_err());
        let done = Event::Done {
            passed: 1,
            failed: 0,
        };
        reporter.on_protocol_event(&done);
        reporter.on_protocol_event(&done);
        assert_eq!(rx.try_recv(), Ok(true));
        assert!(rx.try_recv().is_err());
    }
}
