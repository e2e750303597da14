//! guest-init: the appliance's PID 1, one static binary in three roles.
//!
//! - **`/init` in the initramfs** (the file `/etc/jeos/initramfs` exists): mount the API
//!   filesystems, load the modules in `/lib/modules/jeos.list`, find `root=UUID=...`, mount
//!   it, switch root, exec `/sbin/init` (see `initramfs.rs`).
//! - **PID 1 in the root filesystem**: mount `/proc /sys /dev /dev/pts /dev/shm /run /tmp`,
//!   set the hostname, bring up the network, start and supervise the services of
//!   `/etc/jeos/init.json`, print the `JEOS1 ready` line, reap zombies, shut down cleanly.
//!   With `jeos.test=1` on the kernel command line it then runs the checks, prints one
//!   protocol line each and the summary, and powers off; when the configuration declares
//!   host checks it waits instead for the host's power-off request (bounded by the test
//!   timeout), so the services stay up while the host checks them from outside.
//! - **`poweroff` / `reboot` / `halt`** (argv[0]): ask PID 1 to shut down (`shutdown.rs`).
//!
//! `unsafe` lives in `sys.rs`, `net.rs`, `net6.rs`, `process.rs`, `vsock.rs`, `log.rs`
//! (system calls) and `vmware.rs` (the backdoor's `in` instruction) only. Deploy-time
//! configuration (OVF environment, VMware guestinfo, NoCloud, fw_cfg) is read in
//! `deployment.rs` before the host name and network are set.
#![cfg_attr(
    test,
    allow(
        clippy::too_many_lines,
        reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
    )
)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::exit,
    reason = "PID 1's console is its user interface, and the shutdown commands exit"
)]

mod cmdline;
mod deployment;
mod dhcp;
mod initramfs;
mod log;
mod modalias;
mod net;
mod net6;
mod phases;
mod probe;
mod process;
mod shutdown;
mod smbios;
mod supervisor;
mod sys;
mod task;
mod users;
mod vmware;
mod vsock;

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use guest_init::config::{CONFIG_PATH, InitConfig};
use guest_init::protocol::{self, CheckStatus};

use crate::cmdline::Cmdline;
use crate::log::info;
use crate::process::{ProcessTable, ReapMode};
use crate::shutdown::ShutdownKind;
use crate::supervisor::{Event, Outcome, Supervisor};

/// Signals PID 1 handles synchronously in its signal thread.
const HANDLED_SIGNALS: [libc::c_int; 6] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGHUP,
];

/// The device that carries protocol lines (`jeos.protocol=`), separate from the console.
static PROTOCOL_DEVICE: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Writes a protocol line to the protocol device; the console gets a log line without the
/// marker (so the console stays a log, and what services print there is never a result).
/// Without a protocol device (a hypervisor that has none) the line goes to the console.
fn emit(event: &protocol::Event) {
    let line = protocol::format(event);
    let Some(device) = PROTOCOL_DEVICE.get() else {
        log::line(&line);
        return;
    };
    info!("result: {}", line.trim_start_matches(protocol::MARKER));
    use std::io::Write;
    if let Ok(mut device) = device.lock() {
        let _ = device.write_all(format!("{line}\n").as_bytes());
    }
}

/// Opens the protocol device. In the root filesystem its node is then removed, so services
/// (which start later) do not find it by name.
fn open_protocol_device(cmdline: &Cmdline, hide: bool) {
    let Some(path) = &cmdline.protocol_device else {
        return;
    };
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => {
            let _ = PROTOCOL_DEVICE.set(Mutex::new(file));
            if hide && let Err(err) = std::fs::remove_file(path) {
                info!("cannot remove {path}: {err}");
            }
        }
        Err(err) => info!("cannot open the protocol device {path}: {err}"),
    }
}

