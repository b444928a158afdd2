//! A real browser for tests: Debian's headless Chromium driven through
//! chromedriver (WebDriver, `fantoccini`), both on loopback, each bounded
//! in time and killed at the end. The browser keeps a performance log (the
//! DevTools network events), so a test can check which URLs it asked for;
//! host name resolution is switched off for anything but loopback, so
//! nothing could leave the machine even if a page tried.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use palisade_sim::testbed::KillOnDrop;

use super::http::http_get;
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long any one wait of a test in the browser lasts at most.
pub const WAIT: Duration = Duration::from_secs(60);

/// chromedriver on a free loopback port, and the browser profile's
/// directory; both go when this is dropped.
pub struct Driver {
    process: KillOnDrop,
    pub port: u16,
    profile: PathBuf,
}

impl Driver {
    /// Starts chromedriver and waits (20 s at most) until it listens.
    pub fn start() -> Driver {
        let port = super::free_port();
        let log = std::env::temp_dir().join(format!(
            "palisade-chromedriver-{}-{port}.log",
            std::process::id()
        ));
        // A process group of its own: the browsers it starts are killed
        // with it, also when a test fails before it closes its session.
        let process = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {CHROMEDRIVER} (Debian's chromium-driver): {e}")
            });
        let process = KillOnDrop(process);
        let profile =
            std::env::temp_dir().join(format!("palisade-chromium-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(port, "/status").is_none() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on 127.0.0.1:{port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            process,
            port,
            profile,
        }
    }

    /// A new headless Chromium session, `width` × `height`, with its
    /// network events logged.
    pub async fn browser(&self, width: u32, height: u32) -> Client {
        let args = vec![
            "--headless=new".to_owned(),
            // As root, Chromium runs only without its sandbox.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", self.profile.display()),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-client-side-phishing-detection".to_owned(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"
                .to_owned(),
            "--metrics-recording-only".to_owned(),
            "--password-store=basic".to_owned(),
            // No name resolves but the loopback ones: nothing can leave.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            "--disable-crash-reporter".to_owned(),
            "--disable-breakpad".to_owned(),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "performance": "ALL", "browser": "ALL" },
            "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let capabilities: Capabilities = capabilities;
        tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{}", self.port)),
        )
        .await
        .expect("Chromium did not start within 60 s")
        .expect("a WebDriver session of headless Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group chromedriver leads: itself and the browsers it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.process.0.id())])
            .status();
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// chromedriver's log of `kind` (`performance`, `browser`) since the last
/// call: `POST /session/{id}/se/log`.
#[derive(Debug)]
struct GetLog(&'static str);

impl WebDriverCompatibleCommand for GetLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(json!({ "type": self.0 }).to_string()),
        )
    }
}

/// The browser's log entries of `kind` since the last call.
pub async fn log_entries(client: &Client, kind: &'static str) -> Vec<Value> {
    match client
        .issue_cmd(GetLog(kind))
        .await
        .expect("the browser's log")
    {
        Value::Array(entries) => entries,
        other => panic!("a log is an array, got {other}"),
    }
}

/// Every URL the browser asked for (or got a response from) since the
/// last call, from its performance log (DevTools `Network.*` events).
pub async fn requested_urls(client: &Client) -> Vec<String> {
    let mut urls = Vec::new();
    for entry in log_entries(client, "performance").await {
        let Some(text) = entry["message"].as_str() else {
            continue;
        };
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let message = &message["message"];
        let method = message["method"].as_str().unwrap_or("");
        if !method.starts_with("Network.") {
            continue;
        }
        for url in [
            &message["params"]["request"]["url"],
            &message["params"]["response"]["url"],
            &message["params"]["redirectResponse"]["url"],
            &message["params"]["documentURL"],
        ] {
            if let Some(url) = url.as_str() {
                urls.push(url.to_owned());
            }
        }
    }
    urls
}

/// Saves a screenshot of what the browser shows as
/// `$CARGO_TARGET_TMPDIR/screenshots/<name>.png`, prints and returns the
/// path.
pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    // Straight to stderr: shown even when the test harness captures output.
    let _ = writeln!(std::io::stderr(), "screenshot: {}", path.display());
    path
}

/// Runs `script` (a function body) in the page and returns its value.
pub async fn js(client: &Client, script: &str) -> Value {
    client
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// The text of the first element matching `css`, or `None` (read in one
/// script, so a live refresh in between cannot make it stale).
pub async fn text_of(client: &Client, css: &str) -> Option<String> {
    let script = format!(
        "const e = document.querySelector({}); return e ? e.innerText : null;",
        Value::from(css)
    );
    js(client, &script).await.as_str().map(str::to_owned)
}

/// The page's path and query.
pub async fn here(client: &Client) -> String {
    let url = client.current_url().await.expect("the current URL");
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Replaces the value of the input `#id` with `value`, as typed.
pub async fn type_into(client: &Client, id: &str, value: &str) {
    let input = client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no input #{id}: {e}"));
    input.clear().await.expect("clear an input");
    input.send_keys(value).await.expect("type into an input");
}

/// Clicks the element matching `css` and waits for the next page.
pub async fn click_and_wait(client: &Client, css: &str) {
    let before = js(client, "return performance.timeOrigin;").await;
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("nothing matches {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    let deadline = Instant::now() + WAIT;
    loop {
        let now = client
            .execute(
                "return document.readyState === 'complete' ? performance.timeOrigin : null;",
                Vec::new(),
            )
            .await
            .unwrap_or(Value::Null);
        if !now.is_null() && now != before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no new page after clicking {css}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every `every` until it gives `Some`, for [`WAIT`] at most.
pub async fn wait_for<T, F, Fut>(what: &str, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "waited {} s in vain for {what}",
            WAIT.as_secs()
        );
        tokio::time::sleep(every).await;
    }
}
