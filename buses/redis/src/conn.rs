//! The two kinds of connection a bus runs on: one server (a [`ConnectionManager`]) or a Redis
//! Cluster (a [`ClusterConnection`], which routes each keyed command to its shard, follows
//! `MOVED` and failovers, and resubscribes channels after reconnects).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult, Value};

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

/// The seed list the bus's cluster connections start from: the caller's seeds plus every node
/// the cluster reports (`CLUSTER NODES`), each with the first seed's credentials and TLS.
///
/// Why: the cluster client falls back to its seeds when it has lost every node connection
/// (which can happen while a failover settles); seeded with one node that then died, it would
/// never find the cluster again. With every node as a seed, any survivor brings it back.
pub(crate) async fn cluster_seeds(
    seeds: &[&str],
    connect: impl AsyncFnOnce(Vec<ConnectionInfo>) -> RedisResult<ClusterConnection>,
) -> RedisResult<Vec<ConnectionInfo>> {
    let mut infos = seeds
        .iter()
        .map(|seed| seed.into_connection_info())
        .collect::<RedisResult<Vec<_>>>()?;
    let Some(template) = infos.first().cloned() else {
        return Ok(infos);
    };
    let mut conn = connect(infos.clone()).await?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    for (host, port) in node_addresses(&nodes) {
        let addr = match template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let known = infos.iter().any(|info| same_addr(info.addr(), &addr));
        if !known {
            infos.push(template.clone().set_addr(addr));
        }
    }
    Ok(infos)
}

/// The `host:port` of every reachable node in a `CLUSTER NODES` reply (lines of
/// `id ip:port@cport[,hostname] flags …`); nodes without an address or marked failed are left out.
fn node_addresses(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _id = fields.next()?;
            let address = fields.next()?;
            let flags = fields.next()?;
            if flags
                .split(',')
                .any(|f| matches!(f, "fail" | "noaddr" | "handshake"))
            {
                return None;
            }
            let host_port = address.split('@').next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            let port = port.parse().ok()?;
            (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
        })
        .collect()
}

fn same_addr(a: &ConnectionAddr, b: &ConnectionAddr) -> bool {
    match (a, b) {
        (ConnectionAddr::Tcp(h1, p1), ConnectionAddr::Tcp(h2, p2))
        | (
            ConnectionAddr::TcpTls {
                host: h1, port: p1, ..
            },
            ConnectionAddr::TcpTls {
                host: h2, port: p2, ..
            },
        ) => h1 == h2 && p1 == p2,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::node_addresses;

    #[test]
    fn node_addresses_skip_failed_and_addressless_nodes() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,node-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
d4 :0@0 slave,noaddr c3 0 0 3 connected
e5 [::1]:7004@17004 slave b2 0 0 2 connected
";
        assert_eq!(
            node_addresses(nodes),
            [
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001),
                ("[::1]".to_owned(), 7004),
            ]
        );
    }
}
