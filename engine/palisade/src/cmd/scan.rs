//! `palisade scan`: SYN-scan targets through AF_XDP and report the ports
//! that answer.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use palisade_core::probe::TargetRecall;
use palisade_dataplane::scan::ScanSummary;

use super::data_path::DataPathArgs;
use super::{OutputFormat, TargetArgs, UsageError, usage_error};

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    data_path: DataPathArgs,
    /// At most PPS probes per second to any one address: with few targets
    /// the scan slows down to N × PPS, so that no single server is flooded
    /// at the full --rate (with many targets the probe order spreads the load
    /// and the cap does not bind). Counts first probes, like --rate. Default:
    /// no cap.
    #[arg(long, value_name = "PPS",
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    per_host_rate: Option<u64>,
    /// Also send an ICMP echo request (ICMPv6 for IPv6) to every target, with
    /// the same retries, and report each that answers once, as
    /// `"state":"echo"` with port 0: the host is reachable. Its identifier
    /// and sequence number are keyed to the scan and the target, so forged
    /// or stale replies are counted invalid. At most 1,048,576 targets.
    #[arg(long)]
    ping: bool,
    /// Report closed ports (RST) too.
    #[arg(long)]
    closed: bool,
    /// Write findings (JSON lines, or --format) to FILE instead of stdout
    /// (`-` for stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<String>,
    /// Output format of -o.
    #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
    format: OutputFormat,
    /// Also write nmap XML to FILE (`-` for stdout), as nmap's `-oX`, which
    /// works too: for ndiff, report generators and vulnerability tools. Hosts
    /// that answered, their open ports (service names from nmap's
    /// nmap-services when installed) and closed ports (more than 25 counted
    /// as extraports), written when the scan ends.
    #[arg(long = "output-xml", value_name = "FILE")]
    output_xml: Option<String>,
    /// Also write masscan's list format to FILE (`-` for stdout), as
    /// masscan's `-oL`, which works too: `open tcp PORT IP TIME` per finding.
    #[arg(long = "output-list", value_name = "FILE")]
    output_list: Option<String>,
    /// Also write nmap's grepable format to FILE (`-` for stdout), as nmap's
    /// `-oG`, which works too: a `Host: IP ()\tPorts: ...` line per host,
    /// written when the scan ends.
    #[arg(long = "output-grepable", value_name = "FILE")]
    output_grepable: Option<String>,
    /// Also write the summary as one JSON object to FILE (`-` for stderr),
    /// for scripts and benchmarks: probes, retries, replies, invalid (failed
    /// the cookie), filter_invalid (dropped by the XDP filter: bad checksum,
    /// fragment, truncated, VLAN-tagged), duplicates, open, closed,
    /// echo_sent, echo_replies, RSTs, ring-buffer losses, `rate` (first
    /// probes per second while sending), durations in seconds, interface,
    /// XDP mode, queues, interrupted, estimated_loss (per attempt; null
    /// without an estimate), loss_samples, retry_rounds, extra_retries,
    /// extra_retries_skipped, expected_misses (open ports).
    #[arg(long, value_name = "FILE")]
    summary_json: Option<String>,
}

/// Most targets `--ping` takes (one echo request each, held in memory).
const MAX_PING_TARGETS: u128 = 1 << 20;

/// Every target address, for `--ping`.
fn ping_targets(args: &ScanArgs) -> Result<Vec<std::net::IpAddr>, UsageError> {
    let targets = args.target.target_set()?;
    if targets.count() > MAX_PING_TARGETS {
        return Err(UsageError(format!(
            "--ping: {} targets, at most {MAX_PING_TARGETS}: ping fewer hosts",
            targets.count()
        )));
    }
    let v4 = targets.v4.ranges().iter().flat_map(|&(lo, hi)| {
        (lo..=hi).map(|a| std::net::IpAddr::from(std::net::Ipv4Addr::from(a as u32)))
    });
    let v6 = targets.v6.ranges().iter().flat_map(|&(lo, hi)| {
        (lo..=hi).map(|a| std::net::IpAddr::from(std::net::Ipv6Addr::from(a)))
    });
    Ok(v4.chain(v6).collect())
}

