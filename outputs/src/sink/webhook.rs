//! The webhook sink: one HTTP POST of the JSON envelope per event, with the
//! Standard Webhooks headers (<https://www.standardwebhooks.com/>).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use sha2::Sha256;

use super::{Sink, SinkError, backoff, one_line, secs, source_cause};
use crate::schema::{Envelope, PayloadFormat, WEBHOOK_ID_HEADER, encode};

/// The Standard Webhooks timestamp header: unix seconds of the attempt.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";

/// The Standard Webhooks signature header: `v1,<base64 HMAC-SHA256>`.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

/// How much of a refusing receiver's answer a
/// [`SinkError::WebhookRejected`] keeps.
pub const REJECTION_EXCERPT_BYTES: usize = 512;

/// A webhook signing secret, as Standard Webhooks writes it: `whsec_`
/// followed by the base64 of the key (the prefix is optional); the key is
/// the decoded bytes. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (or bare base64). The message of an error
    /// never holds the secret.
    pub fn parse(text: &str) -> Result<WebhookSecret, String> {
        let text = text.trim();
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        let key = BASE64
            .decode(b64)
            .map_err(|_| "the webhook secret is not `whsec_` followed by base64".to_string())?;
        if key.is_empty() {
            return Err("the webhook secret is empty".to_string());
        }
        Ok(WebhookSecret(key))
    }

    /// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), the
    /// value of [`WEBHOOK_SIGNATURE_HEADER`].
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// POSTs each event as a CloudEvents JSON envelope in structured mode
/// (`Content-Type: application/cloudevents+json; charset=utf-8`, as the
/// CloudEvents HTTP binding wants) with the Standard Webhooks headers:
/// `webhook-id: <event id>` (see
/// [`WEBHOOK_ID_HEADER`]), `webhook-timestamp: <unix seconds>` and, with a
/// [secret](WebhookSink::with_secret), `webhook-signature: v1,<base64
/// HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
///
/// A 2xx answer delivers the event. Network errors, timeouts, 408, 429 and
/// 5xx answers are retried up to `max_retries` times with exponential
/// backoff and jitter; a `Retry-After` (seconds or an HTTP date) sets the
/// delay instead, and one longer than the maximum backoff ends the attempt
/// at once (the caller retries later). Any other 4xx is a permanent
/// refusal: [`SinkError::WebhookRejected`] with the status and an excerpt of
/// the answer, never retried. A receiver should de-duplicate by
/// `webhook-id`, since an event whose answer was lost is sent again.
pub struct WebhookSink {
    name: String,
    url: reqwest::Url,
    shown: String,
    timeout: Duration,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    secret: Option<WebhookSecret>,
    client: reqwest::Client,
    /// A refusal met after other events of a batch were delivered: returned,
    /// without sending again, by the next call that starts with that event.
    refused: Option<(String, SinkError)>,
}

/// The outcome of one POST.
enum Attempt {
    Delivered,
    /// Worth another try, after `retry_after` if the receiver said so.
    Retry {
        cause: String,
        retry_after: Option<Duration>,
    },
    /// Refused for good.
    Rejected {
        status: u16,
        excerpt: String,
    },
}

