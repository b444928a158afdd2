//! The ground truth of the simulated fleet (`ebpf/responder.bpf.c`, run by
//! `palisade-sim fleet`): which hosts of a block answer how,
//! and which of their ports are open. Pure: no I/O, no clocks.
//!
//! The responder and this module compute the same thing (tests hold them to
//! it end to end), so a test or benchmark can scan the fleet and compare
//! what it found with [`FleetSpec::truth`]:
//!
//! * `words(a)`: the address as big-endian 32-bit words, one for IPv4
//!   (`u32::from(Ipv4Addr)`), four for IPv6.
//! * [`hash`]`(seed, w)`: MurmurHash3_x86_32 of the words, each encoded
//!   little-endian (4 bytes per word, so the length is `4 * w.len()`).
//! * A port is open by hash when
//!   `scale(hash(seed, words(a) ++ [port]), 1_000_000) < density_ppm`, where
//!   `scale(h, n) = (h as u64 * n) >> 32`; explicit pairs are open too.
//! * A host's class comes from `v = scale(hash(seed ^ CLASS_SALT, words(a)), 1000)`:
//!   `v < silent` is [`HostClass::Silent`], `< silent + firewalled`
//!   [`HostClass::Firewalled`], `< silent + firewalled + synproxy`
//!   [`HostClass::SynProxy`], otherwise [`HostClass::Normal`].
//! * A scanner sees a port open when the host is a SYN proxy (every port),
//!   or is normal or firewalled and the port is open; never on a silent host
//!   (not even an explicit pair). Closed ports answer RST|ACK on normal
//!   hosts and nothing on firewalled ones.
//! * Every host but a silent one answers ICMP / ICMPv6 echo, except those
//!   in [`FleetSpec::drops_icmp`] (they still answer TCP):
//!   [`FleetSpec::answers_echo`].
//! * A host in [`FleetSpec::forge`] sends every TCP answer defective (see
//!   [`Forge`]): a scanner that accepts only what the kernel would accept
//!   sees none of them, so [`FleetSpec::open`] and [`FleetSpec::truth`] have
//!   no port of it (its echo answers stay good).
//!
//! [`FleetSpec::truth`] assumes every target lies inside the responder's
//! blocks (addresses outside are not answered at all).

use std::net::IpAddr;

use palisade_core::probe::{PortSet, TargetSet};

/// Salt XORed into the seed for the host-class hash.
pub const CLASS_SALT: u32 = 0x636c_6173;
/// Salt XORed into the seed for the SYN-ACK sequence number.
pub const SEQ_SALT: u32 = 0x7365_7121;

/// How a host of the fleet behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostClass {
    /// SYN-ACK on open ports, RST|ACK on the others.
    Normal,
    /// Answers ARP/NDP but no SYN at all.
    Silent,
    /// SYN-ACK on open ports, nothing on the others.
    Firewalled,
    /// SYN-ACK on every port.
    SynProxy,
}

/// How a forged host's TCP answers are defective (the responder's
/// `FORGE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forge {
    /// A bad IPv4 header checksum (IPv4 only).
    IpChecksum,
    /// A bad TCP checksum.
    TcpChecksum,
    /// More-fragments set: an incomplete first fragment (IPv4 only).
    Fragment,
    /// A TCP data offset of 15 (60 bytes) past the IP total length.
    DataOffset,
    /// An 802.1Q tag (VLAN 100) on the frame.
    Vlan,
}

impl Forge {
    /// Every defect.
    pub const ALL: [Forge; 5] = [
        Forge::IpChecksum,
        Forge::TcpChecksum,
        Forge::Fragment,
        Forge::DataOffset,
        Forge::Vlan,
    ];

    /// The value of the responder's `forge` map.
    pub fn code(self) -> u8 {
        match self {
            Forge::IpChecksum => 1,
            Forge::TcpChecksum => 2,
            Forge::Fragment => 3,
            Forge::DataOffset => 4,
            Forge::Vlan => 5,
        }
    }

