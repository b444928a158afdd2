//! The durable JetStream pull consumer behind `palisade-alert run`.
//!
//! Before consuming, the stream is replayed (an ephemeral ordered consumer
//! over the same filter, from the first message to the current last one)
//! into the dispatchers that keep state ([`Dispatcher::restore`]), and the
//! dispatchers with a refresh interval are refreshed on a timer from then
//! on (Alertmanager: the firing alerts are re-posted).
//!
//! Every message is decoded (by its `Content-Type`) and handed to each
//! dispatcher. Only when all of them succeeded is it acknowledged; a
//! failure NAKs it with an exponential, capped delay so JetStream
//! redelivers it, and a redelivery skips the dispatchers that already took
//! it (within this process). The delivery budget is `max_deliver`
//! deliveries — and, for an event that ends an alert ([`is_resolution`]),
//! also `resolution_budget` since its first attempt in this process, so a
//! resolution is never given up before the alert it ends would have expired
//! by itself. Past the budget the message is published, unchanged, to the
//! dead-letter subject `<prefix>.dlq.<dispatcher>` on the same stream (with
//! headers saying why), logged at error, counted, and only then
//! acknowledged. A failure that no retry can change
//! ([`DispatchError::is_permanent`](super::DispatchError::is_permanent): a
//! Slack or PagerDuty 4xx, an SMTP 5xx) is dead-lettered at once, whatever
//! the budget; a receiver's `Retry-After` lengthens the delay before the
//! redelivery; if the dead letter cannot be published the message is
//! NAK'd and tried again, never dropped. A message that cannot be decoded
//! goes to `<prefix>.dlq.undecodable` at once. The server-side
//! `max_deliver` of the consumer is unlimited: JetStream itself never drops
//! a message.
//!
//! The consumer survives NATS restarts: the client reconnects by itself,
//! and a pull subscription that broke (missed heartbeats, consumer gone) is
//! set up again — the durable consumer is created if it is missing.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{DeliverPolicy, pull},
    stream::Stream as JsStream,
};
use futures::StreamExt;

use super::{Dispatcher, escape, is_resolution};
use crate::schema::{self, Envelope, PayloadFormat, SchemaError};
use crate::sink::subject_covers;

/// The dead-letter token of messages that cannot be decoded.
pub const UNDECODABLE_TOKEN: &str = "undecodable";

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
    /// The subject prefix of the dead-letter subjects
    /// `<prefix>.dlq.<dispatcher>` (`palisade`); the stream must cover them.
    pub subject_prefix: String,
    /// Deliveries of one message before it is dead-lettered (10); 0 or
    /// less: no limit.
    pub max_deliver: i64,
    /// The least time between the first delivery attempt of an event that
    /// ends an alert and its dead letter: at least the `endsAt` horizon of
    /// the alerts it ends (4 minutes: 4 resends of 1 minute).
    pub resolution_budget: Duration,
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
            subject_prefix: crate::sink::DEFAULT_NATS_SUBJECT_PREFIX.to_string(),
            max_deliver: 10,
            resolution_budget: super::HttpOptions::default().alert_horizon(),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            ack_wait: Duration::from_secs(60),
            heartbeat: Duration::from_secs(5),
        }
    }
}

impl ConsumerConfig {
    /// `<prefix>.dlq.<token>` (the token made subject-safe).
    pub fn dead_letter_subject(&self, token: &str) -> String {
        let token: String = token
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let token = if token.is_empty() { "_".into() } else { token };
        format!("{}.dlq.{token}", self.subject_prefix)
    }
}

