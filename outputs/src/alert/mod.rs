//! The subscriber side: turning published events into alerts.
//!
//! A [`Dispatcher`] delivers one [`Envelope`] somewhere — a human line on
//! stdout ([`LogDispatcher`]), an HTTP POST ([`WebhookDispatcher`]) or an
//! Alertmanager alert ([`AlertmanagerDispatcher`]). The [`AlertConsumer`]
//! reads a durable JetStream pull consumer and acknowledges a message only
//! after every dispatcher has taken it; a failure is NAK'd with an
//! exponential, capped delay so JetStream redelivers it. After its delivery
//! budget an event is published to the dead-letter subject
//! `<prefix>.dlq.<dispatcher>` and then acknowledged, never dropped
//! silently. Before consuming, the stream is replayed so that dispatchers
//! holding state (the open alerts) rebuild it; dispatchers with a
//! [`refresh_interval`](Dispatcher::refresh_interval) are refreshed on a
//! timer (Alertmanager: firing alerts are re-posted). [`tail`] prints the
//! live event stream.
//!
//! Which events open and which end an alert is decided in one place,
//! [`alert_role`]; which address an event is about, in [`event_address`].
//! Text from events is passed through [`escape`] before it reaches a
//! terminal or a log.
//!
//! The client they read from comes from [`crate::nats::connect`]. The
//! `palisade-alert` binary is a thin CLI over this module.

mod alertmanager;
mod consumer;
mod log;
mod role;
mod tail;
mod webhook;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use crate::schema::{Envelope, SchemaError};

pub use alertmanager::{
    AlertmanagerDispatcher, PostableAlert, RESENDS_AHEAD, alert_for, alertname,
};
pub use consumer::{
    AlertConsumer, Backoff, ConsumerConfig, ConsumerError, ConsumerStats, DecodeError,
    decode_message,
};
pub use log::{LogDispatcher, human_line};
pub use role::{AlertRole, alert_role, event_address, is_resolution};
pub use tail::{TailConfig, TailError, tail};
pub use webhook::WebhookDispatcher;

/// What a dispatcher did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    /// The event was delivered.
    Delivered,
    /// The event is of no interest to this dispatcher (e.g. a scan summary
    /// for Alertmanager); it counts as handled.
    Skipped,
}

/// Delivers events somewhere. Object safe: the consumer holds
/// `Box<dyn Dispatcher>`s.
#[async_trait]
pub trait Dispatcher: Send + Sync + fmt::Debug {
    /// A short name for logs, e.g. `"log"` or `"webhook=http://…"`.
    fn name(&self) -> &str;

    /// The dispatcher's kind as one NATS subject token (`log`, `webhook`,
    /// `alertmanager`): its dead letters go to `<prefix>.dlq.<token>`.
    /// By default the part of [`name`](Self::name) before any `=`.
    fn token(&self) -> &str {
        self.name().split('=').next().unwrap_or("dispatcher")
    }

    /// Delivers one event. An `Err` makes the consumer NAK the message so
    /// it is redelivered later; it must therefore be safe to call again
    /// with the same event.
    async fn dispatch(&self, event: &Envelope) -> Result<Dispatched, DispatchError>;

    /// Whether [`restore`](Self::restore) wants the stream's history at
    /// start-up (a replay costs a read of the stream). Default: no.
    fn wants_history(&self) -> bool {
        false
    }

    /// Called at start-up, before any [`dispatch`](Self::dispatch), with
    /// every event the stream still holds under the consumer's filter,
    /// oldest first, so the dispatcher can rebuild its state (e.g. the open
    /// alerts). Nothing is delivered. Default: nothing.
    fn restore(&self, _event: &Envelope) {}

    /// How often [`refresh`](Self::refresh) is due; `None`: never.
    fn refresh_interval(&self) -> Option<Duration> {
        None
    }

    /// Re-asserts what the dispatcher holds (Alertmanager: re-posts every
    /// firing alert with a fresh `endsAt`). Called once right after the
    /// start-up replay, then every [`refresh_interval`](Self::refresh_interval).
    /// Returns how many items it re-sent.
    async fn refresh(&self) -> Result<usize, DispatchError> {
        Ok(0)
    }
}

