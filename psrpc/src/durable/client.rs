//! Enqueueing tasks and getting their results.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use tracing::Instrument;

use super::carrier::{Carrier, NewTask, QueueConfig};
use super::error::DurableError;
use super::task::{TaskEnvelope, TaskOptions, TaskResult, new_task_id, task_id_for_key};
use crate::Metadata;
use crate::trace::TraceContext;

/// Per-enqueue settings: the task options (a method's defaults unless changed), a deadline,
/// an idempotency key and metadata.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct EnqueueOptions {
    /// Retry, result and dead-letter settings.
    pub task: TaskOptions,
    /// Tasks not done by then are dead-lettered, not run.
    pub deadline: Option<SystemTime>,
    /// Repeated enqueues with the same key (within the dedup window) are one task.
    pub idempotency_key: Option<String>,
    /// Metadata passed to the handler (the trace context is added automatically).
    pub metadata: Metadata,
}

impl EnqueueOptions {
    /// Options with these task defaults.
    pub fn with_task(task: TaskOptions) -> Self {
        EnqueueOptions {
            task,
            ..Default::default()
        }
    }

    /// Sets the idempotency key (at most 64 bytes).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the deadline.
    pub fn deadline(mut self, deadline: SystemTime) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets the deadline to `timeout` from now.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.deadline(SystemTime::now() + timeout)
    }

    /// Sets the attempt limit.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.task.max_attempts = attempts.max(1);
        self
    }

    /// Sets the retry backoff (first and longest delay).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.task.backoff_initial = initial;
        self.task.backoff_max = max;
        self
    }

    /// Adds one [`metadata`](Self::metadata) entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// Enqueues tasks on one queue and reads their results.
#[derive(Clone)]
pub struct DurableClient {
    carrier: Arc<dyn Carrier>,
    queue: Arc<str>,
}

impl std::fmt::Debug for DurableClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableClient")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl DurableClient {
    /// A client of `queue` (normally the service name), opening it with default settings.
    ///
    /// # Errors
    /// The carrier could not open the queue.
    pub async fn new(carrier: Arc<dyn Carrier>, queue: &str) -> Result<Self, DurableError> {
        Self::with_config(carrier, queue, &QueueConfig::default()).await
    }

    /// A client of `queue` opened with `config`.
    ///
    /// # Errors
    /// The carrier could not open the queue.
    pub async fn with_config(
        carrier: Arc<dyn Carrier>,
        queue: &str,
        config: &QueueConfig,
    ) -> Result<Self, DurableError> {
        carrier.open(queue, config).await?;
        Ok(DurableClient {
            carrier,
            queue: queue.into(),
        })
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The carrier.
    pub fn carrier(&self) -> &Arc<dyn Carrier> {
        &self.carrier
    }

    /// Enqueues a call of `method` with `request`; resolves once the carrier persisted it.
    ///
    /// # Errors
    /// [`DurableError::TooLarge`] for an oversized task, [`DurableError::InvalidArgument`] for
    /// an empty method or a bad idempotency key, or a carrier error.
    ///
    /// # Cancel safety
    /// If dropped, the task may or may not have been enqueued; with an idempotency key,
    /// enqueueing again is safe.
    pub async fn enqueue<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        request: &Req,
        options: EnqueueOptions,
    ) -> Result<TaskHandle<Resp>, DurableError> {
        let task_id = self
            .enqueue_raw(method, request.encode_to_vec().into(), options)
            .await?;
        Ok(self.handle(task_id))
    }

    /// Enqueues an already encoded request; returns the task ID.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub async fn enqueue_raw(
        &self,
        method: &str,
        payload: bytes::Bytes,
        options: EnqueueOptions,
    ) -> Result<String, DurableError> {
        let (task, span) = self.prepare(method, payload, options)?;
        let enqueued = self
            .carrier
            .enqueue(&self.queue, task)
            .instrument(span)
            .await?;
        Ok(enqueued.task_id)
    }

    /// The task to store for a call, and the enqueue's span.
    fn prepare(
        &self,
        method: &str,
        payload: bytes::Bytes,
        options: EnqueueOptions,
    ) -> Result<(NewTask, tracing::Span), DurableError> {
        if method.is_empty() {
            return Err(DurableError::InvalidArgument("empty method name".into()));
        }
        let (task_id, dedup) = match &options.idempotency_key {
            Some(key) => match task_id_for_key(key) {
                Some(id) => (id, true),
                None => {
                    return Err(DurableError::InvalidArgument(format!(
                        "idempotency key must be 1 to {} bytes",
                        super::task::MAX_IDEMPOTENCY_KEY
                    )));
                }
            },
            None => (new_task_id(), false),
        };
        let mut metadata: std::collections::HashMap<String, String> =
            options.metadata.into_iter().collect();
        // The enqueue is a span of the caller's trace (or starts one); the worker's span is its
        // child, which links processing to the enqueue.
        let trace = TraceContext::current()
            .map(|t| t.child())
            .unwrap_or_else(TraceContext::new_root);
        let mut trace_meta = Metadata::new();
        trace.inject(&mut trace_meta);
        metadata.extend(trace_meta);
        let task = options.task;
        let envelope = TaskEnvelope {
            task_id: task_id.clone(),
            method: method.to_owned(),
            payload,
            enqueued_at: crate::time::now_unix_nanos(),
            deadline: options.deadline.map_or(0, unix_nanos),
            max_attempts: task.max_attempts.max(1),
            backoff_initial_ms: millis(task.backoff_initial),
            backoff_max_ms: millis(task.backoff_max),
            result_ttl_ms: millis(task.result_ttl).max(1),
            no_dead_letter: !task.dead_letter,
            metadata,
            idempotency_key: options.idempotency_key.unwrap_or_default(),
        };
        let body = envelope.encode_to_vec();
        let limit = self.carrier.max_task_bytes();
        if body.len() > limit {
            return Err(DurableError::TooLarge {
                size: body.len(),
                limit,
            });
        }
        let span = tracing::debug_span!("durable.enqueue", queue = %self.queue, method, task_id = %task_id, trace_id = %trace.trace_id());
        let task = NewTask {
            task_id,
            body: body.into(),
            dedup,
        };
        Ok((task, span))
    }

    /// A handle on an existing task, by ID.
    pub fn handle<Resp: Message + Default>(&self, task_id: String) -> TaskHandle<Resp> {
        TaskHandle {
            client: self.clone(),
            task_id,
            _resp: PhantomData,
        }
    }

    /// Enqueues and waits up to `timeout` for the result.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue) and [`TaskHandle::wait`].
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        request: &Req,
        options: EnqueueOptions,
        timeout: Duration,
    ) -> Result<Resp, DurableError> {
        let (task, span) = self.prepare(method, request.encode_to_vec().into(), options)?;
        // One carrier step: carriers with notifications listen before the enqueue, which
        // spares a fresh task the result read (see `Carrier::enqueue_and_wait`).
        let (_, result) = self
            .carrier
            .enqueue_and_wait(&self.queue, task, timeout)
            .instrument(span)
            .await?;
        decode_outcome(&TaskResult::decode(result.ok_or(DurableError::Timeout)?)?)
    }

    /// The stored result of task `task_id`, if it has finished (and its result is still kept).
    ///
    /// # Errors
    /// A carrier error, or a result that does not decode.
    pub async fn result(&self, task_id: &str) -> Result<Option<TaskResult>, DurableError> {
        match self.carrier.get_result(&self.queue, task_id).await? {
            Some(bytes) => Ok(Some(TaskResult::decode(bytes)?)),
            None => Ok(None),
        }
    }

    /// The value task `task_id` recorded for side effect `name` with
    /// [`TaskContext::record_effect`](super::TaskContext::record_effect), if it did (and the
    /// record is still kept).
    ///
    /// # Errors
    /// [`DurableError::InvalidArgument`] for a name outside `[A-Za-z0-9_-]{1,64}`, or a carrier
    /// error (also from carriers that keep no effect records).
    pub async fn effect(&self, task_id: &str, name: &str) -> Result<Option<Bytes>, DurableError> {
        super::effect::check_effect_name(name)?;
        Ok(self.carrier.get_effect(&self.queue, task_id, name).await?)
    }
}

