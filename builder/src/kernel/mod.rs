//! Choosing the kernel modules an appliance's initramfs needs.
//!
//! Debian's kernel packages ship modules as `usr/lib/modules/<version>/kernel/**/*.ko.xz`
//! (after the merged-/usr rewrite), plus `modules.builtin` and `modules.order`, but no
//! `modules.dep`: `depmod` runs in the postinst, which jeos never runs. So the dependency
//! graph is rebuilt from each module's ELF `.modinfo` section (`depends=`, `softdep=pre:`),
//! decompressing only the modules the closure reaches.
//!
//! Entry points: [`KernelPackage::open`] on an unpacked kernel package, then
//! [`KernelPackage::plan_modules`] with a driver list (default: [`DEFAULT_MODULES`]), then
//! [`KernelPackage::read_module`] for each planned module's bytes.
//!
//! Module names are compared normalised (`-` becomes `_`), as the kernel does.

pub mod elf;
pub mod hardware;
pub mod modindex;
pub mod prescan;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use elf::{ElfError, find_section, parse_modinfo};

/// Largest decompressed module accepted (the biggest in-tree module, amdgpu, is ~20 MiB).
pub const MAX_MODULE_BYTES: u64 = 128 * 1024 * 1024;

/// Drivers for the hypervisors jeos targets: virtio (KVM/QEMU, Firecracker-style runners),
/// AHCI/PIIX (QEMU, VirtualBox), VMware (PVSCSI, LSI Logic, vmxnet3, e1000), Hyper-V
/// (VMBus storage and network), Xen (blkfront/netfront), AWS Nitro (ENA; its disks are
/// NVMe), Intel NICs, NVMe, SCSI disks and CD-ROMs (the OVF environment and NoCloud
/// seeds arrive on one), QEMU's fw_cfg, virtio-vsock (port forwarding and host-side checks
/// of the embedded runner; `vsock` and `vmw_vsock_virtio_transport_common` come with it as
/// dependencies), and ext4 for the root file system. Built-in ones are satisfied by the
/// kernel image.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "ahci",
    "ata_piix",
    "sd_mod",
    "nvme",
    "vmw_pvscsi",
    "mptspi",
    "mptsas",
    "hv_vmbus",
    "hv_storvsc",
    "hv_netvsc",
    "e1000",
    "e1000e",
    "vmxnet3",
    "xen_blkfront",
    "xen_netfront",
    "ena",
    "sr_mod",
    "qemu_fw_cfg",
    "vmw_vsock_virtio_transport",
    "ext4",
];

/// Errors from reading a kernel package.
#[derive(Debug, Error)]
pub enum KernelError {
    /// Reading the unpacked package failed.
    #[error("cannot read `{path}`")]
    Io {
        /// Host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file jeos reads from the kernel package is a symlink (or below one): following it
    /// could pull a file of the build host into the image.
    #[error(
        "`/{path}` in the kernel package is a symlink or not a regular file; refusing to follow it out of the package"
    )]
    NotConfined {
        /// Path inside the package.
        path: PathBuf,
    },
    /// No `usr/lib/modules/<version>` directory.
    #[error("no kernel modules directory under `{root}/usr/lib/modules`")]
    NoKernel {
        /// The package root.
        root: PathBuf,
    },
    /// Several versions and none chosen.
    #[error("several kernel versions in `{root}`: {versions:?}; choose one")]
    AmbiguousVersion {
        /// The package root.
        root: PathBuf,
        /// Versions found.
        versions: Vec<String>,
    },
    /// The chosen version is not there.
    #[error("kernel version `{version}` is not in `{root}`")]
    VersionNotFound {
        /// The package root.
        root: PathBuf,
        /// The version.
        version: String,
    },
    /// `boot/vmlinuz-<version>` is missing.
    #[error("kernel image `boot/vmlinuz-{version}` is missing from `{root}`")]
    NoVmlinuz {
        /// The package root.
        root: PathBuf,
        /// The version.
        version: String,
    },
    /// A module could not be decompressed.
    #[error("cannot decompress module `{path}`")]
    Decompress {
        /// Host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A module decompresses to more than [`MAX_MODULE_BYTES`].
    #[error("module `{path}` is larger than {limit} bytes once decompressed")]
    TooLarge {
        /// Host path.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A module's compression is not supported.
    #[error("module `{path}` uses an unsupported compression")]
    UnsupportedCompression {
        /// Host path.
        path: PathBuf,
    },
    /// A module is not a valid ELF object.
    #[error("module `{path}` is not a valid kernel module")]
    Elf {
        /// Host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: ElfError,
    },
    /// A module marked required is neither built in nor shipped.
    #[error(
        "required module `{name}` is not available in kernel {version} (neither built in nor shipped)"
    )]
    RequiredMissing {
        /// The module.
        name: String,
        /// Kernel version.
        version: String,
    },
}

/// Normalises a module name (`virtio-net` and `virtio_net` are the same module).
pub fn normalize_module_name(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// What `.modinfo` says about a module.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModuleInfo {
    /// Normalised name (`name=`, else the file name).
    pub name: String,
    /// Hard dependencies (`depends=`), normalised.
    pub depends: Vec<String>,
    /// Soft pre-dependencies (`softdep=pre: a b`), verbatim (they are often aliases such
    /// as `crypto-crc32c`); loaded first when present.
    pub softdep_pre: Vec<String>,
    /// Device aliases (`alias=`).
    pub aliases: Vec<String>,
    /// Size of the decompressed `.ko`.
    pub decompressed_size: u64,
    /// Not a file: an alias (e.g. `crc32c`) standing for the modules in `depends` that
    /// declare it (`crc32c_generic`, `crc32c_intel`). Left out of the load order.
    pub virtual_alias: bool,
}

