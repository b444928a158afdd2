//! `/settings`: the monitors, to add, edit, disable and delete.
//!
//! A form is checked by [`check_monitor`], the configuration file's own
//! checker: its messages are `check-config`'s, each shown next to its
//! field, and nothing changes while there is one. An edit carries the
//! version it was made from; a monitor changed since by someone else is
//! not overwritten ("changed by someone else"). Monitors of the
//! configuration file are shown read-only. After a write the daemon is
//! told ([`Command::MonitorsChanged`]); it applies the change from its next
//! scan. Writes need the admin role and the session's CSRF token.

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::fleet::count;
use super::format::{link, monitor_link, page_number, settings_link};
use super::layout::{self, Nav, Tone, csrf_field, pager, tag};
use super::{PageError, PageResult, Viewer};
use crate::config::{FieldError, MonitorDoc, check_monitor};
use crate::daemon::control::Command;
use crate::daemon::now_ms;
use crate::http::AppState;
use crate::http::auth::Role;
use crate::store::{FleetQuery, FleetSort, ManagedBy, MonitorWriteError, StoredMonitor};

/// Monitors a page of the list.
pub const PER_PAGE: u32 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/settings", get(list))
        .route("/settings/new", get(new_form).post(create))
        .route("/settings/monitors/{name}", get(edit_form).post(update))
        .route("/settings/monitors/{name}/enabled", post(set_enabled))
        .route("/settings/monitors/{name}/delete", post(delete))
}

/// The fields of the form, in order: key, label, hint.
const FIELDS: [(&str, &str, &str); 11] = [
    (
        "name",
        "Name",
        "Letters, digits, - and _: it names the monitor in events and NATS subjects.",
    ),
    (
        "host",
        "Host",
        "An address or a host name (every address it resolves to is scanned).",
    ),
    (
        "expected_open",
        "Expected open ports",
        "Ports and ranges, e.g. 22,80,8000-8100. Every other port should be closed.",
    ),
    (
        "every",
        "Check every",
        "How often all 65,535 ports are scanned, e.g. 12h, 30m.",
    ),
    (
        "confirm",
        "Confirm after",
        "How many scans in a row must show a change before it is an incident.",
    ),
    (
        "recheck",
        "Re-check after",
        "When to re-check a port that changed, e.g. 5m, or off.",
    ),
    ("ping", "Ping the host", "Send ICMP echo in every scan."),
    (
        "answer_all_threshold",
        "Answers-all threshold",
        "More unexpected open ports than this is one finding (a SYN proxy or tarpit).",
    ),
    (
        "max_port_events",
        "Most port events a scan",
        "More port events than this in one scan go out as one summary.",
    ),
    (
        "ports",
        "Ports scanned",
        "The ports a full scan covers (expected ones always are), e.g. 1-1024; default all, 1-65535.",
    ),
    (
        "agent_label",
        "Agent label",
        "With scan agents ([cluster]): only agents with this label scan it, e.g. site=fra1; empty: any agent.",
    ),
];

/// What the form holds, as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MonitorForm {
    pub csrf: Option<String>,
    pub version: Option<String>,
    pub name: String,
    pub host: String,
    pub expected_open: String,
    pub every: String,
    pub confirm: String,
    pub recheck: String,
    /// A checkbox: present when ticked.
    pub ping: Option<String>,
    /// A checkbox: present when ticked.
    pub enabled: Option<String>,
    pub answer_all_threshold: String,
    pub max_port_events: String,
    pub ports: String,
    pub agent_label: String,
}

impl MonitorForm {
    /// The form of a stored monitor.
    pub fn of(monitor: &StoredMonitor) -> MonitorForm {
        let doc = MonitorDoc::of(&monitor.spec);
        let ticked = |on: bool| on.then(|| "on".to_owned());
        MonitorForm {
            csrf: None,
            version: Some(monitor.version.to_string()),
            name: doc.name,
            host: doc.host,
            expected_open: doc.expected_open,
            every: doc.every,
            confirm: doc.confirm.to_string(),
            recheck: doc.recheck,
            ping: ticked(doc.ping),
            enabled: ticked(monitor.enabled),
            answer_all_threshold: doc.answer_all_threshold.to_string(),
            max_port_events: doc.max_port_events.to_string(),
            ports: doc.ports,
            agent_label: doc.agent_label.unwrap_or_default(),
        }
    }

