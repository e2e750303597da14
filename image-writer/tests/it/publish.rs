//! Publishing: VMDK/qcow2 conversion checked by external tools, OVF schema validation,
//! manifest, signature and OVA. A missing external tool prints `SKIPPED: <reason>` and the
//! test returns (fails under `CI=true`).
#![cfg(test)]

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use image_writer::ova::reporter::NoReporter;
use image_writer::qcow2::{Qcow2Config, read_qcow2, write_qcow2};
use image_writer::vmdk::{VmdkConfig, read_vmdk, write_vmdk};

use crate::skip;

/// Returns the tool's path when it runs (`--version`), else prints SKIPPED.
fn tool(name: &str, test: &str) -> Option<PathBuf> {
    let ok = Command::new(name)
        .arg(if name == "openssl" {
            "version"
        } else {
            "--version"
        })
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(PathBuf::from(name))
    } else {
        skip(&format!(
            "{test}: `{name}` not found (install it to run this test)"
        ));
        None
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compressible filesystem-like text.
fn text_bytes(len: usize) -> Vec<u8> {
    let words = [
        "usr",
        "lib",
        "x86_64",
        "linux",
        "gnu",
        "debian",
        "jeos",
        "appliance",
        "nginx",
        "etc",
        "0x7f454c46",
        "ELF",
        "systemd",
        "kernel",
        "\n",
        "=",
        "/",
        " ",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 7usize;
    while out.len() < len {
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        out.extend_from_slice(words[(i >> 16) % words.len()].as_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a raw disk of `size` bytes with the given (offset, bytes) regions; the rest is
/// a hole (reads as zeros).
fn make_raw(path: &Path, size: u64, regions: &[(u64, Vec<u8>)]) {
    let mut f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (offset, bytes) in regions {
        f.seek(SeekFrom::Start(*offset)).unwrap();
        f.write_all(bytes).unwrap();
    }
}

/// A mixed disk: random, zero, text, an all-zero grain after data, a partial last grain
/// (size is a sector multiple but not a grain multiple).
fn mixed_disk(dir: &Path) -> PathBuf {
    let raw = dir.join("mixed.raw");
    let size = 40 * 1024 * 1024 + 7 * 512;
    make_raw(
        &raw,
        size,
        &[
            (0, random_bytes(1, 3_000_000)),
            (5 * 1024 * 1024 + 100, text_bytes(2_000_000)),
            // Crosses the first grain-table boundary (32 MiB).
            (32 * 1024 * 1024 - 4096, random_bytes(2, 100_000)),
            (size - 512, text_bytes(512)),
        ],
    );
    raw
}

/// A large sparse disk (4 GiB + one sector) with three small data blocks.
fn sparse_disk(dir: &Path) -> PathBuf {
    let raw = dir.join("sparse.raw");
    let size = 4 * 1024 * 1024 * 1024 + 512;
    make_raw(
        &raw,
        size,
        &[
            (1024 * 1024, random_bytes(3, 70_000)),
            (3 * 1024 * 1024 * 1024 + 12_345 * 512, text_bytes(300_000)),
            (size - 512, random_bytes(4, 512)),
        ],
    );
    raw
}

fn qemu_img(args: &[&str]) -> (bool, String) {
    let o = Command::new("qemu-img").args(args).output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn vmdk_reader_matches_raw_for_mixed_disk() {
    // The 4 GiB sparse disk is compared by `qemu-img compare` below: flattening it here
    // would write and re-read 4 GiB in a debug build.
    let dir = tempfile::tempdir().unwrap();
    let medium = dir.path().join("medium.raw");
    // Data only in the third grain table, last grain partially used.
    make_raw(
        &medium,
        96 * 1024 * 1024 - 512,
        &[
            (70 * 1024 * 1024, random_bytes(5, 1000)),
            (96 * 1024 * 1024 - 1024, text_bytes(512)),
        ],
    );
    for raw in [mixed_disk(dir.path()), medium] {
        let out = raw.with_extension("vmdk");
        let report = write_vmdk(&raw, &out, &VmdkConfig::default(), &NoReporter).unwrap();
        let raw_len = fs::metadata(&raw).unwrap().len();
        assert_eq!(report.capacity_bytes, raw_len);
        assert!(report.populated_bytes < raw_len);
        let back = raw.with_extension("back");
        let mut w = std::io::BufWriter::new(fs::File::create(&back).unwrap());
        let info = read_vmdk(&out, Some(&mut w)).unwrap();
        drop(w);
        assert_eq!(info.grains, report.grains);
        assert!(info.descriptor.contains("createType=\"streamOptimized\""));
        assert_eq!(fs::metadata(&back).unwrap().len(), raw_len);
        assert!(
            files_equal(&raw, &back),
            "{} differs after round trip",
            raw.display()
        );
    }
}

fn files_equal(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let mut fa = std::io::BufReader::new(fs::File::open(a).unwrap());
    let mut fb = std::io::BufReader::new(fs::File::open(b).unwrap());
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    loop {
        let na = fa.read(&mut ba).unwrap();
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if fb.read_exact(&mut bb[..na]).is_err() || ba[..na] != bb[..na] {
            return false;
        }
    }
}

#[test]
fn vmdk_is_deterministic_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let raw = mixed_disk(dir.path());
    let a = dir.path().join("a.vmdk");
    let b = dir.path().join("b.vmdk");
    let one = VmdkConfig {
        threads: 1,
        ..VmdkConfig::default()
    };
    let four = VmdkConfig {
        threads: 4,
        ..VmdkConfig::default()
    };
    write_vmdk(&raw, &a, &one, &NoReporter).unwrap();
    write_vmdk(&raw, &b, &four, &NoReporter).unwrap();
    // Same name inside the descriptor: compare after renaming b's file name.
    let mut bytes_b = fs::read(&b).unwrap();
    let bytes_a = fs::read(&a).unwrap();
    let pos = bytes_b.windows(8).position(|w| w == b"\"b.vmdk\"").unwrap();
    bytes_b[pos + 1] = b'a';
    assert!(bytes_a == bytes_b, "output depends on the thread count");
}

#[test]
fn qemu_img_accepts_vmdk() {
    if tool("qemu-img", "qemu_img_accepts_vmdk").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for raw in [mixed_disk(dir.path()), sparse_disk(dir.path())] {
        let out = raw.with_extension("vmdk");
        write_vmdk(&raw, &out, &VmdkConfig::default(), &NoReporter).unwrap();
        let (ok, info) = qemu_img(&["info", "--output=json", path_str(&out)]);
        assert!(ok, "{info}");
        assert!(
            info.contains("\"create-type\": \"streamOptimized\""),
            "{info}"
        );
        assert!(info.contains("\"compressed\": true"), "{info}");
        let (ok, check) = qemu_img(&["check", "-f", "vmdk", path_str(&out)]);
        assert!(ok, "qemu-img check: {check}");
        let (ok, cmp) = qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "vmdk",
            path_str(&raw),
            path_str(&out),
        ]);
        assert!(ok, "qemu-img compare: {cmp}");
        assert!(cmp.contains("Images are identical"), "{cmp}");
    }
}

#[test]
fn qcow2_reader_matches_raw() {
    let dir = tempfile::tempdir().unwrap();
    let raw = mixed_disk(dir.path());
    for compress in [false, true] {
        let out = dir.path().join(format!("m{compress}.qcow2"));
        write_qcow2(&raw, &out, &Qcow2Config { compress }, &NoReporter).unwrap();
        let back = dir.path().join("back.raw");
        let mut w = std::io::BufWriter::new(fs::File::create(&back).unwrap());
        read_qcow2(&out, &mut w).unwrap();
        drop(w);
        assert!(files_equal(&raw, &back), "compress={compress}");
    }
}

#[test]
fn qemu_img_accepts_qcow2() {
    if tool("qemu-img", "qemu_img_accepts_qcow2").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for raw in [mixed_disk(dir.path()), sparse_disk(dir.path())] {
        for compress in [false, true] {
            let out = raw.with_extension(format!("{compress}.qcow2"));
            write_qcow2(&raw, &out, &Qcow2Config { compress }, &NoReporter).unwrap();
            let (ok, check) = qemu_img(&["check", "--output=json", "-f", "qcow2", path_str(&out)]);
            assert!(ok, "qemu-img check: {check}");
            assert!(!check.contains("\"corruptions\""), "{check}");
            assert!(!check.contains("\"leaks\""), "{check}");
            let (ok, cmp) = qemu_img(&[
                "compare",
                "-f",
                "raw",
                "-F",
                "qcow2",
                path_str(&raw),
                path_str(&out),
            ]);
            assert!(
                ok && cmp.contains("Images are identical"),
                "qemu-img compare: {cmp}"
            );
        }
    }
}

// ---------------------------------------------------------------- OVF, manifest, signature, OVA

use image_writer::manifest::{DigestAlgorithm, verify_manifest};
use image_writer::ova::list_ova;
use image_writer::ova::package::{OvfInputs, PackageSpec, SigningConfig, write_ovf_package};
use image_writer::ovf::{
    DiskController, Firmware, NicModel, OvfContext, OvfDisk, OvfNetwork, OvfOs, OvfProduct,
    OvfProperty, OvfTarget, OvfVm, render_ovf,
};

fn ovf_inputs() -> OvfInputs {
    OvfInputs {
        network: OvfNetwork {
            name: "VM Network".into(),
            description: "The VM Network network".into(),
        },
        vm: OvfVm {
            cpus: 2,
            memory_mib: 512,
            firmware: Firmware::Efi,
            controller: DiskController::LsiLogic,
            nic: NicModel::E1000,
            hardware_version: 14,
            targets: vec![OvfTarget::Vmware, OvfTarget::Virtualbox, OvfTarget::Generic],
        },
        os: OvfOs::default(),
        product: OvfProduct {
            product: "nginx".into(),
            vendor: "Example Org & Co".into(),
            version: "1.0.0".into(),
            full_version: "1.0.0+jeos".into(),
            product_url: Some("https://example.org/nginx?a=1&b=2".into()),
            properties: vec![OvfProperty {
                key: "guestinfo.hostname".into(),
                kind: "string".into(),
                value: "nginx".into(),
                user_configurable: true,
                label: "Hostname".into(),
                description: "The appliance's <hostname>".into(),
                password: false,
                category: Some("Network".into()),
            }],
        },
        annotation: Some("Static web server built by jeos".into()),
        eula: Some("Use at your own risk.\nNo warranty.".into()),
    }
}

fn typical_context() -> OvfContext {
    let i = ovf_inputs();
    OvfContext {
        name: "nginx".into(),
        disks: vec![OvfDisk {
            href: "nginx-disk1.vmdk".into(),
            file_bytes: 24_117_760,
            capacity_bytes: 1_073_741_824,
            populated_bytes: 67_108_864,
        }],
        network: i.network,
        vm: i.vm,
        os: i.os,
        product: i.product,
        annotation: i.annotation,
        eula: i.eula,
    }
}

/// The DMTF DSP8023 schema the project carries (tests/schemas/ovf), entered through
/// `jeos-vbox-machine.xsd`, which imports it unchanged and declares VirtualBox's
/// `vbox:Machine` as a member of the `ovf:Section` group (DSP8023's extension point).
pub(crate) fn ovf_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/ovf/jeos-vbox-machine.xsd")
}

/// `xmllint --nonet --noout --schema <DSP8023 + vbox:Machine>`, ready for the file argument, when
/// xmllint is installed.
fn ovf_validator(test: &str) -> Option<Command> {
    tool("xmllint", test)?;
    let mut cmd = Command::new("xmllint");
    cmd.env("LC_ALL", "C")
        .args(["--nonet", "--noout", "--schema"])
        .arg(ovf_schema());
    Some(cmd)
}

#[test]
fn ovf_descriptor_snapshot() {
    insta::assert_snapshot!("ovf_descriptor", render_ovf(&typical_context()).unwrap());
}

#[test]
fn ovf_descriptor_is_schema_valid() {
    if ovf_validator("ovf_descriptor_is_schema_valid").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut variants = vec![typical_context()];
    let mut c = typical_context();
    c.vm.controller = DiskController::Sata;
    c.vm.nic = NicModel::Vmxnet3;
    c.vm.firmware = Firmware::Bios;
    c.annotation = None;
    c.eula = None;
    c.product.product_url = None;
    c.product.properties.clear();
    variants.push(c);
    // One descriptor per target set a recipe can ask for, with a virtio NIC where allowed.
    for targets in [
        vec![OvfTarget::Vmware],
        vec![OvfTarget::Virtualbox],
        vec![OvfTarget::Generic],
        vec![OvfTarget::Virtualbox, OvfTarget::Generic],
    ] {
        let mut c = typical_context();
        if !targets.contains(&OvfTarget::Vmware) {
            c.vm.nic = NicModel::Virtio;
        }
        c.product.properties[0].password = true;
        c.vm.targets = targets;
        variants.push(c);
    }
    for (i, ctx) in variants.iter().enumerate() {
        let path = dir.path().join(format!("v{i}.ovf"));
        fs::write(&path, render_ovf(ctx).unwrap()).unwrap();
        let mut validate = ovf_validator("ovf_descriptor_is_schema_valid").unwrap();
        let o = validate.arg(&path).output().unwrap();
        assert!(
            o.status.success(),
            "variant {i}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Generates an RSA key and self-signed certificate with openssl (PKCS#8 and PKCS#1).
fn openssl_key(dir: &Path, test: &str) -> Option<(PathBuf, PathBuf, PathBuf)> {
    tool("openssl", test)?;
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=jeos test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let pubkey = dir.join("pub.pem");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&pubkey)
        .output()
        .unwrap();
    assert!(ok.status.success());
    Some((key, cert, pubkey))
}

fn openssl_verify(pubkey: &Path, cert_file: &Path, mf: &Path) {
    let text = fs::read_to_string(cert_file).unwrap();
    let first = text.lines().next().unwrap();
    let mf_name = mf.file_name().unwrap().to_str().unwrap();
    let prefix = format!("SHA256({mf_name})= ");
    assert!(first.starts_with(&prefix), "{first}");
    assert!(text.contains("-----BEGIN CERTIFICATE-----"));
    let hex = &first[prefix.len()..];
    let sig: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let sig_path = cert_file.with_extension("sig");
    fs::write(&sig_path, sig).unwrap();
    let o = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(pubkey)
        .arg("-signature")
        .arg(&sig_path)
        .arg(mf)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Verified OK"));
}

#[test]
fn signature_verifies_with_openssl_for_pkcs8_and_pkcs1_keys() {
    let dir = tempfile::tempdir().unwrap();
    let Some((key, cert, pubkey)) = openssl_key(dir.path(), "signature_verifies_with_openssl")
    else {
        return;
    };
    let pkcs1 = dir.path().join("key1.pem");
    let o = Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&pkcs1)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        fs::read_to_string(&pkcs1)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    let mf = dir.path().join("x.mf");
    fs::write(&mf, "SHA256(x.ovf)= 00\n").unwrap();
    for k in [&key, &pkcs1] {
        let text = image_writer::sign::sign_manifest(
            &fs::read(&mf).unwrap(),
            "x.mf",
            &fs::read_to_string(k).unwrap(),
            &fs::read_to_string(&cert).unwrap(),
        )
        .unwrap();
        let cert_file = dir.path().join("x.cert");
        fs::write(&cert_file, text).unwrap();
        openssl_verify(&pubkey, &cert_file, &mf);
    }
}

fn package_spec(raw: &Path, out_dir: &Path, signing: Option<SigningConfig>) -> PackageSpec {
    PackageSpec {
        name: "nginx".into(),
        raw_disk: raw.to_path_buf(),
        qcow2: Some(image_writer::qcow2::Qcow2Config::default()),
        vmdk: VmdkConfig::default(),
        ovf: ovf_inputs(),
        digest: DigestAlgorithm::Sha256,
        signing,
        epoch: 1_700_000_000,
        out_dir: out_dir.to_path_buf(),
    }
}

#[test]
fn package_is_complete_verifiable_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let raw = mixed_disk(dir.path());
    let keys = openssl_key(dir.path(), "package (signature part)");
    let signing = keys.as_ref().map(|(k, c, _)| SigningConfig {
        key_pem: k.clone(),
        certificate_pem: c.clone(),
    });
    let out1 = dir.path().join("out1");
    let out2 = dir.path().join("out2");
    fs::create_dir(&out1).unwrap();
    fs::create_dir(&out2).unwrap();
    let r1 = write_ovf_package(&package_spec(&raw, &out1, signing.clone()), &NoReporter).unwrap();
    let r2 = write_ovf_package(&package_spec(&raw, &out2, signing.clone()), &NoReporter).unwrap();

    // Only finished files, no staging leftovers.
    let mut names: Vec<String> = fs::read_dir(&out1)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![
        "nginx-disk1.qcow2",
        "nginx-disk1.vmdk",
        "nginx.mf",
        "nginx.ova",
        "nginx.ovf",
    ];
    if signing.is_some() {
        expected.push("nginx.cert");
        expected.sort();
    }
    assert_eq!(names, expected);
    for (a, b) in r1.files.iter().zip(&r2.files) {
        assert_eq!(
            a.digest_hex,
            b.digest_hex,
            "{} is not reproducible",
            a.path.display()
        );
        assert_eq!(a.size_bytes, fs::metadata(&a.path).unwrap().len());
    }
    assert_eq!(
        fs::read(out1.join("nginx.ova")).unwrap(),
        fs::read(out2.join("nginx.ova")).unwrap()
    );

    // The descriptor references the vmdk with its exact size.
    let ovf = fs::read_to_string(out1.join("nginx.ovf")).unwrap();
    let vmdk_size = fs::metadata(out1.join("nginx-disk1.vmdk")).unwrap().len();
    assert!(ovf.contains(&format!(
        "ovf:href=\"nginx-disk1.vmdk\" ovf:id=\"file1\" ovf:size=\"{vmdk_size}\""
    )));
    assert!(ovf.contains(&format!("ovf:populatedSize=\"{}\"", r1.populated_bytes)));

    // Manifest: .ovf first, recomputed digests match, and sha256sum agrees.
    let mf = fs::read_to_string(out1.join("nginx.mf")).unwrap();
    let entries = verify_manifest(&mf, &out1).unwrap();
    assert_eq!(entries[0].file, "nginx.ovf");
    assert_eq!(entries[1].file, "nginx-disk1.vmdk");
    if tool("sha256sum", "package (sha256sum part)").is_some() {
        let sums: String = entries
            .iter()
            .map(|e| format!("{}  {}\n", e.hex(), e.file))
            .collect();
        fs::write(out1.join("sums"), sums).unwrap();
        let o = Command::new("sha256sum")
            .args(["-c", "sums"])
            .current_dir(&out1)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        fs::remove_file(out1.join("sums")).unwrap();
    }
    if let Some((_, _, pubkey)) = &keys {
        openssl_verify(pubkey, &out1.join("nginx.cert"), &out1.join("nginx.mf"));
    }

    // OVA: member order and headers.
    let ova = out1.join("nginx.ova");
    let members = list_ova(&ova).unwrap();
    let order: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    if signing.is_some() {
        assert_eq!(
            order,
            ["nginx.ovf", "nginx.mf", "nginx.cert", "nginx-disk1.vmdk"]
        );
    } else {
        assert_eq!(order, ["nginx.ovf", "nginx.mf", "nginx-disk1.vmdk"]);
    }
    for m in &members {
        assert_eq!(
            (m.mode, m.uid, m.gid, m.mtime, m.typeflag),
            (0o644, 0, 0, 1_700_000_000, b'0')
        );
        assert_eq!((m.uname.as_str(), m.gname.as_str()), ("", ""));
        assert_eq!(m.size, fs::metadata(out1.join(&m.name)).unwrap().len());
    }
    assert_eq!(fs::metadata(&ova).unwrap().len() % 10_240, 0);
    if tool("tar", "package (tar part)").is_some() {
        let o = Command::new("tar")
            .args(["-tvf"])
            .arg(&ova)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(o.status.success());
        let listing = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), members.len(), "{listing}");
        for (line, m) in lines.iter().zip(&members) {
            assert!(line.starts_with("-rw-r--r-- 0/0"), "{line}");
            assert!(
                line.contains(&format!(" {} 2023-11-14 22:13 {}", m.size, m.name)),
                "{line}"
            );
        }
    }
    if let Some(mut validate) = ovf_validator("package (schema part)") {
        // The descriptor inside the OVA is `nginx.ovf` (first member, checked above).
        let o = validate.arg(out1.join("nginx.ovf")).output().unwrap();
        assert!(
            o.status.success(),
            "{:?} {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn package_refuses_incompatible_settings_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let raw = mixed_disk(dir.path());
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut spec = package_spec(&raw, &out, None);
    spec.ovf.vm.controller = DiskController::Ide; // with EFI: an error finding
    let err = write_ovf_package(&spec, &NoReporter).unwrap_err();
    assert!(err.to_string().contains("1 compatibility error"), "{err}");
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "nothing half-written"
    );
}

#[test]
fn vmdk_structure_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let raw = mixed_disk(dir.path());
    let out = dir.path().join("mixed.vmdk");
    let report = write_vmdk(&raw, &out, &VmdkConfig::default(), &NoReporter).unwrap();
    let info = read_vmdk(&out, None).unwrap();
    insta::assert_snapshot!(
        "vmdk_structure",
        format!(
            "{report:#?}\n{:#?}\ngrains: {}\ngrain tables: {}\n{}",
            info.header, info.grains, info.grain_tables, info.descriptor
        )
    );
}

