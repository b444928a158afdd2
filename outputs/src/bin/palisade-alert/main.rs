//! `palisade-alert`: turns Palisade events on NATS JetStream into alerts.
//!
//! CLI only; the work is done by `palisade_outputs::alert`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use palisade_outputs::alert::{
    self, AlertConsumer, Backoff, ConsumerConfig, DispatchSpec, HttpOptions, TailConfig,
};
use palisade_outputs::nats::{self, NatsAuth, NatsConnectError, NatsOptions, NatsTls};

#[derive(Debug, Parser)]
#[command(
    name = "palisade-alert",
    version,
    about = "Turn Palisade's port-monitoring events on NATS JetStream into alerts",
    long_about = "Turn Palisade's port-monitoring events on NATS JetStream into alerts.\n\n\
        The `palisade` daemon publishes every confirmed event (unexpected_port_open, \
        expected_port_down, port_resolved, monitor_resolved) to the JetStream stream \
        PALISADE under palisade.events.<kind>.<monitor>, and scan summaries under \
        palisade.scans.<monitor>. `palisade-alert run` reads them through a durable \
        consumer and hands each to its dispatchers; `palisade-alert tail` shows them live.",
    after_help = "Examples:\n  \
        palisade-alert run --dispatch log\n  \
        palisade-alert run --dispatch alertmanager=http://127.0.0.1:9093 \\\n      \
        --dispatch webhook=https://hooks.example/palisade\n  \
        palisade-alert tail --nats-url nats://nats.internal:4222\n\n\
        Exit status: 0 stopped by SIGINT/SIGTERM, 1 runtime failure (e.g. NATS unreachable),\n\
        2 usage error. Logs go to stderr (RUST_LOG=debug for more); event lines to stdout."
)]
struct AlertCli {
    #[command(subcommand)]
    command: AlertCommand,
}

#[derive(Debug, Subcommand)]
enum AlertCommand {
    /// Consume events durably and dispatch them until SIGINT/SIGTERM.
    ///
    /// A message is acknowledged only after every dispatcher took it. A
    /// failure is retried by JetStream after an exponential delay
    /// (--retry-initial doubling up to --retry-max), at most --max-deliver
    /// deliveries in all; then an error line names the event and it is
    /// dropped. A message that cannot be decoded is logged and dropped at
    /// once. Restarting with the same --consumer resumes where it stopped:
    /// acknowledged events are not delivered again.
    #[command(after_help = "Dispatchers (--dispatch, repeatable):\n  \
        log               one human line per event on stdout\n  \
        webhook=URL       POST each event envelope as JSON to URL; any 2xx is success\n  \
        alertmanager=URL  incidents become alerts at URL/api/v2/alerts (e.g. http://127.0.0.1:9093);\n                    \
        port_resolved resolves its alert; monitor_resolved and scans are skipped")]
    Run(AlertRunArgs),
    /// Print the live event stream in human form until interrupted.
    ///
    /// Uses an ephemeral consumer that starts with the next published
    /// message; nothing is acknowledged or changed on the server.
    Tail(TailArgs),
}

#[derive(Debug, Args)]
struct Connection {
    /// NATS server URL (nats:// or tls://); repeat for a cluster.
    #[arg(
        long = "nats-url",
        value_name = "URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_urls: Vec<String>,
    /// Authenticate with a token.
    #[arg(long, value_name = "T", conflicts_with_all = ["user", "creds", "nkey_seed"])]
    token: Option<String>,
    /// Authenticate as this user (needs --password).
    #[arg(long, value_name = "U", requires = "password", conflicts_with_all = ["creds", "nkey_seed"])]
    user: Option<String>,
    /// The password of --user.
    #[arg(long, value_name = "P", requires = "user")]
    password: Option<String>,
    /// Authenticate with a credentials file (JWT + NKey, as `nsc` writes it).
    #[arg(long, value_name = "FILE", conflicts_with = "nkey_seed")]
    creds: Option<PathBuf>,
    /// Authenticate with an NKey user seed read from FILE.
    #[arg(long = "nkey-seed", value_name = "FILE")]
    nkey_seed: Option<PathBuf>,
    /// Trust this PEM CA file for the server's certificate (makes TLS required).
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (needs --tls-key).
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long to try reaching a server at start-up.
    #[arg(long = "connect-timeout", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// The JetStream stream holding the events.
    #[arg(long, default_value = palisade_outputs::sink::DEFAULT_NATS_STREAM)]
    stream: String,
}

#[derive(Debug, Args)]
struct AlertRunArgs {
    #[command(flatten)]
    connection: Connection,
    /// Where events go: `log`, `webhook=URL` or `alertmanager=URL` (repeatable).
    #[arg(long = "dispatch", value_name = "SPEC", required = true, value_parser = parse_dispatch)]
    dispatch: Vec<DispatchSpec>,
    /// Name of the durable consumer (progress is kept under this name).
    #[arg(long, default_value = "palisade-alert")]
    consumer: String,
    /// Subjects to consume.
    #[arg(long, default_value = "palisade.events.>")]
    filter: String,
    /// Deliveries of one event before giving up on it.
    #[arg(long = "max-deliver", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    max_deliver: i64,
    /// Delay before the first redelivery of a failed event.
    #[arg(long = "retry-initial", value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    retry_initial: Duration,
    /// Longest delay between redeliveries.
    #[arg(long = "retry-max", value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    retry_max: Duration,
    /// How long JetStream waits for an ack before redelivering.
    #[arg(long = "ack-wait", value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    ack_wait: Duration,
    /// Timeout of one webhook/Alertmanager request.
    #[arg(long = "http-timeout", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    http_timeout: Duration,
    /// `generatorURL` of Alertmanager alerts (e.g. your dashboard).
    #[arg(long = "generator-url", value_name = "URL")]
    generator_url: Option<String>,
}

#[derive(Debug, Args)]
struct TailArgs {
    #[command(flatten)]
    connection: Connection,
    /// Subjects to show (events and scan summaries by default).
    #[arg(long, default_value = "palisade.>")]
    filter: String,
    /// Print each event as one JSON line.
    #[arg(long)]
    json: bool,
}

fn parse_dispatch(s: &str) -> Result<DispatchSpec, String> {
    s.parse()
        .map_err(|e: alert::DispatchConfigError| e.to_string())
}

fn main() -> ExitCode {
    // clap exits 2 on usage errors, 0 on --help/--version.
    let cli = AlertCli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("palisade-alert: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            AlertCommand::Run(args) => run(args).await,
            AlertCommand::Tail(args) => tail(args).await,
        }
    });
    // Don't wait for the client's background tasks.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-alert: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

