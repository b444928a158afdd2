//! The `alertmanager` dispatcher: incidents become Alertmanager alerts, as
//! Alertmanager's clients are meant to post them.
//!
//! An event that fires an alert ([`alert_role`]) posts it to
//! `<base>/api/v2/alerts` with `endsAt` [`RESENDS_AHEAD`] resends ahead,
//! and the dispatcher keeps it in its set of firing alerts, which
//! [`refresh`](Dispatcher::refresh) re-posts every `resend` (1 minute) with
//! a fresh `endsAt`. So an Alertmanager that restarted has them back within
//! one resend, and when `palisade-alert` dies they expire by themselves
//! instead of firing forever. The event that ends an alert takes it out of
//! the set at once (even if its own POST fails, so a retry never races a
//! re-post) and posts the same labels with `endsAt` = the resolution time.
//! At start-up the consumer replays the stream through
//! [`restore`](Dispatcher::restore), which rebuilds the set.
//!
//! Labels: `alertname` (`Palisade` + the firing kind in CamelCase, e.g.
//! `PalisadeUnexpectedPortOpen`), `monitor`, `instance` (the address, or
//! `address:port`), `port` (port events), `severity`. Annotations:
//! `summary`, `description`, `incident_id` (port incidents), `dashboard`
//! (with `--dashboard-url`, also the `generatorURL`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Serialize;

use super::{
    AlertRole, DispatchConfigError, DispatchError, Dispatched, Dispatcher, HttpOptions, alert_role,
    event_address, notice::summary,
};
use crate::schema::{Envelope, EventData};

/// A firing alert's `endsAt` lies this many resends ahead.
pub const RESENDS_AHEAD: u32 = 4;

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

/// The `alertname` of the alerts an event kind fires: `Palisade` and the
/// kind in CamelCase (`unexpected_port_open` → `PalisadeUnexpectedPortOpen`).
pub fn alertname(kind: &str) -> String {
    let mut name = String::from("Palisade");
    for word in kind.split('_').filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name
}

/// The `severity` label of an alert whose firing event is not known (a
/// resolution whose incident left the stream before `palisade-alert` read
/// it): the severity the engine gives that kind. The labels of a known
/// alert are always those it fired with.
fn fallback_severity(fired_by: &str) -> &'static str {
    match fired_by {
        "unexpected_port_open" | "host_answers_all_ports" => "high",
        "host_unreachable" => "critical",
        _ => "normal",
    }
}

/// `address:port` (`[v6]:port`), or the address alone.
fn instance(address: &str, port: Option<u16>) -> String {
    match port {
        Some(port) if address.contains(':') && !address.starts_with('[') => {
            format!("[{address}]:{port}")
        }
        Some(port) => format!("{address}:{port}"),
        None => address.to_string(),
    }
}

/// The dashboard link of a monitor: `{monitor}` in the template replaced by
/// its (percent-encoded) name.
pub(crate) fn dashboard_link(template: &str, monitor: &str) -> String {
    let encoded: String = monitor
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    template.replace("{monitor}", &encoded)
}

