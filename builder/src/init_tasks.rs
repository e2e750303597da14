//! The recipe's `[[task]]` entries and the runtime entries of `/run` and `/tmp` as
//! guest-init configuration (`tasks` and `runtime_dirs` of `/etc/jeos/init.json`).

use std::time::Duration;

use guest_init::config::{RuntimeDirConfig, TaskConfig, TaskWhen};

use crate::recipe::{self, Recipe};
use crate::rootfs::executables::{ServiceExec, UnitKind};
use crate::rootfs::tmpfiles::{RuntimeDir, RuntimeKind};

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The programs of the recipe's services and tasks, for the build-time checks.
pub fn programs(recipe: &Recipe) -> Vec<ServiceExec> {
    let services = recipe.services.iter().filter_map(|s| {
        s.exec.first().map(|path| ServiceExec {
            service: s.name.clone(),
            kind: UnitKind::Service,
            path: path.clone(),
        })
    });
    let tasks = recipe.tasks.iter().filter_map(|t| {
        t.exec.first().map(|path| ServiceExec {
            service: t.name.clone(),
            kind: UnitKind::Task,
            path: path.clone(),
        })
    });
    services.chain(tasks).collect()
}

/// guest-init's tasks for the recipe's `[[task]]` entries.
pub fn task_configs(recipe: &Recipe) -> Vec<TaskConfig> {
    recipe
        .tasks
        .iter()
        .map(|t| TaskConfig {
            name: t.name.clone(),
            exec: t.exec.clone(),
            when: match t.when {
                recipe::TaskWhen::FirstBoot => TaskWhen::FirstBoot,
                recipe::TaskWhen::EveryBoot => TaskWhen::EveryBoot,
            },
            user: Some(t.user.clone()).filter(|u| !u.is_empty() && u != "root"),
            group: t.group.clone(),
            environment: t.environment.clone(),
            working_directory: t.working_directory.clone(),
            timeout_ms: Some(millis(t.timeout)),
            before: t.before.clone(),
            after: t.after.clone(),
        })
        .collect()
}

/// guest-init's runtime entries.
pub fn runtime_dir_configs(dirs: &[RuntimeDir]) -> Vec<RuntimeDirConfig> {
    dirs.iter()
        .map(|d| RuntimeDirConfig {
            path: d.path.clone(),
            mode: d.mode,
            uid: d.uid,
            gid: d.gid,
            content: match &d.kind {
                RuntimeKind::File(content) => Some(content.clone()),
                _ => None,
            },
            symlink: match &d.kind {
                RuntimeKind::Symlink(target) => Some(target.clone()),
                _ => None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_and_runtime_entries_round_trip_through_guest_init() {
        let text = "[appliance]\nname = \"t\"\nversion = \"1\"\n[source]\nsuite = \"trixie\"\n[packages]\ninstall = [\"hello\"]\n[[service]]\nname = \"web\"\nexec = [\"/usr/bin/web\"]\n[[task]]\nname = \"keys\"\nexec = [\"/usr/bin/ssh-keygen\", \"-A\"]\nbefore = [\"web\"]\ntimeout = 60\n";
        let recipe = recipe::parse_str("t.toml", text, None).expect("valid");
        let dirs = [
            RuntimeDir {
                path: "/run/a".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
                kind: RuntimeKind::Directory,
            },
            RuntimeDir {
                path: "/run/b".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                kind: RuntimeKind::File("x".into()),
            },
        ];
        let config = crate::plan::init::init_config(&recipe, &dirs);
        assert_eq!(config.tasks[0].timeout_ms, Some(60_000));
        assert_eq!(config.tasks[0].before, ["web"]);
        assert_eq!(config.runtime_dirs[1].content.as_deref(), Some("x"));
        let json = serde_json::to_string(&config).expect("serialises");
        let back = guest_init::config::InitConfig::from_json(&json).expect("guest-init reads it");
        assert_eq!(back, config);
    }
}
