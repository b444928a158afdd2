//! Unit tests of the monitor state machine: table-driven scenarios per rule.

use super::*;

const NAME: &str = "web";
const RECHECK: u64 = 300_000;

fn set(ports: &[u16]) -> BTreeSet<u16> {
    ports.iter().copied().collect()
}

fn spec(expected: &[u16], confirm: u32) -> MonitorSpec {
    MonitorSpec {
        name: NAME.to_owned(),
        host: "198.18.0.2".to_owned(),
        expected_open: set(expected),
        every_ms: 43_200_000,
        confirm,
        recheck_ms: Some(RECHECK),
        ..MonitorSpec::default()
    }
}

fn spec_off(expected: &[u16], confirm: u32) -> MonitorSpec {
    MonitorSpec {
        recheck_ms: None,
        ..spec(expected, confirm)
    }
}

/// The monitored address.
const ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

/// What `ADDR` answered.
fn replies(open: &[u16], closed: &[u16]) -> AddressReplies {
    AddressReplies {
        reachable: true,
        open: open.iter().copied().collect(),
        closed: closed.iter().copied().collect(),
    }
}

/// A conclusive full scan of `ADDR`; `scan_id` is derived from `at`.
fn full(at: Millis, open: &[u16], closed: &[u16]) -> Observation {
    Observation::of_address(at / 1000, at, Scope::Full, ADDR, replies(open, closed))
}

/// The state of `ADDR`.
fn one(state: &MonitorState) -> &AddressState {
    &state.addresses[&ADDR]
}

/// A conclusive re-check of `ports`.
fn re(at: Millis, ports: &[u16], open: &[u16], closed: &[u16]) -> Observation {
    Observation {
        scope: Scope::Ports(set(ports)),
        ..full(at, open, closed)
    }
}

/// An inconclusive full scan that claims every port of interest is open, so
/// it would resolve or start plenty of things if it were (wrongly) counted.
fn inc(at: Millis) -> Observation {
    Observation {
        conclusive: false,
        ..full(at, &[22, 80, 443, 6379], &[])
    }
}

/// A conclusive full scan of an unreachable host (with a bogus open port that
/// must be ignored).
fn down(at: Millis) -> Observation {
    let mut obs = full(at, &[6379], &[]);
    obs.addresses.insert(
        ADDR,
        AddressReplies {
            reachable: false,
            ..replies(&[6379], &[])
        },
    );
    obs
}

/// A compact rendering of an event, for tables.
fn summary(event: &Event) -> String {
    match event {
        Event::Opened(i) => format!(
            "open {} {} {} first={} at={}",
            i.port, i.kind, i.state, i.first_seen, i.confirmed_at
        ),
        Event::PortResolved {
            incident,
            resolved_at,
            state,
            reason,
        } => format!(
            "resolved {} {} {} {} at={}",
            incident.port,
            incident.kind,
            reason,
            state.map_or("none", PortState::as_str),
            resolved_at
        ),
        Event::HostOpened(i) => format!(
            "host {} {} ports={} first={} at={}",
            i.address, i.kind, i.ports, i.first_seen, i.confirmed_at
        ),
        Event::HostResolved {
            incident,
            resolved_at,
            reason,
        } => format!(
            "{} {} {} at={}",
            incident.kind.resolved_kind(),
            incident.address,
            reason,
            resolved_at
        ),
        Event::PortsChanged(p) => {
            let changes: Vec<String> = p
                .changes
                .iter()
                .map(|c| format!("{} {} {}", c.address, c.kind, c.ports))
                .collect();
            format!(
                "ports_changed sent={}/{} [{}]",
                p.sent,
                p.total,
                changes.join("; ")
            )
        }
        Event::MonitorResolved { monitor, at } => format!("monitor_resolved {monitor} at={at}"),
    }
}

fn summaries(step: &Step) -> Vec<String> {
    step.events.iter().map(summary).collect()
}