/// A handle on an enqueued task: its ID, and a way to wait for its typed result.
#[derive(Debug)]
pub struct TaskHandle<Resp> {
    client: DurableClient,
    task_id: String,
    _resp: PhantomData<fn() -> Resp>,
}

impl<Resp> Clone for TaskHandle<Resp> {
    fn clone(&self) -> Self {
        TaskHandle {
            client: self.client.clone(),
            task_id: self.task_id.clone(),
            _resp: PhantomData,
        }
    }
}

impl<Resp: Message + Default> TaskHandle<Resp> {
    /// The task ID (keep it to fetch the result later).
    pub fn id(&self) -> &str {
        &self.task_id
    }

    /// Waits up to `timeout` for the task to finish.
    ///
    /// # Errors
    /// [`DurableError::Task`] with the task's final error, [`DurableError::Timeout`] when it
    /// has not finished in time, or a carrier or decoding error.
    ///
    /// # Cancel safety
    /// Cancel safe: the task is unaffected, wait again or fetch the result later.
    pub async fn wait(&self, timeout: Duration) -> Result<Resp, DurableError> {
        let bytes = self
            .client
            .carrier
            .wait_result(&self.client.queue, &self.task_id, timeout)
            .await?
            .ok_or(DurableError::Timeout)?;
        decode_outcome(&TaskResult::decode(bytes)?)
    }

    /// The result if the task has finished, without waiting.
    ///
    /// # Errors
    /// As [`wait`](Self::wait), but never a timeout.
    pub async fn try_result(&self) -> Result<Option<Resp>, DurableError> {
        match self.client.result(&self.task_id).await? {
            Some(result) => decode_outcome(&result).map(Some),
            None => Ok(None),
        }
    }
}

/// The typed outcome of a stored result.
fn decode_outcome<Resp: Message + Default>(result: &TaskResult) -> Result<Resp, DurableError> {
    match result.outcome() {
        Ok(bytes) => Ok(Resp::decode(bytes)?),
        Err(err) => Err(DurableError::Task(err)),
    }
}

fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        // A deadline before 1970 has passed; 1 (not 0, which means "none") says so.
        Err(_) => 1,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
