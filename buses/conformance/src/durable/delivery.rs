//! Cases of a task's way through the queue: enqueue and await, retries, redelivery after
//! the visibility timeout, heartbeats, idempotency keys, deadlines, shutdown hand-back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use psrpc::durable::{DeadLetterReason, DurableError, EnqueueOptions, Worker};
use psrpc::{Error, ErrorCode};

use super::*;
use crate::{PATIENCE, within};

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
            assert_eq!(err.code(), ErrorCode::Unavailable);
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
        Err(DurableError::Task(err)) => assert_eq!(err.code(), ErrorCode::DeadlineExceeded),
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
