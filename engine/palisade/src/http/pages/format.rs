//! Pure helpers of the pages: times for people (UTC and relative), words
//! for the store's snake_case names, links with query strings, page counts.

use std::time::{Duration, UNIX_EPOCH};

use palisade_core::monitor::Millis;

/// `2025-06-01T12:34:56Z`: the `datetime` of a `<time>`.
pub fn rfc3339(at: Millis) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `2025-06-01 12:34:56 UTC`: a time as the pages show it.
pub fn utc(at: Millis) -> String {
    let text = rfc3339(at);
    format!("{} UTC", text.trim_end_matches('Z').replacen('T', " ", 1))
}

/// How long ago (or how soon) `at` is from `now`: `just now`, `42 s ago`,
/// `in 5 min`, `3 h ago`, `12 days ago`.
pub fn relative(now: Millis, at: Millis) -> String {
    let delta = now.saturating_sub(at);
    let secs = delta.unsigned_abs() / 1000;
    if secs < 2 {
        return "just now".to_owned();
    }
    let amount = if secs < 90 {
        format!("{secs} s")
    } else if secs < 90 * 60 {
        format!("{} min", (secs + 30) / 60)
    } else if secs < 48 * 3600 {
        format!("{} h", (secs + 1800) / 3600)
    } else {
        format!("{} days", (secs + 43_200) / 86_400)
    };
    if delta >= 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// The words for a store name: `expected_port_down` → `expected port
/// down`, `host_unreachable` → `host unreachable`.
pub fn words(name: &str) -> String {
    name.replace('_', " ")
}

/// `text` for a URL path segment or a query value: everything but
/// unreserved characters percent-encoded.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `path` with the non-empty `params` as its query string.
pub fn link(path: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// The page of a monitor: `/monitors/<name>`.
pub fn monitor_link(name: &str) -> String {
    format!("/monitors/{}", encode(name))
}

/// The settings page of a monitor: `/settings/monitors/<name>`.
pub fn settings_link(name: &str) -> String {
    format!("/settings/monitors/{}", encode(name))
}

/// How many pages `total` rows fill, at least 1.
pub fn page_count(total: u64, per_page: u32) -> u32 {
    let per_page = u64::from(per_page.max(1));
    u32::try_from(total.div_ceil(per_page).max(1)).unwrap_or(u32::MAX)
}

/// A page number from a query parameter: 1 unless it is a number >= 1.
pub fn page_number(text: Option<&str>) -> u32 {
    text.and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|&p| p >= 1)
        .unwrap_or(1)
}

/// Whether `next` is a path of this site (a login's redirect target): it
/// starts with one `/` and names no other host.
pub fn local_path(next: &str) -> bool {
    next.starts_with('/') && !next.starts_with("//") && !next.contains('\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 1_748_781_296_000; // 2025-06-01T12:34:56Z

    #[test]
    fn times_are_utc_and_relative() {
        assert_eq!(rfc3339(T), "2025-06-01T12:34:56Z");
        assert_eq!(utc(T), "2025-06-01 12:34:56 UTC");
        assert_eq!(relative(T, T), "just now");
        assert_eq!(relative(T + 42_000, T), "42 s ago");
        assert_eq!(relative(T, T + 300_000), "in 5 min");
        assert_eq!(relative(T + 3 * 3_600_000, T), "3 h ago");
        assert_eq!(relative(T + 12 * 86_400_000, T), "12 days ago");
        assert_eq!(relative(T, T + 89_000), "in 89 s");
    }

    #[test]
    fn links_encode_what_they_carry() {
        assert_eq!(encode("web-1_a.b~"), "web-1_a.b~");
        assert_eq!(encode("a b/c&d"), "a%20b%2Fc%26d");
        assert_eq!(
            link("/", &[("q", "db 1"), ("filter", ""), ("page", "2")]),
            "/?q=db%201&page=2"
        );
        assert_eq!(link("/incidents", &[("page", "")]), "/incidents");
        assert_eq!(monitor_link("web 1"), "/monitors/web%201");
    }

    #[test]
    fn pages_are_counted_and_read_leniently() {
        assert_eq!(page_count(0, 50), 1);
        assert_eq!(page_count(50, 50), 1);
        assert_eq!(page_count(51, 50), 2);
        assert_eq!(page_number(Some("3")), 3);
        assert_eq!(page_number(Some("0")), 1);
        assert_eq!(page_number(Some("x")), 1);
        assert_eq!(page_number(None), 1);
    }

    #[test]
    fn only_local_paths_are_redirect_targets() {
        assert!(local_path("/monitors/web?x=1"));
        assert!(!local_path("//evil.example/"));
        assert!(!local_path("https://evil.example/"));
        assert!(!local_path("/\\evil.example"));
    }

    #[test]
    fn words_read_like_words() {
        assert_eq!(words("expected_port_down"), "expected port down");
    }
}
