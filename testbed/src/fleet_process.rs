//! `palisade-sim fleet` as a process in a testbed's target namespace, for
//! tests of any package: started for some blocks with a fleet's knobs,
//! stopped with its counters (per address too, with `--count-per-host`).
//! The binary is this workspace's (`cargo build -p palisade-sim`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::fleet::FleetSpec;
use crate::testbed::{Testbed, workspace_binary};

/// `palisade-sim fleet` running in the target namespace.
#[derive(Debug)]
pub struct FleetProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    pub mode: String,
}

impl FleetProcess {
    /// Starts the responder on `tgt0` for 198.18.0.0/24 and 2001:2::/120
    /// with `spec` and `extra` arguments; returns once it says it is ready.
    pub fn start(tb: &Testbed, spec: &FleetSpec, extra: &[&str]) -> FleetProcess {
        Self::start_blocks(tb, &["198.18.0.0/24", "2001:2::/120"], spec, extra)
    }

    /// [`FleetProcess::start`] for the address `blocks` (one of each
    /// family at most).
    pub fn start_blocks(
        tb: &Testbed,
        blocks: &[&str],
        spec: &FleetSpec,
        extra: &[&str],
    ) -> FleetProcess {
        let sim = workspace_binary("palisade-sim");
        let mut cmd = tb.in_target(&sim.display().to_string());
        cmd.args(["fleet", "--interface", tb.target_if()]);
        for block in blocks {
            cmd.args(["--block", block]);
        }
        for (flag, value) in [
            ("--seed", spec.seed),
            ("--density-ppm", spec.density_ppm),
            ("--silent-permille", spec.silent_permille),
            ("--firewalled-permille", spec.firewalled_permille),
            ("--synproxy-permille", spec.synproxy_permille),
        ] {
            cmd.arg(flag).arg(value.to_string());
        }
        for &(a, p) in &spec.explicit {
            cmd.arg("--open")
                .arg(std::net::SocketAddr::new(a, p).to_string());
        }
        for a in &spec.drops_icmp {
            cmd.arg("--drops-icmp").arg(a.to_string());
        }
        for (a, f) in &spec.forge {
            cmd.arg("--forge").arg(format!("{a}={}", f.name()));
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("start `palisade-sim fleet` (ip netns exec)");
        let out = child.stdout.take().expect("stdout is piped");
        let mut err = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut fleet = FleetProcess {
            child,
            lines,
            stderr: Some(stderr),
            mode: String::new(),
        };
        match fleet.lines.recv_timeout(Duration::from_secs(15)) {
            Ok(line) => {
                let mode = line
                    .strip_prefix("fleet ready (XDP ")
                    .and_then(|m| m.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
                fleet.mode = mode.to_string();
            }
            Err(_) => {
                let _ = fleet.child.kill();
                let status = fleet.child.wait().expect("wait for palisade-sim fleet");
                panic!(
                    "`palisade-sim fleet` did not get ready ({status}): {}",
                    fleet.take_stderr()
                );
            }
        }
        fleet
    }

    /// What it wrote to stderr (once it has exited).
    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }

    /// SIGTERM; returns the counters it prints on the way out.
    pub fn stop(mut self) -> serde_json::Value {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(killed.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "`palisade-sim fleet` did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines: Vec<String> = self.lines.try_iter().collect();
        let err = self.take_stderr();
        assert!(
            status.success(),
            "`palisade-sim fleet` exited {status}: {err}"
        );
        assert_eq!(lines.len(), 1, "want one JSON line, got {lines:?} ({err})");
        let v: serde_json::Value = serde_json::from_str(&lines[0])
            .unwrap_or_else(|e| panic!("bad counters {:?}: {e}", lines[0]));
        assert_eq!(v["mode"], self.mode.as_str(), "{v}");
        v
    }
}

impl Drop for FleetProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The counter `name` of a fleet's counters ([`FleetProcess::stop`]).
pub fn counter(v: &serde_json::Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {v}"))
}
