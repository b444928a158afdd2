//! Adaptive retries: the reply loss a sweep sees, and how many retry rounds
//! the silent ports of answering hosts need to reach a target recall.
//!
//! **The model.** A port that answers at all (SYN-ACK or RST) loses each
//! attempt independently with the same probability `p` (the probe or its
//! answer is lost on the way); every other port never answers (filtered, or
//! its host is down). Retries go out half a second apart, so one burst of
//! loss rarely takes two attempts.
//!
//! **The estimate** ([`LossCounts`]). The receiver counts the probes answered
//! before their first retry came due (`first_answered`, of `first_sent`
//! sent) and those answered after it and before the second (`retry_answered`:
//! answered by the first retry, of `retry_due` whose first retry came due).
//! If a share `a` of the probes go to ports that answer at all,
//! `first_answered / first_sent` is about `a (1-p)` and `retry_answered /
//! retry_due` about `a p (1-p)`: their ratio is `p` whatever `a` is, so
//! filtered ports and silent hosts do not bias the estimate however many
//! there are, and without loss `retry_answered` stays 0: the estimate is
//! exactly 0. It is there as soon as first retries are answered, also in a
//! sweep shorter than half a second (whose retries follow its last first
//! probe).
//!
//! **The decision** ([`rounds_needed`]). An answering port still silent after
//! `k` retries is missed with probability `p^(k+1)`: the silent ports of
//! hosts that answered anything get the smallest `k` with
//! `p^(k+1) <= 1 - target recall`, never fewer than the configured retries
//! (so without loss nothing extra is sent) and at most [`MAX_RETRY_ROUNDS`].
//! A host that answered nothing keeps the configured retries.
//!
//! **The budget** ([`AdaptiveRetries::within_budget`]). Retries beyond the
//! configured ones stay within a quarter of the first probes sent so far
//! (spread over the sweep, not spent at its start): a fleet of firewalled
//! hosts, whose filtered ports are silent ports of answering hosts, costs at
//! most 1.25 times the probes of the configured retries.
//!
//! **The expectation** ([`expected_misses`]). With `found` ports found open
//! and `q = p^(k+1)`, about `found · q / (1 - q)` open ports were missed.
//!
//! Pure: the scanner counts, hands the counts in and asks; no clocks, no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most retry rounds a silent port of an answering host gets (unless more
/// retries are configured): `1 + 8` attempts reach 99.99% recall up to
/// about 36% loss.
pub const MAX_RETRY_ROUNDS: u32 = 8;

/// The default target recall, in percent (`[scan] target_recall`).
pub const DEFAULT_TARGET_RECALL_PERCENT: f64 = 99.99;

/// Probes answered before their first retry that an estimate needs: below
/// this, there is no estimate and no extra round.
pub const MIN_LOSS_SAMPLES: u64 = 32;

/// Retries beyond the configured ones per first probe: at most one in four.
const EXTRA_PER_FIRST: u64 = 4;

/// Extra retries allowed before any first probe counts (one batch).
const EXTRA_SLACK: u64 = 64;

/// The highest loss an estimate reports: a ratio at or above 1 can only
/// come from a handful of samples, and would make the expectation infinite.
const MAX_LOSS: f64 = 0.99;

/// The share of open ports a scan means to find, strictly between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct TargetRecall(f64);

/// A target recall that is not a percentage strictly between 0 and 100.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad target recall `{0}`: give a percentage above 0 and below 100, such as 99.99")]
pub struct RecallError(pub String);

impl TargetRecall {
    /// The default: [`DEFAULT_TARGET_RECALL_PERCENT`].
    pub const DEFAULT: TargetRecall = TargetRecall(DEFAULT_TARGET_RECALL_PERCENT / 100.0);

    /// `percent` (such as 99.99), strictly between 0 and 100.
    pub fn from_percent(percent: f64) -> Result<TargetRecall, RecallError> {
        if percent.is_finite() && percent > 0.0 && percent < 100.0 {
            Ok(TargetRecall(percent / 100.0))
        } else {
            Err(RecallError(percent.to_string()))
        }
    }

