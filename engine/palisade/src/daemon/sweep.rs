//! One sweep: cut the monitors into slices of at most `scan.commit_every`
//! of probing (`plan::Slicer`), resolving each monitor's host as it joins
//! its slice, and for each slice: plan what to probe and keep
//! ([`palisade_core::plan::SweepTargets`]), probe
//! ([`palisade_dataplane::scan::run`]), then per monitor observe the scan
//! and decide ([`decide`]: the state machine's step and the outbox rows,
//! pure), and store the slice's decisions in one transaction. The daemon
//! measures what each part costs ([`SweepReport`]).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_core::cluster::ANY_LABEL;
use palisade_core::monitor::{Millis, MonitorSpec, MonitorState, Scope, Step};
use palisade_core::plan::{
    self, ReplyTally, ScanFacts, ScanKind, SweepEnd, SweepPlan, SweepReplies, SweepResult,
    SweepTargets,
};
use palisade_core::probe::Sweep;
use palisade_dataplane::scan::{self, Answer, Progress, ScanConfig};

use super::envelope::{envelope, outbox_entry, scan_envelope};
use super::{Daemon, DaemonError, now_ms};
use crate::metrics::Metrics;
use crate::resolve::resolve_host;
use crate::store::{DecidedScan, OutboxEntry};

/// What a scan decides, without I/O: the state machine's step from the
/// monitor's state `before`, its state after, and the outbox rows (the step's
/// events, then the scan summary), all to be stored together as `scan_id`.
pub fn decide(
    spec: &MonitorSpec,
    before: &MonitorState,
    scan: ScanFacts,
    scan_id: i64,
    source: &str,
) -> DecidedScan {
    let mut scan = scan;
    let mut state = before.clone();
    let step = scan.observe_into(&mut state, spec, scan_id);
    let mut outbox: Vec<OutboxEntry> = step
        .events
        .iter()
        .map(|e| outbox_entry(&envelope(e, &spec.host, source)))
        .collect();
    outbox.push(outbox_entry(&scan_envelope(scan_id, &scan, source)));
    DecidedScan {
        scan_id,
        scan,
        step,
        summary: state.summary(spec),
        state,
        outbox,
    }
}

/// What removing the monitor `name` (dropped from the configuration) at `at`
/// decides, without I/O: every open incident resolves (`monitor_removed`),
/// then the monitor; the step and its outbox rows.
pub fn decide_removal(
    name: &str,
    mut state: MonitorState,
    at: Millis,
    source: &str,
) -> (Step, Vec<OutboxEntry>) {
    // Only the name matters to a removal.
    let spec = MonitorSpec {
        name: name.to_string(),
        host: String::new(),
        expected_open: Default::default(),
        every_ms: 0,
        confirm: 1,
        recheck_ms: None,
        ..MonitorSpec::default()
    };
    let step = state.remove(&spec, at);
    let outbox = step
        .events
        .iter()
        .map(|e| outbox_entry(&envelope(e, "", source)))
        .collect();
    (step, outbox)
}

/// One slice to probe: its targets, its start (unix ms; it seeds the
/// probe order), the sweep it belongs to (the sweep's start, its id), its
/// index in the sweep, and the agent label of its monitors (a slice holds
/// monitors of one label when agents probe: [`palisade_core::cluster`]).
#[derive(Debug, Clone, Copy)]
pub struct SliceProbe<'a> {
    pub targets: &'a SweepTargets,
    pub started: Millis,
    pub sweep: Millis,
    pub index: u32,
    pub label: &'a str,
}

/// What probes a slice until done or stopped: the data path ([`probe`]),
/// the scan agents ([`crate::cluster::coordinator::Coordinator::probe`]),
/// or a stand-in in benchmarks ([`Daemon::sweep_due_with`]).
pub type Probe<'a> = dyn FnMut(&SliceProbe<'_>, &AtomicBool) -> (SweepEnd, SweepReplies) + 'a;

/// How a sweep is cut into slices: the probes per second it goes at, and
/// whether a slice holds monitors of one agent label only (with agents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicing {
    pub rate: u64,
    pub by_label: bool,
}

