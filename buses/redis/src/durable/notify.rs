//! Result notifications: one pub/sub connection per carrier routes "task finished" messages
//! to the waiters of those tasks.
//!
//! A message on `psrpc:dqdone:{q}` is `<task ID>\0<encoded result>`, so a waiter needs no
//! second read; a message of only a task ID (older writers) just wakes the waiter to read the
//! result key.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::Notify;

/// What the waiters of one task share: a wake-up and the result it brought, if any.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) notify: Notify,
    result: Mutex<Option<Bytes>>,
}

impl Slot {
    /// The result a notification carried, if one did.
    pub(crate) fn result(&self) -> Option<Bytes> {
        self.result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Waiters by `queue \0 task ID`.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    map: DashMap<String, Arc<Slot>>,
}

impl Waiters {
    pub(crate) fn key(queue: &str, task_id: &str) -> String {
        format!("{queue}\0{task_id}")
    }

    /// The slot of a task (shared by its waiters).
    pub(crate) fn register(&self, key: &str) -> Arc<Slot> {
        self.map.entry(key.to_owned()).or_default().clone()
    }

    /// Forgets a task's slot once only this waiter holds it.
    pub(crate) fn unregister(&self, key: &str) {
        self.map.remove_if(key, |_, n| Arc::strong_count(n) <= 2);
    }

    fn wake(&self, key: &str, result: Option<Bytes>) {
        if let Some(slot) = self.map.get(key) {
            if result.is_some() {
                *slot.result.lock().unwrap_or_else(|e| e.into_inner()) = result;
            }
            slot.notify.notify_waiters();
        }
    }
}

/// The payload of a notification: the task ID, then the result.
pub(crate) fn payload(task_id: &str, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(task_id.len() + 1 + result.len());
    out.extend_from_slice(task_id.as_bytes());
    out.push(0);
    out.extend_from_slice(result);
    out
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
                        let body = Bytes::copy_from_slice(msg.get_payload_bytes());
                        let (task_id, result) = match body.iter().position(|&b| b == 0) {
                            Some(at) => (body.slice(..at), Some(body.slice(at + 1..))),
                            None => (body.clone(), None),
                        };
                        if let Ok(task_id) = std::str::from_utf8(&task_id) {
                            waiters.wake(&Waiters::key(queue, task_id), result);
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
