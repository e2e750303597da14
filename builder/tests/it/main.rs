//! Integration tests of the `jeos` binary.
#![allow(
    clippy::too_many_lines,
    reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
)]
#![allow(
    clippy::print_stderr,
    reason = "tests report SKIPPED and measurements on stderr"
)]
#![allow(
    clippy::tests_outside_test_module,
    reason = "an integration-test crate is test code throughout; its modules need no #[cfg(test)]"
)]

#[macro_use]
mod common;
mod appliances;
mod boot;
mod cache_cmd;
mod check;
mod deploy;
mod docs;
mod dpkg_status;
mod fleet;
mod full_disk;
mod help;
mod image_tools;
mod nested;
mod new;
mod publish;
mod resolve;
mod services;
mod stepcache;
mod supply_chain;
mod test_cmd;
mod v2v;

#[test]
fn guest_init_is_embedded_and_static() {
    let bytes = builder::GUEST_INIT;
    assert_eq!(&bytes[..4], b"\x7fELF");
}
