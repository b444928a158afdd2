//! Adaptive retries (`palisade scan --target-recall`) against the simulated
//! fleet, as root, each test in a testbed of its own (198.18.0.0/24 answered
//! by `palisade-sim fleet`; nothing leaves the testbed). Every scan is
//! compared with the fleet's ground truth, and the probes are counted twice:
//! by the scanner's summary and by the fleet's per-host SYN counters.
//!
//! The fleet mixes the host classes whose silence means different things:
//! normal hosts (every port answers, SYN-ACK or RST: a silent port is a lost
//! answer), firewalled hosts (answer open ports only: their filtered ports
//! are silent ports of answering hosts) and silent hosts (answer nothing:
//! they keep the configured retries).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use palisade_core::probe::{PortSet, TargetSet};
use palisade_sim::fleet::{FleetSpec, HostClass};
use palisade_sim::testbed::{Testbed, bounded, stderr};

mod common;

use common::{FleetProcess, counter, palisade, testbed};

const TARGETS: &str = "198.18.0.0/26";
const PORTS: &str = "1-1024";

/// 64 hosts x 1,024 ports, 0.5% open, a tenth of the hosts firewalled and a
/// tenth silent.
fn spec() -> FleetSpec {
    FleetSpec {
        seed: 16,
        density_ppm: 5_000,
        silent_permille: 100,
        firewalled_permille: 100,
        ..FleetSpec::default()
    }
}

fn truth(spec: &FleetSpec) -> BTreeSet<(IpAddr, u16)> {
    spec.truth(
        &TargetSet::parse_arg("targets", TARGETS).unwrap(),
        &PortSet::parse_arg("ports", PORTS).unwrap(),
    )
    .collect()
}

/// One scan of the targets with `extra` arguments, against a fleet of its
/// own (fresh counters) losing `loss_permille` of its answers: the open
/// ports found, the scan's JSON summary and the fleet's counters.
struct Run {
    open: BTreeSet<(IpAddr, u16)>,
    summary: serde_json::Value,
    fleet: serde_json::Value,
    output: Output,
}

impl Run {
    fn probes(&self) -> u64 {
        counter(&self.summary, "sent") + counter(&self.summary, "retries")
    }

    /// SYNs the fleet received from `ip`.
    fn syns_of(&self, ip: IpAddr) -> u64 {
        self.fleet["hosts"]
            .as_array()
            .expect("per-host counters")
            .iter()
            .find(|h| h["ip"] == ip.to_string())
            .map_or(0, |h| h["syns"].as_u64().unwrap())
    }
}

