//! The local subscribers of a channel, written once for every bus: fan-out to all of them, or
//! queue delivery to one, round robin.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::{Delivery, SubscriptionSink};

/// The local subscribers of one channel (or one route of it) on a bus, for bus
/// implementations: the sinks of its subscriptions, keyed by an ID the bus chooses, and how a
/// message reaches them.
///
/// [`deliver_all`](Self::deliver_all) is fan-out; [`deliver_one`](Self::deliver_one) is queue
/// delivery. The bus holds it behind whatever lock suits it; delivery takes `&self`.
///
/// ```
/// use psrpc::bus::{Subscribers, Subscription};
///
/// let (a, mut sub_a) = Subscription::new("a", 8);
/// let (b, mut sub_b) = Subscription::new("b", 8);
/// let mut queue = Subscribers::default();
/// queue.add(1, a);
/// queue.add(2, b);
/// let payload = bytes::Bytes::from_static(b"job");
/// assert!(queue.deliver_one(&payload));
/// assert!(queue.deliver_one(&payload));
/// assert_eq!(sub_a.stats().delivered(), 1, "one each");
/// assert_eq!(sub_b.stats().delivered(), 1);
/// assert!(!queue.remove(1) && queue.remove(2), "true once none is left");
/// ```
#[derive(Debug, Default)]
pub struct Subscribers {
    members: Vec<(u64, SubscriptionSink)>,
    /// The round-robin cursor: advances once per queue message.
    next: AtomicUsize,
}

impl Subscribers {
    /// Adds the sink of subscription `id`.
    pub fn add(&mut self, id: u64, sink: SubscriptionSink) {
        self.members.push((id, sink));
    }

    /// Removes the sink of subscription `id`; true when none is left.
    pub fn remove(&mut self, id: u64) -> bool {
        self.members.retain(|(member, _)| *member != id);
        self.members.is_empty()
    }

    /// How many subscribers there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Drops every sink, so the subscribers see the end of their stream.
    pub fn clear(&mut self) {
        self.members.clear();
    }

    /// Fan-out: every subscriber gets the message (a full one drops and counts it, see
    /// [`SubscriptionSink::deliver`]).
    pub fn deliver_all(&self, payload: &Bytes) {
        for (_, sink) in &self.members {
            sink.deliver(payload.clone());
        }
    }

    /// Queue delivery: the message goes to one subscriber, round robin. A full or closed one
    /// is skipped in favour of the next, and only when every open one is full is the drop
    /// counted, on the first full one. Returns whether a subscriber took the message.
    pub fn deliver_one(&self, payload: &Bytes) -> bool {
        let n = self.members.len();
        if n == 0 {
            return false;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut first_full = None;
        for i in 0..n {
            let sink = &self.members[(start + i) % n].1;
            match sink.offer(payload.clone()) {
                Delivery::Delivered => return true,
                Delivery::Dropped => {
                    first_full.get_or_insert(sink);
                }
                Delivery::Closed => {}
            }
        }
        if let Some(sink) = first_full {
            sink.record_drop();
        }
        false
    }

    /// Counts a queue message lost before delivery (a bus's own buffer overflowed) on the
    /// subscriber whose turn it was, so the loss shows in that subscription's counters.
    pub fn record_drop(&self) {
        let n = self.members.len();
        if n > 0 {
            let turn = self.next.load(Ordering::Relaxed) % n;
            self.members[turn].1.record_drop();
        }
    }
}
