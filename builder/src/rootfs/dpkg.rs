//! The image's dpkg database: `/var/lib/dpkg/status` and `info/<package>.list`, so that
//! dpkg itself (`dpkg-query --admindir`), scanners (syft, trivy, grype, debsecan) and
//! libguestfs see which packages are inside, although jeos never runs dpkg.
//!
//! Each status paragraph is the package's own `control` file (fields and continuation lines
//! verbatim, as dpkg copies them) plus `Status: install ok installed` and, for packages
//! with conffiles, `Conffiles:` with the MD5 of each file as the package shipped it (dpkg's
//! format; dpkg(5), deb-conffiles(5)). Paragraphs are sorted by name, as dpkg writes them.
//!
//! `info/<package>.md5sums` is the package's own `md5sums` member, minus the files pruned
//! from the image (so `dpkg --verify` checks what is there). `info/format` says `1`: the
//! multiarch layout in which `Multi-Arch: same` packages are `info/<name>:<arch>.*`.
//!
//! The kernel packages are listed too: their files live on the ESP and in the initramfs,
//! not in the root filesystem, but the kernel is what runs, and a vulnerability scanner
//! must see its version. Their `.list` holds only `/.` and their `.md5sums` is empty.
//!
//! Plan ([`render_status`], [`plan_dpkg`]) is pure; [`hash_conffiles`] reads the staging
//! tree through [`Staging::read_file`] (confined to the root), before customisation
//! changes anything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use thiserror::Error;

use super::staging::{FsOp, Staging, StagingError};
use super::tree::{Ownership, Tree};

/// The dpkg administrative directory inside the image.
pub const ADMIN_DIR: &str = "var/lib/dpkg";

/// One installed package, as the pipeline knows it after unpacking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DpkgPackage {
    /// The `control` file text from the `.deb`.
    pub control: String,
    /// Conffiles (absolute paths) with the MD5 (hex) of the shipped file; `None` when the
    /// file is not a regular file in the tree (dpkg writes `newconffile` then).
    pub conffiles: Vec<(String, Option<String>)>,
    /// Paths (relative to the root, as unpacked) this package shipped; empty for packages
    /// whose files are not in the root filesystem (the kernel).
    pub files: Vec<String>,
    /// The package's `md5sums` member (`<md5>  <path>` lines, paths relative to `/`).
    pub md5sums: Option<String>,
}

/// Errors building the dpkg database.
#[derive(Debug, Error)]
pub enum DpkgError {
    /// A `control` file has no `Package` field (or it is not a valid name).
    #[error("a package's `control` file has no valid `Package` field")]
    NoName,
    /// Reading a conffile failed.
    #[error(transparent)]
    Staging(#[from] StagingError),
}

/// The fields of a control file in order: `(name, full text including continuation lines)`.
fn control_fields(control: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in control.lines() {
        if line.trim().is_empty() {
            // A control file is one paragraph; anything after a blank line is ignored.
            if !fields.is_empty() {
                break;
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, text)) = fields.last_mut() {
                text.push('\n');
                text.push_str(line);
            }
            continue;
        }
        // deb822 field names are printable ASCII without spaces or `:`; a line with
        // another "name" would make dpkg reject the status file: dropped (fuzzing).
        if let Some((name, _)) = line.split_once(':')
            && !name.is_empty()
            && !name.starts_with(['#', '-'])
            && name.bytes().all(|b| b.is_ascii_graphic())
        {
            fields.push((name.to_owned(), line.to_owned()));
        }
    }
    // A field given twice would make the whole status file unreadable to dpkg ("duplicate
    // value for field"): keep the first, as `field_value` reads it (found by fuzzing).
    let mut seen = std::collections::HashSet::new();
    fields.retain(|(name, _)| seen.insert(name.to_ascii_lowercase()));
    fields
}

fn field_value<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, text)| text.split_once(':'))
        .map(|(_, v)| v.trim())
}

