//! The daemon's configuration file (TOML).
//!
//! [`parse`] checks the whole file and reports every problem it finds, not
//! just the first, each with the file, the line and the dotted key it is about
//! (`scan.rate`, `monitor[2].expected_open`; `[[sink]]` and `[[monitor]]`
//! entries are numbered from 0). `config/palisade.example.toml` documents every
//! key.
//!
//! The text is parsed into a [`toml::de::DeTable`], which keeps the span of
//! every key and value, and the tree is then walked by hand: that way unknown
//! keys, wrong types and bad values are all collected in one pass, with lines.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeInteger, DeTable, DeValue};

use palisade_core::monitor::MonitorSpec;
use palisade_core::wire::MacAddr;
use palisade_dataplane::scan::{DEFAULT_RATE, DEFAULT_SOURCE_PORTS};

/// Default `store.path`.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/palisade/palisade.db";
/// Default `monitor.every`.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(12 * 3600);
/// Default `monitor.confirm`.
pub const DEFAULT_CONFIRM: u32 = 2;
/// Default `monitor.recheck`.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(5 * 60);
/// Default `subject_prefix` of a NATS sink.
pub const DEFAULT_NATS_SUBJECT_PREFIX: &str = "palisade";
/// Default `stream` of a NATS sink.
pub const DEFAULT_NATS_STREAM: &str = "PALISADE";
/// Default `timeout` of a webhook sink.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `max_retries` of a webhook sink.
pub const DEFAULT_WEBHOOK_MAX_RETRIES: u32 = 5;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub scan: ScanSettings,
    pub store: StoreSettings,
    pub sinks: Vec<SinkSpec>,
    pub monitors: Vec<MonitorSpec>,
}

/// `[scan]`: how the sweeps are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanSettings {
    /// `None`: the interface of the route to the targets.
    pub interface: Option<String>,
    /// Probes per second.
    pub rate: u64,
    /// Extra probes for a port that did not answer.
    pub retries: u32,
    /// How long to wait for late replies after the last probe.
    pub wait: Duration,
    /// Inclusive source-port range.
    pub source_ports: (u16, u16),
    pub source_v4: Option<Ipv4Addr>,
    pub source_v6: Option<Ipv6Addr>,
    pub gateway_mac: Option<MacAddr>,
}

impl Default for ScanSettings {
    fn default() -> Self {
        ScanSettings {
            interface: None,
            rate: DEFAULT_RATE,
            retries: 1,
            wait: Duration::from_secs(1),
            source_ports: DEFAULT_SOURCE_PORTS,
            source_v4: None,
            source_v6: None,
            gateway_mac: None,
        }
    }
}

/// `[store]`: where the state lives.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    pub path: PathBuf,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            path: PathBuf::from(DEFAULT_STORE_PATH),
        }
    }
}

/// One `[[sink]]`: where events go.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once at start-up; plain NatsSinkOptions are simpler to match on than a box"
)]
pub enum SinkSpec {
    /// JSON lines appended to `path`; `None`: standard output.
    Jsonl {
        path: Option<PathBuf>,
    },
    Nats(NatsSinkOptions),
    /// An HTTP POST per event.
    Webhook {
        url: String,
        timeout: Duration,
        max_retries: u32,
    },
}

/// How a NATS sink encodes events.
pub use palisade_outputs::schema::PayloadFormat;
/// A `[[sink]]` of kind `"nats"`: the NATS sink's own settings (the
/// connection name and connect timeout are not configurable and keep their
/// defaults, `palisade` and 5 s).
pub use palisade_outputs::sink::NatsSinkOptions;

/// Every problem found, not just the first. Never empty.
#[derive(Debug, thiserror::Error)]
#[error("{}", one_per_line(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    /// The file, as named by the caller.
    pub file: String,
    /// 1-based; 0 when the file could not be read.
    pub line: usize,
    /// Dotted key, e.g. `scan.rate` or `monitor[2].expected_open`.
    pub key: String,
    pub message: String,
}

fn one_per_line(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text),
        Err(err) => Err(ConfigErrors(vec![ConfigError {
            file,
            line: 0,
            key: "(file)".to_owned(),
            message: format!("cannot read the configuration file: {err}"),
        }])),
    }
}

/// Checks the configuration in `text`; `file` only names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        let mut errors: Vec<ConfigError> = syntax_errors
            .iter()
            .map(|err| {
                let span = err.span().unwrap_or(0..0);
                let mut message = err.message().to_owned();
                if message == "duplicate key"
                    && let Some(name) = text.get(span.clone())
                {
                    message = format!("duplicate key `{name}`");
                }
                ConfigError {
                    file: file.to_owned(),
                    line: line_of(text, span.start),
                    key: table_at(text, span.start),
                    message,
                }
            })
            .collect();
        errors.sort_by_key(|err| err.line);
        return Err(ConfigErrors(errors));
    }

    let mut checker = Checker {
        file,
        text,
        errors: Vec::new(),
    };
    let config = checker.config(&Section {
        path: String::new(),
        span: 0..0,
        entries: root.get_ref(),
    });
    if checker.errors.is_empty() {
        Ok(config)
    } else {
        // The tables are walked in key order; report in file order.
        checker.errors.sort_by_key(|err| err.line);
        Err(ConfigErrors(checker.errors))
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    1 + text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// The key to name a syntax error with: the last `[table]` or `[[array]]`
/// header at or above the error's line (a best guess, as the document could
/// not be parsed).
fn table_at(text: &str, offset: usize) -> String {
    let end = text
        .get(offset..)
        .and_then(|rest| rest.find('\n'))
        .map_or(text.len(), |i| offset + i);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut table = "(top level)".to_owned();
    for line in text.get(..end).unwrap_or(text).lines() {
        let line = line.trim();
        if let Some((name, _)) = line.strip_prefix("[[").and_then(|l| l.split_once("]]")) {
            let count = seen.entry(name.trim()).or_default();
            table = format!("{}[{count}]", name.trim());
            *count += 1;
        } else if let Some((name, _)) = line.strip_prefix('[').and_then(|l| l.split_once(']')) {
            table = name.trim().to_owned();
        }
    }
    table
}

type Value<'i> = Spanned<DeValue<'i>>;

/// A table of the document.
struct Section<'a, 'i> {
    /// Its dotted key; empty for the document itself.
    path: String,
    /// Where it starts: its header, or its key for dotted and inline tables.
    span: Range<usize>,
    entries: &'a DeTable<'i>,
}

impl<'a, 'i> Section<'a, 'i> {
    fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value<'i>> {
        self.entries
            .iter()
            .find(|(key, _)| key.get_ref() == name)
            .map(|(_, value)| value)
    }
}

