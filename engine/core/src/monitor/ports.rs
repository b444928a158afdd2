//! Sets of TCP ports as the monitor keeps and reports them, compact at every
//! size: a host that answers on every port costs 8 KiB, not 65,535 objects.

use std::fmt;
use std::str::FromStr;

use roaring::RoaringBitmap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of TCP ports: a sorted array while small, an 8 KiB bitmap beyond
/// 4,096 ports (a roaring bitmap with its single container).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Ports(RoaringBitmap);

impl Ports {
    /// No port.
    pub fn new() -> Ports {
        Ports::default()
    }

    /// Adds `port`; returns whether it was new.
    pub fn insert(&mut self, port: u16) -> bool {
        self.0.insert(u32::from(port))
    }

    /// The ports `first` to `last`, inclusive.
    pub fn range(first: u16, last: u16) -> Ports {
        let mut ports = Ports::new();
        ports.0.insert_range(u32::from(first)..=u32::from(last));
        ports
    }

    /// Adds every port of `other`.
    pub fn extend_with(&mut self, other: &Ports) {
        self.0 |= &other.0;
    }

    /// The lowest port both sets hold.
    pub fn first_shared(&self, other: &Ports) -> Option<u16> {
        (&self.0 & &other.0).min().map(|p| p as u16)
    }

    /// Adds every port of `ranges`.
    pub fn insert_ranges(&mut self, ranges: &PortRanges) {
        for &(first, last) in ranges.as_slice() {
            self.0.insert_range(u32::from(first)..=u32::from(last));
        }
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(u32::from(port))
    }

    /// How many ports.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ports, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        // Only u16 values are ever inserted.
        self.0.iter().map(|p| p as u16)
    }

    /// The ports as ranges.
    pub fn ranges(&self) -> PortRanges {
        self.iter().collect()
    }
}

impl FromIterator<u16> for Ports {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Ports {
        Ports(iter.into_iter().map(u32::from).collect())
    }
}

impl<const N: usize> From<[u16; N]> for Ports {
    fn from(ports: [u16; N]) -> Ports {
        ports.into_iter().collect()
    }
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ports({})", self.ranges())
    }
}

/// Ports as ascending, disjoint, non-adjacent inclusive ranges; written (and
/// serialized) as `"22,80,8000-8100"`, the empty set as `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortRanges(Vec<(u16, u16)>);

impl PortRanges {
    /// Every port, 1-65535.
    pub fn all() -> PortRanges {
        PortRanges(vec![(1, u16::MAX)])
    }

    /// The ranges, ascending.
    pub fn as_slice(&self) -> &[(u16, u16)] {
        &self.0
    }

    /// How many ports the ranges hold.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|&(lo, hi)| u64::from(hi - lo) + 1).sum()
    }

    /// Whether there is no port.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `port` is in one of the ranges.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    /// The ports, ascending.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|&(lo, hi)| lo..=hi)
    }
}

impl FromIterator<u16> for PortRanges {
    /// Ranges of the ports, in any order, duplicates allowed.
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> PortRanges {
        let mut ports: Vec<u16> = iter.into_iter().collect();
        ports.sort_unstable();
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for p in ports {
            match ranges.last_mut() {
                Some((_, hi)) if p <= hi.saturating_add(1) => *hi = (*hi).max(p),
                _ => ranges.push((p, p)),
            }
        }
        PortRanges(ranges)
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// A port range list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad port ranges {0:?}: expected e.g. \"22,80,8000-8100\"")]
pub struct PortRangesError(String);

impl FromStr for PortRanges {
    type Err = PortRangesError;

    fn from_str(s: &str) -> Result<PortRanges, PortRangesError> {
        let bad = || PortRangesError(s.to_string());
        if s.trim().is_empty() {
            return Ok(PortRanges::default());
        }
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
            let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
            if lo > hi {
                return Err(bad());
            }
            ranges.push((lo, hi));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some((_, mhi)) if lo <= mhi.saturating_add(1) => *mhi = (*mhi).max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Ok(PortRanges(merged))
    }
}

impl Serialize for PortRanges {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRanges {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PortRanges, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ranges_are_written_as_users_write_them() {
        let r: PortRanges = [443, 22, 80, 81, 82, 8000, 8001, 22].into_iter().collect();
        assert_eq!(r.to_string(), "22,80-82,443,8000-8001");
        assert_eq!(r.count(), 7);
        assert_eq!("22, 80-82,443,8000-8001".parse::<PortRanges>(), Ok(r));
        assert_eq!("".parse::<PortRanges>(), Ok(PortRanges::default()));
        for bad in ["x", "80-", "90-80", "65536", "1,,2"] {
            assert!(bad.parse::<PortRanges>().is_err(), "{bad}");
        }
        let all: Ports = (1..=u16::MAX).collect();
        assert_eq!(all.ranges().to_string(), "1-65535");
        assert_eq!(all.len(), 65_535);
    }

    proptest! {
        #[test]
        fn ranges_round_trip(ports in proptest::collection::btree_set(any::<u16>(), 0..300)) {
            let set: Ports = ports.iter().copied().collect();
            let ranges = set.ranges();
            prop_assert_eq!(ranges.count(), ports.len() as u64);
            prop_assert_eq!(ranges.ports().collect::<Vec<_>>(), ports.iter().copied().collect::<Vec<_>>());
            let text = ranges.to_string();
            prop_assert_eq!(text.parse::<PortRanges>().unwrap(), ranges.clone());
            let json = serde_json::to_string(&ranges).unwrap();
            prop_assert_eq!(serde_json::from_str::<PortRanges>(&json).unwrap(), ranges);
            for p in ports.iter().take(20) {
                prop_assert!(set.contains(*p));
            }
        }
    }
}
