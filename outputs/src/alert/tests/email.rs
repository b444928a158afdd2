//! The email dispatcher through a real `nats-server` to a real SMTP server:
//! Debian's `python3-aiosmtpd` (installed by `cargo xtask setup`), run by a
//! small handler script that requires STARTTLS with a self-signed
//! certificate made here by rcgen, requires a login, and stores each
//! message it accepts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::nats::{
    CONSUMER, Running, client, create_stream, dead_letters, publish, test_config, wait_acked,
};
use super::*;
use crate::testing::NatsServer;

/// Debian's Python, which has `python3-aiosmtpd` (a pyenv or venv
/// `python3` earlier on the PATH would not).
const PYTHON: &str = "/usr/bin/python3";

/// The SMTP server: `--port`, `--out DIR` (each accepted message as
/// `NNN.eml`, its envelope and session as `NNN.json`), `--cert/--key`
/// (STARTTLS required; without them no STARTTLS is offered), `--user/
/// --password` (AUTH required), `--refuse ADDR` (that recipient gets 550),
/// `--implicit-tls` (TLS from the first byte instead of STARTTLS).
const SERVER_PY: &str = r#"
import argparse, json, logging, os, ssl, sys, time, warnings
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--out", required=True)
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--user")
p.add_argument("--password")
p.add_argument("--refuse", default="")
p.add_argument("--implicit-tls", action="store_true")
a = p.parse_args()
# Quiet: aiosmtpd warns about its own deprecated attributes and test settings.
logging.disable(logging.WARNING)
warnings.simplefilter("ignore")

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == a.refuse:
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(a.out) if f.endswith(".eml")])
        base = os.path.join(a.out, "%03d" % n)
        auth = session.auth_data
        with open(base + ".json", "w") as f:
            json.dump({
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                # STARTTLS sets session.ssl; implicit TLS is on the transport.
                "tls": session.ssl is not None
                or server.transport.get_extra_info("sslcontext") is not None,
                "user": auth.login.decode() if auth is not None else None,
            }, f)
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(base + ".tmp", base + ".eml")
        return "250 Message accepted for delivery"

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (auth_data.login.decode() == a.user and auth_data.password.decode() == a.password)
    return AuthResult(success=ok, auth_data=auth_data if ok else None)

kwargs = {}
if a.cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    if a.implicit_tls:
        kwargs.update(ssl_context=ctx)
    else:
        kwargs.update(tls_context=ctx, require_starttls=True)
if a.user:
    # aiosmtpd counts only STARTTLS as TLS for AUTH; implicit TLS is TLS too.
    kwargs.update(authenticator=authenticate, auth_required=True, auth_require_tls=not a.implicit_tls)
controller = Controller(Handler(), hostname="127.0.0.1", port=a.port, **kwargs)
controller.start()
print("ready", flush=True)
try:
    sys.stdin.read()
finally:
    controller.stop()
"#;

/// A running aiosmtpd; killed when dropped.
#[derive(Debug, Default)]
struct SmtpOptions<'a> {
    /// Certificate and key: STARTTLS required (or implicit TLS).
    tls: Option<(&'a Path, &'a Path)>,
    implicit_tls: bool,
    login: Option<(&'a str, &'a str)>,
    refuse: &'a str,
}

struct SmtpServer {
    port: u16,
    out: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    fn start(options: SmtpOptions<'_>) -> SmtpServer {
        let SmtpOptions {
            tls,
            implicit_tls,
            login,
            refuse,
        } = options;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("smtp_server.py");
        std::fs::write(&script, SERVER_PY).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(PYTHON);
        command
            // aiosmtpd warns about its own use of a deprecated attribute.
            .args(["-W", "ignore::DeprecationWarning"])
            .arg(&script)
            .args(["--port", &port.to_string(), "--refuse", refuse])
            .arg("--out")
            .arg(&out);
        if let Some((cert, key)) = tls {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if implicit_tls {
            command.arg("--implicit-tls");
        }
        if let Some((user, password)) = login {
            command.args(["--user", user, "--password", password]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e} (cargo xtask setup installs it)"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.trim() == "ready" => {}
            other => {
                let _ = child.kill();
                panic!(
                    "aiosmtpd did not start ({other:?}); is python3-aiosmtpd installed? (cargo xtask setup)"
                );
            }
        }
        SmtpServer {
            port,
            out,
            child,
            _dir: dir,
        }
    }

    /// The stored messages, oldest first: (raw message, session JSON).
    fn messages(&self) -> Vec<(String, serde_json::Value)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|eml| {
                let raw = std::fs::read_to_string(eml).unwrap();
                let json = std::fs::read_to_string(eml.with_extension("json")).unwrap();
                (raw, serde_json::from_str(&json).unwrap())
            })
            .collect()
    }

    async fn wait_for(&self, count: usize) -> Vec<(String, serde_json::Value)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} mails after 20 s",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for `localhost` and its key, as PEM files.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// The headers of a raw message (folded lines unfolded), by lower-case name.