const TOP_KEYS: &[&str] = &["scan", "store", "sink", "monitor"];
const SCAN_KEYS: &[&str] = &[
    "interface",
    "rate",
    "retries",
    "wait",
    "source_ports",
    "source_ip",
    "gateway_mac",
];
const STORE_KEYS: &[&str] = &["path"];
const SINK_KINDS: &[&str] = &["jsonl", "nats", "webhook"];
const JSONL_KEYS: &[&str] = &["kind", "path"];
const NATS_KEYS: &[&str] = &[
    "kind",
    "url",
    "subject_prefix",
    "stream",
    "token",
    "user",
    "password",
    "nkey_seed_file",
    "creds_file",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "format",
];
const WEBHOOK_KEYS: &[&str] = &["kind", "url", "timeout", "max_retries"];
const MONITOR_KEYS: &[&str] = &[
    "name",
    "host",
    "expected_open",
    "every",
    "confirm",
    "recheck",
];

/// Bounds of the durations.
const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
/// A year as humantime counts it (365.25 days), so that it prints as `1year`.
const YEAR: Duration = Duration::from_secs(31_557_600);

/// Walks the document, collecting errors.
struct Checker<'t> {
    file: &'t str,
    text: &'t str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line: line_of(self.text, span.start),
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn type_error(&mut self, value: &Value<'_>, key: &str, expected: &str) {
        let found = describe(value.get_ref());
        self.error(
            value.span(),
            key,
            format!("expected {expected}, found {found}"),
        );
    }

    /// Reports each key of `section` that is not in `known`.
    fn unknown_keys(&mut self, section: &Section<'_, '_>, known: &[&str]) {
        for (key, _) in section.entries.iter() {
            let name = key.get_ref().as_ref();
            if known.contains(&name) {
                continue;
            }
            let message = match closest(name, known) {
                Some(guess) => format!("unknown key `{name}`, did you mean `{guess}`?"),
                None => format!("unknown key `{name}`; known keys: {}", known.join(", ")),
            };
            self.error(key.span(), &section.key(name), message);
        }
    }

    /// The value of a key that must be there.
    fn required<'a, 'i>(&mut self, section: &Section<'a, 'i>, name: &str) -> Option<&'a Value<'i>> {
        let value = section.get(name);
        if value.is_none() {
            let key = section.key(name);
            self.error(
                section.span.clone(),
                &key,
                format!("missing required key `{name}`"),
            );
        }
        value
    }

    fn table<'a, 'i>(&mut self, parent: &Section<'a, 'i>, name: &str) -> Option<Section<'a, 'i>> {
        let value = parent.get(name)?;
        let key = parent.key(name);
        match value.get_ref() {
            DeValue::Table(entries) => Some(Section {
                path: key,
                span: value.span(),
                entries,
            }),
            _ => {
                self.type_error(value, &key, &format!("a table ([{name}])"));
                None
            }
        }
    }

    /// The tables of a `[[name]]` array, keyed `name[0]`, `name[1]`, ...
    fn array_of_tables<'a, 'i>(
        &mut self,
        parent: &Section<'a, 'i>,
        name: &str,
    ) -> Vec<Section<'a, 'i>> {
        let Some(value) = parent.get(name) else {
            return Vec::new();
        };
        let key = parent.key(name);
        let DeValue::Array(items) = value.get_ref() else {
            let expected = format!("an array of tables ([[{name}]], with two brackets)");
            self.type_error(value, &key, &expected);
            return Vec::new();
        };
        let mut sections = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("{key}[{i}]");
            match item.get_ref() {
                DeValue::Table(entries) => sections.push(Section {
                    path: key,
                    span: item.span(),
                    entries,
                }),
                _ => self.type_error(item, &key, "a table"),
            }
        }
        sections
    }

    fn str_value<'v>(&mut self, value: &'v Value<'_>, key: &str) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(text) => Some(text),
            _ => {
                self.type_error(value, key, "a string");
                None
            }
        }
    }

    fn string(&mut self, section: &Section<'_, '_>, name: &str) -> Option<String> {
        let value = section.get(name)?;
        let text = self.str_value(value, &section.key(name))?;
        Some(text.to_owned())
    }

    /// A string that must not be empty.
    fn nonempty_string(&mut self, section: &Section<'_, '_>, name: &str) -> Option<String> {
        let text = self.string(section, name)?;
        if text.is_empty() {
            let span = section.get(name)?.span();
            self.error(span, &section.key(name), "must not be empty");
            return None;
        }
        Some(text)
    }

    fn path(&mut self, section: &Section<'_, '_>, name: &str) -> Option<PathBuf> {
        self.nonempty_string(section, name).map(PathBuf::from)
    }

    /// A string, or an array of strings; each with its span.
    fn string_list<'a>(&mut self, value: &'a Value<'_>, key: &str) -> Vec<(&'a str, Range<usize>)> {
        match value.get_ref() {
            DeValue::String(text) => vec![(text.as_ref(), value.span())],
            DeValue::Array(items) => items
                .iter()
                .filter_map(|item| Some((self.str_value(item, key)?, item.span())))
                .collect(),
            _ => {
                self.type_error(value, key, "a string or an array of strings");
                Vec::new()
            }
        }
    }

    fn int_value(
        &mut self,
        value: &Value<'_>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let DeValue::Integer(integer) = value.get_ref() else {
            self.type_error(value, key, "an integer");
            return None;
        };
        match to_i64(integer).filter(|n| range.contains(n)) {
            Some(n) => Some(n),
            None => {
                let (min, max) = range.into_inner();
                let text = &self.text[value.span()];
                self.error(
                    value.span(),
                    key,
                    format!("{text} is out of range (allowed: {min} to {max})"),
                );
                None
            }
        }
    }

    fn integer(
        &mut self,
        section: &Section<'_, '_>,
        name: &str,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let value = section.get(name)?;
        self.int_value(value, &section.key(name), range)
    }

    fn u32(
        &mut self,
        section: &Section<'_, '_>,
        name: &str,
        range: RangeInclusive<u32>,
    ) -> Option<u32> {
        let range = i64::from(*range.start())..=i64::from(*range.end());
        let n = self.integer(section, name, range)?;
        u32::try_from(n).ok()
    }

    fn duration_value(
        &mut self,
        value: &Value<'_>,
        key: &str,
        allowed: RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let DeValue::String(text) = value.get_ref() else {
            self.type_error(value, key, "a duration such as \"12h\"");
            return None;
        };
        let duration = match humantime::parse_duration(text) {
            Ok(duration) => duration,
            Err(err) => {
                let message = format!(
                    "invalid duration {text:?} ({err}); write e.g. \"1s\", \"5m\" or \"12h\""
                );
                self.error(value.span(), key, message);
                return None;
            }
        };
        let (min, max) = allowed.into_inner();
        let problem = if duration < min {
            format!("must be at least {}", humantime::format_duration(min))
        } else if duration > max {
            format!("must be at most {}", humantime::format_duration(max))
        } else {
            return Some(duration);
        };
        self.error(
            value.span(),
            key,
            format!("{text:?} is out of range: {problem}"),
        );
        None
    }

    fn duration(
        &mut self,
        section: &Section<'_, '_>,
        name: &str,
        allowed: RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let value = section.get(name)?;
        self.duration_value(value, &section.key(name), allowed)
    }

    fn config(&mut self, top: &Section<'_, '_>) -> Config {
        self.unknown_keys(top, TOP_KEYS);
        let scan = match self.table(top, "scan") {
            Some(section) => self.scan(&section),
            None => ScanSettings::default(),
        };
        let store = match self.table(top, "store") {
            Some(section) => self.store(&section),
            None => StoreSettings::default(),
        };
        let sinks = self
            .array_of_tables(top, "sink")
            .iter()
            .filter_map(|section| self.sink(section))
            .collect();
        let mut names = HashMap::new();
        let monitors = self
            .array_of_tables(top, "monitor")
            .iter()
            .filter_map(|section| self.monitor(section, &mut names))
            .collect();
        Config {
            scan,
            store,
            sinks,
            monitors,
        }
    }

    fn scan(&mut self, s: &Section<'_, '_>) -> ScanSettings {
        self.unknown_keys(s, SCAN_KEYS);
        let defaults = ScanSettings::default();
        let (source_v4, source_v6) = self.source_ips(s, "source_ip");
        ScanSettings {
            interface: self.interface(s, "interface"),
            rate: self
                .integer(s, "rate", 1..=100_000_000)
                .map_or(defaults.rate, |n| n as u64),
            retries: self.u32(s, "retries", 0..=10).unwrap_or(defaults.retries),
            wait: self
                .duration(s, "wait", Duration::ZERO..=HOUR)
                .unwrap_or(defaults.wait),
            source_ports: self
                .source_ports(s, "source_ports")
                .unwrap_or(defaults.source_ports),
            source_v4,
            source_v6,
            gateway_mac: self.gateway_mac(s, "gateway_mac"),
        }
    }

    fn interface(&mut self, s: &Section<'_, '_>, name: &str) -> Option<String> {
        let interface = self.string(s, name)?;
        // Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
        let valid = (1..=15).contains(&interface.len())
            && !interface
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !valid {
            let message = format!(
                "invalid interface name {interface:?} (1 to 15 characters, no '/', ':' or spaces)"
            );
            self.error(s.get(name)?.span(), &s.key(name), message);
            return None;
        }
        Some(interface)
    }

    fn source_ports(&mut self, s: &Section<'_, '_>, name: &str) -> Option<(u16, u16)> {
        let value = s.get(name)?;
        let key = s.key(name);
        let ports = match value.get_ref() {
            DeValue::String(text) => parse_port_range(text),
            DeValue::Integer(integer) => to_i64(integer)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|&port| port != 0)
                .map(|port| (port, port)),
            _ => {
                self.type_error(value, &key, "a port or a range such as \"61000-61063\"");
                return None;
            }
        };
        if ports.is_none() {
            let text = &self.text[value.span()];
            let message = format!(
                "invalid source ports {text}: give a port (61000) or a range (61000-61063) within 1-65535"
            );
            self.error(value.span(), &key, message);
        }
        ports
    }

    fn source_ips(
        &mut self,
        s: &Section<'_, '_>,
        name: &str,
    ) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let (mut v4, mut v6) = (None, None);
        let Some(value) = s.get(name) else {
            return (v4, v6);
        };
        let key = s.key(name);
        for (text, span) in self.string_list(value, &key) {
            let repeated = match text.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => v4.replace(ip).is_some(),
                Ok(IpAddr::V6(ip)) => v6.replace(ip).is_some(),
                Err(_) => {
                    self.error(span, &key, format!("invalid IP address {text:?}"));
                    continue;
                }
            };
            if repeated {
                let message = format!(
                    "{text} is a second address of its family: give at most one IPv4 and one IPv6"
                );
                self.error(span, &key, message);
            }
        }
        (v4, v6)
    }

    fn gateway_mac(&mut self, s: &Section<'_, '_>, name: &str) -> Option<MacAddr> {
        let text = self.string(s, name)?;
        match text.parse() {
            Ok(mac) => Some(mac),
            Err(err) => {
                self.error(s.get(name)?.span(), &s.key(name), err.to_string());
                None
            }
        }
    }

    fn store(&mut self, s: &Section<'_, '_>) -> StoreSettings {
        self.unknown_keys(s, STORE_KEYS);
        StoreSettings {
            path: self
                .path(s, "path")
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE_PATH)),
        }
    }

    fn sink(&mut self, s: &Section<'_, '_>) -> Option<SinkSpec> {
        let kind = match self.required(s, "kind") {
            Some(value) => self.sink_kind(value, &s.key("kind")),
            None => None,
        };
        match kind {
            Some("jsonl") => {
                self.unknown_keys(s, JSONL_KEYS);
                Some(SinkSpec::Jsonl {
                    path: self.path(s, "path"),
                })
            }
            Some("nats") => {
                self.unknown_keys(s, NATS_KEYS);
                self.nats(s).map(SinkSpec::Nats)
            }
            Some("webhook") => {
                self.unknown_keys(s, WEBHOOK_KEYS);
                self.webhook(s)
            }
            _ => {
                // Kind unknown: still catch keys no kind has.
                let mut all: Vec<&str> = [JSONL_KEYS, NATS_KEYS, WEBHOOK_KEYS].concat();
                all.sort_unstable();
                all.dedup();
                self.unknown_keys(s, &all);
                None
            }
        }
    }

    fn sink_kind(&mut self, value: &Value<'_>, key: &str) -> Option<&'static str> {
        let kind = self.str_value(value, key)?;
        if let Some(known) = SINK_KINDS.iter().copied().find(|&known| known == kind) {
            return Some(known);
        }
        let mut message =
            format!("unknown sink kind {kind:?}; expected \"jsonl\", \"nats\" or \"webhook\"");
        if let Some(guess) = closest(kind, SINK_KINDS) {
            message.push_str(&format!(" (did you mean {guess:?}?)"));
        }
        self.error(value.span(), key, message);
        None
    }

    /// A `[[sink]]` of kind `"nats"`. The NATS rules (server URLs, subject
    /// prefix, stream name, one way to authenticate, `user` with `password`,
    /// `tls_cert` with `tls_key`) are `palisade_outputs::nats`'s, shared with
    /// the sink and `palisade-alert`; each broken one is reported at the key
    /// it names.
    fn nats(&mut self, s: &Section<'_, '_>) -> Option<NatsSinkOptions> {
        use palisade_outputs::nats::{self, NatsAuth, NatsOptionError, NatsOptions, NatsTls};
        let report = |checker: &mut Self, err: NatsOptionError| {
            let span = s.get(err.key).map_or(s.span.clone(), Spanned::span);
            checker.error(span, &s.key(err.key), err.message);
        };
        let urls: Option<Vec<String>> = self.required(s, "url").map(|value| {
            let key = s.key("url");
            let urls = self.string_list(value, &key);
            urls.into_iter().map(|(url, _)| url.to_owned()).collect()
        });
        let subject_prefix = self
            .string(s, "subject_prefix")
            .unwrap_or_else(|| DEFAULT_NATS_SUBJECT_PREFIX.to_owned());
        let stream = self
            .string(s, "stream")
            .unwrap_or_else(|| DEFAULT_NATS_STREAM.to_owned());
        let format = match s.get("format") {
            None => PayloadFormat::MsgPack,
            Some(value) => match self.str_value(value, &s.key("format")) {
                Some("json") => PayloadFormat::Json,
                Some("msgpack") | None => PayloadFormat::MsgPack,
                Some(other) => {
                    let message =
                        format!("unknown format {other:?}; expected \"msgpack\" or \"json\"");
                    self.error(value.span(), &s.key("format"), message);
                    PayloadFormat::MsgPack
                }
            },
        };
        let auth = NatsAuth::from_parts(
            self.nonempty_string(s, "token"),
            self.nonempty_string(s, "user"),
            self.nonempty_string(s, "password"),
            self.path(s, "nkey_seed_file"),
            self.path(s, "creds_file"),
        )
        .unwrap_or_else(|err| {
            report(self, err);
            NatsAuth::None
        });
        let tls = NatsTls::from_parts(
            self.path(s, "tls_ca"),
            self.path(s, "tls_cert"),
            self.path(s, "tls_key"),
        )
        .unwrap_or_else(|err| {
            report(self, err);
            NatsTls::default()
        });
        for check in [
            nats::validate_subject_prefix(&subject_prefix),
            nats::validate_stream_name(&stream),
        ] {
            if let Err(err) = check {
                report(self, err);
            }
        }
        let nats = NatsOptions {
            urls: urls?,
            auth,
            tls,
            ..NatsOptions::default()
        };
        if let Err(err) = nats.validate() {
            report(self, err);
        }
        Some(NatsSinkOptions {
            nats,
            subject_prefix,
            stream,
            format,
        })
    }

    fn webhook(&mut self, s: &Section<'_, '_>) -> Option<SinkSpec> {
        let timeout = self
            .duration(s, "timeout", MILLISECOND..=HOUR)
            .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
        let max_retries = self
            .u32(s, "max_retries", 0..=100)
            .unwrap_or(DEFAULT_WEBHOOK_MAX_RETRIES);
        let value = self.required(s, "url")?;
        let url = self.str_value(value, &s.key("url"))?;
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|rest| rest.is_empty() || rest.contains(char::is_whitespace)) {
            let message = format!("invalid webhook URL {url:?}: give an http:// or https:// URL");
            self.error(value.span(), &s.key("url"), message);
            return None;
        }
        Some(SinkSpec::Webhook {
            url: url.to_owned(),
            timeout,
            max_retries,
        })
    }

    /// `names` maps each monitor name seen so far to its line.
    fn monitor(
        &mut self,
        s: &Section<'_, '_>,
        names: &mut HashMap<String, usize>,
    ) -> Option<MonitorSpec> {
        self.unknown_keys(s, MONITOR_KEYS);
        let name = self.monitor_name(s, names);
        let host = self.host(s);
        let expected_open = self.expected_open(s);
        let every = self
            .duration(s, "every", SECOND..=YEAR)
            .unwrap_or(DEFAULT_EVERY);
        let confirm = self.u32(s, "confirm", 1..=10).unwrap_or(DEFAULT_CONFIRM);
        let recheck = match s.get("recheck") {
            None => Some(DEFAULT_RECHECK),
            Some(value) if matches!(value.get_ref(), DeValue::String(text) if text == "off") => {
                None
            }
            Some(value) => self.duration_value(value, &s.key("recheck"), MILLISECOND..=YEAR),
        };
        Some(MonitorSpec {
            name: name?,
            host: host?,
            expected_open,
            every_ms: millis(every),
            confirm,
            recheck_ms: recheck.map(millis),
        })
    }

    fn monitor_name(
        &mut self,
        s: &Section<'_, '_>,
        names: &mut HashMap<String, usize>,
    ) -> Option<String> {
        let value = self.required(s, "name")?;
        let key = s.key("name");
        let name = self.str_value(value, &key)?;
        let line = line_of(self.text, value.span().start);
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if name.is_empty() || name.len() > 64 || !valid_chars {
            let message =
                format!("invalid monitor name {name:?}: 1 to 64 of A-Z, a-z, 0-9, '_' and '-'");
            self.error(value.span(), &key, message);
            return None;
        }
        if let Some(first) = names.get(name) {
            let message = format!("duplicate monitor name {name:?} (first used on line {first})");
            self.error(value.span(), &key, message);
            return None;
        }
        names.insert(name.to_owned(), line);
        Some(name.to_owned())
    }

    fn host(&mut self, s: &Section<'_, '_>) -> Option<String> {
        let value = self.required(s, "host")?;
        let host = self.str_value(value, &s.key("host"))?;
        match check_host(host) {
            Ok(()) => Some(host.to_owned()),
            Err(problem) => {
                let message = format!("invalid host {host:?}: {problem}");
                self.error(value.span(), &s.key("host"), message);
                None
            }
        }
    }

    /// The ports; every error points at the array.
    fn expected_open(&mut self, s: &Section<'_, '_>) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        let Some(value) = s.get("expected_open") else {
            return ports;
        };
        let key = s.key("expected_open");
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(value, &key, "an array of port numbers");
            return ports;
        };
        for item in items.iter() {
            let DeValue::Integer(integer) = item.get_ref() else {
                let found = describe(item.get_ref());
                self.error(
                    value.span(),
                    &key,
                    format!("expected port numbers, found {found}"),
                );
                continue;
            };
            let text = &self.text[item.span()];
            match to_i64(integer).and_then(|n| u16::try_from(n).ok()) {
                Some(port) if port != 0 => {
                    if !ports.insert(port) {
                        self.error(value.span(), &key, format!("port {port} is listed twice"));
                    }
                }
                _ => {
                    let message = format!("port {text} is out of range (allowed: 1 to 65535)");
                    self.error(value.span(), &key, message);
                }
            }
        }
        ports
    }
}

