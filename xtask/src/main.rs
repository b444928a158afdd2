//! `cargo xtask`: the project's chores, with nothing but cargo to start them.
//!
//! * `setup`  installs the system packages the project needs (idempotent).
//! * `ci`     runs setup, `cargo fmt --check`, clippy with `-D warnings`, and every test.
//! * `demo`   the main job on a fresh machine: setup, build, and show Palisade at work.
//! * `bench`  the criterion benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod bench;

/// Debian packages the project needs, and why.
const PACKAGES: &[(&str, &str)] = &[
    ("clang-19", "compiles the eBPF programs in ebpf/"),
    ("llvm-19", "llvm-objdump/strip for inspecting eBPF objects"),
    (
        "libbpf-dev",
        "bpf_helpers.h and friends for the eBPF programs",
    ),
    (
        "linux-libc-dev",
        "kernel UAPI headers (linux/bpf.h, if_xdp.h)",
    ),
    ("iproute2", "network namespaces and veth for testbeds"),
    ("nftables", "loss and firewall simulation in testbeds"),
    ("nats-server", "the event bus the outputs publish to"),
    ("masscan", "side-by-side benchmarks"),
    ("zmap", "side-by-side benchmarks"),
    ("nmap", "side-by-side benchmarks"),
    (
        "ethtool",
        "GRO on testbed veths so they receive XDP_TX frames",
    ),
    (
        "prometheus-alertmanager",
        "the Alertmanager the alert consumer's tests post to",
    ),
];

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup   install the system packages the project needs (apt-get, idempotent)
  ci      setup, cargo fmt --check, clippy -D warnings, every test, bench --quick
  demo    the main job on a fresh machine: setup, build, scan a testbed
  bench   every benchmark side by side on a testbed -> benches/RESULTS.md
          (--quick: seconds; --block CIDR: sweep a smaller block than the /24)
  compare side by side on one testbed: bare AF_XDP transmit, palisade scan, masscan
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("ci") => ci(),
        Some("demo") => demo(),
        Some("bench") => bench::bench(&args[1..]),
        Some("compare") => compare(),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprint!("xtask: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it; fails on non-zero exit.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot start `{program}`"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub(crate) fn setup() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(p, _)| !installed(p))
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        eprintln!(
            "xtask setup: all {} system packages already installed, nothing to do",
            PACKAGES.len()
        );
        return Ok(());
    }
    for (p, why) in PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
        eprintln!("xtask setup: will install {p}: {why}");
    }
    if !nix_is_root() {
        bail!(
            "installing {} needs root: run `sudo cargo xtask setup` or install them with apt-get",
            missing.join(" ")
        );
    }
    run("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    let status = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot start apt-get")?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", missing.join(" "));
    }
    eprintln!("xtask setup: installed {}", missing.join(" "));
    Ok(())
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn ci() -> Result<()> {
    setup()?;
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run("cargo", &["test", "--workspace", "--all-targets"])?;
    // Doc tests are not part of --all-targets.
    run("cargo", &["test", "--workspace", "--doc"])?;
    // The benchmarks, in seconds, so they never rot: they must run and give
    // sane figures (not fast ones).
    bench::bench(&["--quick".to_string()])?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

fn demo() -> Result<()> {
    use palisade_sim::testbed::{Testbed, TestbedConfig};
    use std::net::IpAddr;

    setup()?;
    run("cargo", &["build", "--release", "-p", "palisade"])?;
    let bin = root().join("target/release/palisade");
    let bin = bin.to_str().context("non-UTF-8 path")?;

    say("building a testbed: network namespaces joined by veth, 198.18.0.0/24 and 2001:2::/64");
    let mut tb = Testbed::new(TestbedConfig {
        targets_v4: vec!["198.18.0.2".parse()?, "198.18.0.3".parse()?],
        targets_v6: vec!["2001:2::2".parse()?],
        tx_queues: 1,
    })
    .context("cannot build the testbed (needs root)")?;
    let web: IpAddr = "198.18.0.2".parse()?;
    let services: [(&str, &[u16]); 3] = [
        ("198.18.0.2", &[22, 80]),
        ("198.18.0.3", &[25, 587, 993]),
        ("2001:2::2", &[22, 443]),
    ];
    let mut listen = Vec::new();
    for (ip, ports) in services {
        let ip: IpAddr = ip.parse()?;
        listen.extend(ports.iter().map(|&p| (ip, p)));
    }
    tb.listen(&listen).context("cannot start the listeners")?;
    let web_443 = tb.listen(&[(web, 443)])?;
    say(
        "198.18.0.2 (web-1) listens on 22, 80, 443; 198.18.0.3 on 25, 587, 993; 2001:2::2 on 22, 443",
    );

    say("1. palisade scan: all 65,535 TCP ports of the three hosts at 1 Mpps");
    let scan = |tb: &Testbed, args: &[&str]| -> Result<()> {
        let status = tb
            .in_scanner(bin)
            .args(args)
            .status()
            .context("cannot run palisade")?;
        if !status.success() {
            bail!("palisade {} failed ({status})", args.first().unwrap_or(&""));
        }
        Ok(())
    };
    scan(
        &tb,
        &[
            "scan",
            "198.18.0.2-198.18.0.3",
            "2001:2::2",
            "-p",
            "-",
            "--rate",
            "1000000",
            "--format",
            "text",
        ],
    )?;

    say("2. palisade run: monitoring web-1, which should have exactly 22, 80 and 443 open");
    let dir = std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[scan]\nrate = 500000\nwait = \"500ms\"\n\n[store]\npath = \"{}\"\n\n\
             [[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\nexpected_open = [22, 80, 443]\n\
             every = \"12h\"\nconfirm = 2\nrecheck = \"off\"\n",
            dir.join("palisade.db").display()
        ),
    )?;
    let cfg = config.to_str().context("non-UTF-8 path")?;
    let sweep = |tb: &Testbed, what: &str| -> Result<()> {
        say(what);
        scan(tb, &["run", "-c", cfg, "--once", "--events", "-"])
    };
    let result = (|| -> Result<()> {
        sweep(
            &tb,
            "sweep 1 (baseline): everything as expected, so no events",
        )?;
        tb.stop_listener(web_443)?;
        let redis = tb.listen(&[(web, 6379)])?;
        say("change: 443 stops listening on web-1, and Redis (6379) opens");
        sweep(
            &tb,
            "sweep 2: both deviations seen once: not yet confirmed, no alert",
        )?;
        sweep(
            &tb,
            "sweep 3: seen twice in a row: expected_port_down 443, unexpected_port_open 6379 (high)",
        )?;
        tb.stop_listener(redis)?;
        tb.listen(&[(web, 443)])?;
        say("fix: 443 listens again, Redis is gone");
        sweep(
            &tb,
            "sweep 4: port_resolved for both, then monitor_resolved",
        )?;
        say("palisade status");
        scan(&tb, &["status", "-c", cfg])?;
        say("palisade history web-1");
        scan(&tb, &["history", "web-1", "-c", cfg])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    tb.teardown().context("cannot tear the testbed down")?;
    result?;
    say("testbed torn down");
    Ok(())
}

fn say(what: &str) {
    eprintln!("\n==> {what}");
}

/// Runs `cmd` for at most `limit` and returns (stdout, stderr, seconds),
/// failing on a non-zero exit or on time-out (the command is then killed).
pub(crate) fn timed_limit(
    mut cmd: Command,
    limit: std::time::Duration,
) -> Result<(String, String, f64)> {
    use std::io::Read;
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot start a benchmark command")?;
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
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {stderr}");
    }
    Ok((stdout, stderr, secs))
}

