//! Target and port specifications: parsing, excludes, and the errors that
//! name what was wrong and where it stood.
//!
//! Targets are IPv4 or IPv6 addresses, CIDR blocks (`198.18.0.0/24`,
//! `2001:2::/48`) and ranges (`198.18.0.10-198.18.0.40`). Ports are lists of
//! numbers and ranges (`22,80,443,8000-8100`), `1-65535`, or `-` for all.
//! Lists come from flags (comma- or space-separated) or from files (one or more
//! items per line, `#` starts a comment).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// Where a token stood, so an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Item `item` (1-based) of a command-line argument or config key.
    Arg { what: String, item: usize },
    /// Line `line` (1-based) of a file.
    File { path: String, line: usize },
}

impl Origin {
    /// An origin for item `item` of the argument or key `what`.
    pub fn arg(what: impl Into<String>, item: usize) -> Self {
        Origin::Arg {
            what: what.into(),
            item,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Arg { what, item } => write!(f, "{what} (item {item})"),
            Origin::File { path, line } => write!(f, "{path}:{line}"),
        }
    }
}

/// What can be wrong with a target or port specification.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("{origin}: bad target `{token}`: {reason}")]
    BadTarget {
        origin: Origin,
        token: String,
        reason: &'static str,
    },
    #[error("{origin}: bad port `{token}`: {reason}")]
    BadPort {
        origin: Origin,
        token: String,
        reason: &'static str,
    },
    #[error("{what}: no targets left after excludes")]
    NoTargets { what: String },
    #[error("{what}: no ports given")]
    NoPorts { what: String },
    #[error(
        "sweep of {hosts} hosts x {ports} ports is larger than the 2^62 probes one sweep can index"
    )]
    TooLarge { hosts: u128, ports: u64 },
    #[error("bad shard `{token}`: {reason} (expected I/N with 1 <= I <= N, e.g. 1/4)")]
    BadShard { token: String, reason: &'static str },
}

/// Splits a list into its items: commas and white space separate.
fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

/// Calls `each(origin, item)` for every item of a file's text (one or more
/// per line, `#` comments, blank lines ignored).
fn file_items<'a>(path: &'a str, text: &'a str) -> impl Iterator<Item = (Origin, &'a str)> + 'a {
    text.lines().enumerate().flat_map(move |(n, line)| {
        let line = line.split('#').next().unwrap_or("");
        items(line).map(move |item| {
            (
                Origin::File {
                    path: path.to_string(),
                    line: n + 1,
                },
                item,
            )
        })
    })
}

/// Calls `each` for every item of an argument's text.
fn arg_items<'a>(what: &'a str, text: &'a str) -> impl Iterator<Item = (Origin, &'a str)> + 'a {
    items(text)
        .enumerate()
        .map(move |(i, item)| (Origin::arg(what, i + 1), item))
}

// ---------------------------------------------------------------------------
// Address ranges

/// A set of addresses of one family as sorted, disjoint, non-adjacent
/// inclusive ranges of integers (IPv4 addresses as `u32` values widened).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u128, u128)>,
}

impl FromIterator<(u128, u128)> for RangeSet {
    /// The set of the inclusive ranges `lo..=hi` (`lo <= hi`), in any order,
    /// overlapping or not: sorted and merged once.
    fn from_iter<I: IntoIterator<Item = (u128, u128)>>(iter: I) -> RangeSet {
        let mut set = RangeSet {
            ranges: iter.into_iter().collect(),
        };
        set.normalize();
        set
    }
}

impl FromIterator<IpAddr> for TargetSet {
    /// The set of `addresses`, in any order, duplicates allowed: one sort
    /// per family, whatever their number.
    fn from_iter<I: IntoIterator<Item = IpAddr>>(addresses: I) -> TargetSet {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for address in addresses {
            match address {
                IpAddr::V4(a) => v4.push(u128::from(u32::from(a))),
                IpAddr::V6(a) => v6.push(u128::from(a)),
            }
        }
        TargetSet {
            v4: v4.into_iter().map(|a| (a, a)).collect(),
            v6: v6.into_iter().map(|a| (a, a)).collect(),
        }
    }
}

impl RangeSet {
    /// Adds the inclusive range `lo..=hi` (`lo <= hi`).
    pub fn insert(&mut self, lo: u128, hi: u128) {
        debug_assert!(lo <= hi);
        self.ranges.push((lo, hi));
        self.normalize();
    }

