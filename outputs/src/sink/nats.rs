//! The NATS JetStream sink.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};

use super::{Sink, SinkError, one_line, partial, secs};
use crate::nats::{self, NatsOptionError, NatsOptions};
use crate::schema::{Envelope, PayloadFormat, encode};

/// How long a stream keeps message ids for de-duplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How many publishes may await their acknowledgement at once within a batch.
const ACK_WINDOW: usize = 1024;

/// The subject prefix used when none is configured.
pub const DEFAULT_NATS_SUBJECT_PREFIX: &str = "palisade";

/// The JetStream stream used when none is configured.
pub const DEFAULT_NATS_STREAM: &str = "PALISADE";

/// Where and how to publish to NATS JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSinkOptions {
    /// The servers and how to connect to them. Its `connect_timeout` also
    /// bounds every JetStream request and publish acknowledgement.
    pub nats: NatsOptions,
    /// Subject prefix, `palisade` by default.
    pub subject_prefix: String,
    /// JetStream stream name, created to cover `<prefix>.>` if missing.
    pub stream: String,
    pub format: PayloadFormat,
}

impl Default for NatsSinkOptions {
    fn default() -> Self {
        NatsSinkOptions {
            nats: NatsOptions::default(),
            subject_prefix: DEFAULT_NATS_SUBJECT_PREFIX.to_string(),
            stream: DEFAULT_NATS_STREAM.to_string(),
            format: PayloadFormat::MsgPack,
        }
    }
}

impl NatsSinkOptions {
    /// Checks the connection options, the subject prefix and the stream
    /// name (no I/O).
    pub fn validate(&self) -> Result<(), NatsOptionError> {
        self.nats.validate()?;
        nats::validate_subject_prefix(&self.subject_prefix)?;
        nats::validate_stream_name(&self.stream)
    }
}

/// Publishes events to a JetStream stream, one message per event, with
/// `Nats-Msg-Id: <id>` and `Content-Type` headers.
#[derive(Debug)]
pub struct NatsSink {
    name: String,
    server: String,
    prefix: String,
    format: PayloadFormat,
    timeout: Duration,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl NatsSink {
    /// Connects, then creates the stream `<stream>` with subjects `<prefix>.>`
    /// (file storage, 2 minute duplicate window) if it is missing, or checks
    /// that the existing one covers `<prefix>.>`.
    ///
    /// Connecting is [`nats::connect`]: bounded by `connect_timeout`, then the
    /// client reconnects by itself, with backoff, after any outage.
    pub async fn connect(opts: NatsSinkOptions) -> Result<NatsSink, SinkError> {
        opts.validate()?;
        let client = nats::connect(&opts.nats).await?;
        let server = opts.nats.urls.join(", ");
        let timeout = opts.nats.connect_timeout;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client.clone());
        let sink = NatsSink {
            name: format!("nats:{}", opts.stream),
            server,
            prefix: opts.subject_prefix,
            format: opts.format,
            timeout,
            client,
            js,
        };
        sink.ensure_stream(&opts.stream).await?;
        tracing::info!(server = %sink.server, stream = %opts.stream, prefix = %sink.prefix, "NATS sink ready");
        Ok(sink)
    }

