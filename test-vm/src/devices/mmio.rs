//! virtio-mmio transport, version 2 (virtio 1.2 §4.2.2), for one device with split
//! virtqueues.
//!
//! Status state machine (§2.1, §3.1.1): `0 → ACKNOWLEDGE → DRIVER → FEATURES_OK →
//! DRIVER_OK`, each step keeping the earlier bits; `FAILED` may be set at any time; writing
//! 0 resets. The device refuses `FEATURES_OK` (the bit does not stick, §3.1.1 step 6) when
//! the driver accepted a feature that was not offered or did not accept `VIRTIO_F_VERSION_1`.
//! Driver mistakes are returned as [`MmioError`] so the runner can report them; the device
//! keeps running where the spec allows.

use virtio_queue::{Queue, QueueT};

use super::virtio_blk::{
    BlkConfig, BlockBackend, QUEUE_MAX_SIZE, QueueReport, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK,
    device_features, process_queue,
};
use super::vsock::{self, VsockDevice, VsockReport};
use crate::memory::GuestMemoryMmap;

/// "virt" in little-endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// Transport version 2 (non-legacy).
pub const VERSION: u32 = 2;
/// Vendor id reported ("JEOS").
pub const VENDOR_ID: u32 = 0x534f_454a;
/// Status: the guest found the device.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
/// Status: the guest has a driver.
pub const STATUS_DRIVER: u32 = 2;
/// Status: the driver is ready.
pub const STATUS_DRIVER_OK: u32 = 4;
/// Status: feature negotiation complete.
pub const STATUS_FEATURES_OK: u32 = 8;
/// Status: the device needs a reset.
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 0x40;
/// Status: the driver gave up.
pub const STATUS_FAILED: u32 = 0x80;
/// InterruptStatus bit: used buffer notification.
pub const INTERRUPT_USED_BUFFER: u32 = 1;

/// Register offsets (§4.2.2).
#[allow(missing_docs)]
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// A driver action the transport rejected or ignored.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// §4.2.2.2: "The driver MUST only use 32 bit wide and aligned reads and writes to access
    /// the control registers".
    #[error("{len}-byte access to control register {offset:#x}")]
    BadAccessWidth {
        /// Register offset.
        offset: u64,
        /// Access width.
        len: usize,
    },
    /// Access to an offset that is no register (or a write to a read-only one).
    #[error("invalid {} register {offset:#x}", if *.write { "write to" } else { "read of" })]
    InvalidRegister {
        /// Offset.
        offset: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// §2.1.2: "The driver MUST NOT clear a device status bit".
    #[error("status write {new:#x} clears bits of {old:#x}")]
    StatusBitCleared {
        /// Status before.
        old: u32,
        /// Value written.
        new: u32,
    },
    /// §3.1.1: the initialization steps happen in order.
    #[error("status write {new:#x} skips a step of the initialization sequence (was {old:#x})")]
    StatusOutOfOrder {
        /// Status before.
        old: u32,
        /// Value written.
        new: u32,
    },
    /// §6.1: "A device MAY fail to operate further if VIRTIO_F_VERSION_1 is not accepted".
    #[error("driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)")]
    Version1NotAccepted,
    /// §2.2.1: "The driver MUST NOT accept a feature which the device did not offer".
    #[error("driver accepted features {features:#x} that were not offered")]
    FeaturesNotOffered {
        /// The extra feature bits.
        features: u64,
    },
    /// §3.1.1: features are written before `FEATURES_OK` and then frozen.
    #[error("driver features written after FEATURES_OK or before DRIVER")]
    FeaturesWriteOutOfOrder,
    /// §4.2.2.3: "The driver MUST NOT write a value which is not a power of 2 / larger than
    /// QueueNumMax" (split virtqueues have power-of-two sizes, §2.7).
    #[error("queue size {size} is not a power of two up to {max}")]
    InvalidQueueSize {
        /// Value written.
        size: u32,
        /// QueueNumMax.
        max: u16,
    },
    /// Queue configuration for a queue that does not exist.
    #[error("queue {index} does not exist")]
    NoSuchQueue {
        /// QueueSel value.
        index: u32,
    },
    /// §4.2.2.3: queue registers are written while the queue is not ready.
    #[error("queue {index} configured while ready")]
    QueueConfigWhileReady {
        /// Queue index.
        index: u32,
    },
    /// §2.7 alignment and memory: the rings must be aligned and inside guest memory.
    #[error("queue {index} rings are misaligned or outside guest memory")]
    InvalidQueueAddresses {
        /// Queue index.
        index: u32,
    },
    /// §3.1.1: "The driver MUST NOT notify the device before setting DRIVER_OK".
    #[error("queue {index} notified before DRIVER_OK or while not ready")]
    NotifyBeforeReady {
        /// Queue index.
        index: u32,
    },
}

