//! The daemon at fleet scale, without packets: a million monitors.
//!
//! A configuration file of `--monitors` monitors (default 1,000,000; each
//! on an address of its own, scattered over 2001:2::/48 so that no two are
//! adjacent: the worst case for the target set), `[scan] ports` narrowed
//! to `--ports` (default 1-1024) and `rate` `--rate` (default 2,000,000:
//! the slices are as big as this machine's fastest sweep would make them).
//! The daemon itself (`palisade::daemon::Daemon`) runs, with a stand-in for
//! the data path that answers as a fleet would: every expected port open,
//! everything else closed, and, in the measured sweep, 0.1% of the probed
//! (address, port) pairs deviating (an unexpected port open, or an expected
//! one closed), spread at random.
//!
//! 1. First start: the configuration imported into an empty store.
//! 2. A baseline sweep (nothing deviates).
//! 3. The daemon is dropped and started again: **start-up** (the
//!    configuration, the import that finds nothing changed, the monitor
//!    states loaded from the store, the schedule recovered).
//! 4. A sweep with 0.1% deviations: **planning** (what is due, resolving
//!    the hosts, the slices and what each probes), **evaluating** (each
//!    monitor's scan observed and decided) and **storing** (one transaction
//!    per slice), as the daemon measures them itself.
//! 5. The events delivered to the JSON lines sink are counted: exactly one
//!    per deviation. Peak memory (VmHWM) at the end.
//!
//! `cargo bench -p palisade-benches --bench scale -- [--monitors N]
//! [--ports P] [--rate R] [--json FILE] [--keep DIR]` (`--keep`: leave the
//! configuration and the store in DIR, e.g. to time `palisade status`).

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use palisade::daemon::{Daemon, Options, now_ms, peak_rss_kib};
use palisade_core::plan::{SweepEnd, SweepReplies, SweepTargets};

/// Every monitor expects these open.
const EXPECTED: [u16; 3] = [22, 80, 443];

struct Args {
    monitors: u32,
    ports: String,
    rate: u64,
    json: Option<String>,
    keep: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut args = Args {
        monitors: 1_000_000,
        ports: "1-1024".into(),
        rate: 2_000_000,
        json: None,
        keep: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--monitors" => args.monitors = value().parse().expect("--monitors N"),
            "--ports" => args.ports = value(),
            "--rate" => args.rate = value().parse().expect("--rate R"),
            "--json" => args.json = Some(value()),
            "--keep" => args.keep = Some(value().into()),
            _ => {} // cargo bench's own flags (--bench)
        }
    }
    args
}

/// Monitor `i`'s address: 2001:2:0:X:Y::1, X and Y the high and low 16
/// bits of `i`: each in a /80 of its own, none adjacent to another.
fn address(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, (i >> 16) as u16, (i & 0xffff) as u16, 0, 0, 1)
}

fn write_config(path: &std::path::Path, dir: &std::path::Path, a: &Args) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("config"));
    writeln!(
        f,
        "[scan]\nrate = {}\nports = \"{}\"\n\n[store]\npath = \"{}\"\n",
        a.rate,
        a.ports,
        dir.join("palisade.db").display()
    )
    .unwrap();
    for i in 0..a.monitors {
        writeln!(
            f,
            "[[monitor]]\nname = \"m-{i:07}\"\nhost = \"{}\"\nexpected_open = [22, 80, 443]\nconfirm = 1\n",
            address(i)
        )
        .unwrap();
    }
    f.flush().unwrap();
}

/// The stand-in for the data path: answers as the fleet would, with
/// deviations at random (xorshift) at a mean of one per `1 / rate` pairs.
struct Fleet {
    rng: u64,
    /// The next deviating pair, counted over every pair probed so far.
    next: u64,
    /// Pairs probed so far.
    pairs: u64,
    deviations: u64,
    deviate: bool,
}

impl Fleet {
    fn new(deviate: bool) -> Fleet {
        let mut fleet = Fleet {
            rng: 0x9e37_79b9_7f4a_7c15,
            next: 0,
            pairs: 0,
            deviations: 0,
            deviate,
        };
        fleet.next = fleet.gap();
        fleet
    }

    /// A gap of 1 to 1,999 pairs: one deviation per 1,000 on average.
    fn gap(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        1 + self.rng % 1_999
    }

