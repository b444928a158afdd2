//! A scan: the pure core (`probe`, `wire`) wired to the data path (`xdp`).
//!
//! One sender thread per TX queue walks its part of the sweep, paced, writing
//! SYNs straight into UMEM; one receiver thread drains the filter's ring
//! buffer, validates cookies, reports each (host, port) once and asks sender 0
//! to answer SYN-ACKs with RSTs.
//!
//! Retries are loss-aware and spaced in time with bounded memory: a sender at
//! step `m` of its sequence also re-sends step `m - r*W` for each retry `r`,
//! unless a reply for it arrived. `W` is half a second of probes at the
//! configured rate, so retries go out 0.5 s, 1 s, ... after the first probe,
//! and the "answered" bits live in a ring of a few `W` -- not in a bitmap of
//! the whole sweep.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::netlink::Rtnl;
use crate::{AttachMode, ReplyFilter, TxSocket, XdpError};
use palisade_core::probe::{CookieKey, Cookies, Pacer, Probe, Shard, Sweep, Target, Verdict};
use palisade_core::wire::{MacAddr, SynTemplate, write_rst};

/// Everything a scan needs to know.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub shard: Shard,
    /// Skip the first `resume` probes of the shard.
    pub resume: u64,
    /// Probes per second (at least 1).
    pub rate: u64,
    /// Extra probes for a port that did not answer.
    pub retries: u32,
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
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            shard: Shard::WHOLE,
            resume: 0,
            rate: DEFAULT_RATE,
            retries: 1,
            wait: Duration::from_secs(1),
            interface: None,
            source_v4: None,
            source_v6: None,
            source_ports: DEFAULT_SOURCE_PORTS,
            gateway_mac: None,
            queues: None,
            report_closed: false,
            cookie_key: None,
        }
    }
}

/// Default probes per second.
pub const DEFAULT_RATE: u64 = 100_000;
/// Default source ports: above Linux's ephemeral range (32768-60999).
pub const DEFAULT_SOURCE_PORTS: (u16, u16) = (61_000, 61_063);

/// One finding: a port that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub ip: IpAddr,
    pub port: u16,
    pub open: bool,
    pub ttl: u8,
    /// When the reply was read.
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

/// What a scan did.
#[derive(Debug, Clone, Default)]
pub struct ScanSummary {
    /// Probes in this shard (after `resume`).
    pub planned: u64,
    pub sent: u64,
    pub retries: u64,
    /// Valid replies (first per port).
    pub replies: u64,
    /// Replies that failed cookie validation (forged, stale, unrelated).
    pub invalid: u64,
    /// Valid replies for a port already reported.
    pub duplicates: u64,
    pub open: u64,
    pub closed: u64,
    pub rsts_sent: u64,
    /// Replies the filter lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Transmit kicks the kernel deferred.
    pub tx_busy: u64,
    /// Whole scan, from start to the end of the wait.
    pub duration: Duration,
    /// Sending the first probes: from the first to the last.
    pub send_duration: Duration,
    pub interface: String,
    pub attach_mode: Option<AttachMode>,
    pub zero_copy: bool,
    pub queues: usize,
    /// The scan was stopped before it finished.
    pub interrupted: bool,
}

