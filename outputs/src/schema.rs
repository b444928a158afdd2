//! The versioned event schema: a CloudEvents 1.0 [`Envelope`] around
//! [`EventData`], encoded as JSON (the CloudEvents JSON event format,
//! structured mode) or MessagePack (the same value, value for value).
//!
//! The wire contract is documented in `outputs/README.md`. In short:
//!
//! * In JSON an envelope is a CloudEvents 1.0 event in structured mode:
//!   `specversion`, `id`, `source` (a URI reference), `type`,
//!   `datacontenttype` (`application/json`), `subject` (absent when empty),
//!   `time` (RFC 3339) and `data`. Its `Content-Type` is
//!   `application/cloudevents+json` ([`PayloadFormat::content_type`]), as the
//!   CloudEvents HTTP and NATS bindings want for structured mode.
//! * MessagePack has no CloudEvents event format: a MessagePack payload is
//!   the JSON event transcoded, map for object, so it says
//!   `datacontenttype: application/json` too, and converting it to JSON
//!   gives the structured-mode event.
//! * `type` is `io.palisade.<kind>.v<SCHEMA_VERSION>`; [`decode`] rejects an
//!   envelope whose `type` carries any other version (or a kind that disagrees
//!   with `data.kind`) with [`SchemaError::UnsupportedType`] /
//!   [`SchemaError::TypeMismatch`], so a consumer never silently misreads a
//!   future, incompatible schema.
//! * NATS subjects are `<prefix>.events.<kind>.<monitor>` and
//!   `<prefix>.scans.<monitor>` ([`Envelope::nats_subject`]).

use serde::{Deserialize, Serialize};

/// The version carried in every envelope's `type` (`...v2`). Version 2
/// added the host events, `ports_changed` and addresses, and changed the
/// scan summary (one entry per address) and incident ids (with the address).
pub const SCHEMA_VERSION: u32 = 2;

/// The CloudEvents spec version written into `specversion`.
pub const SPEC_VERSION: &str = "1.0";

/// The `datacontenttype` of every envelope: `data` is a JSON value (in
/// MessagePack, the same value transcoded).
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// The prefix of every envelope `type`.
pub const TYPE_PREFIX: &str = "io.palisade.";

/// The HTTP header carrying the envelope [`id`](Envelope::id) on every
/// webhook POST, from the webhook sink and from `palisade-alert`'s webhook
/// dispatcher alike, so that a receiver can drop a re-sent event.
///
/// `webhook-id`, the id header of the Standard Webhooks convention
/// (<https://www.standardwebhooks.com/>), which also signs it together with
/// `webhook-timestamp` and the body (`webhook-signature`); receivers and
/// their libraries de-duplicate by it.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";

/// One event, a CloudEvents 1.0 event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always `"1.0"`.
    pub specversion: String,
    /// Stable event id, unique per event (the same on a re-send); doubles as
    /// the `Nats-Msg-Id` header and the webhook [`WEBHOOK_ID_HEADER`] for
    /// de-duplication.
    pub id: String,
    /// `"palisade://<name of the host running palisade>"`, a URI reference
    /// ([`Envelope::new`] percent-encodes what a URI may not hold).
    pub source: String,
    /// `"io.palisade.<kind>.v2"`, e.g. `"io.palisade.unexpected_port_open.v2"`.
    #[serde(rename = "type")]
    pub ty: String,
    /// [`DATA_CONTENT_TYPE`]. Envelopes from producers that did not write it
    /// read as if they had (their `data` is the same JSON value).
    #[serde(default = "data_content_type")]
    pub datacontenttype: String,
    /// `"<monitor>/<address>:<port>"` for port events, `"<monitor>/<address>"`
    /// for host events, `"<monitor>"` otherwise; empty (and then left out of
    /// the encoding, as CloudEvents wants no empty `subject`) for the
    /// scanner's own `scan_failed` / `scan_recovered`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// RFC 3339 UTC time of the event.
    pub time: String,
    /// The payload, tagged by `kind`.
    pub data: EventData,
}

