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
    /// The form of the log lines on stderr [default: journald under
    /// systemd, else text]. PALISADE_LOG filters them (default `warn`).
    #[arg(long = "log-format", value_name = "FORMAT", value_enum, global = true)]
    log_format: Option<palisade_outputs::logging::LogFormat>,
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
    /// `-oX`, `-oL` and `-oG` also write nmap XML, masscan's list and nmap's
    /// grepable format, for the tools that read those.
    /// Needs root, or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_NET_RAW and
    /// CAP_IPC_LOCK (`palisade doctor` checks them).
    Scan(Box<cmd::scan::ScanArgs>),
    /// Run the monitoring daemon: scheduled sweeps, confirmation, history, events.
    ///
    /// Every monitor that is due joins one sweep of its host's TCP ports (all
    /// 65,535, or its `ports`), stored a slice at a time; a deviation
    /// (expected port not open, unexpected port open) seen in `confirm`
    /// consecutive scans opens an incident and emits an event. With `[http]`
    /// it serves the dashboard, the API (/api/v1) and /metrics. SIGHUP
    /// reloads the configuration, SIGTERM/SIGINT stop cleanly.
    Run(cmd::run::RunArgs),
    /// Run a scan agent: scan the shards a coordinator queues on NATS.
    ///
    /// With `[cluster]` in its configuration, `palisade run` is a
    /// coordinator: it cuts each slice of a sweep into shards and queues them
    /// on NATS JetStream; agents (this command, on any number of hosts) pull
    /// them, scan through their own data path and publish the results. An
    /// agent keeps no state; one killed loses nothing (its job is
    /// redelivered). See docs/CLUSTER.md.
    Agent(Box<cmd::agent::AgentArgs>),
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
    /// Check that this machine is ready to scan, each failure with its fix.
    ///
    /// Kernel, capabilities, memlock, the interface (driver, queues, XDP
    /// native or generic, AF_XDP zero-copy: the data path is started there
    /// and stopped, sending nothing), the clock; with `-c`, the routes and
    /// next hops of the configured targets, the store (writable, size, WAL)
    /// and each NATS sink (reachable, stream as configured). Exit 0 when
    /// ready, 1 when a check failed.
    Doctor(cmd::doctor::DoctorArgs),
}

/// The log filter when `PALISADE_LOG` is not set.
const DEFAULT_LOG: &str = "warn,palisade::daemon=info,palisade::cluster=info";

fn main() -> ExitCode {
    // masscan and nmap spell some flags `-iL`, `-oX`, ...
    let argv = match cmd::nmap_style_flags(std::env::args_os()) {
        Ok(argv) => argv,
        Err(e) => return cmd::usage_error(&e),
    };
    // Parses as `Cli::parse_from`, plus the hidden `dist-assets DIR` (man
    // pages and completions for the package).
    let cli: Cli = palisade_outputs::cli_assets::parse_from(argv);
    // Warnings, and the daemon's own few lines: its start, reloads, one per sweep.
    palisade_outputs::logging::init(cli.log_format, "PALISADE_LOG", DEFAULT_LOG);
    let result = match &cli.command {
        Command::Plan(args) => cmd::plan::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::CheckConfig { file } => cmd::check_config::run(file),
        Command::Status(args) => cmd::status::run(args),
        Command::History(args) => cmd::history::run(args),
        Command::Deliveries(args) => cmd::deliveries::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if cmd::stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            palisade_outputs::logging::eprint(
                tracing::Level::ERROR,
                &format!("palisade: error: {}", error_text(&e)),
            );
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: most of our
/// errors already name their cause in their own message, and a cause that
/// restates the one before it (SQLite's "Error code 13: database or disk
/// is full" under "database or disk is full") adds nothing.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        let restated = !previous.is_empty() && cause.contains(&previous);
        if !text.contains(&cause) && !restated {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
        previous = cause;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn each_cause_is_said_once() {
        let sqlite = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(13),
            Some("database or disk is full".into()),
        );
        let e = anyhow::Error::new(sqlite).context("cannot open the store /x.db");
        assert_eq!(
            error_text(&e),
            "cannot open the store /x.db: database or disk is full"
        );
        let e = anyhow::anyhow!("b").context("a: b").context("c");
        assert_eq!(error_text(&e), "c: a: b");
    }
}
