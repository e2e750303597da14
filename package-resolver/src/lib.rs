//! Debian repository client and solver.
#![forbid(unsafe_code)]
