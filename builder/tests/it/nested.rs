//! The embedded KVM runner on real Linux, in CI: this host's `/dev/kvm` (kvm_pvm) cannot
//! boot Linux, so `scripts/nested-kvm` boots a Debian 12 kernel ("L1") under QEMU TCG with
//! an emulated AMD-V CPU, where kvm_amd gives a hardware-style `/dev/kvm`, and runs one job
//! there: `jeos test --vmm embedded --json --junit` on the appliances built here (shared
//! read-only over 9p). The host then reads back what L1 wrote and asserts on it:
//!
//! - nginx and redis pass every check, the ready line arrived, the VM powered off cleanly;
//! - redis booted with 2 vCPUs and the guest saw 2 CPUs;
//! - nginx whose access log prints forged protocol lines on the console still reports
//!   exactly its own two passing checks (results travel on COM2, not on the console);
//! - nginx whose service exits at once fails (`never became ready`).
//!
//! One L1 boot runs all four jobs, then `jeos run --vmm embedded --forward` on nginx
//! (curl through vsock, Ctrl-A X). Every VM run is bounded by a timeout; on failure the
//! tails of the L1 console and of each appliance console are printed. Under `CI=true` a
//! missing prerequisite (QEMU, the kernel package, the mirror) fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::appliances::{Built, built, nginx_variant};
use crate::common::TestDir;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `false` after a loud skip; under `CI=true` a missing prerequisite panics instead.
fn prerequisite(ok: bool, why: &str) -> bool {
    if !ok {
        assert!(!in_ci(), "prerequisite missing under CI=true: {why}");
        eprintln!("SKIPPED: {why}");
    }
    ok
}

const EXEC: &str = "exec = [\"/usr/sbin/nginx\", \"-g\", \"daemon off;\"]\nrestart = \"always\"";

/// nginx whose access log (its stdout, so the console) prints forged protocol lines.
pub fn forged_nginx(base: &Built) -> PathBuf {
    nginx_variant(
        base,
        "forged",
        &[
            (
                EXEC,
                "exec = [\"/usr/sbin/nginx\", \"-c\", \"/etc/nginx/forged.conf\", \"-g\", \"daemon off;\"]\nrestart = \"always\"",
            ),
            ("[network]", &format!("{FORGED_CONF}\n[network]")),
        ],
    )
}

/// nginx's access log is the console; each request writes three forged result lines.
const FORGED_CONF: &str = r#"
[[file]]
path = "/etc/nginx/forged.conf"
mode = "0644"
content = '''
user www-data;
error_log stderr;
events {}
http {
    log_format forged 'JEOS1 error detail=forged\nJEOS1 check index=0 status=fail ms=1 name=forged detail=forged\nJEOS1 done passed=0 failed=1';
    access_log /proc/self/fd/1 forged;
    server { listen 80; root /var/www/html; }
}
'''
"#;

/// One `jeos test` job inside L1.
struct Job {
    name: &'static str,
    image: PathBuf,
    cpus: u32,
}

fn job_script(jeos: &Path, out: &Path, jobs: &[Job]) -> String {
    let mut script = String::from(
        "#!/bin/bash\n# Runs inside L1 (scripts/nested-kvm), chrooted in the host's root.\n\
         export TMPDIR=/run HOME=/run XDG_CACHE_HOME=/run/cache LC_ALL=C NO_COLOR=1\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         echo \"kvm: $(ls -l /dev/kvm)\"\n",
    );
    for job in jobs {
        let o = out.join(job.name).display().to_string();
        script.push_str(&format!(
            "s=$(cut -d' ' -f1 /proc/uptime)\n\
             timeout -k 5 420 {jeos} --json test --vmm embedded --cpus {cpus} --timeout 360s \
             --keep-log {o}.console --junit {o}.junit.xml {image} > {o}.json 2> {o}.stderr\n\
             echo $? > {o}.rc\n\
             echo \"{name}: exit $(cat {o}.rc), $s s -> $(cut -d' ' -f1 /proc/uptime) s\"\n",
            jeos = jeos.display(),
            cpus = job.cpus,
            image = job.image.display(),
            name = job.name,
        ));
    }
    script
}

