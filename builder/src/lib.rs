//! jeos: recipe model, build pipeline, cache and progress rendering.
#![forbid(unsafe_code)]

/// The static guest-init binary (the appliance's PID 1), built by `build.rs`.
pub static GUEST_INIT: &[u8] = include_bytes!(env!("JEOS_GUEST_INIT"));
