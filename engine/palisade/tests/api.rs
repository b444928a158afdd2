//! The JSON API under `/api/v1` (docs/API.md), served by the real daemon
//! (the `palisade` binary, inside a testbed, with a real SQLite store) and
//! called over HTTP with reqwest through a loopback bridge: tokens and
//! roles, RFC 9457 problems naming the wrong field, ETag / If-Match (two
//! clients editing one monitor lose no update), the configuration file's
//! monitors read-only, and monitors created through the API scanned by the
//! daemon, on schedule and on request. Needs root.

use std::time::{Duration, Instant};

use palisade_sim::testbed::stderr;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

mod common;
use common::{BIN, DaemonCase, ServedDaemon, TARGET, now_ms, path};

const ADMIN: &str = "admin-token-of-the-api-test-0123";
const READER: &str = "read-token-of-the-api-test-0123";

/// A daemon serving the API inside a testbed: one configuration-file
/// monitor `web-1` on [`TARGET`] (expects 22, 80, 443; every 1h, confirm 1,
/// no re-check), kernel listeners on 22, 80 and 6379 of [`TARGET`], and a
/// tokens file with an admin and a read-only token.
struct ApiCase {
    // Dropped in this order: the daemon (and its bridge), then the testbed.
    served: ServedDaemon,
    case: DaemonCase,
    base: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// An HTTP answer: status, headers, and the body as JSON (`null` if empty).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an RFC 9457 problem of `status` whose type ends in `slug`;
    /// returns its body.
    fn problem(&self, status: u16, slug: &str) -> &Value {
        assert_eq!(self.status, status, "{self:#?}");
        assert_eq!(
            self.header("content-type"),
            "application/problem+json",
            "{self:#?}"
        );
        let b = &self.body;
        assert_eq!(b["status"], status, "{self:#?}");
        assert!(
            b["type"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!(":{slug}"))),
            "type {} is not {slug}: {self:#?}",
            b["type"]
        );
        assert!(b["title"].is_string() && b["detail"].is_string(), "{b:#}");
        b
    }

    /// The fields of a problem's `errors`.
    fn fields(&self) -> Vec<&str> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or("?"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One request.
struct Call<'a> {
    method: Method,
    path: &'a str,
    token: Option<&'a str>,
    headers: Vec<(&'a str, String)>,
    body: Option<String>,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            token: None,
            headers: Vec::new(),
            body: None,
        }
    }

    fn token(mut self, token: &'a str) -> Call<'a> {
        self.token = Some(token);
        self
    }

    fn header(mut self, name: &'a str, value: &str) -> Call<'a> {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn if_match(self, etag: &str) -> Call<'a> {
        self.header("if-match", etag)
    }

    /// A JSON body (with its content type).
    fn json(mut self, body: &Value) -> Call<'a> {
        self.body = Some(body.to_string());
        self.header("content-type", "application/json")
    }

    /// A body as is, without a content type.
    fn raw(mut self, body: &str) -> Call<'a> {
        self.body = Some(body.to_owned());
        self
    }

    async fn send(self, client: &reqwest::Client, base: &str) -> Result<Answer, reqwest::Error> {
        let mut request = client.request(self.method, format!("{base}{}", self.path));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        if let Some(body) = self.body {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"))
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

impl ApiCase {
    fn start(name: &str) -> ApiCase {
        let mut case = DaemonCase::new(
            name,
            "every = \"1h\"\nconfirm = 1\nrecheck = \"off\"",
            200_000,
        );
        case.listen(&[22, 80, 6379]);
        let tokens = case.dir.join("tokens");
        std::fs::write(
            &tokens,
            format!("# the API test\nadmin {ADMIN} alice\nread {READER} bob\n"),
        )
        .unwrap();
        let served = case.serve(Some(&tokens));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut api = ApiCase {
            base: served.url(""),
            served,
            case,
            client: client(),
            rt,
        };
        let started = Instant::now();
        api.wait("the API to answer", Duration::from_secs(60), |api| {
            let answer = api.rt.block_on(async {
                let call = Call::new(Method::GET, "/api/v1/status")
                    .token(READER)
                    .send(&api.client, &api.base);
                tokio::time::timeout(Duration::from_secs(5), call).await
            });
            match answer {
                Ok(Ok(Answer { status: 200, .. })) => Some(()),
                other => {
                    eprintln!(
                        "{:?}: the API does not answer yet: {other:?}",
                        started.elapsed()
                    );
                    None
                }
            }
        });
        assert!(api.served.running(), "the daemon exited: {}", api.log());
        api
    }

    fn log(&self) -> String {
        self.served.log_text()
    }

    fn call(&self, call: Call<'_>) -> Answer {
        let path = call.path.to_owned();
        self.rt
            .block_on(call.send(&self.client, &self.base))
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.log()))
    }

    /// `GET` with the read-only token.
    fn get(&self, path: &str) -> Answer {
        self.call(Call::new(Method::GET, path).token(READER))
    }

    /// `GET` with the read-only token, expecting a 200.
    fn read(&self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "{path}: {answer:#?}");
        answer.body
    }

    /// Waits up to `timeout` for `f` to give something.
    fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&mut ApiCase) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(found) = f(self) {
                return found;
            }
            if start.elapsed() > timeout {
                panic!(
                    "waited {timeout:?} for {what}; the daemon's log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How many scans `monitor` has.
    fn scan_count(&self, monitor: &str) -> u64 {
        self.read(&format!("/api/v1/monitors/{monitor}/scans?per_page=1"))["total"]
            .as_u64()
            .unwrap()
    }

    /// Stops the daemon (SIGTERM) and checks it exits cleanly.
    fn stop(mut self) {
        let status = self.served.stop();
        assert!(status.success(), "daemon exit {status:?}: {}", self.log());
    }
}

/// A monitor of [`TARGET`] as the API takes it.
fn monitor(name: &str, expected_open: &str) -> Value {
    json!({
        "name": name,
        "host": TARGET,
        "expected_open": expected_open,
        "every": "1h",
        "confirm": 1,
        "recheck": "off",
    })
}

#[test]
fn reads_need_a_token_and_writes_the_admin_role() {
    let api = ApiCase::start("api-auth");

    // No token, a wrong one, another scheme: 401 with a Bearer challenge.
    let none = api.call(Call::new(Method::GET, "/api/v1/status"));
    none.problem(401, "unauthorized");
    assert!(
        none.header("www-authenticate").starts_with("Bearer"),
        "{none:#?}"
    );
    let wrong =
        api.call(Call::new(Method::GET, "/api/v1/monitors").token("not-a-token-at-all-0000"));
    wrong.problem(401, "unauthorized");
    assert!(
        wrong.header("www-authenticate").contains("invalid_token"),
        "{wrong:#?}"
    );
    api.call(Call::new(Method::GET, "/api/v1/status").header("authorization", "Basic YTpi"))
        .problem(401, "unauthorized");
    api.call(
        Call::new(Method::POST, "/api/v1/monitors")
            .token("not-a-token-at-all-0000")
            .json(&monitor("nope", "22")),
    )
    .problem(401, "unauthorized");

    // The read-only token reads...
    let status = api.read("/api/v1/status");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["totals"]["monitors"], 1, "{status:#}");
    assert_eq!(api.read("/api/v1/monitors/web-1")["managed_by"], "config");

    // ... and writes nothing: 403 for each write, nothing changed.
    let writes = [
        Call::new(Method::POST, "/api/v1/monitors").json(&monitor("ro-1", "22")),
        Call::new(Method::PUT, "/api/v1/monitors/web-1")
            .if_match("\"1\"")
            .json(&monitor("web-1", "22")),
        Call::new(Method::DELETE, "/api/v1/monitors/web-1").if_match("\"1\""),
        Call::new(Method::POST, "/api/v1/monitors/web-1/scan"),
    ];
    for write in writes {
        let what = format!("{} {}", write.method, write.path);
        let answer = api.call(write.token(READER));
        assert_eq!(answer.status, 403, "{what}: {answer:#?}");
        answer.problem(403, "forbidden");
    }
    api.get("/api/v1/monitors/ro-1").problem(404, "not-found");
    let web = api.read("/api/v1/monitors/web-1");
    assert_eq!(web["version"], 1, "{web:#}");

    // The admin token writes (and a bearer caller needs no CSRF token).
    let created = api.call(
        Call::new(Method::POST, "/api/v1/monitors")
            .token(ADMIN)
            .json(&json!({"name": "admin-1", "host": TARGET, "enabled": false})),
    );
    assert_eq!(created.status, 201, "{created:#?}");

    // Unknown routes and methods are problems too.
    let nothing = api.get("/api/v1/nothing-here");
    nothing.problem(404, "not-found");
    assert!(
        nothing.body["detail"]
            .as_str()
            .unwrap()
            .contains("GET /api/v1/nothing-here"),
        "{nothing:#?}"
    );
    api.get("/api/v1/monitors/web-1/nothing")
        .problem(404, "not-found");
    let patch = api.call(Call::new(Method::PATCH, "/api/v1/monitors/web-1").token(ADMIN));
    patch.problem(405, "method-not-allowed");
    assert_eq!(patch.header("allow"), "GET,HEAD,PUT,DELETE", "{patch:#?}");
    assert_eq!(
        patch.body["detail"], "/api/v1/monitors/web-1 does not take PATCH",
        "{patch:#?}"
    );

    // Bad query values: a 400 naming each parameter.
    let bad = api.get("/api/v1/monitors?page=0&per_page=many&sort=colour&filter=all&bogus=1");
    bad.problem(400, "bad-request");
    let mut fields = bad.fields();
    fields.sort();
    assert_eq!(fields, ["bogus", "page", "per_page", "sort"], "{bad:#?}");
    assert!(
        bad.body["detail"]
            .as_str()
            .unwrap()
            .contains("sort: expected one of attention, name, host"),
        "{bad:#?}"
    );
    let bad = api.get("/api/v1/incidents?open=maybe");
    assert_eq!(
        bad.problem(400, "bad-request")["errors"][0]["field"],
        "open"
    );
    let bad = api.get("/api/v1/events?after=-1&limit=501");
    let mut fields = bad.fields();
    fields.sort();
    assert_eq!(fields, ["after", "limit"], "{bad:#?}");
    let bad = api.get("/api/v1/monitors/web-1/history?port=70000");
    assert_eq!(
        bad.problem(400, "bad-request")["errors"][0]["field"],
        "port"
    );
    api.stop();
}

