//! The monitor state machine: per monitor and per port, turn scan observations
//! into confirmed incidents, resolutions and a history of detected state changes.
//!
//! This module is **pure**: no I/O, no clocks, no randomness. Time
//! comes in as [`Millis`] (unix milliseconds) on every [`Observation`], so the
//! same inputs always give the same outputs. The whole state of one monitor is a
//! [`MonitorState`], which is serializable (serde) so the daemon can persist it
//! (e.g. as JSON in SQLite) next to the history and outbox rows a [`Step`]
//! produces, in the same transaction, and restore it after a crash.
//!
//! # Rules
//!
//! A monitor's host has one or more addresses (a name resolves to all its A
//! and AAAA records); each address has its own port states and findings, and
//! every rule below holds per address.
//!
//! * **Deviation.** For a port `p` in the scope of an observation, with detected
//!   state `s` (see [`AddressReplies::detected`]): `p` expected open and `s != Open`
//!   is an [`IncidentKind::ExpectedPortDown`]; `p` not expected and `s == Open` is
//!   an [`IncidentKind::UnexpectedPortOpen`]. Anything else is not a deviation.
//! * **Conclusive only.** An inconclusive observation (`conclusive == false`, the
//!   scanner's own fault) changes nothing: no history, no events, streaks neither
//!   advance nor reset. Its [`Step`] only repeats the pending re-check request.
//! * **Confirmation.** A deviation seen in `confirm` consecutive conclusive
//!   observations covering the port (full scans and re-checks alike) opens an
//!   [`Incident`] and emits [`Event::Opened`]. Observations whose scope doesn't
//!   include the port leave its streak untouched. A deviation of a *different*
//!   kind restarts the streak at 1. `confirm == 1` opens on the first deviation;
//!   a `confirm` of 0 (invalid, see [`MonitorSpec::validate`]) is treated as 1.
//!   Host findings are confirmed the same way, over full scans.
//! * **Resolution.** A conclusive observation that shows a port in its expected
//!   state resets the port's streak and resolves its open incident
//!   ([`Event::PortResolved`]). When a step closes the monitor's last open
//!   incident (port or host, on any address), [`Event::MonitorResolved`]
//!   follows ("everything back to expected").
//! * **Unreachable host.** An address that answered nothing (no echo reply, no
//!   SYN-ACK, no RST) in a full scan is unreachable: every expected port is
//!   recorded as `Filtered` (a port that is not open is not open), but no
//!   port streak advances or resets and no port incident opens or resolves,
//!   since nothing could be observed. `confirm` such scans in a row open one
//!   [`HostIncidentKind::HostUnreachable`] incident listing the expected
//!   ports it takes down: one event, not one per port. The first scan in
//!   which the address answers again resolves it (`host_reachable`) and
//!   port states continue from that scan as from any other. A re-check
//!   that heard nothing from an address says nothing about it (it probed
//!   a few ports that may all be filtered).
//! * **Hosts that answer every port.** More unexpected open ports than
//!   `answer_all_threshold` on one address in one full scan is one finding,
//!   [`HostIncidentKind::HostAnswersAllPorts`], carrying the answering
//!   ports as ranges. While a scan shows it, the address's unexpected ports
//!   are neither tracked nor counted (their incidents stay as they are);
//!   only expected ports are evaluated. The first full scan at or below the
//!   threshold resolves it (`host_resolved`) and evaluates every port again.
//! * **Event budget.** A step emits at most `max_port_events` per-port events
//!   (openings and port resolutions, the most urgent first); when there are
//!   more, one [`Event::PortsChanged`] lists every per-port event of the step
//!   as ranges. The state, the incidents and the history hold every port.
//! * **Addresses.** An address that appears starts fresh (normal confirmation,
//!   no alert for being new). A conclusive observation without an address the
//!   state knows resolves that address's incidents with
//!   [`Resolution::AddressRemoved`] and forgets it.
//! * **Configuration changes** are simply the next [`MonitorState::observe`]
//!   call with the new [`MonitorSpec`]: the state is keyed by address and
//!   port, not by spec, and every rule is evaluated against the spec passed in
//!   *now* (including a changed `confirm`, which applies to streaks already
//!   under way). An open incident whose kind the current spec can no longer
//!   produce for its port (an `expected_port_down` on a port no longer
//!   expected, an `unexpected_port_open` on a port now expected) resolves
//!   with [`Resolution::ConfigChanged`] the next time the port is in scope of
//!   a conclusive observation; if the port then deviates the other way, a new
//!   streak starts with that observation counted as 1.
//! * **Re-checks.** After an observation that leaves ports pending (a deviation
//!   seen, not yet confirmed), [`Step::recheck`] asks the daemon to re-check just
//!   those ports at `obs.at + recheck_ms`; with `recheck_ms == None` ("off") it
//!   is `None` and the next full scan confirms.
//! * **History.** Known states are tracked for expected ports and for ports that
//!   are (or were last seen) open, never for the sea of closed ports. Every
//!   detected change of a tracked port, and every port becoming tracked (from
//!   `None`), is reported as a [`StateChange`]. An unexpected port going from
//!   open to closed/filtered records that change and then stops being tracked.
//!
//! # Identifiers
//!
//! A port incident's id is `"{monitor}-{address}-{port}-{first_seen}"` (see
//! [`incident_id`]), a host incident's `"{monitor}-{address}-{kind}-{first_seen}"`
//! (see [`host_incident_id`]); event ids are derived from them (see
//! [`Event::id`]). They are stable across restarts and re-deliveries. They
//! are unique as long as the `at` of successive observations of one monitor
//! strictly increases, which the caller guarantees.

#[cfg(test)]
mod host_tests;
mod ports;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use litemap::LiteMap;
use serde::{Deserialize, Serialize};

pub use ports::{PortRanges, PortRangesError, Ports};
pub use view::{AddressView, Deviation, HostFinding, MonitorSummary, PortView, Reachability};

/// A point in time: milliseconds since the unix epoch, supplied by the caller.
pub type Millis = i64;

