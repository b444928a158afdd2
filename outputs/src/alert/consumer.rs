//! The durable JetStream pull consumer behind `palisade-alert run`.
//!
//! Every message is decoded (by its `Content-Type`) and handed to each
//! dispatcher. Only when all of them succeeded is it acknowledged; a
//! failure NAKs it with an exponential, capped delay so JetStream
//! redelivers it, and a redelivery skips the dispatchers that already took
//! it (within this process). At `max_deliver` deliveries an error line
//! names the event and the message is terminated. A message that cannot be
//! decoded is logged and terminated at once.
//!
//! The consumer survives NATS restarts: the client reconnects by itself,
//! and a pull subscription that broke (missed heartbeats, consumer gone) is
//! set up again — the durable consumer is created if it is missing.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream::Stream as JsStream};
use futures::StreamExt;

use super::Dispatcher;
use crate::schema::{self, Envelope, PayloadFormat, SchemaError};

/// Exponential backoff: `initial × 2^(n-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay after the `attempt`-th failure (1-based; 0 counts as 1).
    pub fn delay(&self, attempt: i64) -> Duration {
        let exp = attempt.clamp(1, 64) as u32 - 1;
        let factor = 2u32.checked_pow(exp).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// What to consume and how to retry.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The JetStream stream (`PALISADE`).
    pub stream: String,
    /// The durable consumer's name (`palisade-alert`).
    pub consumer: String,
    /// The subject filter (`palisade.events.>`).
    pub filter: String,
    /// Deliveries of one message before giving up on it (10); 0 or less:
    /// no limit.
    pub max_deliver: i64,
    /// Delay before a failed message is redelivered (1 s doubling to 5 min).
    pub backoff: Backoff,
    /// How long JetStream waits for an ack before redelivering (60 s).
    pub ack_wait: Duration,
    /// Idle heartbeat of the pull subscription: two missed ones make the
    /// consumer set its subscription up again (5 s).
    pub heartbeat: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            stream: crate::sink::DEFAULT_NATS_STREAM.to_string(),
            consumer: "palisade-alert".to_string(),
            filter: "palisade.events.>".to_string(),
            max_deliver: 10,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            ack_wait: Duration::from_secs(60),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// Counts of what happened to messages, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Messages dispatched and acknowledged.
    pub acked: u64,
    /// Failed deliveries NAK'd for a later retry.
    pub retried: u64,
    /// Undecodable messages terminated.
    pub undecodable: u64,
    /// Messages given up on at `max_deliver`.
    pub gave_up: u64,
}

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("stream {stream:?} not found")]
    StreamNotFound { stream: String },
    #[error("cannot look up stream {stream:?} (is JetStream enabled on the server?): {reason}")]
    Stream { stream: String, reason: String },
    #[error("cannot create consumer {consumer:?} on stream {stream:?}: {reason}")]
    CreateConsumer {
        stream: String,
        consumer: String,
        reason: String,
    },
    #[error("cannot pull from consumer {consumer:?}: {reason}")]
    Pull { consumer: String, reason: String },
}

/// Why a message could not be decoded (it is terminated, not retried).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported Content-Type {0:?} (expected application/msgpack or application/json)")]
    ContentType(String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Decodes a message payload by its `Content-Type`; without one, a payload
/// starting with `{` is read as JSON and anything else as MessagePack.
pub fn decode_message(content_type: Option<&str>, payload: &[u8]) -> Result<Envelope, DecodeError> {
    let format = match content_type.map(str::trim).filter(|c| !c.is_empty()) {
        Some(ct) => PayloadFormat::from_content_type(ct)
            .ok_or_else(|| DecodeError::ContentType(super::one_line(ct, 80)))?,
        None => match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => PayloadFormat::Json,
            _ => PayloadFormat::MsgPack,
        },
    };
    Ok(schema::decode(payload, format)?)
}

/// The durable pull consumer feeding the dispatchers.
pub struct AlertConsumer {
    js: jetstream::Context,
    config: ConsumerConfig,
    dispatchers: Vec<Box<dyn Dispatcher>>,
    /// Stream sequence → which dispatchers already took that message.
    progress: HashMap<u64, Vec<bool>>,
    stats: ConsumerStats,
}