/// What one sweep did, and what it cost the daemon beside the probing, as
/// the daemon measured it (wall time, summed over the slices).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    /// Every slice was conclusive.
    pub conclusive: bool,
    /// Monitors whose scans were stored.
    pub monitors: usize,
    pub slices: usize,
    /// What is due, resolving the hosts, cutting the slices and what each
    /// probes and keeps.
    pub plan: Duration,
    /// The probing itself.
    pub probe: Duration,
    /// Each monitor's scan observed and decided (the state machine, the
    /// events and their envelopes).
    pub evaluate: Duration,
    /// The decisions written, one transaction per slice.
    pub store: Duration,
    /// What the replies added up to, over the slices.
    pub tally: ReplyTally,
    /// The events the sweep's scans decided.
    pub events: u64,
}

/// One monitor of a slice: its place in the configuration, the ports its
/// scan covers, and the addresses its host resolved to (or why not).
type Member = (usize, Scope, Result<Vec<IpAddr>, String>);

/// What the daemon keeps of a stored scan until its slice is committed:
/// what the schedule and the states need, not the events (those are in the
/// store).
struct Stored {
    monitor: usize,
    /// The scan's facts without the addresses' replies.
    scan: ScanFacts,
    recheck: Option<(Millis, BTreeSet<u16>)>,
    state: MonitorState,
    events: usize,
}

impl Daemon {
    /// Runs one sweep over the plan's monitors, in slices of at most
    /// `scan.commit_every` at the configured rate ([`plan::Slicer`]):
    /// each slice is planned, probed, decided and stored (one transaction)
    /// before the next starts, so a long sweep commits as it goes, and a
    /// monitor's host is resolved just before its slice. A stop ends it
    /// after the slice under way (recorded inconclusive); the monitors of
    /// the slices not started are not recorded and stay due.
    pub(super) fn sweep(
        &mut self,
        plan: SweepPlan,
        slicing: Slicing,
        stop: &AtomicBool,
        probe: &mut Probe<'_>,
    ) -> Result<SweepReport, DaemonError> {
        let started = now_ms();
        let mut report = SweepReport::default();
        let planning = Instant::now();
        let kind = plan.kind;
        let mut members: Vec<(usize, Scope)> = {
            let at: HashMap<&str, usize> = self
                .config
                .monitors
                .iter()
                .enumerate()
                .map(|(i, m)| (m.name.as_str(), i))
                .collect();
            plan.monitors
                .into_iter()
                .filter_map(|(name, scope)| Some((*at.get(&*name)?, scope)))
                .collect()
        };
        // With agents, a slice holds monitors of one label: the plan's order
        // (the longest due first) within each label.
        let label = |monitors: &[MonitorSpec], i: usize| -> String {
            if slicing.by_label {
                monitors[i]
                    .agent_label
                    .as_deref()
                    .unwrap_or(ANY_LABEL)
                    .to_owned()
            } else {
                String::new()
            }
        };
        if slicing.by_label {
            members.sort_by_cached_key(|(i, _)| label(&self.config.monitors, *i));
        }
        let total = members.len();
        let budget = (slicing.rate as f64 * self.config.scan.commit_every.as_secs_f64()) as u64;
        let mut slicer = plan::Slicer::new(budget);
        let mut slice: Vec<Member> = Vec::new();
        let mut end = SweepEnd::Completed;
        // The sweep's time is its slices' probing (what each scan summary
        // reports as started..finished), from the first to the last.
        let mut first_started = None;
        let mut finished = started;
        report.plan += planning.elapsed();
        let mut members = members.into_iter();
        let mut next = members.next();
        while let Some((monitor, scope)) = next.take() {
            let planning = Instant::now();
            // Hosts are resolved at every sweep (names may move), just
            // before their slice.
            let spec = &self.config.monitors[monitor];
            let addresses = resolve_host(&spec.host).map_err(|e| e.to_string());
            let cost = plan::scan_cost(spec, &scope, addresses.as_ref().map_or(0, Vec::len));
            report.plan += planning.elapsed();
            let group = label(&self.config.monitors, monitor);
            if slicer.starts_slice_in(&group, cost) && !slice.is_empty() {
                if stopped(stop, total - report.monitors, &mut end) {
                    slice.clear();
                    break;
                }
                let (slice_started, slice_finished) = self.run_slice(
                    (kind, started),
                    &mut slice,
                    stop,
                    probe,
                    &mut report,
                    &mut end,
                )?;
                first_started.get_or_insert(slice_started);
                finished = slice_finished;
            }
            slice.push((monitor, scope, addresses));
            next = members.next();
        }
        if !slice.is_empty() && !stopped(stop, total - report.monitors, &mut end) {
            let (slice_started, slice_finished) = self.run_slice(
                (kind, started),
                &mut slice,
                stop,
                probe,
                &mut report,
                &mut end,
            )?;
            first_started.get_or_insert(slice_started);
            finished = slice_finished;
        }
        report.conclusive = end.failure().is_none();
        let probing_started = first_started.unwrap_or(started);
        self.metrics
            .record_sweep(kind, &end, probing_started, finished);
        if let Some(why) = end.failure() {
            tracing::warn!("sweep inconclusive: {why}");
        }
        // The one line per sweep at the default level.
        let probing_s = finished.saturating_sub(probing_started) as f64 / 1000.0;
        tracing::info!(
            kind = %kind,
            conclusive = report.conclusive,
            monitors = report.monitors,
            addresses = report.tally.addresses,
            reachable = report.tally.reachable,
            probes = report.tally.probes,
            rate = (report.tally.probes as f64 / probing_s.max(0.001)).round(),
            open_ports = report.tally.open,
            events = report.events,
            secs = now_ms().saturating_sub(started) as f64 / 1000.0,
            slices = report.slices,
            plan_s = report.plan.as_secs_f64(),
            probe_s = report.probe.as_secs_f64(),
            evaluate_s = report.evaluate.as_secs_f64(),
            store_s = report.store.as_secs_f64(),
            "sweep done"
        );
        // A sweep stopped on purpose (SIGTERM) says nothing of the scanner's
        // health; every other failure is `scan_failed`.
        if end != SweepEnd::Interrupted {
            self.after_sweep_health(finished, end.failure())?;
        }
        self.drain()?;
        Ok(report)
    }

