//! Self-monitoring in the daemon: after every sweep, and whenever a monitor
//! may have gone stale, the daemon asks the pure rules
//! ([`palisade_core::health`]) and stores what they decide, with the events'
//! outbox rows, in one transaction. The events go through the same outbox
//! and sinks as every other event.

use palisade_core::health::{HealthEvent, HealthState, MonitorAge};
use palisade_core::monitor::Millis;

use super::envelope::{health_envelope, outbox_entry};
use super::{Daemon, DaemonError};

impl Daemon {
    /// A sweep ended at `at`, failed or inconclusive (`failure`) or not.
    pub(super) fn after_sweep_health(
        &mut self,
        at: Millis,
        failure: Option<String>,
    ) -> Result<(), DaemonError> {
        let mut health = self.health.clone();
        let events = health.after_sweep(at, failure);
        self.record_health(health, &events, at)
    }

    /// Checks every monitor's age at `now` (cheap when no monitor can have
    /// become stale or fresh since the last check).
    pub(super) fn check_staleness(&mut self, now: Millis) -> Result<(), DaemonError> {
        let ages = self.monitor_ages();
        let due = HealthState::next_check(&ages).is_some_and(|at| at <= now);
        if !due && self.health.stale().count() == 0 && !self.ages_changed {
            return Ok(());
        }
        self.ages_changed = false;
        let mut health = self.health.clone();
        let events = health.check(now, &ages);
        self.record_health(health, &events, now)
    }

    /// A monitor's full scan, which ended at `finished`, was conclusive.
    /// Staleness counts from the end of a scan, so a sweep that takes
    /// longer than the period itself never makes its monitors stale.
    pub(super) fn scanned_conclusively(&mut self, monitor: &str, finished: Millis) {
        self.last_conclusive.insert(monitor.to_string(), finished);
        self.ages_changed = true;
    }

    fn monitor_ages(&self) -> Vec<MonitorAge> {
        self.config
            .monitors
            .iter()
            .map(|m| MonitorAge {
                name: m.name.clone(),
                every_ms: m.every_ms,
                last_conclusive: self
                    .last_conclusive
                    .get(&m.name)
                    .copied()
                    .unwrap_or(self.started),
            })
            .collect()
    }

    fn record_health(
        &mut self,
        health: HealthState,
        events: &[HealthEvent],
        at: Millis,
    ) -> Result<(), DaemonError> {
        if health == self.health {
            return Ok(());
        }
        let rows: Vec<(String, _)> = events
            .iter()
            .map(|e| {
                let host = self
                    .config
                    .monitors
                    .iter()
                    .find(|m| m.name == e.monitor())
                    .map_or("", |m| m.host.as_str());
                if matches!(
                    e,
                    HealthEvent::ScanFailed(_) | HealthEvent::MonitorStale { .. }
                ) {
                    tracing::warn!(kind = e.kind(), monitor = e.monitor(), "{}", e.id());
                } else {
                    tracing::info!(kind = e.kind(), monitor = e.monitor(), "{}", e.id());
                }
                (
                    e.monitor().to_string(),
                    outbox_entry(&health_envelope(e, host, &self.source)),
                )
            })
            .collect();
        self.store.record_health(&health, &rows, at)?;
        self.events += rows.len() as u64;
        self.health = health;
        Ok(())
    }
}
