//! The consumer against a real `nats-server` (JetStream, file store).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::Info, stream::StorageType};
use futures::StreamExt as _;
use tokio::sync::oneshot;

use super::*;
use crate::nats::{NatsOptions, connect};
use crate::testing::NatsServer;

pub(super) const STREAM: &str = "PALISADE";
pub(super) const CONSUMER: &str = "palisade-alert";

/// A client through the crate's one `connect`, as `palisade-alert` makes it.
pub(super) async fn client(server: &NatsServer) -> async_nats::Client {
    connect(&NatsOptions {
        urls: vec![server.url.clone()],
        name: "palisade-alert-test".to_string(),
        ..NatsOptions::default()
    })
    .await
    .expect("connect to the test nats-server")
}

/// Creates the stream the engine's sink would: `PALISADE`, `palisade.>`,
/// file storage.
pub(super) async fn create_stream(js: &jetstream::Context) {
    js.create_stream(jetstream::stream::Config {
        name: STREAM.to_string(),
        subjects: vec!["palisade.>".to_string()],
        storage: StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
}

/// Publishes like the sink: subject from the envelope, `Nats-Msg-Id` and
/// `Content-Type` headers; waits for the JetStream ack. Returns the stream
/// sequence.
pub(super) async fn publish(js: &jetstream::Context, e: &Envelope, format: PayloadFormat) -> u64 {
    let payload = schema::encode(e, format).unwrap();
    publish_raw(
        js,
        &e.nats_subject("palisade"),
        &e.id,
        Some(format.content_type()),
        payload,
    )
    .await
}

pub(super) async fn publish_raw(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    content_type: Option<&str>,
    payload: Vec<u8>,
) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    if let Some(ct) = content_type {
        headers.insert("Content-Type", ct);
    }
    js.publish_with_headers(subject.to_string(), headers, payload.into())
        .await
        .expect("publish")
        .await
        .expect("publish ack")
        .sequence
}

pub(super) fn test_config() -> ConsumerConfig {
    ConsumerConfig {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
        },
        heartbeat: Duration::from_secs(1),
        ..ConsumerConfig::default()
    }
}

/// A consumer running in a task until [`stop`](Running::stop).
pub(super) struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<(AlertConsumer, Result<(), ConsumerError>)>,
}

impl Running {
    pub(super) fn start(
        client: async_nats::Client,
        config: ConsumerConfig,
        dispatchers: Vec<Box<dyn Dispatcher>>,
    ) -> Running {
        let (tx, rx) = oneshot::channel::<()>();
        let mut consumer = AlertConsumer::new(client, config, dispatchers);
        let task = tokio::spawn(async move {
            let result = consumer
                .run(async {
                    let _ = rx.await;
                })
                .await;
            (consumer, result)
        });
        Running {
            stop: Some(tx),
            task,
        }
    }

    /// Ends the consumer at once, like SIGKILL: nothing more is acked,
    /// NAK'd or refreshed.
    pub(super) fn kill(self) {
        self.task.abort();
    }

    pub(super) fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the consumer (within a few seconds) and returns its stats.
    pub(super) async fn stop(mut self) -> ConsumerStats {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let (consumer, result) = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("consumer stops within 10s")
            .expect("consumer task");
        result.expect("consumer ran without error");
        consumer.stats()
    }
}

pub(super) async fn consumer_info(js: &jetstream::Context, name: &str) -> Info {
    try_consumer_info(js, name)
        .await
        .unwrap_or_else(|| panic!("consumer {name:?} not found"))
}

/// The consumer's info, `None` while it does not exist (yet).
pub(super) async fn try_consumer_info(js: &jetstream::Context, name: &str) -> Option<Info> {
    js.get_stream(STREAM)
        .await
        .ok()?
        .consumer_info(name)
        .await
        .ok()
}

/// Waits until the consumer exists and acked everything up to stream
/// sequence `seq` (the consumer under test creates it when it starts, which
/// may be after this is called).
pub(super) async fn wait_acked(js: &jetstream::Context, name: &str, seq: u64) {
    eventually(
        &format!("consumer {name:?} with ack floor {seq}"),
        Duration::from_secs(20),
        || async {
            try_consumer_info(js, name).await.is_some_and(|info| {
                info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0
            })
        },
    )
    .await;
}

