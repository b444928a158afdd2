//! The daemon's self-monitoring over HTTP, as root, in testbeds of its own:
//! a real Prometheus (Debian's `prometheus`, on the host's loopback, with a
//! store in a temporary directory) scrapes `/metrics` of a daemon that runs
//! in the scanner namespace (reached through a loopback bridge), and the
//! values it stores are those of the daemon's scan summaries of the same
//! sweeps; `promtool check metrics` (Prometheus' strict text parser and
//! linter) passes the exposition; `/readyz` names the check that fails when
//! the scan interface goes away or the store's write lock is held; with a
//! tokens file `/metrics` needs a token, which Prometheus sends from its
//! `credentials_file`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_sim::testbed::{KillOnDrop, bounded, stderr};
use serde_json::Value;

mod common;

use common::{DaemonCase, ServedDaemon, free_port, ms, now_ms, path};

/// Waits for `f` to give a value, `limit` at most; panics naming `what`
/// (and the last thing `f` saw) on timeout.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    start.elapsed() < limit,
                    "timed out after {limit:?} waiting for {what}; last: {last}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

/// An HTTP answer: status, content type, body.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// `curl` (bounded) of `url` with extra arguments (headers).
fn get(url: &str, extra: &[&str]) -> Answer {
    let out = bounded(
        {
            let mut c = Command::new("curl");
            c.args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code} %{content_type}",
            ])
            .args(extra)
            .arg(url);
            c
        },
        Duration::from_secs(15),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, content_type) = trailer.split_once(' ').unwrap_or((trailer, ""));
    Answer {
        status: status.parse().unwrap_or(0),
        content_type: content_type.to_owned(),
        body: body.to_owned(),
    }
}

/// A daemon of `case` serving `[http]` ([`DaemonCase::serve`]), asked with
/// curl.
struct Served(ServedDaemon);

impl std::ops::Deref for Served {
    type Target = ServedDaemon;
    fn deref(&self) -> &ServedDaemon {
        &self.0
    }
}

impl Served {
    fn start(case: &DaemonCase, tokens: Option<&Path>) -> Served {
        Served(case.serve(tokens))
    }

    fn get(&self, path: &str, extra: &[&str]) -> Answer {
        get(&self.url(path), extra)
    }

    /// The fields of each `slice probed` line of the daemon's log (one slice per sweep here).
    fn slices_probed(&self) -> Vec<BTreeMap<String, String>> {
        self.log_text()
            .lines()
            .map(strip_ansi)
            .filter(|l| l.contains("slice probed"))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|w| w.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }

    /// `/readyz`: its status and the checks of its JSON body that failed.
    fn readyz(&self) -> (u16, Value) {
        let a = self.get("/readyz", &[]);
        let body: Value = serde_json::from_str(&a.body).unwrap_or_else(|e| {
            panic!(
                "/readyz: status {}, not JSON ({e}): {:?}; log: {}",
                a.status,
                a.body,
                self.log_text()
            )
        });
        (a.status, body)
    }

