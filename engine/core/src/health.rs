//! Self-monitoring: the scanner watches itself, so that monitors never just go
//! quiet.
//!
//! Pure, like the monitor state machine: time comes in as [`Millis`], and the
//! whole state is a serializable [`HealthState`] the daemon stores next to the
//! outbox rows of the events it produces.
//!
//! # Rules
//!
//! * **`scan_failed`.** A sweep that failed or came back inconclusive (the
//!   interface is gone, capabilities were lost, the eBPF program did not load,
//!   replies were lost on the reply path) opens one scanner incident and emits
//!   `scan_failed` with the error, at once: there is nothing to confirm, a
//!   failed sweep is a fact. Further failures keep it open without new events.
//!   The next sweep that succeeds resolves it: `scan_recovered`.
//! * **`monitor_stale`.** A monitor whose last conclusive full scan ended (or, if it
//!   never had one, the moment the daemon first knew it) is more than twice its
//!   period ago emits `monitor_stale`; its next conclusive full scan resolves
//!   it: `monitor_fresh`. A monitor removed from the configuration resolves it
//!   too (reason `monitor_removed`).
//!
//! Incident ids are `"scanner-scan_failed-{since}"` and
//! `"{monitor}-monitor_stale-{since}"`; event ids add `:opened` /
//! `:resolved`, as for the monitor's own incidents.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::monitor::Millis;

/// What one monitor looks like to the staleness check (borrowed: the
/// daemon checks a million of them without copying their names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorAge<'a> {
    /// The monitor's name.
    pub name: &'a str,
    /// Its period (`every`), in milliseconds.
    pub every_ms: u64,
    /// The end of its last conclusive full scan, or when the daemon first
    /// knew it if it never had one.
    pub last_conclusive: Millis,
}

/// The open scanner incident: sweeps failing since `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanFailure {
    /// When the first failed sweep of the streak ended.
    pub since: Millis,
    /// Why that sweep failed.
    pub error: String,
}

/// An open `monitor_stale` incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staleness {
    /// When it was found stale.
    pub since: Millis,
    /// Its last conclusive full scan then.
    pub last_conclusive: Millis,
}

/// Something the scanner says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// Sweeps fail: `scan_failed`.
    ScanFailed(ScanFailure),
    /// A sweep succeeded again: `scan_recovered`.
    ScanRecovered {
        /// The incident it ends.
        failure: ScanFailure,
        /// When the succeeding sweep ended.
        at: Millis,
    },
    /// `monitor` has had no conclusive full scan for more than twice its
    /// period: `monitor_stale`.
    MonitorStale {
        monitor: String,
        staleness: Staleness,
        every_ms: u64,
    },
    /// `monitor` had a conclusive full scan again (or was removed):
    /// `monitor_fresh`.
    MonitorFresh {
        monitor: String,
        staleness: Staleness,
        at: Millis,
        /// `false`: the monitor was removed from the configuration.
        scanned: bool,
    },
}

impl HealthEvent {
    /// `"scan_failed"`, `"scan_recovered"`, `"monitor_stale"` or
    /// `"monitor_fresh"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ScanFailed(_) => "scan_failed",
            Self::ScanRecovered { .. } => "scan_recovered",
            Self::MonitorStale { .. } => "monitor_stale",
            Self::MonitorFresh { .. } => "monitor_fresh",
        }
    }

    /// The incident it opens or ends: `"scanner-scan_failed-{since}"` or
    /// `"{monitor}-monitor_stale-{since}"`.
    pub fn incident_id(&self) -> String {
        match self {
            Self::ScanFailed(f) | Self::ScanRecovered { failure: f, .. } => {
                format!("scanner-scan_failed-{}", f.since)
            }
            Self::MonitorStale {
                monitor, staleness, ..
            }
            | Self::MonitorFresh {
                monitor, staleness, ..
            } => format!("{monitor}-monitor_stale-{}", staleness.since),
        }
    }

    /// `"{incident_id}:opened"` or `"{incident_id}:resolved"`.
    pub fn id(&self) -> String {
        let end = match self {
            Self::ScanFailed(_) | Self::MonitorStale { .. } => "opened",
            Self::ScanRecovered { .. } | Self::MonitorFresh { .. } => "resolved",
        };
        format!("{}:{end}", self.incident_id())
    }

    /// The monitor it is about; `""` for the scanner itself.
    pub fn monitor(&self) -> &str {
        match self {
            Self::ScanFailed(_) | Self::ScanRecovered { .. } => "",
            Self::MonitorStale { monitor, .. } | Self::MonitorFresh { monitor, .. } => monitor,
        }
    }

    /// When it happened.
    pub fn at(&self) -> Millis {
        match self {
            Self::ScanFailed(f) => f.since,
            Self::MonitorStale { staleness, .. } => staleness.since,
            Self::ScanRecovered { at, .. } | Self::MonitorFresh { at, .. } => *at,
        }
    }
}

