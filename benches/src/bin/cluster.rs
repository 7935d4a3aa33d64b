//! psrpc on a NATS cluster: unary-call throughput with one node against three, clients and
//! servers spread over the nodes, each against raw NATS request/reply in the same layout.
//!
//! ```text
//! cargo run --release -p psrpc-benches --bin cluster -- [--quick]
//! ```
//!
//! Layouts (brokers started through `psrpc-testkit`, all on this machine):
//!
//! - `1 node`: every client and server on one `nats-server`;
//! - `3 nodes`: a routed cluster, three servers and three clients, server `i` and client `i`
//!   on node `i`, so most requests cross a route (NATS prefers a queue member on the
//!   publisher's node when there is one: here there is, so the cross-node share is small;
//!   `3 nodes, remote` puts every server on node 0 and every client on nodes 1 and 2).
//!
//! Then Redis, one psrpc server and three clients (unary queue calls), against raw Redis pub/sub
//! request/reply (a responder echoing to each caller's reply channel) in the same layout:
//!
//! - `redis 1 node`: one `redis-server`;
//! - `redis cluster`: 3 masters (no replicas), the server on master 0, clients on masters 1
//!   and 2, classic pub/sub (broadcast to every node);
//! - `redis cluster, sharded`: the same with `RedisBusOptions::sharded_pubsub` (raw:
//!   `SPUBLISH`/`SSUBSCRIBE`).
//!
//! Prints one JSON line per measurement and the psrpc/raw ratios. See `BENCHMARKS.md` and
//! `docs/scaling.md`. On one machine the nodes share its cores: the figures show the cost of
//! routing, not the capacity a cluster of machines adds.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use psrpc::{CallOptions, Client, MethodInfo, Server};
use psrpc_nats::NatsBus;
use psrpc_redis::{RedisBus, RedisBusOptions};
use psrpc_testkit::{NatsCluster, NatsOptions, RedisCluster, RedisServer};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Mutex, mpsc};

// Shared with the other binaries; not every one reads latencies.
#[allow(dead_code)]
#[path = "../closed_loop.rs"]
mod closed_loop;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLERS: usize = 48;
const ECHO: MethodInfo = MethodInfo::unary("Echo");

/// Runs `op` from [`CALLERS`] tasks for `span`; returns successful operations per second.
async fn drive<F, Fut>(span: Duration, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    closed_loop::run(CALLERS, span, op).await.rate()
}

/// Raw request/reply: a responder per server URL (queue group), requesters on the client URLs.
async fn raw(servers: &[String], clients: &[String], span: Duration) -> Result<f64, BoxError> {
    let mut responders = Vec::new();
    for url in servers {
        let nc = async_nats::connect(url.as_str()).await?;
        let mut sub = nc.queue_subscribe("bench.echo", "q".into()).await?;
        nc.flush().await?;
        let reply_nc = nc.clone();
        responders.push(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(reply) = msg.reply {
                    let _ = reply_nc.publish(reply, msg.payload).await;
                }
            }
        }));
    }
    let mut requesters = Vec::new();
    for url in clients {
        requesters.push(async_nats::connect(url.as_str()).await?);
    }
    let requesters = Arc::new(requesters);
    let rate = drive(span, move |i| {
        let nc = requesters[i % requesters.len()].clone();
        async move {
            nc.request("bench.echo", bytes::Bytes::from_static(b"ping"))
                .await?;
            Ok(())
        }
    })
    .await;
    for r in responders {
        r.abort();
    }
    Ok(rate)
}

/// psrpc unary queue calls: a server per server URL, clients on the client URLs.
async fn psrpc_calls(
    servers: &[String],
    clients: &[String],
    span: Duration,
) -> Result<f64, BoxError> {
    let mut keep = Vec::new();
    for url in servers {
        let server = Server::new("Bench", NatsBus::connect(url.as_str()).await?);
        server
            .register_unary(ECHO, &[], |_ctx, s: String| async move { Ok(s) })
            .await?;
        keep.push(server);
    }
    let mut callers = Vec::new();
    for url in clients {
        callers.push(Client::new("Bench", NatsBus::connect(url.as_str()).await?).await?);
    }
    let callers = Arc::new(callers);
    let rate = drive(span, move |i| {
        let client = callers[i % callers.len()].clone();
        async move {
            let _: String = client
                .request(ECHO, &[], &"ping".to_string(), CallOptions::new())
                .await?;
            Ok(())
        }
    })
    .await;
    for server in keep {
        server.shutdown().await;
    }
    Ok(rate)
}

/// How the Redis layouts reach the broker.
#[derive(Clone, Copy)]
enum RedisMode {
    Single,
    Cluster,
    Sharded,
}