/// Extracts [`ModuleInfo`] from a decompressed module. `fallback_name` is used when there
/// is no `name=` entry (older kernels).
pub fn module_info(ko: &[u8], fallback_name: &str) -> Result<ModuleInfo, ElfError> {
    let section = find_section(ko, ".modinfo")?.unwrap_or_default();
    let mut info = ModuleInfo {
        name: normalize_module_name(fallback_name),
        decompressed_size: ko.len() as u64,
        ..ModuleInfo::default()
    };
    for (key, value) in parse_modinfo(section) {
        match key.as_str() {
            "name" if !value.trim().is_empty() => info.name = normalize_module_name(&value),
            "depends" => {
                info.depends.extend(
                    value
                        .split(',')
                        .filter(|d| !d.trim().is_empty())
                        .map(normalize_module_name),
                );
            }
            "softdep" => {
                // `pre: a b post: c`: only `pre:` modules must be loaded first.
                let mut in_pre = false;
                for word in value.split_whitespace() {
                    match word {
                        "pre:" => in_pre = true,
                        "post:" => in_pre = false,
                        name if in_pre => info.softdep_pre.push(name.to_owned()),
                        _ => {}
                    }
                }
            }
            "alias" => info.aliases.push(value),
            _ => {}
        }
    }
    Ok(info)
}

/// One module in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedModule {
    /// Normalised name.
    pub name: String,
    /// Path inside the package (e.g. `usr/lib/modules/<v>/kernel/drivers/block/virtio_blk.ko.xz`).
    pub path: PathBuf,
    /// Decompressed size in bytes.
    pub decompressed_size: u64,
    /// Its `alias=` patterns.
    pub aliases: Vec<String>,
    /// The planned modules it needs loaded first (hard dependencies and soft
    /// pre-dependencies, virtual aliases expanded), by name.
    pub depends: Vec<String>,
}

/// The modules to put into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulePlan {
    /// Kernel version, e.g. `6.12.38+deb13-cloud-amd64`.
    pub kernel_version: String,
    /// Kernel image inside the package, e.g. `boot/vmlinuz-<version>`.
    pub vmlinuz: PathBuf,
    /// Modules in load order: every module after its dependencies; otherwise in the order
    /// the wanted list reaches them.
    pub modules: Vec<PlannedModule>,
    /// Wanted modules (or dependencies) this kernel flavour neither builds in nor ships.
    pub missing: Vec<String>,
    /// Wanted modules (or dependencies) built into the kernel image, sorted.
    pub builtin: Vec<String>,
    /// Dependency cycles found (`a` -> `b` edges that closed a cycle); broken arbitrarily
    /// but deterministically.
    pub cycles: Vec<(String, String)>,
}

impl ModulePlan {
    /// Sum of decompressed sizes.
    pub fn total_decompressed_size(&self) -> u64 {
        self.modules.iter().map(|m| m.decompressed_size).sum()
    }
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct KernelPackage {
    root: PathBuf,
    version: String,
    vmlinuz: PathBuf,
    /// Normalised name -> path inside the package.
    index: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
    /// `alias -> builtin module` from `modules.builtin.modinfo`.
    builtin_aliases: BTreeMap<String, String>,
    /// `alias -> shipped modules`, built on first need (it decompresses every module).
    aliases: std::sync::OnceLock<BTreeMap<String, BTreeSet<String>>>,
}

/// Where [`KernelPackage`] keeps its alias index inside the unpacked package.
const ALIAS_INDEX_FILE: &str = ".jeos-module-aliases";

/// `alias<TAB>module` lines, sorted, after a header naming the format, the digest of the
/// unpacked tree they were read from (its marker's, [`crate::unpacked::marked_digest`])
/// and the SHA-256 of the lines. The file sits beside the tree's verified files but is
/// derived, so outside the tree digest: the header ties it to that digest and to its own
/// content, and an index that no longer matches is scanned again.
fn render_alias_index(index: &BTreeMap<String, BTreeSet<String>>, tree: &str) -> String {
    let mut body = String::new();
    for (alias, modules) in index {
        for module in modules {
            body.push_str(alias);
            body.push('\t');
            body.push_str(module);
            body.push('\n');
        }
    }
    let sha = crate::unpacked::hex_digest(Sha256::new_with_prefix(body.as_bytes()));
    format!("{ALIAS_INDEX_HEADER}\ntree {tree}\nsha256 {sha}\n{body}")
}

const ALIAS_INDEX_HEADER: &str = "jeos-module-aliases 2";

fn write_alias_index(root: &Path, index: &BTreeMap<String, BTreeSet<String>>, tree: &str) {
    let saved = root.join(ALIAS_INDEX_FILE);
    let tmp = root.join(format!("{ALIAS_INDEX_FILE}.{}", std::process::id()));
    if fs::write(&tmp, render_alias_index(index, tree)).is_ok() {
        let _ = fs::rename(&tmp, &saved);
    }
}

/// The index [`render_alias_index`] wrote for the tree whose digest is `tree`, or `None`
/// for another format, another tree, or lines changed since.
fn parse_alias_index(text: &str, tree: &str) -> Option<BTreeMap<String, BTreeSet<String>>> {
    let rest = text.strip_prefix(ALIAS_INDEX_HEADER)?.strip_prefix('\n')?;
    let (tree_line, rest) = rest.split_once('\n')?;
    let (sha_line, body) = rest.split_once('\n')?;
    if tree_line.strip_prefix("tree ")? != tree {
        return None;
    }
    let sha = crate::unpacked::hex_digest(Sha256::new_with_prefix(body.as_bytes()));
    if sha_line.strip_prefix("sha256 ")? != sha {
        return None;
    }
    let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in body.lines() {
        let (alias, module) = line.split_once('\t')?;
        index
            .entry(alias.to_owned())
            .or_default()
            .insert(module.to_owned());
    }
    Some(index)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `rel` exists under `root` as a regular file reached without any symlink
/// ([`crate::unpacked::confined_file`], with the kernel's error variants).
fn confined_file(root: &Path, rel: &Path) -> Result<bool, KernelError> {
    crate::unpacked::confined_file(root, rel).map_err(|e| match e {
        crate::unpacked::ConfineError::NotConfined { path } => KernelError::NotConfined { path },
        crate::unpacked::ConfineError::Io { path, source } => KernelError::Io { path, source },
    })
}

/// The module name a file name stands for (`virtio-blk.ko.xz` -> `virtio_blk`).
fn module_name_of(file_name: &str) -> Option<String> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file_name.strip_suffix(ext))
        .filter(|stem| !stem.is_empty())
        .map(normalize_module_name)
}

