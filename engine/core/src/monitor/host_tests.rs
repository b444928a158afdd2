//! Unit tests of the rules about whole addresses: hosts that answer on every
//! port, the per-port event budget, several addresses per host, and state
//! saved before addresses were tracked.

use super::*;

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
const B: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2));

fn spec(expected: &[u16]) -> MonitorSpec {
    MonitorSpec {
        name: "web".into(),
        host: "web.example".into(),
        expected_open: expected.iter().copied().collect(),
        confirm: 2,
        recheck_ms: None,
        ..MonitorSpec::default()
    }
}

fn answered(open: impl IntoIterator<Item = u16>) -> AddressReplies {
    AddressReplies {
        reachable: true,
        open: open.into_iter().collect(),
        closed: Ports::new(),
    }
}

fn scan(at: Millis, addresses: Vec<(IpAddr, AddressReplies)>) -> Observation {
    Observation {
        scan_id: at / 1000,
        at,
        scope: Scope::Full,
        conclusive: true,
        addresses: addresses.into_iter().collect(),
    }
}

fn kinds(step: &Step) -> Vec<&'static str> {
    step.events.iter().map(Event::kind).collect()
}

#[test]
fn a_host_answering_every_port_is_one_finding_and_state_stays_small() {
    let s = spec(&[22, 443]);
    let mut state = MonitorState::new();
    let all = || answered(1..=u16::MAX);
    let first = state.observe(&s, &scan(1000, vec![(A, all())]));
    assert!(first.events.is_empty(), "{:?}", first.events);
    // Only the expected ports are tracked: nothing per unexpected port.
    assert_eq!(first.changes.len(), 2);
    assert!(state.pending().is_empty());
    assert_eq!(state.tracked_ports(A), BTreeSet::from([22, 443]));

    let second = state.observe(&s, &scan(2000, vec![(A, all())]));
    assert_eq!(kinds(&second), ["host_answers_all_ports"]);
    let Event::HostOpened(incident) = &second.events[0] else {
        panic!("{:?}", second.events);
    };
    assert_eq!(incident.ports.to_string(), "1-21,23-442,444-65535");
    assert_eq!(incident.ports.count(), 65_533);
    assert_eq!(incident.id, "web-198.18.0.2-host_answers_all_ports-1000");
    assert_eq!(second.events[0].priority(), Priority::High);
    let json = serde_json::to_string(&state).unwrap();
    assert!(
        json.len() < 2_000,
        "saved state stays small: {} bytes",
        json.len()
    );

    // Holding: nothing new. Then it stops: resolved, and the few ports
    // still open start their own (normal) confirmation.
    assert!(
        state
            .observe(&s, &scan(3000, vec![(A, all())]))
            .events
            .is_empty()
    );
    let back = state.observe(&s, &scan(4000, vec![(A, answered([22, 443, 8080]))]));
    assert_eq!(kinds(&back), ["host_resolved", "monitor_resolved"]);
    assert_eq!(state.pending(), BTreeSet::from([8080]));
}

#[test]
fn the_threshold_is_more_than_n_unexpected_ports() {
    let s = MonitorSpec {
        answer_all_threshold: 3,
        confirm: 1,
        ..spec(&[22])
    };
    let mut at_threshold = MonitorState::new();
    let step = at_threshold.observe(&s, &scan(1000, vec![(A, answered([22, 1, 2, 3]))]));
    assert_eq!(kinds(&step), ["unexpected_port_open"; 3]);
    let mut over = MonitorState::new();
    let step = over.observe(&s, &scan(1000, vec![(A, answered([22, 1, 2, 3, 4]))]));
    assert_eq!(kinds(&step), ["host_answers_all_ports"]);
    // Incidents of ports open before it started stay open, untouched.
    let step = at_threshold.observe(&s, &scan(2000, vec![(A, answered([22, 1, 2, 3, 4]))]));
    assert_eq!(kinds(&step), ["host_answers_all_ports"]);
    assert_eq!(at_threshold.open_incidents().len(), 3);
}

