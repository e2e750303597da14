//! Linux boot: bzImage loading, E820 map, command line, initramfs and the zero page
//! (Documentation/arch/x86/boot.rst, 64-bit boot protocol).
//!
//! Steps, in order (each a function here):
//! 1. [`load_bzimage`]: validate the setup header (`HdrS`, protocol >= 2.12, 64-bit entry
//!    `XLF_KERNEL_64`), copy the protected-mode kernel to [`HIMEM_START`]; the 64-bit entry
//!    point is 0x200 bytes into it.
//! 2. [`load_initramfs`]: place the initramfs page-aligned at the top of RAM, below
//!    `initrd_addr_max`.
//! 3. [`write_cmdline`]: NUL-terminated at [`CMDLINE_ADDR`], bounded by `cmdline_size`.
//! 4. [`plan_e820`] + [`build_boot_params`] (pure), then [`write_boot_params`] at
//!    [`ZERO_PAGE_ADDR`].

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::loader::KernelLoader;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::arch::x86_64::layout::{
    ACPI_MAX_BYTES, ACPI_START, CMDLINE_ADDR, CMDLINE_MAX_BYTES, EBDA_START, HIMEM_START,
    ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemoryMmap;

/// E820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type: reserved.
pub const E820_RESERVED: u32 = 2;
/// `boot_flag` magic.
pub const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `HdrS`.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// Oldest boot protocol with `xloadflags` (2.12).
pub const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// `xloadflags` bit: the kernel has a 64-bit entry point at +0x200.
pub const XLF_KERNEL_64: u16 = 1;
/// `loadflags` bit: protected-mode code is loaded at 0x100000.
pub const LOADED_HIGH: u8 = 1;
/// `type_of_loader`: "undefined" boot loader (boot.rst assigns 0xff to loaders without an id).
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Offset of the 64-bit entry point inside the protected-mode kernel.
pub const STARTUP_64_OFFSET: u64 = 0x200;
const PAGE_SIZE: u64 = 0x1000;

/// Errors while loading the kernel, initramfs and boot parameters.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel or initramfs file cannot be opened or read.
    #[error("cannot read `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// linux-loader rejected the image (no `HdrS`, not loadable high, does not fit RAM).
    #[error("`{path}` is not a loadable bzImage")]
    Load {
        /// The kernel file.
        path: PathBuf,
        /// linux-loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The kernel's boot protocol is older than 2.12.
    #[error("`{path}` uses boot protocol {version:#06x}; 64-bit boot needs at least 0x020c")]
    OldBootProtocol {
        /// The kernel file.
        path: PathBuf,
        /// `setup_header.version`.
        version: u16,
    },
    /// The kernel has no 64-bit entry point.
    #[error("`{path}` has no 64-bit entry point (`XLF_KERNEL_64` not set)")]
    No64BitEntry {
        /// The kernel file.
        path: PathBuf,
    },
    /// The initramfs does not fit below `initrd_addr_max` above the kernel.
    #[error("initramfs `{path}` ({size_bytes} bytes) does not fit in guest memory")]
    InitramfsTooLarge {
        /// The initramfs file.
        path: PathBuf,
        /// Its size.
        size_bytes: u64,
    },
    /// The command line is longer than the kernel accepts.
    #[error("kernel command line of {length} bytes exceeds the limit of {limit}")]
    CmdlineTooLong {
        /// Bytes (without NUL).
        length: usize,
        /// Maximum (without NUL).
        limit: usize,
    },
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// Too many E820 entries for the zero page.
    #[error("{count} E820 entries do not fit in the zero page")]
    TooManyE820Entries {
        /// Entries.
        count: usize,
    },
    /// Writing into guest memory failed.
    #[error("cannot write the {what} into guest memory at {address:#x}")]
    GuestMemory {
        /// What was written.
        what: &'static str,
        /// Where.
        address: u64,
        /// vm-memory's error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// The kernel as loaded.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// The 64-bit entry point.
    pub entry: GuestAddress,
    /// First byte after the loaded kernel image.
    pub end: u64,
    /// The kernel's setup header (copied into the zero page).
    pub header: setup_header,
}

/// The loaded initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedInitramfs {
    /// Guest physical address.
    pub address: u64,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// One E820 map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub address: u64,
    /// Size in bytes.
    pub size_bytes: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootError + '_ {
    move |source| BootError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads a bzImage and checks it supports the 64-bit boot protocol.
///
/// # Errors
///
/// [`BootError`] for an unreadable or unsupported image.
pub fn load_bzimage(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let mut file = File::open(path).map_err(io(path))?;
    let result =
        BzImage::load(mem, Some(GuestAddress(HIMEM_START)), &mut file, None).map_err(|source| {
            BootError::Load {
                path: path.to_owned(),
                source,
            }
        })?;
    let header = result.setup_header.ok_or_else(|| BootError::No64BitEntry {
        path: path.to_owned(),
    })?;
    let version = header.version;
    if version < MIN_BOOT_PROTOCOL {
        return Err(BootError::OldBootProtocol {
            path: path.to_owned(),
            version,
        });
    }
    let xloadflags = header.xloadflags;
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::No64BitEntry {
            path: path.to_owned(),
        });
    }
    Ok(LoadedKernel {
        entry: GuestAddress(result.kernel_load.0 + STARTUP_64_OFFSET),
        end: result.kernel_end,
        header,
    })
}

