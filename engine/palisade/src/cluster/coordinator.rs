//! The coordinator: `palisade run` with `[cluster]`. The daemon's sweeps,
//! states, store and delivery are unchanged; only the probing of a slice
//! is done by the agents ([`Coordinator::probe`], the daemon's `Probe`).
//!
//! At start it connects, creates (or updates) what the agents use (the
//! jobs stream and one consumer per label, the results stream and its
//! consumer, the slices' object store, the agents' bucket), drops what a
//! previous run left in the queues, and starts watching the agents'
//! heartbeats. Per slice: the description to the object store, one job per
//! shard to the work queue, then each job's first result merged
//! ([`SweepLedger`]) until every job has an outcome, a job is given up
//! after `MaxDeliver` deliveries (the server's advisory), or the slice's
//! deadline passes (no agent took the jobs).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use futures::StreamExt;
use serde::Deserialize;

use palisade_core::cluster::{
    ANY_LABEL, AgentBeat, JOBS_SUBJECT, JobId, JobParams, Merge, QueueTimes, RESULTS_SUBJECT,
    ShardResult, SliceSpec, SweepLedger, plan_jobs, slice_deadline,
};
use palisade_core::monitor::Millis;
use palisade_core::plan::{SweepEnd, SweepReplies};
use palisade_core::probe::cookie::CookieKey;

use super::{
    AGENTS_BUCKET, DUPLICATE_WINDOW, JOBS_STREAM, RESULTS_CONSUMER, RESULTS_STREAM, SLICES_BUCKET,
    jobs_consumer, publish_stored,
};
use crate::config::ClusterSettings;
use crate::daemon::SliceProbe;

/// The server's advisory of a job delivered `MaxDeliver` times and never
/// acknowledged (any jobs consumer).
const MAX_DELIVERIES_ADVISORY: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.PALISADE_JOBS.*";

/// How long the coordinator waits for anything before looking at the stop
/// flag and the deadline again.
const TICK: Duration = Duration::from_millis(200);

/// Why the coordinator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("cluster: cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cluster: {0}")]
    Connect(#[from] palisade_outputs::nats::NatsConnectError),
    #[error("cluster: cannot set up {what} on NATS: {why}")]
    Setup { what: String, why: String },
}

fn setup(what: impl Into<String>) -> impl FnOnce(String) -> CoordinatorError {
    let what = what.into();
    move |why| CoordinatorError::Setup { what, why }
}

/// What the coordinator sees of the agents, as it sees it: for the
/// daemon's store (the agents table) and the slices' sizes.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// A heartbeat, seen at (unix ms).
    Beat(AgentBeat, Millis),
    /// The agent's key expired or was deleted: it is gone.
    Gone(String, Millis),
}

/// How slices went through the queue, and what the coordinator spent on
/// them (its own work, not the waits): for the daemon's log and the
/// benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTally {
    pub slices: u64,
    pub jobs: u64,
    /// Results merged (a job's first).
    pub merged: u64,
    /// Results ignored: a second attempt of a job, or a job given up.
    pub duplicates: u64,
    /// Results of no job under way (an earlier slice or run).
    pub foreign: u64,
    /// Jobs given up after `MaxDeliver` deliveries or at the deadline.
    pub failed: u64,
    /// Describing the slices, cutting them into jobs and queueing them
    /// (each publish until the server acknowledged it).
    pub queueing: Duration,
    /// Decoding, merging and acknowledging the results.
    pub merging: Duration,
}

impl std::ops::AddAssign for QueueTally {
    fn add_assign(&mut self, other: QueueTally) {
        self.slices += other.slices;
        self.jobs += other.jobs;
        self.merged += other.merged;
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
        self.failed += other.failed;
        self.queueing += other.queueing;
        self.merging += other.merging;
    }
}

impl QueueTally {
    /// The coordinator's time per job queued, and per result received, in
    /// microseconds.
    pub fn per_job_us(&self) -> f64 {
        self.queueing.as_secs_f64() * 1e6 / self.jobs.max(1) as f64
    }

