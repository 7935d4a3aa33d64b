//! Results (`psrpc:dr:{q}:<task ID>`, `SET … PX`), waiting for them, and effect records
//! (`psrpc:dfx:{q}:<task ID>:<name>`, `SET NX PX`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use psrpc::durable::CarrierError;

use super::super::notify::{Waiters, listen, payload};
use super::{RedisStreamsCarrier, fail, keys, millis, result_key, sanitize};

fn effect_key(queue: &str, task_id: &str, name: &str) -> String {
    format!("psrpc:dfx:{{{}}}:{task_id}:{name}", sanitize(queue))
}

impl RedisStreamsCarrier {
    pub(super) async fn store_result(
        &self,
        queue: &str,
        task_id: &str,
        result: Bytes,
        ttl: Duration,
    ) -> Result<(), CarrierError> {
        let key = result_key(queue, task_id);
        let done = keys(queue).done;
        let mut conn = self.inner.conn.clone();
        // One round trip: the result, and its announcement carrying it to waiters.
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(result.as_ref())
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .cmd("PUBLISH")
            .arg(&done)
            .arg(payload(task_id, &result))
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(fail("put_result"))
    }

    pub(super) async fn read_result(
        &self,
        queue: &str,
        task_id: &str,
    ) -> Result<Option<Bytes>, CarrierError> {
        let key = result_key(queue, task_id);
        let mut conn = self.inner.conn.clone();
        let found: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(fail("get_result"))?;
        Ok(found.map(Bytes::from))
    }

    pub(super) async fn forget_result(
        &self,
        queue: &str,
        task_id: &str,
    ) -> Result<(), CarrierError> {
        let key = result_key(queue, task_id);
        let mut conn = self.inner.conn.clone();
        redis::cmd("DEL")
            .arg(&key)
            .query_async::<()>(&mut conn)
            .await
            .map_err(fail("delete_result"))
    }

    pub(super) async fn await_result(
        &self,
        queue: &str,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<Bytes>, CarrierError> {
        self.inner.listening.call_once(|| {
            tokio::spawn(listen(
                self.inner.client.clone(),
                Arc::downgrade(&self.inner.waiters),
            ));
        });
        let key = Waiters::key(&sanitize(queue), task_id);
        let slot = self.inner.waiters.register(&key);
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome = async {
            loop {
                let notified = slot.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(found) = slot.result() {
                    return Ok(Some(found));
                }
                if let Some(found) = self.read_result(queue, task_id).await? {
                    return Ok(Some(found));
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                // Re-read at least every second, in case a notification was lost.
                let until = deadline.min(now + Duration::from_secs(1));
                if tokio::time::timeout_at(until, notified).await.is_ok()
                    && let Some(found) = slot.result()
                {
                    return Ok(Some(found));
                }
            }
        }
        .await;
        drop(slot);
        self.inner.waiters.unregister(&key);
        outcome
    }

    pub(super) async fn create_effect(
        &self,
        queue: &str,
        task_id: &str,
        name: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<Option<Bytes>, CarrierError> {
        let key = effect_key(queue, task_id, name);
        let mut conn = self.inner.conn.clone();
        // `SET NX GET` (Redis 7): writes only if absent and answers the value that was there,
        // in one atomic step.
        let before: Option<Vec<u8>> = redis::cmd("SET")
            .arg(&key)
            .arg(value.as_ref())
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await
            .map_err(fail("record_effect"))?;
        Ok(before.map(Bytes::from))
    }

    pub(super) async fn read_effect(
        &self,
        queue: &str,
        task_id: &str,
        name: &str,
    ) -> Result<Option<Bytes>, CarrierError> {
        let key = effect_key(queue, task_id, name);
        let mut conn = self.inner.conn.clone();
        let found: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(fail("get_effect"))?;
        Ok(found.map(Bytes::from))
    }
}
