//! Batch settings: in-flight limit, size limit, deadline and failure policy.

use std::time::Duration;

use crate::Metadata;
use crate::durable::TaskOptions;

/// What a batch does when one of its tasks fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Yield the error and go on with the other tasks (the default).
    #[default]
    Continue,
    /// Yield the first error, then stop the batch as [`cancel`](super::Batch::cancel) would.
    StopAtFirstError,
}

/// Settings of one batch.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BatchOptions {
    /// The most tasks of this batch submitted and not yet finished at once (at least 1), so
    /// one batch does not flood the queue.
    pub max_in_flight: usize,
    /// The largest batch accepted; a larger one is refused with
    /// [`BatchError::TooLarge`](super::BatchError::TooLarge) before anything is submitted.
    pub max_size: usize,
    /// The whole batch must finish within this time; at the deadline it stops as if cancelled
    /// and ends with [`BatchEnd::DeadlineExceeded`](super::BatchEnd::DeadlineExceeded).
    pub timeout: Option<Duration>,
    /// Stop at the first error or go on.
    pub failure_policy: FailurePolicy,
    /// Queue batches: the timeout of each call (the client's default when `None`).
    pub call_timeout: Option<Duration>,
    /// Metadata sent with every task (the batch ID and the task's index are added).
    pub metadata: Metadata,
    /// Durable batches: the batch ID to use, so a restarted coordinator can find the batch
    /// again (1 to [`MAX_BATCH_ID`] characters of `A-Z a-z 0-9 _ -`); a new random ID when `None`.
    pub batch_id: Option<String>,
    /// Durable batches: retry, result and dead-letter settings of every task.
    pub task: TaskOptions,
    /// Durable batches: how long the coordinator waits on one result before checking the
    /// deadline and the carrier again.
    pub poll: Duration,
}

impl BatchOptions {
    /// Sets [`poll`](Self::poll).
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

/// The longest batch ID accepted: with the task index it must fit an idempotency key.
pub const MAX_BATCH_ID: usize = 40;

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_in_flight: 64,
            max_size: 1_000_000,
            timeout: None,
            failure_policy: FailurePolicy::Continue,
            call_timeout: None,
            metadata: Metadata::new(),
            batch_id: None,
            task: TaskOptions::default(),
            poll: Duration::from_secs(5),
        }
    }
}

impl BatchOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the in-flight limit.
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = limit.max(1);
        self
    }

    /// Sets the largest batch accepted.
    pub fn max_size(mut self, max: usize) -> Self {
        self.max_size = max;
        self
    }

    /// Sets the batch deadline to `timeout` from submission.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the failure policy.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Sets the per-call timeout of queue batches.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Adds metadata sent with every task.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the batch ID of a durable batch.
    pub fn batch_id(mut self, id: impl Into<String>) -> Self {
        self.batch_id = Some(id.into());
        self
    }

    /// Sets the task options of a durable batch.
    pub fn task(mut self, task: TaskOptions) -> Self {
        self.task = task;
        self
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.max_in_flight.max(1)
    }
}
