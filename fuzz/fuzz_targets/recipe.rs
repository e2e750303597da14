//! Recipe parser + validator on arbitrary UTF-8: must never panic, whatever the input.
//! Without a base directory, validation never touches the filesystem.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match builder::recipe::parse_str("fuzz.toml", text, None) {
        Ok(recipe) => {
            // A valid recipe has a valid name and at least one package.
            assert!(!recipe.appliance.name.as_str().is_empty());
            assert!(!recipe.packages.install.is_empty());
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty());
            for error in &errors.errors {
                // Spans stay inside the text and line/column computation never panics.
                assert!(error.span.end <= text.len());
                let _ = error.line_column();
                let _ = error.kind.help();
            }
        }
    }
});
