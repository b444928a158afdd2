//! The JSON API under `/api/v1` (docs/API.md): monitors (list, create,
//! read, replace, delete, scan now, history, scans), status, incidents,
//! events and the scan agents.
//!
//! Reads need any role, writes the admin role; a write through a session
//! cookie carries the session's CSRF token in `X-CSRF-Token` (a bearer
//! token needs none). Monitors are checked by the configuration file's own
//! checker ([`config::check_monitor`]); a change names the version it was
//! made against (`If-Match`), so two writers cannot overwrite each other.
//! Every error is a [`Problem`].

mod agents;
mod monitors;
mod reads;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::header::{CONTENT_TYPE, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Map, Value};

use super::AppState;
use super::auth::{CSRF_HEADER, Caller, Denied, Role};
use super::problem::{Problem, ProblemKind};
use crate::config::{self, FieldError};
use crate::daemon::control::Command;

/// Where [`routes`] are nested (`http::router`).
pub const PREFIX: &str = "/api/v1";
/// Rows in a page unless `per_page` says otherwise.
pub const DEFAULT_PER_PAGE: u32 = 50;
/// Events in an answer unless `limit` says otherwise.
pub const DEFAULT_EVENT_LIMIT: u32 = 100;
/// The most rows a page holds ([`crate::store::MAX_PER_PAGE`]).
pub use crate::store::MAX_PER_PAGE;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/status", get(reads::status))
        .route("/monitors", get(monitors::list).post(monitors::create))
        .route(
            "/monitors/{name}",
            get(monitors::read)
                .put(monitors::replace)
                .delete(monitors::delete),
        )
        .route("/monitors/{name}/scan", post(monitors::scan_now))
        .route("/monitors/{name}/history", get(monitors::history))
        .route("/monitors/{name}/scans", get(monitors::scans))
        .route("/incidents", get(reads::incidents))
        .route("/events", get(reads::events))
        .route("/agents", get(agents::list))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_route)
}

async fn no_route(method: Method, uri: Uri) -> Problem {
    Problem::not_found(format!(
        "no API route {method} {PREFIX}{} (docs/API.md lists them)",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        ProblemKind::MethodNotAllowed,
        format!("{PREFIX}{} does not take {method}", uri.path()),
    )
}

/// A caller allowed to read: any role. Without a tokens file, anyone.
#[derive(Debug)]
pub struct Reader(pub Caller);

impl FromRequestParts<AppState> for Reader {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        match state.auth().identify(&parts.headers) {
            Ok(caller) => Ok(Reader(caller)),
            Err(Denied::Unauthenticated) if !state.auth().required() => Ok(Reader(Caller {
                role: Role::Admin,
                name: "local".to_owned(),
                csrf: None,
            })),
            Err(denied) => Err(denied.into()),
        }
    }
}

/// A caller allowed to write: the admin role, and through a session the
/// session's CSRF token in `X-CSRF-Token`. Without a tokens file, a write
/// still needs an `Authorization: Bearer` header (any token) or a session:
/// a page of another site cannot send either.
#[derive(Debug)]
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let caller = match state.auth().identify(&parts.headers) {
            Ok(caller) => caller,
            Err(Denied::Unauthenticated) if !state.auth().required() => {
                return Err(Problem::new(
                    ProblemKind::Unauthorized,
                    "without a tokens file, a write needs an `Authorization: Bearer` header \
                     (any token) or a logged-in session",
                ));
            }
            Err(denied) => return Err(denied.into()),
        };
        caller.require(Role::Admin)?;
        let csrf = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok());
        caller.check_csrf(csrf)?;
        Ok(Admin(caller))
    }
}

/// The `{name}` of a monitor's path.
#[derive(Debug)]
pub struct MonitorName(pub String);

