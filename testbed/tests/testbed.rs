//! Integration tests for the test bed. They need root, iproute2, nftables and python3;
//! nothing is skipped: a missing prerequisite fails the test with a message naming it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use palisade_sim::testbed::{Testbed, TestbedConfig, TestbedError, cleanup_stale, preflight};

const T1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const T2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const T6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);

fn testbed(cfg: TestbedConfig) -> Testbed {
    Testbed::new(cfg).unwrap_or_else(|e| panic!("cannot build testbed: {e}"))
}

fn two_plus_one() -> TestbedConfig {
    TestbedConfig {
        targets_v4: vec![T1, T2],
        targets_v6: vec![T6],
        tx_queues: 1,
    }
}

/// Outcome of a TCP connect attempt made from inside a namespace.
#[derive(Debug, PartialEq, Eq)]
enum Connect {
    Ok,
    Refused,
    TimedOut,
    Other(String),
}

const CONNECT_PY: &str = "\
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])).close()
    print('ok')
except ConnectionRefusedError:
    print('refused')
except (socket.timeout, TimeoutError):
    print('timeout')
";

fn connect_with(mut cmd: Command, addr: IpAddr, port: u16, timeout_s: f32) -> Connect {
    let out = cmd
        .args(["-c", CONNECT_PY, &addr.to_string(), &port.to_string()])
        .arg(timeout_s.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run ip netns exec python3 (is iproute2/python3 installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.trim() {
        "ok" => Connect::Ok,
        "refused" => Connect::Refused,
        "timeout" => Connect::TimedOut,
        _ => Connect::Other(format!(
            "{}: {} {}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn connect(tb: &Testbed, addr: impl Into<IpAddr>, port: u16) -> Connect {
    connect_with(tb.in_scanner("python3"), addr.into(), port, 2.0)
}

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run `ip netns list` (is iproute2 installed?)");
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ns_exists(name: &str) -> bool {
    netns_list()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn sh_in(cmd: Command) -> String {
    let mut cmd = cmd;
    let out = cmd.output().expect("run command in namespace");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn preflight_passes() {
    preflight().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn listeners_refusals_and_loss() {
    let mut tb = testbed(two_plus_one());
    assert_eq!(tb.scanner_if(), "scan0");
    assert_eq!(tb.scanner_v4(), Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(tb.scanner_v6(), "2001:2::1".parse::<Ipv6Addr>().unwrap());
    for mac in [tb.scanner_mac(), tb.target_mac()] {
        assert_eq!(mac.len(), 17, "{mac}");
        assert!(
            mac.split(':')
                .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok()),
            "{mac}"
        );
    }
    assert_ne!(tb.scanner_mac(), tb.target_mac());

    let id = tb
        .listen(&[(T1.into(), 22), (T6.into(), 65535)])
        .unwrap_or_else(|e| panic!("listen: {e}"));

    assert_eq!(connect(&tb, T1, 22), Connect::Ok);
    assert_eq!(connect(&tb, T6, 65535), Connect::Ok);
    // Repeated connects keep working (the listener accepts and closes in a loop).
    for _ in 0..5 {
        assert_eq!(connect(&tb, T1, 22), Connect::Ok);
    }
    assert_eq!(connect(&tb, T1, 23), Connect::Refused);
    assert_eq!(connect(&tb, T2, 22), Connect::Refused);
    assert_eq!(connect(&tb, T6, 22), Connect::Refused);

    tb.set_loss(1000)
        .unwrap_or_else(|e| panic!("set_loss: {e}"));
    assert_eq!(
        connect_with(tb.in_scanner("python3"), T1.into(), 22, 1.0),
        Connect::TimedOut
    );
    assert_eq!(
        connect_with(tb.in_scanner("python3"), T6.into(), 65535, 1.0),
        Connect::TimedOut
    );
    // Replacing the rule works; 0 removes it.
    tb.set_loss(500).unwrap_or_else(|e| panic!("set_loss: {e}"));
    let rules = sh_in({
        let mut c = tb.in_target("nft");
        c.args(["list", "ruleset"]);
        c
    });
    assert!(rules.contains("numgen random mod 1000 < 500"), "{rules}");
    assert!(!rules.contains("< 1000"), "{rules}");
    tb.set_loss(0).unwrap_or_else(|e| panic!("set_loss: {e}"));
    assert_eq!(connect(&tb, T1, 22), Connect::Ok);
    assert!(matches!(tb.set_loss(1001), Err(TestbedError::Config(_))));

    tb.stop_listener(id).unwrap();
    assert_eq!(connect(&tb, T1, 22), Connect::Refused);
    assert!(matches!(
        tb.stop_listener(id),
        Err(TestbedError::UnknownListener(_))
    ));
    tb.teardown().unwrap();
}

#[test]
fn several_listener_groups() {
    let mut tb = testbed(two_plus_one());
    let a = tb.listen(&[(T1.into(), 80)]).unwrap();
    let b = tb.listen(&[(T2.into(), 443), (T1.into(), 443)]).unwrap();
    assert_eq!(connect(&tb, T1, 80), Connect::Ok);
    assert_eq!(connect(&tb, T2, 443), Connect::Ok);
    tb.stop_listener(a).unwrap();
    assert_eq!(connect(&tb, T1, 80), Connect::Refused);
    assert_eq!(connect(&tb, T1, 443), Connect::Ok);
    let _ = b; // stopped by teardown
    tb.teardown().unwrap();
}

#[test]
fn listen_on_unconfigured_address_fails_with_reason() {
    let mut tb = testbed(TestbedConfig::default());
    let err = tb
        .listen(&[(Ipv4Addr::new(198, 18, 0, 77).into(), 22)])
        .expect_err("198.18.0.77 is not configured in the target namespace");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot listen on 198.18.0.77 port 22"),
        "{msg}"
    );
    assert!(matches!(tb.listen(&[]), Err(TestbedError::Config(_))));
}

#[test]
fn topology_has_no_default_route_and_no_tentative_addresses() {
    let tb = testbed(TestbedConfig {
        tx_queues: 4,
        ..two_plus_one()
    });
    for ns in [tb.scanner_ns(), tb.target_ns()] {
        for fam in ["-4", "-6"] {
            let out = sh_in({
                let mut c = Command::new("ip");
                c.args(["-n", ns, fam, "route", "show", "default"]);
                c
            });
            assert!(out.trim().is_empty(), "default route in {ns}: {out}");
        }
        let out = sh_in({
            let mut c = Command::new("ip");
            c.args(["-n", ns, "-6", "addr", "show", "tentative"]);
            c
        });
        assert!(out.trim().is_empty(), "tentative in {ns}: {out}");
    }
    let addrs = sh_in({
        let mut c = Command::new("ip");
        c.args(["-n", tb.target_ns(), "addr", "show", "dev", "tgt0"]);
        c
    });
    for a in ["198.18.0.2/24", "198.18.0.3/24", "2001:2::2/64"] {
        assert!(addrs.contains(a), "{a} missing: {addrs}");
    }
    let queues = sh_in({
        let mut c = tb.in_scanner("ls");
        c.arg("/sys/class/net/scan0/queues");
        c
    });
    let tx = queues
        .split_whitespace()
        .filter(|q| q.starts_with("tx-"))
        .count();
    let rx = queues
        .split_whitespace()
        .filter(|q| q.starts_with("rx-"))
        .count();
    assert_eq!((tx, rx), (4, 4), "{queues}");
    let sysctls = sh_in({
        let mut c = tb.in_target("sysctl");
        c.args(["-n", "net.ipv4.tcp_syncookies"]);
        c
    });
    assert_eq!(sysctls.trim(), "1");
    tb.teardown().unwrap();
}

#[test]
fn bad_targets_are_rejected_before_anything_is_created() {
    // Validation happens before any namespace is created (see Testbed::new).
    for cfg in [
        TestbedConfig {
            targets_v4: vec![Ipv4Addr::new(198, 18, 1, 2)],
            ..TestbedConfig::default()
        },
        TestbedConfig {
            targets_v6: vec!["2001:2:0:1::5".parse().unwrap()],
            ..TestbedConfig::default()
        },
        TestbedConfig {
            targets_v4: vec![Ipv4Addr::new(198, 18, 0, 1)],
            ..TestbedConfig::default()
        },
    ] {
        match Testbed::new(cfg) {
            Err(TestbedError::Config(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn teardown_removes_namespaces() {
    let mut tb = testbed(TestbedConfig::default());
    tb.listen(&[(T1.into(), 22)]).unwrap();
    let forger = tb.add_forger().unwrap();
    let names = [
        tb.scanner_ns().to_owned(),
        tb.target_ns().to_owned(),
        forger.clone(),
    ];
    for n in &names {
        assert!(ns_exists(n), "{n} should exist");
    }
    tb.teardown().unwrap_or_else(|e| panic!("teardown: {e}"));
    for n in &names {
        assert!(!ns_exists(n), "{n} should be gone");
    }
}

#[test]
fn drop_after_panic_removes_namespaces() {
    let names = std::sync::Mutex::new(Vec::<String>::new());
    let result = std::panic::catch_unwind(|| {
        let mut tb = testbed(TestbedConfig::default());
        tb.listen(&[(T1.into(), 22)]).unwrap();
        let f = tb.add_forger().unwrap();
        let mut n = names.lock().unwrap();
        n.extend([tb.scanner_ns().to_owned(), tb.target_ns().to_owned(), f]);
        drop(n);
        panic!("deliberate panic inside a testbed test");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    for n in &names {
        assert!(!ns_exists(n), "{n} leaked after panic");
    }
}

#[test]
fn two_testbeds_do_not_interfere() {
    let mut a = testbed(TestbedConfig::default());
    let mut b = testbed(TestbedConfig::default());
    assert_ne!(a.scanner_ns(), b.scanner_ns());
    assert_ne!(a.target_ns(), b.target_ns());
    a.listen(&[(T1.into(), 22)]).unwrap();
    b.listen(&[(T1.into(), 80)]).unwrap();
    assert_eq!(connect(&a, T1, 22), Connect::Ok);
    assert_eq!(connect(&a, T1, 80), Connect::Refused);
    assert_eq!(connect(&b, T1, 22), Connect::Refused);
    assert_eq!(connect(&b, T1, 80), Connect::Ok);
    b.set_loss(1000).unwrap();
    assert_eq!(connect(&a, T1, 22), Connect::Ok);
    assert_eq!(
        connect_with(b.in_scanner("python3"), T1.into(), 80, 1.0),
        Connect::TimedOut
    );
    let b_names = [b.scanner_ns().to_owned(), b.target_ns().to_owned()];
    drop(b);
    for n in &b_names {
        assert!(!ns_exists(n));
    }
    assert_eq!(connect(&a, T1, 22), Connect::Ok);
    a.teardown().unwrap();
}

#[test]
fn forger_reaches_the_scanner() {
    let mut tb = testbed(TestbedConfig::default());
    let f = tb.add_forger().unwrap();
    assert_eq!(tb.forger_ns(), Some(f.as_str()));
    assert_eq!(tb.add_forger().unwrap(), f, "add_forger is idempotent");
    // Nothing listens on the target side of the link: a RST back proves it works.
    let cmd = tb.in_forger("python3").unwrap();
    assert_eq!(
        connect_with(cmd, Ipv4Addr::new(198, 18, 1, 1).into(), 9, 2.0),
        Connect::Refused
    );
    let cmd = tb.in_forger("python3").unwrap();
    assert_eq!(
        connect_with(
            cmd,
            "2001:2:0:1::1".parse::<Ipv6Addr>().unwrap().into(),
            9,
            2.0
        ),
        Connect::Refused
    );
    // Through the target namespace to the scanner (nothing listens there either).
    let cmd = tb.in_forger("python3").unwrap();
    assert_eq!(
        connect_with(cmd, Ipv4Addr::new(198, 18, 0, 1).into(), 9, 2.0),
        Connect::Refused
    );
    let cmd = tb.in_forger("python3").unwrap();
    assert_eq!(
        connect_with(cmd, "2001:2::1".parse::<Ipv6Addr>().unwrap().into(), 9, 2.0),
        Connect::Refused
    );
    tb.teardown().unwrap();
}

#[test]
fn cleanup_stale_removes_namespaces_of_dead_pids() {
    // A pid that certainly existed and is now dead.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().unwrap();
    let name = format!("pal-{dead}-999999-s");
    let out = Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .expect("ip netns add");
    assert!(out.status.success(), "{out:?}");
    assert!(ns_exists(&name));
    // A live one (ours) must survive.
    let tb = testbed(TestbedConfig::default());
    cleanup_stale().unwrap_or_else(|e| panic!("cleanup_stale: {e}"));
    assert!(!ns_exists(&name), "{name} should have been cleaned up");
    assert!(ns_exists(tb.scanner_ns()));
    tb.teardown().unwrap();
}
