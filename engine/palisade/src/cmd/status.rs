//! `palisade status`: every monitor's host, last scan, open ports and open
//! incidents.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use palisade_core::monitor::PortRanges;

use super::{OutputFormat, load_config};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The configuration file (names the store).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: std::path::PathBuf,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
}

pub fn run(args: &StatusArgs) -> Result<ExitCode> {
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
                "{:<20} {:<24} {:<24} {:<26} {:<24} OPEN INCIDENTS",
                "MONITOR", "HOST", "ADDRESS", "LAST SCAN", "OPEN PORTS"
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
                let incidents = r.map_or(String::new(), |r| r.open_incidents.join(" "));
                let incidents = if incidents.is_empty() {
                    "-".to_string()
                } else {
                    incidents
                };
                let addresses = r.map(|r| r.addresses.as_slice()).unwrap_or_default();
                if addresses.is_empty() {
                    writeln!(
                        out,
                        "{:<20} {:<24} {:<24} {:<26} {:<24} {}",
                        m.name, m.host, "-", last, "", incidents
                    )?;
                }
                for (i, a) in addresses.iter().enumerate() {
                    // An unreachable address: every expected port is down,
                    // with the host as the cause.
                    let ports = if a.reachable {
                        a.open_ports.clone()
                    } else {
                        let expected: PortRanges = m.expected_open.iter().copied().collect();
                        format!("unreachable (expected down: {expected})")
                    };
                    let (name, host, last, incidents) = if i == 0 {
                        (
                            m.name.as_str(),
                            m.host.as_str(),
                            last.as_str(),
                            incidents.as_str(),
                        )
                    } else {
                        ("", "", "", "")
                    };
                    writeln!(
                        out,
                        "{name:<20} {host:<24} {:<24} {last:<26} {ports:<24} {incidents}",
                        a.address
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
