//! The daemon's events on a real nats-server (Debian's), as root in a
//! testbed: subjects, headers, and an outage in the middle of a run. And
//! the delivery alone (no testbed): a server crashing while a window of
//! publishes is in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use palisade_outputs::schema::{Envelope, EventData, PayloadFormat, decode};
use palisade_outputs::testing::NatsServer;
use palisade_sim::testbed::{KillOnDrop, Testbed, TestbedConfig, bounded, stderr};

mod common;
use common::LoopbackBridge;

const BIN: &str = env!("CARGO_BIN_EXE_palisade");
const TARGET: &str = "198.18.0.2";

struct NatsCase {
    _bridge: LoopbackBridge,
    tb: Testbed,
    dir: PathBuf,
    config: PathBuf,
}

impl NatsCase {
    fn new(name: &str, nats: &NatsServer, monitor: &str) -> NatsCase {
        let mut tb = Testbed::new(TestbedConfig {
            targets_v4: vec![TARGET.parse::<Ipv4Addr>().unwrap()],
            targets_v6: vec![],
            tx_queues: 1,
        })
        .unwrap_or_else(|e| panic!("cannot build the testbed (needs root): {e}"));
        let ip: IpAddr = TARGET.parse().unwrap();
        tb.listen(&[(ip, 22), (ip, 80), (ip, 443)])
            .expect("listeners");
        // The daemon runs in the scanner namespace; NATS on the host's loopback.
        let bridge = LoopbackBridge::new(tb.scanner_ns(), nats.port);
        let dir = std::env::temp_dir().join(format!("palisade-nats-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("palisade.toml");
        std::fs::write(
            &config,
            format!(
                "[scan]\nrate = 300000\nwait = \"300ms\"\n\n[store]\npath = \"{}\"\n\n\
                 [[sink]]\nkind = \"nats\"\nurl = \"{}\"\nsubject_prefix = \"palisade\"\n\n\
                 [[monitor]]\nname = \"web-1\"\nhost = \"{TARGET}\"\nexpected_open = [22, 80, 443]\n{monitor}\n",
                dir.join("palisade.db").display(),
                nats.url
            ),
        )
        .unwrap();
        NatsCase {
            _bridge: bridge,
            tb,
            dir,
            config,
        }
    }

    fn palisade(&self, args: &[&str]) -> Command {
        let mut cmd = self.tb.in_scanner(BIN);
        cmd.args(args).args(["-c", self.config.to_str().unwrap()]);
        cmd
    }

    /// `palisade run` in the background (killed if the test fails half-way).
    fn daemon(&self) -> KillOnDrop {
        let mut cmd = self.palisade(&["run"]);
        KillOnDrop(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// The event ids the store's outbox holds (every event it ever created).
    fn outbox_ids(&self) -> BTreeSet<String> {
        let o = Command::new("sqlite3")
            .arg(self.dir.join("palisade.db"))
            .arg("SELECT event_id FROM outbox")
            .output();
        match o {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(String::from)
                .collect(),
            _ => {
                // No sqlite3 CLI: read it through rusqlite.
                let conn = rusqlite::Connection::open(self.dir.join("palisade.db")).unwrap();
                let mut stmt = conn.prepare("SELECT event_id FROM outbox").unwrap();
                stmt.query_map([], |r| r.get::<_, String>(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
        }
    }
}

impl Drop for NatsCase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every message of the stream: (subject, Nats-Msg-Id, content type, envelope).
fn stream_messages(url: &str) -> Vec<(String, String, String, Envelope)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        // Before the daemon's first delivery there is no stream yet.
        let Ok(stream) = js.get_stream("PALISADE").await else {
            return Vec::new();
        };
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut out = Vec::new();
        let mut batch = consumer
            .fetch()
            .max_messages(10_000)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("fetch");
        while let Some(Ok(m)) = batch.next().await {
            let headers = m.headers.clone().unwrap_or_default();
            let id = headers
                .get("Nats-Msg-Id")
                .map(|v| v.to_string())
                .unwrap_or_default();
            let ct = headers
                .get("Content-Type")
                .map(|v| v.to_string())
                .unwrap_or_default();
            let format = PayloadFormat::from_content_type(&ct).expect("a known content type");
            let env = decode(&m.payload, format).expect("an envelope");
            out.push((m.subject.to_string(), id, ct, env));
        }
        out
    })
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn sweep_events_arrive_on_the_right_subjects() {
    let nats = NatsServer::start();
    let mut case = NatsCase::new(
        "subjects",
        &nats,
        "every = \"1h\"\nconfirm = 1\nrecheck = \"off\"",
    );
    let ip: IpAddr = TARGET.parse().unwrap();
    case.tb.listen(&[(ip, 6379)]).unwrap();
    let o = bounded(case.palisade(&["run", "--once"]), Duration::from_secs(120));
    assert!(o.status.success(), "{}", stderr(&o));
    let msgs = stream_messages(&nats.url);
    let by_kind: BTreeMap<&str, &(String, String, String, Envelope)> =
        msgs.iter().map(|m| (m.3.kind(), m)).collect();
    let (subject, id, ct, env) = by_kind
        .get("unexpected_port_open")
        .copied()
        .expect("the event");
    assert_eq!(subject, "palisade.events.unexpected_port_open.web-1");
    assert_eq!(id, &env.id);
    // JSON by default, as the CloudEvents NATS binding wants for structured mode.
    assert_eq!(ct, "application/cloudevents+json; charset=utf-8");
    assert_eq!(env.ty, "io.palisade.unexpected_port_open.v2");
    assert_eq!(env.subject, "web-1/198.18.0.2:6379");
    let (subject, _, _, env) = by_kind.get("scan").copied().expect("the scan summary");
    assert_eq!(subject, "palisade.scans.web-1");
    // With the sweep's loss estimate (the kernel answered every port; one
    // retry configured, adaptive retries on by default).
    let EventData::Scan(scan) = &env.data else {
        panic!("{env:?}")
    };
    let loss = scan.estimated_loss.expect("a loss estimate");
    assert!((0.0..0.05).contains(&loss), "{scan:?}");
    assert!(scan.retry_rounds >= Some(1), "{scan:?}");
    assert!(scan.expected_misses.is_some(), "{scan:?}");
    assert_eq!(msgs.len(), 2, "{msgs:?}");
}

#[test]
fn a_nats_outage_delays_events_and_loses_none() {
    let mut nats = NatsServer::start();
    let mut case = NatsCase::new(
        "outage",
        &nats,
        "every = \"1s\"\nconfirm = 1\nrecheck = \"off\"",
    );
    let ip: IpAddr = TARGET.parse().unwrap();
    let mut daemon = case.daemon();
    wait_for("two scan summaries", Duration::from_secs(60), || {
        stream_messages(&nats.url).len() >= 2
    });

    // NATS goes away; meanwhile Redis opens and sweeps go on.
    nats.stop();
    let redis = case.tb.listen(&[(ip, 6379)]).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon died during the outage"
    );
    nats.restart();
    wait_for(
        "the incident after the outage",
        Duration::from_secs(60),
        || {
            stream_messages(&nats.url)
                .iter()
                .any(|m| m.3.kind() == "unexpected_port_open")
        },
    );
    case.tb.stop_listener(redis).unwrap();
    wait_for("the resolution", Duration::from_secs(60), || {
        stream_messages(&nats.url)
            .iter()
            .any(|m| m.3.kind() == "monitor_resolved")
    });
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit {status:?}");

    // Every event the store made is on NATS, once, or still waits in the
    // outbox for the sink (SIGTERM does not wait for the last scan summary).
    let msgs = stream_messages(&nats.url);
    let ids: Vec<&str> = msgs.iter().map(|m| m.1.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates on the stream");
    let made = case.outbox_ids();
    let got: BTreeSet<String> = unique.iter().map(|s| s.to_string()).collect();
    let store = palisade::store::Store::open(&case.dir.join("palisade.db")).unwrap();
    let waiting: BTreeSet<String> = store
        .pending("nats:PALISADE", 10_000)
        .unwrap()
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    let accounted: BTreeSet<String> = got.union(&waiting).cloned().collect();
    assert_eq!(
        made,
        accounted,
        "missing: {:?}",
        made.difference(&accounted).collect::<Vec<_>>()
    );
    assert!(
        waiting.iter().all(|id| id.contains(":scan:")),
        "only a last scan summary may wait: {waiting:?}"
    );
    let kinds: Vec<&str> = msgs
        .iter()
        .map(|m| m.3.kind())
        .filter(|k| *k != "scan")
        .collect();
    assert_eq!(
        kinds,
        vec!["unexpected_port_open", "port_resolved", "monitor_resolved"]
    );
}

/// The `Nats-Msg-Id` of every message of `stream`, in stream order.
fn stream_ids(url: &str, stream: &str, expect: usize) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(stream).await.expect("the stream");
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut ids = Vec::new();
        let mut messages = consumer.messages().await.expect("messages");
        let deadline = Instant::now() + Duration::from_secs(60);
        // Past `expect`, whatever else comes within a second (a duplicate).
        while Instant::now() < deadline {
            let wait = if ids.len() < expect { 5 } else { 1 };
            match tokio::time::timeout(Duration::from_secs(wait), messages.next()).await {
                Ok(Some(Ok(m))) => ids.push(
                    m.headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                ),
                Ok(Some(Err(e))) => panic!("consumer: {e}"),
                Ok(None) | Err(_) => break,
            }
        }
        ids
    })
}

/// The delivery keeps a window of publishes in flight; the server is
/// killed while it does, then started again. Every event ends up in the
/// stream exactly once: none lost (a row is marked delivered only after its
/// own acknowledgement), none twice (what is sent again after the first
/// unacknowledged row is de-duplicated by `Nats-Msg-Id`).
#[test]
fn a_crash_mid_window_loses_nothing_and_duplicates_nothing() {
    use palisade::config::{SinkSpec, SinkStart, SinkTarget};
    use palisade::daemon::delivery::OutboxDelivery;
    use palisade::store::{OutboxEntry, Store};
    use palisade_outputs::nats::NatsOptions;
    use palisade_outputs::schema::MonitorEvent;
    use palisade_outputs::sink::NatsSinkOptions;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let mut nats = NatsServer::start();
    let dir = std::env::temp_dir().join(format!("palisade-nats-window-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("palisade.db");
    let mut store = Store::open(&db).unwrap();
    let total = 30_000;
    let ids: Vec<String> = (0..total).map(|i| format!("w-{i}:resolved")).collect();
    for chunk in ids.chunks(1000) {
        let entries: Vec<OutboxEntry> = chunk
            .iter()
            .map(|id| {
                let e = Envelope::new(
                    id.clone(),
                    "palisade://test".into(),
                    "2026-01-02T03:04:05.000Z".into(),
                    EventData::MonitorResolved(MonitorEvent {
                        monitor: "web-1".into(),
                        host: "web1.example.net".into(),
                        message: "everything back to expected".into(),
                    }),
                );
                OutboxEntry {
                    id: e.id.clone(),
                    kind: e.kind().to_string(),
                    payload: serde_json::to_string(&e).unwrap(),
                }
            })
            .collect();
        store.enqueue("web-1", &entries, 1).unwrap();
    }
    let spec = SinkSpec::unnamed(
        SinkTarget::Nats(NatsSinkOptions {
            nats: NatsOptions {
                urls: vec![nats.url.clone()],
                connect_timeout: Duration::from_secs(2),
                ..NatsOptions::default()
            },
            ..NatsSinkOptions::default()
        }),
        SinkStart::All,
    );
    let name = spec.name.clone();
    let metrics = Arc::new(palisade::metrics::Metrics::new());
    let mut delivery = OutboxDelivery::start(&mut store, &db, vec![spec], metrics).unwrap();

    // Under way: some delivered, most not.
    let pending = |store: &Store| usize::try_from(store.pending_count(&name).unwrap()).unwrap();
    let started = Instant::now();
    while pending(&store) > total - 2000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for the first deliveries"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    nats.kill();
    let left = pending(&store);
    assert!(left > 0, "all delivered before the crash");
    // The sink notices (its problem is recorded), and nothing more is
    // marked delivered while the server is down.
    wait_for("the failure to be noticed", Duration::from_secs(30), || {
        store.sink_health(&name).unwrap().is_some()
    });
    let during = pending(&store);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pending(&store), during, "marked delivered while down");
    nats.restart();
    let stop = AtomicBool::new(false);
    assert!(
        delivery
            .drain_for(&store, Duration::from_secs(120), &stop)
            .unwrap(),
        "not delivered after the restart"
    );
    delivery.shutdown(Duration::from_secs(2));

    let got = stream_ids(&nats.url, "PALISADE", total);
    let unique: BTreeSet<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "duplicates in the stream ({} messages, {} ids)",
        got.len(),
        unique.len()
    );
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        unique,
        want,
        "missing: {:?}",
        want.difference(&unique).take(5).collect::<Vec<_>>()
    );
    eprintln!("{left} of {total} events were not delivered when the server was killed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finds Debian's Alertmanager.
fn alertmanager_binary() -> PathBuf {
    ["/usr/bin/prometheus-alertmanager", "/usr/local/bin/alertmanager"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("Alertmanager not found: install Debian's `prometheus-alertmanager` (`cargo xtask setup` does)")
        })
}

/// `GET path` on 127.0.0.1:port, the body as JSON.
fn http_get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then_some(())?;
    serde_json::from_str(body).ok()
}

#[test]
fn an_unexpected_open_port_fires_in_alertmanager_and_resolves() {
    // Alertmanager on the host's loopback, clustering off.
    let dir = std::env::temp_dir().join(format!("palisade-am-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("am.yml"),
        "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _am = KillOnDrop(
        Command::new(alertmanager_binary())
            .arg(format!("--config.file={}", dir.join("am.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    wait_for("alertmanager ready", Duration::from_secs(30), || {
        http_get_json(port, "/api/v2/status").is_some()
    });

    let nats = NatsServer::start();
    let mut case = NatsCase::new(
        "alert",
        &nats,
        "every = \"1s\"\nconfirm = 1\nrecheck = \"off\"",
    );
    let ip: IpAddr = TARGET.parse().unwrap();

    // The alert consumer (the library palisade-alert runs), in this process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let url = nats.url.clone();
    let consumer = rt.spawn(async move {
        use palisade_outputs::alert::{AlertConsumer, ConsumerConfig, DispatchSpec, HttpOptions};
        let client = async_nats::connect(url).await.expect("connect");
        let spec: DispatchSpec = format!("alertmanager=http://127.0.0.1:{port}")
            .parse()
            .expect("spec");
        let dispatcher = spec.build(&HttpOptions::default()).expect("dispatcher");
        let mut consumer = AlertConsumer::new(client, ConsumerConfig::default(), vec![dispatcher]);
        consumer
            .run(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let mut daemon = case.daemon();
    let firing = |want: bool| {
        http_get_json(port, "/api/v2/alerts").is_some_and(|alerts| {
            let hit = alerts.as_array().into_iter().flatten().any(|a| {
                a["labels"]["alertname"] == "PalisadeUnexpectedPortOpen"
                    && a["labels"]["port"] == "6379"
                    && a["labels"]["monitor"] == "web-1"
                    && a["labels"]["instance"] == format!("{TARGET}:6379")
                    && a["labels"]["severity"] == "high"
                    && a["status"]["state"] == "active"
            });
            hit == want
        })
    };
    let redis = case.tb.listen(&[(ip, 6379)]).unwrap();
    wait_for(
        "a firing alert in Alertmanager",
        Duration::from_secs(60),
        || firing(true),
    );
    case.tb.stop_listener(redis).unwrap();
    wait_for("the alert to resolve", Duration::from_secs(60), || {
        firing(false)
    });

    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    daemon.wait().unwrap();
    let _ = stop_tx.send(());
    let result = rt.block_on(consumer).expect("consumer task");
    assert!(result.is_ok(), "consumer: {result:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
