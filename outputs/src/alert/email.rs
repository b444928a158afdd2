//! The `smtp` dispatcher: one email per incident, per resolution and per
//! `ports_changed` summary (`Message-ID: <changes.<token>@…>`, no thread).
//!
//! The incident's mail has the `Message-ID`
//! `<incident.<token>@<from domain>>` (token: a hash of the incident id,
//! so a redelivered mail has the same id); the mail of its end is a reply
//! to it: `In-Reply-To` and `References` name that id and its subject is
//! the incident's with `Re: ` before and ` [resolved]` after, so mail
//! clients thread the two. The body lists the [`Notice`]'s facts.
//!
//! SMTP through `lettre` (tokio, rustls): STARTTLS is required by default
//! (`tls=starttls`, port 587); `tls=tls` is TLS from the first byte (port
//! 465); `tls=none` sends in clear text (a local relay only; refused with
//! credentials). A 5xx reply refuses the mail for good and it is
//! dead-lettered at once; anything else (4xx, connection, TLS, timeout) is
//! retried.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use async_trait::async_trait;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{
    DispatchConfigError, DispatchError, Dispatched, Dispatcher, HttpOptions, Notice, Secret,
};
use crate::schema::Envelope;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer
    /// (default; port 587).
    StartTls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
    /// No encryption at all (a relay on the same host).
    None,
}

impl SmtpTls {
    fn as_str(self) -> &'static str {
        match self {
            SmtpTls::StartTls => "starttls",
            SmtpTls::Tls => "tls",
            SmtpTls::None => "none",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// `smtp=HOST[:PORT],from=ADDR,to=ADDR[,to=ADDR…][,tls=starttls|tls|none]
/// [,credentials=FILE|env:VAR][,ca=FILE]` as parsed.
///
/// `credentials`: one line `USER:PASSWORD` (split at the first `:`) in a
/// file, or in an environment variable with `env:NAME`. `ca`: a PEM file of
/// certificates to trust besides the usual public roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSpec {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    pub to: Vec<String>,
    pub credentials: Option<Secret>,
    pub ca: Option<PathBuf>,
}

impl FromStr for SmtpSpec {
    type Err = DispatchConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| DispatchConfigError::BadOption(format!("smtp: {why}"));
        let mut items = s.split(',').map(str::trim);
        let server = items.next().unwrap_or_default();
        let (host, port) = split_host_port(server).map_err(bad)?;
        if host.is_empty() {
            return Err(bad(
                "no server: expected `smtp=HOST[:PORT],from=ADDR,to=ADDR`".to_string(),
            ));
        }
        let (mut from, mut to, mut tls, mut credentials, mut ca) =
            (None, Vec::new(), SmtpTls::StartTls, None, None);
        for item in items.filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(bad(format!(
                    "{:?} is not KEY=VALUE",
                    super::one_line(item, 80)
                )));
            };
            let value = value.trim();
            match key.trim() {
                "from" => from = Some(mailbox(value).map_err(bad)?.to_string()),
                "to" => to.push(mailbox(value).map_err(bad)?.to_string()),
                "tls" => {
                    tls = match value {
                        "starttls" => SmtpTls::StartTls,
                        "tls" => SmtpTls::Tls,
                        "none" => SmtpTls::None,
                        other => {
                            return Err(bad(format!(
                                "tls={:?}: expected starttls, tls or none",
                                super::one_line(other, 40)
                            )));
                        }
                    }
                }
                "credentials" => {
                    credentials = Some(match value.strip_prefix("env:") {
                        Some(name) => Secret::Env(name.to_string()),
                        None => Secret::File(PathBuf::from(value.trim_start_matches('@'))),
                    })
                }
                "ca" => ca = Some(PathBuf::from(value)),
                other => {
                    return Err(bad(format!(
                        "unknown option {:?} (expected from, to, tls, credentials, ca)",
                        super::one_line(other, 40)
                    )));
                }
            }
        }
        let from = from.ok_or_else(|| bad("from=ADDRESS is missing".to_string()))?;
        if to.is_empty() {
            return Err(bad(
                "to=ADDRESS is missing (repeat it for more recipients)".to_string()
            ));
        }
        if tls == SmtpTls::None && credentials.is_some() {
            return Err(bad(
                "credentials are never sent without TLS: drop tls=none".to_string()
            ));
        }
        Ok(SmtpSpec {
            host,
            port: port.unwrap_or_else(|| tls.default_port()),
            tls,
            from,
            to,
            credentials,
            ca,
        })
    }
}

impl fmt::Display for SmtpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},from={}", server(&self.host, self.port), self.from)?;
        for to in &self.to {
            write!(f, ",to={to}")?;
        }
        write!(f, ",tls={}", self.tls.as_str())?;
        if let Some(credentials) = &self.credentials {
            write!(f, ",credentials={credentials}")?;
        }
        if let Some(ca) = &self.ca {
            write!(f, ",ca={}", ca.display())?;
        }
        Ok(())
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("bad port {:?}", super::one_line(p, 20)))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing `]`".to_string())?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_string(), Some(port(p)?))),
            None if after.is_empty() => Ok((host.to_string(), None)),
            None => Err(format!("bad server {:?}", super::one_line(s, 80))),
        };
    }
    match s.split_once(':') {
        Some((host, p)) => Ok((host.to_string(), Some(port(p)?))),
        None => Ok((s.to_string(), None)),
    }
}

