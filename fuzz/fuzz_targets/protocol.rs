//! Protocol lines come from the guest console, so any bytes may arrive: parsing must never
//! panic, and every line that parses must format back to a line that parses to the same event.
#![no_main]

use guest_init::protocol::{format, parse_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Some(Ok(event)) = parse_line(&line) {
        let again = format(&event);
        assert_eq!(parse_line(&again), Some(Ok(event)));
    }
});
