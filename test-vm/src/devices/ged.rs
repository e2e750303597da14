//! The ACPI Generic Event Device (ACPI 6.5 §5.6.9, `ACPI0013`) and the host's power
//! button.
//!
//! Hardware-reduced ACPI has no fixed power button and no SCI, so the button is a
//! control-method device (`PNP0C0C`) that the DSDT's GED notifies: the host sets an event
//! bit and raises the GED's interrupt; the OS runs the GED's `_EVT`, which reads the event
//! register (a read clears it) and, for [`EVENT_POWER_BUTTON`], does
//! `Notify(\_SB.PWRB, 0x80)`; Linux's `button` driver turns that into `KEY_POWER`, which
//! guest-init answers with an ordered shutdown ending in S5.
//!
//! [`PowerButton`] is the host's handle (cloneable, usable from any thread, before or
//! during the run). The interrupt is edge-triggered and an edge the guest cannot take yet
//! (its GED driver not bound, the IOAPIC pin masked) is lost, so while an event stays
//! unread the runner raises it again every [`REPULSE_INTERVAL`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

/// Event bit: the power button was pressed.
pub const EVENT_POWER_BUTTON: u32 = 1;
/// How long the guest gets to power off after a press before it is stopped hard.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);
/// How often an unread event's interrupt is raised again.
pub const REPULSE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Inner {
    pending: AtomicU32,
    pressed_at: OnceLock<Instant>,
    grace: Duration,
    /// The GED's interrupt line and when it was last raised, once the VM exists.
    irq: Mutex<Option<(EventFd, Instant)>>,
}

/// The host side of the ACPI power button: [`press`](PowerButton::press) asks the guest
/// for a clean shutdown; the runner stops the VM hard if it has not powered off
/// [`grace`](PowerButton::grace) after the first press.
#[derive(Debug, Clone)]
pub struct PowerButton {
    inner: Arc<Inner>,
}

impl Default for PowerButton {
    fn default() -> Self {
        Self::new(DEFAULT_GRACE)
    }
}

impl PowerButton {
    /// A button whose press gives the guest `grace` to power off.
    #[must_use]
    pub fn new(grace: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                pending: AtomicU32::new(0),
                pressed_at: OnceLock::new(),
                grace,
                irq: Mutex::new(None),
            }),
        }
    }

    /// Presses the button: sets the event bit and raises the GED interrupt (at once if the
    /// VM is running, else when it starts). The grace period runs from the first press.
    ///
    /// # Errors
    ///
    /// Writing the interrupt eventfd failed (the event stays pending and is raised again).
    pub fn press(&self) -> std::io::Result<()> {
        let _ = self.inner.pressed_at.set(Instant::now());
        self.inner
            .pending
            .fetch_or(EVENT_POWER_BUTTON, Ordering::SeqCst);
        self.raise()
    }

    /// Whether the button was pressed.
    #[must_use]
    pub fn is_pressed(&self) -> bool {
        self.inner.pressed_at.get().is_some()
    }

    /// When the button was first pressed.
    #[must_use]
    pub fn pressed_at(&self) -> Option<Instant> {
        self.inner.pressed_at.get().copied()
    }

    /// The grace period after a press.
    #[must_use]
    pub fn grace(&self) -> Duration {
        self.inner.grace
    }

    /// True once a press has gone unanswered for the grace period.
    #[must_use]
    pub fn grace_expired(&self) -> bool {
        self.pressed_at()
            .is_some_and(|at| at.elapsed() >= self.inner.grace)
    }

    /// Connects the button to the VM's GED interrupt; a press made before is raised now.
    pub(crate) fn attach(&self, irq: EventFd) -> std::io::Result<()> {
        let now = Instant::now();
        *self.irq_slot() = Some((irq, now));
        if self.inner.pending.load(Ordering::SeqCst) != 0 {
            self.raise()?;
        }
        Ok(())
    }

    /// Raises the interrupt again if an event has stayed unread for [`REPULSE_INTERVAL`].
    pub(crate) fn repulse(&self) {
        if self.inner.pending.load(Ordering::SeqCst) == 0 {
            return;
        }
        let due = self
            .irq_slot()
            .as_ref()
            .is_some_and(|(_, last)| last.elapsed() >= REPULSE_INTERVAL);
        if due {
            let _ = self.raise();
        }
    }

    /// The guest's read of the event register: the pending bits, cleared.
    pub(crate) fn take_events(&self) -> u32 {
        self.inner.pending.swap(0, Ordering::SeqCst)
    }

    fn irq_slot(&self) -> std::sync::MutexGuard<'_, Option<(EventFd, Instant)>> {
        self.inner
            .irq
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn raise(&self) -> std::io::Result<()> {
        let mut slot = self.irq_slot();
        match slot.as_mut() {
            Some((irq, last)) => {
                *last = Instant::now();
                irq.write(1)
            }
            None => Ok(()),
        }
    }
}

