//! One sweep: resolve the hosts, cut the monitors into slices of at most
//! `scan.commit_every` of probing (`plan::slices`), and for each slice: plan
//! what to probe ([`palisade_core::plan`]), probe
//! ([`palisade_dataplane::scan::run`]), then per monitor observe the scan
//! and decide ([`decide`]: the state machine's step and the outbox rows,
//! pure), and store the slice's decisions in one transaction.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use palisade_core::monitor::{Millis, MonitorSpec, MonitorState, Scope, Step};
use palisade_core::plan::{
    self, ScanFacts, ScanKind, SweepEnd, SweepPlan, SweepReplies, SweepResult, SweepTargets,
};
use palisade_core::probe::Sweep;
use palisade_dataplane::scan::{self, Answer, Progress, ScanConfig};

use super::envelope::{envelope, outbox_entry, scan_envelope};
use super::{Daemon, DaemonError, now_ms};
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
    let mut state = before.clone();
    let step = state.observe(spec, &scan.observation(scan_id));
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

/// One monitor of a sweep: its spec, the ports its scan covers, and the
/// addresses its host resolved to (or why not).
type Member = (MonitorSpec, Scope, Result<Vec<IpAddr>, String>);

impl Daemon {
    /// Runs one sweep over the plan's monitors, in slices of at most
    /// `scan.commit_every` at the configured rate (`plan::slices`): each slice is
    /// probed, decided and stored (one transaction) before the next starts,
    /// so a long sweep commits as it goes. A stop ends it after the slice
    /// under way (recorded inconclusive); the monitors of the slices not
    /// started are not recorded and stay due. Returns whether every slice
    /// was conclusive.
    pub(super) fn sweep(
        &mut self,
        plan: &SweepPlan,
        stop: &AtomicBool,
    ) -> Result<bool, DaemonError> {
        let started = now_ms();
        // Hosts are resolved at every sweep: names may move.
        let specs: HashMap<&str, &MonitorSpec> = self
            .config
            .monitors
            .iter()
            .map(|m| (m.name.as_str(), m))
            .collect();
        let members: Vec<Member> = plan
            .monitors
            .iter()
            .filter_map(|(name, scope)| {
                let spec = *specs.get(name.as_str())?;
                let addresses = resolve_host(&spec.host).map_err(|e| e.to_string());
                Some((spec.clone(), scope.clone(), addresses))
            })
            .collect();
        drop(specs);
        let costs: Vec<u64> = members
            .iter()
            .map(|(spec, scope, addresses)| {
                plan::scan_cost(spec, scope, addresses.as_ref().map_or(0, Vec::len))
            })
            .collect();
        let budget =
            (self.config.scan.rate as f64 * self.config.scan.commit_every.as_secs_f64()) as u64;
        let slices = plan::slices(&costs, budget);
        let mut end = SweepEnd::Completed;
        // The sweep's time is its slices' probing (what each scan summary
        // reports as started..finished), from the first to the last.
        let mut first_started = None;
        let mut finished = started;
        for (i, range) in slices.iter().enumerate() {
            if i > 0 && stop.load(Ordering::Relaxed) {
                tracing::info!(
                    monitors_left = members.len() - range.start,
                    "sweep stopped; the monitors not scanned stay due"
                );
                end = SweepEnd::Interrupted;
                break;
            }
            let (slice_end, slice_started, slice_finished) =
                self.sweep_slice(plan.kind, &members[range.clone()], stop)?;
            first_started.get_or_insert(slice_started);
            finished = slice_finished;
            if end == SweepEnd::Completed {
                end = slice_end;
            }
        }
        let started = first_started.unwrap_or(started);
        self.metrics
            .record_sweep(plan.kind, &end, started, finished);
        if let Some(why) = end.failure() {
            tracing::warn!("sweep inconclusive: {why}");
        }
        // A sweep stopped on purpose (SIGTERM) says nothing of the scanner's
        // health; every other failure is `scan_failed`.
        if end != SweepEnd::Interrupted {
            self.after_sweep_health(finished, end.failure())?;
        }
        self.drain()?;
        Ok(end.failure().is_none())
    }

