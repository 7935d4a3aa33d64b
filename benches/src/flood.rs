//! Flood: N messages published as fast as the bus takes them, with no flow control, to fan-out
//! subscribers or a queue; timed from the first publish to the last delivery, losses counted.
//!
//! This is how Go psrpc's harness compares publish paths: the publisher never waits for the
//! subscribers, so the figure includes what buffering and batching on the way can do, and a
//! subscriber that cannot keep up shows as losses instead of a slower rate.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use psrpc::bus::SubscriptionStats;
use psrpc::{Client, MethodInfo, Server};
use redis::Value;
use tokio::sync::Notify;

use crate::env::{BusKind, Fabric};
use crate::harness::Result;
use crate::mem::{self, Cpu};
use crate::raw::{self, Link, RawChannel};
use crate::suite::SMALL;

const FANOUT: MethodInfo = MethodInfo::subscription("Flood");
const QUEUE: MethodInfo = MethodInfo::queue_subscription("FloodQ");

/// Publishes in flight at once: enough that the bus, not the publisher, sets the pace.
pub const IN_FLIGHT: usize = 1024;
/// Commands per explicit Redis pipeline in the `raw_flood_pipe` baseline, and pipelines in flight.
const PIPE_BATCH: usize = 256;
const PIPES_IN_FLIGHT: usize = 4;
/// No delivery for this long after the last publish: the rest is lost.
const STALL: Duration = Duration::from_secs(1);
/// Time for subscriptions made on other connections to reach the broker.
const SETTLE: Duration = Duration::from_millis(50);

/// Counts deliveries and remembers when the last one happened.
pub struct Counter {
    delivered: AtomicU64,
    expected: u64,
    base: Instant,
    last_ns: AtomicU64,
    done: Notify,
}

impl Counter {
    fn new(expected: u64) -> Arc<Self> {
        Arc::new(Counter {
            delivered: AtomicU64::new(0),
            expected,
            base: Instant::now(),
            last_ns: AtomicU64::new(0),
            done: Notify::new(),
        })
    }

    /// Called by every subscriber for every message.
    pub fn on_delivery(&self) {
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.base.elapsed().as_nanos() as u64;
        self.last_ns.fetch_max(now, Ordering::Relaxed);
        if n == self.expected {
            self.done.notify_one();
        }
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

/// The outcome of one flood.
#[derive(Debug)]
pub struct FloodRun {
    /// Messages published (successfully).
    pub published: u64,
    /// Deliveries expected (published × fan-out).
    pub expected: u64,
    /// Deliveries seen.
    pub delivered: u64,
    /// Drops counted by the subscriptions' own counters (psrpc only).
    pub dropped: u64,
    /// Failed publishes.
    pub errors: u64,
    /// The first publish error.
    pub first_error: Option<String>,
    /// First publish to last delivery.
    pub seconds: f64,
    /// CPU of this process and of the brokers over the run.
    pub cpu: (Cpu, Cpu),
}

impl FloodRun {
    /// Deliveries that never came.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// Messages per second, each counted once however many subscribers it reached.
    pub fn messages_per_sec(&self, fanout: u64) -> f64 {
        (self.delivered / fanout.max(1)) as f64 / self.seconds.max(1e-9)
    }
}

/// Publishes `n` messages through `publish` (at most `in_flight` at once), then waits for the
/// deliveries to stop coming.
async fn drive<P, Fut>(
    n: u64,
    fanout: u64,
    counter: &Counter,
    in_flight: usize,
    mut publish: P,
) -> FloodRun
where
    P: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<u64>>,
{
    let cpu0 = mem::cpu();
    let start_ns = counter.base.elapsed().as_nanos() as u64;
    let mut pending = FuturesUnordered::new();
    let (mut published, mut errors, mut first_error) = (0u64, 0u64, None);
    let mut note = |outcome: Result<u64>| match outcome {
        Ok(k) => published += k,
        Err(err) => {
            errors += 1;
            first_error.get_or_insert_with(|| err.to_string());
        }
    };
    let mut seq = 0;
    while seq < n {
        if pending.len() >= in_flight
            && let Some(outcome) = pending.next().await
        {
            note(outcome);
        }
        pending.push(publish(seq));
        seq += 1;
    }
    while let Some(outcome) = pending.next().await {
        note(outcome);
    }
    let expected = published * fanout;
    loop {
        let before = counter.delivered();
        if before >= expected {
            break;
        }
        let _ = tokio::time::timeout(STALL, counter.done.notified()).await;
        if counter.delivered() == before {
            break;
        }
    }
    let cpu1 = mem::cpu();
    let end_ns = counter.last_ns.load(Ordering::Relaxed).max(start_ns);
    FloodRun {
        published,
        expected,
        delivered: counter.delivered().min(expected),
        dropped: 0,
        errors,
        first_error,
        seconds: (end_ns - start_ns) as f64 / 1e9,
        cpu: (cpu0, cpu1),
    }
}

/// The raw broker client: `subscribers` connections (a queue group if `queue`), one publisher.
pub async fn raw_flood(
    fabric: &Fabric<'_>,
    n: u64,
    subscribers: usize,
    queue: bool,
) -> Result<FloodRun> {
    let name = if queue { "flood.q" } else { "flood.f" };
    let channel = RawChannel::new(name, queue);
    let fanout = if queue { 1 } else { subscribers as u64 };
    let counter = Counter::new(n * fanout);
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let (link, mut payloads) = Link::subscribe(fabric, &channel, queue).await?;
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let _link = link;
            while payloads.next().await.is_some() {
                counter.on_delivery();
            }
        }));
    }
    tokio::time::sleep(SETTLE).await;
    let publisher = Link::connect(fabric).await?;
    let run = drive(n, fanout, &counter, IN_FLIGHT, |seq| {
        let publish = publisher.publish(&channel, raw::payload(SMALL, seq));
        async move { publish.await.map(|()| 1) }
    })
    .await;
    for task in tasks {
        task.abort();
    }
    Ok(run)
}

