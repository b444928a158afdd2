//! The webhook sink: one HTTP POST of the JSON envelope per event.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use super::{Sink, SinkError, backoff, one_line, secs, source_cause};
use crate::schema::{Envelope, PayloadFormat, WEBHOOK_ID_HEADER, encode};

/// POSTs each event as a JSON envelope (`Content-Type: application/json`,
/// `Idempotency-Key: <event id>`, see [`WEBHOOK_ID_HEADER`]); any 2xx answer
/// acknowledges it.
///
/// Network errors, timeouts, 408, 429 and 5xx answers are retried up to
/// `max_retries` times with exponential backoff and jitter (a `Retry-After`
/// in seconds is honoured, capped at the maximum backoff). Other 4xx answers
/// are not retried within the call. A receiver should de-duplicate by the
/// event id, since an event whose answer was lost is sent again.
pub struct WebhookSink {
    name: String,
    url: reqwest::Url,
    shown: String,
    timeout: Duration,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    client: reqwest::Client,
}

impl WebhookSink {
    /// Checks the URL (http or https) and builds the client; `timeout`
    /// bounds each request (connect included).
    pub fn new(url: String, timeout: Duration, max_retries: u32) -> Result<WebhookSink, SinkError> {
        let config = |cause: String| SinkError::WebhookConfig {
            url: redact_text(&url),
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
            client,
        })
    }

    /// Sets the backoff between retries: `initial * 2^attempt`, at most
    /// `max`, with jitter (defaults: 500 ms and 30 s).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> WebhookSink {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    fn error(&self, cause: String) -> SinkError {
        SinkError::Webhook {
            url: self.shown.clone(),
            cause,
        }
    }

    async fn send_one(&self, event: &Envelope) -> Result<(), SinkError> {
        let body = encode(event, PayloadFormat::Json)?;
        let id = HeaderValue::from_str(&event.id).ok();
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .client
                .post(self.url.clone())
                .header(CONTENT_TYPE, PayloadFormat::Json.content_type())
                .body(body.clone());
            if let Some(id) = &id {
                request = request.header(WEBHOOK_ID_HEADER, id.clone());
            }
            let (cause, retry_after) = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let cause = format!("answered HTTP {status}");
                    let retriable = status.is_server_error()
                        || status == StatusCode::REQUEST_TIMEOUT
                        || status == StatusCode::TOO_MANY_REQUESTS;
                    if !retriable {
                        return Err(self.error(format!("event {} rejected: {cause}", event.id)));
                    }
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (cause, retry_after)
                }
                Err(err) if err.is_timeout() => {
                    (format!("timed out after {}", secs(self.timeout)), None)
                }
                Err(err) if err.is_connect() => {
                    (format!("cannot connect: {}", source_cause(&err)), None)
                }
                Err(err) => (one_line(&source_cause(&err)), None),
            };
            if attempt >= self.max_retries {
                let tries = attempt + 1;
                return Err(self.error(format!(
                    "{cause} (gave up after {tries} attempt{})",
                    if tries == 1 { "" } else { "s" }
                )));
            }
            let delay = retry_after
                .map(|d| d.min(self.max_backoff))
                .unwrap_or_else(|| backoff(attempt, self.initial_backoff, self.max_backoff));
            tracing::debug!(url = %self.shown, attempt, %cause, ?delay, "webhook delivery failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
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
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn publish(&mut self, events: &[Envelope]) -> Result<usize, SinkError> {
        for (i, event) in events.iter().enumerate() {
            if let Err(err) = self.send_one(event).await {
                return super::partial(i, err, &self.name);
            }
        }
        Ok(events.len())
    }
}

/// The URL with any password replaced by `***`.
fn redact(url: &reqwest::Url) -> String {
    if url.password().is_some() {
        let mut copy = url.clone();
        let _ = copy.set_password(Some("***"));
        copy.to_string()
    } else {
        url.to_string()
    }
}

fn redact_text(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => redact(&u),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
