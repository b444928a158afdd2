//! `cargo xtask bench [--quick]`: every benchmark, side by side on one
//! testbed, checked against the ground truth, written to
//! `benches/RESULTS.md` and `benches/results.json`.
//!
//! The fleet is `palisade-sim fleet`: an XDP program on the target side of
//! the testbed that answers for a whole address block from a keyed-hash
//! ground truth (`testbed/src/fleet.rs`), so the targets are never the
//! bottleneck the way a kernel's TCP stack is. Figures are read from what
//! the tools write for machines: `palisade scan --summary-json`,
//! `palisade-sim tx-bench`'s JSON line, criterion's estimates.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use palisade_sim::testbed::{Testbed, TestbedConfig};
use serde_json::{Value, json};

use crate::{ReleaseBins, build_release, release_profile, root, run, setup::setup, target_dir};

mod cluster;

/// `cargo xtask bench`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Every scenario small, in a few minutes (what CI runs).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Sweep this block instead of the /24 (/28 with --quick).
    #[arg(long, value_name = "CIDR")]
    pub(crate) block: Option<String>,
    /// Only these scenarios; their figures go to benches/RESULTS.partial.md
    /// (and results.partial.json), not RESULTS.md.
    #[arg(long, value_enum, value_name = "SCENARIO")]
    pub(crate) only: Vec<Only>,
    /// Monitors of the daemon benchmark without packets (default
    /// 1,000,000; 20,000 with --quick).
    #[arg(long, value_name = "N")]
    pub(crate) monitors: Option<u32>,
    /// The daemon on the simulated fleet: one monitor per address of this
    /// block (default 198.18.0.0/16; 198.18.0.0/22 with --quick).
    #[arg(long, value_name = "CIDR")]
    pub(crate) daemon_block: Option<String>,
}

/// Scenarios that run alone with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Only {
    /// The daemon without packets: a million monitors, and `palisade
    /// status` over 65,536.
    Scale,
    /// The daemon on the simulated fleet against a plain `palisade scan`.
    Daemon,
    /// The coordinator with 1, 2 and 3 scan agents against the single-host
    /// daemon (issue 14).
    Cluster,
}

/// Queues of the testbed's veth (both ends): a NIC with a queue per core.
const QUEUES: u32 = 2;
/// The UMEM of one AF_XDP socket: 4096 frames of 2 KiB.
const UMEM_MIB_PER_QUEUE: f64 = 8.0;

/// One scenario's figures, for the table and the JSON.
struct Row {
    scenario: &'static str,
    tool: String,
    figures: Value,
}

/// The fleet's settings for one scenario.
struct SimFleet<'a> {
    block: &'a str,
    density_ppm: u32,
    loss_permille: u32,
}

/// A running `palisade-sim fleet` in the target namespace.
struct FleetProcess {
    child: Child,
}

impl FleetProcess {
    fn start(tb: &Testbed, bins: &ReleaseBins, f: &SimFleet<'_>) -> Result<FleetProcess> {
        let mut cmd = tb.in_target(&bins.sim);
        cmd.args([
            "fleet",
            "--interface",
            tb.target_if(),
            "--block",
            f.block,
            "--seed",
            "7",
        ]);
        cmd.args(["--density-ppm", &f.density_ppm.to_string()]);
        cmd.args(["--loss-permille", &f.loss_permille.to_string()]);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start palisade-sim fleet")?;
        let mut line = String::new();
        let out = child.stdout.as_mut().context("fleet stdout")?;
        BufReader::new(out).read_line(&mut line)?;
        if !line.starts_with("fleet ready") {
            let _ = child.kill();
            bail!("palisade-sim fleet did not start: {line}");
        }
        Ok(FleetProcess { child })
    }
}

impl Drop for FleetProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The ground truth of the fleet for `targets` x `ports`, from the simulator.
fn truth(
    bins: &ReleaseBins,
    f: &SimFleet<'_>,
    targets: &str,
    ports: &str,
) -> Result<BTreeSet<(IpAddr, u16)>> {
    let out = Command::new(&bins.sim)
        .args(["fleet-truth", "--block", f.block, "--seed", "7"])
        .args([
            "--density-ppm",
            &f.density_ppm.to_string(),
            "--targets",
            targets,
            "-p",
            ports,
        ])
        .output()
        .context("palisade-sim fleet-truth")?;
    if !out.status.success() {
        bail!(
            "palisade-sim fleet-truth failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let addr: std::net::SocketAddr = l.trim().parse().ok()?;
            Some((addr.ip(), addr.port()))
        })
        .collect())
}

/// Runs `cmd` for at most `limit` and returns (stdout, stderr, seconds),
/// failing on a non-zero exit or on time-out (the command is then killed).
pub(crate) fn timed_limit(
    cmd: Command,
    limit: std::time::Duration,
) -> Result<(String, String, f64)> {
    let shown = format!("{cmd:?}");
    let (status, stdout, stderr, secs) = run_limited(cmd, limit)?;
    if !status.success() {
        bail!("{shown} failed ({status}): {stderr}");
    }
    Ok((stdout, stderr, secs))
}

/// Runs `cmd` to its end, killed after `limit` (an error then): its exit
/// status, stdout, stderr and seconds.
pub(crate) fn run_limited(
    mut cmd: Command,
    limit: std::time::Duration,
) -> Result<(std::process::ExitStatus, String, String, f64)> {
    use std::io::Read;
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    // Drain the pipes on threads so a chatty command never blocks.
    let mut out_pipe = child.stdout.take().context("stdout")?;
    let mut err_pipe = child.stderr.take().context("stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} took longer than {limit:?}; killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok((status, stdout, stderr, secs))
}

fn recall_precision(
    found: &BTreeSet<(IpAddr, u16)>,
    truth: &BTreeSet<(IpAddr, u16)>,
) -> (f64, f64) {
    let hit = found.intersection(truth).count() as f64;
    let recall = if truth.is_empty() {
        100.0
    } else {
        100.0 * hit / truth.len() as f64
    };
    let precision = if found.is_empty() {
        100.0
    } else {
        100.0 * hit / found.len() as f64
    };
    (recall, precision)
}

/// What a tool found and how long it took.
pub(crate) struct BenchRun {
    pub(crate) found: BTreeSet<(IpAddr, u16)>,
    pub(crate) seconds: f64,
    /// The tool's own sending rate where it reports one.
    pub(crate) rate: Option<f64>,
    /// `palisade scan --summary-json`, for palisade.
    pub(crate) summary: Option<Value>,
}

/// `palisade scan` on the scanner side: what it found (its JSON lines), its
/// wall time, and its sending rate from `--summary-json`.
pub(crate) fn palisade_scan(
    tb: &Testbed,
    bins: &ReleaseBins,
    targets: &str,
    ports: &str,
    rate: u64,
    extra: &[&str],
    limit: Duration,
) -> Result<BenchRun> {
    let summary = std::env::temp_dir().join(format!(
        "palisade-bench-summary-{}.json",
        std::process::id()
    ));
    let mut cmd = tb.in_scanner(&bins.palisade);
    cmd.args([
        "scan",
        targets,
        "-p",
        ports,
        "--rate",
        &rate.to_string(),
        "--wait",
        "1",
    ]);
    cmd.arg("--summary-json").arg(&summary).args(extra);
    let (out, _, secs) = timed_limit(cmd, limit)?;
    let found = out
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            Some((v["ip"].as_str()?.parse().ok()?, v["port"].as_u64()? as u16))
        })
        .collect();
    let json = std::fs::read_to_string(&summary).context("the scan's --summary-json")?;
    let _ = std::fs::remove_file(&summary);
    let json: Value = serde_json::from_str(&json).context("the scan's --summary-json")?;
    let rate = json["rate"].as_f64();
    Ok(BenchRun {
        found,
        seconds: secs,
        rate,
        summary: Some(json),
    })
}

pub(crate) fn masscan(
    tb: &Testbed,
    targets: &str,
    ports: &str,
    rate: u64,
    limit: Duration,
) -> Result<BenchRun> {
    let list =
        std::env::temp_dir().join(format!("palisade-bench-masscan-{}.txt", std::process::id()));
    let mut cmd = tb.in_scanner("masscan");
    cmd.args([
        targets,
        &format!("-p{ports}"),
        "--rate",
        &rate.to_string(),
        "--wait",
        "1",
    ]);
    cmd.args([
        "--adapter",
        tb.scanner_if(),
        "--adapter-ip",
        &tb.scanner_v4().to_string(),
    ]);
    cmd.args(["--adapter-mac", &tb.scanner_mac().replace(':', "-")]);
    cmd.args(["--router-mac", &tb.target_mac().replace(':', "-")]);
    cmd.args(["-oL", list.to_str().context("path")?]);
    let (_, _, secs) = timed_limit(cmd, limit)?;
    let text = std::fs::read_to_string(&list).unwrap_or_default();
    let _ = std::fs::remove_file(&list);
    let found = text
        .lines()
        .filter(|l| l.starts_with("open tcp"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(3)?.parse().ok()?, f.get(2)?.parse().ok()?))
        })
        .collect();
    Ok(BenchRun {
        found,
        seconds: secs,
        rate: None,
        summary: None,
    })
}

