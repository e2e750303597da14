//! Step `resolve_packages`: the recipe's packages → an OpenPGP-verified index → the minimal
//! closure → the lock file next to the recipe.
//!
//! ```text
//! recipe [source] ──▶ mirror (recipe > --mirror > host apt sources)
//!                     + security archive (recipe `security-mirror` > host apt sources)
//!   <suite>, <suite>-updates (mirror), <suite>-security (security archive):
//!     InRelease (verified against the keyring) ──▶ Packages per component
//!   union of the three indexes; the highest version of each package wins
//! recipe [packages] + kernel ──▶ solver ──▶ Resolution ──▶ <recipe>.lock
//! ```
//!
//! Security and stable updates are on by default: a JeOS appliance exists to be patched.
//! A recipe opts out per suite with `[source] updates = false` / `security = false`.
//!
//! With a lock file that matches the recipe, nothing is solved and the network is not used:
//! the lock is the closure. `--locked` turns a mismatch into an error, `--update` always
//! solves again from the current index.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use miette::Diagnostic;
use package_resolver::cache::{Cache, CacheError};
use package_resolver::client::{ClientError, Repository};
use package_resolver::lock::{
    Difference, DropSnapshot, LockError, LockFile, LockMismatch, LockRelease, LockSource,
    LockedPackage, RequestSnapshot,
};
use package_resolver::packages::{PackageIndex, PackagesError};
use package_resolver::release::{Keyring, ReleaseError};
use package_resolver::reporter::ResolverReporter;
use package_resolver::solver::{self, Resolution, SolveError, SolveRequest};
use package_resolver::sources::{AptSources, SourcesError};

use crate::recipe::{Recipe, Source};

/// The Debian archive keyring that `debian-archive-keyring` installs.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The one architecture jeos builds for.
pub const ARCH: &str = "amd64";

/// Relations of the kernel package that jeos replaces with its own work, with the reason
/// shown to the user. A clause naming any of these is not followed.
pub const KERNEL_DROPS: [(&str, &str); 4] = [
    ("initramfs-tools", "jeos builds its own initramfs"),
    ("linux-initramfs-tool", "jeos builds its own initramfs"),
    ("kmod", "jeos loads the initramfs modules itself"),
    ("linux-base", "jeos installs the kernel itself"),
];

/// Packages jeos takes boot loaders from: SYSLINUX for BIOS, systemd-boot for UEFI. They
/// are build tools, locked beside the closure but not installed, and their dependencies
/// are not followed (only files are read from them).
pub const BOOT_TOOLS: [&str; 3] = ["syslinux", "syslinux-common", "systemd-boot-efi"];

/// The UEFI boot loader of a `[disk] convertible` image: Debian's GRUB, whose GRUB-legacy
/// configuration virt-v2v can edit (build tools like [`BOOT_TOOLS`]). `grub-efi-amd64-bin`
/// has the modules (and, up to bookworm, the monolithic `grubx64.efi`).
pub const CONVERTIBLE_TOOLS: [&str; 1] = ["grub-efi-amd64-bin"];

/// Locked for a `[disk] convertible` image when the suite has it: from trixie on, the
/// monolithic `grubx64.efi` is in `grub-efi-amd64-unsigned`.
pub const CONVERTIBLE_OPTIONAL_TOOLS: [&str; 1] = ["grub-efi-amd64-unsigned"];

/// Installed in a `[disk] convertible` image: `dash` is `/bin/sh` (libguestfs reads a
/// binary such as `/bin/sh` to learn the architecture; dash is the smallest `/bin/sh`
/// Debian has that ships the `/bin/sh` link itself, busybox does not) and `dpkg`, which
/// virt-v2v runs inside the guest to list the kernel package's files.
pub const CONVERTIBLE_PACKAGES: [&str; 2] = ["dash", "dpkg"];

/// The build tools a recipe needs: [`BOOT_TOOLS`], plus [`CONVERTIBLE_TOOLS`] for a
/// `[disk] convertible` image.
#[must_use]
pub fn boot_tools(recipe: &Recipe) -> Vec<&'static str> {
    let mut tools = BOOT_TOOLS.to_vec();
    if recipe.disk.convertible {
        tools.extend(CONVERTIBLE_TOOLS);
    }
    tools
}

