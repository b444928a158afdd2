//! `palisade doctor`, as root in a testbed with a real nats-server (on the
//! host's loopback, bridged into the scanner namespace) and a real store:
//! ready (exit 0) when all is well; with the interface down, the store on a
//! read-only file system and NATS stopped, each failure named with its fix
//! (exit 1).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use palisade_outputs::testing::NatsServer;
use palisade_sim::testbed::{Testbed, TestbedConfig, bounded, stderr};
use serde_json::Value;

mod common;
use common::LoopbackBridge;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const TARGET: &str = "198.18.0.2";

struct Case {
    tb: Testbed,
    dir: PathBuf,
    config: PathBuf,
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn case(nats: &NatsServer) -> (Case, LoopbackBridge) {
    let mut tb = Testbed::new(TestbedConfig {
        targets_v4: vec![TARGET.parse::<Ipv4Addr>().unwrap()],
        targets_v6: vec![],
        tx_queues: 1,
    })
    .unwrap_or_else(|e| panic!("cannot build the testbed (needs root): {e}"));
    let ip: IpAddr = TARGET.parse().unwrap();
    tb.listen(&[(ip, 22), (ip, 443)]).expect("listeners");
    let bridge = LoopbackBridge::new(tb.scanner_ns(), nats.port);
    let dir = std::env::temp_dir().join(format!("palisade-doctor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let config = dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[scan]\ninterface = \"{}\"\nrate = 300000\nwait = \"300ms\"\n\n\
             [store]\npath = \"{}\"\n\n\
             [[sink]]\nkind = \"nats\"\nurl = \"{}\"\nsubject_prefix = \"palisade\"\n\n\
             [[monitor]]\nname = \"web-1\"\nhost = \"{TARGET}\"\nexpected_open = [22, 443]\n",
            tb.scanner_if(),
            dir.join("state/palisade.db").display(),
            nats.url
        ),
    )
    .unwrap();
    (Case { tb, dir, config }, bridge)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `palisade doctor -c CONFIG --format FORMAT` in the scanner namespace;
/// with `read_only`, inside a mount namespace where `read_only` is a
/// read-only bind mount of itself.
fn doctor(c: &Case, format: &str, read_only: Option<&Path>) -> Output {
    let mut cmd = match read_only {
        None => {
            let mut cmd = c.tb.in_scanner(BIN);
            cmd.args(["doctor", "-c", path(&c.config), "--format", format]);
            cmd
        }
        Some(dir) => {
            let mut cmd = c.tb.in_scanner("unshare");
            cmd.args(["--mount", "--propagation", "private", "sh", "-ec"])
                .arg(
                    "mount --bind \"$1\" \"$1\"; mount -o remount,bind,ro \"$1\"; \
                     shift; exec \"$@\"",
                )
                .args(["sh", path(dir), BIN, "doctor", "-c", path(&c.config)])
                .args(["--format", format]);
            cmd
        }
    };
    cmd.env("PALISADE_LOG", "off");
    bounded(cmd, Duration::from_secs(90))
}

fn report(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

/// The check named `name`s entries (route and nats may have several).
fn checks<'a>(r: &'a Value, name: &str) -> Vec<&'a Value> {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == name)
        .collect()
}

fn status<'a>(r: &'a Value, name: &str) -> Vec<&'a str> {
    checks(r, name)
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect()
}

#[test]
fn doctor_is_ready_on_a_healthy_testbed_and_names_each_failure_with_its_fix() {
    let mut nats = NatsServer::start();
    let (c, _bridge) = case(&nats);

    // A first sweep creates the store (WAL) and the JetStream stream.
    let mut once = c.tb.in_scanner(BIN);
    once.args(["run", "-c", path(&c.config), "--once"]);
    let o = bounded(once, Duration::from_secs(120));
    assert!(o.status.success(), "run --once: {}", stderr(&o));

    let o = doctor(&c, "json", None);
    let r = report(&o);
    assert_eq!(o.status.code(), Some(0), "healthy: {r:#}\n{}", stderr(&o));
    assert_eq!(r["ready"], true, "{r:#}");
    for name in [
        "kernel",
        "capabilities",
        "interface",
        "xdp",
        "af_xdp",
        "memlock",
        "route",
        "store",
        "nats",
        "clock",
    ] {
        let s = status(&r, name);
        assert!(
            !s.is_empty() && s.iter().all(|s| *s != "fail" && *s != "skip"),
            "{name}: {r:#}"
        );
    }
    let store = checks(&r, "store")[0]["detail"].as_str().unwrap();
    assert!(store.contains("writable, WAL"), "{store}");
    let nats_detail = checks(&r, "nats")[0]["detail"].as_str().unwrap();
    assert!(nats_detail.contains("as configured"), "{nats_detail}");
    let route = checks(&r, "route")[0]["detail"].as_str().unwrap();
    assert!(
        route.contains(TARGET) && route.contains(c.tb.scanner_if()),
        "{route}"
    );

    // Break three things at once.
    let down =
        c.tb.in_scanner("ip")
            .args(["link", "set", "dev", c.tb.scanner_if(), "down"])
            .status()
            .unwrap();
    assert!(down.success());
    nats.stop();

    let o = doctor(&c, "json", Some(&c.dir.join("state")));
    let r = report(&o);
    assert_eq!(o.status.code(), Some(1), "broken: {r:#}\n{}", stderr(&o));
    assert_eq!(r["ready"], false, "{r:#}");
    let failed = |name: &str| -> (String, String) {
        let c = checks(&r, name)
            .into_iter()
            .find(|c| c["status"] == "fail")
            .unwrap_or_else(|| panic!("no failed {name} check: {r:#}"));
        (
            c["detail"].as_str().unwrap().to_string(),
            c["fix"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} fails without a fix: {r:#}"))
                .to_string(),
        )
    };
    let (detail, fix) = failed("interface");
    assert!(
        detail.contains(c.tb.scanner_if()) && detail.contains("down"),
        "{detail}"
    );
    assert!(
        fix.contains(&format!("ip link set dev {} up", c.tb.scanner_if())),
        "{fix}"
    );
    let (detail, fix) = failed("store");
    assert!(
        detail.contains(path(&c.dir.join("state/palisade.db"))) && detail.contains("not writable"),
        "{detail}"
    );
    assert!(fix.contains("read-write file system"), "{fix}");
    let (detail, fix) = failed("nats");
    assert!(detail.contains("cannot connect to NATS"), "{detail}");
    assert!(fix.contains("start the NATS server"), "{fix}");
    // The machine's own checks still pass.
    for name in ["kernel", "capabilities", "memlock"] {
        assert_eq!(status(&r, name), vec!["ok"], "{name}: {r:#}");
    }

    // The text checklist names the same failures, each followed by its fix.
    let o = doctor(&c, "text", Some(&c.dir.join("state")));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    for name in ["interface", "store", "nats"] {
        let i = lines
            .iter()
            .position(|l| l.starts_with("FAIL") && l.contains(name))
            .unwrap_or_else(|| panic!("no FAIL line for {name}:\n{text}"));
        assert!(lines[i + 1].trim_start().starts_with("fix: "), "{text}");
    }
    assert!(text.contains("not ready"), "{text}");

    // Bad usage: exit 2.
    let o = Command::new(BIN)
        .args(["doctor", "--format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
