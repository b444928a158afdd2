//! `[cluster]`: scan agents fed by a NATS JetStream work queue
//! (docs/CLUSTER.md). The daemon is their coordinator: it connects with the
//! keys of a NATS connection ([`NatsConnectionKeys`], those of a NATS sink,
//! checked by the same rules), plans each slice into shards of
//! `shard_time` at `agent_rate`, and creates a jobs consumer per label
//! (`labels`, and always [`ANY_LABEL`]). Absent: no cluster, the daemon
//! scans itself.
//!
//! A monitor's `agent_label` is checked against the labels here
//! ([`agent_label`]), for the file and for a monitor written through the API
//! alike.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;

use palisade_core::cluster::{ANY_LABEL, valid_label};
use palisade_outputs::nats::NatsOptions;

use super::checked::{Checked, TomlTable, keys_of};
use super::nats::NatsConnectionKeys;
use super::report::{ConfigReport, dotted};
use super::{HOUR, SECOND};

/// The name the coordinator's NATS connection shows.
pub const COORDINATOR_NAME: &str = "palisade-coordinator";
/// Default `cluster.agent_rate`: probes per second one agent sends for a job.
pub const DEFAULT_AGENT_RATE: u64 = 100_000;
/// The most `cluster.agent_rate` takes (as `scan.rate`).
pub const MAX_AGENT_RATE: u64 = 100_000_000;
/// Default `cluster.shard_time`: the longest a shard takes at `agent_rate`.
pub const DEFAULT_SHARD_TIME: Duration = Duration::from_secs(30);
/// Default `cluster.ack_wait`: the jobs consumers' AckWait.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(60);
/// Default `cluster.max_deliver`: deliveries of a job before its shard
/// counts failed.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// The most `cluster.max_deliver` takes.
pub const MAX_MAX_DELIVER: u32 = 100;

/// `[cluster]`: the daemon coordinates scan agents.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// Where and how the coordinator connects (named [`COORDINATOR_NAME`]).
    pub nats: NatsOptions,
    /// Probes per second one agent sends for a job; sizes the shards.
    pub agent_rate: u64,
    /// The longest a shard takes at `agent_rate`.
    pub shard_time: Duration,
    /// The jobs consumers' AckWait; never below `shard_time`.
    pub ack_wait: Duration,
    /// Deliveries of a job before its shard counts failed.
    pub max_deliver: u32,
    /// The labels whose jobs consumers the coordinator creates: sorted,
    /// deduplicated, always holding [`ANY_LABEL`].
    pub labels: Vec<String>,
}

impl ClusterSettings {
    /// `[cluster]` with `nats` and every other key at its default.
    pub fn new(nats: NatsOptions) -> ClusterSettings {
        ClusterSettings {
            nats: NatsOptions {
                name: COORDINATOR_NAME.to_owned(),
                ..nats
            },
            agent_rate: DEFAULT_AGENT_RATE,
            shard_time: DEFAULT_SHARD_TIME,
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: DEFAULT_MAX_DELIVER,
            labels: vec![ANY_LABEL.to_owned()],
        }
    }
}

/// `[cluster]` as written, less the connection's keys (read on their own
/// as [`NatsConnectionKeys`]).
#[derive(Debug, Deserialize)]
pub(super) struct ClusterSection {
    agent_rate: Option<Checked<i128>>,
    shard_time: Option<Checked<String>>,
    ack_wait: Option<Checked<String>>,
    max_deliver: Option<Checked<i128>>,
    labels: Option<Checked<Vec<Checked<String>>>>,
}

impl TomlTable for ClusterSection {}

/// Every key `[cluster]` takes.
pub(super) fn cluster_keys() -> Vec<&'static str> {
    [keys_of::<NatsConnectionKeys>(), keys_of::<ClusterSection>()].concat()
}

