//! What the data path needs of the process: capabilities and the memlock
//! limit, read from the kernel (`/proc/self/status` `CapEff`,
//! `getrlimit(RLIMIT_MEMLOCK)`), and the one sentence that names what is
//! missing and the `palisade.service` line that grants it.
//!
//! A step of the data path that the kernel refuses is diagnosed here: the
//! step's error is kept unless the process really lacks what the step
//! needs (checked in the capability set, never guessed from the message).
//! The reasons, capability by capability, are in docs/DESIGN.md,
//! "Privileges"; `dist/systemd/palisade.service` grants exactly
//! [`DATA_PATH`].

use std::fmt;

/// A Linux capability the data path may need (numbers from
/// `linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Capability {
    /// `CAP_NET_ADMIN`: XDP programs, attaching them, neighbour entries.
    NetAdmin,
    /// `CAP_NET_RAW`: AF_XDP sockets.
    NetRaw,
    /// `CAP_IPC_LOCK`: locked memory beyond `RLIMIT_MEMLOCK` (the UMEM).
    IpcLock,
    /// `CAP_SYS_ADMIN`: stands in for `CAP_BPF`, `CAP_PERFMON` and, for BPF,
    /// `CAP_NET_ADMIN`; never needed.
    SysAdmin,
    /// `CAP_PERFMON`: the verifier's pointer and speculation rules.
    Perfmon,
    /// `CAP_BPF`: BPF maps, programs and links.
    Bpf,
}

/// The capabilities `palisade scan` and `palisade run` need, and why:
/// what `palisade.service` grants (`AmbientCapabilities=`) and `palisade
/// doctor` checks (measured on Linux 6.18: without any one of them the
/// scan fails; docs/DESIGN.md, "Privileges").
pub const DATA_PATH: [(Capability, &str); 5] = [
    (
        Capability::Bpf,
        "create the reply filter's maps and load it (bpf(2); kernel.unprivileged_bpf_disabled)",
    ),
    (
        Capability::Perfmon,
        "the verifier accepts the reply filter's pointer arithmetic only from a holder of CAP_PERFMON",
    ),
    (
        Capability::NetAdmin,
        "load an XDP program and attach it to the interface; have the kernel resolve the next hop (RTM_NEWNEIGH)",
    ),
    (Capability::NetRaw, "open AF_XDP sockets"),
    (
        Capability::IpcLock,
        "register the AF_XDP UMEM (8 MiB per transmit queue) beyond RLIMIT_MEMLOCK",
    ),
];

/// Every capability this module knows.
pub const ALL: [Capability; 6] = [
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::SysAdmin,
    Capability::Perfmon,
    Capability::Bpf,
];

impl Capability {
    /// The capability's number (its bit in `CapEff`).
    pub const fn number(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
            Capability::IpcLock => 14,
            Capability::SysAdmin => 21,
            Capability::Perfmon => 38,
            Capability::Bpf => 39,
        }
    }

    /// Its name, `CAP_NET_ADMIN`, as systemd and capabilities(7) spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::IpcLock => "CAP_IPC_LOCK",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }

    /// The capability named `name` (`CAP_BPF`, `cap_bpf` or `bpf`).
    pub fn parse(name: &str) -> Option<Capability> {
        let upper = name.trim().to_ascii_uppercase();
        let upper = upper.strip_prefix("CAP_").unwrap_or(&upper);
        ALL.into_iter().find(|c| &c.name()[4..] == upper)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities, as the kernel's 64-bit masks hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The process's effective capabilities (`CapEff` of `/proc/self/status`).
    pub fn effective() -> std::io::Result<CapSet> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        CapSet::from_status(&status).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no CapEff line in /proc/self/status",
            )
        })
    }

    /// The `CapEff` line of a `/proc/<pid>/status` text.
    pub fn from_status(status: &str) -> Option<CapSet> {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))?
            .trim();
        u64::from_str_radix(hex, 16).ok().map(CapSet)
    }

    /// A set of `caps`.
    pub fn of(caps: &[Capability]) -> CapSet {
        CapSet(caps.iter().fold(0, |m, c| m | 1 << c.number()))
    }

    /// Whether the set holds `cap` itself.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & (1 << cap.number()) != 0
    }

    /// Whether the kernel lets a holder of this set do what `cap` allows
    /// the data path: `CAP_SYS_ADMIN` stands in for `CAP_BPF`, `CAP_PERFMON`
    /// and (for BPF programs) `CAP_NET_ADMIN` (`bpf_capable`,
    /// `perfmon_capable`, `bpf_net_capable`).
    pub fn grants(self, cap: Capability) -> bool {
        self.contains(cap)
            || matches!(
                cap,
                Capability::Bpf | Capability::Perfmon | Capability::NetAdmin
            ) && self.contains(Capability::SysAdmin)
    }

    /// Of `needed`, those this set does not grant, in order.
    pub fn missing(self, needed: &[Capability]) -> Vec<Capability> {
        needed
            .iter()
            .copied()
            .filter(|&c| !self.grants(c))
            .collect()
    }
}

