//! `jeos audit RECIPE|LOCK|IMAGE`: which packages of an appliance have newer versions in
//! the suites now, and whether any of them is a security update.
//!
//! ```text
//! RECIPE ──▶ <recipe>.lock ─┐
//! LOCK ─────────────────────┼──▶ installed (name, version) ──┐
//! IMAGE ──▶ ESP /jeos/appliance.lock ┘                        ├──▶ AuditReport
//! <suite> + -updates + -security now (verified) ──▶ index ───┘
//! ```
//!
//! The image carries its lock on the FAT ESP (read with image-writer's read-only FAT
//! reader through [`image_writer::image::open_image`], so `.raw`, `.qcow2`, `.vmdk` and
//! `.ova` alike), so auditing an image needs neither an ext4 reader nor the build's cache.
//! Without the current index (no network and nothing cached) the contents are still
//! listed and the command exits 3: "not compared", neither current nor pending. The
//! current index always includes `-updates` and `-security`, even for a recipe that opted
//! out of them: the point is to see what is pending. Plan ([`compare`]) is pure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use miette::Diagnostic;
use package_resolver::lock::{LockError, LockFile};
use package_resolver::packages::PackageIndex;
use package_resolver::reporter::ResolverReporter;
use serde::Serialize;

use crate::recipe::Source;
use crate::resolve::{self, ResolveError, ResolveOptions};

/// Where a built image keeps its lock file on the ESP.
pub const ESP_LOCK: &str = "/jeos/appliance.lock";
/// Where a built image keeps its SPDX SBOM on the ESP.
pub const ESP_SBOM: &str = "/jeos/sbom.spdx.json";
/// Largest lock read from an image.
const MAX_ESP_LOCK_BYTES: u64 = 16 * 1024 * 1024;

/// What `jeos audit` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// A recipe: its lock file beside it.
    Recipe(PathBuf),
    /// A lock file.
    Lock(PathBuf),
    /// A raw disk image (or a build output directory holding one).
    Image(PathBuf),
}

impl AuditTarget {
    /// Chooses by what `path` is: `.toml` recipe, `.lock`, else an image (a directory is
    /// searched for its `.raw`).
    #[must_use]
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Self::Recipe(path.to_owned()),
            Some("lock") => Self::Lock(path.to_owned()),
            _ => Self::Image(path.to_owned()),
        }
    }
}

/// Why an audit could not run.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum AuditError {
    /// The lock file could not be read.
    #[error("cannot read `{}`", .path.display())]
    #[diagnostic(help("run `jeos resolve` to write the recipe's lock file"))]
    ReadLock {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The lock file does not parse.
    #[error("invalid lock file `{}`", .path.display())]
    Lock {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: LockError,
    },
    /// The image holds no readable lock.
    #[error("cannot read the package manifest `{ESP_LOCK}` from `{}`", .path.display())]
    #[diagnostic(help(
        "images built by jeos before `jeos audit` existed carry no manifest; rebuild it"
    ))]
    Image {
        /// Image path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Box<image_writer::image::ImageError>,
    },
    /// A directory without an image.
    #[error("`{}` holds no `.raw`, `.qcow2`, `.vmdk` or `.ova` image", .path.display())]
    NoImage {
        /// Directory.
        path: PathBuf,
    },
    /// The current index could not be loaded.
    #[error("cannot load the current index of `{suite}`")]
    #[diagnostic(help(
        "audit needs the suites as they are now: check the network, or fill the cache once and use `--offline`"
    ))]
    Index {
        /// Suite.
        suite: String,
        /// Cause.
        #[source]
        source: Box<ResolveError>,
    },
}

/// One package with a newer version in the suites now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingUpdate {
    /// Package name.
    pub name: String,
    /// Version in the appliance.
    pub installed: String,
    /// Highest version now.
    pub available: String,
    /// Suite that ships it.
    pub suite: String,
    /// Whether that suite is `<suite>-security`.
    pub security: bool,
}

