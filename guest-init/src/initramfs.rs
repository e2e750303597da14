//! Role A: `/init` in the initramfs. Mount the API filesystems, load the modules the present
//! devices need (`modalias.rs`),
//! find the root filesystem by UUID, mount it, move the API mounts into it, switch root and
//! exec `/sbin/init` (this same binary in role B).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use crate::cmdline::{Cmdline, RootSpec, format_uuid};
use crate::log::info;
use crate::modalias::{self, ModuleIndex};
use crate::sys;

/// Marker file builder puts into the initramfs: its presence selects role A.
pub const MARKER: &str = "/etc/jeos/initramfs";
/// The module list: one path per line, relative to `/lib/modules/<release>/`, in load order.
pub const MODULE_LIST: &str = "/lib/modules/jeos.list";
const NEW_ROOT: &str = "/newroot";

/// Byte offset of the ext2/3/4 superblock on the device.
const SUPERBLOCK_OFFSET: u64 = 1024;
/// `s_magic` offset inside the superblock, and its value.
const MAGIC_OFFSET: usize = 0x38;
const EXT_MAGIC: u16 = 0xEF53;
/// `s_uuid` offset inside the superblock (16 bytes).
const UUID_OFFSET: usize = 0x68;

/// The filesystem UUID of an ext2/3/4 superblock, or `None` if it is not one.
pub fn ext_uuid(superblock: &[u8]) -> Option<[u8; 16]> {
    let magic = superblock.get(MAGIC_OFFSET..MAGIC_OFFSET + 2)?;
    if u16::from_le_bytes([magic[0], magic[1]]) != EXT_MAGIC {
        return None;
    }
    superblock
        .get(UUID_OFFSET..UUID_OFFSET + 16)?
        .try_into()
        .ok()
}

/// Parses the module list: blank lines and `#` comments are skipped; absolute paths and
/// `..` components are rejected so the list cannot point outside the module tree.
pub fn parse_module_list(text: &str) -> Vec<Result<PathBuf, String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let path = Path::new(line);
            if path.components().all(|c| matches!(c, Component::Normal(_))) {
                Ok(path.to_path_buf())
            } else {
                Err(line.to_owned())
            }
        })
        .collect()
}

/// Mounts proc, sysfs and devtmpfs (already-mounted is fine).
pub fn mount_api_filesystems() {
    for (fstype, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        if is_mounted(target) {
            continue;
        }
        let _ = sys::ensure_dir(target);
        let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
        if let Err(err) = sys::mount(fstype, target, Some(fstype), flags, None) {
            info!("cannot mount {fstype} on {target}: {err}");
        }
    }
}

/// Whether `target` is a mount point according to `/proc/self/mounts`.
pub fn is_mounted(target: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|mounts| mounts.lines().any(|l| l.split(' ').nth(1) == Some(target)))
        .unwrap_or(false)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Rounds a module is tried in before its failure is final.
const MAX_ATTEMPTS: u32 = 3;

/// Loads the packed modules a present device needs (see `modalias.rs`), in rounds.
pub struct Loader {
    base: PathBuf,
    index: ModuleIndex,
    /// No `modules.alias` (an older image): load every listed module once.
    load_all: bool,
    loaded: BTreeSet<usize>,
    /// Failed attempts per module: a module whose dependency is listed after it fails
    /// with "unknown symbol" (ENOENT) once and loads in a later round.
    attempts: std::collections::BTreeMap<usize, u32>,
    /// Time spent in `finit_module`, and how many were loaded.
    pub spent: Duration,
    /// Modules loaded.
    pub count: usize,
}

