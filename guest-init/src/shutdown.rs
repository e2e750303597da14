//! Shutdown: what triggers it, and the final steps after the services are stopped.
//!
//! | trigger | kind |
//! |---|---|
//! | SIGTERM (`kill 1`), SIGUSR2, `poweroff`, ACPI power button (KEY_POWER on `/dev/input/event*`) | power off |
//! | SIGINT (ctrl-alt-del, after `reboot(RB_DISABLE_CAD)`), `reboot` | reboot |
//! | SIGUSR1, `halt` | halt |
//!
//! `poweroff`, `reboot` and `halt` are this binary invoked under those names (symlinks):
//! they send the matching signal to PID 1. SIGTERM powers off (unlike busybox, where it
//! reboots) because for an appliance `kill 1` means "stop the appliance", and a hypervisor
//! restart is one click away.

use std::io::Read;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::log::info;
use crate::supervisor::Event;
use crate::sys;

/// How the machine ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownKind {
    /// Power off.
    Poweroff,
    /// Reboot.
    Reboot,
    /// Halt (stop the CPU, keep power).
    Halt,
}

impl ShutdownKind {
    /// The signal PID 1 reacts to with this kind.
    pub fn signal(self) -> libc::c_int {
        match self {
            ShutdownKind::Poweroff => libc::SIGUSR2,
            ShutdownKind::Reboot => libc::SIGINT,
            ShutdownKind::Halt => libc::SIGUSR1,
        }
    }

    /// The kind a signal to PID 1 requests.
    pub fn from_signal(signal: libc::c_int) -> Option<ShutdownKind> {
        match signal {
            libc::SIGTERM | libc::SIGUSR2 => Some(ShutdownKind::Poweroff),
            libc::SIGINT => Some(ShutdownKind::Reboot),
            libc::SIGUSR1 => Some(ShutdownKind::Halt),
            _ => None,
        }
    }

    /// The kind requested by invoking the binary as `name` (argv[0]'s file name).
    pub fn from_program_name(name: &str) -> Option<ShutdownKind> {
        match name {
            "poweroff" => Some(ShutdownKind::Poweroff),
            "reboot" => Some(ShutdownKind::Reboot),
            "halt" => Some(ShutdownKind::Halt),
            _ => None,
        }
    }

    fn reboot_command(self) -> libc::c_int {
        match self {
            ShutdownKind::Poweroff => libc::RB_POWER_OFF,
            ShutdownKind::Reboot => libc::RB_AUTOBOOT,
            ShutdownKind::Halt => libc::RB_HALT_SYSTEM,
        }
    }
}

/// `struct input_event` on 64-bit: timeval (16 bytes), type u16, code u16, value i32.
const INPUT_EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;

/// Whether a raw `input_event` is a KEY_POWER press.
pub fn is_power_press(event: &[u8; INPUT_EVENT_SIZE]) -> bool {
    let kind = u16::from_ne_bytes([event[16], event[17]]);
    let code = u16::from_ne_bytes([event[18], event[19]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// Starts one thread per `/dev/input/event*` that turns a power-button press into a
/// power-off request (the ACPI button driver reports the button as KEY_POWER).
pub fn watch_power_button(events: &Sender<Event>) {
    let Ok(entries) = std::fs::read_dir("/dev/input") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let Ok(mut device) = std::fs::File::open(entry.path()) else {
            continue;
        };
        let events = events.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("input-{name}"))
            .spawn(move || {
                let mut event = [0u8; INPUT_EVENT_SIZE];
                while device.read_exact(&mut event).is_ok() {
                    if is_power_press(&event) {
                        info!("power button pressed");
                        let _ = events.send(Event::Shutdown(ShutdownKind::Poweroff));
                    }
                }
            });
        if spawned.is_ok() {
            info!("watching /dev/input/{name} for the power button");
        }
    }
}

/// Sends the request to PID 1 (the `poweroff`/`reboot`/`halt` commands).
pub fn request(kind: ShutdownKind) -> std::io::Result<()> {
    sys::kill(1, kind.signal())
}

/// Whether any user-space process other than us is alive. `kill(-1, 0)` cannot tell:
/// it also succeeds for kernel threads, which have an empty `/proc/<pid>/cmdline`.
fn other_processes_exist() -> bool {
    let me = sys::getpid().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.bytes().all(|b| b.is_ascii_digit())
            && name != me.as_str()
            && std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| !c.is_empty())
    })
}

/// Final steps once the services are stopped: kill stragglers, sync, unmount or remount
/// read-only, then `reboot(2)`. Never returns.
pub fn finish(kind: ShutdownKind, test_mode: bool) -> ! {
    info!("sending SIGTERM to all processes");
    let _ = sys::kill(-1, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while other_processes_exist() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = sys::kill(-1, libc::SIGKILL);
    sys::sync();
    for target in ["/tmp", "/run", "/dev/shm", "/dev/pts"] {
        let _ = sys::umount(target, libc::MNT_DETACH);
    }
    let remount = libc::MS_REMOUNT | libc::MS_RDONLY;
    if let Err(err) = sys::mount("none", "/", None, remount, None) {
        info!("cannot remount / read-only: {err}");
    }
    sys::sync();
    info!(
        "{}",
        match kind {
            ShutdownKind::Poweroff => "powering off",
            ShutdownKind::Reboot => "rebooting",
            ShutdownKind::Halt => "halting",
        }
    );
    let _ = sys::reboot(kind.reboot_command());
    // Power-off can fail without ACPI; a test runner waits for the VM to end, and with
    // `reboot=k` plus `-no-reboot` a reboot ends it too.
    if test_mode || kind == ShutdownKind::Poweroff {
        let _ = sys::reboot(libc::RB_AUTOBOOT);
    }
    let _ = sys::reboot(libc::RB_HALT_SYSTEM);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_names_map_both_ways() {
        for kind in [
            ShutdownKind::Poweroff,
            ShutdownKind::Reboot,
            ShutdownKind::Halt,
        ] {
            assert_eq!(ShutdownKind::from_signal(kind.signal()), Some(kind));
        }
        assert_eq!(
            ShutdownKind::from_signal(libc::SIGTERM),
            Some(ShutdownKind::Poweroff)
        );
        assert_eq!(ShutdownKind::from_signal(libc::SIGHUP), None);
        assert_eq!(
            ShutdownKind::from_program_name("reboot"),
            Some(ShutdownKind::Reboot)
        );
        assert_eq!(ShutdownKind::from_program_name("init"), None);
    }

    #[test]
    fn recognises_power_key_press() {
        let mut event = [0u8; INPUT_EVENT_SIZE];
        event[16..18].copy_from_slice(&EV_KEY.to_ne_bytes());
        event[18..20].copy_from_slice(&KEY_POWER.to_ne_bytes());
        event[20..24].copy_from_slice(&1i32.to_ne_bytes());
        assert!(is_power_press(&event));
        event[20..24].copy_from_slice(&0i32.to_ne_bytes()); // release
        assert!(!is_power_press(&event));
        event[18..20].copy_from_slice(&30u16.to_ne_bytes()); // KEY_A
        assert!(!is_power_press(&event));
    }
}
