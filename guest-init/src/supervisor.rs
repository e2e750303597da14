//! The service supervisor: starts services in dependency order, copies their output to the
//! console, restarts them per policy with exponential backoff, tracks readiness, and stops
//! them at shutdown.
//!
//! It is event-driven and independent of PID 1: everything arrives on one channel
//! ([`Event`]) — child exits from the reaper callbacks, probe results from probe threads,
//! shutdown requests from the signal thread — so tests drive it as an ordinary process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guest_init::config::{Probe, RestartPolicy, ServiceConfig};

use crate::log::{self, info};
use crate::probe::{self, RunningServices};
use crate::process::{self, Launch, ProcessTable, Tail, describe_status, exit_code};
use crate::shutdown::ShutdownKind;
use crate::task::{self, TaskSpec};
use crate::users;

/// Everything the main loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// A service's process exited.
    Exited {
        /// Service index.
        service: usize,
        /// Which start of the service this was.
        generation: u64,
        /// Raw wait status.
        status: i32,
    },
    /// A service's readiness probe finished (it runs once, from the first start).
    Probed {
        /// Service index.
        service: usize,
        /// `Err` holds the last probe error.
        result: Result<(), String>,
    },
    /// A task's deadline passed (see [`crate::task::start_timer`]).
    TaskTimeout {
        /// Unit index.
        service: usize,
        /// Which start of the task the deadline belongs to.
        generation: u64,
    },
    /// Shut the machine down.
    Shutdown(ShutdownKind),
    /// The test checks finished.
    ChecksDone,
}

/// What a handled event means for the boot as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every service is ready (reported once).
    AllReady,
    /// A service will never become ready.
    NotReady {
        /// The service.
        service: String,
        /// Why, with the tail of its output.
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its `after` services.
    Waiting,
    Running(libc::pid_t),
    /// Exited; restart at the instant.
    Backoff(Instant),
    /// Exited for good.
    Stopped,
}

struct Service {
    config: ServiceConfig,
    probe: Option<Probe>,
    ready_timeout: Duration,
    after: Vec<usize>,
    state: State,
    generation: u64,
    failures: u32,
    started_at: Instant,
    ready: bool,
    tail: Arc<Mutex<Tail>>,
    /// Output threads still reading (each until its pipe's EOF).
    output_open: Arc<AtomicUsize>,
    /// Set for tasks: run once to completion.
    task: Option<TaskSpec>,
    /// The task was killed at its deadline.
    timed_out: bool,
}

/// Supervises a fixed list of services.
pub struct Supervisor {
    services: Vec<Service>,
    order: Vec<usize>,
    table: Arc<ProcessTable>,
    events: Sender<Event>,
    running: RunningServices,
    announced: bool,
    stopping: bool,
    /// Apply users/groups from the config (PID 1); tests run as whoever they are.
    pub apply_credentials: bool,
}

/// Backoff after the `failures`-th consecutive quick exit: 100 ms doubling up to 10 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(7))).min(Duration::from_secs(10))
}