/// The configuration of one monitor, as far as the state machine cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorSpec {
    /// The monitor's name: a NATS-subject-safe token, unique in the config.
    pub name: String,
    /// The host to scan (address or name; opaque here).
    pub host: String,
    /// The TCP ports that should be open (1–65535). Every other port should not.
    pub expected_open: BTreeSet<u16>,
    /// Interval between full scans, in milliseconds (not used by the state
    /// machine itself; the daemon schedules with it).
    pub every_ms: u64,
    /// How many consecutive conclusive deviating observations confirm an
    /// incident. Must be at least 1.
    pub confirm: u32,
    /// Delay before re-checking ports with an unconfirmed deviation, in
    /// milliseconds; `None` ("off") waits for the next full scan.
    pub recheck_ms: Option<u64>,
    /// Send ICMP echo to the host's addresses in every sweep. Either way a
    /// host is reachable when it answered echo or any TCP probe.
    pub ping: bool,
    /// More unexpected open ports than this on one address in one full scan
    /// is one finding, `host_answers_all_ports`, instead of one per port.
    pub answer_all_threshold: u32,
    /// At most this many per-port events per scan; the rest go into one
    /// `ports_changed` summary.
    pub max_port_events: u32,
    /// The ports a full scan covers (`ports`, default all, 1-65535), with
    /// the expected ones always added ([`MonitorSpec::in_scan`]): a
    /// deliberate narrowing; a port outside is never observed.
    #[serde(default = "PortRanges::all")]
    pub scan_ports: PortRanges,
    /// With scan agents (`[cluster]`), only agents with this label scan the
    /// monitor (`agent_label`, e.g. `site=fra1`; a
    /// [`crate::cluster::valid_label`]); `None`: any agent
    /// ([`crate::cluster::ANY_LABEL`]). Without agents it changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_label: Option<String>,
}

/// Default [`MonitorSpec::every_ms`]: 12 hours.
pub const DEFAULT_EVERY_MS: u64 = 12 * 3_600_000;
/// Default [`MonitorSpec::confirm`].
pub const DEFAULT_CONFIRM: u32 = 2;
/// Default [`MonitorSpec::recheck_ms`]: 5 minutes.
pub const DEFAULT_RECHECK_MS: u64 = 300_000;
/// Default [`MonitorSpec::answer_all_threshold`].
pub const DEFAULT_ANSWER_ALL_THRESHOLD: u32 = 1_000;
/// Default [`MonitorSpec::max_port_events`].
pub const DEFAULT_MAX_PORT_EVENTS: u32 = 50;

impl Default for MonitorSpec {
    /// A monitor with no name, no host and no expected port, and every rule
    /// at its default.
    fn default() -> Self {
        MonitorSpec {
            name: String::new(),
            host: String::new(),
            expected_open: BTreeSet::new(),
            every_ms: DEFAULT_EVERY_MS,
            confirm: DEFAULT_CONFIRM,
            recheck_ms: Some(DEFAULT_RECHECK_MS),
            ping: true,
            answer_all_threshold: DEFAULT_ANSWER_ALL_THRESHOLD,
            max_port_events: DEFAULT_MAX_PORT_EVENTS,
            scan_ports: PortRanges::all(),
            agent_label: None,
        }
    }
}

/// A [`MonitorSpec`] that cannot be monitored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonitorSpecError {
    /// The name is empty or not made of ASCII letters, digits, `-` and `_`.
    #[error("monitor name {0:?} must be a non-empty token of ASCII letters, digits, '-' and '_'")]
    BadName(String),
    /// The host is empty.
    #[error("monitor {0}: host must not be empty")]
    EmptyHost(String),
    /// Port 0 is listed as expected open.
    #[error("monitor {0}: port 0 is not a valid TCP port")]
    PortZero(String),
    /// The check interval is zero.
    #[error("monitor {0}: check interval must be positive")]
    ZeroInterval(String),
    /// `confirm` is zero.
    #[error("monitor {0}: confirm must be at least 1")]
    ZeroConfirm(String),
}

impl MonitorSpec {
    /// Checks the spec: a token name (ASCII letters, digits, `-`, `_`, so it is
    /// safe in NATS subjects and in ids), a non-empty host, no port 0, a positive
    /// interval and `confirm >= 1`.
    pub fn validate(&self) -> Result<(), MonitorSpecError> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(MonitorSpecError::BadName(self.name.clone()));
        }
        if self.host.is_empty() {
            return Err(MonitorSpecError::EmptyHost(self.name.clone()));
        }
        if self.expected_open.contains(&0) {
            return Err(MonitorSpecError::PortZero(self.name.clone()));
        }
        if self.every_ms == 0 {
            return Err(MonitorSpecError::ZeroInterval(self.name.clone()));
        }
        if self.confirm == 0 {
            return Err(MonitorSpecError::ZeroConfirm(self.name.clone()));
        }
        Ok(())
    }

    /// Whether `port` is expected to be open.
    pub fn expects_open(&self, port: u16) -> bool {
        self.expected_open.contains(&port)
    }

    /// Whether a full scan of this monitor covers `port`: in `scan_ports`,
    /// or expected open.
    pub fn in_scan(&self, port: u16) -> bool {
        self.scan_ports.contains(port) || self.expects_open(port)
    }

    /// Whether a full scan covers every port (the default).
    pub fn scans_all_ports(&self) -> bool {
        self.scan_ports.count() == u64::from(u16::MAX)
    }

    /// The deviation, if any, of `port` detected in `state` under this spec.
    pub fn deviation(&self, port: u16, state: PortState) -> Option<IncidentKind> {
        match (self.expects_open(port), state) {
            (true, PortState::Open) | (false, PortState::Closed | PortState::Filtered) => None,
            (true, PortState::Closed | PortState::Filtered) => Some(IncidentKind::ExpectedPortDown),
            (false, PortState::Open) => Some(IncidentKind::UnexpectedPortOpen),
        }
    }

    /// The effective confirmation count: `confirm`, but at least 1.
    pub fn confirmations(&self) -> u32 {
        self.confirm.max(1)
    }

    /// Whether an incident of `kind` on `port` still makes sense under this
    /// spec (an `expected_port_down` needs the port expected, an
    /// `unexpected_port_open` needs it not expected).
    fn admits(&self, port: u16, kind: IncidentKind) -> bool {
        match kind {
            IncidentKind::ExpectedPortDown => self.expects_open(port),
            IncidentKind::UnexpectedPortOpen => !self.expects_open(port) && self.in_scan(port),
        }
    }
}

