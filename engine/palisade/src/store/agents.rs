//! The scan agents the coordinator has seen (issue 14, docs/CLUSTER.md):
//! one row per agent name, written from the heartbeats the coordinator
//! watches in the KV bucket `PALISADE_AGENTS` ([`Store::record_agent_beat`])
//! and from their keys expiring or being deleted
//! ([`Store::record_agent_gone`]); read by `palisade status`, the API
//! (`GET /api/v1/agents`) and the dashboard ([`Store::agents`]).
//!
//! A gone agent's row stays (the dashboard shows it gone since when) until
//! a later heartbeat of the same name brings it back, or retention
//! ([`Store::prune`]) deletes it once it has been gone longer than
//! `store.retain`.

use rusqlite::params;
use serde::Serialize;

use palisade_core::cluster::AgentBeat;
use palisade_core::monitor::Millis;

use super::{Store, StoreError};

/// An agent as the store last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRow {
    /// Its name (its KV key and inbox prefix).
    pub name: String,
    /// The labels whose jobs it takes (`any` among them).
    pub labels: Vec<String>,
    /// The most probes per second it sends.
    pub rate: u64,
    /// When it started (unix ms), as its last heartbeat said.
    #[serde(rename = "started_ms")]
    pub started: Millis,
    /// When the coordinator saw its last heartbeat (unix ms).
    #[serde(rename = "last_beat_ms")]
    pub last_beat: Millis,
    /// Results it published and saw acknowledged, as its last heartbeat said.
    pub jobs_done: u64,
    /// The job it was scanning at its last heartbeat (`{sweep}.{slice}.{shard}`).
    pub job: Option<String>,
    /// When its heartbeat key expired or was deleted (unix ms); `None`
    /// while it is live.
    #[serde(rename = "gone_at_ms")]
    pub gone_at: Option<Millis>,
}

impl AgentRow {
    /// Live at `now`: no expiry or deletion of its key seen since its last
    /// beat, and that beat younger than a heartbeat's time to live.
    pub fn is_live(&self, now: Millis) -> bool {
        self.state(now) == "live"
    }

    /// `live`; `silent` (no gone seen, but no heartbeat within a
    /// heartbeat's time to live either: the agent or the coordinator that
    /// records it is not running); or `gone`. As `status --format jsonl`
    /// and the API write it.
    pub fn state(&self, now: Millis) -> &'static str {
        let ttl = crate::cluster::BEAT_TTL.as_millis() as Millis;
        match self.gone_at {
            Some(_) => "gone",
            None if now.saturating_sub(self.last_beat) > ttl => "silent",
            None => "live",
        }
    }
}

