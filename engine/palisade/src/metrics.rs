//! The daemon's own metrics (`/metrics`, through the `prometheus-client`
//! crate).
//!
//! Two kinds of values:
//!
//! * what only this process sees, counted as it happens: sweeps, probes,
//!   replies, delivery failures. The daemon's sweep records the numbers of
//!   the same [`ScanSummary`] and [`SweepResult`] its scan summary events
//!   are made of ([`Metrics::record_scan`], [`Metrics::record_sweep`]).
//!   Counters count from the start of this process (Prometheus' `rate()` and
//!   `increase()` handle the restart);
//! * what the store knows ([`StoreGauges`]: open incidents, each sink's
//!   queue, each monitor's last conclusive full scan, the monitors, the
//!   store's size), read at scrape time by the HTTP handler on its own
//!   connection and encoded with the rest ([`Metrics::encode`]). The store
//!   is the one source of truth for these (the daemon writes incidents,
//!   the sinks' threads deliver, the API edits monitors): a copy kept in
//!   memory would have to follow every one of those writers, and series of
//!   a removed monitor or sink would linger. A scrape reads a few counts in
//!   one read transaction (WAL: it never waits for the daemon's writes).
//!
//! The exposition is OpenMetrics 1.0 for a client that asks for it
//! (Prometheus does), else the Prometheus text format 0.0.4
//! ([`Format::negotiate`]).

use std::sync::RwLock;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use palisade_core::monitor::Millis;
use palisade_core::plan::{ScanKind, SweepEnd};
use palisade_dataplane::scan::ScanSummary;

use crate::store::StoreGauges;

/// The prefix of every metric.
pub const PREFIX: &str = "palisade";

/// Upper bounds of the sweep duration histogram's buckets, in seconds: a
/// re-check takes about `scan.wait`, a full sweep of 65,535 ports per
/// address from seconds to hours.
pub const SWEEP_BUCKETS: [f64; 14] = [
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
];

/// How a sweep ended ([`SweepEnd`]), as the `outcome` label.
pub fn outcome(end: &SweepEnd) -> &'static str {
    match end {
        SweepEnd::Completed => "completed",
        SweepEnd::NothingResolved => "nothing_resolved",
        SweepEnd::Interrupted => "interrupted",
        SweepEnd::RepliesLost(_) => "replies_lost",
        SweepEnd::Failed(_) => "failed",
    }
}

