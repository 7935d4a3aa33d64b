//! The receiving end of a bus subscription and the sink a bus delivers into.

use std::any::Any;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Default number of messages a subscription buffers before dropping.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 1024;

/// Options of [`super::Bus::subscribe`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Messages buffered for this subscriber; past it, new messages are dropped and counted.
    pub capacity: usize,
}

impl SubscribeOptions {
    /// Sets [`capacity`](Self::capacity).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
        }
    }
}

/// Counters of one subscription, shared by its sink and its receiver.
#[derive(Debug, Default)]
pub struct SubscriptionStats {
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl SubscriptionStats {
    /// Messages put into the buffer.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Messages dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The outcome of [`SubscriptionSink::deliver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The message is in the subscriber's buffer.
    Delivered,
    /// The buffer was full; the message was dropped and counted.
    Dropped,
    /// The subscriber is gone; the bus should forget this sink.
    Closed,
}

/// The sending end a bus holds for one subscription.
#[derive(Clone, Debug)]
pub struct SubscriptionSink {
    tx: mpsc::Sender<Bytes>,
    stats: Arc<SubscriptionStats>,
    name: Arc<str>,
}

impl SubscriptionSink {
    /// Hands a message to the subscriber without waiting.
    ///
    /// Policy for slow subscribers: when the buffer is full the **new** message is dropped,
    /// counted in [`SubscriptionStats::dropped`] and reported as a `tracing` warning (the first
    /// drop, then every 1024th), so the bus's reader never waits on one subscriber.
    pub fn deliver(&self, payload: Bytes) -> Delivery {
        let outcome = self.offer(payload);
        if outcome == Delivery::Dropped {
            self.record_drop();
        }
        outcome
    }

    /// Like [`deliver`](Self::deliver), but a full buffer is not counted as a drop yet: for queue
    /// delivery, which then offers the message to the next member.
    pub fn offer(&self, payload: Bytes) -> Delivery {
        // Counted before the hand-over, so a receiver that got the message sees it counted.
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(payload) {
            Ok(()) => Delivery::Delivered,
            Err(err) => {
                self.stats.delivered.fetch_sub(1, Ordering::Relaxed);
                match err {
                    mpsc::error::TrySendError::Full(_) => Delivery::Dropped,
                    mpsc::error::TrySendError::Closed(_) => Delivery::Closed,
                }
            }
        }
    }

    /// Counts (and rate-limits a warning for) a message this subscriber could not take.
    pub fn record_drop(&self) {
        let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped == 1 || dropped.is_multiple_of(1024) {
            tracing::warn!(channel = %self.name, dropped, "subscriber too slow, message dropped");
        }
    }

    /// True once the subscriber has gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The subscription's counters.
    pub fn stats(&self) -> &Arc<SubscriptionStats> {
        &self.stats
    }
}

/// A live subscription: a stream of payloads, unsubscribed when dropped.
///
/// Bus implementations create one with [`Subscription::new`] and keep the returned sink.
#[must_use = "dropping a subscription unsubscribes"]
pub struct Subscription {
    rx: mpsc::Receiver<Bytes>,
    stats: Arc<SubscriptionStats>,
    // Dropped with the subscription; buses put their unsubscribe logic in its Drop.
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A new subscription buffer of `capacity` messages, named for logs, and its sink.
    pub fn new(name: impl Into<Arc<str>>, capacity: usize) -> (SubscriptionSink, Subscription) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(SubscriptionStats::default());
        let sink = SubscriptionSink {
            tx,
            stats: stats.clone(),
            name: name.into(),
        };
        let sub = Subscription {
            rx,
            stats,
            _guard: None,
        };
        (sink, sub)
    }

    /// Attaches a value dropped with the subscription (typically an unsubscribe guard).
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self._guard = Some(Box::new(guard));
        self
    }

    /// The next payload; `None` once the bus has closed the subscription.
    ///
    /// # Cancel safety
    /// Cancel safe: a payload is taken only when the future completes with it.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// The subscription's counters.
    pub fn stats(&self) -> &Arc<SubscriptionStats> {
        &self.stats
    }

    /// Stops receiving: unsubscribes now; buffered messages can still be read.
    pub fn close(&mut self) {
        self.rx.close();
        self._guard = None;
    }
}

impl futures::Stream for Subscription {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.rx.poll_recv(cx)
    }
}
