//! QEMU backend: `qemu-system-x86_64` with the same [`RunConfig`] → [`RunOutcome`] contract
//! as the embedded runner.
//!
//! * KVM when the host can boot Linux under it, else TCG;
//! * direct kernel boot (`-kernel -initrd -append`) or firmware boot of the whole disk
//!   (SeaBIOS, or OVMF from pflash with a private copy of the variable store);
//! * the disk is a virtio disk with `snapshot=on`: writes go to a temporary overlay and the
//!   image is never modified;
//! * the serial console is QEMU's stdout (`-serial stdio`), fed into the same
//!   [`ConsoleCapture`] as the embedded runner; the protocol channel is a second serial
//!   port (COM2, `-serial file:` in the scratch directory), tailed into its own capture;
//! * `-no-reboot`: a guest reset ends QEMU; the QMP `SHUTDOWN` event's `reason`
//!   (`guest-shutdown`, `guest-reset`, `guest-panic`) tells power-off from reset;
//! * a pvpanic device: a guest panic is the `guest-panic` shutdown at once;
//! * user networking with `hostfwd` for each port forward, otherwise no NIC.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{
    DiskBus, ExitReason, Firmware, PROTOCOL_FLAG, RunConfig, RunOutcome, RunReporter,
    SMOKE_TEST_FLAG, VmmKind,
};
use crate::console::{ConsoleCapture, ConsoleError};
use crate::devices::ged::PowerButton;
use crate::runner::PANIC_GRACE;

/// The QEMU binary.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// OVMF code images, in order of preference.
pub const OVMF_CODE: [&str; 2] = [
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_CODE.fd",
];
/// OVMF variable-store templates matching [`OVMF_CODE`].
pub const OVMF_VARS: [&str; 2] = [
    "/usr/share/OVMF/OVMF_VARS_4M.fd",
    "/usr/share/OVMF/OVMF_VARS.fd",
];