/// The result of an audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// What was audited.
    pub target: String,
    /// Suites of the current index, with their InRelease dates.
    pub suites: Vec<(String, String)>,
    /// Installed packages checked.
    pub packages: usize,
    /// Packages with a newer version, sorted by name.
    pub updates: Vec<PendingUpdate>,
    /// Installed packages the suites no longer carry at all.
    pub gone: Vec<String>,
}

impl AuditReport {
    /// Whether any pending update comes from `-security` (exit status 1).
    #[must_use]
    pub fn security_pending(&self) -> bool {
        self.updates.iter().any(|u| u.security)
    }
}

/// Compares the lock's packages with `index` (pure). `text_suites[i]` names the suite of
/// the index's `i`-th `Packages` text.
#[must_use]
pub fn compare(
    lock: &LockFile,
    index: &PackageIndex,
    text_suites: &[String],
) -> (Vec<PendingUpdate>, Vec<String>) {
    let mut updates = Vec::new();
    let mut gone = Vec::new();
    for package in &lock.packages {
        match index.candidate(&package.name) {
            Some(candidate) if candidate.version() > &package.version => {
                let suite = text_suites
                    .get(candidate.source_index())
                    .cloned()
                    .unwrap_or_default();
                updates.push(PendingUpdate {
                    name: package.name.clone(),
                    installed: package.version.to_string(),
                    available: candidate.version().to_string(),
                    security: suite.ends_with("-security"),
                    suite,
                });
            }
            Some(_) => {}
            None => gone.push(package.name.clone()),
        }
    }
    (updates, gone)
}

/// Reads the lock an audit target stands for.
///
/// # Errors
/// [`AuditError`] when it cannot be read or parsed.
pub fn read_target(target: &AuditTarget) -> Result<(LockFile, PathBuf), AuditError> {
    let parse = |text: &str, path: &Path| {
        LockFile::parse(text, path).map_err(|source| AuditError::Lock {
            path: path.to_owned(),
            source,
        })
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| AuditError::ReadLock {
            path: path.to_owned(),
            source,
        })
    };
    match target {
        AuditTarget::Recipe(recipe) => {
            let path = resolve::lock_path_for(recipe);
            Ok((parse(&read(&path)?, &path)?, path))
        }
        AuditTarget::Lock(path) => Ok((parse(&read(path)?, path)?, path.clone())),
        AuditTarget::Image(path) => {
            let file = find_image(path)?;
            let image_err = |source| AuditError::Image {
                path: file.clone(),
                source: Box::new(source),
            };
            let image = image_writer::image::open_image(&file).map_err(image_err)?;
            let bytes = image
                .esp_file(ESP_LOCK, MAX_ESP_LOCK_BYTES)
                .map_err(image_err)?;
            let shown = PathBuf::from(format!("{}:{ESP_LOCK}", file.display()));
            Ok((parse(&String::from_utf8_lossy(&bytes), &shown)?, file))
        }
    }
}