#[test]
fn mass_changes_stay_within_the_event_budget_and_nothing_is_dropped() {
    let s = spec(&[22]);
    let many = || answered([22].into_iter().chain(10_000..10_300));
    let mut state = MonitorState::new();
    state.observe(&s, &scan(1000, vec![(A, many())]));
    let step = state.observe(&s, &scan(2000, vec![(A, many())]));
    assert_eq!(step.events.len(), 51);
    assert_eq!(kinds(&step)[..50], ["unexpected_port_open"; 50]);
    let Event::PortsChanged(summary) = &step.events[50] else {
        panic!("{:?}", step.events.last());
    };
    assert_eq!((summary.sent, summary.total), (50, 300));
    assert_eq!(summary.changes.len(), 1);
    assert_eq!(summary.changes[0].ports.to_string(), "10000-10299");
    assert_eq!(summary.changes[0].kind, "unexpected_port_open");
    assert_eq!(step.events[50].priority(), Priority::High);
    assert_eq!(step.events[50].id(), "web:ports_changed:2000");
    // The state and the step's record (for the history) hold every one.
    assert_eq!(state.open_incidents().len(), 300);
    assert_eq!(step.incidents.len(), 300);
    // They all close: 50 resolutions, the summary, then monitor_resolved.
    let step = state.observe(&s, &scan(3000, vec![(A, answered([22]))]));
    assert_eq!(step.events.len(), 52);
    assert_eq!(kinds(&step)[50..], ["ports_changed", "monitor_resolved"]);
    // At the budget exactly: no summary.
    let mut state = MonitorState::new();
    let fifty = || answered([22].into_iter().chain(10_000..10_050));
    state.observe(&s, &scan(1000, vec![(A, fifty())]));
    let step = state.observe(&s, &scan(2000, vec![(A, fifty())]));
    assert_eq!(kinds(&step), ["unexpected_port_open"; 50]);
}

#[test]
fn the_budget_sends_the_most_urgent_first() {
    let s = MonitorSpec {
        max_port_events: 2,
        confirm: 1,
        ..spec(&[1, 2, 3])
    };
    let mut state = MonitorState::new();
    let step = state.observe(&s, &scan(1000, vec![(A, answered([9]))]));
    // Chosen by urgency (9 first), then sent in step order.
    assert_eq!(
        kinds(&step),
        [
            "expected_port_down",
            "unexpected_port_open",
            "ports_changed"
        ]
    );
    assert_eq!(
        (step.events[0].port(), step.events[1].port()),
        (Some(1), Some(9))
    );
    let Event::PortsChanged(summary) = &step.events[2] else {
        panic!()
    };
    let lines: Vec<String> = summary
        .changes
        .iter()
        .map(|c| format!("{} {}", c.kind, c.ports))
        .collect();
    assert_eq!(lines, ["expected_port_down 1-3", "unexpected_port_open 9"]);
}

#[test]
fn each_address_has_its_own_ports_and_events() {
    let s = spec(&[443]);
    let mut state = MonitorState::new();
    // The IPv6 address has 22 open: only there.
    for at in [1000, 2000] {
        let step = state.observe(
            &s,
            &scan(at, vec![(A, answered([443])), (B, answered([22, 443]))]),
        );
        if at == 2000 {
            assert_eq!(kinds(&step), ["unexpected_port_open"]);
            assert_eq!(step.events[0].address(), Some(B));
            assert_eq!(step.events[0].port(), Some(22));
        }
    }
    assert_eq!(state.addresses().collect::<Vec<_>>(), [A, B]);
    assert_eq!(state.last_open(A), BTreeSet::from([443]));
    assert_eq!(state.last_open(B), BTreeSet::from([22, 443]));
    // B disappears from the name: its incident closes, the monitor is clear.
    let step = state.observe(&s, &scan(3000, vec![(A, answered([443]))]));
    assert_eq!(kinds(&step), ["port_resolved", "monitor_resolved"]);
    let Event::PortResolved {
        reason,
        state: seen,
        ..
    } = &step.events[0]
    else {
        panic!()
    };
    assert_eq!((*reason, *seen), (Resolution::AddressRemoved, None));
    assert_eq!(state.addresses().collect::<Vec<_>>(), [A]);
    // A new address starts with a baseline: nothing on its first scan.
    let step = state.observe(
        &s,
        &scan(4000, vec![(A, answered([443])), (B, answered([22, 443]))]),
    );
    assert!(step.events.is_empty());
    assert_eq!(state.pending(), BTreeSet::from([22]));
}

#[test]
fn one_address_down_is_its_own_host_event() {
    let s = spec(&[443]);
    let mut state = MonitorState::new();
    let dark = AddressReplies::default();
    state.observe(
        &s,
        &scan(1000, vec![(A, answered([443])), (B, dark.clone())]),
    );
    let step = state.observe(&s, &scan(2000, vec![(A, answered([443])), (B, dark)]));
    assert_eq!(kinds(&step), ["host_unreachable"]);
    assert_eq!(step.events[0].address(), Some(B));
    assert_eq!(step.events[0].priority(), Priority::Critical);
    assert_eq!(state.host_incidents().len(), 1);
    // Removing the monitor resolves the host incident too.
    let step = state.remove(&s, 3000);
    assert_eq!(kinds(&step), ["host_reachable", "monitor_resolved"]);
    let Event::HostResolved { reason, .. } = &step.events[0] else {
        panic!()
    };
    assert_eq!(*reason, Resolution::MonitorRemoved);
}

