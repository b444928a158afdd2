//! `/monitors/{name}`: one monitor. Its definition, its scan schedule,
//! per address every port open now (expected or unexpected) and every
//! expected port down, each with its detected state, first seen and
//! confirmed (or pending); host findings; the incident timeline and the
//! scan history, paged. `POST /monitors/{name}/scan` asks for a scan now.

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use palisade_core::monitor::{
    AddressView, HostFinding, HostIncidentKind, IncidentKind, Millis, MonitorSpec, PortView,
};

use super::fleet::{count, deviations, sweep_banner};
use super::format::{link, monitor_link, page_number, settings_link, words};
use super::layout::{self, Nav, Tone, csrf_field, maybe_time, pager, reachability, tag, time};
use super::{PageError, PageResult, Viewer};
use crate::config::MonitorDoc;
use crate::daemon::control::{Command, Live};
use crate::daemon::now_ms;
use crate::http::AppState;
use crate::store::{HistoryRow, ManagedBy, MonitorStatus, ScanRow, StoredMonitor};

/// Rows of the incident timeline a page.
pub const HISTORY_PER_PAGE: u32 = 20;
/// Scans a page.
pub const SCANS_PER_PAGE: u32 = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/monitors/{name}", get(monitor))
        .route("/monitors/{name}/scan", post(scan_now))
}

#[derive(Debug, Default, Deserialize)]
struct MonitorParams {
    /// The timeline's page.
    hpage: Option<String>,
    /// The scan history's page.
    spage: Option<String>,
    /// `requested` after Scan now.
    scan: Option<String>,
}

/// What the page shows, read in one go.
#[derive(Debug)]
struct MonitorData {
    monitor: StoredMonitor,
    status: Option<MonitorStatus>,
    history: Vec<HistoryRow>,
    history_total: u64,
    scans: Vec<ScanRow>,
    scans_total: u64,
}

async fn monitor(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(params): Query<MonitorParams>,
) -> PageResult {
    let hpage = page_number(params.hpage.as_deref());
    let spage = page_number(params.spage.as_deref());
    let wanted = name.clone();
    let data = state
        .read(move |store| {
            let Some(monitor) = store.monitor(&wanted)? else {
                return Ok(None);
            };
            let status = store.monitor_status(&wanted)?;
            let (history, history_total) = store.history_page(&wanted, hpage, HISTORY_PER_PAGE)?;
            let (scans, scans_total) = store.scans(&wanted, spage, SCANS_PER_PAGE)?;
            Ok(Some(MonitorData {
                monitor,
                status,
                history,
                history_total,
                scans,
                scans_total,
            }))
        })
        .await?
        .ok_or_else(|| PageError::NotFound(format!("No monitor is named {name:?}.")))?;
    let live = state.daemon().live();
    let requested = params.scan.as_deref() == Some("requested");
    let body = render(&viewer, &data, &live, now_ms(), (hpage, spage), requested);
    Ok(layout::page(&viewer, Nav::Fleet, &name, true, body).into_response())
}

#[derive(Debug, Deserialize)]
struct ScanForm {
    csrf: Option<String>,
}

async fn scan_now(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(form): Form<ScanForm>,
) -> PageResult {
    viewer.may_write(form.csrf.as_deref())?;
    let wanted = name.clone();
    let monitor = state.read(move |store| store.monitor(&wanted)).await?;
    match monitor {
        None => Err(PageError::NotFound(format!(
            "No monitor is named {name:?}."
        ))),
        Some(m) if !m.enabled => Err(PageError::BadRequest(format!(
            "Monitor {name:?} is disabled: enable it in the settings to scan it."
        ))),
        Some(_) => {
            if !state.daemon().send(Command::ScanNow(name.clone())) {
                return Err(PageError::DaemonGone);
            }
            Ok(Redirect::to(&link(&monitor_link(&name), &[("scan", "requested")])).into_response())
        }
    }
}

/// The words and tone of an incident's kind.
pub fn incident_kind(kind: &str) -> Markup {
    let tone = match kind {
        k if k == IncidentKind::ExpectedPortDown.as_str() => Tone::Down,
        k if k == IncidentKind::UnexpectedPortOpen.as_str() => Tone::Open,
        k if k == HostIncidentKind::HostUnreachable.as_str() => Tone::Open,
        k if k == HostIncidentKind::HostAnswersAllPorts.as_str() => Tone::Open,
        _ => Tone::Info,
    };
    tag(tone, &words(kind))
}

