//! Events through NATS JetStream with acknowledgements: throughput, and the
//! latency from the outbox commit to the JetStream acknowledgement.
//!
//! A writer thread commits events to the SQLite outbox (as the daemon does
//! after each scan), a drainer delivers them with the real `NatsSink` to a
//! real nats-server and marks them delivered after the acks. Two runs: as
//! fast as possible (throughput), and at a fixed offered rate of 20,000
//! events/s (latency without a backlog).
//!
//! Run: `cargo bench -p palisade-benches --bench events` (or `cargo xtask bench`).
//! `-- --quick` sends fewer events.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use palisade::daemon::now_ms;
use palisade::store::{OutboxEntry, Store};
use palisade_outputs::nats::NatsOptions;
use palisade_outputs::schema::{Envelope, EventData, PortEvent, Severity};
use palisade_outputs::sink::{NatsSink, NatsSinkOptions, Sink};
use palisade_outputs::testing::NatsServer;

fn envelope(i: u64) -> Envelope {
    let data = EventData::UnexpectedPortOpen(PortEvent {
        monitor: format!("bench-{}", i % 100),
        host: "198.18.0.2".into(),
        address: "198.18.0.2".into(),
        port: (i % 65_535) as u16 + 1,
        state: Some("open".into()),
        expected: false,
        first_seen: "2026-11-29T12:00:00.000Z".into(),
        confirmed_at: "2026-11-29T12:00:01.000Z".into(),
        resolved_at: None,
        incident_id: format!("bench-{i}"),
        incident_kind: "unexpected_port_open".into(),
        severity: Severity::High,
        reason: None,
    });
    Envelope::new(
        format!("bench-{i}:opened"),
        "palisade://bench".into(),
        "2026-11-29T12:00:01.000Z".into(),
        data,
    )
}

struct Run {
    events: u64,
    seconds: f64,
    latency: Histogram<u64>,
}

/// Commits `total` events in transactions of `batch`, paced to `rate`
/// events/s (None: as fast as possible), and drains them to NATS.
fn run(
    url: &str,
    dir: &std::path::Path,
    name: &str,
    total: u64,
    batch: u64,
    rate: Option<u64>,
) -> Run {
    let db = dir.join(format!("{name}.db"));
    let mut writer = Store::open(&db).expect("store");
    let mut reader = Store::open(&db).expect("store");
    let (tx, rx) = mpsc::channel::<(i64, Instant)>();
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        let mut i = 0u64;
        while i < total {
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            let n = batch.min(total - i);
            let entries: Vec<OutboxEntry> = (i..i + n)
                .map(|k| {
                    let e = envelope(k);
                    OutboxEntry {
                        id: e.id.clone(),
                        kind: e.kind().to_string(),
                        payload: serde_json::to_string(&e).expect("json"),
                    }
                })
                .collect();
            writer.enqueue("bench", &entries, now_ms()).expect("commit");
            let committed = Instant::now();
            for k in i..i + n {
                let _ = tx.send((k as i64, committed));
            }
            i += n;
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut sink = rt
        .block_on(NatsSink::connect(NatsSinkOptions {
            nats: NatsOptions {
                urls: vec![url.to_string()],
                ..NatsOptions::default()
            },
            stream: format!("BENCH_{}", name.to_uppercase()),
            subject_prefix: format!("bench{name}"),
            ..NatsSinkOptions::default()
        }))
        .expect("connect");
    let mut committed_at: HashMap<String, Instant> = HashMap::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut done = 0u64;
    while done < total {
        for (k, t) in rx.try_iter() {
            committed_at.insert(format!("bench-{k}:opened"), t);
        }
        let rows = reader.pending("nats", 1024).expect("pending");
        if rows.is_empty() {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let envelopes: Vec<Envelope> = rows
            .iter()
            .map(|r| serde_json::from_str(&r.payload).expect("envelope"))
            .collect();
        let acked = rt.block_on(sink.publish(&envelopes)).expect("publish");
        let now = Instant::now();
        let seqs: Vec<i64> = rows[..acked].iter().map(|r| r.seq).collect();
        reader
            .mark_delivered("nats", &seqs, now_ms())
            .expect("mark");
        for (k, t) in rx.try_iter() {
            committed_at.insert(format!("bench-{k}:opened"), t);
        }
        for r in &rows[..acked] {
            if let Some(t) = committed_at.remove(&r.event_id) {
                latency.saturating_record(now.duration_since(t).as_micros().max(1) as u64);
            }
        }
        done += acked as u64;
    }
    producer.join().expect("producer");
    Run {
        events: done,
        seconds: start.elapsed().as_secs_f64(),
        latency,
    }
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
    let total = if quick || under_test { 4_000 } else { 100_000 };
    let nats = NatsServer::start();
    let dir = std::env::temp_dir().join(format!("palisade-bench-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut figures = Vec::new();
    let mut report = |what: &str, r: &Run| {
        let ms = |q: f64| r.latency.value_at_quantile(q) as f64 / 1000.0;
        let per_s = r.events as f64 / r.seconds;
        println!(
            "events/{what}: {} events in {:.2} s = {per_s:.0} events/s; commit -> JetStream ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            r.events,
            r.seconds,
            ms(0.50),
            ms(0.99),
            r.latency.max() as f64 / 1000.0,
        );
        figures.push(serde_json::json!({
            "run": format!("events/{what}"),
            "events": r.events,
            "events_per_s": per_s,
            "p50_ms": ms(0.50),
            "p99_ms": ms(0.99),
            "max_ms": r.latency.max() as f64 / 1000.0,
        }));
    };
    let max = run(&nats.url, &dir, "max", total, 500, None);
    report("max_rate", &max);
    let paced = run(
        &nats.url,
        &dir,
        "paced",
        total.min(60_000),
        100,
        Some(20_000),
    );
    report("at_20k_per_s", &paced);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = json_path {
        std::fs::write(path, serde_json::Value::from(figures).to_string()).expect("--json FILE");
    }
}
