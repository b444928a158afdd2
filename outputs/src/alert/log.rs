//! The `log` dispatcher: one human line per event.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{DispatchError, Dispatched, Dispatcher};
use crate::schema::{Envelope, EventData, PortEvent, ScanReport, Severity};

/// Writes [`human_line`]s to stdout (or any writer).
pub struct LogDispatcher {
    out: Mutex<Box<dyn Write + Send>>,
}

impl fmt::Debug for LogDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogDispatcher").finish_non_exhaustive()
    }
}

impl LogDispatcher {
    /// Lines go to stdout.
    pub fn stdout() -> Self {
        Self::to_writer(Box::new(std::io::stdout()))
    }

    /// Lines go to `out` (flushed after each line).
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        LogDispatcher {
            out: Mutex::new(out),
        }
    }
}

#[async_trait]
impl Dispatcher for LogDispatcher {
    fn name(&self) -> &str {
        "log"
    }

    async fn dispatch(&self, event: &Envelope) -> Result<Dispatched, DispatchError> {
        let mut line = human_line(event);
        line.push('\n');
        // A poisoned lock only means another write panicked; the writer
        // itself is still usable.
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        out.write_all(line.as_bytes())?;
        out.flush()?;
        Ok(Dispatched::Delivered)
    }
}

/// One line describing an event, e.g.
///
/// ```text
/// 2026-11-29T12:00:00Z HIGH unexpected_port_open web-1 198.18.0.2:6379 open (first seen 2026-11-29T11:55:00Z, confirmed 2026-11-29T12:00:00Z, incident web-1-6379-1796…)
/// 2026-11-29T13:00:00Z RESOLVED port_resolved web-1 198.18.0.2:6379 closed (unexpected_port_open since 2026-11-29T11:55:00Z, resolved 2026-11-29T13:00:00Z, observed, incident web-1-6379-1796…)
/// 2026-11-29T13:00:00Z RESOLVED monitor_resolved web-1 198.18.0.2: all ports back to their expected states
/// 2026-11-29T13:00:00Z SCAN web-1 198.18.0.2 full conclusive reachable, 2 open: 22,80
/// ```
///
/// Text from the event is [escaped](super::escape): a line is always one
/// line and never drives the terminal.
pub fn human_line(e: &Envelope) -> String {
    let time = clean(&e.time);
    match &e.data {
        EventData::UnexpectedPortOpen(p) | EventData::ExpectedPortDown(p) => format!(
            "{time} {} {} {} {} {} (first seen {}, confirmed {}, incident {})",
            severity_word(p.severity),
            e.kind(),
            clean(&p.monitor),
            endpoint(&p.host, p.port),
            state(p),
            clean(&p.first_seen),
            clean(&p.confirmed_at),
            clean(&p.incident_id),
        ),
        EventData::PortResolved(p) => {
            let mut details = format!(
                "{} since {}, resolved {}",
                clean(&p.incident_kind),
                clean(&p.first_seen),
                p.resolved_at.as_deref().map_or(Cow::Borrowed("?"), clean),
            );
            if let Some(reason) = &p.reason {
                details.push_str(", ");
                details.push_str(&clean(reason));
            }
            format!(
                "{time} RESOLVED port_resolved {} {} {} ({details}, incident {})",
                clean(&p.monitor),
                endpoint(&p.host, p.port),
                state(p),
                clean(&p.incident_id),
            )
        }
        EventData::HostUnreachable(h) | EventData::HostAnswersAllPorts(h) => format!(
            "{time} {} {} {} {} ({} ports: {}; first seen {}, confirmed {}, incident {})",
            severity_word(h.severity),
            e.kind(),
            clean(&h.monitor),
            clean(&h.address),
            h.port_count,
            clean(&h.ports),
            clean(&h.first_seen),
            clean(&h.confirmed_at),
            clean(&h.incident_id),
        ),
        EventData::HostReachable(h) | EventData::HostResolved(h) => format!(
            "{time} RESOLVED {} {} {} ({} since {}, resolved {}, {}, incident {})",
            e.kind(),
            clean(&h.monitor),
            clean(&h.address),
            clean(&h.incident_kind),
            clean(&h.first_seen),
            h.resolved_at.as_deref().map_or(Cow::Borrowed("?"), clean),
            h.reason.as_deref().map_or(Cow::Borrowed("-"), clean),
            clean(&h.incident_id),
        ),
        EventData::PortsChanged(p) => {
            let changes: Vec<String> = p
                .changes
                .iter()
                .map(|c| {
                    format!(
                        "{} {} {}",
                        clean(&c.address),
                        clean(&c.kind),
                        clean(&c.ports)
                    )
                })
                .collect();
            format!(
                "{time} {} ports_changed {} ({} per-port events, {} sent one by one): {}",
                severity_word(p.severity),
                clean(&p.monitor),
                p.total,
                p.sent,
                changes.join("; "),
            )
        }
        EventData::MonitorResolved(m) => format!(
            "{time} RESOLVED monitor_resolved {} {}: {}",
            clean(&m.monitor),
            clean(&m.host),
            clean(&m.message),
        ),
        EventData::ScanFailed(h) | EventData::MonitorStale(h) => format!(
            "{time} {} {} {}: {} (since {}, incident {})",
            severity_word(h.severity),
            e.kind(),
            clean(&h.monitor),
            clean(&h.message),
            clean(&h.first_seen),
            clean(&h.incident_id),
        ),
        EventData::ScanRecovered(h) | EventData::MonitorFresh(h) => format!(
            "{time} RESOLVED {} {}: {} (since {}, resolved {}, incident {})",
            e.kind(),
            clean(&h.monitor),
            clean(&h.message),
            clean(&h.first_seen),
            h.resolved_at.as_deref().map_or(Cow::Borrowed("?"), clean),
            clean(&h.incident_id),
        ),
        EventData::Scan(s) => scan_line(&time, s),
    }
}

