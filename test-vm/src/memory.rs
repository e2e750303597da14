//! Guest RAM: one anonymous mapping starting at guest physical address 0.
//!
//! All accesses go through vm-memory's checked accessors (`Bytes::read_obj`,
//! `write_slice`...): nothing in this crate keeps a raw pointer into guest RAM. The only raw
//! pointer taken is handed straight to `KVM_SET_USER_MEMORY_REGION` in [`crate::vm`].

use vm_memory::GuestAddress;

use crate::arch::x86_64::layout;

/// Guest memory as used by the runner, the devices and the loaders.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Errors while creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Less RAM than the fixed low-memory layout needs.
    #[error("guest memory of {size_mib} MiB is too small (minimum {minimum_mib} MiB)")]
    TooSmall {
        /// Requested size.
        size_mib: u64,
        /// Smallest supported size.
        minimum_mib: u64,
    },
    /// RAM would overlap the MMIO hole below 4 GiB.
    #[error("guest memory of {size_mib} MiB overlaps the MMIO hole (maximum {maximum_mib} MiB)")]
    TooLarge {
        /// Requested size.
        size_mib: u64,
        /// Largest supported size.
        maximum_mib: u64,
    },
    /// The anonymous mapping failed.
    #[error("cannot map {size_mib} MiB of guest memory")]
    Map {
        /// Requested size.
        size_mib: u64,
        /// The mmap error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Smallest guest RAM the layout supports.
pub const MIN_MEMORY_MIB: u64 = 16;

/// Largest guest RAM: everything must fit below the MMIO hole (see [`layout`]).
pub const MAX_MEMORY_MIB: u64 = layout::MMIO_HOLE_START >> 20;

/// Maps `size_mib` MiB of guest RAM at guest physical address 0.
///
/// # Errors
///
/// [`MemoryError`] if the size is outside `MIN_MEMORY_MIB..=MAX_MEMORY_MIB` or mmap fails.
pub fn create_guest_memory(size_mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size_mib < MIN_MEMORY_MIB {
        return Err(MemoryError::TooSmall {
            size_mib,
            minimum_mib: MIN_MEMORY_MIB,
        });
    }
    if size_mib > MAX_MEMORY_MIB {
        return Err(MemoryError::TooLarge {
            size_mib,
            maximum_mib: MAX_MEMORY_MIB,
        });
    }
    // `size_mib <= MAX_MEMORY_MIB` (3 GiB) so the byte count fits `usize` on 64-bit hosts.
    let size_bytes = usize::try_from(size_mib << 20).map_err(|_| MemoryError::TooLarge {
        size_mib,
        maximum_mib: MAX_MEMORY_MIB,
    })?;
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size_bytes)])
        .map_err(|source| MemoryError::Map { size_mib, source })
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend};

    use super::*;

    #[test]
    fn creates_memory_of_requested_size() {
        let mem = create_guest_memory(16).unwrap();
        assert_eq!(mem.last_addr(), GuestAddress((16 << 20) - 1));
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert!(mem.read_obj::<u32>(GuestAddress(16 << 20)).is_err());
    }

    #[test]
    fn rejects_too_small_and_too_large() {
        assert!(matches!(
            create_guest_memory(1),
            Err(MemoryError::TooSmall { .. })
        ));
        assert!(matches!(
            create_guest_memory(MAX_MEMORY_MIB + 1),
            Err(MemoryError::TooLarge { .. })
        ));
    }
}
