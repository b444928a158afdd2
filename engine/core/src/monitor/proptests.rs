//! Property tests of the monitor state machine over random observation streams
//! (with random configuration changes) on a small port universe, so that
//! streaks, incidents and flapping happen often.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use proptest::prelude::*;

use super::*;

/// The ports random observations talk about.
const PORTS: [u16; 5] = [22, 80, 443, 3306, 8080];

fn arb_ports() -> impl Strategy<Value = BTreeSet<u16>> {
    proptest::sample::subsequence(PORTS.to_vec(), 0..=PORTS.len())
        .prop_map(|ports| ports.into_iter().collect())
}

fn arb_spec() -> impl Strategy<Value = MonitorSpec> {
    (arb_ports(), 1u32..=3, proptest::option::of(1u64..=600_000)).prop_map(
        |(expected_open, confirm, recheck_ms)| MonitorSpec {
            name: "m".to_owned(),
            host: "198.18.0.9".to_owned(),
            expected_open,
            every_ms: 3_600_000,
            confirm,
            recheck_ms,
            ..MonitorSpec::default()
        },
    )
}

/// An observation without its time (assigned by position in the stream).
#[derive(Debug, Clone)]
struct RawObs {
    scope: Option<BTreeSet<u16>>,
    conclusive: bool,
    reachable: bool,
    open: BTreeSet<u16>,
    closed: BTreeSet<u16>,
}

fn arb_obs() -> impl Strategy<Value = RawObs> {
    (
        proptest::option::weighted(0.4, arb_ports()),
        proptest::bool::weighted(0.8),
        proptest::bool::weighted(0.9),
        arb_ports(),
        arb_ports(),
    )
        .prop_map(|(scope, conclusive, reachable, open, closed)| RawObs {
            scope,
            conclusive,
            reachable,
            open,
            closed,
        })
}

/// Observation number `i` of a stream: strictly increasing times.
fn at_of(i: usize) -> Millis {
    Millis::try_from(i).unwrap_or(Millis::MAX / 2) * 1000 + 1000
}

/// The monitored address.
const ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));

fn obs(raw: &RawObs, i: usize) -> Observation {
    let replies = AddressReplies {
        reachable: raw.reachable,
        open: raw.open.iter().copied().collect(),
        closed: raw.closed.iter().copied().collect(),
    };
    let scope = raw.scope.clone().map_or(Scope::Full, Scope::Ports);
    Observation {
        conclusive: raw.conclusive,
        ..Observation::of_address(
            i64::try_from(i).unwrap_or(-1),
            at_of(i),
            scope,
            ADDR,
            replies,
        )
    }
}

/// The state of `port` the port rules observe: `None` when the scope does
/// not cover it or the host answered nothing (then nothing is observed).
fn observed(o: &Observation, port: u16) -> Option<PortState> {
    let r = &o.addresses[&ADDR];
    (o.scope.contains(port) && r.reachable).then(|| r.detected(port))
}

/// The state the history records for `port` after a conclusive `o`: the
/// observed one, or `Filtered` for an expected port of an unreachable host
/// in a full scan.
fn recorded(spec: &MonitorSpec, o: &Observation, port: u16) -> Option<PortState> {
    let unreachable = !o.addresses[&ADDR].reachable;
    if unreachable && o.scope == Scope::Full && spec.expects_open(port) {
        Some(PortState::Filtered)
    } else {
        observed(o, port)
    }
}

/// A stream step: maybe a new spec (a config change), then an observation.
fn arb_stream() -> impl Strategy<Value = (MonitorSpec, Vec<(Option<MonitorSpec>, RawObs)>)> {
    (
        arb_spec(),
        proptest::collection::vec(
            (proptest::option::weighted(0.1, arb_spec()), arb_obs()),
            0..40,
        ),
    )
}

/// The same with a fixed spec.
fn arb_fixed_stream() -> impl Strategy<Value = (MonitorSpec, Vec<RawObs>)> {
    (arb_spec(), proptest::collection::vec(arb_obs(), 0..40))
}

/// The re-check a step must ask for, given the state after it.
fn want_recheck(
    state: &MonitorState,
    spec: &MonitorSpec,
    at: Millis,
) -> Option<(Millis, BTreeSet<u16>)> {
    let pending = state.pending();
    match spec.recheck_ms {
        Some(ms) if !pending.is_empty() => Some((at + Millis::try_from(ms).unwrap(), pending)),
        _ => None,
    }
}

/// A per-port reference model of confirmation under a fixed spec.
#[derive(Debug, Clone, Copy, Default)]
struct Model {
    count: u32,
    kind: Option<IncidentKind>,
    first_seen: Millis,
    open: Option<IncidentKind>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Inconclusive observations never emit events or changes, never touch
    /// the state, and only repeat the pending re-check request.
    #[test]
    fn inconclusive_observations_change_nothing((first, stream) in arb_stream()) {
        let mut spec = first;
        let mut state = MonitorState::new();
        for (i, (change, raw)) in stream.iter().enumerate() {
            if let Some(new) = change {
                spec = new.clone();
            }
            let o = obs(raw, i);
            let before = state.clone();
            let step = state.observe(&spec, &o);
            if !o.conclusive {
                prop_assert!(step.events.is_empty());
                prop_assert!(step.changes.is_empty());
                prop_assert_eq!(&state, &before);
            }
            prop_assert_eq!(step.recheck, want_recheck(&state, &spec, o.at));
        }
    }

