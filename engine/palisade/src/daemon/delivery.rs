//! Delivery: the configured sinks drain the outbox.
//!
//! Each sink has its own place in the outbox; a row counts as delivered to a
//! sink only after the sink acknowledged it, so a sink that is down loses
//! nothing: its rows wait and are retried with backoff. Sinks connect lazily,
//! when there is something to deliver, and reconnect after failures.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use palisade_outputs::schema::Envelope;
use palisade_outputs::sink::{JsonlSink, NatsSink, Sink, SinkError, WebhookSink};

use super::now_ms;
use crate::config::SinkSpec;
use crate::store::{Store, StoreError};

/// The sinks to deliver to: the configured ones, plus a JSON lines file
/// (`--events`); standard output if that makes none.
pub fn sink_specs(configured: &[SinkSpec], events: Option<&PathBuf>) -> Vec<SinkSpec> {
    let mut specs = configured.to_vec();
    if let Some(path) = events {
        specs.push(SinkSpec::Jsonl {
            path: Some(path.clone()),
        });
    }
    if specs.is_empty() {
        specs.push(SinkSpec::Jsonl { path: None });
    }
    specs
}

/// The stable name a sink's deliveries are recorded under.
pub fn sink_name(spec: &SinkSpec) -> String {
    match spec {
        SinkSpec::Jsonl { path } => format!(
            "jsonl:{}",
            path.as_deref()
                .map_or("-".into(), |p| p.display().to_string())
        ),
        SinkSpec::Nats(n) => format!("nats:{}", n.stream),
        SinkSpec::Webhook { url, .. } => format!("webhook:{url}"),
    }
}

/// Whether the sink publishes outbox rows of `kind`: scan summaries go to
/// NATS (`<prefix>.scans.<monitor>`) only, events everywhere.
pub fn sink_takes(spec: &SinkSpec, kind: &str) -> bool {
    kind != "scan" || matches!(spec, SinkSpec::Nats(_))
}

/// The wait after a failure, given the wait before it: 250 ms, doubling
/// with each consecutive failure, up to 30 s.
fn backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(Duration::from_millis(250), Duration::from_secs(30))
}

/// One sink and its delivery state.
struct SinkSlot {
    spec: SinkSpec,
    /// [`sink_name`] of `spec`.
    name: String,
    sink: Option<Box<dyn Sink>>,
    retry_at: Instant,
    backoff: Duration,
    /// The last failure, logged once rather than at every retry.
    last_error: Option<String>,
}

impl SinkSlot {
    fn new(spec: SinkSpec) -> SinkSlot {
        SinkSlot {
            name: sink_name(&spec),
            spec,
            sink: None,
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
            last_error: None,
        }
    }

    async fn connect(&self) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match &self.spec {
            SinkSpec::Jsonl { path } => Box::new(JsonlSink::open(path.as_deref())?),
            SinkSpec::Nats(n) => Box::new(NatsSink::connect(n.clone()).await?),
            SinkSpec::Webhook {
                url,
                timeout,
                max_retries,
            } => Box::new(WebhookSink::new(url.clone(), *timeout, *max_retries)?),
        })
    }

    /// After a failure: wait longer each time.
    fn fail(&mut self, why: &dyn std::fmt::Display) {
        self.backoff = backoff(self.backoff);
        self.retry_at = Instant::now() + self.backoff;
        let why = why.to_string();
        if self.last_error.as_deref() != Some(why.as_str()) {
            tracing::warn!(sink = %self.name, "delivery failed, events wait in the outbox and are retried: {why}");
            self.last_error = Some(why);
        }
    }

    fn ok(&mut self) {
        self.backoff = Duration::ZERO;
        if self.last_error.take().is_some() {
            tracing::info!(sink = %self.name, "delivery resumed");
        }
    }
}

