//! Content-addressed step caches: the output of a build step stored under the SHA-256 of
//! everything that goes into it, so a warm build skips the work.
//!
//! ```text
//! <cache>/steps/<step>/<key>     key = SHA-256 over jeos's identity and every input
//!   "jeos-step 1\n" <SHA-256 of the rest, 32 bytes> <sections: u64 length + bytes>...
//! ```
//!
//! Keys: [`StepKey`] hashes each input with a label and its length, so two different input
//! lists never share a key, and starts with jeos's identity (its version and the
//! running executable's size and modification time: a rebuilt jeos, whose code may write
//! different bytes, never reads an older jeos's entries).
//!
//! Entries are untrusted when read (a killed writer, a damaged disk, another tool): the
//! digest over the sections must match, the sections must add up to the file exactly, and
//! the caller's decoder checks their contents. A damaged entry is removed and reported as
//! [`Lookup::Corrupt`]; the step then runs and stores a fresh entry. Writes go to a
//! temporary file renamed into place, so concurrent builds never see a partial entry.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use package_resolver::deb::{self, UnpackDir};
use package_resolver::lock::LockedPackage;

use crate::pipeline::{BuildContext, BuildError, KernelArtifacts, io_err};
use crate::plan::BuildPlan;

const HEADER: &[u8] = b"jeos-step 1\n";
/// Largest section count an entry may declare.
const MAX_SECTIONS: usize = 64;

/// Builds the key of one step's entry.
pub struct StepKey {
    step: &'static str,
    hasher: Sha256,
}

/// jeos's identity for cache keys (computed once).
fn identity() -> &'static str {
    static IDENTITY: OnceLock<String> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| fs::metadata(p).ok())
            .map(|m| {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{}:{mtime}", m.len())
            })
            .unwrap_or_default();
        format!("jeos {} {exe}", env!("CARGO_PKG_VERSION"))
    })
}

impl StepKey {
    /// A key for `step` (a file-name-safe step name).
    #[must_use]
    pub fn new(step: &'static str) -> Self {
        let mut key = Self {
            step,
            hasher: Sha256::new(),
        };
        key = key.input("jeos", identity().as_bytes());
        key.input("step", step.as_bytes())
    }

    /// Adds one input.
    #[must_use]
    pub fn input(mut self, label: &str, bytes: &[u8]) -> Self {
        for part in [label.as_bytes(), bytes] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
        self
    }

    fn finish(self) -> (&'static str, String) {
        let digest = self.hasher.finalize();
        (
            self.step,
            digest.iter().map(|b| format!("{b:02x}")).collect(),
        )
    }
}

/// What [`StepCache::get`] found.
#[derive(Debug)]
pub enum Lookup {
    /// An intact entry's sections.
    Hit(Vec<Vec<u8>>),
    /// No entry.
    Miss,
    /// A damaged entry (removed); why.
    Corrupt(&'static str),
}

/// The step caches under `<cache>/steps/`.
#[derive(Debug, Clone)]
pub struct StepCache {
    root: PathBuf,
}

/// A looked-up key: where its entry lives.
#[derive(Debug, Clone)]
pub struct Slot {
    path: PathBuf,
}

impl StepCache {
    /// The step caches of the jeos cache at `cache_root`.
    #[must_use]
    pub fn new(cache_root: &Path) -> Self {
        Self {
            root: cache_root.join("steps"),
        }
    }

    /// The slot of `key`.
    #[must_use]
    pub fn slot(&self, key: StepKey) -> Slot {
        let (step, hex) = key.finish();
        Slot {
            path: self.root.join(step).join(hex),
        }
    }

    /// The entry of `slot`, verified.
    #[must_use]
    pub fn get(&self, slot: &Slot) -> Lookup {
        let bytes = match fs::read(&slot.path) {
            Ok(b) => b,
            Err(_) => return Lookup::Miss,
        };
        match decode(&bytes) {
            Ok(sections) => Lookup::Hit(sections),
            Err(what) => {
                let _ = fs::remove_file(&slot.path);
                Lookup::Corrupt(what)
            }
        }
    }

    /// Removes a hit whose contents the caller's decoder rejected.
    pub fn discard(&self, slot: &Slot) {
        let _ = fs::remove_file(&slot.path);
    }

