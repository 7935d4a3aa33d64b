//! The in-process bus: the default bus, for tests, demos and single-process deployments.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use futures::future::BoxFuture;

use super::{Bus, BusError, NoReceivers, SubscribeOptions, Subscribers, Subscription};
use crate::Channel;

/// Options of [`LocalBus`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct LocalBusOptions {
    /// The largest payload accepted, in bytes (default 64 MiB).
    pub max_payload: usize,
}

impl LocalBusOptions {
    /// Sets [`max_payload`](Self::max_payload).
    pub fn max_payload(mut self, max_payload: usize) -> Self {
        self.max_payload = max_payload;
        self
    }
}

impl Default for LocalBusOptions {
    fn default() -> Self {
        LocalBusOptions {
            max_payload: 64 << 20,
        }
    }
}

/// An in-process bus: channels keyed by their pipe name, fan-out to every subscriber and round
/// robin among the live queue subscribers of a channel.
///
/// Cloning gives another handle to the same bus. Each subscription has a bounded buffer; see
/// [`SubscriptionSink::deliver`](super::SubscriptionSink::deliver) for what happens when it is full. For queue delivery a full or
/// closed member is skipped in favour of the next one, and the message is dropped only when every
/// member is full.
///
/// ```
/// let bus = psrpc::bus::LocalBus::new();
/// let other_handle = bus.clone();
/// # let _ = other_handle;
/// ```
#[derive(Clone, Default)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    channels: DashMap<String, Members>,
    next_id: AtomicU64,
    options: LocalBusOptions,
}

#[derive(Default)]
struct Members {
    fanout: Subscribers,
    queue: Subscribers,
}

impl Members {
    fn is_empty(&self) -> bool {
        self.fanout.is_empty() && self.queue.is_empty()
    }
}

struct Unsubscribe {
    // Strong: a subscription keeps its bus alive (the Bus contract).
    bus: Arc<Inner>,
    name: String,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.bus.channels.remove_if_mut(&self.name, |_, members| {
            members.fanout.remove(self.id);
            members.queue.remove(self.id);
            members.is_empty()
        });
    }
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus")
            .field("channels", &self.inner.channels.len())
            .finish()
    }
}

impl LocalBus {
    /// A new, empty bus with default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new bus with the given options.
    pub fn with_options(options: LocalBusOptions) -> Self {
        LocalBus {
            inner: Arc::new(Inner {
                options,
                ..Default::default()
            }),
        }
    }

    /// Number of channels with at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.inner.channels.len()
    }

    fn deliver(&self, name: &str, payload: Bytes) -> usize {
        let Some(members) = self.inner.channels.get(name) else {
            return 0;
        };
        // Subscribers present, whether or not their buffers had room: a full buffer is a slow
        // subscriber, not an absent one.
        let receivers = members.fanout.len() + usize::from(!members.queue.is_empty());
        members.fanout.deliver_all(&payload);
        members.queue.deliver_one(&payload);
        receivers
    }
}

impl Bus for LocalBus {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        let result =
            super::check_payload_size(payload.len(), self.inner.options.max_payload).map(|()| {
                self.deliver(&channel.pipe_name(), payload);
            });
        Box::pin(std::future::ready(result))
    }

    fn publish_watched<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<NoReceivers, BusError>> {
        let result = super::check_payload_size(payload.len(), self.inner.options.max_payload)
            .map(|()| NoReceivers::from_count(self.deliver(&channel.pipe_name(), payload)));
        Box::pin(std::future::ready(result))
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        let name = channel.pipe_name();
        let (sink, sub) = Subscription::new(name.as_str(), options.capacity);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut members = self.inner.channels.entry(name.clone()).or_default();
            if channel.is_queue() {
                members.queue.add(id, sink);
            } else {
                members.fanout.add(id, sink);
            }
        }
        let guard = Unsubscribe {
            bus: self.inner.clone(),
            name,
            id,
        };
        Box::pin(std::future::ready(Ok(sub.with_guard(guard))))
    }

    fn max_payload(&self) -> usize {
        self.inner.options.max_payload
    }

    fn name(&self) -> &'static str {
        "local"
    }
}
