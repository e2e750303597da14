//! `jeos build`: a flat list of steps over one context, each timed and reported.
//!
//! ```text
//! resolve_packages ─▶ fetch_packages ─▶ unpack_rootfs ─▶ unpack_kernel ─▶ unpack_boot_loaders
//!   ─▶ customize_rootfs ─▶ install_init ─▶ build_initramfs ─▶ write_disk ─▶ publish_formats
//!   ─▶ write_report ─▶ (rename into DIR/<name>-<version>/)
//! ```
//!
//! Everything is built in a hidden work directory inside the output directory (same file
//! system, so the final rename is atomic) and in the cache (unpacked kernels and boot
//! loaders, keyed by the SHA-256 of their `.deb`). Nothing appears under
//! `DIR/<name>-<version>/` until every artifact is complete.

mod replace;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guest_init::config::{
    CheckConfig, CommandCheckConfig, FileCheckConfig, HttpCheckConfig, HttpProbeConfig, InitConfig,
    NetworkConfig, ReadyConfig, RestartPolicy, ServiceCheckConfig, ServiceConfig,
    StaticNetworkConfig, TcpCheckConfig,
};
use image_writer::cpio::{self, CpioEntry};
use image_writer::ext4::{Ext4Config, Ext4Metadata, Ext4NodeKind, Ext4Size};
use image_writer::layout::Seed;
use image_writer::{DiskPlan, DiskReport};
use miette::Diagnostic;
use package_resolver::cache::Cache;
use package_resolver::deb::{self, Staging as DebStaging, UnpackOptions};
use package_resolver::fetch::{self, FetchItem, FetchOptions};
use package_resolver::lock::{LockFile, LockedPackage};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::kernel::{DEFAULT_MODULES, KernelPackage};
use crate::progress::Ui;
use crate::publish::{PublishOptions, PublishReport};
use crate::recipe::{self, CheckKind, ReadyProbe, Recipe};
use crate::reporters::UiResolverReporter;
use crate::resolve::{self, ResolveError, ResolveOptions};
use crate::rootfs::accounts::{GroupConfig, UserConfig};
use crate::rootfs::etc::{EtcConfig, OsReleaseConfig, ResolvConfig};
use crate::rootfs::executables::{self, ServiceExec};
use crate::rootfs::files::{FileConfig, FileContent};
use crate::rootfs::prune::PruneConfig;
use crate::rootfs::staging::{FsOp, Staging};
use crate::rootfs::tmpfiles::RuntimeDir;
use crate::rootfs::tree::{Entry, EntryKind, Ownership, Tree};
use crate::rootfs::{self, DEFAULT_INIT_PATH, RootfsConfig, RootfsReport};

/// Where guest-init reads its configuration.
const INIT_CONFIG_PATH: &str = "etc/jeos/init.json";

/// Modules added to the hypervisor drivers: the power button (ACPI `button` + `evdev`)
/// lets guest-init see "shut down guest".
const EXTRA_MODULES: [&str; 2] = ["button", "evdev"];

/// Inputs of [`build`] beyond the recipe.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// How packages are resolved (mirror, cache, lock handling).
    pub resolve: ResolveOptions,
    /// `-o DIR`: artifacts go to `DIR/<name>-<version>/`.
    pub out_dir: PathBuf,
    /// `SOURCE_DATE_EPOCH`; `None` derives it from the lock (the InRelease date).
    pub source_date_epoch: Option<i64>,
    /// Signing and digest options for the OVF package.
    pub publish: PublishOptions,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum BuildError {
    /// Resolving the packages failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Resolve(#[from] ResolveError),
    /// A package could not be fetched.
    #[error("cannot fetch the packages of `{name}`")]
    #[diagnostic(help("with `--offline`, run once online first so the cache holds them"))]
    Fetch {
        /// Appliance name.
        name: String,
        /// Cause.
        #[source]
        source: fetch::FetchError,
    },
    /// A `.deb` could not be unpacked.
    #[error("cannot unpack `{package}`")]
    Unpack {
        /// Package.
        package: String,
        /// Cause.
        #[source]
        source: deb::DebError,
    },
    /// The lock names no kernel image.
    #[error("the closure has no kernel image (`linux-image-*` with a vmlinuz)")]
    #[diagnostic(help(
        "set `[kernel] flavour = \"generic\"` or `\"cloud\"`, or `package = \"linux-image-…\"`, then `jeos resolve --update`"
    ))]
    NoKernel,
    /// The kernel package is unusable.
    #[error("cannot use the kernel package `{package}`")]
    Kernel {
        /// Package.
        package: String,
        /// Cause.
        #[source]
        source: crate::kernel::KernelError,
    },
    /// The kernel lacks a module the appliance needs.
    #[error("kernel `{kernel}` has no module `{module}`")]
    #[diagnostic(help("remove it from `[kernel] extra-modules`, or choose another flavour"))]
    MissingModule {
        /// Kernel version.
        kernel: String,
        /// Module name.
        module: String,
    },
    /// The `[vm]` hardware is not drivable by the kernel.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Hardware(#[from] crate::kernel::hardware::HardwareError),
    /// Converting the unpacked metadata failed.
    #[error("unpacked metadata is inconsistent at `{path}`")]
    Metadata {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: crate::rootfs::tree::TreeError,
    },
    /// Customising the root filesystem failed.
    #[error("cannot customise the root filesystem of `{name}`")]
    Rootfs {
        /// Appliance name.
        name: String,
        /// Cause.
        #[source]
        source: rootfs::RootfsError,
    },
    /// A service program is not in the image.
    #[error(transparent)]
    #[diagnostic(help(
        "add the package that ships it to `[packages] install`, or fix the service's `exec`"
    ))]
    Executable(#[from] executables::ExecutableError),
    /// A service script's interpreter is not in the image.
    #[error(transparent)]
    #[diagnostic(help("add the package that ships the interpreter to `[packages] install`"))]
    Interpreter(#[from] executables::InterpreterError),
    /// A staging operation failed.
    #[error(transparent)]
    Staging(#[from] crate::rootfs::staging::StagingError),
    /// The initramfs could not be written.
    #[error("cannot write the initramfs")]
    Initramfs(#[source] cpio::CpioError),
    /// A boot-loader file is missing or a symlink in its package.
    #[error(transparent)]
    #[diagnostic(transparent)]
    LoaderFiles(#[from] crate::loader_files::LoaderFilesError),
    /// The disk could not be written.
    #[error("cannot write the disk image")]
    #[diagnostic(help(
        "with an explicit `[disk] size`, make it larger or use `size = \"auto\"`; `mkfs.ext4` and `debugfs` come from Debian's `e2fsprogs`"
    ))]
    Disk(#[source] image_writer::bootloader::BootloaderError),
    /// The host file system ran out of space while the disk was written.
    #[error("cannot write the disk image: no space left on the device")]
    DiskNoSpace(#[source] image_writer::bootloader::BootloaderError),
    /// Publishing formats failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Publish(#[from] crate::publish::PublishError),
    /// File system work in the output or cache directory failed.
    #[error("cannot {action} `{}`", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io {
        action,
        path,
        source,
    }
}

/// Bytes one package contributes to the image.
#[derive(Debug, Clone, Serialize)]
pub struct PackageBytes {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Bytes of regular files unpacked.
    pub bytes: u64,
    /// Files unpacked.
    pub files: u64,
}

/// The build report (`build-report.json` and the human summary).
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Appliance name.
    pub name: String,
    /// Appliance version.
    pub version: String,
    /// `DIR/<name>-<version>`.
    pub output: PathBuf,
    /// The raw disk image.
    pub raw_image: PathBuf,
    /// Its size in bytes.
    pub image_bytes: u64,
    /// Bytes used inside the image: ESP content + root filesystem size.
    pub root_fs_bytes: u64,
    /// ESP size.
    pub esp_bytes: u64,
    /// Kernel version.
    pub kernel: String,
    /// Modules in the initramfs.
    pub modules: Vec<String>,
    /// Initramfs size (compressed).
    pub initramfs_bytes: u64,
    /// Packages installed in the root filesystem, with their unpacked bytes.
    pub packages: Vec<PackageBytes>,
    /// Bytes pruned (docs, man pages, locales, ...), by category.
    pub pruned: BTreeMap<String, u64>,
    /// Packages whose maintainer scripts were not run (jeos reproduces their usual effects).
    pub maintainer_scripts: BTreeMap<String, Vec<String>>,
    /// Files shipped by two packages (the later one kept).
    pub overlaps: Vec<String>,
    /// Package files the recipe's files replace: `/path (package)`.
    pub overwrites: Vec<String>,
    /// Notes from customisation (skipped sysusers/tmpfiles lines, alternatives).
    pub notes: Vec<String>,
    /// `SOURCE_DATE_EPOCH` used.
    pub source_date_epoch: i64,
    /// Kernel command line.
    pub cmdline: String,
    /// Time per step, in order.
    pub steps: Vec<StepReport>,
    /// Published files (qcow2, vmdk, ovf, mf, cert, ova).
    pub published: Option<PublishReport>,
}

/// One step's duration.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// Seconds.
    pub seconds: f64,
}

