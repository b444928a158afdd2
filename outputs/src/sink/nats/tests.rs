use super::*;
use crate::nats::{NatsAuth, NatsTls};
use crate::schema::{PayloadFormat, decode};
use crate::sink::test_events;
use crate::testing::NatsServer;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures::StreamExt;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

fn config(url: &str) -> NatsSinkOptions {
    NatsSinkOptions {
        nats: NatsOptions {
            urls: vec![url.to_string()],
            connect_timeout: Duration::from_secs(5),
            ..NatsOptions::default()
        },
        ..NatsSinkOptions::default()
    }
}

/// `config(url)`, authenticating with `auth`.
fn with_auth(url: &str, auth: NatsAuth) -> NatsSinkOptions {
    let mut cfg = config(url);
    cfg.nats.auth = auth;
    cfg
}

/// `config(url)` with these TLS settings.
fn with_tls(url: &str, tls: NatsTls) -> NatsSinkOptions {
    let mut cfg = config(url);
    cfg.nats.tls = tls;
    cfg
}

/// Reads every message of `stream` back through an ephemeral pull consumer.
async fn read_back(
    client: &async_nats::Client,
    stream: &str,
    expect: usize,
) -> Vec<async_nats::Message> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < expect && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
            Ok(Some(Ok(m))) => out.push(m.message),
            Ok(Some(Err(e))) => panic!("consumer error: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

async fn message_count(sink: &NatsSink, stream: &str) -> u64 {
    let mut s = sink.jetstream().get_stream(stream).await.unwrap();
    s.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_on_subjects_with_headers() {
    let server = NatsServer::start();
    for format in [PayloadFormat::MsgPack, PayloadFormat::Json] {
        let stream = match format {
            PayloadFormat::MsgPack => "PAL_MSGPACK",
            PayloadFormat::Json => "PAL_JSON",
        };
        let prefix = match format {
            PayloadFormat::MsgPack => "palisade",
            PayloadFormat::Json => "acme.pal",
        };
        let mut sink = NatsSink::connect(NatsSinkOptions {
            stream: stream.into(),
            subject_prefix: prefix.into(),
            format,
            ..config(&server.url)
        })
        .await
        .unwrap();
        assert_eq!(sink.name(), format!("nats:{stream}"));
        let events = test_events(10, "a");
        assert_eq!(sink.publish(&events).await.unwrap(), 10);

        // The stream was created as specified, with the default settings.
        let mut s = sink.jetstream().get_stream(stream).await.unwrap();
        let info = s.info().await.unwrap();
        assert_eq!(info.config.subjects, vec![format!("{prefix}.>")]);
        assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
        assert_eq!(info.config.storage, stream::StorageType::File);
        assert_eq!(info.config.max_age, Duration::from_secs(400 * 86400));
        assert_eq!(info.config.max_bytes, -1);
        assert_eq!(info.config.num_replicas.max(1), 1);
        assert!(stream_differences(&info.config, &StreamSettings::default()).is_empty());

        let got = read_back(sink.client(), stream, events.len()).await;
        assert_eq!(got.len(), events.len());
        for (m, e) in got.iter().zip(&events) {
            assert_eq!(m.subject.as_str(), e.nats_subject(prefix));
            let headers = m.headers.as_ref().expect("headers");
            assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str(), e.id);
            assert_eq!(
                headers.get("Content-Type").unwrap().as_str(),
                format.content_type()
            );
            assert_eq!(&decode(&m.payload, format).unwrap(), e);
        }
        // Both subject families are used.
        assert!(got.iter().any(|m| m.subject.contains(".scans.")));
        assert!(
            got.iter()
                .any(|m| m.subject.contains(".events.unexpected_port_open."))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_is_deduplicated() {
    let server = NatsServer::start();
    let mut sink = NatsSink::connect(config(&server.url)).await.unwrap();
    let events = test_events(500, "d");
    assert_eq!(sink.publish(&events).await.unwrap(), 500);
    assert_eq!(message_count(&sink, "PALISADE").await, 500);
    // The same ids again (as after a crash before marking delivery): acked, not stored.
    assert_eq!(sink.publish(&events).await.unwrap(), 500);
    assert_eq!(sink.publish(&events[100..200]).await.unwrap(), 100);
    assert_eq!(message_count(&sink, "PALISADE").await, 500);
    // An existing stream is reused on reconnect.
    let mut again = NatsSink::connect(config(&server.url)).await.unwrap();
    assert_eq!(again.publish(&events[..10]).await.unwrap(), 10);
    assert_eq!(message_count(&again, "PALISADE").await, 500);
    assert_eq!(sink.publish(&[]).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batch_is_pipelined() {
    let server = NatsServer::start();
    let mut sink = NatsSink::connect(config(&server.url)).await.unwrap();
    let events = test_events(5000, "big");
    let started = Instant::now();
    assert_eq!(sink.publish(&events).await.unwrap(), 5000);
    let elapsed = started.elapsed();
    assert_eq!(message_count(&sink, "PALISADE").await, 5000);
    // Awaiting each ack before the next send would take far longer in debug builds too.
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_mid_batch_loses_nothing_and_duplicates_nothing() {
    outage_mid_batch(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_mid_batch_loses_nothing_and_duplicates_nothing() {
    outage_mid_batch(true).await;
}

/// Publishes 40 000 events in chunks; the server is stopped (`crash`: killed)
/// while a 20 000 event chunk is in flight, then started again.
async fn outage_mid_batch(crash: bool) {
    let mut server = Some(NatsServer::start());
    let url = server.as_ref().unwrap().url.clone();
    let mut sink = NatsSink::connect(config(&url)).await.unwrap();
    let total = 40_000;
    let events = test_events(total, "o");
    let mut done = 0usize;
    let mut failures = Vec::new();
    let mut stopped = false;
    let mut restarted = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while done < total {
        assert!(
            Instant::now() < deadline,
            "not delivered in time: {done}/{total}"
        );
        let result = if !stopped && done >= 4000 {
            // A large batch, and the server stops while it is in flight.
            stopped = true;
            let chunk = &events[done..(done + 20_000).min(total)];
            let mut srv = server.take().unwrap();
            let stopper = tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(20));
                if crash {
                    srv.kill();
                } else {
                    srv.stop();
                }
                srv
            });
            let started = Instant::now();
            let r = sink.publish(chunk).await;
            assert!(started.elapsed() < Duration::from_secs(15), "publish hung");
            server = Some(stopper.await.unwrap());
            r.map(|n| (n, chunk.len()))
        } else {
            let chunk = &events[done..(done + 2000).min(total)];
            sink.publish(chunk).await.map(|n| (n, chunk.len()))
        };
        let failed = match result {
            Ok((n, len)) => {
                done += n;
                if n < len {
                    failures.push(format!("partial {n}/{len}"));
                }
                n < len
            }
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains('\n'), "{text}");
                assert!(text.contains(&url), "{text}");
                failures.push(text);
                true
            }
        };
        if failed && !restarted {
            // Still down: another attempt fails too, without hanging.
            let r = sink.publish(&events[done..done + 1]).await;
            assert!(r.is_err(), "{r:?}");
            let mut srv = server.take().unwrap();
            server = Some(
                tokio::task::spawn_blocking(move || {
                    srv.restart();
                    srv
                })
                .await
                .unwrap(),
            );
            restarted = true;
        } else if failed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(restarted, "the outage never hit a publish: {failures:?}");
    eprintln!(
        "{} failed attempts while down; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(2)]
    );

    // Every event exactly once.
    assert_eq!(message_count(&sink, "PALISADE").await, total as u64);
    let got = read_back(sink.client(), "PALISADE", total).await;
    let ids: HashSet<String> = got
        .iter()
        .map(|m| {
            m.headers
                .as_ref()
                .unwrap()
                .get("Nats-Msg-Id")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got.len(), total);
    assert_eq!(ids.len(), total);
    assert!(events.iter().all(|e| ids.contains(&e.id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_while_down_fails_fast() {
    let mut server = NatsServer::start();
    let mut sink = NatsSink::connect(config(&server.url)).await.unwrap();
    assert_eq!(sink.publish(&test_events(3, "x")).await.unwrap(), 3);
    tokio::task::block_in_place(|| server.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let err = sink.publish(&test_events(3, "y")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string()
            .starts_with(&format!("NATS at {}: ", server.url)),
        "{err}"
    );
    // Back up: the client reconnects by itself.
    tokio::task::block_in_place(|| server.restart());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sink.publish(&test_events(3, "y")).await {
            Ok(3) => break,
            other => {
                assert!(Instant::now() < deadline, "no reconnect: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(message_count(&sink, "PALISADE").await, 6);
}

fn assert_one_line_within(err: &SinkError, started: Instant) {
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn wrong_port_is_one_clear_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let err = NatsSink::connect(config(&url)).await.unwrap_err();
    assert_one_line_within(&err, started);
    assert_eq!(
        err.to_string(),
        format!("cannot connect to NATS at {url}: connection refused")
    );
}

#[tokio::test]
async fn several_urls_use_the_live_one() {
    let server = NatsServer::start();
    let dead = format!(
        "nats://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let mut cfg = config(&server.url);
    cfg.nats.urls = vec![dead.clone(), server.url.clone()];
    let mut sink = NatsSink::connect(cfg).await.unwrap();
    assert_eq!(sink.publish(&test_events(2, "m")).await.unwrap(), 2);
}

#[tokio::test]
async fn unreachable_address_times_out() {
    // A listener that never answers the NATS handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    let started = Instant::now();
    let mut cfg = config(&url);
    cfg.nats.connect_timeout = Duration::from_millis(700);
    let err = NatsSink::connect(cfg).await.unwrap_err();
    assert_one_line_within(&err, started);
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot connect to NATS at {url}: ")),
        "{text}"
    );
    assert!(text.contains("timed out"), "{text}");
    drop(listener);
}

#[tokio::test]
async fn wrong_token_is_one_clear_line() {
    let server = NatsServer::start_with_token("s3cret");
    let started = Instant::now();
    let err = NatsSink::connect(with_auth(&server.url, NatsAuth::Token("wrong".into())))
        .await
        .unwrap_err();
    assert_one_line_within(&err, started);
    assert_eq!(
        err.to_string(),
        format!(
            "NATS at {}: authorization violation (check the token)",
            server.url
        )
    );

    let err = NatsSink::connect(config(&server.url)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("authorization violation (the server requires credentials"),
        "{err}"
    );

    let mut sink = NatsSink::connect(with_auth(&server.url, NatsAuth::Token("s3cret".into())))
        .await
        .unwrap();
    assert_eq!(sink.publish(&test_events(2, "t")).await.unwrap(), 2);
}

#[tokio::test]
async fn user_password() {
    let server = NatsServer::start_with_user("alice", "pw");
    let err = NatsSink::connect(with_auth(
        &server.url,
        NatsAuth::UserPassword {
            user: "alice".into(),
            password: "nope".into(),
        },
    ))
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "NATS at {}: authorization violation (check the user and password)",
            server.url
        )
    );
    let mut sink = NatsSink::connect(with_auth(
        &server.url,
        NatsAuth::UserPassword {
            user: "alice".into(),
            password: "pw".into(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(sink.publish(&test_events(1, "u")).await.unwrap(), 1);
}

#[tokio::test]
async fn existing_stream_must_cover_the_prefix() {
    let server = NatsServer::start();
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "OTHER".into(),
        subjects: vec!["foo".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.create_stream(stream::Config {
        name: "WIDE".into(),
        subjects: vec!["acme.*.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let err = NatsSink::connect(NatsSinkOptions {
        stream: "OTHER".into(),
        ..config(&server.url)
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "NATS at {}: stream OTHER exists but its subjects [foo] do not cover palisade.>",
            server.url
        )
    );
    let mut sink = NatsSink::connect(NatsSinkOptions {
        stream: "WIDE".into(),
        subject_prefix: "acme.pal".into(),
        ..config(&server.url)
    })
    .await
    .unwrap();
    assert_eq!(sink.publish(&test_events(2, "w")).await.unwrap(), 2);
}

/// The rules on how credentials and TLS settings combine are
/// `NatsAuth::from_parts`' and `NatsTls::from_parts`' (tested in
/// `crate::nats`); the options that reach the sink are checked again here,
/// and unusable files are found before any connection.
#[tokio::test]
async fn bad_config_is_rejected_before_connecting() {
    let with_nats = |change: fn(&mut NatsOptions)| {
        let mut cfg = NatsSinkOptions::default();
        change(&mut cfg.nats);
        cfg
    };
    let cases: Vec<(NatsSinkOptions, &str, &str)> = vec![
        (
            with_nats(|n| n.urls = vec![]),
            "url",
            "give at least one NATS server URL",
        ),
        (
            NatsSinkOptions {
                subject_prefix: "a.*".into(),
                ..NatsSinkOptions::default()
            },
            "subject_prefix",
            "invalid subject_prefix",
        ),
        (
            NatsSinkOptions {
                subject_prefix: "a..b".into(),
                ..NatsSinkOptions::default()
            },
            "subject_prefix",
            "invalid subject_prefix",
        ),
        (
            NatsSinkOptions {
                stream: "A.B".into(),
                ..NatsSinkOptions::default()
            },
            "stream",
            "invalid stream",
        ),
        (
            with_nats(|n| n.auth = NatsAuth::Token(String::new())),
            "token",
            "`token` must not be empty",
        ),
        (
            with_nats(|n| n.connect_timeout = Duration::ZERO),
            "connect_timeout",
            "connect timeout must be positive",
        ),
        (
            with_nats(|n| n.tls.ca = Some("/nonexistent/ca.pem".into())),
            "tls_ca",
            "cannot read TLS CA file /nonexistent/ca.pem",
        ),
        (
            with_nats(|n| {
                n.tls.client_cert = Some((
                    "/nonexistent/cert.pem".into(),
                    "/nonexistent/key.pem".into(),
                ));
            }),
            "tls_cert",
            "cannot read TLS certificate file /nonexistent/cert.pem",
        ),
        (
            with_nats(|n| n.auth = NatsAuth::CredsFile("/nonexistent/x.creds".into())),
            "creds_file",
            "cannot read NATS credentials file /nonexistent/x.creds",
        ),
        (
            with_nats(|n| n.auth = NatsAuth::NkeySeedFile("/nonexistent/seed.nk".into())),
            "nkey_seed_file",
            "cannot read NKey seed file",
        ),
        (
            with_nats(|n| n.urls = vec!["nats://[::1".into()]),
            "url",
            "invalid NATS server URL",
        ),
    ];
    for (cfg, key, want) in cases {
        let err = NatsSink::connect(cfg).await.unwrap_err();
        assert!(
            matches!(&err, SinkError::NatsConfig(e) if e.key == key),
            "{err} / {key}"
        );
        assert!(err.to_string().contains(want), "{err} / {want}");
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn subject_coverage() {
    assert!(subject_covers("palisade.>", "palisade.>"));
    assert!(subject_covers(">", "palisade.>"));
    assert!(subject_covers("*.>", "palisade.>"));
    assert!(subject_covers("acme.*.>", "acme.pal.>"));
    assert!(!subject_covers("palisade.*", "palisade.>"));
    assert!(!subject_covers("palisade.events.>", "palisade.>"));
    assert!(!subject_covers("other.>", "palisade.>"));
    assert!(!subject_covers("*", "palisade.>"));
    assert!(subject_covers("a.b", "a.b"));
    assert!(!subject_covers("a.b.c", "a.b"));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM
/// files in `dir`: (ca, server cert, server key, client cert, client key).
fn make_pki(dir: &std::path::Path) -> [PathBuf; 5] {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) =
        leaf(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth);
    let files = [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", server_cert),
        ("server-key.pem", server_key),
        ("client.pem", client_cert),
        ("client-key.pem", client_key),
    ];
    files.map(|(name, text)| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    })
}

#[tokio::test]
async fn tls_with_ca_and_client_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let [ca, server_cert, server_key, client_cert, client_key] = make_pki(pki.path());
    let arg = |p: &PathBuf| p.display().to_string();
    let server = NatsServer::start_with_args(
        crate::testing::TestServerAuth::None,
        &[
            "--tls".into(),
            "--tlscert".into(),
            arg(&server_cert),
            "--tlskey".into(),
            arg(&server_key),
            "--tlscacert".into(),
            arg(&ca),
            "--tlsverify".into(),
        ],
    );
    // Mutual TLS: CA plus client certificate.
    let mut sink = NatsSink::connect(with_tls(
        &server.url,
        NatsTls {
            ca: Some(ca.clone()),
            client_cert: Some((client_cert, client_key)),
        },
    ))
    .await
    .unwrap();
    assert_eq!(sink.publish(&test_events(3, "tls")).await.unwrap(), 3);

    // Without the client certificate the server refuses: one line, quickly.
    let started = Instant::now();
    let err = NatsSink::connect(with_tls(
        &server.url,
        NatsTls {
            ca: Some(ca),
            client_cert: None,
        },
    ))
    .await
    .unwrap_err();
    assert_one_line_within(&err, started);
    // nats-server 2.9 answers a missing client certificate with the TLS alert
    // `bad_certificate`, 2.10 and later (Go 1.21+) with `certificate_required`.
    let text = err.to_string();
    let want = |alert: &str| {
        format!(
            "NATS at {}: TLS error: received fatal alert: {alert} \
             (the server may require a client certificate: set tls_cert and tls_key)",
            server.url
        )
    };
    assert!(
        text == want("BadCertificate") || text == want("CertificateRequired"),
        "{text}"
    );

    // Without our CA the server certificate is not trusted.
    let err = NatsSink::connect(config(&server.url.replace("nats://", "tls://")))
        .await
        .unwrap_err();
    let url = server.url.replace("nats://", "tls://");
    assert_eq!(
        err.to_string(),
        format!(
            "NATS at {url}: TLS error: invalid peer certificate: UnknownIssuer \
             (set the CA that signed the server certificate)"
        )
    );
}

#[tokio::test]
async fn nkey_seed_file() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let seed = dir.path().join("user.nk");
    std::fs::write(&seed, format!("{}\n", user.seed().unwrap())).unwrap();
    let server = NatsServer::start_with_args(
        crate::testing::TestServerAuth::None,
        &["-c".into(), conf.display().to_string()],
    );
    let mut sink = NatsSink::connect(with_auth(&server.url, NatsAuth::NkeySeedFile(seed)))
        .await
        .unwrap();
    assert_eq!(sink.publish(&test_events(2, "nk")).await.unwrap(), 2);

    // Another user's seed is refused with one line.
    let other = dir.path().join("other.nk");
    std::fs::write(&other, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let err = NatsSink::connect(with_auth(&server.url, NatsAuth::NkeySeedFile(other)))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "NATS at {}: authorization violation (check the NKey seed file)",
            server.url
        )
    );

    // A file without a seed is a configuration error.
    let junk = dir.path().join("junk.nk");
    std::fs::write(&junk, "hello\n").unwrap();
    let err = NatsSink::connect(with_auth(&server.url, NatsAuth::NkeySeedFile(junk.clone())))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid NATS configuration: no NKey seed (S…) found in {}",
            junk.display()
        )
    );
    // So is a creds file without credentials.
    let err = NatsSink::connect(with_auth(&server.url, NatsAuth::CredsFile(junk)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid NATS configuration: cannot read NATS credentials file"),
        "{err}"
    );
}

#[test]
fn json_is_the_default_format() {
    assert_eq!(NatsSinkOptions::default().format, PayloadFormat::Json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_gets_the_configured_settings() {
    let server = NatsServer::start();
    let settings = StreamSettings {
        max_age: Duration::from_secs(3 * 86400),
        max_bytes: Some(64 << 20),
        replicas: 1,
        storage: StreamStorage::Memory,
    };
    let mut sink = NatsSink::connect(NatsSinkOptions {
        stream: "PAL_SET".into(),
        stream_settings: settings.clone(),
        ..config(&server.url)
    })
    .await
    .unwrap();
    assert_eq!(sink.publish(&test_events(3, "s")).await.unwrap(), 3);
    let mut s = sink.jetstream().get_stream("PAL_SET").await.unwrap();
    let info = s.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(3 * 86400));
    assert_eq!(info.config.max_bytes, 64 << 20);
    assert_eq!(info.config.num_replicas.max(1), 1);
    assert_eq!(info.config.storage, stream::StorageType::Memory);
    assert_eq!(info.config.duplicate_window, DUPLICATE_WINDOW);
    assert!(stream_differences(&info.config, &settings).is_empty());
    assert_eq!(info.state.messages, 3);

    // The existing stream is used as it is when the settings differ: not
    // changed (the sink warns), and still written to.
    let other = StreamSettings::default();
    let mut again = NatsSink::connect(NatsSinkOptions {
        stream: "PAL_SET".into(),
        stream_settings: other.clone(),
        ..config(&server.url)
    })
    .await
    .unwrap();
    assert_eq!(again.publish(&test_events(2, "t")).await.unwrap(), 2);
    let info = s.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(3 * 86400));
    assert_eq!(info.config.storage, stream::StorageType::Memory);
    assert_eq!(info.state.messages, 5);
    assert_eq!(
        stream_differences(&info.config, &other),
        [
            "max_age is 3d, configured 400d",
            "max_bytes is 67108864, configured unlimited",
            "storage is memory, configured file",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_replicas_than_servers_is_a_clear_error() {
    let server = NatsServer::start();
    let err = NatsSink::connect(NatsSinkOptions {
        stream: "PAL_R3".into(),
        stream_settings: StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        },
        ..config(&server.url)
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("cannot create stream PAL_R3"),
        "{err}"
    );
}

#[test]
fn stream_settings_are_validated() {
    let bad = |settings: StreamSettings| {
        NatsSinkOptions {
            stream_settings: settings,
            ..config("nats://127.0.0.1:4222")
        }
        .validate()
        .unwrap_err()
        .key
    };
    let d = StreamSettings::default;
    assert_eq!(bad(StreamSettings { replicas: 0, ..d() }), "replicas");
    assert_eq!(bad(StreamSettings { replicas: 6, ..d() }), "replicas");
    assert_eq!(
        bad(StreamSettings {
            max_bytes: Some(0),
            ..d()
        }),
        "max_bytes"
    );
    assert_eq!(
        bad(StreamSettings {
            max_age: Duration::ZERO,
            ..d()
        }),
        "max_age"
    );
    assert!(config("nats://127.0.0.1:4222").validate().is_ok());
}

#[test]
fn stream_differences_name_each_setting() {
    let wanted = StreamSettings::default();
    let same = wanted.stream_config("S", "p.>");
    assert!(stream_differences(&same, &wanted).is_empty());
    // A 2.9 server reports 0 replicas for a single-server stream.
    let old_server = stream::Config {
        num_replicas: 0,
        ..same.clone()
    };
    assert!(stream_differences(&old_server, &wanted).is_empty());
    let unbounded = stream::Config {
        max_age: Duration::ZERO,
        num_replicas: 3,
        ..same
    };
    assert_eq!(
        stream_differences(&unbounded, &wanted),
        [
            "max_age is unlimited, configured 400d",
            "replicas is 3, configured 1"
        ]
    );
}