impl ScanSummary {
    /// First probes per second while sending them.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.send_duration.as_secs_f64().max(1e-9)
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
    #[error(
        "permission denied ({0}): scanning needs root, or CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF"
    )]
    Permission(String),
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("cannot read the kernel's routes: {0}")]
    Netlink(std::io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// Maps "operation not permitted" to a message that says what to do.
fn permission(e: XdpError) -> ScanError {
    let text = e.to_string();
    if text.contains("EPERM")
        || text.contains("Operation not permitted")
        || text.contains("permission denied")
        || text.contains("PermissionDenied")
    {
        ScanError::Permission(text)
    } else {
        ScanError::Xdp(e)
    }
}

/// Where probes leave from: interface, addresses, MACs.
#[derive(Debug, Clone)]
struct Path {
    ifindex: u32,
    ifname: String,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

fn resolve_path(sweep: &Sweep, cfg: &ScanConfig) -> Result<Path, ScanError> {
    let (first4, first6) = sweep.first_targets();
    let mut rtnl = Rtnl::new().map_err(ScanError::Netlink)?;
    let forced_if = match &cfg.interface {
        Some(name) => Some(crate::ifindex(name)?),
        None => None,
    };
    let mut ifindex = forced_if;
    let mut next_hop = None;
    let (mut v4, mut v6) = (cfg.source_v4, cfg.source_v6);
    let mut first_ip: Option<IpAddr> = None;
    for target in [first4, first6].into_iter().flatten() {
        let ip = IpAddr::from(target);
        let route = match rtnl.route(ip) {
            Ok(r) => Some(r),
            Err(_) if forced_if.is_some() => None,
            Err(_) => return Err(ScanError::NoRoute(ip)),
        };
        if let Some(route) = route {
            if route.local {
                return Err(ScanError::Local(ip));
            }
            match (ifindex, forced_if, first_ip) {
                (Some(i), None, Some(other)) if i != route.ifindex => {
                    return Err(ScanError::SplitInterfaces(other, ip));
                }
                (None, _, _) => ifindex = Some(route.ifindex),
                _ => {}
            }
            match route.source {
                Some(IpAddr::V4(s)) if v4.is_none() => v4 = Some(s),
                Some(IpAddr::V6(s)) if v6.is_none() => v6 = Some(s),
                _ => {}
            }
            next_hop.get_or_insert(route.gateway.unwrap_or(ip));
        } else {
            next_hop.get_or_insert(ip);
        }
        first_ip.get_or_insert(ip);
    }
    if first4.is_some() && v4.is_none() {
        return Err(ScanError::NoSource("IPv4"));
    }
    if first6.is_some() && v6.is_none() {
        return Err(ScanError::NoSource("IPv6"));
    }
    let ifindex = ifindex
        .ok_or_else(|| ScanError::NoRoute(first_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))))?;
    let ifname = crate::ifname(ifindex)?;
    let src_mac = crate::mac_of(&ifname)?;
    let dst_mac = match cfg.gateway_mac {
        Some(m) => m,
        None => {
            let hop = next_hop.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            MacAddr(
                rtnl.next_hop_mac(ifindex, hop, Duration::from_secs(3))
                    .map_err(|_| ScanError::NoNeighbour(hop))?,
            )
        }
    };
    Ok(Path {
        ifindex,
        ifname,
        src_mac,
        dst_mac,
        v4,
        v6,
    })
}

/// The part of the shard one sender walks: steps `j` of sub-shard
/// `index + q*n` of `n*Q`, i.e. shard-local probes `k = q + j*Q`.
#[derive(Debug, Clone, Copy)]
struct Lane {
    shard: Shard,
    first: u64,
}

fn lane(shard: Shard, queues: u64, q: u64, resume: u64) -> Lane {
    Lane {
        shard: Shard {
            index: shard.index + q * shard.count,
            count: shard.count * queues,
        },
        first: (resume + queues - 1 - q) / queues,
    }
}

/// "Answered" bits for a sliding window of one lane's steps.
#[derive(Debug)]
struct Window {
    bits: Vec<AtomicU64>,
    mask: u64,
    /// Next step the sender will take.
    progress: AtomicU64,
}

