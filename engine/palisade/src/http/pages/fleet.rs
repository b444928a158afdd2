//! `/`: the fleet. Totals on top, then every monitor (50 a page, sorted,
//! filtered and searched through the query string) with its host state,
//! last and next scan, expected ports down, unexpected ports open and open
//! incidents; the sweep under way, if any; the scan agents, if there are
//! any ([`super::agents`]).

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use palisade_core::monitor::Millis;

use super::format::{monitor_link, page_number};
use super::layout::{self, Nav, Tone, maybe_time, pager, reachability, tag, time};
use super::{PageResult, Viewer};
use crate::daemon::control::Live;
use crate::daemon::now_ms;
use crate::http::AppState;
use crate::store::{
    AgentRow, FleetFilter, FleetPage, FleetQuery, FleetRow, FleetSort, FleetTotals,
};

/// Monitors on a page of the fleet.
pub const PER_PAGE: u32 = 50;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(fleet))
}

/// The fleet's query string, read leniently (anything unknown is the
/// default).
#[derive(Debug, Default, Deserialize)]
pub struct FleetParams {
    pub q: Option<String>,
    pub filter: Option<String>,
    pub sort: Option<String>,
    pub page: Option<String>,
}

impl FleetParams {
    pub fn query(&self) -> FleetQuery {
        fn pick(text: Option<&str>) -> &str {
            text.map_or("", str::trim)
        }
        FleetQuery {
            search: pick(self.q.as_deref()).to_owned(),
            filter: FleetFilter::ALL
                .into_iter()
                .find(|f| f.as_str() == pick(self.filter.as_deref()))
                .unwrap_or_default(),
            sort: FleetSort::ALL
                .into_iter()
                .find(|s| s.as_str() == pick(self.sort.as_deref()))
                .unwrap_or_default(),
            page: page_number(self.page.as_deref()),
            per_page: PER_PAGE,
        }
    }
}

fn filter_words(filter: FleetFilter) -> &'static str {
    match filter {
        FleetFilter::All => "All monitors",
        FleetFilter::Incidents => "With an open incident",
        FleetFilter::Deviating => "With a port not as expected",
        FleetFilter::Unreachable => "Unreachable, wholly or partly",
        FleetFilter::Disabled => "Disabled",
    }
}

fn sort_words(sort: FleetSort) -> &'static str {
    match sort {
        FleetSort::Attention => "Needs attention first",
        FleetSort::Name => "Name",
        FleetSort::Host => "Host",
        FleetSort::LastScan => "Last scan, newest first",
        FleetSort::ExpectedDown => "Most expected ports down",
        FleetSort::UnexpectedOpen => "Most unexpected ports open",
    }
}

async fn fleet(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<FleetParams>,
) -> PageResult {
    let query = params.query();
    let q = query.clone();
    let (page, totals, agents) = state
        .read(move |store| Ok((store.fleet(&q)?, store.fleet_totals()?, store.agents()?)))
        .await?;
    let live = state.daemon().live();
    let body = render(&query, &page, &totals, &agents, &live, now_ms());
    Ok(layout::page(&viewer, Nav::Fleet, "Fleet", true, body).into_response())
}

/// `n` with its noun, singular or plural.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The expected-down and unexpected-open counts of a monitor, in words.
pub fn deviations(expected_down: u64, unexpected_open: u64) -> Markup {
    html! {
        @if expected_down == 0 && unexpected_open == 0 {
            (tag(Tone::Ok, "all as expected"))
        }
        @if expected_down > 0 {
            (tag(Tone::Down, &format!("{expected_down} expected down")))
            " "
        }
        @if unexpected_open > 0 {
            (tag(Tone::Open, &format!("{unexpected_open} unexpected open")))
        }
    }
}

/// The banner of the sweep under way and of a failed last sweep.
pub fn sweep_banner(live: &Live, now: Millis) -> Markup {
    html! {
        @if let Some(sweep) = &live.sweeping {
            div.notice role="status" {
                p {
                    strong { "A " (sweep.kind) " sweep is under way" }
                    " (" (count(sweep.monitors as u64, "monitor", "monitors")) "), started "
                    (time(now, sweep.started_ms)) "."
                }
            }
        }
        @if let Some(last) = &live.last_sweep {
            @if let Some(failure) = &last.failure {
                div.notice.warn role="status" {
                    p { strong { "The last sweep failed: " } (failure) }
                    p { "It ended " (time(now, last.finished_ms)) "." }
                }
            }
        }
        @if live.stopping {
            div.notice.warn role="status" { p { "The daemon is stopping." } }
        }
    }
}

/// The next scan of `row`: under way, due, when, or not at all.
fn next_scan(row: &FleetRow, live: &Live, now: Millis) -> Markup {
    let sweeping = live
        .sweeping
        .as_ref()
        .is_some_and(|s| s.includes(&row.name));
    html! {
        @if !row.enabled {
            span.none { "disabled" }
        } @else if sweeping {
            (tag(Tone::Info, "scanning now"))
        } @else {
            @match live.next_due(&row.name) {
                Some(due) if due <= now => { (tag(Tone::Info, "due now")) }
                Some(due) => { (time(now, due)) }
                None => { span.none { "not scheduled" } }
            }
        }
    }
}

