//! Fuzz the deb822 parser: arbitrary text must never panic, every parsed value must be
//! reachable through `get`, and the lazy iterator must agree with `parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use package_resolver::deb822;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = deb822::parse(text);
    let lazy: Result<Vec<_>, _> = deb822::paragraphs(text).collect();
    assert_eq!(parsed, lazy);
    if let Ok(paragraphs) = parsed {
        for paragraph in &paragraphs {
            assert!(!paragraph.is_empty());
            for field in paragraph.fields() {
                assert_eq!(paragraph.get(field.name()), Some(field.value()));
                assert!(field.line() >= paragraph.line());
            }
        }
    }
});
