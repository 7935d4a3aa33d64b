//! The batch suite: scatter/gather batches over queue calls (every bus) and over durable tasks
//! (every carrier).
//!
//! A bus's test file expands [`batch_suite!`](crate::batch_suite!) with its [`Harness`]; a carrier's with
//! `batch_suite!(durable …; harness)` and its [`DurableHarness`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use psrpc::batch::{Batch, BatchEnd, BatchError, BatchOptions, FailurePolicy, ItemError};
use psrpc::durable::{DurableClient, Worker, WorkerHandle, WorkerOptions};
use psrpc::{Client, Error, ErrorCode, MethodInfo, Server};
use tokio::sync::Semaphore;

use crate::durable::{DurableHarness, queue_config};
use crate::{Harness, within};

const SVC: &str = "Batch";
const SQUARE: MethodInfo = MethodInfo::unary("Square");
const QUEUE: &str = "Batch";
const VIS: Duration = Duration::from_secs(5);

/// Tasks in the large batch cases.
pub const LARGE: u64 = 1000;
/// Workers (servers) in the fleet cases.
pub const FLEET: usize = 4;

/// Counts handler runs, and the most running at once.
#[derive(Debug, Default)]
pub struct Gauge {
    started: AtomicUsize,
    running: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(&self) -> GaugeGuard<'_> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(self)
    }
}

struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a test handler does with request `n`.
#[derive(Clone)]
struct Behaviour {
    gauge: Arc<Gauge>,
    /// Requests failing with `invalid_argument` when this returns true.
    fail: fn(u64) -> bool,
    /// Handlers hold a permit while they run; none means no waiting.
    gate: Option<Arc<Semaphore>>,
    /// Simulated work.
    work: Duration,
    /// Handlers that saw their call cancelled.
    saw_cancel: Arc<AtomicUsize>,
}

impl Behaviour {
    fn new() -> Self {
        Behaviour {
            gauge: Arc::default(),
            fail: |_| false,
            gate: None,
            work: Duration::ZERO,
            saw_cancel: Arc::default(),
        }
    }

    async fn run(&self, n: u64) -> psrpc::Result<u64> {
        let _running = self.gauge.enter();
        if let Some(gate) = &self.gate {
            let _permit = gate.acquire().await.expect("gate open");
        }
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        if (self.fail)(n) {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                format!("refused {n}"),
            ));
        }
        Ok(n * n)
    }
}

async fn servers(h: &Harness, count: usize, behaviour: &Behaviour) -> Vec<Server> {
    let mut out = Vec::new();
    for _ in 0..count {
        let server = Server::new(SVC, h.bus().await);
        let b = behaviour.clone();
        server
            .register_unary(SQUARE, &[], move |ctx, n: u64| {
                let b = b.clone();
                async move {
                    tokio::select! {
                        out = b.run(n) => out,
                        _ = ctx.cancelled() => {
                            b.saw_cancel.fetch_add(1, Ordering::SeqCst);
                            Err(Error::canceled())
                        }
                    }
                }
            })
            .await
            .expect("register");
        out.push(server);
    }
    out
}

async fn client(h: &Harness) -> Client {
    Client::new(SVC, h.bus().await).await.expect("client")
}

async fn shutdown(servers: Vec<Server>) {
    for s in servers {
        s.shutdown().await;
    }
}

/// Bounds a future by [`within`].
trait ThenWithin: std::future::Future + Sized {
    fn then_within(self) -> impl std::future::Future<Output = Self::Output> {
        within("the batch", self)
    }
}

impl<F: std::future::Future> ThenWithin for F {}

/// Gathers a batch through its stream, checking each index comes once.
async fn gather(mut batch: Batch<u64>) -> (Vec<Option<Result<u64, ItemError>>>, Batch<u64>) {
    let total = batch.progress().total;
    let mut slots: Vec<Option<Result<u64, ItemError>>> = (0..total).map(|_| None).collect();
    let mut seen = HashSet::new();
    while let Some(item) = within("batch results", batch.next()).await {
        assert_eq!(item.key, item.index);
        assert!(
            seen.insert(item.index),
            "index {} yielded twice",
            item.index
        );
        slots[item.index] = Some(item.result);
    }
    (slots, batch)
}

