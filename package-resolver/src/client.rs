//! HTTP access to a Debian mirror.
//!
//! [`HttpClient`] is a blocking `ureq` agent with timeouts, size caps and retries: connect
//! errors, resets, timeouts, truncated bodies and 5xx answers are retried with exponential
//! backoff; 404 is final ([`ClientError::NotFound`]). Plain `http://` is normal for Debian
//! mirrors: integrity comes from the InRelease signature and the SHA-256 chain, never from the
//! transport. Proxies are chosen per URL the way curl and apt do it (see [`proxy_for`]):
//! `http_proxy` for `http://` URLs, `https_proxy` for `https://`, `all_proxy` for either
//! (lowercase first, then uppercase), and hosts matching `no_proxy` go direct. That is what
//! a fleet needs to share one apt-cacher-ng: `http_proxy=http://cacher:3142`.
//!
//! [`Repository`] is one mirror plus a keyring:
//! `fetch_release` (InRelease, verified) → `fetch_packages` (Packages.gz, else .xz, via `by-hash`, size
//! and SHA-256 checked against the Release *before* decompression, decompressed with a cap
//! at the listed uncompressed size, SHA-256 of the result checked, cached by that hash).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::cache::{Cache, CacheError, EntryKind, TempEntry};
use crate::index_cache;
use crate::packages::PackageIndex;

mod forward_proxy;
use crate::release::{self, Keyring, ReleaseError, VerifiedRelease};
use crate::reporter::{DownloadId, NoReporter, ResolverReporter, ResolverWarning};

