//! The `palisade` command line. Only argument handling lives here; the work is
//! in the library.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error (bad arguments).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use palisade::probe::{PortSet, Shard, SpecError, Sweep, TargetSet};

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
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
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
    if matches!(args.format, Format::Text) {
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
            Format::Text => writeln!(out, "{index:>12}  {ip}:{}", probe.port)?,
            Format::Jsonl => writeln!(
                out,
                r#"{{"index":{index},"ip":"{ip}","port":{}}}"#,
                probe.port
            )?,
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
