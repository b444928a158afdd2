//! Helpers shared by the integration tests (running a child process bounded
//! in time is `palisade_sim::testbed::bounded`).

pub mod browser;
pub mod cluster;
pub mod http;

use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_sim::testbed::{KillOnDrop, ListenerId, Testbed, TestbedConfig, bounded, stderr};
use serde_json::Value;

/// A hosts file of a test's own: a command made by [`HostsFile::command`]
/// runs in a private mount namespace (`unshare --mount`) where the file is
/// bind-mounted over `/etc/hosts`, so that the names it lists resolve (for
/// that command and its children only) to the test's addresses, e.g. a
/// dual-stack name with one address from 198.18.0.0/15 and one from
/// 2001:2::/48. Needs root. The file is removed when this is dropped.
///
/// ```ignore
/// let hosts = with_hosts_file("198.18.0.7 dual.palisade.test\n2001:2::7 dual.palisade.test");
/// let output = hosts.command(BIN).args(["check-config", path]).output();
/// ```
///
/// It composes with `ip netns exec` (which keeps the bind mount unless
/// `/etc/netns/<ns>/hosts` exists): `hosts.command("ip").args(["netns",
/// "exec", ns, BIN, ...])`.
#[allow(dead_code)]
pub struct HostsFile {
    path: PathBuf,
}

/// A [`HostsFile`] with `entries` (hosts-file lines, `address name...`),
/// after a `127.0.0.1 localhost` line.
#[allow(dead_code)]
pub fn with_hosts_file(entries: &str) -> HostsFile {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "palisade-hosts-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, format!("127.0.0.1 localhost\n{entries}\n")).expect("write hosts file");
    HostsFile { path }
}

#[allow(dead_code)]
impl HostsFile {
    /// A command that runs `program` (add its arguments to the command)
    /// with this file as `/etc/hosts`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#)
            .arg("sh")
            .arg(&self.path)
            .arg(program);
        command
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[allow(unused_imports)]
pub use palisade_sim::bridge::LoopbackBridge;

/// A TCP port free on the host's loopback now.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    palisade_sim::bridge::free_port().expect("a free port")
}

/// The `palisade` binary under test.
#[allow(dead_code)]
pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");
/// The one kernel target of [`DaemonCase::new`].
#[allow(dead_code)]
pub const TARGET: &str = "198.18.0.2";

/// A daemon test: a testbed with kernel targets, a configuration file, a
/// store and a JSON-lines sink in a directory of its own (removed on drop).
#[allow(dead_code)]
pub struct DaemonCase {
    pub tb: Testbed,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub events: PathBuf,
    /// Where names resolve, when the test has its own hosts file.
    pub hosts: Option<HostsFile>,
}

#[allow(dead_code)]
impl DaemonCase {
    /// One monitor `web-1` on [`TARGET`] expecting 22, 80 and 443, with
    /// `monitor_extra` lines, scanning at `rate`.
    pub fn new(name: &str, monitor_extra: &str, rate: u32) -> DaemonCase {
        DaemonCase::with_monitors(
            name,
            &[TARGET],
            &[],
            &format!(
                "[[monitor]]\nname = \"web-1\"\nhost = \"{TARGET}\"\n\
                 expected_open = [22, 80, 443]\n{monitor_extra}\n"
            ),
            rate,
        )
    }

    /// A testbed with kernel targets `v4` and `v6`, and a configuration
    /// whose monitors are `monitors` (TOML), scanning at `rate` (the
    /// per-host cap lifted: a testbed host can take it, and the cap has its
    /// own tests).
    pub fn with_monitors(
        name: &str,
        v4: &[&str],
        v6: &[&str],
        monitors: &str,
        rate: u32,
    ) -> DaemonCase {
        let tb = Testbed::new(TestbedConfig {
            targets_v4: v4.iter().map(|a| a.parse().unwrap()).collect(),
            targets_v6: v6.iter().map(|a| a.parse().unwrap()).collect(),
            tx_queues: 1,
        })
        .unwrap_or_else(|e| {
            panic!("cannot build the testbed (needs root, iproute2, nftables, python3): {e}")
        });
        let dir =
            std::env::temp_dir().join(format!("palisade-daemon-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("palisade.toml");
        let events = dir.join("events.jsonl");
        std::fs::write(
            &config,
            format!(
                "[scan]\nrate = {rate}\nper_host_rate = 1000000\nretries = 1\nwait = \"500ms\"\n\n\
                 [store]\npath = \"{}\"\n\n{monitors}\n",
                dir.join("palisade.db").display()
            ),
        )
        .unwrap();
        DaemonCase {
            tb,
            dir,
            config,
            events,
            hosts: None,
        }
    }

    /// Kernel listeners on `ports` of `address` in the target namespace.
    pub fn listen_on(&mut self, address: &str, ports: &[u16]) -> ListenerId {
        let ip: IpAddr = address.parse().unwrap();
        self.tb
            .listen(&ports.iter().map(|&p| (ip, p)).collect::<Vec<_>>())
            .expect("listeners")
    }

    /// Kernel listeners on `ports` of [`TARGET`].
    pub fn listen(&mut self, ports: &[u16]) -> ListenerId {
        self.listen_on(TARGET, ports)
    }

    /// `palisade <args>` in the scanner namespace (with the test's hosts
    /// file, if any).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.hosts {
            Some(hosts) => {
                let mut cmd = hosts.command("ip");
                cmd.args(["netns", "exec", self.tb.scanner_ns(), BIN]);
                cmd
            }
            None => self.tb.in_scanner(BIN),
        };
        cmd.args(args);
        cmd
    }