/// Result of an MMIO write.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    /// A virtio-blk queue notification was processed.
    pub queue_report: Option<QueueReport>,
    /// A virtio-vsock queue notification was processed.
    pub vsock_report: Option<VsockReport>,
    /// The interrupt line must be raised.
    pub interrupt: bool,
}

/// The device behind a transport.
enum DeviceModel {
    Block {
        backend: Box<dyn BlockBackend>,
        blk: BlkConfig,
    },
    Vsock(Box<VsockDevice>),
}

/// The transport around a virtio-blk or virtio-vsock device.
pub struct MmioTransport {
    model: DeviceModel,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("status", &self.status)
            .field("driver_features", &self.driver_features)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// A virtio-blk device over `backend`.
    #[must_use]
    pub fn new_block(backend: Box<dyn BlockBackend>, read_only: bool) -> Self {
        Self::with_model(
            DeviceModel::Block {
                backend,
                blk: BlkConfig::new(read_only),
            },
            1,
        )
    }

    /// A virtio-vsock device (rx, tx and event queues).
    #[must_use]
    pub fn new_vsock(device: VsockDevice) -> Self {
        Self::with_model(DeviceModel::Vsock(Box::new(device)), 3)
    }

    fn with_model(model: DeviceModel, queue_count: usize) -> Self {
        Self {
            model,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues: (0..queue_count)
                .map(|_| Queue::new(QUEUE_MAX_SIZE).expect("256 is a valid maximum queue size"))
                .collect(),
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
        }
    }

    /// The vsock device, when this transport carries one.
    #[must_use]
    pub fn vsock(&self) -> Option<&VsockDevice> {
        match &self.model {
            DeviceModel::Vsock(device) => Some(device),
            DeviceModel::Block { .. } => None,
        }
    }

    /// Mutable access to the vsock device (tests and the host poll loop).
    pub fn vsock_mut(&mut self) -> Option<&mut VsockDevice> {
        match &mut self.model {
            DeviceModel::Vsock(device) => Some(device),
            DeviceModel::Block { .. } => None,
        }
    }

    /// Host IO for a vsock device: accept, flush, refill rx; raises the used-buffer
    /// interrupt bit when the driver wants one. `None` for other devices or before
    /// `DRIVER_OK`.
    pub fn pump_vsock(&mut self, mem: &GuestMemoryMmap) -> Option<VsockReport> {
        if self.status & STATUS_DRIVER_OK == 0 {
            return None;
        }
        let DeviceModel::Vsock(device) = &mut self.model else {
            return None;
        };
        let report = device.pump(mem, &mut self.queues);
        if report.needs_interrupt {
            self.interrupt_status |= INTERRUPT_USED_BUFFER;
        }
        Some(report)
    }

    /// Current device status.
    #[must_use]
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Features offered.
    #[must_use]
    pub fn device_features(&self) -> u64 {
        match &self.model {
            DeviceModel::Block { blk, .. } => device_features(blk.read_only),
            DeviceModel::Vsock(_) => vsock::device_features(),
        }
    }

    fn device_id(&self) -> u32 {
        match &self.model {
            DeviceModel::Block { .. } => VIRTIO_ID_BLOCK,
            DeviceModel::Vsock(_) => vsock::VIRTIO_ID_VSOCK,
        }
    }

    fn config_space(&self) -> [u8; 8] {
        match &self.model {
            // struct virtio_blk_config starts with `le64 capacity` (in 512-byte sectors).
            DeviceModel::Block { backend, .. } => backend.capacity_sectors().to_le_bytes(),
            DeviceModel::Vsock(device) => device.config_space(),
        }
    }

