//! The bus abstraction: publish bytes to a [`Channel`], subscribe to one.
//!
//! [`Bus`] is public and object safe, so other crates can carry psrpc over their own broker
//! (this workspace has `psrpc-nats` and `psrpc-redis`; [`LocalBus`] is the in-process one).
//!
//! Contract every implementation keeps:
//! - [`Bus::subscribe`] returns only once the subscription is live: a message published after it
//!   returns is delivered.
//! - A channel with [`Channel::is_queue`] delivers each message to one of its queue subscribers;
//!   otherwise every subscriber gets every message.
//! - Delivery into a [`Subscription`] never blocks the bus: each subscription has a bounded
//!   buffer, and a message arriving when it is full is dropped and counted (see
//!   [`SubscriptionSink::deliver`]). One slow subscriber never stalls the others.
//! - A failed publish is an error to the caller, never silent.
//! - A [`Subscription`] keeps what it needs of its bus alive: it keeps receiving after every
//!   handle to the bus was dropped, until it is itself dropped or closed.
//!
//! ```
//! use psrpc::{Channel, bus::{Bus, LocalBus, SubscribeOptions}};
//! # tokio_test_block_on(async {
//! let bus = LocalBus::new();
//! let ch = Channel::request("Svc", "Method", ["topic"], false);
//! let mut sub = bus.subscribe(&ch, SubscribeOptions::default()).await.unwrap();
//! bus.publish(&ch, bytes::Bytes::from_static(b"hello")).await.unwrap();
//! assert_eq!(sub.recv().await.unwrap().as_ref(), b"hello");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

mod local;
mod namespace;
mod subscribers;
mod subscription;
mod tap;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use local::{LocalBus, LocalBusOptions};
pub use namespace::Namespaced;
pub use subscribers::Subscribers;
pub use subscription::{
    DEFAULT_SUBSCRIPTION_CAPACITY, Delivery, SubscribeOptions, Subscription, SubscriptionSink,
    SubscriptionStats,
};
pub use tap::Tap;

use crate::Channel;

/// A boxed error from a broker client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong on a bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The payload is larger than the broker accepts.
    #[error("payload of {size} bytes exceeds the bus limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The bus limit.
        limit: usize,
    },
    /// The bus was closed.
    #[error("bus closed")]
    Closed,
    /// The broker could not be reached or the connection broke.
    #[error("broker connection failed: {0}")]
    Connection(#[source] BoxError),
    /// The broker refused or failed a publish.
    #[error("publish failed: {0}")]
    Publish(#[source] BoxError),
    /// The broker refused or failed a subscribe.
    #[error("subscribe failed: {0}")]
    Subscribe(#[source] BoxError),
    /// The broker did not answer in time.
    #[error("broker operation timed out")]
    Timeout,
}

/// A message bus psrpc can run over.
///
/// Implementations are cheap to share: the runtime holds them as `Arc<dyn Bus>`.
pub trait Bus: Send + Sync + 'static {
    /// Publishes `payload` (an encoded envelope) to `channel`.
    ///
    /// Resolves once the broker has accepted the message (or the bus has buffered it for
    /// sending); errors are never swallowed.
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>>;

    /// Subscribes to `channel`, as a queue member when [`Channel::is_queue`] is set.
    ///
    /// Resolves once the subscription is live.
    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>>;

    /// Publishes like [`publish`](Self::publish), and watches for the broker's report that
    /// nobody received the message.
    ///
    /// The runtime publishes requests with it, so a call to a method nobody serves fails at
    /// once instead of after the claim timeout. The default cannot tell and returns
    /// [`NoReceivers::unknown`].
    fn publish_watched<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<NoReceivers, BusError>> {
        Box::pin(async move {
            self.publish(channel, payload).await?;
            Ok(NoReceivers::unknown())
        })
    }

    /// Resolves once everything published through this bus before the call has been handed to
    /// the broker (written to its socket and, where the client can tell, seen by it).
    ///
    /// Buses whose `publish` already waits for the broker keep the default, which returns at
    /// once. The runtime calls it from `Server::shutdown`, `Client::close` and stream close, so
    /// a process that exits right after them loses nothing it published.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops only the wait, never a published message.
    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The largest payload this bus accepts, in bytes.
    fn max_payload(&self) -> usize {
        usize::MAX
    }

    /// A short name for logs and metrics, e.g. `"nats"`.
    fn name(&self) -> &'static str;
}

/// Resolves if the broker reported that nobody received a published message; stays pending
/// when somebody did or the bus cannot tell. Returned by [`Bus::publish_watched`].
///
/// ```
/// use futures::FutureExt;
/// use psrpc::bus::NoReceivers;
///
/// assert!(NoReceivers::now().now_or_never().is_some());
/// assert!(NoReceivers::unknown().now_or_never().is_none());
/// ```
#[must_use = "drop it when the answer no longer matters"]
pub struct NoReceivers(Option<BoxFuture<'static, ()>>);

impl NoReceivers {
    /// Nobody received the message.
    pub fn now() -> Self {
        NoReceivers(Some(Box::pin(std::future::ready(()))))
    }

    /// Somebody received it, or the bus cannot tell: never resolves.
    pub fn unknown() -> Self {
        NoReceivers(None)
    }

    /// Resolves when `report` does, meaning nobody received the message.
    pub fn later(report: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        NoReceivers(Some(Box::pin(report)))
    }

    /// From a receiver count: `now` for zero, `unknown` otherwise.
    pub fn from_count(receivers: usize) -> Self {
        if receivers == 0 {
            Self::now()
        } else {
            Self::unknown()
        }
    }
}

impl std::fmt::Debug for NoReceivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "NoReceivers(watching)"
        } else {
            "NoReceivers(unknown)"
        })
    }
}

impl std::future::Future for NoReceivers {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match &mut self.0 {
            Some(report) => report.as_mut().poll(cx),
            None => std::task::Poll::Pending,
        }
    }
}

/// Conversion into the shared handle the runtime keeps.
///
/// Implemented for every [`Bus`] and for `Arc<dyn Bus>`, so constructors accept either.
pub trait IntoBus {
    /// The shared handle.
    fn into_bus(self) -> Arc<dyn Bus>;
}

impl<B: Bus> IntoBus for B {
    fn into_bus(self) -> Arc<dyn Bus> {
        Arc::new(self)
    }
}

impl IntoBus for Arc<dyn Bus> {
    fn into_bus(self) -> Arc<dyn Bus> {
        self
    }
}

/// Checks a payload against a bus limit.
///
/// # Errors
/// [`BusError::PayloadTooLarge`] when `payload_len > limit`.
pub fn check_payload_size(payload_len: usize, limit: usize) -> Result<(), BusError> {
    if payload_len > limit {
        return Err(BusError::PayloadTooLarge {
            size: payload_len,
            limit,
        });
    }
    Ok(())
}