    fn probe(&mut self, targets: &SweepTargets) -> (SweepEnd, SweepReplies) {
        let mut replies = targets.replies();
        let ports = targets.ports();
        let ports = ports.as_slice();
        let addresses = targets
            .targets
            .v4
            .ranges()
            .iter()
            .flat_map(|&(lo, hi)| {
                (lo..=hi).map(|a| IpAddr::from(std::net::Ipv4Addr::from(a as u32)))
            })
            .chain(
                targets
                    .targets
                    .v6
                    .ranges()
                    .iter()
                    .flat_map(|&(lo, hi)| (lo..=hi).map(|a| IpAddr::from(Ipv6Addr::from(a)))),
            );
        let mut deviating = Vec::new();
        for ip in addresses {
            let end = self.pairs + ports.len() as u64;
            deviating.clear();
            while self.deviate && self.next < end {
                deviating.push(ports[(self.next - self.pairs) as usize]);
                self.next += self.gap();
            }
            self.pairs = end;
            self.deviations += deviating.len() as u64;
            for &port in &EXPECTED {
                replies.record(ip, port, !deviating.contains(&port));
            }
            for &port in deviating.iter().filter(|p| !EXPECTED.contains(p)) {
                replies.record(ip, port, true);
            }
        }
        (SweepEnd::Completed, replies)
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

fn main() {
    let a = args();
    let dir = a.keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("palisade-bench-scale-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let config = dir.join("palisade.toml");
    let events = dir.join("events.jsonl");
    let t = Instant::now();
    write_config(&config, &dir, &a);
    eprintln!(
        "scale: config of {} monitors written in {:.1} s ({:.0} MiB)",
        a.monitors,
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&config).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64
    );
    let options = Options {
        config_path: config.clone(),
        once: false,
        events: Some(events.clone()),
    };
    let stop = AtomicBool::new(false);

    let t = Instant::now();
    let mut daemon = Daemon::new(options.clone()).expect("first start");
    let first_start = t.elapsed().as_secs_f64();
    eprintln!(
        "scale: first start (import) {first_start:.2} s, RSS {:.0} MiB",
        rss_mib()
    );
    let t = Instant::now();
    let mut baseline = Fleet::new(false);
    let first = daemon
        .sweep_due_with(now_ms(), &stop, &mut |s, _| baseline.probe(s.targets))
        .expect("baseline sweep")
        .expect("every monitor is due");
    eprintln!(
        "scale: baseline sweep {:.2} s, RSS {:.0} MiB: {first:?}",
        t.elapsed().as_secs_f64(),
        rss_mib()
    );
    drop(daemon);

    let t = Instant::now();
    let mut daemon = Daemon::new(options).expect("start-up");
    let start_up = t.elapsed().as_secs_f64();
    eprintln!("scale: start-up {start_up:.2} s, RSS {:.0} MiB", rss_mib());
    let mut fleet = Fleet::new(true);
    let t = Instant::now();
    let later = now_ms() + 13 * 3_600_000;
    let report = daemon
        .sweep_due_with(later, &stop, &mut |s, _| fleet.probe(s.targets))
        .expect("sweep")
        .expect("every monitor is due");
    eprintln!(
        "scale: sweep {:.2} s, {} deviations, RSS {:.0} MiB: {report:?}",
        t.elapsed().as_secs_f64(),
        fleet.deviations,
        rss_mib()
    );
    let delivered = daemon
        .drain_for(Duration::from_secs(600))
        .expect("delivery");
    // Counted a line at a time: the file of a million events is not read
    // into memory (the peak is the daemon's, not this check's).
    let events_seen = std::fs::File::open(&events)
        .map(|f| std::io::BufReader::new(f).lines().count() as u64)
        .unwrap_or(0);
    drop(daemon);
    let peak = peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    eprintln!(
        "scale: events {events_seen} (want {}), all delivered {delivered}, peak RSS {peak:.0} MiB",
        fleet.deviations
    );
    println!(
        "{:<44} {:>10}",
        format!("{} monitors, ports {}", a.monitors, a.ports),
        "seconds"
    );
    for (what, secs) in [
        ("first start (config imported)", first_start),
        ("start-up (store load)", start_up),
        ("planning a sweep", report.plan.as_secs_f64()),
        (
            "evaluating it (0.1% deviations)",
            report.evaluate.as_secs_f64(),
        ),
        ("storing it", report.store.as_secs_f64()),
    ] {
        println!("{what:<44} {secs:>10.2}");
    }
    println!("{:<44} {:>10.0}", "peak RSS, MiB", peak);
    if let Some(json) = &a.json {
        let figures = serde_json::json!({
            "monitors": a.monitors,
            "ports": a.ports,
            "rate": a.rate,
            "slices": report.slices,
            "first_start_s": first_start,
            "start_up_s": start_up,
            "plan_s": report.plan.as_secs_f64(),
            "evaluate_s": report.evaluate.as_secs_f64(),
            "store_s": report.store.as_secs_f64(),
            "deviations": fleet.deviations,
            "events": events_seen,
            "events_exact": delivered && events_seen == fleet.deviations,
            "peak_rss_mib": peak,
        });
        if let Some(parent) = std::path::Path::new(json).parent() {
            std::fs::create_dir_all(parent).expect("the --json file's directory");
        }
        std::fs::write(json, serde_json::to_string_pretty(&figures).expect("json"))
            .expect("write --json");
    }
    if a.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