    fn set_acked_features(&mut self, features: u64) {
        match &mut self.model {
            DeviceModel::Block { blk, .. } => blk.acked_features = features,
            // VERSION_1 is the only feature: nothing to remember.
            DeviceModel::Vsock(_) => {}
        }
    }

    fn reset(&mut self) {
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for queue in &mut self.queues {
            queue.reset();
        }
        self.status = 0;
        self.interrupt_status = 0;
        self.set_acked_features(1 << VIRTIO_F_VERSION_1);
        if let DeviceModel::Vsock(device) = &mut self.model {
            device.muxer.reset();
        }
    }

    fn selected_queue(&mut self, write: bool) -> Result<&mut Queue, MmioError> {
        let index = self.queue_sel;
        let queue = usize::try_from(index)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
            .ok_or(MmioError::NoSuchQueue { index })?;
        if write && queue.ready() {
            return Err(MmioError::QueueConfigWhileReady { index });
        }
        Ok(queue)
    }

    /// Handles a guest read of `data.len()` bytes at `offset` within the window.
    ///
    /// # Errors
    ///
    /// [`MmioError`] for accesses the spec forbids (the data then reads as zeros).
    pub fn read(&mut self, offset: u64, data: &mut [u8]) -> Result<(), MmioError> {
        data.fill(0);
        if offset >= reg::CONFIG {
            let config = self.config_space();
            let start = usize::try_from(offset - reg::CONFIG).unwrap_or(usize::MAX);
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = start
                    .checked_add(i)
                    .and_then(|at| config.get(at))
                    .copied()
                    .unwrap_or(0);
            }
            return Ok(());
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            return Err(MmioError::BadAccessWidth {
                offset,
                len: data.len(),
            });
        }
        let value = match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device_id(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => (self.device_features() & 0xffff_ffff) as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => match self.selected_queue(false) {
                Ok(queue) => u32::from(queue.max_size()),
                Err(_) => 0, // §4.2.2.1: 0 for a queue that is not available
            },
            reg::QUEUE_READY => self
                .selected_queue(false)
                .map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            // No shared memory regions: length reads as all ones (§4.2.2.1).
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                return Err(MmioError::InvalidRegister {
                    offset,
                    write: false,
                });
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
        Ok(())
    }

