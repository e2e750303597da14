//! A real boot: Debian kernel + an initramfs with guest-init as `/init` + an ext4 root with
//! guest-init as `/sbin/init`, in QEMU (TCG, so no /dev/kvm needed). Proves module loading,
//! root-by-UUID, switch-root, DHCP (QEMU user networking), users, readiness, checks, the
//! protocol lines and power-off.
//!
//! Needs `JEOS_TEST_KERNEL_DIR` = a directory where a Debian `linux-image-*-amd64` package
//! was extracted (`dpkg-deb -x`, so it has `boot/vmlinuz-*` and `lib/modules/<release>/`),
//! plus `qemu-system-x86_64`, `mkfs.ext4`, `ldd`, dash and perl on the host. Otherwise the
//! test prints `SKIPPED: ...` and passes, or fails under `CI=true` (`scripts/test` gives the
//! kernel through `scripts/test-inputs`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guest_init::config::{
    CheckConfig, CheckKind, CommandCheckConfig, FileCheckConfig, HttpCheckConfig, HttpProbeConfig,
    InitConfig, Probe, ReadyConfig, RestartPolicy, ServiceCheckConfig, ServiceConfig,
    TcpCheckConfig,
};
use guest_init::protocol::{CheckStatus, Event, parse_line};

use crate::TestDir;

const ROOT_UUID: &str = "2f0c6a1e-8d4b-4c3a-9e57-1b2c3d4e5f60";

/// Modules a Debian cloud kernel needs for virtio disk + net and the power button, in
/// dependency order; ones that are built in (absent as files) are skipped.
const MODULES: &[&str] = &[
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/input/evdev.ko",
    "drivers/acpi/button.ko",
];

