//! The NATS JetStream sink.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::connection::State;
use async_nats::jetstream::{self, stream};

use super::{Acknowledgement, Pipeline, Sink, SinkError, one_line, publish_pipelined, secs};
use crate::nats::{self, NatsOptionError, NatsOptions};
use crate::schema::{Envelope, PayloadFormat, encode};

/// How long a stream keeps message ids for de-duplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How many publishes may await their JetStream acknowledgement at once
/// ([`Pipeline::window`]). Enough to keep the server busy while the caller
/// commits what was acknowledged (a store transaction of a few milliseconds
/// is a few hundred events at 50,000 events/s); few enough that a full
/// window is about 20 ms of the server's work at that rate, far below the
/// latency the delivery is meant for, and that a failure re-sends (and the
/// stream de-duplicates) at most this many events.
pub const ACK_WINDOW: usize = 1024;

/// The subject prefix used when none is configured.
pub const DEFAULT_NATS_SUBJECT_PREFIX: &str = "palisade";

/// The JetStream stream used when none is configured.
pub const DEFAULT_NATS_STREAM: &str = "PALISADE";

/// How long the stream keeps a message when `max_age` is not configured:
/// 400 days, as long as the store keeps its history by default.
pub const DEFAULT_STREAM_MAX_AGE: Duration = Duration::from_secs(400 * 24 * 3600);

/// The most replicas a JetStream stream can have.
pub const MAX_STREAM_REPLICAS: usize = 5;

/// Where the stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamStorage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In memory: lost when the server restarts.
    Memory,
}

impl StreamStorage {
    /// `"file"` or `"memory"`, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStorage::File => "file",
            StreamStorage::Memory => "memory",
        }
    }

    /// Parses `"file"` or `"memory"`.
    pub fn parse(text: &str) -> Option<StreamStorage> {
        match text {
            "file" => Some(StreamStorage::File),
            "memory" => Some(StreamStorage::Memory),
            _ => None,
        }
    }

    fn jetstream(self) -> stream::StorageType {
        match self {
            StreamStorage::File => stream::StorageType::File,
            StreamStorage::Memory => stream::StorageType::Memory,
        }
    }
}

/// The settings of the stream the sink creates when it is missing. An
/// existing stream is never changed: where its settings differ, the sink
/// says so ([`stream_differences`]) and uses it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// How long a message is kept ([`DEFAULT_STREAM_MAX_AGE`]).
    pub max_age: Duration,
    /// How many bytes the stream holds at most before dropping its oldest
    /// messages; `None` (the default): no bound but `max_age`.
    pub max_bytes: Option<u64>,
    /// Copies kept in a cluster, 1 to [`MAX_STREAM_REPLICAS`] (default 1).
    pub replicas: usize,
    /// File (the default) or memory.
    pub storage: StreamStorage,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            max_age: DEFAULT_STREAM_MAX_AGE,
            max_bytes: None,
            replicas: 1,
            storage: StreamStorage::File,
        }
    }
}

impl StreamSettings {
    /// The JetStream `max_bytes`: -1 for no bound.
    fn jetstream_max_bytes(&self) -> i64 {
        self.max_bytes
            .map_or(-1, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX))
    }

    /// The configuration of a new stream `name` over `subject`.
    pub fn stream_config(&self, name: &str, subject: &str) -> stream::Config {
        stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            storage: self.storage.jetstream(),
            max_age: self.max_age,
            max_bytes: self.jetstream_max_bytes(),
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        }
    }
}

/// How an existing stream's configuration differs from `wanted`, one line
/// per setting (`max_age`, `max_bytes`, `replicas`, `storage`), empty if it
/// does not.
pub fn stream_differences(config: &stream::Config, wanted: &StreamSettings) -> Vec<String> {
    let bytes = |b: i64| {
        if b < 0 {
            "unlimited".to_string()
        } else {
            b.to_string()
        }
    };
    let age = |d: Duration| {
        if d.is_zero() {
            "unlimited".to_string()
        } else {
            days_or_exact(d)
        }
    };
    let storage = |s: &stream::StorageType| match s {
        stream::StorageType::File => "file",
        stream::StorageType::Memory => "memory",
    };
    let mut out = Vec::new();
    if config.max_age != wanted.max_age {
        out.push(format!(
            "max_age is {}, configured {}",
            age(config.max_age),
            age(wanted.max_age)
        ));
    }
    if config.max_bytes != wanted.jetstream_max_bytes() {
        out.push(format!(
            "max_bytes is {}, configured {}",
            bytes(config.max_bytes),
            bytes(wanted.jetstream_max_bytes())
        ));
    }
    // A server before 2.10 reports 0 replicas for an unclustered stream.
    if config.num_replicas.max(1) != wanted.replicas {
        out.push(format!(
            "replicas is {}, configured {}",
            config.num_replicas.max(1),
            wanted.replicas
        ));
    }
    if config.storage != wanted.storage.jetstream() {
        out.push(format!(
            "storage is {}, configured {}",
            storage(&config.storage),
            wanted.storage.as_str()
        ));
    }
    out
}