fn log_to(buf: &SharedBuf) -> Box<dyn Dispatcher> {
    Box::new(LogDispatcher::to_writer(Box::new(buf.clone())))
}

#[tokio::test]
async fn log_dispatch_of_both_encodings_and_no_redelivery_after_restart() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;

    let incident = opened("web-1", 6379);
    let events = [
        (incident.clone(), PayloadFormat::MsgPack),
        (down("web-1", 22), PayloadFormat::Json),
        (resolved(&incident, &ago(5)), PayloadFormat::Json),
        (monitor_resolved("web-1", &ago(5)), PayloadFormat::MsgPack),
    ];
    for (e, f) in &events {
        publish(&js, e, *f).await;
    }
    // Not under the default filter `palisade.events.>`.
    let scan_seq = publish(&js, &scan("web-1", &ago(1)), PayloadFormat::MsgPack).await;

    let buf = SharedBuf::default();
    let running = Running::start(client.clone(), test_config(), vec![log_to(&buf)]);
    eventually("4 log lines", Duration::from_secs(20), || async {
        buf.lines().len() >= 4
    })
    .await;
    wait_acked(&js, CONSUMER, 4).await;
    let stats = running.stop().await;
    let want: Vec<String> = events.iter().map(|(e, _)| human_line(e)).collect();
    assert_eq!(buf.lines(), want);
    assert_eq!(
        stats,
        ConsumerStats {
            acked: 4,
            ..ConsumerStats::default()
        }
    );
    let info = consumer_info(&js, CONSUMER).await;
    assert_eq!(info.config.durable_name.as_deref(), Some(CONSUMER));
    assert_eq!(info.config.filter_subject, "palisade.events.>");
    // Unlimited on the server: the budget is ours and ends in a dead letter.
    assert_eq!(info.config.max_deliver, -1);
    assert_eq!(
        info.num_pending, 0,
        "the scan summary is not for this consumer"
    );
    assert!(scan_seq == 5);

    // A second run of the same durable consumer gets only what is new.
    let buf2 = SharedBuf::default();
    let running = Running::start(client.clone(), test_config(), vec![log_to(&buf2)]);
    let later = opened("db-1", 3306);
    let seq = publish(&js, &later, PayloadFormat::MsgPack).await;
    eventually("the new event", Duration::from_secs(20), || async {
        !buf2.lines().is_empty()
    })
    .await;
    wait_acked(&js, CONSUMER, seq).await;
    // Give a stray redelivery time to show up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stats = running.stop().await;
    assert_eq!(buf2.lines(), vec![human_line(&later)]);
    assert_eq!(stats.acked, 1);
}

#[tokio::test]
async fn a_failing_dispatch_is_redelivered_until_it_succeeds() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let target = HttpTarget::start(vec![500, 500, 200]).await;
    let buf = SharedBuf::default();
    let dispatchers: Vec<Box<dyn Dispatcher>> = vec![
        log_to(&buf),
        Box::new(WebhookDispatcher::new(&target.url, &HttpOptions::default()).unwrap()),
    ];
    let running = Running::start(client.clone(), test_config(), dispatchers);

    let e = opened("web-1", 6379);
    let seq = publish(&js, &e, PayloadFormat::MsgPack).await;
    wait_acked(&js, CONSUMER, seq).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stats = running.stop().await;

    let requests = target.requests();
    assert_eq!(
        requests.len(),
        3,
        "two failures, then success, then nothing"
    );
    for r in &requests {
        assert_eq!(r.header("webhook-id"), Some(e.id.as_str()));
        assert_eq!(schema::decode(&r.body, PayloadFormat::Json).unwrap(), e);
    }
    // JetStream honoured the NAK delays: 100 ms, then 200 ms.
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_millis(90) && gaps[1] >= Duration::from_millis(190),
        "{gaps:?}"
    );
    assert!(gaps[1] < Duration::from_secs(5), "{gaps:?}");
    // The log dispatcher succeeded the first time and was not repeated.
    assert_eq!(buf.lines(), vec![human_line(&e)]);
    assert_eq!(
        stats,
        ConsumerStats {
            acked: 1,
            retried: 2,
            ..ConsumerStats::default()
        }
    );
    let info = consumer_info(&js, CONSUMER).await;
    assert_eq!(info.delivered.stream_sequence, seq);
    assert_eq!(info.num_ack_pending, 0);
}

