//! The boot-loader files (SYSLINUX for BIOS, systemd-boot for UEFI; GRUB for the UEFI
//! boot of a `[disk] convertible` image), read out of the unpacked `syslinux`,
//! `syslinux-common`, `systemd-boot-efi` (and `grub-efi-amd64-bin`) tree without following
//! links out of it: a signed package whose loader is a symlink (absolute or `../..`) would
//! otherwise copy a file of the build host onto the image's ESP. The same confinement as
//! the kernel's ([`crate::unpacked::confined_file`]).

use std::path::{Path, PathBuf};

use image_writer::bootloader::{
    GPTMBR_PATH, GRUB_EFI_PATH, GRUB_LEGACY_MODULES, GRUB_MODULES_DIR, LDLINUX_C32_PATH,
    SYSLINUX_INSTALLER_PATH, SYSTEMD_BOOT_PATH,
};
use image_writer::{BootloaderFiles, GrubLegacyBoot};

use crate::unpacked::{ConfineError, confined_file};

/// Each loader file and the Debian package that ships it.
pub const LOADER_FILES: [(&str, &str); 4] = [
    (SYSLINUX_INSTALLER_PATH, "syslinux"),
    (GPTMBR_PATH, "syslinux-common"),
    (LDLINUX_C32_PATH, "syslinux-common"),
    (SYSTEMD_BOOT_PATH, "systemd-boot-efi"),
];

/// Why the loader files cannot be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoaderFilesError {
    /// A loader file is a symlink, or below one.
    #[error(
        "`/{path}` in the boot-loader package `{package}` is a symlink or not a regular file; refusing to follow it out of the package"
    )]
    #[diagnostic(help(
        "the package's file should be a regular file; check the mirror, or run `jeos cache verify`"
    ))]
    NotConfined {
        /// The package.
        package: &'static str,
        /// Path inside the package.
        path: PathBuf,
    },
    /// A loader file is absent.
    #[error("`/{path}` is missing from the boot-loader package `{package}`")]
    Missing {
        /// The package.
        package: &'static str,
        /// Path inside the package.
        path: PathBuf,
    },
    /// Reading failed.
    #[error("cannot read `{}` of the boot-loader package `{package}`", .path.display())]
    Io {
        /// The package.
        package: &'static str,
        /// Host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The package of GRUB's modules for a `[disk] convertible` image.
pub const GRUB_PACKAGE: &str = "grub-efi-amd64-bin";
/// The package of GRUB's monolithic EFI image (trixie on; `grub-efi-amd64-bin` before).
pub const GRUB_EFI_PACKAGE: &str = "grub-efi-amd64-unsigned";

/// Reads `rel` of `package` from `root`, refusing links out of it.
fn read_confined(
    root: &Path,
    rel: &str,
    package: &'static str,
) -> Result<Vec<u8>, LoaderFilesError> {
    let io = |path: PathBuf, source| LoaderFilesError::Io {
        package,
        path,
        source,
    };
    match confined_file(root, Path::new(rel)) {
        Ok(true) => {}
        Ok(false) => {
            return Err(LoaderFilesError::Missing {
                package,
                path: rel.into(),
            });
        }
        Err(ConfineError::NotConfined { path }) => {
            return Err(LoaderFilesError::NotConfined { package, path });
        }
        Err(ConfineError::Io { path, source }) => return Err(io(path, source)),
    }
    let path = root.join(rel);
    std::fs::read(&path).map_err(|source| io(path, source))
}

/// Reads GRUB's monolithic EFI image and the [`GRUB_LEGACY_MODULES`] from `root`, the
/// unpacked boot-loader packages, for a disk whose GRUB boots `kernel_path`.
///
/// # Errors
/// [`LoaderFilesError`] naming `grub-efi-amd64-unsigned` or `grub-efi-amd64-bin` when a
/// file is missing, a symlink, or unreadable.
pub fn read_grub_files(root: &Path, kernel_path: &str) -> Result<GrubLegacyBoot, LoaderFilesError> {
    let efi = read_confined(root, GRUB_EFI_PATH, GRUB_EFI_PACKAGE)?;
    let mut modules = Vec::new();
    for name in GRUB_LEGACY_MODULES {
        let rel = format!("{GRUB_MODULES_DIR}/{name}.mod");
        modules.push((name.to_owned(), read_confined(root, &rel, GRUB_PACKAGE)?));
    }
    Ok(GrubLegacyBoot {
        efi,
        modules,
        kernel_path: kernel_path.to_owned(),
    })
}

/// Reads the four loader files from `root`, the unpacked boot-loader packages.
///
/// # Errors
/// [`LoaderFilesError`] naming the package of the first file that is missing, a symlink,
/// or unreadable.
pub fn read_loader_files(root: &Path) -> Result<BootloaderFiles, LoaderFilesError> {
    let read = |index: usize| -> Result<Vec<u8>, LoaderFilesError> {
        let (rel, package) = LOADER_FILES[index];
        read_confined(root, rel, package)
    };
    Ok(BootloaderFiles {
        syslinux_installer: read(0)?,
        gptmbr: read(1)?,
        ldlinux_c32: read(2)?,
        systemd_boot: read(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, package) in LOADER_FILES {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, package).unwrap();
        }
        dir
    }

    #[test]
    fn reads_regular_loader_files() {
        let dir = tree();
        let files = read_loader_files(dir.path()).unwrap();
        assert_eq!(files.gptmbr, b"syslinux-common");
        assert_eq!(files.systemd_boot, b"systemd-boot-efi");
    }

    /// Issue #8: a symlinked loader (absolute, or `../..` out of the tree) pulled a host file
    /// onto the ESP; now it is an error naming the package.
    #[test]
    fn issue_8_a_symlinked_boot_loader_is_refused_naming_its_package() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"host secret").unwrap();
        for target in [
            secret.clone(),
            PathBuf::from("../../../../../../../etc/hostname"),
        ] {
            let dir = tree();
            let efi = dir.path().join(SYSTEMD_BOOT_PATH);
            std::fs::remove_file(&efi).unwrap();
            std::os::unix::fs::symlink(&target, &efi).unwrap();
            let err = read_loader_files(dir.path()).unwrap_err();
            assert!(
                matches!(
                    err,
                    LoaderFilesError::NotConfined {
                        package: "systemd-boot-efi",
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("`systemd-boot-efi`"), "{err}");
        }
        // A symlinked directory on the way counts too.
        let dir = tree();
        let mbr_dir = dir.path().join("usr/lib/syslinux/mbr");
        std::fs::rename(&mbr_dir, outside.path().join("mbr")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("mbr"), &mbr_dir).unwrap();
        let err = read_loader_files(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                LoaderFilesError::NotConfined {
                    package: "syslinux-common",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_loader_names_its_package() {
        let dir = tree();
        std::fs::remove_file(dir.path().join(SYSLINUX_INSTALLER_PATH)).unwrap();
        let err = read_loader_files(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                LoaderFilesError::Missing {
                    package: "syslinux",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