    /// The name `palisade-sim fleet --forge` takes.
    pub fn name(self) -> &'static str {
        match self {
            Forge::IpChecksum => "ip-checksum",
            Forge::TcpChecksum => "tcp-checksum",
            Forge::Fragment => "fragment",
            Forge::DataOffset => "data-offset",
            Forge::Vlan => "vlan",
        }
    }

    /// The defect called `name`.
    pub fn from_name(name: &str) -> Option<Forge> {
        Forge::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the defect exists for IPv4 only (IPv6 has no header checksum,
    /// and its fragments are extension headers).
    pub fn ipv4_only(self) -> bool {
        matches!(self, Forge::IpChecksum | Forge::Fragment)
    }
}

/// What the simulated fleet looks like: the knobs of the responder that
/// decide the ground truth (loss and rate limits do not change it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSpec {
    /// Key of every hash.
    pub seed: u32,
    /// Open ports per million (host, port) pairs, by hash.
    pub density_ppm: u32,
    /// Hosts per mille that never answer a SYN.
    pub silent_permille: u32,
    /// Hosts per mille that answer only on open ports.
    pub firewalled_permille: u32,
    /// Hosts per mille that answer SYN-ACK on every port.
    pub synproxy_permille: u32,
    /// Pairs that are open whatever the hash says (not on silent hosts).
    pub explicit: Vec<(IpAddr, u16)>,
    /// Hosts that drop ICMP: no echo answer, TCP as their class says.
    pub drops_icmp: Vec<IpAddr>,
    /// Hosts whose every TCP answer is defective, and how.
    pub forge: Vec<(IpAddr, Forge)>,
}

/// MurmurHash3_x86_32 of `words`, each encoded little-endian, with `seed`.
pub fn hash(seed: u32, words: &[u32]) -> u32 {
    let mut h = seed;
    for &w in words {
        h = block(h, w);
    }
    finish(h, words.len())
}

fn block(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

fn finish(h: u32, words: usize) -> u32 {
    // The length is in bytes, modulo 2^32 as in the reference.
    let mut h = h ^ (words as u32).wrapping_mul(4);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// `(h * n) >> 32`: `h` scaled from `[0, 2^32)` to `[0, n)`.
pub fn scale(h: u32, n: u32) -> u32 {
    ((u64::from(h) * u64::from(n)) >> 32) as u32
}

/// The address as big-endian 32-bit words (1 for IPv4, 4 for IPv6) and how
/// many there are.
pub fn addr_words(addr: IpAddr) -> ([u32; 4], usize) {
    match addr {
        IpAddr::V4(a) => ([u32::from(a), 0, 0, 0], 1),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], 4)
        }
    }
}

/// The sequence number of the responder's SYN-ACK from `host:port` to
/// `scanner:scanner_port`: `hash(seed ^ SEQ_SALT, words(scanner) ++
/// words(host) ++ [port << 16 | scanner_port])`.
pub fn syn_ack_seq(seed: u32, scanner: IpAddr, scanner_port: u16, host: IpAddr, port: u16) -> u32 {
    let (s, ns) = addr_words(scanner);
    let (d, nd) = addr_words(host);
    let mut words = Vec::with_capacity(9);
    words.extend_from_slice(&s[..ns]);
    words.extend_from_slice(&d[..nd]);
    words.push((u32::from(port) << 16) | u32::from(scanner_port));
    hash(seed ^ SEQ_SALT, &words)
}

impl FleetSpec {
    /// Whether the hash alone makes `port` of `addr` open (class and
    /// explicit pairs aside).
    pub fn hash_open(&self, addr: IpAddr, port: u16) -> bool {
        let (w, n) = addr_words(addr);
        let mut words = [0u32; 5];
        words[..n].copy_from_slice(&w[..n]);
        words[n] = u32::from(port);
        scale(hash(self.seed, &words[..=n]), 1_000_000) < self.density_ppm
    }

    /// The class of host `addr`.
    pub fn class(&self, addr: IpAddr) -> HostClass {
        let (w, n) = addr_words(addr);
        let v = scale(hash(self.seed ^ CLASS_SALT, &w[..n]), 1000);
        let mut t = self.silent_permille;
        if v < t {
            return HostClass::Silent;
        }
        t = t.saturating_add(self.firewalled_permille);
        if v < t {
            return HostClass::Firewalled;
        }
        t = t.saturating_add(self.synproxy_permille);
        if v < t {
            return HostClass::SynProxy;
        }
        HostClass::Normal
    }

    /// How `addr`'s TCP answers are defective, if they are.
    pub fn forged(&self, addr: IpAddr) -> Option<Forge> {
        self.forge.iter().find(|(a, _)| *a == addr).map(|&(_, f)| f)
    }

    /// Whether `addr` answers ICMP / ICMPv6 echo: it is not silent and does
    /// not drop ICMP.
    pub fn answers_echo(&self, addr: IpAddr) -> bool {
        self.class(addr) != HostClass::Silent && !self.drops_icmp.contains(&addr)
    }

