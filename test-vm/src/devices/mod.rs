//! Emulated devices and the bus that routes port and MMIO exits to them.
//!
//! ```text
//! port 0x3f8..0x3ff  COM1 16550 (IRQ 4)        serial.rs (the console, a log)
//! port 0x2f8..0x2ff  COM2 16550 (IRQ 3)        serial.rs (the smoke-test protocol)
//! port 0x60, 0x64    i8042 (reset)             i8042.rs
//! port 0x3c0, 0x3c1  ACPI sleep ctl/status     acpi_pm.rs
//! port 0x505         pvpanic (QEMU0001)        a guest panic stops the run
//! 0xd100_0000        ACPI GED event register   ged.rs (the power button, GSI 23)
//! 0xd000_0000 + 4K*n virtio-mmio blk (IRQ 5+n) mmio.rs + virtio_blk.rs over overlay.rs
//!                    virtio-mmio vsock         mmio.rs + vsock/ (Unix socket on the host)
//! ```
//! Other ports read as all ones and ignore writes (an absent ISA device); other MMIO reads
//! as zeros.

pub mod acpi_pm;
pub mod ged;
pub mod i8042;
pub mod mmio;
pub mod overlay;
pub mod serial;
pub mod virtio_blk;
pub mod vsock;

use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::{
    ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, GED_MMIO_BASE, GED_MMIO_SIZE,
    I8042_COMMAND_PORT, I8042_DATA_PORT, PROTOCOL_PORT_BASE, PVPANIC_PORT, SERIAL_PORT_BASE,
    VIRTIO_MMIO_SIZE,
};
use crate::memory::GuestMemoryMmap;

/// A device-level problem worth reporting; the machine keeps running.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The serial port failed to write its output.
    #[error("serial port failed")]
    Serial(#[source] serial::SerialError),
    /// The guest driver broke a virtio-mmio rule.
    #[error("virtio-mmio device at {base:#x}")]
    Mmio {
        /// Window base.
        base: u64,
        /// What was wrong.
        #[source]
        source: mmio::MmioError,
    },
    /// A virtio-blk request broke a rule or failed.
    #[error("virtio-blk device at {base:#x}")]
    VirtioBlk {
        /// Window base.
        base: u64,
        /// What was wrong.
        #[source]
        source: virtio_blk::VirtioBlkError,
    },
    /// A virtio-vsock packet or chain broke a rule.
    #[error("virtio-vsock device at {base:#x}")]
    Vsock {
        /// Window base.
        base: u64,
        /// What was wrong.
        #[source]
        source: vsock::VsockError,
    },
    /// Raising an interrupt failed.
    #[error("cannot raise the interrupt of the device at {base:#x}")]
    Interrupt {
        /// Window base.
        base: u64,
        /// eventfd error.
        #[source]
        source: std::io::Error,
    },
}

/// A machine-level event caused by a device access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusEvent {
    /// Nothing beyond the device.
    None,
    /// The guest reset the machine (i8042 0xFE or the ACPI reset register).
    Reset,
    /// The guest entered ACPI S5.
    PowerOff,
    /// The guest reported a panic on the pvpanic port.
    Panic,
}

/// pvpanic event bit: the guest panicked (the only event the device offers).
pub const PVPANIC_PANICKED: u8 = 1;

/// One virtio-mmio device on the bus.
#[derive(Debug)]
pub struct VirtioSlot {
    /// Window base.
    pub base: u64,
    /// The device.
    pub transport: mmio::MmioTransport,
    /// Its interrupt line.
    pub interrupt: EventFd,
}

/// All devices of the machine.
#[derive(Debug)]
pub struct Devices {
    /// COM1.
    pub serial: serial::SerialDevice,
    /// COM2, the protocol channel (absent: its ports read as all ones).
    pub protocol: Option<serial::SerialDevice>,
    /// The keyboard controller.
    pub i8042: i8042::I8042,
    /// virtio-mmio devices.
    pub virtio: Vec<VirtioSlot>,
    /// The ACPI Generic Event Device (the power button's event register).
    pub ged: ged::Ged,
    memory: GuestMemoryMmap,
    warnings: Vec<DeviceError>,
}

impl Devices {
    /// A bus over `memory` (used by virtio to reach the rings).
    #[must_use]
    pub fn new(memory: GuestMemoryMmap, serial: serial::SerialDevice) -> Self {
        Self {
            serial,
            protocol: None,
            i8042: i8042::I8042::default(),
            virtio: Vec::new(),
            ged: ged::Ged::default(),
            memory,
            warnings: Vec::new(),
        }
    }

