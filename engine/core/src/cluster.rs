//! Scan agents fed by a work queue: the coordinator's and the agents'
//! decisions as pure functions (issue 14, `docs/CLUSTER.md`).
//!
//! With `[cluster]` configured, the coordinator (`palisade run`) does not
//! probe a slice itself: it describes the slice once ([`SliceSpec`]: its
//! addresses, ports, ICMP echo targets, the closed ports each address keeps
//! and the permutation seed), cuts the slice's keyed permutation into shards
//! sized to a bounded scan time at the agents' rate ([`shard_count`],
//! [`plan_jobs`]: shard `i` of `n` is [`Shard`] `i/n` of the slice's
//! [`Sweep`], so every (address, port) pair is in exactly one shard and every
//! shard spreads its probes over the whole slice), and publishes one [`Job`]
//! per shard. An agent scans its shard, files the replies
//! ([`ShardCollector`]) and answers with a [`ShardResult`]. The coordinator
//! merges the results into the slice's [`SweepReplies`] exactly once per job
//! ([`SweepLedger`]): a second result for a job (a redelivered shard scanned
//! twice, a result published twice) is ignored, a shard that failed past the
//! queue's `MaxDeliver` makes the slice inconclusive, never its ports closed.
//!
//! No I/O: the shells (the agent command, the coordinator's NATS client)
//! encode these types (serde, JSON), move them and call these functions.
//! Every message carries [`CLUSTER_VERSION`]; [`check_version`] refuses
//! another.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::monitor::{Millis, PortRanges, Ports};
use crate::plan::{SweepEnd, SweepReplies, SweepTargets};
use crate::probe::cookie::siphash13_words;
use crate::probe::{
    CookieKey, LossCounts, PortSet, RetryOutcome, Shard, SpecError, Sweep, TargetSet,
};

/// The version of every cluster message ([`SliceSpec`], [`Job`],
/// [`ShardResult`]). A reader refuses another version ([`check_version`]):
/// agents and coordinator are upgraded together, and a message of a newer
/// build is never half understood.
pub const CLUSTER_VERSION: u32 = 1;

/// What is wrong with a cluster message or a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster message version {found}, this build reads version {supported} only")]
    Version { found: u32, supported: u32 },
    #[error("bad agent label {0:?}: 1 to 64 characters of A-Z a-z 0-9 _ - =")]
    Label(String),
    #[error("shard {index} of {count} does not exist")]
    Shard { index: u64, count: u64 },
    #[error("an agent rate of 0 probes per second")]
    Rate,
    #[error("the slice has nothing to probe: {0}")]
    Spec(#[from] SpecError),
    #[error("slice description: {0}")]
    Slice(String),
}

/// Refuses a message of another version than [`CLUSTER_VERSION`].
pub fn check_version(found: u32) -> Result<(), ClusterError> {
    if found == CLUSTER_VERSION {
        Ok(())
    } else {
        Err(ClusterError::Version {
            found,
            supported: CLUSTER_VERSION,
        })
    }
}

/// Whether `label` can be an agent label: one NATS subject token of
/// `A-Z a-z 0-9 _ - =` (e.g. `site=fra1`), at most 64 characters.
pub fn valid_label(label: &str) -> bool {
    (1..=64).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'='))
}

/// The label of jobs that any agent may take (monitors without
/// `agent_label`).
pub const ANY_LABEL: &str = "any";

/// The subjects of the jobs: `{JOBS_SUBJECT}.{label}.{sweep}.{slice}`. A
/// root of their own, apart from the events' `palisade.>` (the default
/// subjects of the NATS sink's stream), so that both live in one account:
/// JetStream refuses two streams whose subjects overlap.
pub const JOBS_SUBJECT: &str = "palisade-cluster.jobs";
/// The subjects of the results: `{RESULTS_SUBJECT}.{sweep}.{slice}`.
pub const RESULTS_SUBJECT: &str = "palisade-cluster.results";

/// One shard of one slice of one sweep. Written `{sweep}.{slice}.{shard}`,
/// as in message ids and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId {
    /// The sweep (its start, unix ms: the sweep's id in the store).
    pub sweep: Millis,
    /// The slice's index within the sweep, from 0.
    pub slice: u32,
    /// The shard's index within the slice, from 0.
    pub shard: u64,
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.sweep, self.slice, self.shard)
    }
}

/// The closed ports one address keeps (the monitor state machine tracks
/// them); every other closed reply is dropped where it arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptPorts {
    pub address: IpAddr,
    pub ports: PortRanges,
}

/// What a slice probes, described once for all its shards: published by
/// the coordinator (to the object store bucket `PALISADE_SLICES`, under
/// [`SliceSpec::object_name`]) and read by every agent that takes one of
/// its jobs. Every agent builds the same [`Sweep`] of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceSpec {
    pub version: u32,
    pub sweep: Millis,
    pub slice: u32,
    /// The permutation's seed (the slice's start, as a single host seeds it).
    pub seed: u64,
    /// The addresses, as inclusive ranges: IPv4 first, each family
    /// ascending (the order of the sweep's host index).
    pub targets: Vec<(IpAddr, IpAddr)>,
    pub ports: PortRanges,
    /// The addresses to send ICMP echo to, ascending.
    pub ping: Vec<IpAddr>,
    /// The addresses that keep some closed ports, ascending; an address not
    /// listed keeps none.
    pub keep: Vec<KeptPorts>,
}

impl SliceSpec {
    /// The description of `targets`, slice `slice` of sweep `sweep`, seeded
    /// by `seed`, keeping the closed ports each address keeps
    /// ([`SweepTargets::kept`]).
    pub fn new(sweep: Millis, slice: u32, seed: u64, targets: &SweepTargets) -> SliceSpec {
        let set = &targets.targets;
        let v4 = set.v4.ranges().iter().map(|&(lo, hi)| {
            (
                IpAddr::V4(Ipv4Addr::from(lo as u32)),
                IpAddr::V4(Ipv4Addr::from(hi as u32)),
            )
        });
        let v6 = set.v6.ranges().iter().map(|&(lo, hi)| {
            (
                IpAddr::V6(Ipv6Addr::from(lo)),
                IpAddr::V6(Ipv6Addr::from(hi)),
            )
        });
        let ranges: Vec<(IpAddr, IpAddr)> = v4.chain(v6).collect();
        let mut keep = Vec::new();
        for address in ranges.iter().flat_map(|&(lo, hi)| addresses(lo, hi)) {
            let ports: PortRanges = targets
                .kept(address)
                .iter()
                .copied()
                .filter(|&p| p != 0)
                .collect();
            if !ports.is_empty() {
                keep.push(KeptPorts { address, ports });
            }
        }
        SliceSpec {
            version: CLUSTER_VERSION,
            sweep,
            slice,
            seed,
            targets: ranges,
            ports: targets.ports().as_slice().iter().copied().collect(),
            ping: targets.ping.clone(),
            keep,
        }
    }

