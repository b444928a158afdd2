//! Sinks: where events are delivered (NATS JetStream, JSON lines, webhook).
//!
//! A sink publishes a batch in order and reports how many events, counted
//! from the start, were durably accepted. The caller (the engine's outbox
//! drainer) marks those as delivered and keeps the rest for a later retry, so
//! every sink must tolerate a re-send of events it already accepted: each one
//! de-duplicates by [`Envelope::id`](crate::schema::Envelope::id).
//!
//! Convention shared by the sinks here: when the first event of a batch
//! cannot be delivered the error is returned (`Err`); when some were accepted
//! before a failure, `Ok(n)` with `n < events.len()` is returned and the
//! failure is logged.
//!
//! A sink whose destination acknowledges each event on its own (NATS
//! JetStream) also offers a [`Pipeline`]: the caller sends events one by one
//! and awaits their acknowledgements later, in order, with up to a window of
//! them in flight, so that it never waits for a whole batch before sending
//! the next events.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::nats::{NatsConnectError, NatsOptionError};
use crate::schema::{Envelope, SchemaError};

mod jsonl;
mod nats;
mod webhook;

pub use jsonl::JsonlSink;
pub use nats::{
    ACK_WINDOW, DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT_PREFIX, DEFAULT_STREAM_MAX_AGE,
    MAX_STREAM_REPLICAS, NatsSink, NatsSinkOptions, StreamSettings, StreamState, StreamStorage,
    inspect_stream, stream_differences,
};
pub use webhook::{WebhookSecret, WebhookSink, redact_url};

pub(crate) use nats::subject_covers;
pub(crate) use webhook::parse_retry_after;

/// A destination for events. Sinks are held as `Vec<Box<dyn Sink>>`.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// A stable name for delivery bookkeeping, e.g. "nats:PALISADE", "jsonl:/var/log/x.jsonl", "webhook:https://…".
    fn name(&self) -> &str;
    /// Publishes `events` in order; returns how many of them, from the start, are acknowledged (durably accepted).
    /// Returns Ok(n < len) or Err when the destination is unreachable; the caller keeps the rest and retries later.
    async fn publish(&mut self, events: &[Envelope]) -> Result<usize, SinkError>;
    /// The sink's pipelined side, if it has one (NATS JetStream): events
    /// sent one by one, each acknowledgement awaited later. `None` (the
    /// default): the sink publishes whole batches only (JSON lines: one
    /// write and fsync per batch; webhook: one request after the other, so
    /// that a refusal stops at its event).
    fn pipeline(&mut self) -> Option<&mut dyn Pipeline> {
        None
    }
}

/// The acknowledgement of one event a [`Pipeline`] sent: `Ok` once the
/// destination durably accepted it (a duplicate it dropped included), else
/// why not. Bounded in time by the sink.
pub type Acknowledgement = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

/// Publishing with acknowledgements in flight: the caller sends events in
/// order, keeps at most [`window`](Pipeline::window) acknowledgements
/// pending, and awaits them in order. An event counts as delivered only when
/// its own acknowledgement (and every one before it) arrived; after a
/// failure the caller sends everything from the first unacknowledged event
/// again, and the sink's de-duplication by [`Envelope::id`] drops what had
/// arrived after all.
#[async_trait::async_trait]
pub trait Pipeline: Send {
    /// How many events may await their acknowledgement at once.
    fn window(&self) -> usize;
    /// Sends `event` and returns its acknowledgement, to be awaited later.
    /// `Err`: it was not sent (not connected, cannot be encoded, …); the
    /// caller awaits what is in flight and stops there.
    async fn send(&mut self, event: &Envelope) -> Result<Acknowledgement, SinkError>;
}

/// [`Sink::publish`] through a [`Pipeline`]: sends `events` in order with at
/// most the pipeline's window in flight, awaits the acknowledgements in
/// order, and answers how many from the start were acknowledged (`Err` when
/// the first one was not).
pub(crate) async fn publish_pipelined(
    pipeline: &mut dyn Pipeline,
    events: &[Envelope],
    sink: &str,
) -> Result<usize, SinkError> {
    let window = pipeline.window().max(1);
    let mut in_flight: VecDeque<Acknowledgement> = VecDeque::new();
    let mut acked = 0usize;
    for event in events {
        if in_flight.len() >= window
            && let Some(front) = in_flight.pop_front()
        {
            if let Err(err) = front.await {
                return partial(acked, err, sink);
            }
            acked += 1;
        }
        match pipeline.send(event).await {
            Ok(ack) => in_flight.push_back(ack),
            Err(err) => {
                // Count what was already sent, up to the first failure.
                for ack in in_flight {
                    if let Err(first) = ack.await {
                        return partial(acked, first, sink);
                    }
                    acked += 1;
                }
                return partial(acked, err, sink);
            }
        }
    }
    for ack in in_flight {
        if let Err(err) = ack.await {
            return partial(acked, err, sink);
        }
        acked += 1;
    }
    Ok(acked)
}