#[test]
fn bad_input_is_a_problem_naming_the_field_and_changes_nothing() {
    let api = ApiCase::start("api-input");
    let post = |body: Call<'static>| api.call(body.token(ADMIN));

    // Not JSON at all, then JSON that does not parse: where it went wrong.
    post(Call::new(Method::POST, "/api/v1/monitors").raw("{}"))
        .problem(415, "unsupported-media-type");
    let answer = post(
        Call::new(Method::POST, "/api/v1/monitors")
            .raw("{\"name\": \"broken\",\n \"host\": }")
            .header("content-type", "application/json"),
    );
    let problem = answer.problem(400, "bad-request");
    assert_eq!(problem["line"], 2, "{problem:#}");
    assert!(problem["column"].as_u64().unwrap() > 0, "{problem:#}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("line 2 column"),
        "{problem:#}"
    );
    post(
        Call::new(Method::POST, "/api/v1/monitors")
            .raw("[1, 2]")
            .header("content-type", "application/json"),
    )
    .problem(400, "bad-request");

    // JSON that parses with a field of the wrong type: the field is named.
    let answer = post(Call::new(Method::POST, "/api/v1/monitors").json(&json!({
        "name": "typed", "host": TARGET, "confirm": "two", "enabled": "yes"
    })));
    answer.problem(400, "invalid-monitor");
    let mut fields = answer.fields();
    fields.sort();
    assert_eq!(fields, ["confirm", "enabled"], "{answer:#?}");

    // A bad port: check-config's message, for expected_open; nothing made.
    let answer =
        post(Call::new(Method::POST, "/api/v1/monitors").json(&monitor("bad-port", "22,70000")));
    let problem = answer.problem(400, "invalid-monitor");
    assert_eq!(answer.fields(), ["expected_open"], "{answer:#?}");
    let message = problem["errors"][0]["message"].as_str().unwrap().to_owned();
    assert_eq!(message, "port 70000 is out of range (allowed: 1 to 65535)");
    let file = api.case.dir.join("bad-port.toml");
    std::fs::write(
        &file,
        format!(
            "[store]\npath = \"{}\"\n\n[[monitor]]\nname = \"bad-port\"\nhost = \"{TARGET}\"\n\
             expected_open = \"22,70000\"\n",
            api.case.dir.join("other.db").display()
        ),
    )
    .unwrap();
    let checked = std::process::Command::new(BIN)
        .args(["check-config", path(&file)])
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(2), "{}", stderr(&checked));
    assert!(
        stderr(&checked).contains(&message),
        "check-config said {:?}, the API {message:?}",
        stderr(&checked)
    );
    api.get("/api/v1/monitors/bad-port")
        .problem(404, "not-found");
    assert_eq!(api.read("/api/v1/monitors")["total"], 1);

    // An API monitor, then bad changes to it: none is applied.
    let created =
        post(Call::new(Method::POST, "/api/v1/monitors").json(&monitor("api-1", "22,80")));
    assert_eq!(created.status, 201, "{created:#?}");
    assert_eq!(created.header("etag"), "\"1\"");
    let put = |call: Call<'static>| api.call(call.token(ADMIN));
    let body = monitor("api-1", "22,70000");
    put(Call::new(Method::PUT, "/api/v1/monitors/api-1")
        .if_match("\"1\"")
        .json(&body))
    .problem(400, "invalid-monitor");
    put(Call::new(Method::PUT, "/api/v1/monitors/api-1").json(&monitor("api-1", "22")))
        .problem(428, "precondition-required");
    let stale = put(Call::new(Method::PUT, "/api/v1/monitors/api-1")
        .if_match("\"7\"")
        .json(&monitor("api-1", "22")));
    let problem = stale.problem(412, "version-mismatch");
    assert_eq!(problem["current_version"], 1, "{problem:#}");
    assert_eq!(problem["current_etag"], "\"1\"", "{problem:#}");
    let renamed = put(Call::new(Method::PUT, "/api/v1/monitors/api-1")
        .if_match("\"1\"")
        .json(&monitor("api-2", "22")));
    renamed.problem(400, "invalid-monitor");
    assert_eq!(renamed.fields(), ["name"]);
    put(Call::new(Method::PUT, "/api/v1/monitors/api-1")
        .if_match("1")
        .json(&monitor("api-1", "22")))
    .problem(400, "bad-request");
    put(Call::new(Method::DELETE, "/api/v1/monitors/api-1")).problem(428, "precondition-required");
    put(Call::new(Method::DELETE, "/api/v1/monitors/api-1").if_match("\"2\""))
        .problem(412, "version-mismatch");
    let unchanged = api.read("/api/v1/monitors/api-1");
    assert_eq!(unchanged["version"], 1, "{unchanged:#}");
    assert_eq!(
        unchanged["monitor"]["expected_open"], "22,80",
        "{unchanged:#}"
    );

    // Names are unique across the file's monitors and the API's.
    post(Call::new(Method::POST, "/api/v1/monitors").json(&monitor("api-1", "22")))
        .problem(409, "monitor-exists");
    post(Call::new(Method::POST, "/api/v1/monitors").json(&monitor("web-1", "22")))
        .problem(409, "monitor-exists");

    // The configuration file's monitor cannot be changed through the API.
    let answer = put(Call::new(Method::PUT, "/api/v1/monitors/web-1")
        .if_match("\"1\"")
        .json(&monitor("web-1", "22")));
    let problem = answer.problem(409, "managed-by-config");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("managed by the configuration file"),
        "{problem:#}"
    );
    put(Call::new(Method::DELETE, "/api/v1/monitors/web-1").if_match("\"1\""))
        .problem(409, "managed-by-config");
    let web = api.read("/api/v1/monitors/web-1");
    assert_eq!(
        (&web["version"], &web["monitor"]["expected_open"]),
        (&json!(1), &json!("22,80,443")),
        "{web:#}"
    );

    // Unknown monitors, and a disabled one, cannot be changed or scanned.
    put(Call::new(Method::PUT, "/api/v1/monitors/missing")
        .if_match("\"1\"")
        .json(&monitor("missing", "22")))
    .problem(404, "not-found");
    put(Call::new(Method::DELETE, "/api/v1/monitors/missing").if_match("\"1\""))
        .problem(404, "not-found");
    post(Call::new(Method::POST, "/api/v1/monitors/missing/scan")).problem(404, "not-found");
    api.get("/api/v1/monitors/missing/history")
        .problem(404, "not-found");
    api.get("/api/v1/monitors/missing/scans")
        .problem(404, "not-found");
    let mut off = monitor("api-off", "22");
    off["enabled"] = json!(false);
    let created = post(Call::new(Method::POST, "/api/v1/monitors").json(&off));
    assert_eq!(created.status, 201, "{created:#?}");
    assert_eq!(created.body["monitor"]["enabled"], false);
    let answer = post(Call::new(Method::POST, "/api/v1/monitors/api-off/scan"));
    assert!(
        answer.problem(404, "not-found")["detail"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{answer:#?}"
    );
    // `If-Match: *` deletes whatever the version.
    let deleted = put(Call::new(Method::DELETE, "/api/v1/monitors/api-off").if_match("*"));
    assert_eq!(deleted.status, 204, "{deleted:#?}");
    api.get("/api/v1/monitors/api-off")
        .problem(404, "not-found");
    api.stop();
}

#[test]
fn api_monitors_are_scanned_edited_without_lost_updates_and_deleted() {
    let mut api = ApiCase::start("api-life");

    // Created through the API: 201, Location, ETag, the monitor.
    let created = api.call(
        Call::new(Method::POST, "/api/v1/monitors")
            .token(ADMIN)
            .json(&monitor("api-1", "22,80")),
    );
    assert_eq!(created.status, 201, "{created:#?}");
    assert_eq!(created.header("location"), "/api/v1/monitors/api-1");
    assert_eq!(created.header("etag"), "\"1\"");
    let m = &created.body;
    assert_eq!(
        (&m["name"], &m["version"], &m["managed_by"]),
        (&json!("api-1"), &json!(1), &json!("api")),
        "{m:#}"
    );
    assert_eq!(m["monitor"]["expected_open"], "22,80");
    assert_eq!(m["monitor"]["enabled"], true);

    // The daemon scans it: its scan, its incident (6379 is open, not
    // expected), its event with the envelope as JSON.
    api.wait("a scan of api-1", Duration::from_secs(60), |api| {
        (api.scan_count("api-1") > 0).then_some(())
    });
    let event = api.wait("api-1's event", Duration::from_secs(30), |api| {
        let events = api.read("/api/v1/events?monitor=api-1&limit=500");
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "unexpected_port_open")
            .cloned()
    });
    assert!(event["envelope"].is_object(), "{event:#}");
    assert_eq!(event["envelope"]["data"]["port"], 6379, "{event:#}");
    assert_eq!(event["envelope"]["data"]["kind"], "unexpected_port_open");
    assert_eq!(event["monitor"], "api-1");

    let m = api.read("/api/v1/monitors/api-1");
    let status = &m["status"];
    assert_eq!(status["summary"]["unexpected_open"], 1, "{m:#}");
    assert_eq!(status["summary"]["expected_down"], 0, "{m:#}");
    assert_eq!(status["summary"]["reachability"], "reachable", "{m:#}");
    let address = &status["addresses"][0];
    assert_eq!(address["address"], TARGET, "{m:#}");
    let open: Vec<(u64, bool)> = address["open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["expected"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(open, [(22, true), (80, true), (6379, false)], "{m:#}");
    let deviation = &address["open"][2]["deviation"];
    assert!(deviation["confirmed_at"].is_i64(), "{m:#}");
    assert!(m["last_scan"]["id"].is_i64(), "{m:#}");
    assert!(m["next_due_ms"].as_i64().unwrap() > now_ms(), "{m:#}");
    let etag = api.get("/api/v1/monitors/api-1");
    assert_eq!(etag.header("etag"), "\"1\"");

    // History (paged), incidents, the fleet list, the status.
    let history = api.read("/api/v1/monitors/api-1/history");
    assert!(history["total"].as_u64().unwrap() >= 2, "{history:#}");
    assert!(
        history["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["type"] == "incident" && h["port"] == 6379),
        "{history:#}"
    );
    let one = api.read("/api/v1/monitors/api-1/history?per_page=1&page=2");
    assert_eq!(one["items"].as_array().unwrap().len(), 1, "{one:#}");
    assert_eq!((&one["page"], &one["per_page"]), (&json!(2), &json!(1)));
    assert_eq!(one["items"][0], history["items"][1]);
    let since = api.read(&format!(
        "/api/v1/monitors/api-1/history?since={}",
        now_ms() + 60_000
    ));
    assert_eq!(since["total"], 0, "{since:#}");

    // docs/API.md's example: web-1's expected 443, down.
    let web = api.read("/api/v1/monitors/web-1/history?port=443&per_page=10");
    let kinds: Vec<(&str, &str)> = web["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let what = if h["type"] == "incident" {
                &h["kind"]
            } else {
                &h["to"]
            };
            (h["type"].as_str().unwrap(), what.as_str().unwrap())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("state_change", "closed"),
            ("incident", "expected_port_down")
        ],
        "{web:#}"
    );

    let incidents = api.read("/api/v1/incidents?open=true&monitor=api-1");
    assert_eq!(incidents["total"], 1, "{incidents:#}");
    assert_eq!(incidents["items"][0]["port"], 6379);
    assert_eq!(incidents["items"][0]["kind"], "unexpected_port_open");
    assert!(incidents["items"][0]["resolved_at_ms"].is_null());
    // web-1's two (6379 open, 443 down) and api-1's.
    let all = api.wait("every incident", Duration::from_secs(30), |api| {
        let all = api.read("/api/v1/incidents?open=true");
        (all["total"] == 3).then_some(all)
    });
    let confirmed: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["confirmed_at_ms"].as_i64().unwrap())
        .collect();
    assert!(
        confirmed.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {confirmed:?}"
    );

    let fleet = api.read("/api/v1/monitors?sort=name&per_page=1");
    assert_eq!(fleet["total"], 2, "{fleet:#}");
    assert_eq!(fleet["items"].as_array().unwrap().len(), 1);
    assert_eq!(fleet["items"][0]["name"], "api-1");
    assert_eq!(fleet["items"][0]["managed_by"], "api");
    assert_eq!(fleet["items"][0]["unexpected_open"], 1);
    assert!(fleet["items"][0]["next_due_ms"].is_i64(), "{fleet:#}");
    let second = api.read("/api/v1/monitors?sort=name&per_page=1&page=2");
    assert_eq!(second["items"][0]["name"], "web-1");
    assert_eq!(second["items"][0]["expected_down"], 1, "{second:#}");
    let searched = api.read("/api/v1/monitors?search=API-&filter=incidents");
    assert_eq!(searched["total"], 1, "{searched:#}");
    assert_eq!(searched["items"][0]["name"], "api-1");

    let status = api.read("/api/v1/status");
    assert_eq!(status["totals"]["monitors"], 2, "{status:#}");
    assert_eq!(status["totals"]["open_incidents"], 3, "{status:#}");
    assert_eq!(status["daemon"]["scheduled"], 2, "{status:#}");
    assert_eq!(status["daemon"]["stopping"], false);
    assert!(
        status["daemon"]["last_sweep"]["finished_ms"].is_i64(),
        "{status:#}"
    );
    assert!(status["store_bytes"].as_u64().unwrap() > 0);

    // Events page on with `after`.
    let first = api.read("/api/v1/events?limit=1");
    assert_eq!(first["items"].as_array().unwrap().len(), 1, "{first:#}");
    let after = first["next_after"].as_i64().unwrap();
    assert_eq!(after, first["items"][0]["seq"].as_i64().unwrap());
    let rest = api.read(&format!("/api/v1/events?after={after}&limit=500"));
    assert!(!rest["items"].as_array().unwrap().is_empty());
    assert!(
        rest["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_i64().unwrap() > after)
    );

    // Scan now: a new full scan of api-1 (every = 1h: nothing else would).
    let before = api.scan_count("api-1");
    let asked = now_ms();
    let answer = api.call(Call::new(Method::POST, "/api/v1/monitors/api-1/scan").token(ADMIN));
    assert_eq!(answer.status, 202, "{answer:#?}");
    assert_eq!(answer.body["monitor"], "api-1");
    assert!(answer.body["next_due_ms"].as_i64().unwrap() <= now_ms());
    api.wait("the scan asked for", Duration::from_secs(60), |api| {
        (api.scan_count("api-1") > before).then_some(())
    });
    let scans = api.read("/api/v1/monitors/api-1/scans");
    let newest = &scans["items"][0];
    assert_eq!(newest["kind"], "full", "{scans:#}");
    assert!(newest["started_ms"].as_i64().unwrap() >= asked, "{scans:#}");
    assert_eq!(
        newest["addresses"][0]["open_ports"], "22,80,6379",
        "{scans:#}"
    );

    // An edit applies at the next scan: 6379 expected, its incident resolves.
    let edited = api.call(
        Call::new(Method::PUT, "/api/v1/monitors/api-1")
            .token(ADMIN)
            .if_match("\"1\"")
            .json(
                &json!({"host": TARGET, "expected_open": "22,80,6379", "every": "1h",
                          "confirm": 1, "recheck": "off"}),
            ),
    );
    assert_eq!(edited.status, 200, "{edited:#?}");
    assert_eq!(edited.header("etag"), "\"2\"");
    assert_eq!(edited.body["version"], 2);
    assert_eq!(edited.body["monitor"]["expected_open"], "22,80,6379");
    let answer = api.call(Call::new(Method::POST, "/api/v1/monitors/api-1/scan").token(ADMIN));
    assert_eq!(answer.status, 202, "{answer:#?}");
    api.wait(
        "api-1's incident to resolve",
        Duration::from_secs(60),
        |api| {
            let open = api.read("/api/v1/incidents?open=true&monitor=api-1");
            (open["total"] == 0).then_some(())
        },
    );
    let resolved = api.read("/api/v1/incidents?monitor=api-1");
    assert_eq!(resolved["total"], 1, "{resolved:#}");
    assert!(
        resolved["items"][0]["resolved_at_ms"].is_i64(),
        "{resolved:#}"
    );

    // Two clients edit api-1 at once from the same read: exactly one wins,
    // the other is told (412) and redoes its change on the new version;
    // nothing is lost.
    let (alice, bob) = (client(), client());
    let mut version = 2;
    for round in 0..5u16 {
        let read = api.get("/api/v1/monitors/api-1");
        let etag = read.header("etag").to_owned();
        assert_eq!(etag, format!("\"{version}\""));
        let with_port = |m: &Value, port: u16| {
            let mut body = m["monitor"].clone();
            let ports = body["expected_open"].as_str().unwrap().to_owned();
            body["expected_open"] = json!(format!("{ports},{port}"));
            body
        };
        let (a_body, b_body) = (
            with_port(&read.body, 10_000 + round),
            with_port(&read.body, 20_000 + round),
        );
        let put = |body: &Value, etag: &str| {
            Call::new(Method::PUT, "/api/v1/monitors/api-1")
                .token(ADMIN)
                .if_match(etag)
                .json(body)
        };
        let (a, b) = api.rt.block_on(async {
            tokio::join!(
                put(&a_body, &etag).send(&alice, &api.base),
                put(&b_body, &etag).send(&bob, &api.base)
            )
        });
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 412],
            "round {round}: {a:#?} {b:#?}\n{}",
            api.log()
        );
        let (loser, loser_port) = if a.status == 412 {
            (&a, 10_000 + round)
        } else {
            (&b, 20_000 + round)
        };
        let problem = loser.problem(412, "version-mismatch");
        assert_eq!(problem["current_version"], version + 1, "{problem:#}");
        // The loser reads again and redoes its change.
        let again = api.get("/api/v1/monitors/api-1");
        let retried = api.call(put(
            &with_port(&again.body, loser_port),
            again.header("etag"),
        ));
        assert_eq!(retried.status, 200, "{retried:#?}");
        version += 2;
        assert_eq!(retried.body["version"], version);
    }
    let last = api.read("/api/v1/monitors/api-1");
    let ports = last["monitor"]["expected_open"].as_str().unwrap();
    for round in 0..5 {
        for port in [10_000 + round, 20_000 + round] {
            assert!(
                ports.split(',').any(|part| {
                    let (low, high) = part.split_once('-').unwrap_or((part, part));
                    (low.parse::<u16>().unwrap()..=high.parse().unwrap()).contains(&port)
                }),
                "lost the change adding {port}: {ports}"
            );
        }
    }
    assert_eq!(last["version"], version);

    // Deleted: gone from the API and from the daemon's schedule; its
    // history stays readable.
    let stale = api.call(
        Call::new(Method::DELETE, "/api/v1/monitors/api-1")
            .token(ADMIN)
            .if_match("\"1\""),
    );
    stale.problem(412, "version-mismatch");
    let deleted = api.call(
        Call::new(Method::DELETE, "/api/v1/monitors/api-1")
            .token(ADMIN)
            .if_match(&format!("\"{version}\"")),
    );
    assert_eq!(deleted.status, 204, "{deleted:#?}");
    api.get("/api/v1/monitors/api-1").problem(404, "not-found");
    assert_eq!(api.read("/api/v1/monitors")["total"], 1);
    assert!(
        api.read("/api/v1/monitors/api-1/history")["total"]
            .as_u64()
            .unwrap()
            > 0
    );
    api.wait("the daemon to drop api-1", Duration::from_secs(30), |api| {
        (api.read("/api/v1/status")["daemon"]["scheduled"] == 1).then_some(())
    });
    api.stop();
}

