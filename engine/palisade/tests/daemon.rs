//! The monitoring daemon end to end, as root, in testbeds of its own: real
//! kernel listeners come and go between sweeps, and the events, the history
//! and the store must say exactly what happened.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_sim::testbed::{KillOnDrop, stderr};
use serde_json::Value;

mod common;

use common::{BIN, DaemonCase, TARGET, kinds, ms, path};

#[test]
fn sweeps_with_changes_give_exactly_the_expected_events() {
    let mut case = DaemonCase::new(
        "sweeps",
        "every = \"1h\"\nconfirm = 2\nrecheck = \"off\"",
        200_000,
    );
    case.listen(&[22, 80]);
    let web = case.listen(&[443]);

    // 1. Baseline: everything as expected.
    case.once();
    assert!(case.events().is_empty(), "{:?}", case.events());

    // 2. 443 goes down, 6379 opens: seen once, not yet confirmed.
    case.tb.stop_listener(web).unwrap();
    let redis = case.listen(&[6379]);
    let (s2, e2) = case.once();
    assert!(
        case.events().is_empty(),
        "confirmed after one scan: {:?}",
        case.events()
    );

    // 3. Still so: both confirmed.
    let (s3, e3) = case.once();
    let events = case.events();
    let mut got = kinds(&events);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("expected_port_down".into(), Some(443)),
            ("unexpected_port_open".into(), Some(6379))
        ]
    );
    for e in &events {
        let (first, confirmed) = (ms(&e["first_seen"]), ms(&e["confirmed_at"]));
        assert!((s2..=e2).contains(&first), "first seen in sweep 2: {e}");
        assert!((s3..=e3).contains(&confirmed), "confirmed in sweep 3: {e}");
        assert_eq!(e["monitor"], "web-1");
        assert_eq!(e["host"], TARGET);
        match e["port"].as_u64() {
            Some(443) => {
                assert_eq!(e["state"], "closed");
                assert_eq!(e["severity"], "normal");
            }
            _ => {
                assert_eq!(e["state"], "open");
                assert_eq!(e["severity"], "high");
            }
        }
    }

    // 4. Fixed: both resolve, then the monitor.
    case.tb.stop_listener(redis).unwrap();
    case.listen(&[443]);
    let (s4, e4) = case.once();
    let events = case.events();
    assert_eq!(events.len(), 5, "{events:?}");
    let mut resolved = kinds(&events[2..4]);
    resolved.sort();
    assert_eq!(
        resolved,
        vec![
            ("port_resolved".into(), Some(443)),
            ("port_resolved".into(), Some(6379))
        ]
    );
    assert_eq!(kinds(&events[4..]), vec![("monitor_resolved".into(), None)]);
    for e in &events[2..] {
        assert!((s4..=e4).contains(&ms(&e["time"])), "{e}");
    }
    let ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5, "event ids are unique");

    // The history says the same, newest first.
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
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let incidents: Vec<&Value> = rows.iter().filter(|r| r["type"] == "incident").collect();
    assert_eq!(incidents.len(), 2, "{rows:?}");
    assert!(incidents.iter().all(|i| i["resolved_at_ms"].is_i64()));
    let changes_443: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r["type"] == "state_change" && r["port"] == 443)
        .map(|r| {
            (
                r["from"].as_str().unwrap_or("none").to_string(),
                r["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes_443,
        vec![
            ("closed".into(), "open".into()),
            ("open".into(), "closed".into()),
            ("none".into(), "open".into())
        ]
    );
    let o = case
        .command(&["status", "-c", path(&case.config)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("web-1") && text.contains("22,80,443"),
        "{text}"
    );
}

#[test]
fn a_short_recheck_confirms_before_the_next_full_sweep() {
    let mut case = DaemonCase::new(
        "recheck",
        "every = \"1h\"\nconfirm = 2\nrecheck = \"2s\"",
        200_000,
    );
    case.listen(&[22, 80, 443, 6379]);
    let mut child = KillOnDrop(
        case.command(&[
            "run",
            "-c",
            path(&case.config),
            "--events",
            path(&case.events),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let start = Instant::now();
    while case.events().is_empty() && start.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exit {status:?}");
    let events = case.events();
    assert_eq!(
        kinds(&events),
        vec![("unexpected_port_open".into(), Some(6379))]
    );
    let gap = ms(&events[0]["confirmed_at"]) - ms(&events[0]["first_seen"]);
    assert!(
        (1_500..30_000).contains(&gap),
        "confirmed {gap} ms after first seen"
    );
    // The confirming scan was a re-check, not a full sweep.
    let store = palisade::store::Store::open(&case.dir.join("palisade.db")).unwrap();
    let kinds: Vec<String> = (1..=store.scan_count().unwrap())
        .filter_map(|id| store.scan_kind(id).unwrap())
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("full"), "{kinds:?}");
    assert!(kinds[1..].iter().all(|k| k == "recheck"), "{kinds:?}");
}

#[test]
fn kill_9_mid_sweep_loses_and_duplicates_nothing() {
    // A slow sweep (65,535 probes at 15 kpps: about 4.5 s) to kill in the middle.
    let mut case = DaemonCase::new(
        "kill9",
        "every = \"1h\"\nconfirm = 2\nrecheck = \"off\"",
        15_000,
    );
    case.listen(&[22, 80, 443, 6379]);
    case.once(); // 6379 seen once
    for _ in 0..2 {
        let mut child = KillOnDrop(
            case.command(&[
                "run",
                "-c",
                path(&case.config),
                "--once",
                "--events",
                path(&case.events),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        );
        std::thread::sleep(Duration::from_millis(2_000));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before the kill"
        );
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
    }
    assert!(
        case.events().is_empty(),
        "a killed sweep confirmed something: {:?}",
        case.events()
    );
    case.once(); // the second conclusive scan: confirmed now
    case.once(); // and nothing more
    assert_eq!(
        kinds(&case.events()),
        vec![("unexpected_port_open".into(), Some(6379))]
    );
}

/// At the default log level a sweep is one line: what it probed and what
/// it found (issue 15: "one line per sweep").
#[test]
fn the_default_log_is_one_line_per_sweep() {
    let mut case = DaemonCase::new("log-line", "", 200_000);
    let _listening = case.listen(&[22, 80, 443, 8080]);
    let o = case
        .command(&["run", "-c", path(&case.config), "--once"])
        .env_remove("PALISADE_LOG")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    let sweeps: Vec<&str> = log.lines().filter(|l| l.contains("sweep done")).collect();
    assert_eq!(sweeps.len(), 1, "{log}");
    let fields: std::collections::BTreeMap<&str, &str> = sweeps[0]
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect();
    for (key, value) in [
        ("kind", "full"),
        ("conclusive", "true"),
        ("monitors", "1"),
        ("addresses", "1"),
        ("reachable", "1"),
        ("open_ports", "4"),
        // 8080 is seen once: pending, no event yet.
        ("events", "0"),
    ] {
        assert_eq!(fields.get(key), Some(&value), "{key}: {}", sweeps[0]);
    }
    let probes: u64 = fields["probes"].parse().unwrap();
    assert!(probes >= 65_535, "{}", sweeps[0]);
    assert!(
        fields["rate"].parse::<f64>().unwrap() > 0.0,
        "{}",
        sweeps[0]
    );
    // Nothing per slice at the default level.
    assert!(
        !log.contains("slice probed") && !log.contains("slice starting"),
        "{log}"
    );
}

#[test]
fn bad_configs_are_refused_with_file_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("palisade-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\nexpected_open = [80, 70000]\n",
    )
    .unwrap();
    for args in [
        vec!["check-config", path(&file)],
        vec!["run", "-c", path(&file), "--once"],
    ] {
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{}:4:", file.display())),
            "{args:?}: {err}"
        );
        assert!(err.contains("expected_open"), "{err}");
    }
    std::fs::write(&file, "[[monitor]]\nname = \"a\"\nhost = \"198.18.0.2\"\n").unwrap();
    let o = Command::new(BIN)
        .args(["check-config", path(&file)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sighup_reloads_the_configuration() {
    let mut case = DaemonCase::new(
        "sighup",
        "every = \"1s\"\nconfirm = 1\nrecheck = \"off\"",
        300_000,
    );
    case.listen(&[22, 80, 443, 6379]);
    let mut child = KillOnDrop(
        case.command(&[
            "run",
            "-c",
            path(&case.config),
            "--events",
            path(&case.events),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let wait = |case: &DaemonCase, n: usize| {
        let start = Instant::now();
        while case.events().len() < n && start.elapsed() < Duration::from_secs(40) {
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait(&case, 1);
    assert_eq!(
        kinds(&case.events()),
        vec![("unexpected_port_open".into(), Some(6379))]
    );
    // 6379 becomes expected: the incident no longer holds.
    let text = std::fs::read_to_string(&case.config).unwrap();
    std::fs::write(
        &case.config,
        text.replace("[22, 80, 443]", "[22, 80, 443, 6379]"),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    wait(&case, 3);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let events = case.events();
    assert_eq!(
        kinds(&events),
        vec![
            ("unexpected_port_open".into(), Some(6379)),
            ("port_resolved".into(), Some(6379)),
            ("monitor_resolved".into(), None)
        ]
    );
    assert_eq!(events[1]["reason"], "config_changed");
}

#[test]
fn a_scan_interface_gone_is_scan_failed_then_monitor_stale_and_both_resolve() {
    let mut case = DaemonCase::new(
        "health",
        "every = \"2s\"\nconfirm = 2\nrecheck = \"off\"",
        300_000,
    );
    case.listen(&[22, 80, 443]);
    let log = case.dir.join("daemon.log");
    let mut child = KillOnDrop(
        case.command(&[
            "run",
            "-c",
            path(&case.config),
            "--events",
            path(&case.events),
        ])
        .env("PALISADE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap(),
    );
    let wait_for = |case: &DaemonCase, kind: &str| {
        let start = Instant::now();
        while !case.events().iter().any(|e| e["kind"] == kind) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no {kind}: {:?}; the daemon's log:\n{}",
                kinds(&case.events()),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let store = || palisade::store::Store::open(&case.dir.join("palisade.db")).unwrap();
    let start = Instant::now();
    while store().scan_count().unwrap() < 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "no first scan");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The scan interface goes away under the running daemon.
    case.tb.unplug_scanner().unwrap();
    wait_for(&case, "scan_failed");
    wait_for(&case, "monitor_stale");
    let failed = case
        .events()
        .into_iter()
        .find(|e| e["kind"] == "scan_failed")
        .unwrap();
    assert_eq!(failed["severity"], "critical");
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    // Back: both resolve.
    case.tb.replug_scanner().unwrap();
    wait_for(&case, "scan_recovered");
    wait_for(&case, "monitor_fresh");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let got: Vec<String> = case
        .events()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    // One incident each, opened then resolved; nothing about ports.
    assert_eq!(
        got,
        [
            "scan_failed",
            "monitor_stale",
            "scan_recovered",
            "monitor_fresh"
        ],
        "{:?}",
        case.events()
    );
    let ids: Vec<String> = case
        .events()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids[0].replace(":opened", ":resolved"), ids[2]);
    assert_eq!(ids[1].replace(":opened", ":resolved"), ids[3]);
}