/// Upper bound for a decompressed index when the Release lists no uncompressed size.
pub const MAX_INDEX_BYTES: u64 = 1 << 30;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered 404.
    #[error("`{url}` not found (HTTP 404)")]
    NotFound {
        /// URL.
        url: String,
    },
    /// A non-transient HTTP status (other 4xx, unexpected 3xx).
    #[error("`{url}`: HTTP status {status}")]
    Status {
        /// URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// The request did not complete within the overall deadline.
    #[error(
        "`{url}`: no complete answer within {seconds} s (the overall deadline of one download)"
    )]
    Deadline {
        /// URL.
        url: String,
        /// The deadline in seconds.
        seconds: u64,
    },
    /// The proxy the environment names is not a usable proxy URL.
    #[error("invalid proxy `{proxy}` (from `http_proxy`, `https_proxy` or `all_proxy`): {reason}")]
    Proxy {
        /// The proxy as written.
        proxy: String,
        /// Why ureq rejected it.
        reason: String,
    },
    /// Still failing after all retries.
    #[error("`{url}`: giving up after {attempts} attempts: {last_error}")]
    Transient {
        /// URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Last error, as text.
        last_error: String,
    },
    /// The body is larger than allowed.
    #[error("`{url}` is larger than the allowed {limit} bytes")]
    TooLarge {
        /// URL.
        url: String,
        /// Cap in bytes.
        limit: u64,
    },
    /// The downloaded size is not the one the signed index lists.
    #[error("`{url}`: size {actual} does not match the expected {expected} bytes")]
    SizeMismatch {
        /// URL.
        url: String,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// The downloaded SHA-256 is not the one the signed index lists.
    #[error("`{url}`: SHA-256 {actual} does not match the expected {expected}")]
    HashMismatch {
        /// URL.
        url: String,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// The InRelease file did not verify.
    #[error("InRelease of `{suite}` from `{url}` rejected")]
    Release {
        /// Suite.
        suite: String,
        /// URL (or cache path in offline mode).
        url: String,
        /// Cause.
        #[source]
        source: Box<ReleaseError>,
    },
    /// The Release file does not list the index.
    #[error("the `{suite}` Release does not list `{path}`")]
    IndexNotListed {
        /// Suite.
        suite: String,
        /// Path relative to `dists/<suite>/`.
        path: String,
    },
    /// Decompression failed.
    #[error("cannot decompress `{url}`")]
    Decompress {
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Decompressed index is not UTF-8.
    #[error("index `{url}` is not valid UTF-8")]
    NotUtf8 {
        /// URL.
        url: String,
    },
    /// Offline mode and the item is not cached.
    #[error("offline: `{what}` is not in the cache")]
    NotCached {
        /// What was needed.
        what: String,
    },
    /// Local file error while downloading.
    #[error("IO error writing `{path}`")]
    Io {
        /// Path.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Storing downloaded bytes failed (disk full, ...).
    #[error("cannot store the download of `{url}`")]
    Write {
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Storing downloaded bytes failed because the file system holding the cache is full.
    #[error("no space left on the device holding `{}` (downloading `{url}`)", .path.display())]
    NoSpace {
        /// URL.
        url: String,
        /// The cache's temporary file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Cache error.
    #[error("cache error")]
    Cache(#[source] CacheError),
    /// Parsed-index cache error.
    #[error("parsed-index cache error")]
    IndexCache(#[source] crate::index_cache::IndexCacheError),
    /// The index cannot be held in memory.
    #[error("cannot index `{path}`")]
    Index {
        /// Path relative to `dists/<suite>/`.
        path: String,
        /// Cause.
        #[source]
        source: crate::packages::PackagesError,
    },
}

impl From<CacheError> for ClientError {
    fn from(e: CacheError) -> Self {
        Self::Cache(e)
    }
}

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for the response head and for each read of the body (a stalled transfer
    /// fails after this and is retried; a large but moving download is never cut).
    pub read_timeout: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Use proxies from the environment.
    pub proxy_from_env: bool,
    /// Low-speed limit: an attempt that receives fewer than this many bytes per second,
    /// averaged over [`Self::low_speed_window`], is abandoned (and retried).
    pub min_bytes_per_second: u64,
    /// The window of the low-speed limit.
    pub low_speed_window: Duration,
    /// Overall deadline of one request, all attempts and backoffs included.
    pub deadline: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(30),
            attempts: 4,
            initial_backoff: Duration::from_millis(500),
            proxy_from_env: true,
            min_bytes_per_second: 1024,
            low_speed_window: Duration::from_secs(30),
            deadline: Duration::from_secs(15 * 60),
        }
    }
}

/// Result of a streamed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes received.
    pub size: u64,
}

enum AttemptError {
    /// Do not retry.
    Final(ClientError),
    /// Retry (text of the cause).
    Transient(String),
}

/// The proxy for `url` from the environment (`env` looks a variable up), or `None` for a
/// direct connection: `http_proxy`/`HTTP_PROXY` for `http://`, `https_proxy`/`HTTPS_PROXY`
/// for `https://`, else `all_proxy`/`ALL_PROXY`; `no_proxy`/`NO_PROXY` (comma-separated host
/// names or domain suffixes, `*` for all) wins over all of them. Empty values are unset.
pub fn proxy_for(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let lookup = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
    };
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    }
    .to_ascii_lowercase();
    if let Some(no_proxy) = lookup(&["no_proxy", "NO_PROXY"])
        && no_proxy_matches(&no_proxy, &host)
    {
        return None;
    }
    let specific: &[&str] = match scheme.to_ascii_lowercase().as_str() {
        "http" => &["http_proxy", "HTTP_PROXY"],
        "https" => &["https_proxy", "HTTPS_PROXY"],
        _ => return None,
    };
    lookup(specific).or_else(|| lookup(&["all_proxy", "ALL_PROXY"]))
}

fn no_proxy_matches(list: &str, host: &str) -> bool {
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.strip_prefix("*.").unwrap_or(entry);
        let entry = entry.strip_prefix('.').unwrap_or(entry);
        // `host:port` entries: compare the host part (IPv6 literals keep their colons).
        let entry = match entry.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
            _ => entry,
        }
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
        !entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}")))
    })
}

/// Blocking HTTP client with retries.
pub struct HttpClient {
    /// Direct connections.
    agent: ureq::Agent,
    /// One agent per proxy in use (by proxy URL), built when first needed.
    proxied: std::sync::Mutex<Vec<(String, ureq::Agent)>>,
    config: ClientConfig,
    reporter: Arc<dyn ResolverReporter>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with `config`, reporting retries to `reporter`.
    #[must_use]
    pub fn new(config: ClientConfig, reporter: Arc<dyn ResolverReporter>) -> Self {
        let agent = Self::agent_with(&config, None);
        Self {
            agent,
            proxied: std::sync::Mutex::new(Vec::new()),
            config,
            reporter,
        }
    }

