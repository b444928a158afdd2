//! `/api/v1/agents`: the scan agents the coordinator has seen (issue 14).

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::Reader;
use crate::http::AppState;
use crate::http::problem::Problem;
use crate::store::AgentRow;

/// One agent: the store's row and whether it is live.
#[derive(Debug, Serialize)]
pub struct AgentItem {
    #[serde(flatten)]
    pub agent: AgentRow,
    /// `live`, `silent` or `gone` ([`AgentRow::state`]).
    pub state: &'static str,
}

/// What `GET /agents` answers.
#[derive(Debug, Serialize)]
pub struct Agents {
    /// Every agent seen (gone ones until pruned), by name.
    pub items: Vec<AgentItem>,
    pub live: usize,
    pub silent: usize,
    pub gone: usize,
}

/// `GET /agents`
pub async fn list(State(state): State<AppState>, _: Reader) -> Result<Json<Agents>, Problem> {
    let rows = state.read(|store| store.agents()).await?;
    Ok(Json(agents(rows, crate::daemon::now_ms())))
}

/// The answer for `rows` at `now`.
pub fn agents(rows: Vec<AgentRow>, now: palisade_core::monitor::Millis) -> Agents {
    let count = |state: &str| rows.iter().filter(|a| a.state(now) == state).count();
    Agents {
        live: count("live"),
        silent: count("silent"),
        gone: count("gone"),
        items: rows
            .into_iter()
            .map(|agent| AgentItem {
                state: agent.state(now),
                agent,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_written_with_their_state() {
        let row = |name: &str, gone_at| AgentRow {
            name: name.into(),
            labels: vec!["any".into(), "site=fra1".into()],
            rate: 100_000,
            started: 1_000,
            last_beat: 5_000,
            jobs_done: 7,
            job: Some("1.2.3".into()),
            gone_at,
        };
        let json = serde_json::to_value(agents(vec![row("a", None), row("b", Some(9_000))], 9_500))
            .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "items": [
                    {"name": "a", "labels": ["any", "site=fra1"], "rate": 100000,
                     "started_ms": 1000, "last_beat_ms": 5000, "jobs_done": 7,
                     "job": "1.2.3", "gone_at_ms": null, "state": "live"},
                    {"name": "b", "labels": ["any", "site=fra1"], "rate": 100000,
                     "started_ms": 1000, "last_beat_ms": 5000, "jobs_done": 7,
                     "job": "1.2.3", "gone_at_ms": 9000, "state": "gone"},
                ],
                "live": 1,
                "silent": 0,
                "gone": 1,
            })
        );
        // No heartbeat for longer than one lives: silent.
        let later = agents(vec![row("a", None)], 5_000 + 15_001);
        assert_eq!(
            (later.live, later.silent, later.items[0].state),
            (0, 1, "silent")
        );
    }
}
