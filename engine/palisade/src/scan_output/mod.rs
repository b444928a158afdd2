//! The files `palisade scan` writes for other tools: nmap XML (`-oX`), the
//! masscan list format (`-oL`) and nmap's grepable format (`-oG`). Pure
//! writers over a [`std::io::Write`]; the scan command collects the findings
//! into [`Results`] and calls them.
//!
//! * [`nmap_xml`]: nmap's `-oX`, valid against nmap's DTD, read by `ndiff`.
//! * [`masscan_list`]: masscan's `-oL`, one line per finding as it arrives.
//! * [`grepable`]: nmap's `-oG`, one `Status` and one `Ports` line per host.
//! * [`Services`]: port numbers to service names (nmap's `nmap-services`).

pub mod grepable;
pub mod masscan_list;
pub mod nmap_xml;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::SystemTime;

use palisade_dataplane::scan::{Answer, Finding};

/// nmap lists the ports of a state one by one up to this many per host;
/// more are summed up as "extra ports" (`Not shown: 65530 closed ports`).
pub const COLLAPSE_OVER: usize = 25;

/// Where nmap keeps its table of service names.
pub const NMAP_SERVICES: &str = "/usr/share/nmap/nmap-services";

/// What describes the scan as a whole (the header and footer of the files).
#[derive(Debug, Clone)]
pub struct ScanRun {
    /// The command line, as nmap's `args`.
    pub args: String,
    /// Palisade's version.
    pub version: String,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The ports probed on every host, ascending.
    pub ports: Vec<u16>,
    /// The number of target addresses.
    pub targets: u128,
    /// Whether every port of every target was probed (no shard, no resume,
    /// not interrupted): only then are the ports that never answered known
    /// to be filtered.
    pub complete: bool,
    /// Whether a signal ended the scan early.
    pub interrupted: bool,
}

impl ScanRun {
    /// Seconds from start to end.
    pub fn elapsed(&self) -> f64 {
        self.end
            .duration_since(self.start)
            .unwrap_or_default()
            .as_secs_f64()
    }

    /// The ports as ranges, nmap's `services` attribute: `1-1024,8080`.
    pub fn port_ranges(&self) -> String {
        port_ranges(&self.ports)
    }

    /// nmap's summary of a run: `3 IP addresses (2 hosts up) scanned in 1.23 seconds`.
    fn summary(&self, up: usize) -> String {
        format!(
            "{} IP address{} ({up} host{} up) scanned in {:.2} seconds",
            self.targets,
            if self.targets == 1 { "" } else { "es" },
            if up == 1 { "" } else { "s" },
            self.elapsed()
        )
    }
}

/// Sorted ports as comma-separated ranges: `[1, 2, 3, 8080]` gives `1-3,8080`.
pub fn port_ranges(ports: &[u16]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() && ports[j + 1] == ports[j].wrapping_add(1) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            out.push_str(&ports[i].to_string());
        } else {
            out.push_str(&format!("{}-{}", ports[i], ports[j]));
        }
        i = j + 1;
    }
    out
}

/// Seconds since the epoch (0 before it).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A time as nmap writes it (C's `ctime`, in UTC): `Thu Jan  1 00:00:00 1970`.
pub fn ctime(t: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    time::OffsetDateTime::from(t)
        .format(format)
        .unwrap_or_default()
}

/// Why a port or host is in its state, in nmap's words.
fn reason(answer: Answer) -> &'static str {
    match answer {
        Answer::Open => "syn-ack",
        Answer::Closed => "reset",
        Answer::Echo => "echo-reply",
    }
}

/// What one host answered.
#[derive(Debug, Clone)]
pub struct Host {
    /// The first answer: why the host is up, with its TTL.
    pub up: (Answer, u8),
    /// Open ports, with the TTL of the SYN-ACK.
    pub open: BTreeMap<u16, u8>,
    /// Closed ports, with the TTL of the RST: the first `COLLAPSE_OVER + 1`
    /// only (more are only counted).
    pub closed: BTreeMap<u16, u8>,
    /// All closed ports.
    pub closed_count: u64,
    /// When the first and the last answer came.
    pub first: SystemTime,
    pub last: SystemTime,
}