    fn agent_config(
        config: &ClientConfig,
    ) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
        ureq::Agent::config_builder()
            .timeout_connect(Some(config.connect_timeout))
            .timeout_recv_response(Some(config.read_timeout))
            .timeout_recv_body(None)
            .timeout_per_read(Some(config.read_timeout))
            .timeout_per_call(None)
            .timeout_global(Some(config.deadline))
            .http_status_as_error(false)
            .user_agent(concat!("jeos-package-resolver/", env!("CARGO_PKG_VERSION")))
    }

    fn agent_with(config: &ClientConfig, proxy: Option<ureq::Proxy>) -> ureq::Agent {
        Self::agent_config(config).proxy(proxy).build().new_agent()
    }

    /// The agent for `url`: direct, or through the proxy the environment names for it.
    fn agent_for(&self, url: &str) -> Result<ureq::Agent, AttemptError> {
        if !self.config.proxy_from_env {
            return Ok(self.agent.clone());
        }
        let Some(proxy_url) = proxy_for(url, &|name| std::env::var(name).ok()) else {
            return Ok(self.agent.clone());
        };
        let mut proxied = self
            .proxied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let plain = url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        let key = format!("{}{proxy_url}", if plain { "forward " } else { "tunnel " });
        if let Some((_, agent)) = proxied.iter().find(|(p, _)| *p == key) {
            return Ok(agent.clone());
        }
        let invalid = |reason: String| {
            AttemptError::Final(ClientError::Proxy {
                proxy: proxy_url.clone(),
                reason,
            })
        };
        // `http://` through an HTTP proxy: forwarded in absolute form, so a caching proxy
        // (apt-cacher-ng) caches it; anything else is tunnelled by ureq.
        let http_proxy = !proxy_url.contains("://")
            || proxy_url
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        let agent = if plain && http_proxy {
            forward_proxy::agent(Self::agent_config(&self.config), &proxy_url).map_err(invalid)?
        } else {
            let proxy = ureq::Proxy::new(&proxy_url).map_err(|e| invalid(e.to_string()))?;
            Self::agent_with(&self.config, Some(proxy))
        };
        proxied.push((key, agent.clone()));
        Ok(agent)
    }

    /// GET `url` into memory, at most `max_bytes`.
    pub fn get_bytes(&self, url: &str, max_bytes: u64) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.with_retries(url, &mut |client| {
            out.clear();
            client.attempt(url, max_bytes, None, &mut |chunk| {
                out.extend_from_slice(chunk);
                Ok(())
            })
        })?;
        Ok(out)
    }

    /// GET `url` into `temp` (hashed while written), at most `max_bytes`; progress goes to
    /// download `id`.
    pub fn download_to(
        &self,
        url: &str,
        temp: &mut TempEntry,
        max_bytes: u64,
        id: Option<DownloadId>,
    ) -> Result<Downloaded, ClientError> {
        self.with_retries(url, &mut |client| {
            temp.reset().map_err(|source| {
                AttemptError::Final(ClientError::Io {
                    path: temp.path().to_owned(),
                    source,
                })
            })?;
            client.attempt(url, max_bytes, id, &mut |chunk| temp.write_all(chunk))
        })
        .map_err(|error| match error {
            ClientError::Write { url, source } if crate::deb::is_no_space(&source) => {
                ClientError::NoSpace {
                    url,
                    path: temp.path().to_owned(),
                    source,
                }
            }
            other => other,
        })?;
        Ok(Downloaded { size: temp.size() })
    }

    fn with_retries(
        &self,
        url: &str,
        attempt: &mut dyn FnMut(&Self) -> Result<(), AttemptError>,
    ) -> Result<(), ClientError> {
        let attempts = self.config.attempts.max(1);
        let mut backoff = self.config.initial_backoff;
        let mut n = 1;
        let started = Instant::now();
        let deadline = || ClientError::Deadline {
            url: url.to_owned(),
            seconds: self.config.deadline.as_secs(),
        };
        loop {
            if started.elapsed() >= self.config.deadline {
                return Err(deadline());
            }
            match attempt(self) {
                Ok(()) => return Ok(()),
                Err(AttemptError::Final(e)) => return Err(e),
                Err(AttemptError::Transient(text)) => {
                    if n >= attempts {
                        return Err(ClientError::Transient {
                            url: url.to_owned(),
                            attempts: n,
                            last_error: text,
                        });
                    }
                    n += 1;
                    self.reporter.on_retry(url, n, &text);
                    if started.elapsed() + backoff >= self.config.deadline {
                        return Err(deadline());
                    }
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }

    fn attempt(
        &self,
        url: &str,
        max_bytes: u64,
        id: Option<DownloadId>,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), AttemptError> {
        let response = match self.agent_for(url)?.get(url).call() {
            Ok(r) => r,
            Err(e) => return Err(classify(url, &e)),
        };
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 | 410 => {
                return Err(AttemptError::Final(ClientError::NotFound {
                    url: url.to_owned(),
                }));
            }
            408 | 429 | 500..=599 => return Err(AttemptError::Transient(format!("HTTP {status}"))),
            _ => {
                return Err(AttemptError::Final(ClientError::Status {
                    url: url.to_owned(),
                    status,
                }));
            }
        }
        let too_large = || {
            AttemptError::Final(ClientError::TooLarge {
                url: url.to_owned(),
                limit: max_bytes,
            })
        };
        if response
            .body()
            .content_length()
            .is_some_and(|len| len > max_bytes)
        {
            return Err(too_large());
        }
        let mut reader = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let mut speed = LowSpeed::new(&self.config);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(AttemptError::Transient(format!("reading body: {e}"))),
            };
            let n64 = u64::try_from(n).unwrap_or(u64::MAX);
            speed.record(n64, Instant::now())?;
            total = total.saturating_add(n64);
            if total > max_bytes {
                return Err(too_large());
            }
            sink(&buf[..n]).map_err(|source| {
                AttemptError::Final(ClientError::Write {
                    url: url.to_owned(),
                    source,
                })
            })?;
            if let Some(id) = id {
                self.reporter.on_download_progress(id, n64);
            }
        }
        Ok(())
    }
}

