//! The simulated fleet: `ebpf/responder.bpf.c`, embedded in the binary,
//! loaded and attached with aya through a BPF link (it goes away with the
//! process, even after `kill -9`), configured from a [`FleetSpec`] and read
//! through its per-CPU counters. For tests and benchmarks only: attach it
//! to the target-side end of a testbed veth. It only answers inside the
//! benchmarking ranges (198.18.0.0/15, 2001:2::/48).
//!
//! On veth, choose the mode with the peer in mind: in driver mode the
//! frames it sends back (XDP_TX) reach the peer only while the peer has a
//! native XDP program attached (GRO on the peer does not help on Linux 6.18:
//! the frames are queued and never delivered); generic mode reaches any peer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::links::FdLink;
use aya::{Ebpf, EbpfLoader, Pod};

use palisade_core::wire::MacAddr;
use palisade_dataplane::{AttachMode, XdpError, attach_program, bpf_err};

use crate::fleet::FleetSpec;

/// The compiled responder (built by `build.rs` with clang-19).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/responder.bpf.o"));

/// Mirrors `struct config` in responder.bpf.c.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct ResponderConfig {
    enabled: u32,
    seed: u32,
    density_ppm: u32,
    loss_permille: u32,
    silent_permille: u32,
    firewalled_permille: u32,
    synproxy_permille: u32,
    rate_limit: u32,
    v4_base: u32,
    v4_mask: u32,
    v6_base: [u8; 16],
    v6_mask: [u8; 16],
    mac: [u8; 6],
    has_v4: u8,
    has_v6: u8,
    count_hosts: u32,
}

const _: () = assert!(std::mem::size_of::<ResponderConfig>() == 84);

// SAFETY: `ResponderConfig` is `repr(C)`, made of integers and byte arrays with no
// padding (10 * 4 + 16 + 16 + 6 + 1 + 1 + 4 = 84 bytes, every field at an offset
// that is a multiple of its alignment, size a multiple of 4), so every bit
// pattern is valid and it can be copied to and from the kernel.
#[allow(unsafe_code)]
unsafe impl Pod for ResponderConfig {}

/// Mirrors `struct pair` in responder.bpf.c: an always-open pair.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Pair {
    addr: [u8; 16],
    port: u16,
    family: u8,
    _pad: u8,
}

const _: () = assert!(std::mem::size_of::<Pair>() == 20);

// SAFETY: `Pair` is `repr(C)`: 16 bytes, a u16 at offset 16, two u8 at 18
// and 19; 20 bytes with no implicit padding (the explicit `_pad` is zeroed),
// so every bit pattern is valid and the kernel hashes exactly these bytes.
#[allow(unsafe_code)]
unsafe impl Pod for Pair {}

impl Pair {
    fn new(addr: IpAddr, port: u16) -> Self {
        let mut p = Pair {
            port,
            ..Pair::default()
        };
        match addr {
            IpAddr::V4(a) => {
                p.addr[..4].copy_from_slice(&a.octets());
                p.family = 4;
            }
            IpAddr::V6(a) => {
                p.addr = a.octets();
                p.family = 6;
            }
        }
        p
    }
}

/// Mirrors `struct host` in responder.bpf.c: one address as a map key.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Host {
    addr: [u8; 16],
    family: u32,
}

const _: () = assert!(std::mem::size_of::<Host>() == 20);

// SAFETY: `Host` is `repr(C)`: 16 bytes then a u32 at offset 16, 20 bytes
// with no padding, so every bit pattern is valid and the kernel hashes
// exactly these bytes.
#[allow(unsafe_code)]
unsafe impl Pod for Host {}

impl Host {
    fn new(addr: IpAddr) -> Self {
        let p = Pair::new(addr, 0);
        Host {
            addr: p.addr,
            family: u32::from(p.family),
        }
    }

    fn ip(&self) -> IpAddr {
        if self.family == 4 {
            IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
        } else {
            IpAddr::from(self.addr)
        }
    }
}

/// Mirrors `struct hits` in responder.bpf.c: the SYNs one address received.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HostHits {
    /// SYNs received.
    pub syns: u64,
    /// When the first arrived (`bpf_ktime_get_ns`, CLOCK_MONOTONIC).
    pub first_ns: u64,
    /// When the last arrived.
    pub last_ns: u64,
}

// SAFETY: `HostHits` is `repr(C)`, three u64 (24 bytes, no padding), so every
// bit pattern is valid.
#[allow(unsafe_code)]
unsafe impl Pod for HostHits {}

