//! Removing what an appliance never reads: documentation, manuals, translations it does not
//! use, time zones other than its own, static libraries and headers.
//!
//! The rules are data ([`PRUNE_RULES`]); what each keeps is decided by [`PruneConfig`].
//! Licence compliance: each package's `/usr/share/doc/<package>/copyright` is kept unless
//! `keep_copyright` is off, as is `/usr/share/common-licenses` (never matched). Directories
//! are removed only when everything below them is; a rule's root directory stays. A file
//! that a kept hard link shares its inode with is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::staging::{Staging, StagingError};
use super::tree::{EntryKind, Tree};

/// What a rule removes, for the report and for switching rules off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PruneCategory {
    /// `/usr/share/doc` (except copyright files) and other documentation trees.
    Docs,
    /// `/usr/share/man`.
    Manuals,
    /// `/usr/share/info`.
    Info,
    /// lintian/linda overrides.
    Lintian,
    /// reportbug hooks in `/usr/share/bug`.
    BugReporting,
    /// Translations for locales other than the configured ones.
    Locales,
    /// Time zones other than the configured one and UTC.
    Zoneinfo,
    /// Python bytecode caches.
    PythonBytecode,
    /// Headers, static libraries and pkg-config files (nothing compiles on an appliance).
    DevelopmentFiles,
    /// Package manager caches.
    Caches,
    /// glibc's loadable iconv converters (`gconv/`, 8 MB). UTF-8, UTF-16, UTF-32, UCS-2,
    /// UCS-4, ASCII and ISO-8859-1 are built into libc and keep working; legacy charsets
    /// (EBCDIC, KOI8, CJK encodings, ...) are gone unless this category is kept.
    Charsets,
}

impl PruneCategory {
    /// Every category.
    pub const ALL: [PruneCategory; 11] = [
        Self::Docs,
        Self::Manuals,
        Self::Info,
        Self::Lintian,
        Self::BugReporting,
        Self::Locales,
        Self::Zoneinfo,
        Self::PythonBytecode,
        Self::DevelopmentFiles,
        Self::Caches,
        Self::Charsets,
    ];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Docs => "docs",
            Self::Manuals => "man",
            Self::Info => "info",
            Self::Lintian => "lintian",
            Self::BugReporting => "bug",
            Self::Locales => "locale",
            Self::Zoneinfo => "zoneinfo",
            Self::PythonBytecode => "pycache",
            Self::DevelopmentFiles => "devel",
            Self::Caches => "cache",
            Self::Charsets => "gconv",
        }
    }
}

/// Which entries below a rule's root it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    /// Everything below the root.
    Everything,
    /// Non-directories whose name ends with the suffix.
    Suffix(&'static str),
    /// Everything inside a directory with this name.
    InsideDirNamed(&'static str),
}

/// One pruning rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneRule {
    /// Category.
    pub category: PruneCategory,
    /// Root directory (tree path).
    pub root: &'static str,
    /// Matcher below the root.
    pub matcher: Matcher,
}

const fn rule(category: PruneCategory, root: &'static str, matcher: Matcher) -> PruneRule {
    PruneRule {
        category,
        root,
        matcher,
    }
}

