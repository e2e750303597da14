//! Pure partition layout of a jeos disk: where every partition and both GPT copies live.
//!
//! The layout is data (as in mkosi's partition definitions): [`DiskLayout::plan`] turns a
//! [`DiskSpec`] into LBAs and GUIDs without touching a file, so it is unit-tested and reused
//! by [`crate::gpt`] (tables), [`crate::bootloader`] (which partition the BIOS loader lives
//! on) and the report handed back by `write_disk`.
//!
//! ```text
//!  LBA 0        1        2 .. 33         2048 (1 MiB)                               end-33   end
//!  ┌────────┬────────┬──────────────┬──┬──────────────┬──────────────────────┬──┬───────────┬────────┐
//!  │ prot.  │ GPT    │ partition    │  │ [BIOS boot]  │ ESP (FAT)            │  │ backup    │ backup │
//!  │ MBR    │ header │ entries (128 │..│ 1 MiB, only  │ kernel, initramfs,   │..│ entries   │ header │
//!  │ +boot  │        │ x 128 bytes) │  │ if requested │ loaders, configs     │  │ (32 LBAs) │ (1 LBA)│
//!  │ code   │        │              │  │              ├──────────────────────┤  │           │        │
//!  │        │        │              │  │              │ root (ext4)          │  │           │        │
//!  └────────┴────────┴──────────────┴──┴──────────────┴──────────────────────┴──┴───────────┴────────┘
//!   every partition starts on a 1 MiB boundary and its size is a whole number of MiB; the
//!   last MiB of the disk is left for the backup GPT, so the total size is a MiB multiple too
//! ```
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::fmt;

use sha2::{Digest, Sha256};

use crate::gpt::Guid;

/// Bytes per logical sector: jeos writes 512-byte-sector disks only.
pub const SECTOR_SIZE: u64 = 512;
/// Partition alignment (and size granularity): 1 MiB, what fdisk/sgdisk/systemd-repart use.
pub const ALIGNMENT_BYTES: u64 = 1024 * 1024;
/// Number of entries in each GPT partition entry array (UEFI spec minimum is 16 KiB).
pub const GPT_ENTRY_COUNT: u32 = 128;
/// Size of one GPT partition entry.
pub const GPT_ENTRY_SIZE: u32 = 128;
/// Sectors taken by one partition entry array: 128 * 128 / 512.
pub const GPT_ENTRY_SECTORS: u64 = (GPT_ENTRY_COUNT as u64 * GPT_ENTRY_SIZE as u64) / SECTOR_SIZE;

/// A logical block address (512-byte sectors from the start of the disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lba(pub u64);

impl Lba {
    /// Byte offset of this sector from the start of the disk.
    #[must_use]
    pub fn offset_bytes(self) -> u64 {
        self.0 * SECTOR_SIZE
    }
}

impl fmt::Display for Lba {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LBA {}", self.0)
    }
}

/// 32 bytes from which every identifier of a disk (partition GUIDs, FAT serial, ext4 UUID
/// and hash seed) is derived, so that the same recipe gives the same bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seed(pub [u8; 32]);

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seed(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

impl Seed {
    /// Derives a seed from arbitrary bytes (for example `name-version` of the appliance).
    #[must_use]
    pub fn from_bytes(input: &[u8]) -> Self {
        Self(Sha256::digest(input).into())
    }

    /// 32 bytes derived from the seed for one purpose (`SHA-256(seed || 0 || label)`).
    #[must_use]
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update([0u8]);
        hasher.update(label.as_bytes());
        hasher.finalize().into()
    }

    /// A GUID derived from the seed for one purpose, with the RFC 9562 version 8 ("custom")
    /// and variant bits set, so it is a well-formed UUID that no random generator produces.
    #[must_use]
    pub fn guid(&self, label: &str) -> Guid {
        let digest = self.derive(label);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Guid(bytes)
    }
}

/// What a partition is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionRole {
    /// GRUB's BIOS boot partition (raw core.img); only when [`DiskSpec::bios_boot`] is set.
    BiosBoot,
    /// The EFI system partition (FAT): kernel, initramfs, boot loaders and their configs.
    Esp,
    /// The root file system (ext4).
    Root,
}

impl PartitionRole {
    /// The partition type GUID (UEFI spec §5.3.3, Discoverable Partitions Specification).
    #[must_use]
    pub fn type_guid(self) -> Guid {
        match self {
            Self::BiosBoot => crate::gpt::BIOS_BOOT_TYPE,
            Self::Esp => crate::gpt::ESP_TYPE,
            Self::Root => crate::gpt::LINUX_ROOT_X86_64_TYPE,
        }
    }

    /// The GPT partition name (written as UTF-16LE).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::BiosBoot => "bios-boot",
            Self::Esp => "esp",
            Self::Root => "root-x86-64",
        }
    }
}

