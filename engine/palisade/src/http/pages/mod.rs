//! The dashboard: server-rendered pages (maud), embedded assets.

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
