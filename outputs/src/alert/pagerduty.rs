//! The `pagerduty` dispatcher: PagerDuty Events API v2.
//!
//! An incident is a `trigger` event and its end a `resolve` event, both
//! with the incident id as `dedup_key` ([`dedup_key`]), so PagerDuty opens
//! one alert per incident and closes that alert; a redelivered trigger
//! only updates it. The trigger's payload: `summary` (the [`Notice`]'s),
//! `source` (the address, else the host), `severity` (Palisade's
//! `critical` → `critical`, `high` → `error`, `normal` → `warning`),
//! `timestamp` (the event's time), `component` (`6379/tcp` for a port),
//! `group` (the monitor), `class` (the incident kind) and `custom_details`
//! (every fact of the notice). A `ports_changed` summary is not sent: it
//! opens nothing that could be resolved (its first events went out one by
//! one and trigger as usual).
//!
//! PagerDuty answers `202 Accepted`; `400` (an invalid event) refuses it
//! for good and it is dead-lettered at once; 429 (rate limit, with its
//! `Retry-After`) and 5xx are retried.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{DispatchConfigError, DispatchError, Dispatched, Dispatcher, HttpOptions, Notice};
use crate::schema::{Envelope, Severity};

/// Where events go unless `url=` says otherwise.
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's limits: `dedup_key` and `summary` lengths.
const DEDUP_KEY_CHARS: usize = 255;
const SUMMARY_CHARS: usize = 1024;

/// Sends [`pagerduty_event`]s with one routing key.
pub struct PagerDutyDispatcher {
    name: String,
    url: reqwest::Url,
    shown: String,
    routing_key: String,
    dashboard_url: Option<String>,
    client: reqwest::Client,
}

/// Without the routing key.
impl std::fmt::Debug for PagerDutyDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutyDispatcher")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PagerDutyDispatcher {
    /// A dispatcher sending with `routing_key` (an Events API v2
    /// integration key) to `url` (normally [`DEFAULT_PAGERDUTY_URL`]).
    pub fn new(
        routing_key: &str,
        url: &str,
        http: &HttpOptions,
    ) -> Result<Self, DispatchConfigError> {
        let routing_key = routing_key.trim();
        if routing_key.is_empty()
            || routing_key
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(DispatchConfigError::BadOption(
                "the PagerDuty routing key must be one word (the integration key of an Events API v2 integration)".to_string(),
            ));
        }
        let url = super::check_url(url)?;
        let shown = super::redact_url(url.as_str());
        Ok(PagerDutyDispatcher {
            name: format!("pagerduty={shown}"),
            url,
            shown,
            routing_key: routing_key.to_string(),
            dashboard_url: http.dashboard_url.clone(),
            client: super::http_client(http)?,
        })
    }
}

#[async_trait]
impl Dispatcher for PagerDutyDispatcher {
    fn name(&self) -> &str {
        &self.name
    }

    async fn dispatch(&self, event: &Envelope) -> Result<Dispatched, DispatchError> {
        // A `ports_changed` summary opens nothing PagerDuty could resolve.
        let Some(notice) = Notice::of(event).filter(|n| n.incident) else {
            return Ok(Dispatched::Skipped);
        };
        let body = pagerduty_event(&notice, &self.routing_key, self.dashboard_url.as_deref());
        let body = serde_json::to_vec(&body).map_err(DispatchError::EncodeAlert)?;
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

/// The `dedup_key` of an incident: its id, or `palisade-<token>` (a hash
/// of the id) when the id is longer than PagerDuty's 255 characters.
pub fn dedup_key(incident_id: &str) -> String {
    if incident_id.chars().count() <= DEDUP_KEY_CHARS && !incident_id.is_empty() {
        incident_id.to_string()
    } else {
        format!("palisade-{}", super::notice::incident_token(incident_id))
    }
}

/// PagerDuty's severity of a Palisade severity.
fn severity(s: Option<Severity>) -> &'static str {
    match s {
        Some(Severity::Critical) => "critical",
        Some(Severity::High) => "error",
        Some(Severity::Normal) | None => "warning",
    }
}

/// The Events API v2 body of a notice: `trigger` for an incident,
/// `resolve` for its end.
pub fn pagerduty_event(n: &Notice, routing_key: &str, dashboard_url: Option<&str>) -> Value {
    let dedup = dedup_key(&n.incident_id);
    if n.resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup,
        });
    }
    let source = [&n.address, &n.host, &n.monitor]
        .into_iter()
        .find(|s| !s.trim().is_empty())
        .map_or_else(|| "palisade".to_string(), |s| super::one_line(s, 255));
    let mut payload = Map::new();
    payload.insert(
        "summary".into(),
        super::one_line(&n.summary, SUMMARY_CHARS - 1).into(),
    );
    payload.insert("source".into(), source.into());
    payload.insert("severity".into(), severity(n.severity).into());
    // Only a time PagerDuty can read: a bad one would refuse the event.
    if humantime::parse_rfc3339_weak(&n.time).is_ok() {
        payload.insert("timestamp".into(), n.time.clone().into());
    }
    if let Some(port) = n.port {
        payload.insert("component".into(), format!("{port}/tcp").into());
    }
    payload.insert("group".into(), super::one_line(&n.monitor, 255).into());
    payload.insert("class".into(), n.kind.clone().into());
    let details: Map<String, Value> = n
        .facts
        .iter()
        .map(|(label, value)| (label.to_lowercase().replace(' ', "_"), value.clone().into()))
        .collect();
    payload.insert("custom_details".into(), details.into());
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": payload,
        "client": "Palisade",
    });
    if let Some(template) = dashboard_url {
        let link = super::alertmanager::dashboard_link(template, &n.monitor);
        event["client_url"] = link.clone().into();
        event["links"] = json!([{"href": link, "text": "Palisade dashboard"}]);
    }
    event
}