/// GPT attribute bit 2: "legacy BIOS bootable" (UEFI spec table 5-8). SYSLINUX's
/// `gptmbr.bin` boots the first partition that has it.
pub const ATTR_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// User input for a disk layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// Size of the EFI system partition in bytes (rounded up to 1 MiB).
    pub esp_size_bytes: u64,
    /// Size of the root partition in bytes (rounded up to 1 MiB).
    pub root_size_bytes: u64,
    /// Add a 1 MiB BIOS boot partition (GRUB i386-pc); SYSLINUX does not need one.
    pub bios_boot: bool,
    /// Set the legacy-BIOS-bootable attribute on the ESP (needed by `gptmbr.bin`).
    pub esp_legacy_bootable: bool,
    /// Source of the disk and partition GUIDs.
    pub seed: Seed,
}

/// One planned partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlan {
    /// What the partition holds.
    pub role: PartitionRole,
    /// Partition type GUID.
    pub type_guid: Guid,
    /// Unique partition GUID (`PARTUUID`).
    pub unique_guid: Guid,
    /// GPT partition name.
    pub name: String,
    /// First sector.
    pub first_lba: Lba,
    /// Last sector (inclusive, as GPT stores it).
    pub last_lba: Lba,
    /// GPT attribute bits.
    pub attributes: u64,
}

impl PartitionPlan {
    /// Size in sectors.
    #[must_use]
    pub fn sectors(&self) -> u64 {
        self.last_lba.0 - self.first_lba.0 + 1
    }

    /// Size in bytes.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.sectors() * SECTOR_SIZE
    }

    /// Byte offset of the partition on the disk.
    #[must_use]
    pub fn offset_bytes(&self) -> u64 {
        self.first_lba.offset_bytes()
    }
}

/// The computed layout of a whole disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskLayout {
    /// Total disk size in bytes (a multiple of 1 MiB).
    pub total_size_bytes: u64,
    /// Disk GUID written in both GPT headers.
    pub disk_guid: Guid,
    /// Primary GPT header (always LBA 1).
    pub primary_header: Lba,
    /// Primary partition entry array (always LBA 2).
    pub primary_entries: Lba,
    /// Backup partition entry array (32 sectors before the last one).
    pub backup_entries: Lba,
    /// Backup GPT header (the last sector).
    pub backup_header: Lba,
    /// First sector a partition may use.
    pub first_usable: Lba,
    /// Last sector a partition may use (inclusive).
    pub last_usable: Lba,
    /// Partitions in table order.
    pub partitions: Vec<PartitionPlan>,
}

/// Errors from planning a layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// A partition was requested with size 0.
    #[error("partition `{role:?}` has size 0")]
    EmptyPartition {
        /// The partition.
        role: PartitionRole,
    },
    /// Sizes overflow a 64-bit byte count.
    #[error("disk size overflows 64 bits")]
    Overflow,
}

/// Rounds `value` up to a multiple of `to` (`to` > 0), or `None` on overflow.
#[must_use]
pub fn round_up(value: u64, to: u64) -> Option<u64> {
    value.checked_add(to - 1).map(|v| v / to * to)
}

impl DiskLayout {
    /// Plans the disk: partitions in the order BIOS boot (optional), ESP, root, each aligned
    /// to 1 MiB, followed by one MiB that holds the backup GPT.
    ///
    /// # Errors
    /// [`LayoutError::EmptyPartition`] for a zero size, [`LayoutError::Overflow`] when the
    /// sizes do not fit in 64 bits.
    pub fn plan(spec: &DiskSpec) -> Result<Self, LayoutError> {
        let mut wanted = Vec::new();
        if spec.bios_boot {
            wanted.push((PartitionRole::BiosBoot, ALIGNMENT_BYTES, 0));
        }
        let esp_attributes = if spec.esp_legacy_bootable {
            ATTR_LEGACY_BIOS_BOOTABLE
        } else {
            0
        };
        wanted.push((PartitionRole::Esp, spec.esp_size_bytes, esp_attributes));
        wanted.push((PartitionRole::Root, spec.root_size_bytes, 0));

        let mut next_bytes = ALIGNMENT_BYTES;
        let mut partitions = Vec::with_capacity(wanted.len());
        for (role, size_bytes, attributes) in wanted {
            if size_bytes == 0 {
                return Err(LayoutError::EmptyPartition { role });
            }
            let size_bytes = round_up(size_bytes, ALIGNMENT_BYTES).ok_or(LayoutError::Overflow)?;
            let end_bytes = next_bytes
                .checked_add(size_bytes)
                .ok_or(LayoutError::Overflow)?;
            partitions.push(PartitionPlan {
                role,
                type_guid: role.type_guid(),
                unique_guid: spec.seed.guid(&format!("partition:{}", role.name())),
                name: role.name().to_owned(),
                first_lba: Lba(next_bytes / SECTOR_SIZE),
                last_lba: Lba(end_bytes / SECTOR_SIZE - 1),
                attributes,
            });
            next_bytes = end_bytes;
        }
        let total_size_bytes = next_bytes
            .checked_add(ALIGNMENT_BYTES)
            .ok_or(LayoutError::Overflow)?;
        let total_sectors = total_size_bytes / SECTOR_SIZE;
        let backup_header = Lba(total_sectors - 1);
        let backup_entries = Lba(backup_header.0 - GPT_ENTRY_SECTORS);
        Ok(Self {
            total_size_bytes,
            disk_guid: spec.seed.guid("disk"),
            primary_header: Lba(1),
            primary_entries: Lba(2),
            backup_entries,
            backup_header,
            first_usable: Lba(2 + GPT_ENTRY_SECTORS),
            last_usable: Lba(backup_entries.0 - 1),
            partitions,
        })
    }