/// How an existing lock file is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Use the lock when it matches the recipe, solve again (and rewrite it) when not.
    Use,
    /// Use the lock; a missing or mismatching lock is an error (`--locked`).
    Locked,
    /// Always solve again from the current index and rewrite the lock (`--update`).
    Update,
}

/// Inputs of [`resolve_packages`] that come from the command line and the host.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// `--mirror`: overrides the recipe and the host's apt sources.
    pub mirror_override: Option<String>,
    /// Cache directory (`--cache-dir`, else `$XDG_CACHE_HOME/jeos`).
    pub cache_dir: PathBuf,
    /// `--offline`: only the cache.
    pub offline: bool,
    /// `--allow-downgrade`: accept a release older than the newest one cached.
    pub allow_downgrade: bool,
    /// Lock handling.
    pub lock_mode: LockMode,
    /// Root of the host whose apt configuration names the mirror (`/`).
    pub apt_root: PathBuf,
}

/// Where the mirror came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorOrigin {
    /// Base URL of the archive.
    pub url: String,
    /// `recipe`, `--mirror`, or `file:line` of the host's apt sources.
    pub origin: String,
}

/// What happened to the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockStatus {
    /// The existing lock matched the recipe and was used as is.
    Used,
    /// There was no lock; it was written.
    Created,
    /// The lock was rewritten (recipe changed, or `--update`).
    Updated,
}

/// The archive a suite is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// The Debian archive (`<suite>`, `<suite>-updates`).
    Main,
    /// The security archive (`<suite>-security`).
    Security,
}

impl Archive {
    /// `main` or `security`, as in the lock file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Security => "security",
        }
    }
}

/// The suites whose union is the index, in order: `<suite>`, then `-updates` and
/// `-security` unless the recipe opts out.
#[must_use]
pub fn index_suites(source: &Source) -> Vec<(String, Archive)> {
    let suite = &source.suite;
    let mut out = vec![(suite.clone(), Archive::Main)];
    if source.updates {
        out.push((format!("{suite}-updates"), Archive::Main));
    }
    if source.security {
        out.push((format!("{suite}-security"), Archive::Security));
    }
    out
}

/// The names of [`index_suites`].
#[must_use]
pub fn index_suite_names(source: &Source) -> Vec<String> {
    index_suites(source).into_iter().map(|(s, _)| s).collect()
}

/// The repositories of a recipe: the Debian archive and (unless opted out) the security
/// archive, with one keyring and one cache.
pub struct Repositories {
    /// The Debian archive.
    pub main: Repository,
    /// Where it came from.
    pub mirror: MirrorOrigin,
    /// The security archive, when the recipe includes `-security`.
    pub security: Option<(Repository, MirrorOrigin)>,
}

impl Repositories {
    /// The repository serving `archive`.
    #[must_use]
    pub fn get(&self, archive: Archive) -> &Repository {
        match (archive, &self.security) {
            (Archive::Security, Some((repo, _))) => repo,
            _ => &self.main,
        }
    }
}

/// One suite's verified release, as used for the index.
#[derive(Debug, Clone)]
pub struct SuiteRelease {
    /// Suite name.
    pub suite: String,
    /// Archive.
    pub archive: Archive,
    /// The verified InRelease.
    pub release: package_resolver::release::VerifiedRelease,
}

/// Facts about the index a fresh resolution used.
#[derive(Debug, Clone)]
pub struct IndexFacts {
    /// Mirror used.
    pub mirror: MirrorOrigin,
    /// Security archive used (absent with `security = false`).
    pub security_mirror: Option<MirrorOrigin>,
    /// Suites of the index, in order.
    pub suites: Vec<String>,
    /// Fingerprint of the key that made the first good signature.
    pub signed_by: String,
    /// Packages in the index.
    pub packages: usize,
    /// Time to fetch, verify and parse the index.
    pub elapsed: Duration,
}