    fn stop(mut self) {
        let status = self.0.stop();
        assert!(
            status.success(),
            "daemon exit {status:?}: {}",
            self.log_text()
        );
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The names of the failed checks of a `/readyz` body.
fn failed_checks(body: &Value) -> Vec<String> {
    body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A Prometheus on a free port of the host's loopback, with its store in a
/// directory of its own; killed and removed when dropped.
struct Prometheus {
    process: KillOnDrop,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Scrapes `target` (host:port) every second as job `palisade`;
    /// `scrape_extra` is added to the scrape config (YAML, 4 spaces in).
    fn start(dir: &Path, target: &str, scrape_extra: &str) -> Prometheus {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: palisade\n    static_configs:\n      - targets: \
                 ['{target}']\n{scrape_extra}"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let process = KillOnDrop(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("prometheus (Debian's prometheus package; cargo xtask setup)"),
        );
        let prometheus = Prometheus { process, port, dir };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            let a = get(&prometheus.url("/-/ready"), &[]);
            (a.status == 200)
                .then_some(())
                .ok_or_else(|| prometheus.log())
        });
        prometheus
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Waits until the palisade target's last scrape succeeded.
    fn wait_until_up(&self) {
        wait_for("the target to be up", Duration::from_secs(60), || {
            let a = get(&self.url("/api/v1/targets"), &[]);
            let v: Value = serde_json::from_str(&a.body).map_err(|e| e.to_string())?;
            let target = &v["data"]["activeTargets"][0];
            (target["health"] == "up")
                .then_some(())
                .ok_or_else(|| target.to_string())
        });
    }

    /// The series of an instant query: each one's labels and value.
    fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let a = get(
            &self.url("/api/v1/query"),
            &["--get", "--data-urlencode", &format!("query={promql}")],
        );
        let v: Value = serde_json::from_str(&a.body)
            .unwrap_or_else(|e| panic!("query {promql}: {e}: {}", a.body));
        assert_eq!(v["status"], "success", "query {promql}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// The value of a query that gives one series.
    fn value(&self, promql: &str) -> f64 {
        let series = self.query(promql);
        assert_eq!(series.len(), 1, "{promql}: {series:?}");
        series[0].1
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The scan summary events the daemon stored (its outbox), oldest first:
/// each envelope's data.
fn scan_summaries(case: &DaemonCase) -> Vec<Value> {
    let Ok(store) = palisade::store::Store::connect(&case.dir.join("palisade.db")) else {
        return Vec::new();
    };
    store
        .events(0, 1000, None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "scan")
        .map(|e| serde_json::from_str::<Value>(&e.payload).unwrap()["data"].clone())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn prometheus_scrapes_the_numbers_of_the_scan_summaries() {
    let test_start = now_ms();
    // A full sweep (the baseline: 443 expected but closed, 6379 open
    // unexpectedly), then a re-check of those two ports 2 s later confirms
    // both; nothing more for an hour.
    let mut case = DaemonCase::new(
        "metrics",
        "every = \"1h\"\nconfirm = 2\nrecheck = \"2s\"",
        200_000,
    );
    case.listen(&[22, 80, 6379]);
    // A webhook nobody listens to (inside the scanner namespace): its
    // events wait, its attempts fail.
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&case.config)
        .unwrap();
    write!(
        config,
        "\n[[sink]]\nkind = \"webhook\"\nname = \"down-hook\"\n\
         url = \"http://127.0.0.1:9/hook\"\ntimeout = \"1s\"\nmax_retries = 0\n"
    )
    .unwrap();
    drop(config);
    let served = Served::start(&case, None);
    wait_for("both incidents", Duration::from_secs(60), || {
        let mut kinds: Vec<String> = case
            .alerts()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect();
        kinds.sort();
        (kinds == ["expected_port_down", "unexpected_port_open"])
            .then_some(())
            .ok_or_else(|| format!("{kinds:?}"))
    });
    // Quiet: no scan for longer than the re-check delay.
    let mut seen = (scan_summaries(&case).len(), Instant::now());
    wait_for("the daemon to be idle", Duration::from_secs(60), || {
        let n = scan_summaries(&case).len();
        if n != seen.0 {
            seen = (n, Instant::now());
        }
        (seen.1.elapsed() > Duration::from_secs(4))
            .then_some(())
            .ok_or_else(|| format!("{n} scans"))
    });
    let scans = scan_summaries(&case);
    let kinds: Vec<&str> = scans
        .iter()
        .map(|s| s["scan_kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"full"), "{kinds:?}");
    assert!(kinds.len() >= 2 && kinds[1..].iter().all(|k| *k == "recheck"));
    assert!(scans.iter().all(|s| s["conclusive"] == true), "{scans:?}");
    let done = served.slices_probed();
    assert_eq!(done.len(), scans.len(), "{}", served.log_text());

    let prometheus = Prometheus::start(&case.dir, &format!("127.0.0.1:{}", served.port), "");
    prometheus.wait_until_up();
    assert_eq!(prometheus.value("up{job=\"palisade\"}"), 1.0);
    wait_for("every sweep scraped", Duration::from_secs(30), || {
        let sum: f64 = prometheus
            .query("palisade_sweeps_total")
            .iter()
            .map(|(_, v)| v)
            .sum();
        (sum as usize == scans.len())
            .then_some(())
            .ok_or_else(|| format!("{sum} sweeps"))
    });

    // Sweeps, by kind: how many, how long (the summaries' started to
    // finished), how they ended.
    for kind in ["full", "recheck"] {
        let of_kind: Vec<&Value> = scans.iter().filter(|s| s["scan_kind"] == kind).collect();
        let seconds: f64 = of_kind
            .iter()
            .map(|s| (ms(&s["finished"]) - ms(&s["started"])) as f64 / 1000.0)
            .sum();
        let count = prometheus.value(&format!(
            "palisade_sweep_duration_seconds_count{{kind=\"{kind}\"}}"
        ));
        let sum = prometheus.value(&format!(
            "palisade_sweep_duration_seconds_sum{{kind=\"{kind}\"}}"
        ));
        assert_eq!(count as usize, of_kind.len(), "{kind}");
        assert!(
            close(sum, seconds),
            "{kind}: {sum} s scraped, {seconds} s in the summaries"
        );
        assert_eq!(
            prometheus.value(&format!(
                "palisade_sweeps_total{{kind=\"{kind}\",outcome=\"completed\"}}"
            )) as usize,
            of_kind.len()
        );
        assert_eq!(
            prometheus.value(&format!(
                "palisade_sweep_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}}"
            )) as usize,
            of_kind.len()
        );
    }
    assert_eq!(
        prometheus.value("sum(palisade_sweeps_total{outcome!=\"completed\"})"),
        0.0
    );

    // Probes and replies: the summaries' open ports, the scanner's own
    // counts (its `sweep done` log lines).
    let total = |field: &str| -> f64 {
        done.iter()
            .map(|d| {
                d[field]
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("{field}: {d:?}"))
            })
            .sum()
    };
    let open_in_summaries: u64 = scans
        .iter()
        .flat_map(|s| s["addresses"].as_array().unwrap())
        .map(|a| a["open_count"].as_u64().unwrap())
        .sum();
    let replies =
        |answer: &str| prometheus.value(&format!("palisade_replies_total{{answer=\"{answer}\"}}"));
    let probes =
        |probe: &str| prometheus.value(&format!("palisade_probes_sent_total{{probe=\"{probe}\"}}"));
    assert_eq!(replies("open"), open_in_summaries as f64);
    assert_eq!(replies("open"), total("open"));
    assert_eq!(replies("closed"), total("closed"));
    assert_eq!(replies("echo"), total("echo_replies"));
    assert_eq!(probes("syn"), total("sent"));
    assert_eq!(probes("syn_retry"), total("retries"));
    // The full sweep: every port of the one address, once.
    assert_eq!(done[0]["sent"], "65535");
    assert_eq!(scans[0]["addresses"].as_array().unwrap().len(), 1);
    assert_eq!(
        prometheus.value("sum(palisade_invalid_replies_total)"),
        total("invalid")
    );
    assert_eq!(prometheus.value("palisade_replies_lost_total"), 0.0);
    let rate: f64 = done.last().unwrap()["rate"].parse().unwrap();
    let scraped = prometheus.value("palisade_achieved_rate_probes_per_second");
    assert!(
        close(scraped, rate),
        "rate {scraped} scraped, {rate} logged"
    );
    assert_eq!(prometheus.value("palisade_data_path_up"), 1.0);

    // What the store holds.
    assert_eq!(
        prometheus.value(
            "palisade_monitor_last_conclusive_full_scan_timestamp_seconds{monitor=\"web-1\"}"
        ),
        ms(&scans[0]["started"]) as f64 / 1000.0
    );
    let incidents: BTreeMap<String, f64> = prometheus
        .query("palisade_open_incidents")
        .into_iter()
        .map(|(l, v)| (l["kind"].clone(), v))
        .collect();
    let expected: BTreeMap<String, f64> = [
        ("expected_port_down", 1.0),
        ("host_answers_all_ports", 0.0),
        ("host_unreachable", 0.0),
        ("monitor_stale", 0.0),
        ("scan_failed", 0.0),
        ("unexpected_port_open", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(incidents, expected);
    let sink = format!("jsonl:{}", path(&case.events));
    wait_for("the sink's queue to empty", Duration::from_secs(30), || {
        let v = prometheus.value(&format!(
            "palisade_outbox_pending_events{{sink=\"{sink}\"}}"
        ));
        (v == 0.0)
            .then_some(())
            .ok_or_else(|| format!("{v} pending"))
    });
    assert_eq!(
        prometheus.value(&format!("palisade_outbox_dead_letters{{sink=\"{sink}\"}}")),
        0.0
    );
    assert_eq!(
        prometheus.value(&format!(
            "palisade_delivery_failures_total{{sink=\"{sink}\"}}"
        )),
        0.0
    );
    let alerts = case.alerts().len() as f64;
    wait_for("the webhook's queue", Duration::from_secs(30), || {
        let v = prometheus.value("palisade_outbox_pending_events{sink=\"down-hook\"}");
        (v == alerts)
            .then_some(())
            .ok_or_else(|| format!("{v} pending, {alerts} events"))
    });
    assert!(prometheus.value("palisade_delivery_failures_total{sink=\"down-hook\"}") >= 1.0);
    assert_eq!(
        prometheus.value("palisade_outbox_dead_letters{sink=\"down-hook\"}"),
        0.0
    );
    assert_eq!(
        prometheus.value("palisade_monitors{state=\"enabled\"}"),
        1.0
    );
    assert_eq!(
        prometheus.value("palisade_monitors{state=\"disabled\"}"),
        0.0
    );
    assert!(prometheus.value("palisade_store_size_bytes") > 0.0);
    let started = prometheus.value("palisade_start_time_seconds") * 1000.0;
    assert!(
        (test_start as f64..=now_ms() as f64).contains(&started),
        "started {started}"
    );
    assert_eq!(
        prometheus.value(&format!(
            "palisade_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );

    // The exposition: Prometheus text for promtool (strict parser and
    // linter: no problem at all), OpenMetrics for whoever asks.
    let text = served.get("/metrics", &[]);
    assert_eq!(text.status, 200);
    assert_eq!(
        text.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", text.body).as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {} {}{}",
        checked.status,
        String::from_utf8_lossy(&checked.stdout),
        stderr(&checked)
    );
    let open = served.get(
        "/metrics",
        &["-H", "Accept: application/openmetrics-text;version=1.0.0"],
    );
    assert_eq!(open.status, 200);
    assert!(
        open.content_type
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    assert!(open.body.trim_end().ends_with("\n# EOF"), "{}", open.body);

    // Alive and ready.
    let healthz = served.get("/healthz", &[]);
    assert_eq!((healthz.status, healthz.body.trim()), (200, "ok"));
    let (status, body) = served.readyz();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    drop(prometheus);
    served.stop();
}

#[test]
fn readyz_names_the_check_that_fails_and_recovers() {
    let mut case = DaemonCase::new(
        "ready",
        "every = \"2s\"\nconfirm = 2\nrecheck = \"off\"",
        300_000,
    );
    case.listen(&[22, 80, 443]);
    let served = Served::start(&case, None);
    let ready_after_a_sweep = |served: &Served| {
        wait_for("ready after a good sweep", Duration::from_secs(60), || {
            let (status, body) = served.readyz();
            let swept = body["checks"][2]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("succeeded"));
            (status == 200 && swept)
                .then_some(())
                .ok_or_else(|| format!("{status} {body}"))
        })
    };
    ready_after_a_sweep(&served);

    // The store's write lock held by another process: not ready (after
    // the check's 1 s wait), ready again once it is let go.
    let db = rusqlite::Connection::open(case.dir.join("palisade.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, body) = served.readyz();
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    assert_eq!(status, 503, "{body}");
    assert_eq!(failed_checks(&body), ["store"], "{body}");
    assert!(
        body["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("locked")
    );
    let (status, body) = served.readyz();
    assert_eq!(status, 200, "{body}");

    // The scan interface goes away: the next sweep cannot start its data
    // path.
    case.tb.unplug_scanner().unwrap();
    let body = wait_for("not ready", Duration::from_secs(60), || {
        let (status, body) = served.readyz();
        (status == 503 && failed_checks(&body).len() == 2)
            .then_some(body.clone())
            .ok_or_else(|| format!("{status} {body}"))
    });
    assert_eq!(failed_checks(&body), ["data_path", "last_sweep"], "{body}");
    let metrics = served.get("/metrics", &[]).body;
    assert!(
        metrics.lines().any(|l| l == "palisade_data_path_up 0"),
        "{metrics}"
    );
    let failed: f64 = metrics
        .lines()
        .find(|l| l.starts_with("palisade_sweeps_total{kind=\"full\",outcome=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(failed >= 1.0, "{metrics}");
    // Alive all the same.
    assert_eq!(served.get("/healthz", &[]).status, 200);

    // Back: ready again after the next good sweep.
    case.tb.replug_scanner().unwrap();
    ready_after_a_sweep(&served);
    let metrics = served.get("/metrics", &[]).body;
    assert!(
        metrics.lines().any(|l| l == "palisade_data_path_up 1"),
        "{metrics}"
    );
    served.stop();
}

#[test]
fn with_a_tokens_file_metrics_needs_a_token_and_prometheus_sends_its_own() {
    const READER: &str = "read-token-for-prometheus-0123456789";
    const ADMIN: &str = "admin-token-0123456789abcdef";
    let mut case = DaemonCase::new(
        "metrics-auth",
        "every = \"1h\"\nconfirm = 2\nrecheck = \"off\"",
        300_000,
    );
    case.listen(&[22, 80, 443]);
    let tokens = case.dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("read {READER} prometheus\nadmin {ADMIN} ops\n"),
    )
    .unwrap();
    let served = Served::start(&case, Some(&tokens));

    let none = served.get("/metrics", &[]);
    assert_eq!(none.status, 401, "{}", none.body);
    let wrong = served.get(
        "/metrics",
        &["-H", "Authorization: Bearer not-a-token-at-all-0000"],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    for token in [READER, ADMIN] {
        let ok = served.get(
            "/metrics",
            &["-H", &format!("Authorization: Bearer {token}")],
        );
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert!(ok.body.contains("palisade_build_info{"), "{}", ok.body);
    }
    // Health checks stay open.
    assert_eq!(served.get("/healthz", &[]).status, 200);
    let readyz = served.get("/readyz", &[]);
    assert!(matches!(readyz.status, 200 | 503), "{}", readyz.body);

    // Prometheus reads its token from a file (`authorization:
    // credentials_file`, type Bearer by default).
    let credentials = case.dir.join("prometheus-token");
    std::fs::write(&credentials, format!("{READER}\n")).unwrap();
    let prometheus = Prometheus::start(
        &case.dir,
        &format!("127.0.0.1:{}", served.port),
        &format!(
            "    authorization:\n      credentials_file: {}\n",
            credentials.display()
        ),
    );
    prometheus.wait_until_up();
    assert_eq!(
        prometheus.value(&format!(
            "palisade_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    drop(prometheus);
    served.stop();
}
