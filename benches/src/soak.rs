//! Soak: mixed load on one bus for a while, sampling memory and tasks to show they stay flat.
//!
//! Load: 16 callers making unary calls (direct and claim paths alternating) to 2 servers, a
//! multi call every 100 ms, a publisher feeding fan-out and queue subscribers, and a stream
//! echoing messages. Every 10 s one JSON line reports RSS, live tokio tasks and progress; the
//! summary compares the first sample after warm-up with the last.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use psrpc::stream::Stream;
use psrpc::{CallOptions, Client, MethodInfo, Server};

use crate::env::{BusKind, Fabric};
use crate::harness::Result;
use crate::mem;

const SVC: &str = "Soak";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const GATHER: MethodInfo = MethodInfo::multi("Gather");
const EVENTS: MethodInfo = MethodInfo::subscription("Events");
const JOBS: MethodInfo = MethodInfo::queue_subscription("Jobs");
const CHAT: MethodInfo = MethodInfo::stream("Chat");
const CALLERS: usize = 16;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    call_errors: AtomicU64,
    multi: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
    stream_messages: AtomicU64,
}

/// Runs the soak for `duration` on `kind`; prints JSON samples and a summary line.
pub async fn run(fabric: &Fabric<'_>, kind: BusKind, duration: Duration) -> Result<()> {
    let mut servers = Vec::new();
    for _ in 0..2 {
        let server = Server::new(SVC, fabric.bus().await?);
        server
            .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
            .await?;
        server
            .register_unary(GATHER, &[], |ctx, _req: String| async move {
                Ok(ctx.server_id().to_owned())
            })
            .await?;
        server
            .register_stream(
                CHAT,
                &[],
                |_ctx, mut stream: Stream<String, String>| async move {
                    while let Some(msg) = stream.recv().await {
                        stream.send(&msg?).await?;
                    }
                    Ok(())
                },
            )
            .await?;
        servers.push(server);
    }
    let client = Client::new(SVC, fabric.bus().await?).await?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();

    for caller in 0..CALLERS {
        let (client, counters, stop) = (client.clone(), counters.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let opts = CallOptions::new().direct(n.is_multiple_of(2));
                match client
                    .request::<_, String>(ECHO, &[], &format!("{caller}-{n}"), opts)
                    .await
                {
                    Ok(_) => counters.calls.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counters.call_errors.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    {
        let (client, counters, stop) = (client.clone(), counters.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let opts = CallOptions::new().timeout(Duration::from_millis(100));
                if let Ok(answers) = client
                    .request_multi::<_, String>(GATHER, &[], &String::new(), opts)
                    .await
                {
                    let got = answers.take(2).count().await;
                    counters.multi.fetch_add(got as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    let subscriber = Client::new(SVC, fabric.bus().await?).await?;
    for (method, members) in [(EVENTS, 2), (JOBS, 2)] {
        for _ in 0..members {
            let mut sub = subscriber.subscribe::<String>(method, &[]).await?;
            let counters = counters.clone();
            load.push(tokio::spawn(async move {
                while sub.recv().await.is_some() {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    {
        let (publisher, counters, stop) = (servers[0].clone(), counters.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Distinct payloads: Redis queue delivery deduplicates identical ones.
                let msg = format!("event {n}");
                for method in [EVENTS, JOBS] {
                    if publisher.publish(method, &[], &msg).await.is_ok() {
                        counters.published.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    {
        let (client, counters, stop) = (client.clone(), counters.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A fresh stream every 1,000 messages, so opening and closing is soaked too.
                let Ok(mut stream) = client
                    .open_stream::<String, String>(CHAT, &[], CallOptions::new())
                    .await
                else {
                    continue;
                };
                for i in 0..1_000 {
                    if stop.load(Ordering::Relaxed) || stream.send(&format!("m{i}")).await.is_err()
                    {
                        break;
                    }
                    match stream.recv().await {
                        Some(Ok(_)) => counters.stream_messages.fetch_add(1, Ordering::Relaxed),
                        _ => break,
                    };
                }
                let _ = stream.close(None).await;
            }
        }));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < duration {
        tokio::time::sleep(SAMPLE_EVERY.min(duration)).await;
        let memory = mem::read();
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let line = format!(
            "{{\"soak\":\"{}\",\"t_s\":{},\"rss\":{},\"tasks\":{},\"calls\":{},\"call_errors\":{},\"multi_answers\":{},\"published\":{},\"received\":{},\"stream_messages\":{},\"pending\":{}}}",
            kind.name(),
            started.elapsed().as_secs(),
            memory.rss,
            tasks,
            counters.calls.load(Ordering::Relaxed),
            counters.call_errors.load(Ordering::Relaxed),
            counters.multi.load(Ordering::Relaxed),
            counters.published.load(Ordering::Relaxed),
            counters.received.load(Ordering::Relaxed),
            counters.stream_messages.load(Ordering::Relaxed),
            client.stats().pending,
        );
        println!("{line}");
        samples.push((memory.rss, tasks));
    }
    stop.store(true, Ordering::Relaxed);
    // Counted before shutting down, whose cut-off calls are not failures of the soak.
    let calls = counters.calls.load(Ordering::Relaxed);
    let call_errors = counters.call_errors.load(Ordering::Relaxed);
    for server in &servers {
        server.kill().await;
    }
    for task in load {
        task.abort();
    }
    // The first sample is warm-up (buffers and caches filling); compare the rest.
    let settled = samples
        .get(1)
        .or(samples.first())
        .copied()
        .unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    let max_rss = samples.iter().map(|s| s.0).max().unwrap_or_default();
    println!(
        "{{\"soak\":\"{}\",\"summary\":true,\"minutes\":{:.1},\"rss_settled\":{},\"rss_last\":{},\"rss_max\":{},\"rss_growth_pct\":{:.1},\"tasks_settled\":{},\"tasks_last\":{},\"calls\":{},\"call_errors\":{}}}",
        kind.name(),
        started.elapsed().as_secs_f64() / 60.0,
        settled.0,
        last.0,
        max_rss,
        (last.0 as f64 - settled.0 as f64) * 100.0 / (settled.0.max(1) as f64),
        settled.1,
        last.1,
        calls,
        call_errors,
    );
    Ok(())
}