/// Pure placement of the initramfs: page-aligned, as high as possible below both the end
/// of RAM and `initrd_addr_max`, above `kernel_end`.
#[must_use]
pub fn plan_initramfs(
    size_bytes: u64,
    mem_end: u64,
    initrd_addr_max: u32,
    kernel_end: u64,
) -> Option<u64> {
    // initrd_addr_max is the highest address the initrd may *occupy* (inclusive).
    let limit = mem_end.min(u64::from(initrd_addr_max).saturating_add(1));
    let start = limit.checked_sub(size_bytes)? & !(PAGE_SIZE - 1);
    (start >= kernel_end).then_some(start)
}

/// Reads the initramfs into the top of guest memory (see [`plan_initramfs`]).
///
/// # Errors
///
/// [`BootError::InitramfsTooLarge`] if it does not fit; IO errors.
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<LoadedInitramfs, BootError> {
    let mut file = File::open(path).map_err(io(path))?;
    let size_bytes = file.metadata().map_err(io(path))?.len();
    let mem_end = mem.last_addr().0 + 1;
    let too_large = || BootError::InitramfsTooLarge {
        path: path.to_owned(),
        size_bytes,
    };
    let initrd_addr_max = match kernel.header.initrd_addr_max {
        0 => 0x37ff_ffff, // boot.rst: protocol < 2.03 default
        v => v,
    };
    let address =
        plan_initramfs(size_bytes, mem_end, initrd_addr_max, kernel.end).ok_or_else(too_large)?;
    let count = usize::try_from(size_bytes).map_err(|_| too_large())?;
    mem.read_exact_volatile_from(GuestAddress(address), &mut file, count)
        .map_err(|source| BootError::GuestMemory {
            what: "initramfs",
            address,
            source,
        })?;
    Ok(LoadedInitramfs {
        address,
        size_bytes,
    })
}

/// Writes the NUL-terminated command line at [`CMDLINE_ADDR`]; returns its length
/// without the NUL.
///
/// # Errors
///
/// [`BootError::CmdlineTooLong`] beyond the kernel's `cmdline_size` (or our buffer),
/// [`BootError::CmdlineNul`].
pub fn write_cmdline(
    mem: &GuestMemoryMmap,
    cmdline: &str,
    header: &setup_header,
) -> Result<u32, BootError> {
    let kernel_limit = match header.cmdline_size {
        0 => 255,
        v => usize::try_from(v).unwrap_or(usize::MAX),
    };
    let limit = kernel_limit.min(CMDLINE_MAX_BYTES - 1);
    if cmdline.len() > limit {
        return Err(BootError::CmdlineTooLong {
            length: cmdline.len(),
            limit,
        });
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|source| BootError::GuestMemory {
            what: "command line",
            address: CMDLINE_ADDR,
            source,
        })?;
    Ok(u32::try_from(cmdline.len()).expect("bounded by CMDLINE_MAX_BYTES"))
}

