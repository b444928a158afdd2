//! Delivery: the configured sinks drain the outbox, each on a thread of
//! its own ([`worker`]), so that no sink can hold up the sweeps.
//!
//! Each sink has a name (its delivery identity) and its own place in the
//! outbox; a row counts as delivered to a sink only after the sink
//! acknowledged it, so a sink that is down, slow or stuck loses nothing:
//! its rows wait and are retried with backoff. A sink seen for the first
//! time starts at the current end of the outbox or at its beginning
//! (`start`). An event a webhook refuses for good becomes a dead letter and
//! the sink goes on with the next. Each attempt is bounded in time, and one
//! that runs long is reported (log, `palisade status`). Stopping the daemon
//! never waits for a sink longer than [`SHUTDOWN_GRACE`].

mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{SinkSpec, SinkStart, SinkTarget};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use worker::Worker;

/// How long a stopping daemon waits for its sinks to finish what they are
/// doing; a sink still busy then is left (its events wait in the outbox).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The sinks to deliver to: the configured ones, plus a JSON lines file
/// (`--events`); standard output if that makes none.
///
/// The `--events` file is a sink named `jsonl:<path>` that starts with
/// everything the store holds (`start = "all"`): a file given to a `--once`
/// run from cron or a test holds every event, whatever ran before. When a
/// configured sink has that name already, it is that sink.
pub fn sink_specs(configured: &[SinkSpec], events: Option<&PathBuf>) -> Vec<SinkSpec> {
    let mut specs = configured.to_vec();
    if let Some(path) = events {
        let events = SinkSpec::unnamed(
            SinkTarget::Jsonl {
                path: Some(path.clone()),
            },
            SinkStart::All,
        );
        if !specs.iter().any(|s| s.name == events.name) {
            specs.push(events);
        }
    }
    if specs.is_empty() {
        specs.push(SinkSpec::unnamed(
            SinkTarget::Jsonl { path: None },
            SinkStart::New,
        ));
    }
    specs
}

/// Whether the sink publishes outbox rows of `kind`: scan summaries go to
/// NATS (`<prefix>.scans.<monitor>`) only, events everywhere.
pub fn sink_takes(target: &SinkTarget, kind: &str) -> bool {
    kind != "scan" || matches!(target, SinkTarget::Nats(_))
}

/// The wait after a failure, given the wait before it: 250 ms, doubling
/// with each consecutive failure, up to 30 s.
fn backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// The sinks' threads.
#[derive(Debug)]
pub struct OutboxDelivery {
    store_path: PathBuf,
    workers: Vec<Worker>,
    /// Workers being stopped (after a reload), reaped when they end.
    stopping: Vec<Worker>,
    /// Where the sinks count their failures, and which sinks there are.
    metrics: Arc<Metrics>,
}

impl OutboxDelivery {
    /// Makes every sink known to `store` (a new one starts where its
    /// `start` says) and starts delivering to each from the store at
    /// `store_path` (the same database); failures are counted in `metrics`.
    pub fn start(
        store: &mut Store,
        store_path: &Path,
        specs: Vec<SinkSpec>,
        metrics: Arc<Metrics>,
    ) -> Result<OutboxDelivery, DeliveryError> {
        let mut delivery = OutboxDelivery {
            store_path: store_path.to_path_buf(),
            workers: Vec::new(),
            stopping: Vec::new(),
            metrics,
        };
        for spec in specs {
            delivery.add(store, spec)?;
        }
        delivery.metrics.set_sinks(&delivery.names());
        Ok(delivery)
    }

    fn add(&mut self, store: &mut Store, spec: SinkSpec) -> Result<(), DeliveryError> {
        if store.register_sink(&spec.name, spec.start)? {
            tracing::info!(
                sink = %spec.name,
                start = match spec.start {
                    SinkStart::New => "new",
                    SinkStart::All => "all",
                },
                "a new sink: it gets {}",
                match spec.start {
                    SinkStart::New => "the events from now on",
                    SinkStart::All => "every event the store holds",
                }
            );
        }
        let worker = Worker::spawn(spec, &self.store_path, Arc::clone(&self.metrics))
            .map_err(DeliveryError::Thread)?;
        worker.wake();
        self.workers.push(worker);
        Ok(())
    }

    /// The names of the sinks delivered to.
    pub fn names(&self) -> Vec<&str> {
        self.workers.iter().map(|w| w.spec.name.as_str()).collect()
    }

    /// New events may be in the outbox: every sink looks.
    pub fn wake(&self) {
        for w in &self.workers {
            w.wake();
        }
    }