/// Confirmed when, or pending with how many scans saw it so far.
fn confirmed(now: Millis, port: &PortView, spec: &MonitorSpec) -> Markup {
    match &port.deviation {
        None => html! { span.none { "—" } },
        Some(d) => match d.confirmed_at {
            Some(at) => time(now, at),
            None => html! {
                (tag(Tone::Quiet, &format!("pending, seen {} of {}", d.seen, spec.confirmations())))
            },
        },
    }
}

fn first_seen(now: Millis, port: &PortView) -> Markup {
    maybe_time(now, port.deviation.as_ref().map(|d| d.first_seen), "—")
}

fn host_finding(now: Millis, finding: &HostFinding) -> Markup {
    html! {
        li {
            (incident_kind(finding.kind.as_str()))
            " first seen " (time(now, finding.first_seen)) "; "
            @match finding.confirmed_at {
                Some(at) => { "confirmed " (time(now, at)) }
                None => { "pending" }
            }
            @if let Some(ports) = &finding.ports {
                "; ports " span.ports { (ports.to_string()) }
            }
        }
    }
}

fn address_section(now: Millis, view: &AddressView, spec: &MonitorSpec) -> Markup {
    let address = view.address.to_string();
    html! {
        section.card data-address=(address) {
            h3 { "Address " span.ports { (address) } }
            @if !view.host.is_empty() {
                ul { @for finding in &view.host { (host_finding(now, finding)) } }
            }
            div.table-wrap {
                table.cards data-table="open" {
                    caption { "Open now on " (address) ": " (count(view.open.len() as u64, "port", "ports")) }
                    thead {
                        tr {
                            th scope="col" class="num" { "Port" }
                            th scope="col" { "Expected?" }
                            th scope="col" { "Detected state" }
                            th scope="col" { "First seen" }
                            th scope="col" { "Confirmed" }
                        }
                    }
                    tbody {
                        @for port in &view.open {
                            tr data-port=(port.port) {
                                td data-label="Port" class="num" { strong { (port.port) } }
                                td data-label="Expected?" {
                                    @if port.expected {
                                        (tag(Tone::Ok, "expected"))
                                    } @else {
                                        (tag(Tone::Open, "unexpected"))
                                    }
                                }
                                td data-label="Detected state" { (port.state.as_str()) }
                                td data-label="First seen" { (first_seen(now, port)) }
                                td data-label="Confirmed" { (confirmed(now, port, spec)) }
                            }
                        }
                        @if view.open.is_empty() {
                            tr { td colspan="5" { span.none { "No port open." } } }
                        }
                    }
                }
            }
            @if !view.expected_down.is_empty() {
                div.table-wrap {
                    table.cards data-table="down" {
                        caption { "Expected but down on " (address) ": " (count(view.expected_down.len() as u64, "port", "ports")) }
                        thead {
                            tr {
                                th scope="col" class="num" { "Port" }
                                th scope="col" { "Status" }
                                th scope="col" { "Detected state" }
                                th scope="col" { "First seen" }
                                th scope="col" { "Confirmed" }
                            }
                        }
                        tbody {
                            @for port in &view.expected_down {
                                tr data-port=(port.port) {
                                    td data-label="Port" class="num" { strong { (port.port) } }
                                    td data-label="Status" { (tag(Tone::Down, "expected port down")) }
                                    td data-label="Detected state" { (port.state.as_str()) }
                                    td data-label="First seen" { (first_seen(now, port)) }
                                    td data-label="Confirmed" { (confirmed(now, port, spec)) }
                                }
                            }
                        }
                    }
                }
            } @else {
                p { (tag(Tone::Ok, "every expected port is open")) }
            }
        }
    }
}