/// `jeos run --vmm embedded --forward` on `image` inside L1: curl from L1 through the
/// forwarded port (vsock to guest-init's relay to nginx), then `Ctrl-A X` on the console
/// for a clean power-off. L1's init leaves the loopback interface down: bring it up for
/// the TCP side. Writes `forward.{curl.rc,body,rc,console,stderr}`.
fn forward_script(jeos: &Path, out: &Path, image: &Path) -> String {
    let o = out.join("forward").display().to_string();
    format!(
        "s=$(cut -d' ' -f1 /proc/uptime)\n\
         ip link set lo up\n\
         trap '' PIPE\n\
         mkfifo /run/forward.in\n\
         timeout -k 5 300 {jeos} run --vmm embedded --forward 127.0.0.1:18080:80 {image} \
         < /run/forward.in > {o}.console 2> {o}.stderr &\n\
         pid=$!\n\
         exec 4> /run/forward.in\n\
         rc=1\n\
         for i in $(seq 200); do\n\
           if curl -fsS -m 5 -o {o}.body http://127.0.0.1:18080/ 2> {o}.curl.err; then rc=0; break; fi\n\
           kill -0 $pid 2> /dev/null || break\n\
           sleep 1\n\
         done\n\
         echo $rc > {o}.curl.rc\n\
         printf '\\001x' >&4 2> /dev/null\n\
         wait $pid\n\
         echo $? > {o}.rc\n\
         exec 4>&-\n\
         echo \"forward: curl $rc, run exit $(cat {o}.rc), $s s -> $(cut -d' ' -f1 /proc/uptime) s\"\n",
        jeos = jeos.display(),
        image = image.display(),
    )
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What the host reads back for one job.
struct JobResult {
    rc: Option<i32>,
    test: serde_json::Value,
    junit: String,
    console: String,
    diagnostics: String,
}

fn job_result(out: &Path, name: &str) -> JobResult {
    let o = out.join(name);
    let stdout = read(&o.with_extension("json"));
    let test = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("test").cloned())
        .unwrap_or(serde_json::Value::Null);
    let console = read(&o.with_extension("console"));
    let diagnostics = format!(
        "--- {name}: stdout\n{stdout}\n--- {name}: stderr\n{}\n--- {name}: console tail\n{}",
        tail(&read(&o.with_extension("stderr")), 30),
        tail(&console, 40)
    );
    JobResult {
        rc: read(&o.with_extension("rc")).trim().parse().ok(),
        test,
        junit: read(&o.with_extension("junit.xml")),
        console,
        diagnostics,
    }
}

fn assert_passed(result: &JobResult, checks: usize, cpus: u64) {
    let d = &result.diagnostics;
    assert_eq!(result.rc, Some(0), "{d}");
    let test = &result.test;
    assert_eq!(test["passed"], true, "{d}");
    assert_eq!(test["vmm"], "embedded", "{d}");
    assert_eq!(test["exit"], "power off", "a clean power-off: {d}");
    assert!(test["ready_ms"].as_u64().is_some_and(|ms| ms > 0), "{d}");
    assert_eq!(test["boot"]["cpus"].as_u64(), Some(cpus), "{d}");
    let list = test["checks"].as_array().expect("checks");
    assert_eq!(list.len(), checks, "{d}");
    assert!(list.iter().all(|c| c["passed"] == true), "{d}");
    assert_eq!(result.junit.matches("<testcase ").count(), checks, "{d}");
    assert_eq!(result.junit.matches("<failure ").count(), 0, "{d}");
}

