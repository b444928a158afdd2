//! A scan: the pure core (`palisade_core::probe`, `wire`, `classify`) wired
//! to the data path (AF_XDP sockets, the reply filter).
//!
//! * [`path`]: where probes leave from (routes, neighbours, overrides).
//! * [`send`]: one sender thread per TX queue walks its lane of the shard,
//!   paced, writing SYNs straight into UMEM; sender 0 also sends the RSTs.
//! * [`receive`]: one receiver drains the filter's ring buffer, has the
//!   classifier judge each reply, reports each (host, port) once.
//! * [`window`]: the retry window between them.
//! * [`echo`]: the addresses pinged for host reachability (ICMP / ICMPv6
//!   echo, sent by sender 0) and which of them answered.
//!
//! Retries are loss-aware and spaced in time with bounded memory: a sender at
//! step `m` of its sequence also re-sends step `m - r*W` for each retry `r`,
//! unless a reply for it arrived. `W` is half a second of probes at the
//! configured rate, so retries go out 0.5 s, 1 s, ... after the first probe,
//! and the "answered" bits live in a ring of a few `W` -- not in a bitmap of
//! the whole sweep. The receiver counts each answer by the attempt it
//! answers (for the loss estimate), each sender reads the estimate once a
//! batch and, with a target recall, gives the silent ports of hosts that
//! answered anything as many rounds as the loss needs
//! (`palisade_core::probe::retry`: the policy, the estimate and the
//! sender's ledger).

mod echo;
mod path;
mod receive;
mod send;
mod window;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use palisade_core::classify::ReplyClassifier;
use palisade_core::probe::{
    AdaptiveRetries, CookieKey, Lanes, LossCounts, RetryOutcome, Shard, Sweep, TargetRecall,
    capped_rate,
};
use palisade_core::wire::MacAddr;
use serde::Serialize;
use thiserror::Error;

use crate::{AttachMode, ReplyFilter, XdpError, filter::RECORD_LEN};
use echo::Pings;
use path::{Path, resolve_path};
use send::{Rst, send_lane};
use window::{HostsAnswered, RetryWindow};

/// Everything a scan needs to know.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub shard: Shard,
    /// Skip the first `resume` probes of the shard.
    pub resume: u64,
    /// Probes per second (at least 1).
    pub rate: u64,
    /// At most this many probes per second to any one address: the scan
    /// goes at `probe::capped_rate(rate, per_host_rate, hosts)`. `None`: no
    /// cap. Like `rate`, it counts first probes; retries ride along.
    pub per_host_rate: Option<u64>,
    /// Extra probes for a port that did not answer.
    pub retries: u32,
    /// Adaptive retries: give the silent ports of hosts that answered
    /// anything as many more retries as the estimated loss needs to find
    /// this share of the open ports (at most
    /// `palisade_core::probe::retry::MAX_RETRY_ROUNDS`, within a budget of a
    /// quarter of the first probes). `None`: `retries` for every port. Needs
    /// `retries >= 1` (the first retry measures the loss).
    pub target_recall: Option<TargetRecall>,
    /// How long to wait for late replies after the last probe.
    pub wait: Duration,
    pub interface: Option<String>,
    pub source_v4: Option<Ipv4Addr>,
    pub source_v6: Option<Ipv6Addr>,
    /// Inclusive source-port range.
    pub source_ports: (u16, u16),
    pub gateway_mac: Option<MacAddr>,
    /// TX queues (sockets and threads); `None`: all, up to the core count.
    pub queues: Option<usize>,
    /// Report closed ports too.
    pub report_closed: bool,
    /// Key for the cookies; random per scan unless a test fixes it.
    pub cookie_key: Option<[u8; 16]>,
    /// Addresses to send ICMP (IPv4) / ICMPv6 (IPv6) echo requests to, for
    /// host reachability: once at the start of the scan, then `retries`
    /// more times, half a second apart, to those that have not answered.
    /// Each that answers is reported once, as an [`Answer::Echo`] finding.
    pub ping: Vec<IpAddr>,
    /// The link is VLAN-tagged: replies carrying a VLAN tag count. `false`
    /// (the default): a tagged reply is invalid (`filter_invalid`).
    pub accept_vlan: bool,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            shard: Shard::WHOLE,
            resume: 0,
            rate: DEFAULT_RATE,
            retries: 1,
            target_recall: None,
            wait: Duration::from_secs(1),
            interface: None,
            source_v4: None,
            source_v6: None,
            source_ports: DEFAULT_SOURCE_PORTS,
            gateway_mac: None,
            queues: None,
            report_closed: false,
            cookie_key: None,
            per_host_rate: None,
            ping: Vec::new(),
            accept_vlan: false,
        }
    }
}