/// The detected state of one TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// A SYN-ACK came back: something listens.
    Open,
    /// An RST came back: nothing listens, but the host answers.
    Closed,
    /// No reply after retries (firewalled, or the host is unreachable).
    Filtered,
}

impl PortState {
    /// The snake_case name: `"open"`, `"closed"` or `"filtered"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Filtered => "filtered",
        }
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which ports an observation covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A full scan of all 65,535 ports.
    Full,
    /// A re-check of these ports only.
    Ports(BTreeSet<u16>),
}

impl Scope {
    /// Whether the scope covers `port`.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Self::Full => true,
            Self::Ports(ports) => ports.contains(&port),
        }
    }
}

/// What one address of a monitor's host answered in one scan.
///
/// For a port `p` in scope the detected state is `Open` if `p` is in `open`,
/// else `Closed` if in `closed` (RST seen), else `Filtered` (no reply).
/// Ports outside the scope are ignored, even if listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressReplies {
    /// Something answered: ICMP echo, or any TCP probe (SYN-ACK or RST).
    pub reachable: bool,
    /// Ports that answered SYN-ACK.
    pub open: Ports,
    /// Ports that answered RST (the planner keeps only those the state
    /// machine tracks).
    pub closed: Ports,
}

impl AddressReplies {
    /// The detected state of `port`, ignoring the scope (`Filtered` when
    /// nothing answered for it).
    pub fn detected(&self, port: u16) -> PortState {
        if self.open.contains(port) {
            PortState::Open
        } else if self.closed.contains(port) {
            PortState::Closed
        } else {
            PortState::Filtered
        }
    }
}

/// The result of one scan (full or re-check) of one monitor's host: what
/// each of its addresses answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The scan's id (carried into [`StateChange::scan_id`]).
    pub scan_id: i64,
    /// When the scan started (the time the caller attributes to it).
    pub at: Millis,
    /// Which ports the scan covered.
    pub scope: Scope,
    /// Whether the scan can be trusted; `false` means the scanner itself
    /// failed (send errors, reply-path drops, a name that did not resolve)
    /// and the observation is ignored.
    pub conclusive: bool,
    /// Every address the host has now (a name resolves to all its A and
    /// AAAA records), with what it answered. In a conclusive observation, an
    /// address the state knows and this map lacks has gone away.
    pub addresses: BTreeMap<IpAddr, AddressReplies>,
}

impl Observation {
    /// A conclusive observation of one address.
    pub fn of_address(
        scan_id: i64,
        at: Millis,
        scope: Scope,
        address: IpAddr,
        replies: AddressReplies,
    ) -> Observation {
        Observation {
            scan_id,
            at,
            scope,
            conclusive: true,
            addresses: BTreeMap::from([(address, replies)]),
        }
    }
}

/// How urgent an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The default.
    Normal,
    /// To be treated first: a security finding (an unexpected open port, a
    /// host that answers on every port).
    High,
    /// A whole host is down.
    Critical,
}

impl Priority {
    /// The snake_case name: `"normal"`, `"high"` or `"critical"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two kinds of deviation of one port, and so of port incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// An expected port is closed or filtered.
    ExpectedPortDown,
    /// A port not expected to be open is open.
    UnexpectedPortOpen,
}

impl IncidentKind {
    /// The snake_case name: `"expected_port_down"` or `"unexpected_port_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExpectedPortDown => "expected_port_down",
            Self::UnexpectedPortOpen => "unexpected_port_open",
        }
    }

    /// [`Priority::High`] for an unexpected open port, else [`Priority::Normal`].
    pub fn priority(&self) -> Priority {
        match self {
            Self::ExpectedPortDown => Priority::Normal,
            Self::UnexpectedPortOpen => Priority::High,
        }
    }
}

impl fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two kinds of finding about a whole address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostIncidentKind {
    /// Nothing answered: no echo reply, no SYN-ACK, no RST (availability).
    HostUnreachable,
    /// More unexpected ports than `answer_all_threshold` answered SYN-ACK: a
    /// SYN proxy, tarpit or scrubber in front of the host (security).
    HostAnswersAllPorts,
}

impl HostIncidentKind {
    /// The snake_case name: `"host_unreachable"` or `"host_answers_all_ports"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostUnreachable => "host_unreachable",
            Self::HostAnswersAllPorts => "host_answers_all_ports",
        }
    }

    /// The kind of the event that resolves it: `"host_reachable"` or
    /// `"host_resolved"`.
    pub fn resolved_kind(self) -> &'static str {
        match self {
            Self::HostUnreachable => "host_reachable",
            Self::HostAnswersAllPorts => "host_resolved",
        }
    }

    /// [`Priority::Critical`] for an unreachable host, [`Priority::High`]
    /// for one that answers on every port.
    pub fn priority(self) -> Priority {
        match self {
            Self::HostUnreachable => Priority::Critical,
            Self::HostAnswersAllPorts => Priority::High,
        }
    }
}

impl fmt::Display for HostIncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of the incident of `monitor` on `port` of `address` whose streak
/// began at `first_seen`: `"{monitor}-{address}-{port}-{first_seen}"`, e.g.
/// `"web-198.18.0.2-443-1700000000000"`.
///
/// Deterministic, so a replay after a crash gives the same id. Unique per
/// monitor as long as observation times strictly increase (a port's next
/// incident always starts its streak at a later observation).
pub fn incident_id(monitor: &str, address: IpAddr, port: u16, first_seen: Millis) -> String {
    format!("{monitor}-{address}-{port}-{first_seen}")
}

