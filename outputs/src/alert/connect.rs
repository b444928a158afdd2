//! Connecting to NATS: server list, authentication, TLS.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{ConnectErrorKind, ServerAddr};

/// How to authenticate to the NATS server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    #[default]
    None,
    Token(String),
    UserPassword {
        user: String,
        password: String,
    },
    /// A `.creds` file (JWT + NKey seed), as `nsc` writes it.
    CredsFile(PathBuf),
    /// A file holding an NKey user seed (`SU…`).
    NkeySeedFile(PathBuf),
}

/// TLS settings. A CA or a client certificate makes TLS required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM file of the CA(s) to trust instead of the system roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://host:port` (or `tls://…`); several for a cluster.
    pub urls: Vec<String>,
    pub auth: NatsAuth,
    pub tls: NatsTls,
    /// The connection name the server shows (`palisade-alert`).
    pub name: String,
    /// Timeout of the first connection to one server.
    pub connect_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            urls: vec!["nats://127.0.0.1:4222".to_string()],
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            name: "palisade-alert".to_string(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why the first connection failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error("invalid NATS URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("no NATS URL given")]
    NoUrl,
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect { urls: String, reason: String },
}

/// Connects once: an unreachable server, bad credentials or a TLS problem
/// is an error (within about `connect_timeout` per server), never an
/// endless retry. Once connected, the client reconnects by itself for as
/// long as it lives; disconnections and reconnections are logged.
pub async fn connect(opts: &NatsOptions) -> Result<async_nats::Client, NatsConnectError> {
    if opts.urls.is_empty() {
        return Err(NatsConnectError::NoUrl);
    }
    let mut addrs = Vec::with_capacity(opts.urls.len());
    for url in &opts.urls {
        let addr: ServerAddr =
            url.parse()
                .map_err(|e: std::io::Error| NatsConnectError::BadUrl {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        addrs.push(addr);
    }
    let mut options = match &opts.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::CredsFile(path) => {
            let text = read(path, "credentials file").await?;
            async_nats::ConnectOptions::with_credentials(&text).map_err(|source| {
                NatsConnectError::ReadFile {
                    what: "credentials file",
                    path: path.display().to_string(),
                    source,
                }
            })?
        }
        NatsAuth::NkeySeedFile(path) => {
            let seed = read(path, "NKey seed file").await?;
            async_nats::ConnectOptions::with_nkey(seed.trim().to_string())
        }
    };
    if let Some(ca) = &opts.tls.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &opts.tls.client_cert {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    // Reconnect attempts fail once per try while a server is down: say so
    // once per outage, not once per attempt.
    let quiet = Arc::new(AtomicBool::new(false));
    let options = options
        .name(&opts.name)
        .connection_timeout(opts.connect_timeout)
        .event_callback(move |event| {
            let quiet = quiet.clone();
            async move { log_event(event, &quiet) }
        });
    options
        .connect(addrs)
        .await
        .map_err(|e| NatsConnectError::Connect {
            urls: opts.urls.join(", "),
            reason: connect_reason(&e),
        })
}

fn log_event(event: async_nats::Event, quiet: &AtomicBool) {
    match event {
        async_nats::Event::Connected => {
            if quiet.swap(false, Ordering::Relaxed) {
                tracing::info!("NATS connection re-established");
            }
        }
        async_nats::Event::Disconnected => {
            quiet.store(true, Ordering::Relaxed);
            tracing::warn!("NATS connection lost; reconnecting");
        }
        async_nats::Event::ClientError(e) if quiet.load(Ordering::Relaxed) => {
            tracing::debug!("NATS reconnect attempt: {e}");
        }
        async_nats::Event::ClientError(e) => tracing::warn!("NATS: {e}"),
        other => tracing::info!("NATS: {other}"),
    }
}

async fn read(path: &std::path::Path, what: &'static str) -> Result<String, NatsConnectError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| NatsConnectError::ReadFile {
            what,
            path: path.display().to_string(),
            source,
        })
}

/// A short reason: `connection refused`, `timed out`, `authorization
/// violation (check the credentials)`, …
fn connect_reason(e: &async_nats::ConnectError) -> String {
    use std::error::Error as _;
    let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
    match e.kind() {
        ConnectErrorKind::Io => match io {
            Some(io) => plain_io(io),
            None => super::error_chain(e),
        },
        ConnectErrorKind::TimedOut => "timed out".to_string(),
        ConnectErrorKind::AuthorizationViolation => {
            "authorization violation (check the token, user/password or credentials)".to_string()
        }
        ConnectErrorKind::Dns => match io {
            Some(io) => format!("cannot resolve the host name: {}", plain_io(io)),
            None => super::error_chain(e),
        },
        _ => super::error_chain(e),
    }
}

/// `Connection refused (os error 111)` → `connection refused`.
fn plain_io(io: &std::io::Error) -> String {
    let text = io.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if chars.clone().next().is_some_and(char::is_lowercase) => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_string(),
    }
}