    /// Stores `sections` as the entry of `slot` (atomically; errors are ignored: a cache
    /// that cannot be written only makes the next build slower).
    pub fn put(&self, slot: &Slot, sections: &[&[u8]]) {
        let Some(dir) = slot.path.parent() else {
            return;
        };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
            return;
        };
        let bytes = encode(sections);
        if tmp.write_all(&bytes).is_ok() && tmp.as_file().sync_all().is_ok() {
            let _ = tmp.persist(&slot.path);
        }
    }
}

fn encode(sections: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for s in sections {
        body.extend_from_slice(&(s.len() as u64).to_le_bytes());
        body.extend_from_slice(s);
    }
    let mut out = HEADER.to_vec();
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    out
}

fn decode(bytes: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let rest = bytes.strip_prefix(HEADER).ok_or("bad header")?;
    let (digest, mut body) = rest.split_at_checked(32).ok_or("truncated")?;
    if Sha256::digest(body).as_slice() != digest {
        return Err("SHA-256 mismatch");
    }
    let mut sections = Vec::new();
    while !body.is_empty() {
        if sections.len() == MAX_SECTIONS {
            return Err("too many sections");
        }
        let (len, rest) = body.split_at_checked(8).ok_or("truncated length")?;
        let len = u64::from_le_bytes(len.try_into().map_err(|_| "truncated length")?);
        let len = usize::try_from(len).map_err(|_| "section too large")?;
        let (section, rest) = rest.split_at_checked(len).ok_or("truncated section")?;
        sections.push(section.to_vec());
        body = rest;
    }
    Ok(sections)
}

/// The `build_initramfs` step through its cache. The key: the kernel tree's key (the
/// SHA-256 of its packages; the tree was verified before this step), the recipe's
/// `[kernel]` and `[vm]` tables (they choose the modules and the driver checks),
/// guest-init's bytes and `SOURCE_DATE_EPOCH`. The entry holds the compressed initramfs
/// and what the report needs (kernel version, `vmlinuz` path, modules, missing modules).
pub(crate) fn cached_initramfs(
    ctx: &mut BuildContext<'_>,
    plan: &BuildPlan,
    kernel_dir: &Path,
    build: InitramfsBuilder,
) -> Result<KernelArtifacts, BuildError> {
    let cache = StepCache::new(ctx.cache.root());
    let key = StepKey::new("initramfs")
        .input(
            "kernel-tree",
            kernel_dir
                .file_name()
                .unwrap_or_default()
                .as_encoded_bytes(),
        )
        .input("kernel", format!("{:?}", ctx.recipe.kernel).as_bytes())
        .input("vm", format!("{:?}", ctx.recipe.vm).as_bytes())
        .input("modules", format!("{:?}", plan.modules).as_bytes())
        .input("guest-init", crate::GUEST_INIT)
        .input("epoch", &plan.epoch.to_le_bytes());
    let slot = cache.slot(key);
    match cache.get(&slot) {
        Lookup::Hit(sections) => {
            if let Some(kernel) = decode_initramfs(sections, kernel_dir)? {
                if !kernel.missing.is_empty() {
                    ctx.ui.info(&format!(
                        "kernel {} lacks {} (those devices will not be driven)",
                        kernel.version,
                        kernel.missing.join(", ")
                    ));
                }
                ctx.cache_hit = true;
                return Ok(kernel);
            }
            cache.discard(&slot);
            ctx.ui
                .warning("the cached initramfs is damaged (bad contents); building it again");
        }
        Lookup::Corrupt(what) => ctx.ui.warning(&format!(
            "the cached initramfs is damaged ({what}); building it again"
        )),
        Lookup::Miss => {}
    }
    let kernel = build(ctx, plan, kernel_dir)?;
    let meta = format!(
        "{}\n{}\n{}\n{}",
        kernel.version,
        kernel.vmlinuz_path.display(),
        kernel.missing.join(" "),
        kernel.modules.join("\n")
    );
    cache.put(&slot, &[&kernel.initramfs, meta.as_bytes()]);
    Ok(kernel)
}