    /// The name of the slice's object in `PALISADE_SLICES`.
    pub fn object_name(&self) -> String {
        format!("{}.{}", self.sweep, self.slice)
    }

    /// The addresses, as the data path takes them (a range that
    /// [`SliceSpec::check`] refuses is left out).
    pub fn target_set(&self) -> TargetSet {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for &(lo, hi) in &self.targets {
            match (lo, hi) {
                (IpAddr::V4(lo), IpAddr::V4(hi)) if lo <= hi => {
                    v4.push((u32::from(lo).into(), u32::from(hi).into()))
                }
                (IpAddr::V6(lo), IpAddr::V6(hi)) if lo <= hi => v6.push((lo.into(), hi.into())),
                _ => {}
            }
        }
        TargetSet {
            v4: v4.into_iter().collect(),
            v6: v6.into_iter().collect(),
        }
    }

    /// Refuses a description of another version, or with a range across
    /// families or reversed; `job` must be one of its slice's.
    pub fn check(&self, job: &Job) -> Result<(), ClusterError> {
        check_version(self.version)?;
        let bad = self.targets.iter().find(|&&(lo, hi)| match (lo, hi) {
            (IpAddr::V4(lo), IpAddr::V4(hi)) => lo > hi,
            (IpAddr::V6(lo), IpAddr::V6(hi)) => lo > hi,
            _ => true,
        });
        if let Some(&(lo, hi)) = bad {
            return Err(ClusterError::Slice(format!("bad address range {lo}-{hi}")));
        }
        if (job.id.sweep, job.id.slice) != (self.sweep, self.slice) {
            return Err(ClusterError::Slice(format!(
                "job {} is not of slice {}",
                job.id,
                self.object_name()
            )));
        }
        Ok(())
    }

    /// The ports, as the data path takes them.
    pub fn port_set(&self) -> PortSet {
        PortSet::from_ports(self.ports.ports())
    }

    /// The slice's index space, the same on every agent.
    pub fn sweep(&self) -> Result<Sweep, SpecError> {
        Sweep::new(&self.target_set(), &self.port_set(), self.seed)
    }

    /// The addresses shard `shard` sends ICMP echo to: every `count`-th of
    /// [`SliceSpec::ping`] from its index, so each is pinged by one shard.
    pub fn ping_of(&self, shard: Shard) -> Vec<IpAddr> {
        let (Ok(from), Ok(step)) = (usize::try_from(shard.index), usize::try_from(shard.count))
        else {
            return Vec::new();
        };
        self.ping
            .iter()
            .copied()
            .skip(from)
            .step_by(step.max(1))
            .collect()
    }
}

/// The addresses `lo..=hi` of one family.
fn addresses(lo: IpAddr, hi: IpAddr) -> Box<dyn Iterator<Item = IpAddr>> {
    match (lo, hi) {
        (IpAddr::V4(lo), IpAddr::V4(hi)) => {
            Box::new((u32::from(lo)..=u32::from(hi)).map(|a| IpAddr::V4(a.into())))
        }
        (IpAddr::V6(lo), IpAddr::V6(hi)) => {
            Box::new((u128::from(lo)..=u128::from(hi)).map(|a| IpAddr::V6(a.into())))
        }
        _ => Box::new(std::iter::empty()),
    }
}

/// A job's cookie key: derived by the coordinator from the slice's key
/// (drawn from a CSPRNG per slice, never sent) and the job's id, so that a
/// reply validates only for the job whose probe it answers, and an agent
/// learns nothing of another job's key. Never printed; serialized as 32 hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct JobKey([u8; 16]);

impl JobKey {
    /// The key of job `id` under the slice's key.
    pub fn derive(slice_key: &CookieKey, id: JobId) -> JobKey {
        // A domain word, then the id: no other use of the slice key hashes
        // these words.
        const DOMAIN: u64 = u64::from_le_bytes(*b"pal-job\0");
        let words = |half: u64| {
            siphash13_words(
                slice_key,
                &[DOMAIN, id.sweep as u64, u64::from(id.slice), id.shard, half],
            )
        };
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&words(0).to_le_bytes());
        bytes[8..].copy_from_slice(&words(1).to_le_bytes());
        JobKey(bytes)
    }

    /// The key the agent's data path signs and validates with.
    pub fn cookie_key(&self) -> CookieKey {
        CookieKey::from_bytes(self.0)
    }

    /// The key's bytes, as the data path's `ScanConfig::cookie_key` takes
    /// them.
    pub fn to_bytes(&self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Debug for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobKey(..)")
    }
}

impl Serialize for JobKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }
}

impl<'de> Deserialize<'de> for JobKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JobKey, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("a job key is 32 hex digits");
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(JobKey(bytes))
    }
}

/// One shard to scan: what the coordinator publishes to
/// `palisade-cluster.jobs.{label}.{sweep}.{slice}` ([`JOBS_SUBJECT`];
/// message id [`Job::msg_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub version: u32,
    pub id: JobId,
    /// How many shards the slice is cut into (the job scans
    /// [`Shard`] `id.shard / shards`).
    pub shards: u64,
    /// The probes of this shard (first pass, retries not counted).
    pub probes: u64,
    /// Which agents may take it ([`ANY_LABEL`]: any).
    pub label: String,
    /// The most probes per second the agent may send for it.
    pub rate: u64,
    /// The most probes per second one host may receive from this job
    /// (the agent caps its rate with `probe::capped_rate`).
    pub per_host_rate: Option<u64>,
    /// The slice's description: its object in `PALISADE_SLICES`.
    pub slice_object: String,
    pub key: JobKey,
}

impl Job {
    /// The part of the slice's sweep this job probes.
    pub fn shard(&self) -> Shard {
        Shard {
            index: self.id.shard,
            count: self.shards,
        }
    }

    /// Refuses a job of another version, with a bad label, or a shard that
    /// does not exist.
    pub fn check(&self) -> Result<(), ClusterError> {
        check_version(self.version)?;
        if !valid_label(&self.label) {
            return Err(ClusterError::Label(self.label.clone()));
        }
        if self.id.shard >= self.shards {
            return Err(ClusterError::Shard {
                index: self.id.shard,
                count: self.shards,
            });
        }
        if self.rate == 0 {
            return Err(ClusterError::Rate);
        }
        Ok(())
    }

    /// The subject it is published to.
    pub fn subject(&self) -> String {
        format!(
            "{JOBS_SUBJECT}.{}.{}.{}",
            self.label, self.id.sweep, self.id.slice
        )
    }