/// The payload of an [`Envelope`], internally tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventData {
    /// A port that is not on the expected list was confirmed open.
    UnexpectedPortOpen(PortEvent),
    /// A port on the expected list was confirmed not open.
    ExpectedPortDown(PortEvent),
    /// A port incident ended.
    PortResolved(PortEvent),
    /// An address answered nothing (no echo, no SYN-ACK, no RST) in
    /// `confirm` consecutive scans; lists the expected ports it takes down.
    HostUnreachable(HostEvent),
    /// An address answered SYN-ACK on more unexpected ports than its
    /// threshold (a SYN proxy, tarpit or scrubber) in `confirm` scans.
    HostAnswersAllPorts(HostEvent),
    /// A `host_unreachable` incident ended: the address answers again.
    HostReachable(HostEvent),
    /// A `host_answers_all_ports` incident ended.
    HostResolved(HostEvent),
    /// One scan had more per-port events than `max_port_events`: the first
    /// ones went out one by one, this lists every one of them as ranges.
    PortsChanged(PortsChangedEvent),
    /// The monitor's last open incident resolved: everything is back to
    /// expected.
    MonitorResolved(MonitorEvent),
    /// Sweeps fail or come back inconclusive: nothing is being watched.
    ScanFailed(HealthEvent),
    /// A sweep succeeded again (`scan_failed` ended).
    ScanRecovered(HealthEvent),
    /// A monitor had no conclusive full scan for more than twice its period.
    MonitorStale(HealthEvent),
    /// The stale monitor was scanned conclusively again (or removed).
    MonitorFresh(HealthEvent),
    /// The summary of one scan.
    Scan(ScanReport),
}

/// How urgent an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A whole host is down.
    Critical,
    /// A security finding: an unexpected open port, a host answering on
    /// every port.
    High,
    Normal,
}

impl Severity {
    /// The snake_case name: `"critical"`, `"high"` or `"normal"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Normal => "normal",
        }
    }
}

/// A port incident, opened or resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEvent {
    pub monitor: String,
    pub host: String,
    /// The address the port belongs to (a host name has one per A/AAAA
    /// record).
    #[serde(default)]
    pub address: String,
    pub port: u16,
    /// `"open"`, `"closed"` or `"filtered"`, when known.
    pub state: Option<String>,
    /// Whether the port is on the expected-open list.
    pub expected: bool,
    pub first_seen: String,
    pub confirmed_at: String,
    pub resolved_at: Option<String>,
    pub incident_id: String,
    /// `"expected_port_down"` or `"unexpected_port_open"`.
    pub incident_kind: String,
    pub severity: Severity,
    /// For resolutions: `"observed"`, `"config_changed"`,
    /// `"monitor_removed"` or `"address_removed"`.
    pub reason: Option<String>,
}

/// A host incident (about one address), opened or resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvent {
    pub monitor: String,
    pub host: String,
    pub address: String,
    pub first_seen: String,
    pub confirmed_at: String,
    pub resolved_at: Option<String>,
    pub incident_id: String,
    /// `"host_unreachable"` or `"host_answers_all_ports"`.
    pub incident_kind: String,
    pub severity: Severity,
    /// `host_unreachable`: the expected ports it takes down;
    /// `host_answers_all_ports`: the unexpected ports that answered; as
    /// ranges, e.g. `"1-21,23-65535"`.
    pub ports: String,
    /// How many ports `ports` holds.
    pub port_count: u64,
    /// For resolutions: as [`PortEvent::reason`].
    pub reason: Option<String>,
    /// One line for humans.
    pub message: String,
}

/// An event about Palisade's own health (`scan_failed`, `scan_recovered`,
/// `monitor_stale`, `monitor_fresh`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEvent {
    /// The monitor, for `monitor_stale` / `monitor_fresh`; `""` for the
    /// scanner's own events.
    pub monitor: String,
    /// The monitor's host; `""` for the scanner's own events.
    pub host: String,
    pub incident_id: String,
    /// `"scan_failed"` or `"monitor_stale"`.
    pub incident_kind: String,
    pub severity: Severity,
    /// When the incident began.
    pub first_seen: String,
    pub resolved_at: Option<String>,
    /// For resolutions: `"observed"` or `"monitor_removed"`.
    pub reason: Option<String>,
    /// The sweep's error, for `scan_failed` / `scan_recovered`.
    pub error: Option<String>,
    /// One line for humans.
    pub message: String,
}

