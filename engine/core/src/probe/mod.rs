//! The pure core of a scan: what to probe, in which order, with which cookie,
//! at which pace. No I/O, no clocks: callers bring the time and
//! the randomness.

pub mod cookie;
pub mod lanes;
pub mod pace;
pub mod permute;
pub mod retry;
pub mod spec;
pub mod sweep;

pub use cookie::{CookieKey, Cookies, Verdict};
pub use lanes::{Lane, LaneStep, Lanes};
pub use pace::{Pacer, capped_rate};
pub use permute::Permutation;
pub use retry::{AdaptiveRetries, LossCounts, RetryOutcome, TargetRecall};
pub use spec::{Origin, PortSet, Shard, SpecError, TargetSet};
pub use sweep::{Probe, Sweep, SweepIter, Target};
