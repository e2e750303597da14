//! Issue #10: offline image tools (`jeos inspect/ls/cat/diff`) on all four formats of the
//! nginx build, without root; the times inside the image read back; the `.raw` is sparse;
//! a `[[file]]` source directory and package-file overwrites in a variant build.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use image_writer::image::open_image;
use image_writer::image::rootfs::FsKind;

use crate::appliances::{Built, build_into, built};
use crate::common::{TestDir, jeos};

/// 2000-01-01T00:00:00Z.
const Y2000: i64 = 946_684_800;

fn nginx() -> Option<Built> {
    let built = built("nginx");
    if built.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: the nginx appliance could not be built (mirror unreachable)");
    }
    built
}

/// The nginx build's `.raw`, `.qcow2`, `.vmdk` and `.ova`.
fn formats(b: &Built) -> Vec<(&'static str, PathBuf)> {
    let name = "nginx-1.0.0";
    let all = vec![
        ("raw", b.raw.clone()),
        ("qcow2", b.dir.join(format!("{name}.qcow2"))),
        ("vmdk", b.dir.join(format!("{name}-disk1.vmdk"))),
        ("ova", b.dir.join(format!("{name}.ova"))),
    ];
    for (_, path) in &all {
        assert!(path.is_file(), "{} missing", path.display());
    }
    all
}

fn run(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = jeos().args(args).output().expect("run jeos");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

fn epoch(b: &Built) -> i64 {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.dir.join("build-report.json")).unwrap()).unwrap();
    report["source_date_epoch"]
        .as_i64()
        .expect("source_date_epoch")
}

