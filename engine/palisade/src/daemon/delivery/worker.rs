//! One sink's delivery, on a thread of its own with its own store
//! connection and I/O runtime: nothing a sink does (a hung peer, a FIFO
//! nobody reads, a full pipe) can hold up the sweeps, and every wait here
//! ends at once when the daemon stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_outputs::schema::Envelope;
use palisade_outputs::sink::{JsonlSink, NatsSink, Sink, SinkError, WebhookSink};
use tokio::sync::{Notify, watch};

use super::{backoff, sink_takes};
use crate::config::{SinkSpec, SinkTarget};
use crate::daemon::now_ms;
use crate::metrics::Metrics;
use crate::store::{OutboxRow, Store, StoreError};

/// An attempt (connect, or publish a batch) still running after this long
/// is reported: logged once and shown by `palisade status`.
const SLOW_AFTER: Duration = Duration::from_secs(10);

/// While idle, the worker looks at the outbox this often even when nobody
/// wakes it (`palisade deliveries retry` from another process).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The longest a connect or a publish of a batch may take before it is
/// abandoned (and retried later): the sink's own bounds, with room to
/// spare. A webhook bounds each request by `timeout` and retries
/// `max_retries` times with backoff of at most 30 s.
fn attempt_limit(target: &SinkTarget) -> Duration {
    match target {
        SinkTarget::Webhook {
            timeout,
            max_retries,
            ..
        } => {
            let tries = max_retries.saturating_add(1);
            timeout
                .saturating_mul(tries)
                .saturating_add(Duration::from_secs(30).saturating_mul(*max_retries))
                .saturating_add(Duration::from_secs(5))
        }
        SinkTarget::Nats(n) => n
            .nats
            .connect_timeout
            .saturating_mul(4)
            .max(Duration::from_secs(30)),
        SinkTarget::Jsonl { .. } => Duration::from_secs(30),
    }
}

/// How many outbox rows one publish takes: a webhook POSTs them one by one.
fn batch_size(target: &SinkTarget) -> usize {
    match target {
        SinkTarget::Webhook { .. } => 32,
        _ => 256,
    }
}

