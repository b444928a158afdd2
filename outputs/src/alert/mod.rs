//! The subscriber side: turning published events into alerts.
//!
//! A [`Dispatcher`] delivers one [`Envelope`] somewhere — a human line on
//! stdout ([`LogDispatcher`]), an HTTP POST ([`WebhookDispatcher`]), an
//! Alertmanager alert ([`AlertmanagerDispatcher`]), a Slack message
//! ([`SlackDispatcher`]), a PagerDuty event ([`PagerDutyDispatcher`]) or an
//! email ([`EmailDispatcher`]); the last three say what a [`Notice`] says.
//! The [`AlertConsumer`]
//! reads a durable JetStream pull consumer and acknowledges a message only
//! after every dispatcher has taken it; a failure is NAK'd with an
//! exponential, capped delay so JetStream redelivers it. After its delivery
//! budget an event is published to the dead-letter subject
//! `<prefix>.dlq.<dispatcher>` and then acknowledged, never dropped
//! silently; a refusal that no retry can change
//! ([`DispatchError::is_permanent`]) is dead-lettered at once, and a
//! receiver's `Retry-After` lengthens the delay. Before consuming, the stream is replayed so that dispatchers
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
mod email;
mod log;
mod notice;
mod pagerduty;
mod role;
mod slack;
mod tail;
mod webhook;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::schema::{Envelope, SchemaError};

pub use alertmanager::{
    AlertmanagerDispatcher, PostableAlert, RESENDS_AHEAD, alert_for, alertname,
};
pub use consumer::{
    AlertConsumer, Backoff, ConsumerConfig, ConsumerError, ConsumerStats, DecodeError,
    decode_message,
};
pub use email::{EmailDispatcher, SmtpSpec, SmtpTls, email_for};
pub use log::{LogDispatcher, human_line};
pub use notice::Notice;
pub use pagerduty::{DEFAULT_PAGERDUTY_URL, PagerDutyDispatcher, dedup_key, pagerduty_event};
pub use role::{AlertRole, alert_role, event_address, is_resolution};
pub use slack::{SlackDispatcher, slack_message};
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
        /// The receiver's `Retry-After` (seconds or an HTTP date).
        retry_after: Option<Duration>,
    },
    /// The receiver refused the event itself (a 4xx other than 408 and
    /// 429 from Slack or PagerDuty): sending it again cannot help.
    #[error("POST {url} refused the event: {status}{}", fmt_body(body))]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
    #[error("cannot build the email: {0}")]
    Message(String),
    /// An SMTP failure; `permanent` for a 5xx reply (the server refused
    /// the mail for good).
    #[error("SMTP {server}: {reason}")]
    Smtp {
        server: String,
        reason: String,
        permanent: bool,
    },
}

impl DispatchError {
    /// Whether no retry can change the outcome: the event is dead-lettered
    /// at once rather than retried up to its budget.
    pub fn is_permanent(&self) -> bool {
        match self {
            DispatchError::Rejected { .. }
            | DispatchError::Message(_)
            | DispatchError::Encode(_)
            | DispatchError::EncodeAlert(_) => true,
            DispatchError::Smtp { permanent, .. } => *permanent,
            DispatchError::Write(_) | DispatchError::Http { .. } | DispatchError::Status { .. } => {
                false
            }
        }
    }

    /// How long the receiver asked to be left alone (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DispatchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn fmt_body(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// A dispatcher as named on the command line: `log`, `webhook=URL`,
/// `alertmanager=URL`, `slack[=SECRET]`, `pagerduty[=SECRET][,url=URL]` or
/// `smtp=HOST[:PORT],from=…,to=…[,…]` (see [`SmtpSpec`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchSpec {
    /// One human line per event on stdout.
    Log,
    /// POST each envelope as JSON to this URL.
    Webhook(String),
    /// Post alerts to the Alertmanager at this base URL.
    Alertmanager(String),
    /// Post a message per incident and per resolution to the Slack
    /// incoming webhook whose URL is this secret.
    Slack(Secret),
    /// Send PagerDuty Events API v2 `trigger`/`resolve` events with the
    /// routing key `key` to `url` ([`DEFAULT_PAGERDUTY_URL`]).
    PagerDuty { key: Secret, url: String },
    /// Send an email per incident and per resolution.
    Smtp(SmtpSpec),
}

