//! The carrier trait: what a broker must provide for durable calls (the contract is on [`Carrier`]).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::error::CarrierError;
use super::stats::QueueStats;

/// The future of a carrier operation.
pub type CarrierFuture<'a, T> = BoxFuture<'a, Result<T, CarrierError>>;

/// Per-queue settings, applied when a client or worker opens the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueConfig {
    /// How long a fetched task stays invisible without a heartbeat before it is redelivered.
    pub visibility_timeout: Duration,
    /// How long idempotency keys are remembered.
    pub dedup_window: Duration,
    /// The longest result TTL (carriers that keep results per bucket use it for the bucket).
    pub result_ttl: Duration,
}

impl QueueConfig {
    /// Sets [`visibility_timeout`](Self::visibility_timeout).
    pub fn visibility_timeout(mut self, visibility_timeout: Duration) -> Self {
        self.visibility_timeout = visibility_timeout;
        self
    }

    /// Sets [`dedup_window`](Self::dedup_window).
    pub fn dedup_window(mut self, dedup_window: Duration) -> Self {
        self.dedup_window = dedup_window;
        self
    }

    /// Sets [`result_ttl`](Self::result_ttl).
    pub fn result_ttl(mut self, result_ttl: Duration) -> Self {
        self.result_ttl = result_ttl;
        self
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            visibility_timeout: Duration::from_secs(30),
            dedup_window: Duration::from_secs(120),
            result_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// A task to enqueue.
#[derive(Clone, Debug)]
pub struct NewTask {
    /// The task ID.
    pub task_id: String,
    /// The encoded task.
    pub body: Bytes,
    /// Deduplicate by task ID within the queue's dedup window (set when the caller gave an
    /// idempotency key).
    pub dedup: bool,
}

/// What enqueue did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The task ID.
    pub task_id: String,
    /// True when the task ID was seen within the dedup window and nothing new was stored.
    pub duplicate: bool,
}

/// A carrier's handle on one delivery (what it needs to ack it), opaque to workers.
#[derive(Clone)]
pub struct Receipt(Arc<dyn Any + Send + Sync>);

impl Receipt {
    /// Wraps a carrier-specific value.
    pub fn new(value: impl Any + Send + Sync) -> Self {
        Receipt(Arc::new(value))
    }

    /// The carrier-specific value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

/// One delivery of a task to a worker.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The carrier's ID of the message (a stream sequence or entry ID).
    pub message_id: String,
    /// The task bytes as stored (normally a [`TaskEnvelope`](super::TaskEnvelope)).
    pub body: Bytes,
    /// Which attempt this is, from 1, counting every earlier delivery.
    pub attempt: u32,
    /// How the carrier finds the message again.
    pub receipt: Receipt,
}

/// A stored dead letter and its ID in the carrier.
#[derive(Clone, Debug)]
pub struct StoredDeadLetter {
    /// The carrier's ID of the dead letter.
    pub id: String,
    /// The encoded [`DeadLetter`](super::DeadLetter).
    pub body: Bytes,
}

/// A broker that stores durable tasks.
///
/// A carrier stores tasks, hands them to workers with a visibility timeout, takes them back on
/// ack, retry or hand-back, stores results with a time to live and keeps dead letters. Tasks,
/// results and dead letters are opaque bytes to it (encoded [`TaskEnvelope`](super::TaskEnvelope),
/// [`TaskResult`](super::TaskResult) and [`DeadLetter`](super::DeadLetter) records), so a
/// carrier never fails on bad input: it moves bytes.
///
/// The trait is object safe (`Arc<dyn Carrier>`); a third party implements it for another
/// broker and passes it to [`DurableClient`](super::DurableClient) and
/// [`Worker`](super::Worker). Its contract:
///
/// - `enqueue` resolves only once the task is persisted;
/// - a fetched task is invisible to other fetches until acked, retried, released or
///   dead-lettered, or until the visibility timeout passes without a heartbeat; then it is
///   delivered again with a higher [`Delivery::attempt`];
/// - `put_result` before `ack` is how workers avoid running a task twice; results expire
///   after their TTL;
/// - `record_effect` (optional: the default says the carrier has none) is an atomic
///   create-if-absent, so two attempts of one task never both record the same effect (see
///   [`TaskContext::record_effect`](super::TaskContext::record_effect)).
///
/// # Cancel safety
/// Dropping an operation's future may leave it done or not done (as with any request to a
/// broker); none leaves the carrier unusable, and a task is never lost by it: an unacked task
/// comes back after the visibility timeout.
pub trait Carrier: Send + Sync + 'static {
    /// The largest encoded task accepted.
    fn max_task_bytes(&self) -> usize;

    /// Creates what the queue needs (idempotent).
    fn open(&self, queue: &str, config: &QueueConfig) -> CarrierFuture<'_, ()>;

    /// Persists a task; resolves once the broker has stored it.
    fn enqueue(&self, queue: &str, task: NewTask) -> CarrierFuture<'_, Enqueued>;

    /// Takes up to `max` tasks, waiting up to `wait` for the first.
    fn fetch(&self, queue: &str, max: usize, wait: Duration) -> CarrierFuture<'_, Vec<Delivery>>;

