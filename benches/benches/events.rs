//! Events through NATS JetStream with acknowledgements: the rate the
//! daemon's delivery keeps up with, and the latency from the outbox commit
//! to the delivery.
//!
//! A writer thread commits events to the SQLite outbox at a fixed offered
//! rate, one transaction every 5 ms (as the daemon commits a sweep's
//! slices), and wakes the delivery after each. The events go to a real
//! nats-server (file storage) through one of:
//!
//! * `pipelined`: the daemon's own delivery (`OutboxDelivery` with one NATS
//!   sink): up to the sink's window of acknowledgements in flight, each run
//!   of acknowledgements marked delivered in one transaction;
//! * `batches`: the path before it, kept for reference within the same run:
//!   up to 256 pending rows read, published with `NatsSink::publish` (their
//!   acknowledgements awaited at the end of the batch), marked, then the next
//!   batch.
//!
//! A reader polls every millisecond. An event's latency (`p50_ms`,
//! `p99_ms`, the goal's "commit -> ack") runs from the commit of its outbox
//! row to the poll that sees its JetStream acknowledgement (the delivery's
//! `OutboxDelivery::acknowledged`, the last row acknowledged with every one
//! before it; for `batches` the end of the batch's publish); `marked_p99_ms`
//! runs on to the poll that sees it marked delivered in the store. Both
//! hold up to a millisecond of polling.
//!
//! Runs: both paths at 20,000 events/s, three times each, taking turns (the
//! run with the median p99 of each is reported); then the pipelined one at
//! rising rates from 50,000 events/s until it no longer keeps up (delivers
//! less than 95% of the offered rate, or p99 above 50 ms). The highest rate
//! it kept up with is `events/max_sustained`.
//!
//! Run: `cargo bench -p palisade-benches --bench events` (or `cargo xtask
//! bench`). `-- --quick`: runs of 1.5 s instead of 5 s.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use palisade::config::{SinkSpec, SinkStart, SinkTarget};
use palisade::daemon::delivery::OutboxDelivery;
use palisade::daemon::now_ms;
use palisade::metrics::Metrics;
use palisade::store::{OutboxEntry, Store};
use palisade_outputs::nats::NatsOptions;
use palisade_outputs::schema::{Envelope, EventData, PortEvent, Severity};
use palisade_outputs::sink::{NatsSink, NatsSinkOptions, Sink};
use palisade_outputs::testing::NatsServer;

/// The latency a sustained rate must keep at p99.
const P99_LIMIT_MS: f64 = 50.0;
/// The share of the offered rate a run must deliver to keep up.
const KEEP_UP: f64 = 0.95;
/// How often the writer commits.
const COMMIT_EVERY: Duration = Duration::from_millis(5);
/// How many rows one batch of the `batches` path takes (the daemon's batch
/// before pipelining).
const OLD_BATCH: usize = 256;

/// The outbox row of an `unexpected_port_open` event, its JSON with `IDX`
/// for the event's number and `MON` for its monitor's: filled in per event
/// (cheaper than building and encoding each envelope, so the writer leaves
/// the CPU to the delivery measured).
fn template() -> String {
    let data = EventData::UnexpectedPortOpen(PortEvent {
        monitor: "bench-MON".into(),
        host: "198.18.0.2".into(),
        address: "198.18.0.2".into(),
        port: 8080,
        state: Some("open".into()),
        expected: false,
        first_seen: "2026-11-29T12:00:00.000Z".into(),
        confirmed_at: "2026-11-29T12:00:01.000Z".into(),
        resolved_at: None,
        incident_id: "bench-IDX".into(),
        incident_kind: "unexpected_port_open".into(),
        severity: Severity::High,
        reason: None,
    });
    let e = Envelope::new(
        "bench-IDX:opened".into(),
        "palisade://bench".into(),
        "2026-11-29T12:00:01.000Z".into(),
        data,
    );
    let json = serde_json::to_string(&e).expect("json");
    assert_eq!(json.matches("IDX").count(), 2, "{json}");
    assert_eq!(json.matches("MON").count(), 2, "{json}");
    json
}

