//! The option rules (pure), then `connect` against a real `nats-server`.
//! The sink's own connect tests (TLS, NKey, outages, …) are in
//! `crate::sink::nats`.

use super::*;
use crate::testing::NatsServer;

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

fn p(path: &str) -> Option<PathBuf> {
    Some(PathBuf::from(path))
}

/// `(key, message)` of a rejected setting.
fn rejected<T: std::fmt::Debug>(result: Result<T, NatsOptionError>) -> (&'static str, String) {
    let err = result.expect_err("rejected");
    assert!(!err.message.contains('\n'), "{err}");
    assert_eq!(err.to_string(), err.message);
    (err.key, err.message)
}

#[test]
fn auth_from_parts_builds_each_method() {
    assert_eq!(
        NatsAuth::from_parts(None, None, None, None, None),
        Ok(NatsAuth::None)
    );
    assert_eq!(
        NatsAuth::from_parts(s("t"), None, None, None, None),
        Ok(NatsAuth::Token("t".into()))
    );
    assert_eq!(
        NatsAuth::from_parts(None, s("u"), s("pw"), None, None),
        Ok(NatsAuth::UserPassword {
            user: "u".into(),
            password: "pw".into()
        })
    );
    assert_eq!(
        NatsAuth::from_parts(None, None, None, p("/s.nk"), None),
        Ok(NatsAuth::NkeySeedFile("/s.nk".into()))
    );
    assert_eq!(
        NatsAuth::from_parts(None, None, None, None, p("/a.creds")),
        Ok(NatsAuth::CredsFile("/a.creds".into()))
    );
}

#[test]
fn auth_from_parts_names_the_key_at_fault() {
    let (key, message) = rejected(NatsAuth::from_parts(s("t"), s("u"), s("p"), None, None));
    assert_eq!(key, "user");
    assert_eq!(
        message,
        "`user` and `token` both set: choose one of `token`, `user`/`password`, \
         `nkey_seed_file` or `creds_file`"
    );
    let (key, message) = rejected(NatsAuth::from_parts(
        None,
        None,
        None,
        p("/s.nk"),
        p("/a.creds"),
    ));
    assert_eq!(key, "creds_file");
    assert!(
        message.starts_with("`creds_file` and `nkey_seed_file` both set"),
        "{message}"
    );
    assert_eq!(
        rejected(NatsAuth::from_parts(None, s("u"), None, None, None)),
        ("user", "`user` needs `password`".to_string())
    );
    assert_eq!(
        rejected(NatsAuth::from_parts(s("t"), None, s("p"), None, None)),
        ("password", "`password` needs `user`".to_string())
    );
    assert_eq!(
        rejected(NatsAuth::from_parts(s(""), None, None, None, None)),
        ("token", "`token` must not be empty".to_string())
    );
    assert_eq!(
        rejected(NatsAuth::from_parts(None, s("u"), s(""), None, None)),
        ("password", "`password` must not be empty".to_string())
    );
    assert_eq!(
        rejected(NatsAuth::from_parts(None, None, None, None, p(""))).0,
        "creds_file"
    );
}

#[test]
fn tls_from_parts_pairs_certificate_and_key() {
    assert_eq!(
        NatsTls::from_parts(None, None, None),
        Ok(NatsTls::default())
    );
    assert_eq!(
        NatsTls::from_parts(p("/ca.pem"), p("/c.pem"), p("/k.pem")),
        Ok(NatsTls {
            ca: p("/ca.pem"),
            client_cert: Some(("/c.pem".into(), "/k.pem".into())),
        })
    );
    assert_eq!(
        rejected(NatsTls::from_parts(None, p("/c.pem"), None)),
        ("tls_cert", "`tls_cert` needs `tls_key`".to_string())
    );
    assert_eq!(
        rejected(NatsTls::from_parts(p("/ca.pem"), None, p("/k.pem"))),
        ("tls_key", "`tls_key` needs `tls_cert`".to_string())
    );
    assert_eq!(rejected(NatsTls::from_parts(p(""), None, None)).0, "tls_ca");
}