/// The summary of one scan's per-port events when there were more than
/// `max_port_events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsChangedEvent {
    pub monitor: String,
    pub host: String,
    /// Every per-port event of the scan, grouped by address and kind.
    pub changes: Vec<PortsChange>,
    /// How many per-port events went out one by one.
    pub sent: u32,
    /// How many per-port events the scan had in all.
    pub total: u32,
    /// `high` when it holds an unexpected open port, else `normal`.
    pub severity: Severity,
}

/// The ports of one address with one kind of per-port event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsChange {
    pub address: String,
    /// `"unexpected_port_open"`, `"expected_port_down"` or `"port_resolved"`.
    pub kind: String,
    /// As ranges, e.g. `"8000-8299"`.
    pub ports: String,
    pub count: u64,
}

/// A monitor-level event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    pub monitor: String,
    pub host: String,
    pub message: String,
}

/// The summary of one scan of one monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanReport {
    pub monitor: String,
    pub host: String,
    /// `"full"` or `"recheck"`.
    pub scan_kind: String,
    pub started: String,
    pub finished: String,
    pub conclusive: bool,
    /// Whether any address answered.
    pub reachable: bool,
    /// What the host resolved to, and what each address answered; empty if
    /// it did not resolve.
    pub addresses: Vec<AddressReport>,
    pub note: Option<String>,
    /// The sweep's estimated reply loss per attempt (probe or answer lost;
    /// `0.05` is 5%), from the ports that answered; `None` when the scanner
    /// had no estimate (no retries, too few answers, an older producer).
    #[serde(default)]
    pub estimated_loss: Option<f64>,
    /// The retry rounds the sweep gave silent ports of answering hosts (the
    /// configured retries, more with adaptive retries); `None` when nothing
    /// was probed.
    #[serde(default)]
    pub retry_rounds: Option<u32>,
    /// Open ports of this scan expectedly missed (every attempt lost):
    /// `open · q / (1 - q)` over its addresses, `q = estimated_loss ^
    /// (retry_rounds + 1)`; `None` without an estimate.
    #[serde(default)]
    pub expected_misses: Option<f64>,
}

/// What one address answered in one scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressReport {
    pub address: String,
    /// Whether it answered at all (echo, SYN-ACK or RST).
    pub reachable: bool,
    /// The ports in scope that answered SYN-ACK, as ranges (`"22,80,443"`).
    pub open_ports: String,
    pub open_count: u64,
}

/// The times and words of an incident event (port, host or health),
/// whatever its kind: what a consumer shows about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentFacts<'a> {
    /// When the deviation was first seen.
    pub first_seen: &'a str,
    /// When it was confirmed (port and host incidents).
    pub confirmed_at: Option<&'a str>,
    /// When it ended (resolutions).
    pub resolved_at: Option<&'a str>,
    /// Why it ended (resolutions).
    pub reason: Option<&'a str>,
    /// The detected port state (port events).
    pub state: Option<&'a str>,
    /// One line for humans (host and health events).
    pub message: Option<&'a str>,
}

impl EventData {
    /// All kinds, in declaration order.
    pub const KINDS: [&'static str; 14] = [
        "unexpected_port_open",
        "expected_port_down",
        "port_resolved",
        "host_unreachable",
        "host_answers_all_ports",
        "host_reachable",
        "host_resolved",
        "ports_changed",
        "monitor_resolved",
        "scan_failed",
        "scan_recovered",
        "monitor_stale",
        "monitor_fresh",
        "scan",
    ];