/// The E820 map for `mem_end` bytes of RAM: low RAM below the EBDA, the BIOS/ACPI area
/// reserved, RAM from 1 MiB to the end.
#[must_use]
pub fn plan_e820(mem_end: u64) -> Vec<E820Entry> {
    vec![
        E820Entry {
            address: 0,
            size_bytes: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            address: ACPI_START,
            size_bytes: ACPI_MAX_BYTES,
            kind: E820_RESERVED,
        },
        E820Entry {
            address: HIMEM_START,
            size_bytes: mem_end.saturating_sub(HIMEM_START),
            kind: E820_RAM,
        },
    ]
}

/// Everything the zero page records.
#[derive(Debug, Clone)]
pub struct BootParamsConfig {
    /// The kernel's setup header.
    pub header: setup_header,
    /// Command line length without NUL.
    pub cmdline_len: u32,
    /// The initramfs, if any.
    pub initramfs: Option<LoadedInitramfs>,
    /// The E820 map.
    pub e820: Vec<E820Entry>,
    /// Guest address of the ACPI RSDP.
    pub rsdp_address: u64,
}

/// Builds the zero page (pure).
///
/// # Errors
///
/// [`BootError::TooManyE820Entries`].
pub fn build_boot_params(config: &BootParamsConfig) -> Result<boot_params, BootError> {
    let mut params = boot_params::default();
    if config.e820.len() > params.e820_table.len() {
        return Err(BootError::TooManyE820Entries {
            count: config.e820.len(),
        });
    }
    params.hdr = config.header;
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.loadflags |= LOADED_HIGH;
    params.hdr.vid_mode = 0xffff; // "normal"
    params.hdr.cmd_line_ptr =
        u32::try_from(CMDLINE_ADDR).expect("the command line lives below 4 GiB");
    params.ext_cmd_line_ptr = 0;
    params.hdr.cmdline_size = config.cmdline_len + 1;
    if let Some(initramfs) = config.initramfs {
        // Split into the 32-bit header field and the ext_ field for the high bits.
        params.hdr.ramdisk_image = (initramfs.address & 0xffff_ffff) as u32;
        params.ext_ramdisk_image = (initramfs.address >> 32) as u32;
        params.hdr.ramdisk_size = (initramfs.size_bytes & 0xffff_ffff) as u32;
        params.ext_ramdisk_size = (initramfs.size_bytes >> 32) as u32;
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&config.e820) {
        *slot = boot_e820_entry {
            addr: entry.address,
            size: entry.size_bytes,
            r#type: entry.kind,
        };
    }
    params.e820_entries = u8::try_from(config.e820.len()).expect("checked against the table");
    params.acpi_rsdp_addr = config.rsdp_address;
    Ok(params)
}

/// Writes the zero page at [`ZERO_PAGE_ADDR`].
///
/// # Errors
///
/// [`BootError::GuestMemory`].
pub fn write_boot_params(mem: &GuestMemoryMmap, params: &boot_params) -> Result<(), BootError> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|source| BootError::GuestMemory {
            what: "zero page",
            address: ZERO_PAGE_ADDR,
            source,
        })
}

