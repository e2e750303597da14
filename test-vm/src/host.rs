//! Can this host run a Linux guest under KVM?

use std::path::Path;

/// What `/dev/kvm` offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmStatus {
    /// No `/dev/kvm`.
    Missing {
        /// Human-readable reason.
        reason: String,
    },
    /// `/dev/kvm` exists but cannot be opened read-write.
    NoPermission {
        /// Human-readable reason.
        reason: String,
    },
    /// `/dev/kvm` is provided by `kvm_pvm`, a software nested-virtualisation module that runs
    /// small synthetic guests but cannot boot a stock Linux kernel.
    Pvm {
        /// Human-readable reason.
        reason: String,
    },
    /// Hardware KVM (kvm_intel / kvm_amd).
    Usable {
        /// Human-readable description.
        reason: String,
    },
}

impl KvmStatus {
    /// The human-readable reason.
    #[must_use]
    pub fn reason(&self) -> &str {
        match self {
            KvmStatus::Missing { reason }
            | KvmStatus::NoPermission { reason }
            | KvmStatus::Pvm { reason }
            | KvmStatus::Usable { reason } => reason,
        }
    }

    /// True if `/dev/kvm` can run a Linux guest.
    #[must_use]
    pub fn can_boot_linux(&self) -> bool {
        matches!(self, KvmStatus::Usable { .. })
    }

    /// True if `/dev/kvm` can be opened at all (synthetic guests run, even under PVM).
    #[must_use]
    pub fn can_open(&self) -> bool {
        matches!(self, KvmStatus::Usable { .. } | KvmStatus::Pvm { .. })
    }
}

/// Classifies the host from the given paths (pure apart from reading them; testable).
#[must_use]
pub fn classify(dev_kvm: &Path, sys_module: &Path, proc_modules: &Path) -> KvmStatus {
    if !dev_kvm.exists() {
        return KvmStatus::Missing {
            reason: format!(
                "{} does not exist (no KVM module loaded)",
                dev_kvm.display()
            ),
        };
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_kvm)
    {
        return KvmStatus::NoPermission {
            reason: format!(
                "cannot open {} read-write: {e} (add the user to the `kvm` group)",
                dev_kvm.display()
            ),
        };
    }
    let modules = std::fs::read_to_string(proc_modules).unwrap_or_default();
    let loaded = |name: &str| {
        sys_module.join(name).exists()
            || modules
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
    };
    if loaded("kvm_pvm") {
        return KvmStatus::Pvm {
            reason: format!(
                "{} is kvm_pvm (software nested virtualisation): it cannot boot a stock Linux kernel",
                dev_kvm.display()
            ),
        };
    }
    let vendor = if loaded("kvm_intel") {
        "kvm_intel"
    } else if loaded("kvm_amd") {
        "kvm_amd"
    } else {
        "kvm"
    };
    KvmStatus::Usable {
        reason: format!("{} is usable ({vendor})", dev_kvm.display()),
    }
}

/// Checks this host.
#[must_use]
pub fn check_host() -> KvmStatus {
    classify(
        Path::new("/dev/kvm"),
        Path::new("/sys/module"),
        Path::new("/proc/modules"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device() {
        let dir = tempfile::tempdir().unwrap();
        let status = classify(&dir.path().join("kvm"), dir.path(), &dir.path().join("m"));
        assert!(matches!(status, KvmStatus::Missing { .. }));
        assert!(!status.can_open());
    }

    #[test]
    fn pvm_and_hardware_modules() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("kvm");
        std::fs::write(&dev, b"").unwrap();
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("kvm_pvm")).unwrap();
        let status = classify(&dev, &sys, &dir.path().join("none"));
        assert!(matches!(status, KvmStatus::Pvm { .. }), "{status:?}");
        assert!(status.reason().contains("kvm_pvm"));
        assert!(!status.can_boot_linux());
        let modules = dir.path().join("modules");
        std::fs::write(&modules, "kvm_intel 1 0 - Live 0x0\nkvm 2 1 kvm_intel\n").unwrap();
        let status = classify(&dev, &dir.path().join("empty"), &modules);
        assert!(status.can_boot_linux(), "{status:?}");
        assert!(status.reason().contains("kvm_intel"));
    }

    #[test]
    fn this_host_is_classified() {
        let status = check_host();
        assert!(!status.reason().is_empty());
    }
}