/// Why a sink could not be set up or could not deliver. Every message is one
/// line naming the destination and the cause.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The NATS servers could not be reached (refused, timed out, DNS, …).
    #[error("cannot connect to NATS at {server}: {cause}")]
    Connect { server: String, cause: String },
    /// The server was reached but refused us or failed a request
    /// (authorization, TLS, JetStream, stream configuration, publish).
    #[error("NATS at {server}: {cause}")]
    Nats { server: String, cause: String },
    /// The NATS settings are unusable (bad prefix or stream name, missing or
    /// unreadable credential files); the error names the configuration key.
    #[error("invalid NATS configuration: {0}")]
    NatsConfig(#[from] NatsOptionError),
    /// A file could not be opened or read.
    #[error("cannot open {path}: {source}", path = path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written or synced.
    #[error("cannot write {path}: {source}", path = path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The webhook URL is unusable.
    #[error("invalid webhook URL {url:?}: {cause}")]
    WebhookConfig { url: String, cause: String },
    /// The webhook did not accept an event after all retries (network
    /// errors, timeouts, 408, 429, 5xx): worth retrying later.
    #[error("webhook {url}: {cause}")]
    Webhook { url: String, cause: String },
    /// The webhook refused an event for good (a 4xx other than 408 and
    /// 429): retrying will not help; the caller moves the event aside (a
    /// dead letter) and goes on with the next. Always about the first event
    /// of the batch passed to `publish` (a refusal later in the batch makes
    /// `publish` return `Ok(n)` with the events before it).
    #[error("webhook {url}: event {event_id} rejected: answered HTTP {status}{}", if excerpt.is_empty() { String::new() } else { format!(": {excerpt}") })]
    WebhookRejected {
        url: String,
        event_id: String,
        status: u16,
        /// At most 512 bytes of the answer's body, on one line.
        excerpt: String,
    },
    /// An event could not be encoded.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl From<NatsConnectError> for SinkError {
    /// Keeps the sink's distinction between a server that cannot be reached
    /// ([`SinkError::Connect`]) and one that refused us ([`SinkError::Nats`]).
    fn from(err: NatsConnectError) -> SinkError {
        match err {
            NatsConnectError::Options(e) => SinkError::NatsConfig(e),
            NatsConnectError::Unreachable { server, reason } => SinkError::Connect {
                server,
                cause: reason,
            },
            NatsConnectError::Refused { server, reason } => SinkError::Nats {
                server,
                cause: reason,
            },
        }
    }
}

/// Builds the `Ok(n)` / `Err` answer of a batch that failed at index `n`.
fn partial(acked: usize, err: SinkError, sink: &str) -> Result<usize, SinkError> {
    if acked == 0 {
        Err(err)
    } else {
        tracing::warn!(sink, acked, error = %err, "batch partly delivered");
        Ok(acked)
    }
}

/// Exponential backoff with jitter: `initial * 2^attempt`, capped at `max`,
/// then scaled by a random factor in [0.5, 1.0].
fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX));
    let capped = exp.min(max);
    let r = getrandom::u32().unwrap_or(u32::MAX / 2);
    let factor = 0.5 + 0.5 * (f64::from(r) / f64::from(u32::MAX));
    capped.mul_f64(factor)
}

/// The innermost useful cause, phrased briefly for common I/O errors.
pub(crate) fn source_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err.source();
    let mut last: Option<&(dyn std::error::Error + 'static)> = None;
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_cause(io);
        }
        last = Some(e);
        current = e.source();
    }
    match last {
        Some(e) => one_line(e),
        None => one_line(err),
    }
}

pub(crate) fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset by the server".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::TimedOut => "timed out".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::AddrNotAvailable => "address not available".into(),
        K::UnexpectedEof => "the server closed the connection".into(),
        _ => one_line(e),
    }
}

pub(crate) fn one_line(err: &dyn std::fmt::Display) -> String {
    err.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{s:.1}s")
    }
}

