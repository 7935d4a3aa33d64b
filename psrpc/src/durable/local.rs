//! The in-process carrier, for tests and demos.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::carrier::{
    Carrier, CarrierFuture, Delivery, Enqueued, NewTask, QueueConfig, Receipt, StoredDeadLetter,
};
use super::error::CarrierError;
use super::stats::QueueStats;

/// A carrier in this process's memory. **Nothing survives the process**: it is for tests and
/// demos (it follows tokio's clock, so paused-time tests run instantly), not for durability.
///
/// ```
/// let carrier = psrpc::durable::LocalCarrier::new();
/// # let _ = carrier;
/// ```
#[derive(Clone, Debug)]
pub struct LocalCarrier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<HashMap<String, Queue>>,
    max_task_bytes: usize,
    next: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Msg {
    id: u64,
    body: Bytes,
    deliveries: u32,
    enqueued: Instant,
}

#[derive(Debug)]
struct Lease {
    msg: Msg,
    visible_at: Instant,
    lease: u64,
}

#[derive(Debug, Default)]
struct Queue {
    config: QueueConfig,
    ready: VecDeque<Msg>,
    delayed: Vec<(Instant, Msg)>,
    in_flight: HashMap<u64, Lease>,
    dedup: HashMap<String, Instant>,
    results: HashMap<String, (Bytes, Instant)>,
    /// Effect records by (task ID, name), with their expiry.
    effects: HashMap<(String, String), (Bytes, Instant)>,
    dead: BTreeMap<u64, Bytes>,
    arrived: Arc<Notify>,
    finished: Arc<Notify>,
}

/// What a local delivery's receipt holds.
#[derive(Debug)]
struct LocalReceipt {
    id: u64,
    lease: u64,
}

impl Default for LocalCarrier {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalCarrier {
    /// A carrier accepting tasks of up to 1 MiB.
    pub fn new() -> Self {
        Self::with_max_task_bytes(1 << 20)
    }

    /// A carrier accepting tasks of up to `max` bytes.
    pub fn with_max_task_bytes(max: usize) -> Self {
        LocalCarrier {
            inner: Arc::new(Inner {
                state: Mutex::new(HashMap::new()),
                max_task_bytes: max,
                next: std::sync::atomic::AtomicU64::new(1),
            }),
        }
    }

    fn next(&self) -> u64 {
        self.inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn with<T>(&self, queue: &str, f: impl FnOnce(&mut Queue) -> T) -> T {
        let mut state = self.lock();
        f(state.entry(queue.to_owned()).or_default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        // A panic while holding the lock leaves consistent maps (no multi-step updates span
        // a panic point), so a poisoned lock is still usable.
        crate::sync::lock(&self.inner.state)
    }
}

fn ok<'a, T: Send + 'a>(value: T) -> CarrierFuture<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

fn receipt(delivery: &Delivery) -> Result<&LocalReceipt, CarrierError> {
    delivery
        .receipt
        .get::<LocalReceipt>()
        .ok_or_else(|| CarrierError::new("receipt", "not a delivery of the local carrier"))
}

impl Queue {
    /// Moves due delayed tasks and expired leases to the ready queue.
    fn promote(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
        self.delayed = later;
        self.ready.extend(due.into_iter().map(|(_, m)| m));
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, l)| l.visible_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(lease) = self.in_flight.remove(&id) {
                self.ready.push_back(lease.msg);
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let delayed = self.delayed.iter().map(|(at, _)| *at);
        let leases = self.in_flight.values().map(|l| l.visible_at);
        delayed.chain(leases).min()
    }

    fn take_lease(&mut self, r: &LocalReceipt) -> Option<Lease> {
        match self.in_flight.get(&r.id) {
            // A stale receipt (the lease expired and the task went to someone else) does
            // nothing: the newer holder decides.
            Some(l) if l.lease == r.lease => self.in_flight.remove(&r.id),
            _ => None,
        }
    }
}

impl Carrier for LocalCarrier {
    fn max_task_bytes(&self) -> usize {
        self.inner.max_task_bytes
    }

    fn open(&self, queue: &str, config: &QueueConfig) -> CarrierFuture<'_, ()> {
        self.with(queue, |q| q.config = config.clone());
        ok(())
    }

    fn enqueue(&self, queue: &str, task: NewTask) -> CarrierFuture<'_, Enqueued> {
        let id = self.next();
        let duplicate = self.with(queue, |q| {
            let now = Instant::now();
            if task.dedup {
                q.dedup.retain(|_, until| *until > now);
                if q.dedup.contains_key(&task.task_id) {
                    return true;
                }
                q.dedup
                    .insert(task.task_id.clone(), now + q.config.dedup_window);
            }
            q.ready.push_back(Msg {
                id,
                body: task.body,
                deliveries: 0,
                enqueued: now,
            });
            q.arrived.notify_waiters();
            false
        });
        ok(Enqueued {
            task_id: task.task_id,
            duplicate,
        })
    }