/// Records reporter events, as STYLE.md asks for reporter tests.
#[derive(Default)]
struct RecordingReporter(std::sync::Mutex<Vec<String>>);

impl image_writer::ova::reporter::PublishReporter for RecordingReporter {
    fn on_file_started(&self, file: &str, total_bytes: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("started {file} {total_bytes}"));
    }
    fn on_file_finished(&self, file: &str, _size_bytes: u64) {
        self.0.lock().unwrap().push(format!("finished {file}"));
    }
    fn on_finding(&self, finding: &image_writer::ovf::Finding) {
        self.0.lock().unwrap().push(format!(
            "finding {:?}: {}",
            finding.severity, finding.message
        ));
    }
}

#[test]
fn package_reports_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let raw = mixed_disk(dir.path());
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut spec = package_spec(&raw, &out, None);
    spec.ovf.vm.nic = NicModel::Vmxnet3; // a warning finding, not an error
    spec.ovf.vm.targets = vec![OvfTarget::Vmware, OvfTarget::Virtualbox];
    let reporter = RecordingReporter::default();
    let report = write_ovf_package(&spec, &reporter).unwrap();
    assert_eq!(
        report.findings.len(),
        2,
        "vmxnet3 + capacity not a MiB multiple"
    );
    insta::assert_snapshot!("package_events", reporter.0.lock().unwrap().join("\n"));
}

