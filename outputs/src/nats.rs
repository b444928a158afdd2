//! NATS connection settings and the one way to connect, shared by the
//! JetStream sink ([`crate::sink::NatsSink`]) and `palisade-alert`.
//!
//! Both are configured from the same flat fields (the daemon's `[[sink]]`
//! keys, the alert CLI's flags): [`NatsAuth::from_parts`] and
//! [`NatsTls::from_parts`] turn them into [`NatsOptions`] and hold every rule
//! about how they combine; [`NatsOptions::validate`], [`validate_url`],
//! [`validate_subject_prefix`] and [`validate_stream_name`] hold the rest.
//! A rule that fails is a [`NatsOptionError`] naming the configuration key
//! at fault, so the daemon's config can point its `file:line: key` at it.
//!
//! [`connect`] makes the first connection within a bounded time and then
//! leaves the client to reconnect by itself, logging each outage once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, Event, ServerAddr};

use crate::sink::{io_cause, secs, source_cause};

/// The server used when none is configured.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The bound of the first connection to one server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// `nats://host:port` (or `tls://…`); several for a cluster.
    pub urls: Vec<String>,
    pub auth: NatsAuth,
    pub tls: NatsTls,
    /// The connection name the server shows (`palisade`, `palisade-alert`).
    pub name: String,
    /// Bounds the first connection to each server.
    pub connect_timeout: Duration,
    /// The prefix of the client's reply subjects (`None`: `_INBOX`). A
    /// scan agent uses `_INBOX_{name}`, so that the server's permissions can
    /// keep every client to its own replies.
    pub inbox_prefix: Option<String>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            urls: vec![DEFAULT_NATS_URL.to_string()],
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            name: "palisade".to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            inbox_prefix: None,
        }
    }
}

/// How to authenticate to the NATS server: one method at most.
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

/// A NATS setting that is unusable: `key` is the configuration key at fault
/// (`url`, `token`, `user`, `password`, `nkey_seed_file`, `creds_file`,
/// `tls_ca`, `tls_cert`, `tls_key`, `subject_prefix`, `stream`, or
/// `connect_timeout`, which has no key in the daemon's config), `message`
/// one line saying what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NatsOptionError {
    pub key: &'static str,
    pub message: String,
}

impl NatsOptionError {
    fn new(key: &'static str, message: impl Into<String>) -> NatsOptionError {
        NatsOptionError {
            key,
            message: message.into(),
        }
    }
}

/// Why [`connect`] failed. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    /// The options break a rule, or a credential or TLS file named by them
    /// cannot be used.
    #[error("invalid NATS configuration: {0}")]
    Options(#[from] NatsOptionError),
    /// No server could be reached (refused, timed out, DNS, …).
    #[error("cannot connect to NATS at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// A server was reached but refused us (authorization, TLS).
    #[error("cannot connect to NATS at {server}: {reason}")]
    Refused { server: String, reason: String },
}

