//! Palisade test bed: throw-away network namespaces for integration tests and demos.
//!
//! A [`Testbed`] is two network namespaces joined by one veth pair:
//!
//! ```text
//!  pal-<pid>-<n>-s (scanner)                 pal-<pid>-<n>-t (target)
//!  scan0  198.18.0.1/24  2001:2::1/64  <-->  tgt0  every target address
//! ```
//!
//! plus, on request, a third "forger" namespace `pal-<pid>-<n>-f` hanging off the
//! target namespace (`frg0` 198.18.1.1/24 in the target namespace, `frg1`
//! 198.18.1.2/24 in the forger namespace), which then forwards between the two:
//! the forger's packets reach the scanner through `scan0`, as an off-path
//! attacker's would, so tests can send forged replies from it.
//!
//! Safety: every address is taken from 198.18.0.0/15 (RFC 2544 benchmarking) or
//! 2001:2::/48 (RFC 5180 benchmarking); nothing is ever configured in the host's own
//! namespace, no default route is ever added, and all namespaces (with their veths and
//! listener processes) are removed by [`Testbed::teardown`] or, failing that, by `Drop`
//! — also when a test panics. Namespace names carry the creating process id, so
//! [`cleanup_stale`] can remove what a killed run left behind.
//!
//! The crate shells out to `ip` (iproute2), `nft` (nftables), `python3` and `sysctl`;
//! [`preflight`] checks they are present and that we run as root.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Name of the scanner-side veth end (in the scanner namespace).
pub const SCANNER_IF: &str = "scan0";
/// Name of the target-side veth end (in the target namespace).
pub const TARGET_IF: &str = "tgt0";
/// Target-side end of the forger veth pair (in the target namespace).
pub const FORGER_LINK_IF: &str = "frg0";
/// Forger-side end of the forger veth pair (in the forger namespace).
pub const FORGER_IF: &str = "frg1";

/// The scanner's IPv4 address on `scan0`.
pub const SCANNER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The scanner's IPv6 address on `scan0`.
pub const SCANNER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// The target namespace's IPv4 address on `frg0` (towards the forger).
pub const FORGER_LINK_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The forger's IPv4 address on `frg1`.
pub const FORGER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The target namespace's IPv6 address on `frg0` (towards the forger).
pub const FORGER_LINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
/// The forger's IPv6 address on `frg1`.
pub const FORGER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2);

/// How long [`Testbed::listen`] waits for the listener process to say "ready".
const LISTEN_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Testbed::new`] waits for IPv6 addresses to leave the tentative state.
const DAD_TIMEOUT: Duration = Duration::from_secs(10);
/// nftables table holding the loss rule in the target namespace.
const LOSS_TABLE: &str = "palisade_loss";
/// nftables table holding the silence rules in the target namespace.
const SILENT_TABLE: &str = "palisade_silent";

/// Everything that can go wrong while building, using or tearing down a test bed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A prerequisite is missing (tool not installed, not root); the message names it.
    #[error("testbed preflight failed: {0}")]
    Preflight(String),
    /// The configuration or an argument is unacceptable (e.g. an address outside the
    /// benchmarking ranges).
    #[error("invalid testbed configuration: {0}")]
    Config(String),
    /// A program could not be started at all.
    #[error("could not run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why it could not be started.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The listener process failed to start or bind.
    #[error("listener failed: {0}")]
    Listener(String),
    /// [`Testbed::stop_listener`] was given an id this test bed does not know.
    #[error("unknown listener {0}")]
    UnknownListener(ListenerId),
    /// An I/O error talking to a child process.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Teardown hit one or more errors (all steps are attempted regardless).
    #[error("teardown failed: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

/// What to put in the target namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestbedConfig {
    /// IPv4 target addresses; each must lie in 198.18.0.0/24 (not .0, .1 or .255).
    pub targets_v4: Vec<Ipv4Addr>,
    /// IPv6 target addresses; each must lie in 2001:2::/64 (not `2001:2::` or `2001:2::1`).
    pub targets_v6: Vec<Ipv6Addr>,
    /// Number of TX and RX queues of both veth ends (`numtxqueues`/`numrxqueues`), ≥ 1.
    pub tx_queues: u32,
}

impl Default for TestbedConfig {
    /// One IPv4 target 198.18.0.2, one IPv6 target 2001:2::2, one queue.
    fn default() -> Self {
        TestbedConfig {
            targets_v4: vec![Ipv4Addr::new(198, 18, 0, 2)],
            targets_v6: vec![Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2)],
            tx_queues: 1,
        }
    }
}

/// Identifies one group of listeners started by [`Testbed::listen`].
///
/// It is a plain `Copy` id rather than a guard so that holding it does not borrow the
/// [`Testbed`]; stop the group with [`Testbed::stop_listener`], and every group still
/// running is stopped by [`Testbed::teardown`] / `Drop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerId(u64);

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One `python3` listener process.
#[derive(Debug)]
struct Listener {
    child: Child,
    /// Kept open: the listener exits when it sees EOF here, i.e. when we go away.
    stdin: Option<ChildStdin>,
    /// Drains the child's stdout and stderr (joined on stop).
    drains: Vec<JoinHandle<()>>,
}

