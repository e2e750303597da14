//! Issue #15: deploy-time configuration reaches the guest. The example nginx image (built
//! once, shared with the other boot tests) boots in QEMU with
//! - an OVF environment (`ovf-env.xml` on an ISO 9660 CD-ROM made with xorriso): static
//!   IPv4 address, host name and the page text property;
//! - a NoCloud seed (`cidata` ISO: `meta-data` + `network-config` v2, static IPv4 and
//!   IPv6) plus the page text from QEMU `fw_cfg` `opt/jeos/page.text`.
//!
//! QEMU's user network forwards a host port to the *static* guest address (not the
//! DHCP one, 10.0.2.15), so an answer proves the address; the console's ready line names
//! the host name guest-init set; the page proves the application setting.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::appliances::built;
use crate::common::{TestDir, free_port, qemu_accel};

/// Skips loudly, or fails under `CI=true` (a skip is not a pass there).
fn missing(what: &str) {
    crate::common::prerequisite(false, what);
}

fn runs(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An ISO 9660 image of `files` with volume id `volume` (Rock Ridge + Joliet names).
fn make_iso(dir: &TestDir, volume: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let content = dir.path().join(format!("{volume}-content"));
    std::fs::create_dir_all(&content).expect("mkdir");
    for (name, text) in files {
        std::fs::write(content.join(name), text).expect("write seed file");
    }
    let iso = dir.path().join(format!("{volume}.iso"));
    let out = Command::new("xorriso")
        .env("LC_ALL", "C")
        .args(["-as", "mkisofs", "-quiet", "-r", "-J", "-V", volume, "-o"])
        .arg(&iso)
        .arg(&content)
        .output()
        .expect("run xorriso");
    assert!(
        out.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

fn http_get(port: u16) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Boots the nginx raw disk with `extra` QEMU arguments and a port forwarded to
/// `guest_ip:80`; waits for `page` and the ready line naming `hostname`; returns the
/// console.
fn boot_once(
    raw: &Path,
    extra: &[String],
    guest_ip: &str,
    page: &str,
    hostname: &str,
) -> Result<String, String> {
    let dir = TestDir::new();
    let log = dir.path().join("console.log");
    let port = free_port();
    let accel = qemu_accel();
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-accel", accel, "-m", "512", "-smp", "1", "-display", "none",
        ])
        .args(["-no-reboot", "-monitor", "none", "-serial"])
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,snapshot=on", raw.display()))
        // `-netdev` + `-device`: with the `-nic user,...` shorthand QEMU 7.2's user network
        // did not reach a guest address other than its DHCP one here.
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,hostfwd=tcp:127.0.0.1:{port}-{guest_ip}:80"
        ))
        .args(["-device", "e1000,netdev=n0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");
    let _qemu = Qemu(child);
    let started = Instant::now();
    let ready = format!("jeos: {hostname} ready");
    let console = || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_secs(2));
        last = http_get(port);
        if last.as_deref().is_some_and(|a| a.contains(page)) && console().contains(&ready) {
            eprintln!(
                "deploy: `{page}` from {guest_ip} as {hostname} {:.1}s after QEMU started",
                started.elapsed().as_secs_f64()
            );
            return Ok(console());
        }
        if console().contains("Kernel panic") {
            break;
        }
    }
    Err(format!(
        "no `{page}` from {guest_ip} / no `{ready}` after {:?}; last answer {last:?}\nconsole:\n{}",
        started.elapsed(),
        console()
    ))
}

/// [`boot_once`], repeated once when the kernel panicked early: under TCG on a loaded
/// host Linux's IO-APIC timer check sometimes fails ("IO-APIC + timer doesn't work")
/// before anything of jeos runs.
fn boot_configured(
    raw: &Path,
    extra: &[String],
    guest_ip: &str,
    page: &str,
    hostname: &str,
) -> String {
    match boot_once(raw, extra, guest_ip, page, hostname) {
        Ok(console) => console,
        Err(first) if first.contains("IO-APIC + timer doesn't work") => {
            eprintln!("deploy: the kernel's timer check failed under TCG; booting again");
            boot_once(raw, extra, guest_ip, page, hostname).unwrap_or_else(|e| panic!("{e}"))
        }
        Err(first) => panic!("{first}"),
    }
}

fn prerequisites() -> bool {
    for tool in ["qemu-system-x86_64", "xorriso"] {
        if !runs(tool) {
            missing(&format!("`{tool}` is not installed (scripts/install-deps)"));
            return false;
        }
    }
    true
}

