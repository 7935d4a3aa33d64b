//! One Redis command with a deadline, and how its failure maps to a [`BusError`].

use std::future::Future;
use std::time::Duration;

use psrpc::bus::BusError;
use redis::RedisError;

/// A failed Redis operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    #[error(transparent)]
    Redis(RedisError),
    #[error("timed out")]
    Timeout,
    /// The writer task is gone (the runtime shut down).
    #[error("redis command writer stopped")]
    Closed,
}

impl OpError {
    /// Maps to the bus error; `other` wraps failures that are neither timeouts nor lost
    /// connections (the server refused the command).
    pub(crate) fn into_bus_error(self, other: fn(psrpc::bus::BoxError) -> BusError) -> BusError {
        match self {
            OpError::Timeout => BusError::Timeout,
            OpError::Closed => BusError::Closed,
            OpError::Redis(err) if err.is_timeout() => BusError::Timeout,
            OpError::Redis(err)
                if err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                    || err.is_unrecoverable_error() =>
            {
                BusError::Connection(Box::new(err))
            }
            OpError::Redis(err) => other(Box::new(err)),
        }
    }

    /// The connection broke or could not be made (not a refusal of one command, not a timeout).
    pub(crate) fn is_connection_lost(&self) -> bool {
        matches!(self, OpError::Redis(err) if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error())
    }

    /// [`into_bus_error`](Self::into_bus_error) for an error shared by a whole pipeline.
    pub(crate) fn to_bus_error(&self, other: fn(psrpc::bus::BoxError) -> BusError) -> BusError {
        match self {
            OpError::Redis(err) => OpError::Redis(err.clone()).into_bus_error(other),
            OpError::Timeout => BusError::Timeout,
            OpError::Closed => BusError::Closed,
        }
    }
}

/// Runs a Redis command with an overall deadline, which also covers waiting for a reconnect.
pub(crate) async fn with_timeout<T>(
    timeout: Option<Duration>,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, OpError> {
    match timeout {
        Some(limit) => match tokio::time::timeout(limit, fut).await {
            Ok(result) => result.map_err(OpError::Redis),
            Err(_) => Err(OpError::Timeout),
        },
        None => fut.await.map_err(OpError::Redis),
    }
}
