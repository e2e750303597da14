//! Download `.deb` files into the cache, verified, with bounded parallelism.
//!
//! Each item is first looked up in the cache (entries are re-hashed on read). Missing items
//! are downloaded by up to [`FetchOptions::parallel`] threads; each download holds the entry's
//! lock (so a concurrent build waits instead of downloading twice), streams into a temp file
//! while hashing, and enters the cache only if size and SHA-256 match the signed index. In
//! offline mode nothing is downloaded and every missing package is listed in one error.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::cache::{Cache, CacheError, EntryKind};
use crate::client::{ClientError, Repository};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Offline mode and these packages are not cached.
    #[error(
        "offline: {count} package(s) not in the cache: {list}\nhint: run once without `--offline` to fill the cache",
        count = .names.len(),
        list = .names.join(", ")
    )]
    Missing {
        /// Names of the missing packages, in input order.
        names: Vec<String>,
    },
    /// The download of a package failed.
    #[error("cannot download `{name}`")]
    Download {
        /// Package name.
        name: String,
        /// Cause.
        #[source]
        source: ClientError,
    },
    /// The downloaded file did not match the index (size or SHA-256), or the cache failed.
    #[error("cannot store `{name}` in the cache")]
    Cache {
        /// Package name.
        name: String,
        /// Cause.
        #[source]
        source: CacheError,
    },
    /// The pool path of an item is not a safe relative path.
    #[error("`{name}`: unsafe pool path `{filename}`")]
    UnsafeFilename {
        /// Package name.
        name: String,
        /// Its `Filename`.
        filename: String,
    },
}

/// One package file to fetch (from a `Packages` stanza).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchItem {
    /// Package name (for messages and events).
    pub name: String,
    /// `Filename`: pool path relative to the mirror root.
    pub filename: String,
    /// `Size`.
    pub size: u64,
    /// `SHA256` (lowercase hex).
    pub sha256: String,
}

/// Options of [`fetch_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Concurrent downloads (at least 1).
    pub parallel: usize,
    /// Use only the cache.
    pub offline: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            parallel: 4,
            offline: false,
        }
    }
}

fn safe_pool_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !p.contains(['\\', '?', '#', '\0'])
}

/// Ensure every item is in the cache; return their cache paths in input order.
pub fn fetch_all(
    repo: &Repository,
    cache: &Cache,
    items: &[FetchItem],
    options: FetchOptions,
) -> Result<Vec<PathBuf>, FetchError> {
    let reporter = repo.reporter();
    let mut paths: Vec<Option<PathBuf>> = vec![None; items.len()];
    let mut todo = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if !safe_pool_path(&item.filename) {
            return Err(FetchError::UnsafeFilename {
                name: item.name.clone(),
                filename: item.filename.clone(),
            });
        }
        let cached = cache
            .get(EntryKind::Deb, &item.sha256, Some(item.size))
            .map_err(|source| FetchError::Cache {
                name: item.name.clone(),
                source,
            })?;
        match cached {
            Some(p) => {
                reporter.on_cache_hit(&item.name);
                paths[i] = Some(p);
            }
            None => todo.push(i),
        }
    }
    if options.offline || repo.is_offline() {
        if !todo.is_empty() {
            return Err(FetchError::Missing {
                names: todo.iter().map(|&i| items[i].name.clone()).collect(),
            });
        }
    } else if !todo.is_empty() {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<(usize, Result<PathBuf, FetchError>)>> = Mutex::new(Vec::new());
        let workers = options.parallel.clamp(1, todo.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = todo.get(k) else { break };
                        let result = fetch_one(repo, cache, &items[i]);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        results
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((i, result));
                    }
                });
            }
        });
        let mut results = results
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        results.sort_by_key(|(i, _)| *i);
        for (i, r) in results {
            paths[i] = Some(r?);
        }
    }
    Ok(paths
        .into_iter()
        .map(|p| p.expect("every item is either cached, downloaded or reported as an error"))
        .collect())
}

fn fetch_one(repo: &Repository, cache: &Cache, item: &FetchItem) -> Result<PathBuf, FetchError> {
    let cache_err = |source| FetchError::Cache {
        name: item.name.clone(),
        source,
    };
    let _lock = cache.lock_entry(&item.sha256).map_err(cache_err)?;
    // Another process may have fetched it while we waited for the lock.
    if let Some(p) = cache
        .get(EntryKind::Deb, &item.sha256, Some(item.size))
        .map_err(cache_err)?
    {
        repo.reporter().on_cache_hit(&item.name);
        return Ok(p);
    }
    let mut temp = cache.temp_entry().map_err(cache_err)?;
    let url = repo.url(&item.filename);
    let reporter = repo.reporter();
    let id = reporter.on_download_start(&item.name, Some(item.size));
    let result = repo
        .http()
        .download_to(&url, &mut temp, item.size, Some(id));
    reporter.on_download_complete(id);
    result.map_err(|source| FetchError::Download {
        name: item.name.clone(),
        source,
    })?;
    cache
        .commit(
            temp,
            EntryKind::Deb,
            &item.name,
            &item.sha256,
            Some(item.size),
        )
        .map_err(cache_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_paths() {
        assert!(safe_pool_path(
            "pool/main/h/hostname/hostname_3.25_amd64.deb"
        ));
        for bad in [
            "",
            "/etc/passwd",
            "pool/../x",
            "pool//x",
            "./pool",
            "a\\b",
            "a?b",
        ] {
            assert!(!safe_pool_path(bad), "{bad}");
        }
    }

    #[test]
    fn missing_error_lists_names() {
        let e = FetchError::Missing {
            names: vec!["a".into(), "b".into()],
        };
        assert!(
            e.to_string()
                .starts_with("offline: 2 package(s) not in the cache: a, b")
        );
    }
}