/// The id of a host incident: `"{monitor}-{address}-{kind}-{first_seen}"`.
pub fn host_incident_id(
    monitor: &str,
    address: IpAddr,
    kind: HostIncidentKind,
    first_seen: Millis,
) -> String {
    format!("{monitor}-{address}-{kind}-{first_seen}")
}

/// An address for state saved before addresses were tracked; replaced by the
/// first address observed.
fn unknown_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

/// A confirmed deviation of one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id, see [`incident_id`].
    pub id: String,
    /// The monitor's name.
    pub monitor: String,
    /// The address the port belongs to.
    #[serde(default = "unknown_address")]
    pub address: IpAddr,
    /// The deviating port.
    pub port: u16,
    /// Which kind of deviation.
    pub kind: IncidentKind,
    /// `at` of the first observation of the confirming streak.
    pub first_seen: Millis,
    /// `at` of the observation that confirmed it.
    pub confirmed_at: Millis,
    /// The detected state at confirmation.
    pub state: PortState,
}

/// A confirmed finding about a whole address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIncident {
    /// Stable id, see [`host_incident_id`].
    pub id: String,
    /// The monitor's name.
    pub monitor: String,
    /// The address.
    pub address: IpAddr,
    /// Which finding.
    pub kind: HostIncidentKind,
    /// `at` of the first observation of the confirming streak.
    pub first_seen: Millis,
    /// `at` of the observation that confirmed it.
    pub confirmed_at: Millis,
    /// `host_unreachable`: the expected ports it takes down;
    /// `host_answers_all_ports`: the unexpected ports that answered.
    pub ports: PortRanges,
}

/// Why an incident resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// A conclusive scan showed the expected state.
    Observed,
    /// The configuration changed so that the incident no longer applies.
    ConfigChanged,
    /// The monitor was removed from the configuration.
    MonitorRemoved,
    /// The host name no longer resolves to the incident's address.
    AddressRemoved,
}

impl Resolution {
    /// The snake_case name: `"observed"`, `"config_changed"`,
    /// `"monitor_removed"` or `"address_removed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observed => "observed",
            Self::ConfigChanged => "config_changed",
            Self::MonitorRemoved => "monitor_removed",
            Self::AddressRemoved => "address_removed",
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-port events of one scan that did not go out one by one (over
/// `max_port_events`): every per-port event of the scan, as ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsChanged {
    /// The monitor's name.
    pub monitor: String,
    /// `at` of the observation.
    pub at: Millis,
    /// Every per-port event of the scan: (address, event kind, ports).
    pub changes: Vec<PortsChange>,
    /// How many per-port events went out individually.
    pub sent: u32,
    /// How many per-port events the scan had in all.
    pub total: u32,
}

/// One line of a [`PortsChanged`]: the ports of one address with one kind
/// of per-port event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsChange {
    /// The address.
    pub address: IpAddr,
    /// `"unexpected_port_open"`, `"expected_port_down"` or `"port_resolved"`.
    pub kind: String,
    /// The ports.
    pub ports: PortRanges,
}

/// Something to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A port incident was confirmed: `expected_port_down` or
    /// `unexpected_port_open`.
    Opened(Incident),
    /// A port incident resolved: `port_resolved`.
    PortResolved {
        /// The incident, as it was opened.
        incident: Incident,
        /// When it resolved (`at` of the observation, or of the removal).
        resolved_at: Millis,
        /// The detected state when resolved; `None` if not observed (removal).
        state: Option<PortState>,
        /// Why it resolved.
        reason: Resolution,
    },
    /// A host incident was confirmed: `host_unreachable` or
    /// `host_answers_all_ports`.
    HostOpened(HostIncident),
    /// A host incident resolved: `host_reachable` (it answers again) or
    /// `host_resolved` (it no longer answers on every port).
    HostResolved {
        /// The incident, as it was opened.
        incident: HostIncident,
        /// When it resolved.
        resolved_at: Millis,
        /// Why it resolved.
        reason: Resolution,
    },
    /// More per-port events than `max_port_events` in one scan: the summary.
    PortsChanged(PortsChanged),
    /// The monitor's last open incident closed: `monitor_resolved`,
    /// "everything back to expected".
    MonitorResolved {
        /// The monitor's name.
        monitor: String,
        /// When.
        at: Millis,
    },
}

