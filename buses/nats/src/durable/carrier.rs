//! The JetStream carrier.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use psrpc::durable::{
    Carrier, CarrierError, CarrierFuture, Delivery, Enqueued, NewTask, QueueConfig, QueueStats,
    Receipt, StoredDeadLetter,
};

/// Settings of a [`JetStreamCarrier`].
#[derive(Clone, Debug)]
pub struct JetStreamOptions {
    /// Room kept for headers and the envelope when comparing tasks with the server's
    /// `max_payload`.
    pub header_room: usize,
    /// Stream replicas (1 for a single server).
    pub replicas: usize,
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
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    options: JetStreamOptions,
    queues: DashMap<String, Arc<Opened>>,
}

/// The handles of an opened queue.
#[derive(Debug)]
struct Opened {
    config: QueueConfig,
    tasks: stream::Stream,
    dead: stream::Stream,
    results: kv::Store,
    consumer: tokio::sync::OnceCell<consumer::PullConsumer>,
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

fn fail(op: &'static str) -> impl Fn(String) -> CarrierError {
    move |msg| CarrierError::new(op, msg)
}

const CONSUMER: &str = "workers";

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

    async fn opened(&self, queue: &str) -> Result<Arc<Opened>, CarrierError> {
        if let Some(q) = self.inner.queues.get(queue) {
            return Ok(q.clone());
        }
        self.open_queue(queue, &QueueConfig::default()).await
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
        });
        self.inner.queues.insert(queue.to_owned(), opened.clone());
        Ok(opened)
    }

    async fn consumer(&self, q: &Opened) -> Result<consumer::PullConsumer, CarrierError> {
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

    fn task_subject(queue: &str) -> String {
        format!("psrpc.dq.{}", sanitize(queue))
    }

    fn done_subject(queue: &str, task_id: &str) -> String {
        format!("psrpc.dqdone.{}.{task_id}", sanitize(queue))
    }
}

fn message(delivery: &Delivery) -> Result<&jetstream::Message, CarrierError> {
    delivery
        .receipt
        .get::<jetstream::Message>()
        .ok_or_else(|| CarrierError::new("receipt", "not a delivery of the JetStream carrier"))
}

fn to_delivery(msg: jetstream::Message) -> Delivery {
    let (seq, attempt) = msg
        .info()
        .map(|i| {
            (
                i.stream_sequence,
                u32::try_from(i.delivered).unwrap_or(u32::MAX),
            )
        })
        .unwrap_or((0, 1));
    Delivery {
        message_id: seq.to_string(),
        body: msg.message.payload.clone(),
        attempt: attempt.max(1),
        receipt: Receipt::new(msg),
    }
}

async fn reply(delivery: &Delivery, kind: AckKind, op: &'static str) -> Result<(), CarrierError> {
    message(delivery)?
        .ack_with(kind)
        .await
        .map_err(|e| CarrierError::new(op, e.to_string()))
}

