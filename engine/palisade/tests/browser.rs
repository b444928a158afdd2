//! The dashboard in a real browser: Debian's headless Chromium, driven
//! through chromedriver, against `palisade run` inside a testbed (kernel
//! listeners on the target), its HTTP server reached on loopback through a
//! [`LoopbackBridge`]. As root. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/screenshots/` (the paths are printed).

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, Locator};
use palisade_sim::testbed::{KillOnDrop, stderr};
use serde_json::Value;

mod common;

use common::browser::{
    Driver, click_and_wait, here, http_get, js, requested_urls, screenshot, text_of, type_into,
    wait_for,
};
use common::{BIN, DaemonCase, LoopbackBridge, TARGET, free_port, path};

const ADMIN: &str = "admin-token-0123456789abcdef";
const READER: &str = "read-token-0123456789abcdef";

/// The whole test at most.
const BUDGET: Duration = Duration::from_secs(420);

/// The daemon under test, its log kept for a failure's message.
struct Daemon {
    process: KillOnDrop,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- the daemon's last log lines ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Starts `palisade run` for `case` with `[http]` on `port` and a tokens
/// file, and waits until the dashboard answers through `bridge`.
fn start_daemon(case: &DaemonCase, port: u16) -> Daemon {
    let tokens = case.dir.join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN} alice\nread {READER} bob\n")).unwrap();
    let mut config = std::fs::read_to_string(&case.config).unwrap();
    config.push_str(&format!(
        "\n[http]\nlisten = \"127.0.0.1:{port}\"\ntokens = \"{}\"\n",
        tokens.display()
    ));
    std::fs::write(&case.config, config).unwrap();
    let log = std::env::temp_dir().join(format!("palisade-browser-{}.log", std::process::id()));
    let process = case
        .command(&["run", "-c", path(&case.config)])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("palisade run");
    Daemon {
        process: KillOnDrop(process),
        log,
    }
}