/// Counts of what happened to messages, for logs and tests. Every message
/// received ends in exactly one of `acked`, `dead_lettered` and
/// `undecodable` (or is still being retried).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Messages dispatched and acknowledged.
    pub acked: u64,
    /// Failed deliveries NAK'd for a later retry.
    pub retried: u64,
    /// Undecodable messages, dead-lettered.
    pub undecodable: u64,
    /// Messages dead-lettered past their delivery budget.
    pub dead_lettered: u64,
    /// Events read by the start-up replay (nothing was delivered).
    pub replayed: u64,
    /// Refreshes (re-posts) made by the dispatchers so far.
    pub refreshed: u64,
}

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("stream {stream:?} not found")]
    StreamNotFound { stream: String },
    #[error("cannot look up stream {stream:?} (is JetStream enabled on the server?): {reason}")]
    Stream { stream: String, reason: String },
    #[error(
        "the filter {filter:?} is outside the subjects of stream {stream:?} ({}): the consumer would never receive an event",
        subjects.join(", ")
    )]
    FilterNotCovered {
        filter: String,
        stream: String,
        subjects: Vec<String>,
    },
    #[error(
        "the dead-letter subject {subject:?} is outside the subjects of stream {stream:?} ({}): set the subject prefix the stream covers",
        subjects.join(", ")
    )]
    DeadLetterNotCovered {
        subject: String,
        stream: String,
        subjects: Vec<String>,
    },
    #[error("cannot create consumer {consumer:?} on stream {stream:?}: {reason}")]
    CreateConsumer {
        stream: String,
        consumer: String,
        reason: String,
    },
    #[error("cannot pull from consumer {consumer:?}: {reason}")]
    Pull { consumer: String, reason: String },
    #[error("cannot replay stream {stream:?}: {reason}")]
    Replay { stream: String, reason: String },
}

/// Why a message could not be decoded (it is terminated, not retried).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "unsupported Content-Type {0:?} (expected application/cloudevents+json, application/json or application/msgpack)"
    )]
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
    dispatchers: Vec<Arc<dyn Dispatcher>>,
    /// Stream sequence → what happened to that message so far.
    progress: HashMap<u64, Progress>,
    stats: ConsumerStats,
    refreshed: Arc<std::sync::atomic::AtomicU64>,
}

