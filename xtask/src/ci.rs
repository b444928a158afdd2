//! `cargo xtask ci`: every check and test, as CI runs them.

use anyhow::Result;

use crate::{bench, run, setup::setup};

/// Setup, `cargo fmt --check`, clippy with `-D warnings`, every test, and
/// the benchmarks in their quick form.
pub(crate) fn ci() -> Result<()> {
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
    // The benchmarks, in seconds, so they never rot: they must run and give
    // sane figures (not fast ones).
    bench::bench(&bench::BenchArgs {
        quick: true,
        block: None,
    })?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}