/// Events `from..to` as outbox rows.
fn entries(template: &str, from: u64, to: u64) -> Vec<OutboxEntry> {
    (from..to)
        .map(|k| OutboxEntry {
            id: format!("bench-{k}:opened"),
            kind: "unexpected_port_open".to_string(),
            payload: template
                .replace("IDX", &k.to_string())
                .replace("MON", &(k % 100).to_string()),
        })
        .collect()
}

/// Which delivery drains the outbox.
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    Pipelined,
    Batches,
}

struct Run {
    offered: u64,
    events: u64,
    delivered: u64,
    /// Events per second from the first commit to the last delivery seen.
    per_s: f64,
    /// From an event's commit to its JetStream acknowledgement (the goal).
    acked: Histogram<u64>,
    /// From an event's commit to its mark as delivered in the store.
    marked: Histogram<u64>,
    /// CPU time per event of the delivery's thread, and of nats-server.
    delivery_cpu_us: f64,
    server_cpu_us: f64,
}

impl Run {
    /// Commit -> acknowledgement, at quantile `q`.
    fn ms(&self, q: f64) -> f64 {
        self.acked.value_at_quantile(q) as f64 / 1000.0
    }

    /// Commit -> marked delivered, at quantile `q`.
    fn marked_ms(&self, q: f64) -> f64 {
        self.marked.value_at_quantile(q) as f64 / 1000.0
    }

    fn kept_up(&self) -> bool {
        self.delivered == self.events
            && self.per_s >= KEEP_UP * self.offered as f64
            && self.ms(0.99) <= P99_LIMIT_MS
    }
}

/// What the writer shares with the reader.
struct Shared {
    /// The commit time of each outbox seq (index = seq).
    committed_at: Mutex<Vec<Instant>>,
    /// The last seq committed.
    committed: AtomicI64,
    writing: AtomicBool,
}

