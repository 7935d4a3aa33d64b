//! Durable calls against the brokers' raw primitives, in one run, with 64 producers.
//!
//! ```text
//! cargo run --release -p psrpc-benches --bin durable -- [--quick]
//! ```
//!
//! Per broker (started through `psrpc-testkit`: JetStream with its file store, Redis without
//! persistence; the same broker for both sides of each ratio):
//!
//! - enqueue throughput: raw (JetStream publish with its ack; `XADD`) against
//!   `DurableClient::enqueue_raw`;
//! - awaited calls: raw (publish → pull → ack → reply on a core subject; `XADD` →
//!   `XREADGROUP` → `XACK` → `LPUSH` of a reply the producer `BLPOP`s) against
//!   `DurableClient::call` with a worker: throughput and p50.
//!
//! Prints one JSON line per measurement (with the CPU time of this process and of the broker
//! per operation) and the ratios. See `BENCHMARKS.md`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use psrpc::durable::{Carrier, DurableClient, EnqueueOptions, QueueConfig, Worker, WorkerOptions};
use tokio::time::Instant;

#[path = "../closed_loop.rs"]
mod closed_loop;
// The suite's CPU readers; this binary uses only part of that module.
#[allow(dead_code)]
#[path = "../mem.rs"]
mod mem;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Pair = [(f64, f64); 2];

const PRODUCERS: usize = 64;
const PAYLOAD: usize = 128;

/// One measurement: operations per second, the median latency, CPU µs per operation (this
/// process, the brokers), and NATS messages per operation (sent, received) over the
/// connections in [`COUNTED`].
struct Run {
    rate: f64,
    p50_us: f64,
    cpu: (f64, f64),
    msgs: (f64, f64),
}

/// The NATS connections whose message counts a measurement reports: what the broker handles
/// per operation is the first thing its CPU per operation follows.
static COUNTED: std::sync::Mutex<Vec<async_nats::Client>> = std::sync::Mutex::new(Vec::new());

fn count_messages(client: &async_nats::Client) {
    COUNTED.lock().expect("not poisoned").push(client.clone());
}

/// Messages sent and received so far by the counted connections.
fn messages() -> (u64, u64) {
    COUNTED
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|c| {
            let s = c.statistics();
            (
                s.out_messages.load(Ordering::Relaxed),
                s.in_messages.load(Ordering::Relaxed),
            )
        })
        .fold((0, 0), |(o, i), (a, b)| (o + a, i + b))
}

/// Runs `op` from 64 producers for `span`.
async fn drive<F, Fut>(span: Duration, op: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let cpu_before = mem::cpu();
    let msgs_before = messages();
    let outcome = closed_loop::run(PRODUCERS, span, op).await;
    let cpu_after = mem::cpu();
    let msgs_after = messages();
    let per_op = |a: u64, b: u64| b.saturating_sub(a) as f64 / outcome.ops.max(1) as f64;
    Run {
        rate: outcome.rate(),
        cpu: (
            per_op(cpu_before.ours, cpu_after.ours),
            per_op(cpu_before.brokers, cpu_after.brokers),
        ),
        msgs: (
            per_op(msgs_before.0, msgs_after.0),
            per_op(msgs_before.1, msgs_after.1),
        ),
        p50_us: outcome.p50_us(),
    }
}

fn report(bus: &str, case: &str, run: &Run) {
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"{case}\",\"producers\":{PRODUCERS},\"payload\":{PAYLOAD},\"ops_per_s\":{:.0},\"p50_us\":{:.0},\"cpu_us_per_op\":{:.1},\"broker_cpu_us_per_op\":{:.1}{}}}",
        run.rate,
        run.p50_us,
        run.cpu.0,
        run.cpu.1,
        if bus == "nats" {
            format!(
                ",\"nats_msgs_sent_per_op\":{:.2},\"nats_msgs_received_per_op\":{:.2}",
                run.msgs.0, run.msgs.1
            )
        } else {
            String::new()
        }
    );
}

fn config() -> QueueConfig {
    QueueConfig::default().visibility_timeout(Duration::from_secs(30))
}

