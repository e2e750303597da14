//! A fleet of builders sharing one apt-cacher-ng (docs/fleet.md): two builders with
//! separate jeos caches build through a caching proxy started here on 127.0.0.1, with its
//! own configuration and cache directory. The first builder's downloads fill the proxy's
//! cache; the second builder's are served from it without a single package fetched
//! upstream again.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestDir;
use crate::resolve::reachable_mirror;

const APT_CACHER_NG: &str = "/usr/sbin/apt-cacher-ng";

/// An apt-cacher-ng process of this test (killed, by its own pid, on drop).
struct AptCacherNg {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl AptCacherNg {
    fn start(dir: &Path) -> Self {
        // apt-cacher-ng 3.7 cannot bind ports above 32767 ("Error resolving address for
        // binding"), and the kernel's ephemeral ports are all above, so look for one below.
        let start = 20_000 + u16::try_from(std::process::id() % 10_000).expect("small");
        let port = (start..32_000)
            .chain(20_000..start)
            .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port below 32768");
        for sub in ["conf", "cache", "log", "run"] {
            std::fs::create_dir_all(dir.join(sub)).expect("apt-cacher-ng directories");
        }
        let conf = format!(
            "CacheDir: {d}/cache\nLogDir: {d}/log\nSupportDir: /usr/lib/apt-cacher-ng\n\
             SocketPath: {d}/run/socket\nPidFile: {d}/run/pid\nPort: {port}\n\
             BindAddress: 127.0.0.1\nForeGround: 1\nVerboseLog: 1\nExThreshold: 4\n",
            d = dir.display()
        );
        std::fs::write(dir.join("conf/acng.conf"), conf).expect("acng.conf");
        let child = Command::new(APT_CACHER_NG)
            .arg("-c")
            .arg(dir.join("conf"))
            .env("LC_ALL", "C")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start apt-cacher-ng");
        // Constructed first, so that a failure below still kills the process (Drop).
        let cacher = Self {
            child,
            port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "apt-cacher-ng did not listen on port {port}: {}",
                std::fs::read_to_string(dir.join("log/apt-cacher.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cacher
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Transfer log lines: `time|I|bytes|client|path` (fetched upstream) or `…|O|…`
    /// (delivered to a client).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/apt-cacher.log")).unwrap_or_default()
    }

    fn count(&self, direction: &str, path_part: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                let fields: Vec<&str> = l.split('|').collect();
                fields.get(1) == Some(&direction) && l.contains(path_part)
            })
            .count()
    }
}

impl Drop for AptCacherNg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RECIPE: &str = r#"[appliance]
name = "fleet"
version = "1.0"

[source]
suite = "trixie"

[packages]
install = ["busybox"]

[[service]]
name = "httpd"
exec = ["/bin/busybox", "httpd", "-f", "-p", "80"]
ready = { tcp = 80 }

[disk]
formats = ["raw"]
"#;

fn build_through(proxy: &str, cache: &Path, dir: &TestDir, name: &str) -> std::process::Output {
    let recipe = dir.create(&format!("{name}/fleet.toml"), RECIPE);
    Command::new(env!("CARGO_BIN_EXE_jeos"))
        .env("NO_COLOR", "1")
        .env("http_proxy", proxy)
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .arg("--cache-dir")
        .arg(cache)
        .arg("build")
        .arg(&recipe)
        .arg("-o")
        .arg(dir.path().join(name).join("dist"))
        .output()
        .expect("run jeos build")
}

#[test]
fn fleet_builds_through_a_shared_apt_cacher_ng() {
    if !Path::new(APT_CACHER_NG).is_file() {
        crate::docs::skip_or_fail("apt-cacher-ng is not installed (Debian package apt-cacher-ng)");
        return;
    }
    if reachable_mirror("trixie").is_none() {
        crate::docs::skip_or_fail("the Debian mirror is unreachable");
        return;
    }
    let dir = TestDir::new();
    let cacher = AptCacherNg::start(&dir.path().join("acng"));
    let started = Instant::now();
    let first = build_through(&cacher.url(), &dir.path().join("cache-a"), &dir, "a");
    assert!(
        first.status.success(),
        "builder A through apt-cacher-ng failed:\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first_time = started.elapsed();
    let fetched = cacher.count("I", "/pool/");
    assert!(
        fetched > 0,
        "builder A fetched no package through the proxy:\n{}",
        cacher.log()
    );
    assert!(
        cacher.count("O", "InRelease") > 0,
        "no InRelease went through the proxy"
    );

    let started = Instant::now();
    let second = build_through(&cacher.url(), &dir.path().join("cache-b"), &dir, "b");
    assert!(
        second.status.success(),
        "builder B through apt-cacher-ng failed:\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        cacher.count("I", "/pool/"),
        fetched,
        "builder B made apt-cacher-ng fetch packages upstream again"
    );
    let delivered = cacher.count("O", "/pool/");
    assert!(
        delivered >= 2 * fetched,
        "B's packages were not served by the proxy"
    );
    let image = |name: &str| {
        std::fs::read(dir.path().join(name).join("dist/fleet-1.0/fleet-1.0.raw")).expect("image")
    };
    assert!(image("a") == image("b"), "the two builders' images differ");
    eprintln!(
        "fleet: builder A {:.1}s ({fetched} packages fetched upstream), builder B {:.1}s (all from the cache)",
        first_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
