//! Batches over durable calls: every task is a durable task, its ID derived from the batch ID
//! and its index, and the batch's membership is a record in the carrier's result store, so a
//! restarted coordinator finds the batch again by its ID.
//!
//! Task `i` of batch `B` is enqueued with the idempotency key `B.i`: enqueueing it again (a
//! resumed batch) finds the same task, and its result is stored under a task ID no other batch
//! uses, so results of another batch or an earlier run never mix in. The record
//! (`BATCH_<id>` in the result store, kept as long as the task results) holds the method and
//! the task count.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;

use super::error::{BatchError, ItemError};
use super::handle::{Batch, BatchEnd, Shared};
use super::options::{BatchOptions, MAX_BATCH_ID};
use super::queue::{BATCH_ID_KEY, BATCH_INDEX_KEY, check_size};
use super::schedule::{self, Plan};
use crate::durable::{DurableClient, DurableError, EnqueueOptions, TaskResult, task_id_for_key};
use crate::{Error, ErrorCode};

/// A durable batch as stored: what a restarted coordinator needs to find its tasks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchRecord {
    /// The method every task calls.
    #[prost(string, tag = "1")]
    pub method: String,
    /// Tasks in the batch.
    #[prost(uint64, tag = "2")]
    pub total: u64,
    /// When it was submitted, Unix nanoseconds.
    #[prost(int64, tag = "3")]
    pub created_at: i64,
    /// True once the batch was cancelled: it cannot be resumed.
    #[prost(bool, tag = "4")]
    pub cancelled: bool,
}

/// The result-store key of a batch's record.
fn record_key(batch_id: &str) -> String {
    format!("BATCH_{batch_id}")
}

/// The task ID of task `index` of batch `batch_id` (a valid batch ID always gives one).
pub fn batch_task_id(batch_id: &str, index: usize) -> Option<String> {
    task_id_for_key(&format!("{batch_id}.{index}"))
}

fn check_batch_id(id: &str) -> Result<(), BatchError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_BATCH_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BatchError::InvalidArgument(format!(
            "batch ID {id:?} must be 1 to {MAX_BATCH_ID} characters of A-Z a-z 0-9 _ -"
        )))
    }
}

/// What the driver needs of a durable batch.
struct Durable {
    client: DurableClient,
    id: Arc<str>,
    method: String,
    /// The encoded requests; `None` for a batch attached without them (gather only).
    payloads: Option<Vec<Bytes>>,
    options: BatchOptions,
    /// Check for a stored result before enqueueing (a resumed batch).
    resumed: bool,
}

impl<Resp: Message + Default + 'static> Batch<Resp> {
    /// Submits `requests` as durable tasks of `method` on `client`'s queue and returns the
    /// batch's handle. Results are indexed by position in `requests`.
    ///
    /// The batch record is stored first, then tasks are enqueued up to
    /// [`BatchOptions::max_in_flight`] at a time. Tasks survive worker crashes (redelivered
    /// after the visibility timeout); a batch deadline is also each task's deadline, so a
    /// handler still running then is stopped. Keep [`id`](Batch::id) (or choose it with
    /// [`BatchOptions::batch_id`]) to [`resume`](Batch::resume) after a restart.
    ///
    /// # Errors
    /// [`BatchError::Empty`], [`BatchError::TooLarge`], [`BatchError::InvalidArgument`] (a bad
    /// batch ID or method, or a batch ID already used), or the carrier's error storing the
    /// record.
    ///
    /// # Cancel safety
    /// If dropped, the batch record may have been stored, but no task was enqueued.
    pub async fn durable<Req: Message>(
        client: &DurableClient,
        method: &str,
        requests: impl IntoIterator<Item = Req>,
        options: BatchOptions,
    ) -> Result<Batch<Resp>, BatchError> {
        let payloads: Vec<Bytes> = requests
            .into_iter()
            .map(|r| Bytes::from(r.encode_to_vec()))
            .collect();
        let keys = (0..payloads.len()).collect();
        Self::durable_inner(client, method, keys, payloads, options).await
    }

    /// Re-attaches to durable batch `batch_id` with its requests (the same, in the same
    /// order): results stored meanwhile are yielded at once, tasks still queued or running are
    /// awaited, and tasks the earlier coordinator had not enqueued yet are enqueued now.
    ///
    /// # Errors
    /// [`BatchError::UnknownBatch`], [`BatchError::Mismatch`] (another method or task count),
    /// [`BatchError::InvalidArgument`] for a cancelled batch, or a carrier error.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is changed before this returns the handle.
    pub async fn resume<Req: Message>(
        client: &DurableClient,
        batch_id: &str,
        method: &str,
        requests: impl IntoIterator<Item = Req>,
        options: BatchOptions,
    ) -> Result<Batch<Resp>, BatchError> {
        let payloads: Vec<Bytes> = requests
            .into_iter()
            .map(|r| Bytes::from(r.encode_to_vec()))
            .collect();
        check_size(payloads.len(), &options)?;
        let record = load(client, batch_id).await?;
        check_record(batch_id, &record, method, payloads.len())?;
        let keys = (0..payloads.len()).collect();
        Ok(spawn(
            Durable {
                client: client.clone(),
                id: batch_id.into(),
                method: method.to_owned(),
                payloads: Some(payloads),
                options,
                resumed: true,
            },
            keys,
        ))
    }

    /// Re-attaches to durable batch `batch_id` without its requests: gathers the results of
    /// its tasks as they are stored. Tasks the earlier coordinator never enqueued (it stopped
    /// before, held back by the in-flight limit) never finish; use
    /// [`resume`](Batch::resume) to enqueue them, or set a deadline.
    ///
    /// # Errors
    /// [`BatchError::UnknownBatch`], [`BatchError::InvalidArgument`] for a cancelled batch, or
    /// a carrier error.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is changed.
    pub async fn attach(
        client: &DurableClient,
        batch_id: &str,
        options: BatchOptions,
    ) -> Result<Batch<Resp>, BatchError> {
        let record = load(client, batch_id).await?;
        if record.cancelled {
            return Err(cancelled(batch_id));
        }
        let total = usize::try_from(record.total).unwrap_or(usize::MAX);
        check_size(total, &options)?;
        Ok(spawn(
            Durable {
                client: client.clone(),
                id: batch_id.into(),
                method: record.method,
                payloads: None,
                options,
                resumed: true,
            },
            (0..total).collect(),
        ))
    }
}