/// zmap's own sending rate from its last status line ("send: N done
/// (206 Kp/s avg)"), in targets per second.
fn zmap_rate(stderr: &str) -> Option<f64> {
    let tail = stderr.rsplit("done (").next()?;
    let (num, rest) = tail.split_once(' ')?;
    let num: f64 = num.parse().ok()?;
    let scale = match rest.as_bytes().first()? {
        b'K' => 1e3,
        b'M' => 1e6,
        b'G' => 1e9,
        b'p' => 1.0,
        _ => return None,
    };
    Some(num * scale)
}

fn zmap(
    tb: &Testbed,
    targets: &str,
    port: u16,
    rate: u64,
    per_address: u32,
    limit: Duration,
) -> Result<BenchRun> {
    // zmap's default blacklist excludes the benchmarking range: an empty one.
    let blacklist = std::env::temp_dir().join(format!("palisade-zmap-{}.conf", std::process::id()));
    std::fs::write(&blacklist, "\n")?;
    let mut cmd = tb.in_scanner("zmap");
    cmd.args([
        "-p",
        &port.to_string(),
        "-r",
        &rate.to_string(),
        "-P",
        &per_address.to_string(),
        "-c",
        "1",
        "-i",
        tb.scanner_if(),
    ]);
    cmd.args([
        "-S",
        &tb.scanner_v4().to_string(),
        "-G",
        &tb.target_mac(),
        "--disable-syslog",
    ]);
    cmd.args(["-b", blacklist.to_str().context("path")?, targets]);
    let result = timed_limit(cmd, limit);
    let _ = std::fs::remove_file(&blacklist);
    let (out, err, secs) = result?;
    let found = out
        .lines()
        .filter_map(|l| Some((l.trim().parse().ok()?, port)))
        .collect();
    Ok(BenchRun {
        found,
        seconds: secs,
        rate: zmap_rate(&err).map(|r| r * f64::from(per_address)),
        summary: None,
    })
}

fn nmap(tb: &Testbed, targets: &str, ports: &str, limit: Duration) -> Result<BenchRun> {
    let mut cmd = tb.in_scanner("nmap");
    cmd.args([
        "-sS",
        "-n",
        "-Pn",
        "-T5",
        "--max-retries",
        "1",
        "-p",
        ports,
        "-oG",
        "-",
        targets,
    ]);
    let (out, _, secs) = timed_limit(cmd, limit)?;
    let mut found = BTreeSet::new();
    for line in out
        .lines()
        .filter(|l| l.starts_with("Host:") && l.contains("Ports:"))
    {
        let ip: Option<IpAddr> = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        let Some(ip) = ip else { continue };
        let ports = line.split("Ports:").nth(1).unwrap_or("");
        for p in ports.split(',') {
            let fields: Vec<&str> = p.trim().split('/').collect();
            if fields.get(1) == Some(&"open")
                && let Some(port) = fields.first().and_then(|s| s.parse().ok())
            {
                found.insert((ip, port));
            }
        }
    }
    Ok(BenchRun {
        found,
        seconds: secs,
        rate: None,
        summary: None,
    })
}

/// Peak RSS (VmHWM, KiB) of a process, sampled until it exits.
fn peak_rss(child: &mut Child, limit: Duration) -> Result<u64> {
    let start = Instant::now();
    let mut peak = 0;
    while child.try_wait()?.is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            for line in status.lines().filter(|l| l.starts_with("VmHWM:")) {
                let kib: u64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                peak = peak.max(kib);
            }
        }
        if start.elapsed() > limit {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(peak)
}

/// The median of `runs` (which must not be empty) by `key`.
fn median_by<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

/// Hosts x ports of a block and a port range (`lo-hi` or one port).
fn probes(block: &str, ports: &str) -> f64 {
    let hosts = 1u64
        << (32
            - block
                .rsplit('/')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(32));
    let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
    hosts as f64 * (hi.parse::<f64>().unwrap_or(1.0) - lo.parse::<f64>().unwrap_or(1.0) + 1.0)
}

/// `palisade-sim tx-bench` on the scanner side: frames per second.
pub(crate) fn tx_bench(
    tb: &Testbed,
    bins: &ReleaseBins,
    extra: &[&str],
    count: &str,
    limit: Duration,
) -> Result<f64> {
    let mut cmd = tb.in_scanner(&bins.sim);
    cmd.args([
        "tx-bench",
        "--interface",
        tb.scanner_if(),
        "--gateway-mac",
        &tb.target_mac(),
    ]);
    cmd.args(["--source-ip", "198.18.0.1", "--target-ip", "198.18.0.2"]);
    cmd.args(["--count", count]).args(extra);
    let (out, _, _) = timed_limit(cmd, limit)?;
    let v: Value = serde_json::from_str(out.trim()).context("tx-bench output")?;
    v["pps"].as_f64().context("tx-bench pps")
}

/// Runs `measure` `times` times and adds a transmit-ceiling row of the
/// median rate, with every run listed.
fn ceiling_row(
    rows: &mut Vec<Row>,
    tool: &str,
    times: usize,
    mut measure: impl FnMut() -> Result<f64>,
) -> Result<()> {
    let runs = (0..times)
        .map(|_| measure())
        .collect::<Result<Vec<f64>>>()?;
    eprintln!("xtask bench: {tool}: {runs:?} probes/s");
    rows.push(Row {
        scenario: "transmit ceiling",
        tool: tool.into(),
        figures: json!({"pps": median_by(runs.clone(), |r| *r), "runs": runs}),
    });
    Ok(())
}

/// Adds the row of one tool's run against `truth` over `scope` probes.
fn sweep_row(
    rows: &mut Vec<Row>,
    scenario: &'static str,
    tool: String,
    outcome: Result<BenchRun>,
    scope: f64,
    truth: &BTreeSet<(IpAddr, u16)>,
) {
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask bench: {scenario} / {tool}: {e:#}");
            rows.push(Row {
                scenario,
                tool,
                figures: json!({"error": format!("{e:#}")}),
            });
            return;
        }
    };
    let (recall, precision) = recall_precision(&outcome.found, truth);
    eprintln!(
        "xtask bench: {scenario} / {tool}: {:.2} s, recall {recall:.2}%, precision {precision:.2}%",
        outcome.seconds
    );
    let mut figures = json!({
        "wall_s": outcome.seconds,
        "probes": scope,
        "probes_per_s_wall": scope / outcome.seconds.max(1e-3),
        "probes_per_s_sending": outcome.rate,
        "recall_pct": recall,
        "precision_pct": precision,
        "truth": truth.len(),
    });
    // Palisade's own count of what it sent, and its loss estimate.
    if let Some(summary) = &outcome.summary {
        let count = |key: &str| summary[key].as_f64();
        figures["probes_sent"] = json!(count("sent").zip(count("retries")).map(|(s, r)| s + r));
        figures["retries"] = json!(count("retries"));
        figures["extra_retries"] = json!(count("extra_retries"));
        figures["estimated_loss_pct"] = json!(count("estimated_loss").map(|p| 100.0 * p));
        figures["retry_rounds"] = summary["retry_rounds"].clone();
        figures["expected_misses"] = summary["expected_misses"].clone();
    }
    rows.push(Row {
        scenario,
        tool,
        figures,
    });
}

/// `cargo bench` of the benchmark `name` in the release profile, with
/// `args` for it.
fn cargo_bench(name: &str, args: &[&str]) -> Result<()> {
    let profile = release_profile();
    let mut all = vec!["bench", "-p", "palisade-benches", "--bench", name];
    if profile != "release" {
        all.extend(["--profile", &profile]);
    }
    all.push("--");
    all.extend(args);
    run("cargo", &all)
}

