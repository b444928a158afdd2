//! Scan agents fed by a NATS JetStream work queue (`docs/CLUSTER.md`): the
//! I/O shells around the pure [`palisade_core::cluster`].
//!
//! - [`coordinator`]: `palisade run` with `[cluster]`. It probes a slice
//!   by publishing its jobs and merging the agents' results
//!   ([`coordinator::Coordinator::probe`]), and watches the agents'
//!   heartbeats.
//! - [`agent`]: `palisade agent`, a data path and a NATS client: it pulls
//!   jobs, scans, publishes results, and acknowledges a job only once its
//!   result is stored.
//!
//! This module holds what both sides share: the names on the server, and
//! publishing with a `Nats-Msg-Id` until the server acknowledges.

pub mod agent;
pub mod coordinator;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;

/// The jobs: a work queue (a job is gone once acknowledged).
pub const JOBS_STREAM: &str = "PALISADE_JOBS";
/// The agents' results, read by the coordinator.
pub const RESULTS_STREAM: &str = "PALISADE_RESULTS";
/// The coordinator's consumer of [`RESULTS_STREAM`].
pub const RESULTS_CONSUMER: &str = "coordinator";
/// The slices' descriptions (`SliceSpec`), an object store.
pub const SLICES_BUCKET: &str = "PALISADE_SLICES";
/// The agents' heartbeats (`AgentBeat`), a key-value bucket: one key per
/// agent, each with its own time to live.
pub const AGENTS_BUCKET: &str = "PALISADE_AGENTS";
/// How often an agent sends its heartbeat.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);
/// How long a heartbeat lives: an agent silent this long is gone.
pub const BEAT_TTL: Duration = Duration::from_secs(15);
/// The streams' duplicate windows: the longest NATS outage a publish
/// retried with the same `Nats-Msg-Id` rides out without a duplicate.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// How long a publish is retried (the same message id) before it fails.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(120);

/// The jobs consumer of agents with `label`.
pub fn jobs_consumer(label: &str) -> String {
    format!("jobs-{label}")
}

/// The subject a KV key is written to.
pub fn agent_key_subject(name: &str) -> String {
    format!("$KV.{AGENTS_BUCKET}.{name}")
}

/// Publishes `payload` to `subject` with the message id `msg_id` (and
/// `extra` headers) and waits for JetStream's acknowledgement, retrying
/// with the same id through outages for up to [`PUBLISH_PATIENCE`], or
/// until `stop`: a message retried after a lost acknowledgement is stored
/// once. The stream's sequence of the message.
pub async fn publish_stored(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    extra: &[(&str, String)],
    payload: Bytes,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    for (name, value) in extra {
        headers.insert(*name, value.as_str());
    }
    let began = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let sent: Result<PublishAckFuture, String> = js
            .publish_with_headers(subject.to_string(), headers.clone(), payload.clone())
            .await
            .map_err(|e| e.to_string());
        let error = match sent {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => e.to_string(),
            },
            Err(e) => e,
        };
        if began.elapsed() >= PUBLISH_PATIENCE || stop.load(Ordering::Relaxed) {
            return Err(format!("publish to {subject} failed: {error}"));
        }
        tracing::debug!(subject, error, "publish not acknowledged; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
