//! Errors of durable calls.

use std::sync::Arc;

/// A carrier (broker) operation failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct CarrierError {
    operation: &'static str,
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl CarrierError {
    /// An error of `operation` (like `"enqueue"`) described by `message`.
    pub fn new(operation: &'static str, message: impl Into<String>) -> Self {
        CarrierError {
            operation,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `operation` caused by `source`.
    pub fn from_source(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        CarrierError {
            operation,
            message: source.to_string(),
            source: Some(Arc::new(source)),
        }
    }

    /// The operation that failed.
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

/// What can go wrong with a durable call.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// The carrier failed (the broker is unreachable, refused, …).
    #[error("carrier error: {0}")]
    Carrier(#[from] CarrierError),
    /// The encoded task is larger than the carrier accepts; nothing was enqueued.
    #[error("task of {size} bytes exceeds the carrier's limit of {limit} bytes")]
    TooLarge {
        /// The encoded task size.
        size: usize,
        /// The carrier's limit.
        limit: usize,
    },
    /// An argument was refused (an empty method name, an over-long idempotency key, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No result arrived within the wait; the task may still complete later.
    #[error("no result within the wait")]
    Timeout,
    /// The task finished with this error (after its retries, or at once for permanent errors).
    #[error("task failed: {0}")]
    Task(crate::Error),
    /// A stored result or response did not decode.
    #[error("malformed result: {0}")]
    Malformed(#[from] prost::DecodeError),
}

impl From<DurableError> for crate::Error {
    fn from(err: DurableError) -> Self {
        use crate::ErrorCode;
        match err {
            DurableError::Task(e) => e,
            DurableError::Timeout => crate::Error::timed_out(),
            DurableError::TooLarge { .. } | DurableError::InvalidArgument(_) => {
                crate::Error::new(ErrorCode::InvalidArgument, err.to_string())
            }
            DurableError::Malformed(_) => {
                crate::Error::new(ErrorCode::MalformedResult, err.to_string())
            }
            DurableError::Carrier(_) => crate::Error::new(ErrorCode::Unavailable, err.to_string()),
        }
    }
}
