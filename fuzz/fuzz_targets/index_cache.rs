//! Fuzz the parsed-index cache decoder: arbitrary bytes must never panic. Random bytes
//! rarely carry a valid SHA-256, so each input is also decoded after its digest is fixed
//! up, which exercises the table checks. A decoded index must answer every query, and
//! encoding it again must give an index that answers the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use package_resolver::index_cache;
use package_resolver::packages::PackageIndex;

fn exercise(index: &PackageIndex) -> Vec<String> {
    let mut out = Vec::new();
    for p in index.iter() {
        out.push(format!(
            "{} {} {} {} {} {} {} {:?}",
            p.name(),
            p.version(),
            p.architecture(),
            p.filename(),
            p.sha256(),
            p.source(),
            p.description(),
            p.provides().collect::<Vec<_>>()
        ));
        let _ = p.dependencies();
        let _ = p.conflicts();
    }
    for name in index.names() {
        out.push(format!("{name} {:?}", index.candidate(name).map(|p| p.id())));
    }
    for name in index.virtual_names() {
        out.push(format!("{name} {}", index.providers(name).count()));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = index_cache::decode(data);
    let mut sealed = data.to_vec();
    index_cache::reseal(&mut sealed);
    if let Ok(index) = index_cache::decode(&sealed) {
        let seen = exercise(&index);
        let again = index_cache::encode(&index).expect("a decoded index encodes");
        let back = index_cache::decode(&again).expect("an encoded index decodes");
        assert_eq!(exercise(&back), seen);
    }
});