impl Connection {
    /// The flags as connection options, checked by the same rules as the
    /// daemon's `[[sink]]` settings.
    fn options(&self) -> Result<NatsOptions, NatsConnectError> {
        Ok(NatsOptions {
            urls: self.nats_urls.clone(),
            auth: NatsAuth::from_parts(
                self.token.clone(),
                self.user.clone(),
                self.password.clone(),
                self.nkey_seed.clone(),
                self.creds.clone(),
            )?,
            tls: NatsTls::from_parts(
                self.tls_ca.clone(),
                self.tls_cert.clone(),
                self.tls_key.clone(),
            )?,
            name: "palisade-alert".to_string(),
            connect_timeout: self.connect_timeout,
        })
    }
}

async fn run(args: AlertRunArgs) -> Result<()> {
    if args.retry_max < args.retry_initial {
        anyhow::bail!(
            "--retry-max ({}) is shorter than --retry-initial ({})",
            humantime::format_duration(args.retry_max),
            humantime::format_duration(args.retry_initial)
        );
    }
    let http = HttpOptions {
        timeout: args.http_timeout,
        generator_url: args.generator_url.clone(),
    };
    let dispatchers = args
        .dispatch
        .iter()
        .map(|spec| spec.build(&http))
        .collect::<Result<Vec<_>, _>>()?;
    let shutdown = shutdown_signal()?;
    let client = nats::connect(&args.connection.options()?).await?;
    let config = ConsumerConfig {
        stream: args.connection.stream.clone(),
        consumer: args.consumer.clone(),
        filter: args.filter.clone(),
        max_deliver: args.max_deliver,
        backoff: Backoff {
            initial: args.retry_initial,
            max: args.retry_max,
        },
        ack_wait: args.ack_wait,
        ..ConsumerConfig::default()
    };
    let mut consumer = AlertConsumer::new(client, config, dispatchers);
    consumer.run(shutdown).await?;
    let stats = consumer.stats();
    tracing::info!(
        acked = stats.acked,
        retried = stats.retried,
        undecodable = stats.undecodable,
        gave_up = stats.gave_up,
        "stopped"
    );
    Ok(())
}

async fn tail(args: TailArgs) -> Result<()> {
    let shutdown = shutdown_signal()?;
    let client = nats::connect(&args.connection.options()?).await?;
    let config = TailConfig {
        stream: args.connection.stream.clone(),
        filter: args.filter.clone(),
        json: args.json,
    };
    let mut stdout = std::io::stdout();
    alert::tail(client, &config, &mut stdout, shutdown).await?;
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        }
    })
}
