//! Scatter/gather batches against the same calls issued one by one, in one run.
//!
//! ```text
//! cargo run --release -p psrpc-benches --bin batch -- [--quick]
//! ```
//!
//! Per bus (in-process, and NATS and Redis started through `psrpc-testkit`) and per fleet size
//! (1 and 4 workers), N tasks of a trivial handler (`n → n²`), at most 64 in flight:
//!
//! - queue: `Batch::queue` gathered with `try_collect`, against the baseline of the same N
//!   `Client::request` calls, 64 at a time;
//! - durable (in-process carrier, JetStream, Redis Streams): `Batch::durable`, against the
//!   same N `DurableClient::call`s (enqueue, then await the result), 64 at a time.
//!
//! Prints one JSON line per measurement with tasks per second and the batch ÷ one-by-one
//! ratio. See `BENCHMARKS.md`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use psrpc::batch::{Batch, BatchOptions};
use psrpc::bus::LocalBus;
use psrpc::durable::{
    Carrier, DurableClient, EnqueueOptions, LocalCarrier, QueueConfig, Worker, WorkerOptions,
};
use psrpc::{CallOptions, Client, IntoBus, MethodInfo, Server};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SVC: &str = "BatchBench";
const SQUARE: MethodInfo = MethodInfo::unary("Square");
const IN_FLIGHT: usize = 64;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Which bus a fleet talks over; each server and client gets its own connection.
#[derive(Clone)]
enum Net {
    Local(LocalBus),
    Nats(String),
    Redis(String),
}

impl Net {
    fn name(&self) -> &'static str {
        match self {
            Net::Local(_) => "local",
            Net::Nats(_) => "nats",
            Net::Redis(_) => "redis",
        }
    }

    async fn server(&self) -> Result<Server, BoxError> {
        Ok(match self {
            Net::Local(b) => Server::new(SVC, b.clone()),
            Net::Nats(u) => Server::new(SVC, psrpc_nats::NatsBus::connect(u.as_str()).await?),
            Net::Redis(u) => Server::new(SVC, psrpc_redis::RedisBus::connect(u).await?),
        })
    }

    async fn client(&self) -> Result<Client, BoxError> {
        async fn make(bus: impl IntoBus) -> Result<Client, BoxError> {
            Ok(Client::new(SVC, bus).await?)
        }
        match self {
            Net::Local(b) => make(b.clone()).await,
            Net::Nats(u) => make(psrpc_nats::NatsBus::connect(u.as_str()).await?).await,
            Net::Redis(u) => make(psrpc_redis::RedisBus::connect(u).await?).await,
        }
    }

    /// A carrier for durable tasks: shared in-process, one connection per call otherwise.
    async fn carrier(&self, local: &Arc<LocalCarrier>) -> Result<Arc<dyn Carrier>, BoxError> {
        Ok(match self {
            Net::Local(_) => local.clone(),
            Net::Nats(u) => Arc::new(psrpc_nats::durable::JetStreamCarrier::connect(u).await?),
            Net::Redis(u) => Arc::new(psrpc_redis::durable::RedisStreamsCarrier::connect(u).await?),
        })
    }
}

/// Tasks per second of `tasks` tasks finished in `elapsed`.
fn rate(tasks: usize, elapsed: Duration) -> f64 {
    tasks as f64 / elapsed.as_secs_f64()
}

fn report(bus: &str, kind: &str, workers: usize, tasks: usize, one_by_one: f64, batch: f64) {
    println!(
        "{{\"bus\":\"{bus}\",\"kind\":\"{kind}\",\"workers\":{workers},\"tasks\":{tasks},\"in_flight\":{IN_FLIGHT},\"one_by_one_tasks_per_s\":{one_by_one:.0},\"batch_tasks_per_s\":{batch:.0},\"batch_vs_one_by_one\":{:.2}}}",
        batch / one_by_one
    );
}

/// Fails unless every result is `n²` in input order.
fn check(results: &[u64], tasks: usize) -> Result<(), BoxError> {
    let expected: Vec<u64> = (0..tasks as u64).map(|n| n * n).collect();
    if results != expected {
        return Err(format!("wrong results ({} of {tasks})", results.len()).into());
    }
    Ok(())
}

/// [`check`] for results gathered in completion order with their input index.
fn check_indexed(mut results: Vec<(usize, u64)>, tasks: usize) -> Result<(), BoxError> {
    results.sort_unstable();
    check(
        &results.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        tasks,
    )
}

