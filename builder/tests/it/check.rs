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

/// Issue #13: `from = "host"` is for `http` and `tcp` checks; the error points at `from`.
#[test]
fn issue_13_host_checks_are_http_or_tcp() {
    let dir = TestDir::new();
    dir.create(
        "from.toml",
        &recipe(
            "\n[[service]]\nname = \"web\"\nexec = [\"/usr/bin/web\"]\n\n[[test.check]]\nname = \"running\"\nfrom = \"host\"\nservice = { name = \"web\" }\n\n[[test.check]]\nname = \"page\"\nfrom = \"outside\"\nhttp = { port = 80 }\n",
        ),
    );
    let out = jeos_snapshot!(
        "issue_13_host_checks_are_http_or_tcp",
        dir.filters(),
        dir.jeos().args(["check", "from.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only `http` and `tcp` checks can run from the host"));
    assert!(stderr.contains("from.toml:"));
}

/// Issue #15: a convertible image needs dash and dpkg; excluding one is an error at the
/// excluded name, not an exclusion quietly ignored.
#[test]
fn issue_15_convertible_refuses_to_exclude_what_it_needs() {
    let dir = TestDir::new();
    let text = recipe("\n[disk]\nconvertible = true\n").replace(
        "install = [\"hello\"]",
        "install = [\"hello\"]\nexclude = [\"dpkg\", \"iproute2\"]",
    );
    let check = |text: &str| {
        dir.create("v2v.toml", text);
        dir.jeos()
            .args(["check", "v2v.toml"])
            .output()
            .expect("run jeos")
    };
    let out = check(&text);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value `dpkg` for `packages.exclude`"),
        "{stderr}"
    );
    assert!(stderr.contains("v2v.toml:10:12"), "{stderr}");
    assert!(stderr.contains("drop `convertible`"), "{stderr}");
    assert!(!stderr.contains("`iproute2`"), "{stderr}");
    // Without convertible the same exclusion is fine.
    let out = check(&text.replace("convertible = true", "convertible = false"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// Issue #10: a file with four unknown-key and wrong-type mistakes reports all four, each
/// with its span (serde alone stops at the first).
#[test]
fn issue_10_every_structural_error_at_once() {
    let dir = TestDir::new();
    dir.create(
        "four.toml",
        &recipe(
            "\n[vm]\ncpus = \"two\"\nmemroy = \"1GiB\"\n\n[disk]\nformats = \"raw\"\n\n[[service]]\nname = \"web\"\nexec = [\"/usr/bin/web\", 8080]\nrestart = true\n",
        ),
    );
    let out = jeos_snapshot!(
        "check_issue_10_four_errors",
        dir.filters(),
        dir.jeos().args(["check", "four.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`vm.cpus` must be an integer"), "{stderr}");
    assert!(stderr.contains("5 problems in 1 recipe"), "{stderr}");
}

/// Issue #10: structural problems and semantic ones (a bad size, a bad name) together.
#[test]
fn issue_10_structural_and_semantic_errors_together() {
    let dir = TestDir::new();
    dir.create(
        "mixed.toml",
        &recipe(
            "\n[vm]\nmemory = \"64MB\"\ncolour = \"red\"\n\n[system]\nhostname = \"Not A Host\"\n",
        ),
    );
    let out = jeos_snapshot!(
        "check_issue_10_mixed",
        dir.filters(),
        dir.jeos().args(["check", "mixed.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown key `colour`"), "{stderr}");
    assert!(stderr.contains("invalid size `64MB`"), "{stderr}");
    assert!(stderr.contains("Not A Host"), "{stderr}");
}

/// Issue #10: several syntax errors in one file are all reported.
#[test]
fn issue_10_several_syntax_errors() {
    let dir = TestDir::new();
    dir.create(
        "syntax.toml",
        "[appliance]\nname = \"demo\"\nversion = 1.0.0\n\n[source]\nsuite = trixie\n\n[packages]\ninstall = [\"hello\"\n",
    );
    let out = jeos_snapshot!(
        "check_issue_10_syntax",
        dir.filters(),
        dir.jeos().args(["check", "syntax.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
    let count = String::from_utf8_lossy(&out.stderr)
        .matches("invalid TOML")
        .count();
    assert!(count >= 2, "expected several syntax errors");
}

/// Issue #10: missing required keys in several tables are all reported.
#[test]
fn issue_10_missing_keys_everywhere() {
    let dir = TestDir::new();
    dir.create(
        "missing.toml",
        "[appliance]\nname = \"demo\"\n\n[packages]\ninstall = [\"hello\"]\n\n[[service]]\nname = \"x\"\n\n[[test.check]]\ntcp = { port = 80 }\n",
    );
    let out = jeos_snapshot!(
        "check_issue_10_missing_keys",
        dir.filters(),
        dir.jeos().args(["check", "missing.toml"])
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["`version`", "`source`", "`exec`", "`name`"] {
        assert!(
            stderr.contains(&format!("missing key {key}")),
            "{key}: {stderr}"
        );
    }
}

/// Issue #10: a check on a port that no service's readiness probe names is a warning
/// (found by `jeos check`, not at boot); the recipe stays valid.
#[test]
fn issue_10_check_on_a_port_no_service_names() {
    let dir = TestDir::new();
    dir.create(
        "port.toml",
        &recipe(
            "\n[[service]]\nname = \"web\"\nexec = [\"/usr/bin/web\"]\nready = { tcp = 80 }\n\n[[test.check]]\nname = \"page\"\nhttp = { port = 80 }\n\n[[test.check]]\nname = \"admin page\"\nhttp = { port = 8080, path = \"/admin\" }\n",
        ),
    );
    // No index in this cache: the programs are not looked up (another test does that).
    let out = jeos_snapshot!(
        "check_issue_10_port_warning",
        dir.filters(),
        dir.jeos()
            .env("XDG_CACHE_HOME", dir.path().join("xdg"))
            .args(["check", "port.toml"])
    );
    assert_eq!(out.status.code(), Some(0));
    let out = dir
        .jeos()
        .env("XDG_CACHE_HOME", dir.path().join("xdg"))
        .args(["check", "--json", "port.toml"])
        .output()
        .expect("run");
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(value["recipes"][0]["diagnostics"][0]["severity"], "warning");
    assert_eq!(value["summary"]["warnings"], 1);
}

/// Issue #10: with the suite's index (`--online` fetches it), `jeos check` resolves the
/// packages and points at an unknown one.
#[test]
fn issue_10_unknown_package_with_an_index() {
    if crate::resolve::reachable_mirror("trixie").is_none() {
        crate::docs::skip_or_fail("the Debian mirror is unreachable");
        return;
    }
    let dir = TestDir::new();
    dir.create(
        "pkg.toml",
        &recipe("").replace(
            "install = [\"hello\"]",
            "install = [\"hello\", \"nginx-lihgt\"]",
        ),
    );
    let out = dir
        .jeos()
        .arg("--cache-dir")
        .arg(crate::resolve::shared_cache())
        .args(["check", "--online", "pkg.toml"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown package `nginx-lihgt` in `trixie`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pkg.toml:9:"),
        "no span on the install entry: {stderr}"
    );
}

/// Issue #10: with the index, `jeos check` finds every service and task program in the
/// closure (merged `/usr`, symlinks and alternatives followed) and points at the `exec` of
/// one that no package ships (`--online` fetches the packages that are not cached).
#[test]
fn issue_10_programs_must_be_in_the_closure() {
    if crate::resolve::reachable_mirror("trixie").is_none() {
        crate::docs::skip_or_fail("the Debian mirror is unreachable");
        return;
    }
    let dir = TestDir::new();
    let services = r#"
[[service]]
name = "hello"
exec = ["/usr/bin/hello"]

[[service]]
name = "web"
exec = ["/usr/sbin/nginx", "-g", "daemon off;"]

[[task]]
name = "greet"
exec = ["/bin/hello", "--greeting", "hi"]
"#;
    dir.create("prog.toml", &recipe(services));
    let run = |args: &[&str]| {
        let out = dir
            .jeos()
            .arg("--cache-dir")
            .arg(crate::resolve::shared_cache())
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["check", "--online", "prog.toml"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no package of the closure provides `/usr/sbin/nginx`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("prog.toml:17:"),
        "no span on exec: {stderr}"
    );
    assert!(
        !stderr.contains("/usr/bin/hello`"),
        "hello is shipped: {stderr}"
    );
    assert!(
        !stderr.contains("/bin/sh`"),
        "/bin/sh is dash's (merged /usr): {stderr}"
    );
    // With the program the closure ships, the recipe is valid.
    dir.create(
        "ok.toml",
        &recipe(&services.replace("/usr/sbin/nginx", "/usr/bin/hello")),
    );
    let (code, stderr) = run(&["check", "--online", "ok.toml"]);
    assert_eq!(code, Some(0), "{stderr}");
}