    /// The snake_case kind, as in the `kind` tag and the `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventData::UnexpectedPortOpen(_) => "unexpected_port_open",
            EventData::ExpectedPortDown(_) => "expected_port_down",
            EventData::PortResolved(_) => "port_resolved",
            EventData::HostUnreachable(_) => "host_unreachable",
            EventData::HostAnswersAllPorts(_) => "host_answers_all_ports",
            EventData::HostReachable(_) => "host_reachable",
            EventData::HostResolved(_) => "host_resolved",
            EventData::PortsChanged(_) => "ports_changed",
            EventData::MonitorResolved(_) => "monitor_resolved",
            EventData::ScanFailed(_) => "scan_failed",
            EventData::ScanRecovered(_) => "scan_recovered",
            EventData::MonitorStale(_) => "monitor_stale",
            EventData::MonitorFresh(_) => "monitor_fresh",
            EventData::Scan(_) => "scan",
        }
    }

    /// The monitor the event is about.
    pub fn monitor(&self) -> &str {
        self.monitor_and_host().0
    }

    /// The monitored host, as configured.
    pub fn host(&self) -> &str {
        self.monitor_and_host().1
    }

    /// The monitor and its host, whatever the kind.
    fn monitor_and_host(&self) -> (&str, &str) {
        match self {
            EventData::UnexpectedPortOpen(p)
            | EventData::ExpectedPortDown(p)
            | EventData::PortResolved(p) => (&p.monitor, &p.host),
            EventData::HostUnreachable(h)
            | EventData::HostAnswersAllPorts(h)
            | EventData::HostReachable(h)
            | EventData::HostResolved(h) => (&h.monitor, &h.host),
            EventData::PortsChanged(p) => (&p.monitor, &p.host),
            EventData::MonitorResolved(m) => (&m.monitor, &m.host),
            EventData::ScanFailed(h)
            | EventData::ScanRecovered(h)
            | EventData::MonitorStale(h)
            | EventData::MonitorFresh(h) => (&h.monitor, &h.host),
            EventData::Scan(s) => (&s.monitor, &s.host),
        }
    }

    /// The host event's data, for host events.
    pub fn host_event(&self) -> Option<&HostEvent> {
        match self {
            EventData::HostUnreachable(h)
            | EventData::HostAnswersAllPorts(h)
            | EventData::HostReachable(h)
            | EventData::HostResolved(h) => Some(h),
            _ => None,
        }
    }

    /// The address the event is about: for port and host events.
    pub fn address(&self) -> Option<&str> {
        self.port_event()
            .map(|p| p.address.as_str())
            .or_else(|| self.host_event().map(|h| h.address.as_str()))
            .filter(|a| !a.is_empty())
    }

    /// The health event's data, for health events.
    pub fn health_event(&self) -> Option<&HealthEvent> {
        match self {
            EventData::ScanFailed(h)
            | EventData::ScanRecovered(h)
            | EventData::MonitorStale(h)
            | EventData::MonitorFresh(h) => Some(h),
            _ => None,
        }
    }

    /// The incident the event opens or ends, as (incident id, incident
    /// kind): for port, host and health events.
    pub fn incident(&self) -> Option<(&str, &str)> {
        if let Some(p) = self.port_event() {
            return Some((&p.incident_id, &p.incident_kind));
        }
        if let Some(h) = self.host_event() {
            return Some((&h.incident_id, &h.incident_kind));
        }
        self.health_event()
            .map(|h| (h.incident_id.as_str(), h.incident_kind.as_str()))
    }

    /// The facts of a port, host or health event.
    pub fn incident_facts(&self) -> Option<IncidentFacts<'_>> {
        if let Some(p) = self.port_event() {
            return Some(IncidentFacts {
                first_seen: &p.first_seen,
                confirmed_at: Some(&p.confirmed_at),
                resolved_at: p.resolved_at.as_deref(),
                reason: p.reason.as_deref(),
                state: p.state.as_deref(),
                message: None,
            });
        }
        if let Some(h) = self.host_event() {
            return Some(IncidentFacts {
                first_seen: &h.first_seen,
                confirmed_at: Some(&h.confirmed_at),
                resolved_at: h.resolved_at.as_deref(),
                reason: h.reason.as_deref(),
                state: None,
                message: Some(&h.message),
            });
        }
        self.health_event().map(|h| IncidentFacts {
            first_seen: &h.first_seen,
            confirmed_at: None,
            resolved_at: h.resolved_at.as_deref(),
            reason: h.reason.as_deref(),
            state: None,
            message: Some(&h.message),
        })
    }

    /// The incident id, for port, host and health events.
    pub fn incident_id(&self) -> Option<&str> {
        self.incident().map(|(id, _)| id)
    }

    /// Whether the event ends an incident (`port_resolved`,
    /// `host_reachable`, `host_resolved`, `scan_recovered`, `monitor_fresh`)
    /// or a monitor's incidents (`monitor_resolved`).
    pub fn is_resolution(&self) -> bool {
        matches!(
            self,
            EventData::PortResolved(_)
                | EventData::HostReachable(_)
                | EventData::HostResolved(_)
                | EventData::MonitorResolved(_)
                | EventData::ScanRecovered(_)
                | EventData::MonitorFresh(_)
        )
    }

    /// The port event's severity; [`Severity::Normal`] for other kinds.
    pub fn severity(&self) -> Severity {
        match self {
            EventData::UnexpectedPortOpen(p)
            | EventData::ExpectedPortDown(p)
            | EventData::PortResolved(p) => p.severity,
            EventData::HostUnreachable(h)
            | EventData::HostAnswersAllPorts(h)
            | EventData::HostReachable(h)
            | EventData::HostResolved(h) => h.severity,
            EventData::PortsChanged(p) => p.severity,
            EventData::ScanFailed(h)
            | EventData::ScanRecovered(h)
            | EventData::MonitorStale(h)
            | EventData::MonitorFresh(h) => h.severity,
            EventData::MonitorResolved(_) | EventData::Scan(_) => Severity::Normal,
        }
    }

    /// The port event's data, for port events.
    pub fn port_event(&self) -> Option<&PortEvent> {
        match self {
            EventData::UnexpectedPortOpen(p)
            | EventData::ExpectedPortDown(p)
            | EventData::PortResolved(p) => Some(p),
            _ => None,
        }
    }

    /// The port, for port events.
    pub fn port(&self) -> Option<u16> {
        self.port_event().map(|p| p.port)
    }
}