    /// The last outbox row `sink` acknowledged, every one before it
    /// acknowledged too: marked delivered then or a few milliseconds later
    /// (what the event benchmark times). `None` for a sink not delivered to.
    pub fn acknowledged(&self, sink: &str) -> Option<i64> {
        self.workers
            .iter()
            .find(|w| w.spec.name == sink)
            .map(Worker::acknowledged)
    }

    /// The sinks that still have events to deliver.
    pub fn behind(&self, store: &Store) -> Result<Vec<String>, StoreError> {
        let mut behind = Vec::new();
        for w in &self.workers {
            if store.pending_count(&w.spec.name)? > 0 {
                behind.push(w.spec.name.clone());
            }
        }
        Ok(behind)
    }

    /// Wakes the sinks and waits until they have delivered everything,
    /// `limit` has passed or `stop` is set (the end of a `--once` run);
    /// returns whether nothing is left. What is left waits in the outbox
    /// for the next run.
    pub fn drain_for(
        &self,
        store: &Store,
        limit: Duration,
        stop: &AtomicBool,
    ) -> Result<bool, StoreError> {
        self.wake();
        let deadline = Instant::now() + limit;
        loop {
            let behind = self.behind(store)?;
            if behind.is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                tracing::warn!(sinks = ?behind, "events wait in the outbox; the next run delivers them");
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Applies a reloaded configuration: new sinks start (where their
    /// `start` says), removed ones stop, changed ones restart (a sink is
    /// its name: the same name keeps its position).
    pub fn reload(&mut self, store: &mut Store, specs: Vec<SinkSpec>) -> Result<(), DeliveryError> {
        let (keep, gone): (Vec<Worker>, Vec<Worker>) = std::mem::take(&mut self.workers)
            .into_iter()
            .partition(|w| specs.contains(&w.spec));
        for w in &gone {
            w.stop();
            if specs.iter().any(|s| s.name == w.spec.name) {
                tracing::info!(sink = %w.spec.name, "sink changed: restarting it");
            } else {
                tracing::info!(sink = %w.spec.name, "sink removed: stopped");
            }
        }
        self.stopping.extend(gone);
        self.stopping.retain_mut(|w| {
            w.reap();
            !w.finished()
        });
        self.workers = keep;
        for spec in specs {
            if !self.workers.iter().any(|w| w.spec == spec) {
                self.add(store, spec)?;
            }
        }
        self.metrics.set_sinks(&self.names());
        Ok(())
    }

    /// Stops every sink, waiting at most `grace` for them to finish; a sink
    /// still stuck then (a write to a pipe nobody reads) is left behind to
    /// end with the process. What was not acknowledged stays in the outbox.
    pub fn shutdown(&mut self, grace: Duration) {
        let mut all: Vec<Worker> = std::mem::take(&mut self.workers);
        all.append(&mut self.stopping);
        for w in &all {
            w.stop();
        }
        let deadline = Instant::now() + grace;
        while all.iter().any(|w| !w.finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for mut w in all {
            if w.finished() {
                w.reap();
            } else {
                tracing::warn!(sink = %w.spec.name, "the sink did not stop in time; left behind");
            }
        }
    }
}

impl Drop for OutboxDelivery {
    fn drop(&mut self) {
        for w in self.workers.iter().chain(&self.stopping) {
            w.stop();
        }
    }
}

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start a sink's thread: {0}")]
    Thread(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use palisade_outputs::schema::Envelope;
    use palisade_outputs::sink::NatsSinkOptions;

    use super::*;
    use crate::store::OutboxEntry;

    fn nats() -> SinkSpec {
        SinkSpec::unnamed(
            SinkTarget::Nats(NatsSinkOptions {
                stream: "PALISADE".into(),
                ..NatsSinkOptions::default()
            }),
            SinkStart::New,
        )
    }

    fn webhook(url: &str) -> SinkSpec {
        SinkSpec::unnamed(
            SinkTarget::Webhook {
                url: url.into(),
                timeout: Duration::from_secs(1),
                max_retries: 0,
                secret: None,
            },
            SinkStart::New,
        )
    }

    fn file(path: &Path, start: SinkStart) -> SinkSpec {
        SinkSpec::unnamed(
            SinkTarget::Jsonl {
                path: Some(path.to_path_buf()),
            },
            start,
        )
    }

    #[test]
    fn the_sinks_are_the_configured_ones_plus_events_else_stdout() {
        let events = PathBuf::from("/tmp/e.jsonl");
        let hook = webhook("http://127.0.0.1:9/hook");
        let stdout = SinkSpec::unnamed(SinkTarget::Jsonl { path: None }, SinkStart::New);
        assert_eq!(sink_specs(&[], None), [stdout]);
        assert_eq!(
            sink_specs(&[], Some(&events)),
            [file(&events, SinkStart::All)]
        );
        assert_eq!(
            sink_specs(&[nats(), hook.clone()], Some(&events)),
            [nats(), hook.clone(), file(&events, SinkStart::All)]
        );
        assert_eq!(sink_specs(std::slice::from_ref(&hook), None), [hook]);
        // The same file configured: that sink, as configured.
        let configured = file(&events, SinkStart::New);
        assert_eq!(
            sink_specs(std::slice::from_ref(&configured), Some(&events)),
            [configured]
        );
    }

    #[test]
    fn default_names_hold_no_secret_and_only_nats_takes_scans() {
        let file = SinkTarget::Jsonl {
            path: Some("/var/log/p.jsonl".into()),
        };
        let stdout = SinkTarget::Jsonl { path: None };
        assert_eq!(file.default_name(), "jsonl:/var/log/p.jsonl");
        assert_eq!(stdout.default_name(), "jsonl:-");
        assert_eq!(nats().name, "nats:PALISADE");
        assert_eq!(
            webhook("http://127.0.0.1:9/hook").name,
            "webhook:http://127.0.0.1:9/hook"
        );
        assert_eq!(
            webhook("https://u:hunter2@h.example/in?token=s3cret&x=1").name,
            "webhook:https://u:***@h.example/in?token=***&x=1"
        );
        for target in [file, stdout, webhook("http://h/").target] {
            assert!(sink_takes(&target, "unexpected_port_open"));
            assert!(!sink_takes(&target, "scan"));
        }
        assert!(sink_takes(&nats().target, "scan"));
        assert!(sink_takes(&nats().target, "port_resolved"));
    }

    #[test]
    fn backoff_doubles_from_250_ms_up_to_30_s() {
        let mut waits = vec![];
        let mut wait = Duration::ZERO;
        for _ in 0..10 {
            wait = backoff(wait);
            waits.push(wait.as_millis());
        }
        assert_eq!(
            waits,
            [
                250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
        );
    }

    fn entry(id: &str, kind: &str) -> OutboxEntry {
        let data = palisade_outputs::schema::EventData::MonitorResolved(
            palisade_outputs::schema::MonitorEvent {
                monitor: "web".into(),
                host: "h".into(),
                message: "m".into(),
            },
        );
        let e = Envelope::new(id.into(), "s".into(), "t".into(), data);
        OutboxEntry {
            id: id.into(),
            kind: kind.into(),
            payload: serde_json::to_string(&e).unwrap(),
        }
    }

    fn ids_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Envelope>(l).unwrap().id)
            .collect()
    }

    #[test]
    fn a_file_sink_gets_events_but_skips_scans_and_drops_bad_rows() {
        let dir = std::env::temp_dir().join(format!("palisade-delivery-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("p.db");
        let path = dir.join("events.jsonl");
        let late = dir.join("late.jsonl");
        let all = dir.join("all.jsonl");
        let mut store = Store::open(&db).unwrap();
        let bad = OutboxEntry {
            id: "bad".into(),
            kind: "monitor_resolved".into(),
            payload: "not json".into(),
        };
        let metrics = Arc::new(Metrics::new());
        let mut delivery = OutboxDelivery::start(
            &mut store,
            &db,
            vec![file(&path, SinkStart::New)],
            Arc::clone(&metrics),
        )
        .unwrap();
        // The sinks' queues are what /metrics reads.
        assert_eq!(metrics.sinks(), [file(&path, SinkStart::New).name]);
        store
            .enqueue(
                "web",
                &[
                    entry("a", "monitor_resolved"),
                    entry("s", "scan"),
                    bad,
                    entry("b", "monitor_resolved"),
                ],
                1,
            )
            .unwrap();
        let stop = AtomicBool::new(false);
        assert!(
            delivery
                .drain_for(&store, Duration::from_secs(10), &stop)
                .unwrap()
        );
        assert_eq!(ids_in(&path), ["a", "b"]);
        // Sinks added later: from now on, or everything.
        let specs = vec![
            file(&path, SinkStart::New),
            file(&late, SinkStart::New),
            file(&all, SinkStart::All),
        ];
        delivery.reload(&mut store, specs).unwrap();
        store
            .enqueue("web", &[entry("c", "monitor_resolved")], 2)
            .unwrap();
        assert!(
            delivery
                .drain_for(&store, Duration::from_secs(10), &stop)
                .unwrap()
        );
        assert_eq!(ids_in(&path), ["a", "b", "c"]);
        assert_eq!(ids_in(&late), ["c"]);
        assert_eq!(ids_in(&all), ["a", "b", "c"]);
        // Another sink still has everything to deliver.
        assert_eq!(store.pending("other", 10).unwrap().len(), 5);
        delivery.shutdown(SHUTDOWN_GRACE);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
