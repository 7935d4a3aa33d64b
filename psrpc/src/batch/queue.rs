//! Batches over plain queue calls: at-most-once, no broker state, fast.

use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;

use super::error::{BatchError, ItemError};
use super::handle::{Batch, Shared};
use super::options::BatchOptions;
use super::schedule::{self, Plan};
use crate::{CallOptions, Client, ErrorCode, MethodInfo};

/// Metadata key carrying the batch ID of a task.
pub const BATCH_ID_KEY: &str = "psrpc-batch-id";
/// Metadata key carrying a task's index in its batch.
pub const BATCH_INDEX_KEY: &str = "psrpc-batch-index";

/// Refuses empty and oversized batches.
pub(crate) fn check_size(size: usize, options: &BatchOptions) -> Result<(), BatchError> {
    if size == 0 {
        return Err(BatchError::Empty);
    }
    if size > options.max_size {
        return Err(BatchError::TooLarge {
            size,
            max: options.max_size,
        });
    }
    Ok(())
}

impl<Resp: Message + Default + 'static> Batch<Resp> {
    /// Submits `requests` as calls of the unary `method` (normally a QUEUE method, so each
    /// call goes to one server of the fleet) and returns the batch's handle. Results are
    /// indexed by position in `requests`.
    ///
    /// Each task is one ordinary call: at most once, and lost if its server dies (it then
    /// fails with the call's error). Use [`Batch::durable`] for tasks that must survive.
    ///
    /// # Errors
    /// [`BatchError::Empty`] or [`BatchError::TooLarge`]; nothing was sent.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is sent before this returns the handle.
    pub async fn queue<Req: Message + Send + Sync + 'static>(
        client: &Client,
        method: &MethodInfo,
        topics: &[&str],
        requests: impl IntoIterator<Item = Req>,
        options: BatchOptions,
    ) -> Result<Batch<Resp>, BatchError> {
        let requests: Vec<Req> = requests.into_iter().collect();
        let keys = (0..requests.len()).collect();
        Self::queue_inner(client, method, topics, keys, requests, options)
    }
}

impl<Resp: Message + Default + 'static, K: Send + 'static> Batch<Resp, K> {
    /// As [`queue`](Batch::queue), with a key of the caller's for each request; items carry
    /// it back.
    ///
    /// # Errors
    /// As [`queue`](Batch::queue).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`queue`](Batch::queue).
    pub async fn queue_keyed<Req: Message + Send + Sync + 'static>(
        client: &Client,
        method: &MethodInfo,
        topics: &[&str],
        requests: impl IntoIterator<Item = (K, Req)>,
        options: BatchOptions,
    ) -> Result<Batch<Resp, K>, BatchError> {
        let (keys, requests) = requests.into_iter().unzip();
        Self::queue_inner(client, method, topics, keys, requests, options)
    }

    fn queue_inner<Req: Message + Send + Sync + 'static>(
        client: &Client,
        method: &MethodInfo,
        topics: &[&str],
        keys: Vec<K>,
        requests: Vec<Req>,
        options: BatchOptions,
    ) -> Result<Batch<Resp, K>, BatchError> {
        check_size(requests.len(), &options)?;
        let id: Arc<str> = crate::id::new_id("BAT_").into();
        let shared = Shared::new(requests.len());
        let (tx, rx) = mpsc::unbounded_channel();
        let plan = Plan {
            limit: options.in_flight(),
            deadline: options.timeout.map(|t| tokio::time::Instant::now() + t),
            policy: options.failure_policy,
        };
        let client = client.clone();
        let method = *method;
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let driver_shared = shared.clone();
        let batch_id = id.clone();
        tokio::spawn(async move {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            let requests = &requests;
            let (client, topics, options) = (&client, &topics, &options);
            let stopped = schedule::run(&driver_shared, &tx, plan, 0..requests.len(), |index| {
                let mut call = CallOptions::new();
                call.timeout = options.call_timeout;
                call.metadata = options.metadata.clone();
                call.metadata
                    .insert(BATCH_ID_KEY.to_owned(), batch_id.to_string());
                call.metadata
                    .insert(BATCH_INDEX_KEY.to_owned(), index.to_string());
                async move {
                    let outcome = client
                        .request::<Req, Resp>(method, topics, &requests[index], call)
                        .await
                        .map_err(|e| {
                            if e.code() == ErrorCode::MalformedResult {
                                ItemError::Undecodable(e.message().to_owned())
                            } else {
                                ItemError::Failed(e)
                            }
                        });
                    (index, outcome)
                }
            })
            .await;
            if let Some(end) = stopped.end {
                driver_shared.set_end(end);
            }
        });
        Ok(Batch::from_parts(id, rx, keys, shared))
    }
}
