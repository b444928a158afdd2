//! `palisade agent`: a stateless scan agent fed by the coordinator's work
//! queue on NATS JetStream ([`palisade::cluster::agent`]).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use palisade_core::cluster::valid_label;
use palisade_outputs::nats::args::NatsArgs;

use palisade::cluster::agent::{self, AgentOptions};

use super::data_path::DataPathArgs;
use super::{UsageError, usage_error};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  palisade agent --name fra1-a --label site=fra1 --interface eth1 \\\n      \
--nats-url nats://nats.internal:4222 --user fra1-a --nats-password-file /etc/palisade/agent.pass\n\n\
The agent takes jobs of its labels and of `any`, scans each job's shard of a slice, \
publishes the result and acknowledges the job once the result is stored. It keeps no state: \
start as many as you like, stop any at any time (a job under way goes to another agent). \
It needs the same capabilities as `palisade scan`, and NATS permissions to pull jobs, read \
the slices and publish results and its heartbeat only (docs/nats-cluster.conf).\n\n\
Exit codes: 0 stopped by SIGTERM/SIGINT; 1 runtime failure (NATS unreachable, the \
coordinator's streams missing); 2 bad arguments."
)]
pub struct AgentArgs {
    /// This agent's name, unique among the agents: its key in the agents'
    /// bucket and its inbox prefix (`_INBOX_NAME`). 1 to 64 of A-Z a-z 0-9 _ - =.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Also take the jobs of monitors pinned to LABEL (`agent_label`), e.g.
    /// `site=fra1`; repeat for several. Jobs of `any` are always taken.
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    #[command(flatten)]
    data_path: DataPathArgs,
    #[command(flatten)]
    nats: NatsArgs,
}

pub fn run(args: &AgentArgs) -> Result<ExitCode> {
    let options = match options(args) {
        Ok(options) => options,
        Err(e) => return Ok(usage_error(&e)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(agent::run(options, stop));
    runtime.shutdown_timeout(Duration::from_millis(200));
    result?;
    Ok(ExitCode::SUCCESS)
}

fn options(args: &AgentArgs) -> Result<AgentOptions, UsageError> {
    for (flag, value) in
        std::iter::once(("--name", &args.name)).chain(args.labels.iter().map(|l| ("--label", l)))
    {
        if !valid_label(value) {
            return Err(UsageError(format!(
                "{flag}: bad value `{value}`: give 1 to 64 of A-Z a-z 0-9 _ - ="
            )));
        }
    }
    let nats = args
        .nats
        .options(&format!("palisade-agent-{}", args.name))
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(AgentOptions {
        name: args.name.clone(),
        labels: agent::with_any(&args.labels),
        scan: args.data_path.scan_config()?,
        nats,
    })
}
