//! The dashboard's assets, embedded in the binary and served under
//! `/assets/`: the stylesheet, the live-refresh script, the icon. Pages
//! link them with a content hash in the query (`?v=`), so they may be
//! cached for a year.

use axum::Router;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::AppState;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

pub const STYLE: Asset = Asset {
    name: "style.css",
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("../assets/style.css"),
};

pub const LIVE: Asset = Asset {
    name: "live.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../assets/live.js"),
};

pub const ICON: Asset = Asset {
    name: "favicon.svg",
    content_type: "image/svg+xml",
    body: include_bytes!("../assets/favicon.svg"),
};

const ALL: [&Asset; 3] = [&STYLE, &LIVE, &ICON];

/// A year: the URL changes with the content.
const CACHE_FOREVER: &str = "public, max-age=31536000, immutable";

impl Asset {
    /// `/assets/<name>?v=<hash of the content>`.
    pub fn url(&self) -> String {
        format!("/assets/{}?v={:016x}", self.name, fnv1a(self.body))
    }
}

/// FNV-1a, 64 bits: enough to tell one build's asset from another's.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/assets/{name}", get(serve))
}

async fn serve(Path(name): Path<String>) -> Response {
    match ALL.iter().find(|a| a.name == name) {
        Some(asset) => (
            [
                (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
                (CACHE_CONTROL, HeaderValue::from_static(CACHE_FOREVER)),
            ],
            asset.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_change_with_the_content() {
        assert!(STYLE.url().starts_with("/assets/style.css?v="));
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_ne!(STYLE.url(), LIVE.url());
    }
}
