//! Debian repository client and solver.
//!
//! Pure parts (no IO, fuzzable): [`deb822`], [`version`], [`relation`], [`packages`],
//! [`solver`], [`lock`]. IO edge: [`sources`] (host apt configuration), [`release`]
//! (InRelease + OpenPGP verification), [`client`] (HTTP), [`cache`], [`fetch`], [`deb`]
//! (safe `.deb` unpacking). Progress goes through [`reporter::ResolverReporter`]; this
//! crate never prints.
#![cfg_attr(
    test,
    allow(
        clippy::too_many_lines,
        reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
    )
)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod client;
pub mod deb;
pub mod deb822;
pub mod fetch;
pub mod index_cache;
pub mod lock;
pub mod packages;
pub mod relation;
pub mod release;
pub mod reporter;
pub mod solver;
pub mod sources;
pub mod version;
