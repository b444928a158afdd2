//! `cargo xtask dist`: the Debian package (cargo-deb).
//!
//! Builds `palisade` and `palisade-alert` with the chosen profile, has each
//! write its man pages and completions (the hidden `dist-assets DIR`, see
//! `palisade_outputs::cli_assets`) into `<target>/<profile>/dist-assets`,
//! compresses the man pages, and runs `cargo deb --no-build` on the
//! `palisade` crate, whose `[package.metadata.deb]` lists what goes where.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{root, run, setup};

#[derive(Debug, Args)]
pub(crate) struct DistArgs {
    /// The cargo profile to build and package (not `dev`: cargo-deb packages
    /// releases).
    #[arg(long, default_value = "release")]
    pub(crate) profile: String,
    /// The directory the .deb goes to (created if missing) [default:
    /// <target>/debian].
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
}

/// The binaries the package holds, and the crate of each.
const BINARIES: [(&str, &str); 2] = [
    ("palisade", "palisade"),
    ("palisade-alert", "palisade-outputs"),
];

/// Builds the .deb; returns its path (also printed on stdout).
pub(crate) fn dist(args: &DistArgs) -> Result<PathBuf> {
    if matches!(args.profile.as_str(), "dev" | "debug") {
        bail!("cargo-deb packages releases: use --profile release (or another non-dev profile)");
    }
    check_cargo_deb()?;
    let mut build = vec!["build", "--profile", &args.profile];
    for (_, krate) in BINARIES {
        build.extend(["-p", krate]);
    }
    build.push("--bins");
    run("cargo", &build)?;

    let profile_dir = target_dir()?.join(&args.profile);
    let assets = profile_dir.join("dist-assets");
    if assets.exists() {
        std::fs::remove_dir_all(&assets)
            .with_context(|| format!("cannot remove {}", assets.display()))?;
    }
    for (bin, _) in BINARIES {
        let exe = profile_dir.join(bin);
        eprintln!(
            "xtask: $ {} dist-assets {}",
            exe.display(),
            assets.display()
        );
        // The files it names go to stderr: stdout is the package's path.
        let status = Command::new(&exe)
            .arg("dist-assets")
            .arg(&assets)
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        if !status.success() {
            bail!("`{} dist-assets` failed ({status})", exe.display());
        }
    }
    // Debian policy: man pages gzipped (-n: no name or time stamp, so the
    // package is reproducible). cargo-deb compresses only the files it
    // does not take for build products.
    let man = assets.join("man");
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .with_context(|| format!("cannot read {}", man.display()))?
        .map(|entry| Ok(path_str(&entry?.path())?.to_string()))
        .collect::<Result<_>>()?;
    pages.sort();
    let mut gzip = vec!["-9nf"];
    gzip.extend(pages.iter().map(String::as_str));
    run("gzip", &gzip)?;

    let mut deb = vec![
        "deb",
        "-p",
        "palisade",
        "--no-build",
        "--profile",
        &args.profile,
    ];
    let out;
    if let Some(dir) = &args.out {
        // cargo-deb takes a path that is not a directory for the file's name.
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        out = path_str(dir)?.to_string();
        deb.extend(["--output", &out]);
    }
    eprintln!("xtask: $ cargo {}", deb.join(" "));
    let output = Command::new("cargo")
        .args(&deb)
        .current_dir(root())
        .output()
        .context("cannot start `cargo deb`")?;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("`cargo {}` failed ({})", deb.join(" "), output.status);
    }
    // cargo-deb names the package it wrote on stdout.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .with_context(|| format!("cargo deb did not name the package: {stdout}"))?;
    println!("{}", path.display());
    Ok(path)
}

/// cargo-deb, at the version `cargo xtask setup` installs.
fn check_cargo_deb() -> Result<()> {
    let version = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match version {
        Some(v) if v.ends_with(setup::CARGO_DEB_VERSION) => Ok(()),
        Some(v) => bail!(
            "`cargo deb --version` says {v}, not {}: run `cargo xtask setup`",
            setup::CARGO_DEB_VERSION
        ),
        None => bail!("cargo-deb is not installed: run `cargo xtask setup`"),
    }
}

/// Cargo's target directory (honours CARGO_TARGET_DIR and the config).
fn target_dir() -> Result<PathBuf> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata: not JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata names no target_directory")
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("non-UTF-8 path: {}", path.display()))
}