fn wait_until_served(port: u16, daemon: &mut Daemon) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, _, _)) = http_get(port, "/login") {
            return;
        }
        if let Ok(Some(status)) = daemon.process.0.try_wait() {
            panic!(
                "the daemon exited ({status}): {}",
                std::fs::read_to_string(&daemon.log).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard did not answer within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The text of the fleet row of `monitor`.
async fn fleet_row(client: &Client, monitor: &str) -> Option<String> {
    text_of(client, &format!("#fleet tr[data-monitor=\"{monitor}\"]")).await
}

/// The text of the row of `port` in the table `table` (`open`, `down`) of
/// the monitor page.
async fn port_row(client: &Client, table: &str, port: u16) -> Option<String> {
    text_of(
        client,
        &format!("table[data-table=\"{table}\"] tr[data-port=\"{port}\"]"),
    )
    .await
}

/// How many scans the monitor page says the monitor has.
async fn scans_shown(client: &Client) -> u64 {
    js(
        client,
        "const t = document.querySelector('#scan-history'); \
         return t ? Number(t.dataset.total) : 0;",
    )
    .await
    .as_u64()
    .unwrap_or(0)
}

/// `fetch` from the page: (status, content-security-policy).
async fn fetch_post(client: &Client, url: &str, body: &str) -> (u64, String) {
    let script = format!(
        "const done = arguments[arguments.length - 1];
         fetch({}, {{method: 'POST', body: {}, redirect: 'manual',
                    headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}}})
           .then(r => done([r.status, r.headers.get('content-security-policy') || '']))
           .catch(e => done([0, String(e)]));",
        Value::from(url),
        Value::from(body)
    );
    let result = client
        .execute_async(&script, Vec::new())
        .await
        .expect("fetch from the page");
    (
        result[0].as_u64().unwrap_or(0),
        result[1].as_str().unwrap_or("").to_owned(),
    )
}

async fn log_in(client: &Client, base: &str, token: &str) {
    client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(
        here(client).await,
        "/login?next=%2F",
        "without a session the fleet sends to the login page"
    );
    type_into(client, "token", token).await;
    click_and_wait(client, "form[action=\"/login\"] button[type=submit]").await;
    assert_eq!(here(client).await, "/");
    assert_eq!(text_of(client, "h1").await.as_deref(), Some("Fleet"));
}

#[test]
fn the_dashboard_in_a_real_browser() {
    // web-1 (added in the browser) expects 22, 80, 443: 443 is down and
    // 6379 open, unexpected. edge-cfg comes from the config file.
    let mut case = DaemonCase::with_monitors(
        "browser",
        &[TARGET],
        &[],
        &format!(
            "[[monitor]]\nname = \"edge-cfg\"\nhost = \"{TARGET}\"\n\
             expected_open = [22, 80, 6379]\nevery = \"1h\"\nconfirm = 1\nrecheck = \"off\"\n"
        ),
        200_000,
    );
    case.listen(&[22, 80, 6379]);
    let port = free_port();
    let mut daemon = start_daemon(&case, port);
    let _bridge = LoopbackBridge::out_of(case.tb.scanner_ns(), port);
    wait_until_served(port, &mut daemon);

    // The security headers of a page and the assets' caching.
    let (status, head, body) = http_get(port, "/login").unwrap();
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    for header in [
        "content-security-policy: default-src 'self'",
        "frame-ancestors 'none'",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
    ] {
        assert!(head.contains(header), "missing {header}: {head}");
    }
    assert!(!body.contains("<script>"), "no inline script");
    let css = body
        .split('"')
        .find(|s| s.starts_with("/assets/style.css"))
        .expect("the stylesheet's link")
        .replace("&amp;", "&");
    let (status, head, _) = http_get(port, &css).unwrap();
    let head = head.to_ascii_lowercase();
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/css"), "{head}");
    assert!(head.contains("max-age=31536000"), "{head}");

    // check-config's message for a bad port, to compare with the page's.
    let bad = case.dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[[monitor]]\nname = \"web-1\"\nhost = \"{TARGET}\"\nexpected_open = \"22,80,443,70000\"\n"
        ),
    )
    .unwrap();
    let o = std::process::Command::new(BIN)
        .args(["check-config", path(&bad)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let message = "port 70000 is out of range (allowed: 1 to 65535)";
    assert!(stderr(&o).contains(message), "{}", stderr(&o));

    let driver = Driver::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(BUDGET, scenario(&driver, port, message))
            .await
            .expect("the browser test ran out of time")
    });
    drop(driver);
    drop(daemon);
}

