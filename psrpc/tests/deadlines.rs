//! Durations and deadlines: any `Duration` a user passes (zero, tiny, huge, `Duration::MAX`) is
//! accepted without a panic or a wrapped value, in call options, client options, server
//! selection and stream options.

use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use psrpc::bus::LocalBus;
use psrpc::stream::{Stream, StreamOptions};
use psrpc::{
    CallOptions, Client, ClientOptions, ErrorCode, MethodInfo, SelectionOptions, Server,
    ServerOptions,
};

const SVC: &str = "Deadlines";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const PICK: MethodInfo = MethodInfo::affinity("Pick");
const GATHER: MethodInfo = MethodInfo::multi("Gather");
const CHAT: MethodInfo = MethodInfo::stream("Chat");

/// Zero, tiny, ordinary, huge and the largest durations.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MAX),
        Just(Duration::ZERO),
        Just(Duration::from_secs(u64::MAX)),
        Just(Duration::from_nanos(u64::MAX)),
        (0u64..5_000_000).prop_map(Duration::from_nanos),
        (1u64..60).prop_map(Duration::from_secs),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Errors a call may end with when its duration is too short to finish; never a panic.
fn acceptable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::DeadlineExceeded | ErrorCode::Unavailable)
}

fn stream_options(d: Duration) -> StreamOptions {
    StreamOptions::default()
        .ack_timeout(d)
        .keepalive_interval(d)
        .idle_timeout(d)
}

/// Every kind of call with `d` wherever a duration goes; long durations must succeed.
async fn exercise(d: Duration) {
    let bus = LocalBus::new();
    let server = Server::with_options(
        SVC,
        bus.clone(),
        ServerOptions::default()
            .stream(stream_options(d))
            .drain_timeout(d),
    );
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    server
        .register_unary(PICK, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    server
        .register_unary(GATHER, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
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
        .await
        .unwrap();
    let client = Client::with_options(
        SVC,
        bus,
        ClientOptions::default()
            .timeout(d)
            .stream(stream_options(d)),
    )
    .await
    .unwrap();
    let long = d >= Duration::from_secs(1);
    let req = "hi".to_string();
    let check = |outcome: psrpc::Result<String>, what: &str| match outcome {
        Ok(resp) => assert_eq!(resp, "hi", "{what}"),
        Err(err) => assert!(!long && acceptable(err.code()), "{what} with {d:?}: {err}"),
    };

    check(
        client
            .request(ECHO, &[], &req, CallOptions::new().timeout(d))
            .await,
        "unary call with a timeout",
    );
    check(
        client.request(ECHO, &[], &req, CallOptions::new()).await,
        "unary call with the client's timeout",
    );
    check(
        client
            .request(ECHO, &[], &req, CallOptions::new().direct(false))
            .await,
        "claimed unary call",
    );
    let selection = SelectionOptions::default()
        .affinity_timeout(d)
        .short_circuit_timeout(d);
    let picked: psrpc::Result<String> = client
        .request(
            PICK,
            &[],
            &req,
            CallOptions::new()
                .timeout(Duration::from_millis(50))
                .selection(selection),
        )
        .await;
    match picked {
        Ok(resp) => assert_eq!(resp, "hi"),
        Err(err) => assert!(acceptable(err.code()), "affinity call with {d:?}: {err}"),
    }
    let mut answers = client
        .request_multi::<String, String>(GATHER, &[], &req, CallOptions::new().timeout(d))
        .await
        .unwrap();
    if long {
        let first = answers.next().await.expect("one answer");
        assert_eq!(first.result.unwrap(), "hi");
    }
    drop(answers);
    match client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new().timeout(d))
        .await
    {
        Ok(mut stream) => {
            stream.send(&req).await.unwrap();
            if long {
                assert_eq!(stream.recv().await.expect("open").unwrap(), "hi");
            }
            let closed = stream.close(None).await;
            if long {
                closed.unwrap();
            }
        }
        Err(err) => assert!(!long && acceptable(err.code()), "stream with {d:?}: {err}"),
    }
    // Nothing left to drain: shutdown returns whatever the drain timeout.
    server.shutdown().await;
    assert!(client.close().await.is_ok() || !long);
}

#[test]
fn duration_max_as_a_call_timeout() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(exercise(Duration::MAX));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_duration_is_accepted_everywhere(d in any_duration()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(exercise(d));
    }
}