/// One message on a dead-letter subject.
#[derive(Debug)]
pub(super) struct DeadLetter {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub payload: Vec<u8>,
}

impl DeadLetter {
    pub(super) fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.as_str().to_string())
    }
}

/// Every message under `palisade.dlq.>` in the stream.
pub(super) async fn dead_letters(js: &jetstream::Context) -> Vec<DeadLetter> {
    let stream = js.get_stream(STREAM).await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "palisade.dlq.>".to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    if consumer.cached_info().num_pending == 0 {
        return Vec::new();
    }
    let mut messages = consumer.messages().await.unwrap();
    let mut letters = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await
    {
        let last = m.info().unwrap().pending == 0;
        letters.push(DeadLetter {
            subject: m.subject.to_string(),
            headers: m.headers.clone().unwrap_or_default(),
            payload: m.payload.to_vec(),
        });
        if last {
            break;
        }
    }
    letters
}

#[tokio::test]
async fn past_its_budget_an_event_is_dead_lettered_logged_and_counted() {
    // The consumer runs on this (current-thread) runtime, so a scoped
    // subscriber sees its log lines.
    let logs = SharedBuf::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let target = HttpTarget::start(vec![500]).await;
    let config = ConsumerConfig {
        max_deliver: 3,
        ..test_config()
    };
    let hook = WebhookDispatcher::new(&target.url, &HttpOptions::default()).unwrap();
    let buf = SharedBuf::default();
    let running = Running::start(client.clone(), config, vec![log_to(&buf), Box::new(hook)]);

    let mut e = opened("web-1", 6379);
    // Text from the event must not forge log lines.
    if let EventData::UnexpectedPortOpen(p) = &mut e.data {
        p.monitor = "web-1\nERROR forged".into();
    }
    let seq = publish(&js, &e, PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, seq).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stats = running.stop().await;

    assert_eq!(target.requests().len(), 3, "exactly max_deliver attempts");
    assert_eq!(buf.lines().len(), 1, "the log dispatcher took it once");
    assert_eq!(
        stats,
        ConsumerStats {
            retried: 2,
            dead_lettered: 1,
            ..ConsumerStats::default()
        }
    );
    // The dead letter: the message unchanged, on palisade.dlq.webhook, saying why.
    let letters = dead_letters(&js).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!(l.subject, "palisade.dlq.webhook");
    assert_eq!(schema::decode(&l.payload, PayloadFormat::Json).unwrap(), e);
    assert_eq!(
        l.header("Content-Type").as_deref(),
        Some("application/cloudevents+json; charset=utf-8")
    );
    assert_eq!(l.header("Palisade-Dlq-Deliveries").as_deref(), Some("3"));
    assert_eq!(
        l.header("Palisade-Dlq-Subject").as_deref(),
        Some("palisade.events.unexpected_port_open.web-1_ERROR_forged")
    );
    assert_eq!(
        l.header("Palisade-Dlq-Dispatcher"),
        Some(format!("webhook={}", target.url))
    );
    assert!(
        l.header("Palisade-Dlq-Reason")
            .unwrap()
            .contains("answered 500"),
        "{l:?}"
    );

    let logs = logs.text();
    let want = format!(
        "dead-lettered event {} (unexpected_port_open, monitor web-1\\nERROR forged) to palisade.dlq.webhook after 3 deliveries (max_deliver 3)",
        e.id
    );
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&want)).collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains("answered 500"),
        "{}",
        lines[0]
    );
    assert!(
        !logs.lines().any(|l| l.starts_with("ERROR forged")),
        "a forged line: {logs}"
    );
    // (The two retries are counted in `stats.retried`; their WARN lines are
    // not counted here: another test logging from the same call site on
    // another thread can make this scoped subscriber miss some.)
}

