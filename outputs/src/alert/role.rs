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
/// * Incidents (`unexpected_port_open`, `expected_port_down`,
///   `host_unreachable`, `host_answers_all_ports`, `scan_failed`,
///   `monitor_stale`) fire the alert keyed by their `incident_id`; the event
///   that resolves the incident (`port_resolved`, `host_reachable`,
///   `host_resolved`, `scan_recovered`, `monitor_fresh`) carries the same id
///   and ends it.
/// * `monitor_resolved` ends every alert of its monitor.
/// * `ports_changed` and scan summaries concern no alert.
pub fn alert_role(e: &EventData) -> AlertRole {
    match (e.incident(), e.is_resolution()) {
        (Some((id, kind)), true) => AlertRole::Resolves {
            key: id.to_string(),
            fired_by: kind.to_string(),
        },
        (Some((id, _)), false) => AlertRole::Fires {
            key: id.to_string(),
        },
        (None, true) => AlertRole::ResolvesMonitor,
        (None, false) => AlertRole::None,
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

/// The address an event is about: its `address` (port and host events),
/// else its monitor's host; `""` when it has neither.
pub fn event_address(e: &EventData) -> String {
    e.address().unwrap_or_else(|| e.host()).to_string()
}