fn check_squares(slots: &[Option<Result<u64, ItemError>>]) {
    for (i, slot) in slots.iter().enumerate() {
        match slot {
            Some(Ok(v)) => assert_eq!(*v, (i as u64) * (i as u64), "result of task {i}"),
            other => panic!("task {i}: {other:?}"),
        }
    }
}

/// 1,000 queue calls over four servers: 1,000 results, each once, with the right index.
pub async fn queue_batch_over_fleet(h: &Harness) {
    let b = Behaviour::new();
    let fleet = servers(h, FLEET, &b).await;
    let client = client(h).await;
    let batch = Batch::<u64>::queue(&client, &SQUARE, &[], 0..LARGE, BatchOptions::new())
        .await
        .expect("submit");
    let (slots, batch) = gather(batch).await;
    check_squares(&slots);
    assert_eq!(batch.end(), Some(BatchEnd::Completed));
    let p = batch.progress();
    assert_eq!(
        (p.done, p.failed, p.outstanding(), p.in_flight),
        (LARGE as usize, 0, 0, 0)
    );
    assert_eq!(b.gauge.started.load(Ordering::SeqCst), LARGE as usize);
    shutdown(fleet).await;
}

/// Cancelling a queue batch: the calls in flight are cancelled (their handlers see it), and no
/// other task starts.
pub async fn queue_batch_cancel(h: &Harness) {
    let mut b = Behaviour::new();
    let gate = Arc::new(Semaphore::new(0));
    b.gate = Some(gate.clone());
    let fleet = servers(h, 2, &b).await;
    let client = client(h).await;
    let mut batch = Batch::<u64>::queue(
        &client,
        &SQUARE,
        &[],
        0..100,
        BatchOptions::new().max_in_flight(4),
    )
    .await
    .expect("submit");
    within("four handlers running", async {
        while b.gauge.running.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    batch.cancel();
    assert!(within("end", batch.next()).await.is_none());
    assert_eq!(batch.end(), Some(BatchEnd::Cancelled));
    within("handlers see cancellation", async {
        while b.saw_cancel.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(
        b.gauge.started.load(Ordering::SeqCst),
        4,
        "no new work after cancel"
    );
    assert_eq!(batch.progress().outstanding(), 100);
    shutdown(fleet).await;
}

/// Failure policies: `Continue` yields every outcome, `StopAtFirstError` stops at the first.
pub async fn queue_batch_failure_policy(h: &Harness) {
    let mut b = Behaviour::new();
    b.fail = |n| n % 5 == 3;
    let fleet = servers(h, 2, &b).await;
    let client = client(h).await;
    let all = Batch::<u64>::queue(&client, &SQUARE, &[], 0..20, BatchOptions::new())
        .await
        .expect("submit")
        .collect()
        .then_within()
        .await
        .expect("complete");
    for (i, r) in all.iter().enumerate() {
        match r {
            Err(ItemError::Failed(e)) if i % 5 == 3 => {
                assert_eq!(e.code(), ErrorCode::InvalidArgument)
            }
            Ok(v) if i % 5 != 3 => assert_eq!(*v, (i * i) as u64),
            other => panic!("task {i}: {other:?}"),
        }
    }
    let before = b.gauge.started.load(Ordering::SeqCst);
    let stop = BatchOptions::new()
        .max_in_flight(1)
        .failure_policy(FailurePolicy::StopAtFirstError);
    let err = Batch::<u64>::queue(&client, &SQUARE, &[], 0..20, stop)
        .await
        .expect("submit")
        .collect()
        .then_within()
        .await
        .expect_err("stops");
    match err {
        BatchError::Task {
            index: 3,
            error: ItemError::Failed(e),
        } => {
            assert_eq!(e.code(), ErrorCode::InvalidArgument)
        }
        other => panic!("{other:?}"),
    }
    // One at a time: tasks 0..=3 ran, none after the failure.
    assert_eq!(b.gauge.started.load(Ordering::SeqCst) - before, 4);
    shutdown(fleet).await;
}

/// Never more than the in-flight limit running at once, across the fleet.
pub async fn queue_batch_in_flight_limit(h: &Harness) {
    let mut b = Behaviour::new();
    b.work = Duration::from_millis(5);
    let fleet = servers(h, FLEET, &b).await;
    let client = client(h).await;
    let out = Batch::<u64>::queue(
        &client,
        &SQUARE,
        &[],
        0..60,
        BatchOptions::new().max_in_flight(3),
    )
    .await
    .expect("submit")
    .try_collect()
    .await
    .expect("complete");
    assert_eq!(out.len(), 60);
    let max = b.gauge.max.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&max),
        "{max} handlers ran at once, limit 3"
    );
    shutdown(fleet).await;
}

/// Empty and oversized batches are refused before anything is sent.
pub async fn queue_batch_bad_input(h: &Harness) {
    let b = Behaviour::new();
    let fleet = servers(h, 1, &b).await;
    let client = client(h).await;
    let empty = Batch::<u64>::queue(
        &client,
        &SQUARE,
        &[],
        Vec::<u64>::new(),
        BatchOptions::new(),
    )
    .await;
    assert!(matches!(empty, Err(BatchError::Empty)), "{empty:?}");
    let big = Batch::<u64>::queue(
        &client,
        &SQUARE,
        &[],
        0..11,
        BatchOptions::new().max_size(10),
    )
    .await;
    assert!(
        matches!(big, Err(BatchError::TooLarge { size: 11, max: 10 })),
        "{big:?}"
    );
    assert_eq!(b.gauge.started.load(Ordering::SeqCst), 0);
    shutdown(fleet).await;
}

// ---- durable batches ----

fn worker_options(concurrency: usize) -> WorkerOptions {
    WorkerOptions::default()
        .concurrency(concurrency)
        .queue(queue_config(VIS))
        .fetch_wait(Duration::from_millis(100))
}

async fn workers(
    h: &DurableHarness,
    count: usize,
    concurrency: usize,
    behaviour: &Behaviour,
) -> Vec<WorkerHandle> {
    let mut out = Vec::new();
    for _ in 0..count {
        let b = behaviour.clone();
        let worker = Worker::new(h.carrier().await, QUEUE)
            .options(worker_options(concurrency))
            .handle("Square", move |_ctx, n: u64| {
                let b = b.clone();
                async move { b.run(n).await }
            })
            .handle("Text", |_ctx, n: u64| async move { Ok(format!("n{n}")) })
            .start()
            .await
            .expect("worker");
        out.push(worker);
    }
    out
}

async fn durable_client(h: &DurableHarness) -> DurableClient {
    DurableClient::with_config(h.carrier().await, QUEUE, &queue_config(VIS))
        .await
        .expect("open")
}

async fn stop(workers: Vec<WorkerHandle>) {
    for w in workers {
        w.shutdown().await;
    }
}

/// 1,000 durable tasks over four workers: 1,000 results, each once, with the right index.
pub async fn durable_batch_over_fleet(h: &DurableHarness) {
    let b = Behaviour::new();
    let fleet = workers(h, FLEET, 4, &b).await;
    let client = durable_client(h).await;
    let batch = Batch::<u64>::durable(
        &client,
        "Square",
        0..LARGE,
        BatchOptions::new().max_in_flight(128),
    )
    .await
    .expect("submit");
    let (slots, batch) = gather(batch).await;
    check_squares(&slots);
    assert_eq!(batch.end(), Some(BatchEnd::Completed));
    assert_eq!(batch.progress().done, LARGE as usize);
    stop(fleet).await;
}

/// Cancelling a durable batch: tasks still queued are withdrawn (workers skip them), nothing
/// more is enqueued, and the batch cannot be resumed.
pub async fn durable_batch_cancel(h: &DurableHarness) {
    let mut b = Behaviour::new();
    let gate = Arc::new(Semaphore::new(0));
    b.gate = Some(gate.clone());
    // Two workers running one task each; the batch keeps eight in flight, so six wait queued.
    let fleet = workers(h, 2, 1, &b).await;
    let client = durable_client(h).await;
    let mut batch = Batch::<u64>::durable(
        &client,
        "Square",
        0..100,
        BatchOptions::new().max_in_flight(8),
    )
    .await
    .expect("submit");
    within("two tasks running", async {
        loop {
            let stats = client.carrier().stats(QUEUE).await.expect("stats");
            if b.gauge.running.load(Ordering::SeqCst) == 2 && stats.waiting + stats.in_flight == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    batch.cancel();
    assert!(within("end", batch.next()).await.is_none());
    assert_eq!(batch.end(), Some(BatchEnd::Cancelled));
    // The two running handlers see the cancellation (they are dropped at their next
    // heartbeat) without ever being let through the gate.
    within("running handlers cancelled", async {
        while b.gauge.running.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    gate.add_permits(1000);
    within("queue drained", async {
        loop {
            let stats = client.carrier().stats(QUEUE).await.expect("stats");
            if stats.waiting + stats.in_flight == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        b.gauge.started.load(Ordering::SeqCst),
        2,
        "withdrawn tasks did not run"
    );
    let resumed =
        Batch::<u64>::resume(&client, batch.id(), "Square", 0..100, BatchOptions::new()).await;
    assert!(
        matches!(resumed, Err(BatchError::InvalidArgument(_))),
        "{resumed:?}"
    );
    stop(fleet).await;
}

/// Failure policies over durable tasks (failures are permanent errors: no retries).
pub async fn durable_batch_failure_policy(h: &DurableHarness) {
    let mut b = Behaviour::new();
    b.fail = |n| n % 5 == 3;
    let fleet = workers(h, 2, 2, &b).await;
    let client = durable_client(h).await;
    let all = Batch::<u64>::durable(&client, "Square", 0..20, BatchOptions::new())
        .await
        .expect("submit")
        .collect()
        .then_within()
        .await
        .expect("complete");
    for (i, r) in all.iter().enumerate() {
        match r {
            Err(ItemError::Failed(e)) if i % 5 == 3 => {
                assert_eq!(e.code(), ErrorCode::InvalidArgument)
            }
            Ok(v) if i % 5 != 3 => assert_eq!(*v, (i * i) as u64),
            other => panic!("task {i}: {other:?}"),
        }
    }
    let before = b.gauge.started.load(Ordering::SeqCst);
    let stop_opts = BatchOptions::new()
        .max_in_flight(1)
        .failure_policy(FailurePolicy::StopAtFirstError);
    let err = Batch::<u64>::durable(&client, "Square", 0..20, stop_opts)
        .await
        .expect("submit")
        .collect()
        .then_within()
        .await
        .expect_err("stops");
    assert!(matches!(err, BatchError::Task { index: 3, .. }), "{err:?}");
    assert_eq!(b.gauge.started.load(Ordering::SeqCst) - before, 4);
    stop(fleet).await;
}

/// Never more than the in-flight limit running, though the workers could run sixteen.
pub async fn durable_batch_in_flight_limit(h: &DurableHarness) {
    let mut b = Behaviour::new();
    b.work = Duration::from_millis(5);
    let fleet = workers(h, FLEET, 4, &b).await;
    let client = durable_client(h).await;
    let out = Batch::<u64>::durable(
        &client,
        "Square",
        0..60,
        BatchOptions::new().max_in_flight(3),
    )
    .await
    .expect("submit")
    .try_collect()
    .await
    .expect("complete");
    assert_eq!(out.len(), 60);
    let max = b.gauge.max.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&max),
        "{max} handlers ran at once, limit 3"
    );
    stop(fleet).await;
}

/// A coordinator that went away re-attaches by batch ID: `resume` with the requests
/// enqueues what was never enqueued, `attach` gathers what was.
pub async fn durable_batch_reattach(h: &DurableHarness) {
    let b = Behaviour::new();
    let client = durable_client(h).await;
    let waiting = |n: u64| {
        let client = client.clone();
        async move {
            within("tasks enqueued", async {
                while client.carrier().stats(QUEUE).await.expect("stats").waiting < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
        }
    };
    // No workers yet: the first coordinator enqueues ten of fifty (its in-flight limit), then
    // "dies"; another enqueues all twenty of its batch, then dies.
    let first = Batch::<u64>::durable(
        &client,
        "Square",
        0..50,
        BatchOptions::new().max_in_flight(10).batch_id("reattach-1"),
    )
    .await
    .expect("submit");
    waiting(10).await;
    drop(first);
    let second = Batch::<u64>::durable(
        &client,
        "Square",
        0..20,
        BatchOptions::new().batch_id("reattach-2"),
    )
    .await
    .expect("submit");
    waiting(30).await;
    drop(second);
    let again = Batch::<u64>::durable(
        &client,
        "Square",
        0..50,
        BatchOptions::new().batch_id("reattach-1"),
    )
    .await;
    assert!(
        matches!(again, Err(BatchError::InvalidArgument(_))),
        "{again:?}"
    );

    let fleet = workers(h, 2, 4, &b).await;
    let resumed = Batch::<u64>::resume(&client, "reattach-1", "Square", 0..50, BatchOptions::new())
        .await
        .expect("resume");
    let out = within("resumed batch", resumed.try_collect())
        .await
        .expect("complete");
    assert_eq!(out, (0..50u64).map(|n| n * n).collect::<Vec<_>>());
    let attached = Batch::<u64>::attach(&client, "reattach-2", BatchOptions::new())
        .await
        .expect("attach");
    let out = within("attached batch", attached.try_collect())
        .await
        .expect("complete");
    assert_eq!(out, (0..20u64).map(|n| n * n).collect::<Vec<_>>());
    // Each task ran once: the re-attached coordinators found the enqueued ones by their IDs.
    assert_eq!(b.gauge.started.load(Ordering::SeqCst), 70);

    let unknown = Batch::<u64>::attach(&client, "never-submitted", BatchOptions::new()).await;
    assert!(
        matches!(unknown, Err(BatchError::UnknownBatch(_))),
        "{unknown:?}"
    );
    let mismatch =
        Batch::<u64>::resume(&client, "reattach-2", "Square", 0..21, BatchOptions::new()).await;
    assert!(
        matches!(mismatch, Err(BatchError::Mismatch { .. })),
        "{mismatch:?}"
    );
    stop(fleet).await;
}

/// Bad input: empty, oversized, a bad batch ID, and results of the wrong type.
pub async fn durable_batch_bad_input(h: &DurableHarness) {
    let b = Behaviour::new();
    let fleet = workers(h, 1, 4, &b).await;
    let client = durable_client(h).await;
    let empty =
        Batch::<u64>::durable(&client, "Square", Vec::<u64>::new(), BatchOptions::new()).await;
    assert!(matches!(empty, Err(BatchError::Empty)), "{empty:?}");
    let big =
        Batch::<u64>::durable(&client, "Square", 0..11, BatchOptions::new().max_size(10)).await;
    assert!(
        matches!(big, Err(BatchError::TooLarge { size: 11, max: 10 })),
        "{big:?}"
    );
    let bad_id =
        Batch::<u64>::durable(&client, "Square", 0..2, BatchOptions::new().batch_id("a.b")).await;
    assert!(
        matches!(bad_id, Err(BatchError::InvalidArgument(_))),
        "{bad_id:?}"
    );
    // "Text" answers strings: not the u64 this batch expects.
    let out = Batch::<u64>::durable(&client, "Text", 0..3, BatchOptions::new())
        .await
        .expect("submit")
        .collect()
        .then_within()
        .await
        .expect("complete");
    for r in out {
        assert!(matches!(r, Err(ItemError::Undecodable(_))), "{r:?}");
    }
    assert_eq!(b.gauge.started.load(Ordering::SeqCst), 0);
    stop(fleet).await;
}

/// Declares one test per batch case. `batch_suite!(harness)` for a bus,
/// `batch_suite!(durable [test attribute]; harness)` for a carrier.
#[macro_export]
macro_rules! batch_suite {
    (durable [$attr:meta]; $harness:expr) => {
        $crate::batch_suite!(@each [$attr] $harness;
            durable_batch_over_fleet,
            durable_batch_cancel,
            durable_batch_failure_policy,
            durable_batch_in_flight_limit,
            durable_batch_reattach,
            durable_batch_bad_input,
        );
    };
    ($harness:expr) => {
        $crate::batch_suite!(@each [tokio::test(flavor = "multi_thread", worker_threads = 2)] $harness;
            queue_batch_over_fleet,
            queue_batch_cancel,
            queue_batch_failure_policy,
            queue_batch_in_flight_limit,
            queue_batch_bad_input,
        );
    };
    (@each [$attr:meta] $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[$attr]
            async fn $case() {
                let harness = $harness;
                $crate::batch::$case(&harness).await;
            }
        )*
    };
}
