//! The daemon: schedules sweeps, feeds their results through the monitor
//! state machine into the store, and drains the outbox to the sinks.
//!
//! Every monitor that is due joins one sweep: one permuted pass over all their
//! hosts x 65,535 ports. Ports that deviated once are re-checked alone after
//! `recheck`. SIGHUP reloads the configuration; SIGTERM/SIGINT abandon the
//! sweep under way (it counts as inconclusive) and stop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::config::{self, Config, ConfigErrors, SinkSpec};
use crate::store::{OutboxEntry, ScanKind, ScanRecord, Store, StoreError};
use palisade_core::monitor::{Event, Millis, MonitorSpec, MonitorState, Observation, Scope};
use palisade_core::probe::{PortSet, Sweep, TargetSet};
use palisade_dataplane::scan::{self, Progress, ScanConfig};
use palisade_outputs::schema::{
    Envelope, EventData, MonitorEvent, PortEvent, ScanReport, Severity,
};
use palisade_outputs::sink::{JsonlSink, NatsSink, NatsSinkOptions, Sink, SinkError, WebhookSink};

/// Daemon failures.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// Events still wait in the outbox for a sink (delivered on the next run).
    pub undelivered: bool,
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

/// `palisade://<this host's name>`: the `source` of every envelope.
pub fn source() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    format!(
        "palisade://{}",
        if name.is_empty() { "localhost" } else { name }
    )
}

/// The envelope of an event, as the sinks publish it.
pub fn envelope(event: &Event, host: &str, source: &str) -> Envelope {
    use palisade_core::monitor::IncidentKind;
    let port_event = |i: &palisade_core::monitor::Incident| PortEvent {
        monitor: i.monitor.clone(),
        host: host.to_string(),
        port: i.port,
        state: Some(i.state.to_string()),
        expected: i.kind == IncidentKind::ExpectedPortDown,
        first_seen: rfc3339(i.first_seen),
        confirmed_at: rfc3339(i.confirmed_at),
        resolved_at: None,
        incident_id: i.id.clone(),
        incident_kind: i.kind.to_string(),
        severity: match i.kind {
            IncidentKind::UnexpectedPortOpen => Severity::High,
            IncidentKind::ExpectedPortDown => Severity::Normal,
        },
        reason: None,
    };
    let (time, data) = match event {
        Event::Opened(i) => (
            i.confirmed_at,
            match i.kind {
                IncidentKind::UnexpectedPortOpen => EventData::UnexpectedPortOpen(port_event(i)),
                IncidentKind::ExpectedPortDown => EventData::ExpectedPortDown(port_event(i)),
            },
        ),
        Event::PortResolved {
            incident,
            resolved_at,
            state,
            reason,
        } => (
            *resolved_at,
            EventData::PortResolved(PortEvent {
                state: state.map(|s| s.to_string()),
                resolved_at: Some(rfc3339(*resolved_at)),
                severity: Severity::Normal,
                reason: Some(reason.to_string()),
                ..port_event(incident)
            }),
        ),
        Event::MonitorResolved { monitor, at } => (
            *at,
            EventData::MonitorResolved(MonitorEvent {
                monitor: monitor.clone(),
                host: host.to_string(),
                message: "all ports back to their expected states".into(),
            }),
        ),
    };
    Envelope::new(event.id(), source.to_string(), rfc3339(time), data)
}

/// The envelope of a scan summary.
fn scan_envelope(scan_id: i64, scan: &ScanRecord, source: &str) -> Envelope {
    let data = EventData::Scan(ScanReport {
        monitor: scan.monitor.clone(),
        host: scan.host.clone(),
        address: scan.address.clone(),
        scan_kind: match scan.kind {
            ScanKind::Full => "full".into(),
            ScanKind::Recheck => "recheck".into(),
        },
        started: rfc3339(scan.started_ms),
        finished: rfc3339(scan.finished_ms),
        conclusive: scan.conclusive,
        reachable: scan.reachable,
        open_ports: scan.open_ports.clone(),
        note: scan.note.clone(),
    });
    Envelope::new(
        format!("{}:scan:{}:{scan_id}", scan.monitor, scan.started_ms),
        source.to_string(),
        rfc3339(scan.finished_ms),
        data,
    )
}

