//! The daemon: schedules sweeps, feeds their results through the monitor
//! state machine into the store, and drains the outbox to the sinks.
//!
//! Every monitor that is due joins one sweep over its hosts' ports (all
//! 65,535, or its `ports`), probed, decided and stored in slices of at most
//! `scan.commit_every` ([`sweep`]). Ports that deviated once are re-checked
//! alone after `recheck`. SIGHUP reloads the configuration; monitors changed
//! through the HTTP server are reloaded from the store ([`control`]);
//! SIGTERM/SIGINT end the sweep after the slice under way (it counts as
//! inconclusive; the monitors not yet scanned stay due) and stop.
//!
//! The decisions are pure and live elsewhere: what to sweep when, and what a
//! scan found, in [`palisade_core::plan`]; what a scan or a removal decides
//! in [`sweep::decide`] and [`sweep::decide_removal`]. This module holds the
//! loop and the reload; [`sweep`] runs one sweep, [`delivery`] drains the
//! outbox, [`envelope`] builds what the sinks publish.

pub mod control;
pub mod delivery;
pub mod envelope;
mod health;
pub mod sweep;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::cluster::coordinator::{AgentEvent, Coordinator};
use crate::config::{self, Config, ConfigErrors};
use crate::http::{self, AppState, HttpError, HttpServer};
use crate::metrics::Metrics;
use crate::store::{PruneBudget, Store, StoreError, prune_cutoff};
use control::{Command, Control, DaemonHandle, LastSweep, SweepUnderWay};
use delivery::{DeliveryError, OutboxDelivery, SHUTDOWN_GRACE};
use palisade_core::health::HealthState;
use palisade_core::monitor::MonitorSpec;
use palisade_core::monitor::{Millis, MonitorState};
use palisade_core::plan::{self, SweepPlan};

pub use envelope::rfc3339;
pub use sweep::{Probe, SliceProbe, Slicing, SweepReport};

/// Daemon failures.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the sweep failed: {0}")]
    Scan(String),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::coordinator::CoordinatorError),
}

/// How often the daemon prunes the history older than `store.retain`
/// (sooner while a call left some for the next).
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long a `--once` run waits for its sinks after its sweep.
pub const ONCE_DRAIN: Duration = Duration::from_secs(10);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub config_path: PathBuf,
    /// One sweep of every monitor now, then exit.
    pub once: bool,
    /// Write events as JSON lines to this file ("-" for stdout), in addition
    /// to the configured sinks.
    pub events: Option<PathBuf>,
}

/// What a `--once` run or a stopped daemon did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub sweeps: u64,
    pub events: u64,
    /// A sweep failed or was abandoned (its scans are recorded inconclusive).
    pub inconclusive: bool,
    /// Events still wait in the outbox for a sink (delivered on the next
    /// run): the sinks that are behind.
    pub undelivered: Vec<String>,
    /// The process's peak resident memory (VmHWM), in KiB, where the
    /// kernel tells it.
    pub peak_rss_kib: Option<u64>,
}

/// This process's peak resident set size (`VmHWM` of `/proc/self/status`),
/// in KiB; `None` where there is no such file.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Now, in unix milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// `palisade://<this host's name>`: the `source` of every envelope.
pub fn source() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    format!(
        "palisade://{}",
        if name.is_empty() { "localhost" } else { name }
    )
}

/// What the daemon keeps of one monitor between sweeps.
#[derive(Debug, Default)]
struct Tracked {
    state: MonitorState,
    /// When its last conclusive full scan ended (started, as stored, for
    /// one reloaded from the store): staleness counts from it.
    last_conclusive: Option<Millis>,
}

