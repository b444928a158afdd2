//! Scan agents fed by a NATS JetStream work queue (issue 14,
//! `docs/CLUSTER.md`), against the current nats-server (2.15.1) running the
//! sample account configuration `docs/nats-cluster.conf` verbatim.
//!
//! * The permissions: an agent may pull and acknowledge jobs of its labels,
//!   read slice descriptions, publish results and its own heartbeat (with a
//!   per-message TTL), and nothing else; each refusal is the server's.
//! * End to end, as root: a coordinator (`palisade run` with `[cluster]`,
//!   in a namespace of its own) and three agents (`palisade agent`), each
//!   agent in a testbed of its own (its namespaces, veth and AF_XDP socket)
//!   with the simulated fleet of one spec, whose truth is the single host's
//!   (checked by one `palisade scan`). Every fleet host answers every probe,
//!   so a fleet's SYN counters are exactly the probes that reached it: who
//!   scanned what. The tests: an agent SIGKILLed mid-shard, then restarted;
//!   every agent killed; a label-pinned monitor; a NATS restart mid-sweep.
//!
//! Needs the simulator built beside the tests: `cargo build -p palisade-sim
//! && cargo test -p palisade --test cluster`. `PALISADE_TEST_CLUSTER_LOGS=1`
//! (with `--nocapture`) prints the coordinator's and agents' logs of a
//! passing test too; `PALISADE_TEST_NATS_TRACE=<file>` keeps a `-DV` trace
//! of nats-server.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, kv::Operation};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

mod common;
use common::cluster::{
    ClusterKnobs, ClusterNats, FRA1, ServerErrors, connect, set_up_as_coordinator, tail,
};

/// One message of `consumer` (a batch of 1), within 5 s.
async fn fetch_one(consumer: &PullConsumer) -> jetstream::Message {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    tokio::time::timeout(Duration::from_secs(5), batch.next())
        .await
        .expect("a message within 5 s")
        .expect("a message")
        .expect("a message, no error")
}

/// Publishes through JetStream with `headers`, waiting for the `PubAck`.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    headers: &[(&str, &str)],
    payload: &'static [u8],
) -> Result<u64, String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(*k, *v);
    }
    let ack = js
        .publish_with_headers(subject.to_string(), map, payload.into())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|a| a.sequence).map_err(|e| e.to_string())
}

/// The next change a KV watch sees, within 15 s.
async fn next_entry(
    watch: &mut async_nats::jetstream::kv::Watch,
) -> async_nats::jetstream::kv::Entry {
    tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("a change of the bucket within 15 s")
        .expect("the watch goes on")
        .expect("an entry")
}

