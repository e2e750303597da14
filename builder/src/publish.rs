//! Step `publish`: the raw disk the pipeline built → the formats `[disk].formats` asks for.
//!
//! ```text
//! raw ──▶ <name>-<version>.qcow2                       (qcow2)
//!     ──▶ <name>-<version>-disk1.vmdk                  (vmdk, streamOptimized)
//!     ──▶ .ovf + .mf (+ .cert) + -disk1.vmdk + .ova    (ova)
//!     ──▶ <name>-<version>.vhd                         (vhd, fixed)
//!     ──▶ <name>-<version>.gce.tar.gz                  (gce, `disk.raw` inside)
//! ```
//!
//! The recipe's `[appliance]`, `[vm]` and `[ovf]` tables become image-writer's OVF inputs
//! ([`ovf_inputs`], pure). Everything that can be checked before writing is checked first
//! (signing options, file names, the EULA, the OVF compatibility lint), so a rejected
//! recipe leaves `out_dir` untouched; a failure while writing removes what this step had
//! already written. The VMDK keeps image-writer's `-disk1` suffix in both the `vmdk` and
//! the `ova` case, since the descriptor, manifest and signature name it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image_writer::gce::{GceError, write_gce};
use image_writer::manifest::{DigestAlgorithm, ManifestError, digest_file};
use image_writer::ovf::{self, Finding, OvfDisk, OvfNetwork, OvfOs, OvfProduct, Severity};
use image_writer::qcow2::{Qcow2Config, Qcow2Error, write_qcow2};
use image_writer::vhd::{VhdError, write_vhd};
use image_writer::vmdk::{AdapterType, VmdkConfig, VmdkError, write_vmdk};
use image_writer::{OvfInputs, PackageError, PackageSpec, SigningConfig, write_ovf_package};
use miette::Diagnostic;
use serde::Serialize;

use crate::progress::Ui;
use crate::recipe::{DiskController, DiskFormat, Firmware, Nic, OvfTarget, Recipe};
use crate::reporters::UiPublishReporter;

/// Largest EULA file read into the descriptor.
pub const MAX_EULA_BYTES: u64 = 1 << 20;

/// Longest `<name>-<version>` image-writer accepts as a package name.
const MAX_STEM: usize = 64;