    fn fetch(&self, queue: &str, max: usize, wait: Duration) -> CarrierFuture<'_, Vec<Delivery>> {
        let queue = queue.to_owned();
        Box::pin(async move {
            let deadline = Instant::now() + wait;
            loop {
                let (notify, wake, out) = {
                    let mut state = self.lock();
                    let q = state.entry(queue.clone()).or_default();
                    let now = Instant::now();
                    q.promote(now);
                    let mut out = Vec::new();
                    while out.len() < max {
                        let Some(mut msg) = q.ready.pop_front() else {
                            break;
                        };
                        msg.deliveries = msg.deliveries.saturating_add(1);
                        let lease = self.next();
                        out.push(Delivery {
                            message_id: msg.id.to_string(),
                            body: msg.body.clone(),
                            attempt: msg.deliveries,
                            receipt: Receipt::new(LocalReceipt { id: msg.id, lease }),
                        });
                        let visible_at = now + q.config.visibility_timeout;
                        q.in_flight.insert(
                            msg.id,
                            Lease {
                                msg,
                                visible_at,
                                lease,
                            },
                        );
                    }
                    (q.arrived.clone(), q.next_wake(), out)
                };
                if !out.is_empty() || Instant::now() >= deadline {
                    return Ok(out);
                }
                let notified = notify.notified();
                tokio::pin!(notified);
                // Registered before re-checking, so an enqueue between the check and the wait
                // is not missed.
                notified.as_mut().enable();
                let has_ready = self.with(&queue, |q| !q.ready.is_empty());
                if has_ready {
                    continue;
                }
                let until = wake.map_or(deadline, |w| w.min(deadline));
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        })
    }

    fn ack(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let r = match receipt(delivery) {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        self.with(queue, |q| q.take_lease(r));
        ok(())
    }

    fn retry(&self, queue: &str, delivery: &Delivery, delay: Duration) -> CarrierFuture<'_, ()> {
        let r = match receipt(delivery) {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        self.with(queue, |q| {
            if let Some(lease) = q.take_lease(r) {
                q.delayed.push((Instant::now() + delay, lease.msg));
                q.arrived.notify_waiters();
            }
        });
        ok(())
    }

    fn release(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        self.retry(queue, delivery, Duration::ZERO)
    }

    fn heartbeat(&self, queue: &str, delivery: &Delivery) -> CarrierFuture<'_, ()> {
        let r = match receipt(delivery) {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        self.with(queue, |q| {
            let vis = q.config.visibility_timeout;
            if let Some(l) = q.in_flight.get_mut(&r.id).filter(|l| l.lease == r.lease) {
                l.visible_at = Instant::now() + vis;
            }
        });
        ok(())
    }

    fn dead_letter(
        &self,
        queue: &str,
        delivery: &Delivery,
        letter: Bytes,
    ) -> CarrierFuture<'_, ()> {
        let r = match receipt(delivery) {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let id = self.next();
        self.with(queue, |q| {
            if q.take_lease(r).is_some() {
                q.dead.insert(id, letter);
            }
        });
        ok(())
    }

    fn put_result(
        &self,
        queue: &str,
        task_id: &str,
        result: Bytes,
        ttl: Duration,
    ) -> CarrierFuture<'_, ()> {
        self.with(queue, |q| {
            q.results.insert(
                task_id.to_owned(),
                (result, crate::time::instant_after(Instant::now(), ttl)),
            );
            q.finished.notify_waiters();
        });
        ok(())
    }