/// Errors that prevent QEMU from running.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// Neither a kernel nor firmware boot was requested.
    #[error("qemu needs a kernel (direct boot) or `firmware` with a disk")]
    NothingToBoot,
    /// Firmware boot without a disk.
    #[error("firmware boot needs a disk image")]
    NoDisk,
    /// OVMF is not installed.
    #[error("UEFI firmware not found (looked for {looked_for})")]
    NoOvmf {
        /// Paths tried.
        looked_for: String,
    },
    /// A path is not valid for a QEMU option (contains a comma).
    #[error("path `{path}` contains a comma, which QEMU options cannot carry")]
    UnsupportedPath {
        /// The path.
        path: PathBuf,
    },
    /// The scratch directory or OVMF vars copy failed.
    #[error("cannot prepare `{path}`")]
    Io {
        /// The path.
        path: PathBuf,
        /// IO error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU cannot be started.
    #[error("cannot start `{QEMU_BINARY}`")]
    Spawn(#[source] std::io::Error),
    /// The console log.
    #[error("cannot capture the console")]
    Console(#[source] ConsoleError),
}

fn option_path(path: &Path) -> Result<String, QemuError> {
    let text = path.to_string_lossy();
    if text.contains(',') {
        return Err(QemuError::UnsupportedPath {
            path: path.to_owned(),
        });
    }
    Ok(text.into_owned())
}

/// Disk format from the image's magic (qcow2 or raw).
#[must_use]
pub fn detect_format(path: &Path) -> &'static str {
    let mut magic = [0u8; 4];
    let is_qcow2 = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"QFI\xfb";
    if is_qcow2 { "qcow2" } else { "raw" }
}

/// The full QEMU command line (pure apart from the disk-format probe); `scratch` holds
/// the QMP socket and the OVMF variable store.
///
/// # Errors
///
/// [`QemuError`] for configurations QEMU cannot express.
pub fn qemu_args(
    config: &RunConfig,
    kvm: bool,
    scratch: &Path,
    ovmf: Option<(&Path, &Path)>,
) -> Result<Vec<OsString>, QemuError> {
    let mut args: Vec<String> = vec![
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-serial".into(),
        format!("file:{}", option_path(&scratch.join(PROTOCOL_FILE))?),
        "-monitor".into(),
        "none".into(),
        "-no-reboot".into(),
        "-qmp".into(),
        format!(
            "unix:{},server=on,wait=off",
            option_path(&scratch.join("qmp.sock"))?
        ),
        "-machine".into(),
        "q35".into(),
        // The pvpanic port (ACPI QEMU0001 at 0x505, as the embedded runner has): a guest
        // panic ends QEMU at once with the SHUTDOWN reason `guest-panic`, whatever the
        // console shows.
        "-device".into(),
        "pvpanic".into(),
        "-action".into(),
        "panic=shutdown".into(),
        "-m".into(),
        format!("{}M", config.memory_mib),
        "-smp".into(),
        config.vcpus.to_string(),
    ];
    if kvm {
        args.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]);
    } else {
        args.extend(["-accel".into(), "tcg".into(), "-cpu".into(), "max".into()]);
    }
    match config.firmware {
        None => {
            let kernel = config.kernel.as_ref().ok_or(QemuError::NothingToBoot)?;
            args.extend(["-kernel".into(), option_path(kernel)?]);
            if let Some(initrd) = &config.initramfs {
                args.extend(["-initrd".into(), option_path(initrd)?]);
            }
            args.extend(["-append".into(), config.effective_cmdline(false)]);
        }
        Some(Firmware::Bios) => {
            if config.disk.is_none() {
                return Err(QemuError::NoDisk);
            }
            args.extend(smbios_flags(config));
        }
        Some(Firmware::Efi) => {
            if config.disk.is_none() {
                return Err(QemuError::NoDisk);
            }
            let (code, vars) = ovmf.ok_or_else(|| QemuError::NoOvmf {
                looked_for: OVMF_CODE.join(", "),
            })?;
            args.extend(smbios_flags(config));
            args.extend([
                "-drive".into(),
                format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    option_path(code)?
                ),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", option_path(vars)?),
            ]);
        }
    }
    if let Some(disk) = &config.disk {
        let mut drive = format!(
            "file={},format={},if=none,id=disk0,snapshot=on",
            option_path(disk)?,
            detect_format(disk)
        );
        if config.read_only_disk {
            drive.push_str(",readonly=on");
        }
        args.extend(["-drive".into(), drive]);
        match config.disk_bus {
            DiskBus::Virtio => args.extend(["-device".into(), "virtio-blk-pci,drive=disk0".into()]),
            // q35's built-in ICH9 AHCI controller names its ports ide.0 .. ide.5.
            DiskBus::Ahci => args.extend(["-device".into(), "ide-hd,drive=disk0,bus=ide.0".into()]),
            DiskBus::Pvscsi => args.extend([
                "-device".into(),
                "pvscsi,id=scsi0".into(),
                "-device".into(),
                "scsi-hd,drive=disk0,bus=scsi0.0".into(),
            ]),
        }
    }
    // Always a user-mode NIC: appliances configure their network at boot (DHCP waits for
    // an interface), and the guest reaches nothing but QEMU's own DHCP/DNS without forwards.
    let forwards: String = config
        .port_forwards
        .iter()
        .map(|f| format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest))
        .collect();
    args.extend([
        "-netdev".into(),
        format!("user,id=net0{forwards}"),
        "-device".into(),
        format!("{},netdev=net0", config.nic.qemu_device()),
    ]);
    Ok(args.into_iter().map(OsString::from).collect())
}

/// Firmware boot: the boot loader's command line is the image's own, so the test flags
/// reach guest-init as SMBIOS OEM strings (type 11) instead.
fn smbios_flags(config: &RunConfig) -> [String; 2] {
    let mut value = format!("type=11,value={PROTOCOL_FLAG}");
    if config.smoke_test {
        value.push_str(&format!(",value={SMOKE_TEST_FLAG}"));
    }
    ["-smbios".into(), value]
}

/// The protocol channel's file inside the scratch directory.
const PROTOCOL_FILE: &str = "protocol.serial";