impl Event {
    /// The event kind: `"expected_port_down"`, `"unexpected_port_open"`,
    /// `"port_resolved"`, `"host_unreachable"`, `"host_answers_all_ports"`,
    /// `"host_reachable"`, `"host_resolved"`, `"ports_changed"` or
    /// `"monitor_resolved"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Opened(incident) => incident.kind.as_str(),
            Self::PortResolved { .. } => "port_resolved",
            Self::HostOpened(incident) => incident.kind.as_str(),
            Self::HostResolved { incident, .. } => incident.kind.resolved_kind(),
            Self::PortsChanged(_) => "ports_changed",
            Self::MonitorResolved { .. } => "monitor_resolved",
        }
    }

    /// A stable id, unique per event: `"{incident_id}:opened"`,
    /// `"{incident_id}:resolved"` (an incident resolves once),
    /// `"{monitor}:ports_changed:{at}"` or `"{monitor}:resolved:{at}"`.
    pub fn id(&self) -> String {
        match self {
            Self::Opened(incident) => format!("{}:opened", incident.id),
            Self::PortResolved { incident, .. } => format!("{}:resolved", incident.id),
            Self::HostOpened(incident) => format!("{}:opened", incident.id),
            Self::HostResolved { incident, .. } => format!("{}:resolved", incident.id),
            Self::PortsChanged(p) => format!("{}:ports_changed:{}", p.monitor, p.at),
            Self::MonitorResolved { monitor, at } => format!("{monitor}:resolved:{at}"),
        }
    }

    /// The monitor the event is about.
    pub fn monitor(&self) -> &str {
        match self {
            Self::Opened(incident) | Self::PortResolved { incident, .. } => &incident.monitor,
            Self::HostOpened(incident) | Self::HostResolved { incident, .. } => &incident.monitor,
            Self::PortsChanged(p) => &p.monitor,
            Self::MonitorResolved { monitor, .. } => monitor,
        }
    }

    /// The address the event is about; `None` for monitor-wide events.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Self::Opened(incident) | Self::PortResolved { incident, .. } => Some(incident.address),
            Self::HostOpened(incident) | Self::HostResolved { incident, .. } => {
                Some(incident.address)
            }
            Self::PortsChanged(_) | Self::MonitorResolved { .. } => None,
        }
    }

    /// The port the event is about, for per-port events.
    pub fn port(&self) -> Option<u16> {
        match self {
            Self::Opened(incident) | Self::PortResolved { incident, .. } => Some(incident.port),
            _ => None,
        }
    }

    /// When the event happened: the confirmation time of an opened incident,
    /// the resolution time otherwise.
    pub fn at(&self) -> Millis {
        match self {
            Self::Opened(incident) => incident.confirmed_at,
            Self::HostOpened(incident) => incident.confirmed_at,
            Self::PortResolved { resolved_at, .. } | Self::HostResolved { resolved_at, .. } => {
                *resolved_at
            }
            Self::PortsChanged(p) => p.at,
            Self::MonitorResolved { at, .. } => *at,
        }
    }

    /// The incident's priority for an opening; a `ports_changed` summary
    /// has the highest priority of the openings it holds; resolutions are
    /// [`Priority::Normal`].
    pub fn priority(&self) -> Priority {
        match self {
            Self::Opened(incident) => incident.kind.priority(),
            Self::HostOpened(incident) => incident.kind.priority(),
            Self::PortsChanged(p) => {
                if p.changes
                    .iter()
                    .any(|c| c.kind == IncidentKind::UnexpectedPortOpen.as_str())
                {
                    Priority::High
                } else {
                    Priority::Normal
                }
            }
            Self::PortResolved { .. }
            | Self::HostResolved { .. }
            | Self::MonitorResolved { .. } => Priority::Normal,
        }
    }

    /// Whether the event is about one port (and so counts against
    /// `max_port_events`).
    fn is_per_port(&self) -> bool {
        matches!(self, Self::Opened(_) | Self::PortResolved { .. })
    }
}

/// A detected state change of one port, for the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// The address.
    pub address: IpAddr,
    /// The port.
    pub port: u16,
    /// The previously known state; `None` if the port was not tracked.
    pub from: Option<PortState>,
    /// The detected state.
    pub to: PortState,
    /// `at` of the observation.
    pub at: Millis,
    /// `scan_id` of the observation.
    pub scan_id: i64,
}

/// What one call into a [`MonitorState`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Events to publish, in order: host resolutions, port resolutions, host
    /// openings, port openings (per-port events by address and port, at
    /// most `max_port_events` of them), `ports_changed` if some did not fit,
    /// then `monitor_resolved` if the monitor is all clear.
    pub events: Vec<Event>,
    /// Every incident opened or resolved in this step, in step order, for
    /// the history: the per-port event budget limits what is published
    /// (`events`), never what is recorded.
    pub incidents: Vec<Event>,
    /// Detected state changes, by address and port.
    pub changes: Vec<StateChange>,
    /// Re-check these ports at that time, if set.
    pub recheck: Option<(Millis, BTreeSet<u16>)>,
}

/// An unconfirmed deviation: `count` consecutive conclusive observations of
/// the same `kind` (an [`IncidentKind`] of a port, a [`HostIncidentKind`] of
/// an address), the first at `first_seen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Streak<K = IncidentKind> {
    kind: K,
    count: u32,
    first_seen: Millis,
}

impl<K: PartialEq + Copy> Streak<K> {
    /// The streak after an observation at `at` showing `kind`, given the one
    /// before: one longer if of the same kind, else a new one.
    fn after(previous: Option<&Streak<K>>, kind: K, at: Millis) -> Streak<K> {
        match previous {
            Some(s) if s.kind == kind => Streak {
                count: s.count.saturating_add(1),
                ..*s
            },
            _ => Streak {
                kind,
                count: 1,
                first_seen: at,
            },
        }
    }
}

/// The state of one address of a monitor's host: known port states,
/// unconfirmed streaks and open incidents keyed by port, and the host
/// findings. Its size is O(expected + open + pending ports), whatever the
/// host answers: while it answers on every port, its unexpected ports are
/// not tracked one by one.
///
/// Each map is a sorted vector (`litemap`): a port or a finding costs its
/// own size, not a B-tree node of eleven (one incident in a B-tree takes a
/// node of eleven incidents, over a kilobyte). Empty maps are left out of
/// the saved form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct AddressState {
    /// Last detected state of tracked ports (expected ones, and ports that
    /// are or were last seen open).
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    known: LiteMap<u16, PortState>,
    /// Unconfirmed deviations. A port never has both a streak and an incident.
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    streaks: LiteMap<u16, Streak>,
    /// Open port incidents.
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    incidents: LiteMap<u16, Incident>,
    /// Unconfirmed host findings. Never both a streak and an incident.
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    host_streaks: LiteMap<HostIncidentKind, Streak<HostIncidentKind>>,
    /// Open host incidents.
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    host_incidents: LiteMap<HostIncidentKind, HostIncident>,
}

/// What the observations of one step produced so far, before ordering.
#[derive(Default)]
struct Produced {
    host_resolved: Vec<Event>,
    port_resolved: Vec<Event>,
    host_opened: Vec<Event>,
    port_opened: Vec<Event>,
    changes: Vec<StateChange>,
}

impl Produced {
    fn resolved_any(&self) -> bool {
        !self.host_resolved.is_empty() || !self.port_resolved.is_empty()
    }
}