    /// As a percentage.
    pub fn percent(self) -> f64 {
        self.0 * 100.0
    }

    /// The miss rate it allows: `1 - recall`.
    pub fn miss_rate(self) -> f64 {
        1.0 - self.0
    }
}

impl FromStr for TargetRecall {
    type Err = RecallError;

    /// `"99.99"` or `"99.99%"`.
    fn from_str(text: &str) -> Result<TargetRecall, RecallError> {
        let number = text.trim().strip_suffix('%').unwrap_or(text.trim());
        number
            .parse::<f64>()
            .map_err(|_| RecallError(text.to_string()))
            .and_then(TargetRecall::from_percent)
            .map_err(|_| RecallError(text.to_string()))
    }
}

impl fmt::Display for TargetRecall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

/// What the loss estimate is made of (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossCounts {
    /// First probes sent.
    pub first_sent: u64,
    /// Probes answered before their first retry came due.
    pub first_answered: u64,
    /// Probes whose first retry came due (sent if they were silent).
    pub retry_due: u64,
    /// Probes answered after their first retry came due and before their
    /// second: answered by the first retry.
    pub retry_answered: u64,
}

impl LossCounts {
    /// The estimated loss per attempt, once [`MIN_LOSS_SAMPLES`] probes were
    /// answered at once and a first retry came due (at most 0.99).
    pub fn estimate(&self) -> Option<f64> {
        if self.first_answered < MIN_LOSS_SAMPLES || self.retry_due == 0 {
            return None;
        }
        let at_once = self.first_answered as f64 / self.first_sent.max(1) as f64;
        let by_retry = self.retry_answered as f64 / self.retry_due as f64;
        Some((by_retry / at_once).min(MAX_LOSS))
    }

    /// Both counts together (the lanes of one scan).
    pub fn add(&mut self, other: LossCounts) {
        self.first_sent += other.first_sent;
        self.first_answered += other.first_answered;
        self.retry_due += other.retry_due;
        self.retry_answered += other.retry_answered;
    }
}

/// The smallest `k >= floor` with `loss^(k+1) <= 1 - target`, at most
/// `cap` (or `floor`, if that is more). No loss (or no sensible number):
/// `floor`.
pub fn rounds_needed(loss: f64, target: TargetRecall, floor: u32, cap: u32) -> u32 {
    let cap = cap.max(floor);
    // No loss, or not a number: the floor.
    if loss.is_nan() || loss <= 0.0 {
        return floor;
    }
    let allowed = target.miss_rate();
    let mut k = 0;
    let mut missed = loss;
    while k < cap && missed > allowed {
        k += 1;
        missed *= loss;
    }
    k.max(floor)
}

/// Open ports a scan expectedly missed: `found · q / (1 - q)` with
/// `q = loss^(rounds+1)`, the chance that every attempt at an open port was
/// lost.
pub fn expected_misses(found: u64, loss: f64, rounds: u32) -> f64 {
    let loss = loss.clamp(0.0, MAX_LOSS);
    let q = loss.powi(i32::try_from(rounds.saturating_add(1)).unwrap_or(i32::MAX));
    found as f64 * q / (1.0 - q)
}

/// A scan's retry policy: the configured retries, and a target recall for
/// the silent ports of answering hosts (`None`: the configured retries for
/// every port, as without adaptive retries).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveRetries {
    retries: u32,
    target: Option<TargetRecall>,
}

impl AdaptiveRetries {
    /// `retries` for every port, more for silent ports of answering hosts to
    /// reach `target`. Adaptive retries measure the loss with the first
    /// retry: with no retry configured, `target` has no effect.
    pub fn new(retries: u32, target: Option<TargetRecall>) -> AdaptiveRetries {
        AdaptiveRetries {
            retries,
            target: target.filter(|_| retries > 0),
        }
    }

    /// The configured retries: every silent port gets them.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The target recall, if retries adapt.
    pub fn target(&self) -> Option<TargetRecall> {
        self.target
    }

