//! Thin safe wrappers over the Linux system calls PID 1 needs (mount, modules, reboot,
//! signals). This module, `net.rs` (interface ioctls), `process.rs` (waitpid, setgroups in
//! the child) and `log.rs` (clock_gettime) are the only places with `unsafe`.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

fn cstring(text: &str) -> io::Result<CString> {
    CString::new(text).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstring(source)?;
    let target = cstring(target)?;
    let fstype = fstype.map(cstring).transpose()?;
    let data = data.map(cstring).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the
    // call; the kernel copies them and keeps no reference.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
        )
    };
    check(rc)
}

/// `umount2(2)`.
pub fn umount(target: &str, flags: libc::c_int) -> io::Result<()> {
    let target = cstring(target)?;
    // SAFETY: `target` is NUL-terminated and outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// The filesystem type magic of the filesystem holding `path` (`statfs(2)` `f_type`).
pub fn filesystem_type(path: &str) -> io::Result<i64> {
    let path = cstring(path)?;
    // SAFETY: an all-zero statfs is a valid value for statfs(2) to overwrite.
    let mut info: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `info` is a valid, writable statfs.
    check(unsafe { libc::statfs(path.as_ptr(), &mut info) })?;
    Ok(info.f_type)
}

/// `chroot(2)`.
pub fn chroot(path: &str) -> io::Result<()> {
    let path = cstring(path)?;
    // SAFETY: `path` is NUL-terminated and outlives the call.
    check(unsafe { libc::chroot(path.as_ptr()) })
}

/// Loads a kernel module from an open `.ko` file with `finit_module(2)`.
pub fn finit_module(file: &std::fs::File) -> io::Result<()> {
    let params = c"";
    // SAFETY: the fd is open for the duration of the call, `params` is a NUL-terminated
    // empty string and flags are 0; the syscall takes no other memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `reboot(2)` with one of `libc::RB_*`. Returns only on failure (or for `RB_DISABLE_CAD`).
pub fn reboot(cmd: libc::c_int) -> io::Result<()> {
    // SAFETY: reboot takes an integer command and no memory.
    check(unsafe { libc::reboot(cmd) })
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer/length pair describes `name`'s bytes, which outlive the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast::<libc::c_char>(), name.len()) })
}

/// `kill(2)`; `pid` may be negative (process group) or -1 (everyone but us).
pub fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes integers only.
    check(unsafe { libc::kill(pid, signal) })
}

/// `sync(2)`.
pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// The process id of the caller.
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { libc::getpid() }
}

/// A set of signals.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value; sigemptyset/sigaddset then initialise
    // it properly and only write inside it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Blocks `set` in the calling thread (threads spawned later inherit the mask).
pub fn block_signals(set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `set` is an initialised sigset_t; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for one of the (blocked) signals in `set`; returns its number.
pub fn wait_signal(set: &libc::sigset_t) -> io::Result<libc::c_int> {
    loop {
        // SAFETY: `set` is an initialised sigset_t; a null siginfo pointer is allowed.
        let rc = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if rc >= 0 {
            return Ok(rc);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Resets the signal mask of a freshly forked child (called between fork and exec).
pub fn unblock_all_signals() -> io::Result<()> {
    let set = sigset(&[]);
    // SAFETY: `set` is an initialised empty sigset_t; pthread_sigmask is async-signal-safe.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Creates a directory (and parents); an existing directory is fine.
pub fn ensure_dir(path: &str) -> io::Result<()> {
    std::fs::create_dir_all(Path::new(path))
}

/// Makes sure fds 0, 1 and 2 are open, on `/dev/console` if possible (the kernel leaves
/// them closed when the initramfs has no `/dev/console`).
pub fn ensure_stdio() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        let Ok(console) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
        else {
            return;
        };
        // SAFETY: both descriptors are valid; dup2 onto a closed fd number is the
        // documented way to reopen it. `console` is closed on drop, the copy stays.
        unsafe { libc::dup2(console.as_raw_fd(), fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_interior_nul() {
        assert_eq!(
            mount("a\0b", "/x", None, 0, None).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidInput)
        );
    }

    #[test]
    fn kill_zero_signal_probes_own_process() {
        assert!(kill(getpid(), 0).is_ok());
    }
}
