//! What `jeos test` accepts, and how each kind becomes raw disk images to boot:
//!
//! | argument | images booted |
//! |---|---|
//! | `recipe.toml` | `dist/NAME-VERSION/NAME-VERSION.raw`, built first when missing or older than the recipe |
//! | an appliance directory (`dist/NAME-VERSION/`) | its `.raw` (else its `.qcow2`, `.vmdk` or `.ova`) |
//! | `dist/` | every appliance directory in it |
//! | `.raw` | itself |
//! | `.qcow2`, `.vmdk` | converted to a temporary raw image (`qemu-img convert`) |
//! | `.ova` | its disk, taken out of the tar and converted |
//!
//! Anything else is an error that says what is accepted. The file's first bytes decide,
//! not only its name, so a qcow2 renamed `.raw` gets a clear message too.

use std::path::{Path, PathBuf};
use std::process::Command;

use miette::Diagnostic;

/// One image to boot.
#[derive(Debug)]
pub struct TestImage {
    /// The name shown in results (`nginx-1.0.0`).
    pub name: String,
    /// What the user named (for messages).
    pub origin: PathBuf,
    /// The raw image to boot.
    pub raw: PathBuf,
    /// The file whose directory holds the image's OVF, if any ([`crate::ovf_hardware::read_beside`]):
    /// the image itself, the `.qcow2` or `.vmdk` that was converted, or the OVA's own
    /// descriptor extracted beside the disk.
    pub ovf_near: PathBuf,
    /// Holds a converted image; removed when dropped.
    _scratch: Option<tempfile::TempDir>,
}

/// Disk formats recognised by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// GPT/MBR raw disk.
    Raw,
    /// QEMU copy-on-write v2/v3 (`QFI\xfb`).
    Qcow2,
    /// VMDK sparse extent (`KDMV`).
    Vmdk,
    /// A tar archive (`ustar` at offset 257): an OVA.
    Ova,
}

/// Why the argument of `jeos test` cannot be tested.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum TestTargetError {
    /// Nothing at that path.
    #[error("`{}` does not exist", .path.display())]
    #[diagnostic(help(
        "pass a recipe, an appliance directory, `dist/`, or a `.raw`, `.qcow2`, `.vmdk` or `.ova` image"
    ))]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A file of a kind `jeos test` does not boot.
    #[error("cannot test `{}`: {what}", .path.display())]
    #[diagnostic(help(
        "pass a recipe (`.toml`), an appliance directory, `dist/`, or a `.raw`, `.qcow2`, `.vmdk` or `.ova` image"
    ))]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: String,
    },
    /// A directory without images or appliance directories.
    #[error("`{}` holds no appliance", .path.display())]
    #[diagnostic(help(
        "expected a `.raw`, `.qcow2`, `.vmdk` or `.ova` in it, or directories written by `jeos build` (as in `dist/`)"
    ))]
    EmptyDir {
        /// The directory.
        path: PathBuf,
    },
    /// Reading a file or directory failed.
    #[error("cannot read `{}`", .path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Converting an image to raw failed.
    #[error("cannot convert `{}` to a raw image: {reason}", .path.display())]
    #[diagnostic(help("converting qcow2 and VMDK images needs `qemu-img` (Debian: qemu-utils)"))]
    Convert {
        /// The image.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> TestTargetError + '_ {
    move |source| TestTargetError::Read {
        path: path.to_owned(),
        source,
    }
}

/// The disk kind from the first 512 bytes (pure).
pub fn sniff(head: &[u8]) -> Option<DiskKind> {
    if head.starts_with(b"QFI\xfb") {
        Some(DiskKind::Qcow2)
    } else if head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile") {
        Some(DiskKind::Vmdk)
    } else if head.get(257..262) == Some(b"ustar") {
        Some(DiskKind::Ova)
    } else if head.get(510..512) == Some(&[0x55, 0xAA]) {
        Some(DiskKind::Raw)
    } else {
        None
    }
}

fn sniff_file(path: &Path) -> Result<Option<DiskKind>, TestTargetError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(read_err(path))?;
    Ok(sniff(&head))
}

/// Whether `path` names a recipe (`.toml`).
pub fn is_recipe(path: &Path) -> bool {
    path.is_file() && path.extension().is_some_and(|e| e == "toml")
}

