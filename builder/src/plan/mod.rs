//! Recipe + lock → [`BuildPlan`]: every typed configuration the build steps need, computed
//! before any IO. Pure (no file system, no network), so it is what the snapshot tests pin:
//! a change to what a recipe means shows up as a plan diff, not as a different image.
//!
//! ```text
//! Recipe ─┬─ rootfs::rootfs_config ─▶ RootfsConfig   (users, groups, /etc, files, pruning)
//!         ├─ init::init_config ──────▶ InitConfig     (services, checks, network, tasks)
//!         ├─ disk::module_plan ──────▶ ModulePlan     (initramfs drivers)
//!         ├─ disk::disk_settings ────▶ DiskSettings   (cmdline, ext4 label and size)
//!         └─ publish::ovf_inputs ────▶ OvfInputs      (OVF descriptor context)
//! LockFile ──▶ PackageSets (root filesystem / kernel / boot loaders), epoch, seed
//! ```
//!
//! What only the unpacked packages can tell (their maintainer scripts, `tmpfiles.d`
//! runtime directories, the kernel's modules) is added by the step that learns it.

pub mod disk;
pub mod init;
pub mod rootfs;

use guest_init::config::InitConfig;
use image_writer::OvfInputs;
use image_writer::layout::Seed;
use package_resolver::lock::{LockFile, LockedPackage};

use crate::recipe::{DiskFormat, Recipe};
use crate::rootfs::RootfsConfig;

pub use disk::{DiskSettings, ModulePlan};

/// The frozen configuration of one build.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// `<name>-<version>`: the output directory and the stem of every artifact.
    pub artifact_name: String,
    /// `SOURCE_DATE_EPOCH`: the option, else the lock's InRelease date; never negative.
    pub epoch: i64,
    /// Every identifier of the disk derives from it: the recipe's bytes and the lock.
    pub seed: Seed,
    /// The lock's packages by where they go.
    pub packages: PackageSets,
    /// Root filesystem customisation (package scripts and dpkg data filled in later).
    pub rootfs: RootfsConfig,
    /// guest-init's configuration (runtime directories filled in later).
    pub init: InitConfig,
    /// The initramfs module set.
    pub modules: ModulePlan,
    /// Boot and root file system settings.
    pub disk: DiskSettings,
    /// `[disk] formats`.
    pub formats: Vec<DiskFormat>,
    /// The OVF descriptor's inputs (the EULA text is read when the package is written).
    pub ovf: OvfInputs,
}

/// Package names of the lock, in lock order, by destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageSets {
    /// Unpacked into the root filesystem.
    pub rootfs: Vec<String>,
    /// The kernel image (unpacked into the cache; vmlinuz and modules are taken from it).
    pub kernel: Vec<String>,
    /// Build tools (boot loaders), unpacked into the cache.
    pub tools: Vec<String>,
}

impl BuildPlan {
    /// The plan of `recipe` (whose file holds `recipe_bytes`) with the packages of `lock`.
    pub fn new(
        recipe: &Recipe,
        recipe_bytes: &[u8],
        lock: &LockFile,
        source_date_epoch: Option<i64>,
    ) -> Self {
        let epoch = source_date_epoch
            .or_else(|| package_resolver::release::parse_rfc2822(&lock.source.date))
            .unwrap_or(0)
            .max(0);
        let mut seed_input = recipe_bytes.to_vec();
        seed_input.push(0);
        seed_input.extend_from_slice(lock.to_toml_string().as_bytes());
        let seed = Seed::from_bytes(&seed_input);
        let names = |packages: &mut dyn Iterator<Item = &LockedPackage>| {
            packages.map(|p| p.name.clone()).collect::<Vec<_>>()
        };
        let is_kernel = |p: &&LockedPackage| crate::resolve::is_kernel_package(lock, p);
        Self {
            artifact_name: format!("{}-{}", recipe.appliance.name, recipe.appliance.version),
            epoch,
            seed,
            packages: PackageSets {
                rootfs: names(&mut lock.packages.iter().filter(|p| !is_kernel(p))),
                kernel: names(&mut lock.packages.iter().filter(is_kernel)),
                tools: names(&mut lock.tools.iter()),
            },
            rootfs: rootfs::rootfs_config(recipe),
            init: init::init_config(recipe, &[]),
            modules: disk::module_plan(recipe),
            disk: disk::disk_settings(recipe, &seed, epoch),
            formats: recipe.disk.formats.clone(),
            ovf: crate::publish::ovf_inputs(recipe, None).0,
        }
    }