    /// Whether a scanner sees `port` of `addr` open (a valid SYN-ACK): every
    /// port of a SYN proxy, none of a silent or forged host, else the hash or
    /// an explicit pair.
    pub fn open(&self, addr: IpAddr, port: u16) -> bool {
        if self.forged(addr).is_some() {
            return false;
        }
        match self.class(addr) {
            HostClass::Silent => false,
            HostClass::SynProxy => true,
            HostClass::Normal | HostClass::Firewalled => {
                self.hash_open(addr, port) || self.explicit.contains(&(addr, port))
            }
        }
    }

    /// Every pair of `targets` × `ports` that answers SYN-ACK, host by host
    /// in address order (IPv4 first), ports ascending.
    pub fn truth(
        &self,
        targets: &TargetSet,
        ports: &PortSet,
    ) -> impl Iterator<Item = (IpAddr, u16)> {
        let v4 = targets.v4.ranges().iter().flat_map(|&(lo, hi)| {
            (lo..=hi).map(|a| IpAddr::from(std::net::Ipv4Addr::from(a as u32)))
        });
        let v6 = targets
            .v6
            .ranges()
            .iter()
            .flat_map(|&(lo, hi)| (lo..=hi).map(|a| IpAddr::from(std::net::Ipv6Addr::from(a))));
        v4.chain(v6).flat_map(move |addr| {
            let class = if self.forged(addr).is_some() {
                HostClass::Silent // no valid answer at all
            } else {
                self.class(addr)
            };
            let extra: Vec<u16> = self
                .explicit
                .iter()
                .filter(|(a, _)| *a == addr)
                .map(|&(_, p)| p)
                .collect();
            ports.as_slice().iter().filter_map(move |&port| {
                let open = match class {
                    HostClass::Silent => false,
                    HostClass::SynProxy => true,
                    HostClass::Normal | HostClass::Firewalled => {
                        self.hash_open(addr, port) || extra.contains(&port)
                    }
                };
                open.then_some((addr, port))
            })
        })
    }

