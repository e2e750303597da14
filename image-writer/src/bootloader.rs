//! Boot loaders for BIOS and UEFI, installed in-process from files of Debian packages, and
//! [`write_disk`], which assembles the whole disk.
//!
//! Choice (simplest robust combination, both read the same FAT ESP):
//! - **UEFI: systemd-boot.** `systemd-bootx64.efi` copied to the removable-media path
//!   `/EFI/BOOT/BOOTX64.EFI` (no NVRAM entry needed), `/loader/loader.conf` and
//!   `/loader/entries/jeos.conf` naming `/vmlinuz`, `/initrd.img` and the command line.
//!   It is a plain file copy plus two text files; no installer runs.
//! - **BIOS: SYSLINUX 6.04.** `gptmbr.bin` (440 bytes) in the protective MBR finds the GPT
//!   partition with the legacy-BIOS-bootable attribute (the ESP) and chains to its volume
//!   boot record; that is `ldlinux.bss` merged into our FAT boot sector (BPB kept), which
//!   loads `ldlinux.sys` through a sector list patched into it. Because our FAT writer
//!   stores every file contiguously and reports where, the whole job of the `syslinux`
//!   installer (libinstaller `syslinux_patch`) is done here without mtools or a mount.
//!   GRUB i386-pc was rejected: it needs `grub-mkimage` (LZMA-compressed core.img built
//!   from modules) and a BIOS boot partition.
//!
//! Debian ships `ldlinux.bss` and `ldlinux.sys` only inside the installer binary
//! (`/usr/bin/syslinux`, package `syslinux`): they are the 512-byte boot sector followed
//! immediately by ldlinux.sys in its data section, and ldlinux.sys ends where the embedded
//! `ldlinux.c32` ELF image begins. [`SyslinuxImages::from_installer`] finds them by those
//! markers and validates the patch area.
//!
//! Files needed, as paths inside the Debian packages (bookworm):
//!
//! | file | package |
//! |---|---|
//! | `/usr/bin/syslinux` (embedded ldlinux.bss + ldlinux.sys) | `syslinux` |
//! | `/usr/lib/syslinux/mbr/gptmbr.bin` | `syslinux-common` |
//! | `/usr/lib/syslinux/modules/bios/ldlinux.c32` | `syslinux-common` |
//! | `/usr/lib/systemd/boot/efi/systemd-bootx64.efi` | `systemd-boot-efi` |
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::ext4::{Ext4Config, Ext4Error, write_ext4};
use crate::fat::{FatConfig, FatDir, FatError, FatImage, FatType, build_fat};
use crate::gpt::{GptError, Guid, write_gpt};
use crate::layout::{
    ALIGNMENT_BYTES, DiskLayout, DiskSpec, LayoutError, PartitionRole, SECTOR_SIZE, Seed, round_up,
};

/// Magic at the start of ldlinux.sys's patch area (`LDLINUX_MAGIC`).
pub const LDLINUX_MAGIC: u32 = 0x3EB2_02FE;
/// Paths of the loader files inside the extracted Debian packages.
pub const SYSLINUX_INSTALLER_PATH: &str = "usr/bin/syslinux";
/// `gptmbr.bin` in `syslinux-common`.
pub const GPTMBR_PATH: &str = "usr/lib/syslinux/mbr/gptmbr.bin";
/// `ldlinux.c32` in `syslinux-common`.
pub const LDLINUX_C32_PATH: &str = "usr/lib/syslinux/modules/bios/ldlinux.c32";
/// systemd-boot in `systemd-boot-efi`.
pub const SYSTEMD_BOOT_PATH: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

const ADV_MAGIC1: u32 = 0x5A2D_2FA5;
const ADV_MAGIC2: u32 = 0xA304_1767;
const ADV_MAGIC3: u32 = 0xDD28_BF64;

