//! What one stored JetStream publish costs the broker, by the shape of the stream it lands in.
//!
//! ```text
//! cargo run --release -p psrpc-benches --bin jetstream_store
//! ```
//!
//! 64 publishers, each publish awaiting its ack, 4 s per shape, two rounds. The shapes are the
//! durable carrier's: its work queue (one subject) and its result bucket (a subject per task,
//! one message per subject, an age limit), with the steps between them, to show which property
//! of the result store costs the broker what. Prints one JSON line per measurement with the
//! CPU µs per publish of this process and of nats-server. See BENCHMARKS.md, "Durable calls".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

// The suite's CPU readers; this binary uses only part of that module.
#[allow(dead_code)]
#[path = "../mem.rs"]
mod mem;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const PUBLISHERS: usize = 64;
/// About a durable result's size: the 128-byte payload in its envelope.
const PAYLOAD: usize = 150;

/// Publishes to `prefix.…` (one subject, or a fresh one per message) for `span`.
async fn measure(js: &jetstream::Context, shape: &str, prefix: &str, unique: bool, span: Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let before = mem::cpu();
    let start = std::time::Instant::now();
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (js, stop, count) = (js.clone(), stop.clone(), count.clone());
            let (prefix, payload) = (prefix.to_owned(), payload.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let subject = if unique {
                        format!("{prefix}.t{p}_{i}")
                    } else {
                        format!("{prefix}.t")
                    };
                    let Ok(ack) = js.publish(subject, payload.clone()).await else {
                        continue;
                    };
                    if ack.await.is_ok() {
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
    let after = mem::cpu();
    let n = count.load(Ordering::Relaxed).max(1) as f64;
    println!(
        "{{\"case\":\"jetstream_store\",\"shape\":\"{shape}\",\"publishers\":{PUBLISHERS},\"payload\":{PAYLOAD},\"ops_per_s\":{:.0},\"cpu_us_per_op\":{:.1},\"broker_cpu_us_per_op\":{:.1}}}",
        n / start.elapsed().as_secs_f64(),
        after.ours.saturating_sub(before.ours) as f64 / n,
        after.brokers.saturating_sub(before.brokers) as f64 / n,
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let nats = psrpc_testkit::NatsServer::start_with(psrpc_testkit::NatsOptions {
        jetstream: true,
        ..Default::default()
    })?;
    mem::set_broker_pids(nats.pid().into_iter().collect());
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    let file = stream::Config {
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let hour = Duration::from_secs(3600);
    // (shape, stream config, subject prefix, a subject per message)
    let shapes = [
        (
            "work_queue",
            stream::Config {
                name: "WQ".into(),
                subjects: vec!["wq.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                ..file.clone()
            },
            "wq",
            false,
        ),
        (
            "limits_one_subject",
            stream::Config {
                name: "ONE".into(),
                subjects: vec!["one.>".into()],
                ..file.clone()
            },
            "one",
            false,
        ),
        (
            "limits_subject_per_message",
            stream::Config {
                name: "MANY".into(),
                subjects: vec!["many.>".into()],
                ..file.clone()
            },
            "many",
            true,
        ),
        (
            "subject_per_message_max_age",
            stream::Config {
                name: "AGE".into(),
                subjects: vec!["age.>".into()],
                max_age: hour,
                ..file.clone()
            },
            "age",
            true,
        ),
        (
            "result_bucket",
            // The carrier's result bucket (`PSRPC_DR_<queue>`), as a key-value bucket's stream.
            stream::Config {
                name: "KV_BENCH".into(),
                subjects: vec!["$KV.BENCH.>".into()],
                max_messages_per_subject: 1,
                max_age: hour,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..file.clone()
            },
            "$KV.BENCH",
            true,
        ),
    ];
    for (_, config, _, _) in &shapes {
        js.create_stream(config.clone()).await?;
    }
    for _round in 0..2 {
        for (shape, _, prefix, unique) in &shapes {
            measure(&js, shape, prefix, *unique, Duration::from_secs(4)).await;
        }
    }
    Ok(())
}