impl<Resp: Message + Default + 'static, K: Send + 'static> Batch<Resp, K> {
    /// As [`durable`](Batch::durable), with a key of the caller's for each request; items
    /// carry it back.
    ///
    /// # Errors
    /// As [`durable`](Batch::durable).
    ///
    /// # Cancel safety
    /// As [`durable`](Batch::durable).
    pub async fn durable_keyed<Req: Message>(
        client: &DurableClient,
        method: &str,
        requests: impl IntoIterator<Item = (K, Req)>,
        options: BatchOptions,
    ) -> Result<Batch<Resp, K>, BatchError> {
        let (keys, payloads) = requests
            .into_iter()
            .map(|(k, r)| (k, Bytes::from(r.encode_to_vec())))
            .unzip();
        Self::durable_inner(client, method, keys, payloads, options).await
    }

    async fn durable_inner(
        client: &DurableClient,
        method: &str,
        keys: Vec<K>,
        payloads: Vec<Bytes>,
        options: BatchOptions,
    ) -> Result<Batch<Resp, K>, BatchError> {
        check_size(payloads.len(), &options)?;
        if method.is_empty() {
            return Err(BatchError::InvalidArgument("empty method name".into()));
        }
        let id = match &options.batch_id {
            Some(id) => id.clone(),
            None => crate::id::new_id("BAT_"),
        };
        check_batch_id(&id)?;
        let key = record_key(&id);
        if client
            .carrier()
            .get_result(client.queue(), &key)
            .await
            .map_err(DurableError::from)?
            .is_some()
        {
            return Err(BatchError::InvalidArgument(format!(
                "batch ID {id} is already used: resume or attach to it"
            )));
        }
        let record = BatchRecord {
            method: method.to_owned(),
            total: payloads.len() as u64,
            created_at: crate::time::now_unix_nanos(),
            cancelled: false,
        };
        store(client, &id, &record, options.task.result_ttl).await?;
        Ok(spawn(
            Durable {
                client: client.clone(),
                id: id.into(),
                method: method.to_owned(),
                payloads: Some(payloads),
                options,
                resumed: false,
            },
            keys,
        ))
    }
}

fn cancelled(batch_id: &str) -> BatchError {
    BatchError::InvalidArgument(format!("batch {batch_id} was cancelled"))
}

fn check_record(
    batch_id: &str,
    record: &BatchRecord,
    method: &str,
    total: usize,
) -> Result<(), BatchError> {
    if record.cancelled {
        return Err(cancelled(batch_id));
    }
    let reason = if record.method != method {
        format!("stored for method {}, not {method}", record.method)
    } else if record.total != total as u64 {
        format!("stored with {} tasks, not {total}", record.total)
    } else {
        return Ok(());
    };
    Err(BatchError::Mismatch {
        id: batch_id.to_owned(),
        reason,
    })
}

async fn load(client: &DurableClient, batch_id: &str) -> Result<BatchRecord, BatchError> {
    check_batch_id(batch_id)?;
    let bytes = client
        .carrier()
        .get_result(client.queue(), &record_key(batch_id))
        .await
        .map_err(DurableError::from)?
        .ok_or_else(|| BatchError::UnknownBatch(batch_id.to_owned()))?;
    BatchRecord::decode(bytes).map_err(|e| BatchError::Durable(DurableError::Malformed(e)))
}

async fn store(
    client: &DurableClient,
    batch_id: &str,
    record: &BatchRecord,
    ttl: Duration,
) -> Result<(), BatchError> {
    client
        .carrier()
        .put_result(
            client.queue(),
            &record_key(batch_id),
            record.encode_to_vec().into(),
            ttl,
        )
        .await
        .map_err(|e| BatchError::Durable(e.into()))
}

