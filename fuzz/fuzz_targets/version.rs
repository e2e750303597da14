//! Fuzz Debian version parsing and ordering: no panics, `Display` round-trips, and the
//! ordering is reflexive and antisymmetric.
#![no_main]

use libfuzzer_sys::fuzz_target;
use package_resolver::version::Version;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (left, right) = text.split_once('\n').unwrap_or((text, "1.0"));
    let (Ok(a), Ok(b)) = (left.parse::<Version>(), right.parse::<Version>()) else {
        return;
    };
    assert_eq!(a.to_string(), left.trim());
    assert_eq!(a.to_string().parse::<Version>().as_ref(), Ok(&a));
    assert_eq!(a.cmp(&a), std::cmp::Ordering::Equal);
    assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
});