/// The build's state: frozen inputs plus the work paths.
struct BuildContext<'a> {
    recipe: &'a Recipe,
    recipe_path: &'a Path,
    options: &'a BuildOptions,
    ui: Arc<Ui>,
    cache: Cache,
    work: tempfile::TempDir,
    epoch: i64,
    seed: Seed,
    steps: Vec<StepReport>,
}

impl BuildContext<'_> {
    fn rootfs_dir(&self) -> PathBuf {
        self.work.path().join("rootfs")
    }

    /// The directory renamed into `DIR/<name>-<version>` at the end.
    fn stage_dir(&self) -> PathBuf {
        self.work.path().join("out")
    }

    fn artifact_name(&self) -> String {
        format!(
            "{}-{}",
            self.recipe.appliance.name, self.recipe.appliance.version
        )
    }

    fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<T, BuildError>,
    ) -> Result<T, BuildError> {
        self.ui.step_started(name);
        let start = Instant::now();
        let result = f(self);
        let elapsed = start.elapsed();
        if result.is_ok() {
            self.ui.step_finished(name, elapsed);
            self.steps.push(StepReport {
                name: name.to_owned(),
                seconds: elapsed.as_secs_f64(),
            });
        }
        result
    }
}

/// Builds the appliance: see the module documentation.
pub fn build(
    recipe: &Recipe,
    recipe_path: &Path,
    options: &BuildOptions,
    ui: Arc<Ui>,
) -> Result<BuildReport, BuildError> {
    let reporter = Arc::new(UiResolverReporter::new(Arc::clone(&ui)));
    ui.step_started("resolve_packages");
    let start = Instant::now();
    let resolved =
        resolve::resolve_packages(recipe, recipe_path, &options.resolve, reporter.clone())?;
    let resolve_elapsed = start.elapsed();
    ui.step_finished("resolve_packages", resolve_elapsed);
    let lock = resolved.lock;

    fs::create_dir_all(&options.out_dir).map_err(io_err("create", &options.out_dir))?;
    remove_stale_work_dirs(&options.out_dir);
    let work = tempfile::Builder::new()
        .prefix(".jeos-build-")
        .tempdir_in(&options.out_dir)
        .map_err(io_err("create a work directory in", &options.out_dir))?;
    let _active = ActiveWorkDir::register(work.path());
    let cache = resolve::open_cache(&options.resolve.cache_dir)?;
    // Killed builds leave temp downloads and half-unpacked trees: reclaim them.
    let _ = cache.reclaim_leftovers(Duration::from_secs(3600));
    let epoch = options
        .source_date_epoch
        .or_else(|| package_resolver::release::parse_rfc2822(&lock.source.date))
        .unwrap_or(0)
        .max(0);
    let recipe_bytes = fs::read(recipe_path).map_err(io_err("read", recipe_path))?;
    let mut seed_input = recipe_bytes;
    seed_input.push(0);
    seed_input.extend_from_slice(lock.to_toml_string().as_bytes());
    let mut ctx = BuildContext {
        recipe,
        recipe_path,
        options,
        ui: Arc::clone(&ui),
        cache,
        work,
        epoch,
        seed: Seed::from_bytes(&seed_input),
        steps: vec![StepReport {
            name: "resolve_packages".to_owned(),
            seconds: resolve_elapsed.as_secs_f64(),
        }],
    };
    fs::create_dir_all(ctx.stage_dir()).map_err(io_err("create", &ctx.stage_dir()))?;

    let debs = ctx.step("fetch_packages", |c| fetch_packages(c, &lock, reporter))?;
    let (deb_staging, package_bytes) =
        ctx.step("unpack_rootfs", |c| unpack_rootfs(c, &lock, &debs))?;
    let kernel_dir = ctx.step("unpack_kernel", |c| unpack_kernel(c, &lock, &debs))?;
    let loaders_dir = ctx.step("unpack_boot_loaders", |c| unpack_tools(c, &lock, &debs))?;
    let dpkg_packages = dpkg_packages(&lock, &debs, &deb_staging)?;
    let (mut staging, rootfs_report) = ctx.step("customize_rootfs", |c| {
        customize(c, &deb_staging, dpkg_packages)
    })?;
    ctx.step("install_init", |c| {
        install_init(c, &mut staging, &rootfs_report.runtime_dirs)
    })?;
    let (kernel, initramfs) = ctx.step("build_initramfs", |c| build_initramfs(c, &kernel_dir))?;
    let raw = ctx.stage_dir().join(format!("{}.raw", ctx.artifact_name()));
    let esp_extra = ctx.step("write_sbom", |c| {
        write_sbom(c, &lock, &staging, &kernel.version)
    })?;
    let (disk, cmdline) = ctx.step("write_disk", |c| {
        write_disk(
            c,
            &staging,
            &kernel,
            &initramfs,
            &loaders_dir,
            &raw,
            esp_extra,
        )
    })?;
    let published = if recipe
        .disk
        .formats
        .iter()
        .any(|f| *f != recipe::DiskFormat::Raw)
    {
        let stage = ctx.stage_dir();
        let recipe_dir = recipe_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        Some(ctx.step("publish_formats", |c| {
            Ok(crate::publish::publish_artifacts(
                c.recipe,
                &recipe_dir,
                &raw,
                &stage,
                c.epoch,
                &c.options.publish,
                &c.ui,
            )?)
        })?)
    } else {
        None
    };

    let final_dir = options.out_dir.join(ctx.artifact_name());
    let mut report = BuildReport {
        name: recipe.appliance.name.to_string(),
        version: recipe.appliance.version.clone(),
        output: final_dir.clone(),
        raw_image: final_dir.join(raw.file_name().unwrap_or_default()),
        image_bytes: disk.size_bytes,
        root_fs_bytes: disk.root_size_bytes,
        esp_bytes: disk.esp_size_bytes,
        kernel: kernel.version.clone(),
        modules: kernel.modules.clone(),
        initramfs_bytes: u64::try_from(initramfs.len()).unwrap_or(u64::MAX),
        packages: package_bytes,
        pruned: rootfs_report
            .prune
            .categories
            .iter()
            .map(|(category, stats)| (category.name().to_owned(), stats.bytes))
            .collect(),
        maintainer_scripts: deb_staging
            .packages()
            .iter()
            .filter(|p| !p.scripts.is_empty())
            .map(|p| (p.name.clone(), p.scripts.keys().cloned().collect()))
            .collect(),
        overlaps: deb_staging
            .overlaps()
            .iter()
            .map(|o| format!("{} ({} and {})", o.path, o.first, o.second))
            .collect(),
        overwrites: rootfs::files::package_overwrites(
            &rootfs_report.recipe_paths,
            deb_staging.manifest(),
        ),
        notes: rootfs_report.notes.clone(),
        source_date_epoch: ctx.epoch,
        cmdline,
        steps: Vec::new(),
        published,
    };
    ctx.step("write_report", |c| write_report(c, &lock, &report))?;
    report.steps = ctx.steps.clone();
    move_into_place(&ctx.stage_dir(), &final_dir)?;
    Ok(report)
}

