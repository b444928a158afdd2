//! `/login` (a token from the tokens file opens a session: an HttpOnly,
//! SameSite=Strict cookie) and `/logout`. Without a tokens file there is
//! nothing to log in with: every page opens a session by itself.

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, http::HeaderMap};
use maud::{Markup, html};
use serde::Deserialize;

use super::format::local_path;
use super::{PageError, PageResult, Viewer, layout};
use crate::http::AppState;
use crate::http::auth::{cleared_cookie, session_cookie};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(form).post(log_in))
        .route("/logout", post(log_out))
}

#[derive(Debug, Deserialize)]
struct Next {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// Where to go after logging in: `next` if it is a path of this site.
fn after_login(next: Option<&str>) -> &str {
    next.filter(|n| local_path(n)).unwrap_or("/")
}

async fn form(State(state): State<AppState>, Query(query): Query<Next>) -> Response {
    if !state.auth().required() {
        return Redirect::to(after_login(query.next.as_deref())).into_response();
    }
    login_page(query.next.as_deref(), None).into_response()
}

fn login_page(next: Option<&str>, problem: Option<&str>) -> Markup {
    layout::bare(
        "Log in",
        html! {
            h1 { "Log in" }
            p { "Log in with an API token from the daemon's tokens file (" code { "http.tokens" } ")." }
            @if let Some(problem) = problem {
                div.notice.error role="alert" #login-error { p { (problem) } }
            }
            form.card method="post" action="/login" {
                div.field {
                    label for="token" { "Token" }
                    input #token type="password" name="token" required autocomplete="current-password"
                        autofocus aria-invalid=[problem.map(|_| "true")]
                        aria-describedby=[problem.map(|_| "login-error")];
                }
                @if let Some(next) = next.filter(|n| local_path(n)) {
                    input type="hidden" name="next" value=(next);
                }
                button type="submit" { "Log in" }
            }
        },
    )
}

async fn log_in(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let next = after_login(form.next.as_deref()).to_owned();
    match state.auth().login(&form.token) {
        Ok(id) => ([(SET_COOKIE, session_cookie(&id))], Redirect::to(&next)).into_response(),
        Err(e) => (
            StatusCode::UNAUTHORIZED,
            login_page(Some(&next), Some(&e.to_string())),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

async fn log_out(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> PageResult {
    viewer
        .caller
        .check_csrf(form.csrf.as_deref())
        .map_err(PageError::Denied)?;
    state.auth().logout(&headers);
    let to = if state.auth().required() {
        "/login"
    } else {
        "/"
    };
    Ok(([(SET_COOKIE, cleared_cookie())], Redirect::to(to)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_go_back_only_to_this_site() {
        assert_eq!(after_login(Some("/monitors/web")), "/monitors/web");
        assert_eq!(after_login(Some("//evil.example")), "/");
        assert_eq!(after_login(None), "/");
    }
}