/// Runs every benchmark and writes `benches/RESULTS.md` and
/// `benches/results.json` (with `--only`, some of them, written to
/// `RESULTS.partial.md`).
pub(crate) fn bench(args: &BenchArgs) -> Result<()> {
    let quick = args.quick;
    setup()?;
    let bins = build_release()?;
    let mut rows: Vec<Row> = Vec::new();
    let all = args.only.is_empty();
    let only = |scenario: Only| all || args.only.contains(&scenario);

    if only(Only::Scale) {
        scale_scenarios(&bins, args, &mut rows)?;
    }
    if !all {
        if only(Only::Daemon) {
            let tb = fleet_testbed()?;
            let result = daemon_scenario(&tb, &bins, args, &mut rows);
            tb.teardown()?;
            result?;
        }
        if only(Only::Cluster) {
            cluster::cluster_scenario(&bins, quick, &mut rows)?;
        }
        return write_results(&rows, quick, true);
    }

    // Per-probe cost and the event pipeline (no testbed).
    let mut probe_args = vec![];
    if quick {
        probe_args.extend(["--warm-up-time", "0.5", "--measurement-time", "1"]);
    }
    cargo_bench("probe", &probe_args)?;
    for name in ["ipv4_slash24_all_ports", "ipv6_256_hosts_all_ports"] {
        let path = target_dir().join(format!("criterion/probe/{name}/new/estimates.json"));
        let est: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let batch_ns = est["median"]["point_estimate"]
            .as_f64()
            .context("criterion median")?;
        rows.push(Row {
            scenario: "per-probe cost (one core)",
            tool: format!("palisade {name}"),
            figures: json!({"ns_per_probe": batch_ns / 64.0}),
        });
    }
    let events_json = target_dir().join("criterion/events.json");
    let events_json_arg = events_json.to_str().context("non-UTF-8 path")?;
    let mut ev_args = vec!["--json", events_json_arg];
    if quick {
        ev_args.push("--quick");
    }
    cargo_bench("events", &ev_args)?;
    let events: Value = serde_json::from_str(
        &std::fs::read_to_string(&events_json).context("the events benchmark's --json")?,
    )?;
    for run in events.as_array().context("the events benchmark's --json")? {
        let mut figures = json!({
            "offered_per_s": run["offered_per_s"],
            "events_per_s": run["events_per_s"],
            "p50_ms": run["p50_ms"],
            "p99_ms": run["p99_ms"],
            "delivery_cpu_us_per_event": run["delivery_cpu_us_per_event"],
        });
        if let Some(runs) = run.get("p99_runs_ms") {
            figures["p99_runs_ms"] = runs.clone();
        }
        rows.push(Row {
            scenario: EVENTS,
            tool: run["run"].as_str().unwrap_or("").to_string(),
            figures,
        });
    }

    // The dashboard and the API over a 10,000-monitor store (no testbed:
    // the router without a socket; --quick: 2,000 monitors).
    let dashboard_json = target_dir().join("criterion/dashboard.json");
    let dashboard_json_arg = dashboard_json.to_str().context("non-UTF-8 path")?;
    let mut dash_args = vec!["--json", dashboard_json_arg];
    if quick {
        dash_args.extend(["--quick", "--monitors", "2000"]);
    }
    cargo_bench("dashboard", &dash_args)?;
    let pages: Value = serde_json::from_str(
        &std::fs::read_to_string(&dashboard_json).context("the dashboard benchmark's --json")?,
    )?;
    for page in pages
        .as_array()
        .context("the dashboard benchmark's --json")?
    {
        rows.push(Row {
            scenario: DASHBOARD,
            tool: page["page"].as_str().unwrap_or("").to_string(),
            figures: json!({
                "monitors": page["monitors"],
                "median_ms": page["median_ms"],
                "p95_ms": page["p95_ms"],
                "ratio_to_healthz": page["ratio_to_healthz"],
                "bytes": page["bytes"],
            }),
        });
    }

    let tb = fleet_testbed()?;
    // masscan 1.3.2 waits for a packet to end its wait on a quiet link: a
    // trickle of link-local multicast out of the scanner's interface.
    let trickle = format!(
        "import socket, time\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         for _ in range(36000):\n    s.sendto(b'wake', ('ff02::1%{}', 9))\n    time.sleep(0.1)\n",
        tb.scanner_if()
    );
    let mut trickle = tb
        .in_scanner("python3")
        .args(["-c", &trickle])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("python3 for the multicast trickle")?;
    let result = testbed_scenarios(&tb, &bins, args.block.as_deref(), quick, &mut rows)
        .and_then(|()| daemon_scenario(&tb, &bins, args, &mut rows));
    let _ = trickle.kill();
    let _ = trickle.wait();
    tb.teardown()?;
    result?;
    cluster::cluster_scenario(&bins, quick, &mut rows)?;
    write_results(&rows, quick, false)
}

/// The testbed with the simulated fleet: a two-queue veth, as a NIC with a
/// queue per core; every tool uses it as it would by default.
fn fleet_testbed() -> Result<Testbed> {
    Testbed::new(TestbedConfig {
        targets_v4: vec!["198.18.0.2".parse()?],
        targets_v6: vec![],
        tx_queues: QUEUES,
    })
    .context("cannot build the testbed (needs root)")
}

/// The adaptive-retries run of the full-port sweeps.
const ADAPTIVE: &str = "palisade --rate 100M --target-recall 99.99";

/// The dashboard benchmark's scenario.
const DASHBOARD: &str = "dashboard and API pages (store of monitors)";

/// The event benchmark's scenario (`benches/events.rs`).
const EVENTS: &str = "events through JetStream (acked)";

/// How much above the batch-at-a-time delivery's p99 at 20,000 events/s
/// (same run) the pipelined one's still counts as "the same": the medians
/// of three runs each move by about this much from one run of the
/// benchmark to the next on the 2-core machine.
const SAME_P99_WITHIN: f64 = 1.1;

