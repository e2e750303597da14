//! A generated repository served over HTTP on 127.0.0.1: the happy path and every way a
//! repository can lie. Each failure asserts the specific error and an untouched cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use package_resolver::cache::Cache;
use package_resolver::client::{ClientConfig, ClientError, Repository};
use package_resolver::deb::{UnpackDir, UnpackOptions};
use package_resolver::fetch::{FetchError, FetchItem, FetchOptions, fetch_all};
use package_resolver::release::{Keyring, ReleaseError, format_rfc2822};
use package_resolver::reporter::{RecordingReporter, ResolverEvent, ResolverWarning};

use crate::support::{RawEntry, TestKey, TestServer, deb, sha256_hex, tree, xz};

const PACKAGES_XZ: &str = "main/binary-amd64/Packages.xz";

struct Fixture {
    server: TestServer,
    key: TestKey,
    keyring: std::path::PathBuf,
    cache_dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
    debs: Vec<(FetchItem, Vec<u8>)>,
    packages_xz: Vec<u8>,
    release_text: String,
    inrelease: Vec<u8>,
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn unix_now() -> i64 {
    now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn release_text(packages: &[u8], packages_xz: &[u8], valid_until: i64) -> String {
    format!(
        "Origin: Debian\nLabel: Debian\nSuite: testing\nCodename: trixie\n\
         Date: {}\nValid-Until: {}\nAcquire-By-Hash: yes\nArchitectures: amd64\n\
         Components: main\nDescription: generated for jeos tests\nSHA256:\n \
         {} {} main/binary-amd64/Packages\n {} {} main/binary-amd64/Packages.xz\n",
        format_rfc2822(unix_now() - 60),
        format_rfc2822(valid_until),
        sha256_hex(packages),
        packages.len(),
        sha256_hex(packages_xz),
        packages_xz.len(),
    )
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let server = TestServer::start();
        let key = TestKey::generate("jeos-test-archive");
        let keyring = tmp.path().join("keyring.gpg");
        std::fs::write(&keyring, key.public_bytes()).unwrap();
        let mut debs = Vec::new();
        let mut packages = String::new();
        for (name, version) in [("hello", "1.0-1"), ("libfoo1", "2.3-4"), ("tool", "0.9")] {
            let bytes = deb(
                name,
                version,
                &[(
                    "postinst",
                    "#!/bin/sh\nupdate-alternatives --install /usr/bin/x x /usr/bin/x-impl 10\n",
                )],
                &[
                    RawEntry::dir("./"),
                    RawEntry::dir("./usr/"),
                    RawEntry::dir("./usr/bin/"),
                    RawEntry::file(
                        &format!("./usr/bin/{name}"),
                        format!("#!/bin/sh\necho {name}\n").as_bytes(),
                        0o4755,
                    ),
                ],
            );
            let filename = format!("pool/main/{}/{name}/{name}_{version}_amd64.deb", &name[..1]);
            packages.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: {filename}\nSize: {}\nSHA256: {}\n\n",
                bytes.len(),
                sha256_hex(&bytes)
            ));
            server.put(&format!("/debian/{filename}"), bytes.clone());
            debs.push((
                FetchItem {
                    name: name.to_owned(),
                    filename,
                    size: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                },
                bytes,
            ));
        }
        let packages_xz = xz(packages.as_bytes());
        server.put(
            &format!(
                "/debian/dists/trixie/main/binary-amd64/by-hash/SHA256/{}",
                sha256_hex(&packages_xz)
            ),
            packages_xz.clone(),
        );
        server.put(
            &format!("/debian/dists/trixie/{PACKAGES_XZ}"),
            packages_xz.clone(),
        );
        let release_text = release_text(packages.as_bytes(), &packages_xz, unix_now() + 86_400);
        let inrelease = key.clearsign(&release_text);
        server.put("/debian/dists/trixie/InRelease", inrelease.clone());
        let cache_dir = tmp.path().join("cache");
        Self {
            server,
            key,
            keyring,
            cache_dir,
            _tmp: tmp,
            debs,
            packages_xz,
            release_text,
            inrelease,
        }
    }

    fn repo(&self, reporter: Arc<RecordingReporter>) -> Repository {
        Repository::new(
            &self.server.url("/debian/"),
            Keyring::from_file(&self.keyring).unwrap(),
            reporter,
        )
        .with_client_config(ClientConfig {
            attempts: 3,
            initial_backoff: Duration::from_millis(10),
            proxy_from_env: false,
            ..ClientConfig::default()
        })
        .with_cache(self.cache())
    }

    fn cache(&self) -> Cache {
        Cache::open(&self.cache_dir).unwrap()
    }

    fn items(&self) -> Vec<FetchItem> {
        self.debs.iter().map(|(i, _)| i.clone()).collect()
    }

    /// Nothing verified entered the cache (debs/ and indices/ empty, tmp/ clean).
    fn assert_cache_empty(&self) {
        for sub in ["debs", "indices", "tmp", "releases"] {
            let d = self.cache_dir.join(sub);
            let entries = tree(&d);
            assert!(entries.is_empty(), "{sub}/ holds {entries:?}");
        }
    }
}