/// An in-memory cpio "newc" archive (the initramfs format).
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), contents: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(contents.len()).expect("small file"),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for field in fields {
            self.data
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(contents);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, contents: &[u8], mode: u32) {
        self.entry(name, 0o100_000 | mode, (0, 0), contents);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Shared libraries `binary` needs, from `ldd` (empty for static binaries).
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let Ok(output) = Command::new("ldd").arg(binary).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies `binary` to `root/dest` plus its shared libraries at their host paths.
fn install(root: &Path, binary: &Path, dest: &str) {
    let target = root.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    std::fs::copy(binary, &target).expect("copy binary");
    for lib in shared_libraries(binary) {
        let lib_target = root.join(lib.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(lib_target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&lib, &lib_target).expect("copy library");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Files (relative to the cpio root) of guest-init plus its shared libraries.
fn add_tree_to_cpio(cpio: &mut Cpio, root: &Path, prefix: &str) {
    let mut entries: Vec<_> = std::fs::read_dir(root).expect("read").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().expect("type").is_dir() {
            cpio.dir(&name);
            add_tree_to_cpio(cpio, &entry.path(), &format!("{name}/"));
        } else {
            let data = std::fs::read(entry.path()).expect("read");
            cpio.file(&name, &data, 0o755);
        }
    }
}

struct Kernel {
    vmlinuz: PathBuf,
    release: String,
    modules: PathBuf,
}

fn find_kernel(dir: &Path) -> Option<Kernel> {
    let vmlinuz = std::fs::read_dir(dir.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })?;
    let release = vmlinuz
        .file_name()?
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let modules = dir.join("lib/modules").join(&release);
    Some(Kernel {
        vmlinuz,
        release,
        modules,
    })
}

fn config() -> InitConfig {
    let web = r#"$|=1; my $s=IO::Socket::INET->new(LocalAddr=>"127.0.0.1:8080",Listen=>5,ReuseAddr=>1) or die "listen: $!"; print "listening\n"; while(my $c=$s->accept){ while(<$c>){last if /^\r?$/} my $b="$ENV{GREETING} uid=$<\n"; print $c "HTTP/1.1 200 OK\r\nContent-Length: ".length($b)."\r\nConnection: close\r\n\r\n$b"; close $c }"#;
    let sh = |script: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let command = |name: &str, script: &str, needle: &str| {
        CheckConfig::new(
            name,
            CheckKind::Command(CommandCheckConfig {
                run: sh(script),
                exit_code: 0,
                stdout_contains: Some(needle.to_owned()),
            }),
        )
    };
    InitConfig {
        hostname: Some("jeos-it".into()),
        services: vec![
            ServiceConfig {
                name: "prep".into(),
                exec: sh("echo preparing; echo ok > /run/prep.done"),
                user: None,
                group: None,
                environment: BTreeMap::new(),
                working_directory: None,
                restart: RestartPolicy::No,
                after: vec![],
                ready: Some(ReadyConfig::new(Probe::File("/run/prep.done".into()))),
            },
            ServiceConfig {
                name: "web".into(),
                exec: vec![
                    "/usr/bin/perl".into(),
                    "-MIO::Socket::INET".into(),
                    "-e".into(),
                    web.into(),
                ],
                user: Some("www-data".into()),
                group: None,
                environment: BTreeMap::from([("GREETING".into(), "hello from jeos".into())]),
                working_directory: None,
                restart: RestartPolicy::Always,
                after: vec!["prep".into()],
                ready: Some(ReadyConfig {
                    probe: Probe::Http(HttpProbeConfig {
                        port: 8080,
                        path: "/".into(),
                    }),
                    timeout_ms: Some(60_000),
                }),
            },
        ],
        checks: vec![
            CheckConfig::new(
                "serves the page as www-data",
                CheckKind::Http(HttpCheckConfig {
                    port: 8080,
                    path: "/".into(),
                    status: 200,
                    body_contains: Some("hello from jeos uid=33".into()),
                }),
            ),
            CheckConfig::new("port open", CheckKind::Tcp(TcpCheckConfig { port: 8080 })),
            command(
                "dns from dhcp",
                "read l < /run/resolv.conf; echo $l",
                "nameserver 10.0.2.3",
            ),
            command(
                "default route",
                "while read a b c d; do echo $a $b $c; done < /proc/net/route",
                "eth0 00000000 0202000A",
            ),
            command(
                "hostname",
                "read h < /proc/sys/kernel/hostname; echo $h",
                "jeos-it",
            ),
            CheckConfig::new(
                "web running",
                CheckKind::Service(ServiceCheckConfig { name: "web".into() }),
            ),
            CheckConfig::new(
                "prep file",
                CheckKind::File(FileCheckConfig {
                    path: "/run/prep.done".into(),
                }),
            ),
            CheckConfig {
                timeout_ms: Some(1_000),
                ..CheckConfig::new(
                    "closed port fails",
                    CheckKind::Tcp(TcpCheckConfig { port: 9 }),
                )
            },
        ],
        ..InitConfig::default()
    }
}

/// A missing prerequisite: a loud `SKIPPED` line, or a failure under `CI=true`.
fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "prerequisite missing under CI=true: {reason}"
    );
    eprintln!("SKIPPED: {reason}");
}

