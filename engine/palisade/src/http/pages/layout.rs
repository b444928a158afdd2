//! The frame of every page (head, navigation, who is logged in) and the
//! pieces pages share: times, tags, the pager, the CSRF field.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};

use palisade_core::monitor::Millis;

use super::Viewer;
use super::assets::{ICON, LIVE, STYLE};
use super::format::{link, page_count, relative, rfc3339, utc};

/// Which entry of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Fleet,
    Incidents,
    Settings,
    /// None (login, errors).
    Elsewhere,
}

/// A page for `viewer`: `live` pages get the refresh script (the page
/// marks its refreshed part `#live`).
pub fn page(viewer: &Viewer, nav: Nav, title: &str, live: bool, body: Markup) -> Markup {
    frame(Some(viewer), nav, title, live, body)
}

/// A page without a viewer (login, errors before one is known).
pub fn bare(title: &str, body: Markup) -> Markup {
    frame(None, Nav::Elsewhere, title, false, body)
}

fn frame(viewer: Option<&Viewer>, nav: Nav, title: &str, live: bool, body: Markup) -> Markup {
    let entry = |target: Nav, href: &str, text: &str| {
        html! {
            li { a href=(href) aria-current=[(nav == target).then_some("page")] { (text) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light";
                meta name="referrer" content="no-referrer";
                title { (title) " · Palisade" }
                link rel="stylesheet" href=(STYLE.url());
                link rel="icon" type="image/svg+xml" href=(ICON.url());
                @if live {
                    script src=(LIVE.url()) defer {}
                }
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    div.top-inner {
                        a.brand href="/" {
                            img src=(ICON.url()) alt="";
                            "Palisade"
                        }
                        @if viewer.is_some() {
                            nav aria-label="Main" {
                                ul.nav {
                                    (entry(Nav::Fleet, "/", "Fleet"))
                                    (entry(Nav::Incidents, "/incidents", "Incidents"))
                                    (entry(Nav::Settings, "/settings", "Settings"))
                                }
                            }
                        }
                        @if let Some(viewer) = viewer {
                            div.who {
                                span {
                                    (viewer.caller.name) " · "
                                    @if viewer.is_admin() { "admin" } @else { "read-only" }
                                }
                                @if viewer.auth_required && viewer.caller.csrf.is_some() {
                                    form method="post" action="/logout" {
                                        (csrf_field(viewer))
                                        button.secondary type="submit" { "Log out" }
                                    }
                                }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (body)
                }
                footer {
                    "Times are UTC. "
                    @if live { span { "This page refreshes itself when JavaScript is on; reload it otherwise." } }
                }
            }
        }
    }
}

/// The hidden CSRF field of a form that writes.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf()); }
}

/// A time: UTC, and how long ago (or how soon) it is.
pub fn time(now: Millis, at: Millis) -> Markup {
    html! {
        time datetime=(rfc3339(at)) { (utc(at)) }
        " "
        span.rel { "(" (relative(now, at)) ")" }
    }
}

/// [`time`], or `none` in grey.
pub fn maybe_time(now: Millis, at: Option<Millis>, none: &str) -> Markup {
    match at {
        Some(at) => time(now, at),
        None => html! { span.none { (none) } },
    }
}

/// How a tag looks: the words carry the meaning, the colour helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// As expected.
    Ok,
    /// An expected port down.
    Down,
    /// An unexpected port open.
    Open,
    Info,
    Quiet,
}

pub fn tag(tone: Tone, text: &str) -> Markup {
    let class = match tone {
        Tone::Ok => "tag tag-ok",
        Tone::Down => "tag tag-down",
        Tone::Open => "tag tag-open",
        Tone::Info => "tag tag-info",
        Tone::Quiet => "tag tag-quiet",
    };
    html! { span class=(class) { (text) } }
}

/// The words and tone of a monitor's reachability.
pub fn reachability(reachability: &str) -> Markup {
    match reachability {
        "reachable" => tag(Tone::Ok, "reachable"),
        "unreachable" => tag(Tone::Open, "unreachable"),
        "partly" => tag(Tone::Down, "partly unreachable"),
        _ => tag(Tone::Quiet, "not scanned yet"),
    }
}

/// Previous / next links of a list of `total` rows, `per_page` a page, at
/// `page`; `params` are the list's other query parameters, `key` the page's.
pub fn pager(
    path: &str,
    params: &[(&str, &str)],
    key: &str,
    page: u32,
    total: u64,
    per_page: u32,
    label: &str,
) -> Markup {
    let pages = page_count(total, per_page);
    let to = |n: u32| {
        let n = n.to_string();
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push((key, n.as_str()));
        link(path, &all)
    };
    html! {
        @if pages > 1 || page > 1 {
            nav.pager aria-label=(label) {
                @if page > 1 {
                    a href=(to(page - 1)) rel="prev" { "← Previous" }
                }
                span.here { "Page " (page) " of " (pages) " (" (total) " in all)" }
                @if page < pages {
                    a href=(to(page + 1)) rel="next" { "Next →" }
                }
            }
        }
    }
}

/// A page that says why a request was refused or failed.
pub fn error_page(status: StatusCode, title: &str, message: &str, login: bool) -> Markup {
    bare(
        title,
        html! {
            h1 { (title) }
            div.notice.error role="alert" {
                p { (message) }
            }
            p.hint { "HTTP " (status.as_u16()) }
            p {
                @if login {
                    a href="/login" { "Log in" }
                } @else {
                    a href="/" { "Back to the fleet" }
                }
            }
        },
    )
}