impl FromRequestParts<AppState> for MonitorName {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(MonitorName(name)),
            Err(rejection) => Err(Problem::bad_request(format!(
                "the monitor's name in the path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// The query parameters of a request, taken one by one; what is wrong is
/// collected and answered at once by [`Params::finish`], each with its
/// parameter.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
    errors: Vec<FieldError>,
}

impl Params {
    pub fn new(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Params {
        match query {
            Ok(Query(pairs)) => Params {
                pairs,
                errors: Vec::new(),
            },
            Err(rejection) => Params {
                pairs: Vec::new(),
                errors: vec![FieldError {
                    field: String::new(),
                    message: rejection.body_text(),
                }],
            },
        }
    }

    fn error(&mut self, name: &str, message: String) {
        self.errors.push(FieldError {
            field: name.to_owned(),
            message,
        });
    }

    /// The value of `name`, if given (once).
    pub fn text(&mut self, name: &str) -> Option<String> {
        let mut values: Vec<String> = Vec::new();
        self.pairs.retain(|(key, value)| {
            let this = key == name;
            if this {
                values.push(value.clone());
            }
            !this
        });
        if values.len() > 1 {
            self.error(name, "given more than once".to_owned());
        }
        values.pop()
    }

    /// The value of `name` read by `parse` (whose error is the message).
    pub fn parse<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(name)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(message) => {
                self.error(name, message);
                None
            }
        }
    }

    /// A whole number from `min` to `max`.
    pub fn number(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        self.parse(name, |text| match text.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ if max == i64::MAX => Err(format!(
                "expected a whole number, at least {min}, found {text:?}"
            )),
            _ => Err(format!(
                "expected a whole number from {min} to {max}, found {text:?}"
            )),
        })
    }

    /// `true` or `false`.
    pub fn flag(&mut self, name: &str) -> Option<bool> {
        self.parse(name, |text| match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("expected true or false, found {text:?}")),
        })
    }

    /// One of `choices` (by their names).
    pub fn choice<T: Copy>(
        &mut self,
        name: &str,
        choices: &[T],
        name_of: impl Fn(T) -> &'static str,
    ) -> Option<T> {
        self.parse(name, |text| {
            choices
                .iter()
                .copied()
                .find(|&c| name_of(c) == text)
                .ok_or_else(|| {
                    let names: Vec<&str> = choices.iter().map(|&c| name_of(c)).collect();
                    format!("expected one of {}, found {text:?}", names.join(", "))
                })
        })
    }

    /// `page` (from 1, default 1) and `per_page` (1 to [`MAX_PER_PAGE`],
    /// default [`DEFAULT_PER_PAGE`]).
    pub fn paging(&mut self) -> Paging {
        let page = self.number("page", 1, i64::from(u32::MAX)).unwrap_or(1);
        let per_page = self
            .number("per_page", 1, i64::from(MAX_PER_PAGE))
            .unwrap_or(i64::from(DEFAULT_PER_PAGE));
        Paging {
            page: page as u32,
            per_page: per_page as u32,
        }
    }

    /// `Ok` if every parameter was known and right, else a 400 naming each
    /// wrong one.
    pub fn finish(mut self) -> Result<(), Problem> {
        for (key, _) in std::mem::take(&mut self.pairs) {
            if !self.errors.iter().any(|e| e.field == key) {
                self.error(&key, "unknown query parameter".to_owned());
            }
        }
        if self.errors.is_empty() {
            return Ok(());
        }
        Err(
            Problem::bad_request(format!("bad query: {}", fields_text(&self.errors)))
                .with_errors(self.errors),
        )
    }
}

/// Which page of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Paging {
    pub page: u32,
    pub per_page: u32,
}

/// A page of a list, and how many items there are in all.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
}

