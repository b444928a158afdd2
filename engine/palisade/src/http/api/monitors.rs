//! `/api/v1/monitors`: the fleet list, one monitor (read, create, replace,
//! delete), scan now, a monitor's history and scans.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::{ETAG, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use palisade_core::monitor::{AddressView, Millis, MonitorSummary};

use super::{
    Admin, IfMatch, MonitorInput, MonitorName, PREFIX, Page, Params, Reader, etag, if_match,
    json_object, monitor_input, monitors_changed,
};
use crate::config::{FieldError, MonitorDoc};
use crate::daemon::control::Command;
use crate::daemon::now_ms;
use crate::http::AppState;
use crate::http::problem::{Problem, ProblemKind};
use crate::store::{
    FleetFilter, FleetQuery, FleetRow, FleetSort, HistoryRow, ManagedBy, MonitorWriteError,
    ScanRow, StoredMonitor,
};

/// A row of the fleet list, with when the monitor is due next.
#[derive(Debug, Serialize)]
pub struct FleetItem {
    #[serde(flatten)]
    pub row: FleetRow,
    /// When its next full sweep is due (enabled monitors).
    pub next_due_ms: Option<Millis>,
}

/// `GET /monitors?search=&filter=&sort=&page=&per_page=`
pub async fn list(
    State(state): State<AppState>,
    _: Reader,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Page<FleetItem>>, Problem> {
    let mut params = Params::new(query);
    let search = params.text("search").unwrap_or_default();
    let filter = params
        .choice("filter", &FleetFilter::ALL, FleetFilter::as_str)
        .unwrap_or_default();
    let sort = params
        .choice("sort", &FleetSort::ALL, FleetSort::as_str)
        .unwrap_or_default();
    let paging = params.paging();
    params.finish()?;
    let query = FleetQuery {
        search,
        filter,
        sort,
        page: paging.page,
        per_page: paging.per_page,
    };
    let fleet = state.read(move |store| store.fleet(&query)).await?;
    let live = state.daemon().live();
    Ok(Json(Page {
        items: fleet
            .rows
            .into_iter()
            .map(|row| FleetItem {
                next_due_ms: live.next_due(&row.name),
                row,
            })
            .collect(),
        total: fleet.total,
        page: fleet.page,
        per_page: fleet.per_page,
    }))
}

/// What a write takes: the `[[monitor]]` keys and `enabled`. The `monitor`
/// of a [`MonitorResource`] is one, so that a read, changed, is a write.
#[derive(Debug, Serialize)]
pub struct MonitorBody {
    #[serde(flatten)]
    pub doc: MonitorDoc,
    pub enabled: bool,
}

/// What the monitor's saved state says now.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub last_scan_ms: Option<Millis>,
    pub last_scan_conclusive: Option<bool>,
    /// The start of the last conclusive full scan.
    pub last_full_ms: Option<Millis>,
    pub summary: MonitorSummary,
    /// Per address: every port open now (expected or not), every expected
    /// port down, host findings; each deviation with when it was first
    /// seen and confirmed.
    pub addresses: Vec<AddressView>,
}

/// One monitor: its definition, who manages it, its version (the ETag),
/// and what is known of it now.
#[derive(Debug, Serialize)]
pub struct MonitorResource {
    pub name: String,
    pub monitor: MonitorBody,
    pub managed_by: ManagedBy,
    pub version: i64,
    pub created_ms: Millis,
    pub updated_ms: Millis,
    /// When its next full sweep is due (an enabled monitor the daemon has
    /// taken up).
    pub next_due_ms: Option<Millis>,
    /// `null` until the monitor has been scanned.
    pub status: Option<StatusView>,
    pub last_scan: Option<ScanRow>,
    /// What the checker warned about (a host name that does not resolve
    /// now), on writes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<FieldError>,
}

