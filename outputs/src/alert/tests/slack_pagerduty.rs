//! The Slack and PagerDuty dispatchers through a real `nats-server`, posting
//! to a local HTTP receiver whose requests are checked against the
//! services' documented schemas:
//!
//! * Slack incoming webhooks (docs.slack.dev, "Sending messages using
//!   incoming webhooks" and the Block Kit reference): a JSON object with a
//!   `text` string and optional `blocks` (at most 50); a `header` block
//!   holds a `plain_text` object of at most 150 characters; a `section`
//!   has `text` or `fields` (at most 10 text objects of at most 2000
//!   characters); a `context` has 1 to 10 `elements`. Slack answers
//!   `200 ok`.
//! * PagerDuty Events API v2 (developer.pagerduty.com, "Send an Alert
//!   Event"): `routing_key` (the 32-character integration key),
//!   `event_action` (`trigger`, `acknowledge` or `resolve`), `dedup_key`
//!   (at most 255 characters; required to resolve), and for a trigger a
//!   `payload` with `summary` (at most 1024), `source`, `severity`
//!   (`critical`, `error`, `warning` or `info`) and the optional
//!   `timestamp` (ISO 8601), `component`, `group`, `class`,
//!   `custom_details` (an object); optional `client`, `client_url`,
//!   `links`, `images`. PagerDuty answers `202` with a JSON status.

use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;

use super::nats::{
    CONSUMER, Running, client, consumer_info, create_stream, dead_letters, publish, test_config,
    wait_acked,
};
use super::*;
use crate::testing::NatsServer;

/// A routing key shaped like PagerDuty's integration keys.
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

// ---------------------------------------------------------------------------
// The documented schemas.

fn string<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .ok_or_else(|| format!("`{key}` is missing"))?
        .as_str()
        .ok_or_else(|| format!("`{key}` is not a string"))
}

fn only_keys(v: &Value, allowed: &[&str], what: &str) -> Result<(), String> {
    let object = v
        .as_object()
        .ok_or_else(|| format!("{what} is not an object"))?;
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{what}: unknown field `{k}`")),
        None => Ok(()),
    }
}

/// A Block Kit text object: `plain_text` or `mrkdwn`, at most `max` chars.
fn text_object(v: &Value, max: usize, plain_only: bool) -> Result<(), String> {
    only_keys(v, &["type", "text", "emoji", "verbatim"], "text object")?;
    let kind = string(v, "type")?;
    if !(kind == "plain_text" || (!plain_only && kind == "mrkdwn")) {
        return Err(format!("text object of type {kind:?}"));
    }
    let text = string(v, "text")?;
    if text.is_empty() || text.chars().count() > max {
        return Err(format!(
            "text of {} chars (1..={max})",
            text.chars().count()
        ));
    }
    Ok(())
}

/// Slack's incoming-webhook payload.
fn check_slack(body: &Value) -> Result<(), String> {
    only_keys(
        body,
        &[
            "text",
            "blocks",
            "attachments",
            "thread_ts",
            "mrkdwn",
            "unfurl_links",
            "unfurl_media",
        ],
        "message",
    )?;
    if string(body, "text")?.is_empty() {
        return Err("empty `text`".into());
    }
    let Some(blocks) = body.get("blocks") else {
        return Ok(());
    };
    let blocks = blocks.as_array().ok_or("`blocks` is not an array")?;
    if blocks.len() > 50 {
        return Err(format!("{} blocks (at most 50)", blocks.len()));
    }
    for block in blocks {
        match string(block, "type")? {
            "header" => {
                only_keys(block, &["type", "text", "block_id"], "header")?;
                text_object(&block["text"], 150, true)?;
            }
            "section" => {
                only_keys(
                    block,
                    &["type", "text", "fields", "accessory", "block_id"],
                    "section",
                )?;
                if block.get("text").is_none() && block.get("fields").is_none() {
                    return Err("a section needs `text` or `fields`".into());
                }
                if let Some(text) = block.get("text") {
                    text_object(text, 3000, false)?;
                }
                if let Some(fields) = block.get("fields") {
                    let fields = fields.as_array().ok_or("`fields` is not an array")?;
                    if fields.is_empty() || fields.len() > 10 {
                        return Err(format!("{} fields (1..=10)", fields.len()));
                    }
                    for field in fields {
                        text_object(field, 2000, false)?;
                    }
                }
            }
            "context" => {
                only_keys(block, &["type", "elements", "block_id"], "context")?;
                let elements = block["elements"]
                    .as_array()
                    .ok_or("`elements` is not an array")?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err(format!("{} context elements (1..=10)", elements.len()));
                }
                for element in elements {
                    text_object(element, 3000, false)?;
                }
            }
            "divider" => only_keys(block, &["type", "block_id"], "divider")?,
            other => return Err(format!("unexpected block type {other:?}")),
        }
    }
    Ok(())
}