#[test]
fn options_need_valid_urls_and_a_timeout() {
    assert_eq!(NatsOptions::default().validate(), Ok(()));
    let with_urls = |urls: &[&str]| NatsOptions {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        ..NatsOptions::default()
    };
    for good in [
        "nats://a",
        "tls://nats.example.com:4222",
        "nats.example.com:4222",
    ] {
        assert_eq!(with_urls(&[good]).validate(), Ok(()), "{good}");
    }
    assert_eq!(
        rejected(with_urls(&[]).validate()),
        ("url", "give at least one NATS server URL".to_string())
    );
    assert_eq!(
        rejected(with_urls(&["nats://a", "nats://b c"]).validate()),
        ("url", "invalid NATS server URL \"nats://b c\"".to_string())
    );
    assert_eq!(
        rejected(with_urls(&[""]).validate()),
        ("url", "invalid NATS server URL \"\"".to_string())
    );
    let (key, message) = rejected(with_urls(&["http://nats.example.com"]).validate());
    assert_eq!(key, "url");
    assert!(
        message.starts_with("invalid NATS server URL \"http://nats.example.com\": "),
        "{message}"
    );
    assert_eq!(rejected(validate_url("nats://[::1")).0, "url");
    let zero = NatsOptions {
        connect_timeout: Duration::ZERO,
        ..NatsOptions::default()
    };
    assert_eq!(rejected(zero.validate()).0, "connect_timeout");
    // A hand-built option is held to the same rules as `from_parts`.
    let empty_token = NatsOptions {
        auth: NatsAuth::Token(String::new()),
        ..NatsOptions::default()
    };
    assert_eq!(rejected(empty_token.validate()).0, "token");
}

#[test]
fn subject_prefix_and_stream_rules() {
    for good in ["palisade", "acme.pal", "a-b_c.d"] {
        assert_eq!(validate_subject_prefix(good), Ok(()), "{good}");
    }
    for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "a\tb"] {
        let (key, message) = rejected(validate_subject_prefix(bad));
        assert_eq!(key, "subject_prefix");
        assert!(
            message.starts_with(&format!("invalid subject_prefix {bad:?}: ")),
            "{message}"
        );
    }
    for good in ["PALISADE", "ports-1_x"] {
        assert_eq!(validate_stream_name(good), Ok(()), "{good}");
    }
    for bad in ["", "A.B", "A*", "A>", "A/B", "A\\B", "A B"] {
        let (key, message) = rejected(validate_stream_name(bad));
        assert_eq!(key, "stream");
        assert!(
            message.starts_with(&format!("invalid stream {bad:?}: ")),
            "{message}"
        );
    }
}

#[tokio::test]
async fn connect_authenticates_and_explains_refusals() {
    let options = |url: &str, auth: NatsAuth| NatsOptions {
        urls: vec![url.to_string()],
        auth,
        ..NatsOptions::default()
    };
    let server = NatsServer::start_with_token("s3cret");
    connect(&options(&server.url, NatsAuth::Token("s3cret".into())))
        .await
        .expect("the right token");
    let err = connect(&options(&server.url, NatsAuth::Token("wrong".into())))
        .await
        .unwrap_err();
    assert!(matches!(err, NatsConnectError::Refused { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to NATS at {}: authorization violation (check the token)",
            server.url
        )
    );

    let server = NatsServer::start_with_user("alert", "pw");
    let user = |password: &str| NatsAuth::UserPassword {
        user: "alert".into(),
        password: password.into(),
    };
    connect(&options(&server.url, user("pw")))
        .await
        .expect("the right password");
    let err = connect(&options(&server.url, user("nope")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("authorization violation"), "{err}");

    let err = connect(&options(
        &server.url,
        NatsAuth::CredsFile("/nonexistent/alert.creds".into()),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, NatsConnectError::Options(e) if e.key == "creds_file"),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(
            "invalid NATS configuration: cannot read NATS credentials file /nonexistent/alert.creds: "
        ),
        "{err}"
    );
    let err = connect(&options("http://[::1", NatsAuth::None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NatsConnectError::Options(e) if e.key == "url"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_server_is_one_clear_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let err = connect(&NatsOptions {
        urls: vec![url.clone()],
        ..NatsOptions::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, NatsConnectError::Unreachable { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to NATS at {url}: connection refused")
    );
}