/// Offers `rate` events/s for `seconds` to the delivery `path`, on a fresh
/// store and stream.
fn run(
    nats: &NatsServer,
    dir: &Path,
    name: &str,
    delivery: Delivery,
    rate: u64,
    seconds: f64,
) -> Run {
    let db = dir.join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let options = NatsSinkOptions {
        nats: NatsOptions {
            urls: vec![nats.url.clone()],
            ..NatsOptions::default()
        },
        stream: format!("BENCH_{}", name.to_uppercase()),
        subject_prefix: format!("bench{name}"),
        ..NatsSinkOptions::default()
    };
    let spec = SinkSpec::unnamed(SinkTarget::Nats(options.clone()), SinkStart::All);
    let sink_name = spec.name.clone();
    let mut writer = Store::open(&db).expect("store");
    let template = template();
    let total = (rate as f64 * seconds) as u64;
    // A few events first: the sink connects and creates its stream.
    const WARM_UP: u64 = 50;
    let shared = Arc::new(Shared {
        committed_at: Mutex::new(Vec::with_capacity((total + WARM_UP + 1) as usize)),
        committed: AtomicI64::new(0),
        writing: AtomicBool::new(true),
    });
    let (wake_tx, wake_rx) = mpsc::sync_channel::<()>(1);
    // The batch-at-a-time delivery's last acknowledged row.
    let batches_acked = Arc::new(AtomicI64::new(0));
    let mut pipelined = None;
    let stop = Arc::new(AtomicBool::new(false));
    let mut old = None;
    match delivery {
        Delivery::Pipelined => {
            pipelined = Some(
                OutboxDelivery::start(&mut writer, &db, vec![spec], Arc::new(Metrics::new()))
                    .expect("delivery"),
            );
        }
        Delivery::Batches => {
            let (db, sink_name, stop) = (db.clone(), sink_name.clone(), Arc::clone(&stop));
            let options = options.clone();
            let acked = Arc::clone(&batches_acked);
            old = Some(
                std::thread::Builder::new()
                    .name("batches".into())
                    .spawn(move || {
                        drain_in_batches(&db, &sink_name, options, &wake_rx, &stop, &acked);
                    })
                    .expect("thread"),
            );
        }
    }
    let wake = || match &pipelined {
        Some(d) => d.wake(),
        None => {
            let _ = wake_tx.try_send(());
        }
    };
    let reader = Store::open(&db).expect("store");
    // The warm-up, not measured.
    writer
        .enqueue("bench", &entries(&template, 0, WARM_UP), now_ms())
        .expect("commit");
    wake();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reader.pending(&sink_name, 1).expect("pending").len() == 1 {
        assert!(Instant::now() < deadline, "the warm-up was not delivered");
        std::thread::sleep(Duration::from_millis(5));
    }
    {
        let mut at = shared.committed_at.lock().expect("lock");
        at.resize((WARM_UP + 1) as usize, Instant::now());
    }
    shared.committed.store(WARM_UP as i64, Ordering::SeqCst);

    // The delivery's thread: the daemon's sink thread, or the batches one.
    let thread = match delivery {
        Delivery::Pipelined => "sink nats:",
        Delivery::Batches => "batches",
    };
    let cpu_before = (thread_cpu(thread), server_cpu());
    let start = Instant::now();
    let acknowledged = || match &pipelined {
        Some(d) => d.acknowledged(&sink_name).unwrap_or(0),
        None => batches_acked.load(Ordering::SeqCst),
    };
    let ((acked, marked), delivered, last_seen) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            poll(
                reader,
                &sink_name,
                &acknowledged,
                &shared,
                WARM_UP as i64,
                total,
            )
        });
        // The writer: every COMMIT_EVERY, the events due by then.
        let mut sent = 0u64;
        let mut tick = 0u32;
        while sent < total {
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            if due > sent {
                let from = WARM_UP + sent;
                writer
                    .enqueue("bench", &entries(&template, from, WARM_UP + due), now_ms())
                    .expect("commit");
                let at = Instant::now();
                shared
                    .committed_at
                    .lock()
                    .expect("lock")
                    .resize((WARM_UP + due + 1) as usize, at);
                shared
                    .committed
                    .store((WARM_UP + due) as i64, Ordering::SeqCst);
                wake();
                sent = due;
            }
            tick += 1;
            if let Some(wait) = (start + COMMIT_EVERY * tick).checked_duration_since(Instant::now())
            {
                std::thread::sleep(wait);
            }
        }
        shared.writing.store(false, Ordering::SeqCst);
        poller.join().expect("poller")
    });
    let cpu = (
        thread_cpu(thread).saturating_sub(cpu_before.0),
        server_cpu().saturating_sub(cpu_before.1),
    );
    stop.store(true, Ordering::SeqCst);
    if let Some(mut d) = pipelined {
        d.shutdown(Duration::from_secs(2));
    }
    if let Some(t) = old {
        let _ = wake_tx.try_send(());
        t.join().expect("drainer");
    }
    drop(writer);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    delete_stream(options);
    let span = last_seen.map_or(f64::INFINITY, |t| t.duration_since(start).as_secs_f64());
    Run {
        offered: rate,
        events: total,
        delivered,
        per_s: delivered as f64 / span,
        acked,
        marked,
        delivery_cpu_us: cpu.0.as_secs_f64() * 1e6 / delivered.max(1) as f64,
        server_cpu_us: cpu.1.as_secs_f64() * 1e6 / delivered.max(1) as f64,
    }
}

/// User and system time of a `/proc/.../stat` line (after the command).
fn stat_cpu(stat: &str) -> Duration {
    // Fields after "(comm)": state is 3rd; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// CPU time of this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> Duration {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            total += stat_cpu(&stat);
        }
    }
    total
}

/// CPU time of the nats-server this process started.
fn server_cpu() -> Duration {
    let me = std::process::id().to_string();
    let mut total = Duration::ZERO;
    for proc_ in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(proc_.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1);
        if head.ends_with("(nats-server") && ppid == Some(me.as_str()) {
            total += stat_cpu(&stat);
        }
    }
    total
}

