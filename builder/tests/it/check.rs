//! `jeos check`: every diagnostic a user can get from a broken recipe, exactly.

use crate::common::{TestDir, jeos, recipes_dir};

const HEADER: &str = r#"[appliance]
name = "demo"
version = "1.0"

[source]
suite = "trixie"

[packages]
install = ["hello"]
"#;

fn recipe(extra: &str) -> String {
    format!("{HEADER}{extra}")
}

#[test]
fn check_valid_recipe() {
    let dir = TestDir::new();
    dir.create("demo.toml", &recipe(""));
    let out = jeos_snapshot!(
        "check_valid_recipe",
        dir.filters(),
        dir.jeos().args(["check", "demo.toml"])
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_syntax_error() {
    let dir = TestDir::new();
    dir.create(
        "broken.toml",
        "[appliance]\nname = \"demo\nversion = \"1.0\"\n",
    );
    let out = jeos_snapshot!(
        "check_syntax_error",
        dir.filters(),
        dir.jeos().args(["check", "broken.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_unknown_key_suggests_kebab_case() {
    let dir = TestDir::new();
    dir.create(
        "disk.toml",
        &recipe("\n[disk]\nsize = \"auto\"\nfree_space = \"64MiB\"\n"),
    );
    let out = jeos_snapshot!(
        "check_unknown_key",
        dir.filters(),
        dir.jeos().args(["check", "disk.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `free-space`?"));
}

#[test]
fn check_unknown_table() {
    let dir = TestDir::new();
    dir.create("table.toml", &recipe("\n[vms]\ncpus = 2\n"));
    let out = jeos_snapshot!(
        "check_unknown_table",
        dir.filters(),
        dir.jeos().args(["check", "table.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_wrong_type() {
    let dir = TestDir::new();
    dir.create("type.toml", &recipe("\n[vm]\ncpus = \"two\"\n"));
    let out = jeos_snapshot!(
        "check_wrong_type",
        dir.filters(),
        dir.jeos().args(["check", "type.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_missing_key() {
    let dir = TestDir::new();
    dir.create("missing.toml", "[appliance]\nname = \"demo\"\n\n[source]\nsuite = \"trixie\"\n\n[packages]\ninstall = [\"hello\"]\n");
    let out = jeos_snapshot!(
        "check_missing_key",
        dir.filters(),
        dir.jeos().args(["check", "missing.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_bad_name() {
    let dir = TestDir::new();
    dir.create(
        "name.toml",
        &recipe("").replace("name = \"demo\"", "name = \"My App\""),
    );
    let out = jeos_snapshot!(
        "check_bad_name",
        dir.filters(),
        dir.jeos().args(["check", "name.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_bad_size_unit() {
    let dir = TestDir::new();
    dir.create("size.toml", &recipe("\n[vm]\nmemory = \"64MB\"\n"));
    let out = jeos_snapshot!(
        "check_bad_size_unit",
        dir.filters(),
        dir.jeos().args(["check", "size.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected a number with a binary unit"));
    assert!(stderr.contains("use `64MiB` (units: KiB, MiB, GiB)"));
}

#[test]
fn check_missing_source_file() {
    let dir = TestDir::new();
    dir.create(
        "site.toml",
        &recipe("\n[[file]]\npath = \"/var/www/html/index.html\"\nsource = \"files/index.html\"\n"),
    );
    let out = jeos_snapshot!(
        "check_missing_source_file",
        dir.filters(),
        dir.jeos().args(["check", "site.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
    // Once the file exists, the same recipe is valid.
    dir.create("files/index.html", "hello\n");
    let out = dir
        .jeos()
        .args(["check", "site.toml"])
        .output()
        .expect("run jeos");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_every_problem_in_a_file() {
    let dir = TestDir::new();
    dir.create(
        "many.toml",
        r#"[appliance]
name = "Web_Server"
version = "1.0"

[source]
suite = "trixy"

[packages]
install = ["nginx", "Bad Package"]

[system]
hostname = "-web"

[[service]]
name = "web"
exec = ["nginx", "-g", "daemon off;"]
user = "nginx"
after = ["db"]
ready = { tcp = 80, file = "/run/ready" }

[[file]]
path = "/etc//motd"
content = "hi"
mode = 644

[vm]
cpus = 0
memory = "1G"
firmware = "uefi"

[[test.check]]
name = "db is up"
service = { name = "database" }
"#,
    );
    let out = jeos_snapshot!(
        "check_many_problems",
        dir.filters(),
        dir.jeos().args(["check", "many.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_service_cycle() {
    let dir = TestDir::new();
    dir.create(
        "cycle.toml",
        &recipe(
            r#"
[[service]]
name = "a"
exec = ["/bin/a"]
after = ["b"]

[[service]]
name = "b"
exec = ["/bin/b"]
after = ["a"]
"#,
        ),
    );
    let out = jeos_snapshot!(
        "check_service_cycle",
        dir.filters(),
        dir.jeos().args(["check", "cycle.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_errors_in_two_files() {
    let dir = TestDir::new();
    dir.create("good.toml", &recipe(""));
    dir.create(
        "one.toml",
        &recipe("\n[disk]\nformats = [\"raw\", \"vdi\"]\n"),
    );
    dir.create("two.toml", &recipe("\n[network]\ndhcp = \"yes\"\n"));
    let out = jeos_snapshot!(
        "check_two_files",
        dir.filters(),
        dir.jeos()
            .args(["check", "good.toml", "one.toml", "two.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_json_output() {
    let dir = TestDir::new();
    dir.create("good.toml", &recipe(""));
    dir.create(
        "bad.toml",
        &recipe("\n[vm]\nmemory = \"64MB\"\nnic = \"e1000e\"\n"),
    );
    let out = jeos_snapshot!(
        "check_json",
        dir.filters(),
        dir.jeos()
            .args(["check", "--json", "good.toml", "bad.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(value["summary"]["problems"], 2);
    assert_eq!(value["recipes"][1]["diagnostics"][0]["line"], 12);
    assert_eq!(value["recipes"][1]["diagnostics"][0]["column"], 10);
}

#[test]
fn check_unreadable_file_is_exit_2() {
    let dir = TestDir::new();
    dir.create("good.toml", &recipe(""));
    let out = jeos_snapshot!(
        "check_unreadable",
        dir.filters(),
        dir.jeos().args(["check", "good.toml", "nope.toml"])
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_without_arguments_is_usage_error() {
    let dir = TestDir::new();
    let out = jeos_snapshot!(
        "check_no_arguments",
        dir.filters(),
        dir.jeos().args(["check"])
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn example_recipes_pass_check() {
    let dir = recipes_dir();
    let mut recipes: Vec<_> = std::fs::read_dir(&dir)
        .expect("recipes/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    recipes.sort();
    assert!(
        recipes.len() >= 3,
        "expected at least three example recipes"
    );
    let out = jeos()
        .arg("check")
        .args(&recipes)
        .output()
        .expect("run jeos");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = recipes
        .iter()
        .map(|p| {
            p.file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for expected in ["nginx.toml", "redis.toml", "memcached.toml"] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
}

/// Issue #8: recipe paths that leave the recipe's directory (absolute, `../..`, or a
/// symlink inside it) would copy host files such as `/etc/shadow` into the image.
#[test]
fn issue_8_recipe_host_paths_stay_inside_the_recipe_directory() {
    let dir = TestDir::new();
    dir.create("outside.txt", "secret\n");
    let inner = dir.path().join("r");
    std::fs::create_dir_all(&inner).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", inner.join("link.txt")).unwrap();
    let cases = [
        (
            "[[file]]\npath = \"/etc/x\"\nsource = \"/etc/hostname\"\n",
            "absolute",
        ),
        (
            "[[file]]\npath = \"/etc/x\"\nsource = \"../outside.txt\"\n",
            "dot-dot",
        ),
        (
            "[[file]]\npath = \"/etc/x\"\nsource = \"link.txt\"\n",
            "symlink",
        ),
    ];
    for (extra, what) in cases {
        std::fs::write(inner.join("site.toml"), recipe(&format!("\n{extra}"))).unwrap();
        let out = dir
            .jeos()
            .args(["check", "r/site.toml"])
            .env_remove("JEOS_ALLOW_HOST_PATHS")
            .output()
            .expect("run jeos");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains("outside the recipe's directory"),
            "{what}: {stderr}"
        );
        let allowed = dir
            .jeos()
            .args(["check", "r/site.toml"])
            .env("JEOS_ALLOW_HOST_PATHS", "1")
            .output()
            .expect("run jeos");
        assert_eq!(allowed.status.code(), Some(0), "{what} with the opt-in");
    }
    // A file inside the directory is fine.
    std::fs::write(inner.join("index.html"), "hi\n").unwrap();
    std::fs::write(
        inner.join("site.toml"),
        recipe("\n[[file]]\npath = \"/etc/x\"\nsource = \"index.html\"\n"),
    )
    .unwrap();
    let out = dir.jeos().args(["check", "r/site.toml"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
