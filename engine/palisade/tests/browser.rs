//! The dashboard in a real browser: Debian's headless Chromium, driven
//! through chromedriver, against `palisade run` inside a testbed (kernel
//! listeners on the target), its HTTP server reached on loopback through a
//! [`LoopbackBridge`]. As root. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/screenshots/` (the paths are printed).

use std::time::Duration;

use fantoccini::{Client, Locator};
use palisade_sim::testbed::stderr;
use serde_json::Value;

mod common;

use common::browser::{
    Driver, click_and_wait, here, js, requested_urls, screenshot, text_of, type_into, wait_for,
};
use common::http::{http_get, http_request};
use common::{BIN, DaemonCase, TARGET, path};

const ADMIN: &str = "admin-token-0123456789abcdef";
const READER: &str = "read-token-0123456789abcdef";

/// The whole test at most.
const BUDGET: Duration = Duration::from_secs(420);

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
    let tokens = case.dir.join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN} alice\nread {READER} bob\n")).unwrap();
    let daemon = case.serve(Some(&tokens));
    let port = daemon.port;

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
    screenshot(&client, "settings").await;

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
    client.goto(&format!("{base}/incidents")).await.unwrap();
    let incidents = text_of(&client, "#incidents").await.expect("the incidents");
    assert!(incidents.contains("expected port down"), "{incidents}");
    assert!(incidents.contains("unexpected port open"), "{incidents}");
    screenshot(&client, "incidents").await;
    let link = js(
        &client,
        "return document.querySelector('#incidents a').getAttribute('href');",
    )
    .await;
    assert_eq!(link, "/monitors/web-1");
    client
        .goto(&format!("{base}/monitors/web-1"))
        .await
        .unwrap();

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
    wait_for(
        "the live-refresh script's first refresh",
        Duration::from_millis(500),
        || {
            let client = client.clone();
            async move {
                let status = text_of(&client, "#live-status").await?;
                status.starts_with("Updated").then_some(())
            }
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

#[test]
fn the_fleet_page_shows_live_and_gone_scan_agents() {
    // The dashboard served in-process (its store real SQLite), the browser
    // real: the agents are written through a store connection of their
    // own, as the coordinator writes them, while the page is open.
    let served = Served::start("agents", None);
    let driver = Driver::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(BUDGET, agents_scenario(&driver, &served))
            .await
            .expect("the browser test ran out of time")
    });
    drop(driver);
}

async fn agents_scenario(driver: &Driver, served: &Served) {
    let base = format!("http://127.0.0.1:{}", served.port());
    let client = driver.browser(1280, 1000).await;
    client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(text_of(&client, "h1").await.as_deref(), Some("Fleet"));
    // No agents: no panel at all.
    assert!(text_of(&client, "#agents").await.is_none());
    assert!(text_of(&client, "#agents-title").await.is_none());

    let now = palisade::daemon::now_ms();
    let beat = |name: &str, labels: &[&str], jobs_done, job| palisade_core::cluster::AgentBeat {
        version: palisade_core::cluster::CLUSTER_VERSION,
        name: name.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        rate: 100_000,
        started: now - 3_600_000,
        jobs_done,
        job,
    };
    {
        let mut store = palisade::store::Store::connect(&served.store).unwrap();
        let job = palisade_core::cluster::JobId {
            sweep: 1_764_590_400_000,
            slice: 1,
            shard: 4,
        };
        store
            .record_agent_beat(&beat("fra1-a", &["any", "site=fra1"], 17, Some(job)), now)
            .unwrap();
        store
            .record_agent_beat(&beat("par-b", &["any"], 3, None), now - 200_000)
            .unwrap();
        store.record_agent_gone("par-b", now - 180_000).unwrap();
    }

    // The page refreshes its live part by itself: the panel appears
    // without a reload.
    let live = wait_for(
        "the live agent on the fleet page",
        Duration::from_millis(500),
        || {
            let client = client.clone();
            async move { text_of(&client, "#agents tr[data-agent=\"fra1-a\"]").await }
        },
    )
    .await;
    for part in [
        "fra1-a",
        "live",
        "any",
        "site=fra1",
        "17",
        "100000 probes/s",
        "1764590400000.1.4",
    ] {
        assert!(live.contains(part), "{part:?} not in {live:?}");
    }
    let gone = text_of(&client, "#agents tr[data-agent=\"par-b\"]")
        .await
        .expect("the gone agent's row");
    for part in ["par-b", "gone since", "min ago)", "idle", "3"] {
        assert!(gone.contains(part), "{part:?} not in {gone:?}");
    }
    let state = js(
        &client,
        "return [...document.querySelectorAll('#agents tbody tr')]\
         .map(r => r.dataset.agent + ':' + r.dataset.state).join(' ');",
    )
    .await;
    assert_eq!(state, "fra1-a:live par-b:gone");
    assert_eq!(
        text_of(&client, "#agents caption").await.as_deref(),
        Some("1 agent live, 0 silent, 1 gone")
    );
    assert_eq!(
        text_of(&client, "#agents-title").await.as_deref(),
        Some("Scan agents")
    );
    screenshot(&client, "agents").await;
    client.close().await.unwrap();
}

