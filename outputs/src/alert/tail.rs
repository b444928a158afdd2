//! `palisade-alert tail`: the live event stream, one human line each.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt;

use super::consumer::{ConsumerError, decode_message, lookup_stream};
use super::human_line;
use crate::schema::{self, PayloadFormat};

/// What to tail.
#[derive(Debug, Clone)]
pub struct TailConfig {
    /// The JetStream stream (`PALISADE`).
    pub stream: String,
    /// The subject filter (`palisade.>`: events and scan summaries).
    pub filter: String,
    /// Print each envelope as one JSON line instead of a human line.
    pub json: bool,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            stream: crate::sink::DEFAULT_NATS_STREAM.to_string(),
            filter: "palisade.>".to_string(),
            json: false,
        }
    }
}

/// Why tailing stopped.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error("cannot write: {0}")]
    Write(#[source] std::io::Error),
}

/// Prints events published from now on (an ephemeral, ordered consumer
/// delivering new messages only) until `shutdown` completes or `out` is
/// closed (e.g. a pipe into `head`). Returns the number of lines written.
///
/// A stream that does not exist yet is waited for; a NATS restart is ridden
/// out (the ordered consumer is recreated where it left off).
pub async fn tail(
    client: async_nats::Client,
    config: &TailConfig,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<u64, TailError> {
    tokio::pin!(shutdown);
    let js = jetstream::new(client);
    let mut lines = 0u64;
    let mut started = false;
    let mut warned = false;
    let mut last_sequence = None;
    loop {
        let setup = tokio::select! {
            _ = &mut shutdown => return Ok(lines),
            setup = subscribe(&js, config, last_sequence) => setup,
        };
        let mut messages = match setup {
            Ok(messages) => messages,
            Err(e) => {
                let wait = matches!(e, ConsumerError::StreamNotFound { .. });
                if !started && !wait {
                    return Err(e.into());
                }
                if !warned {
                    tracing::warn!("{e}; waiting");
                    warned = true;
                }
                tokio::select! {
                    _ = &mut shutdown => return Ok(lines),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        started = true;
        warned = false;
        tracing::info!(stream = %config.stream, filter = %config.filter, "tailing new events");
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(lines),
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::warn!(
                        "tail subscription: {}; setting it up again",
                        super::error_chain(&e)
                    );
                    break;
                }
                None => break,
            };
            if let Ok(info) = message.info() {
                last_sequence = Some(info.stream_sequence);
            }
            let content_type = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Content-Type"))
                .map(|v| v.as_str().to_string());
            let line = match decode_message(content_type.as_deref(), &message.payload) {
                Ok(event) if config.json => match schema::encode(&event, PayloadFormat::Json) {
                    Ok(json) => String::from_utf8_lossy(&json).into_owned(),
                    Err(e) => format!("{}: cannot encode: {e}", message.subject),
                },
                Ok(event) => human_line(&event),
                Err(e) => format!("{}: undecodable message: {e}", message.subject),
            };
            match writeln!(out, "{line}").and_then(|()| out.flush()) {
                Ok(()) => lines += 1,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(lines),
                Err(e) => return Err(TailError::Write(e)),
            }
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(lines),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// An ordered consumer from the message after `after` (new messages when
/// `None`).
async fn subscribe(
    js: &jetstream::Context,
    config: &TailConfig,
    after: Option<u64>,
) -> Result<pull::Ordered, ConsumerError> {
    let stream = lookup_stream(js, &config.stream).await?;
    let deliver_policy = match after {
        Some(seq) => DeliverPolicy::ByStartSequence {
            start_sequence: seq + 1,
        },
        None => DeliverPolicy::New,
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: config.filter.clone(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| ConsumerError::CreateConsumer {
            stream: config.stream.clone(),
            consumer: "(ephemeral)".to_string(),
            reason: super::error_chain(&e),
        })?;
    consumer.messages().await.map_err(|e| ConsumerError::Pull {
        consumer: "(ephemeral)".to_string(),
        reason: super::error_chain(&e),
    })
}