/// The CloudEvents `subject`: `"{monitor}/{address}:{port}"` for a port
/// event (`[v6]:port` for IPv6), `"{monitor}/{address}"` for a host event,
/// the monitor otherwise.
fn subject_of(data: &EventData) -> String {
    let monitor = data.monitor();
    match (data.address(), data.port()) {
        (Some(address), Some(port)) if address.contains(':') => {
            format!("{monitor}/[{address}]:{port}")
        }
        (Some(address), Some(port)) => format!("{monitor}/{address}:{port}"),
        (None, Some(port)) => format!("{monitor}/{port}"),
        (Some(address), None) => format!("{monitor}/{address}"),
        (None, None) => monitor.to_string(),
    }
}

fn data_content_type() -> String {
    DATA_CONTENT_TYPE.to_string()
}

/// `text` as a URI reference (RFC 3986), for `source`: a leading scheme
/// (`palisade:`) is kept, and in the rest every byte other than an
/// unreserved character, a sub-delimiter, `/`, `@` (and `:` after a
/// scheme) or a valid `%XX` escape is percent-encoded, so a host name with
/// a space, `#`, `%` or a non-ASCII letter still gives a valid
/// `palisade://...`. Text that already is such a reference is unchanged.
pub fn uri_reference(text: &str) -> String {
    let scheme_end = text.find(':').filter(|&end| {
        let scheme = &text.as_bytes()[..end];
        scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
    });
    let (scheme, rest) = match scheme_end {
        Some(end) => text.split_at(end + 1),
        None => ("", text),
    };
    let bytes = rest.as_bytes();
    let mut out = String::with_capacity(text.len());
    out.push_str(scheme);
    for (i, &b) in bytes.iter().enumerate() {
        let escape = b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        let plain = b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=/@".contains(&b)
            || (b == b':' && !scheme.is_empty());
        if plain || escape {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Envelope {
    /// Builds an envelope, filling `specversion`, `type` (with
    /// [`SCHEMA_VERSION`]), `datacontenttype` and `subject` from `data`;
    /// `source` becomes a [URI reference](uri_reference).
    pub fn new(id: String, source: String, time: String, data: EventData) -> Envelope {
        let ty = type_for(data.kind());
        let subject = subject_of(&data);
        Envelope {
            specversion: SPEC_VERSION.to_string(),
            id,
            source: uri_reference(&source),
            ty,
            datacontenttype: DATA_CONTENT_TYPE.to_string(),
            subject,
            time,
            data,
        }
    }

    /// The kind of the payload.
    pub fn kind(&self) -> &'static str {
        self.data.kind()
    }

    /// `"<prefix>.events.<kind>.<monitor>"` for events, `"<prefix>.scans.<monitor>"` for scan summaries.
    ///
    /// The monitor token is sanitised for NATS: any character other than
    /// ASCII letters, digits, `-` and `_` becomes `_` (monitor names are
    /// already restricted to those by the engine's config), and an empty name
    /// becomes `_`.
    pub fn nats_subject(&self, prefix: &str) -> String {
        let monitor = subject_token(self.data.monitor());
        match &self.data {
            EventData::Scan(_) => format!("{prefix}.scans.{monitor}"),
            _ => format!("{prefix}.events.{}.{monitor}", self.kind()),
        }
    }

    /// Checks that `specversion` and `type` are ones this build understands
    /// and agree with `data`. [`decode`] calls this.
    pub fn validate(&self) -> Result<(), SchemaError> {
        if self.specversion != SPEC_VERSION {
            return Err(SchemaError::UnsupportedSpecVersion(
                self.specversion.clone(),
            ));
        }
        let (kind, version) = parse_type(&self.ty)?;
        if version != SCHEMA_VERSION {
            return Err(SchemaError::UnsupportedType {
                ty: self.ty.clone(),
                supported: SCHEMA_VERSION,
            });
        }
        if kind != self.kind() {
            return Err(SchemaError::TypeMismatch {
                ty: self.ty.clone(),
                kind: self.kind(),
            });
        }
        Ok(())
    }
}

/// `io.palisade.<kind>.v<SCHEMA_VERSION>`.
pub fn type_for(kind: &str) -> String {
    format!("{TYPE_PREFIX}{kind}.v{SCHEMA_VERSION}")
}

/// Splits `io.palisade.<kind>.v<N>` into `(kind, N)`.
pub fn parse_type(ty: &str) -> Result<(&str, u32), SchemaError> {
    let bad = || SchemaError::MalformedType(ty.to_string());
    let rest = ty.strip_prefix(TYPE_PREFIX).ok_or_else(bad)?;
    let (kind, version) = rest.rsplit_once('.').ok_or_else(bad)?;
    let version = version
        .strip_prefix('v')
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(bad)?;
    if kind.is_empty() {
        return Err(bad());
    }
    Ok((kind, version))
}

fn subject_token(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The payload encoding. JSON is the default: what `nats sub`, a webhook
/// receiver or a CloudEvents SDK reads as it is; MessagePack is smaller,
/// for volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// MessagePack with named fields (maps), `application/msgpack`.
    MsgPack,
    /// The CloudEvents JSON event format (structured mode),
    /// `application/cloudevents+json`.
    #[default]
    Json,
}

impl PayloadFormat {
    /// The `Content-Type` header value: for JSON the structured-mode type of
    /// the CloudEvents HTTP and NATS bindings (by which a CloudEvents SDK
    /// tells structured from binary mode).
    pub fn content_type(self) -> &'static str {
        match self {
            PayloadFormat::MsgPack => "application/msgpack",
            PayloadFormat::Json => "application/cloudevents+json; charset=utf-8",
        }
    }

    /// Parses a `Content-Type` value (parameters such as `; charset=utf-8`
    /// are ignored; `application/x-msgpack` and `application/vnd.msgpack`
    /// are accepted as MessagePack, `application/json` (older producers) and
    /// `application/cloudevents+json` as JSON).
    pub fn from_content_type(value: &str) -> Option<PayloadFormat> {
        let mime = value.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/msgpack")
            || mime.eq_ignore_ascii_case("application/x-msgpack")
            || mime.eq_ignore_ascii_case("application/vnd.msgpack")
        {
            Some(PayloadFormat::MsgPack)
        } else if mime.eq_ignore_ascii_case("application/json")
            || mime.eq_ignore_ascii_case("application/cloudevents+json")
        {
            Some(PayloadFormat::Json)
        } else {
            None
        }
    }
}

/// Errors from encoding, decoding or validating an envelope.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot encode event as MessagePack: {0}")]
    EncodeMsgPack(#[from] rmp_serde::encode::Error),
    #[error("cannot encode event as JSON: {0}")]
    EncodeJson(#[source] serde_json::Error),
    #[error("cannot decode MessagePack event: {0}")]
    DecodeMsgPack(#[from] rmp_serde::decode::Error),
    #[error("cannot decode JSON event: {0}")]
    DecodeJson(#[source] serde_json::Error),
    #[error("unsupported CloudEvents specversion {0:?} (expected \"1.0\")")]
    UnsupportedSpecVersion(String),
    #[error("malformed event type {0:?} (expected \"io.palisade.<kind>.v<N>\")")]
    MalformedType(String),
    #[error(
        "unsupported event type {ty:?}: this build understands schema version {supported} only"
    )]
    UnsupportedType { ty: String, supported: u32 },
    #[error("event type {ty:?} does not match its data kind {kind:?}")]
    TypeMismatch { ty: String, kind: &'static str },
}

/// Encodes an envelope. MessagePack uses `rmp_serde::to_vec_named`, so
/// structs are maps keyed by field name.
pub fn encode(e: &Envelope, f: PayloadFormat) -> Result<Vec<u8>, SchemaError> {
    match f {
        PayloadFormat::MsgPack => Ok(rmp_serde::to_vec_named(e)?),
        PayloadFormat::Json => serde_json::to_vec(e).map_err(SchemaError::EncodeJson),
    }
}

/// Decodes and [validates](Envelope::validate) an envelope.
///
/// An envelope of another schema version is rejected with
/// [`SchemaError::UnsupportedType`] even when its `data` no longer parses
/// (e.g. a kind added in a later version), so the error names the version
/// rather than a missing field.
pub fn decode(bytes: &[u8], f: PayloadFormat) -> Result<Envelope, SchemaError> {
    let full: Result<Envelope, SchemaError> = match f {
        PayloadFormat::MsgPack => rmp_serde::from_slice(bytes).map_err(SchemaError::from),
        PayloadFormat::Json => serde_json::from_slice(bytes).map_err(SchemaError::DecodeJson),
    };
    match full {
        Ok(envelope) => {
            envelope.validate()?;
            Ok(envelope)
        }
        Err(err) => {
            // Explain a version mismatch first, if the head is readable.
            let head: Option<Head> = match f {
                PayloadFormat::MsgPack => rmp_serde::from_slice(bytes).ok(),
                PayloadFormat::Json => serde_json::from_slice(bytes).ok(),
            };
            if let Some(head) = head {
                if head.specversion != SPEC_VERSION {
                    return Err(SchemaError::UnsupportedSpecVersion(head.specversion));
                }
                let (_, version) = parse_type(&head.ty)?;
                if version != SCHEMA_VERSION {
                    return Err(SchemaError::UnsupportedType {
                        ty: head.ty,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            Err(err)
        }
    }
}

/// The version-bearing fields of an envelope, read when the whole fails.
#[derive(Deserialize)]
struct Head {
    specversion: String,
    #[serde(rename = "type")]
    ty: String,
}

#[cfg(test)]
pub(crate) mod tests;