/// Errors from preparing or installing boot loaders and writing the disk.
#[derive(Debug, thiserror::Error)]
pub enum BootloaderError {
    /// A loader file could not be read.
    #[error("cannot read boot loader file `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The SYSLINUX installer does not contain recognisable ldlinux images.
    #[error("no ldlinux.bss/ldlinux.sys found in the syslinux installer: {what}")]
    NoSyslinuxImages {
        /// What was missing.
        what: &'static str,
    },
    /// `gptmbr.bin` has the wrong size.
    #[error("`gptmbr.bin` is {len} bytes, expected 440")]
    BadGptMbr {
        /// Its length.
        len: usize,
    },
    /// Building the ESP failed.
    #[error("building the EFI system partition")]
    Fat(#[source] FatError),
    /// Building the root file system failed.
    #[error("building the root file system")]
    Ext4(#[source] Ext4Error),
    /// Planning the layout failed.
    #[error("planning the disk layout")]
    Layout(#[source] LayoutError),
    /// Writing the partition table failed.
    #[error("writing the partition table")]
    Gpt(#[source] GptError),
    /// Writing the disk failed.
    #[error("I/O on `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The command line contains a newline.
    #[error("kernel command line must be one line")]
    BadCmdline,
    /// The GRUB EFI image is not laid out as GRUB writes it.
    #[error("unexpected GRUB EFI image: {what}")]
    GrubImage {
        /// What was wrong.
        what: &'static str,
    },
}

/// The loader files, as bytes from the extracted Debian packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootloaderFiles {
    /// `/usr/bin/syslinux` from `syslinux` (holds ldlinux.bss and ldlinux.sys).
    pub syslinux_installer: Vec<u8>,
    /// `gptmbr.bin` from `syslinux-common`.
    pub gptmbr: Vec<u8>,
    /// `ldlinux.c32` (BIOS) from `syslinux-common`.
    pub ldlinux_c32: Vec<u8>,
    /// `systemd-bootx64.efi` from `systemd-boot-efi`.
    pub systemd_boot: Vec<u8>,
}

impl BootloaderFiles {
    /// Reads the files from a directory where the packages were extracted (the paths in the
    /// module docs, relative to `root`).
    ///
    /// # Errors
    /// [`BootloaderError::Read`].
    pub fn from_extracted(root: &Path) -> Result<Self, BootloaderError> {
        let read = |rel: &str| {
            let path = root.join(rel);
            std::fs::read(&path).map_err(|source| BootloaderError::Read { path, source })
        };
        Ok(Self {
            syslinux_installer: read(SYSLINUX_INSTALLER_PATH)?,
            gptmbr: read(GPTMBR_PATH)?,
            ldlinux_c32: read(LDLINUX_C32_PATH)?,
            systemd_boot: read(SYSTEMD_BOOT_PATH)?,
        })
    }
}

/// `ldlinux.bss` (boot sector template) and `ldlinux.sys` extracted from the installer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslinuxImages {
    /// The 512-byte volume boot record template.
    pub boot_sector: [u8; 512],
    /// ldlinux.sys, unpatched.
    pub ldlinux_sys: Vec<u8>,
    /// Offset of the patch area in `ldlinux_sys`.
    patch_area: usize,
}

fn get_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl SyslinuxImages {
    /// Finds the boot sector and ldlinux.sys inside the `syslinux` installer binary.
    ///
    /// # Errors
    /// [`BootloaderError::NoSyslinuxImages`].
    pub fn from_installer(installer: &[u8]) -> Result<Self, BootloaderError> {
        let missing = |what| BootloaderError::NoSyslinuxImages { what };
        let magic = LDLINUX_MAGIC.to_le_bytes();
        // ldlinux.sys starts with "\r\nSYSLINUX " and is preceded by the boot sector.
        let banner = b"\r\nSYSLINUX ";
        let mut search = 0;
        let start = loop {
            let pos = installer
                .get(search..)
                .and_then(|s| s.windows(banner.len()).position(|w| w == banner))
                .ok_or_else(|| missing("no ldlinux.sys banner"))?
                + search;
            // The images sit wherever the linker put them (no sector alignment inside the
            // ELF file); the boot sector's signature and the magic identify them.
            let ok = pos >= 512
                && installer[pos - 2..pos] == [0x55, 0xAA]
                && installer[pos - 8..pos - 4] == magic;
            if ok {
                break pos;
            }
            search = pos + 1;
        };
        let rest = &installer[start..];
        // ldlinux.c32 follows on a sector boundary (bin2c pads ldlinux.sys to 512 bytes).
        let elf = (512..rest.len())
            .step_by(512)
            .find(|&at| rest[at..].starts_with(b"\x7fELF\x01\x01\x01"))
            .ok_or_else(|| missing("no ldlinux.c32 after ldlinux.sys"))?;
        let sys = &rest[..elf];
        if sys.len() < 4096 {
            return Err(missing("ldlinux.sys is too short"));
        }
        let patch_area = sys
            .windows(4)
            .position(|w| w == magic)
            .ok_or_else(|| missing("no patch area"))?;
        if patch_area % 4 != 0 {
            return Err(missing("patch area is not dword aligned"));
        }
        let images = Self {
            boot_sector: installer[start - 512..start]
                .try_into()
                .expect("512-byte slice"),
            ldlinux_sys: sys.to_vec(),
            patch_area,
        };
        images
            .epa()
            .ok_or_else(|| missing("extended patch area out of range"))?;
        Ok(images)
    }

    /// Offsets in the extended patch area, validated to lie within the images.
    fn epa(&self) -> Option<Epa> {
        let sys = &self.ldlinux_sys;
        let epa = usize::from(get_u16(sys, self.patch_area + 22)?);
        let field = |i: usize| get_u16(sys, epa + 2 * i).map(usize::from);
        let e = Epa {
            adv_ptrs: field(0)?,
            dir: field(1)?,
            dir_len: field(2)?,
            sec_ptrs: field(5)?,
            sec_ptr_count: field(6)?,
            sect1_lo: field(7)?,
            sect1_hi: field(8)?,
        };
        let fits = e.adv_ptrs + 16 <= sys.len()
            && e.dir + e.dir_len <= sys.len()
            && e.sec_ptrs + 10 * e.sec_ptr_count <= sys.len()
            && e.sect1_lo + 2 <= 512
            && e.sect1_hi + 2 <= 512;
        fits.then_some(e)
    }
}

struct Epa {
    adv_ptrs: usize,
    dir: usize,
    dir_len: usize,
    sec_ptrs: usize,
    sec_ptr_count: usize,
    sect1_lo: usize,
    sect1_hi: usize,
}

/// The contents of `/ldlinux.sys` before patching: the image padded to whole sectors plus
/// two empty ADV sectors (auxiliary data vector).
#[must_use]
pub fn ldlinux_sys_placeholder(images: &SyslinuxImages) -> Vec<u8> {
    let mut data = images.ldlinux_sys.clone();
    data.resize(data.len().next_multiple_of(512), 0);
    for _ in 0..2 {
        let mut adv = [0u8; 512];
        adv[0..4].copy_from_slice(&ADV_MAGIC1.to_le_bytes());
        adv[4..8].copy_from_slice(&ADV_MAGIC2.to_le_bytes()); // checksum of an empty ADV
        adv[508..512].copy_from_slice(&ADV_MAGIC3.to_le_bytes());
        data.extend_from_slice(&adv);
    }
    data
}

/// Patches ldlinux.sys for a file starting at volume sector `first_sector` (contiguous)
/// and returns (patched file bytes, patched boot sector). Mirrors libinstaller's
/// `syslinux_patch` for the contiguous case (pure).
///
/// # Errors
/// [`BootloaderError::NoSyslinuxImages`] when the extent table is too small.
pub fn patch_ldlinux(
    images: &SyslinuxImages,
    first_sector: u64,
) -> Result<(Vec<u8>, [u8; 512]), BootloaderError> {
    let epa = images.epa().ok_or(BootloaderError::NoSyslinuxImages {
        what: "extended patch area out of range",
    })?;
    let mut file = ldlinux_sys_placeholder(images);
    let image_len = images.ldlinux_sys.len();
    let nsect = image_len.div_ceil(512) + 2;
    let sectors: Vec<u64> = (0..nsect as u64).map(|i| first_sector + i).collect();
    let mut boot = images.boot_sector;
    // sect1ptr0/1 point at a 32-bit value split in two halves in the boot sector.
    let first = u32::try_from(sectors[0]).map_err(|_| BootloaderError::NoSyslinuxImages {
        what: "ldlinux.sys beyond 2 TiB",
    })?;
    boot[epa.sect1_lo..epa.sect1_lo + 4].copy_from_slice(&first.to_le_bytes());
    boot[epa.sect1_hi..epa.sect1_hi + 4].copy_from_slice(&0u32.to_le_bytes());

    let pa = images.patch_area;
    let dwords = image_len / 4;
    file[pa + 8..pa + 10].copy_from_slice(&u16::try_from(nsect - 2).expect("small").to_le_bytes());
    file[pa + 10..pa + 12].copy_from_slice(&2u16.to_le_bytes());
    file[pa + 12..pa + 16].copy_from_slice(&u32::try_from(dwords).expect("small").to_le_bytes());

    // Extents for sectors 1..nsect-2 (the boot sector loads sector 0, ADVs are separate),
    // never crossing a 64 KiB boundary of the load address that starts at 0x8000.
    let body = &sectors[1..nsect - 2];
    let mut extents: Vec<(u64, u16)> = Vec::new();
    let mut addr: u64 = 0x8000;
    let mut base = addr;
    let mut run: Option<(u64, u64)> = None; // (lba, len)
    for &sect in body {
        if let Some((lba, len)) = run {
            let xbytes = (len + 1) * 512;
            if sect == lba + len
                && xbytes < 65536
                && ((addr ^ (base + xbytes - 1)) & 0xFFFF_0000) == 0
            {
                run = Some((lba, len + 1));
                addr += 512;
                continue;
            }
            extents.push((lba, u16::try_from(len).expect("< 128")));
        }
        base = addr;
        run = Some((sect, 1));
        addr += 512;
    }
    if let Some((lba, len)) = run {
        extents.push((lba, u16::try_from(len).expect("< 128")));
    }
    if extents.len() > epa.sec_ptr_count {
        return Err(BootloaderError::NoSyslinuxImages {
            what: "too few sector extent slots",
        });
    }
    for slot in 0..epa.sec_ptr_count {
        let at = epa.sec_ptrs + 10 * slot;
        let (lba, len) = extents.get(slot).copied().unwrap_or((0, 0));
        file[at..at + 8].copy_from_slice(&lba.to_le_bytes());
        file[at + 8..at + 10].copy_from_slice(&len.to_le_bytes());
    }
    file[epa.adv_ptrs..epa.adv_ptrs + 8].copy_from_slice(&sectors[nsect - 2].to_le_bytes());
    file[epa.adv_ptrs + 8..epa.adv_ptrs + 16].copy_from_slice(&sectors[nsect - 1].to_le_bytes());
    // Install directory: the ESP root, where ldlinux.c32 and syslinux.cfg live.
    if epa.dir_len >= 2 {
        file[epa.dir..epa.dir + 2].copy_from_slice(b"/\0");
    }
    // Checksum: LDLINUX_MAGIC minus the sum of all dwords of the image.
    file[pa + 16..pa + 20].fill(0);
    let mut csum = LDLINUX_MAGIC;
    for i in 0..dwords {
        let v = get_u32(&file, 4 * i).expect("within image");
        csum = csum.wrapping_sub(v);
    }
    file[pa + 16..pa + 20].copy_from_slice(&csum.to_le_bytes());
    Ok((file, boot))
}

/// Installs SYSLINUX into a built ESP that contains the placeholder `/ldlinux.sys`.
///
/// # Errors
/// [`BootloaderError`] when ldlinux.sys is missing from the image or cannot be patched.
pub fn install_syslinux(
    esp: &mut FatImage,
    images: &SyslinuxImages,
) -> Result<(), BootloaderError> {
    let extent =
        esp.file_extent("/ldlinux.sys")
            .ok_or(BootloaderError::Fat(FatError::Overwrite {
                path: "/ldlinux.sys".into(),
            }))?;
    let (file, boot) = patch_ldlinux(images, extent.first_sector)?;
    esp.overwrite_file("/ldlinux.sys", &file)
        .map_err(BootloaderError::Fat)?;
    let head: [u8; 11] = boot[..11].try_into().expect("11 bytes");
    let code: [u8; 420] = boot[0x5A..0x1FE].try_into().expect("420 bytes");
    esp.install_boot_code(&head, &code);
    Ok(())
}

/// The UEFI boot of a disk that virt-v2v can convert: Debian's monolithic GRUB
/// (`grub-efi-amd64-bin`) as `/EFI/BOOT/BOOTX64.EFI`, reading a GRUB-legacy
/// `/EFI/BOOT/menu.lst`, the configuration virt-v2v edits with Augeas (a `grub.cfg` under
/// `/EFI` would make it run `grub-mkconfig` in the guest).
///
/// The monolithic image's built-in `prefix` (`/EFI/debian`) is set to [`GRUB_PREFIX`]
/// ([`grub_with_prefix`]), so GRUB reads the ESP's `/boot/grub/grub.cfg` (outside `/EFI`,
/// where virt-v2v does not look), which only loads `legacycfg` (not built in; it and its
/// dependencies are in `/boot/grub/x86_64-efi/`) and hands over to `menu.lst`. `menu.lst` boots the kernel
/// from the root file system (`root (hd0,1)`: legacy partition numbers count from 0, so
/// this is the second GPT partition) and the initramfs from the ESP (`(hd0,0)`).
///
/// ```text
/// ESP  /EFI/BOOT/BOOTX64.EFI      GRUB (monolithic, from grub-efi-amd64-bin)
///      /boot/grub/grub.cfg        insmod legacycfg; legacy_configfile /EFI/BOOT/menu.lst
///      /boot/grub/x86_64-efi/*.mod
///      /EFI/BOOT/menu.lst         kernel (hd0,1)/boot/vmlinuz-V CMDLINE; initrd (hd0,0)/initrd.img
///      /EFI/systemd/systemd-bootx64.efi, /loader/...   systemd-boot (not the default loader)
/// root /boot/vmlinuz-V            the kernel GRUB boots
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrubLegacyBoot {
    /// [`GRUB_EFI_PATH`] (Debian's monolithic image, the one its shim loads).
    pub efi: Vec<u8>,
    /// GRUB modules for `/boot/grub/x86_64-efi/`: `(name without .mod, bytes)`.
    pub modules: Vec<(String, Vec<u8>)>,
    /// The kernel on the root file system, e.g. `/boot/vmlinuz-6.12.12-amd64`.
    pub kernel_path: String,
}

/// The monolithic GRUB in `grub-efi-amd64-unsigned` (trixie on; `grub-efi-amd64-bin`
/// before).
pub const GRUB_EFI_PATH: &str = "usr/lib/grub/x86_64-efi/monolithic/grubx64.efi";
/// Where that package keeps GRUB's modules.
pub const GRUB_MODULES_DIR: &str = "usr/lib/grub/x86_64-efi";
/// The modules `legacy_configfile` needs that the monolithic image may lack: `legacycfg`
/// and its dependencies (`moddep.lst`); one already built in is not loaded again.
pub const GRUB_LEGACY_MODULES: [&str; 4] = ["legacycfg", "password", "crypto", "gcry_md5"];
/// The GRUB-legacy configuration on the ESP.
pub const GRUB_MENU_LST: &str = "/EFI/BOOT/menu.lst";

/// `/boot/grub/grub.cfg` of a [`GrubLegacyBoot`] ESP.
#[must_use]
pub fn grub_cfg() -> String {
    format!(
        "# The boot configuration is {GRUB_MENU_LST} (GRUB legacy syntax, which virt-v2v edits).\n\
         insmod legacycfg\n\
         legacy_configfile {GRUB_MENU_LST}\n"
    )
}

/// `/EFI/BOOT/menu.lst` of a [`GrubLegacyBoot`] ESP: one entry, booted at once.
#[must_use]
pub fn grub_menu_lst(kernel_path: &str, cmdline: &str) -> String {
    format!(
        "# The UEFI boot of this appliance: GRUB (/EFI/BOOT/BOOTX64.EFI) reads this file.\n\
         # (hd0,1) is the root file system, (hd0,0) this EFI system partition.\n\
         default 0\n\
         timeout 0\n\
         hiddenmenu\n\
         \n\
         title jeos\n\
         root (hd0,1)\n\
         kernel {kernel_path} {cmdline}\n\
         initrd (hd0,0)/initrd.img\n"
    )
}

/// GRUB's directory on the ESP of a [`GrubLegacyBoot`] disk: its `grub.cfg` and modules.
pub const GRUB_PREFIX: &str = "/boot/grub";

/// Magic of GRUB's module area (`grub_module_info64`: magic, padding, offset, size).
const GRUB_MODULE_MAGIC: &[u8; 4] = b"mimg";
/// `OBJ_TYPE_PREFIX`: the module-area object holding the default `prefix`.
const GRUB_OBJ_PREFIX: u32 = 3;

/// `efi` (a GRUB EFI image) with its built-in `prefix` set to `prefix`, as
/// `grub-mkimage --prefix` would write it. Debian's monolithic image says `/EFI/debian`,
/// where `grub-install` puts a `grub.cfg`; a `grub.cfg` under `/EFI` is what virt-v2v
/// takes for GRUB 2 (and then runs `grub-mkconfig` in the guest), so jeos points GRUB at
/// [`GRUB_PREFIX`] instead. The prefix object is rewritten in place (same size, NUL
/// padded); nothing else changes.
///
/// # Errors
/// [`BootloaderError::GrubImage`] when the module area or its prefix object is not found
/// exactly once, or `prefix` does not fit in it.
pub fn grub_with_prefix(efi: &[u8], prefix: &str) -> Result<Vec<u8>, BootloaderError> {
    let bad = |what: &'static str| BootloaderError::GrubImage { what };
    let read_u32 = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            efi.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let read_u64 = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            efi.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    };
    // Every `mimg` whose objects tile its area exactly; the module area is the one.
    let mut found = Vec::new();
    for (start, _) in efi
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == GRUB_MODULE_MAGIC)
    {
        let (Some(offset), Some(size)) = (read_u64(start + 8), read_u64(start + 16)) else {
            continue;
        };
        let (Ok(offset), Ok(size)) = (usize::try_from(offset), usize::try_from(size)) else {
            continue;
        };
        let (Some(mut at), Some(end)) = (start.checked_add(offset), start.checked_add(size)) else {
            continue;
        };
        if offset < 24 || end > efi.len() {
            continue;
        }
        let mut prefixes = Vec::new();
        while at < end {
            let (Some(kind), Some(len)) = (read_u32(at), read_u32(at + 4)) else {
                break;
            };
            let len = len as usize;
            if len < 8 || at + len > end {
                break;
            }
            if kind == GRUB_OBJ_PREFIX {
                prefixes.push((at + 8, len - 8));
            }
            at += len;
        }
        if at == end {
            found.push(prefixes);
        }
    }
    let [prefixes] = found.as_slice() else {
        return Err(bad("no single module area (`mimg`)"));
    };
    let [(at, room)] = prefixes.as_slice() else {
        return Err(bad("no single prefix object in the module area"));
    };
    if prefix.len() >= *room || prefix.contains('\0') {
        return Err(bad("the new prefix does not fit the prefix object"));
    }
    let mut out = efi.to_vec();
    let slot = &mut out[*at..*at + *room];
    slot.fill(0);
    slot[..prefix.len()].copy_from_slice(prefix.as_bytes());
    Ok(out)
}

