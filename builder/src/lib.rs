//! jeos: recipe model, build pipeline, cache and progress rendering.
//!
//! The `jeos` binary (src/main.rs) is the only place that renders output or exits.
#![cfg_attr(
    test,
    allow(
        clippy::too_many_lines,
        reason = "test functions are scripts of steps; the 150-line limit is for the code they test"
    )
)]
#![forbid(unsafe_code)]
#![allow(
    clippy::result_large_err,
    reason = "errors end a command once; their size costs nothing measurable, and boxing every library error would hide the variants from matching"
)]

pub mod audit;
pub mod boot;
pub mod cli;
pub mod convertible;
pub mod deploy;
pub mod host_check;
pub mod init_tasks;
pub mod kernel;
pub mod loader_files;
pub mod no_space;
pub mod ovf_hardware;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod publish;
pub mod recipe;
pub mod reporters;
pub mod resolve;
pub mod rootfs;
pub mod sbom;
pub mod stepcache;
pub mod unpacked;

/// The static guest-init binary (the appliance's PID 1), built by `build.rs`.
pub static GUEST_INIT: &[u8] = include_bytes!(env!("JEOS_GUEST_INIT"));

/// Seeds for the fuzz targets, written by the unit tests whose inputs they are.
#[cfg(test)]
mod fuzz_seed {
    /// Writes a seed input for fuzz target `target` (`fuzz/corpus/<target>/`, ignored by
    /// git): the fuzz crate's corpora come from these unit-test inputs.
    pub fn write_seed(target: &str, name: &str, bytes: &[u8]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
