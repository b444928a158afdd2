//! What a person is told about an incident and about its end: the one
//! content behind the Slack message, the PagerDuty event and the email.
//!
//! [`Notice::of`] reads an event that fires or ends an alert
//! ([`alert_role`]), and a `ports_changed` summary (the per-port events of
//! a scan beyond `max_port_events`, which are not sent one by one: people
//! must hear of them too); every other event is no notice. The channels only lay
//! it out: the facts are chosen, ordered, bounded and made inert (one
//! line, no control characters) here.

use sha2::{Digest, Sha256};

use super::{AlertRole, alert_role, event_address};
use crate::schema::{Envelope, EventData, PortsChangedEvent, Severity};

/// The longest value shown for one fact (a monitor name may be huge).
const FACT_CHARS: usize = 300;

/// The changes of a `ports_changed` shown one by one; the rest are counted.
const CHANGES_SHOWN: usize = 20;

/// An incident or its end, as people are told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `true` for the end of an incident.
    pub resolved: bool,
    /// `true` for an incident or its end; `false` for a `ports_changed`
    /// summary, which opens nothing that could be resolved.
    pub incident: bool,
    /// The incident id, exactly as in the event (the key of PagerDuty's
    /// `dedup_key` and the email's `Message-ID`); empty for a summary.
    pub incident_id: String,
    /// The event's id.
    pub event_id: String,
    /// The kind of the incident (`unexpected_port_open`, …), also in the
    /// notice of its end.
    pub kind: String,
    /// One line: `Unexpected port open 6379/tcp on web-1 (198.18.0.2)`, the
    /// same for the incident and its end.
    pub summary: String,
    /// The severity of the incident (`None` in the notice of its end: the
    /// resolution event does not carry it).
    pub severity: Option<Severity>,
    pub monitor: String,
    /// The monitored host, as configured.
    pub host: String,
    /// The address concerned ([`event_address`]).
    pub address: String,
    pub port: Option<u16>,
    /// The time of the event (RFC 3339).
    pub time: String,
    /// The facts in the order they are shown, labelled, each a bounded,
    /// [escaped](super::escape) line.
    pub facts: Vec<(&'static str, String)>,
}

impl Notice {
    /// The notice of an event that fires or ends one alert, or of a
    /// `ports_changed` summary; `None` for every other event
    /// (`monitor_resolved`, scans).
    pub fn of(e: &Envelope) -> Option<Notice> {
        if let EventData::PortsChanged(p) = &e.data {
            return Some(ports_changed(e, p));
        }
        let (kind, resolved) = match alert_role(&e.data) {
            AlertRole::Fires { .. } => (e.kind().to_string(), false),
            AlertRole::Resolves { fired_by, .. } => (fired_by, true),
            AlertRole::ResolvesMonitor | AlertRole::None => return None,
        };
        let incident_id = e.data.incident_id()?.to_string();
        let facts_of = e.data.incident_facts();
        let monitor = e.data.monitor().to_string();
        let host = e.data.host().to_string();
        let address = event_address(&e.data);
        let port = e.data.port();
        let severity = (!resolved).then(|| e.data.severity());
        let summary = summary(
            &kind,
            &super::one_line(&monitor, 120),
            &super::one_line(&address, 60),
            port,
        );

        let mut facts: Vec<(&'static str, String)> = Vec::new();
        let mut add = |label: &'static str, value: &str| {
            if !value.trim().is_empty() {
                facts.push((label, super::one_line(value, FACT_CHARS)));
            }
        };
        add("Monitor", &monitor);
        add("Host", &host);
        if address != host {
            add("Address", &address);
        }
        if let Some(port) = port {
            add("Port", &format!("{port}/tcp"));
        }
        add("Kind", &kind);
        if let Some(severity) = severity {
            add("Severity", severity.as_str());
        }
        if let Some(f) = facts_of {
            add("State", f.state.unwrap_or_default());
            add("Details", f.message.unwrap_or_default());
            add("First seen", f.first_seen);
            add("Confirmed", f.confirmed_at.unwrap_or_default());
            if resolved {
                add("Resolved", f.resolved_at.unwrap_or(&e.time));
                add("Reason", f.reason.unwrap_or_default());
            }
        }
        add("Incident", &incident_id);
        Some(Notice {
            resolved,
            incident: true,
            incident_id,
            event_id: e.id.clone(),
            kind,
            summary,
            severity,
            monitor,
            host,
            address,
            port,
            time: e.time.clone(),
            facts,
        })
    }

    /// The value of the fact `label`, if shown.
    pub fn fact(&self, label: &str) -> Option<&str> {
        self.facts
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, v)| v.as_str())
    }

    /// A stable token of the incident (of the event, for a summary), safe
    /// anywhere (a header, an id): the first 128 bits of the SHA-256 of its
    /// id, in hex.
    pub fn incident_token(&self) -> String {
        if self.incident {
            incident_token(&self.incident_id)
        } else {
            incident_token(&self.event_id)
        }
    }
}

/// The notice of a `ports_changed` summary: `37 port changes on web-1`,
/// each change (address, kind, ports) a fact, the first
/// [`CHANGES_SHOWN`] of them.
fn ports_changed(e: &Envelope, p: &PortsChangedEvent) -> Notice {
    let monitor = super::one_line(&p.monitor, 120);
    let summary = format!(
        "{} port change{} on {monitor} ({} sent one by one)",
        p.total,
        if p.total == 1 { "" } else { "s" },
        p.sent
    );
    let mut facts = vec![
        ("Monitor", super::one_line(&p.monitor, FACT_CHARS)),
        ("Host", super::one_line(&p.host, FACT_CHARS)),
        ("Kind", "ports_changed".to_string()),
        ("Severity", p.severity.as_str().to_string()),
    ];
    for c in p.changes.iter().take(CHANGES_SHOWN) {
        let line = format!("{} {} {} ({})", c.address, c.kind, c.ports, c.count);
        facts.push(("Change", super::one_line(&line, FACT_CHARS)));
    }
    if p.changes.len() > CHANGES_SHOWN {
        let more = p.changes.len() - CHANGES_SHOWN;
        facts.push(("Change", format!("… and {more} more")));
    }
    Notice {
        resolved: false,
        incident: false,
        incident_id: String::new(),
        event_id: e.id.clone(),
        kind: "ports_changed".to_string(),
        summary,
        severity: Some(p.severity),
        monitor: p.monitor.clone(),
        host: p.host.clone(),
        address: String::new(),
        port: None,
        time: e.time.clone(),
        facts,
    }
}

/// The first 128 bits of the SHA-256 of an incident id, in hex.
pub(crate) fn incident_token(incident_id: &str) -> String {
    Sha256::digest(incident_id.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `Unexpected port open 6379/tcp on web-1 (198.18.0.2)`,
/// `Host unreachable on web-1 (198.18.0.2)`.
pub(crate) fn summary(kind: &str, monitor: &str, address: &str, port: Option<u16>) -> String {
    let mut words = kind.replace('_', " ");
    if let Some(first) = words.get(..1) {
        words = first.to_uppercase() + &words[1..];
    }
    let port = port.map(|p| format!(" {p}/tcp")).unwrap_or_default();
    if address.is_empty() {
        format!("{words}{port} on {monitor}")
    } else {
        format!("{words}{port} on {monitor} ({address})")
    }
}
