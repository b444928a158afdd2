//! `palisade-alert`: turns Palisade events on NATS JetStream into alerts.
//!
//! CLI only; the work is done by `palisade_outputs::alert`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use palisade_outputs::alert::{
    self, AlertConsumer, Backoff, ConsumerConfig, DispatchSpec, HttpOptions, TailConfig,
};
use palisade_outputs::nats::args::NatsArgs;
use palisade_outputs::nats::{self, NatsOptions};

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
        palisade-alert run --dispatch slack=@/etc/palisade/slack-webhook.url \\\n      \
        --dispatch pagerduty=@/etc/palisade/pagerduty.key\n  \
        palisade-alert tail --nats-url nats://nats.internal:4222\n\n\
        Exit status: 0 stopped by SIGINT/SIGTERM, 1 runtime failure (e.g. NATS unreachable),\n\
        2 usage error. Logs go to stderr (RUST_LOG=debug for more); event lines to stdout."
)]
struct AlertCli {
    /// The form of the log lines on stderr [default: journald under
    /// systemd, else text].
    #[arg(long = "log-format", value_name = "FORMAT", value_enum, global = true)]
    log_format: Option<palisade_outputs::logging::LogFormat>,
    #[command(subcommand)]
    command: AlertCommand,
}

#[derive(Debug, Subcommand)]
enum AlertCommand {
    /// Consume events durably and dispatch them until SIGINT/SIGTERM.
    ///
    /// At start the stream is replayed to rebuild the open alerts; firing
    /// Alertmanager alerts are then re-posted every --resend. A message is
    /// acknowledged only after every dispatcher took it. A failure is
    /// retried by JetStream after an exponential delay (--retry-initial
    /// doubling up to --retry-max), up to --max-deliver deliveries (and, for
    /// an event that ends an alert, at least 4 × --resend); then the event
    /// is published to the dead-letter subject <PREFIX>.dlq.<dispatcher> on
    /// the same stream, an error line names it, and it is acknowledged. A
    /// message that cannot be decoded goes to <PREFIX>.dlq.undecodable at
    /// once. Nothing is dropped silently. Restarting with the same
    /// --consumer resumes where it stopped: acknowledged events are not
    /// delivered again.
    #[command(after_help = "Dispatchers (--dispatch, repeatable):\n  \
        log               one human line per event on stdout\n  \
        webhook=URL       POST each event envelope as JSON to URL; any 2xx is success\n  \
        alertmanager=URL  incidents become alerts at URL/api/v2/alerts (e.g. http://127.0.0.1:9093),\n                    \
        re-posted every --resend; their resolutions end them\n  \
        slack[=URL|@FILE|env:VAR]\n                    \
        a Slack message per incident, per resolution and per ports_changed\n                    \
        summary, to an incoming webhook; bare `slack`: the URL in\n                    \
        $PALISADE_SLACK_WEBHOOK_URL\n  \
        pagerduty[=KEY|@FILE|env:VAR][,url=URL]\n                    \
        PagerDuty Events API v2: trigger per incident, resolve per resolution,\n                    \
        dedup_key = the incident id; bare `pagerduty`: the routing key in\n                    \
        $PALISADE_PAGERDUTY_ROUTING_KEY; url= for a proxy (default\n                    \
        https://events.pagerduty.com/v2/enqueue)\n  \
        smtp=HOST[:PORT],from=ADDR,to=ADDR[,to=ADDR…][,tls=starttls|tls|none]\n      \
        [,credentials=FILE|env:VAR][,ca=FILE]\n                    \
        an email per incident, per resolution (a reply to the incident's mail)\n                    \
        and per ports_changed summary; STARTTLS required by default (port 587;\n                    \
        tls=tls: port 465); credentials: one line USER:PASSWORD; ca: extra PEM\n                    \
        roots to trust\n\n\
        A Slack or PagerDuty 4xx (but 408/429) and an SMTP 5xx refuse the event for good:\n\
        it is dead-lettered at once. 429 and 5xx are retried, no sooner than their\n\
        Retry-After.\n\n\
        Examples:\n  \
        --dispatch slack=@/etc/palisade/slack-webhook.url\n  \
        --dispatch pagerduty=@/etc/palisade/pagerduty.key\n  \
        --dispatch 'smtp=mail.example.org,from=palisade@example.org,to=ops@example.org,\n      \
        credentials=/etc/palisade/smtp.cred'\n\n\
        Secrets: --token / --nats-token-file, else $PALISADE_NATS_TOKEN;\n  \
        --password / --nats-password-file, else $PALISADE_NATS_PASSWORD (with --user).\n  \
        Prefer the file or the environment: flags show in `ps`.")]
    Run(AlertRunArgs),
    /// Print the live event stream in human form until interrupted.
    ///
    /// Uses an ephemeral consumer that starts with the next published
    /// message; nothing is acknowledged or changed on the server.
    Tail(TailArgs),
}

/// The NATS connection (the flags every NATS tool shares) and the stream.
#[derive(Debug, Args)]
struct Connection {
    #[command(flatten)]
    nats: NatsArgs,
    /// The JetStream stream holding the events.
    #[arg(long, default_value = palisade_outputs::sink::DEFAULT_NATS_STREAM)]
    stream: String,
}

#[derive(Debug, Args)]
struct AlertRunArgs {
    #[command(flatten)]
    connection: Connection,
    /// Where events go: `log`, `webhook=URL`, `alertmanager=URL`, `slack=…`,
    /// `pagerduty=…` or `smtp=…` (repeatable; see below).
    #[arg(long = "dispatch", value_name = "SPEC", required = true, value_parser = parse_dispatch)]
    dispatch: Vec<DispatchSpec>,
    /// Name of the durable consumer (progress is kept under this name).
    #[arg(long, default_value = "palisade-alert")]
    consumer: String,
    /// The subject prefix the daemon publishes under; dead letters go to
    /// <PREFIX>.dlq.<dispatcher> on the same stream.
    #[arg(
        long = "subject-prefix",
        value_name = "PREFIX",
        default_value = "palisade"
    )]
    subject_prefix: String,
    /// Subjects to consume [default: <PREFIX>.events.>, e.g. palisade.events.>].
    #[arg(long)]
    filter: Option<String>,
    /// Deliveries of one event before it is dead-lettered (an event that
    /// ends an alert also gets at least 4 × --resend since its first attempt).
    #[arg(long = "max-deliver", default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    max_deliver: i64,
    /// How often firing Alertmanager alerts are re-posted; each one's
    /// endsAt lies 4 resends ahead, so alerts expire when palisade-alert is gone.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    resend: Duration,
    /// Delay before the first redelivery of a failed event.
    #[arg(long = "retry-initial", value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    retry_initial: Duration,
    /// Longest delay between redeliveries.
    #[arg(long = "retry-max", value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    retry_max: Duration,
    /// How long JetStream waits for an ack before redelivering.
    #[arg(long = "ack-wait", value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    ack_wait: Duration,
    /// Timeout of one webhook/Alertmanager/Slack/PagerDuty request, and of
    /// each SMTP command.
    #[arg(long = "http-timeout", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    http_timeout: Duration,
    /// A dashboard link for Alertmanager alerts (annotation `dashboard` and
    /// generatorURL), Slack messages, PagerDuty events and emails;
    /// `{monitor}` in it becomes the alert's monitor.
    #[arg(long = "dashboard-url", alias = "generator-url", value_name = "URL")]
    dashboard_url: Option<String>,
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
    // The hidden `dist-assets DIR` writes the man pages and completions.
    let cli: AlertCli = palisade_outputs::cli_assets::parse_from(std::env::args_os());
    // Secrets from files and the environment are read now: a missing one is
    // a usage error (2), like a missing flag.
    let connection = match &cli.command {
        AlertCommand::Run(args) => &args.connection,
        AlertCommand::Tail(args) => &args.connection,
    };
    let options = match connection.nats.options("palisade-alert") {
        Ok(options) => options,
        Err(e) => {
            eprintln!("palisade-alert: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The dispatchers too (their secret files and variables, CA files):
    // a bad one is a usage error.
    let dispatchers = match &cli.command {
        AlertCommand::Run(args) => match args.dispatchers() {
            Ok(dispatchers) => dispatchers,
            Err(e) => {
                eprintln!("palisade-alert: error: {e:#}");
                return ExitCode::from(2);
            }
        },
        AlertCommand::Tail(_) => Vec::new(),
    };
    palisade_outputs::logging::init(cli.log_format, "RUST_LOG", "info,async_nats=warn");
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
            AlertCommand::Run(args) => run(args, options, dispatchers).await,
            AlertCommand::Tail(args) => tail(args, options).await,
        }
    });
    // Don't wait for the client's background tasks.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            palisade_outputs::logging::eprint(
                tracing::Level::ERROR,
                &format!("palisade-alert: error: {e:#}"),
            );
            ExitCode::from(1)
        }
    }
}