/// The state of one monitor: per address of its host, an address state.
/// Serialize it to persist it; a restored state behaves exactly like the
/// original.
///
/// Small, since a daemon keeps one per monitor (a million of them): the
/// addresses (one or a few) in a sorted vector, one allocation, serialized
/// as a map by address as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MonitorState {
    #[serde(skip_serializing_if = "LiteMap::is_empty")]
    addresses: LiteMap<IpAddr, AddressState>,
    /// State saved before addresses were tracked (one address, unnamed):
    /// adopted by the first address of the next conclusive observation.
    #[serde(skip_serializing_if = "Option::is_none")]
    legacy: Option<Box<AddressState>>,
}

impl<'de> Deserialize<'de> for MonitorState {
    /// Reads the current form, and the form saved before addresses were
    /// tracked (`known`, `streaks`, `incidents` at the top), which becomes
    /// the legacy state.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MonitorState, D::Error> {
        #[derive(Deserialize)]
        struct Saved {
            #[serde(default)]
            addresses: LiteMap<IpAddr, AddressState>,
            #[serde(default)]
            legacy: Option<Box<AddressState>>,
            #[serde(default)]
            known: LiteMap<u16, PortState>,
            #[serde(default)]
            streaks: LiteMap<u16, Streak>,
            #[serde(default)]
            incidents: LiteMap<u16, Incident>,
        }
        let saved = Saved::deserialize(d)?;
        let old = AddressState {
            known: saved.known,
            streaks: saved.streaks,
            incidents: saved.incidents,
            ..AddressState::default()
        };
        let legacy = match saved.legacy {
            Some(legacy) => Some(legacy),
            None if old != AddressState::default() => Some(Box::new(old)),
            None => None,
        };
        let mut state = MonitorState {
            addresses: saved.addresses,
            legacy,
        };
        state.compact();
        Ok(state)
    }
}

/// `map` in exactly the memory its entries take (a vector grows to four
/// entries at its first insertion: an address state is 144 bytes).
fn compacted<K, V>(map: LiteMap<K, V>) -> LiteMap<K, V> {
    let mut entries = map.into_tuple_vec();
    entries.shrink_to_fit();
    // Still sorted: the entries of a map, in order.
    LiteMap::from_sorted_store_unchecked(entries)
}

impl AddressState {
    fn compact(&mut self) {
        self.known = compacted(std::mem::take(&mut self.known));
        self.streaks = compacted(std::mem::take(&mut self.streaks));
        self.incidents = compacted(std::mem::take(&mut self.incidents));
        self.host_streaks = compacted(std::mem::take(&mut self.host_streaks));
        self.host_incidents = compacted(std::mem::take(&mut self.host_incidents));
    }
}

impl MonitorState {
    /// A fresh state: nothing known, nothing pending, no incidents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one observation under the current `spec` (which may differ from
    /// the previous call's: that is how configuration changes arrive).
    pub fn observe(&mut self, spec: &MonitorSpec, obs: &Observation) -> Step {
        if !obs.conclusive {
            return Step {
                recheck: self.recheck_request(spec, obs.at),
                ..Step::default()
            };
        }
        if let Some(&first) = obs.addresses.keys().next()
            && let Some(mut legacy) = self.legacy.take()
        {
            for (_, incident) in legacy.incidents.iter_mut() {
                incident.address = first;
            }
            self.addresses.entry(first).or_insert(*legacy);
        }

        let mut out = Produced::default();
        let gone: Vec<IpAddr> = self
            .addresses
            .keys()
            .filter(|a| !obs.addresses.contains_key(a))
            .copied()
            .collect();
        for address in gone {
            if let Some(state) = self.addresses.remove(&address) {
                state.close(obs.at, Resolution::AddressRemoved, &mut out);
            }
        }
        for (&address, replies) in &obs.addresses {
            self.addresses
                .entry(address)
                .or_default()
                .observe(spec, obs, address, replies, &mut out);
        }
        let all_clear = out.resolved_any() && !self.has_incidents();
        let incidents = out.take_events();
        self.compact();
        Step {
            events: assemble(spec, obs.at, incidents.clone(), all_clear),
            incidents,
            changes: out.changes,
            recheck: self.recheck_request(spec, obs.at),
        }
    }

    /// Gives back what the maps grew beyond their entries: a daemon keeps a
    /// million of these.
    fn compact(&mut self) {
        self.addresses = compacted(std::mem::take(&mut self.addresses));
        for (_, state) in self.addresses.iter_mut() {
            state.compact();
        }
    }

    /// The monitor was removed from the configuration at `at`: resolves every
    /// open incident ([`Resolution::MonitorRemoved`], state `None`), then emits
    /// `monitor_resolved` if any were open, and clears the state.
    pub fn remove(&mut self, spec: &MonitorSpec, at: Millis) -> Step {
        let MonitorState { addresses, legacy } = std::mem::take(self);
        let mut out = Produced::default();
        for (_, state) in addresses
            .into_iter()
            .chain(legacy.map(|l| (unknown_address(), *l)))
        {
            state.close(at, Resolution::MonitorRemoved, &mut out);
        }
        let all_clear = out.resolved_any();
        let incidents = out.take_events();
        Step {
            events: assemble(spec, at, incidents.clone(), all_clear),
            incidents,
            ..Step::default()
        }
    }

    /// Whether any incident (port or host) is open.
    pub fn has_incidents(&self) -> bool {
        self.all_states()
            .any(|s| !s.incidents.is_empty() || !s.host_incidents.is_empty())
    }