/// The FAT volume serial of the ESP written for `seed`.
#[must_use]
pub fn esp_volume_id(seed: &Seed) -> u32 {
    u32::from_le_bytes(seed.derive("fat:serial")[..4].try_into().expect("4 bytes"))
}

/// The ESP's file-system UUID as blkid and `/etc/fstab` spell it (`ABCD-1234`).
#[must_use]
pub fn esp_fs_uuid(seed: &Seed) -> String {
    let id = esp_volume_id(seed);
    format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)
}

/// Everything needed to write a bootable disk.
#[derive(Clone, Debug)]
pub struct DiskPlan {
    /// The kernel image (bzImage with EFI stub, e.g. `/boot/vmlinuz-*`).
    pub kernel: Vec<u8>,
    /// The initramfs (see [`crate::cpio::write_initramfs`]).
    pub initramfs: Vec<u8>,
    /// The kernel command line, verbatim (add `root=UUID=` from [`crate::ext4::root_fs_uuid`]).
    pub cmdline: String,
    /// Loader files from the Debian packages.
    pub loaders: BootloaderFiles,
    /// The root file system.
    pub root: Ext4Config,
    /// ESP size; `None` = contents + 25 % + 4 MiB, at least 16 MiB.
    pub esp_size_bytes: Option<u64>,
    /// More files for the ESP, `(absolute path, bytes)` (e.g. the appliance's package
    /// manifest, readable without an ext4 reader).
    pub extra_esp_files: Vec<(String, Vec<u8>)>,
    /// Source of every identifier.
    pub seed: Seed,
    /// `SOURCE_DATE_EPOCH`.
    pub timestamp: u64,
    /// UEFI through GRUB with a GRUB-legacy configuration instead of systemd-boot
    /// (`[disk] convertible`); `None`: systemd-boot is `BOOTX64.EFI`.
    pub grub: Option<GrubLegacyBoot>,
}

