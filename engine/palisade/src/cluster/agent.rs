//! `palisade agent`: a stateless scan agent. It pulls a job from the work
//! queue (its labels' consumers in turn), reads the slice's description,
//! scans its shard through the data path while telling the server the job
//! is in progress, publishes the result, and acknowledges the job only once
//! the result is stored. A heartbeat in the agents' bucket says it lives.
//!
//! Stopped (SIGTERM) in the middle of a job, it stops the scan, gives the
//! job back (`nak`: redelivered at once to another agent) and publishes
//! nothing; killed, its job is redelivered after the consumer's `AckWait`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, object_store};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use palisade_core::cluster::{
    ANY_LABEL, AgentBeat, CLUSTER_VERSION, Job, JobId, ShardCollector, ShardEnd, SliceSpec,
};
use palisade_core::monitor::Millis;
use palisade_dataplane::scan::{self, Answer, Progress, ScanConfig};

use super::{
    AGENTS_BUCKET, BEAT_EVERY, BEAT_TTL, JOBS_STREAM, SLICES_BUCKET, agent_key_subject,
    jobs_consumer, publish_stored,
};
use palisade_outputs::nats::NatsOptions;

/// How long one pull waits for a job before the agent asks the next
/// label's consumer (a consumer with a job answers at once).
const PULL_WAIT: Duration = Duration::from_secs(1);

/// The slices' descriptions an agent keeps (the jobs of one slice come
/// together).
const CACHED_SLICES: usize = 2;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Its name: its key in the agents' bucket, its inbox prefix.
    pub name: String,
    /// The labels whose jobs it takes, [`ANY_LABEL`] always among them.
    pub labels: Vec<String>,
    /// The data path's settings; `rate` is the most it sends.
    pub scan: ScanConfig,
    pub nats: NatsOptions,
}

/// Why an agent stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Connect(#[from] palisade_outputs::nats::NatsConnectError),
    #[error(
        "the coordinator has not set up {what} on NATS (start `palisade run` with [cluster] first): {why}"
    )]
    NotSetUp { what: String, why: String },
}

/// What the agent says of itself in its heartbeat.
#[derive(Debug)]
struct Said {
    started: Millis,
    jobs_done: u64,
    job: Option<JobId>,
}

/// Runs the agent until `stop`.
pub async fn run(options: AgentOptions, stop: Arc<AtomicBool>) -> Result<(), AgentError> {
    let mut nats = options.nats.clone();
    nats.inbox_prefix = Some(format!("_INBOX_{}", options.name));
    let client = palisade_outputs::nats::connect(&nats).await?;
    let js = jetstream::new(client);
    let mut consumers = Vec::new();
    for label in &options.labels {
        let name = jobs_consumer(label);
        let consumer: consumer::PullConsumer = js
            .get_consumer_from_stream(&name, JOBS_STREAM)
            .await
            .map_err(|e| AgentError::NotSetUp {
                what: format!("the jobs consumer {name}"),
                why: e.to_string(),
            })?;
        consumers.push(consumer);
    }
    let slices = js
        .get_object_store(SLICES_BUCKET)
        .await
        .map_err(|e| AgentError::NotSetUp {
            what: format!("the object store {SLICES_BUCKET}"),
            why: e.to_string(),
        })?;
    let said = Arc::new(std::sync::Mutex::new(Said {
        started: crate::daemon::now_ms(),
        jobs_done: 0,
        job: None,
    }));
    let beats = tokio::spawn(beat(
        js.clone(),
        options.clone(),
        Arc::clone(&said),
        Arc::clone(&stop),
    ));
    tracing::info!(
        agent = %options.name,
        labels = ?options.labels,
        rate = options.scan.rate,
        "agent ready: pulling jobs"
    );
    let mut cache: VecDeque<(String, SliceSpec)> = VecDeque::new();
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let consumer = &consumers[next % consumers.len()];
        next += 1;
        let Some(message) = pull(consumer).await else {
            continue;
        };
        let ack_wait = consumer.cached_info().config.ack_wait;
        work(
            &js, &slices, &options, &mut cache, message, ack_wait, &said, &stop,
        )
        .await;
    }
    beats.abort();
    // Gone at once rather than when the heartbeat expires.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("KV-Operation", "DEL");
    let gone = async {
        js.publish_with_headers(
            agent_key_subject(&options.name),
            headers,
            Default::default(),
        )
        .await?
        .await
        .map(|_| ())
        .map_err(|e| e.to_string().into())
    };
    let said_gone: Result<(), Box<dyn std::error::Error + Send + Sync>> =
        match tokio::time::timeout(Duration::from_secs(2), gone).await {
            Ok(result) => result,
            Err(_) => Err("timed out".into()),
        };
    if let Err(e) = said_gone {
        tracing::debug!("agent: cannot say it is gone (its heartbeat expires by itself): {e}");
    }
    tracing::info!(agent = %options.name, "agent stopped");
    Ok(())
}

