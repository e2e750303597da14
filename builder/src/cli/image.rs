//! `jeos ls` and `jeos cat`, and what `inspect` and `diff` share: opening an image of any
//! format (`.raw`, `.qcow2`, `.vmdk`, `.ova`) offline, without root or mounts, and turning
//! the readers' errors into diagnostics with a hint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use image_writer::image::rootfs::{FsEntry, FsKind, RootFs, RootFsError};
use image_writer::image::{DiskImage, ImageError, open_image};
use miette::Diagnostic;

use super::{ExitStatus, Session};

/// `jeos ls`
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  jeos ls dist/nginx-1.0.0/nginx-1.0.0.qcow2 /etc\n  jeos ls -R dist/nginx-1.0.0/nginx-1.0.0.ova /var/www"
)]
pub struct LsArgs {
    /// Image file: `.raw`, `.qcow2`, `.vmdk` or `.ova`.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Absolute path inside the image.
    #[arg(value_name = "PATH", default_value = "/")]
    pub path: String,
    /// List subdirectories too.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// `jeos cat`
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  jeos cat dist/nginx-1.0.0/nginx-1.0.0.vmdk /etc/os-release")]
pub struct CatArgs {
    /// Image file: `.raw`, `.qcow2`, `.vmdk` or `.ova`.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Absolute paths of files inside the image (symlinks are followed inside the image).
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<String>,
}

/// Why an image tool failed.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ImageToolError {
    /// Not an image, or a corrupt one.
    #[error(transparent)]
    #[diagnostic(help(
        "pass a `.raw`, `.qcow2`, `.vmdk` or `.ova` written by `jeos build` (in `dist/<name>-<version>/`)"
    ))]
    Image(ImageError),
    /// A path that does not exist, or is of the wrong kind.
    #[error("{cause}")]
    #[diagnostic(help("list the directory with `jeos ls {} DIR`", .image.display()))]
    Path {
        /// The image.
        image: PathBuf,
        /// What is wrong with the path.
        cause: RootFsError,
    },
    /// The root file system cannot be read.
    #[error(transparent)]
    #[diagnostic(help("check the image with `e2fsck -fn` on the raw disk's root partition"))]
    RootFs(RootFsError),
}

pub(super) fn image_error(err: ImageError) -> ImageToolError {
    ImageToolError::Image(err)
}

pub(super) fn root_fs_error(image: &Path, err: RootFsError) -> ImageToolError {
    match err {
        RootFsError::Image(e) => ImageToolError::Image(e),
        e @ (RootFsError::NotFound { .. }
        | RootFsError::IsADirectory { .. }
        | RootFsError::NotAFile { .. }
        | RootFsError::BadPath { .. }) => ImageToolError::Path {
            image: image.to_owned(),
            cause: e,
        },
        e => ImageToolError::RootFs(e),
    }
}

/// An opened image and its root file system.
pub(super) struct Opened {
    pub image: DiskImage,
    pub root: RootFs,
}

pub(super) fn open(path: &Path) -> Result<Opened, ImageToolError> {
    let image = open_image(path).map_err(image_error)?;
    let root = image.root_fs().map_err(|e| root_fs_error(path, e))?;
    Ok(Opened { image, root })
}

/// uid → name and gid → name from the image's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Default)]
pub(super) struct Names {
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

fn id_names(text: &str) -> BTreeMap<u32, String> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            Some((id, name.to_owned()))
        })
        .collect()
}

impl Names {
    pub(super) fn read(root: &RootFs) -> Self {
        let text =
            |p: &str| String::from_utf8_lossy(&root.read(p).unwrap_or_default()).into_owned();
        Self {
            users: id_names(&text("/etc/passwd")),
            groups: id_names(&text("/etc/group")),
        }
    }

    fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

/// `rwxr-sr-x` style permission string with the type letter.
pub(super) fn mode_string(kind: FsKind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind.letter());
    for (shift, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => lower,
            (true, false) => upper,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `YYYY-MM-DD HH:MM` (UTC) for seconds since the epoch.
pub(super) fn format_time(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    let (year, month, day) = package_resolver::release::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rest / 3600,
        (rest % 3600) / 60
    )
}

fn entry_json(entry: &FsEntry, names: &Names) -> serde_json::Value {
    let mut value = serde_json::to_value(entry).expect("entries serialise");
    value["user"] = names.user(entry.uid).into();
    value["group"] = names.group(entry.gid).into();
    value["mode"] = format!("{:04o}", entry.mode).into();
    value
}

fn entry_line(entry: &FsEntry, names: &Names) -> String {
    let target = entry
        .target
        .as_ref()
        .map(|t| format!(" -> {t}"))
        .unwrap_or_default();
    format!(
        "{} {:<8} {:<8} {:>10} {} {}{target}",
        mode_string(entry.kind, entry.mode),
        names.user(entry.uid),
        names.group(entry.gid),
        entry.size,
        format_time(entry.mtime),
        entry.path
    )
}

pub(super) fn ls(args: &LsArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let opened = open(&args.image)?;
    let names = Names::read(&opened.root);
    let root_err = |e| root_fs_error(&args.image, e);
    let entries = if args.recursive {
        let top = opened.root.stat(&args.path).map_err(root_err)?;
        let prefix = format!("{}/", top.path.trim_end_matches('/'));
        let mut all = opened.root.walk().map_err(root_err)?;
        all.retain(|e| e.path == top.path || e.path.starts_with(&prefix));
        all
    } else {
        opened.root.list(&args.path).map_err(root_err)?
    };
    if session.global.json {
        let list: Vec<_> = entries.iter().map(|e| entry_json(e, &names)).collect();
        session.printer.stdout_line(
            &serde_json::json!({ "image": args.image, "path": args.path, "entries": list })
                .to_string(),
        );
    } else {
        for entry in &entries {
            session.printer.stdout_line(&entry_line(entry, &names));
        }
    }
    Ok(ExitStatus::Success)
}

pub(super) fn cat(args: &CatArgs, session: &mut Session) -> miette::Result<ExitStatus> {
    let opened = open(&args.image)?;
    let mut files = Vec::new();
    for path in &args.paths {
        let bytes = opened
            .root
            .read(path)
            .map_err(|e| root_fs_error(&args.image, e))?;
        files.push((path, bytes));
    }
    if session.global.json {
        let list: Vec<_> = files
            .iter()
            .map(|(path, bytes)| match std::str::from_utf8(bytes) {
                Ok(text) => serde_json::json!({ "path": path, "size": bytes.len(), "text": text }),
                Err(_) => {
                    serde_json::json!({ "path": path, "size": bytes.len(), "hex": hex(bytes) })
                }
            })
            .collect();
        session
            .printer
            .stdout_line(&serde_json::json!({ "image": args.image, "files": list }).to_string());
    } else {
        for (_, bytes) in &files {
            session.printer.stdout_bytes(bytes);
        }
    }
    Ok(ExitStatus::Success)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_render_like_ls() {
        assert_eq!(mode_string(FsKind::File, 0o644), "-rw-r--r--");
        assert_eq!(mode_string(FsKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(FsKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(FsKind::File, 0o2640), "-rw-r-S---");
        assert_eq!(mode_string(FsKind::Symlink, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13");
    }

    #[test]
    fn passwd_names() {
        let names = id_names(
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\nbad\n",
        );
        assert_eq!(names.get(&33).map(String::as_str), Some("www-data"));
        assert_eq!(names.len(), 2);
    }
}
