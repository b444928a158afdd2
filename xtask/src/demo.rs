//! `cargo xtask demo`: the main job on a fresh machine: setup, build, and
//! Palisade at work on a testbed (a scan, then four monitor sweeps).

use anyhow::{Context, Result, bail};

use crate::{build_release, setup::setup};

pub(crate) fn demo() -> Result<()> {
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

    say("2. palisade run: monitoring web-1, which should have exactly 22, 80 and 443 open");
    let dir = std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[scan]\nrate = 500000\nwait = \"500ms\"\n\n[store]\npath = \"{}\"\n\n\
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
        scan(&tb, &["history", "web-1", "-c", cfg])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    tb.teardown().context("cannot tear the testbed down")?;
    result?;
    say("testbed torn down");
    Ok(())
}

fn say(what: &str) {
    eprintln!("\n==> {what}");
}