impl KernelPackage {
    /// Finds the kernel in an unpacked package (`version` chooses when several are present)
    /// and indexes its module files by name. `lib/modules` is accepted too, for packages
    /// unpacked without the merged-/usr rewrite.
    pub fn open(root: &Path, version: Option<&str>) -> Result<Self, KernelError> {
        let mut versions: BTreeMap<String, PathBuf> = BTreeMap::new();
        for base in ["usr/lib/modules", "lib/modules"] {
            let dir = root.join(base);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let entry = entry.map_err(io_err(&dir))?;
                if entry.file_type().map_err(io_err(&dir))?.is_dir()
                    && let Some(name) = entry.file_name().to_str()
                {
                    versions
                        .entry(name.to_owned())
                        .or_insert_with(|| Path::new(base).join(name));
                }
            }
        }
        let (version, modules_dir) = match version {
            Some(v) => {
                let dir = versions
                    .get(v)
                    .cloned()
                    .ok_or_else(|| KernelError::VersionNotFound {
                        root: root.to_path_buf(),
                        version: v.to_owned(),
                    })?;
                (v.to_owned(), dir)
            }
            None => match versions.len() {
                0 => {
                    return Err(KernelError::NoKernel {
                        root: root.to_path_buf(),
                    });
                }
                1 => versions.into_iter().next().expect("one element"),
                _ => {
                    return Err(KernelError::AmbiguousVersion {
                        root: root.to_path_buf(),
                        versions: versions.into_keys().collect(),
                    });
                }
            },
        };
        let vmlinuz = PathBuf::from(format!("boot/vmlinuz-{version}"));
        if !confined_file(root, &vmlinuz)? {
            return Err(KernelError::NoVmlinuz {
                root: root.to_path_buf(),
                version,
            });
        }
        let mut index = BTreeMap::new();
        let mut stack = vec![modules_dir.clone()];
        while let Some(dir) = stack.pop() {
            let host = root.join(&dir);
            let mut entries: Vec<_> = fs::read_dir(&host)
                .map_err(io_err(&host))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_err(&host))?;
            entries.sort();
            for name in entries {
                let path = dir.join(&name);
                let meta = fs::symlink_metadata(root.join(&path)).map_err(io_err(&host))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file()
                    && let Some(module) = name.to_str().and_then(module_name_of)
                {
                    // Keep the lexically first path for duplicate names: deterministic.
                    index
                        .entry(module)
                        .and_modify(|p: &mut PathBuf| {
                            if path < *p {
                                *p = path.clone();
                            }
                        })
                        .or_insert(path);
                }
            }
        }
        confined_file(root, &modules_dir.join("modules.builtin"))?;
        confined_file(root, &modules_dir.join("modules.builtin.modinfo"))?;
        let builtin_path = root.join(&modules_dir).join("modules.builtin");
        let mut builtin: BTreeSet<String> = match fs::read_to_string(&builtin_path) {
            Ok(text) => text
                .lines()
                .filter_map(|line| line.rsplit('/').next())
                .filter_map(module_name_of)
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => {
                return Err(KernelError::Io {
                    path: builtin_path,
                    source,
                });
            }
        };
        let modinfo_path = root.join(&modules_dir).join("modules.builtin.modinfo");
        let mut builtin_aliases = BTreeMap::new();
        match fs::read(&modinfo_path) {
            // `module.key=value` entries separated by NULs.
            Ok(bytes) => {
                for (key, value) in parse_modinfo(&bytes) {
                    if let Some(module) = key.strip_suffix(".alias") {
                        builtin.insert(normalize_module_name(module));
                        builtin_aliases.insert(value, normalize_module_name(module));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KernelError::Io {
                    path: modinfo_path,
                    source,
                });
            }
        }
        Ok(Self {
            builtin_aliases,
            aliases: std::sync::OnceLock::new(),
            root: root.to_path_buf(),
            version,
            vmlinuz,
            index,
            builtin,
        })
    }

    /// Kernel version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Kernel image path inside the package.
    pub fn vmlinuz(&self) -> &Path {
        &self.vmlinuz
    }

    /// Number of module files shipped.
    pub fn module_count(&self) -> usize {
        self.index.len()
    }

    /// Whether a module is built into the kernel image.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize_module_name(name))
    }

    /// Path inside the package of a shipped module.
    pub fn module_path(&self, name: &str) -> Option<&Path> {
        self.index
            .get(&normalize_module_name(name))
            .map(PathBuf::as_path)
    }

    /// The decompressed bytes of a module file (path inside the package).
    pub fn read_module(&self, path: &Path) -> Result<Vec<u8>, KernelError> {
        read_module_file(&self.root.join(path))
    }

    /// Reads and parses the `.modinfo` of the shipped module `name`.
    pub fn module_info(&self, name: &str) -> Result<Option<ModuleInfo>, KernelError> {
        let Some(path) = self.module_path(name) else {
            return Ok(None);
        };
        let host = self.root.join(path);
        let bytes = read_module_file(&host)?;
        module_info(&bytes, name)
            .map(Some)
            .map_err(|source| KernelError::Elf { path: host, source })
    }

    /// `alias -> shipped modules` for every module file (decompresses them all once).
    fn alias_index(&self) -> Result<&BTreeMap<String, BTreeSet<String>>, KernelError> {
        if let Some(index) = self.aliases.get() {
            return Ok(index);
        }
        // The scan decompresses every module (seconds for the generic kernel), so its result
        // is kept beside the unpacked package: an unpacked kernel never changes.
        let saved = self.root.join(ALIAS_INDEX_FILE);
        let tree = crate::unpacked::marked_digest(&self.root).unwrap_or_default();
        if let Some(index) = fs::read_to_string(&saved)
            .ok()
            .and_then(|text| parse_alias_index(&text, &tree))
        {
            return Ok(self.aliases.get_or_init(|| index));
        }
        let index = self.scan_aliases(&prescan::Scanned::new());
        self.store_alias_index(&index);
        Ok(self.aliases.get_or_init(|| index))
    }

    /// Builds and saves the alias index [`Self::alias_index`] would, from `scanned` (a
    /// [`prescan::ModuleScan`] of this tree while it unpacked), reading only the modules
    /// the scan lacks.
    pub fn save_alias_index(&self, scanned: &prescan::Scanned) {
        let index = self.scan_aliases(scanned);
        self.store_alias_index(&index);
        let _ = self.aliases.set(index);
    }

    /// `alias -> modules` over every module of the index: from `scanned` where it has the
    /// module's path, else decoded now (on all cores). A module that cannot be read only
    /// matters if the closure reaches it by name, where the error is reported; the scan
    /// skips it.
    fn scan_aliases(&self, scanned: &prescan::Scanned) -> BTreeMap<String, BTreeSet<String>> {
        let mut rest = prescan::ModuleScan::start(&self.root, prescan::spare_cores());
        for path in self.index.values().filter(|p| !scanned.contains_key(*p)) {
            rest.file_written(&path.to_string_lossy());
        }
        let read = rest.finish();
        let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for path in self.index.values() {
            let Some(info) = scanned.get(path).or_else(|| read.get(path)) else {
                continue;
            };
            for alias in &info.aliases {
                index
                    .entry(alias.clone())
                    .or_default()
                    .insert(info.name.clone());
            }
        }
        index
    }

    /// Best effort: a read-only tree just means the scan runs again next time. A tree
    /// without a marker (not from the cache) binds its index to the empty digest.
    fn store_alias_index(&self, index: &BTreeMap<String, BTreeSet<String>>) {
        let tree = crate::unpacked::marked_digest(&self.root).unwrap_or_default();
        write_alias_index(&self.root, index, &tree);
    }

    /// Resolves a name that is no module file through the aliases modules declare (also
    /// as `crypto-<name>`, the crypto API's request), as modprobe would.
    fn resolve_alias(&self, name: &str) -> Result<Option<ModuleInfo>, KernelError> {
        let crypto = if name.starts_with("crypto-") {
            name.to_owned()
        } else {
            format!("crypto-{name}")
        };
        let mut providers: BTreeSet<String> = [name, crypto.as_str()]
            .iter()
            .filter_map(|a| self.builtin_aliases.get(*a).cloned())
            .collect();
        if providers.is_empty() {
            let index = self.alias_index()?;
            providers = [name, crypto.as_str()]
                .iter()
                .filter_map(|a| index.get(*a))
                .flatten()
                .cloned()
                .collect();
        }
        providers.remove(name);
        if providers.is_empty() {
            return Ok(None);
        }
        Ok(Some(ModuleInfo {
            name: name.to_owned(),
            depends: providers.into_iter().collect(),
            virtual_alias: true,
            ..ModuleInfo::default()
        }))
    }

    /// Computes the closure of `wanted` (names; those in `required` must be available).
    pub fn plan_modules(
        &self,
        wanted: &[&str],
        required: &[&str],
    ) -> Result<ModulePlan, KernelError> {
        let mut cache: BTreeMap<String, Option<ModuleInfo>> = BTreeMap::new();
        let closure = compute_closure(wanted, &self.builtin, |name| {
            if let Some(known) = cache.get(name) {
                return Ok(known.clone());
            }
            let info = match self.module_info(name)? {
                Some(info) => Some(info),
                None => self.resolve_alias(name)?,
            };
            cache.insert(name.to_owned(), info.clone());
            Ok(info)
        })?;
        for name in required {
            let name = normalize_module_name(name);
            if closure.missing.contains(&name) {
                return Err(KernelError::RequiredMissing {
                    name,
                    version: self.version.clone(),
                });
            }
        }
        let modules = modindex::planned_modules(closure.order, |name| {
            self.index.get(name).cloned().unwrap_or_default()
        });
        Ok(ModulePlan {
            kernel_version: self.version.clone(),
            vmlinuz: self.vmlinuz.clone(),
            modules,
            missing: closure.missing,
            builtin: closure.builtin.into_iter().collect(),
            cycles: closure.cycles,
        })
    }
}

