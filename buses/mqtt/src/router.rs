//! The local demultiplexer: MQTT subscriptions of this bus and the sinks behind them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use psrpc::bus::{BusError, Subscribers, SubscriptionSink};
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use tokio::sync::oneshot;

/// One MQTT subscription (a topic filter) of this bus, shared by its local subscribers.
pub(crate) struct Entry {
    pub(crate) filter: String,
    /// The MQTT 5 subscription identifier the broker tags our copies of its messages with.
    pub(crate) sub_id: usize,
    /// A queue filter (`$share/psrpc/…`): each message goes to one local member.
    pub(crate) queue: bool,
    members: Mutex<Subscribers>,
}

impl Entry {
    pub(crate) fn new(filter: String, sub_id: usize, queue: bool) -> Self {
        Entry {
            filter,
            sub_id,
            queue,
            members: Mutex::default(),
        }
    }

    fn members(&self) -> MutexGuard<'_, Subscribers> {
        // Nothing panics while holding this lock; recover rather than propagate a poison.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add(&self, id: u64, sink: SubscriptionSink) {
        self.members().add(id, sink);
    }

    /// Removes a member; true when none is left.
    pub(crate) fn remove(&self, id: u64) -> bool {
        self.members().remove(id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members().is_empty()
    }

    /// Drops every sink, so the subscribers see the end of their stream.
    pub(crate) fn clear(&self) {
        self.members().clear();
    }

    /// Fan-out: every member gets the message. Queue: one member, round robin; a full or closed
    /// member is skipped in favour of the next, and the drop is counted only when all are full.
    pub(crate) fn deliver(&self, payload: &Bytes) {
        let members = self.members();
        if self.queue {
            members.deliver_one(payload);
        } else {
            members.deliver_all(payload);
        }
    }
}

/// Where the SUBSCRIBE of one filter stands on the current connection.
pub(crate) struct SubState {
    pub(crate) entry: Arc<Entry>,
    /// The broker acknowledged the SUBSCRIBE on the current connection.
    pub(crate) live: bool,
    /// A SUBSCRIBE was queued on the current connection and not yet answered.
    pub(crate) sent: bool,
    /// Subscribers waiting for the SUBACK.
    pub(crate) waiters: Vec<oneshot::Sender<Result<(), BusError>>>,
}

/// Why a QoS 1 publish was made, and who waits for its PUBACK.
pub(crate) type AckWaiter = oneshot::Sender<Result<PubAckReason, BusError>>;

/// Everything the event loop and the callers share, behind one lock.
///
/// rumqttc assigns packet IDs inside its event loop, so a SUBACK or PUBACK cannot be matched
/// to its request directly. Requests that need an answer are therefore queued to rumqttc only
/// under this lock, in the same order as their entry in `sub_fifo` / `pub_fifo`; the event loop
/// pairs each `Outgoing::Subscribe(pkid)` / `Outgoing::Publish(pkid ≠ 0)` it reports with the
/// oldest entry, and the later ack by packet ID.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) connected: bool,
    pub(crate) subs: HashMap<String, SubState>,
    pub(crate) by_id: HashMap<usize, Arc<Entry>>,
    pub(crate) next_sub_id: usize,
    /// Filters of queued SUBSCRIBEs (with their subscription identifier), oldest first.
    pub(crate) sub_fifo: VecDeque<(String, usize)>,
    /// SUBSCRIBEs sent, by packet ID. rumqttc cycles packet IDs within the broker's Receive
    /// Maximum (publishes and subscribes alike), so more SUBSCRIBEs in flight than that share
    /// IDs; the broker answers each in turn, so a queue per ID keeps them apart.
    pub(crate) sub_inflight: HashMap<u16, VecDeque<(String, usize)>>,
    pub(crate) pub_fifo: VecDeque<AckWaiter>,
    pub(crate) pub_inflight: HashMap<u16, AckWaiter>,
    /// The broker's Maximum Packet Size from the latest CONNACK.
    pub(crate) broker_max_packet: Option<u32>,
    /// The broker tags messages with subscription identifiers (CONNACK).
    pub(crate) sub_ids_available: bool,
}

impl Shared {
    /// A fresh subscription identifier (1 ..= 268,435,455, the MQTT range).
    pub(crate) fn new_sub_id(&mut self) -> usize {
        self.next_sub_id = self.next_sub_id % 268_435_455 + 1;
        self.next_sub_id
    }

    /// The connection is gone: nothing queued or in flight will be answered.
    pub(crate) fn disconnected(&mut self) {
        self.connected = false;
        self.sub_fifo.clear();
        self.sub_inflight.clear();
        for state in self.subs.values_mut() {
            state.live = false;
            state.sent = false;
        }
        let lost = || BusError::Connection("connection to the MQTT broker lost".into());
        for waiter in self.pub_fifo.drain(..) {
            let _ = waiter.send(Err(lost()));
        }
        for (_, waiter) in self.pub_inflight.drain() {
            let _ = waiter.send(Err(lost()));
        }
    }
}

/// The shared state and counters of a bus.
pub(crate) struct Router {
    shared: Mutex<Shared>,
    pub(crate) counters: Counters,
    /// Mirrors `Shared::connected` for the lock-free QoS 0 publish path.
    pub(crate) connected: AtomicBool,
    /// The broker's Maximum Packet Size, `usize::MAX` when it set none.
    pub(crate) broker_max_packet: AtomicUsize,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            shared: Mutex::default(),
            counters: Counters::default(),
            connected: AtomicBool::new(false),
            broker_max_packet: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Router {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // Nothing panics while holding this lock; recover rather than propagate a poison.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counters of a bus, see [`crate::MqttBusStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) unroutable: AtomicU64,
    pub(crate) disconnects: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