/// The rules, first match wins.
pub const PRUNE_RULES: &[PruneRule] = &[
    rule(PruneCategory::Docs, "usr/share/doc", Matcher::Everything),
    rule(
        PruneCategory::Docs,
        "usr/share/doc-base",
        Matcher::Everything,
    ),
    rule(
        PruneCategory::Docs,
        "usr/share/gtk-doc",
        Matcher::Everything,
    ),
    rule(PruneCategory::Docs, "usr/share/help", Matcher::Everything),
    rule(PruneCategory::Manuals, "usr/share/man", Matcher::Everything),
    rule(PruneCategory::Info, "usr/share/info", Matcher::Everything),
    rule(
        PruneCategory::Lintian,
        "usr/share/lintian",
        Matcher::Everything,
    ),
    rule(
        PruneCategory::Lintian,
        "usr/share/linda",
        Matcher::Everything,
    ),
    rule(
        PruneCategory::BugReporting,
        "usr/share/bug",
        Matcher::Everything,
    ),
    rule(
        PruneCategory::Locales,
        "usr/share/locale",
        Matcher::Everything,
    ),
    rule(
        PruneCategory::Zoneinfo,
        "usr/share/zoneinfo",
        Matcher::Everything,
    ),
    rule(
        PruneCategory::PythonBytecode,
        "usr",
        Matcher::InsideDirNamed("__pycache__"),
    ),
    rule(
        PruneCategory::PythonBytecode,
        "usr",
        Matcher::Suffix(".pyc"),
    ),
    rule(
        PruneCategory::DevelopmentFiles,
        "usr/include",
        Matcher::Everything,
    ),
    rule(
        PruneCategory::DevelopmentFiles,
        "usr/lib",
        Matcher::Suffix(".a"),
    ),
    rule(
        PruneCategory::DevelopmentFiles,
        "usr/lib",
        Matcher::InsideDirNamed("pkgconfig"),
    ),
    rule(
        PruneCategory::DevelopmentFiles,
        "usr/share/pkgconfig",
        Matcher::Everything,
    ),
    rule(
        PruneCategory::Caches,
        "var/cache/apt",
        Matcher::Suffix(".bin"),
    ),
    rule(
        PruneCategory::Caches,
        "var/cache/debconf",
        Matcher::Suffix("-old"),
    ),
    rule(
        PruneCategory::Charsets,
        "usr/lib/x86_64-linux-gnu/gconv",
        Matcher::Everything,
    ),
];

/// What to prune and what to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneConfig {
    /// Enabled categories.
    pub categories: BTreeSet<PruneCategory>,
    /// Keep `/usr/share/doc/*/copyright` (licence compliance).
    pub keep_copyright: bool,
    /// Locales whose translations stay (e.g. `de_DE.UTF-8` keeps `de_DE.UTF-8`, `de_DE`, `de`).
    pub locales: Vec<String>,
    /// Time zone whose data stays (UTC always stays).
    pub timezone: Option<String>,
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self {
            categories: PruneCategory::ALL.into_iter().collect(),
            keep_copyright: true,
            locales: Vec::new(),
            timezone: None,
        }
    }
}

/// Files and bytes removed in one category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Non-directory entries removed.
    pub files: u64,
    /// Bytes of regular files removed (hard links count once).
    pub bytes: u64,
}

/// What pruning removed, per category.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Per category.
    pub categories: BTreeMap<PruneCategory, PruneStats>,
    /// Directories removed.
    pub dirs: u64,
}

impl PruneReport {
    /// Sum over the categories.
    pub fn total(&self) -> PruneStats {
        self.categories
            .values()
            .fold(PruneStats::default(), |a, s| PruneStats {
                files: a.files + s.files,
                bytes: a.bytes + s.bytes,
            })
    }
}

/// The paths to remove and the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Topmost removed paths (removing them removes everything planned), sorted.
    pub remove: Vec<PathBuf>,
    /// Statistics.
    pub report: PruneReport,
}

fn matches(rule: &PruneRule, path: &Path) -> bool {
    let root = Path::new(rule.root);
    let Ok(below) = path.strip_prefix(root) else {
        return false;
    };
    if below.as_os_str().is_empty() {
        return false;
    }
    match rule.matcher {
        Matcher::Everything => true,
        Matcher::Suffix(suffix) => path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(suffix)),
        Matcher::InsideDirNamed(name) => {
            let mut parents = below.components();
            parents.next_back();
            parents.any(|c| c.as_os_str() == name)
        }
    }
}

/// Whether a rule may remove the directory `path` once nothing below it is kept.
fn dir_matches(rule: &PruneRule, path: &Path) -> bool {
    match rule.matcher {
        Matcher::Everything => matches(rule, path),
        Matcher::InsideDirNamed(name) => {
            path.starts_with(rule.root) && path.components().any(|c| c.as_os_str() == name)
        }
        Matcher::Suffix(_) => false,
    }
}

