//! Embedded KVM runner.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