    pub fn per_result_us(&self) -> f64 {
        let results = self.merged + self.duplicates + self.foreign;
        self.merging.as_secs_f64() * 1e6 / results.max(1) as f64
    }
}

/// `palisade run`'s side of the agents.
pub struct Coordinator {
    runtime: tokio::runtime::Runtime,
    js: jetstream::Context,
    jobs: stream::Stream,
    slices: object_store::ObjectStore,
    results: Results,
    advisories: async_nats::Subscriber,
    settings: ClusterSettings,
    /// The live agents and their labels, by name (from their heartbeats).
    live: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    /// The slices probed since [`Coordinator::take_tally`].
    tally: QueueTally,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("labels", &self.settings.labels)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Connects and sets up the server; every agent event goes to `seen`
    /// (on a thread of its own: it may block, e.g. on the store).
    pub fn start(
        settings: &ClusterSettings,
        seen: Box<dyn FnMut(AgentEvent) + Send>,
    ) -> Result<Coordinator, CoordinatorError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("palisade-cluster")
            .enable_all()
            .build()
            .map_err(CoordinatorError::Runtime)?;
        // Named `config::COORDINATOR_NAME` by the configuration.
        let options = &settings.nats;
        let live = Arc::new(Mutex::new(BTreeMap::new()));
        let (js, jobs, slices, results, advisories, agents) = runtime.block_on(async {
            let client = palisade_outputs::nats::connect(options).await?;
            let version = client.server_info().version;
            if !supports_message_ttl(&version) {
                return Err(CoordinatorError::Setup {
                    what: "the scan agents".into(),
                    why: format!(
                        "nats-server {version} is too old: the agents' heartbeats need per-message TTLs, \
                         nats-server 2.11 or newer (2.15.1 is tested)"
                    ),
                });
            }
            let js = jetstream::new(client.clone());
            let jobs = jobs_stream(&js, settings).await?;
            let results = results_consumer(&js).await?;
            let slices = slices_store(&js).await?;
            let agents = agents_bucket(&js).await?;
            let advisories = client
                .subscribe(MAX_DELIVERIES_ADVISORY)
                .await
                .map_err(|e| setup("the max-deliveries advisory")(e.to_string()))?;
            Ok::<_, CoordinatorError>((js, jobs, slices, results, advisories, agents))
        })?;
        // The agents live now, before the first sweep is cut into slices for
        // them (the watch replays them too, for the store).
        runtime.block_on(known_agents(&agents, &live));
        runtime.spawn(watch_agents(agents, Arc::clone(&live), seen));
        tracing::info!(
            labels = ?settings.labels,
            servers = %options.urls.join(","),
            "cluster: coordinating scan agents"
        );
        Ok(Coordinator {
            runtime,
            js,
            jobs,
            slices,
            results,
            advisories,
            settings: settings.clone(),
            live,
            tally: QueueTally::default(),
        })
    }

    /// What the slices probed since the last call went through.
    pub fn take_tally(&mut self) -> QueueTally {
        std::mem::take(&mut self.tally)
    }

    /// Whether agent `name`'s heartbeat is in the bucket.
    pub fn is_live(&self, name: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.contains_key(name)
    }

    /// How many live agents take jobs of `label` (every agent takes
    /// [`ANY_LABEL`]).
    pub fn live_agents(&self, label: &str) -> usize {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values()
            .filter(|labels| label == ANY_LABEL || labels.iter().any(|l| l == label))
            .count()
    }

    /// The agents' probes per second together, for the slices' sizes: the
    /// rate of one agent times the live agents (at least one).
    pub fn rate(&self) -> u64 {
        self.settings
            .agent_rate
            .saturating_mul(self.live_agents(ANY_LABEL).max(1) as u64)
    }

    /// Probes `slice` through the agents until every job has an outcome,
    /// `stop`, or the slice's deadline: the slice's end and replies, as the
    /// data path gives them on one host. `per_host_rate` is `[scan]`'s.
    pub fn probe(
        &mut self,
        slice: &SliceProbe<'_>,
        per_host_rate: Option<u64>,
        stop: &AtomicBool,
    ) -> (SweepEnd, SweepReplies) {
        let live = self.live_agents(slice.label) as u64;
        let runtime = &self.runtime;
        let mut run = SliceRun {
            js: &self.js,
            jobs: &self.jobs,
            slices: &self.slices,
            results: &mut self.results,
            advisories: &mut self.advisories,
            settings: &self.settings,
            tally: QueueTally::default(),
        };
        let (end, replies) = runtime.block_on(run.run(slice, per_host_rate, live, stop));
        let tally = run.tally;
        self.tally += tally;
        tracing::debug!(
            slice = slice.index,
            label = slice.label,
            jobs = tally.jobs,
            merged = tally.merged,
            duplicates = tally.duplicates,
            foreign = tally.foreign,
            failed = tally.failed,
            "slice through the agents"
        );
        (end, replies)
    }
}

