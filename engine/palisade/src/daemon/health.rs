//! Self-monitoring in the daemon: after every sweep, and whenever a monitor
//! may have gone stale, the daemon asks the pure rules
//! ([`palisade_core::health`]) and stores what they decide, with the events'
//! outbox rows, in one transaction. The events go through the same outbox
//! and sinks as every other event.

use std::collections::HashMap;

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

    /// Checks every monitor's age at `now`: at once when ages changed (a
    /// conclusive full scan, which the sweep records in `last_conclusive`:
    /// staleness counts from the end of a scan, so a sweep that takes
    /// longer than the period itself never makes its monitors stale) or the
    /// monitors did, else only when one may have become stale since. Called
    /// several times a second: nothing is looked at in between.
    pub(super) fn check_staleness(&mut self, now: Millis) -> Result<(), DaemonError> {
        if !self.ages_changed && self.next_stale_check.is_some_and(|at| at > now) {
            return Ok(());
        }
        self.ages_changed = false;
        let mut health = self.health.clone();
        let (events, next) = {
            let ages = self.monitor_ages();
            let events = health.check(now, &ages);
            (events, health.next_check(&ages))
        };
        // Nothing to become stale: look again when something changes.
        self.next_stale_check = Some(next.unwrap_or(Millis::MAX));
        self.record_health(health, &events, now)
    }

    fn monitor_ages(&self) -> Vec<MonitorAge<'_>> {
        self.config
            .monitors
            .iter()
            .map(|m| MonitorAge {
                name: &m.name,
                every_ms: m.every_ms,
                last_conclusive: self
                    .tracked
                    .get(&m.name)
                    .and_then(|t| t.last_conclusive)
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
        let hosts: HashMap<&str, &str> = if events.is_empty() {
            HashMap::new()
        } else {
            self.config
                .monitors
                .iter()
                .map(|m| (m.name.as_str(), m.host.as_str()))
                .collect()
        };
        let rows: Vec<(String, _)> = events
            .iter()
            .map(|e| {
                let host = hosts.get(e.monitor()).copied().unwrap_or("");
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