/// Redis only: the publisher sends explicit `redis::pipe()` batches of PUBLISH commands
/// instead of single commands, to one subscriber.
pub async fn raw_flood_pipe(fabric: &Fabric<'_>, n: u64) -> Result<FloodRun> {
    let channel = RawChannel::new("flood.p", false);
    let counter = Counter::new(n);
    let (link, mut payloads) = Link::subscribe(fabric, &channel, false).await?;
    let task = {
        let counter = counter.clone();
        tokio::spawn(async move {
            let _link = link;
            while payloads.next().await.is_some() {
                counter.on_delivery();
            }
        })
    };
    tokio::time::sleep(SETTLE).await;
    let Link::Redis(conn) = Link::connect(fabric).await? else {
        return Err("raw_flood_pipe needs Redis".into());
    };
    let batches = n.div_ceil(PIPE_BATCH as u64);
    let run = drive(batches, 1, &counter, PIPES_IN_FLIGHT, |batch| {
        let mut conn = conn.clone();
        let mut pipe = redis::pipe();
        let first = batch * PIPE_BATCH as u64;
        for seq in first..(first + PIPE_BATCH as u64).min(n) {
            pipe.cmd("PUBLISH")
                .arg("flood.p")
                .arg(raw::payload(SMALL, seq).as_ref());
        }
        async move {
            let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
            Ok(replies.len() as u64)
        }
    })
    .await;
    task.abort();
    Ok(run)
}

/// psrpc: `Server::publish` to `Client::subscribe` subscriptions, each client on a bus of its own.
pub async fn psrpc_flood(
    fabric: &Fabric<'_>,
    service: &str,
    n: u64,
    subscribers: usize,
    queue: bool,
) -> Result<FloodRun> {
    let method = if queue { QUEUE } else { FANOUT };
    let fanout = if queue { 1 } else { subscribers as u64 };
    let counter = Counter::new(n * fanout);
    let mut tasks = Vec::new();
    let mut stats: Vec<Arc<SubscriptionStats>> = Vec::new();
    for _ in 0..subscribers {
        let client = Client::new(service.to_owned(), fabric.bus().await?).await?;
        let mut sub = client.subscribe::<Bytes>(method, &[]).await?;
        stats.push(sub.stats().clone());
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            while sub.recv().await.is_some() {
                counter.on_delivery();
            }
        }));
    }
    tokio::time::sleep(SETTLE).await;
    let server = Server::new(service.to_owned(), fabric.bus().await?);
    let mut run = drive(n, fanout, &counter, IN_FLIGHT, |seq| {
        let server = server.clone();
        async move {
            server
                .publish(method, &[], &raw::payload(SMALL, seq))
                .await?;
            Ok(1)
        }
    })
    .await;
    for task in tasks {
        task.abort();
    }
    server.shutdown().await;
    run.dropped = stats.iter().map(|s| s.dropped()).sum();
    Ok(run)
}

/// Whether `kind` has a raw queue to compare the psrpc queue flood with.
pub fn has_raw_queue(kind: BusKind) -> bool {
    kind != BusKind::Redis
}
