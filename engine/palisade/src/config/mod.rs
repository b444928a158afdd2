//! The daemon's configuration file (TOML).
//!
//! [`parse`] checks the whole file and reports every problem it finds, not
//! just the first, each with the file, the line and the dotted key it is about
//! (`scan.rate`, `monitor[2].expected_open`; `[[sink]]` and `[[monitor]]`
//! entries are numbered from 0). `config/palisade.example.toml` documents every
//! key.
//!
//! How: the text is parsed with `toml`'s recoverable parser (syntax errors,
//! all of them), then read by serde in one pass into the section types below,
//! whose values are [`Checked`](checked::Checked): they keep their span and
//! take any TOML value, so a value of the wrong type is noted rather than
//! ending the pass, and keys that no field takes are noted too. The sections
//! are then checked (types, ranges, syntax of hosts and names, ...), each
//! problem reported at its value's line. A `[[sink]]` is first read for its
//! `kind` only, then as the section type of that kind.
//!
//! Monitor hosts: an address that can never be monitored (unspecified,
//! broadcast, multicast, loopback) is an error. [`load`] and
//! [`load_with_warnings`] also resolve host names ([`crate::resolve`]): a
//! name that resolves only to such addresses is an error, a name that does
//! not resolve now is a warning (the daemon resolves at each sweep), and
//! monitors that share an address are a warning (allowed: each evaluates the
//! same scan).
//!
//! `[cluster]` ([`ClusterSettings`]): the daemon coordinates scan agents;
//! a monitor's `agent_label` must then be one of its labels, and without
//! it is a warning (it changes nothing). A monitor written through the API
//! is checked against the daemon's labels ([`check_monitor`]).

mod checked;
mod cluster;
mod document;
mod http;
mod nats;
mod parts;
mod report;
#[cfg(test)]
mod tests;
pub mod tokens;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use palisade_core::monitor::{MonitorSpec, PortRanges, Ports};
use palisade_core::probe::TargetRecall;

use crate::resolve::{self, ResolveError};
use palisade_core::wire::MacAddr;
use palisade_dataplane::scan::{DEFAULT_RATE, DEFAULT_SOURCE_PORTS};
use palisade_outputs::sink::{NatsSinkOptions, WebhookSecret, redact_url};

use checked::{
    Checked, Found, FromToml, KeySegment, StringOrList, TomlScalar, TomlTable, keys_of,
    read_document, read_part, value_at,
};
pub use cluster::{
    AgentLabels, COORDINATOR_NAME, ClusterSettings, DEFAULT_ACK_WAIT, DEFAULT_AGENT_RATE,
    DEFAULT_MAX_DELIVER, DEFAULT_SHARD_TIME, MAX_AGENT_RATE, MAX_MAX_DELIVER,
};
use cluster::{ClusterSection, LabelCheck};
pub use document::{CheckedMonitor, FieldError, MonitorDoc, check_monitor};
pub use http::{DEFAULT_HTTP_LISTEN, HttpSettings};
use nats::{NatsConnectionKeys, NatsSinkSection};
pub use report::{ConfigError, ConfigErrors, ConfigWarning};
use report::{ConfigReport, dotted, toml_error};

/// How a NATS sink encodes events.
pub use palisade_outputs::schema::PayloadFormat;

/// Default `store.path`.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/palisade/palisade.db";
/// Default `store.retain`: 400 days, a year and a month to compare with.
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(400 * 86_400);
/// Bounds of `store.retain`: at least a day, so that a mistyped unit
/// (`"400s"`) cannot wipe the history; at most 100 years.
pub const RETAIN_MIN: Duration = Duration::from_secs(86_400);
pub const RETAIN_MAX: Duration = Duration::from_secs(100 * YEAR.as_secs());
/// Default `scan.commit_every`: a sweep is stored a minute at a time.
pub const DEFAULT_COMMIT_EVERY: Duration = Duration::from_secs(60);
/// Default `scan.per_host_rate`: probes per second to any one address.
pub const DEFAULT_PER_HOST_RATE: u64 = 20_000;
// The defaults of a monitor's keys are those of `MonitorSpec::default()`
// (`palisade_core::monitor::DEFAULT_*`).
/// Defaults of a NATS sink's `subject_prefix` and `stream`.
pub use palisade_outputs::sink::{DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT_PREFIX};
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
    /// `[http]`: the dashboard and API; `None` when absent (off).
    pub http: Option<HttpSettings>,
    /// `[cluster]`: scan agents do the scanning; `None` when absent (this
    /// daemon scans).
    pub cluster: Option<ClusterSettings>,
}

impl Config {
    /// What a monitor's `agent_label` may name: the `[cluster]` labels
    /// (with `any`), or `None` without a cluster ([`check_monitor`] takes it).
    pub fn agent_labels(&self) -> AgentLabels<'_> {
        self.cluster.as_ref().map(|c| c.labels.as_slice())
    }
}

/// `[scan]`: how the sweeps are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanSettings {
    /// `None`: the interface of the route to the targets.
    pub interface: Option<String>,
    /// Probes per second.
    pub rate: u64,
    /// Probes per second to any one address: with few hosts in a sweep,
    /// the total rate drops to this times their number.
    pub per_host_rate: u64,
    /// Extra probes for a port that did not answer.
    pub retries: u32,
    /// Adaptive retries: the share of open ports to find, for which the
    /// silent ports of answering hosts get more retries as the estimated
    /// loss needs (default 99.99%; `None`: off, or no retry to measure with).
    pub target_recall: Option<TargetRecall>,
    /// How long to wait for late replies after the last probe.
    pub wait: Duration,
    /// Inclusive source-port range.
    pub source_ports: (u16, u16),
    pub source_v4: Option<Ipv4Addr>,
    pub source_v6: Option<Ipv6Addr>,
    pub gateway_mac: Option<MacAddr>,
    /// The ports a monitor's full scan covers unless it says (`ports`):
    /// all of them by default. A deliberate narrowing: ports outside are
    /// never observed (expected ones always are).
    pub ports: PortRanges,
    /// How long one slice of a sweep lasts at most at `rate` (`commit_every`):
    /// each slice is stored before the next starts, so this bounds what a
    /// restart or a stop loses.
    pub commit_every: Duration,
}

impl Default for ScanSettings {
    fn default() -> Self {
        ScanSettings {
            interface: None,
            rate: DEFAULT_RATE,
            per_host_rate: DEFAULT_PER_HOST_RATE,
            retries: 1,
            target_recall: Some(TargetRecall::DEFAULT),
            wait: Duration::from_secs(1),
            source_ports: DEFAULT_SOURCE_PORTS,
            source_v4: None,
            source_v6: None,
            gateway_mac: None,
            ports: PortRanges::all(),
            commit_every: DEFAULT_COMMIT_EVERY,
        }
    }
}

