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
