//! resolver-core integration: Packages text -> index -> solve -> verify -> lock round trip,
//! plus a dev-time measurement on a real index (`#[ignore]`, needs `JEOS_TRIXIE_PACKAGES`).

use std::path::Path;
use std::time::Instant;

use package_resolver::lock::{LockFile, LockSource, RequestSnapshot};
use package_resolver::packages::PackageIndex;
use package_resolver::solver::{SolveRequest, solve, verify_closure};

fn stanza(name: &str, version: &str, kib: u64, extra: &str) -> String {
    format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nInstalled-Size: {kib}\n\
         Filename: pool/main/{name}_{version}_amd64.deb\nSize: {size}\nSHA256: {sha:064x}\n\
         {extra}Description: {name}\n long text\n\n",
        size = kib * 300,
        sha = name.len() * 7919,
    )
}

#[test]
fn index_solve_verify_lock_round_trip() {
    let main = [
        stanza(
            "web",
            "1.0-1",
            900,
            "Depends: libc6 (>= 2.36), web-common (= 1.0-1), logger | syslog-ng\n",
        ),
        stanza("web-common", "1.0-1", 100, "Depends: init-system-helpers\n"),
        stanza(
            "libc6",
            "2.41-7",
            12000,
            "Multi-Arch: same\nBreaks: web (<< 0.5)\n",
        ),
        stanza("init-system-helpers", "1.68", 50, "Depends: perl-base\n"),
        stanza(
            "perl-base",
            "5.40",
            10000,
            "Essential: yes\nPriority: required\n",
        ),
        stanza("logger", "2.40", 300, "Provides: system-log-daemon\n"),
        stanza("syslog-ng", "4.8", 5000, ""),
    ]
    .concat();
    let contrib = stanza("extra", "1", 1, "Depends: web\n");
    let index = PackageIndex::parse(&[main, contrib], "amd64").unwrap();
    let request = SolveRequest {
        install: vec!["web (>= 1.0)".into()],
        exclude: vec!["perl-base".into()],
        arch: "amd64".into(),
        ..SolveRequest::default()
    };
    let resolution = solve(&index, &request).unwrap();
    verify_closure(&index, &resolution).unwrap();
    let names: Vec<&str> = resolution
        .packages
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "init-system-helpers",
            "libc6",
            "logger",
            "web",
            "web-common"
        ]
    );
    assert_eq!(resolution.dropped.len(), 1);
    let why: Vec<String> = resolution
        .why("init-system-helpers")
        .unwrap()
        .into_iter()
        .map(|s| s.package)
        .collect();
    assert_eq!(why, ["web", "web-common", "init-system-helpers"]);

    let snapshot = RequestSnapshot {
        install: request.install.clone(),
        exclude: request.exclude.clone(),
        ..RequestSnapshot::default()
    };
    let lock = LockFile::from_resolution(
        &resolution,
        LockSource {
            suite: "trixie".into(),
            codename: "trixie".into(),
            components: vec!["main".into(), "contrib".into()],
            arch: "amd64".into(),
            date: "Sat, 10 May 2025 09:07:43 UTC".into(),
            sha256: "0".repeat(64),
            releases: Vec::new(),
        },
        snapshot.clone(),
        &[],
    );
    let text = lock.to_toml_string();
    let parsed = LockFile::parse(&text, Path::new("web.lock")).unwrap();
    assert_eq!(parsed, lock);
    assert_eq!(parsed.check_request(&snapshot), Ok(()));
    assert_eq!(parsed.packages.len(), resolution.packages.len());
}

/// Dev-time measurement on a real decompressed `Packages` file (not run by default):
/// `JEOS_TRIXIE_PACKAGES=/path/Packages cargo test -p package-resolver --release --test it
/// -- --ignored --nocapture core_resolve`.
#[test]
#[ignore = "needs a real Packages file in JEOS_TRIXIE_PACKAGES"]
#[allow(clippy::print_stderr, reason = "prints the measurement table")]
fn real_index_closures() {
    let Some(path) = std::env::var_os("JEOS_TRIXIE_PACKAGES") else {
        eprintln!("SKIPPED: JEOS_TRIXIE_PACKAGES is not set");
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let start = Instant::now();
    let index = PackageIndex::parse(&[text.as_str()], "amd64").unwrap();
    eprintln!(
        "index: {} packages, {} warnings, parsed in {:?}",
        index.len(),
        index.warnings().len(),
        start.elapsed()
    );
    let plain = |roots: &[&str]| SolveRequest {
        install: roots.iter().map(|s| (*s).to_owned()).collect(),
        arch: "amd64".into(),
        ..SolveRequest::default()
    };
    let mut openssh_systemd = plain(&["openssh-server"]);
    openssh_systemd.prefer = vec!["systemd".into()];
    let mut kernel = plain(&["linux-image-cloud-amd64"]);
    kernel.drop_with_reason = [
        "initramfs-tools",
        "linux-initramfs-tool",
        "kmod",
        "linux-base",
    ]
    .iter()
    .map(|n| ((*n).to_owned(), "jeos builds its own initramfs".to_owned()))
    .collect();
    for (label, request) in [
        ("nginx", plain(&["nginx"])),
        ("redis-server", plain(&["redis-server"])),
        ("dnsmasq", plain(&["dnsmasq"])),
        ("openssh-server", plain(&["openssh-server"])),
        ("openssh-server+systemd", openssh_systemd),
        ("kernel (drops)", kernel),
    ] {
        let start = Instant::now();
        let resolution = solve(&index, &request).unwrap();
        let elapsed = start.elapsed();
        verify_closure(&index, &resolution).unwrap();
        eprintln!(
            "{:<24} {:>3} packages {:>7.1} MiB installed {:>6.1} MB download  solved in {:?}",
            label,
            resolution.packages.len(),
            resolution.installed_size_kib() as f64 / 1024.0,
            resolution.download_size() as f64 / 1e6,
            elapsed,
        );
        let names: Vec<String> = resolution
            .packages
            .iter()
            .map(|p| format!("{} {}", p.name, p.version))
            .collect();
        eprintln!("    {}", names.join(", "));
        for dropped in &resolution.dropped {
            eprintln!(
                "    dropped {}: {} ({})",
                dropped.package, dropped.relation, dropped.reason
            );
        }
    }
}