/// Result of [`resolve_packages`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The closure, as locked.
    pub lock: LockFile,
    /// Where the lock lives.
    pub lock_path: PathBuf,
    /// What happened to it.
    pub lock_status: LockStatus,
    /// The fresh resolution (absent when the lock was used as is).
    pub resolution: Option<Resolution>,
    /// Facts about the index (absent when the lock was used as is).
    pub index: Option<IndexFacts>,
}

/// Why resolving failed.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ResolveError {
    /// The host's apt configuration could not be read or names no Debian mirror.
    #[error("cannot find a Debian mirror for `{suite}`")]
    #[diagnostic(help(
        "set `mirror = \"http://…/debian\"` in the recipe's `[source]` table, or pass `--mirror URL`"
    ))]
    NoMirror {
        /// Suite.
        suite: String,
        /// Cause.
        #[source]
        source: SourcesError,
    },
    /// The keyring could not be loaded.
    #[error("cannot load the keyring `{}`", .path.display())]
    #[diagnostic(help(
        "install Debian's `debian-archive-keyring` package, or set `keyring` in the recipe's `[source]` table"
    ))]
    Keyring {
        /// Keyring path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: ReleaseError,
    },
    /// The cache could not be opened.
    #[error("cannot open the cache `{}`", .path.display())]
    Cache {
        /// Cache directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: CacheError,
    },
    /// The release or an index could not be fetched or verified.
    #[error("cannot fetch the `{suite}` index from `{mirror}`")]
    Fetch {
        /// Suite.
        suite: String,
        /// Mirror URL.
        mirror: String,
        /// Cause.
        #[source]
        source: Box<ClientError>,
    },
    /// The release does not carry a requested component.
    #[error("the `{suite}` release has no component `{component}`")]
    #[diagnostic(help("components of this release: {available}"))]
    NoComponent {
        /// Suite.
        suite: String,
        /// Component asked for.
        component: String,
        /// What the release lists.
        available: String,
    },
    /// The index does not parse.
    #[error("the `{suite}` index does not parse")]
    Index {
        /// Suite.
        suite: String,
        /// Cause.
        #[source]
        source: PackagesError,
    },
    /// A requested package does not exist.
    #[error("unknown package `{name}` in `{suite}`")]
    #[diagnostic(help("{}", suggestion_text(suggestions)))]
    UnknownPackage {
        /// Name.
        name: String,
        /// Suite.
        suite: String,
        /// Close names.
        suggestions: Vec<String>,
    },
    /// The solver found no closure.
    #[error("cannot resolve the packages of `{recipe}`")]
    #[diagnostic(help(
        "`prefer` an alternative, `exclude` a dependency you know is unneeded, or check the package names"
    ))]
    Solve {
        /// Recipe name.
        recipe: String,
        /// Cause.
        #[source]
        source: SolveError,
    },
    /// `--locked` without a lock file.
    #[error("`--locked` needs a lock file, but `{}` does not exist", .path.display())]
    #[diagnostic(help("run `jeos resolve` first to create it"))]
    LockMissing {
        /// Expected lock path.
        path: PathBuf,
    },
    /// `--locked` and the lock disagrees with the recipe.
    #[error("`{}` is out of date", .path.display())]
    #[diagnostic(help("run `jeos resolve --update` to refresh it, or build without `--locked`"))]
    LockOutOfDate {
        /// Lock path.
        path: PathBuf,
        /// What differs.
        #[source]
        source: LockMismatch,
    },
    /// The lock file does not parse.
    #[error("cannot use the lock file `{}`", .path.display())]
    #[diagnostic(help("delete it and run `jeos resolve` to write a fresh one"))]
    LockInvalid {
        /// Lock path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: LockError,
    },
    /// Reading or writing the lock file failed.
    #[error("cannot {action} `{}`", .path.display())]
    LockIo {
        /// `read` or `write`.
        action: &'static str,
        /// Lock path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn suggestion_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        "check the name with `apt-cache search` or on the Debian package site".to_owned()
    } else {
        let names: Vec<String> = suggestions.iter().map(|s| format!("`{s}`")).collect();
        format!("did you mean {}?", names.join(", "))
    }
}