/// Flips bytes and truncates valid files: every reader must return an error or a result,
/// never panic or allocate without bound.
#[test]
fn readers_survive_corrupt_input() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("small.raw");
    make_raw(
        &raw,
        3 * 65536 + 1024,
        &[
            (1000, random_bytes(9, 70_000)),
            (150_000, text_bytes(30_000)),
        ],
    );
    let vmdk = dir.path().join("s.vmdk");
    let qcow2 = dir.path().join("s.qcow2");
    write_vmdk(&raw, &vmdk, &VmdkConfig::default(), &NoReporter).unwrap();
    write_qcow2(&raw, &qcow2, &Qcow2Config { compress: true }, &NoReporter).unwrap();
    let victim = dir.path().join("victim");
    for (good, kind) in [(&vmdk, "vmdk"), (&qcow2, "qcow2")] {
        let bytes = fs::read(good).unwrap();
        let mut positions: Vec<usize> = (0..bytes.len()).step_by(1009).collect();
        positions.extend([
            0,
            12,
            20,
            56,
            64,
            77,
            36,
            40,
            48,
            bytes.len() - 1,
            bytes.len() - 1024 + 56,
        ]);
        for (n, pos) in positions.into_iter().enumerate() {
            let mut b = bytes.clone();
            b[pos] ^= 0x5a ^ u8::try_from(n % 200).unwrap();
            if n % 7 == 0 {
                b.truncate(pos);
            }
            fs::write(&victim, &b).unwrap();
            let mut sink = Vec::new();
            match kind {
                "vmdk" => drop(read_vmdk(&victim, Some(&mut sink))),
                _ => drop(read_qcow2(&victim, &mut sink)),
            }
            assert!(
                sink.len() <= 3 * 65536 + 1024,
                "{kind}: output larger than the disk"
            );
        }
    }
    let manifest = "SHA256(a.ovf)= ".to_owned() + &"ab".repeat(32) + "\n";
    for cut in 0..manifest.len() {
        drop(image_writer::manifest::parse_manifest(&manifest[..cut]));
    }
}

