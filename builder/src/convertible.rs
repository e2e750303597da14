//! `[disk] convertible = true`: an image that virt-v2v (`virt-v2v -i ova`) can convert.
//!
//! What virt-v2v 2.x needs from a Debian guest (its `convert_linux.ml`,
//! `linux_bootloaders.ml`, `linux_kernels.ml`), and where jeos provides it:
//!
//! | virt-v2v needs | provided by |
//! |---|---|
//! | `ID=debian`, `/etc/debian_version`, a non-empty `/var/lib/dpkg/status`, `/etc/modprobe.d` | every image ([`crate::rootfs::etc`], [`crate::rootfs::dpkg`]) |
//! | a binary at `/bin/sh` (libguestfs reads it to learn the architecture) | `dash` ([`crate::resolve::CONVERTIBLE_PACKAGES`]) |
//! | `dpkg` working inside the guest (it runs `dpkg -L` on the kernel package) | `dash` depends on `dpkg` |
//! | `/etc/fstab` naming the ESP at `/boot/efi`, so inspection mounts it | [`fstab`] |
//! | a UEFI boot-loader configuration under `/boot/efi/EFI` it can edit without running tools in the guest | GRUB with `/EFI/BOOT/menu.lst` ([`image_writer::GrubLegacyBoot`]) |
//! | the kernel that configuration names at `/boot/vmlinuz-V`, in the kernel package's `dpkg -L` | [`install_kernel`] |
//! | `/lib/modules/V` holding the virtio modules | [`install_kernel`]: the initramfs module closure |
//! | no initrd under `/boot` (else it runs `update-initramfs` in the guest) | the initramfs stays on the ESP |
//! | 10 MB free on the ESP | [`image_writer::bootloader::CONVERTIBLE_ESP_FREE_BYTES`] |
//!
//! Every file describes the real boot: under UEFI, GRUB boots `/boot/vmlinuz-V` of the
//! root file system with the same command line SYSLINUX (BIOS) and systemd-boot's entry
//! use; the modules under `/lib/modules/V` are the ones in the initramfs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use image_writer::layout::Seed;
use package_resolver::deb::{self, UnpackOptions};
use package_resolver::lock::LockFile;

use crate::kernel::KernelPackage;
use crate::pipeline::{BuildError, KernelArtifacts, deb_path, module_path_inside};
use crate::plan::{self, BuildPlan};
use crate::rootfs::RootfsError;
use crate::rootfs::dpkg::{DpkgPackage, plan_package_info};
use crate::rootfs::staging::{FsOp, Staging};
use crate::rootfs::tree::Ownership;

/// `/etc/fstab` of a convertible image: the root by file-system UUID (as the kernel
/// command line names it) and the ESP at `/boot/efi` (`noauto`: guest-init does not mount
/// it; inspection tools read the line to find the boot-loader files).
#[must_use]
pub fn fstab(seed: &Seed) -> String {
    let root = image_writer::ext4::root_fs_uuid(seed);
    let esp = image_writer::bootloader::esp_fs_uuid(seed);
    format!(
        "# /etc/fstab: static file system information.\n\
         # guest-init mounts the root (from the kernel command line) and tmpfs on /run and\n\
         # /tmp; the EFI system partition holds the boot loaders and is not mounted.\n\
         UUID={root} / ext4 rw 0 1\n\
         UUID={esp} /boot/efi vfat noauto,umask=0077 0 2\n"
    )
}