/// The low-speed limit of one attempt: bytes received in the current window.
struct LowSpeed {
    min_bytes_per_second: u64,
    window: Duration,
    window_start: Instant,
    window_bytes: u64,
}

impl LowSpeed {
    fn new(config: &ClientConfig) -> Self {
        Self {
            min_bytes_per_second: config.min_bytes_per_second,
            window: config.low_speed_window,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Counts `bytes` received at `now`; fails when a whole window was too slow.
    fn record(&mut self, bytes: u64, now: Instant) -> Result<(), AttemptError> {
        self.window_bytes = self.window_bytes.saturating_add(bytes);
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < self.window {
            return Ok(());
        }
        let needed = self
            .min_bytes_per_second
            .saturating_mul(self.window.as_secs().max(1));
        if self.window_bytes < needed {
            return Err(AttemptError::Transient(format!(
                "too slow: {} bytes in {} s, below the limit of {} bytes/s",
                self.window_bytes,
                elapsed.as_secs(),
                self.min_bytes_per_second
            )));
        }
        self.window_start = now;
        self.window_bytes = 0;
        Ok(())
    }
}

fn classify(url: &str, e: &ureq::Error) -> AttemptError {
    use ureq::Error as E;
    match e {
        E::Io(_)
        | E::Timeout(_)
        | E::ConnectionFailed
        | E::HostNotFound
        | E::Protocol(_)
        | E::ConnectProxyFailed(_) => AttemptError::Transient(e.to_string()),
        E::StatusCode(404) => AttemptError::Final(ClientError::NotFound {
            url: url.to_owned(),
        }),
        _ => AttemptError::Final(ClientError::Transient {
            url: url.to_owned(),
            attempts: 1,
            last_error: e.to_string(),
        }),
    }
}

/// Timings of the last [`Repository::fetch_packages`] (for the build report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexTimings {
    /// Download time.
    pub download: Duration,
    /// Decompression + hash of the result.
    pub decompress: Duration,
    /// Served from the cache.
    pub cache_hit: bool,
}

/// A fetched, verified `Packages` index.
#[derive(Debug, Clone)]
pub struct PackagesIndex {
    /// Path relative to `dists/<suite>/` (e.g. `main/binary-amd64/Packages`).
    pub path: String,
    /// SHA-256 of the decompressed text.
    pub sha256: String,
    /// The decompressed text.
    pub text: String,
    /// Timings.
    pub timings: IndexTimings,
}

/// One Debian mirror with its keyring.
pub struct Repository {
    mirror: String,
    keyring: Keyring,
    http: HttpClient,
    reporter: Arc<dyn ResolverReporter>,
    cache: Option<Cache>,
    offline: bool,
    allow_downgrade: bool,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("mirror", &self.mirror)
            .field("cache", &self.cache)
            .field("offline", &self.offline)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// A repository at `mirror_url` (e.g. `http://mirror.invalid/debian`), verified with
    /// `keyring`.
    #[must_use]
    pub fn new(mirror_url: &str, keyring: Keyring, reporter: Arc<dyn ResolverReporter>) -> Self {
        Self {
            mirror: mirror_url.trim_end_matches('/').to_owned(),
            keyring,
            http: HttpClient::new(ClientConfig::default(), reporter.clone()),
            reporter,
            cache: None,
            offline: false,
            allow_downgrade: false,
        }
    }

    /// Same, with no reporter.
    #[must_use]
    pub fn without_reporter(mirror_url: &str, keyring: Keyring) -> Self {
        Self::new(mirror_url, keyring, Arc::new(NoReporter))
    }

    /// Use `config` for HTTP.
    #[must_use]
    pub fn with_client_config(mut self, config: ClientConfig) -> Self {
        self.http = HttpClient::new(config, self.reporter.clone());
        self
    }

