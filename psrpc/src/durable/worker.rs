//! Workers: fetch tasks with bounded concurrency and run their handlers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::carrier::{Carrier, QueueConfig};
use super::error::DurableError;
use super::process::{Shared, process};
use super::stats::{Counters, WorkerStats};
use crate::Metadata;

/// What a handler knows about the task it runs.
#[derive(Clone, Debug)]
pub struct TaskContext {
    /// The queue.
    pub queue: Arc<str>,
    /// The task ID.
    pub task_id: String,
    /// The method.
    pub method: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The attempt limit.
    pub max_attempts: u32,
    /// The task's deadline, if any.
    pub deadline: Option<SystemTime>,
    /// The caller's metadata (with the trace context).
    pub metadata: Metadata,
    /// For [`record_effect`](Self::record_effect).
    pub(crate) carrier: CarrierRef,
    /// How long effect records are kept: the task's result TTL.
    pub(crate) result_ttl: Duration,
}

/// The carrier, in a [`TaskContext`] (which is `Debug`; carriers need not be).
#[derive(Clone)]
pub(crate) struct CarrierRef(pub(crate) Arc<dyn Carrier>);

impl std::fmt::Debug for CarrierRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Carrier")
    }
}

/// How a registered handler failed.
pub(crate) enum HandlerFailure {
    /// The payload is not the method's request type.
    Undecodable(prost::DecodeError),
    /// The handler returned an error.
    Failed(crate::Error),
}

pub(crate) type Handler = Arc<
    dyn Fn(TaskContext, Bytes) -> BoxFuture<'static, Result<Bytes, HandlerFailure>> + Send + Sync,
>;

/// Worker settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Handler runs at once (and so the most tasks fetched ahead).
    pub concurrency: usize,
    /// The queue's settings (visibility timeout, …), applied when the worker starts.
    pub queue: QueueConfig,
    /// Heartbeat interval while a handler runs; `None` for a third of the visibility timeout.
    pub heartbeat: Option<Duration>,
    /// Send no heartbeats (for tests of visibility-timeout redelivery).
    pub no_heartbeats: bool,
    /// How long one fetch waits for tasks.
    pub fetch_wait: Duration,
    /// At shutdown, how long in-flight handlers may finish before their tasks are handed back.
    pub shutdown_grace: Duration,
    /// How often the worker records its queue's and its own statistics as `metrics` gauges
    /// (see [`QueueStats::record`](super::QueueStats::record) and
    /// [`WorkerStats::record`](super::WorkerStats::record)): queue depth, in flight, dead
    /// letters, age of the oldest waiting task, retries, dead-lettered and the other worker
    /// counters. `None` (the default) records nothing; shutdown records once more.
    #[cfg(feature = "metrics")]
    pub metrics_every: Option<Duration>,
}

impl WorkerOptions {
    /// Sets [`concurrency`](Self::concurrency).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`queue`](Self::queue).
    pub fn queue(mut self, queue: QueueConfig) -> Self {
        self.queue = queue;
        self
    }

    /// Sets [`heartbeat`](Self::heartbeat).
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Sets [`no_heartbeats`](Self::no_heartbeats).
    pub fn no_heartbeats(mut self, no_heartbeats: bool) -> Self {
        self.no_heartbeats = no_heartbeats;
        self
    }

    /// Sets [`fetch_wait`](Self::fetch_wait).
    pub fn fetch_wait(mut self, fetch_wait: Duration) -> Self {
        self.fetch_wait = fetch_wait;
        self
    }

    /// Sets [`shutdown_grace`](Self::shutdown_grace).
    pub fn shutdown_grace(mut self, shutdown_grace: Duration) -> Self {
        self.shutdown_grace = shutdown_grace;
        self
    }

    /// Sets [`metrics_every`](Self::metrics_every).
    #[cfg(feature = "metrics")]
    pub fn metrics_every(mut self, every: Duration) -> Self {
        self.metrics_every = Some(every.max(Duration::from_millis(1)));
        self
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 16,
            queue: QueueConfig::default(),
            heartbeat: None,
            no_heartbeats: false,
            fetch_wait: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(10),
            #[cfg(feature = "metrics")]
            metrics_every: None,
        }
    }
}

impl WorkerOptions {
    pub(crate) fn heartbeat_interval(&self) -> Option<Duration> {
        if self.no_heartbeats {
            return None;
        }
        Some(
            self.heartbeat
                .unwrap_or(self.queue.visibility_timeout / 3)
                .max(Duration::from_millis(10)),
        )
    }
}

/// Runs the handlers of one queue's methods. Build it, register handlers, [`start`](Self::start).
pub struct Worker {
    carrier: Arc<dyn Carrier>,
    queue: Arc<str>,
    options: WorkerOptions,
    handlers: HashMap<String, Handler>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("methods", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker of `queue` with default options and no handlers.
    pub fn new(carrier: Arc<dyn Carrier>, queue: &str) -> Self {
        Worker {
            carrier,
            queue: queue.into(),
            options: WorkerOptions::default(),
            handlers: HashMap::new(),
        }
    }

    /// Sets the options.
    pub fn options(mut self, options: WorkerOptions) -> Self {
        self.options = options;
        self
    }

    /// Registers the handler of `method`.
    pub fn handle<Req, Resp, F, Fut>(mut self, method: &str, handler: F) -> Self
    where
        Req: Message + Default + 'static,
        Resp: Message + 'static,
        F: Fn(TaskContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::Result<Resp>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |ctx, payload: Bytes| {
            let handler = handler.clone();
            Box::pin(async move {
                let request = Req::decode(payload).map_err(HandlerFailure::Undecodable)?;
                match handler(ctx, request).await {
                    Ok(resp) => Ok(Bytes::from(resp.encode_to_vec())),
                    Err(err) => Err(HandlerFailure::Failed(err)),
                }
            })
        });
        self.handlers.insert(method.to_owned(), erased);
        self
    }