/// The images an image file, appliance directory or `dist/` stands for.
pub fn images_of(path: &Path) -> Result<Vec<TestImage>, TestTargetError> {
    if path.is_dir() {
        return images_of_dir(path);
    }
    if !path.exists() {
        return Err(TestTargetError::Missing {
            path: path.to_owned(),
        });
    }
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "appliance".into());
    let name = name.strip_suffix("-disk1").unwrap_or(&name).to_owned();
    let kind = sniff_file(path)?.ok_or_else(|| TestTargetError::Unsupported {
        path: path.to_owned(),
        what: "not a disk image (no partition table, qcow2, VMDK or OVA header)".into(),
    })?;
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let expected = match extension.as_str() {
        "raw" | "img" => Some(DiskKind::Raw),
        "qcow2" => Some(DiskKind::Qcow2),
        "vmdk" => Some(DiskKind::Vmdk),
        "ova" => Some(DiskKind::Ova),
        _ => None,
    };
    if let Some(expected) = expected
        && expected != kind
    {
        return Err(TestTargetError::Unsupported {
            path: path.to_owned(),
            what: format!("its name says {expected:?} but its content is {kind:?}"),
        });
    }
    let (raw, scratch) = match kind {
        DiskKind::Raw => (path.to_owned(), None),
        DiskKind::Qcow2 | DiskKind::Vmdk => convert(path, path)?,
        DiskKind::Ova => {
            let (vmdk, dir) = vmdk_of_ova(path)?;
            // The converted image's directory must live until the rename (`_` would drop
            // it, and the file with it, at once).
            let (raw, _converted) = convert(path, &vmdk)?;
            let moved = dir.path().join("disk.raw");
            std::fs::rename(&raw, &moved).map_err(read_err(&moved))?;
            (moved, Some(dir))
        }
    };
    let ovf_near = match kind {
        DiskKind::Qcow2 | DiskKind::Vmdk => path.to_owned(),
        DiskKind::Raw | DiskKind::Ova => raw.clone(),
    };
    Ok(vec![TestImage {
        name,
        origin: path.to_owned(),
        raw,
        ovf_near,
        _scratch: scratch,
    }])
}