/// One slice under way.
struct SliceRun<'a> {
    js: &'a jetstream::Context,
    jobs: &'a stream::Stream,
    slices: &'a object_store::ObjectStore,
    results: &'a mut Results,
    advisories: &'a mut async_nats::Subscriber,
    settings: &'a ClusterSettings,
    tally: QueueTally,
}

/// The advisory's fields the coordinator reads.
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

impl SliceRun<'_> {
    async fn run(
        &mut self,
        slice: &SliceProbe<'_>,
        per_host_rate: Option<u64>,
        live: u64,
        stop: &AtomicBool,
    ) -> (SweepEnd, SweepReplies) {
        let queueing = Instant::now();
        self.tally.slices = 1;
        let spec = SliceSpec::new(
            slice.sweep,
            slice.index,
            slice.started as u64,
            slice.targets,
        );
        let failed = |why: String| (SweepEnd::Failed(why), slice.targets.replies());
        let mut key = [0u8; 16];
        if let Err(e) = getrandom::fill(&mut key) {
            return failed(format!("no random cookie key: {e}"));
        }
        let params = JobParams {
            label: slice.label.to_string(),
            rate: self.settings.agent_rate,
            per_host_rate,
            max_shard_ms: millis(self.settings.shard_time),
        };
        let jobs = match plan_jobs(&spec, &params, &CookieKey::from_bytes(key)) {
            Ok(jobs) => jobs,
            Err(e) => return failed(format!("cannot cut the slice into jobs: {e}")),
        };
        self.tally.jobs = jobs.len() as u64;
        // The description first, then the jobs that name it.
        let object = spec.object_name();
        let described = match serde_json::to_vec(&spec) {
            Ok(bytes) => self
                .slices
                .put(object.as_str(), &mut bytes.as_slice())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = described {
            return failed(format!("cannot publish the slice's description: {e}"));
        }
        let published = crate::daemon::now_ms();
        let mut sequences: HashMap<u64, JobId> = HashMap::new();
        for job in &jobs {
            let payload = match serde_json::to_vec(job) {
                Ok(bytes) => bytes.into(),
                Err(e) => return failed(format!("cannot encode job {}: {e}", job.id)),
            };
            match publish_stored(self.js, &job.subject(), &job.msg_id(), &[], payload, stop).await {
                Ok(sequence) => {
                    sequences.insert(sequence, job.id);
                }
                Err(e) => {
                    self.forget(&spec).await;
                    return failed(format!("cannot queue job {}: {e}", job.id));
                }
            }
        }
        self.tally.queueing += queueing.elapsed();
        tracing::debug!(
            slice = slice.index,
            label = slice.label,
            jobs = jobs.len(),
            live_agents = live,
            "slice queued"
        );
        // A shard takes `shard_time` at the agents' rate, or longer where the
        // per-host cap binds (few hosts).
        let hosts = u64::try_from(spec.target_set().count()).unwrap_or(u64::MAX);
        let longest = jobs.iter().map(|j| j.scan_ms(hosts)).max().unwrap_or(0);
        let times = QueueTimes {
            max_shard_ms: millis(self.settings.shard_time).max(longest),
            ack_wait_ms: millis(self.settings.ack_wait),
            max_deliver: u64::from(self.settings.max_deliver),
        };
        let deadline = slice_deadline(published, jobs.len() as u64, live, times);
        let mut ledger = SweepLedger::new(
            slice.sweep,
            slice.index,
            jobs.len() as u64,
            slice.targets.replies(),
        );
        while !ledger.is_complete() && !stop.load(Ordering::Relaxed) {
            if crate::daemon::now_ms() >= deadline {
                let pending: Vec<JobId> = ledger.pending().collect();
                tracing::warn!(
                    slice = slice.index,
                    jobs = pending.len(),
                    "cluster: no agent finished these jobs before the slice's deadline; \
                     their ports count as inconclusive"
                );
                for job in pending {
                    ledger.fail(job, 0);
                    self.tally.failed += 1;
                }
                break;
            }
            tokio::select! {
                message = self.results.next() => self.on_result(message, &mut ledger).await,
                advisory = self.advisories.next() => {
                    if let Some(advisory) = advisory {
                        self.on_advisory(&advisory.payload, &sequences, &mut ledger).await;
                    }
                }
                () = tokio::time::sleep(TICK) => {}
            }
        }
        self.forget(&spec).await;
        ledger.finish()
    }

    /// A message of the results consumer: merged if it is its job's first
    /// outcome, acknowledged whatever it is (a result of no job under way
    /// is dropped).
    async fn on_result(
        &mut self,
        message: Option<Result<jetstream::Message, String>>,
        ledger: &mut SweepLedger,
    ) {
        let merging = Instant::now();
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                tracing::debug!(error = e, "cluster: results consumer");
                tokio::time::sleep(TICK).await;
                return;
            }
            None => {
                tokio::time::sleep(TICK).await;
                return;
            }
        };
        match serde_json::from_slice::<ShardResult>(&message.payload) {
            Ok(result) => match ledger.accept(&result) {
                Merge::Merged => {
                    self.tally.merged += 1;
                    tracing::debug!(job = %result.job, attempt = result.attempt,
                        agent = %result.agent, "shard result merged");
                }
                Merge::Duplicate | Merge::AfterFailure => self.tally.duplicates += 1,
                Merge::Foreign => self.tally.foreign += 1,
            },
            Err(e) => {
                self.tally.foreign += 1;
                tracing::warn!(subject = %message.subject, "cluster: a result that does not decode: {e}");
            }
        }
        if let Err(e) = message.ack().await {
            // Redelivered later, then merged as a duplicate or foreign.
            tracing::debug!(error = %e, "cluster: result not acknowledged");
        }
        self.tally.merging += merging.elapsed();
    }

    /// A job delivered `MaxDeliver` times: its shard failed; it is removed
    /// from the queue (a work queue keeps a message never acknowledged).
    async fn on_advisory(
        &mut self,
        payload: &[u8],
        sequences: &HashMap<u64, JobId>,
        ledger: &mut SweepLedger,
    ) {
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(payload) else {
            return;
        };
        let Some(&job) = sequences.get(&advisory.stream_seq) else {
            return;
        };
        if ledger.fail(job, advisory.deliveries) {
            self.tally.failed += 1;
            tracing::warn!(
                job = %job,
                deliveries = advisory.deliveries,
                "cluster: job given up after its last delivery; its ports count as inconclusive"
            );
        }
        if let Err(e) = self.jobs.delete_message(advisory.stream_seq).await {
            tracing::debug!(error = %e, "cluster: cannot delete a job given up");
        }
    }

    /// Removes what is left of the slice: jobs no agent finished, its
    /// description.
    async fn forget(&self, spec: &SliceSpec) {
        let subject = format!("{JOBS_SUBJECT}.*.{}.{}", spec.sweep, spec.slice);
        if let Err(e) = self.jobs.purge().filter(subject).await {
            tracing::debug!(error = %e, "cluster: cannot purge the slice's jobs");
        }
        if let Err(e) = self.slices.delete(spec.object_name().as_str()).await {
            tracing::debug!(error = %e, "cluster: cannot delete the slice's description");
        }
    }
}