/// Watches the delivery's acknowledgements and the store until every one of
/// `total` events after `base` is delivered (or 15 s after the writer
/// ended); returns the latencies (commit -> acknowledged, commit ->
/// marked), how many were delivered and when the last was seen.
fn poll(
    reader: Store,
    sink: &str,
    acknowledged: &(dyn Fn() -> i64 + Sync),
    shared: &Shared,
    base: i64,
    total: u64,
) -> ((Histogram<u64>, Histogram<u64>), u64, Option<Instant>) {
    let histogram = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
    let (mut acked, mut marked) = (histogram(), histogram());
    let mut seen_acked = base;
    let mut seen = base;
    let mut last_seen = None;
    let mut writer_done: Option<Instant> = None;
    let end = base + total as i64;
    while seen < end {
        let committed = shared.committed.load(Ordering::SeqCst);
        let first_pending = reader
            .pending(sink, 1)
            .expect("pending")
            .first()
            .map(|r| r.seq);
        let up_to = acknowledged().min(committed);
        let now = Instant::now();
        seen_acked = record_until(&mut acked, shared, seen_acked, up_to, now);
        let delivered = first_pending.map_or(committed, |p| (p - 1).min(committed));
        if delivered > seen {
            seen = record_until(&mut marked, shared, seen, delivered, now);
            last_seen = Some(now);
        }
        if !shared.writing.load(Ordering::SeqCst) {
            let done = *writer_done.get_or_insert(now);
            if now.duration_since(done) > Duration::from_secs(15) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    ((acked, marked), (seen - base) as u64, last_seen)
}

/// Records in `histogram` the latency, from its commit to `now`, of each
/// event after `seen` up to `up_to`; the new `seen`.
fn record_until(
    histogram: &mut Histogram<u64>,
    shared: &Shared,
    seen: i64,
    up_to: i64,
    now: Instant,
) -> i64 {
    if up_to <= seen {
        return seen;
    }
    let at = shared.committed_at.lock().expect("lock");
    for seq in seen + 1..=up_to {
        let us = now.duration_since(at[seq as usize]).as_micros().max(1);
        histogram.saturating_record(us as u64);
    }
    up_to
}

/// The delivery before pipelining: a batch read, published, marked; then
/// the next. Waits for a wake-up when nothing is pending.
fn drain_in_batches(
    db: &Path,
    sink_name: &str,
    options: NatsSinkOptions,
    wake: &mpsc::Receiver<()>,
    stop: &AtomicBool,
    acknowledged: &AtomicI64,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut store = Store::open(db).expect("store");
    let mut sink = rt.block_on(NatsSink::connect(options)).expect("connect");
    while !stop.load(Ordering::SeqCst) {
        let rows = store.pending(sink_name, OLD_BATCH).expect("pending");
        if rows.is_empty() {
            let _ = wake.recv_timeout(Duration::from_secs(1));
            continue;
        }
        let envelopes: Vec<Envelope> = rows
            .iter()
            .map(|r| serde_json::from_str(&r.payload).expect("envelope"))
            .collect();
        let acked = rt.block_on(sink.publish(&envelopes)).expect("publish");
        let seqs: Vec<i64> = rows[..acked].iter().map(|r| r.seq).collect();
        if let Some(&last) = seqs.last() {
            acknowledged.fetch_max(last, Ordering::SeqCst);
        }
        store
            .mark_delivered(sink_name, &seqs, now_ms())
            .expect("mark");
    }
}

/// Deletes a bench stream (its messages would fill the disk).
fn delete_stream(options: NatsSinkOptions) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stream = options.stream.clone();
        if let Ok(sink) = NatsSink::connect(options).await {
            let _ = sink.jetstream().delete_stream(&stream).await;
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench` passes --bench; `cargo test --benches` runs us too: keep it short then.
    let under_test = !args.iter().any(|a| a == "--bench");
    // `--json FILE`: also write the figures for machines (`cargo xtask bench`).
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1));
    let seconds = if under_test {
        0.2
    } else if quick {
        1.5
    } else {
        5.0
    };
    let nats = NatsServer::start();
    let dir = std::env::temp_dir().join(format!("palisade-bench-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut figures = Vec::new();
    // `runs`: the p99 of each repeated run when `r` is their median.
    let mut report = |what: &str, r: &Run, runs: &[f64]| {
        println!(
            "events/{what}: offered {} events/s for {seconds} s: {} of {} delivered, {:.0} events/s; \
             commit -> JetStream ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; -> marked p99 {:.2} ms{}; \
             CPU per event: delivery {:.1} us, nats-server {:.1} us{}",
            r.offered,
            r.delivered,
            r.events,
            r.per_s,
            r.ms(0.50),
            r.ms(0.99),
            r.acked.max() as f64 / 1000.0,
            r.marked_ms(0.99),
            if r.kept_up() {
                ""
            } else {
                " (did not keep up)"
            },
            r.delivery_cpu_us,
            r.server_cpu_us,
            if runs.len() > 1 {
                format!("; the median of p99s {runs:.2?} ms")
            } else {
                String::new()
            },
        );
        let mut figure = serde_json::json!({
            "run": format!("events/{what}"),
            "offered_per_s": r.offered,
            "events": r.delivered,
            "events_per_s": r.per_s,
            "p50_ms": r.ms(0.50),
            "p99_ms": r.ms(0.99),
            "max_ms": r.acked.max() as f64 / 1000.0,
            "marked_p50_ms": r.marked_ms(0.50),
            "marked_p99_ms": r.marked_ms(0.99),
            "kept_up": r.kept_up(),
            "delivery_cpu_us_per_event": r.delivery_cpu_us,
            "server_cpu_us_per_event": r.server_cpu_us,
        });
        if runs.len() > 1 {
            figure["p99_runs_ms"] = serde_json::json!(runs);
        }
        figures.push(figure);
    };
    // At 20,000 events/s, both deliveries, taking turns: the run with the
    // median p99 of each is reported (one run's p99 is a few milliseconds,
    // and a busy moment of the machine moves it as much).
    let repeats = if under_test { 1 } else { 3 };
    let mut at_20k: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for i in 0..repeats {
        for (k, delivery) in [Delivery::Batches, Delivery::Pipelined]
            .into_iter()
            .enumerate()
        {
            let name = format!("{}20k{i}", ["batches", "paced"][k]);
            at_20k[k].push(run(&nats, &dir, &name, delivery, 20_000, seconds));
        }
    }
    for (k, what) in ["batches_at_20k_per_s", "at_20k_per_s"]
        .into_iter()
        .enumerate()
    {
        let runs = &mut at_20k[k];
        runs.sort_by(|a, b| a.ms(0.99).total_cmp(&b.ms(0.99)));
        let p99s: Vec<f64> = runs.iter().map(|r| r.ms(0.99)).collect();
        report(what, &runs[runs.len() / 2], &p99s);
    }
    // Rising rates until the delivery no longer keeps up.
    let ladder: &[u64] = if under_test {
        &[50_000]
    } else {
        &[
            50_000, 60_000, 70_000, 80_000, 100_000, 120_000, 150_000, 200_000,
        ]
    };
    let mut best: Option<Run> = None;
    for &rate in ladder {
        let r = run(
            &nats,
            &dir,
            &format!("rate{}k", rate / 1000),
            Delivery::Pipelined,
            rate,
            seconds,
        );
        report(&format!("at_{}k_per_s", rate / 1000), &r, &[]);
        if !r.kept_up() {
            break;
        }
        best = Some(r);
    }
    match &best {
        Some(r) => report("max_sustained", r, &[]),
        None => println!(
            "events/max_sustained: none: the delivery did not keep up with {} events/s",
            ladder[0]
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = json_path {
        std::fs::write(path, serde_json::Value::from(figures).to_string()).expect("--json FILE");
    }
}