impl Loader {
    /// Reads [`MODULE_LIST`], `modules.alias` and `modules.dep`.
    pub fn open() -> Loader {
        let base = Path::new("/lib/modules").join(kernel_release());
        let text = std::fs::read_to_string(MODULE_LIST).unwrap_or_else(|_| {
            info!("no {MODULE_LIST}, loading no modules");
            String::new()
        });
        let mut list = Vec::new();
        for entry in parse_module_list(&text) {
            match entry {
                Ok(path) => list.push(path),
                Err(line) => info!("ignoring module path `{line}` in {MODULE_LIST}"),
            }
        }
        let aliases = std::fs::read_to_string(base.join("modules.alias"));
        let deps = std::fs::read_to_string(base.join("modules.dep")).unwrap_or_default();
        let load_all = aliases.is_err();
        let index = ModuleIndex::parse(&list, &aliases.unwrap_or_default(), &deps);
        Loader {
            base,
            index,
            load_all,
            loaded: BTreeSet::new(),
            attempts: std::collections::BTreeMap::new(),
            spent: Duration::ZERO,
            count: 0,
        }
    }

    /// Loads the modules that devices present now need; returns how many were settled
    /// (loaded, already there, or given up on).
    pub fn round(&mut self) -> usize {
        let chosen: Vec<usize> = if self.load_all {
            (0..self.index.modules.len())
                .filter(|i| !self.loaded.contains(i))
                .collect()
        } else {
            self.index.select(
                &modalias::present_modaliases(Path::new("/sys/bus")),
                &self.loaded,
            )
        };
        let started = Instant::now();
        let mut progress = 0;
        for &index in &chosen {
            let path = self.base.join(&self.index.modules[index].path);
            let result = File::open(&path).and_then(|f| sys::finit_module(&f));
            match result {
                Ok(()) => self.count += 1,
                Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {}
                Err(err) => {
                    let tries = self.attempts.entry(index).or_insert(0);
                    *tries += 1;
                    if *tries < MAX_ATTEMPTS {
                        continue;
                    }
                    info!("cannot load module {}: {err}", path.display());
                }
            }
            self.loaded.insert(index);
            progress += 1;
        }
        self.spent += started.elapsed();
        progress
    }

    /// Names of the loaded modules, in load order.
    pub fn loaded_names(&self) -> Vec<&str> {
        self.loaded
            .iter()
            .map(|&i| self.index.modules[i].name.as_str())
            .collect()
    }
}

fn read_superblock(device: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(device)?;
    file.seek(SeekFrom::Start(SUPERBLOCK_OFFSET))?;
    let mut buf = vec![0u8; 1024];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// Scans `/sys/class/block` once for a device whose ext superblock has `uuid`.
fn find_by_uuid(uuid: &[u8; 16]) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/block").ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let device = Path::new("/dev").join(&name);
        let sb = read_superblock(&device).ok()?;
        (ext_uuid(&sb) == Some(*uuid)).then_some(device)
    })
}

/// Waits (while drivers probe, loading the drivers of devices that appear) until the root
/// device shows up.
fn wait_for_root(spec: &RootSpec, timeout: Duration, loader: &mut Loader) -> Option<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        loader.round();
        let found = match spec {
            RootSpec::Uuid(uuid) => find_by_uuid(uuid),
            RootSpec::Path(path) => Some(PathBuf::from(path)).filter(|p| p.exists()),
        };
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `statfs` magics of the filesystems an initramfs is unpacked into.
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Frees the initramfs memory: after switching root nobody can reach these files, but
/// ramfs keeps them in RAM forever. Only runs when `/` really is ramfs/tmpfs, and never
/// crosses into another filesystem (the new root is mounted below `/newroot`).
fn delete_initramfs_contents() {
    use std::os::unix::fs::MetadataExt;
    let is_ram = sys::filesystem_type("/").is_ok_and(|t| t == RAMFS_MAGIC || t == TMPFS_MAGIC);
    let Ok(root) = std::fs::symlink_metadata("/") else {
        return;
    };
    if !is_ram {
        return;
    }
    fn remove_tree(dir: &Path, device: u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.dev() != device || path == Path::new(NEW_ROOT) {
                continue;
            }
            if meta.is_dir() {
                remove_tree(&path, device);
                let _ = std::fs::remove_dir(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    remove_tree(Path::new("/"), root.dev());
    info!("deleted the initramfs contents");
}

/// Why switching to the root filesystem failed.
#[derive(Debug)]
pub enum InitramfsError {
    /// No usable `root=` on the command line.
    NoRoot,
    /// The root device never appeared.
    RootNotFound {
        /// What we looked for.
        root: String,
    },
    /// A system call failed.
    Sys {
        /// The step.
        step: &'static str,
        /// The cause.
        source: io::Error,
    },
}

impl std::fmt::Display for InitramfsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitramfsError::NoRoot => write!(f, "no `root=UUID=...` on the kernel command line"),
            InitramfsError::RootNotFound { root } => write!(f, "root device `{root}` not found"),
            InitramfsError::Sys { step, source } => write!(f, "cannot {step}: {source}"),
        }
    }
}

