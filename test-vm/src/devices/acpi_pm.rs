//! Hardware-reduced ACPI sleep control/status registers (ACPI 6.5 §4.8.3.7), the S5
//! (power-off) path: the OS writes `SLP_TYPx << 2 | SLP_EN` to the sleep control register
//! after evaluating `\_S5`.

use crate::acpi::S5_SLEEP_TYPE;

/// `SLP_EN` bit of the sleep control register.
pub const SLP_EN: u8 = 1 << 5;

/// What a write asked of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepEvent {
    /// Nothing (another sleep state, or `SLP_EN` clear).
    None,
    /// Enter S5: power off.
    PowerOff,
}

/// Decodes a write to the sleep control register.
#[must_use]
pub fn write_sleep_control(value: u8) -> SleepEvent {
    let sleep_type = (value >> 2) & 0x7;
    if value & SLP_EN != 0 && sleep_type == S5_SLEEP_TYPE {
        SleepEvent::PowerOff
    } else {
        SleepEvent::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_with_slp_en_powers_off() {
        assert_eq!(write_sleep_control((5 << 2) | SLP_EN), SleepEvent::PowerOff);
        assert_eq!(write_sleep_control(5 << 2), SleepEvent::None);
        assert_eq!(write_sleep_control((3 << 2) | SLP_EN), SleepEvent::None);
    }
}