/// A dashboard served in-process on loopback (no daemon, no browser),
/// with its store in a directory of its own.
struct Served {
    server: palisade::http::HttpServer,
    control: palisade::daemon::control::Control,
    store: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Served {
    fn start(name: &str, tokens: Option<&str>) -> Served {
        use palisade::http::{AppState, HttpServer, auth::Auth};
        let dir =
            std::env::temp_dir().join(format!("palisade-pages-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("palisade.db");
        let mut opened = palisade::store::Store::open(&store).unwrap();
        let config_monitor = palisade_core::monitor::MonitorSpec {
            name: "cfg".into(),
            host: "198.18.0.7".into(),
            expected_open: [22].into(),
            ..Default::default()
        };
        opened.import_config_monitors(&[config_monitor], 1).unwrap();
        let tokens_path = tokens.map(|text| {
            let path = dir.join("tokens");
            std::fs::write(&path, text).unwrap();
            path
        });
        let control = palisade::daemon::control::Control::new(0, Default::default());
        let state = AppState::new(
            &store,
            control.handle(),
            std::sync::Arc::new(palisade::metrics::Metrics::new()),
            Auth::new(tokens_path.as_deref()).unwrap(),
        );
        let settings = palisade::config::HttpSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            tokens: tokens_path,
        };
        let server = HttpServer::start(&settings, state).unwrap();
        Served {
            server,
            control,
            store,
            dir,
        }
    }

    fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    fn get(&self, path: &str, cookie: &str) -> (u16, String, String) {
        http_request(self.port(), "GET", path, &[("Cookie", cookie)], "").expect("an answer")
    }

    fn post(&self, path: &str, cookie: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        http_request(
            self.port(),
            "POST",
            path,
            &[
                ("Cookie", cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &body.join("&"),
        )
        .expect("an answer")
    }

    fn monitor(&self, name: &str) -> Option<palisade::store::StoredMonitor> {
        palisade::store::Store::connect(&self.store)
            .unwrap()
            .monitor(name)
            .unwrap()
    }

    /// The commands the pages sent the daemon so far.
    fn commands(&self) -> Vec<palisade::daemon::control::Command> {
        std::iter::from_fn(|| self.control.next(Duration::from_millis(50))).collect()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the header `name` of `head`.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The value of the first hidden field `name` of a page.
fn field(body: &str, name: &str) -> String {
    let at = body
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name} in {body}"));
    let rest = &body[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[test]
fn settings_forms_write_only_what_is_valid_and_current() {
    use palisade::daemon::control::Command;
    let served = Served::start("forms", None);

    // Without a tokens file the first page opens a session.
    let (status, head, body) = served.get("/", "");
    assert_eq!(status, 200);
    let set_cookie = header(&head, "set-cookie").expect("a session cookie");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(body.contains("<h1>Fleet</h1>"), "{body}");
    let (_, _, body) = served.get("/settings/new", &cookie);
    let csrf = field(&body, "csrf");

    // A new monitor; the daemon is told.
    let new = |name: &'static str, ports: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", name.to_owned()),
            ("host", "198.18.0.9".to_owned()),
            ("expected_open", ports.to_owned()),
            ("every", "1h".to_owned()),
            ("confirm", "1".to_owned()),
            ("recheck", "off".to_owned()),
            ("ping", "on".to_owned()),
            ("enabled", "on".to_owned()),
        ]
    };
    let post = |path: &str, fields: &[(&str, String)]| {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        served.post(path, &cookie, &fields)
    };
    let (status, head, _) = post("/settings/new", &new("api-1", "22,80"));
    assert_eq!(status, 303);
    assert_eq!(header(&head, "location"), Some("/settings?saved=api-1"));
    assert_eq!(served.commands(), [Command::MonitorsChanged]);
    let stored = served.monitor("api-1").unwrap();
    assert_eq!((stored.version, stored.enabled), (1, true));
    assert_eq!(stored.spec.expected_open, [22, 80].into());

    // The same name again, or no CSRF token: refused, nothing changes.
    let (status, _, body) = post("/settings/new", &new("api-1", "443"));
    assert_eq!(status, 422);
    assert!(body.contains("exists already"), "{body}");
    let mut forged = new("api-2", "22");
    forged[0].1 = "forged".into();
    let (status, _, body) = post("/settings/new", &forged);
    assert_eq!(status, 403);
    assert!(body.contains("CSRF"), "{body}");
    assert!(served.monitor("api-2").is_none());
    assert!(served.commands().is_empty());

    // An edit from version 1, then a second edit from the same version 1:
    // "changed by someone else", and the first edit stays.
    let edit = |version: &str, ports: &'static str| {
        let mut fields = new("api-1", ports);
        fields.push(("version", version.to_owned()));
        fields
    };
    let (status, _, _) = post("/settings/monitors/api-1", &edit("1", "443"));
    assert_eq!(status, 303);
    let (status, _, body) = post("/settings/monitors/api-1", &edit("1", "8080"));
    assert_eq!(status, 409);
    assert!(body.contains("changed by someone else"), "{body}");
    let stored = served.monitor("api-1").unwrap();
    assert_eq!(
        (stored.version, stored.spec.expected_open),
        (2, [443].into())
    );

    // A bad port: check-config's message next to the field; nothing changes.
    let (status, _, body) = post("/settings/monitors/api-1", &edit("2", "22,70000"));
    assert_eq!(status, 422);
    assert!(
        body.contains("port 70000 is out of range (allowed: 1 to 65535)"),
        "{body}"
    );
    assert_eq!(served.monitor("api-1").unwrap().version, 2);
    assert_eq!(served.commands(), [Command::MonitorsChanged]);

    // The config file's monitor is read-only.
    let (status, _, body) = served.get("/settings/monitors/cfg", &cookie);
    assert_eq!(status, 200);
    assert!(body.contains("Managed by the config file"), "{body}");
    assert!(!body.contains("name=\"expected_open\""), "no form: {body}");
    let mut cfg = new("cfg", "22,80");
    cfg.push(("version", "1".to_owned()));
    let (status, _, _) = post("/settings/monitors/cfg", &cfg);
    assert_eq!(status, 403);
    assert_eq!(
        served.monitor("cfg").unwrap().spec.expected_open,
        [22].into()
    );

    // Disable, and a disabled monitor is not scanned on request.
    let (status, _, _) = post(
        "/settings/monitors/api-1/enabled",
        &[
            ("csrf", csrf.clone()),
            ("version", "2".into()),
            ("enabled", "false".into()),
        ],
    );
    assert_eq!(status, 303);
    assert!(!served.monitor("api-1").unwrap().enabled);
    let (status, _, _) = post("/monitors/api-1/scan", &[("csrf", csrf.clone())]);
    assert_eq!(status, 400);
    let (status, head, _) = post("/monitors/cfg/scan", &[("csrf", csrf.clone())]);
    assert_eq!(status, 303);
    assert_eq!(
        header(&head, "location"),
        Some("/monitors/cfg?scan=requested")
    );
    assert_eq!(
        served.commands(),
        [Command::MonitorsChanged, Command::ScanNow("cfg".into())]
    );

    // Delete: only when confirmed, and at the current version.
    let delete = |version: &str, confirm: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("version", version.to_owned()),
            ("confirm", confirm.to_owned()),
        ]
    };
    let (status, _, _) = post("/settings/monitors/api-1/delete", &delete("3", ""));
    assert_eq!(status, 422);
    let (status, head, _) = post("/settings/monitors/api-1/delete", &delete("2", "yes"));
    assert_eq!(status, 303);
    assert_eq!(header(&head, "location"), Some("/settings?stale=api-1"));
    assert!(served.monitor("api-1").is_some());
    let (status, head, _) = post("/settings/monitors/api-1/delete", &delete("3", "yes"));
    assert_eq!(status, 303);
    assert_eq!(header(&head, "location"), Some("/settings?deleted=api-1"));
    assert!(served.monitor("api-1").is_none());
    assert_eq!(served.commands(), [Command::MonitorsChanged]);

    // Pages of what does not exist, and the assets.
    let (status, _, body) = served.get("/monitors/nope", &cookie);
    assert_eq!(status, 404);
    assert!(body.contains("No monitor is named"), "{body}");
    let (status, head, _) = served.get("/assets/live.js", "");
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert_eq!(served.get("/assets/nope.js", "").0, 404);
}

#[test]
fn with_tokens_pages_need_a_login() {
    let served = Served::start("login", Some(&format!("admin {ADMIN} alice\n")));
    let (status, head, _) = served.get("/monitors/cfg", "");
    assert_eq!(status, 303);
    assert_eq!(
        header(&head, "location"),
        Some("/login?next=%2Fmonitors%2Fcfg")
    );
    let (status, _, body) = served.post("/login", "", &[("token", "wrong-wrong-wrong-wrong")]);
    assert_eq!(status, 401);
    assert!(body.contains("the token is not valid"), "{body}");
    let (status, head, _) =
        served.post("/login", "", &[("token", ADMIN), ("next", "/monitors/cfg")]);
    assert_eq!(status, 303);
    assert_eq!(header(&head, "location"), Some("/monitors/cfg"));
    let cookie = header(&head, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (status, _, body) = served.get("/monitors/cfg", &cookie);
    assert_eq!(status, 200);
    assert!(body.contains("managed by the config file"), "{body}");
    // A POST without a session is refused, not redirected.
    assert_eq!(served.post("/monitors/cfg/scan", "", &[]).0, 401);
    // Logging out ends the session.
    let csrf = field(&body, "csrf");
    let (status, _, _) = served.post("/logout", &cookie, &[("csrf", &csrf)]);
    assert_eq!(status, 303);
    assert_eq!(served.get("/monitors/cfg", &cookie).0, 303);
}
