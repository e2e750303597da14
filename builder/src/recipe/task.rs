//! `[[task]]` validation: names unique among services and tasks, known users, groups and
//! services, a `when` choice, a timeout.

use super::*;

/// Default deadline of a task (initdb on a slow emulated CPU takes a minute).
const TASK_TIMEOUT: Duration = Duration::from_secs(300);

impl Ctx<'_> {
    pub(super) fn tasks(
        &mut self,
        raw: &[Spanned<raw::TaskRaw>],
        services: &[Service],
        accounts: &Accounts,
    ) -> Vec<Task> {
        let service_names: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
        let mut seen = BTreeSet::new();
        let mut tasks = Vec::new();
        for t in raw {
            let t = t.get_ref();
            let name = self
                .checked("task.name", &t.name, names::check_service_name)
                .unwrap_or_default();
            if !name.is_empty() && (service_names.contains(&name) || !seen.insert(name.clone())) {
                self.push(
                    K::Duplicate {
                        what: "service or task",
                        name: name.clone(),
                    },
                    span(&t.name),
                );
            }
            let exec = self.argv("task.exec", &t.exec).unwrap_or_default();
            let when = t
                .when
                .as_ref()
                .and_then(|w| {
                    self.choice(
                        "task `when`",
                        w,
                        &[
                            ("first-boot", TaskWhen::FirstBoot),
                            ("every-boot", TaskWhen::EveryBoot),
                        ],
                    )
                })
                .unwrap_or(TaskWhen::FirstBoot);
            let user = t.user.as_ref().map_or_else(
                || "root".to_owned(),
                |u| {
                    self.reference_user(u, accounts);
                    u.get_ref().clone()
                },
            );
            let group = t.group.as_ref().map(|g| {
                self.reference_group(g, accounts);
                g.get_ref().clone()
            });
            for key in t.environment.keys() {
                if let Err(reason) = names::check_env_name(key) {
                    self.push(
                        K::Invalid {
                            key: "task.environment".into(),
                            value: shown(key),
                            reason: reason.into(),
                            hint: None,
                        },
                        span(&t.name),
                    );
                }
            }
            let working_directory = t
                .working_directory
                .as_ref()
                .and_then(|w| self.guest_path("task.working-directory", w));
            let timeout = t
                .timeout
                .as_ref()
                .and_then(|v| self.duration("task.timeout", v))
                .unwrap_or(TASK_TIMEOUT);
            let before = self.task_services("task.before", &t.before, &service_names);
            let after = self.task_services("task.after", &t.after, &service_names);
            tasks.push(Task {
                name,
                exec,
                when,
                user,
                group,
                environment: t.environment.clone(),
                working_directory,
                timeout,
                before,
                after,
            });
        }
        tasks
    }

    /// `before`/`after` name services of the recipe, and not both at once.
    fn task_services(
        &mut self,
        key: &str,
        list: &[Str],
        services: &BTreeSet<String>,
    ) -> Vec<String> {
        for name in list {
            if !services.contains(name.get_ref()) {
                self.push(
                    K::UnknownReference {
                        what: "service",
                        name: shown(name.get_ref()),
                        known: services.iter().cloned().collect(),
                        hint: Some(format!(
                            "`{}` lists names of `[[service]]` entries",
                            key.trim_start_matches("task.")
                        )),
                    },
                    span(name),
                );
            }
        }
        list.iter().map(|n| n.get_ref().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[appliance]\nname = \"t\"\nversion = \"1\"\n[source]\nsuite = \"trixie\"\n[packages]\ninstall = [\"hello\"]\n[[service]]\nname = \"web\"\nexec = [\"/usr/bin/web\"]\n";

    fn parse(extra: &str) -> Result<Recipe, RecipeErrors> {
        parse_str("t.toml", &format!("{BASE}{extra}"), None)
    }

    #[test]
    fn tasks_with_defaults_and_every_key() {
        let r = parse(
            "[[task]]\nname = \"keys\"\nexec = [\"/usr/bin/ssh-keygen\", \"-A\"]\n[[task]]\nname = \"warm\"\nexec = [\"/usr/bin/warm\"]\nwhen = \"every-boot\"\nuser = \"www-data\"\ngroup = \"www-data\"\nenvironment = { A = \"1\" }\nworking-directory = \"/var/www\"\ntimeout = \"2m\"\nafter = [\"web\"]\n",
        )
        .unwrap();
        assert_eq!(r.tasks.len(), 2);
        let keys = &r.tasks[0];
        assert_eq!(keys.when, TaskWhen::FirstBoot);
        assert_eq!(keys.user, "root");
        assert_eq!(keys.timeout, TASK_TIMEOUT);
        assert!(keys.before.is_empty() && keys.after.is_empty());
        let warm = &r.tasks[1];
        assert_eq!(warm.when, TaskWhen::EveryBoot);
        assert_eq!(warm.group.as_deref(), Some("www-data"));
        assert_eq!(warm.working_directory.as_deref(), Some("/var/www"));
        assert_eq!(warm.timeout, Duration::from_secs(120));
        assert_eq!(warm.after, ["web"]);
    }

    #[test]
    fn task_errors_are_collected() {
        let errors = parse(
            "[[task]]\nname = \"web\"\nexec = [\"bin/x\"]\nwhen = \"sometimes\"\nuser = \"nobody-here\"\nbefore = [\"db\"]\ntimeout = \"0s\"\n",
        )
        .unwrap_err();
        let kinds: Vec<String> = errors
            .errors
            .iter()
            .map(|e| format!("{:?}", e.kind))
            .collect();
        assert_eq!(kinds.len(), 6, "{kinds:#?}");
        assert!(kinds[0].contains("Duplicate"), "{kinds:#?}");
        assert!(kinds.iter().any(|k| k.contains("sometimes")));
        assert!(kinds.iter().any(|k| k.contains("nobody-here")));
        assert!(
            kinds
                .iter()
                .any(|k| k.contains("\"db\"") || k.contains("`db`"))
        );
    }
}