/// PagerDuty's Events API v2 event.
fn check_pagerduty(body: &Value) -> Result<(), String> {
    only_keys(
        body,
        &[
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "images",
            "links",
            "client",
            "client_url",
        ],
        "event",
    )?;
    if string(body, "routing_key")?.len() != 32 {
        return Err("`routing_key` is not a 32-character integration key".into());
    }
    let action = string(body, "event_action")?;
    if let Some(key) = body.get("dedup_key") {
        let key = key.as_str().ok_or("`dedup_key` is not a string")?;
        if key.is_empty() || key.chars().count() > 255 {
            return Err(format!("`dedup_key` of {} chars", key.chars().count()));
        }
    }
    match action {
        "acknowledge" | "resolve" => {
            string(body, "dedup_key")?;
        }
        "trigger" => {
            let payload = body.get("payload").ok_or("a trigger needs `payload`")?;
            only_keys(
                payload,
                &[
                    "summary",
                    "source",
                    "severity",
                    "timestamp",
                    "component",
                    "group",
                    "class",
                    "custom_details",
                ],
                "payload",
            )?;
            let summary = string(payload, "summary")?;
            if summary.is_empty() || summary.chars().count() > 1024 {
                return Err(format!("`summary` of {} chars", summary.chars().count()));
            }
            if string(payload, "source")?.is_empty() {
                return Err("empty `source`".into());
            }
            let severity = string(payload, "severity")?;
            if !["critical", "error", "warning", "info"].contains(&severity) {
                return Err(format!("severity {severity:?}"));
            }
            if payload.get("timestamp").is_some() {
                humantime::parse_rfc3339_weak(string(payload, "timestamp")?)
                    .map_err(|e| format!("`timestamp`: {e}"))?;
            }
            for key in ["component", "group", "class"] {
                if payload.get(key).is_some() {
                    string(payload, key)?;
                }
            }
            if let Some(details) = payload.get("custom_details")
                && !details.is_object()
            {
                return Err("`custom_details` is not an object".into());
            }
        }
        other => return Err(format!("event_action {other:?}")),
    }
    for key in ["client", "client_url"] {
        if body.get(key).is_some() {
            string(body, key)?;
        }
    }
    if let Some(links) = body.get("links") {
        for link in links.as_array().ok_or("`links` is not an array")? {
            string(link, "href")?;
        }
    }
    Ok(())
}

fn json_bodies(target: &HttpTarget) -> Vec<Value> {
    target
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(r.header("content-type"), Some("application/json"));
            serde_json::from_slice(&r.body).expect("a JSON body")
        })
        .collect()
}

fn slack_ok() -> Reply {
    Reply::status(200).with_body("text/html", "ok")
}

fn pagerduty_accepted() -> Reply {
    Reply::status(202).with_body(
        "application/json",
        r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#,
    )
}

#[test]
fn the_schema_checks_can_fail() {
    let n = Notice::of(&opened("web-1", 6379)).unwrap();
    let mut slack = slack_message(&n, None);
    assert_eq!(check_slack(&slack), Ok(()));
    slack["blocks"][0]["text"]["text"] = "x".repeat(151).into();
    assert!(check_slack(&slack).is_err());
    assert!(check_slack(&serde_json::json!({"blocks": []})).is_err());

    let linked = pagerduty_event(&n, ROUTING_KEY, Some("https://p.example/m/{monitor}"));
    assert_eq!(check_pagerduty(&linked), Ok(()));
    assert_eq!(linked["client_url"], "https://p.example/m/web-1");
    let mut pd = pagerduty_event(&n, ROUTING_KEY, None);
    assert_eq!(check_pagerduty(&pd), Ok(()));
    pd["payload"]["severity"] = "high".into();
    assert!(check_pagerduty(&pd).is_err());
    let resolve = serde_json::json!({"routing_key": ROUTING_KEY, "event_action": "resolve"});
    assert!(
        check_pagerduty(&resolve).is_err(),
        "resolve without dedup_key"
    );
}