#[test]
fn state_saved_before_addresses_is_adopted_by_the_first_address() {
    let old = r#"{"known":{"80":"open","6379":"open"},"streaks":{},
        "incidents":{"6379":{"id":"web-6379-1000","monitor":"web","port":6379,
        "kind":"unexpected_port_open","first_seen":1000,"confirmed_at":2000,"state":"open"}}}"#;
    let mut state: MonitorState = serde_json::from_str(old).unwrap();
    assert_eq!(state.open_incidents().len(), 1);
    assert_eq!(state.tracked_ports(A), BTreeSet::from([80, 6379]));
    let s = spec(&[80]);
    let step = state.observe(&s, &scan(3000, vec![(A, answered([80]))]));
    assert_eq!(kinds(&step), ["port_resolved", "monitor_resolved"]);
    assert_eq!(step.events[0].id(), "web-6379-1000:resolved");
    assert_eq!(step.events[0].address(), Some(A));
    let text = serde_json::to_string(&state).unwrap();
    assert!(!text.contains("legacy"), "{text}");
}

#[test]
fn a_narrowed_scan_range_observes_only_its_ports_and_resolves_what_it_left() {
    let mut s = spec(&[22, 8443]);
    let mut state = MonitorState::new();
    // Full range: 22 and 8443 open as expected, 9000 open, unexpected.
    for at in [1000, 2000] {
        state.observe(&s, &scan(at, vec![(A, answered([22, 8443, 9000]))]));
    }
    assert_eq!(state.open_incidents().len(), 1);
    assert_eq!(state.open_incidents()[0].port, 9000);

    // Narrowed to 1-1024: 9000 is no longer scanned; its incident resolves
    // as config_changed (state unknown), the expected 8443 is still
    // observed, and an open port beyond the range (replies from a shared
    // address probed wider) is ignored.
    s.scan_ports = "1-1024".parse().unwrap();
    let step = state.observe(&s, &scan(3000, vec![(A, answered([22, 8443, 9000, 7000]))]));
    let Event::PortResolved {
        incident,
        state: detected,
        reason,
        ..
    } = &step.events[0]
    else {
        panic!("{:?}", step.events);
    };
    assert_eq!((incident.port, *detected), (9000, None));
    assert_eq!(*reason, Resolution::ConfigChanged);
    assert_eq!(state.known_state(A, 9000), None, "forgotten");
    assert_eq!(state.known_state(A, 8443), Some(PortState::Open));
    assert_eq!(state.tracked_ports(A), BTreeSet::from([22, 8443]));
    let again = state.observe(&s, &scan(4000, vec![(A, answered([22, 8443, 7000]))]));
    assert!(
        again.changes.is_empty() && again.events.is_empty(),
        "{again:?}"
    );
}

#[test]
fn the_saved_form_is_a_map_by_address_and_a_fresh_state_is_empty() {
    assert_eq!(serde_json::to_string(&MonitorState::new()).unwrap(), "{}");
    let mut state = MonitorState::new();
    let s = spec(&[80]);
    state.observe(&s, &scan(1000, vec![(A, answered([80]))]));
    let text = serde_json::to_string(&state).unwrap();
    // Empty maps are left out.
    assert_eq!(
        text,
        format!(r#"{{"addresses":{{"{A}":{{"known":{{"80":"open"}}}}}}}}"#)
    );
    let back: MonitorState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, state);
    // As saved before (every map written, empty or not).
    let before = format!(
        r#"{{"addresses":{{"{A}":{{"known":{{"80":"open"}},"streaks":{{}},"incidents":{{}},"host_streaks":{{}},"host_incidents":{{}}}}}}}}"#
    );
    assert_eq!(
        serde_json::from_str::<MonitorState>(&before).unwrap(),
        state
    );
    // Incidents and streaks, of ports and of the host, round-trip.
    let mut busy = MonitorState::new();
    let one = MonitorSpec {
        confirm: 1,
        ..spec(&[80, 443])
    };
    busy.observe(&one, &scan(2000, vec![(A, answered([80, 6379]))]));
    busy.observe(
        &spec(&[80]),
        &scan(3000, vec![(A, AddressReplies::default())]),
    );
    let text = serde_json::to_string(&busy).unwrap();
    assert!(
        text.contains(r#""incidents":{"443":"#)
            && text.contains(r#""host_streaks":{"host_unreachable":"#),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<MonitorState>(&text).unwrap(), busy);
    // The form saved before (a map by address, whatever its order) reads.
    let two = format!(r#"{{"addresses":{{"198.18.0.9":{{}},"{A}":{{"known":{{"80":"open"}}}}}}}}"#);
    let back: MonitorState = serde_json::from_str(&two).unwrap();
    assert_eq!(back.addresses().count(), 2);
    assert_eq!(back.known_state(A, 80), Some(PortState::Open));
}
