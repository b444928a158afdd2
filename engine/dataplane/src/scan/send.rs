//! The senders: one thread per transmit queue walks its lane of the shard,
//! paced, writing SYNs straight into UMEM, and re-sends the steps of its
//! retry window that were not answered, as its `RetryLedger` (core: the
//! loss estimate, adaptive rounds, the budget) says. Sender 0 also answers
//! SYN-ACKs with RSTs, so that targets do not hold half-open connections,
//! and sends the echo requests for host reachability (paced with its
//! probes).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use palisade_core::probe::retry::{Due, RetryLedger};
use palisade_core::probe::{Pacer, Probe, Target};
use palisade_core::wire::{SynTemplate, write_echo_request, write_rst};

use super::echo::PingRounds;
use super::{BATCH, Shared};
use crate::{TxCounters, TxSocket, XdpError};

/// An RST to send for a SYN-ACK: to `target:tport` from our `lport`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rst {
    pub target: Target,
    pub tport: u16,
    pub lport: u16,
    pub seq: u32,
}

#[derive(Debug, Default)]
pub(super) struct LaneCounters {
    pub rsts: u64,
    /// Echo requests sent.
    pub echo_sent: u64,
    /// Time from the lane's start to its last first probe.
    pub main_pass: Duration,
    /// The lane.
    pub lane: usize,
    /// First probes sent, and first retries that came due (the loss
    /// estimate's denominators; its window counts the answers).
    pub first_sent: u64,
    pub retry_due: u64,
    /// Retries beyond the configured ones, sent and held back by the budget.
    pub extra_retries: u64,
    pub extra_retries_skipped: u64,
    pub tx: TxCounters,
}