/// The alert an event fires or ends, or `None` for events that concern no
/// single alert (`monitor_resolved`, scans, kinds this build does not
/// know). `firing_ends_at` is the `endsAt` of a firing alert; an ending
/// alert gets the resolution time.
pub fn alert_for(
    e: &Envelope,
    firing_ends_at: &str,
    dashboard_url: Option<&str>,
) -> Option<PostableAlert> {
    let (fired_by, firing) = match alert_role(&e.data) {
        AlertRole::Fires { .. } => (e.kind().to_string(), true),
        AlertRole::Resolves { fired_by, .. } => (fired_by, false),
        AlertRole::ResolvesMonitor | AlertRole::None => return None,
    };
    let monitor = e.data.monitor();
    let address = event_address(&e.data);
    let port = e.data.port();
    let severity = if firing {
        e.data.severity().as_str()
    } else {
        fallback_severity(&fired_by)
    };
    let mut labels = BTreeMap::from([
        ("alertname".to_string(), alertname(&fired_by)),
        ("monitor".to_string(), monitor.to_string()),
        ("instance".to_string(), instance(&address, port)),
        ("severity".to_string(), severity.to_string()),
    ]);
    if let Some(port) = port {
        labels.insert("port".to_string(), port.to_string());
    }

    let facts = e.data.incident_facts();
    let summary = summary(&fired_by, monitor, &address, port);
    let mut description = format!("{summary}.");
    if let Some(state) = facts.and_then(|f| f.state).filter(|s| !s.is_empty()) {
        description.push_str(&format!(" Detected: {state}."));
    }
    if let Some(message) = facts.and_then(|f| f.message).filter(|s| !s.is_empty()) {
        description.push_str(&format!(" {message}."));
    }
    let first_seen = facts.map(|f| f.first_seen).filter(|s| !s.is_empty());
    if let Some(first) = first_seen {
        description.push_str(&format!(" First seen {first}"));
        if let Some(confirmed) = facts.and_then(|f| f.confirmed_at).filter(|s| !s.is_empty()) {
            description.push_str(&format!(", confirmed {confirmed}"));
        }
        description.push('.');
    }
    let ends_at = if firing {
        firing_ends_at.to_string()
    } else {
        let resolved_at = facts
            .and_then(|f| f.resolved_at)
            .filter(|s| !s.is_empty())
            .map_or_else(|| e.time.clone(), str::to_string);
        description.push_str(&format!(" Resolved at {resolved_at}"));
        if let Some(reason) = facts.and_then(|f| f.reason).filter(|s| !s.is_empty()) {
            description.push_str(&format!(" ({reason})"));
        }
        description.push('.');
        resolved_at
    };
    let mut annotations = BTreeMap::from([
        ("summary".to_string(), summary),
        ("description".to_string(), description),
    ]);
    if let Some(id) = e.data.incident_id() {
        annotations.insert("incident_id".to_string(), id.to_string());
    }
    let link = dashboard_url.map(|template| dashboard_link(template, monitor));
    if let Some(link) = &link {
        annotations.insert("dashboard".to_string(), link.clone());
    }
    Some(PostableAlert {
        labels,
        annotations,
        starts_at: first_seen.map_or_else(|| e.time.clone(), str::to_string),
        ends_at: Some(ends_at),
        generator_url: link,
    })
}

/// Posts incidents to Alertmanager's v2 API and keeps them alive.
#[derive(Debug)]
pub struct AlertmanagerDispatcher {
    name: String,
    endpoint: reqwest::Url,
    dashboard_url: Option<String>,
    client: reqwest::Client,
    resend: Duration,
    horizon: Duration,
    state: Mutex<State>,
    /// Held across a POST, so a re-post of the firing set and the POST of a
    /// resolution never overtake each other.
    posting: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Alert key → the firing alert (its `endsAt` is set at each post).
    firing: BTreeMap<String, PostableAlert>,
    resolved: Resolved,
}

/// Recently ended alerts: key → the resolved alert, oldest first out.
#[derive(Debug, Default)]
struct Resolved {
    order: VecDeque<String>,
    alerts: HashMap<String, PostableAlert>,
}

impl Resolved {
    fn insert(&mut self, key: &str, alert: PostableAlert) {
        if self.alerts.insert(key.to_string(), alert).is_none() {
            self.order.push_back(key.to_string());
        }
        while self.order.len() > REMEMBERED_RESOLUTIONS {
            if let Some(old) = self.order.pop_front() {
                self.alerts.remove(&old);
            }
        }
    }
}