fn testbed_scenarios(
    tb: &Testbed,
    bins: &ReleaseBins,
    block: Option<&str>,
    quick: bool,
    rows: &mut Vec<Row>,
) -> Result<()> {
    // `--block CIDR` sweeps a smaller block than the /24 of the full run.
    let sweep_block = match (block, quick) {
        (Some(b), _) => b,
        (None, true) => "198.18.0.0/28",
        (None, false) => "198.18.0.0/24",
    };
    let ports_all = if quick { "1-4096" } else { "1-65535" };
    let limit = Duration::from_secs(if quick { 120 } else { 1800 });
    let repeats = if quick { 1 } else { 3 };
    let tx_count = if quick { "300000" } else { "4000000" };

    // 1. Transmit ceiling: a bare loop, first with every probe dropped by
    //    the fleet, then answered, the answers taken by the reply filter
    //    exactly as a scan takes them (but not looked at).
    {
        let drop_all = SimFleet {
            block: sweep_block,
            density_ppm: 0,
            loss_permille: 1000,
        };
        let _fleet = FleetProcess::start(tb, bins, &drop_all)?;
        for (tool, extra) in [
            (
                "bare AF_XDP loop, 1 queue, fleet drops",
                &["--queues", "1"][..],
            ),
            ("bare AF_XDP loop, all queues, fleet drops", &[][..]),
        ] {
            ceiling_row(rows, tool, repeats + 2, || {
                tx_bench(tb, bins, extra, tx_count, limit)
            })?;
        }
        // The scan against the same silent fleet (no retries: nothing answers).
        ceiling_row(rows, "palisade --retries 0, fleet drops", repeats, || {
            let o = palisade_scan(
                tb,
                bins,
                sweep_block,
                ports_all,
                100_000_000,
                &["--retries", "0"],
                limit,
            )?;
            o.rate.context("no rate in the scan summary")
        })?;
    }
    {
        let answering = SimFleet {
            block: sweep_block,
            density_ppm: 200,
            loss_permille: 0,
        };
        let _fleet = FleetProcess::start(tb, bins, &answering)?;
        ceiling_row(
            rows,
            "bare AF_XDP loop, all queues, fleet answers, reply filter",
            repeats + 2,
            || tx_bench(tb, bins, &["--replies"], tx_count, limit),
        )?;
    }

    // 2. Full-port sweep and loss, answered by the fleet.
    let nmap_hosts = "198.18.0.4/30";
    for loss in [0u32, 10, 50] {
        let fleet = SimFleet {
            block: sweep_block,
            density_ppm: 200,
            loss_permille: loss,
        };
        let truth = truth(bins, &fleet, sweep_block, ports_all)?;
        let nmap_truth: BTreeSet<(IpAddr, u16)> = truth
            .iter()
            .filter(|(ip, _)| matches!(ip, IpAddr::V4(a) if (4..8).contains(&a.octets()[3])))
            .copied()
            .collect();
        let _fleet = FleetProcess::start(tb, bins, &fleet)?;
        let scenario = match loss {
            0 => "full-port sweep, 0% loss",
            10 => "full-port sweep, 1% loss",
            _ => "full-port sweep, 5% loss",
        };
        let scope = probes(sweep_block, ports_all);
        // Palisade unthrottled: the median of `repeats` runs by wall time.
        let runs = (0..if loss == 0 { repeats } else { 1 })
            .map(|_| palisade_scan(tb, bins, sweep_block, ports_all, 100_000_000, &[], limit))
            .collect::<Result<Vec<BenchRun>>>();
        let palisade = runs.map(|r| {
            let rates: Vec<Option<f64>> = r.iter().map(|o| o.rate).collect();
            eprintln!("xtask bench: palisade runs, rates while sending: {rates:?}");
            median_by(r, |o| o.seconds)
        });
        sweep_row(
            rows,
            scenario,
            "palisade --rate 100M".into(),
            palisade,
            scope,
            &truth,
        );
        // Adaptive retries beside the default, at 0% and 5% loss.
        if loss != 10 {
            let adaptive = palisade_scan(
                tb,
                bins,
                sweep_block,
                ports_all,
                100_000_000,
                &["--target-recall", "99.99"],
                limit,
            );
            sweep_row(rows, scenario, ADAPTIVE.into(), adaptive, scope, &truth);
        }
        if loss == 0 {
            let capped = palisade_scan(tb, bins, sweep_block, ports_all, 250_000, &[], limit);
            sweep_row(
                rows,
                scenario,
                "palisade --rate 250k".into(),
                capped,
                scope,
                &truth,
            );
            let m = masscan(tb, sweep_block, ports_all, 250_000, limit);
            sweep_row(
                rows,
                scenario,
                "masscan --rate 250k".into(),
                m,
                scope,
                &truth,
            );
        }
        let m = masscan(tb, sweep_block, ports_all, 2_000_000, limit);
        sweep_row(rows, scenario, "masscan --rate 2M".into(), m, scope, &truth);
        let n = nmap(tb, nmap_hosts, ports_all, limit);
        sweep_row(
            rows,
            scenario,
            "nmap -T5 (4 hosts)".into(),
            n,
            probes(nmap_hosts, ports_all),
            &nmap_truth,
        );
    }

    // 3. One port across a /16 (a /20 when quick): zmap's own kind of scan
    //    (zmap 2.1 scans a single port), all three tools, at 0, 1 and 5% loss.
    let wide = if quick {
        "198.18.0.0/20"
    } else {
        "198.18.0.0/16"
    };
    for loss in [0u32, 10, 50] {
        let fleet = SimFleet {
            block: wide,
            density_ppm: 20_000,
            loss_permille: loss,
        };
        let truth = truth(bins, &fleet, wide, "80")?;
        let _fleet = FleetProcess::start(tb, bins, &fleet)?;
        let scenario: &'static str = Box::leak(
            format!(
                "port 80 on a /{}, {}% loss",
                wide.rsplit('/').next().unwrap_or("?"),
                loss / 10
            )
            .into_boxed_str(),
        );
        let scope = probes(wide, "80");
        let p = palisade_scan(tb, bins, wide, "80", 100_000_000, &[], limit);
        sweep_row(
            rows,
            scenario,
            "palisade --rate 100M".into(),
            p,
            scope,
            &truth,
        );
        let m = masscan(tb, wide, "80", 2_000_000, limit);
        sweep_row(rows, scenario, "masscan --rate 2M".into(), m, scope, &truth);
        let z = zmap(tb, wide, 80, 10_000_000, 1, limit);
        sweep_row(rows, scenario, "zmap -r 10M".into(), z, scope, &truth);
        if loss == 0 {
            // zmap's sustained sending rate: 16 probes per address.
            let z = zmap(tb, wide, 80, 10_000_000, 16, limit);
            sweep_row(
                rows,
                scenario,
                "zmap -r 10M -P 16 (16 probes per address)".into(),
                z,
                scope * 16.0,
                &truth,
            );
        }
    }

    // 4. Memory: a /16 x 65,535 sweep (the first seconds of it).
    {
        let fleet = SimFleet {
            block: "198.18.0.0/16",
            density_ppm: 100,
            loss_permille: 0,
        };
        let _fleet = FleetProcess::start(tb, bins, &fleet)?;
        let secs = if quick { 3 } else { 20 };
        let mut child = tb
            .in_scanner(&bins.palisade)
            .args([
                "scan",
                "198.18.0.0/16",
                "-p",
                "-",
                "--rate",
                "100000000",
                "-o",
                "/dev/null",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let kib = peak_rss(&mut child, Duration::from_secs(secs))?;
        rows.push(Row {
            scenario: "memory",
            tool: format!("palisade, /16 x 65,535, first {secs} s"),
            figures: json!({
                "peak_rss_mib": kib as f64 / 1024.0,
                "umem_mib": UMEM_MIB_PER_QUEUE * f64::from(QUEUES),
            }),
        });
    }
    Ok(())
}

/// The daemon without packets.
const SCALE: &str = "daemon at scale, no packets (benches/scale.rs)";
/// `palisade status` over a store of monitors.
const STATUS: &str = "palisade status";
/// The daemon on the simulated fleet.
const DAEMON: &str =
    "daemon sweep on the fleet: a monitor per address x ports 1-1024, 0.1% deviating";
/// Monitors the scale goals are set for.
const SCALE_MONITORS: u32 = 1_000_000;
/// Monitors `palisade status` is timed over.
const STATUS_MONITORS: u32 = 65_536;

/// The daemon without packets (`benches/scale.rs`) at `--monitors`, and
/// `palisade status` over a store of 65,536 monitors that the same
/// benchmark built as the daemon builds it.
fn scale_scenarios(bins: &ReleaseBins, args: &BenchArgs, rows: &mut Vec<Row>) -> Result<()> {
    let monitors = args
        .monitors
        .unwrap_or(if args.quick { 20_000 } else { SCALE_MONITORS });
    let json = target_dir().join("criterion/scale.json");
    let json_arg = json.to_str().context("non-UTF-8 path")?;
    let n = monitors.to_string();
    cargo_bench("scale", &["--monitors", &n, "--json", json_arg])?;
    let figures: Value = serde_json::from_str(
        &std::fs::read_to_string(&json).context("the scale benchmark's --json")?,
    )?;
    rows.push(Row {
        scenario: SCALE,
        tool: format!("palisade daemon, {monitors} monitors"),
        figures,
    });

    let status_monitors = if args.quick { 2_000 } else { STATUS_MONITORS };
    let dir = target_dir().join("palisade-bench-status");
    let dir_arg = dir.to_str().context("non-UTF-8 path")?;
    let n = status_monitors.to_string();
    let kept_json = target_dir().join("criterion/scale-status.json");
    let kept_json = kept_json.to_str().context("non-UTF-8 path")?;
    cargo_bench(
        "scale",
        &["--monitors", &n, "--keep", dir_arg, "--json", kept_json],
    )?;
    let config = dir.join("palisade.toml");
    let config = config.to_str().context("non-UTF-8 path")?;
    let runs = (0..3)
        .map(|_| {
            let mut cmd = Command::new(&bins.palisade);
            cmd.args(["status", "-c", config]);
            let (out, _, secs) = timed_limit(cmd, Duration::from_secs(600))?;
            // A header and a line per monitor (one address each).
            let lines = out.lines().count() as u32;
            if lines < status_monitors {
                bail!("palisade status printed {lines} lines for {status_monitors} monitors");
            }
            Ok(secs)
        })
        .collect::<Result<Vec<f64>>>();
    let _ = std::fs::remove_dir_all(&dir);
    let runs = runs?;
    eprintln!("xtask bench: palisade status over {status_monitors} monitors: {runs:?} s");
    rows.push(Row {
        scenario: STATUS,
        tool: format!("palisade status, {status_monitors} monitors"),
        figures: json!({
            "monitors": status_monitors,
            "median_s": median_by(runs.clone(), |s| *s),
            "runs": runs,
        }),
    });
    Ok(())
}

/// The IPv4 addresses of `block` (`a.b.c.d/p`), ascending.
fn block_addresses(block: &str) -> Result<Vec<std::net::Ipv4Addr>> {
    let (base, prefix) = block.split_once('/').context("a CIDR block")?;
    let base: std::net::Ipv4Addr = base.parse().context("an IPv4 block")?;
    let prefix: u32 = prefix.parse().context("a prefix length")?;
    if !(8..=32).contains(&prefix) {
        bail!("{block}: a prefix of 8 to 32 bits");
    }
    let first = u32::from(base) & (u32::MAX << (32 - prefix));
    let count = 1u64 << (32 - prefix);
    Ok((0..count)
        .map(|i| std::net::Ipv4Addr::from(first + i as u32))
        .collect())
}

/// What the daemon scenario's monitors expect and which events that
/// makes: each address's open ports of even number are expected, so each
/// odd one (0.1% of the pairs at a density of 0.2%) is an
/// `unexpected_port_open`; every 64th monitor also expects port 1024, an
/// `expected_port_down` where it is closed. `confirm = 1`: all in the
/// first sweep.
struct DaemonMonitors {
    config: String,
    events: BTreeSet<(String, String, u16)>,
    monitors: usize,
}

fn daemon_monitors(
    addresses: &[std::net::Ipv4Addr],
    truth: &BTreeSet<(IpAddr, u16)>,
    head: &str,
) -> DaemonMonitors {
    let mut open: std::collections::HashMap<IpAddr, Vec<u16>> = std::collections::HashMap::new();
    for &(ip, port) in truth {
        open.entry(ip).or_default().push(port);
    }
    let mut config = head.to_string();
    let mut events = BTreeSet::new();
    for (i, &a) in addresses.iter().enumerate() {
        let ip = IpAddr::V4(a);
        let name = format!("h-{i:05}");
        let ports = open.get(&ip).cloned().unwrap_or_default();
        let mut expected: Vec<u16> = ports.iter().copied().filter(|p| p % 2 == 0).collect();
        for &p in ports.iter().filter(|p| *p % 2 == 1) {
            events.insert(("unexpected_port_open".to_string(), name.clone(), p));
        }
        if i % 64 == 0 && !ports.contains(&1024) {
            expected.push(1024);
            events.insert(("expected_port_down".to_string(), name.clone(), 1024));
        }
        let expected: Vec<String> = expected.iter().map(ToString::to_string).collect();
        config.push_str(&format!(
            "[[monitor]]\nname = \"{name}\"\nhost = \"{a}\"\nexpected_open = [{}]\nconfirm = 1\n\n",
            expected.join(", ")
        ));
    }
    DaemonMonitors {
        config,
        events,
        monitors: addresses.len(),
    }
}

/// The daemon (`palisade run --once`) sweeping one monitor per address of
/// a block, ports 1-1024, against the simulated fleet, beside a plain
/// `palisade scan` of the same targets and ports at the same settings, in
/// the same testbed: wall times, the daemon's peak memory, and its events
/// against the ground truth.
fn daemon_scenario(
    tb: &Testbed,
    bins: &ReleaseBins,
    args: &BenchArgs,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let block = args.daemon_block.as_deref().unwrap_or(if args.quick {
        "198.18.0.0/22"
    } else {
        "198.18.0.0/16"
    });
    let ports = "1-1024";
    let rate: u64 = 1_000_000;
    let limit = Duration::from_secs(1800);
    let fleet = SimFleet {
        block,
        density_ppm: 2_000,
        loss_permille: 0,
    };
    let truth = truth(bins, &fleet, block, ports)?;
    let dir = std::env::temp_dir().join(format!("palisade-bench-daemon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("palisade.toml");
    let events = dir.join("events.jsonl");
    // The interface and the next hop given: each slice of the sweep finds
    // its path for its own first address, and the testbed routes only the
    // block's first addresses (a plain scan of the block needs no more).
    let head = format!(
        "[scan]\ninterface = \"{}\"\nsource_ip = \"{}\"\ngateway_mac = \"{}\"\n\
         rate = {rate}\nper_host_rate = 100000000\nports = \"{ports}\"\n\
         target_recall = 99.99\nwait = \"1s\"\n\n[store]\npath = \"{}\"\n\n",
        tb.scanner_if(),
        tb.scanner_v4(),
        tb.target_mac(),
        dir.join("palisade.db").display()
    );
    let monitors = daemon_monitors(&block_addresses(block)?, &truth, &head);
    std::fs::write(&config, &monitors.config)?;
    let _fleet = FleetProcess::start(tb, bins, &fleet)?;
    let scope = probes(block, ports);

    // The plain scan, at the daemon's settings.
    let scan = palisade_scan(
        tb,
        bins,
        block,
        ports,
        rate,
        &["--target-recall", "99.99"],
        limit,
    );
    let scan_wall = scan.as_ref().ok().map(|s| s.seconds);
    sweep_row(
        rows,
        DAEMON,
        "palisade scan (the same targets and ports)".into(),
        scan,
        scope,
        &truth,
    );

    // The daemon: one sweep of every monitor, its events to a file.
    let mut cmd = tb.in_scanner(&bins.palisade);
    cmd.args(["run", "--once", "-c"])
        .arg(&config)
        .arg("--events")
        .arg(&events)
        .env("PALISADE_LOG", "info")
        .env("NO_COLOR", "1");
    let outcome = timed_limit(cmd, limit);
    let (got, lines) = events_of(&events);
    let _ = std::fs::remove_dir_all(&dir);
    let (_, stderr, secs) = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("xtask bench: {DAEMON}: {e:#}");
            rows.push(Row {
                scenario: DAEMON,
                tool: "palisade run --once".into(),
                figures: json!({"error": format!("{e:#}")}),
            });
            return Ok(());
        }
    };
    let peak_kib = stderr
        .rsplit("peak memory ")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|k| k.parse::<f64>().ok());
    // The daemon's own figures of its sweep ("sweep done").
    let logged = |key: &str| logged(&stderr, "sweep done", key);
    let exact = got == monitors.events && lines == monitors.events.len();
    eprintln!(
        "xtask bench: {DAEMON}: {secs:.2} s (scan {scan_wall:?} s), events {} of {} expected, exact {exact}",
        got.len(),
        monitors.events.len()
    );
    rows.push(Row {
        scenario: DAEMON,
        tool: "palisade run --once".into(),
        figures: json!({
            "monitors": monitors.monitors,
            "wall_s": secs,
            "sweep_s": logged("secs"),
            "slices": logged("slices"),
            "plan_s": logged("plan_s"),
            "probe_s": logged("probe_s"),
            "evaluate_s": logged("evaluate_s"),
            "store_s": logged("store_s"),
            "probes": scope,
            "peak_rss_mib": peak_kib.map(|k| k / 1024.0),
            "umem_mib": UMEM_MIB_PER_QUEUE * f64::from(QUEUES),
            "events": lines,
            "events_expected": monitors.events.len(),
            "events_exact": exact,
        }),
    });
    Ok(())
}

