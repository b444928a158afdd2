//! The scan agents' cluster (issue 14, `docs/CLUSTER.md`) in tests, as root:
//!
//! * [`ClusterNats`]: the current nats-server (2.15.1,
//!   [`CURRENT_NATS_SERVER`]) running `docs/nats-cluster.conf` verbatim on a
//!   free loopback port, its JetStream store and the users' passwords given
//!   through the environment variables the file names; stopped, killed and
//!   restarted on the same port with the same store.
//! * [`connect`]: an async-nats client as one of the file's users (an
//!   agent with its own inbox prefix `_INBOX_{name}`), collecting the
//!   server's errors (permission violations) it is told about.
//! * [`AgentBed`]: one agent's testbed (its own namespaces, veth and AF_XDP
//!   socket), the simulated fleet of one [`FleetSpec`] in its target
//!   namespace (the truth is a pure function of the spec, so every agent
//!   sees the same fleet), a [`LoopbackBridge`] to nats-server, and
//!   `palisade agent` spawned, killed and restarted in its scanner
//!   namespace, each run's log kept.
//! * [`Coordinator`]: `palisade run` with `[cluster]` in a namespace of its
//!   own (a testbed without a fleet: it has nothing to probe, and a
//!   coordinator that probed anyway would find nothing), its events in a
//!   JSON-lines sink, its store read back.
//!
//! Everything is torn down on drop, also on panic (the logs' last lines are
//! printed then); every wait is bounded.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_outputs::testing::CURRENT_NATS_SERVER;
use palisade_sim::bridge::LoopbackBridge;
use palisade_sim::fleet::FleetSpec;
use palisade_sim::fleet_process::FleetProcess;
use palisade_sim::testbed::{KillOnDrop, Testbed, TestbedConfig};
use serde_json::Value;

use super::{BIN, free_port};

/// The sample account configuration the tests run verbatim.
pub const NATS_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/nats-cluster.conf");

/// The environment variable of `docs/nats-cluster.conf` naming the store.
pub const STORE_DIR_VAR: &str = "PALISADE_NATS_STORE_DIR";

/// Set to a file name: the server runs with `-DV` (every protocol line
/// traced) and its log is copied there when it is dropped.
pub const TRACE_VAR: &str = "PALISADE_TEST_NATS_TRACE";

/// The users of `docs/nats-cluster.conf`, each with the environment
/// variable its password comes from.
pub const USERS: [(&str, &str); 6] = [
    ("coordinator", "PALISADE_NATS_COORDINATOR_PASSWORD"),
    ("agent-a", "PALISADE_NATS_AGENT_A_PASSWORD"),
    ("agent-b", "PALISADE_NATS_AGENT_B_PASSWORD"),
    ("agent-c", "PALISADE_NATS_AGENT_C_PASSWORD"),
    ("events", "PALISADE_NATS_EVENTS_PASSWORD"),
    ("alert", "PALISADE_NATS_ALERT_PASSWORD"),
];

/// The agents of `docs/nats-cluster.conf` and their labels besides `any`.
pub const AGENTS: [(&str, &[&str]); 3] = [
    ("agent-a", &[]),
    ("agent-b", &[]),
    ("agent-c", &["site=fra1"]),
];

/// The label of `agent-c`.
pub const FRA1: &str = "site=fra1";

/// The password of `user` in the tests.
pub fn password(user: &str) -> String {
    format!("{user}-test-secret")
}