    /// How long its first probes take at its rate, capped as the agent caps
    /// it for a slice of `hosts` addresses (`probe::capped_rate`), in ms:
    /// longer than `shard_time` when the per-host cap binds.
    pub fn scan_ms(&self, hosts: u64) -> u64 {
        let rate = crate::probe::capped_rate(self.rate, self.per_host_rate, hosts);
        let ms = u128::from(self.probes) * 1000 / u128::from(rate.max(1));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Its `Nats-Msg-Id`: a job published twice (a publish retried after
    /// a lost acknowledgement) is stored once.
    pub fn msg_id(&self) -> String {
        format!("job.{}", self.id)
    }
}

/// How many shards a slice of `probes` probes is cut into so that one
/// takes at most `max_shard_ms` at `rate` probes per second: at least one,
/// never more than the probes. A rate of 0 is refused by [`plan_jobs`]; here
/// it counts as 1.
pub fn shard_count(probes: u64, rate: u64, max_shard_ms: u64) -> u64 {
    let budget = shard_budget(rate, max_shard_ms);
    probes.div_ceil(budget).clamp(1, probes.max(1))
}

/// The most probes one shard holds: `rate` x `max_shard_ms`, at least one.
pub fn shard_budget(rate: u64, max_shard_ms: u64) -> u64 {
    (u128::from(rate.max(1)) * u128::from(max_shard_ms) / 1000).clamp(1, u128::from(u64::MAX))
        as u64
}

/// How a coordinator cuts its slices into jobs (from `[cluster]` and
/// `[scan]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobParams {
    /// Which agents may take the jobs ([`ANY_LABEL`]: any).
    pub label: String,
    /// The probes per second one agent sends for a job.
    pub rate: u64,
    /// `[scan] per_host_rate`: what one host may receive from all the
    /// slice's shards together.
    pub per_host_rate: Option<u64>,
    /// The longest a shard may take at `rate`.
    pub max_shard_ms: u64,
}

/// The jobs of slice `spec`: one per shard ([`shard_count`]), each at most
/// `rate` x `max_shard_ms` probes, keyed from `slice_key`. The shards of a
/// slice may all run at once, each spread over all the slice's hosts, so
/// each gets an equal part of the per-host cap (at least 1 per second).
/// Deterministic: the same arguments give the same jobs.
pub fn plan_jobs(
    spec: &SliceSpec,
    params: &JobParams,
    slice_key: &CookieKey,
) -> Result<Vec<Job>, ClusterError> {
    check_version(spec.version)?;
    let JobParams {
        label,
        rate,
        per_host_rate,
        max_shard_ms,
    } = params;
    if !valid_label(label) {
        return Err(ClusterError::Label(label.clone()));
    }
    if *rate == 0 {
        return Err(ClusterError::Rate);
    }
    let sweep = spec.sweep()?;
    let shards = shard_count(sweep.len(), *rate, *max_shard_ms);
    let per_host_rate = per_host_rate.map(|p| (p / shards).max(1));
    Ok((0..shards)
        .map(|shard| {
            let id = JobId {
                sweep: spec.sweep,
                slice: spec.slice,
                shard,
            };
            Job {
                version: CLUSTER_VERSION,
                id,
                shards,
                probes: sweep.shard_len(Shard {
                    index: shard,
                    count: shards,
                }),
                label: label.clone(),
                rate: *rate,
                per_host_rate,
                slice_object: spec.object_name(),
                key: JobKey::derive(slice_key, id),
            }
        })
        .collect())
}

/// The waits that bound a slice in the queue (from `[cluster]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTimes {
    /// The longest a shard takes at the agents' rate (`shard_time`).
    pub max_shard_ms: u64,
    /// The consumer's `AckWait`: how long a delivered job may go without an
    /// acknowledgement (agents send in-progress ones while scanning).
    pub ack_wait_ms: u64,
    /// The consumer's `MaxDeliver`.
    pub max_deliver: u64,
}

/// When the coordinator stops waiting for the jobs of a slice published at
/// `published` and fails those still pending ([`SweepLedger::fail`]): no
/// agent took them (all gone), or the `MaxDeliver` advisory of their last
/// delivery was lost. The slice's `jobs` queue up behind `agents` live
/// agents (at least one counted), each taking up to twice `max_shard_ms`
/// (retries and the wait for late replies ride along); a job may then be
/// delivered `max_deliver` times, each attempt ending by its `AckWait` at
/// worst after its scan time.
pub fn slice_deadline(published: Millis, jobs: u64, agents: u64, times: QueueTimes) -> Millis {
    let shard = u128::from(times.max_shard_ms) * 2;
    let queued = u128::from(jobs.div_ceil(agents.max(1))).saturating_mul(shard);
    let attempts =
        u128::from(times.max_deliver.max(1)).saturating_mul(u128::from(times.ack_wait_ms) + shard);
    let wait = Millis::try_from(queued.saturating_add(attempts)).unwrap_or(Millis::MAX);
    published.saturating_add(wait)
}

/// How an agent's scan of a shard ended (the agent's side of [`SweepEnd`]:
/// an agent stopped mid-shard does not answer; its job is redelivered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum ShardEnd {
    /// Every probe went out and the wait for late replies passed.
    Completed,
    /// The reply path lost this many replies.
    RepliesLost { lost: u64 },
    /// The scanner failed.
    Failed { why: String },
}

/// What one address of a shard answered (only answering addresses are
/// listed: every one of them is reachable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressResult {
    pub address: IpAddr,
    pub open: PortRanges,
    /// Closed ports among those the address keeps.
    pub closed: PortRanges,
}

/// What an agent sends back for one shard, to `palisade-cluster.results.{sweep}.{slice}`
/// (message id [`ShardResult::msg_id`]); it acknowledges the job only once
/// the results stream acknowledged this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardResult {
    pub version: u32,
    pub job: JobId,
    /// The delivery of the job this answers (JetStream's delivery count,
    /// from 1).
    pub attempt: u64,
    /// The agent's name.
    pub agent: String,
    #[serde(flatten)]
    pub end: ShardEnd,
    /// The probes sent, retries included.
    pub sent: u64,
    /// The scanner's loss estimate and retry rounds, if it measured them.
    pub retries: Option<RetryOutcome>,
    /// The answering addresses, ascending.
    pub addresses: Vec<AddressResult>,
}

impl ShardResult {
    /// Its `Nats-Msg-Id`: the same attempt published twice is stored once;
    /// two attempts of a job are two messages, merged once by the ledger.
    pub fn msg_id(&self) -> String {
        format!("result.{}.{}", self.job, self.attempt)
    }

    /// The subject it is published to.
    pub fn subject(&self) -> String {
        format!("{RESULTS_SUBJECT}.{}.{}", self.job.sweep, self.job.slice)
    }
}

/// What an agent says of itself, every few seconds: its key in the KV
/// bucket `PALISADE_AGENTS` is its name, put with a per-message TTL, so an
/// agent that stops saying it is gone from the bucket (`palisade status`
/// and the coordinator read it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentBeat {
    pub version: u32,
    /// Its name (a NATS subject token, as a label is).
    pub name: String,
    /// The labels whose jobs it takes.
    pub labels: Vec<String>,
    /// The most probes per second it sends.
    pub rate: u64,
    /// When it started (unix ms).
    pub started: Millis,
    /// Results it published and saw acknowledged.
    pub jobs_done: u64,
    /// The job it is scanning, if any.
    pub job: Option<JobId>,
}

