//! Tests of the alert module: pure formatting and mapping here, the
//! consumer against a real `nats-server` in [`nats`], the Alertmanager
//! dispatcher against a real Alertmanager in [`alertmanager`].

mod alertmanager;
mod email;
mod nats;
mod slack_pagerduty;

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::schema::{
    self, EventData, MonitorEvent, PayloadFormat, PortEvent, ScanReport, Severity,
};

// ---------------------------------------------------------------------------
// Helpers shared with the submodules.

/// An RFC 3339 time `secs` seconds ago (negative: in the future).
pub(super) fn ago(secs: i64) -> String {
    let now = SystemTime::now();
    let t = if secs >= 0 {
        now - Duration::from_secs(secs.unsigned_abs())
    } else {
        now + Duration::from_secs(secs.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}

fn port_event(
    monitor: &str,
    port: u16,
    state: &str,
    incident_kind: &str,
    first_seen: &str,
    confirmed_at: &str,
) -> PortEvent {
    PortEvent {
        monitor: monitor.to_string(),
        host: "198.18.0.2".to_string(),
        address: "198.18.0.2".to_string(),
        port,
        state: Some(state.to_string()),
        expected: incident_kind == "expected_port_down",
        first_seen: first_seen.to_string(),
        confirmed_at: confirmed_at.to_string(),
        resolved_at: None,
        incident_id: format!("{monitor}-{port}-{first_seen}"),
        incident_kind: incident_kind.to_string(),
        severity: if incident_kind == "unexpected_port_open" {
            Severity::High
        } else {
            Severity::Normal
        },
        reason: None,
    }
}

/// `unexpected_port_open` of `monitor`'s `port`, first seen 10 minutes ago.
pub(super) fn opened(monitor: &str, port: u16) -> Envelope {
    let p = port_event(
        monitor,
        port,
        "open",
        "unexpected_port_open",
        &ago(600),
        &ago(300),
    );
    Envelope::new(
        format!("{}:opened", p.incident_id),
        "palisade://scanner-1".to_string(),
        p.confirmed_at.clone(),
        EventData::UnexpectedPortOpen(p),
    )
}

/// `expected_port_down` of `monitor`'s `port`, first seen 10 minutes ago.
pub(super) fn down(monitor: &str, port: u16) -> Envelope {
    let p = port_event(
        monitor,
        port,
        "filtered",
        "expected_port_down",
        &ago(600),
        &ago(300),
    );
    Envelope::new(
        format!("{}:opened", p.incident_id),
        "palisade://scanner-1".to_string(),
        p.confirmed_at.clone(),
        EventData::ExpectedPortDown(p),
    )
}

/// The `port_resolved` of an incident event, as the engine sends it
/// (severity `normal` whatever the incident's).
pub(super) fn resolved(incident: &Envelope, resolved_at: &str) -> Envelope {
    let (EventData::UnexpectedPortOpen(p) | EventData::ExpectedPortDown(p)) = &incident.data else {
        panic!("not an incident: {incident:?}");
    };
    let mut p = p.clone();
    p.incident_kind = incident.kind().to_string();
    p.resolved_at = Some(resolved_at.to_string());
    p.state = Some(if p.expected { "open" } else { "closed" }.to_string());
    p.severity = Severity::Normal;
    p.reason = Some("observed".to_string());
    Envelope::new(
        format!("{}:resolved", p.incident_id),
        incident.source.clone(),
        resolved_at.to_string(),
        EventData::PortResolved(p),
    )
}

pub(super) fn monitor_resolved(monitor: &str, time: &str) -> Envelope {
    Envelope::new(
        format!("{monitor}:all-clear:{time}"),
        "palisade://scanner-1".to_string(),
        time.to_string(),
        EventData::MonitorResolved(MonitorEvent {
            monitor: monitor.to_string(),
            host: "198.18.0.2".to_string(),
            message: "all ports back to their expected states".to_string(),
        }),
    )
}

pub(super) fn scan(monitor: &str, time: &str) -> Envelope {
    Envelope::new(
        format!("{monitor}:scan:{time}"),
        "palisade://scanner-1".to_string(),
        time.to_string(),
        EventData::Scan(ScanReport {
            monitor: monitor.to_string(),
            host: "198.18.0.2".to_string(),
            scan_kind: "full".to_string(),
            started: time.to_string(),
            finished: time.to_string(),
            conclusive: true,
            reachable: true,
            addresses: vec![crate::schema::AddressReport {
                address: "198.18.0.2".into(),
                reachable: true,
                open_ports: "22,443".into(),
                open_count: 2,
            }],
            note: None,
            estimated_loss: Some(0.05),
            retry_rounds: Some(3),
            expected_misses: Some(0.25),
        }),
    )
}

/// A `Write` whose bytes tests can read while something else writes.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub(super) fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after
/// `timeout`.
pub(super) async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request received by [`HttpTarget`].
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request was complete.
    pub at: Instant,
}

impl Request {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One answer of [`HttpTarget`].
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// `status` with the body `status <status>`.
    pub(super) fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: format!("status {status}"),
        }
    }

    pub(super) fn with_body(mut self, content_type: &str, body: &str) -> Reply {
        self.headers = vec![("content-type".into(), content_type.into())];
        self.body = body.to_string();
        self
    }

    pub(super) fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1 answering the n-th request with the