/// Work directories of builds running in this process, removed by [`remove_active_work_dirs`]
/// when the process is interrupted.
static ACTIVE_WORK_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the work directories of this process's running builds. The binary calls it
/// from its SIGINT/SIGTERM handler, so an interrupted build leaves nothing in `-o DIR`.
pub fn remove_active_work_dirs() {
    let dirs = ACTIVE_WORK_DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for dir in dirs {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Registers a work directory for [`remove_active_work_dirs`] while it lives.
struct ActiveWorkDir(PathBuf);

impl ActiveWorkDir {
    fn register(path: &Path) -> Self {
        ACTIVE_WORK_DIRS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(path.to_owned());
        Self(path.to_owned())
    }
}

impl Drop for ActiveWorkDir {
    fn drop(&mut self) {
        ACTIVE_WORK_DIRS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|p| p != &self.0);
    }
}

/// Earlier builds killed before their cleanup leave hidden work directories; remove those
/// older than an hour (a concurrent build's directory is younger).
fn remove_stale_work_dirs(out_dir: &Path) {
    let Ok(entries) = fs::read_dir(out_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let stale = name.to_string_lossy().starts_with(".jeos-build-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn fetch_items(packages: &[&LockedPackage]) -> Vec<FetchItem> {
    packages
        .iter()
        .map(|p| FetchItem {
            name: p.name.clone(),
            filename: p.filename.clone(),
            size: p.size,
            sha256: p.sha256.clone(),
        })
        .collect()
}

/// Step `fetch_packages`: every package and build tool of the lock into the cache, each
/// from the archive of its suite (the security archive for `-security` packages).
fn fetch_packages(
    ctx: &mut BuildContext<'_>,
    lock: &LockFile,
    reporter: Arc<UiResolverReporter>,
) -> Result<BTreeMap<String, PathBuf>, BuildError> {
    let all: Vec<&LockedPackage> = lock.packages.iter().chain(lock.tools.iter()).collect();
    let repos = resolve::open_repositories(&ctx.recipe.source, &ctx.options.resolve, reporter)?;
    let mut debs = BTreeMap::new();
    for archive in [resolve::Archive::Main, resolve::Archive::Security] {
        let group: Vec<&LockedPackage> = all
            .iter()
            .copied()
            .filter(|p| resolve::archive_of(lock, p) == archive)
            .collect();
        if group.is_empty() {
            continue;
        }
        let paths = fetch::fetch_all(
            repos.get(archive),
            &ctx.cache,
            &fetch_items(&group),
            FetchOptions {
                parallel: 4,
                offline: ctx.options.resolve.offline,
            },
        )
        .map_err(|source| BuildError::Fetch {
            name: ctx.recipe.appliance.name.to_string(),
            source,
        })?;
        debs.extend(group.iter().map(|p| p.name.clone()).zip(paths));
    }
    Ok(debs)
}

fn deb_path<'a>(debs: &'a BTreeMap<String, PathBuf>, name: &str) -> &'a Path {
    debs.get(name)
        .map(PathBuf::as_path)
        .expect("every locked package was fetched")
}

/// Unpacks `packages` in order into `root` with Debian's merged-/usr layout.
fn unpack_all(
    root: &Path,
    packages: &[&LockedPackage],
    debs: &BTreeMap<String, PathBuf>,
) -> Result<DebStaging, BuildError> {
    let mut staging = DebStaging::new(root).map_err(|source| BuildError::Unpack {
        package: "(staging)".to_owned(),
        source,
    })?;
    let options = UnpackOptions {
        merged_usr: true,
        ..UnpackOptions::default()
    };
    for p in packages {
        staging
            .unpack_deb(deb_path(debs, &p.name), &options)
            .map_err(|source| BuildError::Unpack {
                package: p.name.clone(),
                source,
            })?;
    }
    Ok(staging)
}

/// Step `unpack_rootfs`: the non-kernel packages into the staging tree (merged-/usr).
fn unpack_rootfs(
    ctx: &mut BuildContext<'_>,
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
) -> Result<(DebStaging, Vec<PackageBytes>), BuildError> {
    let root = ctx.rootfs_dir();
    fs::create_dir_all(&root).map_err(io_err("create", &root))?;
    let rootfs: Vec<&LockedPackage> = lock
        .packages
        .iter()
        .filter(|p| !resolve::is_kernel_package(lock, p))
        .collect();
    let staging = unpack_all(&root, &rootfs, debs)?;
    let bytes = staging
        .packages()
        .iter()
        .map(|report| PackageBytes {
            name: report.name.clone(),
            version: report.version.clone(),
            bytes: report.bytes,
            files: report.files,
        })
        .collect();
    for overlap in staging.overlaps() {
        ctx.ui.warning(&format!(
            "`/{}` is shipped by both `{}` and `{}`; keeping `{}`'s",
            overlap.path, overlap.first, overlap.second, overlap.second
        ));
    }
    Ok((staging, bytes))
}

/// Unpacks `packages` into `<cache>/unpacked/<key>/` once; later builds reuse it. The key is
/// the SHA-256 of the packages' SHA-256s, so a different kernel gets a different directory.
fn unpack_cached(
    ctx: &BuildContext<'_>,
    packages: &[&LockedPackage],
    debs: &BTreeMap<String, PathBuf>,
) -> Result<PathBuf, BuildError> {
    let mut hasher = Sha256::new();
    for p in packages {
        hasher.update(p.sha256.as_bytes());
        hasher.update(b"\n");
    }
    let key: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let base = ctx.cache.root().join("unpacked");
    let dir = base.join(&key);
    if crate::unpacked::is_intact(&dir, &key) {
        return Ok(dir);
    }
    if dir.exists() {
        // Incomplete or changed since it was unpacked: never use it, unpack again.
        ctx.ui.warning(&format!(
            "the cached tree `{}` is incomplete or changed since it was unpacked; unpacking it again",
            dir.display()
        ));
        let _ = fs::remove_dir_all(&dir);
    }
    fs::create_dir_all(&base).map_err(io_err("create", &base))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&base)
        .map_err(io_err("create a directory in", &base))?;
    unpack_all(tmp.path(), packages, debs)?;
    let marker = tmp.path().join(crate::unpacked::MARKER);
    let text =
        crate::unpacked::marker_text(tmp.path(), &key).map_err(io_err("read", tmp.path()))?;
    fs::write(&marker, text).map_err(io_err("write", &marker))?;
    let tmp_path = tmp.keep();
    match fs::rename(&tmp_path, &dir) {
        Ok(()) => Ok(dir),
        // Another build finished the same directory first: use theirs.
        Err(_) if crate::unpacked::is_intact(&dir, &key) => {
            let _ = fs::remove_dir_all(&tmp_path);
            Ok(dir)
        }
        Err(source) => {
            let _ = fs::remove_dir_all(&tmp_path);
            Err(BuildError::Io {
                action: "move into the cache",
                path: dir,
                source,
            })
        }
    }
}

