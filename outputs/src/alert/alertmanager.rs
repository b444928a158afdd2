//! The `alertmanager` dispatcher: incidents become Alertmanager alerts.
//!
//! An incident event (`unexpected_port_open`, `expected_port_down`) posts a
//! firing alert to `<base>/api/v2/alerts`; the matching `port_resolved`
//! posts the same labels with `endsAt` = the resolution time, which
//! Alertmanager treats as resolved. `monitor_resolved` and scan summaries
//! are acknowledged without a request.
//!
//! Alertmanager resolves an alert posted without `endsAt` by itself after
//! its `resolve_timeout` (5 minutes by default) unless the source re-sends
//! it; Palisade sends an incident once, so a firing alert carries an
//! `endsAt` far in the future ([`FIRING_HORIZON`]) and ends only with its
//! `port_resolved`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Serialize;

use super::{DispatchConfigError, DispatchError, Dispatched, Dispatcher, HttpOptions};
use crate::schema::{Envelope, EventData, PortEvent};

/// How far ahead a firing alert's `endsAt` lies.
pub const FIRING_HORIZON: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Resolutions remembered to keep a late redelivery of an incident from
/// re-opening an alert that was already resolved.
const REMEMBERED_RESOLUTIONS: usize = 4096;

/// One alert as Alertmanager's `POST /api/v2/alerts` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// The `alertname` label of an incident kind.
pub fn alertname(incident_kind: &str) -> Option<&'static str> {
    match incident_kind {
        "unexpected_port_open" => Some("PalisadeUnexpectedPortOpen"),
        "expected_port_down" => Some("PalisadeExpectedPortDown"),
        _ => None,
    }
}

/// The `severity` label of an incident kind. It is derived from the kind,
/// not from the event's own severity, so an incident and its resolution
/// (which the engine marks `normal`) carry identical labels.
fn severity_label(incident_kind: &str) -> &'static str {
    match incident_kind {
        "unexpected_port_open" => "high",
        _ => "normal",
    }
}

/// The alert for an event, or `None` for events that are no alerts
/// (`monitor_resolved`, scans) and for a resolution of an unknown incident
/// kind. `firing_ends_at` is the `endsAt` of a firing alert.
pub fn alert_for(
    e: &Envelope,
    firing_ends_at: &str,
    generator_url: Option<&str>,
) -> Option<PostableAlert> {
    let (p, incident_kind, firing) = match &e.data {
        EventData::UnexpectedPortOpen(p) => (p, "unexpected_port_open", true),
        EventData::ExpectedPortDown(p) => (p, "expected_port_down", true),
        EventData::PortResolved(p) => (p, p.incident_kind.as_str(), false),
        _ => return None,
    };
    let name = alertname(incident_kind)?;
    let labels = BTreeMap::from([
        ("alertname".to_string(), name.to_string()),
        ("monitor".to_string(), p.monitor.clone()),
        ("host".to_string(), p.host.clone()),
        ("port".to_string(), p.port.to_string()),
        ("kind".to_string(), incident_kind.to_string()),
        (
            "severity".to_string(),
            severity_label(incident_kind).to_string(),
        ),
    ]);
    let mut annotations = BTreeMap::from([
        ("summary".to_string(), summary(p, incident_kind)),
        ("incident_id".to_string(), p.incident_id.clone()),
    ]);
    let ends_at = if firing {
        annotations.insert("description".to_string(), description(p, incident_kind));
        firing_ends_at.to_string()
    } else {
        let resolved_at = p.resolved_at.clone().unwrap_or_else(|| e.time.clone());
        let mut text = format!(
            "{} Resolved at {resolved_at}",
            description(p, incident_kind)
        );
        if let Some(reason) = &p.reason {
            text.push_str(&format!(" ({reason})"));
        }
        text.push('.');
        annotations.insert("description".to_string(), text);
        resolved_at
    };
    Some(PostableAlert {
        labels,
        annotations,
        starts_at: p.first_seen.clone(),
        ends_at: Some(ends_at),
        generator_url: generator_url.map(str::to_string),
    })
}

