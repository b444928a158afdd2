//! One sink's delivery, on a thread of its own with its own store
//! connection and I/O runtime: nothing a sink does (a hung peer, a FIFO
//! nobody reads, a full pipe) can hold up the sweeps, and every wait here
//! ends at once when the daemon stops.
//!
//! A sink that pipelines (NATS JetStream, [`Sink::pipeline`]) is kept busy:
//! pending rows are sent as they come, up to the sink's window of
//! acknowledgements in flight; the acknowledgements are awaited in order,
//! and the rows acknowledged are marked delivered in one store transaction
//! per run of them (never a row before its own acknowledgement and every
//! one before it), on a blocking thread with a second store connection, so
//! that waiting for the store's write lock (a sweep committing) or for its
//! sync holds up neither sending nor acknowledging. The other sinks publish
//! a batch, then mark what was acknowledged: a JSON lines file is written
//! and synced once per batch, and a webhook's requests go one after the
//! other so that a refusal stops at its event.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_outputs::schema::Envelope;
use palisade_outputs::sink::{Acknowledgement, JsonlSink, NatsSink, Sink, SinkError, WebhookSink};
use tokio::sync::{Notify, watch};

use super::{backoff, sink_takes};
use crate::config::{SinkSpec, SinkTarget};
use crate::daemon::now_ms;
use crate::metrics::Metrics;
use crate::store::{OutboxRow, Store, StoreError};

/// An attempt (connect, or publish a batch) still running after this long
/// is reported: logged once and shown by `palisade status`.
const SLOW_AFTER: Duration = Duration::from_secs(10);

/// A pipelining sink marks its acknowledged rows delivered when this many
/// wait (one transaction for them)...
const MARK_EVERY: usize = 512;

/// ... or when the oldest of them has waited this long.
const MARK_AFTER: Duration = Duration::from_millis(5);

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