/// Step `unpack_kernel`.
fn unpack_kernel(
    ctx: &mut BuildContext<'_>,
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
) -> Result<PathBuf, BuildError> {
    let kernel: Vec<&LockedPackage> = lock
        .packages
        .iter()
        .filter(|p| resolve::is_kernel_package(lock, p))
        .collect();
    if kernel.is_empty() {
        return Err(BuildError::NoKernel);
    }
    unpack_cached(ctx, &kernel, debs)
}

/// Step `unpack_boot_loaders`.
fn unpack_tools(
    ctx: &mut BuildContext<'_>,
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
) -> Result<PathBuf, BuildError> {
    let tools: Vec<&LockedPackage> = lock.tools.iter().collect();
    unpack_cached(ctx, &tools, debs)
}

/// The unpacker's manifest as the customisation tree.
fn manifest_tree(staging: &DebStaging, epoch: i64) -> Result<Tree, BuildError> {
    let mut tree = Tree::new(epoch);
    for (path, entry) in staging.manifest() {
        let kind = match &entry.kind {
            deb::EntryKind::File => EntryKind::File { size: entry.size },
            deb::EntryKind::Dir => EntryKind::Dir,
            deb::EntryKind::Symlink { target } => EntryKind::Symlink {
                target: PathBuf::from(target),
            },
            deb::EntryKind::HardLink { target } => EntryKind::Hardlink {
                target: PathBuf::from(target),
            },
            deb::EntryKind::CharDev { major, minor } => EntryKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            deb::EntryKind::BlockDev { major, minor } => EntryKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            deb::EntryKind::Fifo => EntryKind::Fifo,
        };
        let to_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        tree.insert(
            Path::new(path),
            Entry {
                kind,
                mode: entry.mode & 0o7777,
                uid: to_u32(entry.uid),
                gid: to_u32(entry.gid),
                mtime: i64::try_from(entry.mtime).unwrap_or(i64::MAX).min(epoch),
            },
        )
        .map_err(|source| BuildError::Metadata {
            path: path.clone(),
            source,
        })?;
    }
    Ok(tree)
}

/// The installed packages for the image's dpkg database: the root filesystem's, then the
/// kernel's (read from their control members).
fn dpkg_packages(
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
    deb_staging: &DebStaging,
) -> Result<Vec<rootfs::dpkg::DpkgPackage>, BuildError> {
    let mut kernel = Vec::new();
    for p in lock
        .packages
        .iter()
        .filter(|p| resolve::is_kernel_package(lock, p))
    {
        let report = deb::read_package_control(deb_path(debs, &p.name), &UnpackOptions::default())
            .map_err(|source| BuildError::Unpack {
                package: p.name.clone(),
                source,
            })?;
        kernel.push(report);
    }
    Ok(rootfs::dpkg::packages_from_unpack(deb_staging, &kernel))
}

