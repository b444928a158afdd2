//! `cargo xtask demo`: the main job on a fresh machine: setup, build, and
//! Palisade at work on a testbed (a scan, then seven monitor sweeps), with a
//! screenshot of the dashboard while incidents are open. `--serve` then
//! keeps the testbed and the daemon running, the dashboard on a local
//! port, until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use palisade_sim::bridge::LoopbackBridge;
use palisade_sim::testbed::Testbed;

use crate::{build_release, setup::setup};

/// `cargo xtask demo` options.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// After the demo, keep the testbed and the daemon running with the
    /// dashboard on http://127.0.0.1:<port>/ until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// The dashboard's port on this host's loopback.
    #[arg(long, default_value_t = 9180)]
    port: u16,
}

pub(crate) fn demo(args: &DemoArgs) -> Result<()> {
    use palisade_sim::testbed::{Testbed, TestbedConfig};
    use std::net::IpAddr;

    setup()?;
    let bins = build_release()?;
    let bin = bins.palisade.as_str();

    say("building a testbed: network namespaces joined by veth, 198.18.0.0/24 and 2001:2::/64");
    let mut tb = Testbed::new(TestbedConfig {
        targets_v4: vec!["198.18.0.2".parse()?, "198.18.0.3".parse()?],
        targets_v6: vec!["2001:2::2".parse()?],
        tx_queues: 1,
    })
    .context("cannot build the testbed (needs root)")?;
    let web: IpAddr = "198.18.0.2".parse()?;
    let services: [(&str, &[u16]); 3] = [
        ("198.18.0.2", &[22, 80]),
        ("198.18.0.3", &[25, 587, 993]),
        ("2001:2::2", &[22, 443]),
    ];
    let mut listen = Vec::new();
    for (ip, ports) in services {
        let ip: IpAddr = ip.parse()?;
        listen.extend(ports.iter().map(|&p| (ip, p)));
    }
    tb.listen(&listen).context("cannot start the listeners")?;
    let web_443 = tb.listen(&[(web, 443)])?;
    say(
        "198.18.0.2 (web-1) listens on 22, 80, 443; 198.18.0.3 on 25, 587, 993; 2001:2::2 on 22, 443",
    );

    say("1. palisade scan: all 65,535 TCP ports of the three hosts at 1 Mpps");
    let scan = |tb: &Testbed, args: &[&str]| -> Result<()> {
        let status = tb
            .in_scanner(bin)
            .args(args)
            .status()
            .context("cannot run palisade")?;
        if !status.success() {
            bail!("palisade {} failed ({status})", args.first().unwrap_or(&""));
        }
        Ok(())
    };
    scan(
        &tb,
        &[
            "scan",
            "198.18.0.2-198.18.0.3",
            "2001:2::2",
            "-p",
            "-",
            "--rate",
            "1000000",
            "--format",
            "text",
        ],
    )?;

    // The dashboard's port: the same on the scanner namespace's loopback
    // (the daemon's) and on this host's (the bridge's).
    let port = if args.serve {
        args.port
    } else {
        palisade_sim::bridge::free_port().context("no free port")?
    };
    say("2. palisade run: monitoring web-1, which should have exactly 22, 80 and 443 open");
    let dir = std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[scan]\nrate = 500000\nwait = \"500ms\"\n\n[store]\npath = \"{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[monitor]]\nname = \"web-1\"\nhost = \"198.18.0.2\"\nexpected_open = [22, 80, 443]\n\
             every = \"12h\"\nconfirm = 2\nrecheck = \"off\"\n",
            dir.join("palisade.db").display()
        ),
    )?;
    let cfg = config.to_str().context("non-UTF-8 path")?;
    let sweep = |tb: &Testbed, what: &str| -> Result<()> {
        say(what);
        scan(tb, &["run", "-c", cfg, "--once", "--events", "-"])
    };
    let result = (|| -> Result<()> {
        sweep(
            &tb,
            "sweep 1 (baseline): everything as expected, so no events",
        )?;
        tb.stop_listener(web_443)?;
        let redis = tb.listen(&[(web, 6379)])?;
        say("change: 443 stops listening on web-1, and Redis (6379) opens");
        sweep(
            &tb,
            "sweep 2: both deviations seen once: not yet confirmed, no alert",
        )?;
        sweep(
            &tb,
            "sweep 3: seen twice in a row: expected_port_down 443, unexpected_port_open 6379 (high)",
        )?;
        say("the dashboard, with both incidents open");
        match screenshots(&tb, bin, &config, port) {
            Ok(shots) => {
                for shot in shots {
                    say(&format!("screenshot: {}", shot.display()));
                }
            }
            Err(e) => say(&format!("no screenshot of the dashboard: {e:#}")),
        }
        tb.stop_listener(redis)?;
        tb.listen(&[(web, 443)])?;
        say("fix: 443 listens again, Redis is gone");
        sweep(
            &tb,
            "sweep 4: port_resolved for both, then monitor_resolved",
        )?;
        tb.set_silent(&[web])?;
        say(
            "outage: web-1 goes silent (every packet to it dropped: no echo reply, no SYN-ACK, no RST)",
        );
        sweep(
            &tb,
            "sweep 5: unreachable once: not yet confirmed, no alert",
        )?;
        sweep(
            &tb,
            "sweep 6: unreachable twice: ONE host_unreachable (critical) listing 22, 80, 443, not one alert per port",
        )?;
        tb.set_silent(&[])?;
        say("web-1 answers again");
        sweep(
            &tb,
            "sweep 7: host_reachable, then monitor_resolved; no burst of port events",
        )?;
        say("palisade status");
        scan(&tb, &["status", "-c", cfg])?;
        say("palisade history web-1");
        scan(&tb, &["history", "web-1", "-c", cfg])?;
        if args.serve {
            serve(&tb, bin, &config, port)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    tb.teardown().context("cannot tear the testbed down")?;
    result?;
    say("testbed torn down");
    Ok(())
}

/// The daemon in the scanner namespace, its dashboard on `127.0.0.1:port`
/// of this host (through a loopback bridge); stopped when dropped.
struct Dashboard {
    daemon: Child,
    _bridge: LoopbackBridge,
    url: String,
}

impl Dashboard {
    fn start(tb: &Testbed, bin: &str, config: &Path, port: u16) -> Result<Dashboard> {
        let daemon = tb
            .in_scanner(bin)
            .arg("run")
            .arg("-c")
            .arg(config)
            .spawn()
            .context("cannot start palisade run")?;
        let bridge = match LoopbackBridge::start(tb.scanner_ns(), port, false) {
            Ok(bridge) => bridge,
            Err(e) => {
                stop(daemon);
                return Err(e).context(format!(
                    "cannot bridge the dashboard's port {port} out of the testbed (is it free?)"
                ));
            }
        };
        // Built before the wait, so that a failure stops the daemon.
        let dashboard = Dashboard {
            daemon,
            _bridge: bridge,
            url: format!("http://127.0.0.1:{port}/"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !healthy(port) {
            if Instant::now() > deadline {
                bail!(
                    "the dashboard did not answer on {} within 20 s",
                    dashboard.url
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(dashboard)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        stop_child(&mut self.daemon);
    }
}

/// SIGTERM (the daemon stops its sinks and its server cleanly), SIGKILL
/// after 10 s.
fn stop_child(daemon: &mut Child) {
    let _ = std::process::Command::new("kill")
        .arg(daemon.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = daemon.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

fn stop(mut daemon: Child) {
    stop_child(&mut daemon);
}

/// `GET /healthz` answers 200 on this host's `127.0.0.1:port`.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Screenshots of the fleet page and of web-1's page, taken by headless
/// Chromium through the daemon's dashboard, into `target/demo/`.
fn screenshots(tb: &Testbed, bin: &str, config: &Path, port: u16) -> Result<Vec<PathBuf>> {
    let dashboard = Dashboard::start(tb, bin, config, port)?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let mut shots = Vec::new();
    for (file, page) in [
        ("dashboard.png", ""),
        ("monitor-web-1.png", "monitors/web-1"),
    ] {
        let shot = dir.join(file);
        let _ = std::fs::remove_file(&shot);
        let profile =
            std::env::temp_dir().join(format!("palisade-demo-chromium-{}", std::process::id()));
        let status = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("{}{page}", dashboard.url))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("cannot run chromium (cargo xtask setup installs it)")?;
        let _ = std::fs::remove_dir_all(&profile);
        if !status.success() || !shot.exists() {
            bail!("chromium could not take {} ({status})", shot.display());
        }
        shots.push(shot);
    }
    Ok(shots)
}

/// Runs the daemon with its dashboard on `127.0.0.1:port` until Ctrl-C.
fn serve(tb: &Testbed, bin: &str, config: &Path, port: u16) -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    let dashboard = Dashboard::start(tb, bin, config, port)?;
    say(&format!(
        "the dashboard: {} (no login on loopback without a tokens file); Ctrl-C stops the \
         daemon and tears the testbed down",
        dashboard.url
    ));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(dashboard);
    Ok(())
}

fn say(what: &str) {
    eprintln!("\n==> {what}");
}
