//! The root filesystem's customisation from the recipe, and the customised tree as the
//! ext4 writer's metadata.

use std::path::PathBuf;

use image_writer::ext4::{Ext4Metadata, Ext4NodeKind};

use crate::recipe::{self, Recipe};
use crate::rootfs::accounts::{GroupConfig, UserConfig};
use crate::rootfs::etc::{EtcConfig, OsReleaseConfig, ResolvConfig};
use crate::rootfs::files::{FileConfig, FileContent};
use crate::rootfs::prune::PruneConfig;
use crate::rootfs::tree::{EntryKind, Tree};
use crate::rootfs::{DEFAULT_INIT_PATH, RootfsConfig};

/// The recipe as the customisation step's input. What the unpacked packages contribute
/// (`postinsts`, `scripts`, `dpkg`) is left empty: the `customize_rootfs` step fills it in.
pub fn rootfs_config(r: &Recipe) -> RootfsConfig {
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
        postinsts: Vec::new(),
        scripts: Vec::new(),
        files,
        dpkg: Vec::new(),
    }
}

/// The customisation tree as the ext4 writer's metadata.
pub fn ext4_metadata(tree: &Tree) -> Vec<Ext4Metadata> {
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
                EntryKind::File { .. } | EntryKind::HardLink { .. } => Ext4NodeKind::File,
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rootfs::tree::Ownership;

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
