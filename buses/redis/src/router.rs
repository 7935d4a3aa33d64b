//! The local demultiplexer: channel name → the sinks of this bus's subscribers.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use dashmap::DashMap;
use psrpc::bus::{Subscribers, SubscriptionSink};

/// The routing table the push reader delivers through; shared by the bus and its subscriptions.
#[derive(Default)]
pub(crate) struct Router {
    pub(crate) channels: DashMap<String, Arc<Entry>>,
    pub(crate) counters: Counters,
}

/// Counters of a bus, see [`crate::RedisBusStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) unroutable: AtomicU64,
    pub(crate) locks_won: AtomicU64,
    pub(crate) locks_lost: AtomicU64,
    pub(crate) lock_errors: AtomicU64,
    pub(crate) lock_overflow: AtomicU64,
    pub(crate) disconnects: AtomicU64,
}

/// One Redis channel this bus is (or is becoming) subscribed to.
pub(crate) struct Entry {
    pub(crate) name: String,
    /// The channel's namespace ([`psrpc::Channel::namespace`]): prefixes the queue lock keys,
    /// so identical payloads in two namespaces do not share a lock.
    pub(crate) namespace: Option<String>,
    members: Mutex<Members>,
    /// Serialises SUBSCRIBE / UNSUBSCRIBE of this name, so an UNSUBSCRIBE of the last local
    /// subscriber can never overtake the SUBSCRIBE of a new one.
    pub(crate) ctl: tokio::sync::Mutex<Ctl>,
}

/// What the control lock protects.
#[derive(Default)]
pub(crate) struct Ctl {
    /// The server confirmed our SUBSCRIBE.
    pub(crate) subscribed: bool,
    /// Unsubscribed and removed from the table: a subscriber holding this entry must look again.
    pub(crate) retired: bool,
}

#[derive(Default)]
struct Members {
    fanout: Subscribers,
    queue: Subscribers,
}

impl Entry {
    pub(crate) fn new(name: String, namespace: Option<String>) -> Self {
        Entry {
            name,
            namespace,
            members: Mutex::default(),
            ctl: tokio::sync::Mutex::default(),
        }
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        // Nothing panics while holding this lock; recover rather than propagate a poison.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add(&self, id: u64, sink: SubscriptionSink, queue: bool) {
        let mut members = self.members();
        if queue {
            members.queue.add(id, sink);
        } else {
            members.fanout.add(id, sink);
        }
    }

    pub(crate) fn remove(&self, id: u64) {
        let mut members = self.members();
        members.fanout.remove(id);
        members.queue.remove(id);
    }

    pub(crate) fn is_empty(&self) -> bool {
        let members = self.members();
        members.fanout.is_empty() && members.queue.is_empty()
    }

    /// Drops every sink, so the subscribers see the end of their stream.
    pub(crate) fn clear(&self) {
        let mut members = self.members();
        members.fanout.clear();
        members.queue.clear();
    }

    /// Delivers to every fan-out subscriber; returns whether there are queue subscribers, which
    /// get the message only once this bus wins its lock.
    pub(crate) fn deliver_fanout(&self, payload: &Bytes) -> bool {
        let members = self.members();
        members.fanout.deliver_all(payload);
        !members.queue.is_empty()
    }

    /// Gives the message to one queue subscriber, round robin; a full or closed member is
    /// skipped in favour of the next, and the drop is counted only when every member is full.
    pub(crate) fn deliver_queue(&self, payload: Bytes) -> bool {
        self.members().queue.deliver_one(&payload)
    }

    /// Counts a drop on the queue member whose turn it is (the lock queue overflowed).
    pub(crate) fn record_queue_drop(&self) {
        self.members().queue.record_drop();
    }
}