fn scan_line(time: &str, s: &ScanReport) -> String {
    let mut line = format!(
        "{time} SCAN {} {} {} {}",
        clean(&s.monitor),
        clean(&s.host),
        clean(&s.scan_kind),
        if s.conclusive {
            "conclusive"
        } else {
            "inconclusive"
        },
    );
    if s.addresses.is_empty() {
        line.push_str(" unresolved");
    }
    for a in &s.addresses {
        line.push_str(&format!(
            ", {} {} {} open",
            clean(&a.address),
            if a.reachable {
                "reachable"
            } else {
                "unreachable"
            },
            a.open_count,
        ));
        if a.open_count > 0 {
            const SHOWN: usize = 120;
            let ports = clean(&a.open_ports);
            line.push_str(": ");
            if ports.len() > SHOWN {
                let cut = ports
                    .char_indices()
                    .nth(SHOWN)
                    .map_or(ports.len(), |(i, _)| i);
                line.push_str(&ports[..cut]);
                line.push('…');
            } else {
                line.push_str(&ports);
            }
        }
    }
    if let Some(note) = &s.note {
        line.push_str(&format!(" ({})", clean(note)));
    }
    line
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRITICAL",
        Severity::High => "HIGH",
        Severity::Normal => "NORMAL",
    }
}

fn state(p: &PortEvent) -> Cow<'_, str> {
    p.state.as_deref().map_or(Cow::Borrowed("-"), clean)
}

/// `host:port`, `[v6]:port` for an IPv6 literal.
fn endpoint(host: &str, port: u16) -> String {
    let host = clean(host);
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `s` [escaped](super::escape) for one line; empty → `-`.
fn clean(s: &str) -> Cow<'_, str> {
    if s.is_empty() {
        Cow::Borrowed("-")
    } else {
        super::escape(s)
    }
}
