//! The durable-call suite, run against every carrier (in-process, JetStream, Redis Streams).
//!
//! A carrier's test file builds a [`DurableHarness`] and expands [`durable_suite!`]; the
//! in-process carrier runs it on tokio's paused clock (`durable_suite!(paused; …)`), brokers on
//! the real clock with short configured timeouts.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use psrpc::durable::{
    Carrier, DeadLetterReason, DeadLetters, DurableClient, DurableError, EnqueueOptions, NewTask,
    QueueConfig, TaskEnvelope, Worker, WorkerHandle, WorkerOptions,
};
use psrpc::{Error, ErrorCode};

use crate::{PATIENCE, within};

type Connect = Box<dyn Fn() -> BoxFuture<'static, Arc<dyn Carrier>> + Send + Sync>;

/// The queue every case uses (each case has a carrier of its own).
pub const QUEUE: &str = "Durable";

/// A carrier under test and a way to open new connections to it.
pub struct DurableHarness {
    name: &'static str,
    connect: Connect,
    _keep: Box<dyn Any + Send + Sync>,
}

impl DurableHarness {
    /// A harness named `name` that keeps `keep` alive and opens carriers with `connect`.
    pub fn new<F, Fut>(name: &'static str, keep: impl Any + Send + Sync, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn Carrier>> + Send + 'static,
    {
        DurableHarness {
            name,
            connect: Box::new(move || Box::pin(connect())),
            _keep: Box::new(keep),
        }
    }

    /// The carrier kind under test.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A new carrier instance (for brokers a separate connection, as another process has).
    pub async fn carrier(&self) -> Arc<dyn Carrier> {
        (self.connect)().await
    }
}

/// Short timeouts, so redelivery cases finish quickly on real brokers.
pub fn queue_config(visibility: Duration) -> QueueConfig {
    QueueConfig {
        visibility_timeout: visibility,
        dedup_window: Duration::from_secs(60),
        result_ttl: Duration::from_secs(600),
    }
}

fn worker_options(visibility: Duration) -> WorkerOptions {
    WorkerOptions {
        concurrency: 4,
        queue: queue_config(visibility),
        fetch_wait: Duration::from_millis(200),
        ..Default::default()
    }
}

async fn client(h: &DurableHarness, visibility: Duration) -> DurableClient {
    DurableClient::with_config(h.carrier().await, QUEUE, &queue_config(visibility))
        .await
        .expect("open queue")
}

async fn echo_worker(h: &DurableHarness, visibility: Duration) -> WorkerHandle {
    Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(visibility))
        .handle(
            "Echo",
            |_ctx, s: String| async move { Ok(format!("echo {s}")) },
        )
        .start()
        .await
        .expect("worker")
}

/// Polls `check` until it yields a value (bounded by [`PATIENCE`]).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            // A poll interval of a bounded wait, not a synchronisation sleep.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn dead_letters_of(
    h: &DurableHarness,
    n: usize,
) -> Vec<(String, psrpc::durable::DeadLetter)> {
    let dlq = DeadLetters::new(h.carrier().await, QUEUE);
    eventually("dead letters", || {
        let dlq = dlq.clone();
        async move {
            let list = dlq.list(None, 100).await.expect("list dead letters");
            (list.len() >= n).then_some(list)
        }
    })
    .await
}

const VIS: Duration = Duration::from_secs(1);