/// `stored` with its state, last scan and next due time.
async fn describe(state: &AppState, stored: StoredMonitor) -> Result<MonitorResource, Problem> {
    let name = stored.spec.name.clone();
    let (status, last_scan) = state
        .read(move |store| {
            let status = store.monitor_status(&name)?;
            let (mut scans, _) = store.scans(&name, 1, 1)?;
            Ok((status, scans.pop()))
        })
        .await?;
    let spec = &stored.spec;
    Ok(MonitorResource {
        name: spec.name.clone(),
        monitor: MonitorBody {
            doc: MonitorDoc::of(spec),
            enabled: stored.enabled,
        },
        managed_by: stored.managed_by,
        version: stored.version,
        created_ms: stored.created_ms,
        updated_ms: stored.updated_ms,
        next_due_ms: state.daemon().live().next_due(&spec.name),
        status: status.map(|s| StatusView {
            last_scan_ms: s.last_scan_ms,
            last_scan_conclusive: s.last_scan_conclusive,
            last_full_ms: s.last_full_ms,
            summary: s.state.summary(spec),
            addresses: s.state.view(spec),
        }),
        last_scan,
        warnings: Vec::new(),
    })
}

/// The resource with its `ETag`, and `status`.
fn answer(status: StatusCode, resource: MonitorResource) -> Response {
    let tag = etag(resource.version);
    (status, [(ETAG, tag)], Json(resource)).into_response()
}

fn no_monitor(name: &str) -> Problem {
    Problem::not_found(format!("no monitor is named {name:?}"))
}

/// The stored monitor `name`, or a 404.
async fn stored(state: &AppState, name: &str) -> Result<StoredMonitor, Problem> {
    let key = name.to_owned();
    state
        .read(move |store| store.monitor(&key))
        .await?
        .ok_or_else(|| no_monitor(name))
}

/// A refused write as a problem.
impl From<MonitorWriteError> for Problem {
    fn from(e: MonitorWriteError) -> Problem {
        match e {
            MonitorWriteError::NotFound(name) => no_monitor(&name),
            MonitorWriteError::Exists(_) => Problem::new(ProblemKind::MonitorExists, e.to_string()),
            MonitorWriteError::ManagedByConfig(_) => {
                Problem::new(ProblemKind::ManagedByConfig, e.to_string())
            }
            MonitorWriteError::VersionMismatch { current, .. } => {
                Problem::new(ProblemKind::VersionMismatch, e.to_string())
                    .with("current_version", current)
                    .with("current_etag", etag(current))
            }
            MonitorWriteError::Store(e) => Problem::internal(&e),
        }
    }
}

/// `GET /monitors/{name}`
pub async fn read(
    State(state): State<AppState>,
    _: Reader,
    MonitorName(name): MonitorName,
) -> Result<Response, Problem> {
    let stored = stored(&state, &name).await?;
    Ok(answer(StatusCode::OK, describe(&state, stored).await?))
}

/// `POST /monitors`: 201 with `Location` and `ETag`.
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let fields = json_object(&headers, body)?;
    let MonitorInput { checked, enabled } =
        monitor_input(fields, None, state.cluster_labels()).await?;
    let spec = checked.spec;
    let created = state
        .write(move |store| Ok::<_, Problem>(store.create_monitor(&spec, enabled, now_ms())?))
        .await?;
    tracing::info!(by = %caller.name, monitor = %created.spec.name, "monitor created through the API");
    monitors_changed(&state);
    let location = format!("{PREFIX}/monitors/{}", created.spec.name);
    let mut resource = describe(&state, created).await?;
    resource.warnings = checked.warnings;
    let mut response = answer(StatusCode::CREATED, resource);
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

/// The version `If-Match` names: `*` is the current one.
async fn version_of(state: &AppState, name: &str, wanted: IfMatch) -> Result<i64, Problem> {
    match wanted {
        IfMatch::Version(version) => Ok(version),
        IfMatch::Any => Ok(stored(state, name).await?.version),
    }
}

/// A monitor the API may change: it exists and is not the configuration
/// file's (checked before the body, to say what matters first; the write
/// checks again, in its transaction).
async fn changeable(state: &AppState, name: &str) -> Result<StoredMonitor, Problem> {
    let current = stored(state, name).await?;
    if current.managed_by == ManagedBy::Config {
        return Err(MonitorWriteError::ManagedByConfig(name.to_owned()).into());
    }
    Ok(current)
}

/// `PUT /monitors/{name}`: replaces an API monitor, `If-Match` required.
pub async fn replace(
    State(state): State<AppState>,
    Admin(caller): Admin,
    MonitorName(name): MonitorName,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let wanted = if_match(&headers)?;
    changeable(&state, &name).await?;
    let fields = json_object(&headers, body)?;
    let MonitorInput { checked, enabled } =
        monitor_input(fields, Some(&name), state.cluster_labels()).await?;
    let version = version_of(&state, &name, wanted).await?;
    let spec = checked.spec;
    let updated = state
        .write(move |store| {
            Ok::<_, Problem>(store.update_monitor(&spec, enabled, version, now_ms())?)
        })
        .await?;
    tracing::info!(
        by = %caller.name, monitor = %name, version = updated.version,
        "monitor replaced through the API"
    );
    monitors_changed(&state);
    let mut resource = describe(&state, updated).await?;
    resource.warnings = checked.warnings;
    Ok(answer(StatusCode::OK, resource))
}

