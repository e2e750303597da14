//! The binary outside a VM: it must refuse to act as init when it is not PID 1.

use std::process::Command;

#[test]
fn refuses_to_run_unless_pid_1() {
    let output = Command::new(env!("CARGO_BIN_EXE_guest-init"))
        .output()
        .expect("run guest-init");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must run as PID 1"), "{stderr}");
    assert!(output.stdout.is_empty());
}