    /// An empty form for a new monitor: the defaults filled in.
    pub fn new_monitor() -> MonitorForm {
        let defaults = MonitorForm::of(&StoredMonitor {
            spec: palisade_core::monitor::MonitorSpec::default(),
            managed_by: ManagedBy::Api,
            enabled: true,
            version: 0,
            created_ms: 0,
            updated_ms: 0,
        });
        MonitorForm {
            version: None,
            name: String::new(),
            host: String::new(),
            expected_open: String::new(),
            ..defaults
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.is_some()
    }

    fn text(&self, key: &str) -> &str {
        match key {
            "name" => &self.name,
            "host" => &self.host,
            "expected_open" => &self.expected_open,
            "every" => &self.every,
            "confirm" => &self.confirm,
            "recheck" => &self.recheck,
            "answer_all_threshold" => &self.answer_all_threshold,
            "max_port_events" => &self.max_port_events,
            "ports" => &self.ports,
            "agent_label" => &self.agent_label,
            _ => "",
        }
    }

    /// The monitor as the `[[monitor]]` keys [`check_monitor`] checks:
    /// text as typed (numbers as numbers when they are), an empty optional
    /// field left out (its default applies), `name` as given.
    pub fn fields(&self, name: &str) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("name".into(), Value::String(name.trim().to_owned()));
        fields.insert("host".into(), Value::String(self.host.trim().to_owned()));
        fields.insert(
            "expected_open".into(),
            Value::String(self.expected_open.trim().to_owned()),
        );
        for key in ["every", "recheck", "ports", "agent_label"] {
            let text = self.text(key).trim();
            if !text.is_empty() {
                fields.insert(key.into(), Value::String(text.to_owned()));
            }
        }
        for key in ["confirm", "answer_all_threshold", "max_port_events"] {
            let text = self.text(key).trim();
            if text.is_empty() {
                continue;
            }
            let value = match text.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::String(text.to_owned()),
            };
            fields.insert(key.into(), value);
        }
        fields.insert("ping".into(), Value::Bool(self.ping.is_some()));
        fields
    }
}

/// Whether `error` is about the form field `key`.
fn about(error: &FieldError, key: &str) -> bool {
    error.field == key
        || error
            .field
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'))
}

/// The form: adding a monitor, or editing one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    New,
    Edit(String),
}

/// Something said above a form or the list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Notice {
    tone: &'static str,
    text: String,
}

impl Notice {
    fn ok(text: String) -> Notice {
        Notice { tone: "ok", text }
    }
    fn warn(text: String) -> Notice {
        Notice { tone: "warn", text }
    }
    fn error(text: String) -> Notice {
        Notice {
            tone: "error",
            text,
        }
    }
}

fn notices(list: &[Notice]) -> Markup {
    html! {
        @for n in list {
            div class=(format!("notice {}", n.tone)) role=(if n.tone == "error" { "alert" } else { "status" }) {
                p { (n.text) }
            }
        }
    }
}