/// Where a sink delivers; connected lazily and reconnected after failures.
enum Target {
    Jsonl(Option<PathBuf>),
    Nats(Box<NatsSinkOptions>),
    Webhook {
        url: String,
        timeout: Duration,
        max_retries: u32,
    },
}

/// One configured sink and its delivery state.
struct SinkSlot {
    /// Stable name for the outbox's delivery bookkeeping.
    name: String,
    target: Target,
    sink: Option<Box<dyn Sink>>,
    /// Scan summaries go to NATS (`<prefix>.scans.<monitor>`) only.
    wants_scans: bool,
    retry_at: Instant,
    backoff: Duration,
    /// The last failure, logged once rather than at every retry.
    last_error: Option<String>,
}

impl SinkSlot {
    fn new(target: Target) -> SinkSlot {
        let (name, wants_scans) = match &target {
            Target::Jsonl(p) => (
                format!(
                    "jsonl:{}",
                    p.as_deref().map_or("-".into(), |p| p.display().to_string())
                ),
                false,
            ),
            Target::Nats(c) => (format!("nats:{}", c.stream), true),
            Target::Webhook { url, .. } => (format!("webhook:{url}"), false),
        };
        SinkSlot {
            name,
            target,
            sink: None,
            wants_scans,
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
            last_error: None,
        }
    }

