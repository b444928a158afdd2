//! The receiver: drains the reply filter's ring buffer, lets the core's
//! classifier judge each reply, marks the probe it answers so that no retry
//! follows (and its host as one that answers), asks sender 0 to tear down half-open connections, and reports
//! each port once and each address that answered echo once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use palisade_core::classify::ReplyClass;
use palisade_core::monitor::Ports;

use super::send::Rst;
use super::{Answer, Finding, ScanSummary, Shared};
use crate::{ReplyFilter, ReplyRecord};

/// Replies read per reading of the clock: at a million replies a second
/// their times are at most a quarter of a millisecond late.
const CLOCK_EVERY: u32 = 256;

/// Runs until the senders are done and `wait` has passed (or the scan is
/// stopped), validating and reporting replies.
pub(super) fn receive(
    shared: &Shared<'_>,
    filter: &mut ReplyFilter,
    rsts: &mpsc::SyncSender<Rst>,
    summary: &mut ScanSummary,
    found: &mut impl FnMut(Finding),
) {
    let mut replies = Replies {
        shared,
        rsts,
        summary,
        reported: HashMap::new(),
        now: SystemTime::now(),
    };
    let lanes = shared.lanes.count() as u64;
    let mut senders_done_at: Option<Instant> = None;
    let mut stopped_at: Option<Instant> = None;
    loop {
        let mut read = 0u32;
        filter.drain(|record| {
            if read.is_multiple_of(CLOCK_EVERY) {
                replies.now = SystemTime::now();
            }
            read = read.wrapping_add(1);
            if let Some(finding) = replies.take(&record) {
                found(finding);
            }
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

/// What the receiver knows between replies.
struct Replies<'s, 'a> {
    shared: &'s Shared<'a>,
    rsts: &'s mpsc::SyncSender<Rst>,
    summary: &'s mut ScanSummary,
    /// Open ports found, per address: a SYN-ACK is reported once however
    /// often it comes (targets retransmit them). Compact sets, so a host
    /// that answers on every port costs 8 KiB, not 65,535 entries. Closed
    /// ports are deduplicated by the retry window alone.
    reported: HashMap<IpAddr, Ports>,
    /// When the replies being read were read: the clock is read once per
    /// [`CLOCK_EVERY`] replies, not per reply (on a VM a read costs about
    /// 50 ns, twice what filing a reply costs the daemon).
    now: SystemTime,
}

impl Replies<'_, '_> {
    /// Takes one reply: counts it, marks its probe answered, has a SYN-ACK
    /// torn down, and returns the finding to report, if it is a new one.
    fn take(&mut self, record: &ReplyRecord) -> Option<Finding> {
        let shared = self.shared;
        let class = match (record.reply(), record.echo()) {
            (Some(tcp), _) => shared.classifier.classify(&tcp),
            (None, Some(echo)) => shared.classifier.classify_echo(&echo),
            (None, None) => ReplyClass::Invalid,
        };
        let (probe, open) = match class {
            ReplyClass::Open(p) => (p, true),
            ReplyClass::Closed(p) => (p, false),
            ReplyClass::Echo(target) => return self.echo(IpAddr::from(target), record.ttl),
            ReplyClass::Invalid => {
                self.summary.invalid += 1;
                return None;
            }
        };
        // Which lane and step sent it: mark it answered so no retry follows,
        // and its host as one that answers (for adaptive retries).
        let located = shared.sweep.locate(probe);
        if let Some((host, _)) = located {
            shared.hosts.mark(host);
        }
        let new_step = located
            .and_then(|(_, position)| shared.lanes.locate(position))
            .is_none_or(|at| shared.windows[at.lane].mark(at.step));
        let ip = IpAddr::from(probe.target);
        if open {
            // Politeness: tear down the half-open connection. Best effort:
            // when sender 0 falls behind (a host that answers every port),
            // the RST is dropped rather than queued without bound; the
            // target times the half-open connection out by itself.
            let rst = Rst {
                target: probe.target,
                tport: probe.port,
                lport: record.dst_port,
                seq: record.ack,
            };
            if let Err(mpsc::TrySendError::Full(_)) = self.rsts.try_send(rst) {
                self.summary.rsts_dropped += 1;
            }
        }
        let first = if open {
            self.reported.entry(ip).or_default().insert(probe.port)
        } else {
            new_step
        };
        if !first {
            self.summary.duplicates += 1;
            return None;
        }
        self.summary.replies += 1;
        shared.progress.replies.fetch_add(1, Ordering::Relaxed);
        if open {
            self.summary.open += 1;
            shared.progress.open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.summary.closed += 1;
            if !shared.cfg.report_closed {
                return None;
            }
        }
        Some(Finding {
            ip,
            host: located.map(|(host, _)| host),
            port: probe.port,
            answer: if open { Answer::Open } else { Answer::Closed },
            ttl: record.ttl,
            time: self.now,
        })
    }

    /// A valid echo reply from `ip`: reported on its first answer, if we
    /// pinged it (a valid cookie for an address we did not ping cannot be
    /// an answer of this scan: invalid).
    fn echo(&mut self, ip: IpAddr, ttl: u8) -> Option<Finding> {
        match self.shared.pings.mark(ip) {
            None => {
                self.summary.invalid += 1;
                None
            }
            Some(false) => {
                self.summary.duplicates += 1;
                None
            }
            Some(true) => {
                self.summary.echo_replies += 1;
                Some(Finding {
                    ip,
                    host: None,
                    port: 0,
                    answer: Answer::Echo,
                    ttl,
                    time: self.now,
                })
            }
        }
    }
}