/// A Debian package name (Policy §5.6.7): what may safely become a file name.
fn valid_name(name: &str) -> bool {
    name.len() >= 2
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// `name` and the `info/` file stem (`name:arch` for `Multi-Arch: same`, as dpkg does).
fn info_stem(fields: &[(String, String)]) -> Result<(String, String), DpkgError> {
    let name = field_value(fields, "Package")
        .filter(|n| valid_name(n))
        .ok_or(DpkgError::NoName)?
        .to_owned();
    let same = field_value(fields, "Multi-Arch").is_some_and(|m| m == "same");
    let arch = field_value(fields, "Architecture").unwrap_or("");
    let stem = if same && valid_name(arch) {
        format!("{name}:{arch}")
    } else {
        name.clone()
    };
    Ok((name, stem))
}

/// One status paragraph.
fn render_paragraph(package: &DpkgPackage) -> Result<(String, String), DpkgError> {
    let fields = control_fields(&package.control);
    let (name, _) = info_stem(&fields)?;
    let mut out = String::new();
    let mut conffiles_written = package.conffiles.is_empty();
    for (field, text) in &fields {
        if field.eq_ignore_ascii_case("Status") || field.eq_ignore_ascii_case("Conffiles") {
            continue;
        }
        if field.eq_ignore_ascii_case("Description") && !conffiles_written {
            push_conffiles(&mut out, &package.conffiles);
            conffiles_written = true;
        }
        out.push_str(text);
        out.push('\n');
        if field.eq_ignore_ascii_case("Package") {
            out.push_str("Status: install ok installed\n");
        }
    }
    if !conffiles_written {
        push_conffiles(&mut out, &package.conffiles);
    }
    Ok((name, out))
}

fn push_conffiles(out: &mut String, conffiles: &[(String, Option<String>)]) {
    out.push_str("Conffiles:\n");
    for (path, md5) in conffiles {
        out.push(' ');
        out.push_str(path);
        out.push(' ');
        out.push_str(md5.as_deref().unwrap_or("newconffile"));
        out.push('\n');
    }
}

/// `/var/lib/dpkg/status`: one paragraph per package, sorted by name.
///
/// # Errors
/// [`DpkgError::NoName`] for a control file without a valid `Package`.
pub fn render_status(packages: &[DpkgPackage]) -> Result<String, DpkgError> {
    let mut paragraphs = packages
        .iter()
        .map(render_paragraph)
        .collect::<Result<Vec<_>, _>>()?;
    paragraphs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(paragraphs
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `info/<package>.list`: `/.`, then every file of the package still in the tree and the
/// directories above them, sorted (dpkg lists parents before children).
fn render_list(package: &DpkgPackage, tree: &Tree) -> String {
    let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
    for file in &package.files {
        let path = Path::new(file);
        if !tree.contains(path) {
            continue;
        }
        for ancestor in path.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                paths.insert(ancestor.to_owned());
            }
        }
    }
    let mut out = String::from("/.\n");
    for path in paths {
        out.push('/');
        out.push_str(&path.to_string_lossy());
        out.push('\n');
    }
    out
}

/// `md5sums` lines whose file is still in the tree (`<md5>  <path>`, path relative to `/`;
/// merged-/usr paths are checked as unpacked).
fn render_md5sums(md5sums: &str, tree: &Tree) -> String {
    let mut out = String::new();
    for line in md5sums.lines() {
        let Some((_, path)) = line.split_once("  ") else {
            continue;
        };
        if tree.exists_following(Path::new(path.trim_start_matches('/'))) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The operations that write the dpkg database into the root filesystem.
///
/// # Errors
/// [`DpkgError::NoName`] for a control file without a valid `Package`.
pub fn plan_dpkg(packages: &[DpkgPackage], tree: &Tree) -> Result<Vec<FsOp>, DpkgError> {
    let admin = Path::new(ADMIN_DIR);
    let dir = |path: PathBuf| FsOp::CreateDir {
        path,
        own: Ownership::root(0o755),
        update: false,
    };
    let file = |path: PathBuf, contents: Vec<u8>| FsOp::WriteFile {
        path,
        contents,
        own: Ownership::root(0o644),
    };
    let mut ops = vec![
        dir(admin.to_owned()),
        dir(admin.join("info")),
        dir(admin.join("updates")),
        dir(admin.join("triggers")),
        file(admin.join("status"), render_status(packages)?.into_bytes()),
        file(admin.join("available"), Vec::new()),
        file(admin.join("info/format"), b"1\n".to_vec()),
    ];
    let mut infos: Vec<(String, String)> = Vec::new();
    for package in packages {
        infos.extend(package_infos(package, tree)?);
    }
    infos.sort();
    for (name, text) in infos {
        ops.push(file(admin.join("info").join(name), text.into_bytes()));
    }
    Ok(ops)
}

/// `info/<package>.list` and `.md5sums` of one package: `(file name, text)`.
fn package_infos(package: &DpkgPackage, tree: &Tree) -> Result<Vec<(String, String)>, DpkgError> {
    let (_, stem) = info_stem(&control_fields(&package.control))?;
    let mut infos = vec![(format!("{stem}.list"), render_list(package, tree))];
    if let Some(md5sums) = &package.md5sums {
        infos.push((format!("{stem}.md5sums"), render_md5sums(md5sums, tree)));
    }
    Ok(infos)
}

/// The operations that rewrite one package's `info/*.list` and `info/*.md5sums` for what
/// `tree` now holds of its files (the kernel of a `[disk] convertible` image, installed
/// after the database was written).
///
/// # Errors
/// [`DpkgError::NoName`] for a control file without a valid `Package`.
pub fn plan_package_info(package: &DpkgPackage, tree: &Tree) -> Result<Vec<FsOp>, DpkgError> {
    let info = Path::new(ADMIN_DIR).join("info");
    Ok(package_infos(package, tree)?
        .into_iter()
        .map(|(name, text)| FsOp::WriteFile {
            path: info.join(name),
            contents: text.into_bytes(),
            own: Ownership::root(0o644),
        })
        .collect())
}

/// The packages unpacked into `staging` (with their files from its manifest), then
/// `elsewhere`: packages installed outside the root filesystem (the kernel), from their
/// control members alone.
#[must_use]
pub fn packages_from_unpack(
    staging: &package_resolver::deb::UnpackDir,
    elsewhere: &[package_resolver::deb::PackageReport],
) -> Vec<DpkgPackage> {
    let mut files: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (path, entry) in staging.manifest() {
        files
            .entry(entry.package.as_str())
            .or_default()
            .push(path.clone());
    }
    let convert = |report: &package_resolver::deb::PackageReport, files: Vec<String>| DpkgPackage {
        control: report.control.clone(),
        conffiles: report.conffiles.iter().map(|c| (c.clone(), None)).collect(),
        files,
        md5sums: report.md5sums.clone(),
    };
    staging
        .packages()
        .iter()
        .map(|r| convert(r, files.remove(r.name.as_str()).unwrap_or_default()))
        .chain(elsewhere.iter().map(|r| DpkgPackage {
            conffiles: Vec::new(),
            ..convert(r, Vec::new())
        }))
        .collect()
}

/// Fills in each conffile's MD5 from the (still unmodified) staging tree.
///
/// # Errors
/// [`DpkgError::Staging`] when a conffile exists but cannot be read.
pub fn hash_conffiles(staging: &Staging, packages: &mut [DpkgPackage]) -> Result<(), DpkgError> {
    for package in packages {
        for (path, md5) in &mut package.conffiles {
            let relative = Path::new(path.trim_start_matches('/'));
            let is_file = staging
                .tree()
                .get(relative)
                .is_some_and(super::tree::Entry::is_file);
            *md5 = if is_file {
                let bytes = staging.read_file(relative)?;
                Some(
                    Md5::digest(&bytes)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                )
            } else {
                None
            };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz_seed::write_seed;

    const NGINX: &str = "Package: nginx\nVersion: 1.26.3-3+deb13u1\nArchitecture: amd64\nMaintainer: Debian Nginx Maintainers <x@example.org>\nInstalled-Size: 1234\nDepends: libc6 (>= 2.34), libssl3t64 (>= 3.0.0)\nSection: httpd\nPriority: optional\nDescription: small, powerful, scalable web/proxy server\n Nginx (\"engine X\") is a high-performance web and reverse proxy server.\n .\n More text.\n";

    fn tree_with(paths: &[&str]) -> Tree {
        let mut tree = Tree::new(0);
        for p in paths {
            let path = Path::new(p);
            let parents: Vec<&Path> = path.ancestors().skip(1).collect();
            for a in parents.into_iter().rev() {
                if !a.as_os_str().is_empty() {
                    let _ = tree.add_dir(a, Ownership::root(0o755), 0);
                }
            }
            tree.add_file(path, 1, Ownership::root(0o644), 0).unwrap();
        }
        tree
    }

    #[test]
    fn status_keeps_the_control_fields_and_adds_status_and_conffiles() {
        let package = DpkgPackage {
            control: NGINX.to_owned(),
            conffiles: vec![(
                "/etc/nginx/nginx.conf".into(),
                Some("0123456789abcdef0123456789abcdef".into()),
            )],
            files: vec![],
            md5sums: None,
        };
        write_seed(
            "dpkg_control",
            "nginx",
            format!(
                "{NGINX}\0/etc/nginx/nginx.conf\nremove-on-upgrade /etc/old\n\0{}  usr/sbin/nginx\n",
                "0".repeat(32)
            )
            .as_bytes(),
        );
        let status = render_status(&[package]).unwrap();
        assert!(
            status.starts_with("Package: nginx\nStatus: install ok installed\nVersion:"),
            "{status}"
        );
        assert!(status.contains(
            "Conffiles:\n /etc/nginx/nginx.conf 0123456789abcdef0123456789abcdef\nDescription: small"
        ));
        assert!(status.ends_with(" .\n More text.\n"), "{status}");
    }

    /// Found by the `dpkg_control` fuzz target: duplicate fields went into the status file.
    #[test]
    fn duplicate_control_fields_are_written_once() {
        let package = DpkgPackage {
            control:
                "Package: x1\nVersion: 1\nSection: a\nDescription: d\nSection: b\nBad name <x: y\n"
                    .into(),
            ..DpkgPackage::default()
        };
        let status = render_status(&[package]).unwrap();
        assert_eq!(status.matches("Section:").count(), 1, "{status}");
        assert!(status.contains("Section: a\n"), "{status}");
        assert!(package_resolver::deb822::parse(&status).is_ok(), "{status}");
    }

    #[test]
    fn paragraphs_are_sorted_and_separated_by_one_blank_line() {
        let a = DpkgPackage {
            control: "Package: zlib1g\nVersion: 1\nArchitecture: amd64\nMulti-Arch: same\n\n"
                .into(),
            ..DpkgPackage::default()
        };
        let b = DpkgPackage {
            control: "Package: base-files\nVersion: 13\nArchitecture: amd64\n".into(),
            ..DpkgPackage::default()
        };
        let status = render_status(&[a, b]).unwrap();
        assert_eq!(
            status,
            "Package: base-files\nStatus: install ok installed\nVersion: 13\nArchitecture: amd64\n\nPackage: zlib1g\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\nMulti-Arch: same\n"
        );
    }

    #[test]
    fn a_control_file_without_a_valid_name_is_refused() {
        for control in ["Version: 1\n", "Package: ../../etc\nVersion: 1\n"] {
            let p = DpkgPackage {
                control: control.into(),
                ..DpkgPackage::default()
            };
            assert!(matches!(render_status(&[p]), Err(DpkgError::NoName)));
        }
    }

    #[test]
    fn lists_name_the_files_left_in_the_tree_with_their_directories() {
        let tree = tree_with(&["usr/sbin/nginx", "etc/nginx/nginx.conf"]);
        let package = DpkgPackage {
            control: "Package: libc6\nVersion: 1\nArchitecture: amd64\nMulti-Arch: same\n".into(),
            conffiles: vec![],
            files: vec![
                "usr/sbin/nginx".into(),
                "usr/share/doc/nginx/changelog.gz".into(),
                "etc/nginx/nginx.conf".into(),
            ],
            md5sums: Some(
                "00000000000000000000000000000001  usr/sbin/nginx\n00000000000000000000000000000002  usr/share/doc/nginx/changelog.gz\n".into(),
            ),
        };
        let ops = plan_dpkg(&[package], &tree).unwrap();
        let list = ops
            .iter()
            .find_map(|op| match op {
                FsOp::WriteFile { path, contents, .. }
                    if path.ends_with("info/libc6:amd64.list") =>
                {
                    Some(String::from_utf8(contents.clone()).unwrap())
                }
                _ => None,
            })
            .expect("list written as name:arch for Multi-Arch: same");
        assert_eq!(
            list,
            "/.\n/etc\n/etc/nginx\n/etc/nginx/nginx.conf\n/usr\n/usr/sbin\n/usr/sbin/nginx\n"
        );
        let written = |name: &str| {
            ops.iter().find_map(|op| match op {
                FsOp::WriteFile { path, contents, .. } if path == Path::new(name) => {
                    Some(String::from_utf8(contents.clone()).unwrap())
                }
                _ => None,
            })
        };
        assert!(written("var/lib/dpkg/status").is_some());
        assert_eq!(written("var/lib/dpkg/info/format").as_deref(), Some("1\n"));
        assert_eq!(
            written("var/lib/dpkg/info/libc6:amd64.md5sums").as_deref(),
            Some("00000000000000000000000000000001  usr/sbin/nginx\n"),
            "pruned files are not listed"
        );
    }
}