/// The daemon's state between sweeps.
pub struct Daemon {
    options: Options,
    config: Config,
    store: Store,
    /// What the daemon keeps of each configured monitor, by name.
    tracked: HashMap<String, Tracked>,
    delivery: OutboxDelivery,
    source: String,
    events: u64,
    /// Self-monitoring: failing sweeps, stale monitors.
    health: HealthState,
    /// When this daemon started: the age of a monitor never scanned.
    started: Millis,
    /// A monitor was scanned conclusively since the last staleness check.
    ages_changed: bool,
    /// When a monitor may become stale next, as last computed (`None`:
    /// compute it again).
    next_stale_check: Option<Millis>,
    /// When to prune the history next ([`Daemon::prune`]).
    next_prune: Millis,
    /// What the HTTP server sees of the daemon and asks of it.
    control: Control,
    metrics: Arc<Metrics>,
    /// The dashboard, the API and `/metrics`, if `[http]` is configured.
    http: Option<HttpServer>,
    /// The scan agents probe the sweeps, if `[cluster]` is configured.
    cluster: Option<Coordinator>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("options", &self.options)
            .field("monitors", &self.config.monitors.len())
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Loads the configuration and the store, imports the configuration
    /// file's monitors into the store, and resumes where the last run left
    /// off: monitors gone since (or disabled) are removed. Starts the HTTP
    /// server if `[http]` is configured.
    pub fn new(options: Options) -> Result<Daemon, DaemonError> {
        let begun = Instant::now();
        let mut config = config::load(&options.config_path)?;
        let loaded = begun.elapsed();
        let mut store = Store::open_checked(&config.store.path)?;
        let now = now_ms();
        config.monitors = import_monitors(&mut store, std::mem::take(&mut config.monitors), now)?;
        let imported = begun.elapsed();
        let saved = store.load_states()?;
        let mut last_conclusive: HashMap<String, Millis> = saved
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.last_full?)))
            .collect();
        let health = store.load_health()?;
        let recovered = plan::recover(&config.monitors, saved, now);
        let tracked = recovered
            .states
            .into_iter()
            .map(|(name, state)| {
                let last_conclusive = last_conclusive.remove(&name);
                let tracked = Tracked {
                    state,
                    last_conclusive,
                };
                (name, tracked)
            })
            .collect();
        drop(last_conclusive);
        tracing::info!(
            monitors = config.monitors.len(),
            config_s = loaded.as_secs_f64(),
            import_s = (imported - loaded).as_secs_f64(),
            states_s = (begun.elapsed() - imported).as_secs_f64(),
            "monitors loaded"
        );
        let metrics = Arc::new(Metrics::new());
        let delivery = OutboxDelivery::start(
            &mut store,
            &config.store.path,
            delivery::sink_specs(&config.sinks, options.events.as_ref()),
            Arc::clone(&metrics),
        )?;
        let control = Control::new(now, recovered.schedule);
        let http = match &config.http {
            Some(settings) => {
                let auth =
                    http::auth::Auth::new(settings.tokens.as_deref()).map_err(HttpError::from)?;
                let state = AppState::new(
                    &config.store.path,
                    control.handle(),
                    Arc::clone(&metrics),
                    auth,
                );
                // `[cluster]` holds until a restart, and so do its labels.
                state.set_cluster_labels(config.agent_labels());
                Some(HttpServer::start(settings, state)?)
            }
            None => None,
        };
        let cluster = match &config.cluster {
            Some(settings) => {
                let cluster = Coordinator::start(settings, agents_seen(&config.store.path))?;
                // Agents the store thinks live whose heartbeat is no longer in
                // the bucket went while no coordinator watched.
                for agent in store.agents()? {
                    if agent.gone_at.is_none() && !cluster.is_live(&agent.name) {
                        store.record_agent_gone(&agent.name, now)?;
                    }
                }
                Some(cluster)
            }
            None => None,
        };
        let mut daemon = Daemon {
            options,
            config,
            store,
            tracked,
            delivery,
            source: source(),
            events: 0,
            health,
            started: now,
            ages_changed: true,
            next_stale_check: None,
            next_prune: now,
            control,
            metrics,
            http,
            cluster,
        };
        for (name, state) in recovered.removed {
            daemon.remove_monitor(&name, state, now)?;
        }
        daemon.drain()?;
        Ok(daemon)
    }

    /// The HTTP server's side of the daemon (tests drive it directly).
    pub fn handle(&self) -> DaemonHandle {
        self.control.handle()
    }

    /// How many monitors it watches (the file's and the store's).
    pub fn monitor_count(&self) -> usize {
        self.config.monitors.len()
    }

    /// Where the HTTP server listens, if it runs.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Resolves a removed monitor's incidents and forgets its state.
    fn remove_monitor(
        &mut self,
        name: &str,
        state: MonitorState,
        at: Millis,
    ) -> Result<(), DaemonError> {
        let (step, outbox) = sweep::decide_removal(name, state, at, &self.source);
        self.store.record_removal(name, &step, &outbox, at)?;
        self.events += step.events.len() as u64;
        Ok(())
    }

    /// Re-reads the configuration (SIGHUP) and imports its monitors: new
    /// monitors are due now, removed ones resolve their incidents, changed
    /// ones apply from the next scan; new sinks start, removed ones stop,
    /// changed ones restart. A file that fails the checks changes nothing.
    pub fn reload(&mut self) -> Result<(), DaemonError> {
        let mut config = config::load(&self.options.config_path)?;
        if config.store.path != self.config.store.path {
            tracing::warn!(
                "store.path changed: the daemon keeps {} until it is restarted",
                self.config.store.path.display()
            );
        }
        if config.http != self.config.http {
            tracing::warn!("[http] changed: the HTTP server keeps its settings until restarted");
        }
        let now = now_ms();
        config.monitors =
            import_monitors(&mut self.store, std::mem::take(&mut config.monitors), now)?;
        self.delivery.reload(
            &mut self.store,
            delivery::sink_specs(&config.sinks, self.options.events.as_ref()),
        )?;
        let path = self.config.store.path.clone();
        let http = self.config.http.clone();
        let monitors = std::mem::take(&mut config.monitors);
        if config.cluster != self.config.cluster {
            tracing::warn!("[cluster] changed: the coordinator keeps its settings until restarted");
        }
        let cluster = self.config.cluster.take();
        self.config = config;
        self.config.store.path = path;
        self.config.http = http;
        self.config.cluster = cluster;
        self.apply_monitors(monitors, now)?;
        tracing::info!(
            monitors = self.config.monitors.len(),
            sinks = ?self.delivery.names(),
            "configuration reloaded"
        );
        self.drain().map(|_| ())
    }

    /// Takes the monitors the store holds now (changed through the API).
    fn reload_monitors(&mut self) -> Result<(), DaemonError> {
        let monitors = self.store.enabled_monitors()?;
        self.apply_monitors(monitors, now_ms())?;
        tracing::info!(monitors = self.config.monitors.len(), "monitors reloaded");
        self.drain().map(|_| ())
    }

    /// Makes `monitors` the ones the daemon scans: those gone resolve their
    /// incidents, new ones are due now, changed ones apply from the next
    /// scan.
    fn apply_monitors(
        &mut self,
        monitors: Vec<MonitorSpec>,
        now: Millis,
    ) -> Result<(), DaemonError> {
        let kept: HashSet<&str> = monitors.iter().map(|m| m.name.as_str()).collect();
        let gone: Vec<String> = self
            .config
            .monitors
            .iter()
            .filter(|old| !kept.contains(old.name.as_str()))
            .map(|old| old.name.clone())
            .collect();
        drop(kept);
        for name in gone {
            let state = self.tracked.remove(&name).unwrap_or_default().state;
            self.control.schedule().remove(&name);
            self.remove_monitor(&name, state, now)?;
        }
        {
            let mut schedule = self.control.schedule();
            for m in &monitors {
                if !self.tracked.contains_key(&m.name) {
                    self.tracked.insert(m.name.clone(), Tracked::default());
                }
                schedule.add(&m.name, now);
            }
        }
        self.config.monitors = monitors;
        self.next_stale_check = None;
        Ok(())
    }

    /// Does what the HTTP server asked.
    fn obey(&mut self, command: Command) -> Result<(), DaemonError> {
        match command {
            Command::MonitorsChanged => self.reload_monitors(),
            Command::ScanNow(name) => {
                if self.control.schedule().scan_now(&name, now_ms()) {
                    tracing::info!(monitor = %name, "scan requested");
                }
                Ok(())
            }
        }
    }

    /// Runs one sweep through the data path, showing it to the HTTP server
    /// while it runs; whether it was conclusive.
    fn run_sweep(&mut self, plan: SweepPlan, stop: &AtomicBool) -> Result<bool, DaemonError> {
        if let Some(mut cluster) = self.cluster.take() {
            let slicing = Slicing {
                rate: cluster.rate(),
                by_label: true,
            };
            let per_host_rate = Some(self.config.scan.per_host_rate);
            let mut probe = |slice: &SliceProbe<'_>, stop: &AtomicBool| {
                cluster.probe(slice, per_host_rate, stop)
            };
            let swept = self.run_sweep_with(plan, slicing, stop, &mut probe);
            let tally = cluster.take_tally();
            self.cluster = Some(cluster);
            tracing::info!(
                slices = tally.slices,
                jobs = tally.jobs,
                results = tally.merged,
                duplicates = tally.duplicates,
                foreign = tally.foreign,
                failed = tally.failed,
                queueing_s = tally.queueing.as_secs_f64(),
                merging_s = tally.merging.as_secs_f64(),
                per_job_us = tally.per_job_us().round(),
                per_result_us = tally.per_result_us().round(),
                "sweep through the agents"
            );
            return Ok(swept?.conclusive);
        }
        let config = self.scan_config();
        let metrics = Arc::clone(&self.metrics);
        let mut probe = |slice: &SliceProbe<'_>, stop: &AtomicBool| {
            sweep::probe(&config, &metrics, slice, stop)
        };
        let slicing = Slicing {
            rate: self.config.scan.rate,
            by_label: false,
        };
        Ok(self
            .run_sweep_with(plan, slicing, stop, &mut probe)?
            .conclusive)
    }

    /// The sweep due at `now`, if any, with `probe` standing in for the
    /// data path: all the daemon does around the probing (planning each
    /// slice, evaluating and storing every monitor's scan, the schedule)
    /// as in a real sweep. For benchmarks of the daemon's own cost.
    pub fn sweep_due_with(
        &mut self,
        now: Millis,
        stop: &AtomicBool,
        probe: &mut Probe<'_>,
    ) -> Result<Option<SweepReport>, DaemonError> {
        let planned = Instant::now();
        let plan = self.control.schedule().take_due(now);
        let Some(plan) = plan else {
            return Ok(None);
        };
        let taken = planned.elapsed();
        let slicing = Slicing {
            rate: self.config.scan.rate,
            by_label: false,
        };
        let mut report = self.run_sweep_with(plan, slicing, stop, probe)?;
        report.plan += taken;
        Ok(Some(report))
    }

    /// Runs the sweep of `plan` with `probe`, showing it to the HTTP server
    /// while it runs.
    fn run_sweep_with(
        &mut self,
        plan: SweepPlan,
        slicing: Slicing,
        stop: &AtomicBool,
        probe: &mut Probe<'_>,
    ) -> Result<SweepReport, DaemonError> {
        let started = now_ms();
        let kind = plan.kind.as_str().to_owned();
        let monitors = plan.monitors.len();
        let names = plan.monitors.iter().map(|(n, _)| Arc::clone(n)).collect();
        self.control.update(|live| {
            live.sweeping = Some(SweepUnderWay {
                started_ms: started,
                kind: kind.clone(),
                monitors,
                names: Arc::new(names),
            });
        });
        let result = self.sweep(plan, slicing, stop, probe);
        let failure = match &result {
            Ok(report) if report.conclusive => None,
            Ok(_) => Some("inconclusive (see the log)".to_owned()),
            Err(e) => Some(e.to_string()),
        };
        let finished = now_ms();
        self.control.update(|live| {
            live.sweeping = None;
            live.last_sweep = Some(LastSweep {
                started_ms: started,
                finished_ms: finished,
                kind,
                monitors,
                failure,
            });
        });
        result
    }

    /// Runs until stopped (or one sweep with `--once`); then stops the
    /// sinks, waiting for them [`SHUTDOWN_GRACE`] at most.
    pub fn run(&mut self, stop: &AtomicBool, reload: &AtomicBool) -> Result<Outcome, DaemonError> {
        let result = self.run_until_stopped(stop, reload);
        self.control.update(|live| live.stopping = true);
        if let Some(http) = &mut self.http {
            http.shutdown();
        }
        let behind = self.delivery_behind();
        self.delivery.shutdown(SHUTDOWN_GRACE);
        let mut outcome = result?;
        outcome.undelivered = behind?;
        if !outcome.undelivered.is_empty() {
            tracing::warn!(
                sinks = ?outcome.undelivered,
                "events wait in the outbox; they are delivered when the daemon runs again"
            );
        }
        outcome.peak_rss_kib = peak_rss_kib();
        Ok(outcome)
    }

    /// The sinks that have events left to deliver.
    fn delivery_behind(&self) -> Result<Vec<String>, DaemonError> {
        Ok(self.delivery.behind(&self.store)?)
    }

    fn run_until_stopped(
        &mut self,
        stop: &AtomicBool,
        reload: &AtomicBool,
    ) -> Result<Outcome, DaemonError> {
        let mut outcome = Outcome::default();
        if self.options.once {
            if self.config.monitors.is_empty() {
                // Nothing to sweep: no sweep (`run` says so).
                return Ok(outcome);
            }
            let all = SweepPlan::full(self.config.monitors.iter().map(|m| m.name.as_str()));
            outcome.inconclusive |= !self.run_sweep(all, stop)?;
            outcome.sweeps += 1;
            outcome.events = self.events;
            self.delivery.drain_for(&self.store, ONCE_DRAIN, stop)?;
            self.prune(now_ms());
            return Ok(outcome);
        }
        while !stop.load(Ordering::Relaxed) {
            if reload.swap(false, Ordering::Relaxed)
                && let Err(e) = self.reload()
            {
                tracing::error!("reload failed, keeping the old configuration: {e}");
            }
            let now = now_ms();
            self.check_staleness(now)?;
            let due = self.control.schedule().take_due(now);
            if let Some(plan) = due {
                outcome.inconclusive |= !self.run_sweep(plan, stop)?;
                outcome.sweeps += 1;
                continue;
            }
            self.drain()?;
            if now >= self.next_prune {
                self.prune(now);
            }
            let next_wake = self.control.schedule().next_wake();
            let nap = next_wake.map_or(200, |at| (at - now).clamp(1, 200));
            if let Some(command) = self.control.next(Duration::from_millis(nap as u64))
                && let Err(e) = self.obey(command)
            {
                tracing::error!("{e}");
            }
        }
        outcome.events = self.events;
        Ok(outcome)
    }

    /// Deletes a bounded share ([`PruneBudget::DAEMON`]) of the history
    /// older than `store.retain` ([`Store::prune`]), and says when to go on:
    /// at once if some is left, else in [`PRUNE_EVERY`]. A failure is
    /// logged and tried again then; it stops nothing.
    fn prune(&mut self, now: Millis) {
        let cutoff = prune_cutoff(now, self.config.store.retain);
        let sinks = self.delivery.names();
        let every = PRUNE_EVERY.as_millis() as Millis;
        match self.store.prune(cutoff, &sinks, PruneBudget::DAEMON) {
            Ok(pruned) => {
                self.next_prune = if pruned.done { now + every } else { now };
                let cutoff = rfc3339(cutoff);
                if pruned.rows() > 0 {
                    tracing::info!(
                        before = %cutoff,
                        scans = pruned.scans,
                        state_changes = pruned.state_changes,
                        incidents = pruned.incidents,
                        events = pruned.outbox,
                        rows = pruned.rows(),
                        done = pruned.done,
                        "pruned the history older than store.retain"
                    );
                } else {
                    tracing::debug!(before = %cutoff, "nothing to prune");
                }
            }
            Err(e) => {
                self.next_prune = now + every;
                tracing::warn!("pruning the history failed (tried again in an hour): {e}");
            }
        }
    }

    /// Tells the sinks there are new events, without waiting for them (each
    /// delivers on its own thread). Returns whether nothing is left to
    /// deliver.
    pub fn drain(&mut self) -> Result<bool, DaemonError> {
        self.delivery.wake();
        Ok(self.delivery.behind(&self.store)?.is_empty())
    }

    /// Waits until the sinks delivered everything or `limit` has passed;
    /// what is left waits in the outbox for the next run.
    pub fn drain_for(&mut self, limit: Duration) -> Result<bool, DaemonError> {
        let never = AtomicBool::new(false);
        Ok(self.delivery.drain_for(&self.store, limit, &never)?)
    }
}

