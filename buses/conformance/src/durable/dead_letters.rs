//! Cases of the dead-letter queue: replay and purge, and bad input dead-lettered at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use psrpc::durable::{DeadLetters, DurableError, EnqueueOptions, NewTask, TaskEnvelope, Worker};
use psrpc::{Error, ErrorCode};

use super::*;
use crate::PATIENCE;

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
        Err(DurableError::Task(err)) => assert_eq!(err.code(), ErrorCode::MalformedRequest),
        other => panic!("expected malformed_request, got {other:?}"),
    }
    match unknown.wait(PATIENCE).await {
        Err(DurableError::Task(err)) => assert_eq!(err.code(), ErrorCode::Unimplemented),
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

/// A task the broker stored twice (a retried enqueue whose deduplication the broker lost, as
/// a JetStream restart can for a task already removed from its work queue) has one dead
/// letter: the second message finds the dead-lettered outcome of the first and adds none.
pub async fn second_message_of_a_dead_task_adds_no_letter(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let worker = Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(VIS))
        .handle("Refuse", |_ctx, _s: String| async move {
            Err::<String, _>(Error::new(ErrorCode::InvalidArgument, "never"))
        })
        .start()
        .await
        .expect("worker");
    let task = client
        .enqueue::<_, String>(
            "Refuse",
            &"r".to_string(),
            EnqueueOptions::default().idempotency_key("stored-twice"),
        )
        .await
        .expect("enqueue");
    assert!(matches!(
        task.wait(PATIENCE).await,
        Err(DurableError::Task(_))
    ));
    let letters = dead_letters_of(h, 1).await;
    // The same task again, as a new message (no dedup): what the broker would hold had it
    // lost the first enqueue's deduplication.
    client
        .carrier()
        .enqueue(
            QUEUE,
            NewTask {
                task_id: task.id().to_owned(),
                body: letters[0].1.task.clone(),
                dedup: false,
            },
        )
        .await
        .expect("second message");
    eventually("second message handled", || {
        let done = worker.stats().skipped_done;
        async move { (done >= 1).then_some(()) }
    })
    .await;
    let dlq = DeadLetters::new(h.carrier().await, QUEUE);
    let all = dlq.list(None, 10).await.expect("list");
    assert_eq!(all.len(), 1, "one letter per task: {all:?}");
    worker.shutdown().await;
}