/// The next job of `consumer`, waiting at most [`PULL_WAIT`].
async fn pull(consumer: &consumer::PullConsumer) -> Option<jetstream::Message> {
    let batch = consumer
        .fetch()
        .max_messages(1)
        .expires(PULL_WAIT)
        .messages()
        .await;
    let mut batch = match batch {
        Ok(batch) => batch,
        Err(e) => {
            tracing::debug!(error = %e, "agent: cannot pull a job");
            tokio::time::sleep(PULL_WAIT).await;
            return None;
        }
    };
    match batch.next().await {
        Some(Ok(message)) => Some(message),
        Some(Err(e)) => {
            tracing::debug!(error = %e, "agent: pull");
            None
        }
        None => None,
    }
}

/// One job: scanned and its result stored, then acknowledged; refused for
/// good if it cannot be valid; given back if the agent stops.
#[allow(clippy::too_many_arguments)]
async fn work(
    js: &jetstream::Context,
    slices: &object_store::ObjectStore,
    options: &AgentOptions,
    cache: &mut VecDeque<(String, SliceSpec)>,
    message: jetstream::Message,
    ack_wait: Duration,
    said: &std::sync::Mutex<Said>,
    stop: &Arc<AtomicBool>,
) {
    let attempt = message
        .info()
        .map_or(1, |info| info.delivered.max(1) as u64);
    let job = match serde_json::from_slice::<Job>(&message.payload) {
        Ok(job) => job,
        Err(e) => return refuse(&message, &format!("a job that does not decode: {e}")).await,
    };
    if let Err(e) = job.check() {
        return refuse(&message, &format!("job {}: {e}", job.id)).await;
    }
    let spec = match slice(slices, cache, &job).await {
        Ok(spec) => spec,
        Err(Fetch::Refused(why)) => return refuse(&message, &why).await,
        Err(Fetch::Later(why)) => {
            tracing::warn!(job = %job.id, "agent: {why}; the job is given back");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    };
    let sweep = match spec.sweep() {
        Ok(sweep) => sweep,
        Err(e) => return refuse(&message, &format!("slice {}: {e}", spec.object_name())).await,
    };
    said.lock().unwrap_or_else(|e| e.into_inner()).job = Some(job.id);
    tracing::info!(job = %job.id, attempt, probes = job.probes, "agent: job taken");
    let mut config = options.scan.clone();
    config.shard = job.shard();
    config.rate = job.rate.min(options.scan.rate);
    config.per_host_rate = job.per_host_rate;
    config.cookie_key = Some(job.key.to_bytes());
    config.ping = spec.ping_of(job.shard());
    config.report_closed = true;

    // The scan runs on a thread of its own while this task keeps the job
    // alive; the agent's stop ends it.
    let scan_stop = Arc::new(AtomicBool::new(false));
    let mut scanning = {
        let scan_stop = Arc::clone(&scan_stop);
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || {
            let mut collector = ShardCollector::new(&spec);
            let progress = Progress::default();
            let summary = scan::run(&sweep, &config, &scan_stop, &progress, |f| match f.answer {
                Answer::Echo => collector.record_echo(f.ip),
                Answer::Open => collector.record(f.ip, f.port, true),
                Answer::Closed => collector.record(f.ip, f.port, false),
            });
            (collector, summary)
        })
    };
    let every = (ack_wait / 3).max(Duration::from_millis(200));
    let mut alive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let (collector, summary) = loop {
        tokio::select! {
            done = &mut scanning => match done {
                Ok(done) => break done,
                Err(e) => {
                    tracing::error!(job = %job.id, "agent: the scan thread failed: {e}");
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    return;
                }
            },
            _ = alive.tick() => {
                if stop.load(Ordering::Relaxed) {
                    scan_stop.store(true, Ordering::Relaxed);
                } else if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(job = %job.id, error = %e, "agent: in-progress ack");
                }
            }
        }
    };
    said.lock().unwrap_or_else(|e| e.into_inner()).job = None;
    let (end, sent, retries) = match summary {
        Ok(s) if s.interrupted || stop.load(Ordering::Relaxed) => {
            tracing::info!(job = %job.id, "agent: stopped mid-job; the job is given back");
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
        Ok(s) => {
            let end = if s.ringbuf_full > 0 {
                ShardEnd::RepliesLost {
                    lost: s.ringbuf_full,
                }
            } else {
                ShardEnd::Completed
            };
            tracing::info!(job = %job.id, sent = s.sent, retries = s.retries, open = s.open,
                secs = s.duration.as_secs_f64(), "agent: shard scanned");
            (end, s.sent + s.retries, Some(s.retry_outcome()))
        }
        Err(e) => {
            tracing::error!(job = %job.id, "agent: the scan failed: {e}");
            (ShardEnd::Failed { why: e.to_string() }, 0, None)
        }
    };
    let result = collector.finish(&job, attempt, &options.name, end, sent, retries);
    let payload = match serde_json::to_vec(&result) {
        Ok(bytes) => bytes.into(),
        Err(e) => {
            tracing::error!(job = %job.id, "agent: cannot encode the result: {e}");
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
    };
    let never = AtomicBool::new(false);
    match publish_stored(
        js,
        &result.subject(),
        &result.msg_id(),
        &[],
        payload,
        &never,
    )
    .await
    {
        Ok(_) => {
            // Only now: a result lost before it was stored is redone.
            if let Err(e) = message.double_ack().await {
                tracing::warn!(job = %job.id, error = %e,
                    "agent: the job's acknowledgement failed (it may be redelivered; its result is merged once)");
            }
            said.lock().unwrap_or_else(|e| e.into_inner()).jobs_done += 1;
        }
        Err(e) => {
            tracing::error!(job = %job.id, "agent: {e}; the job is given back");
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// A job that can never be valid: terminated (never redelivered).
async fn refuse(message: &jetstream::Message, why: &str) {
    tracing::error!("agent: refused {why}");
    let _ = message.ack_with(AckKind::Term).await;
}

enum Fetch {
    /// The description is bad: no delivery can change that.
    Refused(String),
    /// It could not be read now.
    Later(String),
}

/// The description of `job`'s slice, from the cache or the object store.
async fn slice(
    slices: &object_store::ObjectStore,
    cache: &mut VecDeque<(String, SliceSpec)>,
    job: &Job,
) -> Result<SliceSpec, Fetch> {
    let name = &job.slice_object;
    if let Some((_, spec)) = cache.iter().find(|(n, _)| n == name) {
        return Ok(spec.clone());
    }
    let mut object = slices
        .get(name.as_str())
        .await
        .map_err(|e| Fetch::Later(format!("cannot read slice {name}: {e}")))?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| Fetch::Later(format!("cannot read slice {name}: {e}")))?;
    let spec: SliceSpec = serde_json::from_slice(&bytes)
        .map_err(|e| Fetch::Refused(format!("slice {name} does not decode: {e}")))?;
    spec.check(job)
        .map_err(|e| Fetch::Refused(format!("slice {name}: {e}")))?;
    cache.push_front((name.clone(), spec.clone()));
    cache.truncate(CACHED_SLICES);
    Ok(spec)
}

/// Every [`BEAT_EVERY`]: the agent's heartbeat, a key of its own with a
/// time to live of [`BEAT_TTL`].
async fn beat(
    js: jetstream::Context,
    options: AgentOptions,
    said: Arc<std::sync::Mutex<Said>>,
    stop: Arc<AtomicBool>,
) {
    let subject = agent_key_subject(&options.name);
    let ttl = BEAT_TTL.as_secs().to_string();
    let mut every = tokio::time::interval(BEAT_EVERY);
    let mut failing = false;
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        every.tick().await;
        let beat = {
            let said = said.lock().unwrap_or_else(|e| e.into_inner());
            AgentBeat {
                version: CLUSTER_VERSION,
                name: options.name.clone(),
                labels: options.labels.clone(),
                rate: options.scan.rate,
                started: said.started,
                jobs_done: said.jobs_done,
                job: said.job,
            }
        };
        let Ok(payload) = serde_json::to_vec(&beat) else {
            continue;
        };
        sequence += 1;
        let msg_id = format!("beat.{}.{}.{sequence}", options.name, beat.started);
        // Stopped from the start: one try; the next beat is the retry.
        let once = AtomicBool::new(true);
        match publish_stored(
            &js,
            &subject,
            &msg_id,
            &[("Nats-TTL", ttl.clone())],
            payload.into(),
            &once,
        )
        .await
        {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("agent: heartbeat stored again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("agent: heartbeat to {AGENTS_BUCKET} failed: {e}");
            }
            Err(_) => {}
        }
    }
}

/// The labels an agent takes jobs of: `labels` and [`ANY_LABEL`], each
/// once, in order.
pub fn with_any(labels: &[String]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for label in labels.iter().map(String::as_str).chain([ANY_LABEL]) {
        if !all.iter().any(|l| l == label) {
            all.push(label.to_string());
        }
    }
    all
}
