//! The two kinds of connection a bus runs on: one server (a [`ConnectionManager`]) or a Redis
//! Cluster (a [`ClusterConnection`], which routes each keyed command to its shard, follows
//! `MOVED` and failovers, and resubscribes channels after reconnects).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisResult, Value};

/// A connection handle; cheap to clone (both kinds multiplex one set of sockets).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// `SUBSCRIBE`, or `SSUBSCRIBE` when `sharded` (on a cluster only).
    pub(crate) async fn subscribe(&mut self, channel: &str, sharded: bool) -> RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.subscribe(channel).await,
            Conn::Cluster(conn) if sharded => conn.ssubscribe(channel).await,
            Conn::Cluster(conn) => conn.subscribe(channel).await,
        }
    }

    /// `UNSUBSCRIBE`, or `SUNSUBSCRIBE` when `sharded` (on a cluster only).
    pub(crate) async fn unsubscribe(&mut self, channel: &str, sharded: bool) -> RedisResult<()> {
        match self {
            Conn::Single(conn) => conn.unsubscribe(channel).await,
            Conn::Cluster(conn) if sharded => conn.sunsubscribe(channel).await,
            Conn::Cluster(conn) => conn.unsubscribe(channel).await,
        }
    }

    pub(crate) async fn query(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Conn::Single(conn) => cmd.query_async(conn).await,
            Conn::Cluster(conn) => cmd.query_async(conn).await,
        }
    }
}

/// Cluster client settings from the bus options.
pub(crate) fn cluster_timeouts(
    builder: redis::cluster::ClusterClientBuilder,
    connection_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
) -> redis::cluster::ClusterClientBuilder {
    let builder = match connection_timeout {
        Some(limit) => builder.connection_timeout(limit),
        None => builder,
    };
    match response_timeout {
        Some(limit) => builder.response_timeout(limit),
        None => builder,
    }
}