/// Copies what QEMU appends to the protocol file into `capture` until `done` is set (then
/// reads to the end once more).
fn tail_protocol(path: PathBuf, mut capture: ConsoleCapture, done: Arc<AtomicBool>) {
    let mut file = None;
    let mut buffer = [0u8; 4096];
    loop {
        let finished = done.load(Ordering::SeqCst);
        if file.is_none() {
            file = std::fs::File::open(&path).ok();
        }
        if let Some(f) = file.as_mut() {
            while let Ok(n) = f.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let _ = capture.write_all(&buffer[..n]);
            }
        }
        if finished {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Maps a QMP `SHUTDOWN` reason to an exit reason.
#[must_use]
pub fn shutdown_reason(reason: &str) -> Option<ExitReason> {
    match reason {
        "guest-shutdown" => Some(ExitReason::PowerOff),
        "guest-reset" => Some(ExitReason::Reset),
        "guest-panic" => Some(ExitReason::Panic),
        _ => None,
    }
}

/// Extracts the reason of a QMP `SHUTDOWN` event line (a small, tolerant scan: QMP emits one
/// JSON object per line).
#[must_use]
pub fn parse_qmp_shutdown(line: &str) -> Option<&str> {
    if !line.contains("\"SHUTDOWN\"") {
        return None;
    }
    let after = &line[line.find("\"reason\"")? + 8..];
    let start = after.find('"')? + 1;
    let end = start + after[start..].find('"')?;
    Some(&after[start..end])
}

/// How often the QMP watcher looks at the power button between events.
const QMP_POLL: Duration = Duration::from_millis(50);

/// Records QEMU's `SHUTDOWN` reason, and sends `system_powerdown` (the ACPI power button)
/// once `button` is pressed.
fn watch_qmp(
    socket: PathBuf,
    reason: Arc<Mutex<Option<String>>>,
    deadline: Instant,
    button: Option<PowerButton>,
) {
    let stream = loop {
        match UnixStream::connect(&socket) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return,
        }
    };
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    if writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .is_err()
        || stream.set_read_timeout(Some(QMP_POLL)).is_err()
    {
        return;
    }
    let mut pressed = false;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        if !pressed && button.as_ref().is_some_and(PowerButton::is_pressed) {
            pressed = true;
            let _ = writer.write_all(b"{\"execute\":\"system_powerdown\"}\n");
        }
        // read_until keeps what it read before a timeout in `line`.
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with(b"\n") => {
                if let Some(text) = parse_qmp_shutdown(&String::from_utf8_lossy(&line)) {
                    let mut slot = reason
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    slot.get_or_insert_with(|| text.to_owned());
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
        // A response line without an end must not grow without bound.
        if line.len() > 1024 * 1024 {
            line.clear();
        }
    }
}

fn find_ovmf() -> Option<(PathBuf, PathBuf)> {
    OVMF_CODE
        .iter()
        .zip(OVMF_VARS.iter())
        .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v)))
        .find(|(c, v)| c.exists() && v.exists())
}

