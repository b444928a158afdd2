//! `palisade run`: the monitoring daemon.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::load_config;

#[derive(Debug, Args)]
pub struct RunArgs {
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

pub fn run(args: &RunArgs) -> Result<ExitCode> {
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
        "palisade: {} sweep(s), {} event(s){}{}",
        outcome.sweeps,
        outcome.events,
        outcome
            .peak_rss_kib
            .map_or(String::new(), |k| format!(", peak memory {k} KiB")),
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