/// Enqueue resolves with a task ID; awaiting gives the typed result; another client fetches it
/// by ID later; stats count nothing left waiting.
pub async fn enqueue_and_await(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let task = client
        .enqueue::<_, String>("Echo", &"a".to_string(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    assert!(task.id().starts_with("TSK_"));
    let stats = client.carrier().stats(QUEUE).await.expect("stats");
    assert_eq!(stats.waiting, 1, "{stats:?}");
    let worker = echo_worker(h, VIS).await;
    assert_eq!(task.wait(PATIENCE).await.expect("result"), "echo a");
    let later = self::client(h, VIS).await;
    let stored = later
        .result(task.id())
        .await
        .expect("fetch")
        .expect("stored");
    assert_eq!(stored.attempts, 1);
    let typed = later
        .handle::<String>(task.id().to_owned())
        .try_result()
        .await;
    assert_eq!(typed.expect("typed").as_deref(), Some("echo a"));
    let many: Vec<_> = futures::future::join_all((0..20).map(|i| {
        let client = client.clone();
        async move {
            client
                .call::<_, String>("Echo", &i.to_string(), EnqueueOptions::default(), PATIENCE)
                .await
        }
    }))
    .await;
    for (i, r) in many.into_iter().enumerate() {
        assert_eq!(r.expect("call"), format!("echo {i}"));
    }
    let stats = worker.shutdown().await;
    assert_eq!(stats.succeeded, 21);
    let q = client.carrier().stats(QUEUE).await.expect("stats");
    assert_eq!((q.waiting, q.in_flight), (0, 0), "{q:?}");
}

/// A failing handler is retried up to the attempt limit, then the task is dead-lettered with
/// its last error and attempt count; a panic counts as a failure and is retried.
pub async fn retry_then_dead_letter(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let worker = Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(VIS))
        .handle("Fail", move |_ctx, _s: String| {
            let runs = counted.clone();
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                Err::<String, _>(Error::new(ErrorCode::Unavailable, format!("failure {n}")))
            }
        })
        .handle("PanicOnce", |ctx, s: String| async move {
            if ctx.attempt == 1 {
                panic!("first attempt panics");
            }
            Ok(format!("{s} on attempt {}", ctx.attempt))
        })
        .start()
        .await
        .expect("worker");
    let opts = EnqueueOptions::default()
        .max_attempts(3)
        .backoff(Duration::from_millis(10), Duration::from_millis(40));
    let task = client
        .enqueue::<_, String>("Fail", &"x".to_string(), opts.clone())
        .await
        .expect("enqueue");
    match task.wait(PATIENCE).await {
        Err(DurableError::Task(err)) => {
            assert_eq!(err.code(), &ErrorCode::Unavailable);
            assert_eq!(err.message(), "failure 3");
        }
        other => panic!("expected the task's error, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let letters = dead_letters_of(h, 1).await;
    let (_, letter) = &letters[0];
    assert_eq!(letter.task_id, task.id());
    assert_eq!(letter.reason(), DeadLetterReason::AttemptsExhausted);
    assert_eq!(
        (letter.attempts, letter.error_message.as_str()),
        (3, "failure 3")
    );

    let panicky = client
        .call::<_, String>("PanicOnce", &"p".to_string(), opts, PATIENCE)
        .await
        .expect("retried after the panic");
    assert_eq!(panicky, "p on attempt 2");
    let stats = worker.shutdown().await;
    assert_eq!((stats.retries, stats.dead_lettered), (3, 1), "{stats:?}");
}

/// A task taken by a worker that dies (never acks, no heartbeats) comes back after the
/// visibility timeout and completes on its second attempt.
pub async fn visibility_timeout_redelivers(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let task = client
        .enqueue::<_, String>("Attempt", &"v".to_string(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    // The "crashed worker": takes the task and vanishes.
    let taken = within("first delivery", async {
        loop {
            let got = client
                .carrier()
                .fetch(QUEUE, 1, Duration::from_millis(200))
                .await
                .expect("fetch");
            if !got.is_empty() {
                return got;
            }
        }
    })
    .await;
    assert_eq!(taken[0].attempt, 1);
    drop(taken);
    let worker = Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(VIS))
        .handle("Attempt", |ctx, s: String| async move {
            Ok(format!("{s} attempt {}", ctx.attempt))
        })
        .start()
        .await
        .expect("worker");
    assert_eq!(task.wait(PATIENCE).await.expect("result"), "v attempt 2");
    assert_eq!(worker.shutdown().await.redeliveries, 1);
}

/// A handler running several visibility timeouts long keeps its task through heartbeats: it
/// runs once although another worker is waiting for work.
pub async fn heartbeats_keep_long_tasks(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let runs = Arc::new(AtomicU32::new(0));
    let start = |runs: Arc<AtomicU32>| async move {
        Worker::new(h.carrier().await, QUEUE)
            .options(worker_options(VIS))
            .handle("Slow", move |ctx, s: String| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // The handler's work: three visibility timeouts long.
                    tokio::time::sleep(VIS * 3).await;
                    Ok(format!("{s} attempt {}", ctx.attempt))
                }
            })
            .start()
            .await
            .expect("worker")
    };
    let a = start(runs.clone()).await;
    let b = start(runs.clone()).await;
    let out = client
        .call::<_, String>(
            "Slow",
            &"s".to_string(),
            EnqueueOptions::default(),
            PATIENCE,
        )
        .await
        .expect("result");
    assert_eq!(out, "s attempt 1");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let (a, b) = (a.shutdown().await, b.shutdown().await);
    assert_eq!(a.redeliveries + b.redeliveries, 0);
}

/// Enqueues with one idempotency key are one task, run once.
pub async fn idempotency_key_makes_one_task(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let opts = EnqueueOptions::default().idempotency_key("order-42");
    let first = client
        .enqueue::<_, String>("Count", &"1".to_string(), opts.clone())
        .await
        .expect("enqueue");
    let second = client
        .enqueue::<_, String>("Count", &"2".to_string(), opts.clone())
        .await
        .expect("enqueue again");
    assert_eq!(first.id(), second.id());
    assert_eq!(
        client.carrier().stats(QUEUE).await.expect("stats").waiting,
        1
    );
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let worker = Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(VIS))
        .handle("Count", move |_ctx, s: String| {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(s)
            }
        })
        .start()
        .await
        .expect("worker");
    assert_eq!(first.wait(PATIENCE).await.expect("result"), "1");
    // A repeat after completion names the same task and finds its result.
    let third = client
        .enqueue::<_, String>("Count", &"3".to_string(), opts)
        .await
        .expect("enqueue after completion");
    assert_eq!(third.wait(PATIENCE).await.expect("result"), "1");
    worker.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let too_long = EnqueueOptions::default().idempotency_key("k".repeat(65));
    assert!(matches!(
        client
            .enqueue::<_, String>("Count", &String::new(), too_long)
            .await,
        Err(DurableError::InvalidArgument(_))
    ));
}