fn images_of_dir(dir: &Path) -> Result<Vec<TestImage>, TestTargetError> {
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let path = entry.map_err(read_err(dir))?.path();
        if path.is_dir() {
            subdirs.push(path);
        } else {
            files.push(path);
        }
    }
    files.sort();
    subdirs.sort();
    // An appliance directory: the raw image, else the best other format.
    for extension in ["raw", "qcow2", "vmdk", "ova"] {
        let found: Vec<&PathBuf> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == extension))
            .collect();
        if let Some(first) = found.first() {
            return images_of(first);
        }
    }
    // `dist/`: every appliance directory in it.
    let mut images = Vec::new();
    for sub in subdirs {
        match images_of_dir(&sub) {
            Ok(mut found) => images.append(&mut found),
            Err(TestTargetError::EmptyDir { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    if images.is_empty() {
        return Err(TestTargetError::EmptyDir {
            path: dir.to_owned(),
        });
    }
    Ok(images)
}

/// `qemu-img convert -O raw` into a temporary directory.
fn convert(
    origin: &Path,
    image: &Path,
) -> Result<(PathBuf, Option<tempfile::TempDir>), TestTargetError> {
    let failed = |reason: String| TestTargetError::Convert {
        path: origin.to_owned(),
        reason,
    };
    let dir = tempfile::Builder::new()
        .prefix("jeos-test-image-")
        .tempdir()
        .map_err(|e| failed(e.to_string()))?;
    let raw = dir.path().join("disk.raw");
    let output = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(&raw)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| failed(format!("cannot run `qemu-img`: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(
            stderr.trim().lines().last().unwrap_or("failed").to_owned(),
        ));
    }
    Ok((raw, Some(dir)))
}

/// Takes the (first) `.vmdk` and the `.ovf` out of an OVA (a tar) into a temporary
/// directory.
fn vmdk_of_ova(ova: &Path) -> Result<(PathBuf, tempfile::TempDir), TestTargetError> {
    let failed = |reason: String| TestTargetError::Convert {
        path: ova.to_owned(),
        reason,
    };
    let dir = tempfile::Builder::new()
        .prefix("jeos-test-ova-")
        .tempdir()
        .map_err(|e| failed(e.to_string()))?;
    // GNU tar refuses absolute names and `..` members by default.
    let extract = |pattern: &str| {
        Command::new("tar")
            .arg("-xf")
            .arg(ova)
            .arg("-C")
            .arg(dir.path())
            .args(["--no-same-owner", "--wildcards", pattern])
            .env("LC_ALL", "C")
            .output()
    };
    let output = extract("*.vmdk").map_err(|e| failed(format!("cannot run `tar`: {e}")))?;
    if !output.status.success() {
        return Err(failed(format!(
            "no disk in the OVA: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    // The descriptor too, for the hardware it declares (an OVA without one still boots).
    let _ = extract("*.ovf");
    let vmdk = std::fs::read_dir(dir.path())
        .map_err(read_err(dir.path()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "vmdk") && p.is_file())
        .ok_or_else(|| failed("the OVA holds no `.vmdk`".into()))?;
    Ok((vmdk, dir))
}

/// The image of a recipe: `dist/NAME-VERSION/NAME-VERSION.raw`, built first (as
/// `jeos build RECIPE` would) when it is missing or older than the recipe or its lock.
pub(super) fn recipe_images(
    recipe_path: &Path,
    session: &mut super::Session,
) -> miette::Result<Option<Vec<TestImage>>> {
    use clap::{Args, FromArgMatches};
    let Some(recipe) = super::load_recipe_or_report(recipe_path, session) else {
        return Ok(None);
    };
    let name = format!(
        "{}-{}",
        recipe.appliance.name.as_str(),
        recipe.appliance.version
    );
    let raw = Path::new("dist").join(&name).join(format!("{name}.raw"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock = crate::resolve::lock_path_for(recipe_path);
    let fresh = modified(&raw).is_some_and(|built| {
        [modified(recipe_path), modified(&lock)]
            .into_iter()
            .flatten()
            .all(|input| input <= built)
    });
    if !fresh {
        if !session.global.quiet {
            session.printer.stderr_line(&format!(
                "`{}` is missing or older than the recipe: building it first",
                raw.display()
            ));
        }
        let command = super::build::BuildArgs::augment_args(clap::Command::new("build"));
        let matches = command
            .try_get_matches_from([std::ffi::OsStr::new("build"), recipe_path.as_os_str()])
            .map_err(|e| miette::miette!("{e}"))?;
        let args = super::build::BuildArgs::from_arg_matches(&matches)
            .map_err(|e| miette::miette!("{e}"))?;
        if super::build::build(&args, session)? != super::ExitStatus::Success {
            return Ok(None);
        }
    }
    Ok(Some(vec![TestImage {
        name,
        origin: raw.clone(),
        ovf_near: raw.clone(),
        raw,
        _scratch: None,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_formats_by_content() {
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(sniff(&mbr), Some(DiskKind::Raw));
        assert_eq!(sniff(b"QFI\xfb\0\0\0\x03"), Some(DiskKind::Qcow2));
        assert_eq!(sniff(b"KDMV\x03\0\0\0"), Some(DiskKind::Vmdk));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Some(DiskKind::Ova));
        assert_eq!(sniff(b"hello"), None);
    }

    #[test]
    fn clear_errors_for_what_is_not_an_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").expect("write");
        let err = images_of(&text).expect_err("not an image");
        assert!(err.to_string().contains("not a disk image"), "{err}");
        let qcow = dir.path().join("disk.raw");
        std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03").expect("write");
        let err = images_of(&qcow).expect_err("mislabelled");
        assert!(err.to_string().contains("content is Qcow2"), "{err}");
        let err = images_of(dir.path().join("empty").as_path()).expect_err("missing");
        assert!(matches!(err, TestTargetError::Missing { .. }));
        let empty = dir.path().join("dist");
        std::fs::create_dir_all(empty.join("nothing")).expect("mkdir");
        assert!(matches!(
            images_of(&empty).expect_err("empty"),
            TestTargetError::EmptyDir { .. }
        ));
    }

    #[test]
    fn dist_lists_every_appliance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        for name in ["a-1.0", "b-2.0"] {
            let sub = dir.path().join(name);
            std::fs::create_dir_all(&sub).expect("mkdir");
            std::fs::write(sub.join(format!("{name}.raw")), &mbr).expect("write");
            std::fs::write(sub.join(format!("{name}.ovf")), "<xml/>").expect("write");
        }
        let images = images_of(dir.path()).expect("two appliances");
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a-1.0", "b-2.0"]);
    }
}
