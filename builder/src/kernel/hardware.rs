//! Hardware consistency: the virtual hardware the recipe's `[vm]` table declares (and the
//! OVF promises) must be drivable by the chosen kernel. Checked against the module plan
//! of the kernel package at build time, so an appliance that would boot to "no network
//! interface found" or "root device not found" is never written.

use miette::Diagnostic;
use thiserror::Error;

use super::{ModulePlan, normalize_module_name};
use crate::recipe::{DiskController, KernelFlavour, Nic, Vm};

/// A `[vm]` device the kernel cannot drive.
#[derive(Debug, Error, Diagnostic, PartialEq, Eq)]
#[error(
    "`[vm] {setting} = \"{value}\"` needs the kernel module `{module}`, which kernel {kernel} does not have"
)]
#[diagnostic(help("{fix}"))]
pub struct HardwareError {
    /// The recipe key, e.g. `nic`.
    pub setting: &'static str,
    /// Its value, e.g. `e1000`.
    pub value: &'static str,
    /// The missing driver, e.g. `e1000`.
    pub module: &'static str,
    /// Kernel version.
    pub kernel: String,
    /// How to fix it.
    pub fix: String,
}

/// The `[vm] nic` value and the module driving it.
pub fn nic_driver(nic: Nic) -> (&'static str, &'static str) {
    match nic {
        Nic::E1000 => ("e1000", "e1000"),
        Nic::Vmxnet3 => ("vmxnet3", "vmxnet3"),
        Nic::Virtio => ("virtio", "virtio_net"),
    }
}

/// The `[vm] disk-controller` value and the module driving it.
pub fn controller_driver(controller: DiskController) -> (&'static str, &'static str) {
    match controller {
        DiskController::LsiLogic => ("lsilogic", "mptspi"),
        DiskController::Sata => ("sata", "ahci"),
    }
}

/// The modules `[vm]` needs, for the initramfs's wanted list.
pub fn vm_modules(vm: &Vm) -> [&'static str; 2] {
    [
        nic_driver(vm.nic).1,
        controller_driver(vm.disk_controller).1,
    ]
}

fn drivable(plan: &ModulePlan, module: &str) -> bool {
    let name = normalize_module_name(module);
    plan.builtin.contains(&name) || plan.modules.iter().any(|m| m.name == name)
}

/// Checks that the NIC and the disk controller of `vm` are driven by `plan`'s kernel.
pub fn check_vm_drivers(
    vm: &Vm,
    flavour: KernelFlavour,
    plan: &ModulePlan,
) -> Result<(), HardwareError> {
    let (value, module) = nic_driver(vm.nic);
    if !drivable(plan, module) {
        let mut fix =
            String::from("use `[vm] nic = \"virtio\"` (the hypervisor must offer virtio-net)");
        if flavour == KernelFlavour::Cloud {
            fix.push_str(&format!(
                ", or `[kernel] flavour = \"generic\"`, whose kernel has `{module}`"
            ));
        }
        return Err(HardwareError {
            setting: "nic",
            value,
            module,
            kernel: plan.kernel_version.clone(),
            fix,
        });
    }
    let (value, module) = controller_driver(vm.disk_controller);
    if !drivable(plan, module) {
        let other = match vm.disk_controller {
            DiskController::LsiLogic => "sata",
            DiskController::Sata => "lsilogic",
        };
        let mut fix = format!("use `[vm] disk-controller = \"{other}\"`");
        if flavour == KernelFlavour::Cloud {
            fix.push_str(", or `[kernel] flavour = \"generic\"`");
        }
        return Err(HardwareError {
            setting: "disk-controller",
            value,
            module,
            kernel: plan.kernel_version.clone(),
            fix,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::PlannedModule;
    use crate::recipe::{ByteSize, Firmware};

    fn plan(shipped: &[&str], builtin: &[&str]) -> ModulePlan {
        ModulePlan {
            kernel_version: "6.12.0-cloud-amd64".into(),
            vmlinuz: "boot/vmlinuz".into(),
            modules: shipped
                .iter()
                .map(|n| PlannedModule {
                    name: (*n).into(),
                    path: format!("kernel/{n}.ko.xz").into(),
                    decompressed_size: 1,
                    aliases: vec![],
                    depends: vec![],
                })
                .collect(),
            missing: vec![],
            builtin: builtin.iter().map(|n| (*n).into()).collect(),
            cycles: vec![],
        }
    }

    fn vm(nic: Nic, disk_controller: DiskController) -> Vm {
        Vm {
            cpus: 1,
            memory: ByteSize::mib(256),
            firmware: Firmware::Bios,
            disk_controller,
            nic,
        }
    }

    #[test]
    fn drivable_hardware_passes() {
        let p = plan(&["e1000", "mptspi"], &[]);
        assert!(
            check_vm_drivers(
                &vm(Nic::E1000, DiskController::LsiLogic),
                KernelFlavour::Cloud,
                &p
            )
            .is_ok()
        );
        let p = plan(&["virtio_net"], &["ahci"]);
        assert!(
            check_vm_drivers(
                &vm(Nic::Virtio, DiskController::Sata),
                KernelFlavour::Cloud,
                &p
            )
            .is_ok()
        );
    }

    #[test]
    fn cloud_kernel_without_e1000_names_module_and_fix() {
        let p = plan(&["virtio_net", "mptspi"], &[]);
        let err = check_vm_drivers(
            &vm(Nic::E1000, DiskController::LsiLogic),
            KernelFlavour::Cloud,
            &p,
        )
        .unwrap_err();
        assert_eq!(err.module, "e1000");
        let text = err.to_string();
        assert!(
            text.contains("`e1000`") && text.contains("6.12.0-cloud-amd64"),
            "{text}"
        );
        assert!(err.fix.contains("nic = \"virtio\""), "{}", err.fix);
        assert!(err.fix.contains("flavour = \"generic\""), "{}", err.fix);
    }

    #[test]
    fn missing_controller_driver_is_an_error() {
        let p = plan(&["e1000"], &[]);
        let err = check_vm_drivers(
            &vm(Nic::E1000, DiskController::LsiLogic),
            KernelFlavour::Generic,
            &p,
        )
        .unwrap_err();
        assert_eq!((err.setting, err.module), ("disk-controller", "mptspi"));
        assert!(err.fix.contains("sata") && !err.fix.contains("generic"));
    }
}
