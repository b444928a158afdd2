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
    /// `live` or `gone`.
    pub state: &'static str,
}

/// What `GET /agents` answers.
#[derive(Debug, Serialize)]
pub struct Agents {
    /// Every agent seen (gone ones until pruned), by name.
    pub items: Vec<AgentItem>,
    pub live: usize,
    pub gone: usize,
}

/// `GET /agents`
pub async fn list(State(state): State<AppState>, _: Reader) -> Result<Json<Agents>, Problem> {
    let rows = state.read(|store| store.agents()).await?;
    Ok(Json(agents(rows)))
}

/// The answer for `rows`.
pub fn agents(rows: Vec<AgentRow>) -> Agents {
    let live = rows.iter().filter(|a| a.is_live()).count();
    Agents {
        gone: rows.len() - live,
        live,
        items: rows
            .into_iter()
            .map(|agent| AgentItem {
                state: agent.state(),
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
        let json =
            serde_json::to_value(agents(vec![row("a", None), row("b", Some(9_000))])).unwrap();
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
                "gone": 1,
            })
        );
    }
}
