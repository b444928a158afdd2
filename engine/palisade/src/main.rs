//! The `palisade` command line. Only argument handling lives here; the work is
//! in the library.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error (bad arguments).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use palisade_core::probe::{PortSet, Shard, SpecError, Sweep, TargetSet};

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Open-port monitoring engine: SYN-scans all TCP ports of a fleet and reports what changed",
    after_help = "Exit codes: 0 success, 1 runtime failure, 2 bad arguments."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the probe order of a sweep without sending anything.
    ///
    /// Every (host, port) pair is visited once, in a keyed pseudo-random order
    /// that spreads load across hosts; `--shard` and `--resume-index` select a
    /// part of it exactly as a scan would.
    Plan(PlanArgs),
    /// SYN-scan targets through AF_XDP and report the ports that answer.
    ///
    /// Sends one TCP SYN per (host, port) in a keyed pseudo-random order,
    /// through an AF_XDP socket per TX queue; an XDP filter hands SYN-ACK and
    /// RST replies to Palisade (and hides them from the kernel). Each open
    /// port is printed once, as a JSON line by default:
    /// {"ip":"198.18.0.2","port":22,"state":"open","ttl":64,"time":"..."}.
    /// Needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW).
    Scan(ScanArgs),
    /// Run the monitoring daemon: scheduled sweeps, confirmation, history, events.
    ///
    /// Every monitor that is due joins one sweep of all its host's 65,535 TCP
    /// ports; a deviation (expected port not open, unexpected port open) seen
    /// in `confirm` consecutive scans opens an incident and emits an event.
    /// SIGHUP reloads the configuration, SIGTERM/SIGINT stop cleanly.
    Run(RunArgs),
    /// Check a configuration file; errors name file, line and key (exit 2).
    CheckConfig {
        /// The configuration file.
        file: std::path::PathBuf,
    },
    /// Show every monitor: host, last scan, open ports, open incidents.
    Status(StatusArgs),
    /// Show a monitor's state changes and incidents, newest first.
    History(HistoryArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The configuration file (see config/palisade.example.toml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: std::path::PathBuf,
    /// Sweep every monitor once, now, then exit (for cron and tests).
    #[arg(long)]
    once: bool,
    /// Also write events as JSON lines to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    events: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The configuration file (names the store).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: std::path::PathBuf,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    /// The monitor's name.
    monitor: String,
    /// The configuration file (names the store).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: std::path::PathBuf,
    /// Only this port.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Only since TIME: RFC 3339 (2026-11-29T12:00:00Z) or an age (2h, 7days).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
}

/// Which hosts and ports, shared by every command that sweeps.
#[derive(Debug, Args)]
struct TargetArgs {
    /// Targets: IPv4/IPv6 addresses, CIDR blocks, ranges (a-b); commas allowed.
    targets: Vec<String>,
    /// Ports: `22,80,8000-8100`, `1-65535`, or `-` for all.
    #[arg(short = 'p', long = "ports", value_name = "PORTS")]
    ports: String,
    /// Read more targets from FILE (one or more per line, `#` comments); `-iL FILE` works too.
    #[arg(long = "input-list", value_name = "FILE")]
    input_list: Vec<String>,
    /// Never probe these targets (same syntax as targets).
    #[arg(long, value_name = "LIST")]
    exclude: Vec<String>,
    /// Never probe the targets listed in FILE (e.g. config/exclude.conf).
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<String>,
    /// Take part I of N of the sweep (1-based), e.g. `--shard 2/4`.
    #[arg(long, value_name = "I/N", default_value = "1/1")]
    shard: Shard,
    /// Seed of the probe order; the same seed gives the same order.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Skip the first N probes of this shard (to resume an interrupted scan).
    #[arg(long, value_name = "N", default_value_t = 0)]
    resume_index: u64,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Show at most N probes.
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
}

#[derive(Debug, Args)]
struct ScanArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Probes per second (first probes; retries ride along).
    #[arg(long, value_name = "PPS", default_value_t = palisade_dataplane::scan::DEFAULT_RATE,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    rate: u64,
    /// Extra probes for a port that did not answer, 0.5 s apart.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    retries: u32,
    /// Seconds to wait for late replies after the last probe.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    wait: f64,
    /// Interface to send on (default: the route's to the first target).
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
    /// Source address (repeat for one IPv4 and one IPv6; default: the route's).
    #[arg(long, value_name = "IP")]
    source_ip: Vec<std::net::IpAddr>,
    /// Source port or range for the probes (replies to them never reach the kernel).
    #[arg(long, value_name = "P|A-B", default_value = "61000-61063")]
    source_port: String,
    /// MAC address of the next hop (default: from the kernel's neighbour table).
    #[arg(long, value_name = "MAC")]
    gateway_mac: Option<palisade_core::wire::MacAddr>,
    /// TX queues to use, one socket and thread each (default: all, up to the core count).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    queues: Option<u32>,
    /// Report closed ports (RST) too.
    #[arg(long)]
    closed: bool,
    /// Write findings to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
    format: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`json` works too).
    #[value(alias = "json")]
    Jsonl,
}

