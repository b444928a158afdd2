//! Host reachability: the addresses a scan sends ICMP / ICMPv6 echo
//! requests to, and which of them answered.
//!
//! Sender 0 sends one request to every address at the start of the scan and
//! `retries` more rounds, half a second apart, to those that have not
//! answered; the receiver marks an address answered on its first valid echo
//! reply. The numbers are small (one address per monitored host), so the
//! list is walked in order, not permuted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Time between two rounds of echo requests.
pub(super) const ROUND_SPACING: Duration = Duration::from_millis(500);

/// The addresses to ping and which of them answered.
#[derive(Debug)]
pub(super) struct Pings {
    addrs: Vec<IpAddr>,
    index: HashMap<IpAddr, usize>,
    answered: Vec<AtomicBool>,
}

impl Pings {
    /// The distinct addresses of `addrs`, in their first order.
    pub(super) fn new(addrs: &[IpAddr]) -> Self {
        let mut index = HashMap::with_capacity(addrs.len());
        let mut unique = Vec::with_capacity(addrs.len());
        for &a in addrs {
            if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(a) {
                slot.insert(unique.len());
                unique.push(a);
            }
        }
        Pings {
            answered: unique.iter().map(|_| AtomicBool::new(false)).collect(),
            addrs: unique,
            index,
        }
    }

    /// How many distinct addresses.
    pub(super) fn len(&self) -> usize {
        self.addrs.len()
    }

    /// The `i`-th address, if it has not answered yet.
    pub(super) fn pending(&self, i: usize) -> Option<IpAddr> {
        let answered = self.answered.get(i)?.load(Ordering::Relaxed);
        (!answered).then(|| self.addrs[i])
    }

    /// Whether every address answered.
    pub(super) fn all_answered(&self) -> bool {
        self.answered.iter().all(|a| a.load(Ordering::Relaxed))
    }

    /// Marks `ip` answered: `None` if it was never pinged, `Some(true)` on
    /// its first answer, `Some(false)` on a duplicate.
    pub(super) fn mark(&self, ip: IpAddr) -> Option<bool> {
        let i = *self.index.get(&ip)?;
        Some(!self.answered[i].swap(true, Ordering::Relaxed))
    }
}

/// Sender 0's progress through the rounds of echo requests.
#[derive(Debug)]
pub(super) struct PingRounds {
    rounds: u32,
    /// The round being sent, or the next one.
    round: u32,
    /// Next address of the round being sent; `None` between rounds.
    cursor: Option<usize>,
}

impl PingRounds {
    /// `1 + retries` rounds.
    pub(super) fn new(retries: u32) -> Self {
        PingRounds {
            rounds: retries.saturating_add(1),
            round: 0,
            cursor: None,
        }
    }

    /// Whether nothing is left to send: every round sent, or every address
    /// answered.
    pub(super) fn done(&self, pings: &Pings) -> bool {
        pings.len() == 0
            || (self.round >= self.rounds && self.cursor.is_none())
            || pings.all_answered()
    }

    /// When the next round is due, from the start of the scan; `None` while a
    /// round is being sent or when all are sent.
    pub(super) fn next_due(&self) -> Option<Duration> {
        (self.cursor.is_none() && self.round < self.rounds).then(|| ROUND_SPACING * self.round)
    }

    /// Up to `max` addresses to send to now (`elapsed` since the start of
    /// the scan), in order, skipping those that answered.
    pub(super) fn take(
        &mut self,
        pings: &Pings,
        elapsed: Duration,
        max: usize,
        out: &mut Vec<IpAddr>,
    ) {
        out.clear();
        if self.cursor.is_none() {
            match self.next_due() {
                Some(due) if elapsed >= due => self.cursor = Some(0),
                _ => return,
            }
        }
        let Some(mut i) = self.cursor else { return };
        while out.len() < max && i < pings.len() {
            if let Some(a) = pings.pending(i) {
                out.push(a);
            }
            i += 1;
        }
        if i >= pings.len() {
            self.cursor = None;
            self.round += 1;
        } else {
            self.cursor = Some(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rounds_resend_only_to_silent_addresses() {
        let pings = Pings::new(&[
            ip("198.18.0.2"),
            ip("198.18.0.3"),
            ip("198.18.0.2"),
            ip("2001:2::2"),
        ]);
        assert_eq!(pings.len(), 3);
        let mut r = PingRounds::new(1);
        let mut out = Vec::new();
        // Round 0 is due at once, in batches.
        r.take(&pings, Duration::ZERO, 2, &mut out);
        assert_eq!(out, [ip("198.18.0.2"), ip("198.18.0.3")]);
        r.take(&pings, Duration::ZERO, 2, &mut out);
        assert_eq!(out, [ip("2001:2::2")]);
        // Round 1 waits half a second, and skips the answered.
        assert_eq!(pings.mark(ip("198.18.0.3")), Some(true));
        assert_eq!(pings.mark(ip("198.18.0.3")), Some(false));
        assert_eq!(pings.mark(ip("198.18.0.9")), None);
        assert_eq!(r.next_due(), Some(ROUND_SPACING));
        r.take(&pings, Duration::from_millis(100), 8, &mut out);
        assert!(out.is_empty());
        assert!(!r.done(&pings));
        r.take(&pings, ROUND_SPACING, 8, &mut out);
        assert_eq!(out, [ip("198.18.0.2"), ip("2001:2::2")]);
        assert!(r.done(&pings));
        r.take(&pings, ROUND_SPACING * 4, 8, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn all_answered_ends_the_rounds() {
        let pings = Pings::new(&[ip("198.18.0.2")]);
        let r = PingRounds::new(3);
        assert!(!r.done(&pings));
        pings.mark(ip("198.18.0.2"));
        assert!(r.done(&pings));
        assert!(PingRounds::new(3).done(&Pings::new(&[])));
    }
}
