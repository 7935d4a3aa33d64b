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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

// Shared with the other binaries; not every one reads latencies.
#[allow(dead_code)]
#[path = "../closed_loop.rs"]
mod closed_loop;
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
    let before = mem::cpu();
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let (js, prefix) = (js.clone(), prefix.to_owned());
    let next = AtomicU64::new(0);
    let outcome = closed_loop::run(PUBLISHERS, span, move |_| {
        let (js, payload) = (js.clone(), payload.clone());
        let subject = if unique {
            format!("{prefix}.t{}", next.fetch_add(1, Ordering::Relaxed))
        } else {
            format!("{prefix}.t")
        };
        async move { js.publish(subject, payload).await?.await.map(drop) }
    })
    .await;
    let after = mem::cpu();
    let n = outcome.ops.max(1) as f64;
    println!(
        "{{\"case\":\"jetstream_store\",\"shape\":\"{shape}\",\"publishers\":{PUBLISHERS},\"payload\":{PAYLOAD},\"ops_per_s\":{:.0},\"cpu_us_per_op\":{:.1},\"broker_cpu_us_per_op\":{:.1}}}",
        outcome.rate(),
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