/// n-th answer of its script (the last one repeats), recording requests.
#[derive(Debug)]
pub(super) struct HttpTarget {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpTarget {
    pub(super) async fn start(script: Vec<u16>) -> HttpTarget {
        Self::start_replies(script.into_iter().map(Reply::status).collect()).await
    }

    pub(super) async fn start_replies(script: Vec<Reply>) -> HttpTarget {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let Some(request) = read_request(&mut conn).await else {
                    continue;
                };
                let reply = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(request);
                    script
                        .get(seen.len() - 1)
                        .or(script.last())
                        .cloned()
                        .unwrap_or_else(|| Reply::status(200))
                };
                let mut response = format!(
                    "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                    reply.status,
                    reply.body.len()
                );
                for (name, value) in &reply.headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(&reply.body);
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        });
        HttpTarget {
            url,
            requests,
            task,
        }
    }

    pub(super) fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

// ---------------------------------------------------------------------------
// The log line.

fn fixed_port(kind: &str) -> PortEvent {
    port_event(
        "web-1",
        6379,
        "open",
        kind,
        "2026-11-29T11:55:00.000Z",
        "2026-11-29T12:00:00.000Z",
    )
}

#[test]
fn log_line_of_an_unexpected_open_port() {
    let p = fixed_port("unexpected_port_open");
    let e = Envelope::new(
        "x".into(),
        "palisade://s".into(),
        "2026-11-29T12:00:00.000Z".into(),
        EventData::UnexpectedPortOpen(p),
    );
    assert_eq!(
        human_line(&e),
        "2026-11-29T12:00:00.000Z HIGH unexpected_port_open web-1 198.18.0.2:6379 open \
         (first seen 2026-11-29T11:55:00.000Z, confirmed 2026-11-29T12:00:00.000Z, \
         incident web-1-6379-2026-11-29T11:55:00.000Z)"
    );
}

#[test]
fn log_line_of_an_expected_port_down_on_ipv6() {
    let mut p = fixed_port("expected_port_down");
    p.host = "2001:db8::2".into();
    p.port = 22;
    p.state = Some("filtered".into());
    p.incident_id = "web-1-22-1".into();
    let e = Envelope::new(
        "x".into(),
        "palisade://s".into(),
        "2026-11-29T12:00:00.000Z".into(),
        EventData::ExpectedPortDown(p),
    );
    assert_eq!(
        human_line(&e),
        "2026-11-29T12:00:00.000Z NORMAL expected_port_down web-1 [2001:db8::2]:22 filtered \
         (first seen 2026-11-29T11:55:00.000Z, confirmed 2026-11-29T12:00:00.000Z, incident web-1-22-1)"
    );
}

