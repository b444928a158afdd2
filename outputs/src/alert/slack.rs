//! The `slack` dispatcher: one message per incident, per resolution and
//! per `ports_changed` summary, posted to a Slack incoming webhook.
//!
//! The message has a `text` (what notifications and old clients show) and
//! `blocks`: a header with the [`Notice`]'s summary, the facts as section
//! fields (at most 10 per section, as Slack allows) and a context line with
//! the incident id (and the dashboard link with `--dashboard-url`). Event
//! text is escaped for Slack's `mrkdwn` (`&`, `<`, `>`), so a monitor name
//! can neither mention `@channel` nor forge a link.
//!
//! Slack answers `200 ok`; a 4xx other than 429 (`invalid_payload`,
//! `channel_not_found`, `channel_is_archived`, …) refuses the message for
//! good and it is dead-lettered at once; 429 (with its `Retry-After`) and
//! 5xx are retried.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{DispatchConfigError, DispatchError, Dispatched, Dispatcher, HttpOptions, Notice};
use crate::schema::{Envelope, Severity};

/// Slack's limits: a header's text, a field's text, fields per section.
const HEADER_CHARS: usize = 150;
const FIELD_CHARS: usize = 1900;
const FIELDS_PER_SECTION: usize = 10;

/// Posts [`slack_message`]s to one incoming webhook.
#[derive(Debug)]
pub struct SlackDispatcher {
    name: String,
    url: reqwest::Url,
    /// The URL as shown: scheme and host only (its path is the secret).
    shown: String,
    dashboard_url: Option<String>,
    client: reqwest::Client,
}

impl SlackDispatcher {
    /// A dispatcher posting to the incoming webhook `url` (e.g.
    /// `https://hooks.slack.com/services/T…/B…/…`).
    pub fn new(url: &str, http: &HttpOptions) -> Result<Self, DispatchConfigError> {
        let url = super::check_url(url).map_err(|e| match e {
            // The whole URL is the secret: never echo it.
            DispatchConfigError::BadUrl { reason, .. } => DispatchConfigError::BadUrl {
                url: "<the Slack webhook URL>".to_string(),
                reason,
            },
            other => other,
        })?;
        let shown = format!(
            "{}://{}/…",
            url.scheme(),
            url.host_str().unwrap_or_default()
        );
        Ok(SlackDispatcher {
            name: format!("slack={shown}"),
            url,
            shown,
            dashboard_url: http.dashboard_url.clone(),
            client: super::http_client(http)?,
        })
    }
}

#[async_trait]
impl Dispatcher for SlackDispatcher {
    fn name(&self) -> &str {
        &self.name
    }

    async fn dispatch(&self, event: &Envelope) -> Result<Dispatched, DispatchError> {
        let Some(notice) = Notice::of(event) else {
            return Ok(Dispatched::Skipped);
        };
        let message = slack_message(&notice, self.dashboard_url.as_deref());
        let body = serde_json::to_vec(&message).map_err(DispatchError::EncodeAlert)?;
        super::post(
            &self.client,
            (&self.url, &self.shown),
            "application/json",
            &[],
            body,
            super::Refusals::Permanent4xx,
        )
        .await?;
        Ok(Dispatched::Delivered)
    }
}

/// The incoming-webhook payload of a notice: `text` and `blocks`.
/// `dashboard_url`: `{monitor}` in it becomes the monitor's name.
pub fn slack_message(n: &Notice, dashboard_url: Option<&str>) -> Value {
    let (icon, word) = match (n.resolved, n.severity) {
        (true, _) => (":white_check_mark:", "RESOLVED"),
        (false, Some(Severity::Critical)) => (":red_circle:", "CRITICAL"),
        (false, Some(Severity::High)) => (":rotating_light:", "HIGH"),
        (false, _) => (":warning:", "NORMAL"),
    };
    let text = format!("{icon} {word}: {}", escape(&n.summary));
    let header = if n.resolved {
        format!("{icon} Resolved: {}", n.summary)
    } else {
        format!("{icon} {}", n.summary)
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": bounded(&header, HEADER_CHARS), "emoji": true},
    })];
    let fields: Vec<Value> = n
        .facts
        .iter()
        .filter(|(label, _)| *label != "Incident")
        .map(|(label, value)| {
            json!({
                "type": "mrkdwn",
                "text": bounded(&format!("*{label}*\n{}", escape(value)), FIELD_CHARS),
            })
        })
        .collect();
    for chunk in fields.chunks(FIELDS_PER_SECTION) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    let (what, id) = if n.incident {
        ("incident", &n.incident_id)
    } else {
        ("event", &n.event_id)
    };
    let mut context = format!(
        "Palisade {what} `{}`",
        escape(&super::one_line(id, 300)).replace('`', "'")
    );
    if let Some(template) = dashboard_url {
        let link = super::alertmanager::dashboard_link(template, &n.monitor);
        context.push_str(&format!(
            " · <{}|dashboard>",
            escape(&link).replace('|', "%7C")
        ));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": bounded(&context, FIELD_CHARS)}],
    }));
    json!({"text": text, "blocks": blocks})
}

/// Text for Slack's `mrkdwn`: `&`, `<` and `>` as entities (Slack's
/// control characters: links, mentions).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` chars (then `…`).
fn bounded(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}
