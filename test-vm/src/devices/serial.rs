//! COM1: a 16550 UART (vm-superio) whose transmitted bytes go to a writer (the console
//! capture) and whose interrupt line is an eventfd (an irqfd on IRQ 4 in a VM).

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// Interrupt line backed by an eventfd (registered as a KVM irqfd).
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// Errors of the serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The output writer or the interrupt line failed.
    #[error("serial port write at offset {offset} failed: {message}")]
    Write {
        /// Register offset.
        offset: u8,
        /// vm-superio's error, rendered (it is not a `std::error::Error`).
        message: String,
    },
}

/// The UART.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART writing transmitted bytes to `out` and signalling `interrupt`.
    #[must_use]
    pub fn new(interrupt: EventFd, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: Serial::new(EventFdTrigger(interrupt), out),
        }
    }

    /// Reads register `offset` (0..8).
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Queues bytes the guest reads as serial input (raises the receive interrupt);
    /// returns how many fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Writes register `offset` (0..8).
    ///
    /// # Errors
    ///
    /// [`SerialError::Write`] when the output or interrupt fails.
    pub fn write(&mut self, offset: u8, value: u8) -> Result<(), SerialError> {
        self.uart
            .write(offset, value)
            .map_err(|e| SerialError::Write {
                offset,
                message: format!("{e:?}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn device() -> (SerialDevice, Shared, EventFd) {
        let out = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = SerialDevice::new(irq.try_clone().unwrap(), Box::new(out.clone()));
        (dev, out, irq)
    }

    #[test]
    fn thr_bytes_reach_the_writer_and_lsr_reports_empty() {
        let (mut dev, out, irq) = device();
        for b in b"hi\n" {
            dev.write(0, *b).unwrap();
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        // LSR: THR empty (0x20) and transmitter idle (0x40).
        assert_eq!(dev.read(5) & 0x60, 0x60);
        // No interrupt while IER is 0.
        assert!(irq.read().is_err());
    }

    #[test]
    fn thr_empty_interrupt_when_enabled() {
        let (mut dev, _out, irq) = device();
        dev.write(1, 0x02).unwrap(); // IER: THR empty
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(dev.read(2) & 0x0f, 0x02); // IIR: THR empty pending
        assert_eq!(dev.read(2) & 0x01, 0x01); // reading IIR clears it
        dev.write(0, b'x').unwrap();
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(dev.read(1), 0x02);
    }

    #[test]
    fn dlab_selects_divisor_registers() {
        let (mut dev, out, _irq) = device();
        dev.write(3, 0x80).unwrap(); // LCR: DLAB
        dev.write(0, 0x01).unwrap(); // divisor low, not data
        assert_eq!(dev.read(0), 0x01);
        dev.write(3, 0x03).unwrap();
        assert!(out.0.lock().unwrap().is_empty());
    }
}