    /// `palisade run --once`; returns (start, end) in unix ms.
    pub fn once(&self) -> (i64, i64) {
        let start = now_ms();
        let o = bounded(
            self.command(&[
                "run",
                "-c",
                path(&self.config),
                "--once",
                "--events",
                path(&self.events),
            ]),
            Duration::from_secs(120),
        );
        assert!(o.status.success(), "run --once: {}", stderr(&o));
        (start, now_ms())
    }

    /// The events the sink received, each the envelope's data with the
    /// envelope's CloudEvents attributes (id, time, type, source, subject,
    /// ...).
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}"));
                let mut d = v["data"].clone();
                // The CloudEvents attributes we always send; `subject` is
                // left out for the scanner's own events (no monitor).
                for k in [
                    "id",
                    "time",
                    "type",
                    "specversion",
                    "source",
                    "datacontenttype",
                ] {
                    assert!(!v[k].is_null(), "envelope without {k}: {l}");
                    d[k] = v[k].clone();
                }
                d["subject"] = v["subject"].clone();
                d
            })
            .collect()
    }

    /// The events that are not scan summaries.
    pub fn alerts(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["kind"] != "scan")
            .collect()
    }

    /// Runs `nft -f -` with `script` in the target namespace.
    pub fn nft(&self, script: &str) {
        let mut child = self
            .tb
            .in_target("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "nft: {}", stderr(&o));
    }
}

/// A daemon of a [`DaemonCase`] serving `[http]` (the dashboard, the API,
/// `/metrics`) on a free port of the scanner namespace's loopback, reachable
/// on the same port of the host's through a [`LoopbackBridge`]. Its log
/// (info) is kept in the case's directory; dropped during a panic, it
/// prints the log's last lines. Stopped (SIGKILL) when dropped.
#[allow(dead_code)]
pub struct ServedDaemon {
    process: KillOnDrop,
    _bridge: LoopbackBridge,
    pub port: u16,
    pub log: PathBuf,
}

#[allow(dead_code)]
impl DaemonCase {
    /// Appends `[http]` (with `tokens`, if given) to the configuration,
    /// starts `palisade run` with the case's `--events` sink, and waits (60 s
    /// at most) until `/healthz` answers 200.
    pub fn serve(&self, tokens: Option<&Path>) -> ServedDaemon {
        let port = free_port();
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        config.push_str(&format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
        if let Some(tokens) = tokens {
            config.push_str(&format!("tokens = \"{}\"\n", tokens.display()));
        }
        std::fs::write(&self.config, config).unwrap();
        let log = self.dir.join("daemon.log");
        let process = KillOnDrop(
            self.command(&[
                "run",
                "-c",
                path(&self.config),
                "--events",
                path(&self.events),
            ])
            .env("PALISADE_LOG", "info,palisade::daemon::sweep=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("palisade run"),
        );
        let mut served = ServedDaemon {
            process,
            _bridge: LoopbackBridge::out_of(self.tb.scanner_ns(), port),
            port,
            log,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _, _)) = http::http_get(port, "/healthz") {
                return served;
            }
            if let Ok(Some(status)) = served.process.0.try_wait() {
                panic!("the daemon exited ({status}): {}", served.log_text());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon's HTTP server did not answer within 60 s: {}",
                served.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[allow(dead_code)]
impl ServedDaemon {
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's pid (to signal it).
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.process.0.try_wait(), Ok(None))
    }

    /// SIGTERM, then its exit status (SIGKILL after 20 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.process.0.try_wait() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.process.0.kill();
                return self.process.0.wait().expect("wait for the daemon");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ServedDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- the daemon's last log lines ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for DaemonCase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[allow(dead_code)]
pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[allow(dead_code)]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[allow(dead_code)]
pub fn ms(rfc3339: &Value) -> i64 {
    let t = humantime::parse_rfc3339(rfc3339.as_str().expect("a time")).expect("RFC 3339");
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// (kind, port) of each event, in order.
#[allow(dead_code)]
pub fn kinds(events: &[Value]) -> Vec<(String, Option<u64>)> {
    events
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["port"].as_u64()))
        .collect()
}