    /// Cache verified indices (and the last InRelease) in `cache`.
    #[must_use]
    pub fn with_cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Never touch the network: InRelease and indices come from the cache.
    #[must_use]
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Mirror base URL (without trailing `/`).
    #[must_use]
    pub fn mirror(&self) -> &str {
        &self.mirror
    }

    /// Whether offline mode is on.
    #[must_use]
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The HTTP client (shared with [`crate::fetch`]).
    #[must_use]
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The reporter.
    #[must_use]
    pub fn reporter(&self) -> &Arc<dyn ResolverReporter> {
        &self.reporter
    }

    /// URL of a file below the mirror root (e.g. a pool path).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.mirror, path.trim_start_matches('/'))
    }

    /// Accept an InRelease older than the newest one cached for the same suite
    /// (`--allow-downgrade`); by default that is refused as a rollback.
    #[must_use]
    pub fn allow_downgrade(mut self, allow: bool) -> Self {
        self.allow_downgrade = allow;
        self
    }

    /// A rollback guard: when the cache holds a newer release of the same suite from this
    /// mirror than the one just fetched (a replayed, stale or lagging InRelease), the cached
    /// one wins if it still verifies; if it no longer does, the older one is refused.
    fn newer_cached(
        &self,
        suite: &str,
        verified: &VerifiedRelease,
        url: &str,
        now: SystemTime,
    ) -> Result<Option<VerifiedRelease>, ClientError> {
        let (Some(cache), false) = (&self.cache, self.allow_downgrade) else {
            return Ok(None);
        };
        let Some(old) = cache.load_release(&self.mirror, suite)? else {
            return Ok(None);
        };
        let Some(old_date) = release::split_cleartext(&old)
            .ok()
            .and_then(|c| release::parse_release(&c.text, c.first_text_line).ok())
            .map(|r| r.date)
        else {
            return Ok(None);
        };
        if old_date.unix_seconds <= verified.release.date.unix_seconds {
            return Ok(None);
        }
        let rollback = || ClientError::Release {
            suite: suite.to_owned(),
            url: url.to_owned(),
            source: Box::new(ReleaseError::Rollback {
                date: verified.release.date.text.clone(),
                newest: old_date.text.clone(),
            }),
        };
        let cached =
            release::verify_inrelease(&old, &self.keyring, suite, now).map_err(|_| rollback())?;
        self.reporter
            .on_warning(ResolverWarning::UsingCachedRelease {
                suite: suite.to_owned(),
            });
        Ok(Some(cached))
    }

    /// Fetch and verify `dists/<suite>/InRelease`, checking `Valid-Until` against `now`. In
    /// offline mode the cached copy is verified instead. A verified copy is kept in the cache.
    pub fn fetch_release(
        &self,
        suite: &str,
        now: SystemTime,
    ) -> Result<VerifiedRelease, ClientError> {
        let url = self.url(&format!("dists/{suite}/InRelease"));
        let (bytes, from) = if self.offline {
            let cache = self
                .cache
                .as_ref()
                .ok_or_else(|| ClientError::NotCached { what: url.clone() })?;
            let bytes = cache
                .load_release(&self.mirror, suite)?
                .ok_or_else(|| ClientError::NotCached { what: url.clone() })?;
            self.reporter
                .on_warning(ResolverWarning::UsingCachedRelease {
                    suite: suite.to_owned(),
                });
            (
                bytes,
                cache
                    .release_path(&self.mirror, suite)
                    .display()
                    .to_string(),
            )
        } else {
            (
                self.http.get_bytes(&url, release::MAX_INRELEASE_BYTES)?,
                url.clone(),
            )
        };
        let verified =
            release::verify_inrelease(&bytes, &self.keyring, suite, now).map_err(|source| {
                ClientError::Release {
                    suite: suite.to_owned(),
                    url: from,
                    source: Box::new(source),
                }
            })?;
        for status in &verified.signatures {
            if let Some(w) = signature_warning(suite, status) {
                self.reporter.on_warning(w);
            }
        }
        if let (Some(cache), false) = (&self.cache, self.offline) {
            if let Some(newer) = self.newer_cached(suite, &verified, &url, now)? {
                return Ok(newer);
            }
            cache.store_release(&self.mirror, suite, &bytes)?;
        }
        Ok(verified)
    }