/// Builds a minimal bzImage-shaped blob around `payload` (64-bit code placed at the entry
/// offset 0x200 of the protected-mode part). Used by tests and benchmarks to drive
/// synthetic guests through the same loader path as a real kernel.
#[must_use]
pub fn synthetic_bzimage(payload: &[u8]) -> Vec<u8> {
    let setup_sects: u8 = 1;
    let mut image = vec![0u8; 512 * (usize::from(setup_sects) + 1)];
    let put = |image: &mut Vec<u8>, offset: usize, bytes: &[u8]| {
        image[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut image, 0x1f1, &[setup_sects]);
    put(&mut image, 0x1fe, &BOOT_FLAG_MAGIC.to_le_bytes());
    put(&mut image, 0x202, &HDRS_MAGIC.to_le_bytes());
    put(&mut image, 0x206, &0x020fu16.to_le_bytes());
    put(&mut image, 0x211, &[LOADED_HIGH]);
    put(&mut image, 0x214, &0x10_0000u32.to_le_bytes());
    put(&mut image, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut image, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut image, 0x236, &XLF_KERNEL_64.to_le_bytes());
    put(&mut image, 0x238, &2048u32.to_le_bytes()); // cmdline_size
    // Protected-mode part: 0x200 bytes of `hlt` for the (unused) 32-bit entry.
    image.extend(std::iter::repeat_n(0xf4u8, 0x200));
    image.extend_from_slice(payload);
    image
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::memory::create_guest_memory;

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn loads_synthetic_bzimage_at_1_mib() {
        let mem = create_guest_memory(32).unwrap();
        let kernel = write_temp(&synthetic_bzimage(&[0x90, 0xf4]));
        let loaded = load_bzimage(&mem, kernel.path()).unwrap();
        assert_eq!(loaded.entry, GuestAddress(0x10_0200));
        assert_eq!(loaded.end, 0x10_0202);
        let mut code = [0u8; 2];
        mem.read_slice(&mut code, loaded.entry).unwrap();
        assert_eq!(code, [0x90, 0xf4]);
    }

    #[test]
    fn rejects_kernel_without_64_bit_entry() {
        let mem = create_guest_memory(32).unwrap();
        let mut image = synthetic_bzimage(&[0xf4]);
        image[0x236] = 0;
        let kernel = write_temp(&image);
        assert!(matches!(
            load_bzimage(&mem, kernel.path()),
            Err(BootError::No64BitEntry { .. })
        ));
    }

    #[test]
    fn rejects_old_boot_protocol() {
        let mem = create_guest_memory(32).unwrap();
        let mut image = synthetic_bzimage(&[0xf4]);
        image[0x206..0x208].copy_from_slice(&0x020bu16.to_le_bytes());
        let kernel = write_temp(&image);
        assert!(matches!(
            load_bzimage(&mem, kernel.path()),
            Err(BootError::OldBootProtocol {
                version: 0x020b,
                ..
            })
        ));
    }

    #[test]
    fn rejects_non_bzimage() {
        let mem = create_guest_memory(32).unwrap();
        let kernel = write_temp(&[0u8; 4096]);
        assert!(matches!(
            load_bzimage(&mem, kernel.path()),
            Err(BootError::Load { .. })
        ));
        assert!(matches!(
            load_bzimage(&mem, Path::new("/nonexistent/vmlinuz")),
            Err(BootError::Io { .. })
        ));
    }

    #[test]
    fn initramfs_goes_to_top_of_ram_page_aligned() {
        assert_eq!(
            plan_initramfs(0x1800, 0x200_0000, 0x7fff_ffff, 0x20_0000),
            Some(0x200_0000 - 0x2000)
        );
        // initrd_addr_max below the end of RAM wins.
        assert_eq!(
            plan_initramfs(0x1000, 0x8000_0000, 0x37ff_ffff, 0x20_0000),
            Some(0x3800_0000 - 0x1000)
        );
        assert_eq!(
            plan_initramfs(0x200_0000, 0x200_0000, u32::MAX, 0x20_0000),
            None
        );
    }

    #[test]
    fn loads_initramfs_and_reports_too_large() {
        let mem = create_guest_memory(16).unwrap();
        let kernel_file = write_temp(&synthetic_bzimage(&[0xf4]));
        let kernel = load_bzimage(&mem, kernel_file.path()).unwrap();
        let initrd = write_temp(b"070701 cpio bytes");
        let loaded = load_initramfs(&mem, initrd.path(), &kernel).unwrap();
        assert_eq!(loaded.address, (16 << 20) - 0x1000);
        assert_eq!(loaded.size_bytes, 17);
        let mut back = [0u8; 6];
        mem.read_slice(&mut back, GuestAddress(loaded.address))
            .unwrap();
        assert_eq!(&back, b"070701");
        let huge = write_temp(&vec![0u8; 17 << 20]);
        assert!(matches!(
            load_initramfs(&mem, huge.path(), &kernel),
            Err(BootError::InitramfsTooLarge { .. })
        ));
    }

    #[test]
    fn cmdline_is_bounded_and_nul_terminated() {
        let mem = create_guest_memory(16).unwrap();
        let mut header = setup_header {
            cmdline_size: 16,
            ..Default::default()
        };
        assert_eq!(write_cmdline(&mem, "console=ttyS0", &header).unwrap(), 13);
        let mut back = [0xffu8; 14];
        mem.read_slice(&mut back, GuestAddress(CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&back, b"console=ttyS0\0");
        assert!(matches!(
            write_cmdline(&mem, "console=ttyS0 quiet", &header),
            Err(BootError::CmdlineTooLong {
                length: 19,
                limit: 16
            })
        ));
        header.cmdline_size = 2048;
        assert!(matches!(
            write_cmdline(&mem, "a\0b", &header),
            Err(BootError::CmdlineNul)
        ));
    }

    #[test]
    fn e820_map_reserves_bios_area() {
        let map = plan_e820(256 << 20);
        assert_eq!(
            map,
            vec![
                E820Entry {
                    address: 0,
                    size_bytes: 0x9_fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    address: 0xe_0000,
                    size_bytes: 0x2_0000,
                    kind: E820_RESERVED
                },
                E820Entry {
                    address: 0x10_0000,
                    size_bytes: (256 << 20) - 0x10_0000,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn zero_page_fields() {
        let header = setup_header {
            version: 0x020f,
            xloadflags: XLF_KERNEL_64,
            ..Default::default()
        };
        let params = build_boot_params(&BootParamsConfig {
            header,
            cmdline_len: 13,
            initramfs: Some(LoadedInitramfs {
                address: 0x1_2345_6000,
                size_bytes: 0x1_0000_0010,
            }),
            e820: plan_e820(64 << 20),
            rsdp_address: ACPI_START,
        })
        .unwrap();
        let bytes = vm_memory::ByteValued::as_slice(&params).to_vec();
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        assert_eq!(bytes.len(), 4096);
        assert_eq!(bytes[0x210], LOADER_TYPE_UNDEFINED); // type_of_loader
        assert_eq!(bytes[0x211] & LOADED_HIGH, LOADED_HIGH);
        assert_eq!(u32_at(0x202), HDRS_MAGIC);
        assert_eq!(u32_at(0x228), 0x2_0000); // cmd_line_ptr
        assert_eq!(u32_at(0x218), 0x2345_6000); // ramdisk_image
        assert_eq!(u32_at(0x0c0), 0x1); // ext_ramdisk_image
        assert_eq!(u32_at(0x21c), 0x10); // ramdisk_size
        assert_eq!(u32_at(0x0c4), 0x1); // ext_ramdisk_size
        assert_eq!(u64_at(0x070), ACPI_START); // acpi_rsdp_addr
        assert_eq!(bytes[0x1e8], 3); // e820_entries
        assert_eq!(u64_at(0x2d0 + 2 * 20), 0x10_0000);
        assert_eq!(u64_at(0x2d0 + 2 * 20 + 8), (64 << 20) - 0x10_0000);
        assert_eq!(u32_at(0x2d0 + 20 + 16), E820_RESERVED);
    }

    #[test]
    fn too_many_e820_entries() {
        let entry = E820Entry {
            address: 0,
            size_bytes: 1,
            kind: E820_RAM,
        };
        let err = build_boot_params(&BootParamsConfig {
            header: setup_header::default(),
            cmdline_len: 0,
            initramfs: None,
            e820: vec![entry; 129],
            rsdp_address: 0,
        })
        .unwrap_err();
        assert!(matches!(err, BootError::TooManyE820Entries { count: 129 }));
    }
}
