//! Publishing tests (in progress).
