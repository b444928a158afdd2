//! The sweep planner: the daemon's scheduling decisions as pure functions.
//!
//! The daemon runs *sweeps*: one permuted pass over the hosts of every
//! monitor that is due. This module decides, without I/O or clocks (callers
//! pass `now` in unix milliseconds):
//!
//! * **What runs next** ([`SweepSchedule::take_due`]): every monitor whose
//!   full sweep is due joins one full sweep (their pending re-checks are
//!   dropped: the full sweep covers those ports); only when no full sweep is
//!   due do the due re-checks run, together, as one re-check sweep.
//! * **What a sweep sends and keeps** ([`SweepTargets`]): a full sweep probes
//!   every port, a re-check sweep the union of the re-checked ports. Open
//!   replies are always kept; a closed reply (RST) is kept only for the ports
//!   the monitor state machine cares about ([`kept_ports`]), so the sea of
//!   closed ports never reaches memory.
//! * **What one monitor's scan found** ([`SweepResult::scan`]): the replies of
//!   its address within its scope, and whether the scan is conclusive. A scan
//!   is inconclusive (with a note saying why) when its host could not be
//!   resolved, or the sweep was abandoned, lost replies on the reply path, or
//!   failed ([`SweepEnd`]); the state machine then ignores it.
//! * **When a monitor is due again** ([`SweepSchedule::after_scan`]): a
//!   conclusive full scan → `started + every`; an inconclusive one → soon,
//!   `finished + min(60 s, every)`; a re-check leaves the full sweep's time
//!   alone. The state machine's re-check request replaces the pending one.
//! * **Where a restarted daemon resumes** ([`recover`]): after a crash or
//!   `kill -9`, from the monitor states the store saved, a monitor is due
//!   `every` after its last conclusive full scan (now if it never had one),
//!   and monitors the store knows but the configuration dropped are removed
//!   (which resolves their incidents).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::monitor::{
    AddressReplies, Millis, MonitorSpec, MonitorState, Observation, Ports, Scope, Step,
};
use crate::probe::{PortSet, RetryOutcome, TargetSet};

/// The longest wait before an inconclusive full scan is tried again (a
/// monitor with a shorter `every` retries after `every`).
pub const INCONCLUSIVE_RETRY_MS: Millis = 60_000;

/// A full sweep of all ports, or a re-check of some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKind {
    /// All 65,535 ports.
    Full,
    /// Only the ports with an unconfirmed deviation.
    Recheck,
}

impl ScanKind {
    /// `"full"` or `"recheck"`, as stored and as in the scan summary event.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Recheck => "recheck",
        }
    }
}

impl fmt::Display for ScanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sweep to run: its kind and, per monitor (by name), the ports its scan
/// covers, in the order the sweep takes them (the longest due first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPlan {
    pub kind: ScanKind,
    pub monitors: Vec<(Arc<str>, Scope)>,
}

impl SweepPlan {
    /// A full sweep of the named monitors (`--once`: all of them).
    pub fn full<N: Into<Arc<str>>>(names: impl IntoIterator<Item = N>) -> SweepPlan {
        SweepPlan {
            kind: ScanKind::Full,
            monitors: names.into_iter().map(|n| (n.into(), Scope::Full)).collect(),
        }
    }
}

/// When each configured monitor is due: its next full sweep and its pending
/// re-check, if any.
///
/// Each is kept twice, by name and by time, so that what is due now, and
/// when anything is due next, are found without looking at every monitor:
/// the daemon asks several times a second, of a million monitors. A name is
/// one shared allocation however often it is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepSchedule {
    due: HashMap<Arc<str>, Millis>,
    due_by_time: BTreeSet<(Millis, Arc<str>)>,
    rechecks: HashMap<Arc<str>, (Millis, BTreeSet<u16>)>,
    rechecks_by_time: BTreeSet<(Millis, Arc<str>)>,
}

impl SweepSchedule {
    /// Schedules the full sweep of a monitor at `at`, unless it already has
    /// one (a reloaded configuration keeps the times of the monitors it kept).
    pub fn add(&mut self, name: &str, at: Millis) {
        if !self.due.contains_key(name) {
            self.set_due(name.into(), at);
        }
    }

    /// The shared allocation of `name` if the schedule has it, else a new one.
    fn key(&self, name: &str) -> Arc<str> {
        self.due
            .get_key_value(name)
            .or_else(|| self.rechecks.get_key_value(name).map(|(k, v)| (k, &v.0)))
            .map_or_else(|| name.into(), |(k, _)| Arc::clone(k))
    }

    fn set_due(&mut self, name: Arc<str>, at: Millis) {
        if let Some(old) = self.due.insert(Arc::clone(&name), at) {
            self.due_by_time.remove(&(old, Arc::clone(&name)));
        }
        self.due_by_time.insert((at, name));
    }

    fn set_recheck(&mut self, name: Arc<str>, request: (Millis, BTreeSet<u16>)) {
        let at = request.0;
        if let Some((old, _)) = self.rechecks.insert(Arc::clone(&name), request) {
            self.rechecks_by_time.remove(&(old, Arc::clone(&name)));
        }
        self.rechecks_by_time.insert((at, name));
    }

    fn drop_recheck(&mut self, name: &str) -> Option<(Millis, BTreeSet<u16>)> {
        let (key, request) = self.rechecks.remove_entry(name)?;
        self.rechecks_by_time.remove(&(request.0, key));
        Some(request)
    }

    /// Makes a known monitor's full sweep due at `at` (sooner than
    /// planned: "scan now"); `false` if the monitor is not scheduled.
    pub fn scan_now(&mut self, name: &str, at: Millis) -> bool {
        match self.due.get_key_value(name) {
            Some((key, &due)) => {
                if at < due {
                    let key = Arc::clone(key);
                    self.set_due(key, at);
                }
                true
            }
            None => false,
        }
    }

    /// How many monitors are scheduled.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether no monitor is scheduled.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// When the soonest full sweep is due.
    pub fn next_full_sweep(&self) -> Option<Millis> {
        self.due_by_time.first().map(|(at, _)| *at)
    }

    /// Forgets a monitor (removed from the configuration).
    pub fn remove(&mut self, name: &str) {
        if let Some((key, at)) = self.due.remove_entry(name) {
            self.due_by_time.remove(&(at, key));
        }
        self.drop_recheck(name);
    }

    /// When the monitor's next full sweep is due.
    pub fn due_at(&self, name: &str) -> Option<Millis> {
        self.due.get(name).copied()
    }

    /// The monitor's pending re-check: when, which ports.
    pub fn recheck(&self, name: &str) -> Option<&(Millis, BTreeSet<u16>)> {
        self.rechecks.get(name)
    }

