//! `palisade doctor`: observes the machine (kernel, capabilities, memlock,
//! clock), the interface (starting the data path there and stopping it,
//! sending nothing), and with `-c` the configuration's targets (routes,
//! next hops), store and NATS sinks; the verdicts are `palisade::doctor`'s.
//! Exit 0 when ready, 1 when a check failed, 2 on bad usage.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use palisade::config::{Config, SinkTarget};
use palisade::doctor::{self, Check, InterfaceFacts, RouteFacts, RouteHop, StoreFacts};
use palisade_dataplane::netlink::Rtnl;
use palisade_dataplane::privilege::{self, CapSet};

use super::{OutputFormat, load_config};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The configuration to check (its targets, store and sinks); without
    /// it, only the machine (and `--interface`).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The interface to check when the configuration names none (default:
    /// the route to the first target).
    #[arg(short = 'i', long, value_name = "IFACE")]
    interface: Option<String>,
    /// `text` (a checklist) or `json` (one object: `ready` and `checks`).
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
}

pub fn run(args: &DoctorArgs) -> Result<ExitCode> {
    let config = match &args.config {
        Some(path) => match load_config(path) {
            Ok(c) => Some(c),
            Err(code) => return Ok(code),
        },
        None => None,
    };
    let checks = gather(args, config.as_ref());
    let ready = doctor::ready(&checks);
    match args.format {
        OutputFormat::Jsonl => {
            let doc = serde_json::json!({ "ready": ready, "checks": checks });
            println!("{doc}");
        }
        OutputFormat::Text => print_text(&checks, ready),
    }
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_text(checks: &[Check], ready: bool) {
    for c in checks {
        println!("{:<4}  {:<12}  {}", c.status.mark(), c.check, c.detail);
        if let Some(fix) = &c.fix {
            println!("{:<4}  {:<12}  fix: {fix}", "", "");
        }
    }
    let failed = checks
        .iter()
        .filter(|c| c.status == doctor::Status::Fail)
        .count();
    if ready {
        println!("ready");
    } else {
        println!("not ready: {failed} check(s) failed");
    }
}

fn gather(args: &DoctorArgs, config: Option<&Config>) -> Vec<Check> {
    let mut checks = Vec::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    checks.push(doctor::kernel(&release));
    let caps = CapSet::effective();
    checks.push(match &caps {
        Ok(caps) => doctor::capabilities(*caps),
        Err(e) => Check::warn(
            "capabilities",
            format!("cannot read CapEff from /proc/self/status: {e}"),
            "run where /proc is mounted",
        ),
    });
    let caps = caps.unwrap_or_default();

    // The targets and the interface they leave through.
    let targets = config.map(targets).unwrap_or_default();
    let mut rtnl = Rtnl::new();
    let routed_if = targets.iter().find_map(|t| match (t, &mut rtnl) {
        (Ok(ip), Ok(r)) => r
            .route(*ip)
            .ok()
            .and_then(|r| palisade_dataplane::ifname(r.ifindex).ok()),
        _ => None,
    });
    let ifname = config
        .and_then(|c| c.scan.interface.clone())
        .or_else(|| args.interface.clone())
        .or(routed_if);

    let mut queues = None;
    match &ifname {
        None => checks.push(Check::skip(
            "interface",
            "no interface to check: pass --interface, or -c with monitors",
        )),
        Some(name) => {
            let facts = interface_facts(name);
            let exists = facts.operstate.is_some();
            checks.push(doctor::interface(&facts));
            if exists {
                let trial = palisade_dataplane::try_data_path(name, None);
                if let Ok(t) = &trial {
                    queues = Some(t.queues);
                }
                checks.extend(doctor::data_path(name, &trial));
            }
            if queues.is_none() {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                queues = Some(facts.tx_queues.clamp(1, cores));
            }
        }
    }
    match privilege::memlock_limit() {
        Ok(limit) => checks.push(doctor::memlock(caps, limit, queues.unwrap_or(1))),
        Err(e) => checks.push(Check::warn(
            "memlock",
            format!("cannot read RLIMIT_MEMLOCK: {e}"),
            "AmbientCapabilities=CAP_IPC_LOCK in palisade.service",
        )),
    }

    if let Some(config) = config {
        match rtnl {
            Ok(mut r) => checks.extend(route_checks(&mut r, &targets, config, ifname.as_deref())),
            Err(e) => checks.push(Check::fail(
                "route",
                format!("cannot read the kernel's routes: {e}"),
                "run on Linux with rtnetlink",
            )),
        }
        checks.push(doctor::store(&store_facts(&config.store.path)));
        checks.extend(nats_checks(config));
    }
    checks.push(doctor::clock(
        &palisade_dataplane::host::clock_state().map_err(|e| e.to_string()),
    ));
    checks
}

/// Every address of every monitor's host, or why a host has none.
fn targets(config: &Config) -> Vec<Result<IpAddr, String>> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for m in &config.monitors {
        match palisade::resolve::resolve_host(&m.host) {
            Ok(addrs) => out.extend(addrs.into_iter().filter(|a| seen.insert(*a)).map(Ok)),
            Err(e) => out.push(Err(format!("monitor {}: {e}", m.name))),
        }
    }
    out
}

fn interface_facts(name: &str) -> InterfaceFacts {
    let dir = Path::new("/sys/class/net").join(name);
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let driver = std::fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| {
            Path::new("/sys/devices/virtual/net")
                .join(name)
                .exists()
                .then(|| "virtual".to_string())
        });
    InterfaceFacts {
        name: name.to_string(),
        operstate: read("operstate"),
        driver,
        tx_queues: palisade_dataplane::tx_queues(name),
    }
}

