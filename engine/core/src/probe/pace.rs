//! Pacing: how many probes may go out now for a target rate.
//!
//! A token bucket in exact integer arithmetic: credit accrues at `rate` probes
//! per second (kept in units of probe-nanoseconds, so no fraction is ever
//! lost), a grant hands out whole probes up to one batch, and the bucket holds
//! at most one batch so an idle moment never turns into a burst above the
//! rate. The caller passes the time; the pacer owns no clock.

/// The rate of a sweep over `hosts` hosts when no one host may receive more
/// than `per_host_rate` probes per second: `min(rate, per_host_rate ×
/// hosts)`, at least 1 (saturating; `per_host_rate` `None` is no cap).
///
/// With one host in the sweep every probe goes to it, so the sweep's rate
/// is the host's; with many, the keyed permutation spreads the probes evenly
/// over the hosts, so each receives about `rate / hosts` and the cap only
/// binds when `rate / hosts` would exceed it. Like `rate`, it counts first
/// probes: retries ride along, and only for probes that were not answered.
pub fn capped_rate(rate: u64, per_host_rate: Option<u64>, hosts: u64) -> u64 {
    let cap = per_host_rate.map_or(u64::MAX, |p| p.saturating_mul(hosts));
    rate.min(cap).max(1)
}

/// Hands out per-batch send quotas for a target rate.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Probes per second; `None` is unlimited.
    rate: Option<u64>,
    batch: u32,
    /// Credit, in probe-nanoseconds (one probe costs 10^9).
    credit: u128,
    /// Time of the last update, nanoseconds on the caller's clock.
    last: Option<u64>,
}

const NANOS: u128 = 1_000_000_000;

impl Pacer {
    /// A pacer for `rate` probes per second (`None`: as fast as possible)
    /// that grants at most `batch` probes at a time (`batch >= 1`).
    pub fn new(rate: Option<u64>, batch: u32) -> Self {
        Pacer {
            rate: rate.filter(|&r| r > 0),
            batch: batch.max(1),
            credit: 0,
            last: None,
        }
    }