    /// The sweep to run at `now`, if any: a full sweep of every monitor due
    /// (dropping their pending re-checks), else a re-check sweep of every
    /// re-check due (taking them off the schedule); the longest due first.
    pub fn take_due(&mut self, now: Millis) -> Option<SweepPlan> {
        let full: Vec<Arc<str>> = self
            .due_by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, name)| Arc::clone(name))
            .collect();
        if !full.is_empty() {
            for name in &full {
                self.drop_recheck(name);
            }
            return Some(SweepPlan::full(full));
        }
        let due: Vec<Arc<str>> = self
            .rechecks_by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, name)| Arc::clone(name))
            .collect();
        let monitors: Vec<(Arc<str>, Scope)> = due
            .into_iter()
            .filter_map(|name| {
                let (_, ports) = self.drop_recheck(&name)?;
                Some((name, Scope::Ports(ports)))
            })
            .collect();
        (!monitors.is_empty()).then_some(SweepPlan {
            kind: ScanKind::Recheck,
            monitors,
        })
    }

    /// The earliest time something is due.
    pub fn next_wake(&self) -> Option<Millis> {
        let recheck = self.rechecks_by_time.first().map(|(at, _)| *at);
        match (self.next_full_sweep(), recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reschedules a monitor after its scan `scan`, given the state machine's
    /// re-check request for it: a full scan moves the next full sweep to
    /// `started + every` if conclusive, else to `finished + min(60 s,
    /// every)`; the request replaces any pending re-check.
    pub fn after_scan(
        &mut self,
        spec: &MonitorSpec,
        scan: &ScanFacts,
        recheck: Option<(Millis, BTreeSet<u16>)>,
    ) {
        let name = self.key(&spec.name);
        if scan.kind() == ScanKind::Full {
            let every = millis(spec.every_ms);
            let next = if scan.conclusive() {
                scan.started.saturating_add(every)
            } else {
                scan.finished
                    .saturating_add(every.min(INCONCLUSIVE_RETRY_MS))
            };
            self.set_due(Arc::clone(&name), next);
        }
        match recheck {
            Some(request) => self.set_recheck(name, request),
            None => {
                self.drop_recheck(&name);
            }
        }
    }
}

/// A duration in milliseconds as [`Millis`], saturating.
fn millis(ms: u64) -> Millis {
    Millis::try_from(ms).unwrap_or(Millis::MAX)
}

/// What the store remembers of one monitor across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedMonitor {
    pub state: MonitorState,
    /// When its last conclusive full scan started.
    pub last_full: Option<Millis>,
}

/// Where a restarted daemon resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// The state of every configured monitor (fresh if the store has none).
    pub states: BTreeMap<String, MonitorState>,
    pub schedule: SweepSchedule,
    /// Monitors the store knows but the configuration dropped, with their
    /// saved states: to remove, resolving their open incidents.
    pub removed: BTreeMap<String, MonitorState>,
}

/// Resumes from the saved monitors at `now`: each configured monitor gets its
/// saved state and is due `every` after its last conclusive full scan (now if
/// it never had one); the saved monitors left over are to be removed. A
/// sweep that was cut short (a crash, `kill -9`, a stop) thus resumes with
/// the monitors it had not stored yet.
pub fn recover(
    monitors: &[MonitorSpec],
    mut saved: BTreeMap<String, SavedMonitor>,
    now: Millis,
) -> RecoveryPlan {
    let mut plan = RecoveryPlan::default();
    for m in monitors {
        let SavedMonitor { state, last_full } = saved.remove(&m.name).unwrap_or_default();
        plan.states.insert(m.name.clone(), state);
        let due = last_full.map_or(now, |at| at.saturating_add(millis(m.every_ms)));
        plan.schedule.set_due(m.name.as_str().into(), due);
    }
    plan.removed = saved.into_iter().map(|(n, s)| (n, s.state)).collect();
    plan
}

/// The ports whose closed replies a scan of `address` for this monitor must
/// keep: the expected ones, those the state tracks for the address (last
/// seen open, pending, with an incident), and the re-checked ones. Every
/// other closed port is what the state machine assumes of a port it does not
/// track.
pub fn kept_ports(
    spec: &MonitorSpec,
    state: &MonitorState,
    address: IpAddr,
    scope: &Scope,
) -> BTreeSet<u16> {
    let mut keep = Vec::new();
    keep_into(spec, state, address, scope, &mut keep);
    keep.into_iter().map(|(_, port)| port).collect()
}

/// [`kept_ports`] as (address, port) pairs appended to `out`, duplicates
/// and all.
fn keep_into(
    spec: &MonitorSpec,
    state: &MonitorState,
    address: IpAddr,
    scope: &Scope,
    out: &mut Vec<(IpAddr, u16)>,
) {
    out.extend(spec.expected_open.iter().map(|&port| (address, port)));
    state.for_each_tracked_port(address, |port| out.push((address, port)));
    if let Scope::Ports(ports) = scope {
        out.extend(ports.iter().map(|&port| (address, port)));
    }
}

/// How many probes one monitor's scan costs in a sweep: its addresses times
/// the ports of its scope (a full scan: its scan range and expected ports).
pub fn scan_cost(spec: &MonitorSpec, scope: &Scope, addresses: usize) -> u64 {
    let ports = match scope {
        Scope::Ports(ports) => ports.len() as u64,
        Scope::Full => {
            let outside = spec
                .expected_open
                .iter()
                .filter(|&&p| !spec.scan_ports.contains(p))
                .count() as u64;
            spec.scan_ports.count() + outside
        }
    };
    ports.saturating_mul(addresses as u64)
}

/// Cuts a sweep into slices as its monitors come, in order: each slice is
/// probed, decided and stored before the next, so that a long sweep commits
/// as it goes (a restart resumes where it stopped, a stop keeps what is
/// done). A slice is a run of consecutive monitors whose costs (probes,
/// [`scan_cost`]) add up to at most the budget; a monitor costing more than
/// the budget is a slice of its own. The daemon resolves each monitor's
/// host just before it joins a slice, so nothing of a slice not yet reached
/// is held.
#[derive(Debug, Clone)]
pub struct Slicer {
    budget: u64,
    /// The cost of the slice so far; `None` before the first monitor.
    sum: Option<u64>,
    /// The group of the slice so far ([`Slicer::starts_slice_in`]).
    group: Option<String>,
}

impl Slicer {
    /// Slices of at most `budget` probes.
    pub fn new(budget: u64) -> Slicer {
        Slicer {
            budget,
            sum: None,
            group: None,
        }
    }

    /// [`Slicer::starts_slice`] for a monitor of `group` (with scan agents,
    /// the agent label it is pinned to): a change of group starts a slice
    /// too, so that a slice holds monitors of one group.
    pub fn starts_slice_in(&mut self, group: &str, cost: u64) -> bool {
        if self.group.as_deref() != Some(group) {
            self.group = Some(group.to_owned());
            self.sum = Some(cost);
            return true;
        }
        self.starts_slice(cost)
    }

    /// Takes the next monitor, of `cost`: whether it starts a new slice
    /// (the first monitor does; so does one that the slice so far cannot
    /// take within the budget).
    pub fn starts_slice(&mut self, cost: u64) -> bool {
        match self.sum {
            Some(sum) if sum.saturating_add(cost) <= self.budget => {
                self.sum = Some(sum + cost);
                false
            }
            _ => {
                self.sum = Some(cost);
                true
            }
        }
    }
}

/// The addresses of a sweep (or slice), ascending, and the ports whose
/// closed replies each keeps: the index that [`SweepReplies`] files replies
/// under. Flat vectors: a few bytes per address and kept port, whatever the
/// number of addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AddressIndex {
    addresses: Vec<IpAddr>,
    /// The kept ports of `addresses[i]` are `kept[kept_from[i]..kept_from[i + 1]]`,
    /// ascending.
    kept_from: Vec<u32>,
    kept: Vec<u16>,
}

impl AddressIndex {
    fn position(&self, address: IpAddr) -> Option<usize> {
        self.addresses.binary_search(&address).ok()
    }

    fn keeps(&self, i: usize, port: u16) -> bool {
        let (from, to) = (self.kept_from[i] as usize, self.kept_from[i + 1] as usize);
        self.kept[from..to].binary_search(&port).is_ok()
    }
}

/// What a sweep (or one slice of it) probes, and which replies it keeps per
/// address: gathered monitor by monitor ([`TargetsBuilder`]), then built
/// once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepTargets {
    /// The resolved addresses of the sweep's monitors, each once however
    /// many monitors hold it.
    pub targets: TargetSet,
    /// The addresses to send ICMP echo to (of monitors with `ping`),
    /// ascending.
    pub ping: Vec<IpAddr>,
    ports: PortSet,
    index: Arc<AddressIndex>,
}

