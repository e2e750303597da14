//! The vsock device end to end under /dev/kvm with a synthetic guest driver: the host
//! connects to the VM's Unix socket with `CONNECT 80`, the guest's rx buffer receives
//! the connection REQUEST, and forwards bind their host ports before the VM starts.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use test_vm::runner::{RunnerError, run_embedded};
use test_vm::{ExitReason, NoReporter, PortForward, RunConfig, check_host};

use crate::guest::assemble;

/// A virtio-vsock driver in 40 instructions: virtio 1.x handshake on the device in
/// slot 0 (no disk), one 4 KiB rx buffer, notify, poll the used ring, print the packet's
/// op, destination port and source CID, power off.
const VSOCK_DRIVER: &str = r#"
    mov rbx, 0xd0000000
    mov dword ptr [rbx + 0x70], 0
    mov dword ptr [rbx + 0x70], 1
    mov dword ptr [rbx + 0x70], 3
    mov dword ptr [rbx + 0x24], 1
    mov dword ptr [rbx + 0x20], 1
    mov dword ptr [rbx + 0x24], 0
    mov dword ptr [rbx + 0x20], 0
    mov dword ptr [rbx + 0x70], 0xb
    mov dword ptr [rbx + 0x30], 0
    mov dword ptr [rbx + 0x38], 16
    mov dword ptr [rbx + 0x80], 0x300000
    mov dword ptr [rbx + 0x84], 0
    mov dword ptr [rbx + 0x90], 0x301000
    mov dword ptr [rbx + 0x94], 0
    mov dword ptr [rbx + 0xa0], 0x302000
    mov dword ptr [rbx + 0xa4], 0
    mov dword ptr [rbx + 0x44], 1
    mov dword ptr [rbx + 0x70], 0xf
    lea rdi, [rip + s_id]
    call puts
    mov eax, dword ptr [rbx + 0x8]
    call puthex
    call nl
    mov rdi, 0x300000
    mov rax, 0x303000
    mov qword ptr [rdi], rax
    mov dword ptr [rdi + 8], 4140
    mov word ptr [rdi + 12], 2
    mov word ptr [rdi + 14], 0
    mov rdi, 0x301000
    mov word ptr [rdi], 0
    mov word ptr [rdi + 4], 0
    mov word ptr [rdi + 2], 1
    mov dword ptr [rbx + 0x50], 0
    mov rsi, 0x302002
1:  pause
    movzx eax, word ptr [rsi]
    test eax, eax
    jz 1b
    mov rsi, 0x303000
    lea rdi, [rip + s_op]
    call puts
    movzx eax, word ptr [rsi + 30]
    call puthex
    call nl
    lea rdi, [rip + s_port]
    call puts
    mov eax, dword ptr [rsi + 20]
    call puthex
    call nl
    lea rdi, [rip + s_src]
    call puts
    mov rax, qword ptr [rsi]
    call puthex
    call nl
    mov al, 0x34
    mov dx, 0x3c0
    out dx, al
9:  jmp 9b
s_id: .asciz "ID "
s_op: .asciz "OP "
s_port: .asciz "PORT "
s_src: .asciz "SRC "
"#;

fn kvm_or_skip() -> bool {
    let status = check_host();
    crate::prerequisite(status.can_open(), status.reason())
}

#[test]
fn host_connect_reaches_the_guest_rx_queue() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(code) = assemble(dir.path(), "vsock", VSOCK_DRIVER) else {
        return;
    };
    let kernel = dir.path().join("vsock.bzImage");
    std::fs::write(&kernel, test_vm::boot::synthetic_bzimage(&code)).unwrap();
    let socket = dir.path().join("v.sock");
    let host_socket = socket.clone();
    let host = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut stream) = UnixStream::connect(&host_socket) {
                stream.write_all(b"CONNECT 80\n").unwrap();
                return Some(stream);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let mut config = RunConfig::new(kernel, "", dir.path().join("console.log"));
    config.memory_mib = 32;
    config.timeout = Duration::from_secs(20);
    config.vsock_socket = Some(socket);
    let outcome = run_embedded(config, Arc::new(NoReporter)).expect("the VM starts");
    let _stream = host.join().unwrap().expect("the socket appeared");
    assert_eq!(
        outcome.exit,
        ExitReason::PowerOff,
        "{}",
        outcome.console_tail
    );
    let lines: Vec<&str> = outcome.console_tail.lines().collect();
    assert_eq!(
        lines,
        [
            "ID 0000000000000013",
            "OP 0000000000000001",
            "PORT 0000000000000050",
            "SRC 0000000000000002"
        ],
        "{:?}",
        outcome.device_warnings
    );
    assert!(
        outcome.device_warnings.is_empty(),
        "{:?}",
        outcome.device_warnings
    );
}

#[test]
fn a_busy_forward_port_fails_before_the_boot() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("k.bzImage");
    std::fs::write(&kernel, test_vm::boot::synthetic_bzimage(&[0xf4])).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = RunConfig::new(kernel, "", dir.path().join("console.log"));
    config.memory_mib = 32;
    config.port_forwards = vec![PortForward {
        host: port,
        guest: 80,
    }];
    let error = run_embedded(config, Arc::new(NoReporter)).unwrap_err();
    assert!(matches!(error, RunnerError::Forward(_)), "{error:?}");
    assert!(
        test_vm::runner::error_chain(&error).contains(&format!("127.0.0.1:{port}")),
        "{}",
        test_vm::runner::error_chain(&error)
    );
}