fn form_page(
    viewer: &Viewer,
    mode: &Mode,
    form: &MonitorForm,
    errors: &[FieldError],
    said: &[Notice],
) -> Markup {
    let (title, action, submit) = match mode {
        Mode::New => (
            "Add a monitor".to_owned(),
            "/settings/new".to_owned(),
            "Add the monitor",
        ),
        Mode::Edit(name) => (format!("Edit {name}"), settings_link(name), "Save"),
    };
    let general: Vec<&FieldError> = errors
        .iter()
        .filter(|e| !FIELDS.iter().any(|(key, _, _)| about(e, key)))
        .collect();
    let advanced_open = errors.iter().any(|e| {
        [
            "answer_all_threshold",
            "max_port_events",
            "ports",
            "agent_label",
        ]
        .iter()
        .any(|key| about(e, key))
    });
    let field = |key: &'static str, label: &str, hint: &str, kind: &str| {
        let mine: Vec<&FieldError> = errors.iter().filter(|e| about(e, key)).collect();
        let error_id = format!("{key}-error");
        let hint_id = format!("{key}-hint");
        let described = if mine.is_empty() {
            hint_id.clone()
        } else {
            format!("{error_id} {hint_id}")
        };
        let readonly = key == "name" && matches!(mode, Mode::Edit(_));
        html! {
            div.field data-field=(key) {
                label for=(key) { (label) }
                p.hint id=(hint_id) { (hint) }
                @if !mine.is_empty() {
                    div id=(error_id) {
                        @for e in &mine { p.field-error { (e.message) } }
                    }
                }
                input id=(key) name=(key) type=(kind) value=(form.text(key))
                    readonly[readonly]
                    required[key == "name" || key == "host"]
                    spellcheck="false" autocomplete="off"
                    aria-invalid=[(!mine.is_empty()).then_some("true")]
                    aria-describedby=(described);
            }
        }
    };
    let checkbox = |key: &'static str, label: &str, hint: &str, on: bool| {
        let mine: Vec<&FieldError> = errors.iter().filter(|e| about(e, key)).collect();
        html! {
            div.field data-field=(key) {
                label.check for=(key) {
                    input id=(key) name=(key) type="checkbox" checked[on];
                    (label)
                }
                p.hint { (hint) }
                @for e in &mine { p.field-error { (e.message) } }
            }
        }
    };
    let body = html! {
        p { a href="/settings" { "← All monitors" } }
        h1 { (title) }
        (notices(said))
        @if !errors.is_empty() {
            div.notice.error role="alert" #error-summary tabindex="-1" {
                p { strong { "Nothing was saved: " (count(errors.len() as u64, "problem", "problems")) "." } }
                ul {
                    @for e in errors {
                        li {
                            @if FIELDS.iter().any(|(key, _, _)| *key == e.field) {
                                a href=(format!("#{}", e.field)) { (e.field) } ": "
                            }
                            (e.message)
                        }
                    }
                }
            }
        }
        @for e in &general { p.field-error { (e.message) } }
        form.card method="post" action=(action) novalidate {
            (csrf_field(viewer))
            @if let Some(version) = &form.version {
                input type="hidden" name="version" value=(version);
            }
            @for (key, label, hint) in &FIELDS[..6] {
                (field(key, label, hint, if matches!(*key, "confirm") { "number" } else { "text" }))
            }
            (checkbox("ping", FIELDS[6].1, FIELDS[6].2, form.ping.is_some()))
            (checkbox("enabled", "Enabled", "A disabled monitor is not scanned; its incidents resolve.", form.enabled()))
            details open[advanced_open] {
                summary { "More settings" }
                @for (key, label, hint) in &FIELDS[7..] {
                    (field(key, label, hint, if matches!(*key, "ports" | "agent_label") { "text" } else { "number" }))
                }
            }
            button type="submit" #save { (submit) }
        }
        @if let Mode::Edit(name) = mode {
            h2 { "Delete" }
            form.card method="post" action=(format!("{}/delete", settings_link(name))) {
                (csrf_field(viewer))
                @if let Some(version) = &form.version {
                    input type="hidden" name="version" value=(version);
                }
                p { "Deleting a monitor resolves its open incidents; its history stays in the store." }
                div.field {
                    label.check for="confirm-delete" {
                        input #confirm-delete type="checkbox" name="confirm" value="yes" required;
                        "Yes, delete " (name)
                    }
                }
                button.danger type="submit" { "Delete " (name) }
            }
        }
    };
    layout::page(viewer, Nav::Settings, &title, false, body)
}

