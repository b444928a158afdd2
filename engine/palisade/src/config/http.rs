//! `[http]`: the dashboard, the API and `/metrics` (off when the section is
//! absent).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::checked::{Checked, TomlTable, keys_of};
use super::report::ConfigReport;

/// Default `http.listen`.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9180";

/// `[http]`: where the daemon serves the dashboard, the API under
/// `/api/v1`, `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// The API tokens file (`<role> <token> [name]` per line). Without
    /// one, only a loopback `listen` is allowed, and whoever reaches it is
    /// an admin.
    pub tokens: Option<PathBuf>,
}

/// `[http]` as written.
#[derive(Debug, Deserialize)]
pub(super) struct HttpSection {
    listen: Option<Checked<String>>,
    tokens: Option<Checked<String>>,
}

impl TomlTable for HttpSection {}

impl HttpSection {
    pub(super) fn check(self, report: &mut ConfigReport<'_>) -> Option<HttpSettings> {
        report.unknown_keys("http", keys_of::<Self>());
        let tokens = self
            .tokens
            .and_then(|value| report.nonempty(value, "http.tokens"))
            .map(PathBuf::from);
        let listen = match self.listen {
            None => DEFAULT_HTTP_LISTEN.parse().ok(),
            Some(value) => {
                let span = value.span.clone();
                let text = report.string(value, "http.listen")?;
                match text.parse::<SocketAddr>() {
                    Ok(listen) => {
                        if !listen.ip().is_loopback() && tokens.is_none() {
                            report.error(
                                &span,
                                "http.listen",
                                format!(
                                    "{listen} is reachable beyond this host: set `tokens` (a file \
                                     of API tokens) or listen on 127.0.0.1 or [::1] behind a \
                                     reverse proxy"
                                ),
                            );
                            return None;
                        }
                        Some(listen)
                    }
                    Err(_) => {
                        report.error(
                            &span,
                            "http.listen",
                            format!(
                                "invalid address {text:?}: write an address and a port, e.g. \
                                 \"127.0.0.1:9180\" or \"[::1]:9180\""
                            ),
                        );
                        None
                    }
                }
            }
        }?;
        Some(HttpSettings { listen, tokens })
    }
}