/// The sinks, and the I/O runtime their deliveries run on.
pub struct OutboxDelivery {
    slots: Vec<SinkSlot>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for OutboxDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxDelivery")
            .field(
                "sinks",
                &self.slots.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl OutboxDelivery {
    /// Delivery to these sinks (none connected yet).
    pub fn new(specs: Vec<SinkSpec>) -> std::io::Result<OutboxDelivery> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(OutboxDelivery {
            slots: specs.into_iter().map(SinkSlot::new).collect(),
            runtime,
        })
    }

    /// Delivers the outbox to every sink that is not backing off; a row is
    /// marked delivered only after its sink acknowledged it. Returns whether
    /// nothing is left to deliver.
    pub fn drain(&mut self, store: &mut Store) -> Result<bool, StoreError> {
        let mut all_done = true;
        for slot in &mut self.slots {
            if slot.retry_at > Instant::now() {
                all_done &= store.pending(&slot.name, 1)?.is_empty();
                continue;
            }
            if slot.sink.is_none() {
                if store.pending(&slot.name, 1)?.is_empty() {
                    continue;
                }
                match self.runtime.block_on(slot.connect()) {
                    Ok(sink) => slot.sink = Some(sink),
                    Err(e) => {
                        slot.fail(&e);
                        all_done = false;
                        continue;
                    }
                }
            }
            loop {
                let rows = store.pending(&slot.name, 256)?;
                if rows.is_empty() {
                    slot.ok();
                    break;
                }
                // Rows this sink does not take count as delivered to it.
                let (send, skip): (Vec<_>, Vec<_>) = rows
                    .into_iter()
                    .partition(|r| sink_takes(&slot.spec, &r.kind));
                let skipped: Vec<i64> = skip.iter().map(|r| r.seq).collect();
                store.mark_delivered(&slot.name, &skipped, now_ms())?;
                let mut envelopes = Vec::with_capacity(send.len());
                let mut seqs = Vec::with_capacity(send.len());
                for r in &send {
                    match serde_json::from_str::<Envelope>(&r.payload) {
                        Ok(e) => {
                            envelopes.push(e);
                            seqs.push(r.seq);
                        }
                        Err(e) => {
                            tracing::error!(event = %r.event_id, "outbox row is not an envelope, dropped: {e}");
                            store.mark_delivered(&slot.name, &[r.seq], now_ms())?;
                        }
                    }
                }
                if envelopes.is_empty() {
                    continue;
                }
                let Some(sink) = slot.sink.as_mut() else {
                    break;
                };
                match self.runtime.block_on(sink.publish(&envelopes)) {
                    Ok(n) => {
                        store.mark_delivered(&slot.name, &seqs[..n.min(seqs.len())], now_ms())?;
                        if n < envelopes.len() {
                            slot.fail(&format!("{} of {} events acknowledged", n, envelopes.len()));
                            all_done = false;
                            break;
                        }
                    }
                    Err(e) => {
                        slot.fail(&e);
                        all_done = false;
                        break;
                    }
                }
            }
        }
        Ok(all_done)
    }

    /// Drains until nothing is left or `limit` has passed (the end of a
    /// `--once` run); what is left waits in the outbox for the next run.
    pub fn drain_for(&mut self, store: &mut Store, limit: Duration) -> Result<bool, StoreError> {
        let deadline = Instant::now() + limit;
        loop {
            if self.drain(store)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                let left: Vec<&str> = self
                    .slots
                    .iter()
                    .filter(|s| store.pending(&s.name, 1).is_ok_and(|p| !p.is_empty()))
                    .map(|s| s.name.as_str())
                    .collect();
                tracing::warn!(sinks = ?left, "events wait in the outbox; the next run delivers them");
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use palisade_outputs::sink::NatsSinkOptions;

    use super::*;
    use crate::store::OutboxEntry;

    fn nats() -> SinkSpec {
        SinkSpec::Nats(NatsSinkOptions {
            stream: "PALISADE".into(),
            ..NatsSinkOptions::default()
        })
    }

    fn webhook() -> SinkSpec {
        SinkSpec::Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            timeout: Duration::from_secs(1),
            max_retries: 0,
        }
    }

    #[test]
    fn the_sinks_are_the_configured_ones_plus_events_else_stdout() {
        let events = PathBuf::from("/tmp/e.jsonl");
        let file = SinkSpec::Jsonl {
            path: Some(events.clone()),
        };
        assert_eq!(sink_specs(&[], None), [SinkSpec::Jsonl { path: None }]);
        assert_eq!(sink_specs(&[], Some(&events)), std::slice::from_ref(&file));
        assert_eq!(
            sink_specs(&[nats(), webhook()], Some(&events)),
            [nats(), webhook(), file]
        );
        assert_eq!(sink_specs(&[webhook()], None), [webhook()]);
    }

    #[test]
    fn sinks_have_stable_names_and_only_nats_takes_scans() {
        let file = SinkSpec::Jsonl {
            path: Some("/var/log/p.jsonl".into()),
        };
        let stdout = SinkSpec::Jsonl { path: None };
        assert_eq!(sink_name(&file), "jsonl:/var/log/p.jsonl");
        assert_eq!(sink_name(&stdout), "jsonl:-");
        assert_eq!(sink_name(&nats()), "nats:PALISADE");
        assert_eq!(sink_name(&webhook()), "webhook:http://127.0.0.1:9/hook");
        for spec in [file, stdout, webhook()] {
            assert!(sink_takes(&spec, "unexpected_port_open"));
            assert!(!sink_takes(&spec, "scan"));
        }
        assert!(sink_takes(&nats(), "scan"));
        assert!(sink_takes(&nats(), "port_resolved"));
    }

    #[test]
    fn backoff_doubles_from_250_ms_up_to_30_s() {
        let mut waits = vec![];
        let mut wait = Duration::ZERO;
        for _ in 0..10 {
            wait = backoff(wait);
            waits.push(wait.as_millis());
        }
        assert_eq!(
            waits,
            [
                250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
        );
    }

    #[test]
    fn a_file_sink_gets_events_but_skips_scans_and_drops_bad_rows() {
        let dir = std::env::temp_dir().join(format!("palisade-delivery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let spec = SinkSpec::Jsonl {
            path: Some(path.clone()),
        };
        let mut store = Store::in_memory().unwrap();
        let event = |id: &str, kind: &str| {
            let data = palisade_outputs::schema::EventData::MonitorResolved(
                palisade_outputs::schema::MonitorEvent {
                    monitor: "web".into(),
                    host: "h".into(),
                    message: "m".into(),
                },
            );
            let e = Envelope::new(id.into(), "s".into(), "t".into(), data);
            OutboxEntry {
                id: id.into(),
                kind: kind.into(),
                payload: serde_json::to_string(&e).unwrap(),
            }
        };
        let bad = OutboxEntry {
            id: "bad".into(),
            kind: "monitor_resolved".into(),
            payload: "not json".into(),
        };
        store
            .enqueue(
                "web",
                &[
                    event("a", "monitor_resolved"),
                    event("s", "scan"),
                    bad,
                    event("b", "monitor_resolved"),
                ],
                1,
            )
            .unwrap();
        let mut delivery = OutboxDelivery::new(vec![spec.clone()]).unwrap();
        assert!(
            delivery
                .drain_for(&mut store, Duration::from_secs(5))
                .unwrap()
        );
        assert!(store.pending(&sink_name(&spec), 10).unwrap().is_empty());
        let ids: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Envelope>(l).unwrap().id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        // Another sink still has everything to deliver.
        assert_eq!(store.pending("other", 10).unwrap().len(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