const OVF_ENV: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" oe:id="nginx">
  <PlatformSection><Kind>QEMU</Kind></PlatformSection>
  <PropertySection>
    <Property oe:key="jeos.hostname" oe:value="web-ovf"/>
    <Property oe:key="jeos.ipv4.address" oe:value="10.0.2.20/24"/>
    <Property oe:key="jeos.ipv4.gateway" oe:value="10.0.2.2"/>
    <Property oe:key="jeos.dns" oe:value="10.0.2.3"/>
    <Property oe:key="page.text" oe:value="configured by the OVF environment &amp; ISO"/>
  </PropertySection>
</Environment>
"#;

#[test]
fn issue_15_ovf_environment_iso_sets_address_hostname_and_page() {
    if !prerequisites() {
        return;
    }
    let Some(app) = built("nginx") else { return };
    let dir = TestDir::new();
    let iso = make_iso(&dir, "OVF_ENV", &[("ovf-env.xml", OVF_ENV)]);
    let console = boot_configured(
        &app.raw,
        &[
            "-drive".into(),
            format!("file={},media=cdrom,readonly=on", iso.display()),
        ],
        "10.0.2.20",
        "configured by the OVF environment & ISO",
        "web-ovf",
    );
    assert!(
        console.contains("deploy: ovf-env.xml on /dev/sr0"),
        "{console}"
    );
}

const META_DATA: &str = "instance-id: iid-jeos-test\nlocal-hostname: web-nocloud\n";
const NETWORK_CONFIG: &str = "version: 2\nethernets:\n  nic0:\n    match:\n      name: \"e*\"\n    dhcp4: false\n    addresses:\n      - 10.0.2.30/24\n      - \"fec0::30/64\"\n    routes:\n      - to: default\n        via: 10.0.2.2\n    nameservers:\n      addresses: [10.0.2.3]\n";

#[test]
fn issue_15_nocloud_seed_and_fw_cfg_set_address_hostname_and_page() {
    if !prerequisites() {
        return;
    }
    let Some(app) = built("nginx") else { return };
    let dir = TestDir::new();
    let iso = make_iso(
        &dir,
        "cidata",
        &[
            ("meta-data", META_DATA),
            ("network-config", NETWORK_CONFIG),
            ("user-data", "#cloud-config\n"),
        ],
    );
    let console = boot_configured(
        &app.raw,
        &[
            "-drive".into(),
            format!("file={},media=cdrom,readonly=on", iso.display()),
            "-fw_cfg".into(),
            "name=opt/jeos/page.text,string=configured by NoCloud and fw_cfg".into(),
        ],
        "10.0.2.30",
        "configured by NoCloud and fw_cfg",
        "web-nocloud",
    );
    assert!(console.contains("deploy: nocloud on /dev/sr0"), "{console}");
    assert!(
        console.contains("deploy: fw_cfg opt/jeos: 1 value(s)"),
        "{console}"
    );
    assert!(
        console.contains("fec0::30/64"),
        "IPv6 address not applied:\n{console}"
    );
}

/// Issue #15: hardware the kernel cannot drive is a build error naming the module and the
/// fix (the cloud kernel has no e1000), and nothing is written.
#[test]
fn issue_15_cloud_kernel_with_e1000_fails_the_build() {
    if crate::resolve::reachable_mirror("trixie").is_none() {
        return;
    }
    let text = std::fs::read_to_string(crate::common::recipes_dir().join("memcached.toml"))
        .expect("memcached recipe")
        .replace("nic = \"virtio\"", "nic = \"e1000\"");
    assert!(text.contains("flavour = \"cloud\"") && text.contains("nic = \"e1000\""));
    let dir = TestDir::new();
    let recipe = dir.create("cloudnic/memcached.toml", &text);
    let out = dir.path().join("dist");
    let output = crate::appliances::build_into(&recipe, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for needle in [
        "`[vm] nic = \"e1000\"` needs the kernel module `e1000`",
        "cloud-amd64",
        "nic = \"virtio\"",
        "[kernel] flavour =",
        "\"generic\"",
    ] {
        assert!(stderr.contains(needle), "`{needle}` not in:\n{stderr}");
    }
    let leftovers = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        leftovers,
        0,
        "the failed build left files in {}",
        out.display()
    );
}