/// A task whose deadline has passed is not run: it is dead-lettered with that reason.
pub async fn expired_deadline_is_dead_lettered(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let worker = Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(VIS))
        .handle("Late", move |_ctx, s: String| {
            flag.store(true, Ordering::SeqCst);
            async move { Ok(s) }
        })
        .start()
        .await
        .expect("worker");
    let past = SystemTime::now() - Duration::from_secs(1);
    let task = client
        .enqueue::<_, String>(
            "Late",
            &"d".to_string(),
            EnqueueOptions::default().deadline(past),
        )
        .await
        .expect("enqueue");
    match task.wait(PATIENCE).await {
        Err(DurableError::Task(err)) => assert_eq!(err.code(), &ErrorCode::DeadlineExceeded),
        other => panic!("expected deadline_exceeded, got {other:?}"),
    }
    let letters = dead_letters_of(h, 1).await;
    assert_eq!(letters[0].1.reason(), DeadLetterReason::DeadlineExceeded);
    worker.shutdown().await;
    assert!(!ran.load(Ordering::SeqCst), "an expired task ran");
}

/// Shutdown hands a running task back: another worker completes it at once, long before the
/// (one minute) visibility timeout.
pub async fn shutdown_hands_back_in_flight(h: &DurableHarness) {
    let vis = Duration::from_secs(60);
    let client = client(h, vis).await;
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let stuck = Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(vis))
        .handle("Work", move |_ctx, _s: String| {
            let _ = started_tx.send(());
            std::future::pending::<psrpc::Result<String>>()
        })
        .start()
        .await
        .expect("worker");
    let task = client
        .enqueue::<_, String>("Work", &"w".to_string(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    within("handler start", started.recv()).await;
    let mut stuck = stuck;
    let stats = within("shutdown", stuck.shutdown_within(Duration::ZERO)).await;
    assert_eq!(stats.handed_back, 1);
    let next = Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(vis))
        .handle("Work", |ctx, s: String| async move {
            Ok(format!("{s} attempt {}", ctx.attempt))
        })
        .start()
        .await
        .expect("worker");
    let out = task
        .wait(PATIENCE)
        .await
        .expect("completed by the next worker");
    assert!(out.starts_with("w attempt "), "{out}");
    next.shutdown().await;
}