/// Whether a nats-server of `version` (`2.15.1`) keeps per-message TTLs
/// (2.11 and newer); a version that does not parse is given the benefit.
fn supports_message_ttl(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (2, 11),
        _ => true,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The jobs stream, emptied of a previous run's jobs, and a consumer per
/// label.
async fn jobs_stream(
    js: &jetstream::Context,
    settings: &ClusterSettings,
) -> Result<stream::Stream, CoordinatorError> {
    // Every job there belongs to a run that is over.
    let stream = work_queue(js, JOBS_STREAM, &format!("{JOBS_SUBJECT}.>")).await?;
    for label in &settings.labels {
        let name = jobs_consumer(label);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("{JOBS_SUBJECT}.{label}.>"),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_deliver: i64::from(settings.max_deliver),
            max_ack_pending: 1_000,
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| setup(format!("the jobs consumer {name}"))(e.to_string()))?;
    }
    Ok(stream)
}

/// The coordinator's consumer of the results and its stream of messages,
/// started again when it ends (the connection's outages do not end it; a
/// consumer deleted on the server does).
struct Results {
    consumer: consumer::PullConsumer,
    messages: Option<consumer::pull::Stream>,
}

impl Results {
    /// The next message, or an error to log (`None`: none for now).
    async fn next(&mut self) -> Option<Result<jetstream::Message, String>> {
        let messages = match &mut self.messages {
            Some(messages) => messages,
            None => match self.consumer.messages().await {
                Ok(messages) => self.messages.insert(messages),
                Err(e) => {
                    tokio::time::sleep(TICK).await;
                    return Some(Err(format!("cannot read the results: {e}")));
                }
            },
        };
        match messages.next().await {
            Some(Ok(message)) => Some(Ok(message)),
            Some(Err(e)) => Some(Err(e.to_string())),
            None => {
                self.messages = None;
                None
            }
        }
    }
}

