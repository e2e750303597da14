//! Library side of guest-init, the appliance's PID 1.
//!
//! It exposes what other crates share with the binary, and nothing that touches the guest:
//! - [`protocol`]: the smoke-test result-line format guest-init prints and test-vm parses;
//!   dependency-free (use `guest-init = { default-features = false }` to get only this).
//! - `config` (feature `config`, on by default): the `/etc/jeos/init.json` schema, so builder
//!   writes the file with the same types the init reads.
//! - `http` (feature `config`): the minimal HTTP/1.1 client of `http` checks and probes,
//!   and the verdict on a response, shared with builder's host-side checks.
//! - `deploy` (feature `config`): parsers for deploy-time configuration (OVF environment,
//!   NoCloud seed, ISO 9660, boot-time templates), pure and fuzzable.
//!
//! The binary (`src/main.rs`, feature `bin`) holds everything that runs inside the guest:
//! mounting, module loading, switch-root, DHCP, the service supervisor and the checks.
//!
//! ```
//! use guest_init::protocol::{format, Event};
//! let line = format(&Event::Error { detail: "no network".into() });
//! assert_eq!(line, "JEOS1 error detail=no%20network");
//! ```
#![cfg_attr(
    test,
    allow(
        clippy::too_many_lines,
        reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
    )
)]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "config")]
pub mod deploy;
#[cfg(feature = "config")]
pub mod http;
pub mod protocol;