/// A dead letter can be inspected and replayed (then the task succeeds and the letter is
/// gone); purge removes the rest.
pub async fn replay_and_purge_dead_letters(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let flag = fixed.clone();
    let worker = Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(VIS))
        .handle("Flaky", move |_ctx, s: String| {
            let ok = flag.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(format!("{s} done"))
                } else {
                    Err(Error::new(ErrorCode::Unavailable, "not yet"))
                }
            }
        })
        .start()
        .await
        .expect("worker");
    let opts = EnqueueOptions::default().max_attempts(1);
    let a = client
        .enqueue::<_, String>("Flaky", &"a".to_string(), opts.clone())
        .await
        .expect("enqueue");
    assert!(matches!(a.wait(PATIENCE).await, Err(DurableError::Task(_))));
    let b = client
        .enqueue::<_, String>("Flaky", &"b".to_string(), opts)
        .await
        .expect("enqueue");
    assert!(matches!(b.wait(PATIENCE).await, Err(DurableError::Task(_))));
    let letters = dead_letters_of(h, 2).await;
    let dlq = DeadLetters::new(h.carrier().await, QUEUE);
    let (id_a, _) = letters
        .iter()
        .find(|(_, l)| l.task_id == a.id())
        .expect("letter of a");
    let inspected = dlq.get(id_a).await.expect("get").expect("exists");
    let envelope = <TaskEnvelope as prost::Message>::decode(inspected.task).expect("task bytes");
    assert_eq!(envelope.method, "Flaky");
    fixed.store(true, Ordering::SeqCst);
    assert_eq!(dlq.replay(id_a).await.expect("replay"), a.id());
    assert_eq!(a.wait(PATIENCE).await.expect("replayed"), "a done");
    let left = dlq.list(None, 10).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.task_id, b.id());
    assert_eq!(dlq.purge().await.expect("purge"), 1);
    assert!(dlq.list(None, 10).await.expect("list").is_empty());
    assert!(!dlq.delete(id_a).await.expect("delete"));
    worker.shutdown().await;
}

/// Bad input never loops or panics: undecodable tasks and payloads and unknown methods are
/// dead-lettered at once with a reason; oversized tasks are refused at enqueue.
pub async fn bad_input_is_dead_lettered_at_once(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let carrier = client.carrier().clone();
    carrier
        .enqueue(
            QUEUE,
            NewTask {
                task_id: "garbage".into(),
                body: bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0x07]),
                dedup: false,
            },
        )
        .await
        .expect("raw enqueue");
    let bad_payload = client
        .enqueue_raw(
            "Echo",
            bytes::Bytes::from_static(&[0x0a, 0x05, 0x01]),
            EnqueueOptions::default(),
        )
        .await
        .expect("enqueue bad payload");
    let unknown = client
        .enqueue::<_, String>("Nope", &String::new(), EnqueueOptions::default())
        .await
        .expect("enqueue unknown");
    let limit = carrier.max_task_bytes();
    let huge = "x".repeat(limit + 1);
    assert!(matches!(
        client
            .enqueue::<_, String>("Echo", &huge, EnqueueOptions::default())
            .await,
        Err(DurableError::TooLarge { .. })
    ));
    let worker = echo_worker(h, VIS).await;
    match client.handle::<String>(bad_payload).wait(PATIENCE).await {
        Err(DurableError::Task(err)) => assert_eq!(err.code(), &ErrorCode::MalformedRequest),
        other => panic!("expected malformed_request, got {other:?}"),
    }
    match unknown.wait(PATIENCE).await {
        Err(DurableError::Task(err)) => assert_eq!(err.code(), &ErrorCode::Unimplemented),
        other => panic!("expected unimplemented, got {other:?}"),
    }
    let letters = dead_letters_of(h, 3).await;
    let mut reasons: Vec<_> = letters.iter().map(|(_, l)| l.reason().as_str()).collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        ["undecodable_payload", "undecodable_task", "unknown_method"]
    );
    assert!(letters.iter().all(|(_, l)| l.attempts == 1));
    let stats = worker.shutdown().await;
    assert_eq!((stats.retries, stats.dead_lettered), (0, 3), "{stats:?}");
}