/// The daemon's handle on a sink's thread.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) spec: SinkSpec,
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts delivering `spec`'s events from the store at `store_path`.
    /// Its failures are counted in `metrics`.
    pub(super) fn spawn(
        spec: SinkSpec,
        store_path: &Path,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Worker> {
        let (stop, stopped) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let delivering = Delivering {
            spec: spec.clone(),
            store_path: store_path.to_path_buf(),
            stopped,
            wake: Arc::clone(&wake),
            sink: None,
            backoff: Duration::ZERO,
            problem: None,
            metrics,
        };
        let thread = std::thread::Builder::new()
            .name(format!("sink {}", spec.name))
            .spawn(move || delivering.run())?;
        Ok(Worker {
            spec,
            stop,
            wake,
            thread: Some(thread),
        })
    }

    /// There may be new events.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the thread to stop: whatever it waits for is abandoned (the
    /// outbox keeps what was not acknowledged).
    pub(super) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Whether the thread has ended.
    pub(super) fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Reaps the thread if it ended; a thread still stuck (in a system call
    /// nothing interrupts) is left behind and ends with the process.
    pub(super) fn reap(&mut self) {
        if self.finished()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What an interruptible wait ended with.
enum Waited<T> {
    Done(T),
    TimedOut,
    Stopped,
}

/// The state of one sink's thread.
struct Delivering {
    spec: SinkSpec,
    store_path: PathBuf,
    stopped: watch::Receiver<bool>,
    wake: Arc<Notify>,
    sink: Option<Box<dyn Sink>>,
    backoff: Duration,
    /// The current problem, logged once rather than at every retry.
    problem: Option<String>,
    metrics: Arc<Metrics>,
}

impl Delivering {
    fn run(self) {
        let name = self.spec.name.clone();
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(sink = %name, "cannot start the sink's I/O runtime; its events wait in the outbox: {e}");
                return;
            }
        };
        runtime.block_on(self.deliver());
        // Anything left on a blocking thread (a write to a pipe) is not
        // waited for.
        runtime.shutdown_background();
        tracing::debug!(sink = %name, "sink stopped");
    }

    fn stopping(&self) -> bool {
        *self.stopped.borrow() || self.stopped.has_changed().is_err()
    }

    /// Waits for `limit` or until the daemon stops; returns whether it did.
    async fn sleep(&mut self, limit: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(limit) => false,
            _ = self.stopped.changed() => true,
        }
    }

    async fn deliver(mut self) {
        let mut store = loop {
            match Store::open(&self.store_path) {
                Ok(store) => break store,
                Err(e) => {
                    self.fail(None, &e);
                    if self.sleep(self.backoff).await {
                        return;
                    }
                }
            }
        };
        while !self.stopping() {
            match self.step(&mut store).await {
                Ok(Step::Idle) => {
                    let wake = Arc::clone(&self.wake);
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        _ = self.stopped.changed() => return,
                    }
                }
                Ok(Step::More) => {}
                Ok(Step::Failed) => {
                    if self.sleep(self.backoff).await {
                        return;
                    }
                }
                Ok(Step::Stopped) => return,
                Err(e) => {
                    self.fail(Some(&mut store), &e);
                    if self.sleep(self.backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// One batch: what is pending goes out; returns what to do next.
    async fn step(&mut self, store: &mut Store) -> Result<Step, StoreError> {
        let name = self.spec.name.clone();
        let rows = store.pending(&name, batch_size(&self.spec.target))?;
        if rows.is_empty() {
            self.ok(store);
            return Ok(Step::Idle);
        }
        // Rows this sink does not take count as delivered to it.
        let (send, skip): (Vec<OutboxRow>, Vec<OutboxRow>) = rows
            .into_iter()
            .partition(|r| sink_takes(&self.spec.target, &r.kind));
        let skipped: Vec<i64> = skip.iter().map(|r| r.seq).collect();
        if !skipped.is_empty() {
            store.mark_delivered(&name, &skipped, now_ms())?;
        }
        let mut envelopes = Vec::with_capacity(send.len());
        let mut seqs = Vec::with_capacity(send.len());
        for r in &send {
            match serde_json::from_str::<Envelope>(&r.payload) {
                Ok(e) => {
                    envelopes.push(e);
                    seqs.push(r.seq);
                }
                Err(e) => {
                    tracing::error!(sink = %name, event = %r.event_id, "outbox row is not an envelope, dropped: {e}");
                    store.mark_delivered(&name, &[r.seq], now_ms())?;
                }
            }
        }
        if envelopes.is_empty() {
            return Ok(Step::More);
        }
        let limit = attempt_limit(&self.spec.target);
        if self.sink.is_none() {
            let target = self.spec.target.clone();
            match self
                .attempt(store, "connecting", limit, connect(target))
                .await
            {
                Waited::Done(Ok(sink)) => self.sink = Some(sink),
                Waited::Done(Err(e)) => {
                    self.fail(Some(store), &e);
                    return Ok(Step::Failed);
                }
                Waited::TimedOut => {
                    self.fail(Some(store), &timed_out("connecting", limit));
                    return Ok(Step::Failed);
                }
                Waited::Stopped => return Ok(Step::Stopped),
            }
        }
        let Some(mut sink) = self.sink.take() else {
            return Ok(Step::Failed);
        };
        let published = {
            let publish = sink.publish(&envelopes);
            self.attempt(store, "delivering", limit, publish).await
        };
        match published {
            Waited::Done(Ok(n)) => {
                self.sink = Some(sink);
                store.mark_delivered(&name, &seqs[..n.min(seqs.len())], now_ms())?;
                if n < envelopes.len() {
                    let why = format!("{} of {} events acknowledged", n, envelopes.len());
                    self.fail(Some(store), &why);
                    return Ok(Step::Failed);
                }
                self.ok(store);
                Ok(Step::More)
            }
            Waited::Done(Err(SinkError::WebhookRejected {
                status, excerpt, ..
            })) => {
                // Always about the first event of the batch.
                self.sink = Some(sink);
                let first = &envelopes[0];
                store.dead_letter(&name, seqs[0], Some(status), &excerpt, now_ms())?;
                tracing::warn!(
                    sink = %name,
                    event = %palisade_outputs::alert::escape(&first.id),
                    status,
                    "the receiver refused the event for good: set aside as a dead letter \
                     (`palisade deliveries list`); going on with the next"
                );
                Ok(Step::More)
            }
            Waited::Done(Err(e)) => {
                self.sink = Some(sink);
                self.fail(Some(store), &e);
                Ok(Step::Failed)
            }
            Waited::TimedOut => {
                // The sink is dropped: a fresh one next time.
                self.fail(Some(store), &timed_out("delivering", limit));
                Ok(Step::Failed)
            }
            Waited::Stopped => Ok(Step::Stopped),
        }
    }

    /// Runs `fut` until it ends, `limit` passes or the daemon stops; one
    /// still running after [`SLOW_AFTER`] is reported.
    async fn attempt<T>(
        &mut self,
        store: &mut Store,
        doing: &str,
        limit: Duration,
        fut: impl std::future::Future<Output = T>,
    ) -> Waited<T> {
        let started = Instant::now();
        tokio::pin!(fut);
        let mut reported = false;
        loop {
            let wait = if reported {
                limit.saturating_sub(started.elapsed())
            } else {
                SLOW_AFTER.min(limit)
            };
            tokio::select! {
                out = &mut fut => return Waited::Done(out),
                _ = self.stopped.changed() => return Waited::Stopped,
                () = tokio::time::sleep(wait) => {}
            }
            if started.elapsed() >= limit {
                return Waited::TimedOut;
            }
            if !reported {
                reported = true;
                let problem = format!(
                    "blocked: {doing} has not finished after {}s (scanning goes on; the events wait in the outbox)",
                    SLOW_AFTER.as_secs()
                );
                tracing::warn!(sink = %self.spec.name, "{problem}");
                self.record(store, Some(&problem));
            }
        }
    }

    /// After a failure: wait longer each time; the problem is logged once.
    fn fail(&mut self, store: Option<&mut Store>, why: &dyn std::fmt::Display) {
        self.metrics.delivery_failed(&self.spec.name);
        self.backoff = backoff(self.backoff);
        let why = why.to_string();
        if self.problem.as_deref() != Some(why.as_str()) {
            tracing::warn!(sink = %self.spec.name, "delivery failed, events wait in the outbox and are retried: {why}");
            if let Some(store) = store {
                self.record(store, Some(&why));
            }
            self.problem = Some(why);
        }
    }

    fn ok(&mut self, store: &mut Store) {
        self.backoff = Duration::ZERO;
        if self.problem.take().is_some() {
            tracing::info!(sink = %self.spec.name, "delivery resumed");
            self.record(store, None);
        }
    }

    /// Notes the sink's problem in the store, for `palisade status`.
    fn record(&self, store: &mut Store, problem: Option<&str>) {
        if let Err(e) = store.set_sink_health(&self.spec.name, problem, now_ms()) {
            tracing::debug!(sink = %self.spec.name, "cannot record the sink's health: {e}");
        }
    }
}

/// What [`Delivering::step`] leads to.
enum Step {
    /// Nothing pending.
    Idle,
    /// Delivered a batch; there may be more.
    More,
    /// Failed: back off.
    Failed,
    Stopped,
}

fn timed_out(doing: &str, limit: Duration) -> String {
    format!("{doing} did not finish within {}s", limit.as_secs())
}

/// Builds the sink (no I/O for a webhook; opens the file; connects to NATS).
async fn connect(target: SinkTarget) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match target {
        SinkTarget::Jsonl { path } => Box::new(JsonlSink::open(path.as_deref())?),
        SinkTarget::Nats(n) => Box::new(NatsSink::connect(n).await?),
        SinkTarget::Webhook {
            url,
            timeout,
            max_retries,
            secret,
        } => {
            let sink = WebhookSink::new(url, timeout, max_retries)?;
            Box::new(match secret {
                Some(secret) => sink.with_secret(secret),
                None => sink,
            })
        }
    })
}