/// The transmit ceiling, Palisade's scan rate and masscan's best rate, side
/// by side on one testbed: 3 hosts x 65,535 ports, real kernel listeners.
fn compare() -> Result<()> {
    use palisade_sim::testbed::{Testbed, TestbedConfig};
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    setup()?;
    run("cargo", &["build", "--release", "-p", "palisade"])?;
    let bin = root().join("target/release/palisade");
    let bin = bin.to_str().context("non-UTF-8 path")?;
    let hosts = ["198.18.0.2", "198.18.0.3", "198.18.0.4"];
    let mut tb = Testbed::new(TestbedConfig {
        targets_v4: hosts.iter().map(|h| h.parse()).collect::<Result<_, _>>()?,
        targets_v6: vec![],
        tx_queues: 1,
    })
    .context("cannot build the testbed (needs root)")?;
    let ports = [1u16, 22, 80, 443, 3306, 6379, 8080, 65535];
    let mut truth = BTreeSet::new();
    for h in hosts {
        for p in ports {
            truth.insert((h.parse::<IpAddr>()?, p));
        }
    }
    tb.listen(&truth.iter().copied().collect::<Vec<_>>())?;
    let probes = hosts.len() as f64 * 65_535.0;
    let recall = |found: &BTreeSet<(IpAddr, u16)>| {
        100.0 * found.intersection(&truth).count() as f64 / truth.len() as f64
    };
    let mut rows: Vec<String> = Vec::new();

    let limit = std::time::Duration::from_secs(120);
    let targets = "198.18.0.2-198.18.0.4";

    // 1. Bare AF_XDP transmit loop, target dropping everything at ingress.
    tb.set_loss(1000)?;
    let raw_drop = bench::tx_bench(&tb, bin, &[], "2000000", limit)?;
    rows.push(format!(
        "| bare AF_XDP transmit loop (target drops) | {raw_drop:.0} | - |"
    ));
    // 2. Palisade's scan, target dropping everything (same conditions).
    let silent = bench::palisade_scan(
        &tb,
        bin,
        targets,
        "1-65535",
        100_000_000,
        &["--retries", "0"],
        limit,
    )?;
    let scan_drop = silent.rate.context("no rate in the scan summary")?;
    rows.push(format!(
        "| palisade scan (target drops) | {scan_drop:.0} | - |"
    ));
    tb.set_loss(0)?;
    // 3. The same with the target's kernel answering every probe.
    let raw_answer = bench::tx_bench(&tb, bin, &[], "1000000", limit)?;
    rows.push(format!(
        "| bare AF_XDP transmit loop (target answers) | {raw_answer:.0} | - |"
    ));
    let answered = bench::palisade_scan(&tb, bin, targets, "1-65535", 100_000_000, &[], limit)?;
    let scan_answer = answered.rate.context("no rate in the scan summary")?;
    let scan_wall = probes / (answered.seconds - 1.0).max(1e-3);
    rows.push(format!(
        "| palisade scan (target answers) | {scan_answer:.0} | {:.1}% |",
        recall(&answered.found)
    ));
    rows.push(format!(
        "| palisade scan (target answers; wall time less its 1 s wait, as for masscan) | {scan_wall:.0} | {:.1}% |",
        recall(&answered.found)
    ));
    // 4. masscan at its best rate, the target answering: its throughput on
    // this testbed varies a lot from run to run, so try several rates and
    // keep the best wall time.
    let mut best: Option<(f64, u64, f64)> = None;
    for rate in [250_000, 500_000, 1_000_000, 2_000_000] {
        let m = match bench::masscan(
            &tb,
            targets,
            "1-65535",
            rate,
            std::time::Duration::from_secs(60),
        ) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("xtask compare: masscan --rate {rate}: {e:#}");
                continue;
            }
        };
        let pps = probes / (m.seconds - 1.0).max(1e-3);
        eprintln!(
            "xtask compare: masscan --rate {rate}: {:.2} s, {pps:.0} probes/s, recall {:.1}%",
            m.seconds,
            recall(&m.found)
        );
        if best.is_none_or(|b| pps > b.0) {
            best = Some((pps, rate, recall(&m.found)));
        }
    }
    let (masscan, masscan_rate, masscan_recall) = best.context("masscan failed at every rate")?;
    rows.push(format!(
        "| masscan 1.3.2, best of --rate 250k..2M (--rate {masscan_rate}; wall time less its 1 s wait) | {masscan:.0} | {masscan_recall:.1}% |"
    ));
    tb.teardown()?;

    println!("\n3 hosts x 65,535 ports on a veth testbed (AF_XDP copy mode), one run:\n");
    println!("| what | probes/s | recall |");
    println!("| --- | --- | --- |");
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\npalisade scan / bare transmit: {:.0}% (target drops), {:.0}% (target answers); palisade / masscan (wall time): {:.2}x",
        100.0 * scan_drop / raw_drop,
        100.0 * scan_answer / raw_answer,
        scan_wall / masscan
    );
    Ok(())
}

/// The "N probes/s while sending" figure of a scan summary.
pub(crate) fn summary_rate(stderr: &str) -> Result<f64> {
    stderr
        .split(" probes/s while sending")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no rate in the scan summary: {stderr}"))
}