/// `path` itself, or the image in the build directory `path` (the `.raw` first, then the
/// `.qcow2`, `.vmdk` and `.ova`).
fn find_image(path: &Path) -> Result<PathBuf, AuditError> {
    if !path.is_dir() {
        return Ok(path.to_owned());
    }
    let mut images: Vec<(usize, PathBuf)> = std::fs::read_dir(path)
        .map_err(|source| AuditError::ReadLock {
            path: path.to_owned(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let rank = ["raw", "qcow2", "vmdk", "ova"]
                .iter()
                .position(|ext| p.extension().is_some_and(|e| e == *ext))?;
            Some((rank, p))
        })
        .collect();
    images.sort();
    images
        .into_iter()
        .next()
        .map(|(_, p)| p)
        .ok_or_else(|| AuditError::NoImage {
            path: path.to_owned(),
        })
}

/// The source to audit against: the lock's suite and components, all three suites, and
/// the recipe's mirrors when auditing a recipe.
#[must_use]
pub fn audit_source(lock: &LockFile, recipe_source: Option<&Source>) -> Source {
    Source {
        distribution: "debian".to_owned(),
        suite: lock.source.suite.clone(),
        mirror: recipe_source.and_then(|s| s.mirror.clone()),
        components: lock.source.components.clone(),
        keyring: recipe_source.and_then(|s| s.keyring.clone()),
        security_mirror: recipe_source.and_then(|s| s.security_mirror.clone()),
        updates: true,
        security: true,
    }
}

/// Runs the audit of `lock` against the suites now.
///
/// # Errors
/// [`AuditError::Index`] when the current index cannot be had.
pub fn audit_lock(
    lock: &LockFile,
    target: &Path,
    source: &Source,
    options: &ResolveOptions,
    reporter: Arc<dyn ResolverReporter>,
) -> Result<AuditReport, AuditError> {
    let index_err = |e| AuditError::Index {
        suite: source.suite.clone(),
        source: Box::new(e),
    };
    let repos = resolve::open_repositories(source, options, reporter).map_err(index_err)?;
    let (index, releases, text_suites) =
        resolve::load_index(source, &repos, SystemTime::now()).map_err(index_err)?;
    let (updates, gone) = compare(lock, &index, &text_suites);
    Ok(AuditReport {
        target: target.display().to_string(),
        suites: releases
            .iter()
            .map(|r| (r.suite.clone(), r.release.release.date.text.clone()))
            .collect(),
        packages: lock.packages.len(),
        updates,
        gone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_chosen_by_extension() {
        assert_eq!(
            AuditTarget::from_path(Path::new("a/nginx.toml")),
            AuditTarget::Recipe("a/nginx.toml".into())
        );
        assert_eq!(
            AuditTarget::from_path(Path::new("nginx.lock")),
            AuditTarget::Lock("nginx.lock".into())
        );
        assert_eq!(
            AuditTarget::from_path(Path::new("dist/nginx-1.0.0")),
            AuditTarget::Image("dist/nginx-1.0.0".into())
        );
    }

    #[test]
    fn newer_versions_are_listed_and_security_ones_marked() {
        let packages = |name: &str, version: &str| {
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: pool/main/{name}_{version}.deb\nSize: 1\nSHA256: {}\n",
                "ab".repeat(32)
            )
        };
        let texts = [
            format!(
                "{}\n{}",
                packages("nginx", "1.0-1"),
                packages("libc6", "2.0-1")
            ),
            packages("nginx", "1.0-1+deb13u1"),
        ];
        let index = PackageIndex::parse(&texts, "amd64").unwrap();
        let lock_text = format!(
            "version = 2\n[source]\nsuite = \"trixie\"\ncodename = \"trixie\"\ncomponents = [\"main\"]\narch = \"amd64\"\ndate = \"x\"\nsha256 = \"x\"\n[request]\ninstall = [\"nginx\"]\n{}{}{}",
            "[[package]]\nname = \"libc6\"\nversion = \"2.0-1\"\narch = \"amd64\"\nfilename = \"pool/l.deb\"\nsize = 1\nsha256 = \"".to_owned() + &"ab".repeat(32) + "\"\ninstalled-size = 1\n",
            "[[package]]\nname = \"nginx\"\nversion = \"1.0-1\"\narch = \"amd64\"\nfilename = \"pool/n.deb\"\nsize = 1\nsha256 = \"".to_owned() + &"ab".repeat(32) + "\"\ninstalled-size = 1\n",
            "[[package]]\nname = \"oldlib\"\nversion = \"1\"\narch = \"amd64\"\nfilename = \"pool/o.deb\"\nsize = 1\nsha256 = \"".to_owned() + &"ab".repeat(32) + "\"\ninstalled-size = 1\n",
        );
        let lock = LockFile::parse(&lock_text, Path::new("t.lock")).unwrap();
        let (updates, gone) = compare(&lock, &index, &["trixie".into(), "trixie-security".into()]);
        assert_eq!(
            updates,
            [PendingUpdate {
                name: "nginx".into(),
                installed: "1.0-1".into(),
                available: "1.0-1+deb13u1".into(),
                suite: "trixie-security".into(),
                security: true,
            }]
        );
        assert_eq!(gone, ["oldlib"]);
    }
}
