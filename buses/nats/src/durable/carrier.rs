//! The JetStream carrier: its handles, queue set-up, and the [`Carrier`] impl, which hands
//! each operation to the module of its concept (tasks, results, dead letters, stats).

use std::sync::Arc;
use std::time::Duration;

use super::notify::Waiters;
use super::tasks;
use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use dashmap::DashMap;
use psrpc::durable::{
    Carrier, CarrierError, CarrierFuture, Delivery, Enqueued, NewTask, QueueConfig, QueueStats,
    StoredDeadLetter,
};

/// Settings of a [`JetStreamCarrier`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JetStreamOptions {
    /// Room kept for headers and the envelope when comparing tasks with the server's
    /// `max_payload`.
    pub header_room: usize,
    /// Stream replicas (1 for a single server).
    pub replicas: usize,
}

impl JetStreamOptions {
    /// Sets [`header_room`](Self::header_room).
    pub fn header_room(mut self, header_room: usize) -> Self {
        self.header_room = header_room;
        self
    }

    /// Sets [`replicas`](Self::replicas).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            header_room: 1024,
            replicas: 1,
        }
    }
}

/// Durable tasks on NATS JetStream (see the [module docs](super)).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let carrier = psrpc_nats::durable::JetStreamCarrier::new(client);
/// let tasks = psrpc::durable::DurableClient::new(Arc::new(carrier), "Mailer").await?;
/// # let _ = tasks; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct JetStreamCarrier {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) options: JetStreamOptions,
    pub(super) queues: DashMap<String, Arc<Opened>>,
    /// Waiters for results, fed by one wildcard subscription per queue.
    pub(super) waiters: Arc<Waiters>,
}

/// The handles of an opened queue.
pub(super) struct Opened {
    config: QueueConfig,
    pub(super) tasks: stream::Stream,
    pub(super) dead: stream::Stream,
    pub(super) results: kv::Store,
    consumer: tokio::sync::OnceCell<consumer::PullConsumer>,
    /// The continuous pull of this carrier's workers (made by the first fetch).
    pub(super) pull: tokio::sync::Mutex<Option<consumer::pull::Stream>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(super) fn sanitize(queue: &str) -> String {
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

pub(super) fn fail(op: &'static str) -> impl Fn(String) -> CarrierError {
    move |msg| CarrierError::new(op, msg)
}

pub(super) const CONSUMER: &str = "workers";

impl JetStreamCarrier {
    /// A carrier on this connection with default options.
    pub fn new(client: async_nats::Client) -> Self {
        Self::with_options(client, JetStreamOptions::default())
    }

    /// A carrier on this connection.
    pub fn with_options(client: async_nats::Client, options: JetStreamOptions) -> Self {
        JetStreamCarrier {
            inner: Arc::new(Inner {
                js: jetstream::new(client.clone()),
                client,
                options,
                queues: DashMap::new(),
                waiters: Arc::default(),
            }),
        }
    }

    /// Connects to `url` and makes a carrier.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn connect(url: &str) -> Result<Self, CarrierError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| CarrierError::from_source("connect", e))?;
        Ok(Self::new(client))
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    pub(super) async fn opened(&self, queue: &str) -> Result<Arc<Opened>, CarrierError> {
        if let Some(q) = self.inner.queues.get(queue) {
            return Ok(q.clone());
        }
        // Boxed: opening is the cold path, and its stream and bucket requests make a ~10 KiB
        // future that would otherwise sit inside (and be copied with) every hot-path future
        // awaiting this one.
        Box::pin(self.open_queue(queue, &QueueConfig::default())).await
    }

    async fn open_queue(
        &self,
        queue: &str,
        config: &QueueConfig,
    ) -> Result<Arc<Opened>, CarrierError> {
        let name = sanitize(queue);
        let js = &self.inner.js;
        let replicas = self.inner.options.replicas;
        let err = fail("open");
        let tasks = js
            .get_or_create_stream(stream::Config {
                name: format!("PSRPC_DQ_{name}"),
                subjects: vec![format!("psrpc.dq.{name}")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: config.dedup_window,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        let dead = js
            .get_or_create_stream(stream::Config {
                name: format!("PSRPC_DLQ_{name}"),
                subjects: vec![format!("psrpc.dlq.{name}")],
                storage: stream::StorageType::File,
                duplicate_window: config.dedup_window,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        let bucket = format!("PSRPC_DR_{name}");
        let results = match js.get_key_value(&bucket).await {
            Ok(store) => store,
            Err(_) => {
                // The bucket's stream, made as `create_key_value` would make it: that call
                // first asks for account info, whose reply nats-server 2.9 shapes differently
                // from what the client expects.
                js.get_or_create_stream(stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    max_age: config.result_ttl,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: stream::DiscardPolicy::New,
                    max_messages: -1,
                    max_bytes: -1,
                    max_message_size: -1,
                    ..Default::default()
                })
                .await
                .map_err(|e| err(e.to_string()))?;
                js.get_key_value(&bucket)
                    .await
                    .map_err(|e| err(e.to_string()))?
            }
        };
        let opened = Arc::new(Opened {
            config: config.clone(),
            tasks,
            dead,
            results,
            consumer: tokio::sync::OnceCell::new(),
            pull: tokio::sync::Mutex::new(None),
        });
        self.inner.queues.insert(queue.to_owned(), opened.clone());
        Ok(opened)
    }

    pub(super) async fn consumer(
        &self,
        q: &Opened,
    ) -> Result<consumer::PullConsumer, CarrierError> {
        q.consumer
            .get_or_try_init(|| async {
                // Created (or updated) by the first fetch, so only workers set the AckWait.
                q.tasks
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some(CONSUMER.into()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: q.config.visibility_timeout,
                        max_deliver: -1,
                        max_ack_pending: -1,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| CarrierError::new("fetch", e.to_string()))
            })
            .await
            .cloned()
    }

    pub(super) fn task_subject(queue: &str) -> String {
        format!("psrpc.dq.{}", sanitize(queue))
    }

    pub(super) fn done_subject(queue: &str, task_id: &str) -> String {
        format!("psrpc.dqdone.{}.{task_id}", sanitize(queue))
    }
}

impl Carrier for JetStreamCarrier {
    fn max_task_bytes(&self) -> usize {
        self.inner
            .client
            .server_info()
            .max_payload
            .saturating_sub(self.inner.options.header_room)
    }

    fn open(&self, queue: &str, config: &QueueConfig) -> CarrierFuture<'_, ()> {
        let (queue, config) = (queue.to_owned(), config.clone());
        Box::pin(async move { self.open_queue(&queue, &config).await.map(drop) })
    }

    fn enqueue(&self, queue: &str, task: NewTask) -> CarrierFuture<'_, Enqueued> {
        let queue = queue.to_owned();
        Box::pin(async move { self.enqueue_task(&queue, task).await })
    }

    fn fetch(&self, queue: &str, max: usize, wait: Duration) -> CarrierFuture<'_, Vec<Delivery>> {
        let queue = queue.to_owned();
        Box::pin(async move { self.fetch_tasks(&queue, max, wait).await })
    }

    fn stop_fetching(&self, queue: &str) -> CarrierFuture<'_, ()> {
        let queue = queue.to_owned();
        Box::pin(async move { self.end_pull(&queue).await })
    }

    fn ack(&self, _queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let delivery = delivery.clone();
        Box::pin(async move { tasks::ack(&delivery).await })
    }

    fn retry(&self, _queue: &str, delivery: &Delivery, delay: Duration) -> CarrierFuture<'_, ()> {
        let delivery = delivery.clone();
        Box::pin(async move { tasks::retry(&delivery, delay).await })
    }

    fn release(&self, _queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let delivery = delivery.clone();
        Box::pin(async move { tasks::release(&delivery).await })
    }

    fn heartbeat(&self, _queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let delivery = delivery.clone();
        Box::pin(async move { tasks::heartbeat(&delivery).await })
    }

    fn dead_letter(
        &self,
        queue: &str,
        delivery: &Delivery,
        letter: Bytes,
    ) -> CarrierFuture<'_, ()> {
        let (queue, delivery) = (queue.to_owned(), delivery.clone());
        Box::pin(async move { self.dead_letter_task(&queue, &delivery, letter).await })
    }