    /// Checks the knobs: density at most 1,000,000 ppm, class fractions
    /// summing to at most 1000 per mille. The message names the knob.
    pub fn validate(&self) -> Result<(), String> {
        if self.density_ppm > 1_000_000 {
            return Err(format!(
                "density {} ppm is more than 1000000",
                self.density_ppm
            ));
        }
        let classes = u64::from(self.silent_permille)
            + u64::from(self.firewalled_permille)
            + u64::from(self.synproxy_permille);
        if classes > 1000 {
            return Err(format!(
                "silent + firewalled + SYN-proxy hosts add up to {classes} per mille, more than 1000"
            ));
        }
        if let Some((a, f)) = self
            .forge
            .iter()
            .find(|(a, f)| a.is_ipv6() && f.ipv4_only())
        {
            return Err(format!(
                "forge {a}={}: that defect exists for IPv4 only",
                f.name()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
    }

    #[test]
    fn murmur3_reference_vectors() {
        // Published MurmurHash3_x86_32 vectors; a word is 4 little-endian bytes.
        assert_eq!(hash(0, &[]), 0);
        assert_eq!(hash(1, &[]), 0x514e_28b7);
        assert_eq!(hash(0xffff_ffff, &[]), 0x81f1_6f39);
        assert_eq!(hash(0, &[0x8765_4321]), 0xf55b_516b); // bytes 21 43 65 87
        assert_eq!(hash(0x5082_edee, &[0x8765_4321]), 0x2362_f9de);
        assert_eq!(hash(0, &[0]), 0x2362_f9de);
        assert_eq!(hash(0, &[0xffff_ffff]), 0x7629_3b50);
    }

    /// Fixed vectors; `tests/fleet.rs` checks the same ones against the eBPF
    /// responder (the open pairs are found by a scan of the fleet with seed
    /// 2026 and 300 ppm, the sequence numbers were seen on the wire).
    #[test]
    fn fixed_fleet_vectors() {
        assert_eq!(addr_words(v4("198.18.0.2")), ([0xc612_0002, 0, 0, 0], 1));
        assert_eq!(addr_words(v6("2001:2::5")), ([0x2001_0002, 0, 0, 5], 4));
        let spec = FleetSpec {
            seed: 2026,
            density_ppm: 300,
            ..FleetSpec::default()
        };
        for (addr, port, h) in [
            (v4("198.18.0.0"), 43, 0x0010_f00b),
            (v4("198.18.0.6"), 18_851, 0x0001_e9f0),
            (v4("198.18.0.11"), 4330, 0x0005_a9ac),
            (v6("2001:2::5"), 10_683, 0x000a_a93e),
            (v6("2001:2::d"), 65_299, 0x000a_66c0),
        ] {
            let (w, n) = addr_words(addr);
            let mut words = w[..n].to_vec();
            words.push(u32::from(port));
            assert_eq!(hash(2026, &words), h, "{addr} port {port}");
            assert!(spec.hash_open(addr, port), "{addr} port {port}");
            assert_eq!(spec.class(addr), HostClass::Normal);
        }
        let mut targets = TargetSet::default();
        targets
            .extend_arg("t", "198.18.0.0/28,2001:2::/124")
            .unwrap();
        assert_eq!(spec.truth(&targets, &PortSet::all()).count(), 617);
        assert_eq!(
            syn_ack_seq(0, v4("198.18.0.1"), 49_552, v4("198.18.0.5"), 22),
            3_781_466_621
        );
        assert_eq!(
            syn_ack_seq(0, v6("2001:2::1"), 33_150, v6("2001:2::5"), 22),
            4_185_683_622
        );
        let dense = FleetSpec {
            density_ppm: 300_000,
            ..FleetSpec::default()
        };
        let open: Vec<bool> = [
            (v4("198.18.0.5"), 23),
            (v4("198.18.0.5"), 24),
            (v4("198.18.0.5"), 25),
            (v6("2001:2::5"), 23),
            (v6("2001:2::5"), 24),
        ]
        .iter()
        .map(|&(a, p)| dense.hash_open(a, p))
        .collect();
        assert_eq!(open, [false, true, false, true, false]);
    }

    #[test]
    fn density_is_respected() {
        for (seed, ppm) in [(1u32, 300u32), (2, 10_000), (3, 500_000)] {
            let spec = FleetSpec {
                seed,
                density_ppm: ppm,
                ..FleetSpec::default()
            };
            let hosts: Vec<IpAddr> = (0u32..64)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)))
                .chain((0u128..64).map(|i| IpAddr::V6(Ipv6Addr::from(0x2001_0002 << 96 | i))))
                .collect();
            let n = hosts.len() as f64 * 65_535.0;
            let open = hosts
                .iter()
                .map(|&a| (1..=65_535u16).filter(|&p| spec.hash_open(a, p)).count())
                .sum::<usize>() as f64;
            let p = f64::from(ppm) / 1e6;
            let sd = (n * p * (1.0 - p)).sqrt();
            assert!(
                (open - n * p).abs() < 5.0 * sd,
                "seed {seed}, {ppm} ppm: {open} open of {n}, expected {}",
                n * p
            );
        }
        let none = FleetSpec::default();
        assert!(!(1..=65_535u16).any(|p| none.hash_open(v4("198.18.0.2"), p)));
        let all = FleetSpec {
            density_ppm: 1_000_000,
            ..FleetSpec::default()
        };
        assert!((1..=65_535u16).all(|p| all.hash_open(v6("2001:2::2"), p)));
    }

