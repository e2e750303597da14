//! Integration tests of image-writer (one binary, see STYLE.md).
#![allow(
    clippy::too_many_lines,
    reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
)]
#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests are not unit tests"
)]

mod disk;
mod publish;

/// A missing prerequisite (a host tool, an input of `scripts/test-inputs`): the test
/// returns after a loud `SKIPPED` line, and fails instead under `CI=true`, where every
/// prerequisite is installed and given.
#[expect(clippy::print_stderr, reason = "tests report skipped checks on stderr")]
pub fn skip(message: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "prerequisite missing under CI=true: {message}"
    );
    eprintln!("SKIPPED: {message}");
}
