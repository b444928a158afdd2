//! The JSON API under `/api/v1` (docs/API.md).

use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
