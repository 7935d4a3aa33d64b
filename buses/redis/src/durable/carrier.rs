//! The Redis Streams carrier: connections, keys, and the [`Carrier`] impl; fetching, results,
//! dead letters and statistics are in submodules.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use psrpc::durable::{
    Carrier, CarrierError, CarrierFuture, Delivery, Enqueued, NewTask, QueueConfig, QueueStats,
    ResultWaiters, StoredDeadLetter,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamId;

mod dead_letters;
mod fetch;
mod results;
mod stats;

use super::scripts;

const GROUP: &str = "workers";

/// Settings of a [`RedisStreamsCarrier`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisStreamsOptions {
    /// The largest encoded task accepted.
    pub max_task_bytes: usize,
}

impl RedisStreamsOptions {
    /// Sets [`max_task_bytes`](Self::max_task_bytes).
    pub fn max_task_bytes(mut self, max_task_bytes: usize) -> Self {
        self.max_task_bytes = max_task_bytes;
        self
    }
}

impl Default for RedisStreamsOptions {
    fn default() -> Self {
        RedisStreamsOptions {
            max_task_bytes: 1 << 20,
        }
    }
}

/// Durable tasks on Redis Streams (see the [module docs](super)).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// let carrier = psrpc_redis::durable::RedisStreamsCarrier::connect("redis://127.0.0.1:6379/").await?;
/// let tasks = psrpc::durable::DurableClient::new(Arc::new(carrier), "Mailer").await?;
/// # let _ = tasks; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStreamsCarrier {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    /// Connections for blocking reads, which must not hold up the shared connection.
    blocking: std::sync::Mutex<Vec<ConnectionManager>>,
    consumer: String,
    options: RedisStreamsOptions,
    configs: DashMap<String, QueueConfig>,
    waiters: Arc<ResultWaiters>,
    listening: std::sync::Once,
    /// When each queue last had its due retries promoted and expired leases claimed.
    upkeep: DashMap<String, std::time::Instant>,
}

impl std::fmt::Debug for RedisStreamsCarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamsCarrier")
            .field("consumer", &self.inner.consumer)
            .finish_non_exhaustive()
    }
}

/// A delivery's entry ID and the attempts before it.
#[derive(Debug)]
struct RedisReceipt {
    id: String,
}

fn fail(op: &'static str) -> impl Fn(redis::RedisError) -> CarrierError {
    move |e| CarrierError::from_source(op, e)
}

struct Keys {
    stream: String,
    delayed: String,
    held: String,
    dead: String,
    done: String,
}

fn sanitize(queue: &str) -> String {
    queue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn keys(queue: &str) -> Keys {
    let q = sanitize(queue);
    Keys {
        stream: format!("psrpc:dq:{{{q}}}"),
        delayed: format!("psrpc:dq:{{{q}}}:delayed"),
        held: format!("psrpc:dq:{{{q}}}:held"),
        dead: format!("psrpc:dlq:{{{q}}}"),
        done: format!("psrpc:dqdone:{{{q}}}"),
    }
}

fn result_key(queue: &str, task_id: &str) -> String {
    format!("psrpc:dr:{{{}}}:{task_id}", sanitize(queue))
}

fn dedup_key(queue: &str, task_id: &str) -> String {
    format!("psrpc:dqk:{{{}}}:{task_id}", sanitize(queue))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn field_bytes(entry: &StreamId, field: &str) -> Bytes {
    entry
        .map
        .get(field)
        .and_then(|v| redis::from_redis_value::<Vec<u8>>(v.clone()).ok())
        .map(Bytes::from)
        .unwrap_or_default()
}

fn field_u32(entry: &StreamId, field: &str) -> u32 {
    entry
        .map
        .get(field)
        .and_then(|v| redis::from_redis_value::<u32>(v.clone()).ok())
        .unwrap_or(0)
}

fn is_error_code(err: &redis::RedisError, code: &str) -> bool {
    err.code() == Some(code) || err.to_string().contains(code)
}

impl RedisStreamsCarrier {
    /// Connects to `url` with default options.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn connect(url: &str) -> Result<Self, CarrierError> {
        Self::connect_with(url, RedisStreamsOptions::default()).await
    }

    /// Connects to `url`.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn connect_with(
        url: &str,
        options: RedisStreamsOptions,
    ) -> Result<Self, CarrierError> {
        let client = redis::Client::open(url).map_err(fail("connect"))?;
        let conn = client
            .get_connection_manager_with_config(Self::manager_config(Duration::from_secs(5)))
            .await
            .map_err(fail("connect"))?;
        Ok(RedisStreamsCarrier {
            inner: Arc::new(Inner {
                client,
                conn,
                blocking: std::sync::Mutex::new(Vec::new()),
                consumer: psrpc::wire::new_id("dqc_"),
                options,
                configs: DashMap::new(),
                waiters: Arc::default(),
                listening: std::sync::Once::new(),
                upkeep: DashMap::new(),
            }),
        })
    }

    fn manager_config(response: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_response_timeout(Some(response))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_millis(500))
    }

    /// This carrier's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.inner.consumer
    }

    fn config(&self, queue: &str) -> QueueConfig {
        self.inner
            .configs
            .get(queue)
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    async fn ensure_group(&self, stream: &str) -> Result<(), CarrierError> {
        let mut conn = self.inner.conn.clone();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if is_error_code(&e, "BUSYGROUP") => Ok(()),
            Err(e) => Err(CarrierError::from_source("open", e)),
        }
    }

    async fn blocking_conn(&self) -> Result<ConnectionManager, CarrierError> {
        let pooled = self
            .inner
            .blocking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        match pooled {
            Some(c) => Ok(c),
            None => self
                .inner
                .client
                .get_connection_manager_with_config(Self::manager_config(Duration::from_secs(30)))
                .await
                .map_err(fail("fetch")),
        }
    }
}

