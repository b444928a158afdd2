//! The dashboard: pages rendered on the server with maud, readable without
//! JavaScript (a small embedded script refreshes the fleet and monitor
//! pages), and their embedded assets.
//!
//! * `/` the fleet ([`fleet`]), `/monitors/{name}` one monitor
//!   ([`monitor`]), `/incidents` ([`incidents`]), `/settings` ([`settings`]),
//!   `/login` and `/logout` ([`login`]); the fleet page's scan agents
//!   panel ([`agents`]); [`layout`] is their frame,
//!   [`format`] the pure helpers (times, links, pages), [`assets`] the
//!   stylesheet, script and icon.
//! * Who is looking is a [`Viewer`]: a session (the login form, or without
//!   a tokens file a session opened at the first request) or a bearer token.
//!   Every form that writes carries the session's CSRF token (field
//!   `csrf`), checked with [`Caller::check_csrf`]; writes need the admin
//!   role. Refusals are pages (403, 401), never a bare status.
//! * Every response carries the security headers of [`security_headers`]:
//!   a Content-Security-Policy of `default-src 'self'` (no inline script or
//!   style anywhere), `nosniff`, `no-referrer`, no framing.

pub mod agents;
pub mod assets;
pub mod fleet;
pub mod format;
pub mod incidents;
pub mod layout;
pub mod login;
pub mod monitor;
pub mod settings;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn, map_response};
use axum::response::{IntoResponse, Redirect, Response};
use thiserror::Error;

use super::auth::{Caller, Denied, Role, SESSION_COOKIE, session_cookie};
use super::{AppState, StoreAccessError};
use crate::store::StoreError;

/// Every page and asset.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(fleet::routes())
        .merge(monitor::routes())
        .merge(incidents::routes())
        .merge(settings::routes())
        .merge(login::routes())
        .layer(from_fn(offer_new_session))
        .merge(assets::routes())
        .layer(map_response(security_headers))
}

/// The Content-Security-Policy of every page: our own origin only, no
/// inline script or style, no plugins, no framing.
pub const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; \
                       frame-ancestors 'none'; object-src 'none'";

/// Adds the security headers (and `Cache-Control: no-store` unless the
/// response set its own: pages show live data and are private).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Where [`Viewer`] leaves the cookie of a session it opened, for
/// [`offer_new_session`] to set on the response.
#[derive(Debug, Clone, Default)]
struct NewSession(Arc<Mutex<Option<String>>>);

/// Lets [`Viewer`] open a session (without a tokens file) and sets its
/// cookie on the response.
async fn offer_new_session(mut request: Request, next: Next) -> Response {
    let slot = NewSession::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    let cookie = slot.0.lock().ok().and_then(|mut c| c.take());
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

/// Who is looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
    /// Whether callers log in (a tokens file is configured): only then is
    /// there a log-out button.
    pub auth_required: bool,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.caller.role >= Role::Admin
    }

    /// The CSRF token its forms carry (empty for a bearer caller, who
    /// needs none).
    pub fn csrf(&self) -> &str {
        self.caller.csrf.as_deref().unwrap_or("")
    }

    /// `Ok` if the viewer may write and the form carries its CSRF token.
    pub fn may_write(&self, csrf: Option<&str>) -> Result<(), PageError> {
        self.caller.check_csrf(csrf).map_err(PageError::Denied)?;
        self.caller
            .require(Role::Admin)
            .map_err(PageError::Denied)?;
        Ok(())
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Viewer, Response> {
        let auth = state.auth();
        let auth_required = auth.required();
        match auth.identify(&parts.headers) {
            Ok(caller) => Ok(Viewer {
                caller,
                auth_required,
            }),
            Err(Denied::Unauthenticated) if !auth_required => {
                let id = auth
                    .open_local_session()
                    .ok_or_else(|| PageError::Denied(Denied::Unauthenticated).into_response())?;
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={id}")) {
                    headers.insert(COOKIE, value);
                }
                let caller = auth
                    .identify(&headers)
                    .map_err(|e| PageError::Denied(e).into_response())?;
                if let Some(slot) = parts.extensions.get::<NewSession>()
                    && let Ok(mut cookie) = slot.0.lock()
                {
                    *cookie = Some(session_cookie(&id));
                }
                Ok(Viewer {
                    caller,
                    auth_required,
                })
            }
            Err(Denied::Unauthenticated) if parts.method == axum::http::Method::GET => {
                let here = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                Err(Redirect::to(&format::link("/login", &[("next", &here)])).into_response())
            }
            Err(e) => Err(PageError::Denied(e).into_response()),
        }
    }
}

/// A page that cannot be shown: rendered as a page with its status.
#[derive(Debug, Error)]
pub enum PageError {
    #[error("{0}")]
    Store(#[from] StoreAccessError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Denied(Denied),
    #[error("{0}")]
    BadRequest(String),
    #[error("the daemon is stopping: it takes no more requests")]
    DaemonGone,
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        Self::Store(StoreAccessError::Store(e))
    }
}

impl PageError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Denied(Denied::Unauthenticated | Denied::BadToken) => StatusCode::UNAUTHORIZED,
            Self::Denied(Denied::Forbidden | Denied::Csrf) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::DaemonGone => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::Store(_) => "The store could not be read",
            Self::NotFound(_) => "Not found",
            Self::Denied(Denied::Unauthenticated | Denied::BadToken) => "Please log in",
            Self::Denied(Denied::Forbidden) => "Not allowed",
            Self::Denied(Denied::Csrf) => "The form has expired",
            Self::BadRequest(_) => "Bad request",
            Self::DaemonGone => "The daemon is stopping",
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let Self::Store(e) = &self {
            tracing::error!("dashboard: {e}");
        }
        let status = self.status();
        let login = matches!(
            self,
            Self::Denied(Denied::Unauthenticated | Denied::BadToken)
        );
        (
            status,
            layout::error_page(status, self.title(), &self.to_string(), login),
        )
            .into_response()
    }
}

/// A page handler's result.
pub type PageResult = Result<Response, PageError>;