/// At most this many failed targets are listed one by one.
const ROUTE_FAILURES_SHOWN: usize = 10;

fn route_checks(
    rtnl: &mut Rtnl,
    targets: &[Result<IpAddr, String>],
    config: &Config,
    ifname: Option<&str>,
) -> Vec<Check> {
    if targets.is_empty() {
        return vec![Check::warn(
            "route",
            "no monitors: nothing to scan",
            "add [[monitor]] sections to the configuration",
        )];
    }
    let mut neighbours: BTreeMap<(u32, IpAddr), Result<Option<String>, String>> = BTreeMap::new();
    let mut failed = Vec::new();
    let mut ok = 0usize;
    let mut example = None;
    for t in targets {
        let check = match t {
            Err(e) => Check::fail("route", e.clone(), "fix the host name or its DNS records"),
            Ok(ip) => {
                let facts = route_facts(rtnl, *ip, config, &mut neighbours);
                doctor::route(&facts, ifname)
            }
        };
        if check.status == doctor::Status::Fail {
            failed.push(check);
        } else {
            ok += 1;
            example.get_or_insert(check);
        }
    }
    let total = targets.len();
    let mut out = Vec::new();
    if let Some(mut c) = example {
        if ok > 1 {
            c.detail = format!("{ok} of {total} target addresses routed, e.g. {}", c.detail);
        }
        out.push(c);
    }
    let more = failed.len().saturating_sub(ROUTE_FAILURES_SHOWN);
    out.extend(failed.into_iter().take(ROUTE_FAILURES_SHOWN));
    if more > 0 {
        out.push(Check::fail(
            "route",
            format!("and {more} more target addresses fail"),
            "fix the routes above first",
        ));
    }
    out
}

fn route_facts(
    rtnl: &mut Rtnl,
    target: IpAddr,
    config: &Config,
    neighbours: &mut BTreeMap<(u32, IpAddr), Result<Option<String>, String>>,
) -> RouteFacts {
    let route = match rtnl.route(target) {
        Ok(r) => r,
        Err(e) => {
            return RouteFacts {
                target,
                route: Err(e.to_string()),
            };
        }
    };
    let ifname = palisade_dataplane::ifname(route.ifindex).unwrap_or_else(|e| e.to_string());
    let configured = match target {
        IpAddr::V4(_) => config.scan.source_v4.map(IpAddr::V4),
        IpAddr::V6(_) => config.scan.source_v6.map(IpAddr::V6),
    };
    let next_hop = route.gateway.unwrap_or(target);
    let neighbour = if route.local {
        Ok(None)
    } else if let Some(mac) = config.scan.gateway_mac {
        Ok(Some(format!("{mac} (gateway_mac)")))
    } else {
        neighbours
            .entry((route.ifindex, next_hop))
            .or_insert_with(|| {
                rtnl.next_hop_mac(route.ifindex, next_hop, Duration::from_secs(3))
                    .map(|m| Some(palisade_core::wire::MacAddr(m).to_string()))
                    .map_err(|e| e.to_string())
            })
            .clone()
    };
    RouteFacts {
        target,
        route: Ok(RouteHop {
            ifname,
            source: configured.or(route.source),
            next_hop,
            local: route.local,
            neighbour,
        }),
    }
}

fn store_facts(path: &Path) -> StoreFacts {
    let name = path.display().to_string();
    if !path.exists() {
        return StoreFacts {
            path: name,
            exists: false,
            writable: directory_writable(path),
            size: None,
            wal: None,
        };
    }
    let writable = palisade::store::Store::connect(path)
        .and_then(|s| s.check_writable(Duration::from_secs(2)))
        .map_err(|e| e.to_string());
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal_path = path.as_os_str().to_owned();
    wal_path.push("-wal");
    let header = {
        use std::io::Read;
        let mut buf = [0u8; 100];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut buf))
            .ok()
            .map(|()| buf)
    };
    StoreFacts {
        path: name,
        exists: true,
        writable,
        size: Some(size(path) + size(Path::new(&wal_path))),
        wal: header.and_then(|h| doctor::header_is_wal(&h)),
    }
}

/// Whether a store could be created at `path`: its nearest existing
/// ancestor takes a new file (created and removed at once).
fn directory_writable(path: &Path) -> Result<(), String> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() {
            dir = Some(Path::new("."));
            continue;
        }
        if d.exists() {
            let probe = d.join(format!(".palisade-doctor-{}", std::process::id()));
            return std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map(|_| {
                    let _ = std::fs::remove_file(&probe);
                })
                .map_err(|e| format!("cannot create a file in {}: {e}", d.display()));
        }
        dir = d.parent();
    }
    Err("no existing directory above it".into())
}

fn nats_checks(config: &Config) -> Vec<Check> {
    let sinks: Vec<_> = config
        .sinks
        .iter()
        .filter_map(|s| match &s.target {
            SinkTarget::Nats(opts) => Some((s.name.clone(), opts.clone())),
            _ => None,
        })
        .collect();
    if sinks.is_empty() {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::fail(
                "nats",
                format!("cannot start an I/O runtime: {e}"),
                "check the process's limits (threads, file descriptors)",
            )];
        }
    };
    sinks
        .into_iter()
        .map(|(name, opts)| {
            let found = runtime
                .block_on(palisade_outputs::sink::inspect_stream(&opts))
                .map_err(|e| e.to_string());
            doctor::nats(&name, &opts.stream, &found)
        })
        .collect()
}