fn headers(raw: &str) -> Vec<(String, String)> {
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn email_per_incident_and_resolution_over_starttls_threaded() {
    let nats = NatsServer::start();
    let client = client(&nats).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let pki = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(pki.path());
    let smtp = SmtpServer::start(SmtpOptions {
        tls: Some((&cert, &key)),
        login: Some(("palisade", "s3cret:pw")),
        ..SmtpOptions::default()
    });
    let credentials = pki.path().join("smtp.cred");
    std::fs::write(&credentials, "palisade:s3cret:pw\n").unwrap();
    let spec: DispatchSpec = format!(
        "smtp=localhost:{},from=Palisade <palisade@example.org>,to=ops@example.org,to=sec@example.org,credentials={},ca={}",
        smtp.port,
        credentials.display(),
        cert.display()
    )
    .parse()
    .unwrap();
    let email = spec.build(&HttpOptions::default()).unwrap();
    let running = Running::start(client.clone(), test_config(), vec![email]);

    let incident = opened("web-1", 6379);
    publish(&js, &incident, PayloadFormat::Json).await;
    publish(
        &js,
        &monitor_resolved("web-1", &ago(6)),
        PayloadFormat::Json,
    )
    .await;
    publish(&js, &resolved(&incident, &ago(5)), PayloadFormat::Json).await;
    let last = publish(&js, &ports_changed(300, 1), PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, last).await;
    let stats = running.stop().await;
    // monitor_resolved is no notice: acknowledged, no mail.
    assert_eq!(stats.acked, 4, "{stats:?}");

    let mails = smtp.wait_for(3).await;
    assert_eq!(
        mails.len(),
        3,
        "one per incident, resolution and ports_changed"
    );
    for (_, session) in &mails {
        assert_eq!(session["tls"], true, "STARTTLS was used: {session}");
        assert_eq!(session["user"], "palisade", "{session}");
        assert_eq!(session["mail_from"], "palisade@example.org");
        assert_eq!(
            session["rcpt_tos"],
            serde_json::json!(["ops@example.org", "sec@example.org"])
        );
    }
    let (fired, ended) = (headers(&mails[0].0), headers(&mails[1].0));
    let summary = "Unexpected port open 6379/tcp on web-1 (198.18.0.2)";
    assert_eq!(
        header(&fired, "subject"),
        Some(format!("[Palisade] {summary}").as_str())
    );
    assert_eq!(
        header(&ended, "subject"),
        Some(format!("Re: [Palisade] {summary} [resolved]").as_str())
    );
    let p = incident.data.port_event().unwrap();
    let token = super::super::notice::incident_token(&p.incident_id);
    let incident_id = format!("<incident.{token}@example.org>");
    assert_eq!(header(&fired, "message-id"), Some(incident_id.as_str()));
    assert_eq!(header(&fired, "in-reply-to"), None);
    assert_eq!(
        header(&ended, "message-id"),
        Some(format!("<resolved.{token}@example.org>").as_str())
    );
    assert_eq!(header(&ended, "in-reply-to"), Some(incident_id.as_str()));
    assert_eq!(header(&ended, "references"), Some(incident_id.as_str()));
    assert_eq!(
        header(&fired, "from"),
        Some("Palisade <palisade@example.org>")
    );
    let body = mails[0].0.split_once("\r\n\r\n").unwrap().1;
    for want in [
        "Monitor:".to_string(),
        "web-1".to_string(),
        "6379/tcp".to_string(),
        "high".to_string(),
        p.first_seen.clone(),
        p.confirmed_at.clone(),
        p.incident_id.clone(),
    ] {
        assert!(body.contains(&want), "{want:?} in\n{body}");
    }
    assert!(mails[1].0.contains("RESOLVED: "), "{}", mails[1].0);
    let summary = headers(&mails[2].0);
    assert_eq!(
        header(&summary, "subject"),
        Some("[Palisade] 300 port changes on web-1 (50 sent one by one)")
    );
    assert!(
        header(&summary, "message-id").is_some_and(|id| id.starts_with("<changes.")),
        "{summary:?}"
    );
    assert_eq!(header(&summary, "in-reply-to"), None);
    assert!(
        mails[2].0.contains("Change:") && mails[2].0.contains("8000-8299 (300)"),
        "{}",
        mails[2].0
    );
}

#[tokio::test]
async fn without_starttls_no_mail_is_sent_and_a_refused_recipient_is_dead_lettered() {
    let pki = tempfile::tempdir().unwrap();
    // A server that offers no STARTTLS: the mail is not sent in clear
    // text, and the failure is retried (it is not the mail's fault).
    let plain = SmtpServer::start(SmtpOptions::default());
    let spec = |port: u16, ca: &Path| -> DispatchSpec {
        format!(
            "smtp=localhost:{port},from=palisade@example.org,to=ops@example.org,ca={}",
            ca.display()
        )
        .parse()
        .unwrap()
    };
    let (cert, key) = self_signed(pki.path());
    let dispatcher = spec(plain.port, &cert)
        .build(&HttpOptions::default())
        .unwrap();
    let err = dispatcher
        .dispatch(&opened("web-1", 6379))
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert!(err.to_string().to_lowercase().contains("tls"), "{err}");
    assert!(plain.messages().is_empty());

    // A 550 for the recipient: refused for good, dead-lettered at once.
    let nats = NatsServer::start();
    let client = client(&nats).await;
    let js = jetstream::new(client.clone());
    create_stream(&js).await;
    let refusing = SmtpServer::start(SmtpOptions {
        tls: Some((&cert, &key)),
        refuse: "ops@example.org",
        ..SmtpOptions::default()
    });
    let dispatcher = spec(refusing.port, &cert)
        .build(&HttpOptions::default())
        .unwrap();
    let running = Running::start(client.clone(), test_config(), vec![dispatcher]);
    let e = opened("web-1", 6379);
    let seq = publish(&js, &e, PayloadFormat::Json).await;
    wait_acked(&js, CONSUMER, seq).await;
    let stats = running.stop().await;
    assert_eq!(
        stats,
        ConsumerStats {
            dead_lettered: 1,
            ..ConsumerStats::default()
        }
    );
    let letters = dead_letters(&js).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].subject, "palisade.dlq.smtp");
    let reason = letters[0].header("Palisade-Dlq-Reason").unwrap();
    assert!(reason.contains("550"), "{reason}");
    assert!(refusing.messages().is_empty());
}

#[tokio::test]
async fn implicit_tls_with_a_login() {
    let pki = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(pki.path());
    let smtp = SmtpServer::start(SmtpOptions {
        tls: Some((&cert, &key)),
        implicit_tls: true,
        login: Some(("alerts", "pw")),
        ..SmtpOptions::default()
    });
    let credentials = pki.path().join("smtp.cred");
    std::fs::write(&credentials, "alerts:pw").unwrap();
    let spec: DispatchSpec = format!(
        "smtp=localhost:{},from=palisade@example.org,to=ops@example.org,tls=tls,credentials=@{},ca={}",
        smtp.port,
        credentials.display(),
        cert.display()
    )
    .parse()
    .unwrap();
    let email = spec.build(&HttpOptions::default()).unwrap();
    let incident = opened("web-1", 6379);
    assert_eq!(
        email.dispatch(&incident).await.unwrap(),
        Dispatched::Delivered
    );
    assert_eq!(
        email.dispatch(&scan("web-1", &ago(1))).await.unwrap(),
        Dispatched::Skipped
    );
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].1["tls"], true, "{}", mails[0].1);
    assert_eq!(mails[0].1["user"], "alerts", "{}", mails[0].1);
}