    /// The addresses the state knows, ascending.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses.keys().copied()
    }

    /// The open port incidents, by address and port.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        self.all_states()
            .flat_map(|s| s.incidents.values())
            .collect()
    }

    /// The open host incidents, by address.
    pub fn host_incidents(&self) -> Vec<&HostIncident> {
        self.all_states()
            .flat_map(|s| s.host_incidents.values())
            .collect()
    }

    /// The ports of `address` open as last detected.
    pub fn last_open(&self, address: IpAddr) -> BTreeSet<u16> {
        self.addresses
            .get(&address)
            .map(|s| {
                s.known
                    .iter()
                    .filter(|&(_, &state)| state == PortState::Open)
                    .map(|(&port, _)| port)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ports with a deviation seen but not yet confirmed, on any address.
    pub fn pending(&self) -> BTreeSet<u16> {
        self.all_states()
            .flat_map(|s| s.streaks.keys().copied())
            .collect()
    }

    /// The last detected state of `port` of `address`, if it is tracked
    /// (expected ports, and ports that are or were last seen open).
    pub fn known_state(&self, address: IpAddr, port: u16) -> Option<PortState> {
        self.addresses.get(&address)?.known.get(&port).copied()
    }

    /// The ports whose closed replies a scan of `address` must keep: the
    /// ports `address` tracks, has pending or has an incident on.
    pub fn tracked_ports(&self, address: IpAddr) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        self.for_each_tracked_port(address, |port| {
            ports.insert(port);
        });
        ports
    }

    /// Calls `f` with each port of [`MonitorState::tracked_ports`], without
    /// collecting them (a port may come more than once).
    pub fn for_each_tracked_port(&self, address: IpAddr, mut f: impl FnMut(u16)) {
        for s in self
            .addresses
            .get(&address)
            .into_iter()
            .chain(self.legacy.as_deref())
        {
            s.known
                .keys()
                .chain(s.streaks.keys())
                .chain(s.incidents.keys())
                .for_each(|&p| f(p));
        }
    }

    fn all_states(&self) -> impl Iterator<Item = &AddressState> {
        self.addresses.values().chain(self.legacy.as_deref())
    }

    /// The re-check to ask for after an observation at `at`.
    fn recheck_request(&self, spec: &MonitorSpec, at: Millis) -> Option<(Millis, BTreeSet<u16>)> {
        let delay = spec.recheck_ms?;
        let pending = self.pending();
        if pending.is_empty() {
            return None;
        }
        let delay = Millis::try_from(delay).unwrap_or(Millis::MAX);
        Some((at.saturating_add(delay), pending))
    }
}

impl Produced {
    /// The events in step order, before the per-port budget.
    fn take_events(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.host_resolved);
        events.append(&mut self.port_resolved);
        events.append(&mut self.host_opened);
        events.append(&mut self.port_opened);
        events
    }
}

/// Applies the per-port event budget to `events` (in step order) and adds
/// `monitor_resolved` when `all_clear`: at most `max_port_events` per-port
/// events go out, the most urgent first (then in step order); when some do
/// not fit, one `ports_changed` lists every per-port event of the step.
fn assemble(spec: &MonitorSpec, at: Millis, events: Vec<Event>, all_clear: bool) -> Vec<Event> {
    let budget = spec.max_port_events.max(1) as usize;
    let per_port = events.iter().filter(|e| e.is_per_port()).count();
    let mut out = if per_port <= budget {
        events
    } else {
        let mut ranked: Vec<(usize, Priority)> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_per_port())
            .map(|(i, e)| (i, e.priority()))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let sent: BTreeSet<usize> = ranked.iter().take(budget).map(|&(i, _)| i).collect();
        let summary = ports_changed(spec, at, &events, budget);
        let mut kept: Vec<Event> = events
            .into_iter()
            .enumerate()
            .filter(|(i, e)| !e.is_per_port() || sent.contains(i))
            .map(|(_, e)| e)
            .collect();
        kept.push(Event::PortsChanged(summary));
        kept
    };
    if all_clear {
        out.push(Event::MonitorResolved {
            monitor: spec.name.clone(),
            at,
        });
    }
    out
}