#[test]
fn log_line_of_resolutions_and_scans() {
    let mut p = fixed_port("unexpected_port_open");
    p.state = Some("closed".into());
    p.resolved_at = Some("2026-11-29T13:00:00.000Z".into());
    p.reason = Some("observed".into());
    p.incident_id = "web-1-6379-1".into();
    let e = Envelope::new(
        "x".into(),
        "palisade://s".into(),
        "2026-11-29T13:00:00.000Z".into(),
        EventData::PortResolved(p),
    );
    assert_eq!(
        human_line(&e),
        "2026-11-29T13:00:00.000Z RESOLVED port_resolved web-1 198.18.0.2:6379 closed \
         (unexpected_port_open since 2026-11-29T11:55:00.000Z, resolved 2026-11-29T13:00:00.000Z, \
         observed, incident web-1-6379-1)"
    );
    assert_eq!(
        human_line(&monitor_resolved("web-1", "2026-11-29T13:00:00.000Z")),
        "2026-11-29T13:00:00.000Z RESOLVED monitor_resolved web-1 198.18.0.2: \
         all ports back to their expected states"
    );
    assert_eq!(
        human_line(&scan("web-1", "2026-11-29T13:00:00.000Z")),
        "2026-11-29T13:00:00.000Z SCAN web-1 198.18.0.2 full conclusive, 198.18.0.2 reachable 2 open: 22,443"
    );
    let mut s = scan("db-1", "t");
    if let EventData::Scan(s) = &mut s.data {
        s.conclusive = false;
        s.reachable = false;
        s.addresses = vec![crate::schema::AddressReport {
            address: "198.18.0.9".into(),
            reachable: false,
            open_ports: String::new(),
            open_count: 0,
        }];
        s.host = "db.internal".into();
        s.note = Some("3 send errors".into());
    }
    assert_eq!(
        human_line(&s),
        "t SCAN db-1 db.internal full inconclusive, 198.18.0.9 unreachable 0 open (3 send errors)"
    );
}

#[test]
fn log_line_is_one_line_whatever_the_input() {
    let mut p = fixed_port("unexpected_port_open");
    p.monitor = "evil\nmonitor\r\x1b[31m".into();
    p.state = None;
    p.incident_id = String::new();
    let e = Envelope::new(
        "x".into(),
        "s".into(),
        "now\n".into(),
        EventData::UnexpectedPortOpen(p),
    );
    let line = human_line(&e);
    assert!(
        !line.contains('\n') && !line.contains('\r') && !line.contains('\x1b'),
        "{line:?}"
    );
    assert!(
        line.contains(r"evil\nmonitor\r\u{1b}[31m 198.18.0.2:6379 - "),
        "{line:?}"
    );
    assert!(line.ends_with("incident -)"), "{line:?}");
}

#[tokio::test]
async fn log_dispatcher_writes_one_line_per_event() {
    let buf = SharedBuf::default();
    let log = LogDispatcher::to_writer(Box::new(buf.clone()));
    let a = opened("web-1", 6379);
    let b = scan("web-1", "t");
    assert_eq!(log.dispatch(&a).await.unwrap(), Dispatched::Delivered);
    assert_eq!(log.dispatch(&b).await.unwrap(), Dispatched::Delivered);
    assert_eq!(buf.lines(), vec![human_line(&a), human_line(&b)]);
    assert_eq!(log.name(), "log");
}

// ---------------------------------------------------------------------------
// Dispatcher specs.

