//! One shared NATS subscription per subject and the local routing behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use psrpc::bus::{BusError, Subscribers, SubscriptionSink};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::confirm::Confirmer;
use crate::error::SetupFailure;

/// The queue group of every psrpc queue subscription (docs/wire.md §4.2).
pub(crate) const QUEUE_GROUP: &str = "bus";

/// Identifies a shared NATS subscription: the subject, and whether it is a queue subscription.
///
/// The queue flag is part of the key because a topic literally named `Q` spells the same subject
/// as the queue subject of the service without topics; the two must stay separate subscriptions.
pub(crate) type SubjectKey = (String, bool);

/// Bus-wide counters, shared with the reader tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) nats_subscriptions: AtomicUsize,
    pub(crate) received: AtomicU64,
    pub(crate) unroutable: AtomicU64,
    pub(crate) requeued: AtomicU64,
}

/// The map of live shared subscriptions of one bus.
pub(crate) type Subjects = Mutex<HashMap<SubjectKey, Arc<Entry>>>;

/// Where a shared subscription is in its life.
#[derive(Clone, Debug)]
pub(crate) enum Status {
    /// SUB sent, not yet confirmed by the server.
    Pending,
    /// Confirmed by an echo round trip through the server (see `confirm.rs`): it delivers to it.
    Ready,
    /// Setting it up failed; the entry has left the map.
    Failed(SetupFailure),
    /// The client closed the subscription stream; the entry has left the map.
    Closed,
}

/// One NATS subscription and the local subscriptions it feeds.
pub(crate) struct Entry {
    key: SubjectKey,
    /// True on `SRV.` subjects, whose messages name their method in the route key.
    routed: bool,
    /// Route key (empty on unrouted subjects) to local subscribers.
    routes: RwLock<HashMap<Box<str>, Subscribers>>,
    status: watch::Sender<Status>,
    /// Cancelled when the last local subscriber goes: the reader unsubscribes and ends.
    stop: CancellationToken,
}

impl Entry {
    pub(crate) fn new(key: SubjectKey, routed: bool) -> Self {
        Entry {
            key,
            routed,
            routes: RwLock::default(),
            status: watch::Sender::new(Status::Pending),
            stop: CancellationToken::new(),
        }
    }

    pub(crate) fn key(&self) -> &SubjectKey {
        &self.key
    }

    fn subject(&self) -> &str {
        &self.key.0
    }

    fn is_queue(&self) -> bool {
        self.key.1
    }

    /// Adds a local subscriber. Callers hold the bus's subject map lock.
    pub(crate) fn add(&self, route: &str, id: u64, sink: SubscriptionSink) {
        write(&self.routes)
            .entry(route.into())
            .or_default()
            .add(id, sink);
    }

    /// Removes a local subscriber; true when none is left. Callers hold the subject map lock
    /// when there is one.
    fn remove(&self, route: &str, id: u64) -> bool {
        let mut routes = write(&self.routes);
        if routes.get_mut(route).is_some_and(|r| r.remove(id)) {
            routes.remove(route);
        }
        routes.is_empty()
    }

    /// Local subscribers now.
    pub(crate) fn member_count(&self) -> usize {
        read(&self.routes).values().map(Subscribers::len).sum()
    }

    /// Waits until the server has confirmed the subscription.
    pub(crate) async fn ready(&self) -> Result<(), BusError> {
        let mut rx = self.status.subscribe();
        let status = rx
            .wait_for(|s| !matches!(s, Status::Pending))
            .await
            .map_err(|_| BusError::Closed)?
            .clone();
        match status {
            Status::Pending | Status::Ready => Ok(()),
            Status::Failed(failure) => Err(failure.to_bus_error()),
            Status::Closed => Err(BusError::Closed),
        }
    }

    /// Hands one message to the local subscribers of its route key, without waiting; false if
    /// no local subscriber wants its (valid) route key.
    fn dispatch(&self, payload: &Bytes, counters: &Counters) -> bool {
        let route = if self.routed {
            match psrpc::wire::route_key(payload) {
                Some(route) => route,
                None => {
                    counters.unroutable.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        subject = self.subject(),
                        "dropped a message without route key"
                    );
                    return true;
                }
            }
        } else {
            ""
        };
        let routes = read(&self.routes);
        let Some(members) = routes.get(route) else {
            // Normal on shared subjects: another method's traffic, or (on `.Q`) a queue request
            // for a method this bus instance does not serve.
            return false;
        };
        if self.is_queue() {
            members.deliver_one(payload);
        } else {
            members.deliver_all(payload);
        }
        true
    }

    /// Ends every local subscription (their `recv` returns `None`).
    fn close(&self) {
        write(&self.routes).clear();
        self.status.send_replace(Status::Closed);
    }
}

/// Keeps one local subscriber registered; dropping it unregisters, and the last one to go
/// removes the shared NATS subscription.
pub(crate) struct Membership {
    pub(crate) subjects: Weak<Subjects>,
    pub(crate) entry: Arc<Entry>,
    pub(crate) route: Box<str>,
    pub(crate) id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        // Hold the map lock across the removal so a concurrent subscribe either joins this entry
        // before it empties or creates a fresh one after it has left the map.
        let subjects = self.subjects.upgrade();
        let mut map = subjects.as_deref().map(lock);
        if self.entry.remove(&self.route, self.id) {
            if let Some(map) = map.as_mut() {
                forget(map, &self.entry);
            }
            self.entry.stop.cancel();
        }
    }
}