/// Default probes per second.
pub const DEFAULT_RATE: u64 = 100_000;
/// Default source ports: above Linux's ephemeral range (32768-60999).
pub const DEFAULT_SOURCE_PORTS: (u16, u16) = (61_000, 61_063);

/// What answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// A SYN-ACK: the port is open.
    Open,
    /// An RST: the port is closed (reported with `report_closed` only).
    Closed,
    /// An echo reply: the host is reachable (port 0).
    Echo,
}

impl Answer {
    /// `open`, `closed` or `echo`.
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Open => "open",
            Answer::Closed => "closed",
            Answer::Echo => "echo",
        }
    }
}

/// One finding: a port that answered, or a host that answered echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub ip: IpAddr,
    /// The index of `ip` among the sweep's hosts ([`Sweep::locate`]: IPv4
    /// first, each family ascending), for a TCP answer: where a caller that
    /// files replies by address finds it without a search.
    pub host: Option<u64>,
    /// The port; 0 for [`Answer::Echo`].
    pub port: u16,
    pub answer: Answer,
    pub ttl: u8,
    /// When the reply was read (the clock is read once per batch of
    /// replies the receiver takes from the ring buffer).
    pub time: std::time::SystemTime,
}

/// Live counters, readable while the scan runs (for progress lines).
#[derive(Debug, Default)]
pub struct Progress {
    /// First probes sent.
    pub sent: AtomicU64,
    /// Retry probes sent.
    pub retries: AtomicU64,
    /// Valid replies.
    pub replies: AtomicU64,
    /// Open ports found.
    pub open: AtomicU64,
}

/// What a scan did (`palisade scan --summary-json` writes it as JSON; times
/// in seconds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanSummary {
    /// Probes in this shard (after `resume`).
    pub planned: u64,
    pub sent: u64,
    pub retries: u64,
    /// Valid replies (first per port).
    pub replies: u64,
    /// Replies that failed cookie validation (forged, stale, unrelated),
    /// TCP and echo.
    pub invalid: u64,
    /// Would-be replies the XDP filter dropped because the kernel would not
    /// accept them: bad IP, TCP or ICMP checksum, a fragment, a header past
    /// the IP length or the frame, a VLAN tag on an untagged link.
    pub filter_invalid: u64,
    /// ICMP / ICMPv6 echo requests sent (first rounds and re-sends).
    pub echo_sent: u64,
    /// Addresses that answered echo (each counted once).
    pub echo_replies: u64,
    /// Valid replies for a port already reported.
    pub duplicates: u64,
    pub open: u64,
    pub closed: u64,
    pub rsts_sent: u64,
    /// RSTs not sent because sender 0 was behind (best effort).
    pub rsts_dropped: u64,
    /// Replies the filter lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Transmit kicks the kernel deferred.
    pub tx_busy: u64,
    /// Whole scan, from start to the end of the wait.
    #[serde(rename = "duration_secs", serialize_with = "seconds")]
    pub duration: Duration,
    /// Sending the first probes: from the first to the last.
    #[serde(rename = "send_duration_secs", serialize_with = "seconds")]
    pub send_duration: Duration,
    pub interface: String,
    pub attach_mode: Option<AttachMode>,
    pub zero_copy: bool,
    pub queues: usize,
    /// The scan was stopped before it finished.
    pub interrupted: bool,
    /// The estimated reply loss per attempt (probe or answer lost), from the
    /// ports that answered: the share of first retries due that the retry
    /// answered over the share of probes answered at once
    /// (`palisade_core::probe::retry`), to 6 decimal places. `None` without
    /// retries, or with fewer than 32 answers to go by.
    pub estimated_loss: Option<f64>,
    /// What the estimate is made of: first probes sent and answered before
    /// their first retry came due, first retries due and answered before the
    /// second.
    pub loss_samples: LossCounts,
    /// The retry rounds of silent ports of answering hosts at the end (the
    /// configured retries without a target recall).
    pub retry_rounds: u32,
    /// Retries sent beyond the configured ones (part of `retries`).
    pub extra_retries: u64,
    /// Extra retries the budget held back (a quarter of the first probes).
    pub extra_retries_skipped: u64,
    /// Open ports expectedly missed: `open · q / (1 - q)` with
    /// `q = estimated_loss^(retry_rounds + 1)`. `None` without an estimate.
    pub expected_misses: Option<f64>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ScanSummary {
    /// First probes per second while sending them.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.send_duration.as_secs_f64().max(1e-9)
    }

    /// The loss estimate and the retry rounds, as the core reports them.
    pub fn retry_outcome(&self) -> RetryOutcome {
        RetryOutcome {
            loss: self.loss_samples,
            rounds: self.retry_rounds,
        }
    }
}

