//! Queue statistics from the stream, its group and the delayed set.

use std::time::Duration;

use psrpc::durable::{CarrierError, QueueStats};
use redis::streams::{StreamInfoGroupsReply, StreamRangeReply};

use super::{GROUP, Keys, RedisStreamsCarrier, fail};

impl RedisStreamsCarrier {
    pub(super) async fn stats_inner(&self, k: Keys) -> Result<QueueStats, CarrierError> {
        let mut conn = self.inner.conn.clone();
        let err = fail("stats");
        let (len, delayed, dead, time): (u64, u64, u64, (u64, u64)) = redis::pipe()
            .cmd("XLEN")
            .arg(&k.stream)
            .cmd("ZCARD")
            .arg(&k.delayed)
            .cmd("XLEN")
            .arg(&k.dead)
            .cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(&err)?;
        let groups: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&k.stream)
            .query_async(&mut conn)
            .await
            .map_err(&err)?;
        let group = groups.groups.iter().find(|g| g.name == GROUP);
        let in_flight = group.map_or(0, |g| g.pending as u64);
        let lag = group
            .and_then(|g| g.lag)
            .map_or(len.saturating_sub(in_flight), |l| l as u64);
        let oldest_waiting_age = match group {
            Some(g) if lag > 0 => {
                let next: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&k.stream)
                    .arg(format!("({}", g.last_delivered_id))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .map_err(&err)?;
                let now_ms = time.0 * 1000 + time.1 / 1000;
                next.ids
                    .first()
                    .and_then(|e| e.id.split('-').next()?.parse::<u64>().ok())
                    .map(|ms| Duration::from_millis(now_ms.saturating_sub(ms)))
            }
            _ => None,
        };
        Ok(QueueStats {
            waiting: lag + delayed,
            in_flight,
            dead_letters: dead,
            oldest_waiting_age,
        })
    }
}
