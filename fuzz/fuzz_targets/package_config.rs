//! Package configuration jeos reads from untrusted packages: sysusers.d and tmpfiles.d
//! lines and maintainer scripts. Parsing and planning must never panic, and whatever
//! sysusers lines parse must apply to a fresh account database or fail cleanly.
//! Seeds: the unit-test inputs of `rootfs::{sysusers,tmpfiles,maintainer}`.
#![no_main]

use std::path::Path;

use builder::rootfs::accounts::Accounts;
use builder::rootfs::maintainer::{self, Script};
use builder::rootfs::specifiers::Specifiers;
use builder::rootfs::tree::Tree;
use builder::rootfs::{sysusers, tmpfiles};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let specifiers = Specifiers {
        hostname: "fuzz".into(),
        ..Specifiers::default()
    };
    let tree = Tree::new(0);
    let mut accounts = Accounts::debian_base("/bin/sh");
    if let Ok((lines, _)) = sysusers::parse_sysusers(Path::new("f.conf"), text, &specifiers) {
        let _ = sysusers::apply_sysusers(&mut accounts, &tree, &lines);
    }
    if let Ok(entries) = tmpfiles::parse_tmpfiles(Path::new("f.conf"), text, &specifiers) {
        let _ = tmpfiles::plan_tmpfiles(&entries, &tree, &accounts);
    }
    let scripts = [Script {
        package: "fuzz".into(),
        kind: "postinst".into(),
        text: text.into(),
    }];
    let (lines, _) = maintainer::scan_accounts(&scripts);
    let _ = sysusers::apply_sysusers(&mut accounts, &tree, &lines);
    let _ = maintainer::plan_maintainer(&scripts, &tree, &accounts, &Default::default());
});
