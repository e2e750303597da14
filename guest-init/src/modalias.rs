//! Modalias-driven module loading in the initramfs: load a driver only when a device that
//! is present matches one of its aliases, instead of every module of the closure.
//!
//! Inputs, written by builder into the initramfs for exactly the modules it packs:
//! - `/lib/modules/jeos.list`: module paths in load order (dependencies first);
//! - `/lib/modules/<release>/modules.alias`: `alias <pattern> <module>` lines;
//! - `/lib/modules/<release>/modules.dep`: `<path>: <path> <path>...` lines.
//!
//! The devices are the `modalias` files of `/sys/bus/*/devices/*/`. A module is loaded when
//! one of its device aliases (`bus:...`; not `devname:` or `symbol:`) matches one, together
//! with its dependencies. A module with no device alias that no other packed module depends
//! on (a filesystem such as ext4) is always loaded, and so is an input handler (`evdev`,
//! aliases only on `input:`), which guest-init needs for the ACPI power button. Loading a bus driver adds devices (a
//! PCI virtio device brings its virtio device, a SCSI host its disks), so [`Loader::round`]
//! is called again while the root device is awaited.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One packed module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedModule {
    /// Name (`-` normalised to `_`).
    pub name: String,
    /// Path relative to `/lib/modules/<release>/`.
    pub path: PathBuf,
    /// Device alias patterns.
    pub aliases: Vec<String>,
    /// Indexes of the modules it depends on.
    pub depends: Vec<usize>,
}

/// The packed modules with their aliases and dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleIndex {
    /// In load order.
    pub modules: Vec<PackedModule>,
}

/// `kernel/drivers/net/e1000/e1000.ko` → `e1000`; `-` becomes `_` as in the kernel.
pub fn module_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = file.split(".ko").next().unwrap_or_default();
    stem.replace('-', "_")
}

/// Whether an alias names a device (`pci:...`, `virtio:...`, `acpi*:...`), as opposed to a
/// name another module requests (`fs-ext4`, `crypto-crc32c`, `devname:...`, `symbol:...`).
pub fn is_device_alias(alias: &str) -> bool {
    alias.contains(':') && !alias.starts_with("devname:") && !alias.starts_with("symbol:")
}

impl ModuleIndex {
    /// Builds the index from the three files' text; unknown names and malformed lines are
    /// skipped (the list itself decides what exists).
    pub fn parse(list: &[PathBuf], alias_text: &str, dep_text: &str) -> ModuleIndex {
        let mut modules: Vec<PackedModule> = list
            .iter()
            .map(|path| PackedModule {
                name: module_name(path),
                path: path.clone(),
                aliases: Vec::new(),
                depends: Vec::new(),
            })
            .collect();
        let by_name = |modules: &[PackedModule], name: &str| {
            let name = name.replace('-', "_");
            modules.iter().position(|m| m.name == name)
        };
        for line in alias_text.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(name), None) =
                (words.next(), words.next(), words.next(), words.next())
                && is_device_alias(pattern)
                && let Some(index) = by_name(&modules, name)
            {
                modules[index].aliases.push(pattern.to_owned());
            }
        }
        for line in dep_text.lines() {
            let Some((module, deps)) = line.split_once(':') else {
                continue;
            };
            let Some(index) = by_name(&modules, &module_name(Path::new(module.trim()))) else {
                continue;
            };
            let deps: Vec<usize> = deps
                .split_whitespace()
                .filter_map(|d| by_name(&modules, &module_name(Path::new(d))))
                .filter(|&d| d != index)
                .collect();
            modules[index].depends = deps;
        }
        ModuleIndex { modules }
    }

    /// Modules to load for the present `modaliases`, minus `loaded`, in load order.
    pub fn select(&self, modaliases: &[String], loaded: &BTreeSet<usize>) -> Vec<usize> {
        let needed_by_others: BTreeSet<usize> = self
            .modules
            .iter()
            .flat_map(|m| m.depends.iter().copied())
            .collect();
        let mut wanted = BTreeSet::new();
        let mut stack: Vec<usize> = (0..self.modules.len())
            .filter(|&i| {
                let module = &self.modules[i];
                if module.aliases.is_empty() {
                    !needed_by_others.contains(&i)
                } else if module.aliases.iter().all(|a| a.starts_with("input:")) {
                    // An input handler (evdev: the power button's `/dev/input/event*`):
                    // the input devices it binds to appear only once their drivers are
                    // loaded, and not under `/sys/bus`, so it is always loaded.
                    true
                } else {
                    module
                        .aliases
                        .iter()
                        .any(|p| modaliases.iter().any(|m| glob_match(p, m)))
                }
            })
            .collect();
        while let Some(index) = stack.pop() {
            if wanted.insert(index) {
                stack.extend(self.modules[index].depends.iter().copied());
            }
        }
        wanted.difference(loaded).copied().collect()
    }
}

