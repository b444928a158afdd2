//! `/api/v1/status`, `/api/v1/incidents`, `/api/v1/events`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Serialize;
use serde_json::Value;

use palisade_core::monitor::Millis;

use super::{DEFAULT_EVENT_LIMIT, MAX_PER_PAGE, Page, Params, Reader};
use crate::daemon::control::{LastSweep, SweepUnderWay};
use crate::http::AppState;
use crate::http::problem::Problem;
use crate::store::{FleetTotals, IncidentQuery, IncidentRow};

/// The daemon now.
#[derive(Debug, Serialize)]
pub struct DaemonView {
    pub started_ms: Millis,
    pub sweeping: Option<SweepUnderWay>,
    pub last_sweep: Option<LastSweep>,
    /// The daemon is stopping.
    pub stopping: bool,
    /// Monitors the daemon schedules (the enabled ones).
    pub scheduled: usize,
    /// The soonest full sweep due.
    pub next_due_ms: Option<Millis>,
}

/// What `GET /status` answers.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This palisade's version.
    pub version: &'static str,
    pub totals: FleetTotals,
    pub daemon: DaemonView,
    /// The store's size on disk.
    pub store_bytes: u64,
}

/// `GET /status`
pub async fn status(State(state): State<AppState>, _: Reader) -> Result<Json<Status>, Problem> {
    let (totals, store_bytes) = state
        .read(|store| Ok((store.fleet_totals()?, store.size_bytes()?)))
        .await?;
    let live = state.daemon().live();
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        totals,
        daemon: DaemonView {
            started_ms: live.started_ms,
            scheduled: live.scheduled(),
            next_due_ms: live.next_full_sweep(),
            sweeping: live.sweeping,
            last_sweep: live.last_sweep,
            stopping: live.stopping,
        },
        store_bytes,
    }))
}

/// `GET /incidents?open=&monitor=&page=&per_page=`: newest confirmed
/// first; `open=true` only those still open.
pub async fn incidents(
    State(state): State<AppState>,
    _: Reader,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Page<IncidentRow>>, Problem> {
    let mut params = Params::new(query);
    let open_only = params.flag("open").unwrap_or(false);
    let monitor = params.text("monitor");
    let paging = params.paging();
    params.finish()?;
    let query = IncidentQuery {
        monitor,
        open_only,
        page: paging.page,
        per_page: paging.per_page,
    };
    let (items, total) = state.read(move |store| store.incidents(&query)).await?;
    Ok(Json(Page {
        items,
        total,
        page: paging.page,
        per_page: paging.per_page,
    }))
}

/// One event of the outbox, with its envelope as JSON.
#[derive(Debug, Serialize)]
pub struct EventItem {
    /// Its place in the outbox: pass the last one as `after` to go on.
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub monitor: String,
    pub created_ms: Millis,
    /// The CloudEvents envelope the sinks deliver.
    pub envelope: Value,
}

/// What `GET /events` answers.
#[derive(Debug, Serialize)]
pub struct Events {
    pub items: Vec<EventItem>,
    /// The `after` of the next request: the last `seq` given (or the
    /// request's `after` if none was).
    pub next_after: i64,
}

/// `GET /events?after=&limit=&monitor=`: the outbox after `after`, oldest
/// first.
pub async fn events(
    State(state): State<AppState>,
    _: Reader,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Events>, Problem> {
    let mut params = Params::new(query);
    let after = params.number("after", 0, i64::MAX).unwrap_or(0);
    let limit = params
        .number("limit", 1, i64::from(MAX_PER_PAGE))
        .map_or(DEFAULT_EVENT_LIMIT, |n| n as u32);
    let monitor = params.text("monitor");
    params.finish()?;
    let rows = state
        .read(move |store| store.events(after, limit, monitor.as_deref()))
        .await?;
    let next_after = rows.last().map_or(after, |r| r.seq);
    let items = rows
        .into_iter()
        .map(|r| EventItem {
            envelope: serde_json::from_str(&r.payload).unwrap_or(Value::String(r.payload)),
            seq: r.seq,
            id: r.id,
            kind: r.kind,
            monitor: r.monitor,
            created_ms: r.created_ms,
        })
        .collect();
    Ok(Json(Events { items, next_after }))
}