/// Removes `entry` from the map if it is still the one registered under its key.
fn forget(map: &mut HashMap<SubjectKey, Arc<Entry>>, entry: &Arc<Entry>) {
    if map.get(entry.key()).is_some_and(|e| Arc::ptr_eq(e, entry)) {
        map.remove(entry.key());
    }
}

fn forget_weak(subjects: &Weak<Subjects>, entry: &Arc<Entry>) {
    if let Some(subjects) = subjects.upgrade() {
        forget(&mut lock(&subjects), entry);
    }
}

/// The life of one shared subscription: SUB, confirm with a round trip through the server, then read and route
/// until the last local subscriber goes (UNSUB) or the client closes.
///
/// Runs in a task of its own so that a caller giving up on `subscribe` cannot leave the other
/// callers waiting on the same entry.
pub(crate) async fn run(
    client: async_nats::Client,
    confirmer: Arc<Confirmer>,
    subjects: Weak<Subjects>,
    entry: Arc<Entry>,
    counters: Arc<Counters>,
    setup_timeout: Duration,
) {
    let setup = async {
        let subject = entry.subject().to_owned();
        let subscriber = if entry.is_queue() {
            client
                .queue_subscribe(subject, QUEUE_GROUP.to_owned())
                .await
        } else {
            client.subscribe(subject).await
        }
        .map_err(SetupFailure::from_subscribe)?;
        // The echo comes back after the server has processed our SUB.
        confirmer.round_trip().await?;
        Ok(subscriber)
    };
    let outcome = tokio::select! {
        biased;
        _ = entry.stop.cancelled() => Err(SetupFailure::Closed),
        outcome = tokio::time::timeout(setup_timeout, setup) => {
            outcome.unwrap_or(Err(SetupFailure::Timeout))
        }
    };
    let mut subscriber = match outcome {
        Ok(subscriber) => subscriber,
        Err(failure) => {
            tracing::debug!(subject = entry.subject(), ?failure, "NATS subscribe failed");
            forget_weak(&subjects, &entry);
            entry.status.send_replace(Status::Failed(failure));
            return;
        }
    };
    counters.nats_subscriptions.fetch_add(1, Ordering::Relaxed);
    entry.status.send_replace(Status::Ready);
    loop {
        tokio::select! {
            biased;
            _ = entry.stop.cancelled() => {
                if let Err(err) = subscriber.unsubscribe().await {
                    // The client is closing; the server drops the SUB with the connection.
                    tracing::debug!(subject = entry.subject(), %err, "NATS unsubscribe failed");
                }
                break;
            }
            message = subscriber.next() => match message {
                Some(message) => {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    if !entry.dispatch(&message.payload, &counters) {
                        unroutable(&client, &entry, message, &counters).await;
                    }
                }
                None => {
                    tracing::debug!(subject = entry.subject(), "NATS subscription closed by the client");
                    forget_weak(&subjects, &entry);
                    entry.close();
                    break;
                }
            },
        }
    }
    counters.nats_subscriptions.fetch_sub(1, Ordering::Relaxed);
}

/// Header counting how often a queue message was handed back to its queue group. Go peers read
/// only the payload, so it changes nothing for them.
pub(crate) const REQUEUED_HEADER: &str = "Psrpc-Requeued";

/// How often a queue message is handed back before it is dropped.
pub(crate) const MAX_REQUEUES: u32 = 16;

/// A message no local subscriber wants. On a `.Q` subject, where all queue methods of a service
/// share the group, NATS may have picked this member for a method it does not serve: hand the
/// message back to the group (the broker picks a member again) rather than lose it, up to
/// [`MAX_REQUEUES`] times. Elsewhere it is another method's traffic: dropped and counted.
async fn unroutable(
    client: &async_nats::Client,
    entry: &Entry,
    message: async_nats::Message,
    counters: &Counters,
) {
    let hops = message
        .headers
        .as_ref()
        .and_then(|h| h.get(REQUEUED_HEADER))
        .and_then(|v| v.as_str().parse::<u32>().ok())
        .unwrap_or(0);
    if !entry.is_queue() || hops >= MAX_REQUEUES {
        counters.unroutable.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            subject = entry.subject(),
            hops,
            "dropped a message no local subscriber wants"
        );
        return;
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(REQUEUED_HEADER, (hops + 1).to_string().as_str());
    let subject = message.subject.clone();
    let sent = match message.reply {
        // Keep the reply subject: the broker's no-responders report still reaches the caller.
        Some(reply) => {
            client
                .publish_with_reply_and_headers(subject, reply, headers, message.payload)
                .await
        }
        None => {
            client
                .publish_with_headers(subject, headers, message.payload)
                .await
        }
    };
    match sent {
        Ok(()) => {
            counters.requeued.fetch_add(1, Ordering::Relaxed);
        }
        Err(err) => {
            counters.unroutable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(subject = entry.subject(), %err, "failed to hand a queue message back");
        }
    }
}

// A panic while holding one of these locks cannot leave the maps half-updated (every update is
// a single insert or retain), so recover from poisoning instead of spreading the panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