/// `[store]`: where the state lives, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    pub path: PathBuf,
    /// How long history is kept (`retain`): scans, state changes, resolved
    /// incidents and delivered events older than this are pruned
    /// ([`crate::store::Store::prune`]).
    pub retain: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            path: PathBuf::from(DEFAULT_STORE_PATH),
            retain: DEFAULT_RETAIN,
        }
    }
}

/// One `[[sink]]`: where events go, under which name, from where.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// The delivery identity: the store keeps the sink's position and dead
    /// letters under it. `name` in the file (a token), else
    /// [`SinkTarget::default_name`] (never a secret). Renaming a sink makes
    /// a new sink.
    pub name: String,
    /// Where a sink seen for the first time starts.
    pub start: SinkStart,
    pub target: SinkTarget,
}

/// Where a sink the store has never seen starts (`start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkStart {
    /// At the current end of the outbox: only events from now on (`"new"`,
    /// the default).
    #[default]
    New,
    /// At the beginning: every event the store still holds (`"all"`).
    All,
}

/// What a `[[sink]]` delivers to.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once at start-up; a plain NatsSinkOptions is simpler to match on than a box"
)]
pub enum SinkTarget {
    /// JSON lines appended to `path`; `None`: standard output.
    Jsonl { path: Option<PathBuf> },
    /// Events published to NATS JetStream.
    Nats(NatsSinkOptions),
    /// An HTTP POST per event.
    Webhook {
        url: String,
        timeout: Duration,
        max_retries: u32,
        /// Signs every POST (Standard Webhooks), from `secret`,
        /// `secret_file` or `secret_env`.
        secret: Option<WebhookSecret>,
    },
}

impl SinkTarget {
    /// The name of a sink without `name`: `jsonl:<path>` (`jsonl:-` for
    /// standard output), `nats:<stream>`, `webhook:<url>` with any
    /// password and credential-like query value shown as `***`
    /// ([`redact_url`]): never a secret.
    pub fn default_name(&self) -> String {
        match self {
            SinkTarget::Jsonl { path } => format!(
                "jsonl:{}",
                path.as_deref()
                    .map_or("-".into(), |p| p.display().to_string())
            ),
            SinkTarget::Nats(n) => format!("nats:{}", n.stream),
            SinkTarget::Webhook { url, .. } => format!("webhook:{}", redact_url(url)),
        }
    }
}

impl SinkSpec {
    /// A sink without a `name`: named by [`SinkTarget::default_name`].
    pub fn unnamed(target: SinkTarget, start: SinkStart) -> SinkSpec {
        SinkSpec {
            name: target.default_name(),
            start,
            target,
        }
    }
}

/// A configuration that passed the checks, and what is worth a warning
/// about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// In file order.
    pub warnings: Vec<ConfigWarning>,
}

/// Looks up a host name: [`resolve::resolve_host`], or a stand-in in tests.
pub type Resolver<'r> = &'r dyn Fn(&str) -> Result<Vec<IpAddr>, ResolveError>;

/// Reads and checks the configuration file at `path`, resolving host names
/// ([`load_with_warnings`]); the warnings are logged.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let loaded = load_with_warnings(path)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Ok(loaded.config)
}

/// Reads and checks the configuration file at `path`, resolving host names
/// with the system resolver ([`check`] with [`resolve::resolve_host`]).
pub fn load_with_warnings(path: &Path) -> Result<Loaded, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let loaded = check(&file, &text, Some(&resolve::resolve_host))?;
            // The tokens file is part of the configuration: a bad one is
            // refused here, not when the server starts.
            if let Some(tokens) = loaded.config.http.as_ref().and_then(|h| h.tokens.as_ref())
                && let Err(e) = tokens::Tokens::load(tokens)
            {
                let line = text
                    .lines()
                    .position(|l| l.trim_start().starts_with("tokens"))
                    .map_or(0, |i| i + 1);
                return Err(ConfigErrors(vec![ConfigError {
                    file,
                    line,
                    key: "http.tokens".to_owned(),
                    message: e.to_string(),
                }]));
            }
            Ok(loaded)
        }
        Err(err) => Err(ConfigErrors(vec![ConfigError {
            file,
            line: 0,
            key: "(file)".to_owned(),
            message: format!("cannot read the configuration file: {err}"),
        }])),
    }
}

/// Checks the configuration in `text` without resolving host names (no
/// I/O); warnings are dropped. `file` only names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    check(file, text, None).map(|loaded| loaded.config)
}

/// Checks the configuration in `text`; `file` only names it in errors.
/// With `resolve`, each monitor host that is a name is looked up: a name
/// whose addresses can never be monitored is an error, one that does not
/// resolve now a warning, and so is an address that two monitors share.
pub fn check(
    file: &str,
    text: &str,
    resolve: Option<Resolver<'_>>,
) -> Result<Loaded, ConfigErrors> {
    check_with(file, text, resolve, LabelSource::File)
}

/// Where the labels a monitor's `agent_label` may name come from.
#[derive(Debug, Clone, Copy)]
enum LabelSource<'a> {
    /// The file's own `[cluster]`.
    File,
    /// The caller's: a monitor written through the API is checked against
    /// the daemon's `[cluster]`.
    Given(AgentLabels<'a>),
}

/// [`check`], the labels of `agent_label` taken from `labels`.
fn check_with(
    file: &str,
    text: &str,
    resolve: Option<Resolver<'_>>,
    labels: LabelSource<'_>,
) -> Result<Loaded, ConfigErrors> {
    match parts::split(text, parts::MONITORS_PER_PART) {
        Some(split) => check_in_parts(file, text, &split.rest, &split.parts, resolve, labels),
        None => check_in_parts(file, text, text, &[], resolve, labels),
    }
}