    /// Device problems since the last call.
    pub fn take_warnings(&mut self) -> Vec<DeviceError> {
        std::mem::take(&mut self.warnings)
    }

    fn uart_offset(base: u16, port: u16) -> Option<u8> {
        port.checked_sub(base)
            .filter(|&o| o < 8)
            .map(|o| u8::try_from(o).expect("< 8"))
    }

    fn serial_offset(port: u16) -> Option<u8> {
        Self::uart_offset(SERIAL_PORT_BASE, port)
    }

    /// A port read.
    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        if let Some(offset) = Self::serial_offset(port) {
            *first = self.serial.read(offset);
        } else if let (Some(offset), Some(protocol)) = (
            Self::uart_offset(PROTOCOL_PORT_BASE, port),
            self.protocol.as_mut(),
        ) {
            *first = protocol.read(offset);
        } else if port == I8042_COMMAND_PORT {
            *first = self.i8042.read_status();
        } else if port == I8042_DATA_PORT {
            *first = self.i8042.read_data();
        } else if port == ACPI_SLEEP_CONTROL_PORT || port == ACPI_SLEEP_STATUS_PORT {
            *first = 0;
        } else if port == PVPANIC_PORT {
            *first = PVPANIC_PANICKED;
        }
    }

    /// A port write.
    pub fn pio_write(&mut self, port: u16, data: &[u8]) -> BusEvent {
        let Some(&value) = data.first() else {
            return BusEvent::None;
        };
        if let Some(offset) = Self::serial_offset(port) {
            if let Err(e) = self.serial.write(offset, value) {
                self.warnings.push(DeviceError::Serial(e));
            }
        } else if let (Some(offset), Some(protocol)) = (
            Self::uart_offset(PROTOCOL_PORT_BASE, port),
            self.protocol.as_mut(),
        ) {
            if let Err(e) = protocol.write(offset, value) {
                self.warnings.push(DeviceError::Serial(e));
            }
        } else if port == I8042_COMMAND_PORT {
            if self.i8042.write_command(value) == i8042::I8042Event::Reset {
                return BusEvent::Reset;
            }
        } else if port == I8042_DATA_PORT {
            self.i8042.write_data(value);
        } else if port == ACPI_SLEEP_CONTROL_PORT
            && acpi_pm::write_sleep_control(value) == acpi_pm::SleepEvent::PowerOff
        {
            return BusEvent::PowerOff;
        } else if port == PVPANIC_PORT && value & PVPANIC_PANICKED != 0 {
            return BusEvent::Panic;
        }
        BusEvent::None
    }

    fn slot(&mut self, address: u64) -> Option<(&mut VirtioSlot, u64)> {
        self.virtio.iter_mut().find_map(|slot| {
            let offset = address.checked_sub(slot.base)?;
            (offset < VIRTIO_MMIO_SIZE).then_some((slot, offset))
        })
    }

    /// An MMIO read.
    pub fn mmio_read(&mut self, address: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(offset) = address
            .checked_sub(GED_MMIO_BASE)
            .filter(|&o| o < GED_MMIO_SIZE)
        {
            self.ged.read(offset, data);
        } else if let Some((slot, offset)) = self.slot(address) {
            let base = slot.base;
            if let Err(source) = slot.transport.read(offset, data) {
                self.warnings.push(DeviceError::Mmio { base, source });
            }
        }
    }

    /// An MMIO write.
    pub fn mmio_write(&mut self, address: u64, data: &[u8]) -> BusEvent {
        let memory = self.memory.clone();
        let Some((slot, offset)) = self.slot(address) else {
            return BusEvent::None;
        };
        let base = slot.base;
        match slot.transport.write(&memory, offset, data) {
            Ok(outcome) => {
                let interrupt = if outcome.interrupt {
                    slot.interrupt.write(1).err()
                } else {
                    None
                };
                if let Some(report) = outcome.queue_report {
                    self.warnings.extend(
                        report
                            .errors
                            .into_iter()
                            .map(|source| DeviceError::VirtioBlk { base, source }),
                    );
                }
                if let Some(report) = outcome.vsock_report {
                    self.warnings.extend(
                        report
                            .errors
                            .into_iter()
                            .map(|source| DeviceError::Vsock { base, source }),
                    );
                }
                if let Some(source) = interrupt {
                    self.warnings.push(DeviceError::Interrupt { base, source });
                }
            }
            Err(source) => self.warnings.push(DeviceError::Mmio { base, source }),
        }
        BusEvent::None
    }
}