impl Listener {
    fn stop(mut self) -> Result<(), TestbedError> {
        drop(self.stdin.take());
        let killed = match self.child.kill() {
            Ok(()) => Ok(()),
            // Already exited: fine.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            Err(e) => Err(e),
        };
        let waited = self.child.wait();
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        killed?;
        waited?;
        Ok(())
    }
}

/// A scanner namespace and a target namespace joined by a veth pair (see the crate docs).
///
/// Torn down by [`Testbed::teardown`] or on `Drop`.
#[derive(Debug)]
pub struct Testbed {
    scanner_ns: String,
    target_ns: String,
    forger_ns_name: String,
    /// Namespaces that exist right now, in creation order.
    created: Vec<String>,
    forger: bool,
    targets_v4: Vec<Ipv4Addr>,
    targets_v6: Vec<Ipv6Addr>,
    scanner_mac: String,
    target_mac: String,
    listeners: BTreeMap<ListenerId, Listener>,
    next_listener: u64,
    torn_down: bool,
}

/// Per-process counter making namespace names unique across threads.
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Serialises `ip netns add`: the first one mounts /run/netns, and concurrent first
/// mounts race.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

impl Testbed {
    /// Builds the two namespaces and the veth pair between them.
    ///
    /// Scanner side `scan0`: 198.18.0.1/24 and 2001:2::1/64. Target side `tgt0`: every
    /// target address (/24 and /64). `lo` is up in both. IPv6 DAD is disabled on both
    /// ends (`accept_dad=0` plus `nodad`) and the call waits until no address is
    /// tentative. No default route anywhere. In the target namespace
    /// `net.ipv4.tcp_syncookies=1`, and `net.ipv4.tcp_max_syn_backlog` /
    /// `net.core.somaxconn` are raised where the kernel makes them per-namespace.
    ///
    /// Calls [`preflight`] and [`cleanup_stale`] first. Anything half-built is torn
    /// down again on error.
    pub fn new(cfg: TestbedConfig) -> Result<Testbed, TestbedError> {
        let (targets_v4, targets_v6) = validate(&cfg)?;
        preflight()?;
        // Best effort: a killed earlier run must not leak namespaces forever.
        let _ = cleanup_stale();

        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("pal-{}-{n}", std::process::id());
        let mut tb = Testbed {
            scanner_ns: format!("{base}-s"),
            target_ns: format!("{base}-t"),
            forger_ns_name: format!("{base}-f"),
            created: Vec::new(),
            forger: false,
            targets_v4,
            targets_v6,
            scanner_mac: String::new(),
            target_mac: String::new(),
            listeners: BTreeMap::new(),
            next_listener: 0,
            torn_down: false,
        };
        // On error `tb` is dropped here, which removes whatever was created.
        tb.build(cfg.tx_queues)?;
        Ok(tb)
    }