    /// Fetch `<component>/binary-<arch>/Packages` of a verified release (see module docs).
    pub fn fetch_packages(
        &self,
        release: &VerifiedRelease,
        component: &str,
        arch: &str,
    ) -> Result<PackagesIndex, ClientError> {
        let suite = &release.suite;
        let dir = format!("{component}/binary-{arch}");
        let plain_path = format!("{dir}/Packages");
        let xz_path = format!("{dir}/Packages.xz");
        let plain = release.release.sha256.get(&plain_path);
        let mut timings = IndexTimings::default();
        if let (Some(cache), Some(plain)) = (&self.cache, plain) {
            let start = Instant::now();
            if let Some(text) = cached_packages_text(cache, release, &dir, plain)? {
                self.reporter.on_cache_hit(&plain_path);
                self.reporter.on_index_fetched(suite, component, plain.size);
                timings.cache_hit = true;
                timings.decompress = start.elapsed();
                return Ok(PackagesIndex {
                    path: plain_path,
                    sha256: plain.sha256.clone(),
                    text,
                    timings,
                });
            }
        }
        if self.offline {
            return Err(ClientError::NotCached {
                what: format!("dists/{suite}/{plain_path}"),
            });
        }
        // gzip when the release lists it: 40 % more bytes than xz, but inflating the 54 MiB
        // index takes a third of the time LZMA needs (zlib 0.25 s against 0.73 s here), the
        // larger share of a fresh resolve on any link faster than ~40 Mbit/s.
        let gz_path = format!("{dir}/Packages.gz");
        let (path, listed, gzip) = match release.release.sha256.get(&gz_path) {
            Some(gz) => (gz_path, gz, true),
            None => (
                xz_path.clone(),
                release.release.sha256.get(&xz_path).ok_or_else(|| {
                    ClientError::IndexNotListed {
                        suite: suite.clone(),
                        path: xz_path,
                    }
                })?,
                false,
            ),
        };
        let plain_url = self.url(&format!("dists/{suite}/{path}"));
        let start = Instant::now();
        let id = self.reporter.on_download_start(&path, Some(listed.size));
        let fetched = if release.release.acquire_by_hash {
            let by_hash = self.url(&format!(
                "dists/{suite}/{dir}/by-hash/SHA256/{}",
                listed.sha256
            ));
            match self.http.get_bytes(&by_hash, listed.size) {
                Err(ClientError::NotFound { url }) => {
                    self.reporter
                        .on_warning(ResolverWarning::ByHashFallback { url });
                    self.http
                        .get_bytes(&plain_url, listed.size)
                        .map(|b| (b, plain_url.clone()))
                }
                other => other.map(|b| (b, by_hash)),
            }
        } else {
            self.http
                .get_bytes(&plain_url, listed.size)
                .map(|b| (b, plain_url.clone()))
        };
        if let Ok((bytes, _)) = &fetched {
            self.reporter
                .on_download_progress(id, u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        }
        self.reporter.on_download_complete(id);
        let (compressed, url) = fetched?;
        timings.download = start.elapsed();
        // Verify the compressed bytes before the decompressor sees them.
        check_size_and_hash(&url, &compressed, listed.size, &listed.sha256)?;
        let start = Instant::now();
        let text = decompress_index(&compressed, gzip, &url, plain)?;
        let sha256 = release::sha256_hex(text.as_bytes());
        timings.decompress = start.elapsed();
        if let (Some(cache), Some(_)) = (&self.cache, plain) {
            // The verified download, not the text: 10 MB instead of 54 for trixie/main.
            cache.insert_bytes(EntryKind::Index, &path, &listed.sha256, &compressed)?;
        }
        self.reporter.on_index_fetched(
            suite,
            component,
            u64::try_from(text.len()).unwrap_or(u64::MAX),
        );
        Ok(PackagesIndex {
            path: plain_path,
            sha256,
            text,
            timings,
        })
    }
}

impl Repository {
    /// [`Repository::fetch_packages`], parsed: from the parsed-index cache when it holds the
    /// SHA-256 the verified release lists (see [`crate::index_cache`]), else fetched,
    /// parsed and stored there. Either way the result is the compact form, so a hit and a
    /// miss give the same index.
    pub fn fetch_index(
        &self,
        release: &VerifiedRelease,
        component: &str,
        arch: &str,
    ) -> Result<PackageIndex, ClientError> {
        let plain_path = format!("{component}/binary-{arch}/Packages");
        let plain = release.release.sha256.get(&plain_path);
        let cached = self.cache.as_ref().zip(plain);
        if let Some((cache, plain)) = cached {
            match index_cache::load(cache, &plain.sha256, arch).map_err(ClientError::IndexCache)? {
                index_cache::Loaded::Hit(index) => {
                    self.reporter
                        .on_cache_hit(&format!("{plain_path} (parsed)"));
                    self.reporter
                        .on_index_fetched(&release.suite, component, plain.size);
                    return Ok(index);
                }
                index_cache::Loaded::Corrupt(e) => {
                    self.reporter
                        .on_warning(ResolverWarning::ParsedIndexRebuilt {
                            index: format!("dists/{}/{plain_path}", release.suite),
                            reason: e.to_string(),
                        });
                }
                index_cache::Loaded::Miss => {}
            }
        }
        let fetched = self.fetch_packages(release, component, arch)?;
        let index =
            PackageIndex::parse(&[fetched.text], arch).map_err(|source| ClientError::Index {
                path: plain_path.clone(),
                source,
            })?;
        match cached {
            Some((cache, plain)) if index.warnings().is_empty() => {
                let bytes = index_cache::encode(&index).map_err(ClientError::IndexCache)?;
                drop(index);
                index_cache::store_bytes(cache, &plain.sha256, arch, &bytes)
                    .map_err(ClientError::IndexCache)?;
                index_cache::decode(&bytes).map_err(ClientError::IndexCache)
            }
            _ => Ok(index),
        }
    }
}

/// The text of a verified compressed `Packages` (`gzip`, else xz) from `url`: decompressed
/// within the plain size the release lists and checked against its plain SHA-256 (when it
/// lists one), UTF-8.
fn decompress_index(
    compressed: &[u8],
    gzip: bool,
    url: &str,
    plain: Option<&release::ReleaseFile>,
) -> Result<String, ClientError> {
    let limit = plain.map_or(MAX_INDEX_BYTES, |p| p.size);
    let decompressed = if gzip {
        decompress_gz(compressed, limit)
    } else {
        decompress_xz(compressed, limit)
    }
    .map_err(|source| ClientError::Decompress {
        url: url.to_owned(),
        source,
    })?;
    if let Some(plain) = plain {
        check_size_and_hash(
            &format!("{url} (decompressed)"),
            &decompressed,
            plain.size,
            &plain.sha256,
        )?;
    }
    String::from_utf8(decompressed).map_err(|_| ClientError::NotUtf8 {
        url: url.to_owned(),
    })
}

/// The `Packages` text of `dir` from the cache, if it is there: as the plain file (caches
/// written before the compressed download was kept instead), or as the `.gz` or `.xz` the
/// release lists, decompressed and checked again ([`decompress_index`]).
fn cached_packages_text(
    cache: &Cache,
    release: &VerifiedRelease,
    dir: &str,
    plain: &release::ReleaseFile,
) -> Result<Option<String>, ClientError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ClientError::Io {
            path: path.to_owned(),
            source,
        })
    };
    if let Some(path) = cache.get(EntryKind::Index, &plain.sha256, Some(plain.size))? {
        return String::from_utf8(read(&path)?)
            .map(Some)
            .map_err(|_| ClientError::NotUtf8 {
                url: path.display().to_string(),
            });
    }
    for (name, gzip) in [("Packages.gz", true), ("Packages.xz", false)] {
        let Some(listed) = release.release.sha256.get(&format!("{dir}/{name}")) else {
            continue;
        };
        if let Some(path) = cache.get(EntryKind::Index, &listed.sha256, Some(listed.size))? {
            let url = path.display().to_string();
            return decompress_index(&read(&path)?, gzip, &url, Some(plain)).map(Some);
        }
    }
    Ok(None)
}