fn history_row(now: Millis, row: &HistoryRow) -> Markup {
    let place = |address: &Option<String>, port: u16| match (address, port) {
        (Some(a), 0) => a.clone(),
        (Some(a), p) => format!("{a} port {p}"),
        (None, 0) => "the host".to_owned(),
        (None, p) => format!("port {p}"),
    };
    match row {
        HistoryRow::StateChange {
            at_ms,
            address,
            port,
            from,
            to,
            ..
        } => html! {
            tr {
                td data-label="When" { (time(now, *at_ms)) }
                td data-label="Where" { (place(address, *port)) }
                td data-label="What" {
                    "detected " strong { (to) }
                    @match from {
                        Some(from) => { " (was " (from) ")" }
                        None => { " (first seen)" }
                    }
                }
            }
        },
        HistoryRow::Incident {
            address,
            port,
            ports,
            kind,
            state,
            first_seen_ms,
            confirmed_at_ms,
            resolved_at_ms,
            resolution,
            at_ms,
            ..
        } => html! {
            tr {
                td data-label="When" { (time(now, *at_ms)) }
                td data-label="Where" {
                    (place(address, *port))
                    @if let Some(ports) = ports { " (ports " span.ports { (ports) } ")" }
                }
                td data-label="What" {
                    (incident_kind(kind)) " (" (state) "), first seen " (time(now, *first_seen_ms))
                    ", confirmed " (time(now, *confirmed_at_ms)) ". "
                    @match resolved_at_ms {
                        Some(at) => {
                            (tag(Tone::Ok, "resolved")) " " (time(now, *at))
                            @if let Some(r) = resolution { " (" (words(r)) ")" }
                        }
                        None => { (tag(Tone::Info, "open")) }
                    }
                }
            }
        },
    }
}

fn scan_row(now: Millis, scan: &ScanRow) -> Markup {
    html! {
        tr data-scan=(scan.id) {
            td data-label="Started" { (time(now, scan.started_ms)) }
            td data-label="Kind" { (scan.kind) }
            td data-label="Result" {
                @if scan.conclusive {
                    "conclusive"
                } @else {
                    (tag(Tone::Down, "inconclusive"))
                    @if let Some(note) = &scan.note { " " (note) }
                }
            }
            td data-label="Addresses" {
                @for a in &scan.addresses {
                    div {
                        span.ports { (a.address) } ": "
                        @if a.reachable { "reachable" } @else { "no answer" }
                        @if !a.open_ports.is_empty() {
                            ", open " span.ports { (a.open_ports) }
                        }
                    }
                }
                @if scan.addresses.is_empty() { span.none { "—" } }
            }
        }
    }
}

/// The schedule of this monitor: scanning now, due, or when.
fn schedule(name: &str, enabled: bool, live: &Live, now: Millis) -> Markup {
    let sweeping = live.sweeping.as_ref().filter(|s| s.includes(name));
    html! {
        @if !enabled {
            p { (tag(Tone::Quiet, "disabled")) " This monitor is not scanned." }
        } @else if let Some(sweep) = sweeping {
            div.notice role="status" #scan-note {
                p { strong { "A " (sweep.kind) " scan of this monitor is under way" } ", started " (time(now, sweep.started_ms)) "." }
            }
        } @else {
            @match live.next_due(name) {
                Some(due) if due <= now => {
                    div.notice role="status" #scan-note {
                        p { strong { "A scan of this monitor is due now." } " It starts as soon as the scanner is free." }
                    }
                }
                Some(due) => { p { "Next full scan " (time(now, due)) "." } }
                None => { p.none { "Not scheduled yet." } }
            }
        }
    }
}

fn definition(monitor: &StoredMonitor) -> Markup {
    let doc = MonitorDoc::of(&monitor.spec);
    html! {
        dl.facts #definition {
            dt { "Host" } dd { span.ports { (doc.host) } }
            dt { "Expected open" } dd {
                @if doc.expected_open.is_empty() { span.none { "none" } }
                @else { span.ports #expected-ports { (doc.expected_open) } }
            }
            dt { "Scanned every" } dd { (doc.every) }
            dt { "Confirm after" } dd { (count(u64::from(doc.confirm), "scan", "scans")) }
            dt { "Re-check" } dd { (doc.recheck) }
            dt { "Ping" } dd { @if doc.ping { "yes" } @else { "no" } }
            dt { "Managed by" } dd {
                @match monitor.managed_by {
                    ManagedBy::Config => { "the config file (read-only here)" }
                    ManagedBy::Api => { "the settings page and the API (version " (monitor.version) ")" }
                }
            }
            dt { "Enabled" } dd { @if monitor.enabled { "yes" } @else { "no" } }
        }
    }
}

