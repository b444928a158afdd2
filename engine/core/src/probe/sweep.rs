//! The sweep index space: every (host, port) pair of a sweep exactly once, in
//! a keyed pseudo-random order, split into shards and resumable by index.
//!
//! A sweep over `H` hosts and `P` ports has `N = H * P` *positions*. Position
//! `i` is mapped through a [`Permutation`] to the pair index `j`, and `j` to
//! host `j / P` and port `j % P`. Shard `s` of `k` takes the positions
//! `s, s + k, s + 2k, ...`; its `r`-th probe is position `s + r*k`, so a shard
//! resumes from any count of probes already sent. Nothing is materialised:
//! hosts are found by a binary search over the target ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strength_reduce::StrengthReducedU64;

use super::permute::{MAX_DOMAIN, Permutation};
use super::spec::{PortSet, Shard, SpecError, TargetSet};

/// A target address in the form the hot path wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// An IPv4 address, host order.
    V4(u32),
    /// An IPv6 address, host order.
    V6(u128),
}

impl From<Target> for IpAddr {
    fn from(t: Target) -> IpAddr {
        match t {
            Target::V4(a) => IpAddr::V4(Ipv4Addr::from(a)),
            Target::V6(a) => IpAddr::V6(Ipv6Addr::from(a)),
        }
    }
}

impl From<IpAddr> for Target {
    fn from(a: IpAddr) -> Target {
        match a {
            IpAddr::V4(a) => Target::V4(a.into()),
            IpAddr::V6(a) => Target::V6(a.into()),
        }
    }
}

/// One probe: which host, which port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    pub target: Target,
    pub port: u16,
}

/// Host ranges with the running count of hosts before each, for lookups.
#[derive(Debug, Clone)]
struct HostIndex {
    /// (first host index, first address, is IPv6) per range.
    starts: Vec<(u64, u128, bool)>,
    count: u64,
}

impl HostIndex {
    fn new(targets: &TargetSet) -> Self {
        let mut starts = Vec::new();
        let mut count = 0u64;
        for (set, v6) in [(&targets.v4, false), (&targets.v6, true)] {
            for &(lo, hi) in set.ranges() {
                starts.push((count, lo, v6));
                // Callers bound the total below 2^62 before building this.
                count = count
                    .saturating_add(u64::try_from((hi - lo).saturating_add(1)).unwrap_or(u64::MAX));
            }
        }
        HostIndex { starts, count }
    }

    #[inline]
    fn host(&self, i: u64) -> Target {
        let k = match self.starts.len() {
            1 => 0,
            _ => self.starts.partition_point(|&(first, _, _)| first <= i) - 1,
        };
        let (first, lo, v6) = self.starts[k];
        let addr = lo + u128::from(i - first);
        if v6 {
            Target::V6(addr)
        } else {
            Target::V4(addr as u32)
        }
    }
}

/// The index space of one sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    hosts: HostIndex,
    ports: Vec<u16>,
    ports_div: StrengthReducedU64,
    perm: Permutation,
}

impl Sweep {
    /// The sweep over `targets` x `ports`, in the order keyed by `seed`.
    pub fn new(targets: &TargetSet, ports: &PortSet, seed: u64) -> Result<Self, SpecError> {
        if targets.is_empty() {
            return Err(SpecError::NoTargets {
                what: "targets".into(),
            });
        }
        if ports.is_empty() {
            return Err(SpecError::NoPorts {
                what: "ports".into(),
            });
        }
        let host_count = targets.count();
        let port_count = ports.len() as u64;
        let too_large = SpecError::TooLarge {
            hosts: host_count,
            ports: port_count,
        };
        let total = host_count
            .checked_mul(u128::from(port_count))
            .ok_or(too_large.clone())?;
        if total > u128::from(MAX_DOMAIN) {
            return Err(too_large);
        }
        Ok(Sweep {
            hosts: HostIndex::new(targets),
            ports: ports.as_slice().to_vec(),
            ports_div: StrengthReducedU64::new(port_count),
            perm: Permutation::new(total as u64, seed),
        })
    }