    /// Whether the loss is measured (it takes a first retry).
    pub fn measures(&self) -> bool {
        self.retries > 0
    }

    /// The last round any probe may get: how many rounds of `W` steps back
    /// a sender must remember a probe.
    pub fn max_rounds(&self) -> u32 {
        match self.target {
            Some(_) => self.retries.max(MAX_RETRY_ROUNDS),
            None => self.retries,
        }
    }

    /// The retry rounds of a silent port of an answering host, with the
    /// loss counted so far: the configured retries until there is an
    /// estimate (and when retries do not adapt).
    pub fn rounds(&self, loss: &LossCounts) -> u32 {
        match (self.target, loss.estimate()) {
            (Some(target), Some(p)) => rounds_needed(p, target, self.retries, MAX_RETRY_ROUNDS),
            _ => self.retries,
        }
    }

    /// Whether one more retry beyond the configured ones fits the budget,
    /// with `extra` of them and `first` first probes sent so far.
    pub fn within_budget(extra: u64, first: u64) -> bool {
        extra < first / EXTRA_PER_FIRST + EXTRA_SLACK
    }

    /// What a scan reports, from the loss it counted: the estimate and the
    /// rounds it leads to.
    pub fn outcome(&self, loss: LossCounts) -> RetryOutcome {
        RetryOutcome {
            loss,
            rounds: self.rounds(&loss),
        }
    }
}

/// What a sender does with a retry round that came due for one of its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing: the step was answered, or has had its rounds.
    Skip,
    /// Re-send the step's probe.
    Retry,
    /// Re-send it, and tell [`RetryLedger::note_host`] whether its host has
    /// answered anything yet: this is its last configured retry, and only
    /// the silent ports of answering hosts get more.
    RetryAndNoteHost,
}

/// One sender's retry bookkeeping: which of its recent steps may get extra
/// rounds (their host had answered anything by their last configured retry;
/// a ring, like the retry window: memory bounded by the retry reach, not by
/// the sweep), the loss counted so far, the current rounds, the budget.
///
/// For each step `s` it takes, the sender visits the rounds `r = 1..=`
/// [`RetryLedger::visits`] of step `s - r·W` ([`RetryLedger::due`]), in that
/// order, and once a batch hands in the loss counted so far
/// ([`RetryLedger::observe`]).
#[derive(Debug, Clone)]
pub struct RetryLedger {
    policy: AdaptiveRetries,
    extendable: Vec<u64>,
    mask: u64,
    loss: LossCounts,
    rounds: u32,
    extra: u64,
    skipped: u64,
}

impl RetryLedger {
    /// A ledger that remembers at least the last `span` steps (the sender's
    /// retry reach: `policy.max_rounds()` rounds of `W` steps, and a batch).
    pub fn new(policy: AdaptiveRetries, span: u64) -> RetryLedger {
        let size = span.max(64).next_power_of_two();
        let words = if policy.target.is_some() {
            (size / 64) as usize
        } else {
            0
        };
        RetryLedger {
            policy,
            extendable: vec![0; words],
            mask: size - 1,
            loss: LossCounts::default(),
            rounds: policy.retries,
            extra: 0,
            skipped: 0,
        }
    }

