//! Results and effect records, in the queue's key-value bucket, and waiting for a result.
//!
//! A stored result is also published on the core subject `psrpc.dqdone.<queue>.<task ID>`,
//! with the result as its payload, so a waiter takes it from the notification without reading
//! the bucket again (the bucket stays the truth: a waiter re-reads it when a notification may
//! have been lost). Effect records are the bucket's keys `fx.<name>.<task key>`: result keys
//! never hold a dot, so the two never meet.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use psrpc::durable::{CarrierError, ResultWait};

use super::carrier::{JetStreamCarrier, sanitize};

/// A result key: task IDs are `[A-Za-z0-9_]`, valid KV keys; anything else is hex-encoded.
fn result_key(task_id: &str) -> String {
    if !task_id.is_empty()
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        task_id.to_owned()
    } else {
        task_id.bytes().map(|b| format!("{b:02x}")).collect()
    }
}

/// An effect record's key (names are `[A-Za-z0-9_-]`, checked by psrpc).
fn effect_key(task_id: &str, name: &str) -> String {
    format!("fx.{name}.{}", result_key(task_id))
}

impl JetStreamCarrier {
    pub(super) async fn store_result(
        &self,
        queue: &str,
        task_id: &str,
        result: Bytes,
    ) -> Result<(), CarrierError> {
        let q = self.opened(queue).await?;
        q.results
            .put(result_key(task_id), result.clone())
            .await
            .map_err(|e| CarrierError::new("put_result", e.to_string()))?;
        // Best effort: waiters also re-read the bucket when their wait ends.
        let _ = self
            .inner
            .client
            .publish(Self::done_subject(queue, task_id), result)
            .await;
        Ok(())
    }

    pub(super) async fn read_result(
        &self,
        queue: &str,
        task_id: &str,
    ) -> Result<Option<Bytes>, CarrierError> {
        let q = self.opened(queue).await?;
        q.results
            .get(result_key(task_id))
            .await
            .map_err(|e| CarrierError::new("get_result", e.to_string()))
    }

    pub(super) async fn forget_result(
        &self,
        queue: &str,
        task_id: &str,
    ) -> Result<(), CarrierError> {
        let q = self.opened(queue).await?;
        q.results
            .purge(result_key(task_id))
            .await
            .map_err(|e| CarrierError::new("delete_result", e.to_string()))
    }

    pub(super) async fn await_result(
        &self,
        queue: &str,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<Bytes>, CarrierError> {
        // Listening before the first read: a result stored after that read is announced to
        // the queue's subscription (the server handles one connection's requests in order).
        let wait = self.listen_result(queue, task_id).await?;
        wait.wait(timeout, true, || self.read_result(queue, task_id))
            .await
    }

    /// Registers a waiter for `task_id`'s result, subscribing to the queue's announcements
    /// first if this carrier has not yet. Dropping the guard unregisters it.
    pub(super) async fn listen_result(
        &self,
        queue: &str,
        task_id: &str,
    ) -> Result<ResultWait, CarrierError> {
        let q = sanitize(queue);
        self.inner
            .waiters
            .ensure_listening(&self.inner.client, &q)
            .await
            .map_err(|e| CarrierError::new("wait_result", e.to_string()))?;
        Ok(self.inner.waiters.results.register(&q, task_id))
    }

    pub(super) async fn create_effect(
        &self,
        queue: &str,
        task_id: &str,
        name: &str,
        value: Bytes,
    ) -> Result<Option<Bytes>, CarrierError> {
        let q = self.opened(queue).await?;
        let key = effect_key(task_id, name);
        // KV create is a publish expecting the key's last sequence to be 0: of two racing
        // attempts the stream accepts one.
        match q.results.create(&key, value).await {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match q.results.get(&key).await {
                    Ok(Some(first)) => Ok(Some(first)),
                    // Expired between the two steps: rare; the caller may try again.
                    Ok(None) => Err(CarrierError::new(
                        "record_effect",
                        "effect record vanished while read",
                    )),
                    Err(e) => Err(CarrierError::new("record_effect", e.to_string())),
                }
            }
            Err(e) => Err(CarrierError::new("record_effect", e.to_string())),
        }
    }

    pub(super) async fn read_effect(
        &self,
        queue: &str,
        task_id: &str,
        name: &str,
    ) -> Result<Option<Bytes>, CarrierError> {
        let q = self.opened(queue).await?;
        q.results
            .get(effect_key(task_id, name))
            .await
            .map_err(|e| CarrierError::new("get_effect", e.to_string()))
    }
}