/// The summary of every per-port event in `events`, of which `sent` went
/// out one by one.
fn ports_changed(spec: &MonitorSpec, at: Millis, events: &[Event], sent: usize) -> PortsChanged {
    let mut groups: BTreeMap<(IpAddr, &'static str), Vec<u16>> = BTreeMap::new();
    let mut total = 0u32;
    for e in events.iter().filter(|e| e.is_per_port()) {
        if let (Some(address), Some(port)) = (e.address(), e.port()) {
            groups.entry((address, e.kind())).or_default().push(port);
            total += 1;
        }
    }
    PortsChanged {
        monitor: spec.name.clone(),
        at,
        changes: groups
            .into_iter()
            .map(|((address, kind), ports)| PortsChange {
                address,
                kind: kind.to_string(),
                ports: ports.into_iter().collect(),
            })
            .collect(),
        sent: u32::try_from(sent).unwrap_or(u32::MAX),
        total,
    }
}

impl AddressState {
    /// Feeds the replies of `address` in `obs` (conclusive).
    fn observe(
        &mut self,
        spec: &MonitorSpec,
        obs: &Observation,
        address: IpAddr,
        replies: &AddressReplies,
        out: &mut Produced,
    ) {
        let full = obs.scope == Scope::Full;
        if !replies.reachable {
            // A re-check that heard nothing says nothing about the host: it
            // probed a few ports that may all be filtered.
            if !full {
                return;
            }
            // Every expected port is down (the history says so), with the
            // host as the cause: no port streak advances or resets, no port
            // incident opens or resolves while nothing can be observed.
            for &port in &spec.expected_open {
                self.track(spec, obs, address, port, PortState::Filtered, out);
            }
            let down: PortRanges = spec.expected_open.iter().copied().collect();
            self.host_deviates(
                spec,
                obs,
                address,
                HostIncidentKind::HostUnreachable,
                down,
                out,
            );
            return;
        }
        self.host_normal(obs, HostIncidentKind::HostUnreachable, out);

        let unexpected = || {
            replies
                .open
                .iter()
                .filter(|&p| !spec.expects_open(p) && spec.in_scan(p))
        };
        let answers_all = if full {
            let count = unexpected().count() as u64;
            if count > u64::from(spec.answer_all_threshold) {
                let ports: PortRanges = unexpected().collect();
                self.host_deviates(
                    spec,
                    obs,
                    address,
                    HostIncidentKind::HostAnswersAllPorts,
                    ports,
                    out,
                );
                true
            } else {
                self.host_normal(obs, HostIncidentKind::HostAnswersAllPorts, out);
                false
            }
        } else {
            self.host_incidents
                .contains_key(&HostIncidentKind::HostAnswersAllPorts)
        };

        // The ports to evaluate. While the host answers on every port only
        // the expected ones: its unexpected ports are neither tracked nor
        // counted (their incidents stay as they are).
        let ports: Vec<u16> = match (&obs.scope, answers_all) {
            (Scope::Full, true) => spec.expected_open.iter().copied().collect(),
            (Scope::Ports(ports), true) => ports
                .iter()
                .copied()
                .filter(|&p| spec.expects_open(p))
                .collect(),
            // Every other port is closed or filtered, not expected,
            // untracked and without a streak or incident: nothing to do.
            (Scope::Full, false) => {
                let mut ports: BTreeSet<u16> = spec.expected_open.clone();
                ports.extend(self.known.keys());
                ports.extend(self.streaks.keys());
                ports.extend(self.incidents.keys());
                ports.extend(replies.open.iter());
                // Ports the scan range no longer covers (narrowed since):
                // forgotten, their incidents resolved (config_changed).
                let (inside, outside): (Vec<u16>, Vec<u16>) =
                    ports.into_iter().partition(|&p| spec.in_scan(p));
                for port in outside {
                    self.forget_port(obs, port, out);
                }
                inside
            }
            (Scope::Ports(ports), false) => ports.iter().copied().collect(),
        };
        for port in ports {
            self.observe_port(spec, obs, address, port, replies.detected(port), out);
        }
    }

    /// One port of a reachable address, detected in `state`.
    fn observe_port(
        &mut self,
        spec: &MonitorSpec,
        obs: &Observation,
        address: IpAddr,
        port: u16,
        state: PortState,
        out: &mut Produced,
    ) {
        self.track(spec, obs, address, port, state, out);
        let deviation = spec.deviation(port, state);

        if let Some(incident) = self.incidents.get(&port) {
            if Some(incident.kind) == deviation {
                return;
            }
            let reason = if spec.admits(port, incident.kind) {
                Resolution::Observed
            } else {
                Resolution::ConfigChanged
            };
            if let Some(incident) = self.incidents.remove(&port) {
                out.port_resolved.push(Event::PortResolved {
                    incident,
                    resolved_at: obs.at,
                    state: Some(state),
                    reason,
                });
            }
            self.streaks.remove(&port);
        }

        let Some(kind) = deviation else {
            self.streaks.remove(&port);
            return;
        };
        let streak = Streak::after(self.streaks.get(&port), kind, obs.at);
        if streak.count >= spec.confirmations() {
            self.streaks.remove(&port);
            let incident = Incident {
                id: incident_id(&spec.name, address, port, streak.first_seen),
                monitor: spec.name.clone(),
                address,
                port,
                kind,
                first_seen: streak.first_seen,
                confirmed_at: obs.at,
                state,
            };
            self.incidents.insert(port, incident.clone());
            out.port_opened.push(Event::Opened(incident));
        } else {
            self.streaks.insert(port, streak);
        }
    }

    /// A port no full scan covers any more: no longer tracked, its streak
    /// dropped, its incident resolved as `config_changed` (its state is
    /// unknown: no state is given).
    fn forget_port(&mut self, obs: &Observation, port: u16, out: &mut Produced) {
        self.known.remove(&port);
        self.streaks.remove(&port);
        if let Some(incident) = self.incidents.remove(&port) {
            out.port_resolved.push(Event::PortResolved {
                incident,
                resolved_at: obs.at,
                state: None,
                reason: Resolution::ConfigChanged,
            });
        }
    }

    /// The host shows finding `kind` in this observation: advance its
    /// streak, open the incident once confirmed.
    fn host_deviates(
        &mut self,
        spec: &MonitorSpec,
        obs: &Observation,
        address: IpAddr,
        kind: HostIncidentKind,
        ports: PortRanges,
        out: &mut Produced,
    ) {
        if self.host_incidents.contains_key(&kind) {
            return;
        }
        let streak = Streak::after(self.host_streaks.get(&kind), kind, obs.at);
        if streak.count >= spec.confirmations() {
            self.host_streaks.remove(&kind);
            let incident = HostIncident {
                id: host_incident_id(&spec.name, address, kind, streak.first_seen),
                monitor: spec.name.clone(),
                address,
                kind,
                first_seen: streak.first_seen,
                confirmed_at: obs.at,
                ports,
            };
            self.host_incidents.insert(kind, incident.clone());
            out.host_opened.push(Event::HostOpened(incident));
        } else {
            self.host_streaks.insert(kind, streak);
        }
    }

    /// The host does not show finding `kind`: its streak ends, its incident
    /// resolves.
    fn host_normal(&mut self, obs: &Observation, kind: HostIncidentKind, out: &mut Produced) {
        self.host_streaks.remove(&kind);
        if let Some(incident) = self.host_incidents.remove(&kind) {
            out.host_resolved.push(Event::HostResolved {
                incident,
                resolved_at: obs.at,
                reason: Resolution::Observed,
            });
        }
    }

    /// Resolves every open incident for `reason` (the address or the whole
    /// monitor went away).
    fn close(self, at: Millis, reason: Resolution, out: &mut Produced) {
        for (_, incident) in self.host_incidents {
            out.host_resolved.push(Event::HostResolved {
                incident,
                resolved_at: at,
                reason,
            });
        }
        for (_, incident) in self.incidents {
            out.port_resolved.push(Event::PortResolved {
                incident,
                resolved_at: at,
                state: None,
                reason,
            });
        }
    }

    /// Updates the known state of `port` (detected `state`) and records the
    /// change, if any.
    fn track(
        &mut self,
        spec: &MonitorSpec,
        obs: &Observation,
        address: IpAddr,
        port: u16,
        state: PortState,
        out: &mut Produced,
    ) {
        let tracked = spec.expects_open(port) || state == PortState::Open;
        let from = if tracked {
            self.known.insert(port, state)
        } else {
            self.known.remove(&port)
        };
        if from != Some(state) && (tracked || from.is_some()) {
            out.changes.push(StateChange {
                address,
                port,
                from,
                to: state,
                at: obs.at,
                scan_id: obs.scan_id,
            });
        }
    }
}
