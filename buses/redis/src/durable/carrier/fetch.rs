//! Taking tasks: due retries back into the stream, expired leases claimed, new entries read.

use std::time::Duration;

use psrpc::durable::{CarrierError, Delivery, Receipt};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};

use super::{
    GROUP, RedisReceipt, RedisStreamsCarrier, fail, field_bytes, field_u32, is_error_code, keys,
    millis, receipt,
};
use crate::durable::scripts;

/// How often a carrier promotes due retries and claims expired leases of a queue.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl RedisStreamsCarrier {
    pub(super) async fn fetch_inner(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, CarrierError> {
        let k = keys(queue);
        let mut conn = self.inner.conn.clone();
        let err = fail("fetch");
        let mut out = Vec::new();
        if self.upkeep_due(queue) {
            out = self.upkeep(queue, max).await?;
        }
        if out.len() >= max {
            return Ok(out);
        }
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(&self.inner.consumer)
            .arg("COUNT")
            .arg(max - out.len());
        let block = out.is_empty() && !wait.is_zero();
        if block {
            read.arg("BLOCK")
                .arg(millis(wait.min(Duration::from_secs(10))));
        }
        read.arg("STREAMS").arg(&k.stream).arg(">");
        let reply: redis::RedisResult<Option<StreamReadReply>> = if block {
            let mut blocking = self.blocking_conn().await?;
            let reply = read.query_async(&mut blocking).await;
            if reply.is_ok() {
                self.inner
                    .blocking
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(blocking);
            }
            reply
        } else {
            read.query_async(&mut conn).await
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) if is_error_code(&e, "NOGROUP") => {
                // The group vanished (a broker that lost its data): make it again.
                self.ensure_group(&k.stream).await?;
                None
            }
            Err(e) => return Err(err(e)),
        };
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in &key.ids {
                out.push(self.delivery(entry, 1));
            }
        }
        Ok(out)
    }

    /// Whether the queue's upkeep (promoting due retries, claiming expired leases: two
    /// round trips) is due: at most every [`UPKEEP_EVERY`] per carrier, not on every fetch,
    /// which under load would double a fetch's round trips. A retry or an expired lease
    /// waits that much longer at most.
    fn upkeep_due(&self, queue: &str) -> bool {
        let now = std::time::Instant::now();
        match self.inner.upkeep.entry(queue.to_owned()) {
            dashmap::Entry::Occupied(mut last) => {
                if now.duration_since(*last.get()) < UPKEEP_EVERY {
                    return false;
                }
                last.insert(now);
            }
            dashmap::Entry::Vacant(first) => {
                first.insert(now);
            }
        }
        true
    }

    /// Promotes due retries and claims tasks whose lease expired.
    async fn upkeep(&self, queue: &str, max: usize) -> Result<Vec<Delivery>, CarrierError> {
        let k = keys(queue);
        let mut conn = self.inner.conn.clone();
        let err = fail("fetch");
        let mut out = Vec::new();
        let _: i64 = scripts::PROMOTE
            .key(&k.stream)
            .key(&k.delayed)
            .key(&k.held)
            .arg(max.max(16))
            .invoke_async(&mut conn)
            .await
            .map_err(&err)?;
        let visibility = millis(self.config(queue).visibility_timeout);
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&k.stream)
            .arg(GROUP)
            .arg(&self.inner.consumer)
            .arg(visibility)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(&err)?;
        if !claimed.claimed.is_empty() {
            let mut pipe = redis::pipe();
            for e in &claimed.claimed {
                pipe.cmd("XPENDING")
                    .arg(&k.stream)
                    .arg(GROUP)
                    .arg(&e.id)
                    .arg(&e.id)
                    .arg(1);
            }
            let counts: Vec<StreamPendingCountReply> =
                pipe.query_async(&mut conn).await.map_err(&err)?;
            for (entry, count) in claimed.claimed.iter().zip(counts) {
                let delivered = count.ids.first().map_or(1, |p| p.times_delivered.max(1));
                out.push(self.delivery(entry, u32::try_from(delivered).unwrap_or(u32::MAX)));
            }
        }
        Ok(out)
    }

    pub(super) fn delivery(&self, entry: &StreamId, delivered: u32) -> Delivery {
        let prior = field_u32(entry, "prior");
        Delivery {
            message_id: entry.id.clone(),
            body: field_bytes(entry, "task"),
            attempt: prior.saturating_add(delivered).max(1),
            receipt: Receipt::new(RedisReceipt {
                id: entry.id.clone(),
            }),
        }
    }

    pub(super) async fn requeue(
        &self,
        queue: &str,
        delivery: &Delivery,
        delay: Duration,
        prior: u32,
        op: &'static str,
    ) -> Result<(), CarrierError> {
        let k = keys(queue);
        let id = receipt(delivery)?;
        let mut conn = self.inner.conn.clone();
        let _: i64 = scripts::REQUEUE
            .key(&k.stream)
            .key(&k.delayed)
            .key(&k.held)
            .arg(id)
            .arg(GROUP)
            .arg(&self.inner.consumer)
            .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            .arg(prior)
            .invoke_async(&mut conn)
            .await
            .map_err(fail(op))?;
        Ok(())
    }
}
