//! Errors of batches: refused batches, ended batches and failed tasks.

use super::BatchEnd;

/// Why one task of a batch has no response.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// The task failed (the handler's error, a timeout, an unreachable broker, …).
    #[error("{0}")]
    Failed(crate::Error),
    /// A response arrived but does not decode as the method's response type.
    #[error("undecodable response: {0}")]
    Undecodable(String),
}

impl ItemError {
    /// The error as a psrpc error (an undecodable response is `malformed_result`).
    pub fn to_error(&self) -> crate::Error {
        match self {
            ItemError::Failed(err) => err.clone(),
            ItemError::Undecodable(msg) => crate::Error::new(
                crate::ErrorCode::MalformedResult,
                format!("undecodable response: {msg}"),
            ),
        }
    }
}

/// What can go wrong with a batch as a whole.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A batch needs at least one request.
    #[error("empty batch")]
    Empty,
    /// The batch has more requests than [`BatchOptions::max_size`](super::BatchOptions::max_size).
    #[error("batch of {size} requests exceeds the maximum of {max}")]
    TooLarge {
        /// Requests given.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An argument was refused (a bad batch ID, an empty method name, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No durable batch with this ID is stored (never submitted, or its record expired).
    #[error("no batch {0} is stored")]
    UnknownBatch(String),
    /// The stored batch does not match what was given to resume it.
    #[error("batch {id} does not match: {reason}")]
    Mismatch {
        /// The batch ID.
        id: String,
        /// What differs.
        reason: String,
    },
    /// A durable operation (storing the batch record, …) failed.
    #[error("durable: {0}")]
    Durable(#[from] crate::durable::DurableError),
    /// The batch ended before every task finished.
    #[error("batch ended early ({end:?}) with {finished} of {total} tasks finished")]
    Incomplete {
        /// Why it ended.
        end: BatchEnd,
        /// Tasks finished (succeeded or failed).
        finished: usize,
        /// Tasks in the batch.
        total: usize,
    },
    /// A task failed (from [`Batch::try_collect`](super::Batch::try_collect)).
    #[error("task {index} failed: {error}")]
    Task {
        /// The task's index in the batch.
        index: usize,
        /// Its error.
        error: ItemError,
    },
}
