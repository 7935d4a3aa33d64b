//! Queue and worker statistics (the durable-call metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The state of a queue, as its carrier reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Tasks waiting to be delivered (including those waiting out a retry delay).
    pub waiting: u64,
    /// Tasks delivered and not yet acked.
    pub in_flight: u64,
    /// Dead letters kept.
    pub dead_letters: u64,
    /// How long the oldest waiting task has waited, when the carrier knows.
    pub oldest_waiting_age: Option<Duration>,
}

/// What one worker has done since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Handler runs started.
    pub started: u64,
    /// Tasks completed successfully.
    pub succeeded: u64,
    /// Failed attempts scheduled for a retry.
    pub retries: u64,
    /// Tasks dead-lettered (or, with dead-lettering off, dropped with their error).
    pub dead_lettered: u64,
    /// Deliveries that were not a task's first.
    pub redeliveries: u64,
    /// Deliveries skipped because the task's result already existed.
    pub skipped_done: u64,
    /// Tasks handed back at shutdown.
    pub handed_back: u64,
    /// Handler runs in progress.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) started: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) redeliveries: AtomicU64,
    pub(crate) skipped_done: AtomicU64,
    pub(crate) handed_back: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            started: get(&self.started),
            succeeded: get(&self.succeeded),
            retries: get(&self.retries),
            dead_lettered: get(&self.dead_lettered),
            redeliveries: get(&self.redeliveries),
            skipped_done: get(&self.skipped_done),
            handed_back: get(&self.handed_back),
            in_flight: get(&self.in_flight),
        }
    }
}

#[cfg(feature = "metrics")]
impl QueueStats {
    /// Records the stats as `metrics` gauges `psrpc_durable_waiting`, `psrpc_durable_in_flight`,
    /// `psrpc_durable_dead_letters` and `psrpc_durable_oldest_waiting_seconds` (label `queue`).
    pub fn record(&self, queue: &str) {
        let q = queue.to_owned();
        metrics::gauge!("psrpc_durable_waiting", "queue" => q.clone()).set(self.waiting as f64);
        metrics::gauge!("psrpc_durable_in_flight", "queue" => q.clone()).set(self.in_flight as f64);
        metrics::gauge!("psrpc_durable_dead_letters", "queue" => q.clone())
            .set(self.dead_letters as f64);
        metrics::gauge!("psrpc_durable_oldest_waiting_seconds", "queue" => q)
            .set(self.oldest_waiting_age.map_or(0.0, |d| d.as_secs_f64()));
    }
}

#[cfg(feature = "metrics")]
impl WorkerStats {
    /// Records the stats as `metrics` gauges `psrpc_durable_worker_<field>` (label `queue`).
    pub fn record(&self, queue: &str) {
        for (name, value) in [
            ("psrpc_durable_worker_started", self.started),
            ("psrpc_durable_worker_succeeded", self.succeeded),
            ("psrpc_durable_worker_retries", self.retries),
            ("psrpc_durable_worker_dead_lettered", self.dead_lettered),
            ("psrpc_durable_worker_redeliveries", self.redeliveries),
            ("psrpc_durable_worker_skipped_done", self.skipped_done),
            ("psrpc_durable_worker_handed_back", self.handed_back),
            ("psrpc_durable_worker_in_flight", self.in_flight),
        ] {
            metrics::gauge!(name, "queue" => queue.to_owned()).set(value as f64);
        }
    }
}
