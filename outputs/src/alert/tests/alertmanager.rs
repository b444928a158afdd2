//! The Alertmanager dispatcher against a real Alertmanager (Debian's
//! `prometheus-alertmanager`, 0.25 here).
//!
//! Alertmanager 0.25 leaves resolved alerts out of `GET /api/v2/alerts`
//! altogether (whatever the `active`/`silenced`/`inhibited` filters), so
//! "resolved" is checked as "no longer listed".

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;

use super::nats::{Running, client, create_stream, publish, test_config, wait_acked};
use super::*;
use crate::testing::NatsServer;

/// Finds the Alertmanager binary: `$PALISADE_ALERTMANAGER`, then
/// `prometheus-alertmanager` / `alertmanager` on `PATH` and in `/usr/bin`.
fn alertmanager_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_ALERTMANAGER").map(PathBuf::from)
        && p.is_file()
    {
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .flat_map(|d| [d.join("prometheus-alertmanager"), d.join("alertmanager")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Alertmanager not found (looked for prometheus-alertmanager and alertmanager in \
                 $PALISADE_ALERTMANAGER, PATH, /usr/bin): install Debian's package \
                 `prometheus-alertmanager` (`cargo xtask setup` does)"
            )
        })
}

/// A throwaway Alertmanager on a free 127.0.0.1 port, clustering off,
/// killed on drop.
struct Alertmanager {
    url: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Alertmanager {
    async fn start() -> Alertmanager {
        let binary = alertmanager_binary();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let mut am = Alertmanager {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            http: reqwest::Client::new(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!("alertmanager exited with {status}: {}", am.log());
            }
            let ready = am
                .http
                .get(format!("{}/-/ready", am.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return am;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "alertmanager not ready within 20s: {}",
                am.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    /// `GET /api/v2/alerts<query>`.
    async fn alerts(&self, query: &str) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/api/v2/alerts{query}", self.url))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = response.bytes().await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The listed alerts with this `alertname` and `port`.
    async fn find(&self, alertname: &str, port: u16) -> Vec<Value> {
        self.alerts("")
            .await
            .into_iter()
            .filter(|a| {
                a["labels"]["alertname"] == alertname
                    && a["labels"]["port"].as_str() == Some(port.to_string().as_str())
            })
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn labels(a: &Value) -> Vec<(String, String)> {
    a["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

fn incident_of(e: &Envelope) -> &PortEvent {
    match &e.data {
        EventData::UnexpectedPortOpen(p) | EventData::ExpectedPortDown(p) => p,
        _ => panic!("not an incident"),
    }
}

#[tokio::test]
async fn incidents_fire_and_resolve_in_alertmanager_through_nats() {
    let am = Alertmanager::start().await;
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let buf = SharedBuf::default();
    let dispatchers: Vec<Box<dyn Dispatcher>> = vec![
        Box::new(AlertmanagerDispatcher::new(&am.url, &HttpOptions::default()).unwrap()),
        Box::new(LogDispatcher::to_writer(Box::new(buf.clone()))),
    ];
    let running = Running::start(client.clone(), test_config(), dispatchers);

    let open = opened("web-1", 6379);
    let stays = down("web-1", 22);
    publish(&js, &open, PayloadFormat::MsgPack).await;
    publish(&js, &stays, PayloadFormat::Json).await;

    eventually("the firing alerts", Duration::from_secs(20), || async {
        am.find("PalisadeUnexpectedPortOpen", 6379).await.len() == 1
            && am.find("PalisadeExpectedPortDown", 22).await.len() == 1
    })
    .await;
    let alert = am.find("PalisadeUnexpectedPortOpen", 6379).await.remove(0);
    let p = incident_of(&open);
    assert_eq!(
        labels(&alert),
        [
            ("alertname", "PalisadeUnexpectedPortOpen"),
            ("host", "198.18.0.2"),
            ("kind", "unexpected_port_open"),
            ("monitor", "web-1"),
            ("port", "6379"),
            ("severity", "high"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(alert["annotations"]["incident_id"], p.incident_id.as_str());
    assert_eq!(
        alert["annotations"]["summary"],
        "Unexpected open port 6379/tcp on web-1 (198.18.0.2)"
    );
    assert_eq!(alert["startsAt"], p.first_seen.as_str());
    // Far in the future: Alertmanager must not time it out by itself.
    let ends = humantime::parse_rfc3339_weak(alert["endsAt"].as_str().unwrap()).unwrap();
    assert!(ends > SystemTime::now() + Duration::from_secs(365 * 24 * 3600));
    let down_alert = am.find("PalisadeExpectedPortDown", 22).await.remove(0);
    assert_eq!(down_alert["labels"]["severity"], "normal");
    assert_eq!(down_alert["labels"]["kind"], "expected_port_down");

    // Resolve one incident; scan summaries and monitor_resolved are no-ops.
    let r = resolved(&open, &ago(1));
    publish(&js, &r, PayloadFormat::MsgPack).await;
    let seq = publish(
        &js,
        &monitor_resolved("web-1", &ago(0)),
        PayloadFormat::Json,
    )
    .await;
    wait_acked(&js, "palisade-alert", seq).await;
    eventually(
        "the resolved alert to leave the list",
        Duration::from_secs(20),
        || async { am.find("PalisadeUnexpectedPortOpen", 6379).await.is_empty() },
    )
    .await;
    let active = am.alerts("?active=true").await;
    assert!(
        !active
            .iter()
            .any(|a| a["labels"]["alertname"] == "PalisadeUnexpectedPortOpen"),
        "{active:?}"
    );
    let left = am.find("PalisadeExpectedPortDown", 22).await;
    assert_eq!(left.len(), 1, "the other incident is still firing");
    assert_eq!(left[0]["status"]["state"], "active");
    assert_eq!(am.alerts("").await.len(), 1);

    let stats = running.stop().await;
    assert_eq!(stats.acked, 4);
    assert_eq!(stats.retried, 0);
    assert_eq!(buf.lines().len(), 4);
}

#[tokio::test]
async fn a_late_redelivered_incident_does_not_reopen_a_resolved_alert() {
    let am = Alertmanager::start().await;
    let dispatcher = AlertmanagerDispatcher::new(&am.url, &HttpOptions::default()).unwrap();
    let open = opened("db-1", 5432);

    // Redelivery of the same incident: still one alert.
    assert_eq!(
        dispatcher.dispatch(&open).await.unwrap(),
        Dispatched::Delivered
    );
    assert_eq!(
        dispatcher.dispatch(&open).await.unwrap(),
        Dispatched::Delivered
    );
    assert_eq!(am.find("PalisadeUnexpectedPortOpen", 5432).await.len(), 1);

    // Resolved, then the incident arrives again (a retry that lost the race).
    let r = resolved(&open, &ago(1));
    dispatcher.dispatch(&r).await.unwrap();
    dispatcher.dispatch(&open).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(am.find("PalisadeUnexpectedPortOpen", 5432).await.is_empty());

    // Non-alerts are skipped without a request.
    assert_eq!(
        dispatcher
            .dispatch(&monitor_resolved("db-1", &ago(0)))
            .await
            .unwrap(),
        Dispatched::Skipped
    );
    assert_eq!(
        dispatcher.dispatch(&scan("db-1", &ago(0))).await.unwrap(),
        Dispatched::Skipped
    );
}

#[tokio::test]
async fn alertmanager_rejections_are_dispatch_errors() {
    let am = Alertmanager::start().await;
    let dispatcher = AlertmanagerDispatcher::new(&am.url, &HttpOptions::default()).unwrap();
    let mut bad = opened("web-1", 8080);
    if let EventData::UnexpectedPortOpen(p) = &mut bad.data {
        p.first_seen = "not a time".into();
    }
    let err = dispatcher.dispatch(&bad).await.unwrap_err();
    assert!(
        matches!(
            &err,
            DispatchError::Status {
                status: 400 | 422,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("/api/v2/alerts answered"), "{err}");
    drop(am);
    let err = dispatcher
        .dispatch(&opened("web-1", 8080))
        .await
        .unwrap_err();
    assert!(matches!(err, DispatchError::Http { .. }), "{err}");
}
