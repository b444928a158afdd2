//! Long sweeps commit as they go, as root, each test in a testbed of its
//! own: 240 monitors, one per address of the simulated fleet
//! (`palisade-sim fleet` answering for 198.18.0.0/24; nothing leaves the
//! testbed), ports 1-400, swept at 16,000 probes/s with `commit_every =
//! "1s"`: slices of 40 monitors, each probed, decided and stored before the
//! next. The fleet counts the SYNs each address receives.
//!
//! Needs the simulator built beside the tests: `cargo build -p palisade-sim
//! && cargo test -p palisade --test resume`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_sim::fleet::FleetSpec;
use palisade_sim::fleet_process::FleetProcess;
use palisade_sim::testbed::{KillOnDrop, Testbed, TestbedConfig};

const MONITORS: u8 = 240;
const PORTS: u64 = 400;
/// Monitors per slice: `rate * commit_every / PORTS`.
const SLICE: usize = 40;

/// Monitor `i`'s address: 198.18.0.10 to 198.18.0.249.
fn address(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + i))
}

/// A testbed (no kernel targets: the fleet answers), a configuration of
/// the monitors and a store, in a directory of its own.
struct Case {
    tb: Testbed,
    dir: PathBuf,
    config: PathBuf,
    store: PathBuf,
}