#[test]
fn boots_initramfs_switches_root_and_runs_checks() {
    let Some(kernel_dir) = std::env::var_os("JEOS_TEST_KERNEL_DIR") else {
        skip("JEOS_TEST_KERNEL_DIR not set (an extracted Debian linux-image package)");
        return;
    };
    let Some(kernel) = find_kernel(Path::new(&kernel_dir)) else {
        skip("no boot/vmlinuz-* under JEOS_TEST_KERNEL_DIR");
        return;
    };
    let tools = ["qemu-system-x86_64", "mkfs.ext4", "ldd", "perl"];
    if let Some(missing) = tools.iter().find(|t| which(t).is_none()) {
        skip(&format!("`{missing}` not found"));
        return;
    }
    let shell = ["/usr/bin/dash", "/bin/dash"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
    let Some(shell) = shell else {
        skip("dash not found");
        return;
    };
    let perl = which("perl").expect("checked");
    let perl_base = Path::new("/usr/lib/x86_64-linux-gnu/perl-base");
    if !perl_base.is_dir() {
        skip(&format!("{} not found", perl_base.display()));
        return;
    }
    let init = Path::new(env!("CARGO_BIN_EXE_guest-init"));
    let dir = TestDir::new("qemu");

    // Initramfs: /init, the role marker, /dev/console, the modules and their list.
    let initrd_root = dir.path().join("initrd");
    install(&initrd_root, init, "/init");
    let mut list = String::new();
    for module in MODULES {
        let source = kernel.modules.join("kernel").join(module);
        if source.is_file() {
            let relative = format!("lib/modules/{}/kernel/{module}", kernel.release);
            let target = initrd_root.join(&relative);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&source, target).expect("copy module");
            list.push_str(&format!("kernel/{module}\n"));
        }
    }
    std::fs::create_dir_all(initrd_root.join("etc/jeos")).expect("mkdir");
    std::fs::write(initrd_root.join("etc/jeos/initramfs"), "").expect("marker");
    std::fs::write(initrd_root.join("lib/modules/jeos.list"), list).expect("list");
    let mut cpio = Cpio::default();
    cpio.dir("dev");
    cpio.entry("dev/console", 0o020_600, (5, 1), &[]);
    add_tree_to_cpio(&mut cpio, &initrd_root, "");
    let initrd = dir.create("initrd.cpio", cpio.finish());

    // Root filesystem: /sbin/init, dash, perl, users, the init config.
    let root = dir.path().join("rootfs");
    install(&root, init, "/sbin/init");
    install(&root, shell, "/bin/sh");
    install(&root, &perl, "/usr/bin/perl");
    copy_tree(perl_base, &root.join("usr/lib/x86_64-linux-gnu/perl-base"));
    for empty in ["proc", "sys", "dev", "run", "tmp", "var/www"] {
        std::fs::create_dir_all(root.join(empty)).expect("mkdir");
    }
    dir.create(
        "rootfs/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n",
    );
    dir.create("rootfs/etc/group", "root:x:0:\nwww-data:x:33:\n");
    let config = config();
    config.validate().expect("valid config");
    dir.create(
        "rootfs/etc/jeos/init.json",
        serde_json::to_string_pretty(&config).expect("serialize"),
    );
    let image = dir.path().join("root.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(128 << 20))
        .expect("image");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", ROOT_UUID, "-d"])
        .arg(&root)
        .arg(&image)
        .status()
        .expect("mkfs.ext4");
    assert!(mkfs.success());

    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 reboot=k quiet jeos.test=1 root=UUID={ROOT_UUID} ro"
        ))
        .args(["-nic", "user,model=virtio-net-pci", "-drive"])
        .arg(format!("file={},if=virtio,format=raw", image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");
    let mut stdout = qemu.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = stdout.read_to_end(&mut log);
        String::from_utf8_lossy(&log).into_owned()
    });
    let deadline = started + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = qemu.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = reader.join().expect("reader");
    eprintln!(
        "--- console ---\n{log}\n--- boot took {:?} ---",
        started.elapsed()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "QEMU did not power off cleanly"
    );

    let events: Vec<Event> = log
        .lines()
        .filter_map(parse_line)
        .map(|e| e.expect("well-formed protocol line"))
        .collect();
    assert!(
        matches!(events.first(), Some(Event::Ready { boot_ms, phases })
            if *boot_ms > 0 && phases.cpus == 1 && phases.initramfs_ms > 0
                && phases.root_ms >= phases.initramfs_ms && *boot_ms >= phases.services_ms),
        "{events:?}"
    );
    let checks: Vec<(&str, CheckStatus, &str)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Check {
                name,
                status,
                detail,
                ..
            } => Some((name.as_str(), *status, detail.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(checks.len(), config.checks.len());
    for (name, status, detail) in &checks[..checks.len() - 1] {
        assert_eq!(*status, CheckStatus::Pass, "{name}: {detail}");
    }
    let (_, last_status, last_detail) = checks[checks.len() - 1];
    assert_eq!(last_status, CheckStatus::Fail);
    assert!(last_detail.contains("refused"), "{last_detail}");
    let passed = u32::try_from(checks.len() - 1).expect("few checks");
    assert_eq!(events.last(), Some(&Event::Done { passed, failed: 1 }));
    assert!(
        log.contains("reboot: Power down"),
        "powered off, not halted"
    );
}