/// Declares one test per durable case, each on a fresh harness from `$harness`;
/// `paused;` runs them on tokio's paused clock (in-process carrier only).
#[macro_export]
macro_rules! durable_suite {
    (paused; $harness:expr) => {
        $crate::durable_suite!(@cases [tokio::test(start_paused = true)] $harness);
    };
    ($harness:expr) => {
        $crate::durable_suite!(@cases [tokio::test(flavor = "multi_thread", worker_threads = 2)] $harness);
    };
    (@cases [$attr:meta] $harness:expr) => {
        $crate::durable_suite!(@each [$attr] $harness;
            enqueue_and_await,
            retry_then_dead_letter,
            visibility_timeout_redelivers,
            heartbeats_keep_long_tasks,
            idempotency_key_makes_one_task,
            expired_deadline_is_dead_lettered,
            shutdown_hands_back_in_flight,
            replay_and_purge_dead_letters,
            bad_input_is_dead_lettered_at_once,
        );
    };
    (@each [$attr:meta] $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[$attr]
            async fn $case() {
                let harness = $harness;
                $crate::durable::$case(&harness).await;
            }
        )*
    };
}

/// Tasks accepted and results stored before the broker is SIGKILLed are there after it
/// restarts: queued tasks complete, the stored result is still fetched by ID.
pub async fn survives_broker_kill<C, Fut>(connect: C, kill_and_restart: impl FnOnce())
where
    C: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Carrier>>,
{
    let before = DurableClient::with_config(connect().await, QUEUE, &queue_config(VIS))
        .await
        .expect("open");
    let start_worker = |carrier: Arc<dyn Carrier>| {
        Worker::new(carrier, QUEUE)
            .options(worker_options(VIS))
            .handle(
                "Echo",
                |_ctx, s: String| async move { Ok(format!("echo {s}")) },
            )
            .start()
    };
    let worker = start_worker(connect().await).await.expect("worker");
    let done = before
        .call::<_, String>(
            "Echo",
            &"first".to_string(),
            EnqueueOptions::default(),
            PATIENCE,
        )
        .await
        .expect("first call");
    assert_eq!(done, "echo first");
    let first_id = before
        .enqueue::<_, String>("Echo", &"probe".to_string(), EnqueueOptions::default())
        .await
        .expect("enqueue")
        .id()
        .to_owned();
    within(
        "probe",
        before.handle::<String>(first_id.clone()).wait(PATIENCE),
    )
    .await
    .expect("probe result");
    worker.shutdown().await;
    let mut queued = Vec::new();
    for i in 0..20 {
        let task = before
            .enqueue::<_, String>("Echo", &i.to_string(), EnqueueOptions::default())
            .await
            .expect("enqueue");
        queued.push(task.id().to_owned());
    }
    kill_and_restart();
    let after = DurableClient::with_config(connect().await, QUEUE, &queue_config(VIS))
        .await
        .expect("reopen");
    let worker = start_worker(connect().await)
        .await
        .expect("worker after restart");
    for (i, id) in queued.into_iter().enumerate() {
        let out = after
            .handle::<String>(id)
            .wait(PATIENCE)
            .await
            .expect("queued task");
        assert_eq!(out, format!("echo {i}"));
    }
    let stored = after.result(&first_id).await.expect("fetch").expect("kept");
    assert!(stored.response.is_some());
    worker.shutdown().await;
}