/// Free space kept on the ESP of a [`GrubLegacyBoot`] disk: virt-v2v refuses to convert
/// a guest with less than 10 MB free there.
pub const CONVERTIBLE_ESP_FREE_BYTES: u64 = 12 * ALIGNMENT_BYTES;

/// What [`write_disk`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskReport {
    /// Total size in bytes.
    pub size_bytes: u64,
    /// The planned layout (LBAs and GUIDs of each partition).
    pub layout: DiskLayout,
    /// ESP size in bytes and FAT type.
    pub esp_size_bytes: u64,
    /// FAT16 or FAT32.
    pub esp_fat_type: FatType,
    /// Root fs size in bytes.
    pub root_size_bytes: u64,
    /// Root file-system UUID (`root=UUID=`).
    pub root_fs_uuid: Guid,
}

/// The ESP tree: kernel, initramfs, systemd-boot with its config, SYSLINUX files.
///
/// # Errors
/// [`BootloaderError::BadCmdline`], FAT path errors.
pub fn esp_tree(plan: &DiskPlan, images: &SyslinuxImages) -> Result<FatDir, BootloaderError> {
    if plan.cmdline.contains(['\n', '\r']) {
        return Err(BootloaderError::BadCmdline);
    }
    let mut tree = FatDir::default();
    let mut add =
        |path: &str, data: Vec<u8>| tree.insert_file(path, data).map_err(BootloaderError::Fat);
    add("/vmlinuz", plan.kernel.clone())?;
    add("/initrd.img", plan.initramfs.clone())?;
    if let Some(grub) = &plan.grub {
        add(
            "/EFI/BOOT/BOOTX64.EFI",
            grub_with_prefix(&grub.efi, GRUB_PREFIX)?,
        )?;
        add(
            "/EFI/systemd/systemd-bootx64.efi",
            plan.loaders.systemd_boot.clone(),
        )?;
        add("/boot/grub/grub.cfg", grub_cfg().into_bytes())?;
        for (name, bytes) in &grub.modules {
            add(&format!("/boot/grub/x86_64-efi/{name}.mod"), bytes.clone())?;
        }
        add(
            GRUB_MENU_LST,
            grub_menu_lst(&grub.kernel_path, &plan.cmdline).into_bytes(),
        )?;
    } else {
        add("/EFI/BOOT/BOOTX64.EFI", plan.loaders.systemd_boot.clone())?;
    }
    // `timeout 0`: boot the default entry at once, no menu.
    add(
        "/loader/loader.conf",
        b"default jeos.conf\ntimeout 0\neditor no\n".to_vec(),
    )?;
    add(
        "/loader/entries/jeos.conf",
        format!(
            "title jeos\nlinux /vmlinuz\ninitrd /initrd.img\noptions {}\n",
            plan.cmdline
        )
        .into_bytes(),
    )?;
    for (path, data) in &plan.extra_esp_files {
        add(path, data.clone())?;
    }
    add("/ldlinux.sys", ldlinux_sys_placeholder(images))?;
    add("/ldlinux.c32", plan.loaders.ldlinux_c32.clone())?;
    // SERIAL 0: SYSLINUX's own messages also go to ttyS0; PROMPT 0 + TIMEOUT 0: no wait.
    add(
        "/syslinux.cfg",
        format!(
            "SERIAL 0 115200\nDEFAULT jeos\nPROMPT 0\nTIMEOUT 0\nLABEL jeos\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {}\n",
            plan.cmdline
        )
        .into_bytes(),
    )?;
    Ok(tree)
}

