//! `jeos build`: a flat list of steps over one context, each timed and reported.
//!
//! ```text
//! resolve_packages ─▶ fetch_packages ─▶ unpack_rootfs ─▶ unpack_kernel ─▶ unpack_boot_loaders
//!   ─▶ customize_rootfs ─▶ install_init ─▶ build_initramfs ─▶ write_sbom ─▶ write_disk
//!   ─▶ publish_formats ─▶ write_report ─▶ (rename into DIR/<name>-<version>/)
//! ```
//!
//! Each step is a function of the same name over the [`BuildContext`] (work paths, cache,
//! UI) and the [`BuildPlan`] (what the recipe and the lock mean, computed without IO by
//! [`crate::plan`]); `resolve_packages` makes the plan once the lock is known.
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

use guest_init::config::InitConfig;
use image_writer::cpio::{self, CpioEntry};
use image_writer::ext4::Ext4Config;
use image_writer::{DiskPlan, DiskReport};
use miette::Diagnostic;
use package_resolver::cache::Cache;
use package_resolver::deb::{self, UnpackDir, UnpackOptions};
use package_resolver::fetch::{self, FetchItem, FetchOptions};
use package_resolver::lock::{LockFile, LockedPackage};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::kernel::KernelPackage;
use crate::plan::{self, BuildPlan};
use crate::progress::Ui;
use crate::publish::{PublishOptions, PublishReport};
use crate::recipe::Recipe;
use crate::reporters::UiResolverReporter;
use crate::resolve::{self, ResolveError, ResolveOptions};
use crate::rootfs::executables::{self, ServiceExec};
use crate::rootfs::staging::{FsOp, Staging};
use crate::rootfs::tmpfiles::RuntimeDir;
use crate::rootfs::tree::{Entry, EntryKind, Ownership, Tree};
use crate::rootfs::{self, DEFAULT_INIT_PATH, RootfsConfig, RootfsReport};

/// Where guest-init reads its configuration.
const INIT_CONFIG_PATH: &str = "etc/jeos/init.json";

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

pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> BuildError {
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
    /// Its output came from the step cache (content-addressed by every input).
    pub cached: bool,
}

/// The build's state: frozen inputs plus the work paths.
/// The build's state: frozen inputs, the work directory and the step timings. The
/// configuration the steps apply is the [`BuildPlan`], made once the lock is known.
pub(crate) struct BuildContext<'a> {
    pub(crate) recipe: &'a Recipe,
    recipe_path: &'a Path,
    options: &'a BuildOptions,
    pub(crate) ui: Arc<Ui>,
    reporter: Arc<UiResolverReporter>,
    pub(crate) cache: Cache,
    work: tempfile::TempDir,
    _active: ActiveWorkDir,
    steps: Vec<StepReport>,
    /// Set by a step whose output came from its step cache ([`crate::stepcache`]).
    pub(crate) cache_hit: bool,
}

impl<'a> BuildContext<'a> {
    /// The hidden work directory in `-o DIR` (same file system as the final rename) and
    /// the package cache.
    fn create(
        recipe: &'a Recipe,
        recipe_path: &'a Path,
        options: &'a BuildOptions,
        ui: Arc<Ui>,
    ) -> Result<Self, BuildError> {
        fs::create_dir_all(&options.out_dir).map_err(io_err("create", &options.out_dir))?;
        remove_stale_work_dirs(&options.out_dir);
        let (work, active) = ActiveWorkDir::create_in(&options.out_dir)
            .map_err(io_err("create a work directory in", &options.out_dir))?;
        let cache = resolve::open_cache(&options.resolve.cache_dir)?;
        // Killed builds leave temp downloads and half-unpacked trees: reclaim them.
        let _ = cache.reclaim_leftovers(Duration::from_secs(3600));
        let stage = work.path().join("out");
        create_work_subdir(&stage)?;
        Ok(Self {
            recipe,
            recipe_path,
            options,
            reporter: Arc::new(UiResolverReporter::new(Arc::clone(&ui))),
            ui,
            cache,
            work,
            _active: active,
            steps: Vec::new(),
            cache_hit: false,
        })
    }

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