fn render(
    viewer: &Viewer,
    data: &MonitorData,
    live: &Live,
    now: Millis,
    (hpage, spage): (u32, u32),
    requested: bool,
) -> Markup {
    let monitor = &data.monitor;
    let spec = &monitor.spec;
    let name = spec.name.as_str();
    let path = monitor_link(name);
    let views = data
        .status
        .as_ref()
        .map(|s| s.state.view(spec))
        .unwrap_or_default();
    let summary = data.status.as_ref().map(|s| s.state.summary(spec));
    let hpage_text = hpage.to_string();
    let spage_text = spage.to_string();
    html! {
        h1 { (name) }
        p.sub {
            span.ports { (spec.host) }
            " · "
            @match monitor.managed_by {
                ManagedBy::Config => { (tag(Tone::Quiet, "managed by the config file")) }
                ManagedBy::Api => { (tag(Tone::Quiet, "editable")) }
            }
            @if !monitor.enabled { " " (tag(Tone::Quiet, "disabled")) }
        }
        div.actions {
            @if viewer.is_admin() && monitor.enabled {
                form method="post" action=(format!("{path}/scan")) {
                    (csrf_field(viewer))
                    button type="submit" #scan-now { "Scan now" }
                }
            }
            a.button.secondary href=(settings_link(name)) {
                @if viewer.is_admin() && monitor.managed_by == ManagedBy::Api { "Edit settings" } @else { "Settings" }
            }
            a href=(link("/incidents", &[("monitor", name)])) { "Incidents of this monitor" }
        }
        @if requested {
            div.notice.ok role="status" {
                p { "Scan requested. It runs as soon as the scanner is free; this page shows it when it is done." }
            }
        }
        p #live-status .live-status {}
        div #live data-refresh="3" {
            (sweep_banner(live, now))
            div.card #summary {
                p {
                    @match &summary {
                        Some(summary) => {
                            (reachability(summary.reachability.as_str())) " "
                            (deviations(u64::from(summary.expected_down), u64::from(summary.unexpected_open)))
                            " · " (count(u64::from(summary.open_incidents), "open incident", "open incidents"))
                        }
                        None => { (reachability("unknown")) }
                    }
                }
                (schedule(name, monitor.enabled, live, now))
                @if let Some(status) = &data.status {
                    p {
                        "Last scan " (maybe_time(now, status.last_scan_ms, "never"))
                        @if status.last_scan_conclusive == Some(false) { " " (tag(Tone::Down, "inconclusive")) }
                        ". Last conclusive full scan " (maybe_time(now, status.last_full_ms, "never")) "."
                    }
                }
            }
            h2 { "Ports now" }
            @if views.is_empty() {
                p.none { "No scan has reached this monitor's addresses yet." }
            }
            @for view in &views {
                (address_section(now, view, spec))
            }
            h2 #timeline { "Incident timeline" }
            @if data.history.is_empty() {
                p.none { "Nothing has happened yet." }
            } @else {
                div.table-wrap {
                    table.cards {
                        caption { "State changes and incidents, newest first" }
                        thead { tr { th scope="col" { "When" } th scope="col" { "Where" } th scope="col" { "What" } } }
                        tbody { @for row in &data.history { (history_row(now, row)) } }
                    }
                }
                (pager(&path, &[("spage", spage_text.as_str())], "hpage", hpage, data.history_total, HISTORY_PER_PAGE, "Timeline pages"))
            }
            h2 #scans { "Scan history" }
            @if data.scans.is_empty() {
                p.none { "No scan yet." }
            } @else {
                div.table-wrap {
                    table.cards #scan-history data-total=(data.scans_total) {
                        caption { (count(data.scans_total, "scan", "scans")) ", newest first" }
                        thead {
                            tr {
                                th scope="col" { "Started" }
                                th scope="col" { "Kind" }
                                th scope="col" { "Result" }
                                th scope="col" { "Addresses" }
                            }
                        }
                        tbody { @for scan in &data.scans { (scan_row(now, scan)) } }
                    }
                }
                (pager(&path, &[("hpage", hpage_text.as_str())], "spage", spage, data.scans_total, SCANS_PER_PAGE, "Scan history pages"))
            }
            h2 #definition-title { "Definition" }
            div.card { (definition(monitor)) }
        }
    }
}