/// Why a scan could not run.
#[derive(Debug, Error)]
pub enum ScanError {
    #[error("no route to {0}: add a route or pass --interface and --gateway-mac")]
    NoRoute(IpAddr),
    #[error(
        "targets {0} and {1} are reached through different interfaces; scan them separately or pass --interface"
    )]
    SplitInterfaces(IpAddr, IpAddr),
    #[error("no {0} source address: pass --source-ip")]
    NoSource(&'static str),
    #[error("next hop {0} did not answer ARP/NDP: pass --gateway-mac")]
    NoNeighbour(IpAddr),
    #[error("{0} is this host's own address: Palisade scans other hosts")]
    Local(IpAddr),
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("cannot read the kernel's routes: {0}")]
    Netlink(std::io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

const BATCH: usize = 64;

/// RSTs waiting for sender 0 at most (about 2 MiB): beyond, they are
/// dropped and counted (`rsts_dropped`), so memory stays bounded however
/// many ports answer SYN-ACK.
const RST_QUEUE: usize = 65_536;

/// Shared by the threads of one scan.
struct Shared<'a> {
    sweep: &'a Sweep,
    cfg: &'a ScanConfig,
    path: &'a Path,
    /// Judges replies; holds the cookies the senders sign probes with.
    classifier: ReplyClassifier,
    /// The addresses to ping and which answered.
    pings: Pings,
    lanes: Lanes,
    windows: Vec<RetryWindow>,
    /// The retry policy (configured retries, target recall).
    retry: AdaptiveRetries,
    /// Which hosts answered anything (for adaptive retries).
    hosts: HostsAnswered,
    /// Retry spacing in steps of one lane.
    spacing: u64,
    stop: &'a AtomicBool,
    senders_done: AtomicU64,
    finished: AtomicBool,
    progress: &'a Progress,
    tx_error: std::sync::Mutex<Option<XdpError>>,
}

impl Shared<'_> {
    fn source_port(&self, step: u64) -> u16 {
        let (lo, hi) = self.cfg.source_ports;
        lo + (step % u64::from(hi - lo + 1)) as u16
    }
}

/// The addresses of `ping` the scan has a source address for (the path
/// resolves one for each family of the sweep and of `ping`).
fn pings_with_source(ping: &[IpAddr], path: &Path) -> Vec<IpAddr> {
    ping.iter()
        .copied()
        .filter(|a| match a {
            IpAddr::V4(_) => path.v4.is_some(),
            IpAddr::V6(_) => path.v6.is_some(),
        })
        .collect()
}