    /// The raw disk image in the stage directory.
    fn raw_image(&self) -> PathBuf {
        self.stage_dir()
            .join(format!("{}.raw", self.artifact_name()))
    }

    /// Runs step `name` (the step function's name: the UI shows it as words, the build
    /// report and `--json` as is), timing it for the report.
    fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<T, BuildError>,
    ) -> Result<T, BuildError> {
        self.ui.step_started(name);
        let start = Instant::now();
        self.cache_hit = false;
        let result = f(self);
        let elapsed = start.elapsed();
        if result.is_ok() {
            self.ui.step_finished(name, elapsed);
            self.steps.push(StepReport {
                name: name.to_owned(),
                seconds: elapsed.as_secs_f64(),
                cached: self.cache_hit,
            });
        }
        result
    }

    /// [`Self::step`] when `wanted`, else nothing (no step line, no report entry).
    fn step_if<T>(
        &mut self,
        wanted: bool,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<T, BuildError>,
    ) -> Result<Option<T>, BuildError> {
        if wanted {
            self.step(name, f).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Builds the appliance: see the module documentation.
pub fn build(
    recipe: &Recipe,
    recipe_path: &Path,
    options: &BuildOptions,
    ui: Arc<Ui>,
) -> Result<BuildReport, BuildError> {
    let mut ctx = BuildContext::create(recipe, recipe_path, options, ui)?;
    let (lock, plan) = ctx.step("resolve_packages", resolve_packages)?;
    let debs = ctx.step("fetch_packages", |c| fetch_packages(c, &lock))?;
    let unpacked = ctx.step("unpack_rootfs", |c| unpack_rootfs(c, &plan, &lock, &debs))?;
    let kernel_dir = ctx.step("unpack_kernel", |c| unpack_kernel(c, &plan, &lock, &debs))?;
    let loaders_dir = ctx.step("unpack_boot_loaders", |c| {
        unpack_boot_loaders(c, &plan, &lock, &debs)
    })?;
    let (mut staging, rootfs_report) = ctx.step("customize_rootfs", |c| {
        customize_rootfs(c, &plan, &lock, &debs, &unpacked)
    })?;
    ctx.step("install_init", |c| {
        install_init(c, &plan, &mut staging, &rootfs_report.runtime_dirs)
    })?;
    let kernel = ctx.step("build_initramfs", |c| {
        crate::stepcache::cached_initramfs(c, &plan, &kernel_dir, build_initramfs)
    })?;
    ctx.step_if(recipe.disk.convertible, "install_kernel", |_| {
        crate::convertible::install_kernel(&plan, &lock, &debs, &kernel_dir, &kernel, &mut staging)
    })?;
    let esp_extra = ctx.step("write_sbom", |c| {
        write_sbom(c, &plan, &lock, &staging, &kernel.version)
    })?;
    let disk = ctx.step("write_disk", |c| {
        write_disk(c, &plan, &staging, &kernel, &loaders_dir, esp_extra)
    })?;
    let published = ctx.step_if(plan.publishes(), "publish_formats", |c| {
        publish_formats(c, &plan)
    })?;
    let report = build_report(
        &ctx,
        &plan,
        &unpacked,
        &rootfs_report,
        &kernel,
        disk,
        published,
    );
    ctx.step("write_report", |c| write_report(c, &lock, &report))?;
    finish(&ctx, report)
}

/// Step `resolve_packages`: the lock (read, checked or made anew), and the build plan of
/// the recipe with it.
fn resolve_packages(ctx: &mut BuildContext<'_>) -> Result<(LockFile, BuildPlan), BuildError> {
    let resolved = resolve::resolve_packages(
        ctx.recipe,
        ctx.recipe_path,
        &ctx.options.resolve,
        ctx.reporter.clone(),
    )?;
    let recipe_bytes = fs::read(ctx.recipe_path).map_err(io_err("read", ctx.recipe_path))?;
    let plan = BuildPlan::new(
        ctx.recipe,
        &recipe_bytes,
        &resolved.lock,
        ctx.options.source_date_epoch,
    );
    Ok((resolved.lock, plan))
}

/// Step `publish_formats`: qcow2, VMDK, VHD, GCE and the OVF package from the raw disk.
fn publish_formats(
    ctx: &mut BuildContext<'_>,
    plan: &BuildPlan,
) -> Result<PublishReport, BuildError> {
    let recipe_dir = ctx
        .recipe_path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    Ok(crate::publish::publish_artifacts(
        ctx.recipe,
        &recipe_dir,
        &ctx.raw_image(),
        &ctx.stage_dir(),
        plan.epoch,
        &ctx.options.publish,
        &ctx.ui,
    )?)
}

/// The report of a finished build (its step list is filled in by [`finish`]).
fn build_report(
    ctx: &BuildContext<'_>,
    plan: &BuildPlan,
    unpacked: &Unpacked,
    rootfs_report: &RootfsReport,
    kernel: &KernelArtifacts,
    disk: DiskReport,
    published: Option<PublishReport>,
) -> BuildReport {
    let final_dir = ctx.options.out_dir.join(ctx.artifact_name());
    let deb_staging = &unpacked.staging;
    BuildReport {
        name: ctx.recipe.appliance.name.to_string(),
        version: ctx.recipe.appliance.version.clone(),
        output: final_dir.clone(),
        raw_image: final_dir.join(ctx.raw_image().file_name().unwrap_or_default()),
        image_bytes: disk.size_bytes,
        root_fs_bytes: disk.root_size_bytes,
        esp_bytes: disk.esp_size_bytes,
        kernel: kernel.version.clone(),
        modules: kernel.modules.clone(),
        initramfs_bytes: u64::try_from(kernel.initramfs.len()).unwrap_or(u64::MAX),
        packages: unpacked.bytes.clone(),
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
        source_date_epoch: plan.epoch,
        cmdline: plan.disk.cmdline.clone(),
        steps: Vec::new(),
        published,
    }
}

/// Renames the finished directory into place and completes the report.
fn finish(ctx: &BuildContext<'_>, mut report: BuildReport) -> Result<BuildReport, BuildError> {
    report.steps = ctx.steps.clone();
    move_into_place(&ctx.stage_dir(), &report.output)?;
    Ok(report)
}

/// when the process is interrupted.
static ACTIVE_WORK_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the work directories of this process's running builds. The binary calls it
/// from its SIGINT/SIGTERM handler, so an interrupted build leaves nothing in `-o DIR`.
pub fn remove_active_work_dirs() {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
    let dirs = ACTIVE_WORK_DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    // The build's threads keep running while this runs: a pass can fail on a directory
    // that just gained a file, and a thread that creates a directory with its parents
    // brings a removed one back. Remove until every directory has stayed gone for 50 ms
    // (at most 3 s); writes into a removed directory fail.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut quiet = 0;
    while quiet < 5 && Instant::now() < deadline {
        let mut present = false;
        for dir in &dirs {
            if fs::symlink_metadata(dir).is_ok() {
                present = true;
                let _ = fs::remove_dir_all(dir);
            }
        }
        quiet = if present { 0 } else { quiet + 1 };
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Set once [`remove_active_work_dirs`] has begun: the process is ending with the
/// interrupt's status, and a build failing because its directory vanished must not end it
/// first with its own.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether an interrupt is removing the work directories (see [`INTERRUPTED`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Creates a directory directly in the work directory. Not `create_dir_all`: after an
/// interrupt has removed the work directory, that would bring it back.
fn create_work_subdir(dir: &Path) -> Result<(), BuildError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io_err("create", dir)(e)),
        _ => Ok(()),
    }
}

/// Registers a work directory for [`remove_active_work_dirs`] while it lives.
struct ActiveWorkDir(PathBuf);

impl ActiveWorkDir {
    /// Creates the hidden work directory in `out_dir` and registers it, holding the
    /// registry's lock throughout, so an interrupt (whose handler takes the same lock)
    /// cannot fall between the two and leave the directory behind.
    fn create_in(out_dir: &Path) -> std::io::Result<(tempfile::TempDir, Self)> {
        let mut active = ACTIVE_WORK_DIRS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let work = tempfile::Builder::new()
            .prefix(".jeos-build-")
            .tempdir_in(out_dir)?;
        active.push(work.path().to_owned());
        let registered = Self(work.path().to_owned());
        Ok((work, registered))
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
) -> Result<BTreeMap<String, PathBuf>, BuildError> {
    let all: Vec<&LockedPackage> = lock.packages.iter().chain(lock.tools.iter()).collect();
    let repos = resolve::open_repositories(
        &ctx.recipe.source,
        &ctx.options.resolve,
        ctx.reporter.clone(),
    )?;
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

pub(crate) fn deb_path<'a>(debs: &'a BTreeMap<String, PathBuf>, name: &str) -> &'a Path {
    debs.get(name)
        .map(PathBuf::as_path)
        .expect("every locked package was fetched")
}

/// Unpacks `packages` in order into `root` with Debian's merged-/usr layout.
fn unpack_all(
    root: &Path,
    packages: &[&LockedPackage],
    debs: &BTreeMap<String, PathBuf>,
) -> Result<UnpackDir, BuildError> {
    unpack_all_observed(root, packages, debs, &mut |_| {})
}

/// [`unpack_all`], reporting each regular file once written (see
/// [`UnpackDir::unpack_deb_observed`]).
fn unpack_all_observed(
    root: &Path,
    packages: &[&LockedPackage],
    debs: &BTreeMap<String, PathBuf>,
    on_file: &mut dyn FnMut(&str),
) -> Result<UnpackDir, BuildError> {
    let mut staging = UnpackDir::new(root).map_err(|source| BuildError::Unpack {
        package: "(staging)".to_owned(),
        source,
    })?;
    let options = UnpackOptions {
        merged_usr: true,
        ..UnpackOptions::default()
    };
    for p in packages {
        staging
            .unpack_deb_observed(deb_path(debs, &p.name), &options, on_file)
            .map_err(|source| BuildError::Unpack {
                package: p.name.clone(),
                source,
            })?;
    }
    Ok(staging)
}

/// The unpacked root filesystem packages and what each contributed.
struct Unpacked {
    staging: UnpackDir,
    bytes: Vec<PackageBytes>,
}

/// Step `unpack_rootfs`: the non-kernel packages into the staging tree (merged-/usr).
fn unpack_rootfs(
    ctx: &mut BuildContext<'_>,
    plan: &BuildPlan,
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
) -> Result<Unpacked, BuildError> {
    let root = ctx.rootfs_dir();
    create_work_subdir(&root)?;
    let rootfs = plan::locked(lock, &plan.packages.rootfs);
    let staging =
        crate::stepcache::cached_rootfs(ctx, &root, &rootfs, |dir| unpack_all(dir, &rootfs, debs))?;
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
    Ok(Unpacked { staging, bytes })
}

/// Unpacks `packages` into `<cache>/unpacked/<key>/` once (with `unpack`, given the
/// directory to fill); later builds reuse it. The key is the SHA-256 of the packages'
/// SHA-256s, so a different kernel gets a different directory.
fn unpack_cached(
    ctx: &BuildContext<'_>,
    packages: &[&LockedPackage],
    unpack: impl FnOnce(&Path) -> Result<(), BuildError>,
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
    unpack(tmp.path())?;
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

/// The kernel packages into `root`, their modules' `.modinfo` decoded on the other cores
/// as they land.
fn unpack_kernel_tree(
    root: &Path,
    packages: &[&LockedPackage],
    debs: &BTreeMap<String, PathBuf>,
) -> Result<crate::kernel::prescan::Scanned, BuildError> {
    let mut scan =
        crate::kernel::prescan::ModuleScan::start(root, crate::kernel::prescan::spare_cores());
    unpack_all_observed(root, packages, debs, &mut |path| scan.file_written(path))?;
    Ok(scan.finish())
}

/// Step `unpack_kernel`.
fn unpack_kernel(
    ctx: &mut BuildContext<'_>,
    plan: &BuildPlan,
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
) -> Result<PathBuf, BuildError> {
    let kernel = plan::locked(lock, &plan.packages.kernel);
    if kernel.is_empty() {
        return Err(BuildError::NoKernel);
    }
    let mut scanned = None;
    let dir = unpack_cached(ctx, &kernel, |root| {
        scanned = Some(unpack_kernel_tree(root, &kernel, debs)?);
        Ok(())
    })?;
    // Saved once the tree is in the cache with its marker, so the index names the verified
    // tree digest (a tree without modules gets none: the initramfs step reports that).
    if let Some(scanned) = scanned
        && let Ok(package) = KernelPackage::open(&dir, None)
    {
        package.save_alias_index(&scanned);
    }
    Ok(dir)
}

/// Step `unpack_boot_loaders`.
fn unpack_boot_loaders(
    ctx: &mut BuildContext<'_>,
    plan: &BuildPlan,
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
) -> Result<PathBuf, BuildError> {
    let tools = plan::locked(lock, &plan.packages.tools);
    unpack_cached(ctx, &tools, |root| unpack_all(root, &tools, debs).map(drop))
}

/// The unpacker's manifest as the customisation tree.
fn manifest_tree(staging: &UnpackDir, epoch: i64) -> Result<Tree, BuildError> {
    let mut tree = Tree::new(epoch);
    for (path, entry) in staging.manifest() {
        let kind = match &entry.kind {
            deb::EntryKind::File => EntryKind::File { size: entry.size },
            deb::EntryKind::Dir => EntryKind::Dir,
            deb::EntryKind::Symlink { target } => EntryKind::Symlink {
                target: PathBuf::from(target),
            },
            deb::EntryKind::HardLink { target } => EntryKind::HardLink {
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
    plan: &BuildPlan,
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
    deb_staging: &UnpackDir,
) -> Result<Vec<rootfs::dpkg::DpkgPackage>, BuildError> {
    let mut kernel = Vec::new();
    for p in plan::locked(lock, &plan.packages.kernel) {
        let report = deb::read_package_control(deb_path(debs, &p.name), &UnpackOptions::default())
            .map_err(|source| BuildError::Unpack {
                package: p.name.clone(),
                source,
            })?;
        kernel.push(report);
    }
    Ok(rootfs::dpkg::packages_from_unpack(deb_staging, &kernel))
}

/// Step `customize_rootfs`: the plan's root filesystem configuration, completed with the
/// packages' maintainer scripts and dpkg data, applied to the unpacked tree.
fn customize_rootfs(
    ctx: &mut BuildContext<'_>,
    plan: &BuildPlan,
    lock: &LockFile,
    debs: &BTreeMap<String, PathBuf>,
    unpacked: &Unpacked,
) -> Result<(Staging, RootfsReport), BuildError> {
    let deb_staging = &unpacked.staging;
    let dpkg = dpkg_packages(plan, lock, debs, deb_staging)?;
    let tree = manifest_tree(deb_staging, plan.epoch)?;
    let mut staging = Staging::new(ctx.rootfs_dir(), tree, plan.epoch);
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
    let config = RootfsConfig {
        postinsts,
        scripts,
        dpkg,
        ..plan.rootfs.clone()
    };
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

/// Step `install_init`: guest-init as PID 1 and its configuration.
fn install_init(
    _ctx: &mut BuildContext<'_>,
    plan: &BuildPlan,
    staging: &mut Staging,
    runtime_dirs: &[RuntimeDir],
) -> Result<(), BuildError> {
    let config = InitConfig {
        runtime_dirs: crate::init_tasks::runtime_dir_configs(runtime_dirs),
        ..plan.init.clone()
    };
    let json = serde_json::to_vec_pretty(&config).expect("the init configuration serialises");
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

/// The kernel image, the initramfs and its modules.
pub(crate) struct KernelArtifacts {
    pub(crate) version: String,
    pub(crate) vmlinuz: Vec<u8>,
    /// `vmlinuz` inside the kernel tree.
    pub(crate) vmlinuz_path: PathBuf,
    pub(crate) modules: Vec<String>,
    /// Wanted modules this kernel lacks (shown as a note).
    pub(crate) missing: Vec<String>,
    pub(crate) initramfs: Vec<u8>,
}

/// Step `build_initramfs`: guest-init as `/init`, the hypervisor drivers and their
/// dependencies (decompressed, in load order), compressed with zstd.
pub(crate) fn build_initramfs(
    ctx: &mut BuildContext<'_>,
    build_plan: &BuildPlan,
    kernel_dir: &Path,
) -> Result<KernelArtifacts, BuildError> {
    let kernel_err = |source| BuildError::Kernel {
        package: build_plan.modules.package.clone(),
        source,
    };
    let kernel = KernelPackage::open(kernel_dir, None).map_err(kernel_err)?;
    let wanted: Vec<&str> = build_plan
        .modules
        .wanted
        .iter()
        .map(String::as_str)
        .collect();
    let required: Vec<&str> = (build_plan.modules.required.iter())
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
    let epoch = u64::try_from(build_plan.epoch).unwrap_or(0);
    let initramfs = cpio::write_initramfs(&entries, epoch).map_err(BuildError::Initramfs)?;
    let vmlinuz_path = kernel_dir.join(&plan.vmlinuz);
    let vmlinuz = fs::read(&vmlinuz_path).map_err(io_err("read", &vmlinuz_path))?;
    Ok(KernelArtifacts {
        version: plan.kernel_version,
        vmlinuz,
        vmlinuz_path: plan.vmlinuz,
        modules: names,
        missing: plan.missing,
        initramfs,
    })
}

/// `usr/lib/modules/<v>/kernel/drivers/x.ko.xz` → `kernel/drivers/x.ko` (relative to
/// `/lib/modules/<v>/`, decompressed).
pub(crate) fn module_path_inside(path: &Path, version: &str) -> String {
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

/// Step `write_disk`: the raw GPT disk (ESP with kernel, initramfs and boot loaders;
/// the customised tree as ext4 root) as the plan's disk settings say.
fn write_disk(
    ctx: &mut BuildContext<'_>,
    build_plan: &BuildPlan,
    staging: &Staging,
    kernel: &KernelArtifacts,
    loaders_dir: &Path,
    extra_esp_files: Vec<(String, Vec<u8>)>,
) -> Result<DiskReport, BuildError> {
    let loaders = crate::loader_files::read_loader_files(loaders_dir)?;
    let grub = if ctx.recipe.disk.convertible {
        let kernel_path = format!("/{}", kernel.vmlinuz_path.to_string_lossy());
        Some(crate::loader_files::read_grub_files(
            loaders_dir,
            &kernel_path,
        )?)
    } else {
        None
    };
    let settings = &build_plan.disk;
    let plan = DiskPlan {
        kernel: kernel.vmlinuz.clone(),
        initramfs: kernel.initramfs.clone(),
        cmdline: settings.cmdline.clone(),
        loaders,
        root: Ext4Config {
            staging_dir: ctx.rootfs_dir(),
            metadata: plan::rootfs::ext4_metadata(staging.tree()),
            size: settings.size,
            seed: build_plan.seed,
            label: settings.label.clone(),
            timestamp: settings.timestamp,
        },
        esp_size_bytes: None,
        extra_esp_files,
        seed: build_plan.seed,
        timestamp: settings.timestamp,
        grub,
    };
    image_writer::write_disk(&plan, &ctx.raw_image()).map_err(|e| {
        if crate::no_space::in_chain(&e) {
            BuildError::DiskNoSpace(e)
        } else {
            BuildError::Disk(e)
        }
    })
}

/// Step `write_sbom`: the SPDX document beside the images; returns the files that go on
/// the ESP so that `jeos audit IMAGE` works from the image alone: the SBOM and the lock.
fn write_sbom(
    ctx: &mut BuildContext<'_>,
    plan: &BuildPlan,
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
        epoch: plan.epoch,
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
}
