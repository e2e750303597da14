//! How many checks an appliance declares, read from the image's own
//! `/etc/jeos/init.json`, so `jeos test`'s summary says how many did not run (a guest that
//! died, a service that never got ready) instead of `0/0 checks passed`.

use std::path::Path;

/// The image's guest configuration (its checks and host checks); `None` when the image or
/// its configuration cannot be read (the summary then counts only what was reported).
pub(super) fn image_config(image: &Path) -> Option<guest_init::config::InitConfig> {
    let image = image_writer::image::open_image(image).ok()?;
    let bytes = image
        .root_fs()
        .ok()?
        .read(guest_init::config::CONFIG_PATH)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The number of checks a configuration declares, the guest's and the host's.
pub(super) fn planned_checks(config: Option<&guest_init::config::InitConfig>) -> Option<usize> {
    config.map(|c| c.checks.len() + c.host_checks.len())
}

/// Checks declared but not reported.
pub(super) fn not_run(reported: usize, planned: Option<usize>) -> usize {
    planned.map_or(0, |planned| planned.saturating_sub(reported))
}

/// The counting part of the summary line: `2/3 checks passed, 1 not run`.
pub(super) fn counted(passed: usize, reported: usize, planned: Option<usize>, ok: bool) -> String {
    let not_run = not_run(reported, planned);
    let total = reported + not_run;
    if total == 0 {
        return if ok {
            "0/0 checks passed".to_owned()
        } else {
            "no check ran".to_owned()
        };
    }
    let mut text = format!("{passed}/{total} checks passed");
    if not_run > 0 {
        text.push_str(&format!(", {not_run} not run"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_that_did_not_run_are_counted() {
        assert_eq!(counted(2, 2, Some(2), true), "2/2 checks passed");
        assert_eq!(
            counted(0, 0, Some(2), false),
            "0/2 checks passed, 2 not run"
        );
        assert_eq!(
            counted(1, 2, Some(3), false),
            "1/3 checks passed, 1 not run"
        );
        assert_eq!(counted(0, 0, None, false), "no check ran");
        assert_eq!(counted(1, 1, None, false), "1/1 checks passed");
        assert_eq!(counted(0, 0, Some(0), true), "0/0 checks passed");
        assert_eq!(not_run(3, Some(2)), 0);
    }
}
