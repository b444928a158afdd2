use super::*;
use crate::schema::decode;
use crate::sink::test_events;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// A tiny HTTP/1.1 server answering the statuses in `script` in turn (the
/// last one repeats), one request per connection.
async fn serve(script: Vec<u16>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    serve_with(move |n, _| script[n.min(script.len() - 1)]).await
}

/// A tiny HTTP/1.1 server answering the `n`-th request `seen` with
/// `answer(n, seen)`, one request per connection.
async fn serve_with(
    answer: impl Fn(usize, &Seen) -> u16 + Send + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let Ok(k) = stream.read(&mut chunk).await else {
                    break None;
                };
                if k == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..k]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + length {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let seen = Seen {
                head,
                body: buf[head_end..].to_vec(),
            };
            let status = answer(n, &seen);
            n += 1;
            log.lock().unwrap().push(seen);
            let reason = match status {
                200 => "OK",
                204 => "No Content",
                400 => "Bad Request",
                500 => "Internal Server Error",
                503 => "Service Unavailable",
                _ => "Whatever",
            };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    (url, seen)
}

fn sink(url: &str, retries: u32) -> WebhookSink {
    WebhookSink::new(url.to_string(), Duration::from_secs(2), retries)
        .unwrap()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

#[tokio::test]
async fn fails_twice_then_succeeds() {
    let (url, seen) = serve(vec![500, 503, 200]).await;
    let mut s = sink(&url, 3);
    assert_eq!(s.name(), format!("webhook:{url}"));
    let events = test_events(1, "w");
    assert_eq!(s.publish(&events).await.unwrap(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for req in &seen {
        assert!(
            req.head.starts_with("POST /hook HTTP/1.1\r\n"),
            "{}",
            req.head
        );
        assert_eq!(
            req.header("content-type").as_deref(),
            Some("application/cloudevents+json; charset=utf-8")
        );
        assert_eq!(req.header("webhook-id").as_deref(), Some("w-0"));
        assert!(req.header("webhook-timestamp").is_some());
        assert_eq!(
            req.header("webhook-signature"),
            None,
            "no secret, no signature"
        );
        assert_eq!(decode(&req.body, PayloadFormat::Json).unwrap(), events[0]);
    }
}

#[tokio::test]
async fn batch_in_order() {
    let (url, seen) = serve(vec![204]).await;
    let mut s = sink(&url, 0);
    let events = test_events(4, "b");
    assert_eq!(s.publish(&events).await.unwrap(), 4);
    let got: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| decode(&r.body, PayloadFormat::Json).unwrap())
        .collect();
    assert_eq!(got, events);
}

#[tokio::test]
async fn gives_up_after_retries() {
    let (url, seen) = serve(vec![500]).await;
    let mut s = sink(&url, 2);
    let err = s.publish(&test_events(1, "g")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "webhook {url}: answered HTTP 500 Internal Server Error (gave up after 3 attempts)"
        )
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn partial_batch() {
    let (url, _) = serve(vec![200, 500]).await;
    let mut s = sink(&url, 1);
    assert_eq!(s.publish(&test_events(3, "p")).await.unwrap(), 1);
}

#[tokio::test]
async fn client_error_is_a_permanent_rejection() {
    let (url, seen) = serve(vec![400, 200]).await;
    let mut s = sink(&url, 5);
    let err = s.publish(&test_events(1, "c")).await.unwrap_err();
    assert!(
        matches!(&err, SinkError::WebhookRejected { status: 400, event_id, .. } if event_id == "c-0"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("webhook {url}: event c-0 rejected: answered HTTP 400")
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn one_refused_event_does_not_hold_up_the_rest() {
    // Event r-2 is refused for good; every other accepted.
    let (url, seen) = serve_with(|_, seen| {
        if seen.header("webhook-id").as_deref() == Some("r-2") {
            400
        } else {
            200
        }
    })
    .await;
    let mut s = sink(&url, 3);
    let events = test_events(6, "r");
    // The batch stops before the refused event ...
    assert_eq!(s.publish(&events).await.unwrap(), 2);
    // ... which comes first in the next call, as a distinct error the caller
    // dead-letters ...
    let err = s.publish(&events[2..]).await.unwrap_err();
    let SinkError::WebhookRejected {
        status, event_id, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*status, event_id.as_str()), (400, "r-2"));
    // ... and every later event arrives, in order.
    assert_eq!(s.publish(&events[3..]).await.unwrap(), 3);
    let got: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    // The refused event was sent once: its refusal was kept for the call
    // that starts with it.
    assert_eq!(got, ["r-0", "r-1", "r-2", "r-3", "r-4", "r-5"]);
}

#[tokio::test]
async fn unavailable_then_ok_delivers_once_after_retries() {
    let (url, seen) = serve(vec![503, 503, 200, 200]).await;
    let mut s = sink(&url, 5);
    assert_eq!(s.publish(&test_events(1, "u")).await.unwrap(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        3,
        "two refusals, then one delivery, nothing more"
    );
    assert!(
        seen.iter()
            .all(|r| r.header("webhook-id").as_deref() == Some("u-0"))
    );
}

#[tokio::test]
async fn a_rejection_excerpt_is_short_and_one_line() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 65536];
        let _ = conn.read(&mut buf).await;
        let body = format!("line one\nline two\x1b[31m{}", "x".repeat(5000));
        let response = format!(
            "HTTP/1.1 422 Unprocessable\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(response.as_bytes()).await;
    });
    let mut s = sink(&url, 0);
    let err = s.publish(&test_events(1, "x")).await.unwrap_err();
    let SinkError::WebhookRejected {
        status, excerpt, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*status, 422);
    assert!(
        excerpt.len() <= REJECTION_EXCERPT_BYTES,
        "{}",
        excerpt.len()
    );
    assert!(
        excerpt.starts_with(r"line one\nline two\u{1b}[31mxxx"),
        "{excerpt}"
    );
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn retry_after_is_seconds_or_an_http_date() {
    let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
    assert_eq!(
        parse_retry_after(&later, now),
        Some(Duration::from_secs(90))
    );
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
    assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("soon", now), None);
}

/// A server answering 503 with `Retry-After: <value>` once, then 200.
async fn serve_retry_after(value: String) -> (String, Arc<Mutex<Vec<std::time::Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = times.clone();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 65536];
            let _ = conn.read(&mut buf).await;
            seen.lock().unwrap().push(std::time::Instant::now());
            let response = if n == 0 {
                format!(
                    "HTTP/1.1 503 Busy\r\nretry-after: {value}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
            } else {
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
            };
            let _ = conn.write_all(response.as_bytes()).await;
        }
    });
    (url, times)
}