    async fn connect(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match &self.target {
            Target::Jsonl(p) => Box::new(JsonlSink::open(p.as_deref())?),
            Target::Nats(c) => Box::new(NatsSink::connect((**c).clone()).await?),
            Target::Webhook {
                url,
                timeout,
                max_retries,
            } => Box::new(WebhookSink::new(url.clone(), *timeout, *max_retries)?),
        })
    }

    /// After a failure: wait longer each time, up to 30 s.
    fn fail(&mut self, why: &dyn std::fmt::Display) {
        self.backoff =
            (self.backoff * 2).clamp(Duration::from_millis(250), Duration::from_secs(30));
        self.retry_at = Instant::now() + self.backoff;
        let why = why.to_string();
        if self.last_error.as_deref() != Some(why.as_str()) {
            tracing::warn!(sink = %self.name, "delivery failed, events wait in the outbox and are retried: {why}");
            self.last_error = Some(why);
        }
    }

    fn ok(&mut self) {
        self.backoff = Duration::ZERO;
        if self.last_error.take().is_some() {
            tracing::info!(sink = %self.name, "delivery resumed");
        }
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
    sinks: Vec<SinkSlot>,
    runtime: tokio::runtime::Runtime,
    source: String,
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
            sinks.push(SinkSlot::new(match s {
                SinkSpec::Jsonl { path } => Target::Jsonl(path.clone()),
                SinkSpec::Nats(n) => Target::Nats(Box::new(n.clone())),
                SinkSpec::Webhook {
                    url,
                    timeout,
                    max_retries,
                } => Target::Webhook {
                    url: url.clone(),
                    timeout: *timeout,
                    max_retries: *max_retries,
                },
            }));
        }
        if let Some(p) = &options.events {
            sinks.push(SinkSlot::new(Target::Jsonl(Some(p.clone()))));
        }
        if sinks.is_empty() {
            sinks.push(SinkSlot::new(Target::Jsonl(None)));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DaemonError::Scan(format!("cannot start the I/O runtime: {e}")))?;
        let mut daemon = Daemon {
            options,
            config,
            store,
            states,
            due,
            rechecks: BTreeMap::new(),
            sinks,
            runtime,
            source: source(),
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
        let entries: Vec<OutboxEntry> = step
            .events
            .iter()
            .map(|e| outbox_entry(&envelope(e, "", &self.source)))
            .collect();
        self.store.record_removal(name, &step, &entries, at)?;
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
        self.drain().map(|_| ())
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
            outcome.undelivered = !self.drain_for(Duration::from_secs(10))?;
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
            self.drain()?;
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
            let source = self.source.clone();
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
                let mut entries: Vec<OutboxEntry> = step
                    .events
                    .iter()
                    .map(|e| outbox_entry(&envelope(e, &host, &source)))
                    .collect();
                entries.push(outbox_entry(&scan_envelope(scan_id, &record, &source)));
                (step, state, entries)
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

    /// Delivers the outbox to every sink that is not backing off; a row is
    /// marked delivered only after its sink acknowledged it. Returns whether
    /// nothing is left to deliver.
    pub fn drain(&mut self) -> Result<bool, DaemonError> {
        let mut all_done = true;
        for slot in &mut self.sinks {
            if slot.retry_at > Instant::now() {
                all_done &= self.store.pending(&slot.name, 1)?.is_empty();
                continue;
            }
            if slot.sink.is_none() {
                if self.store.pending(&slot.name, 1)?.is_empty() {
                    continue;
                }
                match self.runtime.block_on(slot.connect()) {
                    Ok(sink) => slot.sink = Some(sink),
                    Err(e) => {
                        slot.fail(&e);
                        all_done = false;
                        continue;
                    }
                }
            }
            loop {
                let rows = self.store.pending(&slot.name, 256)?;
                if rows.is_empty() {
                    slot.ok();
                    break;
                }
                // Rows this sink does not take count as delivered to it.
                let (skip, send): (Vec<_>, Vec<_>) = rows
                    .into_iter()
                    .partition(|r| r.kind == "scan" && !slot.wants_scans);
                let skipped: Vec<i64> = skip.iter().map(|r| r.seq).collect();
                self.store.mark_delivered(&slot.name, &skipped, now_ms())?;
                let mut envelopes = Vec::with_capacity(send.len());
                let mut seqs = Vec::with_capacity(send.len());
                for r in &send {
                    match serde_json::from_str::<Envelope>(&r.payload) {
                        Ok(e) => {
                            envelopes.push(e);
                            seqs.push(r.seq);
                        }
                        Err(e) => {
                            tracing::error!(event = %r.event_id, "outbox row is not an envelope, dropped: {e}");
                            self.store.mark_delivered(&slot.name, &[r.seq], now_ms())?;
                        }
                    }
                }
                if envelopes.is_empty() {
                    continue;
                }
                let Some(sink) = slot.sink.as_mut() else {
                    break;
                };
                match self.runtime.block_on(sink.publish(&envelopes)) {
                    Ok(n) => {
                        self.store.mark_delivered(
                            &slot.name,
                            &seqs[..n.min(seqs.len())],
                            now_ms(),
                        )?;
                        if n < envelopes.len() {
                            slot.fail(&format!("{} of {} events acknowledged", n, envelopes.len()));
                            all_done = false;
                            break;
                        }
                    }
                    Err(e) => {
                        slot.fail(&e);
                        all_done = false;
                        break;
                    }
                }
            }
        }
        Ok(all_done)
    }

    /// Drains until nothing is left or `limit` has passed (the end of a
    /// `--once` run); what is left waits in the outbox for the next run.
    pub fn drain_for(&mut self, limit: Duration) -> Result<bool, DaemonError> {
        let deadline = Instant::now() + limit;
        loop {
            if self.drain()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                let left: Vec<String> = self
                    .sinks
                    .iter()
                    .filter(|s| self.store.pending(&s.name, 1).is_ok_and(|p| !p.is_empty()))
                    .map(|s| s.name.clone())
                    .collect();
                tracing::warn!(sinks = ?left, "events wait in the outbox; the next run delivers them");
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// An envelope as an outbox row (canonical JSON; sinks re-encode it).
fn outbox_entry(e: &Envelope) -> OutboxEntry {
    OutboxEntry {
        id: e.id.clone(),
        kind: e.kind().to_string(),
        payload: serde_json::to_string(e).unwrap_or_default(),
    }
}