    fn normalize(&mut self) {
        self.ranges.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(self.ranges.len());
        for &(lo, hi) in &self.ranges {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        self.ranges = out;
    }

    /// Removes every address of `other` from this set.
    pub fn subtract(&mut self, other: &RangeSet) {
        let mut out = Vec::with_capacity(self.ranges.len());
        for &(lo, hi) in &self.ranges {
            let mut cur = lo;
            let mut done = false;
            for &(xlo, xhi) in &other.ranges {
                if xhi < cur || done {
                    continue;
                }
                if xlo > hi {
                    break;
                }
                if xlo > cur {
                    out.push((cur, xlo - 1));
                }
                if xhi >= hi {
                    done = true;
                } else {
                    cur = xhi + 1;
                }
            }
            if !done {
                out.push((cur, hi));
            }
        }
        self.ranges = out;
    }

    /// The number of addresses.
    pub fn count(&self) -> u128 {
        self.ranges.iter().fold(0u128, |acc, &(lo, hi)| {
            acc.saturating_add((hi - lo).saturating_add(1))
        })
    }

    /// Whether `value` is in the set.
    pub fn contains(&self, value: u128) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < value);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= value)
    }

    /// The inclusive ranges, sorted.
    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// A set of target addresses, IPv4 and IPv6. Build one of many scattered
/// addresses with `collect` (one sort), not [`TargetSet::insert`] one by
/// one (each insert re-sorts the ranges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSet {
    /// IPv4 addresses as `u32` values.
    pub v4: RangeSet,
    /// IPv6 addresses as `u128` values.
    pub v6: RangeSet,
}

impl TargetSet {
    /// Parses a list argument (`what` names it in errors), e.g. the positional
    /// targets or `--exclude`.
    pub fn parse_arg(what: &str, text: &str) -> Result<Self, SpecError> {
        let mut set = TargetSet::default();
        set.extend_arg(what, text)?;
        Ok(set)
    }

    /// Adds the items of a list argument.
    pub fn extend_arg(&mut self, what: &str, text: &str) -> Result<(), SpecError> {
        for (origin, item) in arg_items(what, text) {
            self.add_token(item, origin)?;
        }
        Ok(())
    }

    /// Adds the items of a file's text; errors name `path:line`.
    pub fn extend_file(&mut self, path: &str, text: &str) -> Result<(), SpecError> {
        for (origin, item) in file_items(path, text) {
            self.add_token(item, origin)?;
        }
        Ok(())
    }

    /// Adds one address, CIDR block or range.
    pub fn add_token(&mut self, token: &str, origin: Origin) -> Result<(), SpecError> {
        let bad = |reason| SpecError::BadTarget {
            origin: origin.clone(),
            token: token.to_string(),
            reason,
        };
        let (lo, hi) = parse_target(token).map_err(bad)?;
        match (lo, hi) {
            (IpAddr::V4(lo), IpAddr::V4(hi)) => {
                self.v4.insert(u32::from(lo).into(), u32::from(hi).into())
            }
            (IpAddr::V6(lo), IpAddr::V6(hi)) => self.v6.insert(u128::from(lo), u128::from(hi)),
            _ => return Err(bad("a range's ends must be of one address family")),
        }
        Ok(())
    }

    /// Adds a single address.
    pub fn insert(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => self.v4.insert(u32::from(a).into(), u32::from(a).into()),
            IpAddr::V6(a) => self.v6.insert(u128::from(a), u128::from(a)),
        }
    }

    /// Removes every address of `other`.
    pub fn subtract(&mut self, other: &TargetSet) {
        self.v4.subtract(&other.v4);
        self.v6.subtract(&other.v6);
    }

    /// Number of addresses.
    pub fn count(&self) -> u128 {
        self.v4.count().saturating_add(self.v6.count())
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.v4.contains(u32::from(a).into()),
            IpAddr::V6(a) => self.v6.contains(u128::from(a)),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

fn parse_addr(s: &str) -> Result<IpAddr, &'static str> {
    s.parse::<IpAddr>()
        .map_err(|_| "not an IPv4 or IPv6 address, CIDR block or range")
}

