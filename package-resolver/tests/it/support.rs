//! Fixtures generated in code: a tiny HTTP server, `.deb` and tar builders, a signing key.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sequoia_openpgp as openpgp;

use openpgp::cert::CertBuilder;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::Serialize;
use openpgp::serialize::stream::{Message, Signer};

/// Shared state of the test server.
#[derive(Default)]
pub struct ServerState {
    /// Path → body.
    pub files: HashMap<String, Vec<u8>>,
    /// Paths that answer 503 once, then normally.
    pub fail_once: HashSet<String>,
    /// Request count per path.
    pub hits: HashMap<String, usize>,
    /// Paths whose body is sent one byte at a time with this pause between bytes.
    pub drip: HashMap<String, Duration>,
}

/// A plain HTTP/1.1 server on 127.0.0.1 (one thread per connection, `Connection: close`).
pub struct TestServer {
    pub base: String,
    pub state: Arc<Mutex<ServerState>>,
}

impl TestServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ServerState::default()));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Self { base, state }
    }

    pub fn put(&self, path: &str, body: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_owned(), body);
    }

    pub fn remove(&self, path: &str) {
        self.state.lock().unwrap().files.remove(path);
    }

    /// Serve `path` one byte per `pause` (a slow-drip server).
    pub fn drip(&self, path: &str, pause: Duration) {
        self.state
            .lock()
            .unwrap()
            .drip
            .insert(path.to_owned(), pause);
    }

    pub fn fail_once(&self, path: &str) {
        self.state.lock().unwrap().fail_once.insert(path.to_owned());
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn serve(conn: TcpStream, state: &Mutex<ServerState>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let (status, body, drip) = {
        let mut st = state.lock().unwrap();
        let drip = st.drip.get(&path).copied();
        *st.hits.entry(path.clone()).or_default() += 1;
        if st.fail_once.remove(&path) {
            (503, b"busy".to_vec(), None)
        } else {
            match st.files.get(&path) {
                Some(b) => (200, b.clone(), drip),
                None => (404, b"not found".to_vec(), None),
            }
        }
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if let Some(pause) = drip {
        for byte in &body {
            if conn
                .write_all(&[*byte])
                .and_then(|()| conn.flush())
                .is_err()
            {
                return;
            }
            std::thread::sleep(pause);
        }
        return;
    }
    let _ = conn.write_all(&body);
    let _ = conn.flush();
}

/// A signing key generated for the test.
pub struct TestKey {
    pub cert: openpgp::Cert,
}

impl TestKey {
    pub fn generate(name: &str) -> Self {
        let (cert, _) = CertBuilder::new()
            .add_userid(format!("{name} <{name}@example.invalid>"))
            .set_creation_time(SystemTime::now() - Duration::from_secs(3600))
            .add_signing_subkey()
            .generate()
            .unwrap();
        Self { cert }
    }

    /// A key created at `created` that expires `valid_for` later.
    pub fn generate_at(name: &str, created: SystemTime, valid_for: Option<Duration>) -> Self {
        let (cert, _) = CertBuilder::new()
            .add_userid(format!("{name} <{name}@example.invalid>"))
            .set_creation_time(created)
            .set_validity_period(valid_for)
            .add_signing_subkey()
            .generate()
            .unwrap();
        Self { cert }
    }

    /// Adds a soft revocation ("key retired") made now: the key is valid before, not after.
    pub fn retire(&mut self) {
        use openpgp::types::ReasonForRevocation;
        let mut signer = self
            .cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let revocation = openpgp::cert::CertRevocationBuilder::new()
            .set_reason_for_revocation(ReasonForRevocation::KeyRetired, b"retired")
            .unwrap()
            .build(&mut signer, &self.cert, None)
            .unwrap();
        self.cert = self.cert.clone().insert_packets(revocation).unwrap().0;
    }

    /// Public certificate, binary (as in `/usr/share/keyrings/*.gpg`).
    pub fn public_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.cert.serialize(&mut out).unwrap();
        out
    }

    /// Cleartext-sign `text` (RFC 4880 §7), as Debian's InRelease.
    pub fn clearsign(&self, text: &str) -> Vec<u8> {
        self.clearsign_at(text, SystemTime::now())
    }

    /// Cleartext-sign `text` with the signature dated `when` (the key must be valid then).
    pub fn clearsign_at(&self, text: &str, when: SystemTime) -> Vec<u8> {
        let policy = StandardPolicy::new();
        let keypair = self
            .cert
            .keys()
            .with_policy(&policy, Some(when))
            .supported()
            .alive()
            .revoked(false)
            .for_signing()
            .secret()
            .next()
            .unwrap()
            .key()
            .clone()
            .into_keypair()
            .unwrap();
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let mut signer = Signer::new(message, keypair)
            .unwrap()
            .creation_time(when)
            .cleartext()
            .build()
            .unwrap();
        signer.write_all(text.as_bytes()).unwrap();
        signer.finalize().unwrap();
        out
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    package_resolver::release::sha256_hex(b)
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An ar archive.
pub fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        out.extend_from_slice(
            format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                "100644",
                data.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// One raw tar entry. Paths and link names are written verbatim (no validation), so
/// malicious archives can be built.
pub struct RawEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Option<String>,
    pub mode: u32,
    /// Size written in the header (defaults to `data.len()`).
    pub declared_size: Option<u64>,
}

impl RawEntry {
    pub fn dir(path: &str) -> Self {
        Self::new(path, tar::EntryType::Directory, b"", None, 0o755)
    }
    pub fn file(path: &str, data: &[u8], mode: u32) -> Self {
        Self::new(path, tar::EntryType::Regular, data, None, mode)
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, tar::EntryType::Symlink, b"", Some(target), 0o777)
    }
    pub fn hardlink(path: &str, target: &str) -> Self {
        Self::new(path, tar::EntryType::Link, b"", Some(target), 0o644)
    }
    pub fn new(
        path: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
    ) -> Self {
        Self {
            path: path.to_owned(),
            kind,
            data: data.to_vec(),
            link: link.map(str::to_owned),
            mode,
            declared_size: None,
        }
    }
}

/// A tar archive of raw entries (ustar headers, names < 100 bytes).
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
            if let Some(l) = &e.link {
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root").unwrap();
        h.set_groupname("root").unwrap();
        h.set_mtime(1_700_000_000);
        h.set_size(e.declared_size.unwrap_or(e.data.len() as u64));
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

pub fn control_tar(name: &str, version: &str, scripts: &[(&str, &str)]) -> Vec<u8> {
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: Test <t@example.invalid>\nDescription: test package\n"
    );
    let mut entries = vec![
        RawEntry::dir("./"),
        RawEntry::file("./control", control.as_bytes(), 0o644),
    ];
    for (n, body) in scripts {
        entries.push(RawEntry::file(&format!("./{n}"), body.as_bytes(), 0o755));
    }
    raw_tar(&entries)
}

/// A `.deb` with `control.tar.gz` and `data.tar.xz`.
pub fn deb(name: &str, version: &str, scripts: &[(&str, &str)], data: &[RawEntry]) -> Vec<u8> {
    let control = gz(&control_tar(name, version, scripts));
    let data = xz(&raw_tar(data));
    ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", &control),
        ("data.tar.xz", &data),
    ])
}

/// A `.deb` with uncompressed `control.tar` and the given raw `data.tar` bytes.
pub fn deb_raw_data(name: &str, data_tar: &[u8]) -> Vec<u8> {
    let control = control_tar(name, "1.0", &[]);
    ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control),
        ("data.tar", data_tar),
    ])
}

/// Everything under `dir`, as sorted relative paths.
pub fn tree(dir: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A tmpfs of `bytes` on a fresh directory (needs root), unmounted on drop: a full disk
/// for the "no space left" drills. `None` (after saying SKIPPED) when it cannot be
/// mounted; under `CI=true` that fails the test instead.
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    pub fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "jeos-full"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot mount a small tmpfs (needs root)"
            );
            eprintln!("SKIPPED: cannot mount a small tmpfs (needs root)");
            return None;
        }
        Some(Self { dir })
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// `len` bytes that no file system stores sparsely or compresses.
pub fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}
