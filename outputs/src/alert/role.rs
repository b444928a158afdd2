//! What an event means to an alert: the one place that knows which kinds
//! open an alert and which end one, and which address an event is about.
//!
//! Everything else in the alert module works from [`AlertRole`] and the
//! schema's accessors (`kind()`, `monitor()`, `severity()`, `port()`), so a
//! new kind needs at most a line here.

use crate::schema::{Envelope, EventData};

/// What an event does to the alerts it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertRole {
    /// Opens (or re-asserts) the alert `key`.
    Fires { key: String },
    /// Ends the alert `key`, which an event of kind `fired_by` opened.
    Resolves { key: String, fired_by: String },
    /// Ends every alert of the event's monitor (`monitor_resolved`: every
    /// port back to its expected state).
    ResolvesMonitor,
    /// Concerns no alert (scan summaries, `ports_changed` summaries, kinds
    /// this build does not know).
    None,
}

/// The role of an event.
///
/// * Port incidents (`unexpected_port_open`, `expected_port_down`) fire the
///   alert keyed by their `incident_id`; `port_resolved` ends it.
/// * `host_unreachable` and `host_answers_all_ports` fire an alert keyed by
///   monitor, address and kind; `host_reachable` ends the `host_unreachable`
///   one. (`host_answers_all_ports` ends with `monitor_resolved`.)
/// * `monitor_resolved` ends every alert of its monitor.
pub fn alert_role(e: &EventData) -> AlertRole {
    let kind = e.kind();
    if let Some(p) = e.port_event() {
        return if kind == "port_resolved" {
            AlertRole::Resolves {
                key: p.incident_id.clone(),
                fired_by: p.incident_kind.clone(),
            }
        } else {
            AlertRole::Fires {
                key: p.incident_id.clone(),
            }
        };
    }
    match kind {
        "monitor_resolved" => AlertRole::ResolvesMonitor,
        "host_unreachable" | "host_answers_all_ports" => AlertRole::Fires {
            key: host_key(e, kind),
        },
        "host_reachable" => AlertRole::Resolves {
            key: host_key(e, "host_unreachable"),
            fired_by: "host_unreachable".to_string(),
        },
        _ => AlertRole::None,
    }
}

/// Whether the event ends an alert (its delivery budget is then at least
/// the time a firing alert lives without a re-post).
pub fn is_resolution(e: &Envelope) -> bool {
    matches!(
        alert_role(&e.data),
        AlertRole::Resolves { .. } | AlertRole::ResolvesMonitor
    )
}

fn host_key(e: &EventData, kind: &str) -> String {
    format!("{}/{}/{kind}", e.monitor(), event_address(e))
}

/// THE ADDRESS OF AN EVENT — the one function to change for the schema's
/// `address` field (issue 11).
///
/// Reads the payload's `address` when it has a non-empty one, and its
/// `host` until then (or when it has none), whatever the kind, so kinds
/// added to the schema need nothing here. `""` when the event has neither.
pub fn event_address(e: &EventData) -> String {
    let value = match serde_json::to_value(e) {
        Ok(value) => value,
        Err(_) => return String::new(),
    };
    ["address", "host"]
        .iter()
        .filter_map(|field| value.get(*field).and_then(|v| v.as_str()))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_string()
}

/// A string field of the payload, if it has one (e.g. `first_seen`,
/// `message`), read generically so new kinds need nothing here.
pub(crate) fn payload_field(e: &EventData, field: &str) -> Option<String> {
    serde_json::to_value(e)
        .ok()?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