#[test]
fn dispatch_specs_parse() {
    assert_eq!("log".parse::<DispatchSpec>().unwrap(), DispatchSpec::Log);
    assert_eq!(
        "webhook=http://127.0.0.1:8080/x"
            .parse::<DispatchSpec>()
            .unwrap(),
        DispatchSpec::Webhook("http://127.0.0.1:8080/x".into())
    );
    assert_eq!(
        " alertmanager = https://am.example:9093 "
            .parse::<DispatchSpec>()
            .unwrap(),
        DispatchSpec::Alertmanager("https://am.example:9093".into())
    );
    assert_eq!(
        "slack".parse::<DispatchSpec>().unwrap(),
        DispatchSpec::Slack(Secret::Env(SLACK_URL_ENV.into()))
    );
    assert_eq!(
        "slack=@/etc/palisade/slack.url"
            .parse::<DispatchSpec>()
            .unwrap(),
        DispatchSpec::Slack(Secret::File("/etc/palisade/slack.url".into()))
    );
    assert_eq!(
        "pagerduty=env:PD_KEY,url=http://127.0.0.1:9/v2/enqueue"
            .parse::<DispatchSpec>()
            .unwrap(),
        DispatchSpec::PagerDuty {
            key: Secret::Env("PD_KEY".into()),
            url: "http://127.0.0.1:9/v2/enqueue".into()
        }
    );
    assert_eq!(
        "pagerduty,url=http://h/x".parse::<DispatchSpec>().unwrap(),
        DispatchSpec::PagerDuty {
            key: Secret::Env(PAGERDUTY_KEY_ENV.into()),
            url: "http://h/x".into()
        }
    );
    let smtp = "smtp=mail.example.org,from=Palisade <palisade@example.org>,to=ops@example.org,to=sec@example.org,credentials=/etc/palisade/smtp.cred"
        .parse::<DispatchSpec>()
        .unwrap();
    let DispatchSpec::Smtp(spec) = &smtp else {
        panic!("{smtp:?}")
    };
    assert_eq!(
        (spec.host.as_str(), spec.port, spec.tls),
        ("mail.example.org", 587, SmtpTls::StartTls)
    );
    assert_eq!(spec.to, ["ops@example.org", "sec@example.org"]);
    assert_eq!(
        spec.credentials,
        Some(Secret::File("/etc/palisade/smtp.cred".into()))
    );
    let smtps = "smtp=[2001:db8::25],from=a@b.example,to=c@d.example,tls=tls"
        .parse::<DispatchSpec>()
        .unwrap();
    assert!(
        matches!(&smtps, DispatchSpec::Smtp(s) if s.host == "2001:db8::25" && s.port == 465),
        "{smtps:?}"
    );
    for spec in [
        DispatchSpec::Log,
        DispatchSpec::Webhook("http://h/".into()),
        DispatchSpec::Alertmanager("http://h:9093".into()),
        DispatchSpec::Slack(Secret::File("/s".into())),
        DispatchSpec::PagerDuty {
            key: Secret::File("/k".into()),
            url: DEFAULT_PAGERDUTY_URL.into(),
        },
        DispatchSpec::PagerDuty {
            key: Secret::Env("K".into()),
            url: "http://127.0.0.1:1/".into(),
        },
        smtp,
        smtps,
    ] {
        assert_eq!(spec.to_string().parse::<DispatchSpec>().unwrap(), spec);
    }
    // A secret given on the command line is never shown.
    let literal = "slack=https://hooks.slack.com/services/T0/B0/SECRET"
        .parse::<DispatchSpec>()
        .unwrap();
    assert!(!literal.to_string().contains("SECRET"), "{literal}");
    assert!(!format!("{literal:?}").contains("SECRET"), "{literal:?}");
}

#[test]
fn bad_dispatch_specs_say_what_is_expected() {
    let err = |s: &str| s.parse::<DispatchSpec>().unwrap_err().to_string();
    assert!(err("teams").contains("expected `log`, `webhook=URL`, `alertmanager=URL`, `slack"));
    assert!(err("slack=ftp://h/").contains("only http:// and https://"));
    assert!(err("pagerduty=k,region=eu").contains("unknown option"));
    assert!(err("smtp=mail.example").contains("from=ADDRESS is missing"));
    assert!(err("smtp=mail.example,from=a@b.example").contains("to=ADDRESS is missing"));
    assert!(err("smtp=mail.example,from=nobody,to=c@d.example").contains("bad address"));
    assert!(err("smtp=mail.example:0,from=a@b.example,to=c@d.example").contains("bad port"));
    assert!(
        err("smtp=h,from=a@b.example,to=c@d.example,tls=none,credentials=/c")
            .contains("never sent without TLS")
    );
    assert!(err("log=x").contains("unknown dispatcher"));
    assert!(err("").contains("unknown dispatcher"));
    assert!(err("webhook").contains("needs a URL"));
    assert!(err("alertmanager=").contains("needs a URL"));
    assert!(err("webhook=ftp://h/").contains("only http:// and https://"));
    assert!(err("webhook=not a url").contains("invalid URL"));
}