fn summary(p: &PortEvent, incident_kind: &str) -> String {
    match incident_kind {
        "unexpected_port_open" => format!(
            "Unexpected open port {}/tcp on {} ({})",
            p.port, p.monitor, p.host
        ),
        _ => format!(
            "Expected port {}/tcp down on {} ({})",
            p.port, p.monitor, p.host
        ),
    }
}

fn description(p: &PortEvent, incident_kind: &str) -> String {
    let what = match incident_kind {
        "unexpected_port_open" => "is open but not on the expected list",
        _ => "is on the expected list but not open",
    };
    let state = p
        .state
        .as_deref()
        .map(|s| format!(" (detected: {s})"))
        .unwrap_or_default();
    format!(
        "Port {}/tcp on {} (monitor {}) {what}{state}. First seen {}, confirmed {}.",
        p.port, p.host, p.monitor, p.first_seen, p.confirmed_at
    )
}

/// Posts incidents to Alertmanager's v2 API.
#[derive(Debug)]
pub struct AlertmanagerDispatcher {
    name: String,
    endpoint: reqwest::Url,
    generator_url: Option<String>,
    client: reqwest::Client,
    resolved: Mutex<Resolved>,
}

/// Recently resolved incidents: id → `resolved_at`, oldest first out.
#[derive(Debug, Default)]
struct Resolved {
    order: VecDeque<String>,
    at: HashMap<String, String>,
}

impl Resolved {
    fn insert(&mut self, id: &str, resolved_at: &str) {
        if self
            .at
            .insert(id.to_string(), resolved_at.to_string())
            .is_none()
        {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > REMEMBERED_RESOLUTIONS {
            if let Some(old) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
    }
}

impl AlertmanagerDispatcher {
    /// A dispatcher for the Alertmanager at `base` (e.g.
    /// `http://127.0.0.1:9093`, or a path prefix such as
    /// `https://example.org/alertmanager`); a URL that already ends in
    /// `/api/v2/alerts` is used as it is.
    pub fn new(base: &str, http: &HttpOptions) -> Result<Self, DispatchConfigError> {
        let mut url = super::check_url(base)?;
        if !url.path().trim_end_matches('/').ends_with("/api/v2/alerts") {
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            url = url
                .join("api/v2/alerts")
                .map_err(|e| DispatchConfigError::BadUrl {
                    url: base.to_string(),
                    reason: e.to_string(),
                })?;
        }
        Ok(AlertmanagerDispatcher {
            name: format!("alertmanager={base}"),
            endpoint: url,
            generator_url: http.generator_url.clone(),
            client: super::http_client(http)?,
            resolved: Mutex::new(Resolved::default()),
        })
    }

    /// The URL alerts are posted to.
    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }
}

#[async_trait]
impl Dispatcher for AlertmanagerDispatcher {
    fn name(&self) -> &str {
        &self.name
    }

    async fn dispatch(&self, event: &Envelope) -> Result<Dispatched, DispatchError> {
        let horizon = humantime::format_rfc3339_seconds(SystemTime::now() + FIRING_HORIZON);
        let Some(mut alert) = alert_for(event, &horizon.to_string(), self.generator_url.as_deref())
        else {
            if let EventData::PortResolved(p) = &event.data {
                tracing::warn!(
                    id = %event.id,
                    incident_kind = %p.incident_kind,
                    "port_resolved of an unknown incident kind: no alert to resolve"
                );
            }
            return Ok(Dispatched::Skipped);
        };
        let incident = event.data.incident_id().unwrap_or("");
        let resolution = matches!(event.data, EventData::PortResolved(_));
        if !resolution {
            // The incident may arrive after its resolution (its delivery
            // failed and was retried later): post it resolved, not firing.
            let resolved = self
                .resolved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(at) = resolved.at.get(incident) {
                tracing::info!(id = %event.id, incident, "incident already resolved; posting it resolved");
                alert.ends_at = Some(at.clone());
            }
        }
        let body = serde_json::to_vec(&[&alert]).map_err(DispatchError::EncodeAlert)?;
        super::post(&self.client, &self.endpoint, "application/json", &[], body).await?;
        if resolution && let Some(at) = &alert.ends_at {
            self.resolved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(incident, at);
        }
        Ok(Dispatched::Delivered)
    }
}