/// An error that is the user's to fix: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

impl From<SpecError> for UsageError {
    fn from(e: SpecError) -> Self {
        UsageError(e.to_string())
    }
}

fn read_file(path: &str) -> Result<String, UsageError> {
    std::fs::read_to_string(path).map_err(|e| UsageError(format!("cannot read {path}: {e}")))
}

impl TargetArgs {
    /// Builds the sweep the arguments describe.
    fn sweep(&self) -> Result<Sweep, UsageError> {
        let mut targets = TargetSet::default();
        for (i, t) in self.targets.iter().enumerate() {
            targets.extend_arg(&format!("target argument {}", i + 1), t)?;
        }
        for path in &self.input_list {
            targets.extend_file(path, &read_file(path)?)?;
        }
        if targets.is_empty() {
            return Err(UsageError(
                "no targets: give addresses, blocks or ranges, or -iL FILE".into(),
            ));
        }
        let mut excludes = TargetSet::default();
        for x in &self.exclude {
            excludes.extend_arg("--exclude", x)?;
        }
        for path in &self.exclude_file {
            excludes.extend_file(path, &read_file(path)?)?;
        }
        targets.subtract(&excludes);
        if targets.is_empty() {
            return Err(SpecError::NoTargets {
                what: "targets".into(),
            }
            .into());
        }
        let ports = PortSet::parse_arg("-p", &self.ports)?;
        Ok(Sweep::new(&targets, &ports, self.seed)?)
    }
}

