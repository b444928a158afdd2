//! The files `palisade scan` writes for other tools, read by those tools:
//! nmap XML (`-oX`) compared by Debian's `ndiff` and validated against
//! nmap's DTD with `xmllint`, masscan's list (`-oL`) and nmap's grepable
//! format (`-oG`), from real scans in a testbed of their own (as root:
//! network namespaces, addresses from 198.18.0.0/15 and 2001:2::/48, torn
//! down at the end, also on failure). And the scan-side polish: bounded
//! target lists, `--resume-index` past the end, a reader that goes away.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_sim::testbed::{Testbed, TestbedConfig, bounded, stderr};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const DTD: &str = "/usr/share/nmap/nmap.dtd";

/// The ports every scan here probes: 1025 of them.
const PORTS: &str = "1-1024,8080";
const PORT_COUNT: u64 = 1025;

fn testbed() -> Testbed {
    Testbed::new(TestbedConfig {
        targets_v4: vec![
            "198.18.0.2".parse::<Ipv4Addr>().unwrap(),
            "198.18.0.3".parse().unwrap(),
        ],
        targets_v6: vec!["2001:2::2".parse::<Ipv6Addr>().unwrap()],
        tx_queues: 1,
    })
    .unwrap_or_else(|e| {
        panic!("cannot build the testbed (needs root, iproute2, nftables, python3): {e}")
    })
}

/// A directory of its own for a test's files, removed when it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("palisade-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `palisade scan` of every target on [`PORTS`] in the scanner
/// namespace, bounded in time, with `extra` arguments.
fn scan(tb: &Testbed, extra: &[&str]) -> Output {
    let mut cmd = tb.in_scanner(BIN);
    cmd.args([
        "scan",
        "198.18.0.2-198.18.0.3",
        "2001:2::2",
        "-p",
        PORTS,
        "--rate",
        "20000",
        "--wait",
        "1",
    ])
    .args(extra);
    let o = bounded(cmd, Duration::from_secs(120));
    assert!(o.status.success(), "scan {extra:?}: {}", stderr(&o));
    o
}

/// Runs a tool, bounded in time.
fn tool(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    bounded(cmd, Duration::from_secs(60))
}