/// A directory of its own under the temporary directory (emptied first).
pub fn test_dir(kind: &str, name: &str) -> PathBuf {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "palisade-{kind}-{name}-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits (at most `limit`, polling every 100 ms) until `cond` holds; panics
/// naming `what` and with `context()` otherwise.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// nats-server 2.15.1 running `docs/nats-cluster.conf` on `127.0.0.1:port`,
/// its store in a directory of its own. Killed, its directory removed, on
/// drop (the log's last lines printed during a panic).
pub struct ClusterNats {
    pub port: u16,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl ClusterNats {
    /// Starts the server; panics with its log if it does not come up.
    pub fn start() -> ClusterNats {
        assert!(
            Path::new(CURRENT_NATS_SERVER).is_file(),
            "{CURRENT_NATS_SERVER} is missing: run `cargo xtask setup`"
        );
        let dir = test_dir("cluster-nats", "server");
        std::fs::create_dir_all(dir.join("store")).unwrap();
        let mut nats = ClusterNats {
            port: 0,
            url: String::new(),
            dir,
            child: None,
        };
        let mut last = String::new();
        for _ in 0..5 {
            nats.port = free_port();
            nats.url = format!("nats://127.0.0.1:{}", nats.port);
            match nats.spawn() {
                Ok(child) => {
                    nats.child = Some(child);
                    return nats;
                }
                Err(e) => last = e,
            }
        }
        panic!("cannot start nats-server: {last}");
    }

    /// The JetStream store directory (`$PALISADE_NATS_STORE_DIR`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// The server's log so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The log lines of permission violations.
    pub fn violations(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(String::from)
            .collect()
    }

    fn spawn(&self) -> Result<Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map_err(|e| format!("cannot open the log: {e}"))?;
        let mut cmd = Command::new(CURRENT_NATS_SERVER);
        cmd.args(["-c", NATS_CONF, "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .env(STORE_DIR_VAR, self.store_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if std::env::var_os(TRACE_VAR).is_some() {
            cmd.arg("-DV");
        }
        for (user, var) in USERS {
            cmd.env(var, password(user));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {CURRENT_NATS_SERVER}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}: {}", tail(&self.log(), 5)));
            }
            if self.log().contains(&format!("127.0.0.1:{}", self.port))
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not up within 10 s: {}", tail(&self.log(), 5)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM (SIGKILL after 10 s); the store is kept.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL, like a crash; the store is kept.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again (stopped first if it runs) on the same port with the
    /// same store; retries for 10 s while the port lingers.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("cannot restart nats-server: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for ClusterNats {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- nats-server's last log lines ---\n{}",
                tail(&self.log(), 40)
            );
        }
        self.kill();
        if let Some(keep) = std::env::var_os(TRACE_VAR) {
            let _ = std::fs::copy(self.log_file(), keep);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server errors a client was told about (permission violations), in
/// order.
pub type ServerErrors = Arc<Mutex<Vec<String>>>;

/// A client of `nats` as `user` (password [`password`]); an agent
/// (`agent-*`) gets the inbox prefix `_INBOX_{user}` as `palisade agent`
/// does. Requests time out after 3 s.
pub async fn connect(nats: &ClusterNats, user: &str) -> (async_nats::Client, ServerErrors) {
    let errors: ServerErrors = Arc::default();
    let seen = errors.clone();
    let mut options =
        async_nats::ConnectOptions::with_user_and_password(user.to_string(), password(user))
            .request_timeout(Some(Duration::from_secs(3)))
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        seen.lock().unwrap().push(e.to_string());
                    }
                }
            });
    if user.starts_with("agent-") {
        options = options.custom_inbox_prefix(format!("_INBOX_{user}"));
    }
    let client = tokio::time::timeout(Duration::from_secs(10), options.connect(&nats.url))
        .await
        .unwrap_or_else(|_| panic!("connecting as {user} took more than 10 s"))
        .unwrap_or_else(|e| panic!("cannot connect as {user}: {e}"));
    (client, errors)
}

/// An agent's testbed: its own namespaces and veth (so its own AF_XDP
/// socket), the fleet of `spec` on the target side counting SYNs per
/// address, nats-server's port bridged into the scanner namespace, and
/// `palisade agent` runs in the scanner namespace.
pub struct AgentBed {
    pub name: String,
    pub labels: Vec<String>,
    pub tb: Testbed,
    spec: FleetSpec,
    fleet: Option<FleetProcess>,
    _bridge: LoopbackBridge,
    nats_url: String,
    dir: PathBuf,
    process: Option<KillOnDrop>,
    /// The log of each run, in order.
    logs: Vec<PathBuf>,
    /// Its `--rate`.
    pub rate: u64,
    /// Further arguments of every run.
    pub extra: Vec<String>,
}