fn signature_warning(suite: &str, status: &release::SignatureStatus) -> Option<ResolverWarning> {
    use release::SignatureStatus as S;
    let (key, reason) = match status {
        S::Good { .. } => return None,
        S::Bad { key, reason } => (key.clone(), reason.clone()),
        S::UnknownKey { issuers } => (issuers.join(","), "key not in the keyring".to_owned()),
        S::Rejected { issuers, reason } => (issuers.join(","), reason.clone()),
    };
    Some(ResolverWarning::SignatureNotVerified {
        suite: suite.to_owned(),
        key: if key.is_empty() {
            "unknown".to_owned()
        } else {
            key
        },
        reason,
    })
}

fn check_size_and_hash(
    url: &str,
    bytes: &[u8],
    size: u64,
    sha256: &str,
) -> Result<(), ClientError> {
    let actual_size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if actual_size != size {
        return Err(ClientError::SizeMismatch {
            url: url.to_owned(),
            expected: size,
            actual: actual_size,
        });
    }
    let actual = release::sha256_hex(bytes);
    if actual != sha256 {
        return Err(ClientError::HashMismatch {
            url: url.to_owned(),
            expected: sha256.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// Decompress an `.xz` stream (multi-stream allowed), failing beyond `limit` bytes of output.
pub fn decompress_xz(compressed: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let decoder = liblzma::read::XzDecoder::new_multi_decoder(compressed);
    read_capped(decoder, limit)
}

/// Decompress a `.gz` stream (concatenated members allowed), failing beyond `limit` bytes
/// of output.
pub fn decompress_gz(compressed: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    read_capped(flate2::read::MultiGzDecoder::new(compressed), limit)
}

/// Read everything from `reader`, failing with `InvalidData` beyond `limit` bytes.
pub fn read_capped(reader: impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let n = reader.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if u64::try_from(n).unwrap_or(u64::MAX) > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("decompressed data exceeds {limit} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn proxy_is_chosen_by_scheme() {
        let env = env_of(&[
            ("http_proxy", "http://cacher:3142"),
            ("HTTPS_PROXY", "http://corp:8080"),
        ]);
        assert_eq!(
            proxy_for("http://deb.debian.org/debian/dists/trixie/InRelease", &env).as_deref(),
            Some("http://cacher:3142")
        );
        assert_eq!(
            proxy_for("https://deb.debian.org/debian/", &env).as_deref(),
            Some("http://corp:8080")
        );
        let all = env_of(&[("ALL_PROXY", "socks5://s:1080"), ("http_proxy", "")]);
        assert_eq!(
            proxy_for("http://x/", &all).as_deref(),
            Some("socks5://s:1080")
        );
        assert_eq!(proxy_for("http://x/", &env_of(&[])), None);
        assert_eq!(proxy_for("ftp://x/", &env), None);
    }

    #[test]
    fn no_proxy_wins() {
        let env = env_of(&[
            ("http_proxy", "http://cacher:3142"),
            (
                "no_proxy",
                "localhost, .internal.example,127.0.0.1:8080,[::1]",
            ),
        ]);
        assert_eq!(proxy_for("http://127.0.0.1:9999/x", &env), None);
        assert_eq!(
            proxy_for("http://mirror.internal.example/debian", &env),
            None
        );
        assert_eq!(proxy_for("http://internal.example/debian", &env), None);
        assert_eq!(proxy_for("http://user@LOCALHOST:80/", &env), None);
        assert_eq!(proxy_for("http://[::1]:3142/", &env), None);
        assert!(proxy_for("http://notinternal.example/", &env).is_some());
        assert!(proxy_for("http://deb.debian.org/", &env).is_some());
        let all = env_of(&[("http_proxy", "http://c:1"), ("NO_PROXY", "*")]);
        assert_eq!(proxy_for("http://deb.debian.org/", &all), None);
    }

    #[test]
    fn requests_go_through_the_proxy_from_the_environment() {
        // A one-shot HTTP proxy on 127.0.0.1 that answers every request itself and records
        // the request line: an absolute URI proves the client used it as a proxy.
        use std::io::{BufRead, BufReader};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("read");
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut stream = stream;
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nproxy",
                )
                .expect("write");
            request_line
        });
        let proxy = format!("http://127.0.0.1:{port}");
        let agent =
            forward_proxy::agent(HttpClient::agent_config(&ClientConfig::default()), &proxy)
                .expect("proxy");
        let mut response = agent
            .get("http://deb.example.invalid/debian/dists/trixie/InRelease")
            .call()
            .expect("through the proxy");
        assert_eq!(response.body_mut().read_to_string().expect("body"), "proxy");
        let request_line = server.join().expect("server");
        assert!(
            request_line
                .starts_with("GET http://deb.example.invalid/debian/dists/trixie/InRelease "),
            "{request_line}"
        );
    }
    use super::*;

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn xz_round_trip_and_cap() {
        let data = b"Package: a\n\n".repeat(100);
        let c = xz(&data);
        assert_eq!(decompress_xz(&c, 1200).unwrap(), data);
        let err = decompress_xz(&c, 1199).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(decompress_xz(b"not xz", 100).is_err());
    }

    #[test]
    fn size_and_hash_checks() {
        let h = release::sha256_hex(b"abc");
        check_size_and_hash("u", b"abc", 3, &h).unwrap();
        assert!(matches!(
            check_size_and_hash("u", b"abc", 4, &h),
            Err(ClientError::SizeMismatch { .. })
        ));
        assert!(matches!(
            check_size_and_hash("u", b"abd", 3, &h),
            Err(ClientError::HashMismatch { .. })
        ));
    }

    #[test]
    fn connection_refused_is_retried_then_reported() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let rec = Arc::new(crate::reporter::RecordingReporter::new());
        let client = HttpClient::new(
            ClientConfig {
                attempts: 2,
                initial_backoff: Duration::from_millis(1),
                proxy_from_env: false,
                ..ClientConfig::default()
            },
            rec.clone(),
        );
        let err = client
            .get_bytes(&format!("http://127.0.0.1:{port}/x"), 10)
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Transient { attempts: 2, .. }),
            "{err:?}"
        );
        assert_eq!(rec.events().len(), 1, "one retry event");
    }
}
