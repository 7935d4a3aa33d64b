//! The measuring loops: sequential latency, concurrent throughput, and flow-controlled
//! publish/subscribe throughput.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::stats::Latencies;

/// Any error of a benchmark step.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The result of a benchmark step.
pub type Result<T> = std::result::Result<T, BoxError>;

/// How much each measurement runs, by mode.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Untimed calls before a latency measurement.
    pub warmup_calls: usize,
    /// Timed sequential calls.
    pub calls: usize,
    /// Upper bound on one latency measurement (a slow debug build stops early).
    pub max_latency_time: Duration,
    /// Untimed run before a throughput window.
    pub warmup: Duration,
    /// The throughput window.
    pub duration: Duration,
    /// Concurrent callers for throughput.
    pub callers: usize,
    /// Topic registrations for the memory measurement.
    pub registrations: usize,
    /// Messages of a flood.
    pub flood_messages: u64,
}

impl Budget {
    /// A few seconds per measurement at most.
    pub fn quick() -> Self {
        Budget {
            warmup_calls: 100,
            calls: 500,
            max_latency_time: Duration::from_secs(2),
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(400),
            callers: 64,
            registrations: 1_000,
            flood_messages: 5_000,
        }
    }

    /// The published figures.
    pub fn full() -> Self {
        Budget {
            warmup_calls: 500,
            calls: 5_000,
            max_latency_time: Duration::from_secs(30),
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(3),
            callers: 64,
            registrations: 10_000,
            flood_messages: 50_000,
        }
    }
}

/// One caller of a benchmark: owns whatever a call needs (a client, a reply receiver).
pub trait Caller: Send + 'static {
    /// Makes call number `seq` and waits for its outcome.
    fn call(&mut self, seq: u64) -> impl Future<Output = Result<()>> + Send;
}

/// A caller made of a closure whose futures own what they need.
pub struct FnCaller<F>(pub F);

impl<F, Fut> Caller for FnCaller<F>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    fn call(&mut self, seq: u64) -> impl Future<Output = Result<()>> + Send {
        (self.0)(seq)
    }
}

/// The outcome of a latency run.
#[derive(Debug)]
pub struct LatencyRun {
    /// Percentiles of the successful calls.
    pub latencies: Option<Latencies>,
    /// Successful calls timed.
    pub samples: u64,
    /// Failed calls.
    pub errors: u64,
    /// The first error, for the log.
    pub first_error: Option<String>,
}

/// Warms up, then times `budget.calls` sequential calls.
pub async fn latency<C: Caller>(budget: &Budget, caller: &mut C) -> LatencyRun {
    let started = Instant::now();
    let mut first_error = None;
    let mut errors = 0;
    for seq in 0..budget.warmup_calls as u64 {
        if let Err(err) = caller.call(seq).await {
            errors += 1;
            first_error.get_or_insert_with(|| err.to_string());
        }
    }
    let mut samples = Vec::with_capacity(budget.calls);
    for seq in 0..budget.calls as u64 {
        if started.elapsed() > budget.max_latency_time {
            break;
        }
        let t = Instant::now();
        match caller.call(budget.warmup_calls as u64 + seq).await {
            Ok(()) => samples.push(t.elapsed()),
            Err(err) => {
                errors += 1;
                first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    LatencyRun {
        samples: samples.len() as u64,
        latencies: Latencies::from_samples(&mut samples),
        errors,
        first_error,
    }
}

/// The outcome of a throughput run.
#[derive(Debug)]
pub struct ThroughputRun {
    /// Operations completed per second in the window.
    pub ops_per_sec: f64,
    /// Operations completed in the window.
    pub ops: u64,
    /// Failed operations in the window.
    pub errors: u64,
    /// The first error, for the log.
    pub first_error: Option<String>,
    /// Messages written off as lost (publish/subscribe runs).
    pub lost: u64,
    /// CPU time of this process per operation, in µs.
    pub cpu_us_per_op: Option<f64>,
    /// CPU time of the brokers this run started per operation, in µs.
    pub broker_cpu_us_per_op: Option<f64>,
}

impl ThroughputRun {
    fn new(ops: u64, elapsed: Duration, cpu: (crate::mem::Cpu, crate::mem::Cpu)) -> Self {
        let per_op = |a: u64, b: u64| (ops > 0 && b > a).then(|| (b - a) as f64 / ops as f64);
        ThroughputRun {
            ops_per_sec: ops as f64 / elapsed.as_secs_f64(),
            ops,
            errors: 0,
            first_error: None,
            lost: 0,
            cpu_us_per_op: per_op(cpu.0.ours, cpu.1.ours),
            broker_cpu_us_per_op: per_op(cpu.0.brokers, cpu.1.brokers),
        }
    }
}

#[derive(Default)]
struct Window {
    measuring: AtomicBool,
    stop: AtomicBool,
}

/// Runs one task per caller, each calling in a loop; counts the calls completed during the
/// window after the warm-up.
pub async fn throughput<C, M>(budget: &Budget, mut make: M) -> ThroughputRun
where
    C: Caller,
    M: FnMut(usize) -> C,
{
    let window = Arc::new(Window::default());
    let mut tasks = Vec::with_capacity(budget.callers);
    for index in 0..budget.callers {
        let mut caller = make(index);
        let window = window.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut seq = (index as u64) << 32;
            while !window.stop.load(Ordering::Relaxed) {
                let outcome = caller.call(seq).await;
                seq += 1;
                if window.measuring.load(Ordering::Relaxed) {
                    match outcome {
                        Ok(()) => ops += 1,
                        Err(err) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| err.to_string());
                        }
                    }
                }
            }
            (ops, errors, first_error)
        }));
    }
    tokio::time::sleep(budget.warmup).await;
    window.measuring.store(true, Ordering::Relaxed);
    let cpu0 = crate::mem::cpu();
    let t0 = Instant::now();
    tokio::time::sleep(budget.duration).await;
    window.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu1 = crate::mem::cpu();
    window.stop.store(true, Ordering::Relaxed);
    let (mut ops, mut errors, mut first) = (0, 0, None);
    for task in tasks {
        if let Ok((o, e, first_error)) = task.await {
            ops += o;
            errors += e;
            if first.is_none() {
                first = first_error;
            }
        }
    }
    let mut run = ThroughputRun::new(ops, elapsed, (cpu0, cpu1));
    run.errors = errors;
    run.first_error = first;
    run
}

