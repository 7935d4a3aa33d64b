//! A broker that stalls and fails while a worker holds a delivery: the worker keeps the
//! delivery (heartbeats cover its broker round trips) and retries the result write, so a
//! handler that succeeded is neither run again nor charged an attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use psrpc::durable::{
    Carrier, CarrierError, CarrierFuture, Delivery, Enqueued, NewTask, QueueConfig, QueueStats,
    StoredDeadLetter, Worker,
};

use super::*;
use crate::PATIENCE;

/// The carrier under test, whose first `failures` result writes each stall for `stall` and
/// then fail, as a write to a broker electing a new leader does. Everything else goes to the
/// real carrier.
struct StallingResults {
    inner: Arc<dyn Carrier>,
    failures: AtomicU32,
    stall: Duration,
}

impl Carrier for StallingResults {
    fn max_task_bytes(&self) -> usize {
        self.inner.max_task_bytes()
    }
    fn open(&self, queue: &str, config: &QueueConfig) -> CarrierFuture<'_, ()> {
        self.inner.open(queue, config)
    }
    fn enqueue(&self, queue: &str, task: NewTask) -> CarrierFuture<'_, Enqueued> {
        self.inner.enqueue(queue, task)
    }
    fn fetch(&self, queue: &str, max: usize, wait: Duration) -> CarrierFuture<'_, Vec<Delivery>> {
        self.inner.fetch(queue, max, wait)
    }
    fn ack(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        self.inner.ack(queue, delivery)
    }
    fn retry(&self, queue: &str, delivery: &Delivery, delay: Duration) -> CarrierFuture<'_, ()> {
        self.inner.retry(queue, delivery, delay)
    }
    fn release(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        self.inner.release(queue, delivery)
    }
    fn heartbeat(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        self.inner.heartbeat(queue, delivery)
    }
    fn dead_letter(
        &self,
        queue: &str,
        delivery: &Delivery,
        letter: Bytes,
    ) -> CarrierFuture<'_, ()> {
        self.inner.dead_letter(queue, delivery, letter)
    }
    fn put_result(
        &self,
        queue: &str,
        task_id: &str,
        result: Bytes,
        ttl: Duration,
    ) -> CarrierFuture<'_, ()> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !failing {
            return self.inner.put_result(queue, task_id, result, ttl);
        }
        let stall = self.stall;
        Box::pin(async move {
            tokio::time::sleep(stall).await;
            Err(CarrierError::new(
                "put_result",
                "no stream leader (injected)",
            ))
        })
    }
    fn get_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, Option<Bytes>> {
        self.inner.get_result(queue, task_id)
    }
    fn delete_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, ()> {
        self.inner.delete_result(queue, task_id)
    }
    fn wait_result<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        timeout: Duration,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        self.inner.wait_result(queue, task_id, timeout)
    }
    fn list_dead_letters<'a>(
        &'a self,
        queue: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> CarrierFuture<'a, Vec<StoredDeadLetter>> {
        self.inner.list_dead_letters(queue, after, limit)
    }
    fn get_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, Option<Bytes>> {
        self.inner.get_dead_letter(queue, id)
    }
    fn delete_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, bool> {
        self.inner.delete_dead_letter(queue, id)
    }
    fn purge_dead_letters(&self, queue: &str) -> CarrierFuture<'_, u64> {
        self.inner.purge_dead_letters(queue)
    }
    fn stats(&self, queue: &str) -> CarrierFuture<'_, QueueStats> {
        self.inner.stats(queue)
    }
}

/// Three result writes that each stall past the visibility timeout and then fail: the task
/// still completes from its first delivery, with one handler run and one attempt.
pub async fn result_write_outage_keeps_the_delivery(h: &DurableHarness) {
    let client = client(h, VIS).await;
    let stalling = StallingResults {
        inner: h.carrier().await,
        failures: AtomicU32::new(3),
        stall: VIS + VIS / 2,
    };
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let worker = Worker::new(Arc::new(stalling), QUEUE)
        .options(worker_options(VIS))
        .handle("Echo", move |_ctx, s: String| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok(format!("echo {s}")) }
        })
        .start()
        .await
        .expect("worker");
    let task = client
        .enqueue::<_, String>("Echo", &"x".to_string(), Default::default())
        .await
        .expect("enqueue");
    let out = task.wait(PATIENCE).await.expect("the task's result");
    assert_eq!(out, "echo x");
    let stored = client
        .result(task.id())
        .await
        .expect("fetch the result")
        .expect("a stored result");
    let stats = worker.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran again");
    assert_eq!(stored.attempts, 1, "a lost write was charged an attempt");
    assert_eq!(stats.redeliveries, 0, "the delivery timed out while held");
    // What was stored is the handler's answer, not an "aborted" verdict.
    assert!(stored.error_code.is_empty(), "{stored:?}");
}