/// Checks the file `text`: `rest` (the file with the monitors of `parts`
/// blanked out, or cut off) as one document, then each part of monitors
/// as a document of its own ([`parts`]): never the tree of the whole file
/// in memory, whatever its number of monitors.
fn check_in_parts(
    file: &str,
    text: &str,
    rest: &str,
    parts: &[parts::Part],
    resolve: Option<Resolver<'_>>,
    labels: LabelSource<'_>,
) -> Result<Loaded, ConfigErrors> {
    let (root, syntax_errors) = DeTable::parse_recoverable(rest);
    if !syntax_errors.is_empty() {
        let mut errors: Vec<ConfigError> = syntax_errors
            .iter()
            .map(|err| toml_error(file, text, err))
            .collect();
        errors.sort_by_key(|err| err.line);
        return Err(ConfigErrors(errors));
    }
    let root = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
    let (document, ignored) = read_document::<ConfigDocument>(&root)
        .map_err(|err| ConfigErrors(vec![toml_error(file, text, &err)]))?;
    if document.monitor.is_some() && !parts.is_empty() {
        // `monitor` written both ways (an error TOML itself reports): the
        // whole file at once.
        return check_in_parts(file, text, text, &[], resolve, labels);
    }
    let mut report = ConfigReport::new(file, text, ignored);
    let config = document.check(&mut report, &root, text, parts, resolve, labels);
    let (config, warnings) = report.finish(config)?;
    Ok(Loaded { config, warnings })
}

/// A part of the file's `[[monitor]]` tables, read on its own.
#[derive(Debug, Deserialize)]
struct MonitorsDocument {
    monitor: Option<Checked<Vec<Checked<MonitorSection>>>>,
}

/// Checks the monitors of `part` of `text`, the first of them the
/// `base`-th of the file, into `checked`.
#[allow(clippy::too_many_arguments)]
fn check_part(
    report: &mut ConfigReport<'_>,
    text: &str,
    part: &parts::Part,
    base: usize,
    names: &mut HashMap<String, usize>,
    context: &MonitorContext<'_>,
    checked: &mut Vec<(MonitorSpec, HostAddresses)>,
) {
    let offset = part.range.start;
    let (root, syntax_errors) = DeTable::parse_recoverable(&text[part.range.clone()]);
    if !syntax_errors.is_empty() {
        for err in &syntax_errors {
            report.syntax_error(err, offset);
        }
        return;
    }
    let root = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
    let (document, ignored) = match read_document::<MonitorsDocument>(&root) {
        Ok(read) => read,
        Err(err) => {
            report.syntax_error(&err, offset);
            return;
        }
    };
    // The part numbers its monitors from 0, the file from `base`.
    let ignored = ignored
        .into_iter()
        .map(|mut key| {
            let numbered = key.table.strip_prefix("monitor[").and_then(|t| {
                let (index, tail) = t.split_once(']')?;
                Some((index.parse::<usize>().ok()?, tail))
            });
            if let Some((index, tail)) = numbered {
                key.table = format!("monitor[{}]{tail}", base + index);
            }
            key
        })
        .collect();
    report.enter_part(offset, ignored);
    for (index, span, monitor) in array_of_tables(report, document.monitor, "monitor", base) {
        let table = format!("monitor[{index}]");
        if let Some((spec, mut host)) = monitor.check(report, &table, &span, names, context) {
            host.span = report.in_file(&host.span);
            checked.push((spec, host));
        }
    }
    report.enter_part(0, Vec::new());
}

/// Bounds of the durations.
const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
/// A year as humantime counts it (365.25 days), so that it prints as `1year`.
const YEAR: Duration = Duration::from_secs(31_557_600);

/// The document: its top-level keys.
#[derive(Debug, Deserialize)]
struct ConfigDocument {
    scan: Option<Checked<ScanSection>>,
    store: Option<Checked<StoreSection>>,
    sink: Option<Checked<Vec<Checked<SinkEntry>>>>,
    monitor: Option<Checked<Vec<Checked<MonitorSection>>>>,
    http: Option<Checked<http::HttpSection>>,
    cluster: Option<Checked<ClusterSection>>,
}

impl ConfigDocument {
    /// `root` is the document this was read from (sinks are read again,
    /// by kind); `resolve` looks up host names, if given.
    /// `text` is the whole file, `parts` its parts of monitors read on
    /// their own (none: the document has every monitor).
    fn check(
        self,
        report: &mut ConfigReport<'_>,
        root: &Spanned<DeValue<'_>>,
        text: &str,
        parts: &[parts::Part],
        resolve: Option<Resolver<'_>>,
        labels: LabelSource<'_>,
    ) -> Config {
        report.unknown_keys("", keys_of::<Self>());
        let scan = self
            .scan
            .and_then(|scan| report.value(scan, "scan", "a table ([scan])"))
            .map_or_else(ScanSettings::default, |scan| scan.check(report));
        let store = self
            .store
            .and_then(|store| report.value(store, "store", "a table ([store])"))
            .map_or_else(StoreSettings::default, |store| store.check(report));
        let http = self
            .http
            .and_then(|http| report.value(http, "http", "a table ([http])"))
            .and_then(|http| http.check(report));
        let sinks = array_of_tables(report, self.sink, "sink", 0)
            .into_iter()
            .filter_map(|(index, span, entry)| {
                let sink = entry.check(report, root, index, &span)?;
                Some((index, span, sink))
            })
            .collect();
        let sinks = distinct_sink_names(report, sinks);
        // Before the monitors, whose `agent_label` names its labels.
        let given = self.cluster.is_some();
        let cluster = self.cluster.and_then(|cluster| {
            let span = cluster.span.clone();
            let section = report.value(cluster, "cluster", "a table ([cluster])")?;
            report.unknown_keys("cluster", &cluster::cluster_keys());
            let path = [KeySegment::Key("cluster".to_owned())];
            let connection = value_at(root, &path).map(read_part::<NatsConnectionKeys>);
            match connection {
                Some(Ok(connection)) => section.check(connection, report, &span),
                // The document pass read these values already, so this
                // cannot fail where it did not; reported all the same.
                Some(Err(err)) => {
                    report.error(&span, "cluster", err.message());
                    None
                }
                None => None,
            }
        });
        let context = MonitorContext {
            default_ports: &scan.ports,
            resolve,
            labels: match labels {
                LabelSource::Given(labels) => labels.into(),
                LabelSource::File => match &cluster {
                    Some(cluster) => LabelCheck::Cluster(&cluster.labels),
                    None if !given => LabelCheck::NoCluster,
                    // `[cluster]` is there but has errors: they are
                    // reported, its labels are not known.
                    None => LabelCheck::Unknown,
                },
            },
        };
        let mut names = HashMap::new();
        let mut checked: Vec<(MonitorSpec, HostAddresses)> =
            array_of_tables(report, self.monitor, "monitor", 0)
                .into_iter()
                .filter_map(|(index, span, monitor)| {
                    let table = format!("monitor[{index}]");
                    monitor.check(report, &table, &span, &mut names, &context)
                })
                .collect();
        let mut base = 0;
        for part in parts {
            check_part(report, text, part, base, &mut names, &context, &mut checked);
            base += part.monitors;
        }
        shared_addresses(report, &checked);
        let monitors = checked.into_iter().map(|(spec, _)| spec).collect();
        Config {
            scan,
            store,
            sinks,
            monitors,
            http,
            cluster,
        }
    }
}