/// A whole-MiB disk with data at both ends (where GPT keeps its two headers).
fn cloud_disk(dir: &Path) -> PathBuf {
    let raw = dir.join("cloud.raw");
    let size = 24 * 1024 * 1024;
    make_raw(
        &raw,
        size,
        &[
            (0, random_bytes(5, 70_000)),
            (9 * 1024 * 1024 + 512, text_bytes(1_500_000)),
            (size - 512 * 33, random_bytes(6, 512 * 33)),
        ],
    );
    raw
}

#[test]
fn vhd_is_reproducible_checksummed_and_equal_to_raw() {
    use image_writer::vhd::{read_footer, write_vhd};
    let dir = tempfile::tempdir().unwrap();
    let raw = cloud_disk(dir.path());
    let (a, b) = (dir.path().join("a.vhd"), dir.path().join("b.vhd"));
    write_vhd(&raw, &a, 1_700_000_000, &NoReporter).unwrap();
    write_vhd(&raw, &b, 1_700_000_000, &NoReporter).unwrap();
    assert!(files_equal(&a, &b), "two writes differ");
    let bytes = fs::read(&a).unwrap();
    assert_eq!(bytes.len(), 24 * 1024 * 1024 + 512);
    assert_eq!(&bytes[..bytes.len() - 512], &fs::read(&raw).unwrap()[..]);
    let footer: [u8; 512] = bytes[bytes.len() - 512..].try_into().unwrap();
    let info = read_footer(&footer).unwrap();
    assert!(info.checksum_ok && info.disk_type == 2, "{info:?}");
    // Not a whole MiB: refused, nothing written.
    let odd = dir.path().join("odd.raw");
    make_raw(&odd, 1024 * 1024 + 512, &[]);
    let out = dir.path().join("odd.vhd");
    assert!(write_vhd(&odd, &out, 0, &NoReporter).is_err());
    assert!(!out.exists());
    if tool(
        "qemu-img",
        "vhd_is_reproducible_checksummed_and_equal_to_raw",
    )
    .is_none()
    {
        return;
    }
    // qemu's vpc driver verifies the footer checksum when it opens the image.
    let (ok, info) = qemu_img(&["info", "--output=json", "-f", "vpc", path_str(&a)]);
    assert!(ok, "qemu-img info: {info}");
    assert!(info.contains("\"virtual-size\": 25165824"), "{info}");
    let (ok, cmp) = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "vpc",
        path_str(&raw),
        path_str(&a),
    ]);
    assert!(ok, "qemu-img compare: {cmp}");
    let mut corrupt = bytes.clone();
    let n = corrupt.len();
    corrupt[n - 512 + 45] ^= 1;
    fs::write(&b, &corrupt).unwrap();
    let (ok, out) = qemu_img(&["info", "-f", "vpc", path_str(&b)]);
    assert!(
        !ok || out.contains("checksum"),
        "a corrupt footer was accepted: {out}"
    );
}

