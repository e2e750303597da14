//! `jeos run`: boot an image interactively, with the serial console on the terminal: on
//! the embedded runner (hardware KVM; `run_embedded.rs`), or with QEMU like a hypervisor
//! would (firmware boot of the whole disk).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, ValueEnum};
use miette::Diagnostic;
use test_vm::qemu::{OVMF_CODE, OVMF_VARS, QEMU_BINARY, QemuError, qemu_args};
use test_vm::{Firmware, PortForward, RunConfig};

use super::test::{VmmChoice, parse_memory_mib};
use super::{ExitStatus, Session};
use crate::boot::{self, BootError};

/// `--firmware`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirmwareChoice {
    /// SeaBIOS.
    Bios,
    /// OVMF (UEFI).
    Efi,
}

/// `jeos run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The `.raw` image, or the `DIR/<name>-<version>/` directory `jeos build` wrote.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Forward a host TCP port to a guest port: `HOST:GUEST` or `127.0.0.1:HOST:GUEST`.
    #[arg(long, value_name = "HOST:GUEST", value_parser = parse_forward)]
    pub forward: Vec<PortForward>,
    /// Guest memory (`512MiB`, `1GiB`).
    #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = parse_memory_mib)]
    pub memory: u64,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = boot::DEFAULT_CPUS, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: u32,
    /// Firmware that boots the whole disk (QEMU; default BIOS). Implies `--vmm qemu`.
    #[arg(long, value_enum)]
    pub firmware: Option<FirmwareChoice>,
    /// Which VMM boots the image: `auto` picks the embedded runner on usable hardware KVM
    /// (direct kernel boot, forwards over vsock), else QEMU.
    #[arg(long, value_enum, default_value_t = VmmChoice::Auto)]
    pub vmm: VmmChoice,
}