/// `host:port`, `[v6]:port`.
fn server(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn mailbox(value: &str) -> Result<Mailbox, String> {
    value
        .parse::<Mailbox>()
        .map_err(|e| format!("bad address {:?}: {e}", super::one_line(value, 80)))
}

/// Sends [`email_for`] each notice through one SMTP server.
pub struct EmailDispatcher {
    name: String,
    server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    dashboard_url: Option<String>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl fmt::Debug for EmailDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailDispatcher")
            .field("name", &self.name)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl EmailDispatcher {
    /// Reads the credentials and the CA file and sets up the transport;
    /// nothing is connected before the first mail. `http.timeout` bounds
    /// each SMTP command.
    pub fn new(spec: &SmtpSpec, http: &HttpOptions) -> Result<Self, DispatchConfigError> {
        let bad = |why: String| DispatchConfigError::BadOption(format!("smtp: {why}"));
        let from = mailbox(&spec.from).map_err(bad)?;
        let to = spec
            .to
            .iter()
            .map(|t| mailbox(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let tls = if spec.tls == SmtpTls::None {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(spec.host.clone());
            if let Some(ca) = &spec.ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| bad(format!("cannot read {}: {e}", ca.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| bad(format!("{}: {}", ca.display(), super::error_chain(&e))))?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|e| bad(format!("TLS: {}", super::error_chain(&e))))?;
            match spec.tls {
                SmtpTls::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&spec.host)
            .port(spec.port)
            .tls(tls)
            .timeout(Some(http.timeout));
        if let Some(secret) = &spec.credentials {
            let line = secret
                .read()
                .map_err(|source| DispatchConfigError::Secret {
                    what: "the SMTP credentials".to_string(),
                    source,
                })?;
            let (user, password) = line.split_once(':').ok_or_else(|| {
                bad(format!(
                    "the credentials in {secret} are not one line USER:PASSWORD"
                ))
            })?;
            builder = builder.credentials(Credentials::new(user.to_string(), password.to_string()));
        }
        let server = server(&spec.host, spec.port);
        Ok(EmailDispatcher {
            name: format!("smtp={server}"),
            server,
            from,
            to,
            dashboard_url: http.dashboard_url.clone(),
            transport: builder.build(),
        })
    }
}

#[async_trait]
impl Dispatcher for EmailDispatcher {
    fn name(&self) -> &str {
        &self.name
    }

    async fn dispatch(&self, event: &Envelope) -> Result<Dispatched, DispatchError> {
        let Some(notice) = Notice::of(event) else {
            return Ok(Dispatched::Skipped);
        };
        let mail = email_for(&notice, &self.from, &self.to, self.dashboard_url.as_deref())?;
        self.transport
            .send(mail)
            .await
            .map_err(|e| DispatchError::Smtp {
                server: self.server.clone(),
                reason: super::error_chain(&e),
                permanent: e.is_permanent(),
            })?;
        Ok(Dispatched::Delivered)
    }
}

/// The `Message-ID` of an incident's mail (`<incident.<token>@<domain>>`)
/// and of its resolution's (`<resolved.<token>@<domain>>`); a summary's is
/// `<changes.<token of the event id>@<domain>>`.
fn message_ids(n: &Notice, from: &Mailbox) -> (String, String) {
    let domain = from.email.domain();
    let domain = if !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
    {
        domain
    } else {
        "palisade.invalid"
    };
    let token = n.incident_token();
    if !n.incident {
        let id = format!("<changes.{token}@{domain}>");
        return (id.clone(), id);
    }
    (
        format!("<incident.{token}@{domain}>"),
        format!("<resolved.{token}@{domain}>"),
    )
}

/// The mail of a notice: the incident's, or the reply that says it ended.
pub fn email_for(
    n: &Notice,
    from: &Mailbox,
    to: &[Mailbox],
    dashboard_url: Option<&str>,
) -> Result<Message, DispatchError> {
    let (incident_id, resolved_id) = message_ids(n, from);
    let subject = format!("[Palisade] {}", n.summary);
    let mut builder = Message::builder().from(from.clone());
    for mailbox in to {
        builder = builder.to(mailbox.clone());
    }
    builder = if n.resolved {
        builder
            .subject(format!("Re: {subject} [resolved]"))
            .message_id(Some(resolved_id))
            .in_reply_to(incident_id.clone())
            .references(incident_id)
    } else {
        builder.subject(subject).message_id(Some(incident_id))
    };
    let date = humantime::parse_rfc3339_weak(&n.time).unwrap_or_else(|_| SystemTime::now());
    let mut body = String::new();
    body.push_str(if n.resolved { "RESOLVED: " } else { "" });
    body.push_str(&n.summary);
    body.push_str("\n\n");
    let width = n.facts.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    for (label, value) in &n.facts {
        body.push_str(&format!("{:<width$} {value}\n", format!("{label}:")));
    }
    if let Some(template) = dashboard_url {
        let link = super::alertmanager::dashboard_link(template, &n.monitor);
        body.push_str(&format!("\nDashboard: {link}\n"));
    }
    body.push_str("\n-- \nSent by palisade-alert\n");
    builder
        .date(date)
        .user_agent(concat!("palisade-alert/", env!("CARGO_PKG_VERSION")).to_string())
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| DispatchError::Message(super::error_chain(&e)))
}