    /// One slice of a sweep: probe its monitors' addresses, decide each
    /// monitor's scan, store them all in one transaction; how it ended, and
    /// when its probing started and finished.
    fn sweep_slice(
        &mut self,
        kind: ScanKind,
        members: &[Member],
        stop: &AtomicBool,
    ) -> Result<(SweepEnd, Millis, Millis), DaemonError> {
        let started = now_ms();
        let fresh = MonitorState::new();
        let mut targets = SweepTargets::new(kind);
        for (spec, scope, addresses) in members {
            if let Ok(addresses) = addresses {
                let state = self.states.get(&spec.name).unwrap_or(&fresh);
                targets.add(addresses, spec, state, scope);
            }
        }
        let (end, replies) = self.probe(&targets, started, stop)?;
        let result = SweepResult {
            started,
            finished: now_ms(),
            end,
            replies,
        };
        let first_id = self.store.next_scan_id()?;
        let decided: Vec<DecidedScan> = members
            .iter()
            .zip(first_id..)
            .map(|((spec, scope, addresses), id)| {
                let scan = result.scan(spec, scope, addresses);
                let before = self.states.get(&spec.name).unwrap_or(&fresh);
                decide(spec, before, scan, id, &self.source)
            })
            .collect();
        self.store.record_scans(&decided)?;
        for (decided, (spec, _, _)) in decided.into_iter().zip(members) {
            self.events += decided.step.events.len() as u64;
            self.schedule
                .after_scan(spec, &decided.scan, decided.step.recheck);
            if decided.scan.kind() == ScanKind::Full && decided.scan.conclusive() {
                self.scanned_conclusively(&spec.name, decided.scan.finished);
            }
            self.states.insert(spec.name.clone(), decided.state);
        }
        // Sinks deliver what this slice decided while the next is probed.
        self.delivery.wake();
        Ok((result.end, result.started, result.finished))
    }

    /// Probes the targets (seeding the permutation with the sweep's start)
    /// and collects the replies.
    fn probe(
        &self,
        targets: &SweepTargets,
        started: Millis,
        stop: &AtomicBool,
    ) -> Result<(SweepEnd, SweepReplies), DaemonError> {
        let mut replies = targets.replies();
        if targets.is_empty() {
            return Ok((SweepEnd::NothingResolved, replies));
        }
        let ports = targets.ports();
        let sweep = match Sweep::new(&targets.targets, &ports, started as u64) {
            Ok(sweep) => sweep,
            Err(e) => return Ok((SweepEnd::Failed(e.to_string()), replies)),
        };
        tracing::info!(
            hosts = sweep.host_count(),
            ports = ports.len(),
            "sweep starting"
        );
        let progress = Progress::default();
        let mut config = self.scan_config();
        config.ping = targets.ping.iter().copied().collect();
        let end = match scan::run(&sweep, &config, stop, &progress, |f| match f.answer {
            Answer::Echo => replies.record_echo(f.ip),
            Answer::Open => replies.record(f.ip, f.port, true),
            Answer::Closed => replies.record(f.ip, f.port, false),
        }) {
            Ok(s) => {
                self.metrics.record_scan(&s);
                replies.record_retries(s.retry_outcome());
                let end = SweepEnd::after_run(s.interrupted, s.ringbuf_full);
                if end == SweepEnd::Completed {
                    tracing::info!(
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
                        "sweep done"
                    );
                }
                end
            }
            Err(e) => {
                let why = e.to_string();
                self.metrics.data_path_failed(&why);
                SweepEnd::Failed(why)
            }
        };
        Ok((end, replies))
    }

    fn scan_config(&self) -> ScanConfig {
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
            let plan = SweepPlan::full(self.specs.iter().map(|s| s.name.clone()));
            self.sweep(&plan, now, open, end);
        }

        fn sweep(&mut self, plan: &SweepPlan, now: Millis, open: &[u16], end: SweepEnd) {
            let ip: std::net::IpAddr = HOST.parse().unwrap();
            let fresh = MonitorState::new();
            let mut targets = SweepTargets::new(plan.kind);
            for (name, scope) in &plan.monitors {
                let spec = self.specs.iter().find(|s| &s.name == name).unwrap();
                targets.add(&[ip], spec, self.states.get(name).unwrap_or(&fresh), scope);
            }
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
                let spec = self.specs.iter().find(|s| &s.name == name).unwrap().clone();
                let scan = result.scan(&spec, scope, &Ok(vec![ip]));
                let before = self.states.get(name).unwrap_or(&fresh);
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
