//! Idle memory of a process holding one psrpc client and one server, in a binary of its own
//! (the benchmark binary maps much more code, which inflates its resident size).
//!
//! ```text
//! cargo run --release -p psrpc-benches --bin idle_rss -- [--bus local,nats,redis,mqtt,amqp]
//! ```
//!
//! Per bus, a child process builds a tokio runtime with 2 worker threads and reads its
//! resident size (`/proc/self/status`) twice: with the runtime only, and after a server with
//! one method and a client (each on a bus connection of its own, as in separate services) made
//! one call and idled for a second. NATS, Redis, mosquitto and RabbitMQ are started through
//! `psrpc-testkit` on free ports. Prints one JSON line per bus: `rss` (all resident pages), split into `rss_anon`
//! (heap and stacks: this process's own memory) and `rss_file` (mapped code and libraries,
//! shared with every other process running them), and the growth over the runtime-only reading.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use psrpc::bus::LocalBus;
use psrpc::{Bus, CallOptions, Client, MethodInfo, RequestContext, Server};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ECHO: MethodInfo = MethodInfo::unary("Echo");
/// How long the process idles before its final reading.
const IDLE: Duration = Duration::from_secs(1);

async fn echo(_ctx: RequestContext, req: Bytes) -> psrpc::Result<Bytes> {
    Ok(req)
}

/// The resident-size fields of `/proc/self/status`, in bytes.
fn reading() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    json!({
        "rss": field("VmRSS:") * 1024,
        "rss_anon": field("RssAnon:") * 1024,
        "rss_file": field("RssFile:") * 1024,
        "threads": field("Threads:"),
    })
}

async fn connect(url: &str, local: &LocalBus) -> Result<Arc<dyn Bus>, BoxError> {
    if url == "local" {
        return Ok(Arc::new(local.clone()));
    }
    Ok(psrpc_connect::connect(url).await?)
}

/// The child: readings before and after one client and one server exist.
fn child(bus: &str, url: &str) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let before = reading();
    let after = runtime.block_on(async {
        let local = LocalBus::new();
        let server = Server::new("Idle", connect(url, &local).await?);
        server.register_unary(ECHO, &[], echo).await?;
        let client = Client::new("Idle", connect(url, &local).await?).await?;
        let _: Bytes = client
            .request(ECHO, &[], &Bytes::from_static(b"x"), CallOptions::new())
            .await?;
        tokio::time::sleep(IDLE).await;
        let after = reading();
        client.close().await?;
        server.kill().await;
        Ok::<_, BoxError>(after)
    })?;
    let grown = |key: &str| {
        after[key].as_u64().unwrap_or(0) as i64 - before[key].as_u64().unwrap_or(0) as i64
    };
    println!(
        "{}",
        json!({
            "bench": "idle_rss",
            "bus": bus,
            "runtime_only": before,
            "with_client_and_server": after,
            "grown_rss": grown("rss"),
            "grown_anon": grown("rss_anon"),
        })
    );
    Ok(())
}

/// A started broker, kept alive as long as its box, and its URL.
fn running<S: 'static>(
    server: S,
    url: impl FnOnce(&S) -> String,
) -> (Option<Box<dyn std::any::Any>>, String) {
    let url = url(&server);
    (Some(Box::new(server)), url)
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, bus, url] = args.as_slice()
        && flag == "--child"
    {
        return child(bus, url);
    }
    let buses: Vec<String> = match args.iter().position(|a| a == "--bus") {
        Some(i) => args
            .get(i + 1)
            .ok_or("--bus needs a list: local,nats,redis,mqtt,amqp")?
            .split(',')
            .map(str::to_owned)
            .collect(),
        None if args.is_empty() => ["local", "nats", "redis", "mqtt", "amqp"]
            .map(str::to_owned)
            .to_vec(),
        None => {
            eprintln!("usage: idle_rss [--bus local,nats,redis,mqtt,amqp]");
            std::process::exit(2);
        }
    };
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    for bus in &buses {
        let (broker, url) = match bus.as_str() {
            "local" => (None, "local".to_owned()),
            "nats" => running(psrpc_testkit::NatsServer::start()?, |s| s.url()),
            "redis" => running(psrpc_testkit::RedisServer::start()?, |s| s.url()),
            "mqtt" => running(psrpc_testkit::MosquittoServer::start()?, |s| s.url()),
            "amqp" => running(psrpc_testkit::RabbitMqServer::start()?, |s| s.url()),
            other => {
                return Err(
                    format!("unknown bus {other:?}: local, nats, redis, mqtt or amqp").into(),
                );
            }
        };
        // The broker lives until the end, so the child finds it running.
        keep.extend(broker);
        let out = Command::new(std::env::current_exe()?)
            .args(["--child", bus, &url])
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "{bus}: the child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}
