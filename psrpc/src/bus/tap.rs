//! A bus wrapper that watches, and may drop, what is published through it.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{Bus, BusError, IntoBus, NoReceivers, SubscribeOptions, Subscription};
use crate::Channel;

type Filter = Arc<dyn Fn(&Channel, &Bytes) -> bool + Send + Sync>;

/// Wraps a bus to see every publish and decide whether it goes through: for tests, fault
/// injection (a node whose network goes away) and debugging. A dropped publish reports success,
/// as a message lost on the network would. Subscriptions pass through unchanged.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use psrpc::bus::{LocalBus, Tap};
///
/// let partitioned = Arc::new(AtomicBool::new(false));
/// let flag = partitioned.clone();
/// let bus = Tap::new(LocalBus::new(), move |channel, _payload| {
///     println!("publish to {}", channel.pipe_name());
///     !flag.load(Ordering::SeqCst)
/// });
/// partitioned.store(true, Ordering::SeqCst); // from now on publishes vanish
/// # let _ = bus;
/// ```
#[derive(Clone)]
pub struct Tap {
    inner: Arc<dyn Bus>,
    filter: Filter,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("inner", &self.inner.name())
            .finish()
    }
}

impl Tap {
    /// Wraps `inner`; `filter` sees each publish and returns whether it goes through.
    pub fn new(
        inner: impl IntoBus,
        filter: impl Fn(&Channel, &Bytes) -> bool + Send + Sync + 'static,
    ) -> Self {
        Tap {
            inner: inner.into_bus(),
            filter: Arc::new(filter),
        }
    }
}

impl Bus for Tap {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        if (self.filter)(channel, &payload) {
            self.inner.publish(channel, payload)
        } else {
            Box::pin(std::future::ready(Ok(())))
        }
    }

    fn publish_watched<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<NoReceivers, BusError>> {
        if (self.filter)(channel, &payload) {
            self.inner.publish_watched(channel, payload)
        } else {
            // Lost on the way: nobody can say that nobody got it.
            Box::pin(std::future::ready(Ok(NoReceivers::unknown())))
        }
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        self.inner.subscribe(channel, options)
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.flush()
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}
