//! `palisade-sim tx-bench` (the bare AF_XDP transmit loop) as root, in a
//! testbed of its own: it sends, and a queue that another AF_XDP socket
//! holds is retried, then named in the error.

use std::process::Stdio;
use std::time::Duration;

use palisade_sim::testbed::{Testbed, TestbedConfig, bounded, stderr};

const SIM: &str = env!("CARGO_BIN_EXE_palisade-sim");

#[test]
fn a_busy_transmit_queue_is_named() {
    let tb = Testbed::new(TestbedConfig {
        targets_v4: vec!["198.18.0.2".parse().unwrap()],
        targets_v6: vec![],
        tx_queues: 1,
    })
    .unwrap_or_else(|e| {
        panic!("cannot build the testbed (needs root, iproute2, nftables, python3): {e}")
    });
    let tx_bench = |count: &str| {
        let mut cmd = tb.in_scanner(SIM);
        cmd.args(["tx-bench", "--interface", "scan0", "--gateway-mac"])
            .arg(tb.target_mac())
            .args(["--source-ip", "198.18.0.1", "--target-ip", "198.18.0.2"])
            .args(["--count", count, "--queues", "1"]);
        cmd
    };
    // On its own, the loop sends everything and reports it as JSON.
    let o = bounded(tx_bench("1000"), Duration::from_secs(30));
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON line");
    assert_eq!(report["frames"], 1000, "{report}");
    assert_eq!(report["queues"], 1, "{report}");

    // A transmit queue held by another AF_XDP socket: retried, then named.
    let mut holder = tx_bench("1000000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start palisade-sim tx-bench");
    std::thread::sleep(Duration::from_millis(500));
    let o = bounded(tx_bench("1000"), Duration::from_secs(30));
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("transmit queue 0 is in use by another AF_XDP socket"),
        "{}",
        stderr(&o)
    );
}