/// A raw Redis connection delivering pushed messages to `push`.
#[derive(Clone)]
enum RawRedis {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection, bool),
}

impl RawRedis {
    async fn connect(
        url: &str,
        mode: RedisMode,
        push: mpsc::UnboundedSender<PushInfo>,
    ) -> Result<Self, BoxError> {
        Ok(match mode {
            RedisMode::Single => {
                let client = redis::Client::open(format!("{url}?protocol=resp3"))?;
                let config = redis::AsyncConnectionConfig::new().set_push_sender(push);
                RawRedis::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            RedisMode::Cluster | RedisMode::Sharded => {
                let client = redis::cluster::ClusterClientBuilder::new(vec![url])
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(push)
                    .build()?;
                RawRedis::Cluster(
                    client.get_async_connection().await?,
                    matches!(mode, RedisMode::Sharded),
                )
            }
        })
    }

    async fn subscribe(&mut self, channel: &str) -> Result<(), BoxError> {
        match self {
            RawRedis::Single(conn) => conn.subscribe(channel).await?,
            RawRedis::Cluster(conn, true) => conn.ssubscribe(channel).await?,
            RawRedis::Cluster(conn, false) => conn.subscribe(channel).await?,
        }
        Ok(())
    }

    async fn publish(&mut self, channel: &[u8], payload: &[u8]) -> Result<(), BoxError> {
        let (name, sharded) = match self {
            RawRedis::Single(_) => ("PUBLISH", false),
            RawRedis::Cluster(_, sharded) => ("PUBLISH", *sharded),
        };
        let mut cmd = redis::cmd(if sharded { "SPUBLISH" } else { name });
        cmd.arg(channel).arg(payload);
        let _: Value = match self {
            RawRedis::Single(conn) => cmd.query_async(conn).await?,
            RawRedis::Cluster(conn, _) => cmd.query_async(conn).await?,
        };
        Ok(())
    }
}

/// The channel and payload of a pushed (sharded) message.
fn pushed(push: PushInfo) -> Option<(Vec<u8>, Vec<u8>)> {
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return None;
    }
    let mut data = push.data.into_iter();
    match (data.next(), data.next()) {
        (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) => {
            Some((channel, payload))
        }
        _ => None,
    }
}

/// Raw Redis request/reply: one responder on `server` echoing each request to the reply
/// channel it names; each caller has a reply channel of its own on one of the `clients`.
async fn raw_redis(
    server: &str,
    clients: &[String],
    mode: RedisMode,
    span: Duration,
) -> Result<f64, BoxError> {
    let (tx, mut requests) = mpsc::unbounded_channel();
    let mut responder = RawRedis::connect(server, mode, tx).await?;
    responder.subscribe("bench.req").await?;
    let answering = responder.clone();
    let respond = tokio::spawn(async move {
        while let Some(push) = requests.recv().await {
            if let Some((_, reply_to)) = pushed(push) {
                let mut conn = answering.clone();
                tokio::spawn(async move {
                    let _ = conn.publish(&reply_to, b"pong").await;
                });
            }
        }
    });
    let mut conns = Vec::new();
    let mut inboxes = Vec::new();
    let mut routes: Vec<mpsc::UnboundedSender<()>> = Vec::new();
    let mut routers = Vec::new();
    for i in 0..CALLERS {
        let (tx, rx) = mpsc::unbounded_channel();
        routes.push(tx);
        inboxes.push(Mutex::new(rx));
        let _ = i;
    }
    let routes = Arc::new(routes);
    for url in clients {
        let (tx, mut rx) = mpsc::unbounded_channel();
        conns.push(RawRedis::connect(url, mode, tx).await?);
        let routes = routes.clone();
        routers.push(tokio::spawn(async move {
            while let Some(push) = rx.recv().await {
                let caller = pushed(push).and_then(|(channel, _)| {
                    std::str::from_utf8(&channel)
                        .ok()?
                        .strip_prefix("bench.rep.")?
                        .parse::<usize>()
                        .ok()
                });
                if let Some(route) = caller.and_then(|i| routes.get(i)) {
                    let _ = route.send(());
                }
            }
        }));
    }
    for i in 0..CALLERS {
        conns[i % clients.len()]
            .subscribe(&format!("bench.rep.{i}"))
            .await?;
    }
    let conns = Arc::new(conns);
    let inboxes = Arc::new(inboxes);
    let rate = drive(span, move |i| {
        let mut conn = conns[i % conns.len()].clone();
        let inboxes = inboxes.clone();
        async move {
            let reply_to = format!("bench.rep.{i}");
            let mut inbox = inboxes[i].lock().await;
            conn.publish(b"bench.req", reply_to.as_bytes()).await?;
            tokio::time::timeout(Duration::from_secs(2), inbox.recv())
                .await?
                .ok_or("reply route closed")?;
            Ok(())
        }
    })
    .await;
    respond.abort();
    for r in routers {
        r.abort();
    }
    Ok(rate)
}