    fn get_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, Option<Bytes>> {
        let found = self.with(queue, |q| {
            let now = Instant::now();
            match q.results.get(task_id) {
                Some((bytes, until)) if *until > now => Some(bytes.clone()),
                Some(_) => {
                    q.results.remove(task_id);
                    None
                }
                None => None,
            }
        });
        ok(found)
    }

    fn delete_result(&self, queue: &str, task_id: &str) -> CarrierFuture<'_, ()> {
        self.with(queue, |q| q.results.remove(task_id));
        ok(())
    }

    fn record_effect<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        name: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        let now = Instant::now();
        let found = self.with(queue, |q| {
            let key = (task_id.to_owned(), name.to_owned());
            match q.effects.get(&key) {
                Some((first, until)) if *until > now => Some(first.clone()),
                _ => {
                    q.effects
                        .insert(key, (value, crate::time::instant_after(now, ttl)));
                    None
                }
            }
        });
        ok(found)
    }

    fn get_effect<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        name: &'a str,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        let now = Instant::now();
        let found = self.with(queue, |q| {
            let key = (task_id.to_owned(), name.to_owned());
            match q.effects.get(&key) {
                Some((value, until)) if *until > now => Some(value.clone()),
                Some(_) => {
                    q.effects.remove(&key);
                    None
                }
                None => None,
            }
        });
        ok(found)
    }

    fn wait_result<'a>(
        &'a self,
        queue: &'a str,
        task_id: &'a str,
        timeout: Duration,
    ) -> CarrierFuture<'a, Option<Bytes>> {
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            loop {
                let notify = self.with(queue, |q| q.finished.clone());
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(found) = self.get_result(queue, task_id).await? {
                    return Ok(Some(found));
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => return Ok(None),
                }
            }
        })
    }

    fn list_dead_letters<'a>(
        &'a self,
        queue: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> CarrierFuture<'a, Vec<StoredDeadLetter>> {
        let from = after
            .and_then(|a| a.parse::<u64>().ok())
            .map_or(0, |a| a + 1);
        let list = self.with(queue, |q| {
            q.dead
                .range(from..)
                .take(limit)
                .map(|(id, body)| StoredDeadLetter {
                    id: id.to_string(),
                    body: body.clone(),
                })
                .collect()
        });
        ok(list)
    }

    fn get_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, Option<Bytes>> {
        let found = id
            .parse::<u64>()
            .ok()
            .and_then(|id| self.with(queue, |q| q.dead.get(&id).cloned()));
        ok(found)
    }

    fn delete_dead_letter(&self, queue: &str, id: &str) -> CarrierFuture<'_, bool> {
        let removed = id
            .parse::<u64>()
            .ok()
            .is_some_and(|id| self.with(queue, |q| q.dead.remove(&id).is_some()));
        ok(removed)
    }

    fn purge_dead_letters(&self, queue: &str) -> CarrierFuture<'_, u64> {
        let n = self.with(queue, |q| std::mem::take(&mut q.dead).len() as u64);
        ok(n)
    }

    fn stats(&self, queue: &str) -> CarrierFuture<'_, QueueStats> {
        let stats = self.with(queue, |q| {
            let now = Instant::now();
            q.promote(now);
            let oldest = q
                .ready
                .iter()
                .map(|m| m.enqueued)
                .chain(q.delayed.iter().map(|(_, m)| m.enqueued))
                .min();
            QueueStats {
                waiting: (q.ready.len() + q.delayed.len()) as u64,
                in_flight: q.in_flight.len() as u64,
                dead_letters: q.dead.len() as u64,
                oldest_waiting_age: oldest.map(|t| now.saturating_duration_since(t)),
            }
        });
        ok(stats)
    }
}