/// The tables of a `[[name]]` array, each with its index (from `base`) and
/// span.
fn array_of_tables<T>(
    report: &mut ConfigReport<'_>,
    value: Option<Checked<Vec<Checked<T>>>>,
    name: &str,
    base: usize,
) -> Vec<(usize, Range<usize>, T)> {
    let expected = format!("an array of tables ([[{name}]], with two brackets)");
    let tables = value
        .and_then(|value| report.value(value, name, &expected))
        .unwrap_or_default();
    let mut checked = Vec::new();
    for (index, table) in tables.into_iter().enumerate() {
        let index = base + index;
        let span = table.span.clone();
        if let Some(table) = report.value(table, &format!("{name}[{index}]"), "a table") {
            checked.push((index, span, table));
        }
    }
    checked
}

/// `[scan]`.
#[derive(Debug, Deserialize)]
struct ScanSection {
    interface: Option<Checked<String>>,
    rate: Option<Checked<i128>>,
    per_host_rate: Option<Checked<i128>>,
    retries: Option<Checked<i128>>,
    target_recall: Option<Checked<RecallValue>>,
    wait: Option<Checked<String>>,
    source_ports: Option<Checked<SourcePortsValue>>,
    source_ip: Option<Checked<StringOrList>>,
    gateway_mac: Option<Checked<String>>,
    ports: Option<Checked<PortList>>,
    commit_every: Option<Checked<String>>,
}

impl TomlTable for ScanSection {}

impl ScanSection {
    fn check(self, report: &mut ConfigReport<'_>) -> ScanSettings {
        report.unknown_keys("scan", keys_of::<Self>());
        let key = |name: &str| dotted("scan", name);
        let defaults = ScanSettings::default();
        let interface = self
            .interface
            .and_then(|value| interface(report, value, &key("interface")));
        let rate = self
            .rate
            .and_then(|value| report.integer(value, &key("rate"), 1..=100_000_000u64));
        let per_host_rate = self
            .per_host_rate
            .and_then(|value| report.integer(value, &key("per_host_rate"), 1..=100_000_000u64));
        let retries = self
            .retries
            .and_then(|value| report.integer(value, &key("retries"), 0..=10u32));
        let retries = retries.unwrap_or(defaults.retries);
        let target_recall = match self.target_recall {
            // The default needs a retry to measure the loss with.
            None => defaults.target_recall.filter(|_| retries > 0),
            Some(value) => target_recall(report, value, &key("target_recall"), retries),
        };
        let wait = self
            .wait
            .and_then(|value| report.duration(value, &key("wait"), Duration::ZERO..=HOUR));
        let commit_every = self
            .commit_every
            .and_then(|value| report.duration(value, &key("commit_every"), SECOND..=HOUR))
            .unwrap_or(defaults.commit_every);
        let source_ports = self
            .source_ports
            .and_then(|value| source_ports(report, value, &key("source_ports")));
        let (source_v4, source_v6) = self.source_ip.map_or((None, None), |value| {
            source_ips(report, value, &key("source_ip"))
        });
        let gateway_mac = self
            .gateway_mac
            .and_then(|value| gateway_mac(report, value, &key("gateway_mac")));
        let ports = self
            .ports
            .and_then(|value| port_list(report, value, &key("ports")))
            .map_or(defaults.ports, |ports| ports.ranges());
        ScanSettings {
            ports,
            commit_every,
            interface,
            rate: rate.unwrap_or(defaults.rate),
            per_host_rate: per_host_rate.unwrap_or(defaults.per_host_rate),
            retries,
            target_recall,
            wait: wait.unwrap_or(defaults.wait),
            source_ports: source_ports.unwrap_or(defaults.source_ports),
            source_v4,
            source_v6,
            gateway_mac,
        }
    }
}

/// `source_ports` as written: a port, or a string with a port or a range.
#[derive(Debug)]
enum SourcePortsValue {
    Text(String),
    Port(i128),
}

impl FromToml for SourcePortsValue {
    fn from_scalar(scalar: TomlScalar) -> Result<Self, Found> {
        match scalar {
            TomlScalar::String(text) => Ok(SourcePortsValue::Text(text)),
            TomlScalar::Integer(port) => Ok(SourcePortsValue::Port(port)),
            other => Err(other.kind()),
        }
    }
}

/// `target_recall` as written: a percentage (number or string), or `"off"`.
#[derive(Debug)]
enum RecallValue {
    Text(String),
    Number(f64),
}

impl FromToml for RecallValue {
    fn from_scalar(scalar: TomlScalar) -> Result<Self, Found> {
        match scalar {
            TomlScalar::String(text) => Ok(RecallValue::Text(text)),
            TomlScalar::Float(x) => Ok(RecallValue::Number(x)),
            TomlScalar::Integer(n) => Ok(RecallValue::Number(n as f64)),
            other => Err(other.kind()),
        }
    }
}

/// A percentage strictly between 0 and 100 (`99.99`, `"99.99%"`), or
/// `"off"`; with `retries = 0` only `"off"` (the first retry measures the
/// loss).
fn target_recall(
    report: &mut ConfigReport<'_>,
    value: Checked<RecallValue>,
    key: &str,
    retries: u32,
) -> Option<TargetRecall> {
    let span = value.span.clone();
    let recall = match report.value(value, key, "a percentage such as 99.99, or \"off\"")? {
        RecallValue::Text(text) if text == "off" => return None,
        RecallValue::Text(text) => text.parse::<TargetRecall>(),
        RecallValue::Number(x) => TargetRecall::from_percent(x),
    };
    let recall = match recall {
        Ok(recall) => recall,
        Err(_) => {
            let message = format!(
                "{} is not a target recall: give a percentage above 0 and below 100, such as 99.99, or \"off\"",
                report.written(&span)
            );
            report.error(&span, key, message);
            return None;
        }
    };
    if retries == 0 {
        let message = "adaptive retries need scan.retries >= 1 (the first retry measures the loss): raise retries or set target_recall = \"off\"";
        report.error(&span, key, message);
        return None;
    }
    Some(recall)
}