/// `xmllint` validates the file against nmap's DTD.
fn assert_valid_nmap_xml(path: &str) {
    let o = tool("xmllint", &["--noout", "--dtdvalid", DTD, path]);
    assert!(
        o.status.success(),
        "{path} is not valid against {DTD}: {}\n{}",
        stderr(&o),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// (ip, port) of every open-port line of the JSON lines output.
fn open_in_json(o: &Output) -> BTreeSet<(IpAddr, u16)> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
            assert_eq!(v["state"], "open", "closed ports without --closed: {l}");
            (
                v["ip"].as_str().unwrap().parse().unwrap(),
                v["port"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

/// The port lines ndiff reports as changed (`+8080/tcp open  http-proxy`),
/// each with the host section it is in, whitespace collapsed.
fn ndiff_port_changes(text: &str) -> Vec<(String, String)> {
    let mut host = String::new();
    let mut changes = Vec::new();
    for line in text.lines() {
        let body = line.get(1..).unwrap_or("");
        if line.starts_with(' ') && body.ends_with(':') {
            host = body.trim_end_matches(':').to_string();
        } else if (line.starts_with('+') || line.starts_with('-'))
            && body
                .split('/')
                .next()
                .is_some_and(|p| p.parse::<u16>().is_ok())
        {
            let change = format!(
                "{}{}",
                &line[..1],
                body.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            changes.push((host.clone(), change));
        }
    }
    changes
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn ndiff_reports_exactly_the_port_that_changed_between_two_xml_scans() {
    let mut tb = testbed();
    let dir = TempDir::new("ndiff");
    let mut open = Vec::new();
    for ip in ["198.18.0.2", "198.18.0.3", "2001:2::2"] {
        for port in [22, 80] {
            open.push((ip.parse::<IpAddr>().unwrap(), port));
        }
    }
    tb.listen(&open).expect("start listeners");

    // Before: XML to stdout (`-oX -`), so no JSON lines.
    let before = dir.file("before.xml");
    let o = scan(&tb, &["-oX", "-"]);
    std::fs::write(&before, &o.stdout).unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("<?xml"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // A listener starts on 198.18.0.2:8080 (closed before).
    let started: (IpAddr, u16) = ("198.18.0.2".parse().unwrap(), 8080);
    tb.listen(&[started]).expect("start a listener");
    let after = dir.file("after.xml");
    let (list, grepable) = (dir.file("after.list"), dir.file("after.gnmap"));
    let start = now();
    let o = scan(&tb, &["-oX", &after, "-oL", &list, "-oG", &grepable]);
    let end = now();
    open.push(started);
    let want: BTreeSet<(IpAddr, u16)> = open.iter().copied().collect();
    assert_eq!(open_in_json(&o), want, "JSON lines stay on stdout");

    assert_valid_nmap_xml(&before);
    assert_valid_nmap_xml(&after);

    let d = tool("ndiff", &[&before, &after]);
    let text = String::from_utf8_lossy(&d.stdout);
    // ndiff exits 1 when the scans differ.
    assert_eq!(d.status.code(), Some(1), "{text}{}", stderr(&d));
    assert_eq!(
        ndiff_port_changes(&text),
        [(
            "198.18.0.2".to_string(),
            "+8080/tcp open http-proxy".to_string()
        )],
        "ndiff's report:\n{text}"
    );
    // The closed ports it does not show changed by that one port.
    assert!(
        text.contains(&format!("-Not shown: {} closed ports", PORT_COUNT - 2))
            && text.contains(&format!("+Not shown: {} closed ports", PORT_COUNT - 3)),
        "{text}"
    );

    // -oL: masscan's list. masscan's --readscan reads only its binary
    // format (-oB), so the lines are checked here.
    let list = std::fs::read_to_string(&list).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.first(), Some(&"#masscan"), "{list}");
    assert_eq!(lines.last(), Some(&"# end"), "{list}");
    let listed: BTreeSet<(IpAddr, u16)> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 5, "{l}");
            assert_eq!((f[0], f[1]), ("open", "tcp"), "{l}");
            let time: u64 = f[4].parse().unwrap();
            assert!((start..=end).contains(&time), "{l}: not in {start}..={end}");
            (f[3].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(listed, want, "{list}");
    assert_eq!(listed.len(), lines.len() - 2, "a port listed twice: {list}");

    // -oG: nmap's grepable format.
    let gnmap = std::fs::read_to_string(&grepable).unwrap();
    let lines: Vec<&str> = gnmap.lines().collect();
    assert!(
        lines[0].starts_with("# Palisade ") && lines[0].contains(" as: "),
        "{gnmap}"
    );
    assert!(
        lines.last().unwrap().starts_with("# Palisade done at ")
            && lines
                .last()
                .unwrap()
                .contains("-- 3 IP addresses (3 hosts up) scanned in "),
        "{gnmap}"
    );
    let mut grepped = BTreeSet::new();
    let mut up = BTreeSet::new();
    for line in &lines[1..lines.len() - 1] {
        let fields: Vec<&str> = line.split('\t').collect();
        let ip: IpAddr = fields[0]
            .strip_prefix("Host: ")
            .and_then(|h| h.strip_suffix(" ()"))
            .unwrap_or_else(|| panic!("bad host field in {line:?}"))
            .parse()
            .unwrap();
        match &fields[1..] {
            ["Status: Up"] => {
                up.insert(ip);
            }
            [ports, ignored] => {
                let ports: Vec<&str> = ports
                    .strip_prefix("Ports: ")
                    .unwrap_or_else(|| panic!("{line:?}"))
                    .split(", ")
                    .collect();
                for p in &ports {
                    let f: Vec<&str> = p.split('/').collect();
                    assert_eq!(f.len(), 8, "{p}");
                    assert_eq!(
                        (f[1], f[2], f[3], f[5], f[6], f[7]),
                        ("open", "tcp", "", "", "", ""),
                        "{p}"
                    );
                    assert!(!f[4].is_empty(), "no service name: {p}");
                    grepped.insert((ip, f[0].parse::<u16>().unwrap()));
                }
                assert_eq!(
                    *ignored,
                    format!(
                        "Ignored State: closed ({})",
                        PORT_COUNT - ports.len() as u64
                    ),
                    "{line:?}"
                );
            }
            _ => panic!("bad line {line:?}"),
        }
    }
    assert_eq!(grepped, want, "{gnmap}");
    assert_eq!(up.len(), 3, "{gnmap}");
}

#[test]
fn more_than_one_output_to_stdout_and_other_nmap_output_flags_exit_2() {
    for (args, needle) in [
        (
            vec!["-oX", "-", "-oG", "-"],
            "more than one output to stdout",
        ),
        (
            vec!["-oL", "-", "-o", "-"],
            "more than one output to stdout",
        ),
        (vec!["-oN", "x"], "`-oN` is not supported"),
        (vec!["-oA", "x"], "`-oA` is not supported"),
    ] {
        let o = Command::new(BIN)
            .args(["scan", "198.18.0.2", "-p", "80"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn an_endless_target_list_is_refused_with_a_bounded_read() {
    for (flag, path) in [("-iL", "/dev/zero"), ("--exclude-file", "/dev/zero")] {
        let mut cmd = Command::new(BIN);
        cmd.args(["plan", "198.18.0.2", "-p", "80", flag, path]);
        let o = bounded(cmd, Duration::from_secs(30));
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("/dev/zero:1: line longer than 65536 bytes"),
            "{flag}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn resume_index_past_the_end_exits_2_naming_the_end() {
    // 2 hosts x 3 ports = 6 probes; shard 1/2 has 3.
    let base = ["198.18.0.2-198.18.0.3", "-p", "22,80,443", "--shard", "1/2"];
    let o = Command::new(BIN)
        .arg("plan")
        .args(base)
        .args(["--resume-index", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "the end itself is fine: {}", stderr(&o));
    for cmd in ["plan", "scan"] {
        let o = Command::new(BIN)
            .arg(cmd)
            .args(base)
            .args(["--resume-index", "4"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--resume-index 4: past the end: shard 1/2 has 3 probes"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    // `palisade plan ... | head -1`: the reader closes after one line.
    let mut child = Command::new(BIN)
        .args(["plan", "198.18.0.0/16", "-p", "-", "--limit", "100000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("sweep:"), "{first}");
    // The reader is dropped: the next writes fail with EPIPE.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("palisade plan kept running after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(err, "", "nothing on stderr");
}
