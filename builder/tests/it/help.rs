//! `--help` is part of the interface: snapshot it.

use crate::common::TestDir;

#[test]
fn help() {
    let dir = TestDir::new();
    let out = jeos_snapshot!("help", dir.filters(), dir.jeos().arg("--help"));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_help() {
    let dir = TestDir::new();
    let out = jeos_snapshot!(
        "check_help",
        dir.filters(),
        dir.jeos().args(["check", "--help"])
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn new_help() {
    let dir = TestDir::new();
    let out = jeos_snapshot!(
        "new_help",
        dir.filters(),
        dir.jeos().args(["new", "--help"])
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn unknown_subcommand_is_usage_error() {
    let dir = TestDir::new();
    let out = jeos_snapshot!(
        "unknown_subcommand",
        dir.filters(),
        dir.jeos().arg("frobnicate")
    );
    assert_eq!(out.status.code(), Some(2));
}
