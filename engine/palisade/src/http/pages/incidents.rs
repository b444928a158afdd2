//! `/incidents`: open and recent incidents, newest confirmed first, each
//! linking to its monitor; paged, optionally only the open ones or one
//! monitor's.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use palisade_core::monitor::Millis;

use super::fleet::count;
use super::format::{link, monitor_link, page_number, words};
use super::layout::{self, Nav, Tone, pager, tag, time};
use super::monitor::incident_kind;
use super::{PageResult, Viewer};
use crate::daemon::now_ms;
use crate::http::AppState;
use crate::store::{IncidentQuery, IncidentRow};

/// Incidents a page.
pub const PER_PAGE: u32 = 50;

pub fn routes() -> Router<AppState> {
    Router::new().route("/incidents", get(incidents))
}

#[derive(Debug, Default, Deserialize)]
struct IncidentParams {
    /// `open`: only the open ones.
    show: Option<String>,
    monitor: Option<String>,
    page: Option<String>,
}

async fn incidents(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<IncidentParams>,
) -> PageResult {
    let query = IncidentQuery {
        monitor: params
            .monitor
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned),
        open_only: params.show.as_deref() == Some("open"),
        page: page_number(params.page.as_deref()),
        per_page: PER_PAGE,
    };
    let q = query.clone();
    let (rows, total) = state.read(move |store| store.incidents(&q)).await?;
    let body = render(&query, &rows, total, now_ms());
    Ok(layout::page(&viewer, Nav::Incidents, "Incidents", false, body).into_response())
}

fn render(query: &IncidentQuery, rows: &[IncidentRow], total: u64, now: Millis) -> Markup {
    let monitor = query.monitor.clone().unwrap_or_default();
    let show = if query.open_only { "open" } else { "" };
    let params = [("monitor", monitor.as_str()), ("show", show)];
    html! {
        h1 {
            "Incidents"
            @if let Some(m) = &query.monitor { " of " a href=(monitor_link(m)) { (m) } }
        }
        nav.actions aria-label="Which incidents" {
            @if query.open_only {
                a href=(link("/incidents", &[("monitor", monitor.as_str())])) { "Open and resolved" }
                strong aria-current="page" { "Open only" }
            } @else {
                strong aria-current="page" { "Open and resolved" }
                a href=(link("/incidents", &[("monitor", monitor.as_str()), ("show", "open")])) { "Open only" }
            }
            @if query.monitor.is_some() {
                a href=(link("/incidents", &[("show", show)])) { "Every monitor" }
            }
        }
        @if rows.is_empty() {
            div.card { p { @if query.open_only { "No open incident." } @else { "No incident yet." } } }
        } @else {
            div.table-wrap {
                table.cards #incidents {
                    caption { (count(total, "incident", "incidents")) ", newest confirmed first" }
                    thead {
                        tr {
                            th scope="col" { "Confirmed" }
                            th scope="col" { "Monitor" }
                            th scope="col" { "Where" }
                            th scope="col" { "Kind" }
                            th scope="col" { "First seen" }
                            th scope="col" { "Status" }
                        }
                    }
                    tbody {
                        @for row in rows {
                            tr data-incident=(row.id) {
                                td data-label="Confirmed" { (time(now, row.confirmed_at_ms)) }
                                td data-label="Monitor" { a href=(monitor_link(&row.monitor)) { (row.monitor) } }
                                td data-label="Where" {
                                    span.ports { (row.address.as_deref().unwrap_or("—")) }
                                    @if row.port != 0 { " port " strong { (row.port) } }
                                    @if let Some(ports) = &row.ports { " (ports " span.ports { (ports) } ")" }
                                }
                                td data-label="Kind" { (incident_kind(&row.kind)) " (" (row.state) ")" }
                                td data-label="First seen" { (time(now, row.first_seen_ms)) }
                                td data-label="Status" {
                                    @match row.resolved_at_ms {
                                        Some(at) => {
                                            (tag(Tone::Ok, "resolved")) " " (time(now, at))
                                            @if let Some(r) = &row.resolution { " (" (words(r)) ")" }
                                        }
                                        None => { (tag(Tone::Info, "open")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (pager("/incidents", &params, "page", query.page, total, PER_PAGE, "Incident pages"))
        }
    }
}
