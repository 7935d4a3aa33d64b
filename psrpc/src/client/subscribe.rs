//! Typed subscription streams.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

use crate::bus::{Subscription, SubscriptionStats};
use crate::wire;

/// A live subscription yielding typed messages.
///
/// Payloads that are not a `T` envelope (wrong type URL, bytes that do not decode) are skipped,
/// counted in [`malformed`](Self::malformed) and logged at debug level. Dropping the
/// subscription unsubscribes.
#[must_use = "dropping a subscription unsubscribes"]
pub struct TypedSubscription<T> {
    sub: Subscription,
    type_url: Arc<str>,
    malformed: AtomicU64,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TypedSubscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedSubscription")
            .field("type_url", &self.type_url)
            .field("malformed", &self.malformed)
            .finish()
    }
}

impl<T: prost::Message + Default> TypedSubscription<T> {
    /// A subscription to `full_name` messages (the proto name, such as `google.protobuf.Struct`).
    pub(crate) fn new(sub: Subscription, full_name: &str) -> Self {
        TypedSubscription {
            sub,
            type_url: wire::type_url_for(full_name).into(),
            malformed: AtomicU64::new(0),
            _type: PhantomData,
        }
    }

    /// The next message; `None` once the subscription is closed. Messages that do not decode
    /// are skipped and counted.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken only when the future completes with it.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            let payload = self.sub.recv().await?;
            if let Some(msg) = self.decode(payload) {
                return Some(msg);
            }
        }
    }

    /// Unsubscribes now; messages already buffered can still be read.
    pub fn close(&mut self) {
        self.sub.close();
    }

    /// Payloads skipped because they were not a valid `T`.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Delivery counters of the underlying subscription (including drops when full).
    pub fn stats(&self) -> &Arc<SubscriptionStats> {
        self.sub.stats()
    }

    fn decode(&self, payload: Bytes) -> Option<T> {
        let decoded = wire::decode_envelope(payload)
            .ok()
            .filter(|msg| *msg.type_url == *self.type_url)
            .and_then(|msg| T::decode(msg.value).ok());
        if decoded.is_none() {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(type_url = %self.type_url, "skipped a malformed subscription message");
        }
        decoded
    }
}

impl<T: prost::Message + Default> Stream for TypedSubscription<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            match Pin::new(&mut self.sub).poll_next(cx) {
                Poll::Ready(Some(payload)) => {
                    if let Some(msg) = self.decode(payload) {
                        return Poll::Ready(Some(msg));
                    }
                }
                other => return other.map(|_| None),
            }
        }
    }
}