/// A message's dispatchers that took it, and its first attempt here.
#[derive(Debug)]
struct Progress {
    done: Vec<bool>,
    first: Instant,
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
/// dispatch on redelivery and to time a resolution's budget; losing it
/// means a repeat or a later dead letter, never a loss).
const MAX_PROGRESS: usize = 10_000;

/// How long the start-up replay waits for the next message.
const REPLAY_WAIT: Duration = Duration::from_secs(30);

/// The longest `Retry-After` honoured (a longer one is cut to this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How long publishing a dead letter may take.
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(10);

/// How an event is named in log lines (escaped).
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

/// The refresh tasks, stopped when dropped.
struct Refreshers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Refreshers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
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
            dispatchers: dispatchers.into_iter().map(Arc::from).collect(),
            progress: HashMap::new(),
            stats: ConsumerStats::default(),
            refreshed: Arc::default(),
        }
    }

    /// What happened so far.
    pub fn stats(&self) -> ConsumerStats {
        ConsumerStats {
            refreshed: self.refreshed.load(std::sync::atomic::Ordering::Relaxed),
            ..self.stats
        }
    }

    /// Consumes until `shutdown` completes. A message being dispatched when
    /// it does is finished first.
    ///
    /// Starting fails only when the consumer cannot be set up at all (no
    /// JetStream, a filter or dead-letter subject the stream does not
    /// cover, …); a stream that does not exist yet is waited for. Once
    /// running, every error is logged and retried until `shutdown`.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumerError> {
        tokio::pin!(shutdown);
        let retry = Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
        };
        let mut started = false;
        let mut refreshers: Option<Refreshers> = None;
        let mut attempt = 0i64;
        loop {
            let setup = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                setup = self.prepare(refreshers.is_none()) => setup,
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
            if refreshers.is_none() {
                refreshers = Some(self.start_refreshers());
            }
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

    /// Looks up the stream, checks that it covers the filter and the
    /// dead-letter subjects, replays it into the dispatchers (`replay`:
    /// the first time), creates or updates the durable consumer and starts
    /// pulling.
    async fn prepare(&mut self, replay: bool) -> Result<pull::Stream, ConsumerError> {
        let stream = self.stream().await?;
        self.check_subjects(&stream)?;
        if replay {
            let n = self.replay(&stream).await?;
            self.stats.replayed += n;
        }
        self.subscribe(&stream).await
    }

    /// The filter and the dead-letter subjects must lie within the stream's
    /// subjects (checked here: nats-server 2.10 and later accept a consumer
    /// filtering outside them, which would then wait forever).
    fn check_subjects(&self, stream: &JsStream) -> Result<(), ConsumerError> {
        let subjects = &stream.cached_info().config.subjects;
        if subjects.is_empty() {
            return Ok(()); // a mirror or sourced stream: nothing to check
        }
        let covered = |subject: &str| subjects.iter().any(|s| subject_covers(s, subject));
        if !covered(&self.config.filter) {
            return Err(ConsumerError::FilterNotCovered {
                filter: self.config.filter.clone(),
                stream: self.config.stream.clone(),
                subjects: subjects.clone(),
            });
        }
        let tokens = self
            .dispatchers
            .iter()
            .map(|d| d.token())
            .chain([UNDECODABLE_TOKEN]);
        for token in tokens {
            let subject = self.config.dead_letter_subject(token);
            if !covered(&subject) {
                return Err(ConsumerError::DeadLetterNotCovered {
                    subject,
                    stream: self.config.stream.clone(),
                    subjects: subjects.clone(),
                });
            }
        }
        Ok(())
    }

    /// Feeds every event the stream holds under the filter, oldest first,
    /// to the dispatchers' [`restore`](Dispatcher::restore). Returns how
    /// many were read.
    async fn replay(&self, stream: &JsStream) -> Result<u64, ConsumerError> {
        if !self.dispatchers.iter().any(|d| d.wants_history()) {
            return Ok(0);
        }
        let failed = |reason: String| ConsumerError::Replay {
            stream: self.config.stream.clone(),
            reason,
        };
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.config.filter.clone(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| failed(super::error_chain(&e)))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(0);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| failed(super::error_chain(&e)))?;
        let mut read = 0u64;
        loop {
            let message = match tokio::time::timeout(REPLAY_WAIT, messages.next()).await {
                Err(_) => return Err(failed(format!("no message within {REPLAY_WAIT:?}"))),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(failed(super::error_chain(&e))),
                Ok(Some(Ok(message))) => message,
            };
            read += 1;
            if let Ok(event) = decode_message(content_type(&message).as_deref(), &message.payload) {
                for dispatcher in &self.dispatchers {
                    dispatcher.restore(&event);
                }
            }
            if message.info().map_or(true, |info| info.pending == 0) {
                break;
            }
        }
        tracing::info!(
            stream = %self.config.stream,
            events = read,
            "replayed the stream to rebuild the open alerts"
        );
        Ok(read)
    }

    /// One task per dispatcher with a refresh interval: refreshes now, then
    /// every interval. A failing refresh is logged once per outage.
    fn start_refreshers(&self) -> Refreshers {
        let mut tasks = Vec::new();
        for dispatcher in &self.dispatchers {
            let Some(every) = dispatcher.refresh_interval() else {
                continue;
            };
            let dispatcher = dispatcher.clone();
            let counter = self.refreshed.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failing = false;
                loop {
                    tick.tick().await;
                    match dispatcher.refresh().await {
                        Ok(n) => {
                            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if failing {
                                tracing::info!(
                                    dispatcher = dispatcher.name(),
                                    "refresh works again"
                                );
                            }
                            failing = false;
                            tracing::debug!(dispatcher = dispatcher.name(), items = n, "refreshed");
                        }
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(
                                dispatcher = dispatcher.name(),
                                "refresh failed: {e}; trying again every {every:?}"
                            );
                        }
                        Err(e) => {
                            tracing::debug!(dispatcher = dispatcher.name(), "refresh failed: {e}")
                        }
                    }
                }
            }));
        }
        Refreshers(tasks)
    }

    /// Creates or updates the durable consumer and starts pulling.
    async fn subscribe(&self, stream: &JsStream) -> Result<pull::Stream, ConsumerError> {
        let c = &self.config;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(c.consumer.clone()),
                description: Some("palisade-alert: dispatches Palisade events".to_string()),
                filter_subject: c.filter.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: c.ack_wait,
                // Unlimited: the budget is ours, and its end is a dead
                // letter, never a message the server stops delivering.
                max_deliver: -1,
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

    /// Publishes `message` unchanged to `<prefix>.dlq.<token>` with headers
    /// saying why, and waits for the stream's acknowledgement.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        letter: DeadLetter<'_>,
    ) -> Result<String, String> {
        let subject = self.config.dead_letter_subject(letter.token);
        let mut headers = async_nats::HeaderMap::new();
        if let Some(ct) = content_type(message) {
            headers.insert("Content-Type", ct.as_str());
        }
        headers.insert("Nats-Msg-Id", letter.msg_id.as_str());
        headers.insert(
            "Palisade-Dlq-Dispatcher",
            super::one_line(letter.dispatcher, 300).as_str(),
        );
        headers.insert(
            "Palisade-Dlq-Reason",
            super::one_line(letter.reason, 1000).as_str(),
        );
        headers.insert(
            "Palisade-Dlq-Deliveries",
            letter.deliveries.to_string().as_str(),
        );
        headers.insert(
            "Palisade-Dlq-Subject",
            super::one_line(message.subject.as_str(), 300).as_str(),
        );
        headers.insert(
            "Palisade-Dlq-Sequence",
            letter.sequence.to_string().as_str(),
        );
        let publish = async {
            self.js
                .publish_with_headers(subject.clone(), headers, message.payload.clone())
                .await
                .map_err(|e| super::error_chain(&e))?
                .await
                .map_err(|e| super::error_chain(&e))
        };
        match tokio::time::timeout(DEAD_LETTER_WAIT, publish).await {
            Ok(Ok(_)) => Ok(subject),
            Ok(Err(e)) => Err(format!("cannot publish to {subject}: {e}")),
            Err(_) => Err(format!(
                "cannot publish to {subject}: no acknowledgement within {DEAD_LETTER_WAIT:?}"
            )),
        }
    }

    /// Dispatches one message, then acks, NAKs or dead-letters it.
    async fn handle(&mut self, message: jetstream::Message) {
        let (delivered, sequence) = match message.info() {
            Ok(info) => (info.delivered, info.stream_sequence),
            Err(e) => {
                tracing::warn!(subject = %escape(&message.subject), "message without JetStream metadata ignored: {e}");
                return;
            }
        };
        let event = match decode_message(content_type(&message).as_deref(), &message.payload) {
            Ok(event) => event,
            Err(e) => {
                let reason = format!("cannot decode message: {e}");
                let letter = DeadLetter {
                    token: UNDECODABLE_TOKEN,
                    dispatcher: "decoder",
                    reason: &reason,
                    deliveries: delivered,
                    sequence,
                    msg_id: format!("{}:{sequence}:dlq:{UNDECODABLE_TOKEN}", self.config.stream),
                };
                match self.dead_letter(&message, letter).await {
                    Ok(subject) => {
                        self.stats.undecodable += 1;
                        tracing::error!(
                            subject = %escape(&message.subject),
                            stream_sequence = sequence,
                            "{reason}; dead-lettered to {subject}"
                        );
                        ack(&message, AckKind::Ack, sequence).await;
                    }
                    Err(dlq) => {
                        tracing::warn!(stream_sequence = sequence, "{reason}; {dlq}; trying again");
                        let delay = self.config.backoff.delay(delivered);
                        ack(&message, AckKind::Nak(Some(delay)), sequence).await;
                    }
                }
                return;
            }
        };

        if self.progress.len() >= MAX_PROGRESS {
            self.progress.clear();
        }
        let mut progress = self.progress.remove(&sequence).unwrap_or_else(|| Progress {
            done: vec![false; self.dispatchers.len()],
            first: Instant::now(),
        });
        let mut failures = Vec::new();
        for (i, dispatcher) in self.dispatchers.iter().enumerate() {
            if progress.done.get(i).copied().unwrap_or(false) {
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
                    if let Some(d) = progress.done.get_mut(i) {
                        *d = true;
                    }
                }
                Err(e) => failures.push((i, e)),
            }
        }

        if failures.is_empty() {
            self.stats.acked += 1;
            if delivered > 1 {
                tracing::info!("{} delivered on attempt {delivered}", Named(&event));
            }
            ack(&message, AckKind::Ack, sequence).await;
            return;
        }
        let max = self.config.max_deliver;
        let resolution = is_resolution(&event);
        let spent = max > 0
            && delivered >= max
            && (!resolution || progress.first.elapsed() >= self.config.resolution_budget);
        // Past the budget every failure is dead-lettered; before it, only a
        // refusal no retry can change.
        let (to_letter, mut to_retry): (Vec<_>, Vec<_>) = failures
            .into_iter()
            .partition(|(_, error)| spent || error.is_permanent());
        let mut lettered = false;
        let mut letter_failed = false;
        for (i, error) in to_letter {
            let dispatcher = &self.dispatchers[i];
            let reason = format!("{}: {error}", dispatcher.name());
            let letter = DeadLetter {
                token: dispatcher.token(),
                dispatcher: dispatcher.name(),
                reason: &reason,
                deliveries: delivered,
                sequence,
                msg_id: format!("{}:dlq:{}:{i}", event.id, dispatcher.token()),
            };
            match self.dead_letter(&message, letter).await {
                Ok(subject) => {
                    lettered = true;
                    if let Some(d) = progress.done.get_mut(i) {
                        *d = true;
                    }
                    let why = if spent {
                        format!(
                            "after {delivered} deliveries (max_deliver {max}{})",
                            if resolution {
                                format!(", resolution budget {:?}", self.config.resolution_budget)
                            } else {
                                String::new()
                            },
                        )
                    } else {
                        format!("at delivery {delivered}: refused for good, no retry can help")
                    };
                    tracing::error!(
                        id = %super::one_line(&event.id, 200),
                        kind = event.kind(),
                        monitor = %super::one_line(event.data.monitor(), 100),
                        deliveries = delivered,
                        "dead-lettered {} to {subject} {why}: {reason}",
                        Named(&event),
                    );
                }
                Err(dlq) => {
                    letter_failed = true;
                    tracing::warn!("{}: {reason}; {dlq}; trying again", Named(&event));
                    // Tried again like any failure (not counted as a retry).
                    to_retry.push((i, error));
                }
            }
        }
        if to_retry.is_empty() {
            if lettered {
                self.stats.dead_lettered += 1;
            }
            ack(&message, AckKind::Ack, sequence).await;
            return;
        }
        self.progress.insert(sequence, progress);
        // A receiver's Retry-After lengthens the delay (up to an hour).
        let asked = to_retry
            .iter()
            .filter_map(|(_, e)| e.retry_after())
            .max()
            .map(|d| d.min(MAX_RETRY_AFTER));
        let delay = self
            .config
            .backoff
            .delay(delivered)
            .max(asked.unwrap_or_default());
        if letter_failed && to_retry.iter().all(|(_, e)| spent || e.is_permanent()) {
            ack(&message, AckKind::Nak(Some(delay)), sequence).await;
            return;
        }
        self.stats.retried += 1;
        let of = if max > 0 {
            format!("/{max}")
        } else {
            String::new()
        };
        for (i, error) in &to_retry {
            tracing::warn!(
                "{}: {} failed on delivery {delivered}{of}: {error}; redelivery in {delay:?}",
                Named(&event),
                self.dispatchers[*i].name(),
            );
        }
        ack(&message, AckKind::Nak(Some(delay)), sequence).await;
    }
}

/// What a dead letter says.
struct DeadLetter<'a> {
    token: &'a str,
    dispatcher: &'a str,
    reason: &'a str,
    deliveries: i64,
    sequence: u64,
    msg_id: String,
}

/// The message's `Content-Type` header.
fn content_type(message: &jetstream::Message) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get("Content-Type"))
        .map(|v| v.as_str().to_string())
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