#[test]
fn alertmanager_endpoint_is_derived_from_the_base_url() {
    let http = HttpOptions::default();
    let endpoint = |base: &str| {
        AlertmanagerDispatcher::new(base, &http)
            .unwrap()
            .endpoint()
            .to_string()
    };
    assert_eq!(
        endpoint("http://127.0.0.1:9093"),
        "http://127.0.0.1:9093/api/v2/alerts"
    );
    assert_eq!(
        endpoint("http://127.0.0.1:9093/"),
        "http://127.0.0.1:9093/api/v2/alerts"
    );
    assert_eq!(
        endpoint("https://ops.example/alertmanager"),
        "https://ops.example/alertmanager/api/v2/alerts"
    );
    assert_eq!(
        endpoint("http://h:9093/api/v2/alerts"),
        "http://h:9093/api/v2/alerts"
    );
}

// ---------------------------------------------------------------------------
// Backoff and decoding.

#[test]
fn backoff_doubles_up_to_its_cap() {
    let b = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };
    let secs: Vec<u64> = (1..=11).map(|n| b.delay(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    assert_eq!(b.delay(0), Duration::from_secs(1));
    assert_eq!(b.delay(-5), Duration::from_secs(1));
    assert_eq!(b.delay(i64::MAX), Duration::from_secs(300));
    let huge = Backoff {
        initial: Duration::MAX,
        max: Duration::from_secs(7),
    };
    assert_eq!(huge.delay(40), Duration::from_secs(7));
}

#[test]
fn messages_decode_by_content_type_or_by_sniffing() {
    let e = opened("web-1", 6379);
    let msgpack = schema::encode(&e, PayloadFormat::MsgPack).unwrap();
    let json = schema::encode(&e, PayloadFormat::Json).unwrap();
    assert_eq!(
        decode_message(Some("application/msgpack"), &msgpack).unwrap(),
        e
    );
    assert_eq!(
        decode_message(Some("application/json; charset=utf-8"), &json).unwrap(),
        e
    );
    assert_eq!(decode_message(None, &msgpack).unwrap(), e);
    assert_eq!(decode_message(None, &json).unwrap(), e);
    assert_eq!(decode_message(Some(""), &json).unwrap(), e);
    assert!(matches!(
        decode_message(Some("text/plain"), &json),
        Err(DecodeError::ContentType(ct)) if ct == "text/plain"
    ));
    assert!(matches!(
        decode_message(Some("application/json"), &msgpack),
        Err(DecodeError::Schema(_))
    ));
    assert!(matches!(
        decode_message(Some("application/msgpack"), b"\xc1garbage"),
        Err(DecodeError::Schema(_))
    ));
    assert!(decode_message(None, b"").is_err());
}

// ---------------------------------------------------------------------------
// Alertmanager alerts.

#[test]
fn an_incident_maps_to_a_firing_alert() {
    let e = opened("web-1", 6379);
    let EventData::UnexpectedPortOpen(p) = &e.data else {
        unreachable!()
    };
    let alert = alert_for(&e, "2036-01-01T00:00:00Z", Some("http://dash/m/{monitor}")).unwrap();
    let labels: Vec<(&str, &str)> = alert
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("alertname", "PalisadeUnexpectedPortOpen"),
            ("instance", "198.18.0.2:6379"),
            ("monitor", "web-1"),
            ("port", "6379"),
            ("severity", "high"),
        ]
    );
    assert_eq!(alert.starts_at, p.first_seen);
    assert_eq!(alert.ends_at.as_deref(), Some("2036-01-01T00:00:00Z"));
    assert_eq!(alert.annotations["incident_id"], p.incident_id);
    assert_eq!(
        alert.annotations["summary"],
        "Unexpected port open 6379/tcp on web-1 (198.18.0.2)"
    );
    assert_eq!(alert.annotations["dashboard"], "http://dash/m/web-1");
    assert!(alert.annotations["description"].contains("Detected: open."));
    let json = serde_json::to_value(&alert).unwrap();
    assert_eq!(json["generatorURL"], "http://dash/m/web-1");
    assert_eq!(json["startsAt"], p.first_seen.as_str());
    assert_eq!(json["endsAt"], "2036-01-01T00:00:00Z");

    let mut d = down("db-1", 5432);
    if let EventData::ExpectedPortDown(p) = &mut d.data {
        p.address = "2001:2::5".into();
    }
    let alert = alert_for(&d, "later", None).unwrap();
    assert_eq!(alert.labels["alertname"], "PalisadeExpectedPortDown");
    assert_eq!(alert.labels["instance"], "[2001:2::5]:5432");
    assert_eq!(alert.labels["severity"], "normal");
    assert!(!alert.labels.contains_key("kind"));
    assert!(
        serde_json::to_value(&alert)
            .unwrap()
            .get("generatorURL")
            .is_none()
    );
}