/// The recipe as the customisation step's input.
fn rootfs_config(
    ctx: &BuildContext<'_>,
    postinsts: Vec<(String, String)>,
    scripts: Vec<rootfs::maintainer::Script>,
    dpkg: Vec<rootfs::dpkg::DpkgPackage>,
) -> RootfsConfig {
    let r = ctx.recipe;
    let mut files: Vec<FileConfig> = Vec::new();
    for d in &r.directories {
        files.push(FileConfig {
            path: d.path.clone(),
            content: FileContent::Directory,
            mode: Some(d.mode),
            owner: Some(d.owner.clone()),
            group: Some(d.group.clone()),
        });
    }
    for f in &r.files {
        if let recipe::FileContent::BootTemplate(text) = &f.content {
            files.extend(crate::deploy::boot_file_configs(f, text));
            continue;
        }
        files.push(FileConfig {
            path: f.path.clone(),
            content: match &f.content {
                recipe::FileContent::Inline(text) => FileContent::Inline(text.clone().into_bytes()),
                recipe::FileContent::Source(path) => FileContent::Source(path.clone()),
                recipe::FileContent::BootTemplate(_) => unreachable!("handled above"),
            },
            mode: Some(f.mode),
            owner: Some(f.owner.clone()),
            group: Some(f.group.clone()),
        });
    }
    for s in &r.symlinks {
        files.push(FileConfig {
            path: s.path.clone(),
            content: FileContent::Symlink(s.target.clone()),
            mode: None,
            owner: None,
            group: None,
        });
    }
    // guest-init writes /run/resolv.conf for DHCP, static and deploy-time name servers.
    let resolv = ResolvConfig::Runtime;
    let timezone = Some(r.system.timezone.clone()).filter(|t| !t.is_empty() && t != "UTC");
    RootfsConfig {
        init_path: PathBuf::from(DEFAULT_INIT_PATH),
        groups: r
            .system
            .groups
            .iter()
            .map(|g| GroupConfig {
                name: g.name.clone(),
                gid: g.gid,
                system: g.system,
            })
            .collect(),
        users: r
            .system
            .users
            .iter()
            .map(|u| UserConfig {
                name: u.name.clone(),
                uid: u.uid,
                // A user's own-name group that the recipe does not declare is created
                // with the user (same id when free).
                group: Some(u.group.clone()).filter(|g| {
                    !g.is_empty() && (*g != u.name || r.system.groups.iter().any(|d| d.name == *g))
                }),
                groups: u.groups.clone(),
                home: Some(u.home.clone()).filter(|h| !h.is_empty()),
                shell: Some(u.shell.clone()).filter(|s| !s.is_empty()),
                gecos: None,
                system: u.system,
                password_hash: None,
            })
            .collect(),
        etc: EtcConfig {
            hostname: r.system.hostname.clone(),
            resolv,
            os_release: OsReleaseConfig {
                name: r.appliance.name.to_string(),
                version: r.appliance.version.clone(),
                description: r.appliance.description.clone(),
                vendor: r.appliance.vendor.clone(),
                suite: r.source.suite.clone(),
                build_id: None,
                home_url: r.appliance.url.clone(),
            },
            timezone,
            ..EtcConfig::default()
        },
        prune: PruneConfig {
            locales: Some(r.system.locale.clone())
                .filter(|l| !l.is_empty() && l != "C" && l != "C.UTF-8")
                .into_iter()
                .collect(),
            ..PruneConfig::default()
        },
        postinsts,
        scripts,
        files,
        dpkg,
    }
}

/// Step `customize_rootfs`.
fn customize(
    ctx: &mut BuildContext<'_>,
    deb_staging: &DebStaging,
    dpkg: Vec<rootfs::dpkg::DpkgPackage>,
) -> Result<(Staging, RootfsReport), BuildError> {
    let tree = manifest_tree(deb_staging, ctx.epoch)?;
    let mut staging = Staging::new(ctx.rootfs_dir(), tree, ctx.epoch);
    let postinsts = deb_staging
        .packages()
        .iter()
        .filter_map(|p| {
            p.scripts
                .get("postinst")
                .map(|s| (p.name.clone(), s.clone()))
        })
        .collect();
    let scripts = deb_staging
        .packages()
        .iter()
        .flat_map(|p| {
            p.scripts
                .iter()
                .map(|(kind, text)| rootfs::maintainer::Script {
                    package: p.name.clone(),
                    kind: kind.clone(),
                    text: text.clone(),
                })
        })
        .collect();
    let config = rootfs_config(ctx, postinsts, scripts, dpkg);
    let report =
        rootfs::customize_rootfs(&mut staging, &config).map_err(|source| BuildError::Rootfs {
            name: ctx.recipe.appliance.name.to_string(),
            source,
        })?;
    let programs: Vec<ServiceExec> = crate::init_tasks::programs(ctx.recipe);
    executables::check_executables(staging.tree(), &programs)?;
    executables::check_interpreters(&staging, &programs)?;
    for warning in executables::config_program_warnings(&staging) {
        ctx.ui.warning(&warning);
    }
    for note in &report.notes {
        ctx.ui.info(note);
    }
    Ok((staging, report))
}