fn interface(report: &mut ConfigReport<'_>, value: Checked<String>, key: &str) -> Option<String> {
    let span = value.span.clone();
    let interface = report.string(value, key)?;
    // Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
    let valid = (1..=15).contains(&interface.len())
        && !interface
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !valid {
        let message = format!(
            "invalid interface name {interface:?} (1 to 15 characters, no '/', ':' or spaces)"
        );
        report.error(&span, key, message);
        return None;
    }
    Some(interface)
}

fn source_ports(
    report: &mut ConfigReport<'_>,
    value: Checked<SourcePortsValue>,
    key: &str,
) -> Option<(u16, u16)> {
    let span = value.span.clone();
    let ports = match report.value(value, key, "a port or a range such as \"61000-61063\"")? {
        SourcePortsValue::Text(text) => parse_port_range(&text),
        SourcePortsValue::Port(port) => u16::try_from(port)
            .ok()
            .filter(|&port| port != 0)
            .map(|port| (port, port)),
    };
    if ports.is_none() {
        let message = format!(
            "invalid source ports {}: give a port (61000) or a range (61000-61063) within 1-65535",
            report.written(&span)
        );
        report.error(&span, key, message);
    }
    ports
}

/// `"61000"` or `"61000-61063"`, within 1-65535.
fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let lo: u16 = lo.trim().parse().ok()?;
    let hi: u16 = hi.trim().parse().ok()?;
    (lo != 0 && lo <= hi).then_some((lo, hi))
}

/// At most one address of each family.
fn source_ips(
    report: &mut ConfigReport<'_>,
    value: Checked<StringOrList>,
    key: &str,
) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let (mut v4, mut v6) = (None, None);
    let span = value.span.clone();
    let items = match report.value(value, key, "a string or an array of strings") {
        Some(StringOrList::One(text)) => vec![Checked {
            span,
            value: Ok(text),
        }],
        Some(StringOrList::List(items)) => items,
        None => Vec::new(),
    };
    for item in items {
        let span = item.span.clone();
        let Some(text) = report.string(item, key) else {
            continue;
        };
        let repeated = match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => v4.replace(ip).is_some(),
            Ok(IpAddr::V6(ip)) => v6.replace(ip).is_some(),
            Err(_) => {
                report.error(&span, key, format!("invalid IP address {text:?}"));
                continue;
            }
        };
        if repeated {
            let message = format!(
                "{text} is a second address of its family: give at most one IPv4 and one IPv6"
            );
            report.error(&span, key, message);
        }
    }
    (v4, v6)
}

fn gateway_mac(
    report: &mut ConfigReport<'_>,
    value: Checked<String>,
    key: &str,
) -> Option<MacAddr> {
    let span = value.span.clone();
    let text = report.string(value, key)?;
    match text.parse() {
        Ok(mac) => Some(mac),
        Err(err) => {
            report.error(&span, key, format!("{err}"));
            None
        }
    }
}

/// `[store]`.
#[derive(Debug, Deserialize)]
struct StoreSection {
    path: Option<Checked<String>>,
    retain: Option<Checked<String>>,
}

impl TomlTable for StoreSection {}

impl StoreSection {
    fn check(self, report: &mut ConfigReport<'_>) -> StoreSettings {
        report.unknown_keys("store", keys_of::<Self>());
        let defaults = StoreSettings::default();
        let path = self
            .path
            .and_then(|value| report.nonempty(value, "store.path"))
            .map_or(defaults.path, PathBuf::from);
        let retain = self
            .retain
            .and_then(|value| report.duration(value, "store.retain", RETAIN_MIN..=RETAIN_MAX))
            .unwrap_or(defaults.retain);
        StoreSettings { path, retain }
    }
}

/// A `[[sink]]` as the document pass reads it: its kind only. Its other
/// keys are noted as not taken; the section type of its kind takes them.
#[derive(Debug, Deserialize)]
struct SinkEntry {
    kind: Option<Checked<String>>,
}

impl TomlTable for SinkEntry {}

/// The kinds of sink.
const SINK_KINDS: &[&str] = &["jsonl", "nats", "webhook"];

/// The keys of a sink of `kind` (one of [`SINK_KINDS`]), `kind` first.
fn sink_keys(kind: &str) -> Vec<&'static str> {
    let sections: &[&[&'static str]] = match kind {
        "jsonl" => &[keys_of::<JsonlSinkSection>()],
        "nats" => &[
            keys_of::<NatsSinkSection>(),
            keys_of::<NatsConnectionKeys>(),
        ],
        _ => &[keys_of::<WebhookSinkSection>()],
    };
    [&["kind"][..]]
        .iter()
        .chain(sections)
        .flat_map(|keys| keys.iter().copied())
        .collect()
}

impl SinkEntry {
    /// The sink at `sink[index]` of `root`, read as its kind's section and
    /// checked; `None` if it is not usable.
    fn check(
        self,
        report: &mut ConfigReport<'_>,
        root: &Spanned<DeValue<'_>>,
        index: usize,
        span: &Range<usize>,
    ) -> Option<SinkSpec> {
        let table = format!("sink[{index}]");
        let kind = report
            .required(self.kind, span, &table, "kind")
            .and_then(|kind| sink_kind(report, kind, &dotted(&table, "kind")));
        let Some(kind) = kind else {
            // Kind unknown: still catch keys no kind has.
            let mut all: Vec<&str> = SINK_KINDS.iter().flat_map(|kind| sink_keys(kind)).collect();
            all.sort_unstable();
            all.dedup();
            report.unknown_keys(&table, &all);
            return None;
        };
        report.unknown_keys(&table, &sink_keys(kind));
        let path = [KeySegment::Key("sink".to_owned()), KeySegment::Index(index)];
        let part = value_at(root, &path)?;
        let read = match kind {
            "jsonl" => read_part(part).map(|jsonl: JsonlSinkSection| {
                let identity = SinkIdentity {
                    name: jsonl.name,
                    start: jsonl.start,
                };
                jsonl
                    .path
                    .map(|value| report.nonempty(value, &dotted(&table, "path")))
                    .map_or(Some(None), |path| path.map(Some))
                    .map(|path| SinkTarget::Jsonl {
                        path: path.map(PathBuf::from),
                    })
                    .and_then(|target| identity.check(report, &table, target))
            }),
            "nats" => read_part(part).and_then(|mut nats: NatsSinkSection| {
                let connection: NatsConnectionKeys = read_part(part)?;
                let identity = SinkIdentity {
                    name: nats.name.take(),
                    start: nats.start.take(),
                };
                Ok(nats
                    .check(connection, report, &table, span)
                    .and_then(|n| identity.check(report, &table, SinkTarget::Nats(n))))
            }),
            _ => read_part(part)
                .map(|webhook: WebhookSinkSection| webhook.check(report, &table, span)),
        };
        read.unwrap_or_else(|err| {
            // The document pass read these values already, so this cannot
            // fail where it did not; reported all the same.
            report.error(span, &table, err.message());
            None
        })
    }
}