/// A run longer than this resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(10);
/// How long a failure report waits for the last lines of a process that exited.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Supervisor {
    /// Prepares the services; `order` comes from `InitConfig::start_order` (validated).
    #[cfg(test)]
    pub fn new(
        configs: Vec<ServiceConfig>,
        order: Vec<usize>,
        table: Arc<ProcessTable>,
        events: Sender<Event>,
    ) -> Supervisor {
        let tasks = vec![None; configs.len()];
        Supervisor::with_tasks(configs, tasks, order, table, events)
    }

    /// Prepares services and tasks: `configs` is `InitConfig::units`, `tasks` is
    /// [`task::specs`] (one entry per unit), `order` is `InitConfig::start_order`.
    pub fn with_tasks(
        configs: Vec<ServiceConfig>,
        tasks: Vec<Option<TaskSpec>>,
        order: Vec<usize>,
        table: Arc<ProcessTable>,
        events: Sender<Event>,
    ) -> Supervisor {
        let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        let mut tasks = tasks.into_iter();
        let services = configs
            .into_iter()
            .map(|config| {
                let task = tasks.next().flatten();
                let probe = config.ready.as_ref().map(|r| r.probe.clone());
                let ready_timeout =
                    Duration::from_millis(config.ready.as_ref().map_or(0, |r| r.timeout_ms()));
                let after = config
                    .after
                    .iter()
                    .filter_map(|a| names.iter().position(|n| n == a))
                    .collect();
                Service {
                    config,
                    probe,
                    ready_timeout,
                    after,
                    state: State::Waiting,
                    generation: 0,
                    failures: 0,
                    started_at: Instant::now(),
                    ready: false,
                    tail: Arc::default(),
                    output_open: Arc::default(),
                    task,
                    timed_out: false,
                }
            })
            .collect();
        Supervisor {
            services,
            order,
            table,
            events,
            running: RunningServices::default(),
            announced: false,
            stopping: false,
            apply_credentials: true,
        }
    }

    /// Shared view of which services run (for `service` checks).
    pub fn running(&self) -> RunningServices {
        Arc::clone(&self.running)
    }

    /// Starts every waiting service whose dependencies are ready and restarts those whose
    /// backoff expired. Returns an outcome if that settles the boot.
    pub fn poll(&mut self) -> Option<Outcome> {
        if self.stopping {
            return None;
        }
        let now = Instant::now();
        for position in 0..self.order.len() {
            let index = self.order[position];
            let startable = match self.services[index].state {
                State::Waiting => self.services[index]
                    .after
                    .iter()
                    .all(|&d| self.services[d].ready),
                State::Backoff(at) => at <= now,
                _ => false,
            };
            if startable && let Some(outcome) = self.start(index) {
                return Some(outcome);
            }
        }
        self.check_all_ready()
    }

    /// Whether every service has been started at least once (none waits for `after`).
    pub fn all_started(&self) -> bool {
        self.services.iter().all(|s| s.state != State::Waiting)
    }

    /// The next instant `poll` has work to do (a backoff expiring).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.services
            .iter()
            .filter_map(|s| match s.state {
                State::Backoff(at) => Some(at),
                _ => None,
            })
            .min()
    }

    fn set_running(&self, index: usize, running: bool) {
        lock(&self.running).insert(self.services[index].config.name.clone(), running);
    }

    fn start(&mut self, index: usize) -> Option<Outcome> {
        if self.services[index]
            .task
            .as_ref()
            .is_some_and(task::already_done)
        {
            let service = &mut self.services[index];
            info!(
                "task {} already succeeded on an earlier boot; skipped",
                service.config.name
            );
            service.ready = true;
            service.state = State::Stopped;
            return None;
        }
        let first_start = self.services[index].generation == 0;
        self.services[index].generation += 1;
        let generation = self.services[index].generation;
        let name = self.services[index].config.name.clone();
        match self.spawn(index, generation) {
            Ok(pid) => {
                info!("started {name} (pid {pid})");
                let service = &mut self.services[index];
                service.state = State::Running(pid);
                service.started_at = Instant::now();
                if let Some(spec) = &service.task {
                    task::start_timer(&self.events, index, generation, spec.timeout);
                }
                self.set_running(index, true);
                if first_start && self.services[index].task.is_none() {
                    self.start_probe(index);
                }
                None
            }
            Err(err) => {
                info!("cannot start {name}: {err}");
                lock(&self.services[index].tail).push(format!("cannot start: {err}"));
                // Treat like an immediate exit with status 127 (as a shell would).
                self.after_exit(index, 127 << 8)
            }
        }
    }

    fn spawn(&self, index: usize, generation: u64) -> Result<libc::pid_t, String> {
        let service = &self.services[index];
        let config = &service.config;
        let credentials = if self.apply_credentials {
            Some(
                users::resolve_system(config.user.as_deref(), config.group.as_deref())
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let working_directory = config.working_directory.clone().or_else(|| {
            credentials
                .as_ref()
                .map(|c| c.home.clone())
                .filter(|home| std::path::Path::new(home).is_dir())
        });
        let launch = Launch {
            argv: config.exec.clone(),
            credentials,
            environment: config
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            working_directory,
        };
        let (reader, writer) = process::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let command = process::command(&launch, writer).map_err(|e| e.to_string())?;
        let events = self.events.clone();
        let pid = self
            .table
            .spawn(
                command,
                Box::new(move |status| {
                    let _ = events.send(Event::Exited {
                        service: index,
                        generation,
                        status,
                    });
                }),
            )
            .map_err(|e| e.to_string())?;
        let name = config.name.clone();
        let tail = Arc::clone(&service.tail);
        let open = Arc::clone(&service.output_open);
        open.fetch_add(1, Ordering::AcqRel);
        let spawned = std::thread::Builder::new()
            .name(format!("log-{name}"))
            .spawn(move || {
                process::for_each_line(reader, |line| {
                    log::line(&format!("{name}| {line}"));
                    lock(&tail).push(line);
                });
                open.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(err) = spawned {
            service.output_open.fetch_sub(1, Ordering::AcqRel);
            info!("cannot start the output thread of {}: {err}", config.name);
        }
        Ok(pid)
    }

    fn start_probe(&mut self, index: usize) {
        let service = &mut self.services[index];
        let Some(probe) = service.probe.clone() else {
            service.ready = true;
            info!("{} is up", service.config.name);
            return;
        };
        let timeout = service.ready_timeout;
        let table = Arc::clone(&self.table);
        let events = self.events.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("probe-{}", service.config.name))
            .spawn(move || {
                let result = probe::wait_ready(&probe, &table, timeout);
                let _ = events.send(Event::Probed {
                    service: index,
                    result,
                });
            });
        if let Err(err) = spawned {
            let _ = self.events.send(Event::Probed {
                service: index,
                result: Err(format!("cannot start the probe thread: {err}")),
            });
        }
    }

    fn not_ready(&self, index: usize, why: String) -> Outcome {
        let service = &self.services[index];
        // A process that exited for good: its last lines may still be in the pipe (the
        // exit can be seen first). Wait for the output thread's EOF, briefly: a child it
        // left behind may hold the pipe open.
        if matches!(service.state, State::Stopped) {
            let deadline = Instant::now() + OUTPUT_DRAIN;
            while service.output_open.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let (what, lines) = if service.task.is_some() {
            ("task", 10)
        } else {
            ("service", 5)
        };
        let tail = lock(&service.tail).last(lines);
        let detail = if tail.is_empty() {
            format!("{what} {} not ready: {why}", service.config.name)
        } else {
            format!(
                "{what} {} not ready: {why}; output: {tail}",
                service.config.name
            )
        };
        Outcome::NotReady {
            service: service.config.name.clone(),
            detail,
        }
    }

    fn check_all_ready(&mut self) -> Option<Outcome> {
        if !self.announced && self.services.iter().all(|s| s.ready) {
            self.announced = true;
            return Some(Outcome::AllReady);
        }
        None
    }

    /// A task exited: done (marker written) or the boot is not ready.
    fn task_exited(&mut self, index: usize, status: i32) -> Option<Outcome> {
        let service = &mut self.services[index];
        service.state = State::Stopped;
        if self.stopping {
            return None;
        }
        let name = service.config.name.clone();
        if service.timed_out {
            let ms = service.task.as_ref().map_or(0, |t| t.timeout.as_millis());
            return Some(self.not_ready(index, format!("killed after its {ms} ms deadline")));
        }
        if exit_code(status) != Some(0) {
            return Some(self.not_ready(index, format!("exited with {}", describe_status(status))));
        }
        if let Some(spec) = &service.task
            && let Err(err) = task::mark_done(spec)
        {
            info!("task {name}: cannot write its first-boot marker: {err}");
        }
        service.ready = true;
        info!("task {name} finished");
        self.check_all_ready()
    }

    fn after_exit(&mut self, index: usize, status: i32) -> Option<Outcome> {
        self.set_running(index, false);
        if self.services[index].task.is_some() {
            return self.task_exited(index, status);
        }
        let service = &mut self.services[index];
        let succeeded = exit_code(status) == Some(0);
        let restart = !self.stopping
            && match service.config.restart {
                RestartPolicy::No => false,
                RestartPolicy::OnFailure => !succeeded,
                RestartPolicy::Always => true,
            };
        if !restart {
            service.state = State::Stopped;
            // A clean exit before the probe succeeded is fine (a one-shot job whose probe
            // checks what it left behind); the probe decides.
            if !service.ready && !self.stopping && !succeeded {
                return Some(
                    self.not_ready(index, format!("exited with {}", describe_status(status))),
                );
            }
            return None;
        }
        if service.started_at.elapsed() >= STABLE_RUN {
            service.failures = 0;
        }
        let delay = backoff(service.failures);
        service.failures = service.failures.saturating_add(1);
        info!(
            "restarting {} in {} ms",
            service.config.name,
            delay.as_millis()
        );
        service.state = State::Backoff(Instant::now() + delay);
        None
    }

    /// Updates the state for a service event; returns an outcome if the boot settles.
    pub fn handle(&mut self, event: &Event) -> Option<Outcome> {
        match *event {
            Event::Exited {
                service,
                generation,
                status,
            } => {
                let current = self.services.get(service)?;
                if current.generation != generation {
                    return None;
                }
                info!(
                    "{} exited with {}",
                    current.config.name,
                    describe_status(status)
                );
                self.after_exit(service, status)
            }
            Event::Probed {
                service,
                ref result,
            } => {
                let name = self.services.get(service)?.config.name.clone();
                match result {
                    Ok(()) => {
                        info!("{name} is ready");
                        self.services[service].ready = true;
                        self.check_all_ready()
                    }
                    Err(err) => {
                        let ms = self.services[service].ready_timeout.as_millis();
                        Some(self.not_ready(service, format!("no readiness after {ms} ms ({err})")))
                    }
                }
            }
            Event::TaskTimeout {
                service,
                generation,
            } => {
                let current = self.services.get_mut(service)?;
                if current.generation != generation {
                    return None;
                }
                if let State::Running(pid) = current.state {
                    info!(
                        "task {} passed its deadline; killing it",
                        current.config.name
                    );
                    current.timed_out = true;
                    let _ = crate::sys::kill(-pid, libc::SIGKILL);
                    let _ = crate::sys::kill(pid, libc::SIGKILL);
                }
                None
            }
            Event::Shutdown(_) | Event::ChecksDone => None,
        }
    }

    /// Stops every service: SIGTERM to each process group in reverse start order, then
    /// SIGKILL after `timeout`. Consumes events from `events` while waiting.
    pub fn stop_all(&mut self, events: &Receiver<Event>, timeout: Duration) {
        self.stopping = true;
        for &index in self.order.iter().rev() {
            match self.services[index].state {
                State::Running(pid) => {
                    info!("stopping {}", self.services[index].config.name);
                    let _ = crate::sys::kill(-pid, libc::SIGTERM);
                    let _ = crate::sys::kill(pid, libc::SIGTERM);
                }
                State::Waiting | State::Backoff(_) => self.services[index].state = State::Stopped,
                State::Stopped => {}
            }
        }
        if !self.wait_stopped(events, timeout) {
            for service in &self.services {
                if let State::Running(pid) = service.state {
                    info!(
                        "killing {} after {} ms",
                        service.config.name,
                        timeout.as_millis()
                    );
                    let _ = crate::sys::kill(-pid, libc::SIGKILL);
                    let _ = crate::sys::kill(pid, libc::SIGKILL);
                }
            }
            self.wait_stopped(events, Duration::from_secs(2));
        }
    }

    fn wait_stopped(&mut self, events: &Receiver<Event>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self
                .services
                .iter()
                .any(|s| matches!(s.state, State::Running(_)))
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(event @ Event::Exited { .. }) => {
                    let _ = self.handle(&event);
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Names of services that never became ready.
    pub fn unready(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|s| !s.ready)
            .map(|s| s.config.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ReapMode;
    use guest_init::config::{InitConfig, Probe, ReadyConfig, TaskConfig, TaskWhen};
    use std::collections::BTreeMap;
    use std::sync::mpsc;

    fn service(name: &str, script: &str, restart: RestartPolicy, after: &[&str]) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            exec: vec!["/bin/sh".into(), "-c".into(), script.into()],
            user: None,
            group: None,
            environment: BTreeMap::from([("GREETING".into(), "hi".into())]),
            working_directory: None,
            restart,
            after: after.iter().map(|s| s.to_string()).collect(),
            ready: None,
        }
    }

    struct Harness {
        supervisor: Supervisor,
        rx: Receiver<Event>,
    }

    impl Harness {
        fn new(services: Vec<ServiceConfig>) -> Harness {
            let config = InitConfig {
                services,
                ..InitConfig::default()
            };
            config.validate().expect("valid config");
            let order = config.start_order().expect("acyclic");
            let table = ProcessTable::new(ReapMode::Registered);
            table.spawn_polling_reaper();
            let (tx, rx) = mpsc::channel();
            let mut supervisor = Supervisor::new(config.services, order, table, tx);
            supervisor.apply_credentials = false;
            Harness { supervisor, rx }
        }

        /// Runs the event loop until an outcome or the timeout.
        fn run(&mut self, timeout: Duration) -> Option<Outcome> {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(outcome) = self.supervisor.poll() {
                    return Some(outcome);
                }
                let mut wait = deadline.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    return None;
                }
                if let Some(at) = self.supervisor.next_deadline() {
                    wait = wait.min(at.saturating_duration_since(Instant::now()));
                }
                if let Ok(event) = self.rx.recv_timeout(wait)
                    && let Some(outcome) = self.supervisor.handle(&event)
                {
                    return Some(outcome);
                }
            }
        }
    }

    /// A harness for services and tasks, the tasks' markers in `markers`.
    fn with_tasks(config: InitConfig, markers: &std::path::Path) -> Harness {
        config.validate().expect("valid config");
        let order = config.start_order().expect("acyclic");
        let specs = crate::task::specs(&config)
            .into_iter()
            .zip(config.units().iter().map(|u| u.name.clone()))
            .map(|(spec, name)| {
                spec.map(|mut spec| {
                    if spec.marker.is_some() {
                        spec.marker = Some(markers.join(format!("{name}.done")));
                    }
                    spec
                })
            })
            .collect();
        let table = ProcessTable::new(ReapMode::Registered);
        table.spawn_polling_reaper();
        let (tx, rx) = mpsc::channel();
        let mut supervisor = Supervisor::with_tasks(config.units(), specs, order, table, tx);
        supervisor.apply_credentials = false;
        Harness { supervisor, rx }
    }

    fn task(name: &str, script: &str, when: TaskWhen, timeout_ms: u64) -> TaskConfig {
        TaskConfig {
            name: name.into(),
            exec: vec!["/bin/sh".into(), "-c".into(), script.into()],
            when,
            user: None,
            group: None,
            environment: BTreeMap::new(),
            working_directory: None,
            timeout_ms: Some(timeout_ms),
            before: Vec::new(),
            after: Vec::new(),
        }
    }

    #[test]
    fn first_boot_task_runs_once_before_the_services() {
        let dir = temp_dir("task-once");
        let log = dir.join("log");
        let l = log.display();
        let ready = dir.join("db.ready");
        let mut db = service(
            "db",
            &format!("echo db >> {l}; touch {}; exec sleep 30", ready.display()),
            RestartPolicy::No,
            &[],
        );
        db.ready = Some(ReadyConfig::new(Probe::File(ready.display().to_string())));
        let config = InitConfig {
            services: vec![db],
            tasks: vec![task(
                "initdb",
                &format!("echo initdb output; sleep 0.2; echo initdb >> {l}"),
                TaskWhen::FirstBoot,
                10_000,
            )],
            ..InitConfig::default()
        };
        let markers = dir.join("markers");
        for boot in 0..2 {
            let mut h = with_tasks(config.clone(), &markers);
            assert_eq!(
                h.run(Duration::from_secs(10)),
                Some(Outcome::AllReady),
                "boot {boot}"
            );
            h.supervisor.stop_all(&h.rx, Duration::from_secs(5));
            let _ = std::fs::remove_file(&ready);
        }
        assert!(markers.join("initdb.done").exists());
        // Once, and before the service; the second boot ran only the service.
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            "initdb\ndb\ndb\n"
        );
    }

    #[test]
    fn failing_task_reports_its_output_and_blocks_services() {
        let dir = temp_dir("task-fail");
        let log = dir.join("log");
        let config = InitConfig {
            services: vec![service(
                "web",
                &format!("echo web >> {}; exec sleep 30", log.display()),
                RestartPolicy::Always,
                &[],
            )],
            tasks: vec![task(
                "keys",
                "echo cannot write /etc/ssh; exit 3",
                TaskWhen::EveryBoot,
                10_000,
            )],
            ..InitConfig::default()
        };
        let mut h = with_tasks(config, &dir);
        match h.run(Duration::from_secs(10)) {
            Some(Outcome::NotReady { service, detail }) => {
                assert_eq!(service, "keys");
                assert!(
                    detail.starts_with("task keys not ready: exited with"),
                    "{detail}"
                );
                assert!(detail.contains("cannot write /etc/ssh"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!log.exists(), "the service must not start");
        assert!(!dir.join("keys.done").exists());
        h.supervisor.stop_all(&h.rx, Duration::from_secs(5));
    }

    #[test]
    fn task_past_its_deadline_is_killed() {
        let dir = temp_dir("task-timeout");
        let config = InitConfig {
            tasks: vec![task(
                "slow",
                "echo started; exec sleep 30",
                TaskWhen::FirstBoot,
                300,
            )],
            ..InitConfig::default()
        };
        let mut h = with_tasks(config, &dir);
        let started = Instant::now();
        match h.run(Duration::from_secs(10)) {
            Some(Outcome::NotReady { detail, .. }) => {
                assert!(
                    detail.contains("killed after its 300 ms deadline"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!dir.join("slow.done").exists());
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("guest-init-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn starts_in_dependency_order_and_becomes_ready() {
        let dir = temp_dir("order");
        let log = dir.join("log");
        let l = log.display();
        let mut web = service(
            "web",
            &format!(
                "echo web >> {l}; touch {}/web.ready; exec sleep 30",
                dir.display()
            ),
            RestartPolicy::Always,
            &["db"],
        );
        web.ready = Some(ReadyConfig {
            probe: Probe::File(format!("{}/web.ready", dir.display())),
            timeout_ms: Some(5_000),
        });
        let mut db = service(
            "db",
            &format!(
                "sleep 0.3; echo db $GREETING >> {l}; touch {}/db.ready; exec sleep 30",
                dir.display()
            ),
            RestartPolicy::No,
            &[],
        );
        db.ready = Some(ReadyConfig::new(Probe::File(format!(
            "{}/db.ready",
            dir.display()
        ))));
        let mut h = Harness::new(vec![web, db]);
        assert_eq!(h.run(Duration::from_secs(10)), Some(Outcome::AllReady));
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "db hi\nweb\n");
        let running = h.supervisor.running();
        assert_eq!(lock(&running).get("web"), Some(&true));
        let started = Instant::now();
        h.supervisor.stop_all(&h.rx, Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "SIGTERM should suffice"
        );
        assert_eq!(lock(&running).get("web"), Some(&false));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn restarts_on_failure_with_backoff_until_success() {
        let dir = temp_dir("restart");
        let counter = dir.join("count");
        // Fails twice, then becomes ready on the third run.
        let script = format!(
            "echo x >> {c}; n=$(wc -l < {c}); [ $n -ge 3 ] && touch {c}.ready && exec sleep 30; \
             echo boom; exit 1",
            c = counter.display()
        );
        let mut job = service("job", &script, RestartPolicy::OnFailure, &[]);
        job.ready = Some(ReadyConfig {
            probe: Probe::File(format!("{}.ready", counter.display())),
            timeout_ms: Some(5_000),
        });
        let mut h = Harness::new(vec![job]);
        assert_eq!(h.run(Duration::from_secs(10)), Some(Outcome::AllReady));
        let runs = std::fs::read_to_string(&counter)
            .expect("counter")
            .lines()
            .count();
        assert_eq!(runs, 3);
        h.supervisor.stop_all(&h.rx, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn service_exiting_before_ready_reports_not_ready() {
        let mut bad = service(
            "bad",
            "echo cannot bind port 80; exit 2",
            RestartPolicy::No,
            &[],
        );
        bad.ready = Some(ReadyConfig::new(Probe::Tcp(1)));
        let mut h = Harness::new(vec![bad]);
        match h.run(Duration::from_secs(5)) {
            Some(Outcome::NotReady { service, detail }) => {
                assert_eq!(service, "bad");
                assert!(detail.contains("exit status 2"), "{detail}");
                // The report waits for the output thread's last lines.
                assert!(detail.contains("cannot bind port 80"), "{detail}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn probe_timeout_reports_not_ready_while_restarting() {
        let mut crashing = service("crash", "echo dying; exit 1", RestartPolicy::Always, &[]);
        crashing.ready = Some(ReadyConfig {
            probe: Probe::File("/nonexistent/ready".into()),
            timeout_ms: Some(700),
        });
        let mut h = Harness::new(vec![crashing]);
        match h.run(Duration::from_secs(5)) {
            Some(Outcome::NotReady { detail, .. }) => {
                assert!(detail.contains("no readiness after 700 ms"), "{detail}");
                assert!(detail.contains("dying"), "{detail}");
            }
            other => panic!("unexpected {other:?}"),
        }
        h.supervisor.stop_all(&h.rx, Duration::from_secs(2));
        assert_eq!(h.supervisor.unready(), ["crash"]);
    }

    #[test]
    fn missing_program_fails_and_stop_kills_stubborn_services() {
        let mut missing = service("missing", "", RestartPolicy::No, &[]);
        missing.exec = vec!["/nonexistent/daemon".into()];
        let mut h = Harness::new(vec![missing]);
        assert!(matches!(
            h.run(Duration::from_secs(5)),
            Some(Outcome::NotReady { .. })
        ));

        let stubborn = service(
            "stubborn",
            "trap '' TERM; while :; do sleep 0.1; done",
            RestartPolicy::Always,
            &[],
        );
        let mut h = Harness::new(vec![stubborn]);
        assert_eq!(h.run(Duration::from_secs(5)), Some(Outcome::AllReady));
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        h.supervisor.stop_all(&h.rx, Duration::from_millis(300));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(!lock(&h.supervisor.running()).values().any(|&r| r));
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(50), Duration::from_secs(10));
    }
}