/// The builder `cached_initramfs` runs on a miss.
pub(crate) type InitramfsBuilder =
    fn(&mut BuildContext<'_>, &BuildPlan, &Path) -> Result<KernelArtifacts, BuildError>;

/// An initramfs entry's sections; `None` when their contents are not what
/// [`cached_initramfs`] stores.
fn decode_initramfs(
    mut sections: Vec<Vec<u8>>,
    kernel_dir: &Path,
) -> Result<Option<KernelArtifacts>, BuildError> {
    if sections.len() != 2 {
        return Ok(None);
    }
    let Ok(meta) = String::from_utf8(sections.pop().unwrap_or_default()) else {
        return Ok(None);
    };
    let initramfs = sections.pop().unwrap_or_default();
    let mut lines = meta.split('\n');
    let (Some(version), Some(vmlinuz), Some(missing)) = (lines.next(), lines.next(), lines.next())
    else {
        return Ok(None);
    };
    let vmlinuz_path = PathBuf::from(vmlinuz);
    // The path is joined to the kernel tree: it must stay inside.
    if vmlinuz_path.as_os_str().is_empty()
        || !vmlinuz_path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Ok(None);
    }
    let host = kernel_dir.join(&vmlinuz_path);
    let vmlinuz = fs::read(&host).map_err(io_err("read", &host))?;
    let kernel = KernelArtifacts {
        version: version.to_owned(),
        vmlinuz,
        vmlinuz_path,
        modules: lines.filter(|l| !l.is_empty()).map(str::to_owned).collect(),
        missing: missing.split_whitespace().map(str::to_owned).collect(),
        initramfs,
    };
    Ok(Some(kernel))
}

/// Whether the step cache entry at `path` is intact (`jeos cache verify`): its digest,
/// and for a root filesystem entry its tree's digest, re-computed from every byte.
#[must_use]
pub fn verify_entry(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let Ok(sections) = decode(&bytes) else {
        return false;
    };
    let tree = path.with_extension("tree");
    if path.parent().and_then(Path::file_name) != Some("rootfs".as_ref()) {
        return true;
    }
    sections.len() == 2
        && crate::unpacked::tree_digest(&tree).is_ok_and(|d| d.as_bytes() == sections[1])
}

/// What a root filesystem entry records about its unpacking (the tree is stored beside
/// it, `<key>.tree/`).
#[derive(serde::Serialize, serde::Deserialize)]
struct RootfsMeta {
    manifest: deb::Manifest,
    overlaps: Vec<deb::Overlap>,
    packages: Vec<deb::PackageReport>,
}

/// The unpacking of `unpack_rootfs` through its cache: the packages unpacked into `root`.
///
/// The key: the packages in unpacking order (name, version, SHA-256 of the `.deb`, which
/// fixes every byte unpacked) and the merged-/usr layout. The entry holds the unpacker's
/// manifest, overlaps and package reports and the digest of the unpacked tree, stored
/// beside it as `<key>.tree/`. A hit copies that tree into `root` (customisation changes
/// `root`, never the cache), hashing every file as it is copied: the tree is used only
/// when the copy's digest is the recorded one, so a changed or damaged tree costs the
/// unpacking again, never a wrong image.
pub(crate) fn cached_rootfs(
    ctx: &mut BuildContext<'_>,
    root: &Path,
    packages: &[&LockedPackage],
    unpack: impl Fn(&Path) -> Result<UnpackDir, BuildError>,
) -> Result<UnpackDir, BuildError> {
    let cache = StepCache::new(ctx.cache.root());
    let mut key = StepKey::new("rootfs").input("merged-usr", b"true");
    for p in packages {
        let id = format!("{} {} {}", p.name, p.version, p.sha256);
        key = key.input("package", id.as_bytes());
    }
    let slot = cache.slot(key);
    let tree = slot.path.with_extension("tree");
    match cache.get(&slot) {
        Lookup::Hit(sections) => match restore_rootfs(sections, &tree, root) {
            Ok(staging) => {
                ctx.cache_hit = true;
                return Ok(staging);
            }
            Err(why) => {
                cache.discard(&slot);
                ctx.ui.warning(&format!(
                    "the cached root filesystem tree is damaged ({why}); unpacking it again"
                ));
                empty_dir(root)?;
            }
        },
        Lookup::Corrupt(what) => ctx.ui.warning(&format!(
            "the cached root filesystem tree is damaged ({what}); unpacking it again"
        )),
        Lookup::Miss => {}
    }
    let _ = fs::remove_dir_all(&tree);
    let Some(dir) = tree.parent().filter(|d| fs::create_dir_all(d).is_ok()) else {
        return unpack(root);
    };
    let Ok(tmp) = tempfile::Builder::new().prefix(".unpack-").tempdir_in(dir) else {
        return unpack(root);
    };
    let unpacked = unpack(tmp.path())?;
    let digest = crate::unpacked::copy_tree(tmp.path(), root).map_err(io_err("copy", root))?;
    let meta = RootfsMeta {
        manifest: unpacked.manifest().clone(),
        overlaps: unpacked.overlaps().to_vec(),
        packages: unpacked.packages().to_vec(),
    };
    if let Ok(json) = serde_json::to_vec(&meta) {
        let kept = tmp.keep();
        if fs::rename(&kept, &tree).is_ok() {
            cache.put(&slot, &[&json, digest.as_bytes()]);
        } else {
            let _ = fs::remove_dir_all(&kept);
        }
    }
    Ok(UnpackDir::from_parts(
        root,
        meta.manifest,
        meta.overlaps,
        meta.packages,
    ))
}