/// A monitor the viewer may look at but not change here.
fn read_only_page(viewer: &Viewer, monitor: &StoredMonitor) -> Markup {
    let doc = MonitorDoc::of(&monitor.spec);
    let name = &monitor.spec.name;
    html! {
        p { a href="/settings" { "← All monitors" } }
        h1 { (name) }
        @if monitor.managed_by == ManagedBy::Config {
            div.notice role="status" #managed {
                p {
                    strong { "Managed by the config file." }
                    " Change it in the configuration file and reload the daemon (SIGHUP); it cannot be edited here."
                }
            }
        } @else if !viewer.is_admin() {
            div.notice role="status" { p { "Your token is read-only: you can look, not change." } }
        }
        dl.facts.card {
            dt { "Name" } dd { (doc.name) }
            dt { "Host" } dd { span.ports { (doc.host) } }
            dt { "Expected open ports" } dd { span.ports { (doc.expected_open) } }
            dt { "Check every" } dd { (doc.every) }
            dt { "Confirm after" } dd { (doc.confirm) }
            dt { "Re-check after" } dd { (doc.recheck) }
            dt { "Ping" } dd { @if doc.ping { "yes" } @else { "no" } }
            dt { "Enabled" } dd { @if monitor.enabled { "yes" } @else { "no" } }
            dt { "Answers-all threshold" } dd { (doc.answer_all_threshold) }
            dt { "Most port events a scan" } dd { (doc.max_port_events) }
            dt { "Ports scanned" } dd { span.ports { (doc.ports) } }
            dt { "Agent label" } dd { (doc.agent_label.as_deref().unwrap_or("any agent")) }
        }
        p { a href=(monitor_link(name)) { "The monitor's page" } }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ListParams {
    q: Option<String>,
    page: Option<String>,
    saved: Option<String>,
    deleted: Option<String>,
    stale: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<ListParams>,
) -> PageResult {
    let mut said = Vec::new();
    if let Some(name) = &params.saved {
        said.push(Notice::ok(format!(
            "Saved {name}. The daemon applies it from its next scan."
        )));
    }
    if let Some(name) = &params.deleted {
        said.push(Notice::ok(format!(
            "Deleted {name}. Its open incidents resolve; its history stays."
        )));
    }
    if let Some(name) = &params.stale {
        said.push(Notice::error(format!(
            "{name} was changed by someone else since you loaded this page: nothing was changed. \
             Look at it again and redo your change."
        )));
    }
    list_page(&state, &viewer, &params, said).await
}

async fn list_page(
    state: &AppState,
    viewer: &Viewer,
    params: &ListParams,
    said: Vec<Notice>,
) -> PageResult {
    let query = FleetQuery {
        search: params.q.clone().unwrap_or_default().trim().to_owned(),
        sort: FleetSort::Name,
        page: page_number(params.page.as_deref()),
        per_page: PER_PAGE,
        ..FleetQuery::default()
    };
    let q = query.clone();
    let (monitors, total) = state
        .read(move |store| {
            let page = store.fleet(&q)?;
            let mut monitors = Vec::with_capacity(page.rows.len());
            for row in &page.rows {
                if let Some(m) = store.monitor(&row.name)? {
                    monitors.push(m);
                }
            }
            Ok((monitors, page.total))
        })
        .await?;
    let admin = viewer.is_admin();
    let body = html! {
        h1 { "Settings" }
        (notices(&said))
        @if admin {
            div.actions { a.button href="/settings/new" #add-monitor { "Add a monitor" } }
        } @else {
            div.notice role="status" { p { "Your token is read-only: you can look, not change." } }
        }
        form.filters method="get" action="/settings" role="search" {
            label { "Search name or host" input type="search" name="q" value=(query.search); }
            button type="submit" { "Search" }
        }
        @if monitors.is_empty() {
            div.card { p { @if query.search.is_empty() { "No monitors yet." } @else { "No monitor matches." } } }
        } @else {
            div.table-wrap {
                table.cards #monitors {
                    caption { (count(total, "monitor", "monitors")) ", by name" }
                    thead {
                        tr {
                            th scope="col" { "Name" }
                            th scope="col" { "Host" }
                            th scope="col" { "Expected open" }
                            th scope="col" { "Every" }
                            th scope="col" { "Managed by" }
                            th scope="col" { "Enabled" }
                            th scope="col" { "Actions" }
                        }
                    }
                    tbody {
                        @for m in &monitors {
                            @let doc = MonitorDoc::of(&m.spec);
                            @let editable = admin && m.managed_by == ManagedBy::Api;
                            tr data-monitor=(m.spec.name) {
                                td data-label="Name" { a href=(monitor_link(&m.spec.name)) { strong { (m.spec.name) } } }
                                td data-label="Host" { span.ports { (doc.host) } }
                                td data-label="Expected open" {
                                    @if doc.expected_open.is_empty() { span.none { "none" } }
                                    @else { span.ports { (doc.expected_open) } }
                                }
                                td data-label="Every" { (doc.every) }
                                td data-label="Managed by" {
                                    @match m.managed_by {
                                        ManagedBy::Config => { (tag(Tone::Quiet, "managed by the config file")) }
                                        ManagedBy::Api => { "settings" }
                                    }
                                }
                                td data-label="Enabled" { @if m.enabled { "yes" } @else { (tag(Tone::Quiet, "disabled")) } }
                                td data-label="Actions" {
                                    div.actions {
                                        @if editable {
                                            a href=(settings_link(&m.spec.name)) { "Edit" }
                                            form method="post" action=(format!("{}/enabled", settings_link(&m.spec.name))) {
                                                (csrf_field(viewer))
                                                input type="hidden" name="version" value=(m.version);
                                                input type="hidden" name="enabled" value=(if m.enabled { "false" } else { "true" });
                                                button.secondary type="submit" {
                                                    @if m.enabled { "Disable" } @else { "Enable" }
                                                }
                                            }
                                        } @else {
                                            a href=(settings_link(&m.spec.name)) { "View" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (pager("/settings", &[("q", query.search.as_str())], "page", query.page, total, PER_PAGE, "Monitor pages"))
        }
    };
    Ok(layout::page(viewer, Nav::Settings, "Settings", false, body).into_response())
}

async fn new_form(viewer: Viewer) -> PageResult {
    viewer
        .caller
        .require(Role::Admin)
        .map_err(PageError::Denied)?;
    Ok(form_page(&viewer, &Mode::New, &MonitorForm::new_monitor(), &[], &[]).into_response())
}

async fn edit_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> PageResult {
    let monitor = load(&state, &name).await?;
    if monitor.managed_by == ManagedBy::Config || !viewer.is_admin() {
        let body = read_only_page(&viewer, &monitor);
        return Ok(layout::page(&viewer, Nav::Settings, &name, false, body).into_response());
    }
    let form = MonitorForm::of(&monitor);
    Ok(form_page(&viewer, &Mode::Edit(name), &form, &[], &[]).into_response())
}

async fn load(state: &AppState, name: &str) -> Result<StoredMonitor, PageError> {
    let wanted = name.to_owned();
    state
        .read(move |store| store.monitor(&wanted))
        .await?
        .ok_or_else(|| PageError::NotFound(format!("No monitor is named {name:?}.")))
}

/// What a write came to.
#[derive(Debug)]
enum Outcome {
    Saved {
        name: String,
        warnings: Vec<FieldError>,
    },
    Invalid(Vec<FieldError>),
    Stale {
        current: i64,
        given: i64,
    },
    ManagedByConfig,
    NotFound,
}

/// A write's refusal as an [`Outcome`]; a store failure as an error.
fn outcome(error: MonitorWriteError) -> Result<Outcome, PageError> {
    match error {
        MonitorWriteError::NotFound(_) => Ok(Outcome::NotFound),
        MonitorWriteError::Exists(name) => Ok(Outcome::Invalid(vec![FieldError {
            field: "name".into(),
            message: format!("a monitor named {name:?} exists already"),
        }])),
        MonitorWriteError::ManagedByConfig(_) => Ok(Outcome::ManagedByConfig),
        MonitorWriteError::VersionMismatch { current, given, .. } => {
            Ok(Outcome::Stale { current, given })
        }
        MonitorWriteError::Store(e) => Err(PageError::from(e)),
    }
}

/// Checks `form` (resolving its host) and, if it is valid, writes it: a
/// new monitor, or `name` at `version`.
async fn save(
    state: &AppState,
    form: &MonitorForm,
    name: String,
    version: Option<i64>,
) -> Result<Outcome, PageError> {
    let fields = form.fields(&name);
    let enabled = form.enabled();
    let labels = state.cluster_labels();
    let outcome = state
        .write(move |store| {
            let checked = match check_monitor(
                &fields,
                Some(&crate::resolve::resolve_host),
                labels.as_deref(),
            ) {
                Ok(checked) => checked,
                Err(errors) => return Ok(Outcome::Invalid(errors)),
            };
            let written = match version {
                None => store.create_monitor(&checked.spec, enabled, now_ms()),
                Some(version) => store.update_monitor(&checked.spec, enabled, version, now_ms()),
            };
            match written {
                Ok(m) => Ok(Outcome::Saved {
                    name: m.spec.name,
                    warnings: checked.warnings,
                }),
                Err(e) => outcome(e),
            }
        })
        .await?;
    if matches!(outcome, Outcome::Saved { .. }) {
        monitors_changed(state);
    }
    Ok(outcome)
}

fn monitors_changed(state: &AppState) {
    if !state.daemon().send(Command::MonitorsChanged) {
        tracing::warn!("the daemon is gone: it will load the changed monitors when it starts");
    }
}

/// The response to a write of `form` in `mode`.
async fn respond(
    state: &AppState,
    viewer: &Viewer,
    mode: Mode,
    form: MonitorForm,
    outcome: Outcome,
) -> PageResult {
    match outcome {
        Outcome::Saved { name, warnings } if warnings.is_empty() => {
            Ok(Redirect::to(&link("/settings", &[("saved", &name)])).into_response())
        }
        Outcome::Saved { name, warnings } => {
            let mut said = vec![Notice::ok(format!(
                "Saved {name}. The daemon applies it from its next scan."
            ))];
            said.extend(
                warnings
                    .into_iter()
                    .map(|w| Notice::warn(format!("Warning ({}): {}", w.field, w.message))),
            );
            list_page(state, viewer, &ListParams::default(), said).await
        }
        Outcome::Invalid(errors) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            form_page(viewer, &mode, &form, &errors, &[]),
        )
            .into_response()),
        Outcome::Stale { current, given } => {
            let said = [Notice::error(format!(
                "This monitor was changed by someone else since you opened it (now version \
                 {current}, you had {given}): your change was not saved. Reload the page to see \
                 the current definition, then redo your change."
            ))];
            Ok((
                StatusCode::CONFLICT,
                form_page(viewer, &mode, &form, &[], &said),
            )
                .into_response())
        }
        Outcome::ManagedByConfig => Ok((
            StatusCode::FORBIDDEN,
            layout::error_page(
                StatusCode::FORBIDDEN,
                "Managed by the config file",
                "This monitor is managed by the config file: change it there and reload the \
                 daemon (SIGHUP).",
                false,
            ),
        )
            .into_response()),
        Outcome::NotFound => Err(PageError::NotFound(
            "No such monitor: it may have been deleted.".to_owned(),
        )),
    }
}

async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<MonitorForm>,
) -> PageResult {
    viewer.may_write(form.csrf.as_deref())?;
    let name = form.name.clone();
    let outcome = save(&state, &form, name, None).await?;
    respond(&state, &viewer, Mode::New, form, outcome).await
}

fn version(text: Option<&str>) -> Result<i64, PageError> {
    text.and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
        PageError::BadRequest("The form lacks the monitor's version: reload the page.".into())
    })
}

async fn update(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(mut form): Form<MonitorForm>,
) -> PageResult {
    viewer.may_write(form.csrf.as_deref())?;
    let given = version(form.version.as_deref())?;
    // The name is the page's: it cannot change.
    form.name = name.clone();
    let outcome = save(&state, &form, name.clone(), Some(given)).await?;
    respond(&state, &viewer, Mode::Edit(name), form, outcome).await
}

#[derive(Debug, Default, Deserialize)]
struct EnabledForm {
    csrf: Option<String>,
    version: Option<String>,
    enabled: Option<String>,
}

async fn set_enabled(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(form): Form<EnabledForm>,
) -> PageResult {
    viewer.may_write(form.csrf.as_deref())?;
    let given = version(form.version.as_deref())?;
    let enabled = form.enabled.as_deref() == Some("true");
    let wanted = name.clone();
    let outcome = state
        .write(move |store| {
            let Some(current) = store.monitor(&wanted)? else {
                return Ok(Outcome::NotFound);
            };
            match store.update_monitor(&current.spec, enabled, given, now_ms()) {
                Ok(_) => Ok(Outcome::Saved {
                    name: wanted,
                    warnings: Vec::new(),
                }),
                Err(e) => outcome(e),
            }
        })
        .await?;
    after_list_write(&state, &viewer, name, outcome, "saved").await
}

#[derive(Debug, Default, Deserialize)]
struct DeleteForm {
    csrf: Option<String>,
    version: Option<String>,
    confirm: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(form): Form<DeleteForm>,
) -> PageResult {
    viewer.may_write(form.csrf.as_deref())?;
    let given = version(form.version.as_deref())?;
    if form.confirm.as_deref() != Some("yes") {
        let monitor = load(&state, &name).await?;
        let said = [Notice::error(format!(
            "Tick \"Yes, delete {name}\" to delete it: nothing was deleted."
        ))];
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            form_page(
                &viewer,
                &Mode::Edit(name),
                &MonitorForm::of(&monitor),
                &[],
                &said,
            ),
        )
            .into_response());
    }
    let wanted = name.clone();
    let outcome = state
        .write(move |store| match store.delete_monitor(&wanted, given) {
            Ok(()) => Ok(Outcome::Saved {
                name: wanted,
                warnings: Vec::new(),
            }),
            Err(e) => outcome(e),
        })
        .await?;
    after_list_write(&state, &viewer, name, outcome, "deleted").await
}

/// After a write from the list (enable, disable, delete): back to the list
/// saying `done` (the daemon told), or that someone else changed the
/// monitor first; anything else is the monitor's form with the problem.
async fn after_list_write(
    state: &AppState,
    viewer: &Viewer,
    name: String,
    outcome: Outcome,
    done: &str,
) -> PageResult {
    match outcome {
        Outcome::Saved { .. } => {
            monitors_changed(state);
            Ok(Redirect::to(&link("/settings", &[(done, &name)])).into_response())
        }
        Outcome::Stale { .. } => {
            Ok(Redirect::to(&link("/settings", &[("stale", &name)])).into_response())
        }
        other => {
            respond(
                state,
                viewer,
                Mode::Edit(name),
                MonitorForm::default(),
                other,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> MonitorForm {
        MonitorForm {
            name: " web-1 ".into(),
            host: "198.18.0.2".into(),
            expected_open: "22,80,8000-8100".into(),
            every: "1h".into(),
            confirm: "2".into(),
            recheck: "".into(),
            ping: Some("on".into()),
            ..MonitorForm::default()
        }
    }

    #[test]
    fn a_form_is_checked_by_the_config_checker() {
        let checked = check_monitor(&form().fields("web-1"), None, None).expect("valid");
        assert_eq!(checked.spec.name, "web-1");
        assert_eq!(checked.spec.expected_open.len(), 2 + 101);
        assert_eq!(checked.spec.every_ms, 3_600_000);
        assert!(checked.spec.ping);
        // An empty optional field takes the default.
        assert_eq!(
            checked.spec.recheck_ms,
            Some(palisade_core::monitor::DEFAULT_RECHECK_MS)
        );
        // A stored monitor's form gives the same monitor back.
        let stored = StoredMonitor {
            spec: checked.spec.clone(),
            managed_by: ManagedBy::Api,
            enabled: false,
            version: 3,
            created_ms: 0,
            updated_ms: 0,
        };
        let again = MonitorForm::of(&stored);
        assert_eq!(again.version.as_deref(), Some("3"));
        assert!(!again.enabled());
        let back = check_monitor(&again.fields("web-1"), None, None).expect("valid");
        assert_eq!(back.spec, checked.spec);
        // Its agent label too: saving the form keeps the pin.
        let labels = ["any".to_owned(), "site=fra1".to_owned()];
        let pinned = MonitorForm {
            agent_label: " site=fra1 ".into(),
            ..form()
        };
        let checked = check_monitor(&pinned.fields("web-1"), None, Some(&labels)).expect("valid");
        assert_eq!(checked.spec.agent_label.as_deref(), Some("site=fra1"));
        let stored = StoredMonitor {
            spec: checked.spec.clone(),
            ..stored
        };
        let again = MonitorForm::of(&stored);
        assert_eq!(again.agent_label, "site=fra1");
        let back = check_monitor(&again.fields("web-1"), None, Some(&labels)).expect("valid");
        assert_eq!(back.spec, checked.spec);
        // A label [cluster] does not have is the field's error.
        let errors = check_monitor(
            &MonitorForm {
                agent_label: "site=par9".into(),
                ..form()
            }
            .fields("web-1"),
            None,
            Some(&labels),
        )
        .expect_err("not a label of the cluster");
        assert!(errors.iter().any(|e| about(e, "agent_label")), "{errors:?}");
    }

    #[test]
    fn problems_carry_check_configs_messages_by_field() {
        let bad = MonitorForm {
            expected_open: "22,70000".into(),
            confirm: "many".into(),
            ..form()
        };
        let errors = check_monitor(&bad.fields("web-1"), None, None).expect_err("invalid");
        let port = errors
            .iter()
            .find(|e| about(e, "expected_open"))
            .expect("an expected_open error");
        assert_eq!(
            port.message,
            "port 70000 is out of range (allowed: 1 to 65535)"
        );
        assert!(errors.iter().any(|e| about(e, "confirm")), "{errors:?}");
    }

    #[test]
    fn field_errors_belong_to_their_field_only() {
        let e = |field: &str| FieldError {
            field: field.into(),
            message: String::new(),
        };
        assert!(about(&e("expected_open"), "expected_open"));
        assert!(about(&e("expected_open[2]"), "expected_open"));
        assert!(!about(&e("expected_open_x"), "expected_open"));
        assert!(!about(&e(""), "name"));
    }
}
