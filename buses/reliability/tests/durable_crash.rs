//! Durable calls under crashes, with real processes: three worker processes
//! (`durable-crash-worker`), one SIGKILLed at random and restarted every ~2 s, and the broker
//! SIGKILLed and restarted once, while tasks are enqueued and processed.
//!
//! Every task must end with a stored result, or (the ones designed to fail) in the dead-letter
//! queue: none lost. Redeliveries are counted from the results' attempt counts. The side
//! effect is a ledger record on the broker written through the effect fence
//! (`TaskContext::record_effect`): the test asserts every successful task has it and none was
//! applied twice, and counts the reruns the fence stopped (a worker killed between its effect
//! and storing the result; the result check stops every other rerun).
//!
//! `PSRPC_CRASH_TASKS` sets the number of tasks (2,000 by default, for CI; RELIABILITY.md has
//! a 10,000-task run). Prints a one-line JSON summary.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use psrpc::durable::{Carrier, DeadLetters, DurableClient, EnqueueOptions, QueueConfig};
use psrpc_testkit::{NatsOptions, NatsServer, RedisOptions, RedisServer};
use tokio::time::Instant;

const QUEUE: &str = "Crash";

fn queue_config() -> QueueConfig {
    QueueConfig::default()
        .visibility_timeout(Duration::from_secs(2))
        .dedup_window(Duration::from_secs(300))
        .result_ttl(Duration::from_secs(3600))
}

/// Worker processes, killed on drop.
struct Workers {
    url: String,
    ledger: std::path::PathBuf,
    children: Vec<Child>,
}

impl Workers {
    fn spawn_one(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_durable-crash-worker"))
            .arg(&self.url)
            .arg(&self.ledger)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker")
    }

