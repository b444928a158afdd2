//! How one shard of a sweep is shared among the scan's senders.
//!
//! With `Q` senders (one per transmit queue), sender `q` walks the shard-local
//! probes `k = q, q + Q, q + 2Q, …`: its *lane* is itself a shard of the sweep
//! (sub-shard `index + q·count` of `count·Q`), so it iterates with the sweep's
//! own machinery, and its `j`-th *step* is shard-local probe `k = q + j·Q`.
//! A reply is traced back to the lane and step that sent it (to mark the step
//! answered, so that no retry follows) by inverting that map.

use super::spec::Shard;

/// The part of a shard that one sender walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// The lane as a shard of the whole sweep.
    pub shard: Shard,
    /// The first step to take (after a resume).
    pub first: u64,
}

/// Where a probe stands among the lanes: which sender, which of its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneStep {
    pub lane: usize,
    pub step: u64,
}

/// A shard split into `count` lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    shard: Shard,
    count: u64,
}

impl Lanes {
    /// `shard` split among `count` senders (at least one).
    pub fn new(shard: Shard, count: usize) -> Lanes {
        Lanes {
            shard,
            count: (count as u64).max(1),
        }
    }

    /// How many lanes.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Lane `q`, skipping the first `resume` probes of the shard.
    pub fn lane(&self, q: usize, resume: u64) -> Lane {
        let q = q as u64;
        Lane {
            shard: Shard {
                index: self.shard.index + q * self.shard.count,
                count: self.shard.count * self.count,
            },
            first: (resume + self.count - 1 - q) / self.count,
        }
    }

    /// The lane and step that send the probe at sweep `position`; `None` if
    /// the position is outside this shard.
    pub fn locate(&self, position: u64) -> Option<LaneStep> {
        let Shard { index, count } = self.shard;
        if position < index || !(position - index).is_multiple_of(count) {
            return None;
        }
        let k = (position - index) / count;
        Some(LaneStep {
            lane: (k % self.count) as usize,
            step: k / self.count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lanes_split_a_shard_and_honour_resume() {
        let shard = Shard { index: 1, count: 3 };
        for queues in 1..5usize {
            let lanes = Lanes::new(shard, queues);
            for resume in 0..9u64 {
                let mut ks: Vec<u64> = Vec::new();
                for q in 0..queues {
                    let l = lanes.lane(q, resume);
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

    proptest! {
        /// `locate` inverts the lanes: the probe a lane sends at a step is
        /// traced back to that lane and step, and positions of other shards
        /// to none.
        #[test]
        fn locate_inverts_lane_steps(
            count in 1u64..9,
            index_seed in 0u64..9,
            queues in 1usize..9,
            q_seed in 0usize..9,
            step in 0u64..10_000,
        ) {
            let shard = Shard { index: index_seed % count, count };
            let lanes = Lanes::new(shard, queues);
            let q = q_seed % queues;
            let lane = lanes.lane(q, 0);
            let position = lane.shard.index + step * lane.shard.count;
            prop_assert_eq!(lanes.locate(position), Some(LaneStep { lane: q, step }));
            if count > 1 {
                let other = position + 1;
                prop_assert_eq!(lanes.locate(other), None);
            }
        }
    }
}
