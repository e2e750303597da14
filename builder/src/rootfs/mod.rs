//! Root filesystem customisation: what maintainer scripts and a first boot would have done
//! to an unpacked Debian tree, reproduced at build time without running them.
//!
//! Packages are unpacked (merged-/usr applied, no maintainer scripts) into a staging
//! directory whose metadata lives in a [`tree::Tree`]. [`customize_rootfs`] then runs a flat
//! list of steps, each a pure plan ([`staging::FsOp`]s) applied through [`staging::Staging`]:
//!
//! 1. `layout`: merged-/usr links, base directories, `/sbin/init` and friends -> guest-init;
//! 2. `prune`: documentation, manuals, foreign locales and zones, static libraries;
//! 3. the recipe's own `/etc/sysusers.d` and `/etc/tmpfiles.d` files, so that they override
//!    the packages' before the next two steps read them;
//! 4. `accounts` + `sysusers`: `/etc/passwd`, `group`, `shadow`, `gshadow`, home directories;
//! 5. `tmpfiles`: directories and files packages declare in `tmpfiles.d` (those on `/run`
//!    and `/tmp` are handed to guest-init);
//! 6. `alternatives`: `update-alternatives --install` calls found in postinst scripts;
//! 7. `etc`: hostname, hosts, resolv.conf, os-release, machine-id, fstab, nsswitch, zone;
//! 8. `maintainer`: the other effects of the skipped maintainer scripts (`ucf` copies,
//!    `dpkg-statoverride`; what cannot be done is reported as notes);
//! 9. `files`: the recipe's `[[file]]` entries (last, so they can override anything);
//!    `[[directory]]` entries below `/run` or `/tmp` become runtime directories;
//! 10. `dpkg`: `/var/lib/dpkg/status` and `info/*.list` for the installed packages (conffile
//!     hashes are taken before step 1, from the files as the packages shipped them).
//!
//! [`executables::check_executables`] then verifies each service's and task's program.

pub mod accounts;
pub mod alternatives;
pub mod dpkg;
pub mod etc;
pub mod executables;
pub mod files;
pub mod layout;
pub mod maintainer;
pub mod prune;
pub mod specifiers;
pub mod staging;
pub mod sysusers;
pub mod tmpfiles;
pub mod tree;
pub mod words;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use accounts::{Accounts, AccountsError, GroupConfig, UserConfig};
use dpkg::{DpkgError, DpkgPackage};
use etc::{EtcConfig, EtcError};
use files::{FileConfig, FilesError};
use prune::{PruneConfig, PruneReport};
use staging::{Staging, StagingError};
use sysusers::SysusersError;
use tmpfiles::{RuntimeDir, TmpfilesError};

/// Where the lead installs guest-init by default.
pub const DEFAULT_INIT_PATH: &str = "/usr/lib/jeos/init";