fn main() {
    let argv0 = std::env::args_os()
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = argv0.rsplit('/').next().unwrap_or_default().to_owned();
    if let Some(kind) = ShutdownKind::from_program_name(&name) {
        match shutdown::request(kind) {
            Ok(()) => std::process::exit(0),
            Err(err) => {
                eprintln!("{name}: cannot signal init: {err}");
                std::process::exit(1);
            }
        }
    }
    if sys::getpid() != 1 {
        eprintln!("guest-init: must run as PID 1 (or be invoked as `poweroff`, `reboot`, `halt`)");
        std::process::exit(2);
    }
    initramfs::mount_api_filesystems();
    sys::ensure_stdio();
    // The kernel command line, plus the hypervisor's `jeos.*` OEM strings (firmware boot).
    let cmdline = Cmdline::parse(&format!(
        "{} {}",
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
        smbios::read_jeos_words()
    ));
    let started = log::since_boot();
    let in_initramfs = std::path::Path::new(initramfs::MARKER).exists();
    open_protocol_device(&cmdline, !in_initramfs);
    if in_initramfs {
        info!("initramfs stage: {}", cmdline_summary(&cmdline));
        let err = initramfs::run(&cmdline, started);
        fail(&cmdline, &format!("initramfs: {err}"));
    }
    run_system(&cmdline, started);
}

fn cmdline_summary(cmdline: &Cmdline) -> String {
    let root = match &cmdline.root {
        Some(cmdline::RootSpec::Uuid(uuid)) => format!("UUID={}", cmdline::format_uuid(uuid)),
        Some(cmdline::RootSpec::Path(path)) => path.clone(),
        None => "(none)".to_owned(),
    };
    format!(
        "root={root} {} test={}",
        if cmdline.rw { "rw" } else { "ro" },
        cmdline.test
    )
}

/// Reports a fatal boot error; powers off in test mode, otherwise stays up (a PID 1 that
/// exits panics the kernel) so the console shows the message.
fn fail(cmdline: &Cmdline, detail: &str) -> ! {
    info!("fatal: {detail}");
    emit(&protocol::Event::Error {
        detail: detail.to_owned(),
    });
    if cmdline.test {
        shutdown::finish(ShutdownKind::Poweroff, true);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn mount_system() {
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    let mounts: [(&str, &str, libc::c_ulong, &str); 4] = [
        (
            "devpts",
            "/dev/pts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "gid=5,mode=620,ptmxmode=666",
        ),
        ("tmpfs", "/dev/shm", nosuid_nodev, "mode=1777"),
        ("tmpfs", "/run", nosuid_nodev, "mode=755"),
        ("tmpfs", "/tmp", nosuid_nodev, "mode=1777"),
    ];
    for (fstype, target, flags, data) in mounts {
        if initramfs::is_mounted(target) {
            continue;
        }
        let _ = sys::ensure_dir(target);
        if let Err(err) = sys::mount(fstype, target, Some(fstype), flags, Some(data)) {
            info!("cannot mount {fstype} on {target}: {err}");
        }
    }
}

/// Creates the configured directories on the fresh `/run` and `/tmp`.
fn create_runtime_dirs(config: &InitConfig) {
    use std::os::unix::fs::PermissionsExt;
    for dir in &config.runtime_dirs {
        if !dir.is_allowed() {
            info!(
                "ignoring runtime directory {} (not below /run or /tmp)",
                dir.path
            );
            continue;
        }
        let path = std::path::Path::new(&dir.path);
        let parent = path.parent().unwrap_or(path);
        let created = if let Some(target) = &dir.symlink {
            std::fs::create_dir_all(parent)
                .and_then(|()| std::os::unix::fs::symlink(target, path))
                .and_then(|()| std::os::unix::fs::lchown(path, Some(dir.uid), Some(dir.gid)))
        } else {
            match &dir.content {
                Some(content) => {
                    std::fs::create_dir_all(parent).and_then(|()| std::fs::write(path, content))
                }
                None => std::fs::create_dir_all(path),
            }
            .and_then(|()| std::os::unix::fs::chown(path, Some(dir.uid), Some(dir.gid)))
            .and_then(|()| {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir.mode))
            })
        };
        if let Err(err) = created {
            info!("cannot create runtime directory {}: {err}", dir.path);
        }
    }
}

