//! What a monitor's state says about it now, for people: per address, every
//! port open now (expected or not), every expected port that is down, each
//! with when its deviation was first seen and when it was confirmed; and a
//! summary in counts for a fleet view. Pure reads of a [`MonitorState`]
//! under its [`MonitorSpec`].

use std::net::IpAddr;

use serde::Serialize;

use super::{
    AddressState, HostIncidentKind, IncidentKind, Millis, MonitorSpec, MonitorState, PortRanges,
    PortState,
};

/// A deviation of one port from the expected, confirmed or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deviation {
    pub kind: IncidentKind,
    /// The first of the consecutive scans that showed it.
    pub first_seen: Millis,
    /// When it was confirmed (its incident opened); `None` while pending.
    pub confirmed_at: Option<Millis>,
    /// Its incident, once confirmed.
    pub incident_id: Option<String>,
    /// Consecutive conclusive scans that showed it so far (while pending).
    pub seen: u32,
}

/// One port of an [`AddressView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortView {
    pub port: u16,
    /// The last detected state.
    pub state: PortState,
    /// Whether the monitor expects it open.
    pub expected: bool,
    /// How it deviates, if it does.
    pub deviation: Option<Deviation>,
}

/// A host finding about one address, confirmed or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFinding {
    pub kind: HostIncidentKind,
    pub first_seen: Millis,
    pub confirmed_at: Option<Millis>,
    pub incident_id: Option<String>,
    /// The ports it concerns, once confirmed.
    pub ports: Option<PortRanges>,
}

/// One address of a monitor, as its state knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressView {
    pub address: IpAddr,
    /// Every port detected open now, expected or not, ascending.
    pub open: Vec<PortView>,
    /// Every expected port detected closed or filtered now, ascending.
    pub expected_down: Vec<PortView>,
    /// Host findings (unreachable, answers every port), confirmed or not.
    pub host: Vec<HostFinding>,
}

/// Whether a monitor's addresses answer, as far as its state knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Not scanned conclusively yet.
    Unknown,
    /// No address has a confirmed `host_unreachable`.
    Reachable,
    /// Some, not all, addresses are confirmed unreachable.
    Partly,
    /// Every address is confirmed unreachable.
    Unreachable,
}

impl Reachability {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Reachable => "reachable",
            Self::Partly => "partly",
            Self::Unreachable => "unreachable",
        }
    }
}

/// A monitor in counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MonitorSummary {
    pub reachability: Reachability,
    /// Expected ports detected down, over all addresses (confirmed or not).
    pub expected_down: u32,
    /// Ports detected open that are not expected, over all addresses
    /// (confirmed or not; an address that answers on every port counts the
    /// ports of its incident).
    pub unexpected_open: u32,
    /// Open incidents, port and host.
    pub open_incidents: u32,
}

impl MonitorState {
    /// Every address the state knows, as [`AddressView`]s, ascending.
    pub fn view(&self, spec: &MonitorSpec) -> Vec<AddressView> {
        self.addresses
            .iter()
            .map(|(&address, state)| address_view(address, state, spec))
            .collect()
    }

    /// The state in counts.
    pub fn summary(&self, spec: &MonitorSpec) -> MonitorSummary {
        let views = self.view(spec);
        let unreachable = views
            .iter()
            .filter(|v| {
                v.host.iter().any(|h| {
                    h.kind == HostIncidentKind::HostUnreachable && h.confirmed_at.is_some()
                })
            })
            .count();
        let reachability = match (views.len(), unreachable) {
            (0, _) => Reachability::Unknown,
            (_, 0) => Reachability::Reachable,
            (all, down) if down == all => Reachability::Unreachable,
            _ => Reachability::Partly,
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut unexpected_open: u64 = 0;
        for v in &views {
            unexpected_open += v.open.iter().filter(|p| !p.expected).count() as u64;
            for h in &v.host {
                if let (HostIncidentKind::HostAnswersAllPorts, Some(ports)) = (h.kind, &h.ports) {
                    unexpected_open += ports.count();
                }
            }
        }
        MonitorSummary {
            reachability,
            expected_down: count(views.iter().map(|v| v.expected_down.len()).sum()),
            unexpected_open: u32::try_from(unexpected_open).unwrap_or(u32::MAX),
            open_incidents: count(self.open_incidents().len() + self.host_incidents().len()),
        }
    }
}

fn address_view(address: IpAddr, state: &AddressState, spec: &MonitorSpec) -> AddressView {
    let port_view = |port: u16, detected: PortState| {
        let deviation = if let Some(incident) = state.incidents.get(&port) {
            Some(Deviation {
                kind: incident.kind,
                first_seen: incident.first_seen,
                confirmed_at: Some(incident.confirmed_at),
                incident_id: Some(incident.id.clone()),
                seen: spec.confirmations(),
            })
        } else {
            state.streaks.get(&port).map(|streak| Deviation {
                kind: streak.kind,
                first_seen: streak.first_seen,
                confirmed_at: None,
                incident_id: None,
                seen: streak.count,
            })
        };
        PortView {
            port,
            state: detected,
            expected: spec.expects_open(port),
            deviation,
        }
    };
    let mut open = Vec::new();
    let mut expected_down = Vec::new();
    for (&port, &detected) in &state.known {
        if detected == PortState::Open {
            open.push(port_view(port, detected));
        } else if spec.expects_open(port) {
            expected_down.push(port_view(port, detected));
        }
    }
    let mut host: Vec<HostFinding> = state
        .host_incidents
        .values()
        .map(|incident| HostFinding {
            kind: incident.kind,
            first_seen: incident.first_seen,
            confirmed_at: Some(incident.confirmed_at),
            incident_id: Some(incident.id.clone()),
            ports: Some(incident.ports.clone()),
        })
        .collect();
    host.extend(state.host_streaks.values().map(|streak| HostFinding {
        kind: streak.kind,
        first_seen: streak.first_seen,
        confirmed_at: None,
        incident_id: None,
        ports: None,
    }));
    AddressView {
        address,
        open,
        expected_down,
        host,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::{AddressReplies, Observation, Ports, Scope};
    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));

