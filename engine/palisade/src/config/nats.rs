//! NATS in the configuration: the keys of a connection
//! ([`NatsConnectionKeys`]: `url` and the authentication and TLS keys),
//! shared by a `[[sink]]` of kind `"nats"` and `[cluster]`, and the keys only
//! a sink has ([`NatsSinkSection`]). Both are turned into settings by
//! `palisade_outputs::nats`, which owns every NATS rule (one authentication
//! method, `user` with `password`, `tls_cert` with `tls_key`, URLs, subject
//! prefix, stream name) for the daemon and `palisade-alert` alike. This file
//! only reads the keys and puts each rule's error at the line of the key it
//! names.

use std::ops::Range;
use std::path::PathBuf;

use palisade_outputs::nats::{self, NatsAuth, NatsOptionError, NatsOptions, NatsTls};
use palisade_outputs::schema::PayloadFormat;
use palisade_outputs::sink::{MAX_STREAM_REPLICAS, NatsSinkOptions, StreamSettings, StreamStorage};
use serde::Deserialize;

use super::checked::{Checked, StringOrList};
use super::report::{ConfigReport, dotted};
use super::{DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT_PREFIX, SECOND, YEAR};

/// The keys of a NATS connection, in a table that has other keys too (a
/// NATS sink's, `[cluster]`'s): the table is read once as this and once as
/// its own section type, and its unknown keys are those neither takes.
#[derive(Debug, Deserialize)]
pub(super) struct NatsConnectionKeys {
    url: Option<Checked<StringOrList>>,
    token: Option<Checked<String>>,
    user: Option<Checked<String>>,
    password: Option<Checked<String>>,
    nkey_seed_file: Option<Checked<String>>,
    creds_file: Option<Checked<String>>,
    tls_ca: Option<Checked<String>>,
    tls_cert: Option<Checked<String>>,
    tls_key: Option<Checked<String>>,
}

/// Reports `err`, a rule of `palisade_outputs::nats` that failed, at the
/// line of the key it names (among `spans`), else at `table_span`.
fn report_rule(
    report: &mut ConfigReport<'_>,
    table: &str,
    table_span: &Range<usize>,
    spans: &[(&str, Range<usize>)],
    err: NatsOptionError,
) {
    let span = spans
        .iter()
        .find(|(name, _)| *name == err.key)
        .map_or(table_span, |(_, span)| span);
    report.error(span, &dotted(table, err.key), err.message);
}

impl NatsConnectionKeys {
    /// The connection's options (named [`NatsOptions::default`]'s `name`:
    /// the caller names it); `None` if `url` is missing or none of its URLs
    /// is valid. `table` is the table's dotted key (`sink[1]`, `cluster`),
    /// `table_span` where it starts.
    pub(super) fn check(
        self,
        report: &mut ConfigReport<'_>,
        table: &str,
        table_span: &Range<usize>,
    ) -> Option<NatsOptions> {
        let key = |name: &str| dotted(table, name);
        // Where each key stands, for the errors of the rules that name it.
        let spans: Vec<(&str, Range<usize>)> = [
            ("token", &self.token),
            ("user", &self.user),
            ("password", &self.password),
            ("nkey_seed_file", &self.nkey_seed_file),
            ("creds_file", &self.creds_file),
            ("tls_ca", &self.tls_ca),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_ref()?.span.clone())))
        .collect();
        let rule = |report: &mut ConfigReport<'_>, err: NatsOptionError| {
            report_rule(report, table, table_span, &spans, err);
        };
        let urls = report
            .required(self.url, table_span, table, "url")
            .map(|urls| nats_urls(report, urls, &key("url")));
        let mut string = |value: Option<Checked<String>>, name: &str| {
            value.and_then(|value| report.string(value, &key(name)))
        };
        let mut token = string(self.token, "token");
        let mut user = string(self.user, "user");
        let mut password = string(self.password, "password");
        let mut path = |value, name| string(value, name).map(PathBuf::from);
        let nkey_seed_file = path(self.nkey_seed_file, "nkey_seed_file");
        let creds_file = path(self.creds_file, "creds_file");
        let tls_ca = path(self.tls_ca, "tls_ca");
        let tls_cert = path(self.tls_cert, "tls_cert");
        let tls_key = path(self.tls_key, "tls_key");
        // Credentials written in a URL become `user`/`password` (or
        // `token`), so that the URL shown in errors and logs holds none.
        let urls = urls.map(|urls| {
            let (urls, inline) = split_credentials(urls);
            match inline {
                Ok(None) => {}
                Ok(Some(_)) if token.is_some() || user.is_some() || password.is_some() => {
                    let message = "credentials both in the URL and in `token`/`user`/`password`: give them once";
                    report.error(table_span, &key("url"), message);
                }
                Ok(Some(UrlCredentials::Token(t))) => token = Some(t),
                Ok(Some(UrlCredentials::UserPassword(u, p))) => {
                    user = Some(u);
                    password = Some(p);
                }
                Err(message) => report.error(table_span, &key("url"), message),
            }
            urls
        });
        let auth = NatsAuth::from_parts(token, user, password, nkey_seed_file, creds_file)
            .unwrap_or_else(|err| {
                rule(report, err);
                NatsAuth::None
            });
        let tls = NatsTls::from_parts(tls_ca, tls_cert, tls_key).unwrap_or_else(|err| {
            rule(report, err);
            NatsTls::default()
        });
        let nats = NatsOptions {
            urls: urls?,
            auth,
            tls,
            ..NatsOptions::default()
        };
        // The URLs were checked one by one (each at its line); this finds
        // what is left, such as an empty credential.
        if let Err(err) = nats.validate()
            && err.key != "url"
        {
            rule(report, err);
        }
        Some(nats)
    }
}