/// Parses one target token into its first and last address.
fn parse_target(token: &str) -> Result<(IpAddr, IpAddr), &'static str> {
    if let Some((addr, prefix)) = token.split_once('/') {
        let addr = parse_addr(addr)?;
        let prefix: u32 = prefix
            .parse()
            .map_err(|_| "the prefix length after `/` is not a number")?;
        return match addr {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    return Err("an IPv4 prefix length is at most 32");
                }
                let host_bits = 32 - prefix;
                let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
                let lo = u32::from(a) & mask;
                let hi = lo | !mask;
                Ok((Ipv4Addr::from(lo).into(), Ipv4Addr::from(hi).into()))
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return Err("an IPv6 prefix length is at most 128");
                }
                let host_bits = 128 - prefix;
                let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
                let lo = u128::from(a) & mask;
                let hi = lo | !mask;
                Ok((Ipv6Addr::from(lo).into(), Ipv6Addr::from(hi).into()))
            }
        };
    }
    if let Some((lo, hi)) = token.split_once('-') {
        let (lo, hi) = (parse_addr(lo)?, parse_addr(hi)?);
        let ordered = match (lo, hi) {
            (IpAddr::V4(l), IpAddr::V4(h)) => l <= h,
            (IpAddr::V6(l), IpAddr::V6(h)) => l <= h,
            _ => return Err("a range's ends must be of one address family"),
        };
        if !ordered {
            return Err("the range is reversed (first address above the last)");
        }
        return Ok((lo, hi));
    }
    let a = parse_addr(token)?;
    Ok((a, a))
}

// ---------------------------------------------------------------------------
// Ports

/// A set of TCP ports (1..=65535), kept as a sorted list so that the n-th
/// port is one array read on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet {
    ports: Vec<u16>,
}

impl PortSet {
    /// Every port, 1 to 65535.
    pub fn all() -> Self {
        PortSet {
            ports: (1..=u16::MAX).collect(),
        }
    }

    /// Builds a set from ports (0 is refused by the parsers, never stored).
    pub fn from_ports(ports: impl IntoIterator<Item = u16>) -> Self {
        let mut ports: Vec<u16> = ports.into_iter().filter(|&p| p != 0).collect();
        ports.sort_unstable();
        ports.dedup();
        PortSet { ports }
    }

    /// Parses a port list argument (`what` names it in errors).
    pub fn parse_arg(what: &str, text: &str) -> Result<Self, SpecError> {
        let mut bits = PortBits::default();
        for (origin, item) in arg_items(what, text) {
            bits.add_token(item, origin)?;
        }
        bits.finish(what)
    }

    /// Parses a port list file; errors name `path:line`.
    pub fn parse_file(path: &str, text: &str) -> Result<Self, SpecError> {
        let mut bits = PortBits::default();
        for (origin, item) in file_items(path, text) {
            bits.add_token(item, origin)?;
        }
        bits.finish(path)
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The ports, ascending.
    pub fn as_slice(&self) -> &[u16] {
        &self.ports
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.ports.binary_search(&port).is_ok()
    }

    /// Removes the ports of `other`.
    pub fn subtract(&mut self, other: &PortSet) {
        self.ports.retain(|p| !other.contains(*p));
    }
}

/// Ports collected as a bitmap while parsing, so `1-65535` costs nothing.
struct PortBits {
    bits: Box<[u64; 1024]>,
}

impl Default for PortBits {
    fn default() -> Self {
        PortBits {
            bits: Box::new([0; 1024]),
        }
    }
}

impl PortBits {
    fn add_token(&mut self, token: &str, origin: Origin) -> Result<(), SpecError> {
        let bad = |reason| SpecError::BadPort {
            origin: origin.clone(),
            token: token.to_string(),
            reason,
        };
        let (lo, hi) = if token == "-" {
            (1, 65535)
        } else if let Some((lo, hi)) = token.split_once('-') {
            let lo = if lo.is_empty() {
                1
            } else {
                parse_port(lo).map_err(bad)?
            };
            let hi = if hi.is_empty() {
                65535
            } else {
                parse_port(hi).map_err(bad)?
            };
            if lo > hi {
                return Err(bad("the range is reversed (first port above the last)"));
            }
            (lo, hi)
        } else {
            let p = parse_port(token).map_err(bad)?;
            (p, p)
        };
        for p in lo..=hi {
            self.bits[usize::from(p >> 6)] |= 1 << (p & 63);
        }
        Ok(())
    }