/// Flow control between publishers and subscribers: publishers keep at most a window of
/// messages undelivered, so the measured rate is what subscribers actually get and bounded
/// buffers are not simply overrun.
pub struct Flow {
    published: AtomicU64,
    delivered: AtomicU64,
    /// Deliveries per subscriber when fanning out: the window follows the slowest one, so no
    /// subscriber falls further behind than its buffer.
    per_subscriber: Vec<AtomicU64>,
    /// Messages written off after no delivery progress for a while (dropped on the way).
    lost: AtomicU64,
    fanout: u64,
    window: u64,
    notify_every: u64,
    progress: Notify,
    stop: AtomicBool,
}

/// How long publishers wait for delivery progress before writing the window off as lost.
const STALL: Duration = Duration::from_millis(200);

impl Flow {
    /// A flow where each message reaches `fanout` subscribers and at most `window` messages
    /// are in flight.
    pub fn new(fanout: u64, window: u64) -> Arc<Self> {
        Arc::new(Flow {
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            per_subscriber: (0..if fanout > 1 { fanout } else { 0 })
                .map(|_| AtomicU64::new(0))
                .collect(),
            lost: AtomicU64::new(0),
            fanout: fanout.max(1),
            window: window.max(1),
            // Waking publishers on every delivery would cost more than the delivery itself.
            notify_every: (window * fanout / 8).max(1),
            progress: Notify::new(),
            stop: AtomicBool::new(false),
        })
    }

    /// Called by subscriber number `subscriber` for every message it receives.
    pub fn on_delivery(&self, subscriber: usize) {
        if let Some(count) = self.per_subscriber.get(subscriber) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(self.notify_every) {
            self.progress.notify_waiters();
        }
    }

    /// Deliveries so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    fn in_flight(&self) -> u64 {
        let delivered = match self
            .per_subscriber
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
        {
            Some(slowest) => slowest,
            None => self.delivered.load(Ordering::Relaxed),
        };
        let done = delivered + self.lost.load(Ordering::Relaxed);
        self.published.load(Ordering::Relaxed).saturating_sub(done)
    }

    /// Waits for room in the window, then takes a sequence number to publish; `None` once
    /// stopped.
    pub async fn next(&self) -> Option<u64> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let in_flight = self.in_flight();
            if in_flight < self.window {
                return Some(self.published.fetch_add(1, Ordering::Relaxed));
            }
            let before = self.delivered();
            if tokio::time::timeout(STALL, notified).await.is_err() && self.delivered() == before {
                // Nothing arrived for a long while: what is in flight was dropped.
                self.lost.fetch_add(in_flight, Ordering::Relaxed);
            }
        }
    }

    /// Tells publishers to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.progress.notify_waiters();
    }
}

/// Runs `publishers` tasks that publish through `publish` under `flow`'s window and measures
/// deliveries per second over the window after the warm-up. Subscribers must already be
/// feeding [`Flow::on_delivery`].
pub async fn pubsub<P, Fut>(
    budget: &Budget,
    flow: &Arc<Flow>,
    publishers: usize,
    publish: P,
) -> ThroughputRun
where
    P: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let publish = Arc::new(publish);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let (flow, publish, errors) = (flow.clone(), publish.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut first_error = None;
            while let Some(seq) = flow.next().await {
                if let Err(err) = publish(seq).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert_with(|| err.to_string());
                    // Give back the slot, so errors do not look like losses.
                    flow.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            first_error
        }));
    }
    tokio::time::sleep(budget.warmup).await;
    let (d0, l0, e0) = (
        flow.delivered(),
        flow.lost.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    let cpu0 = crate::mem::cpu();
    let t0 = Instant::now();
    tokio::time::sleep(budget.duration).await;
    let cpu1 = crate::mem::cpu();
    let (d1, l1, e1) = (
        flow.delivered(),
        flow.lost.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    let elapsed = t0.elapsed();
    flow.stop();
    let mut first_error = None;
    for task in tasks {
        if let Ok(Some(err)) = task.await {
            first_error.get_or_insert(err);
        }
    }
    // Messages, each counted once however many subscribers it reached.
    let mut run = ThroughputRun::new((d1 - d0) / flow.fanout, elapsed, (cpu0, cpu1));
    run.errors = e1 - e0;
    run.first_error = first_error;
    run.lost = (l1 - l0).saturating_sub(e1 - e0);
    run
}
