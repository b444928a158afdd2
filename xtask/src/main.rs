//! `cargo xtask`: the project's chores, with nothing but cargo to start them.
//!
//! * `setup`  installs the system packages the project needs (idempotent).
//! * `ci`     runs setup, `cargo fmt --check`, clippy with `-D warnings`, and every test.
//! * `demo`   the main job on a fresh machine: setup, build, and show Palisade at work.
//! * `bench`  the criterion benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// Debian packages the project needs, and why.
const PACKAGES: &[(&str, &str)] = &[
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
];

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup   install the system packages the project needs (apt-get, idempotent)
  ci      setup, then cargo fmt --check, clippy -D warnings, and every test
  demo    the main job on a fresh machine: setup, build, scan a testbed
  bench   run the criterion benchmarks (figures land in target/criterion)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("ci") => ci(),
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprint!("xtask: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it; fails on non-zero exit.
fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot start `{program}`"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn setup() -> Result<()> {
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

fn ci() -> Result<()> {
    setup()?;
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run("cargo", &["test", "--workspace", "--all-targets"])?;
    // Doc tests are not part of --all-targets.
    run("cargo", &["test", "--workspace", "--doc"])?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

fn demo() -> Result<()> {
    use palisade_testbed::{Testbed, TestbedConfig};
    use std::net::IpAddr;

    setup()?;
    run("cargo", &["build", "--release", "-p", "palisade"])?;
    let bin = root().join("target/release/palisade");
    let bin = bin.to_str().context("non-UTF-8 path")?;

    eprintln!(
        "\nxtask demo: building a testbed: namespaces joined by veth, 198.18.0.0/24 and 2001:2::/64"
    );
    let mut tb = Testbed::new(TestbedConfig {
        targets_v4: vec![
            "198.18.0.2".parse()?,
            "198.18.0.3".parse()?,
            "198.18.0.4".parse()?,
        ],
        targets_v6: vec!["2001:2::2".parse()?],
        tx_queues: 1,
    })
    .context("cannot build the testbed (needs root)")?;
    let services: [(&str, &[u16]); 4] = [
        ("198.18.0.2", &[22, 80, 443]),
        ("198.18.0.3", &[25, 587, 993]),
        ("198.18.0.4", &[22, 6379, 65535]),
        ("2001:2::2", &[22, 443]),
    ];
    let mut listen = Vec::new();
    for (ip, ports) in services {
        let ip: IpAddr = ip.parse()?;
        eprintln!("xtask demo:   {ip} listens on {ports:?}");
        listen.extend(ports.iter().map(|&p| (ip, p)));
    }
    tb.listen(&listen).context("cannot start the listeners")?;

    eprintln!("\nxtask demo: palisade scan of all 65,535 TCP ports of the 4 targets at 1 Mpps:");
    let status = tb
        .in_scanner(bin)
        .args([
            "scan",
            "198.18.0.2-198.18.0.4",
            "2001:2::2",
            "-p",
            "-",
            "--rate",
            "1000000",
            "--format",
            "text",
        ])
        .status()
        .context("cannot run palisade")?;
    tb.teardown().context("cannot tear the testbed down")?;
    if !status.success() {
        bail!("palisade scan failed ({status})");
    }
    eprintln!("xtask demo: testbed torn down");
    Ok(())
}

fn bench(extra: &[String]) -> Result<()> {
    let mut args = vec!["bench", "-p", "palisade-benches"];
    args.extend(extra.iter().map(String::as_str));
    run("cargo", &args)
}
