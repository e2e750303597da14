//! Synthetic guests: x86-64 machine code assembled at test time with binutils `as`/`ld`,
//! wrapped in a bzImage-shaped blob so the runner's real loader path runs.

use std::path::Path;
use std::process::Command;

/// Load address of the 64-bit entry (HIMEM_START + 0x200).
pub const ENTRY: u64 = 0x10_0200;

/// Serial, hex printing and string helpers shared by every guest.
pub const RUNTIME: &str = r#"
putc:
    push rdx
    mov dx, 0x3f8
    out dx, al
    pop rdx
    ret
puts:
    push rax
    push rdi
1:  mov al, byte ptr [rdi]
    test al, al
    jz 2f
    call putc
    inc rdi
    jmp 1b
2:  pop rdi
    pop rax
    ret
puthex:
    push rax
    push rcx
    push rbx
    mov rbx, rax
    mov ecx, 16
3:  rol rbx, 4
    mov al, bl
    and al, 0xf
    cmp al, 10
    jb 4f
    add al, 39
4:  add al, 48
    call putc
    dec ecx
    jnz 3b
    pop rbx
    pop rcx
    pop rax
    ret
space:
    push rax
    mov al, 32
    call putc
    pop rax
    ret
nl:
    push rax
    mov al, 10
    call putc
    pop rax
    ret
reset:
    mov al, 0xfe
    out 0x64, al
5:  hlt
    jmp 5b
"#;

/// Assembles `body` (Intel syntax, 64-bit, entry at the top) followed by [`RUNTIME`];
/// returns None (after printing SKIPPED) when binutils is missing.
pub fn assemble(dir: &Path, name: &str, body: &str) -> Option<Vec<u8>> {
    if !crate::prerequisite(
        Command::new("as").arg("--version").output().is_ok(),
        "binutils `as` is not installed",
    ) {
        return None;
    }
    let source = dir.join(format!("{name}.S"));
    let object = dir.join(format!("{name}.o"));
    let binary = dir.join(format!("{name}.bin"));
    let text = format!(
        ".intel_syntax noprefix\n.code64\n.text\n.globl _start\n_start:\n{body}\n{RUNTIME}\n"
    );
    std::fs::write(&source, text).unwrap();
    let status = Command::new("as")
        .args(["--64", "-o"])
        .arg(&object)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success(), "as failed for {name}");
    let status = Command::new("ld")
        .args(["-m", "elf_x86_64", "--oformat", "binary", "-N"])
        .arg(format!("-Ttext=0x{ENTRY:x}"))
        .arg("-o")
        .arg(&binary)
        .arg(&object)
        .status()
        .unwrap();
    assert!(status.success(), "ld failed for {name}");
    Some(std::fs::read(binary).unwrap())
}

/// The guest standing in for Linux: reads the zero page (E820, command line, initramfs),
/// walks RSDP → XSDT → FADT → DSDT to find the virtio-mmio window, negotiates virtio 1.x,
/// reads sector 3, writes sector 5, reads sector 5 back, prints it all and resets.
pub const LINUX_STAND_IN: &str = r#"
    mov r15, rsi
    lea rdi, [rip + s_e820]
    call puts
    movzx rax, byte ptr [r15 + 0x1e8]
    call puthex
    call nl
    movzx r12, byte ptr [r15 + 0x1e8]
    lea r13, [r15 + 0x2d0]
e820_loop:
    lea rdi, [rip + s_e820]
    call puts
    mov rax, qword ptr [r13]
    call puthex
    call space
    mov rax, qword ptr [r13 + 8]
    call puthex
    call space
    mov eax, dword ptr [r13 + 16]
    call puthex
    call nl
    add r13, 20
    dec r12
    jnz e820_loop

    lea rdi, [rip + s_cmdline]
    call puts
    mov edi, dword ptr [r15 + 0x228]
    call puts
    call nl

    lea rdi, [rip + s_initrd]
    call puts
    mov eax, dword ptr [r15 + 0x218]
    call puthex
    call space
    mov eax, dword ptr [r15 + 0x21c]
    call puthex
    call space
    mov eax, dword ptr [r15 + 0x218]
    mov rax, qword ptr [rax]
    call puthex
    call nl

    mov rbx, qword ptr [r15 + 0x70]
    cmp dword ptr [rbx], 0x20445352
    jne fail
    mov rbx, qword ptr [rbx + 24]
    mov ecx, dword ptr [rbx + 4]
    sub ecx, 36
    shr ecx, 3
    lea rdx, [rbx + 36]
find_facp:
    mov rax, qword ptr [rdx]
    cmp dword ptr [rax], 0x50434146
    je got_facp
    add rdx, 8
    dec ecx
    jnz find_facp
    jmp fail
got_facp:
    mov rbx, qword ptr [rax + 140]
    mov ecx, dword ptr [rbx + 4]
    xor edx, edx