impl Case {
    fn new(name: &str) -> Case {
        let tb = Testbed::new(TestbedConfig {
            targets_v4: Vec::new(),
            targets_v6: Vec::new(),
            tx_queues: 1,
        })
        .unwrap_or_else(|e| panic!("cannot build the testbed (needs root): {e}"));
        let dir =
            std::env::temp_dir().join(format!("palisade-resume-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("palisade.db");
        let mut text = format!(
            "[scan]\nrate = 16000\nper_host_rate = 1000000\nretries = 1\nwait = \"500ms\"\n\
             ports = \"1-{PORTS}\"\ncommit_every = \"1s\"\n\n[store]\npath = \"{}\"\n\n",
            store.display()
        );
        for i in 0..MONITORS {
            text.push_str(&format!(
                "[[monitor]]\nname = \"m-{i:03}\"\nhost = \"{}\"\nevery = \"1h\"\n\n",
                address(i)
            ));
        }
        let config = dir.join("palisade.toml");
        std::fs::write(&config, text).unwrap();
        Case {
            tb,
            dir,
            config,
            store,
        }
    }

    /// The fleet, counting SYNs per address (fresh counters).
    fn fleet(&self) -> FleetProcess {
        FleetProcess::start(&self.tb, &FleetSpec::default(), &["--count-per-host"])
    }

    /// `palisade run` (the daemon, not `--once`), its log in `log`.
    fn daemon(&self, log: &str) -> KillOnDrop {
        let bin = env!("CARGO_BIN_EXE_palisade");
        KillOnDrop(
            self.tb
                .in_scanner(bin)
                .args(["run", "-c", path(&self.config)])
                .args(["--events", path(&self.dir.join("events.jsonl"))])
                .env("PALISADE_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.join(log)).unwrap())
                .spawn()
                .expect("palisade run"),
        )
    }

    fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }

    /// Per monitor, its full scans: how many conclusive, how many not.
    fn scans(&self) -> BTreeMap<String, (u32, u32)> {
        let Ok(db) = rusqlite::Connection::open(&self.store) else {
            return BTreeMap::new();
        };
        let _ = db.busy_timeout(Duration::from_secs(5));
        let Ok(mut stmt) = db.prepare(
            "SELECT monitor, SUM(conclusive), SUM(1 - conclusive) FROM scans
             WHERE kind = 'full' GROUP BY monitor",
        ) else {
            // The daemon has not created its tables yet.
            return BTreeMap::new();
        };
        stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The monitors with a conclusive full scan.
    fn done(&self) -> BTreeSet<String> {
        self.scans()
            .into_iter()
            .filter(|(_, (conclusive, _))| *conclusive > 0)
            .map(|(m, _)| m)
            .collect()
    }

    /// Waits until at least `n` monitors have a conclusive full scan.
    fn wait_done(&self, n: usize, daemon: &mut KillOnDrop, log: &str) -> BTreeSet<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = self.done();
            if done.len() >= n {
                return done;
            }
            if let Ok(Some(status)) = daemon.try_wait() {
                panic!("the daemon exited ({status}): {}", self.log(log));
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} monitors scanned after 120 s: {}",
                done.len(),
                self.log(log)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn signal(daemon: &KillOnDrop, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// SYNs per address, from the fleet's counters.
fn syns(counters: &serde_json::Value) -> BTreeMap<IpAddr, u64> {
    counters["hosts"]
        .as_array()
        .expect("per-host counters")
        .iter()
        .map(|h| {
            (
                h["ip"].as_str().unwrap().parse().unwrap(),
                h["syns"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn monitor_address(name: &str) -> IpAddr {
    address(name.trim_start_matches("m-").parse().unwrap())
}

#[test]
fn a_sweep_killed_half_way_resumes_with_what_was_left() {
    let case = Case::new("kill");
    let fleet = case.fleet();
    let mut daemon = case.daemon("first.log");
    // Two slices stored, then SIGKILL: whatever was under way is lost.
    case.wait_done(2 * SLICE, &mut daemon, "first.log");
    signal(&daemon, "KILL");
    let _ = daemon.wait();
    let first = fleet.stop();
    let done = case.done();
    assert!(
        done.len() >= 2 * SLICE && done.len() < usize::from(MONITORS),
        "killed half-way: {} of {MONITORS} stored",
        done.len()
    );
    assert_eq!(done.len() % SLICE, 0, "whole slices are stored: {done:?}");
    let probed = syns(&first);
    for m in &done {
        assert!(
            probed.get(&monitor_address(m)).copied().unwrap_or(0) >= PORTS,
            "{m} stored without its probes: {first}"
        );
    }

    // Restarted: the daemon resumes with the monitors not stored.
    let fleet = case.fleet();
    let mut daemon = case.daemon("second.log");
    let all = case.wait_done(usize::from(MONITORS), &mut daemon, "second.log");
    signal(&daemon, "TERM");
    let _ = daemon.wait();
    let second = syns(&fleet.stop());
    assert_eq!(all.len(), usize::from(MONITORS));
    for i in 0..MONITORS {
        let name = format!("m-{i:03}");
        let got = second.get(&address(i)).copied().unwrap_or(0);
        if done.contains(&name) {
            assert_eq!(got, 0, "{name} was stored before the kill: no second round");
        } else {
            assert!(got >= PORTS, "{name}: {got} SYNs after the restart");
        }
    }
    // One conclusive full scan per monitor: nothing swept twice, and the
    // slice under way at the kill left no row.
    for (m, (conclusive, inconclusive)) in case.scans() {
        assert_eq!((conclusive, inconclusive), (1, 0), "{m}");
    }
    let log = case.log("second.log");
    assert!(log.contains("sweep done"), "{log}");
}

#[test]
fn sigterm_mid_sweep_exits_within_seconds_keeping_the_slices_done() {
    let case = Case::new("term");
    let fleet = case.fleet();
    let mut daemon = case.daemon("daemon.log");
    case.wait_done(SLICE, &mut daemon, "daemon.log");
    let stopped = Instant::now();
    signal(&daemon, "TERM");
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM: {}",
            case.log("daemon.log")
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = stopped.elapsed();
    let _ = fleet.stop();
    assert!(status.success(), "{status}: {}", case.log("daemon.log"));
    assert!(took < Duration::from_secs(5), "exited after {took:?}");
    let scans = case.scans();
    let done: Vec<&String> = scans
        .iter()
        .filter(|(_, (conclusive, _))| *conclusive > 0)
        .map(|(m, _)| m)
        .collect();
    // The slices done are kept, conclusive, whole; the slice under way is
    // recorded inconclusive (stopped), the rest not at all: still due.
    assert!(
        done.len() >= SLICE && done.len() < usize::from(MONITORS),
        "{} stored",
        done.len()
    );
    assert_eq!(done.len() % SLICE, 0, "whole slices: {done:?}");
    for (m, &(conclusive, inconclusive)) in &scans {
        assert!(
            (conclusive, inconclusive) == (1, 0) || (conclusive, inconclusive) == (0, 1),
            "{m}: {conclusive} conclusive, {inconclusive} inconclusive"
        );
    }
    let stopped_scans = scans.values().filter(|(c, _)| *c == 0).count();
    assert!(stopped_scans <= SLICE, "one slice at most is cut short");
    assert!(
        scans.len() < usize::from(MONITORS),
        "the slices not started are not recorded"
    );
    let log = case.log("daemon.log");
    assert!(log.contains("sweep stopped"), "{log}");
}
