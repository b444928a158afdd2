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
//! * **Deviation.** For a port `p` in the scope of an observation, with detected
//!   state `s` (see [`Observation::detected`]): `p` expected open and `s != Open`
//!   is an [`IncidentKind::ExpectedPortDown`]; `p` not expected and `s == Open` is
//!   an [`IncidentKind::UnexpectedPortOpen`]. Anything else is not a deviation.
//! * **Conclusive only.** An inconclusive observation (`conclusive == false`, the
//!   scanner's own fault) changes nothing: no history, no events, streaks neither
//!   advance nor reset. Its [`Step`] only repeats the pending re-check request.
//! * **Unreachable host.** `reachable == false` is conclusive: every port in scope
//!   is then `Filtered` (whatever the `open`/`closed` sets say), so every expected
//!   port deviates and no unexpected port is open.
//! * **Confirmation.** A deviation seen in `confirm` consecutive conclusive
//!   observations covering the port (full scans and re-checks alike) opens an
//!   [`Incident`] and emits [`Event::Opened`]. Observations whose scope doesn't
//!   include the port leave its streak untouched. A deviation of a *different*
//!   kind restarts the streak at 1. `confirm == 1` opens on the first deviation;
//!   a `confirm` of 0 (invalid, see [`MonitorSpec::validate`]) is treated as 1.
//! * **Resolution.** A conclusive observation that shows a port in its expected
//!   state resets the port's streak and resolves its open incident
//!   ([`Event::PortResolved`]). When this closes the monitor's last open
//!   incident, [`Event::MonitorResolved`] follows ("all ports back to their
//!   expected states").
//! * **Configuration changes** are simply the next [`MonitorState::observe`]
//!   call with the new [`MonitorSpec`]: the state is keyed by port, not by spec,
//!   and every rule is evaluated against the spec passed in *now* (including a
//!   changed `confirm`, which applies to streaks already under way). An open
//!   incident whose kind the current spec can no longer produce for its port (an
//!   `expected_port_down` on a port no longer expected, an
//!   `unexpected_port_open` on a port now expected) resolves with
//!   [`Resolution::ConfigChanged`] the next time the port is in scope of a
//!   conclusive observation; if the port then deviates the other way, a new
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
//! An incident id is `"{monitor}-{port}-{first_seen}"` (see [`incident_id`]);
//! event ids are derived from it (see [`Event::id`]). They are stable across
//! restarts and re-deliveries. They are unique as long as the `at` of successive
//! observations of one monitor strictly increases, which the caller guarantees.

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

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
            IncidentKind::UnexpectedPortOpen => !self.expects_open(port),
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

/// The result of one scan (full or re-check) of one monitor's host.
///
/// For a port `p` in scope the detected state is `Open` if `p` is in `open`,
/// else `Closed` if in `closed` (RST seen), else `Filtered` (no reply); all
/// `Filtered` if the host is unreachable. Ports outside the scope are ignored,
/// even if listed in `open` or `closed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The scan's id (carried into [`StateChange::scan_id`]).
    pub scan_id: i64,
    /// When the scan finished (or the time the caller wants to attribute to it).
    pub at: Millis,
    /// Which ports the scan covered.
    pub scope: Scope,
    /// Whether the scan can be trusted; `false` means the scanner itself failed
    /// (send errors, reply-path drops) and the observation is ignored.
    pub conclusive: bool,
    /// Whether the host answered at all. `false` makes every port `Filtered`.
    pub reachable: bool,
    /// Ports that answered SYN-ACK.
    pub open: BTreeSet<u16>,
    /// Ports that answered RST.
    pub closed: BTreeSet<u16>,
}

impl Observation {
    /// The detected state of `port`, ignoring the scope: `Filtered` if the host
    /// is unreachable, else `Open` if in `open`, else `Closed` if in `closed`,
    /// else `Filtered`.
    pub fn detected(&self, port: u16) -> PortState {
        if !self.reachable {
            PortState::Filtered
        } else if self.open.contains(&port) {
            PortState::Open
        } else if self.closed.contains(&port) {
            PortState::Closed
        } else {
            PortState::Filtered
        }
    }

    /// The detected state of `port`, or `None` if the scope doesn't cover it.
    pub fn state_of(&self, port: u16) -> Option<PortState> {
        self.scope.contains(port).then(|| self.detected(port))
    }
}

/// How urgent an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The default.
    Normal,
    /// To be treated first (an unexpected open port).
    High,
}

