//! `palisade-alert` end to end: the binary against a real `nats-server`,
//! checked by its exit status, stdout and stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_outputs::alert::human_line;
use palisade_outputs::schema::{self, Envelope, EventData, PayloadFormat, PortEvent, Severity};

// The crate's test helper (a throwaway nats-server), compiled in here so
// this test needs no cargo feature.
#[allow(dead_code)]
#[path = "../../testing.rs"]
mod testing;

use testing::{Alertmanager, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_palisade-alert");

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn event(monitor: &str, port: u16) -> Envelope {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let incident_id = format!("{monitor}-{port}-{now}");
    Envelope::new(
        format!("{incident_id}:opened"),
        "palisade://scanner-1".into(),
        now.clone(),
        EventData::UnexpectedPortOpen(PortEvent {
            monitor: monitor.into(),
            host: "198.18.0.2".into(),
            address: "198.18.0.2".into(),
            port,
            state: Some("open".into()),
            expected: false,
            first_seen: now.clone(),
            confirmed_at: now,
            resolved_at: None,
            incident_id,
            incident_kind: "unexpected_port_open".into(),
            severity: Severity::High,
            reason: None,
        }),
    )
}

/// Creates the stream and publishes events like the engine's sink.
struct Publisher {
    rt: tokio::runtime::Runtime,
    js: async_nats::jetstream::Context,
}

impl Publisher {
    fn new(server: &NatsServer) -> Publisher {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let js = rt.block_on(async {
            let client = async_nats::connect(&server.url).await.unwrap();
            let js = async_nats::jetstream::new(client);
            js.create_stream(async_nats::jetstream::stream::Config {
                name: "PALISADE".into(),
                subjects: vec!["palisade.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
            js
        });
        Publisher { rt, js }
    }

    fn publish(&self, e: &Envelope, format: PayloadFormat) {
        self.rt.block_on(async {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.id.as_str());
            headers.insert("Content-Type", format.content_type());
            let payload = schema::encode(e, format).unwrap();
            self.js
                .publish_with_headers(e.nats_subject("palisade"), headers, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
    }

    fn consumer_count(&self) -> usize {
        self.rt.block_on(async {
            let mut stream = self.js.get_stream("PALISADE").await.unwrap();
            stream.info().await.unwrap().state.consumer_count
        })
    }
}

/// A running `palisade-alert` whose output lines arrive on channels.
struct Proc {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        Self::spawn_with_env(args, &[])
    }

    fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Proc {
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    fn stdout_line(&mut self, timeout: Duration) -> String {
        self.stdout.recv_timeout(timeout).unwrap_or_else(|e| {
            panic!(
                "no stdout line within {timeout:?} ({e}); stderr: {:?}",
                self.drain_stderr()
            )
        })
    }

    fn drain_stderr(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push(line);
        }
        self.stderr_seen.clone()
    }

    /// Waits for a stderr line containing `needle`.
    fn stderr_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(line) = self.stderr_seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {needle:?} within {timeout:?}: {:?}",
                    self.stderr_seen
                ),
            }
        }
    }

    /// SIGTERM, then the exit code (within 10 s).
    fn terminate(&mut self) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exit code, not a signal");
            }
            assert!(
                Instant::now() < deadline,
                "did not stop within 10s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs to completion with a time limit; returns (code, stdout, stderr, elapsed).
fn run_to_end(args: &[&str], limit: Duration) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("palisade-alert {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

#[test]
fn an_unreachable_nats_is_one_clear_line_and_exit_1() {
    let port = closed_port();
    let url = format!("nats://127.0.0.1:{port}");
    for sub in ["run", "tail"] {
        let mut args = vec![sub, "--nats-url", &url];
        if sub == "run" {
            args.extend(["--dispatch", "log"]);
        }
        let (code, stdout, stderr, took) = run_to_end(&args, Duration::from_secs(15));
        assert_eq!(code, 1, "{sub}: {stderr}");
        assert!(took < Duration::from_secs(10), "{sub} took {took:?}");
        assert_eq!(stdout, "");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines,
            [format!(
                "palisade-alert: error: cannot connect to NATS at {url}: connection refused"
            )],
            "{sub}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_help_teaches() {
    for args in [
        &["run"][..],
        &["run", "--dispatch", "teams"],
        &["run", "--dispatch", "slack"],
        &["run", "--dispatch", "pagerduty=@/nonexistent/key"],
        &["run", "--dispatch", "smtp=mail.example,from=a@b.example"],
        &["run", "--dispatch", "webhook"],
        &["run", "--dispatch", "log", "--user", "u"],
        &[
            "run",
            "--dispatch",
            "log",
            "--nats-token-file",
            "/nonexistent/token",
        ],
        &[
            "run",
            "--dispatch",
            "log",
            "--token",
            "t",
            "--nats-token-file",
            "f",
        ],
        &["run", "--dispatch", "log", "--max-deliver", "0"],
        &["run", "--dispatch", "log", "--token", "t", "--creds", "f"],
        &["tail", "--tls-cert", "c"],
        &["frobnicate"],
        &[],
    ] {
        let (code, stdout, stderr, _) = run_to_end(args, Duration::from_secs(10));
        assert_eq!(code, 2, "{args:?}: {stdout} {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let (_, _, stderr, _) = run_to_end(&["run", "--dispatch", "teams"], Duration::from_secs(10));
    assert!(
        stderr.contains("expected `log`, `webhook=URL`, `alertmanager=URL`, `slack"),
        "{stderr}"
    );
    // A secret that cannot be read names where it was looked for.
    let (_, _, stderr, _) = run_to_end(&["run", "--dispatch", "slack"], Duration::from_secs(10));
    assert!(
        stderr.contains("PALISADE_SLACK_WEBHOOK_URL is not set"),
        "{stderr}"
    );
    let (_, _, stderr, _) = run_to_end(
        &["run", "--dispatch", "pagerduty=@/nonexistent/key"],
        Duration::from_secs(10),
    );
    assert!(
        stderr.contains("the PagerDuty routing key: cannot read /nonexistent/key"),
        "{stderr}"
    );

    let (code, help, _, _) = run_to_end(&["--help"], Duration::from_secs(10));
    assert_eq!(code, 0);
    for needle in ["run", "tail", "Exit status", "PALISADE", "palisade.events."] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let (code, help, _, _) = run_to_end(&["run", "--help"], Duration::from_secs(10));
    assert_eq!(code, 0);
    for needle in [
        "--nats-url",
        "--token",
        "--nats-token-file",
        "--nats-password-file",
        "PALISADE_NATS_TOKEN",
        "--resend",
        "--dashboard-url",
        "--subject-prefix",
        "--user",
        "--creds",
        "--nkey-seed",
        "--tls-ca",
        "--tls-cert",
        "--stream",
        "--consumer",
        "--filter",
        "--max-deliver",
        "alertmanager=URL",
        "webhook=URL",
        "slack[=URL|@FILE|env:VAR]",
        "PALISADE_SLACK_WEBHOOK_URL",
        "pagerduty[=KEY|@FILE|env:VAR][,url=URL]",
        "PALISADE_PAGERDUTY_ROUTING_KEY",
        "smtp=HOST[:PORT],from=ADDR,to=ADDR",
        "STARTTLS",
        "credentials",
        "dead-lettered at once",
        "[default: palisade-alert]",
        "[default: 10]",
    ] {
        assert!(
            help.contains(needle),
            "run --help lacks {needle:?}:\n{help}"
        );
    }
    let (code, help, _, _) = run_to_end(&["tail", "--help"], Duration::from_secs(10));
    assert_eq!(code, 0);
    assert!(help.contains("[default: palisade.>]"), "{help}");
}

#[test]
fn run_prints_events_and_stops_cleanly_on_sigterm() {
    let server = NatsServer::start();
    let publisher = Publisher::new(&server);
    let mut proc = Proc::spawn(&["run", "--nats-url", &server.url, "--dispatch", "log"]);
    proc.stderr_line("consuming", Duration::from_secs(10));
    let a = event("web-1", 6379);
    let b = event("web-2", 23);
    publisher.publish(&a, PayloadFormat::MsgPack);
    publisher.publish(&b, PayloadFormat::Json);
    assert_eq!(proc.stdout_line(Duration::from_secs(10)), human_line(&a));
    assert_eq!(proc.stdout_line(Duration::from_secs(10)), human_line(&b));
    assert_eq!(proc.terminate(), 0);
    assert!(
        proc.drain_stderr()
            .iter()
            .any(|l| l.contains("SIGTERM: stopping"))
    );

    // Restarted, the durable consumer does not deliver them again.
    let mut proc = Proc::spawn(&["run", "--nats-url", &server.url, "--dispatch", "log"]);
    proc.stderr_line("consuming", Duration::from_secs(10));
    let c = event("web-3", 80);
    publisher.publish(&c, PayloadFormat::MsgPack);
    assert_eq!(proc.stdout_line(Duration::from_secs(10)), human_line(&c));
    assert!(
        proc.stdout
            .recv_timeout(Duration::from_millis(500))
            .is_err()
    );
    assert_eq!(proc.terminate(), 0);
}

/// An HTTP endpoint that always answers 500, counting requests.
fn failing_endpoint() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    endpoint(
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope",
    )
}

/// An HTTP endpoint on 127.0.0.1 answering every request with `answer`,
/// recording the request bodies.
fn endpoint(answer: &'static [u8]) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(Mutex::new(Vec::new()));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then the body by Content-Length.
            let body_len = loop {
                let Ok(n) = conn.read(&mut chunk) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    break Some((at + 4, len));
                }
            };
            if let Some((start, len)) = body_len {
                while buf.len() < start + len {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let end = (start + len).min(buf.len());
                seen.lock().unwrap().push(buf[start..end].to_vec());
            }
            let _ = conn.write_all(answer);
        }
    });
    (url, count)
}

#[test]
fn exceeding_max_deliver_dead_letters_the_event_and_logs_it() {
    let server = NatsServer::start();
    let publisher = Publisher::new(&server);
    let (url, count) = failing_endpoint();
    let dispatch = format!("webhook={url}");
    let mut proc = Proc::spawn(&[
        "run",
        "--nats-url",
        &server.url,
        "--dispatch",
        &dispatch,
        "--max-deliver",
        "3",
        "--retry-initial",
        "100ms",
        "--retry-max",
        "200ms",
    ]);
    proc.stderr_line("consuming", Duration::from_secs(10));
    let e = event("web-1", 6379);
    publisher.publish(&e, PayloadFormat::MsgPack);
    let line = proc.stderr_line("dead-lettered event", Duration::from_secs(20));
    assert!(
        line.contains(&format!(
            "dead-lettered event {} (unexpected_port_open, monitor web-1) to palisade.dlq.webhook after 3 deliveries",
            e.id
        )),
        "{line}"
    );
    assert!(
        line.contains("ERROR") && line.contains("answered 500"),
        "{line}"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(count.lock().unwrap().len(), 3);
    let retries = proc
        .drain_stderr()
        .iter()
        .filter(|l| l.contains("failed on delivery"))
        .count();
    assert_eq!(retries, 2);
    assert_eq!(proc.terminate(), 0);
}

#[test]
fn tail_prints_the_live_stream() {
    let server = NatsServer::start();
    let publisher = Publisher::new(&server);
    let old = event("web-1", 1);
    publisher.publish(&old, PayloadFormat::MsgPack);
    let mut proc = Proc::spawn(&["tail", "--nats-url", &server.url]);
    proc.stderr_line("tailing new events", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while publisher.consumer_count() == 0 {
        assert!(Instant::now() < deadline, "tail created no consumer");
        std::thread::sleep(Duration::from_millis(50));
    }
    let new = event("web-1", 2);
    publisher.publish(&new, PayloadFormat::Json);
    assert_eq!(proc.stdout_line(Duration::from_secs(10)), human_line(&new));
    assert_eq!(proc.terminate(), 0);

    let mut proc = Proc::spawn(&["tail", "--nats-url", &server.url, "--json"]);
    proc.stderr_line("tailing new events", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let json = event("web-2", 3);
    publisher.publish(&json, PayloadFormat::MsgPack);
    let line = proc.stdout_line(Duration::from_secs(10));
    assert_eq!(
        schema::decode(line.as_bytes(), PayloadFormat::Json).unwrap(),
        json
    );
    assert_eq!(proc.terminate(), 0);
}

/// The command lines of the running `palisade-alert` processes, as `ps`
/// shows them (the test's nats-server has the token on its own).
fn ps_output() -> String {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(BIN))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn secrets_from_a_file_or_the_environment_stay_out_of_ps() {
    let token = "s3cret-token-from-file-7f2a";
    let server = NatsServer::start_with_token(token);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let file = file.to_str().unwrap().to_string();

    // From a file.
    let mut proc = Proc::spawn(&[
        "run",
        "--nats-url",
        &server.url,
        "--dispatch",
        "log",
        "--nats-token-file",
        &file,
    ]);
    // Connected and authenticated (no stream yet: it waits for one).
    proc.stderr_line("waiting for it to be created", Duration::from_secs(10));
    let ps = ps_output();
    assert!(ps.contains(&file), "the process is listed: {ps}");
    assert!(!ps.contains(token), "{ps}");
    assert_eq!(proc.terminate(), 0);

    // From the environment.
    let mut child = Command::new(BIN)
        .args(["tail", "--nats-url", &server.url])
        .env("PALISADE_NATS_TOKEN", token)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let line = stderr
        .recv_timeout(Duration::from_secs(10))
        .expect("a log line");
    let ready = std::iter::once(line)
        .chain(std::iter::from_fn(|| {
            stderr.recv_timeout(Duration::from_secs(10)).ok()
        }))
        .find(|l| l.contains("not found; waiting"));
    assert!(
        ready.is_some(),
        "authenticated with the token from the environment"
    );
    let ps = ps_output();
    assert!(ps.contains(" tail "), "the process is listed: {ps}");
    assert!(!ps.contains(token), "{ps}");
    let _ = child.kill();
    let _ = child.wait();

    // A wrong token in the environment is refused (it is used).
    let (code, _, stderr, _) = {
        let out = Command::new(BIN)
            .args(["tail", "--nats-url", &server.url])
            .env("PALISADE_NATS_TOKEN", "wrong")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            (),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            (),
        )
    };
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("authorization"), "{stderr}");
}

/// The JetStream messages on `subject` (e.g. the dead letters).
fn messages_on(server: &NatsServer, subject: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(&server.url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("PALISADE").await.unwrap();
        let info = stream.info().await.unwrap();
        let mut n = 0;
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await
                && m.subject.as_str().starts_with(subject)
            {
                n += 1;
            }
        }
        n
    })
}

/// `palisade-alert` killed (SIGKILL) while an incident fires in a real
/// Alertmanager; its resolution is published while it is dead, for longer
/// than its delivery budget; restarted, it delivers the resolution (not a
/// dead letter), and the alert does not fire again.
#[test]
fn killed_for_longer_than_its_budget_a_pending_resolution_still_ends_the_alert() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let am = rt.block_on(Alertmanager::start());
    let server = NatsServer::start();
    let publisher = Publisher::new(&server);
    let dispatch = format!("alertmanager={}", am.url);
    let args = [
        "run",
        "--nats-url",
        &server.url,
        "--dispatch",
        &dispatch,
        "--resend",
        "1s",
        "--max-deliver",
        "2",
        "--retry-initial",
        "100ms",
        "--retry-max",
        "200ms",
    ];
    let firing = |want: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let n = rt
                .block_on(am.find("PalisadeUnexpectedPortOpen", 6379))
                .len();
            if n == want {
                return;
            }
            assert!(Instant::now() < deadline, "{n} alerts, want {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut proc = Proc::spawn(&args);
    proc.stderr_line("consuming", Duration::from_secs(10));
    let open = event("db-1", 6379);
    publisher.publish(&open, PayloadFormat::Json);
    firing(1);

    // Killed: nothing acked, nothing re-posted.
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
    let mut resolution = open.clone();
    if let EventData::UnexpectedPortOpen(p) = &open.data {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        resolution = Envelope::new(
            format!("{}:resolved", p.incident_id),
            open.source.clone(),
            now.clone(),
            EventData::PortResolved(PortEvent {
                resolved_at: Some(now),
                state: Some("closed".into()),
                reason: Some("observed".into()),
                severity: Severity::Normal,
                ..p.clone()
            }),
        );
    }
    publisher.publish(&resolution, PayloadFormat::Json);
    // Dead for longer than its delivery budget (4 resends, the endsAt
    // horizon): the alert expires by itself in Alertmanager meanwhile.
    std::thread::sleep(Duration::from_secs(5));
    firing(0);

    // Restarted: the resolution is delivered, the alert stays ended, and
    // nothing was dead-lettered.
    let mut proc = Proc::spawn(&args);
    proc.stderr_line("consuming", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    firing(0);
    assert_eq!(messages_on(&server, "palisade.dlq."), 0, "dead letters");
    assert_eq!(proc.terminate(), 0);
    let seen = proc.drain_stderr().join("\n");
    assert!(!seen.contains("dead-lettered"), "{seen}");
}

#[test]
fn slack_and_pagerduty_with_their_secrets_from_the_environment_and_a_file() {
    let server = NatsServer::start();
    let publisher = Publisher::new(&server);
    let (slack_url, slack) =
        endpoint(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    let (pd_url, pagerduty) = endpoint(
        b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 20\r\nconnection: close\r\n\r\n{\"status\":\"success\"}",
    );
    let key = "0123456789abcdef0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("pagerduty.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let pd_spec = format!("pagerduty=@{},url={pd_url}", key_file.display());
    let mut proc = Proc::spawn_with_env(
        &[
            "run",
            "--nats-url",
            &server.url,
            "--dispatch",
            "slack",
            "--dispatch",
            &pd_spec,
        ],
        &[("PALISADE_SLACK_WEBHOOK_URL", &slack_url)],
    );
    proc.stderr_line("consuming", Duration::from_secs(10));
    let e = event("web-1", 6379);
    publisher.publish(&e, PayloadFormat::Json);
    let deadline = Instant::now() + Duration::from_secs(10);
    while slack.lock().unwrap().is_empty() || pagerduty.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no Slack or PagerDuty request");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = |bodies: &Arc<Mutex<Vec<Vec<u8>>>>| -> serde_json::Value {
        serde_json::from_slice(&bodies.lock().unwrap()[0]).unwrap()
    };
    let message = body(&slack);
    assert_eq!(
        message["text"],
        ":rotating_light: HIGH: Unexpected port open 6379/tcp on web-1 (198.18.0.2)"
    );
    let trigger = body(&pagerduty);
    assert_eq!(trigger["routing_key"], key);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], e.data.incident_id().unwrap());
    let ps = ps_output();
    assert!(!ps.contains(key) && !ps.contains(&slack_url), "{ps}");
    assert_eq!(proc.terminate(), 0);
    let stderr = proc.drain_stderr().join("\n");
    assert!(
        !stderr.contains(key) && !stderr.contains(&slack_url),
        "{stderr}"
    );
}

#[test]
fn log_lines_in_json_and_journald_form() {
    let server = NatsServer::start();
    let _publisher = Publisher::new(&server);
    let mut proc = Proc::spawn(&[
        "--log-format",
        "json",
        "run",
        "--nats-url",
        &server.url,
        "--dispatch",
        "log",
    ]);
    let line = proc.stderr_line("consuming", Duration::from_secs(10));
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(v["level"], "INFO", "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
    assert!(v["message"].as_str().unwrap().contains("consuming"), "{v}");
    assert_eq!(proc.terminate(), 0);

    // After the subcommand too (a global option); journald: the priority
    // first, no time.
    let mut proc = Proc::spawn(&[
        "run",
        "--log-format",
        "journald",
        "--nats-url",
        &server.url,
        "--dispatch",
        "log",
    ]);
    let line = proc.stderr_line("consuming", Duration::from_secs(10));
    assert!(line.starts_with("<6>"), "{line}");
    assert!(
        line["<6>".len()..].trim_start().starts_with("INFO"),
        "{line}"
    );
    assert_eq!(proc.terminate(), 0);
}