/// The keys only a NATS sink has (besides `kind`; the connection's are
/// [`NatsConnectionKeys`]).
#[derive(Debug, Deserialize)]
pub(super) struct NatsSinkSection {
    /// The sink's `name` and `start`, read by the caller.
    pub(super) name: Option<Checked<String>>,
    pub(super) start: Option<Checked<String>>,
    subject_prefix: Option<Checked<String>>,
    stream: Option<Checked<String>>,
    format: Option<Checked<String>>,
    /// The settings of the stream the sink creates ([`StreamSettings`]).
    max_age: Option<Checked<String>>,
    max_bytes: Option<Checked<i128>>,
    replicas: Option<Checked<i128>>,
    storage: Option<Checked<String>>,
}

impl NatsSinkSection {
    /// The sink's settings, connecting as `connection` says; `None` if the
    /// connection is unusable. `table` is the sink's dotted key (`sink[1]`),
    /// `table_span` where it starts.
    pub(super) fn check(
        self,
        connection: NatsConnectionKeys,
        report: &mut ConfigReport<'_>,
        table: &str,
        table_span: &Range<usize>,
    ) -> Option<NatsSinkOptions> {
        let key = |name: &str| dotted(table, name);
        let nats = connection.check(report, table, table_span);
        let spans: Vec<(&str, Range<usize>)> = [
            ("subject_prefix", &self.subject_prefix),
            ("stream", &self.stream),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_ref()?.span.clone())))
        .collect();
        let mut string = |value: Option<Checked<String>>, name: &str| {
            value.and_then(|value| report.string(value, &key(name)))
        };
        let subject_prefix = string(self.subject_prefix, "subject_prefix")
            .unwrap_or_else(|| DEFAULT_NATS_SUBJECT_PREFIX.to_owned());
        let stream =
            string(self.stream, "stream").unwrap_or_else(|| DEFAULT_NATS_STREAM.to_owned());
        let format = self.format.map_or(PayloadFormat::default(), |value| {
            payload_format(report, value, &key("format"))
        });
        let stream_settings = stream_settings(
            report,
            &key,
            self.max_age,
            self.max_bytes,
            self.replicas,
            self.storage,
        );
        for check in [
            nats::validate_subject_prefix(&subject_prefix),
            nats::validate_stream_name(&stream),
        ] {
            if let Err(err) = check {
                report_rule(report, table, table_span, &spans, err);
            }
        }
        Some(NatsSinkOptions {
            nats: nats?,
            subject_prefix,
            stream,
            stream_settings,
            format,
        })
    }
}