/// What [`inspect_stream`] found of the sink's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamState {
    /// No such stream: the sink creates it with the configured settings.
    Missing,
    /// The stream exists.
    Present {
        /// Its subjects cover `<prefix>.>` (else the sink refuses it).
        covers: bool,
        /// Its subjects.
        subjects: Vec<String>,
        /// Where its settings differ from the configured ones
        /// ([`stream_differences`]); the sink uses it as it is.
        differences: Vec<String>,
    },
}

/// Connects as the sink would and looks the stream up, changing nothing
/// (`palisade doctor`): unreachable servers and refusals are errors.
pub async fn inspect_stream(opts: &NatsSinkOptions) -> Result<StreamState, SinkError> {
    opts.validate()?;
    let client = nats::connect(&opts.nats).await?;
    let server = opts.nats.urls.join(", ");
    let js = jetstream::ContextBuilder::new()
        .timeout(opts.nats.connect_timeout)
        .build(client);
    match js.get_stream(&opts.stream).await {
        Ok(stream) => {
            let config = &stream.cached_info().config;
            let wanted = format!("{}.>", opts.subject_prefix);
            Ok(StreamState::Present {
                covers: config.subjects.iter().any(|s| subject_covers(s, &wanted)),
                subjects: config.subjects.clone(),
                differences: stream_differences(config, &opts.stream_settings),
            })
        }
        Err(err)
            if matches!(
                err.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(StreamState::Missing)
        }
        Err(err) => Err(SinkError::Nats {
            server,
            cause: format!("cannot look up stream {}: {}", opts.stream, js_cause(&err)),
        }),
    }
}

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
    /// The settings of the stream when the sink creates it.
    pub stream_settings: StreamSettings,
    /// JSON (the default) or MessagePack.
    pub format: PayloadFormat,
}

impl Default for NatsSinkOptions {
    fn default() -> Self {
        NatsSinkOptions {
            nats: NatsOptions::default(),
            subject_prefix: DEFAULT_NATS_SUBJECT_PREFIX.to_string(),
            stream: DEFAULT_NATS_STREAM.to_string(),
            stream_settings: StreamSettings::default(),
            format: PayloadFormat::default(),
        }
    }
}

impl NatsSinkOptions {
    /// Checks the connection options, the subject prefix, the stream name
    /// and its settings (no I/O).
    pub fn validate(&self) -> Result<(), NatsOptionError> {
        self.nats.validate()?;
        nats::validate_subject_prefix(&self.subject_prefix)?;
        nats::validate_stream_name(&self.stream)?;
        let settings = &self.stream_settings;
        if !(1..=MAX_STREAM_REPLICAS).contains(&settings.replicas) {
            return Err(NatsOptionError {
                key: "replicas",
                message: format!("must be 1 to {MAX_STREAM_REPLICAS}"),
            });
        }
        if settings.max_bytes == Some(0) {
            return Err(NatsOptionError {
                key: "max_bytes",
                message: "must be at least 1 (leave it out for no bound)".to_string(),
            });
        }
        if settings.max_age.is_zero() {
            return Err(NatsOptionError {
                key: "max_age",
                message: "must be longer than 0".to_string(),
            });
        }
        Ok(())
    }
}

/// Publishes events to a JetStream stream, one message per event, with
/// `Nats-Msg-Id: <id>` and `Content-Type` headers.
#[derive(Debug)]
pub struct NatsSink {
    name: String,
    /// The configured URLs, for errors.
    server: Arc<str>,
    prefix: String,
    format: PayloadFormat,
    timeout: Duration,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl NatsSink {
    /// Connects, then creates the stream `<stream>` with subjects `<prefix>.>`
    /// (2 minute duplicate window, and the [`StreamSettings`]) if it is
    /// missing, or checks that the existing one covers `<prefix>.>` (and
    /// warns of the settings where it differs, without changing it).
    ///
    /// Connecting is [`nats::connect`]: bounded by `connect_timeout`, then the
    /// client reconnects by itself, with backoff, after any outage.
    pub async fn connect(opts: NatsSinkOptions) -> Result<NatsSink, SinkError> {
        opts.validate()?;
        let client = nats::connect(&opts.nats).await?;
        let server: Arc<str> = opts.nats.urls.join(", ").into();
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
        sink.ensure_stream(&opts.stream, &opts.stream_settings)
            .await?;
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
            server: self.server.to_string(),
            cause: cause.into(),
        }
    }

