//! The daemon: schedules sweeps, feeds their results through the monitor
//! state machine into the store, and drains the outbox to the sinks.
//!
//! Every monitor that is due joins one sweep: one permuted pass over all their
//! hosts x 65,535 ports. Ports that deviated once are re-checked alone after
//! `recheck`. SIGHUP reloads the configuration; SIGTERM/SIGINT abandon the
//! sweep under way (it counts as inconclusive) and stop.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::config::{self, Config, ConfigErrors, SinkSpec};
use crate::monitor::{Event, Millis, MonitorSpec, MonitorState, Observation, Scope};
use crate::probe::{PortSet, Sweep, TargetSet};
use crate::scan::{self, Progress, ScanConfig};
use crate::store::{ScanKind, ScanRecord, Store, StoreError};

/// Daemon failures.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot open the event sink {path}: {source}")]
    Sink {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write events to {sink}: {source}")]
    SinkWrite {
        sink: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the sweep failed: {0}")]
    Scan(String),
}

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
}

/// Now, in unix milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

/// RFC 3339 (UTC, milliseconds) of a unix-millisecond time.
pub fn rfc3339(ms: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The JSON payload of an event, as the sinks publish it.
pub fn event_payload(event: &Event, host: &str) -> serde_json::Value {
    use serde_json::json;
    match event {
        Event::Opened(i) => json!({
            "id": event.id(),
            "kind": event.kind(),
            "severity": if matches!(i.kind, crate::monitor::IncidentKind::UnexpectedPortOpen) { "high" } else { "normal" },
            "monitor": i.monitor,
            "host": host,
            "port": i.port,
            "state": i.state.to_string(),
            "expected": matches!(i.kind, crate::monitor::IncidentKind::ExpectedPortDown),
            "first_seen": rfc3339(i.first_seen),
            "confirmed_at": rfc3339(i.confirmed_at),
            "incident_id": i.id,
            "time": rfc3339(i.confirmed_at),
        }),
        Event::PortResolved {
            incident: i,
            resolved_at,
            state,
            reason,
        } => json!({
            "id": event.id(),
            "kind": event.kind(),
            "severity": "normal",
            "monitor": i.monitor,
            "host": host,
            "port": i.port,
            "state": state.map(|s| s.to_string()),
            "expected": matches!(i.kind, crate::monitor::IncidentKind::ExpectedPortDown),
            "incident_kind": i.kind.to_string(),
            "first_seen": rfc3339(i.first_seen),
            "confirmed_at": rfc3339(i.confirmed_at),
            "resolved_at": rfc3339(*resolved_at),
            "reason": serde_json::to_value(reason).unwrap_or_default(),
            "incident_id": i.id,
            "time": rfc3339(*resolved_at),
        }),
        Event::MonitorResolved { monitor, at } => json!({
            "id": event.id(),
            "kind": event.kind(),
            "severity": "normal",
            "monitor": monitor,
            "host": host,
            "message": "all ports back to their expected states",
            "time": rfc3339(*at),
        }),
    }
}

/// A JSON-lines sink (a file, or stdout).
struct JsonlSink {
    name: String,
    out: Box<dyn Write>,
    file: Option<std::fs::File>,
    /// Ids already in the file (a crash between writing and marking them
    /// delivered must not write them twice).
    seen: HashSet<String>,
}

impl JsonlSink {
    fn open(path: Option<&Path>) -> Result<Self, DaemonError> {
        let Some(path) = path.filter(|p| p.as_os_str() != "-") else {
            return Ok(JsonlSink {
                name: "jsonl:-".into(),
                out: Box::new(std::io::stdout()),
                file: None,
                seen: HashSet::new(),
            });
        };
        let err = |source| DaemonError::Sink {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let seen = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("id")?.as_str().map(String::from))
            .collect();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(JsonlSink {
            name: format!("jsonl:{}", path.display()),
            out: Box::new(file.try_clone().map_err(err)?),
            file: Some(file),
            seen,
        })
    }

    /// Writes the rows and makes them durable; returns their seqs.
    fn deliver(&mut self, rows: &[crate::store::OutboxRow]) -> Result<Vec<i64>, std::io::Error> {
        for row in rows {
            if self.seen.insert(row.event_id.clone()) {
                writeln!(self.out, "{}", row.payload)?;
            }
        }
        self.out.flush()?;
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        Ok(rows.iter().map(|r| r.seq).collect())
    }
}

/// Resolves a monitor's host: an address literal, or a name looked up now.
fn resolve(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .map(|a| a.ip())
        .min_by_key(|ip| ip.is_ipv6())
        .ok_or_else(|| format!("{host} has no address"))
}

/// What one sweep found for one address.
#[derive(Debug, Default)]
struct Found {
    reachable: bool,
    open: BTreeSet<u16>,
    closed: BTreeSet<u16>,
}

/// The daemon's state between sweeps.
pub struct Daemon {
    options: Options,
    config: Config,
    store: Store,
    states: BTreeMap<String, MonitorState>,
    /// Next full sweep per monitor.
    due: BTreeMap<String, Millis>,
    /// Pending re-checks per monitor: when, which ports.
    rechecks: BTreeMap<String, (Millis, BTreeSet<u16>)>,
    sinks: Vec<JsonlSink>,
    events: u64,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("options", &self.options)
            .field("monitors", &self.config.monitors.len())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Loads the configuration and the store.
    pub fn new(options: Options) -> Result<Daemon, DaemonError> {
        let config = config::load(&options.config_path)?;
        let store = Store::open(&config.store.path)?;
        let saved = store.load_states()?;
        let now = now_ms();
        let mut states = BTreeMap::new();
        let mut due = BTreeMap::new();
        for m in &config.monitors {
            let (state, last) = saved.get(&m.name).cloned().unwrap_or_default();
            states.insert(m.name.clone(), state);
            due.insert(
                m.name.clone(),
                last.map_or(now, |l| l.saturating_add(m.every_ms as i64)),
            );
        }
        let mut sinks = Vec::new();
        for s in &config.sinks {
            if let SinkSpec::Jsonl { path } = s {
                sinks.push(JsonlSink::open(path.as_deref())?);
            } else {
                tracing::warn!(sink = ?s, "this sink kind is not available yet; events stay in the outbox for it");
            }
        }
        if let Some(p) = &options.events {
            sinks.push(JsonlSink::open(Some(p))?);
        }
        if sinks.is_empty() {
            sinks.push(JsonlSink::open(None)?);
        }
        let mut daemon = Daemon {
            options,
            config,
            store,
            states,
            due,
            rechecks: BTreeMap::new(),
            sinks,
            events: 0,
        };
        // Monitors the store knows but the configuration no longer has.
        let gone: Vec<String> = saved
            .keys()
            .filter(|k| !daemon.due.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            let (mut state, _) = saved.get(&name).cloned().unwrap_or_default();
            daemon.remove_monitor(&name, &mut state)?;
        }
        daemon.drain()?;
        Ok(daemon)
    }

    fn spec(&self, name: &str) -> Option<&MonitorSpec> {
        self.config.monitors.iter().find(|m| m.name == name)
    }

    fn remove_monitor(&mut self, name: &str, state: &mut MonitorState) -> Result<(), DaemonError> {
        let spec = MonitorSpec {
            name: name.to_string(),
            host: String::new(),
            expected_open: BTreeSet::new(),
            every_ms: 0,
            confirm: 1,
            recheck_ms: None,
        };
        let at = now_ms();
        let step = state.remove(&spec, at);
        let payloads: Vec<String> = step
            .events
            .iter()
            .map(|e| event_payload(e, "").to_string())
            .collect();
        self.store.record_removal(name, &step, &payloads, at)?;
        self.events += step.events.len() as u64;
        Ok(())
    }

    /// Re-reads the configuration (SIGHUP): new monitors are due now, removed
    /// ones resolve their incidents, changed ones apply from the next scan.
    pub fn reload(&mut self) -> Result<(), DaemonError> {
        let config = config::load(&self.options.config_path)?;
        let now = now_ms();
        let old: Vec<String> = self
            .config
            .monitors
            .iter()
            .map(|m| m.name.clone())
            .collect();
        for name in old {
            if !config.monitors.iter().any(|m| m.name == name) {
                let mut state = self.states.remove(&name).unwrap_or_default();
                self.due.remove(&name);
                self.rechecks.remove(&name);
                self.remove_monitor(&name, &mut state)?;
            }
        }
        for m in &config.monitors {
            self.states.entry(m.name.clone()).or_default();
            self.due.entry(m.name.clone()).or_insert(now);
        }
        self.config = config;
        tracing::info!(
            monitors = self.config.monitors.len(),
            "configuration reloaded"
        );
        self.drain()
    }

    /// Runs until stopped (or one sweep with `--once`).
    pub fn run(&mut self, stop: &AtomicBool, reload: &AtomicBool) -> Result<Outcome, DaemonError> {
        let mut outcome = Outcome::default();
        if self.options.once {
            let all: Vec<(String, Scope)> = self
                .config
                .monitors
                .iter()
                .map(|m| (m.name.clone(), Scope::Full))
                .collect();
            outcome.inconclusive |= !self.sweep(&all, ScanKind::Full, stop)?;
            outcome.sweeps += 1;
            outcome.events = self.events;
            return Ok(outcome);
        }
        while !stop.load(Ordering::Relaxed) {
            if reload.swap(false, Ordering::Relaxed)
                && let Err(e) = self.reload()
            {
                tracing::error!("reload failed, keeping the old configuration: {e}");
            }
            let now = now_ms();
            let full: Vec<(String, Scope)> = self
                .due
                .iter()
                .filter(|&(_, &t)| t <= now)
                .map(|(n, _)| (n.clone(), Scope::Full))
                .collect();
            if !full.is_empty() {
                for (name, _) in &full {
                    self.rechecks.remove(name);
                }
                outcome.inconclusive |= !self.sweep(&full, ScanKind::Full, stop)?;
                outcome.sweeps += 1;
                continue;
            }
            let checks: Vec<(String, Scope)> = self
                .rechecks
                .iter()
                .filter(|(_, (t, _))| *t <= now)
                .map(|(n, (_, ports))| (n.clone(), Scope::Ports(ports.clone())))
                .collect();
            if !checks.is_empty() {
                for (name, _) in &checks {
                    self.rechecks.remove(name);
                }
                outcome.inconclusive |= !self.sweep(&checks, ScanKind::Recheck, stop)?;
                outcome.sweeps += 1;
                continue;
            }
            let next = self
                .due
                .values()
                .chain(self.rechecks.values().map(|(t, _)| t))
                .min()
                .copied()
                .unwrap_or(now + 60_000);
            let nap = (next - now).clamp(1, 200) as u64;
            std::thread::sleep(Duration::from_millis(nap));
        }
        outcome.events = self.events;
        Ok(outcome)
    }

    /// One sweep over the given monitors; returns whether it was conclusive.
    fn sweep(
        &mut self,
        monitors: &[(String, Scope)],
        kind: ScanKind,
        stop: &AtomicBool,
    ) -> Result<bool, DaemonError> {
        let started = now_ms();
        let sweep_id = started;
        // Resolve hosts (names are looked up at every sweep).
        let mut address: BTreeMap<String, Result<IpAddr, String>> = BTreeMap::new();
        let mut ports: BTreeSet<u16> = BTreeSet::new();
        let mut interesting: HashMap<IpAddr, BTreeSet<u16>> = HashMap::new();
        let mut targets = TargetSet::default();
        for (name, scope) in monitors {
            let Some(spec) = self.spec(name) else {
                continue;
            };
            let addr = resolve(&spec.host);
            if let Ok(ip) = &addr {
                targets.insert(*ip);
                let mut keep: BTreeSet<u16> = spec.expected_open.clone();
                if let Some(state) = self.states.get(name) {
                    keep.extend(state.pending());
                    keep.extend(state.last_open());
                    keep.extend(state.open_incidents().iter().map(|i| i.port));
                }
                if let Scope::Ports(p) = scope {
                    keep.extend(p.iter().copied());
                    ports.extend(p.iter().copied());
                }
                interesting.entry(*ip).or_default().extend(keep);
            }
            address.insert(name.clone(), addr);
        }
        let port_set = match kind {
            ScanKind::Full => PortSet::all(),
            ScanKind::Recheck => PortSet::from_ports(ports),
        };
        let mut found: HashMap<IpAddr, Found> = HashMap::new();
        let mut failure: Option<String> = None;
        if targets.is_empty() || port_set.is_empty() {
            failure = Some("no host of this sweep could be resolved".into());
        } else {
            let cfg = self.scan_config();
            let sweep = Sweep::new(&targets, &port_set, started as u64)
                .map_err(|e| DaemonError::Scan(e.to_string()))?;
            let progress = Progress::default();
            tracing::info!(
                hosts = sweep.host_count(),
                ports = port_set.len(),
                ?kind,
                "sweep starting"
            );
            let result = scan::run(&sweep, &cfg, stop, &progress, |f| {
                let entry = found.entry(f.ip).or_default();
                entry.reachable = true;
                if f.open {
                    entry.open.insert(f.port);
                } else if interesting.get(&f.ip).is_some_and(|k| k.contains(&f.port)) {
                    entry.closed.insert(f.port);
                }
            });
            match result {
                Ok(s) if s.interrupted => failure = Some("sweep abandoned (stopped)".into()),
                Ok(s) if s.ringbuf_full > 0 => {
                    failure = Some(format!("{} replies lost on the reply path", s.ringbuf_full))
                }
                Ok(s) => tracing::info!(
                    sent = s.sent,
                    open = s.open,
                    secs = s.duration.as_secs_f64(),
                    "sweep done"
                ),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if let Some(f) = &failure {
            tracing::warn!("sweep inconclusive: {f}");
        }
        let finished = now_ms();
        for (name, scope) in monitors {
            let Some(spec) = self.spec(name).cloned() else {
                continue;
            };
            let addr = address
                .get(name)
                .cloned()
                .unwrap_or(Err("not resolved".into()));
            let note = match (&addr, &failure) {
                (Err(e), _) => Some(e.clone()),
                (_, Some(f)) => Some(f.clone()),
                _ => None,
            };
            let conclusive = note.is_none();
            let hit = addr
                .as_ref()
                .ok()
                .and_then(|ip| found.remove(ip))
                .unwrap_or_default();
            let in_scope = |p: &u16| match scope {
                Scope::Full => true,
                Scope::Ports(ps) => ps.contains(p),
            };
            let open: BTreeSet<u16> = hit.open.iter().copied().filter(in_scope).collect();
            let closed: BTreeSet<u16> = hit.closed.iter().copied().filter(in_scope).collect();
            let record = ScanRecord {
                sweep: sweep_id,
                monitor: name.clone(),
                host: spec.host.clone(),
                address: addr.as_ref().ok().map(|a| a.to_string()),
                kind,
                started_ms: started,
                finished_ms: finished,
                conclusive,
                reachable: hit.reachable,
                open_ports: open.iter().copied().collect(),
                note,
            };
            let before = self.states.get(name).cloned().unwrap_or_default();
            let host = spec.host.clone();
            let (_, step, state) = self.store.record_scan(&record, |scan_id| {
                let obs = Observation {
                    scan_id,
                    at: started,
                    scope: scope.clone(),
                    conclusive,
                    reachable: hit.reachable,
                    open,
                    closed,
                };
                let mut state = before;
                let step = state.observe(&spec, &obs);
                let payloads = step
                    .events
                    .iter()
                    .map(|e| event_payload(e, &host).to_string())
                    .collect();
                (step, state, payloads)
            })?;
            self.states.insert(name.clone(), state);
            self.events += step.events.len() as u64;
            if let Some((at, ports)) = step.recheck {
                self.rechecks.insert(name.clone(), (at, ports));
            }
            if kind == ScanKind::Full && conclusive {
                self.due
                    .insert(name.clone(), started.saturating_add(spec.every_ms as i64));
            } else if kind == ScanKind::Full {
                // Try again soon, not a whole period later.
                self.due
                    .insert(name.clone(), finished + 60_000.min(spec.every_ms as i64));
            }
        }
        self.drain()?;
        Ok(failure.is_none())
    }

    fn scan_config(&self) -> ScanConfig {
        let s = &self.config.scan;
        ScanConfig {
            rate: s.rate,
            retries: s.retries,
            wait: s.wait,
            interface: s.interface.clone(),
            source_v4: s.source_v4,
            source_v6: s.source_v6,
            source_ports: s.source_ports,
            gateway_mac: s.gateway_mac,
            report_closed: true,
            ..ScanConfig::default()
        }
    }

    /// Delivers the outbox to every sink, marking rows only once written.
    pub fn drain(&mut self) -> Result<(), DaemonError> {
        for sink in &mut self.sinks {
            loop {
                let rows = self.store.pending(&sink.name, 500)?;
                if rows.is_empty() {
                    break;
                }
                let seqs = sink
                    .deliver(&rows)
                    .map_err(|source| DaemonError::SinkWrite {
                        sink: sink.name.clone(),
                        source,
                    })?;
                self.store.mark_delivered(&sink.name, &seqs, now_ms())?;
            }
        }
        Ok(())
    }
}