impl Window {
    fn new(span: u64) -> Self {
        let size = (span * 2).next_power_of_two().max(64);
        Window {
            bits: (0..size / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: size - 1,
            progress: AtomicU64::new(0),
        }
    }

    fn slot(&self, step: u64) -> (&AtomicU64, u64) {
        let i = step & self.mask;
        (&self.bits[(i / 64) as usize], 1 << (i % 64))
    }

    fn clear(&self, step: u64) {
        let (w, b) = self.slot(step);
        w.fetch_and(!b, Ordering::Relaxed);
    }

    /// Marks `step` answered if it is still inside the window. Returns
    /// false if it was marked already (a duplicate reply); a step outside the
    /// window (a very late reply) counts as new.
    fn mark(&self, step: u64) -> bool {
        let progress = self.progress.load(Ordering::Relaxed);
        if step < progress && progress - step <= self.mask / 2 {
            let (w, b) = self.slot(step);
            return w.fetch_or(b, Ordering::Relaxed) & b == 0;
        }
        true
    }

    fn answered(&self, step: u64) -> bool {
        let (w, b) = self.slot(step);
        w.load(Ordering::Relaxed) & b != 0
    }
}

/// An RST to send for a SYN-ACK: to `target:tport` from our `lport`.
#[derive(Debug, Clone, Copy)]
struct Rst {
    target: Target,
    tport: u16,
    lport: u16,
    seq: u32,
}

const BATCH: usize = 64;

/// Shared by the threads of one scan.
struct Shared<'a> {
    sweep: &'a Sweep,
    cfg: &'a ScanConfig,
    path: &'a Path,
    cookies4: Option<Cookies>,
    cookies6: Option<Cookies>,
    lanes: Vec<Lane>,
    windows: Vec<Window>,
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

    fn cookies(&self, t: Target) -> Option<&Cookies> {
        match t {
            Target::V4(_) => self.cookies4.as_ref(),
            Target::V6(_) => self.cookies6.as_ref(),
        }
    }
}

/// Runs a scan of `sweep`; calls `found` for each port that answered (once
/// per port). `stop` ends it early (SIGINT). `progress` can be read live.
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
    // About 20 ms of replies at the full rate, within 1 to 8 MiB: the
    // receiver drains it continuously, and its pages (mapped twice, for
    // wrap-around) count in our resident memory.
    let ring_bytes = (cfg.rate.saturating_mul(48) / 50).clamp(1 << 20, 1 << 23) as u32;
    let mut filter =
        ReplyFilter::attach(path.ifindex, path.v4, path.v6, cfg.source_ports, ring_bytes)
            .map_err(permission)?;

    let sockets = crate::open_queues(path.ifindex, &path.ifname, cfg.queues).map_err(permission)?;
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
    let lanes: Vec<Lane> = (0..queues as u64)
        .map(|q| lane(cfg.shard, queues as u64, q, cfg.resume))
        .collect();
    let lane_rate = (cfg.rate / queues as u64).max(1);
    // Half a second of probes, capped so the window stays small (2 Mi steps:
    // 0.5 s up to 4 Mpps per lane, longer beyond).
    let spacing = (lane_rate / 2).clamp(1, 1 << 21);
    let span = spacing * u64::from(cfg.retries) + BATCH as u64;
    let shared = Shared {
        sweep,
        cfg,
        path: &path,
        cookies4: path.v4.map(|a| Cookies::new(&key, Target::V4(a.into()))),
        cookies6: path.v6.map(|a| Cookies::new(&key, Target::V6(a.into()))),
        windows: lanes.iter().map(|_| Window::new(span)).collect(),
        lanes,
        spacing,
        stop,
        senders_done: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        progress,
        tx_error: std::sync::Mutex::new(None),
    };
    let planned = sweep.shard_len(cfg.shard).saturating_sub(cfg.resume);

    let (rst_tx, rst_rx) = mpsc::channel::<Rst>();
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
        receive(shared, &mut filter, &rst_tx, &mut summary, &mut found);
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
    for c in counters {
        summary.rsts_sent += c.rsts;
        summary.tx_busy += c.tx.busy;
        summary.send_duration = summary.send_duration.max(c.main_pass);
    }
    summary.sent = progress.sent.load(Ordering::Relaxed);
    summary.retries = progress.retries.load(Ordering::Relaxed);
    summary.ringbuf_full = filter.counters().map(|c| c.ringbuf_full).unwrap_or(0);
    summary.interrupted = stop.load(Ordering::Relaxed);
    summary.duration = started.elapsed();
    Ok(summary)
}

