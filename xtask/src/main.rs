//! `cargo xtask`: the project's chores, with nothing but cargo to start them.
//!
//! * `setup`    installs the system packages the project needs (idempotent).
//! * `ci`       setup, `cargo fmt --check`, clippy with `-D warnings`, every test,
//!   and the benchmarks in their quick form.
//! * `demo`     the main job on a fresh machine: setup, build, and Palisade at work.
//! * `bench`    every benchmark side by side on a testbed → `benches/RESULTS.md`.
//! * `compare`  transmit ceiling, palisade scan and masscan on one testbed.
//! * `dist`     the Debian package (cargo-deb): binaries, units, config, man
//!   pages, completions.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod ci;
mod compare;
mod demo;
mod dist;
mod setup;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Palisade's chores: set-up, CI, the demo and the benchmarks"
)]
struct XtaskCli {
    #[command(subcommand)]
    command: XtaskCommand,
}

#[derive(Debug, Subcommand)]
enum XtaskCommand {
    /// Install the system packages the project needs (apt-get, idempotent).
    Setup,
    /// Setup, cargo fmt --check, clippy -D warnings, every test, bench --quick.
    Ci,
    /// The main job on a fresh machine: setup, build, scan and monitor a testbed,
    /// and a screenshot of the dashboard.
    Demo(demo::DemoArgs),
    /// Every benchmark side by side on a testbed -> benches/RESULTS.md.
    Bench(bench::BenchArgs),
    /// Side by side on one testbed: bare AF_XDP transmit, palisade scan, masscan.
    Compare,
    /// Build the Debian package (cargo-deb); prints its path.
    Dist(dist::DistArgs),
}

fn main() -> ExitCode {
    let cli = XtaskCli::parse();
    let result = match &cli.command {
        XtaskCommand::Setup => setup::setup(),
        XtaskCommand::Ci => ci::ci(),
        XtaskCommand::Demo(args) => demo::demo(args),
        XtaskCommand::Bench(args) => bench::bench(args),
        XtaskCommand::Compare => compare::compare(),
        XtaskCommand::Dist(args) => dist::dist(args).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it; fails on non-zero exit.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<()> {
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

/// The release binaries the demo and the benchmarks run.
pub(crate) struct ReleaseBins {
    /// The product: `palisade`.
    pub(crate) palisade: String,
    /// The simulators: `palisade-sim` (fleet, fleet-truth, tx-bench).
    pub(crate) sim: String,
}

/// The cargo profile of the release builds and the benchmarks:
/// `$XTASK_PROFILE`, else `release`.
pub(crate) fn release_profile() -> String {
    std::env::var("XTASK_PROFILE").unwrap_or_else(|_| "release".into())
}

/// Where cargo builds: `$CARGO_TARGET_DIR`, else the workspace's `target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Builds `palisade` and `palisade-sim` in release mode
/// ([`release_profile`]).
pub(crate) fn build_release() -> Result<ReleaseBins> {
    let profile = release_profile();
    run(
        "cargo",
        &[
            "build",
            "--profile",
            &profile,
            "-p",
            "palisade",
            "-p",
            "palisade-sim",
        ],
    )?;
    let path = |name: &str| -> Result<String> {
        let p = target_dir().join(&profile).join(name);
        Ok(p.to_str().context("non-UTF-8 path")?.to_string())
    };
    Ok(ReleaseBins {
        palisade: path("palisade")?,
        sim: path("palisade-sim")?,
    })
}