/// A state nmap leaves out of the port list, with its count: `closed 65533`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extra {
    pub state: &'static str,
    pub reason: &'static str,
    pub count: u64,
}

/// One port of a host's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownPort {
    pub port: u16,
    pub answer: Answer,
    pub ttl: u8,
}

impl Host {
    fn new(f: &Finding) -> Self {
        Host {
            up: (f.answer, f.ttl),
            open: BTreeMap::new(),
            closed: BTreeMap::new(),
            closed_count: 0,
            first: f.time,
            last: f.time,
        }
    }

    /// The ports listed one by one (ascending) and the states summed up as
    /// extra ports, as nmap shows them: closed ports one by one when at most
    /// [`COLLAPSE_OVER`], ports that never answered (with `run.complete`
    /// only) always summed up as filtered.
    pub fn ports(&self, run: &ScanRun) -> (Vec<ShownPort>, Vec<Extra>) {
        let mut shown: Vec<ShownPort> = self
            .open
            .iter()
            .map(|(&port, &ttl)| ShownPort {
                port,
                answer: Answer::Open,
                ttl,
            })
            .collect();
        let mut extra = Vec::new();
        if self.closed_count as usize <= COLLAPSE_OVER {
            shown.extend(self.closed.iter().map(|(&port, &ttl)| ShownPort {
                port,
                answer: Answer::Closed,
                ttl,
            }));
            shown.sort_by_key(|p| p.port);
        } else {
            extra.push(Extra {
                state: "closed",
                reason: "resets",
                count: self.closed_count,
            });
        }
        let answered = self.open.len() as u64 + self.closed_count;
        let silent = (run.ports.len() as u64).saturating_sub(answered);
        if run.complete && silent > 0 {
            extra.push(Extra {
                state: "filtered",
                reason: "no-responses",
                count: silent,
            });
        }
        extra.sort_by_key(|e| std::cmp::Reverse(e.count));
        (shown, extra)
    }
}

/// The findings of a scan by host, in address order (IPv4 first).
#[derive(Debug, Clone, Default)]
pub struct Results {
    hosts: BTreeMap<IpAddr, Host>,
}

impl Results {
    /// Adds one finding.
    pub fn add(&mut self, f: &Finding) {
        let host = self.hosts.entry(f.ip).or_insert_with(|| Host::new(f));
        host.first = host.first.min(f.time);
        host.last = host.last.max(f.time);
        match f.answer {
            // A port that answered both ways (a listener started during
            // the scan) is open: one state per port, as nmap has it.
            Answer::Open => {
                host.open.insert(f.port, f.ttl);
                if host.closed.remove(&f.port).is_some() {
                    host.closed_count -= 1;
                }
            }
            Answer::Closed if host.open.contains_key(&f.port) => {}
            Answer::Closed => {
                host.closed_count += 1;
                if host.closed.len() <= COLLAPSE_OVER {
                    host.closed.insert(f.port, f.ttl);
                }
            }
            Answer::Echo => {}
        }
    }

    /// The hosts that answered anything, in address order.
    pub fn hosts(&self) -> impl Iterator<Item = (&IpAddr, &Host)> {
        self.hosts.iter()
    }

    /// The number of hosts that answered.
    pub fn up(&self) -> usize {
        self.hosts.len()
    }
}

/// TCP port numbers to service names, from nmap's `nmap-services`.
#[derive(Debug, Clone, Default)]
pub struct Services {
    tcp: HashMap<u16, String>,
}

