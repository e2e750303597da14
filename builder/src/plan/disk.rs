//! The boot: kernel command line, initramfs module set and root file system settings.

use image_writer::ext4::Ext4Size;
use image_writer::layout::Seed;

use crate::kernel::DEFAULT_MODULES;
use crate::recipe::Recipe;

/// The kernel command line. Each parameter, and why:
/// - `root=UUID=…`: guest-init's initramfs stage mounts the ext4 root by filesystem UUID;
/// - `rw`: services write logs and state under `/var` as on any Debian system;
/// - `console=tty0 console=ttyS0,115200`: the last console is `/dev/console`, so PID 1's
///   log and the test protocol reach the first serial port, which runners capture;
/// - `panic=-1`: reboot at once on a panic, so a runner sees the VM exit instead of a hang;
/// - `reboot=k`: reboot through the keyboard controller, the exit that works without ACPI;
/// - `quiet`: kernel messages only from warnings up, which keeps boots over emulated
///   serial consoles fast.
pub fn kernel_cmdline(root_uuid: &str, extra: &[String]) -> String {
    let mut parts = vec![
        format!("root=UUID={root_uuid}"),
        "rw".to_owned(),
        "console=tty0".to_owned(),
        "console=ttyS0,115200".to_owned(),
        "panic=-1".to_owned(),
        "reboot=k".to_owned(),
        "quiet".to_owned(),
    ];
    parts.extend(extra.iter().cloned());
    parts.join(" ")
}

/// The initramfs module set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulePlan {
    /// The recipe's kernel package (for error messages).
    pub package: String,
    /// Modules wanted in the initramfs, in order: the defaults, [`EXTRA_MODULES`], the
    /// `[vm]` hardware's drivers, `[kernel] extra-modules`.
    pub wanted: Vec<String>,
    /// Modules the build fails without (`[kernel] extra-modules`).
    pub required: Vec<String>,
}

/// Modules added to the hypervisor drivers: the power button (ACPI `button` + `evdev`)
/// lets guest-init see "shut down guest"; `pvpanic_mmio` (with `pvpanic`: the driver of
/// the ACPI `QEMU0001` device the embedded runner has, as QEMU's `-device pvpanic`) reports
/// a kernel panic to the VMM.
pub const EXTRA_MODULES: [&str; 3] = ["button", "evdev", "pvpanic_mmio"];

/// The initramfs modules a recipe asks for.
pub fn module_plan(recipe: &Recipe) -> ModulePlan {
    let mut wanted: Vec<&str> = DEFAULT_MODULES.to_vec();
    wanted.extend(EXTRA_MODULES);
    wanted.extend(crate::kernel::hardware::vm_modules(&recipe.vm));
    wanted.extend(recipe.kernel.extra_modules.iter().map(String::as_str));
    ModulePlan {
        package: recipe.kernel.package.clone(),
        wanted: wanted.into_iter().map(str::to_owned).collect(),
        required: recipe.kernel.extra_modules.clone(),
    }
}

/// The disk's boot and root file system settings (everything but the content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSettings {
    /// The kernel command line (see [`kernel_cmdline`]).
    pub cmdline: String,
    /// ext4 volume label: the appliance name, at most 16 bytes.
    pub label: String,
    /// ext4 size: `[disk] size`, or the content plus `[disk] free-space`.
    pub size: Ext4Size,
    /// Every time stamp on the disk (`SOURCE_DATE_EPOCH`, 0 when negative).
    pub timestamp: u64,
}

/// The disk settings of a recipe whose identifiers derive from `seed`.
pub fn disk_settings(recipe: &Recipe, seed: &Seed, epoch: i64) -> DiskSettings {
    let root_uuid = image_writer::ext4::root_fs_uuid(seed);
    let mut label: String = recipe.appliance.name.to_string();
    label.truncate(16);
    DiskSettings {
        cmdline: kernel_cmdline(&root_uuid.to_string(), &recipe.kernel.cmdline),
        label,
        size: match recipe.disk.size {
            Some(size) => Ext4Size::Exact(size.bytes()),
            None => Ext4Size::Auto {
                free_space_bytes: recipe.disk.free_space.bytes(),
            },
        },
        timestamp: u64::try_from(epoch).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_names_the_root_and_the_serial_console_last() {
        let line = kernel_cmdline("1234", &["nokaslr".to_owned()]);
        assert!(line.starts_with("root=UUID=1234 rw "), "{line}");
        let tty0 = line.find("console=tty0").expect("tty0");
        let serial = line.find("console=ttyS0").expect("ttyS0");
        assert!(tty0 < serial, "{line}");
        assert!(line.ends_with(" nokaslr"), "{line}");
    }
}
