//! Readiness probes and test checks: both ask "is the appliance doing X?" from inside the
//! guest, against 127.0.0.1.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guest_init::config::{CheckConfig, CheckKind, Probe};
use guest_init::http::{self, shorten};

use crate::process::{Launch, ProcessTable, describe_status, exit_code, run_command};

/// Which services are running right now (for `service` checks).
pub type RunningServices = Arc<Mutex<BTreeMap<String, bool>>>;

/// Connects to 127.0.0.1:`port`.
pub fn tcp_connect(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

fn launch(argv: &[String]) -> Launch {
    Launch {
        argv: argv.to_vec(),
        ..Launch::default()
    }
}

/// Runs a readiness probe once.
pub fn probe_once(probe: &Probe, table: &ProcessTable, timeout: Duration) -> Result<(), String> {
    match probe {
        Probe::Tcp(port) => tcp_connect(*port, timeout),
        Probe::File(path) => {
            if Path::new(path).exists() {
                Ok(())
            } else {
                Err(format!("`{path}` does not exist"))
            }
        }
        Probe::Command(argv) => {
            let out = run_command(table, &launch(argv), timeout)?;
            if exit_code(out.status) == Some(0) {
                Ok(())
            } else {
                Err(format!(
                    "`{}` ended with {}",
                    argv.join(" "),
                    describe_status(out.status)
                ))
            }
        }
        Probe::Http(target) => {
            let response = http::get(target.port, &target.path, timeout)?;
            if (200..400).contains(&response.status) {
                Ok(())
            } else {
                Err(format!("HTTP status {}", response.status))
            }
        }
    }
}

/// How often a readiness probe is retried.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `probe` every [`PROBE_INTERVAL`] until it succeeds or `timeout` elapses; the error is the
/// last probe failure.
pub fn wait_ready(probe: &Probe, table: &ProcessTable, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = probe_once(
            probe,
            table,
            left.clamp(Duration::from_millis(10), Duration::from_secs(2)),
        );
        match attempt {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => std::thread::sleep(PROBE_INTERVAL.min(left)),
        }
    }
}

