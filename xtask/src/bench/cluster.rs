//! The scan agents' benchmark (issue 14), `cargo xtask bench --only
//! cluster`: the coordinator (`palisade run --once` with `[cluster]`) with
//! 1, then 2, then 3 agents (`palisade agent`), against the single-host
//! daemon (`palisade run --once`, its own data path) over the same monitors
//! in the same run.
//!
//! Each agent runs in the scanner namespace of a testbed of its own with
//! its own `palisade-sim fleet` of the same settings (the truth is a pure
//! function of them), and reaches a nats-server on the host's loopback
//! through a [`LoopbackBridge`]; the coordinator runs in a namespace of its
//! own the same way. Every process shares the machine's cores: the rows
//! say how many. Figures: the coordinator's wall time, its ratio to the
//! single host's, the coordinator's own time per job queued and per result
//! merged (its "sweep through the agents" log line), and whether its events
//! are exactly the single host's.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use palisade_sim::bridge::{LoopbackBridge, free_port};
use palisade_sim::testbed::{Testbed, TestbedConfig};
use serde_json::{Value, json};

use super::{
    FleetProcess, Goal, ReleaseBins, Row, SimFleet, block_addresses, daemon_monitors, events_of,
    fleet_testbed, logged, probes, run_limited, timed_limit, truth,
};
use crate::setup::current_nats_server;

/// The scenario's name in the table.
pub(super) const CLUSTER: &str =
    "sweep through scan agents: a monitor per address x ports 1-1024, 0.1% deviating";

/// The single-host reference row's tool.
const SINGLE_HOST: &str = "palisade run --once (single host, its own data path)";

/// The most agents a run has.
const AGENTS: usize = 3;

/// Ports of every monitor.
const PORTS: &str = "1-1024";

/// The sizes of a run: a sweep of one agent takes about 30 s in full, about
/// 12 s with `--quick`.
struct Sizes {
    block: &'static str,
    /// Probes per second: each agent's `--rate`, `[cluster] agent_rate`,
    /// and the single host's `[scan] rate`.
    rate: u64,
    /// `[cluster] shard_time`: several shards in the sweep's one slice.
    shard_time: &'static str,
    /// A last run with all agents and shards of this time: more jobs for
    /// the same slice, so that the coordinator's cost per job shows apart
    /// from its cost per slice (`None`: no such run).
    finer_shard_time: Option<&'static str>,
    /// `[cluster] ack_wait`: well above `shard_time`.
    ack_wait: &'static str,
    /// The longest any one process may run.
    limit: Duration,
}

/// `[scan] commit_every` of both daemons (its default): the whole sweep is
/// one slice, with one agent or three (a slice's size counts the agents),
/// so the runs differ only in how many agents share its shards.
const COMMIT_EVERY: &str = "1m";

impl Sizes {
    fn of(quick: bool) -> Sizes {
        if quick {
            Sizes {
                block: "198.18.0.0/23",
                rate: 100_000,
                shard_time: "1s",
                finer_shard_time: None,
                ack_wait: "10s",
                limit: Duration::from_secs(300),
            }
        } else {
            Sizes {
                block: "198.18.0.0/21",
                rate: 100_000,
                shard_time: "4s",
                finer_shard_time: Some("1s"),
                ack_wait: "20s",
                limit: Duration::from_secs(900),
            }
        }
    }
}

/// A directory of this run's files, removed when dropped unless kept (a
/// failure's logs).
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "xtask bench: {CLUSTER}: the logs are kept in {}",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// SIGTERM to `child`, then SIGKILL if it has not exited within `grace`;
/// its exit status.
fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let status = child.wait()?;
    bail!("did not exit within {grace:?} of SIGTERM; killed ({status})")
}

/// nats-server (the current one, with JetStream, no authentication) on
/// the host's loopback, its store in a directory of the run. Stopped when
/// dropped.
struct NatsServer {
    child: Child,
    port: u16,
}