/// A result key: task IDs are `[A-Za-z0-9_]`, valid KV keys; anything else is hex-encoded.
fn result_key(task_id: &str) -> String {
    if !task_id.is_empty()
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        task_id.to_owned()
    } else {
        task_id.bytes().map(|b| format!("{b:02x}")).collect()
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
        Box::pin(async move {
            self.opened(&queue).await?;
            let err = fail("enqueue");
            let mut headers = HeaderMap::new();
            if task.dedup {
                headers.insert("Nats-Msg-Id", task.task_id.as_str());
            }
            let ack = self
                .inner
                .js
                .publish_with_headers(Self::task_subject(&queue), headers, task.body)
                .await
                .map_err(|e| err(e.to_string()))?
                .await
                .map_err(|e| err(e.to_string()))?;
            Ok(Enqueued {
                task_id: task.task_id,
                duplicate: ack.duplicate,
            })
        })
    }

    fn fetch(&self, queue: &str, max: usize, wait: Duration) -> CarrierFuture<'_, Vec<Delivery>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let q = self.opened(&queue).await?;
            let consumer = self.consumer(&q).await?;
            let err = fail("fetch");
            let mut out = Vec::new();
            // What is there now, without waiting.
            let mut now = consumer
                .fetch()
                .max_messages(max)
                .messages()
                .await
                .map_err(|e| err(e.to_string()))?;
            while let Some(msg) = now.next().await {
                out.push(to_delivery(msg.map_err(|e| err(e.to_string()))?));
            }
            if !out.is_empty() || wait.is_zero() {
                return Ok(out);
            }
            // Nothing: wait for one (a pull of one completes as soon as one arrives), then take
            // whatever else is ready.
            let mut one = consumer
                .batch()
                .max_messages(1)
                .expires(wait.max(Duration::from_millis(10)))
                .messages()
                .await
                .map_err(|e| err(e.to_string()))?;
            while let Some(msg) = one.next().await {
                out.push(to_delivery(msg.map_err(|e| err(e.to_string()))?));
            }
            if !out.is_empty() && max > 1 {
                let mut more = consumer
                    .fetch()
                    .max_messages(max - 1)
                    .messages()
                    .await
                    .map_err(|e| err(e.to_string()))?;
                while let Some(msg) = more.next().await {
                    out.push(to_delivery(msg.map_err(|e| err(e.to_string()))?));
                }
            }
            Ok(out)
        })
    }

    fn ack(&self, _queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let delivery = delivery.clone();
        Box::pin(async move {
            // Confirmed by the server: an ack lost in a broker crash would otherwise cost a
            // redelivery (harmless, the result check skips it, but avoidable).
            message(&delivery)?
                .double_ack()
                .await
                .map_err(|e| CarrierError::new("ack", e.to_string()))
        })
    }

    fn retry(&self, _queue: &str, delivery: &Delivery, delay: Duration) -> CarrierFuture<'_, ()> {
        let delivery = delivery.clone();
        Box::pin(async move { reply(&delivery, AckKind::Nak(Some(delay)), "retry").await })
    }

    fn release(&self, _queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let delivery = delivery.clone();
        Box::pin(async move { reply(&delivery, AckKind::Nak(None), "release").await })
    }

    fn heartbeat(&self, _queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let delivery = delivery.clone();
        Box::pin(async move { reply(&delivery, AckKind::Progress, "heartbeat").await })
    }

    fn dead_letter(
        &self,
        queue: &str,
        delivery: &Delivery,
        letter: Bytes,
    ) -> CarrierFuture<'_, ()> {
        let (queue, delivery) = (queue.to_owned(), delivery.clone());
        Box::pin(async move {
            self.opened(&queue).await?;
            let err = fail("dead_letter");
            // Persist the letter first: a crash before the Term only redelivers the task, and
            // the worker then writes the letter again, deduplicated by the task message's
            // stream sequence (the same in every redelivery).
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("dl-{}", delivery.message_id).as_str(),
            );
            self.inner
                .js
                .publish_with_headers(format!("psrpc.dlq.{}", sanitize(&queue)), headers, letter)
                .await
                .map_err(|e| err(e.to_string()))?
                .await
                .map_err(|e| err(e.to_string()))?;
            message(&delivery)?
                .double_ack_with(AckKind::Term)
                .await
                .map_err(|e| err(e.to_string()))
        })
    }

    fn put_result(
        &self,
        queue: &str,
        task_id: &str,
        result: Bytes,
        _ttl: Duration,
    ) -> CarrierFuture<'_, ()> {
        let (queue, task_id) = (queue.to_owned(), task_id.to_owned());
        Box::pin(async move {
            let q = self.opened(&queue).await?;
            q.results
                .put(result_key(&task_id), result)
                .await
                .map_err(|e| CarrierError::new("put_result", e.to_string()))?;
            // Best effort: waiters also re-read the bucket when their wait ends.
            let _ = self
                .inner
                .client
                .publish(Self::done_subject(&queue, &task_id), Bytes::new())
                .await;
            Ok(())
        })
    }

    fn get_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, Option<Bytes>> {
        let (queue, task_id) = (queue.to_owned(), task_id.to_owned());
        Box::pin(async move {
            let q = self.opened(&queue).await?;
            q.results
                .get(result_key(&task_id))
                .await
                .map_err(|e| CarrierError::new("get_result", e.to_string()))
        })
    }

    fn delete_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, ()> {
        let (queue, task_id) = (queue.to_owned(), task_id.to_owned());
        Box::pin(async move {
            let q = self.opened(&queue).await?;
            q.results
                .purge(result_key(&task_id))
                .await
                .map_err(|e| CarrierError::new("delete_result", e.to_string()))
        })
    }

    fn wait_result<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        timeout: Duration,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut done = self
                .inner
                .client
                .subscribe(Self::done_subject(queue, task_id))
                .await
                .map_err(|e| CarrierError::new("wait_result", e.to_string()))?;
            loop {
                if let Some(found) = self.get_result(queue, task_id).await? {
                    return Ok(Some(found));
                }
                // Re-read at least every second: a notification can be lost when a connection
                // drops, the bucket cannot.
                let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
                let _ = tokio::time::timeout_at(until, done.next()).await;
                if tokio::time::Instant::now() >= deadline {
                    return self.get_result(queue, task_id).await;
                }
            }
        })
    }

    fn list_dead_letters<'a>(
        &'a self,
        queue: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> CarrierFuture<'a, Vec<StoredDeadLetter>> {
        Box::pin(async move {
            let q = self.opened(queue).await?;
            let err = fail("list_dead_letters");
            let mut dead = q.dead.clone();
            let state = dead
                .info()
                .await
                .map_err(|e| err(e.to_string()))?
                .state
                .clone();
            let from = after
                .and_then(|a| a.parse::<u64>().ok())
                .map_or(state.first_sequence, |a| (a + 1).max(state.first_sequence));
            let mut out = Vec::new();
            let mut seq = from;
            while out.len() < limit && seq <= state.last_sequence && state.messages > 0 {
                // Deleted sequences (removed or replayed letters) are gaps: skip them.
                if let Ok(msg) = q.dead.get_raw_message(seq).await {
                    out.push(StoredDeadLetter {
                        id: seq.to_string(),
                        body: msg.payload,
                    });
                }
                seq += 1;
            }
            Ok(out)
        })
    }

    fn get_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, Option<Bytes>> {
        let (queue, id) = (queue.to_owned(), id.to_owned());
        Box::pin(async move {
            let q = self.opened(&queue).await?;
            let Ok(seq) = id.parse::<u64>() else {
                return Ok(None);
            };
            Ok(q.dead.get_raw_message(seq).await.ok().map(|m| m.payload))
        })
    }

    fn delete_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, bool> {
        let (queue, id) = (queue.to_owned(), id.to_owned());
        Box::pin(async move {
            let q = self.opened(&queue).await?;
            let Ok(seq) = id.parse::<u64>() else {
                return Ok(false);
            };
            Ok(q.dead.delete_message(seq).await.unwrap_or(false))
        })
    }

    fn purge_dead_letters(&self, queue: &str) -> CarrierFuture<'_, u64> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let q = self.opened(&queue).await?;
            let purged = q
                .dead
                .purge()
                .await
                .map_err(|e| CarrierError::new("purge_dead_letters", e.to_string()))?;
            Ok(purged.purged)
        })
    }

    fn stats(&self, queue: &str) -> CarrierFuture<'_, QueueStats> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let q = self.opened(&queue).await?;
            let err = fail("stats");
            let mut tasks = q.tasks.clone();
            let task_state = tasks
                .info()
                .await
                .map_err(|e| err(e.to_string()))?
                .state
                .clone();
            let mut dead = q.dead.clone();
            let dead_count = dead
                .info()
                .await
                .map_err(|e| err(e.to_string()))?
                .state
                .messages;
            let (waiting, in_flight, next_seq) = match q
                .tasks
                .get_consumer::<consumer::pull::Config>(CONSUMER)
                .await
            {
                Ok(mut c) => {
                    let info = c.info().await.map_err(|e| err(e.to_string()))?;
                    (
                        info.num_pending,
                        info.num_ack_pending as u64,
                        info.delivered.stream_sequence + 1,
                    )
                }
                // No worker has fetched yet: everything stored is waiting.
                Err(_) => (task_state.messages, 0, task_state.first_sequence),
            };
            let oldest_waiting_age = if waiting > 0 {
                let seq = next_seq.max(task_state.first_sequence);
                match q.tasks.get_raw_message(seq).await {
                    Ok(msg) => SystemTime::now()
                        .duration_since(
                            SystemTime::UNIX_EPOCH
                                + Duration::from_nanos(
                                    msg.time.unix_timestamp_nanos().max(0) as u64
                                ),
                        )
                        .ok(),
                    Err(_) => None,
                }
            } else {
                None
            };
            Ok(QueueStats {
                waiting,
                in_flight,
                dead_letters: dead_count,
                oldest_waiting_age,
            })
        })
    }
}
