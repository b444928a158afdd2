//! `palisade history`: a monitor's state changes and incidents, newest first.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{OutputFormat, UsageError, load_config, usage_error};

#[derive(Debug, Args)]
pub struct HistoryArgs {
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

pub fn run(args: &HistoryArgs) -> Result<ExitCode> {
    use palisade::store::HistoryRow;
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let since = match args.since.as_deref().map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => return Ok(usage_error(&e)),
    };
    let store = palisade::store::Store::open_read_only(&config.store.path)?;
    let rows = store.history(&args.monitor, args.port, since)?;
    if rows.is_empty() && !config.monitors.iter().any(|m| m.name == args.monitor) {
        return Ok(usage_error(&UsageError(format!(
            "no monitor `{}` in {} and no history for it",
            args.monitor,
            args.config.display()
        ))));
    }
    let mut out = super::stdout();
    for r in &rows {
        match args.format {
            OutputFormat::Jsonl => writeln!(out, "{}", serde_json::to_string(r)?)?,
            OutputFormat::Text => match r {
                HistoryRow::StateChange {
                    at_ms,
                    address,
                    port,
                    from,
                    to,
                    ..
                } => writeln!(
                    out,
                    "{}  {:<16} port {:<5}  {} -> {}",
                    palisade::daemon::rfc3339(*at_ms),
                    address.as_deref().unwrap_or("-"),
                    port,
                    from.as_deref().unwrap_or("unknown"),
                    to
                )?,
                HistoryRow::Incident {
                    at_ms,
                    address,
                    port,
                    ports,
                    kind,
                    state,
                    first_seen_ms,
                    confirmed_at_ms,
                    resolved_at_ms,
                    resolution,
                    ..
                } => writeln!(
                    out,
                    "{}  {:<16} {}  incident {} ({}), first seen {}, confirmed {}{}",
                    palisade::daemon::rfc3339(*at_ms),
                    address.as_deref().unwrap_or("-"),
                    match (port, ports) {
                        (0, Some(ports)) => format!("host (ports {ports})"),
                        _ => format!("port {port:<5}"),
                    },
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