/// Errors of [`publish_artifacts`].
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum PublishError {
    /// `--sign-key` without `--sign-cert`.
    #[error("a signing key was given without a certificate")]
    #[diagnostic(help("pass both `--sign-key` and `--sign-cert`"))]
    KeyWithoutCertificate,
    /// `--sign-cert` without `--sign-key`.
    #[error("a signing certificate was given without a key")]
    #[diagnostic(help("pass both `--sign-key` and `--sign-cert`"))]
    CertificateWithoutKey,
    /// `<name>-<version>` cannot be an OVF package file name.
    #[error("`{stem}` cannot be used as the vmdk/ova file name")]
    #[diagnostic(help(
        "the version is part of the file names: use lowercase letters, digits and `._-`, and keep `name-version` within 64 characters"
    ))]
    FileName {
        /// `<name>-<version>`.
        stem: String,
    },
    /// The raw disk cannot be inspected.
    #[error("cannot read the raw disk `{path}`")]
    RawDisk {
        /// The raw image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The `[ovf] eula` file cannot be read.
    #[error("cannot read the eula file `{path}`")]
    #[diagnostic(help("`[ovf] eula` is a UTF-8 text file, relative to the recipe"))]
    Eula {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The `[ovf] eula` file is too large.
    #[error("the eula file `{path}` is {size} bytes, more than 1 MiB")]
    #[diagnostic(help("hypervisors show the eula in a dialog: keep it short"))]
    EulaTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The OVF compatibility lint found errors.
    #[error(
        "the `[vm]`/`[ovf]` settings have {} compatibility error(s)",
        findings.iter().filter(|f| f.severity == Severity::Error).count()
    )]
    #[diagnostic(help("{}", findings_text(findings)))]
    Incompatible {
        /// Every finding of the lint (errors and warnings).
        findings: Vec<Finding>,
    },
    /// Writing the qcow2 image failed.
    #[error("writing the qcow2 image failed")]
    Qcow2(#[source] Qcow2Error),
    /// Writing the VHD failed.
    #[error("writing the vhd failed")]
    Vhd(#[source] VhdError),
    /// Writing the GCE archive failed.
    #[error("writing the gce image archive failed")]
    Gce(#[source] GceError),
    /// Writing the VMDK failed.
    #[error("writing the vmdk failed")]
    Vmdk(#[source] VmdkError),
    /// Writing the OVF package failed.
    #[error("writing the ovf package failed")]
    Package(#[source] PackageError),
    /// Digesting an output for the report failed.
    #[error("digesting `{path}` failed")]
    Digest {
        /// The output file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ManifestError,
    },
}

fn findings_text(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            let severity = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            format!("{severity}: {}: {}", f.message, f.hint)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Signing and manifest settings from the command line.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// RSA private key (PEM) signing the manifest; needs `sign_cert`.
    pub sign_key: Option<PathBuf>,
    /// X.509 certificate (PEM) put in the `.cert`; needs `sign_key`.
    pub sign_cert: Option<PathBuf>,
    /// Manifest digest (SHA-256 by default).
    pub digest: DigestAlgorithm,
}

/// One file written by [`publish_artifacts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedFile {
    /// Path inside `out_dir`.
    pub path: PathBuf,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
}

/// What [`publish_artifacts`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    /// Files in the order: qcow2, vmdk, vhd, gce, ovf, mf, cert, ova (those requested).
    pub files: Vec<PublishedFile>,
    /// Virtual disk size in bytes.
    pub capacity_bytes: u64,
    /// Bytes of the disk the VMDK stores (OVF `populatedSize`), when a VMDK was written.
    pub vmdk_populated_bytes: Option<u64>,
    /// Warnings of the OVF compatibility lint (already shown through the UI).
    pub findings: Vec<Finding>,
}

/// The OVF targets of a recipe: `[ovf] targets`, else every target the `[vm]` hardware
/// allows (VMware has no virtio-net adapter).
pub fn ovf_targets(recipe: &Recipe) -> Vec<ovf::OvfTarget> {
    let map = |t: &OvfTarget| match t {
        OvfTarget::Vmware => ovf::OvfTarget::Vmware,
        OvfTarget::Virtualbox => ovf::OvfTarget::Virtualbox,
        OvfTarget::Generic => ovf::OvfTarget::Generic,
    };
    if !recipe.ovf.targets.is_empty() {
        return recipe.ovf.targets.iter().map(map).collect();
    }
    let mut targets = Vec::new();
    if recipe.vm.nic != Nic::Virtio {
        targets.push(ovf::OvfTarget::Vmware);
    }
    targets.extend([ovf::OvfTarget::Virtualbox, ovf::OvfTarget::Generic]);
    targets
}

/// The OVF inputs of a recipe, plus warnings about settings OVF cannot express exactly.
/// `eula` is the text of `[ovf] eula`, already read.
pub fn ovf_inputs(recipe: &Recipe, eula: Option<String>) -> (OvfInputs, Vec<String>) {
    let warnings = Vec::new();
    let vm = &recipe.vm;
    let nic = match vm.nic {
        Nic::E1000 => ovf::NicModel::E1000,
        Nic::Vmxnet3 => ovf::NicModel::Vmxnet3,
        Nic::Virtio => ovf::NicModel::Virtio,
    };
    let app = &recipe.appliance;
    let network = crate::deploy::network_properties(recipe);
    let properties = recipe
        .ovf
        .properties
        .iter()
        .map(|p| (p, "Application"))
        .chain(network.iter().map(|p| (p, "Network")))
        .map(|(p, category)| ovf::OvfProperty {
            key: p.key.clone(),
            kind: p.type_.clone(),
            value: p.value.clone().unwrap_or_default(),
            user_configurable: p.user_configurable,
            label: p.label.clone().unwrap_or_else(|| p.key.clone()),
            description: p.description.clone().unwrap_or_default(),
            password: p.password,
            category: Some(category.to_owned()),
        })
        .collect();
    let product = OvfProduct {
        product: app.name.as_str().to_owned(),
        vendor: app.vendor.clone().unwrap_or_default(),
        version: app.version.clone(),
        full_version: app.version.clone(),
        product_url: recipe.ovf.product_url.clone().or_else(|| app.url.clone()),
        properties,
    };
    let mut ovf_vm = ovf::OvfVm {
        cpus: vm.cpus,
        memory_mib: vm.memory.0 >> 20,
        firmware: match vm.firmware {
            Firmware::Bios => ovf::Firmware::Bios,
            Firmware::Efi => ovf::Firmware::Efi,
        },
        controller: match vm.disk_controller {
            DiskController::LsiLogic => ovf::DiskController::LsiLogic,
            DiskController::Sata => ovf::DiskController::Sata,
        },
        nic,
        hardware_version: 0,
        targets: ovf_targets(recipe),
    };
    ovf_vm.hardware_version = ovf::min_hardware_version(&ovf_vm);
    let inputs = OvfInputs {
        network: OvfNetwork {
            name: "VM Network".into(),
            description: "The network the appliance's first NIC connects to".into(),
        },
        vm: ovf_vm,
        os: OvfOs::default(),
        product,
        annotation: recipe
            .ovf
            .annotation
            .clone()
            .or_else(|| app.description.clone()),
        eula,
    };
    (inputs, warnings)
}

/// Checks the OVF inputs for a disk of `capacity_bytes` without writing anything.
pub fn lint(inputs: &OvfInputs, name: &str, capacity_bytes: u64) -> Vec<Finding> {
    ovf::lint_ovf(&ovf::OvfContext {
        name: name.to_owned(),
        disks: vec![OvfDisk {
            href: format!("{name}-disk1.vmdk"),
            file_bytes: 0,
            capacity_bytes,
            populated_bytes: 0,
        }],
        network: inputs.network.clone(),
        vm: inputs.vm.clone(),
        os: inputs.os.clone(),
        product: inputs.product.clone(),
        annotation: inputs.annotation.clone(),
        eula: inputs.eula.clone(),
    })
}

fn valid_stem(stem: &str) -> bool {
    stem.len() <= MAX_STEM
        && stem
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && stem.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

fn read_eula(recipe: &Recipe, recipe_dir: &Path) -> Result<Option<String>, PublishError> {
    let Some(eula) = &recipe.ovf.eula else {
        return Ok(None);
    };
    let path = recipe_dir.join(eula);
    let err = |source| PublishError::Eula {
        path: path.clone(),
        source,
    };
    let size = fs::metadata(&path).map_err(err)?.len();
    if size > MAX_EULA_BYTES {
        return Err(PublishError::EulaTooLarge { path, size });
    }
    fs::read_to_string(&path).map(Some).map_err(err)
}

/// Removes the files written so far unless disarmed.
struct Written(Vec<PathBuf>);

impl Drop for Written {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// Writes the formats of `[disk].formats` other than `raw` from the raw disk `raw` into
/// `out_dir` (which must exist). `epoch` is SOURCE_DATE_EPOCH (negative counts as 0).
pub fn publish_artifacts(
    recipe: &Recipe,
    recipe_dir: &Path,
    raw: &Path,
    out_dir: &Path,
    epoch: i64,
    options: &PublishOptions,
    ui: &Ui,
) -> Result<PublishReport, PublishError> {
    let formats = &recipe.disk.formats;
    let qcow2 = formats.contains(&DiskFormat::Qcow2);
    let ova = formats.contains(&DiskFormat::Ova);
    let vmdk = formats.contains(&DiskFormat::Vmdk);
    let stem = format!("{}-{}", recipe.appliance.name, recipe.appliance.version);

    // Everything that can fail without writing, first.
    let signing = match (&options.sign_key, &options.sign_cert) {
        (Some(key), Some(cert)) => Some(SigningConfig {
            key_pem: key.clone(),
            certificate_pem: cert.clone(),
        }),
        (Some(_), None) => return Err(PublishError::KeyWithoutCertificate),
        (None, Some(_)) => return Err(PublishError::CertificateWithoutKey),
        (None, None) => None,
    };
    if (vmdk || ova) && !valid_stem(&stem) {
        return Err(PublishError::FileName { stem });
    }
    let capacity_bytes = fs::metadata(raw)
        .map_err(|source| PublishError::RawDisk {
            path: raw.to_path_buf(),
            source,
        })?
        .len();
    let eula = if ova {
        read_eula(recipe, recipe_dir)?
    } else {
        None
    };
    let (inputs, warnings) = ovf_inputs(recipe, eula);
    // Only the OVF package declares hardware; a bare VMDK or qcow2 has nothing to lint.
    let mut findings = Vec::new();
    if ova {
        findings = lint(&inputs, &stem, capacity_bytes);
        if findings.iter().any(|f| f.severity == Severity::Error) {
            return Err(PublishError::Incompatible { findings });
        }
        for w in &warnings {
            ui.warning(w);
        }
        for f in &findings {
            ui.warning(&format!("{}: {}", f.message, f.hint));
        }
    }

    let reporter = UiPublishReporter { ui };
    let mut written = Written(Vec::new());
    let mut files = Vec::new();
    let mut vmdk_populated_bytes = None;
    // The qcow2 conversion (one zlib stream) overlaps the VMDK/OVA work: each writes its
    // own file from the same raw disk, so the outputs do not depend on the timing.
    let (qcow2_result, rest) = std::thread::scope(|scope| {
        let job = qcow2.then(|| {
            scope.spawn(|| {
                let started = Instant::now();
                ui.step_started("write qcow2");
                let path = out_dir.join(format!("{stem}.qcow2"));
                let result = write_qcow2(raw, &path, &Qcow2Config::default(), &reporter)
                    .map_err(PublishError::Qcow2)
                    .and_then(|_| describe(path.clone()));
                ui.step_finished("write qcow2", started.elapsed());
                (path, result)
            })
        });
        let rest = publish_rest(
            &mut PublishState {
                written: &mut written,
                files: &mut files,
                vmdk_populated_bytes: &mut vmdk_populated_bytes,
            },
            &RestInputs {
                recipe,
                raw,
                out_dir,
                epoch,
                options,
                ui,
                reporter: &reporter,
                stem: &stem,
                vmdk,
                ova,
            },
            inputs,
            signing,
        );
        let qcow2_result = job.map(|j| j.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (qcow2_result, rest)
    });
    if let Some((path, result)) = qcow2_result {
        written.0.push(path);
        files.insert(0, result?);
    }
    rest?;
    written.0.clear();
    Ok(PublishReport {
        files,
        capacity_bytes,
        vmdk_populated_bytes,
        findings,
    })
}

/// What [`publish_rest`] adds to.
struct PublishState<'a> {
    written: &'a mut Written,
    files: &'a mut Vec<PublishedFile>,
    vmdk_populated_bytes: &'a mut Option<u64>,
}

/// The inputs of [`publish_rest`].
struct RestInputs<'a> {
    recipe: &'a Recipe,
    raw: &'a Path,
    out_dir: &'a Path,
    epoch: i64,
    options: &'a PublishOptions,
    ui: &'a Ui,
    reporter: &'a UiPublishReporter<'a>,
    stem: &'a str,
    vmdk: bool,
    ova: bool,
}

/// The formats after qcow2, in order: vmdk, vhd, gce, ova.
fn publish_rest(
    state: &mut PublishState<'_>,
    r: &RestInputs<'_>,
    inputs: OvfInputs,
    signing: Option<SigningConfig>,
) -> Result<(), PublishError> {
    let (ui, reporter, stem, out_dir, raw, epoch) =
        (r.ui, r.reporter, r.stem, r.out_dir, r.raw, r.epoch);
    let formats = &r.recipe.disk.formats;
    if r.vmdk && !r.ova {
        let started = Instant::now();
        ui.step_started("write vmdk");
        let path = out_dir.join(format!("{stem}-disk1.vmdk"));
        let config = VmdkConfig {
            adapter_type: AdapterType::LsiLogic,
            virtual_hw_version: inputs.vm.hardware_version,
            ..VmdkConfig::default()
        };
        let report = write_vmdk(raw, &path, &config, reporter).map_err(PublishError::Vmdk)?;
        state.written.0.push(path.clone());
        *state.vmdk_populated_bytes = Some(report.populated_bytes);
        state.files.push(describe(path)?);
        ui.step_finished("write vmdk", started.elapsed());
    }
    if formats.contains(&DiskFormat::Vhd) {
        let started = Instant::now();
        ui.step_started("write vhd");
        let path = out_dir.join(format!("{stem}.vhd"));
        write_vhd(raw, &path, epoch, reporter).map_err(PublishError::Vhd)?;
        state.written.0.push(path.clone());
        state.files.push(describe(path)?);
        ui.step_finished("write vhd", started.elapsed());
    }
    if formats.contains(&DiskFormat::Gce) {
        let started = Instant::now();
        ui.step_started("write gce");
        let path = out_dir.join(format!("{stem}.gce.tar.gz"));
        write_gce(raw, &path, epoch, reporter).map_err(PublishError::Gce)?;
        state.written.0.push(path.clone());
        state.files.push(describe(path)?);
        ui.step_finished("write gce", started.elapsed());
    }
    if r.ova {
        let started = Instant::now();
        ui.step_started("write ova");
        let spec = PackageSpec {
            name: stem.to_owned(),
            raw_disk: raw.to_path_buf(),
            qcow2: None,
            vmdk: VmdkConfig::default(),
            ovf: inputs,
            digest: r.options.digest,
            signing,
            epoch: u64::try_from(epoch).unwrap_or(0),
            out_dir: out_dir.to_path_buf(),
        };
        let package = write_ovf_package(&spec, reporter).map_err(|e| match e {
            PackageError::Incompatible { findings } => PublishError::Incompatible { findings },
            other => PublishError::Package(other),
        })?;
        state
            .written
            .0
            .extend(package.files.iter().map(|f| f.path.clone()));
        *state.vmdk_populated_bytes = Some(package.populated_bytes);
        for f in package.files {
            if r.options.digest == DigestAlgorithm::Sha256 {
                state.files.push(PublishedFile {
                    path: f.path,
                    size_bytes: f.size_bytes,
                    sha256: f.digest_hex,
                });
            } else {
                state.files.push(describe(f.path)?);
            }
        }
        ui.step_finished("write ova", started.elapsed());
    }
    Ok(())
}

fn describe(path: PathBuf) -> Result<PublishedFile, PublishError> {
    let digest_err = |source| PublishError::Digest {
        path: path.clone(),
        source,
    };
    let digest = digest_file(&path, DigestAlgorithm::Sha256).map_err(digest_err)?;
    let size_bytes = fs::metadata(&path)
        .map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })
        .map_err(digest_err)?
        .len();
    let sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(PublishedFile {
        path,
        size_bytes,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::UiMode;

    const RECIPE: &str = r#"
[appliance]
name = "web"
version = "2.1"
description = "A web server"
vendor = "Example Corp"
url = "https://example.org/web"
[source]
suite = "trixie"
[packages]
install = ["nginx"]
[disk]
formats = ["raw", "qcow2", "vmdk", "ova"]
[vm]
cpus = 2
memory = "512MiB"
firmware = "efi"
disk-controller = "sata"
nic = "virtio"
[ovf]
product-url = "https://example.org/product"
annotation = "Serves files"
[[ovf.property]]
key = "web.port"
type = "uint16"
value = "80"
user-configurable = true
"#;

    fn recipe(text: &str) -> Recipe {
        crate::recipe::parse_str("test.toml", text, None).expect("valid recipe")
    }

    fn quiet_ui() -> Ui {
        Ui::with_writer(UiMode::Plain, false, Box::new(std::io::sink()))
    }

    #[test]
    fn recipe_maps_to_ovf_inputs() {
        let (inputs, warnings) = ovf_inputs(&recipe(RECIPE), Some("be nice".into()));
        assert_eq!(inputs.vm.cpus, 2);
        assert_eq!(inputs.vm.memory_mib, 512);
        assert_eq!(inputs.vm.firmware, ovf::Firmware::Efi);
        assert_eq!(inputs.vm.controller, ovf::DiskController::Sata);
        assert_eq!(inputs.vm.nic, ovf::NicModel::Virtio);
        assert_eq!(inputs.vm.hardware_version, 10, "sata needs vmx-10");
        assert_eq!(
            inputs.vm.targets,
            [ovf::OvfTarget::Virtualbox, ovf::OvfTarget::Generic],
            "VMware has no virtio-net: not a default target"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let p = &inputs.product;
        assert_eq!(p.product, "web");
        assert_eq!(p.vendor, "Example Corp");
        assert_eq!(
            (p.version.as_str(), p.full_version.as_str()),
            ("2.1", "2.1")
        );
        assert_eq!(
            p.product_url.as_deref(),
            Some("https://example.org/product")
        );
        assert_eq!(
            p.properties.len(),
            7,
            "web.port and the six jeos.* network keys"
        );
        assert_eq!(p.properties[1].key, "jeos.hostname");
        assert_eq!(p.properties[1].category.as_deref(), Some("Network"));
        let prop = &p.properties[0];
        assert_eq!(prop.category.as_deref(), Some("Application"));
        assert_eq!(
            (prop.key.as_str(), prop.kind.as_str(), prop.value.as_str()),
            ("web.port", "uint16", "80")
        );
        assert!(prop.user_configurable);
        assert_eq!(prop.label, "web.port");
        assert_eq!(inputs.annotation.as_deref(), Some("Serves files"));
        assert_eq!(inputs.eula.as_deref(), Some("be nice"));
        assert!(lint(&inputs, "web-2.1", 8 << 20).is_empty());
    }

    #[test]
    fn defaults_map_to_portable_hardware() {
        let text = "[appliance]\nname = \"tiny\"\nversion = \"1\"\nurl = \"https://example.org\"\n\
                    [source]\nsuite = \"trixie\"\n[packages]\ninstall = [\"hello\"]\n\
                    [vm]\nnic = \"vmxnet3\"\n";
        let (inputs, warnings) = ovf_inputs(&recipe(text), None);
        assert!(warnings.is_empty());
        assert_eq!(inputs.vm.cpus, 1);
        assert_eq!(inputs.vm.memory_mib, 256);
        assert_eq!(inputs.vm.firmware, ovf::Firmware::Bios);
        assert_eq!(inputs.vm.controller, ovf::DiskController::LsiLogic);
        assert_eq!(inputs.vm.nic, ovf::NicModel::Vmxnet3);
        assert_eq!(inputs.product.vendor, "");
        assert_eq!(
            inputs.product.product_url.as_deref(),
            Some("https://example.org"),
            "the appliance url is the fallback product url"
        );
        assert_eq!(inputs.annotation, None);
        let findings = lint(&inputs, "tiny-1", 8 << 20);
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert!(findings.iter().all(|f| f.severity == Severity::Warning));
        assert_eq!(inputs.vm.hardware_version, 7);
    }

    #[test]
    fn virtio_for_vmware_is_an_error_and_virtio_elsewhere_is_declared() {
        let text = RECIPE.replace("[ovf]\n", "[ovf]\ntargets = [\"vmware\", \"generic\"]\n");
        let (inputs, _) = ovf_inputs(&recipe(&text), None);
        let findings = lint(&inputs, "web-2.1", 8 << 20);
        assert!(
            findings
                .iter()
                .any(|f| f.severity == Severity::Error && f.message.contains("virtio")),
            "{findings:?}"
        );
        let (inputs, _) = ovf_inputs(&recipe(RECIPE), None);
        let xml = ovf::render_ovf(&ovf::OvfContext {
            name: "web".into(),
            disks: vec![OvfDisk {
                href: "web-disk1.vmdk".into(),
                file_bytes: 1,
                capacity_bytes: 8 << 20,
                populated_bytes: 1,
            }],
            network: inputs.network,
            vm: inputs.vm,
            os: inputs.os,
            product: inputs.product,
            annotation: None,
            eula: None,
        })
        .expect("render");
        assert!(xml.contains("<rasd:ResourceSubType>virtio-net</rasd:ResourceSubType>"));
        assert!(
            !xml.contains("vmx-"),
            "no VMware families without the vmware target"
        );
    }

    #[test]
    fn lint_error_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("disk.raw");
        fs::write(&raw, vec![0u8; 1 << 20]).expect("write raw");
        let out = dir.path().join("out");
        fs::create_dir(&out).expect("mkdir");
        // 66 MiB is valid in a recipe but not a multiple of 4 MiB, which ESXi rejects.
        let text = RECIPE.replace("512MiB", "66MiB");
        let err = publish_artifacts(
            &recipe(&text),
            dir.path(),
            &raw,
            &out,
            0,
            &PublishOptions::default(),
            &quiet_ui(),
        )
        .expect_err("lint error");
        let PublishError::Incompatible { findings } = &err else {
            panic!("unexpected error {err:?}");
        };
        assert!(findings.iter().any(|f| f.message.contains("66 MiB")));
        let help = err.help().expect("help text").to_string();
        assert!(help.contains("error: memory of 66 MiB"), "{help}");
        assert_eq!(fs::read_dir(&out).expect("read out").count(), 0);
    }

    #[test]
    fn vmdk_alone_is_not_linted_and_writes_only_the_vmdk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("disk.raw");
        let mut disk = vec![0u8; 2 << 20];
        disk[1 << 20..(1 << 20) + 4096].fill(0xa5);
        fs::write(&raw, disk).expect("write raw");
        let out = dir.path().join("out");
        fs::create_dir(&out).expect("mkdir");
        let text = RECIPE
            .replace("512MiB", "66MiB")
            .replace("\"qcow2\", \"vmdk\", \"ova\"", "\"vmdk\"");
        let ui = quiet_ui();
        let report = publish_artifacts(
            &recipe(&text),
            dir.path(),
            &raw,
            &out,
            0,
            &PublishOptions::default(),
            &ui,
        )
        .expect("a bare vmdk declares no hardware");
        assert_eq!(ui.warning_count(), 0);
        assert_eq!(report.files.len(), 1);
        assert_eq!(report.files[0].path, out.join("web-2.1-disk1.vmdk"));
        assert_eq!(report.capacity_bytes, 2 << 20);
        assert_eq!(report.vmdk_populated_bytes, Some(64 << 10));
        let names: Vec<_> = fs::read_dir(&out)
            .expect("read out")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["web-2.1-disk1.vmdk"]);
    }

    #[test]
    fn failure_while_writing_removes_earlier_outputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("disk.raw");
        fs::write(&raw, vec![7u8; 1 << 20]).expect("write raw");
        let out = dir.path().join("out");
        fs::create_dir(&out).expect("mkdir");
        let options = PublishOptions {
            sign_key: Some(dir.path().join("missing.key")),
            sign_cert: Some(dir.path().join("missing.crt")),
            digest: DigestAlgorithm::Sha256,
        };
        let err = publish_artifacts(
            &recipe(RECIPE),
            dir.path(),
            &raw,
            &out,
            0,
            &options,
            &quiet_ui(),
        )
        .expect_err("the key is missing");
        assert!(
            matches!(err, PublishError::Package(PackageError::Io { .. })),
            "{err:?}"
        );
        assert_eq!(
            fs::read_dir(&out).expect("read out").count(),
            0,
            "the qcow2 written before the package is removed"
        );
    }

    #[test]
    fn signing_needs_key_and_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("disk.raw");
        fs::write(&raw, vec![0u8; 1 << 20]).expect("write raw");
        let r = recipe(RECIPE);
        let run = |key: Option<&str>, cert: Option<&str>| {
            let options = PublishOptions {
                sign_key: key.map(PathBuf::from),
                sign_cert: cert.map(PathBuf::from),
                digest: DigestAlgorithm::Sha256,
            };
            publish_artifacts(&r, dir.path(), &raw, dir.path(), 0, &options, &quiet_ui())
                .expect_err("incomplete signing")
        };
        let err = run(Some("k.pem"), None);
        assert!(matches!(err, PublishError::KeyWithoutCertificate));
        assert!(
            err.help()
                .expect("help")
                .to_string()
                .contains("`--sign-key` and `--sign-cert`")
        );
        assert!(matches!(
            run(None, Some("c.pem")),
            PublishError::CertificateWithoutKey
        ));
        assert_eq!(fs::read_dir(dir.path()).expect("read").count(), 1);
    }

    #[test]
    fn bad_stem_and_missing_eula_are_rejected_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("disk.raw");
        fs::write(&raw, vec![0u8; 1 << 20]).expect("write raw");
        let ui = quiet_ui();
        let options = PublishOptions::default();
        let upper = recipe(&RECIPE.replace("\"2.1\"", "\"2.1+RC1\""));
        let err = publish_artifacts(&upper, dir.path(), &raw, dir.path(), 0, &options, &ui)
            .expect_err("bad stem");
        assert!(matches!(&err, PublishError::FileName { stem } if stem == "web-2.1+RC1"));
        let eula = recipe(&RECIPE.replace("[ovf]\n", "[ovf]\neula = \"EULA.txt\"\n"));
        let err = publish_artifacts(&eula, dir.path(), &raw, dir.path(), 0, &options, &ui)
            .expect_err("missing eula");
        assert!(
            matches!(&err, PublishError::Eula { path, .. } if *path == dir.path().join("EULA.txt"))
        );
        assert_eq!(fs::read_dir(dir.path()).expect("read").count(), 1);
    }
}
