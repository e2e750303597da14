//! Fuzz relationship-field parsing: no panics, and re-parsing the normalised `Display`
//! output gives the same clauses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use package_resolver::relation;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = relation::parse_relation(text);
    let _ = relation::parse_provides(text, "amd64");
    if let Ok(clauses) = relation::parse_relations(text, "amd64") {
        let normalised: Vec<String> = clauses.iter().map(ToString::to_string).collect();
        let joined = normalised.join(", ");
        let again = relation::parse_relations(&joined, "amd64").expect("normalised text parses");
        assert_eq!(again, clauses);
    }
});