/// The results stream, emptied of a previous run's results, and the
/// coordinator's consumer of it.
async fn results_consumer(js: &jetstream::Context) -> Result<Results, CoordinatorError> {
    // Every result there belongs to a run that is over.
    let stream = work_queue(js, RESULTS_STREAM, &format!("{RESULTS_SUBJECT}.>")).await?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(RESULTS_CONSUMER.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| setup("the results consumer")(e.to_string()))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| setup("the results consumer")(e.to_string()))?;
    Ok(Results {
        consumer,
        messages: Some(messages),
    })
}

/// The work-queue stream `name` of `subjects`, as configured (created, or
/// updated if it exists), emptied.
async fn work_queue(
    js: &jetstream::Context,
    name: &str,
    subjects: &str,
) -> Result<stream::Stream, CoordinatorError> {
    let config = stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let stream = create_or_update(js, config).await?;
    stream
        .purge()
        .await
        .map_err(|e| setup(format!("the stream {name} (purge)"))(e.to_string()))?;
    Ok(stream)
}

/// The stream `config.name` as configured: created, or updated if it
/// exists.
async fn create_or_update(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, CoordinatorError> {
    let name = config.name.clone();
    let fail = |e: String| setup(format!("the stream {name}"))(e);
    match js.get_stream(&name).await {
        Ok(_) => {
            js.update_stream(&config)
                .await
                .map_err(|e| fail(e.to_string()))?;
            js.get_stream(&name).await.map_err(|e| fail(e.to_string()))
        }
        Err(_) => js
            .create_stream(config)
            .await
            .map_err(|e| fail(e.to_string())),
    }
}

/// The slices' object store: its objects outlive nothing by more than a
/// day, and a run starts with none.
async fn slices_store(
    js: &jetstream::Context,
) -> Result<object_store::ObjectStore, CoordinatorError> {
    let store = match js.get_object_store(SLICES_BUCKET).await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: SLICES_BUCKET.into(),
                max_age: Duration::from_secs(86_400),
                ..Default::default()
            })
            .await
            .map_err(|e| setup("the object store PALISADE_SLICES")(e.to_string()))?,
    };
    let stream = js
        .get_stream(format!("OBJ_{SLICES_BUCKET}"))
        .await
        .map_err(|e| setup("the object store PALISADE_SLICES")(e.to_string()))?;
    stream
        .purge()
        .await
        .map_err(|e| setup("the object store PALISADE_SLICES (purge)")(e.to_string()))?;
    Ok(store)
}