#[test]
fn a_resolution_carries_the_same_labels_and_ends_the_alert() {
    for incident in [opened("web-1", 6379), down("web-1", 22)] {
        let at = ago(1);
        let r = resolved(&incident, &at);
        let firing = alert_for(&incident, "later", None).unwrap();
        let resolving = alert_for(&r, "later", None).unwrap();
        // Same labels although the engine marks resolutions `normal`.
        assert_eq!(firing.labels, resolving.labels);
        assert_eq!(resolving.ends_at.as_deref(), Some(at.as_str()));
        assert_eq!(resolving.starts_at, firing.starts_at);
        assert!(resolving.annotations["description"].contains("Resolved at"));
    }
}

#[test]
fn roles_say_which_events_fire_and_which_end_alerts() {
    let o = opened("web-1", 1);
    let key = o.data.port_event().unwrap().incident_id.clone();
    assert_eq!(alert_role(&o.data), AlertRole::Fires { key: key.clone() });
    let r = resolved(&o, "t");
    assert_eq!(
        alert_role(&r.data),
        AlertRole::Resolves {
            key,
            fired_by: "unexpected_port_open".into()
        }
    );
    assert!(is_resolution(&r) && !is_resolution(&o));
    let m = monitor_resolved("web-1", "t");
    assert_eq!(alert_role(&m.data), AlertRole::ResolvesMonitor);
    assert!(is_resolution(&m));
    assert_eq!(alert_role(&scan("web-1", "t").data), AlertRole::None);
    // The address: the event's address, else the host.
    let mut s = scan("web-1", "t");
    if let EventData::Scan(s) = &mut s.data {
        s.host = "web.example".into();
    }
    assert_eq!(event_address(&s.data), "web.example");
    assert_eq!(event_address(&o.data), "198.18.0.2");
}

#[test]
fn non_incidents_are_no_alerts() {
    assert!(alert_for(&monitor_resolved("web-1", "t"), "x", None).is_none());
    assert!(alert_for(&scan("web-1", "t"), "x", None).is_none());
    assert_eq!(
        alertname("unexpected_port_open"),
        "PalisadeUnexpectedPortOpen"
    );
    assert_eq!(alertname("expected_port_down"), "PalisadeExpectedPortDown");
    assert_eq!(alertname("host_unreachable"), "PalisadeHostUnreachable");
}

#[test]
fn escape_keeps_event_text_on_one_inert_line() {
    assert_eq!(escape("web-1"), "web-1");
    assert!(matches!(escape("web-1"), std::borrow::Cow::Borrowed(_)));
    assert_eq!(
        escape("a\nfake ERROR line\r\x1b[2J\u{202e}x\\"),
        r"a\nfake ERROR line\r\u{1b}[2J\u{202e}x\\"
    );
    assert_eq!(escape("\u{85}\t"), r"\u{85}\t");
}

// ---------------------------------------------------------------------------
// The webhook, against a local HTTP server.

#[tokio::test]
async fn webhook_posts_the_json_envelope_and_reports_failures() {
    let target = HttpTarget::start(vec![204, 503]).await;
    let hook = WebhookDispatcher::new(&target.url, &HttpOptions::default()).unwrap();
    let e = opened("web-1", 6379);
    assert_eq!(hook.dispatch(&e).await.unwrap(), Dispatched::Delivered);
    let err = hook.dispatch(&e).await.unwrap_err();
    assert!(
        matches!(&err, DispatchError::Status { status: 503, body, .. } if body == "status 503"),
        "{err}"
    );
    assert!(err.to_string().contains("answered 503"), "{err}");
    let requests = target.requests();
    assert_eq!(requests.len(), 2);
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook"));
    assert_eq!(
        r.header("content-type"),
        Some("application/cloudevents+json; charset=utf-8")
    );
    assert_eq!(r.header("webhook-id"), Some(e.id.as_str()));
    assert_eq!(schema::decode(&r.body, PayloadFormat::Json).unwrap(), e);
}