/// Locale directory names kept for `locale` (`de_DE.UTF-8@euro` keeps the name itself, then
/// without modifier, codeset and territory).
fn locale_names(locale: &str) -> Vec<String> {
    let mut names = vec![locale.to_owned()];
    let base = locale.split('@').next().unwrap_or(locale);
    let no_codeset = base.split('.').next().unwrap_or(base);
    let language = no_codeset.split('_').next().unwrap_or(no_codeset);
    for name in [base, no_codeset, language] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

struct Keep {
    keep_copyright: bool,
    locales: BTreeSet<String>,
    zones: BTreeSet<PathBuf>,
}

impl Keep {
    fn new(config: &PruneConfig, tree: &Tree) -> Self {
        let locales = config
            .locales
            .iter()
            .flat_map(|l| locale_names(l))
            .collect();
        let mut zones = BTreeSet::new();
        for zone in ["Etc/UTC", "UTC"]
            .into_iter()
            .chain(config.timezone.as_deref())
        {
            let path = Path::new("usr/share/zoneinfo").join(zone);
            // The zone itself, every link on the way, and the file it finally is.
            if let Ok(resolved) = tree.resolve(&path, true) {
                zones.insert(resolved.path);
            }
            zones.insert(path);
        }
        Self {
            keep_copyright: config.keep_copyright,
            locales,
            zones,
        }
    }

    fn keeps(&self, category: PruneCategory, path: &Path, tree: &Tree) -> bool {
        let depth_below = |root: &str| {
            path.strip_prefix(root)
                .map(|p| p.components().count())
                .unwrap_or(0)
        };
        match category {
            PruneCategory::Docs if path.starts_with("usr/share/doc") && self.keep_copyright => {
                let depth = depth_below("usr/share/doc");
                // `doc/<pkg>/copyright`, and `doc/<pkg>` symlinks to another package's dir.
                (depth == 2 && path.file_name().is_some_and(|n| n == "copyright"))
                    || (depth == 1 && tree.get(path).is_some_and(|e| e.is_symlink()))
            }
            PruneCategory::Locales => {
                let below = path.strip_prefix("usr/share/locale").unwrap_or(path);
                let mut components = below.components();
                let first = components
                    .next()
                    .and_then(|c| c.as_os_str().to_str())
                    .unwrap_or("");
                // Files directly in usr/share/locale (locale.alias) stay.
                components.next().is_none() && !tree.get(path).is_some_and(|e| e.is_dir())
                    || self.locales.contains(first)
            }
            PruneCategory::Zoneinfo => {
                // Top-level tables (zone.tab, tzdata.zi, leap-seconds.list...) and the kept zones.
                let top_level_file = depth_below("usr/share/zoneinfo") == 1
                    && tree
                        .get(path)
                        .is_some_and(|e| !e.is_dir() && !e.is_symlink())
                    && path
                        .extension()
                        .is_some_and(|x| x == "tab" || x == "zi" || x == "list");
                top_level_file || self.zones.contains(path)
            }
            _ => false,
        }
    }
}

/// Plans pruning (pure).
pub fn plan_prune(tree: &Tree, config: &PruneConfig) -> PrunePlan {
    let keep = Keep::new(config, tree);
    let rules: Vec<&PruneRule> = PRUNE_RULES
        .iter()
        .filter(|r| config.categories.contains(&r.category))
        .collect();
    // Non-directories to remove, with their category.
    let mut removed: BTreeMap<PathBuf, PruneCategory> = BTreeMap::new();
    for (path, entry) in tree.iter() {
        if entry.is_dir() {
            continue;
        }
        if let Some(rule) = rules.iter().find(|r| matches(r, path))
            && !keep.keeps(rule.category, path, tree)
        {
            removed.insert(path.clone(), rule.category);
        }
    }
    // Files shared with a kept hard link stay.
    for (path, entry) in tree.iter() {
        if let EntryKind::HardLink { target } = &entry.kind
            && !removed.contains_key(path)
        {
            removed.remove(target);
        }
    }
    // Directories below a rule root go when nothing below them is kept.
    let mut alive: BTreeSet<PathBuf> = BTreeSet::new();
    for (path, entry) in tree.iter() {
        if !entry.is_dir() && !removed.contains_key(path) {
            let mut parent = path.parent();
            while let Some(p) = parent {
                if !alive.insert(p.to_path_buf()) {
                    break;
                }
                parent = p.parent();
            }
        }
    }
    let mut removed_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for (path, entry) in tree.iter() {
        if entry.is_dir() && !alive.contains(path) && rules.iter().any(|r| dir_matches(r, path)) {
            removed_dirs.insert(path.clone());
        }
    }
    let mut report = PruneReport {
        dirs: removed_dirs.len() as u64,
        ..PruneReport::default()
    };
    for (path, category) in &removed {
        let stats = report.categories.entry(*category).or_default();
        stats.files += 1;
        if let Some(EntryKind::File { size }) = tree.get(path).map(|e| &e.kind) {
            stats.bytes += size;
        }
    }
    let is_removed = |p: &Path| removed.contains_key(p) || removed_dirs.contains(p);
    let remove = removed
        .keys()
        .chain(removed_dirs.iter())
        .filter(|p| !p.parent().is_some_and(is_removed))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    PrunePlan { remove, report }
}

/// Applies a plan to the staging directory and its tree.
pub fn apply_prune(staging: &mut Staging, plan: &PrunePlan) -> Result<(), StagingError> {
    for path in &plan.remove {
        staging.remove_physical(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tree::Ownership;

    fn tree() -> Tree {
        let mut t = Tree::new(0);
        let d = Ownership::root(0o755);
        let f = Ownership::root(0o644);
        for dir in [
            "usr",
            "usr/share",
            "usr/share/doc",
            "usr/share/doc/nginx",
            "usr/share/doc/nginx/examples",
            "usr/share/man",
            "usr/share/man/man8",
            "usr/share/locale",
            "usr/share/locale/de",
            "usr/share/locale/de/LC_MESSAGES",
            "usr/share/locale/fr",
            "usr/share/locale/fr/LC_MESSAGES",
            "usr/share/zoneinfo",
            "usr/share/zoneinfo/Etc",
            "usr/share/zoneinfo/Europe",
            "usr/share/common-licenses",
            "usr/lib",
            "usr/lib/x86_64-linux-gnu",
            "usr/lib/x86_64-linux-gnu/pkgconfig",
            "usr/lib/python3",
            "usr/lib/python3/__pycache__",
            "usr/include",
        ] {
            t.add_dir(Path::new(dir), d, 0).unwrap();
        }
        for (file, size) in [
            ("usr/share/doc/nginx/copyright", 100),
            ("usr/share/doc/nginx/changelog.Debian.gz", 1000),
            ("usr/share/doc/nginx/examples/a.conf", 10),
            ("usr/share/man/man8/nginx.8.gz", 500),
            ("usr/share/locale/locale.alias", 5),
            ("usr/share/locale/de/LC_MESSAGES/x.mo", 70),
            ("usr/share/locale/fr/LC_MESSAGES/x.mo", 80),
            ("usr/share/zoneinfo/Etc/UTC", 3),
            ("usr/share/zoneinfo/Europe/Paris", 4),
            ("usr/share/zoneinfo/Europe/Berlin", 4),
            ("usr/share/zoneinfo/zone.tab", 9),
            ("usr/share/common-licenses/GPL-2", 18000),
            ("usr/lib/x86_64-linux-gnu/libz.a", 2000),
            ("usr/lib/x86_64-linux-gnu/libz.so.1", 2000),
            ("usr/lib/x86_64-linux-gnu/pkgconfig/zlib.pc", 20),
            ("usr/lib/python3/__pycache__/m.cpython-313.pyc", 30),
            ("usr/include/zlib.h", 40),
        ] {
            t.add_file(Path::new(file), size, f, 0).unwrap();
        }
        t.add_symlink(Path::new("usr/share/doc/libz"), Path::new("nginx"), 0, 0, 0)
            .unwrap();
        t.add_symlink(
            Path::new("usr/share/zoneinfo/UTC"),
            Path::new("Etc/UTC"),
            0,
            0,
            0,
        )
        .unwrap();
        t.add_symlink(
            Path::new("usr/share/zoneinfo/CET"),
            Path::new("Europe/Paris"),
            0,
            0,
            0,
        )
        .unwrap();
        t.add_hardlink(
            Path::new("usr/share/common-licenses/GPL"),
            Path::new("usr/share/common-licenses/GPL-2"),
            f,
            0,
        )
        .unwrap();
        t
    }

    fn removed(plan: &PrunePlan) -> Vec<String> {
        plan.remove
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    #[test]
    fn default_rules_keep_what_matters() {
        let config = PruneConfig {
            locales: vec!["de_DE.UTF-8".into()],
            timezone: Some("CET".into()),
            ..PruneConfig::default()
        };
        let plan = plan_prune(&tree(), &config);
        assert_eq!(
            removed(&plan),
            [
                "usr/include/zlib.h",
                "usr/lib/python3/__pycache__",
                "usr/lib/x86_64-linux-gnu/libz.a",
                "usr/lib/x86_64-linux-gnu/pkgconfig",
                "usr/share/doc/nginx/changelog.Debian.gz",
                "usr/share/doc/nginx/examples",
                "usr/share/locale/fr",
                "usr/share/man/man8",
                "usr/share/zoneinfo/Europe/Berlin",
            ]
        );
        let docs = plan.report.categories[&PruneCategory::Docs];
        assert_eq!(
            docs,
            PruneStats {
                files: 2,
                bytes: 1010
            }
        );
        assert_eq!(plan.report.total().files, 9);
        assert_eq!(
            plan.report.total().bytes,
            1000 + 10 + 500 + 80 + 4 + 2000 + 20 + 30 + 40
        );
    }

    #[test]
    fn copyright_can_go_too_and_categories_switch_off() {
        let config = PruneConfig {
            keep_copyright: false,
            categories: [PruneCategory::Docs].into_iter().collect(),
            ..PruneConfig::default()
        };
        let plan = plan_prune(&tree(), &config);
        assert_eq!(
            removed(&plan),
            ["usr/share/doc/libz", "usr/share/doc/nginx"]
        );
        assert_eq!(plan.report.categories.len(), 1);
    }

    #[test]
    fn hard_linked_files_stay_with_their_links() {
        let config = PruneConfig {
            categories: [PruneCategory::DevelopmentFiles].into_iter().collect(),
            ..PruneConfig::default()
        };
        assert!(
            plan_prune(&tree(), &config)
                .remove
                .contains(&PathBuf::from("usr/lib/x86_64-linux-gnu/libz.a"))
        );
        let mut t = tree();
        t.add_dir(Path::new("usr/bin"), Ownership::root(0o755), 0)
            .unwrap();
        t.add_hardlink(
            Path::new("usr/bin/keep"),
            Path::new("usr/lib/x86_64-linux-gnu/libz.a"),
            Ownership::root(0o644),
            0,
        )
        .unwrap();
        let plan = plan_prune(&t, &config);
        assert!(
            !plan
                .remove
                .contains(&PathBuf::from("usr/lib/x86_64-linux-gnu/libz.a"))
        );
    }

    #[test]
    fn locale_names_expand() {
        assert_eq!(
            locale_names("de_DE.UTF-8@euro"),
            ["de_DE.UTF-8@euro", "de_DE.UTF-8", "de_DE", "de"]
        );
        assert_eq!(locale_names("C.UTF-8"), ["C.UTF-8", "C"]);
    }

    #[test]
    fn apply_removes_from_disk_and_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/share/man/man1")).unwrap();
        std::fs::write(dir.path().join("usr/share/man/man1/a.1.gz"), b"xx").unwrap();
        let mut staging = Staging::scan(dir.path(), 0).unwrap();
        let plan = plan_prune(staging.tree(), &PruneConfig::default());
        assert_eq!(plan.report.total(), PruneStats { files: 1, bytes: 2 });
        apply_prune(&mut staging, &plan).unwrap();
        assert!(!dir.path().join("usr/share/man/man1").exists());
        assert!(dir.path().join("usr/share/man").exists());
        assert!(!staging.tree().contains(Path::new("usr/share/man/man1")));
    }
}
