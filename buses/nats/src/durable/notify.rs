//! Result notifications: one wildcard subscription per queue and carrier
//! (`psrpc.dqdone.<queue>.*`) routes "task finished" messages to the waiters of those tasks.
//!
//! Subscribing and unsubscribing once per awaited call cost two protocol messages and two
//! changes of the server's subscription index per call; the wildcard costs one subscription
//! per process and queue, at the price of every waiting process of a queue receiving every
//! result of that queue (as the Redis carrier's `PSUBSCRIBE` does).

use std::sync::{Arc, Weak};

use dashmap::DashMap;
use futures::StreamExt;
use psrpc::durable::ResultWaiters;

/// The waiters of results (by sanitised queue and task ID), and the routing task of each
/// queue.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    pub(super) results: Arc<ResultWaiters>,
    /// One listener per sanitised queue, started by the queue's first waiter.
    listeners: DashMap<String, Arc<tokio::sync::OnceCell<Listener>>>,
}

/// A queue's routing task, stopped when the carrier goes.
#[derive(Debug)]
pub(super) struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Waiters {
    /// Makes sure `queue` (sanitised) has its wildcard subscription. The subscription is sent
    /// on `client` before this returns, so anything the caller then publishes on the same
    /// connection (the task) reaches the server after it.
    pub(super) async fn ensure_listening(
        self: &Arc<Self>,
        client: &async_nats::Client,
        queue: &str,
    ) -> Result<(), async_nats::SubscribeError> {
        // The hot path: the queue's listener runs already.
        if self
            .listeners
            .get(queue)
            .is_some_and(|cell| cell.initialized())
        {
            return Ok(());
        }
        let cell = self.listeners.entry(queue.to_owned()).or_default().clone();
        // Boxed, as the cold path, so that awaiting this stays a small future.
        Box::pin(cell.get_or_try_init(|| async {
            let sub = client.subscribe(format!("psrpc.dqdone.{queue}.*")).await?;
            let prefix = format!("psrpc.dqdone.{queue}.");
            Ok(Listener(tokio::spawn(route(
                sub,
                prefix,
                Arc::downgrade(self),
            ))))
        }))
        .await
        .map(drop)
    }
}

/// Hands each notification to its task's waiters. When the subscription ends (the connection
/// closed for good) waiters still find results by re-reading the bucket.
async fn route(mut sub: async_nats::Subscriber, prefix: String, waiters: Weak<Waiters>) {
    while let Some(msg) = sub.next().await {
        let Some(waiters) = waiters.upgrade() else {
            return;
        };
        let Some(task_id) = msg.subject.as_str().strip_prefix(&prefix) else {
            continue;
        };
        // An empty payload only wakes the waiter to read the bucket.
        waiters
            .results
            .wake(prefix_queue(&prefix), task_id, Some(msg.payload));
    }
}

/// The queue part of `psrpc.dqdone.<queue>.`.
fn prefix_queue(prefix: &str) -> &str {
    prefix
        .strip_prefix("psrpc.dqdone.")
        .and_then(|q| q.strip_suffix('.'))
        .unwrap_or_default()
}