/// psrpc unary queue calls on Redis: one server on `server`, clients on `clients`.
async fn psrpc_redis(
    server: &str,
    clients: &[String],
    mode: RedisMode,
    span: Duration,
) -> Result<f64, BoxError> {
    let bus = |url: String| async move {
        let options = RedisBusOptions::default().sharded_pubsub(matches!(mode, RedisMode::Sharded));
        let bus = match mode {
            RedisMode::Single => RedisBus::with_options(redis::Client::open(url)?, options).await?,
            RedisMode::Cluster | RedisMode::Sharded => {
                RedisBus::connect_cluster(&[url], options).await?
            }
        };
        Ok::<_, BoxError>(bus)
    };
    let rpc = Server::new("Bench", bus(server.to_owned()).await?);
    rpc.register_unary(ECHO, &[], |_ctx, s: String| async move { Ok(s) })
        .await?;
    let mut callers = Vec::new();
    for url in clients {
        callers.push(Client::new("Bench", bus(url.clone()).await?).await?);
    }
    let callers = Arc::new(callers);
    let rate = drive(span, move |i| {
        let client = callers[i % callers.len()].clone();
        async move {
            let _: String = client
                .request(ECHO, &[], &"ping".to_string(), CallOptions::new())
                .await?;
            Ok(())
        }
    })
    .await;
    rpc.shutdown().await;
    Ok(rate)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let span = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(3)
    };
    let single = NatsCluster::start(1, NatsOptions::default())?;
    let trio = NatsCluster::start(3, NatsOptions::default())?;
    let one = single.urls();
    let three = trio.urls();
    let layouts: [(&str, Vec<String>, Vec<String>); 3] = [
        ("1 node", vec![one[0].clone(); 3], vec![one[0].clone(); 3]),
        ("3 nodes", three.clone(), three.clone()),
        (
            "3 nodes, remote",
            vec![three[0].clone(); 3],
            vec![three[1].clone(), three[2].clone(), three[1].clone()],
        ),
    ];
    println!("| layout | raw NATS req/s | psrpc calls/s | psrpc / raw |");
    println!("|---|---:|---:|---:|");
    for (name, servers, clients) in layouts {
        let raw_rate = raw(&servers, &clients, span).await?;
        let rate = psrpc_calls(&servers, &clients, span).await?;
        eprintln!(
            "{{\"case\":\"cluster_unary\",\"layout\":\"{name}\",\"callers\":{CALLERS},\"raw_per_s\":{raw_rate:.0},\"psrpc_per_s\":{rate:.0}}}"
        );
        println!(
            "| {name} | {raw_rate:.0} | {rate:.0} | {:.2} |",
            rate / raw_rate
        );
    }
    drop((single, trio));

    let redis_single = RedisServer::start()?;
    let redis_cluster = RedisCluster::start(3, 0)?;
    let one = redis_single.url();
    let masters = redis_cluster.urls();
    let redis_layouts: [(&str, RedisMode, String, Vec<String>); 3] = [
        ("redis 1 node", RedisMode::Single, one.clone(), vec![one; 3]),
        (
            "redis cluster",
            RedisMode::Cluster,
            masters[0].clone(),
            vec![masters[1].clone(), masters[2].clone(), masters[1].clone()],
        ),
        (
            "redis cluster, sharded",
            RedisMode::Sharded,
            masters[0].clone(),
            vec![masters[1].clone(), masters[2].clone(), masters[1].clone()],
        ),
    ];
    println!();
    println!("| layout | raw Redis req/s | psrpc calls/s | psrpc / raw |");
    println!("|---|---:|---:|---:|");
    for (name, mode, server, clients) in redis_layouts {
        let raw_rate = raw_redis(&server, &clients, mode, span).await?;
        let rate = psrpc_redis(&server, &clients, mode, span).await?;
        eprintln!(
            "{{\"case\":\"cluster_unary\",\"layout\":\"{name}\",\"callers\":{CALLERS},\"raw_per_s\":{raw_rate:.0},\"psrpc_per_s\":{rate:.0}}}"
        );
        println!(
            "| {name} | {raw_rate:.0} | {rate:.0} | {:.2} |",
            rate / raw_rate
        );
    }
    Ok(())
}