impl WebhookSink {
    /// Checks the URL (http or https) and builds the client; `timeout`
    /// bounds each request (connect included).
    pub fn new(url: String, timeout: Duration, max_retries: u32) -> Result<WebhookSink, SinkError> {
        let config = |cause: String| SinkError::WebhookConfig {
            url: redact_url(&url),
            cause,
        };
        let parsed = reqwest::Url::parse(&url).map_err(|e| config(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(config(format!(
                "scheme {:?} is not http or https",
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(config("no host".into()));
        }
        if timeout.is_zero() {
            return Err(config("timeout must be positive".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("palisade/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                config(format!(
                    "cannot build the HTTP client: {}",
                    source_cause(&e)
                ))
            })?;
        let shown = redact(&parsed);
        Ok(WebhookSink {
            name: format!("webhook:{shown}"),
            url: parsed,
            shown,
            timeout,
            max_retries,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            secret: None,
            client,
            refused: None,
        })
    }

    /// Sets the backoff between retries: `initial * 2^attempt`, at most
    /// `max`, with jitter (defaults: 500 ms and 30 s).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> WebhookSink {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Signs every POST with `secret` (the `webhook-signature` header).
    pub fn with_secret(mut self, secret: WebhookSecret) -> WebhookSink {
        self.secret = Some(secret);
        self
    }

    fn error(&self, cause: String) -> SinkError {
        SinkError::Webhook {
            url: self.shown.clone(),
            cause,
        }
    }

    /// One POST of `body`, signed with the time of this attempt.
    async fn attempt(&self, id: &str, body: &[u8]) -> Attempt {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, PayloadFormat::Json.content_type())
            .header(WEBHOOK_TIMESTAMP_HEADER, timestamp)
            .body(body.to_vec());
        // An id that is no valid header value (bad input) is left out rather
        // than failing the event forever; it is still in the body.
        if let Ok(value) = HeaderValue::from_str(id) {
            request = request.header(WEBHOOK_ID_HEADER, value);
        }
        if let Some(secret) = &self.secret {
            request = request.header(WEBHOOK_SIGNATURE_HEADER, secret.sign(id, timestamp, body));
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => {
                let status = response.status();
                let retriable = status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS;
                if retriable {
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    Attempt::Retry {
                        cause: format!("answered HTTP {status}"),
                        retry_after,
                    }
                } else {
                    Attempt::Rejected {
                        status: status.as_u16(),
                        excerpt: excerpt(response).await,
                    }
                }
            }
            Err(err) if err.is_timeout() => Attempt::Retry {
                cause: format!("timed out after {}", secs(self.timeout)),
                retry_after: None,
            },
            Err(err) if err.is_connect() => Attempt::Retry {
                cause: format!("cannot connect: {}", source_cause(&err)),
                retry_after: None,
            },
            Err(err) => Attempt::Retry {
                cause: one_line(&source_cause(&err)),
                retry_after: None,
            },
        }
    }

    async fn send_one(&self, event: &Envelope) -> Result<(), SinkError> {
        let body = encode(event, PayloadFormat::Json)?;
        let mut attempt = 0u32;
        loop {
            let (cause, retry_after) = match self.attempt(&event.id, &body).await {
                Attempt::Delivered => return Ok(()),
                Attempt::Rejected { status, excerpt } => {
                    return Err(SinkError::WebhookRejected {
                        url: self.shown.clone(),
                        event_id: crate::alert::escape(&event.id).into_owned(),
                        status,
                        excerpt,
                    });
                }
                Attempt::Retry { cause, retry_after } => (cause, retry_after),
            };
            let tries = attempt + 1;
            let gave_up = |why: String| {
                self.error(format!(
                    "{cause} ({why} after {tries} attempt{})",
                    if tries == 1 { "" } else { "s" }
                ))
            };
            if attempt >= self.max_retries {
                return Err(gave_up("gave up".to_string()));
            }
            let delay = match retry_after {
                Some(after) if after > self.max_backoff => {
                    // Honoured by not asking again before then: the caller
                    // keeps the event and retries later.
                    return Err(gave_up(format!("asked to retry in {}", secs(after))));
                }
                Some(after) => after,
                None => backoff(attempt, self.initial_backoff, self.max_backoff),
            };
            tracing::debug!(url = %self.shown, attempt, %cause, ?delay, "webhook delivery failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date (a date in the past
/// is no delay). `None` when it is neither.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// At most [`REJECTION_EXCERPT_BYTES`] of the answer's body, on one line.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < REJECTION_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(REJECTION_EXCERPT_BYTES);
    let text = String::from_utf8_lossy(&body);
    let mut line = crate::alert::escape(text.trim()).into_owned();
    if line.len() > REJECTION_EXCERPT_BYTES {
        let mut end = REJECTION_EXCERPT_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

impl std::fmt::Debug for WebhookSink {
    // Manual, so that a password in the URL never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.shown)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&mut self, events: &[Envelope]) -> Result<usize, SinkError> {
        if let Some((id, err)) = self.refused.take()
            && events.first().is_some_and(|e| e.id == id)
        {
            return Err(err);
        }
        for (i, event) in events.iter().enumerate() {
            match self.send_one(event).await {
                Ok(()) => {}
                Err(err @ SinkError::WebhookRejected { .. }) if i > 0 => {
                    tracing::warn!(sink = %self.name, acked = i, error = %err, "batch partly delivered");
                    self.refused = Some((event.id.clone(), err));
                    return Ok(i);
                }
                Err(err) => return super::partial(i, err, &self.name),
            }
        }
        Ok(events.len())
    }
}

/// Query parameters whose values are credentials.
const SECRET_PARAMETERS: &[&str] = &[
    "token",
    "access_token",
    "auth",
    "key",
    "api_key",
    "apikey",
    "secret",
    "password",
    "sig",
    "signature",
];

/// The URL with any password, and the value of any credential-like query
/// parameter (`token`, `key`, `secret`, …), replaced by `***`.
fn redact(url: &reqwest::Url) -> String {
    let mut copy = url.clone();
    if copy.password().is_some() {
        let _ = copy.set_password(Some("***"));
    }
    if copy.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMETERS.iter().any(|s| {
                    k.eq_ignore_ascii_case(s) || k.to_ascii_lowercase().ends_with(&format!("_{s}"))
                });
                (
                    k.into_owned(),
                    if secret {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        copy.query_pairs_mut().clear().extend_pairs(pairs);
    }
    copy.to_string()
}

/// A URL as it may be shown in logs and errors: see [`redact`]. Text that
/// is no URL is shown as it is.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => redact(&u),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