/// Decompresses a `.ko`, `.ko.xz` or `.ko.zst` file, refusing more than [`MAX_MODULE_BYTES`].
pub fn read_module_file(host: &Path) -> Result<Vec<u8>, KernelError> {
    let file = fs::File::open(host).map_err(io_err(host))?;
    let name = host
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let reader: Box<dyn Read> =
        if name.ends_with(".ko.xz") {
            Box::new(liblzma::read::XzDecoder::new(io::BufReader::new(file)))
        } else if name.ends_with(".ko.zst") {
            let decoder = ruzstd::decoding::StreamingDecoder::new(io::BufReader::new(file))
                .map_err(|e| KernelError::Decompress {
                    path: host.to_path_buf(),
                    source: io::Error::new(io::ErrorKind::InvalidData, e),
                })?;
            Box::new(decoder)
        } else if name.ends_with(".ko") {
            Box::new(file)
        } else {
            return Err(KernelError::UnsupportedCompression {
                path: host.to_path_buf(),
            });
        };
    let mut bytes = Vec::new();
    reader
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| KernelError::Decompress {
            path: host.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_MODULE_BYTES {
        return Err(KernelError::TooLarge {
            path: host.to_path_buf(),
            limit: MAX_MODULE_BYTES,
        });
    }
    Ok(bytes)
}

/// The result of [`compute_closure`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Shipped modules in load order.
    pub order: Vec<ModuleInfo>,
    /// Names neither built in nor shipped (wanted ones and hard dependencies).
    pub missing: Vec<String>,
    /// Built-in names reached.
    pub builtin: BTreeSet<String>,
    /// Edges that closed a cycle.
    pub cycles: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Visiting,
    Done,
}

