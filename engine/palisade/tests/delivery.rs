//! Delivery end to end, as root, in testbeds of their own: sinks added
//! later, dead letters, sinks that hang (a webhook that never answers, a
//! FIFO nobody reads), secrets, and sinks reloaded by SIGHUP. The webhook
//! receiver is a real HTTP server on the host's loopback, reached from the
//! scanner namespace through a `LoopbackBridge`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_sim::testbed::{KillOnDrop, bounded, stderr};
use serde_json::Value;

mod common;

use common::{DaemonCase, LoopbackBridge, path};

/// How the receiver answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Reject,
    /// Reads the request and never answers.
    Hang,
}

/// What the receiver answers to an event.
type Policy = Mutex<Box<dyn Fn(&Value) -> Answer + Send>>;

/// A real HTTP receiver on 127.0.0.1: records each request's event (the
/// JSON body) and answers as `policy` says for it.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Value>>>,
    policy: Arc<Policy>,
}

impl Receiver {
    fn start(policy: impl Fn(&Value) -> Answer + Send + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let policy: Arc<Policy> = Arc::new(Mutex::new(Box::new(policy)));
        let (r, p) = (Arc::clone(&received), Arc::clone(&policy));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, p) = (Arc::clone(&r), Arc::clone(&p));
                std::thread::spawn(move || serve(conn, &r, &p));
            }
        });
        Receiver {
            port,
            received,
            policy,
        }
    }

    fn set_policy(&self, policy: impl Fn(&Value) -> Answer + Send + 'static) {
        *self.policy.lock().unwrap() = Box::new(policy);
    }

    /// The events answered 2xx, in order.
    fn accepted(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

/// Serves one connection (keep-alive): one request after another.
fn serve(conn: TcpStream, received: &Mutex<Vec<Value>>, policy: &Policy) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let answer = (policy.lock().unwrap())(&event);
        match answer {
            Answer::Hang => {
                std::thread::sleep(Duration::from_secs(3600));
                return;
            }
            Answer::Reject => {
                let text = "no such monitor here";
                let _ = write!(
                    conn,
                    "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
            }
            Answer::Ok => {
                received.lock().unwrap().push(event);
                let _ = write!(conn, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            }
        }
    }
}

/// The port of an event (`data.port`).
fn port(event: &Value) -> Option<u64> {
    event["data"]["port"].as_u64()
}

/// The ids of the JSON lines in `file`.
fn ids_in(file: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A monitor that confirms at once and reports every port one by one.
const MONITOR: &str = "confirm = 1\nrecheck = \"off\"\nmax_port_events = 1000";

/// Appends `text` to the case's configuration.
fn append_config(case: &DaemonCase, text: &str) {
    let mut config = std::fs::read_to_string(&case.config).unwrap();
    config.push_str(text);
    std::fs::write(&case.config, config).unwrap();
}

/// `palisade run --once --events <events>`, bounded.
fn once(case: &DaemonCase) -> Output {
    bounded(
        case.command(&[
            "run",
            "-c",
            path(&case.config),
            "--once",
            "--events",
            path(&case.events),
        ]),
        Duration::from_secs(120),
    )
}

#[test]
fn a_sink_added_later_gets_only_new_events_unless_it_asks_for_all() {
    let mut case = DaemonCase::new("dlv-late", &format!("every = \"1h\"\n{MONITOR}"), 300_000);
    case.listen(&[22, 80, 443]);
    let ports: Vec<u16> = (20_000..20_100).collect();
    let mut listeners = Vec::new();
    for chunk in ports.chunks(25) {
        listeners.push(case.listen(chunk));
    }
    // 100 events delivered elsewhere (the --events file).
    let o = once(&case);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        case.alerts().len(),
        100,
        "{:?}",
        common::kinds(&case.alerts())
    );
    let late = case.dir.join("late.jsonl");
    let all = case.dir.join("all.jsonl");
    append_config(
        &case,
        &format!(
            "\n[[sink]]\nkind = \"jsonl\"\nname = \"late\"\npath = \"{}\"\n\n\
             [[sink]]\nkind = \"jsonl\"\nname = \"all\"\nstart = \"all\"\npath = \"{}\"\n",
            late.display(),
            all.display()
        ),
    );
    // 25 ports close: 25 new events.
    case.tb.stop_listener(listeners.remove(0)).unwrap();
    let o = once(&case);
    assert!(o.status.success(), "{}", stderr(&o));
    let everything = ids_in(&case.events);
    assert_eq!(everything.len(), 125);
    assert_eq!(ids_in(&late), everything[100..], "only the new events");
    assert_eq!(ids_in(&all), everything, "every event the store holds");
}

#[test]
fn a_refused_event_is_dead_lettered_and_the_rest_arrive_in_order() {
    let mut case = DaemonCase::new("dlv-dead", &format!("every = \"1h\"\n{MONITOR}"), 300_000);
    case.listen(&[22, 80, 443]);
    case.listen(&[20_001, 20_002, 20_003, 20_004, 20_005]);
    let receiver = Receiver::start(|e| {
        if port(e) == Some(20_003) {
            Answer::Reject
        } else {
            Answer::Ok
        }
    });
    let _bridge = LoopbackBridge::new(case.tb.scanner_ns(), receiver.port);
    append_config(
        &case,
        &format!(
            "\n[[sink]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"http://127.0.0.1:{}/in\"\n\
             max_retries = 0\n",
            receiver.port
        ),
    );
    let o = once(&case);
    assert!(o.status.success(), "{}", stderr(&o));
    let sent = ids_in(&case.events);
    assert_eq!(sent.len(), 5);
    let refused = case
        .alerts()
        .into_iter()
        .find(|e| e["port"] == 20_003)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = sent.iter().filter(|id| **id != refused).cloned().collect();
    assert_eq!(got, want, "every other event, in order");
    // Listed.
    let list = |format: &str| {
        let o = case
            .command(&[
                "deliveries",
                "list",
                "-c",
                path(&case.config),
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let rows: Vec<Value> = list("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["event_id"], refused.as_str());
    assert_eq!(rows[0]["sink"], "hook");
    assert_eq!(rows[0]["status"], 400);
    assert_eq!(rows[0]["excerpt"], "no such monitor here");
    assert!(list("text").contains(&refused));
    let o = case
        .command(&["status", "-c", path(&case.config)])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("dead letters: 1"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // An unknown id: exit 1; no id at all: exit 2.
    let o = case
        .command(&["deliveries", "retry", "-c", path(&case.config), "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = case
        .command(&["deliveries", "retry", "-c", path(&case.config)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // The receiver is fixed; retried, the event arrives.
    receiver.set_policy(|_| Answer::Ok);
    let o = case
        .command(&[
            "deliveries",
            "retry",
            "-c",
            path(&case.config),
            "--sink",
            "hook",
            &refused,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = once(&case);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got.last(), Some(&refused), "{got:?}");
    assert_eq!(got.len(), 5);
    assert!(list("jsonl").trim().is_empty());
}

/// Runs the daemon with `every = "5s"` while ports open one after the
/// other; the sink `sink` (TOML) never takes anything. Checks that sweeps
/// keep their schedule, every change is caught (in the `--events` file),
/// and SIGTERM ends the daemon within 5 s. Returns its stderr.
fn sweeps_go_on_whatever_the_sink_does(case: &mut DaemonCase, sink: &str) -> String {
    case.listen(&[22, 80, 443]);
    append_config(case, sink);
    let mut child = KillOnDrop(
        case.command(&[
            "run",
            "-c",
            path(&case.config),
            "--events",
            path(&case.events),
        ])
        .env("PALISADE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let started = Instant::now();
    let changes = [20_001u16, 20_002, 20_003];
    for (i, &p) in changes.iter().enumerate() {
        std::thread::sleep(Duration::from_secs(6));
        case.listen(&[p]);
        let _ = i;
    }
    std::thread::sleep(Duration::from_secs(7));
    let elapsed = started.elapsed();
    let stop = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGTERM ignored");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stopped_in = stop.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(
        stopped_in < Duration::from_secs(5),
        "SIGTERM took {stopped_in:?}: {err}"
    );
    // Every 5 s over the run: at least one sweep per 5 s window but one.
    let store = palisade::store::Store::open(&case.dir.join("palisade.db")).unwrap();
    let sweeps = store.scan_count().unwrap();
    let windows = (elapsed.as_secs() / 5) as i64;
    assert!(
        sweeps >= windows - 1,
        "{sweeps} sweeps in {elapsed:?}: {err}"
    );
    let caught: BTreeSet<u64> = case
        .alerts()
        .iter()
        .filter(|e| e["kind"] == "unexpected_port_open")
        .filter_map(|e| e["port"].as_u64())
        .collect();
    assert_eq!(
        caught,
        changes.iter().map(|&p| u64::from(p)).collect(),
        "{err}"
    );
    err
}

#[test]
fn a_webhook_that_never_answers_holds_up_nothing_and_learns_no_secret() {
    let mut case = DaemonCase::new("dlv-hang", &format!("every = \"5s\"\n{MONITOR}"), 300_000);
    let receiver = Receiver::start(|_| Answer::Hang);
    let _bridge = LoopbackBridge::new(case.tb.scanner_ns(), receiver.port);
    let secrets = ["hunter2pw", "t0ken-s3cret", "natspassw0rd"];
    let sink = format!(
        "\n[[sink]]\nkind = \"webhook\"\n\
         url = \"http://alice:{}@127.0.0.1:{}/in?token={}\"\ntimeout = \"2s\"\nmax_retries = 1\n\n\
         [[sink]]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:1\"\nuser = \"palisade\"\npassword = \"{}\"\n",
        secrets[0], receiver.port, secrets[1], secrets[2]
    );
    let err = sweeps_go_on_whatever_the_sink_does(&mut case, &sink);
    assert!(receiver.accepted().is_empty());
    assert!(err.contains("webhook:http://alice:***@127.0.0.1"), "{err}");
    // No credential in any log line, nor in the store.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&case.dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("palisade.db")
        {
            stored.extend(std::fs::read(&p).unwrap());
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    for secret in secrets {
        assert!(!err.contains(secret), "{secret} logged: {err}");
        assert!(!stored.contains(secret), "{secret} in the store");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(case.dir.join("palisade.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // What the webhook did not take waits in the outbox; --once says so.
    let o = once(&case);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn a_fifo_nobody_reads_holds_up_nothing() {
    let mut case = DaemonCase::new("dlv-fifo", &format!("every = \"5s\"\n{MONITOR}"), 300_000);
    let fifo = case.dir.join("events.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let sink = format!(
        "\n[[sink]]\nkind = \"jsonl\"\nname = \"fifo\"\npath = \"{}\"\n",
        fifo.display()
    );
    let err = sweeps_go_on_whatever_the_sink_does(&mut case, &sink);
    assert!(err.contains("nobody reads this FIFO"), "{err}");
}

#[test]
fn sighup_starts_new_sinks_and_stops_removed_ones() {
    let mut case = DaemonCase::new("dlv-hup", &format!("every = \"2s\"\n{MONITOR}"), 300_000);
    case.listen(&[22, 80, 443, 20_001]);
    let old = case.dir.join("old.jsonl");
    let new = case.dir.join("new.jsonl");
    let sink = |name: &str, file: &std::path::Path| {
        format!(
            "\n[[sink]]\nkind = \"jsonl\"\nname = \"{name}\"\npath = \"{}\"\n",
            file.display()
        )
    };
    let base = std::fs::read_to_string(&case.config).unwrap();
    std::fs::write(&case.config, format!("{base}{}", sink("old", &old))).unwrap();
    let mut child = KillOnDrop(
        case.command(&["run", "-c", path(&case.config)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let wait_for = |file: &std::path::Path, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(40);
        while ids_in(file).len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        ids_in(file).len()
    };
    assert_eq!(wait_for(&old, 1), 1);
    // Replace the sink: the old one stops, the new one starts (at the end).
    std::fs::write(&case.config, format!("{base}{}", sink("new", &new))).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    case.listen(&[20_002]);
    assert_eq!(wait_for(&new, 1), 1);
    std::thread::sleep(Duration::from_secs(3));
    // A reload that fails the checks changes nothing.
    std::fs::write(&case.config, format!("{base}[[sink]]\nkind = \"kafka\"\n")).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    case.listen(&[20_003]);
    assert_eq!(wait_for(&new, 2), 2);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(ids_in(&old).len(), 1, "the removed sink got nothing more");
    let ports: Vec<u64> = std::fs::read_to_string(&new)
        .unwrap()
        .lines()
        .map(|l| port(&serde_json::from_str(l).unwrap()).unwrap())
        .collect();
    assert_eq!(ports, [20_002, 20_003], "{err}");
    assert!(
        err.contains("reload failed, keeping the old configuration"),
        "{err}"
    );
}