impl HostHits {
    /// The rate the address received, SYNs per second, from the first SYN
    /// to the last: `(syns - 1) / (last - first)`; `None` with fewer than
    /// two SYNs or no time between them.
    pub fn rate(&self) -> Option<f64> {
        let span = self.last_ns.checked_sub(self.first_ns)?;
        (self.syns >= 2 && span > 0).then(|| (self.syns - 1) as f64 * 1e9 / span as f64)
    }
}

/// The widest IPv4 block the responder answers for (a /16).
pub const MIN_PREFIX_V4: u8 = 16;
/// The widest IPv6 block the responder answers for (a /112).
pub const MIN_PREFIX_V6: u8 = 112;
/// How many explicit pairs the responder takes.
pub const MAX_EXPLICIT: usize = 65_536;
/// How many hosts the `noicmp` and `forge` maps take.
pub const MAX_MARKED_HOSTS: usize = 1024;
/// Token buckets for the rate limit: a /16 and a /112 (LRU beyond that).
const MAX_HOSTS: u32 = 131_072;

/// Whether `block` lies inside the benchmarking ranges (198.18.0.0/15,
/// 2001:2::/48), the only ones the responder answers for: a fleet elsewhere
/// would answer ARP for somebody else's addresses.
pub fn benchmarking_block(addr: IpAddr, prefix: u8) -> bool {
    match addr {
        IpAddr::V4(a) => {
            prefix >= 15 && u32::from(a) >> 17 == u32::from(Ipv4Addr::new(198, 18, 0, 0)) >> 17
        }
        IpAddr::V6(a) => prefix >= 48 && a.segments()[..3] == [0x2001, 2, 0],
    }
}

/// Everything the responder is told besides the ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderOptions {
    /// The IPv4 block (base, prefix length ≥ [`MIN_PREFIX_V4`]).
    pub block_v4: Option<(Ipv4Addr, u8)>,
    /// The IPv6 block (base, prefix length ≥ [`MIN_PREFIX_V6`]).
    pub block_v6: Option<(Ipv6Addr, u8)>,
    /// The MAC the fleet answers ARP/NDP with and sends from (the interface's).
    pub mac: MacAddr,
    /// TCP answers dropped at random, per mille.
    pub loss_permille: u32,
    /// TCP answers per second per host; 0: no limit.
    pub rate_limit: u32,
    /// Attach in this mode only; `None`: native, falling back to generic.
    pub mode: Option<AttachMode>,
    /// Count the SYNs each address receives ([`Responder::host_hits`]).
    pub count_hosts: bool,
}

/// Counters of the responder, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResponderCounters {
    /// SYNs to the block.
    pub syns: u64,
    /// SYN-ACKs sent.
    pub syn_acks: u64,
    /// RST|ACKs sent (closed ports of normal hosts).
    pub rsts: u64,
    /// Answers dropped at random (`loss_permille`).
    pub dropped_loss: u64,
    /// Answers dropped by the per-host rate limit.
    pub dropped_rate_limit: u64,
    /// ARP requests answered.
    pub arp: u64,
    /// Neighbour solicitations answered.
    pub ndp: u64,
    /// Packets passed to the kernel.
    pub passed: u64,
    /// SYNs to silent hosts (dropped).
    pub silent: u64,
    /// SYNs to closed ports of firewalled hosts (dropped).
    pub filtered: u64,
    /// RSTs to the block, e.g. the scanner's answers to SYN-ACKs (dropped).
    pub rsts_in: u64,
    /// Answers that could not be built (the frame could not be resized).
    pub tx_errors: u64,
    /// Echo requests answered.
    pub echo: u64,
    /// Echo requests to silent hosts or hosts that drop ICMP (dropped).
    pub echo_dropped: u64,
    /// TCP answers made defective (`forge`).
    pub forged: u64,
}

const COUNTERS: u32 = 15;