/// What the scanner knows of its own health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// Sweeps failing since, if they are.
    #[serde(default)]
    failing: Option<ScanFailure>,
    /// Monitors found stale and not scanned conclusively since.
    #[serde(default)]
    stale: BTreeMap<String, Staleness>,
}

impl HealthState {
    /// A healthy state.
    pub fn new() -> HealthState {
        HealthState::default()
    }

    /// Whether sweeps are failing.
    pub fn failing(&self) -> Option<&ScanFailure> {
        self.failing.as_ref()
    }

    /// The monitors currently stale.
    pub fn stale(&self) -> impl Iterator<Item = (&str, &Staleness)> {
        self.stale.iter().map(|(name, s)| (name.as_str(), s))
    }

    /// A sweep ended at `at`, failed (`Some(error)`, an inconclusive sweep
    /// too) or not.
    pub fn after_sweep(&mut self, at: Millis, failure: Option<String>) -> Vec<HealthEvent> {
        match (failure, self.failing.take()) {
            (Some(error), None) => {
                let failure = ScanFailure { since: at, error };
                self.failing = Some(failure.clone());
                vec![HealthEvent::ScanFailed(failure)]
            }
            (Some(_), Some(open)) => {
                self.failing = Some(open);
                Vec::new()
            }
            (None, Some(failure)) => vec![HealthEvent::ScanRecovered { failure, at }],
            (None, None) => Vec::new(),
        }
    }