    /// Under a fixed spec, an incident opens exactly when a reference model
    /// says `confirm` consecutive conclusive observations covering the port
    /// deviated the same way, and resolves on the first one that didn't.
    #[test]
    fn incidents_open_after_exactly_confirm_deviations((spec, stream) in arb_fixed_stream()) {
        let mut state = MonitorState::new();
        let mut model: BTreeMap<u16, Model> = PORTS.iter().map(|&p| (p, Model::default())).collect();
        // Times of the conclusive observations covering each port.
        let mut seen: BTreeMap<u16, Vec<Millis>> = BTreeMap::new();
        for (i, raw) in stream.iter().enumerate() {
            let o = obs(raw, i);
            let step = state.observe(&spec, &o);
            let mut want_opened = Vec::new();
            let mut want_resolved = Vec::new();
            if o.conclusive {
                for &port in &PORTS {
                    let Some(s) = observed(&o, port) else { continue };
                    seen.entry(port).or_default().push(o.at);
                    let m = model.get_mut(&port).unwrap();
                    let dev = spec.deviation(port, s);
                    if let Some(k) = m.open {
                        if dev == Some(k) {
                            continue;
                        }
                        m.open = None;
                        want_resolved.push((port, s));
                    }
                    match dev {
                        None => *m = Model::default(),
                        Some(k) => {
                            if m.count > 0 && m.kind == Some(k) {
                                m.count += 1;
                            } else {
                                *m = Model { count: 1, kind: Some(k), first_seen: o.at, open: None };
                            }
                            if m.count == spec.confirm {
                                want_opened.push((port, k, m.first_seen, o.at, s));
                                *m = Model { open: Some(k), ..Model::default() };
                            }
                        }
                    }
                }
            }
            let opened: Vec<_> = step.events.iter().filter_map(|e| match e {
                Event::Opened(inc) => Some((inc.port, inc.kind, inc.first_seen, inc.confirmed_at, inc.state)),
                _ => None,
            }).collect();
            let resolved: Vec<_> = step.events.iter().filter_map(|e| match e {
                Event::PortResolved { incident, state, reason, resolved_at } => {
                    assert_eq!(*reason, Resolution::Observed, "fixed spec");
                    assert_eq!(*resolved_at, o.at);
                    Some((incident.port, state.unwrap()))
                }
                _ => None,
            }).collect();
            prop_assert_eq!(&opened, &want_opened, "step {}", i);
            prop_assert_eq!(&resolved, &want_resolved, "step {}", i);
            // Directly: exactly `confirm` covering conclusive observations
            // from first_seen to confirmed_at.
            for &(port, _, first, confirmed, _) in &opened {
                let n = seen[&port].iter().filter(|&&t| first <= t && t <= confirmed).count();
                prop_assert_eq!(n, usize::try_from(spec.confirm).unwrap());
            }
            let pending: BTreeSet<u16> = model.iter().filter(|(_, m)| m.count > 0).map(|(&p, _)| p).collect();
            prop_assert_eq!(state.pending(), pending);
        }
    }