/// The lock file of a recipe: `nginx.toml` → `nginx.lock`, in the same directory.
pub fn lock_path_for(recipe_path: &Path) -> PathBuf {
    recipe_path.with_extension("lock")
}

/// Everything in the recipe that decides the closure, as recorded in the lock.
pub fn request_snapshot(recipe: &Recipe) -> RequestSnapshot {
    RequestSnapshot {
        install: install_requests(recipe),
        prefer: recipe.packages.prefer.clone(),
        exclude: recipe.packages.exclude.clone(),
        kernel: Some(recipe.kernel.package.clone()),
        drop: KERNEL_DROPS
            .iter()
            .map(|(name, reason)| DropSnapshot {
                name: (*name).to_owned(),
                reason: (*reason).to_owned(),
            })
            .collect(),
    }
}

/// `[packages].install` as solver requests (`nginx`, `nginx (>= 1.26)`).
fn install_requests(recipe: &Recipe) -> Vec<String> {
    recipe
        .packages
        .install
        .iter()
        .map(|spec| match &spec.constraint {
            Some((op, version)) => format!("{} ({} {version})", spec.name, op.as_str()),
            None => spec.name.clone(),
        })
        .chain(
            (CONVERTIBLE_PACKAGES.iter())
                .filter(|_| recipe.disk.convertible)
                .map(|name| (*name).to_owned()),
        )
        .collect()
}

/// The solver request: the recipe's packages plus the kernel, minus the kernel's
/// initramfs tooling.
pub fn solve_request(recipe: &Recipe) -> SolveRequest {
    let mut install = install_requests(recipe);
    install.push(recipe.kernel.package.clone());
    SolveRequest {
        install,
        prefer: recipe.packages.prefer.clone(),
        exclude: recipe.packages.exclude.clone(),
        drop_with_reason: KERNEL_DROPS
            .iter()
            .map(|(n, r)| ((*n).to_owned(), (*r).to_owned()))
            .collect(),
        arch: ARCH.to_owned(),
    }
}

/// Chooses the mirror: `--mirror`, else the recipe's `mirror`, else the host's apt sources.
pub fn choose_mirror(
    source: &Source,
    mirror_override: Option<&str>,
    apt_root: &Path,
) -> Result<MirrorOrigin, ResolveError> {
    if let Some(url) = mirror_override {
        return Ok(MirrorOrigin {
            url: url.trim_end_matches('/').to_owned(),
            origin: "--mirror".to_owned(),
        });
    }
    if let Some(url) = &source.mirror {
        return Ok(MirrorOrigin {
            url: url.trim_end_matches('/').to_owned(),
            origin: "recipe".to_owned(),
        });
    }
    let suite = &source.suite;
    let no_mirror = |source| ResolveError::NoMirror {
        suite: suite.clone(),
        source,
    };
    let sources = AptSources::load(apt_root).map_err(no_mirror)?;
    let choice = sources.mirror_for_suite(suite).map_err(no_mirror)?;
    Ok(MirrorOrigin {
        url: choice.uri,
        origin: format!("{}:{}", choice.file.display(), choice.line),
    })
}

/// Chooses the security archive: the recipe's `security-mirror`, else the host's apt
/// sources (an entry for the Debian security archive).
pub fn choose_security_mirror(
    source: &Source,
    apt_root: &Path,
) -> Result<MirrorOrigin, ResolveError> {
    if let Some(url) = &source.security_mirror {
        return Ok(MirrorOrigin {
            url: url.trim_end_matches('/').to_owned(),
            origin: "recipe".to_owned(),
        });
    }
    let suite = format!("{}-security", source.suite);
    let no_mirror = |source| ResolveError::NoMirror {
        suite: suite.clone(),
        source,
    };
    let sources = AptSources::load(apt_root).map_err(no_mirror)?;
    let choice = sources
        .security_mirror_for_suite(&source.suite)
        .map_err(no_mirror)?;
    Ok(MirrorOrigin {
        url: choice.uri,
        origin: format!("{}:{}", choice.file.display(), choice.line),
    })
}