    async fn ensure_stream(&self, name: &str, settings: &StreamSettings) -> Result<(), SinkError> {
        let wanted = format!("{}.>", self.prefix);
        match self.js.get_stream(name).await {
            Ok(stream) => self.check_stream(name, stream.cached_info(), &wanted, settings),
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
                let config = settings.stream_config(name, &wanted);
                match self.js.create_stream(config).await {
                    Ok(_) => {
                        tracing::info!(
                            stream = name,
                            subjects = %wanted,
                            max_age = %days_or_exact(settings.max_age),
                            max_bytes = ?settings.max_bytes,
                            replicas = settings.replicas,
                            storage = settings.storage.as_str(),
                            "created JetStream stream"
                        );
                        Ok(())
                    }
                    Err(create_err) => {
                        // Someone else may have created it meanwhile.
                        if let Ok(stream) = self.js.get_stream(name).await {
                            return self.check_stream(
                                name,
                                stream.cached_info(),
                                &wanted,
                                settings,
                            );
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

    fn check_stream(
        &self,
        name: &str,
        info: &stream::Info,
        wanted: &str,
        settings: &StreamSettings,
    ) -> Result<(), SinkError> {
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
        for difference in stream_differences(config, settings) {
            tracing::warn!(
                stream = name,
                "existing stream's {difference}; left as it is (change it with `nats stream edit`, or delete it to have it created anew)"
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
}

/// The one-line error of a failed publish to `subject`.
fn publish_error(
    server: &str,
    timeout: Duration,
    err: &jetstream::context::PublishError,
    subject: &str,
) -> SinkError {
    use jetstream::context::PublishErrorKind as K;
    let cause = match err.kind() {
        K::TimedOut => format!(
            "no publish acknowledgement within {} (server down or slow)",
            secs(timeout)
        ),
        K::StreamNotFound => {
            format!("no stream accepts subject {subject} (was the stream deleted?)")
        }
        K::BrokenPipe => "connection lost while awaiting the publish acknowledgement".to_string(),
        _ => format!("publish to {subject} failed: {}", one_line(err)),
    };
    SinkError::Nats {
        server: server.to_string(),
        cause,
    }
}

#[async_trait::async_trait]
impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&mut self, events: &[Envelope]) -> Result<usize, SinkError> {
        let name = self.name.clone();
        publish_pipelined(self, events, &name).await
    }

    fn pipeline(&mut self) -> Option<&mut dyn Pipeline> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl Pipeline for NatsSink {
    fn window(&self) -> usize {
        ACK_WINDOW
    }

    /// Publishes `event` to `<prefix>.events.<kind>.<monitor>` (or
    /// `<prefix>.scans.<monitor>`) with `Nats-Msg-Id: <id>`; the
    /// acknowledgement is JetStream's (bounded by `connect_timeout`).
    async fn send(&mut self, event: &Envelope) -> Result<Acknowledgement, SinkError> {
        if self.client.connection_state() != State::Connected {
            return Err(self.nats_error("not connected (reconnecting in the background)"));
        }
        let payload = encode(event, self.format)?;
        let subject = event.nats_subject(&self.prefix);
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
        headers.insert("Content-Type", self.format.content_type());
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|err| publish_error(&self.server, self.timeout, &err, &subject))?;
        let server = Arc::clone(&self.server);
        let timeout = self.timeout;
        Ok(Box::pin(async move {
            match ack.await {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::debug!(stream = %ack.stream, seq = ack.sequence, "duplicate publish ignored by the stream");
                    }
                    Ok(())
                }
                Err(err) => Err(publish_error(&server, timeout, &err, &subject)),
            }
        }))
    }
}

/// `"400d"` for whole days (humantime would say `1year 1month 4days
/// 7h 26m 24s`), else humantime's exact form.
fn days_or_exact(d: Duration) -> String {
    if d.subsec_nanos() == 0 && d.as_secs().is_multiple_of(86400) {
        format!("{}d", d.as_secs() / 86400)
    } else {
        humantime::format_duration(d).to_string()
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