    /// Opens the queue and starts fetching and running tasks.
    ///
    /// # Errors
    /// The carrier could not open the queue.
    pub async fn start(self) -> Result<WorkerHandle, DurableError> {
        self.carrier.open(&self.queue, &self.options.queue).await?;
        let stop = CancellationToken::new();
        let hand_back = CancellationToken::new();
        let tracker = TaskTracker::new();
        let shared = Arc::new(Shared {
            carrier: self.carrier,
            queue: self.queue,
            heartbeat: self.options.heartbeat_interval(),
            handlers: self.handlers,
            counters: Counters::default(),
            hand_back: hand_back.clone(),
        });
        #[cfg(feature = "metrics")]
        let reporter = self
            .options
            .metrics_every
            .map(|every| tokio::spawn(report_metrics(shared.clone(), every, stop.clone())));
        let fetcher = tokio::spawn(fetch_loop(
            shared.clone(),
            self.options.concurrency.max(1),
            self.options.fetch_wait,
            stop.clone(),
            tracker.clone(),
        ));
        Ok(WorkerHandle {
            shared,
            stop,
            hand_back,
            tracker,
            fetcher: Some(fetcher),
            grace: self.options.shutdown_grace,
            #[cfg(feature = "metrics")]
            reporter,
        })
    }
}

/// A running worker. Dropping it stops fetching and hands running tasks back; prefer
/// [`shutdown`](Self::shutdown), which waits for that.
#[derive(Debug)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
    stop: CancellationToken,
    hand_back: CancellationToken,
    tracker: TaskTracker,
    fetcher: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
    #[cfg(feature = "metrics")]
    reporter: Option<tokio::task::JoinHandle<()>>,
}

impl WorkerHandle {
    /// What the worker has done so far.
    pub fn stats(&self) -> WorkerStats {
        self.shared.counters.snapshot()
    }

    /// Stops fetching, lets running handlers finish within the shutdown grace, hands the rest
    /// back for immediate redelivery, and returns the final stats.
    pub async fn shutdown(mut self) -> WorkerStats {
        let grace = self.grace;
        self.shutdown_within(grace).await
    }

    /// As [`shutdown`](Self::shutdown) with this grace period.
    ///
    /// # Cancel safety
    /// If dropped, the shutdown continues as when the handle is dropped.
    pub async fn shutdown_within(&mut self, grace: Duration) -> WorkerStats {
        self.stop.cancel();
        if let Some(fetcher) = self.fetcher.take() {
            let _ = fetcher.await;
            // Tasks the carrier took ahead of the fetch loop go back at once.
            if let Err(err) = self.shared.carrier.stop_fetching(&self.shared.queue).await {
                tracing::debug!(error = %err, "durable stop_fetching failed");
            }
        }
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            self.hand_back.cancel();
            self.tracker.wait().await;
        }
        #[cfg(feature = "metrics")]
        if let Some(reporter) = self.reporter.take() {
            reporter.abort();
            record_metrics(&self.shared).await;
        }
        self.stats()
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop.cancel();
        self.hand_back.cancel();
    }
}

async fn fetch_loop(
    shared: Arc<Shared>,
    concurrency: usize,
    wait: Duration,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let mut held = vec![first];
        while let Ok(p) = permits.clone().try_acquire_owned() {
            held.push(p);
        }
        // The fetch is not raced against `stop`: dropping it could lose track of tasks the
        // broker already handed over (they would wait out the visibility timeout).
        let fetched = shared.carrier.fetch(&shared.queue, held.len(), wait).await;
        match fetched {
            Ok(deliveries) => {
                failures = 0;
                for delivery in deliveries {
                    let Some(permit) = held.pop() else { break };
                    let shared = shared.clone();
                    if stop.is_cancelled() {
                        let _ = shared.carrier.release(&shared.queue, &delivery).await;
                        continue;
                    }
                    tracker.spawn(async move {
                        process(&shared, delivery).await;
                        drop(permit);
                    });
                }
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::warn!(queue = %shared.queue, error = %err, "durable fetch failed");
                // Backoff while the broker is away, so a restart is not met with a busy loop.
                let pause = Duration::from_millis(50 * u64::from(failures.min(20)));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Records the queue's and the worker's statistics every `every` until `stop`.
#[cfg(feature = "metrics")]
async fn report_metrics(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => record_metrics(&shared).await,
        }
    }
}

#[cfg(feature = "metrics")]
async fn record_metrics(shared: &Shared) {
    // The queue's figures come from the broker; a failed read skips them this time.
    match shared.carrier.stats(&shared.queue).await {
        Ok(stats) => stats.record(&shared.queue),
        Err(err) => tracing::debug!(error = %err, "durable queue stats unavailable"),
    }
    shared.counters.snapshot().record(&shared.queue);
}