/// Runs one check; returns pass/fail and a detail for the result line.
pub fn run_check(
    check: &CheckConfig,
    table: &ProcessTable,
    running: &RunningServices,
) -> (bool, String) {
    let timeout = Duration::from_millis(check.timeout_ms());
    let result: Result<String, String> = match &check.kind {
        CheckKind::Tcp(tcp) => {
            tcp_connect(tcp.port, timeout).map(|()| format!("port {} open", tcp.port))
        }
        CheckKind::File(file) => {
            if Path::new(&file.path).exists() {
                Ok(format!("`{}` exists", file.path))
            } else {
                Err(format!("`{}` does not exist", file.path))
            }
        }
        CheckKind::Service(svc) => {
            let up = running
                .lock()
                .map(|map| map.get(&svc.name).copied().unwrap_or(false))
                .unwrap_or(false);
            if up {
                Ok(format!("service `{}` is running", svc.name))
            } else {
                Err(format!("service `{}` is not running", svc.name))
            }
        }
        CheckKind::Http(h) => http::get(h.port, &h.path, timeout).and_then(|response| {
            http::judge_response(&response, h.status, h.body_contains.as_deref())
        }),
        CheckKind::Command(c) => run_command(table, &launch(&c.run), timeout).and_then(|out| {
            if exit_code(out.status) != Some(c.exit_code) {
                Err(format!(
                    "expected exit status {}, got {}: {}",
                    c.exit_code,
                    describe_status(out.status),
                    shorten(out.output.trim_end(), 200)
                ))
            } else if let Some(needle) = c
                .stdout_contains
                .as_deref()
                .filter(|n| !out.output.contains(n))
            {
                Err(format!(
                    "output does not contain `{needle}`: {}",
                    shorten(out.output.trim_end(), 200)
                ))
            } else {
                Ok(describe_status(out.status))
            }
        }),
    };
    match result {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ReapMode;
    use guest_init::config::{
        CommandCheckConfig, FileCheckConfig, HttpCheckConfig, HttpProbeConfig, ServiceCheckConfig,
        TcpCheckConfig,
    };
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Serves `response` to every connection on an ephemeral 127.0.0.1 port.
    fn serve(response: &'static [u8]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(response);
            }
        });
        port
    }

    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    fn check(name: &str, kind: CheckKind) -> CheckConfig {
        CheckConfig {
            timeout_ms: Some(2_000),
            ..CheckConfig::new(name, kind)
        }
    }

    fn table() -> Arc<ProcessTable> {
        let table = ProcessTable::new(ReapMode::Registered);
        table.spawn_polling_reaper();
        table
    }

    #[test]
    fn http_check_against_local_server() {
        let port = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nhello from jeos");
        let running = RunningServices::default();
        let mut http = HttpCheckConfig {
            port,
            path: "/".into(),
            status: 200,
            body_contains: Some("from jeos".into()),
        };
        let c = check("page", CheckKind::Http(http.clone()));
        let (ok, detail) = run_check(&c, &table(), &running);
        assert!(ok, "{detail}");
        http.body_contains = Some("nginx".into());
        let c = check("page", CheckKind::Http(http.clone()));
        let (ok, detail) = run_check(&c, &table(), &running);
        assert!(
            !ok && detail.contains("does not contain `nginx`"),
            "{detail}"
        );
        http.status = 404;
        let c = check("page", CheckKind::Http(http));
        let (ok, detail) = run_check(&c, &table(), &running);
        assert!(
            !ok && detail.contains("expected status 404, got 200"),
            "{detail}"
        );
    }

    #[test]
    fn http_probe_accepts_redirects_and_rejects_errors() {
        let t = table();
        let ok = serve(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n");
        let probe = |port| {
            Probe::Http(HttpProbeConfig {
                port,
                path: "/health".into(),
            })
        };
        assert_eq!(probe_once(&probe(ok), &t, Duration::from_secs(2)), Ok(()));
        let bad = serve(b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(
            probe_once(&probe(bad), &t, Duration::from_secs(2)),
            Err("HTTP status 503".into())
        );
    }

    #[test]
    fn tcp_probe_waits_for_listener() {
        let port = closed_port();
        let t = table();
        assert!(probe_once(&Probe::Tcp(port), &t, Duration::from_secs(1)).is_err());
        let started = Instant::now();
        let err = wait_ready(&Probe::Tcp(port), &t, Duration::from_millis(300));
        assert!(err.is_err() && started.elapsed() >= Duration::from_millis(300));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("rebind");
            std::thread::sleep(Duration::from_secs(3));
            drop(listener);
        });
        assert_eq!(
            wait_ready(&Probe::Tcp(port), &t, Duration::from_secs(3)),
            Ok(())
        );
    }

    #[test]
    fn command_file_tcp_and_service_checks() {
        let t = table();
        let running = RunningServices::default();
        running.lock().expect("lock").insert("web".into(), true);
        let mut command = CommandCheckConfig {
            run: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo version 1.2; exit 4".into(),
            ],
            exit_code: 4,
            stdout_contains: Some("version 1.2".into()),
        };
        let c = check("cmd", CheckKind::Command(command.clone()));
        assert!(run_check(&c, &t, &running).0);
        command.exit_code = 0;
        let c = check("cmd", CheckKind::Command(command));
        let (ok, detail) = run_check(&c, &t, &running);
        assert!(
            !ok && detail.contains("expected exit status 0, got exit status 4"),
            "{detail}"
        );

        let f = check(
            "file",
            CheckKind::File(FileCheckConfig {
                path: "/nonexistent/x".into(),
            }),
        );
        assert!(!run_check(&f, &t, &running).0);
        let f = check(
            "file",
            CheckKind::File(FileCheckConfig { path: "/".into() }),
        );
        assert!(run_check(&f, &t, &running).0);

        let p = check(
            "tcp",
            CheckKind::Tcp(TcpCheckConfig {
                port: closed_port(),
            }),
        );
        assert!(!run_check(&p, &t, &running).0);

        let s = check(
            "svc",
            CheckKind::Service(ServiceCheckConfig { name: "web".into() }),
        );
        assert!(run_check(&s, &t, &running).0);
        let s = check(
            "svc",
            CheckKind::Service(ServiceCheckConfig { name: "db".into() }),
        );
        assert!(!run_check(&s, &t, &running).0);
        // A check naming no kind (or two) is not representable: `init.json` with one is
        // rejected when parsed (`config::tests::rejects_unknown_keys_and_bad_kinds`).
    }
}
