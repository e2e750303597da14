//! `jeos cache`, `jeos clean` and what `jeos test` refuses, on fixtures written here.

use sha2::{Digest, Sha256};

use crate::common::TestDir;

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn cache_ls_verify_prune_clean() {
    let dir = TestDir::new();
    let good = b"a good package";
    dir.create(&format!("cache/debs/{}.deb", hex(good)), "a good package");
    let bad_name = hex(b"what it should be");
    dir.create(&format!("cache/debs/{bad_name}.deb"), "bit rot");
    dir.create(&format!("cache/indices/{}", hex(b"index")), "index");
    let jeos = |args: &[&str]| {
        dir.jeos()
            .args(["--cache-dir", "cache"])
            .args(args)
            .output()
            .expect("run jeos")
    };
    let out = jeos(&["--json", "cache", "ls"]);
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["kinds"][0]["kind"], "package");
    assert_eq!(value["kinds"][0]["entries"], 2);
    assert_eq!(value["kinds"][1]["entries"], 1);

    let out = jeos(&["cache", "verify"]);
    assert_eq!(out.status.code(), Some(1), "a corrupt entry is exit 1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Verified 3 entries: 1 corrupt, removed"),
        "{stdout}"
    );
    assert!(
        !dir.path()
            .join(format!("cache/debs/{bad_name}.deb"))
            .exists()
    );
    assert_eq!(jeos(&["cache", "verify"]).status.code(), Some(0));

    let out = jeos(&["cache", "prune", "--older-than", "30d"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Removed 0 files"));
    let out = jeos(&["cache", "clean"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Removed 2 files"));
    assert!(
        !dir.path()
            .join(format!("cache/debs/{}.deb", hex(good)))
            .exists()
    );
}

#[test]
fn clean_removes_only_what_build_wrote() {
    let dir = TestDir::new();
    dir.create("dist/web-1.0/build-report.json", "{}");
    dir.create("dist/web-1.0/web-1.0.raw", "");
    dir.create("dist/.jeos-build-123/partial", "");
    dir.create("dist/notes/keep.txt", "mine");
    let out = dir.jeos().arg("clean").output().expect("run");
    assert!(out.status.success());
    assert!(!dir.path().join("dist/web-1.0").exists());
    assert!(!dir.path().join("dist/.jeos-build-123").exists());
    assert!(dir.path().join("dist/notes/keep.txt").exists());
}

#[test]
fn test_refuses_what_it_cannot_boot_with_a_clear_error() {
    let dir = TestDir::new();
    dir.create("notes.txt", "hello");
    std::fs::write(dir.path().join("disk.raw"), b"QFI\xfb\0\0\0\x03").expect("write");
    std::fs::create_dir_all(dir.path().join("dist/empty")).expect("mkdir");
    for (target, message) in [
        ("notes.txt", "not a disk image"),
        ("disk.raw", "its name says Raw but its content is Qcow2"),
        ("dist", "holds no appliance"),
        ("missing.qcow2", "does not exist"),
    ] {
        let out = dir.jeos().args(["test", target]).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {stderr}");
        assert!(stderr.contains(message), "{target}: {stderr}");
    }
}

#[test]
fn json_errors_end_the_stream_with_an_error_object() {
    let dir = TestDir::new();
    dir.create("bad.toml", "[appliance]\nname = \"x\"\n");
    let out = dir
        .jeos()
        .args(["--json", "build", "bad.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a JSON line");
    let value: serde_json::Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(value["event"], "error");
    assert!(
        value["diagnostics"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
    let out = dir
        .jeos()
        .args(["--json", "test", "missing.raw"])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON");
    assert_eq!(value["event"], "error");
    assert!(
        value["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist"))
    );
}
