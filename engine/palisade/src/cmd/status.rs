//! `palisade status`: every monitor's host, last scan, open ports and open
//! incidents; the sinks; and the scan agents the coordinator has seen, if
//! any (issue 14).

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
    let store = palisade::store::Store::open_read_only(&config.store.path)?;
    let rows = store.status()?;
    // The monitors of the store (the configuration file's, as last
    // imported, and those created through the API or the dashboard), and
    // the file's that the daemon has not imported yet; by name.
    let mut monitors: std::collections::BTreeMap<String, palisade_core::monitor::MonitorSpec> =
        store
            .monitors()?
            .into_iter()
            .map(|m| (m.spec.name.clone(), m.spec))
            .collect();
    for m in &config.monitors {
        monitors.entry(m.name.clone()).or_insert_with(|| m.clone());
    }
    let sinks = sink_rows(&store, &config)?;
    let agents = store.agents()?;
    let now = palisade::daemon::now_ms();
    let mut out = super::stdout();
    match args.format {
        OutputFormat::Jsonl => {
            for r in &rows {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
            for s in &sinks {
                writeln!(out, "{}", serde_json::to_string(s)?)?;
            }
            for a in &agents {
                writeln!(out, "{}", serde_json::to_string(&AgentLine::new(a, now))?)?;
            }
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "{:<20} {:<24} {:<24} {:<26} {:<24} OPEN INCIDENTS",
                "MONITOR", "HOST", "ADDRESS", "LAST SCAN", "OPEN PORTS"
            )?;
            let by_name: std::collections::HashMap<&str, &palisade::store::StatusRow> =
                rows.iter().map(|r| (r.monitor.as_str(), r)).collect();
            for m in monitors.values() {
                let r = by_name.get(m.name.as_str()).copied();
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
            writeln!(out)?;
            writeln!(
                out,
                "{:<48} {:>8} {:>12}  PROBLEM",
                "SINK", "PENDING", "DEAD LETTERS"
            )?;
            for s in &sinks {
                let problem = s.problem.as_ref().map_or("-".to_string(), |p| {
                    format!(
                        "{} (since {})",
                        palisade_outputs::alert::escape(p),
                        s.problem_since_ms
                            .map_or("?".to_string(), palisade::daemon::rfc3339)
                    )
                });
                writeln!(
                    out,
                    "{:<48} {:>8} {:>12}  {problem}",
                    s.sink, s.pending, s.dead_letters
                )?;
            }
            writeln!(out, "dead letters: {}", store.dead_letter_count()?)?;
            if !agents.is_empty() {
                writeln!(out)?;
                write_agents(&mut out, &agents, now)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The scan agents' table of `status`: name, labels, live or gone since
/// when, the last heartbeat and its age, jobs done, rate, the job under way.
fn write_agents(
    out: &mut impl Write,
    agents: &[palisade::store::AgentRow],
    now: palisade_core::monitor::Millis,
) -> std::io::Result<()> {
    use palisade::daemon::rfc3339;
    use palisade::http::pages::format::relative;
    writeln!(
        out,
        "{:<20} {:<24} {:<48} {:<38} {:>9} {:>12}  JOB",
        "AGENT", "LABELS", "STATE", "LAST HEARTBEAT", "JOBS DONE", "RATE"
    )?;
    for a in agents {
        let state = match (a.state(now), a.gone_at) {
            (_, Some(at)) => format!("gone since {} ({})", rfc3339(at), relative(now, at)),
            ("silent", None) => "silent (no heartbeat; agent or coordinator down)".to_owned(),
            _ => "live".to_owned(),
        };
        let beat = format!("{} ({})", rfc3339(a.last_beat), relative(now, a.last_beat));
        writeln!(
            out,
            "{:<20} {:<24} {state:<48} {beat:<38} {:>9} {:>12}  {}",
            a.name,
            a.labels.join(","),
            a.jobs_done,
            format!("{}/s", a.rate),
            a.job.as_deref().unwrap_or("-"),
        )?;
    }
    let count = |state: &str| agents.iter().filter(|a| a.state(now) == state).count();
    writeln!(
        out,
        "agents: {} live, {} silent, {} gone",
        count("live"),
        count("silent"),
        count("gone")
    )
}

/// A scan agent's line of `status --format jsonl` (told from the monitors'
/// and the sinks' lines by its key `agent`).
#[derive(Debug, serde::Serialize)]
struct AgentLine<'a> {
    agent: &'a str,
    /// `live`, `silent` or `gone` ([`palisade::store::AgentRow::state`]).
    state: &'static str,
    labels: &'a [String],
    rate: u64,
    started_ms: palisade_core::monitor::Millis,
    last_beat_ms: palisade_core::monitor::Millis,
    jobs_done: u64,
    job: Option<&'a str>,
    gone_at_ms: Option<palisade_core::monitor::Millis>,
}

impl<'a> AgentLine<'a> {
    fn new(a: &'a palisade::store::AgentRow, now: palisade_core::monitor::Millis) -> AgentLine<'a> {
        AgentLine {
            agent: &a.name,
            state: a.state(now),
            labels: &a.labels,
            rate: a.rate,
            started_ms: a.started,
            last_beat_ms: a.last_beat,
            jobs_done: a.jobs_done,
            job: a.job.as_deref(),
            gone_at_ms: a.gone_at,
        }
    }
}

/// A sink's line of `status`: what waits for it and its last problem.
#[derive(Debug, serde::Serialize)]
struct SinkRow {
    sink: String,
    pending: i64,
    dead_letters: usize,
    problem: Option<String>,
    problem_since_ms: Option<i64>,
}

/// The configured sinks, and any other sink that has dead letters.
fn sink_rows(
    store: &palisade::store::Store,
    config: &palisade::config::Config,
) -> Result<Vec<SinkRow>> {
    let letters = store.dead_letters(None)?;
    let mut names: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    for l in &letters {
        if !names.contains(&l.sink) {
            names.push(l.sink.clone());
        }
    }
    let mut rows = Vec::with_capacity(names.len());
    for sink in names {
        let health = store.sink_health(&sink)?;
        rows.push(SinkRow {
            pending: store.pending_count(&sink)?,
            dead_letters: letters.iter().filter(|l| l.sink == sink).count(),
            problem_since_ms: health.as_ref().map(|h| h.1),
            problem: health.map(|h| h.0),
            sink,
        });
    }
    Ok(rows)
}