async fn scenario(driver: &Driver, port: u16, message: &str) {
    let base = format!("http://127.0.0.1:{port}");
    let client = driver.browser(1280, 1100).await;

    // 1. Log in with the admin token.
    log_in(&client, &base, ADMIN).await;

    // 2. Add web-1 in the settings.
    client.goto(&format!("{base}/settings")).await.unwrap();
    click_and_wait(&client, "#add-monitor").await;
    assert_eq!(here(&client).await, "/settings/new");
    type_into(&client, "name", "web-1").await;
    type_into(&client, "host", TARGET).await;
    type_into(&client, "expected_open", "22,80,443").await;
    type_into(&client, "every", "1h").await;
    type_into(&client, "confirm", "1").await;
    type_into(&client, "recheck", "off").await;
    click_and_wait(&client, "#save").await;
    assert_eq!(here(&client).await, "/settings?saved=web-1");
    let list = text_of(&client, "#monitors").await.unwrap();
    assert!(list.contains("web-1"), "{list}");
    let config_row = text_of(&client, "#monitors tr[data-monitor=\"edge-cfg\"]")
        .await
        .unwrap();
    assert!(
        config_row.contains("managed by the config file"),
        "{config_row}"
    );

    // 3. The fleet shows web-1 with one expected port down and one
    //    unexpected port open, in words, once the daemon has scanned it.
    let row = wait_for(
        "web-1's deviations on the fleet page",
        Duration::from_secs(1),
        || {
            let client = client.clone();
            let base = base.clone();
            async move {
                client.goto(&format!("{base}/")).await.ok()?;
                let row = fleet_row(&client, "web-1").await?;
                (row.contains("1 expected down") && row.contains("1 unexpected open"))
                    .then_some(row)
            }
        },
    )
    .await;
    assert!(row.contains("reachable"), "{row}");
    let cfg = fleet_row(&client, "edge-cfg").await.unwrap_or_default();
    assert!(cfg.contains("all as expected"), "{cfg}");
    screenshot(&client, "fleet").await;

    // 4. The monitor page marks each port: 6379 open and unexpected, 22
    //    and 80 open and expected, 443 expected and down, confirmed (confirm
    //    = 1).
    client
        .goto(&format!("{base}/monitors/web-1"))
        .await
        .unwrap();
    let open_6379 = port_row(&client, "open", 6379).await.expect("6379 open");
    assert!(open_6379.contains("unexpected"), "{open_6379}");
    let open_22 = port_row(&client, "open", 22).await.expect("22 open");
    assert!(
        open_22.contains("expected") && !open_22.contains("unexpected"),
        "{open_22}"
    );
    let down_443 = port_row(&client, "down", 443).await.expect("443 down");
    assert!(down_443.contains("expected port down"), "{down_443}");
    assert!(down_443.contains("closed"), "{down_443}");
    assert!(down_443.contains("UTC"), "confirmed at a time: {down_443}");
    assert!(!down_443.contains("pending"), "{down_443}");
    screenshot(&client, "monitor").await;

    // 5. Scan now: the page refreshes itself and shows a new scan.
    let before = scans_shown(&client).await;
    assert!(before >= 1);
    click_and_wait(&client, "#scan-now").await;
    assert_eq!(here(&client).await, "/monitors/web-1?scan=requested");
    wait_for(
        "a new scan on the monitor page (live refresh)",
        Duration::from_millis(500),
        || {
            let client = client.clone();
            async move { (scans_shown(&client).await > before).then_some(()) }
        },
    )
    .await;

    // 6. A bad port: check-config's message next to the field, nothing
    //    changes.
    client
        .goto(&format!("{base}/settings/monitors/web-1"))
        .await
        .unwrap();
    let version = js(
        &client,
        "return document.querySelector('input[name=version]').value;",
    )
    .await;
    type_into(&client, "expected_open", "22,80,443,70000").await;
    click_and_wait(&client, "#save").await;
    let field = text_of(&client, "[data-field=\"expected_open\"] .field-error")
        .await
        .expect("an error next to the expected ports");
    assert_eq!(field, message);
    let summary = text_of(&client, "#error-summary").await.unwrap();
    assert!(summary.contains("Nothing was saved"), "{summary}");
    screenshot(&client, "settings-validation-error").await;
    client
        .goto(&format!("{base}/settings/monitors/web-1"))
        .await
        .unwrap();
    assert_eq!(
        js(
            &client,
            "return document.querySelector('#expected_open').value;"
        )
        .await,
        "22,80,443"
    );
    assert_eq!(
        js(
            &client,
            "return document.querySelector('input[name=version]').value;"
        )
        .await,
        version,
        "no new version"
    );

    // 7. A forged CSRF token is refused, with the security headers.
    let (status, csp) = fetch_post(&client, "/monitors/web-1/scan", "csrf=forged").await;
    assert_eq!(status, 403);
    assert!(csp.contains("default-src 'self'"), "{csp}");

    // 8. Expect 6379 instead of 443: from the next scan (scan now) on, the
    //    monitor page shows 6379 as expected and 443 no longer down.
    type_into(&client, "expected_open", "22,80,6379").await;
    click_and_wait(&client, "#save").await;
    assert_eq!(here(&client).await, "/settings?saved=web-1");
    client
        .goto(&format!("{base}/monitors/web-1"))
        .await
        .unwrap();
    assert_eq!(
        text_of(&client, "#expected-ports").await.as_deref(),
        Some("22,80,6379")
    );
    let before = scans_shown(&client).await;
    click_and_wait(&client, "#scan-now").await;
    wait_for(
        "6379 expected after the next scan",
        Duration::from_millis(500),
        || {
            let client = client.clone();
            async move {
                if scans_shown(&client).await <= before {
                    return None;
                }
                let row = port_row(&client, "open", 6379).await?;
                let down = port_row(&client, "down", 443).await;
                (row.contains("expected") && !row.contains("unexpected") && down.is_none())
                    .then_some(())
            }
        },
    )
    .await;
    client.goto(&format!("{base}/")).await.unwrap();
    let row = fleet_row(&client, "web-1").await.unwrap();
    assert!(row.contains("all as expected"), "{row}");

    // 9. A phone-sized screen: the fleet as cards.
    client.set_window_size(390, 844).await.unwrap();
    client
        .goto(&format!("{base}/monitors/web-1"))
        .await
        .unwrap();
    screenshot(&client, "monitor-phone").await;
    client.set_window_size(1280, 1100).await.unwrap();

    // 10. A read-only token sees no edit forms, and its writes are refused.
    click_and_wait(&client, "form[action=\"/logout\"] button").await;
    assert!(here(&client).await.starts_with("/login"));
    log_in(&client, &base, READER).await;
    for page in ["/settings", "/settings/monitors/web-1", "/monitors/web-1"] {
        client.goto(&format!("{base}{page}")).await.unwrap();
        let forms = js(
            &client,
            "return document.querySelectorAll('main form[method=post]').length;",
        )
        .await;
        assert_eq!(forms, 0, "no form that writes on {page}");
        assert!(
            client.find(Locator::Id("scan-now")).await.is_err(),
            "no scan now on {page}"
        );
    }
    client.goto(&format!("{base}/settings")).await.unwrap();
    let note = text_of(&client, "main .notice").await.unwrap();
    assert!(note.contains("read-only"), "{note}");
    let csrf = js(
        &client,
        "return document.querySelector('form[action=\"/logout\"] input[name=csrf]').value;",
    )
    .await;
    let csrf = csrf.as_str().unwrap();
    let (status, _) = fetch_post(
        &client,
        "/settings/monitors/web-1",
        &format!("csrf={csrf}&version=3&host={TARGET}&expected_open=1"),
    )
    .await;
    assert_eq!(status, 403, "a read-only token cannot edit");
    let (status, _) = fetch_post(&client, "/monitors/web-1/scan", &format!("csrf={csrf}")).await;
    assert_eq!(status, 403, "a read-only token cannot scan");
    client.goto(&format!("{base}/settings/new")).await.unwrap();
    assert_eq!(text_of(&client, "h1").await.as_deref(), Some("Not allowed"));

    // 11. No request left localhost.
    let urls = requested_urls(&client).await;
    // The browser's own pages (its new-tab page at start) load from
    // internal schemes, which are not the network; anything else must be
    // the dashboard on loopback.
    let prefix = format!("{base}/");
    let internal = ["chrome://", "data:", "about:", "blob:"];
    let elsewhere: Vec<&String> = urls
        .iter()
        .filter(|u| !u.starts_with(&prefix) && !internal.iter().any(|i| u.starts_with(i)))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests beyond {base}: {elsewhere:?}"
    );
    let ours = urls.iter().filter(|u| u.starts_with(&prefix)).count();
    assert!(
        ours > 20,
        "the performance log holds the session's requests: {urls:?}"
    );
    assert!(
        urls.iter().any(|u| u.contains("/assets/live.js")),
        "the live-refresh script was loaded"
    );

    client.close().await.unwrap();
}