fn load_config(cmdline: &Cmdline) -> InitConfig {
    match std::fs::read_to_string(CONFIG_PATH) {
        Ok(text) => match InitConfig::from_json(&text) {
            Ok(config) => config,
            Err(err) => fail(cmdline, &format!("{CONFIG_PATH}: {err}")),
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            info!("no {CONFIG_PATH}, running without services");
            InitConfig::default()
        }
        Err(err) => fail(cmdline, &format!("cannot read {CONFIG_PATH}: {err}")),
    }
}

fn start_signal_thread(set: libc::sigset_t, table: Arc<ProcessTable>, events: Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let signal = match sys::wait_signal(&set) {
                    Ok(signal) => signal,
                    Err(err) => {
                        info!("sigwaitinfo failed: {err}");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                };
                if signal == libc::SIGCHLD {
                    table.reap();
                } else if let Some(kind) = ShutdownKind::from_signal(signal) {
                    info!("received signal {signal}, shutting down ({kind:?})");
                    let _ = events.send(Event::Shutdown(kind));
                }
            }
        });
    if let Err(err) = spawned {
        info!("cannot start the signal thread: {err}");
    }
}

fn run_system(cmdline: &Cmdline, started: Duration) -> ! {
    let mut phases = phases::at_root_start(started);
    let signals = sys::sigset(&HANDLED_SIGNALS);
    if let Err(err) = sys::block_signals(&signals) {
        info!("cannot block signals: {err}");
    }
    mount_system();
    // Ctrl-alt-del becomes SIGINT to us instead of an immediate reboot.
    let _ = sys::reboot(libc::RB_DISABLE_CAD);
    info!(
        "guest-init {} as PID 1{}",
        env!("CARGO_PKG_VERSION"),
        if cmdline.test { " (test mode)" } else { "" }
    );
    let config = load_config(cmdline);
    if config.root_rw
        && let Err(err) = sys::mount("none", "/", None, libc::MS_REMOUNT, None)
    {
        info!("cannot remount / read-write: {err}");
    }
    create_runtime_dirs(&config);
    let deployed = deployment::gather(&config);
    deployment::render_files(&config, &deployed);
    let hostname = deployed
        .settings
        .hostname
        .clone()
        .or_else(|| config.hostname.clone())
        .unwrap_or_else(|| "jeos".to_owned());
    if let Err(err) = sys::sethostname(&hostname) {
        info!("cannot set the hostname: {err}");
    }

    let table = ProcessTable::new(ReapMode::Any);
    let (tx, rx) = mpsc::channel();
    start_signal_thread(signals, Arc::clone(&table), tx.clone());
    shutdown::watch_power_button(&tx);
    let static_deploy = deployed.settings.is_static().then_some(&deployed.settings);
    if let Err(detail) = net::configure(
        &config.network,
        Some(&hostname),
        cmdline.no_nic,
        static_deploy,
    ) {
        info!("network: {detail}");
        // The appliance asked for a network it did not get: it is not ready.
        fail(cmdline, &format!("network: {detail}"));
    }
    vsock::start_forwarders(&cmdline.forward_ports);
    if cmdline.vsock_control {
        vsock::start_control(&tx);
    }

    let order = match config.start_order() {
        Ok(order) => order,
        Err(err) => fail(cmdline, &err.to_string()),
    };
    let mut supervisor = Supervisor::with_tasks(
        config.units(),
        task::specs(&config),
        order,
        Arc::clone(&table),
        tx.clone(),
    );
    let kind = event_loop(
        cmdline,
        &mut phases,
        &config,
        &hostname,
        &mut supervisor,
        &table,
        &tx,
        &rx,
    );
    supervisor.stop_all(&rx, Duration::from_millis(config.shutdown_timeout_ms));
    shutdown::finish(kind, cmdline.test)
}

