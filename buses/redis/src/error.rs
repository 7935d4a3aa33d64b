//! [`RedisBusError`]: why a bus could not be created.

use psrpc::bus::BusError;
use redis::RedisError;

/// Why a [`RedisBus`](crate::RedisBus) could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBusError {
    /// The URL or client configuration was rejected.
    #[error("invalid redis configuration: {0}")]
    Config(#[source] RedisError),
    /// The server could not be reached, or refused the connection (e.g. a wrong password).
    #[error("cannot connect to redis: {0}")]
    Connect(#[source] RedisError),
}

impl From<RedisBusError> for BusError {
    fn from(err: RedisBusError) -> Self {
        BusError::Connection(Box::new(err))
    }
}