/// Opens the cache at `dir`.
pub fn open_cache(dir: &Path) -> Result<Cache, ResolveError> {
    Cache::open(dir).map_err(|source| ResolveError::Cache {
        path: dir.to_owned(),
        source,
    })
}

/// Opens the verified repository the recipe names.
pub fn open_repository(
    source: &Source,
    options: &ResolveOptions,
    reporter: Arc<dyn ResolverReporter>,
) -> Result<(Repository, MirrorOrigin), ResolveError> {
    let mirror = choose_mirror(
        source,
        options.mirror_override.as_deref(),
        &options.apt_root,
    )?;
    let keyring_path = source
        .keyring
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KEYRING));
    let keyring = Keyring::from_file(&keyring_path).map_err(|source| ResolveError::Keyring {
        path: keyring_path.clone(),
        source,
    })?;
    let cache = open_cache(&options.cache_dir)?;
    let repo = Repository::new(&mirror.url, keyring, reporter)
        .with_cache(cache)
        .offline(options.offline)
        .allow_downgrade(options.allow_downgrade);
    Ok((repo, mirror))
}

/// Opens the Debian archive and, unless the recipe opts out, the security archive.
pub fn open_repositories(
    source: &Source,
    options: &ResolveOptions,
    reporter: Arc<dyn ResolverReporter>,
) -> Result<Repositories, ResolveError> {
    let (main, mirror) = open_repository(source, options, Arc::clone(&reporter))?;
    let security = if source.security {
        let origin = choose_security_mirror(source, &options.apt_root)?;
        let keyring_path = source
            .keyring
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_KEYRING));
        let keyring =
            Keyring::from_file(&keyring_path).map_err(|source| ResolveError::Keyring {
                path: keyring_path.clone(),
                source,
            })?;
        let repo = Repository::new(&origin.url, keyring, reporter)
            .with_cache(open_cache(&options.cache_dir)?)
            .offline(options.offline)
            .allow_downgrade(options.allow_downgrade);
        Some((repo, origin))
    } else {
        None
    };
    Ok(Repositories {
        main,
        mirror,
        security,
    })
}

/// Step `resolve_packages`.
pub fn resolve_packages(
    recipe: &Recipe,
    recipe_path: &Path,
    options: &ResolveOptions,
    reporter: Arc<dyn ResolverReporter>,
) -> Result<Resolved, ResolveError> {
    let lock_path = lock_path_for(recipe_path);
    let snapshot = request_snapshot(recipe);
    let existing = read_lock(&lock_path)?;
    if let Some(lock) = &existing {
        let matches = lock
            .check_request(&snapshot)
            .and_then(|()| {
                lock.check_source(
                    &recipe.source.suite,
                    &recipe.source.components,
                    ARCH,
                    &index_suite_names(&recipe.source),
                )
            })
            .and_then(|()| check_tools(lock, &boot_tools(recipe)));
        match (matches, options.lock_mode) {
            (Ok(()), LockMode::Use | LockMode::Locked) => {
                return Ok(Resolved {
                    lock: lock.clone(),
                    lock_path,
                    lock_status: LockStatus::Used,
                    resolution: None,
                    index: None,
                });
            }
            (Err(source), LockMode::Locked) => {
                return Err(ResolveError::LockOutOfDate {
                    path: lock_path,
                    source,
                });
            }
            _ => {}
        }
    } else if options.lock_mode == LockMode::Locked {
        return Err(ResolveError::LockMissing { path: lock_path });
    }

    let (resolution, lock, facts) = solve_fresh(recipe, options, reporter, snapshot)?;
    write_lock(&lock_path, &lock)?;
    Ok(Resolved {
        lock,
        lock_path,
        lock_status: if existing.is_some() {
            LockStatus::Updated
        } else {
            LockStatus::Created
        },
        resolution: Some(resolution),
        index: Some(facts),
    })
}