/// The pure closure: depth-first from each wanted name in order, soft pre-dependencies
/// (only when available) then hard dependencies in their listed order, each module emitted
/// after everything it needs. `lookup` returns `None` for modules that are not shipped.
pub fn compute_closure<E>(
    wanted: &[&str],
    builtin: &BTreeSet<String>,
    mut lookup: impl FnMut(&str) -> Result<Option<ModuleInfo>, E>,
) -> Result<Closure, E> {
    let mut closure = Closure::default();
    let mut marks: BTreeMap<String, Mark> = BTreeMap::new();
    // Explicit stack of (module, its pending children, index) to avoid recursion depth
    // limits on hostile metadata.
    struct Frame {
        info: ModuleInfo,
        children: Vec<(String, bool)>,
        next: usize,
    }
    for root in wanted {
        let root = normalize_module_name(root);
        let mut stack: Vec<Frame> = Vec::new();
        let mut enter = |name: &str,
                         soft: bool,
                         parent: Option<&str>,
                         closure: &mut Closure,
                         marks: &mut BTreeMap<String, Mark>|
         -> Result<Option<Frame>, E> {
            if builtin.contains(&normalize_module_name(name)) {
                closure.builtin.insert(normalize_module_name(name));
                return Ok(None);
            }
            match marks.get(name) {
                Some(Mark::Done) => return Ok(None),
                Some(Mark::Visiting) => {
                    closure
                        .cycles
                        .push((parent.unwrap_or_default().to_owned(), name.to_owned()));
                    return Ok(None);
                }
                None => {}
            }
            let Some(info) = lookup(name)? else {
                if !soft && !closure.missing.iter().any(|m| m == name) {
                    closure.missing.push(name.to_owned());
                }
                return Ok(None);
            };
            marks.insert(name.to_owned(), Mark::Visiting);
            let children = info
                .softdep_pre
                .iter()
                .map(|n| (n.clone(), true))
                .chain(info.depends.iter().map(|n| (n.clone(), false)))
                .collect();
            Ok(Some(Frame {
                info,
                children,
                next: 0,
            }))
        };
        if let Some(frame) = enter(&root, false, None, &mut closure, &mut marks)? {
            stack.push(frame);
        }
        while let Some(top) = stack.last_mut() {
            if let Some((child, soft)) = top.children.get(top.next).cloned() {
                top.next += 1;
                let parent = top.info.name.clone();
                if let Some(frame) = enter(&child, soft, Some(&parent), &mut closure, &mut marks)? {
                    stack.push(frame);
                }
            } else {
                let frame = stack.pop().expect("non-empty: last_mut succeeded");
                marks.insert(frame.info.name.clone(), Mark::Done);
                closure.order.push(frame.info);
            }
        }
    }
    Ok(closure)
}