// ---------------------------------------------------------------------------
// Pure layout.

#[test]
fn slack_text_cannot_mention_or_link() {
    let mut e = opened("web-1", 6379);
    if let EventData::UnexpectedPortOpen(p) = &mut e.data {
        p.monitor = "<!channel> <https://evil.example|click> & more".into();
    }
    let message = slack_message(&Notice::of(&e).unwrap(), None);
    assert_eq!(check_slack(&message), Ok(()));
    // Everything Slack parses as mrkdwn (plain_text is shown as it is).
    let mut parsed = vec![message["text"].as_str().unwrap().to_string()];
    for block in message["blocks"].as_array().unwrap() {
        for object in block["fields"]
            .as_array()
            .into_iter()
            .chain(block["elements"].as_array())
            .flatten()
        {
            assert_eq!(object["type"], "mrkdwn");
            parsed.push(object["text"].as_str().unwrap().to_string());
        }
    }
    let text = parsed.join("\n");
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(!text.contains("<https://evil"), "{text}");
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(text.contains("&amp; more"), "{text}");
}

#[test]
fn pagerduty_dedup_key_is_the_incident_id_or_its_hash() {
    assert_eq!(
        dedup_key("web-1-198.18.0.2-6379-x"),
        "web-1-198.18.0.2-6379-x"
    );
    let long = "m".repeat(300);
    let key = dedup_key(&long);
    assert!(key.starts_with("palisade-") && key.len() <= 255, "{key}");
    assert_eq!(key, dedup_key(&long), "stable");
    assert_ne!(key, dedup_key(&"n".repeat(300)));
}

