//! The dpkg database jeos writes from untrusted `control` files, `conffiles` and
//! `md5sums` members: rendering `/var/lib/dpkg/status` and planning `info/` must never
//! panic, and every status it renders must parse back as deb822 paragraphs naming each
//! package once.
//! Input: `control` text, then optionally `\0` and `conffiles` text, `\0` and `md5sums`.
//! Seeds (`fuzz/corpus/dpkg_control/`): the unit-test inputs of `rootfs::dpkg`.
#![no_main]

use builder::rootfs::dpkg::{DpkgPackage, plan_dpkg, render_status};
use builder::rootfs::tree::Tree;
use libfuzzer_sys::fuzz_target;
use package_resolver::deb::parse_conffiles;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let control = parts.next().unwrap_or_default().to_owned();
    let conffiles = parse_conffiles(parts.next().unwrap_or_default());
    let md5sums = parts.next().map(str::to_owned);
    let package = DpkgPackage {
        control,
        conffiles: conffiles
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), (i % 2 == 0).then(|| "0".repeat(32))))
            .collect(),
        files: conffiles.iter().map(|p| p.trim_start_matches('/').to_owned()).collect(),
        md5sums,
    };
    let packages = [package.clone(), package];
    if let Ok(status) = render_status(&packages) {
        assert!(
            package_resolver::deb822::parse(&status).is_ok(),
            "rendered status does not parse: {status:?}"
        );
    }
    let _ = plan_dpkg(&packages, &Tree::new(0));
});