fn kill(child: &mut Child) {
    // Already exited is fine.
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `config` under QEMU (`kvm` selects the accelerator).
///
/// # Errors
///
/// [`QemuError`] when QEMU cannot be started; guest outcomes are in the [`RunOutcome`].
pub fn run_qemu(
    config: RunConfig,
    reporter: Arc<dyn RunReporter>,
    kvm: bool,
) -> Result<RunOutcome, QemuError> {
    let started = Instant::now();
    let scratch = tempfile::tempdir().map_err(|source| QemuError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let ovmf = if config.firmware == Some(Firmware::Efi) {
        let (code, vars) = find_ovmf().ok_or_else(|| QemuError::NoOvmf {
            looked_for: OVMF_CODE.join(", "),
        })?;
        let vars_copy = scratch.path().join("OVMF_VARS.fd");
        std::fs::copy(&vars, &vars_copy).map_err(|source| QemuError::Io {
            path: vars_copy.clone(),
            source,
        })?;
        Some((code, vars_copy))
    } else {
        None
    };
    let args = qemu_args(
        &config,
        kvm,
        scratch.path(),
        ovmf.as_ref().map(|(c, v)| (c.as_path(), v.as_path())),
    )?;
    let protocol = ConsoleCapture::protocol(reporter.clone(), started);
    let console =
        ConsoleCapture::create(&config.console_log, config.echo_console, reporter, started)
            .map_err(QemuError::Console)?;
    let mut child = Command::new(QEMU_BINARY)
        .env("LC_ALL", "C")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(QemuError::Spawn)?;
    let deadline = started + config.timeout;

    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut sink = console.clone();
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        loop {
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = sink.write_all(&buffer[..n]);
                }
            }
        }
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let shutdown = Arc::new(Mutex::new(None));
    let qmp_socket = scratch.path().join("qmp.sock");
    let qmp_reason = shutdown.clone();
    let button = config.power_button.clone();
    let pressed = config.power_button.clone();
    let qmp = std::thread::spawn(move || watch_qmp(qmp_socket, qmp_reason, deadline, button));
    let tail_done = Arc::new(AtomicBool::new(false));
    let tail = {
        let (path, capture, done) = (
            scratch.path().join(PROTOCOL_FILE),
            protocol.clone(),
            tail_done.clone(),
        );
        std::thread::spawn(move || tail_protocol(path, capture, done))
    };

    let mut forced = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if let Some(panic_at) = console.lock().panic_at
            && panic_at.elapsed() >= PANIC_GRACE
        {
            forced = Some(ExitReason::Panic);
            kill(&mut child);
            break None;
        }
        if Instant::now() >= deadline {
            forced = Some(ExitReason::Timeout);
            kill(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let duration = started.elapsed();
    let _ = reader.join();
    let stderr_text = stderr_reader.join().unwrap_or_default();
    let _ = qmp.join();
    tail_done.store(true, Ordering::SeqCst);
    let _ = tail.join();

    let qmp_reason = shutdown
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut exit = match (
        forced,
        qmp_reason.as_deref().and_then(shutdown_reason),
        status,
    ) {
        (Some(reason), _, _) => reason,
        (None, Some(reason), _) => reason,
        (None, None, Some(status)) if status.success() => ExitReason::PowerOff,
        (None, None, status) => ExitReason::VmmError(format!(
            "qemu exited with {}: {}",
            status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string()),
            stderr_text.trim()
        )),
    };
    let mut results = protocol.lock();
    results.finish();
    let mut state = console.lock();
    state.finish();
    if state.panic_at.is_some() && !matches!(exit, ExitReason::VmmError(_)) {
        exit = ExitReason::Panic;
    }
    if exit == ExitReason::PowerOff && pressed.is_some_and(|b| b.is_pressed()) {
        exit = ExitReason::PoweredOffOnRequest;
    }
    let mut device_warnings = Vec::new();
    if !stderr_text.trim().is_empty() {
        device_warnings.push(format!("qemu: {}", stderr_text.trim()));
    }
    Ok(RunOutcome {
        exit,
        console_tail: state.tail(),
        duration,
        first_byte_at: state.first_byte_at,
        first_instruction_at: None,
        events: results.events.clone(),
        ready_at: results.ready_at,
        protocol_errors: results.protocol_errors.clone(),
        device_warnings,
        vmm: VmmKind::Qemu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortForward;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn direct_kernel_boot_args() {
        let mut config = RunConfig::new("/k/vmlinuz".into(), "console=ttyS0", "log".into());
        config.initramfs = Some("/k/initrd".into());
        config.smoke_test = true;
        config.memory_mib = 512;
        config.vcpus = 2;
        let args = strings(&qemu_args(&config, true, Path::new("/tmp/s"), None).unwrap());
        let joined = args.join(" ");
        assert!(
            joined
                .contains("-kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0 jeos.protocol=/dev/ttyS1 jeos.test=1")
        );
        assert!(joined.contains("-accel kvm -cpu host"));
        assert!(joined.contains("-m 512M -smp 2"));
        assert!(joined.contains("-no-reboot"));
        assert!(joined.contains("-device pvpanic -action panic=shutdown"));
        assert!(joined.contains("-serial stdio -serial file:/tmp/s/protocol.serial"));
        assert!(joined.contains("-qmp unix:/tmp/s/qmp.sock,server=on,wait=off"));
        assert!(joined.contains("-netdev user,id=net0 -device virtio-net-pci,netdev=net0"));
    }

    #[test]
    fn firmware_boot_with_snapshot_disk_and_forwards() {
        let mut config = RunConfig::new("unused".into(), "", "log".into());
        config.firmware = Some(Firmware::Efi);
        config.disk = Some("/nonexistent/disk.raw".into());
        config.read_only_disk = true;
        config.port_forwards = vec![PortForward {
            host: 8080,
            guest: 80,
        }];
        let ovmf = (Path::new("/o/CODE.fd"), Path::new("/s/VARS.fd"));
        let args = strings(&qemu_args(&config, false, Path::new("/s"), Some(ovmf)).unwrap());
        let joined = args.join(" ");
        assert!(!joined.contains("-kernel"));
        assert!(joined.contains("-accel tcg -cpu max"));
        assert!(joined.contains("if=pflash,format=raw,unit=0,readonly=on,file=/o/CODE.fd"));
        assert!(joined.contains(
            "file=/nonexistent/disk.raw,format=raw,if=none,id=disk0,snapshot=on,readonly=on"
        ));
        assert!(joined.contains("-device virtio-blk-pci,drive=disk0"));
        assert!(joined.contains("-smbios type=11,value=jeos.protocol=/dev/ttyS1"));
        config.smoke_test = true;
        config.nic = crate::config::NicModel::E1000e;
        config.disk_bus = DiskBus::Ahci;
        let joined =
            strings(&qemu_args(&config, false, Path::new("/s"), Some(ovmf)).unwrap()).join(" ");
        assert!(joined.contains("value=jeos.protocol=/dev/ttyS1,value=jeos.test=1"));
        assert!(joined.contains("-device ide-hd,drive=disk0,bus=ide.0"));
        assert!(joined.contains("-device e1000e,netdev=net0"));
        config.disk_bus = DiskBus::Pvscsi;
        config.nic = crate::config::NicModel::Vmxnet3;
        let joined =
            strings(&qemu_args(&config, false, Path::new("/s"), Some(ovmf)).unwrap()).join(" ");
        assert!(joined.contains("-device pvscsi,id=scsi0 -device scsi-hd,drive=disk0,bus=scsi0.0"));
        assert!(joined.contains("-device vmxnet3,netdev=net0"));
        assert!(joined.contains("user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80"));
        config.firmware = Some(Firmware::Bios);
        let joined = strings(&qemu_args(&config, false, Path::new("/s"), None).unwrap()).join(" ");
        assert!(!joined.contains("pflash"));
    }

    #[test]
    fn argument_errors() {
        let mut config = RunConfig::new("k".into(), "", "log".into());
        config.kernel = None;
        assert!(matches!(
            qemu_args(&config, false, Path::new("/s"), None),
            Err(QemuError::NothingToBoot)
        ));
        config.firmware = Some(Firmware::Bios);
        assert!(matches!(
            qemu_args(&config, false, Path::new("/s"), None),
            Err(QemuError::NoDisk)
        ));
        config.disk = Some("/a,b/disk.raw".into());
        assert!(matches!(
            qemu_args(&config, false, Path::new("/s"), None),
            Err(QemuError::UnsupportedPath { .. })
        ));
        config.disk = Some("/disk.raw".into());
        config.firmware = Some(Firmware::Efi);
        assert!(matches!(
            qemu_args(&config, false, Path::new("/s"), None),
            Err(QemuError::NoOvmf { .. })
        ));
    }

    /// A stand-in QMP server: the watcher negotiates, sends `system_powerdown` only after
    /// the button is pressed, and records the `SHUTDOWN` reason that follows.
    #[test]
    fn power_button_sends_system_powerdown_over_qmp() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let button = PowerButton::default();
        let reason = Arc::new(Mutex::new(None));
        let watcher = {
            let (socket, reason, button) = (socket.clone(), reason.clone(), button.clone());
            let deadline = Instant::now() + Duration::from_secs(10);
            std::thread::spawn(move || watch_qmp(socket, reason, deadline, Some(button)))
        };
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream).lines();
        writer.write_all(b"{\"QMP\": {}}\n").unwrap();
        assert!(lines.next().unwrap().unwrap().contains("qmp_capabilities"));
        writer.write_all(b"{\"return\": {}}\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        button.press().unwrap();
        assert!(lines.next().unwrap().unwrap().contains("system_powerdown"));
        writer
            .write_all(b"{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": \"guest-shutdown\"}}\n")
            .unwrap();
        drop((writer, lines));
        watcher.join().unwrap();
        assert_eq!(reason.lock().unwrap().as_deref(), Some("guest-shutdown"));
    }

    #[test]
    fn qmp_shutdown_events() {
        let line = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}"#;
        assert_eq!(parse_qmp_shutdown(line), Some("guest-reset"));
        assert_eq!(shutdown_reason("guest-reset"), Some(ExitReason::Reset));
        assert_eq!(
            shutdown_reason("guest-shutdown"),
            Some(ExitReason::PowerOff)
        );
        assert_eq!(shutdown_reason("host-signal"), None);
        assert_eq!(parse_qmp_shutdown(r#"{"return": {}}"#), None);
    }

    #[test]
    fn detects_qcow2() {
        let dir = tempfile::tempdir().unwrap();
        let qcow = dir.path().join("a.qcow2");
        std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(detect_format(&qcow), "qcow2");
        let raw = dir.path().join("a.raw");
        std::fs::write(&raw, [0u8; 512]).unwrap();
        assert_eq!(detect_format(&raw), "raw");
    }
}