impl State {
    /// What `event` posts, after updating the sets. A firing alert whose
    /// end is already known is posted ended.
    fn apply(
        &mut self,
        event: &Envelope,
        firing_ends_at: &str,
        dashboard_url: Option<&str>,
    ) -> Vec<PostableAlert> {
        match alert_role(&event.data) {
            AlertRole::None => Vec::new(),
            AlertRole::Fires { key } => {
                if let Some(ended) = self.resolved.alerts.get(&key) {
                    tracing::info!(
                        id = %super::escape(&event.id),
                        "the alert's end is already known; posting it ended"
                    );
                    return vec![ended.clone()];
                }
                let Some(alert) = alert_for(event, firing_ends_at, dashboard_url) else {
                    return Vec::new();
                };
                self.firing.insert(key, alert.clone());
                vec![alert]
            }
            AlertRole::Resolves { key, .. } => {
                let Some(mut alert) = alert_for(event, firing_ends_at, dashboard_url) else {
                    return Vec::new();
                };
                if let Some(fired) = self.firing.remove(&key) {
                    alert.labels = fired.labels;
                    alert.starts_at = fired.starts_at;
                } else if let Some(known) = self.resolved.alerts.get(&key) {
                    // A redelivery: post exactly what was posted before.
                    return vec![known.clone()];
                }
                self.resolved.insert(&key, alert.clone());
                vec![alert]
            }
            AlertRole::ResolvesMonitor => {
                let monitor = event.data.monitor();
                let keys: Vec<String> = self
                    .firing
                    .iter()
                    .filter(|(_, a)| a.labels.get("monitor").map(String::as_str) == Some(monitor))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    if let Some(mut alert) = self.firing.remove(&key) {
                        alert.ends_at = Some(event.time.clone());
                        self.resolved.insert(&key, alert);
                    }
                }
                // Everything this event ended (also on a redelivery).
                self.resolved
                    .alerts
                    .values()
                    .filter(|a| {
                        a.labels.get("monitor").map(String::as_str) == Some(monitor)
                            && a.ends_at.as_deref() == Some(event.time.as_str())
                    })
                    .cloned()
                    .collect()
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
                    url: super::redact_url(base),
                    reason: e.to_string(),
                })?;
        }
        if http.resend.is_zero() {
            return Err(DispatchConfigError::BadOption(
                "the resend interval must be positive".to_string(),
            ));
        }
        Ok(AlertmanagerDispatcher {
            name: format!("alertmanager={}", super::redact_url(base)),
            endpoint: url,
            dashboard_url: http.dashboard_url.clone(),
            client: super::http_client(http)?,
            resend: http.resend,
            horizon: http.alert_horizon(),
            state: Mutex::new(State::default()),
            posting: tokio::sync::Mutex::new(()),
        })
    }

    /// The URL alerts are posted to.
    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }

    /// How many alerts are firing (as this dispatcher knows them).
    pub fn firing(&self) -> usize {
        self.state().firing.len()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the sets are whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn firing_ends_at(&self) -> String {
        humantime::format_rfc3339_seconds(SystemTime::now() + self.horizon).to_string()
    }

    async fn post(&self, alerts: &[PostableAlert]) -> Result<(), DispatchError> {
        let body = serde_json::to_vec(alerts).map_err(DispatchError::EncodeAlert)?;
        super::post(
            &self.client,
            (&self.endpoint, &super::redact_url(self.endpoint.as_str())),
            "application/json",
            &[],
            body,
            super::Refusals::Retried,
        )
        .await
    }
}

#[async_trait]
impl Dispatcher for AlertmanagerDispatcher {
    fn name(&self) -> &str {
        &self.name
    }

    async fn dispatch(&self, event: &Envelope) -> Result<Dispatched, DispatchError> {
        let _posting = self.posting.lock().await;
        let alerts =
            self.state()
                .apply(event, &self.firing_ends_at(), self.dashboard_url.as_deref());
        if alerts.is_empty() {
            if let EventData::PortResolved(p) = &event.data
                && p.incident_kind.is_empty()
            {
                tracing::warn!(id = %super::escape(&event.id), "port_resolved without an incident kind");
            }
            return Ok(Dispatched::Skipped);
        }
        self.post(&alerts).await?;
        Ok(Dispatched::Delivered)
    }

    fn wants_history(&self) -> bool {
        true
    }

    fn restore(&self, event: &Envelope) {
        self.state()
            .apply(event, &self.firing_ends_at(), self.dashboard_url.as_deref());
    }

    fn refresh_interval(&self) -> Option<Duration> {
        Some(self.resend)
    }

    async fn refresh(&self) -> Result<usize, DispatchError> {
        let _posting = self.posting.lock().await;
        let ends_at = self.firing_ends_at();
        let alerts: Vec<PostableAlert> = self
            .state()
            .firing
            .values()
            .map(|a| PostableAlert {
                ends_at: Some(ends_at.clone()),
                ..a.clone()
            })
            .collect();
        if !alerts.is_empty() {
            self.post(&alerts).await?;
        }
        Ok(alerts.len())
    }
}