/// The events of a `--events` file as (kind, monitor, port), and its
/// lines (every event, with a port or not).
fn events_of(path: &std::path::Path) -> (BTreeSet<(String, String, u16)>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let got = text
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let d = &v["data"];
            Some((
                d["kind"].as_str()?.to_string(),
                d["monitor"].as_str()?.to_string(),
                d["port"].as_u64()? as u16,
            ))
        })
        .collect();
    (got, text.lines().count())
}

/// The figure `key` of the last log line holding `message` (tracing's
/// `key=value` fields).
fn logged(log: &str, message: &str, key: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains(message))?;
    let tail = line.split(&format!(" {key}=")).nth(1)?;
    tail.split_whitespace().next()?.parse().ok()
}

/// The transmit ceiling side by side: (what, probes per second, how).
fn ceiling(rows: &[Row]) -> Vec<(String, f64, &'static str)> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.scenario == "transmit ceiling") {
        if let Some(pps) = r.figures["pps"].as_f64() {
            out.push((r.tool.clone(), pps, "median of the runs"));
        }
    }
    let best = |prefix: &str, key: &str| -> Option<(String, f64)> {
        rows.iter()
            .filter(|r| r.tool.starts_with(prefix) && r.figures["recall_pct"].as_f64().is_some())
            .filter_map(|r| {
                Some((
                    format!("{}: {}", r.tool, r.scenario),
                    r.figures[key].as_f64()?,
                ))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let sweep = rows
        .iter()
        .find(|r| r.scenario == "full-port sweep, 0% loss" && r.tool == "palisade --rate 100M");
    if let Some(pps) = sweep.and_then(|r| r.figures["probes_per_s_sending"].as_f64()) {
        out.push((
            "palisade --rate 100M: full-port sweep, 0% loss".into(),
            pps,
            "its own count while sending (the run of median wall time)",
        ));
    }
    if let Some((what, pps)) = best("masscan", "probes_per_s_wall") {
        out.push((
            what,
            pps,
            "probes / wall time (its progress line overstates)",
        ));
    }
    if let Some((what, pps)) = best("zmap", "probes_per_s_sending") {
        out.push((what, pps, "its own \"send\" average"));
    }
    out
}

/// One goal of issue 6, evaluated from the rows of this run.
struct Goal {
    goal: &'static str,
    measured: String,
    /// `None`: a reference figure, not a goal.
    met: Option<bool>,
}

/// How a ratio goal prints.
#[derive(Clone, Copy)]
enum Ratio {
    Percent,
    Times,
    Seconds,
    Millis,
}

/// The goal `num / den`, met when `check` says so (`None`: a reference figure).
fn ratio_goal(
    goal: &'static str,
    num: Option<f64>,
    den: Option<f64>,
    how: Ratio,
    check: Option<fn(f64) -> bool>,
) -> Goal {
    let r = num.zip(den).map(|(n, d)| n / d);
    let measured = match (num, den, r) {
        (Some(n), Some(d), Some(r)) => match how {
            Ratio::Percent => format!("{n:.0} / {d:.0} = {:.1}%", 100.0 * r),
            Ratio::Times => format!("{n:.0} / {d:.0} = {r:.2}x"),
            Ratio::Seconds => format!("{n:.2} s / {d:.2} s = {r:.2}x"),
            Ratio::Millis => format!("{n:.2} ms / {d:.2} ms = {r:.2}x"),
        },
        _ => "missing".into(),
    };
    Goal {
        goal,
        measured,
        met: check.map(|c| r.is_some_and(c)),
    }
}

/// The goals, as ratios within this run (missing figures: not met).
fn goals(rows: &[Row]) -> Vec<Goal> {
    let fig = |scenario: &str, tool: &str, key: &str| -> Option<f64> {
        rows.iter()
            .find(|r| r.scenario == scenario && r.tool == tool)?
            .figures
            .get(key)?
            .as_f64()
    };
    let best_masscan = |scenario: &str| -> Option<(f64, f64)> {
        rows.iter()
            .filter(|r| r.scenario == scenario && r.tool.starts_with("masscan"))
            .filter_map(|r| {
                Some((
                    r.figures["wall_s"].as_f64()?,
                    r.figures["probes_per_s_wall"].as_f64()?,
                ))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
    };
    let sweep0 = "full-port sweep, 0% loss";
    let tool = "palisade --rate 100M";
    let sending = fig(sweep0, tool, "probes_per_s_sending");
    let wall_rate = fig(sweep0, tool, "probes_per_s_wall");
    let wall = fig(sweep0, tool, "wall_s");
    let answered = fig(
        "transmit ceiling",
        "bare AF_XDP loop, all queues, fleet answers, reply filter",
        "pps",
    );
    let dropped = fig(
        "transmit ceiling",
        "bare AF_XDP loop, all queues, fleet drops",
        "pps",
    );
    let masscan = best_masscan(sweep0);
    let pct = |x: Option<f64>| x.map_or("missing".to_string(), |v| format!("{v:.2}%"));
    let mut out = vec![
        ratio_goal(
            "scan rate >= 90% of the bare loop (same answers, same filter)",
            sending,
            answered,
            Ratio::Percent,
            Some(|r| r >= 0.9),
        ),
        ratio_goal(
            "scan rate >= 90% of the bare loop, neither answered (fleet drops)",
            fig(
                "transmit ceiling",
                "palisade --retries 0, fleet drops",
                "pps",
            ),
            dropped,
            Ratio::Percent,
            Some(|r| r >= 0.9),
        ),
        ratio_goal(
            "(for reference) answered scan vs the unanswered bare loop: the cost of the answers on this testbed",
            sending,
            dropped,
            Ratio::Percent,
            None,
        ),
        ratio_goal(
            "scan rate >= 3x masscan's (probes per second of wall time, both)",
            wall_rate,
            masscan.map(|m| m.1),
            Ratio::Times,
            Some(|r| r >= 3.0),
        ),
        ratio_goal(
            "full-port sweep in <= 0.4x masscan's wall time",
            wall,
            masscan.map(|m| m.0),
            Ratio::Seconds,
            Some(|r| r <= 0.4),
        ),
    ];
    let r0 = fig(sweep0, tool, "recall_pct");
    let p0 = fig(sweep0, tool, "precision_pct");
    out.push(Goal {
        goal: "recall and precision 100% at 0% loss",
        measured: format!("{} / {}", pct(r0), pct(p0)),
        met: Some(r0 == Some(100.0) && p0 == Some(100.0)),
    });
    for (scenario, want, goal) in [
        (
            "full-port sweep, 1% loss",
            99.9,
            "recall >= 99.9% at 1% loss (default retries)",
        ),
        (
            "full-port sweep, 5% loss",
            99.0,
            "recall >= 99% at 5% loss (default retries)",
        ),
    ] {
        let r = fig(scenario, tool, "recall_pct");
        out.push(Goal {
            goal,
            measured: pct(r),
            met: Some(r.is_some_and(|r| r >= want)),
        });
    }
    // Adaptive retries (issue 16), against the default in the same run.
    let sweep5 = "full-port sweep, 5% loss";
    let r5 = fig(sweep5, ADAPTIVE, "recall_pct");
    out.push(Goal {
        goal: "recall >= 99.99% at 5% loss with adaptive retries (--target-recall 99.99)",
        measured: pct(r5),
        met: Some(r5.is_some_and(|r| r >= 99.99)),
    });
    out.push(ratio_goal(
        "adaptive retries at 5% loss: probes <= 1.25x the default's (first probes and retries)",
        fig(sweep5, ADAPTIVE, "probes_sent"),
        fig(sweep5, tool, "probes_sent"),
        Ratio::Times,
        Some(|r| r <= 1.25),
    ));
    // No extra probes: none beyond the configured retries (the default's
    // own retries, for answers the testbed dropped at full speed, vary from
    // run to run; its probes are shown beside).
    let a0 = fig(sweep0, ADAPTIVE, "recall_pct");
    let extra0 = fig(sweep0, ADAPTIVE, "extra_retries");
    let (p_adaptive, p_default) = (
        fig(sweep0, ADAPTIVE, "probes_sent"),
        fig(sweep0, tool, "probes_sent"),
    );
    out.push(Goal {
        goal: "adaptive retries at 0% loss: recall 100%, no extra probes",
        measured: match (extra0, p_adaptive, p_default) {
            (Some(e), Some(a), Some(d)) => format!(
                "recall {}, {e:.0} extra retries; probes {a:.0} (default: {d:.0})",
                pct(a0)
            ),
            _ => "missing".into(),
        },
        met: Some(a0 == Some(100.0) && extra0 == Some(0.0)),
    });
    let mem = rows.iter().find(|r| r.scenario == "memory").and_then(|r| {
        Some((
            r.figures["peak_rss_mib"].as_f64()?,
            r.figures["umem_mib"].as_f64()?,
        ))
    });
    out.push(Goal {
        goal: "peak RSS <= 128 MiB beyond the UMEM (/16 x 65,535)",
        measured: mem.map_or("missing".into(), |(p, u)| {
            format!("{p:.1} MiB - {u:.0} MiB UMEM = {:.1} MiB", p - u)
        }),
        met: Some(mem.is_some_and(|(p, u)| p - u <= 128.0)),
    });
    // The event path (issue 16): the highest offered rate the delivery kept
    // up with (from 50,000 events/s up), and its p99 at 20,000 events/s
    // against the batch-at-a-time delivery of this run (the one before).
    let sustained = fig(EVENTS, "events/max_sustained", "events_per_s").zip(fig(
        EVENTS,
        "events/max_sustained",
        "p99_ms",
    ));
    out.push(Goal {
        goal: "JetStream events: >= 50,000 events/s acknowledged with p99 commit->ack <= 50 ms (the highest offered rate kept up with)",
        measured: match sustained {
            Some((rate, p99)) => format!("{rate:.0} events/s, p99 {p99:.2} ms"),
            None if !rows.iter().any(|r| r.scenario == EVENTS) => "missing".into(),
            None => "none: the delivery kept up with no rate from 50,000 events/s".into(),
        },
        met: Some(sustained.is_some_and(|(rate, p99)| rate >= 50_000.0 && p99 <= 50.0)),
    });
    out.push(ratio_goal(
        "JetStream events: p99 commit->ack at 20,000 events/s the same as the batch-at-a-time delivery's (within 10%) or better",
        fig(EVENTS, "events/at_20k_per_s", "p99_ms"),
        fig(EVENTS, "events/batches_at_20k_per_s", "p99_ms"),
        Ratio::Millis,
        Some(|r| r <= SAME_P99_WITHIN),
    ));
    // The slowest page, median, against a second (the goal is absolute:
    // a person waits for it), with /healthz of the same run beside it.
    let slowest = rows
        .iter()
        .filter(|r| r.scenario == DASHBOARD)
        .filter_map(|r| Some((r.tool.as_str(), r.figures["median_ms"].as_f64()?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let monitors = rows
        .iter()
        .find(|r| r.scenario == DASHBOARD)
        .and_then(|r| r.figures["monitors"].as_u64());
    out.push(Goal {
        goal: "every dashboard and API page answers a 10,000-monitor store well under a second (slowest median <= 250 ms)",
        measured: match (slowest, monitors) {
            (Some((page, ms)), Some(n)) => format!("slowest: {page}, {ms:.1} ms median ({n} monitors)"),
            _ => "missing".into(),
        },
        met: Some(slowest.is_some_and(|(_, ms)| ms <= 250.0) && monitors == Some(10_000)),
    });
    out.extend(scale_goals(rows));
    out.push(cluster::goal(rows));
    out
}

/// The goals of issue 16 for the daemon at fleet scale: met only at the
/// sizes they are set for (a smaller run shows its figures, not met).
fn scale_goals(rows: &[Row]) -> Vec<Goal> {
    let of = |scenario: &str, tool: Option<&str>| {
        rows.iter()
            .find(|r| r.scenario == scenario && tool.is_none_or(|t| r.tool == t))
            .map(|r| &r.figures)
    };
    let num = |f: Option<&Value>, key: &str| f.and_then(|f| f.get(key)?.as_f64());
    let mut out = Vec::new();
    let daemon = of(DAEMON, Some("palisade run --once"));
    let scan = of(DAEMON, Some("palisade scan (the same targets and ports)"));
    let monitors = num(daemon, "monitors");
    let full = monitors == Some(65_536.0);
    let size = monitors.map_or(String::new(), |m| format!(" ({m:.0} monitors)"));
    let mut wall = ratio_goal(
        "daemon sweep of 65,536 monitors x ports 1-1024 (palisade run --once) <= 1.1x the wall time of a plain palisade scan of the same targets and ports",
        num(daemon, "wall_s"),
        num(scan, "wall_s"),
        Ratio::Seconds,
        Some(|r| r <= 1.1),
    );
    wall.measured.push_str(&size);
    wall.met = wall.met.map(|m| m && full);
    out.push(wall);
    let (peak, umem) = (num(daemon, "peak_rss_mib"), num(daemon, "umem_mib"));
    out.push(Goal {
        goal: "daemon sweep of 65,536 monitors: peak RSS <= 256 MiB beyond the UMEM",
        measured: match peak.zip(umem) {
            Some((p, u)) => format!("{p:.1} MiB - {u:.0} MiB UMEM = {:.1} MiB{size}", p - u),
            None => "missing".into(),
        },
        met: Some(full && peak.zip(umem).is_some_and(|(p, u)| p - u <= 256.0)),
    });
    let exact = daemon.and_then(|f| f["events_exact"].as_bool());
    out.push(Goal {
        goal: "daemon sweep on the fleet: exactly the expected events",
        measured: match (num(daemon, "events"), num(daemon, "events_expected")) {
            (Some(got), Some(want)) => {
                format!(
                    "{got:.0} events, {want:.0} expected, exact: {}{size}",
                    exact == Some(true)
                )
            }
            _ => "missing".into(),
        },
        met: Some(exact == Some(true)),
    });

    let scale = of(SCALE, None);
    let million = num(scale, "monitors") == Some(f64::from(SCALE_MONITORS));
    let size = num(scale, "monitors").map_or(String::new(), |m| format!(" ({m:.0} monitors)"));
    for (goal, key, limit, unit) in [
        (
            "a million monitors without packets: start-up (store load) <= 30 s",
            "start_up_s",
            30.0,
            "s",
        ),
        (
            "a million monitors: planning a sweep <= 5 s",
            "plan_s",
            5.0,
            "s",
        ),
        (
            "a million monitors: evaluating a full result with 0.1% deviations <= 10 s",
            "evaluate_s",
            10.0,
            "s",
        ),
        (
            "a million monitors: peak RSS <= 2 GiB",
            "peak_rss_mib",
            2048.0,
            "MiB",
        ),
    ] {
        let v = num(scale, key);
        out.push(Goal {
            goal,
            measured: v.map_or("missing".into(), |v| format!("{v:.2} {unit}{size}")),
            met: Some(million && v.is_some_and(|v| v <= limit)),
        });
    }
    out.push(Goal {
        goal: "a million monitors: one event per deviation, all delivered",
        measured: match (num(scale, "events"), num(scale, "deviations")) {
            (Some(e), Some(d)) => format!("{e:.0} events, {d:.0} deviations{size}"),
            _ => "missing".into(),
        },
        met: Some(scale.and_then(|f| f["events_exact"].as_bool()) == Some(true)),
    });
    let status = of(STATUS, None);
    let status_monitors = num(status, "monitors");
    let median = num(status, "median_s");
    out.push(Goal {
        goal: "palisade status over 65,536 monitors < 1 s",
        measured: match (median, status_monitors) {
            (Some(s), Some(m)) => format!("{s:.2} s median ({m:.0} monitors)"),
            _ => "missing".into(),
        },
        met: Some(
            status_monitors == Some(f64::from(STATUS_MONITORS)) && median.is_some_and(|s| s < 1.0),
        ),
    });
    out
}

fn write_results(rows: &[Row], quick: bool, partial: bool) -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut goals = goals(rows);
    if partial {
        // Only the goals of the scenarios that ran.
        goals.retain(|g| !g.measured.starts_with("missing"));
    }
    let json = json!({
        "goals": goals.iter().map(|g| json!({"goal": g.goal, "measured": g.measured, "met": g.met})).collect::<Vec<_>>(),
        "date": date,
        "kernel": kernel.trim(),
        "cpu": cpu,
        "cores": cores,
        "quick": quick,
        "rows": rows.iter().map(|r| json!({"scenario": r.scenario, "tool": r.tool, "figures": r.figures})).collect::<Vec<_>>(),
    });
    let mut md = format!(
        "# Benchmark results\n\nWritten by `cargo xtask bench{}` on {date}: {cpu}, {cores} cores, Linux {}.\n\
         Testbed: two network namespaces joined by a two-queue veth (AF_XDP copy mode), the fleet\n\
         simulated by `palisade-sim fleet` (generic XDP) answering from a keyed-hash ground truth.\n\
         Rates are probes per second; `runs` lists repeated runs, the figure is their median.\n\n\
         | scenario | tool | figures |\n| --- | --- | --- |\n",
        match (partial, quick) {
            (true, true) => " --quick --only ...",
            (true, false) => " --only ...",
            (false, true) => " --quick",
            (false, false) => "",
        },
        kernel.trim()
    );
    for r in rows {
        let figs: Vec<String> = r
            .figures
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| match v.as_f64() {
                Some(f) if f.fract() != 0.0 => format!("{k} {f:.2}"),
                _ => format!("{k} {v}"),
            })
            .collect();
        md.push_str(&format!(
            "| {} | {} | {} |\n",
            r.scenario,
            r.tool,
            figs.join(", ")
        ));
    }
    md.push_str(
        "\n## Transmit ceiling, side by side\n\n| what | probes/s | how |\n| --- | --- | --- |\n",
    );
    for (what, pps, how) in ceiling(rows) {
        md.push_str(&format!("| {what} | {pps:.0} | {how} |\n"));
    }
    md.push_str("\n## Goals (issues 6, 14 and 16), as ratios within this run\n\n| goal | measured | met |\n| --- | --- | --- |\n");
    for g in &goals {
        md.push_str(&format!(
            "| {} | {} | {} |\n",
            g.goal,
            g.measured,
            match g.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            }
        ));
    }
    let dir = root().join("benches");
    let (md_name, json_name) = if partial {
        ("RESULTS.partial.md", "results.partial.json")
    } else if quick {
        ("RESULTS.quick.md", "results.quick.json")
    } else {
        ("RESULTS.md", "results.json")
    };
    std::fs::write(dir.join(md_name), md)?;
    std::fs::write(dir.join(json_name), serde_json::to_string_pretty(&json)?)?;
    eprintln!("xtask bench: wrote benches/{md_name} and benches/{json_name}");
    sanity(rows)
}

/// The figures must make sense (not how fast they are): CI runs `--quick`.
fn sanity(rows: &[Row]) -> Result<()> {
    for r in rows {
        let f = &r.figures;
        if f.get("error").is_some() && r.tool.starts_with("palisade") {
            bail!("{} / {}: {}", r.scenario, r.tool, f["error"]);
        }
        for key in [
            "pps",
            "events_per_s",
            "probes_per_s_wall",
            "ns_per_probe",
            "peak_rss_mib",
        ] {
            if let Some(v) = f.get(key).and_then(Value::as_f64)
                && !(v.is_finite() && v > 0.0)
            {
                bail!(
                    "{} / {}: {key} = {v} is not a sane figure",
                    r.scenario,
                    r.tool
                );
            }
        }
        if (r.scenario == SCALE || r.scenario == DAEMON || r.scenario == cluster::CLUSTER)
            && r.figures.get("events_exact").and_then(Value::as_bool) == Some(false)
        {
            bail!(
                "{} / {}: the events are not exactly the expected ones: {f}",
                r.scenario,
                r.tool
            );
        }
        if r.scenario == "full-port sweep, 0% loss"
            && r.tool.starts_with("palisade")
            && (f["recall_pct"].as_f64() != Some(100.0)
                || f["precision_pct"].as_f64() != Some(100.0))
        {
            bail!(
                "{} / {}: recall and precision must be 100% at 0% loss: {f}",
                r.scenario,
                r.tool
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zmap_rate_reads_the_last_status_line() {
        let err = " 0:00 1%; send: 557 168 Kp/s (25.6 Kp/s avg); recv: 0 0 p/s\n\
                   0:01 78%; send: 65536 done (206 Kp/s avg); recv: 1352 1.35 Kp/s\n";
        assert_eq!(zmap_rate(err), Some(206_000.0));
        assert_eq!(
            zmap_rate("send: 9 done (1.5 Mp/s avg); recv"),
            Some(1_500_000.0)
        );
        assert_eq!(zmap_rate("send: 9 done (900 p/s avg)"), Some(900.0));
        assert_eq!(zmap_rate("no status at all"), None);
    }

    #[test]
    fn median_and_probe_counts() {
        assert_eq!(median_by(vec![3.0, 1.0, 2.0], |x| *x), 2.0);
        assert_eq!(median_by(vec![5.0], |x| *x), 5.0);
        assert_eq!(probes("198.18.0.0/24", "1-65535"), 256.0 * 65_535.0);
        assert_eq!(probes("198.18.0.0/16", "80"), 65_536.0);
    }

    #[test]
    fn goals_are_ratios_of_this_run() {
        let row = |scenario: &'static str, tool: &str, figures: Value| Row {
            scenario,
            tool: tool.into(),
            figures,
        };
        let rows = vec![
            row(
                "transmit ceiling",
                "bare AF_XDP loop, all queues, fleet answers, reply filter",
                json!({"pps": 800_000.0}),
            ),
            row(
                "full-port sweep, 0% loss",
                "palisade --rate 100M",
                json!({"probes_per_s_sending": 760_000.0, "probes_per_s_wall": 700_000.0,
                       "wall_s": 10.0, "recall_pct": 100.0, "precision_pct": 100.0}),
            ),
            row(
                "full-port sweep, 0% loss",
                "masscan --rate 2M",
                json!({"probes_per_s_wall": 150_000.0, "wall_s": 40.0, "recall_pct": 98.0}),
            ),
        ];
        let g = goals(&rows);
        assert_eq!(g[0].met, Some(true), "{}", g[0].measured);
        // No unanswered runs, no loss runs and no memory row: not met.
        assert_eq!(g[1].met, Some(false), "{}", g[1].measured);
        assert_eq!(g[2].met, None);
        assert_eq!(g[3].met, Some(true), "{}", g[3].measured);
        assert_eq!(g[4].met, Some(true), "{}", g[4].measured);
        assert_eq!(g[5].met, Some(true));
        assert!(g[6..].iter().all(|g| g.met == Some(false)));
    }

    #[test]
    fn the_daemon_scenario_expects_an_event_per_odd_open_port_and_some_ports_down() {
        let addresses = block_addresses("198.18.0.0/30").unwrap();
        assert_eq!(addresses.len(), 4);
        let ip = |last: u8| IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, last));
        let truth: BTreeSet<(IpAddr, u16)> =
            [(ip(0), 22), (ip(0), 23), (ip(1), 80), (ip(3), 1024)].into();
        let m = daemon_monitors(&addresses, &truth, "[scan]\n");
        assert_eq!(m.monitors, 4);
        let want: BTreeSet<(String, String, u16)> = [
            ("unexpected_port_open", "h-00000", 23),
            ("expected_port_down", "h-00000", 1024),
        ]
        .iter()
        .map(|(k, n, p)| (k.to_string(), n.to_string(), *p))
        .collect();
        assert_eq!(m.events, want);
        assert!(
            m.config
                .contains("name = \"h-00000\"\nhost = \"198.18.0.0\"\nexpected_open = [22, 1024]")
        );
        assert!(
            m.config
                .contains("host = \"198.18.0.1\"\nexpected_open = [80]")
        );
        assert!(
            m.config
                .contains("host = \"198.18.0.3\"\nexpected_open = [1024]")
        );
    }

    #[test]
    fn scale_goals_are_met_only_at_their_sizes() {
        let row = |scenario: &'static str, tool: &str, figures: Value| Row {
            scenario,
            tool: tool.into(),
            figures,
        };
        let scale = |monitors: u32| {
            vec![
                row(
                    SCALE,
                    "palisade daemon",
                    json!({"monitors": monitors, "start_up_s": 12.0, "plan_s": 2.0,
                           "evaluate_s": 6.0, "peak_rss_mib": 1500.0, "events": 10.0,
                           "deviations": 10.0, "events_exact": true}),
                ),
                row(
                    STATUS,
                    "palisade status",
                    json!({"monitors": 65_536, "median_s": 0.5}),
                ),
                row(
                    DAEMON,
                    "palisade run --once",
                    json!({"monitors": 65_536, "wall_s": 100.0, "peak_rss_mib": 100.0,
                           "umem_mib": 16.0, "events": 5, "events_expected": 5, "events_exact": true}),
                ),
                row(
                    DAEMON,
                    "palisade scan (the same targets and ports)",
                    json!({"wall_s": 95.0}),
                ),
            ]
        };
        let goals = scale_goals(&scale(SCALE_MONITORS));
        assert!(
            goals.iter().all(|g| g.met == Some(true)),
            "{:?}",
            goals
                .iter()
                .map(|g| (&g.goal, &g.measured, g.met))
                .collect::<Vec<_>>()
        );
        // A smaller run: its figures, not met.
        let goals = scale_goals(&scale(20_000));
        let start_up = goals.iter().find(|g| g.goal.contains("start-up")).unwrap();
        assert_eq!(start_up.met, Some(false));
        assert_eq!(start_up.measured, "12.00 s (20000 monitors)");
        // Too slow beside the plain scan: not met.
        let mut rows = scale(SCALE_MONITORS);
        rows[2].figures["wall_s"] = json!(120.0);
        assert_eq!(scale_goals(&rows)[0].met, Some(false));
        assert!(scale_goals(&[]).iter().all(|g| g.met == Some(false)));
    }

    #[test]
    fn adaptive_retry_goals_compare_with_the_default_of_this_run() {
        let row = |scenario: &'static str, tool: &str, figures: Value| Row {
            scenario,
            tool: tool.into(),
            figures,
        };
        let goal = |rows: &[Row], name: &str| -> (Option<bool>, String) {
            let g = goals(rows);
            let g = g.iter().find(|g| g.goal.starts_with(name)).unwrap();
            (g.met, g.measured.clone())
        };
        let default = "palisade --rate 100M";
        let mut rows = vec![
            row(
                "full-port sweep, 5% loss",
                default,
                json!({"recall_pct": 99.6, "probes_sent": 1_050_000.0}),
            ),
            row(
                "full-port sweep, 5% loss",
                ADAPTIVE,
                json!({"recall_pct": 100.0, "probes_sent": 1_055_000.0}),
            ),
            row(
                "full-port sweep, 0% loss",
                default,
                json!({"recall_pct": 100.0, "probes_sent": 1_000_000.0}),
            ),
            row(
                "full-port sweep, 0% loss",
                ADAPTIVE,
                json!({"recall_pct": 100.0, "probes_sent": 1_000_000.0, "extra_retries": 0.0}),
            ),
        ];
        assert_eq!(goal(&rows, "recall >= 99.99% at 5% loss").0, Some(true));
        let (met, measured) = goal(&rows, "adaptive retries at 5% loss");
        assert_eq!(met, Some(true));
        assert_eq!(measured, "1055000 / 1050000 = 1.00x");
        assert_eq!(goal(&rows, "adaptive retries at 0% loss").0, Some(true));
        // One extra probe without loss, too many at 5%, a miss: not met.
        rows[3].figures["extra_retries"] = json!(1.0);
        rows[1].figures["probes_sent"] = json!(1_400_000.0);
        rows[1].figures["recall_pct"] = json!(99.98);
        for name in [
            "recall >= 99.99% at 5% loss",
            "adaptive retries at 5% loss",
            "adaptive retries at 0% loss",
        ] {
            assert_eq!(goal(&rows, name).0, Some(false), "{name}");
        }
        // Missing rows: not met.
        assert_eq!(goal(&[], "adaptive retries at 0% loss").0, Some(false));
    }

    #[test]
    fn event_goals_take_the_highest_rate_kept_up_and_compare_with_batches() {
        let row = |tool: &str, figures: Value| Row {
            scenario: EVENTS,
            tool: tool.into(),
            figures,
        };
        let goal = |rows: &[Row], name: &str| {
            let g = goals(rows);
            let g = g.iter().find(|g| g.goal.starts_with(name)).unwrap();
            (g.met, g.measured.clone())
        };
        let mut rows = vec![
            row(
                "events/batches_at_20k_per_s",
                json!({"events_per_s": 19_990.0, "p99_ms": 4.0}),
            ),
            row(
                "events/at_20k_per_s",
                json!({"events_per_s": 19_990.0, "p99_ms": 4.2}),
            ),
            row(
                "events/max_sustained",
                json!({"events_per_s": 69_500.0, "p99_ms": 18.3}),
            ),
        ];
        let rate = "JetStream events: >= 50,000";
        let same = "JetStream events: p99 commit->ack at 20,000";
        assert_eq!(
            goal(&rows, rate),
            (Some(true), "69500 events/s, p99 18.30 ms".into())
        );
        assert_eq!(
            goal(&rows, same),
            (Some(true), "4.20 ms / 4.00 ms = 1.05x".into())
        );
        rows[1].figures["p99_ms"] = json!(4.5);
        assert_eq!(goal(&rows, same).0, Some(false));
        rows[2].figures["p99_ms"] = json!(51.0);
        assert_eq!(goal(&rows, rate).0, Some(false));
        rows[2].figures = json!({"events_per_s": 45_000.0, "p99_ms": 20.0});
        assert_eq!(goal(&rows, rate).0, Some(false));
        // No rate kept up with: not met.
        rows.pop();
        assert_eq!(goal(&rows, rate).0, Some(false));
    }
}
