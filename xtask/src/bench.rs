//! `cargo xtask bench [--quick]`: every benchmark, side by side on one
//! testbed, checked against the ground truth, written to
//! `benches/RESULTS.md` and `benches/results.json`.
//!
//! The fleet is `palisade fleet`: an XDP program on the target side of the
//! testbed that answers for a whole address block from a keyed-hash ground
//! truth (`engine/src/fleet.rs`), so the targets are never the bottleneck
//! the way a kernel's TCP stack is.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use palisade_testbed::{Testbed, TestbedConfig};
use serde_json::{Value, json};

use crate::{root, run, setup, timed_limit};

/// One scenario's figures, for the table and the JSON.
struct Row {
    scenario: &'static str,
    tool: String,
    figures: Value,
}

/// The fleet's settings for one scenario.
struct Fleet {
    block: &'static str,
    density_ppm: u32,
    loss_permille: u32,
}

/// A running `palisade fleet` in the target namespace.
struct FleetProcess {
    child: Child,
}

impl FleetProcess {
    fn start(tb: &Testbed, bin: &str, f: &Fleet) -> Result<FleetProcess> {
        let mut cmd = tb.in_target(bin);
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
            .context("cannot start palisade fleet")?;
        let mut line = String::new();
        let out = child.stdout.as_mut().context("fleet stdout")?;
        BufReader::new(out).read_line(&mut line)?;
        if !line.starts_with("fleet ready") {
            let _ = child.kill();
            bail!("palisade fleet did not start: {line}");
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

/// The ground truth of the fleet for `targets` x `ports`, from the engine.
fn truth(bin: &str, f: &Fleet, targets: &str, ports: &str) -> Result<BTreeSet<(IpAddr, u16)>> {
    let out = Command::new(bin)
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
        .context("palisade fleet-truth")?;
    if !out.status.success() {
        bail!(
            "palisade fleet-truth failed: {}",
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
struct Outcome {
    found: BTreeSet<(IpAddr, u16)>,
    seconds: f64,
    /// The tool's own sending rate where it reports one.
    rate: Option<f64>,
}

fn palisade_scan(
    tb: &Testbed,
    bin: &str,
    targets: &str,
    ports: &str,
    rate: u64,
    limit: Duration,
) -> Result<Outcome> {
    let mut cmd = tb.in_scanner(bin);
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
    let (out, err, secs) = timed_limit(cmd, limit)?;
    let found = out
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            Some((v["ip"].as_str()?.parse().ok()?, v["port"].as_u64()? as u16))
        })
        .collect();
    let rate = crate::summary_rate(&err).ok();
    Ok(Outcome {
        found,
        seconds: secs,
        rate,
    })
}

fn masscan(
    tb: &Testbed,
    targets: &str,
    ports: &str,
    rate: u64,
    limit: Duration,
) -> Result<Outcome> {
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
    Ok(Outcome {
        found,
        seconds: secs,
        rate: None,
    })
}

fn zmap(tb: &Testbed, targets: &str, port: u16, rate: u64, limit: Duration) -> Result<Outcome> {
    // zmap's default blacklist excludes the benchmarking range: an empty one.
    let blacklist = std::env::temp_dir().join(format!("palisade-zmap-{}.conf", std::process::id()));
    std::fs::write(&blacklist, "\n")?;
    let mut cmd = tb.in_scanner("zmap");
    cmd.args([
        "-p",
        &port.to_string(),
        "-r",
        &rate.to_string(),
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
        "-q",
    ]);
    cmd.args(["-b", blacklist.to_str().context("path")?, targets]);
    let (out, _, secs) = timed_limit(cmd, limit)?;
    let found = out
        .lines()
        .filter_map(|l| Some((l.trim().parse().ok()?, port)))
        .collect();
    Ok(Outcome {
        found,
        seconds: secs,
        rate: None,
    })
}

fn nmap(tb: &Testbed, targets: &str, ports: &str, limit: Duration) -> Result<Outcome> {
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
    Ok(Outcome {
        found,
        seconds: secs,
        rate: None,
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

pub fn bench(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    setup()?;
    run("cargo", &["build", "--release", "-p", "palisade"])?;
    let bin = root().join("target/release/palisade");
    let bin = bin.to_str().context("non-UTF-8 path")?.to_string();
    let mut rows: Vec<Row> = Vec::new();

    // Per-probe cost and the event pipeline (no testbed).
    let mut probe_args = vec!["bench", "-p", "palisade-benches", "--bench", "probe", "--"];
    if quick {
        probe_args.extend(["--warm-up-time", "0.5", "--measurement-time", "1"]);
    }
    run("cargo", &probe_args)?;
    for name in ["ipv4_slash24_all_ports", "ipv6_256_hosts_all_ports"] {
        let path = root().join(format!("target/criterion/probe/{name}/new/estimates.json"));
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
    let mut ev_args = vec!["bench", "-p", "palisade-benches", "--bench", "events", "--"];
    if quick {
        ev_args.push("--quick");
    }
    let (out, _, _) = timed_limit(
        {
            let mut c = Command::new("cargo");
            c.args(&ev_args).current_dir(root());
            c
        },
        Duration::from_secs(600),
    )?;
    for line in out.lines().filter(|l| l.starts_with("events/")) {
        let num = |key: &str| -> Option<f64> {
            line.split(key)
                .nth(1)?
                .trim()
                .split([' ', ';'])
                .next()?
                .parse()
                .ok()
        };
        rows.push(Row {
            scenario: "events through JetStream (acked)",
            tool: line.split(':').next().unwrap_or("").to_string(),
            figures: json!({
                "events_per_s": num("= "),
                "p50_ms": num("p50 "),
                "p99_ms": num("p99 "),
            }),
        });
    }

    // The testbed with the simulated fleet.
    let tb = Testbed::new(TestbedConfig {
        targets_v4: vec!["198.18.0.2".parse()?],
        targets_v6: vec![],
        tx_queues: 1,
    })
    .context("cannot build the testbed (needs root)")?;
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
    // `--block CIDR` sweeps a smaller block than the /24 of the full run.
    let block_arg = args
        .iter()
        .position(|a| a == "--block")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let sweep_block: &'static str = match (block_arg, quick) {
        (Some(b), _) => Box::leak(b.into_boxed_str()),
        (None, true) => "198.18.0.0/28",
        (None, false) => "198.18.0.0/24",
    };
    let ports_all = if quick { "1-4096" } else { "1-65535" };
    let probes = |block: &str, ports: &str| -> f64 {
        let hosts = 1u64
            << (32
                - block
                    .rsplit('/')
                    .next()
                    .and_then(|p| p.parse::<u32>().ok())
                    .unwrap_or(32));
        let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
        hosts as f64 * (hi.parse::<f64>().unwrap_or(1.0) - lo.parse::<f64>().unwrap_or(1.0) + 1.0)
    };
    let limit = Duration::from_secs(if quick { 120 } else { 1800 });

    // 1. Transmit ceiling: the fleet drops everything.
    {
        let drop_all = Fleet {
            block: sweep_block,
            density_ppm: 0,
            loss_permille: 1000,
        };
        let _fleet = FleetProcess::start(&tb, &bin, &drop_all)?;
        let mut cmd = tb.in_scanner(&bin);
        cmd.args([
            "tx-bench",
            "--interface",
            tb.scanner_if(),
            "--gateway-mac",
            &tb.target_mac(),
        ]);
        cmd.args(["--source-ip", "198.18.0.1", "--target-ip", "198.18.0.2"]);
        cmd.args(["--count", if quick { "300000" } else { "3000000" }]);
        let (out, _, _) = timed_limit(cmd, limit)?;
        let v: Value = serde_json::from_str(out.trim()).context("tx-bench output")?;
        rows.push(Row {
            scenario: "transmit ceiling",
            tool: "bare AF_XDP loop".into(),
            figures: json!({"pps": v["pps"]}),
        });
    }

    // 2. Full-port sweep and loss, answered by the fleet.
    for loss in [0u32, 10, 50] {
        let fleet = Fleet {
            block: sweep_block,
            density_ppm: 200,
            loss_permille: loss,
        };
        let truth = truth(&bin, &fleet, sweep_block, ports_all)?;
        let _fleet = FleetProcess::start(&tb, &bin, &fleet)?;
        let scenario = match loss {
            0 => "full-port sweep, 0% loss",
            10 => "full-port sweep, 1% loss",
            _ => "full-port sweep, 5% loss",
        };
        let mut tools: Vec<(String, Result<Outcome>)> = vec![(
            "palisade --rate 100M".into(),
            palisade_scan(&tb, &bin, sweep_block, ports_all, 100_000_000, limit),
        )];
        if loss == 0 {
            tools.push((
                "palisade --rate 250k".into(),
                palisade_scan(&tb, &bin, sweep_block, ports_all, 250_000, limit),
            ));
            tools.push((
                "masscan --rate 250k".into(),
                masscan(&tb, sweep_block, ports_all, 250_000, limit),
            ));
            tools.push((
                "masscan --rate 2M".into(),
                masscan(&tb, sweep_block, ports_all, 2_000_000, limit),
            ));
            tools.push((
                "zmap -r 1M (port 80 only)".into(),
                zmap(&tb, sweep_block, 80, 1_000_000, limit),
            ));
            tools.push((
                "nmap -T5 (4 hosts)".into(),
                nmap(&tb, "198.18.0.4/30", ports_all, limit),
            ));
        } else {
            tools.push((
                "masscan --rate 2M".into(),
                masscan(&tb, sweep_block, ports_all, 2_000_000, limit),
            ));
        }
        for (tool, outcome) in tools {
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("xtask bench: {tool}: {e:#}");
                    rows.push(Row {
                        scenario,
                        tool,
                        figures: json!({"error": format!("{e:#}")}),
                    });
                    continue;
                }
            };
            let (scope, truth_here): (f64, BTreeSet<(IpAddr, u16)>) = if tool.starts_with("zmap") {
                (
                    probes(sweep_block, "80"),
                    truth.iter().filter(|t| t.1 == 80).copied().collect(),
                )
            } else if tool.starts_with("nmap") {
                let few: BTreeSet<(IpAddr, u16)> = truth
                    .iter()
                    .filter(
                        |(ip, _)| matches!(ip, IpAddr::V4(a) if (4..8).contains(&a.octets()[3])),
                    )
                    .copied()
                    .collect();
                (probes("198.18.0.4/30", ports_all), few)
            } else {
                (probes(sweep_block, ports_all), truth.clone())
            };
            let (recall, precision) = recall_precision(&outcome.found, &truth_here);
            rows.push(Row {
                scenario,
                tool,
                figures: json!({
                    "wall_s": outcome.seconds,
                    "probes": scope,
                    "probes_per_s_wall": scope / outcome.seconds.max(1e-3),
                    "probes_per_s_sending": outcome.rate,
                    "recall_pct": recall,
                    "precision_pct": precision,
                    "truth": truth_here.len(),
                }),
            });
        }
    }

    // 3. Memory: a /16 x 65,535 sweep (the first seconds of it).
    {
        let fleet = Fleet {
            block: "198.18.0.0/16",
            density_ppm: 100,
            loss_permille: 0,
        };
        let _fleet = FleetProcess::start(&tb, &bin, &fleet)?;
        let secs = if quick { 3 } else { 20 };
        let mut child = tb
            .in_scanner(&bin)
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
            figures: json!({"peak_rss_mib": kib as f64 / 1024.0, "umem_mib": 8.0}),
        });
    }
    let _ = trickle.kill();
    let _ = trickle.wait();
    tb.teardown()?;
    write_results(&rows, quick)
}

fn write_results(rows: &[Row], quick: bool) -> Result<()> {
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
    let json = json!({
        "date": date,
        "kernel": kernel.trim(),
        "cpu": cpu,
        "cores": cores,
        "quick": quick,
        "rows": rows.iter().map(|r| json!({"scenario": r.scenario, "tool": r.tool, "figures": r.figures})).collect::<Vec<_>>(),
    });
    let mut md = format!(
        "# Benchmark results\n\nWritten by `cargo xtask bench{}` on {date}: {cpu}, {cores} cores, Linux {}.\n\
         Testbed: two network namespaces joined by veth (AF_XDP copy mode), the fleet simulated by\n\
         `palisade fleet` (XDP) answering from a keyed-hash ground truth.\n\n\
         | scenario | tool | figures |\n| --- | --- | --- |\n",
        if quick { " --quick" } else { "" },
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
    let dir = root().join("benches");
    let (md_name, json_name) = if quick {
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