#[test]
fn pagerduty_severity_follows_palisade_severity() {
    let sev = |e: &Envelope| {
        pagerduty_event(&Notice::of(e).unwrap(), ROUTING_KEY, None)["payload"]["severity"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(sev(&opened("w", 1)), "error");
    assert_eq!(sev(&down("w", 1)), "warning");
    let mut critical = opened("w", 1);
    if let EventData::UnexpectedPortOpen(p) = &mut critical.data {
        p.severity = Severity::Critical;
    }
    assert_eq!(sev(&critical), "critical");
}

// ---------------------------------------------------------------------------
// Through NATS to a local receiver.

#[tokio::test]
async fn slack_gets_one_readable_message_per_incident_and_per_resolution() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let target = HttpTarget::start_replies(vec![slack_ok()]).await;
    let http = HttpOptions {
        dashboard_url: Some("https://palisade.example/monitors/{monitor}".into()),
        ..HttpOptions::default()
    };
    // The URL from a file, as an operator would keep it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slack.url");
    std::fs::write(&file, format!("{}\n", target.url)).unwrap();
    let spec: DispatchSpec = format!("slack=@{}", file.display()).parse().unwrap();
    let slack = spec.build(&http).unwrap();
    assert!(!slack.name().contains("/hook"), "{}", slack.name());
    let running = Running::start(client.clone(), test_config(), vec![slack]);

    let incident = opened("web-1", 6379);
    let resolution = resolved(&incident, &ago(10));
    publish(&js, &incident, PayloadFormat::Json).await;
    publish(&js, &resolution, PayloadFormat::MsgPack).await;
    publish(
        &js,
        &monitor_resolved("web-1", &ago(10)),
        PayloadFormat::Json,
    )
    .await;
    let last = publish(&js, &ports_changed(300, 1), PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, last).await;
    let stats = running.stop().await;
    // monitor_resolved is no notice: acknowledged, nothing posted.
    assert_eq!(stats.acked, 4, "{stats:?}");

    let bodies = json_bodies(&target);
    assert_eq!(
        bodies.len(),
        3,
        "one per incident, resolution and ports_changed: {bodies:#?}"
    );
    assert_eq!(
        bodies[2]["text"],
        ":rotating_light: HIGH: 300 port changes on web-1 (50 sent one by one)"
    );
    for body in &bodies {
        assert_eq!(check_slack(body), Ok(()), "{body:#}");
    }
    let summary = "Unexpected port open 6379/tcp on web-1 (198.18.0.2)";
    let (fired, ended) = (&bodies[0], &bodies[1]);
    assert_eq!(
        fired["text"],
        format!(":rotating_light: HIGH: {summary}").as_str()
    );
    assert_eq!(
        ended["text"],
        format!(":white_check_mark: RESOLVED: {summary}").as_str()
    );
    let fields = |body: &Value| -> Vec<String> {
        body["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["fields"].as_array())
            .flatten()
            .map(|f| f["text"].as_str().unwrap().to_string())
            .collect()
    };
    let p = incident.data.port_event().unwrap();
    let fired_fields = fields(fired);
    for want in [
        "*Monitor*\nweb-1".to_string(),
        "*Host*\n198.18.0.2".to_string(),
        "*Port*\n6379/tcp".to_string(),
        "*Kind*\nunexpected_port_open".to_string(),
        "*Severity*\nhigh".to_string(),
        "*State*\nopen".to_string(),
        format!("*First seen*\n{}", p.first_seen),
        format!("*Confirmed*\n{}", p.confirmed_at),
    ] {
        assert!(fired_fields.contains(&want), "{want:?} in {fired_fields:?}");
    }
    let ended_fields = fields(ended);
    assert!(
        ended_fields.contains(&"*Reason*\nobserved".to_string()),
        "{ended_fields:?}"
    );
    assert!(
        ended_fields.iter().any(|f| f.starts_with("*Resolved*\n")),
        "{ended_fields:?}"
    );
    for body in [fired, ended] {
        let context = body["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(context.contains(&p.incident_id), "{context}");
        assert!(
            context.contains("<https://palisade.example/monitors/web-1|dashboard>"),
            "{context}"
        );
    }
}

#[tokio::test]
async fn pagerduty_triggers_and_resolves_with_the_incident_id_as_dedup_key() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let target = HttpTarget::start_replies(vec![pagerduty_accepted()]).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("routing.key");
    std::fs::write(&key_file, format!("{ROUTING_KEY}\n")).unwrap();
    let spec: DispatchSpec = format!("pagerduty=@{},url={}", key_file.display(), target.url)
        .parse()
        .unwrap();
    let pagerduty = spec.build(&HttpOptions::default()).unwrap();
    let running = Running::start(client.clone(), test_config(), vec![pagerduty]);

    let incident = opened("web-1", 6379);
    let host_down = {
        let mut e = down("db-1", 5432);
        if let EventData::ExpectedPortDown(p) = &mut e.data {
            p.address = "2001:2::5".into();
        }
        e
    };
    publish(&js, &incident, PayloadFormat::Json).await;
    publish(&js, &host_down, PayloadFormat::Json).await;
    // A summary opens nothing PagerDuty could resolve: not sent.
    publish(&js, &ports_changed(300, 1), PayloadFormat::Json).await;
    let last = publish(&js, &resolved(&incident, &ago(5)), PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, last).await;
    let stats = running.stop().await;
    assert_eq!(stats.acked, 4, "{stats:?}");

    let bodies = json_bodies(&target);
    assert_eq!(bodies.len(), 3, "{bodies:#?}");
    for body in &bodies {
        assert_eq!(check_pagerduty(body), Ok(()), "{body:#}");
        assert_eq!(body["routing_key"], ROUTING_KEY);
    }
    let p = incident.data.port_event().unwrap();
    let trigger = &bodies[0];
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], p.incident_id.as_str());
    let payload = &trigger["payload"];
    assert_eq!(
        payload["summary"],
        "Unexpected port open 6379/tcp on web-1 (198.18.0.2)"
    );
    assert_eq!(payload["source"], "198.18.0.2");
    assert_eq!(payload["severity"], "error");
    assert_eq!(payload["timestamp"], incident.time.as_str());
    assert_eq!(payload["component"], "6379/tcp");
    assert_eq!(payload["group"], "web-1");
    assert_eq!(payload["class"], "unexpected_port_open");
    assert_eq!(
        payload["custom_details"]["first_seen"],
        p.first_seen.as_str()
    );
    assert_eq!(
        payload["custom_details"]["incident"],
        p.incident_id.as_str()
    );

    let other = &bodies[1];
    assert_eq!(other["payload"]["source"], "2001:2::5");
    assert_eq!(other["payload"]["severity"], "warning");

    let resolve = &bodies[2];
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], p.incident_id.as_str());
}