fn spawn<Resp: Message + Default + 'static, K>(batch: Durable, keys: Vec<K>) -> Batch<Resp, K> {
    let shared = Shared::new(keys.len());
    let (tx, rx) = mpsc::unbounded_channel();
    let id = batch.id.clone();
    let driver_shared = shared.clone();
    let total = keys.len();
    tokio::spawn(async move {
        let batch = &batch;
        let options = &batch.options;
        let plan = Plan {
            limit: options.in_flight(),
            deadline: options.timeout.map(|t| tokio::time::Instant::now() + t),
            policy: options.failure_policy,
        };
        let task_deadline = options.timeout.map(|t| SystemTime::now() + t);
        let stopped = schedule::run(&driver_shared, &tx, plan, 0..total, |index| async move {
            (index, run_task::<Resp>(batch, index, task_deadline).await)
        })
        .await;
        let Some(end) = stopped.end else { return };
        if end != BatchEnd::Completed {
            withdraw(batch, &stopped.unfinished, end == BatchEnd::Cancelled).await;
        }
        driver_shared.set_end(end);
    });
    Batch::from_parts(id, rx, keys, shared)
}

/// Enqueues task `index` (unless its result is stored) and waits for its result.
async fn run_task<Resp: Message + Default>(
    batch: &Durable,
    index: usize,
    deadline: Option<SystemTime>,
) -> Result<Resp, ItemError> {
    let client = &batch.client;
    let task_id = batch_task_id(&batch.id, index).ok_or_else(|| {
        ItemError::Failed(Error::new(ErrorCode::InvalidArgument, "batch ID too long"))
    })?;
    let failed = |e: DurableError| ItemError::Failed(e.into());
    let stored = if batch.resumed {
        client
            .carrier()
            .get_result(client.queue(), &task_id)
            .await
            .map_err(|e| failed(e.into()))?
    } else {
        None
    };
    if let Some(bytes) = stored {
        return decode(bytes);
    }
    if let Some(payloads) = &batch.payloads {
        let mut metadata = batch.options.metadata.clone();
        metadata.insert(BATCH_ID_KEY.to_owned(), batch.id.to_string());
        metadata.insert(BATCH_INDEX_KEY.to_owned(), index.to_string());
        let options = EnqueueOptions {
            task: batch.options.task.clone(),
            deadline,
            idempotency_key: Some(format!("{}.{index}", batch.id)),
            metadata,
        };
        client
            .enqueue_raw(&batch.method, payloads[index].clone(), options)
            .await
            .map_err(failed)?;
    }
    // Broker hiccups are retried a few times: the batch's deadline and cancel bound the wait.
    let mut errors = 0;
    loop {
        match client
            .carrier()
            .wait_result(client.queue(), &task_id, batch.options.poll)
            .await
        {
            Ok(Some(bytes)) => return decode(bytes),
            Ok(None) => errors = 0,
            Err(e) => {
                errors += 1;
                if errors >= 10 {
                    return Err(failed(e.into()));
                }
                tracing::debug!(batch = %batch.id, task_id, error = %e, "retrying a result wait");
                tokio::time::sleep(Duration::from_millis(100 * errors)).await;
            }
        }
    }
}

fn decode<Resp: Message + Default>(bytes: Bytes) -> Result<Resp, ItemError> {
    let result = TaskResult::decode(bytes)
        .map_err(|e| ItemError::Undecodable(format!("task result: {e}")))?;
    let response = result.outcome().map_err(ItemError::Failed)?;
    Resp::decode(response).map_err(|e| ItemError::Undecodable(e.to_string()))
}

/// Stores a `canceled` result for each task submitted and not finished, so workers skip the
/// ones still queued; marks the record cancelled when the caller cancelled the batch.
async fn withdraw(batch: &Durable, unfinished: &[usize], mark_record: bool) {
    let client = &batch.client;
    let ttl = batch.options.task.result_ttl;
    if mark_record && let Ok(mut record) = load(client, &batch.id).await {
        record.cancelled = true;
        if let Err(e) = store(client, &batch.id, &record, ttl).await {
            tracing::warn!(batch = %batch.id, error = %e, "could not mark the batch cancelled");
        }
    }
    let writes = unfinished.iter().filter_map(|&index| {
        let task_id = batch_task_id(&batch.id, index)?;
        let result = TaskResult {
            task_id: task_id.clone(),
            error_code: ErrorCode::Canceled.as_str().to_owned(),
            error_message: format!("batch {} stopped", batch.id),
            finished_at: crate::time::now_unix_nanos(),
            ..Default::default()
        };
        Some(async move {
            client
                .carrier()
                .put_result(client.queue(), &task_id, result.encode_to_vec().into(), ttl)
                .await
        })
    });
    let outcomes = futures::future::join_all(writes).await;
    let failures = outcomes.iter().filter(|r| r.is_err()).count();
    if failures > 0 {
        tracing::warn!(batch = %batch.id, failures, "some stopped tasks could not be withdrawn");
    }
}
