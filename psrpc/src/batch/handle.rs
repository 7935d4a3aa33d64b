//! The handle of a running batch: a stream of results as they complete, progress, cancel, and
//! collecting into input order.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::{BatchError, ItemError};
use super::progress::{Counters, Progress};

/// Why a batch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchEnd {
    /// Every task finished (succeeded or failed).
    Completed,
    /// [`Batch::cancel`] was called.
    Cancelled,
    /// The batch deadline passed.
    DeadlineExceeded,
    /// Under [`FailurePolicy::StopAtFirstError`](super::FailurePolicy::StopAtFirstError), the
    /// task with this index failed.
    Stopped {
        /// The failed task's index.
        index: usize,
    },
}

/// One finished task of a batch.
#[derive(Debug)]
pub struct BatchItem<Resp, K = usize> {
    /// The caller's key (the index for batches without keys).
    pub key: K,
    /// The task's position in the batch, from 0.
    pub index: usize,
    /// Its response or error.
    pub result: Result<Resp, ItemError>,
}

/// What the driver and the handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    pub(crate) cancel: CancellationToken,
    pub(crate) end: Mutex<Option<BatchEnd>>,
}

impl Shared {
    pub(crate) fn new(total: usize) -> Arc<Self> {
        Arc::new(Shared {
            counters: Counters::new(total),
            cancel: CancellationToken::new(),
            end: Mutex::new(None),
        })
    }

    pub(crate) fn set_end(&self, end: BatchEnd) {
        *crate::sync::lock(&self.end) = Some(end);
    }
}

/// The sending half the driver holds: index and outcome of each finished task.
pub(crate) type Sender<Resp> = mpsc::UnboundedSender<(usize, Result<Resp, ItemError>)>;

/// A running batch: a [`Stream`] of [`BatchItem`]s in completion order, each task exactly
/// once, and the batch's [`Progress`].
///
/// The stream ends when the batch ends; [`end`](Self::end) then says why. Dropping the handle
/// stops the batch's driver: a queue batch's outstanding calls are cancelled (handlers see
/// `ctx.cancelled()`); a durable batch's tasks go on, and [`Batch::attach`] or
/// [`Batch::resume`] gathers them later.
#[derive(Debug)]
pub struct Batch<Resp, K = usize> {
    id: Arc<str>,
    rx: mpsc::UnboundedReceiver<(usize, Result<Resp, ItemError>)>,
    keys: Vec<Option<K>>,
    shared: Arc<Shared>,
}

impl<Resp, K> Batch<Resp, K> {
    pub(crate) fn from_parts(
        id: Arc<str>,
        rx: mpsc::UnboundedReceiver<(usize, Result<Resp, ItemError>)>,
        keys: Vec<K>,
        shared: Arc<Shared>,
    ) -> Self {
        Batch {
            id,
            rx,
            keys: keys.into_iter().map(Some).collect(),
            shared,
        }
    }

    /// The batch ID (durable batches: keep it to re-attach after a restart).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How far the batch is.
    pub fn progress(&self) -> Progress {
        self.shared.counters.snapshot()
    }

    /// Stops the batch: no new task is submitted, queue calls in flight are cancelled (their
    /// handlers see `ctx.cancelled()`), and a durable batch's submitted tasks not yet finished
    /// get a `canceled` result, so workers skip the queued ones and drop a handler already
    /// running at its next heartbeat (its task is acked, not retried). The stream then ends
    /// with [`BatchEnd::Cancelled`].
    pub fn cancel(&self) {
        self.shared.cancel.cancel();
    }

    /// Why the batch ended; `None` while it runs.
    pub fn end(&self) -> Option<BatchEnd> {
        *crate::sync::lock(&self.shared.end)
    }

    /// The next finished task, or `None` when the batch has ended.
    ///
    /// # Cancel safety
    /// Cancel safe: a result is taken only when this completes.
    pub async fn next_item(&mut self) -> Option<BatchItem<Resp, K>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<BatchItem<Resp, K>>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some((index, result))) => {
                    // The driver sends each index once; a key already taken would mean a bug,
                    // so such an item is skipped rather than yielded twice.
                    if let Some(key) = self.keys.get_mut(index).and_then(Option::take) {
                        return Poll::Ready(Some(BatchItem { key, index, result }));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Waits for the batch to end and returns every outcome in input order.
    ///
    /// # Errors
    /// [`BatchError::Incomplete`] when the batch was cancelled, passed its deadline or stopped
    /// at an error (under [`FailurePolicy::StopAtFirstError`](super::FailurePolicy), the
    /// failing task's error is [`BatchError::Task`] instead).
    ///
    /// # Cancel safety
    /// Not cancel safe: the handle is consumed, and dropping the future drops the batch.
    pub async fn collect(mut self) -> Result<Vec<Result<Resp, ItemError>>, BatchError> {
        let total = self.keys.len();
        let mut slots: Vec<Option<Result<Resp, ItemError>>> = (0..total).map(|_| None).collect();
        let mut stopped_error = None;
        while let Some(item) = self.next_item().await {
            if let Err(e) = &item.result {
                stopped_error.get_or_insert((item.index, e.clone()));
            }
            slots[item.index] = Some(item.result);
        }
        let end = self.end().unwrap_or(BatchEnd::Cancelled);
        match end {
            BatchEnd::Completed if slots.iter().all(Option::is_some) => {
                Ok(slots.into_iter().flatten().collect())
            }
            BatchEnd::Stopped { index } => {
                let error = match stopped_error {
                    Some((i, e)) if i == index => e,
                    _ => ItemError::Failed(crate::Error::canceled()),
                };
                Err(BatchError::Task { index, error })
            }
            end => Err(BatchError::Incomplete {
                end,
                finished: slots.iter().filter(|s| s.is_some()).count(),
                total,
            }),
        }
    }

    /// Waits for the batch to end and returns every response in input order.
    ///
    /// # Errors
    /// [`BatchError::Task`] with the first failed task (by index), or as
    /// [`collect`](Self::collect).
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`collect`](Self::collect).
    pub async fn try_collect(self) -> Result<Vec<Resp>, BatchError> {
        self.collect()
            .await?
            .into_iter()
            .enumerate()
            .map(|(index, r)| r.map_err(|error| BatchError::Task { index, error }))
            .collect()
    }
}

impl<Resp, K: Unpin> Stream for Batch<Resp, K> {
    type Item = BatchItem<Resp, K>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}