/// `8080:80`, `127.0.0.1:8080:80`, `localhost:8080:80`.
fn parse_forward(text: &str) -> Result<PortForward, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (host, guest) = match parts.as_slice() {
        [host, guest] => (host, guest),
        [addr, host, guest] if matches!(*addr, "127.0.0.1" | "localhost") => (host, guest),
        [_, _, _] => return Err("only 127.0.0.1 can be forwarded from".into()),
        _ => return Err(format!("`{text}` is not HOST:GUEST (e.g. `8080:80`)")),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{p}` is not a port number"))
    };
    Ok(PortForward {
        host: port(host)?,
        guest: port(guest)?,
    })
}

/// Why `jeos run` could not start the VM (exit 2).
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum RunCmdError {
    /// A `--forward` host port is in use.
    #[error("cannot forward 127.0.0.1:{port}: the port is in use")]
    #[diagnostic(help(
        "choose another host port, e.g. `--forward 127.0.0.1:18080:80`, or stop what listens on it (`ss -ltnp`)"
    ))]
    PortBusy {
        /// The host port.
        port: u16,
        /// The bind error.
        #[source]
        source: io::Error,
    },
    /// Finding the image failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Boot(#[from] BootError),
    /// No scratch directory, or the OVMF variable store could not be copied.
    #[error("cannot prepare `{}`", .path.display())]
    Prepare {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The configuration cannot be expressed for QEMU.
    #[error("cannot build the qemu command line")]
    #[diagnostic(help("UEFI boot needs OVMF (Debian: ovmf)"))]
    Args(#[source] QemuError),
    /// `--firmware` with `--vmm embedded`.
    #[error("`--firmware` needs QEMU; the embedded runner boots the image's kernel directly")]
    #[diagnostic(help("drop `--firmware`, or use `--vmm qemu`"))]
    FirmwareNeedsQemu,
    /// The embedded runner could not start the VM.
    #[error("the embedded runner cannot start the VM")]
    #[diagnostic(help("`--vmm qemu` boots with QEMU instead"))]
    Embedded(#[source] test_vm::runner::RunnerError),
    /// QEMU could not be started.
    #[error("cannot start `{QEMU_BINARY}`")]
    #[diagnostic(help("install QEMU (Debian: qemu-system-x86)"))]
    Spawn(#[source] io::Error),
}

/// The QEMU command line of `jeos run`: test-vm's arguments with the serial console and
/// QEMU's monitor multiplexed on stdio (Ctrl-A X quits) and guest reboots allowed (pure
/// apart from the disk-format probe).
///
/// # Errors
/// [`QemuError`] for configurations QEMU cannot express.
pub fn run_args(
    config: &RunConfig,
    kvm: bool,
    scratch: &Path,
    ovmf: Option<(&Path, &Path)>,
) -> Result<Vec<OsString>, QemuError> {
    let mut args = qemu_args(config, kvm, scratch, ovmf)?;
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.drain(..);
    let mut console_done = false;
    while let Some(arg) = iter.next() {
        // The first serial port is the console; the second (the protocol channel) stays.
        if arg == "-serial" && !console_done {
            iter.next();
            console_done = true;
            out.extend(["-serial".into(), "mon:stdio".into()]);
        } else if arg == "-no-reboot" {
        } else {
            out.push(arg);
        }
    }
    Ok(out)
}

fn first_existing(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The first `--forward` host port that is already taken on 127.0.0.1 (QEMU would fail
/// with its own, cryptic message after the VM started).
pub(super) fn busy_forward(forwards: &[PortForward]) -> Option<(u16, io::Error)> {
    forwards.iter().find_map(|f| {
        std::net::TcpListener::bind(("127.0.0.1", f.host))
            .err()
            .map(|e| (f.host, e))
    })
}

pub(super) fn run(args: &RunArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    if let Some((port, source)) = busy_forward(&args.forward) {
        return Err(RunCmdError::PortBusy { port, source }.into());
    }
    let image = boot::find_image(&args.image).map_err(RunCmdError::from)?;
    let embedded = match (args.vmm, args.firmware) {
        (VmmChoice::Embedded, Some(_)) => return Err(RunCmdError::FirmwareNeedsQemu.into()),
        (VmmChoice::Embedded, None) => true,
        (VmmChoice::Qemu, _) | (VmmChoice::Auto, Some(_)) => false,
        (VmmChoice::Auto, None) => test_vm::check_host().can_boot_linux(),
    };
    if embedded {
        return super::run_embedded::run(args, &image, session);
    }
    let firmware = args.firmware.unwrap_or(FirmwareChoice::Bios);
    let scratch = tempfile::Builder::new()
        .prefix("jeos-run-")
        .tempdir()
        .map_err(|source| RunCmdError::Prepare {
            path: std::env::temp_dir(),
            source,
        })?;
    let mut config = RunConfig::new(PathBuf::new(), "", scratch.path().join("console.log"));
    config.kernel = None;
    config.disk = Some(image.clone());
    config.memory_mib = args.memory;
    config.vcpus = args.cpus;
    config.port_forwards = args.forward.clone();
    config.firmware = Some(match firmware {
        FirmwareChoice::Bios => Firmware::Bios,
        FirmwareChoice::Efi => Firmware::Efi,
    });
    let vars_copy = scratch.path().join("OVMF_VARS.fd");
    let ovmf = match (first_existing(&OVMF_CODE), first_existing(&OVMF_VARS)) {
        (Some(code), Some(vars)) if firmware == FirmwareChoice::Efi => {
            std::fs::copy(&vars, &vars_copy).map_err(|source| RunCmdError::Prepare {
                path: vars_copy.clone(),
                source,
            })?;
            Some(code)
        }
        _ => None,
    };
    let kvm = test_vm::check_host().can_boot_linux();
    let qemu = run_args(
        &config,
        kvm,
        scratch.path(),
        ovmf.as_deref().map(|code| (code, vars_copy.as_path())),
    )
    .map_err(RunCmdError::Args)?;
    if !session.global.quiet {
        let p = &mut session.printer;
        p.stderr_line(&format!(
            "Booting {} with qemu ({}, {} firmware, {} MiB, {} vCPU); the image is not modified",
            image.display(),
            if kvm { "KVM" } else { "TCG" },
            match firmware {
                FirmwareChoice::Bios => "BIOS",
                FirmwareChoice::Efi => "UEFI",
            },
            args.memory,
            args.cpus
        ));
        for f in &args.forward {
            p.stderr_line(&format!(
                "  forward   127.0.0.1:{} -> guest port {}",
                f.host, f.guest
            ));
        }
        p.stderr_line("  quit      Ctrl-A X   (Ctrl-A C: QEMU monitor)");
    }
    let status = Command::new(QEMU_BINARY)
        .env("LC_ALL", "C")
        .args(&qemu)
        .status()
        .map_err(RunCmdError::Spawn)?;
    Ok(if status.success() {
        ExitStatus::Success
    } else {
        session
            .printer
            .stderr_line(&format!("error: {QEMU_BINARY} exited with {status}"));
        ExitStatus::Error
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_forward_port_is_found() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let forwards = [PortForward {
            host: port,
            guest: 80,
        }];
        assert_eq!(busy_forward(&forwards).map(|(p, _)| p), Some(port));
        drop(taken);
        assert!(busy_forward(&forwards).is_none());
    }

    #[test]
    fn forwards() {
        assert_eq!(
            parse_forward("8080:80"),
            Ok(PortForward {
                host: 8080,
                guest: 80
            })
        );
        assert_eq!(
            parse_forward("127.0.0.1:8080:80"),
            Ok(PortForward {
                host: 8080,
                guest: 80
            })
        );
        assert!(parse_forward("0.0.0.0:8080:80").is_err());
        assert!(parse_forward("8080").is_err());
        assert!(parse_forward("8080:0").is_err());
    }

    #[test]
    fn console_is_multiplexed_and_disk_is_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("a.raw");
        std::fs::write(&disk, [0u8; 512]).unwrap();
        let mut config = RunConfig::new(PathBuf::new(), "", dir.path().join("log"));
        config.kernel = None;
        config.disk = Some(disk);
        config.firmware = Some(Firmware::Bios);
        config.port_forwards = vec![PortForward { host: 1, guest: 2 }];
        let args: Vec<String> = run_args(&config, false, dir.path(), None)
            .unwrap()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-serial mon:stdio"), "{joined}");
        assert!(!joined.contains("-no-reboot"));
        assert!(joined.contains("snapshot=on"));
        assert!(joined.contains("hostfwd=tcp:127.0.0.1:1-:2"));
    }
}