async fn durable_side(
    bus: &str,
    carrier: Arc<dyn Carrier>,
    span: Duration,
) -> Result<Pair, BoxError> {
    let client = DurableClient::with_config(carrier.clone(), "Bench", &config()).await?;
    let payload = "x".repeat(PAYLOAD);
    let (c, p) = (client.clone(), payload.clone());
    let enq = drive(span, move |_| {
        let (c, p) = (c.clone(), p.clone());
        async move {
            c.enqueue_raw(
                "Echo",
                prost::Message::encode_to_vec(&p).into(),
                EnqueueOptions::default(),
            )
            .await?;
            Ok(())
        }
    })
    .await;
    report(bus, "durable_enqueue", &enq);
    // Drain the enqueued tasks before measuring calls.
    let worker = Worker::new(carrier, "Bench")
        .options(
            WorkerOptions::default()
                .concurrency(128)
                .queue(config())
                .fetch_wait(Duration::from_millis(100)),
        )
        .handle("Echo", |_ctx, s: String| async move { Ok(s) })
        .start()
        .await?;
    let drain_until = Instant::now() + Duration::from_secs(120);
    while Instant::now() < drain_until {
        let s = client.carrier().stats("Bench").await?;
        if s.waiting == 0 && s.in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call = drive(span, move |_| {
        let (c, p) = (client.clone(), payload.clone());
        async move {
            let _: String = c
                .call(
                    "Echo",
                    &p,
                    EnqueueOptions::default(),
                    Duration::from_secs(30),
                )
                .await?;
            Ok(())
        }
    })
    .await;
    report(bus, "durable_call", &call);
    worker.shutdown().await;
    Ok([(enq.rate, 0.0), (call.rate, call.p50_us)])
}

async fn nats_raw(url: &str, span: Duration) -> Result<Pair, BoxError> {
    let client = async_nats::connect(url).await?;
    count_messages(&client);
    let js = jetstream::new(client.clone());
    let st = js
        .get_or_create_stream(stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw.work".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let (j, p) = (js.clone(), payload.clone());
    let enq = drive(span, move |_| {
        let (j, p) = (j.clone(), p.clone());
        async move {
            j.publish("raw.work", p).await?.await?;
            Ok(())
        }
    })
    .await;
    report("nats", "raw_enqueue", &enq);
    st.purge().await?;
    let consumer: consumer::PullConsumer = st
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await?;
    // The raw worker: pull, ack, reply on the producer's subject.
    let wc = client.clone();
    let worker = tokio::spawn(async move {
        let Ok(mut messages) = consumer.messages().await else {
            return;
        };
        while let Some(Ok(msg)) = messages.next().await {
            let reply = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Reply").map(|v| v.to_string()));
            let _ = msg.ack().await;
            if let Some(reply) = reply {
                let _ = wc.publish(reply, bytes::Bytes::new()).await;
            }
        }
    });
    let mut inboxes = Vec::new();
    for p in 0..PRODUCERS {
        let sub = client.subscribe(format!("raw.reply.{p}")).await?;
        inboxes.push(Arc::new(tokio::sync::Mutex::new(sub)));
    }
    let inboxes = Arc::new(inboxes);
    let call = drive(span, move |p| {
        let (j, pl, inboxes) = (js.clone(), payload.clone(), inboxes.clone());
        async move {
            let mut inbox = inboxes[p].lock().await;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Reply", format!("raw.reply.{p}").as_str());
            j.publish_with_headers("raw.work", headers, pl)
                .await?
                .await?;
            tokio::time::timeout(Duration::from_secs(30), inbox.next()).await?;
            Ok(())
        }
    })
    .await;
    report("nats", "raw_call", &call);
    worker.abort();
    Ok([(enq.rate, 0.0), (call.rate, call.p50_us)])
}

async fn redis_raw(url: &str, span: Duration) -> Result<Pair, BoxError> {
    let client = redis::Client::open(url)?;
    let conn = client.get_multiplexed_async_connection().await?;
    let payload = vec![b'x'; PAYLOAD];
    let (c, p) = (conn.clone(), payload.clone());
    let enq = drive(span, move |_| {
        let (mut c, p) = (c.clone(), p.clone());
        async move {
            redis::cmd("XADD")
                .arg("raw")
                .arg("*")
                .arg("task")
                .arg(p)
                .query_async::<String>(&mut c)
                .await?;
            Ok(())
        }
    })
    .await;
    report("redis", "raw_enqueue", &enq);
    let mut c = conn.clone();
    redis::cmd("DEL")
        .arg("raw")
        .query_async::<()>(&mut c)
        .await?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("raw")
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(&mut c)
        .await?;
    // The raw worker: read, ack, push the reply to the producer's list.
    let mut wconn = client.get_multiplexed_async_connection().await?;
    let mut ack = conn.clone();
    let worker = tokio::spawn(async move {
        loop {
            let reply: Result<Option<redis::streams::StreamReadReply>, _> =
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("g")
                    .arg("w")
                    .arg("COUNT")
                    .arg(128)
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg("raw")
                    .arg(">")
                    .query_async(&mut wconn)
                    .await;
            let Ok(reply) = reply else { return };
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                let mut pipe = redis::pipe();
                for e in &key.ids {
                    let to: String = e.get("reply").unwrap_or_default();
                    pipe.cmd("XACK").arg("raw").arg("g").arg(&e.id).ignore();
                    pipe.cmd("XDEL").arg("raw").arg(&e.id).ignore();
                    pipe.cmd("LPUSH").arg(to).arg(1).ignore();
                }
                let _ = pipe.query_async::<()>(&mut ack).await;
            }
        }
    });
    let mut blocking = Vec::new();
    for _ in 0..PRODUCERS {
        let conn = client.get_multiplexed_async_connection().await?;
        blocking.push(Arc::new(tokio::sync::Mutex::new(conn)));
    }
    let blocking = Arc::new(blocking);
    let call = drive(span, move |p| {
        let (mut c, pl, blocking) = (conn.clone(), payload.clone(), blocking.clone());
        async move {
            let key = format!("raw:reply:{p}");
            redis::cmd("XADD")
                .arg("raw")
                .arg("*")
                .arg("task")
                .arg(pl)
                .arg("reply")
                .arg(&key)
                .query_async::<String>(&mut c)
                .await?;
            let mut b = blocking[p].lock().await;
            redis::cmd("BLPOP")
                .arg(&key)
                .arg(30)
                .query_async::<Option<(String, String)>>(&mut *b)
                .await?;
            Ok(())
        }
    })
    .await;
    report("redis", "raw_call", &call);
    worker.abort();
    Ok([(enq.rate, 0.0), (call.rate, call.p50_us)])
}

fn ratios(bus: &str, raw: Pair, durable: Pair) {
    println!(
        "{{\"bus\":\"{bus}\",\"case\":\"ratios\",\"enqueue_throughput_vs_raw\":{:.2},\"call_throughput_vs_raw\":{:.2},\"call_p50_vs_raw\":{:.2}}}",
        durable[0].0 / raw[0].0,
        durable[1].0 / raw[1].0,
        durable[1].1 / raw[1].1
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let span = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };

    let nats = psrpc_testkit::NatsServer::start_with(psrpc_testkit::NatsOptions {
        jetstream: true,
        ..Default::default()
    })?;
    let redis = psrpc_testkit::RedisServer::start()?;
    // Both from the start: the broker CPU of a measurement is that of both processes, the
    // idle one adding next to nothing.
    mem::set_broker_pids([nats.pid(), redis.pid()].into_iter().flatten().collect());

    let raw = nats_raw(&nats.url(), span).await?;
    let carrier = Arc::new(psrpc_nats::durable::JetStreamCarrier::connect(&nats.url()).await?);
    count_messages(carrier.client());
    let durable = durable_side("nats", carrier, span).await?;
    ratios("nats", raw, durable);

    let raw = redis_raw(&redis.url(), span).await?;
    let carrier = Arc::new(psrpc_redis::durable::RedisStreamsCarrier::connect(&redis.url()).await?);
    let durable = durable_side("redis", carrier, span).await?;
    ratios("redis", raw, durable);
    Ok(())
}