    fn build(&mut self, queues: u32) -> Result<(), TestbedError> {
        let s = self.scanner_ns.clone();
        let t = self.target_ns.clone();
        self.add_netns(&s)?;
        self.add_netns(&t)?;

        // Created inside the scanner namespace, peer moved straight into the target
        // namespace: nothing ever appears in the host namespace.
        let q = queues.to_string();
        run(
            "ip",
            &[
                "-n",
                &s,
                "link",
                "add",
                SCANNER_IF,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                TARGET_IF,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "netns",
                &t,
            ],
        )?;

        for ns in [&s, &t] {
            base_sysctls(ns)?;
        }
        no_dad(&s, SCANNER_IF)?;
        no_dad(&t, TARGET_IF)?;

        address_scanner(&s)?;
        for a in &self.targets_v4 {
            run(
                "ip",
                &[
                    "-n",
                    &t,
                    "addr",
                    "add",
                    &format!("{a}/24"),
                    "dev",
                    TARGET_IF,
                ],
            )?;
        }
        for a in &self.targets_v6 {
            run(
                "ip",
                &[
                    "-n",
                    &t,
                    "-6",
                    "addr",
                    "add",
                    &format!("{a}/64"),
                    "dev",
                    TARGET_IF,
                    "nodad",
                ],
            )?;
        }

        // Target-side TCP limits, so a SYN flood from the scanner gets SYN-ACKs.
        sysctl(&t, "net.ipv4.tcp_syncookies", "1", true)?;
        sysctl(&t, "net.ipv4.tcp_max_syn_backlog", "1048576", false)?;
        sysctl(&t, "net.core.somaxconn", "65535", false)?;

        for (ns, dev) in [(&s, SCANNER_IF), (&t, TARGET_IF)] {
            run("ip", &["-n", ns, "link", "set", "dev", "lo", "up"])?;
            run("ip", &["-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        wait_not_tentative(&s)?;
        wait_not_tentative(&t)?;

        self.scanner_mac = read_mac(&s, SCANNER_IF)?;
        self.target_mac = read_mac(&t, TARGET_IF)?;
        Ok(())
    }

    fn add_netns(&mut self, name: &str) -> Result<(), TestbedError> {
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run("ip", &["netns", "add", name])?;
        }
        self.created.push(name.to_owned());
        Ok(())
    }

    /// Name of the scanner namespace (`pal-<pid>-<n>-s`).
    pub fn scanner_ns(&self) -> &str {
        &self.scanner_ns
    }

    /// Name of the target namespace (`pal-<pid>-<n>-t`).
    pub fn target_ns(&self) -> &str {
        &self.target_ns
    }

    /// Name of the forger namespace, if [`Testbed::add_forger`] has been called.
    pub fn forger_ns(&self) -> Option<&str> {
        self.forger.then_some(self.forger_ns_name.as_str())
    }

    /// The scanner's interface, `scan0`.
    pub fn scanner_if(&self) -> &str {
        SCANNER_IF
    }

    /// The target's interface, `tgt0`.
    pub fn target_if(&self) -> &str {
        TARGET_IF
    }

    /// The scanner's IPv4 address, 198.18.0.1.
    pub fn scanner_v4(&self) -> Ipv4Addr {
        SCANNER_V4
    }

    /// The scanner's IPv6 address, 2001:2::1.
    pub fn scanner_v6(&self) -> Ipv6Addr {
        SCANNER_V6
    }

    /// The IPv4 targets configured on `tgt0` (deduplicated, in configuration order).
    pub fn targets_v4(&self) -> &[Ipv4Addr] {
        &self.targets_v4
    }

    /// The IPv6 targets configured on `tgt0` (deduplicated, in configuration order).
    pub fn targets_v6(&self) -> &[Ipv6Addr] {
        &self.targets_v6
    }

    /// MAC address of `scan0`, lower-case `aa:bb:cc:dd:ee:ff`.
    pub fn scanner_mac(&self) -> String {
        self.scanner_mac.clone()
    }

    /// MAC address of `tgt0`, lower-case `aa:bb:cc:dd:ee:ff`.
    pub fn target_mac(&self) -> String {
        self.target_mac.clone()
    }

    /// Starts real kernel TCP listeners in the target namespace, one socket per
    /// `(addr, port)`, all in one `python3` process (SO_REUSEADDR, backlog 4096,
    /// IPV6_V6ONLY for IPv6) that accepts and immediately closes connections.
    ///
    /// Returns once every socket is listening (the process prints `ready`; 10 s
    /// timeout). The addresses must be configured in the target namespace (a target,
    /// or a wildcard address). The returned id stops just this group via
    /// [`Testbed::stop_listener`]; groups still running are stopped on teardown/`Drop`.
    /// The process also exits by itself if this process dies (it watches its stdin).
    pub fn listen(&mut self, addrs: &[(IpAddr, u16)]) -> Result<ListenerId, TestbedError> {
        if addrs.is_empty() {
            return Err(TestbedError::Config("listen: no addresses given".into()));
        }
        if let Some((a, _)) = addrs.iter().find(|(_, p)| *p == 0) {
            return Err(TestbedError::Config(format!("listen: port 0 on {a}")));
        }
        let mut cmd = self.in_target("python3");
        cmd.args(["-c", LISTENER_PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cmdline = format!("ip netns exec {} python3 -c <listener>", self.target_ns);
        let mut child = cmd.spawn().map_err(|source| TestbedError::Spawn {
            cmd: cmdline.clone(),
            source,
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut stdin = child.stdin.take().expect("stdin is piped");

        let (tx, rx) = mpsc::channel::<Option<String>>();
        let out_drain = thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            for _ in lines.by_ref() {}
        });
        let err_buf = std::sync::Arc::new(Mutex::new(String::new()));
        let err_buf2 = err_buf.clone();
        let err_drain = thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut b = err_buf2.lock().unwrap_or_else(|e| e.into_inner());
                if b.len() < 16 * 1024 {
                    b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            }
        });

        let mut spec = String::with_capacity(addrs.len() * 24);
        for (a, p) in addrs {
            spec.push_str(&format!("{a} {p}\n"));
        }
        spec.push_str(".\n");
        // A write error means the child died early; its stderr says why.
        let _ = stdin
            .write_all(spec.as_bytes())
            .and_then(|()| stdin.flush());

        let outcome = rx.recv_timeout(LISTEN_READY_TIMEOUT);
        let mut listener = Listener {
            child,
            stdin: Some(stdin),
            drains: vec![out_drain, err_drain],
        };
        let failure = match outcome {
            Ok(Some(line)) if line.trim() == "ready" => None,
            Ok(Some(line)) => Some(format!("unexpected output {line:?}")),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                Some("exited before listening".to_owned())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Some(format!(
                "not ready after {}s",
                LISTEN_READY_TIMEOUT.as_secs()
            )),
        };
        if let Some(why) = failure {
            let status = listener.child.try_wait().ok().flatten();
            let _ = listener.stop();
            let stderr = err_buf.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let status = status.map(|s| format!(" ({s})")).unwrap_or_default();
            return Err(TestbedError::Listener(format!(
                "`{cmdline}` {why}{status}: {}",
                stderr.trim()
            )));
        }

        let id = ListenerId(self.next_listener);
        self.next_listener += 1;
        self.listeners.insert(id, listener);
        Ok(id)
    }

    /// Stops the listeners started by one [`Testbed::listen`] call.
    pub fn stop_listener(&mut self, id: ListenerId) -> Result<(), TestbedError> {
        match self.listeners.remove(&id) {
            Some(l) => l.stop(),
            None => Err(TestbedError::UnknownListener(id)),
        }
    }

    /// Drops `per_mille`/1000 of the TCP packets arriving on `tgt0` in the target
    /// namespace, at random (nftables `numgen random mod 1000 < N drop` in a
    /// prerouting hook at raw priority, table `inet palisade_loss`). Replaces any earlier
    /// loss rule; 0 removes it; 1000 drops everything.
    pub fn set_loss(&mut self, per_mille: u32) -> Result<(), TestbedError> {
        if per_mille > 1000 {
            return Err(TestbedError::Config(format!(
                "set_loss: {per_mille} per mille is more than 1000"
            )));
        }
        // "add + delete" makes the delete idempotent on nft versions without `destroy`;
        // the whole script is one atomic transaction.
        let mut script = format!("table inet {LOSS_TABLE} {{}}\ndelete table inet {LOSS_TABLE}\n");
        if per_mille > 0 {
            // nft types the constant by the numgen range (0..=999), so "< 1000" is
            // rejected ("Value 1000 exceeds valid range 0-999"): 1000 is a plain drop.
            let select = if per_mille >= 1000 {
                String::new()
            } else {
                format!("numgen random mod 1000 < {per_mille} ")
            };
            script.push_str(&format!(
                "table inet {LOSS_TABLE} {{\n\
                 \tchain prerouting {{\n\
                 \t\ttype filter hook prerouting priority raw; policy accept;\n\
                 \t\tiifname \"{TARGET_IF}\" meta l4proto tcp {select}drop\n\
                 \t}}\n\
                 }}\n"
            ));
        }
        let mut cmd = self.in_target("nft");
        cmd.args(["-f", "-"]);
        run_with_input(
            cmd,
            &format!("ip netns exec {} nft -f -", self.target_ns),
            &script,
        )
    }

    /// Makes `addresses` silent: every packet to them is dropped in the target
    /// namespace (TCP, ICMP, everything but ARP and neighbour discovery), as
    /// behind a firewall that drops all, or a host that is down while its
    /// neighbour entry lingers. An empty list ends the silence.
    pub fn set_silent(&mut self, addresses: &[IpAddr]) -> Result<(), TestbedError> {
        let mut script =
            format!("table inet {SILENT_TABLE} {{}}\ndelete table inet {SILENT_TABLE}\n");
        if !addresses.is_empty() {
            let rules: Vec<String> = addresses
                .iter()
                .map(|a| match a {
                    IpAddr::V4(a) => format!("\t\tip daddr {a} drop\n"),
                    // Neighbour discovery keeps working: the host is "up".
                    IpAddr::V6(a) => format!(
                        "\t\tip6 daddr {a} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n\t\tip6 daddr {a} drop\n"
                    ),
                })
                .collect();
            script.push_str(&format!(
                "table inet {SILENT_TABLE} {{\n\tchain prerouting {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n{}\t}}\n}}\n",
                rules.concat()
            ));
        }
        let mut cmd = self.in_target("nft");
        cmd.args(["-f", "-"]);
        run_with_input(
            cmd,
            &format!("ip netns exec {} nft -f -", self.target_ns),
            &script,
        )
    }

    /// Takes `scan0` out of the scanner namespace (into the forger namespace,
    /// added if need be), as if the scan interface were removed: the scanner
    /// sees no such interface and no route to the targets.
    /// [`Testbed::replug_scanner`] brings it back.
    pub fn unplug_scanner(&mut self) -> Result<(), TestbedError> {
        let f = self.add_forger()?;
        run(
            "ip",
            &[
                "-n",
                &self.scanner_ns,
                "link",
                "set",
                SCANNER_IF,
                "netns",
                &f,
            ],
        )?;
        Ok(())
    }

    /// Puts `scan0` back into the scanner namespace with its addresses, up.
    pub fn replug_scanner(&mut self) -> Result<(), TestbedError> {
        let s = self.scanner_ns.clone();
        run(
            "ip",
            &[
                "-n",
                &self.forger_ns_name,
                "link",
                "set",
                SCANNER_IF,
                "netns",
                &s,
            ],
        )?;
        address_scanner(&s)?;
        run("ip", &["-n", &s, "link", "set", SCANNER_IF, "up"])?;
        Ok(())
    }

    /// Adds the forger namespace `pal-<pid>-<n>-f`, joined to the target namespace
    /// by its own veth pair: `frg0` (target side, 198.18.1.1/24, 2001:2:0:1::1/64)
    /// and `frg1` (forger side, 198.18.1.2/24, 2001:2:0:1::2/64). The target
    /// namespace forwards between forger and scanner (routes to 198.18.0.0/24 and
    /// 2001:2::/64 in the forger, back via the first target in the scanner), so
    /// the forger's packets arrive on `scan0`. Returns the forger namespace name.
    /// Calling it again returns the same namespace.
    pub fn add_forger(&mut self) -> Result<String, TestbedError> {
        if self.forger {
            return Ok(self.forger_ns_name.clone());
        }
        let s = self.target_ns.clone();
        let f = self.forger_ns_name.clone();
        self.add_netns(&f)?;
        self.forger = true;
        run(
            "ip",
            &[
                "-n",
                &s,
                "link",
                "add",
                FORGER_LINK_IF,
                "type",
                "veth",
                "peer",
                "name",
                FORGER_IF,
                "netns",
                &f,
            ],
        )?;
        base_sysctls(&f)?;
        no_dad(&s, FORGER_LINK_IF)?;
        no_dad(&f, FORGER_IF)?;
        for (ns, dev, v4, v6) in [
            (&s, FORGER_LINK_IF, FORGER_LINK_V4, FORGER_LINK_V6),
            (&f, FORGER_IF, FORGER_V4, FORGER_V6),
        ] {
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "-6",
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            )?;
            run("ip", &["-n", ns, "link", "set", "dev", "lo", "up"])?;
            run("ip", &["-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        // The target namespace routes between forger and scanner; the
        // forger's packets may claim any source (no reverse-path filter).
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            sysctl(&s, key, "1", true)?;
        }
        for key in ["all", "default", TARGET_IF, FORGER_LINK_IF] {
            sysctl(&s, &format!("net.ipv4.conf.{key}.rp_filter"), "0", false)?;
        }
        let scanner = self.scanner_ns.clone();
        for (ns, net, via) in [
            (&f, "198.18.0.0/24".to_string(), FORGER_LINK_V4.to_string()),
            (&f, "2001:2::/64".to_string(), FORGER_LINK_V6.to_string()),
            (
                &scanner,
                "198.18.1.0/24".to_string(),
                self.targets_v4
                    .first()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            ),
            (
                &scanner,
                "2001:2:0:1::/64".to_string(),
                self.targets_v6
                    .first()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
            ),
        ] {
            if !via.is_empty() {
                run("ip", &["-n", ns, "route", "add", &net, "via", &via])?;
            }
        }
        wait_not_tentative(&s)?;
        wait_not_tentative(&f)?;
        Ok(f)
    }

    /// `ip netns exec <scanner ns> <program>`; add arguments with `.arg(..)`.
    pub fn in_scanner(&self, program: &str) -> Command {
        in_ns(&self.scanner_ns, program)
    }

    /// `ip netns exec <target ns> <program>`; add arguments with `.arg(..)`.
    pub fn in_target(&self, program: &str) -> Command {
        in_ns(&self.target_ns, program)
    }

    /// `ip netns exec <forger ns> <program>`, if the forger exists.
    pub fn in_forger(&self, program: &str) -> Option<Command> {
        self.forger_ns().map(|ns| in_ns(ns, program))
    }

    /// Tears everything down now: stops listeners, deletes the namespaces (which
    /// deletes the veths). Every step is attempted; errors are collected and returned.
    /// `Drop` does the same and ignores errors.
    pub fn teardown(mut self) -> Result<(), TestbedError> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<(), TestbedError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        for (id, l) in std::mem::take(&mut self.listeners) {
            if let Err(e) = l.stop() {
                errors.push(format!("stopping listener {id}: {e}"));
            }
        }
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(ns) = self.created.pop() {
            if let Err(e) = delete_netns(&ns) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TestbedError::Teardown(errors))
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.teardown_inner();
    }
}

/// The listener process. Reads `addr port` lines up to a `.` line on stdin, binds and
/// listens on all of them, prints `ready`, then accepts and closes connections until
/// it is killed or its stdin reaches EOF (the test process went away).
const LISTENER_PY: &str = r#"
import os, selectors, socket, sys
try:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
except Exception:
    pass
specs = []
while True:
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    line = line.strip()
    if line == ".":
        break
    addr, port = line.rsplit(" ", 1)
    specs.append((addr, int(port)))
sel = selectors.DefaultSelector()
for addr, port in specs:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        s.bind((addr, port))
        s.listen(4096)
    except OSError as e:
        sys.stderr.write("cannot listen on %s port %d: %s\n" % (addr, port, e))
        sys.stderr.flush()
        sys.exit(3)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
stdin_fd = sys.stdin.fileno()
sel.register(stdin_fd, selectors.EVENT_READ)
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    for key, _ in sel.select():
        if key.fd == stdin_fd:
            if not os.read(stdin_fd, 4096):
                sys.exit(0)
            continue
        try:
            conn, _ = key.fileobj.accept()
            conn.close()
        except OSError:
            pass
"#;

/// Checks that the tools exist and that we are root. The error names everything that
/// is missing, e.g. "needs root" or "`nft` not found: install nftables (cargo xtask setup)".
pub fn preflight() -> Result<(), TestbedError> {
    let mut missing = Vec::new();
    match effective_uid() {
        Some(0) => {}
        Some(uid) => missing.push(format!(
            "needs root (running as uid {uid}): network namespaces, veths and nftables need CAP_NET_ADMIN/CAP_SYS_ADMIN"
        )),
        None => missing.push("needs root (cannot read the effective uid from /proc/self/status)".into()),
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("python3", "python3"),
        ("sysctl", "procps"),
    ] {
        if !in_path(tool) {
            missing.push(format!(
                "`{tool}` not found: install {package} (cargo xtask setup)"
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TestbedError::Preflight(missing.join("; ")))
    }
}

/// Deletes namespaces named `pal-<pid>-<n>-<s|t|f>` whose `<pid>` is no longer a live
/// process (left behind by a killed test run), killing any process still inside them
/// first. Returns the names it deleted. Namespaces of live processes are not touched.
pub fn cleanup_stale() -> Result<Vec<String>, TestbedError> {
    let out = run("ip", &["netns", "list"])?;
    let mut deleted = Vec::new();
    let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // Lines look like "name" or "name (id: 3)".
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = testbed_pid(name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = run("ip", &["netns", "pids", name]) {
            let pids: Vec<String> = String::from_utf8_lossy(&pids.stdout)
                .split_whitespace()
                .filter(|p| p.parse::<u32>().is_ok())
                .map(str::to_owned)
                .collect();
            if !pids.is_empty() {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .args(&pids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if delete_netns(name).is_ok() {
            deleted.push(name.to_owned());
        }
    }
    Ok(deleted)
}

/// The pid embedded in a testbed namespace name `pal-<pid>-<n>-<s|t|f>`.
fn testbed_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("pal-")?;
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse::<u32>().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    let role = parts.next()?;
    if parts.next().is_some() || !matches!(role, "s" | "t" | "f") {
        return None;
    }
    Some(pid)
}

fn validate(cfg: &TestbedConfig) -> Result<(Vec<Ipv4Addr>, Vec<Ipv6Addr>), TestbedError> {
    if cfg.tx_queues == 0 {
        return Err(TestbedError::Config("tx_queues must be at least 1".into()));
    }
    let mut v4 = Vec::new();
    for &a in &cfg.targets_v4 {
        let o = a.octets();
        if o[..3] != [198, 18, 0] {
            return Err(TestbedError::Config(format!(
                "IPv4 target {a} is outside 198.18.0.0/24"
            )));
        }
        if matches!(o[3], 0 | 1 | 255) {
            return Err(TestbedError::Config(format!(
                "IPv4 target {a} is the network, scanner (198.18.0.1) or broadcast address"
            )));
        }
        if !v4.contains(&a) {
            v4.push(a);
        }
    }
    let mut v6 = Vec::new();
    for &a in &cfg.targets_v6 {
        let s = a.segments();
        if s[..4] != [0x2001, 2, 0, 0] {
            return Err(TestbedError::Config(format!(
                "IPv6 target {a} is outside 2001:2::/64"
            )));
        }
        if a == SCANNER_V6 || s[4..] == [0, 0, 0, 0] {
            return Err(TestbedError::Config(format!(
                "IPv6 target {a} is the subnet-router anycast or the scanner (2001:2::1) address"
            )));
        }
        if !v6.contains(&a) {
            v6.push(a);
        }
    }
    Ok((v4, v6))
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// Runs `program args`, failing with its stderr on a non-zero exit.
/// Gives `scan0` in namespace `s` the scanner's addresses.
fn address_scanner(s: &str) -> Result<(), TestbedError> {
    run(
        "ip",
        &[
            "-n",
            s,
            "addr",
            "add",
            &format!("{SCANNER_V4}/24"),
            "dev",
            SCANNER_IF,
        ],
    )?;
    run(
        "ip",
        &[
            "-n",
            s,
            "-6",
            "addr",
            "add",
            &format!("{SCANNER_V6}/64"),
            "dev",
            SCANNER_IF,
            "nodad",
        ],
    )?;
    Ok(())
}

fn run(program: &str, args: &[&str]) -> Result<Output, TestbedError> {
    let cmdline = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestbedError::Spawn {
            cmd: cmdline.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(TestbedError::Command {
            cmd: cmdline,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `cmd` with `input` on stdin, failing with its stderr on a non-zero exit.
fn run_with_input(mut cmd: Command, cmdline: &str, input: &str) -> Result<(), TestbedError> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TestbedError::Spawn {
            cmd: cmdline.to_owned(),
            source,
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = stdin.write_all(input.as_bytes());
    drop(stdin);
    let out = child.wait_with_output()?;
    if out.status.success() {
        written?;
        Ok(())
    } else {
        Err(TestbedError::Command {
            cmd: cmdline.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Sets `key=value` inside namespace `ns`. When `required` is false, a key the kernel
/// does not have (or does not make per-namespace) is skipped.
fn sysctl(ns: &str, key: &str, value: &str, required: bool) -> Result<(), TestbedError> {
    let r = run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ],
    );
    match r {
        Ok(_) => Ok(()),
        Err(_) if !required => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sysctls every testbed namespace gets: no router advertisements (so never a default
/// route), no DAD on interfaces created from now on.
fn base_sysctls(ns: &str) -> Result<(), TestbedError> {
    for key in ["all", "default"] {
        sysctl(ns, &format!("net.ipv6.conf.{key}.accept_ra"), "0", false)?;
        sysctl(ns, &format!("net.ipv6.conf.{key}.accept_dad"), "0", false)?;
    }
    Ok(())
}

/// Disables DAD (also for the link-local address) and RAs on `dev` before it goes up.
fn no_dad(ns: &str, dev: &str) -> Result<(), TestbedError> {
    sysctl(ns, &format!("net.ipv6.conf.{dev}.accept_dad"), "0", true)?;
    sysctl(ns, &format!("net.ipv6.conf.{dev}.accept_ra"), "0", true)?;
    Ok(())
}

/// Waits until namespace `ns` has no tentative IPv6 address.
fn wait_not_tentative(ns: &str) -> Result<(), TestbedError> {
    let deadline = Instant::now() + DAD_TIMEOUT;
    loop {
        let out = run("ip", &["-n", ns, "-6", "-o", "addr", "show", "tentative"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TestbedError::Timeout(format!(
                "IPv6 addresses in {ns} still tentative after {}s: {}",
                DAD_TIMEOUT.as_secs(),
                text.trim()
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn read_mac(ns: &str, dev: &str) -> Result<String, TestbedError> {
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/sys/class/net/{dev}/address"),
        ],
    )?;
    let mac = String::from_utf8_lossy(&out.stdout)
        .trim()
        .to_ascii_lowercase();
    if mac.len() != 17 || mac.split(':').count() != 6 {
        return Err(TestbedError::Command {
            cmd: format!("ip netns exec {ns} cat /sys/class/net/{dev}/address"),
            status: "unexpected output".into(),
            stderr: mac,
        });
    }
    Ok(mac)
}

fn delete_netns(name: &str) -> Result<(), TestbedError> {
    match run("ip", &["netns", "del", name]) {
        Ok(_) => Ok(()),
        // Already gone: that is what we wanted.
        Err(TestbedError::Command { ref stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved fs
    line.split_whitespace().nth(2)?.parse().ok()
}

fn in_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Runs `cmd` to completion, killing it (and panicking: this is for tests)
/// after `limit`; stdout and stderr are collected.
pub fn bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let start = Instant::now();
    // Drain the pipes while waiting so a chatty child never blocks on them.
    let out = child.stdout.take().map(|mut p| {
        thread::spawn(move || {
            let mut b = Vec::new();
            let _ = p.read_to_end(&mut b);
            b
        })
    });
    let err = child.stderr.take().map(|mut p| {
        thread::spawn(move || {
            let mut b = Vec::new();
            let _ = p.read_to_end(&mut b);
            b
        })
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.and_then(|t| t.join().ok()).unwrap_or_default(),
        stderr: err.and_then(|t| t.join().ok()).unwrap_or_default(),
    }
}

/// A child process that is killed (and reaped) when dropped, unless it has
/// ended: a test that fails half-way leaves no daemon behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A process's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The path of binary `name` of this workspace, built beside the running
/// test (`target/<profile>/<name>`): for a test of one package that runs
/// another package's binary (`cargo test --workspace` builds every binary
/// before it runs a test). Panics, saying how to build it, if it is missing.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test runs from target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build -p {name}` (or `cargo test --workspace`)",
        bin.display()
    );
    bin
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn pid_parsing() {
        assert_eq!(testbed_pid("pal-123-0-s"), Some(123));
        assert_eq!(testbed_pid("pal-123-45-t"), Some(123));
        assert_eq!(testbed_pid("pal-1-2-f"), Some(1));
        assert_eq!(testbed_pid("pal-123-0-x"), None);
        assert_eq!(testbed_pid("pal-abc-0-s"), None);
        assert_eq!(testbed_pid("pal-123-s"), None);
        assert_eq!(testbed_pid("pal-123-0-s-extra"), None);
        assert_eq!(testbed_pid("other-123-0-s"), None);
    }

    #[test]
    fn validation() {
        assert!(validate(&TestbedConfig::default()).is_ok());
        let bad_v4 = TestbedConfig {
            targets_v4: vec![Ipv4Addr::new(198, 18, 1, 2)],
            ..TestbedConfig::default()
        };
        assert!(matches!(validate(&bad_v4), Err(TestbedError::Config(_))));
        let scanner_v4 = TestbedConfig {
            targets_v4: vec![SCANNER_V4],
            ..TestbedConfig::default()
        };
        assert!(validate(&scanner_v4).is_err());
        let bad_v6 = TestbedConfig {
            targets_v6: vec![Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 5)],
            ..TestbedConfig::default()
        };
        assert!(matches!(validate(&bad_v6), Err(TestbedError::Config(_))));
        let zero_q = TestbedConfig {
            tx_queues: 0,
            ..TestbedConfig::default()
        };
        assert!(validate(&zero_q).is_err());
        let dup = TestbedConfig {
            targets_v4: vec![Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 2)],
            ..TestbedConfig::default()
        };
        assert_eq!(validate(&dup).unwrap().0.len(), 1);
    }
}