impl AlertRunArgs {
    fn http(&self) -> HttpOptions {
        HttpOptions {
            timeout: self.http_timeout,
            dashboard_url: self.dashboard_url.clone(),
            resend: self.resend,
        }
    }

    /// The dispatchers of `--dispatch`, with their secrets read.
    fn dispatchers(&self) -> Result<Vec<Box<dyn alert::Dispatcher>>> {
        let http = self.http();
        self.dispatch
            .iter()
            .map(|spec| {
                spec.build(&http)
                    .with_context(|| format!("--dispatch {spec}"))
            })
            .collect()
    }
}

async fn run(
    args: AlertRunArgs,
    options: NatsOptions,
    dispatchers: Vec<Box<dyn alert::Dispatcher>>,
) -> Result<()> {
    if args.retry_max < args.retry_initial {
        anyhow::bail!(
            "--retry-max ({}) is shorter than --retry-initial ({})",
            humantime::format_duration(args.retry_max),
            humantime::format_duration(args.retry_initial)
        );
    }
    let http = args.http();
    let shutdown = shutdown_signal()?;
    let client = nats::connect(&options).await?;
    let config = ConsumerConfig {
        stream: args.connection.stream.clone(),
        consumer: args.consumer.clone(),
        filter: args
            .filter
            .clone()
            .unwrap_or_else(|| format!("{}.events.>", args.subject_prefix)),
        subject_prefix: args.subject_prefix.clone(),
        max_deliver: args.max_deliver,
        resolution_budget: http.alert_horizon(),
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
        dead_lettered = stats.dead_lettered,
        "stopped"
    );
    Ok(())
}

async fn tail(args: TailArgs, options: NatsOptions) -> Result<()> {
    let shutdown = shutdown_signal()?;
    let client = nats::connect(&options).await?;
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
