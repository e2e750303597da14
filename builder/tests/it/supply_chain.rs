//! Issue #8: `jeos audit` and the SPDX SBOM against the real Debian archive and the built
//! nginx image.

use std::path::Path;

use builder::audit::{self, AuditTarget};
use package_resolver::lock::LockFile;

use crate::appliances::built;
use crate::common::TestDir;
use crate::resolve::{reachable_mirror, shared_cache};

fn audit_json(
    dir: &TestDir,
    target: &Path,
    extra: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let output = dir
        .jeos()
        .arg("--json")
        .arg("--cache-dir")
        .arg(shared_cache())
        .args(extra)
        .arg("audit")
        .arg(target)
        .output()
        .expect("run jeos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or("null");
    (
        output.status.code(),
        serde_json::from_str(last).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// An "old" lock, made reproducibly: the nginx recipe with `security = false` takes nginx
/// from `trixie`; when `trixie-security` has a newer nginx, audit must list it and exit 1.
#[test]
fn issue_8_audit_of_an_old_lock_lists_nginx_as_security_and_exits_1() {
    if reachable_mirror("trixie").is_none() {
        return;
    }
    let dir = TestDir::new();
    let text = std::fs::read_to_string(crate::common::recipes_dir().join("nginx.toml")).unwrap();
    let old = text.replacen(
        "suite = \"trixie\"\n",
        "suite = \"trixie\"\nsecurity = false\n",
        1,
    );
    assert_ne!(old, text, "the recipe names trixie");
    let recipe = dir.create("old.toml", &old);
    let status = dir
        .jeos()
        .arg("--cache-dir")
        .arg(shared_cache())
        .arg("resolve")
        .arg(&recipe)
        .output()
        .expect("resolve");
    assert!(status.status.success(), "{status:?}");
    let lock_path = recipe.with_extension("lock");
    let lock = LockFile::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path).unwrap();
    assert!(lock.source.releases.iter().all(|r| r.archive == "main"));

    let (code, json, stderr) = audit_json(&dir, &lock_path, &[]);
    let updates = json["updates"].as_array().cloned().unwrap_or_default();
    let nginx = updates.iter().find(|u| u["name"] == "nginx");
    match nginx {
        Some(nginx) => {
            assert_eq!(nginx["security"], true, "{json}");
            assert_eq!(nginx["suite"], "trixie-security", "{json}");
            assert_eq!(code, Some(1), "{stderr}");
        }
        None => eprintln!(
            "SKIPPED: trixie-security has no nginx newer than trixie today; audit said {json}"
        ),
    }
    // The same check through the recipe (its lock beside it).
    let (code_recipe, _, stderr) = audit_json(&dir, &recipe, &[]);
    assert_eq!(code_recipe, code, "{stderr}");
}

#[test]
fn issue_8_audit_of_a_fresh_build_exits_0_and_reads_the_image_alone() {
    let Some(nginx) = built("nginx") else { return };
    let dir = TestDir::new();
    let (code, json, stderr) = audit_json(&dir, &nginx.raw, &[]);
    assert_eq!(code, Some(0), "{json} {stderr}");
    assert_eq!(json["updates"], serde_json::json!([]), "{json}");
    assert_eq!(json["suites"].as_array().map(Vec::len), Some(3), "{json}");

    // The image carries its own manifest: the same lock as the build's, read from the
    // ESP of every format with no cache and no network. The index itself then cannot be
    // had: the contents are listed, and exit 3 says "not compared".
    let (lock, _) = audit::read_target(&AuditTarget::Image(nginx.raw.clone())).expect("manifest");
    let beside = nginx.recipe.with_extension("lock");
    let expected = LockFile::parse(&std::fs::read_to_string(&beside).unwrap(), &beside).unwrap();
    assert_eq!(lock, expected);
    let empty = dir.path().join("empty-cache");
    let stem = nginx
        .raw
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let formats = [
        nginx.dir.clone(),
        nginx.raw.clone(),
        nginx.dir.join(format!("{stem}.qcow2")),
        nginx.dir.join(format!("{stem}-disk1.vmdk")),
        nginx.dir.join(format!("{stem}.ova")),
    ];
    for image in &formats {
        let (lock, _) = audit::read_target(&AuditTarget::Image(image.clone()))
            .unwrap_or_else(|e| panic!("manifest of {}: {e:?}", image.display()));
        assert_eq!(lock, expected, "{}", image.display());
        let output = dir
            .jeos()
            .arg("--offline")
            .arg("--cache-dir")
            .arg(&empty)
            .arg("--mirror")
            .arg("http://127.0.0.1:9/debian")
            .arg("audit")
            .arg(image)
            .output()
            .expect("run jeos");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stdout.lines().any(|l| l.starts_with("nginx  ")), "{stdout}");
        assert_eq!(
            output.status.code(),
            Some(3),
            "{}: {stderr}",
            image.display()
        );
        assert!(stderr.contains("cannot load the current index"), "{stderr}");
        assert!(
            stderr.contains("not compared with the suites now"),
            "{stderr}"
        );
    }
    // --json: the contents and `compared: false`.
    let output = dir
        .jeos()
        .args(["--json", "--offline", "--cache-dir"])
        .arg(&empty)
        .arg("audit")
        .arg(&formats[4])
        .output()
        .expect("run jeos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or_default();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(json["compared"], false, "{json}");
    assert_eq!(json["exit_code"], 3, "{json}");
    assert!(
        json["reason"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot load the current index")),
        "{json}"
    );
    assert!(
        json["packages"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "nginx")),
        "{json}"
    );
    // With the index, the OVA audits like the raw image.
    let (code, json, stderr) = audit_json(&dir, &formats[4], &[]);
    assert_eq!(code, Some(0), "{json} {stderr}");
    assert_eq!(json["updates"], serde_json::json!([]), "{json}");
}

#[test]
fn issue_8_every_build_writes_an_spdx_2_3_sbom_that_validates() {
    let Some(nginx) = built("nginx") else { return };
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spdx-2.3.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the SPDX schema compiles");
    let sbom_path = nginx.dir.join("nginx-1.0.0.spdx.json");
    let text = std::fs::read_to_string(&sbom_path).expect("SBOM beside the image");
    let sbom: serde_json::Value = serde_json::from_str(&text).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sbom)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "SPDX 2.3 schema violations: {errors:#?}");
    // A broken document is rejected (the validator is not vacuous).
    let mut broken = sbom.clone();
    broken["packages"][1]["checksums"][0]["algorithm"] = serde_json::json!("CRC32");
    assert!(!validator.is_valid(&broken));

    let lock_path = nginx.recipe.with_extension("lock");
    let lock = LockFile::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path).unwrap();
    let packages = sbom["packages"].as_array().unwrap();
    for p in &lock.packages {
        let entry = packages
            .iter()
            .find(|e| {
                e["SPDXID"] == format!("SPDXRef-Package-{}", p.name.replace('+', "-")).as_str()
            })
            .unwrap_or_else(|| panic!("{} missing", p.name));
        assert_eq!(entry["versionInfo"], p.version.to_string());
        assert_eq!(entry["checksums"][0]["checksumValue"], p.sha256.as_str());
    }
    let nginx_entry = packages
        .iter()
        .find(|e| e["SPDXID"] == "SPDXRef-Package-nginx")
        .unwrap();
    let license = nginx_entry["licenseDeclared"].as_str().unwrap();
    assert!(
        license.contains("BSD-2-Clause"),
        "nginx licence from its copyright file: {license}"
    );
    assert!(packages.iter().any(|e| e["SPDXID"] == "SPDXRef-Kernel"));
    assert!(packages.iter().any(|e| e["name"] == "jeos"));
    // The same document is on the ESP.
    let on_esp = image_writer::esp::read_esp_file(&nginx.raw, audit::ESP_SBOM, 1 << 24).unwrap();
    assert_eq!(on_esp, text.as_bytes());
}
