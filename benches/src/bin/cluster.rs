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
//! Prints one JSON line per measurement and the psrpc/raw ratios. See `BENCHMARKS.md` and
//! `docs/scaling.md`. On one machine the nodes share its cores: the figures show the cost of
//! routing, not the capacity a cluster of machines adds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use psrpc::{CallOptions, Client, MethodInfo, Server};
use psrpc_nats::NatsBus;
use psrpc_testkit::{NatsCluster, NatsOptions};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CALLERS: usize = 48;
const ECHO: MethodInfo = MethodInfo::unary("Echo");

/// Runs `op` from [`CALLERS`] tasks for `span`; returns successful operations per second.
async fn drive<F, Fut>(span: Duration, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (op, stop, count) = (op.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if op(i).await.is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(span).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
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
    Ok(())
}
