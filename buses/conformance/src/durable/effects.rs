//! Effect fences: a side effect recorded with `TaskContext::record_effect` is applied by one
//! attempt of a task only, and of racing writers exactly one records it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use psrpc::durable::{DurableError, EnqueueOptions, Worker};
use psrpc::{Error, ErrorCode};

use super::{DurableHarness, QUEUE, VIS, client, worker_options};
use crate::PATIENCE;

/// A handler records its effect, then fails (as a worker killed after its effect and before
/// its result would): the retry is told the effect is already applied, with the first value,
/// and the ledger holds the first attempt's record only. Racing writers: one wins.
pub async fn effects_apply_once(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let applied = Arc::new(AtomicU32::new(0));
    let seen = applied.clone();
    let worker = Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(VIS))
        .handle("Pay", move |ctx, cents: u64| {
            let applied = applied.clone();
            async move {
                let effect = ctx
                    .record_effect("payment", format!("{cents} by attempt {}", ctx.attempt))
                    .await?;
                if effect.is_applied() {
                    applied.fetch_add(1, Ordering::SeqCst);
                }
                if ctx.attempt == 1 {
                    return Err(Error::new(ErrorCode::Unavailable, "died after the effect"));
                }
                Ok(format!("{effect:?}"))
            }
        })
        .start()
        .await
        .expect("worker");
    let task = client
        .enqueue::<_, String>(
            "Pay",
            &250u64,
            EnqueueOptions::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(10), Duration::from_millis(20)),
        )
        .await
        .expect("enqueue");
    let answer = task.wait(PATIENCE).await.expect("second attempt's answer");
    assert!(answer.starts_with("AlreadyApplied"), "{answer}");
    assert_eq!(seen.load(Ordering::SeqCst), 1, "effect applied once");
    assert_eq!(
        client
            .effect(task.id(), "payment")
            .await
            .expect("read effect"),
        Some(Bytes::from_static(b"250 by attempt 1"))
    );
    assert_eq!(
        client
            .effect(task.id(), "refund")
            .await
            .expect("read effect"),
        None
    );
    assert!(matches!(
        client.effect(task.id(), "no spaces").await,
        Err(DurableError::InvalidArgument(_))
    ));
    worker.shutdown().await;

    // Eight writers on separate connections race for one record: exactly one records it and
    // all see its value.
    let mut racers = Vec::new();
    for i in 0..8u8 {
        let carrier = h.carrier().await;
        racers.push(tokio::spawn(async move {
            carrier
                .record_effect(
                    QUEUE,
                    "TSK_race",
                    "ledger",
                    Bytes::from(vec![i]),
                    Duration::from_secs(60),
                )
                .await
                .expect("record effect")
        }));
    }
    let mut first = Vec::new();
    let mut winners = Vec::new();
    for (i, r) in racers.into_iter().enumerate() {
        match r.await.expect("racer") {
            None => winners.push(i as u8),
            Some(v) => first.push(v),
        }
    }
    assert_eq!(winners.len(), 1, "one writer records the effect");
    assert!(first.iter().all(|v| v[..] == [winners[0]]), "{first:?}");
}
