//! Integration tests of image-writer (one binary, see STYLE.md).
#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests are not unit tests"
)]

mod disk;
mod publish;