#[tokio::test]
async fn webhook_to_a_closed_port_is_a_dispatch_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook = WebhookDispatcher::new(
        &format!("http://127.0.0.1:{port}/"),
        &HttpOptions::default(),
    )
    .unwrap();
    let err = hook.dispatch(&opened("web-1", 1)).await.unwrap_err();
    assert!(matches!(err, DispatchError::Http { .. }), "{err}");
}

#[test]
fn host_incidents_fire_and_their_resolutions_end_them() {
    let samples = crate::schema::tests::samples();
    let by_kind = |k: &str| samples.iter().find(|e| e.kind() == k).unwrap().clone();
    let down = by_kind("host_unreachable");
    let back = by_kind("host_reachable");
    let id = down.data.host_event().unwrap().incident_id.clone();
    let back = {
        let mut b = back;
        if let EventData::HostReachable(h) = &mut b.data {
            h.incident_id = id.clone();
        }
        b
    };
    assert_eq!(alert_role(&down.data), AlertRole::Fires { key: id.clone() });
    assert_eq!(
        alert_role(&back.data),
        AlertRole::Resolves {
            key: id,
            fired_by: "host_unreachable".into()
        }
    );
    let firing = alert_for(&down, "later", None).unwrap();
    assert_eq!(firing.labels["alertname"], "PalisadeHostUnreachable");
    assert_eq!(firing.labels["instance"], "198.18.0.2");
    assert_eq!(firing.labels["severity"], "critical");
    assert!(!firing.labels.contains_key("port"));
    assert_eq!(
        firing.annotations["incident_id"],
        "web-1-198.18.0.2-host_unreachable-1"
    );
    assert!(
        firing.annotations["description"].contains("198.18.0.2 answers nothing"),
        "{:?}",
        firing.annotations
    );
    assert_eq!(firing.starts_at, "2026-01-02T03:04:05Z");
    let resolving = alert_for(&back, "later", None).unwrap();
    assert_eq!(firing.labels, resolving.labels);
    assert_eq!(resolving.ends_at.as_deref(), Some("2026-01-02T04:00:00Z"));
    // The scanner's own health incidents are alerts too.
    let failed = alert_for(&by_kind("scan_failed"), "later", None).unwrap();
    assert_eq!(failed.labels["alertname"], "PalisadeScanFailed");
    assert_eq!(failed.labels["severity"], "critical");
    let flood = by_kind("host_answers_all_ports");
    assert_eq!(
        alert_for(&flood, "later", None).unwrap().labels["alertname"],
        "PalisadeHostAnswersAllPorts"
    );
    assert_eq!(alert_role(&by_kind("ports_changed").data), AlertRole::None);
}

// ---------------------------------------------------------------------------
// The notice of Slack, PagerDuty and email.

#[test]
fn a_notice_tells_the_incident_and_its_end_alike() {
    let incident = opened("web-1", 6379);
    let n = Notice::of(&incident).unwrap();
    let p = incident.data.port_event().unwrap();
    assert!(!n.resolved);
    assert_eq!(n.incident_id, p.incident_id);
    assert_eq!(n.kind, "unexpected_port_open");
    assert_eq!(n.severity, Some(Severity::High));
    assert_eq!(
        n.summary,
        "Unexpected port open 6379/tcp on web-1 (198.18.0.2)"
    );
    let labels: Vec<&str> = n.facts.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        labels,
        [
            "Monitor",
            "Host",
            "Port",
            "Kind",
            "Severity",
            "State",
            "First seen",
            "Confirmed",
            "Incident"
        ]
    );
    assert_eq!(n.fact("First seen"), Some(p.first_seen.as_str()));

    let end = Notice::of(&resolved(&incident, "2026-12-01T10:00:00Z")).unwrap();
    assert!(end.resolved);
    assert_eq!(end.incident_id, n.incident_id);
    assert_eq!(end.kind, n.kind, "the incident's kind, not port_resolved");
    assert_eq!(end.summary, n.summary);
    assert_eq!(end.severity, None);
    assert_eq!(end.fact("Resolved"), Some("2026-12-01T10:00:00Z"));
    assert_eq!(end.fact("Reason"), Some("observed"));
    assert_eq!(end.incident_token(), n.incident_token());

    assert_eq!(Notice::of(&monitor_resolved("web-1", &ago(1))), None);
    assert_eq!(Notice::of(&scan("web-1", &ago(1))), None);
}

