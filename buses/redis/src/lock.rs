//! Go's queue rule on Redis (docs/wire.md §7): every queue member receives every message and the one
//! that sets `SET <base64(sha256(payload))> <random> NX EX 5` delivers it. In a namespace
//! ([`psrpc::bus::Namespaced`]) the key is `<namespace>:<base64>`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use bytes::Bytes;
use redis::{Cmd, Value};
use sha2::{Digest, Sha256};

use crate::router::{Counters, Entry};
use crate::writer::Reply;

/// Seconds a queue lock key lives (Go's value; peers rely on it).
pub const QUEUE_LOCK_TTL_SECS: u64 = 5;

/// The Redis key of the queue lock for `payload`: standard base64, with padding, of the
/// SHA-256 of the whole payload (the enveloped bytes), as Go psrpc computes it.
///
/// ```
/// // A queue subscription message from the Go capture (golden/go-psrpc-v0.7-capture.txt).
/// let payload = b"\n/type.googleapis.com/google.protobuf.StringValue\x12\x15\n\x13qevent-PTeyxfGr2Dmh";
/// assert_eq!(
///     psrpc_redis::queue_lock_key(payload),
///     "YsQUbPS85ffqTSMAZ4VJ9Nbc7J1q6NJpFeAjM88nlGs="
/// );
/// ```
pub fn queue_lock_key(payload: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(payload))
}

/// A message on a channel with local queue subscribers, waiting for its lock.
pub(crate) struct LockJob {
    pub(crate) entry: Arc<Entry>,
    pub(crate) payload: Bytes,
}

impl LockJob {
    /// The lock `SET` for this message.
    pub(crate) fn command(&self) -> Cmd {
        let key = match &self.entry.namespace {
            None => queue_lock_key(&self.payload),
            // `:` never occurs in base64, so the namespaced keys cannot meet Go's.
            Some(ns) => format!("{ns}:{}", queue_lock_key(&self.payload)),
        };
        // Any value will do; a random one, as Go writes, tells apart who set the key.
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(fastrand::u64(..))
            .arg("EX")
            .arg(QUEUE_LOCK_TTL_SECS)
            .arg("NX");
        cmd
    }

    /// Acts on the reply to [`command`](Self::command): the message goes to a local queue
    /// member only when the key was ours to set. Runs in the writer, where the reply arrives,
    /// so a won lock costs no further task hand-off before delivery.
    pub(crate) fn settle(self, counters: &Counters, reply: Reply) {
        match reply {
            Ok(Value::Okay) => {
                counters.locks_won.fetch_add(1, Ordering::Relaxed);
                self.entry.deliver_queue(self.payload);
            }
            Ok(Value::Nil) => {
                counters.locks_lost.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => {
                counters.lock_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %self.entry.name, reply = ?other, "unexpected reply to a queue lock SET");
            }
            Err(err) => {
                // Like Go: without the lock nobody here may deliver; another member may have it.
                counters.lock_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %self.entry.name, %err, "queue lock SET failed, message not delivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The QueueEvents payload of capture 1 and the key Go SET for it (redis-cli MONITOR).
    #[test]
    fn golden_lock_key() {
        let payload = unhex(
            "0a2f747970652e676f6f676c65617069732e636f6d2f676f6f676c652e70726f746f6275662e537472696e6756616c756512150a13716576656e742d505465797866477232446d68",
        );
        assert_eq!(
            queue_lock_key(&payload),
            "YsQUbPS85ffqTSMAZ4VJ9Nbc7J1q6NJpFeAjM88nlGs="
        );
    }
}
