//! `palisade deliveries`: the dead letters (events a sink refused for
//! good): list them, put them back in their sink's queue, or drop them.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use palisade::store::{DeadLetter, Store};

use super::{OutputFormat, load_config};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 done; 1 an event id that is no dead letter (of --sink), \
or a runtime failure; 2 bad arguments or configuration."
)]
pub struct DeliveriesArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the dead letters, oldest first.
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Put dead letters back in their sink's queue: the running daemon (or
    /// the next run) delivers them again, before the events after them.
    Retry(Selection),
    /// Forget dead letters: their events are never delivered to that sink.
    Drop(Selection),
}

#[derive(Debug, Args)]
struct Common {
    /// The configuration file (names the store).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: std::path::PathBuf,
    /// Only the dead letters of this sink (its `name`).
    #[arg(long, value_name = "NAME")]
    sink: Option<String>,
}

#[derive(Debug, Args)]
struct Selection {
    #[command(flatten)]
    common: Common,
    /// The event ids (as `list` shows them).
    #[arg(value_name = "EVENT_ID", required_unless_present = "all")]
    ids: Vec<String>,
    /// Every dead letter (of --sink, if given).
    #[arg(long, conflicts_with = "ids")]
    all: bool,
}

pub fn run(args: &DeliveriesArgs) -> Result<ExitCode> {
    let common = match &args.action {
        Action::List { common, .. } => common,
        Action::Retry(s) | Action::Drop(s) => &s.common,
    };
    let config = match load_config(&common.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mut store = Store::open(&config.store.path)?;
    let letters = store.dead_letters(common.sink.as_deref())?;
    match &args.action {
        Action::List { format, .. } => list(&letters, *format),
        Action::Retry(selection) => act(&mut store, &letters, selection, true),
        Action::Drop(selection) => act(&mut store, &letters, selection, false),
    }
}

fn list(letters: &[DeadLetter], format: OutputFormat) -> Result<ExitCode> {
    let mut out = super::stdout();
    match format {
        OutputFormat::Jsonl => {
            for l in letters {
                writeln!(out, "{}", serde_json::to_string(l)?)?;
            }
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "{:<26} {:<24} {:<48} {:<6} ANSWER",
                "AT", "SINK", "EVENT", "STATUS"
            )?;
            for l in letters {
                let status = l.status.map_or("-".to_string(), |s| s.to_string());
                writeln!(
                    out,
                    "{:<26} {:<24} {:<48} {:<6} {}",
                    palisade::daemon::rfc3339(l.at_ms),
                    palisade_outputs::alert::escape(&l.sink),
                    palisade_outputs::alert::escape(&l.event_id),
                    status,
                    palisade_outputs::alert::escape(&l.excerpt)
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Retries (`retry`) or drops the selected dead letters; an id that is no
/// dead letter is an error (exit 1), the others are still acted on.
fn act(
    store: &mut Store,
    letters: &[DeadLetter],
    selection: &Selection,
    retry: bool,
) -> Result<ExitCode> {
    let chosen: Vec<DeadLetter> = letters
        .iter()
        .filter(|l| selection.all || selection.ids.contains(&l.event_id))
        .cloned()
        .collect();
    let missing: Vec<&String> = selection
        .ids
        .iter()
        .filter(|id| !letters.iter().any(|l| &l.event_id == *id))
        .collect();
    let done = if retry {
        store.retry_dead_letters(&chosen)?
    } else {
        store.drop_dead_letters(&chosen)?
    };
    eprintln!(
        "palisade: {} {done} dead letter{}",
        if retry {
            "put back for delivery"
        } else {
            "dropped"
        },
        if done == 1 { "" } else { "s" }
    );
    for id in &missing {
        eprintln!(
            "palisade: error: no dead letter {}{}",
            palisade_outputs::alert::escape(id),
            selection
                .common
                .sink
                .as_deref()
                .map_or(String::new(), |s| format!(" for sink {s}"))
        );
    }
    Ok(if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
