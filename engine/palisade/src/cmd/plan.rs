//! `palisade plan`: the probe order of a sweep, without sending anything.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::{OutputFormat, TargetArgs, usage_error};

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Show at most N probes.
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
}

pub fn run(args: &PlanArgs) -> Result<ExitCode> {
    let sweep = match args.target.sweep() {
        Ok(s) => s,
        Err(e) => return Ok(usage_error(&e)),
    };
    let shard = args.target.shard;
    let mut out = super::stdout();
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