impl Services {
    /// Parses the text of `nmap-services` (`name port/proto frequency #
    /// comment` lines); where a port has more than one TCP name, the most
    /// frequent wins, as in nmap. Lines it cannot read are skipped.
    pub fn parse(text: &str) -> Self {
        let mut best: HashMap<u16, (f64, &str)> = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let freq: f64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0.0);
            let Some(Ok(port)) = port_proto.strip_suffix("/tcp").map(str::parse::<u16>) else {
                continue;
            };
            match best.get(&port) {
                Some(&(f, _)) if f >= freq => {}
                _ => {
                    best.insert(port, (freq, name));
                }
            }
        }
        Services {
            tcp: best
                .into_iter()
                .map(|(port, (_, name))| (port, name.to_string()))
                .collect(),
        }
    }

    /// Reads nmap's table; `None` when it is not installed or unreadable.
    pub fn load(path: &str) -> Option<Self> {
        std::fs::read_to_string(path)
            .ok()
            .map(|text| Self::parse(&text))
    }

    /// The name of a TCP port, if the table has one.
    pub fn tcp(&self, port: u16) -> Option<&str> {
        self.tcp.get(&port).map(String::as_str)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    pub(crate) fn finding(ip: &str, port: u16, answer: Answer, secs: u64) -> Finding {
        Finding {
            ip: ip.parse().unwrap(),
            host: None,
            port,
            answer,
            ttl: 64,
            time: at(secs),
        }
    }

    pub(crate) fn run(ports: Vec<u16>, targets: u128) -> ScanRun {
        ScanRun {
            args: "palisade scan -p 22,80 198.18.0.0/30 -oX <out>".into(),
            version: "9.9.9".into(),
            start: at(1_700_000_000),
            end: at(1_700_000_002),
            ports,
            targets,
            complete: true,
            interrupted: false,
        }
    }

    #[test]
    fn port_ranges_join_runs() {
        assert_eq!(port_ranges(&[]), "");
        assert_eq!(port_ranges(&[22]), "22");
        assert_eq!(port_ranges(&[1, 2, 3, 8080]), "1-3,8080");
        assert_eq!(port_ranges(&[1, 3, 65534, 65535]), "1,3,65534-65535");
    }

    #[test]
    fn ctime_is_nmaps_layout_in_utc() {
        assert_eq!(ctime(at(0)), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(at(1_700_000_000)), "Tue Nov 14 22:13:20 2023");
    }

    #[test]
    fn services_take_tcp_names_most_frequent_first() {
        let s = Services::parse(
            "# comment\nssh\t22/sctp\t0.1\nssh\t22/tcp\t0.18 # Secure Shell\n\
             rare\t80/tcp\t0.0001\nhttp\t80/tcp\t0.48\nhttp-alt\t8080/udp\t0.1\nbroken line\n",
        );
        assert_eq!(s.tcp(22), Some("ssh"));
        assert_eq!(s.tcp(80), Some("http"));
        assert_eq!(s.tcp(8080), None);
    }

    #[test]
    fn hosts_collapse_many_closed_ports_and_count_the_silent_ones() {
        let mut r = Results::default();
        r.add(&finding("198.18.0.2", 22, Answer::Open, 5));
        for p in 100..130 {
            r.add(&finding("198.18.0.2", p, Answer::Closed, 6));
        }
        r.add(&finding("198.18.0.3", 80, Answer::Closed, 7));
        r.add(&finding("198.18.0.3", 80, Answer::Open, 3));
        let run = run((1..=100).chain(100..=199).collect(), 4);
        let hosts: Vec<_> = r.hosts().collect();
        assert_eq!(hosts.len(), 2);
        let (shown, extra) = hosts[0].1.ports(&run);
        assert_eq!(shown.iter().map(|p| p.port).collect::<Vec<_>>(), [22]);
        assert_eq!(
            extra,
            [
                Extra {
                    state: "filtered",
                    reason: "no-responses",
                    count: 200 - 31
                },
                Extra {
                    state: "closed",
                    reason: "resets",
                    count: 30
                },
            ]
        );
        let (shown, _) = hosts[1].1.ports(&run);
        assert_eq!(shown.len(), 1, "a port that answered both ways is open");
        assert_eq!(shown[0].answer, Answer::Open);
        assert_eq!(hosts[1].1.closed_count, 0);
        assert_eq!(hosts[1].1.first, at(3));
        assert_eq!(hosts[1].1.last, at(7));
        let partial = ScanRun {
            complete: false,
            ..run
        };
        assert_eq!(hosts[0].1.ports(&partial).1.len(), 1, "no filtered count");
    }
}