impl SweepTargets {
    /// Gathers what a sweep of `kind` probes.
    pub fn builder(kind: ScanKind) -> TargetsBuilder {
        TargetsBuilder {
            kind,
            keep: Vec::new(),
            ping: Vec::new(),
            recheck_ports: BTreeSet::new(),
            full_ports: Ports::new(),
            full_all: false,
        }
    }

    /// The ports to probe: for a full sweep the union of its monitors'
    /// scan ranges (all of them, by default), for a re-check sweep the union
    /// of the re-checked ports.
    pub fn ports(&self) -> &PortSet {
        &self.ports
    }

    /// The closed ports whose replies `address` keeps (those its monitors'
    /// states track), ascending; none for an address not probed.
    pub fn kept(&self, address: IpAddr) -> &[u16] {
        let index = &self.index;
        index.position(address).map_or(&[], |i| {
            &index.kept[index.kept_from[i] as usize..index.kept_from[i + 1] as usize]
        })
    }

    /// Whether there is nothing to probe (no host resolved, or no port).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() || self.ports.is_empty()
    }

    /// An empty collector of this sweep's replies.
    pub fn replies(&self) -> SweepReplies {
        SweepReplies {
            found: vec![AddressReplies::default(); self.index.addresses.len()],
            index: Arc::clone(&self.index),
            retries: None,
            sent: 0,
            answered: vec![0; self.index.addresses.len().div_ceil(64)],
        }
    }
}

/// [`SweepTargets`] as its monitors are added: flat lists, sorted once by
/// [`TargetsBuilder::build`] (a sweep of a million addresses costs a sort,
/// not a million tree insertions).
#[derive(Debug, Clone)]
pub struct TargetsBuilder {
    kind: ScanKind,
    /// Every address with each port it keeps; an address with none kept
    /// is listed with port 0 (never a kept port).
    keep: Vec<(IpAddr, u16)>,
    ping: Vec<IpAddr>,
    /// The union of the re-checked ports (re-check sweeps).
    recheck_ports: BTreeSet<u16>,
    /// The union of the monitors' scan ranges (full sweeps), unless one
    /// scans every port.
    full_ports: Ports,
    full_all: bool,
}

impl TargetsBuilder {
    /// Adds the scan of one monitor whose host resolved to `addresses`. An
    /// address another monitor already added is probed once; the replies
    /// it keeps serve both.
    pub fn add(
        &mut self,
        addresses: &[IpAddr],
        spec: &MonitorSpec,
        state: &MonitorState,
        scope: &Scope,
    ) {
        match scope {
            Scope::Ports(ports) => self.recheck_ports.extend(ports),
            Scope::Full if spec.scans_all_ports() => self.full_all = true,
            Scope::Full if !self.full_all => {
                self.full_ports.insert_ranges(&spec.scan_ports);
                for &port in &spec.expected_open {
                    self.full_ports.insert(port);
                }
            }
            Scope::Full => {}
        }
        for &address in addresses {
            if spec.ping {
                self.ping.push(address);
            }
            self.keep.push((address, 0));
            keep_into(spec, state, address, scope, &mut self.keep);
        }
    }

    /// What the sweep probes and keeps.
    pub fn build(mut self) -> SweepTargets {
        self.keep.sort_unstable();
        self.keep.dedup();
        self.ping.sort_unstable();
        self.ping.dedup();
        let mut index = AddressIndex::default();
        for &(address, port) in &self.keep {
            if index.addresses.last() != Some(&address) {
                index.addresses.push(address);
                index.kept_from.push(index.kept.len() as u32);
            }
            if port != 0 {
                index.kept.push(port);
            }
        }
        index.kept_from.push(index.kept.len() as u32);
        let ports = match self.kind {
            ScanKind::Full if self.full_all => PortSet::all(),
            ScanKind::Full => PortSet::from_ports(self.full_ports.iter()),
            ScanKind::Recheck => PortSet::from_ports(self.recheck_ports.iter().copied()),
        };
        SweepTargets {
            targets: index.addresses.iter().copied().collect(),
            ping: self.ping,
            ports,
            index: Arc::new(index),
        }
    }
}

/// A sweep's replies, per address, as they arrive. Its size is bounded by
/// the addresses, whatever they answer: open ports are kept as compact
/// [`Ports`] (8 KiB for a host that answers on every port), closed ones only
/// where the state machine tracks them. Filed by the sweep's address index
/// (a binary search per reply); a reply from an address the sweep does not
/// probe is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReplies {
    index: Arc<AddressIndex>,
    /// What `index.addresses[i]` answered.
    found: Vec<AddressReplies>,
    /// The loss the scanner estimated and the retry rounds it gave.
    retries: Option<RetryOutcome>,
    /// The probes sent, retries included.
    sent: u64,
    /// A bit per address: it answered (`found[i].reachable`, in 8 KiB per
    /// 65,536 addresses, so that the RST of a port nobody tracks, most of
    /// a sweep's replies, touches no address's entry but the first).
    answered: Vec<u64>,
}

/// What a sweep's (or a slice's) replies add up to, for its summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyTally {
    /// The probes sent, retries included.
    pub probes: u64,
    /// Addresses probed.
    pub addresses: u64,
    /// Addresses that answered anything.
    pub reachable: u64,
    /// Open ports found.
    pub open: u64,
}

impl std::ops::AddAssign for ReplyTally {
    fn add_assign(&mut self, other: ReplyTally) {
        self.probes += other.probes;
        self.addresses += other.addresses;
        self.reachable += other.reachable;
        self.open += other.open;
    }
}

impl SweepReplies {
    /// Records one TCP reply: `open` (SYN-ACK) or closed (RST). Any reply
    /// makes the address reachable; a closed one is kept only for kept ports.
    pub fn record(&mut self, address: IpAddr, port: u16, open: bool) {
        if let Some(i) = self.index.position(address) {
            self.record_at(i, port, open);
        }
    }

    /// [`SweepReplies::record`] of a reply the data path located: `host`
    /// is the address's index among the sweep's hosts (a `Sweep` of these
    /// targets orders them as the index does: IPv4 first, each family
    /// ascending), which spares the search; an index that does not match
    /// falls back to it.
    pub fn record_located(&mut self, host: Option<u64>, address: IpAddr, port: u16, open: bool) {
        let at = host
            .and_then(|h| usize::try_from(h).ok())
            .filter(|&i| self.index.addresses.get(i) == Some(&address))
            .or_else(|| self.index.position(address));
        if let Some(i) = at {
            self.record_at(i, port, open);
        }
    }

    fn record_at(&mut self, i: usize, port: u16, open: bool) {
        self.reached(i);
        if open {
            self.found[i].open.insert(port);
        } else if self.index.keeps(i, port) {
            self.found[i].closed.insert(port);
        }
    }

    /// Address `i` answered something.
    fn reached(&mut self, i: usize) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.answered[word] & bit == 0 {
            self.answered[word] |= bit;
            self.found[i].reachable = true;
        }
    }

    /// Records an ICMP echo reply: the address is reachable.
    pub fn record_echo(&mut self, address: IpAddr) {
        if let Some(i) = self.index.position(address) {
            self.reached(i);
        }
    }

    /// What the replies said about `address` (nothing: unreachable).
    pub fn of(&self, address: IpAddr) -> AddressReplies {
        self.get(address).cloned().unwrap_or_default()
    }

    /// What the replies said about `address`, if the sweep probed it.
    pub fn get(&self, address: IpAddr) -> Option<&AddressReplies> {
        self.index.position(address).map(|i| &self.found[i])
    }

    /// Records the loss the scanner estimated from the replies and the
    /// retry rounds it gave (its summary, once the scan ran).
    pub fn record_retries(&mut self, outcome: RetryOutcome) {
        self.retries = Some(outcome);
    }

    /// Records the probes the scanner sent, retries included.
    pub fn record_sent(&mut self, probes: u64) {
        self.sent += probes;
    }

    /// What the replies add up to.
    pub fn tally(&self) -> ReplyTally {
        ReplyTally {
            probes: self.sent,
            addresses: self.found.len() as u64,
            reachable: self.found.iter().filter(|f| f.reachable).count() as u64,
            open: self.found.iter().map(|f| f.open.len()).sum(),
        }
    }
}