    fn finish(self, what: &str) -> Result<PortSet, SpecError> {
        let ports: Vec<u16> = (1..=u16::MAX)
            .filter(|&p| self.bits[usize::from(p >> 6)] & (1 << (p & 63)) != 0)
            .collect();
        if ports.is_empty() {
            return Err(SpecError::NoPorts {
                what: what.to_string(),
            });
        }
        Ok(PortSet { ports })
    }
}

fn parse_port(s: &str) -> Result<u16, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a port number");
    }
    match s.parse::<u32>() {
        Ok(0) => Err("port 0 cannot be scanned; ports are 1 to 65535"),
        Ok(p) if p <= 65535 => Ok(p as u16),
        _ => Err("ports are 1 to 65535"),
    }
}

// ---------------------------------------------------------------------------
// Shards

/// One of `count` disjoint parts of a sweep: written `I/N` with 1-based `I`
/// (as masscan does); shard `I` takes every `N`-th position starting at `I-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based index of this shard.
    pub index: u64,
    /// Number of shards.
    pub count: u64,
}

impl Shard {
    /// The whole sweep as one shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };
}

impl std::str::FromStr for Shard {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let bad = |reason| SpecError::BadShard {
            token: s.to_string(),
            reason,
        };
        let (i, n) = s.split_once('/').ok_or_else(|| bad("missing `/`"))?;
        let i: u64 = i.trim().parse().map_err(|_| bad("I is not a number"))?;
        let n: u64 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        if n == 0 {
            return Err(bad("N must be at least 1"));
        }
        if i == 0 || i > n {
            return Err(bad("I must be between 1 and N"));
        }
        Ok(Shard {
            index: i - 1,
            count: n,
        })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u128 {
        u32::from(s.parse::<Ipv4Addr>().unwrap()).into()
    }

    #[test]
    fn parses_addresses_blocks_and_ranges() {
        let t = TargetSet::parse_arg(
            "targets",
            "198.18.0.1, 198.18.1.0/30 198.18.0.10-198.18.0.12,2001:2::/126",
        )
        .unwrap();
        assert_eq!(
            t.v4.ranges(),
            &[
                (v4("198.18.0.1"), v4("198.18.0.1")),
                (v4("198.18.0.10"), v4("198.18.0.12")),
                (v4("198.18.1.0"), v4("198.18.1.3"))
            ]
        );
        assert_eq!(t.v6.count(), 4);
        assert_eq!(t.count(), 1 + 3 + 4 + 4);
    }

    #[test]
    fn a_collected_set_is_the_set_of_its_addresses_inserted_one_by_one() {
        let addresses: Vec<IpAddr> = [
            "198.18.0.9",
            "2001:2::1",
            "198.18.0.7",
            "198.18.0.8",
            "198.18.0.9",
            "2001:2::3",
            "198.18.1.1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let mut one_by_one = TargetSet::default();
        for &a in &addresses {
            one_by_one.insert(a);
        }
        let collected: TargetSet = addresses.into_iter().collect();
        assert_eq!(collected, one_by_one);
        assert_eq!(
            collected.v4.ranges(),
            &[
                (v4("198.18.0.7"), v4("198.18.0.9")),
                (v4("198.18.1.1"), v4("198.18.1.1"))
            ]
        );
        assert_eq!(collected.count(), 6);
    }

    #[test]
    fn cidr_masks_host_bits_and_handles_extremes() {
        let t = TargetSet::parse_arg("t", "198.18.0.77/24").unwrap();
        assert_eq!(t.v4.ranges(), &[(v4("198.18.0.0"), v4("198.18.0.255"))]);
        assert_eq!(
            TargetSet::parse_arg("t", "0.0.0.0/0").unwrap().count(),
            1 << 32
        );
        assert_eq!(
            TargetSet::parse_arg("t", "::/0").unwrap().count(),
            u128::MAX
        );
        assert_eq!(
            TargetSet::parse_arg("t", "2001:2::5/128").unwrap().count(),
            1
        );
    }

    #[test]
    fn bad_targets_name_the_token_and_its_place() {
        let e = TargetSet::parse_arg("targets", "198.18.0.1,198.18.0.0/33").unwrap_err();
        assert_eq!(
            e.to_string(),
            "targets (item 2): bad target `198.18.0.0/33`: an IPv4 prefix length is at most 32"
        );
        for (tok, reason) in [
            ("198.18.0.9-198.18.0.1", "reversed"),
            ("198.18.0.1-2001:2::1", "one address family"),
            ("example", "not an IPv4"),
            ("198.18.0.0/x", "not a number"),
            ("2001:2::/129", "at most 128"),
            ("198.18.0.256", "not an IPv4"),
        ] {
            let e = TargetSet::parse_arg("t", tok).unwrap_err().to_string();
            assert!(e.contains(tok) && e.contains(reason), "{tok}: {e}");
        }
    }

    #[test]
    fn files_report_path_and_line() {
        let text = "# fleet\n198.18.0.1\n\n198.18.0.2 # web\n198.18.0.300\n";
        let mut t = TargetSet::default();
        let e = t.extend_file("fleet.txt", text).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("fleet.txt:5: bad target `198.18.0.300`"),
            "{e}"
        );
        let mut t = TargetSet::default();
        t.extend_file("fleet.txt", "198.18.0.1\n198.18.0.2 # web\n")
            .unwrap();
        assert_eq!(t.count(), 2);
    }

