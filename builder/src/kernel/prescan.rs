//! Reading the `.modinfo` of a kernel package's modules while the package unpacks.
//!
//! A cold build's biggest cost is the kernel: LZMA-decoding the package's `data.tar.xz`
//! (one stream, one core) and then LZMA-decoding each of its ~4 000 `.ko.xz` modules for
//! the alias index ([`KernelPackage::alias_index`](super::KernelPackage)). The unpacker
//! reports each module file as soon as it is closed; [`ModuleScan`] decodes them on the
//! other cores meanwhile, and once the archive is done the unpacking thread joins in.
//! The result seeds [`KernelPackage::save_alias_index`](super::KernelPackage::save_alias_index),
//! which reads anything the scan missed the same way (a [`ModuleScan`] over the missing
//! paths), so the index is the same as a scan of the finished tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::{ModuleInfo, module_info, module_name_of, read_module_file};

/// What one module file's scan found, keyed by its path inside the package.
pub type Scanned = BTreeMap<PathBuf, ModuleInfo>;

/// Decoder threads to start beside a thread that is busy itself (at least one).
#[must_use]
pub fn spare_cores() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}

/// Background decoders of module files (see the module documentation).
pub struct ModuleScan {
    root: PathBuf,
    sender: Option<Sender<PathBuf>>,
    queue: Arc<Mutex<Receiver<PathBuf>>>,
    workers: Vec<JoinHandle<Scanned>>,
    /// Paths reported more than once: the first scan may have read the older file.
    rewritten: BTreeSet<PathBuf>,
    reported: BTreeSet<PathBuf>,
}

impl ModuleScan {
    /// Starts `workers` decoders for files below `root`.
    #[must_use]
    pub fn start(root: &Path, workers: usize) -> Self {
        let (sender, receiver) = channel::<PathBuf>();
        let queue = Arc::new(Mutex::new(receiver));
        let workers = (0..workers.max(1))
            .map(|_| {
                let queue = Arc::clone(&queue);
                let root = root.to_path_buf();
                std::thread::spawn(move || drain(&root, &queue))
            })
            .collect();
        Self {
            root: root.to_path_buf(),
            sender: Some(sender),
            queue,
            workers,
            rewritten: BTreeSet::new(),
            reported: BTreeSet::new(),
        }
    }

    /// The unpacker's file callback: queues module files (those the package's module index
    /// would list, below a `modules/` directory).
    pub fn file_written(&mut self, path: &str) {
        let file_name = path.rsplit('/').next().unwrap_or_default();
        if !path.contains("/modules/") || module_name_of(file_name).is_none() {
            return;
        }
        let path = PathBuf::from(path);
        if !self.reported.insert(path.clone()) {
            self.rewritten.insert(path);
            return;
        }
        if let Some(sender) = &self.sender {
            // A send fails only when every worker has gone (a panic); the final index
            // then reads the module itself.
            let _ = sender.send(path);
        }
    }

    /// Waits for the queue to empty, decoding on this thread too, and returns what was
    /// found (without rewritten paths, which the index reads again).
    #[must_use]
    pub fn finish(mut self) -> Scanned {
        self.sender = None;
        let mut found = drain(&self.root, &self.queue);
        for worker in self.workers.drain(..) {
            found.extend(
                worker
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        for path in &self.rewritten {
            found.remove(path);
        }
        found
    }
}

/// Decodes queued files until the queue is closed and empty. A module that cannot be read
/// is left out: the index reads it again and skips it there the same way.
fn drain(root: &Path, queue: &Mutex<Receiver<PathBuf>>) -> Scanned {
    let mut found = Scanned::new();
    loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(path) = next else {
            return found;
        };
        // The same fallback name as the package's module index uses.
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(module_name_of)
        else {
            continue;
        };
        if let Ok(bytes) = read_module_file(&root.join(&path))
            && let Ok(info) = module_info(&bytes, &name)
        {
            found.insert(path, info);
        }
    }
}
