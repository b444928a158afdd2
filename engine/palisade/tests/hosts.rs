//! Alerts about whole hosts, end to end, as root, in testbeds of their own
//! (kernel listeners in the target namespace, nftables to make a host go
//! silent): each situation must give one true alert, or none, and the sink
//! must receive exactly those events.

mod common;

use common::{DaemonCase, TARGET, kinds, path, with_hosts_file};
use palisade_sim::testbed::stderr;

/// (kind, monitor, address, port) of each alert.
fn alerts(case: &DaemonCase) -> Vec<(String, String, String, Option<u64>)> {
    case.alerts()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["monitor"].as_str().unwrap().to_string(),
                e["address"].as_str().unwrap_or("").to_string(),
                e["port"].as_u64(),
            )
        })
        .collect()
}

fn alert(
    kind: &str,
    monitor: &str,
    address: &str,
    port: Option<u64>,
) -> (String, String, String, Option<u64>) {
    (kind.into(), monitor.into(), address.into(), port)
}

/// What the store recorded per scan and address, in order:
/// (scan id, address, reachable, open ports).
fn scanned(case: &DaemonCase) -> Vec<(i64, String, bool, String)> {
    let db = rusqlite::Connection::open(case.dir.join("palisade.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT scan_id, address, reachable, open_ports FROM scan_addresses ORDER BY scan_id, address")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_host_that_goes_silent_is_one_host_event_then_one_host_reachable() {
    let mut case = DaemonCase::new(
        "silent",
        "every = \"1h\"\nconfirm = 2\nrecheck = \"off\"",
        200_000,
    );
    case.listen(&[22, 80, 443]);
    case.once();
    assert!(case.alerts().is_empty(), "{:?}", case.alerts());

    case.tb.set_silent(&[TARGET.parse().unwrap()]).unwrap();
    case.once();
    case.once();
    assert_eq!(
        alerts(&case),
        [alert("host_unreachable", "web-1", TARGET, None)]
    );
    let down = &case.alerts()[0];
    assert_eq!(
        down["ports"], "22,80,443",
        "the expected ports it takes down: {down}"
    );
    assert_eq!(down["port_count"], 3);
    assert_eq!(down["severity"], "critical");
    assert_eq!(down["subject"], format!("web-1/{TARGET}"));
    // status shows the expected ports down, the host as the cause.
    let o = case
        .command(&["status", "-c", path(&case.config)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("unreachable (expected down: 22,80,443)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{TARGET} host_unreachable")),
        "{text}"
    );
    // Still down: nothing new.
    case.once();
    assert_eq!(case.alerts().len(), 1);

    case.tb.set_silent(&[]).unwrap();
    case.once();
    assert_eq!(
        alerts(&case),
        [
            alert("host_unreachable", "web-1", TARGET, None),
            alert("host_reachable", "web-1", TARGET, None),
            alert("monitor_resolved", "web-1", "", None),
        ]
    );
    // Back to normal: the next scan says nothing.
    case.once();
    assert_eq!(case.alerts().len(), 3);
    let reachable: Vec<bool> = scanned(&case).iter().map(|s| s.2).collect();
    assert_eq!(reachable, [true, false, false, false, true, true]);
}

#[test]
fn a_host_that_drops_icmp_but_serves_tcp_stays_reachable() {
    let mut case = DaemonCase::new(
        "noicmp",
        "every = \"1h\"\nconfirm = 1\nrecheck = \"off\"",
        200_000,
    );
    case.listen(&[22, 80, 443]);
    case.nft(
        "table inet palisade_noicmp {\n chain prerouting {\n  \
         type filter hook prerouting priority raw; policy accept;\n  \
         icmp type echo-request drop\n  icmpv6 type echo-request drop\n }\n}\n",
    );
    case.once();
    case.once();
    assert!(case.alerts().is_empty(), "{:?}", case.alerts());
    assert!(scanned(&case).iter().all(|s| s.2));
}

#[test]
fn two_monitors_on_one_address_each_see_the_truth() {
    let monitors = format!(
        "[[monitor]]\nname = \"team-a\"\nhost = \"{TARGET}\"\nexpected_open = [22, 80, 443]\n\
         confirm = 2\nrecheck = \"off\"\n\n\
         [[monitor]]\nname = \"team-b\"\nhost = \"{TARGET}\"\nexpected_open = [22, 443]\n\
         confirm = 2\nrecheck = \"off\"\n"
    );
    let mut case = DaemonCase::with_monitors("shared", &[TARGET], &[], &monitors, 200_000);
    case.listen(&[22, 80]);
    let web = case.listen(&[443]);
    // check-config warns, and accepts.
    let o = case
        .command(&["check-config", path(&case.config)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("monitors team-a and team-b both scan 198.18.0.2"),
        "{}",
        stderr(&o)
    );
    case.once();
    case.once();
    // team-b does not expect 80: both scans see it, so team-b alone has a
    // (true) unexpected open port; nobody has a false port down.
    assert_eq!(
        alerts(&case),
        [alert("unexpected_port_open", "team-b", TARGET, Some(80))]
    );
    // A real change: each monitor gets its own event.
    case.tb.stop_listener(web).unwrap();
    case.once();
    case.once();
    let got = alerts(&case);
    assert_eq!(
        got[1..],
        [
            alert("expected_port_down", "team-a", TARGET, Some(443)),
            alert("expected_port_down", "team-b", TARGET, Some(443)),
        ]
    );
    // One address, scanned once per sweep: both monitors' scans of a
    // sweep record the same answer.
    let scans = scanned(&case);
    assert_eq!(scans.len(), 8);
    for pair in scans.chunks(2) {
        assert_eq!(
            (&pair[0].1, pair[0].2, &pair[0].3),
            (&pair[1].1, pair[1].2, &pair[1].3)
        );
    }
}

#[test]
fn every_address_of_a_dual_stack_name_is_scanned() {
    const V6: &str = "2001:2::2";
    let monitors = "[[monitor]]\nname = \"dual\"\nhost = \"dual.palisade.test\"\n\
                    expected_open = [22]\nconfirm = 2\nrecheck = \"off\"\n";
    let mut case = DaemonCase::with_monitors("dual", &[TARGET], &[V6], monitors, 200_000);
    case.hosts = Some(with_hosts_file(&format!(
        "{TARGET} dual.palisade.test\n{V6} dual.palisade.test"
    )));
    case.listen_on(TARGET, &[22]);
    case.listen_on(V6, &[22]);
    // The IPv6 firewall forgot a rule: Redis is open there only.
    case.listen_on(V6, &[6379]);
    case.once();
    case.once();
    assert_eq!(
        alerts(&case),
        [alert("unexpected_port_open", "dual", V6, Some(6379))]
    );
    assert_eq!(case.alerts()[0]["subject"], format!("dual/[{V6}]:6379"));
    let last: Vec<(String, String)> = scanned(&case)[2..]
        .iter()
        .map(|s| (s.1.clone(), s.3.clone()))
        .collect();
    assert_eq!(
        last,
        [(TARGET.into(), "22".into()), (V6.into(), "22,6379".into())]
    );
    // status shows each address.
    let o = case
        .command(&["status", "-c", path(&case.config)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(TARGET) && text.contains(V6), "{text}");
    assert!(
        text.contains(&format!("[{V6}]:6379 unexpected_port_open")),
        "{text}"
    );
}

#[test]
fn three_hundred_ports_opened_at_once_are_fifty_events_and_one_summary() {
    let mut case = DaemonCase::new(
        "mass",
        "every = \"1h\"\nconfirm = 2\nrecheck = \"off\"",
        200_000,
    );
    case.listen(&[22, 80, 443]);
    case.once();
    let ports: Vec<u16> = (20_000..20_300).collect();
    case.listen(&ports);
    case.once();
    case.once();
    let events = case.alerts();
    assert_eq!(events.len(), 51, "{:?}", kinds(&events));
    assert!(
        events[..50]
            .iter()
            .all(|e| e["kind"] == "unexpected_port_open")
    );
    let summary = &events[50];
    assert_eq!(summary["kind"], "ports_changed");
    assert_eq!(
        (summary["sent"].as_u64(), summary["total"].as_u64()),
        (Some(50), Some(300))
    );
    assert_eq!(summary["severity"], "high");
    assert_eq!(
        summary["changes"],
        serde_json::json!([{
            "address": TARGET,
            "kind": "unexpected_port_open",
            "ports": "20000-20299",
            "count": 300
        }])
    );
    // Nothing is dropped: the history holds every port.
    let o = case
        .command(&[
            "history",
            "web-1",
            "-c",
            path(&case.config),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let incidents = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("\"type\":\"incident\""))
        .count();
    assert_eq!(incidents, 300);
}

#[test]
fn a_host_that_answers_ping_but_drops_all_tcp_has_its_ports_down_not_the_host() {
    let mut case = DaemonCase::new(
        "tcpdrop",
        "every = \"1h\"\nconfirm = 2\nrecheck = \"off\"",
        200_000,
    );
    case.listen(&[22, 80, 443]);
    case.once();
    // Every TCP segment to the target dropped; ICMP echo still answered.
    case.tb.set_loss(1000).unwrap();
    case.once();
    case.once();
    assert_eq!(
        alerts(&case),
        [
            alert("expected_port_down", "web-1", TARGET, Some(22)),
            alert("expected_port_down", "web-1", TARGET, Some(80)),
            alert("expected_port_down", "web-1", TARGET, Some(443)),
        ]
    );
    assert!(scanned(&case).iter().all(|s| s.2), "reachable by echo");
    // With ping off, the same host is unreachable.
    let text = std::fs::read_to_string(&case.config).unwrap();
    std::fs::write(
        &case.config,
        text.replace("recheck = \"off\"", "recheck = \"off\"\nping = false"),
    )
    .unwrap();
    case.once();
    case.once();
    let got = alerts(&case);
    assert_eq!(got[3..], [alert("host_unreachable", "web-1", TARGET, None)]);
}