impl AgentBed {
    /// The testbed, its fleet and its bridge; no agent runs yet.
    pub fn new(name: &str, labels: &[&str], nats: &ClusterNats, spec: &FleetSpec) -> AgentBed {
        let tb = Testbed::new(TestbedConfig {
            targets_v4: Vec::new(),
            targets_v6: Vec::new(),
            tx_queues: 1,
        })
        .unwrap_or_else(|e| panic!("cannot build the testbed (needs root): {e}"));
        let fleet = FleetProcess::start(&tb, spec, &["--count-per-host"]);
        let bridge = LoopbackBridge::new(tb.scanner_ns(), nats.port);
        AgentBed {
            name: name.to_string(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            tb,
            spec: spec.clone(),
            fleet: Some(fleet),
            _bridge: bridge,
            nats_url: nats.url.clone(),
            dir: test_dir("agent", name),
            process: None,
            logs: Vec::new(),
            rate: 20_000,
            extra: Vec::new(),
        }
    }

    /// The command line of `palisade agent` (the contract of issue 14).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["agent".into(), "--name".into(), self.name.clone()];
        for label in &self.labels {
            args.extend(["--label".into(), label.clone()]);
        }
        args.extend([
            "--rate".into(),
            self.rate.to_string(),
            "--interface".into(),
            self.tb.scanner_if().to_string(),
            "--source-ip".into(),
            self.tb.scanner_v4().to_string(),
            "--source-ip".into(),
            self.tb.scanner_v6().to_string(),
            "--nats-url".into(),
            self.nats_url.clone(),
            "--user".into(),
            self.name.clone(),
        ]);
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts `palisade agent` (its password in `$PALISADE_NATS_PASSWORD`),
    /// its log in a new file; panics if one runs already.
    pub fn start(&mut self) {
        assert!(!self.running(), "{} runs already", self.name);
        let log = self.dir.join(format!("agent-{}.log", self.logs.len()));
        let child = self
            .tb
            .in_scanner(BIN)
            .args(self.args())
            .env("PALISADE_NATS_PASSWORD", password(&self.name))
            .env(
                "PALISADE_LOG",
                "info,palisade::cluster=debug,palisade::cmd=debug",
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("palisade agent");
        self.logs.push(log);
        self.process = Some(KillOnDrop(child));
    }

    /// Whether its agent runs.
    pub fn running(&mut self) -> bool {
        matches!(self.process.as_mut().map(|p| p.try_wait()), Some(Ok(None)))
    }

    /// Its agent's exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process
            .as_mut()
            .and_then(|p| p.try_wait().ok().flatten())
    }

    /// The agent's pid, if it runs.
    pub fn pid(&mut self) -> Option<u32> {
        if self.running() {
            self.process.as_ref().map(|p| p.id())
        } else {
            None
        }
    }

    /// SIGKILL (reaped).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to its agent.
    pub fn signal(&mut self, signal: &str) {
        let pid = self.pid().expect("an agent runs");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGTERM, then its exit status (SIGKILL after 20 s, then panics).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut p = self.process.take().expect("an agent runs");
        let _ = Command::new("kill")
            .args(["-TERM", &p.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = p.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = p.kill();
                let _ = p.wait();
                panic!(
                    "{} still ran 20 s after SIGTERM: {}",
                    self.name,
                    tail(&self.log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log of its last run.
    pub fn log(&self) -> String {
        self.logs
            .last()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The logs of all its runs, each after a header line.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, l) in self.logs.iter().enumerate() {
            out.push_str(&format!("--- {} run {i} ---\n", self.name));
            out.push_str(&std::fs::read_to_string(l).unwrap_or_default());
        }
        out
    }

    /// Stops the fleet (its counters returned) and starts it again: counts
    /// from zero.
    pub fn restart_fleet(&mut self) -> Option<Value> {
        let counters = self.stop_fleet();
        self.fleet = Some(FleetProcess::start(
            &self.tb,
            &self.spec,
            &["--count-per-host"],
        ));
        counters
    }

    /// Stops the fleet and returns its counters (with SYNs per address);
    /// `None` if stopped already.
    pub fn stop_fleet(&mut self) -> Option<Value> {
        self.fleet.take().map(FleetProcess::stop)
    }
}

impl Drop for AgentBed {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", tail(&self.logs(), 40));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// SYNs per address, from a fleet's counters ([`AgentBed::stop_fleet`]).
pub fn syns(counters: &Value) -> BTreeMap<IpAddr, u64> {
    counters["hosts"]
        .as_array()
        .map(|hosts| {
            hosts
                .iter()
                .map(|h| {
                    (
                        h["ip"].as_str().unwrap().parse().unwrap(),
                        h["syns"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One monitor of the coordinator's configuration.
#[derive(Debug, Clone)]
pub struct MonitorDef {
    pub name: String,
    pub host: IpAddr,
    /// `agent_label`, if pinned.
    pub label: Option<String>,
}

/// The `[cluster]` knobs of a test (the contract of issue 14).
#[derive(Debug, Clone)]
pub struct ClusterKnobs {
    pub agent_rate: u64,
    pub shard_time: &'static str,
    pub ack_wait: &'static str,
    pub max_deliver: u32,
    pub labels: Vec<String>,
}

impl Default for ClusterKnobs {
    fn default() -> ClusterKnobs {
        ClusterKnobs {
            agent_rate: 20_000,
            shard_time: "1s",
            ack_wait: "3s",
            max_deliver: 3,
            labels: vec![FRA1.to_string()],
        }
    }
}

/// The daemon's configuration with `[cluster]` as `coordinator`: `ports`
/// of each monitor, swept `every`, confirmed at once (`confirm = 1`,
/// `recheck = "off"`, nothing expected open, so every open port is one
/// `unexpected_port_open` event), no ICMP echo; `commit_every` cuts the
/// sweep into slices; the store in `store`.
pub fn coordinator_config(
    nats: &ClusterNats,
    cluster: &ClusterKnobs,
    monitors: &[MonitorDef],
    ports: &str,
    every: &str,
    commit_every: &str,
    store: &Path,
) -> String {
    let labels: Vec<String> = cluster.labels.iter().map(|l| format!("{l:?}")).collect();
    let mut text = format!(
        "[scan]\nrate = {rate}\nper_host_rate = 1000000\nretries = 1\nwait = \"500ms\"\n\
         ports = \"{ports}\"\ncommit_every = \"{commit_every}\"\n\n\
         [store]\npath = \"{store}\"\n\n\
         [cluster]\nurl = \"{url}\"\nuser = \"coordinator\"\npassword = \"{password}\"\n\
         agent_rate = {agent_rate}\nshard_time = \"{shard_time}\"\nack_wait = \"{ack_wait}\"\n\
         max_deliver = {max_deliver}\nlabels = [{labels}]\n\n",
        rate = cluster.agent_rate,
        store = store.display(),
        url = nats.url,
        password = password("coordinator"),
        agent_rate = cluster.agent_rate,
        shard_time = cluster.shard_time,
        ack_wait = cluster.ack_wait,
        max_deliver = cluster.max_deliver,
        labels = labels.join(", "),
    );
    for m in monitors {
        text.push_str(&format!(
            "[[monitor]]\nname = \"{}\"\nhost = \"{}\"\nevery = \"{every}\"\nconfirm = 1\n\
             recheck = \"off\"\nping = false\nmax_port_events = 65535\n",
            m.name, m.host
        ));
        if let Some(label) = &m.label {
            text.push_str(&format!("agent_label = \"{label}\"\n"));
        }
        text.push('\n');
    }
    text
}

/// `palisade run` as the coordinator, in a namespace of its own (a testbed
/// without a fleet) with nats-server bridged in; its events in a JSON-lines
/// file, its store and log in its directory.
pub struct Coordinator {
    pub tb: Testbed,
    _bridge: LoopbackBridge,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub events: PathBuf,
    pub store: PathBuf,
    process: Option<KillOnDrop>,
    logs: Vec<PathBuf>,
}

impl Coordinator {
    /// The namespace, the bridge and the directory; `config` (see
    /// [`coordinator_config`]; its store must be [`Coordinator::store_path`]
    /// of `dir`) written. Not started.
    pub fn new(nats: &ClusterNats, name: &str) -> Coordinator {
        let tb = Testbed::new(TestbedConfig {
            targets_v4: Vec::new(),
            targets_v6: Vec::new(),
            tx_queues: 1,
        })
        .unwrap_or_else(|e| panic!("cannot build the testbed (needs root): {e}"));
        let bridge = LoopbackBridge::new(tb.scanner_ns(), nats.port);
        let dir = test_dir("coordinator", name);
        Coordinator {
            tb,
            _bridge: bridge,
            config: dir.join("palisade.toml"),
            events: dir.join("events.jsonl"),
            store: dir.join("palisade.db"),
            dir,
            process: None,
            logs: Vec::new(),
        }
    }

    /// Writes the configuration.
    pub fn configure(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    /// `palisade <args>` in its namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.tb.in_scanner(BIN);
        cmd.args(args);
        cmd
    }

    /// Starts `palisade run` (its log in a new file).
    pub fn start(&mut self) {
        assert!(!self.running(), "the coordinator runs already");
        let log = self
            .dir
            .join(format!("coordinator-{}.log", self.logs.len()));
        let child = self
            .command(&[
                "run",
                "-c",
                self.config.to_str().unwrap(),
                "--events",
                self.events.to_str().unwrap(),
            ])
            .env(
                "PALISADE_LOG",
                "info,palisade::cluster=debug,palisade::daemon=debug",
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("palisade run");
        self.logs.push(log);
        self.process = Some(KillOnDrop(child));
    }

    /// Whether it runs.
    pub fn running(&mut self) -> bool {
        matches!(self.process.as_mut().map(|p| p.try_wait()), Some(Ok(None)))
    }

    /// Panics with its log if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(Ok(Some(status))) = self.process.as_mut().map(|p| p.try_wait()) {
            panic!(
                "the coordinator exited ({status}): {}",
                tail(&self.log(), 60)
            );
        }
    }

    /// SIGTERM, then its exit status (SIGKILL after 20 s).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut p = self.process.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &p.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = p.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = p.kill();
                return p.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// The log of its last run.
    pub fn log(&self) -> String {
        self.logs
            .last()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The logs of all its runs.
    pub fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("--- restarted ---\n")
    }

    /// The events of the sink, each the envelope's data with its `id` and
    /// `type` (lines not yet complete are skipped).
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                let mut d = v["data"].clone();
                d["id"] = v["id"].clone();
                d["type"] = v["type"].clone();
                d
            })
            .collect()
    }

    /// A read-only connection to its store, if it exists.
    fn db(&self) -> Option<rusqlite::Connection> {
        let db = rusqlite::Connection::open_with_flags(
            &self.store,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        db.busy_timeout(Duration::from_secs(5)).ok()?;
        Some(db)
    }

    /// Per monitor, its full scans: (conclusive, inconclusive).
    pub fn scans(&self) -> BTreeMap<String, (u32, u32)> {
        let Some(db) = self.db() else {
            return BTreeMap::new();
        };
        let Ok(mut stmt) = db.prepare(
            "SELECT monitor, SUM(conclusive), SUM(1 - conclusive) FROM scans
             WHERE kind = 'full' GROUP BY monitor",
        ) else {
            return BTreeMap::new();
        };
        stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The notes of the inconclusive full scans, by monitor.
    pub fn inconclusive_notes(&self) -> BTreeMap<String, Vec<String>> {
        let Some(db) = self.db() else {
            return BTreeMap::new();
        };
        let Ok(mut stmt) = db.prepare(
            "SELECT monitor, COALESCE(note, '') FROM scans
             WHERE kind = 'full' AND conclusive = 0 ORDER BY id",
        ) else {
            return BTreeMap::new();
        };
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
        {
            let (m, note) = row.unwrap();
            out.entry(m).or_default().push(note);
        }
        out
    }

    /// The open ports each address answered with in conclusive full scans,
    /// as the store keeps them (ranges expanded).
    pub fn open_ports(&self) -> BTreeMap<IpAddr, Vec<u16>> {
        let Some(db) = self.db() else {
            return BTreeMap::new();
        };
        let Ok(mut stmt) = db.prepare(
            "SELECT a.address, a.open_ports FROM scan_addresses a
             JOIN scans s ON s.id = a.scan_id
             WHERE s.kind = 'full' AND s.conclusive = 1",
        ) else {
            return BTreeMap::new();
        };
        let mut out: BTreeMap<IpAddr, Vec<u16>> = BTreeMap::new();
        for row in stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
        {
            let (address, ranges) = row.unwrap();
            let ports = out.entry(address.parse().unwrap()).or_default();
            ports.extend(expand_ranges(&ranges));
            ports.sort_unstable();
            ports.dedup();
        }
        out
    }

    /// Waits (at most `limit`) until every monitor of `names` has at least
    /// one full scan stored (conclusive or not); panics with its log if it
    /// exits or the time runs out.
    pub fn wait_scanned(&mut self, names: &[String], limit: Duration, extra: impl Fn() -> String) {
        let start = Instant::now();
        loop {
            let scans = self.scans();
            if names.iter().all(|n| scans.contains_key(n)) {
                return;
            }
            self.assert_running();
            assert!(
                start.elapsed() < limit,
                "{} of {} monitors scanned after {limit:?}\n--- coordinator ---\n{}\n{}",
                names.iter().filter(|n| scans.contains_key(*n)).count(),
                names.len(),
                tail(&self.log(), 60),
                extra()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- the coordinator's last log lines ---\n{}",
                tail(&self.log(), 60)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// "22,80,8000-8002" → [22, 80, 8000, 8001, 8002].
pub fn expand_ranges(ranges: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in ranges.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (u16, u16) = (lo.parse().unwrap(), hi.parse().unwrap());
                out.extend(lo..=hi);
            }
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

/// The streams, consumers, KV bucket and object store, set up as the
/// coordinator sets them up at start (`palisade::cluster::coordinator::
/// Coordinator::start` with the `[cluster]` of [`coordinator_config`] for
/// `knobs`), then left: agents can start before the coordinator. Blocking
/// (its own runtime): call it outside an async context.
pub fn set_up_as_coordinator(nats: &ClusterNats, knobs: &ClusterKnobs) {
    let text = coordinator_config(
        nats,
        knobs,
        &[],
        "1-10",
        "1h",
        "1m",
        Path::new("/nonexistent/palisade.db"),
    );
    let config = palisade::config::parse("cluster.toml", &text)
        .unwrap_or_else(|e| panic!("the coordinator's configuration: {e:?}\n{text}"));
    let settings = config.cluster.expect("[cluster]");
    let coordinator =
        palisade::cluster::coordinator::Coordinator::start(&settings, Box::new(|_| {}))
            .unwrap_or_else(|e| panic!("the coordinator's set-up: {e}\n{}", tail(&nats.log(), 20)));
    drop(coordinator);
}

/// Runs `future` on a runtime of its own (the tests are synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// One cluster test at a time: each builds four testbeds and runs a fleet
/// per agent, which two shared cores take one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A coordinator, agents in testbeds of their own with the same fleet, and
/// nats-server; declared so that the processes go before the server.
pub struct Cluster {
    pub coordinator: Coordinator,
    pub agents: Vec<AgentBed>,
    pub spec: FleetSpec,
    pub monitors: Vec<MonitorDef>,
    /// Each monitor's ports: 1 to this.
    pub ports: u16,
    pub knobs: ClusterKnobs,
    pub nats: ClusterNats,
}

impl Cluster {
    /// nats-server with the streams, consumers, bucket and object store
    /// made as the coordinator makes them (so agents may start first), a
    /// testbed with the fleet of `spec` for each of [`AGENTS`] (no agent
    /// started), and the coordinator configured (not started): `monitors`
    /// on ports 1 to `ports`, every `every`, slices of `commit_every`.
    pub fn new(
        name: &str,
        spec: FleetSpec,
        monitors: Vec<MonitorDef>,
        ports: u16,
        knobs: ClusterKnobs,
        every: &str,
        commit_every: &str,
    ) -> Cluster {
        let nats = ClusterNats::start();
        set_up_as_coordinator(&nats, &knobs);
        let agents = AGENTS
            .iter()
            .map(|(agent, labels)| AgentBed::new(agent, labels, &nats, &spec))
            .collect();
        let coordinator = Coordinator::new(&nats, name);
        coordinator.configure(&coordinator_config(
            &nats,
            &knobs,
            &monitors,
            &format!("1-{ports}"),
            every,
            commit_every,
            &coordinator.store,
        ));
        Cluster {
            coordinator,
            agents,
            spec,
            monitors,
            ports,
            knobs,
            nats,
        }
    }

    /// The agent `name`.
    pub fn agent(&mut self, name: &str) -> &mut AgentBed {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    /// The monitors' names.
    pub fn names(&self) -> Vec<String> {
        self.monitors.iter().map(|m| m.name.clone()).collect()
    }

    /// The fleet's truth: each monitor address's open ports of 1 to
    /// `ports` (addresses without any left out).
    pub fn truth(&self) -> BTreeMap<IpAddr, Vec<u16>> {
        let mut out = BTreeMap::new();
        for m in &self.monitors {
            let open: Vec<u16> = (1..=self.ports)
                .filter(|&p| self.spec.open(m.host, p))
                .collect();
            if !open.is_empty() {
                out.insert(m.host, open);
            }
        }
        out
    }

    /// Everything a failure message needs: the coordinator's log, each
    /// agent's, the server's violations.
    pub fn context(&self) -> String {
        let mut out = format!(
            "--- coordinator ---\n{}\n",
            tail(&self.coordinator.logs(), 80)
        );
        for a in &self.agents {
            out.push_str(&tail(&a.logs(), 40));
            out.push('\n');
        }
        out.push_str("--- nats-server violations ---\n");
        out.push_str(&tail(&self.nats.violations().join("\n"), 20));
        out
    }

    /// Waits (30 s at most) until each of `names` has its heartbeat in
    /// PALISADE_AGENTS.
    /// Starts every agent at `rate` probes/s and waits until all are live.
    pub fn start_agents(&mut self, rate: u64) {
        for a in &mut self.agents {
            a.rate = rate;
            a.start();
        }
        let names: Vec<String> = self.agents.iter().map(|a| a.name.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.wait_live(&names);
    }

    /// Waits until the coordinator stored its first slice (60 s at most).
    pub fn wait_first_slice(&mut self) {
        let start = Instant::now();
        while self.coordinator.scans().is_empty() {
            self.coordinator.assert_running();
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no slice stored within 60 s\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_live(&mut self, names: &[&str]) {
        let start = Instant::now();
        loop {
            let live = live_agents(&self.nats);
            if names.iter().all(|n| live.iter().any(|l| l == n)) {
                return;
            }
            for a in &mut self.agents {
                if let Some(status) = a.exited() {
                    panic!("{} exited ({status}): {}", a.name, tail(&a.log(), 40));
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no heartbeat of {names:?} within 30 s (live: {live:?})\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (at most `limit`) until every monitor has `n` conclusive full
    /// scans at least.
    pub fn wait_conclusive(&mut self, n: u32, limit: Duration) {
        let start = Instant::now();
        loop {
            let scans = self.coordinator.scans();
            let done = self
                .monitors
                .iter()
                .filter(|m| scans.get(&m.name).is_some_and(|s| s.0 >= n))
                .count();
            if done == self.monitors.len() {
                return;
            }
            self.coordinator.assert_running();
            assert!(
                start.elapsed() < limit,
                "{done} of {} monitors with {n} conclusive scans after {limit:?}: {scans:?}\n{}",
                self.monitors.len(),
                self.context()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (at most `limit`) for an event of `kind`; returns it.
    pub fn wait_event(&mut self, kind: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            if let Some(e) = self
                .coordinator
                .events()
                .into_iter()
                .find(|e| e["kind"] == kind)
            {
                return e;
            }
            self.coordinator.assert_running();
            assert!(
                start.elapsed() < limit,
                "no {kind} event after {limit:?}: {:?}\n{}",
                self.coordinator
                    .events()
                    .iter()
                    .map(|e| e["kind"].clone())
                    .collect::<Vec<_>>(),
                self.context()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Set (to anything): a [`Cluster`] prints [`Cluster::context`] when
/// dropped, also after a test that passed.
pub const SHOW_LOGS_VAR: &str = "PALISADE_TEST_CLUSTER_LOGS";

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os(SHOW_LOGS_VAR).is_some() {
            self.coordinator.kill();
            eprintln!("{}", self.context());
        }
    }
}

/// The agents with a heartbeat in PALISADE_AGENTS now.
pub fn live_agents(nats: &ClusterNats) -> Vec<String> {
    block_on(async {
        let (client, _) = connect(nats, "coordinator").await;
        let js = async_nats::jetstream::new(client);
        let Ok(kv) = js.get_key_value("PALISADE_AGENTS").await else {
            return Vec::new();
        };
        let Ok(keys) = kv.keys().await else {
            return Vec::new();
        };
        use futures::TryStreamExt;
        keys.try_collect().await.unwrap_or_default()
    })
}

/// Jobs of consumer `jobs-{label}` delivered and not yet acknowledged.
pub fn jobs_in_progress(nats: &ClusterNats, label: &str) -> u64 {
    block_on(async {
        let (client, _) = connect(nats, "coordinator").await;
        let js = async_nats::jetstream::new(client);
        let Ok(mut consumer) = js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                format!("jobs-{label}"),
                "PALISADE_JOBS",
            )
            .await
        else {
            return 0;
        };
        consumer
            .info()
            .await
            .map(|i| i.num_ack_pending as u64)
            .unwrap_or(0)
    })
}

/// Monitor `i` of a test: `m-{i:03}` on 198.18.0.{10 + i}.
pub fn monitor(i: u8, label: Option<&str>) -> MonitorDef {
    MonitorDef {
        name: format!("m-{i:03}"),
        host: IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 10 + i)),
        label: label.map(String::from),
    }
}

/// A fleet where every host answers every probe (SYN-ACK on open ports,
/// RST on the others): no retries, so the SYNs a fleet counts are exactly
/// the probes sent to it. About 4% of the ports open.
pub fn answering_fleet() -> FleetSpec {
    FleetSpec {
        seed: 14,
        density_ppm: 40_000,
        ..FleetSpec::default()
    }
}

/// Per address, the events' open ports (`unexpected_port_open`), and each
/// event id with how many times the sink got it.
pub fn opened_by_events(events: &[Value]) -> BTreeMap<IpAddr, Vec<u16>> {
    let mut out: BTreeMap<IpAddr, Vec<u16>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e["kind"] == "unexpected_port_open")
    {
        let address = e["address"]
            .as_str()
            .or_else(|| e["host"].as_str())
            .expect("an address")
            .parse()
            .expect("an IP address");
        let ports = out.entry(address).or_default();
        ports.push(e["port"].as_u64().expect("a port") as u16);
        ports.sort_unstable();
    }
    out
}

/// Event ids the sink got more than once.
pub fn duplicate_ids(events: &[Value]) -> Vec<(String, usize)> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        *count
            .entry(e["id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    count.into_iter().filter(|(_, n)| *n > 1).collect()
}
