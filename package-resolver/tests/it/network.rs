//! Against the real Debian mirror of the host's apt configuration. Skips loudly when there
//! is no configured mirror, no keyring or no network (fails under `CI=true`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use package_resolver::cache::Cache;
use package_resolver::client::{ClientConfig, ClientError, HttpClient, Repository};
use package_resolver::deb::{UnpackDir, UnpackOptions};
use package_resolver::fetch::{FetchItem, FetchOptions, fetch_all};
use package_resolver::release::{self, DEBIAN_ARCHIVE_KEYRING, Keyring};
use package_resolver::reporter::NoReporter;
use package_resolver::sources::AptSources;

/// The mirror and keyring, or `None` after printing why the test is skipped.
fn setup(suite: &str) -> Option<(String, Keyring)> {
    let sources = match AptSources::load(Path::new("/")) {
        Ok(s) => s,
        Err(e) => {
            crate::skip(&format!("cannot read the host's apt sources: {e}"));
            return None;
        }
    };
    let mirror = match sources.mirror_for_suite(suite) {
        Ok(m) => m.uri,
        Err(e) => {
            crate::skip(&e.to_string());
            return None;
        }
    };
    let keyring = match Keyring::from_file(Path::new(DEBIAN_ARCHIVE_KEYRING)) {
        Ok(k) => k,
        Err(e) => {
            crate::skip(&format!("{e} (install `debian-archive-keyring`)"));
            return None;
        }
    };
    Some((mirror, keyring))
}

fn quick_client() -> HttpClient {
    HttpClient::new(
        ClientConfig {
            attempts: 2,
            connect_timeout: std::time::Duration::from_secs(5),
            ..ClientConfig::default()
        },
        Arc::new(NoReporter),
    )
}

/// Fetch the InRelease bytes, or `None` (SKIPPED) when the mirror is unreachable.
fn fetch_inrelease(mirror: &str, suite: &str) -> Option<Vec<u8>> {
    let url = format!("{mirror}/dists/{suite}/InRelease");
    match quick_client().get_bytes(&url, release::MAX_INRELEASE_BYTES) {
        Ok(b) => Some(b),
        Err(e @ (ClientError::Transient { .. } | ClientError::Status { .. })) => {
            crate::skip(&format!("mirror unreachable: {e}"));
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn verify_real(suite: &str) {
    let Some((mirror, keyring)) = setup(suite) else {
        return;
    };
    let Some(bytes) = fetch_inrelease(&mirror, suite) else {
        return;
    };
    let start = Instant::now();
    let verified = release::verify_inrelease(&bytes, &keyring, suite, SystemTime::now())
        .unwrap_or_else(|e| panic!("{suite}: {e}"));
    let elapsed = start.elapsed();
    assert_eq!(verified.release.codename.as_deref(), Some(suite));
    let good = verified
        .signatures
        .iter()
        .filter(|s| matches!(s, release::SignatureStatus::Good { .. }))
        .count();
    assert!(good >= 1);
    assert!(
        verified
            .release
            .sha256
            .contains_key("main/binary-amd64/Packages.xz")
    );
    eprintln!(
        "measure: {suite} InRelease ({} bytes, {} signatures, {good} good) verified+parsed in {:.1} ms",
        bytes.len(),
        verified.signatures.len(),
        elapsed.as_secs_f64() * 1000.0
    );
}

#[test]
fn real_trixie_inrelease_verifies() {
    verify_real("trixie");
}

#[test]
fn real_bookworm_inrelease_verifies() {
    verify_real("bookworm");
}

#[test]
fn real_trixie_packages_and_debs() {
    let suite = "trixie";
    let Some((mirror, keyring)) = setup(suite) else {
        return;
    };
    if fetch_inrelease(&mirror, suite).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = Cache::open(&tmp.path().join("cache")).unwrap();
    let repo = Repository::new(&mirror, keyring, Arc::new(NoReporter)).with_cache(cache.clone());
    let release = repo.fetch_release(suite, SystemTime::now()).unwrap();
    assert!(release.release.acquire_by_hash, "Debian serves by-hash");
    let start = Instant::now();
    let index = repo.fetch_packages(&release, "main", "amd64").unwrap();
    let total = start.elapsed();
    eprintln!(
        "measure: trixie main/amd64 Packages.xz: download {:.2} s, verify+decompress {:.2} s, total {:.2} s, {} MiB uncompressed",
        index.timings.download.as_secs_f64(),
        index.timings.decompress.as_secs_f64(),
        total.as_secs_f64(),
        index.text.len() >> 20
    );
    let start = Instant::now();
    let warm = repo.fetch_packages(&release, "main", "amd64").unwrap();
    assert!(warm.timings.cache_hit);
    eprintln!(
        "measure: warm Packages from cache {:.2} s",
        start.elapsed().as_secs_f64()
    );

    let paragraphs = package_resolver::deb822::parse(&index.text).unwrap();
    let item = |name: &str| -> Option<FetchItem> {
        let p = paragraphs.iter().find(|p| p.get("Package") == Some(name))?;
        Some(FetchItem {
            name: name.to_owned(),
            filename: p.get("Filename")?.to_owned(),
            size: p.get("Size")?.parse().ok()?,
            sha256: p.get("SHA256")?.to_owned(),
        })
    };
    let small = item("hostname").expect("trixie has `hostname`");
    let paths = fetch_all(&repo, &cache, &[small], FetchOptions::default()).unwrap();
    let stage = tmp.path().join("root");
    let mut staging = UnpackDir::new(&stage).unwrap();
    let report = staging
        .unpack_deb(&paths[0], &UnpackOptions::default())
        .unwrap();
    assert_eq!(report.name, "hostname");
    assert!(stage.join("usr/bin/hostname").is_file());
    assert_eq!(staging.manifest()["usr/bin/hostname"].mode & 0o111, 0o111);

    // Throughput of unpacking a larger package (xz-compressed data.tar).
    let Some(big) = ["libicu76", "libicu72"].iter().find_map(|n| item(n)) else {
        crate::skip("no large test package in the index");
        return;
    };
    let paths = fetch_all(
        &repo,
        &cache,
        std::slice::from_ref(&big),
        FetchOptions::default(),
    )
    .unwrap();
    let mut staging = UnpackDir::new(&tmp.path().join("big")).unwrap();
    let start = Instant::now();
    let report = staging
        .unpack_deb(&paths[0], &UnpackOptions::default())
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "measure: unpacked {} ({:.1} MiB .deb, {:.1} MiB files, {} entries) in {:.2} s = {:.1} MiB/s of output",
        big.name,
        big.size as f64 / 1048576.0,
        report.bytes as f64 / 1048576.0,
        report.files,
        secs,
        report.bytes as f64 / 1048576.0 / secs
    );
}