struct MonitorCase {
    name: &'static str,
    steps: Vec<(MonitorSpec, Observation, Vec<&'static str>)>,
}

fn run_cases(cases: Vec<MonitorCase>) {
    for case in cases {
        let mut state = MonitorState::new();
        for (i, (spec, obs, want)) in case.steps.iter().enumerate() {
            let step = state.observe(spec, obs);
            assert_eq!(
                summaries(&step),
                *want,
                "case {:?}, step {i} ({obs:?})",
                case.name
            );
            // Internal invariant: never a streak and an incident on one port.
            for port in state.pending() {
                assert!(
                    !state
                        .addresses
                        .values()
                        .any(|a| a.incidents.contains_key(&port)),
                    "case {:?}, step {i}: port {port} pending with an open incident",
                    case.name
                );
            }
        }
    }
}

#[test]
fn deviations_confirmations_and_resolutions() {
    let s2 = spec(&[80, 443], 2);
    let s1 = spec(&[80, 443], 1);
    let s3 = spec(&[80, 443], 3);
    run_cases(vec![
        MonitorCase {
            name: "expected port down, confirm 2, stays down, resolves",
            steps: vec![
                (s2.clone(), full(1000, &[80, 443], &[]), vec![]),
                (s2.clone(), full(2000, &[443], &[80]), vec![]),
                (
                    s2.clone(),
                    full(3000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=2000 at=3000"],
                ),
                (s2.clone(), full(4000, &[443], &[]), vec![]),
                (
                    s2.clone(),
                    full(5000, &[80, 443], &[]),
                    vec![
                        "resolved 80 expected_port_down observed open at=5000",
                        "monitor_resolved web at=5000",
                    ],
                ),
                (s2.clone(), full(6000, &[80, 443], &[]), vec![]),
            ],
        },
        MonitorCase {
            name: "unexpected port open, confirm 2, resolves when closed",
            steps: vec![
                (s2.clone(), full(1000, &[80, 443, 6379], &[]), vec![]),
                (
                    s2.clone(),
                    full(2000, &[80, 443, 6379], &[]),
                    vec!["open 6379 unexpected_port_open open first=1000 at=2000"],
                ),
                (s2.clone(), full(3000, &[80, 443, 6379], &[]), vec![]),
                (
                    s2.clone(),
                    full(4000, &[80, 443], &[6379]),
                    vec![
                        "resolved 6379 unexpected_port_open observed closed at=4000",
                        "monitor_resolved web at=4000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "confirm 1 opens both kinds on the first observation",
            steps: vec![(
                s1.clone(),
                full(1000, &[22, 443], &[]),
                vec![
                    "open 22 unexpected_port_open open first=1000 at=1000",
                    "open 80 expected_port_down filtered first=1000 at=1000",
                ],
            )],
        },
        MonitorCase {
            name: "confirm 3 needs three",
            steps: vec![
                (s3.clone(), full(1000, &[80], &[443]), vec![]),
                (s3.clone(), full(2000, &[80], &[443]), vec![]),
                (
                    s3.clone(),
                    full(3000, &[80], &[]),
                    vec!["open 443 expected_port_down filtered first=1000 at=3000"],
                ),
            ],
        },
        MonitorCase {
            name: "confirm 3 streak broken by a good scan restarts",
            steps: vec![
                (s3.clone(), full(1000, &[80], &[443]), vec![]),
                (s3.clone(), full(2000, &[80], &[443]), vec![]),
                (s3.clone(), full(3000, &[80, 443], &[]), vec![]),
                (s3.clone(), full(4000, &[80], &[443]), vec![]),
                (s3.clone(), full(5000, &[80], &[443]), vec![]),
                (
                    s3.clone(),
                    full(6000, &[80], &[443]),
                    vec!["open 443 expected_port_down closed first=4000 at=6000"],
                ),
            ],
        },
        MonitorCase {
            name: "inconclusive in the middle of a streak neither advances nor resets",
            steps: vec![
                (s2.clone(), full(1000, &[443], &[80]), vec![]),
                (s2.clone(), inc(2000), vec![]),
                (s2.clone(), inc(3000), vec![]),
                (
                    s2.clone(),
                    full(4000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=1000 at=4000"],
                ),
                // ... nor resolves an open incident.
                (s2.clone(), inc(5000), vec![]),
                (
                    s2.clone(),
                    full(6000, &[80, 443], &[]),
                    vec![
                        "resolved 80 expected_port_down observed open at=6000",
                        "monitor_resolved web at=6000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "inconclusive never counts as a deviation either",
            steps: vec![
                (s1.clone(), inc(1000), vec![]),
                (
                    s1.clone(),
                    Observation {
                        conclusive: false,
                        ..down(2000)
                    },
                    vec![],
                ),
            ],
        },
        MonitorCase {
            name: "unreachable host: one host event, then host_reachable, no port events",
            steps: vec![
                (s2.clone(), down(1000), vec![]),
                (
                    s2.clone(),
                    down(2000),
                    vec!["host 198.18.0.2 host_unreachable ports=80,443 first=1000 at=2000"],
                ),
                (s2.clone(), down(3000), vec![]),
                (
                    s2.clone(),
                    full(4000, &[80, 443], &[]),
                    vec![
                        "host_reachable 198.18.0.2 observed at=4000",
                        "monitor_resolved web at=4000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "unreachable once is a streak that a reachable scan ends",
            steps: vec![
                (s2.clone(), down(1000), vec![]),
                (s2.clone(), full(2000, &[80, 443], &[]), vec![]),
                (s2.clone(), down(3000), vec![]),
                (s2.clone(), full(4000, &[80, 443], &[]), vec![]),
            ],
        },
        MonitorCase {
            name: "an outage keeps an unexpected open port's incident open, no false resolution",
            steps: vec![
                (
                    s1.clone(),
                    full(1000, &[80, 443, 6379], &[]),
                    vec!["open 6379 unexpected_port_open open first=1000 at=1000"],
                ),
                (
                    s1.clone(),
                    down(2000),
                    vec!["host 198.18.0.2 host_unreachable ports=80,443 first=2000 at=2000"],
                ),
                // Back, 6379 still open: only the host resolves.
                (
                    s1.clone(),
                    full(3000, &[80, 443, 6379], &[]),
                    vec!["host_reachable 198.18.0.2 observed at=3000"],
                ),
                (
                    s1.clone(),
                    full(4000, &[80, 443], &[]),
                    vec![
                        "resolved 6379 unexpected_port_open observed filtered at=4000",
                        "monitor_resolved web at=4000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "an outage neither advances nor resets a port streak",
            steps: vec![
                (s2.clone(), full(1000, &[80], &[443]), vec![]),
                (s2.clone(), down(2000), vec![]),
                (
                    s2.clone(),
                    full(3000, &[80], &[443]),
                    vec!["open 443 expected_port_down closed first=1000 at=3000"],
                ),
            ],
        },
        MonitorCase {
            name: "a re-check that hears nothing says nothing",
            steps: vec![
                (s2.clone(), full(1000, &[80], &[443]), vec![]),
                (
                    s2.clone(),
                    Observation {
                        scope: Scope::Ports(set(&[443])),
                        ..down(2000)
                    },
                    vec![],
                ),
                (
                    s2.clone(),
                    re(3000, &[443], &[], &[443]),
                    vec!["open 443 expected_port_down closed first=1000 at=3000"],
                ),
            ],
        },
        MonitorCase {
            name: "re-check confirms",
            steps: vec![
                (s2.clone(), full(1000, &[80], &[443]), vec![]),
                (
                    s2.clone(),
                    re(301_000, &[443], &[], &[443]),
                    vec!["open 443 expected_port_down closed first=1000 at=301000"],
                ),
            ],
        },
        MonitorCase {
            name: "re-check resolves",
            steps: vec![
                (
                    s1.clone(),
                    full(1000, &[80], &[443]),
                    vec!["open 443 expected_port_down closed first=1000 at=1000"],
                ),
                (
                    s1.clone(),
                    re(2000, &[443], &[443], &[]),
                    vec![
                        "resolved 443 expected_port_down observed open at=2000",
                        "monitor_resolved web at=2000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "scope not covering a port leaves its streak and incident alone",
            steps: vec![
                (s2.clone(), full(1000, &[22, 443], &[80]), vec![]),
                // 80 is fine again (streak reset); 22 is not in scope.
                (s2.clone(), re(2000, &[80], &[80], &[]), vec![]),
                // 443 only: 22 still untouched (and claims in `open` outside
                // the scope don't count).
                (s2.clone(), re(3000, &[443], &[443, 22, 80], &[]), vec![]),
                (
                    s2.clone(),
                    full(4000, &[22, 80, 443], &[]),
                    vec!["open 22 unexpected_port_open open first=1000 at=4000"],
                ),
                // An incident is not resolved by a re-check that misses it.
                (s2.clone(), re(5000, &[80, 443], &[80, 443], &[]), vec![]),
                (
                    s2.clone(),
                    re(6000, &[22], &[], &[22]),
                    vec![
                        "resolved 22 unexpected_port_open observed closed at=6000",
                        "monitor_resolved web at=6000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "flapping expected port with confirm 2 never opens",
            steps: vec![
                (s2.clone(), full(1000, &[443], &[80]), vec![]),
                (s2.clone(), full(2000, &[80, 443], &[]), vec![]),
                (s2.clone(), full(3000, &[443], &[80]), vec![]),
                (s2.clone(), full(4000, &[80, 443], &[]), vec![]),
                (s2.clone(), full(5000, &[443], &[80]), vec![]),
                (s2.clone(), re(6000, &[80], &[80], &[]), vec![]),
            ],
        },
        MonitorCase {
            name: "flapping unexpected port with confirm 2 never opens",
            steps: vec![
                (s2.clone(), full(1000, &[80, 443, 8080], &[]), vec![]),
                (s2.clone(), full(2000, &[80, 443], &[8080]), vec![]),
                (s2.clone(), full(3000, &[80, 443, 8080], &[]), vec![]),
                (s2.clone(), full(4000, &[80, 443], &[]), vec![]),
                (s2.clone(), full(5000, &[80, 443, 8080], &[]), vec![]),
            ],
        },
        MonitorCase {
            name: "resolution per port, monitor_resolved only when the last one closes",
            steps: vec![
                (
                    s1.clone(),
                    full(1000, &[22], &[80, 443]),
                    vec![
                        "open 22 unexpected_port_open open first=1000 at=1000",
                        "open 80 expected_port_down closed first=1000 at=1000",
                        "open 443 expected_port_down closed first=1000 at=1000",
                    ],
                ),
                (
                    s1.clone(),
                    full(2000, &[22, 80], &[443]),
                    vec!["resolved 80 expected_port_down observed open at=2000"],
                ),
                (
                    s1.clone(),
                    full(3000, &[22, 80, 443], &[]),
                    vec!["resolved 443 expected_port_down observed open at=3000"],
                ),
                (
                    s1.clone(),
                    full(4000, &[80, 443], &[]),
                    vec![
                        "resolved 22 unexpected_port_open observed filtered at=4000",
                        "monitor_resolved web at=4000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "two resolved in one step, then monitor_resolved once",
            steps: vec![
                (
                    s1.clone(),
                    full(1000, &[], &[80, 443]),
                    vec![
                        "open 80 expected_port_down closed first=1000 at=1000",
                        "open 443 expected_port_down closed first=1000 at=1000",
                    ],
                ),
                (
                    s1.clone(),
                    full(2000, &[80, 443], &[]),
                    vec![
                        "resolved 80 expected_port_down observed open at=2000",
                        "resolved 443 expected_port_down observed open at=2000",
                        "monitor_resolved web at=2000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "one resolves while another opens: no monitor_resolved",
            steps: vec![
                (
                    s1.clone(),
                    full(1000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=1000 at=1000"],
                ),
                (
                    s1.clone(),
                    full(2000, &[80], &[443]),
                    vec![
                        "resolved 80 expected_port_down observed open at=2000",
                        "open 443 expected_port_down closed first=2000 at=2000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "two ports confirming in one step",
            steps: vec![
                (s2.clone(), full(1000, &[3306], &[80, 443]), vec![]),
                (
                    s2.clone(),
                    full(2000, &[3306], &[80, 443]),
                    vec![
                        "open 80 expected_port_down closed first=1000 at=2000",
                        "open 443 expected_port_down closed first=1000 at=2000",
                        "open 3306 unexpected_port_open open first=1000 at=2000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "a port resolves and deviates again: a new incident",
            steps: vec![
                (
                    s1.clone(),
                    full(1000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=1000 at=1000"],
                ),
                (
                    s1.clone(),
                    full(2000, &[80, 443], &[]),
                    vec![
                        "resolved 80 expected_port_down observed open at=2000",
                        "monitor_resolved web at=2000",
                    ],
                ),
                (
                    s1.clone(),
                    full(3000, &[443], &[]),
                    vec!["open 80 expected_port_down filtered first=3000 at=3000"],
                ),
            ],
        },
    ]);
}

#[test]
fn configuration_changes() {
    let base = spec(&[80, 443], 2);
    let with_6379 = spec(&[80, 443, 6379], 2);
    let without_80 = spec(&[443], 2);
    run_cases(vec![
        MonitorCase {
            name: "unexpected-open incident, port added to expected, seen open",
            steps: vec![
                (base.clone(), full(1000, &[80, 443, 6379], &[]), vec![]),
                (
                    base.clone(),
                    full(2000, &[80, 443, 6379], &[]),
                    vec!["open 6379 unexpected_port_open open first=1000 at=2000"],
                ),
                (
                    with_6379.clone(),
                    full(3000, &[80, 443, 6379], &[]),
                    vec![
                        "resolved 6379 unexpected_port_open config_changed open at=3000",
                        "monitor_resolved web at=3000",
                    ],
                ),
                (with_6379.clone(), full(4000, &[80, 443, 6379], &[]), vec![]),
            ],
        },
        MonitorCase {
            name: "unexpected-open incident, port added to expected, seen closed",
            steps: vec![
                (base.clone(), full(1000, &[80, 443, 6379], &[]), vec![]),
                (
                    base.clone(),
                    full(2000, &[80, 443, 6379], &[]),
                    vec!["open 6379 unexpected_port_open open first=1000 at=2000"],
                ),
                (
                    with_6379.clone(),
                    full(3000, &[80, 443], &[6379]),
                    vec![
                        "resolved 6379 unexpected_port_open config_changed closed at=3000",
                        "monitor_resolved web at=3000",
                    ],
                ),
                (
                    with_6379.clone(),
                    full(4000, &[80, 443], &[6379]),
                    vec!["open 6379 expected_port_down closed first=3000 at=4000"],
                ),
            ],
        },
        MonitorCase {
            name: "kind change with confirm 1 opens the new incident in the same step",
            steps: vec![
                (
                    spec(&[443], 1),
                    full(1000, &[80, 443], &[]),
                    vec!["open 80 unexpected_port_open open first=1000 at=1000"],
                ),
                (
                    spec(&[80, 443], 1),
                    full(2000, &[443], &[80]),
                    vec![
                        "resolved 80 unexpected_port_open config_changed closed at=2000",
                        "open 80 expected_port_down closed first=2000 at=2000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "expected-down incident, port removed from expected, seen closed",
            steps: vec![
                (base.clone(), full(1000, &[443], &[80]), vec![]),
                (
                    base.clone(),
                    full(2000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=1000 at=2000"],
                ),
                (
                    without_80.clone(),
                    full(3000, &[443], &[80]),
                    vec![
                        "resolved 80 expected_port_down config_changed closed at=3000",
                        "monitor_resolved web at=3000",
                    ],
                ),
                (without_80.clone(), full(4000, &[443], &[80]), vec![]),
            ],
        },
        MonitorCase {
            name: "expected-down incident, port removed from expected, seen open",
            steps: vec![
                (base.clone(), full(1000, &[443], &[80]), vec![]),
                (
                    base.clone(),
                    full(2000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=1000 at=2000"],
                ),
                (
                    without_80.clone(),
                    full(3000, &[80, 443], &[]),
                    vec![
                        "resolved 80 expected_port_down config_changed open at=3000",
                        "monitor_resolved web at=3000",
                    ],
                ),
                (
                    without_80.clone(),
                    full(4000, &[80, 443], &[]),
                    vec!["open 80 unexpected_port_open open first=3000 at=4000"],
                ),
            ],
        },
        MonitorCase {
            name: "config change before the port is observed again resolves nothing yet",
            steps: vec![
                (base.clone(), full(1000, &[443], &[80]), vec![]),
                (
                    base.clone(),
                    full(2000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=1000 at=2000"],
                ),
                (without_80.clone(), re(3000, &[443], &[443], &[]), vec![]),
                (
                    without_80.clone(),
                    re(4000, &[80], &[], &[80]),
                    vec![
                        "resolved 80 expected_port_down config_changed closed at=4000",
                        "monitor_resolved web at=4000",
                    ],
                ),
            ],
        },
        MonitorCase {
            name: "a streak of the other kind restarts after a config change",
            steps: vec![
                (spec(&[443], 2), full(1000, &[80, 443], &[]), vec![]),
                (base.clone(), full(2000, &[443], &[80]), vec![]),
                (
                    base.clone(),
                    full(3000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=2000 at=3000"],
                ),
            ],
        },
        MonitorCase {
            name: "confirm lowered mid-streak applies to the streak under way",
            steps: vec![
                (spec(&[80, 443], 3), full(1000, &[443], &[80]), vec![]),
                (
                    spec(&[80, 443], 2),
                    full(2000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=1000 at=2000"],
                ),
            ],
        },
        MonitorCase {
            name: "confirm raised mid-streak needs the new count",
            steps: vec![
                (spec(&[80, 443], 2), full(1000, &[443], &[80]), vec![]),
                (spec(&[80, 443], 3), full(2000, &[443], &[80]), vec![]),
                (
                    spec(&[80, 443], 3),
                    full(3000, &[443], &[80]),
                    vec!["open 80 expected_port_down closed first=1000 at=3000"],
                ),
            ],
        },
        MonitorCase {
            name: "confirm 0 behaves as 1",
            steps: vec![(
                spec(&[80], 0),
                full(1000, &[], &[80]),
                vec!["open 80 expected_port_down closed first=1000 at=1000"],
            )],
        },
        MonitorCase {
            name: "a newly expected port that is closed starts a streak",
            steps: vec![
                (base.clone(), full(1000, &[80, 443], &[]), vec![]),
                (with_6379.clone(), full(2000, &[80, 443], &[]), vec![]),
                (
                    with_6379.clone(),
                    full(3000, &[80, 443], &[]),
                    vec!["open 6379 expected_port_down filtered first=2000 at=3000"],
                ),
            ],
        },
    ]);
}

#[test]
fn streak_counts_and_pending() {
    let s = spec(&[80], 3);
    let mut state = MonitorState::new();
    assert_eq!(state.pending(), set(&[]));
    state.observe(&s, &full(1000, &[22], &[80]));
    assert_eq!(state.pending(), set(&[22, 80]));
    assert_eq!(one(&state).streaks[&80].count, 1);
    state.observe(&s, &inc(2000));
    assert_eq!(
        one(&state).streaks[&80].count,
        1,
        "inconclusive must not advance"
    );
    state.observe(&s, &re(3000, &[80], &[], &[]));
    assert_eq!(one(&state).streaks[&80].count, 2);
    assert_eq!(one(&state).streaks[&22].count, 1, "out of scope: untouched");
    assert_eq!(one(&state).streaks[&80].first_seen, 1000);
    state.observe(&s, &full(4000, &[22], &[80]));
    assert_eq!(state.pending(), set(&[22]));
    assert_eq!(
        state
            .open_incidents()
            .iter()
            .map(|i| i.port)
            .collect::<Vec<_>>(),
        vec![80]
    );
    state.observe(&s, &full(5000, &[80], &[]));
    assert_eq!(
        state.pending(),
        set(&[]),
        "good scan resets the streak of 22"
    );
}

#[test]
fn rechecks() {
    struct R {
        name: &'static str,
        spec: MonitorSpec,
        observations: Vec<Observation>,
        want: Option<(Millis, &'static [u16])>,
    }
    let table = vec![
        R {
            name: "deviation seen, recheck on",
            spec: spec(&[80, 443], 2),
            observations: vec![full(1000, &[443], &[80])],
            want: Some((1000 + 300_000, &[80])),
        },
        R {
            name: "deviation seen, recheck off",
            spec: spec_off(&[80, 443], 2),
            observations: vec![full(1000, &[443], &[80])],
            want: None,
        },
        R {
            name: "no deviation",
            spec: spec(&[80, 443], 2),
            observations: vec![full(1000, &[80, 443], &[])],
            want: None,
        },
        R {
            name: "confirm 1: incident opened, nothing pending",
            spec: spec(&[80, 443], 1),
            observations: vec![full(1000, &[443], &[80])],
            want: None,
        },
        R {
            name: "two pending ports of both kinds",
            spec: spec(&[80, 443], 3),
            observations: vec![full(1000, &[22, 443], &[80])],
            want: Some((301_000, &[22, 80])),
        },
        R {
            name: "inconclusive keeps asking, from its own time",
            spec: spec(&[80, 443], 2),
            observations: vec![full(1000, &[443], &[80]), inc(310_000)],
            want: Some((610_000, &[80])),
        },
        R {
            name: "inconclusive with nothing pending",
            spec: spec(&[80, 443], 2),
            observations: vec![full(1000, &[80, 443], &[]), inc(2000)],
            want: None,
        },
        R {
            name: "inconclusive with recheck off",
            spec: spec_off(&[80, 443], 2),
            observations: vec![full(1000, &[443], &[80]), inc(2000)],
            want: None,
        },
        R {
            name: "re-check confirms one, the other stays pending",
            spec: spec(&[80, 443], 2),
            observations: vec![full(1000, &[22, 443], &[80]), re(2000, &[80], &[], &[80])],
            want: Some((302_000, &[22])),
        },
        R {
            name: "re-check of a still-pending port (confirm 3)",
            spec: spec(&[80, 443], 3),
            observations: vec![full(1000, &[443], &[80]), re(2000, &[80], &[], &[80])],
            want: Some((302_000, &[80])),
        },
        R {
            name: "huge delay saturates",
            spec: MonitorSpec {
                recheck_ms: Some(u64::MAX),
                ..spec(&[80], 2)
            },
            observations: vec![full(1000, &[], &[80])],
            want: Some((Millis::MAX, &[80])),
        },
    ];
    for r in table {
        let mut state = MonitorState::new();
        let mut last = Step::default();
        for obs in &r.observations {
            last = state.observe(&r.spec, obs);
        }
        let want = r.want.map(|(at, ports)| (at, set(ports)));
        assert_eq!(last.recheck, want, "{}", r.name);
    }
}

#[test]
fn recheck_off_waits_for_the_next_full_scan() {
    let s = spec_off(&[80], 2);
    let mut state = MonitorState::new();
    let first = state.observe(&s, &full(1000, &[], &[80]));
    assert_eq!(first.recheck, None);
    assert!(first.events.is_empty());
    let second = state.observe(&s, &full(43_201_000, &[], &[80]));
    assert_eq!(
        summaries(&second),
        vec!["open 80 expected_port_down closed first=1000 at=43201000"]
    );
}

#[test]
fn inconclusive_changes_nothing() {
    let s = spec(&[80, 443], 2);
    let mut state = MonitorState::new();
    state.observe(&s, &full(1000, &[22, 443], &[80]));
    state.observe(&s, &full(2000, &[22, 443], &[]));
    let before = state.clone();
    let step = state.observe(&s, &inc(3000));
    assert_eq!(state, before);
    assert!(step.events.is_empty());
    assert!(step.changes.is_empty());
    assert_eq!(step.recheck, None, "nothing pending after confirmation");
    let step = state.observe(
        &s,
        &Observation {
            conclusive: false,
            ..down(4000)
        },
    );
    assert_eq!(state, before);
    assert_eq!(step, Step::default());
}

#[test]
fn state_change_history() {
    fn ch(port: u16, from: Option<PortState>, to: PortState, at: Millis) -> StateChange {
        StateChange {
            address: ADDR,
            port,
            from,
            to,
            at,
            scan_id: at / 1000,
        }
    }
    use PortState::{Closed, Filtered, Open};
    let s = spec(&[80, 443], 2);
    let table: Vec<(Observation, Vec<StateChange>, &[u16])> = vec![
        // First observation: every expected port and every open port, from None;
        // not the closed unexpected port 3306.
        (
            full(1000, &[22, 80], &[443, 3306]),
            vec![
                ch(22, None, Open, 1000),
                ch(80, None, Open, 1000),
                ch(443, None, Closed, 1000),
            ],
            &[22, 80],
        ),
        // Nothing changed.
        (full(2000, &[22, 80], &[443, 3306]), vec![], &[22, 80]),
        // Unexpected 22 closes (recorded), expected 443 goes filtered.
        (
            full(3000, &[80], &[22]),
            vec![
                ch(22, Some(Open), Closed, 3000),
                ch(443, Some(Closed), Filtered, 3000),
            ],
            &[80],
        ),
        // 22 is no longer tracked: closed -> filtered is not recorded.
        (full(4000, &[80], &[]), vec![], &[80]),
        // 22 opens again: from None.
        (
            full(5000, &[22, 80, 443], &[]),
            vec![
                ch(22, None, Open, 5000),
                ch(443, Some(Filtered), Open, 5000),
            ],
            &[22, 80, 443],
        ),
        // A re-check records only ports in scope.
        (
            re(6000, &[443], &[], &[443, 80]),
            vec![ch(443, Some(Open), Closed, 6000)],
            &[22, 80],
        ),
        // Inconclusive: nothing.
        (inc(7000), vec![], &[22, 80]),
        // Unreachable: the expected ports go filtered (the host is the
        // cause); 22, unobserved, keeps its last state.
        (
            down(8000),
            vec![
                ch(80, Some(Open), Filtered, 8000),
                ch(443, Some(Closed), Filtered, 8000),
            ],
            &[22],
        ),
    ];
    let mut state = MonitorState::new();
    for (i, (obs, want, open)) in table.into_iter().enumerate() {
        let step = state.observe(&s, &obs);
        assert_eq!(step.changes, want, "row {i}");
        assert_eq!(state.last_open(ADDR), set(open), "row {i}");
    }
    assert_eq!(state.known_state(ADDR, 80), Some(Filtered));
    assert_eq!(state.known_state(ADDR, 22), Some(Open));
}

#[test]
fn history_after_expected_port_is_dropped_from_config() {
    use PortState::Closed;
    let mut state = MonitorState::new();
    state.observe(&spec(&[80, 443], 2), &full(1000, &[443], &[80]));
    assert_eq!(state.known_state(ADDR, 80), Some(Closed));
    // 80 no longer expected, seen closed again: no change, no longer tracked.
    let step = state.observe(&spec(&[443], 2), &full(2000, &[443], &[80]));
    assert_eq!(step.changes, vec![]);
    assert_eq!(state.known_state(ADDR, 80), None);
    // And its later changes among not-open states are not recorded.
    let step = state.observe(&spec(&[443], 2), &full(3000, &[443], &[]));
    assert_eq!(step.changes, vec![]);
    assert_eq!(state.known_state(ADDR, 80), None);
    assert_eq!(state.known_state(ADDR, 443), Some(PortState::Open));
}

#[test]
fn state_stays_small_on_a_host_with_every_port_closed() {
    let s = spec(&[80, 443], 2);
    let closed: Vec<u16> = (1..=u16::MAX)
        .filter(|p| ![22, 80, 443].contains(p))
        .collect();
    let mut state = MonitorState::new();
    let step = state.observe(&s, &full(1000, &[22, 80, 443], &closed));
    assert_eq!(step.changes.len(), 3);
    assert_eq!(one(&state).known.len(), 3);
    assert_eq!(state.pending(), set(&[22]));
    let step = state.observe(&s, &full(2000, &[80, 443], &closed));
    assert_eq!(one(&state).known.len(), 2);
    assert_eq!(one(&state).streaks.len(), 0);
    assert_eq!(step.changes.len(), 1);
}

#[test]
fn remove_resolves_everything_and_clears() {
    let s = spec(&[80, 443], 2);
    let mut state = MonitorState::new();
    state.observe(&s, &full(1000, &[22], &[80]));
    state.observe(&s, &full(2000, &[22], &[80, 443]));
    assert_eq!(state.open_incidents().len(), 3);
    assert_eq!(state.pending(), set(&[]));
    state.observe(&s, &full(3000, &[22, 8080], &[80, 443]));
    assert_eq!(state.pending(), set(&[8080]));
    let step = state.remove(&s, 4000);
    assert_eq!(
        summaries(&step),
        vec![
            "resolved 22 unexpected_port_open monitor_removed none at=4000",
            "resolved 80 expected_port_down monitor_removed none at=4000",
            "resolved 443 expected_port_down monitor_removed none at=4000",
            "monitor_resolved web at=4000",
        ]
    );
    assert!(step.changes.is_empty());
    assert_eq!(step.recheck, None);
    assert_eq!(state, MonitorState::default());
    assert!(state.open_incidents().is_empty());
    assert!(state.pending().is_empty());
    assert!(state.last_open(ADDR).is_empty());
}

#[test]
fn remove_without_incidents_emits_nothing() {
    let s = spec(&[80], 2);
    let mut state = MonitorState::new();
    state.observe(&s, &full(1000, &[], &[80]));
    assert_eq!(state.pending(), set(&[80]));
    let step = state.remove(&s, 2000);
    assert_eq!(step, Step::default());
    assert_eq!(state, MonitorState::default());
}

#[test]
fn incident_fields_and_stable_ids() {
    let s = spec(&[80, 443], 2);
    let run = || {
        let mut state = MonitorState::new();
        let mut events = Vec::new();
        for obs in [
            full(1_700_000_000_000, &[6379], &[80]),
            full(1_700_000_001_000, &[6379], &[80]),
            full(1_700_000_002_000, &[80, 443], &[]),
        ] {
            events.extend(state.observe(&s, &obs).events);
        }
        events
    };
    let events = run();
    assert_eq!(events, run(), "deterministic");
    let Event::Opened(down) = &events[0] else {
        panic!("first event: {:?}", events[0]);
    };
    assert_eq!(
        *down,
        Incident {
            id: "web-198.18.0.2-80-1700000000000".to_owned(),
            monitor: "web".to_owned(),
            address: ADDR,
            port: 80,
            kind: IncidentKind::ExpectedPortDown,
            first_seen: 1_700_000_000_000,
            confirmed_at: 1_700_000_001_000,
            state: PortState::Closed,
        }
    );
    let ids: Vec<String> = events.iter().map(Event::id).collect();
    let kinds: Vec<&str> = events.iter().map(Event::kind).collect();
    assert_eq!(
        ids,
        vec![
            "web-198.18.0.2-80-1700000000000:opened",
            "web-198.18.0.2-443-1700000000000:opened",
            "web-198.18.0.2-6379-1700000000000:opened",
            "web-198.18.0.2-80-1700000000000:resolved",
            "web-198.18.0.2-443-1700000000000:resolved",
            "web-198.18.0.2-6379-1700000000000:resolved",
            "web:resolved:1700000002000",
        ]
    );
    assert_eq!(
        kinds,
        vec![
            "expected_port_down",
            "expected_port_down",
            "unexpected_port_open",
            "port_resolved",
            "port_resolved",
            "port_resolved",
            "monitor_resolved",
        ]
    );
    // Ordering: the events of the last step are all resolutions, then the
    // monitor-level one.
    assert_eq!(events[6].at(), 1_700_000_002_000);
    assert_eq!(events[1].at(), 1_700_000_001_000);
    assert!(events.iter().all(|e| e.monitor() == "web"));
    assert_eq!(events[2].priority(), Priority::High);
    assert_eq!(events[0].priority(), Priority::Normal);
    assert_eq!(events[5].priority(), Priority::Normal);
    assert_eq!(
        incident_id("db-1", "2001:2::5".parse().unwrap(), 5432, -5),
        "db-1-2001:2::5-5432--5"
    );
}

#[test]
fn names_display_and_priorities() {
    let cases: Vec<(String, &str)> = vec![
        (PortState::Open.to_string(), "open"),
        (PortState::Closed.to_string(), "closed"),
        (PortState::Filtered.to_string(), "filtered"),
        (
            IncidentKind::ExpectedPortDown.to_string(),
            "expected_port_down",
        ),
        (
            IncidentKind::UnexpectedPortOpen.to_string(),
            "unexpected_port_open",
        ),
        (Resolution::Observed.to_string(), "observed"),
        (Resolution::ConfigChanged.to_string(), "config_changed"),
        (Resolution::MonitorRemoved.to_string(), "monitor_removed"),
        (Priority::Normal.to_string(), "normal"),
        (Priority::High.to_string(), "high"),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    assert_eq!(IncidentKind::UnexpectedPortOpen.priority(), Priority::High);
    assert_eq!(IncidentKind::ExpectedPortDown.priority(), Priority::Normal);
    assert!(Priority::High > Priority::Normal);
}

#[test]
fn serde_names_are_snake_case() {
    let json = |v: serde_json::Value| v.to_string();
    let cases: Vec<(String, &str)> = vec![
        (json(serde_json::json!(PortState::Filtered)), "\"filtered\""),
        (
            json(serde_json::json!(IncidentKind::UnexpectedPortOpen)),
            "\"unexpected_port_open\"",
        ),
        (
            json(serde_json::json!(Resolution::ConfigChanged)),
            "\"config_changed\"",
        ),
        (json(serde_json::json!(Priority::High)), "\"high\""),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    let kind: IncidentKind = serde_json::from_str("\"expected_port_down\"").unwrap();
    assert_eq!(kind, IncidentKind::ExpectedPortDown);
}

#[test]
fn state_serde_round_trip_mid_stream() {
    let s = spec(&[80, 443], 3);
    let mut state = MonitorState::new();
    state.observe(&s, &full(1000, &[22, 443], &[80]));
    state.observe(&s, &full(2000, &[22, 443], &[80]));
    state.observe(&s, &full(3000, &[22, 443, 6379], &[80]));
    assert_eq!(state.open_incidents().len(), 2);
    assert_eq!(state.pending(), set(&[6379]));
    let text = serde_json::to_string(&state).unwrap();
    let mut restored: MonitorState = serde_json::from_str(&text).unwrap();
    assert_eq!(restored, state);
    for obs in [
        full(4000, &[80, 443, 6379], &[]),
        full(5000, &[80, 443, 6379], &[]),
    ] {
        assert_eq!(restored.observe(&s, &obs), state.observe(&s, &obs));
    }
    assert_eq!(restored, state);
    assert_eq!(
        state
            .open_incidents()
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        vec!["web-198.18.0.2-6379-3000"]
    );
    // An empty object is a valid (fresh) state.
    let fresh: MonitorState = serde_json::from_str("{}").unwrap();
    assert_eq!(fresh, MonitorState::new());
}

#[test]
fn spec_validation() {
    let ok = spec(&[80, 443], 2);
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ok.confirmations(), 2);
    assert_eq!(spec(&[80], 0).confirmations(), 1);
    let table: Vec<(MonitorSpec, MonitorSpecError)> = vec![
        (
            MonitorSpec {
                name: String::new(),
                ..ok.clone()
            },
            MonitorSpecError::BadName(String::new()),
        ),
        (
            MonitorSpec {
                name: "web.prod".to_owned(),
                ..ok.clone()
            },
            MonitorSpecError::BadName("web.prod".to_owned()),
        ),
        (
            MonitorSpec {
                host: String::new(),
                ..ok.clone()
            },
            MonitorSpecError::EmptyHost("web".to_owned()),
        ),
        (
            spec(&[0, 80], 2),
            MonitorSpecError::PortZero("web".to_owned()),
        ),
        (
            MonitorSpec {
                every_ms: 0,
                ..ok.clone()
            },
            MonitorSpecError::ZeroInterval("web".to_owned()),
        ),
        (
            spec(&[80], 0),
            MonitorSpecError::ZeroConfirm("web".to_owned()),
        ),
    ];
    for (spec, want) in table {
        assert_eq!(spec.validate(), Err(want.clone()), "{spec:?}");
        assert!(!want.to_string().is_empty());
    }
}

#[test]
fn deviation_table() {
    use IncidentKind::{ExpectedPortDown, UnexpectedPortOpen};
    use PortState::{Closed, Filtered, Open};
    let s = spec(&[80], 2);
    let table = [
        (80, Open, None),
        (80, Closed, Some(ExpectedPortDown)),
        (80, Filtered, Some(ExpectedPortDown)),
        (22, Open, Some(UnexpectedPortOpen)),
        (22, Closed, None),
        (22, Filtered, None),
    ];
    for (port, state, want) in table {
        assert_eq!(s.deviation(port, state), want, "{port} {state}");
    }
}

#[test]
fn observation_detected_states() {
    use PortState::{Closed, Filtered, Open};
    let r = replies(&[1, 4], &[2, 4]);
    let table = [
        (1, Open),
        (2, Closed),
        (3, Filtered),
        (4, Open), // open wins over closed
    ];
    for (port, want) in table {
        assert_eq!(r.detected(port), want, "port {port}");
    }
    assert!(Scope::Full.contains(65535));
}
