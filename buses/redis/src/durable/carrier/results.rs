//! Results (`psrpc:dr:{q}:<task ID>`, `SET … PX`), waiting for them, and effect records
//! (`psrpc:dfx:{q}:<task ID>:<name>`, `SET NX PX`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use psrpc::durable::{CarrierError, ResultWait};

use super::super::notify::{listen, payload};
use super::{GROUP, RedisStreamsCarrier, fail, keys, millis, result_key, sanitize};

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
        let wait = self.listen_result(queue, task_id);
        wait.wait(timeout, true, || self.read_result(queue, task_id))
            .await
    }

    /// Registers a waiter for `task_id`'s result (and starts the carrier's listener).
    /// Dropping the guard unregisters it.
    pub(super) fn listen_result(&self, queue: &str, task_id: &str) -> ResultWait {
        self.inner.listening.call_once(|| {
            tokio::spawn(listen(
                self.inner.client.clone(),
                Arc::downgrade(&self.inner.waiters),
            ));
        });
        self.inner.waiters.register(&sanitize(queue), task_id)
    }

    /// The result and its announcement, and the ack, in one round trip.
    ///
    /// A plain pipeline, not `MULTI`: Redis runs one connection's commands in order, so the
    /// result is stored before the ack, and `MULTI` would not undo a failed command anyway. A
    /// crash between the two leaves the task pending; its redelivery finds the result and
    /// only acks.
    pub(super) async fn store_and_ack(
        &self,
        queue: &str,
        id: &str,
        task_id: &str,
        result: Bytes,
        ttl: Duration,
    ) -> Result<(), CarrierError> {
        let k = keys(queue);
        let mut conn = self.inner.conn.clone();
        redis::pipe()
            .cmd("SET")
            .arg(result_key(queue, task_id))
            .arg(result.as_ref())
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .cmd("PUBLISH")
            .arg(&k.done)
            .arg(payload(task_id, &result))
            .ignore()
            .cmd("XACK")
            .arg(&k.stream)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&k.stream)
            .arg(id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(fail("complete"))
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