/// The keys every kind of sink has: `name` and `start`.
#[derive(Debug, Default)]
struct SinkIdentity {
    name: Option<Checked<String>>,
    start: Option<Checked<String>>,
}

/// A sink name: 1 to 64 of A-Z, a-z, 0-9, '_', '-' and '.'.
fn valid_sink_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl SinkIdentity {
    /// The sink: `target` under its `name` (or its default name), starting
    /// as `start` says.
    fn check(
        self,
        report: &mut ConfigReport<'_>,
        table: &str,
        target: SinkTarget,
    ) -> Option<SinkSpec> {
        let key = |name: &str| dotted(table, name);
        let start = match self.start {
            None => Some(SinkStart::default()),
            Some(value) => {
                let span = value.span.clone();
                match report.string(value, &key("start")).as_deref() {
                    Some("new") => Some(SinkStart::New),
                    Some("all") => Some(SinkStart::All),
                    Some(other) => {
                        let message =
                            format!("unknown start {other:?}; expected \"new\" or \"all\"");
                        report.error(&span, &key("start"), message);
                        None
                    }
                    None => None,
                }
            }
        };
        let name = match self.name {
            None => Some(target.default_name()),
            Some(value) => {
                let span = value.span.clone();
                let name = report.string(value, &key("name"))?;
                if valid_sink_name(&name) {
                    Some(name)
                } else {
                    let message = format!(
                        "invalid sink name {name:?}: 1 to 64 of A-Z, a-z, 0-9, '_', '-' and '.'"
                    );
                    report.error(&span, &key("name"), message);
                    None
                }
            }
        };
        Some(SinkSpec {
            name: name?,
            start: start?,
            target,
        })
    }
}

/// Refuses a sink whose name an earlier sink has: each name is one
/// delivery identity. `sinks` are the checked ones with their spans.
fn distinct_sink_names(
    report: &mut ConfigReport<'_>,
    sinks: Vec<(usize, Range<usize>, SinkSpec)>,
) -> Vec<SinkSpec> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(sinks.len());
    for (index, span, sink) in sinks {
        if let Some(first) = seen.get(&sink.name) {
            let message = format!(
                "sink name {:?} is already that of sink[{first}]: give each sink its own `name`",
                sink.name
            );
            report.error(&span, &dotted(&format!("sink[{index}]"), "name"), message);
            continue;
        }
        seen.insert(sink.name.clone(), index);
        out.push(sink);
    }
    out
}

fn sink_kind(
    report: &mut ConfigReport<'_>,
    value: Checked<String>,
    key: &str,
) -> Option<&'static str> {
    let span = value.span.clone();
    let kind = report.string(value, key)?;
    if let Some(known) = SINK_KINDS.iter().copied().find(|&known| known == kind) {
        return Some(known);
    }
    let mut message =
        format!("unknown sink kind {kind:?}; expected \"jsonl\", \"nats\" or \"webhook\"");
    if let Some(guess) = report::closest(&kind, SINK_KINDS) {
        message.push_str(&format!(" (did you mean {guess:?}?)"));
    }
    report.error(&span, key, message);
    None
}

/// A `[[sink]]` of kind `"jsonl"` (besides `kind`).
#[derive(Debug, Deserialize)]
struct JsonlSinkSection {
    name: Option<Checked<String>>,
    start: Option<Checked<String>>,
    path: Option<Checked<String>>,
}

/// A `[[sink]]` of kind `"webhook"` (besides `kind`).
#[derive(Debug, Deserialize)]
struct WebhookSinkSection {
    name: Option<Checked<String>>,
    start: Option<Checked<String>>,
    url: Option<Checked<String>>,
    timeout: Option<Checked<String>>,
    max_retries: Option<Checked<i128>>,
    secret: Option<Checked<String>>,
    secret_file: Option<Checked<String>>,
    secret_env: Option<Checked<String>>,
}

impl WebhookSinkSection {
    fn check(
        self,
        report: &mut ConfigReport<'_>,
        table: &str,
        table_span: &Range<usize>,
    ) -> Option<SinkSpec> {
        let key = |name: &str| dotted(table, name);
        let timeout = self
            .timeout
            .and_then(|value| report.duration(value, &key("timeout"), MILLISECOND..=HOUR));
        let max_retries = self
            .max_retries
            .and_then(|value| report.integer(value, &key("max_retries"), 0..=100u32));
        let secret = webhook_secret(
            report,
            table,
            [
                ("secret", self.secret),
                ("secret_file", self.secret_file),
                ("secret_env", self.secret_env),
            ],
        );
        let value = report.required(self.url, table_span, table, "url")?;
        let span = value.span.clone();
        let url = report.string(value, &key("url"))?;
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|rest| rest.is_empty() || rest.contains(char::is_whitespace)) {
            // Shown redacted: the URL may hold a token.
            let message = format!(
                "invalid webhook URL {:?}: give an http:// or https:// URL",
                redact_url(&url)
            );
            report.error(&span, &key("url"), message);
            return None;
        }
        let target = SinkTarget::Webhook {
            url,
            timeout: timeout.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT),
            max_retries: max_retries.unwrap_or(DEFAULT_WEBHOOK_MAX_RETRIES),
            secret: secret?,
        };
        let identity = SinkIdentity {
            name: self.name,
            start: self.start,
        };
        identity.check(report, table, target)
    }
}

/// The webhook signing secret: at most one of `secret` (the value),
/// `secret_file` (a file holding it) and `secret_env` (the environment
/// variable holding it); `Some(None)` when none is given, `None` after an
/// error. No message shows the secret.
fn webhook_secret(
    report: &mut ConfigReport<'_>,
    table: &str,
    sources: [(&str, Option<Checked<String>>); 3],
) -> Option<Option<WebhookSecret>> {
    let mut given = sources
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)));
    let Some((name, value)) = given.next() else {
        return Some(None);
    };
    if let Some((second, other)) = given.next() {
        let message = format!("`{name}` and `{second}` both set: give the webhook secret one way");
        report.error(&other.span, &dotted(table, second), message);
        return None;
    }
    let key = dotted(table, name);
    let span = value.span.clone();
    let text = report.nonempty(value, &key)?;
    let secret = match name {
        "secret" => Ok(text),
        "secret_file" => std::fs::read_to_string(&text)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("cannot read the webhook secret from {text}: {e}")),
        _ => std::env::var(&text)
            .map(|s| s.trim().to_owned())
            .map_err(|_| {
                format!("the environment variable {text} (the webhook secret) is not set")
            }),
    };
    match secret.and_then(|s| WebhookSecret::parse(&s)) {
        Ok(secret) => Some(Some(secret)),
        Err(message) => {
            report.error(&span, &key, message);
            None
        }
    }
}