    fn kill_and_restart(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
        self.children[i] = self.spawn_one();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

enum Broker {
    Nats(NatsServer),
    Redis(RedisServer),
}

impl Broker {
    fn url(&self) -> String {
        match self {
            Broker::Nats(s) => s.url(),
            Broker::Redis(s) => s.url(),
        }
    }

    fn kill_and_restart(&mut self) {
        match self {
            Broker::Nats(s) => {
                s.kill();
                s.restart().expect("restart nats");
            }
            Broker::Redis(s) => {
                s.kill();
                s.restart().expect("restart redis");
            }
        }
    }

    async fn carrier(&self) -> Arc<dyn Carrier> {
        let url = self.url();
        match self {
            Broker::Nats(_) => Arc::new(
                psrpc_nats::durable::JetStreamCarrier::connect(&url)
                    .await
                    .expect("connect"),
            ),
            Broker::Redis(_) => Arc::new(
                psrpc_redis::durable::RedisStreamsCarrier::connect(&url)
                    .await
                    .expect("connect"),
            ),
        }
    }
}

fn is_failing(i: usize) -> bool {
    i % 50 == 7
}

async fn crash_run(mut broker: Broker, name: &str) {
    let tasks: usize = std::env::var("PSRPC_CRASH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let client = DurableClient::with_config(broker.carrier().await, QUEUE, &queue_config())
        .await
        .expect("open");
    let mut workers = Workers {
        url: broker.url(),
        ledger: ledger.clone(),
        children: Vec::new(),
    };
    for _ in 0..3 {
        let child = workers.spawn_one();
        workers.children.push(child);
    }
    let started = Instant::now();

    // Producers: 64 concurrent enqueuers; an idempotency key per task makes retrying an
    // enqueue that failed while the broker was down safe.
    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); tasks]));
            let mut handles = Vec::new();
            for _ in 0..64 {
                let (client, next, ids) = (client.clone(), next.clone(), ids.clone());
                handles.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= tasks {
                            return;
                        }
                        let req = if is_failing(i) {
                            format!("fail:{i}")
                        } else {
                            format!("ok:{i}")
                        };
                        let opts = EnqueueOptions::default()
                            .idempotency_key(format!("t{i}"))
                            .max_attempts(3)
                            .backoff(Duration::from_millis(20), Duration::from_millis(100));
                        let deadline = Instant::now() + Duration::from_secs(30);
                        let id = loop {
                            match client
                                .enqueue_raw(
                                    "Work",
                                    prost::Message::encode_to_vec(&req).into(),
                                    opts.clone(),
                                )
                                .await
                            {
                                Ok(id) => break id,
                                Err(e) if Instant::now() < deadline => {
                                    let _ = e;
                                    // Broker away: retry with the same key after a pause.
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                Err(e) => panic!("enqueue {i} kept failing: {e}"),
                            }
                        };
                        ids.lock().unwrap()[i] = id;
                    }
                }));
            }
            for h in handles {
                h.await.expect("producer");
            }
            Arc::try_unwrap(ids).expect("ids").into_inner().unwrap()
        })
    };

    // Chaos: a random worker SIGKILLed and restarted every ~2 s, the broker once.
    let mut kills = 0u32;
    let mut broker_killed = false;
    let mut ids: Option<Vec<String>> = None;
    let mut producer = Some(producer);
    let limit = Duration::from_secs(240);
    loop {
        tokio::time::sleep(Duration::from_millis(1500 + fastrand::u64(0..1000))).await;
        if let Some(p) = producer.as_ref()
            && p.is_finished()
        {
            ids = Some(
                producer
                    .take()
                    .expect("producer")
                    .await
                    .expect("producer task"),
            );
        }
        if !broker_killed && started.elapsed() > Duration::from_secs(3) {
            broker.kill_and_restart();
            broker_killed = true;
        } else {
            workers.kill_and_restart(fastrand::usize(0..3));
            kills += 1;
        }
        if let Some(ids) = &ids
            && broker_killed
        {
            let stats = client.carrier().stats(QUEUE).await;
            if let Ok(s) = stats
                && s.waiting == 0
                && s.in_flight == 0
            {
                let _ = ids;
                break;
            }
        }
        assert!(started.elapsed() < limit, "tasks not done within {limit:?}");
    }
    let ids = ids.expect("ids");
    let elapsed = started.elapsed();

    // Every task: a result, or for failing ones an error result and a dead letter.
    let mut lost = Vec::new();
    let mut redeliveries = 0u64;
    let mut failed = 0usize;
    for (i, id) in ids.iter().enumerate() {
        match client.result(id).await.expect("fetch result") {
            Some(r) => {
                if is_failing(i) {
                    assert!(
                        r.response.is_none() && r.dead_lettered,
                        "task {i} should have failed"
                    );
                    failed += 1;
                } else {
                    // Successful tasks fail never: every extra attempt is a redelivery.
                    redeliveries += u64::from(r.attempts.saturating_sub(1));
                    assert_eq!(
                        r.response
                            .as_deref()
                            .map(|b| prost::Message::decode(b).unwrap_or_default()),
                        Some(format!("done {i}"))
                    );
                }
            }
            None => lost.push(i),
        }
    }
    let dlq = DeadLetters::new(client.carrier().clone(), QUEUE);
    let mut letters = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = dlq.list(after.as_deref(), 500).await.expect("dead letters");
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (_, l) in page {
            *letters.entry(l.task_id).or_insert(0u32) += 1;
        }
    }
    // The file ledger: runs that reached the effect, and what the fence told each.
    let ledger_text = std::fs::read_to_string(&ledger).unwrap_or_default();
    let mut runs: HashMap<&str, u32> = HashMap::new();
    let mut applied: HashMap<&str, u32> = HashMap::new();
    let mut refused = 0usize;
    for line in ledger_text.lines() {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next()) {
            (Some("run"), Some(task)) => *runs.entry(task).or_insert(0) += 1,
            (Some("applied"), Some(task)) => *applied.entry(task).or_insert(0) += 1,
            (Some("refused"), Some(_)) => refused += 1,
            _ => panic!("ledger line {line:?}"),
        }
    }
    // Tasks that ran more than once up to their effect: each would have applied it twice
    // without the fence.
    let reran = runs.values().filter(|&&n| n > 1).count();
    let double_applied = applied.values().filter(|&&n| n > 1).count();
    // The broker-side ledger: every successful task has its effect record, exactly one
    // (records are keyed by task), and no logged `applied` names another attempt.
    let mut missing_effects = 0usize;
    for (i, id) in ids.iter().enumerate() {
        if is_failing(i) {
            continue;
        }
        match client.effect(id, "ledger").await.expect("read effect") {
            Some(_) => {}
            None => missing_effects += 1,
        }
    }
    let expected_fail = (0..tasks).filter(|&i| is_failing(i)).count();
    println!(
        "{{\"test\":\"durable_crash\",\"broker\":\"{name}\",\"tasks\":{tasks},\"lost\":{},\"dead_lettered\":{},\"dead_letter_entries\":{},\"redeliveries\":{redeliveries},\"reran_to_effect\":{reran},\"fence_refusals\":{refused},\"double_applied\":{double_applied},\"missing_effects\":{missing_effects},\"worker_kills\":{kills},\"broker_kills\":1,\"seconds\":{:.1}}}",
        lost.len(),
        failed,
        letters.values().sum::<u32>(),
        elapsed.as_secs_f64()
    );
    assert!(lost.is_empty(), "lost tasks: {lost:?}");
    assert_eq!(failed, expected_fail);
    assert_eq!(
        letters.len(),
        expected_fail,
        "each failing task dead-lettered"
    );
    // Every successful task ran at least once, and its effect was applied exactly once.
    assert_eq!(runs.len(), tasks - expected_fail);
    assert_eq!(double_applied, 0, "side effects applied twice");
    assert_eq!(missing_effects, 0, "tasks without their effect");
    // A rerun up to the effect needs a worker killed between its effect and its result: at
    // most the concurrency per kill (the broker kill included); each one met the fence.
    assert!(
        reran <= (kills as usize + 1) * 32,
        "{reran} tasks ran twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_crash_jetstream() {
    let server = NatsServer::start_with(NatsOptions {
        jetstream: true,
        ..Default::default()
    })
    .expect("nats-server");
    crash_run(Broker::Nats(server), "nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_crash_redis() {
    let server = RedisServer::start_with(RedisOptions {
        persistence: true,
        ..Default::default()
    })
    .expect("redis-server");
    crash_run(Broker::Redis(server), "redis").await;
}
