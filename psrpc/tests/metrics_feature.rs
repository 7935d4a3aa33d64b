//! The `metrics` facade observer (feature `metrics`).
#![cfg(feature = "metrics")]

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use psrpc::bus::LocalBus;
use psrpc::interceptor::Observe;
use psrpc::metrics::MetricsObserver;
use psrpc::{CallOptions, Client, Error, ErrorCode, MethodInfo, Server, ServerOptions};

const ECHO: MethodInfo = MethodInfo::unary("Echo");

#[test]
fn calls_are_counted_and_timed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let bus = LocalBus::new();
            let server = Server::with_options(
                "Metered",
                bus.clone(),
                ServerOptions::default().interceptor(Observe::new(MetricsObserver)),
            );
            server
                .register_unary(ECHO, &[], |_ctx, req: String| async move {
                    if req == "bad" {
                        Err(Error::new(ErrorCode::NotFound, "no"))
                    } else {
                        Ok(req)
                    }
                })
                .await
                .unwrap();
            let client = Client::new("Metered", bus).await.unwrap();
            for req in ["a", "b", "bad"] {
                let _ = client
                    .request::<_, String>(ECHO, &[], &req.to_string(), CallOptions::new())
                    .await;
            }
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str, code: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(key, ..)| {
                key.key().name() == name
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "code" && l.value() == code)
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "role" && l.value() == "server")
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(counter("psrpc_calls_total", "ok"), 2);
    assert_eq!(counter("psrpc_calls_total", "not_found"), 1);
    let timings = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == "psrpc_call_duration_seconds")
        .map(|(.., value)| match value {
            DebugValue::Histogram(samples) => samples.len(),
            _ => 0,
        })
        .sum::<usize>();
    assert_eq!(timings, 3);
}

/// A worker with `metrics_every` records the durable metrics: queue depth, in flight, dead
/// letters, the oldest waiting task's age, and its retries and dead-lettered tasks.
#[test]
fn durable_worker_records_queue_and_worker_gauges() {
    use psrpc::durable::{DurableClient, EnqueueOptions, LocalCarrier, Worker, WorkerOptions};
    use std::sync::Arc;
    use std::time::Duration;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let carrier = Arc::new(LocalCarrier::new());
            let client = DurableClient::new(carrier.clone(), "Metered")
                .await
                .unwrap();
            let worker = Worker::new(carrier, "Metered")
                .options(
                    WorkerOptions::default()
                        .fetch_wait(Duration::from_millis(50))
                        .metrics_every(Duration::from_millis(100)),
                )
                .handle("Fail", |_ctx, _s: String| async move {
                    Err::<String, _>(Error::new(ErrorCode::Unavailable, "down"))
                })
                .start()
                .await
                .unwrap();
            let task = client
                .enqueue::<_, String>(
                    "Fail",
                    &"x".to_string(),
                    EnqueueOptions::default()
                        .max_attempts(2)
                        .backoff(Duration::from_millis(10), Duration::from_millis(10)),
                )
                .await
                .unwrap();
            assert!(task.wait(Duration::from_secs(60)).await.is_err());
            worker.shutdown().await;
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let gauge = |name: &str| -> Option<f64> {
        snapshot
            .iter()
            .find(|(key, ..)| {
                key.key().name() == name
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "queue" && l.value() == "Metered")
            })
            .and_then(|(.., value)| match value {
                DebugValue::Gauge(v) => Some(v.into_inner()),
                _ => None,
            })
    };
    assert_eq!(gauge("psrpc_durable_worker_retries"), Some(1.0));
    assert_eq!(gauge("psrpc_durable_worker_dead_lettered"), Some(1.0));
    assert_eq!(gauge("psrpc_durable_worker_in_flight"), Some(0.0));
    assert_eq!(gauge("psrpc_durable_dead_letters"), Some(1.0));
    assert_eq!(gauge("psrpc_durable_waiting"), Some(0.0));
    assert_eq!(gauge("psrpc_durable_in_flight"), Some(0.0));
    assert_eq!(gauge("psrpc_durable_oldest_waiting_seconds"), Some(0.0));
}