#[expect(clippy::too_many_arguments, reason = "the state of PID 1's main loop")]
fn event_loop(
    cmdline: &Cmdline,
    phases: &mut protocol::BootPhases,
    config: &InitConfig,
    hostname: &str,
    supervisor: &mut Supervisor,
    table: &Arc<ProcessTable>,
    tx: &Sender<Event>,
    rx: &Receiver<Event>,
) -> ShutdownKind {
    let mut checks_deadline: Option<Instant> = None;
    // Set once the guest's own checks are done while the host still has checks to run.
    let mut host_turn = false;
    loop {
        let mut outcome = supervisor.poll();
        if phases.services_ms == 0 && supervisor.all_started() {
            phases.services_ms = phases::millis(log::since_boot());
        }
        if outcome.is_none() {
            let mut wait = Duration::from_secs(60);
            for deadline in [supervisor.next_deadline(), checks_deadline]
                .into_iter()
                .flatten()
            {
                wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            }
            match rx.recv_timeout(wait) {
                Ok(Event::Shutdown(kind)) => return kind,
                Ok(Event::ChecksDone) if config.host_checks.is_empty() => {
                    return ShutdownKind::Poweroff;
                }
                Ok(Event::ChecksDone) => {
                    // The host runs its checks through a forwarded port now; it releases
                    // the guest with a power-off request (power button, vsock control port).
                    info!(
                        "waiting for the host's {} check{} (power-off request ends the test)",
                        config.host_checks.len(),
                        if config.host_checks.len() == 1 {
                            ""
                        } else {
                            "s"
                        }
                    );
                    host_turn = true;
                }
                Ok(event) => outcome = supervisor.handle(&event),
                Err(_) => {}
            }
        }
        if checks_deadline.is_some_and(|d| Instant::now() >= d) {
            let detail = if host_turn {
                format!(
                    "the host did not finish its checks (no power-off request) within {} ms",
                    config.test_timeout_ms
                )
            } else {
                format!("checks did not finish within {} ms", config.test_timeout_ms)
            };
            emit(&protocol::Event::Error { detail });
            return ShutdownKind::Poweroff;
        }
        match outcome {
            None => {}
            Some(Outcome::AllReady) => {
                let boot = log::since_boot();
                emit(&protocol::Event::Ready {
                    boot_ms: phases::millis(boot),
                    phases: *phases,
                });
                log::line(&format!(
                    "jeos: {hostname} ready in {}.{:02}s",
                    boot.as_secs(),
                    boot.subsec_millis() / 10
                ));
                if cmdline.test {
                    checks_deadline =
                        Some(Instant::now() + Duration::from_millis(config.test_timeout_ms));
                    start_checks(config, supervisor, table, tx);
                }
            }
            Some(Outcome::NotReady { service, detail }) => {
                info!(
                    "{service} did not become ready (not ready: {})",
                    supervisor.unready().join(", ")
                );
                emit(&protocol::Event::Error { detail });
                if cmdline.test {
                    return ShutdownKind::Poweroff;
                }
            }
        }
    }
}

fn start_checks(
    config: &InitConfig,
    supervisor: &Supervisor,
    table: &Arc<ProcessTable>,
    tx: &Sender<Event>,
) {
    let checks = config.checks.clone();
    let running = supervisor.running();
    let table = Arc::clone(table);
    let done = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("checks".into())
        .spawn(move || {
            let (mut passed, mut failed) = (0u32, 0u32);
            for (index, check) in checks.iter().enumerate() {
                let started = Instant::now();
                let (ok, detail) = probe::run_check(check, &table, &running);
                if ok {
                    passed += 1;
                } else {
                    failed += 1;
                }
                emit(&protocol::Event::Check {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    status: if ok {
                        CheckStatus::Pass
                    } else {
                        CheckStatus::Fail
                    },
                    ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    name: check.name.clone(),
                    detail,
                });
            }
            emit(&protocol::Event::Done { passed, failed });
            let _ = done.send(Event::ChecksDone);
        });
    if let Err(err) = spawned {
        emit(&protocol::Event::Error {
            detail: format!("cannot start the checks thread: {err}"),
        });
        let _ = tx.send(Event::ChecksDone);
    }
}