/// Why a dispatch failed (the message will be redelivered).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("cannot write the event line: {0}")]
    Write(#[from] std::io::Error),
    #[error("cannot encode the event: {0}")]
    Encode(#[from] SchemaError),
    #[error("cannot encode the alert: {0}")]
    EncodeAlert(#[source] serde_json::Error),
    #[error("POST {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("POST {url} answered {status}{}", fmt_body(body))]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

fn fmt_body(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// A dispatcher as named on the command line: `log`, `webhook=URL` or
/// `alertmanager=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchSpec {
    /// One human line per event on stdout.
    Log,
    /// POST each envelope as JSON to this URL.
    Webhook(String),
    /// Post alerts to the Alertmanager at this base URL.
    Alertmanager(String),
}

/// Errors in configuration: a bad dispatcher spec or URL.
#[derive(Debug, thiserror::Error)]
pub enum DispatchConfigError {
    #[error("unknown dispatcher {0:?}: expected `log`, `webhook=URL` or `alertmanager=URL`")]
    UnknownDispatcher(String),
    #[error("dispatcher `{0}` needs a URL, e.g. `{0}=http://127.0.0.1:9093`")]
    MissingUrl(String),
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    #[error("{0}")]
    BadOption(String),
}

impl FromStr for DispatchSpec {
    type Err = DispatchConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, url) = match s.split_once('=') {
            Some((name, url)) => (name.trim(), Some(url.trim())),
            None => (s, None),
        };
        let need_url = |name: &str| -> Result<String, DispatchConfigError> {
            match url {
                Some(url) if !url.is_empty() => {
                    check_url(url)?;
                    Ok(url.to_string())
                }
                _ => Err(DispatchConfigError::MissingUrl(name.to_string())),
            }
        };
        match name {
            "log" if url.is_none() => Ok(DispatchSpec::Log),
            "webhook" => Ok(DispatchSpec::Webhook(need_url("webhook")?)),
            "alertmanager" => Ok(DispatchSpec::Alertmanager(need_url("alertmanager")?)),
            _ => Err(DispatchConfigError::UnknownDispatcher(s.to_string())),
        }
    }
}

impl fmt::Display for DispatchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchSpec::Log => f.write_str("log"),
            DispatchSpec::Webhook(url) => write!(f, "webhook={url}"),
            DispatchSpec::Alertmanager(url) => write!(f, "alertmanager={url}"),
        }
    }
}

/// Settings shared by the HTTP dispatchers.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Timeout of one request, connection included.
    pub timeout: Duration,
    /// A link to the dashboard, in every Alertmanager alert (annotation
    /// `dashboard` and `generatorURL`); `{monitor}` in it is replaced by the
    /// alert's monitor name.
    pub dashboard_url: Option<String>,
    /// How often firing Alertmanager alerts are re-posted; each carries an
    /// `endsAt` [`RESENDS_AHEAD`] resends ahead (1 minute).
    pub resend: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(10),
            dashboard_url: None,
            resend: Duration::from_secs(60),
        }
    }
}

impl HttpOptions {
    /// How long a firing alert lives in Alertmanager without a re-post:
    /// [`RESENDS_AHEAD`] × `resend`. A resolution is never given up before
    /// this has passed since its first delivery attempt.
    pub fn alert_horizon(&self) -> Duration {
        self.resend.saturating_mul(RESENDS_AHEAD)
    }
}

impl DispatchSpec {
    /// Builds the dispatcher. `log` writes to stdout.
    pub fn build(&self, http: &HttpOptions) -> Result<Box<dyn Dispatcher>, DispatchConfigError> {
        Ok(match self {
            DispatchSpec::Log => Box::new(LogDispatcher::stdout()),
            DispatchSpec::Webhook(url) => Box::new(WebhookDispatcher::new(url, http)?),
            DispatchSpec::Alertmanager(url) => Box::new(AlertmanagerDispatcher::new(url, http)?),
        })
    }
}

/// Accepts absolute `http`/`https` URLs.
pub(crate) fn check_url(url: &str) -> Result<reqwest::Url, DispatchConfigError> {
    let bad = |reason: &str| DispatchConfigError::BadUrl {
        url: redact_url(url),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// URLs are supported"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(parsed)
}

/// A URL as it may be shown: password and credential-like query values
/// replaced by `***` (see [`crate::sink::redact_url`]).
pub(crate) fn redact_url(url: &str) -> String {
    crate::sink::redact_url(url)
}

/// The HTTP client of the webhook and Alertmanager dispatchers.
pub(crate) fn http_client(http: &HttpOptions) -> Result<reqwest::Client, DispatchConfigError> {
    reqwest::Client::builder()
        .timeout(http.timeout)
        .connect_timeout(http.timeout)
        .user_agent(concat!("palisade-alert/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DispatchConfigError::HttpClient(error_chain(&e)))
}

/// POSTs a body, mapping transport errors and non-2xx answers to
/// [`DispatchError`].
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    content_type: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(), DispatchError> {
    let mut request = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    for (name, value) in extra {
        // A value that is not a valid header (bad input) is left out rather
        // than failing the request forever.
        if reqwest::header::HeaderValue::from_str(value).is_ok() {
            request = request.header(*name, *value);
        }
    }
    let response = request.send().await.map_err(|e| DispatchError::Http {
        url: url.to_string(),
        reason: error_chain(&e),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(DispatchError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        body: one_line(&body, 200),
    })
}

/// An error and its sources, joined by `": "`, skipping a source whose text
/// the previous one already contains.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// `s` safe for one line of a terminal or a log: control characters
/// (newlines, carriage returns, escape sequences, C1 controls) and the
/// Unicode bidirectional overrides are written as escapes (`\n`, `\r`,
/// `\t`, `\u{1b}`, …) and a backslash as `\\`, so event text can neither
/// start a forged line nor drive the terminal. Anything else is kept.
pub fn escape(s: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c == '\\'
            || c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` [escaped](escape) and trimmed, at most `max` chars (then `…`).
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let escaped = escape(s.trim());
    let mut out: String = escaped.chars().take(max).collect();
    if escaped.chars().count() > max {
        out.push('…');
    }
    out
}