fn sys_step(step: &'static str) -> impl FnOnce(io::Error) -> InitramfsError {
    move |source| InitramfsError::Sys { step, source }
}

/// Runs role A up to the exec of `/sbin/init` (which learns when this stage `started`);
/// returns only on failure.
pub fn run(cmdline: &Cmdline, started: Duration) -> InitramfsError {
    match switch_root(cmdline, started) {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

fn switch_root(
    cmdline: &Cmdline,
    started: Duration,
) -> Result<std::convert::Infallible, InitramfsError> {
    let mut loader = Loader::open();
    let spec = cmdline.root.as_ref().ok_or(InitramfsError::NoRoot)?;
    let label = match spec {
        RootSpec::Uuid(uuid) => format!("UUID={}", format_uuid(uuid)),
        RootSpec::Path(path) => path.clone(),
    };
    let device = wait_for_root(spec, cmdline.root_wait, &mut loader).ok_or(
        InitramfsError::RootNotFound {
            root: label.clone(),
        },
    )?;
    // Devices that appeared with the root disk's drivers (a NIC on the same bus).
    while loader.round() > 0 {}
    info!(
        "loaded {} modules for the devices present in {} ms: {}",
        loader.count,
        loader.spent.as_millis(),
        loader.loaded_names().join(" ")
    );
    info!("root {label} is {}", device.display());
    sys::ensure_dir(NEW_ROOT).map_err(sys_step("create /newroot"))?;
    let flags = if cmdline.rw { 0 } else { libc::MS_RDONLY };
    let device = device.to_string_lossy().into_owned();
    sys::mount(&device, NEW_ROOT, Some(&cmdline.rootfstype), flags, None)
        .map_err(sys_step("mount the root filesystem"))?;
    for api in ["/dev", "/proc", "/sys"] {
        let target = format!("{NEW_ROOT}{api}");
        let _ = sys::ensure_dir(&target);
        sys::mount(api, &target, None, libc::MS_MOVE, None)
            .map_err(sys_step("move an API filesystem into the root"))?;
    }
    delete_initramfs_contents();
    std::env::set_current_dir(NEW_ROOT).map_err(sys_step("enter the root"))?;
    sys::mount(".", "/", None, libc::MS_MOVE, None).map_err(sys_step("move the root to /"))?;
    sys::chroot(".").map_err(sys_step("chroot"))?;
    std::env::set_current_dir("/").map_err(sys_step("enter the new root"))?;
    info!("switched root, executing /sbin/init");
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new("/sbin/init")
        .arg0("/sbin/init")
        .env(
            crate::phases::INITRAMFS_ENV,
            crate::phases::millis(started).to_string(),
        )
        .exec();
    Err(InitramfsError::Sys {
        step: "execute /sbin/init",
        source: err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ext_uuid() {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x68..0x78].copy_from_slice(&[7; 16]);
        assert_eq!(ext_uuid(&sb), Some([7; 16]));
        sb[0x38] = 0;
        assert_eq!(ext_uuid(&sb), None);
        assert_eq!(ext_uuid(&[0u8; 0x40]), None);
    }

    #[test]
    fn module_list_rejects_escapes() {
        let list = "# virtio\nkernel/drivers/virtio/virtio.ko\n\n /abs.ko\n../x.ko\na/./b.ko\n";
        assert_eq!(
            parse_module_list(list),
            vec![
                Ok(PathBuf::from("kernel/drivers/virtio/virtio.ko")),
                Err("/abs.ko".into()),
                Err("../x.ko".into()),
                Ok(PathBuf::from("a/b.ko")),
            ]
        );
    }
}