#[tokio::test]
async fn retry_after_sets_the_delay() {
    // 1 s, where the backoff alone would wait at most 50 ms.
    let (url, times) = serve_retry_after("1".into()).await;
    let mut s = sink(&url, 3).with_backoff(Duration::from_millis(10), Duration::from_secs(5));
    assert_eq!(s.publish(&test_events(1, "a")).await.unwrap(), 1);
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= Duration::from_millis(950),
        "{:?}",
        times[1] - times[0]
    );

    // Longer than the maximum backoff: not asked again now, the caller
    // retries later.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
    let (url, times) = serve_retry_after(date).await;
    let mut s = sink(&url, 3);
    let err = s.publish(&test_events(1, "b")).await.unwrap_err();
    assert!(matches!(err, SinkError::Webhook { .. }), "{err}");
    assert!(err.to_string().contains("asked to retry in"), "{err}");
    assert_eq!(times.lock().unwrap().len(), 1);
}

use crate::testing::VENV_PYTHON;

#[tokio::test]
async fn the_signature_verifies_with_the_reference_implementation() {
    assert!(
        std::path::Path::new(VENV_PYTHON).is_file(),
        "{VENV_PYTHON} not found: `cargo xtask setup` installs the pinned standardwebhooks package"
    );
    let (url, seen) = serve(vec![200]).await;
    // A secret as Standard Webhooks writes it.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut s = sink(&url, 0).with_secret(WebhookSecret::parse(secret).unwrap());
    let mut events = test_events(2, "sig");
    // Any text in the body: the signature covers the bytes sent.
    if let crate::schema::EventData::UnexpectedPortOpen(p) = &mut events[0].data {
        p.monitor = "naïve \"quoted\" \u{1F512}".into();
    }
    assert_eq!(s.publish(&events).await.unwrap(), 2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (req, wrong) in seen.iter().flat_map(|r| [(r, false), (r, true)]) {
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("body");
        let mut sent = req.body.clone();
        if wrong {
            sent.push(b' ');
        }
        std::fs::write(&body, &sent).unwrap();
        let script = [
            "import sys",
            "from standardwebhooks.webhooks import Webhook",
            "secret, id_, ts, sig, path = sys.argv[1:]",
            "body = open(path, 'rb').read()",
            "headers = {'webhook-id': id_, 'webhook-timestamp': ts, 'webhook-signature': sig}",
            "try:",
            "    Webhook(secret).verify(body, headers)",
            "    print('verified')",
            "except Exception as e:",
            "    print('refused', e)",
        ]
        .join("\n");
        let out = std::process::Command::new(VENV_PYTHON)
            .args(["-c", &script, secret])
            .arg(req.header("webhook-id").unwrap())
            .arg(req.header("webhook-timestamp").unwrap())
            .arg(req.header("webhook-signature").unwrap())
            .arg(&body)
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = if wrong { "refused" } else { "verified" };
        assert!(answer.starts_with(want), "{want}: {answer}");
    }
    assert!(
        seen[0]
            .header("webhook-signature")
            .unwrap()
            .starts_with("v1,")
    );
}

#[test]
fn secrets_parse_with_or_without_the_prefix_and_never_show() {
    let a = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let b = WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(a, b);
    assert_eq!(format!("{a:?}"), "WebhookSecret(***)");
    // The spec's example: id, timestamp and body signed with this secret.
    assert_eq!(
        a.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert!(WebhookSecret::parse("whsec_!!!").is_err());
    assert!(WebhookSecret::parse("whsec_").is_err());
}

#[test]
fn credentials_in_urls_are_redacted() {
    assert_eq!(
        redact_url("https://bob:hunter2@hooks.example/x?token=abc&team=ops&api_key=k"),
        "https://bob:***@hooks.example/x?token=***&team=ops&api_key=***"
    );
    assert_eq!(redact_url("not a url"), "not a url");
}

#[tokio::test]
async fn refused_connection() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let mut s = sink(&url, 1);
    let err = s.publish(&test_events(1, "r")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("webhook {url}: cannot connect: connection refused (gave up after 2 attempts)")
    );
}

#[tokio::test]
async fn silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut s = WebhookSink::new(url.clone(), Duration::from_millis(300), 0).unwrap();
    let started = std::time::Instant::now();
    let err = s.publish(&test_events(1, "t")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        err.to_string(),
        format!("webhook {url}: timed out after 0.3s (gave up after 1 attempt)")
    );
    holder.abort();
}

#[test]
fn bad_urls() {
    for (url, want) in [
        (
            "not a url",
            "invalid webhook URL \"not a url\": relative URL without a base",
        ),
        (
            "ftp://x/",
            "invalid webhook URL \"ftp://x/\": scheme \"ftp\" is not http or https",
        ),
    ] {
        let err = WebhookSink::new(url.into(), Duration::from_secs(1), 1).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    assert!(WebhookSink::new("http://x/".into(), Duration::ZERO, 1).is_err());
}

#[test]
fn password_is_redacted() {
    let s = WebhookSink::new(
        "https://bob:hunter2@hooks.example/x".into(),
        Duration::from_secs(1),
        1,
    )
    .unwrap();
    assert_eq!(s.name(), "webhook:https://bob:***@hooks.example/x");
    assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
}
