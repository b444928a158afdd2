//! The retry window: "answered" bits for a sliding window of one lane's steps.
//!
//! A sender at step `m` also re-sends step `m - r·W` for each retry `r`,
//! unless a reply for it arrived; `W` is half a second of probes. So only the
//! last few `W` steps can still be retried, and their bits live in a ring of
//! that size, not in a bitmap of the whole sweep: memory stays bounded
//! however large the sweep. The receiver sets the bits, the sender reads them;
//! both sides are lock-free. Marking a step also counts, for the loss
//! estimate, whether it was answered before its first retry came due or
//! after it and before the second (by its age: how far the sender has gone
//! past it).

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::probe::LossCounts;

/// One lane's ring of answered bits.
#[derive(Debug)]
pub(super) struct RetryWindow {
    bits: Vec<AtomicU64>,
    mask: u64,
    /// Next step the sender will take.
    progress: AtomicU64,
    /// Steps between retry rounds (`W`).
    spacing: u64,
    /// Steps answered before their first retry came due, and after it
    /// but before the second (written by the receiver only).
    first_answered: AtomicU64,
    retry_answered: AtomicU64,
}

impl RetryWindow {
    /// A window that remembers at least the last `span` steps, retry rounds
    /// `spacing` steps apart.
    pub(super) fn new(span: u64, spacing: u64) -> Self {
        let size = (span * 2).next_power_of_two().max(64);
        RetryWindow {
            bits: (0..size / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: size - 1,
            progress: AtomicU64::new(0),
            spacing,
            first_answered: AtomicU64::new(0),
            retry_answered: AtomicU64::new(0),
        }
    }

    fn slot(&self, step: u64) -> (&AtomicU64, u64) {
        let i = step & self.mask;
        (&self.bits[(i / 64) as usize], 1 << (i % 64))
    }

    /// The sender is about to send `step` for the first time.
    pub(super) fn clear(&self, step: u64) {
        let (w, b) = self.slot(step);
        w.fetch_and(!b, Ordering::Relaxed);
    }

    /// The sender has taken every step before `step`.
    pub(super) fn advance(&self, step: u64) {
        self.progress.store(step, Ordering::Relaxed);
    }

    /// Marks `step` answered if it is still inside the window. Returns
    /// false if it was marked already (a duplicate reply); a step outside the
    /// window (a very late reply) counts as new. A new answer counts for
    /// the loss estimate by its age: the sender takes round `r` of a step
    /// `r·W` steps after it (and advances past it), so up to `W` steps
    /// behind the sender it answers the first probe, up to `2W` the first
    /// retry.
    pub(super) fn mark(&self, step: u64) -> bool {
        let progress = self.progress.load(Ordering::Relaxed);
        if step < progress && progress - step <= self.mask / 2 {
            let (w, b) = self.slot(step);
            let new = w.fetch_or(b, Ordering::Relaxed) & b == 0;
            if new {
                let age = progress - step;
                if age <= self.spacing {
                    self.first_answered.fetch_add(1, Ordering::Relaxed);
                } else if age <= 2 * self.spacing {
                    self.retry_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            return new;
        }
        true
    }

    /// The loss counts of the answers so far, with the sender's own:
    /// `first_sent` first probes, `retry_due` first retries due.
    pub(super) fn loss(&self, first_sent: u64, retry_due: u64) -> LossCounts {
        LossCounts {
            first_sent,
            first_answered: self.first_answered.load(Ordering::Relaxed),
            retry_due,
            retry_answered: self.retry_answered.load(Ordering::Relaxed),
        }
    }

    /// Whether a reply for `step` arrived (while it was in the window).
    pub(super) fn answered(&self, step: u64) -> bool {
        let (w, b) = self.slot(step);
        w.load(Ordering::Relaxed) & b != 0
    }
}

/// Which hosts of the sweep answered anything (a SYN-ACK or an RST, valid):
/// one bit per host index ([`palisade_core::probe::Sweep::locate`]). Set by
/// the receiver, read by the senders at a silent probe's last configured
/// retry: only the silent ports of answering hosts get extra rounds. At most
/// 2^26 bits (8 MiB): beyond, hosts share bits (index modulo), which can
/// only give a silent host extra retries. Empty when retries do not adapt.
#[derive(Debug)]
pub(super) struct HostsAnswered {
    bits: Vec<AtomicU64>,
    mask: u64,
}

/// Most bits of [`HostsAnswered`].
const MAX_HOST_BITS: u64 = 1 << 26;

impl HostsAnswered {
    /// Bits for `hosts` hosts (none if `on` is false).
    pub(super) fn new(hosts: u64, on: bool) -> Self {
        if !on {
            return HostsAnswered {
                bits: Vec::new(),
                mask: 0,
            };
        }
        let size = hosts.clamp(64, MAX_HOST_BITS).next_power_of_two();
        HostsAnswered {
            bits: (0..size / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: size - 1,
        }
    }

    fn slot(&self, host: u64) -> Option<(&AtomicU64, u64)> {
        let i = host & self.mask;
        Some((self.bits.get((i / 64) as usize)?, 1 << (i % 64)))
    }

    /// Host `host` answered.
    pub(super) fn mark(&self, host: u64) {
        if let Some((w, b)) = self.slot(host) {
            // A load first: most replies come from hosts already marked,
            // and a load leaves the cache line shared with the senders.
            if w.load(Ordering::Relaxed) & b == 0 {
                w.fetch_or(b, Ordering::Relaxed);
            }
        }
    }

    /// Whether host `host` answered anything yet.
    pub(super) fn answered(&self, host: u64) -> bool {
        self.slot(host)
            .is_some_and(|(w, b)| w.load(Ordering::Relaxed) & b != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_marks_only_recent_steps() {
        let w = RetryWindow::new(100, 40);
        w.advance(150);
        assert!(w.mark(149));
        assert!(w.answered(149));
        assert!(!w.mark(149), "a second reply is a duplicate");
        w.mark(150); // not sent yet
        assert!(!w.answered(150));
        w.clear(149);
        assert!(!w.answered(149));
        w.advance(10_000);
        w.mark(149); // long gone: its slot belongs to a newer step
        assert!(!w.answered(149));
    }

    #[test]
    fn answers_count_by_the_attempt_they_answer() {
        let w = RetryWindow::new(100, 40);
        w.advance(100);
        assert!(w.mark(99)); // age 1: the first probe
        assert!(w.mark(60)); // age 40: still before the first retry
        assert!(w.mark(59)); // age 41: after the first retry
        assert!(w.mark(20)); // age 80: before the second
        assert!(w.mark(19)); // age 81: after the second: neither
        assert!(!w.mark(99)); // a duplicate counts once
        assert_eq!(
            w.loss(100, 60),
            LossCounts {
                first_sent: 100,
                first_answered: 2,
                retry_due: 60,
                retry_answered: 2,
            }
        );
    }

    #[test]
    fn hosts_answered_are_bits_by_host_index() {
        let h = HostsAnswered::new(1000, true);
        assert!(!h.answered(7));
        h.mark(7);
        h.mark(7);
        assert!(h.answered(7) && !h.answered(8) && !h.answered(6));
        // Off: nothing is kept, nothing answered.
        let off = HostsAnswered::new(1000, false);
        off.mark(7);
        assert!(!off.answered(7));
        // Beyond the cap, hosts share bits.
        let big = HostsAnswered::new(u64::MAX, true);
        big.mark(3);
        assert!(big.answered(3 + MAX_HOST_BITS));
    }
}
