//! The subscriber side: turning published events into alerts.
//!
//! A [`Dispatcher`] delivers one [`Envelope`] somewhere — a human line on
//! stdout ([`LogDispatcher`]), an HTTP POST ([`WebhookDispatcher`]) or an
//! Alertmanager alert ([`AlertmanagerDispatcher`]). The [`AlertConsumer`]
//! reads a durable JetStream pull consumer and acknowledges a message only
//! after every dispatcher has taken it; a failure is NAK'd with an
//! exponential, capped delay so JetStream redelivers it, up to
//! `max_deliver` times. [`tail`] prints the live event stream.
//!
//! The client they read from comes from [`crate::nats::connect`]. The
//! `palisade-alert` binary is a thin CLI over this module.

mod alertmanager;
mod consumer;
mod log;
mod tail;
mod webhook;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use crate::schema::{Envelope, SchemaError};

pub use alertmanager::{AlertmanagerDispatcher, PostableAlert, alert_for, alertname};
pub use consumer::{
    AlertConsumer, Backoff, ConsumerConfig, ConsumerError, ConsumerStats, DecodeError,
    decode_message,
};
pub use log::{LogDispatcher, human_line};
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

    /// Delivers one event. An `Err` makes the consumer NAK the message so
    /// it is redelivered later; it must therefore be safe to call again
    /// with the same event.
    async fn dispatch(&self, event: &Envelope) -> Result<Dispatched, DispatchError>;
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
    /// `generatorURL` of Alertmanager alerts (e.g. a dashboard link).
    pub generator_url: Option<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(10),
            generator_url: None,
        }
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
        url: url.to_string(),
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

/// `s` on one line (control characters become spaces), at most `max` chars.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.trim().chars().count() > max {
        out.push('…');
    }
    out
}
