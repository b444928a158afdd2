//! The `[[sink]]` of kind `"nats"`: its keys ([`NatsSinkSection`]) and the
//! checks that turn them into the NATS sink's settings. Everything about
//! this kind of sink is here; the rest of the configuration only calls
//! [`NatsSinkSection::check`].

use std::ops::Range;
use std::path::PathBuf;

use palisade_outputs::schema::PayloadFormat;
use palisade_outputs::sink::NatsConfig;
use serde::Deserialize;

use super::checked::{Checked, StringOrList};
use super::report::{ConfigReport, dotted};
use super::{DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT_PREFIX};

/// The keys of a NATS sink (besides `kind`).
#[derive(Debug, Deserialize)]
pub(super) struct NatsSinkSection {
    url: Option<Checked<StringOrList>>,
    subject_prefix: Option<Checked<String>>,
    stream: Option<Checked<String>>,
    token: Option<Checked<String>>,
    user: Option<Checked<String>>,
    password: Option<Checked<String>>,
    nkey_seed_file: Option<Checked<String>>,
    creds_file: Option<Checked<String>>,
    tls_ca: Option<Checked<String>>,
    tls_cert: Option<Checked<String>>,
    tls_key: Option<Checked<String>>,
    format: Option<Checked<String>>,
}

impl NatsSinkSection {
    /// The sink's settings; `None` if `url` is missing. `table` is the
    /// sink's dotted key (`sink[1]`), `table_span` where it starts.
    pub(super) fn check(
        self,
        report: &mut ConfigReport<'_>,
        table: &str,
        table_span: &Range<usize>,
    ) -> Option<NatsConfig> {
        let key = |name: &str| dotted(table, name);
        let urls = report
            .required(self.url, table_span, table, "url")
            .map(|urls| nats_urls(report, urls, &key("url")));
        let subject_prefix = self.subject_prefix.map_or_else(
            || DEFAULT_NATS_SUBJECT_PREFIX.to_owned(),
            |value| {
                checked_string(
                    report,
                    value,
                    (table, "subject_prefix"),
                    DEFAULT_NATS_SUBJECT_PREFIX,
                    valid_subject_prefix,
                    "dot-separated tokens without spaces, '*' or '>'",
                )
            },
        );
        let stream = self.stream.map_or_else(
            || DEFAULT_NATS_STREAM.to_owned(),
            |value| {
                checked_string(
                    report,
                    value,
                    (table, "stream"),
                    DEFAULT_NATS_STREAM,
                    valid_stream_name,
                    "no spaces, '.', '*', '>', '/' or '\\'",
                )
            },
        );
        let format = self.format.map_or(PayloadFormat::MsgPack, |value| {
            payload_format(report, value, &key("format"))
        });
        auth_rules(
            report,
            table,
            [
                ("token", &self.token),
                ("user", &self.user),
                ("password", &self.password),
                ("nkey_seed_file", &self.nkey_seed_file),
                ("creds_file", &self.creds_file),
                ("tls_cert", &self.tls_cert),
                ("tls_key", &self.tls_key),
            ],
        );
        let mut nonempty = |value: Option<Checked<String>>, name: &str| {
            value.and_then(|value| report.nonempty(value, &key(name)))
        };
        let token = nonempty(self.token, "token");
        let user = nonempty(self.user, "user");
        let password = nonempty(self.password, "password");
        let mut path = |value, name| nonempty(value, name).map(PathBuf::from);
        let nkey_seed_file = path(self.nkey_seed_file, "nkey_seed_file");
        let creds_file = path(self.creds_file, "creds_file");
        let tls_ca = path(self.tls_ca, "tls_ca");
        let tls_cert = path(self.tls_cert, "tls_cert");
        let tls_key = path(self.tls_key, "tls_key");
        Some(NatsConfig {
            urls: urls?,
            subject_prefix,
            stream,
            token,
            user,
            password,
            nkey_seed_file,
            creds_file,
            tls_ca,
            tls_cert,
            tls_key,
            format,
            // Not configurable: stays at its default, 5 s.
            connect_timeout: NatsConfig::default().connect_timeout,
        })
    }
}

/// The server URLs: at least one, none empty or with spaces.
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
        if url.is_empty() || url.contains(char::is_whitespace) {
            report.error(&item_span, key, format!("invalid NATS server URL {url:?}"));
        } else {
            urls.push(url);
        }
    }
    urls
}

/// The string of key `name` of `table`, which must pass `valid` (`rule`
/// says what passes); `default` when it does not.
fn checked_string(
    report: &mut ConfigReport<'_>,
    value: Checked<String>,
    (table, name): (&str, &str),
    default: &str,
    valid: fn(&str) -> bool,
    rule: &str,
) -> String {
    let span = value.span.clone();
    let key = dotted(table, name);
    match report.string(value, &key) {
        Some(text) if valid(&text) => text,
        Some(text) => {
            report.error(&span, &key, format!("invalid {name} {text:?}: {rule}"));
            default.to_owned()
        }
        None => default.to_owned(),
    }
}

fn payload_format(
    report: &mut ConfigReport<'_>,
    value: Checked<String>,
    key: &str,
) -> PayloadFormat {
    let span = value.span.clone();
    match report.string(value, key).as_deref() {
        Some("json") => PayloadFormat::Json,
        Some("msgpack") | None => PayloadFormat::MsgPack,
        Some(other) => {
            let message = format!("unknown format {other:?}; expected \"msgpack\" or \"json\"");
            report.error(&span, key, message);
            PayloadFormat::MsgPack
        }
    }
}

/// One way to authenticate at most; `user` with `password`; `tls_cert` with
/// `tls_key`. `set` holds the keys these rules are about, set or not.
fn auth_rules(
    report: &mut ConfigReport<'_>,
    table: &str,
    set: [(&str, &Option<Checked<String>>); 7],
) {
    let span_of = |name: &str| {
        set.iter()
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.as_ref())
            .map(|value| value.span.clone())
    };
    let methods: Vec<&str> = ["token", "user", "nkey_seed_file", "creds_file"]
        .into_iter()
        .filter(|name| span_of(name).is_some())
        .collect();
    if let [first, second, ..] = methods[..]
        && let Some(span) = span_of(second)
    {
        let message = format!(
            "`{second}` and `{first}` both set: choose one of `token`, `user`/`password`, `nkey_seed_file` or `creds_file`"
        );
        report.error(&span, &dotted(table, second), message);
    }
    for (one, other) in [
        ("user", "password"),
        ("password", "user"),
        ("tls_cert", "tls_key"),
        ("tls_key", "tls_cert"),
    ] {
        if let (Some(span), None) = (span_of(one), span_of(other)) {
            report.error(
                &span,
                &dotted(table, one),
                format!("`{one}` needs `{other}`"),
            );
        }
    }
}

/// NATS subject tokens: no empty ones, no spaces or wildcards.
fn valid_subject_prefix(text: &str) -> bool {
    text.split('.').all(|token| {
        !token.is_empty() && !token.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
    })
}

/// JetStream stream names: no spaces, dots, wildcards or path separators.
fn valid_stream_name(text: &str) -> bool {
    !text.is_empty() && !text.contains(|c: char| c.is_whitespace() || ".*>/\\".contains(c))
}