const OUTCOMES: [&str; 5] = [
    "completed",
    "replies_lost",
    "nothing_resolved",
    "interrupted",
    "failed",
];
const KINDS: [ScanKind; 2] = [ScanKind::Full, ScanKind::Recheck];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SweepLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabel {
    probe: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabel {
    answer: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MonitorLabel {
    monitor: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IncidentLabel {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn sweep_histogram() -> Histogram {
    Histogram::new(SWEEP_BUCKETS)
}

/// The daemon's metrics registry and what the HTTP server needs to know
/// of the data path.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sweep_duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    sweeps: Family<SweepLabels, Counter>,
    probes: Family<ProbeLabel, Counter>,
    replies: Family<AnswerLabel, Counter>,
    invalid: Family<StageLabel, Counter>,
    replies_lost: Counter,
    achieved_rate: FloatGauge,
    data_path_up: Gauge,
    delivery_failures: Family<SinkLabel, Counter>,
    /// Why the last sweep that tried could not start the data path.
    data_path_problem: RwLock<Option<String>>,
    /// The sinks delivered to now (their queues are read at scrape time).
    sinks: RwLock<Vec<String>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// The registry with every metric at zero, and the start time now.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let sweep_duration =
            Family::<KindLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                sweep_histogram,
            );
        registry.register_with_unit(
            "sweep_duration",
            "How long each sweep took, from its start to the end of the wait for late \
             replies (finished - started of its scan summary events); kind full (every port of \
             the monitors due) or recheck (only the ports that deviated once)",
            Unit::Seconds,
            sweep_duration.clone(),
        );
        let sweeps = Family::<SweepLabels, Counter>::default();
        registry.register(
            "sweeps",
            "Sweeps by kind and outcome: completed; replies_lost (the reply path dropped \
             replies, the scans are inconclusive); nothing_resolved (no host resolved); \
             interrupted (the daemon was stopped); failed (the scanner could not run, see \
             palisade_data_path_up and the log)",
            sweeps.clone(),
        );
        let probes = Family::<ProbeLabel, Counter>::default();
        registry.register(
            "probes_sent",
            "Probes sent: syn (first SYN of each address and port: a full sweep sends \
             65535 per address), syn_retry (SYNs sent again to steps nothing answered, \
             scan.retries), echo (ICMP and ICMPv6 echo requests to the hosts pinged)",
            probes.clone(),
        );
        let replies = Family::<AnswerLabel, Counter>::default();
        registry.register(
            "replies",
            "Valid replies, the first of each address and port: open (SYN-ACK), closed \
             (RST), echo (an address answered ping, once per sweep)",
            replies.clone(),
        );
        let invalid = Family::<StageLabel, Counter>::default();
        registry.register(
            "invalid_replies",
            "Replies dropped as invalid: stage filter (by the XDP filter, because the kernel \
             would refuse them too: a bad checksum, a fragment, a header past the packet), \
             classifier (failed the cookie check: forged, stale or unrelated); never reported \
             as findings",
            invalid.clone(),
        );
        let replies_lost = Counter::default();
        registry.register(
            "replies_lost",
            "Replies lost on the reply path (the XDP filter's ring buffer was full); a sweep \
             that lost any is inconclusive: lower scan.rate if this grows",
            replies_lost.clone(),
        );
        let achieved_rate = FloatGauge::default();
        registry.register(
            "achieved_rate_probes_per_second",
            "First SYN probes per second the last sweep that ran achieved while sending them \
             (probes / send time): compare with scan.rate and scan.per_host_rate",
            achieved_rate.clone(),
        );
        let data_path_up = Gauge::default();
        data_path_up.set(1);
        registry.register(
            "data_path_up",
            "1 if the last sweep that probed could start its data path (route, AF_XDP \
             sockets, the XDP reply filter), 0 if it could not (then /readyz fails); 1 \
             before the first sweep",
            data_path_up.clone(),
        );
        let delivery_failures = Family::<SinkLabel, Counter>::default();
        registry.register(
            "delivery_failures",
            "Failed attempts to deliver events to a sink (connect, publish, timeout, partial \
             acknowledgement); the events wait in the outbox and are retried with backoff",
            delivery_failures.clone(),
        );
        let start_time = FloatGauge::default();
        start_time.set(now_ms() as f64 / 1000.0);
        registry.register_with_unit(
            "start_time",
            "When this daemon started, unix time",
            Unit::Seconds,
            start_time,
        );
        registry.register(
            "build",
            "The palisade build serving these metrics (always 1)",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        let metrics = Metrics {
            registry,
            sweep_duration,
            sweeps,
            probes,
            replies,
            invalid,
            replies_lost,
            achieved_rate,
            data_path_up,
            delivery_failures,
            data_path_problem: RwLock::new(None),
            sinks: RwLock::new(Vec::new()),
        };
        // Every series exists from the start, at 0.
        for kind in KINDS {
            let _ = metrics.sweep_duration.get_or_create(&KindLabel {
                kind: kind.as_str(),
            });
            for outcome in OUTCOMES {
                let _ = metrics.sweeps.get_or_create(&SweepLabels {
                    kind: kind.as_str(),
                    outcome,
                });
            }
        }
        for probe in ["syn", "syn_retry", "echo"] {
            let _ = metrics.probes.get_or_create(&ProbeLabel { probe });
        }
        for answer in ["open", "closed", "echo"] {
            let _ = metrics.replies.get_or_create(&AnswerLabel { answer });
        }
        for stage in ["filter", "classifier"] {
            let _ = metrics.invalid.get_or_create(&StageLabel { stage });
        }
        metrics
    }

    /// A sweep of `kind` ended (`end`); it ran from `started` to `finished`
    /// (unix ms, the times of its scan summary events).
    pub fn record_sweep(&self, kind: ScanKind, end: &SweepEnd, started: Millis, finished: Millis) {
        let kind = kind.as_str();
        self.sweep_duration
            .get_or_create(&KindLabel { kind })
            .observe(finished.saturating_sub(started).max(0) as f64 / 1000.0);
        self.sweeps
            .get_or_create(&SweepLabels {
                kind,
                outcome: outcome(end),
            })
            .inc();
    }

    /// The scanner ran (its data path started) and counted this.
    pub fn record_scan(&self, s: &ScanSummary) {
        let probe = |probe, n| {
            self.probes.get_or_create(&ProbeLabel { probe }).inc_by(n);
        };
        probe("syn", s.sent);
        probe("syn_retry", s.retries);
        probe("echo", s.echo_sent);
        let answer = |answer, n| {
            self.replies
                .get_or_create(&AnswerLabel { answer })
                .inc_by(n);
        };
        answer("open", s.open);
        answer("closed", s.closed);
        answer("echo", s.echo_replies);
        let stage = |stage, n| {
            self.invalid.get_or_create(&StageLabel { stage }).inc_by(n);
        };
        stage("filter", s.filter_invalid);
        stage("classifier", s.invalid);
        self.replies_lost.inc_by(s.ringbuf_full);
        self.achieved_rate.set(s.rate());
        self.data_path_up.set(1);
        if let Ok(mut problem) = self.data_path_problem.write() {
            *problem = None;
        }
    }

    /// The scanner could not start its data path: `why`.
    pub fn data_path_failed(&self, why: &str) {
        self.data_path_up.set(0);
        if let Ok(mut problem) = self.data_path_problem.write() {
            *problem = Some(why.to_owned());
        }
    }

    /// Why the last sweep that tried could not start the data path; `None`
    /// if it could (or no sweep tried yet).
    pub fn data_path_problem(&self) -> Option<String> {
        self.data_path_problem
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// An attempt to deliver to `sink` failed.
    pub fn delivery_failed(&self, sink: &str) {
        self.delivery_failures
            .get_or_create(&SinkLabel {
                sink: sink.to_owned(),
            })
            .inc();
    }

    /// The sinks delivered to now (after a start or a reload).
    pub fn set_sinks(&self, names: &[&str]) {
        for sink in names {
            let _ = self.delivery_failures.get_or_create(&SinkLabel {
                sink: (*sink).to_owned(),
            });
        }
        if let Ok(mut sinks) = self.sinks.write() {
            *sinks = names.iter().map(|s| (*s).to_owned()).collect();
        }
    }

    /// The sinks delivered to now.
    pub fn sinks(&self) -> Vec<String> {
        self.sinks.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The exposition in `format`: this process's metrics, then the store's
    /// `gauges` (read for this scrape).
    pub fn encode(&self, gauges: &StoreGauges, format: Format) -> Result<String, std::fmt::Error> {
        let store = store_registry(gauges);
        let mut out = String::new();
        match format {
            Format::OpenMetrics => {
                use prometheus_client::encoding::text;
                text::encode_registry(&mut out, &self.registry)?;
                text::encode_registry(&mut out, &store)?;
                text::encode_eof(&mut out)?;
            }
            Format::PrometheusText => {
                use prometheus_client::encoding::prometheus_text;
                prometheus_text::encode(&mut out, &self.registry)?;
                prometheus_text::encode(&mut out, &store)?;
            }
        }
        Ok(out)
    }
}

/// A registry of the store's gauges, for one scrape.
fn store_registry(g: &StoreGauges) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    let incidents = Family::<IncidentLabel, Gauge>::default();
    for (kind, n) in &g.open_incidents {
        incidents
            .get_or_create(&IncidentLabel { kind: kind.clone() })
            .set(*n as i64);
    }
    registry.register(
        "open_incidents",
        "Open incidents by kind: unexpected_port_open and expected_port_down (per port), \
         host_unreachable and host_answers_all_ports (per address), scan_failed (sweeps \
         fail: nothing is being watched) and monitor_stale (per monitor without a \
         conclusive full scan for twice its period)",
        incidents,
    );
    let pending = Family::<SinkLabel, Gauge>::default();
    let dead = Family::<SinkLabel, Gauge>::default();
    for s in &g.sinks {
        let label = SinkLabel {
            sink: s.sink.clone(),
        };
        pending.get_or_create(&label).set(s.pending as i64);
        dead.get_or_create(&label).set(s.dead_letters as i64);
    }
    registry.register(
        "outbox_pending_events",
        "Events in the outbox the sink has not acknowledged yet: a queue that keeps \
         growing is a sink that is down or too slow (see palisade_delivery_failures_total)",
        pending,
    );
    registry.register(
        "outbox_dead_letters",
        "Events the sink refused for good (a webhook's 4xx), set aside: `palisade \
         deliveries list` shows them, `palisade deliveries retry` sends them again",
        dead,
    );
    let last_full = Family::<MonitorLabel, FloatGauge>::default();
    for (monitor, at) in &g.last_full {
        last_full
            .get_or_create(&MonitorLabel {
                monitor: monitor.clone(),
            })
            .set(*at as f64 / 1000.0);
    }
    registry.register_with_unit(
        "monitor_last_conclusive_full_scan_timestamp",
        "When the monitor's last conclusive full scan started, unix time (the `started` of \
         its scan summary event): alert when time() minus this exceeds the monitor's period",
        Unit::Seconds,
        last_full,
    );
    let monitors = Family::<StateLabel, Gauge>::default();
    monitors
        .get_or_create(&StateLabel { state: "enabled" })
        .set(g.monitors_enabled as i64);
    monitors
        .get_or_create(&StateLabel { state: "disabled" })
        .set(g.monitors_disabled as i64);
    registry.register(
        "monitors",
        "Monitors in the store, enabled (scanned) or disabled",
        monitors,
    );
    let size = Gauge::<i64>::default();
    size.set(i64::try_from(g.size_bytes).unwrap_or(i64::MAX));
    registry.register_with_unit(
        "store_size",
        "The size of the SQLite store (database and write-ahead log); it levels off \
         under store.retain",
        Unit::Bytes,
        size,
    );
    registry
}

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    PrometheusText,
}

impl Format {
    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format a client's `Accept` header prefers: OpenMetrics if it
    /// names `application/openmetrics-text` with a quality above 0 and no
    /// lower than `text/plain`'s, else the Prometheus text format (what
    /// curl, promtool and any client that does not ask get).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::PrometheusText;
        };
        let quality = |wanted: &str| -> Option<f64> {
            accept
                .split(',')
                .filter_map(|range| {
                    let mut parts = range.split(';').map(str::trim);
                    let media = parts.next()?;
                    if !media.eq_ignore_ascii_case(wanted) {
                        return None;
                    }
                    let q = parts
                        .filter_map(|p| p.split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                        .unwrap_or(1.0);
                    Some(q)
                })
                .reduce(f64::max)
        };
        match quality("application/openmetrics-text") {
            Some(q) if q > 0.0 && q >= quality("text/plain").unwrap_or(0.0) => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::SinkGauges;

    fn summary(sent: u64, open: u64) -> ScanSummary {
        ScanSummary {
            sent,
            retries: 2,
            echo_sent: 1,
            echo_replies: 1,
            open,
            closed: sent - open,
            invalid: 3,
            filter_invalid: 4,
            ringbuf_full: 0,
            send_duration: Duration::from_millis(500),
            ..ScanSummary::default()
        }
    }

    fn gauges() -> StoreGauges {
        StoreGauges {
            open_incidents: vec![
                ("unexpected_port_open".into(), 2),
                ("scan_failed".into(), 0),
            ],
            sinks: vec![SinkGauges {
                sink: "jsonl:/var/log/p \"x\".jsonl".into(),
                pending: 5,
                dead_letters: 1,
            }],
            last_full: vec![("web-1".into(), 1_700_000_000_123)],
            monitors_enabled: 3,
            monitors_disabled: 1,
            size_bytes: 4096,
        }
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
    }

    #[test]
    fn counters_add_up_sweep_after_sweep() {
        let m = Metrics::new();
        m.record_scan(&summary(65_535, 3));
        m.record_scan(&summary(2, 1));
        m.record_sweep(ScanKind::Full, &SweepEnd::Completed, 1_000, 3_500);
        m.record_sweep(ScanKind::Recheck, &SweepEnd::Completed, 10_000, 10_750);
        m.record_sweep(
            ScanKind::Full,
            &SweepEnd::Failed("gone".into()),
            20_000,
            20_010,
        );
        let text = m.encode(&gauges(), Format::PrometheusText).unwrap();
        assert_eq!(
            line(&text, "palisade_probes_sent_total{probe=\"syn\"}"),
            "palisade_probes_sent_total{probe=\"syn\"} 65537"
        );
        assert!(text.contains("palisade_probes_sent_total{probe=\"syn_retry\"} 4\n"));
        assert!(text.contains("palisade_replies_total{answer=\"open\"} 4\n"));
        assert!(text.contains("palisade_replies_total{answer=\"closed\"} 65533\n"));
        assert!(text.contains("palisade_invalid_replies_total{stage=\"filter\"} 8\n"));
        assert!(text.contains("palisade_invalid_replies_total{stage=\"classifier\"} 6\n"));
        assert!(text.contains("palisade_achieved_rate_probes_per_second 4.0\n"));
        assert!(text.contains("palisade_sweeps_total{kind=\"full\",outcome=\"completed\"} 1\n"));
        assert!(text.contains("palisade_sweeps_total{kind=\"full\",outcome=\"failed\"} 1\n"));
        assert!(
            text.contains("palisade_sweeps_total{kind=\"recheck\",outcome=\"interrupted\"} 0\n")
        );
        assert!(text.contains("palisade_sweep_duration_seconds_sum{kind=\"full\"} 2.51\n"));
        assert!(text.contains("palisade_sweep_duration_seconds_count{kind=\"recheck\"} 1\n"));
        assert!(
            text.contains("palisade_sweep_duration_seconds_bucket{kind=\"full\",le=\"1\"} 1\n")
        );
        assert!(text.contains("palisade_data_path_up 1\n"));
        m.data_path_failed("no route");
        assert_eq!(m.data_path_problem().as_deref(), Some("no route"));
        m.record_scan(&summary(1, 0));
        assert_eq!(m.data_path_problem(), None);
    }

    #[test]
    fn the_store_gauges_are_encoded_with_their_labels_escaped() {
        let m = Metrics::new();
        m.set_sinks(&["nats:PALISADE"]);
        m.delivery_failed("nats:PALISADE");
        m.delivery_failed("nats:PALISADE");
        assert_eq!(m.sinks(), ["nats:PALISADE"]);
        let text = m.encode(&gauges(), Format::PrometheusText).unwrap();
        for expected in [
            "palisade_delivery_failures_total{sink=\"nats:PALISADE\"} 2",
            "palisade_open_incidents{kind=\"unexpected_port_open\"} 2",
            "palisade_open_incidents{kind=\"scan_failed\"} 0",
            "palisade_outbox_pending_events{sink=\"jsonl:/var/log/p \\\"x\\\".jsonl\"} 5",
            "palisade_outbox_dead_letters{sink=\"jsonl:/var/log/p \\\"x\\\".jsonl\"} 1",
            "palisade_monitor_last_conclusive_full_scan_timestamp_seconds{monitor=\"web-1\"} 1700000000.123",
            "palisade_monitors{state=\"enabled\"} 3",
            "palisade_monitors{state=\"disabled\"} 1",
            "palisade_store_size_bytes 4096",
            "# TYPE palisade_build_info gauge",
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "no line {expected:?} in\n{text}"
            );
        }
        assert!(line(&text, "palisade_build_info{").contains(env!("CARGO_PKG_VERSION")));
        assert!(!text.contains("# EOF"));
        // Every HELP teaches something and ends in one period.
        for help in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(
                help.len() > 40 && help.ends_with('.') && !help.ends_with(".."),
                "{help}"
            );
        }
        let open = m.encode(&gauges(), Format::OpenMetrics).unwrap();
        assert!(open.ends_with("# EOF\n"));
        assert!(open.contains("# TYPE palisade_build info\n"));
        assert!(open.contains("# UNIT palisade_store_size_bytes bytes\n"));
        assert_eq!(open.matches("# EOF").count(), 1);
    }

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_the_text_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
        assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
        assert_eq!(
            Format::negotiate(Some("text/plain, application/openmetrics-text;q=0.5")),
            Format::PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn outcomes_name_every_way_a_sweep_ends() {
        for end in [
            SweepEnd::Completed,
            SweepEnd::NothingResolved,
            SweepEnd::Interrupted,
            SweepEnd::RepliesLost(1),
            SweepEnd::Failed("x".into()),
        ] {
            assert!(OUTCOMES.contains(&outcome(&end)));
        }
    }
}
