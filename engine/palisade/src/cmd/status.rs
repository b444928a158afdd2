//! `palisade status`: every monitor's host, last scan, open ports and open
//! incidents.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

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