impl Priority {
    /// The snake_case name: `"normal"` or `"high"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two kinds of deviation, and so of incident.
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

/// The id of the incident of `monitor` on `port` whose streak began at
/// `first_seen`: `"{monitor}-{port}-{first_seen}"`, e.g. `"web-443-1700000000000"`.
///
/// Deterministic, so a replay after a crash gives the same id. Unique per
/// monitor as long as observation times strictly increase (a port's next
/// incident always starts its streak at a later observation).
pub fn incident_id(monitor: &str, port: u16, first_seen: Millis) -> String {
    format!("{monitor}-{port}-{first_seen}")
}

/// A confirmed deviation of one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id, see [`incident_id`].
    pub id: String,
    /// The monitor's name.
    pub monitor: String,
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
}

impl Resolution {
    /// The snake_case name: `"observed"`, `"config_changed"` or `"monitor_removed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observed => "observed",
            Self::ConfigChanged => "config_changed",
            Self::MonitorRemoved => "monitor_removed",
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An incident was confirmed: `expected_port_down` or `unexpected_port_open`.
    Opened(Incident),
    /// An incident resolved: `port_resolved`.
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
    /// The monitor's last open incident closed: `monitor_resolved`, "all ports
    /// back to their expected states".
    MonitorResolved {
        /// The monitor's name.
        monitor: String,
        /// When.
        at: Millis,
    },
}

impl Event {
    /// The event kind: `"expected_port_down"`, `"unexpected_port_open"`,
    /// `"port_resolved"` or `"monitor_resolved"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Opened(incident) => incident.kind.as_str(),
            Self::PortResolved { .. } => "port_resolved",
            Self::MonitorResolved { .. } => "monitor_resolved",
        }
    }

    /// A stable id, unique per event: `"{incident_id}:opened"`,
    /// `"{incident_id}:resolved"` (an incident resolves once) or
    /// `"{monitor}:resolved:{at}"`.
    pub fn id(&self) -> String {
        match self {
            Self::Opened(incident) => format!("{}:opened", incident.id),
            Self::PortResolved { incident, .. } => format!("{}:resolved", incident.id),
            Self::MonitorResolved { monitor, at } => format!("{monitor}:resolved:{at}"),
        }
    }

    /// The monitor the event is about.
    pub fn monitor(&self) -> &str {
        match self {
            Self::Opened(incident) | Self::PortResolved { incident, .. } => &incident.monitor,
            Self::MonitorResolved { monitor, .. } => monitor,
        }
    }

    /// When the event happened: the confirmation time of an opened incident,
    /// the resolution time otherwise.
    pub fn at(&self) -> Millis {
        match self {
            Self::Opened(incident) => incident.confirmed_at,
            Self::PortResolved { resolved_at, .. } => *resolved_at,
            Self::MonitorResolved { at, .. } => *at,
        }
    }

    /// The incident's priority for [`Event::Opened`]; [`Priority::Normal`]
    /// for resolutions.
    pub fn priority(&self) -> Priority {
        match self {
            Self::Opened(incident) => incident.kind.priority(),
            Self::PortResolved { .. } | Self::MonitorResolved { .. } => Priority::Normal,
        }
    }
}

/// A detected state change of one port, for the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
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
    /// Events to publish, in order: resolutions (by port), openings (by port),
    /// then `monitor_resolved` if any.
    pub events: Vec<Event>,
    /// Detected state changes, by port.
    pub changes: Vec<StateChange>,
    /// Re-check these ports at that time, if set.
    pub recheck: Option<(Millis, BTreeSet<u16>)>,
}

/// An unconfirmed deviation: `count` consecutive conclusive observations of
/// the same `kind`, the first at `first_seen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Streak {
    kind: IncidentKind,
    count: u32,
    first_seen: Millis,
}