    fn slot(&self, step: u64) -> (usize, u64) {
        let i = step & self.mask;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn extendable(&self, step: u64) -> bool {
        let (word, bit) = self.slot(step);
        self.extendable.get(word).is_some_and(|w| w & bit != 0)
    }

    fn set_extendable(&mut self, step: u64, on: bool) {
        let (word, bit) = self.slot(step);
        if let Some(w) = self.extendable.get_mut(word) {
            if on {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    /// The rounds to visit for each step taken now.
    pub fn visits(&self) -> u32 {
        self.policy.retries.max(self.rounds)
    }

    /// The retry rounds silent ports of answering hosts get now.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The loss counted so far (once a batch): the rounds follow it, the
    /// budget grows with its first probes.
    pub fn observe(&mut self, loss: LossCounts) {
        self.loss = loss;
        self.rounds = self.policy.rounds(&loss);
    }

    /// The loss last observed.
    pub fn loss(&self) -> LossCounts {
        self.loss
    }

    /// Round `round` (1-based) of `step` came due; `answered`: a reply for
    /// it arrived. Says what to do.
    pub fn due(&mut self, step: u64, round: u32, answered: bool) -> Due {
        let retries = self.policy.retries;
        let adaptive = self.policy.target.is_some();
        if adaptive && round == retries {
            // Not extendable unless `note_host` says its host answered.
            self.set_extendable(step, false);
        }
        if answered {
            return Due::Skip;
        }
        if round < retries || (round == retries && !adaptive) {
            return Due::Retry;
        }
        if round == retries {
            return Due::RetryAndNoteHost;
        }
        if round > self.rounds || !self.extendable(step) {
            return Due::Skip;
        }
        if AdaptiveRetries::within_budget(self.extra, self.loss.first_sent) {
            self.extra += 1;
            Due::Retry
        } else {
            self.skipped += 1;
            Due::Skip
        }
    }

    /// After [`Due::RetryAndNoteHost`]: whether the step's host has
    /// answered anything (then its silent step may get extra rounds).
    pub fn note_host(&mut self, step: u64, host_answered: bool) {
        self.set_extendable(step, host_answered);
    }

    /// Whether `step`, unanswered, can get no more retry: sender at `now`,
    /// rounds `spacing` steps apart (the tail after the last first probe
    /// ends when every step is answered or done).
    pub fn exhausted(&self, step: u64, now: u64, spacing: u64) -> bool {
        let last = if self.extendable(step) {
            self.rounds.max(self.policy.retries)
        } else {
            self.policy.retries
        };
        now > step.saturating_add(u64::from(last).saturating_mul(spacing))
    }

    /// Retries sent beyond the configured ones.
    pub fn extra(&self) -> u64 {
        self.extra
    }

    /// Extra retries the budget held back.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// A scan's loss estimate and the retry rounds it led to: what a scan's
/// summary reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOutcome {
    pub loss: LossCounts,
    /// The retry rounds of silent ports of answering hosts at the end (the
    /// configured retries without adaptive retries).
    pub rounds: u32,
}

/// Reported figures carry 6 decimal places: short decimals that every JSON
/// reader reads back exactly.
fn reported(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl RetryOutcome {
    /// The estimated loss per attempt (see [`LossCounts::estimate`]), to 6
    /// decimal places.
    pub fn estimated_loss(&self) -> Option<f64> {
        self.loss.estimate().map(reported)
    }

    /// Open ports expectedly missed, with `found` found open (see
    /// [`expected_misses`]), to 6 decimal places.
    pub fn expected_misses(&self, found: u64) -> Option<f64> {
        self.loss
            .estimate()
            .map(|p| reported(expected_misses(found, p, self.rounds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn recall(percent: f64) -> TargetRecall {
        TargetRecall::from_percent(percent).unwrap()
    }

    /// Counts of `first_sent` probes, `first_answered` of them at once, and
    /// of `retry_due` first retries, `retry_answered` answered.
    fn counts(
        first_sent: u64,
        first_answered: u64,
        retry_due: u64,
        retry_answered: u64,
    ) -> LossCounts {
        LossCounts {
            first_sent,
            first_answered,
            retry_due,
            retry_answered,
        }
    }

    #[test]
    fn target_recall_is_a_percentage_strictly_inside() {
        assert_eq!("99.99".parse::<TargetRecall>().unwrap(), recall(99.99));
        assert_eq!(" 99.9% ".parse::<TargetRecall>().unwrap(), recall(99.9));
        for bad in ["0", "100", "-1", "101", "nan", "inf", "", "high", "99.9%%"] {
            let e = bad.parse::<TargetRecall>().unwrap_err();
            assert!(
                e.to_string().contains("above 0 and below 100"),
                "{bad}: {e}"
            );
        }
        assert!((TargetRecall::DEFAULT.miss_rate() - 1e-4).abs() < 1e-12);
        assert_eq!(recall(99.5).to_string(), "99.5%");
    }

    #[test]
    fn rounds_reach_the_target_and_no_further() {
        let t = recall(99.99);
        // No loss: the configured retries, whatever they are.
        for floor in 0..4 {
            assert_eq!(rounds_needed(0.0, t, floor, 8), floor);
            assert_eq!(rounds_needed(f64::NAN, t, floor, 8), floor);
        }
        // 5%: 0.05^3 = 1.25e-4 misses the target, 0.05^4 = 6.25e-6 meets it.
        assert_eq!(rounds_needed(0.05, t, 1, 8), 3);
        // 1%: 0.01^2 = 1e-4 just meets it: the default retry is enough.
        assert_eq!(rounds_needed(0.01, t, 1, 8), 1);
        assert_eq!(rounds_needed(0.011, t, 1, 8), 2);
        // Never below the floor, never above the cap (unless the floor is).
        assert_eq!(rounds_needed(0.05, t, 5, 8), 5);
        assert_eq!(rounds_needed(0.9, t, 1, 8), 8);
        assert_eq!(rounds_needed(0.9, t, 10, 8), 10);
        assert_eq!(rounds_needed(1.0, t, 1, 8), 8);
    }

    #[test]
    fn the_estimate_needs_samples_and_is_exactly_zero_without_loss() {
        // Half the probes go to ports that never answer.
        let mut c = counts(62, MIN_LOSS_SAMPLES - 1, 62, 0);
        assert_eq!(c.estimate(), None);
        c.first_answered += 1;
        assert_eq!(c.estimate(), Some(0.0));
        // No first retry due yet: no estimate.
        assert_eq!(counts(100, 50, 0, 0).estimate(), None);
        // 5% of the answers lost, half the ports silent: 1000 probes, 475
        // answered at once, of the 525 retried 23.75 answered.
        c = counts(1000, 475, 1000, 0);
        c.add(counts(1000, 475, 1000, 47));
        assert!((c.estimate().unwrap() - 47.0 / 950.0).abs() < 1e-12);
        // A ratio at or above 1 (a handful of samples) is capped.
        assert_eq!(counts(40, 40, 40, 80).estimate(), Some(MAX_LOSS));
    }

    #[test]
    fn the_policy_adapts_only_with_a_target_and_a_first_retry() {
        let loss = counts(10_000, 10_000, 10_000, 500);
        let off = AdaptiveRetries::new(1, None);
        assert_eq!((off.rounds(&loss), off.max_rounds()), (1, 1));
        let on = AdaptiveRetries::new(1, Some(TargetRecall::DEFAULT));
        assert_eq!((on.rounds(&loss), on.max_rounds()), (3, 8));
        // Before an estimate: the configured retries.
        assert_eq!(on.rounds(&LossCounts::default()), 1);
        // No retry, nothing to measure with: no adaptation.
        let none = AdaptiveRetries::new(0, Some(TargetRecall::DEFAULT));
        assert_eq!(none.target(), None);
        assert!(!none.measures());
        assert_eq!((none.rounds(&loss), none.max_rounds()), (0, 0));
        // More configured retries than the cap: the configured ones.
        let many = AdaptiveRetries::new(10, Some(TargetRecall::DEFAULT));
        assert_eq!((many.rounds(&loss), many.max_rounds()), (10, 10));
    }

    #[test]
    fn the_budget_is_a_quarter_of_the_first_probes() {
        assert!(AdaptiveRetries::within_budget(0, 0));
        assert!(!AdaptiveRetries::within_budget(EXTRA_SLACK, 0));
        assert!(AdaptiveRetries::within_budget(249 + EXTRA_SLACK, 1000));
        assert!(!AdaptiveRetries::within_budget(250 + EXTRA_SLACK, 1000));
    }

    #[test]
    fn expected_misses_follow_the_loss() {
        let o = RetryOutcome {
            loss: counts(1000, 1000, 1000, 50),
            rounds: 3,
        };
        let q = 0.05f64.powi(4);
        let want = 10_000.0 * q / (1.0 - q);
        assert!((expected_misses(10_000, 0.05, 3) - want).abs() < 1e-12);
        // Reported to 6 decimal places.
        assert_eq!(o.expected_misses(10_000), Some(0.0625));
        assert_eq!(o.estimated_loss(), Some(0.05));
        let odd = RetryOutcome {
            loss: counts(3000, 3000, 3000, 1),
            rounds: 1,
        };
        assert_eq!(odd.estimated_loss(), Some(0.000333));
        let clean = RetryOutcome {
            loss: counts(1000, 1000, 1000, 0),
            rounds: 1,
        };
        assert_eq!(clean.expected_misses(10_000), Some(0.0));
        assert_eq!(RetryOutcome::default().expected_misses(5), None);
        assert!(expected_misses(10, 1.0, 0).is_finite());
    }

    /// How the hosts of a simulated lane answer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Class {
        /// Every port answers (SYN-ACK or RST).
        Normal,
        /// One port in 50 answers, the others are filtered.
        Firewalled,
        /// Nothing answers.
        Silent,
    }

    /// One simulated lane.
    struct Lane {
        /// Per step: whether it answers at all (responsive), whether an
        /// answer arrived, and the probes it got.
        responsive: Vec<bool>,
        answered: Vec<bool>,
        probes: Vec<u32>,
        ledger: RetryLedger,
        /// The loss as the receiver and the sender count it.
        loss: LossCounts,
    }

    impl Lane {
        fn total(&self) -> u64 {
            self.probes.iter().map(|&p| u64::from(p)).sum()
        }

        fn missed(&self) -> usize {
            (0..self.responsive.len())
                .filter(|&i| self.responsive[i] && !self.answered[i])
                .count()
        }
    }

    /// A sender's walk over `n` steps, rounds `w` steps apart, as
    /// `dataplane::scan::send` walks them with the ledger; host of step `s`:
    /// `s % classes.len()`; every attempt at a responsive step is lost with
    /// `loss_permille`; an answer arrives before the next step and is
    /// counted as the receiver counts it (by the attempt it answers).
    fn walk(
        policy: AdaptiveRetries,
        classes: &[Class],
        n: u64,
        w: u64,
        loss_permille: u64,
        seed: u64,
    ) -> Lane {
        let mut rng = seed | 1;
        let mut draw = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % 1000
        };
        let hosts = classes.len() as u64;
        let responsive: Vec<bool> = (0..n)
            .map(|s| match classes[(s % hosts) as usize] {
                Class::Normal => true,
                Class::Firewalled => (s / hosts).is_multiple_of(50),
                Class::Silent => false,
            })
            .collect();
        let mut lane = Lane {
            answered: vec![false; n as usize],
            probes: vec![0; n as usize],
            ledger: RetryLedger::new(policy, u64::from(policy.max_rounds()) * w + 64),
            responsive,
            loss: LossCounts::default(),
        };
        let mut host_answered = vec![false; classes.len()];
        let mut attempt = |lane: &mut Lane, host_answered: &mut Vec<bool>, step: u64| {
            let i = step as usize;
            let attempt = lane.probes[i];
            lane.probes[i] += 1;
            if lane.responsive[i] && draw() >= loss_permille {
                lane.answered[i] = true;
                host_answered[(step % hosts) as usize] = true;
                match attempt {
                    0 => lane.loss.first_answered += 1,
                    1 => lane.loss.retry_answered += 1,
                    _ => {}
                }
            }
        };
        let last = n + u64::from(policy.max_rounds()) * w;
        for s in 0..last {
            if s % 64 == 0 {
                let loss = lane.loss;
                lane.ledger.observe(loss);
            }
            if s < n {
                attempt(&mut lane, &mut host_answered, s);
                lane.loss.first_sent += 1;
            }
            for r in 1..=lane.ledger.visits() {
                let Some(back) = s.checked_sub(u64::from(r) * w) else {
                    break;
                };
                if back >= n {
                    continue;
                }
                if r == 1 {
                    lane.loss.retry_due += 1;
                }
                match lane.ledger.due(back, r, lane.answered[back as usize]) {
                    Due::Skip => {}
                    Due::Retry => attempt(&mut lane, &mut host_answered, back),
                    Due::RetryAndNoteHost => {
                        let answered = host_answered[(back % hosts) as usize];
                        lane.ledger.note_host(back, answered);
                        attempt(&mut lane, &mut host_answered, back);
                    }
                }
            }
        }
        let loss = lane.loss;
        lane.ledger.observe(loss);
        lane
    }

    fn fleet(normal: usize, firewalled: usize, silent: usize) -> Vec<Class> {
        let mut c = vec![Class::Normal; normal];
        c.extend(vec![Class::Firewalled; firewalled]);
        c.extend(vec![Class::Silent; silent]);
        c
    }

    #[test]
    fn without_loss_adaptive_retries_send_what_the_configured_ones_send() {
        let classes = fleet(20, 20, 10);
        for retries in 1..3 {
            let walk = |target| {
                walk(
                    AdaptiveRetries::new(retries, target),
                    &classes,
                    100_000,
                    500,
                    0,
                    7,
                )
            };
            let (plain, adaptive) = (walk(None), walk(Some(TargetRecall::DEFAULT)));
            assert_eq!(adaptive.probes, plain.probes, "retries {retries}");
            assert_eq!(adaptive.ledger.loss().estimate(), Some(0.0));
            assert_eq!(
                (adaptive.ledger.rounds(), adaptive.ledger.extra()),
                (retries, 0)
            );
            assert_eq!(adaptive.missed(), 0);
        }
    }

    #[test]
    fn at_five_percent_loss_adaptive_retries_reach_the_target() {
        // Normal hosts only: every port answers, as the benchmark's fleet.
        let classes = fleet(64, 0, 0);
        let n = 400_000;
        let walk = |target| walk(AdaptiveRetries::new(1, target), &classes, n, 1000, 50, 11);
        let (plain, adaptive) = (walk(None), walk(Some(TargetRecall::DEFAULT)));
        let p = adaptive.ledger.loss().estimate().unwrap();
        assert!((p - 0.05).abs() < 0.005, "estimated {p}");
        assert_eq!(adaptive.ledger.rounds(), 3);
        // 400,000 × 0.05^2 = 1,000 expected misses with one retry; about
        // 400,000 × 0.05^4 = 2.5 with three.
        assert!(plain.missed() > 800, "{}", plain.missed());
        assert!(adaptive.missed() <= 12, "{}", adaptive.missed());
        let ratio = adaptive.total() as f64 / plain.total() as f64;
        assert!(ratio <= 1.01, "{ratio}");
        assert_eq!(adaptive.ledger.skipped(), 0);
    }

    #[test]
    fn a_sweep_shorter_than_the_spacing_adapts_too() {
        // All first probes go out before the first retry comes due.
        let classes = fleet(16, 0, 0);
        let policy = AdaptiveRetries::new(1, Some(TargetRecall::DEFAULT));
        let lane = walk(policy, &classes, 20_000, 50_000, 50, 5);
        let p = lane.ledger.loss().estimate().unwrap();
        assert!((p - 0.05).abs() < 0.02, "estimated {p}");
        assert_eq!(lane.ledger.rounds(), 3);
        assert!(lane.ledger.extra() > 0);
        assert!(lane.missed() <= 3, "{}", lane.missed());
    }

    #[test]
    fn silent_hosts_keep_the_configured_retries() {
        let classes = fleet(8, 8, 8);
        let policy = AdaptiveRetries::new(1, Some(TargetRecall::DEFAULT));
        let lane = walk(policy, &classes, 200_000, 500, 100, 3);
        assert!(lane.ledger.rounds() >= 3, "{}", lane.ledger.rounds());
        for (s, &probes) in lane.probes.iter().enumerate() {
            match classes[s % classes.len()] {
                Class::Silent => assert_eq!(probes, 2, "step {s}"),
                _ => assert!(probes <= 1 + MAX_RETRY_ROUNDS, "step {s}: {probes}"),
            }
        }
        // Filtered ports of firewalled hosts (answering hosts) got more.
        assert!(lane.ledger.extra() > 0);
    }

    proptest! {
        /// The chosen rounds meet the target whenever the cap allows it,
        /// and one round fewer (above the floor) would not.
        #[test]
        fn rounds_are_the_least_that_meet_the_target(
            loss in 0.0f64..0.99,
            percent in 50.0f64..99.9999,
            floor in 0u32..6,
            cap in 0u32..12,
        ) {
            let t = recall(percent);
            let k = rounds_needed(loss, t, floor, cap);
            prop_assert!(k >= floor);
            prop_assert!(k <= cap.max(floor));
            let miss = |k: u32| loss.powi(k as i32 + 1);
            if k < cap.max(floor) {
                prop_assert!(miss(k) <= t.miss_rate() * (1.0 + 1e-9), "k {} miss {}", k, miss(k));
            }
            if k > floor {
                prop_assert!(miss(k - 1) > t.miss_rate() * (1.0 - 1e-9));
            }
        }

        /// More loss never means fewer rounds; a higher target never fewer.
        #[test]
        fn rounds_grow_with_loss_and_target(
            a in 0.0f64..0.99, b in 0.0f64..0.99,
            pa in 50.0f64..99.9999, pb in 50.0f64..99.9999,
            floor in 0u32..4,
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            let t = recall(pa);
            prop_assert!(rounds_needed(lo, t, floor, 8) <= rounds_needed(hi, t, floor, 8));
            let (tl, th) = (recall(pa.min(pb)), recall(pa.max(pb)));
            prop_assert!(rounds_needed(a, tl, floor, 8) <= rounds_needed(a, th, floor, 8));
        }

        /// Extra retries stay within a quarter of the first probes, however
        /// many silent ports answering hosts have and however lossy; the
        /// rest are the configured retries.
        #[test]
        fn extra_retries_stay_within_the_budget(
            normal in 0usize..4,
            firewalled in 1usize..8,
            silent in 0usize..4,
            loss_permille in 0u64..400,
            seed: u64,
        ) {
            let classes = fleet(normal, firewalled, silent);
            let n = 20_000;
            let walk = |target| walk(AdaptiveRetries::new(1, target), &classes, n, 300, loss_permille, seed);
            let (plain, lane) = (walk(None), walk(Some(TargetRecall::DEFAULT)));
            prop_assert!(lane.ledger.extra() <= n / 4 + EXTRA_SLACK);
            let configured: u64 = lane.probes.iter().map(|&p| u64::from(p.min(2))).sum();
            prop_assert_eq!(lane.total(), configured + lane.ledger.extra());
            prop_assert!(lane.total() as f64 <= 1.25 * plain.total() as f64 + EXTRA_SLACK as f64);
        }

        /// The estimate finds the loss within a few standard errors whatever
        /// share of ports never answers, and is exactly 0 without loss.
        #[test]
        fn the_estimate_finds_the_loss(
            loss_permille in 0u64..300,
            silent_percent in 0u64..95,
            seed: u64,
        ) {
            let mut state = seed | 1;
            let mut draw = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % 1000
            };
            let n = 200_000u64;
            let mut c = counts(n, 0, n, 0);
            for _ in 0..n {
                if draw() < silent_percent * 10 {
                    continue; // never answers
                }
                if draw() >= loss_permille {
                    c.first_answered += 1;
                } else if draw() >= loss_permille {
                    c.retry_answered += 1;
                }
            }
            let p = loss_permille as f64 / 1000.0;
            let got = c.estimate().unwrap();
            // retry_answered ~ Binomial(r (1-p), p) against first_answered
            // ~ r (1-p), r the responsive probes.
            let se = (p * (1.0 - p) / c.first_answered as f64).sqrt();
            prop_assert!((got - p).abs() <= 6.0 * se + 1e-9, "loss {} estimated {}", p, got);
            if loss_permille == 0 {
                prop_assert_eq!(got, 0.0);
            }
        }
    }
}