#[tokio::test]
async fn a_resolution_is_not_dead_lettered_before_its_alert_could_expire() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let target = HttpTarget::start(vec![500]).await;
    let budget = Duration::from_secs(2);
    let config = ConsumerConfig {
        max_deliver: 2,
        resolution_budget: budget,
        ..test_config()
    };
    let hook = WebhookDispatcher::new(&target.url, &HttpOptions::default()).unwrap();
    let running = Running::start(client.clone(), config, vec![Box::new(hook)]);

    let incident = opened("web-1", 6379);
    let incident_seq = publish(&js, &incident, PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, incident_seq).await;
    let attempts_of_incident = target.requests().len();
    assert_eq!(attempts_of_incident, 2, "an incident: max_deliver attempts");

    let r = resolved(&incident, &ago(0));
    let seq = publish(&js, &r, PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, seq).await;
    let stats = running.stop().await;
    let attempts: Vec<Instant> = target.requests()[attempts_of_incident..]
        .iter()
        .map(|r| r.at)
        .collect();
    // Retried (backoff at most 400 ms) until the budget had passed.
    assert!(attempts.len() > 2, "{}", attempts.len());
    let span = *attempts.last().unwrap() - attempts[0];
    assert!(span >= budget, "given up after {span:?}");
    assert_eq!(stats.dead_lettered, 2);
    let letters = dead_letters(&js).await;
    assert_eq!(letters.len(), 2);
    assert_eq!(
        schema::decode(&letters[1].payload, PayloadFormat::Json).unwrap(),
        r
    );
}

#[tokio::test]
async fn undecodable_messages_are_terminated_not_retried() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let garbage = publish_raw(
        &js,
        "palisade.events.unexpected_port_open.web-1",
        "bad-1",
        Some("application/msgpack"),
        b"\xc1 not msgpack".to_vec(),
    )
    .await;
    let wrong_type = publish_raw(
        &js,
        "palisade.events.unexpected_port_open.web-1",
        "bad-2",
        Some("text/plain"),
        b"hello".to_vec(),
    )
    .await;
    let mut future = opened("web-1", 1);
    future.ty = "io.palisade.unexpected_port_open.v9".into();
    let future_seq = publish(&js, &future, PayloadFormat::Json).await;
    let good = opened("web-1", 2);
    let good_seq = publish(&js, &good, PayloadFormat::MsgPack).await;
    assert_eq!((garbage, wrong_type, future_seq, good_seq), (1, 2, 3, 4));

    let buf = SharedBuf::default();
    let running = Running::start(client.clone(), test_config(), vec![log_to(&buf)]);
    wait_acked(&js, CONSUMER, good_seq).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stats = running.stop().await;
    assert_eq!(buf.lines(), vec![human_line(&good)]);
    assert_eq!(
        stats,
        ConsumerStats {
            acked: 1,
            undecodable: 3,
            ..ConsumerStats::default()
        }
    );
    let info = consumer_info(&js, CONSUMER).await;
    assert_eq!(info.num_redelivered, 0);
    // Not dropped: each is on palisade.dlq.undecodable, unchanged.
    let letters = dead_letters(&js).await;
    assert_eq!(letters.len(), 3);
    assert!(
        letters
            .iter()
            .all(|l| l.subject == "palisade.dlq.undecodable")
    );
    assert_eq!(letters[0].payload, b"\xc1 not msgpack");
    assert_eq!(
        letters[1].header("Content-Type").as_deref(),
        Some("text/plain")
    );
    assert!(
        letters[2]
            .header("Palisade-Dlq-Reason")
            .unwrap()
            .contains("unsupported event type"),
        "{letters:?}"
    );
}

#[tokio::test]
async fn the_consumer_survives_a_nats_restart() {
    let mut server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let buf = SharedBuf::default();
    let running = Running::start(client.clone(), test_config(), vec![log_to(&buf)]);

    let before = opened("web-1", 1);
    publish(&js, &before, PayloadFormat::MsgPack).await;
    eventually("the first event", Duration::from_secs(20), || async {
        buf.lines().len() == 1
    })
    .await;

    // An outage longer than two heartbeats: the pull subscription breaks
    // and is set up again once the server is back.
    server.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        running.is_running(),
        "the consumer must not end with the connection"
    );
    server.restart();

    // Publish again once the (reconnecting) publisher gets through.
    let after = opened("web-1", 2);
    let payload = schema::encode(&after, PayloadFormat::MsgPack).unwrap();
    eventually(
        "a publish after the restart",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            let payload = payload.clone();
            let after = after.clone();
            async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", after.id.as_str());
                headers.insert("Content-Type", PayloadFormat::MsgPack.content_type());
                match js
                    .publish_with_headers(after.nats_subject("palisade"), headers, payload.into())
                    .await
                {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                }
            }
        },
    )
    .await;
    eventually(
        "the event published after the restart",
        Duration::from_secs(30),
        || async { buf.lines().len() >= 2 },
    )
    .await;
    assert!(running.is_running());
    let stats = running.stop().await;
    assert_eq!(buf.lines(), vec![human_line(&before), human_line(&after)]);
    assert_eq!(stats.acked, 2);
}

