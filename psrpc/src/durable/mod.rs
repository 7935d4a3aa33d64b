//! Durable calls: at-least-once queued methods whose tasks survive worker crashes and broker
//! restarts, with results that can be awaited or fetched later.
//!
//! Ordinary psrpc calls are at-most-once: a request reaching a server that then dies is gone.
//! A durable call instead *enqueues a task* on a broker's persistent primitive (a JetStream
//! work-queue stream, a Redis stream, or the in-process [`LocalCarrier`] for tests and demos),
//! and workers process it:
//!
//! - [`DurableClient::enqueue`] resolves only once the carrier has persisted the task, and
//!   returns a [`TaskHandle`] with the task ID; an idempotency key makes repeated enqueues one
//!   task;
//! - a [`Worker`] acks a task only after its handler returned; an error or panic is retried
//!   with exponential backoff and jitter up to the attempt limit, then the task is
//!   dead-lettered with its last error; a crashed worker's tasks come back after the visibility
//!   timeout, which heartbeats extend while a handler runs;
//! - the outcome is stored for the result TTL, so a caller can [`TaskHandle::wait`] for it or
//!   [`DurableClient::result`] it later by ID, and a redelivered task whose result exists is not
//!   run again;
//! - tasks may carry a deadline (expired tasks are dead-lettered, not run); undecodable tasks
//!   are dead-lettered at once; oversized payloads are refused at enqueue;
//! - [`DeadLetters`] lists, inspects, replays and purges dead letters;
//! - a side effect that must not be applied twice when a task runs twice (a worker killed
//!   after the effect, before the result) is recorded with [`TaskContext::record_effect`], an
//!   atomic create-if-absent on the carrier, or passed to an external system with
//!   [`TaskContext::idempotency_key`] (see [`Effect`]).
//!
//! Carriers implement the object-safe [`Carrier`] trait; a third party can add one (one that
//! announces stored results can wait for them with [`ResultWaiters`]). Durable
//! queues are a Rust-only extension: their channels, streams and envelopes ([`TaskEnvelope`],
//! [`TaskResult`], [`DeadLetter`]) are never seen by Go psrpc.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use psrpc::durable::{Carrier, DurableClient, EnqueueOptions, LocalCarrier, Worker};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let carrier: Arc<dyn Carrier> = Arc::new(LocalCarrier::new());
//! let worker = Worker::new(carrier.clone(), "Mailer")
//!     .handle("Send", |_ctx, to: String| async move { Ok(format!("sent to {to}")) })
//!     .start()
//!     .await
//!     .unwrap();
//! let client = DurableClient::new(carrier, "Mailer").await.unwrap();
//! let task = client
//!     .enqueue::<_, String>("Send", &"bob".to_string(), EnqueueOptions::default())
//!     .await
//!     .unwrap();
//! assert_eq!(task.wait(Duration::from_secs(5)).await.unwrap(), "sent to bob");
//! worker.shutdown().await;
//! # });
//! ```

mod carrier;
mod client;
mod dead_letter;
mod effect;
mod error;
mod local;
mod process;
mod stats;
mod task;
mod waiters;
mod worker;

pub use carrier::{
    Carrier, CarrierFuture, Delivery, Enqueued, NewTask, QueueConfig, Receipt, StoredDeadLetter,
};
pub use client::{DurableClient, EnqueueOptions, TaskHandle};
pub use dead_letter::DeadLetters;
pub use effect::Effect;
pub use error::{CarrierError, DurableError};
pub use local::LocalCarrier;
pub use stats::{QueueStats, WorkerStats};
pub use task::{
    DeadLetter, DeadLetterReason, TaskEnvelope, TaskOptions, TaskResult, backoff_delay,
    task_id_for_key,
};
pub use waiters::{ResultWait, ResultWaiters};
pub use worker::{TaskContext, Worker, WorkerHandle, WorkerOptions};
