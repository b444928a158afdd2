//! `cargo xtask setup`: the system packages the project needs (apt-get,
//! idempotent; says what it installs and why).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

/// Debian packages the project needs, and why.
pub(crate) const PACKAGES: &[(&str, &str)] = &[
    ("clang-19", "compiles the eBPF programs in ebpf/"),
    ("llvm-19", "llvm-objdump/strip for inspecting eBPF objects"),
    (
        "libbpf-dev",
        "bpf_helpers.h and friends for the eBPF programs",
    ),
    (
        "linux-libc-dev",
        "kernel UAPI headers (linux/bpf.h, if_xdp.h)",
    ),
    ("iproute2", "network namespaces and veth for testbeds"),
    ("nftables", "loss and firewall simulation in testbeds"),
    ("nats-server", "the event bus the outputs publish to"),
    ("masscan", "side-by-side benchmarks"),
    ("zmap", "side-by-side benchmarks"),
    ("nmap", "side-by-side benchmarks"),
    (
        "ethtool",
        "GRO on testbed veths so they receive XDP_TX frames",
    ),
    (
        "prometheus-alertmanager",
        "the Alertmanager the alert consumer's tests post to",
    ),
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing packages; a no-op when all are there.
pub(crate) fn setup() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(p, _)| !installed(p))
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        eprintln!(
            "xtask setup: all {} system packages already installed, nothing to do",
            PACKAGES.len()
        );
        return Ok(());
    }
    for (p, why) in PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
        eprintln!("xtask setup: will install {p}: {why}");
    }
    if !nix_is_root() {
        bail!(
            "installing {} needs root: run `sudo cargo xtask setup` or install them with apt-get",
            missing.join(" ")
        );
    }
    run("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    let status = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot start apt-get")?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", missing.join(" "));
    }
    eprintln!("xtask setup: installed {}", missing.join(" "));
    Ok(())
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