impl Devices {
    /// What the vsock host loop should poll for (empty without a vsock device).
    #[must_use]
    pub fn vsock_poll_interest(&self) -> Vec<vsock::muxer::PollInterest> {
        self.virtio
            .iter()
            .filter_map(|slot| slot.transport.vsock())
            .flat_map(|device| device.muxer.poll_interest(!device.rx_starved))
            .collect()
    }

    /// Host IO for every vsock device: accept, flush, refill rx, raise interrupts.
    pub fn pump_vsock(&mut self) {
        let memory = self.memory.clone();
        for slot in &mut self.virtio {
            let Some(report) = slot.transport.pump_vsock(&memory) else {
                continue;
            };
            let base = slot.base;
            self.warnings.extend(
                report
                    .errors
                    .into_iter()
                    .map(|source| DeviceError::Vsock { base, source }),
            );
            if report.needs_interrupt
                && let Err(source) = slot.interrupt.write(1)
            {
                self.warnings.push(DeviceError::Interrupt { base, source });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> Devices {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let serial = serial::SerialDevice::new(irq, Box::new(std::io::sink()));
        let memory = crate::devices::virtio_blk::tests::memory();
        Devices::new(memory, serial)
    }

    #[test]
    fn routes_reset_and_power_off() {
        let mut bus = devices();
        assert_eq!(bus.pio_write(0x64, &[0xfe]), BusEvent::Reset);
        assert_eq!(bus.pio_write(0x3c0, &[(5 << 2) | 0x20]), BusEvent::PowerOff);
        assert_eq!(bus.pio_write(0x80, &[0x12]), BusEvent::None);
        let mut data = [0u8; 1];
        bus.pio_read(0x3fd, &mut data);
        assert_eq!(data[0] & 0x60, 0x60);
        bus.pio_read(0x70, &mut data);
        assert_eq!(data[0], 0xff);
        // pvpanic: offers the panic event; a write of it stops the run.
        bus.pio_read(0x505, &mut data);
        assert_eq!(data[0], PVPANIC_PANICKED);
        assert_eq!(bus.pio_write(0x505, &[0]), BusEvent::None);
        assert_eq!(bus.pio_write(0x505, &[1]), BusEvent::Panic);
        // No COM2 attached: its line status reads as all ones (absent).
        bus.pio_read(0x2fd, &mut data);
        assert_eq!(data[0], 0xff);
    }

    #[test]
    fn com2_carries_its_own_bytes() {
        #[derive(Clone, Default)]
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut bus = devices();
        let com2 = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        bus.protocol = Some(serial::SerialDevice::new(irq, Box::new(com2.clone())));
        bus.pio_write(0x2f8, b"J");
        bus.pio_write(0x3f8, b"x");
        assert_eq!(com2.0.lock().unwrap().as_slice(), b"J");
        let mut data = [0u8; 1];
        bus.pio_read(0x2fd, &mut data);
        assert_eq!(data[0] & 0x60, 0x60);
    }

    #[test]
    fn mmio_errors_become_warnings() {
        let mut bus = devices();
        let backend = virtio_blk::MemoryBackend {
            bytes: vec![0; 512],
        };
        bus.virtio.push(VirtioSlot {
            base: 0xd000_0000,
            transport: mmio::MmioTransport::new_block(Box::new(backend), false),
            interrupt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        });
        let mut data = [0u8; 4];
        bus.mmio_read(0xd000_0000, &mut data);
        assert_eq!(u32::from_le_bytes(data), mmio::MAGIC_VALUE);
        bus.mmio_write(0xd000_0070, &2u32.to_le_bytes());
        let warnings = bus.take_warnings();
        assert!(matches!(
            warnings[..],
            [DeviceError::Mmio {
                base: 0xd000_0000,
                source: mmio::MmioError::StatusOutOfOrder { .. }
            }]
        ));
        bus.mmio_read(0xc000_0000, &mut data);
        assert_eq!(data, [0; 4]);
    }

    #[test]
    fn ged_register_is_on_the_mmio_bus() {
        let mut bus = devices();
        let button = ged::PowerButton::default();
        bus.ged.button = Some(button.clone());
        let mut data = [0xffu8; 4];
        bus.mmio_read(0xd100_0000, &mut data);
        assert_eq!(data, [0; 4]);
        button.press().unwrap();
        bus.mmio_read(0xd100_0000, &mut data);
        assert_eq!(u32::from_le_bytes(data), ged::EVENT_POWER_BUTTON);
        bus.mmio_read(0xd100_0000, &mut data);
        assert_eq!(data, [0; 4]);
        assert_eq!(bus.mmio_write(0xd100_0000, &[1, 0, 0, 0]), BusEvent::None);
    }
}
