//! Library side of guest-init: only the dependency-free [`protocol`] module, which the
//! host-side runner (test-vm) uses to parse the result lines PID 1 prints.

pub mod protocol;
