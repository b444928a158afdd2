//! `palisade doctor`: whether this machine, and a configuration's targets,
//! store and sinks, are ready, each check with a fix when it is not.
//!
//! The verdicts are pure functions of what the command observed (the
//! `*Facts` types and the results of the trials); `cmd/doctor.rs` observes
//! and prints. A [`Status::Fail`] makes the machine not ready (exit 1); a
//! [`Status::Warn`] is worth fixing but does not stop a scan.

use std::net::IpAddr;

use serde::Serialize;

use palisade_dataplane::privilege::{self, CapSet, Capability};
use palisade_dataplane::{AttachMode, DataPathTrial, XdpError};
use palisade_outputs::sink::StreamState;

/// The oldest kernel the data path runs on: `bpf_xdp_load_bytes` (5.18) in
/// the reply filter; BPF links for XDP (5.9), ring buffers (5.8),
/// `CAP_BPF` and `CAP_PERFMON` (5.8) come before.
pub const MIN_KERNEL: (u32, u32) = (5, 18);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ready.
    Ok,
    /// Not checked (nothing to check, or an earlier failure hides it).
    Skip,
    /// Works, but worth fixing.
    Warn,
    /// Not ready.
    Fail,
}

impl Status {
    /// How the text output marks it.
    pub fn mark(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skip => "skip",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is checked: `kernel`, `capabilities`, `memlock`, `interface`,
    /// `xdp`, `af_xdp`, `route`, `store`, `nats`, `clock`.
    pub check: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (a failure or warning always has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn skip(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Skip,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Ready: no check failed.
pub fn ready(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc-v657`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The kernel release against [`MIN_KERNEL`].
pub fn kernel(release: &str) -> Check {
    let (min_major, min_minor) = MIN_KERNEL;
    match kernel_version(release) {
        Some(v) if v >= MIN_KERNEL => Check::ok("kernel", format!("Linux {}", release.trim())),
        Some(_) => Check::fail(
            "kernel",
            format!(
                "Linux {} is older than {min_major}.{min_minor}, the oldest with everything the reply filter uses",
                release.trim()
            ),
            format!("upgrade to Linux {min_major}.{min_minor} or newer"),
        ),
        None => Check::warn(
            "kernel",
            format!("cannot read the kernel release {release:?}"),
            format!("make sure the kernel is Linux {min_major}.{min_minor} or newer"),
        ),
    }
}

/// The process's effective capabilities against the data path's.
pub fn capabilities(caps: CapSet) -> Check {
    let needed: Vec<Capability> = privilege::DATA_PATH.iter().map(|(c, _)| *c).collect();
    let missing = caps.missing(&needed);
    if missing.is_empty() {
        let names: Vec<&str> = needed.iter().map(|c| c.name()).collect();
        return Check::ok("capabilities", format!("holds {}", names.join(" ")));
    }
    let why: Vec<String> = missing
        .iter()
        .map(|c| {
            let reason = privilege::DATA_PATH
                .iter()
                .find(|(d, _)| d == c)
                .map_or("", |(_, r)| r);
            format!("{c} ({reason})")
        })
        .collect();
    let names: Vec<&str> = missing.iter().map(|c| c.name()).collect();
    Check::fail(
        "capabilities",
        format!("missing {}", why.join("; ")),
        format!(
            "AmbientCapabilities={} in palisade.service (and in CapabilityBoundingSet=), or run as root",
            names.join(" ")
        ),
    )
}

/// Whether the AF_XDP UMEM of `queues` sockets can be locked.
pub fn memlock(caps: CapSet, limit: Option<u64>, queues: usize) -> Check {
    let need = palisade_dataplane::xsk::memlock_need(queues);
    let limit_text = privilege::human_limit(limit);
    if caps.contains(Capability::IpcLock) {
        return Check::ok(
            "memlock",
            format!("CAP_IPC_LOCK: the UMEM is not charged to RLIMIT_MEMLOCK ({limit_text})"),
        );
    }
    if privilege::umem_fits(caps, limit, need) {
        return Check::ok(
            "memlock",
            format!(
                "RLIMIT_MEMLOCK {limit_text} ≥ {} for {queues} queue(s)",
                privilege::human_bytes(need)
            ),
        );
    }
    Check::fail(
        "memlock",
        format!(
            "RLIMIT_MEMLOCK is {limit_text}, below the {} the AF_XDP UMEM of {queues} queue(s) needs without CAP_IPC_LOCK",
            privilege::human_bytes(need)
        ),
        "AmbientCapabilities=CAP_IPC_LOCK (or LimitMEMLOCK=infinity) in palisade.service",
    )
}

/// What sysfs says of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceFacts {
    pub name: String,
    /// `None`: no such interface.
    pub operstate: Option<String>,
    /// The driver's name (`/sys/class/net/<if>/device/driver`, else the
    /// link kind).
    pub driver: Option<String>,
    /// Transmit queues.
    pub tx_queues: usize,
}

/// The interface exists and is up.
pub fn interface(f: &InterfaceFacts) -> Check {
    let Some(state) = &f.operstate else {
        return Check::fail(
            "interface",
            format!("no interface {}", f.name),
            "set [scan] interface to an existing interface (`ip link`)",
        );
    };
    let driver = f.driver.as_deref().unwrap_or("unknown driver");
    let detail = format!(
        "{} ({driver}, {} transmit queue(s)) is {state}",
        f.name, f.tx_queues
    );
    // Virtual links without carrier reporting say "unknown" when up.
    if state == "up" || state == "unknown" {
        Check::ok("interface", detail)
    } else {
        Check::fail(
            "interface",
            detail,
            format!(
                "bring it up: ip link set dev {} up (and check its cable or peer)",
                f.name
            ),
        )
    }
}

/// What starting the data path on the interface gave: the filter's XDP
/// mode and the sockets' zero-copy, or the error, whose kind says the fix.
pub fn data_path(ifname: &str, trial: &Result<DataPathTrial, XdpError>) -> Vec<Check> {
    match trial {
        Err(e) => {
            let fix = match e {
                XdpError::MissingCapability { missing, .. } => {
                    let names: Vec<&str> = missing.iter().map(|c| c.name()).collect();
                    format!("AmbientCapabilities={} in palisade.service", names.join(" "))
                }
                XdpError::Memlock { .. } => {
                    "AmbientCapabilities=CAP_IPC_LOCK (or LimitMEMLOCK=infinity) in palisade.service"
                        .to_string()
                }
                XdpError::Attach { .. } => format!(
                    "`ip link show dev {ifname}` shows the XDP program in the way: stop the other palisade, or detach it (ip link set dev {ifname} xdp off)"
                ),
                XdpError::QueueBusy { .. } => {
                    "another AF_XDP socket holds the queue: stop the other scan".to_string()
                }
                XdpError::NoInterface(_) => {
                    "set [scan] interface to an existing interface (`ip link`)".to_string()
                }
                _ => "the kernel needs BPF, XDP and AF_XDP (CONFIG_BPF_SYSCALL, CONFIG_XDP_SOCKETS); fix the cause named"
                    .to_string(),
            };
            vec![Check::fail(
                "xdp",
                format!("cannot start the data path on {ifname}: {e}"),
                fix,
            )]
        }
        Ok(t) => {
            let xdp = match t.mode {
                AttachMode::Driver => Check::ok("xdp", format!("native (driver) XDP on {ifname}")),
                AttachMode::Generic => Check::warn(
                    "xdp",
                    format!("generic (skb) XDP on {ifname}: the driver has no native XDP"),
                    "for full speed use a NIC whose driver supports native XDP (ixgbe, i40e, ice, mlx5, ...)",
                ),
            };
            let af_xdp = if t.zero_copy {
                Check::ok(
                    "af_xdp",
                    format!("{} AF_XDP socket(s), zero-copy", t.queues),
                )
            } else {
                Check::warn(
                    "af_xdp",
                    format!(
                        "{} AF_XDP socket(s), copy mode (no zero-copy on this driver)",
                        t.queues
                    ),
                    "copy mode works at lower rates; for line rate use a driver with AF_XDP zero-copy",
                )
            };
            vec![xdp, af_xdp]
        }
    }
}

/// What the kernel says of the way to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFacts {
    pub target: IpAddr,
    /// The route's interface; `Err`: no route (the kernel's answer).
    pub route: Result<RouteHop, String>,
}

/// A route's interface, source and next hop, and the next hop's MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHop {
    pub ifname: String,
    pub source: Option<IpAddr>,
    pub next_hop: IpAddr,
    /// The target is this host.
    pub local: bool,
    /// `Ok(None)`: not looked up (`gateway_mac` configured).
    pub neighbour: Result<Option<String>, String>,
}

/// The route and neighbour for one target, and whether they go out of the
/// scan's interface.
pub fn route(f: &RouteFacts, interface: Option<&str>) -> Check {
    let hop = match &f.route {
        Err(e) => {
            return Check::fail(
                "route",
                format!("no route to {}: {e}", f.target),
                format!("add a route to {} (ip route add ...)", f.target),
            );
        }
        Ok(hop) => hop,
    };
    if hop.local {
        return Check::fail(
            "route",
            format!("{} is this host's own address", f.target),
            "Palisade scans other hosts: remove it from the monitors",
        );
    }
    if let Some(want) = interface
        && want != hop.ifname
    {
        return Check::fail(
            "route",
            format!("{} is routed through {}, not {want}", f.target, hop.ifname),
            format!("route it through {want}, or set [scan] interface"),
        );
    }
    if hop.source.is_none() {
        return Check::fail(
            "route",
            format!("no source address on {} for {}", hop.ifname, f.target),
            "give the interface an address of the target's family, or set [scan] source_ip",
        );
    }
    let via = if hop.next_hop == f.target {
        "on-link".to_string()
    } else {
        format!("via {}", hop.next_hop)
    };
    match &hop.neighbour {
        Ok(mac) => Check::ok(
            "route",
            format!(
                "{} {via} on {}{}",
                f.target,
                hop.ifname,
                mac.as_ref()
                    .map_or(String::new(), |m| format!(", next hop {m}"))
            ),
        ),
        Err(e) => Check::fail(
            "route",
            format!(
                "{} {via} on {}: next hop {} does not answer ARP/NDP ({e})",
                f.target, hop.ifname, hop.next_hop
            ),
            format!(
                "check the link to {} (ip neigh show), or set [scan] gateway_mac",
                hop.next_hop
            ),
        ),
    }
}

/// What the store looks like from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFacts {
    pub path: String,
    /// The database exists.
    pub exists: bool,
    /// It opens read-write and takes the write lock (or, when it does not
    /// exist yet, its directory takes a new file); `Err`: why not.
    pub writable: Result<(), String>,
    /// Bytes of the database and its write-ahead log.
    pub size: Option<u64>,
    /// The database header says WAL (`None`: not read).
    pub wal: Option<bool>,
}

/// The SQLite header's journal mode: bytes 18 and 19 are 2 in WAL mode.
pub fn header_is_wal(header: &[u8]) -> Option<bool> {
    if header.len() < 20 || !header.starts_with(b"SQLite format 3\0") {
        return None;
    }
    Some(header[18] == 2 && header[19] == 2)
}

/// The store is writable and in WAL mode.
pub fn store(f: &StoreFacts) -> Check {
    if let Err(e) = &f.writable {
        return Check::fail(
            "store",
            format!("{} is not writable: {e}", f.path),
            format!(
                "let the daemon's user write {} and its directory (chown palisade:, a read-write file system; StateDirectory=palisade in palisade.service)",
                f.path
            ),
        );
    }
    if !f.exists {
        return Check::ok(
            "store",
            format!("{} does not exist yet; its directory is writable", f.path),
        );
    }
    let size = f
        .size
        .map_or_else(|| "size unknown".into(), privilege::human_bytes);
    match f.wal {
        Some(false) => Check::warn(
            "store",
            format!("{} ({size}) is writable but not in WAL mode", f.path),
            "start `palisade run` once (it switches the store to WAL), on a local file system",
        ),
        _ => Check::ok("store", format!("{} ({size}) writable, WAL", f.path)),
    }
}

/// A NATS sink's server and stream.
pub fn nats(sink: &str, stream: &str, found: &Result<StreamState, String>) -> Check {
    match found {
        Err(e) => Check::fail(
            "nats",
            format!("sink {sink}: {e}"),
            "start the NATS server (with JetStream) or correct the sink's url and credentials",
        ),
        Ok(StreamState::Missing) => Check::ok(
            "nats",
            format!(
                "sink {sink}: server reachable; stream {stream} missing, `palisade run` creates it with the configured settings"
            ),
        ),
        Ok(StreamState::Present {
            covers: false,
            subjects,
            ..
        }) => Check::fail(
            "nats",
            format!(
                "sink {sink}: stream {stream} exists but its subjects [{}] do not cover the sink's subject prefix",
                subjects.join(", ")
            ),
            format!(
                "add the prefix's subjects to {stream} (nats stream edit), or use another stream name"
            ),
        ),
        Ok(StreamState::Present { differences, .. }) if !differences.is_empty() => Check::warn(
            "nats",
            format!(
                "sink {sink}: stream {stream} differs from the configuration: {}",
                differences.join("; ")
            ),
            format!("nats stream edit {stream}, or change the sink's settings to match"),
        ),
        Ok(StreamState::Present { .. }) => Check::ok(
            "nats",
            format!("sink {sink}: server reachable, stream {stream} as configured"),
        ),
    }
}

/// The kernel clock's synchronisation: event times and schedules rely on it.
pub fn clock(state: &Result<palisade_dataplane::host::ClockState, String>) -> Check {
    match state {
        Ok(s) if s.synchronised => Check::ok(
            "clock",
            format!("synchronised (maximum error {} ms)", s.max_error_us / 1000),
        ),
        Ok(_) => Check::warn(
            "clock",
            "not synchronised: event times and schedules follow a drifting clock",
            "run an NTP client: systemctl enable --now systemd-timesyncd (or chrony)",
        ),
        Err(e) => Check::warn(
            "clock",
            format!("cannot read the clock's state: {e}"),
            "check that an NTP client runs (timedatectl)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(kernel_version("junk"), None);
        assert_eq!(kernel("6.18.44-fc-v657").status, Status::Ok);
        assert_eq!(kernel("5.18.0").status, Status::Ok);
        let old = kernel("5.15.0-100-generic");
        assert_eq!(old.status, Status::Fail);
        assert!(old.fix.unwrap().contains("5.18"));
        assert_eq!(kernel("?").status, Status::Warn);
    }

    #[test]
    fn capabilities_name_each_missing_one() {
        let all = CapSet::of(&privilege::DATA_PATH.map(|(c, _)| c));
        assert_eq!(capabilities(all).status, Status::Ok);
        let root = CapSet(u64::MAX >> 23);
        assert_eq!(capabilities(root).status, Status::Ok);
        let c = capabilities(CapSet::of(&[Capability::Bpf, Capability::NetAdmin]));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("CAP_PERFMON") && c.detail.contains("CAP_NET_RAW"));
        assert!(c.fix.unwrap().starts_with(
            "AmbientCapabilities=CAP_PERFMON CAP_NET_RAW CAP_IPC_LOCK in palisade.service"
        ));
    }

    #[test]
    fn memlock_needs_the_capability_or_the_limit() {
        let none = CapSet::default();
        assert_eq!(memlock(none, None, 4).status, Status::Ok);
        assert_eq!(memlock(none, Some(16 << 20), 1).status, Status::Ok);
        let short = memlock(none, Some(8 << 20), 1);
        assert_eq!(short.status, Status::Fail);
        assert!(short.detail.contains("16 MiB"), "{}", short.detail);
        assert_eq!(
            memlock(CapSet::of(&[Capability::IpcLock]), Some(0), 8).status,
            Status::Ok
        );
    }

    #[test]
    fn interfaces_up_down_missing() {
        let mut f = InterfaceFacts {
            name: "eth0".into(),
            operstate: Some("up".into()),
            driver: Some("veth".into()),
            tx_queues: 2,
        };
        assert_eq!(interface(&f).status, Status::Ok);
        f.operstate = Some("down".into());
        let down = interface(&f);
        assert_eq!(down.status, Status::Fail);
        assert!(down.fix.unwrap().contains("ip link set dev eth0 up"));
        f.operstate = None;
        assert_eq!(interface(&f).status, Status::Fail);
    }

    #[test]
    fn routes() {
        let target: IpAddr = "198.18.0.2".parse().unwrap();
        let hop = RouteHop {
            ifname: "veth0".into(),
            source: Some("198.18.0.1".parse().unwrap()),
            next_hop: target,
            local: false,
            neighbour: Ok(Some("02:00:00:00:00:02".into())),
        };
        let good = RouteFacts {
            target,
            route: Ok(hop.clone()),
        };
        assert_eq!(route(&good, Some("veth0")).status, Status::Ok);
        assert_eq!(route(&good, Some("eth1")).status, Status::Fail);
        let silent = RouteFacts {
            target,
            route: Ok(RouteHop {
                neighbour: Err("timed out".into()),
                ..hop.clone()
            }),
        };
        let c = route(&silent, None);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("gateway_mac"));
        let none = RouteFacts {
            target,
            route: Err("unreachable".into()),
        };
        assert_eq!(route(&none, None).status, Status::Fail);
    }

    #[test]
    fn stores() {
        let mut header = b"SQLite format 3\0".to_vec();
        header.extend_from_slice(&[0x10, 0, 2, 2]);
        assert_eq!(header_is_wal(&header), Some(true));
        header[18] = 1;
        assert_eq!(header_is_wal(&header), Some(false));
        assert_eq!(header_is_wal(b"nope"), None);
        let mut f = StoreFacts {
            path: "/var/lib/palisade/palisade.db".into(),
            exists: true,
            writable: Ok(()),
            size: Some(1 << 20),
            wal: Some(true),
        };
        assert_eq!(store(&f).status, Status::Ok);
        f.wal = Some(false);
        assert_eq!(store(&f).status, Status::Warn);
        f.writable = Err("attempt to write a readonly database".into());
        let c = store(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("/var/lib/palisade/palisade.db"));
    }

    #[test]
    fn nats_streams() {
        assert_eq!(
            nats("nats:PALISADE", "PALISADE", &Err("refused".into())).status,
            Status::Fail
        );
        assert_eq!(nats("n", "S", &Ok(StreamState::Missing)).status, Status::Ok);
        let present = |covers, differences: Vec<String>| StreamState::Present {
            covers,
            subjects: vec!["palisade.>".into()],
            differences,
        };
        assert_eq!(
            nats("n", "S", &Ok(present(true, vec![]))).status,
            Status::Ok
        );
        assert_eq!(
            nats("n", "S", &Ok(present(true, vec!["max_age is 1d".into()]))).status,
            Status::Warn
        );
        assert_eq!(
            nats("n", "S", &Ok(present(false, vec![]))).status,
            Status::Fail
        );
    }

    #[test]
    fn data_path_failures_say_what_to_grant() {
        let refused = Err(XdpError::MissingCapability {
            step: privilege::Step::Load,
            missing: vec![Capability::Perfmon],
        });
        let c = &data_path("eth1", &refused)[0];
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .contains("loading the XDP filter needs CAP_PERFMON"),
            "{}",
            c.detail
        );
        assert_eq!(
            c.fix.as_deref(),
            Some("AmbientCapabilities=CAP_PERFMON in palisade.service")
        );
        let busy = Err(XdpError::Attach {
            detail: "EBUSY".into(),
        });
        assert!(
            data_path("eth1", &busy)[0]
                .fix
                .as_ref()
                .unwrap()
                .contains("xdp off")
        );
        let fine = Ok(DataPathTrial {
            mode: AttachMode::Generic,
            queues: 2,
            zero_copy: false,
        });
        let checks = data_path("eth1", &fine);
        assert_eq!(
            checks.iter().map(|c| c.status).collect::<Vec<_>>(),
            vec![Status::Warn, Status::Warn]
        );
    }

    #[test]
    fn readiness_is_no_failure() {
        let checks = vec![Check::ok("a", "x"), Check::warn("b", "y", "z")];
        assert!(ready(&checks));
        let mut checks = checks;
        checks.push(Check::fail("c", "d", "e"));
        assert!(!ready(&checks));
    }
}