pub fn render(
    query: &FleetQuery,
    page: &FleetPage,
    totals: &FleetTotals,
    agents: &[AgentRow],
    live: &Live,
    now: Millis,
) -> Markup {
    let params: Vec<(&str, &str)> = vec![
        ("q", query.search.as_str()),
        ("filter", query.filter.as_str()),
        ("sort", query.sort.as_str()),
    ];
    html! {
        h1 { "Fleet" }
        form.filters method="get" action="/" role="search" {
            label {
                "Search name or host"
                input type="search" name="q" value=(query.search);
            }
            label {
                "Show"
                select name="filter" {
                    @for f in FleetFilter::ALL {
                        option value=(f.as_str()) selected[f == query.filter] { (filter_words(f)) }
                    }
                }
            }
            label {
                "Sort by"
                select name="sort" {
                    @for s in FleetSort::ALL {
                        option value=(s.as_str()) selected[s == query.sort] { (sort_words(s)) }
                    }
                }
            }
            button type="submit" { "Apply" }
            @if !query.search.is_empty() || query.filter != FleetFilter::All || query.sort != FleetSort::Attention {
                a href="/" { "Clear" }
            }
        }
        p #live-status .live-status {}
        div #live data-refresh="5" {
            (sweep_banner(live, now))
            dl.totals aria-label="Fleet totals" {
                div { dt { "Monitors" } dd { (totals.monitors) } }
                div { dt { "Enabled" } dd { (totals.enabled) } }
                div { dt { "Open incidents" } dd { (totals.open_incidents) } }
                div { dt { "Monitors with incidents" } dd { (totals.with_incidents) } }
                div { dt { "Unreachable" } dd { (totals.unreachable) } }
                div.down { dt { "Expected ports down" } dd { (totals.expected_down) } }
                div.open { dt { "Unexpected ports open" } dd { (totals.unexpected_open) } }
            }
            @if page.rows.is_empty() {
                div.card {
                    @if totals.monitors == 0 {
                        p { "No monitors yet. " a href="/settings/new" { "Add one in the settings" } "." }
                    } @else {
                        p { "No monitor matches." }
                    }
                }
            } @else {
                div.table-wrap {
                    table.cards #fleet {
                        caption { (filter_words(query.filter)) ", " (count(page.total, "monitor", "monitors")) }
                        thead {
                            tr {
                                th scope="col" { "Monitor" }
                                th scope="col" { "Host" }
                                th scope="col" { "Host state" }
                                th scope="col" { "Ports" }
                                th scope="col" class="num" { "Open incidents" }
                                th scope="col" { "Last scan" }
                                th scope="col" { "Next scan" }
                            }
                        }
                        tbody {
                            @for row in &page.rows {
                                tr data-monitor=(row.name) {
                                    td data-label="Monitor" {
                                        a href=(monitor_link(&row.name)) { strong { (row.name) } }
                                        @if !row.enabled { " " (tag(Tone::Quiet, "disabled")) }
                                    }
                                    td data-label="Host" { span.ports.host { (row.host) } }
                                    td data-label="Host state" { (reachability(&row.reachability)) }
                                    td data-label="Ports" {
                                        @if row.last_scan_ms.is_none() {
                                            span.none { "not scanned yet" }
                                        } @else {
                                            (deviations(u64::from(row.expected_down), u64::from(row.unexpected_open)))
                                        }
                                    }
                                    td data-label="Open incidents" class="num" {
                                        @if row.open_incidents > 0 {
                                            strong { (row.open_incidents) }
                                        } @else {
                                            span.none { "0" }
                                        }
                                    }
                                    td data-label="Last scan" {
                                        (maybe_time(now, row.last_scan_ms, "never"))
                                        @if row.last_scan_conclusive == Some(false) {
                                            " " (tag(Tone::Down, "inconclusive"))
                                        }
                                    }
                                    td data-label="Next scan" { (next_scan(row, live, now)) }
                                }
                            }
                        }
                    }
                }
                (pager("/", &params, "page", page.page, page.total, page.per_page, "Fleet pages"))
            }
            p.hint {
                "Expected down: a port the monitor expects open is closed or filtered. "
                "Unexpected open: a port is open that the monitor does not expect."
            }
            (super::agents::panel(agents, now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_fall_back_to_the_defaults() {
        let params = FleetParams {
            q: Some("  web ".into()),
            filter: Some("deviating".into()),
            sort: Some("nonsense".into()),
            page: Some("-2".into()),
        };
        let q = params.query();
        assert_eq!(q.search, "web");
        assert_eq!(q.filter, FleetFilter::Deviating);
        assert_eq!(q.sort, FleetSort::Attention);
        assert_eq!((q.page, q.per_page), (1, PER_PAGE));
    }

    fn row(name: &str, down: u32, open: u32) -> FleetRow {
        FleetRow {
            name: name.into(),
            host: "198.18.0.2".into(),
            managed_by: crate::store::ManagedBy::Api,
            enabled: true,
            reachability: "reachable".into(),
            expected_down: down,
            unexpected_open: open,
            open_incidents: 2,
            last_scan_ms: Some(1_000),
            last_scan_conclusive: Some(true),
            last_full_ms: Some(1_000),
        }
    }

    #[test]
    fn deviations_are_told_apart_in_words() {
        let page = FleetPage {
            rows: vec![row("web-1", 1, 2), row("db", 0, 0)],
            total: 2,
            page: 1,
            per_page: PER_PAGE,
        };
        let html = render(
            &FleetQuery::default(),
            &page,
            &FleetTotals::default(),
            &[],
            &Live::default(),
            2_000,
        )
        .into_string();
        assert!(
            html.contains(r#"<span class="tag tag-down">1 expected down</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="tag tag-open">2 unexpected open</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="tag tag-ok">all as expected</span>"#),
            "{html}"
        );
        assert!(html.contains(r#"href="/monitors/web-1""#));
    }
}