/// A secret named on the command line: the value itself (shown in `ps`),
/// `@FILE` (its one line) or `env:NAME` (an environment variable).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Literal(String),
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Never the value itself.
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Literal(_) => f.write_str("***"),
            Secret::File(path) => write!(f, "@{}", path.display()),
            Secret::Env(name) => write!(f, "env:{name}"),
        }
    }
}

impl Secret {
    /// `@FILE`, `env:NAME`, else the value itself; `""`: `env:<default_env>`.
    pub fn parse(value: &str, default_env: &str) -> Secret {
        if value.is_empty() {
            Secret::Env(default_env.to_string())
        } else if let Some(path) = value.strip_prefix('@') {
            Secret::File(PathBuf::from(path))
        } else if let Some(name) = value.strip_prefix("env:") {
            Secret::Env(name.to_string())
        } else {
            Secret::Literal(value.to_string())
        }
    }

    /// The value: the literal, the file's one line, or the variable.
    pub fn read(&self) -> Result<String, SecretError> {
        match self {
            Secret::Literal(value) => Ok(value.clone()),
            Secret::File(path) => read_secret_file(path),
            Secret::Env(name) => std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| SecretError::Env(name.clone())),
        }
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
    #[error("{} holds more than one line", .0.display())]
    MultiLine(PathBuf),
    #[error("the environment variable {0} is not set")]
    Env(String),
}

/// The one line of a secret file (a trailing newline is ignored); an
/// empty file or one of several lines is an error.
pub fn read_secret_file(path: &Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::Empty(path.to_path_buf()));
    }
    if value.contains(['\n', '\r']) {
        return Err(SecretError::MultiLine(path.to_path_buf()));
    }
    Ok(value.to_string())
}

/// The environment variable holding the Slack webhook URL of a bare `slack`.
pub const SLACK_URL_ENV: &str = "PALISADE_SLACK_WEBHOOK_URL";
/// The environment variable holding the routing key of a bare `pagerduty`.
pub const PAGERDUTY_KEY_ENV: &str = "PALISADE_PAGERDUTY_ROUTING_KEY";

/// Errors in configuration: a bad dispatcher spec or URL.
#[derive(Debug, thiserror::Error)]
pub enum DispatchConfigError {
    #[error(
        "unknown dispatcher {0:?}: expected `log`, `webhook=URL`, `alertmanager=URL`, `slack[=URL|@FILE|env:VAR]`, `pagerduty[=KEY|@FILE|env:VAR][,url=URL]` or `smtp=HOST[:PORT],from=ADDR,to=ADDR[,…]`"
    )]
    UnknownDispatcher(String),
    #[error("dispatcher `{0}` needs a URL, e.g. `{0}=http://127.0.0.1:9093`")]
    MissingUrl(String),
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
    #[error("{0}")]
    BadOption(String),
    #[error("{what}: {source}")]
    Secret {
        what: String,
        #[source]
        source: SecretError,
    },
}