/// Errors from customising the root filesystem.
#[derive(Debug, Error)]
pub enum RootfsError {
    /// Changing the staging directory failed.
    #[error(transparent)]
    Staging(#[from] StagingError),
    /// The account database could not be built.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// A sysusers.d file is invalid.
    #[error(transparent)]
    Sysusers(#[from] SysusersError),
    /// A tmpfiles.d file is invalid.
    #[error(transparent)]
    Tmpfiles(#[from] TmpfilesError),
    /// System files could not be planned.
    #[error(transparent)]
    Etc(#[from] EtcError),
    /// A recipe file could not be planned.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The dpkg database could not be written.
    #[error("cannot write the dpkg database")]
    Dpkg(#[from] DpkgError),
}

/// Everything customisation needs, filled by the pipeline from the validated recipe.
#[derive(Debug, Clone, Default)]
pub struct RootfsConfig {
    /// Where guest-init is (or will be) installed, e.g. [`DEFAULT_INIT_PATH`].
    pub init_path: PathBuf,
    /// The recipe's groups.
    pub groups: Vec<GroupConfig>,
    /// The recipe's users.
    pub users: Vec<UserConfig>,
    /// System files.
    pub etc: EtcConfig,
    /// Pruning; its `timezone` defaults to `etc.timezone`.
    pub prune: PruneConfig,
    /// `(package, postinst text)` for every package that has one.
    pub postinsts: Vec<(String, String)>,
    /// Every maintainer script of the closure (`preinst`, `postinst`, ...), for
    /// [`maintainer::plan_maintainer`].
    pub scripts: Vec<maintainer::Script>,
    /// The recipe's files.
    pub files: Vec<FileConfig>,
    /// Installed packages for `/var/lib/dpkg/status` (none: no dpkg database is written).
    pub dpkg: Vec<DpkgPackage>,
}

/// What customisation did, for the build report.
#[derive(Debug, Clone, Default)]
pub struct RootfsReport {
    /// Bytes and files pruned per category.
    pub prune: PruneReport,
    /// The generated account database (services resolve users through it).
    pub accounts: Accounts,
    /// Selected alternatives (name -> path).
    pub alternatives: BTreeMap<String, String>,
    /// Directories guest-init should create on `/run` or `/tmp` at boot.
    pub runtime_dirs: Vec<RuntimeDir>,
    /// Skipped sysusers/tmpfiles lines and alternatives, for the report.
    pub notes: Vec<String>,
    /// Files and symlinks the recipe's `[[file]]`/`[[symlink]]` entries wrote (relative).
    pub recipe_paths: Vec<PathBuf>,
}

/// A recipe file that overrides packages' `sysusers.d`/`tmpfiles.d` configuration.
fn is_config_override(file: &FileConfig) -> bool {
    ["/etc/sysusers.d/", "/etc/tmpfiles.d/"]
        .iter()
        .any(|dir| file.path.starts_with(dir))
}

/// A recipe directory on a runtime mount (`/run`, `/tmp`): created by guest-init at boot.
fn is_runtime_directory(file: &FileConfig) -> bool {
    matches!(file.content, files::FileContent::Directory)
        && ["/run/", "/tmp/"]
            .iter()
            .any(|dir| file.path.starts_with(dir))
}

fn runtime_directories(
    dirs: &[FileConfig],
    accounts: &Accounts,
) -> Result<Vec<RuntimeDir>, RootfsError> {
    let mut out = Vec::new();
    for dir in dirs {
        let owner = dir.owner.as_deref().unwrap_or("root");
        let uid = accounts
            .resolve_uid(owner)
            .ok_or_else(|| FilesError::UnknownOwner {
                path: dir.path.clone(),
                owner: owner.to_owned(),
            })?;
        let gid = match &dir.group {
            Some(group) => accounts
                .resolve_gid(group)
                .ok_or_else(|| FilesError::UnknownGroup {
                    path: dir.path.clone(),
                    group: group.clone(),
                })?,
            None => accounts
                .users()
                .iter()
                .find(|u| u.uid == uid)
                .map_or(0, |u| u.gid),
        };
        out.push(RuntimeDir {
            path: dir.path.clone(),
            mode: dir.mode.unwrap_or(0o755),
            uid,
            gid,
            kind: tmpfiles::RuntimeKind::Directory,
        });
    }
    Ok(out)
}

/// The build-time values of `%` specifiers.
fn specifiers_of(etc: &EtcConfig) -> specifiers::Specifiers {
    let os = &etc.os_release;
    specifiers::Specifiers {
        hostname: etc.hostname.clone(),
        os_id: format!("jeos-{}", os.name),
        version_id: os.version.clone(),
        variant_id: os.name.clone(),
        build_id: os.build_id.clone().unwrap_or_default(),
        image_id: os.name.clone(),
        image_version: os.version.clone(),
    }
}

fn read_text(staging: &Staging, path: &Path) -> Result<String, StagingError> {
    Ok(String::from_utf8_lossy(&staging.read_file(path)?).into_owned())
}

/// Runs every customisation step on the staging directory.
pub fn customize_rootfs(
    staging: &mut Staging,
    config: &RootfsConfig,
) -> Result<RootfsReport, RootfsError> {
    let mut report = RootfsReport::default();
    let epoch = staging.epoch();
    let mut dpkg_packages = config.dpkg.clone();
    dpkg::hash_conffiles(staging, &mut dpkg_packages)?;

    // 1. Skeleton.
    let init_path = if config.init_path.as_os_str().is_empty() {
        Path::new(DEFAULT_INIT_PATH)
    } else {
        &config.init_path
    };
    let ops = layout::plan_layout(staging.tree(), init_path);
    staging.apply(&ops)?;

    // 2. Pruning, before anything links into the pruned trees.
    let mut prune_config = config.prune.clone();
    if prune_config.timezone.is_none() {
        prune_config.timezone.clone_from(&config.etc.timezone);
    }
    let plan = prune::plan_prune(staging.tree(), &prune_config);
    prune::apply_prune(staging, &plan)?;
    report.prune = plan.report;

    // 3. The recipe's sysusers.d/tmpfiles.d overrides, before those steps read them.
    let (early, files): (Vec<FileConfig>, Vec<FileConfig>) =
        config.files.iter().cloned().partition(is_config_override);
    let (runtime, files): (Vec<FileConfig>, Vec<FileConfig>) =
        files.into_iter().partition(is_runtime_directory);
    let ops = files::plan_files(&early, &Accounts::debian_base("/bin/sh"))?;
    staging.apply(&ops)?;
    let specifiers = specifiers_of(&config.etc);

    // 4. Accounts: base-passwd, the recipe, then packages' sysusers.d.
    let root_shell = if staging.tree().exists_following(Path::new("usr/bin/bash")) {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let mut accounts = Accounts::debian_base(root_shell);
    let homes = accounts.apply_config(&config.groups, &config.users)?;
    let mut lines = Vec::new();
    for file in sysusers::find_config_files(staging.tree(), sysusers::SYSUSERS_DIRS) {
        let text = read_text(staging, &file)?;
        let (parsed, notes) = sysusers::parse_sysusers(&file, &text, &specifiers)?;
        lines.extend(parsed);
        report.notes.extend(notes);
    }
    // What adduser/useradd in the skipped maintainer scripts would have created.
    let (script_lines, notes) = maintainer::scan_accounts(&config.scripts);
    report.notes.extend(notes);
    lines.extend(script_lines.iter().cloned());
    let before = accounts.clone();
    report.notes.extend(sysusers::apply_sysusers(
        &mut accounts,
        staging.tree(),
        &lines,
    )?);
    report
        .notes
        .extend(maintainer::account_notes(&script_lines, &before));
    accounts.validate()?;
    staging.apply(&accounts.plan_files(epoch))?;
    staging.apply(&homes)?;

    // 5. tmpfiles.d.
    let mut entries = Vec::new();
    for file in sysusers::find_config_files(staging.tree(), tmpfiles::TMPFILES_DIRS) {
        let text = read_text(staging, &file)?;
        entries.extend(tmpfiles::parse_tmpfiles(&file, &text, &specifiers)?);
    }
    let plan = tmpfiles::plan_tmpfiles(&entries, staging.tree(), &accounts);
    staging.apply(&plan.ops)?;
    report.runtime_dirs = plan.runtime_dirs;
    report.notes.extend(plan.notes);

    // 6. Alternatives.
    let scan = alternatives::scan_postinsts(&config.postinsts);
    let plan = alternatives::plan_alternatives(&scan, staging.tree());
    staging.apply(&plan.ops)?;
    report.alternatives = plan.selected;
    report.notes.extend(plan.notes);

    // 7. System files.
    let ops = etc::plan_etc(&config.etc, staging.tree())?;
    staging.apply(&ops)?;

    // 8. The other maintainer-script effects (after the system files, which they may name).
    let provided = config.files.iter().map(|f| f.path.clone()).collect();
    let plan = maintainer::plan_maintainer(&config.scripts, staging.tree(), &accounts, &provided);
    staging.apply(&plan.ops)?;
    report.notes.extend(plan.notes);

    // 9. The recipe's files; its directories on `/run` and `/tmp` are made at boot.
    let ops = files::plan_files(&files, &accounts)?;
    staging.apply(&ops)?;
    report.recipe_paths = files::written_paths(&ops);
    report
        .runtime_dirs
        .extend(runtime_directories(&runtime, &accounts)?);

    // 10. The dpkg database.
    if !dpkg_packages.is_empty() {
        let ops = dpkg::plan_dpkg(&dpkg_packages, staging.tree())?;
        staging.apply(&ops)?;
    }

    report.accounts = accounts;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::rootfs::executables::{ServiceExec, check_executables};
    use crate::rootfs::files::FileContent;
    use crate::rootfs::tree::EntryKind;

    /// A small unpacked tree resembling nginx-light's closure.
    fn unpacked() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        w("usr/sbin/nginx", "\x7fELF");
        w("usr/bin/dash", "\x7fELF");
        w("usr/bin/mawk", "\x7fELF");
        w("usr/share/doc/nginx/copyright", "licence");
        w("usr/share/doc/nginx/changelog.gz", &"x".repeat(1000));
        w("usr/share/man/man8/nginx.8.gz", &"x".repeat(300));
        w("usr/share/zoneinfo/Etc/UTC", "TZif");
        w("usr/share/zoneinfo/Europe/Paris", "TZif");
        w("usr/share/zoneinfo/Europe/Rome", "TZif");
        w(
            "usr/lib/sysusers.d/nginx.conf",
            "u nginx - \"nginx user\" /var/lib/nginx\n",
        );
        w(
            "usr/lib/tmpfiles.d/nginx.conf",
            "d /var/lib/nginx 0750 nginx nginx -\nd /run/nginx 0755 nginx nginx -\n",
        );
        w("etc/nginx/nginx.conf", "user www-data;\n");
        std::os::unix::fs::symlink("dash", dir.path().join("usr/bin/sh")).unwrap();
        let mut perms = fs::metadata(dir.path().join("usr/sbin/nginx"))
            .unwrap()
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(dir.path().join("usr/sbin/nginx"), perms).unwrap();
        dir
    }

    fn config() -> RootfsConfig {
        RootfsConfig {
            init_path: DEFAULT_INIT_PATH.into(),
            users: vec![UserConfig { name: "app".into(), system: true, groups: vec!["www-data".into()], ..Default::default() }],
            etc: EtcConfig {
                hostname: "nginx".into(),
                timezone: Some("Europe/Paris".into()),
                os_release: etc::OsReleaseConfig { name: "nginx".into(), version: "1.0.0".into(), suite: "trixie".into(), ..Default::default() },
                ..Default::default()
            },
            postinsts: vec![(
                "mawk".into(),
                "update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n  --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz\n".into(),
            )],
            files: vec![FileConfig {
                path: "/var/www/html/index.html".into(),
                content: FileContent::Inline(b"hello from jeos\n".to_vec()),
                mode: None,
                owner: Some("www-data".into()),
                group: None,
            }],
            ..Default::default()
        }
    }

    fn run() -> (tempfile::TempDir, Staging, RootfsReport) {
        let dir = unpacked();
        let mut staging = Staging::scan(dir.path(), 1_700_000_000).unwrap();
        let report = customize_rootfs(&mut staging, &config()).unwrap();
        (dir, staging, report)
    }

    #[test]
    fn customizes_an_unpacked_tree_end_to_end() {
        let (dir, staging, report) = run();
        let tree = staging.tree();
        let root = dir.path();
        // Skeleton and init.
        assert!(
            matches!(&tree.get(Path::new("bin")).unwrap().kind, EntryKind::Symlink { target } if target == Path::new("usr/bin"))
        );
        assert_eq!(
            tree.resolve(Path::new("/sbin/init"), false).unwrap().path,
            PathBuf::from("usr/sbin/init")
        );
        assert_eq!(tree.get(Path::new("tmp")).unwrap().mode, 0o1777);
        // Accounts: sysusers' nginx got the first free system id pair, the recipe user the next.
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("app:x:101:101::/nonexistent:/usr/sbin/nologin\n"),
            "{passwd}"
        );
        assert!(
            passwd.contains("nginx:x:102:102:nginx user:/var/lib/nginx:/usr/sbin/nologin\n"),
            "{passwd}"
        );
        assert!(
            fs::read_to_string(root.join("etc/group"))
                .unwrap()
                .contains("www-data:x:33:app\n")
        );
        assert_eq!(tree.get(Path::new("etc/shadow")).unwrap().gid, 42);
        // tmpfiles: /var/lib/nginx owned by nginx, /run/nginx left to the init.
        let lib = tree.get(Path::new("var/lib/nginx")).unwrap();
        assert_eq!((lib.mode, lib.uid, lib.gid), (0o750, 102, 102));
        assert_eq!(report.runtime_dirs[0].path, "/run/nginx");
        // Alternatives: master link made, man-page slave dropped (pruned).
        assert_eq!(
            report.alternatives.get("awk").map(String::as_str),
            Some("/usr/bin/mawk")
        );
        assert!(!report.alternatives.contains_key("awk.1.gz"));
        assert_eq!(
            tree.lookup(Path::new("/usr/bin/awk")).unwrap().0,
            PathBuf::from("usr/bin/mawk")
        );
        // System files.
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "nginx\n"
        );
        assert!(
            fs::read_to_string(root.join("usr/lib/os-release"))
                .unwrap()
                .contains("ID=\"debian\"\nVARIANT=\"jeos nginx appliance\"\n")
        );
        assert!(root.join("etc/debian_version").is_file());
        assert!(root.join("etc/modprobe.d").is_dir());
        assert_eq!(
            fs::read_link(root.join("etc/localtime")).unwrap(),
            PathBuf::from("/usr/share/zoneinfo/Europe/Paris")
        );
        // Pruning kept the copyright, the zone and UTC.
        assert!(root.join("usr/share/doc/nginx/copyright").exists());
        assert!(!root.join("usr/share/doc/nginx/changelog.gz").exists());
        assert!(!root.join("usr/share/zoneinfo/Europe/Rome").exists());
        assert!(root.join("usr/share/zoneinfo/Etc/UTC").exists());
        assert_eq!(report.prune.total().bytes, 1000 + 300 + 4);
        // Recipe file with owner.
        let page = tree.get(Path::new("var/www/html/index.html")).unwrap();
        assert_eq!(
            (page.uid, page.gid, page.mode, page.mtime),
            (33, 33, 0o644, 1_700_000_000)
        );
        // Services.
        check_executables(
            tree,
            &[ServiceExec {
                service: "nginx".into(),
                kind: crate::rootfs::executables::UnitKind::Service,
                path: "/usr/sbin/nginx".into(),
            }],
        )
        .unwrap();
    }

    /// Issue #11: the recipe's `/etc/sysusers.d` and `/etc/tmpfiles.d` files override the
    /// packages' before those steps run; its `/run` directories are made at boot; accounts
    /// a postinst creates with `adduser` exist.
    #[test]
    fn recipe_overrides_come_first_and_run_directories_at_boot() {
        let dir = unpacked();
        let mut staging = Staging::scan(dir.path(), 1_700_000_000).unwrap();
        let mut config = config();
        config.files.push(FileConfig {
            path: "/etc/sysusers.d/nginx.conf".into(),
            content: FileContent::Inline(b"u nginx 990 \"overridden\" /srv/nginx\n".to_vec()),
            mode: None,
            owner: None,
            group: None,
        });
        config.files.push(FileConfig {
            path: "/etc/tmpfiles.d/nginx.conf".into(),
            content: FileContent::Inline(b"d /var/lib/nginx 0700 nginx nginx -\n".to_vec()),
            mode: None,
            owner: None,
            group: None,
        });
        config.files.push(FileConfig {
            path: "/run/app".into(),
            content: FileContent::Directory,
            mode: Some(0o750),
            owner: Some("app".into()),
            group: None,
        });
        config.scripts.push(maintainer::Script {
            package: "pg".into(),
            kind: "postinst".into(),
            text: "adduser --system --group --home /var/lib/pg pg\n".into(),
        });
        let report = customize_rootfs(&mut staging, &config).unwrap();
        let nginx = report.accounts.user("nginx").unwrap();
        assert_eq!((nginx.uid, nginx.gecos.as_str()), (990, "overridden"));
        let lib = staging.tree().get(Path::new("var/lib/nginx")).unwrap();
        assert_eq!((lib.mode, lib.uid), (0o700, 990));
        let app = report.accounts.user("app").unwrap();
        assert!(report.runtime_dirs.iter().any(|d| d.path == "/run/app"
            && d.mode == 0o750
            && d.uid == app.uid
            && d.kind == tmpfiles::RuntimeKind::Directory));
        assert!(staging.tree().get(Path::new("run/app")).is_none());
        assert_eq!(report.accounts.user("pg").unwrap().home, "/var/lib/pg");
        assert!(
            report
                .notes
                .iter()
                .any(|n| n == "created system user `pg` as pg postinst would have"),
            "{:?}",
            report.notes
        );
    }

    #[test]
    fn output_is_deterministic() {
        let (_d1, s1, _) = run();
        let (_d2, s2, _) = run();
        let strip = |s: &Staging| -> Vec<(PathBuf, EntryKind, u32, u32, u32)> {
            s.tree()
                .iter()
                .map(|(p, e)| (p.clone(), e.kind.clone(), e.mode, e.uid, e.gid))
                .collect()
        };
        assert_eq!(strip(&s1), strip(&s2));
        assert_eq!(
            fs::read(s1.root().join("etc/shadow")).unwrap(),
            fs::read(s2.root().join("etc/shadow")).unwrap()
        );
    }

    /// Dev-time measurement: customises a real unpacked closure (merged-/usr applied) in
    /// `$JEOS_ROOTFS_MEASURE_DIR` and prints the prune report. Modifies that directory, so
    /// it is not part of the test command (`cargo test -- --ignored real_closure`).
    #[test]
    #[ignore = "dev-time measurement: needs JEOS_ROOTFS_MEASURE_DIR (an unpacked closure it modifies)"]
    #[expect(clippy::print_stderr, reason = "reports the measurement or the skip")]
    fn real_closure_prune_report() {
        let Some(dir) = std::env::var_os("JEOS_ROOTFS_MEASURE_DIR") else {
            eprintln!("SKIPPED: set JEOS_ROOTFS_MEASURE_DIR to an unpacked package closure");
            return;
        };
        let mut staging = Staging::scan(PathBuf::from(dir), 1_700_000_000).unwrap();
        let before: u64 = staging
            .tree()
            .iter()
            .filter_map(|(p, _)| staging.tree().file_size(p))
            .sum();
        let mut config = config();
        config.files.clear();
        config.etc.timezone = None;
        if let Some(scripts) = std::env::var_os("JEOS_ROOTFS_MEASURE_POSTINSTS") {
            let mut entries: Vec<_> = fs::read_dir(scripts)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            config.postinsts = entries
                .iter()
                .map(|p| {
                    let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                    (
                        name,
                        String::from_utf8_lossy(&fs::read(p).unwrap()).into_owned(),
                    )
                })
                .collect();
        }
        let report = customize_rootfs(&mut staging, &config).unwrap();
        let after: u64 = staging
            .tree()
            .iter()
            .filter_map(|(p, _)| staging.tree().file_size(p))
            .sum();
        eprintln!("bytes before {before}, after {after}");
        for (category, stats) in &report.prune.categories {
            eprintln!(
                "{:10} {:6} files {:10} bytes",
                category.name(),
                stats.files,
                stats.bytes
            );
        }
        let total = report.prune.total();
        eprintln!(
            "{:10} {:6} files {:10} bytes ({} dirs)",
            "total", total.files, total.bytes, report.prune.dirs
        );
        eprintln!("alternatives: {:?}", report.alternatives);
        eprintln!("runtime dirs: {:?}", report.runtime_dirs);
        for note in &report.notes {
            eprintln!("note: {note}");
        }
    }
}
