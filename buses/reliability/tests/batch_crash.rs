//! Durable batches under crashes, with real processes: a coordinator process
//! (`batch-crash-coordinator`) submits one durable batch to three worker processes
//! (`durable-crash-worker`); one worker is SIGKILLed mid-batch and restarted, then the
//! coordinator itself is SIGKILLed and a new one re-attaches to the batch by its ID. The new
//! coordinator must gather every result, each exactly once, with the right index.
//!
//! `PSRPC_BATCH_CRASH_TASKS` sets the batch size (1,000 by default, for CI; RELIABILITY.md has
//! the 5,000-task run). Prints a one-line JSON summary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use psrpc_testkit::{NatsOptions, NatsServer, RedisOptions, RedisServer};
use tokio::time::Instant;

/// Far above a run's time: only a hang trips it.
const LIMIT: Duration = Duration::from_secs(240);

/// Child processes, killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn worker(url: &str, ledger: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_durable-crash-worker"))
        .arg(url)
        .arg(ledger)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker")
}

fn coordinator(url: &str, batch_id: &str, tasks: usize, output: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_batch-crash-coordinator"))
        .arg(url)
        .arg(batch_id)
        .arg(tasks.to_string())
        .arg(output)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coordinator")
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// Waits (polling the file the coordinator writes) until it holds `n` results.
async fn until_results(path: &Path, n: usize, started: Instant) {
    while lines(path) < n {
        assert!(started.elapsed() < LIMIT, "no {n} results within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn crash_run(url: String, name: &str) {
    let tasks: usize = std::env::var("PSRPC_BATCH_CRASH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    let first_out: PathBuf = dir.path().join("first");
    let second_out: PathBuf = dir.path().join("second");
    let batch_id = format!("crash-{}", fastrand::u32(..));
    let started = Instant::now();

    let mut workers = Procs((0..3).map(|_| worker(&url, &ledger)).collect());
    let mut coord = Procs(vec![coordinator(&url, &batch_id, tasks, &first_out)]);

    // A quarter in: a worker dies mid-batch and comes back.
    until_results(&first_out, tasks / 4, started).await;
    let _ = workers.0[1].kill();
    let _ = workers.0[1].wait();
    workers.0[1] = worker(&url, &ledger);
    // Half in: the coordinator dies; a new one re-attaches by the batch ID.
    until_results(&first_out, tasks / 2, started).await;
    let _ = coord.0[0].kill();
    let _ = coord.0[0].wait();
    let first_results = lines(&first_out);
    let second = coordinator(&url, &batch_id, tasks, &second_out);
    coord.0[0] = second;
    let child = coord.0.pop().expect("coordinator");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("coordinator output");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("re-attached") && stdout.contains("complete"),
        "second coordinator: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    // The re-attached coordinator has every result, each once, with the right index.
    let text = std::fs::read_to_string(&second_out).expect("second output");
    let mut seen: HashMap<usize, u32> = HashMap::new();
    for line in text.lines() {
        let (index, value) = line.split_once(' ').expect("index and value");
        let index: usize = index.parse().expect("index");
        assert_eq!(value, format!("done {index}"), "result of task {index}");
        *seen.entry(index).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), tasks, "every task has a result");
    assert!(seen.values().all(|&n| n == 1), "a result came twice");
    assert!((0..tasks).all(|i| seen.contains_key(&i)));
    let ledger_text = std::fs::read_to_string(&ledger).unwrap_or_default();
    let mut runs: HashMap<&str, u32> = HashMap::new();
    // The worker's ledger also notes what the effect fence answered; count the runs only.
    for line in ledger_text.lines().filter(|l| l.starts_with("run ")) {
        *runs.entry(line).or_insert(0) += 1;
    }
    let twice = runs.values().filter(|&&n| n > 1).count();
    assert_eq!(runs.len(), tasks, "every task ran");
    println!(
        "{{\"test\":\"batch_crash\",\"broker\":\"{name}\",\"tasks\":{tasks},\"first_coordinator_results\":{first_results},\"second_coordinator_results\":{},\"side_effect_twice\":{twice},\"worker_kills\":1,\"coordinator_kills\":1,\"seconds\":{:.1}}}",
        seen.len(),
        elapsed.as_secs_f64()
    );
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_crash_jetstream() {
    let server = NatsServer::start_with(NatsOptions {
        jetstream: true,
        ..Default::default()
    })
    .expect("nats-server");
    crash_run(server.url(), "nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_crash_redis() {
    let server = RedisServer::start_with(RedisOptions {
        persistence: true,
        ..Default::default()
    })
    .expect("redis-server");
    crash_run(server.url(), "redis").await;
}