#[derive(Debug, Default)]
struct LaneCounters {
    rsts: u64,
    /// Time from the lane's start to its last first probe.
    main_pass: Duration,
    tx: crate::TxCounters,
}

/// One sender: walks its lane, paced, with retries; sender 0 also sends RSTs.
fn send_lane(
    shared: &Shared<'_>,
    q: usize,
    mut sock: TxSocket,
    rate: u64,
    rsts: Option<mpsc::Receiver<Rst>>,
) -> LaneCounters {
    let mut counters = LaneCounters::default();
    let lane = shared.lanes[q];
    let window = &shared.windows[q];
    let sweep = shared.sweep;
    let path = shared.path;
    let t4 = path
        .v4
        .map(|a| SynTemplate::v4(path.src_mac, path.dst_mac, a, 64, 65_535, 1460));
    let t6 = path
        .v6
        .map(|a| SynTemplate::v6(path.src_mac, path.dst_mac, a, 64, 65_535, 1440));
    let lane_len = sweep.shard_len(lane.shard);
    let retries = u64::from(shared.cfg.retries);
    let last_step = lane_len + retries * shared.spacing;
    // Up to a millisecond of credit: a sender that slept (timer slack is
    // tens of microseconds) catches up instead of falling behind.
    let burst = (rate / 1000).clamp(BATCH as u64, 1 << 16) as u32;
    let mut pacer = Pacer::new(Some(rate), burst);
    let epoch = Instant::now();
    let mut step = lane.first;
    let mut iter = sweep.iter(lane.shard, lane.first);
    let mut probes = [Probe {
        target: Target::V4(0),
        port: 0,
    }; BATCH];
    // (step, probe, is_retry) of this batch.
    let mut batch: Vec<(u64, Probe, bool)> = Vec::with_capacity(BATCH * 4);
    let fail = |e: XdpError| {
        if let Ok(mut slot) = shared.tx_error.lock() {
            slot.get_or_insert(e);
        }
        shared.stop.store(true, Ordering::Relaxed);
    };

    let write_probe = |frame: &mut [u8], step: u64, p: &Probe| -> Option<usize> {
        let sport = shared.source_port(step);
        let cookies = shared.cookies(p.target)?;
        let seq = cookies.seq(sport, p.target, p.port);
        match p.target {
            Target::V4(d) => t4.as_ref()?.write_v4(frame, d, sport, p.port, seq).ok(),
            Target::V6(d) => t6.as_ref()?.write_v6(frame, d, sport, p.port, seq).ok(),
        }
    };

    // In the tail after the last first probe only retries are left: stop as
    // soon as every step that could still be retried has been answered.
    let mut pending = lane.first;
    let mut main_done: Option<Duration> = None;
    while step < last_step && !shared.stop.load(Ordering::Relaxed) {
        if step >= lane_len {
            main_done.get_or_insert_with(|| epoch.elapsed());
            pending = pending.max(step.saturating_sub(retries * shared.spacing));
            while pending < lane_len && window.answered(pending) {
                pending += 1;
            }
            if pending >= lane_len {
                break;
            }
        }
        sock.reclaim();
        if let Some(rx) = &rsts {
            counters.rsts += send_rsts(shared, &mut sock, rx);
        }
        let now = epoch.elapsed().as_nanos() as u64;
        let quota = pacer.quota(now) as usize;
        if quota == 0 {
            let wait = pacer.wait_for(now, BATCH as u32);
            if let Err(e) = sock.kick() {
                fail(e);
                break;
            }
            std::thread::sleep(Duration::from_nanos(wait.min(1_000_000)));
            continue;
        }
        let steps = (quota as u64).min(last_step - step).min(BATCH as u64);
        // First probes of this batch.
        batch.clear();
        let fresh = if step < lane_len {
            let want = steps.min(lane_len - step) as usize;
            let n = iter.next_batch(&mut probes[..want]);
            for (i, p) in probes[..n].iter().enumerate() {
                window.clear(step + i as u64);
                batch.push((step + i as u64, *p, false));
            }
            n
        } else {
            0
        };
        // Retries of the steps `r * spacing` back, unless they were answered.
        for s in step..step + steps {
            for r in 1..=retries {
                let Some(back) = s.checked_sub(r * shared.spacing) else {
                    break;
                };
                if back < lane.first || back >= lane_len || window.answered(back) {
                    continue;
                }
                let position = lane.shard.index + back * lane.shard.count;
                batch.push((back, sweep.probe_at(position), true));
            }
        }
        window.progress.store(step + steps, Ordering::Relaxed);
        let mut done = 0;
        while done < batch.len() && !shared.stop.load(Ordering::Relaxed) {
            let n = sock.queue(batch.len() - done, |i, frame| {
                let (s, p, _) = &batch[done + i];
                write_probe(frame, *s, p)
            });
            done += n;
            if let Err(e) = sock.kick() {
                fail(e);
                break;
            }
            if n == 0 {
                sock.reclaim();
                std::thread::yield_now();
            }
        }
        let retried = batch.iter().filter(|b| b.2).count() as u64;
        shared
            .progress
            .sent
            .fetch_add(fresh as u64, Ordering::Relaxed);
        shared
            .progress
            .retries
            .fetch_add(retried, Ordering::Relaxed);
        // The pace counts steps; retries ride along with them.
        pacer.spend(steps as u32);
        step += steps;
    }
    let _ = sock.kick();
    counters.main_pass = main_done.unwrap_or_else(|| epoch.elapsed());
    tracing::debug!(lane = q, elapsed = ?epoch.elapsed(), main_pass = ?counters.main_pass, step, "sender done");
    shared.senders_done.fetch_add(1, Ordering::Release);
    // Sender 0 keeps answering SYN-ACKs until the receiver is done.
    if let Some(rx) = &rsts {
        while !shared.finished.load(Ordering::Acquire) {
            sock.reclaim();
            counters.rsts += send_rsts(shared, &mut sock, rx);
            let _ = sock.kick();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    while sock.in_flight() > 0 && Instant::now() < deadline {
        let _ = sock.kick();
        sock.reclaim();
        std::thread::sleep(Duration::from_millis(1));
    }
    counters.tx = sock.counters();
    counters
}

fn send_rsts(shared: &Shared<'_>, sock: &mut TxSocket, rx: &mpsc::Receiver<Rst>) -> u64 {
    let pending: Vec<Rst> = rx.try_iter().take(BATCH).collect();
    if pending.is_empty() {
        return 0;
    }
    let path = shared.path;
    let n = sock.queue(pending.len(), |i, frame| {
        let r = pending[i];
        let src: IpAddr = match r.target {
            Target::V4(_) => IpAddr::V4(path.v4?),
            Target::V6(_) => IpAddr::V6(path.v6?),
        };
        write_rst(
            frame,
            path.src_mac,
            path.dst_mac,
            src,
            r.target.into(),
            r.lport,
            r.tport,
            r.seq,
            64,
        )
        .ok()
    });
    let _ = sock.kick();
    n as u64
}

/// The receiver: runs until the senders are done and `wait` has passed (or
/// the scan is stopped), validating and reporting replies.
fn receive(
    shared: &Shared<'_>,
    filter: &mut ReplyFilter,
    rsts: &mpsc::Sender<Rst>,
    summary: &mut ScanSummary,
    found: &mut impl FnMut(Finding),
) {
    let lanes = shared.lanes.len() as u64;
    let shard = shared.cfg.shard;
    let mut reported: HashSet<(IpAddr, u16)> = HashSet::new();
    let mut senders_done_at: Option<Instant> = None;
    let mut stopped_at: Option<Instant> = None;
    loop {
        filter.drain(|r| {
            let target = Target::from(r.source());
            let Some(cookies) = shared.cookies(target) else {
                summary.invalid += 1;
                return;
            };
            let verdict = cookies.validate(target, r.src_port, r.dst_port, r.tcp_flags, r.ack);
            if verdict == Verdict::Invalid {
                summary.invalid += 1;
                return;
            }
            let probe = Probe {
                target,
                port: r.src_port,
            };
            // Which lane and step sent it: mark it answered so no retry
            // follows. Closed ports are deduplicated by that mark alone, so
            // memory stays bounded however many ports answer RST.
            let mut new_step = true;
            if let Some(pos) = shared.sweep.position_of(probe)
                && pos >= shard.index
                && (pos - shard.index).is_multiple_of(shard.count)
            {
                let k = (pos - shard.index) / shard.count;
                new_step = shared.windows[(k % lanes) as usize].mark(k / lanes);
            }
            let ip = r.source();
            if verdict == Verdict::Open {
                // Politeness: tear down the half-open connection.
                let _ = rsts.send(Rst {
                    target,
                    tport: r.src_port,
                    lport: r.dst_port,
                    seq: r.ack,
                });
            }
            let first = match verdict {
                Verdict::Open => reported.insert((ip, r.src_port)),
                _ => new_step,
            };
            if !first {
                summary.duplicates += 1;
                return;
            }
            summary.replies += 1;
            shared.progress.replies.fetch_add(1, Ordering::Relaxed);
            if verdict == Verdict::Open {
                summary.open += 1;
                shared.progress.open.fetch_add(1, Ordering::Relaxed);
            } else {
                summary.closed += 1;
                if !shared.cfg.report_closed {
                    return;
                }
            }
            found(Finding {
                ip,
                port: r.src_port,
                open: verdict == Verdict::Open,
                ttl: r.ttl,
                time: std::time::SystemTime::now(),
            });
        });
        let now = Instant::now();
        if shared.stop.load(Ordering::Relaxed) {
            // Interrupted: a short grace period for replies already on the way.
            let at = *stopped_at.get_or_insert(now);
            if now - at > Duration::from_millis(200) {
                break;
            }
        } else if shared.senders_done.load(Ordering::Acquire) == lanes {
            let at = *senders_done_at.get_or_insert(now);
            if now - at >= shared.cfg.wait {
                break;
            }
        }
        // The filter wakes us per batch of replies; the timeout bounds the
        // latency of the last few.
        let _ = filter.wait(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_split_a_shard_and_honour_resume() {
        let shard = Shard { index: 1, count: 3 };
        for queues in 1..5u64 {
            for resume in 0..9u64 {
                let mut ks: Vec<u64> = Vec::new();
                for q in 0..queues {
                    let l = lane(shard, queues, q, resume);
                    for j in l.first..l.first + 5 {
                        let pos = l.shard.index + j * l.shard.count;
                        assert_eq!((pos - shard.index) % shard.count, 0);
                        ks.push((pos - shard.index) / shard.count);
                    }
                }
                ks.sort_unstable();
                // Every shard-local index from `resume` on is covered once.
                let want: Vec<u64> = (resume..).take(ks.len()).collect();
                let got: Vec<u64> = ks.iter().copied().filter(|&k| k < resume + 5).collect();
                assert_eq!(
                    &got[..],
                    &want[..got.len()],
                    "queues {queues} resume {resume}"
                );
                assert!(ks.iter().all(|&k| k >= resume));
                let mut dedup = ks.clone();
                dedup.dedup();
                assert_eq!(dedup.len(), ks.len());
            }
        }
    }

    #[test]
    fn window_marks_only_recent_steps() {
        let w = Window::new(100);
        w.progress.store(150, Ordering::Relaxed);
        assert!(w.mark(149));
        assert!(w.answered(149));
        assert!(!w.mark(149), "a second reply is a duplicate");
        w.mark(150); // not sent yet
        assert!(!w.answered(150));
        w.clear(149);
        assert!(!w.answered(149));
        w.progress.store(10_000, Ordering::Relaxed);
        w.mark(149); // long gone: its slot belongs to a newer step
        assert!(!w.answered(149));
    }
}
