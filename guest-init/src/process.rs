//! Child processes: spawning with credentials and a console pipe, and reaping.
//!
//! PID 1 must reap every zombie, including orphans re-parented to it, so a single reaper
//! calls `waitpid(-1)` ([`ReapMode::Any`]). Nobody else may wait (std's `Child::wait` would
//! race the reaper), so every spawn registers a callback that receives the wait status.
//! The table lock is held across `spawn` and registration, and the reaper takes the same
//! lock before it calls `waitpid`, so an early exit can never be reaped unregistered.
//! Host tests use [`ReapMode::Registered`] (only our own children), polled by a thread.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::users::Credentials;

/// Called with the raw wait status when a registered child exits.
pub type ExitCallback = Box<dyn FnOnce(i32) + Send>;

/// Which children the reaper waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapMode {
    /// `waitpid(-1)`: every child, as PID 1 must.
    Any,
    /// Only registered pids (tests, where the harness has children of its own).
    #[cfg_attr(not(test), expect(dead_code, reason = "used by host tests only"))]
    Registered,
}

/// Registered children and their exit callbacks.
pub struct ProcessTable {
    mode: ReapMode,
    waiting: Mutex<HashMap<libc::pid_t, ExitCallback>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock aborts (panic=abort in the guest); in tests the data
    // is still consistent, so recover it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ProcessTable {
    /// A new, empty table.
    pub fn new(mode: ReapMode) -> Arc<ProcessTable> {
        Arc::new(ProcessTable {
            mode,
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// Spawns `command` and registers `on_exit`. The command is consumed so the parent's
    /// copies of pipe ends in its `Stdio` are closed right after the spawn.
    pub fn spawn(&self, mut command: Command, on_exit: ExitCallback) -> io::Result<libc::pid_t> {
        let mut waiting = lock(&self.waiting);
        let child = command.spawn()?;
        drop(command);
        let pid =
            libc::pid_t::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
        waiting.insert(pid, on_exit);
        // Dropping `Child` neither waits nor kills; the reaper owns the exit status.
        drop(child);
        Ok(pid)
    }

    /// Reaps every exited child and runs the callbacks of registered ones.
    pub fn reap(&self) {
        let mut done = Vec::new();
        {
            let mut waiting = lock(&self.waiting);
            match self.mode {
                ReapMode::Any => loop {
                    let mut status = 0;
                    // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
                    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                    if pid <= 0 {
                        break;
                    }
                    if let Some(callback) = waiting.remove(&pid) {
                        done.push((callback, status));
                    }
                },
                ReapMode::Registered => {
                    let pids: Vec<libc::pid_t> = waiting.keys().copied().collect();
                    for pid in pids {
                        let mut status = 0;
                        // SAFETY: as above, for one specific child.
                        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                        if rc == pid
                            && let Some(callback) = waiting.remove(&pid)
                        {
                            done.push((callback, status));
                        }
                    }
                }
            }
        }
        for (callback, status) in done {
            callback(status);
        }
    }

    /// Starts a thread that reaps every 10 ms (tests; PID 1 reaps on SIGCHLD instead).
    #[cfg(test)]
    pub fn spawn_polling_reaper(self: &Arc<Self>) {
        let table = Arc::clone(self);
        std::thread::spawn(move || {
            loop {
                table.reap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }
}

/// Describes a raw wait status: `exit status 3`, `killed by signal 9`.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// The exit code, if the process exited normally.
pub fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(std::fs::File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((std::fs::File::from(read), write))
}

/// How to start one program.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Credentials (`None` = inherit, used by tests that are not root).
    pub credentials: Option<Credentials>,
    /// Extra environment.
    pub environment: Vec<(String, String)>,
    /// Working directory.
    pub working_directory: Option<String>,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the `Command` for `launch` with stdout+stderr on `output` (the write end of a
/// pipe), stdin on /dev/null, a new session (so the whole group can be signalled), and the
/// credentials applied between fork and exec.
pub fn command(launch: &Launch, output: OwnedFd) -> io::Result<Command> {
    let (program, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(output.try_clone()?))
        .stderr(Stdio::from(output));
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    if let Some(creds) = &launch.credentials {
        cmd.env("HOME", &creds.home)
            .env("USER", &creds.name)
            .env("LOGNAME", &creds.name);
    }
    for (key, value) in &launch.environment {
        cmd.env(key, value);
    }
    if let Some(dir) = &launch.working_directory {
        cmd.current_dir(dir);
    }
    let creds = launch.credentials.clone();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (setsid, setgroups, setgid, setuid, pthread_sigmask) on
    // data prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            crate::sys::unblock_all_signals()?;
            // SAFETY: setsid takes no arguments; failing (already a leader) is harmless.
            libc::setsid();
            if let Some(creds) = &creds {
                let groups: &[libc::gid_t] = &creds.groups;
                // SAFETY: the pointer/length pair describes `groups`, alive in this closure.
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: plain integer arguments.
                if libc::setgid(creds.gid) != 0 || libc::setuid(creds.uid) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    Ok(cmd)
}

/// The last lines a service printed, for error reports.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    const MAX_LINES: usize = 20;

    /// Appends a line, dropping the oldest beyond the limit.
    pub fn push(&mut self, line: String) {
        if self.lines.len() == Self::MAX_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The last `n` lines joined with ` | `.
    pub fn last(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        self.lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// Longest line copied to the console; longer lines are split.
const MAX_LINE: usize = 4096;

/// Splits `reader`'s output into lines and hands each one to `on_line` (lossy UTF-8,
/// without the terminator) until EOF.
pub fn for_each_line(mut reader: impl Read, mut on_line: impl FnMut(String)) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            on_line(clean_line(&line[..pos]));
        }
        while pending.len() >= MAX_LINE {
            let line: Vec<u8> = pending.drain(..MAX_LINE).collect();
            on_line(clean_line(&line));
        }
    }
    if !pending.is_empty() {
        on_line(clean_line(&pending));
    }
}

fn clean_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\r')
        .to_owned()
}

/// Output of a command run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Raw wait status.
    pub status: i32,
    /// Stdout and stderr, interleaved, capped at 64 KiB.
    pub output: String,
}

/// Runs `launch` to completion or kills its process group after `timeout`.
pub fn run_command(
    table: &ProcessTable,
    launch: &Launch,
    timeout: Duration,
) -> Result<CommandOutput, String> {
    const CAP: usize = 64 * 1024;
    let (reader, writer) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let cmd = command(launch, writer).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = table
        .spawn(
            cmd,
            Box::new(move |status| {
                let _ = tx.send(status);
            }),
        )
        .map_err(|e| format!("cannot run `{}`: {e}", launch.argv.join(" ")))?;
    let collector = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut limited = reader.take(CAP as u64);
        let _ = limited.read_to_end(&mut out);
        // Drain the rest so the child never blocks on a full pipe.
        let _ = io::copy(&mut limited.into_inner(), &mut io::sink());
        String::from_utf8_lossy(&out).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let status = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(status) => status,
        Err(_) => {
            let _ = crate::sys::kill(-pid, libc::SIGKILL);
            let _ = crate::sys::kill(pid, libc::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(2));
            return Err(format!(
                "`{}` timed out after {} ms",
                launch.argv.join(" "),
                timeout.as_millis()
            ));
        }
    };
    // Background children that keep the pipe open must not hang us: give up on output.
    let output = join_with_timeout(collector, Duration::from_secs(1)).unwrap_or_default();
    Ok(CommandOutput { status, output })
}

fn join_with_timeout(handle: std::thread::JoinHandle<String>, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Launch {
        Launch {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..Launch::default()
        }
    }

    #[test]
    fn runs_command_and_captures_output() {
        let table = ProcessTable::new(ReapMode::Registered);
        table.spawn_polling_reaper();
        let out = run_command(
            &table,
            &sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(5),
        )
        .expect("runs");
        assert_eq!(exit_code(out.status), Some(3));
        assert_eq!(describe_status(out.status), "exit status 3");
        assert!(out.output.contains("out\n") && out.output.contains("err\n"));
    }

    #[test]
    fn command_timeout_kills_the_group() {
        let table = ProcessTable::new(ReapMode::Registered);
        table.spawn_polling_reaper();
        let started = Instant::now();
        let err = run_command(&table, &sh("sleep 30"), Duration::from_millis(200))
            .expect_err("times out");
        assert!(err.contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_program_is_an_error() {
        let table = ProcessTable::new(ReapMode::Registered);
        let launch = Launch {
            argv: vec!["/nonexistent/prog".into()],
            ..Launch::default()
        };
        assert!(run_command(&table, &launch, Duration::from_secs(1)).is_err());
        assert!(run_command(&table, &Launch::default(), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn splits_lines_and_caps_length() {
        let mut data = b"a\r\nb\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE + 3));
        let mut lines = Vec::new();
        for_each_line(&data[..], |l| lines.push(l));
        assert_eq!(lines.len(), 4);
        assert_eq!(&lines[..2], ["a", "b"]);
        assert_eq!(lines[2].len(), MAX_LINE);
        assert_eq!(lines[3], "xxx");
    }

    #[test]
    fn tail_keeps_last_lines() {
        let mut tail = Tail::default();
        for i in 0..30 {
            tail.push(i.to_string());
        }
        assert_eq!(tail.last(3), "27 | 28 | 29");
        assert_eq!(tail.lines.len(), Tail::MAX_LINES);
    }
}