/// A `ports_changed` of `total` events on `changes` addresses.
pub(super) fn ports_changed(total: u32, changes: usize) -> Envelope {
    let mut e = crate::schema::tests::samples()
        .into_iter()
        .find(|e| e.kind() == "ports_changed")
        .unwrap();
    if let EventData::PortsChanged(p) = &mut e.data {
        p.total = total;
        p.changes = (0..changes)
            .map(|i| crate::schema::PortsChange {
                address: format!("198.18.0.{}", i % 250 + 2),
                kind: "unexpected_port_open".into(),
                ports: "8000-8299".into(),
                count: 300,
            })
            .collect();
    }
    e
}

#[test]
fn a_ports_changed_summary_is_a_notice_of_no_incident() {
    let n = Notice::of(&ports_changed(300, 1)).unwrap();
    assert!(!n.incident && !n.resolved);
    assert_eq!(n.summary, "300 port changes on web-1 (50 sent one by one)");
    assert_eq!(n.severity, Some(Severity::High));
    assert_eq!(
        n.fact("Change"),
        Some("198.18.0.2 unexpected_port_open 8000-8299 (300)")
    );
    // Many addresses: the first 20, then a count.
    let many = Notice::of(&ports_changed(9000, 30)).unwrap();
    let changes: Vec<&str> = many
        .facts
        .iter()
        .filter(|(l, _)| *l == "Change")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(changes.len(), 21);
    assert_eq!(changes[20], "… and 10 more");
    let message = slack_message(&many, None);
    assert!(message["blocks"].as_array().unwrap().len() <= 50);
}

#[test]
fn a_notice_of_a_host_event_has_its_details() {
    let samples = crate::schema::tests::samples();
    let down = samples
        .iter()
        .find(|e| e.kind() == "host_unreachable")
        .unwrap();
    let n = Notice::of(down).unwrap();
    assert_eq!(n.severity, Some(Severity::Critical));
    assert_eq!(n.port, None);
    assert!(
        n.fact("Details").unwrap().contains("answers nothing"),
        "{:?}",
        n.facts
    );
    assert_eq!(n.summary, "Host unreachable on web-1 (198.18.0.2)");
}

#[test]
fn notice_text_is_bounded_and_inert() {
    let mut e = opened("web-1", 6379);
    if let EventData::UnexpectedPortOpen(p) = &mut e.data {
        p.monitor = format!(
            "web-1\r\nBcc: evil@example.org\u{1b}[31m{}",
            "x".repeat(100_000)
        );
    }
    let n = Notice::of(&e).unwrap();
    for (label, value) in &n.facts {
        assert!(value.chars().count() <= 301, "{label}: {}", value.len());
        assert!(!value.chars().any(char::is_control), "{label}: {value:?}");
    }
    assert!(n.summary.chars().count() < 250, "{}", n.summary);
    assert!(!n.summary.chars().any(char::is_control));
    // The email's headers stay as they are: no injected Bcc.
    let from: lettre::message::Mailbox = "palisade@example.org".parse().unwrap();
    let to: lettre::message::Mailbox = "ops@example.org".parse().unwrap();
    let mail = String::from_utf8(email_for(&n, &from, &[to], None).unwrap().formatted()).unwrap();
    let head = mail.split_once("\r\n\r\n").unwrap().0;
    assert!(
        !head.lines().any(|l| l.to_lowercase().starts_with("bcc:")),
        "{head}"
    );
    // PagerDuty's limits hold whatever the input.
    let long_id = opened(&"m".repeat(400), 1);
    let event = pagerduty_event(&Notice::of(&long_id).unwrap(), "k", None);
    assert!(event["dedup_key"].as_str().unwrap().len() <= 255);
    assert!(
        event["payload"]["summary"]
            .as_str()
            .unwrap()
            .chars()
            .count()
            <= 1024
    );
}