    /// Runs the slice `members` ([`Daemon::sweep_slice`]), empties it and
    /// counts it; the sweep's end becomes the slice's if it is the first
    /// that fails. When the slice's probing started and finished.
    fn run_slice(
        &mut self,
        sweep: (ScanKind, Millis),
        members: &mut Vec<Member>,
        stop: &AtomicBool,
        probe: &mut Probe<'_>,
        report: &mut SweepReport,
        end: &mut SweepEnd,
    ) -> Result<(Millis, Millis), DaemonError> {
        let (slice_end, started, finished) =
            self.sweep_slice(sweep, members, stop, probe, report)?;
        report.monitors += members.len();
        report.slices += 1;
        members.clear();
        if *end == SweepEnd::Completed {
            *end = slice_end;
        }
        Ok((started, finished))
    }

    /// One slice of a sweep: what its monitors' addresses are probed on and
    /// which replies are kept, the probing, then per monitor its scan
    /// observed and decided and written, all in one transaction; then the
    /// states and the schedule. How it ended, and when its probing started
    /// and finished.
    fn sweep_slice(
        &mut self,
        (kind, sweep): (ScanKind, Millis),
        members: &[Member],
        stop: &AtomicBool,
        probe: &mut Probe<'_>,
        report: &mut SweepReport,
    ) -> Result<(SweepEnd, Millis, Millis), DaemonError> {
        let planning = Instant::now();
        let started = now_ms();
        let fresh = MonitorState::new();
        let mut targets = SweepTargets::builder(kind);
        for (monitor, scope, addresses) in members {
            if let Ok(addresses) = addresses {
                let spec = &self.config.monitors[*monitor];
                let state = self.tracked.get(&spec.name).map_or(&fresh, |t| &t.state);
                targets.add(addresses, spec, state, scope);
            }
        }
        let targets = targets.build();
        report.plan += planning.elapsed();

        let probing = Instant::now();
        let label = members
            .first()
            .and_then(|(m, _, _)| self.config.monitors[*m].agent_label.as_deref())
            .unwrap_or(ANY_LABEL);
        let (end, replies) = if targets.is_empty() {
            (SweepEnd::NothingResolved, targets.replies())
        } else {
            let slice = SliceProbe {
                targets: &targets,
                started,
                sweep,
                index: u32::try_from(report.slices).unwrap_or(u32::MAX),
                label,
            };
            probe(&slice, stop)
        };
        drop(targets);
        report.probe += probing.elapsed();
        report.tally += replies.tally();
        let result = SweepResult {
            started,
            finished: now_ms(),
            end,
            replies,
        };

        // Decide and write monitor by monitor (the events go to the store
        // at once; what the schedule and the states need is kept until the
        // commit).
        let first_id = self.store.next_scan_id()?;
        let mut stored = Vec::with_capacity(members.len());
        let mut batch = self.store.scan_batch()?;
        for ((monitor, scope, addresses), scan_id) in members.iter().zip(first_id..) {
            let evaluating = Instant::now();
            let spec = &self.config.monitors[*monitor];
            let scan = result.scan(spec, scope, addresses);
            let before = self.tracked.get(&spec.name).map_or(&fresh, |t| &t.state);
            let decided = decide(spec, before, scan, scan_id, &self.source);
            let writing = Instant::now();
            report.evaluate += writing - evaluating;
            batch.record(&decided)?;
            report.store += writing.elapsed();
            let DecidedScan {
                mut scan,
                step,
                state,
                ..
            } = decided;
            scan.addresses.clear();
            stored.push(Stored {
                monitor: *monitor,
                scan,
                recheck: step.recheck,
                state,
                events: step.events.len(),
            });
        }
        let writing = Instant::now();
        batch.commit()?;
        report.store += writing.elapsed();

        let mut schedule = self.control.schedule();
        for s in stored {
            let spec = &self.config.monitors[s.monitor];
            self.events += s.events as u64;
            report.events += s.events as u64;
            schedule.after_scan(spec, &s.scan, s.recheck);
            let tracked = match self.tracked.get_mut(&spec.name) {
                Some(tracked) => tracked,
                None => self.tracked.entry(spec.name.clone()).or_default(),
            };
            tracked.state = s.state;
            if s.scan.kind() == ScanKind::Full && s.scan.conclusive() {
                tracked.last_conclusive = Some(s.scan.finished);
                self.ages_changed = true;
            }
        }
        drop(schedule);
        // Sinks deliver what this slice decided while the next is probed.
        self.delivery.wake();
        Ok((result.end, result.started, result.finished))
    }