fn release_err(e: ClientError) -> ReleaseError {
    match e {
        ClientError::Release { source, .. } => *source,
        other => panic!("expected a release error, got {other:?}"),
    }
}

#[test]
fn good_path_then_warm_cache() {
    let f = Fixture::new();
    let rec = Arc::new(RecordingReporter::new());
    let repo = f.repo(rec.clone());
    let release = repo.fetch_release("trixie", now()).unwrap();
    assert_eq!(release.release.codename.as_deref(), Some("trixie"));
    assert_eq!(release.inrelease_sha256, sha256_hex(&f.inrelease));
    assert_eq!(release.signed_by.len(), 40);
    let index = repo.fetch_packages(&release, "main", "amd64").unwrap();
    assert!(index.text.contains("Package: libfoo1"));
    assert!(!index.timings.cache_hit);
    let by_hash = format!(
        "/debian/dists/trixie/main/binary-amd64/by-hash/SHA256/{}",
        sha256_hex(&f.packages_xz)
    );
    assert_eq!(f.server.hits(&by_hash), 1, "fetched through by-hash");
    assert_eq!(
        f.server
            .hits(&format!("/debian/dists/trixie/{PACKAGES_XZ}")),
        0
    );

    let cache = f.cache();
    let paths = fetch_all(&repo, &cache, &f.items(), FetchOptions::default()).unwrap();
    assert_eq!(paths.len(), 3);
    for (p, (item, bytes)) in paths.iter().zip(&f.debs) {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{}", item.name);
    }
    let events = rec.events();
    let starts = events
        .iter()
        .filter(|e| matches!(e, ResolverEvent::DownloadStart { .. }))
        .count();
    assert_eq!(starts, 4, "Packages.xz + 3 debs: {events:?}");

    // Unpack everything; the postinst text is in the report, setuid only in the manifest.
    let stage_dir = tempfile::tempdir().unwrap();
    let mut staging = UnpackDir::new(&stage_dir.path().join("root")).unwrap();
    for p in &paths {
        staging.unpack_deb(p, &UnpackOptions::default()).unwrap();
    }
    let report = &staging.packages()[0];
    assert_eq!(
        (report.name.as_str(), report.version.as_str()),
        ("hello", "1.0-1")
    );
    assert!(report.scripts["postinst"].contains("update-alternatives --install"));
    let entry = &staging.manifest()["usr/bin/hello"];
    assert_eq!(entry.mode, 0o4755);
    assert_eq!(entry.package, "hello");
    use std::os::unix::fs::PermissionsExt;
    let on_disk = std::fs::metadata(staging.root().join("usr/bin/hello")).unwrap();
    assert_eq!(on_disk.permissions().mode() & 0o7777, 0o755);

    // Warm run: no index or deb download; the cache holds the verified Packages.xz, not
    // the text.
    let indices: Vec<String> = std::fs::read_dir(f.cache_dir.join("indices"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(indices, [sha256_hex(&f.packages_xz)]);
    let rec2 = Arc::new(RecordingReporter::new());
    let repo2 = f.repo(rec2.clone());
    let release2 = repo2.fetch_release("trixie", now()).unwrap();
    let index2 = repo2.fetch_packages(&release2, "main", "amd64").unwrap();
    assert!(index2.timings.cache_hit);
    assert_eq!(index2.text, index.text);
    fetch_all(&repo2, &cache, &f.items(), FetchOptions::default()).unwrap();
    assert_eq!(f.server.hits(&by_hash), 1);
    for (item, _) in &f.debs {
        assert_eq!(f.server.hits(&format!("/debian/{}", item.filename)), 1);
    }
    assert!(
        !rec2
            .events()
            .iter()
            .any(|e| matches!(e, ResolverEvent::DownloadStart { .. }))
    );

    // Offline run uses the cached InRelease.
    let repo3 = f.repo(Arc::new(RecordingReporter::new())).offline(true);
    f.server.remove("/debian/dists/trixie/InRelease");
    let release3 = repo3.fetch_release("trixie", now()).unwrap();
    assert_eq!(release3.inrelease_sha256, release.inrelease_sha256);
    // ... and the text from the cached Packages.xz, decompressed and checked again.
    f.server
        .remove(&format!("/debian/dists/trixie/{PACKAGES_XZ}"));
    f.server.remove(&by_hash);
    let index3 = repo3.fetch_packages(&release3, "main", "amd64").unwrap();
    assert!(index3.timings.cache_hit);
    assert_eq!(index3.text, index.text);
}

#[test]
fn bad_signature_altered_text() {
    let f = Fixture::new();
    let signed = String::from_utf8(f.key.clearsign(&f.release_text)).unwrap();
    let altered = signed.replace("Label: Debian", "Label: Evil");
    assert_ne!(signed, altered);
    f.server
        .put("/debian/dists/trixie/InRelease", altered.into_bytes());
    let err = f
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", now())
        .unwrap_err();
    assert!(
        matches!(release_err(err), ReleaseError::BadSignature { .. }),
        "bad signature"
    );
    f.assert_cache_empty();
}

#[test]
fn unsigned_release() {
    let f = Fixture::new();
    f.server.put(
        "/debian/dists/trixie/InRelease",
        f.release_text.clone().into_bytes(),
    );
    let err = f
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", now())
        .unwrap_err();
    assert!(matches!(release_err(err), ReleaseError::Unsigned));
    f.assert_cache_empty();
}

#[test]
fn expired_valid_until() {
    let f = Fixture::new();
    let text = release_text(b"", b"", unix_now() - 3600);
    f.server
        .put("/debian/dists/trixie/InRelease", f.key.clearsign(&text));
    let err = f
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", now())
        .unwrap_err();
    assert!(matches!(release_err(err), ReleaseError::Expired { .. }));
    f.assert_cache_empty();
}

#[test]
fn suite_mismatch() {
    let f = Fixture::new();
    f.server.put(
        "/debian/dists/bookworm/InRelease",
        f.key.clearsign(&f.release_text),
    );
    let err = f
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("bookworm", now())
        .unwrap_err();
    assert!(matches!(
        release_err(err),
        ReleaseError::SuiteMismatch { .. }
    ));
}

#[test]
fn key_not_in_keyring() {
    let f = Fixture::new();
    let stranger = TestKey::generate("stranger");
    f.server.put(
        "/debian/dists/trixie/InRelease",
        stranger.clearsign(&f.release_text),
    );
    let err = f
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", now())
        .unwrap_err();
    match release_err(err) {
        ReleaseError::NoTrustedSignature { keys, .. } => assert!(!keys.is_empty()),
        other => panic!("{other:?}"),
    }
    f.assert_cache_empty();
}

#[test]
fn altered_packages_xz() {
    let f = Fixture::new();
    let mut bad = f.packages_xz.clone();
    let last = bad.len() - 20;
    bad[last] ^= 0x55;
    f.server.put(
        &format!(
            "/debian/dists/trixie/main/binary-amd64/by-hash/SHA256/{}",
            sha256_hex(&f.packages_xz)
        ),
        bad,
    );
    let repo = f.repo(Arc::new(RecordingReporter::new()));
    let release = repo.fetch_release("trixie", now()).unwrap();
    let err = repo.fetch_packages(&release, "main", "amd64").unwrap_err();
    assert!(matches!(err, ClientError::HashMismatch { .. }), "{err:?}");
    assert!(tree(&f.cache_dir.join("indices")).is_empty());
    assert!(tree(&f.cache_dir.join("tmp")).is_empty());
}

#[test]
fn by_hash_404_falls_back_to_plain_path() {
    let f = Fixture::new();
    f.server.remove(&format!(
        "/debian/dists/trixie/main/binary-amd64/by-hash/SHA256/{}",
        sha256_hex(&f.packages_xz)
    ));
    let rec = Arc::new(RecordingReporter::new());
    let repo = f.repo(rec.clone());
    let release = repo.fetch_release("trixie", now()).unwrap();
    repo.fetch_packages(&release, "main", "amd64").unwrap();
    assert!(rec.events().iter().any(|e| matches!(
        e,
        ResolverEvent::Warning(ResolverWarning::ByHashFallback { .. })
    )));
}

#[test]
fn altered_deb_is_rejected() {
    let f = Fixture::new();
    let (item, bytes) = &f.debs[1];
    let mut bad = bytes.clone();
    let n = bad.len() - 30;
    bad[n] ^= 1;
    f.server.put(&format!("/debian/{}", item.filename), bad);
    let repo = f.repo(Arc::new(RecordingReporter::new()));
    let err = fetch_all(
        &repo,
        &f.cache(),
        std::slice::from_ref(item),
        FetchOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Cache {
                source: package_resolver::cache::CacheError::HashMismatch { .. },
                ..
            }
        ),
        "{err:?}"
    );
    f.assert_cache_empty();
}

#[test]
fn missing_deb_is_not_found() {
    let f = Fixture::new();
    let (item, _) = &f.debs[0];
    f.server.remove(&format!("/debian/{}", item.filename));
    let repo = f.repo(Arc::new(RecordingReporter::new()));
    let err = fetch_all(
        &repo,
        &f.cache(),
        std::slice::from_ref(item),
        FetchOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Download {
                source: ClientError::NotFound { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        f.server.hits(&format!("/debian/{}", item.filename)),
        1,
        "404 is not retried"
    );
    f.assert_cache_empty();
}

#[test]
fn retries_after_503() {
    let f = Fixture::new();
    let (item, _) = &f.debs[2];
    f.server.fail_once(&format!("/debian/{}", item.filename));
    let rec = Arc::new(RecordingReporter::new());
    let repo = f.repo(rec.clone());
    let paths = fetch_all(
        &repo,
        &f.cache(),
        std::slice::from_ref(item),
        FetchOptions::default(),
    )
    .unwrap();
    assert!(paths[0].exists());
    assert_eq!(f.server.hits(&format!("/debian/{}", item.filename)), 2);
    assert!(
        rec.events()
            .iter()
            .any(|e| matches!(e, ResolverEvent::Retry { attempt: 2, .. }))
    );
}

#[test]
fn offline_lists_missing_packages() {
    let f = Fixture::new();
    let repo = f.repo(Arc::new(RecordingReporter::new()));
    let cache = f.cache();
    fetch_all(&repo, &cache, &f.items()[1..2], FetchOptions::default()).unwrap();
    let err = fetch_all(
        &repo,
        &cache,
        &f.items(),
        FetchOptions {
            offline: true,
            ..FetchOptions::default()
        },
    )
    .unwrap_err();
    match err {
        FetchError::Missing { names } => assert_eq!(names, ["hello", "tool"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_concurrent_fetchers_download_once() {
    let f = Fixture::new();
    let items = f.items();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let repo = f.repo(Arc::new(RecordingReporter::new()));
                let cache = Cache::open(&f.cache_dir).unwrap();
                fetch_all(&repo, &cache, &items, FetchOptions::default()).unwrap();
            });
        }
    });
    for item in &items {
        assert_eq!(
            f.server.hits(&format!("/debian/{}", item.filename)),
            1,
            "{} downloaded once",
            item.name
        );
    }
    assert!(tree(&f.cache_dir.join("tmp")).is_empty());
}

// Issue #8: the trust holes (rollback, future dates, expired and revoked keys, slow
// servers). Each of these was accepted before.

fn redated(f: &Fixture, date: i64) -> String {
    let date_line = f
        .release_text
        .lines()
        .find(|l| l.starts_with("Date: "))
        .unwrap()
        .to_owned();
    f.release_text
        .replace(&date_line, &format!("Date: {}", format_rfc2822(date)))
}

#[test]
fn issue_8_a_release_dated_in_the_future_is_refused() {
    let f = Fixture::new();
    let text = redated(&f, unix_now() + 9 * 365 * 86_400);
    f.server
        .put("/debian/dists/trixie/InRelease", f.key.clearsign(&text));
    let err = f
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", now())
        .unwrap_err();
    assert!(
        matches!(release_err(err), ReleaseError::FutureDate { .. }),
        "a Date years ahead must not become SOURCE_DATE_EPOCH"
    );
    // A few minutes of clock skew are fine.
    let text = redated(&f, unix_now() + 300);
    f.server
        .put("/debian/dists/trixie/InRelease", f.key.clearsign(&text));
    f.repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", now())
        .expect("small skew accepted");
}

#[test]
fn issue_8_an_older_release_after_a_newer_one_is_a_rollback() {
    let f = Fixture::new();
    let newer = f
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", now())
        .expect("current release");
    // The mirror now serves a release signed by the same key, 13 months older.
    let old = redated(&f, unix_now() - 400 * 86_400);
    f.server
        .put("/debian/dists/trixie/InRelease", f.key.clearsign(&old));
    let got = f
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", now())
        .expect("the cached newer release wins");
    assert_eq!(got.release.date, newer.release.date);
    assert_eq!(got.inrelease_sha256, newer.inrelease_sha256);
    // `--allow-downgrade` takes the older one.
    let downgraded = f
        .repo(Arc::new(RecordingReporter::new()))
        .allow_downgrade(true)
        .fetch_release("trixie", now())
        .expect("downgrade allowed");
    assert!(downgraded.release.date.unix_seconds < newer.release.date.unix_seconds);
    // When the cached newer release no longer verifies (it expired), the older one is
    // refused as a rollback rather than silently used.
    let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
    let fresh = Fixture::new();
    fresh
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", now())
        .unwrap();
    let old = release_text(b"", b"", unix_now() + 10 * 86_400).replace(
        &format!("Date: {}", format_rfc2822(unix_now() - 60)),
        &format!("Date: {}", format_rfc2822(unix_now() - 400 * 86_400)),
    );
    fresh
        .server
        .put("/debian/dists/trixie/InRelease", fresh.key.clearsign(&old));
    let err = fresh
        .repo(Arc::new(RecordingReporter::new()))
        .fetch_release("trixie", later)
        .unwrap_err();
    assert!(
        matches!(release_err(err), ReleaseError::Rollback { .. }),
        "older release after a newer one"
    );
}

fn keyring_of(f: &Fixture, key: &TestKey) -> Repository {
    std::fs::write(&f.keyring, key.public_bytes()).unwrap();
    f.repo(Arc::new(RecordingReporter::new()))
}

#[test]
fn issue_8_a_signature_by_a_key_that_has_since_expired_is_refused() {
    let f = Fixture::new();
    let day = 86_400;
    let three_years_ago = SystemTime::now() - Duration::from_secs(3 * 365 * day);
    let key = TestKey::generate_at(
        "expired",
        three_years_ago,
        Some(Duration::from_secs(365 * day)),
    );
    // Signed while the key was valid (2.5 years ago); it expired 23 months ago.
    let signed_at = three_years_ago + Duration::from_secs(180 * day);
    f.server.put(
        "/debian/dists/trixie/InRelease",
        key.clearsign_at(&f.release_text, signed_at),
    );
    let err = keyring_of(&f, &key)
        .fetch_release("trixie", now())
        .unwrap_err();
    assert!(
        matches!(release_err(err), ReleaseError::NoTrustedSignature { .. }),
        "gpgv refuses a signature by an expired key (EXPKEYSIG)"
    );
}

#[test]
fn issue_8_a_signature_by_a_key_revoked_since_is_refused() {
    let f = Fixture::new();
    let mut key = TestKey::generate("retired");
    let signed_at = SystemTime::now() - Duration::from_secs(600);
    let inrelease = key.clearsign_at(&f.release_text, signed_at);
    key.retire();
    f.server.put("/debian/dists/trixie/InRelease", inrelease);
    let err = keyring_of(&f, &key)
        .fetch_release("trixie", now())
        .unwrap_err();
    assert!(
        matches!(release_err(err), ReleaseError::NoTrustedSignature { .. }),
        "gpgv refuses a signature by a revoked key (REVKEYSIG)"
    );
}

#[test]
fn issue_8_a_slow_drip_server_hits_the_low_speed_limit() {
    let f = Fixture::new();
    let (item, _) = &f.debs[0];
    f.server.drip(
        &format!("/debian/{}", item.filename),
        Duration::from_millis(300),
    );
    let repo = Repository::new(
        &f.server.url("/debian/"),
        Keyring::from_file(&f.keyring).unwrap(),
        Arc::new(RecordingReporter::new()),
    )
    .with_client_config(ClientConfig {
        attempts: 2,
        initial_backoff: Duration::from_millis(10),
        proxy_from_env: false,
        min_bytes_per_second: 100,
        low_speed_window: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(20),
        ..ClientConfig::default()
    });
    let start = std::time::Instant::now();
    let err = fetch_all(
        &repo,
        &f.cache(),
        std::slice::from_ref(item),
        FetchOptions::default(),
    )
    .unwrap_err();
    let text = format!("{err:?}");
    assert!(text.contains("too slow"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert!(
        tree(&f.cache_dir.join("tmp")).is_empty(),
        "no partial file left"
    );
}

#[test]
fn issue_8_every_request_has_an_overall_deadline() {
    let f = Fixture::new();
    let (item, _) = &f.debs[0];
    // 1 byte every 0.2 s is above this low-speed limit, so only the deadline ends it.
    f.server.drip(
        &format!("/debian/{}", item.filename),
        Duration::from_millis(200),
    );
    let repo = Repository::new(
        &f.server.url("/debian/"),
        Keyring::from_file(&f.keyring).unwrap(),
        Arc::new(RecordingReporter::new()),
    )
    .with_client_config(ClientConfig {
        attempts: 4,
        initial_backoff: Duration::from_millis(10),
        proxy_from_env: false,
        min_bytes_per_second: 1,
        low_speed_window: Duration::from_secs(1),
        deadline: Duration::from_secs(3),
        ..ClientConfig::default()
    });
    let start = std::time::Instant::now();
    let err = fetch_all(
        &repo,
        &f.cache(),
        std::slice::from_ref(item),
        FetchOptions::default(),
    )
    .unwrap_err();
    let text = err_chain(&err);
    assert!(text.contains("deadline"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

fn err_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Issue #8: a download into a cache on a full disk names the full disk.
#[test]
fn issue_8_downloading_into_a_full_cache_is_no_space() {
    let f = Fixture::new();
    let Some(full) = crate::support::SmallFs::mount(1024 * 1024) else {
        return;
    };
    let blob = crate::support::noise(3 * 1024 * 1024);
    let item = FetchItem {
        name: "big".to_owned(),
        filename: "pool/main/b/big/big_1.0_amd64.deb".to_owned(),
        size: blob.len() as u64,
        sha256: sha256_hex(&blob),
    };
    f.server.put(&format!("/debian/{}", item.filename), blob);
    let cache = Cache::open(&full.path().join("cache")).unwrap();
    let repo = Repository::new(
        &f.server.url("/debian/"),
        Keyring::from_file(&f.keyring).unwrap(),
        Arc::new(RecordingReporter::new()),
    )
    .with_client_config(ClientConfig {
        attempts: 1,
        proxy_from_env: false,
        ..ClientConfig::default()
    })
    .with_cache(Cache::open(&full.path().join("cache")).unwrap());
    let err = fetch_all(
        &repo,
        &cache,
        std::slice::from_ref(&item),
        FetchOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Download {
                source: ClientError::NoSpace { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let text = err_chain(&err);
    assert!(
        text.contains("no space left on the device holding"),
        "{text}"
    );
    assert!(
        tree(&full.path().join("cache/tmp")).is_empty(),
        "no partial file left"
    );
}