    /// With random config changes and a final removal, every opened incident
    /// resolves exactly once, ids are unique, `monitor_resolved` comes last
    /// and exactly when the last open incident closes.
    #[test]
    fn every_incident_resolves_exactly_once((first, stream) in arb_stream()) {
        let mut spec = first;
        let mut state = MonitorState::new();
        let mut open: BTreeMap<String, Incident> = BTreeMap::new();
        let mut opened_ids: HashSet<String> = HashSet::new();
        let mut resolved_ids: HashSet<String> = HashSet::new();
        let mut event_ids: HashSet<String> = HashSet::new();
        let mut steps: Vec<(Millis, Step)> = Vec::new();
        for (i, (change, raw)) in stream.iter().enumerate() {
            if let Some(new) = change {
                spec = new.clone();
            }
            let o = obs(raw, i);
            steps.push((o.at, state.observe(&spec, &o)));
            // Invariant: a port is never both pending and in an incident.
            let incident_ports: BTreeSet<u16> = state.open_incidents().iter().map(|i| i.port).collect();
            prop_assert!(incident_ports.is_disjoint(&state.pending()));
        }
        let end = at_of(stream.len());
        steps.push((end, state.remove(&spec, end)));
        prop_assert_eq!(&state, &MonitorState::default());

        let mut host_open: HashSet<String> = HashSet::new();
        for (at, step) in &steps {
            let had_open = !open.is_empty() || !host_open.is_empty();
            let mut resolved_here = 0;
            for (j, event) in step.events.iter().enumerate() {
                prop_assert!(event_ids.insert(event.id()), "duplicate event id {}", event.id());
                match event {
                    Event::Opened(inc) => {
                        prop_assert_eq!(inc.confirmed_at, *at);
                        prop_assert!(inc.first_seen <= inc.confirmed_at);
                        prop_assert_eq!(&inc.id, &incident_id("m", ADDR, inc.port, inc.first_seen));
                        prop_assert!(opened_ids.insert(inc.id.clone()));
                        prop_assert!(open.insert(inc.id.clone(), inc.clone()).is_none());
                    }
                    Event::PortResolved { incident, resolved_at, .. } => {
                        prop_assert_eq!(*resolved_at, *at);
                        let was_open = open.remove(&incident.id);
                        prop_assert_eq!(was_open.as_ref(), Some(incident));
                        prop_assert!(resolved_ids.insert(incident.id.clone()));
                        resolved_here += 1;
                    }
                    Event::HostOpened(inc) => {
                        prop_assert_eq!(inc.confirmed_at, *at);
                        prop_assert_eq!(inc.kind, HostIncidentKind::HostUnreachable);
                        prop_assert!(opened_ids.insert(inc.id.clone()));
                        prop_assert!(host_open.insert(inc.id.clone()));
                    }
                    Event::HostResolved { incident, resolved_at, .. } => {
                        prop_assert_eq!(*resolved_at, *at);
                        prop_assert!(host_open.remove(&incident.id));
                        prop_assert!(resolved_ids.insert(incident.id.clone()));
                        resolved_here += 1;
                    }
                    Event::PortsChanged(_) => prop_assert!(false, "5 ports never exceed the budget"),
                    Event::MonitorResolved { at: when, monitor } => {
                        prop_assert_eq!(j, step.events.len() - 1, "monitor_resolved comes last");
                        prop_assert_eq!(*when, *at);
                        prop_assert_eq!(monitor.as_str(), "m");
                    }
                }
            }
            let monitor_resolved = matches!(step.events.last(), Some(Event::MonitorResolved { .. }));
            prop_assert_eq!(monitor_resolved, had_open && resolved_here > 0 && open.is_empty() && host_open.is_empty());
        }
        prop_assert!(open.is_empty() && host_open.is_empty());
        prop_assert_eq!(opened_ids, resolved_ids);
    }

    /// A state serialized and restored mid-stream has the same future.
    #[test]
    fn serde_round_trip_keeps_the_future((first, stream) in arb_stream(), cut in any::<proptest::sample::Index>()) {
        let cut = cut.index(stream.len() + 1);
        let mut spec = first;
        let mut state = MonitorState::new();
        let mut restored: Option<MonitorState> = None;
        for (i, (change, raw)) in stream.iter().enumerate() {
            if i == cut {
                let text = serde_json::to_string(&state).unwrap();
                let back: MonitorState = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(&back, &state);
                restored = Some(back);
            }
            if let Some(new) = change {
                spec = new.clone();
            }
            let o = obs(raw, i);
            let step = state.observe(&spec, &o);
            if let Some(r) = restored.as_mut() {
                prop_assert_eq!(r.observe(&spec, &o), step);
            }
        }
        if let Some(mut r) = restored {
            prop_assert_eq!(&r, &state);
            let end = at_of(stream.len());
            prop_assert_eq!(r.remove(&spec, end), state.remove(&spec, end));
        }
    }

    /// The history reports exactly the detected changes of tracked ports, and
    /// tracking stays limited to expected and open ports.
    #[test]
    fn history_is_consistent((first, stream) in arb_stream()) {
        let mut spec = first;
        let mut state = MonitorState::new();
        for (i, (change, raw)) in stream.iter().enumerate() {
            if let Some(new) = change {
                spec = new.clone();
            }
            let o = obs(raw, i);
            let before = state.clone();
            let step = state.observe(&spec, &o);
            let mut prev_port = None;
            for c in &step.changes {
                prop_assert!(prev_port < Some(c.port), "sorted, one per port");
                prev_port = Some(c.port);
                prop_assert!(o.conclusive);
                prop_assert_eq!(Some(c.to), recorded(&spec, &o, c.port));
                prop_assert_eq!(c.from, before.known_state(ADDR, c.port));
                prop_assert_ne!(c.from, Some(c.to));
                prop_assert_eq!((c.at, c.scan_id), (o.at, o.scan_id));
            }
            for &port in &PORTS {
                match recorded(&spec, &o, port).filter(|_| o.conclusive) {
                    Some(s) => {
                        let tracked = spec.expects_open(port) || s == PortState::Open;
                        prop_assert_eq!(state.known_state(ADDR, port), tracked.then_some(s));
                        let was = before.known_state(ADDR, port);
                        let changed = step.changes.iter().any(|c| c.port == port);
                        let want = was != Some(s) && (tracked || was.is_some());
                        prop_assert_eq!(changed, want, "port {}", port);
                    }
                    None => prop_assert_eq!(state.known_state(ADDR, port), before.known_state(ADDR, port)),
                }
            }
            // Small state: tracked ports are expected, open, or not yet seen
            // since a config change (never more than the port universe here).
            let known = state.addresses.get(&ADDR).map(|a| a.known.clone()).unwrap_or_default();
            prop_assert!(known.len() <= PORTS.len());
            prop_assert!(known.keys().all(|p| PORTS.contains(p)));
        }
    }
}