    #[test]
    fn excludes_cut_ranges() {
        let mut t = TargetSet::parse_arg("t", "198.18.0.0/24,2001:2::/120").unwrap();
        let x = TargetSet::parse_arg(
            "x",
            "198.18.0.0,198.18.0.10-198.18.0.19,198.18.0.255,2001:2::/121",
        )
        .unwrap();
        t.subtract(&x);
        assert_eq!(
            t.v4.ranges(),
            &[
                (v4("198.18.0.1"), v4("198.18.0.9")),
                (v4("198.18.0.20"), v4("198.18.0.254"))
            ]
        );
        assert_eq!(t.v6.count(), 128);
        assert!(!t.contains("198.18.0.15".parse().unwrap()));
        assert!(t.contains("198.18.0.20".parse().unwrap()));
        let everything = TargetSet::parse_arg("x", "0.0.0.0/0,::/0").unwrap();
        t.subtract(&everything);
        assert!(t.is_empty());
    }

    #[test]
    fn ports_parse_lists_ranges_and_all() {
        let p = PortSet::parse_arg("-p", "22,80,443,8000-8003,80").unwrap();
        assert_eq!(p.as_slice(), &[22, 80, 443, 8000, 8001, 8002, 8003]);
        assert_eq!(PortSet::parse_arg("-p", "-").unwrap().len(), 65535);
        assert_eq!(PortSet::parse_arg("-p", "1-65535").unwrap(), PortSet::all());
        assert_eq!(PortSet::parse_arg("-p", "65530-").unwrap().len(), 6);
    }

    #[test]
    fn bad_ports_name_the_token() {
        for (tok, reason) in [
            ("0", "port 0"),
            ("65536", "1 to 65535"),
            ("99999999999999999999", "1 to 65535"),
            ("100-90", "reversed"),
            ("http", "not a port"),
            ("+5", "not a port"),
            ("1-2-3", "not a port"),
        ] {
            let e = PortSet::parse_arg("-p", &format!("22,{tok}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("-p (item 2)") && e.contains(reason),
                "{tok}: {e}"
            );
        }
        let e = PortSet::parse_file("ports.txt", "22\n\n0\n").unwrap_err();
        assert!(e.to_string().starts_with("ports.txt:3:"), "{e}");
        assert!(matches!(
            PortSet::parse_arg("-p", " , "),
            Err(SpecError::NoPorts { .. })
        ));
    }

    #[test]
    fn the_shipped_exclude_list_parses() {
        let text = include_str!("../../../../config/exclude.conf");
        let mut x = TargetSet::default();
        x.extend_file("config/exclude.conf", text).unwrap();
        for inside in [
            "10.1.2.3",
            "192.168.0.1",
            "198.19.255.255",
            "fe80::1",
            "2001:db8::1",
        ] {
            assert!(x.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(!x.contains(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn shards_parse_one_based() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        assert_eq!("2/4".parse::<Shard>().unwrap().to_string(), "2/4");
        for bad in ["0/4", "5/4", "1/0", "x/2", "3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
