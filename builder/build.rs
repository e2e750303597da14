//! Builds `guest-init` as a static-pie x86-64 binary and hands its path to the `jeos`
//! binary, which embeds it. The appliance's PID 1 therefore comes from `cargo build`
//! itself: no musl target, no extra toolchain, only glibc's static archives, which
//! `libc6-dev` (a dependency of gcc) ships.
//!
//! The nested cargo uses its own target directory inside `OUT_DIR`, so it never waits on
//! the lock of the outer build.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("builder lives inside the workspace");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let guest_src = workspace.join("guest-init");
    println!("cargo:rerun-if-changed={}", guest_src.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        guest_src.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );

    // Escape hatch for development: use a guest-init built elsewhere.
    println!("cargo:rerun-if-env-changed=JEOS_GUEST_INIT_PREBUILT");
    if let Some(prebuilt) = env::var_os("JEOS_GUEST_INIT_PREBUILT") {
        println!(
            "cargo:rustc-env=JEOS_GUEST_INIT={}",
            PathBuf::from(prebuilt).display()
        );
        return;
    }

    let target_dir = out_dir.join("guest-init-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--profile",
            "guest-init",
            "-p",
            "guest-init",
            "--bin",
            "guest-init",
        ])
        .args(["--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .expect("failed to run cargo for guest-init");
    assert!(status.success(), "building the static guest-init failed");
    let binary = target_dir
        .join(GUEST_TARGET)
        .join("guest-init")
        .join("guest-init");
    assert!(
        binary.is_file(),
        "guest-init binary missing at {}",
        binary.display()
    );
    println!("cargo:rustc-env=JEOS_GUEST_INIT={}", binary.display());
}
