//! The Alertmanager dispatcher against a real Alertmanager (Debian's
//! `prometheus-alertmanager`, 0.25 here).
//!
//! Alertmanager 0.25 leaves resolved alerts out of `GET /api/v2/alerts`
//! altogether (whatever the `active`/`silenced`/`inhibited` filters), so
//! "resolved" is checked as "no longer listed".

use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;

use super::nats::{
    Running, client, consumer_info, create_stream, publish, publish_raw, test_config, wait_acked,
};
use super::*;
use crate::testing::{Alertmanager, NatsServer};

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
            ("instance", "198.18.0.2:6379"),
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
        "Unexpected port open 6379/tcp on web-1 (198.18.0.2)"
    );
    assert_eq!(alert["startsAt"], p.first_seen.as_str());
    // A few resends ahead (4 × 1 minute), not years: a dead palisade-alert
    // lets it expire.
    let ends = humantime::parse_rfc3339_weak(alert["endsAt"].as_str().unwrap()).unwrap();
    assert!(
        ends > SystemTime::now() + Duration::from_secs(3 * 60),
        "{ends:?}"
    );
    assert!(
        ends <= SystemTime::now() + Duration::from_secs(4 * 60 + 1),
        "{ends:?}"
    );
    let down_alert = am.find("PalisadeExpectedPortDown", 22).await.remove(0);
    assert_eq!(down_alert["labels"]["severity"], "normal");
    assert_eq!(down_alert["labels"]["instance"], "198.18.0.2:22");

    // Resolve one incident; scan summaries and monitor_resolved are no-ops.
    let r = resolved(&open, &ago(1));
    publish(&js, &r, PayloadFormat::MsgPack).await;
    // (`monitor_resolved` ends every alert of its monitor; web-9 has none.)
    let seq = publish(
        &js,
        &monitor_resolved("web-9", &ago(0)),
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

/// Options with a short resend, for tests.
fn resend_every(resend: Duration) -> HttpOptions {
    HttpOptions {
        resend,
        ..HttpOptions::default()
    }
}

#[tokio::test]
async fn an_alertmanager_restart_gets_the_open_alerts_back_within_one_resend() {
    let mut am = Alertmanager::start().await;
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let resend = Duration::from_secs(2);
    let dispatcher = AlertmanagerDispatcher::new(&am.url, &resend_every(resend)).unwrap();
    let running = Running::start(client.clone(), test_config(), vec![Box::new(dispatcher)]);

    let open = opened("web-1", 6379);
    let closed = opened("web-1", 8080);
    publish(&js, &open, PayloadFormat::Json).await;
    publish(&js, &closed, PayloadFormat::Json).await;
    let seq = publish(&js, &resolved(&closed, &ago(0)), PayloadFormat::Json).await;
    wait_acked(&js, "palisade-alert", seq).await;
    eventually("the firing alert", Duration::from_secs(10), || async {
        am.find("PalisadeUnexpectedPortOpen", 6379).await.len() == 1
    })
    .await;

    // Alertmanager keeps alerts in memory only: killed, it forgets them.
    am.kill_and_restart().await;
    let back_from = Instant::now();
    assert!(am.find("PalisadeUnexpectedPortOpen", 6379).await.is_empty());
    // Back at the next resend (the margin is for a slow machine).
    eventually(
        "the alert back after the restart",
        resend + Duration::from_secs(2),
        || async { am.find("PalisadeUnexpectedPortOpen", 6379).await.len() == 1 },
    )
    .await;
    assert!(back_from.elapsed() <= resend + Duration::from_secs(2));
    // The resolved incident is not re-posted.
    tokio::time::sleep(resend).await;
    assert!(am.find("PalisadeUnexpectedPortOpen", 8080).await.is_empty());
    let alert = am.find("PalisadeUnexpectedPortOpen", 6379).await.remove(0);
    let ends = humantime::parse_rfc3339_weak(alert["endsAt"].as_str().unwrap()).unwrap();
    assert!(ends <= SystemTime::now() + resend * RESENDS_AHEAD + Duration::from_secs(1));
    let stats = running.stop().await;
    assert!(stats.refreshed >= 2, "{stats:?}");
}

#[tokio::test]
async fn a_resolution_pending_while_palisade_alert_is_dead_still_ends_the_alert() {
    let am = Alertmanager::start().await;
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let resend = Duration::from_secs(1);
    let http = resend_every(resend);
    let config = ConsumerConfig {
        max_deliver: 2,
        resolution_budget: http.alert_horizon(),
        ..test_config()
    };
    let dispatcher = AlertmanagerDispatcher::new(&am.url, &http).unwrap();
    let running = Running::start(client.clone(), config.clone(), vec![Box::new(dispatcher)]);
    let open = opened("db-1", 5432);
    let seq = publish(&js, &open, PayloadFormat::MsgPack).await;
    wait_acked(&js, "palisade-alert", seq).await;
    eventually("the firing alert", Duration::from_secs(10), || async {
        am.find("PalisadeUnexpectedPortOpen", 5432).await.len() == 1
    })
    .await;

    // palisade-alert dies (nothing is acked or re-posted any more); the
    // incident resolves meanwhile.
    running.kill();
    // Its pull request goes with it (the server drops a pull request whose
    // reply subject lost interest, as when SIGKILL closes the socket);
    // until then the server could hand it the resolution below, which would
    // wait out its ack wait.
    eventually(
        "the killed consumer's pull request to go",
        Duration::from_secs(10),
        || async { consumer_info(&js, "palisade-alert").await.num_waiting == 0 },
    )
    .await;
    let r = resolved(&open, &ago(0));
    let seq = publish(&js, &r, PayloadFormat::MsgPack).await;
    // Dead for longer than the delivery budget (the endsAt horizon): the
    // alert has expired by itself in Alertmanager.
    tokio::time::sleep(http.alert_horizon() + Duration::from_secs(1)).await;
    eventually(
        "the alert to expire by itself",
        Duration::from_secs(5),
        || async { am.find("PalisadeUnexpectedPortOpen", 5432).await.is_empty() },
    )
    .await;

    // Restarted: the replay knows the incident ended, so it is not
    // re-posted firing; the pending resolution is delivered, not dropped.
    let dispatcher = AlertmanagerDispatcher::new(&am.url, &http).unwrap();
    let running = Running::start(client.clone(), config, vec![Box::new(dispatcher)]);
    wait_acked(&js, "palisade-alert", seq).await;
    tokio::time::sleep(resend * 2).await;
    assert!(am.find("PalisadeUnexpectedPortOpen", 5432).await.is_empty());
    let stats = running.stop().await;
    assert_eq!(stats.replayed, 2);
    assert_eq!((stats.acked, stats.dead_lettered), (1, 0), "{stats:?}");
}

#[tokio::test]
async fn a_restarted_palisade_alert_rebuilds_its_open_alerts_from_the_stream() {
    let am = Alertmanager::start().await;
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    // Incidents published and consumed (by a run without Alertmanager)
    // before this palisade-alert ever ran: one still open, one resolved.
    let open = down("mail-1", 25);
    let gone = opened("mail-1", 23);
    publish(&js, &open, PayloadFormat::Json).await;
    publish(&js, &gone, PayloadFormat::Json).await;
    let seq = publish(&js, &resolved(&gone, &ago(0)), PayloadFormat::Json).await;
    let earlier = Running::start(
        client.clone(),
        test_config(),
        vec![Box::new(LogDispatcher::to_writer(Box::new(
            SharedBuf::default(),
        )))],
    );
    wait_acked(&js, "palisade-alert", seq).await;
    earlier.stop().await;
    // Nothing is pending for the durable consumer: the open alert can only
    // come from the replay.
    let dispatcher =
        AlertmanagerDispatcher::new(&am.url, &resend_every(Duration::from_secs(30))).unwrap();
    let config = test_config();
    let running = Running::start(client.clone(), config, vec![Box::new(dispatcher)]);
    eventually("the rebuilt alert", Duration::from_secs(10), || async {
        am.find("PalisadeExpectedPortDown", 25).await.len() == 1
    })
    .await;
    assert!(am.find("PalisadeUnexpectedPortOpen", 23).await.is_empty());
    let stats = running.stop().await;
    assert_eq!((stats.replayed, stats.acked), (3, 0));
}

#[tokio::test]
async fn no_event_is_dropped_silently() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    // Every third request fails: some events get through on a retry, some
    // run out of budget.
    let script: Vec<u16> = (0..200)
        .map(|i| if i % 3 == 0 { 500 } else { 200 })
        .collect();
    let target = HttpTarget::start(script).await;
    let config = ConsumerConfig {
        max_deliver: 2,
        resolution_budget: Duration::ZERO,
        ..test_config()
    };
    let hook = WebhookDispatcher::new(&target.url, &HttpOptions::default()).unwrap();
    let running = Running::start(client.clone(), config, vec![Box::new(hook)]);
    let mut ids = std::collections::BTreeSet::new();
    let mut last = 0;
    for i in 0..30u16 {
        let incident = if i % 2 == 0 {
            opened("web-1", i)
        } else {
            down("web-2", i)
        };
        let e = if i % 3 == 2 {
            resolved(&incident, &ago(0))
        } else {
            incident
        };
        ids.insert(e.id.clone());
        last = publish(&js, &e, PayloadFormat::MsgPack).await;
    }
    let junk = publish_raw(&js, "palisade.events.x.y", "junk", None, b"junk".to_vec()).await;
    wait_acked(&js, "palisade-alert", junk.max(last)).await;
    let stats = running.stop().await;

    // Every event in is out (a 2xx) or dead-lettered, and not both.
    let delivered: std::collections::BTreeSet<String> = target
        .requests()
        .iter()
        .zip(0..)
        .filter(|(_, n)| n % 3 != 0)
        .map(|(r, _)| r.header("webhook-id").unwrap().to_string())
        .collect();
    let letters = super::nats::dead_letters(&js).await;
    let dead: std::collections::BTreeSet<String> = letters
        .iter()
        .filter(|l| l.subject == "palisade.dlq.webhook")
        .map(|l| {
            decode_message(Some("application/msgpack"), &l.payload)
                .unwrap()
                .id
        })
        .collect();
    assert!(delivered.is_disjoint(&dead));
    let all: std::collections::BTreeSet<String> = delivered.union(&dead).cloned().collect();
    assert_eq!(all, ids);
    assert_eq!(stats.acked as usize, delivered.len());
    assert_eq!(stats.dead_lettered as usize, dead.len());
    assert!(!dead.is_empty() && !delivered.is_empty());
    assert_eq!(stats.undecodable, 1);
    assert_eq!(letters.len(), dead.len() + 1);
}
