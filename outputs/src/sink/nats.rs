//! The NATS JetStream sink.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_nats::{ConnectErrorKind, ConnectOptions, Event, HeaderMap, ServerAddr};

use super::{Sink, SinkError, one_line, partial, secs, source_cause};
use crate::schema::{Envelope, PayloadFormat, encode};

/// How long a stream keeps message ids for de-duplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How many publishes may await their acknowledgement at once within a batch.
const ACK_WINDOW: usize = 1024;

/// Where and how to publish to NATS JetStream.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    /// Server URLs, e.g. `nats://127.0.0.1:4222` or `tls://nats.example:4222`.
    pub urls: Vec<String>,
    /// Subject prefix, `palisade` by default.
    pub subject_prefix: String,
    /// JetStream stream name, created to cover `<prefix>.>` if missing.
    pub stream: String,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub nkey_seed_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) to verify the server; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs `tls_cert`.
    pub tls_key: Option<PathBuf>,
    pub format: PayloadFormat,
    /// Bounds the initial connect (per server) and every JetStream request
    /// and publish acknowledgement.
    pub connect_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            subject_prefix: "palisade".to_string(),
            stream: "PALISADE".to_string(),
            token: None,
            user: None,
            password: None,
            nkey_seed_file: None,
            creds_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            format: PayloadFormat::MsgPack,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsConfig {
    /// A short hint naming the configured credentials, for auth errors.
    fn auth_hint(&self) -> &'static str {
        if self.creds_file.is_some() {
            "check the .creds file"
        } else if self.nkey_seed_file.is_some() {
            "check the NKey seed file"
        } else if self.token.is_some() {
            "check the token"
        } else if self.user.is_some() {
            "check the user and password"
        } else {
            "the server requires credentials and none are configured: set a token, user/password, nkey or creds"
        }
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
    /// The connect is bounded by `connect_timeout`; once connected the client
    /// reconnects by itself, with backoff, after any outage.
    pub async fn connect(cfg: NatsConfig) -> Result<NatsSink, SinkError> {
        validate(&cfg)?;
        let server = cfg.urls.join(", ");
        let addrs = cfg
            .urls
            .iter()
            .map(|u| {
                u.parse::<ServerAddr>().map_err(|e| {
                    SinkError::NatsConfig(format!("invalid NATS server URL {u:?}: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let options = options(&cfg, &server).await?;
        // Each server gets `connect_timeout`; the whole attempt is bounded too.
        let bound = cfg
            .connect_timeout
            .saturating_mul(u32::try_from(addrs.len()).unwrap_or(u32::MAX))
            .saturating_add(Duration::from_millis(500));
        let client = match tokio::time::timeout(bound, options.connect(addrs)).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => return Err(connect_error(&cfg, &server, &err)),
            Err(_) => {
                return Err(SinkError::Connect {
                    server,
                    cause: format!("timed out after {}", secs(cfg.connect_timeout)),
                });
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.connect_timeout)
            .build(client.clone());
        let sink = NatsSink {
            name: format!("nats:{}", cfg.stream),
            server,
            prefix: cfg.subject_prefix.clone(),
            format: cfg.format,
            timeout: cfg.connect_timeout,
            client,
            js,
        };
        sink.ensure_stream(&cfg.stream).await?;
        tracing::info!(server = %sink.server, stream = %cfg.stream, prefix = %sink.prefix, "NATS sink ready");
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

fn validate(cfg: &NatsConfig) -> Result<(), SinkError> {
    if cfg.urls.is_empty() || cfg.urls.iter().any(|u| u.trim().is_empty()) {
        return Err(SinkError::NatsConfig("no NATS server URL given".into()));
    }
    if !valid_prefix(&cfg.subject_prefix) {
        return Err(SinkError::NatsConfig(format!(
            "invalid subject prefix {:?}: dot-separated tokens without spaces or wildcards",
            cfg.subject_prefix
        )));
    }
    if cfg.stream.is_empty()
        || cfg.stream.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
    {
        return Err(SinkError::NatsConfig(format!(
            "invalid stream name {:?}: no spaces, '.', '*', '>', '/' or '\\'",
            cfg.stream
        )));
    }
    if cfg.user.is_some() != cfg.password.is_some() {
        return Err(SinkError::NatsConfig(
            "user and password must be given together".into(),
        ));
    }
    if cfg.tls_cert.is_some() != cfg.tls_key.is_some() {
        return Err(SinkError::NatsConfig(
            "tls_cert and tls_key must be given together".into(),
        ));
    }
    let methods = [
        cfg.token.is_some(),
        cfg.user.is_some(),
        cfg.nkey_seed_file.is_some(),
        cfg.creds_file.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(SinkError::NatsConfig(
            "give only one of token, user/password, nkey seed file or creds file".into(),
        ));
    }
    if cfg.connect_timeout.is_zero() {
        return Err(SinkError::NatsConfig(
            "connect timeout must be positive".into(),
        ));
    }
    Ok(())
}

fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
        })
}

async fn options(cfg: &NatsConfig, server: &str) -> Result<ConnectOptions, SinkError> {
    let mut options = ConnectOptions::new()
        .name("palisade")
        .connection_timeout(cfg.connect_timeout)
        .request_timeout(Some(cfg.connect_timeout));
    let log_server = server.to_string();
    options = options.event_callback(move |event| {
        let server = log_server.clone();
        async move {
            match event {
                Event::Connected => tracing::info!(%server, "NATS connected"),
                Event::Disconnected => tracing::warn!(%server, "NATS disconnected; reconnecting"),
                other => tracing::warn!(%server, event = %other, "NATS event"),
            }
        }
    });
    if let Some(token) = &cfg.token {
        options = options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(path) = &cfg.nkey_seed_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SinkError::NatsConfig(format!(
                "cannot read NKey seed file {}: {e}",
                path.display()
            ))
        })?;
        let seed = text
            .split_whitespace()
            .find(|w| w.starts_with('S') && w.len() >= 56)
            .ok_or_else(|| {
                SinkError::NatsConfig(format!("no NKey seed (S…) found in {}", path.display()))
            })?;
        options = options.nkey(seed.to_string());
    }
    if let Some(path) = &cfg.creds_file {
        options = options.credentials_file(path).await.map_err(|e| {
            SinkError::NatsConfig(format!(
                "cannot read NATS credentials file {}: {e}",
                path.display()
            ))
        })?;
    }
    for (what, path) in [
        ("TLS CA", &cfg.tls_ca),
        ("TLS certificate", &cfg.tls_cert),
        ("TLS key", &cfg.tls_key),
    ] {
        if let Some(path) = path
            && let Err(e) = std::fs::metadata(path)
        {
            return Err(SinkError::NatsConfig(format!(
                "cannot read {what} file {}: {e}",
                path.display()
            )));
        }
    }
    if let Some(ca) = &cfg.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

fn connect_error(cfg: &NatsConfig, server: &str, err: &async_nats::ConnectError) -> SinkError {
    let connect = |cause: String| SinkError::Connect {
        server: server.to_string(),
        cause,
    };
    let refused = |cause: String| SinkError::Nats {
        server: server.to_string(),
        cause,
    };
    if let Some(tls) = tls_cause(err) {
        let hint = if tls.contains("UnknownIssuer") {
            " (set the CA that signed the server certificate)"
        } else if tls.contains("alert") && cfg.tls_cert.is_none() {
            " (the server may require a client certificate: set tls_cert and tls_key)"
        } else {
            ""
        };
        return refused(format!("TLS error: {tls}{hint}"));
    }
    match err.kind() {
        ConnectErrorKind::Io => connect(source_cause(err)),
        ConnectErrorKind::TimedOut => {
            connect(format!("timed out after {}", secs(cfg.connect_timeout)))
        }
        ConnectErrorKind::Dns => connect(format!(
            "cannot resolve the host name: {}",
            source_cause(err)
        )),
        ConnectErrorKind::MaxReconnects => {
            connect("gave up after the maximum number of attempts".into())
        }
        ConnectErrorKind::ServerParse => SinkError::NatsConfig(format!(
            "invalid NATS server URL in {server}: {}",
            source_cause(err)
        )),
        ConnectErrorKind::AuthorizationViolation => {
            refused(format!("authorization violation ({})", cfg.auth_hint()))
        }
        ConnectErrorKind::Authentication => refused(format!(
            "authentication failed: {} ({})",
            source_cause(err),
            cfg.auth_hint()
        )),
        ConnectErrorKind::Tls => refused(format!("TLS error: {}", source_cause(err))),
    }
}

/// The rustls error somewhere in the chain, if any.
fn tls_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<async_nats::rustls::Error>()
        {
            return Some(tls.to_string());
        }
        current = e.source();
    }
    None
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