/// guest-init's configuration from the recipe, plus the runtime directories packages'
/// `tmpfiles.d` entries ask for under `/run` and `/tmp`.
pub fn init_config(recipe: &Recipe, runtime_dirs: &[RuntimeDir]) -> InitConfig {
    let services = recipe
        .services
        .iter()
        .map(|s| ServiceConfig {
            name: s.name.clone(),
            exec: s.exec.clone(),
            user: Some(s.user.clone()).filter(|u| !u.is_empty() && u != "root"),
            group: s.group.clone(),
            environment: s.environment.clone(),
            working_directory: Some(s.working_directory.clone()).filter(|w| !w.is_empty()),
            restart: match s.restart {
                recipe::Restart::No => RestartPolicy::No,
                recipe::Restart::OnFailure => RestartPolicy::OnFailure,
                recipe::Restart::Always => RestartPolicy::Always,
            },
            after: s.after.clone(),
            ready: s.ready.as_ref().map(|ready| {
                let mut config = ReadyConfig {
                    tcp: None,
                    file: None,
                    command: None,
                    http: None,
                    timeout_ms: Some(millis(ready.timeout)),
                };
                match &ready.probe {
                    ReadyProbe::Tcp(port) => config.tcp = Some(*port),
                    ReadyProbe::File(path) => config.file = Some(path.clone()),
                    ReadyProbe::Command(argv) => config.command = Some(argv.clone()),
                    ReadyProbe::Http { port, path } => {
                        config.http = Some(HttpProbeConfig {
                            port: *port,
                            path: path.clone(),
                        });
                    }
                }
                config
            }),
        })
        .collect();
    let checks = recipe
        .test
        .checks
        .iter()
        .map(|c| {
            let mut check = CheckConfig {
                name: c.name.clone(),
                http: None,
                tcp: None,
                command: None,
                file: None,
                service: None,
                timeout_ms: None,
            };
            match &c.kind {
                CheckKind::Http {
                    port,
                    path,
                    status,
                    body_contains,
                } => {
                    check.http = Some(HttpCheckConfig {
                        port: *port,
                        path: path.clone(),
                        status: *status,
                        body_contains: body_contains.clone(),
                    });
                }
                CheckKind::Tcp { port } => check.tcp = Some(TcpCheckConfig { port: *port }),
                CheckKind::Command {
                    run,
                    exit_code,
                    stdout_contains,
                } => {
                    check.command = Some(CommandCheckConfig {
                        run: run.clone(),
                        exit_code: *exit_code,
                        stdout_contains: stdout_contains.clone(),
                    });
                }
                CheckKind::File { path } => {
                    check.file = Some(FileCheckConfig { path: path.clone() })
                }
                CheckKind::Service { name } => {
                    check.service = Some(ServiceCheckConfig { name: name.clone() });
                }
            }
            check
        })
        .collect();
    InitConfig {
        hostname: Some(recipe.system.hostname.clone()),
        network: match &recipe.network {
            recipe::Network::Dhcp => NetworkConfig::Dhcp,
            recipe::Network::None => NetworkConfig::None,
            recipe::Network::Static(s) => NetworkConfig::Static(StaticNetworkConfig {
                address: s.address,
                prefix: s.prefix,
                gateway: s.gateway,
                dns: s.dns.clone(),
                ipv6: s
                    .ipv6
                    .map(|(address, prefix)| guest_init::config::StaticIpv6Config {
                        address,
                        prefix,
                        gateway: s.gateway6,
                    }),
            }),
        },
        root_rw: true,
        services,
        checks,
        test_timeout_ms: millis(recipe.test.timeout),
        shutdown_timeout_ms: 10_000,
        runtime_dirs: crate::init_tasks::runtime_dir_configs(runtime_dirs),
        tasks: crate::init_tasks::task_configs(recipe),
        properties: crate::deploy::property_defaults(recipe),
        boot_files: crate::deploy::boot_files(recipe),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Step `install_init`: guest-init as PID 1 and its configuration.
fn install_init(
    ctx: &mut BuildContext<'_>,
    staging: &mut Staging,
    runtime_dirs: &[RuntimeDir],
) -> Result<(), BuildError> {
    let json = serde_json::to_vec_pretty(&init_config(ctx.recipe, runtime_dirs))
        .expect("the init configuration serialises");
    let root = Ownership {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    staging.apply(&[
        FsOp::CreateDir {
            path: PathBuf::from("usr/lib/jeos"),
            own: root,
            update: false,
        },
        FsOp::WriteFile {
            path: PathBuf::from(DEFAULT_INIT_PATH.trim_start_matches('/')),
            contents: crate::GUEST_INIT.to_vec(),
            own: root,
        },
        FsOp::CreateDir {
            path: PathBuf::from("etc/jeos"),
            own: root,
            update: false,
        },
        FsOp::WriteFile {
            path: PathBuf::from(INIT_CONFIG_PATH),
            contents: json,
            own: Ownership {
                mode: 0o644,
                ..root
            },
        },
    ])?;
    Ok(())
}

/// The kernel image and the initramfs modules.
struct KernelArtifacts {
    version: String,
    vmlinuz: Vec<u8>,
    modules: Vec<String>,
}

/// Step `build_initramfs`: guest-init as `/init`, the hypervisor drivers and their
/// dependencies (decompressed, in load order), compressed with zstd.
fn build_initramfs(
    ctx: &mut BuildContext<'_>,
    kernel_dir: &Path,
) -> Result<(KernelArtifacts, Vec<u8>), BuildError> {
    let package = ctx.recipe.kernel.package.clone();
    let kernel_err = |source| BuildError::Kernel {
        package: package.clone(),
        source,
    };
    let kernel = KernelPackage::open(kernel_dir, None).map_err(kernel_err)?;
    let mut wanted: Vec<&str> = DEFAULT_MODULES.to_vec();
    wanted.extend(EXTRA_MODULES);
    wanted.extend(crate::kernel::hardware::vm_modules(&ctx.recipe.vm));
    wanted.extend(ctx.recipe.kernel.extra_modules.iter().map(String::as_str));
    let required: Vec<&str> = ctx
        .recipe
        .kernel
        .extra_modules
        .iter()
        .map(String::as_str)
        .collect();
    let plan = kernel
        .plan_modules(&wanted, &required)
        .map_err(kernel_err)?;
    if let Some(module) = plan.missing.iter().find(|m| required.contains(&m.as_str())) {
        return Err(BuildError::MissingModule {
            kernel: plan.kernel_version.clone(),
            module: module.clone(),
        });
    }
    crate::kernel::hardware::check_vm_drivers(&ctx.recipe.vm, ctx.recipe.kernel.flavour, &plan)?;
    if !plan.missing.is_empty() {
        ctx.ui.info(&format!(
            "kernel {} lacks {} (those devices will not be driven)",
            plan.kernel_version,
            plan.missing.join(", ")
        ));
    }
    let base = format!("lib/modules/{}", plan.kernel_version);
    let mut entries = vec![
        CpioEntry::dir("dev"),
        CpioEntry::dev_console(),
        CpioEntry::dir("etc"),
        CpioEntry::dir("etc/jeos"),
        CpioEntry::file("etc/jeos/initramfs", 0o644, Vec::new()),
        CpioEntry::file("init", 0o755, crate::GUEST_INIT.to_vec()),
        CpioEntry::dir("lib"),
        CpioEntry::dir("lib/modules"),
        CpioEntry::dir("proc"),
        CpioEntry::dir("run"),
        CpioEntry::dir("sys"),
        CpioEntry::dir("tmp"),
    ];
    let mut list = String::new();
    let mut dirs = std::collections::BTreeSet::new();
    let mut names = Vec::new();
    for module in &plan.modules {
        let inside = module_path_inside(&module.path, &plan.kernel_version);
        let bytes = kernel.read_module(&module.path).map_err(kernel_err)?;
        let path = format!("{base}/{inside}");
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent {
            if dir.as_os_str().is_empty() || dir == Path::new("lib/modules") {
                break;
            }
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
        entries.push(CpioEntry::file(&path, 0o644, bytes));
        list.push_str(&inside);
        list.push('\n');
        names.push(module.name.clone());
    }
    entries.extend(dirs.iter().map(|d| CpioEntry::dir(d)));
    entries.push(CpioEntry::file(
        "lib/modules/jeos.list",
        0o644,
        list.into_bytes(),
    ));
    // guest-init loads only the drivers of devices present: the closure's own index.
    let version = plan.kernel_version.clone();
    entries.push(CpioEntry::file(
        &format!("{base}/modules.alias"),
        0o644,
        crate::kernel::modindex::render_modules_alias(&plan.modules).into_bytes(),
    ));
    entries.push(CpioEntry::file(
        &format!("{base}/modules.dep"),
        0o644,
        crate::kernel::modindex::render_modules_dep(&plan.modules, |m| {
            module_path_inside(&m.path, &version)
        })
        .into_bytes(),
    ));
    let epoch = u64::try_from(ctx.epoch).unwrap_or(0);
    let initramfs = cpio::write_initramfs(&entries, epoch).map_err(BuildError::Initramfs)?;
    let vmlinuz_path = kernel_dir.join(&plan.vmlinuz);
    let vmlinuz = fs::read(&vmlinuz_path).map_err(io_err("read", &vmlinuz_path))?;
    Ok((
        KernelArtifacts {
            version: plan.kernel_version,
            vmlinuz,
            modules: names,
        },
        initramfs,
    ))
}

/// `usr/lib/modules/<v>/kernel/drivers/x.ko.xz` → `kernel/drivers/x.ko` (relative to
/// `/lib/modules/<v>/`, decompressed).
fn module_path_inside(path: &Path, version: &str) -> String {
    let text = path.to_string_lossy();
    let marker = format!("modules/{version}/");
    let inside = text
        .find(&marker)
        .map_or(text.as_ref(), |i| &text[i + marker.len()..]);
    inside
        .strip_suffix(".xz")
        .or_else(|| inside.strip_suffix(".zst"))
        .or_else(|| inside.strip_suffix(".gz"))
        .unwrap_or(inside)
        .to_owned()
}

/// The customisation tree as the ext4 writer's metadata.
fn ext4_metadata(tree: &Tree) -> Vec<Ext4Metadata> {
    tree.iter()
        .filter(|(path, _)| !path.as_os_str().is_empty())
        .map(|(path, entry)| Ext4Metadata {
            path: format!("/{}", path.display()),
            uid: entry.uid,
            gid: entry.gid,
            permissions: entry.mode & 0o7777,
            mtime: u64::try_from(entry.mtime).ok(),
            kind: match &entry.kind {
                // The staging directory holds hard links as real links; mkfs.ext4 -d keeps
                // them, so they are plain files here.
                EntryKind::File { .. } | EntryKind::Hardlink { .. } => Ext4NodeKind::File,
                EntryKind::Dir => Ext4NodeKind::Dir,
                EntryKind::Symlink { .. } => Ext4NodeKind::Symlink,
                EntryKind::CharDevice { major, minor } => Ext4NodeKind::CharDevice {
                    major: *major,
                    minor: *minor,
                },
                EntryKind::BlockDevice { major, minor } => Ext4NodeKind::BlockDevice {
                    major: *major,
                    minor: *minor,
                },
                EntryKind::Fifo => Ext4NodeKind::Fifo,
            },
        })
        .collect()
}

/// The kernel command line. Each parameter, and why:
/// - `root=UUID=…`: guest-init's initramfs stage mounts the ext4 root by filesystem UUID;
/// - `rw`: services write logs and state under `/var` as on any Debian system;
/// - `console=tty0 console=ttyS0,115200`: the last console is `/dev/console`, so PID 1's
///   log and the test protocol reach the first serial port, which runners capture;
/// - `panic=-1`: reboot at once on a panic, so a runner sees the VM exit instead of a hang;
/// - `reboot=k`: reboot through the keyboard controller, the exit that works without ACPI;
/// - `quiet`: kernel messages only from warnings up, which keeps boots over emulated
///   serial consoles fast.
pub fn kernel_cmdline(root_uuid: &str, extra: &[String]) -> String {
    let mut parts = vec![
        format!("root=UUID={root_uuid}"),
        "rw".to_owned(),
        "console=tty0".to_owned(),
        "console=ttyS0,115200".to_owned(),
        "panic=-1".to_owned(),
        "reboot=k".to_owned(),
        "quiet".to_owned(),
    ];
    parts.extend(extra.iter().cloned());
    parts.join(" ")
}

/// Step `write_disk`.
fn write_disk(
    ctx: &mut BuildContext<'_>,
    staging: &Staging,
    kernel: &KernelArtifacts,
    initramfs: &[u8],
    loaders_dir: &Path,
    raw: &Path,
    extra_esp_files: Vec<(String, Vec<u8>)>,
) -> Result<(DiskReport, String), BuildError> {
    let loaders = crate::loader_files::read_loader_files(loaders_dir)?;
    let root_uuid = image_writer::ext4::root_fs_uuid(&ctx.seed);
    let cmdline = kernel_cmdline(&root_uuid.to_string(), &ctx.recipe.kernel.cmdline);
    let mut label: String = ctx.recipe.appliance.name.to_string();
    label.truncate(16);
    let size = match ctx.recipe.disk.size {
        Some(size) => Ext4Size::Exact(size.bytes()),
        None => Ext4Size::Auto {
            free_space_bytes: ctx.recipe.disk.free_space.bytes(),
        },
    };
    let timestamp = u64::try_from(ctx.epoch).unwrap_or(0);
    let plan = DiskPlan {
        kernel: kernel.vmlinuz.clone(),
        initramfs: initramfs.to_vec(),
        cmdline: cmdline.clone(),
        loaders,
        root: Ext4Config {
            staging_dir: ctx.rootfs_dir(),
            metadata: ext4_metadata(staging.tree()),
            size,
            seed: ctx.seed,
            label,
            timestamp,
        },
        esp_size_bytes: None,
        extra_esp_files,
        seed: ctx.seed,
        timestamp,
    };
    let report = image_writer::write_disk(&plan, raw).map_err(|e| {
        if crate::no_space::in_chain(&e) {
            BuildError::DiskNoSpace(e)
        } else {
            BuildError::Disk(e)
        }
    })?;
    Ok((report, cmdline))
}

/// Step `write_sbom`: the SPDX document beside the images; returns the files that go on
/// the ESP so that `jeos audit IMAGE` works from the image alone: the SBOM and the lock.
fn write_sbom(
    ctx: &mut BuildContext<'_>,
    lock: &LockFile,
    staging: &Staging,
    kernel_release: &str,
) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    let licenses: BTreeMap<String, String> = lock
        .packages
        .iter()
        .filter_map(|p| {
            let path = PathBuf::from(format!("usr/share/doc/{}/copyright", p.name));
            let text = staging.read_file(&path).ok()?;
            let expression = crate::sbom::licenses_from_copyright(&String::from_utf8_lossy(&text))?;
            Some((p.name.clone(), expression))
        })
        .collect();
    let document = crate::sbom::render_spdx(&crate::sbom::SbomInput {
        name: ctx.recipe.appliance.name.as_str(),
        version: &ctx.recipe.appliance.version,
        lock,
        licenses: &licenses,
        kernel_release,
        epoch: ctx.epoch,
        guest_init_sha256: package_resolver::release::sha256_hex(crate::GUEST_INIT),
    });
    let mut bytes = serde_json::to_vec_pretty(&document).expect("JSON values serialise");
    bytes.push(b'\n');
    let path = ctx
        .stage_dir()
        .join(format!("{}.spdx.json", ctx.artifact_name()));
    fs::write(&path, &bytes).map_err(io_err("write", &path))?;
    Ok(vec![
        (crate::audit::ESP_SBOM.to_owned(), bytes),
        (
            crate::audit::ESP_LOCK.to_owned(),
            lock.to_toml_string().into_bytes(),
        ),
    ])
}

/// Step `write_report`: the lock and the report beside the images.
fn write_report(
    ctx: &mut BuildContext<'_>,
    lock: &LockFile,
    report: &BuildReport,
) -> Result<(), BuildError> {
    let stage = ctx.stage_dir();
    let lock_path = stage.join(format!("{}.lock", ctx.artifact_name()));
    fs::write(&lock_path, lock.to_toml_string()).map_err(io_err("write", &lock_path))?;
    let mut report = report.clone();
    report.steps = ctx.steps.clone();
    let json = serde_json::to_vec_pretty(&report).expect("the report serialises");
    let path = stage.join("build-report.json");
    fs::write(&path, json).map_err(io_err("write", &path))?;
    let _ = ctx.recipe_path;
    Ok(())
}

/// Renames the finished directory to `DIR/<name>-<version>`, replacing an older build.
fn move_into_place(stage: &Path, final_dir: &Path) -> Result<(), BuildError> {
    replace::replace_dir(stage, final_dir, &replace::SystemRenamer).map_err(|e| BuildError::Io {
        action: e.action,
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_are_relative_to_the_release_and_decompressed() {
        assert_eq!(
            module_path_inside(
                Path::new("usr/lib/modules/6.12.1-amd64/kernel/drivers/block/virtio_blk.ko.xz"),
                "6.12.1-amd64"
            ),
            "kernel/drivers/block/virtio_blk.ko"
        );
        assert_eq!(
            module_path_inside(Path::new("lib/modules/6.1/kernel/fs/ext4/ext4.ko"), "6.1"),
            "kernel/fs/ext4/ext4.ko"
        );
    }

    #[test]
    fn cmdline_names_the_root_and_the_serial_console_last() {
        let line = kernel_cmdline("1234", &["nokaslr".to_owned()]);
        assert!(line.starts_with("root=UUID=1234 rw "), "{line}");
        let tty0 = line.find("console=tty0").expect("tty0");
        let serial = line.find("console=ttyS0").expect("ttyS0");
        assert!(tty0 < serial, "{line}");
        assert!(line.ends_with(" nokaslr"), "{line}");
    }

    #[test]
    fn init_config_carries_services_checks_and_network() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/nginx.toml"),
        )
        .expect("example recipe");
        let recipe = crate::recipe::parse_str("nginx.toml", &text, None).expect("valid");
        let dirs = [RuntimeDir {
            path: "/run/nginx".into(),
            mode: 0o750,
            uid: 33,
            gid: 33,
            kind: crate::rootfs::tmpfiles::RuntimeKind::Directory,
        }];
        let config = init_config(&recipe, &dirs);
        assert_eq!(config.runtime_dirs[0].path, "/run/nginx");
        config.validate().expect("guest-init accepts it");
        assert_eq!(config.hostname.as_deref(), Some("nginx"));
        assert_eq!(config.network, NetworkConfig::Dhcp);
        assert_eq!(config.services.len(), 1);
        assert_eq!(config.services[0].exec[0], "/usr/sbin/nginx");
        assert_eq!(
            config.services[0].ready.as_ref().and_then(|r| r.tcp),
            Some(80)
        );
        assert!(config.checks.iter().any(|c| c.http.is_some()));
        let json = serde_json::to_string(&config).expect("json");
        let back = InitConfig::from_json(&json).expect("guest-init parses it");
        assert_eq!(back, config);
    }

    #[test]
    fn hard_links_and_devices_become_ext4_metadata() {
        let mut tree = Tree::new(5);
        let own = Ownership {
            mode: 0o755,
            uid: 0,
            gid: 0,
        };
        tree.add_dir(Path::new("dev"), own, 5).expect("dir");
        tree.add_char_device(Path::new("dev/null"), 1, 3, own, 5)
            .expect("dev");
        tree.add_file(
            Path::new("a"),
            3,
            Ownership {
                mode: 0o4755,
                ..own
            },
            5,
        )
        .expect("file");
        tree.add_hardlink(Path::new("b"), Path::new("a"), own, 5)
            .expect("link");
        let meta = ext4_metadata(&tree);
        let find = |p: &str| meta.iter().find(|m| m.path == p).expect(p);
        assert!(matches!(
            find("/dev/null").kind,
            Ext4NodeKind::CharDevice { major: 1, minor: 3 }
        ));
        assert_eq!(find("/a").permissions, 0o4755);
        assert_eq!(find("/b").kind, Ext4NodeKind::File);
        assert!(meta.iter().all(|m| m.path != "/"));
    }
}