    /// Number of probes in the whole sweep (hosts x ports).
    pub fn len(&self) -> u64 {
        self.perm.len()
    }

    /// Never true: a sweep has at least one host and one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first IPv4 and the first IPv6 target, if the sweep has any: what
    /// a scanner looks its routes up for.
    pub fn first_targets(&self) -> (Option<Target>, Option<Target>) {
        let first = |v6: bool| {
            self.hosts
                .starts
                .iter()
                .find(|s| s.2 == v6)
                .map(|&(_, lo, _)| {
                    if v6 {
                        Target::V6(lo)
                    } else {
                        Target::V4(lo as u32)
                    }
                })
        };
        (first(false), first(true))
    }

    /// Number of hosts.
    pub fn host_count(&self) -> u64 {
        self.hosts.count
    }

    /// The ports, ascending.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The probe at `position` of the permuted order (`position < len()`).
    #[inline]
    pub fn probe_at(&self, position: u64) -> Probe {
        self.probe_of_pair(self.perm.apply(position))
    }

    /// The probe at `position` and the index of its host (`0..host_count()`,
    /// in the order of the targets).
    #[inline]
    pub fn indexed_probe_at(&self, position: u64) -> (u64, Probe) {
        let j = self.perm.apply(position);
        (
            StrengthReducedU64::div_rem(j, self.ports_div).0,
            self.probe_of_pair(j),
        )
    }

    /// The probe of pair index `j` (host-major: `host * ports + port`).
    #[inline(always)]
    fn probe_of_pair(&self, j: u64) -> Probe {
        let (host, port) = StrengthReducedU64::div_rem(j, self.ports_div);
        Probe {
            target: self.hosts.host(host),
            port: self.ports[port as usize],
        }
    }

    /// The position at which `probe` is sent, if it belongs to the sweep.
    pub fn position_of(&self, probe: Probe) -> Option<u64> {
        self.locate(probe).map(|(_, position)| position)
    }

    /// The index of `probe`'s host (as [`Sweep::indexed_probe_at`] gives
    /// it) and the position at which `probe` is sent, if it belongs to the
    /// sweep.
    pub fn locate(&self, probe: Probe) -> Option<(u64, u64)> {
        let host = self.host_index(probe.target)?;
        let port = self.ports.binary_search(&probe.port).ok()? as u64;
        Some((
            host,
            self.perm.invert(host * self.ports.len() as u64 + port),
        ))
    }

    /// The index of `target` among the sweep's hosts: a binary search over
    /// the ranges (IPv4 first, each family ascending).
    fn host_index(&self, target: Target) -> Option<u64> {
        let (v6, value) = match target {
            Target::V4(a) => (false, u128::from(a)),
            Target::V6(a) => (true, a),
        };
        let starts = &self.hosts.starts;
        let k = starts
            .partition_point(|&(_, lo, is_v6)| (is_v6, lo) <= (v6, value))
            .checked_sub(1)?;
        let (first, lo, is_v6) = starts[k];
        let end = starts.get(k + 1).map_or(self.hosts.count, |s| s.0);
        (is_v6 == v6 && value - lo < u128::from(end - first)).then(|| first + (value - lo) as u64)
    }

    /// Number of probes in `shard`.
    pub fn shard_len(&self, shard: Shard) -> u64 {
        let n = self.len();
        if shard.index >= n {
            0
        } else {
            (n - shard.index).div_ceil(shard.count)
        }
    }

    /// The probes of `shard`, starting after the first `resume` of them.
    pub fn iter(&self, shard: Shard, resume: u64) -> SweepIter<'_> {
        SweepIter {
            sweep: self,
            shard,
            next: resume.min(self.shard_len(shard)),
            end: self.shard_len(shard),
        }
    }
}

/// The probes of one shard, in order. Each item carries the shard-local index
/// (the `resume` value that would restart right after it is `index + 1`).
#[derive(Debug, Clone)]
pub struct SweepIter<'a> {
    sweep: &'a Sweep,
    shard: Shard,
    next: u64,
    end: u64,
}