    fn spec() -> MonitorSpec {
        MonitorSpec {
            name: "web".into(),
            host: "web.example".into(),
            expected_open: [22, 443].into_iter().collect(),
            confirm: 2,
            recheck_ms: None,
            ..MonitorSpec::default()
        }
    }

    fn scan(at: Millis, addresses: &[(IpAddr, bool, &[u16])]) -> Observation {
        Observation {
            scan_id: at,
            at,
            scope: Scope::Full,
            conclusive: true,
            addresses: addresses
                .iter()
                .map(|&(ip, reachable, open)| {
                    let replies = AddressReplies {
                        reachable,
                        open: open.iter().copied().collect(),
                        closed: Ports::new(),
                    };
                    (ip, replies)
                })
                .collect(),
        }
    }

    #[test]
    fn a_new_state_is_unknown_and_empty() {
        let state = MonitorState::new();
        assert!(state.view(&spec()).is_empty());
        let summary = state.summary(&spec());
        assert_eq!(summary.reachability, Reachability::Unknown);
        assert_eq!(
            (
                summary.expected_down,
                summary.unexpected_open,
                summary.open_incidents
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn pending_then_confirmed_deviations_carry_their_times() {
        let s = spec();
        let mut state = MonitorState::new();
        state.observe(&s, &scan(1000, &[(A, true, &[22, 443])]));
        state.observe(&s, &scan(2000, &[(A, true, &[22, 8080])]));
        let view = state.view(&s);
        assert_eq!(view.len(), 1);
        let a = &view[0];
        let open: Vec<(u16, bool)> = a.open.iter().map(|p| (p.port, p.expected)).collect();
        assert_eq!(open, [(22, true), (8080, false)]);
        let unexpected = a.open[1].deviation.as_ref().expect("deviation");
        assert_eq!(unexpected.kind, IncidentKind::UnexpectedPortOpen);
        assert_eq!(
            (unexpected.first_seen, unexpected.confirmed_at),
            (2000, None)
        );
        assert_eq!(unexpected.seen, 1);
        assert_eq!(a.expected_down.len(), 1);
        assert_eq!(a.expected_down[0].port, 443);
        assert_eq!(a.expected_down[0].state, PortState::Filtered);
        assert!(a.open[0].deviation.is_none());

        state.observe(&s, &scan(3000, &[(A, true, &[22, 8080])]));
        let view = state.view(&s);
        let confirmed = view[0].open[1].deviation.as_ref().expect("deviation");
        assert_eq!(
            (confirmed.first_seen, confirmed.confirmed_at),
            (2000, Some(3000))
        );
        assert!(confirmed.incident_id.is_some());
        let summary = state.summary(&s);
        assert_eq!(summary.reachability, Reachability::Reachable);
        assert_eq!(
            (
                summary.expected_down,
                summary.unexpected_open,
                summary.open_incidents
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn reachability_counts_confirmed_unreachable_addresses() {
        let s = spec();
        let mut state = MonitorState::new();
        state.observe(
            &s,
            &scan(1000, &[(A, true, &[22, 443]), (B, true, &[22, 443])]),
        );
        state.observe(&s, &scan(2000, &[(A, true, &[22, 443]), (B, false, &[])]));
        // One scan unreachable is pending, not a state.
        assert_eq!(state.summary(&s).reachability, Reachability::Reachable);
        let pending = &state.view(&s)[1].host;
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].confirmed_at, None);
        state.observe(&s, &scan(3000, &[(A, true, &[22, 443]), (B, false, &[])]));
        assert_eq!(state.summary(&s).reachability, Reachability::Partly);
        state.observe(&s, &scan(4000, &[(A, false, &[]), (B, false, &[])]));
        state.observe(&s, &scan(5000, &[(A, false, &[]), (B, false, &[])]));
        assert_eq!(state.summary(&s).reachability, Reachability::Unreachable);
    }
}