    /// Total size in sectors.
    #[must_use]
    pub fn total_sectors(&self) -> u64 {
        self.total_size_bytes / SECTOR_SIZE
    }

    /// The partition with this role, if planned.
    #[must_use]
    pub fn partition(&self, role: PartitionRole) -> Option<&PartitionPlan> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// 1-based GPT partition number of the partition with this role.
    #[must_use]
    pub fn partition_number(&self, role: PartitionRole) -> Option<usize> {
        self.partitions
            .iter()
            .position(|p| p.role == role)
            .map(|i| i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn spec() -> DiskSpec {
        DiskSpec {
            esp_size_bytes: 32 * MIB,
            root_size_bytes: 100 * MIB + 1,
            bios_boot: false,
            esp_legacy_bootable: true,
            seed: Seed::from_bytes(b"test"),
        }
    }

    #[test]
    fn plan_aligns_partitions_and_reserves_backup() {
        let layout = DiskLayout::plan(&spec()).unwrap();
        let esp = layout.partition(PartitionRole::Esp).unwrap();
        let root = layout.partition(PartitionRole::Root).unwrap();
        assert_eq!(esp.first_lba, Lba(2048));
        assert_eq!(esp.size_bytes(), 32 * MIB);
        assert_eq!(esp.attributes, ATTR_LEGACY_BIOS_BOOTABLE);
        assert_eq!(root.first_lba, Lba(2048 + 32 * 2048));
        assert_eq!(root.size_bytes(), 101 * MIB, "rounded up to a MiB");
        assert_eq!(layout.total_size_bytes, (1 + 32 + 101 + 1) * MIB);
        assert_eq!(layout.backup_header, Lba(layout.total_sectors() - 1));
        assert_eq!(layout.backup_entries, Lba(layout.total_sectors() - 33));
        assert!(root.last_lba <= layout.last_usable);
        assert_eq!(layout.first_usable, Lba(34));
        for p in &layout.partitions {
            assert_eq!(p.offset_bytes() % MIB, 0);
            assert_eq!(p.size_bytes() % MIB, 0);
        }
        assert_eq!(layout.partition_number(PartitionRole::Root), Some(2));
    }

    #[test]
    fn plan_with_bios_boot_partition_first() {
        let layout = DiskLayout::plan(&DiskSpec {
            bios_boot: true,
            ..spec()
        })
        .unwrap();
        assert_eq!(layout.partitions[0].role, PartitionRole::BiosBoot);
        assert_eq!(layout.partitions[0].size_bytes(), MIB);
        assert_eq!(layout.partitions[1].first_lba, Lba(4096));
        assert_eq!(layout.partition_number(PartitionRole::Esp), Some(2));
    }

    #[test]
    fn plan_rejects_empty_partition() {
        let err = DiskLayout::plan(&DiskSpec {
            root_size_bytes: 0,
            ..spec()
        })
        .unwrap_err();
        assert_eq!(
            err,
            LayoutError::EmptyPartition {
                role: PartitionRole::Root
            }
        );
    }

    #[test]
    fn plan_rejects_overflow() {
        let err = DiskLayout::plan(&DiskSpec {
            root_size_bytes: u64::MAX - 10,
            ..spec()
        })
        .unwrap_err();
        assert_eq!(err, LayoutError::Overflow);
    }

    #[test]
    fn guids_are_deterministic_distinct_and_version_8() {
        let a = DiskLayout::plan(&spec()).unwrap();
        let b = DiskLayout::plan(&spec()).unwrap();
        assert_eq!(a, b);
        let other = DiskLayout::plan(&DiskSpec {
            seed: Seed::from_bytes(b"other"),
            ..spec()
        })
        .unwrap();
        assert_ne!(a.disk_guid, other.disk_guid);
        assert_ne!(a.partitions[0].unique_guid, a.partitions[1].unique_guid);
        let text = a.disk_guid.to_string();
        assert_eq!(&text[14..15], "8", "version nibble in {text}");
        assert!(
            matches!(&text[19..20], "8" | "9" | "a" | "b"),
            "variant in {text}"
        );
    }
}