/// "a string", "an integer", ...
fn describe(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn to_i64(integer: &DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(integer.as_str(), integer.radix()).ok()
}

/// Whole milliseconds; the durations are bounded well below `u64::MAX` ms.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `"61000"` or `"61000-61063"`, within 1-65535.
fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let lo: u16 = lo.trim().parse().ok()?;
    let hi: u16 = hi.trim().parse().ok()?;
    (lo != 0 && lo <= hi).then_some((lo, hi))
}

/// An IPv4 or IPv6 address, or a host name in RFC 1123 syntax.
fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.starts_with('[') {
        return Err("write IPv6 addresses without brackets".to_owned());
    }
    if host.contains(':') {
        return Err("not a valid IPv6 address".to_owned());
    }
    // A trailing dot (fully qualified) is allowed.
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err("a host name has 1 to 253 characters".to_owned());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters".to_owned());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "{c:?} is not allowed (letters, digits, '-' and '.' only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'".to_owned());
        }
    }
    // RFC 1123 2.1: a name never looks like a dotted-decimal address.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(
            "not a valid IP address, and a host name cannot end in a numeric label".to_owned(),
        );
    }
    Ok(())
}

/// The entry of `known` closest to the misspelt `key`, if one is close.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (key.chars().count() / 3).max(2);
    known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|&(distance, _)| distance <= limit && distance < key.chars().count())
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_outputs::nats::{NatsAuth, NatsOptions, NatsTls};

    /// The errors of `text`; panics if it parses.
    fn errors(text: &str) -> Vec<ConfigError> {
        match parse("test.toml", text) {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(errors) => errors.0,
        }
    }

    /// Asserts that `text` has exactly one error, at `line` and `key`, whose
    /// message contains `fragment`.
    #[track_caller]
    fn assert_error(text: &str, line: usize, key: &str, fragment: &str) {
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "{text}\n{errors:#?}");
        let error = &errors[0];
        assert_eq!(
            (error.file.as_str(), error.line, error.key.as_str()),
            ("test.toml", line, key),
            "{text}\n{error:#?}"
        );
        assert!(
            error.message.contains(fragment),
            "{text}\nmessage {:?} lacks {fragment:?}",
            error.message
        );
    }

    /// A valid monitor (lines 1-3) followed by `line` (line 4).
    fn monitor_with(line: &str) -> String {
        format!("[[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\n{line}\n")
    }

    /// A sink of `kind` (lines 1-2) followed by `lines` (from line 3).
    fn sink_with(kind: &str, lines: &str) -> String {
        format!("[[sink]]\nkind = \"{kind}\"\n{lines}\n")
    }

    fn monitor(name: &str, host: &str) -> MonitorSpec {
        MonitorSpec {
            name: name.to_owned(),
            host: host.to_owned(),
            expected_open: BTreeSet::new(),
            every_ms: 12 * 3600 * 1000,
            confirm: 2,
            recheck_ms: Some(5 * 60 * 1000),
        }
    }

    #[test]
    fn full_config_round_trips() {
        let text = r#"
[scan]
interface = "eth1"
rate = 250_000
retries = 3
wait = "2s 500ms"
source_ports = "40000-40015"
source_ip = ["2001:2::1", "198.18.0.1"]
gateway_mac = "AA:bb:cc:dd:ee:0f"

[store]
path = "/srv/palisade/state.db"

[[sink]]
kind = "jsonl"

[[sink]]
kind = "nats"
url = "tls://nats.example.com:4222"
subject_prefix = "ops.palisade"
stream = "PORTS"
user = "palisade"
password = "hunter2"
tls_ca = "/etc/ca.pem"
tls_cert = "/etc/client.pem"
tls_key = "/etc/client.key"
format = "json"

[[sink]]
kind = "webhook"
url = "http://hooks.example.com/in"
timeout = "3s"
max_retries = 0

[[monitor]]
name = "web-1"
host = "198.18.0.2"
expected_open = [443, 80]
every = "1h"
confirm = 3
recheck = "30s"

[[monitor]]
name = "mail_2"
host = "mail.example.com"
recheck = "off"
"#;
        let expected = Config {
            scan: ScanSettings {
                interface: Some("eth1".to_owned()),
                rate: 250_000,
                retries: 3,
                wait: Duration::from_millis(2500),
                source_ports: (40_000, 40_015),
                source_v4: Some(Ipv4Addr::new(198, 18, 0, 1)),
                source_v6: Some("2001:2::1".parse().unwrap()),
                gateway_mac: Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f])),
            },
            store: StoreSettings {
                path: PathBuf::from("/srv/palisade/state.db"),
            },
            sinks: vec![
                SinkSpec::Jsonl { path: None },
                SinkSpec::Nats(NatsSinkOptions {
                    nats: NatsOptions {
                        urls: vec!["tls://nats.example.com:4222".to_owned()],
                        auth: NatsAuth::UserPassword {
                            user: "palisade".to_owned(),
                            password: "hunter2".to_owned(),
                        },
                        tls: NatsTls {
                            ca: Some(PathBuf::from("/etc/ca.pem")),
                            client_cert: Some((
                                PathBuf::from("/etc/client.pem"),
                                PathBuf::from("/etc/client.key"),
                            )),
                        },
                        ..NatsOptions::default()
                    },
                    subject_prefix: "ops.palisade".to_owned(),
                    stream: "PORTS".to_owned(),
                    format: PayloadFormat::Json,
                }),
                SinkSpec::Webhook {
                    url: "http://hooks.example.com/in".to_owned(),
                    timeout: Duration::from_secs(3),
                    max_retries: 0,
                },
            ],
            monitors: vec![
                MonitorSpec {
                    name: "web-1".to_owned(),
                    host: "198.18.0.2".to_owned(),
                    expected_open: BTreeSet::from([80, 443]),
                    every_ms: 3_600_000,
                    confirm: 3,
                    recheck_ms: Some(30_000),
                },
                MonitorSpec {
                    recheck_ms: None,
                    ..monitor("mail_2", "mail.example.com")
                },
            ],
        };
        assert_eq!(parse("test.toml", text).unwrap(), expected);
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = parse("test.toml", "").unwrap();
        assert_eq!(
            config.scan,
            ScanSettings {
                interface: None,
                rate: 100_000,
                retries: 1,
                wait: Duration::from_secs(1),
                source_ports: (61_000, 61_063),
                source_v4: None,
                source_v6: None,
                gateway_mac: None,
            }
        );
        assert_eq!(
            config.store.path,
            PathBuf::from("/var/lib/palisade/palisade.db")
        );
        assert_eq!(config.sinks, []);
        assert_eq!(config.monitors, []);
        // Empty tables too.
        assert_eq!(parse("test.toml", "[scan]\n[store]\n").unwrap(), config);
    }

    #[test]
    fn omitted_keys_take_their_defaults() {
        let text = r#"
[[sink]]
kind = "nats"
url = "nats://nats.example.com"

[[sink]]
kind = "webhook"
url = "https://hooks.example.com/"

[[monitor]]
name = "a"
host = "2001:2::10"
"#;
        let config = parse("test.toml", text).unwrap();
        assert_eq!(
            config.sinks,
            [
                SinkSpec::Nats(NatsSinkOptions {
                    nats: NatsOptions {
                        urls: vec!["nats://nats.example.com".to_owned()],
                        auth: NatsAuth::None,
                        tls: NatsTls::default(),
                        name: "palisade".to_owned(),
                        connect_timeout: Duration::from_secs(5),
                    },
                    subject_prefix: "palisade".to_owned(),
                    stream: "PALISADE".to_owned(),
                    format: PayloadFormat::MsgPack,
                }),
                SinkSpec::Webhook {
                    url: "https://hooks.example.com/".to_owned(),
                    timeout: Duration::from_secs(10),
                    max_retries: 5,
                },
            ]
        );
        assert_eq!(config.monitors, [monitor("a", "2001:2::10")]);
    }

    #[test]
    fn alternative_spellings_are_accepted() {
        let text = r#"
scan.source_ports = 61000
scan.source_ip = "198.18.0.9"
sink = [{ kind = "jsonl", path = "/tmp/e.jsonl" }]
[[monitor]]
name = "x"
host = "mail.example.com."
expected_open = [+22, 0x50]
"#;
        let config = parse("test.toml", text).unwrap();
        assert_eq!(config.scan.source_ports, (61_000, 61_000));
        assert_eq!(config.scan.source_v4, Some(Ipv4Addr::new(198, 18, 0, 9)));
        assert_eq!(
            config.sinks,
            [SinkSpec::Jsonl {
                path: Some(PathBuf::from("/tmp/e.jsonl"))
            }]
        );
        assert_eq!(config.monitors[0].expected_open, BTreeSet::from([22, 80]));
    }

    #[test]
    fn example_file_parses_and_documents_every_key() {
        let text = include_str!("../../../config/palisade.example.toml");
        let config = parse("palisade.example.toml", text).unwrap();
        assert_eq!(config.scan.source_v4, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(config.sinks.len(), 3);
        assert!(matches!(config.sinks[1], SinkSpec::Nats(ref sink) if sink.nats.urls.len() == 2));
        let names: Vec<&str> = config.monitors.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["web-1", "mail", "db-v6"]);
        let all_keys = [
            SCAN_KEYS,
            STORE_KEYS,
            JSONL_KEYS,
            NATS_KEYS,
            WEBHOOK_KEYS,
            MONITOR_KEYS,
        ]
        .concat();
        for key in all_keys {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
                "{key}"
            );
        }
        for section in ["[scan]", "[store]", "[[sink]]", "[[monitor]]"] {
            assert!(text.contains(section), "{section}");
        }
    }

    #[test]
    fn load_reads_a_file_and_names_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/palisade.example.toml");
        assert_eq!(load(&path).unwrap().monitors.len(), 3);

        let missing = Path::new("/nonexistent/palisade.toml");
        let errors = load(missing).unwrap_err().0;
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (
                errors[0].file.as_str(),
                errors[0].line,
                errors[0].key.as_str()
            ),
            ("/nonexistent/palisade.toml", 0, "(file)")
        );
        assert!(
            errors[0]
                .message
                .starts_with("cannot read the configuration file: "),
            "{:?}",
            errors[0]
        );
    }

    #[test]
    fn syntax_errors_name_line_and_table() {
        assert_error(
            "[scan]\nrate = 100\nrate = 200\n",
            3,
            "scan",
            "duplicate key `rate`",
        );
        assert_error(
            "[scan]\n[store]\n[scan]\n",
            3,
            "scan",
            "duplicate key `scan`",
        );
        assert_error(
            "[[monitor]]\nname = \"a\"\n\n[[monitor]]\nname = \"b\nhost = \"c\"\n",
            5,
            "monitor[1]",
            "invalid basic string",
        );
        assert_error("x = [1, 2\n", 1, "(top level)", "unclosed array");
        // Several syntax errors, in file order.
        let errors = errors("[[monitor]]\nname = \"a\nhost = \"b\"\nexpected_open = [80,\n");
        let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(found, [(2, "monitor[0]"), (4, "monitor[0]")]);
    }

    #[test]
    fn unknown_key_suggests_the_known_one() {
        assert_error(
            &monitor_with("expectd_open = [80]"),
            4,
            "monitor[0].expectd_open",
            "unknown key `expectd_open`, did you mean `expected_open`?",
        );
        assert_error(
            "[scna]\nrate = 1\n",
            1,
            "scna",
            "unknown key `scna`, did you mean `scan`?",
        );
        assert_error(
            "[scan]\nsource_port = \"1\"\n",
            2,
            "scan.source_port",
            "did you mean `source_ports`?",
        );
    }

    #[test]
    fn unknown_key_without_a_close_match_lists_the_known_ones() {
        assert_error(
            "[store]\nfoo = 1\n",
            2,
            "store.foo",
            "unknown key `foo`; known keys: path",
        );
        // Keys of another kind of sink are unknown too.
        assert_error(
            &sink_with("jsonl", "url = \"x\""),
            3,
            "sink[0].url",
            "unknown key `url`; known keys: kind, path",
        );
        // Sub-tables of a monitor.
        assert_error(
            &monitor_with("[monitor.extra]"),
            4,
            "monitor[0].extra",
            "unknown key `extra`",
        );
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = r#"[scan]
rate = 0
retries = 11
colour = "blue"

[[monitor]]
name = "web 1"
host = "198.18.0.2"
expected_open = [0, 80, 80]
confirm = 0

[[monitor]]
host = "-bad.example.com"
every = "0s"
"#;
        let errors = errors(text);
        let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (2, "scan.rate"),
                (3, "scan.retries"),
                (4, "scan.colour"),
                (7, "monitor[0].name"),
                (9, "monitor[0].expected_open"),
                (9, "monitor[0].expected_open"),
                (10, "monitor[0].confirm"),
                (12, "monitor[1].name"),
                (13, "monitor[1].host"),
                (14, "monitor[1].every"),
            ]
        );
    }

    #[test]
    fn wrong_types_are_reported() {
        assert_error(
            "[scan]\nrate = \"fast\"\n",
            2,
            "scan.rate",
            "expected an integer, found a string",
        );
        assert_error(
            "[scan]\nwait = 1\n",
            2,
            "scan.wait",
            "expected a duration such as \"12h\", found an integer",
        );
        assert_error(
            "scan = 1\n",
            1,
            "scan",
            "expected a table ([scan]), found an integer",
        );
        assert_error(
            "[store]\npath = true\n",
            2,
            "store.path",
            "expected a string, found a boolean",
        );
        assert_error(
            "[monitor]\nname = \"a\"\nhost = \"b\"\n",
            1,
            "monitor",
            "expected an array of tables ([[monitor]], with two brackets), found a table",
        );
        assert_error(
            "[sink]\nkind = \"jsonl\"\n",
            1,
            "sink",
            "expected an array of tables ([[sink]], with two brackets), found a table",
        );
        assert_error(
            "sink = [1]\n",
            1,
            "sink[0]",
            "expected a table, found an integer",
        );
        assert_error(
            &monitor_with("confirm = 1.5"),
            4,
            "monitor[0].confirm",
            "expected an integer, found a float",
        );
        assert_error(
            &monitor_with("expected_open = 80"),
            4,
            "monitor[0].expected_open",
            "expected an array of port numbers, found an integer",
        );
        assert_error(
            "[[monitor]]\nname = 7\nhost = \"198.18.0.2\"\n",
            2,
            "monitor[0].name",
            "expected a string, found an integer",
        );
    }

    #[test]
    fn duplicate_monitor_names_point_at_the_second() {
        let text = r#"[[monitor]]
name = "web-1"
host = "198.18.0.2"

[[monitor]]
name = "web-1"
host = "198.18.0.3"
"#;
        assert_error(
            text,
            6,
            "monitor[1].name",
            "duplicate monitor name \"web-1\" (first used on line 2)",
        );
    }

    #[test]
    fn bad_ports_point_at_the_array() {
        let key = "monitor[0].expected_open";
        let range = "is out of range (allowed: 1 to 65535)";
        assert_error(
            &monitor_with("expected_open = [0]"),
            4,
            key,
            &format!("port 0 {range}"),
        );
        assert_error(
            &monitor_with("expected_open = [65536]"),
            4,
            key,
            &format!("port 65536 {range}"),
        );
        assert_error(
            &monitor_with("expected_open = [-1]"),
            4,
            key,
            &format!("port -1 {range}"),
        );
        assert_error(
            &monitor_with("expected_open = [99999999999999999999]"),
            4,
            key,
            &format!("port 99999999999999999999 {range}"),
        );
        assert_error(
            &monitor_with("expected_open = [80, 443, 80]"),
            4,
            key,
            "port 80 is listed twice",
        );
        assert_error(
            &monitor_with("expected_open = [80, \"443\"]"),
            4,
            key,
            "expected port numbers, found a string",
        );
        assert_error(
            &monitor_with("expected_open = [8.0]"),
            4,
            key,
            "expected port numbers, found a float",
        );
        // A multi-line array: still the line the array starts on.
        assert_error(
            &monitor_with("expected_open = [\n  80,\n  0,\n]"),
            4,
            key,
            "port 0 ",
        );
    }

    #[test]
    fn bad_durations_are_reported() {
        assert_error(
            &monitor_with("every = \"12 parsecs\""),
            4,
            "monitor[0].every",
            "invalid duration \"12 parsecs\"",
        );
        assert_error(
            &monitor_with("every = \"0s\""),
            4,
            "monitor[0].every",
            "\"0s\" is out of range: must be at least 1s",
        );
        assert_error(
            &monitor_with("every = \"999ms\""),
            4,
            "monitor[0].every",
            "must be at least 1s",
        );
        assert_error(
            &monitor_with("every = \"2years\""),
            4,
            "monitor[0].every",
            "must be at most 1year",
        );
        assert_error(
            &monitor_with("recheck = \"0s\""),
            4,
            "monitor[0].recheck",
            "must be at least 1ms",
        );
        assert_error(
            &monitor_with("recheck = \"never\""),
            4,
            "monitor[0].recheck",
            "invalid duration \"never\"",
        );
        assert_error(
            &monitor_with("recheck = false"),
            4,
            "monitor[0].recheck",
            "found a boolean",
        );
        assert_error(
            "[scan]\nwait = \"2h\"\n",
            2,
            "scan.wait",
            "must be at most 1h",
        );
        assert_error(
            &sink_with(
                "webhook",
                "url = \"https://h.example.com\"\ntimeout = \"0s\"",
            ),
            4,
            "sink[0].timeout",
            "must be at least 1ms",
        );
        // Zero is fine for the wait.
        assert_eq!(
            parse("t", "[scan]\nwait = \"0s\"\n").unwrap().scan.wait,
            Duration::ZERO
        );
    }

    #[test]
    fn bad_monitor_names_are_reported() {
        for name in ["web 1", "", "wéb", "a.b", &"x".repeat(65)] {
            let text = format!("[[monitor]]\nname = \"{name}\"\nhost = \"198.18.0.2\"\n");
            assert_error(
                &text,
                2,
                "monitor[0].name",
                &format!("invalid monitor name {name:?}"),
            );
        }
        let longest = "x".repeat(64);
        let text = format!("[[monitor]]\nname = \"{longest}\"\nhost = \"198.18.0.2\"\n");
        assert_eq!(parse("t", &text).unwrap().monitors[0].name, longest);
    }

    #[test]
    fn bad_hosts_are_reported() {
        let cases = [
            ("web_1.example.com", "'_' is not allowed"),
            ("-web.example.com", "a label cannot start or end with '-'"),
            ("web-.example.com", "a label cannot start or end with '-'"),
            (
                "a..example.com",
                "each dot-separated label has 1 to 63 characters",
            ),
            (
                "198.18.0.256",
                "not a valid IP address, and a host name cannot end in a numeric label",
            ),
            ("[2001:2::1]", "write IPv6 addresses without brackets"),
            ("2001:2::1%eth0", "not a valid IPv6 address"),
            ("2001:2::1::2", "not a valid IPv6 address"),
            (
                "web%1.example.com",
                "'%' is not allowed (letters, digits, '-' and '.' only)",
            ),
            ("", "a host name has 1 to 253 characters"),
        ];
        for (host, fragment) in cases {
            let text = format!("[[monitor]]\nname = \"m\"\nhost = \"{host}\"\n");
            assert_error(
                &text,
                3,
                "monitor[0].host",
                &format!("invalid host {host:?}: {fragment}"),
            );
        }
        let long_label = format!("{}.example.com", "a".repeat(64));
        let text = format!("[[monitor]]\nname = \"m\"\nhost = \"{long_label}\"\n");
        assert_error(&text, 3, "monitor[0].host", "1 to 63 characters");
    }

    #[test]
    fn good_hosts_are_accepted() {
        for host in [
            "198.18.0.2",
            "2001:2::10",
            "mail.example.com",
            "mail.example.com.",
            "localhost",
            "1st.example.com",
        ] {
            let text = format!("[[monitor]]\nname = \"m\"\nhost = \"{host}\"\n");
            assert_eq!(parse("t", &text).unwrap().monitors[0].host, host);
        }
    }

    #[test]
    fn missing_monitor_keys_point_at_the_header() {
        assert_error(
            "[[monitor]]\nname = \"a\"\n",
            1,
            "monitor[0].host",
            "missing required key `host`",
        );
        assert_error(
            "[[monitor]]\nname = \"a\"\nhost = \"b\"\n\n[[monitor]]\nhost = \"c\"\n",
            5,
            "monitor[1].name",
            "missing required key `name`",
        );
    }

    #[test]
    fn confirm_out_of_range() {
        assert_error(
            &monitor_with("confirm = 0"),
            4,
            "monitor[0].confirm",
            "0 is out of range (allowed: 1 to 10)",
        );
        assert_error(
            &monitor_with("confirm = 11"),
            4,
            "monitor[0].confirm",
            "11 is out of range (allowed: 1 to 10)",
        );
        assert_eq!(
            parse("t", &monitor_with("confirm = 10")).unwrap().monitors[0].confirm,
            10
        );
    }

    #[test]
    fn bad_sinks_are_reported() {
        assert_error(
            &sink_with("kafka", ""),
            2,
            "sink[0].kind",
            "unknown sink kind \"kafka\"; expected \"jsonl\", \"nats\" or \"webhook\"",
        );
        assert_error(
            &sink_with("jsnol", ""),
            2,
            "sink[0].kind",
            "(did you mean \"jsonl\"?)",
        );
        assert_error(
            "[[sink]]\npath = \"/x\"\n",
            1,
            "sink[0].kind",
            "missing required key `kind`",
        );
        assert_error(
            &sink_with("nats", ""),
            1,
            "sink[0].url",
            "missing required key `url`",
        );
        assert_error(
            &sink_with("webhook", ""),
            1,
            "sink[0].url",
            "missing required key `url`",
        );
        assert_error(
            &sink_with("webhook", "url = \"ftp://h.example.com\""),
            3,
            "sink[0].url",
            "invalid webhook URL",
        );
        assert_error(
            &sink_with(
                "webhook",
                "url = \"https://h.example.com\"\nmax_retries = 101",
            ),
            4,
            "sink[0].max_retries",
            "101 is out of range (allowed: 0 to 100)",
        );
        assert_error(
            &sink_with("nats", "url = []"),
            3,
            "sink[0].url",
            "give at least one NATS server URL",
        );
        assert_error(
            &sink_with("nats", "url = [\"nats://a\", 5]"),
            3,
            "sink[0].url",
            "expected a string, found an integer",
        );
        // A bad kind still has its misspelt keys reported.
        let misspelt = errors(&sink_with("kafka", "urll = \"x\""));
        let found: Vec<(usize, &str)> = misspelt.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(found, [(2, "sink[0].kind"), (3, "sink[0].urll")]);
        assert!(
            misspelt[1].message.contains("did you mean `url`?"),
            "{misspelt:#?}"
        );
        let unknown = errors(&sink_with("kafka", "colour = 1"));
        assert_eq!(
            (unknown[1].line, unknown[1].message.as_str()),
            (
                3,
                "unknown key `colour`; known keys: creds_file, format, kind, max_retries, \
                 nkey_seed_file, password, path, stream, subject_prefix, timeout, tls_ca, \
                 tls_cert, tls_key, token, url, user"
            )
        );
    }

    #[test]
    fn nats_rules_are_checked() {
        let nats =
            |lines: &str| sink_with("nats", &format!("url = \"nats://n.example.com\"\n{lines}"));
        assert_error(
            &nats("token = \"t\"\nuser = \"u\"\npassword = \"p\""),
            5,
            "sink[0].user",
            "`user` and `token` both set",
        );
        assert_error(
            &nats("user = \"u\""),
            4,
            "sink[0].user",
            "`user` needs `password`",
        );
        assert_error(
            &nats("tls_key = \"/k\""),
            4,
            "sink[0].tls_key",
            "`tls_key` needs `tls_cert`",
        );
        assert_error(
            &nats("format = \"yaml\""),
            4,
            "sink[0].format",
            "unknown format \"yaml\"",
        );
        assert_error(
            &nats("subject_prefix = \"a..b\""),
            4,
            "sink[0].subject_prefix",
            "invalid subject_prefix \"a..b\"",
        );
        assert_error(
            &nats("subject_prefix = \"a.*\""),
            4,
            "sink[0].subject_prefix",
            "invalid subject_prefix",
        );
        assert_error(
            &nats("stream = \"A.B\""),
            4,
            "sink[0].stream",
            "invalid stream \"A.B\"",
        );
        assert_error(
            &nats("creds_file = \"\""),
            4,
            "sink[0].creds_file",
            "must not be empty",
        );
    }

    #[test]
    fn bad_scan_settings_are_reported() {
        let scan = |line: &str| format!("[scan]\n{line}\n");
        assert_error(
            &scan("rate = 0"),
            2,
            "scan.rate",
            "0 is out of range (allowed: 1 to 100000000)",
        );
        assert_error(
            &scan("rate = 100_000_001"),
            2,
            "scan.rate",
            "100_000_001 is out of range",
        );
        assert_error(
            &scan("retries = 11"),
            2,
            "scan.retries",
            "11 is out of range (allowed: 0 to 10)",
        );
        assert_error(
            &scan("retries = -1"),
            2,
            "scan.retries",
            "-1 is out of range",
        );
        for ports in [
            "\"61063-61000\"",
            "\"0\"",
            "\"0-10\"",
            "\"x\"",
            "\"61000-65536\"",
            "70000",
            "0",
        ] {
            assert_error(
                &scan(&format!("source_ports = {ports}")),
                2,
                "scan.source_ports",
                &format!("invalid source ports {ports}"),
            );
        }
        assert_error(
            &scan("source_ip = [\"198.18.0.1\", \"198.18.0.2\"]"),
            2,
            "scan.source_ip",
            "198.18.0.2 is a second address of its family",
        );
        assert_error(
            &scan("source_ip = [\"web.example.com\"]"),
            2,
            "scan.source_ip",
            "invalid IP address \"web.example.com\"",
        );
        assert_error(
            &scan("gateway_mac = \"aa:bb:cc\""),
            2,
            "scan.gateway_mac",
            "invalid MAC address \"aa:bb:cc\"",
        );
        assert_error(
            &scan("interface = \"\""),
            2,
            "scan.interface",
            "invalid interface name \"\"",
        );
        assert_error(
            &scan("interface = \"a-very-long-name0\""),
            2,
            "scan.interface",
            "invalid interface name",
        );
        assert_error(
            "[store]\npath = \"\"\n",
            2,
            "store.path",
            "must not be empty",
        );
    }

    #[test]
    fn errors_display_one_per_line() {
        let errors = parse("c.toml", "[scan]\nrate = 0\n[store]\nfoo = 1\n").unwrap_err();
        assert_eq!(
            errors.to_string(),
            "c.toml:2: scan.rate: 0 is out of range (allowed: 1 to 100000000)\n\
             c.toml:4: store.foo: unknown key `foo`; known keys: path"
        );
    }

    #[test]
    fn did_you_mean_needs_a_close_match() {
        assert_eq!(edit_distance("expectd_open", "expected_open"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("intervl", MONITOR_KEYS), None);
        assert_eq!(closest("rechek", MONITOR_KEYS), Some("recheck"));
        assert_eq!(closest("x", STORE_KEYS), None);
    }
}