/// `DELETE /monitors/{name}`: 204, `If-Match` required.
pub async fn delete(
    State(state): State<AppState>,
    Admin(caller): Admin,
    MonitorName(name): MonitorName,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    let wanted = if_match(&headers)?;
    let version = version_of(&state, &name, wanted).await?;
    let key = name.clone();
    state
        .write(move |store| Ok::<_, Problem>(store.delete_monitor(&key, version)?))
        .await?;
    tracing::info!(by = %caller.name, monitor = %name, "monitor deleted through the API");
    monitors_changed(&state);
    Ok(StatusCode::NO_CONTENT)
}

/// What `scan now` answers.
#[derive(Debug, Serialize)]
pub struct ScanRequested {
    pub monitor: String,
    /// When its full sweep is due now: at once, or when the sweep under
    /// way ends.
    pub next_due_ms: Millis,
    /// A sweep is under way: the scan starts after it.
    pub sweeping: bool,
}

/// `POST /monitors/{name}/scan`: 202; a full scan of the monitor as soon as
/// the daemon is between sweeps.
pub async fn scan_now(
    State(state): State<AppState>,
    Admin(caller): Admin,
    MonitorName(name): MonitorName,
) -> Result<Response, Problem> {
    let current = stored(&state, &name).await?;
    if !current.enabled {
        return Err(Problem::not_found(format!(
            "monitor {name:?} is disabled: enable it to scan it"
        )));
    }
    let now = now_ms();
    let live = state.daemon().live();
    if live.stopping || !state.daemon().send(Command::ScanNow(name.clone())) {
        return Err(Problem::new(
            ProblemKind::DaemonUnavailable,
            "the daemon is stopping",
        ));
    }
    tracing::info!(by = %caller.name, monitor = %name, "scan requested through the API");
    let next_due_ms = live.next_due(&name).map_or(now, |due| due.min(now));
    let answer = ScanRequested {
        monitor: name,
        next_due_ms,
        sweeping: live.sweeping.is_some(),
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

/// A 404 for `name` if it is no monitor and has nothing to show (the
/// history of a deleted monitor stays readable).
async fn known(state: &AppState, name: &str, rows: u64) -> Result<(), Problem> {
    if rows > 0 {
        return Ok(());
    }
    stored(state, name).await.map(|_| ())
}

/// `GET /monitors/{name}/history?since=&port=&page=&per_page=`: state
/// changes and incidents, newest first.
pub async fn history(
    State(state): State<AppState>,
    _: Reader,
    MonitorName(name): MonitorName,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Page<HistoryRow>>, Problem> {
    let mut params = Params::new(query);
    let since = params.number("since", 0, i64::MAX);
    let port = params.number("port", 1, 65_535).map(|p| p as u16);
    let paging = params.paging();
    params.finish()?;
    let key = name.clone();
    let rows = state
        .read(move |store| store.history(&key, port, since))
        .await?;
    let total = rows.len() as u64;
    known(&state, &name, total).await?;
    let skip = (paging.page as usize - 1).saturating_mul(paging.per_page as usize);
    Ok(Json(Page {
        items: rows
            .into_iter()
            .skip(skip)
            .take(paging.per_page as usize)
            .collect(),
        total,
        page: paging.page,
        per_page: paging.per_page,
    }))
}

/// `GET /monitors/{name}/scans?page=&per_page=`: newest first, with what
/// each address answered.
pub async fn scans(
    State(state): State<AppState>,
    _: Reader,
    MonitorName(name): MonitorName,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Page<ScanRow>>, Problem> {
    let mut params = Params::new(query);
    let paging = params.paging();
    params.finish()?;
    let key = name.clone();
    let (items, total) = state
        .read(move |store| store.scans(&key, paging.page, paging.per_page))
        .await?;
    known(&state, &name, total).await?;
    Ok(Json(Page {
        items,
        total,
        page: paging.page,
        per_page: paging.per_page,
    }))
}
