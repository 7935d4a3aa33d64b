//! The closed-loop load of the benchmark binaries: `workers` tasks each run one operation
//! after another for a fixed span; what counts is how many succeeded and how long each took.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What a run measured.
pub struct Outcome {
    /// Operations that succeeded.
    pub ops: u64,
    /// From the first operation's start to the last one's end.
    pub elapsed: Duration,
    /// The latency of every successful operation, sorted.
    pub latencies: Vec<Duration>,
}

impl Outcome {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The median latency in microseconds (NaN when nothing succeeded).
    pub fn p50_us(&self) -> f64 {
        self.latencies
            .get(self.latencies.len() / 2)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
    }
}

/// Runs `op(worker)` from `workers` tasks for `span`; an operation running when the span ends
/// is finished and counted.
pub async fn run<F, Fut, E>(workers: usize, span: Duration, op: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: 'static,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (op, stop) = (op.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if op(w).await.is_ok() {
                        latencies.push(t.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(span).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    latencies.sort_unstable();
    Outcome {
        ops: latencies.len() as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}