impl ClusterSection {
    /// The settings; `None` after any error. `connection` is the same
    /// table read as a NATS connection; `span` where the table starts. Its
    /// unknown keys are the caller's to report ([`cluster_keys`]).
    pub(super) fn check(
        self,
        connection: NatsConnectionKeys,
        report: &mut ConfigReport<'_>,
        span: &Range<usize>,
    ) -> Option<ClusterSettings> {
        let key = |name: &str| dotted("cluster", name);
        let nats = connection.check(report, "cluster", span);
        let agent_rate = self
            .agent_rate
            .map(|value| report.integer(value, &key("agent_rate"), 1..=MAX_AGENT_RATE))
            .unwrap_or(Some(DEFAULT_AGENT_RATE));
        let shard_time = self.shard_time.map(|value| {
            let span = value.span.clone();
            let time = report.duration(value, &key("shard_time"), SECOND..=HOUR);
            (time, Some(span))
        });
        let ack_wait = self.ack_wait.map(|value| {
            let span = value.span.clone();
            let time = report.duration(value, &key("ack_wait"), SECOND..=HOUR);
            (time, Some(span))
        });
        let (shard_time, shard_span) = shard_time.unwrap_or((Some(DEFAULT_SHARD_TIME), None));
        let (ack_wait, ack_span) = ack_wait.unwrap_or((Some(DEFAULT_ACK_WAIT), None));
        let max_deliver = self
            .max_deliver
            .map(|value| report.integer(value, &key("max_deliver"), 1..=MAX_MAX_DELIVER))
            .unwrap_or(Some(DEFAULT_MAX_DELIVER));
        let labels = match self.labels {
            None => Some(vec![ANY_LABEL.to_owned()]),
            Some(value) => labels(report, value, &key("labels")),
        };
        let (shard_time, ack_wait) = (shard_time?, ack_wait?);
        if ack_wait < shard_time {
            let (shard, ack) = (
                humantime::format_duration(shard_time),
                humantime::format_duration(ack_wait),
            );
            // At `ack_wait` if it is written; else `shard_time` is (the
            // defaults are in order).
            match (ack_span, shard_span) {
                (Some(at), _) => {
                    let message = format!(
                        "{ack} is below shard_time ({shard}): a job would be delivered again \
                         before an agent could finish it; make ack_wait at least shard_time"
                    );
                    report.error(&at, &key("ack_wait"), message);
                }
                (None, at) => {
                    let message = format!(
                        "{shard} is above ack_wait ({ack}, the default): a job would be \
                         delivered again before an agent could finish it; set ack_wait to at \
                         least {shard}"
                    );
                    report.error(at.as_ref().unwrap_or(span), &key("shard_time"), message);
                }
            }
            return None;
        }
        Some(ClusterSettings {
            agent_rate: agent_rate?,
            shard_time,
            ack_wait,
            max_deliver: max_deliver?,
            labels: labels?,
            ..ClusterSettings::new(nats?)
        })
    }
}

/// `labels`: an array of [`valid_label`]s, each error at its own line;
/// sorted and deduplicated, with [`ANY_LABEL`] added.
fn labels(
    report: &mut ConfigReport<'_>,
    value: Checked<Vec<Checked<String>>>,
    key: &str,
) -> Option<Vec<String>> {
    let items = report.value(value, key, "an array of labels such as [\"site=fra1\"]")?;
    let mut labels = vec![ANY_LABEL.to_owned()];
    let mut valid = true;
    for item in items {
        let span = item.span.clone();
        let Some(label) = report.string(item, key) else {
            valid = false;
            continue;
        };
        if valid_label(&label) {
            labels.push(label);
        } else {
            report.error(&span, key, invalid_label(&label));
            valid = false;
        }
    }
    labels.sort_unstable();
    labels.dedup();
    valid.then_some(labels)
}

/// The message of a label that is not a [`valid_label`].
fn invalid_label(label: &str) -> String {
    format!(
        "invalid label {label:?}: 1 to 64 of A-Z, a-z, 0-9, '_', '-' and '=' (one NATS subject \
         token, such as \"site=fra1\")"
    )
}

/// What a monitor's `agent_label` is checked against: the labels of
/// `[cluster]` ([`ClusterSettings::labels`]), or `None` without a cluster.
pub type AgentLabels<'a> = Option<&'a [String]>;

/// How a monitor's `agent_label` is checked.
#[derive(Debug, Clone, Copy)]
pub(super) enum LabelCheck<'a> {
    /// It must be one of the `[cluster]` labels.
    Cluster(&'a [String]),
    /// No `[cluster]`: a warning (it changes nothing).
    NoCluster,
    /// `[cluster]` has errors (reported): its syntax only.
    Unknown,
}

impl<'a> From<AgentLabels<'a>> for LabelCheck<'a> {
    fn from(labels: AgentLabels<'a>) -> Self {
        labels.map_or(LabelCheck::NoCluster, LabelCheck::Cluster)
    }
}

/// A monitor's `agent_label`: a [`valid_label`]; with a cluster, one of its
/// `labels` (an error at the key otherwise); without, a warning that it
/// changes nothing. [`ANY_LABEL`] is no pin: `Some(None)`. `None` after an
/// error.
pub(super) fn agent_label(
    report: &mut ConfigReport<'_>,
    value: Checked<String>,
    key: &str,
    labels: LabelCheck<'_>,
) -> Option<Option<String>> {
    let span = value.span.clone();
    let label = report.string(value, key)?;
    if !valid_label(&label) {
        report.error(&span, key, invalid_label(&label));
        return None;
    }
    match labels {
        LabelCheck::Cluster(labels) if !labels.contains(&label) => {
            let message = format!(
                "{label:?} is not a label of [cluster] (labels: {}): no agent would take its \
                 jobs; add it to `cluster.labels` or pick one of those",
                labels.join(", ")
            );
            report.error(&span, key, message);
            return None;
        }
        LabelCheck::Cluster(_) | LabelCheck::Unknown => {}
        LabelCheck::NoCluster => {
            let message = "there is no [cluster] (scan agents): this daemon scans the monitor \
                           itself and agent_label changes nothing";
            report.warn(&span, key, message);
        }
    }
    Some((label != ANY_LABEL).then_some(label))
}
