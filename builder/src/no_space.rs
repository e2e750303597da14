//! Recognising a full host disk anywhere in an error chain, so the user is told to free
//! space (or move the cache or output) rather than to fix a package or the recipe.

use std::error::Error;

/// Whether `error` or any of its causes is a host "no space left on device" (or quota)
/// `io::Error`.
#[must_use]
pub fn in_chain(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        if e.downcast_ref::<image_writer::ext4::Ext4Error>()
            .is_some_and(|e| matches!(e, image_writer::ext4::Ext4Error::NoSpace { .. }))
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// The hint printed under such an error.
pub const HINT: &str = "the disk is full: free space on the file system holding the output directory (`jeos build -o DIR`) or the package cache (`--cache-dir DIR`), or point them elsewhere";

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn finds_enospc_below_other_errors() {
        let full = Outer(std::io::Error::from_raw_os_error(28));
        assert!(in_chain(&full));
        let other = Outer(std::io::Error::from_raw_os_error(2));
        assert!(!in_chain(&other));
        let ext4 = image_writer::ext4::Ext4Error::NoSpace {
            path: "x".into(),
            needed: 1,
            available: 0,
        };
        assert!(in_chain(&ext4));
    }
}