#[cfg(test)]
mod alias_index_tests {
    use super::*;

    #[test]
    fn alias_index_round_trips_and_rejects_other_formats() {
        let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        index
            .entry("crc32c".into())
            .or_default()
            .insert("crc32c_generic".into());
        index
            .entry("crc32c".into())
            .or_default()
            .insert("crc32c_intel".into());
        index
            .entry("pci:v*".into())
            .or_default()
            .insert("e1000".into());
        let text = render_alias_index(&index, "ab12");
        assert_eq!(parse_alias_index(&text, "ab12"), Some(index));
        assert_eq!(
            parse_alias_index(&text, "cd34"),
            None,
            "another tree's index"
        );
        let changed = text.replace("crc32c_intel", "crc32c_evil");
        assert_eq!(parse_alias_index(&changed, "ab12"), None, "changed lines");
        let appended = format!("{text}crypto-crc32c\tcrc32c_evil\n");
        assert_eq!(parse_alias_index(&appended, "ab12"), None, "added lines");
        assert_eq!(parse_alias_index("something else\n", "ab12"), None);
        assert_eq!(
            parse_alias_index("jeos-module-aliases 1\ncrc32c\tcrc32c_generic\n", "ab12"),
            None,
            "the old format without its tree"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elf::build_elf;

    fn modinfo(name: &str, depends: &str, extra: &str) -> Vec<u8> {
        let info = format!("license=GPL\0name={name}\0depends={depends}\0{extra}");
        build_elf(&[(".text", &[0xc3; 32]), (".modinfo", info.as_bytes())])
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(data, 6)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// A fake kernel package: virtio_blk -> virtio_ring(builtin? no) ..., ext4 with deps.
    fn package() -> (tempfile::TempDir, KernelPackage) {
        let dir = tempfile::tempdir().unwrap();
        let v = "6.1.0-test-amd64";
        let base = dir.path().join("usr/lib/modules").join(v);
        let k = base.join("kernel");
        fs::create_dir_all(k.join("drivers/block")).unwrap();
        fs::create_dir_all(k.join("fs/ext4")).unwrap();
        fs::create_dir_all(k.join("lib")).unwrap();
        fs::create_dir_all(dir.path().join("boot")).unwrap();
        fs::write(dir.path().join(format!("boot/vmlinuz-{v}")), b"MZ").unwrap();
        let write = |rel: &str, bytes: Vec<u8>| fs::write(k.join(rel), bytes).unwrap();
        write(
            "drivers/block/virtio_blk.ko.xz",
            xz(&modinfo(
                "virtio_blk",
                "virtio_ring",
                "alias=virtio:d00000002v*\0",
            )),
        );
        write(
            "drivers/block/virtio_ring.ko.xz",
            xz(&modinfo("virtio_ring", "", "")),
        );
        write(
            "fs/ext4/ext4.ko.xz",
            xz(&modinfo(
                "ext4",
                "mbcache,jbd2,crc16",
                "softdep=pre: crypto-crc32c post: nothing\0",
            )),
        );
        write("fs/ext4/jbd2.ko.xz", xz(&modinfo("jbd2", "", "")));
        write("fs/ext4/mbcache.ko.xz", xz(&modinfo("mbcache", "", "")));
        write(
            "lib/crc32c_generic.ko.xz",
            xz(&modinfo(
                "crc32c_generic",
                "",
                "alias=crypto-crc32c\0alias=crc32c\0",
            )),
        );
        write(
            "lib/crc-zst.ko.zst",
            ruzstd::encoding::compress_to_vec(
                &modinfo("crc_zst", "", "")[..],
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
        );
        write("lib/cyc-a.ko", modinfo("cyc_a", "cyc_b", ""));
        write("lib/cyc_b.ko", modinfo("cyc_b", "cyc_a", ""));
        write("lib/broken.ko.xz", xz(b"not an elf"));
        write("lib/needs-gone.ko", modinfo("needs_gone", "gone", ""));
        fs::write(
            base.join("modules.builtin"),
            "kernel/lib/crc16.ko\nkernel/drivers/virtio/virtio-pci.ko\n",
        )
        .unwrap();
        fs::write(base.join("modules.order"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        fs::write(
            base.join("modules.builtin.modinfo"),
            "sha256_generic.alias=crypto-sha256\0sha256_generic.license=GPL\0",
        )
        .unwrap();
        let pkg = KernelPackage::open(dir.path(), None).unwrap();
        (dir, pkg)
    }

    fn names(plan: &ModulePlan) -> Vec<&str> {
        plan.modules.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn open_finds_version_vmlinuz_and_index() {
        let (_d, pkg) = package();
        assert_eq!(pkg.version(), "6.1.0-test-amd64");
        assert_eq!(pkg.vmlinuz(), Path::new("boot/vmlinuz-6.1.0-test-amd64"));
        assert_eq!(pkg.module_count(), 11);
        assert!(pkg.is_builtin("virtio-pci"));
        assert_eq!(
            pkg.module_path("crc-zst"),
            Some(Path::new(
                "usr/lib/modules/6.1.0-test-amd64/kernel/lib/crc-zst.ko.zst"
            ))
        );
    }

    #[test]
    fn closure_orders_dependencies_first_and_reports_builtin_and_missing() {
        let (_d, pkg) = package();
        let plan = pkg
            .plan_modules(
                &["virtio-pci", "virtio_blk", "ext4", "e1000", "virtio_blk"],
                &[],
            )
            .unwrap();
        assert_eq!(
            names(&plan),
            [
                "virtio_ring",
                "virtio_blk",
                "crc32c_generic",
                "mbcache",
                "jbd2",
                "ext4"
            ]
        );
        assert_eq!(plan.builtin, ["crc16", "virtio_pci"]);
        // crc32c (a soft dependency) is an alias of crc32c_generic.
        assert_eq!(plan.missing, ["e1000"]);
        assert!(plan.modules.iter().all(|m| m.decompressed_size > 64));
        assert!(plan.total_decompressed_size() > 0);
        let bytes = pkg.read_module(&plan.modules[0].path).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
    }

    #[test]
    fn missing_dependencies_and_required_modules() {
        let (_d, pkg) = package();
        let plan = pkg.plan_modules(&["needs_gone"], &[]).unwrap();
        assert_eq!(plan.missing, ["gone"]);
        assert_eq!(names(&plan), ["needs_gone"]);
        let err = pkg.plan_modules(&["e1000"], &["e1000"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "required module `e1000` is not available in kernel 6.1.0-test-amd64 (neither built in nor shipped)"
        );
        // Built-in required modules are fine.
        pkg.plan_modules(&["crc16"], &["crc16"]).unwrap();
    }

    #[test]
    fn aliases_resolve_to_shipped_or_builtin_modules() {
        let (_d, pkg) = package();
        let plan = pkg
            .plan_modules(&["crc32c", "sha256"], &["crc32c", "sha256"])
            .unwrap();
        assert_eq!(names(&plan), ["crc32c_generic"]);
        assert_eq!(plan.builtin, ["sha256_generic"]);
        assert!(plan.missing.is_empty());
    }

    #[test]
    fn a_saved_alias_index_is_used_only_while_it_matches_its_tree_and_content() {
        let (dir, pkg) = package();
        fs::write(dir.path().join(crate::unpacked::MARKER), "key\nab12\n").unwrap();
        let plan = pkg.plan_modules(&["crc32c"], &["crc32c"]).unwrap();
        assert_eq!(names(&plan), ["crc32c_generic"]);
        let saved = dir.path().join(ALIAS_INDEX_FILE);
        let text = fs::read_to_string(&saved).unwrap();
        assert!(text.contains("\ntree ab12\n"), "{text}");
        // A redirected alias is noticed (the lines no longer match their SHA-256), the
        // modules are scanned again and the index is rewritten.
        fs::write(
            &saved,
            text.replace("crc32c\tcrc32c_generic", "crc32c\tcyc_a"),
        )
        .unwrap();
        let again = KernelPackage::open(dir.path(), None).unwrap();
        let plan = again.plan_modules(&["crc32c"], &["crc32c"]).unwrap();
        assert_eq!(names(&plan), ["crc32c_generic"]);
        assert_eq!(fs::read_to_string(&saved).unwrap(), text);
        // One saved before the tree had its marker is not the marked tree's.
        fs::remove_file(dir.path().join(crate::unpacked::MARKER)).unwrap();
        KernelPackage::open(dir.path(), None)
            .unwrap()
            .save_alias_index(&prescan::Scanned::new());
        assert!(fs::read_to_string(&saved).unwrap().contains("\ntree \n"));
        fs::write(dir.path().join(crate::unpacked::MARKER), "key\nab12\n").unwrap();
        let marked = KernelPackage::open(dir.path(), None).unwrap();
        marked.plan_modules(&["crc32c"], &["crc32c"]).unwrap();
        assert_eq!(fs::read_to_string(&saved).unwrap(), text);
        // An index written for another tree is not this tree's.
        fs::write(dir.path().join(crate::unpacked::MARKER), "key\ncd34\n").unwrap();
        let other = KernelPackage::open(dir.path(), None).unwrap();
        other.plan_modules(&["crc32c"], &["crc32c"]).unwrap();
        assert!(
            fs::read_to_string(&saved)
                .unwrap()
                .contains("\ntree cd34\n")
        );
    }

    #[test]
    fn cycles_terminate_deterministically() {
        let (_d, pkg) = package();
        let plan = pkg.plan_modules(&["cyc_a"], &[]).unwrap();
        assert_eq!(names(&plan), ["cyc_b", "cyc_a"]);
        assert_eq!(plan.cycles, [("cyc_b".to_owned(), "cyc_a".to_owned())]);
    }

    #[test]
    fn zstd_and_malformed_modules() {
        let (_d, pkg) = package();
        assert_eq!(
            names(&pkg.plan_modules(&["crc_zst"], &[]).unwrap()),
            ["crc_zst"]
        );
        let err = pkg.plan_modules(&["broken"], &[]).unwrap_err();
        assert!(matches!(
            err,
            KernelError::Elf {
                source: ElfError::NotElf,
                ..
            }
        ));
    }

    #[test]
    fn softdeps_are_loaded_first_when_present() {
        let builtin = BTreeSet::new();
        let db: BTreeMap<&str, ModuleInfo> = [
            (
                "ext4",
                ModuleInfo {
                    name: "ext4".into(),
                    depends: vec!["jbd2".into()],
                    softdep_pre: vec!["crc32c".into()],
                    ..Default::default()
                },
            ),
            (
                "jbd2",
                ModuleInfo {
                    name: "jbd2".into(),
                    ..Default::default()
                },
            ),
            (
                "crc32c",
                ModuleInfo {
                    name: "crc32c".into(),
                    ..Default::default()
                },
            ),
        ]
        .into_iter()
        .collect();
        let closure =
            compute_closure::<()>(&["ext4"], &builtin, |n| Ok(db.get(n).cloned())).unwrap();
        let order: Vec<&str> = closure.order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(order, ["crc32c", "jbd2", "ext4"]);
    }

    #[test]
    fn modinfo_fields() {
        let ko = modinfo(
            "virtio-net",
            "net_failover,virtio_ring",
            "softdep=pre: a-b post: c\0alias=virtio:d00000001v*\0",
        );
        let info = module_info(&ko, "fallback").unwrap();
        assert_eq!(info.name, "virtio_net");
        assert_eq!(info.depends, ["net_failover", "virtio_ring"]);
        assert_eq!(info.softdep_pre, ["a-b"]);
        assert_eq!(info.aliases, ["virtio:d00000001v*"]);
        let bare = build_elf(&[(".text", &[0xc3])]);
        assert_eq!(module_info(&bare, "plain-mod").unwrap().name, "plain_mod");
    }

    /// Issue #8: a kernel package whose vmlinuz or modules.builtin is a symlink (absolute or
    /// `../..`) must not pull the host file it points to into the image.
    #[test]
    fn issue_8_symlinked_kernel_files_are_refused() {
        for (file, target) in [
            ("boot/vmlinuz-6.1.0-test-amd64", "/etc/hostname"),
            ("boot/vmlinuz-6.1.0-test-amd64", "../../../../etc/hostname"),
            (
                "usr/lib/modules/6.1.0-test-amd64/modules.builtin",
                "/etc/hostname",
            ),
            (
                "usr/lib/modules/6.1.0-test-amd64/modules.builtin.modinfo",
                "/etc/hostname",
            ),
        ] {
            let (dir, _) = package();
            let path = dir.path().join(file);
            let _ = fs::remove_file(&path);
            std::os::unix::fs::symlink(target, &path).unwrap();
            let err = KernelPackage::open(dir.path(), None)
                .map(|_| ())
                .unwrap_err();
            assert!(
                matches!(&err, KernelError::NotConfined { path } if path == Path::new(file)),
                "{file} -> {target}: {err:?}"
            );
            assert!(err.to_string().contains("kernel package"), "{err}");
        }
    }

    #[test]
    fn open_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            KernelPackage::open(dir.path(), None),
            Err(KernelError::NoKernel { .. })
        ));
        fs::create_dir_all(dir.path().join("usr/lib/modules/1.0")).unwrap();
        assert!(matches!(
            KernelPackage::open(dir.path(), None),
            Err(KernelError::NoVmlinuz { .. })
        ));
        fs::create_dir_all(dir.path().join("usr/lib/modules/2.0")).unwrap();
        assert!(matches!(
            KernelPackage::open(dir.path(), None),
            Err(KernelError::AmbiguousVersion { .. })
        ));
        assert!(matches!(
            KernelPackage::open(dir.path(), Some("3.0")),
            Err(KernelError::VersionNotFound { .. })
        ));
    }

    /// The module closure of a real unpacked kernel package: Debian's cloud kernel, which
    /// `scripts/test-inputs` extracts into `$JEOS_TEST_KERNEL_DIR` (the test command sets
    /// it; under `CI=true` its absence fails the test).
    #[test]
    #[expect(clippy::print_stderr, reason = "reports the measurement or the skip")]
    fn real_kernel_package_closure() {
        let Some(dir) = std::env::var_os("JEOS_TEST_KERNEL_DIR") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "JEOS_TEST_KERNEL_DIR is not set (scripts/test sets it from scripts/test-inputs)"
            );
            eprintln!("SKIPPED: set JEOS_TEST_KERNEL_DIR to an unpacked linux-image package");
            return;
        };
        let pkg = KernelPackage::open(Path::new(&dir), None).unwrap();
        let plan = pkg.plan_modules(DEFAULT_MODULES, &["ext4"]).unwrap();
        let total_compressed: u64 = plan
            .modules
            .iter()
            .map(|m| fs::metadata(Path::new(&dir).join(&m.path)).unwrap().len())
            .sum();
        eprintln!(
            "kernel {}: {} module files shipped; closure {} modules, {} bytes decompressed ({} compressed)",
            plan.kernel_version,
            pkg.module_count(),
            plan.modules.len(),
            plan.total_decompressed_size(),
            total_compressed
        );
        eprintln!(
            "load order: {:?}",
            plan.modules
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
        );
        eprintln!("builtin: {:?}", plan.builtin);
        eprintln!("missing: {:?}", plan.missing);
        assert!(!plan.modules.is_empty() || !plan.builtin.is_empty());
        for wanted in ["virtio_blk", "virtio_net", "ext4"] {
            assert!(
                plan.modules.iter().any(|m| m.name == wanted)
                    || plan.builtin.iter().any(|b| b == wanted),
                "{wanted} is neither a module of the closure nor built in"
            );
        }
        // No module is loaded twice.
        let names: Vec<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names.len(),
            names
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );
    }
}