#[test]
fn issue_10_inspect_ls_cat_on_every_format() {
    let Some(b) = nginx() else { return };
    let mut disk_bytes = Vec::new();
    for (format, path) in formats(&b) {
        let start = std::time::Instant::now();
        let (code, stdout, stderr) = run(args!("--json", "inspect", &path));
        assert_eq!(code, 0, "{format}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["format"], format, "{stdout}");
        let kinds: Vec<&str> = v["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["esp", "root"], "{format}");
        let kernel = v["kernel"]["version"].as_str().unwrap_or_default();
        assert!(kernel.ends_with("-amd64"), "{format}: kernel {kernel:?}");
        assert!(
            v["kernel"]["cmdline"]
                .as_str()
                .unwrap()
                .starts_with("root=UUID=")
        );
        assert_eq!(v["services"][0]["name"], "nginx", "{format}");
        assert_eq!(v["hostname"], "nginx");
        assert!(v["root_fs"]["files"].as_u64().unwrap() > 100, "{format}");
        // From the image's /var/lib/dpkg/status.
        let packages = v["packages"].as_array().unwrap();
        let nginx = packages.iter().find(|p| p["name"] == "nginx");
        assert!(
            nginx.is_some_and(|p| p["version"].as_str().is_some_and(|v| !v.is_empty())),
            "{format}: {packages:?}"
        );
        assert!(packages.iter().any(|p| p["name"] == "libc6"), "{format}");
        disk_bytes.push(v["disk_bytes"].as_u64().unwrap());
        eprintln!("jeos inspect {format}: {:?}", start.elapsed());

        let (code, text, stderr) = run(args!("inspect", &path));
        assert_eq!(code, 0, "{stderr}");
        assert!(
            text.contains("nginx: /usr/sbin/nginx -g daemon off;"),
            "{text}"
        );
        assert!(text.contains("Kernel:     6."), "{text}");
        assert!(text.contains("\n  nginx "), "package list: {text}");

        let (code, listing, stderr) = run(args!("ls", &path, "/var/www/html"));
        assert_eq!(code, 0, "{stderr}");
        // The page is a boot-time template: a link into /run, rendered by guest-init.
        assert!(
            listing.contains("lrwxrwxrwx root     root ")
                && listing.contains(
                    " /var/www/html/index.html -> /run/jeos/files/var/www/html/index.html"
                ),
            "{format}: {listing}"
        );
        let (code, listing, _) = run(args!("ls", &path, "/etc/nginx/sites-enabled"));
        assert_eq!(code, 0);
        assert!(
            listing
                .contains("/etc/nginx/sites-enabled/default -> /etc/nginx/sites-available/default"),
            "{listing}"
        );
        let (code, json, _) = run(args!("--json", "ls", &path, "/var/lib"));
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let nginx_dir = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "/var/lib/nginx")
            .expect("/var/lib/nginx listed");
        assert_eq!(nginx_dir["user"], "www-data");
        assert_eq!(nginx_dir["kind"], "dir");

        let (code, page, stderr) = run(args!(
            "cat",
            &path,
            "/usr/lib/jeos/boot-templates/var/www/html/index.html"
        ));
        assert_eq!(
            (code, page.as_str()),
            (0, "{{ovf.page.text}}\n"),
            "{stderr}"
        );
        // Through the symlink, inside the image.
        let (code, site, _) = run(args!("cat", &path, "/etc/nginx/sites-enabled/default"));
        assert_eq!(code, 0);
        assert!(
            site.contains("server {") || site.contains("server{"),
            "{site}"
        );
    }
    assert!(
        disk_bytes.windows(2).all(|w| w[0] == w[1]),
        "{disk_bytes:?}"
    );
}

#[test]
fn issue_10_image_tools_give_clear_errors() {
    let Some(b) = nginx() else { return };
    let dir = TestDir::new();
    let qcow2 = b.dir.join("nginx-1.0.0.qcow2");
    let (code, _, stderr) = run(args!("cat", &qcow2, "/etc/no-such-file"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("`/etc/no-such-file` does not exist in"),
        "{stderr}"
    );
    assert!(stderr.contains("jeos ls"), "{stderr}");
    let (code, _, stderr) = run(args!("cat", &qcow2, "/etc"));
    assert_eq!(code, 2);
    assert!(stderr.contains("`/etc` is a directory"), "{stderr}");
    let (code, _, stderr) = run(args!("ls", &qcow2, "etc"));
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid path `etc`"), "{stderr}");
    let recipe = dir.create("site.toml", "[appliance]\nname = \"site\"\n");
    let (code, _, stderr) = run(args!("inspect", &recipe));
    assert_eq!(code, 2);
    assert!(stderr.contains("is not a disk image"), "{stderr}");
    assert!(stderr.contains("jeos build"), "{stderr}");
    let (code, _, stderr) = run(args!("diff", &b.dir, &qcow2));
    assert_eq!(code, 2);
    assert!(stderr.contains("it is a directory"), "{stderr}");
    let truncated = dir.path().join("cut.qcow2");
    let bytes = std::fs::read(&qcow2).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let (code, _, stderr) = run(args!("ls", &truncated, "/"));
    assert_eq!(code, 2, "{stderr}");
}

/// Acceptance of #10: every mtime in the image is at most `SOURCE_DATE_EPOCH` and after
/// 2000; generated files carry exactly `SOURCE_DATE_EPOCH`, package files their own times.
#[test]
fn issue_10_times_in_the_image_are_sane() {
    let Some(b) = nginx() else { return };
    let epoch = epoch(&b);
    let image = open_image(&b.raw).unwrap();
    let root = image.root_fs().unwrap();
    let entries = root.walk().unwrap();
    assert!(entries.len() > 300, "{} entries", entries.len());
    let bad: Vec<_> = entries
        .iter()
        .filter(|e| e.mtime > epoch || e.mtime < Y2000)
        .map(|e| format!("{} {}", e.path, e.mtime))
        .collect();
    assert!(bad.is_empty(), "times outside 2000..={epoch}: {bad:?}");
    let mtime = |p: &str| root.stat(p).unwrap().mtime;
    assert_eq!(mtime("/var/www/html/index.html"), epoch, "a recipe file");
    assert_eq!(mtime("/etc/hostname"), epoch, "a generated file");
    let nginx = root.stat("/usr/sbin/nginx").unwrap();
    assert_eq!(nginx.kind, FsKind::File);
    assert!(
        nginx.mtime < epoch,
        "package file kept its own time: {}",
        nginx.mtime
    );
    let older = entries.iter().filter(|e| e.mtime < epoch).count();
    assert!(
        older > entries.len() / 2,
        "only {older} entries keep package times"
    );
}

#[test]
fn issue_10_raw_image_is_sparse() {
    let Some(b) = nginx() else { return };
    let meta = std::fs::metadata(&b.raw).unwrap();
    let allocated = meta.blocks() * 512;
    eprintln!("raw: {} bytes, {allocated} allocated", meta.len());
    assert!(
        allocated < meta.len() / 2,
        "{allocated} of {} bytes allocated",
        meta.len()
    );
}

fn variant_recipe(dir: &TestDir) -> PathBuf {
    let text = std::fs::read_to_string(crate::common::recipes_dir().join("nginx.toml")).unwrap();
    let page = "[[file]]\npath = \"/var/www/html/index.html\"\ntemplate = \"{{ovf.page.text}}\\n\"\ntemplate-at = \"boot\"\nmode = \"0644\"";
    assert!(text.contains(page), "the nginx recipe's page entry changed");
    let text = text.replace(
        page,
        "[[file]]\npath = \"/var/www/html\"\nsource = \"site\"\nowner = \"www-data\"\ngroup = \"www-data\"\n\n\
         [[file]]\npath = \"/usr/share/nginx/html/index.html\"\ncontent = \"replaced\\n\"",
    );
    dir.create("site/index.html", "hello from the site\n");
    dir.create("site/css/a.css", "body{}\n");
    let script = dir.create("site/bin/run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    dir.create("nginx.toml", &text)
}

/// A `[[file]] source` directory is copied with host modes and the recipe's owner, the
/// overwritten package file is reported, and `jeos diff` against the example build finds
/// exactly these changes (across formats).
#[test]
fn issue_10_source_directory_overwrites_and_diff() {
    let Some(b) = nginx() else { return };
    let dir = TestDir::new();
    let recipe = variant_recipe(&dir);
    let out = dir.path().join("dist");
    let output = build_into(&recipe, &out, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("replaced  1 package file(s) with the recipe's: /usr/share/nginx/html/index.html (nginx-common)"),
        "{stdout}"
    );
    let variant = out.join("nginx-1.0.0");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(variant.join("build-report.json")).unwrap()).unwrap();
    assert_eq!(
        report["overwrites"],
        serde_json::json!(["/usr/share/nginx/html/index.html (nginx-common)"])
    );
    let qcow2 = variant.join("nginx-1.0.0.qcow2");
    let (code, listing, stderr) = run(args!("ls", "-R", &qcow2, "/var/www/html"));
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "drwxr-xr-x www-data www-data       4096 ",
        "-rwxr-x--- www-data www-data         10 ",
        " /var/www/html/bin/run.sh",
        " /var/www/html/css/a.css",
    ] {
        assert!(listing.contains(line), "{line:?} not in\n{listing}");
    }

    let ova = b.dir.join("nginx-1.0.0.ova");
    let (code, text, stderr) = run(args!("diff", &ova, &qcow2));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.contains("Files: 4 added, 5 removed, 4 changed"),
        "{text}"
    );
    assert!(
        text.contains("  M /var/www/html/index.html (kind, mode, owner, target)"),
        "{text}"
    );
    assert!(
        text.contains("  M /usr/share/nginx/html/index.html (size, content)"),
        "{text}"
    );
    assert!(text.contains("  + /var/www/html/bin/run.sh"), "{text}");
    // The example's page is a boot-time template; the variant's is a plain file.
    assert!(
        text.contains("  - /usr/lib/jeos/boot-templates/var/www/html/index.html"),
        "{text}"
    );
    let (code, json, _) = run(args!("--json", "diff", "--exit-code", &ova, &qcow2));
    assert_eq!(code, 1, "differences with --exit-code");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["identical"], false);
    assert_eq!(v["files"].as_array().unwrap().len(), 13);

    // The same build in two formats: no differences.
    let (code, text, stderr) = run(args!("diff", "--exit-code", &b.raw, &ova));
    assert_eq!((code, text.trim()), (0, "No differences"), "{stderr}");
}