/// The stream's settings: each key given checked at its line, the others
/// [`StreamSettings::default`].
fn stream_settings(
    report: &mut ConfigReport<'_>,
    key: &dyn Fn(&str) -> String,
    max_age: Option<Checked<String>>,
    max_bytes: Option<Checked<i128>>,
    replicas: Option<Checked<i128>>,
    storage: Option<Checked<String>>,
) -> StreamSettings {
    let default = StreamSettings::default();
    let max_age = max_age
        .and_then(|value| report.duration(value, &key("max_age"), SECOND..=100 * YEAR))
        .unwrap_or(default.max_age);
    let max_bytes = max_bytes
        .and_then(|value| report.integer::<u64>(value, &key("max_bytes"), 1..=i64::MAX as u64))
        .or(default.max_bytes);
    let replicas = replicas
        .and_then(|value| {
            report.integer::<u8>(value, &key("replicas"), 1..=MAX_STREAM_REPLICAS as u8)
        })
        .map_or(default.replicas, usize::from);
    let storage = storage
        .and_then(|value| {
            let span = value.span.clone();
            let text = report.string(value, &key("storage"))?;
            let storage = StreamStorage::parse(&text);
            if storage.is_none() {
                let message = format!("unknown storage {text:?}; expected \"file\" or \"memory\"");
                report.error(&span, &key("storage"), message);
            }
            storage
        })
        .unwrap_or(default.storage);
    StreamSettings {
        max_age,
        max_bytes,
        replicas,
        storage,
    }
}

/// Credentials written in a NATS URL (`nats://user:password@host`,
/// `nats://token@host`).
#[derive(Debug, PartialEq, Eq)]
enum UrlCredentials {
    Token(String),
    UserPassword(String, String),
}

/// The URLs without their credentials, and the credentials they held (the
/// same in every URL that has any).
fn split_credentials(urls: Vec<String>) -> (Vec<String>, Result<Option<UrlCredentials>, String>) {
    let mut found: Option<UrlCredentials> = None;
    let mut clash = false;
    let urls = urls
        .into_iter()
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url;
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return url;
            };
            let userinfo = &rest[..at];
            let credentials = match userinfo.split_once(':') {
                Some((u, p)) => UrlCredentials::UserPassword(u.to_owned(), p.to_owned()),
                None => UrlCredentials::Token(userinfo.to_owned()),
            };
            match &found {
                Some(known) if *known != credentials => clash = true,
                _ => found = Some(credentials),
            }
            format!("{scheme}://{}", &rest[at + 1..])
        })
        .collect();
    if clash {
        return (
            urls,
            Err("the URLs hold different credentials: give them once, in `user`/`password` or `token`".to_owned()),
        );
    }
    (urls, Ok(found))
}

/// The server URLs: at least one, each valid (`nats::validate_url`),
/// each error at the URL's own line.
fn nats_urls(
    report: &mut ConfigReport<'_>,
    value: Checked<StringOrList>,
    key: &str,
) -> Vec<String> {
    let span = value.span.clone();
    let items = match report.value(value, key, "a string or an array of strings") {
        Some(StringOrList::One(url)) => vec![Checked {
            span: span.clone(),
            value: Ok(url),
        }],
        Some(StringOrList::List(items)) if items.is_empty() => {
            report.error(&span, key, "give at least one NATS server URL");
            return Vec::new();
        }
        Some(StringOrList::List(items)) => items,
        None => return Vec::new(),
    };
    let mut urls = Vec::new();
    for item in items {
        let item_span = item.span.clone();
        let Some(url) = report.string(item, key) else {
            continue;
        };
        match nats::validate_url(&url) {
            Ok(()) => urls.push(url),
            Err(err) => report.error(&item_span, key, err.message),
        }
    }
    urls
}

fn payload_format(
    report: &mut ConfigReport<'_>,
    value: Checked<String>,
    key: &str,
) -> PayloadFormat {
    let span = value.span.clone();
    match report.string(value, key).as_deref() {
        Some("json") => PayloadFormat::Json,
        Some("msgpack") => PayloadFormat::MsgPack,
        None => PayloadFormat::default(),
        Some(other) => {
            let message = format!("unknown format {other:?}; expected \"json\" or \"msgpack\"");
            report.error(&span, key, message);
            PayloadFormat::default()
        }
    }
}