/// Fetches, verifies and parses the index: every suite of [`index_suites`] and every
/// component of the recipe. The `Packages` texts are in suite order, so
/// [`package_resolver::packages::Package::source_index`] `/ components` is the suite.
pub fn load_index(
    source: &Source,
    repos: &Repositories,
    now: SystemTime,
) -> Result<(PackageIndex, Vec<SuiteRelease>, Vec<String>), ResolveError> {
    // One thread per suite: a fresh resolve is mostly the base suite's decompress and
    // parse, and the other suites' round trips and parses overlap it. Results (and the
    // first error) keep the suites' order.
    let suites = index_suites(source);
    let loaded: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = suites
            .into_iter()
            .map(|(suite, archive)| {
                scope.spawn(move || load_suite(source, repos, suite, archive, now))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut parts = Vec::new();
    let mut text_suites = Vec::new();
    let mut releases = Vec::new();
    for result in loaded {
        let (release, indexes) = result?;
        for index in indexes {
            parts.push(index);
            text_suites.push(release.suite.clone());
        }
        releases.push(release);
    }
    let index = PackageIndex::merge(parts).map_err(|e| ResolveError::Index {
        suite: source.suite.clone(),
        source: e,
    })?;
    Ok((index, releases, text_suites))
}

/// One suite of [`load_index`]: its verified release and the parsed index of each
/// component.
fn load_suite(
    source: &Source,
    repos: &Repositories,
    suite: String,
    archive: Archive,
    now: SystemTime,
) -> Result<(SuiteRelease, Vec<PackageIndex>), ResolveError> {
    let repo = repos.get(archive);
    let fetch_err = |source| ResolveError::Fetch {
        suite: suite.clone(),
        mirror: repo.mirror().to_owned(),
        source: Box::new(source),
    };
    let release = repo.fetch_release(&suite, now).map_err(fetch_err)?;
    let mut parts = Vec::new();
    for component in &source.components {
        // The security archive lists `updates/main` but serves `main/binary-*/` (as
        // apt, accept the historical prefix).
        let listed =
            |c: &String| c == component || c.strip_prefix("updates/") == Some(component.as_str());
        if !release.release.components.is_empty() && !release.release.components.iter().any(listed)
        {
            return Err(ResolveError::NoComponent {
                suite: suite.clone(),
                component: component.clone(),
                available: release.release.components.join(", "),
            });
        }
        // The parsed form comes from the parsed-index cache when it holds the
        // SHA-256 this verified release lists: no 57 MB of text to parse again.
        parts.push(
            repo.fetch_index(&release, component, ARCH)
                .map_err(fetch_err)?,
        );
    }
    Ok((
        SuiteRelease {
            suite,
            archive,
            release,
        },
        parts,
    ))
}

/// `[source]` of the lock: the base suite's codename and InRelease hash, the newest `Date`
/// of all suites (it becomes the default `SOURCE_DATE_EPOCH`), and every suite's release.
fn lock_source(recipe: &Recipe, releases: &[SuiteRelease]) -> LockSource {
    let base = &releases[0].release;
    let newest = releases
        .iter()
        .max_by_key(|r| r.release.release.date.unix_seconds)
        .map_or_else(
            || base.release.date.text.clone(),
            |r| r.release.release.date.text.clone(),
        );
    LockSource {
        suite: recipe.source.suite.clone(),
        codename: base
            .release
            .codename
            .clone()
            .unwrap_or_else(|| recipe.source.suite.clone()),
        components: recipe.source.components.clone(),
        arch: ARCH.to_owned(),
        date: newest,
        sha256: base.inrelease_sha256.clone(),
        releases: releases
            .iter()
            .map(|r| LockRelease {
                suite: r.suite.clone(),
                archive: r.archive.as_str().to_owned(),
                date: r.release.release.date.text.clone(),
                sha256: r.release.inrelease_sha256.clone(),
            })
            .collect(),
    }
}

fn solve_fresh(
    recipe: &Recipe,
    options: &ResolveOptions,
    reporter: Arc<dyn ResolverReporter>,
    snapshot: RequestSnapshot,
) -> Result<(Resolution, LockFile, IndexFacts), ResolveError> {
    let start = Instant::now();
    let repos = open_repositories(&recipe.source, options, reporter)?;
    let (index, releases, text_suites) = load_index(&recipe.source, &repos, SystemTime::now())?;
    let elapsed = start.elapsed();
    let resolution =
        solver::solve(&index, &solve_request(recipe)).map_err(|source| match source {
            SolveError::UnknownPackage { name, suggestions } => ResolveError::UnknownPackage {
                name,
                suite: recipe.source.suite.clone(),
                suggestions,
            },
            source => ResolveError::Solve {
                recipe: recipe.appliance.name.to_string(),
                source,
            },
        })?;
    let source = lock_source(recipe, &releases);
    let mut lock = LockFile::from_resolution(&resolution, source, snapshot, &text_suites);
    let optional = (CONVERTIBLE_OPTIONAL_TOOLS.iter())
        .filter(|name| recipe.disk.convertible && index.candidate(name).is_some());
    for name in boot_tools(recipe).into_iter().chain(optional.copied()) {
        let package = index
            .candidate(name)
            .ok_or_else(|| ResolveError::UnknownPackage {
                name: name.to_owned(),
                suite: recipe.source.suite.clone(),
                suggestions: Vec::new(),
            })?;
        lock.tools.push(LockedPackage {
            name: package.name().to_owned(),
            version: package.version().clone(),
            arch: package.architecture().to_owned(),
            suite: text_suites.get(package.source_index()).cloned(),
            filename: package.filename().to_owned(),
            size: package.size_bytes(),
            sha256: package.sha256().to_owned(),
            installed_size: package.installed_size_kib(),
            parent: None,
            relation: Some("boot loader (build tool, not installed)".to_owned()),
        });
    }
    let facts = IndexFacts {
        mirror: repos.mirror.clone(),
        security_mirror: repos.security.as_ref().map(|(_, m)| m.clone()),
        suites: releases.iter().map(|r| r.suite.clone()).collect(),
        signed_by: releases[0].release.signed_by.clone(),
        packages: index.len(),
        elapsed,
    };
    Ok((resolution, lock, facts))
}

/// The archive a locked package is fetched from: the security archive for packages from
/// `<suite>-security`, the Debian archive otherwise.
#[must_use]
pub fn archive_of(lock: &LockFile, package: &LockedPackage) -> Archive {
    let security = lock
        .source
        .releases
        .iter()
        .any(|r| r.archive == "security" && package.suite.as_deref() == Some(r.suite.as_str()));
    if security {
        Archive::Security
    } else {
        Archive::Main
    }
}

/// A lock made without the boot-loader tools (or with other ones) must be refreshed.
fn check_tools(lock: &LockFile, tools: &[&str]) -> Result<(), LockMismatch> {
    let locked: Vec<&str> = lock.tools.iter().map(|t| t.name.as_str()).collect();
    let mut differences: Vec<Difference> = tools
        .iter()
        .filter(|name| !locked.contains(name))
        .map(|name| Difference::Added {
            field: "tool",
            value: (*name).to_owned(),
        })
        .collect();
    differences.extend(
        (locked.iter())
            .filter(|name| !tools.contains(name))
            .filter(|name| {
                !(tools.contains(&CONVERTIBLE_TOOLS[0])
                    && CONVERTIBLE_OPTIONAL_TOOLS.contains(name))
            })
            .map(|name| Difference::Removed {
                field: "tool",
                value: (*name).to_owned(),
            }),
    );
    if differences.is_empty() {
        Ok(())
    } else {
        Err(LockMismatch { differences })
    }
}

fn read_lock(path: &Path) -> Result<Option<LockFile>, ResolveError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            LockFile::parse(&text, path)
                .map(Some)
                .map_err(|source| ResolveError::LockInvalid {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ResolveError::LockIo {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes the lock atomically: a temporary file beside it, then a rename.
fn write_lock(path: &Path, lock: &LockFile) -> Result<(), ResolveError> {
    let io_err = |source| ResolveError::LockIo {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
    tmp.write_all(lock.to_toml_string().as_bytes())
        .map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// The kernel packages of a lock: the recipe's kernel package and what it pulled in whose
/// name starts with `linux-image-` (the versioned image). They go to the boot partition and
/// the initramfs, not into the root filesystem.
pub fn is_kernel_package(lock: &LockFile, package: &LockedPackage) -> bool {
    let kernel = lock.request.kernel.as_deref().unwrap_or("");
    package.name == kernel || package.name.starts_with("linux-image-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_is_beside_the_recipe() {
        assert_eq!(
            lock_path_for(Path::new("recipes/nginx.toml")),
            PathBuf::from("recipes/nginx.lock")
        );
        assert_eq!(lock_path_for(Path::new("app")), PathBuf::from("app.lock"));
    }

    #[test]
    fn suggestions_are_listed_or_a_hint_is_given() {
        assert_eq!(
            suggestion_text(&["nginx".into(), "nginx-core".into()]),
            "did you mean `nginx`, `nginx-core`?"
        );
        assert!(suggestion_text(&[]).contains("apt-cache search"));
    }

    fn recipe(extra: &str) -> Recipe {
        let text = format!(
            "[appliance]\nname = \"web\"\nversion = \"1.0.0\"\n\n[source]\nsuite = \"trixie\"\n{extra}\n[packages]\ninstall = [\"nginx\"]\n"
        );
        crate::recipe::parse_str("web.toml", &text, None).expect("valid recipe")
    }

    #[test]
    fn mirror_precedence_is_flag_then_recipe_then_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let apt = dir.path().join("etc/apt/sources.list.d");
        fs::create_dir_all(&apt).expect("mkdir");
        fs::write(
            apt.join("debian.sources"),
            "Types: deb\nURIs: http://host.invalid/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .expect("write");
        let plain = recipe("");
        let with_mirror = recipe("mirror = \"http://recipe.invalid/debian/\"\n");

        let host = choose_mirror(&plain.source, None, dir.path()).expect("host mirror");
        assert_eq!(host.url, "http://host.invalid/debian");
        assert!(host.origin.ends_with("debian.sources:1"), "{}", host.origin);

        let from_recipe = choose_mirror(&with_mirror.source, None, dir.path()).expect("recipe");
        assert_eq!(from_recipe.url, "http://recipe.invalid/debian");
        assert_eq!(from_recipe.origin, "recipe");

        let flag = choose_mirror(
            &with_mirror.source,
            Some("http://flag.invalid/debian"),
            dir.path(),
        )
        .expect("flag");
        assert_eq!(flag.url, "http://flag.invalid/debian");
        assert_eq!(flag.origin, "--mirror");
    }

    #[test]
    fn no_mirror_anywhere_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = choose_mirror(&recipe("").source, None, dir.path()).expect_err("no sources");
        assert!(matches!(err, ResolveError::NoMirror { .. }), "{err:?}");
    }

    #[test]
    fn the_kernel_is_a_root_and_its_initramfs_tooling_is_dropped() {
        let request = solve_request(&recipe(""));
        assert_eq!(request.install.first().map(String::as_str), Some("nginx"));
        assert!(request.install.len() == 2, "{:?}", request.install);
        assert!(
            request
                .drop_with_reason
                .iter()
                .any(|(name, _)| name == "linux-initramfs-tool")
        );
        let snapshot = request_snapshot(&recipe(""));
        assert_eq!(
            snapshot.kernel.as_deref(),
            Some(request.install[1].as_str())
        );
    }

    #[test]
    fn locked_mode_without_a_lock_fails_before_any_network_access() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recipe_path = dir.path().join("web.toml");
        let options = ResolveOptions {
            mirror_override: Some("http://unreachable.invalid/debian".into()),
            cache_dir: dir.path().join("cache"),
            offline: false,
            allow_downgrade: false,
            lock_mode: LockMode::Locked,
            apt_root: dir.path().to_owned(),
        };
        let err = resolve_packages(
            &recipe(""),
            &recipe_path,
            &options,
            Arc::new(package_resolver::reporter::NoReporter),
        )
        .expect_err("no lock");
        assert!(matches!(err, ResolveError::LockMissing { .. }), "{err:?}");
    }
}