impl NatsAuth {
    /// The authentication method given by the optional flat settings, which
    /// the daemon's config and the alert CLI both have. At most one method
    /// (`user` with `password` counts as one); `user` needs `password` and the
    /// reverse; no value may be empty.
    pub fn from_parts(
        token: Option<String>,
        user: Option<String>,
        password: Option<String>,
        nkey_seed_file: Option<PathBuf>,
        creds_file: Option<PathBuf>,
    ) -> Result<NatsAuth, NatsOptionError> {
        match (&user, &password) {
            (Some(_), None) => return Err(needs("user", "password")),
            (None, Some(_)) => return Err(needs("password", "user")),
            _ => {}
        }
        let methods: Vec<&'static str> = [
            ("token", token.is_some()),
            ("user", user.is_some()),
            ("nkey_seed_file", nkey_seed_file.is_some()),
            ("creds_file", creds_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if let [first, second, ..] = methods[..] {
            return Err(NatsOptionError::new(
                second,
                format!(
                    "`{second}` and `{first}` both set: choose one of `token`, `user`/`password`, `nkey_seed_file` or `creds_file`"
                ),
            ));
        }
        let auth = match (token, user.zip(password), nkey_seed_file, creds_file) {
            (Some(token), ..) => NatsAuth::Token(token),
            (_, Some((user, password)), ..) => NatsAuth::UserPassword { user, password },
            (.., Some(seed), _) => NatsAuth::NkeySeedFile(seed),
            (.., Some(creds)) => NatsAuth::CredsFile(creds),
            (None, None, None, None) => NatsAuth::None,
        };
        auth.validate()?;
        Ok(auth)
    }

    /// No value is empty.
    fn validate(&self) -> Result<(), NatsOptionError> {
        match self {
            NatsAuth::None => Ok(()),
            NatsAuth::Token(token) => nonempty("token", token),
            NatsAuth::UserPassword { user, password } => {
                nonempty("user", user)?;
                nonempty("password", password)
            }
            NatsAuth::CredsFile(path) => nonempty_path("creds_file", path),
            NatsAuth::NkeySeedFile(path) => nonempty_path("nkey_seed_file", path),
        }
    }

    /// A short hint naming the configured credentials, for refusals.
    fn hint(&self) -> &'static str {
        match self {
            NatsAuth::CredsFile(_) => "check the .creds file",
            NatsAuth::NkeySeedFile(_) => "check the NKey seed file",
            NatsAuth::Token(_) => "check the token",
            NatsAuth::UserPassword { .. } => "check the user and password",
            NatsAuth::None => {
                "the server requires credentials and none are configured: set a token, user/password, nkey or creds"
            }
        }
    }
}

impl NatsTls {
    /// The TLS settings given by the optional flat settings: `tls_cert`
    /// needs `tls_key` and the reverse; no path may be empty.
    pub fn from_parts(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<NatsTls, NatsOptionError> {
        let client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => return Err(needs("tls_cert", "tls_key")),
            (None, Some(_)) => return Err(needs("tls_key", "tls_cert")),
            (None, None) => None,
        };
        let tls = NatsTls { ca, client_cert };
        tls.validate()?;
        Ok(tls)
    }

    /// No path is empty.
    fn validate(&self) -> Result<(), NatsOptionError> {
        if let Some(ca) = &self.ca {
            nonempty_path("tls_ca", ca)?;
        }
        if let Some((cert, key)) = &self.client_cert {
            nonempty_path("tls_cert", cert)?;
            nonempty_path("tls_key", key)?;
        }
        Ok(())
    }
}

impl NatsOptions {
    /// Checks everything that can be checked without I/O: at least one URL,
    /// each valid ([`validate_url`]); a positive connect timeout; no empty
    /// credential or TLS setting.
    pub fn validate(&self) -> Result<(), NatsOptionError> {
        if self.urls.is_empty() {
            return Err(NatsOptionError::new(
                "url",
                "give at least one NATS server URL",
            ));
        }
        for url in &self.urls {
            validate_url(url)?;
        }
        if self.connect_timeout.is_zero() {
            return Err(NatsOptionError::new(
                "connect_timeout",
                "connect timeout must be positive",
            ));
        }
        self.auth.validate()?;
        self.tls.validate()
    }
}

/// One server URL: `nats://`, `tls://`, `ws://` or `wss://` (a bare
/// `host:port` means `nats://`), without spaces.
pub fn validate_url(url: &str) -> Result<(), NatsOptionError> {
    server_addr(url).map(drop)
}

fn server_addr(url: &str) -> Result<ServerAddr, NatsOptionError> {
    if url.is_empty() || url.contains(char::is_whitespace) {
        return Err(NatsOptionError::new(
            "url",
            format!("invalid NATS server URL {url:?}"),
        ));
    }
    url.parse::<ServerAddr>()
        .map_err(|e| NatsOptionError::new("url", format!("invalid NATS server URL {url:?}: {e}")))
}

/// A subject prefix: dot-separated, non-empty tokens without spaces,
/// control characters or wildcards.
pub fn validate_subject_prefix(prefix: &str) -> Result<(), NatsOptionError> {
    let valid = prefix.split('.').all(|token| {
        !token.is_empty()
            && !token.contains(|c: char| c.is_whitespace() || c.is_control() || "*>".contains(c))
    });
    if valid {
        Ok(())
    } else {
        Err(NatsOptionError::new(
            "subject_prefix",
            format!(
                "invalid subject_prefix {prefix:?}: dot-separated tokens without spaces, '*' or '>'"
            ),
        ))
    }
}