fn scan_config(args: &ScanArgs) -> Result<palisade_dataplane::scan::ScanConfig, UsageError> {
    Ok(palisade_dataplane::scan::ScanConfig {
        shard: args.target.shard,
        resume: args.target.resume_index,
        per_host_rate: args.per_host_rate,
        ping: if args.ping {
            ping_targets(args)?
        } else {
            Vec::new()
        },
        report_closed: args.closed,
        ..args.data_path.scan_config()?
    })
}

/// A file the scan writes, or stdout for `-`.
type Sink = Box<dyn Write + Send>;

/// Where the findings go: the lines of `-o` (stdout unless another output
/// takes it), `-oL` as they come, `-oX` and `-oG` when the scan ends.
struct Outputs {
    lines: Option<(String, Sink)>,
    list: Option<(String, Sink)>,
    xml: Option<(String, Sink)>,
    grepable: Option<(String, Sink)>,
    /// The findings by host, for -oX and -oG.
    results: Option<palisade::scan_output::Results>,
}

impl Outputs {
    /// Opens (creates) every output, before anything is sent.
    fn open(args: &ScanArgs) -> Result<Outputs, OutputsError> {
        let to_stdout = [&args.output_xml, &args.output_list, &args.output_grepable]
            .iter()
            .filter(|o| o.as_deref() == Some("-"))
            .count();
        let lines = match &args.output {
            Some(path) => Some(path.clone()),
            None if to_stdout == 0 => Some("-".to_string()),
            None => None,
        };
        if to_stdout + usize::from(lines.as_deref() == Some("-")) > 1 {
            return Err(OutputsError::Usage(UsageError(
                "more than one output to stdout (`-`): give the others a file".into(),
            )));
        }
        let open = |path: &Option<String>| -> Result<Option<(String, Sink)>, OutputsError> {
            let Some(path) = path else { return Ok(None) };
            let sink: Sink = if path == "-" {
                Box::new(std::io::BufWriter::new(super::stdout()))
            } else {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("cannot create {path}"))
                    .map_err(OutputsError::Io)?;
                Box::new(std::io::BufWriter::new(file))
            };
            let name = if path == "-" { "stdout" } else { path };
            Ok(Some((name.to_string(), sink)))
        };
        let mut list = open(&args.output_list)?;
        if let Some((path, w)) = &mut list {
            palisade::scan_output::masscan_list::header(w)
                .with_context(|| format!("writing {path}"))
                .map_err(OutputsError::Io)?;
        }
        Ok(Outputs {
            lines: open(&lines)?,
            list,
            xml: open(&args.output_xml)?,
            grepable: open(&args.output_grepable)?,
            results: (args.output_xml.is_some() || args.output_grepable.is_some())
                .then(Default::default),
        })
    }

    /// Whether closed ports must be collected (nmap's files count them).
    fn wants_closed(&self) -> bool {
        self.results.is_some()
    }

    /// One finding, to every output that takes it (closed ports only to
    /// the -oX/-oG results unless `closed`).
    fn finding(
        &mut self,
        f: &palisade_dataplane::scan::Finding,
        format: OutputFormat,
        closed: bool,
    ) -> Result<()> {
        if let Some(results) = &mut self.results {
            results.add(f);
        }
        if f.answer == palisade_dataplane::scan::Answer::Closed && !closed {
            return Ok(());
        }
        if let Some((path, w)) = &mut self.lines {
            writeln!(w, "{}", format_finding(f, format))
                .with_context(|| format!("writing {path}"))?;
        }
        if let Some((path, w)) = &mut self.list {
            palisade::scan_output::masscan_list::line(w, f)
                .with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    }

    /// Writes the files that need the whole scan and flushes everything.
    fn finish(mut self, run: &palisade::scan_output::ScanRun) -> Result<()> {
        use palisade::scan_output::{NMAP_SERVICES, Services, grepable, nmap_xml};
        let services = Services::load(NMAP_SERVICES);
        let results = self.results.take().unwrap_or_default();
        if let Some((path, w)) = &mut self.list {
            palisade::scan_output::masscan_list::footer(&mut *w)
                .with_context(|| format!("writing {path}"))?;
        }
        if let Some((path, w)) = &mut self.xml {
            nmap_xml::write(&mut *w, run, &results, services.as_ref())
                .with_context(|| format!("writing {path}"))?;
        }
        if let Some((path, w)) = &mut self.grepable {
            grepable::write(&mut *w, run, &results, services.as_ref())
                .with_context(|| format!("writing {path}"))?;
        }
        for (path, w) in [self.lines, self.list, self.xml, self.grepable]
            .iter_mut()
            .flatten()
        {
            w.flush().with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    }
}

#[derive(Debug)]
enum OutputsError {
    Usage(UsageError),
    Io(anyhow::Error),
}

fn format_finding(f: &palisade_dataplane::scan::Finding, format: OutputFormat) -> String {
    let state = f.answer.as_str();
    let time = humantime::format_rfc3339_millis(f.time);
    match format {
        OutputFormat::Jsonl => serde_json::json!({
            "ip": f.ip.to_string(),
            "port": f.port,
            "state": state,
            "ttl": f.ttl,
            "time": time.to_string(),
        })
        .to_string(),
        OutputFormat::Text if f.answer == palisade_dataplane::scan::Answer::Echo => {
            format!("{state:<6} {}  ttl {}  {time}", f.ip, f.ttl)
        }
        OutputFormat::Text => format!(
            "{state:<6} {}  ttl {}  {time}",
            std::net::SocketAddr::new(f.ip, f.port),
            f.ttl
        ),
    }
}

pub fn run(args: &ScanArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (sweep, cfg) = match args
        .target
        .sweep()
        .and_then(|s| Ok((s, scan_config(args)?)))
    {
        Ok(v) => v,
        Err(e) => return Ok(usage_error(&e)),
    };
    let mut outputs = match Outputs::open(args) {
        Ok(o) => o,
        Err(OutputsError::Usage(e)) => return Ok(usage_error(&e)),
        Err(OutputsError::Io(e)) => return Err(e),
    };
    let mut cfg = cfg;
    cfg.report_closed |= outputs.wants_closed();
    let start = std::time::SystemTime::now();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let progress = palisade_dataplane::scan::Progress::default();
    let planned = sweep.shard_len(cfg.shard).saturating_sub(cfg.resume);
    let show_progress = std::io::stderr().is_terminal();
    let mut write_error: Option<anyhow::Error> = None;
    let done = AtomicBool::new(false);
    let summary = std::thread::scope(|scope| {
        if show_progress {
            let (progress, done) = (&progress, &done);
            scope.spawn(move || progress_lines(progress, done, planned));
        }
        let result = palisade_dataplane::scan::run(&sweep, &cfg, &stop, &progress, |f| {
            if write_error.is_none()
                && let Err(e) = outputs.finding(&f, args.format, args.closed)
            {
                // Nowhere to put the findings (a full disk, a reader
                // gone): stop probing.
                write_error = Some(e);
                stop.store(true, Ordering::Relaxed);
            }
        });
        done.store(true, Ordering::Relaxed);
        result
    })?;
    if let Some(e) = write_error {
        return Err(e);
    }
    outputs.finish(&palisade::scan_output::ScanRun {
        args: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        version: env!("CARGO_PKG_VERSION").to_string(),
        start,
        end: std::time::SystemTime::now(),
        ports: sweep.ports().to_vec(),
        targets: sweep.host_count().into(),
        complete: !summary.interrupted
            && cfg.resume == 0
            && sweep.shard_len(cfg.shard) == sweep.len(),
        interrupted: summary.interrupted,
    })?;
    eprintln!(
        "palisade: {} probes sent ({} retries), {} replies ({} open, {} closed), {} echo requests sent, {} hosts answered echo, {} invalid, {} filter_invalid, {} duplicate, {} RSTs sent ({} dropped); {:.0} probes/s while sending ({:.3} s), {:.2} s in all; transport af_xdp on {} ({} copy, {} queue(s)), XDP {} mode{}",
        summary.sent,
        summary.retries,
        summary.replies,
        summary.open,
        summary.closed,
        summary.echo_sent,
        summary.echo_replies,
        summary.invalid,
        summary.filter_invalid,
        summary.duplicates,
        summary.rsts_sent,
        summary.rsts_dropped,
        summary.rate(),
        summary.send_duration.as_secs_f64(),
        summary.duration.as_secs_f64(),
        summary.interface,
        if summary.zero_copy { "zero" } else { "kernel" },
        summary.queues,
        summary
            .attach_mode
            .map_or("?".to_string(), |m| m.to_string()),
        if summary.interrupted {
            "; interrupted"
        } else {
            ""
        },
    );
    eprintln!("palisade: {}", retry_line(&summary, cfg.target_recall));
    if summary.ringbuf_full > 0 || summary.tx_busy > 0 {
        eprintln!(
            "palisade: {} replies lost to a full ring buffer, {} deferred transmits",
            summary.ringbuf_full, summary.tx_busy
        );
    }
    if let Some(path) = &args.summary_json {
        write_summary_json(path, &summary)?;
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// The summary's line on loss and retries.
fn retry_line(summary: &ScanSummary, target: Option<TargetRecall>) -> String {
    let loss = match summary.estimated_loss {
        Some(p) => format!("estimated loss {:.2}% per attempt", 100.0 * p),
        None => "loss not estimated (no retries, or too few answers)".to_string(),
    };
    let adaptive = match target {
        Some(t) => format!(
            " (adaptive, target recall {t}: {} extra retries, {} held back by the budget)",
            summary.extra_retries, summary.extra_retries_skipped
        ),
        None => String::new(),
    };
    let misses = match summary.expected_misses {
        Some(m) => format!("; expected misses {m:.2} open ports"),
        None => String::new(),
    };
    format!(
        "{loss}; retry rounds {}{adaptive}{misses}",
        summary.retry_rounds
    )
}

/// Writes the summary as one JSON object (with the sending rate) to `path`,
/// or to stderr for `-`.
fn write_summary_json(path: &str, summary: &ScanSummary) -> Result<()> {
    #[derive(serde::Serialize)]
    struct SummaryJson<'a> {
        #[serde(flatten)]
        summary: &'a ScanSummary,
        /// First probes per second while sending them.
        rate: f64,
    }
    let json = serde_json::to_string(&SummaryJson {
        summary,
        rate: summary.rate(),
    })?;
    if path == "-" {
        eprintln!("{json}");
    } else {
        std::fs::write(path, json + "\n").with_context(|| format!("cannot write {path}"))?;
    }
    Ok(())
}

/// One progress line a second on stderr (only when it is a terminal).
fn progress_lines(
    p: &palisade_dataplane::scan::Progress,
    done: &std::sync::atomic::AtomicBool,
    planned: u64,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let start = std::time::Instant::now();
    while !done.load(Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let secs = start.elapsed().as_secs_f64();
        let sent = p.sent.load(Relaxed);
        let rate = sent as f64 / secs.max(1e-3);
        let pct = 100.0 * sent as f64 / planned.max(1) as f64;
        let eta = (planned.saturating_sub(sent)) as f64 / rate.max(1.0);
        eprint!(
            "\rpalisade: {rate:>10.0} pps  {pct:5.1}% done  ETA {eta:>5.0} s  {} open   ",
            p.open.load(Relaxed)
        );
    }
    eprintln!();
}