/// Runs a scan of `sweep`; calls `found` for each port that answered (once
/// per port) and for each address of `cfg.ping` that answered echo (once). `stop` ends it early (SIGINT). `progress` can be read live.
pub fn run(
    sweep: &Sweep,
    cfg: &ScanConfig,
    stop: &AtomicBool,
    progress: &Progress,
    mut found: impl FnMut(Finding) + Send,
) -> Result<ScanSummary, ScanError> {
    let started = Instant::now();
    let path = resolve_path(sweep, cfg)?;
    tracing::debug!(elapsed = ?started.elapsed(), ?path, "path resolved");
    let rate = capped_rate(cfg.rate, cfg.per_host_rate, sweep.host_count());
    if rate < cfg.rate {
        tracing::debug!(
            rate,
            configured = cfg.rate,
            hosts = sweep.host_count(),
            "rate capped by the per-host rate"
        );
    }
    // About 100 ms of replies at the full rate, within 4 to 16 MiB: the
    // receiver drains it continuously, but a lost reply makes the whole
    // sweep inconclusive, so the ring absorbs the receiver's stalls (a
    // debug build, a busy core) rather than save memory: its pages (mapped
    // twice, for wrap-around) count in our resident memory.
    let ring_bytes = (rate.saturating_mul(RECORD_LEN as u64) / 10).clamp(1 << 22, 1 << 24) as u32;
    let mut filter = ReplyFilter::attach(
        path.ifindex,
        path.v4,
        path.v6,
        cfg.source_ports,
        ring_bytes,
        cfg.accept_vlan,
    )?;

    let sockets = crate::open_queues(path.ifindex, &path.ifname, cfg.queues)?;
    let queues = sockets.len();
    let zero_copy = sockets.iter().all(|s| s.zero_copy());
    tracing::debug!(elapsed = ?started.elapsed(), mode = %filter.mode(), queues, zero_copy, "filter attached, sockets open");

    let key = cfg.cookie_key.unwrap_or_else(|| {
        let mut k = [0u8; 16];
        // A weak key only weakens forgery resistance; fall back to the clock.
        if getrandom::fill(&mut k).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            k = t.to_le_bytes();
        }
        k
    });
    let key = CookieKey::from_bytes(key);
    let lane_rate = (rate / queues as u64).max(1);
    // Half a second of probes, capped so the window stays small (2 Mi steps:
    // 0.5 s up to 4 Mpps per lane, longer beyond).
    let spacing = (lane_rate / 2).clamp(1, 1 << 21);
    let retry = AdaptiveRetries::new(cfg.retries, cfg.target_recall);
    // The window reaches back to the last retry, and to the second round
    // for the loss estimate (answers count by their age).
    let measured = if retry.measures() { 2 } else { 0 };
    let span = spacing * u64::from(retry.max_rounds().max(measured)) + BATCH as u64;
    let shared = Shared {
        sweep,
        cfg,
        path: &path,
        classifier: ReplyClassifier::new(&key, path.v4, path.v6),
        pings: Pings::new(&pings_with_source(&cfg.ping, &path)),
        lanes: Lanes::new(cfg.shard, queues),
        windows: (0..queues)
            .map(|_| RetryWindow::new(span, spacing))
            .collect(),
        retry,
        hosts: HostsAnswered::new(sweep.host_count(), retry.target().is_some()),
        spacing,
        stop,
        senders_done: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        progress,
        tx_error: std::sync::Mutex::new(None),
    };
    let planned = sweep.shard_len(cfg.shard).saturating_sub(cfg.resume);

    let (rst_tx, rst_rx) = mpsc::sync_channel::<Rst>(RST_QUEUE);
    let mut summary = ScanSummary {
        planned,
        interface: path.ifname.clone(),
        attach_mode: Some(filter.mode()),
        zero_copy,
        queues,
        ..Default::default()
    };
    let mut counters = Vec::new();
    std::thread::scope(|scope| -> Result<(), ScanError> {
        let shared = &shared;
        let mut handles = Vec::new();
        let mut rst_rx = Some(rst_rx);
        for (q, sock) in sockets.into_iter().enumerate() {
            let rsts = if q == 0 { rst_rx.take() } else { None };
            let h = std::thread::Builder::new()
                .name(format!("palisade-tx{q}"))
                .spawn_scoped(scope, move || send_lane(shared, q, sock, lane_rate, rsts))
                .map_err(ScanError::Thread)?;
            handles.push(h);
        }
        receive::receive(shared, &mut filter, &rst_tx, &mut summary, &mut found);
        shared.finished.store(true, Ordering::Release);
        for h in handles {
            if let Ok(c) = h.join() {
                counters.push(c);
            }
        }
        Ok(())
    })?;
    if let Some(e) = shared.tx_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e.into());
    }
    let mut loss = LossCounts::default();
    for c in counters {
        loss.add(shared.windows[c.lane].loss(c.first_sent, c.retry_due));
        summary.extra_retries += c.extra_retries;
        summary.extra_retries_skipped += c.extra_retries_skipped;
        summary.rsts_sent += c.rsts;
        summary.tx_busy += c.tx.busy;
        summary.send_duration = summary.send_duration.max(c.main_pass);
        summary.echo_sent += c.echo_sent;
    }
    summary.sent = progress.sent.load(Ordering::Relaxed);
    summary.retries = progress.retries.load(Ordering::Relaxed);
    let outcome = retry.outcome(loss);
    summary.loss_samples = loss;
    summary.estimated_loss = outcome.estimated_loss();
    summary.retry_rounds = outcome.rounds;
    summary.expected_misses = outcome.expected_misses(summary.open);
    let counters = filter.counters().unwrap_or_default();
    summary.ringbuf_full = counters.ringbuf_full;
    summary.filter_invalid = counters.invalid;
    summary.interrupted = stop.load(Ordering::Relaxed);
    summary.duration = started.elapsed();
    Ok(summary)
}