impl SweepIter<'_> {
    /// Shard-local index of the next probe: how many this shard has handed out.
    pub fn index(&self) -> u64 {
        self.next
    }

    /// Probes left.
    pub fn remaining(&self) -> u64 {
        self.end - self.next
    }

    /// Fills `out` with the next probes and returns how many it wrote (fewer
    /// than `out.len()` only at the end). The senders' hot path: a batch of
    /// independent permutations keeps the CPU's pipelines full.
    #[inline]
    pub fn next_batch(&mut self, out: &mut [Probe]) -> usize {
        let n = usize::try_from(self.remaining())
            .unwrap_or(usize::MAX)
            .min(out.len());
        let (first, stride) = (
            self.shard.index + self.next * self.shard.count,
            self.shard.count,
        );
        let mut pairs = [0u64; 64];
        for (k, chunk) in out[..n].chunks_mut(64).enumerate() {
            let pairs = &mut pairs[..chunk.len()];
            let start = first + (k * 64) as u64 * stride;
            self.sweep.perm.apply_strided(start, stride, pairs);
            for (slot, &j) in chunk.iter_mut().zip(pairs.iter()) {
                *slot = self.sweep.probe_of_pair(j);
            }
        }
        self.next += n as u64;
        n
    }
}

impl Iterator for SweepIter<'_> {
    type Item = (u64, Probe);

    #[inline]
    fn next(&mut self) -> Option<(u64, Probe)> {
        if self.next >= self.end {
            return None;
        }
        let k = self.next;
        self.next += 1;
        let position = self.shard.index + k * self.shard.count;
        Some((k, self.sweep.probe_at(position)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.remaining()).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn sweep(targets: &str, ports: &str, seed: u64) -> Sweep {
        Sweep::new(
            &TargetSet::parse_arg("t", targets).unwrap(),
            &PortSet::parse_arg("p", ports).unwrap(),
            seed,
        )
        .unwrap()
    }

    #[test]
    fn every_pair_exactly_once() {
        let s = sweep(
            "198.18.0.1-198.18.0.3,198.18.0.9,2001:2::1-2001:2::2",
            "1-3,443,65535",
            5,
        );
        let got: Vec<Probe> = s.iter(Shard::WHOLE, 0).map(|(_, p)| p).collect();
        assert_eq!(got.len(), 6 * 5);
        let set: HashSet<Probe> = got.iter().copied().collect();
        assert_eq!(set.len(), 30);
        for p in &got {
            let ip = IpAddr::from(p.target);
            assert!(
                [
                    "198.18.0.1",
                    "198.18.0.2",
                    "198.18.0.3",
                    "198.18.0.9",
                    "2001:2::1",
                    "2001:2::2"
                ]
                .contains(&ip.to_string().as_str())
            );
            assert!([1, 2, 3, 443, 65535].contains(&p.port));
        }
        let hosts: Vec<Target> = [
            "198.18.0.1",
            "198.18.0.2",
            "198.18.0.3",
            "198.18.0.9",
            "2001:2::1",
            "2001:2::2",
        ]
        .iter()
        .map(|a| Target::from(a.parse::<IpAddr>().unwrap()))
        .collect();
        for (i, p) in got.iter().enumerate() {
            assert_eq!(s.position_of(*p), Some(i as u64));
            let (host, probe) = s.indexed_probe_at(i as u64);
            assert_eq!(probe, *p);
            assert_eq!(hosts[host as usize], p.target, "host index of {p:?}");
            assert_eq!(s.locate(*p), Some((host, i as u64)));
        }
        for outside in [
            "198.18.0.0",
            "198.18.0.4",
            "198.18.0.10",
            "2001:2::",
            "2001:2::3",
            "::1",
        ] {
            let target = Target::from(outside.parse::<IpAddr>().unwrap());
            assert_eq!(s.locate(Probe { target, port: 1 }), None, "{outside}");
        }
        assert_eq!(
            s.position_of(Probe {
                target: Target::V4(1),
                port: 1
            }),
            None
        );
    }

    #[test]
    fn full_port_range_of_a_host() {
        let s = sweep("198.18.0.2", "-", 1);
        let mut seen = vec![false; 65536];
        for (_, p) in s.iter(Shard::WHOLE, 0) {
            assert!(!seen[p.port as usize]);
            seen[p.port as usize] = true;
        }
        assert!(!seen[0] && seen[1..].iter().all(|&b| b));
    }

    #[test]
    fn refuses_sweeps_too_large_to_index() {
        let t = TargetSet::parse_arg("t", "2001:2::/64").unwrap();
        let e = Sweep::new(&t, &PortSet::all(), 1).unwrap_err();
        assert!(matches!(e, SpecError::TooLarge { .. }), "{e}");
        // A /16 of IPv4 with all ports (about 2^32) is fine.
        let t = TargetSet::parse_arg("t", "198.18.0.0/16").unwrap();
        assert_eq!(
            Sweep::new(&t, &PortSet::all(), 1).unwrap().len(),
            65536 * 65535
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Shards are disjoint and together cover the sweep.
        #[test]
        fn shards_partition(hosts in 1u32..40, ports in 1u16..60, count in 1u64..9, seed: u64) {
            let s = sweep(&format!("198.18.0.0-198.18.{}.{}", (hosts - 1) / 256, (hosts - 1) % 256),
                          &format!("1-{ports}"), seed);
            let mut all = HashSet::new();
            let mut total = 0;
            for index in 0..count {
                let shard = Shard { index, count };
                let items: Vec<_> = s.iter(shard, 0).collect();
                prop_assert_eq!(items.len() as u64, s.shard_len(shard));
                total += items.len();
                for (_, p) in items {
                    prop_assert!(all.insert(p));
                }
            }
            prop_assert_eq!(total as u64, s.len());
        }

        /// Batches hand out the same probes as the iterator.
        #[test]
        fn batches_match_the_iterator(ports in 1u16..300, count in 1u64..4, batch in 1usize..70, seed: u64) {
            let s = sweep("198.18.0.0/30,2001:2::/127", &format!("1-{ports}"), seed);
            let shard = Shard { index: 0, count };
            let one: Vec<Probe> = s.iter(shard, 0).map(|(_, p)| p).collect();
            let mut it = s.iter(shard, 0);
            let mut buf = vec![Probe { target: Target::V4(0), port: 0 }; batch];
            let mut got = Vec::new();
            loop {
                let n = it.next_batch(&mut buf);
                got.extend_from_slice(&buf[..n]);
                if n < batch { break; }
            }
            prop_assert_eq!(one, got);
        }

        /// Resuming at any index continues exactly where a full run was.
        #[test]
        fn resume_continues_exactly(ports in 1u16..500, count in 1u64..5, seed: u64, cut in 0u64..2000) {
            let s = sweep("198.18.0.0/30", &format!("1-{ports}"), seed);
            let shard = Shard { index: count - 1, count };
            let full: Vec<_> = s.iter(shard, 0).collect();
            let cut = cut.min(full.len() as u64);
            let rest: Vec<_> = s.iter(shard, cut).collect();
            prop_assert_eq!(&full[cut as usize..], &rest[..]);
        }

        /// Sampled positions of sweeps beyond 2^32 map to distinct valid probes.
        #[test]
        fn huge_sweeps_sample_consistently(seed: u64, positions in proptest::collection::vec(any::<u64>(), 32)) {
            let s = sweep("198.18.0.0/15,2001:2::/112", "-", seed);
            prop_assert!(s.len() > 1 << 32);
            for pos in positions {
                let pos = pos % s.len();
                let probe = s.probe_at(pos);
                prop_assert_eq!(s.position_of(probe), Some(pos));
                let (host, same) = s.indexed_probe_at(pos);
                prop_assert_eq!(same, probe);
                prop_assert_eq!(s.locate(probe), Some((host, pos)));
            }
        }
    }
}
