//! The `palisade` command line. Only argument handling lives here; the work is
//! in the library.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error (bad arguments).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Open-port monitoring engine: SYN-scans all TCP ports of a fleet and reports what changed",
    after_help = "Exit codes: 0 success, 1 runtime failure, 2 bad arguments or configuration, \
                  3 `run --once` left events undelivered."
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
    Plan(cmd::plan::PlanArgs),
    /// SYN-scan targets through AF_XDP and report the ports that answer.
    ///
    /// Sends one TCP SYN per (host, port) in a keyed pseudo-random order,
    /// through an AF_XDP socket per TX queue; an XDP filter hands SYN-ACK and
    /// RST replies to Palisade (and hides them from the kernel). Each open
    /// port is printed once, as a JSON line by default:
    /// {"ip":"198.18.0.2","port":22,"state":"open","ttl":64,"time":"..."}.
    /// Needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW).
    Scan(cmd::scan::ScanArgs),
    /// Run the monitoring daemon: scheduled sweeps, confirmation, history, events.
    ///
    /// Every monitor that is due joins one sweep of its host's TCP ports (all
    /// 65,535, or its `ports`), stored a slice at a time; a deviation
    /// (expected port not open, unexpected port open) seen in `confirm`
    /// consecutive scans opens an incident and emits an event. With `[http]`
    /// it serves the dashboard, the API (/api/v1) and /metrics. SIGHUP
    /// reloads the configuration, SIGTERM/SIGINT stop cleanly.
    Run(cmd::run::RunArgs),
    /// Check a configuration file; errors name file, line and key (exit 2).
    CheckConfig {
        /// The configuration file.
        file: std::path::PathBuf,
    },
    /// Show every monitor: host, last scan, open ports, open incidents.
    Status(cmd::status::StatusArgs),
    /// Show a monitor's state changes and incidents, newest first.
    History(cmd::history::HistoryArgs),
    /// Manage dead letters: events a sink refused for good (a webhook's 4xx).
    ///
    /// `list` shows them; `retry` puts them back in their sink's queue;
    /// `drop` forgets them.
    Deliveries(cmd::deliveries::DeliveriesArgs),
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
    // Parses as `Cli::parse_from`, plus the hidden `dist-assets DIR` (man
    // pages and completions for the package).
    let cli: Cli = palisade_outputs::cli_assets::parse_from(argv);
    let result = match &cli.command {
        Command::Plan(args) => cmd::plan::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::CheckConfig { file } => cmd::check_config::run(file),
        Command::Status(args) => cmd::status::run(args),
        Command::History(args) => cmd::history::run(args),
        Command::Deliveries(args) => cmd::deliveries::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: most of our
/// errors already name their cause in their own message.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}