/// Shell-style matching as modules.alias uses it: `*`, `?` and `[...]` classes.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                backtrack = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => match_class(p, pi, t[ti]),
            Some(&c) if c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match (step, backtrack) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((star, at))) => {
                pi = star + 1;
                ti = at + 1;
                backtrack = Some((star, at + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `p[start] == b'['`; the index after the
/// class on a match. An unterminated class matches nothing.
fn match_class(p: &[u8], start: usize, c: u8) -> Option<usize> {
    let mut i = start + 1;
    let negate = p.get(i) == Some(&b'!') || p.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while let Some(&b) = p.get(i) {
        if b == b']' && !first {
            return (matched != negate).then_some(i + 1);
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&e| e != b']') {
            matched |= (b..=p[i + 2]).contains(&c);
            i += 3;
        } else {
            matched |= b == c;
            i += 1;
        }
    }
    None
}

/// Every `/sys/bus/*/devices/*/modalias`, sorted.
pub fn present_modaliases(sys_bus: &Path) -> Vec<String> {
    let mut found = BTreeSet::new();
    for bus in std::fs::read_dir(sys_bus).into_iter().flatten().flatten() {
        let devices = bus.path().join("devices");
        for device in std::fs::read_dir(devices).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read_to_string(device.path().join("modalias")) {
                let text = text.trim();
                if !text.is_empty() {
                    found.insert(text.to_owned());
                }
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
        assert!(!glob_match(
            "pci:v00008086d0000100Esv*sd*bc*sc*i*",
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
        assert!(glob_match("acpi*:LNRO0005:*", "acpi:LNRO0005:"));
        assert!(glob_match("scsi:t-0x0[0e]*", "scsi:t-0x0e"));
        assert!(!glob_match("scsi:t-0x0[!0e]*", "scsi:t-0x00"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a[bc", "ab"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("abc", "ab"));
    }

    fn index() -> ModuleIndex {
        let list: Vec<PathBuf> = [
            "kernel/virtio_ring.ko",
            "kernel/virtio.ko",
            "kernel/virtio_pci.ko",
            "kernel/virtio_blk.ko",
            "kernel/e1000.ko",
            "kernel/ext4.ko",
            "kernel/crc16.ko",
            "kernel/evdev.ko",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let aliases = "# comment\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
            alias virtio:d00000002v* virtio_blk\nalias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
            alias fs-ext4 ext4\nalias devname:x virtio\nmalformed\n\
            alias input:b*v*p*e*-e*k*r*a*m*l*s*f*w* evdev\n";
        let deps = "kernel/virtio.ko: kernel/virtio_ring.ko\n\
            kernel/virtio_pci.ko: kernel/virtio.ko kernel/virtio_ring.ko\n\
            kernel/virtio_blk.ko: kernel/virtio.ko kernel/virtio_ring.ko\n\
            kernel/ext4.ko: kernel/crc16.ko\nkernel/absent.ko: kernel/virtio.ko\n";
        ModuleIndex::parse(&list, aliases, deps)
    }

    #[test]
    fn loads_matching_drivers_with_dependencies_in_rounds() {
        let index = index();
        assert_eq!(index.modules[4].name, "e1000");
        let pci = ["pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00".to_owned()];
        let mut loaded = BTreeSet::new();
        let first = index.select(&pci, &loaded);
        // virtio_ring, virtio, virtio_pci, ext4 (always: no device alias), crc16 (its dep),
        // evdev (an input handler: always).
        assert_eq!(first, vec![0, 1, 2, 5, 6, 7]);
        loaded.extend(first);
        let mut devices = pci.to_vec();
        devices.push("virtio:d00000002v00001AF4".to_owned());
        assert_eq!(index.select(&devices, &loaded), vec![3]);
        loaded.insert(3);
        assert!(index.select(&devices, &loaded).is_empty());
    }

    #[test]
    fn module_names_and_alias_kinds() {
        assert_eq!(
            module_name(Path::new("kernel/drivers/ata/ata-piix.ko.xz")),
            "ata_piix"
        );
        assert!(is_device_alias("cpu:type:x86,ven*"));
        assert!(!is_device_alias("fs-ext4"));
        assert!(!is_device_alias("devname:mapper/control"));
    }

    #[test]
    fn reads_sysfs_modaliases() {
        let dir = std::env::temp_dir().join(format!("jeos-modalias-{}", std::process::id()));
        let device = dir.join("pci/devices/0000:00:01.0");
        std::fs::create_dir_all(&device).unwrap();
        std::fs::write(device.join("modalias"), "pci:v1\n").unwrap();
        std::fs::create_dir_all(dir.join("virtio/devices/virtio0")).unwrap();
        assert_eq!(present_modaliases(&dir), vec!["pci:v1".to_owned()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