/// A `[[monitor]]`.
#[derive(Debug, Deserialize)]
struct MonitorSection {
    name: Option<Checked<String>>,
    host: Option<Checked<String>>,
    expected_open: Option<Checked<PortList>>,
    every: Option<Checked<String>>,
    confirm: Option<Checked<i128>>,
    recheck: Option<Checked<String>>,
    ping: Option<Checked<bool>>,
    answer_all_threshold: Option<Checked<i128>>,
    max_port_events: Option<Checked<i128>>,
    ports: Option<Checked<PortList>>,
    agent_label: Option<Checked<String>>,
}

/// What checking a monitor needs besides its table.
struct MonitorContext<'a> {
    /// `scan.ports`: what a monitor without `ports` scans.
    default_ports: &'a PortRanges,
    /// Looks up a host name, if given.
    resolve: Option<Resolver<'a>>,
    /// What `agent_label` may name ([`cluster::agent_label`]).
    labels: LabelCheck<'a>,
}

/// Where a monitor's host is written, and the addresses it stands for:
/// the address of a literal, those a name resolved to (none if it was not
/// resolved).
struct HostAddresses {
    span: Range<usize>,
    key: String,
    addresses: Vec<IpAddr>,
}

impl TomlTable for MonitorSection {}

impl MonitorSection {
    /// `table` is its dotted key (`monitor[2]`), `table_span` where it
    /// starts; `names` maps each monitor name seen so far to its line.
    fn check(
        self,
        report: &mut ConfigReport<'_>,
        table: &str,
        table_span: &Range<usize>,
        names: &mut HashMap<String, usize>,
        context: &MonitorContext<'_>,
    ) -> Option<(MonitorSpec, HostAddresses)> {
        let MonitorContext {
            default_ports,
            resolve,
            labels,
        } = *context;
        report.unknown_keys(table, keys_of::<Self>());
        let key = |name: &str| dotted(table, name);
        let name = report
            .required(self.name, table_span, table, "name")
            .and_then(|value| monitor_name(report, value, &key("name"), names));
        let host = report
            .required(self.host, table_span, table, "host")
            .and_then(|value| host(report, value, &key("host"), resolve));
        let expected_open = self.expected_open.map_or_else(BTreeSet::new, |value| {
            expected_open(report, value, &key("expected_open"))
        });
        let every = self
            .every
            .and_then(|value| report.duration(value, &key("every"), SECOND..=YEAR));
        let confirm = self
            .confirm
            .and_then(|value| report.integer(value, &key("confirm"), 1..=10u32));
        let defaults = MonitorSpec::default();
        let recheck_ms = match self.recheck {
            None => defaults.recheck_ms,
            Some(value) if value.value.as_deref() == Ok("off") => None,
            Some(value) => report
                .duration(value, &key("recheck"), MILLISECOND..=YEAR)
                .map(millis),
        };
        let ping = self
            .ping
            .and_then(|value| report.value(value, &key("ping"), "a boolean (true or false)"));
        let answer_all_threshold = self
            .answer_all_threshold
            .and_then(|value| report.integer(value, &key("answer_all_threshold"), 1..=65_535u32));
        let max_port_events = self
            .max_port_events
            .and_then(|value| report.integer(value, &key("max_port_events"), 1..=65_535u32));
        let agent_label = match self.agent_label {
            None => Some(None),
            Some(value) => cluster::agent_label(report, value, &key("agent_label"), labels),
        };
        let scan_ports = match self.ports {
            None => default_ports.clone(),
            Some(value) => port_list(report, value, &key("ports"))?.ranges(),
        };
        let (host, addresses) = host?;
        let spec = MonitorSpec {
            name: name?,
            host,
            expected_open,
            every_ms: every.map_or(defaults.every_ms, millis),
            confirm: confirm.unwrap_or(defaults.confirm),
            recheck_ms,
            ping: ping.unwrap_or(defaults.ping),
            answer_all_threshold: answer_all_threshold.unwrap_or(defaults.answer_all_threshold),
            max_port_events: max_port_events.unwrap_or(defaults.max_port_events),
            scan_ports,
            agent_label: agent_label?,
        };
        Some((spec, addresses))
    }
}

/// 1 to 64 of A-Z, a-z, 0-9, '_' and '-'; not used by an earlier monitor.
fn monitor_name(
    report: &mut ConfigReport<'_>,
    value: Checked<String>,
    key: &str,
    names: &mut HashMap<String, usize>,
) -> Option<String> {
    let span = value.span.clone();
    let name = report.string(value, key)?;
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if name.is_empty() || name.len() > 64 || !valid_chars {
        let message =
            format!("invalid monitor name {name:?}: 1 to 64 of A-Z, a-z, 0-9, '_' and '-'");
        report.error(&span, key, message);
        return None;
    }
    if let Some(first) = names.get(&name) {
        let message = format!("duplicate monitor name {name:?} (first used on line {first})");
        report.error(&span, key, message);
        return None;
    }
    names.insert(name.clone(), report.line(&span));
    Some(name)
}

/// A host in valid syntax that can be monitored, and its addresses: a
/// literal's own; a name's if `resolve` is given and found them.
fn host(
    report: &mut ConfigReport<'_>,
    value: Checked<String>,
    key: &str,
    resolve: Option<Resolver<'_>>,
) -> Option<(String, HostAddresses)> {
    let span = value.span.clone();
    let host = report.string(value, key)?;
    if let Err(problem) = check_host(&host) {
        report.error(&span, key, format!("invalid host {host:?}: {problem}"));
        return None;
    }
    let resolved = match (host.parse::<IpAddr>(), resolve) {
        (Ok(ip), _) => resolve::literal(&host, ip),
        (Err(_), Some(resolve)) => resolve(&host),
        (Err(_), None) => Ok(Vec::new()),
    };
    let addresses = match resolved {
        Ok(addresses) => addresses,
        Err(err) if err.is_unmonitorable() => {
            report.error(&span, key, err.to_string());
            return None;
        }
        Err(err) => {
            let message = format!("{err} (the daemon tries again at each sweep)");
            report.warn(&span, key, message);
            Vec::new()
        }
    };
    let addresses = HostAddresses {
        span,
        key: key.to_owned(),
        addresses,
    };
    Some((host, addresses))
}

