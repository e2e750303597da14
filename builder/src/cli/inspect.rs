//! `jeos inspect IMAGE`: what an image holds, read from the image file alone (any of the
//! four formats): partitions and sizes, OS release, kernel and command line from the ESP,
//! packages from `/var/lib/dpkg/status`, services from guest-init's configuration and the
//! SBOM's summary.

use std::path::PathBuf;

use clap::Args;
use image_writer::image::PartitionInfo;
use image_writer::image::rootfs::{FsKind, RootFs};
use serde::Serialize;

use super::image::{Opened, open};
use super::{ExitStatus, Session};
use crate::progress::format_bytes;

/// `jeos inspect`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  jeos inspect dist/nginx-1.0.0/nginx-1.0.0.ova\n  jeos inspect --json dist/nginx-1.0.0/nginx-1.0.0.qcow2 | jq .packages"
)]
pub struct InspectArgs {
    /// Image file: `.raw`, `.qcow2`, `.vmdk` or `.ova`.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

/// Where dpkg's database of installed packages is.
pub(super) const DPKG_STATUS: &str = "/var/lib/dpkg/status";
const INIT_CONFIG: &str = "/etc/jeos/init.json";
const SBOM_DIRS: &[&str] = &[
    "/usr/share/jeos",
    "/var/lib/jeos",
    "/etc/jeos",
    "/usr/share/doc/jeos",
];

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

#[derive(Debug, Serialize)]
struct KernelInfo {
    version: Option<String>,
    cmdline: String,
    entry: String,
    kernel_bytes: u64,
    initramfs_bytes: u64,
}

#[derive(Debug, Serialize)]
struct ServiceInfo {
    name: String,
    exec: Vec<String>,
    user: Option<String>,
}

#[derive(Debug, Serialize)]
struct SbomInfo {
    path: String,
    format: String,
    packages: usize,
}

#[derive(Debug, Serialize)]
struct RootFsInfo {
    label: String,
    uuid: String,
    files: u64,
    directories: u64,
    symlinks: u64,
    file_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Inspection {
    image: PathBuf,
    format: &'static str,
    disk_format: &'static str,
    file_bytes: u64,
    allocated_bytes: u64,
    disk_bytes: u64,
    partitions: Vec<PartitionInfo>,
    os: Option<String>,
    hostname: Option<String>,
    kernel: Option<KernelInfo>,
    root_fs: RootFsInfo,
    packages: Vec<InstalledPackage>,
    services: Vec<ServiceInfo>,
    sbom: Option<SbomInfo>,
    notes: Vec<String>,
}

/// The installed packages of a dpkg status file (pure): `Status: install ok installed`.
pub(super) fn parse_dpkg_status(text: &str) -> Vec<InstalledPackage> {
    let mut out: Vec<InstalledPackage> = package_resolver::deb822::paragraphs(text)
        .filter_map(Result::ok)
        .filter(|p| {
            p.get("Status")
                .is_none_or(|s| s.trim().ends_with(" installed"))
        })
        .filter_map(|p| {
            Some(InstalledPackage {
                name: p.get("Package")?.trim().to_owned(),
                version: p.get("Version").unwrap_or_default().trim().to_owned(),
                architecture: p.get("Architecture").unwrap_or_default().trim().to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Installed packages of the image (empty when it has no dpkg database).
pub(super) fn packages(root: &RootFs) -> Option<Vec<InstalledPackage>> {
    let bytes = root.read(DPKG_STATUS).ok()?;
    Some(parse_dpkg_status(&String::from_utf8_lossy(&bytes)))
}

/// The release string of a bzImage (Linux boot protocol: `kernel_version` at 0x20e points
/// 0x200 bytes before a NUL-terminated string; the header magic `HdrS` is at 0x202).
fn bzimage_version(kernel: &[u8]) -> Option<String> {
    if kernel.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let pointer = u16::from_le_bytes([*kernel.get(0x20e)?, *kernel.get(0x20f)?]);
    let start = usize::from(pointer).checked_add(0x200)?;
    let tail = kernel.get(start..)?;
    let end = tail.iter().take(256).position(|b| *b == 0)?;
    let text = std::str::from_utf8(&tail[..end]).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

fn os_release(root: &RootFs) -> Option<String> {
    let bytes = root
        .read("/etc/os-release")
        .or_else(|_| root.read("/usr/lib/os-release"))
        .ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
}

fn services(root: &RootFs, notes: &mut Vec<String>) -> Vec<ServiceInfo> {
    let Ok(bytes) = root.read(INIT_CONFIG) else {
        notes.push(format!("no `{INIT_CONFIG}`: not a jeos appliance?"));
        return Vec::new();
    };
    match serde_json::from_slice::<guest_init::config::InitConfig>(&bytes) {
        Ok(config) => config
            .services
            .into_iter()
            .map(|s| ServiceInfo {
                name: s.name,
                exec: s.exec,
                user: s.user,
            })
            .collect(),
        Err(e) => {
            notes.push(format!(
                "`{INIT_CONFIG}` is not a valid guest-init configuration: {e}"
            ));
            Vec::new()
        }
    }
}

fn sbom(root: &RootFs) -> Option<SbomInfo> {
    for dir in SBOM_DIRS {
        let Ok(entries) = root.list(dir) else {
            continue;
        };
        for entry in entries.into_iter().filter(|e| e.kind == FsKind::File) {
            let name = entry
                .path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !(name.contains("sbom")
                || name.ends_with(".spdx.json")
                || name.ends_with(".cdx.json"))
            {
                continue;
            }
            let Ok(bytes) = root.read(&entry.path) else {
                continue;
            };
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let (format, list) = if let Some(v) = value.get("spdxVersion").and_then(|v| v.as_str())
            {
                (v.to_owned(), "packages")
            } else if value.get("bomFormat").and_then(|v| v.as_str()) == Some("CycloneDX") {
                let spec = value
                    .get("specVersion")
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                (format!("CycloneDX {spec}").trim().to_owned(), "components")
            } else {
                continue;
            };
            let packages = value
                .get(list)
                .and_then(|v| v.as_array())
                .map_or(0, Vec::len);
            return Some(SbomInfo {
                path: entry.path,
                format,
                packages,
            });
        }
    }
    None
}

fn root_fs_info(root: &RootFs, notes: &mut Vec<String>) -> RootFsInfo {
    let mut info = RootFsInfo {
        label: root.label(),
        uuid: root.uuid(),
        files: 0,
        directories: 0,
        symlinks: 0,
        file_bytes: 0,
    };
    match root.walk() {
        Ok(entries) => {
            for e in entries {
                match e.kind {
                    FsKind::File => {
                        info.files += 1;
                        info.file_bytes += e.size;
                    }
                    FsKind::Dir => info.directories += 1,
                    FsKind::Symlink => info.symlinks += 1,
                    _ => {}
                }
            }
        }
        Err(e) => notes.push(format!("the root file system could not be walked: {e}")),
    }
    info
}

fn collect(opened: &Opened, path: PathBuf) -> miette::Result<Inspection> {
    let image = &opened.image;
    let root = &opened.root;
    let mut notes = Vec::new();
    let partitions = image.partitions().map_err(super::image::image_error)?;
    let kernel = match image.boot_files() {
        Ok(boot) => Some(KernelInfo {
            version: bzimage_version(&boot.kernel),
            cmdline: boot.cmdline,
            entry: boot.entry,
            kernel_bytes: boot.kernel.len() as u64,
            initramfs_bytes: boot.initramfs.len() as u64,
        }),
        Err(e) => {
            notes.push(format!("no kernel found: {e}"));
            None
        }
    };
    let packages = packages(root).unwrap_or_else(|| {
        notes.push(format!(
            "no `{DPKG_STATUS}` in the image: package list unknown"
        ));
        Vec::new()
    });
    let hostname = root
        .read("/etc/hostname")
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    Ok(Inspection {
        image: path,
        format: image.format().as_str(),
        disk_format: image.disk_format().as_str(),
        file_bytes: image.file_bytes(),
        allocated_bytes: image.allocated_bytes(),
        disk_bytes: image.disk_bytes(),
        partitions,
        os: os_release(root),
        hostname,
        kernel,
        root_fs: root_fs_info(root, &mut notes),
        packages,
        services: services(root, &mut notes),
        sbom: sbom(root),
        notes,
    })
}

fn render(i: &Inspection) -> Vec<String> {
    let mut out = vec![format!("Image:      {}", i.image.display())];
    let container = if i.format == i.disk_format {
        i.format.to_owned()
    } else {
        format!("{} (disk: {})", i.format, i.disk_format)
    };
    out.push(format!("Format:     {container}"));
    out.push(format!(
        "Size:       {} file ({} allocated), {} disk",
        format_bytes(i.file_bytes),
        format_bytes(i.allocated_bytes),
        format_bytes(i.disk_bytes)
    ));
    for p in &i.partitions {
        out.push(format!(
            "Partition:  {} {:<9} {:>10} at {}",
            p.number,
            p.kind,
            format_bytes(p.size_bytes),
            p.offset_bytes
        ));
    }
    if let Some(os) = &i.os {
        out.push(format!("OS:         {os}"));
    }
    if let Some(h) = &i.hostname {
        out.push(format!("Hostname:   {h}"));
    }
    if let Some(k) = &i.kernel {
        out.push(format!(
            "Kernel:     {} ({}, initramfs {})",
            k.version.as_deref().unwrap_or("unknown version"),
            format_bytes(k.kernel_bytes),
            format_bytes(k.initramfs_bytes)
        ));
        out.push(format!("Cmdline:    {}", k.cmdline));
    }
    let r = &i.root_fs;
    out.push(format!(
        "Root fs:    ext4 `{}` {}: {} files ({}), {} directories, {} symlinks",
        r.label,
        r.uuid,
        r.files,
        format_bytes(r.file_bytes),
        r.directories,
        r.symlinks
    ));
    out.push(format!("Services:   {}", i.services.len()));
    for s in &i.services {
        let user = s
            .user
            .as_deref()
            .map(|u| format!(" (as {u})"))
            .unwrap_or_default();
        out.push(format!("  {}: {}{user}", s.name, s.exec.join(" ")));
    }
    match &i.sbom {
        Some(s) => out.push(format!(
            "SBOM:       {} ({}, {} packages)",
            s.path, s.format, s.packages
        )),
        None => out.push("SBOM:       none in the image".to_owned()),
    }
    out.push(format!("Packages:   {}", i.packages.len()));
    for p in &i.packages {
        out.push(format!("  {} {} {}", p.name, p.version, p.architecture));
    }
    for n in &i.notes {
        out.push(format!("note: {n}"));
    }
    out
}

pub(super) fn inspect(args: &InspectArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let opened = open(&args.image)?;
    let inspection = collect(&opened, args.image.clone())?;
    if session.global.json {
        let value = serde_json::to_value(&inspection).expect("the inspection serialises");
        session.printer.stdout_line(&value.to_string());
    } else {
        for line in render(&inspection) {
            session.printer.stdout_line(&line);
        }
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_lists_installed_packages() {
        let text = "Package: nginx\nStatus: install ok installed\nVersion: 1.26.3-3\nArchitecture: amd64\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: base-files\nStatus: install ok installed\nVersion: 13.8\nArchitecture: amd64\n";
        let packages = parse_dpkg_status(text);
        assert_eq!(
            packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["base-files", "nginx"]
        );
        assert_eq!(packages[1].version, "1.26.3-3");
    }

    #[test]
    fn bzimage_version_string() {
        let mut kernel = vec![0u8; 0x1000];
        kernel[0x202..0x206].copy_from_slice(b"HdrS");
        kernel[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        let text = b"6.12.38+deb13-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        kernel[0x500..0x500 + text.len()].copy_from_slice(text);
        assert_eq!(
            bzimage_version(&kernel).as_deref(),
            Some("6.12.38+deb13-amd64")
        );
        assert_eq!(bzimage_version(&kernel[..0x300]), None);
        kernel[0x202] = 0;
        assert_eq!(bzimage_version(&kernel), None);
    }
}