/// Copies `src` to `file` at `offset`, leaving all-zero 64 KiB blocks as holes: the file
/// was sized with `set_len`, so skipped blocks read as zeros and take no disk space (the
/// `.raw` is sparse; its allocated size is roughly what the image holds).
fn write_sparse(file: &mut std::fs::File, offset: u64, src: &mut dyn Read) -> std::io::Result<()> {
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; BLOCK];
    let mut position = offset;
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            match src.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Ok(());
        }
        if !crate::ova::atomic::is_zero(&buf[..filled]) {
            file.seek(SeekFrom::Start(position))?;
            file.write_all(&buf[..filled])?;
        }
        position += filled as u64;
        if filled < BLOCK {
            return Ok(());
        }
    }
}

/// Writes a complete bootable disk to `out` atomically (a temporary file next to it is
/// renamed into place once complete).
///
/// Steps: ESP (FAT, in memory) with SYSLINUX patched in, ext4 root (mkfs.ext4 + debugfs into
/// a temporary file), layout, GPT with `gptmbr.bin`, then the two partitions copied in.
///
/// # Errors
/// Any [`BootloaderError`].
pub fn write_disk(plan: &DiskPlan, out: &Path) -> Result<DiskReport, BootloaderError> {
    let images = SyslinuxImages::from_installer(&plan.loaders.syslinux_installer)?;
    if plan.loaders.gptmbr.len() != 440 {
        return Err(BootloaderError::BadGptMbr {
            len: plan.loaders.gptmbr.len(),
        });
    }
    let tree = esp_tree(plan, &images)?;
    let content: u64 = [
        plan.kernel.len(),
        plan.initramfs.len(),
        plan.loaders.systemd_boot.len(),
        plan.loaders.ldlinux_c32.len(),
        images.ldlinux_sys.len(),
    ]
    .iter()
    .map(|l| *l as u64)
    .sum();
    let (content, free) = match &plan.grub {
        Some(grub) => (
            content
                + grub.efi.len() as u64
                + grub.modules.iter().map(|m| m.1.len() as u64).sum::<u64>(),
            CONVERTIBLE_ESP_FREE_BYTES,
        ),
        None => (content, 0),
    };
    let esp_size = match plan.esp_size_bytes {
        Some(size) => size,
        None => (content + content / 4 + 4 * ALIGNMENT_BYTES + free).max(16 * ALIGNMENT_BYTES),
    };
    let esp_size = round_up(esp_size, ALIGNMENT_BYTES)
        .ok_or(BootloaderError::Layout(LayoutError::Overflow))?;

    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BootloaderError::Io { path, source }
    };
    let tmp = out.with_extension("partial");
    let root_tmp = out.with_extension("root.partial");
    let root_report = write_ext4(&plan.root, &root_tmp).map_err(BootloaderError::Ext4)?;

    let layout = DiskLayout::plan(&DiskSpec {
        esp_size_bytes: esp_size,
        root_size_bytes: root_report.size_bytes,
        bios_boot: false,
        esp_legacy_bootable: true,
        seed: plan.seed,
    })
    .map_err(BootloaderError::Layout)?;
    let esp_part = layout.partition(PartitionRole::Esp).expect("planned above");
    let root_part = layout
        .partition(PartitionRole::Root)
        .expect("planned above");

    let mut esp = build_fat(
        &FatConfig {
            size_bytes: esp_part.size_bytes(),
            volume_label: "ESP".into(),
            volume_id: esp_volume_id(&plan.seed),
            timestamp: plan.timestamp,
            hidden_sectors: u32::try_from(esp_part.first_lba.0).unwrap_or(u32::MAX),
        },
        &tree,
    )
    .map_err(BootloaderError::Fat)?;
    install_syslinux(&mut esp, &images)?;

    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.set_len(layout.total_size_bytes).map_err(io(&tmp))?;
        write_sparse(
            &mut file,
            esp_part.offset_bytes(),
            &mut esp.bytes.as_slice(),
        )
        .map_err(io(&tmp))?;
        let mut root = std::fs::File::open(&root_tmp).map_err(io(&root_tmp))?;
        write_sparse(&mut file, root_part.offset_bytes(), &mut root).map_err(io(&tmp))?;
        drop(file);
        write_gpt(&tmp, &layout, Some(&plan.loaders.gptmbr)).map_err(BootloaderError::Gpt)?;
        let file = std::fs::File::options()
            .write(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, out).map_err(io(out))
    })();
    let _ = std::fs::remove_file(&root_tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    debug_assert_eq!(layout.total_size_bytes % SECTOR_SIZE, 0);
    Ok(DiskReport {
        size_bytes: layout.total_size_bytes,
        esp_size_bytes: esp_part.size_bytes(),
        esp_fat_type: esp.fat_type,
        root_size_bytes: root_part.size_bytes(),
        root_fs_uuid: root_report.uuid,
        layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_menu_lst_boots_the_root_kernel_with_the_command_line() {
        let menu = grub_menu_lst("/boot/vmlinuz-6.12.1-amd64", "root=UUID=x rw quiet");
        assert!(
            menu.contains("\nkernel /boot/vmlinuz-6.12.1-amd64 root=UUID=x rw quiet\n"),
            "{menu}"
        );
        assert!(menu.contains("\ninitrd (hd0,0)/initrd.img\n"), "{menu}");
        assert!(grub_cfg().contains("legacy_configfile /EFI/BOOT/menu.lst\n"));
        // `root (hd0,1)` is GRUB legacy's second partition: the root file system.
        assert!(menu.contains("\nroot (hd0,1)\n"), "{menu}");
        let layout = DiskLayout::plan(&DiskSpec {
            esp_size_bytes: 32 * ALIGNMENT_BYTES,
            root_size_bytes: 64 * ALIGNMENT_BYTES,
            bios_boot: false,
            esp_legacy_bootable: true,
            seed: Seed::from_bytes(b"grub"),
        })
        .unwrap();
        assert_eq!(layout.partition_number(PartitionRole::Esp), Some(1));
        assert_eq!(layout.partition_number(PartitionRole::Root), Some(2));
    }

    /// A GRUB-like image: code, a `mimg` area with an ELF-module object, a memdisk and a
    /// prefix object.
    fn fake_grub(prefix: &[u8; 16]) -> Vec<u8> {
        let mut efi = b"MZ code mimg in the code".to_vec();
        let start = efi.len();
        let objects: Vec<(u32, Vec<u8>)> = vec![
            (0, vec![0x7F; 40]),
            (1, b"hsqs".to_vec()),
            (GRUB_OBJ_PREFIX, prefix.to_vec()),
        ];
        let size = 24 + objects.iter().map(|(_, b)| 8 + b.len()).sum::<usize>();
        efi.extend_from_slice(GRUB_MODULE_MAGIC);
        efi.extend_from_slice(&[0; 4]);
        efi.extend_from_slice(&24u64.to_le_bytes());
        efi.extend_from_slice(&(size as u64).to_le_bytes());
        for (kind, bytes) in objects {
            efi.extend_from_slice(&kind.to_le_bytes());
            efi.extend_from_slice(&(u32::try_from(8 + bytes.len()).unwrap()).to_le_bytes());
            efi.extend_from_slice(&bytes);
        }
        assert_eq!(efi.len(), start + size);
        efi.extend_from_slice(b"trailer");
        efi
    }

    #[test]
    fn grub_prefix_is_rewritten_in_place() {
        let efi = fake_grub(b"/EFI/debian\0\0\0\0\0");
        let out = grub_with_prefix(&efi, "/boot/grub").unwrap();
        assert_eq!(out.len(), efi.len());
        let at = out.windows(10).position(|w| w == b"/boot/grub").unwrap();
        assert_eq!(&out[at..at + 16], b"/boot/grub\0\0\0\0\0\0");
        let changed = efi.iter().zip(&out).filter(|(a, b)| a != b).count();
        assert!(changed <= 16, "{changed} bytes changed");
    }

    #[test]
    fn grub_prefix_errors() {
        let efi = fake_grub(b"/EFI/debian\0\0\0\0\0");
        assert!(matches!(
            grub_with_prefix(&efi, "/a/much/longer/prefix"),
            Err(BootloaderError::GrubImage { .. })
        ));
        assert!(matches!(
            grub_with_prefix(b"MZ no module area", "/boot/grub"),
            Err(BootloaderError::GrubImage { .. })
        ));
        // A truncated module area is not one.
        assert!(matches!(
            grub_with_prefix(&efi[..efi.len() - 20], "/boot/grub"),
            Err(BootloaderError::GrubImage { .. })
        ));
    }

    #[test]
    fn esp_fs_uuid_is_the_fat_serial_as_blkid_prints_it() {
        let seed = Seed::from_bytes(b"esp");
        let id = esp_volume_id(&seed);
        let uuid = esp_fs_uuid(&seed);
        assert_eq!(uuid, format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF));
        assert_eq!(u32::from_str_radix(&uuid.replace('-', ""), 16).unwrap(), id);
    }

    #[test]
    fn sparse_copy_keeps_zero_blocks_as_holes() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let mut file = std::fs::File::create(&path).unwrap();
        let size = 64 * 1024 * 1024;
        file.set_len(size).unwrap();
        let mut data = vec![0u8; 8 * 1024 * 1024 + 100];
        data[..10].fill(1);
        let n = data.len();
        data[n - 3..].fill(2);
        write_sparse(&mut file, 1024 * 1024, &mut data.as_slice()).unwrap();
        drop(file);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len() as u64, size);
        assert!(back[1024 * 1024..1024 * 1024 + n] == data[..]);
        assert!(back[..1024 * 1024].iter().all(|b| *b == 0));
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 1024 * 1024, "{allocated} bytes allocated");
    }

    /// A fake installer: some bytes, a boot sector, ldlinux.sys with a patch area and an
    /// extended patch area, then an ELF header.
    pub(crate) fn fake_installer() -> Vec<u8> {
        let mut bin = vec![0u8; 1024];
        let mut bss = [0u8; 512];
        bss[0] = 0xEB;
        bss[504..508].copy_from_slice(&LDLINUX_MAGIC.to_le_bytes());
        bss[510] = 0x55;
        bss[511] = 0xAA;
        bin.extend_from_slice(&bss);
        let mut sys = vec![0u8; 8192];
        sys[..11].copy_from_slice(b"\r\nSYSLINUX ");
        let pa = 32;
        sys[pa..pa + 4].copy_from_slice(&LDLINUX_MAGIC.to_le_bytes());
        let epa = 64u16;
        sys[pa + 22..pa + 24].copy_from_slice(&epa.to_le_bytes());
        let fields: [u16; 10] = [128, 160, 64, 0, 0, 256, 20, 0x1F8 - 8, 0x1F8 - 4, 0];
        for (i, f) in fields.iter().enumerate() {
            sys[64 + 2 * i..66 + 2 * i].copy_from_slice(&f.to_le_bytes());
        }
        bin.extend_from_slice(&sys);
        bin.extend_from_slice(b"\x7fELF\x01\x01\x01 rest of ldlinux.c32");
        bin
    }

    #[test]
    fn finds_images_in_installer() {
        let images = SyslinuxImages::from_installer(&fake_installer()).unwrap();
        assert_eq!(images.ldlinux_sys.len(), 8192);
        assert_eq!(images.boot_sector[0], 0xEB);
        assert!(matches!(
            SyslinuxImages::from_installer(b"nothing here"),
            Err(BootloaderError::NoSyslinuxImages { .. })
        ));
    }

    #[test]
    fn patch_sets_sector_list_and_checksum() {
        let images = SyslinuxImages::from_installer(&fake_installer()).unwrap();
        let (file, boot) = patch_ldlinux(&images, 1000).unwrap();
        assert_eq!(file.len(), 8192 + 1024);
        assert_eq!(get_u32(&boot, 0x1F8 - 8), Some(1000));
        // One extent: sectors 1001..=1015 (16 image sectors minus the first).
        assert_eq!(u64::from_le_bytes(file[256..264].try_into().unwrap()), 1001);
        assert_eq!(get_u16(&file, 264), Some(15));
        assert_eq!(get_u16(&file, 274), Some(0), "second slot empty");
        // ADV pointers follow the image.
        assert_eq!(u64::from_le_bytes(file[128..136].try_into().unwrap()), 1016);
        assert_eq!(u64::from_le_bytes(file[136..144].try_into().unwrap()), 1017);
        // The dwords of the image sum to LDLINUX_MAGIC with the checksum included.
        let sum = (0..8192 / 4).fold(0u32, |s, i| s.wrapping_add(get_u32(&file, 4 * i).unwrap()));
        assert_eq!(sum, LDLINUX_MAGIC);
        assert_eq!(&file[160..162], b"/\0");
    }
}
