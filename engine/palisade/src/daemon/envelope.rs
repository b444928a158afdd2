//! Envelopes: the monitor's events and the scan summaries as the sinks
//! publish them, and as outbox rows.
//!
//! Pure: the caller passes the `source` (this host's name) in.

use std::time::{Duration, UNIX_EPOCH};

use palisade_core::health::HealthEvent;
use palisade_core::monitor::{
    Event, HostIncident, HostIncidentKind, Incident, IncidentKind, Millis, Priority,
};
use palisade_core::plan::ScanFacts;
use palisade_outputs::schema::{
    AddressReport, Envelope, EventData, HealthEvent as SchemaHealthEvent, HostEvent, MonitorEvent,
    PortEvent, PortsChange, PortsChangedEvent, ScanReport, Severity,
};

use crate::store::OutboxEntry;

/// RFC 3339 (UTC, milliseconds) of a unix-millisecond time.
pub fn rfc3339(ms: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The schema's severity of a core priority.
fn severity(p: Priority) -> Severity {
    match p {
        Priority::Critical => Severity::Critical,
        Priority::High => Severity::High,
        Priority::Normal => Severity::Normal,
    }
}

/// The envelope of an event of the monitor of `host`.
pub fn envelope(event: &Event, host: &str, source: &str) -> Envelope {
    let port_event = |i: &Incident| PortEvent {
        monitor: i.monitor.clone(),
        host: host.to_string(),
        address: i.address.to_string(),
        port: i.port,
        state: Some(i.state.to_string()),
        expected: i.kind == IncidentKind::ExpectedPortDown,
        first_seen: rfc3339(i.first_seen),
        confirmed_at: rfc3339(i.confirmed_at),
        resolved_at: None,
        incident_id: i.id.clone(),
        incident_kind: i.kind.to_string(),
        severity: severity(i.kind.priority()),
        reason: None,
    };
    let host_event = |i: &HostIncident| HostEvent {
        monitor: i.monitor.clone(),
        host: host.to_string(),
        address: i.address.to_string(),
        first_seen: rfc3339(i.first_seen),
        confirmed_at: rfc3339(i.confirmed_at),
        resolved_at: None,
        incident_id: i.id.clone(),
        incident_kind: i.kind.to_string(),
        severity: severity(i.kind.priority()),
        ports: i.ports.to_string(),
        port_count: i.ports.count(),
        reason: None,
        message: match i.kind {
            HostIncidentKind::HostUnreachable => format!(
                "{} answers nothing (no echo reply, no SYN-ACK, no RST); expected ports down: {}",
                i.address,
                if i.ports.is_empty() {
                    "none".to_string()
                } else {
                    i.ports.to_string()
                }
            ),
            HostIncidentKind::HostAnswersAllPorts => format!(
                "{} answers SYN-ACK on {} unexpected ports (a SYN proxy, tarpit or scrubber?)",
                i.address,
                i.ports.count()
            ),
        },
    };
    let data = match event {
        Event::Opened(i) => match i.kind {
            IncidentKind::UnexpectedPortOpen => EventData::UnexpectedPortOpen(port_event(i)),
            IncidentKind::ExpectedPortDown => EventData::ExpectedPortDown(port_event(i)),
        },
        Event::PortResolved {
            incident,
            resolved_at,
            state,
            reason,
        } => EventData::PortResolved(PortEvent {
            state: state.map(|s| s.to_string()),
            resolved_at: Some(rfc3339(*resolved_at)),
            severity: Severity::Normal,
            reason: Some(reason.to_string()),
            ..port_event(incident)
        }),
        Event::HostOpened(i) => match i.kind {
            HostIncidentKind::HostUnreachable => EventData::HostUnreachable(host_event(i)),
            HostIncidentKind::HostAnswersAllPorts => EventData::HostAnswersAllPorts(host_event(i)),
        },
        Event::HostResolved {
            incident,
            resolved_at,
            reason,
        } => {
            let data = HostEvent {
                resolved_at: Some(rfc3339(*resolved_at)),
                severity: Severity::Normal,
                reason: Some(reason.to_string()),
                message: match incident.kind {
                    HostIncidentKind::HostUnreachable => {
                        format!("{} answers again", incident.address)
                    }
                    HostIncidentKind::HostAnswersAllPorts => {
                        format!("{} no longer answers on every port", incident.address)
                    }
                },
                ..host_event(incident)
            };
            match incident.kind {
                HostIncidentKind::HostUnreachable => EventData::HostReachable(data),
                HostIncidentKind::HostAnswersAllPorts => EventData::HostResolved(data),
            }
        }
        Event::PortsChanged(p) => EventData::PortsChanged(PortsChangedEvent {
            monitor: p.monitor.clone(),
            host: host.to_string(),
            changes: p
                .changes
                .iter()
                .map(|c| PortsChange {
                    address: c.address.to_string(),
                    kind: c.kind.clone(),
                    ports: c.ports.to_string(),
                    count: c.ports.count(),
                })
                .collect(),
            sent: p.sent,
            total: p.total,
            severity: severity(event.priority()),
        }),
        Event::MonitorResolved { monitor, .. } => EventData::MonitorResolved(MonitorEvent {
            monitor: monitor.clone(),
            host: host.to_string(),
            message: "everything back to expected".into(),
        }),
    };
    Envelope::new(event.id(), source.to_string(), rfc3339(event.at()), data)
}

/// The envelope of a self-monitoring event; `host` is the monitor's host
/// (`""` for the scanner's own events).
pub fn health_envelope(event: &HealthEvent, host: &str, source: &str) -> Envelope {
    let (kind, severity) = match event {
        HealthEvent::ScanFailed(_) | HealthEvent::ScanRecovered { .. } => {
            ("scan_failed", Severity::Critical)
        }
        HealthEvent::MonitorStale { .. } | HealthEvent::MonitorFresh { .. } => {
            ("monitor_stale", Severity::High)
        }
    };
    let base = |first_seen: Millis, message: String| SchemaHealthEvent {
        monitor: event.monitor().to_string(),
        host: host.to_string(),
        incident_id: event.incident_id(),
        incident_kind: kind.to_string(),
        severity,
        first_seen: rfc3339(first_seen),
        resolved_at: None,
        reason: None,
        error: None,
        message,
    };
    let data = match event {
        HealthEvent::ScanFailed(f) => EventData::ScanFailed(SchemaHealthEvent {
            error: Some(f.error.clone()),
            ..base(
                f.since,
                format!("sweeps fail, nothing is being watched: {}", f.error),
            )
        }),
        HealthEvent::ScanRecovered { failure, at } => EventData::ScanRecovered(SchemaHealthEvent {
            error: Some(failure.error.clone()),
            resolved_at: Some(rfc3339(*at)),
            reason: Some("observed".into()),
            severity: Severity::Normal,
            ..base(failure.since, "sweeps succeed again".into())
        }),
        HealthEvent::MonitorStale {
            monitor,
            staleness,
            every_ms,
        } => EventData::MonitorStale(base(
            staleness.since,
            format!(
                "{monitor} has had no conclusive scan since {} (more than twice its period of {})",
                rfc3339(staleness.last_conclusive),
                humantime::format_duration(Duration::from_millis(*every_ms)),
            ),
        )),
        HealthEvent::MonitorFresh {
            monitor,
            staleness,
            at,
            scanned,
        } => EventData::MonitorFresh(SchemaHealthEvent {
            resolved_at: Some(rfc3339(*at)),
            reason: Some(
                if *scanned {
                    "observed"
                } else {
                    "monitor_removed"
                }
                .into(),
            ),
            severity: Severity::Normal,
            ..base(
                staleness.since,
                if *scanned {
                    format!("{monitor} was scanned conclusively again")
                } else {
                    format!("{monitor} was removed from the configuration")
                },
            )
        }),
    };
    Envelope::new(event.id(), source.to_string(), rfc3339(event.at()), data)
}

/// The scan summary event's data: the one place a scan's facts become the
/// event schema's [`ScanReport`].
pub fn scan_report(scan: &ScanFacts) -> ScanReport {
    ScanReport {
        monitor: scan.monitor.clone(),
        host: scan.host.clone(),
        scan_kind: scan.kind().as_str().to_string(),
        started: rfc3339(scan.started),
        finished: rfc3339(scan.finished),
        conclusive: scan.conclusive(),
        reachable: scan.reachable(),
        addresses: scan
            .addresses
            .iter()
            .map(|(address, r)| AddressReport {
                address: address.to_string(),
                reachable: r.reachable,
                open_ports: r.open.ranges().to_string(),
                open_count: r.open.len(),
            })
            .collect(),
        note: scan.inconclusive.clone(),
        estimated_loss: scan.retries.and_then(|r| r.estimated_loss()),
        retry_rounds: scan.retries.map(|r| r.rounds),
        expected_misses: scan
            .retries
            .and_then(|r| r.expected_misses(scan.addresses.values().map(|a| a.open.len()).sum())),
    }
}

/// The envelope of the summary of the scan recorded as `scan_id`; its id
/// is `"{monitor}:scan:{started}:{scan_id}"`.
pub fn scan_envelope(scan_id: i64, scan: &ScanFacts, source: &str) -> Envelope {
    Envelope::new(
        format!("{}:scan:{}:{scan_id}", scan.monitor, scan.started),
        source.to_string(),
        rfc3339(scan.finished),
        EventData::Scan(scan_report(scan)),
    )
}

/// An envelope as an outbox row (canonical JSON; sinks re-encode it).
pub fn outbox_entry(e: &Envelope) -> OutboxEntry {
    OutboxEntry {
        id: e.id.clone(),
        kind: e.kind().to_string(),
        payload: serde_json::to_string(e).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use palisade_core::monitor::{AddressReplies, PortState, Resolution, Scope};
    use palisade_core::probe::{LossCounts, RetryOutcome};

    use super::*;

    fn incident(kind: IncidentKind, state: PortState) -> Incident {
        Incident {
            id: "web-198.18.0.2-6379-1000".into(),
            monitor: "web".into(),
            address: "198.18.0.2".parse().unwrap(),
            port: 6379,
            kind,
            first_seen: 1_000,
            confirmed_at: 2_000,
            state,
        }
    }

    fn port_event(e: &Envelope) -> &PortEvent {
        e.data.port_event().expect("a port event")
    }

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn an_opened_incident_is_a_port_event_at_its_confirmation() {
        let up = incident(IncidentKind::UnexpectedPortOpen, PortState::Open);
        let e = envelope(&Event::Opened(up.clone()), "198.18.0.2", "palisade://x");
        assert_eq!(e.kind(), "unexpected_port_open");
        assert_eq!(e.id, "web-198.18.0.2-6379-1000:opened");
        assert_eq!(
            (e.source.as_str(), e.subject.as_str()),
            ("palisade://x", "web/198.18.0.2:6379")
        );
        assert_eq!(e.time, rfc3339(2_000));
        let p = port_event(&e);
        assert_eq!(
            (p.host.as_str(), p.address.as_str(), p.port),
            ("198.18.0.2", "198.18.0.2", 6379)
        );
        assert_eq!(p.state.as_deref(), Some("open"));
        assert_eq!(p.severity, Severity::High);
        assert!(!p.expected);
        assert_eq!(
            (p.first_seen.clone(), p.confirmed_at.clone()),
            (rfc3339(1_000), rfc3339(2_000))
        );
        assert_eq!(
            (p.resolved_at.as_deref(), p.reason.as_deref()),
            (None, None)
        );

        let down = incident(IncidentKind::ExpectedPortDown, PortState::Closed);
        let e = envelope(&Event::Opened(down), "h", "s");
        assert_eq!(e.kind(), "expected_port_down");
        let p = port_event(&e);
        assert_eq!((p.severity, p.expected), (Severity::Normal, true));
        assert_eq!(p.state.as_deref(), Some("closed"));
    }

    #[test]
    fn a_resolution_says_when_why_and_in_which_state() {
        let up = incident(IncidentKind::UnexpectedPortOpen, PortState::Open);
        for (state, reason, shown) in [
            (
                Some(PortState::Closed),
                Resolution::Observed,
                Some("closed"),
            ),
            (None, Resolution::MonitorRemoved, None),
        ] {
            let e = envelope(
                &Event::PortResolved {
                    incident: up.clone(),
                    resolved_at: 9_000,
                    state,
                    reason,
                },
                "h",
                "s",
            );
            assert_eq!(
                (e.kind(), e.id.as_str()),
                ("port_resolved", "web-198.18.0.2-6379-1000:resolved")
            );
            assert_eq!(e.time, rfc3339(9_000));
            let p = port_event(&e);
            assert_eq!(p.state.as_deref(), shown);
            assert_eq!(p.resolved_at, Some(rfc3339(9_000)));
            assert_eq!(p.reason.as_deref(), Some(reason.as_str()));
            assert_eq!(p.severity, Severity::Normal);
            assert_eq!(p.confirmed_at, rfc3339(2_000), "as opened");
        }
        let e = envelope(
            &Event::MonitorResolved {
                monitor: "web".into(),
                at: 9_000,
            },
            "h",
            "s",
        );
        assert_eq!(
            (e.kind(), e.id.as_str(), e.subject.as_str()),
            ("monitor_resolved", "web:resolved:9000", "web")
        );
        assert_eq!(e.time, rfc3339(9_000));
    }

    #[test]
    fn a_scan_summary_reports_the_scans_facts() {
        let scan = ScanFacts {
            sweep: 1_000,
            monitor: "web".into(),
            host: "web.example".into(),
            addresses: [(
                "198.18.0.2".parse().unwrap(),
                AddressReplies {
                    reachable: true,
                    open: [6379].into(),
                    closed: [443].into(),
                },
            )]
            .into(),
            scope: Scope::Ports([443, 6379].into()),
            started: 1_000,
            finished: 1_500,
            inconclusive: Some("sweep abandoned (stopped)".into()),
            retries: Some(RetryOutcome {
                loss: LossCounts {
                    first_sent: 2000,
                    first_answered: 1000,
                    retry_due: 2000,
                    retry_answered: 50,
                },
                rounds: 1,
            }),
        };
        let e = scan_envelope(7, &scan, "palisade://x");
        assert_eq!((e.kind(), e.id.as_str()), ("scan", "web:scan:1000:7"));
        assert_eq!(e.time, rfc3339(1_500));
        assert_eq!(
            e.data,
            EventData::Scan(ScanReport {
                monitor: "web".into(),
                host: "web.example".into(),
                scan_kind: "recheck".into(),
                started: rfc3339(1_000),
                finished: rfc3339(1_500),
                conclusive: false,
                reachable: true,
                addresses: vec![AddressReport {
                    address: "198.18.0.2".into(),
                    reachable: true,
                    open_ports: "6379".into(),
                    open_count: 1,
                }],
                note: Some("sweep abandoned (stopped)".into()),
                estimated_loss: Some(0.05),
                retry_rounds: Some(1),
                // One open port, both attempts lost: 0.05^2 / (1 - 0.05^2).
                expected_misses: Some(0.002506),
            })
        );
        let row = outbox_entry(&e);
        assert_eq!(
            (row.id.as_str(), row.kind.as_str()),
            ("web:scan:1000:7", "scan")
        );
        assert_eq!(serde_json::from_str::<Envelope>(&row.payload).unwrap(), e);
    }
}