#[tokio::test]
async fn a_missing_stream_is_waited_for_but_a_bad_filter_is_an_error() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());

    // No stream yet: the consumer waits, then consumes once it exists.
    let buf = SharedBuf::default();
    let running = Running::start(client.clone(), test_config(), vec![log_to(&buf)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(running.is_running());
    create_stream(&js).await;
    let e = opened("web-1", 80);
    publish(&js, &e, PayloadFormat::Json).await;
    eventually("the event", Duration::from_secs(20), || async {
        buf.lines().len() == 1
    })
    .await;
    running.stop().await;

    // A filter outside the stream's subjects cannot work: error at start.
    let config = ConsumerConfig {
        consumer: "other".into(),
        filter: "elsewhere.>".into(),
        ..test_config()
    };
    let mut consumer = AlertConsumer::new(client.clone(), config, vec![log_to(&buf)]);
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        consumer.run(std::future::pending()),
    )
    .await
    .expect("fails fast")
    .unwrap_err();
    // nats-server 2.9 refuses such a consumer, 2.10 and later accept it: the
    // consumer checks it itself, before asking the server.
    assert!(
        matches!(err, ConsumerError::FilterNotCovered { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the filter \"elsewhere.>\" is outside the subjects of stream \"PALISADE\" \
         (palisade.>): the consumer would never receive an event"
    );
    assert!(try_consumer_info(&js, "other").await.is_none());

    // So must the dead-letter subjects be.
    let config = ConsumerConfig {
        consumer: "other".into(),
        subject_prefix: "elsewhere".into(),
        ..test_config()
    };
    let mut consumer = AlertConsumer::new(client.clone(), config, vec![log_to(&buf)]);
    let err = consumer.run(std::future::pending()).await.unwrap_err();
    assert!(
        matches!(&err, ConsumerError::DeadLetterNotCovered { subject, .. } if subject == "elsewhere.dlq.log"),
        "{err}"
    );
}

#[tokio::test]
async fn tail_prints_new_events_only() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let old = opened("web-1", 1);
    publish(&js, &old, PayloadFormat::MsgPack).await;

    let (stop, stopped) = oneshot::channel::<()>();
    let out = SharedBuf::default();
    let mut writer = out.clone();
    let tail_client = client.clone();
    let task = tokio::spawn(async move {
        let config = TailConfig::default();
        tail(tail_client, &config, &mut writer, async {
            let _ = stopped.await;
        })
        .await
    });
    // Wait until the ephemeral consumer exists, then publish.
    eventually("the tail consumer", Duration::from_secs(10), || async {
        let stream = js.get_stream(STREAM).await.unwrap();
        let names: Vec<String> = stream
            .consumer_names()
            .filter_map(|n| async move { n.ok() })
            .collect()
            .await;
        !names.is_empty()
    })
    .await;
    let new = [
        (down("web-1", 22), PayloadFormat::Json),
        (scan("web-1", &ago(0)), PayloadFormat::MsgPack),
    ];
    for (e, f) in &new {
        publish(&js, e, *f).await;
    }
    publish_raw(&js, "palisade.events.x.y", "junk", None, b"junk".to_vec()).await;
    eventually("3 tail lines", Duration::from_secs(10), || async {
        out.lines().len() >= 3
    })
    .await;
    let _ = stop.send(());
    let lines = task.await.unwrap().unwrap();
    assert_eq!(lines, 3);
    let got = out.lines();
    assert_eq!(got[..2], [human_line(&new[0].0), human_line(&new[1].0)]);
    assert!(
        got[2].starts_with("palisade.events.x.y: undecodable message: "),
        "{}",
        got[2]
    );
}