/// Imports the configuration file's monitors into the store (a name an API
/// monitor holds is refused, and logged), and returns the enabled monitors
/// the store holds then: what the daemon scans. The file's are dropped
/// before those are read (a million specs are not held twice).
fn import_monitors(
    store: &mut Store,
    from_file: Vec<MonitorSpec>,
    now: Millis,
) -> Result<Vec<MonitorSpec>, DaemonError> {
    let report = store.import_config_monitors(&from_file, now)?;
    drop(from_file);
    for name in &report.conflicts {
        tracing::error!(
            monitor = %name,
            "the configuration file's monitor {name:?} is not imported: a monitor created \
             through the API or the dashboard has that name; rename one of them, or delete the \
             other in the dashboard"
        );
    }
    if report.changed() {
        tracing::info!(
            added = report.added.len(),
            updated = report.updated.len(),
            removed = report.removed.len(),
            "imported the configuration file's monitors"
        );
    }
    Ok(store.enabled_monitors()?)
}

/// What the coordinator sees of the agents, written to the store (the
/// agents table, which `palisade status` and the dashboard read) through a
/// connection of its own, opened at the first event.
fn agents_seen(path: &std::path::Path) -> Box<dyn FnMut(AgentEvent) + Send> {
    let path = path.to_path_buf();
    let mut store: Option<Store> = None;
    let mut failing = false;
    Box::new(move |event| {
        let written = match &mut store {
            Some(store) => Ok(store),
            None => Store::connect(&path).map(|s| store.insert(s)),
        }
        .and_then(|store| match &event {
            AgentEvent::Beat(beat, seen) => store.record_agent_beat(beat, *seen),
            AgentEvent::Gone(name, at) => store.record_agent_gone(name, *at),
        });
        match written {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("cluster: cannot record an agent's heartbeat: {e}");
            }
            Err(_) => {}
        }
    })
}
