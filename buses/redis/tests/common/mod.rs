//! Helpers shared by the Redis bus tests: raw connections, bounded waits.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use psrpc::bus::Subscription;
use psrpc_redis::RedisBus;
use psrpc_testkit::RedisServer;
use redis::aio::MultiplexedConnection;

pub mod calls;

/// Upper bound of every wait in these tests; reached only when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `fut`, or a panic naming `what` after [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

pub fn server() -> RedisServer {
    RedisServer::start().expect("redis-server must be installed (scripts/test.sh installs it)")
}

pub async fn bus(server: &RedisServer) -> RedisBus {
    RedisBus::connect(&server.url()).await.expect("connect")
}

/// A plain connection of its own, for PUBLISH from outside and for inspecting the server.
pub async fn raw(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

pub async fn raw_publish(conn: &mut MultiplexedConnection, channel: &str, payload: &[u8]) -> i64 {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(conn)
        .await
        .expect("PUBLISH")
}

/// Subscribers of `channel` at the server (`PUBSUB NUMSUB`): one per connection.
pub async fn numsub(conn: &mut MultiplexedConnection, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    n
}

/// The next message, failing the test if none comes within [`PATIENCE`].
pub async fn recv(sub: &mut Subscription) -> Bytes {
    tokio::time::timeout(PATIENCE, sub.recv())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

/// A message already buffered, without waiting.
pub fn try_recv(sub: &mut Subscription) -> Option<Bytes> {
    futures::FutureExt::now_or_never(sub.recv()).flatten()
}

/// Polls `condition` every 20 ms until it holds, failing the test after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for: {what}"
        );
    }
}