/// The GED's event register on the bus (a DWord at
/// [`GED_MMIO_BASE`](crate::arch::x86_64::layout::GED_MMIO_BASE)).
#[derive(Debug, Default)]
pub struct Ged {
    /// The host's button; without one the register reads 0.
    pub button: Option<PowerButton>,
}

impl Ged {
    /// A read at `offset` into the register window: the pending events (little-endian,
    /// cleared by the read) at offset 0; other offsets and sizes read as zeros and clear
    /// nothing, so a stray byte access cannot eat an event.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset != 0 || data.len() != 4 {
            return;
        }
        if let Some(button) = &self.button {
            data.copy_from_slice(&button.take_events().to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(ged: &Ged) -> u32 {
        let mut data = [0xffu8; 4];
        ged.read(0, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn register_reports_a_press_once() {
        let button = PowerButton::new(Duration::from_secs(5));
        let ged = Ged {
            button: Some(button.clone()),
        };
        assert_eq!(read(&ged), 0);
        assert_eq!(button.pressed_at(), None);
        button.press().unwrap();
        assert!(button.pressed_at().is_some());
        assert!(!button.grace_expired());
        // A byte read or another offset neither reports nor clears the event.
        let mut byte = [0xffu8; 1];
        ged.read(0, &mut byte);
        assert_eq!(byte, [0]);
        let mut other = [0xffu8; 4];
        ged.read(4, &mut other);
        assert_eq!(other, [0; 4]);
        assert_eq!(read(&ged), EVENT_POWER_BUTTON);
        assert_eq!(read(&ged), 0, "reading clears the event");
    }

    #[test]
    fn without_a_button_the_register_reads_zero() {
        assert_eq!(read(&Ged::default()), 0);
    }

    #[test]
    fn press_raises_the_interrupt_now_or_on_attach() {
        let early = PowerButton::new(Duration::from_secs(5));
        early.press().unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        early.attach(irq.try_clone().unwrap()).unwrap();
        assert_eq!(
            irq.read().unwrap(),
            1,
            "a press before the VM ran is raised"
        );

        let button = PowerButton::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        button.attach(irq.try_clone().unwrap()).unwrap();
        assert!(irq.read().is_err(), "nothing pending, nothing raised");
        button.press().unwrap();
        assert_eq!(irq.read().unwrap(), 1);
        // Unread: raised again only after the interval.
        button.repulse();
        assert!(irq.read().is_err());
        if let Some((_, last)) = button.irq_slot().as_mut() {
            *last -= REPULSE_INTERVAL;
        }
        button.repulse();
        assert_eq!(irq.read().unwrap(), 1);
        // Read by the guest: no more pulses.
        assert_eq!(button.take_events(), EVENT_POWER_BUTTON);
        if let Some((_, last)) = button.irq_slot().as_mut() {
            *last -= REPULSE_INTERVAL;
        }
        button.repulse();
        assert!(irq.read().is_err());
    }

    #[test]
    fn grace_expires_after_the_first_press() {
        let button = PowerButton::new(Duration::ZERO);
        assert!(!button.grace_expired());
        button.press().unwrap();
        assert!(button.grace_expired());
        assert_eq!(button.grace(), Duration::ZERO);
    }
}