/// `field: message; ...`
fn fields_text(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| match e.field.as_str() {
            "" => e.message.clone(),
            field => format!("{field}: {}", e.message),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The body as a JSON object, or a 415 (not JSON), 413 (too large) or 400
/// (saying where the JSON is wrong, with `line` and `column`).
pub fn json_object(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, Problem> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !(essence == "application/json" || essence.ends_with("+json")) {
        return Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            format!(
                "send the body as JSON, with `Content-Type: application/json` (it was {:?})",
                content_type
            ),
        ));
    }
    let body = body.map_err(|rejection| {
        let kind = if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ProblemKind::PayloadTooLarge
        } else {
            ProblemKind::BadRequest
        };
        Problem::new(kind, rejection.body_text())
    })?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Problem::bad_request(format!(
            "the body must be a JSON object of [[monitor]] keys, not {}",
            json_kind(&other)
        ))),
        Err(e) => Err(
            Problem::bad_request(format!("the body is not valid JSON: {e}"))
                .with("line", e.line())
                .with("column", e.column()),
        ),
    }
}

/// What a JSON value is, in words.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A monitor as a write gives it: its `[[monitor]]` keys and `enabled`.
#[derive(Debug)]
pub struct MonitorInput {
    pub checked: config::CheckedMonitor,
    pub enabled: bool,
}

/// Reads a write's body as a monitor: `enabled` (a boolean, default true)
/// and the `[[monitor]]` keys, checked by the configuration checker with
/// the system resolver (on the blocking pool), its `agent_label` against
/// `cluster_labels` ([`AppState::cluster_labels`]). `path_name` is the name
/// in the path of a replace: the body's name must be it, or absent.
pub async fn monitor_input(
    mut fields: Map<String, Value>,
    path_name: Option<&str>,
    cluster_labels: Option<Vec<String>>,
) -> Result<MonitorInput, Problem> {
    let mut errors = Vec::new();
    let enabled = match fields.remove("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            errors.push(FieldError {
                field: "enabled".to_owned(),
                message: format!("expected true or false, found {}", json_kind(&other)),
            });
            true
        }
    };
    if let Some(path_name) = path_name {
        match fields.get("name") {
            None | Some(Value::Null) => {
                fields.insert("name".to_owned(), Value::String(path_name.to_owned()));
            }
            Some(Value::String(name)) if name == path_name => {}
            Some(_) => errors.push(FieldError {
                field: "name".to_owned(),
                message: format!(
                    "a monitor cannot be renamed: leave the name out or write {path_name:?} \
                     (create a monitor of the new name and delete this one)"
                ),
            }),
        }
    }
    let checked = tokio::task::spawn_blocking(move || {
        config::check_monitor(
            &fields,
            Some(&crate::resolve::resolve_host),
            cluster_labels.as_deref(),
        )
    })
    .await
    .map_err(|e| Problem::internal(&e))?;
    match checked {
        Ok(checked) if errors.is_empty() => Ok(MonitorInput { checked, enabled }),
        Ok(_) => Err(invalid_monitor(errors)),
        Err(mut check_errors) => {
            errors.append(&mut check_errors);
            Err(invalid_monitor(errors))
        }
    }
}

fn invalid_monitor(errors: Vec<FieldError>) -> Problem {
    Problem::new(ProblemKind::InvalidMonitor, fields_text(&errors)).with_errors(errors)
}

/// What `If-Match` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: whatever the current version is.
    Any,
    /// `"<version>"`.
    Version(i64),
}

/// The `If-Match` of a write: required (428 without), one entity tag
/// `"<version>"` or `*`.
pub fn if_match(headers: &HeaderMap) -> Result<IfMatch, Problem> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Err(Problem::new(
            ProblemKind::PreconditionRequired,
            "send `If-Match: \"<version>\"` with the ETag of your last read of the monitor, so \
             that a change made since is not overwritten",
        ));
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(IfMatch::Any);
    }
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<i64>().ok())
        .map(IfMatch::Version)
        .ok_or_else(|| {
            Problem::field(
                "If-Match",
                format!(
                    "expected one entity tag as the ETag header gives it (\"3\"), or *; found \
                     {text:?}"
                ),
            )
        })
}

