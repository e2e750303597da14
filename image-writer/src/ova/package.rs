//! Writes a complete OVF package from a raw disk: `<name>-disk1.vmdk` (+ `.qcow2` on
//! request), `<name>.ovf`, `<name>.mf`, `<name>.cert` (when a key is given) and
//! `<name>.ova`. Everything is produced in a private temporary directory inside
//! `out_dir`; each finished file is then renamed into place, so `out_dir` never holds a
//! partial file, and the temporary directory is removed on any error.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fs;
use std::path::{Path, PathBuf};

use super::reporter::PublishReporter;
use super::{OvaError, OvaMember, write_ova};
use crate::manifest::{DigestAlgorithm, ManifestError, build_manifest, render_manifest};
use crate::ovf::{
    DiskController, OvfContext, OvfDisk, OvfError, OvfNetwork, OvfOs, OvfProduct, OvfVm, Severity,
    lint_ovf, render_ovf,
};
use crate::qcow2::{Qcow2Config, Qcow2Error, write_qcow2};
use crate::sign::{SignError, sign_manifest};
use crate::vmdk::{AdapterType, VmdkConfig, VmdkError, write_vmdk};

/// Errors of [`write_ovf_package`].
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A filesystem operation on the output directory failed.
    #[error("i/o error on `{path}`")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The appliance name cannot be used in file names.
    #[error("package name `{name}` must match `[a-z0-9][a-z0-9._-]*`")]
    BadName {
        /// The name.
        name: String,
    },
    /// The OVF settings have compatibility errors (see `findings`).
    #[error("ovf settings have {} compatibility error(s)", findings.iter().filter(|f| f.severity == Severity::Error).count())]
    Incompatible {
        /// All findings of the lint.
        findings: Vec<crate::ovf::Finding>,
    },
    /// Writing the VMDK failed.
    #[error("writing the vmdk failed")]
    Vmdk(#[source] VmdkError),
    /// Writing the qcow2 failed.
    #[error("writing the qcow2 failed")]
    Qcow2(#[source] Qcow2Error),
    /// Rendering the OVF failed.
    #[error("rendering the ovf failed")]
    Ovf(#[source] OvfError),
    /// Digesting for the manifest failed.
    #[error("writing the manifest failed")]
    Manifest(#[source] ManifestError),
    /// Signing failed.
    #[error("signing the manifest failed")]
    Sign(#[source] SignError),
    /// Writing the OVA failed.
    #[error("writing the ova failed")]
    Ova(#[source] OvaError),
}

/// Key and certificate for the `.cert` file.
#[derive(Debug, Clone)]
pub struct SigningConfig {
    /// RSA private key, PEM (PKCS#8 or PKCS#1).
    pub key_pem: PathBuf,
    /// X.509 certificate (chain), PEM.
    pub certificate_pem: PathBuf,
}

/// The OVF settings that are not derived from the written disks.
#[derive(Debug, Clone)]
pub struct OvfInputs {
    /// Network.
    pub network: OvfNetwork,
    /// Virtual hardware.
    pub vm: OvfVm,
    /// Guest OS.
    pub os: OvfOs,
    /// Product.
    pub product: OvfProduct,
    /// Annotation.
    pub annotation: Option<String>,
    /// EULA text.
    pub eula: Option<String>,
}

/// What to write.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    /// Appliance name, used in file names.
    pub name: String,
    /// The raw disk image.
    pub raw_disk: PathBuf,
    /// Also write `<name>-disk1.qcow2` (not part of the OVF).
    pub qcow2: Option<Qcow2Config>,
    /// VMDK compression level and threads (adapter and hardware version follow `ovf.vm`).
    pub vmdk: VmdkConfig,
    /// OVF settings.
    pub ovf: OvfInputs,
    /// Manifest digest.
    pub digest: DigestAlgorithm,
    /// Sign the manifest.
    pub signing: Option<SigningConfig>,
    /// SOURCE_DATE_EPOCH for the archive.
    pub epoch: u64,
    /// Output directory (must exist).
    pub out_dir: PathBuf,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// Final path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Hex digest with the manifest algorithm.
    pub digest_hex: String,
}

/// What [`write_ovf_package`] produced.
#[derive(Debug, Clone)]
pub struct PackageReport {
    /// Every file written, in the order: vmdk, qcow2, ovf, mf, cert, ova.
    pub files: Vec<PackageFile>,
    /// Disk capacity in bytes.
    pub capacity_bytes: u64,
    /// Populated bytes of the VMDK.
    pub populated_bytes: u64,
    /// Warnings of the compatibility lint.
    pub findings: Vec<crate::ovf::Finding>,
}

/// Removes the staging directory unless disarmed.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Writes the package; see the module documentation.
pub fn write_ovf_package(
    spec: &PackageSpec,
    reporter: &dyn PublishReporter,
) -> Result<PackageReport, PackageError> {
    let name = &spec.name;
    let name_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if !name_ok {
        return Err(PackageError::BadName { name: name.clone() });
    }
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackageError::Io { path, source }
    };
    let staging_dir = spec
        .out_dir
        .join(format!(".{name}.staging.{}", std::process::id()));
    if staging_dir.exists() {
        fs::remove_dir_all(&staging_dir).map_err(io_err(&staging_dir))?;
    }
    fs::create_dir(&staging_dir).map_err(io_err(&staging_dir))?;
    let staging = Staging(Some(staging_dir.clone()));
    let stage = |file: &str| staging_dir.join(file);

    let vmdk_name = format!("{name}-disk1.vmdk");
    let vmdk_config = VmdkConfig {
        adapter_type: match spec.ovf.vm.controller {
            DiskController::Ide => AdapterType::Ide,
            _ => AdapterType::LsiLogic,
        },
        virtual_hw_version: spec.ovf.vm.hardware_version,
        ..spec.vmdk.clone()
    };
    let vmdk = write_vmdk(&spec.raw_disk, &stage(&vmdk_name), &vmdk_config, reporter)
        .map_err(PackageError::Vmdk)?;

    let ctx = OvfContext {
        name: name.clone(),
        disks: vec![OvfDisk {
            href: vmdk_name.clone(),
            file_bytes: vmdk.file_bytes,
            capacity_bytes: vmdk.capacity_bytes,
            populated_bytes: vmdk.populated_bytes,
        }],
        network: spec.ovf.network.clone(),
        vm: spec.ovf.vm.clone(),
        os: spec.ovf.os.clone(),
        product: spec.ovf.product.clone(),
        annotation: spec.ovf.annotation.clone(),
        eula: spec.ovf.eula.clone(),
    };
    let findings = lint_ovf(&ctx);
    for f in &findings {
        reporter.on_finding(f);
    }
    if findings.iter().any(|f| f.severity == Severity::Error) {
        return Err(PackageError::Incompatible { findings });
    }

    let mut order = vec![vmdk_name.clone()];
    // The disk writers report their own `on_file_finished`.
    let mut reported = vec![vmdk_name.clone()];
    if let Some(config) = &spec.qcow2 {
        let qcow2_name = format!("{name}-disk1.qcow2");
        write_qcow2(&spec.raw_disk, &stage(&qcow2_name), config, reporter)
            .map_err(PackageError::Qcow2)?;
        reported.push(qcow2_name.clone());
        order.push(qcow2_name);
    }

    let ovf_name = format!("{name}.ovf");
    let xml = render_ovf(&ctx).map_err(PackageError::Ovf)?;
    fs::write(stage(&ovf_name), xml).map_err(io_err(&stage(&ovf_name)))?;
    order.push(ovf_name.clone());

    let mf_name = format!("{name}.mf");
    let entries = build_manifest(&staging_dir, &[&ovf_name, &vmdk_name], spec.digest)
        .map_err(PackageError::Manifest)?;
    let mf_text = render_manifest(&entries);
    fs::write(stage(&mf_name), &mf_text).map_err(io_err(&stage(&mf_name)))?;
    order.push(mf_name.clone());
    let mut ova_members = vec![ovf_name.clone(), mf_name.clone()];

    if let Some(signing) = &spec.signing {
        let key = fs::read_to_string(&signing.key_pem).map_err(io_err(&signing.key_pem))?;
        let cert = fs::read_to_string(&signing.certificate_pem)
            .map_err(io_err(&signing.certificate_pem))?;
        let cert_name = format!("{name}.cert");
        let text =
            sign_manifest(mf_text.as_bytes(), &mf_name, &key, &cert).map_err(PackageError::Sign)?;
        fs::write(stage(&cert_name), text).map_err(io_err(&stage(&cert_name)))?;
        order.push(cert_name.clone());
        ova_members.push(cert_name);
    }
    ova_members.push(vmdk_name.clone());

    let ova_name = format!("{name}.ova");
    let members: Vec<OvaMember> = ova_members
        .iter()
        .map(|n| OvaMember {
            name: n.clone(),
            path: stage(n),
        })
        .collect();
    write_ova(&stage(&ova_name), &members, spec.epoch).map_err(PackageError::Ova)?;
    order.push(ova_name);

    // Everything is complete: digest, then rename each file into place.
    let mut files = Vec::new();
    for file in &order {
        let from = stage(file);
        let size_bytes = fs::metadata(&from).map_err(io_err(&from))?.len();
        let digest =
            crate::manifest::digest_file(&from, spec.digest).map_err(PackageError::Manifest)?;
        let to = spec.out_dir.join(file);
        fs::rename(&from, &to).map_err(io_err(&to))?;
        if !reported.contains(file) {
            reporter.on_file_finished(file, size_bytes);
        }
        files.push(PackageFile {
            path: to,
            size_bytes,
            digest_hex: super::atomic::to_hex(&digest),
        });
    }
    drop(staging);
    Ok(PackageReport {
        files,
        capacity_bytes: vmdk.capacity_bytes,
        populated_bytes: vmdk.populated_bytes,
        findings,
    })
}
