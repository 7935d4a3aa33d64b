//! The durable-call suite, run against every carrier (in-process, JetStream, Redis Streams).
//!
//! A carrier's test file builds a [`DurableHarness`] and expands [`durable_suite!`](crate::durable_suite!); the
//! in-process carrier runs it on tokio's paused clock (`durable_suite!(paused; …)`), brokers on
//! the real clock with short configured timeouts.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use psrpc::durable::{
    Carrier, DeadLetters, DurableClient, QueueConfig, Worker, WorkerHandle, WorkerOptions,
};

use crate::within;

type Connect = Box<dyn Fn() -> BoxFuture<'static, Arc<dyn Carrier>> + Send + Sync>;

/// The queue every case uses (each case has a carrier of its own).
pub const QUEUE: &str = "Durable";

/// A carrier under test and a way to open new connections to it.
pub struct DurableHarness {
    name: &'static str,
    connect: Connect,
    _keep: Box<dyn Any + Send + Sync>,
}

impl DurableHarness {
    /// A harness named `name` that keeps `keep` alive and opens carriers with `connect`.
    pub fn new<F, Fut>(name: &'static str, keep: impl Any + Send + Sync, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn Carrier>> + Send + 'static,
    {
        DurableHarness {
            name,
            connect: Box::new(move || Box::pin(connect())),
            _keep: Box::new(keep),
        }
    }

    /// The carrier kind under test.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A new carrier instance (for brokers a separate connection, as another process has).
    pub async fn carrier(&self) -> Arc<dyn Carrier> {
        (self.connect)().await
    }
}

/// Short timeouts, so redelivery cases finish quickly on real brokers.
pub fn queue_config(visibility: Duration) -> QueueConfig {
    QueueConfig::default()
        .visibility_timeout(visibility)
        .dedup_window(Duration::from_secs(60))
        .result_ttl(Duration::from_secs(600))
}

pub(crate) fn worker_options(visibility: Duration) -> WorkerOptions {
    WorkerOptions::default()
        .concurrency(4)
        .queue(queue_config(visibility))
        .fetch_wait(Duration::from_millis(200))
}

pub(crate) async fn client(h: &DurableHarness, visibility: Duration) -> DurableClient {
    DurableClient::with_config(h.carrier().await, QUEUE, &queue_config(visibility))
        .await
        .expect("open queue")
}

pub(crate) async fn echo_worker(h: &DurableHarness, visibility: Duration) -> WorkerHandle {
    Worker::new(h.carrier().await, QUEUE)
        .options(worker_options(visibility))
        .handle(
            "Echo",
            |_ctx, s: String| async move { Ok(format!("echo {s}")) },
        )
        .start()
        .await
        .expect("worker")
}

/// Polls `check` until it yields a value (bounded by [`PATIENCE`]).
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            // A poll interval of a bounded wait, not a synchronisation sleep.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

pub(crate) async fn dead_letters_of(
    h: &DurableHarness,
    n: usize,
) -> Vec<(String, psrpc::durable::DeadLetter)> {
    let dlq = DeadLetters::new(h.carrier().await, QUEUE);
    eventually("dead letters", || {
        let dlq = dlq.clone();
        async move {
            let list = dlq.list(None, 100).await.expect("list dead letters");
            (list.len() >= n).then_some(list)
        }
    })
    .await
}

pub(crate) const VIS: Duration = Duration::from_secs(1);

mod broker_kill;
mod dead_letters;
mod delivery;
mod effects;
mod outage;

pub use broker_kill::survives_broker_kill;
pub use dead_letters::{
    bad_input_is_dead_lettered_at_once, replay_and_purge_dead_letters,
    second_message_of_a_dead_task_adds_no_letter,
};
pub use delivery::{
    enqueue_and_await, expired_deadline_is_dead_lettered, heartbeats_keep_long_tasks,
    idempotency_key_makes_one_task, retry_then_dead_letter, shutdown_hands_back_in_flight,
    visibility_timeout_redelivers,
};
pub use effects::effects_apply_once;
pub use outage::result_write_outage_keeps_the_delivery;

/// Declares one test per durable case, each on a fresh harness from `$harness`;
/// `paused;` runs them on tokio's paused clock (in-process carrier only).
#[macro_export]
macro_rules! durable_suite {
    (paused; $harness:expr) => {
        $crate::durable_suite!(@cases [tokio::test(start_paused = true)] $harness);
    };
    ($harness:expr) => {
        $crate::durable_suite!(@cases [tokio::test(flavor = "multi_thread", worker_threads = 2)] $harness);
    };
    (@cases [$attr:meta] $harness:expr) => {
        $crate::durable_suite!(@each [$attr] $harness;
            enqueue_and_await,
            retry_then_dead_letter,
            visibility_timeout_redelivers,
            heartbeats_keep_long_tasks,
            idempotency_key_makes_one_task,
            expired_deadline_is_dead_lettered,
            shutdown_hands_back_in_flight,
            replay_and_purge_dead_letters,
            bad_input_is_dead_lettered_at_once,
            second_message_of_a_dead_task_adds_no_letter,
            effects_apply_once,
            result_write_outage_keeps_the_delivery,
        );
    };
    (@each [$attr:meta] $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[$attr]
            async fn $case() {
                let harness = $harness;
                $crate::durable::$case(&harness).await;
            }
        )*
    };
}