impl AgentBeat {
    /// Refuses a beat of another version or with a bad name or label.
    pub fn check(&self) -> Result<(), ClusterError> {
        check_version(self.version)?;
        for label in std::iter::once(&self.name).chain(&self.labels) {
            if !valid_label(label) {
                return Err(ClusterError::Label(label.clone()));
            }
        }
        Ok(())
    }
}

/// An agent's collector of one shard's replies, filed as a single host
/// files them: any reply makes its address reachable, open ports are kept,
/// closed ones only where the slice keeps them, replies from addresses the
/// slice does not probe are ignored.
#[derive(Debug, Clone)]
pub struct ShardCollector {
    targets: TargetSet,
    keep: BTreeMap<IpAddr, PortRanges>,
    found: BTreeMap<IpAddr, (Ports, Ports)>,
}

impl ShardCollector {
    /// An empty collector for a shard of `spec`.
    pub fn new(spec: &SliceSpec) -> ShardCollector {
        ShardCollector {
            targets: spec.target_set(),
            keep: spec
                .keep
                .iter()
                .map(|k| (k.address, k.ports.clone()))
                .collect(),
            found: BTreeMap::new(),
        }
    }

    /// Records a TCP reply: open (SYN-ACK) or closed (RST).
    pub fn record(&mut self, address: IpAddr, port: u16, open: bool) {
        if !self.targets.contains(address) {
            return;
        }
        let keeps = open || self.keep.get(&address).is_some_and(|k| k.contains(port));
        let (o, c) = self.found.entry(address).or_default();
        if open {
            o.insert(port);
        } else if keeps {
            c.insert(port);
        }
    }

    /// Records an ICMP echo reply.
    pub fn record_echo(&mut self, address: IpAddr) {
        if self.targets.contains(address) {
            self.found.entry(address).or_default();
        }
    }

    /// The result of attempt `attempt` of `job` by `agent`.
    pub fn finish(
        self,
        job: &Job,
        attempt: u64,
        agent: &str,
        end: ShardEnd,
        sent: u64,
        retries: Option<RetryOutcome>,
    ) -> ShardResult {
        ShardResult {
            version: CLUSTER_VERSION,
            job: job.id,
            attempt,
            agent: agent.into(),
            end,
            sent,
            retries,
            addresses: self
                .found
                .into_iter()
                .map(|(address, (open, closed))| AddressResult {
                    address,
                    open: open.ranges(),
                    closed: closed.ranges(),
                })
                .collect(),
        }
    }
}

/// Where one job of a slice stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Published, no result yet.
    Pending,
    /// Its result was merged.
    Done {
        attempt: u64,
        agent: String,
        end: ShardEnd,
    },
    /// Not scanned after this many deliveries (`MaxDeliver`).
    Failed { deliveries: u64 },
}

/// What the ledger did with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The job's first result: merged.
    Merged,
    /// The job already had its result (another attempt, or the same twice):
    /// ignored.
    Duplicate,
    /// The job had failed past `MaxDeliver` before: ignored (the slice is
    /// inconclusive already).
    AfterFailure,
    /// Not a job of this slice (another sweep or slice, a shard that does
    /// not exist) or another version: ignored.
    Foreign,
}

/// The coordinator's account of one slice's jobs: which have a result,
/// which failed, the replies merged so far (each job's once), and when the
/// slice is complete. The first outcome of a job wins: a result, or its
/// failure past `MaxDeliver`; whatever comes for it later is ignored, so the
/// merged replies are the same in any order and with any duplicates.
#[derive(Debug, Clone)]
pub struct SweepLedger {
    sweep: Millis,
    slice: u32,
    jobs: Vec<JobState>,
    replies: SweepReplies,
    loss: Option<(LossCounts, u32)>,
}

impl SweepLedger {
    /// The ledger of slice `slice` of sweep `sweep`, cut into `shards`
    /// jobs; `replies` is the slice's empty collector
    /// ([`SweepTargets::replies`]).
    pub fn new(sweep: Millis, slice: u32, shards: u64, replies: SweepReplies) -> SweepLedger {
        SweepLedger {
            sweep,
            slice,
            jobs: vec![JobState::Pending; usize::try_from(shards).unwrap_or(0)],
            replies,
            loss: None,
        }
    }

    fn slot(&self, job: JobId) -> Option<usize> {
        (job.sweep == self.sweep && job.slice == self.slice)
            .then(|| usize::try_from(job.shard).ok())
            .flatten()
            .filter(|&i| i < self.jobs.len())
    }

    /// Merges `result` if it is its job's first outcome.
    pub fn accept(&mut self, result: &ShardResult) -> Merge {
        if check_version(result.version).is_err() {
            return Merge::Foreign;
        }
        let Some(i) = self.slot(result.job) else {
            return Merge::Foreign;
        };
        match self.jobs[i] {
            JobState::Done { .. } => return Merge::Duplicate,
            JobState::Failed { .. } => return Merge::AfterFailure,
            JobState::Pending => {}
        }
        for a in &result.addresses {
            self.replies.record_echo(a.address);
            for port in a.open.ports() {
                self.replies.record(a.address, port, true);
            }
            for port in a.closed.ports() {
                self.replies.record(a.address, port, false);
            }
        }
        self.replies.record_sent(result.sent);
        if let Some(outcome) = result.retries {
            let (loss, rounds) = self.loss.get_or_insert((LossCounts::default(), 0));
            loss.add(outcome.loss);
            *rounds = (*rounds).max(outcome.rounds);
            let (loss, rounds) = (*loss, *rounds);
            self.replies.record_retries(RetryOutcome { loss, rounds });
        }
        self.jobs[i] = JobState::Done {
            attempt: result.attempt,
            agent: result.agent.clone(),
            end: result.end.clone(),
        };
        Merge::Merged
    }

    /// Records that `job` was not scanned after `deliveries` deliveries
    /// (0: the coordinator gave up at the slice's deadline, not knowing how
    /// often it was delivered)
    /// (the queue's `MaxDeliver` advisory); `false` if it already had an
    /// outcome or is not a job of this slice.
    pub fn fail(&mut self, job: JobId, deliveries: u64) -> bool {
        match self.slot(job) {
            Some(i) if self.jobs[i] == JobState::Pending => {
                self.jobs[i] = JobState::Failed { deliveries };
                true
            }
            _ => false,
        }
    }

    /// Where each job stands, by shard index.
    pub fn jobs(&self) -> &[JobState] {
        &self.jobs
    }

