//! `palisade-sim`: the simulators that tests, benchmarks and the demo run as
//! processes (the `palisade` binary ships none of them).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad arguments.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use palisade_core::probe::{PortSet, TargetSet};

#[derive(Debug, Parser)]
#[command(
    name = "palisade-sim",
    version,
    about = "Simulators for Palisade's tests and benchmarks: a fleet that answers SYNs from XDP, and a bare AF_XDP transmit loop",
    after_help = "Exit codes: 0 success, 1 runtime failure, 2 bad arguments."
)]
struct SimCli {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Simulate a fleet: an XDP program on IF answers ARP, NDP and TCP SYNs
    /// for whole address blocks (see ebpf/responder.bpf.c).
    Fleet(FleetArgs),
    /// Print the ground truth of a simulated fleet: every (address, port)
    /// of TARGETS x PORTS that answers SYN-ACK, one `ip:port` per line.
    FleetTruth(FleetTruthArgs),
    /// A bare AF_XDP transmit loop (no scanning logic) cycling through 4096
    /// prebuilt SYNs (one target, 4096 ports: as many flows as a scan
    /// spreads over the queues), for the transmit ceiling of an interface.
    TxBench(TxBenchArgs),
}

#[derive(Debug, Args)]
struct TxBenchArgs {
    /// Interface to send on.
    #[arg(long, value_name = "IF")]
    interface: String,
    /// Destination MAC of the frames.
    #[arg(long, value_name = "MAC")]
    gateway_mac: palisade_core::wire::MacAddr,
    /// Source and destination IPv4 addresses of the frames.
    #[arg(long, value_name = "IP")]
    source_ip: std::net::Ipv4Addr,
    #[arg(long, value_name = "IP")]
    target_ip: std::net::Ipv4Addr,
    /// Frames to send.
    #[arg(long, value_name = "N", default_value_t = 2_000_000)]
    count: u64,
    /// Transmit queues to send on, one thread each (default: as `palisade
    /// scan` would, one per queue of the interface up to one per core).
    #[arg(long, value_name = "N")]
    queues: Option<usize>,
    /// Take the answers the way `palisade scan` does, with no scanning logic:
    /// attach the reply filter and count what it hands up (without this, the
    /// answers go to the kernel, or nowhere).
    #[arg(long)]
    replies: bool,
}

#[derive(Debug, Args)]
struct FleetTruthArgs {
    /// The fleet's seed (as given to `palisade-sim fleet`).
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u32,
    /// Open ports per million (host, port) pairs.
    #[arg(long, value_name = "N", default_value_t = 0)]
    density_ppm: u32,
    /// The fleet's block (kept for symmetry with `palisade-sim fleet`; the truth
    /// is computed for --targets).
    #[arg(long, value_name = "CIDR")]
    block: Vec<String>,
    /// Which hosts.
    #[arg(long, value_name = "LIST")]
    targets: String,
    /// Which ports.
    #[arg(short = 'p', long = "ports", value_name = "PORTS")]
    ports: String,
}

/// `palisade-sim fleet`: the simulated fleet's knobs (see `palisade_sim::fleet`).
#[derive(Debug, Args)]
struct FleetArgs {
    /// Interface to attach to (the target side of a testbed veth).
    #[arg(long, value_name = "IF")]
    interface: String,
    /// Address block to answer for: one IPv4 block of at most a /16, one IPv6
    /// block of at most a /112.
    #[arg(long, value_name = "CIDR", required = true)]
    block: Vec<String>,
    /// Key of the fleet's hashes (which ports are open, which hosts are which).
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u32,
    /// Open ports per million (host, port) pairs.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    density_ppm: u32,
    /// TCP answers dropped at random, per mille.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    loss_permille: u32,
    /// Hosts per mille that answer ARP/NDP but no SYN.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    silent_permille: u32,
    /// Hosts per mille that answer open ports only (no RST on closed ones).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    firewalled_permille: u32,
    /// Hosts per mille that answer SYN-ACK on every port.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    synproxy_permille: u32,
    /// TCP answers per second per host (0: no limit).
    #[arg(long, value_name = "PPS", default_value_t = 0)]
    rate_limit: u32,
    /// A pair that is always open (not on silent hosts): 198.18.0.2:22 or
    /// [2001:2::2]:443.
    #[arg(long, value_name = "IP:PORT")]
    open: Vec<std::net::SocketAddr>,
    /// A host that drops ICMP: it never answers echo, and answers TCP as its
    /// class says (repeat for more; at most 1024).
    #[arg(long, value_name = "IP")]
    drops_icmp: Vec<std::net::IpAddr>,
    /// Make every TCP answer of host IP defective, as an on-path forger
    /// would: ip-checksum (bad IPv4 header checksum), tcp-checksum,
    /// fragment (IPv4 more-fragments set), data-offset (TCP data offset past
    /// the IP total length) or vlan (an 802.1Q tag, VLAN 100). ip-checksum
    /// and fragment are IPv4 only. Repeat for more hosts (at most 1024).
    #[arg(long, value_name = "IP=DEFECT")]
    forge: Vec<String>,
    /// Count the SYNs each address receives, with the time of the first and
    /// the last; printed on exit as `hosts` (address, syns, first_ns,
    /// last_ns, rate in SYNs per second).
    #[arg(long)]
    count_per_host: bool,
    /// Stop after SECS seconds (default: at SIGINT or SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// XDP mode: generic, driver, or auto (driver, falling back to generic).
    /// On veth, what driver mode sends back (XDP_TX) only reaches the peer
    /// while the peer has a native XDP program attached (`palisade scan` has
    /// one, but only after resolving its next hop: pass it --gateway-mac);
    /// generic mode answers any scanner, ARP and NDP included.
    #[arg(long, value_name = "MODE", default_value = "generic",
          value_parser = ["generic", "driver", "auto"])]
    xdp_mode: String,
}

