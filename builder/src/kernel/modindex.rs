//! The initramfs's module index: for exactly the packed modules, a `modules.alias`
//! (`alias <pattern> <module>`) and a `modules.dep` (`<path>: <path>...`) in the formats
//! kmod uses, so guest-init loads only the drivers whose alias matches a device present
//! (`/sys/bus/*/devices/*/modalias`) together with what they need.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{ModuleInfo, PlannedModule, normalize_module_name};

/// Turns the closure (in load order) into planned modules: virtual aliases (`crc32c`)
/// are left out and, as dependencies, replaced by the modules they stand for; soft
/// pre-dependencies count as dependencies when they are in the plan.
pub fn planned_modules(
    order: Vec<ModuleInfo>,
    path_of: impl Fn(&str) -> PathBuf,
) -> Vec<PlannedModule> {
    let virtuals: BTreeMap<String, Vec<String>> = order
        .iter()
        .filter(|i| i.virtual_alias)
        .map(|i| (i.name.clone(), i.depends.clone()))
        .collect();
    let real: BTreeSet<String> = order
        .iter()
        .filter(|i| !i.virtual_alias)
        .map(|i| i.name.clone())
        .collect();
    order
        .into_iter()
        .filter(|info| !info.virtual_alias)
        .map(|info| {
            let mut depends = Vec::new();
            let wanted = info
                .depends
                .iter()
                .cloned()
                .chain(info.softdep_pre.iter().map(|s| normalize_module_name(s)));
            for dep in wanted {
                let expanded = virtuals.get(&dep).cloned().unwrap_or_else(|| vec![dep]);
                for name in expanded {
                    if real.contains(&name) && name != info.name && !depends.contains(&name) {
                        depends.push(name);
                    }
                }
            }
            PlannedModule {
                path: path_of(&info.name),
                name: info.name,
                decompressed_size: info.decompressed_size,
                aliases: info.aliases,
                depends,
            }
        })
        .collect()
}

/// `modules.alias` text for `modules` (pure).
pub fn render_modules_alias(modules: &[PlannedModule]) -> String {
    let mut out = String::from("# Aliases of the modules in this initramfs (written by jeos).\n");
    for module in modules {
        for alias in &module.aliases {
            out.push_str(&format!("alias {alias} {}\n", module.name));
        }
    }
    out
}

/// `modules.dep` text: each module's path (`inside`) and its dependencies' paths (pure).
pub fn render_modules_dep(
    modules: &[PlannedModule],
    inside: impl Fn(&PlannedModule) -> String,
) -> String {
    let paths: BTreeMap<&str, String> = modules
        .iter()
        .map(|m| (m.name.as_str(), inside(m)))
        .collect();
    let mut out = String::new();
    for module in modules {
        out.push_str(&paths[module.name.as_str()]);
        out.push(':');
        for dep in &module.depends {
            if let Some(path) = paths.get(dep.as_str()) {
                out.push(' ');
                out.push_str(path);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, depends: &[&str], aliases: &[&str], virtual_alias: bool) -> ModuleInfo {
        ModuleInfo {
            name: name.into(),
            depends: depends.iter().map(|s| (*s).into()).collect(),
            aliases: aliases.iter().map(|s| (*s).into()).collect(),
            virtual_alias,
            ..ModuleInfo::default()
        }
    }

    #[test]
    fn expands_virtual_aliases_and_renders_both_files() {
        let mut ext4 = info("ext4", &["crc32c", "crc16"], &["fs-ext4"], false);
        ext4.softdep_pre = vec!["absent-module".into()];
        let order = vec![
            info("crc32c_generic", &[], &["crypto-crc32c"], false),
            info("crc32c", &["crc32c_generic"], &[], true),
            info("crc16", &[], &[], false),
            ext4,
            info(
                "e1000",
                &[],
                &["pci:v00008086d0000100Esv*sd*bc*sc*i*"],
                false,
            ),
        ];
        let modules = planned_modules(order, |n| PathBuf::from(format!("kernel/{n}.ko.xz")));
        assert_eq!(modules.len(), 4);
        assert_eq!(modules[2].name, "ext4");
        assert_eq!(modules[2].depends, vec!["crc32c_generic", "crc16"]);
        let alias = render_modules_alias(&modules);
        assert!(alias.contains("\nalias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n"));
        assert!(alias.contains("\nalias fs-ext4 ext4\n"));
        let dep = render_modules_dep(&modules, |m| format!("kernel/{}.ko", m.name));
        assert_eq!(
            dep,
            "kernel/crc32c_generic.ko:\nkernel/crc16.ko:\n\
             kernel/ext4.ko: kernel/crc32c_generic.ko kernel/crc16.ko\nkernel/e1000.ko:\n"
        );
    }
}
