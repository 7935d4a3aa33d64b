//! Waiting for task results on a broker that announces them: a building block for carriers.
//!
//! A carrier that stores results in a key-value store and announces each stored result on a
//! pub/sub channel (as the NATS and Redis carriers do) needs the same waiting logic: register
//! a waiter *before* the result can be announced, wake it from the channel's listener, read the
//! store when an announcement may have been missed, and stop at a deadline. [`ResultWaiters`]
//! is that logic; the carrier keeps its own listener and store.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::Notify;

use super::CarrierError;

/// How often a waiter re-reads the store at the least: an announcement is lost when a
/// connection drops, a stored result is not.
const REREAD: Duration = Duration::from_secs(1);

/// What the waiters of one task share: a wake-up and the result it brought, if any.
#[derive(Debug, Default)]
struct Slot {
    notify: Notify,
    result: Mutex<Option<Bytes>>,
}

impl Slot {
    /// The result an announcement carried, if one did.
    fn result(&self) -> Option<Bytes> {
        self.result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The waiters for task results of one carrier, by queue and task ID.
///
/// The carrier [`register`](Self::register)s a waiter before the result can be announced (for
/// `enqueue_and_wait`, before the enqueue), has its announcement listener call
/// [`wake`](Self::wake), and [`wait`](ResultWait::wait)s with a function that reads the stored
/// result. The waiters of one task share one entry, which goes when the last of them does.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use psrpc::durable::ResultWaiters;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let waiters = Arc::new(ResultWaiters::default());
/// let wait = waiters.register("Mailer", "task_1");
/// // The carrier's listener, on an announcement that carries the result:
/// waiters.wake("Mailer", "task_1", Some(Bytes::from_static(b"done")));
/// let result = wait
///     .wait(Duration::from_secs(5), false, || async { Ok(None) })
///     .await
///     .unwrap();
/// assert_eq!(result.as_deref(), Some(&b"done"[..]));
/// assert!(waiters.is_empty());
/// # });
/// ```
#[derive(Debug, Default)]
pub struct ResultWaiters {
    map: DashMap<String, Arc<Slot>>,
}

impl ResultWaiters {
    fn key(queue: &str, task_id: &str) -> String {
        format!("{queue}\0{task_id}")
    }

    /// Registers a waiter for `task_id`'s result in `queue`; announcements passed to
    /// [`wake`](Self::wake) from now on reach it. Dropping the returned guard (or ending its
    /// [`wait`](ResultWait::wait)) unregisters it.
    ///
    /// `queue` is whatever the carrier's listener passes to `wake` (a sanitised name, say).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use psrpc::durable::ResultWaiters;
    ///
    /// let waiters = Arc::new(ResultWaiters::default());
    /// let wait = waiters.register("Mailer", "task_1");
    /// assert_eq!(waiters.len(), 1);
    /// drop(wait); // the enqueue failed, say
    /// assert!(waiters.is_empty());
    /// ```
    pub fn register(self: &Arc<Self>, queue: &str, task_id: &str) -> ResultWait {
        let key = Self::key(queue, task_id);
        // Cloned under the entry's lock, so an unregistering waiter never sees this slot
        // without its new holder.
        let slot = self.map.entry(key.clone()).or_default().clone();
        ResultWait {
            waiters: self.clone(),
            key,
            slot: Some(slot),
        }
    }

    /// Wakes the waiters of `task_id` in `queue`, if any. With a result they return it at
    /// once; without one (`None` or empty: an announcement that does not carry the result)
    /// they read the stored result.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use psrpc::durable::ResultWaiters;
    ///
    /// let waiters = Arc::new(ResultWaiters::default());
    /// // No one waits: nothing happens.
    /// waiters.wake("Mailer", "task_1", None);
    /// assert!(waiters.is_empty());
    /// ```
    pub fn wake(&self, queue: &str, task_id: &str, result: Option<Bytes>) {
        if let Some(slot) = self.map.get(&Self::key(queue, task_id)) {
            if let Some(result) = result.filter(|r| !r.is_empty()) {
                *slot.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            }
            slot.notify.notify_waiters();
        }
    }

    /// How many tasks have waiters.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use psrpc::durable::ResultWaiters;
    ///
    /// let waiters = Arc::new(ResultWaiters::default());
    /// let _a = waiters.register("Mailer", "task_1");
    /// let _b = waiters.register("Mailer", "task_1");
    /// assert_eq!(waiters.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no task has waiters.
    ///
    /// ```
    /// use psrpc::durable::ResultWaiters;
    ///
    /// assert!(ResultWaiters::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A registered waiter for one task's result, made by [`ResultWaiters::register`].
///
/// Dropping it unregisters the waiter (the task's entry goes with its last waiter).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use psrpc::durable::ResultWaiters;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let waiters = Arc::new(ResultWaiters::default());
/// let wait = waiters.register("Mailer", "task_1");
/// // The result was stored before the waiter registered: read first.
/// let stored = Bytes::from_static(b"done");
/// let result = wait
///     .wait(Duration::from_secs(5), true, || {
///         let stored = stored.clone();
///         async move { Ok(Some(stored)) }
///     })
///     .await
///     .unwrap();
/// assert_eq!(result.as_deref(), Some(&b"done"[..]));
/// # });
/// ```
#[derive(Debug)]
pub struct ResultWait {
    waiters: Arc<ResultWaiters>,
    key: String,
    /// Taken only by `drop`.
    slot: Option<Arc<Slot>>,
}

impl ResultWait {
    /// Waits up to `timeout` for the result: one carried by an announcement, or one `read`
    /// returns (`read` reads the stored result, as the carrier's `GET`). `read` runs first when
    /// `read_first` (the result may predate the registration, as a deduplicated task's), after
    /// an announcement without the result, and at least every second, since announcements can
    /// be lost. Returns `Ok(None)` when no result came within `timeout`.
    ///
    /// # Errors
    ///
    /// The first error `read` returns.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future unregisters the waiter and loses nothing: the result stays stored
    /// for a later read.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use psrpc::durable::ResultWaiters;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
    /// let waiters = Arc::new(ResultWaiters::default());
    /// let wait = waiters.register("Mailer", "task_1");
    /// let result = wait.wait(Duration::from_secs(3), false, || async { Ok(None) }).await;
    /// assert!(result.unwrap().is_none());
    /// # });
    /// ```
    pub async fn wait<F, Fut>(
        self,
        timeout: Duration,
        read_first: bool,
        mut read: F,
    ) -> Result<Option<Bytes>, CarrierError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<Bytes>, CarrierError>>,
    {
        // Borrowed, not cloned: a clone outliving the guard in a dropped future would keep
        // the entry. Only `drop` empties the option.
        let Some(slot) = self.slot.as_deref() else {
            return Ok(None);
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut read_now = read_first;
        loop {
            let notified = slot.notify.notified();
            tokio::pin!(notified);
            // Enabled before checking, so an announcement during the checks is not missed.
            notified.as_mut().enable();
            if let Some(found) = slot.result() {
                return Ok(Some(found));
            }
            if read_now && let Some(found) = read().await? {
                return Ok(Some(found));
            }
            read_now = true;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let until = deadline.min(now + REREAD);
            if tokio::time::timeout_at(until, notified).await.is_ok()
                && let Some(found) = slot.result()
            {
                return Ok(Some(found));
            }
        }
    }
}

impl Drop for ResultWait {
    fn drop(&mut self) {
        // Our handle goes first, so that of two waiters leaving at once one sees itself as
        // the last; the map's own handle is the one left then.
        drop(self.slot.take());
        self.waiters
            .map
            .remove_if(&self.key, |_, slot| Arc::strong_count(slot) <= 1);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const RESULT: Bytes = Bytes::from_static(b"result");
    const LONG: Duration = Duration::from_secs(10);

    type Wait = Pin<Box<dyn Future<Output = Result<Option<Bytes>, CarrierError>>>>;

    /// Waiters, and a store of one result counting its reads; waits are for task `t` of `q`.
    #[derive(Clone, Default)]
    struct Fixture {
        waiters: Arc<ResultWaiters>,
        result: Arc<Mutex<Option<Bytes>>>,
        reads: Arc<AtomicUsize>,
    }

    impl Fixture {
        fn put(&self, result: Bytes) {
            *self.result.lock().unwrap() = Some(result);
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }

        fn wake(&self, result: Option<Bytes>) {
            self.waiters.wake("q", "t", result);
        }

        fn read(&self) -> impl Future<Output = Result<Option<Bytes>, CarrierError>> + use<> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let found = self.result.lock().unwrap().clone();
            async move { Ok(found) }
        }

        fn wait(&self, timeout: Duration, read_first: bool) -> Wait {
            let store = self.clone();
            Box::pin(
                self.waiters
                    .register("q", "t")
                    .wait(timeout, read_first, move || store.read()),
            )
        }

        /// A wait (without a first read) polled until it waits for an announcement.
        async fn parked(&self) -> Wait {
            let mut wait = self.wait(LONG, false);
            assert!(futures::poll!(&mut wait).is_pending());
            wait
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wake_with_result_returns_it() {
        let f = Fixture::default();
        let started = tokio::time::Instant::now();
        let wait = f.parked().await;
        f.wake(Some(RESULT));
        assert_eq!(wait.await.unwrap(), Some(RESULT));
        assert_eq!(f.reads(), 0);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(f.waiters.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn wake_without_result_reads_the_store() {
        for announced in [None, Some(Bytes::new())] {
            let f = Fixture::default();
            let started = tokio::time::Instant::now();
            let wait = f.parked().await;
            f.put(RESULT);
            f.wake(announced);
            assert_eq!(wait.await.unwrap(), Some(RESULT));
            assert_eq!(f.reads(), 1);
            // Woken, not found by the periodic re-read.
            assert_eq!(started.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn read_first_finds_a_stored_result() {
        let f = Fixture::default();
        f.put(RESULT);
        let started = tokio::time::Instant::now();
        assert_eq!(f.wait(LONG, true).await.unwrap(), Some(RESULT));
        assert_eq!(f.reads(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn rereads_every_second() {
        let f = Fixture::default();
        let wait = f.parked().await;
        // The announcement was lost: the store has the result, no one said so.
        f.put(RESULT);
        let started = tokio::time::Instant::now();
        assert_eq!(wait.await.unwrap(), Some(RESULT));
        assert_eq!(started.elapsed(), REREAD);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_returns_none() {
        let f = Fixture::default();
        let started = tokio::time::Instant::now();
        let timeout = Duration::from_millis(2500);
        assert_eq!(f.wait(timeout, false).await.unwrap(), None);
        assert_eq!(started.elapsed(), timeout);
        // At 1 s, 2 s and the deadline.
        assert_eq!(f.reads(), 3);
        assert!(f.waiters.is_empty());
    }

    #[tokio::test]
    async fn a_read_error_ends_the_wait() {
        let waiters = Arc::new(ResultWaiters::default());
        let result = waiters
            .register("q", "t")
            .wait(LONG, true, || async {
                Err(CarrierError::new("get_result", "down"))
            })
            .await;
        assert_eq!(result.unwrap_err().operation(), "get_result");
        assert!(waiters.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_wait_unregisters() {
        let f = Fixture::default();
        let cut_short = tokio::time::timeout(Duration::from_millis(100), f.wait(LONG, true));
        assert!(cut_short.await.is_err());
        assert!(f.waiters.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_of_one_task_all_get_the_result() {
        let f = Fixture::default();
        let a = f.parked().await;
        let b = f.parked().await;
        assert_eq!(f.waiters.len(), 1);
        f.wake(Some(RESULT));
        assert_eq!(a.await.unwrap(), Some(RESULT));
        assert_eq!(b.await.unwrap(), Some(RESULT));
        assert_eq!(f.reads(), 0);
        assert!(f.waiters.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leaving_waiter_keeps_the_others_registered() {
        let f = Fixture::default();
        let leaving = f.waiters.register("q", "t");
        let staying = f.parked().await;
        drop(leaving);
        assert_eq!(f.waiters.len(), 1);
        let started = tokio::time::Instant::now();
        f.wake(Some(RESULT));
        assert_eq!(staying.await.unwrap(), Some(RESULT));
        // The announcement reached it: no re-read a second later.
        assert_eq!(f.reads(), 0);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(f.waiters.is_empty());
    }

    #[test]
    fn queues_and_tasks_do_not_mix() {
        let waiters = Arc::new(ResultWaiters::default());
        let _a = waiters.register("q", "t");
        let _b = waiters.register("q2", "t");
        let _c = waiters.register("q", "t2");
        assert_eq!(waiters.len(), 3);
    }
}
