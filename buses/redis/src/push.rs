//! The receiving side of the push connection: routing pushed messages, and the idle health check.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::lock::LockJob;
use crate::op::with_timeout;
use crate::router::Router;

/// Routes one pushed message to the local subscribers of its channel; runs inside the push
/// connection's driver, so it never waits.
pub(crate) fn route_push(router: &Router, locks: &mpsc::Sender<LockJob>, push: PushInfo) {
    let counters = &router.counters;
    match push.kind {
        PushKind::Message => {}
        PushKind::Disconnection => {
            counters.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("redis push connection lost; reconnecting and resubscribing");
            return;
        }
        _ => return,
    }
    counters.received.fetch_add(1, Ordering::Relaxed);
    // A `message` push is [channel, payload]; anything else is not ours to interpret.
    let mut data = push.data.into_iter();
    let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
        (data.next(), data.next())
    else {
        counters.unroutable.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let entry = std::str::from_utf8(&name)
        .ok()
        .and_then(|name| router.channels.get(name).map(|e| e.clone()));
    let Some(entry) = entry else {
        counters.unroutable.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let payload = Bytes::from(payload);
    let has_queue = entry.deliver_fanout(&payload);
    // Queue members get it only once the lock is ours; that round trip runs elsewhere.
    if has_queue
        && let Err(mpsc::error::TrySendError::Full(job)) =
            locks.try_send(LockJob { entry, payload })
    {
        counters.lock_overflow.fetch_add(1, Ordering::Relaxed);
        job.entry.record_queue_drop();
    }
}

/// Pings the push connection so a dead one is noticed while idle and reconnection resumes.
///
/// On a cluster, subscriptions live on the node owning each channel name's slot. After a lost
/// node the cluster connection resubscribes on its own, but without waiting for or retrying
/// those commands, so a resubscription sent while a failover settles can be lost for good. So
/// after every disconnect each channel is subscribed again here, awaited, until every one is
/// confirmed: a failing `SUBSCRIBE` also makes the connection refresh its slot map and find the
/// promoted replica. Subscribing again where a subscription already lives is a no-op.
/// `sharded`: the bus's channels are sharded (`SSUBSCRIBE`), see
/// [`RedisBusOptions::sharded_pubsub`](crate::RedisBusOptions::sharded_pubsub).
pub(crate) async fn health_check(
    conn: Conn,
    router: std::sync::Arc<Router>,
    interval: Duration,
    timeout: Option<Duration>,
    sharded: bool,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen_disconnects = 0;
    loop {
        ticker.tick().await;
        let mut conn = conn.clone();
        let ping = redis::cmd("PING");
        if let Err(err) = with_timeout(timeout, conn.query(&ping)).await {
            tracing::debug!(%err, "redis health check failed");
        }
        if !matches!(conn, Conn::Cluster(_)) {
            continue;
        }
        let disconnects = router.counters.disconnects.load(Ordering::Relaxed);
        if disconnects == seen_disconnects {
            continue;
        }
        let names: Vec<String> = router.channels.iter().map(|e| e.key().clone()).collect();
        let mut all_ok = true;
        for name in names {
            match with_timeout(timeout, conn.subscribe(&name, sharded)).await {
                Ok(()) => {
                    // Unsubscribed meanwhile: do not leave the renewed subscription behind.
                    if !router.channels.contains_key(&name) {
                        let _ = with_timeout(timeout, conn.unsubscribe(&name, sharded)).await;
                    }
                }
                Err(err) => {
                    tracing::debug!(%err, channel = %name, "redis cluster resubscription failed");
                    all_ok = false;
                }
            }
        }
        // Try again next tick until every channel's node has confirmed.
        if all_ok {
            seen_disconnects = disconnects;
        }
    }
}