/// Copies an entry's tree into `root` and checks it; why not when it cannot be used.
fn restore_rootfs(
    mut sections: Vec<Vec<u8>>,
    tree: &Path,
    root: &Path,
) -> Result<UnpackDir, String> {
    if sections.len() != 2 {
        return Err("bad contents".into());
    }
    let digest = sections.pop().unwrap_or_default();
    let meta: RootfsMeta = serde_json::from_slice(&sections.pop().unwrap_or_default())
        .map_err(|_| "bad contents".to_owned())?;
    let copied = crate::unpacked::copy_tree(tree, root).map_err(|e| e.to_string())?;
    if copied.as_bytes() != digest.as_slice() {
        return Err("the tree changed since it was unpacked".into());
    }
    Ok(UnpackDir::from_parts(
        root,
        meta.manifest,
        meta.overlaps,
        meta.packages,
    ))
}

/// Empties `dir` (a failed restore's partial copy).
fn empty_dir(dir: &Path) -> Result<(), BuildError> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(io_err("create", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_input_and_its_boundaries() {
        let a = StepKey::new("t")
            .input("x", b"ab")
            .input("y", b"c")
            .finish();
        let b = StepKey::new("t")
            .input("x", b"a")
            .input("y", b"bc")
            .finish();
        let c = StepKey::new("t")
            .input("x", b"ab")
            .input("y", b"c")
            .finish();
        assert_ne!(a.1, b.1);
        assert_eq!(a.1, c.1);
        assert_ne!(
            a.1,
            StepKey::new("u")
                .input("x", b"ab")
                .input("y", b"c")
                .finish()
                .1
        );
    }

    #[test]
    fn round_trip_and_damaged_entries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StepCache::new(dir.path());
        let slot = cache.slot(StepKey::new("t").input("x", b"1"));
        assert!(matches!(cache.get(&slot), Lookup::Miss));
        cache.put(&slot, &[b"one", b"", b"three"]);
        let Lookup::Hit(sections) = cache.get(&slot) else {
            panic!("expected a hit");
        };
        assert_eq!(
            sections,
            vec![b"one".to_vec(), Vec::new(), b"three".to_vec()]
        );
        let mut bytes = fs::read(&slot.path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&slot.path, &bytes).unwrap();
        assert!(matches!(
            cache.get(&slot),
            Lookup::Corrupt("SHA-256 mismatch")
        ));
        assert!(!slot.path.exists());
        for bad in [&b""[..], b"jeos-step 1\n", b"other"] {
            assert!(decode(bad).is_err());
        }
        // A body whose digest matches but whose lengths lie.
        let mut body = 100u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"short");
        let mut lying = HEADER.to_vec();
        lying.extend_from_slice(&Sha256::digest(&body));
        lying.extend_from_slice(&body);
        assert_eq!(decode(&lying), Err("truncated section"));
    }
}