/// How many outbox rows one publish takes (a sink that does not pipeline):
/// a webhook POSTs them one by one.
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
    /// The last outbox row the sink acknowledged with every one before it.
    acknowledged: Arc<AtomicI64>,
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
        let acknowledged = Arc::new(AtomicI64::new(0));
        let delivering = Delivering {
            spec: spec.clone(),
            store_path: store_path.to_path_buf(),
            stopped,
            wake: Arc::clone(&wake),
            acknowledged: Arc::clone(&acknowledged),
            sink: None,
            flight: Flight::default(),
            marker: None,
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
            acknowledged,
            thread: Some(thread),
        })
    }

    /// The last outbox row the sink acknowledged, every one before it
    /// acknowledged too (marked delivered then or a few milliseconds
    /// later); 0 before the first.
    pub(super) fn acknowledged(&self) -> i64 {
        self.acknowledged.load(Ordering::Relaxed)
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
    /// See [`Worker::acknowledged`].
    acknowledged: Arc<AtomicI64>,
    sink: Option<Box<dyn Sink>>,
    /// What a pipelining sink has in flight (empty without a sink).
    flight: Flight,
    /// A pipelining sink's second store connection, which marks rows
    /// delivered on a blocking thread (opened at first use).
    marker: Option<Store>,
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

    /// One step: what is pending goes out (a batch, or as much as the
    /// window of a pipelining sink has room for), and what was acknowledged
    /// is marked delivered; returns what to do next.
    async fn step(&mut self, store: &mut Store) -> Result<Step, StoreError> {
        let name = self.spec.name.clone();
        let window = self
            .sink
            .as_mut()
            .and_then(|s| s.pipeline())
            .map(|p| p.window());
        // A pipelining sink reads after what it has in flight, as much as
        // its window has room for (nothing once sending broke).
        let (after, limit) = match window {
            Some(window) => (self.flight.read_to, self.flight.room(window)),
            None => (0, batch_size(&self.spec.target)),
        };
        // While acknowledgements or a mark are awaited, the outbox is read
        // again only when there may be more: after a wake-up, or when the
        // last read filled the room (a read between two bursts of
        // acknowledgements would only hold them up).
        let busy = !self.flight.acks.is_empty() || self.flight.marking.is_some();
        let read_now = limit > 0 && !(busy && self.flight.caught_up);
        let rows = if read_now {
            store.pending_after(&name, after, limit)?
        } else {
            Vec::new()
        };
        if read_now {
            self.flight.caught_up = rows.len() < limit;
        }
        let read = rows.len();
        let last = rows.last().map(|r| r.seq);
        let (seqs, envelopes) = self.sendable(store, rows)?;
        if let Some(last) = last {
            self.flight.read_to = last;
        }
        if envelopes.is_empty() && self.flight.is_empty() {
            if read == 0 {
                self.ok(store);
                return Ok(Step::Idle);
            }
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
        if sink.pipeline().is_some() {
            // The flight is put back only when the step ends well: any other
            // end drops it, and what it held is read and sent again.
            let mut flight = std::mem::take(&mut self.flight);
            let step = self
                .pipelined(store, sink, &mut flight, seqs, envelopes, limit)
                .await?;
            if matches!(step, Step::More) {
                self.flight = flight;
            }
            return Ok(step);
        }
        let published = {
            let publish = sink.publish(&envelopes);
            self.attempt(store, "delivering", limit, publish).await
        };
        match published {
            Waited::Done(Ok(n)) => {
                self.sink = Some(sink);
                if let Some(&last) = seqs[..n.min(seqs.len())].last() {
                    self.acknowledged.fetch_max(last, Ordering::Relaxed);
                }
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

    /// The rows to send, as envelopes with their outbox seqs; rows this sink
    /// does not take, and rows that hold no envelope, count as delivered.
    fn sendable(
        &self,
        store: &mut Store,
        rows: Vec<OutboxRow>,
    ) -> Result<(Vec<i64>, Vec<Envelope>), StoreError> {
        let name = &self.spec.name;
        let mut passed = Vec::new();
        let mut seqs = Vec::with_capacity(rows.len());
        let mut envelopes = Vec::with_capacity(rows.len());
        for r in rows {
            if !sink_takes(&self.spec.target, &r.kind) {
                passed.push(r.seq);
                continue;
            }
            match serde_json::from_str::<Envelope>(&r.payload) {
                Ok(e) => {
                    envelopes.push(e);
                    seqs.push(r.seq);
                }
                Err(e) => {
                    tracing::error!(sink = %name, event = %r.event_id, "outbox row is not an envelope, dropped: {e}");
                    passed.push(r.seq);
                }
            }
        }
        if !passed.is_empty() {
            store.mark_delivered(name, &passed, now_ms())?;
        }
        Ok((seqs, envelopes))
    }

    /// A pipelining sink's step: sends `envelopes` (room was made for
    /// them), then waits for the oldest acknowledgement in flight, for the
    /// mark under way, for new events while the window has room, or until
    /// acknowledged rows are due to be marked. Every acknowledgement that
    /// arrived is collected, in order; when [`mark_due`] says so they are
    /// marked delivered in one transaction on a blocking thread (the
    /// store's second connection), while sending and acknowledging go on.
    /// An acknowledgement that fails stops there: what is acknowledged is
    /// marked, what follows is sent again after the backoff, and the stream
    /// de-duplicates what had arrived after all. The sink is kept unless an
    /// attempt timed out.
    async fn pipelined(
        &mut self,
        store: &mut Store,
        mut sink: Box<dyn Sink>,
        flight: &mut Flight,
        seqs: Vec<i64>,
        envelopes: Vec<Envelope>,
        limit: Duration,
    ) -> Result<Step, StoreError> {
        let Some(pipeline) = sink.pipeline() else {
            self.sink = Some(sink);
            return Ok(Step::Failed);
        };
        let window = pipeline.window();
        if !envelopes.is_empty() {
            let before = flight.acks.len();
            let send = async {
                for (seq, event) in seqs.into_iter().zip(&envelopes) {
                    match pipeline.send(event).await {
                        Ok(ack) => flight.acks.push_back((seq, ack)),
                        Err(e) => {
                            flight.broken = Some(e);
                            break;
                        }
                    }
                }
            };
            match self.attempt(store, "delivering", limit, send).await {
                Waited::Done(()) => {
                    if flight.acks.len() > before
                        && let Some(&(last, _)) = flight.acks.back()
                    {
                        flight.sends.push_back(last);
                    }
                }
                Waited::TimedOut => {
                    // The sink is dropped: a fresh one next time.
                    self.settle(store, flight)?;
                    self.fail(Some(store), &timed_out("delivering", limit));
                    return Ok(Step::Failed);
                }
                Waited::Stopped => {
                    self.settle(store, flight)?;
                    return Ok(Step::Stopped);
                }
            }
        }
        self.sink = Some(sink);
        let room = flight.room(window) > 0;
        let mark_at = match flight.marking {
            None => flight
                .acked_since
                .map(|since| tokio::time::Instant::from_std(since + MARK_AFTER)),
            Some(_) => None,
        };
        let front = flight.acks.front_mut().map(|(_, ack)| ack);
        let marking = flight.marking.as_mut().map(|m| &mut m.task);
        let mut woke = None;
        if front.is_some() || marking.is_some() {
            let wake = Arc::clone(&self.wake);
            let wait = async {
                tokio::select! {
                    biased;
                    done = wait_for(marking) => Woke::Marked(done),
                    acked = wait_for(front) => Woke::Acked(acked),
                    () = wake.notified(), if room => Woke::Woken,
                    () = tokio::time::sleep_until(mark_at.unwrap_or_else(tokio::time::Instant::now)), if mark_at.is_some() => Woke::MarkDue,
                }
            };
            woke = match self.attempt(store, "delivering", limit, wait).await {
                Waited::Done(woke) => Some(woke),
                Waited::TimedOut => {
                    // The sink is dropped: a fresh one next time.
                    self.sink = None;
                    self.settle(store, flight)?;
                    self.fail(Some(store), &timed_out("delivering", limit));
                    return Ok(Step::Failed);
                }
                Waited::Stopped => {
                    self.settle(store, flight)?;
                    return Ok(Step::Stopped);
                }
            };
        }
        let mut failed = None;
        match woke {
            Some(Woke::Marked(done)) => {
                flight.marking = None;
                match done {
                    Ok((marker, marked)) => {
                        self.marker = Some(marker);
                        marked?;
                    }
                    Err(e) => failed = Some(format!("marking delivered events failed: {e}")),
                }
            }
            Some(Woke::Acked(first)) => {
                // The oldest acknowledgement, and every one after it that is here.
                let mut next = Some(first);
                while let Some(result) = next.take() {
                    match result {
                        Ok(()) => {
                            if let Some((seq, _)) = flight.acks.pop_front() {
                                flight.acked.push(seq);
                                flight.acked_since.get_or_insert_with(Instant::now);
                                while flight.sends.front().is_some_and(|&last| last <= seq) {
                                    flight.sends.pop_front();
                                    flight.send_done = true;
                                }
                            }
                        }
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                    next = flight.acks.front_mut().and_then(|(_, ack)| arrived(ack));
                }
                if let Some(&last) = flight.acked.last() {
                    self.acknowledged.fetch_max(last, Ordering::Relaxed);
                }
            }
            Some(Woke::Woken) => flight.caught_up = false,
            Some(Woke::MarkDue) | None => {}
        }
        // Sending broke and everything sent before it is acknowledged.
        if failed.is_none() && flight.acks.is_empty() {
            failed = flight.broken.take().map(|e| e.to_string());
        }
        if let Some(why) = failed {
            self.settle(store, flight)?;
            self.fail(Some(store), &why);
            return Ok(Step::Failed);
        }
        if flight.marking.is_none() && mark_due(flight) {
            self.start_marking(flight)?;
        }
        if flight.broken.is_none() {
            self.ok(store);
        }
        Ok(Step::More)
    }

    /// Hands the acknowledged rows of `flight` to a blocking thread that
    /// marks them delivered in one transaction, on the store's second
    /// connection (opened at first use).
    fn start_marking(&mut self, flight: &mut Flight) -> Result<(), StoreError> {
        let mut marker = match self.marker.take() {
            Some(marker) => marker,
            None => Store::open(&self.store_path)?,
        };
        let seqs = std::mem::take(&mut flight.acked);
        flight.acked_since = None;
        flight.send_done = false;
        let sink = self.spec.name.clone();
        let rows = seqs.len();
        let task = tokio::task::spawn_blocking(move || {
            let marked = marker.mark_delivered(&sink, &seqs, now_ms());
            (marker, marked)
        });
        flight.marking = Some(Marking { rows, task });
        Ok(())
    }

    /// Before what is in flight is given up (a failure, a stop): the rows
    /// acknowledged and not handed to a mark yet are marked here. A mark
    /// under way finishes by itself.
    fn settle(&self, store: &mut Store, flight: &mut Flight) -> Result<(), StoreError> {
        if !flight.acked.is_empty() {
            store.mark_delivered(&self.spec.name, &flight.acked, now_ms())?;
            flight.acked.clear();
        }
        flight.acked_since = None;
        flight.send_done = false;
        Ok(())
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

/// What a pipelining sink has sent and not yet marked delivered.
#[derive(Default)]
struct Flight {
    /// Sent, awaiting their acknowledgement, in outbox order: `(seq, ack)`.
    acks: VecDeque<(i64, Acknowledgement)>,
    /// Acknowledged (in order, each after all before it), not yet handed
    /// to a mark.
    acked: Vec<i64>,
    /// When the oldest of `acked` was acknowledged.
    acked_since: Option<Instant>,
    /// The last row of each send (the rows of one read), in order, until
    /// it is acknowledged.
    sends: VecDeque<i64>,
    /// Every row of a send is acknowledged since the last mark.
    send_done: bool,
    /// The last read took every pending row, and nothing woke the worker
    /// since.
    caught_up: bool,
    /// The mark under way, if any.
    marking: Option<Marking>,
    /// The last outbox row read (sent or passed over): the next read starts
    /// after it. 0: at the sink's position in the store.
    read_to: i64,
    /// Why sending stopped: what is in flight is awaited, then the step
    /// fails with it.
    broken: Option<SinkError>,
}

impl Flight {
    /// Nothing in flight, nothing to mark.
    fn is_empty(&self) -> bool {
        self.acks.is_empty()
            && self.acked.is_empty()
            && self.marking.is_none()
            && self.broken.is_none()
    }

    /// How many more events may be sent: at most `window` awaiting their
    /// acknowledgement, and at most `window` acknowledged and not yet marked
    /// (so that a crash sends at most twice the window again); none once
    /// sending broke.
    fn room(&self, window: usize) -> usize {
        if self.broken.is_some() {
            return 0;
        }
        let unmarked = self.acked.len() + self.marking.as_ref().map_or(0, |m| m.rows);
        window
            .saturating_sub(self.acks.len())
            .min(window.saturating_sub(unmarked))
    }
}

/// Acknowledged rows being marked delivered on a blocking thread, which
/// hands the store connection back with the outcome.
struct Marking {
    rows: usize,
    task: tokio::task::JoinHandle<(Store, Result<(), StoreError>)>,
}

/// What a pipelining sink's wait ended with.
enum Woke {
    Marked(Result<(Store, Result<(), StoreError>), tokio::task::JoinError>),
    Acked(Result<(), SinkError>),
    /// New events (the window has room).
    Woken,
    /// Acknowledged rows have waited long enough to be marked.
    MarkDue,
}

/// Awaits `fut`, or forever without one.
async fn wait_for<F: std::future::Future + Unpin>(fut: Option<&mut F>) -> F::Output {
    match fut {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

/// Whether the acknowledged rows of `flight` are to be marked delivered
/// now (when no mark is under way): when every row of a send (the rows
/// read and sent together, e.g. one commit of the sweep) is acknowledged,
/// when nothing else is in flight, when [`MARK_EVERY`] of them wait, or when
/// the oldest has waited [`MARK_AFTER`]. Acknowledgements arrive in bursts
/// as the sends went out; marking each burst on its own would cost a store
/// transaction (a wait for the write lock, and a WAL sync) every few events.
fn mark_due(flight: &Flight) -> bool {
    !flight.acked.is_empty()
        && (flight.send_done
            || flight.acks.is_empty()
            || flight.acked.len() >= MARK_EVERY
            || flight
                .acked_since
                .is_some_and(|since| since.elapsed() >= MARK_AFTER))
}

/// The acknowledgement's outcome if it has arrived (polled once, without
/// waiting).
fn arrived(ack: &mut Acknowledgement) -> Option<Result<(), SinkError>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match ack.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(outcome) => Some(outcome),
        std::task::Poll::Pending => None,
    }
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
