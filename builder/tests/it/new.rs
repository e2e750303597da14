//! `jeos new`: the starter recipe is written once, named safely, and passes `jeos check`.

use crate::common::TestDir;

#[test]
fn new_writes_a_recipe_that_passes_check() {
    let dir = TestDir::new();
    let out = jeos_snapshot!(
        "new_creates",
        dir.filters(),
        dir.jeos().args(["new", "web-app"])
    );
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(dir.path().join("web-app.toml")).expect("recipe written");
    assert!(text.contains("name = \"web-app\""));
    let out = jeos_snapshot!(
        "new_then_check",
        dir.filters(),
        dir.jeos().args(["check", "web-app.toml"])
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn new_documents_every_table() {
    let dir = TestDir::new();
    dir.jeos().args(["new", "doc"]).output().expect("run jeos");
    let text = std::fs::read_to_string(dir.path().join("doc.toml")).expect("recipe written");
    for table in [
        "[appliance]",
        "[source]",
        "[packages]",
        "[kernel]",
        "[system]",
        "[[system.user]]",
        "[[system.group]]",
        "[[service]]",
        "[[file]]",
        "[[directory]]",
        "[[symlink]]",
        "[network]",
        "[disk]",
        "[vm]",
        "[ovf]",
        "[[ovf.property]]",
        "[test]",
        "[[test.check]]",
    ] {
        assert!(text.contains(table), "starter recipe lacks {table}");
    }
}

#[test]
fn new_with_dir() {
    let dir = TestDir::new();
    let out = jeos_snapshot!(
        "new_with_dir",
        dir.filters(),
        dir.jeos()
            .args(["new", "cache", "--dir", "appliances/cache"])
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(dir.path().join("appliances/cache/cache.toml").is_file());
}

#[test]
fn new_refuses_to_overwrite() {
    let dir = TestDir::new();
    dir.create("web.toml", "# mine\n");
    let out = jeos_snapshot!(
        "new_refuses_overwrite",
        dir.filters(),
        dir.jeos().args(["new", "web"])
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("web.toml")).expect("still there"),
        "# mine\n"
    );
}

#[test]
fn new_rejects_bad_name() {
    let dir = TestDir::new();
    let out = jeos_snapshot!(
        "new_bad_name",
        dir.filters(),
        dir.jeos().args(["new", "Web_App"])
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("Web_App.toml").exists());
}

/// Issue #11: `jeos new --template` writes short working starters that pass `jeos check`.
#[test]
fn new_templates_pass_check() {
    let dir = TestDir::new();
    for (template, needle) in [
        ("web", "/usr/sbin/nginx"),
        ("database", "[[task]]\nname = \"initdb\""),
        ("ssh", "/usr/bin/ssh-keygen"),
        ("minimal", "busybox"),
    ] {
        let name = format!("t-{template}");
        let out = dir
            .jeos()
            .args(["new", &name, "--template", template])
            .output()
            .expect("run jeos new");
        assert_eq!(out.status.code(), Some(0), "{template}: {out:?}");
        let path = dir.path().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).expect("recipe written");
        assert!(text.contains(needle), "{template}: {text}");
        assert!(text.contains(&format!("name = \"{name}\"")), "{template}");
        let out = dir
            .jeos()
            .args(["check"])
            .arg(&path)
            .output()
            .expect("run jeos check");
        assert_eq!(out.status.code(), Some(0), "{template}: {out:?}");
    }
    let out = dir
        .jeos()
        .args(["new", "x", "--template", "nosuch"])
        .output()
        .expect("run jeos new");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}
