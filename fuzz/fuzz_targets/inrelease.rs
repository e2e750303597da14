//! InRelease files come from the network before their signature is checked: splitting the
//! cleartext framework and parsing the Release paragraph must never panic, and the text that
//! is parsed must be exactly the text that is signed (modulo `\n` vs `\r\n`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use package_resolver::release::{parse_release, split_cleartext};

fuzz_target!(|data: &[u8]| {
    if let Ok(clear) = split_cleartext(data) {
        assert_eq!(
            clear.signed_bytes,
            clear
                .text
                .strip_suffix('\n')
                .expect("text ends with a newline")
                .replace('\n', "\r\n")
                .into_bytes()
        );
        let _ = parse_release(&clear.text, clear.first_text_line);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_release(text, 1);
    }
});
