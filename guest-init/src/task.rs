//! Tasks: programs run to completion at boot under the supervisor (same logging,
//! credentials and readiness rules as services). A task is "ready" when it exited 0; a
//! first-boot task then leaves a marker on the root file system and is skipped on later
//! boots. A task that fails or outlives its deadline makes the boot not ready.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use guest_init::config::InitConfig;

use crate::supervisor::Event;

/// What makes a supervisor unit a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// Marker of a first-boot task.
    pub marker: Option<PathBuf>,
    /// Deadline from its start.
    pub timeout: Duration,
}

/// One entry per unit of [`InitConfig::units`]: `Some` for the tasks (which come first).
pub fn specs(config: &InitConfig) -> Vec<Option<TaskSpec>> {
    config
        .tasks
        .iter()
        .map(|t| {
            Some(TaskSpec {
                marker: t.marker().map(PathBuf::from),
                timeout: Duration::from_millis(t.timeout_ms()),
            })
        })
        .chain(config.services.iter().map(|_| None))
        .collect()
}

/// Whether a first-boot task already succeeded on an earlier boot.
pub fn already_done(spec: &TaskSpec) -> bool {
    spec.marker.as_deref().is_some_and(Path::exists)
}

/// Records that a first-boot task succeeded (the file holds nothing; its existence counts).
pub fn mark_done(spec: &TaskSpec) -> std::io::Result<()> {
    let Some(marker) = &spec.marker else {
        return Ok(());
    };
    if let Some(dir) = marker.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(marker)?;
    // The marker must survive a power cut right after the boot became ready.
    file.sync_all()?;
    if let Some(dir) = marker.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Sends [`Event::TaskTimeout`] for this start of the task once its deadline passes.
pub fn start_timer(events: &Sender<Event>, service: usize, generation: u64, timeout: Duration) {
    let events = events.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("task-timer-{service}"))
        .spawn(move || {
            std::thread::sleep(timeout);
            let _ = events.send(Event::TaskTimeout {
                service,
                generation,
            });
        });
    if let Err(err) = spawned {
        crate::log::info!("cannot start the deadline thread of task {service}: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_written_and_found() {
        let dir = std::env::temp_dir().join(format!("guest-init-task-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = TaskSpec {
            marker: Some(dir.join("tasks/initdb.done")),
            timeout: Duration::from_secs(1),
        };
        assert!(!already_done(&spec));
        mark_done(&spec).expect("marker written");
        assert!(already_done(&spec));
        let every = TaskSpec {
            marker: None,
            timeout: Duration::from_secs(1),
        };
        mark_done(&every).expect("nothing to write");
        assert!(!already_done(&every));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn specs_line_up_with_units() {
        let config = InitConfig::from_json(
            r#"{"services":[{"name":"s","exec":["/s"]}],"tasks":[{"name":"t","exec":["/t"],"timeout_ms":7},{"name":"e","exec":["/e"],"when":"every-boot"}]}"#,
        )
        .expect("valid");
        let specs = specs(&config);
        assert_eq!(specs.len(), config.units().len());
        let first = specs[0].as_ref().expect("a task");
        assert_eq!(first.timeout, Duration::from_millis(7));
        assert!(first.marker.as_ref().is_some_and(|m| m.ends_with("t.done")));
        assert_eq!(specs[1].as_ref().and_then(|s| s.marker.clone()), None);
        assert!(specs[2].is_none());
    }
}