    /// Whether any format besides the raw disk is asked for (step `publish_formats`).
    pub fn publishes(&self) -> bool {
        self.formats.iter().any(|f| *f != DiskFormat::Raw)
    }
}

/// The packages of `lock` named in `names`, in lock order (packages, then tools).
pub fn locked<'a>(lock: &'a LockFile, names: &[String]) -> Vec<&'a LockedPackage> {
    lock.packages
        .iter()
        .chain(lock.tools.iter())
        .filter(|p| names.contains(&p.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A lock of the shape `jeos resolve` writes: a root package, the kernel and the
    /// boot-loader tools.
    const LOCK: &str = r#"version = 2

[source]
suite = "trixie"
codename = "trixie"
components = ["main"]
arch = "amd64"
date = "Sat, 01 Mar 2025 09:00:00 UTC"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[request]
install = ["base-files"]
kernel = "linux-image-cloud-amd64"

[[package]]
name = "base-files"
version = "13.8"
arch = "amd64"
filename = "pool/main/b/base-files/base-files_13.8_amd64.deb"
size = 70000
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
installed-size = 400

[[package]]
name = "linux-image-6.12.12-cloud-amd64"
version = "6.12.12-1"
arch = "amd64"
filename = "pool/main/l/linux-signed-amd64/linux-image-6.12.12-cloud-amd64_6.12.12-1_amd64.deb"
size = 30000000
sha256 = "2222222222222222222222222222222222222222222222222222222222222222"
installed-size = 90000

[[tool]]
name = "syslinux"
version = "3:6.04~git20190206.bf6db5b4+dfsg1-3.1"
arch = "amd64"
filename = "pool/main/s/syslinux/syslinux_6.04~git20190206.bf6db5b4+dfsg1-3.1_amd64.deb"
size = 50000
sha256 = "3333333333333333333333333333333333333333333333333333333333333333"
installed-size = 200
"#;

    fn plan_of(file: &str) -> BuildPlan {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes");
        let text = std::fs::read_to_string(dir.join(file)).expect("example recipe");
        let recipe = crate::recipe::parse_str(file, &text, None).expect("valid example recipe");
        let lock = LockFile::parse(LOCK, Path::new("example.lock")).expect("valid lock");
        BuildPlan::new(&recipe, text.as_bytes(), &lock, None)
    }

    #[test]
    fn every_example_recipe_has_a_plan_snapshot() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes");
        let mut recipes: Vec<String> = std::fs::read_dir(&dir)
            .expect("recipes/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".toml"))
            .collect();
        recipes.sort();
        for file in recipes {
            let plan = plan_of(&file);
            // Same inputs, same plan.
            assert_eq!(format!("{plan:#?}"), format!("{:#?}", plan_of(&file)));
            insta::assert_debug_snapshot!(file.trim_end_matches(".toml").to_owned(), plan);
        }
    }

    #[test]
    fn the_lock_date_is_the_default_epoch_and_the_option_wins() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/nginx.toml"),
        )
        .expect("example recipe");
        let recipe = crate::recipe::parse_str("nginx.toml", &text, None).expect("valid");
        let lock = LockFile::parse(LOCK, Path::new("example.lock")).expect("valid lock");
        let plan = BuildPlan::new(&recipe, text.as_bytes(), &lock, None);
        assert_eq!(plan.epoch, 1_740_819_600);
        assert_eq!(plan.disk.timestamp, 1_740_819_600);
        let plan = BuildPlan::new(&recipe, text.as_bytes(), &lock, Some(-5));
        assert_eq!(plan.epoch, 0, "a negative epoch counts as 0");
        let other = BuildPlan::new(&recipe, b"other bytes", &lock, Some(7));
        assert_ne!(plan.seed, other.seed, "the seed follows the recipe's bytes");
        assert_eq!(plan.packages.kernel, ["linux-image-6.12.12-cloud-amd64"]);
        assert_eq!(plan.packages.rootfs, ["base-files"]);
        assert_eq!(plan.packages.tools, ["syslinux"]);
        let kernel = locked(&lock, &plan.packages.kernel);
        assert_eq!(kernel.len(), 1);
        assert_eq!(kernel[0].size, 30_000_000);
    }
}