    /// The data path's settings for a sweep.
    pub(super) fn scan_config(&self) -> ScanConfig {
        let s = &self.config.scan;
        ScanConfig {
            rate: s.rate,
            retries: s.retries,
            target_recall: s.target_recall,
            wait: s.wait,
            interface: s.interface.clone(),
            source_v4: s.source_v4,
            source_v6: s.source_v6,
            source_ports: s.source_ports,
            gateway_mac: s.gateway_mac,
            per_host_rate: Some(s.per_host_rate),
            report_closed: true,
            ..ScanConfig::default()
        }
    }
}

/// Whether the daemon is stopping, before the next slice: then the sweep
/// ends there, interrupted, and the `left` monitors not scanned stay due.
fn stopped(stop: &AtomicBool, left: usize, end: &mut SweepEnd) -> bool {
    if !stop.load(Ordering::Relaxed) {
        return false;
    }
    tracing::info!(
        monitors_left = left,
        "sweep stopped; the monitors not scanned stay due"
    );
    *end = SweepEnd::Interrupted;
    true
}

/// Probes `targets` through the data path (seeding the permutation with
/// the slice's start) and collects the replies; a failure of the data path
/// is the slice's end, not an error.
pub(super) fn probe(
    config: &ScanConfig,
    metrics: &Metrics,
    slice: &SliceProbe<'_>,
    stop: &AtomicBool,
) -> (SweepEnd, SweepReplies) {
    let (targets, started) = (slice.targets, slice.started);
    let mut replies = targets.replies();
    let ports = targets.ports();
    let sweep = match Sweep::new(&targets.targets, ports, started as u64) {
        Ok(sweep) => sweep,
        Err(e) => return (SweepEnd::Failed(e.to_string()), replies),
    };
    tracing::debug!(
        hosts = sweep.host_count(),
        ports = ports.len(),
        "slice starting"
    );
    let progress = Progress::default();
    let mut config = config.clone();
    config.ping = targets.ping.clone();
    let end = match scan::run(&sweep, &config, stop, &progress, |f| match f.answer {
        Answer::Echo => replies.record_echo(f.ip),
        Answer::Open => replies.record_located(f.host, f.ip, f.port, true),
        Answer::Closed => replies.record_located(f.host, f.ip, f.port, false),
    }) {
        Ok(s) => {
            metrics.record_scan(&s);
            replies.record_retries(s.retry_outcome());
            replies.record_sent(s.sent + s.retries);
            let end = SweepEnd::after_run(s.interrupted, s.ringbuf_full);
            if end == SweepEnd::Completed {
                tracing::debug!(
                    sent = s.sent,
                    retries = s.retries,
                    open = s.open,
                    closed = s.closed,
                    echo_replies = s.echo_replies,
                    invalid = s.invalid + s.filter_invalid,
                    rate = s.rate(),
                    estimated_loss = ?s.estimated_loss,
                    retry_rounds = s.retry_rounds,
                    secs = s.duration.as_secs_f64(),
                    "slice probed"
                );
            }
            end
        }
        Err(e) => {
            let why = e.to_string();
            metrics.data_path_failed(&why);
            SweepEnd::Failed(why)
        }
    };
    (end, replies)
}