impl NatsServer {
    fn start(dir: &Path) -> Result<NatsServer> {
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("nats-server.log"))?;
        let child = Command::new(current_nats_server())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("jetstream"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", current_nats_server()))?;
        let mut server = NatsServer { child, port };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("nats-server exited ({status}); see its log in the run's directory");
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("nats-server does not listen on 127.0.0.1:{port} after 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// `palisade agent` in a bed's scanner namespace, its log in a file;
/// SIGTERM (then SIGKILL) when dropped.
struct Agent {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// Waits until its log says "agent ready" (30 s at most).
    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("agent ready") {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("agent {} exited ({status}): {}", self.name, tail(&log, 20));
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "agent {} not ready after 30 s: {}",
                    self.name,
                    tail(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM; fails unless it exits 0 within 10 s.
    fn stop(mut self) -> Result<()> {
        let status = terminate(&mut self.child, Duration::from_secs(10))
            .with_context(|| format!("agent {}", self.name))?;
        if !status.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!(
                "agent {} exited {status} on SIGTERM: {}",
                self.name,
                tail(&log, 20)
            );
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child, Duration::from_secs(10));
    }
}

/// One agent's place: a testbed with the fleet in its target namespace
/// and nats-server bridged into its scanner namespace. Its fields go in
/// their order: the agent, the bridge, the fleet, then the namespaces.
struct Bed {
    agent: Option<Agent>,
    bridge: LoopbackBridge,
    fleet: Option<FleetProcess>,
    tb: Testbed,
}

impl Bed {
    /// A testbed of the benchmarks' shape (a two-queue veth), with `fleet`
    /// if given.
    fn new(bins: &ReleaseBins, fleet: Option<&SimFleet<'_>>, nats: &NatsServer) -> Result<Bed> {
        let tb = match fleet {
            Some(_) => fleet_testbed()?,
            None => Testbed::new(TestbedConfig {
                targets_v4: vec![],
                targets_v6: vec![],
                tx_queues: 1,
            })
            .context("cannot build the testbed (needs root)")?,
        };
        let fleet = fleet
            .map(|f| FleetProcess::start(&tb, bins, f))
            .transpose()?;
        let bridge = LoopbackBridge::start(tb.scanner_ns(), nats.port, true)
            .context("the loopback bridge to nats-server")?;
        Ok(Bed {
            agent: None,
            bridge,
            fleet,
            tb,
        })
    }

    /// Starts `palisade agent --name <name>` at `rate`.
    fn start_agent(
        &mut self,
        bins: &ReleaseBins,
        name: &str,
        rate: u64,
        url: &str,
        log: PathBuf,
    ) -> Result<()> {
        let child = self
            .tb
            .in_scanner(&bins.palisade)
            .args(["agent", "--name", name, "--interface", self.tb.scanner_if()])
            .args(["--source-ip", &self.tb.scanner_v4().to_string()])
            .args(["--gateway-mac", &self.tb.target_mac()])
            .args(["--rate", &rate.to_string(), "--nats-url", url])
            .env("PALISADE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start palisade agent")?;
        self.agent = Some(Agent {
            name: name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    /// Everything stopped, the namespaces removed.
    fn close(self) -> Result<()> {
        let Bed {
            agent,
            bridge,
            fleet,
            tb,
        } = self;
        drop(agent);
        drop(bridge);
        drop(fleet);
        tb.teardown()?;
        Ok(())
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The coordinator's figures of its sweep ("sweep through the agents"),
/// and the agents it saw join.
fn coordinator_figures(stderr: &str) -> Value {
    let through = |key: &str| logged(stderr, "sweep through the agents", key);
    let count = |key: &str| through(key).map(|v| v as u64);
    let ms = |key: &str| through(key).map(|s| (s * 1e5).round() / 100.0);
    json!({
        "slices": count("slices"),
        "jobs": count("jobs"),
        "results": count("results"),
        "duplicates": count("duplicates"),
        "failed": count("failed"),
        "queueing_ms": ms("queueing_s"),
        "merging_ms": ms("merging_s"),
        "per_job_us": through("per_job_us"),
        "per_result_us": through("per_result_us"),
        "agents_seen": stderr.lines().filter(|l| l.contains("cluster: agent joined")).count(),
    })
}

/// The benchmark: adds the single host's row and one row per number of
/// agents to `rows`. A run that fails is a row with its error (the others
/// still run); what cannot be built (testbeds, nats-server) fails it all.
pub(super) fn cluster_scenario(bins: &ReleaseBins, quick: bool, rows: &mut Vec<Row>) -> Result<()> {
    let sizes = Sizes::of(quick);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fleet = SimFleet {
        block: sizes.block,
        density_ppm: 2_000,
        loss_permille: 0,
    };
    let truth: BTreeSet<(IpAddr, u16)> = truth(bins, &fleet, sizes.block, PORTS)?;
    let addresses = block_addresses(sizes.block)?;
    let scope = probes(sizes.block, PORTS);
    let mut dir = RunDir {
        path: std::env::temp_dir().join(format!("palisade-bench-cluster-{}", std::process::id())),
        keep: false,
    };
    let _ = std::fs::remove_dir_all(&dir.path);
    std::fs::create_dir_all(&dir.path)?;
    let nats = NatsServer::start(&dir.path)?;
    let mut beds = (0..AGENTS)
        .map(|_| Bed::new(bins, Some(&fleet), &nats))
        .collect::<Result<Vec<Bed>>>()?;
    let coordinator = Bed::new(bins, None, &nats)?;
    let result = runs(
        Shared {
            bins,
            sizes: &sizes,
            nats: &nats,
            coordinator: &coordinator,
            dir: &dir.path,
        },
        &mut beds,
        rows,
        Scope {
            truth: &truth,
            addresses: &addresses,
            probes: scope,
            cores,
        },
    );
    dir.keep = result.is_err()
        || rows
            .iter()
            .any(|r| r.scenario == CLUSTER && r.figures.get("error").is_some());
    let mut closed = Vec::new();
    for bed in beds.into_iter().chain([coordinator]) {
        if let Err(e) = bed.close() {
            closed.push(format!("{e:#}"));
        }
    }
    drop(nats);
    result?;
    if !closed.is_empty() {
        bail!("tearing the testbeds down: {}", closed.join("; "));
    }
    Ok(())
}

/// What every run sweeps.
struct Scope<'a> {
    truth: &'a BTreeSet<(IpAddr, u16)>,
    addresses: &'a [std::net::Ipv4Addr],
    probes: f64,
    cores: usize,
}

/// What every run uses.
#[derive(Clone, Copy)]
struct Shared<'a> {
    bins: &'a ReleaseBins,
    sizes: &'a Sizes,
    nats: &'a NatsServer,
    /// The coordinator's namespace.
    coordinator: &'a Bed,
    /// The run's files.
    dir: &'a Path,
}

fn runs(shared: Shared<'_>, beds: &mut [Bed], rows: &mut Vec<Row>, scope: Scope<'_>) -> Result<()> {
    let Shared {
        bins,
        sizes,
        nats,
        coordinator,
        dir,
    } = shared;
    // The single host, in the first agent's bed (no agent runs yet): the
    // same data-path settings as an agent's defaults (one retry, no
    // adaptive retries, a second's wait).
    let tb = &beds[0].tb;
    let head = format!(
        "[scan]\ninterface = \"{}\"\nsource_ip = \"{}\"\ngateway_mac = \"{}\"\n\
         rate = {rate}\nper_host_rate = 100000000\nports = \"{PORTS}\"\n\
         retries = 1\ntarget_recall = \"off\"\nwait = \"1s\"\ncommit_every = \"{commit}\"\n\n\
         [store]\npath = \"{}\"\n\n",
        tb.scanner_if(),
        tb.scanner_v4(),
        tb.target_mac(),
        dir.join("single.db").display(),
        rate = sizes.rate,
        commit = COMMIT_EVERY,
    );
    let monitors = daemon_monitors(scope.addresses, scope.truth, &head);
    let config = dir.join("single.toml");
    std::fs::write(&config, &monitors.config)?;
    let events = dir.join("single.jsonl");
    let mut cmd = tb.in_scanner(&bins.palisade);
    cmd.args(["run", "--once", "-c"])
        .arg(&config)
        .arg("--events")
        .arg(&events)
        .env("PALISADE_LOG", "info")
        .env("NO_COLOR", "1");
    let (_, stderr, single_s) = timed_limit(cmd, sizes.limit).context("the single host")?;
    let (reference, reference_lines) = events_of(&events);
    let single_exact = reference == monitors.events && reference_lines == monitors.events.len();
    eprintln!(
        "xtask bench: {CLUSTER}: single host {single_s:.2} s, events {reference_lines} \
         ({} expected), exact {single_exact}",
        monitors.events.len()
    );
    rows.push(Row {
        scenario: CLUSTER,
        tool: SINGLE_HOST.into(),
        figures: json!({
            "cores": scope.cores,
            "monitors": scope.addresses.len(),
            "probes": scope.probes,
            "rate": sizes.rate,
            "wall_s": single_s,
            "sweep_s": logged(&stderr, "sweep done", "secs"),
            "slices": logged(&stderr, "sweep done", "slices").map(|v| v as u64),
            "events": reference_lines,
            "events_expected": monitors.events.len(),
            "events_exact": single_exact,
        }),
    });

    // What the coordinator creates on NATS at its start, before any agent
    // runs (an agent only uses it): a run without monitors starts the
    // coordinator and has nothing to sweep.
    let cluster_head = |store: &Path, shard: &str| {
        format!(
            "[scan]\nrate = {rate}\nper_host_rate = 100000000\nports = \"{PORTS}\"\n\
             commit_every = \"{commit}\"\n\n[store]\npath = \"{store}\"\n\n\
             [cluster]\nurl = \"{url}\"\nagent_rate = {rate}\nshard_time = \"{shard}\"\n\
             ack_wait = \"{ack}\"\nmax_deliver = 5\n\n",
            rate = sizes.rate,
            commit = COMMIT_EVERY,
            store = store.display(),
            url = nats.url(),
            ack = sizes.ack_wait,
        )
    };
    let setup = dir.join("setup.toml");
    std::fs::write(
        &setup,
        cluster_head(&dir.join("setup.db"), sizes.shard_time),
    )?;
    let mut cmd = coordinator.tb.in_scanner(&bins.palisade);
    cmd.args(["run", "--once", "-c"]).arg(&setup);
    let (status, _, stderr, _) = run_limited(cmd, Duration::from_secs(60))?;
    if status.code() != Some(2) || !stderr.contains("no monitors") {
        bail!("setting up NATS as the coordinator does: exit {status}: {stderr}");
    }

    let all = beds.len();
    let runs = (1..=all)
        .map(|n| (n, sizes.shard_time))
        .chain(sizes.finer_shard_time.map(|shard| (all, shard)));
    for (i, (n, shard)) in runs.enumerate() {
        let mut tool = format!(
            "palisade run --once + {n} agent{}",
            if n == 1 { "" } else { "s" }
        );
        if i >= all {
            tool.push_str(&format!(", shards of {shard}"));
        }
        let store = dir.join(format!("cluster-{i}.db"));
        let config =
            daemon_monitors(scope.addresses, scope.truth, &cluster_head(&store, shard)).config;
        let figures =
            with_agents(shared, &mut beds[..n], i, &config).map(|(secs, stderr, (got, lines))| {
                let exact = got == reference && lines == reference_lines;
                eprintln!(
                    "xtask bench: {CLUSTER}: {n} agent(s) {secs:.2} s ({:.2}x the single host), \
                     events {lines}, exact {exact}",
                    secs / single_s
                );
                let mut figures = json!({
                    "agents": n,
                    "cores": scope.cores,
                    "wall_s": secs,
                    "ratio_to_single_host": secs / single_s,
                    "sweep_s": logged(&stderr, "sweep done", "secs"),
                    "agent_rate": sizes.rate,
                    "shard_time": shard,
                });
                if let (Some(f), Some(c)) = (
                    figures.as_object_mut(),
                    coordinator_figures(&stderr).as_object(),
                ) {
                    f.extend(c.clone());
                }
                figures["events"] = json!(lines);
                figures["events_exact"] = json!(exact);
                figures
            });
        let figures = figures.unwrap_or_else(|e| {
            eprintln!("xtask bench: {CLUSTER} / {tool}: {e:#}");
            json!({"agents": n, "cores": scope.cores, "error": format!("{e:#}")})
        });
        rows.push(Row {
            scenario: CLUSTER,
            tool,
            figures,
        });
    }
    if sizes.finer_shard_time.is_some()
        && let [.., coarse, finer] = &mut rows[..]
    {
        marginal_costs(&coarse.figures, &mut finer.figures);
    }
    Ok(())
}

/// The coordinator's cost of one more job and of one more result, from
/// two runs of the same slice cut into fewer and more shards (its cost
/// per slice, the same in both, drops out), into the `finer` run's
/// figures.
fn marginal_costs(coarse: &Value, finer: &mut Value) {
    let fig = |f: &Value, key: &str| f.get(key).and_then(Value::as_f64);
    for (cost, count, key) in [
        ("queueing_ms", "jobs", "us_per_extra_job"),
        ("merging_ms", "results", "us_per_extra_result"),
    ] {
        let extra = fig(finer, count)
            .zip(fig(coarse, count))
            .map(|(f, c)| f - c);
        let spent = fig(finer, cost).zip(fig(coarse, cost)).map(|(f, c)| f - c);
        if let (Some(extra), Some(spent)) = (extra, spent)
            && extra > 0.0
        {
            finer[key] = json!((spent * 1e3 / extra).round());
        }
    }
}

/// The events of a sweep: (kind, monitor, port) and the lines of the file.
type Events = (BTreeSet<(String, String, u16)>, usize);

/// One agent started in each of `beds` and ready, then the coordinator's
/// sweep of `config` through them: its wall time, its log and its events;
/// the agents stopped (SIGTERM) whatever happened.
fn with_agents(
    shared: Shared<'_>,
    beds: &mut [Bed],
    run: usize,
    config: &str,
) -> Result<(f64, String, Events)> {
    let Shared {
        bins,
        sizes,
        nats,
        coordinator,
        dir,
    } = shared;
    let swept = (|| -> Result<(f64, String, Events)> {
        for (i, bed) in beds.iter_mut().enumerate() {
            let name = format!("b{}", i + 1);
            let log = dir.join(format!("agent-{name}-run-{run}.log"));
            bed.start_agent(bins, &name, sizes.rate, &nats.url(), log)?;
        }
        for bed in beds.iter_mut() {
            if let Some(agent) = bed.agent.as_mut() {
                agent.wait_ready()?;
            }
        }
        let path = dir.join(format!("cluster-{run}.toml"));
        std::fs::write(&path, config)?;
        let events = dir.join(format!("cluster-{run}.jsonl"));
        let mut cmd = coordinator.tb.in_scanner(&bins.palisade);
        cmd.args(["run", "--once", "-c"])
            .arg(&path)
            .arg("--events")
            .arg(&events)
            .env("PALISADE_LOG", "info")
            .env("NO_COLOR", "1");
        let (_, stderr, secs) = timed_limit(cmd, sizes.limit).context("the coordinator")?;
        std::fs::write(dir.join(format!("coordinator-{run}.log")), &stderr)?;
        Ok((secs, stderr, events_of(&events)))
    })();
    let mut stopped = Vec::new();
    for bed in beds.iter_mut() {
        if let Some(agent) = bed.agent.take()
            && let Err(e) = agent.stop()
        {
            stopped.push(format!("{e:#}"));
        }
    }
    let swept = swept?;
    if !stopped.is_empty() {
        bail!("stopping the agents: {}", stopped.join("; "));
    }
    Ok(swept)
}

/// The goal of issue 14's benchmark: the coordinator's events exactly the
/// single host's with 1, 2 and 3 agents (and those exactly the expected
/// ones). Speed is shown, not judged: the agents share the cores.
pub(super) fn goal(rows: &[Row]) -> Goal {
    let of = |tool: &str| {
        rows.iter()
            .find(|r| r.scenario == CLUSTER && r.tool == tool)
            .map(|r| &r.figures)
    };
    let exact = |f: Option<&Value>| f.and_then(|f| f["events_exact"].as_bool());
    let single = exact(of(SINGLE_HOST));
    let agents: Vec<Option<bool>> = (1..=AGENTS)
        .map(|n| {
            let f = rows
                .iter()
                .find(|r| r.scenario == CLUSTER && r.figures["agents"].as_u64() == Some(n as u64))
                .map(|r| &r.figures);
            exact(f)
        })
        .collect();
    let say = |e: Option<bool>| match e {
        Some(true) => "exact",
        Some(false) => "NOT exact",
        None => "no result",
    };
    Goal {
        goal: "scan agents (issue 14): the coordinator's events exactly the single-host daemon's with 1, 2 and 3 agents",
        measured: if single.is_none() && agents.iter().all(Option::is_none) {
            "missing".into()
        } else {
            let mut parts = vec![format!("single host: {}", say(single))];
            parts.extend(
                agents
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("{} agent(s): {}", i + 1, say(*e))),
            );
            parts.join(", ")
        },
        // Every run exact, the one with finer shards too.
        met: Some(
            single == Some(true)
                && agents.iter().all(|e| *e == Some(true))
                && rows
                    .iter()
                    .filter(|r| r.scenario == CLUSTER)
                    .all(|r| exact(Some(&r.figures)) == Some(true)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinators_line_gives_its_figures() {
        let log = "2026-12-01T18:00:00Z  INFO palisade::cluster::coordinator: cluster: agent joined agent=b1\n\
                   2026-12-01T18:00:00Z  INFO palisade::cluster::coordinator: cluster: agent joined agent=b2\n\
                   2026-12-01T18:00:20Z  INFO palisade::daemon: sweep through the agents slices=3 jobs=15 \
                   results=15 duplicates=0 foreign=0 failed=0 queueing_s=0.0123 merging_s=0.004 \
                   per_job_us=820 per_result_us=267\n";
        let f = coordinator_figures(log);
        assert_eq!(f["slices"], json!(3));
        assert_eq!(f["jobs"], json!(15));
        assert_eq!(f["results"], json!(15));
        assert_eq!(f["per_job_us"], json!(820.0));
        assert_eq!(f["per_result_us"], json!(267.0));
        assert_eq!(f["queueing_ms"], json!(12.3));
        assert_eq!(f["agents_seen"], json!(2));
        assert_eq!(coordinator_figures("")["jobs"], Value::Null);
    }

    #[test]
    fn the_goal_wants_every_run_exact() {
        let row = |tool: &str, figures: Value| Row {
            scenario: CLUSTER,
            tool: tool.into(),
            figures,
        };
        let mut rows = vec![row(SINGLE_HOST, json!({"events_exact": true}))];
        for n in 1..=AGENTS {
            rows.push(row(
                &format!("{n} agents"),
                json!({"agents": n, "events_exact": true}),
            ));
        }
        assert_eq!(goal(&rows).met, Some(true), "{}", goal(&rows).measured);
        rows[2].figures["events_exact"] = json!(false);
        let g = goal(&rows);
        assert_eq!(g.met, Some(false));
        assert!(
            g.measured.contains("2 agent(s): NOT exact"),
            "{}",
            g.measured
        );
        rows[3].figures = json!({"agents": 3, "error": "timed out"});
        assert!(goal(&rows).measured.contains("3 agent(s): no result"));
        assert_eq!(goal(&[]).measured, "missing");
        assert_eq!(goal(&[]).met, Some(false));
        // The run with finer shards counts too.
        rows[3].figures = json!({"agents": 3, "events_exact": true});
        assert_eq!(goal(&rows[..]).met, Some(false));
        rows[2].figures["events_exact"] = json!(true);
        rows.push(row(
            "3 agents, shards of 1s",
            json!({"agents": 3, "events_exact": false}),
        ));
        assert_eq!(goal(&rows).met, Some(false));
        rows[4].figures["events_exact"] = json!(true);
        assert_eq!(goal(&rows).met, Some(true));
    }

    #[test]
    fn the_extra_jobs_cost_what_the_finer_run_spent_more() {
        let coarse = json!({"jobs": 6, "queueing_ms": 48.0, "results": 6, "merging_ms": 4.0});
        let mut finer = json!({"jobs": 21, "queueing_ms": 63.0, "results": 21, "merging_ms": 10.0});
        marginal_costs(&coarse, &mut finer);
        assert_eq!(finer["us_per_extra_job"], json!(1000.0));
        assert_eq!(finer["us_per_extra_result"], json!(400.0));
        // No more jobs, or a run without figures: nothing to say.
        let mut same = coarse.clone();
        marginal_costs(&coarse, &mut same);
        assert!(same.get("us_per_extra_job").is_none());
        let mut failed = json!({"error": "timed out"});
        marginal_costs(&coarse, &mut failed);
        assert!(failed.get("us_per_extra_result").is_none());
    }
}