impl FromStr for DispatchSpec {
    type Err = DispatchConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        // `name=value`, `name,option=…` (an empty first value) or `name`.
        let (name, url) = match s.find(['=', ',']) {
            Some(i) if s[i..].starts_with('=') => (s[..i].trim(), Some(s[i + 1..].trim())),
            Some(i) => (s[..i].trim(), Some(&s[i..])),
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
            "slack" => {
                let secret = Secret::parse(url.unwrap_or_default(), SLACK_URL_ENV);
                if let Secret::Literal(url) = &secret {
                    check_url(url)?;
                }
                Ok(DispatchSpec::Slack(secret))
            }
            "pagerduty" => {
                let mut items = url.unwrap_or_default().split(',');
                let key = Secret::parse(items.next().unwrap_or_default().trim(), PAGERDUTY_KEY_ENV);
                let mut endpoint = DEFAULT_PAGERDUTY_URL.to_string();
                for item in items {
                    match item.trim().split_once('=') {
                        Some(("url", value)) => {
                            check_url(value.trim())?;
                            endpoint = value.trim().to_string();
                        }
                        _ => {
                            return Err(DispatchConfigError::BadOption(format!(
                                "pagerduty: unknown option {:?} (expected `url=URL`)",
                                one_line(item, 80)
                            )));
                        }
                    }
                }
                Ok(DispatchSpec::PagerDuty { key, url: endpoint })
            }
            "smtp" => Ok(DispatchSpec::Smtp(url.unwrap_or_default().parse()?)),
            _ => Err(DispatchConfigError::UnknownDispatcher(one_line(s, 200))),
        }
    }
}

impl fmt::Display for DispatchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchSpec::Log => f.write_str("log"),
            DispatchSpec::Webhook(url) => write!(f, "webhook={url}"),
            DispatchSpec::Alertmanager(url) => write!(f, "alertmanager={url}"),
            DispatchSpec::Slack(secret) => write!(f, "slack={secret}"),
            DispatchSpec::PagerDuty { key, url } if url == DEFAULT_PAGERDUTY_URL => {
                write!(f, "pagerduty={key}")
            }
            DispatchSpec::PagerDuty { key, url } => write!(f, "pagerduty={key},url={url}"),
            DispatchSpec::Smtp(smtp) => write!(f, "smtp={smtp}"),
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
    /// Builds the dispatcher, reading its secrets (files, environment).
    /// `log` writes to stdout.
    pub fn build(&self, http: &HttpOptions) -> Result<Box<dyn Dispatcher>, DispatchConfigError> {
        let secret = |what: &str, secret: &Secret| {
            secret.read().map_err(|source| DispatchConfigError::Secret {
                what: what.to_string(),
                source,
            })
        };
        Ok(match self {
            DispatchSpec::Log => Box::new(LogDispatcher::stdout()),
            DispatchSpec::Webhook(url) => Box::new(WebhookDispatcher::new(url, http)?),
            DispatchSpec::Alertmanager(url) => Box::new(AlertmanagerDispatcher::new(url, http)?),
            DispatchSpec::Slack(url) => Box::new(SlackDispatcher::new(
                &secret("the Slack webhook URL", url)?,
                http,
            )?),
            DispatchSpec::PagerDuty { key, url } => Box::new(PagerDutyDispatcher::new(
                &secret("the PagerDuty routing key", key)?,
                url,
                http,
            )?),
            DispatchSpec::Smtp(smtp) => Box::new(EmailDispatcher::new(smtp, http)?),
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

/// How a dispatcher's receiver answers a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusals {
    /// Every failure is worth a retry.
    Retried,
    /// A 4xx other than 408 and 429 refuses the event for good
    /// ([`DispatchError::Rejected`]).
    Permanent4xx,
}

/// POSTs a body, mapping transport errors and non-2xx answers to
/// [`DispatchError`]; `shown` names the URL in errors (a Slack webhook's
/// URL is its secret), and an answer's `Retry-After` is kept.
pub(crate) async fn post(
    client: &reqwest::Client,
    (url, shown): (&reqwest::Url, &str),
    content_type: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
    refusals: Refusals,
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
        url: shown.to_string(),
        reason: error_chain(&e.without_url()),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::sink::parse_retry_after(v, SystemTime::now()));
    let body = response.text().await.unwrap_or_default();
    let (url, status, body) = (shown.to_string(), status.as_u16(), one_line(&body, 200));
    if refusals == Refusals::Permanent4xx
        && (400..500).contains(&status)
        && !matches!(status, 408 | 429)
    {
        return Err(DispatchError::Rejected { url, status, body });
    }
    Err(DispatchError::Status {
        url,
        status,
        body,
        retry_after,
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