/// The files installed into the root file system for the kernel: `(path relative to the
/// root, bytes)`: the kernel image, then each initramfs module (decompressed, at its path
/// under `usr/lib/modules/V`) and the closure's `modules.alias` and `modules.dep`.
fn kernel_files(
    build_plan: &BuildPlan,
    kernel_dir: &Path,
    kernel: &KernelArtifacts,
) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    let kernel_err = |source| BuildError::Kernel {
        package: build_plan.modules.package.clone(),
        source,
    };
    let package =
        KernelPackage::open(kernel_dir, Some(kernel.version.as_str())).map_err(kernel_err)?;
    let wanted: Vec<&str> = build_plan
        .modules
        .wanted
        .iter()
        .map(String::as_str)
        .collect();
    let modules = package.plan_modules(&wanted, &[]).map_err(kernel_err)?;
    let version = &kernel.version;
    let base = format!("usr/lib/modules/{version}");
    let mut files = vec![(
        kernel.vmlinuz_path.to_string_lossy().into_owned(),
        kernel.vmlinuz.clone(),
    )];
    for module in &modules.modules {
        let inside = module_path_inside(&module.path, version);
        let bytes = package.read_module(&module.path).map_err(kernel_err)?;
        files.push((format!("{base}/{inside}"), bytes));
    }
    files.push((
        format!("{base}/modules.alias"),
        crate::kernel::modindex::render_modules_alias(&modules.modules).into_bytes(),
    ));
    files.push((
        format!("{base}/modules.dep"),
        crate::kernel::modindex::render_modules_dep(&modules.modules, |m| {
            module_path_inside(&m.path, version)
        })
        .into_bytes(),
    ));
    Ok(files)
}

/// Step `install_kernel` (convertible images): the kernel at `/boot/vmlinuz-V`, its
/// initramfs modules under `/lib/modules/V`, the kernel package's dpkg file list for them,
/// and `/etc/fstab` naming the root and the ESP.
pub(crate) fn install_kernel(
    build_plan: &BuildPlan,
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
    kernel_dir: &Path,
    kernel: &KernelArtifacts,
    staging: &mut Staging,
) -> Result<(), BuildError> {
    let files = kernel_files(build_plan, kernel_dir, kernel)?;
    // `/boot/efi`: the ESP's mount point in `/etc/fstab` (inspection mounts it there).
    let mut dirs = BTreeSet::from([PathBuf::from("boot/efi")]);
    for (path, _) in &files {
        if let Some(parent) = Path::new(path).parent() {
            dirs.insert(parent.to_owned());
        }
    }
    let mut ops: Vec<FsOp> = dirs
        .into_iter()
        .map(|path| FsOp::CreateDir {
            path,
            own: Ownership::root(0o755),
            update: false,
        })
        .collect();
    ops.extend(files.iter().map(|(path, bytes)| FsOp::WriteFile {
        path: PathBuf::from(path),
        contents: bytes.clone(),
        own: Ownership::root(0o644),
    }));
    ops.push(FsOp::WriteFile {
        path: PathBuf::from("etc/fstab"),
        contents: fstab(&build_plan.seed).into_bytes(),
        own: Ownership::root(0o644),
    });
    staging.apply(&ops)?;

    // The package that ships the image (`linux-image-V`), else the first kernel package.
    let kernel_packages = plan::locked(lock, &build_plan.packages.kernel);
    let image_name = format!("linux-image-{}", kernel.version);
    let Some(owner) = (kernel_packages.iter())
        .find(|p| p.name == image_name)
        .or_else(|| kernel_packages.first())
    else {
        return Err(BuildError::NoKernel);
    };
    let report = deb::read_package_control(deb_path(debs, &owner.name), &UnpackOptions::default())
        .map_err(|source| BuildError::Unpack {
            package: owner.name.clone(),
            source,
        })?;
    let package = DpkgPackage {
        control: report.control,
        conffiles: Vec::new(),
        // The index files are generated (as depmod's are), not shipped by the package.
        files: (files.into_iter())
            .map(|(path, _)| path)
            .filter(|path| !path.ends_with("/modules.alias") && !path.ends_with("/modules.dep"))
            .collect(),
        md5sums: report.md5sums,
    };
    let ops = plan_package_info(&package, staging.tree()).map_err(|e| BuildError::Rootfs {
        name: build_plan.artifact_name.clone(),
        source: RootfsError::Dpkg(e),
    })?;
    staging.apply(&ops)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_names_the_root_and_the_esp_by_uuid() {
        let seed = Seed::from_bytes(b"fstab");
        let text = fstab(&seed);
        let root = image_writer::ext4::root_fs_uuid(&seed).to_string();
        assert!(
            text.contains(&format!("UUID={root} / ext4 rw 0 1\n")),
            "{text}"
        );
        let esp = image_writer::bootloader::esp_fs_uuid(&seed);
        assert_eq!(esp.len(), 9, "{esp}");
        assert!(
            text.contains(&format!("UUID={esp} /boot/efi vfat noauto")),
            "{text}"
        );
    }
}