/// Creates a push consumer on OBJ_PALISADE_SLICES delivering to `subject`.
async fn store_stream_consumer(js: &jetstream::Context, subject: &str) -> Result<(), String> {
    let stream = js
        .get_stream("OBJ_PALISADE_SLICES")
        .await
        .map_err(|e| e.to_string())?;
    stream
        .create_consumer(jetstream::consumer::push::Config {
            deliver_subject: subject.to_string(),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The subjects of the messages in stream `name` (its first 20), in order.
async fn stream_subjects(js: &jetstream::Context, name: &str) -> Vec<String> {
    let stream = js.get_stream(name).await.expect("stream");
    let mut out = Vec::new();
    for seq in 1..=20 {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(m.subject.to_string());
        }
    }
    out
}

/// Runs `op` (at most 5 s) and checks that it did not succeed and that the
/// server told the client of a permission violation naming `subject`
/// (within 5 s). Returns what the operation gave (an error or its timeout).
async fn refused<T: std::fmt::Debug>(
    errors: &ServerErrors,
    what: &str,
    subject: &str,
    op: impl Future<Output = Result<T, String>>,
) -> String {
    let outcome = match tokio::time::timeout(Duration::from_secs(5), op).await {
        Ok(Ok(v)) => panic!("{what}: allowed ({v:?})"),
        Ok(Err(e)) => e,
        Err(_) => "timed out".to_string(),
    };
    // The subject, or (no closing quote) a subject it begins.
    let needle = format!("\"{subject}");
    let start = Instant::now();
    while !errors
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.contains("Permissions Violation") && e.contains(&needle))
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: no permission violation for {subject} ({outcome}); the client heard: {:?}",
            errors.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_may_pull_jobs_read_slices_and_publish_results_and_nothing_more() {
    // The subjects below are the cluster's.
    assert_eq!(
        (
            palisade_core::cluster::JOBS_SUBJECT,
            palisade_core::cluster::RESULTS_SUBJECT
        ),
        ("palisade-cluster.jobs", "palisade-cluster.results")
    );
    let nats = ClusterNats::start();
    // The coordinator creates everything and publishes work.
    let knobs = ClusterKnobs {
        ack_wait: "5s",
        max_deliver: 3,
        labels: vec![FRA1.to_string()],
        ..ClusterKnobs::default()
    };
    tokio::task::block_in_place(|| set_up_as_coordinator(&nats, &knobs));
    let (coordinator, coordinator_errors) = connect(&nats, "coordinator").await;
    let cjs = jetstream::new(coordinator.clone());
    for (subject, id, payload) in [
        (
            "palisade-cluster.jobs.any.1.0",
            "job.1.0.0",
            &b"job 1.0.0"[..],
        ),
        (
            "palisade-cluster.jobs.site=fra1.1.2",
            "job.1.2.0",
            b"job 1.2.0",
        ),
    ] {
        publish(&cjs, subject, &[("Nats-Msg-Id", id)], payload)
            .await
            .unwrap_or_else(|e| panic!("the coordinator publishes {subject}: {e}"));
    }
    // A slice description of many chunks (128 KiB each), so that reading it
    // takes the object store's whole path (flow control included).
    let description: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let slices = cjs
        .get_object_store("PALISADE_SLICES")
        .await
        .expect("the object store");
    slices
        .put("1.0", &mut description.as_slice())
        .await
        .expect("the coordinator puts a slice description");

    // agent-a (label any): everything it needs is allowed.
    let (agent, errors) = connect(&nats, "agent-a").await;
    let js = jetstream::new(agent.clone());
    let jobs = js
        .get_stream("PALISADE_JOBS")
        .await
        .expect("STREAM.INFO of PALISADE_JOBS");
    let any: PullConsumer = jobs
        .get_consumer("jobs-any")
        .await
        .expect("CONSUMER.INFO of jobs-any");
    let job = fetch_one(&any).await;
    assert_eq!(job.subject.as_str(), "palisade-cluster.jobs.any.1.0");
    assert_eq!(job.info().unwrap().delivered, 1);
    job.ack_with(AckKind::Progress).await.expect("+WPI");
    job.ack_with(AckKind::Nak(None)).await.expect("+NAK");
    // Redelivered at once, to be acknowledged for good (the server confirms).
    let job = fetch_one(&any).await;
    assert_eq!(job.subject.as_str(), "palisade-cluster.jobs.any.1.0");
    assert_eq!(job.info().unwrap().delivered, 2, "the attempt after a nak");
    job.double_ack().await.expect("double_ack (+ACK confirmed)");
    // A job refused for good.
    publish(
        &cjs,
        "palisade-cluster.jobs.any.1.1",
        &[("Nats-Msg-Id", "job.1.1.0")],
        b"job 1.1.0",
    )
    .await
    .unwrap();
    let job = fetch_one(&any).await;
    assert_eq!(job.subject.as_str(), "palisade-cluster.jobs.any.1.1");
    job.double_ack_with(AckKind::Term).await.expect("+TERM");
    // The slice description.
    let store = js
        .get_object_store("PALISADE_SLICES")
        .await
        .expect("STREAM.INFO of OBJ_PALISADE_SLICES");
    let mut object = store.get("1.0").await.expect("the object's info");
    let mut read = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), object.read_to_end(&mut read))
        .await
        .expect("the object read within 10 s")
        .expect("the object's chunks");
    assert!(read == description, "the slice description read back whole");
    // A result, and its retry (the same Nats-Msg-Id) stored once.
    for _ in 0..2 {
        publish(
            &js,
            "palisade-cluster.results.1.0",
            &[("Nats-Msg-Id", "result.1.0.0.2")],
            b"result 1.0.0",
        )
        .await
        .expect("a result is published");
    }
    assert_eq!(
        stream_subjects(&cjs, "PALISADE_RESULTS").await,
        ["palisade-cluster.results.1.0"]
    );
    // Its heartbeat, with a per-message TTL: the coordinator watching the
    // bucket sees it, then sees it go by itself (a delete marker).
    let agents = cjs
        .get_key_value("PALISADE_AGENTS")
        .await
        .expect("the bucket");
    let mut watch = agents.watch_all().await.expect("a watch of the bucket");
    publish(
        &js,
        "$KV.PALISADE_AGENTS.agent-a",
        &[("Nats-TTL", "2s")],
        b"{\"name\":\"agent-a\"}",
    )
    .await
    .expect("its heartbeat is put");
    let put = next_entry(&mut watch).await;
    assert_eq!(
        (put.key.as_str(), put.operation),
        ("agent-a", Operation::Put)
    );
    let gone = next_entry(&mut watch).await;
    assert_eq!(gone.key, "agent-a");
    assert!(
        matches!(gone.operation, Operation::Delete | Operation::Purge),
        "the heartbeat aged out: {gone:?}"
    );
    assert!(agents.get("agent-a").await.expect("KV get").is_none());
    // The coordinator takes the result.
    let results: PullConsumer = cjs
        .get_consumer_from_stream("coordinator", "PALISADE_RESULTS")
        .await
        .expect("the coordinator's consumer");
    let result = fetch_one(&results).await;
    assert_eq!(result.payload.as_ref(), b"result 1.0.0");
    result
        .double_ack()
        .await
        .expect("the coordinator acks a result");
    assert!(
        errors.lock().unwrap().is_empty(),
        "what an agent needs raised errors: {:?}\n{}",
        errors.lock().unwrap(),
        nats.violations().join("\n")
    );

    // agent-c (site=fra1) takes the job of its label.
    let (agent_c, errors_c) = connect(&nats, "agent-c").await;
    let js_c = jetstream::new(agent_c.clone());
    let fra1: PullConsumer = js_c
        .get_consumer_from_stream(format!("jobs-{FRA1}"), "PALISADE_JOBS")
        .await
        .expect("CONSUMER.INFO of jobs-site=fra1");
    let job = fetch_one(&fra1).await;
    assert_eq!(job.subject.as_str(), "palisade-cluster.jobs.site=fra1.1.2");
    job.double_ack().await.expect("double_ack");
    assert!(
        errors_c.lock().unwrap().is_empty(),
        "{:?}",
        errors_c.lock().unwrap()
    );

    // What an agent may not do, each refused by the server.
    publish(
        &cjs,
        "palisade-cluster.jobs.any.2.0",
        &[("Nats-Msg-Id", "job.2.0.0")],
        b"job 2.0.0",
    )
    .await
    .unwrap();
    // At once: each waits for its refusal.
    let outcomes = tokio::join!(
        refused(
            &errors,
            "publish a job",
            "palisade-cluster.jobs.any.1.0",
            publish(&js, "palisade-cluster.jobs.any.1.0", &[], b"forged job"),
        ),
        refused(
            &errors,
            "purge the jobs",
            "$JS.API.STREAM.PURGE.PALISADE_JOBS",
            async { jobs.purge().await.map_err(|e| e.to_string()) },
        ),
        refused(
            &errors,
            "put another agent's heartbeat",
            "$KV.PALISADE_AGENTS.other",
            publish(&js, "$KV.PALISADE_AGENTS.other", &[], b"{}"),
        ),
        refused(
            &errors,
            "read the results stream",
            "$JS.API.STREAM.INFO.PALISADE_RESULTS",
            async {
                js.get_stream("PALISADE_RESULTS")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        ),
        refused(
            &errors,
            "pull results",
            "$JS.API.CONSUMER.MSG.NEXT.PALISADE_RESULTS.coordinator",
            async {
                agent
                    .request(
                        "$JS.API.CONSUMER.MSG.NEXT.PALISADE_RESULTS.coordinator",
                        "{\"batch\":1,\"expires\":1000000000}".into(),
                    )
                    .await
                    .map(|m| m.payload)
                    .map_err(|e| e.to_string())
            },
        ),
        refused(
            &errors,
            "subscribe to results",
            "palisade-cluster.results.>",
            async {
                let mut sub = agent
                    .subscribe("palisade-cluster.results.>")
                    .await
                    .map_err(|e| e.to_string())?;
                publish(&js, "palisade-cluster.results.9.9", &[], b"probe").await?;
                match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
                    Ok(Some(m)) => Ok(m.payload),
                    _ => Err("nothing received".to_string()),
                }
            },
        ),
        refused(
            &errors,
            "pull jobs of another label",
            "$JS.API.CONSUMER.MSG.NEXT.PALISADE_JOBS.jobs-site=fra1",
            async {
                agent
                    .request(
                        "$JS.API.CONSUMER.MSG.NEXT.PALISADE_JOBS.jobs-site=fra1",
                        "{\"batch\":1,\"expires\":1000000000}".into(),
                    )
                    .await
                    .map(|m| m.payload)
                    .map_err(|e| e.to_string())
            },
        ),
        refused(&errors, "read other clients' replies", "_INBOX.>", async {
            let mut sub = agent
                .subscribe("_INBOX.>")
                .await
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
                Ok(Some(m)) => Ok(m.payload),
                _ => Err("nothing received".to_string()),
            }
        },),
        refused(
            &errors,
            "read another agent's heartbeat",
            "$JS.API.DIRECT.GET.KV_PALISADE_AGENTS.$KV.PALISADE_AGENTS.agent-b",
            async {
                agent
                    .request(
                        "$JS.API.DIRECT.GET.KV_PALISADE_AGENTS.$KV.PALISADE_AGENTS.agent-b",
                        "".into(),
                    )
                    .await
                    .map(|m| m.payload)
                    .map_err(|e| e.to_string())
            },
        ),
        refused(
            &errors,
            "delete the jobs stream",
            "$JS.API.STREAM.DELETE.PALISADE_JOBS",
            async {
                js.delete_stream("PALISADE_JOBS")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        ),
        refused(
            &errors,
            "create a consumer on the jobs",
            "$JS.API.CONSUMER.CREATE.PALISADE_JOBS",
            async {
                jobs.create_consumer(jetstream::consumer::pull::Config {
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            },
        ),
    );
    // A push consumer on the object store's stream (agents may create
    // consumers there: async-nats reads an object through an ordered one)
    // aimed at the jobs' subjects: it must not become a way to publish jobs.
    let injected = store_stream_consumer(&js, "palisade-cluster.jobs.any.66.0").await;
    eprintln!("push consumer toward the jobs: {injected:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Nothing changed: the one job not taken is left (the acknowledged and
    // the terminated ones are gone from the WorkQueue stream), the result
    // and the probe of the subscription above, no forged heartbeat.
    assert_eq!(
        stream_subjects(&cjs, "PALISADE_JOBS").await,
        ["palisade-cluster.jobs.any.2.0"]
    );
    assert_eq!(
        stream_subjects(&cjs, "PALISADE_RESULTS").await,
        ["palisade-cluster.results.9.9"]
    );
    assert!(agents.get("other").await.expect("KV get").is_none());
    assert!(
        coordinator_errors.lock().unwrap().is_empty(),
        "the coordinator was refused: {:?}",
        coordinator_errors.lock().unwrap()
    );
    eprintln!(
        "refusals as the client saw them: {outcomes:?}\nthe server's log:\n{}",
        tail(&nats.violations().join("\n"), 30)
    );
}

// ---------------------------------------------------------------------------
// End to end: a coordinator (`palisade run` with `[cluster]`) and three
// agents (`palisade agent`), each agent in a testbed of its own (its own
// namespaces, veth and AF_XDP socket) with the simulated fleet of one spec.

use std::collections::BTreeMap;

use common::cluster::{
    Cluster, MonitorDef, answering_fleet, duplicate_ids, jobs_in_progress, monitor,
    opened_by_events, serial, syns,
};

/// Checks what a sweep gave against the fleet's truth: the store's open
/// ports (conclusive full scans) and the events' (`unexpected_port_open`,
/// one per open port and monitor: confirmed at once) are the truth; no
/// event id came twice; and nats-server refused nothing the coordinator
/// and the agents did (`docs/nats-cluster.conf` allows what they need).
fn assert_exact(cluster: &Cluster) {
    assert_eq!(
        cluster.nats.violations(),
        Vec::<String>::new(),
        "permission violations"
    );
    let truth = cluster.truth();
    assert!(!truth.is_empty(), "the fleet has open ports");
    // The sink writes a slice's events after its commit, on a thread of its
    // own: the last slice's may come a moment after its scans are stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = cluster.coordinator.events();
    while opened_by_events(&events) != truth && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        events = cluster.coordinator.events();
    }
    assert_eq!(
        duplicate_ids(&events),
        Vec::<(String, usize)>::new(),
        "an event came twice"
    );
    assert_eq!(
        cluster.coordinator.open_ports(),
        truth,
        "the store's open ports are the fleet's truth\n{}",
        cluster.context()
    );
    assert_eq!(
        opened_by_events(&events),
        truth,
        "one event per open port\n{}",
        cluster.context()
    );
}

/// Per `sweep through the agents` line of the coordinator's log, the
/// results it did not merge (a job's later attempt, or no job under way).
fn results_not_merged(log: &str) -> u64 {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    log.lines()
        .filter(|l| l.contains("sweep through the agents"))
        .map(|l| field(l, "duplicates=") + field(l, "foreign="))
        .sum()
}

/// SYNs the fleet of each agent counted for `addresses`, by agent.
fn syns_for(
    counters: &BTreeMap<String, serde_json::Value>,
    addresses: &[MonitorDef],
) -> BTreeMap<String, u64> {
    counters
        .iter()
        .map(|(agent, c)| {
            let per = syns(c);
            (
                agent.clone(),
                addresses
                    .iter()
                    .map(|m| per.get(&m.host).copied().unwrap_or(0))
                    .sum(),
            )
        })
        .collect()
}

/// Stops every agent's fleet: its counters, by agent.
fn stop_fleets(cluster: &mut Cluster) -> BTreeMap<String, serde_json::Value> {
    cluster
        .agents
        .iter_mut()
        .filter_map(|a| a.stop_fleet().map(|c| (a.name.clone(), c)))
        .collect()
}

#[test]
fn a_sweep_survives_an_agent_killed_mid_shard_and_a_restarted_agent_takes_jobs() {
    let _serial = serial();
    // 20 monitors x 200 ports = 4000 probes; shards of 1000 (1 s at 1000/s).
    let monitors: Vec<MonitorDef> = (0..20).map(|i| monitor(i, None)).collect();
    let mut cluster = Cluster::new(
        "kill",
        answering_fleet(),
        monitors,
        200,
        ClusterKnobs {
            agent_rate: 1000,
            shard_time: "1s",
            ack_wait: "3s",
            max_deliver: 3,
            ..ClusterKnobs::default()
        },
        "15s",
        "2s",
    );
    let probes = 20 * 200;
    // agent-a alone first, slower (a shard of 1000 probes takes it 4 s):
    // the first job is surely its own.
    cluster.agent("agent-a").rate = 250;
    cluster.agent("agent-a").start();
    cluster.wait_live(&["agent-a"]);
    cluster.coordinator.start();
    let start = Instant::now();
    while jobs_in_progress(&cluster.nats, "any") == 0 {
        cluster.coordinator.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "agent-a took no job within 30 s\n{}",
            cluster.context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in ["agent-b", "agent-c"] {
        cluster.agent(name).rate = 1000;
        cluster.agent(name).start();
    }
    // Well into its shard (its set-up done), well before its end: SIGKILL.
    std::thread::sleep(Duration::from_millis(1500));
    cluster.agent("agent-a").kill();
    let killed_fleet = cluster.agent("agent-a").stop_fleet().unwrap();

    // The sweep completes, exactly: agent-a's job went to another agent
    // after AckWait.
    cluster.wait_conclusive(1, Duration::from_secs(90));
    assert_exact(&cluster);
    let scans = cluster.coordinator.scans();
    assert!(
        scans.values().all(|&s| s == (1, 0)),
        "one conclusive scan per monitor: {scans:?}"
    );
    let killed: u64 = syns(&killed_fleet).values().sum();
    assert!(
        killed > 0 && killed < 1000,
        "agent-a was killed mid-shard: it sent {killed} of its shard's probes (at most 1000)"
    );

    // agent-b and agent-c stop (SIGTERM: exit 0), agent-a comes back alone:
    // the next sweep is all its own.
    for name in ["agent-b", "agent-c"] {
        let status = cluster.agent(name).terminate();
        assert!(
            status.success(),
            "{name} after SIGTERM: {status}\n{}",
            cluster.context()
        );
    }
    let first = stop_fleets(&mut cluster);
    let sent: u64 = first.values().map(|c| syns(c).values().sum::<u64>()).sum();
    assert!(
        sent + killed > probes,
        "agent-a's shard was redone: {sent} SYNs after the kill, {killed} before, {probes} probes a sweep"
    );
    {
        let a = cluster.agent("agent-a");
        a.restart_fleet();
        a.rate = 1000;
        a.start();
    }
    cluster.wait_conclusive(2, Duration::from_secs(90));
    let second = cluster.agent("agent-a").stop_fleet().unwrap();
    let per = syns(&second);
    for m in &cluster.monitors {
        assert!(
            per.get(&m.host).copied().unwrap_or(0) >= u64::from(cluster.ports),
            "the restarted agent-a probed {}: {per:?}",
            m.host
        );
    }
    assert_exact(&cluster);
    assert_eq!(
        cluster.coordinator.terminate().map(|s| s.success()),
        Some(true)
    );
}

#[test]
fn with_every_agent_killed_the_sweep_fails_and_no_port_counts_as_closed() {
    let _serial = serial();
    let monitors: Vec<MonitorDef> = (0..10).map(|i| monitor(i, None)).collect();
    let mut cluster = Cluster::new(
        "all-killed",
        answering_fleet(),
        monitors,
        200,
        ClusterKnobs {
            agent_rate: 1000,
            shard_time: "1s",
            ack_wait: "1s",
            max_deliver: 2,
            ..ClusterKnobs::default()
        },
        "8s",
        "2s",
    );
    cluster.start_agents(1000);
    cluster.coordinator.start();
    cluster.wait_conclusive(1, Duration::from_secs(60));
    assert_exact(&cluster);
    let opened = cluster.coordinator.events().len();
    for a in &mut cluster.agents {
        a.kill();
    }
    // The next sweep's jobs find no agent: past the slice's deadline the
    // coordinator fails them.
    let failed = cluster.wait_event("scan_failed", Duration::from_secs(90));
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("shard"),
        "scan_failed names the shard: {failed}"
    );
    let notes = cluster.coordinator.inconclusive_notes();
    assert!(
        !notes.is_empty() && notes.values().flatten().all(|n| n.contains("shard")),
        "the scans of the failed slice are inconclusive, naming the shard: {notes:?}"
    );
    // Nothing closed: the open ports are still open (no port_resolved, no
    // expected_port_down), and the conclusive scans are the first sweep's.
    let events = cluster.coordinator.events();
    let later: Vec<&serde_json::Value> = events[opened..]
        .iter()
        .filter(|e| {
            !matches!(
                e["kind"].as_str(),
                Some("scan" | "scan_failed" | "monitor_stale")
            )
        })
        .collect();
    assert!(later.is_empty(), "events after the agents died: {later:?}");
    assert!(
        cluster.coordinator.scans().values().all(|&(c, _)| c == 1),
        "{:?}",
        cluster.coordinator.scans()
    );
    assert_exact(&cluster);
}

#[test]
fn a_label_pinned_monitor_is_scanned_only_by_an_agent_with_the_label() {
    let _serial = serial();
    // m-000 to m-003 pinned to site=fra1 (agent-c), the rest any.
    let monitors: Vec<MonitorDef> = (0..12)
        .map(|i| monitor(i, (i < 4).then_some(common::cluster::FRA1)))
        .collect();
    let pinned: Vec<MonitorDef> = monitors[..4].to_vec();
    let mut cluster = Cluster::new(
        "label",
        answering_fleet(),
        monitors,
        200,
        ClusterKnobs {
            agent_rate: 1000,
            ..ClusterKnobs::default()
        },
        "1h",
        "2s",
    );
    cluster.start_agents(1000);
    cluster.coordinator.start();
    cluster.wait_conclusive(1, Duration::from_secs(60));
    assert_exact(&cluster);
    let counters = stop_fleets(&mut cluster);
    let by_agent = syns_for(&counters, &pinned);
    assert_eq!(
        by_agent["agent-a"], 0,
        "agent-a probed a pinned monitor: {by_agent:?}"
    );
    assert_eq!(
        by_agent["agent-b"], 0,
        "agent-b probed a pinned monitor: {by_agent:?}"
    );
    let per_c = syns(&counters["agent-c"]);
    for m in &pinned {
        assert!(
            per_c.get(&m.host).copied().unwrap_or(0) >= u64::from(cluster.ports),
            "agent-c scanned all of {}: {per_c:?}",
            m.host
        );
    }
}

/// 40 monitors x 200 ports, three agents at 1000/s, jobs of 1 s (slices of
/// 3000 probes, 3 shards each), `max_deliver` deliveries: the coordinator
/// started, its sweep under way.
fn forty_monitors_under_way(name: &str, max_deliver: u32) -> Cluster {
    let monitors: Vec<MonitorDef> = (0..40).map(|i| monitor(i, None)).collect();
    let mut cluster = Cluster::new(
        name,
        answering_fleet(),
        monitors,
        200,
        ClusterKnobs {
            agent_rate: 1000,
            shard_time: "1s",
            ack_wait: "3s",
            max_deliver,
            ..ClusterKnobs::default()
        },
        "1h",
        "1s",
    );
    cluster.start_agents(1000);
    cluster.coordinator.start();
    cluster
}

#[test]
fn a_nats_restart_mid_sweep_loses_and_doubles_nothing() {
    let _serial = serial();
    // 40 monitors x 200 ports: slices of 3000 probes (1000/s x 3 agents x
    // 1 s), each 3 shards.
    let mut cluster = forty_monitors_under_way("nats-restart", 5);
    // The first slice stored: the server goes down for 2 s, comes back
    // with its store.
    cluster.wait_first_slice();
    let before = cluster.coordinator.scans().len();
    cluster.nats.stop();
    std::thread::sleep(Duration::from_secs(2));
    cluster.nats.restart();
    cluster.wait_conclusive(1, Duration::from_secs(120));
    let scans = cluster.coordinator.scans();
    assert!(
        before < scans.len(),
        "the restart came before the sweep's end ({before} stored then)"
    );
    assert!(
        scans.values().all(|&s| s == (1, 0)),
        "one conclusive scan per monitor, nothing redone or failed: {scans:?}\n{}",
        cluster.context()
    );
    assert_exact(&cluster);
    for a in &mut cluster.agents {
        assert!(a.running(), "{} survived the restart: {}", a.name, a.log());
    }
}

/// The truth the cluster tests compare with is the single host's: one
/// `palisade scan` of the fleet (in an agent's testbed) finds exactly it, and
/// the fleet counts exactly one SYN per probe (every host answers every
/// probe, so no retries).
#[test]
fn the_truth_is_what_a_single_host_scan_finds() {
    let _serial = serial();
    let monitors: Vec<MonitorDef> = (0..20).map(|i| monitor(i, None)).collect();
    let mut cluster = Cluster::new(
        "single-host",
        answering_fleet(),
        monitors,
        200,
        ClusterKnobs::default(),
        "1h",
        "2s",
    );
    let truth = cluster.truth();
    let agent = cluster.agent("agent-b");
    let mut scan = agent.tb.in_scanner(common::BIN);
    scan.args([
        "scan",
        "198.18.0.10-198.18.0.29",
        "-p",
        "1-200",
        "--rate",
        "20000",
        "--format",
        "text",
    ]);
    let o = palisade_sim::testbed::bounded(scan, Duration::from_secs(60));
    assert!(o.status.success(), "{}", palisade_sim::testbed::stderr(&o));
    let mut found: BTreeMap<std::net::IpAddr, Vec<u16>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("open"))
    {
        let addr: std::net::SocketAddr = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        found.entry(addr.ip()).or_default().push(addr.port());
    }
    for ports in found.values_mut() {
        ports.sort_unstable();
    }
    assert_eq!(found, truth);
    let counters = stop_fleets(&mut cluster);
    let by_agent = syns_for(&counters, &cluster.monitors);
    assert_eq!(
        by_agent,
        BTreeMap::from([
            ("agent-a".to_string(), 0),
            ("agent-b".to_string(), 20 * 200),
            ("agent-c".to_string(), 0)
        ])
    );
}

#[test]
fn a_slow_agents_late_result_is_merged_once() {
    let _serial = serial();
    let monitors: Vec<MonitorDef> = (0..20).map(|i| monitor(i, None)).collect();
    let mut cluster = Cluster::new(
        "slow",
        answering_fleet(),
        monitors,
        200,
        ClusterKnobs {
            agent_rate: 1000,
            shard_time: "1s",
            ack_wait: "3s",
            max_deliver: 3,
            ..ClusterKnobs::default()
        },
        "12s",
        "2s",
    );
    // agent-a takes the first job alone, then freezes (SIGSTOP) past
    // AckWait: its job goes to another agent, the sweep completes.
    cluster.agent("agent-a").rate = 500;
    cluster.agent("agent-a").start();
    cluster.wait_live(&["agent-a"]);
    cluster.coordinator.start();
    let start = Instant::now();
    while jobs_in_progress(&cluster.nats, "any") == 0 {
        cluster.coordinator.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "agent-a took no job within 30 s\n{}",
            cluster.context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in ["agent-b", "agent-c"] {
        cluster.agent(name).rate = 1000;
        cluster.agent(name).start();
    }
    std::thread::sleep(Duration::from_millis(500));
    cluster.agent("agent-a").signal("STOP");
    cluster.wait_conclusive(1, Duration::from_secs(60));
    // Thawed, it finishes its shard and publishes the result of its first
    // attempt: a second result of a job already merged.
    cluster.agent("agent-a").signal("CONT");
    let start = Instant::now();
    while !cluster.agent("agent-a").log().contains("shard scanned") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "agent-a did not finish its shard after SIGCONT\n{}",
            cluster.context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The next sweep takes whatever result is left over.
    cluster.wait_conclusive(2, Duration::from_secs(60));
    assert!(
        results_not_merged(&cluster.coordinator.logs()) >= 1,
        "the late result was received and not merged\n{}",
        cluster.context()
    );
    let scans = cluster.coordinator.scans();
    assert!(
        scans.values().all(|&s| s == (2, 0)),
        "two conclusive scans per monitor: {scans:?}"
    );
    assert_exact(&cluster);
}

#[test]
fn a_coordinator_killed_mid_sweep_resumes_from_the_store() {
    let _serial = serial();
    // 40 monitors x 200 ports, slices of a few monitors: killed after the
    // first is stored, restarted at once.
    let mut cluster = forty_monitors_under_way("coordinator-kill", 3);
    cluster.wait_first_slice();
    cluster.coordinator.kill();
    let before = cluster.coordinator.scans().len();
    cluster.coordinator.start();
    cluster.wait_conclusive(1, Duration::from_secs(120));
    let scans = cluster.coordinator.scans();
    assert!(before < scans.len(), "killed before the sweep's end");
    assert!(
        scans.values().all(|&s| s == (1, 0)),
        "one conclusive scan per monitor: the slices stored are not redone, the one under way is: {scans:?}\n{}",
        cluster.context()
    );
    // A sink may get an event again after a kill -9 (delivered, not yet
    // marked): the same id. The events themselves are one per open port.
    let mut events = cluster.coordinator.events();
    let mut seen = std::collections::BTreeSet::new();
    events.retain(|e| seen.insert(e["id"].as_str().unwrap_or_default().to_string()));
    assert_eq!(
        opened_by_events(&events),
        cluster.truth(),
        "one event per open port"
    );
    assert_eq!(cluster.coordinator.open_ports(), cluster.truth());
}
