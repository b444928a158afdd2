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
            let status = script[n.min(script.len() - 1)];
            n += 1;
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
            log.lock().unwrap().push(Seen {
                head,
                body: buf[head_end..].to_vec(),
            });
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
            Some("application/json")
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
async fn client_error_is_not_retried() {
    let (url, seen) = serve(vec![400, 200]).await;
    let mut s = sink(&url, 5);
    let err = s.publish(&test_events(1, "c")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("webhook {url}: event c-0 rejected: answered HTTP 400 Bad Request")
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
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
