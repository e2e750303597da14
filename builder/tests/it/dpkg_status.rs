//! The image's `/var/lib/dpkg/status`, read back out of the built nginx image and checked
//! by dpkg's own parser (`dpkg-query --admindir`, `dpkg --audit`).

use std::path::Path;
use std::process::Command;

use package_resolver::lock::LockFile;

use crate::appliances::built;
use crate::common::TestDir;

/// Fails under `CI=true`, else prints `SKIPPED:` and returns false.
pub fn require_tool(name: &str, why: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    crate::common::prerequisite(
        found,
        &format!("`{name}` is not installed ({why}; scripts/install-deps installs it)"),
    )
}

/// `(first byte, length)` of GPT partition `number` (1-based) of a raw disk.
pub fn gpt_partition(raw: &Path, number: usize) -> (u64, u64) {
    let bytes = std::fs::read(raw).expect("read the raw image");
    let header = &bytes[512..1024];
    assert_eq!(&header[..8], b"EFI PART", "no GPT header");
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let entries_lba = usize::try_from(u64_at(header, 72)).unwrap();
    let entry_size = u32_at(header, 84) as usize;
    let entry = &bytes[entries_lba * 512 + (number - 1) * entry_size..][..entry_size];
    let first = u64_at(entry, 32);
    let last = u64_at(entry, 40);
    (first * 512, (last - first + 1) * 512)
}

/// Copies `/var/lib/dpkg` out of the image's root file system into `dir/dpkg`.
fn extract_admin_dir(raw: &Path, dir: &TestDir) -> std::path::PathBuf {
    let (offset, len) = gpt_partition(raw, 2);
    let bytes = std::fs::read(raw).expect("read the raw image");
    let root = dir.path().join("root.ext4");
    let start = usize::try_from(offset).unwrap();
    std::fs::write(&root, &bytes[start..start + usize::try_from(len).unwrap()])
        .expect("write root");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new("debugfs")
        .env("LC_ALL", "C")
        .arg("-R")
        .arg(format!("rdump /var/lib/dpkg {}", out.display()))
        .arg(&root)
        .output()
        .expect("run debugfs");
    assert!(status.status.success(), "{status:?}");
    out.join("dpkg")
}

fn dpkg(admin: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .env("LC_ALL", "C")
        .arg(format!("--admindir={}", admin.display()))
        .args(args)
        .output()
        .expect("run dpkg");
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_image_has_a_dpkg_database_that_dpkg_query_reads() {
    if !require_tool("dpkg-query", "reads the image's dpkg status")
        || !require_tool("debugfs", "reads the image's root file system")
    {
        return;
    }
    let Some(nginx) = built("nginx") else { return };
    let dir = TestDir::new();
    let admin = extract_admin_dir(&nginx.raw, &dir);
    let lock_path = nginx.recipe.with_extension("lock");
    let lock =
        LockFile::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path).expect("lock");

    let listed = dpkg(
        &admin,
        "dpkg-query",
        &["-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n"],
    );
    for package in &lock.packages {
        let line = format!("{} {} ii ", package.name, package.version);
        assert!(
            listed.lines().any(|l| l == line),
            "`{line}` missing from dpkg-query:\n{listed}"
        );
    }
    assert_eq!(listed.lines().count(), lock.packages.len(), "{listed}");

    let files = dpkg(&admin, "dpkg-query", &["-L", "nginx"]);
    assert!(files.lines().any(|l| l == "/usr/sbin/nginx"), "{files}");
    let conf = dpkg(
        &admin,
        "dpkg-query",
        &["-W", "-f", "${Conffiles}\n", "nginx-common"],
    );
    assert!(conf.contains(" /etc/nginx/nginx.conf "), "{conf}");
    // Nothing half-installed, no list or md5sums file missing.
    let audit = dpkg(&admin, "dpkg", &["--audit"]);
    assert!(audit.trim().is_empty(), "dpkg --audit:\n{audit}");
}