/// The state of one monitor: known port states, unconfirmed streaks and open
/// incidents, all keyed by port. Its size is O(expected + open + pending
/// ports). Serialize it to persist it; a restored state behaves exactly like
/// the original.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorState {
    /// Last detected state of tracked ports (expected ones, and ports that
    /// are or were last seen open).
    #[serde(default)]
    known: BTreeMap<u16, PortState>,
    /// Unconfirmed deviations. A port never has both a streak and an incident.
    #[serde(default)]
    streaks: BTreeMap<u16, Streak>,
    /// Open incidents.
    #[serde(default)]
    incidents: BTreeMap<u16, Incident>,
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

        let ports: Vec<u16> = match &obs.scope {
            // Every other port is closed or filtered, not expected, untracked
            // and without a streak or incident: nothing to do for it.
            Scope::Full => {
                let mut ports: BTreeSet<u16> = spec.expected_open.clone();
                ports.extend(self.known.keys());
                ports.extend(self.streaks.keys());
                ports.extend(self.incidents.keys());
                if obs.reachable {
                    ports.extend(&obs.open);
                }
                ports.into_iter().collect()
            }
            Scope::Ports(ports) => ports.iter().copied().collect(),
        };

        let confirm = spec.confirmations();
        let mut changes = Vec::new();
        let mut resolved = Vec::new();
        let mut opened = Vec::new();

        for port in ports {
            let state = obs.detected(port);
            if let Some(change) = self.track(spec, obs, port, state) {
                changes.push(change);
            }
            let deviation = spec.deviation(port, state);

            if let Some(incident) = self.incidents.get(&port) {
                if Some(incident.kind) == deviation {
                    continue;
                }
                let reason = if spec.admits(port, incident.kind) {
                    Resolution::Observed
                } else {
                    Resolution::ConfigChanged
                };
                if let Some(incident) = self.incidents.remove(&port) {
                    resolved.push(Event::PortResolved {
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
                continue;
            };
            let streak = match self.streaks.get(&port) {
                Some(s) if s.kind == kind => Streak {
                    count: s.count.saturating_add(1),
                    ..*s
                },
                _ => Streak {
                    kind,
                    count: 1,
                    first_seen: obs.at,
                },
            };
            if streak.count >= confirm {
                self.streaks.remove(&port);
                let incident = Incident {
                    id: incident_id(&spec.name, port, streak.first_seen),
                    monitor: spec.name.clone(),
                    port,
                    kind,
                    first_seen: streak.first_seen,
                    confirmed_at: obs.at,
                    state,
                };
                self.incidents.insert(port, incident.clone());
                opened.push(Event::Opened(incident));
            } else {
                self.streaks.insert(port, streak);
            }
        }

        let all_clear = !resolved.is_empty() && self.incidents.is_empty();
        let mut events = resolved;
        events.append(&mut opened);
        if all_clear {
            events.push(Event::MonitorResolved {
                monitor: spec.name.clone(),
                at: obs.at,
            });
        }
        Step {
            events,
            changes,
            recheck: self.recheck_request(spec, obs.at),
        }
    }

    /// The monitor was removed from the configuration at `at`: resolves every
    /// open incident ([`Resolution::MonitorRemoved`], state `None`), then emits
    /// `monitor_resolved` if any were open, and clears the state.
    pub fn remove(&mut self, spec: &MonitorSpec, at: Millis) -> Step {
        let incidents = std::mem::take(self).incidents;
        let mut events: Vec<Event> = incidents
            .into_values()
            .map(|incident| Event::PortResolved {
                incident,
                resolved_at: at,
                state: None,
                reason: Resolution::MonitorRemoved,
            })
            .collect();
        if !events.is_empty() {
            events.push(Event::MonitorResolved {
                monitor: spec.name.clone(),
                at,
            });
        }
        Step {
            events,
            ..Step::default()
        }
    }

    /// The open incidents, sorted by port.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        self.incidents.values().collect()
    }

    /// The ports open as last detected.
    pub fn last_open(&self) -> BTreeSet<u16> {
        self.known
            .iter()
            .filter(|&(_, &state)| state == PortState::Open)
            .map(|(&port, _)| port)
            .collect()
    }

    /// The ports with a deviation seen but not yet confirmed.
    pub fn pending(&self) -> BTreeSet<u16> {
        self.streaks.keys().copied().collect()
    }

    /// The last detected state of `port`, if it is tracked (expected ports,
    /// and ports that are or were last seen open).
    pub fn known_state(&self, port: u16) -> Option<PortState> {
        self.known.get(&port).copied()
    }

    /// Updates the known state of `port` (detected `state`) and returns the
    /// change to record, if any.
    fn track(
        &mut self,
        spec: &MonitorSpec,
        obs: &Observation,
        port: u16,
        state: PortState,
    ) -> Option<StateChange> {
        let tracked = spec.expects_open(port) || state == PortState::Open;
        let from = if tracked {
            self.known.insert(port, state)
        } else {
            self.known.remove(&port)
        };
        (from != Some(state) && (tracked || from.is_some())).then_some(StateChange {
            port,
            from,
            to: state,
            at: obs.at,
            scan_id: obs.scan_id,
        })
    }

    /// The re-check to ask for after an observation at `at`.
    fn recheck_request(&self, spec: &MonitorSpec, at: Millis) -> Option<(Millis, BTreeSet<u16>)> {
        let delay = spec.recheck_ms?;
        if self.streaks.is_empty() {
            return None;
        }
        let delay = Millis::try_from(delay).unwrap_or(Millis::MAX);
        Some((at.saturating_add(delay), self.pending()))
    }
}