/// One sender: walks its lane, paced, with retries; sender 0 also sends RSTs.
pub(super) fn send_lane(
    shared: &Shared<'_>,
    q: usize,
    mut sock: TxSocket,
    rate: u64,
    rsts: Option<mpsc::Receiver<Rst>>,
) -> LaneCounters {
    let mut counters = LaneCounters {
        lane: q,
        ..LaneCounters::default()
    };
    let lane = shared.lanes.lane(q, shared.cfg.resume);
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
    let spacing = shared.spacing;
    // Steps further back than this have had every round they can get.
    let max_back = u64::from(shared.retry.max_rounds()) * spacing;
    let mut ledger = RetryLedger::new(shared.retry, max_back + BATCH as u64);
    let last_step = lane_len + max_back;
    // First probes sent, and first retries due, before `step`.
    let first_sent = |step: u64| step.min(lane_len).saturating_sub(lane.first);
    let retry_due = |step: u64| first_sent(step.saturating_sub(spacing));
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
        let cookies = shared.classifier.cookies(p.target)?;
        let seq = cookies.seq(sport, p.target, p.port);
        match p.target {
            Target::V4(d) => t4.as_ref()?.write_v4(frame, d, sport, p.port, seq).ok(),
            Target::V6(d) => t6.as_ref()?.write_v6(frame, d, sport, p.port, seq).ok(),
        }
    };

    // Sender 0 pings: round 0 at once, the re-sends half a second apart.
    let mut ping_rounds = (q == 0).then(|| PingRounds::new(shared.cfg.retries));
    let mut ping_batch: Vec<IpAddr> = Vec::with_capacity(BATCH);

    // In the tail after the last first probe only retries are left: stop as
    // soon as every step that could still be retried has been answered.
    let mut pending = lane.first;
    let mut main_done: Option<Duration> = None;
    while step < last_step && !shared.stop.load(Ordering::Relaxed) {
        if step >= lane_len {
            main_done.get_or_insert_with(|| epoch.elapsed());
            pending = pending.max(step.saturating_sub(max_back));
            while pending < lane_len
                && (window.answered(pending) || ledger.exhausted(pending, step, spacing))
            {
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
        if let Some(rounds) = ping_rounds.as_mut() {
            rounds.take(
                &shared.pings,
                epoch.elapsed(),
                quota.min(BATCH),
                &mut ping_batch,
            );
            if !ping_batch.is_empty() {
                match send_pings(shared, &mut sock, &ping_batch) {
                    Ok(n) => {
                        counters.echo_sent += n;
                        pacer.spend(n as u32);
                    }
                    Err(e) => {
                        fail(e);
                        break;
                    }
                }
                continue;
            }
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
        // Retries of the steps `r * spacing` back, as the ledger says: not
        // for an answered step; the configured rounds for the others, more
        // for silent steps of answering hosts. Per step and round: one
        // atomic load and a few bit operations on the sender's own ledger;
        // the loss estimate and the rounds are updated once a batch (two
        // atomic loads).
        ledger.observe(window.loss(first_sent(step), retry_due(step)));
        let visits = ledger.visits();
        for s in step..step + steps {
            for r in 1..=visits {
                let Some(back) = s.checked_sub(u64::from(r) * spacing) else {
                    break;
                };
                if back < lane.first || back >= lane_len {
                    continue;
                }
                let position = lane.shard.index + back * lane.shard.count;
                match ledger.due(back, r, window.answered(back)) {
                    Due::Skip => {}
                    Due::Retry => batch.push((back, sweep.probe_at(position), true)),
                    Due::RetryAndNoteHost => {
                        let (host, probe) = sweep.indexed_probe_at(position);
                        ledger.note_host(back, shared.hosts.answered(host));
                        batch.push((back, probe, true));
                    }
                }
            }
        }
        window.advance(step + steps);
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
    counters.first_sent = first_sent(step);
    counters.retry_due = retry_due(step);
    counters.extra_retries = ledger.extra();
    counters.extra_retries_skipped = ledger.skipped();
    // Sender 0: the echo rounds still due (a small sweep ends before them).
    if let Some(rounds) = ping_rounds.as_mut() {
        while !shared.stop.load(Ordering::Relaxed) && !rounds.done(&shared.pings) {
            sock.reclaim();
            if let Some(rx) = &rsts {
                counters.rsts += send_rsts(shared, &mut sock, rx);
            }
            let elapsed = epoch.elapsed();
            rounds.take(&shared.pings, elapsed, BATCH, &mut ping_batch);
            if ping_batch.is_empty() {
                let due = rounds.next_due().unwrap_or(elapsed);
                let nap = due.saturating_sub(elapsed).min(Duration::from_millis(5));
                std::thread::sleep(nap.max(Duration::from_micros(100)));
                continue;
            }
            match send_pings(shared, &mut sock, &ping_batch) {
                Ok(n) => counters.echo_sent += n,
                Err(e) => {
                    fail(e);
                    break;
                }
            }
        }
    }
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

/// Sends one echo request to each of `addrs` (at most a batch); returns how
/// many went out.
fn send_pings(shared: &Shared<'_>, sock: &mut TxSocket, addrs: &[IpAddr]) -> Result<u64, XdpError> {
    let path = shared.path;
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_millis(200);
    while done < addrs.len() && !shared.stop.load(Ordering::Relaxed) {
        let n = sock.queue(addrs.len() - done, |i, frame| {
            let dst = addrs[done + i];
            let target = Target::from(dst);
            let (id, seq) = shared.classifier.cookies(target)?.echo(target);
            let src: IpAddr = match dst {
                IpAddr::V4(_) => IpAddr::V4(path.v4?),
                IpAddr::V6(_) => IpAddr::V6(path.v6?),
            };
            write_echo_request(frame, path.src_mac, path.dst_mac, src, dst, id, seq, 64).ok()
        });
        done += n;
        sock.kick()?;
        if n == 0 {
            if Instant::now() > deadline {
                break;
            }
            sock.reclaim();
            std::thread::yield_now();
        }
    }
    Ok(done as u64)
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