/// The `ETag` of a monitor's version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Tells the daemon that the monitors changed (after every write).
fn monitors_changed(state: &AppState) {
    if !state.daemon().send(Command::MonitorsChanged) {
        tracing::warn!("the daemon is gone: the monitors' change applies at its next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    fn params(query: &str) -> Params {
        let uri: Uri = format!("/x?{query}").parse().unwrap();
        Params::new(Query::try_from_uri(&uri))
    }

    #[test]
    fn query_parameters_are_checked_and_named() {
        let mut p = params("page=2&per_page=10&open=true");
        assert_eq!(
            p.paging(),
            Paging {
                page: 2,
                per_page: 10
            }
        );
        assert_eq!(p.flag("open"), Some(true));
        p.finish().unwrap();

        let mut p = params("page=0&per_page=501&open=yes&colour=blue&page=3");
        let _ = p.paging();
        let _ = p.flag("open");
        let problem = p.finish().unwrap_err();
        let fields: Vec<&str> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["page", "per_page", "open", "colour"],
            "{problem:?}"
        );
        assert!(
            problem
                .detail
                .contains("per_page: expected a whole number from 1 to 500")
        );
        assert_eq!(problem.status(), StatusCode::BAD_REQUEST);

        let mut p = params("");
        assert_eq!(
            p.paging(),
            Paging {
                page: 1,
                per_page: DEFAULT_PER_PAGE
            }
        );
    }

    #[test]
    fn bodies_must_be_json_objects_and_say_where_they_are_wrong() {
        let mut headers = HeaderMap::new();
        let body = || Ok(Bytes::from_static(b"{\"name\": \"a\",\n \"host\": }"));
        let problem = json_object(&headers, body()).unwrap_err();
        assert_eq!(problem.kind(), ProblemKind::UnsupportedMediaType);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let problem = json_object(&headers, body()).unwrap_err();
        assert_eq!(problem.kind(), ProblemKind::BadRequest);
        // docs/API.md's example.
        let example = Bytes::from_static(br#"{"name": "web-2", "host": }"#);
        assert_eq!(
            json_object(&headers, Ok(example)).unwrap_err().detail,
            "the body is not valid JSON: expected value at line 1 column 27"
        );
        assert_eq!(problem.extensions["line"], 2);
        assert!(
            problem.detail.contains("line 2 column"),
            "{}",
            problem.detail
        );
        let problem = json_object(&headers, Ok(Bytes::from_static(b"[1]"))).unwrap_err();
        assert!(
            problem.detail.contains("not an array"),
            "{}",
            problem.detail
        );
        assert!(json_object(&headers, Ok(Bytes::from_static(b"{}"))).is_ok());
    }

    #[test]
    fn if_match_takes_one_version_or_any() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            if_match(&headers).unwrap_err().kind(),
            ProblemKind::PreconditionRequired
        );
        headers.insert(IF_MATCH, HeaderValue::from_static("\"7\""));
        assert_eq!(if_match(&headers).unwrap(), IfMatch::Version(7));
        headers.insert(IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&headers).unwrap(), IfMatch::Any);
        headers.insert(IF_MATCH, HeaderValue::from_static("7"));
        let problem = if_match(&headers).unwrap_err();
        assert_eq!(problem.errors[0].field, "If-Match");
    }

    /// A server without a tokens file (loopback only).
    fn open_state() -> AppState {
        AppState::new(
            std::path::Path::new("/nonexistent/palisade.db"),
            crate::daemon::control::Control::new(0, Default::default()).handle(),
            std::sync::Arc::new(crate::metrics::Metrics::new()),
            super::super::auth::Auth::new(None).unwrap(),
        )
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = axum::http::Request::builder().uri("/api/v1/monitors");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn session_writes_need_the_csrf_header_and_open_servers_a_bearer_header() {
        let state = open_state();
        // Without a tokens file anyone reads, but a write must show it is no
        // cross-site request: a bearer header or a session with its token.
        assert!(
            Reader::from_request_parts(&mut parts(&[]), &state)
                .await
                .is_ok()
        );
        let problem = Admin::from_request_parts(&mut parts(&[]), &state)
            .await
            .unwrap_err();
        assert_eq!(problem.kind(), ProblemKind::Unauthorized);
        assert!(
            Admin::from_request_parts(&mut parts(&[("authorization", "Bearer x")]), &state)
                .await
                .is_ok()
        );
        let session = state.auth().open_local_session().unwrap();
        let cookie = format!("{}={session}", super::super::auth::SESSION_COOKIE);
        let problem = Admin::from_request_parts(&mut parts(&[("cookie", &cookie)]), &state)
            .await
            .unwrap_err();
        assert_eq!(problem.kind(), ProblemKind::Csrf);
        let Reader(caller) = Reader::from_request_parts(&mut parts(&[("cookie", &cookie)]), &state)
            .await
            .unwrap();
        let csrf = caller.csrf.unwrap();
        let wrong = [("cookie", cookie.as_str()), ("x-csrf-token", "forged")];
        let problem = Admin::from_request_parts(&mut parts(&wrong), &state)
            .await
            .unwrap_err();
        assert_eq!(problem.status(), StatusCode::FORBIDDEN);
        let right = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
        assert!(
            Admin::from_request_parts(&mut parts(&right), &state)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_monitor_body_keeps_enabled_apart_and_names_what_is_wrong() {
        let body = |v: Value| match v {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let input = monitor_input(
            body(
                serde_json::json!({"host": "198.18.0.9", "expected_open": "22", "enabled": false}),
            ),
            Some("db"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(input.checked.spec.name, "db");
        assert!(!input.enabled);
        let problem = monitor_input(
            body(serde_json::json!({"name": "other", "host": "198.18.0.9",
                                    "expected_open": "22,70000", "enabled": "yes"})),
            Some("db"),
            None,
        )
        .await
        .unwrap_err();
        let fields: Vec<&str> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["enabled", "name", "expected_open"], "{problem:?}");
        assert_eq!(
            problem.errors[2].message,
            "port 70000 is out of range (allowed: 1 to 65535)"
        );
        assert_eq!(problem.kind(), ProblemKind::InvalidMonitor);
    }

    #[tokio::test]
    async fn a_monitor_body_names_an_agent_label_of_the_daemons_cluster() {
        let state = open_state();
        assert_eq!(state.cluster_labels(), None);
        let labels = ["any".to_owned(), "site=fra1".to_owned()];
        state.set_cluster_labels(Some(&labels));
        assert_eq!(state.cluster_labels().as_deref(), Some(&labels[..]));
        let body = |label: &str| match serde_json::json!({"host": "198.18.0.9",
                                                          "agent_label": label})
        {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let input = monitor_input(body("site=fra1"), Some("db"), state.cluster_labels())
            .await
            .unwrap();
        assert_eq!(input.checked.spec.agent_label.as_deref(), Some("site=fra1"));
        assert_eq!(input.checked.warnings, []);
        let problem = monitor_input(body("site=ams1"), Some("db"), state.cluster_labels())
            .await
            .unwrap_err();
        assert_eq!(problem.kind(), ProblemKind::InvalidMonitor);
        assert_eq!(problem.errors[0].field, "agent_label", "{problem:?}");
        // No cluster: taken, with a warning.
        state.set_cluster_labels(None);
        let input = monitor_input(body("site=ams1"), Some("db"), state.cluster_labels())
            .await
            .unwrap();
        assert_eq!(input.checked.spec.agent_label.as_deref(), Some("site=ams1"));
        assert_eq!(input.checked.warnings[0].field, "agent_label");
    }
}
