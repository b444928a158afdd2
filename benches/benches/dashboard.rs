//! The dashboard and the API over a store of 10,000 monitors: how long each
//! page takes to answer, through the daemon's own router (`http::router`:
//! the handlers, their SQL on the store's pooled connections, rendering),
//! without a socket. `/healthz`, which touches nothing, is the reference of
//! the same run; the figures are medians and 95th percentiles of sequential
//! requests.
//!
//! The store is built as the daemon builds it: the monitors imported, one
//! conclusive full scan each, decided by `daemon::sweep::decide` and stored
//! by `Store::record_scan`; one monitor in 100 has an expected port down and
//! an unexpected port open (confirmed: `confirm = 1`), one in 500 is
//! unreachable.
//!
//! `cargo bench -p palisade-benches --bench dashboard -- [--quick]
//! [--monitors N] [--json FILE] [--build-only STORE]` (`--build-only`: make
//! the store and keep it, for timing other readers such as `palisade status`)

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use palisade::daemon::control::Control;
use palisade::daemon::sweep::decide;
use palisade::http::auth::Auth;
use palisade::http::{AppState, router};
use palisade::metrics::Metrics;
use palisade::store::Store;
use palisade_core::monitor::{AddressReplies, MonitorSpec, Ports, Scope};
use palisade_core::plan::ScanFacts;

struct Args {
    quick: bool,
    monitors: usize,
    json: Option<String>,
    /// Only build the store, at this path, and keep it.
    build_only: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut args = Args {
        quick: false,
        monitors: 10_000,
        json: None,
        build_only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--monitors" => {
                args.monitors = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--monitors N")
            }
            "--json" => args.json = it.next(),
            "--build-only" => args.build_only = it.next().map(Into::into),
            _ => {} // cargo bench's own flags (--bench)
        }
    }
    args
}

fn address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 2) as u8))
}

/// A store of `n` monitors, each scanned once.
fn build_store(path: &std::path::Path, n: usize, now: i64) -> Store {
    let mut store = Store::open(path).expect("store");
    let specs: Vec<MonitorSpec> = (0..n)
        .map(|i| MonitorSpec {
            name: format!("web-{i:05}"),
            host: address(i).to_string(),
            expected_open: [22, 80, 443].into(),
            confirm: 1,
            ..MonitorSpec::default()
        })
        .collect();
    store
        .import_config_monitors(&specs, now)
        .expect("import the monitors");
    let fresh = palisade_core::monitor::MonitorState::new();
    for (i, spec) in specs.iter().enumerate() {
        let open: Ports = if i % 100 == 7 {
            [22, 80, 6379].into_iter().collect()
        } else {
            [22, 80, 443].into_iter().collect()
        };
        let scan = ScanFacts {
            sweep: now,
            monitor: spec.name.clone(),
            host: spec.host.clone(),
            addresses: BTreeMap::from([(
                address(i),
                AddressReplies {
                    reachable: i % 500 != 3,
                    open: if i % 500 == 3 { Ports::new() } else { open },
                    closed: Ports::new(),
                },
            )]),
            scope: Scope::Full,
            started: now,
            finished: now + 1_000,
            inconclusive: None,
            retries: None,
        };
        let id = store.next_scan_id().expect("scan id");
        let decided = decide(spec, &fresh, scan, id, "palisade://bench");
        store.record_scan(&decided).expect("record the scan");
    }
    store
}

fn main() {
    let args = args();
    let dir = std::env::temp_dir().join(format!("palisade-bench-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("palisade.db");
    let now = 1_780_000_000_000;
    if let Some(path) = &args.build_only {
        build_store(path, args.monitors, now);
        eprintln!("store of {} monitors: {}", args.monitors, path.display());
        return;
    }
    let built = Instant::now();
    let store = build_store(&path, args.monitors, now);
    let size = store.size_bytes().unwrap_or(0);
    drop(store);
    eprintln!(
        "store: {} monitors, {:.1} MiB, built in {:.1} s",
        args.monitors,
        size as f64 / (1 << 20) as f64,
        built.elapsed().as_secs_f64()
    );

    let control = Control::new(now, Default::default());
    let state = AppState::new(
        &path,
        control.handle(),
        Arc::new(Metrics::new()),
        Auth::new(None).expect("open access"),
    );
    let app = router(state);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let get = |uri: &str, cookie: Option<&str>| {
        let mut request = Request::get(uri);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let request = request.body(Body::empty()).expect("request");
        let app = app.clone();
        runtime.block_on(async move {
            let response = app.oneshot(request).await.expect("infallible");
            let status = response.status();
            let cookie = response
                .headers()
                .get(header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .map(str::to_owned);
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            (status, cookie, body.len())
        })
    };
    // A session: the dashboard's pages need one (open access on loopback
    // gives it on the first request).
    let (_, cookie, _) = get("/", None);
    let cookie = cookie.expect("a session cookie from the first page");
    let middle = args.monitors / 50 / 2 + 1;
    let pages = [
        ("healthz (reference)", "/healthz".to_owned()),
        ("fleet, page 1", "/".to_owned()),
        (
            "fleet, a middle page by name",
            format!("/?sort=name&page={middle}"),
        ),
        ("fleet, search", "/?search=web-0424".to_owned()),
        ("fleet, with incidents", "/?filter=incidents".to_owned()),
        ("monitor page", "/monitors/web-00107".to_owned()),
        ("incidents", "/incidents".to_owned()),
        ("settings", "/settings".to_owned()),
        ("api monitors, page 1", "/api/v1/monitors".to_owned()),
        (
            "api monitors, a middle page",
            format!("/api/v1/monitors?sort=name&page={middle}"),
        ),
        ("api monitor", "/api/v1/monitors/web-00107".to_owned()),
        ("api incidents", "/api/v1/incidents".to_owned()),
        ("api status", "/api/v1/status".to_owned()),
        ("metrics", "/metrics".to_owned()),
    ];
    let requests = if args.quick { 10 } else { 50 };
    let mut rows = Vec::new();
    let mut reference = None;
    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>10}",
        "page", "median ms", "p95 ms", "× healthz", "KiB"
    );
    for (name, uri) in &pages {
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0;
        for i in 0..requests + 3 {
            let start = Instant::now();
            let (status, _, len) = get(uri, Some(&cookie));
            let took = start.elapsed().as_secs_f64() * 1e3;
            assert_eq!(status, StatusCode::OK, "{uri}");
            bytes = len;
            if i >= 3 {
                times.push(took);
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
        let reference_ms = *reference.get_or_insert(median);
        let ratio = median / reference_ms;
        println!(
            "{name:<32} {median:>10.3} {p95:>10.3} {ratio:>10.1} {:>10.1}",
            bytes as f64 / 1024.0
        );
        rows.push(serde_json::json!({
            "page": name, "uri": uri, "median_ms": median, "p95_ms": p95,
            "ratio_to_healthz": ratio, "bytes": bytes, "monitors": args.monitors,
        }));
    }
    if let Some(json) = args.json {
        std::fs::write(&json, serde_json::to_string_pretty(&rows).expect("json"))
            .expect("write --json");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