/// Warns about each address that more than one monitor holds (allowed: two
/// teams may watch one server), at the host of the last of them; addresses
/// held by the same monitors are named together.
fn shared_addresses(report: &mut ConfigReport<'_>, monitors: &[(MonitorSpec, HostAddresses)]) {
    let mut holders: BTreeMap<IpAddr, BTreeSet<usize>> = BTreeMap::new();
    for (index, (_, host)) in monitors.iter().enumerate() {
        for &ip in &host.addresses {
            holders.entry(ip).or_default().insert(index);
        }
    }
    let mut shared: BTreeMap<Vec<usize>, Vec<IpAddr>> = BTreeMap::new();
    for (ip, indices) in holders {
        if indices.len() > 1 {
            shared
                .entry(indices.into_iter().collect())
                .or_default()
                .push(ip);
        }
    }
    for (indices, addresses) in shared {
        let names: Vec<&str> = indices
            .iter()
            .map(|&index| monitors[index].0.name.as_str())
            .collect();
        let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        let (all, it) = match (names.len(), addresses.len()) {
            (2, 1) => ("both", "it is"),
            (2, _) => ("both", "each is"),
            (_, 1) => ("all", "it is"),
            (_, _) => ("all", "each is"),
        };
        let message = format!(
            "monitors {} {all} scan {}: {it} scanned once per sweep and {all} evaluate the same \
             result",
            and_list(&names),
            and_list(&addresses),
        );
        let Some(&last) = indices.last() else {
            continue;
        };
        let host = &monitors[last].1;
        report.warn(&host.span, &host.key, message);
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_owned(),
        [init @ .., last] => {
            let init: Vec<&str> = init.iter().map(AsRef::as_ref).collect();
            format!("{} and {}", init.join(", "), last.as_ref())
        }
    }
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

/// `expected_open`: an array of ports and ranges (`[22, 80, "8000-8100"]`),
/// or one string of them (`"22,80,8000-8100"`, as the settings page takes it).
#[derive(Debug)]
enum PortList {
    One(String),
    List(Vec<Checked<PortItem>>),
}

impl FromToml for PortList {
    fn from_scalar(scalar: TomlScalar) -> Result<Self, Found> {
        String::from_scalar(scalar).map(PortList::One)
    }

    fn from_seq<'de, A: serde::de::SeqAccess<'de>>(
        seq: A,
    ) -> Result<Result<Self, Found>, A::Error> {
        Ok(Vec::from_seq(seq)?.map(PortList::List))
    }
}

/// One element of an `expected_open` array: a port, or a range as a string.
#[derive(Debug)]
enum PortItem {
    Number(i128),
    Text(String),
}

impl FromToml for PortItem {
    fn from_scalar(scalar: TomlScalar) -> Result<Self, Found> {
        match scalar {
            TomlScalar::Integer(n) => Ok(PortItem::Number(n)),
            TomlScalar::String(text) => Ok(PortItem::Text(text)),
            other => Err(other.kind()),
        }
    }
}

/// The ports of `expected_open`.
fn expected_open(
    report: &mut ConfigReport<'_>,
    value: Checked<PortList>,
    key: &str,
) -> BTreeSet<u16> {
    port_list(report, value, key)
        .map(|ports| ports.iter().collect())
        .unwrap_or_default()
}

/// A port list (`expected_open`, `ports`), as compact ranges (a range of
/// 65,535 ports costs what one port does); every error points at the
/// value (the report shows the first few and counts the rest); `None` if
/// there was any.
fn port_list(report: &mut ConfigReport<'_>, value: Checked<PortList>, key: &str) -> Option<Ports> {
    let span = value.span.clone();
    let list = report.value(
        value,
        key,
        "an array of port numbers and ranges, or a string such as \"22,80,8000-8100\"",
    )?;
    let mut ports = Ports::new();
    let mut problems = Vec::new();
    let mut add = |item: Result<(i128, i128), String>, problems: &mut Vec<String>| match item {
        Err(problem) => problems.push(problem),
        Ok((first, last)) => {
            for port in [first, last] {
                if !(1..=65_535).contains(&port) {
                    problems.push(format!("port {port} is out of range (allowed: 1 to 65535)"));
                    return;
                }
            }
            if first > last {
                problems.push(format!(
                    "range {first}-{last} is backwards (write {last}-{first})"
                ));
                return;
            }
            let range = Ports::range(first as u16, last as u16);
            if let Some(twice) = ports.first_shared(&range) {
                problems.push(format!("port {twice} is listed twice"));
                return;
            }
            ports.extend_with(&range);
        }
    };
    match list {
        PortList::One(text) => {
            for token in text.split(',').map(str::trim) {
                add(port_or_range(token), &mut problems);
            }
        }
        PortList::List(items) => {
            for item in items {
                let parsed = match item.value {
                    // Out of range: as written (TOML reads integers beyond
                    // i128 as i128::MAX).
                    Ok(PortItem::Number(port)) if !(1..=65_535).contains(&port) => Err(format!(
                        "port {} is out of range (allowed: 1 to 65535)",
                        report.written(&item.span).trim()
                    )),
                    Ok(PortItem::Number(port)) => Ok((port, port)),
                    Ok(PortItem::Text(text)) => port_or_range(text.trim()),
                    Err(found) => Err(format!(
                        "expected port numbers or ranges such as \"8000-8100\", found {found}"
                    )),
                };
                add(parsed, &mut problems);
            }
        }
    }
    let none = problems.is_empty();
    for problem in problems {
        report.error(&span, key, problem);
    }
    none.then_some(ports)
}

/// `"22"` or `"8000-8100"`, the numbers not yet range-checked.
fn port_or_range(token: &str) -> Result<(i128, i128), String> {
    let number = |text: &str| text.trim().parse::<i128>().ok();
    let parsed = match token.split_once('-') {
        // A leading '-' is a negative number, not a range.
        Some((first, last)) if !first.trim().is_empty() => number(first).zip(number(last)),
        _ => number(token).map(|port| (port, port)),
    };
    parsed.ok_or_else(|| {
        if token.is_empty() {
            "an empty entry (two commas in a row, or one at an end)".to_owned()
        } else {
            format!("{token:?} is not a port or a range (write e.g. 22 or 8000-8100)")
        }
    })
}

/// Whole milliseconds; the durations are bounded well below `u64::MAX` ms.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
