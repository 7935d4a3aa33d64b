//! Result notifications: one pub/sub connection per carrier routes "task finished" messages
//! to the waiters of those tasks.
//!
//! A message on `psrpc:dqdone:{q}` is `<task ID>\0<encoded result>`, so a waiter needs no
//! second read; a message of only a task ID (older writers) just wakes the waiter to read the
//! result key.

use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use psrpc::durable::ResultWaiters;

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
pub(crate) async fn listen(client: redis::Client, waiters: Weak<ResultWaiters>) {
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
                            waiters.wake(queue, task_id, result);
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