/// A step of the data path the kernel may refuse for want of a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Step {
    /// Creating the reply filter's maps (`bpf(BPF_MAP_CREATE)`).
    Maps,
    /// Loading the XDP program (`bpf(BPF_PROG_LOAD)` and the verifier).
    Load,
    /// Attaching it to the interface through a BPF link.
    Attach,
    /// Asking the kernel to resolve the next hop (`RTM_NEWNEIGH`).
    Neighbour,
    /// Opening an AF_XDP socket.
    Socket,
}

impl Step {
    /// What the step does, as the start of a sentence.
    pub const fn doing(self) -> &'static str {
        match self {
            Step::Maps => "creating the XDP filter's maps",
            Step::Load => "loading the XDP filter",
            Step::Attach => "attaching the XDP filter",
            Step::Neighbour => "resolving the next hop's MAC address",
            Step::Socket => "opening an AF_XDP socket",
        }
    }

    /// The capabilities the kernel checks for the step.
    pub const fn needs(self) -> &'static [Capability] {
        match self {
            Step::Maps => &[Capability::Bpf],
            Step::Load => &[Capability::Bpf, Capability::NetAdmin, Capability::Perfmon],
            Step::Attach => &[Capability::Bpf, Capability::NetAdmin],
            Step::Neighbour => &[Capability::NetAdmin],
            Step::Socket => &[Capability::NetRaw],
        }
    }
}

/// "CAP_BPF", "CAP_BPF and CAP_PERFMON", "CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON".
fn and_list(caps: &[Capability]) -> String {
    let names: Vec<&str> = caps.iter().map(|c| c.name()).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// The sentence for a step refused for want of `missing`: what, which
/// capabilities, and the unit line that grants them.
pub fn missing_sentence(step: Step, missing: &[Capability]) -> String {
    let names: Vec<&str> = missing.iter().map(|c| c.name()).collect();
    format!(
        "{} needs {} (AmbientCapabilities={} in palisade.service)",
        step.doing(),
        and_list(missing),
        names.join(" ")
    )
}

/// If the process lacks a capability `step` needs: the capabilities it
/// lacks. `None` when it holds them all (the refusal has another cause) or
/// its capabilities cannot be read.
pub fn lacking(step: Step) -> Option<Vec<Capability>> {
    let caps = CapSet::effective().ok()?;
    let missing = caps.missing(step.needs());
    (!missing.is_empty()).then_some(missing)
}

/// The soft `RLIMIT_MEMLOCK` in bytes; `None` when unlimited.
pub fn memlock_limit() -> std::io::Result<Option<u64>> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit that outlives the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur))
}

