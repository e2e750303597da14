//! guest-init's configuration (`/etc/jeos/init.json`) from the recipe.

use std::time::Duration;

use guest_init::config::{
    CheckConfig, CheckKind as InitCheck, CommandCheckConfig, FileCheckConfig, HttpCheckConfig,
    HttpProbeConfig, InitConfig, NetworkConfig, Probe, ReadyConfig, RestartPolicy,
    ServiceCheckConfig, ServiceConfig, StaticNetworkConfig, TcpCheckConfig,
};

use crate::recipe::{self, CheckFrom, CheckKind, ReadyProbe, Recipe};
use crate::rootfs::tmpfiles::RuntimeDir;

/// guest-init's configuration from the recipe, plus the runtime directories packages'
/// `tmpfiles.d` entries ask for under `/run` and `/tmp`.
pub fn init_config(recipe: &Recipe, runtime_dirs: &[RuntimeDir]) -> InitConfig {
    let services = recipe
        .services
        .iter()
        .map(|s| ServiceConfig {
            name: s.name.clone(),
            exec: s.exec.clone(),
            user: Some(s.user.clone()).filter(|u| !u.is_empty() && u != "root"),
            group: s.group.clone(),
            environment: s.environment.clone(),
            working_directory: Some(s.working_directory.clone()).filter(|w| !w.is_empty()),
            restart: match s.restart {
                recipe::Restart::No => RestartPolicy::No,
                recipe::Restart::OnFailure => RestartPolicy::OnFailure,
                recipe::Restart::Always => RestartPolicy::Always,
            },
            after: s.after.clone(),
            ready: s.ready.as_ref().map(|ready| ReadyConfig {
                probe: match &ready.probe {
                    ReadyProbe::Tcp(port) => Probe::Tcp(*port),
                    ReadyProbe::File(path) => Probe::File(path.clone()),
                    ReadyProbe::Command(argv) => Probe::Command(argv.clone()),
                    ReadyProbe::Http { port, path } => Probe::Http(HttpProbeConfig {
                        port: *port,
                        path: path.clone(),
                    }),
                },
                timeout_ms: Some(millis(ready.timeout)),
            }),
        })
        .collect();
    // Host checks go to their own list: the guest must not run them, only wait for them.
    let (host_checks, guest_checks): (Vec<_>, Vec<_>) = recipe
        .test
        .checks
        .iter()
        .partition(|c| c.from == CheckFrom::Host);
    let init_check = |c: &recipe::Check| {
        let kind = match &c.kind {
            CheckKind::Http {
                port,
                path,
                status,
                body_contains,
            } => InitCheck::Http(HttpCheckConfig {
                port: *port,
                path: path.clone(),
                status: *status,
                body_contains: body_contains.clone(),
            }),
            CheckKind::Tcp { port } => InitCheck::Tcp(TcpCheckConfig { port: *port }),
            CheckKind::Command {
                run,
                exit_code,
                stdout_contains,
            } => InitCheck::Command(CommandCheckConfig {
                run: run.clone(),
                exit_code: *exit_code,
                stdout_contains: stdout_contains.clone(),
            }),
            CheckKind::File { path } => InitCheck::File(FileCheckConfig { path: path.clone() }),
            CheckKind::Service { name } => {
                InitCheck::Service(ServiceCheckConfig { name: name.clone() })
            }
        };
        CheckConfig::new(c.name.clone(), kind)
    };
    let checks = guest_checks.into_iter().map(init_check).collect();
    let host_checks = host_checks.into_iter().map(init_check).collect();
    InitConfig {
        hostname: Some(recipe.system.hostname.clone()),
        network: match &recipe.network {
            recipe::Network::Dhcp => NetworkConfig::Dhcp,
            recipe::Network::None => NetworkConfig::None,
            recipe::Network::Static(s) => NetworkConfig::Static(StaticNetworkConfig {
                address: s.address,
                prefix: s.prefix,
                gateway: s.gateway,
                dns: s.dns.clone(),
                ipv6: s
                    .ipv6
                    .map(|(address, prefix)| guest_init::config::StaticIpv6Config {
                        address,
                        prefix,
                        gateway: s.gateway6,
                    }),
            }),
        },
        root_rw: true,
        services,
        checks,
        host_checks,
        test_timeout_ms: millis(recipe.test.timeout),
        shutdown_timeout_ms: 10_000,
        runtime_dirs: crate::init_tasks::runtime_dir_configs(runtime_dirs),
        tasks: crate::init_tasks::task_configs(recipe),
        properties: crate::deploy::property_defaults(recipe),
        boot_files: crate::deploy::boot_files(recipe),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use guest_init::config::NetworkConfig;

    use super::*;

    #[test]
    fn init_config_carries_services_checks_and_network() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/nginx.toml"),
        )
        .expect("example recipe");
        let recipe = crate::recipe::parse_str("nginx.toml", &text, None).expect("valid");
        let dirs = [RuntimeDir {
            path: "/run/nginx".into(),
            mode: 0o750,
            uid: 33,
            gid: 33,
            kind: crate::rootfs::tmpfiles::RuntimeKind::Directory,
        }];
        let config = init_config(&recipe, &dirs);
        assert_eq!(config.runtime_dirs[0].path, "/run/nginx");
        config.validate().expect("guest-init accepts it");
        assert_eq!(config.hostname.as_deref(), Some("nginx"));
        assert_eq!(config.network, NetworkConfig::Dhcp);
        assert_eq!(config.services.len(), 1);
        assert_eq!(config.services[0].exec[0], "/usr/sbin/nginx");
        assert_eq!(
            config.services[0].ready.as_ref().map(|r| &r.probe),
            Some(&Probe::Tcp(80))
        );
        assert!(
            config
                .checks
                .iter()
                .any(|c| matches!(c.kind, InitCheck::Http(_)))
        );
        // The host check goes to the host's list only: the guest never runs it.
        let names = |checks: &[CheckConfig]| -> Vec<String> {
            checks.iter().map(|c| c.name.clone()).collect()
        };
        assert_eq!(names(&config.checks), ["serves the page", "nginx is ready"]);
        assert_eq!(names(&config.host_checks), ["serves the page from outside"]);
        let json = serde_json::to_string(&config).expect("json");
        let back = InitConfig::from_json(&json).expect("guest-init parses it");
        assert_eq!(back, config);
    }
}
