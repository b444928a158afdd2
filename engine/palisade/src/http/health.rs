//! `/metrics`, `/healthz`, `/readyz`: the daemon's self-monitoring.
//!
//! * `/metrics`: the Prometheus exposition ([`crate::metrics`]):
//!   OpenMetrics 1.0 when the client asks for it (Prometheus does), else
//!   the text format 0.0.4. Open without a tokens file (the server then
//!   listens on loopback only); with `http.tokens`, a token of either role
//!   (`Authorization: Bearer`; Prometheus: `authorization: {
//!   credentials_file: ... }`), else 401.
//! * `/healthz`: 200 `ok` while the process serves. Always open.
//! * `/readyz`: 200 when every check passes, else 503; the body (JSON)
//!   lists each check and why it failed ([`readiness`]). Always open.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::AppState;
use crate::daemon::control::Live;
use crate::metrics::Format;
use crate::store::Store;

/// How long `/readyz` waits for the store's write lock.
pub const READY_LOCK_WAIT: Duration = Duration::from_secs(1);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.auth().required()
        && let Err(denied) = state.auth().identify(&headers)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Bearer realm=\"palisade\"")],
            format!("{denied}\n"),
        )
            .into_response();
    }
    let format = Format::negotiate(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    let sinks = state.metrics().sinks();
    let gauges = match state.read(move |store| store.gauges(&sinks)).await {
        Ok(gauges) => gauges,
        Err(e) => {
            tracing::warn!("/metrics: cannot read the store: {e}");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the store: {e}\n"),
            )
                .into_response();
        }
    };
    match state.metrics().encode(&gauges, format) {
        Ok(text) => ([(CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let path = state.store_path().to_path_buf();
    let store = tokio::task::spawn_blocking(move || {
        Store::connect(&path)
            .and_then(|store| store.check_writable(READY_LOCK_WAIT))
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("the check failed: {e}")));
    let ready = readiness(
        store,
        state.metrics().data_path_problem(),
        &state.daemon().live(),
    );
    let status = if ready.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(ready)).into_response()
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was checked, or why it failed.
    pub detail: String,
}

/// `/readyz`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

/// Whether the daemon is ready, check by check: `store` (the store takes
/// writes: `store`, the result of [`Store::check_writable`]), `data_path`
/// (the last sweep that probed could start the data path: `data_path` is
/// why not; ready before any sweep), `last_sweep` (the last sweep
/// succeeded; ready before any) and `daemon` (it is not stopping).
pub fn readiness(store: Result<(), String>, data_path: Option<String>, live: &Live) -> Readiness {
    let check = |name, problem: Option<String>, fine: &str| Check {
        name,
        ok: problem.is_none(),
        detail: problem.unwrap_or_else(|| fine.to_owned()),
    };
    let last_sweep = match &live.last_sweep {
        None => check("last_sweep", None, "no sweep yet"),
        Some(last) => check(
            "last_sweep",
            last.failure
                .as_ref()
                .map(|why| format!("the last {} sweep failed: {why}", last.kind)),
            &format!("the last {} sweep succeeded", last.kind),
        ),
    };
    let checks = vec![
        check(
            "store",
            store
                .err()
                .map(|why| format!("the store does not take writes: {why}")),
            "the store takes writes",
        ),
        check(
            "data_path",
            data_path.map(|why| format!("the last sweep could not start the data path: {why}")),
            "the data path started (or no sweep tried yet)",
        ),
        last_sweep,
        check(
            "daemon",
            live.stopping.then(|| "the daemon is stopping".to_owned()),
            "running",
        ),
    ];
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::control::LastSweep;

    fn failed(r: &Readiness) -> Vec<&str> {
        r.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
    }

    fn last(failure: Option<&str>) -> Live {
        Live {
            last_sweep: Some(LastSweep {
                started_ms: 1,
                finished_ms: 2,
                kind: "full".into(),
                monitors: 1,
                failure: failure.map(str::to_owned),
            }),
            ..Live::default()
        }
    }

    #[test]
    fn ready_before_any_sweep_and_after_a_good_one() {
        for live in [Live::default(), last(None)] {
            let r = readiness(Ok(()), None, &live);
            assert!(r.ready, "{r:?}");
            assert_eq!(r.checks.len(), 4);
        }
    }

    #[test]
    fn each_failed_check_is_named_with_why() {
        let r = readiness(
            Ok(()),
            Some("no route to 198.18.0.2".into()),
            &last(Some("no route to 198.18.0.2")),
        );
        assert!(!r.ready);
        assert_eq!(failed(&r), ["data_path", "last_sweep"]);
        assert!(r.checks[1].detail.contains("no route to 198.18.0.2"));
        assert!(r.checks[2].detail.starts_with("the last full sweep failed"));

        let r = readiness(Err("database is locked".into()), None, &last(None));
        assert_eq!(failed(&r), ["store"]);
        assert!(r.checks[0].detail.contains("database is locked"));

        let r = readiness(
            Ok(()),
            None,
            &Live {
                stopping: true,
                ..Live::default()
            },
        );
        assert_eq!(failed(&r), ["daemon"]);
    }

    #[test]
    fn the_body_is_json_naming_every_check() {
        let r = readiness(Ok(()), None, &last(Some("1 replies lost")));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ready"], false);
        assert_eq!(json["checks"][2]["name"], "last_sweep");
        assert_eq!(json["checks"][2]["ok"], false);
    }
}