#[test]
fn embedded_runner_boots_the_appliances_under_nested_kvm() {
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !prerequisite(
        qemu,
        "qemu-system-x86_64 is not installed (scripts/install-deps)",
    ) {
        return;
    }
    let (nginx, redis) = (built("nginx"), built("redis"));
    let (Some(nginx), Some(redis)) = (nginx, redis) else {
        prerequisite(
            false,
            "the example appliances could not be built (no mirror)",
        );
        return;
    };
    let dir = TestDir::new();
    let forged = forged_nginx(&nginx);
    let broken = nginx_variant(
        &nginx,
        "broken",
        &[(
            EXEC,
            "exec = [\"/usr/sbin/nginx\", \"-c\", \"/etc/nginx/absent.conf\"]\nrestart = \"no\"",
        )],
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let jobs = [
        Job {
            name: "nginx",
            image: nginx.raw.clone(),
            cpus: 1,
        },
        Job {
            name: "redis",
            image: redis.raw.clone(),
            cpus: 2,
        },
        Job {
            name: "forged",
            image: forged,
            cpus: 1,
        },
        Job {
            name: "broken",
            image: broken,
            cpus: 1,
        },
    ];
    let jeos = Path::new(env!("CARGO_BIN_EXE_jeos"));
    let script = dir.create(
        "l1-job.sh",
        &(job_script(jeos, &out, &jobs) + &forward_script(jeos, &out, &nginx.raw)),
    );
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/nested-kvm");
    let started = Instant::now();
    let run = Command::new(&harness)
        .arg(&script)
        .arg(&out)
        .env("L1_TIMEOUT", "1800")
        .output()
        .expect("run scripts/nested-kvm");
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!(
        "nested-kvm: {:.1} s wall\n{stderr}{}",
        started.elapsed().as_secs_f64(),
        read(&out.join("job.log"))
    );
    if run.status.code() == Some(3) && !prerequisite(false, &format!("nested KVM: {stderr}")) {
        return;
    }
    // Kept for a look after the run (the test directory goes away).
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nested-last");
    let _ = std::fs::remove_dir_all(&kept);
    let _ = Command::new("cp").arg("-a").arg(&out).arg(&kept).status();
    let l1 = format!(
        "--- L1 console tail\n{}\n--- job log\n{}",
        tail(&read(&out.join("l1.console")), 40),
        read(&out.join("job.log"))
    );
    assert!(run.status.success(), "L1 did not finish:\n{stderr}\n{l1}");
    assert_eq!(read(&out.join("job.status")).trim(), "0", "{l1}");

    let nginx = job_result(&out, "nginx");
    assert_passed(&nginx, 2, 1);
    let redis = job_result(&out, "redis");
    assert_passed(&redis, 2, 2);

    let forged = job_result(&out, "forged");
    assert!(
        forged.console.contains("JEOS1 check index=0 status=fail"),
        "the forger printed its lines on the console: {}",
        forged.diagnostics
    );
    assert_passed(&forged, 2, 1);
    let names: Vec<&str> = forged.test["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["serves the page", "nginx is ready"],
        "{}",
        forged.diagnostics
    );

    let broken = job_result(&out, "broken");
    let d = &broken.diagnostics;
    assert_eq!(broken.rc, Some(1), "a broken appliance fails: {d}");
    assert_eq!(broken.test["passed"], false, "{d}");
    let failure = broken.test["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("never became ready") && failure.contains("nginx"),
        "{d}"
    );
    assert_eq!(broken.junit.matches("<failure ").count(), 1, "{d}");
    // Issue #13: `jeos run --vmm embedded --forward` answers curl from L1 over vsock, and
    // Ctrl-A X powers the guest off cleanly.
    let forward = |ext: &str| read(&out.join(format!("forward.{ext}")));
    let diagnostics = format!(
        "--- stderr\n{}\n--- curl\n{}\n--- console tail\n{}",
        forward("stderr"),
        forward("curl.err"),
        tail(&forward("console"), 40)
    );
    assert_eq!(forward("curl.rc").trim(), "0", "{diagnostics}");
    assert!(forward("body").contains("hello from jeos"), "{diagnostics}");
    assert_eq!(forward("rc").trim(), "0", "{diagnostics}");
    assert!(
        forward("console").contains("shutdown requested by the host over vsock"),
        "{diagnostics}"
    );
    eprintln!(
        "nested: nginx ready {} ms, redis (2 vCPUs) ready {} ms, whole run {:.1} s",
        nginx.test["ready_ms"],
        redis.test["ready_ms"],
        started.elapsed().as_secs_f64()
    );
}
