//! Per-probe cost of the scan core: next index -> (host, port) -> cookie ->
//! a whole SYN frame with both checksums written into a UMEM-like buffer of
//! 2 KiB frames, the way the AF_XDP sender does it (a batch of probes, then a
//! batch of frames).
//!
//! Run: `cargo bench -p palisade-benches --bench probe`.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_core::probe::{CookieKey, Cookies, PortSet, Probe, Shard, Sweep, Target, TargetSet};
use palisade_core::wire::{MacAddr, SynTemplate};

const BATCH: usize = 64;
const FRAME: usize = 2048;

fn sweep(targets: &str) -> Sweep {
    let t = TargetSet::parse_arg("targets", targets).expect("targets");
    Sweep::new(&t, &PortSet::all(), 0x5eed).expect("sweep")
}

fn bench_probe(c: &mut Criterion) {
    let key = CookieKey::from_bytes(*b"palisade-bench!!");
    let (smac, dmac) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let mut umem = vec![0u8; BATCH * FRAME];
    let mut probes = [Probe {
        target: Target::V4(0),
        port: 0,
    }; BATCH];
    let mut group = c.benchmark_group("probe");
    group.throughput(Throughput::Elements(BATCH as u64));

    for (name, targets, src) in [
        (
            "ipv4_slash24_all_ports",
            "198.18.0.0/24",
            Target::V4(0xc612_ff01),
        ),
        (
            "ipv6_256_hosts_all_ports",
            "2001:2::/120",
            Target::V6(0x2001_0002_0000_0000_0000_0000_00ff_0001),
        ),
    ] {
        let sweep = sweep(targets);
        let template = match src {
            Target::V4(a) => SynTemplate::v4(smac, dmac, Ipv4Addr::from(a), 64, 65_535, 1460),
            Target::V6(a) => SynTemplate::v6(smac, dmac, Ipv6Addr::from(a), 64, 65_535, 1440),
        };
        let cookies = Cookies::new(&key, src);
        let mut iter = sweep.iter(Shard::WHOLE, 0);
        let mut sent = 0u16;
        group.bench_function(name, |b| {
            b.iter(|| {
                if iter.next_batch(&mut probes) < BATCH {
                    iter = sweep.iter(Shard::WHOLE, 0);
                }
                for (frame, probe) in umem.chunks_exact_mut(FRAME).zip(&probes) {
                    sent = sent.wrapping_add(1);
                    let sport = 40_000 + (sent & 63);
                    let seq = cookies.seq(sport, probe.target, probe.port);
                    let len = match probe.target {
                        Target::V4(d) => template.write_v4(frame, d, sport, probe.port, seq),
                        Target::V6(d) => template.write_v6(frame, d, sport, probe.port, seq),
                    };
                    black_box(len.expect("frame fits"));
                }
            })
        });
    }

    // The parts alone, to see where the time goes.
    let sweep = sweep("198.18.0.0/24");
    let mut iter = sweep.iter(Shard::WHOLE, 0);
    group.bench_function("permutation_only", |b| {
        b.iter(|| {
            if iter.next_batch(&mut probes) < BATCH {
                iter = sweep.iter(Shard::WHOLE, 0);
            }
            black_box(&probes);
        })
    });
    let cookies = Cookies::new(&key, Target::V4(1));
    let mut n = 0u32;
    group.bench_function("cookie_only", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                n = n.wrapping_add(1);
                black_box(cookies.seq(40_000, Target::V4(n), 80));
            }
        })
    });
    let template = SynTemplate::v4(smac, dmac, Ipv4Addr::new(198, 18, 255, 1), 64, 65_535, 1460);
    group.bench_function("frame_only", |b| {
        b.iter(|| {
            for (i, frame) in umem.chunks_exact_mut(FRAME).enumerate() {
                n = n.wrapping_add(1);
                black_box(
                    template
                        .write_v4(frame, n, 40_000, i as u16, n)
                        .expect("fits"),
                );
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_probe);
criterion_main!(benches);