/// Whether locking `bytes` for AF_XDP UMEM is allowed: `CAP_IPC_LOCK`
/// skips the accounting, else the user's locked memory (all its
/// processes) must stay within the soft `RLIMIT_MEMLOCK`
/// (`xdp_umem_account_pages`). Pure: `limit` `None` is unlimited.
pub fn umem_fits(caps: CapSet, limit: Option<u64>, bytes: u64) -> bool {
    caps.contains(Capability::IpcLock) || limit.is_none_or(|l| bytes <= l)
}

/// Bytes for people: `8 MiB`, `512 KiB`, `100 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if b >= size && b.is_multiple_of(size) {
            return format!("{} {unit}", b / size);
        }
    }
    for (size, unit) in UNITS {
        if b >= size {
            return format!("{:.1} {unit}", b as f64 / size as f64);
        }
    }
    format!("{b} B")
}

/// A memlock limit for people: `8 MiB` or `unlimited`.
pub fn human_limit(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".into(), human_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_read_from_the_status_text() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000003000\nCapBnd:\t000001ffffffffff\n";
        let caps = CapSet::from_status(status).unwrap();
        assert_eq!(
            caps,
            CapSet::of(&[
                Capability::NetAdmin,
                Capability::NetRaw,
                Capability::Perfmon,
                Capability::Bpf
            ])
        );
        assert!(!caps.contains(Capability::IpcLock));
        assert_eq!(CapSet::from_status("Name: x\n"), None);
        assert_eq!(CapSet::from_status("CapEff:\tzz\n"), None);
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_perfmon_and_net_admin_only() {
        let caps = CapSet::of(&[Capability::SysAdmin]);
        assert!(caps.grants(Capability::Bpf));
        assert!(caps.grants(Capability::Perfmon));
        assert!(caps.grants(Capability::NetAdmin));
        assert!(!caps.grants(Capability::NetRaw));
        assert!(!caps.grants(Capability::IpcLock));
        assert_eq!(
            caps.missing(&DATA_PATH.map(|(c, _)| c)),
            vec![Capability::NetRaw, Capability::IpcLock]
        );
    }

    #[test]
    fn each_step_names_exactly_what_is_missing() {
        let all = CapSet::of(&DATA_PATH.map(|(c, _)| c));
        for step in [
            Step::Maps,
            Step::Load,
            Step::Attach,
            Step::Neighbour,
            Step::Socket,
        ] {
            assert_eq!(all.missing(step.needs()), vec![], "{step:?}");
            for &cap in step.needs() {
                let without = CapSet(all.0 & !(1 << cap.number()));
                assert_eq!(without.missing(step.needs()), vec![cap]);
            }
        }
        assert_eq!(
            missing_sentence(Step::Load, &[Capability::Perfmon]),
            "loading the XDP filter needs CAP_PERFMON (AmbientCapabilities=CAP_PERFMON in palisade.service)"
        );
        assert_eq!(
            missing_sentence(
                Step::Load,
                &[Capability::Bpf, Capability::NetAdmin, Capability::Perfmon]
            ),
            "loading the XDP filter needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON \
             (AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON in palisade.service)"
        );
    }

    #[test]
    fn names_parse_both_ways() {
        for c in ALL {
            assert_eq!(Capability::parse(c.name()), Some(c));
            assert_eq!(
                Capability::parse(&c.name().to_ascii_lowercase()[4..]),
                Some(c)
            );
        }
        assert_eq!(Capability::parse("CAP_CHOWN"), None);
    }

    #[test]
    fn umem_accounting_follows_the_kernel() {
        let none = CapSet::default();
        let lock = CapSet::of(&[Capability::IpcLock]);
        assert!(umem_fits(none, None, 1 << 30));
        assert!(umem_fits(none, Some(8 << 20), 8 << 20));
        assert!(!umem_fits(none, Some(8 << 20), 16 << 20));
        assert!(umem_fits(lock, Some(0), 16 << 20));
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_limit(None), "unlimited");
    }
}