#[test]
fn gce_archive_is_reproducible_and_holds_the_raw_disk() {
    use image_writer::gce::write_gce;
    let dir = tempfile::tempdir().unwrap();
    let raw = cloud_disk(dir.path());
    let (a, b) = (dir.path().join("a.tar.gz"), dir.path().join("b.tar.gz"));
    write_gce(&raw, &a, 1_700_000_000, &NoReporter).unwrap();
    write_gce(&raw, &b, 1_700_000_000, &NoReporter).unwrap();
    assert!(files_equal(&a, &b), "two writes differ");
    let Some(tar) = tool("tar", "gce_archive_is_reproducible_and_holds_the_raw_disk") else {
        return;
    };
    let listing = Command::new(&tar)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .args(["-tvzf", path_str(&a)])
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(
        listing.contains("-rw-r--r-- 0/0")
            && listing.contains("25165824 2023-11-14 22:13 disk.raw"),
        "{listing}"
    );
    let out = dir.path().join("x");
    fs::create_dir(&out).unwrap();
    let o = Command::new(&tar)
        .args(["-xzf", path_str(&a), "-C", path_str(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(files_equal(&raw, &out.join("disk.raw")));
    if tool(
        "qemu-img",
        "gce_archive_is_reproducible_and_holds_the_raw_disk",
    )
    .is_some()
    {
        let (ok, cmp) = qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            path_str(&raw),
            path_str(&out.join("disk.raw")),
        ]);
        assert!(ok, "qemu-img compare: {cmp}");
    }
}