    #[test]
    fn class_fractions_match_the_knobs() {
        let spec = FleetSpec {
            seed: 99,
            silent_permille: 100,
            firewalled_permille: 200,
            synproxy_permille: 50,
            ..FleetSpec::default()
        };
        let mut counts = std::collections::HashMap::new();
        let n = 65_536u32;
        for i in 0..n {
            let a = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
            *counts.entry(spec.class(a)).or_insert(0u32) += 1;
        }
        for (class, permille) in [
            (HostClass::Silent, 100.0),
            (HostClass::Firewalled, 200.0),
            (HostClass::SynProxy, 50.0),
            (HostClass::Normal, 650.0),
        ] {
            let p = permille / 1000.0;
            let want = f64::from(n) * p;
            let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
            let got = f64::from(counts.get(&class).copied().unwrap_or(0));
            assert!(
                (got - want).abs() < 5.0 * sd,
                "{class:?}: {got}, want {want}"
            );
        }
        // Deterministic per seed, different across seeds.
        let other = FleetSpec {
            seed: 100,
            ..spec.clone()
        };
        let hosts: Vec<IpAddr> = (0..256u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)))
            .collect();
        let a: Vec<_> = hosts.iter().map(|&h| spec.class(h)).collect();
        let b: Vec<_> = hosts.iter().map(|&h| spec.class(h)).collect();
        let c: Vec<_> = hosts.iter().map(|&h| other.class(h)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn open_follows_the_class() {
        let base = FleetSpec {
            seed: 5,
            density_ppm: 0,
            explicit: vec![(v4("198.18.0.9"), 443)],
            ..FleetSpec::default()
        };
        let addr = v4("198.18.0.9");
        assert_eq!(base.class(addr), HostClass::Normal);
        assert!(base.open(addr, 443) && !base.open(addr, 80));
        let silent = FleetSpec {
            silent_permille: 1000,
            ..base.clone()
        };
        assert_eq!(silent.class(addr), HostClass::Silent);
        assert!(!silent.open(addr, 443));
        let proxy = FleetSpec {
            synproxy_permille: 1000,
            ..base.clone()
        };
        assert!(proxy.open(addr, 80) && proxy.open(addr, 65_535));
        let fw = FleetSpec {
            firewalled_permille: 1000,
            ..base.clone()
        };
        assert_eq!(fw.class(addr), HostClass::Firewalled);
        assert!(fw.open(addr, 443) && !fw.open(addr, 80));
    }

    #[test]
    fn truth_is_open_over_the_product() {
        let spec = FleetSpec {
            seed: 11,
            density_ppm: 20_000,
            silent_permille: 200,
            synproxy_permille: 100,
            firewalled_permille: 200,
            explicit: vec![(v4("198.18.0.3"), 1), (v6("2001:2::7"), 65_535)],
            ..FleetSpec::default()
        };
        let mut targets = TargetSet::default();
        targets
            .extend_arg("t", "198.18.0.0/28,2001:2::/124")
            .unwrap();
        let ports = PortSet::parse_arg("p", "1-2000,65535").unwrap();
        let truth: Vec<_> = spec.truth(&targets, &ports).collect();
        let mut brute = Vec::new();
        for i in 0..16u32 {
            for &p in ports.as_slice() {
                let a = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i));
                if spec.open(a, p) {
                    brute.push((a, p));
                }
            }
        }
        for i in 0..16u128 {
            for &p in ports.as_slice() {
                let a = IpAddr::V6(Ipv6Addr::from(0x2001_0002 << 96 | i));
                if spec.open(a, p) {
                    brute.push((a, p));
                }
            }
        }
        assert_eq!(truth, brute);
        assert!(!truth.is_empty());
    }

    #[test]
    fn echo_and_forging_follow_the_spec() {
        let base = FleetSpec {
            seed: 5,
            explicit: vec![(v4("198.18.0.9"), 443), (v4("198.18.0.10"), 443)],
            drops_icmp: vec![v4("198.18.0.10")],
            forge: vec![(v4("198.18.0.9"), Forge::Vlan)],
            ..FleetSpec::default()
        };
        assert!(base.answers_echo(v4("198.18.0.9")));
        assert!(!base.answers_echo(v4("198.18.0.10")));
        assert!(base.open(v4("198.18.0.10"), 443));
        assert!(!base.open(v4("198.18.0.9"), 443));
        assert_eq!(base.forged(v4("198.18.0.9")), Some(Forge::Vlan));
        let mut targets = TargetSet::default();
        targets.extend_arg("t", "198.18.0.9-198.18.0.10").unwrap();
        let truth: Vec<_> = base
            .truth(&targets, &PortSet::parse_arg("p", "443").unwrap())
            .collect();
        assert_eq!(truth, [(v4("198.18.0.10"), 443)]);
        let silent = FleetSpec {
            silent_permille: 1000,
            ..base.clone()
        };
        assert!(!silent.answers_echo(v4("198.18.0.9")));
        for f in Forge::ALL {
            assert_eq!(Forge::from_name(f.name()), Some(f));
        }
        assert_eq!(Forge::from_name("bogus"), None);
        let v6_fragment = FleetSpec {
            forge: vec![(v6("2001:2::5"), Forge::Fragment)],
            ..FleetSpec::default()
        };
        assert!(v6_fragment.validate().unwrap_err().contains("IPv4 only"));
        let v6_vlan = FleetSpec {
            forge: vec![(v6("2001:2::5"), Forge::Vlan)],
            ..FleetSpec::default()
        };
        assert!(v6_vlan.validate().is_ok());
    }

    #[test]
    fn validation_names_the_knob() {
        assert!(FleetSpec::default().validate().is_ok());
        let e = FleetSpec {
            density_ppm: 1_000_001,
            ..FleetSpec::default()
        };
        assert!(e.validate().unwrap_err().contains("density"));
        let e = FleetSpec {
            silent_permille: 600,
            synproxy_permille: 401,
            ..FleetSpec::default()
        };
        assert!(e.validate().unwrap_err().contains("per mille"));
    }
}