/// How a sweep ended, as far as trusting the silence of its ports goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepEnd {
    /// Every probe went out and the wait for late replies passed.
    Completed,
    /// No host of the sweep could be resolved: nothing was probed.
    NothingResolved,
    /// Stopped (SIGTERM/SIGINT) before the end.
    Interrupted,
    /// The reply path lost this many replies (ring buffer full).
    RepliesLost(u64),
    /// The scanner failed.
    Failed(String),
}

impl SweepEnd {
    /// How a sweep that ran ended: interrupted, else lossy if any reply was
    /// lost, else completed.
    pub fn after_run(interrupted: bool, replies_lost: u64) -> SweepEnd {
        if interrupted {
            SweepEnd::Interrupted
        } else if replies_lost > 0 {
            SweepEnd::RepliesLost(replies_lost)
        } else {
            SweepEnd::Completed
        }
    }

    /// Why the sweep's scans are inconclusive; `None` if they are not.
    pub fn failure(&self) -> Option<String> {
        match self {
            SweepEnd::Completed => None,
            SweepEnd::NothingResolved => Some("no host of this sweep could be resolved".into()),
            SweepEnd::Interrupted => Some("sweep abandoned (stopped)".into()),
            SweepEnd::RepliesLost(n) => Some(format!("{n} replies lost on the reply path")),
            SweepEnd::Failed(why) => Some(why.clone()),
        }
    }
}

/// A finished sweep: what every one of its scans shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepResult {
    /// When it started; also the sweep's id.
    pub started: Millis,
    pub finished: Millis,
    pub end: SweepEnd,
    pub replies: SweepReplies,
}

impl SweepResult {
    /// The facts of one monitor's scan in this sweep: the replies of each of
    /// its `addresses` within `scope`; inconclusive if the host did not
    /// resolve (that note first) or the sweep failed.
    pub fn scan(
        &self,
        spec: &MonitorSpec,
        scope: &Scope,
        addresses: &Result<Vec<IpAddr>, String>,
    ) -> ScanFacts {
        // A shared address may have been probed on more ports for another
        // monitor: this one sees its own scope only.
        let in_scope = |ports: &Ports| -> Ports {
            match scope {
                Scope::Full if spec.scans_all_ports() => ports.clone(),
                Scope::Full => ports.iter().filter(|&port| spec.in_scan(port)).collect(),
                Scope::Ports(p) => ports.iter().filter(|port| p.contains(port)).collect(),
            }
        };
        let replies = addresses
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|&ip| {
                let r = match self.replies.get(ip) {
                    Some(r) => AddressReplies {
                        reachable: r.reachable,
                        open: in_scope(&r.open),
                        closed: in_scope(&r.closed),
                    },
                    None => AddressReplies::default(),
                };
                (ip, r)
            })
            .collect();
        ScanFacts {
            sweep: self.started,
            monitor: spec.name.clone(),
            host: spec.host.clone(),
            addresses: replies,
            scope: scope.clone(),
            started: self.started,
            finished: self.finished,
            inconclusive: match addresses {
                Err(why) => Some(why.clone()),
                Ok(_) => self.end.failure(),
            },
            retries: self.replies.retries,
        }
    }
}

/// The facts of one scan of one monitor's host: what the state machine
/// observes, what the store records and what the scan summary event reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanFacts {
    /// The sweep it was part of (the sweep's start time).
    pub sweep: Millis,
    pub monitor: String,
    /// The monitor's host, as configured.
    pub host: String,
    /// What the host resolved to, and what each address answered within the
    /// scope (open ports; closed ones where kept); empty if it did not
    /// resolve.
    pub addresses: BTreeMap<IpAddr, AddressReplies>,
    /// The ports scanned: all (a full scan), or the re-checked ones.
    pub scope: Scope,
    pub started: Millis,
    pub finished: Millis,
    /// Why the scan cannot be trusted; `None`: it is conclusive.
    pub inconclusive: Option<String>,
    /// The sweep's loss estimate and retry rounds (`None`: the scanner did
    /// not run, or has none). Reported, not stored.
    pub retries: Option<RetryOutcome>,
}

impl ScanFacts {
    /// Full for a full scope, re-check otherwise.
    pub fn kind(&self) -> ScanKind {
        match self.scope {
            Scope::Full => ScanKind::Full,
            Scope::Ports(_) => ScanKind::Recheck,
        }
    }

    /// Whether the state machine may trust the scan.
    pub fn conclusive(&self) -> bool {
        self.inconclusive.is_none()
    }

    /// Whether any address answered at all.
    pub fn reachable(&self) -> bool {
        self.addresses.values().any(|r| r.reachable)
    }

    /// The scan as the state machine observes it (at its start), under the
    /// id the store records it with.
    pub fn observation(&self, scan_id: i64) -> Observation {
        Observation {
            scan_id,
            at: self.started,
            scope: self.scope.clone(),
            conclusive: self.conclusive(),
            addresses: self.addresses.clone(),
        }
    }

