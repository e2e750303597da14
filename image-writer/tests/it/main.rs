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