#[test]
fn agents_are_listed_as_the_coordinator_recorded_them() {
    let api = ApiCase::start("api-agents");

    // None yet; a token is needed; reads only.
    assert_eq!(
        api.read("/api/v1/agents"),
        json!({"items": [], "live": 0, "silent": 0, "gone": 0})
    );
    api.call(Call::new(Method::GET, "/api/v1/agents"))
        .problem(401, "unauthorized");
    api.call(Call::new(Method::POST, "/api/v1/agents").token(ADMIN))
        .problem(405, "method-not-allowed");

    // Two agents recorded through a store connection of their own, as the
    // coordinator records what it sees in PALISADE_AGENTS: fra1-a live and
    // scanning, ams-1 gone.
    let now = now_ms();
    let beat = |name: &str, labels: &[&str], jobs_done, job| palisade_core::cluster::AgentBeat {
        version: palisade_core::cluster::CLUSTER_VERSION,
        name: name.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        rate: 250_000,
        started: now - 60_000,
        jobs_done,
        job,
    };
    {
        let mut store = palisade::store::Store::connect(&api.case.dir.join("palisade.db")).unwrap();
        let job = palisade_core::cluster::JobId {
            sweep: now - 10_000,
            slice: 0,
            shard: 3,
        };
        store
            .record_agent_beat(
                &beat("fra1-a", &["any", "site=fra1"], 9, Some(job)),
                now - 2_000,
            )
            .unwrap();
        store
            .record_agent_beat(&beat("ams-1", &["any"], 4, None), now - 40_000)
            .unwrap();
        store.record_agent_gone("ams-1", now - 25_000).unwrap();
    }
    let agents = api.read("/api/v1/agents");
    assert_eq!(
        (agents["live"].clone(), agents["gone"].clone()),
        (json!(1), json!(1)),
        "{agents:#}"
    );
    assert_eq!(
        agents["items"],
        json!([
            {"name": "ams-1", "labels": ["any"], "rate": 250_000, "started_ms": now - 60_000,
             "last_beat_ms": now - 40_000, "jobs_done": 4, "job": null,
             "gone_at_ms": now - 25_000, "state": "gone"},
            {"name": "fra1-a", "labels": ["any", "site=fra1"], "rate": 250_000,
             "started_ms": now - 60_000, "last_beat_ms": now - 2_000, "jobs_done": 9,
             "job": format!("{}.0.3", now - 10_000), "gone_at_ms": null, "state": "live"},
        ])
    );
    api.stop();
}