impl fmt::Debug for AlertConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertConsumer")
            .field("config", &self.config)
            .field("dispatchers", &self.dispatchers)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Bound of the in-memory progress map (only used to avoid repeating a
/// dispatch on redelivery; losing it means a repeat, never a loss).
const MAX_PROGRESS: usize = 10_000;

/// How an event is named in log lines.
struct Named<'a>(&'a Envelope);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} ({}, monitor {})",
            super::one_line(&self.0.id, 200),
            self.0.kind(),
            super::one_line(self.0.data.monitor(), 100)
        )
    }
}

impl AlertConsumer {
    /// A consumer over `client`. Nothing happens before [`run`](Self::run).
    pub fn new(
        client: async_nats::Client,
        config: ConsumerConfig,
        dispatchers: Vec<Box<dyn Dispatcher>>,
    ) -> Self {
        AlertConsumer {
            js: jetstream::new(client),
            config,
            dispatchers,
            progress: HashMap::new(),
            stats: ConsumerStats::default(),
        }
    }

    /// What happened so far.
    pub fn stats(&self) -> ConsumerStats {
        self.stats
    }

    /// Consumes until `shutdown` completes. A message being dispatched when
    /// it does is finished first.
    ///
    /// Starting fails only when the consumer cannot be set up at all (no
    /// JetStream, a filter the stream does not cover, …); a stream that does
    /// not exist yet is waited for. Once running, every error is logged and
    /// retried until `shutdown`.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumerError> {
        tokio::pin!(shutdown);
        let retry = Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
        };
        let mut started = false;
        let mut attempt = 0i64;
        loop {
            let setup = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                setup = self.subscribe() => setup,
            };
            let mut messages = match setup {
                Ok(messages) => messages,
                Err(e) => {
                    attempt += 1;
                    let wait = matches!(e, ConsumerError::StreamNotFound { .. });
                    if !started && !wait {
                        return Err(e);
                    }
                    let delay = retry.delay(attempt);
                    if wait && attempt == 1 {
                        tracing::warn!(
                            "{e}; waiting for it to be created (by `palisade` publishing its first event)"
                        );
                    } else if !wait || attempt % 20 == 0 {
                        tracing::warn!("{e}; retrying in {delay:?}");
                    }
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            attempt = 0;
            started = true;
            tracing::info!(
                stream = %self.config.stream,
                consumer = %self.config.consumer,
                filter = %self.config.filter,
                dispatchers = ?self.dispatchers.iter().map(|d| d.name()).collect::<Vec<_>>(),
                "consuming"
            );
            loop {
                let next = tokio::select! {
                    biased;
                    _ = &mut shutdown => return Ok(()),
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => self.handle(message).await,
                    Some(Err(e)) => {
                        tracing::warn!(
                            "pull subscription of consumer {:?}: {}; setting it up again",
                            self.config.consumer,
                            super::error_chain(&e)
                        );
                        break;
                    }
                    None => {
                        tracing::warn!(
                            "pull subscription of consumer {:?} ended; setting it up again",
                            self.config.consumer
                        );
                        break;
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(retry.initial) => {}
            }
        }
    }

    /// Looks up the stream, creates or updates the durable consumer and
    /// starts pulling.
    async fn subscribe(&self) -> Result<pull::Stream, ConsumerError> {
        let stream = self.stream().await?;
        let c = &self.config;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(c.consumer.clone()),
                description: Some("palisade-alert: dispatches Palisade events".to_string()),
                filter_subject: c.filter.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: c.ack_wait,
                max_deliver: if c.max_deliver > 0 { c.max_deliver } else { -1 },
                ..Default::default()
            })
            .await
            .map_err(|e| ConsumerError::CreateConsumer {
                stream: c.stream.clone(),
                consumer: c.consumer.clone(),
                reason: super::error_chain(&e),
            })?;
        // One message at a time: a buffered batch behind a slow dispatcher
        // would outlive `ack_wait` and be redelivered while still queued.
        consumer
            .stream()
            .max_messages_per_batch(1)
            .expires(c.heartbeat * 6)
            .heartbeat(c.heartbeat)
            .messages()
            .await
            .map_err(|e| ConsumerError::Pull {
                consumer: c.consumer.clone(),
                reason: super::error_chain(&e),
            })
    }

    async fn stream(&self) -> Result<JsStream, ConsumerError> {
        lookup_stream(&self.js, &self.config.stream).await
    }

    /// Dispatches one message, then acks, NAKs or terminates it.
    async fn handle(&mut self, message: jetstream::Message) {
        let (delivered, sequence) = match message.info() {
            Ok(info) => (info.delivered, info.stream_sequence),
            Err(e) => {
                tracing::warn!(subject = %message.subject, "message without JetStream metadata ignored: {e}");
                return;
            }
        };
        let content_type = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Content-Type"))
            .map(|v| v.as_str().to_string());
        let event = match decode_message(content_type.as_deref(), &message.payload) {
            Ok(event) => event,
            Err(e) => {
                self.stats.undecodable += 1;
                tracing::error!(
                    subject = %message.subject,
                    stream_sequence = sequence,
                    "cannot decode message: {e}; terminating it (it will not be redelivered)"
                );
                ack(&message, AckKind::Term, sequence).await;
                return;
            }
        };

        if self.progress.len() >= MAX_PROGRESS {
            self.progress.clear();
        }
        let done = self
            .progress
            .entry(sequence)
            .or_insert_with(|| vec![false; self.dispatchers.len()]);
        let mut failure = None;
        for (i, dispatcher) in self.dispatchers.iter().enumerate() {
            if done.get(i).copied().unwrap_or(false) {
                continue;
            }
            match dispatcher.dispatch(&event).await {
                Ok(outcome) => {
                    tracing::debug!(
                        dispatcher = dispatcher.name(),
                        ?outcome,
                        "{}",
                        Named(&event)
                    );
                    if let Some(d) = done.get_mut(i) {
                        *d = true;
                    }
                }
                Err(e) => {
                    failure.get_or_insert((dispatcher.name().to_string(), e));
                }
            }
        }

        let Some((dispatcher, error)) = failure else {
            self.progress.remove(&sequence);
            self.stats.acked += 1;
            if delivered > 1 {
                tracing::info!("{} delivered on attempt {delivered}", Named(&event));
            }
            ack(&message, AckKind::Ack, sequence).await;
            return;
        };
        let max = self.config.max_deliver;
        if max > 0 && delivered >= max {
            self.progress.remove(&sequence);
            self.stats.gave_up += 1;
            tracing::error!(
                id = %event.id,
                kind = event.kind(),
                monitor = %event.data.monitor(),
                deliveries = delivered,
                "giving up on {} after {delivered} deliveries (max_deliver {max}): {dispatcher}: {error}",
                Named(&event),
            );
            ack(&message, AckKind::Term, sequence).await;
            return;
        }
        self.stats.retried += 1;
        let delay = self.config.backoff.delay(delivered);
        let of = if max > 0 {
            format!("/{max}")
        } else {
            String::new()
        };
        tracing::warn!(
            "{}: {dispatcher} failed on delivery {delivered}{of}: {error}; redelivery in {delay:?}",
            Named(&event),
        );
        ack(&message, AckKind::Nak(Some(delay)), sequence).await;
    }
}

/// Sends an ack (waiting for the server's confirmation for `+ACK`); a
/// failure is logged — JetStream then redelivers after `ack_wait`.
async fn ack(message: &jetstream::Message, kind: AckKind, sequence: u64) {
    let what = match kind {
        AckKind::Ack => "ack",
        AckKind::Nak(_) => "nak",
        AckKind::Term => "term",
        AckKind::Progress | AckKind::Next => "progress",
    };
    let result = if matches!(kind, AckKind::Ack) {
        message.double_ack().await
    } else {
        message.ack_with(kind).await
    };
    if let Err(e) = result {
        tracing::warn!(
            stream_sequence = sequence,
            "cannot {what} message: {e}; JetStream will redeliver it"
        );
    }
}

/// Looks a stream up, telling "not found" apart from other failures.
pub(crate) async fn lookup_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<JsStream, ConsumerError> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::GetStreamErrorKind;
    js.get_stream(name).await.map_err(|e| match e.kind() {
        GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            ConsumerError::StreamNotFound {
                stream: name.to_string(),
            }
        }
        _ => ConsumerError::Stream {
            stream: name.to_string(),
            reason: super::error_chain(&e),
        },
    })
}
