//! Disk images and OVF packages: root filesystem, partition table, boot loaders,
//! initramfs, raw/qcow2/VMDK/VHD, GCE archive, OVF descriptor, manifest, certificate and OVA.
//!
//! Every writer works in two phases: a pure plan (layout, headers, descriptors) and the IO
//! that writes it. This crate never prints.
#![cfg_attr(
    test,
    allow(
        clippy::too_many_lines,
        reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
    )
)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bootloader;
pub mod cpio;
pub mod esp;
pub mod ext4;
pub mod fat;
pub mod gce;
pub mod gpt;
pub mod image;
pub mod layout;
pub mod manifest;
pub mod ova;
pub mod ovf;
pub mod qcow2;
pub mod sign;
pub mod vbox;
pub mod vhd;
pub mod vmdk;

pub use bootloader::{BootloaderFiles, DiskPlan, DiskReport, GrubLegacyBoot, write_disk};
pub use ova::package::{
    OvfInputs, PackageError, PackageReport, PackageSpec, SigningConfig, write_ovf_package,
};
pub use ova::reporter::{NoReporter, PublishReporter};

/// A unit test's missing prerequisite (a tool of the host): the test returns after a loud
/// `SKIPPED` line, and fails instead under `CI=true`, where every prerequisite is installed.
#[cfg(test)]
#[expect(clippy::print_stderr, reason = "tests report skipped checks on stderr")]
pub(crate) fn skip_test(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "prerequisite missing under CI=true: {reason} (scripts/install-deps installs it)"
    );
    eprintln!("SKIPPED: {reason}");
}