    /// The underlying client (e.g. to subscribe in tests or tools).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context used for publishing.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    fn nats_error(&self, cause: impl Into<String>) -> SinkError {
        SinkError::Nats {
            server: self.server.clone(),
            cause: cause.into(),
        }
    }

    async fn ensure_stream(&self, name: &str) -> Result<(), SinkError> {
        let wanted = format!("{}.>", self.prefix);
        match self.js.get_stream(name).await {
            Ok(stream) => self.check_stream(name, stream.cached_info(), &wanted),
            Err(err) => {
                let missing = matches!(
                    err.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref e)
                        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                );
                if !missing {
                    return Err(self
                        .nats_error(format!("cannot look up stream {name}: {}", js_cause(&err))));
                }
                let config = stream::Config {
                    name: name.to_string(),
                    subjects: vec![wanted.clone()],
                    storage: stream::StorageType::File,
                    duplicate_window: DUPLICATE_WINDOW,
                    ..Default::default()
                };
                match self.js.create_stream(config).await {
                    Ok(_) => {
                        tracing::info!(stream = name, subjects = %wanted, "created JetStream stream");
                        Ok(())
                    }
                    Err(create_err) => {
                        // Someone else may have created it meanwhile.
                        if let Ok(stream) = self.js.get_stream(name).await {
                            return self.check_stream(name, stream.cached_info(), &wanted);
                        }
                        Err(self.nats_error(format!(
                            "cannot create stream {name} for {wanted}: {}",
                            js_cause(&create_err)
                        )))
                    }
                }
            }
        }
    }

    fn check_stream(&self, name: &str, info: &stream::Info, wanted: &str) -> Result<(), SinkError> {
        let config = &info.config;
        if !config.subjects.iter().any(|s| subject_covers(s, wanted)) {
            return Err(self.nats_error(format!(
                "stream {name} exists but its subjects [{}] do not cover {wanted}",
                config.subjects.join(", ")
            )));
        }
        if config.duplicate_window < DUPLICATE_WINDOW {
            tracing::warn!(
                stream = name,
                window = ?config.duplicate_window,
                "stream's duplicate window is shorter than 2 minutes; re-sends after a long outage may be stored twice"
            );
        }
        if config.storage != stream::StorageType::File {
            tracing::warn!(
                stream = name,
                "stream uses memory storage; events are lost if the server restarts"
            );
        }
        Ok(())
    }

    fn publish_error(&self, err: &jetstream::context::PublishError, subject: &str) -> SinkError {
        use jetstream::context::PublishErrorKind as K;
        let cause = match err.kind() {
            K::TimedOut => format!(
                "no publish acknowledgement within {} (server down or slow)",
                secs(self.timeout)
            ),
            K::StreamNotFound => {
                format!("no stream accepts subject {subject} (was the stream deleted?)")
            }
            K::BrokenPipe => {
                "connection lost while awaiting the publish acknowledgement".to_string()
            }
            _ => format!("publish to {subject} failed: {}", one_line(err)),
        };
        self.nats_error(cause)
    }

    /// Awaits the oldest pending acknowledgement.
    async fn await_front(
        &self,
        pending: &mut VecDeque<(String, PublishAckFuture)>,
    ) -> Result<(), SinkError> {
        let Some((subject, ack)) = pending.pop_front() else {
            return Ok(());
        };
        match ack.await {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::debug!(stream = %ack.stream, seq = ack.sequence, "duplicate publish ignored by the stream");
                }
                Ok(())
            }
            Err(err) => Err(self.publish_error(&err, &subject)),
        }
    }
}

#[async_trait::async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&mut self, events: &[Envelope]) -> Result<usize, SinkError> {
        if events.is_empty() {
            return Ok(0);
        }
        if self.client.connection_state() != State::Connected {
            return Err(self.nats_error("not connected (reconnecting in the background)"));
        }
        let mut pending: VecDeque<(String, PublishAckFuture)> = VecDeque::new();
        let mut acked = 0usize;
        for event in events {
            if pending.len() >= ACK_WINDOW {
                if let Err(err) = self.await_front(&mut pending).await {
                    return partial(acked, err, &self.name);
                }
                acked += 1;
            }
            let sent = match encode(event, self.format) {
                Ok(payload) => {
                    let subject = event.nats_subject(&self.prefix);
                    let mut headers = HeaderMap::new();
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
                    headers.insert("Content-Type", self.format.content_type());
                    self.js
                        .publish_with_headers(subject.clone(), headers, payload.into())
                        .await
                        .map(|ack| (subject.clone(), ack))
                        .map_err(|err| self.publish_error(&err, &subject))
                }
                Err(err) => Err(SinkError::from(err)),
            };
            match sent {
                Ok(entry) => pending.push_back(entry),
                Err(err) => {
                    // Count what was already sent, up to the first failure.
                    while !pending.is_empty() {
                        if let Err(first) = self.await_front(&mut pending).await {
                            return partial(acked, first, &self.name);
                        }
                        acked += 1;
                    }
                    return partial(acked, err, &self.name);
                }
            }
        }
        while !pending.is_empty() {
            if let Err(err) = self.await_front(&mut pending).await {
                return partial(acked, err, &self.name);
            }
            acked += 1;
        }
        Ok(acked)
    }
}

fn js_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let text = one_line(err);
    if text.to_ascii_lowercase().contains("no responders") {
        format!("{text} (is JetStream enabled on the server?)")
    } else {
        text
    }
}

/// Whether the stream subject `pattern` matches every subject matched by
/// `filter` (both may hold `*` and `>` wildcards).
pub(crate) fn subject_covers(pattern: &str, filter: &str) -> bool {
    let mut p = pattern.split('.');
    let mut f = filter.split('.');
    loop {
        match (p.next(), f.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(ft)) if ft != ">" => {}
            (Some(pt), Some(ft)) if pt == ft && pt != ">" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