/// The attached responder. Dropping it detaches the program.
pub struct Responder {
    // Field order is drop order: the link goes first.
    _link: FdLink,
    counters: PerCpuArray<MapData, u64>,
    hits: HashMap<MapData, Host, HostHits>,
    _ebpf: Ebpf,
    mode: AttachMode,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn config_for(spec: &FleetSpec, opts: &ResponderOptions) -> Result<ResponderConfig, XdpError> {
    let bad = |detail: String| XdpError::Bpf {
        what: "configure the responder",
        detail,
    };
    spec.validate().map_err(bad)?;
    if opts.loss_permille > 1000 {
        return Err(bad(format!(
            "loss {} per mille is more than 1000",
            opts.loss_permille
        )));
    }
    let mut c = ResponderConfig {
        enabled: 1,
        seed: spec.seed,
        density_ppm: spec.density_ppm,
        loss_permille: opts.loss_permille,
        silent_permille: spec.silent_permille,
        firewalled_permille: spec.firewalled_permille,
        synproxy_permille: spec.synproxy_permille,
        rate_limit: opts.rate_limit,
        count_hosts: u32::from(opts.count_hosts),
        mac: opts.mac.octets(),
        ..ResponderConfig::default()
    };
    if let Some((base, prefix)) = opts.block_v4 {
        if !(MIN_PREFIX_V4..=32).contains(&prefix) {
            return Err(bad(format!(
                "IPv4 block {base}/{prefix}: the prefix must be {MIN_PREFIX_V4} to 32"
            )));
        }
        if !benchmarking_block(base.into(), prefix) {
            return Err(bad(format!(
                "IPv4 block {base}/{prefix} is outside 198.18.0.0/15"
            )));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        c.v4_base = u32::from_ne_bytes((u32::from(base) & mask).to_be_bytes());
        c.v4_mask = u32::from_ne_bytes(mask.to_be_bytes());
        c.has_v4 = 1;
    }
    if let Some((base, prefix)) = opts.block_v6 {
        if !(MIN_PREFIX_V6..=128).contains(&prefix) {
            return Err(bad(format!(
                "IPv6 block {base}/{prefix}: the prefix must be {MIN_PREFIX_V6} to 128"
            )));
        }
        if !benchmarking_block(base.into(), prefix) {
            return Err(bad(format!(
                "IPv6 block {base}/{prefix} is outside 2001:2::/48"
            )));
        }
        let mask = u128::MAX << (128 - u32::from(prefix));
        c.v6_base = (u128::from(base) & mask).to_be_bytes();
        c.v6_mask = mask.to_be_bytes();
        c.has_v6 = 1;
    }
    Ok(c)
}

impl Responder {
    /// Loads the responder, writes its configuration and the explicit pairs
    /// of `spec`, and attaches it to `ifindex`: in `opts.mode` if given, else
    /// native (driver) mode, falling back to generic.
    pub fn attach(
        ifindex: u32,
        spec: &FleetSpec,
        opts: &ResponderOptions,
    ) -> Result<Self, XdpError> {
        if ifindex == 0 {
            return Err(XdpError::NoInterface("interface index 0".into()));
        }
        let cfg = config_for(spec, opts)?;
        if spec.explicit.len() > MAX_EXPLICIT {
            return Err(bpf_err("configure the responder")(&format!(
                "{} explicit pairs, at most {MAX_EXPLICIT}",
                spec.explicit.len()
            )));
        }
        for (what, n) in [
            ("hosts that drop ICMP", spec.drops_icmp.len()),
            ("forged hosts", spec.forge.len()),
        ] {
            if n > MAX_MARKED_HOSTS {
                return Err(bpf_err("configure the responder")(&format!(
                    "{n} {what}, at most {MAX_MARKED_HOSTS}"
                )));
            }
        }
        // The maps are preallocated: size them to what this fleet needs.
        let explicit_slots = u32::try_from(spec.explicit.len().max(1)).unwrap_or(u32::MAX);
        let bucket_slots = if opts.rate_limit == 0 { 1 } else { MAX_HOSTS };
        let hit_slots = if opts.count_hosts { MAX_HOSTS } else { 1 };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("explicit", explicit_slots)
            .map_max_entries("buckets", bucket_slots)
            .map_max_entries("hits", hit_slots)
            .load(OBJECT)
            .map_err(|e| bpf_err("load the eBPF object")(&e))?;
        for (map, hosts) in [
            (
                "noicmp",
                spec.drops_icmp.iter().map(|&a| (a, 1)).collect::<Vec<_>>(),
            ),
            (
                "forge",
                spec.forge.iter().map(|&(a, f)| (a, f.code())).collect(),
            ),
        ] {
            let mut m: HashMap<&mut MapData, Host, u8> =
                HashMap::try_from(ebpf.map_mut(map).ok_or_else(|| bpf_err("find map")(&map))?)
                    .map_err(|e| bpf_err("open a host map")(&e))?;
            for (addr, value) in hosts {
                m.insert(Host::new(addr), value, 0)
                    .map_err(|e| bpf_err("write a host map")(&e))?;
            }
        }
        {
            let mut explicit: HashMap<&mut MapData, Pair, u8> = HashMap::try_from(
                ebpf.map_mut("explicit")
                    .ok_or_else(|| bpf_err("find map")(&"explicit"))?,
            )
            .map_err(|e| bpf_err("open map explicit")(&e))?;
            for &(addr, port) in &spec.explicit {
                explicit
                    .insert(Pair::new(addr, port), 1, 0)
                    .map_err(|e| bpf_err("write the explicit pairs")(&e))?;
            }
        }
        let mut config: Array<MapData, ResponderConfig> = Array::try_from(
            ebpf.take_map("config")
                .ok_or_else(|| bpf_err("find map")(&"config"))?,
        )
        .map_err(|e| bpf_err("open map config")(&e))?;
        config
            .set(0, cfg, 0)
            .map_err(|e| bpf_err("configure the responder")(&e))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("counters")
                .ok_or_else(|| bpf_err("find map")(&"counters"))?,
        )
        .map_err(|e| bpf_err("open the counters")(&e))?;
        let hits = HashMap::try_from(
            ebpf.take_map("hits")
                .ok_or_else(|| bpf_err("find map")(&"hits"))?,
        )
        .map_err(|e| bpf_err("open map hits")(&e))?;

        let (link, mode) = attach_program(&mut ebpf, "palisade_responder", ifindex, opts.mode)?;
        Ok(Responder {
            _link: link,
            counters,
            hits,
            _ebpf: ebpf,
            mode,
        })
    }

    /// How the responder is attached.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The responder's counters, summed over CPUs.
    pub fn counters(&self) -> Result<ResponderCounters, XdpError> {
        let mut v = [0u64; COUNTERS as usize];
        for (i, slot) in (0..COUNTERS).zip(v.iter_mut()) {
            *slot = self
                .counters
                .get(&i, 0)
                .map_err(|e| bpf_err("read the counters")(&e))?
                .iter()
                .sum();
        }
        Ok(ResponderCounters {
            syns: v[0],
            syn_acks: v[1],
            rsts: v[2],
            dropped_loss: v[3],
            dropped_rate_limit: v[4],
            arp: v[5],
            ndp: v[6],
            passed: v[7],
            silent: v[8],
            filtered: v[9],
            rsts_in: v[10],
            tx_errors: v[11],
            echo: v[12],
            echo_dropped: v[13],
            forged: v[14],
        })
    }

    /// The SYNs each address received, in address order (empty unless
    /// `count_hosts`).
    pub fn host_hits(&self) -> Result<Vec<(IpAddr, HostHits)>, XdpError> {
        let mut out = Vec::new();
        for item in self.hits.iter() {
            let (host, hits) = item.map_err(|e| bpf_err("read map hits")(&e))?;
            out.push((host.ip(), hits));
        }
        out.sort_by_key(|(a, _)| *a);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ResponderOptions {
        ResponderOptions {
            block_v4: Some(("198.18.0.0".parse().unwrap(), 24)),
            block_v6: Some(("2001:2::".parse().unwrap(), 120)),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            loss_permille: 0,
            rate_limit: 0,
            mode: None,
            count_hosts: false,
        }
    }

    #[test]
    fn config_layout_matches_the_c_side() {
        let c = config_for(&FleetSpec::default(), &opts()).unwrap();
        assert_eq!(c.v4_base.to_ne_bytes(), [198, 18, 0, 0]);
        assert_eq!(c.v4_mask.to_ne_bytes(), [255, 255, 255, 0]);
        assert_eq!(&c.v6_base[..4], &[0x20, 0x01, 0, 2]);
        assert_eq!(&c.v6_mask[14..], &[0xff, 0]);
        assert_eq!((c.has_v4, c.has_v6, c.enabled), (1, 1, 1));
        let p = Pair::new("198.18.0.7".parse().unwrap(), 443);
        assert_eq!(
            (&p.addr[..5], p.port, p.family),
            (&[198, 18, 0, 7, 0][..], 443, 4)
        );
    }

    #[test]
    fn too_wide_blocks_and_bad_knobs_are_refused() {
        let mut o = opts();
        o.block_v4 = Some(("198.18.0.0".parse().unwrap(), 15));
        assert!(config_for(&FleetSpec::default(), &o).is_err());
        let mut o = opts();
        o.block_v6 = Some(("2001:2::".parse().unwrap(), 111));
        assert!(config_for(&FleetSpec::default(), &o).is_err());
        let mut o = opts();
        o.block_v4 = Some(("10.0.0.0".parse().unwrap(), 24));
        assert!(config_for(&FleetSpec::default(), &o).is_err());
        let mut o = opts();
        o.block_v6 = Some(("2001:db8::".parse().unwrap(), 120));
        assert!(config_for(&FleetSpec::default(), &o).is_err());
        assert!(benchmarking_block("198.19.255.0".parse().unwrap(), 24));
        assert!(!benchmarking_block("198.20.0.0".parse().unwrap(), 24));
        assert!(benchmarking_block("2001:2:0:ffff::".parse().unwrap(), 112));
        assert!(!benchmarking_block("2001:2:1::".parse().unwrap(), 112));
        let mut o = opts();
        o.loss_permille = 1001;
        assert!(config_for(&FleetSpec::default(), &o).is_err());
        let spec = FleetSpec {
            silent_permille: 1001,
            ..FleetSpec::default()
        };
        assert!(config_for(&spec, &opts()).is_err());
    }
}