    /// Tells the carrier that this process's workers of `queue` stopped fetching (graceful
    /// shutdown), so it can hand back what it took ahead of them. The default does nothing,
    /// right for carriers that only take tasks inside [`fetch`](Carrier::fetch).
    fn stop_fetching(&self, queue: &str) -> CarrierFuture<'_, ()> {
        let _ = queue;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Removes a processed task.
    fn ack(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()>;

    /// Makes a failed task visible again after `delay` (the next delivery is the next attempt).
    fn retry(&self, queue: &str, delivery: &Delivery, delay: Duration) -> CarrierFuture<'_, ()>;

    /// Hands a task back for immediate redelivery (graceful shutdown).
    fn release(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()>;

    /// Extends the task's visibility timeout: its handler is still running.
    fn heartbeat(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()>;

    /// Stores `letter` (an encoded [`DeadLetter`](super::DeadLetter)) and removes the task.
    ///
    /// Called again for the same delivered message (a worker died between storing the
    /// task's result and this), it must not store a second letter: carriers make the two
    /// steps atomic or deduplicate the letter by [`Delivery::message_id`].
    fn dead_letter(&self, queue: &str, delivery: &Delivery, letter: Bytes)
    -> CarrierFuture<'_, ()>;

    /// Stores an encoded [`TaskResult`](super::TaskResult) for `ttl`.
    fn put_result(
        &self,
        queue: &str,
        task_id: &str,
        result: Bytes,
        ttl: Duration,
    ) -> CarrierFuture<'_, ()>;

    /// The stored result of a task, if any.
    fn get_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, Option<Bytes>>;

    /// Forgets a task's result (before a replay).
    fn delete_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, ()>;

    /// Waits up to `timeout` for a task's result. The default polls [`get_result`]; carriers
    /// with notifications override it.
    ///
    /// [`get_result`]: Carrier::get_result
    fn wait_result<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        timeout: Duration,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut interval = Duration::from_millis(5);
            loop {
                if let Some(result) = self.get_result(queue, task_id).await? {
                    return Ok(Some(result));
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                tokio::time::sleep(interval.min(deadline - now)).await;
                interval = (interval * 2).min(Duration::from_millis(200));
            }
        })
    }

    /// Persists a task, then waits up to `timeout` for its result: an awaited call.
    ///
    /// The default is [`enqueue`](Carrier::enqueue) then [`wait_result`](Carrier::wait_result).
    /// Carriers with notifications override it to listen before the enqueue, so that a task
    /// with a fresh ID (no [`NewTask::dedup`]) needs no result read: nothing can have stored
    /// its result before it existed.
    fn enqueue_and_wait<'a>(
        &'a self,
        queue: &'a str,
        task: NewTask,
        timeout: Duration,
    ) -> CarrierFuture<'a, (Enqueued, Option<Bytes>)> {
        Box::pin(async move {
            let enqueued = self.enqueue(queue, task).await?;
            let result = self.wait_result(queue, &enqueued.task_id, timeout).await?;
            Ok((enqueued, result))
        })
    }

    /// Stores a task's result for `ttl`, then acks the delivery.
    ///
    /// The default is [`put_result`](Carrier::put_result) then [`ack`](Carrier::ack); a
    /// carrier may do both in one round trip. Calling it again after a failure is safe (the
    /// result is the same bytes, an ack of an acked delivery does nothing).
    fn complete<'a>(
        &'a self,
        queue: &'a str,
        delivery: &'a Delivery,
        task_id: &'a str,
        result: Bytes,
        ttl: Duration,
    ) -> CarrierFuture<'a, ()> {
        Box::pin(async move {
            self.put_result(queue, task_id, result, ttl).await?;
            self.ack(queue, delivery).await
        })
    }

    /// Records side effect `name` of task `task_id` with `value` for `ttl`, unless a record of
    /// it exists: `None` when this call recorded it, or the value an earlier call recorded. The
    /// check and the write must be one atomic step on the broker (JetStream KV create, Redis
    /// `SET NX`), so that of two racing attempts exactly one records the effect.
    ///
    /// The default (for carriers without it) fails with a carrier error; a carrier that
    /// implements it also implements [`get_effect`](Carrier::get_effect).
    fn record_effect<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        name: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        let _ = (queue, task_id, name, value, ttl);
        Box::pin(std::future::ready(Err(CarrierError::new(
            "record_effect",
            "this carrier keeps no effect records",
        ))))
    }

    /// The recorded value of side effect `name` of task `task_id`, if any.
    fn get_effect<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        name: &'a str,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        let _ = (queue, task_id, name);
        Box::pin(std::future::ready(Err(CarrierError::new(
            "get_effect",
            "this carrier keeps no effect records",
        ))))
    }

    /// Up to `limit` dead letters, oldest first, after the one with ID `after`.
    fn list_dead_letters<'a>(
        &'a self,
        queue: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> CarrierFuture<'a, Vec<StoredDeadLetter>>;

    /// One dead letter by ID.
    fn get_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, Option<Bytes>>;

    /// Removes one dead letter; false if there was none with that ID.
    fn delete_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, bool>;

    /// Removes every dead letter of the queue; returns how many.
    fn purge_dead_letters(&self, queue: &str) -> CarrierFuture<'_, u64>;

    /// Queue depth, in-flight count, dead letters and the age of the oldest waiting task.
    fn stats(&self, queue: &str) -> CarrierFuture<'_, QueueStats>;
}
