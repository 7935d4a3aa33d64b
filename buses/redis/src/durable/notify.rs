//! Result notifications: one pub/sub connection per carrier routes "task finished" messages
//! to the waiters of those tasks.

use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::Notify;

/// Waiters by `queue \0 task ID`.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    map: DashMap<String, Arc<Notify>>,
}

impl Waiters {
    pub(crate) fn key(queue: &str, task_id: &str) -> String {
        format!("{queue}\0{task_id}")
    }

    /// The notifier of a task (shared by its waiters).
    pub(crate) fn register(&self, key: &str) -> Arc<Notify> {
        self.map.entry(key.to_owned()).or_default().clone()
    }

    /// Forgets a task's notifier once only this waiter holds it.
    pub(crate) fn unregister(&self, key: &str) {
        self.map.remove_if(key, |_, n| Arc::strong_count(n) <= 2);
    }

    fn wake(&self, key: &str) {
        if let Some(n) = self.map.get(key) {
            n.notify_waiters();
        }
    }
}

/// Listens on `psrpc:dqdone:*` until the waiters are dropped, reconnecting after failures.
/// Lost notifications only slow waiters down: they re-read the result every second.
pub(crate) async fn listen(client: redis::Client, waiters: Weak<Waiters>) {
    let mut failures = 0u64;
    loop {
        if waiters.strong_count() == 0 {
            return;
        }
        if let Ok(mut pubsub) = client.get_async_pubsub().await
            && pubsub.psubscribe("psrpc:dqdone:*").await.is_ok()
        {
            failures = 0;
            let mut messages = pubsub.on_message();
            loop {
                let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
                let Some(waiters) = waiters.upgrade() else {
                    return;
                };
                match next {
                    Ok(Some(msg)) => {
                        let channel = msg.get_channel_name();
                        let queue = channel
                            .strip_prefix("psrpc:dqdone:{")
                            .and_then(|q| q.strip_suffix('}'))
                            .unwrap_or_default();
                        if let Ok(task_id) = msg.get_payload::<String>() {
                            waiters.wake(&Waiters::key(queue, &task_id));
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        }
        failures += 1;
        tokio::time::sleep(Duration::from_millis(100 * failures.min(10))).await;
    }
}
