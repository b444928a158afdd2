//! The `palisade` commands, one module each, and what they share: output
//! formats, usage errors (exit 2), the configuration loader and the target
//! arguments of `plan` and `scan`.

pub mod check_config;
pub mod deliveries;
pub mod history;
pub mod plan;
pub mod run;
pub mod scan;
pub mod status;

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use palisade_core::probe::{PortSet, Shard, SpecError, Sweep, TargetSet};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`json` works too).
    #[value(alias = "json")]
    Jsonl,
}

/// An error that is the user's to fix: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

impl From<SpecError> for UsageError {
    fn from(e: SpecError) -> Self {
        UsageError(e.to_string())
    }
}

pub fn usage_error(e: &UsageError) -> ExitCode {
    palisade_outputs::logging::eprint(tracing::Level::ERROR, &format!("palisade: error: {e}"));
    ExitCode::from(2)
}

pub fn read_file(path: &str) -> Result<String, UsageError> {
    std::fs::read_to_string(path).map_err(|e| UsageError(format!("cannot read {path}: {e}")))
}

pub fn load_config(path: &std::path::Path) -> Result<palisade::config::Config, ExitCode> {
    palisade::config::load(path).map_err(|e| {
        palisade_outputs::logging::eprint(tracing::Level::ERROR, &e.to_string());
        ExitCode::from(2)
    })
}

/// Which hosts and ports, shared by every command that sweeps.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Targets: IPv4/IPv6 addresses, CIDR blocks, ranges (a-b); commas allowed.
    pub targets: Vec<String>,
    /// Ports: `22,80,8000-8100`, `1-65535`, or `-` for all.
    #[arg(short = 'p', long = "ports", value_name = "PORTS")]
    pub ports: String,
    /// Read more targets from FILE (one or more per line, `#` comments); `-iL FILE` works too.
    #[arg(long = "input-list", value_name = "FILE")]
    pub input_list: Vec<String>,
    /// Never probe these targets (same syntax as targets).
    #[arg(long, value_name = "LIST")]
    pub exclude: Vec<String>,
    /// Never probe the targets listed in FILE (e.g. config/exclude.conf).
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<String>,
    /// Take part I of N of the sweep (1-based), e.g. `--shard 2/4`.
    #[arg(long, value_name = "I/N", default_value = "1/1")]
    pub shard: Shard,
    /// Seed of the probe order; the same seed gives the same order.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Skip the first N probes of this shard (to resume an interrupted scan).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub resume_index: u64,
}

impl TargetArgs {
    /// Builds the sweep the arguments describe.
    pub fn sweep(&self) -> Result<Sweep, UsageError> {
        let targets = self.target_set()?;
        let ports = PortSet::parse_arg("-p", &self.ports)?;
        Ok(Sweep::new(&targets, &ports, self.seed)?)
    }

    /// The targets the arguments describe, excludes removed (never empty).
    pub fn target_set(&self) -> Result<TargetSet, UsageError> {
        let mut targets = TargetSet::default();
        for (i, t) in self.targets.iter().enumerate() {
            targets.extend_arg(&format!("target argument {}", i + 1), t)?;
        }
        for path in &self.input_list {
            targets.extend_file(path, &read_file(path)?)?;
        }
        if targets.is_empty() {
            return Err(UsageError(
                "no targets: give addresses, blocks or ranges, or -iL FILE".into(),
            ));
        }
        let mut excludes = TargetSet::default();
        for x in &self.exclude {
            excludes.extend_arg("--exclude", x)?;
        }
        for path in &self.exclude_file {
            excludes.extend_file(path, &read_file(path)?)?;
        }
        targets.subtract(&excludes);
        if targets.is_empty() {
            return Err(SpecError::NoTargets {
                what: "targets".into(),
            }
            .into());
        }
        Ok(targets)
    }
}