    fn write_status(&mut self, new: u32) -> Result<(), MmioError> {
        let old = self.status;
        if new == 0 {
            self.reset();
            return Ok(());
        }
        if new & old != old {
            return Err(MmioError::StatusBitCleared { old, new });
        }
        if new & STATUS_FAILED != 0 {
            self.status = new;
            return Ok(());
        }
        let requires = [
            (STATUS_DRIVER, STATUS_ACKNOWLEDGE),
            (STATUS_FEATURES_OK, STATUS_DRIVER),
            (STATUS_DRIVER_OK, STATUS_FEATURES_OK),
        ];
        if requires
            .iter()
            .any(|&(bit, needed)| new & bit != 0 && new & needed == 0)
        {
            return Err(MmioError::StatusOutOfOrder { old, new });
        }
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let extra = self.driver_features & !self.device_features();
            let error = if extra != 0 {
                Some(MmioError::FeaturesNotOffered { features: extra })
            } else if self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
                Some(MmioError::Version1NotAccepted)
            } else {
                None
            };
            if let Some(error) = error {
                // Refuse: FEATURES_OK does not stick (§3.1.1 step 6).
                self.status = new & !(STATUS_FEATURES_OK | STATUS_DRIVER_OK);
                return Err(error);
            }
            self.set_acked_features(self.driver_features);
        }
        self.status = new;
        Ok(())
    }

    /// `QueueNotify`: processes the queue whose index is `value` (without
    /// `VIRTIO_F_NOTIFICATION_DATA`, which is not offered, the value is the index).
    fn notify_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        value: u32,
    ) -> Result<WriteOutcome, MmioError> {
        let mut outcome = WriteOutcome::default();
        // With VIRTIO_F_NOTIFICATION_DATA not offered, the value is the queue index.
        let index = value;
        let ready = self.status & STATUS_DRIVER_OK != 0;
        let queue_ready = usize::try_from(index)
            .ok()
            .and_then(|i| self.queues.get(i))
            .map(QueueT::ready)
            .ok_or(MmioError::NoSuchQueue { index })?;
        if !ready || !queue_ready {
            return Err(MmioError::NotifyBeforeReady { index });
        }
        let index = usize::try_from(index).expect("indexes a queue");
        let needs_interrupt = match &mut self.model {
            DeviceModel::Block { backend, blk } => {
                let queue = &mut self.queues[index];
                let report = process_queue(mem, queue, backend.as_mut(), blk);
                let needs = report.needs_interrupt;
                outcome.queue_report = Some(report);
                needs
            }
            DeviceModel::Vsock(device) => {
                let report = device.notify(mem, &mut self.queues, index);
                let needs = report.needs_interrupt;
                outcome.vsock_report = Some(report);
                needs
            }
        };
        if needs_interrupt {
            self.interrupt_status |= INTERRUPT_USED_BUFFER;
            outcome.interrupt = true;
        }
        Ok(outcome)
    }

    /// Handles a guest write at `offset` within the window; processes the queue on
    /// `QueueNotify`.
    ///
    /// # Errors
    ///
    /// [`MmioError`] for driver actions the spec forbids (they are otherwise ignored).
    pub fn write(
        &mut self,
        mem: &GuestMemoryMmap,
        offset: u64,
        data: &[u8],
    ) -> Result<WriteOutcome, MmioError> {
        if offset >= reg::CONFIG {
            // The block config space is read-only for the fields we offer.
            return Err(MmioError::InvalidRegister {
                offset,
                write: true,
            });
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return Err(MmioError::BadAccessWidth {
                offset,
                len: data.len(),
            });
        };
        if !offset.is_multiple_of(4) {
            return Err(MmioError::BadAccessWidth { offset, len: 4 });
        }
        let value = u32::from_le_bytes(bytes);
        let mut outcome = WriteOutcome::default();
        let features_writable =
            self.status & STATUS_DRIVER != 0 && self.status & STATUS_FEATURES_OK == 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                if !features_writable {
                    return Err(MmioError::FeaturesWriteOutOfOrder);
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value);
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32);
                    }
                    _ if value == 0 => {}
                    _ => {
                        return Err(MmioError::FeaturesNotOffered {
                            features: u64::from(value),
                        });
                    }
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                let queue = self.selected_queue(true)?;
                let max = queue.max_size();
                match u16::try_from(value) {
                    Ok(size) if size.is_power_of_two() && size <= max => queue.set_size(size),
                    _ => return Err(MmioError::InvalidQueueSize { size: value, max }),
                }
            }
            reg::QUEUE_DESC_LOW => self
                .selected_queue(true)?
                .set_desc_table_address(Some(value), None),
            reg::QUEUE_DESC_HIGH => self
                .selected_queue(true)?
                .set_desc_table_address(None, Some(value)),
            reg::QUEUE_DRIVER_LOW => self
                .selected_queue(true)?
                .set_avail_ring_address(Some(value), None),
            reg::QUEUE_DRIVER_HIGH => self
                .selected_queue(true)?
                .set_avail_ring_address(None, Some(value)),
            reg::QUEUE_DEVICE_LOW => self
                .selected_queue(true)?
                .set_used_ring_address(Some(value), None),
            reg::QUEUE_DEVICE_HIGH => self
                .selected_queue(true)?
                .set_used_ring_address(None, Some(value)),
            reg::QUEUE_READY => {
                let index = self.queue_sel;
                let queue = self.selected_queue(false)?;
                if value == 0 {
                    queue.set_ready(false);
                } else {
                    queue.set_ready(true);
                    if !queue.is_valid(mem) {
                        queue.set_ready(false);
                        return Err(MmioError::InvalidQueueAddresses { index });
                    }
                }
            }
            reg::QUEUE_NOTIFY => outcome = self.notify_queue(mem, value)?,
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => self.write_status(value)?,
            _ => {
                return Err(MmioError::InvalidRegister {
                    offset,
                    write: true,
                });
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio_blk::tests::{AVAIL, DESC, USED, memory};
    use crate::devices::virtio_blk::{MemoryBackend, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO};

    fn transport(read_only: bool) -> MmioTransport {
        let backend = MemoryBackend {
            bytes: vec![7u8; 8 * 512],
        };
        MmioTransport::new_block(Box::new(backend), read_only)
    }

    fn rd(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        t.read(offset, &mut data).unwrap();
        u32::from_le_bytes(data)
    }

    fn wr(
        t: &mut MmioTransport,
        mem: &GuestMemoryMmap,
        offset: u64,
        value: u32,
    ) -> Result<WriteOutcome, MmioError> {
        t.write(mem, offset, &value.to_le_bytes())
    }

    /// The Linux driver's sequence up to DRIVER_OK with one 16-entry queue.
    fn handshake(t: &mut MmioTransport, mem: &GuestMemoryMmap) {
        wr(t, mem, reg::STATUS, 0).unwrap();
        wr(t, mem, reg::STATUS, 1).unwrap();
        wr(t, mem, reg::STATUS, 3).unwrap();
        wr(t, mem, reg::DRIVER_FEATURES_SEL, 1).unwrap();
        wr(t, mem, reg::DRIVER_FEATURES, 1).unwrap(); // VERSION_1
        wr(t, mem, reg::DRIVER_FEATURES_SEL, 0).unwrap();
        wr(t, mem, reg::DRIVER_FEATURES, 0).unwrap();
        wr(t, mem, reg::STATUS, 0xb).unwrap();
        assert_eq!(rd(t, reg::STATUS), 0xb);
        wr(t, mem, reg::QUEUE_SEL, 0).unwrap();
        assert_eq!(rd(t, reg::QUEUE_NUM_MAX), 256);
        wr(t, mem, reg::QUEUE_NUM, 16).unwrap();
        wr(t, mem, reg::QUEUE_DESC_LOW, DESC as u32).unwrap();
        wr(t, mem, reg::QUEUE_DESC_HIGH, 0).unwrap();
        wr(t, mem, reg::QUEUE_DRIVER_LOW, AVAIL as u32).unwrap();
        wr(t, mem, reg::QUEUE_DEVICE_LOW, USED as u32).unwrap();
        wr(t, mem, reg::QUEUE_READY, 1).unwrap();
        wr(t, mem, reg::STATUS, 0xf).unwrap();
    }

    #[test]
    fn identification_registers() {
        let mut t = transport(false);
        assert_eq!(rd(&mut t, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(&mut t, reg::VERSION), 2);
        assert_eq!(rd(&mut t, reg::DEVICE_ID), 2);
        assert_eq!(rd(&mut t, reg::DEVICE_FEATURES), 1 << VIRTIO_BLK_F_FLUSH);
        let mem = memory();
        wr(&mut t, &mem, reg::DEVICE_FEATURES_SEL, 1).unwrap();
        assert_eq!(rd(&mut t, reg::DEVICE_FEATURES), 1); // VERSION_1 is bit 32
        let mut capacity = [0u8; 8];
        t.read(reg::CONFIG, &mut capacity).unwrap();
        assert_eq!(u64::from_le_bytes(capacity), 8);
        let mut ro = transport(true);
        assert_ne!(
            rd(&mut ro, reg::DEVICE_FEATURES) & (1 << VIRTIO_BLK_F_RO),
            0
        );
    }

    #[test]
    fn full_handshake_and_notify_processes_the_queue() {
        let mem = memory();
        let mut t = transport(false);
        handshake(&mut t, &mem);
        assert_eq!(t.status(), 0xf);
        // A one-sector read of sector 1.
        mem.write_obj(0u32, GuestAddress(0x4000)).unwrap();
        mem.write_obj(1u64, GuestAddress(0x4008)).unwrap();
        for (i, (address, len, flags)) in
            [(0x4000u64, 16u32, 1u16), (0x5000, 512, 3), (0x6000, 1, 2)]
                .into_iter()
                .enumerate()
        {
            let base = DESC + 16 * i as u64;
            mem.write_obj(address, GuestAddress(base)).unwrap();
            mem.write_obj(len, GuestAddress(base + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(base + 12)).unwrap();
            mem.write_obj(i as u16 + 1, GuestAddress(base + 14))
                .unwrap();
        }
        mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
        mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        let outcome = wr(&mut t, &mem, reg::QUEUE_NOTIFY, 0).unwrap();
        assert!(outcome.interrupt);
        assert_eq!(outcome.queue_report.unwrap().completions.len(), 1);
        assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), 1);
        wr(&mut t, &mem, reg::INTERRUPT_ACK, 1).unwrap();
        assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x5000)).unwrap(), 7);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 1);
    }

    #[test]
    fn reset_clears_everything() {
        let mem = memory();
        let mut t = transport(false);
        handshake(&mut t, &mem);
        wr(&mut t, &mem, reg::STATUS, 0).unwrap();
        assert_eq!(rd(&mut t, reg::STATUS), 0);
        assert_eq!(rd(&mut t, reg::QUEUE_READY), 0);
        assert!(matches!(
            wr(&mut t, &mem, reg::QUEUE_NOTIFY, 0),
            Err(MmioError::NotifyBeforeReady { index: 0 })
        ));
    }

    #[test]
    fn refuses_features_ok_without_version_1() {
        let mem = memory();
        let mut t = transport(false);
        wr(&mut t, &mem, reg::STATUS, 1).unwrap();
        wr(&mut t, &mem, reg::STATUS, 3).unwrap();
        wr(&mut t, &mem, reg::DRIVER_FEATURES, 1 << VIRTIO_BLK_F_FLUSH).unwrap();
        assert!(matches!(
            wr(&mut t, &mem, reg::STATUS, 0xb),
            Err(MmioError::Version1NotAccepted)
        ));
        assert_eq!(rd(&mut t, reg::STATUS) & STATUS_FEATURES_OK, 0);
    }

    #[test]
    fn refuses_features_not_offered() {
        let mem = memory();
        let mut t = transport(false);
        wr(&mut t, &mem, reg::STATUS, 1).unwrap();
        wr(&mut t, &mem, reg::STATUS, 3).unwrap();
        wr(&mut t, &mem, reg::DRIVER_FEATURES, 1 << VIRTIO_BLK_F_RO).unwrap();
        wr(&mut t, &mem, reg::DRIVER_FEATURES_SEL, 1).unwrap();
        wr(&mut t, &mem, reg::DRIVER_FEATURES, 1).unwrap();
        assert!(matches!(
            wr(&mut t, &mem, reg::STATUS, 0xb),
            Err(MmioError::FeaturesNotOffered { features: 0x20 })
        ));
        assert_eq!(rd(&mut t, reg::STATUS), 3);
        wr(&mut t, &mem, reg::DRIVER_FEATURES_SEL, 2).unwrap();
        assert!(matches!(
            wr(&mut t, &mem, reg::DRIVER_FEATURES, 1),
            Err(MmioError::FeaturesNotOffered { .. })
        ));
    }

    #[test]
    fn feature_writes_after_features_ok_are_rejected() {
        let mem = memory();
        let mut t = transport(false);
        assert!(matches!(
            wr(&mut t, &mem, reg::DRIVER_FEATURES, 1),
            Err(MmioError::FeaturesWriteOutOfOrder)
        ));
        handshake(&mut t, &mem);
        assert!(matches!(
            wr(&mut t, &mem, reg::DRIVER_FEATURES, 0),
            Err(MmioError::FeaturesWriteOutOfOrder)
        ));
    }

    #[test]
    fn status_rules() {
        let mem = memory();
        let mut t = transport(false);
        assert!(matches!(
            wr(&mut t, &mem, reg::STATUS, STATUS_DRIVER),
            Err(MmioError::StatusOutOfOrder { old: 0, new: 2 })
        ));
        wr(&mut t, &mem, reg::STATUS, 1).unwrap();
        wr(&mut t, &mem, reg::STATUS, 3).unwrap();
        assert!(matches!(
            wr(&mut t, &mem, reg::STATUS, 1),
            Err(MmioError::StatusBitCleared { old: 3, new: 1 })
        ));
        assert!(matches!(
            wr(&mut t, &mem, reg::STATUS, 3 | STATUS_DRIVER_OK),
            Err(MmioError::StatusOutOfOrder { .. })
        ));
        wr(&mut t, &mem, reg::STATUS, 3 | STATUS_FAILED).unwrap();
        assert_eq!(rd(&mut t, reg::STATUS), 0x83);
    }

    #[test]
    fn queue_setup_rules() {
        let mem = memory();
        let mut t = transport(false);
        assert!(matches!(
            wr(&mut t, &mem, reg::QUEUE_NUM, 12),
            Err(MmioError::InvalidQueueSize { size: 12, max: 256 })
        ));
        assert!(matches!(
            wr(&mut t, &mem, reg::QUEUE_NUM, 512),
            Err(MmioError::InvalidQueueSize { .. })
        ));
        wr(&mut t, &mem, reg::QUEUE_SEL, 1).unwrap();
        assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 0);
        assert!(matches!(
            wr(&mut t, &mem, reg::QUEUE_NUM, 16),
            Err(MmioError::NoSuchQueue { index: 1 })
        ));
        wr(&mut t, &mem, reg::QUEUE_SEL, 0).unwrap();
        wr(&mut t, &mem, reg::QUEUE_NUM, 16).unwrap();
        // Rings outside guest memory.
        wr(&mut t, &mem, reg::QUEUE_DESC_LOW, 0xf000_0000).unwrap();
        assert!(matches!(
            wr(&mut t, &mem, reg::QUEUE_READY, 1),
            Err(MmioError::InvalidQueueAddresses { index: 0 })
        ));
        assert_eq!(rd(&mut t, reg::QUEUE_READY), 0);
        // Misaligned descriptor table (16-byte alignment).
        wr(&mut t, &mem, reg::QUEUE_DESC_LOW, 0x1008).unwrap();
        wr(&mut t, &mem, reg::QUEUE_DRIVER_LOW, AVAIL as u32).unwrap();
        wr(&mut t, &mem, reg::QUEUE_DEVICE_LOW, USED as u32).unwrap();
        assert!(matches!(
            wr(&mut t, &mem, reg::QUEUE_READY, 1),
            Err(MmioError::InvalidQueueAddresses { .. })
        ));
        wr(&mut t, &mem, reg::QUEUE_DESC_LOW, DESC as u32).unwrap();
        wr(&mut t, &mem, reg::QUEUE_READY, 1).unwrap();
        assert!(matches!(
            wr(&mut t, &mem, reg::QUEUE_NUM, 8),
            Err(MmioError::QueueConfigWhileReady { index: 0 })
        ));
    }

    #[test]
    fn access_width_and_unknown_registers() {
        let mem = memory();
        let mut t = transport(false);
        let mut two = [0u8; 2];
        assert!(matches!(
            t.read(reg::STATUS, &mut two),
            Err(MmioError::BadAccessWidth { len: 2, .. })
        ));
        assert!(matches!(
            t.write(&mem, reg::STATUS + 1, &[0; 4]),
            Err(MmioError::BadAccessWidth { .. })
        ));
        let mut four = [0u8; 4];
        assert!(matches!(
            t.read(0x0d0, &mut four),
            Err(MmioError::InvalidRegister {
                offset: 0xd0,
                write: false
            })
        ));
        assert!(matches!(
            wr(&mut t, &mem, reg::MAGIC_VALUE, 1),
            Err(MmioError::InvalidRegister { write: true, .. })
        ));
        // Config space accepts byte reads.
        let mut one = [0u8; 1];
        t.read(reg::CONFIG, &mut one).unwrap();
        assert_eq!(one[0], 8);
        t.read(reg::CONFIG + 0x1000, &mut one).unwrap();
        assert_eq!(one[0], 0);
    }

    #[test]
    fn vsock_transport_identifies_and_has_three_queues() {
        let dir = tempfile::tempdir().unwrap();
        let muxer = vsock::muxer::VsockMuxer::bind(3, &dir.path().join("v.sock")).unwrap();
        let mut t = MmioTransport::new_vsock(VsockDevice::new(3, muxer));
        assert_eq!(rd(&mut t, reg::DEVICE_ID), 19);
        assert_eq!(rd(&mut t, reg::DEVICE_FEATURES), 0);
        let mem = memory();
        wr(&mut t, &mem, reg::DEVICE_FEATURES_SEL, 1).unwrap();
        assert_eq!(rd(&mut t, reg::DEVICE_FEATURES), 1);
        let mut cid = [0u8; 8];
        t.read(reg::CONFIG, &mut cid).unwrap();
        assert_eq!(u64::from_le_bytes(cid), 3);
        for index in 0..3 {
            wr(&mut t, &mem, reg::QUEUE_SEL, index).unwrap();
            assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 256);
        }
        wr(&mut t, &mem, reg::QUEUE_SEL, 3).unwrap();
        assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 0);
        assert!(t.vsock().is_some());
        assert!(t.pump_vsock(&mem).is_none(), "nothing before DRIVER_OK");
    }
}