/// A JetStream stream name: not empty, no spaces, control characters, dots,
/// wildcards or path separators.
pub fn validate_stream_name(stream: &str) -> Result<(), NatsOptionError> {
    let valid = !stream.is_empty()
        && !stream.contains(|c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c));
    if valid {
        Ok(())
    } else {
        Err(NatsOptionError::new(
            "stream",
            format!("invalid stream {stream:?}: no spaces, '.', '*', '>', '/' or '\\'"),
        ))
    }
}

fn needs(key: &'static str, other: &str) -> NatsOptionError {
    NatsOptionError::new(key, format!("`{key}` needs `{other}`"))
}

fn nonempty(key: &'static str, value: &str) -> Result<(), NatsOptionError> {
    if value.is_empty() {
        Err(NatsOptionError::new(
            key,
            format!("`{key}` must not be empty"),
        ))
    } else {
        Ok(())
    }
}

fn nonempty_path(key: &'static str, path: &Path) -> Result<(), NatsOptionError> {
    nonempty(key, &path.to_string_lossy())
}

/// Connects once: bad options, an unreachable server, refused credentials
/// or a TLS problem is an error within about `connect_timeout` per server,
/// never an endless retry. Once connected, the client reconnects by itself
/// with backoff for as long as it lives; each outage is logged once when it
/// starts and once when it ends.
pub async fn connect(opts: &NatsOptions) -> Result<async_nats::Client, NatsConnectError> {
    opts.validate()?;
    let addrs = opts
        .urls
        .iter()
        .map(|url| server_addr(url))
        .collect::<Result<Vec<_>, _>>()?;
    let server = opts.urls.join(", ");
    let options = connect_options(opts, &server).await?;
    // Each server gets `connect_timeout`; the whole attempt is bounded too.
    let bound = opts
        .connect_timeout
        .saturating_mul(u32::try_from(addrs.len()).unwrap_or(u32::MAX))
        .saturating_add(Duration::from_millis(500));
    match tokio::time::timeout(bound, options.connect(addrs)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(connect_error(opts, &server, &err)),
        Err(_) => Err(NatsConnectError::Unreachable {
            server,
            reason: format!("timed out after {}", secs(opts.connect_timeout)),
        }),
    }
}

/// The client options: name, timeout, outage logging, credentials (read
/// here, so an unusable file is reported before any connection) and TLS.
async fn connect_options(
    opts: &NatsOptions,
    server: &str,
) -> Result<ConnectOptions, NatsOptionError> {
    // Reconnect attempts fail once per try while a server is down: say so
    // once per outage, not once per attempt.
    let outage = Arc::new(AtomicBool::new(false));
    let log_server = server.to_string();
    let mut options = ConnectOptions::new()
        .name(&opts.name)
        .connection_timeout(opts.connect_timeout)
        .event_callback(move |event| {
            let outage = outage.clone();
            let server = log_server.clone();
            async move { log_event(event, &server, &outage) }
        });
    if let Some(prefix) = &opts.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    options = match &opts.auth {
        NatsAuth::None => options,
        NatsAuth::Token(token) => options.token(token.clone()),
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::NkeySeedFile(path) => options.nkey(read_nkey_seed(path)?),
        NatsAuth::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
            NatsOptionError::new(
                "creds_file",
                format!(
                    "cannot read NATS credentials file {}: {}",
                    path.display(),
                    io_cause(&e)
                ),
            )
        })?,
    };
    let client_cert = opts.tls.client_cert.as_ref();
    for (key, what, path) in [
        ("tls_ca", "TLS CA", opts.tls.ca.as_ref()),
        (
            "tls_cert",
            "TLS certificate",
            client_cert.map(|(cert, _)| cert),
        ),
        ("tls_key", "TLS key", client_cert.map(|(_, key)| key)),
    ] {
        if let Some(path) = path
            && let Err(e) = std::fs::metadata(path)
        {
            return Err(NatsOptionError::new(
                key,
                format!(
                    "cannot read {what} file {}: {}",
                    path.display(),
                    io_cause(&e)
                ),
            ));
        }
    }
    if let Some(ca) = &opts.tls.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = client_cert {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// The first word of the file that looks like an NKey seed (`S…`, 56+ chars).
fn read_nkey_seed(path: &Path) -> Result<String, NatsOptionError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        NatsOptionError::new(
            "nkey_seed_file",
            format!(
                "cannot read NKey seed file {}: {}",
                path.display(),
                io_cause(&e)
            ),
        )
    })?;
    text.split_whitespace()
        .find(|w| w.starts_with('S') && w.len() >= 56)
        .map(str::to_string)
        .ok_or_else(|| {
            NatsOptionError::new(
                "nkey_seed_file",
                format!("no NKey seed (S…) found in {}", path.display()),
            )
        })
}