/// A count for SQLite's signed integers (a count past `i64::MAX` is kept
/// at it).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Upserts the agent's row from its heartbeat, seen at `seen` (unix
    /// ms), and clears `gone_at` (an agent that comes back under its name
    /// is live again). A beat seen before the row's last one (a late
    /// delivery) changes nothing. The beat is taken as it is: checking it
    /// (`AgentBeat::check`) is the caller's.
    pub fn record_agent_beat(&mut self, beat: &AgentBeat, seen: Millis) -> Result<(), StoreError> {
        let labels = serde_json::to_string(&beat.labels).map_err(|source| StoreError::State {
            monitor: format!("(agent {})", beat.name),
            source,
        })?;
        self.conn.execute(
            "INSERT INTO agents (name, labels, rate, started_ms, last_beat_ms, jobs_done, job,
                                 gone_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)
             ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, rate = excluded.rate,
                 started_ms = excluded.started_ms, last_beat_ms = excluded.last_beat_ms,
                 jobs_done = excluded.jobs_done, job = excluded.job, gone_at_ms = NULL
             WHERE excluded.last_beat_ms >= agents.last_beat_ms",
            params![
                beat.name,
                labels,
                count(beat.rate),
                beat.started,
                seen,
                count(beat.jobs_done),
                beat.job.map(|j| j.to_string()),
            ],
        )?;
        Ok(())
    }

    /// The agent's key expired or was deleted at `at` (unix ms): marks its
    /// row gone, and keeps it. An agent already gone keeps the time it went;
    /// a name never seen is no row.
    pub fn record_agent_gone(&mut self, name: &str, at: Millis) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE agents SET gone_at_ms = ?2 WHERE name = ?1 AND gone_at_ms IS NULL",
            params![name, at],
        )?;
        Ok(())
    }

    /// Every agent seen (live or gone, until pruned), by name.
    pub fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, labels, rate, started_ms, last_beat_ms, jobs_done, job, gone_at_ms
             FROM agents ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                AgentRow {
                    name: r.get(0)?,
                    labels: Vec::new(),
                    rate: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    started: r.get(3)?,
                    last_beat: r.get(4)?,
                    jobs_done: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                    job: r.get(6)?,
                    gone_at: r.get(7)?,
                },
                r.get::<_, String>(1)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut agent, labels) = row?;
            agent.labels = serde_json::from_str(&labels).map_err(|source| StoreError::State {
                monitor: format!("(agent {})", agent.name),
                source,
            })?;
            out.push(agent);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::cluster::{CLUSTER_VERSION, JobId};

    fn beat(name: &str, jobs_done: u64, job: Option<JobId>) -> AgentBeat {
        AgentBeat {
            version: CLUSTER_VERSION,
            name: name.into(),
            labels: vec!["any".into(), "site=fra1".into()],
            rate: 100_000,
            started: 1_000,
            jobs_done,
            job,
        }
    }

    #[test]
    fn a_beat_upserts_the_agents_row() {
        let mut store = Store::in_memory().unwrap();
        assert!(store.agents().unwrap().is_empty());
        store
            .record_agent_beat(&beat("fra1-a", 0, None), 5_000)
            .unwrap();
        let job = JobId {
            sweep: 1_700_000_000_000,
            slice: 2,
            shard: 3,
        };
        let mut second = beat("fra1-a", 7, Some(job));
        second.rate = 50_000;
        second.labels = vec!["any".into()];
        store.record_agent_beat(&second, 10_000).unwrap();
        assert_eq!(
            store.agents().unwrap(),
            [AgentRow {
                name: "fra1-a".into(),
                labels: vec!["any".into()],
                rate: 50_000,
                started: 1_000,
                last_beat: 10_000,
                jobs_done: 7,
                job: Some("1700000000000.2.3".into()),
                gone_at: None,
            }]
        );
        // A late beat (seen before the last one) changes nothing.
        store
            .record_agent_beat(&beat("fra1-a", 1, None), 9_000)
            .unwrap();
        let row = &store.agents().unwrap()[0];
        assert_eq!(
            (row.last_beat, row.jobs_done, row.rate),
            (10_000, 7, 50_000)
        );
        // A count past what SQLite holds is kept at its largest.
        store
            .record_agent_beat(&beat("fra1-a", u64::MAX, None), 11_000)
            .unwrap();
        assert_eq!(store.agents().unwrap()[0].jobs_done, i64::MAX as u64);
    }

    #[test]
    fn a_gone_agent_stays_gone_until_it_beats_again() {
        let mut store = Store::in_memory().unwrap();
        store
            .record_agent_beat(&beat("fra1-a", 3, None), 5_000)
            .unwrap();
        store.record_agent_gone("fra1-a", 20_000).unwrap();
        // Gone again later: it has been gone since the first time.
        store.record_agent_gone("fra1-a", 25_000).unwrap();
        let row = &store.agents().unwrap()[0];
        assert_eq!((row.gone_at, row.state(20_001)), (Some(20_000), "gone"));
        assert_eq!((row.last_beat, row.jobs_done), (5_000, 3), "kept");
        // A name never seen: no row.
        store.record_agent_gone("nobody", 20_000).unwrap();
        assert_eq!(store.agents().unwrap().len(), 1);
        // Back (restarted): live again, with its new start.
        let mut back = beat("fra1-a", 0, None);
        back.started = 30_000;
        store.record_agent_beat(&back, 31_000).unwrap();
        let row = &store.agents().unwrap()[0];
        assert_eq!(
            (row.gone_at, row.started, row.last_beat),
            (None, 30_000, 31_000)
        );
        assert!(row.is_live(31_000));
        // No heartbeat for longer than one lives: silent, not taken for live.
        assert_eq!(row.state(31_000 + 15_000), "live");
        assert_eq!(row.state(31_000 + 15_001), "silent");
        assert!(!row.is_live(31_000 + 15_001));
    }

    #[test]
    fn agents_are_listed_by_name() {
        let mut store = Store::in_memory().unwrap();
        for (name, seen) in [("par-b", 3), ("fra1-a", 2), ("par-a", 1), ("ams", 4)] {
            store.record_agent_beat(&beat(name, 0, None), seen).unwrap();
        }
        store.record_agent_gone("par-a", 10).unwrap();
        let names: Vec<String> = store
            .agents()
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["ams", "fra1-a", "par-a", "par-b"]);
    }

    #[test]
    fn agents_gone_before_the_cut_off_are_pruned() {
        let mut store = Store::in_memory().unwrap();
        for name in ["gone-long", "gone-lately", "live"] {
            store.record_agent_beat(&beat(name, 0, None), 500).unwrap();
        }
        store.record_agent_gone("gone-long", 1_000).unwrap();
        store.record_agent_gone("gone-lately", 50_000).unwrap();
        let budget = super::super::PruneBudget {
            batch_rows: 1_000,
            time: std::time::Duration::from_secs(3600),
        };
        let pruned = store.prune(10_000, &[], budget).unwrap();
        assert_eq!((pruned.agents, pruned.rows(), pruned.done), (1, 1, true));
        let names: Vec<String> = store
            .agents()
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(
            names,
            ["gone-lately", "live"],
            "a live agent stays, however old its last beat"
        );
    }

    #[test]
    fn a_read_only_store_lists_the_agents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        {
            let mut store = Store::open(&path).unwrap();
            store
                .record_agent_beat(&beat("fra1-a", 2, None), 5_000)
                .unwrap();
            store
                .record_agent_beat(&beat("fra1-b", 4, None), 6_000)
                .unwrap();
            store.record_agent_gone("fra1-b", 7_000).unwrap();
        }
        let store = Store::open_read_only(&path).unwrap();
        let agents = store.agents().unwrap();
        assert_eq!(agents.len(), 2);
        assert_eq!(
            (agents[0].name.as_str(), agents[0].gone_at),
            ("fra1-a", None)
        );
        assert_eq!(
            (agents[1].name.as_str(), agents[1].gone_at),
            ("fra1-b", Some(7_000))
        );
    }
}
