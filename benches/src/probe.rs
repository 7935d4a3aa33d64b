//! Memory per idle registration, measured in a child process of its own so that memory freed
//! by earlier scenarios (kept by the allocator) cannot hide the growth.

use std::process::Command;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use psrpc::{MethodInfo, RequestContext, Server};
use serde_json::Value;

use crate::env::{Brokers, BusKind, Fabric};
use crate::harness::Result;
use crate::mem;

const METHOD: MethodInfo = MethodInfo::unary("Idle");

/// Registrations made at once (each waits for its subscriptions to be confirmed).
const CONCURRENCY: usize = 64;

async fn echo(_ctx: RequestContext, req: Bytes) -> psrpc::Result<Bytes> {
    Ok(req)
}

/// What one probe measured.
#[derive(Debug)]
pub struct ProbeResult {
    /// Resident bytes grown per registration.
    pub bytes_per_registration: f64,
    /// Resident bytes before the registrations (bus connected, server made).
    pub rss_before: u64,
    /// Resident bytes after.
    pub rss_after: u64,
    /// Registrations made.
    pub registrations: usize,
    /// Seconds the registrations took.
    pub seconds: f64,
}

/// In the child: registers `n` topics of one method on a fresh server, and prints the growth
/// as one JSON object.
///
/// # Errors
/// A failed connection or registration.
pub async fn run_child(kind: BusKind, brokers: &Brokers, n: usize) -> Result<()> {
    let fabric = Fabric::new(kind, brokers);
    let server = Server::new("Idle", fabric.bus().await?);
    let topics: Vec<String> = (0..n).map(|i| format!("topic{i}")).collect();
    let before = mem::read();
    let started = std::time::Instant::now();
    futures::stream::iter(&topics)
        .map(|topic| {
            let server = &server;
            async move { server.register_unary(METHOD, &[topic.as_str()], echo).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = mem::read();
    println!(
        "{}",
        serde_json::json!({
            "rss_before": before.rss,
            "rss_after": after.rss,
            "registrations": n,
            "seconds": seconds,
        })
    );
    server.kill().await;
    Ok(())
}

/// How long the idle probe waits before reading its resident size.
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// In the child: one server with one method and one client, each on a bus of its own, one
/// call made, then idle for a second; prints the resident size as one JSON object.
///
/// # Errors
/// A failed connection, registration or call.
pub async fn run_idle_child(kind: BusKind, brokers: &Brokers) -> Result<()> {
    let fabric = Fabric::new(kind, brokers);
    let server = Server::new("Idle", fabric.bus().await?);
    server.register_unary(METHOD, &[], echo).await?;
    let client = psrpc::Client::new("Idle", fabric.bus().await?).await?;
    let _: Bytes = client
        .request(METHOD, &[], &Bytes::from_static(b"x"), Default::default())
        .await?;
    tokio::time::sleep(IDLE).await;
    let now = mem::read();
    // Anonymous (heap, stacks) against file-backed (the binary's code and libraries) pages.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    println!(
        "{}",
        serde_json::json!({
            "rss": now.rss,
            "peak": now.peak,
            "rss_anon": field("RssAnon:") * 1024,
            "rss_file": field("RssFile:") * 1024,
            "threads": field("Threads:"),
        })
    );
    client.close().await?;
    server.kill().await;
    Ok(())
}

/// In the parent: the idle resident size of a process holding one client and one server on
/// `kind` (measured in a child process): `rss`, `peak`, `rss_anon`, `rss_file`, `threads`.
///
/// # Errors
/// The child failed or printed no result.
pub fn run_idle(kind: BusKind, brokers: &Brokers) -> Result<Value> {
    let v = child(brokers, &["--idle-rss", kind.name()])?;
    if v.get("rss").and_then(Value::as_u64).is_none() {
        return Err("idle probe output lacks rss".into());
    }
    Ok(v)
}

/// Runs this binary with `args` and the brokers' URLs, and parses its JSON output.
fn child(brokers: &Brokers, args: &[&str]) -> Result<Value> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args);
    if let Ok(url) = brokers.nats_url() {
        cmd.arg("--nats").arg(url);
    }
    if let Ok(url) = brokers.redis_url() {
        cmd.arg("--redis").arg(url);
    }
    if let Ok(url) = brokers.amqp_url() {
        cmd.arg("--amqp").arg(url);
    }
    if let Ok(url) = brokers.mqtt_url() {
        cmd.arg("--mqtt").arg(url);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "memory probe exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let line = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(line.trim())?)
}

/// In the parent: runs the probe for `kind` in a child process.
///
/// # Errors
/// The child failed or printed no result.
pub fn run(kind: BusKind, brokers: &Brokers, n: usize) -> Result<ProbeResult> {
    let n_arg = n.to_string();
    let v = child(brokers, &["--memory-probe", kind.name(), &n_arg])?;
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or(format!("probe output lacks {k}"))
    };
    let rss_before = field("rss_before")?;
    let rss_after = field("rss_after")?;
    let registrations = field("registrations")? as usize;
    Ok(ProbeResult {
        bytes_per_registration: rss_after.saturating_sub(rss_before) as f64
            / registrations.max(1) as f64,
        rss_before,
        rss_after,
        registrations,
        seconds: v.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
    })
}
