//! Console logging: every line carries the monotonic time since boot, like the kernel's.

use std::io::Write;
use std::time::Duration;

/// Time since the kernel started (CLOCK_BOOTTIME), the same clock `ready boot_ms` uses.
pub fn since_boot() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// Writes one whole line to stdout (the console) under the stdout lock, so lines from the
/// service logger threads never interleave mid-line.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    // The console is our only output: if writing fails there is nowhere to report it.
    let _ = out.write_all(text.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Formats a timestamped log line, e.g. `[   1.234] jeos: mounted /proc`.
pub fn format_line(at: Duration, text: &str) -> String {
    format!(
        "[{:>4}.{:03}] jeos: {text}",
        at.as_secs(),
        at.subsec_millis()
    )
}

/// Logs a timestamped line on the console.
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::line(&$crate::log::format_line($crate::log::since_boot(), &format!($($arg)*)))
    };
}
pub(crate) use info;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamp() {
        assert_eq!(
            format_line(Duration::from_millis(61_005), "up"),
            "[  61.005] jeos: up"
        );
    }

    #[test]
    fn boot_clock_advances() {
        let a = since_boot();
        std::thread::sleep(Duration::from_millis(5));
        assert!(since_boot() > a);
    }
}