    fn put_result(
        &self,
        queue: &str,
        task_id: &str,
        result: Bytes,
        _ttl: Duration,
    ) -> CarrierFuture<'_, ()> {
        let (queue, task_id) = (queue.to_owned(), task_id.to_owned());
        Box::pin(async move { self.store_result(&queue, &task_id, result).await })
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
            // Listening before the enqueue (the queue's subscription went out on the same
            // connection first): a fresh task's result can only come after it, so the
            // bucket is not read first; a deduplicated task may have finished long ago.
            // A failed enqueue drops the waiter, which unregisters it.
            let wait = self.listen_result(queue, &task.task_id).await?;
            let read_first = task.dedup;
            let enqueued = self.enqueue_task(queue, task).await?;
            let result = wait
                .wait(timeout, read_first, || {
                    self.read_result(queue, &enqueued.task_id)
                })
                .await?;
            Ok((enqueued, result))
        })
    }

    fn record_effect<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        name: &'a str,
        value: Bytes,
        _ttl: Duration,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        Box::pin(self.create_effect(queue, task_id, name, value))
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
        let queue = queue.to_owned();
        Box::pin(async move { self.queue_stats(&queue).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-task futures stay small: each is moved (copied) when boxed or awaited, and
    /// inlining a cold path (opening a queue, creating the consumer, subscribing to results)
    /// once made every one of them about 10 KiB, 14 % of a worker's CPU in `memmove`.
    #[tokio::test]
    async fn hot_path_futures_stay_small() {
        // Never connects: the futures are measured, not run.
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("127.0.0.1:1")
            .await
            .expect("a client that connects in the background");
        let c = JetStreamCarrier::new(client);
        let task = || NewTask {
            task_id: "t".into(),
            body: Bytes::new(),
            dedup: false,
        };
        let wait = Duration::from_secs(1);
        let sizes = [
            ("opened", std::mem::size_of_val(&c.opened("q"))),
            (
                "fetch_tasks",
                std::mem::size_of_val(&c.fetch_tasks("q", 1, wait)),
            ),
            (
                "listen_result",
                std::mem::size_of_val(&c.listen_result("q", "t")),
            ),
            (
                "store_result",
                std::mem::size_of_val(&c.store_result("q", "t", Bytes::new())),
            ),
            (
                "enqueue_task",
                std::mem::size_of_val(&c.enqueue_task("q", task())),
            ),
            (
                "read_result",
                std::mem::size_of_val(&c.read_result("q", "t")),
            ),
            (
                "enqueue_and_wait",
                std::mem::size_of_val(&*c.enqueue_and_wait("q", task(), wait)),
            ),
        ];
        for (name, size) in sizes {
            assert!(size <= 4096, "{name}: {size} bytes");
        }
        assert!(
            sizes[0].1 <= 256 && sizes[1].1 <= 1024 && sizes[2].1 <= 512,
            "{sizes:?}"
        );
    }
}