    /// Checks every monitor's age at `now`: monitors older than twice their
    /// period become stale, stale ones scanned conclusively since become
    /// fresh, stale ones no longer configured are resolved as removed.
    pub fn check(&mut self, now: Millis, monitors: &[MonitorAge<'_>]) -> Vec<HealthEvent> {
        let mut events = Vec::new();
        let configured: HashSet<&str> = if self.stale.is_empty() {
            HashSet::new()
        } else {
            monitors.iter().map(|m| m.name).collect()
        };
        let removed: Vec<String> = self
            .stale
            .keys()
            .filter(|name| !configured.contains(name.as_str()))
            .cloned()
            .collect();
        for monitor in removed {
            if let Some(staleness) = self.stale.remove(&monitor) {
                events.push(HealthEvent::MonitorFresh {
                    monitor,
                    staleness,
                    at: now,
                    scanned: false,
                });
            }
        }
        for m in monitors {
            let limit = Millis::try_from(m.every_ms.saturating_mul(2)).unwrap_or(Millis::MAX);
            let stale = now.saturating_sub(m.last_conclusive) > limit;
            match (stale, self.stale.get(m.name).copied()) {
                (true, None) => {
                    let staleness = Staleness {
                        since: now,
                        last_conclusive: m.last_conclusive,
                    };
                    self.stale.insert(m.name.to_owned(), staleness);
                    events.push(HealthEvent::MonitorStale {
                        monitor: m.name.to_owned(),
                        staleness,
                        every_ms: m.every_ms,
                    });
                }
                (false, Some(staleness)) if m.last_conclusive > staleness.last_conclusive => {
                    self.stale.remove(m.name);
                    events.push(HealthEvent::MonitorFresh {
                        monitor: m.name.to_owned(),
                        staleness,
                        at: now,
                        scanned: true,
                    });
                }
                _ => {}
            }
        }
        events
    }

    /// When the next monitor not stale yet would become stale, if none
    /// changes: the time the daemon must check again at the latest (a
    /// stale one turns fresh only when its age changes, which the daemon
    /// knows).
    pub fn next_check(&self, monitors: &[MonitorAge<'_>]) -> Option<Millis> {
        monitors
            .iter()
            .filter(|m| !self.stale.contains_key(m.name))
            .map(|m| {
                let limit = Millis::try_from(m.every_ms.saturating_mul(2)).unwrap_or(Millis::MAX);
                m.last_conclusive.saturating_add(limit).saturating_add(1)
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn age(name: &str, every_ms: u64, last: Millis) -> MonitorAge<'_> {
        MonitorAge {
            name,
            every_ms,
            last_conclusive: last,
        }
    }

    fn kinds(events: &[HealthEvent]) -> Vec<&'static str> {
        events.iter().map(HealthEvent::kind).collect()
    }

    #[test]
    fn failed_sweeps_are_one_incident_until_one_succeeds() {
        let mut h = HealthState::new();
        assert!(h.after_sweep(1_000, None).is_empty());
        let e = h.after_sweep(2_000, Some("no route to 198.18.0.2".into()));
        assert_eq!(kinds(&e), ["scan_failed"]);
        assert_eq!(e[0].id(), "scanner-scan_failed-2000:opened");
        assert_eq!(e[0].monitor(), "");
        assert!(h.after_sweep(3_000, Some("other".into())).is_empty());
        assert_eq!(h.failing().unwrap().error, "no route to 198.18.0.2");
        let e = h.after_sweep(4_000, None);
        assert_eq!(kinds(&e), ["scan_recovered"]);
        assert_eq!(e[0].id(), "scanner-scan_failed-2000:resolved");
        assert_eq!(e[0].at(), 4_000);
        assert!(h.failing().is_none());
        assert!(h.after_sweep(5_000, None).is_empty());
    }

    #[test]
    fn a_monitor_is_stale_after_twice_its_period_and_fresh_after_a_scan() {
        let mut h = HealthState::new();
        let every = 1_000;
        assert!(
            h.check(2_000, &[age("web", every, 0)]).is_empty(),
            "exactly 2x"
        );
        let e = h.check(2_001, &[age("web", every, 0)]);
        assert_eq!(kinds(&e), ["monitor_stale"]);
        assert_eq!(e[0].id(), "web-monitor_stale-2001:opened");
        assert!(h.check(9_000, &[age("web", every, 0)]).is_empty(), "once");
        let e = h.check(9_500, &[age("web", every, 9_400)]);
        assert_eq!(kinds(&e), ["monitor_fresh"]);
        assert_eq!(e[0].id(), "web-monitor_stale-2001:resolved");
        assert_eq!(h.stale().count(), 0);
        // Stale again, then removed.
        h.check(20_000, &[age("web", every, 9_400)]);
        let e = h.check(21_000, &[]);
        assert!(matches!(
            &e[..],
            [HealthEvent::MonitorFresh { scanned: false, .. }]
        ));
        let ages = [age("a", 1_000, 0), age("b", 10, 50)];
        assert_eq!(HealthState::new().next_check(&ages), Some(71));
        // A stale monitor is left out: it turns fresh by a scan, not by time.
        h.check(100, &ages);
        assert_eq!(kinds(&h.check(100, &ages)), Vec::<&str>::new());
        assert_eq!(h.stale().map(|(n, _)| n).collect::<Vec<_>>(), ["b"]);
        assert_eq!(h.next_check(&ages), Some(2_001));
    }

    #[test]
    fn state_round_trips() {
        let mut h = HealthState::new();
        h.after_sweep(1, Some("x".into()));
        h.check(10_000, &[age("web", 1_000, 0)]);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<HealthState>(&json).unwrap(), h);
        assert_eq!(
            serde_json::from_str::<HealthState>("{}").unwrap(),
            HealthState::new()
        );
    }

    proptest! {
        /// Every opened incident is resolved at most once and only after it
        /// opened; ids never repeat for a new incident.
        #[test]
        fn incidents_open_and_close_in_pairs(
            sweeps in proptest::collection::vec(any::<bool>(), 0..40),
        ) {
            let mut h = HealthState::new();
            let mut open = false;
            let mut ids = std::collections::HashSet::new();
            for (i, ok) in sweeps.into_iter().enumerate() {
                let at = i as Millis * 10;
                for e in h.after_sweep(at, (!ok).then(|| "e".to_string())) {
                    prop_assert!(ids.insert(e.id()));
                    match e {
                        HealthEvent::ScanFailed(_) => { prop_assert!(!open); open = true; }
                        HealthEvent::ScanRecovered { .. } => { prop_assert!(open); open = false; }
                        _ => prop_assert!(false),
                    }
                }
                prop_assert_eq!(open, h.failing().is_some());
            }
        }
    }
}
