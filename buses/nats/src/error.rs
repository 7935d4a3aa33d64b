//! Mapping async-nats errors onto [`BusError`], keeping the source.

use std::sync::Arc;

use async_nats::client::{PublishError, PublishErrorKind, SubscribeErrorKind};
use psrpc::bus::BusError;

/// Maps a failed publish of `size` bytes; `limit` is the limit the client enforced.
pub(crate) fn publish(err: PublishError, size: usize, limit: usize) -> BusError {
    match err.kind() {
        // The limit changed under us (a new INFO after reconnect): report it like our own check.
        PublishErrorKind::MaxPayloadExceeded => BusError::PayloadTooLarge { size, limit },
        PublishErrorKind::InvalidSubject => BusError::Publish(Box::new(err)),
        // The client's connection task is gone: the connection is closed for good.
        PublishErrorKind::Send => BusError::Connection(Box::new(err)),
    }
}

/// Why setting up a NATS subscription failed, shareable by every caller waiting on it.
#[derive(Clone, Debug)]
pub(crate) enum SetupFailure {
    /// The server did not confirm the subscription in time.
    Timeout,
    /// The subscription was abandoned or the client closed.
    Closed,
    /// The client refused the subscription (invalid subject or queue group).
    Subscribe(Arc<dyn std::error::Error + Send + Sync>),
    /// The connection failed while subscribing.
    Connection(Arc<dyn std::error::Error + Send + Sync>),
}

impl SetupFailure {
    pub(crate) fn from_subscribe(err: async_nats::SubscribeError) -> Self {
        match err.kind() {
            SubscribeErrorKind::InvalidSubject | SubscribeErrorKind::InvalidQueueName => {
                SetupFailure::Subscribe(Arc::new(err))
            }
            SubscribeErrorKind::Other => SetupFailure::Connection(Arc::new(err)),
        }
    }

    /// A fresh [`BusError`] for one waiting caller.
    pub(crate) fn to_bus_error(&self) -> BusError {
        match self {
            SetupFailure::Timeout => BusError::Timeout,
            SetupFailure::Closed => BusError::Closed,
            SetupFailure::Subscribe(err) => BusError::Subscribe(Box::new(err.clone())),
            SetupFailure::Connection(err) => BusError::Connection(Box::new(err.clone())),
        }
    }
}

/// A NATS credentials file (`.creds`) that could not be used: missing, unreadable, or without
/// a user JWT and NKey seed. Shows the path and the cause, never the file's contents.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the NATS credentials file {}: {source}", path.display())]
pub struct CredentialsError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why it could not be used.
    #[source]
    pub source: std::io::Error,
}