/// The daemon's decisions, sweep after sweep, without SQLite or a network:
/// the cases of the end-to-end tests in `tests/daemon.rs`.
#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use palisade_core::monitor::{AddressReplies, Scope};
    use palisade_core::plan::{self, SavedMonitor, ScanKind, SweepSchedule};
    use palisade_outputs::schema::{Envelope, EventData};

    use super::*;

    const HOST: &str = "198.18.0.2";
    const SOURCE: &str = "palisade://test";

    fn spec(confirm: u32, recheck_ms: Option<u64>) -> MonitorSpec {
        MonitorSpec {
            name: "web-1".into(),
            host: HOST.into(),
            expected_open: [22, 80, 443].into(),
            every_ms: 3_600_000,
            confirm,
            recheck_ms,
            ..MonitorSpec::default()
        }
    }

    /// The daemon's loop over the pure steps, with a store made of what a
    /// committed transaction keeps (the saved states, the outbox), and a host
    /// whose open ports the test sets (every other port answers RST).
    #[derive(Debug)]
    struct Sim {
        specs: Vec<MonitorSpec>,
        states: BTreeMap<String, MonitorState>,
        schedule: SweepSchedule,
        /// What the store saved, as it reloads it (through JSON).
        saved: BTreeMap<String, SavedMonitor>,
        next_scan_id: i64,
        /// The outbox: one row per event id, like the store's.
        outbox: Vec<Envelope>,
    }

    impl Sim {
        fn new(specs: Vec<MonitorSpec>) -> Sim {
            let recovered = plan::recover(&specs, BTreeMap::new(), 0);
            Sim {
                specs,
                states: recovered.states,
                schedule: recovered.schedule,
                saved: BTreeMap::new(),
                next_scan_id: 1,
                outbox: Vec::new(),
            }
        }

        /// Runs the sweep due at `now`, if any; returns its kind.
        fn tick(&mut self, now: Millis, open: &[u16], end: SweepEnd) -> Option<ScanKind> {
            let plan = self.schedule.take_due(now)?;
            self.sweep(&plan, now, open, end);
            Some(plan.kind)
        }

        /// `--once`: a full sweep of every monitor, due or not.
        fn once(&mut self, now: Millis, open: &[u16], end: SweepEnd) {
            let plan = SweepPlan::full(self.specs.iter().map(|s| s.name.as_str()));
            self.sweep(&plan, now, open, end);
        }

        fn sweep(&mut self, plan: &SweepPlan, now: Millis, open: &[u16], end: SweepEnd) {
            let ip: std::net::IpAddr = HOST.parse().unwrap();
            let fresh = MonitorState::new();
            let mut targets = SweepTargets::builder(plan.kind);
            for (name, scope) in &plan.monitors {
                let spec = self.specs.iter().find(|s| *s.name == **name).unwrap();
                targets.add(
                    &[ip],
                    spec,
                    self.states.get(&**name).unwrap_or(&fresh),
                    scope,
                );
            }
            let targets = targets.build();
            let mut replies = targets.replies();
            for &port in targets.ports().as_slice() {
                replies.record(ip, port, open.contains(&port));
            }
            let result = SweepResult {
                started: now,
                finished: now + 500,
                end,
                replies,
            };
            for (name, scope) in &plan.monitors {
                let spec = self
                    .specs
                    .iter()
                    .find(|s| *s.name == **name)
                    .unwrap()
                    .clone();
                let scan = result.scan(&spec, scope, &Ok(vec![ip]));
                let before = self.states.get(&**name).unwrap_or(&fresh);
                let decided = decide(&spec, before, scan, self.next_scan_id, SOURCE);
                // Deciding again from the same inputs (a crash between the
                // decision and its commit) decides the same.
                assert_eq!(
                    decide(
                        &spec,
                        before,
                        decided.scan.clone(),
                        self.next_scan_id,
                        SOURCE
                    ),
                    decided
                );
                self.commit(&spec, decided);
            }
        }

        /// What `Store::record_scan` keeps, and what the daemon does after.
        fn commit(&mut self, spec: &MonitorSpec, decided: DecidedScan) {
            self.next_scan_id += 1;
            self.enqueue(&decided.outbox);
            let json = serde_json::to_string(&decided.state).unwrap();
            let saved = self.saved.entry(spec.name.clone()).or_default();
            saved.state = serde_json::from_str(&json).unwrap();
            if decided.scan.kind() == ScanKind::Full && decided.scan.conclusive() {
                saved.last_full = Some(decided.scan.started);
            }
            self.schedule
                .after_scan(spec, &decided.scan, decided.step.recheck);
            self.states.insert(spec.name.clone(), decided.state);
        }

        fn enqueue(&mut self, rows: &[OutboxEntry]) {
            for row in rows {
                let e: Envelope = serde_json::from_str(&row.payload).unwrap();
                assert_eq!(
                    (e.id.as_str(), e.kind()),
                    (row.id.as_str(), row.kind.as_str())
                );
                if !self.outbox.iter().any(|o| o.id == e.id) {
                    self.outbox.push(e);
                }
            }
        }

        /// A restart (after `kill -9`) at `now` with the monitors `specs`:
        /// only what was committed survives; dropped monitors are removed.
        fn restart(&mut self, specs: Vec<MonitorSpec>, now: Millis) {
            let recovered = plan::recover(&specs, self.saved.clone(), now);
            for (name, state) in recovered.removed {
                let (_, rows) = decide_removal(&name, state, now, SOURCE);
                self.enqueue(&rows);
                self.saved.remove(&name);
            }
            self.specs = specs;
            self.states = recovered.states;
            self.schedule = recovered.schedule;
        }

        /// The events (not the scan summaries) as (kind, port).
        fn events(&self) -> Vec<(&'static str, Option<u16>)> {
            self.outbox
                .iter()
                .filter(|e| e.kind() != "scan")
                .map(|e| (e.kind(), e.data.port()))
                .collect()
        }

        fn event(&self, kind: &str) -> &Envelope {
            self.outbox.iter().find(|e| e.kind() == kind).unwrap()
        }

        /// The kind of each scan summary, in order.
        fn scans(&self) -> Vec<String> {
            self.outbox
                .iter()
                .filter_map(|e| match &e.data {
                    EventData::Scan(s) => Some(s.scan_kind.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    fn port_data(e: &Envelope) -> &palisade_outputs::schema::PortEvent {
        e.data.port_event().expect("a port event")
    }

    #[test]
    fn deviations_confirm_after_confirm_scans_and_resolve_together() {
        let mut sim = Sim::new(vec![spec(2, None)]);
        sim.once(0, &[22, 80, 443], SweepEnd::Completed);
        assert!(sim.events().is_empty(), "baseline");
        sim.once(10_000, &[22, 80, 6379], SweepEnd::Completed);
        assert!(sim.events().is_empty(), "seen once, not confirmed");
        sim.once(20_000, &[22, 80, 6379], SweepEnd::Completed);
        let mut opened = sim.events();
        opened.sort();
        assert_eq!(
            opened,
            [
                ("expected_port_down", Some(443)),
                ("unexpected_port_open", Some(6379))
            ]
        );
        let down = port_data(sim.event("expected_port_down"));
        assert_eq!(
            (down.state.as_deref(), down.host.as_str()),
            (Some("closed"), HOST)
        );
        assert_eq!(down.first_seen, crate::daemon::rfc3339(10_000));
        assert_eq!(down.confirmed_at, crate::daemon::rfc3339(20_000));
        let up = port_data(sim.event("unexpected_port_open"));
        assert_eq!(up.state.as_deref(), Some("open"));

        sim.once(30_000, &[22, 80, 443], SweepEnd::Completed);
        let events = sim.events();
        assert_eq!(events.len(), 5, "{events:?}");
        let mut resolved = events[2..4].to_vec();
        resolved.sort();
        assert_eq!(
            resolved,
            [("port_resolved", Some(443)), ("port_resolved", Some(6379))]
        );
        assert_eq!(events[4], ("monitor_resolved", None));
        let ids: BTreeSet<&str> = sim.outbox.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), sim.outbox.len(), "event ids are unique");
        assert_eq!(sim.scans(), ["full"; 4]);
    }

    #[test]
    fn a_short_recheck_confirms_before_the_next_full_sweep() {
        let mut sim = Sim::new(vec![spec(2, Some(2_000))]);
        let open = [22, 80, 443, 6379];
        assert_eq!(
            sim.tick(0, &open, SweepEnd::Completed),
            Some(ScanKind::Full)
        );
        assert!(sim.events().is_empty());
        assert_eq!(
            sim.schedule.recheck("web-1"),
            Some(&(2_000, BTreeSet::from([6379])))
        );
        assert_eq!(sim.schedule.next_wake(), Some(2_000));
        assert_eq!(sim.tick(1_999, &open, SweepEnd::Completed), None);
        assert_eq!(
            sim.tick(2_000, &open, SweepEnd::Completed),
            Some(ScanKind::Recheck)
        );
        assert_eq!(sim.events(), [("unexpected_port_open", Some(6379))]);
        let e = port_data(&sim.outbox[1]);
        assert_eq!(e.first_seen, crate::daemon::rfc3339(0));
        assert_eq!(e.confirmed_at, crate::daemon::rfc3339(2_000));
        // Confirmed: nothing left to re-check; the next full sweep in an hour.
        assert_eq!(sim.schedule.recheck("web-1"), None);
        assert_eq!(sim.schedule.next_wake(), Some(3_600_000));
        assert_eq!(sim.scans(), ["full", "recheck"]);
    }

    #[test]
    fn a_recheck_that_finds_the_port_back_ends_the_streak() {
        let mut sim = Sim::new(vec![spec(2, Some(2_000))]);
        sim.tick(0, &[22, 80, 443, 6379], SweepEnd::Completed);
        assert_eq!(
            sim.tick(2_000, &[22, 80, 443], SweepEnd::Completed),
            Some(ScanKind::Recheck)
        );
        assert!(sim.events().is_empty());
        assert_eq!(sim.schedule.recheck("web-1"), None);
        assert!(sim.states["web-1"].pending().is_empty());
    }

    #[test]
    fn inconclusive_scans_neither_advance_nor_reset() {
        for lost in [
            SweepEnd::Interrupted,
            SweepEnd::RepliesLost(7),
            SweepEnd::Failed("send failed".into()),
        ] {
            let mut sim = Sim::new(vec![spec(2, None)]);
            sim.tick(0, &[22, 80, 443, 6379], SweepEnd::Completed);
            let seen_once = sim.states["web-1"].clone();
            // An inconclusive sweep that saw the port, or did not.
            for (i, open) in [&[22, 80, 443, 6379][..], &[][..]].into_iter().enumerate() {
                let now = 10_000 * (i as Millis + 1);
                sim.once(now, open, lost.clone());
                assert!(sim.events().is_empty(), "{lost:?} #{i}");
                assert_eq!(sim.states["web-1"], seen_once, "{lost:?} #{i}");
                // Tried again a minute after it ended, not an hour later.
                assert_eq!(sim.schedule.due_at("web-1"), Some(now + 500 + 60_000));
            }
            sim.once(200_000, &[22, 80, 443, 6379], SweepEnd::Completed);
            assert_eq!(sim.events(), [("unexpected_port_open", Some(6379))]);
            let e = port_data(sim.event("unexpected_port_open"));
            assert_eq!(e.first_seen, crate::daemon::rfc3339(0));
            let notes: Vec<Option<String>> = sim
                .outbox
                .iter()
                .filter_map(|e| match &e.data {
                    EventData::Scan(s) => Some(s.note.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(notes, [None, lost.failure(), lost.failure(), None]);
        }
    }

    #[test]
    fn kill_9_mid_sweep_loses_and_duplicates_nothing() {
        let specs = vec![spec(2, None)];
        let mut sim = Sim::new(specs.clone());
        let open = [22, 80, 443, 6379];
        sim.once(0, &open, SweepEnd::Completed); // 6379 seen once
        let committed = sim.states.clone();
        // Killed mid-sweep twice: nothing of those sweeps was committed.
        for t in [10_000, 20_000] {
            sim.restart(specs.clone(), t);
            assert_eq!(sim.states, committed, "state reloaded as committed");
            assert_eq!(sim.schedule.due_at("web-1"), Some(3_600_000));
        }
        assert!(sim.events().is_empty());
        sim.once(30_000, &open, SweepEnd::Completed); // the second conclusive scan
        assert_eq!(sim.events(), [("unexpected_port_open", Some(6379))]);
        // Killed after the commit: the incident is reloaded, not re-opened.
        sim.restart(specs, 40_000);
        sim.once(50_000, &open, SweepEnd::Completed);
        assert_eq!(sim.events(), [("unexpected_port_open", Some(6379))]);
        assert_eq!(sim.states["web-1"].open_incidents().len(), 1);
    }

    #[test]
    fn removing_a_monitor_resolves_its_incidents() {
        let mut sim = Sim::new(vec![spec(1, None)]);
        sim.once(0, &[22, 80, 6379], SweepEnd::Completed);
        assert_eq!(sim.events().len(), 2);
        // The daemon restarts without the monitor in its configuration.
        sim.restart(vec![], 5_000);
        let mut events = sim.events();
        events[2..4].sort();
        assert_eq!(
            events[2..],
            [
                ("port_resolved", Some(443)),
                ("port_resolved", Some(6379)),
                ("monitor_resolved", None)
            ]
        );
        let e = port_data(&sim.outbox[3]);
        assert_eq!(
            (e.reason.as_deref(), e.state.as_deref()),
            (Some("monitor_removed"), None)
        );
        assert!(sim.saved.is_empty() && sim.states.is_empty());
        assert_eq!(sim.schedule.next_wake(), None);
        // Nothing open: a removal decides nothing.
        let (step, rows) = decide_removal("quiet", MonitorState::new(), 1, SOURCE);
        assert!(step.events.is_empty() && rows.is_empty());
    }

    #[test]
    fn a_changed_configuration_resolves_what_no_longer_holds() {
        let mut sim = Sim::new(vec![spec(1, None)]);
        let open = [22, 80, 443, 6379];
        sim.once(0, &open, SweepEnd::Completed);
        assert_eq!(sim.events(), [("unexpected_port_open", Some(6379))]);
        let mut changed = spec(1, None);
        changed.expected_open.insert(6379);
        sim.specs = vec![changed];
        sim.once(1_000, &open, SweepEnd::Completed);
        assert_eq!(
            sim.events(),
            [
                ("unexpected_port_open", Some(6379)),
                ("port_resolved", Some(6379)),
                ("monitor_resolved", None)
            ]
        );
        assert_eq!(
            port_data(&sim.outbox[2]).reason.as_deref(),
            Some("config_changed")
        );
    }

    #[test]
    fn a_decision_holds_the_step_the_state_and_its_outbox_rows() {
        let web = spec(1, Some(1_000));
        let scan = ScanFacts {
            sweep: 100,
            monitor: "web-1".into(),
            host: HOST.into(),
            addresses: [(
                HOST.parse().unwrap(),
                AddressReplies {
                    reachable: true,
                    open: [22, 80, 443, 6379].into(),
                    closed: Default::default(),
                },
            )]
            .into(),
            scope: Scope::Full,
            started: 100,
            finished: 900,
            inconclusive: None,
            retries: None,
        };
        let decided = decide(&web, &MonitorState::new(), scan.clone(), 7, SOURCE);
        assert_eq!(decided.scan_id, 7);
        assert_eq!(decided.scan, scan);
        assert!(
            decided
                .step
                .changes
                .iter()
                .all(|c| c.scan_id == 7 && c.at == 100)
        );
        assert_eq!(decided.step.events.len(), 1);
        let ids: Vec<&str> = decided.outbox.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            ["web-1-198.18.0.2-6379-100:opened", "web-1:scan:100:7"]
        );
        assert_eq!(decided.state.open_incidents()[0].port, 6379);
        // Confirmed at once: no re-check asked for.
        assert_eq!(decided.step.recheck, None);
        // An unreachable host: one host event, no port event.
        let dark = ScanFacts {
            addresses: [(HOST.parse().unwrap(), AddressReplies::default())].into(),
            ..scan
        };
        let decided = decide(&web, &MonitorState::new(), dark, 8, SOURCE);
        let kinds: Vec<&str> = decided.outbox.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["host_unreachable", "scan"]);
    }
}
