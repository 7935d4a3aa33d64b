//! The scheduling loop both drivers share: start tasks up to the in-flight limit, pass on each
//! outcome once, and stop on cancel, deadline or (by policy) the first error.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::error::ItemError;
use super::handle::{BatchEnd, Sender, Shared};
use super::options::FailurePolicy;

/// How one batch is scheduled.
pub(crate) struct Plan {
    pub(crate) limit: usize,
    pub(crate) deadline: Option<Instant>,
    pub(crate) policy: FailurePolicy,
}

/// How the loop ended, and which started tasks had not finished then.
pub(crate) struct Stopped {
    pub(crate) end: Option<BatchEnd>,
    pub(crate) unfinished: Vec<usize>,
}

/// Runs the tasks `indices` (each once) with `start`, sending outcomes to `tx`. Returns
/// `end: None` when the handle was dropped.
pub(crate) async fn run<Resp, F, Fut>(
    shared: &Arc<Shared>,
    tx: &Sender<Resp>,
    plan: Plan,
    indices: impl IntoIterator<Item = usize>,
    mut start: F,
) -> Stopped
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = (usize, Result<Resp, ItemError>)>,
{
    let mut indices = indices.into_iter();
    let mut running = FuturesUnordered::new();
    let mut started = HashSet::new();
    let deadline = async {
        match plan.deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let end = loop {
        while running.len() < plan.limit {
            let Some(index) = indices.next() else { break };
            shared.counters.started();
            started.insert(index);
            running.push(start(index));
        }
        if running.is_empty() {
            break Some(BatchEnd::Completed);
        }
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break Some(BatchEnd::Cancelled),
            _ = tx.closed() => break None,
            _ = &mut deadline => break Some(BatchEnd::DeadlineExceeded),
            Some((index, result)) = running.next() => {
                started.remove(&index);
                let failed = result.is_err();
                shared.counters.finished(!failed);
                // The receiver may be gone; the next turn sees that.
                let _ = tx.send((index, result));
                if failed && plan.policy == FailurePolicy::StopAtFirstError {
                    break Some(BatchEnd::Stopped { index });
                }
            }
        }
    };
    // Dropping the running futures cancels what they were doing (queue calls send their
    // cancellation to the server).
    drop(running);
    shared
        .counters
        .in_flight
        .fetch_sub(started.len(), std::sync::atomic::Ordering::Relaxed);
    Stopped {
        end,
        unfinished: started.into_iter().collect(),
    }
}