fn run(tb: &Testbed, spec: &FleetSpec, loss_permille: u32, extra: &[&str]) -> Run {
    let loss = loss_permille.to_string();
    let fleet = FleetProcess::start(tb, spec, &["--loss-permille", &loss, "--count-per-host"]);
    let mut cmd = tb.in_scanner(&palisade());
    cmd.args(["scan", TARGETS, "-p", PORTS, "--rate", "200000"])
        .args(["--summary-json", "-"])
        .args(extra);
    let output = bounded(cmd, Duration::from_secs(60));
    let fleet = fleet.stop();
    assert!(
        output.status.success(),
        "palisade scan {extra:?}: {}",
        stderr(&output)
    );
    let summary = stderr(&output)
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no JSON summary: {}", stderr(&output)));
    let open = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["state"] == "open")
        .map(|v| {
            (
                v["ip"].as_str().unwrap().parse().unwrap(),
                v["port"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    Run {
        open,
        summary,
        fleet,
        output,
    }
}

fn hosts_of(spec: &FleetSpec, class: HostClass) -> Vec<IpAddr> {
    TargetSet::parse_arg("targets", TARGETS)
        .unwrap()
        .v4
        .ranges()
        .iter()
        .flat_map(|&(lo, hi)| lo..=hi)
        .map(|a| IpAddr::from(std::net::Ipv4Addr::from(a as u32)))
        .filter(|&a| spec.class(a) == class)
        .collect()
}

#[test]
fn at_five_percent_loss_adaptive_retries_find_every_open_port() {
    let tb = testbed();
    let spec = spec();
    let want = truth(&spec);
    let silent = hosts_of(&spec, HostClass::Silent);
    let firewalled = hosts_of(&spec, HostClass::Firewalled);
    assert!(want.len() > 250, "{} open ports", want.len());
    assert!(!silent.is_empty() && !firewalled.is_empty());

    let plain = run(&tb, &spec, 50, &[]);
    let adaptive = run(&tb, &spec, 50, &["--target-recall", "99.99"]);
    let s = &adaptive.summary;
    eprintln!(
        "5% loss: default retries found {} of {} open ports with {} probes; \
         adaptive {} with {} probes; summary {s}",
        plain.open.len(),
        want.len(),
        plain.probes(),
        adaptive.open.len(),
        adaptive.probes()
    );
    assert!(plain.open.is_subset(&want) && adaptive.open.is_subset(&want));
    assert_eq!(
        adaptive.open,
        want,
        "missed {:?}: {}",
        want.difference(&adaptive.open).collect::<Vec<_>>(),
        stderr(&adaptive.output)
    );
    // The loss as the fleet drops it, and the rounds it needs:
    // 0.05^3 = 1.25e-4 misses 99.99%, 0.05^4 = 6.25e-6 meets it.
    let loss = s["estimated_loss"].as_f64().expect("an estimate");
    assert!((0.04..=0.06).contains(&loss), "{loss}");
    assert_eq!(s["retry_rounds"], 3, "{s}");
    assert!(s["expected_misses"].as_f64().unwrap() < 0.1, "{s}");
    // The text summary says so too.
    let text = stderr(&adaptive.output);
    assert!(
        text.contains("; retry rounds 3 (adaptive, target recall 99.99%: ")
            && text.contains("expected misses 0.0"),
        "{text}"
    );
    assert!(
        stderr(&plain.output).contains("per attempt; retry rounds 1; expected misses "),
        "{}",
        stderr(&plain.output)
    );
    // The default estimates the same loss, and keeps its one retry.
    let plain_loss = plain.summary["estimated_loss"].as_f64().unwrap();
    assert!((0.04..=0.06).contains(&plain_loss), "{plain_loss}");
    assert_eq!(plain.summary["retry_rounds"], 1);
    assert_eq!(counter(&plain.summary, "extra_retries"), 0);
    // More retries than the default, within the budget (a quarter of the
    // first probes), and counted alike by the scanner and the fleet.
    let extra = counter(s, "extra_retries");
    assert!(extra > 0, "{s}");
    assert!(
        counter(s, "retries") > counter(&plain.summary, "retries"),
        "{s}"
    );
    assert!(extra <= counter(s, "sent") / 4 + 64 * 2, "{s}");
    assert!(
        adaptive.probes() as f64 <= 1.25 * plain.probes() as f64,
        "{} vs {}",
        adaptive.probes(),
        plain.probes()
    );
    for run in [&plain, &adaptive] {
        assert_eq!(counter(&run.fleet, "syns"), run.probes(), "{}", run.fleet);
    }
    // A host that answers nothing keeps the configured retry: two SYNs a
    // port; the filtered ports of firewalled hosts (answering hosts) got
    // more.
    for &host in &silent {
        assert_eq!(
            adaptive.syns_of(host),
            2 * 1024,
            "{host}: {}",
            adaptive.fleet
        );
    }
    let filtered: u64 = firewalled.iter().map(|&h| adaptive.syns_of(h)).sum();
    assert!(
        filtered > 2 * 1024 * firewalled.len() as u64,
        "{filtered} SYNs to {} firewalled hosts",
        firewalled.len()
    );
}

#[test]
fn without_loss_adaptive_retries_send_no_extra_probe() {
    let tb = testbed();
    let spec = spec();
    let want = truth(&spec);
    let plain = run(&tb, &spec, 0, &[]);
    let adaptive = run(&tb, &spec, 0, &["--target-recall", "99.99"]);
    eprintln!(
        "0% loss: default {} probes, adaptive {} probes; summary {}",
        plain.probes(),
        adaptive.probes(),
        adaptive.summary
    );
    assert_eq!(plain.open, want, "{}", stderr(&plain.output));
    assert_eq!(adaptive.open, want, "{}", stderr(&adaptive.output));
    let s = &adaptive.summary;
    assert_eq!(s["estimated_loss"], 0.0, "{s}");
    assert_eq!(s["retry_rounds"], 1, "{s}");
    assert_eq!(s["expected_misses"], 0.0, "{s}");
    assert_eq!(counter(s, "extra_retries"), 0, "{s}");
    // The same probes as the default: the first ones, and one retry for each
    // port that did not answer (filtered ports, silent hosts).
    assert_eq!(adaptive.probes(), plain.probes());
    assert_eq!(counter(s, "retries"), counter(&plain.summary, "retries"));
    assert_eq!(
        counter(&adaptive.fleet, "syns"),
        counter(&plain.fleet, "syns")
    );
}
