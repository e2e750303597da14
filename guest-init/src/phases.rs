//! Boot phases for the `ready` event: when the initramfs's `/init` started (handed to PID 1
//! in the root filesystem through [`INITRAMFS_ENV`]), when PID 1 started, when every service
//! was started, and how many CPUs are online.

use std::time::Duration;

use guest_init::protocol::BootPhases;

/// Environment variable the initramfs stage passes to `/sbin/init`: its start, in ms.
pub const INITRAMFS_ENV: &str = "JEOS_INITRAMFS_MS";

/// Milliseconds of a duration, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Counts the CPUs of a sysfs CPU list such as `0-3,5` (`/sys/devices/system/cpu/online`);
/// `None` if the list is malformed.
pub fn count_cpu_list(text: &str) -> Option<u32> {
    let mut count = 0u32;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        count = count.checked_add(last.checked_sub(first)?.checked_add(1)?)?;
    }
    Some(count)
}

/// The phases known when PID 1 starts in the root filesystem.
pub fn at_root_start(root_started: Duration) -> BootPhases {
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| count_cpu_list(&t))
        .unwrap_or(0);
    let initramfs_ms = std::env::var(INITRAMFS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    BootPhases {
        cpus,
        initramfs_ms,
        root_ms: millis(root_started),
        services_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cpu_lists() {
        assert_eq!(count_cpu_list("0\n"), Some(1));
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,5,7-8\n"), Some(7));
        assert_eq!(count_cpu_list(""), Some(0));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a"), None);
    }

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