/// The agents' bucket: keys with their own time to live, and a delete
/// marker when one ages out.
async fn agents_bucket(js: &jetstream::Context) -> Result<kv::Store, CoordinatorError> {
    match js.get_key_value(AGENTS_BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: AGENTS_BUCKET.into(),
                history: 1,
                limit_markers: Some(Duration::from_secs(60)),
                ..Default::default()
            })
            .await
            .map_err(|e| setup("the key-value bucket PALISADE_AGENTS")(e.to_string())),
    }
}

/// The agents whose heartbeat is in the bucket now, into `live` (bounded:
/// a bucket that cannot be read leaves it to the watch).
async fn known_agents(agents: &kv::Store, live: &Mutex<BTreeMap<String, Vec<String>>>) {
    let read = async {
        let mut keys = agents.keys().await.ok()?;
        while let Some(Ok(key)) = keys.next().await {
            let Ok(Some(entry)) = agents.entry(&key).await else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            if let Ok(beat) = serde_json::from_slice::<AgentBeat>(&entry.value)
                && beat.check().is_ok()
                && beat.name == key
            {
                tracing::info!(agent = %beat.name, labels = ?beat.labels, rate = beat.rate,
                    "cluster: agent joined");
                live.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(beat.name, beat.labels);
            }
        }
        Some(())
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        tracing::debug!("cluster: the agents' bucket was not read in time");
    }
}

/// Follows the agents' bucket: each heartbeat and each agent gone goes to
/// `seen` (on a thread of its own) and into `live`. Watches again after an
/// outage.
async fn watch_agents(
    agents: kv::Store,
    live: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    seen: Box<dyn FnMut(AgentEvent) + Send>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<AgentEvent>();
    let mut seen = seen;
    std::thread::Builder::new()
        .name("palisade-agents".into())
        .spawn(move || {
            for event in rx {
                seen(event);
            }
        })
        .ok();
    loop {
        // With each key's last entry first: the agents that beat before the
        // coordinator (re)started its watch are live now, not at their next
        // beat (`watch_all` delivers new entries only).
        let mut watch = match agents.watch_with_history(">").await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::debug!(error = %e, "cluster: cannot watch the agents; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else { break };
            let now = crate::daemon::now_ms();
            let event = match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<AgentBeat>(&entry.value) {
                    Ok(beat) if beat.check().is_ok() && beat.name == entry.key => {
                        let mut map = live.lock().unwrap_or_else(|e| e.into_inner());
                        if !map.contains_key(&beat.name) {
                            tracing::info!(agent = %beat.name, labels = ?beat.labels, rate = beat.rate,
                                "cluster: agent joined");
                        }
                        map.insert(beat.name.clone(), beat.labels.clone());
                        AgentEvent::Beat(beat, now)
                    }
                    _ => {
                        tracing::warn!(key = %entry.key, "cluster: a heartbeat that does not decode");
                        continue;
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => {
                    let was = live
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&entry.key);
                    if was.is_some() {
                        tracing::warn!(agent = %entry.key, "cluster: agent gone");
                    }
                    AgentEvent::Gone(entry.key.clone(), now)
                }
            };
            if tx.send(event).is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_message_ttls_need_nats_server_2_11() {
        for (version, ok) in [
            ("2.9.10", false),
            ("2.10.22", false),
            ("2.11.0", true),
            ("v2.15.1", true),
            ("3.0.0-beta", true),
            ("dev", true),
        ] {
            assert_eq!(supports_message_ttl(version), ok, "{version}");
        }
    }
}
