//! Durable calls on a 3-node JetStream cluster with replicated (R3) streams and results
//! bucket: the node leading the task stream is killed while a worker drains the queue, more
//! tasks are enqueued during the leader election, and every task still completes with its
//! result stored. Prints the figures of RELIABILITY.md §12 as one JSON line.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use psrpc::durable::{
    Carrier, DurableClient, DurableError, EnqueueOptions, QueueConfig, Worker, WorkerOptions,
};
use psrpc_nats::durable::{JetStreamCarrier, JetStreamOptions};
use psrpc_testkit::{NatsCluster, NatsOptions};

/// Upper bound of every wait; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);
const QUEUE: &str = "Replicated";
/// Tasks enqueued before the kill, and during the election after it.
const BEFORE: usize = 40;
const AFTER: usize = 20;

async fn carrier(urls: &[String]) -> Arc<dyn Carrier> {
    let client = async_nats::ConnectOptions::new()
        .connect(urls)
        .await
        .expect("connect to the cluster");
    let options = JetStreamOptions::default().replicas(3);
    Arc::new(JetStreamCarrier::with_options(client, options))
}

/// Retries a carrier operation that fails while the stream elects a new leader.
async fn retrying<T, F, Fut>(what: &str, retries: &mut u32, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DurableError>>,
{
    let start = Instant::now();
    loop {
        match op().await {
            Ok(value) => return value,
            Err(err) => {
                *retries += 1;
                assert!(
                    start.elapsed() < PATIENCE,
                    "{what} still failing after {PATIENCE:?}: {err}"
                );
                // Retry backoff while the cluster elects a leader (not a synchronisation).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_tasks_survive_the_loss_of_a_node() {
    let mut cluster = NatsCluster::start(
        3,
        NatsOptions {
            jetstream: true,
            ..Default::default()
        },
    )
    .expect("nats-server cluster");
    let urls = cluster.urls();
    let client_carrier = carrier(&urls).await;
    // A task whose ack was lost with the node comes back soon.
    let queue_config = QueueConfig::default().visibility_timeout(Duration::from_secs(3));
    let mut retries = 0;
    let client = retrying("open the queue", &mut retries, || {
        DurableClient::with_config(client_carrier.clone(), QUEUE, &queue_config)
    })
    .await;

    let mut handles = Vec::new();
    for i in 0..BEFORE {
        let handle = client
            .enqueue::<String, String>(
                "Work",
                &format!("t{i}"),
                EnqueueOptions::default().idempotency_key(format!("k{i}")),
            )
            .await
            .expect("enqueue before the kill");
        handles.push(handle);
    }

    // The node leading the task stream is the one whose loss matters most.
    let js = async_nats::jetstream::new(client_carrier_client(&urls).await);
    let mut stream = js
        .get_stream(format!("PSRPC_DQ_{QUEUE}"))
        .await
        .expect("task stream");
    let info = stream.info().await.expect("stream info");
    let cluster_info = info.cluster.clone().expect("a clustered stream");
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(cluster_info.replicas.len(), 2, "{cluster_info:?}");
    let leader = cluster_info.leader.expect("a stream leader");
    let victim: usize = leader
        .trim_start_matches('n')
        .parse()
        .expect("node names n0..n2");

    let runs = Arc::new(Mutex::new(Vec::<String>::new()));
    let first_run = Arc::new(tokio::sync::Notify::new());
    let worker_runs = (runs.clone(), first_run.clone());
    let worker = Worker::new(carrier(&urls).await, QUEUE)
        .options(
            WorkerOptions::default()
                .concurrency(4)
                .queue(queue_config.clone()),
        )
        .handle("Work", move |_ctx, req: String| {
            let (runs, first_run) = worker_runs.clone();
            async move {
                runs.lock().unwrap().push(req.clone());
                first_run.notify_one();
                Ok(format!("done {req}"))
            }
        })
        .start()
        .await
        .expect("worker");

    // Kill the leader under load: as soon as the worker has run a task.
    tokio::time::timeout(PATIENCE, first_run.notified())
        .await
        .expect("the worker ran nothing");
    let killed_at = Instant::now();
    cluster.node(victim).kill();

    let mut enqueue_retries = 0;
    let mut first_enqueue_after = None;
    for i in BEFORE..BEFORE + AFTER {
        let request = format!("t{i}");
        let handle = retrying("enqueue after the kill", &mut enqueue_retries, || {
            client.enqueue::<String, String>(
                "Work",
                &request,
                EnqueueOptions::default().idempotency_key(format!("k{i}")),
            )
        })
        .await;
        first_enqueue_after.get_or_insert_with(|| killed_at.elapsed());
        handles.push(handle);
    }

    let mut wait_retries = 0;
    for (i, handle) in handles.iter().enumerate() {
        let started = Instant::now();
        let reply = loop {
            match handle.wait(Duration::from_secs(5)).await {
                Ok(reply) => break reply,
                Err(err) if started.elapsed() < PATIENCE => {
                    wait_retries += 1;
                    note_wait_error(&err);
                }
                Err(err) => {
                    let ran = runs.lock().unwrap().contains(&format!("t{i}"));
                    let mut stream = js
                        .get_stream(format!("PSRPC_DQ_{QUEUE}"))
                        .await
                        .expect("task stream");
                    let state = stream
                        .info()
                        .await
                        .map(|info| (info.state.clone(), info.cluster.clone()));
                    let consumer = stream
                        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("workers")
                        .await
                        .map(|c| c.cached_info().clone());
                    panic!(
                        "task {i} has no result after {PATIENCE:?}: {err}; ran: {ran}; \
                         stream: {state:?}; consumer: {consumer:?}"
                    );
                }
            }
        };
        assert_eq!(reply, format!("done t{i}"));
        let stored = retrying("read a stored result", &mut wait_retries, || {
            client.result(handle.id())
        })
        .await;
        assert!(stored.is_some(), "no stored result for task {i}");
    }
    let all_done = killed_at.elapsed();
    worker.shutdown().await;

    let runs = runs.lock().unwrap();
    let distinct: HashSet<&String> = runs.iter().collect();
    assert_eq!(distinct.len(), BEFORE + AFTER, "a task never ran");
    println!(
        "{{\"bench\":\"durable_cluster_node_loss\",\"nodes\":3,\"replicas\":3,\"tasks\":{},\
         \"killed\":\"stream leader\",\"first_enqueue_after_kill_ms\":{},\"enqueue_retries\":{},\
         \"wait_retries\":{},\"all_done_after_kill_ms\":{},\"runs\":{},\"reruns\":{}}}",
        BEFORE + AFTER,
        first_enqueue_after.unwrap_or_default().as_millis(),
        enqueue_retries,
        wait_retries,
        all_done.as_millis(),
        runs.len(),
        runs.len() - distinct.len(),
    );
}

/// A plain connection for stream inspection.
async fn client_carrier_client(urls: &[String]) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .connect(urls)
        .await
        .expect("connect to the cluster")
}

/// Errors while waiting are expected during the election; the count is reported.
fn note_wait_error(err: &DurableError) {
    eprintln!("waiting: {err}");
}
