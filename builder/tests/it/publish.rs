//! `builder::publish::publish_artifacts` on a generated raw disk, checked with external
//! tools (`qemu-img`, the OVF schema validator, `sha256sum`, `openssl`, `tar`). A missing
//! tool prints `SKIPPED: <reason>` and the check is left out.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use builder::progress::{Ui, UiMode};
use builder::publish::{PublishOptions, PublishReport, publish_artifacts};

use crate::docs::skip_or_fail as skip;

const EPOCH: i64 = 1_700_000_000;
const MIB: usize = 1 << 20;

const RECIPE: &str = r#"
[appliance]
name = "demo"
version = "1.0.0"
description = "Publishing test appliance"
vendor = "jeos tests"
url = "https://example.org/demo"
[source]
suite = "trixie"
[packages]
install = ["hello"]
[disk]
formats = ["raw", "qcow2", "vmdk", "ova", "vhd", "gce"]
[vm]
cpus = 2
memory = "512MiB"
firmware = "efi"
disk-controller = "sata"
nic = "virtio"
[ovf]
annotation = "Built & published <by> jeos"
eula = "EULA.txt"
[[ovf.property]]
key = "demo.greeting"
value = "hello"
label = "Greeting"
user-configurable = true
"#;

/// Whether `name` runs; prints SKIPPED for `what` when it does not.
fn have(name: &str, version_arg: &str, what: &str) -> bool {
    let ok = Command::new(name)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!("{what}: `{name}` is not installed"));
    }
    ok
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// 8 MiB: a random MiB, a zero hole, a text-like MiB, zeros, a random tail block.
fn make_raw(path: &Path) {
    let mut disk = vec![0u8; 8 * MIB];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for chunk in disk[..MIB].chunks_mut(8) {
        chunk.copy_from_slice(&next().to_le_bytes());
    }
    let text = b"usr/lib/x86_64-linux-gnu/libc.so.6 jeos appliance nginx\n";
    for (i, b) in disk[3 * MIB..4 * MIB].iter_mut().enumerate() {
        *b = text[i % text.len()];
    }
    for chunk in disk[8 * MIB - 4096..].chunks_mut(8) {
        chunk.copy_from_slice(&next().to_le_bytes());
    }
    fs::write(path, disk).expect("write raw disk");
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    raw: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let raw = root.join("demo-1.0.0.raw");
    make_raw(&raw);
    fs::write(root.join("EULA.txt"), "Use at your own risk & <enjoy>.\n").expect("eula");
    Fixture {
        _dir: dir,
        root,
        raw,
    }
}

fn publish(f: &Fixture, out: &str, options: &PublishOptions) -> (PathBuf, PublishReport) {
    let recipe = builder::recipe::parse_str("demo.toml", RECIPE, Some(&f.root)).expect("recipe");
    let out_dir = f.root.join(out);
    fs::create_dir(&out_dir).expect("mkdir out");
    let ui = Ui::with_writer(UiMode::Plain, false, Box::new(std::io::sink()));
    let started = Instant::now();
    let report = publish_artifacts(&recipe, &f.root, &f.raw, &out_dir, EPOCH, options, &ui)
        .expect("publish");
    report_timing(&report, started.elapsed());
    assert_eq!(
        ui.warning_count(),
        0,
        "virtio-net is declared as such for the targets that have it"
    );
    (out_dir, report)
}

#[expect(
    clippy::print_stderr,
    reason = "the timing and sizes are the measurement asked for"
)]
fn report_timing(report: &PublishReport, elapsed: std::time::Duration) {
    eprintln!("publish_artifacts: {elapsed:?} (debug build) on an 8 MiB disk");
    for file in &report.files {
        eprintln!("  {} {} bytes", file.path.display(), file.size_bytes);
    }
    eprintln!("  vmdk populated: {:?}", report.vmdk_populated_bytes);
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn openssl_key(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    if !have("openssl", "version", "signature check") {
        return None;
    }
    let key = dir.join("sign.key");
    let cert = dir.join("sign.crt");
    let public = dir.join("sign.pub");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=jeos publish test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    run(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public));
    Some((key, cert, public))
}

