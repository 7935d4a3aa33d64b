//! Scatter/gather batches: submit many requests of one method to a worker fleet as one batch,
//! and gather each result as it completes.
//!
//! A [`Batch`] is a [`Stream`](futures::Stream) of [`BatchItem`]s (each task exactly once,
//! with its index or the caller's key) and has a [`Progress`]; [`Batch::collect`] gathers
//! everything into input order. Two drivers:
//!
//! - [`Batch::queue`]: each task is an ordinary call of a QUEUE method (one server of the
//!   fleet runs it). At most once, no broker state, fastest. Cancelling the batch cancels the
//!   calls in flight; their handlers see `ctx.cancelled()`.
//! - [`Batch::durable`]: each task is a [durable](crate::durable) task. At least once: tasks
//!   survive worker crashes, and a restarted coordinator re-attaches by batch ID with
//!   [`Batch::resume`] (or [`Batch::attach`]) and gathers what finished meanwhile.
//!
//! [`BatchOptions`] limit the tasks in flight per batch, bound the batch size, set a batch
//! deadline and a [`FailurePolicy`]. Every task carries the batch ID (metadata
//! [`BATCH_ID_KEY`], and for durable batches a task ID derived from it), so results of another
//! batch or an earlier run never mix in.
//!
//! ```
//! use std::sync::Arc;
//! use psrpc::batch::{Batch, BatchOptions};
//! use psrpc::durable::{Carrier, DurableClient, LocalCarrier, Worker};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let carrier: Arc<dyn Carrier> = Arc::new(LocalCarrier::new());
//! let worker = Worker::new(carrier.clone(), "Words")
//!     .handle("Count", |_ctx, text: String| async move {
//!         Ok(text.split_whitespace().count() as u64)
//!     })
//!     .start()
//!     .await
//!     .unwrap();
//! let client = DurableClient::new(carrier, "Words").await.unwrap();
//! let lines = ["a b", "c", "d e f"].map(String::from);
//! let batch = Batch::<u64>::durable(&client, "Count", lines, BatchOptions::new()).await.unwrap();
//! assert_eq!(batch.try_collect().await.unwrap(), vec![2, 1, 3]);
//! worker.shutdown().await;
//! # });
//! ```

mod durable;
mod error;
mod handle;
mod options;
mod progress;
mod queue;
mod schedule;

pub use durable::{BatchRecord, batch_task_id};
pub use error::{BatchError, ItemError};
pub use handle::{Batch, BatchEnd, BatchItem};
pub use options::{BatchOptions, FailurePolicy, MAX_BATCH_ID};
pub use progress::Progress;
pub use queue::{BATCH_ID_KEY, BATCH_INDEX_KEY};