    /// The jobs still waiting for an outcome.
    pub fn pending(&self) -> impl Iterator<Item = JobId> + '_ {
        self.jobs
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == JobState::Pending)
            .map(|(i, _)| JobId {
                sweep: self.sweep,
                slice: self.slice,
                shard: i as u64,
            })
    }

    /// Whether every job has its outcome.
    pub fn is_complete(&self) -> bool {
        self.pending().next().is_none()
    }

    /// The slice's end and merged replies. Inconclusive (never closed)
    /// unless every job's result came back completed: a job still pending
    /// ends it as interrupted (the coordinator stopped); a job failed past
    /// `MaxDeliver`, or an agent's failure, fails it naming the first such
    /// shard; else lost replies add up.
    pub fn finish(self) -> (SweepEnd, SweepReplies) {
        let count = self.jobs.len();
        let mut lost = 0u64;
        let mut failed = None;
        let mut pending = false;
        for (i, job) in self.jobs.iter().enumerate() {
            let name = || format!("shard {}/{count} of slice {}", i + 1, self.slice);
            match job {
                JobState::Pending => pending = true,
                JobState::Failed { deliveries: 0 } => {
                    failed.get_or_insert_with(|| {
                        format!(
                            "{} not scanned before the slice's deadline (no agent finished it)",
                            name()
                        )
                    });
                }
                JobState::Failed { deliveries } => {
                    failed.get_or_insert_with(|| {
                        format!("{} not scanned after {deliveries} deliveries", name())
                    });
                }
                JobState::Done { end, agent, .. } => match end {
                    ShardEnd::Completed => {}
                    ShardEnd::RepliesLost { lost: n } => lost = lost.saturating_add(*n),
                    ShardEnd::Failed { why } => {
                        failed.get_or_insert_with(|| {
                            format!("{} failed on agent {agent}: {why}", name())
                        });
                    }
                },
            }
        }
        let end = match failed {
            Some(why) => SweepEnd::Failed(why),
            None => SweepEnd::after_run(pending, lost),
        };
        (end, self.replies)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;
    use crate::monitor::{MonitorSpec, MonitorState, Scope};
    use crate::plan::{ScanKind, kept_ports};
    use crate::probe::Probe;

    const KEY: [u8; 16] = *b"0123456789abcdef";

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn v6(last: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, last))
    }

    fn web(expected: &[u16], scan: &str) -> MonitorSpec {
        MonitorSpec {
            name: "web".into(),
            host: "web.example".into(),
            expected_open: expected.iter().copied().collect(),
            scan_ports: scan.parse().unwrap(),
            ping: true,
            ..MonitorSpec::default()
        }
    }

    /// One monitor's slice: its targets and its description.
    fn slice(addresses: &[IpAddr], spec: &MonitorSpec) -> (SweepTargets, SliceSpec) {
        let state = MonitorState::new();
        let mut b = SweepTargets::builder(ScanKind::Full);
        b.add(addresses, spec, &state, &Scope::Full);
        let targets = b.build();
        let desc = SliceSpec::new(1_000, 2, 77, &targets);
        // What the slice keeps is what the state machine tracks.
        for &a in addresses {
            let tracked: Vec<u16> = kept_ports(spec, &state, a, &Scope::Full)
                .into_iter()
                .collect();
            assert_eq!(targets.kept(a), tracked);
        }
        (targets, desc)
    }

    fn key() -> CookieKey {
        CookieKey::from_bytes(KEY)
    }

    /// [`plan_jobs`] without a per-host cap.
    fn plan(
        desc: &SliceSpec,
        label: &str,
        rate: u64,
        max_shard_ms: u64,
        key: &CookieKey,
    ) -> Result<Vec<Job>, ClusterError> {
        let params = JobParams {
            label: label.into(),
            rate,
            per_host_rate: None,
            max_shard_ms,
        };
        plan_jobs(desc, &params, key)
    }

    #[test]
    fn a_jobs_scan_time_counts_the_per_host_cap() {
        let (_, desc) = slice(&[v4(2)], &web(&[22], "1-1000"));
        let params = JobParams {
            label: ANY_LABEL.into(),
            rate: 1_000,
            per_host_rate: Some(400),
            max_shard_ms: 500,
        };
        let jobs = plan_jobs(&desc, &params, &key()).unwrap();
        // 1,000 probes, 500 a shard: two shards, each capped at 200/s on one host.
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].per_host_rate, Some(200));
        assert_eq!(jobs[0].scan_ms(1), 2_500);
        // Over many hosts the cap does not bind: the shard's own time.
        assert_eq!(jobs[0].scan_ms(100), 500);
    }

    #[test]
    fn shard_counts_bound_the_scan_time() {
        // 100 pps for 10 s: 1,000 probes a shard.
        assert_eq!(shard_budget(100, 10_000), 1_000);
        assert_eq!(shard_count(1_000, 100, 10_000), 1);
        assert_eq!(shard_count(1_001, 100, 10_000), 2);
        assert_eq!(shard_count(0, 100, 10_000), 1);
        // A budget below one probe is one probe; never more shards than probes.
        assert_eq!(shard_budget(1, 1), 1);
        assert_eq!(shard_count(5, 1, 1), 5);
        assert_eq!(shard_budget(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn a_slice_waits_for_its_agents_then_for_redeliveries() {
        let times = QueueTimes {
            max_shard_ms: 30_000,
            ack_wait_ms: 60_000,
            max_deliver: 5,
        };
        // 10 jobs, 3 agents: 4 rounds of 60 s, then 5 x (60 s + 60 s).
        assert_eq!(
            slice_deadline(1_000, 10, 3, times),
            1_000 + 240_000 + 600_000
        );
        // No agent alive counts as one; more agents, sooner.
        assert_eq!(
            slice_deadline(0, 10, 0, times),
            slice_deadline(0, 10, 1, times)
        );
        assert!(slice_deadline(0, 10, 5, times) < slice_deadline(0, 10, 3, times));
        let huge = QueueTimes {
            max_shard_ms: u64::MAX,
            ack_wait_ms: u64::MAX,
            max_deliver: u64::MAX,
        };
        assert_eq!(slice_deadline(5, u64::MAX, 1, huge), Millis::MAX);
    }

    #[test]
    fn a_slice_is_described_once_with_what_it_keeps() {
        let spec = web(&[22], "1-100");
        let (targets, desc) = slice(&[v4(9), v4(2), v4(3), v6(1)], &spec);
        assert_eq!(
            desc.targets,
            vec![(v4(2), v4(3)), (v4(9), v4(9)), (v6(1), v6(1))]
        );
        assert_eq!(desc.ports.to_string(), "1-100");
        assert_eq!(desc.ping, vec![v4(2), v4(3), v4(9), v6(1)]);
        assert_eq!(desc.keep.len(), 4);
        assert!(desc.keep.iter().all(|k| k.ports.to_string() == "22"));
        assert_eq!(desc.target_set(), targets.targets);
        assert_eq!(&desc.port_set(), targets.ports());
        assert_eq!(desc.object_name(), "1000.2");
        assert_eq!(desc.sweep().unwrap().len(), 400);
    }

    #[test]
    fn an_agent_refuses_a_bad_description() {
        let (_, desc) = slice(&[v4(2), v4(3)], &web(&[22], "1-100"));
        let job = plan(&desc, ANY_LABEL, 10, 3_000, &key()).unwrap().remove(0);
        desc.check(&job).unwrap();
        let mut other = job.clone();
        other.id.slice = 3;
        assert_eq!(
            desc.check(&other),
            Err(ClusterError::Slice(
                "job 1000.3.0 is not of slice 1000.2".into()
            ))
        );
        for range in [(v4(9), v4(2)), (v4(2), v6(1)), (v6(9), v6(1))] {
            let bad = SliceSpec {
                targets: vec![(v4(1), v4(1)), range],
                ..desc.clone()
            };
            assert!(matches!(bad.check(&job), Err(ClusterError::Slice(_))));
            // Left out, never a panic.
            assert_eq!(bad.target_set().count(), 1);
        }
        let newer = SliceSpec {
            version: 2,
            ..desc.clone()
        };
        assert!(matches!(
            newer.check(&job),
            Err(ClusterError::Version { .. })
        ));
    }

    #[test]
    fn jobs_name_their_shard_subject_and_message_id() {
        let (_, desc) = slice(&[v4(2), v4(3)], &web(&[22], "1-100"));
        let jobs = plan(&desc, "site=fra1", 10, 3_000, &key()).unwrap();
        // 200 probes at 30 a shard.
        assert_eq!(jobs.len(), 7);
        assert_eq!(jobs.iter().map(|j| j.probes).sum::<u64>(), 200);
        let j = &jobs[3];
        j.check().unwrap();
        assert_eq!(j.shard(), Shard { index: 3, count: 7 });
        assert_eq!(j.subject(), "palisade-cluster.jobs.site=fra1.1000.2");
        assert_eq!(j.msg_id(), "job.1000.2.3");
        assert_eq!(j.slice_object, "1000.2");
        assert_eq!(j.per_host_rate, None);
        // The per-host cap is shared by the shards, which may run at once.
        let capped = JobParams {
            label: ANY_LABEL.into(),
            rate: 10,
            per_host_rate: Some(20),
            max_shard_ms: 3_000,
        };
        let jobs = plan_jobs(&desc, &capped, &key()).unwrap();
        assert!(jobs.iter().all(|j| j.per_host_rate == Some(2)));
        let capped = JobParams {
            per_host_rate: Some(3),
            ..capped
        };
        let jobs = plan_jobs(&desc, &capped, &key()).unwrap();
        assert!(jobs.iter().all(|j| j.per_host_rate == Some(1)));
        assert_eq!(
            plan(&desc, "a.b", 10, 3_000, &key()),
            Err(ClusterError::Label("a.b".into()))
        );
        assert_eq!(
            plan(&desc, ANY_LABEL, 0, 3_000, &key()),
            Err(ClusterError::Rate)
        );
        let mut bad = j.clone();
        bad.id.shard = 7;
        assert_eq!(bad.check(), Err(ClusterError::Shard { index: 7, count: 7 }));
        bad = j.clone();
        bad.version = 2;
        assert_eq!(
            bad.check(),
            Err(ClusterError::Version {
                found: 2,
                supported: 1
            })
        );
        for label in ["", "site fra1", "a*", "x>", &"l".repeat(65)] {
            assert!(!valid_label(label), "{label:?}");
        }
        assert!(valid_label("site=fra1") && valid_label(ANY_LABEL));
    }

    #[test]
    fn each_job_has_its_own_key_which_is_never_printed() {
        let (_, desc) = slice(&[v4(2), v4(3)], &web(&[22], "1-100"));
        let jobs = plan(&desc, ANY_LABEL, 10, 3_000, &key()).unwrap();
        let keys: BTreeSet<[u8; 16]> = jobs.iter().map(|j| j.key.0).collect();
        assert_eq!(keys.len(), jobs.len());
        let other = plan(&desc, ANY_LABEL, 10, 3_000, &CookieKey::from_bytes([9; 16]));
        assert!(jobs.iter().zip(other.unwrap()).all(|(a, b)| a.key != b.key));
        let printed = format!("{:?}", jobs[0]);
        assert!(printed.contains("JobKey(..)"), "{printed}");
        let hex: String = jobs[0].key.0.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!printed.contains(&hex));
        // A reply validates under the key of the job that sent its probe only.
        let src = crate::probe::Target::V4(0xc612_0001);
        let dst = crate::probe::Target::from(v4(2));
        let (a, b) = (
            crate::probe::Cookies::new(&jobs[0].key.cookie_key(), src),
            crate::probe::Cookies::new(&jobs[1].key.cookie_key(), src),
        );
        assert_ne!(a.seq(40_000, dst, 22), b.seq(40_000, dst, 22));
    }

    #[test]
    fn messages_round_trip_through_json_and_refuse_bad_keys() {
        let spec = web(&[22], "1-100");
        let (_, desc) = slice(&[v4(2), v6(1)], &spec);
        let json = serde_json::to_string(&desc).unwrap();
        assert_eq!(serde_json::from_str::<SliceSpec>(&json).unwrap(), desc);
        let job = plan(&desc, ANY_LABEL, 10, 3_000, &key()).unwrap().remove(0);
        let json = serde_json::to_string(&job).unwrap();
        assert!(json.contains(r#""version":1"#), "{json}");
        assert_eq!(serde_json::from_str::<Job>(&json).unwrap(), job);
        let mut c = ShardCollector::new(&desc);
        c.record(v4(2), 80, true);
        c.record(v4(2), 22, false);
        let result = c.finish(
            &job,
            2,
            "agent-1",
            ShardEnd::RepliesLost { lost: 3 },
            20,
            Some(RetryOutcome::default()),
        );
        let json = serde_json::to_string(&result).unwrap();
        assert!(json.contains(r#""end":"replies_lost","lost":3"#), "{json}");
        assert!(json.contains(r#""open":"80","closed":"22""#), "{json}");
        assert_eq!(serde_json::from_str::<ShardResult>(&json).unwrap(), result);
        assert_eq!(result.msg_id(), "result.1000.2.0.2");
        assert_eq!(result.subject(), "palisade-cluster.results.1000.2");
        let beat = AgentBeat {
            version: CLUSTER_VERSION,
            name: "agent-1".into(),
            labels: vec!["site=fra1".into(), ANY_LABEL.into()],
            rate: 100_000,
            started: 5,
            jobs_done: 3,
            job: Some(job.id),
        };
        beat.check().unwrap();
        let json = serde_json::to_string(&beat).unwrap();
        assert_eq!(serde_json::from_str::<AgentBeat>(&json).unwrap(), beat);
        let bad_beat = AgentBeat {
            labels: vec!["a b".into()],
            ..beat
        };
        assert_eq!(bad_beat.check(), Err(ClusterError::Label("a b".into())));
        assert_eq!(JobKey::derive(&key(), job.id).to_bytes(), job.key.0);
        for bad in [
            "\"00\"",
            "\"zz0123456789abcdef0123456789abcd\"",
            "\"+f0123456789abcdef0123456789abcd\"",
            "7",
        ] {
            assert!(serde_json::from_str::<JobKey>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_collector_files_replies_as_a_single_host_does() {
        let spec = web(&[22], "1-100");
        let (_, desc) = slice(&[v4(2), v4(3), v4(4)], &spec);
        let job = plan(&desc, ANY_LABEL, 1_000, 1_000, &key())
            .unwrap()
            .remove(0);
        let mut c = ShardCollector::new(&desc);
        c.record(v4(2), 80, true);
        c.record(v4(2), 22, false);
        c.record(v4(2), 23, false);
        c.record(v4(3), 23, false);
        c.record_echo(v4(4));
        // Not probed by the slice: ignored.
        c.record(v4(7), 80, true);
        c.record_echo(v4(8));
        let r = c.finish(&job, 1, "a", ShardEnd::Completed, 300, None);
        let got: Vec<(IpAddr, String, String)> = r
            .addresses
            .iter()
            .map(|a| (a.address, a.open.to_string(), a.closed.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                (v4(2), "80".into(), "22".into()),
                (v4(3), "".into(), "".into()),
                (v4(4), "".into(), "".into()),
            ]
        );
    }

    /// The slice's single-host replies and a ledger's, for the tests below.
    fn ledger_of(targets: &SweepTargets, jobs: &[Job]) -> SweepLedger {
        SweepLedger::new(1_000, 2, jobs.len() as u64, targets.replies())
    }

    #[test]
    fn the_first_outcome_of_a_job_wins() {
        let spec = web(&[22], "1-100");
        let (targets, desc) = slice(&[v4(2), v4(3)], &spec);
        let jobs = plan(&desc, ANY_LABEL, 10, 5_000, &key()).unwrap();
        assert_eq!(jobs.len(), 4);
        let result = |job: &Job, attempt, open: &[u16], end| {
            let mut c = ShardCollector::new(&desc);
            for &p in open {
                c.record(v4(2), p, true);
            }
            c.finish(job, attempt, "a", end, job.probes, None)
        };
        let mut ledger = ledger_of(&targets, &jobs);
        assert_eq!(ledger.pending().count(), 4);
        let first = result(&jobs[0], 1, &[80], ShardEnd::Completed);
        assert_eq!(ledger.accept(&first), Merge::Merged);
        assert_eq!(ledger.accept(&first), Merge::Duplicate);
        // A second attempt of the same job (the first agent was slow, not
        // dead) finds more: ignored all the same.
        let again = result(&jobs[0], 2, &[80, 443], ShardEnd::Completed);
        assert_eq!(ledger.accept(&again), Merge::Duplicate);
        assert!(ledger.fail(jobs[1].id, 5));
        assert!(!ledger.fail(jobs[1].id, 6), "failed once");
        assert!(!ledger.fail(jobs[0].id, 5), "done already");
        assert_eq!(
            ledger.accept(&result(&jobs[1], 6, &[8080], ShardEnd::Completed)),
            Merge::AfterFailure
        );
        // Another slice's, another sweep's, a newer build's: foreign.
        let mut foreign = result(&jobs[2], 1, &[], ShardEnd::Completed);
        foreign.job.slice = 3;
        assert_eq!(ledger.accept(&foreign), Merge::Foreign);
        foreign.job = jobs[2].id;
        foreign.job.shard = 4;
        assert_eq!(ledger.accept(&foreign), Merge::Foreign);
        foreign.job = jobs[2].id;
        foreign.version = 2;
        assert_eq!(ledger.accept(&foreign), Merge::Foreign);
        assert!(!ledger.fail(
            JobId {
                sweep: 9,
                ..jobs[2].id
            },
            5
        ));
        assert_eq!(
            ledger.pending().collect::<Vec<_>>(),
            vec![jobs[2].id, jobs[3].id]
        );
        assert!(!ledger.is_complete());
        // Stopped with jobs pending: interrupted, inconclusive (the failure
        // named first).
        assert_eq!(ledger_of(&targets, &jobs).finish().0, SweepEnd::Interrupted);
        assert!(matches!(ledger.clone().finish().0, SweepEnd::Failed(_)));
        for j in &jobs[2..] {
            assert_eq!(
                ledger.accept(&result(j, 1, &[], ShardEnd::RepliesLost { lost: 2 })),
                Merge::Merged
            );
        }
        assert!(ledger.is_complete());
        let (end, replies) = ledger.finish();
        // The failed shard names itself; its ports are not closed, the
        // slice is inconclusive.
        assert_eq!(
            end,
            SweepEnd::Failed("shard 2/4 of slice 2 not scanned after 5 deliveries".into())
        );
        assert!(end.failure().is_some());
        assert!(replies.of(v4(2)).open.contains(80));
        assert!(!replies.of(v4(2)).open.contains(443));
        assert!(!replies.of(v4(2)).open.contains(8080));
        assert_eq!(replies.tally().probes, 150);
        // Given up at the deadline: no delivery count to name.
        let mut ledger = ledger_of(&targets, &jobs);
        assert!(ledger.fail(jobs[0].id, 0));
        assert_eq!(
            ledger.finish().0,
            SweepEnd::Failed(
                "shard 1/4 of slice 2 not scanned before the slice's deadline (no agent finished it)"
                    .into()
            )
        );
    }

    #[test]
    fn agents_ends_add_up_to_the_slice_end() {
        let spec = web(&[22], "1-100");
        let (targets, desc) = slice(&[v4(2)], &spec);
        let jobs = plan(&desc, ANY_LABEL, 10, 5_000, &key()).unwrap();
        assert_eq!(jobs.len(), 2);
        let finish = |ends: [ShardEnd; 2]| {
            let mut ledger = ledger_of(&targets, &jobs);
            for (job, end) in jobs.iter().zip(ends) {
                let r = ShardCollector::new(&desc).finish(job, 1, "b", end, 1, None);
                ledger.accept(&r);
            }
            ledger.finish().0
        };
        use ShardEnd::*;
        assert_eq!(finish([Completed, Completed]), SweepEnd::Completed);
        assert_eq!(
            finish([RepliesLost { lost: 2 }, RepliesLost { lost: 3 }]),
            SweepEnd::RepliesLost(5)
        );
        assert_eq!(
            finish([
                RepliesLost { lost: 2 },
                Failed {
                    why: "no NIC".into()
                }
            ]),
            SweepEnd::Failed("shard 2/2 of slice 2 failed on agent b: no NIC".into())
        );
    }

    #[test]
    fn loss_estimates_add_up_and_rounds_take_the_most() {
        let spec = web(&[], "1-10");
        let (targets, desc) = slice(&[v4(2)], &spec);
        let jobs = plan(&desc, ANY_LABEL, 1, 5_000, &key()).unwrap();
        let mut ledger = ledger_of(&targets, &jobs);
        let outcome = |sent, rounds| RetryOutcome {
            loss: LossCounts {
                first_sent: sent,
                first_answered: 1,
                retry_due: sent,
                retry_answered: 0,
            },
            rounds,
        };
        for (job, (sent, rounds)) in jobs.iter().zip([(5, 1), (5, 3)]) {
            let r = ShardCollector::new(&desc).finish(
                job,
                1,
                "a",
                ShardEnd::Completed,
                sent,
                Some(outcome(sent, rounds)),
            );
            ledger.accept(&r);
        }
        let (_, replies) = ledger.finish();
        let mut truth = targets.replies();
        truth.record_sent(10);
        truth.record_retries(RetryOutcome {
            loss: LossCounts {
                first_sent: 10,
                first_answered: 2,
                retry_due: 10,
                retry_answered: 0,
            },
            rounds: 3,
        });
        assert_eq!(replies, truth);
    }

    fn arb_addresses() -> impl Strategy<Value = Vec<IpAddr>> {
        proptest::collection::btree_set(
            prop_oneof![(1u8..40).prop_map(v4), (1u16..20).prop_map(v6),],
            1..8,
        )
        .prop_map(|s| s.into_iter().collect())
    }

    fn arb_ports() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("1-30".to_string()),
            Just("7".to_string()),
            Just("2,5,9-12,20".to_string()),
        ]
    }

    proptest! {
        /// Every (address, port) pair of a slice is in exactly one shard,
        /// no shard holds more than the budget, every pinged address is
        /// pinged by one shard, and the plan is the same every time.
        #[test]
        fn shards_cover_each_probe_once(
            addresses in arb_addresses(),
            ports in arb_ports(),
            rate in 1u64..50,
            ms in 1u64..5_000,
        ) {
            let (targets, desc) = slice(&addresses, &web(&[22], &ports));
            let jobs = plan(&desc, ANY_LABEL, rate, ms, &key()).unwrap();
            prop_assert_eq!(&jobs, &plan(&desc, ANY_LABEL, rate, ms, &key()).unwrap());
            let sweep = desc.sweep().unwrap();
            let budget = shard_budget(rate, ms);
            let mut seen: HashMap<Probe, usize> = HashMap::new();
            let mut pinged = Vec::new();
            for (i, job) in jobs.iter().enumerate() {
                job.check().unwrap();
                prop_assert_eq!(job.id.shard, i as u64);
                prop_assert!(job.probes <= budget);
                prop_assert!(job.probes >= 1);
                let probes: Vec<Probe> = sweep.iter(job.shard(), 0).map(|(_, p)| p).collect();
                prop_assert_eq!(probes.len() as u64, job.probes);
                for p in probes {
                    *seen.entry(p).or_default() += 1;
                }
                pinged.extend(desc.ping_of(job.shard()));
            }
            let all: usize = addresses.len() * targets.ports().len();
            prop_assert_eq!(seen.len(), all);
            prop_assert!(seen.values().all(|&n| n == 1));
            for a in &addresses {
                for &port in targets.ports().as_slice() {
                    let probe = Probe { target: (*a).into(), port };
                    prop_assert!(seen.contains_key(&probe));
                }
            }
            pinged.sort();
            prop_assert_eq!(pinged, addresses);
        }

        /// Whatever the replies, however the results arrive (any order,
        /// each any number of times, from any attempt), the merged replies
        /// are the single host's.
        #[test]
        fn merged_results_are_the_single_host_truth(
            addresses in arb_addresses(),
            ports in arb_ports(),
            expected in proptest::collection::btree_set(1u16..30, 0..4),
            replies in proptest::collection::vec((0usize..8, 1u16..31, any::<bool>()), 0..60),
            echoes in proptest::collection::vec(0usize..8, 0..4),
            deliveries in proptest::collection::vec((0usize..64, 1u64..4), 0..40),
            rate in 1u64..30,
        ) {
            let expected: Vec<u16> = expected.into_iter().collect();
            let (targets, desc) = slice(&addresses, &web(&expected, &ports));
            let jobs = plan(&desc, ANY_LABEL, rate, 1_000, &key()).unwrap();
            let sweep = desc.sweep().unwrap();
            // A reply from an address or port the slice does not probe
            // included: both sides ignore it.
            let replies: Vec<(IpAddr, u16, bool)> = replies
                .into_iter()
                .map(|(i, port, open)| (*addresses.get(i).unwrap_or(&v4(200)), port, open))
                .collect();
            let mut truth = targets.replies();
            let mut collectors: Vec<ShardCollector> =
                jobs.iter().map(|_| ShardCollector::new(&desc)).collect();
            for &(address, port, open) in &replies {
                truth.record(address, port, open);
                // The shard whose probe it answers (a stray one: any).
                let shard = sweep
                    .position_of(Probe { target: address.into(), port })
                    .map_or(0, |pos| (pos % jobs.len() as u64) as usize);
                collectors[shard].record(address, port, open);
            }
            for &i in &echoes {
                let address = addresses[i % addresses.len()];
                truth.record_echo(address);
                let shard = jobs.iter().position(|j| desc.ping_of(j.shard()).contains(&address));
                collectors[shard.unwrap_or(0)].record_echo(address);
            }
            truth.record_sent(jobs.iter().map(|j| j.probes).sum());
            let results: Vec<ShardResult> = collectors
                .into_iter()
                .zip(&jobs)
                .map(|(c, job)| c.finish(job, 1, "a", ShardEnd::Completed, job.probes, None))
                .collect();
            // Arrivals: the random ones (duplicates, later attempts), then
            // each once more so that every job has come at least once.
            let mut ledger = ledger_of(&targets, &jobs);
            let arrivals = deliveries
                .into_iter()
                .map(|(i, attempt)| (i % results.len(), attempt))
                .chain((0..results.len()).rev().map(|i| (i, 9)));
            let mut merged = 0;
            for (i, attempt) in arrivals {
                let mut r = results[i].clone();
                r.attempt = attempt;
                if ledger.accept(&r) == Merge::Merged {
                    merged += 1;
                }
            }
            prop_assert_eq!(merged, jobs.len());
            prop_assert!(ledger.is_complete());
            let (end, got) = ledger.finish();
            prop_assert_eq!(end, SweepEnd::Completed);
            prop_assert_eq!(got, truth);
        }

        /// A shard failed past MaxDeliver makes the slice inconclusive,
        /// whatever else arrived, in whichever order.
        #[test]
        fn a_failed_shard_fails_the_slice(
            addresses in arb_addresses(),
            failed in 0usize..64,
            order in proptest::collection::vec(0usize..64, 0..20),
        ) {
            let (targets, desc) = slice(&addresses, &web(&[22], "1-30"));
            let jobs = plan(&desc, ANY_LABEL, 3, 1_000, &key()).unwrap();
            let failed = failed % jobs.len();
            let mut ledger = ledger_of(&targets, &jobs);
            for i in order.into_iter().chain(0..jobs.len()) {
                let i = i % jobs.len();
                if i == failed {
                    ledger.fail(jobs[i].id, 5);
                } else {
                    let r = ShardCollector::new(&desc).finish(&jobs[i], 1, "a", ShardEnd::Completed, 1, None);
                    ledger.accept(&r);
                }
            }
            prop_assert!(ledger.is_complete());
            let (end, _) = ledger.finish();
            let why = format!("shard {}/{} of slice 2 not scanned after 5 deliveries", failed + 1, jobs.len());
            prop_assert_eq!(end, SweepEnd::Failed(why));
        }
    }
}