scan:
    cmp byte ptr [rbx + rdx], 0x86
    jne scan_next
    cmp byte ptr [rbx + rdx + 1], 0x09
    jne scan_next
    cmp byte ptr [rbx + rdx + 2], 0
    je found
scan_next:
    inc rdx
    cmp rdx, rcx
    jb scan
    jmp fail
found:
    mov r14d, dword ptr [rbx + rdx + 4]
    lea rdi, [rip + s_mmio]
    call puts
    mov rax, r14
    call puthex
    call nl

    mov eax, dword ptr [r14]
    cmp eax, 0x74726976
    jne fail
    lea rdi, [rip + s_dev]
    call puts
    mov eax, dword ptr [r14 + 8]
    call puthex
    call nl
    mov dword ptr [r14 + 0x70], 0
    mov dword ptr [r14 + 0x70], 1
    mov dword ptr [r14 + 0x70], 3
    mov dword ptr [r14 + 0x24], 1
    mov dword ptr [r14 + 0x20], 1
    mov dword ptr [r14 + 0x24], 0
    mov dword ptr [r14 + 0x20], 0
    mov dword ptr [r14 + 0x70], 0xb
    mov eax, dword ptr [r14 + 0x70]
    test eax, 8
    jz fail
    mov dword ptr [r14 + 0x30], 0
    mov dword ptr [r14 + 0x38], 8
    mov dword ptr [r14 + 0x80], 0x200000
    mov dword ptr [r14 + 0x84], 0
    mov dword ptr [r14 + 0x90], 0x201000
    mov dword ptr [r14 + 0x94], 0
    mov dword ptr [r14 + 0xa0], 0x202000
    mov dword ptr [r14 + 0xa4], 0
    mov dword ptr [r14 + 0x44], 1
    mov dword ptr [r14 + 0x70], 0xf

    # Request 1: read sector 3 into 0x204000.
    mov dword ptr [0x203000], 0
    mov dword ptr [0x203004], 0
    mov qword ptr [0x203008], 3
    mov rdi, 0x200000
    mov qword ptr [rdi], 0x203000
    mov dword ptr [rdi + 8], 16
    mov word ptr [rdi + 12], 1
    mov word ptr [rdi + 14], 1
    mov qword ptr [rdi + 16], 0x204000
    mov dword ptr [rdi + 24], 512
    mov word ptr [rdi + 28], 3
    mov word ptr [rdi + 30], 2
    mov qword ptr [rdi + 32], 0x205000
    mov dword ptr [rdi + 40], 1
    mov word ptr [rdi + 44], 2
    mov word ptr [rdi + 46], 0
    mov byte ptr [0x205000], 0xff
    mov word ptr [0x201004], 0
    mov word ptr [0x201002], 1
    mov dword ptr [r14 + 0x50], 0
    lea rdi, [rip + s_used]
    call puts
    movzx eax, word ptr [0x202002]
    call puthex
    call nl
    lea rdi, [rip + s_status]
    call puts
    movzx eax, byte ptr [0x205000]
    call puthex
    call nl
    lea rdi, [rip + s_data]
    call puts
    mov rax, qword ptr [0x204000]
    call puthex
    call nl

    # Request 2: write 512 bytes of 0x5a to sector 5 (data descriptor now device-readable).
    mov rdi, 0x204000
    mov al, 0x5a
    mov ecx, 512
    rep stosb
    mov dword ptr [0x203000], 1
    mov qword ptr [0x203008], 5
    mov word ptr [0x200000 + 28], 1
    mov byte ptr [0x205000], 0xff
    mov word ptr [0x201006], 0
    mov word ptr [0x201002], 2
    mov dword ptr [r14 + 0x50], 0
    lea rdi, [rip + s_write]
    call puts
    movzx eax, byte ptr [0x205000]
    call puthex
    call nl

    # Request 3: read sector 5 back.
    mov qword ptr [0x204000], 0
    mov dword ptr [0x203000], 0
    mov word ptr [0x200000 + 28], 3
    mov word ptr [0x201008], 0
    mov word ptr [0x201002], 3
    mov dword ptr [r14 + 0x50], 0
    lea rdi, [rip + s_readback]
    call puts
    mov rax, qword ptr [0x204000]
    call puthex
    call nl
    jmp reset
fail:
    lea rdi, [rip + s_fail]
    call puts
    jmp reset
s_e820: .asciz "E820 "
s_cmdline: .asciz "CMDLINE "
s_initrd: .asciz "INITRD "
s_mmio: .asciz "MMIO "
s_dev: .asciz "DEV "
s_used: .asciz "USED "
s_status: .asciz "STATUS "
s_data: .asciz "DATA "
s_write: .asciz "WRITE "
s_readback: .asciz "READBACK "
s_fail: .asciz "FAIL\n"
"#;