fn receipt(delivery: &Delivery) -> Result<&str, CarrierError> {
    delivery
        .receipt
        .get::<RedisReceipt>()
        .map(|r| r.id.as_str())
        .ok_or_else(|| CarrierError::new("receipt", "not a delivery of the Redis Streams carrier"))
}

impl Carrier for RedisStreamsCarrier {
    fn max_task_bytes(&self) -> usize {
        self.inner.options.max_task_bytes
    }

    fn open(&self, queue: &str, config: &QueueConfig) -> CarrierFuture<'_, ()> {
        self.inner.configs.insert(queue.to_owned(), config.clone());
        let stream = keys(queue).stream;
        Box::pin(async move { self.ensure_group(&stream).await })
    }

    fn enqueue(&self, queue: &str, task: NewTask) -> CarrierFuture<'_, Enqueued> {
        let k = keys(queue);
        let dedup = dedup_key(queue, &task.task_id);
        let window = millis(self.config(queue).dedup_window);
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            if !task.dedup {
                // Nothing to check: a bare `XADD`, not the script (whose call costs the
                // server a script invocation per task).
                redis::cmd("XADD")
                    .arg(&k.stream)
                    .arg("*")
                    .arg("task")
                    .arg(task.body.as_ref())
                    .arg("prior")
                    .arg("0")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(fail("enqueue"))?;
                return Ok(Enqueued {
                    task_id: task.task_id,
                    duplicate: false,
                });
            }
            let added: i64 = scripts::ENQUEUE
                .key(&k.stream)
                .key(&dedup)
                .arg(task.body.as_ref())
                .arg(if task.dedup { "1" } else { "0" })
                .arg(window)
                .invoke_async(&mut conn)
                .await
                .map_err(fail("enqueue"))?;
            Ok(Enqueued {
                task_id: task.task_id,
                duplicate: added == 0,
            })
        })
    }

    fn fetch(&self, queue: &str, max: usize, wait: Duration) -> CarrierFuture<'_, Vec<Delivery>> {
        let queue = queue.to_owned();
        Box::pin(async move { self.fetch_inner(&queue, max.max(1), wait).await })
    }

    fn ack(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let stream = keys(queue).stream;
        let id = receipt(delivery).map(str::to_owned);
        Box::pin(async move {
            let id = id?;
            let mut conn = self.inner.conn.clone();
            redis::pipe()
                .atomic()
                .cmd("XACK")
                .arg(&stream)
                .arg(GROUP)
                .arg(&id)
                .ignore()
                .cmd("XDEL")
                .arg(&stream)
                .arg(&id)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(fail("ack"))
        })
    }

    fn retry(&self, queue: &str, delivery: &Delivery, delay: Duration) -> CarrierFuture<'_, ()> {
        let (queue, delivery) = (queue.to_owned(), delivery.clone());
        Box::pin(async move {
            let prior = delivery.attempt;
            self.requeue(
                &queue,
                &delivery,
                delay.max(Duration::from_millis(1)),
                prior,
                "retry",
            )
            .await
        })
    }

    fn release(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let (queue, delivery) = (queue.to_owned(), delivery.clone());
        // A hand-back is not an attempt: the next delivery has the same number.
        Box::pin(async move {
            let prior = delivery.attempt.saturating_sub(1);
            self.requeue(&queue, &delivery, Duration::ZERO, prior, "release")
                .await
        })
    }

    fn heartbeat(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let stream = keys(queue).stream;
        let id = receipt(delivery).map(str::to_owned);
        Box::pin(async move {
            let id = id?;
            let mut conn = self.inner.conn.clone();
            let _: i64 = scripts::HEARTBEAT
                .key(&stream)
                .arg(&id)
                .arg(GROUP)
                .arg(&self.inner.consumer)
                .invoke_async(&mut conn)
                .await
                .map_err(fail("heartbeat"))?;
            Ok(())
        })
    }

    fn dead_letter(
        &self,
        queue: &str,
        delivery: &Delivery,
        letter: Bytes,
    ) -> CarrierFuture<'_, ()> {
        let k = keys(queue);
        let id = receipt(delivery).map(str::to_owned);
        Box::pin(async move {
            let id = id?;
            let mut conn = self.inner.conn.clone();
            let _: i64 = scripts::DEAD_LETTER
                .key(&k.stream)
                .key(&k.dead)
                .arg(&id)
                .arg(GROUP)
                .arg(&self.inner.consumer)
                .arg(letter.as_ref())
                .invoke_async(&mut conn)
                .await
                .map_err(fail("dead_letter"))?;
            Ok(())
        })
    }

    fn put_result(
        &self,
        queue: &str,
        task_id: &str,
        result: Bytes,
        ttl: Duration,
    ) -> CarrierFuture<'_, ()> {
        let (queue, task_id) = (queue.to_owned(), task_id.to_owned());
        Box::pin(async move { self.store_result(&queue, &task_id, result, ttl).await })
    }

    fn get_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, Option<Bytes>> {
        let (queue, task_id) = (queue.to_owned(), task_id.to_owned());
        Box::pin(async move { self.read_result(&queue, &task_id).await })
    }

    fn delete_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, ()> {
        let (queue, task_id) = (queue.to_owned(), task_id.to_owned());
        Box::pin(async move { self.forget_result(&queue, &task_id).await })
    }

    fn wait_result<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        timeout: Duration,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        Box::pin(self.await_result(queue, task_id, timeout))
    }

    fn enqueue_and_wait<'a>(
        &'a self,
        queue: &'a str,
        task: NewTask,
        timeout: Duration,
    ) -> CarrierFuture<'a, (Enqueued, Option<Bytes>)> {
        Box::pin(async move {
            // The waiter is registered before the enqueue, so a fresh task's announcement
            // finds it and no first read is needed; a deduplicated task may be long done.
            // A failed enqueue drops the waiter, which unregisters it.
            let wait = self.listen_result(queue, &task.task_id);
            let read_first = task.dedup;
            let enqueued = self.enqueue(queue, task).await?;
            let result = wait
                .wait(timeout, read_first, || {
                    self.read_result(queue, &enqueued.task_id)
                })
                .await?;
            Ok((enqueued, result))
        })
    }

    fn complete<'a>(
        &'a self,
        queue: &'a str,
        delivery: &'a Delivery,
        task_id: &'a str,
        result: Bytes,
        ttl: Duration,
    ) -> CarrierFuture<'a, ()> {
        Box::pin(async move {
            let id = receipt(delivery)?;
            self.store_and_ack(queue, id, task_id, result, ttl).await
        })
    }

    fn record_effect<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        name: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        Box::pin(self.create_effect(queue, task_id, name, value, ttl))
    }

    fn get_effect<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        name: &'a str,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        Box::pin(self.read_effect(queue, task_id, name))
    }

    fn list_dead_letters<'a>(
        &'a self,
        queue: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> CarrierFuture<'a, Vec<StoredDeadLetter>> {
        Box::pin(self.list_letters(queue, after, limit))
    }

    fn get_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, Option<Bytes>> {
        let (queue, id) = (queue.to_owned(), id.to_owned());
        Box::pin(async move { self.read_letter(&queue, &id).await })
    }

    fn delete_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, bool> {
        let (queue, id) = (queue.to_owned(), id.to_owned());
        Box::pin(async move { self.remove_letter(&queue, &id).await })
    }

    fn purge_dead_letters(&self, queue: &str) -> CarrierFuture<'_, u64> {
        let queue = queue.to_owned();
        Box::pin(async move { self.purge_letters(&queue).await })
    }

    fn stats(&self, queue: &str) -> CarrierFuture<'_, QueueStats> {
        let k = keys(queue);
        Box::pin(async move { self.stats_inner(k).await })
    }
}
