//! A minimal i8042 keyboard controller: enough for the guest to reset the machine by
//! writing 0xFE ("pulse output line 0", the CPU reset line) to the command port, which is
//! what Linux's `reboot=k` does and where the FADT `RESET_REG` points.

/// Command: read controller configuration byte.
pub const CMD_READ_CONFIG: u8 = 0x20;
/// Command: write controller configuration byte (next data byte).
pub const CMD_WRITE_CONFIG: u8 = 0x60;
/// Command: self test (answers 0x55).
pub const CMD_SELF_TEST: u8 = 0xaa;
/// Command: pulse the reset line.
pub const CMD_RESET_CPU: u8 = 0xfe;
/// Status: output buffer full.
pub const STATUS_OUTPUT_FULL: u8 = 0x01;
/// Status: system flag (POST passed).
pub const STATUS_SYSTEM_FLAG: u8 = 0x04;

/// What a port write asked of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum I8042Event {
    /// Nothing visible outside the device.
    None,
    /// The guest pulsed the CPU reset line.
    Reset,
}

/// The controller state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct I8042 {
    output: Option<u8>,
    config: u8,
    expect_config: bool,
}

impl I8042 {
    /// Reads the status register (command port 0x64).
    #[must_use]
    pub fn read_status(&self) -> u8 {
        STATUS_SYSTEM_FLAG | u8::from(self.output.is_some())
    }

    /// Reads the data port (0x60).
    pub fn read_data(&mut self) -> u8 {
        self.output.take().unwrap_or(0)
    }

    /// Writes the command port (0x64).
    pub fn write_command(&mut self, command: u8) -> I8042Event {
        self.expect_config = false;
        match command {
            CMD_RESET_CPU => return I8042Event::Reset,
            CMD_READ_CONFIG => self.output = Some(self.config),
            CMD_WRITE_CONFIG => self.expect_config = true,
            CMD_SELF_TEST => self.output = Some(0x55),
            _ => {}
        }
        I8042Event::None
    }

    /// Writes the data port (0x60).
    pub fn write_data(&mut self, value: u8) {
        if std::mem::take(&mut self.expect_config) {
            self.config = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_is_detected() {
        let mut dev = I8042::default();
        assert_eq!(dev.write_command(0xd1), I8042Event::None);
        assert_eq!(dev.write_command(CMD_RESET_CPU), I8042Event::Reset);
    }

    #[test]
    fn self_test_and_config_round_trip() {
        let mut dev = I8042::default();
        assert_eq!(dev.read_status() & STATUS_OUTPUT_FULL, 0);
        dev.write_command(CMD_SELF_TEST);
        assert_eq!(dev.read_status() & STATUS_OUTPUT_FULL, 1);
        assert_eq!(dev.read_data(), 0x55);
        assert_eq!(dev.read_status() & STATUS_OUTPUT_FULL, 0);
        dev.write_command(CMD_WRITE_CONFIG);
        dev.write_data(0x47);
        dev.write_command(CMD_READ_CONFIG);
        assert_eq!(dev.read_data(), 0x47);
        dev.write_data(0x11); // not after 0x60: ignored
        dev.write_command(CMD_READ_CONFIG);
        assert_eq!(dev.read_data(), 0x47);
    }
}