#[tokio::test]
async fn a_slack_5xx_is_retried_and_the_message_delivered_once() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let target =
        HttpTarget::start_replies(vec![Reply::status(500), Reply::status(503), slack_ok()]).await;
    let slack = SlackDispatcher::new(&target.url, &HttpOptions::default()).unwrap();
    let running = Running::start(client.clone(), test_config(), vec![Box::new(slack)]);

    let seq = publish(&js, &opened("web-1", 6379), PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, seq).await;
    // Give a stray redelivery time to show up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stats = running.stop().await;

    let bodies = json_bodies(&target);
    assert_eq!(bodies.len(), 3, "two failures, one delivery, nothing more");
    assert!(bodies.iter().all(|b| *b == bodies[0]), "the same message");
    assert_eq!(
        stats,
        ConsumerStats {
            acked: 1,
            retried: 2,
            ..ConsumerStats::default()
        }
    );
    assert!(dead_letters(&js).await.is_empty());
}

#[tokio::test]
async fn a_pagerduty_400_is_dead_lettered_at_once() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let target = HttpTarget::start_replies(vec![
        Reply::status(400).with_body(
            "application/json",
            r#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}"#,
        ),
    ])
    .await;
    let pagerduty =
        PagerDutyDispatcher::new(ROUTING_KEY, &target.url, &HttpOptions::default()).unwrap();
    // A budget of 10 deliveries: a refusal must not use it.
    let config = ConsumerConfig {
        max_deliver: 10,
        ..test_config()
    };
    let running = Running::start(client.clone(), config, vec![Box::new(pagerduty)]);

    let e = opened("web-1", 6379);
    let seq = publish(&js, &e, PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, seq).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stats = running.stop().await;

    assert_eq!(target.requests().len(), 1, "a refusal is not retried");
    assert_eq!(
        stats,
        ConsumerStats {
            dead_lettered: 1,
            ..ConsumerStats::default()
        }
    );
    let letters = dead_letters(&js).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!(l.subject, "palisade.dlq.pagerduty");
    assert_eq!(schema::decode(&l.payload, PayloadFormat::Json).unwrap(), e);
    let reason = l.header("Palisade-Dlq-Reason").unwrap();
    assert!(
        reason.contains("refused the event: 400") && reason.contains("routing_key"),
        "{reason}"
    );
    assert!(
        !reason.contains(ROUTING_KEY),
        "the key is never shown: {reason}"
    );
    assert_eq!(l.header("Palisade-Dlq-Deliveries").as_deref(), Some("1"));
    assert_eq!(consumer_info(&js, CONSUMER).await.num_ack_pending, 0);
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let server = NatsServer::start();
    let client = client(&server).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let target = HttpTarget::start_replies(vec![
        Reply::status(429).with_header("retry-after", "2"),
        pagerduty_accepted(),
    ])
    .await;
    let pagerduty =
        PagerDutyDispatcher::new(ROUTING_KEY, &target.url, &HttpOptions::default()).unwrap();
    // The consumer's own backoff is 100 ms: only Retry-After explains a
    // longer wait.
    let running = Running::start(client.clone(), test_config(), vec![Box::new(pagerduty)]);

    let seq = publish(&js, &opened("web-1", 6379), PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, seq).await;
    let stats = running.stop().await;

    let requests = target.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(1900), "{gap:?}");
    assert_eq!(
        stats,
        ConsumerStats {
            acked: 1,
            retried: 1,
            ..ConsumerStats::default()
        }
    );
}
