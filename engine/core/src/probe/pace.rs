//! Pacing: how many probes may go out now for a target rate.
//!
//! A token bucket in exact integer arithmetic: credit accrues at `rate` probes
//! per second (kept in units of probe-nanoseconds, so no fraction is ever
//! lost), a grant hands out whole probes up to one batch, and the bucket holds
//! at most one batch so an idle moment never turns into a burst above the
//! rate. The caller passes the time; the pacer owns no clock.

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
    fn unlimited_rate_grants_whole_batches() {
        let mut p = Pacer::new(None, 32);
        assert_eq!(p.quota(0), 32);
        p.spend(32);
        assert_eq!(p.quota(0), 32);
        assert_eq!(p.wait_for(0, 32), 0);
        assert_eq!(Pacer::new(Some(0), 8).rate(), None);
    }
}