    /// The rate, probes per second.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    fn refill(&mut self, now: u64) {
        let Some(rate) = self.rate else { return };
        let elapsed = match self.last {
            Some(last) => now.saturating_sub(last),
            None => 0,
        };
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        let cap = u128::from(self.batch) * NANOS;
        self.credit = (self.credit + u128::from(elapsed) * u128::from(rate)).min(cap);
    }

    /// How many probes may be sent at time `now` (nanoseconds). The caller
    /// sends at most that many, then reports the number actually sent with
    /// [`Pacer::spend`].
    pub fn quota(&mut self, now: u64) -> u32 {
        if self.rate.is_none() {
            return self.batch;
        }
        self.refill(now);
        (self.credit / NANOS).min(u128::from(self.batch)) as u32
    }

    /// Records that `sent` probes went out (at most the last quota).
    pub fn spend(&mut self, sent: u32) {
        if self.rate.is_some() {
            self.credit = self.credit.saturating_sub(u128::from(sent) * NANOS);
        }
    }

    /// Nanoseconds from `now` until `want` probes (at most one batch) will be
    /// available: how long a sender with nothing to do may sleep.
    pub fn wait_for(&mut self, now: u64, want: u32) -> u64 {
        let Some(rate) = self.rate else { return 0 };
        self.refill(now);
        let need = u128::from(want.clamp(1, self.batch)) * NANOS;
        if self.credit >= need {
            return 0;
        }
        let missing = need - self.credit;
        u64::try_from(missing.div_ceil(u128::from(rate))).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a sender polling every `step` ns for one second and returns
    /// the number of probes sent.
    fn simulate(rate: u64, batch: u32, step: u64) -> u64 {
        let mut p = Pacer::new(Some(rate), batch);
        let mut sent = 0u64;
        let mut now = 0u64;
        while now <= NANOS as u64 {
            let q = p.quota(now);
            p.spend(q);
            sent += u64::from(q);
            now += step;
        }
        sent
    }

    fn within_one_percent(got: u64, want: u64) -> bool {
        got.abs_diff(want) * 100 <= want
    }

    #[test]
    fn ten_kpps_within_one_percent() {
        for (batch, step) in [(1, 1_000), (64, 10_000), (64, 1_000_000), (16, 333)] {
            let got = simulate(10_000, batch, step);
            assert!(
                within_one_percent(got, 10_000),
                "batch {batch} step {step}: {got}"
            );
        }
    }

    #[test]
    fn ten_mpps_within_one_percent() {
        for (batch, step) in [(64, 5_000), (256, 20_000), (64, 1_000), (2048, 100_000)] {
            let got = simulate(10_000_000, batch, step);
            assert!(
                within_one_percent(got, 10_000_000),
                "batch {batch} step {step}: {got}"
            );
        }
    }

    #[test]
    fn sleeping_sender_is_told_how_long() {
        let mut p = Pacer::new(Some(1_000), 10);
        assert_eq!(p.quota(0), 0);
        assert_eq!(p.wait_for(0, 1), 1_000_000);
        assert_eq!(p.wait_for(0, 10), 10_000_000);
        assert_eq!(p.quota(10_000_000), 10);
        p.spend(10);
        // An idle second does not become a burst: at most one batch.
        assert_eq!(p.quota(2_000_000_000), 10);
    }

    #[test]
    fn unspent_quota_stays_available_and_clock_going_back_is_harmless() {
        let mut p = Pacer::new(Some(1_000_000), 1_000);
        assert_eq!(p.quota(0), 0);
        assert_eq!(p.quota(100_000), 100);
        p.spend(40);
        assert_eq!(p.quota(50_000), 60);
        assert_eq!(p.quota(100_000), 60);
    }

    #[test]
    fn the_per_host_cap_binds_only_for_few_hosts() {
        // One host: the sweep goes at the host's cap.
        assert_eq!(capped_rate(2_000_000, Some(20_000), 1), 20_000);
        // Ten hosts: ten times the cap.
        assert_eq!(capped_rate(2_000_000, Some(20_000), 10), 200_000);
        // Many hosts: the rate itself is below the cap × hosts.
        assert_eq!(capped_rate(2_000_000, Some(20_000), 65_536), 2_000_000);
        assert_eq!(capped_rate(2_000_000, Some(20_000), 100), 2_000_000);
        // No cap.
        assert_eq!(capped_rate(2_000_000, None, 1), 2_000_000);
        // Never zero: no hosts, a zero cap, a zero rate.
        assert_eq!(capped_rate(1000, Some(20_000), 0), 1);
        assert_eq!(capped_rate(1000, Some(0), 5), 1);
        assert_eq!(capped_rate(0, None, 5), 1);
        // No overflow.
        assert_eq!(capped_rate(u64::MAX, Some(u64::MAX), u64::MAX), u64::MAX);
        assert_eq!(capped_rate(7, Some(u64::MAX / 2), 3), 7);
    }

    proptest::proptest! {
        /// The capped rate never exceeds the rate nor (above 1) the cap ×
        /// hosts, and equals one of them.
        #[test]
        fn capped_rate_is_the_smaller_bound(
            rate in 1u64..10_000_000,
            per_host in 1u64..1_000_000,
            hosts in 1u64..1_000_000,
        ) {
            let r = capped_rate(rate, Some(per_host), hosts);
            proptest::prop_assert!(r <= rate);
            proptest::prop_assert!(r <= per_host * hosts);
            proptest::prop_assert!(r == rate || r == per_host * hosts);
            // Per host, on average, within the cap.
            proptest::prop_assert!(r / hosts <= per_host);
        }
    }

    #[test]
    fn unlimited_rate_grants_whole_batches() {
        let mut p = Pacer::new(None, 32);
        assert_eq!(p.quota(0), 32);
        p.spend(32);
        assert_eq!(p.quota(0), 32);
        assert_eq!(p.wait_for(0, 32), 0);
        assert_eq!(Pacer::new(Some(0), 8).rate(), None);
    }
}