/// An error that is the user's to fix: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SimUsageError(String);

fn tx_bench(args: &TxBenchArgs) -> Result<ExitCode> {
    let report = palisade_sim::txbench::run(&palisade_sim::txbench::TxBenchOptions {
        interface: args.interface.clone(),
        gateway_mac: args.gateway_mac,
        source_ip: args.source_ip,
        target_ip: args.target_ip,
        count: args.count,
        queues: args.queues,
        replies: args.replies,
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// Parses `--block`: an address and a prefix length (host bits are cleared).
fn parse_block(text: &str) -> Result<(std::net::IpAddr, u8), SimUsageError> {
    let bad = |why: &str| SimUsageError(format!("--block: bad value `{text}`: {why}"));
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| bad("give a CIDR block like 198.18.0.0/24"))?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad("not an address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
    let (min, max) = match addr {
        std::net::IpAddr::V4(_) => (palisade_sim::responder::MIN_PREFIX_V4, 32),
        std::net::IpAddr::V6(_) => (palisade_sim::responder::MIN_PREFIX_V6, 128),
    };
    if !(min..=max).contains(&prefix) {
        return Err(bad(&format!("the prefix length must be {min} to {max}")));
    }
    if !palisade_sim::responder::benchmarking_block(addr, prefix) {
        return Err(bad(
            "the fleet only answers inside 198.18.0.0/15 and 2001:2::/48",
        ));
    }
    Ok((addr, prefix))
}

/// Parses `--forge IP=DEFECT`.
fn parse_forge(
    text: &str,
) -> Result<(std::net::IpAddr, palisade_sim::fleet::Forge), SimUsageError> {
    use palisade_sim::fleet::Forge;
    let bad = |why: String| SimUsageError(format!("--forge: bad value `{text}`: {why}"));
    let (ip, defect) = text
        .split_once('=')
        .ok_or_else(|| bad("give IP=DEFECT, e.g. 198.18.0.5=tcp-checksum".into()))?;
    let ip = ip
        .trim()
        .parse()
        .map_err(|_| bad(format!("`{ip}` is not an address")))?;
    let names: Vec<&str> = Forge::ALL.iter().map(|f| f.name()).collect();
    let defect = Forge::from_name(defect.trim())
        .ok_or_else(|| bad(format!("the defect is one of {}", names.join(", "))))?;
    Ok((ip, defect))
}

fn fleet(args: &FleetArgs) -> Result<ExitCode> {
    use palisade_dataplane::{self as xdp, AttachMode};
    use palisade_sim::responder::{Responder, ResponderOptions};
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let forge = match args
        .forge
        .iter()
        .map(|text| parse_forge(text))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(f) => f,
        Err(e) => return Ok(usage_error(&e)),
    };
    let spec = palisade_sim::fleet::FleetSpec {
        seed: args.seed,
        density_ppm: args.density_ppm,
        silent_permille: args.silent_permille,
        firewalled_permille: args.firewalled_permille,
        synproxy_permille: args.synproxy_permille,
        explicit: args.open.iter().map(|a| (a.ip(), a.port())).collect(),
        drops_icmp: args.drops_icmp.clone(),
        forge,
    };
    let setup = || -> Result<ResponderOptions, SimUsageError> {
        spec.validate().map_err(SimUsageError)?;
        let mut opts = ResponderOptions {
            block_v4: None,
            block_v6: None,
            mac: palisade_core::wire::MacAddr::ZERO,
            loss_permille: args.loss_permille,
            rate_limit: args.rate_limit,
            mode: match args.xdp_mode.as_str() {
                "driver" => Some(AttachMode::Driver),
                "generic" => Some(AttachMode::Generic),
                _ => None,
            },
            count_hosts: args.count_per_host,
        };
        for text in &args.block {
            let twice =
                || SimUsageError(format!("--block: `{text}` is a second block of its family"));
            match parse_block(text)? {
                (IpAddr::V4(a), p) if opts.block_v4.is_none() => opts.block_v4 = Some((a, p)),
                (IpAddr::V6(a), p) if opts.block_v6.is_none() => opts.block_v6 = Some((a, p)),
                _ => return Err(twice()),
            }
        }
        let inside = |ip: IpAddr| match ip {
            IpAddr::V4(a) => opts.block_v4.is_some_and(|(b, p)| {
                let m = u32::MAX << (32 - u32::from(p));
                u32::from(a) & m == u32::from(b) & m
            }),
            IpAddr::V6(a) => opts.block_v6.is_some_and(|(b, p)| {
                let m = u128::MAX << (128 - u32::from(p));
                u128::from(a) & m == u128::from(b) & m
            }),
        };
        if let Some(a) = args.open.iter().find(|a| !inside(a.ip()) || a.port() == 0) {
            return Err(SimUsageError(format!(
                "--open: `{a}` is not a port of the blocks"
            )));
        }
        if let Some(a) = args.drops_icmp.iter().find(|a| !inside(**a)) {
            return Err(SimUsageError(format!(
                "--drops-icmp: `{a}` is not an address of the blocks"
            )));
        }
        if let Some((a, _)) = spec.forge.iter().find(|(a, _)| !inside(*a)) {
            return Err(SimUsageError(format!(
                "--forge: `{a}` is not an address of the blocks"
            )));
        }
        if let Some(d) = args.duration
            && !(d.is_finite() && d > 0.0)
        {
            return Err(SimUsageError(format!(
                "--duration: bad value `{d}`: give seconds above 0"
            )));
        }
        Ok(opts)
    };
    let mut opts = match setup() {
        Ok(o) => o,
        Err(e) => return Ok(usage_error(&e)),
    };
    let ifindex = xdp::ifindex(&args.interface)?;
    opts.mac = xdp::mac_of(&args.interface)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let responder = Responder::attach(ifindex, &spec, &opts)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "fleet ready (XDP {})", responder.mode())?;
        out.flush().context("writing to stdout")?;
    }
    let deadline = args
        .duration
        .map(|d| std::time::Instant::now() + std::time::Duration::from_secs_f64(d));
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| std::time::Instant::now() < d) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let counters = responder.counters()?;
    let mut json = serde_json::to_value(counters)?;
    json["mode"] = serde_json::Value::from(responder.mode().to_string());
    if args.count_per_host {
        let hosts: Vec<serde_json::Value> = responder
            .host_hits()?
            .into_iter()
            .map(|(ip, h)| {
                serde_json::json!({
                    "ip": ip.to_string(),
                    "syns": h.syns,
                    "first_ns": h.first_ns,
                    "last_ns": h.last_ns,
                    "rate": h.rate(),
                })
            })
            .collect();
        json["hosts"] = serde_json::Value::from(hosts);
    }
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

fn fleet_truth(args: &FleetTruthArgs) -> Result<ExitCode> {
    let targets = match TargetSet::parse_arg("--targets", &args.targets) {
        Ok(t) => t,
        Err(e) => return Ok(usage_error(&SimUsageError(e.to_string()))),
    };
    let ports = match PortSet::parse_arg("-p", &args.ports) {
        Ok(p) => p,
        Err(e) => return Ok(usage_error(&SimUsageError(e.to_string()))),
    };
    let spec = palisade_sim::fleet::FleetSpec {
        seed: args.seed,
        density_ppm: args.density_ppm,
        ..Default::default()
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (ip, port) in spec.truth(&targets, &ports) {
        writeln!(out, "{}", std::net::SocketAddr::new(ip, port))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn usage_error(e: &SimUsageError) -> ExitCode {
    eprintln!("palisade-sim: error: {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = SimCli::parse();
    let result = match &cli.command {
        SimCommand::Fleet(args) => fleet(args),
        SimCommand::FleetTruth(args) => fleet_truth(args),
        SimCommand::TxBench(args) => tx_bench(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade-sim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