    /// Feeds the scan to `state` as [`ScanFacts::observation`] would,
    /// without copying what the addresses answered (a sweep of a million
    /// monitors observes a million scans).
    pub fn observe_into(
        &mut self,
        state: &mut MonitorState,
        spec: &MonitorSpec,
        scan_id: i64,
    ) -> Step {
        let obs = Observation {
            scan_id,
            at: self.started,
            scope: self.scope.clone(),
            conclusive: self.conclusive(),
            addresses: std::mem::take(&mut self.addresses),
        };
        let step = state.observe(spec, &obs);
        self.addresses = obs.addresses;
        step
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::monitor::{Event, IncidentKind};

    const HOUR: u64 = 3_600_000;

    fn spec(name: &str, expected: &[u16], every_ms: u64) -> MonitorSpec {
        MonitorSpec {
            name: name.into(),
            host: format!("{name}.example"),
            expected_open: expected.iter().copied().collect(),
            every_ms,
            confirm: 2,
            recheck_ms: Some(5_000),
            ..MonitorSpec::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn ports(p: &[u16]) -> BTreeSet<u16> {
        p.iter().copied().collect()
    }

    fn facts(scope: Scope, started: Millis, finished: Millis, note: Option<&str>) -> ScanFacts {
        let reachable = AddressReplies {
            reachable: true,
            ..AddressReplies::default()
        };
        ScanFacts {
            sweep: started,
            monitor: "web".into(),
            host: "web.example".into(),
            addresses: BTreeMap::from([(ip(2), reachable)]),
            scope,
            started,
            finished,
            inconclusive: note.map(String::from),
            retries: None,
        }
    }

    fn open_of(scan: &ScanFacts, address: IpAddr) -> BTreeSet<u16> {
        scan.addresses[&address].open.iter().collect()
    }

    /// A state with 22 last seen open, 6379 pending and 8080 in an incident
    /// (spec expects 22 only, confirm 2).
    fn busy_state(spec: &MonitorSpec) -> MonitorState {
        let mut state = MonitorState::new();
        for (i, open) in [ports(&[22, 8080]), ports(&[22, 8080, 6379])]
            .into_iter()
            .enumerate()
        {
            let replies = AddressReplies {
                reachable: true,
                open: open.into_iter().collect(),
                closed: Ports::new(),
            };
            let at = 1_000 * (i as Millis + 1);
            state.observe(
                spec,
                &Observation::of_address(i as i64, at, Scope::Full, ip(2), replies),
            );
        }
        assert_eq!(state.pending(), ports(&[6379]));
        assert!(state.open_incidents().iter().any(|i| i.port == 8080));
        state
    }

    #[test]
    fn full_sweeps_come_first_and_drop_the_rechecks_they_cover() {
        let mut s = SweepSchedule::default();
        s.add("a", 100);
        s.add("b", 200);
        s.add("c", 50);
        s.set_recheck("a".into(), (60, ports(&[1])));
        s.set_recheck("c".into(), (60, ports(&[2])));
        assert_eq!(s.take_due(49), None);
        // At 150, a and c are due: one full sweep, the longest due first;
        // a's and c's re-checks go.
        let plan = s.take_due(150).unwrap();
        assert_eq!(plan, SweepPlan::full(["c", "a"]));
        assert_eq!(s.recheck("a"), None);
        assert_eq!(s.recheck("c"), None);
        // A full sweep stays due until its scan reschedules it.
        assert_eq!(s.take_due(150).map(|p| p.kind), Some(ScanKind::Full));
    }

    #[test]
    fn scan_now_brings_a_known_monitor_forward_only() {
        let mut s = SweepSchedule::default();
        s.add("a", 1_000);
        s.add("b", 5_000);
        assert!(s.scan_now("a", 100));
        assert!(
            !s.scan_now("nobody", 100),
            "an unknown monitor is not added"
        );
        assert_eq!(s.due_at("nobody"), None);
        // Never later than planned.
        assert!(s.scan_now("b", 9_000));
        assert_eq!((s.due_at("a"), s.due_at("b")), (Some(100), Some(5_000)));
        assert_eq!((s.len(), s.next_full_sweep()), (2, Some(100)));
        assert_eq!(s.take_due(100), Some(SweepPlan::full(["a"])));
    }

    #[test]
    fn rechecks_run_only_when_no_full_sweep_is_due_and_only_once() {
        let mut s = SweepSchedule::default();
        s.add("a", 1_000);
        s.add("b", 1_000);
        s.add("c", 1_000);
        s.set_recheck("a".into(), (100, ports(&[443])));
        s.set_recheck("b".into(), (200, ports(&[80, 8080])));
        s.set_recheck("c".into(), (300, ports(&[1])));
        assert_eq!(s.next_wake(), Some(100));
        let plan = s.take_due(250).unwrap();
        assert_eq!(
            plan,
            SweepPlan {
                kind: ScanKind::Recheck,
                monitors: vec![
                    ("a".into(), Scope::Ports(ports(&[443]))),
                    ("b".into(), Scope::Ports(ports(&[80, 8080]))),
                ],
            }
        );
        assert_eq!(s.take_due(250), None, "taken off the schedule");
        assert_eq!(s.next_wake(), Some(300));
        assert!(s.recheck("c").is_some());
        // A due full sweep pre-empts the remaining re-check.
        assert_eq!(s.take_due(1_000).map(|p| p.kind), Some(ScanKind::Full));
        assert_eq!(s.recheck("c"), None);
    }

    #[test]
    fn adding_keeps_a_known_time_and_removing_forgets_everything() {
        let mut s = SweepSchedule::default();
        assert_eq!(s.next_wake(), None);
        s.add("a", 500);
        s.add("a", 10);
        assert_eq!(s.due_at("a"), Some(500));
        s.set_recheck("a".into(), (5, ports(&[1])));
        s.remove("a");
        assert_eq!(s, SweepSchedule::default());
    }

    #[test]
    fn next_due_after_a_scan() {
        let m = spec("web", &[22], HOUR);
        let mut s = SweepSchedule::default();
        s.add("web", 0);
        // Conclusive full: started + every.
        s.after_scan(&m, &facts(Scope::Full, 1_000, 9_000, None), None);
        assert_eq!(s.due_at("web"), Some(1_000 + HOUR as Millis));
        // Inconclusive full: finished + 60 s.
        s.after_scan(&m, &facts(Scope::Full, 1_000, 9_000, Some("x")), None);
        assert_eq!(s.due_at("web"), Some(69_000));
        // ... or finished + every, if shorter.
        let fast = spec("web", &[22], 10_000);
        s.after_scan(&fast, &facts(Scope::Full, 1_000, 9_000, Some("x")), None);
        assert_eq!(s.due_at("web"), Some(19_000));
        // A re-check, conclusive or not, leaves the full sweep's time alone
        // and its request replaces the pending one.
        for note in [None, Some("x")] {
            let check = facts(Scope::Ports(ports(&[80])), 50_000, 51_000, note);
            s.after_scan(&fast, &check, Some((56_000, ports(&[80]))));
            assert_eq!(s.due_at("web"), Some(19_000));
            assert_eq!(s.recheck("web"), Some(&(56_000, ports(&[80]))));
        }
        s.after_scan(&fast, &facts(Scope::Full, 60_000, 61_000, None), None);
        assert_eq!(s.recheck("web"), None);
        assert_eq!(s.due_at("web"), Some(70_000));
    }

    #[test]
    fn recovery_resumes_saved_states_and_removes_dropped_monitors() {
        let web = spec("web", &[22], HOUR);
        let db = spec("db", &[5432], 60_000);
        let new = spec("new", &[], HOUR);
        let busy = busy_state(&web);
        let saved = BTreeMap::from([
            (
                "web".to_string(),
                SavedMonitor {
                    state: busy.clone(),
                    last_full: Some(1_000),
                },
            ),
            (
                "db".to_string(),
                SavedMonitor {
                    state: MonitorState::new(),
                    last_full: None,
                },
            ),
            (
                "gone".to_string(),
                SavedMonitor {
                    state: busy.clone(),
                    last_full: Some(5),
                },
            ),
        ]);
        let plan = recover(&[web, db, new], saved, 7_000);
        assert_eq!(plan.states["web"], busy, "state reloaded as saved");
        assert_eq!(plan.states["db"], MonitorState::new());
        assert_eq!(plan.states["new"], MonitorState::new());
        assert_eq!(plan.schedule.due_at("web"), Some(1_000 + HOUR as Millis));
        assert_eq!(
            plan.schedule.due_at("db"),
            Some(7_000),
            "never scanned: now"
        );
        assert_eq!(plan.schedule.due_at("new"), Some(7_000));
        assert_eq!(plan.schedule.due_at("gone"), None);
        assert_eq!(plan.removed, BTreeMap::from([("gone".to_string(), busy)]));
        // The removal resolves the dropped monitor's incident.
        let mut gone = plan.removed["gone"].clone();
        let step = gone.remove(&spec("gone", &[], HOUR), 7_000);
        assert!(
            matches!(&step.events[0], Event::PortResolved { incident, .. }
            if incident.port == 8080 && incident.kind == IncidentKind::UnexpectedPortOpen)
        );
        assert!(matches!(step.events[1], Event::MonitorResolved { .. }));
    }

    #[test]
    fn a_scan_keeps_expected_pending_open_incident_and_rechecked_ports() {
        let web = spec("web", &[22, 443], HOUR);
        let state = busy_state(&web);
        assert_eq!(
            kept_ports(&web, &state, ip(2), &Scope::Full),
            ports(&[22, 443, 6379, 8080])
        );
        assert_eq!(
            kept_ports(&web, &state, ip(2), &Scope::Ports(ports(&[9, 6379]))),
            ports(&[9, 22, 443, 6379, 8080])
        );
        assert_eq!(
            kept_ports(&web, &MonitorState::new(), ip(2), &Scope::Full),
            ports(&[22, 443])
        );
    }

    /// The slices a [`Slicer`] cuts of monitors of `costs`, as ranges of indexes:
    /// every monitor in exactly one, in order.
    fn slices(costs: &[u64], budget: u64) -> Vec<std::ops::Range<usize>> {
        let mut slicer = Slicer::new(budget);
        let mut out: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, &cost) in costs.iter().enumerate() {
            if slicer.starts_slice(cost) {
                out.push(i..i + 1);
            } else if let Some(last) = out.last_mut() {
                last.end = i + 1;
            }
        }
        out
    }

    #[test]
    fn slices_cover_every_monitor_in_order_within_the_budget() {
        assert!(slices(&[], 10).is_empty());
        assert_eq!(slices(&[4, 4, 4, 4, 4], 10), [0..2, 2..4, 4..5]);
        // One too big for the budget is a slice of its own.
        assert_eq!(slices(&[3, 30, 3], 10), [0..1, 1..2, 2..3]);
        assert_eq!(slices(&[5, 5], 10), vec![0..2]);
        let web = spec("web", &[22, 70_00], HOUR);
        assert_eq!(scan_cost(&web, &Scope::Full, 2), 2 * 65_535);
        let narrow = MonitorSpec {
            scan_ports: "1-1024".parse().unwrap(),
            ..web.clone()
        };
        assert_eq!(scan_cost(&narrow, &Scope::Full, 3), 3 * 1025, "plus 7000");
        assert_eq!(scan_cost(&narrow, &Scope::Ports(ports(&[1, 2])), 3), 6);
    }

    #[test]
    fn a_change_of_group_starts_a_slice() {
        let mut slicer = Slicer::new(10);
        let cuts: Vec<bool> = [
            ("any", 3),
            ("any", 3),
            ("fra1", 1),
            ("fra1", 20),
            ("fra1", 1),
        ]
        .iter()
        .map(|&(group, cost)| slicer.starts_slice_in(group, cost))
        .collect();
        assert_eq!(cuts, [true, false, true, true, true]);
        // The same group throughout cuts as `starts_slice` does.
        let mut slicer = Slicer::new(10);
        let cuts: Vec<bool> = [4, 4, 4, 4, 4]
            .iter()
            .map(|&cost| slicer.starts_slice_in("", cost))
            .collect();
        assert_eq!(cuts, [true, false, true, false, true]);
    }

    proptest! {
        #[test]
        fn slices_partition_the_monitors(
            costs in proptest::collection::vec(0u64..100, 0..60),
            budget in 1u64..300,
        ) {
            let cut = slices(&costs, budget);
            let mut next = 0;
            for range in &cut {
                prop_assert_eq!(range.start, next);
                prop_assert!(range.end > range.start);
                let sum: u64 = costs[range.clone()].iter().sum();
                prop_assert!(sum <= budget || range.len() == 1);
                next = range.end;
            }
            prop_assert_eq!(next, costs.len());
        }
    }

    #[test]
    fn narrowed_monitors_probe_the_union_of_their_ranges_and_see_only_their_own() {
        let narrow = |name: &str, expected: &[u16], range: &str| MonitorSpec {
            scan_ports: range.parse().unwrap(),
            ..spec(name, expected, HOUR)
        };
        let a = narrow("a", &[8443], "1-1024");
        let b = narrow("b", &[], "2000-2001");
        let fresh = MonitorState::new();
        let mut builder = SweepTargets::builder(ScanKind::Full);
        builder.add(&[ip(2)], &a, &fresh, &Scope::Full);
        builder.add(&[ip(2)], &b, &fresh, &Scope::Full);
        // The ranges, and a's expected port beyond its range.
        let targets = builder.clone().build();
        let probed = targets.ports();
        assert_eq!(probed.len(), 1024 + 2 + 1);
        assert!(probed.contains(8443) && probed.contains(2001) && !probed.contains(1025));
        // One monitor scanning every port: every port.
        builder.add(&[ip(3)], &spec("c", &[], HOUR), &fresh, &Scope::Full);
        let targets = builder.build();
        assert_eq!(targets.ports(), &PortSet::all());

        let mut replies = targets.replies();
        for port in [22, 2000, 8443] {
            replies.record(ip(2), port, true);
        }
        let result = SweepResult {
            started: 0,
            finished: 1,
            end: SweepEnd::Completed,
            replies,
        };
        let open = |m: &MonitorSpec| {
            result.scan(m, &Scope::Full, &Ok(vec![ip(2)])).addresses[&ip(2)]
                .open
                .iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(open(&a), [22, 8443]);
        assert_eq!(open(&b), [2000]);
    }

    /// The ports whose closed replies `targets` keeps for `address`.
    fn kept(targets: &SweepTargets, address: IpAddr) -> BTreeSet<u16> {
        let index = &targets.index;
        let i = index.position(address).expect("a target");
        index.kept[index.kept_from[i] as usize..index.kept_from[i + 1] as usize]
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn a_full_sweep_probes_every_port_and_a_recheck_the_union() {
        let a = spec("a", &[22], HOUR);
        let b = spec("b", &[80], HOUR);
        let fresh = MonitorState::new();
        assert!(SweepTargets::builder(ScanKind::Full).build().is_empty());
        let mut full = SweepTargets::builder(ScanKind::Full);
        full.add(&[ip(2)], &a, &fresh, &Scope::Full);
        full.add(&[ip(2)], &b, &fresh, &Scope::Full);
        let full = full.build();
        assert!(!full.is_empty());
        assert_eq!(full.ports(), &PortSet::all());
        assert_eq!(full.targets.count(), 1);
        assert_eq!(kept(&full, ip(2)), ports(&[22, 80]), "merged per address");
        assert_eq!(full.ping, [ip(2)], "pinged once");

        let mut check = SweepTargets::builder(ScanKind::Recheck);
        check.add(&[ip(2)], &a, &fresh, &Scope::Ports(ports(&[443])));
        check.add(&[ip(3)], &b, &fresh, &Scope::Ports(ports(&[443, 8080])));
        let check = check.build();
        assert_eq!(check.ports(), &PortSet::from_ports([443, 8080]));
        assert_eq!(check.targets.count(), 2);
        assert_eq!(kept(&check, ip(2)), ports(&[22, 443]));
        assert_eq!(kept(&check, ip(3)), ports(&[80, 443, 8080]));
    }

    #[test]
    fn many_scattered_addresses_are_indexed_in_one_sort() {
        // Monitors in any order, sharing some addresses, one with none kept.
        let mut builder = SweepTargets::builder(ScanKind::Full);
        let fresh = MonitorState::new();
        let addresses: Vec<IpAddr> = (0..2_000u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0xc612_0000 + (i * 7_919) % 65_536 * 2)))
            .collect();
        for (i, &address) in addresses.iter().enumerate() {
            let expected: &[u16] = if i % 3 == 0 { &[] } else { &[22, 443] };
            builder.add(&[address], &spec("m", expected, HOUR), &fresh, &Scope::Full);
        }
        let targets = builder.build();
        let distinct: BTreeSet<IpAddr> = addresses.iter().copied().collect();
        assert_eq!(targets.targets.count(), distinct.len() as u128);
        assert_eq!(
            targets.targets.v4.ranges().len(),
            distinct.len(),
            "none adjacent"
        );
        let mut replies = targets.replies();
        for &address in &addresses {
            replies.record(address, 443, false);
            replies.record(address, 444, false);
        }
        for (i, &address) in addresses.iter().enumerate() {
            let r = replies.of(address);
            assert!(r.reachable);
            assert!(!r.closed.contains(444), "never kept");
            // Kept where some monitor of the address expects it.
            let expects = addresses
                .iter()
                .enumerate()
                .any(|(j, &a)| a == address && j % 3 != 0);
            assert_eq!(r.closed.contains(443), expects, "#{i} {address}");
        }
    }

    #[test]
    fn replies_located_by_the_sweep_are_filed_without_a_search() {
        let web = spec("web", &[22], HOUR);
        let mut targets = SweepTargets::builder(ScanKind::Full);
        let v6: IpAddr = "2001:2::5".parse().unwrap();
        targets.add(
            &[v6, ip(9), ip(2)],
            &web,
            &MonitorState::new(),
            &Scope::Full,
        );
        let targets = targets.build();
        // The sweep's own order of the hosts is the index's.
        let sweep = crate::probe::Sweep::new(&targets.targets, targets.ports(), 1).unwrap();
        let mut replies = targets.replies();
        for address in [ip(2), ip(9), v6] {
            let probe = crate::probe::Probe {
                target: address.into(),
                port: 22,
            };
            let (host, _) = sweep.locate(probe).unwrap();
            replies.record_located(Some(host), address, 22, false);
        }
        // A wrong index or none: found by its address.
        replies.record_located(Some(0), ip(9), 80, true);
        replies.record_located(None, v6, 443, true);
        replies.record_located(Some(7), ip(7), 80, true);
        for address in [ip(2), ip(9), v6] {
            let r = replies.of(address);
            assert!(r.reachable && r.closed.contains(22), "{address}: {r:?}");
        }
        assert!(replies.of(ip(9)).open.contains(80));
        assert!(replies.of(v6).open.contains(443));
        assert_eq!(replies.of(ip(7)), AddressReplies::default());
    }

    #[test]
    fn replies_keep_every_open_port_and_only_kept_closed_ones() {
        let web = spec("web", &[22], HOUR);
        let mut targets = SweepTargets::builder(ScanKind::Full);
        targets.add(&[ip(2), ip(9)], &web, &MonitorState::new(), &Scope::Full);
        let mut replies = targets.build().replies();
        replies.record(ip(2), 80, true);
        replies.record(ip(2), 22, false);
        replies.record(ip(2), 23, false);
        replies.record(ip(9), 1, false);
        assert_eq!(
            replies.of(ip(2)),
            AddressReplies {
                reachable: true,
                open: Ports::from([80]),
                closed: Ports::from([22]),
            }
        );
        // A closed reply alone makes a host reachable.
        assert_eq!(
            replies.of(ip(9)),
            AddressReplies {
                reachable: true,
                ..AddressReplies::default()
            }
        );
        assert_eq!(replies.of(ip(7)), AddressReplies::default());
        // A reply from an address the sweep does not probe is ignored.
        replies.record(ip(7), 80, true);
        replies.record_echo(ip(7));
        assert_eq!(replies.of(ip(7)), AddressReplies::default());
    }

    #[test]
    fn a_tally_counts_probes_addresses_answers_and_open_ports() {
        let web = spec("web", &[22], HOUR);
        let mut targets = SweepTargets::builder(ScanKind::Full);
        targets.add(
            &[ip(2), ip(5), ip(9)],
            &web,
            &MonitorState::new(),
            &Scope::Full,
        );
        let mut replies = targets.build().replies();
        assert_eq!(
            replies.tally(),
            ReplyTally {
                addresses: 3,
                ..ReplyTally::default()
            }
        );
        replies.record(ip(2), 80, true);
        replies.record(ip(2), 443, true);
        replies.record(ip(2), 80, true);
        replies.record(ip(9), 1, false);
        replies.record_sent(100);
        replies.record_sent(7);
        let mut tally = replies.tally();
        assert_eq!(
            tally,
            ReplyTally {
                probes: 107,
                addresses: 3,
                reachable: 2,
                open: 2,
            }
        );
        tally += tally;
        assert_eq!((tally.probes, tally.addresses, tally.open), (214, 6, 4));
    }

    #[test]
    fn when_a_scan_is_conclusive() {
        assert_eq!(SweepEnd::after_run(false, 0), SweepEnd::Completed);
        assert_eq!(SweepEnd::after_run(false, 3), SweepEnd::RepliesLost(3));
        assert_eq!(SweepEnd::after_run(true, 3), SweepEnd::Interrupted);
        let web = spec("web", &[22], HOUR);
        let mut targets = SweepTargets::builder(ScanKind::Full);
        targets.add(&[ip(2)], &web, &MonitorState::new(), &Scope::Full);
        let mut replies = targets.build().replies();
        replies.record(ip(2), 22, true);
        let result = |end| SweepResult {
            started: 10,
            finished: 20,
            end,
            replies: replies.clone(),
        };
        let ok = result(SweepEnd::Completed).scan(&web, &Scope::Full, &Ok(vec![ip(2)]));
        assert!(ok.conclusive());
        assert_eq!((ok.sweep, ok.started, ok.finished), (10, 10, 20));
        assert_eq!(ok.kind(), ScanKind::Full);
        assert!(ok.reachable());
        assert_eq!(open_of(&ok, ip(2)), ports(&[22]));
        assert_eq!(ok.retries, None);
        // The scanner's loss estimate reaches every scan of the sweep.
        let outcome = RetryOutcome {
            loss: crate::probe::LossCounts {
                first_sent: 200,
                first_answered: 100,
                retry_due: 200,
                retry_answered: 5,
            },
            rounds: 3,
        };
        let mut measured = result(SweepEnd::Completed);
        measured.replies.record_retries(outcome);
        let scan = measured.scan(&web, &Scope::Full, &Ok(vec![ip(2)]));
        assert_eq!(scan.retries, Some(outcome));
        for (end, note) in [
            (
                SweepEnd::NothingResolved,
                "no host of this sweep could be resolved",
            ),
            (SweepEnd::Interrupted, "sweep abandoned (stopped)"),
            (SweepEnd::RepliesLost(4), "4 replies lost on the reply path"),
            (SweepEnd::Failed("boom".into()), "boom"),
        ] {
            let scan = result(end).scan(&web, &Scope::Full, &Ok(vec![ip(2)]));
            assert_eq!(scan.inconclusive.as_deref(), Some(note));
            assert!(!scan.observation(1).conclusive);
        }
        // An unresolved host: its own note first, and nothing found.
        let lost = result(SweepEnd::Interrupted).scan(
            &web,
            &Scope::Full,
            &Err("cannot resolve web.example".into()),
        );
        assert_eq!(
            lost.inconclusive.as_deref(),
            Some("cannot resolve web.example")
        );
        assert!(lost.addresses.is_empty() && !lost.reachable());
    }

    #[test]
    fn observing_into_a_state_is_observing_the_observation() {
        let web = spec("web", &[22], HOUR);
        let mut scan = facts(Scope::Full, 1_000, 2_000, None);
        scan.addresses.get_mut(&ip(2)).unwrap().open = Ports::from([22, 8080]);
        let before = scan.clone();
        let (mut a, mut b) = (busy_state(&web), busy_state(&web));
        let step = a.observe(&web, &scan.observation(7));
        assert_eq!(scan.observe_into(&mut b, &web, 7), step);
        assert_eq!((a, scan), (b, before));
    }

    #[test]
    fn a_scan_sees_only_its_scope() {
        let web = spec("web", &[22], HOUR);
        let mut replies = SweepTargets::builder(ScanKind::Recheck);
        replies.add(
            &[ip(2)],
            &web,
            &MonitorState::new(),
            &Scope::Ports(ports(&[80, 443])),
        );
        let mut replies = replies.build().replies();
        replies.record(ip(2), 80, true);
        replies.record(ip(2), 8080, true);
        replies.record(ip(2), 443, false);
        replies.record(ip(2), 22, false);
        let result = SweepResult {
            started: 1,
            finished: 2,
            end: SweepEnd::Completed,
            replies,
        };
        let scope = Scope::Ports(ports(&[80, 443]));
        let scan = result.scan(&web, &scope, &Ok(vec![ip(2)]));
        assert_eq!(scan.kind(), ScanKind::Recheck);
        assert_eq!(open_of(&scan, ip(2)), ports(&[80]));
        assert_eq!(scan.addresses[&ip(2)].closed, Ports::from([443]));
        let obs = scan.observation(42);
        assert_eq!((obs.scan_id, obs.at, obs.scope), (42, 1, scope));
    }

    fn arb_ports() -> impl Strategy<Value = BTreeSet<u16>> {
        proptest::collection::btree_set(1u16..=40, 0..6)
    }

    fn arb_scope() -> impl Strategy<Value = Scope> {
        prop_oneof![
            Just(Scope::Full),
            proptest::collection::btree_set(1u16..=40, 1..6).prop_map(Scope::Ports),
        ]
    }

    proptest! {
        /// Whatever the replies, a scan reports only ports in its scope,
        /// closed ones only if kept, and every open reply in scope.
        #[test]
        fn scans_report_in_scope_replies(
            expected in arb_ports(),
            scope in arb_scope(),
            replies in proptest::collection::vec((1u16..=40, any::<bool>()), 0..40),
        ) {
            let web = MonitorSpec { expected_open: expected, ..spec("web", &[], HOUR) };
            let state = MonitorState::new();
            let mut targets = SweepTargets::builder(match scope {
                Scope::Full => ScanKind::Full,
                Scope::Ports(_) => ScanKind::Recheck,
            });
            targets.add(&[ip(2)], &web, &state, &scope);
            let targets = targets.build();
            let indexed = kept(&targets, ip(2));
            let kept = kept_ports(&web, &state, ip(2), &scope);
            prop_assert_eq!(&indexed, &kept);
            let mut collected = targets.replies();
            for &(port, open) in &replies {
                collected.record(ip(2), port, open);
            }
            let result = SweepResult { started: 5, finished: 6, end: SweepEnd::Completed, replies: collected };
            let scan = result.scan(&web, &scope, &Ok(vec![ip(2)]));
            prop_assert_eq!(scan.reachable(), !replies.is_empty());
            let found = &scan.addresses[&ip(2)];
            for &(port, open) in &replies {
                if open && scope.contains(port) {
                    prop_assert!(found.open.contains(port));
                }
            }
            prop_assert!(found.open.iter().all(|p| scope.contains(p)));
            prop_assert!(found.closed.iter().all(|p| scope.contains(p) && kept.contains(&p)));
            prop_assert!(found.open.iter().all(|p| replies.contains(&(p, true))));
            prop_assert!(found.closed.iter().all(|p| replies.contains(&(p, false))));
            // Everything probed in a re-check is kept.
            if let Scope::Ports(ps) = &scope {
                prop_assert!(ps.is_subset(&kept));
                prop_assert_eq!(targets.ports(), &PortSet::from_ports(ps.iter().copied()));
            }
        }

        /// The schedule's two views (by name, by time) always agree,
        /// whatever is done to it, and what is due next is the soonest of
        /// them.
        #[test]
        fn the_schedule_by_time_follows_the_schedule_by_name(
            ops in proptest::collection::vec((0u8..6, 0usize..5, 0i64..100), 0..60),
        ) {
            let mut s = SweepSchedule::default();
            for (op, i, at) in ops {
                let name = format!("m{i}");
                let web = spec(&name, &[], 10);
                match op {
                    0 => s.add(&name, at),
                    1 => { s.scan_now(&name, at); }
                    2 => s.remove(&name),
                    3 => s.after_scan(&web, &facts(Scope::Full, at, at + 1, None), Some((at + 3, ports(&[7])))),
                    4 => s.after_scan(&web, &facts(Scope::Ports(ports(&[7])), at, at, None), None),
                    _ => { s.take_due(at); }
                }
                let by_name: BTreeSet<(Millis, Arc<str>)> =
                    s.due.iter().map(|(n, &a)| (a, Arc::clone(n))).collect();
                prop_assert_eq!(&by_name, &s.due_by_time);
                let rechecks: BTreeSet<(Millis, Arc<str>)> =
                    s.rechecks.iter().map(|(n, r)| (r.0, Arc::clone(n))).collect();
                prop_assert_eq!(&rechecks, &s.rechecks_by_time);
                let soonest = s.due.values().chain(s.rechecks.values().map(|r| &r.0)).min().copied();
                prop_assert_eq!(s.next_wake(), soonest);
                prop_assert_eq!(s.next_full_sweep(), s.due.values().min().copied());
            }
        }

        /// A taken sweep holds exactly the due monitors; nothing due is
        /// left behind, nothing not due is taken.
        #[test]
        fn take_due_takes_exactly_what_is_due(
            due in proptest::collection::vec(0i64..100, 1..6),
            rechecks in proptest::collection::vec(proptest::option::of(0i64..100), 1..6),
            now in 0i64..100,
        ) {
            let mut s = SweepSchedule::default();
            for (i, at) in due.iter().enumerate() {
                s.add(&format!("m{i}"), *at);
            }
            for (i, at) in rechecks.iter().enumerate() {
                if let Some(at) = at {
                    s.set_recheck(format!("m{i}").into(), (*at, ports(&[i as u16 + 1])));
                }
            }
            let before = s.clone();
            let full_due: Vec<String> = due.iter().enumerate()
                .filter(|(_, at)| **at <= now).map(|(i, _)| format!("m{i}")).collect();
            match s.take_due(now) {
                None => {
                    prop_assert!(full_due.is_empty());
                    prop_assert!(before.rechecks.values().all(|(at, _)| *at > now));
                    prop_assert_eq!(&s, &before);
                }
                Some(plan) if plan.kind == ScanKind::Full => {
                    let mut names: Vec<String> = plan.monitors.iter().map(|(n, _)| n.to_string()).collect();
                    // The longest due first.
                    let times: Vec<Millis> = names.iter().map(|n| before.due_at(n).unwrap()).collect();
                    prop_assert!(times.windows(2).all(|w| w[0] <= w[1]));
                    names.sort();
                    prop_assert_eq!(&names, &full_due);
                    prop_assert!(names.iter().all(|n| s.recheck(n).is_none()));
                    prop_assert_eq!(&s.due, &before.due);
                }
                Some(plan) => {
                    prop_assert!(full_due.is_empty());
                    for (name, scope) in &plan.monitors {
                        let (at, ports) = &before.rechecks[name];
                        prop_assert!(*at <= now);
                        prop_assert_eq!(scope, &Scope::Ports(ports.clone()));
                        prop_assert!(s.recheck(name).is_none());
                    }
                    prop_assert!(s.rechecks.values().all(|(at, _)| *at > now));
                }
            }
        }

        /// A full scan always moves the monitor's next sweep past its start
        /// (conclusive) or its end (inconclusive), by at most `every`.
        #[test]
        fn a_full_scan_moves_the_next_sweep_forward(
            started in 0i64..1_000_000,
            took in 0i64..1_000_000,
            every in 1u64..10_000_000,
            conclusive in any::<bool>(),
        ) {
            let m = spec("web", &[], every);
            let mut s = SweepSchedule::default();
            let scan = facts(Scope::Full, started, started + took, (!conclusive).then_some("x"));
            s.after_scan(&m, &scan, None);
            let next = s.due_at("web").unwrap();
            let from = if conclusive { started } else { started + took };
            prop_assert!(next > from && next <= from + every as Millis);
        }
    }
}