#[test]
fn publish_writes_every_format_checked_by_external_tools() {
    let f = fixture();
    let keys = openssl_key(&f.root);
    let options = PublishOptions {
        sign_key: keys.as_ref().map(|k| k.0.clone()),
        sign_cert: keys.as_ref().map(|k| k.1.clone()),
        ..PublishOptions::default()
    };
    let (out, report) = publish(&f, "out", &options);

    // The report: names, order, sizes and digests match the files.
    let mut names: Vec<String> = report
        .files
        .iter()
        .map(|file| {
            assert_eq!(file.path.parent(), Some(out.as_path()));
            file.path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_owned()
        })
        .collect();
    let mut expected = vec![
        "demo-1.0.0.qcow2",
        "demo-1.0.0.vhd",
        "demo-1.0.0.gce.tar.gz",
        "demo-1.0.0-disk1.vmdk",
        "demo-1.0.0.ovf",
        "demo-1.0.0.mf",
        "demo-1.0.0.cert",
        "demo-1.0.0.ova",
    ];
    if keys.is_none() {
        expected.retain(|n| !n.ends_with(".cert"));
    }
    assert_eq!(names, expected);
    let mut on_disk: Vec<String> = fs::read_dir(&out)
        .expect("read out")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    on_disk.sort();
    names.sort();
    assert_eq!(on_disk, names, "no staging leftovers, nothing else");
    for file in &report.files {
        let bytes = fs::read(&file.path).expect("read output");
        assert_eq!(file.size_bytes, u64::try_from(bytes.len()).expect("size"));
        assert_eq!(file.sha256.len(), 64);
    }
    assert_eq!(report.capacity_bytes, 8 << 20);
    let populated = report.vmdk_populated_bytes.expect("vmdk written");
    assert!(populated > 0 && populated < 8 << 20, "{populated}");

    let raw = f.raw.as_path();
    let qcow2 = out.join("demo-1.0.0.qcow2");
    let vmdk = out.join("demo-1.0.0-disk1.vmdk");
    let vhd = out.join("demo-1.0.0.vhd");
    let ovf = out.join("demo-1.0.0.ovf");
    let mf = out.join("demo-1.0.0.mf");
    let ova = out.join("demo-1.0.0.ova");

    // sha256sum agrees with the report and, via the manifest, with the package.
    if have("sha256sum", "--version", "manifest check") {
        let sums: String = report
            .files
            .iter()
            .map(|file| format!("{}  {}\n", file.sha256, s(&file.path)))
            .collect();
        fs::write(f.root.join("report.sums"), sums).expect("sums");
        run(Command::new("sha256sum")
            .args(["-c", "--strict", "report.sums"])
            .current_dir(&f.root));
        let text = fs::read_to_string(&mf).expect("mf");
        let converted: String = text
            .lines()
            .map(|line| {
                let (file, hex) = line
                    .strip_prefix("SHA256(")
                    .and_then(|rest| rest.split_once(")= "))
                    .expect("SHA256(file)= hex");
                format!("{hex}  {file}\n")
            })
            .collect();
        assert_eq!(converted.lines().count(), 2, "{text}");
        fs::write(out.join("mf.sums"), converted).expect("sums");
        run(Command::new("sha256sum")
            .args(["-c", "--strict", "mf.sums"])
            .current_dir(&out));
        fs::remove_file(out.join("mf.sums")).expect("rm sums");
    }

    if have("qemu-img", "--version", "qcow2/vmdk check") {
        let info = run(Command::new("qemu-img").args(["info", "--output=json", s(&vmdk)]));
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
        assert_eq!(info["format"], "vmdk");
        assert_eq!(info["virtual-size"], 8 << 20);
        let vinfo =
            run(Command::new("qemu-img").args(["info", "--output=json", "-f", "vpc", s(&vhd)]));
        let vinfo: serde_json::Value = serde_json::from_slice(&vinfo.stdout).expect("json");
        assert_eq!(vinfo["virtual-size"], 8 << 20, "{vinfo}");
        assert_eq!(
            info["format-specific"]["data"]["create-type"], "streamOptimized",
            "{info}"
        );
        for (fmt, image) in [("qcow2", &qcow2), ("vmdk", &vmdk), ("vpc", &vhd)] {
            if fmt != "vpc" {
                // qemu-img has no `check` for vpc; `info` below verifies the footer.
                run(Command::new("qemu-img").args(["check", "-f", fmt, s(image)]));
            }
            run(Command::new("qemu-img").args([
                "compare",
                "-f",
                "raw",
                "-F",
                fmt,
                s(raw),
                s(image),
            ]));
        }
    }

    if have("xmllint", "--version", "ovf schema validation") {
        run(Command::new("xmllint")
            .env("LC_ALL", "C")
            .args(["--nonet", "--noout", "--schema"])
            .arg(ovf_schema())
            .arg(&ovf));
    }
    let xml = fs::read_to_string(&ovf).expect("ovf");
    for needle in [
        "<vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>",
        "<rasd:VirtualQuantity>2</rasd:VirtualQuantity>",
        "<rasd:VirtualQuantity>512</rasd:VirtualQuantity>",
        "vmware.sata.ahci",
        "<rasd:ResourceSubType>virtio-net</rasd:ResourceSubType>",
        "ovf:transport=\"iso com.vmware.guestInfo\"",
        "ovf:key=\"jeos.ipv4.address\"",
        "<Product>demo</Product>",
        "<Vendor>jeos tests</Vendor>",
        "<Version>1.0.0</Version>",
        "<ProductUrl>https://example.org/demo</ProductUrl>",
        "Built &amp; published &lt;by&gt; jeos",
        "Use at your own risk &amp; &lt;enjoy&gt;.",
        "ovf:key=\"demo.greeting\"",
        "ovf:href=\"demo-1.0.0-disk1.vmdk\"",
    ] {
        assert!(xml.contains(needle), "missing {needle} in\n{xml}");
    }
    assert!(
        xml.contains("firmware") && xml.contains("efi"),
        "efi firmware in\n{xml}"
    );

    if let Some((_, _, public)) = &keys {
        let cert = fs::read_to_string(out.join("demo-1.0.0.cert")).expect("cert");
        let first = cert.lines().next().expect("signature line");
        let hex = first
            .strip_prefix("SHA256(demo-1.0.0.mf)= ")
            .expect("signature line names the manifest");
        assert!(cert.contains("-----BEGIN CERTIFICATE-----"));
        let signature: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let sig = f.root.join("mf.sig");
        fs::write(&sig, signature).expect("sig");
        let verified = run(Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                s(public),
                "-signature",
                s(&sig),
            ])
            .arg(&mf));
        assert!(String::from_utf8_lossy(&verified.stdout).contains("Verified OK"));
        // A changed manifest no longer verifies.
        let tampered = f.root.join("tampered.mf");
        let mut bytes = fs::read(&mf).expect("mf");
        bytes[0] ^= 1;
        fs::write(&tampered, bytes).expect("tampered");
        let o = Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                s(public),
                "-signature",
                s(&sig),
            ])
            .arg(&tampered)
            .output()
            .expect("openssl");
        assert!(!o.status.success());
    }

    if have("tar", "--version", "ova member order") {
        let list = run(Command::new("tar").args(["-tf", s(&ova)]));
        let members: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let mut expected = vec![
            "demo-1.0.0.ovf",
            "demo-1.0.0.mf",
            "demo-1.0.0.cert",
            "demo-1.0.0-disk1.vmdk",
        ];
        if keys.is_none() {
            expected.retain(|n| !n.ends_with(".cert"));
        }
        assert_eq!(members, expected);
        // The members are the standalone files, byte for byte.
        let x = f.root.join("extracted");
        fs::create_dir(&x).expect("mkdir");
        run(Command::new("tar").args(["-xf", s(&ova), "-C", s(&x)]));
        for m in &members {
            assert_eq!(
                fs::read(x.join(m)).expect("member"),
                fs::read(out.join(m)).expect("file"),
                "{m}"
            );
        }
    }
}

#[test]
fn same_epoch_gives_identical_ova() {
    let f = fixture();
    let options = PublishOptions::default();
    let (a, _) = publish(&f, "a", &options);
    let (b, _) = publish(&f, "b", &options);
    for name in [
        "demo-1.0.0.ova",
        "demo-1.0.0.qcow2",
        "demo-1.0.0.vhd",
        "demo-1.0.0.gce.tar.gz",
        "demo-1.0.0-disk1.vmdk",
        "demo-1.0.0.ovf",
        "demo-1.0.0.mf",
    ] {
        let first = fs::read(a.join(name)).expect("first");
        assert!(
            first == fs::read(b.join(name)).expect("second"),
            "{name} differs"
        );
    }
    assert!(!a.join("demo-1.0.0.cert").exists(), "no cert without a key");
}

/// The DMTF DSP8023 schema the project carries (image-writer/tests/schemas/ovf), entered
/// through `jeos-vbox-machine.xsd` (DSP8023 plus VirtualBox's `vbox:Machine` section).
pub(crate) fn ovf_schema() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../image-writer/tests/schemas/ovf/jeos-vbox-machine.xsd")
}