async fn queue_once(client: &Client, tasks: usize) -> Result<(f64, f64), BoxError> {
    // Baseline: the same calls, the same concurrency, without a batch.
    let start = Instant::now();
    let results: Vec<(usize, u64)> = futures::stream::iter(0..tasks)
        .map(|i| async move {
            let n = i as u64;
            let mut opts = CallOptions::new();
            opts.timeout = Some(CALL_TIMEOUT);
            client
                .request::<u64, u64>(SQUARE, &[], &n, opts)
                .await
                .map(|r| (i, r))
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let one_by_one = rate(tasks, start.elapsed());
    check_indexed(results, tasks)?;

    let start = Instant::now();
    let options = BatchOptions::new()
        .max_in_flight(IN_FLIGHT)
        .call_timeout(CALL_TIMEOUT);
    let batch = Batch::<u64>::queue(client, &SQUARE, &[], 0..tasks as u64, options).await?;
    let results = batch.try_collect().await?;
    let batch = rate(tasks, start.elapsed());
    check(&results, tasks)?;
    Ok((one_by_one, batch))
}

async fn queue_side(net: &Net, workers: usize, tasks: usize) -> Result<(), BoxError> {
    let mut servers = Vec::new();
    for _ in 0..workers {
        let server = net.server().await?;
        server
            .register_unary(SQUARE, &[], |_ctx, n: u64| async move { Ok(n * n) })
            .await?;
        servers.push(server);
    }
    let client = net.client().await?;
    // Warm-up: connections, subscriptions, claim paths.
    queue_once(&client, IN_FLIGHT).await?;
    let (one_by_one, batch) = queue_once(&client, tasks).await?;
    report(net.name(), "queue", workers, tasks, one_by_one, batch);
    for s in servers {
        s.shutdown().await;
    }
    Ok(())
}

async fn durable_once(client: &DurableClient, tasks: usize) -> Result<(f64, f64), BoxError> {
    let start = Instant::now();
    let results: Vec<(usize, u64)> = futures::stream::iter(0..tasks)
        .map(|i| async move {
            client
                .call::<u64, u64>(
                    "Square",
                    &(i as u64),
                    EnqueueOptions::default(),
                    CALL_TIMEOUT,
                )
                .await
                .map(|r| (i, r))
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let one_by_one = rate(tasks, start.elapsed());
    check_indexed(results, tasks)?;

    let start = Instant::now();
    let options = BatchOptions::new().max_in_flight(IN_FLIGHT);
    let batch = Batch::<u64>::durable(client, "Square", 0..tasks as u64, options).await?;
    let results = batch.try_collect().await?;
    let batch = rate(tasks, start.elapsed());
    check(&results, tasks)?;
    Ok((one_by_one, batch))
}

async fn durable_side(
    net: &Net,
    local: &Arc<LocalCarrier>,
    workers: usize,
    tasks: usize,
) -> Result<(), BoxError> {
    // A queue per fleet size, so nothing of the previous run is left in it.
    let queue = format!("BatchBench{workers}");
    let config = QueueConfig::default().visibility_timeout(Duration::from_secs(30));
    let mut fleet = Vec::new();
    for _ in 0..workers {
        let worker = Worker::new(net.carrier(local).await?, queue.as_str())
            .options(
                WorkerOptions::default()
                    .concurrency(IN_FLIGHT)
                    .queue(config.clone())
                    .fetch_wait(Duration::from_millis(100)),
            )
            .handle("Square", |_ctx, n: u64| async move { Ok(n * n) })
            .start()
            .await?;
        fleet.push(worker);
    }
    let client = DurableClient::with_config(net.carrier(local).await?, &queue, &config).await?;
    durable_once(&client, IN_FLIGHT).await?;
    let (one_by_one, batch) = durable_once(&client, tasks).await?;
    report(net.name(), "durable", workers, tasks, one_by_one, batch);
    for w in fleet {
        w.shutdown().await;
    }
    Ok(())
}

async fn bus(net: Net, tasks: usize, durable_tasks: usize) -> Result<(), BoxError> {
    let local = Arc::new(LocalCarrier::new());
    for workers in [1, 4] {
        queue_side(&net, workers, tasks).await?;
        durable_side(&net, &local, workers, durable_tasks).await?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (tasks, durable_tasks) = if quick { (500, 200) } else { (5_000, 2_000) };

    bus(Net::Local(LocalBus::new()), tasks, durable_tasks).await?;

    let nats = psrpc_testkit::NatsServer::start_with(psrpc_testkit::NatsOptions {
        jetstream: true,
        ..Default::default()
    })?;
    bus(Net::Nats(nats.url()), tasks, durable_tasks).await?;

    let redis = psrpc_testkit::RedisServer::start()?;
    bus(Net::Redis(redis.url()), tasks, durable_tasks).await?;
    Ok(())
}