/// `n` envelopes of every kind, with ids `<tag>-<i>`, for tests.
#[cfg(test)]
pub(crate) fn test_events(n: usize, tag: &str) -> Vec<Envelope> {
    use crate::schema::{AddressReport, EventData, MonitorEvent, PortEvent, ScanReport, Severity};
    (0..n)
        .map(|i| {
            let monitor = format!("mon-{}", i % 7);
            let port = PortEvent {
                monitor: monitor.clone(),
                host: "web1.example.net".into(),
                address: "198.18.0.2".into(),
                port: u16::try_from(i % 65_535).unwrap_or(1),
                state: Some("open".into()),
                expected: i % 2 == 0,
                first_seen: "2026-01-02T03:04:05Z".into(),
                confirmed_at: "2026-01-02T03:05:05Z".into(),
                resolved_at: None,
                incident_id: format!("inc-{i}"),
                incident_kind: "unexpected_port_open".into(),
                severity: Severity::High,
                reason: None,
            };
            let data = match i % 5 {
                0 => EventData::UnexpectedPortOpen(port),
                1 => EventData::ExpectedPortDown(port),
                2 => EventData::PortResolved(port),
                3 => EventData::MonitorResolved(MonitorEvent {
                    monitor,
                    host: "web1.example.net".into(),
                    message: "reachable again".into(),
                }),
                _ => EventData::Scan(ScanReport {
                    monitor,
                    host: "web1.example.net".into(),
                    scan_kind: "full".into(),
                    started: "2026-01-02T03:04:05Z".into(),
                    finished: "2026-01-02T03:04:06Z".into(),
                    conclusive: true,
                    reachable: true,
                    addresses: vec![AddressReport {
                        address: "198.18.0.2".into(),
                        reachable: true,
                        open_ports: "22,443".into(),
                        open_count: 2,
                    }],
                    note: None,
                    estimated_loss: Some(0.05),
                    retry_rounds: Some(3),
                    expected_misses: Some(0.25),
                }),
            };
            Envelope::new(
                format!("{tag}-{i}"),
                "palisade://scanner-a".into(),
                "2026-01-02T03:05:05Z".into(),
                data,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(2);
        for attempt in 0..40 {
            let d = backoff(attempt, i, m);
            let nominal = i.saturating_mul(1 << attempt.min(20)).min(m);
            assert!(d <= nominal, "{attempt}: {d:?}");
            assert!(
                d >= nominal / 2 - Duration::from_millis(1),
                "{attempt}: {d:?}"
            );
        }
    }

    /// A pipeline whose acknowledgements fail from event `fail_at` on; it
    /// counts the acknowledgements not awaited yet, and the most at once.
    struct Fake {
        window: usize,
        sent: usize,
        fail_at: usize,
        pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        most: usize,
    }

    #[async_trait::async_trait]
    impl Pipeline for Fake {
        fn window(&self) -> usize {
            self.window
        }

        async fn send(&mut self, _event: &Envelope) -> Result<Acknowledgement, SinkError> {
            use std::sync::atomic::Ordering;
            let i = self.sent;
            self.sent += 1;
            let now = self.pending.fetch_add(1, Ordering::SeqCst) + 1;
            self.most = self.most.max(now);
            let pending = std::sync::Arc::clone(&self.pending);
            let fail = i >= self.fail_at;
            Ok(Box::pin(async move {
                pending.fetch_sub(1, Ordering::SeqCst);
                if fail {
                    Err(SinkError::Nats {
                        server: "fake".into(),
                        cause: format!("event {i} refused"),
                    })
                } else {
                    Ok(())
                }
            }))
        }
    }

    fn fake(window: usize, fail_at: usize) -> Fake {
        Fake {
            window,
            sent: 0,
            fail_at,
            pending: std::sync::Arc::default(),
            most: 0,
        }
    }

    #[tokio::test]
    async fn a_pipelined_batch_keeps_its_window_and_stops_at_the_first_failed_ack() {
        let events = test_events(10, "p");
        let mut p = fake(3, usize::MAX);
        assert_eq!(
            publish_pipelined(&mut p, &events, "fake").await.unwrap(),
            10
        );
        assert_eq!((p.sent, p.most), (10, 3));
        // Acknowledgements fail from the fifth on: four delivered.
        let mut p = fake(3, 4);
        assert_eq!(publish_pipelined(&mut p, &events, "fake").await.unwrap(), 4);
        assert!(p.most <= 3);
        // The first fails: an error, naming it.
        let mut p = fake(3, 0);
        let err = publish_pipelined(&mut p, &events, "fake")
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "NATS at fake: event 0 refused");
    }

    #[test]
    fn errors_are_one_line() {
        let e = SinkError::Open {
            path: "/x/y".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(e.to_string(), "cannot open /x/y: entity not found");
        let e = SinkError::Connect {
            server: "nats://127.0.0.1:4999".into(),
            cause: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot connect to NATS at nats://127.0.0.1:4999: connection refused"
        );
    }
}