fn plan(args: &PlanArgs) -> Result<ExitCode> {
    let sweep = match args.target.sweep() {
        Ok(s) => s,
        Err(e) => return Ok(usage_error(&e)),
    };
    let shard = args.target.shard;
    let mut out = std::io::stdout().lock();
    if matches!(args.format, OutputFormat::Text) {
        writeln!(
            out,
            "sweep: {} hosts x {} ports = {} probes; shard {} has {}, starting at {}",
            sweep.host_count(),
            sweep.ports().len(),
            sweep.len(),
            shard,
            sweep.shard_len(shard),
            args.target.resume_index
        )?;
    }
    for (index, probe) in sweep
        .iter(shard, args.target.resume_index)
        .take(usize::try_from(args.limit).unwrap_or(usize::MAX))
    {
        let ip = std::net::IpAddr::from(probe.target);
        match args.format {
            OutputFormat::Text => writeln!(out, "{index:>12}  {ip}:{}", probe.port)?,
            OutputFormat::Jsonl => writeln!(
                out,
                r#"{{"index":{index},"ip":"{ip}","port":{}}}"#,
                probe.port
            )?,
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn parse_source_ports(text: &str) -> Result<(u16, u16), UsageError> {
    let bad = || {
        UsageError(format!(
            "--source-port: bad value `{text}`: give a port (61000) or a range (61000-61063) within 1-65535"
        ))
    };
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn scan_config(args: &ScanArgs) -> Result<palisade_dataplane::scan::ScanConfig, UsageError> {
    let mut cfg = palisade_dataplane::scan::ScanConfig {
        shard: args.target.shard,
        resume: args.target.resume_index,
        rate: args.rate,
        retries: args.retries,
        interface: args.interface.clone(),
        source_ports: parse_source_ports(&args.source_port)?,
        gateway_mac: args.gateway_mac,
        queues: args.queues.map(|q| q as usize),
        report_closed: args.closed,
        ..Default::default()
    };
    if !(args.wait.is_finite() && (0.0..=3600.0).contains(&args.wait)) {
        return Err(UsageError(format!(
            "--wait: bad value `{}`: give seconds from 0 to 3600",
            args.wait
        )));
    }
    cfg.wait = std::time::Duration::from_secs_f64(args.wait);
    for ip in &args.source_ip {
        match ip {
            std::net::IpAddr::V4(a) if cfg.source_v4.is_none() => cfg.source_v4 = Some(*a),
            std::net::IpAddr::V6(a) if cfg.source_v6.is_none() => cfg.source_v6 = Some(*a),
            _ => {
                return Err(UsageError(format!(
                    "--source-ip: `{ip}` is a second address of its family; give at most one IPv4 and one IPv6"
                )));
            }
        }
    }
    Ok(cfg)
}

fn format_finding(f: &palisade_dataplane::scan::Finding, format: OutputFormat) -> String {
    let state = if f.open { "open" } else { "closed" };
    let time = humantime::format_rfc3339_millis(f.time);
    match format {
        OutputFormat::Jsonl => serde_json::json!({
            "ip": f.ip.to_string(),
            "port": f.port,
            "state": state,
            "ttl": f.ttl,
            "time": time.to_string(),
        })
        .to_string(),
        OutputFormat::Text => format!(
            "{state:<6} {}  ttl {}  {time}",
            std::net::SocketAddr::new(f.ip, f.port),
            f.ttl
        ),
    }
}

fn scan(args: &ScanArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (sweep, cfg) = match args
        .target
        .sweep()
        .and_then(|s| Ok((s, scan_config(args)?)))
    {
        Ok(v) => v,
        Err(e) => return Ok(usage_error(&e)),
    };
    let mut out: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let progress = palisade_dataplane::scan::Progress::default();
    let planned = sweep.shard_len(cfg.shard).saturating_sub(cfg.resume);
    let show_progress = std::io::stderr().is_terminal();
    let mut write_error: Option<std::io::Error> = None;
    let done = AtomicBool::new(false);
    let summary = std::thread::scope(|scope| {
        if show_progress {
            let (progress, done) = (&progress, &done);
            scope.spawn(move || progress_lines(progress, done, planned));
        }
        let result = palisade_dataplane::scan::run(&sweep, &cfg, &stop, &progress, |f| {
            if write_error.is_none()
                && let Err(e) = writeln!(out, "{}", format_finding(&f, args.format))
            {
                write_error = Some(e);
            }
        });
        done.store(true, Ordering::Relaxed);
        result
    })?;
    out.flush().context("writing the findings")?;
    if let Some(e) = write_error {
        return Err(e).context("writing the findings");
    }
    eprintln!(
        "palisade: {} probes sent ({} retries), {} replies ({} open, {} closed), {} invalid, {} duplicate, {} RSTs sent; {:.0} probes/s while sending ({:.3} s), {:.2} s in all; transport af_xdp on {} ({} copy, {} queue(s)), XDP {} mode{}",
        summary.sent,
        summary.retries,
        summary.replies,
        summary.open,
        summary.closed,
        summary.invalid,
        summary.duplicates,
        summary.rsts_sent,
        summary.rate(),
        summary.send_duration.as_secs_f64(),
        summary.duration.as_secs_f64(),
        summary.interface,
        if summary.zero_copy { "zero" } else { "kernel" },
        summary.queues,
        summary
            .attach_mode
            .map_or("?".to_string(), |m| m.to_string()),
        if summary.interrupted {
            "; interrupted"
        } else {
            ""
        },
    );
    if summary.ringbuf_full > 0 || summary.tx_busy > 0 {
        eprintln!(
            "palisade: {} replies lost to a full ring buffer, {} deferred transmits",
            summary.ringbuf_full, summary.tx_busy
        );
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn load_config(path: &std::path::Path) -> Result<palisade::config::Config, ExitCode> {
    palisade::config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn check_config(file: &std::path::Path) -> Result<ExitCode> {
    Ok(match load_config(file) {
        Ok(c) => {
            println!(
                "{}: ok: {} monitor(s), {} sink(s), store {}",
                file.display(),
                c.monitors.len(),
                c.sinks.len(),
                c.store.path.display()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    })
}

fn run_daemon(args: &RunArgs) -> Result<ExitCode> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    if let Err(code) = load_config(&args.config) {
        return Ok(code);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing signal handlers")?;
    let mut daemon = palisade::daemon::Daemon::new(palisade::daemon::Options {
        config_path: args.config.clone(),
        once: args.once,
        events: args.events.clone(),
    })?;
    let outcome = daemon.run(&stop, &reload)?;
    eprintln!(
        "palisade: {} sweep(s), {} event(s){}",
        outcome.sweeps,
        outcome.events,
        if outcome.inconclusive {
            "; a sweep was inconclusive (see the log)"
        } else {
            ""
        }
    );
    Ok(if args.once && outcome.inconclusive {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn status(args: &StatusArgs) -> Result<ExitCode> {
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let store = palisade::store::Store::open(&config.store.path)?;
    let rows = store.status()?;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Jsonl => {
            for r in &rows {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "{:<20} {:<24} {:<26} {:<24} OPEN INCIDENTS",
                "MONITOR", "HOST", "LAST SCAN", "OPEN PORTS"
            )?;
            for m in &config.monitors {
                let r = rows.iter().find(|r| r.monitor == m.name);
                let last = r
                    .and_then(|r| r.last_scan_ms)
                    .map_or("never".to_string(), |t| {
                        let mut s = palisade::daemon::rfc3339(t);
                        if r.and_then(|r| r.last_conclusive) == Some(false) {
                            s.push_str(" (inconclusive)");
                        }
                        s
                    });
                let ports = r.map_or(String::new(), |r| {
                    r.open_ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                });
                let incidents = r.map_or(String::new(), |r| r.open_incidents.join(" "));
                writeln!(
                    out,
                    "{:<20} {:<24} {:<26} {:<24} {}",
                    m.name,
                    m.host,
                    last,
                    ports,
                    if incidents.is_empty() {
                        "-".into()
                    } else {
                        incidents
                    }
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses `--since`: an RFC 3339 time or an age before now.
fn parse_since(text: &str) -> Result<i64, UsageError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64));
    }
    humantime::parse_duration(text)
        .map(|d| palisade::daemon::now_ms() - d.as_millis() as i64)
        .map_err(|_| {
            UsageError(format!(
                "--since: bad value `{text}`: give an RFC 3339 time or an age like 2h"
            ))
        })
}

fn history(args: &HistoryArgs) -> Result<ExitCode> {
    use palisade::store::HistoryRow;
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let since = match args.since.as_deref().map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => return Ok(usage_error(&e)),
    };
    let store = palisade::store::Store::open(&config.store.path)?;
    let rows = store.history(&args.monitor, args.port, since)?;
    if rows.is_empty() && !config.monitors.iter().any(|m| m.name == args.monitor) {
        return Ok(usage_error(&UsageError(format!(
            "no monitor `{}` in {} and no history for it",
            args.monitor,
            args.config.display()
        ))));
    }
    let mut out = std::io::stdout().lock();
    for r in &rows {
        match args.format {
            OutputFormat::Jsonl => writeln!(out, "{}", serde_json::to_string(r)?)?,
            OutputFormat::Text => match r {
                HistoryRow::StateChange {
                    at_ms,
                    port,
                    from,
                    to,
                    ..
                } => writeln!(
                    out,
                    "{}  port {:<5}  {} -> {}",
                    palisade::daemon::rfc3339(*at_ms),
                    port,
                    from.as_deref().unwrap_or("unknown"),
                    to
                )?,
                HistoryRow::Incident {
                    at_ms,
                    port,
                    kind,
                    state,
                    first_seen_ms,
                    confirmed_at_ms,
                    resolved_at_ms,
                    resolution,
                    ..
                } => writeln!(
                    out,
                    "{}  port {:<5}  incident {} ({}), first seen {}, confirmed {}{}",
                    palisade::daemon::rfc3339(*at_ms),
                    port,
                    kind,
                    state,
                    palisade::daemon::rfc3339(*first_seen_ms),
                    palisade::daemon::rfc3339(*confirmed_at_ms),
                    match resolved_at_ms {
                        Some(t) => format!(
                            ", resolved {} ({})",
                            palisade::daemon::rfc3339(*t),
                            resolution.as_deref().unwrap_or("")
                        ),
                        None => ", open".into(),
                    }
                )?,
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One progress line a second on stderr (only when it is a terminal).
fn progress_lines(
    p: &palisade_dataplane::scan::Progress,
    done: &std::sync::atomic::AtomicBool,
    planned: u64,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let start = std::time::Instant::now();
    while !done.load(Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let secs = start.elapsed().as_secs_f64();
        let sent = p.sent.load(Relaxed);
        let rate = sent as f64 / secs.max(1e-3);
        let pct = 100.0 * sent as f64 / planned.max(1) as f64;
        let eta = (planned.saturating_sub(sent)) as f64 / rate.max(1.0);
        eprint!(
            "\rpalisade: {rate:>10.0} pps  {pct:5.1}% done  ETA {eta:>5.0} s  {} open   ",
            p.open.load(Relaxed)
        );
    }
    eprintln!();
}

fn usage_error(e: &UsageError) -> ExitCode {
    eprintln!("palisade: error: {e}");
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
    // masscan and nmap spell the target file flag `-iL`.
    let argv = std::env::args_os().map(|a| if a == "-iL" { "--input-list".into() } else { a });
    let cli = Cli::parse_from(argv);
    let result = match &cli.command {
        Command::Plan(args) => plan(args),
        Command::Scan(args) => scan(args),
        Command::Run(args) => run_daemon(args),
        Command::CheckConfig { file } => check_config(file),
        Command::Status(args) => status(args),
        Command::History(args) => history(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
