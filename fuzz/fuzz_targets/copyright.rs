//! DEP-5 (machine-readable) copyright files from untrusted packages, turned into SPDX
//! licence expressions for the SBOM: never a panic, and the result is never empty text.
//! Seeds (`fuzz/corpus/copyright/`): the unit-test inputs of `builder::sbom`.
#![no_main]

use builder::sbom::licenses_from_copyright;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(expression) = licenses_from_copyright(text) {
        assert!(!expression.trim().is_empty(), "empty expression for {text:?}");
    }
});
