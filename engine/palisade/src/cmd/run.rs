//! `palisade run`: the monitoring daemon.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::load_config;

/// The exit code of a `--once` run that left events undelivered after
/// waiting for its sinks (10 s).
pub const UNDELIVERED: u8 = 3;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 success; 1 runtime failure (with --once: also a sweep \
that was inconclusive); 2 bad arguments or configuration; 3 (--once) events left undelivered \
in the outbox after 10 s (the next run delivers them)."
)]
pub struct RunArgs {
    /// The configuration file (see config/palisade.example.toml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: std::path::PathBuf,
    /// Sweep every monitor once, now, then exit (for cron and tests).
    #[arg(long)]
    once: bool,
    /// Also write events as JSON lines to FILE (`-` for stdout): a sink
    /// named `jsonl:FILE` that starts with every event the store holds.
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
    let no_monitors = daemon.monitor_count() == 0;
    if no_monitors && !args.once {
        tracing::warn!(
            "no monitors yet: the daemon sweeps nothing until one is added to {} (then SIGHUP) or created in the dashboard",
            args.config.display()
        );
    }
    let outcome = daemon.run(&stop, &reload)?;
    if no_monitors && args.once {
        return Ok(super::usage_error(&super::UsageError(format!(
            "{}: no monitors: nothing to sweep; add a [[monitor]] (see config/palisade.example.toml)",
            args.config.display()
        ))));
    }
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
    if !outcome.undelivered.is_empty() {
        eprintln!(
            "palisade: events wait in the outbox for {} (delivered on the next run)",
            outcome.undelivered.join(", ")
        );
    }
    Ok(if args.once && outcome.inconclusive {
        ExitCode::FAILURE
    } else if args.once && !outcome.undelivered.is_empty() {
        ExitCode::from(UNDELIVERED)
    } else {
        ExitCode::SUCCESS
    })
}