/// Logs the client's events; `outage` is set while the connection is down,
/// so that an outage is reported once however many reconnects fail.
fn log_event(event: Event, server: &str, outage: &AtomicBool) {
    match event {
        Event::Connected => {
            if outage.swap(false, Ordering::Relaxed) {
                tracing::info!(%server, "NATS connection re-established");
            }
        }
        Event::Disconnected => {
            if !outage.swap(true, Ordering::Relaxed) {
                tracing::warn!(%server, "NATS connection lost; reconnecting");
            }
        }
        Event::ClientError(e) if outage.load(Ordering::Relaxed) => {
            tracing::debug!(%server, "NATS reconnect attempt failed: {e}");
        }
        Event::Draining | Event::Closed => tracing::info!(%server, "NATS {event}"),
        other => tracing::warn!(%server, "NATS {other}"),
    }
}

/// A one-line, readable error for a failed first connection: `connection
/// refused`, `timed out after 5s`, `authorization violation (check the
/// token)`, a TLS error with a hint, …
fn connect_error(
    opts: &NatsOptions,
    server: &str,
    err: &async_nats::ConnectError,
) -> NatsConnectError {
    let unreachable = |reason: String| NatsConnectError::Unreachable {
        server: server.to_string(),
        reason,
    };
    let refused = |reason: String| NatsConnectError::Refused {
        server: server.to_string(),
        reason,
    };
    if let Some(tls) = tls_cause(err) {
        let hint = if tls.contains("UnknownIssuer") {
            " (set the CA that signed the server certificate)"
        } else if tls.contains("alert") && opts.tls.client_cert.is_none() {
            " (the server may require a client certificate: set tls_cert and tls_key)"
        } else {
            ""
        };
        return refused(format!("TLS error: {tls}{hint}"));
    }
    match err.kind() {
        ConnectErrorKind::Io => unreachable(source_cause(err)),
        ConnectErrorKind::TimedOut => {
            unreachable(format!("timed out after {}", secs(opts.connect_timeout)))
        }
        ConnectErrorKind::Dns => unreachable(format!(
            "cannot resolve the host name: {}",
            source_cause(err)
        )),
        ConnectErrorKind::MaxReconnects => {
            unreachable("gave up after the maximum number of attempts".into())
        }
        ConnectErrorKind::ServerParse => NatsConnectError::Options(NatsOptionError::new(
            "url",
            format!("invalid NATS server URL in {server}: {}", source_cause(err)),
        )),
        ConnectErrorKind::AuthorizationViolation => {
            refused(format!("authorization violation ({})", opts.auth.hint()))
        }
        ConnectErrorKind::Authentication => refused(format!(
            "authentication failed: {} ({})",
            source_cause(err),
            opts.auth.hint()
        )),
        ConnectErrorKind::Tls => refused(format!("TLS error: {}", source_cause(err))),
    }
}

/// The rustls error somewhere in the chain, if any.
fn tls_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<async_nats::rustls::Error>()
        {
            return Some(tls.to_string());
        }
        current = e.source();
    }
    None
}

pub mod args;

#[cfg(test)]
mod tests;
