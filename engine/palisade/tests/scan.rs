//! `palisade scan` end to end, as root, each test in a testbed of its own:
//! network namespaces joined by veth, addresses from 198.18.0.0/15 and
//! 2001:2::/48, real kernel listeners on the target side. Nothing leaves the
//! testbed; it is torn down when the test ends, also on failure.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade_sim::testbed::{Testbed, TestbedConfig, bounded, stderr};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn testbed(v4: &[&str], v6: &[&str]) -> Testbed {
    Testbed::new(TestbedConfig {
        targets_v4: v4.iter().map(|a| a.parse::<Ipv4Addr>().unwrap()).collect(),
        targets_v6: v6.iter().map(|a| a.parse::<Ipv6Addr>().unwrap()).collect(),
        tx_queues: 1,
    })
    .unwrap_or_else(|e| {
        panic!("cannot build the testbed (needs root, iproute2, nftables, python3): {e}")
    })
}

/// Runs `palisade scan` in the scanner namespace, bounded in time.
fn scan(tb: &Testbed, args: &[&str]) -> Output {
    let mut cmd = tb.in_scanner(BIN);
    cmd.arg("scan").args(args);
    bounded(cmd, Duration::from_secs(120))
}

/// (ip, port) of every open-port line of the JSON output.
fn open_ports(o: &Output) -> BTreeSet<(IpAddr, u16)> {
    let stdout = String::from_utf8_lossy(&o.stdout);
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
            assert_eq!(v["state"], "open", "{l}");
            assert!(
                v["ttl"].as_u64().is_some() && v["time"].as_str().is_some(),
                "{l}"
            );
            (
                v["ip"].as_str().unwrap().parse().unwrap(),
                v["port"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

/// Listens on `ports` on every target of the testbed; returns the expected open set.
fn listen_everywhere(tb: &mut Testbed, ports: &[u16]) -> BTreeSet<(IpAddr, u16)> {
    let mut addrs = Vec::new();
    for a in tb
        .targets_v4()
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(tb.targets_v6().iter().map(|a| IpAddr::V6(*a)))
    {
        for &p in ports {
            addrs.push((a, p));
        }
    }
    tb.listen(&addrs).expect("start listeners");
    addrs.into_iter().collect()
}

fn xdp_attached(tb: &Testbed) -> bool {
    let o = tb
        .in_scanner("ip")
        .args(["link", "show", "dev", tb.scanner_if()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains("prog/xdp")
}

const PORTS: &[u16] = &[1, 22, 80, 443, 6379, 8080, 33333, 65535];

#[test]
fn full_range_scan_finds_exactly_the_open_ports_v4_and_v6() {
    let mut tb = testbed(
        &["198.18.0.2", "198.18.0.3", "198.18.0.77"],
        &["2001:2::2", "2001:2::3"],
    );
    let want = listen_everywhere(&mut tb, PORTS);
    for rate in ["100000", "1000000"] {
        let o = scan(
            &tb,
            &[
                "198.18.0.2,198.18.0.3,198.18.0.77",
                "2001:2::2-2001:2::3",
                "-p",
                "1-65535",
                "--rate",
                rate,
                "--wait",
                "1",
            ],
        );
        assert!(o.status.success(), "rate {rate}: {}", stderr(&o));
        assert_eq!(open_ports(&o), want, "rate {rate}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("af_xdp") && err.contains("XDP"), "{err}");
        // Every SYN-ACK was answered with an RST: no half-open connection stays.
        assert!(err.contains(&format!("{} RSTs sent", want.len())), "{err}");
        let ss = tb
            .in_target("ss")
            .args(["-Htn", "state", "syn-recv"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ss.stdout).trim(),
            "",
            "half-open connections left"
        );
        assert!(
            !xdp_attached(&tb),
            "XDP program left attached after the scan"
        );
    }
}

#[test]
fn retries_find_every_open_port_under_one_percent_loss() {
    let mut tb = testbed(&["198.18.0.2", "198.18.0.3"], &["2001:2::2"]);
    let want = listen_everywhere(&mut tb, PORTS);
    tb.set_loss(10).expect("nftables loss");
    let o = scan(
        &tb,
        &[
            "198.18.0.2-198.18.0.3",
            "2001:2::2",
            "-p",
            "-",
            "--retries",
            "2",
            "--rate",
            "200000",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(open_ports(&o), want, "{}", stderr(&o));
}

#[test]
fn a_tcp_connection_stays_usable_during_a_scan() {
    let mut tb = testbed(&["198.18.0.2"], &[]);
    listen_everywhere(&mut tb, &[22]);
    // An echo server on the target; one connection from the scanner's
    // namespace, opened before the scan and used throughout it.
    let echo = "import socket\n\
        l=socket.socket(); l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
        l.bind(('198.18.0.2',7000)); l.listen(1); print('ready',flush=True)\n\
        c,_=l.accept()\n\
        while True:\n\
        \x20   d=c.recv(100)\n\
        \x20   if not d: break\n\
        \x20   c.sendall(d)\n";
    let mut server = tb
        .in_target("python3")
        .args(["-c", echo])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let client = "import socket,time\n\
        c=socket.create_connection(('198.18.0.2',7000),2); c.settimeout(2)\n\
        for i in range(40):\n\
        \x20   m=b'ping %d' % i; c.sendall(m)\n\
        \x20   assert c.recv(100)==m, 'echo mismatch'\n\
        \x20   time.sleep(0.1)\n\
        print('ok')\n";
    let client = tb
        .in_scanner("python3")
        .args(["-c", client])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The scan runs while the client talks (4 s of 100 ms round trips).
    let o = scan(
        &tb,
        &["198.18.0.2", "-p", "-", "--rate", "30000", "--wait", "0.5"],
    );
    let client = client.wait_with_output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&client.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let want: BTreeSet<(IpAddr, u16)> = [
        ("198.18.0.2".parse().unwrap(), 22),
        ("198.18.0.2".parse().unwrap(), 7000),
    ]
    .into();
    assert_eq!(open_ports(&o), want, "{}", stderr(&o));
}

#[test]
fn overrides_queues_closed_ports_and_output_file() {
    let mut tb = Testbed::new(TestbedConfig {
        targets_v4: vec!["198.18.0.2".parse().unwrap()],
        targets_v6: vec!["2001:2::2".parse().unwrap()],
        tx_queues: 2,
    })
    .expect("testbed");
    let want = listen_everywhere(&mut tb, &[80, 443]);
    let dir = std::env::temp_dir().join(format!("palisade-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("found.txt");
    let summary = dir.join("summary.json");
    let mac = tb.target_mac();
    let o = scan(
        &tb,
        &[
            "198.18.0.2",
            "2001:2::2",
            "-p",
            "1-2000",
            "--interface",
            "scan0",
            "--source-ip",
            "198.18.0.1",
            "--source-ip",
            "2001:2::1",
            "--source-port",
            "50000-50003",
            "--gateway-mac",
            &mac,
            "--queues",
            "2",
            "--closed",
            "--format",
            "text",
            "-o",
            out.to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 queue(s)"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    // The machine-readable summary says the same as the human one.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(json["queues"], 2, "{json}");
    assert_eq!(json["interface"], "scan0", "{json}");
    assert_eq!(json["planned"], 2 * 2000, "{json}");
    assert_eq!(json["sent"], 2 * 2000, "{json}");
    assert_eq!(json["open"], 4, "{json}");
    assert_eq!(json["closed"], 2 * 2000 - 4, "{json}");
    assert_eq!(json["interrupted"], false, "{json}");
    assert!(json["rate"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["send_duration_secs"].as_f64().unwrap() > 0.0, "{json}");
    std::fs::remove_dir_all(&dir).unwrap();
    let open: BTreeSet<(IpAddr, u16)> = text
        .lines()
        .filter(|l| l.starts_with("open"))
        .map(|l| {
            let addr: std::net::SocketAddr = l.split_whitespace().nth(1).unwrap().parse().unwrap();
            (addr.ip(), addr.port())
        })
        .collect();
    assert_eq!(open, want, "{text}");
    // Every other port of the range was reported closed, once.
    assert_eq!(
        text.lines().filter(|l| l.starts_with("closed")).count(),
        2 * 2000 - 4,
        "{}",
        stderr(&o)
    );
}

#[test]
fn forged_syn_acks_are_not_reported() {
    let mut tb = testbed(&["198.18.0.2"], &[]);
    listen_everywhere(&mut tb, &[22]);
    tb.add_forger().expect("forger namespace");
    // An off-path forger floods the scanner's source ports with SYN-ACKs
    // claiming to come from a scanned address (198.18.0.50, where no host
    // answers) with guessed acknowledgement numbers; the target namespace
    // routes them to the scan interface.
    let forge = "import socket,struct,random,time\n\
         def csum(b):\n\
         \x20   if len(b)%2: b+=b'\\0'\n\
         \x20   s=sum(struct.unpack('!%dH'%(len(b)//2),b)); s=(s>>16)+(s&0xffff); s+=s>>16\n\
         \x20   return ~s&0xffff\n\
         src,dst=socket.inet_aton('198.18.0.50'),socket.inet_aton('198.18.0.1')\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n\
         n=0; end=time.time()+4\n\
         while time.time()<end:\n\
         \x20   for sp in range(61000,61064):\n\
         \x20       dp=random.choice([23,80,443,5000,6000])\n\
         \x20       t=struct.pack('!HHIIBBHHH',dp,sp,random.getrandbits(32),random.getrandbits(32),5<<4,0x12,65535,0,0)\n\
         \x20       c=csum(src+dst+struct.pack('!BBH',0,6,len(t))+t); t=t[:16]+struct.pack('!H',c)+t[18:]\n\
         \x20       ip=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(t),0,0,64,6,0,src,dst)\n\
         \x20       s.sendto(ip+t,('198.18.0.1',0)); n+=1\n\
         print(n)\n";
    let mut forger = tb.in_forger("python3").expect("forger");
    let forger = forger
        .args(["-c", forge])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = scan(
        &tb,
        &["198.18.0.2,198.18.0.50", "-p", "1-65535", "--rate", "30000"],
    );
    let forger = forger.wait_with_output().unwrap();
    assert!(
        forger.status.success(),
        "forger: {}",
        String::from_utf8_lossy(&forger.stderr)
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let want: BTreeSet<(IpAddr, u16)> = [("198.18.0.2".parse().unwrap(), 22)].into();
    assert_eq!(open_ports(&o), want, "{}", stderr(&o));
    // The forgeries did reach the filter, and were counted as invalid.
    let err = stderr(&o);
    let invalid: u64 = err
        .split(", ")
        .find_map(|part| part.strip_suffix(" invalid")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no invalid count in {err}"));
    assert!(invalid > 1000, "only {invalid} forged replies seen: {err}");
}

/// A count of the summary line on stderr: `<n> <name>`.
fn summary_count(o: &Output, name: &str) -> u64 {
    let err = stderr(o);
    let suffix = format!(" {name}");
    err.split([',', '(', ')', ';'])
        .find_map(|part| {
            part.trim()
                .strip_suffix(suffix.as_str())?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `{name}` count in {err}"))
}

#[test]
fn forged_echo_replies_are_invalid_and_report_nothing() {
    let mut tb = testbed(&["198.18.0.2"], &[]);
    listen_everywhere(&mut tb, &[22]);
    tb.add_forger().expect("forger namespace");
    // An off-path forger sends the scanner ICMP echo replies claiming to come
    // from the kernel target (198.18.0.2, which answers our pings itself)
    // and from 198.18.0.50 (where nothing answers), with guessed identifiers
    // and sequence numbers: every other one with a good ICMP checksum (the
    // filter passes it, the cookie check rejects it) and every other one
    // with a bad checksum (the filter rejects it).
    let forge = "import socket,struct,random,time\n\
         def csum(b):\n\
         \x20   if len(b)%2: b+=b'\\0'\n\
         \x20   s=sum(struct.unpack('!%dH'%(len(b)//2),b)); s=(s>>16)+(s&0xffff); s+=s>>16\n\
         \x20   return ~s&0xffff\n\
         dst=socket.inet_aton('198.18.0.1')\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n\
         n=0; end=time.time()+4\n\
         while time.time()<end:\n\
         \x20   for src in (socket.inet_aton('198.18.0.2'),socket.inet_aton('198.18.0.50')):\n\
         \x20       for bad in (0,1):\n\
         \x20           m=struct.pack('!BBHHH',0,0,0,random.getrandbits(16),random.getrandbits(16))\n\
         \x20           c=csum(m)^bad; m=m[:2]+struct.pack('!H',c)+m[4:]\n\
         \x20           ip=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(m),0,0,64,1,0,src,dst)\n\
         \x20           s.sendto(ip+m,('198.18.0.1',0)); n+=1\n\
         \x20   time.sleep(0.001)\n\
         print(n)\n";
    let forger = tb
        .in_forger("python3")
        .expect("forger")
        .args(["-c", forge])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = scan(
        &tb,
        &[
            "198.18.0.2,198.18.0.50",
            "-p",
            "1-65535",
            "--rate",
            "30000",
            "--ping",
        ],
    );
    let forger = forger.wait_with_output().unwrap();
    assert!(
        forger.status.success(),
        "forger: {}",
        String::from_utf8_lossy(&forger.stderr)
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut echo = BTreeSet::new();
    let mut open = BTreeSet::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let a: IpAddr = v["ip"].as_str().unwrap().parse().unwrap();
        match v["state"].as_str() {
            Some("echo") => {
                assert_eq!(v["port"], 0, "{l}");
                assert!(echo.insert(a), "{a} reported twice: {l}");
            }
            Some("open") => {
                open.insert((a, v["port"].as_u64().unwrap() as u16));
            }
            other => panic!("unexpected state {other:?}: {l}"),
        }
    }
    // The kernel target answered our ping; nothing else is reachable.
    let target: IpAddr = "198.18.0.2".parse().unwrap();
    assert_eq!(echo, [target].into(), "{}", stderr(&o));
    assert_eq!(open, [(target, 22)].into(), "{}", stderr(&o));
    assert_eq!(
        summary_count(&o, "hosts answered echo"),
        1,
        "{}",
        stderr(&o)
    );
    // The forgeries reached the filter: those with a good checksum failed
    // the cookie (invalid), those with a bad one the filter (filter_invalid).
    let sent: u64 = String::from_utf8_lossy(&forger.stdout)
        .trim()
        .parse()
        .unwrap();
    let invalid = summary_count(&o, "invalid");
    let filter_invalid = summary_count(&o, "filter_invalid");
    assert!(sent > 1000, "the forger sent only {sent}");
    assert!(
        invalid > 200 && filter_invalid > 200,
        "{sent} forged, {invalid} invalid, {filter_invalid} filter_invalid: {}",
        stderr(&o)
    );
}

#[test]
fn no_xdp_program_stays_after_sigint_or_kill_9() {
    let mut tb = testbed(&["198.18.0.2"], &[]);
    listen_everywhere(&mut tb, &[22]);
    for signal in ["-INT", "-KILL"] {
        let mut cmd = tb.in_scanner(BIN);
        cmd.args(["scan", "198.18.0.2", "-p", "-", "--rate", "5000"]);
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !xdp_attached(&tb) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "XDP never attached"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // `ip netns exec` execs, so the child's pid is palisade's.
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        if signal == "-INT" {
            assert_eq!(exit.code(), Some(130), "SIGINT exit");
        }
        let start = Instant::now();
        while xdp_attached(&tb) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "XDP still attached after {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn bad_arguments_exit_2_naming_them() {
    for (args, needle) in [
        (vec!["scan", "198.18.0.2", "-p", "0"], "bad port `0`"),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--rate", "0"],
            "--rate",
        ),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--source-port", "70000"],
            "--source-port",
        ),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--source-port", "9-5"],
            "--source-port",
        ),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--gateway-mac", "zz:00"],
            "--gateway-mac",
        ),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--wait=-1"],
            "--wait",
        ),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--shard", "0/2"],
            "bad shard",
        ),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--format", "xml"],
            "--format",
        ),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--queues", "0"],
            "--queues",
        ),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--target-recall", "100"],
            "--target-recall: bad target recall `100`: give a percentage above 0 and below 100",
        ),
        (
            vec!["scan", "198.18.0.2", "-p", "80", "--target-recall", "most"],
            "--target-recall: bad target recall `most`",
        ),
        (
            vec![
                "scan",
                "198.18.0.2",
                "-p",
                "80",
                "--target-recall",
                "99.99",
                "--retries",
                "0",
            ],
            "--target-recall needs --retries 1 or more",
        ),
        (
            vec![
                "scan",
                "198.18.0.2",
                "-p",
                "80",
                "--source-ip",
                "198.18.0.1",
                "--source-ip",
                "198.18.0.9",
            ],
            "--source-ip",
        ),
    ] {
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn runtime_failures_exit_1_saying_what_to_do() {
    let tb = testbed(&["198.18.0.2"], &[]);
    let o = scan(&tb, &["198.18.0.2", "-p", "80", "--interface", "nosuch0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("nosuch0"), "{}", stderr(&o));
    // No route: the testbed has no default route.
    let o = scan(&tb, &["198.19.7.7", "-p", "80"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no route"), "{}", stderr(&o));
}
