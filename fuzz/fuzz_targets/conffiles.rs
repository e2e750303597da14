//! The `conffiles` member of untrusted packages: every path kept is absolute and a single
//! line, whatever the input. Seeds (`fuzz/corpus/conffiles/`): the unit-test inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use package_resolver::deb::parse_conffiles;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for path in parse_conffiles(text) {
        assert!(path.starts_with('/'), "{path:?}");
        assert!(!path.contains('\n'), "{path:?}");
    }
});
