//! Issue #15: virt-v2v converts the nginx OVA built with `[disk] convertible = true`, and
//! the converted disk boots in QEMU (OVMF, virtio disk and NIC) and serves the page.
//!
//! Needs Debian's `virt-v2v`, `libguestfs-tools`, `nbdkit`, `libnbd-bin`, a kernel for
//! libguestfs's appliance (`linux-image-amd64`: supermin builds it from the host's
//! `/boot/vmlinuz-*`), `qemu-system-x86`, `qemu-utils` and `ovmf` (all in
//! `scripts/install-deps`). libguestfs runs with `LIBGUESTFS_BACKEND=direct` and
//! `LIBGUESTFS_BACKEND_SETTINGS=force_tcg` (no KVM needed; about 3-4 minutes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::appliances::{built, nginx_variant};
use crate::common::{
    OVMF_CODE, OVMF_VARS, TestDir, first_file, free_port, prerequisite, qemu_accel,
};

/// How long virt-v2v may take (it took 3 min 19 s under TCG by hand).
const V2V_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long the converted guest may take to serve the page (TCG).
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A kernel supermin can build libguestfs's appliance from.
fn host_kernel() -> bool {
    std::env::var_os("SUPERMIN_KERNEL").is_some()
        || std::fs::read_dir("/boot").is_ok_and(|dir| {
            dir.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// Runs `cmd`, killing it after `limit`; its output, or `None` on timeout.
fn run_with_timeout(cmd: &mut Command, limit: Duration, log: &Path) -> Option<Output> {
    let file = std::fs::File::create(log).expect("log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .expect("start virt-v2v");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for virt-v2v") {
            return Some(Output {
                status,
                stdout: std::fs::read(log).unwrap_or_default(),
                stderr: Vec::new(),
            });
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A running QEMU; killed on drop.
struct Vm {
    child: Child,
    log: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots the converted qcow2 as virt-v2v's KVM output expects: UEFI, virtio-blk, virtio-net.
fn boot_converted(dir: &Path, disk: &Path, host_port: u16) -> Vm {
    let code = first_file(&OVMF_CODE).expect("checked");
    let vars = dir.join("vars.fd");
    std::fs::copy(first_file(&OVMF_VARS).expect("checked"), &vars).expect("copy OVMF vars");
    let log = dir.join("console.log");
    let accel = qemu_accel();
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-accel", accel, "-m", "512", "-smp", "1", "-display", "none",
        ])
        .args(["-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={code}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=qcow2,if=virtio,snapshot=on",
            disk.display()
        ))
        .arg("-nic")
        .arg(format!(
            "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{host_port}-:80"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");
    Vm { child, log }
}

fn http_get(port: u16) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// A text file on the EFI system partition of `image` (raw or qcow2).
fn esp_text(image: &Path, path: &str) -> String {
    let disk = image_writer::image::open_image(image).expect("open the image");
    let bytes = disk.esp_file(path, 65536).expect("read the ESP file");
    String::from_utf8(bytes).expect("UTF-8")
}

/// The `kernel` line of a GRUB-legacy configuration.
fn kernel_line(menu: &str) -> Option<String> {
    menu.lines()
        .map(str::trim)
        .find(|l| l.starts_with("kernel "))
        .map(str::to_owned)
}

#[test]
fn issue_15_virt_v2v_converts_the_nginx_ova_and_the_result_serves_http() {
    if !prerequisite(
        runs("virt-v2v", "--version"),
        "virt-v2v is not installed (Debian: virt-v2v libguestfs-tools nbdkit libnbd-bin)",
    ) || !prerequisite(
        runs("qemu-system-x86_64", "--version") && runs("qemu-img", "--version"),
        "QEMU is not installed (Debian: qemu-system-x86 qemu-utils)",
    ) || !prerequisite(
        first_file(&OVMF_CODE).is_some() && first_file(&OVMF_VARS).is_some(),
        "OVMF is not installed (Debian: ovmf)",
    ) || !prerequisite(
        host_kernel(),
        "no kernel in /boot for libguestfs's appliance (Debian: linux-image-amd64, or set SUPERMIN_KERNEL)",
    ) {
        return;
    }
    let Some(base) = built("nginx") else { return };
    let raw = nginx_variant(
        &base,
        "convertible",
        &[("[disk]\n", "[disk]\nconvertible = true\n")],
    );
    let ova = raw.with_extension("ova");
    assert!(ova.is_file(), "{} missing", ova.display());

    let dir = TestDir::new();
    let out = dir.path().join("converted");
    std::fs::create_dir_all(&out).expect("output dir");
    let log = dir.path().join("virt-v2v.log");
    let start = Instant::now();
    let output = run_with_timeout(
        Command::new("virt-v2v")
            .env("LC_ALL", "C")
            .env("LIBGUESTFS_BACKEND", "direct")
            .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
            .arg("-i")
            .arg("ova")
            .arg(&ova)
            .args(["-o", "local", "-of", "qcow2", "-on", "nginx-v2v", "-os"])
            .arg(&out),
        V2V_TIMEOUT,
        &log,
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let Some(output) = output else {
        panic!("virt-v2v did not finish in {V2V_TIMEOUT:?}:\n{text}");
    };
    assert!(output.status.success(), "virt-v2v failed:\n{text}");
    eprintln!(
        "virt-v2v converted the OVA in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    // virt-v2v recognised the guest as the Debian it is, with virtio drivers.
    assert!(
        text.contains("This guest has virtio drivers installed"),
        "{text}"
    );
    let xml = std::fs::read_to_string(out.join("nginx-v2v.xml")).expect("libvirt XML");
    assert!(xml.contains("http://debian.org/debian/"), "{xml}");
    assert!(xml.contains("bus='virtio'"), "{xml}");
    let disk = out.join("nginx-v2v-sda");
    assert!(disk.is_file(), "no converted disk in {}", out.display());

    // What virt-v2v changed: the GRUB-legacy configuration still boots the same kernel
    // with the same command line (it may set `default` and rename consoles).
    let menu = esp_text(&disk, "/EFI/BOOT/menu.lst");
    let original = esp_text(&raw, "/EFI/BOOT/menu.lst");
    assert!(kernel_line(&menu).is_some(), "{menu}");
    assert_eq!(kernel_line(&menu), kernel_line(&original), "{menu}");
    assert!(menu.contains("default 0"), "{menu}");

    let port = free_port();
    let vm = boot_converted(dir.path(), &disk, port);
    let boot_start = Instant::now();
    let mut last = None;
    while boot_start.elapsed() < BOOT_TIMEOUT {
        std::thread::sleep(Duration::from_secs(2));
        last = http_get(port);
        if last
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200") && a.contains("hello from jeos"))
        {
            break;
        }
    }
    let console = String::from_utf8_lossy(&std::fs::read(&vm.log).unwrap_or_default()).into_owned();
    assert!(
        last.as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200") && a.contains("hello from jeos")),
        "the converted guest did not serve the page in {BOOT_TIMEOUT:?}; last answer {last:?}\nconsole:\n{console}"
    );
    eprintln!(
        "the converted guest served the page {:.0}s after QEMU started",
        boot_start.elapsed().as_secs_f64()
    );
    drop(vm);
}

/// Issue #15: what a `[disk] convertible = true` image carries for virt-v2v, read back
/// from the built disk; and the GRUB-legacy entry boots the kernel and command line the
/// other boot loaders boot.
#[test]
fn issue_15_a_convertible_image_describes_its_real_boot() {
    let Some(base) = built("nginx") else { return };
    let raw = nginx_variant(
        &base,
        "convertible",
        &[("[disk]\n", "[disk]\nconvertible = true\n")],
    );
    let disk = image_writer::image::open_image(&raw).expect("open the image");
    let boot = disk.boot_files().expect("systemd-boot's entry");
    let root = disk.root_fs().expect("the root file system");
    let versions: Vec<String> = (root.list("/usr/lib/modules").expect("/usr/lib/modules"))
        .iter()
        .filter_map(|e| e.path.rsplit('/').next().map(str::to_owned))
        .collect();
    let [version] = versions.as_slice() else {
        panic!("one kernel version under /usr/lib/modules: {versions:?}");
    };
    let vmlinuz = format!("/boot/vmlinuz-{version}");

    // GRUB is the removable-media loader; its configuration is GRUB legacy, under /EFI
    // only as menu.lst (a grub.cfg there would make virt-v2v run grub-mkconfig).
    let efi = disk
        .esp_file("/EFI/BOOT/BOOTX64.EFI", 64 << 20)
        .expect("BOOTX64.EFI");
    assert!(
        efi.windows(8).any(|w| w == b"GNU GRUB"),
        "BOOTX64.EFI is not GRUB"
    );
    assert!(
        disk.esp_file("/EFI/systemd/systemd-bootx64.efi", 4 << 20)
            .is_ok()
    );
    assert!(disk.esp_file("/EFI/BOOT/grub.cfg", 65536).is_err());
    let cfg = esp_text(&raw, "/boot/grub/grub.cfg");
    assert!(
        cfg.contains("legacy_configfile /EFI/BOOT/menu.lst"),
        "{cfg}"
    );
    assert!(
        disk.esp_file("/boot/grub/x86_64-efi/legacycfg.mod", 1 << 20)
            .is_ok()
    );
    let menu = esp_text(&raw, "/EFI/BOOT/menu.lst");
    assert_eq!(
        kernel_line(&menu),
        Some(format!("kernel {vmlinuz} {}", boot.cmdline)),
        "{menu}"
    );
    assert!(menu.contains("root (hd0,1)\n") && menu.contains("initrd (hd0,0)/initrd.img\n"));

    // The kernel GRUB boots is the one on the ESP, and dpkg lists it.
    assert_eq!(root.read(&vmlinuz).expect("the kernel"), boot.kernel);
    let list = String::from_utf8(
        root.read(&format!("/var/lib/dpkg/info/linux-image-{version}.list"))
            .expect("the kernel package's file list"),
    )
    .expect("UTF-8");
    assert!(list.lines().any(|l| l == vmlinuz), "{list}");
    assert!(
        list.lines().any(|l| l.ends_with("/virtio_blk.ko")),
        "{list}"
    );
    let entries = root.walk().expect("walk");
    assert!(
        entries
            .iter()
            .any(|e| e.path.starts_with("/usr/lib/modules/") && e.path.ends_with("/virtio_net.ko")),
        "no virtio_net under /usr/lib/modules"
    );
    // No initramfs under /boot: virt-v2v would rebuild it with update-initramfs. The ESP's
    // mount point is there (fstab names it).
    let in_boot: Vec<&str> = (entries.iter())
        .filter(|e| e.path.starts_with("/boot/"))
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(in_boot, ["/boot/efi", vmlinuz.as_str()]);
    assert!(root.exists("/usr/bin/sh") && root.exists("/usr/bin/dpkg"));
    let fstab = String::from_utf8(root.read("/etc/fstab").expect("fstab")).expect("UTF-8");
    assert!(
        fstab.contains(&format!("UUID={} / ext4", root.uuid())),
        "{fstab}"
    );
    assert!(fstab.contains(" /boot/efi vfat noauto"), "{fstab}");

    // Without the key the image is as before: systemd-boot, no menu.lst, no /boot kernel.
    let plain = image_writer::image::open_image(&base.raw).expect("open the image");
    assert!(plain.esp_file("/EFI/BOOT/menu.lst", 65536).is_err());
    assert!(!plain.root_fs().expect("root").exists(&vmlinuz));
}
