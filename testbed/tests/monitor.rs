//! The monitoring daemon over the simulated fleet, as root, in a testbed of
//! its own: hosts that answer SYN-ACK on every port (SYN proxies, tarpits,
//! scrubbers) must be one finding each, and cost no more memory than normal
//! hosts. Addresses from 198.18.0.0/15 and 2001:2::/48 only.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{FleetProcess, palisade, testbed};
use palisade_sim::fleet::FleetSpec;
use palisade_sim::testbed::{Testbed, bounded, stderr};
use serde_json::Value;

/// 256 monitored hosts: 198.18.0.2 to .255 and 2001:2::2, ::3 (198.18.0.1
/// is the scanner).
fn hosts() -> Vec<String> {
    (2..=255)
        .map(|i| format!("198.18.0.{i}"))
        .chain(["2001:2::2".to_string(), "2001:2::3".to_string()])
        .collect()
}

struct Daemon {
    dir: PathBuf,
    config: PathBuf,
    events: PathBuf,
}

impl Daemon {
    fn new(name: &str) -> Daemon {
        let dir =
            std::env::temp_dir().join(format!("palisade-fleet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = format!(
            "[scan]\nrate = 500000\nretries = 1\nwait = \"1s\"\n\n[store]\npath = \"{}\"\n\n",
            dir.join("palisade.db").display()
        );
        for (i, host) in hosts().iter().enumerate() {
            text.push_str(&format!(
                "[[monitor]]\nname = \"h{i}\"\nhost = \"{host}\"\nexpected_open = [22]\n\
                 confirm = 2\nrecheck = \"off\"\n\n"
            ));
        }
        let config = dir.join("palisade.toml");
        std::fs::write(&config, text).unwrap();
        Daemon {
            events: dir.join("events.jsonl"),
            config,
            dir,
        }
    }

    /// `palisade run --once`; returns its peak memory in KiB.
    fn once(&self, tb: &Testbed) -> u64 {
        let mut cmd = tb.in_scanner(&palisade());
        cmd.args([
            "run",
            "-c",
            path(&self.config),
            "--once",
            "--events",
            path(&self.events),
        ]);
        let o = bounded(cmd, Duration::from_secs(240));
        let err = stderr(&o);
        assert!(o.status.success(), "run --once: {err}");
        err.split(", peak memory ")
            .nth(1)
            .and_then(|s| s.split(" KiB").next())
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("no peak memory in {err}"))
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["data"].clone())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fleet(synproxy_permille: u32) -> FleetSpec {
    FleetSpec {
        seed: 2026,
        density_ppm: 60,
        silent_permille: 0,
        firewalled_permille: 0,
        synproxy_permille,
        explicit: Vec::new(),
        drops_icmp: Vec::new(),
        forge: Vec::new(),
    }
}

#[test]
fn hosts_that_answer_every_port_are_one_finding_each_and_cost_no_more_memory() {
    let tb = testbed();

    // 256 normal hosts: a few open ports each, RST everywhere else.
    let normal = Daemon::new("normal");
    let responder = FleetProcess::start(&tb, &fleet(0), &[]);
    let normal_kib = normal.once(&tb);
    responder.stop();
    assert!(
        normal.events().is_empty(),
        "one sweep confirms nothing: {:?}",
        normal.events()
    );

    // 256 SYN proxies: SYN-ACK on every port of every host.
    let proxies = Daemon::new("synproxy");
    let responder = FleetProcess::start(&tb, &fleet(1000), &[]);
    let proxy_kib = proxies.once(&tb);
    assert!(proxies.events().is_empty(), "{:?}", proxies.events());
    let second_kib = proxies.once(&tb);
    responder.stop();

    let events = proxies.events();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        vec!["host_answers_all_ports"; 256],
        "no per-port event"
    );
    let mut addresses: Vec<&str> = events
        .iter()
        .map(|e| e["address"].as_str().unwrap())
        .collect();
    addresses.sort_unstable();
    let mut want = hosts();
    want.sort_unstable();
    assert_eq!(addresses, want, "exactly one per host");
    for e in &events {
        assert_eq!(e["ports"], "1-21,23-65535", "{e}");
        assert_eq!(e["port_count"], 65_534);
        assert_eq!(e["severity"], "high");
    }

    eprintln!(
        "peak memory of one sweep over 256 hosts: normal {normal_kib} KiB, \
         SYN proxies {proxy_kib} KiB (second sweep {second_kib} KiB)"
    );
    let ratio = proxy_kib as f64 / normal_kib as f64;
    assert!(
        ratio <= 1.10,
        "SYN proxies cost {proxy_kib} KiB, normal hosts {normal_kib} KiB ({ratio:.3}×)"
    );
}
