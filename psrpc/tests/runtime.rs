//! Behaviour of the client and server runtime on the in-process bus.
//!
//! Tests run with tokio's paused clock: timers fire as soon as every task is idle, so timeouts
//! are exercised deterministically and without sleeping.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::RecordingBus;
use futures::StreamExt;
use psrpc::bus::{Bus, LocalBus, LocalBusOptions};
use psrpc::channel::ChannelKind;
use psrpc::wire::{self, Request};
use psrpc::{
    CallOptions, Channel, Client, ClientOptions, Error, ErrorCode, MethodInfo, SelectionOptions,
    Server, ServerOptions,
};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

const SVC: &str = "Test";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const PICK: MethodInfo = MethodInfo::affinity("Pick");
const GATHER: MethodInfo = MethodInfo::multi("Gather");
const EVENTS: MethodInfo = MethodInfo::subscription("Events");
const JOBS: MethodInfo = MethodInfo::queue_subscription("Jobs");

/// A server whose Echo answers `<server id>:<request>`.
async fn echo_server(bus: &LocalBus) -> Server {
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary(ECHO, &[], |ctx, req: String| async move {
            Ok(format!("{}:{req}", ctx.server_id()))
        })
        .await
        .unwrap();
    server
}

async fn affinity_server(bus: &LocalBus, affinity: f32) -> Server {
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary_with_affinity(
            PICK,
            &[],
            |ctx, _req: String| async move { Ok(ctx.server_id().to_owned()) },
            Arc::new(move |_req: &String| affinity),
        )
        .await
        .unwrap();
    server
}

async fn client(bus: impl psrpc::IntoBus) -> Client {
    Client::new(SVC, bus).await.unwrap()
}

fn s(v: &str) -> String {
    v.to_owned()
}

#[tokio::test(start_paused = true)]
async fn unary_direct_path_uses_two_messages() {
    let local = LocalBus::new();
    let server = echo_server(&local).await;
    let bus = RecordingBus::new(local);
    let client = client(bus.clone()).await;
    let reply: String = client
        .request(ECHO, &[], &s("hi"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply, format!("{}:hi", server.id()));
    assert_eq!(bus.kinds(), [ChannelKind::Request]);
    assert_eq!(server.stats().handled, 1);
}

#[tokio::test(start_paused = true)]
async fn unary_claim_path_matches_go_exchange() {
    let local = LocalBus::new();
    let server = echo_server(&local).await;
    let bus = RecordingBus::new(local.clone());
    let client = client(bus.clone()).await;
    let reply: String = client
        .request(ECHO, &[], &s("hi"), CallOptions::new().direct(false))
        .await
        .unwrap();
    assert_eq!(reply, format!("{}:hi", server.id()));
    // The client published the request and the claim response (the server publishes on the
    // raw local bus, so only client messages are recorded here).
    assert_eq!(
        bus.type_urls(),
        [wire::REQUEST_TYPE_URL, wire::CLAIM_RESPONSE_TYPE_URL]
    );

    // And a server on a recording bus shows its side: the claim, then the response.
    let server_bus = RecordingBus::new(local.clone());
    server.kill().await;
    let server2 = Server::new(SVC, server_bus.clone());
    server2
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    let _: String = client
        .request(ECHO, &[], &s("again"), CallOptions::new().direct(false))
        .await
        .unwrap();
    assert_eq!(
        server_bus.type_urls(),
        [wire::CLAIM_REQUEST_TYPE_URL, wire::RESPONSE_TYPE_URL]
    );
}

#[tokio::test(start_paused = true)]
async fn queue_method_is_handled_by_exactly_one_of_three_servers() {
    let bus = LocalBus::new();
    let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let mut servers = Vec::new();
    for _ in 0..3 {
        let server = Server::new(SVC, bus.clone());
        let counts = counts.clone();
        server
            .register_unary(ECHO, &[], move |ctx, req: String| {
                *counts
                    .lock()
                    .unwrap()
                    .entry(ctx.server_id().to_owned())
                    .or_default() += 1;
                async move { Ok(req) }
            })
            .await
            .unwrap();
        servers.push(server);
    }
    let client = client(bus).await;
    for (i, direct) in (0..30).map(|i| (i, i % 2 == 0)) {
        let reply: String = client
            .request(
                ECHO,
                &[],
                &format!("{i}"),
                CallOptions::new().direct(direct),
            )
            .await
            .unwrap();
        assert_eq!(reply, format!("{i}"));
    }
    let counts = counts.lock().unwrap();
    assert_eq!(
        counts.values().sum::<usize>(),
        30,
        "each call handled once: {counts:?}"
    );
    assert_eq!(counts.len(), 3, "round robin spreads calls: {counts:?}");
}

#[tokio::test(start_paused = true)]
async fn affinity_call_picks_the_highest_affinity() {
    let bus = LocalBus::new();
    let _low = affinity_server(&bus, 0.25).await;
    let high = affinity_server(&bus, 0.75).await;
    let _mid = affinity_server(&bus, 0.5).await;
    let client = client(bus).await;
    let started = Instant::now();
    let chosen: String = client
        .request(PICK, &[], &s("x"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(chosen, high.id());
    // Waited for the 200 ms short circuit after the first claim, not the 1 s window.
    assert_eq!(started.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn affinity_zero_is_never_picked_unless_accept_first() {
    let bus = LocalBus::new();
    let zero = affinity_server(&bus, 0.0).await;
    let client = client(bus).await;
    let err = client
        .request::<_, String>(PICK, &[], &s("x"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err, Error::no_servers_available());

    let opts = CallOptions::new()
        .selection(SelectionOptions::for_method(PICK).accept_first_available(true));
    let chosen: String = client.request(PICK, &[], &s("x"), opts).await.unwrap();
    assert_eq!(chosen, zero.id());
}

#[tokio::test(start_paused = true)]
async fn negative_affinity_declines_to_claim() {
    let bus = LocalBus::new();
    let _declines = affinity_server(&bus, -1.0).await;
    let client = client(bus).await;
    let started = Instant::now();
    let err = client
        .request::<_, String>(PICK, &[], &s("x"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err, Error::no_response());
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "the affinity timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn minimum_and_maximum_affinity_options() {
    let bus = LocalBus::new();
    let _low = affinity_server(&bus, 0.3).await;
    let top = affinity_server(&bus, 0.95).await;
    let client = client(bus).await;

    // Maximum: a claim at or above it is taken at once, without the short-circuit wait.
    let started = Instant::now();
    let opts = CallOptions::new().selection(
        SelectionOptions::for_method(PICK)
            .maximum_affinity(0.9)
            .short_circuit_timeout(Duration::from_secs(10))
            .affinity_timeout(Duration::from_secs(10)),
    );
    let chosen: String = client.request(PICK, &[], &s("x"), opts).await.unwrap();
    assert_eq!(chosen, top.id());
    assert!(started.elapsed() < Duration::from_millis(1));

    // Minimum above every claim: nobody is acceptable.
    let opts =
        CallOptions::new().selection(SelectionOptions::for_method(PICK).minimum_affinity(0.99));
    let err = client
        .request::<_, String>(PICK, &[], &s("x"), opts)
        .await
        .unwrap_err();
    assert_eq!(err, Error::no_servers_available());
}

#[tokio::test(start_paused = true)]
async fn custom_selection_function_and_affinity_timeout() {
    let bus = LocalBus::new();
    let low = affinity_server(&bus, 0.3).await;
    let _high = affinity_server(&bus, 0.9).await;
    let client = client(bus).await;
    let started = Instant::now();
    let opts = CallOptions::new().selection(
        SelectionOptions::for_method(PICK)
            .short_circuit_timeout(Duration::ZERO)
            .affinity_timeout(Duration::from_millis(300))
            .selection_fn(|claims| {
                assert_eq!(claims.len(), 2);
                let lowest = claims
                    .iter()
                    .min_by(|a, b| a.affinity.total_cmp(&b.affinity));
                Ok(lowest.unwrap().server_id.clone())
            }),
    );
    let chosen: String = client.request(PICK, &[], &s("x"), opts).await.unwrap();
    assert_eq!(chosen, low.id());
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(300),
        "waited the whole window"
    );
}

#[tokio::test(start_paused = true)]
async fn single_server_calls_skip_the_claim() {
    const ONE: MethodInfo = MethodInfo::new(
        "One",
        psrpc::MethodKind::Unary(psrpc::Dispatch::SingleServer),
    );
    let local = LocalBus::new();
    let server = Server::new(SVC, local.clone());
    server
        .register_unary(ONE, &[], |_ctx, req: String| async move { Ok(req + "!") })
        .await
        .unwrap();
    let bus = RecordingBus::new(local);
    let client = client(bus.clone()).await;
    let reply: String = client
        .request(ONE, &[], &s("a"), CallOptions::new().direct(false))
        .await
        .unwrap();
    assert_eq!(reply, "a!");
    assert_eq!(
        bus.kinds(),
        [ChannelKind::Request],
        "no claim response sent"
    );
}

#[tokio::test(start_paused = true)]
async fn multi_call_to_three_servers_yields_three_results_including_an_error() {
    let bus = LocalBus::new();
    let mut ids = Vec::new();
    let mut servers = Vec::new();
    for i in 0..3 {
        let server = Server::new(SVC, bus.clone());
        server
            .register_unary(GATHER, &[], move |ctx, req: String| async move {
                if i == 1 {
                    Err(Error::new(ErrorCode::Internal, "broken"))
                } else {
                    Ok(format!("{}:{req}", ctx.server_id()))
                }
            })
            .await
            .unwrap();
        ids.push(server.id().to_owned());
        servers.push(server);
    }
    let client = client(bus).await;
    let started = Instant::now();
    let results = client
        .request_multi::<_, String>(
            GATHER,
            &[],
            &s("q"),
            CallOptions::new().timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "a multi call runs to its deadline"
    );
    assert_eq!(results.len(), 3);
    let mut seen: Vec<_> = results.iter().map(|r| r.server_id.clone()).collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    let errors: Vec<_> = results
        .iter()
        .filter_map(|r| r.result.as_ref().err())
        .collect();
    assert_eq!(errors, [&Error::new(ErrorCode::Internal, "broken")]);
    for r in results.iter().filter(|r| r.result.is_ok()) {
        assert_eq!(r.result.as_ref().unwrap(), &format!("{}:q", r.server_id));
    }
}

#[tokio::test(start_paused = true)]
async fn multi_call_can_stop_early() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary(GATHER, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    let client = client(bus).await;
    let started = Instant::now();
    let mut answers = client
        .request_multi::<_, String>(GATHER, &[], &s("q"), CallOptions::new())
        .await
        .unwrap();
    let first = answers.next().await.unwrap();
    assert_eq!(first.result.unwrap(), "q");
    drop(answers);
    assert!(started.elapsed() < Duration::from_millis(1));
    assert_eq!(client.stats().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn topics_route_calls_and_deregistration_stops_them() {
    const REGION: MethodInfo = MethodInfo::unary("RegionEcho");
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    for region in ["eu", "us"] {
        server
            .register_unary(REGION, &[region], |ctx, _req: String| async move {
                Ok(ctx.topics().join(","))
            })
            .await
            .unwrap();
    }
    let client = client(bus).await;
    for region in ["eu", "us"] {
        let reply: String = client
            .request(REGION, &[region], &s("x"), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(reply, region);
    }
    assert!(server.deregister(REGION, &["eu"]));
    assert!(!server.is_registered(REGION, &["eu"]));
    let err = client
        .request::<_, String>(REGION, &["eu"], &s("x"), CallOptions::new().direct(false))
        .await
        .unwrap_err();
    assert_eq!(err, Error::no_response());
    let reply: String = client
        .request(REGION, &["us"], &s("x"), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply, "us");
    let err = server
        .register_unary(REGION, &["us"], |_ctx, r: String| async move { Ok(r) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
}

#[tokio::test(start_paused = true)]
async fn subscriptions_fan_out_queue_and_topics() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    let client = client(bus).await;

    let mut a = client.subscribe::<String>(EVENTS, &[]).await.unwrap();
    let mut b = client.subscribe::<String>(EVENTS, &[]).await.unwrap();
    let mut eu = client.subscribe::<String>(EVENTS, &["eu"]).await.unwrap();
    server.publish(EVENTS, &[], &s("all")).await.unwrap();
    server
        .publish(EVENTS, &["eu"], &s("eu-only"))
        .await
        .unwrap();
    assert_eq!(a.recv().await.unwrap(), "all");
    assert_eq!(b.recv().await.unwrap(), "all");
    assert_eq!(eu.recv().await.unwrap(), "eu-only");

    let mut q1 = client.subscribe::<String>(JOBS, &[]).await.unwrap();
    let mut q2 = client.subscribe::<String>(JOBS, &[]).await.unwrap();
    for i in 0..10 {
        server.publish(JOBS, &[], &format!("job{i}")).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(q1.recv().await.unwrap());
        got.push(q2.recv().await.unwrap());
    }
    got.sort();
    let mut want: Vec<_> = (0..10).map(|i| format!("job{i}")).collect();
    want.sort();
    assert_eq!(got, want, "each job delivered to exactly one queue member");

    // A closed subscription stops receiving; the other one still does.
    a.close();
    server.publish(EVENTS, &[], &s("after")).await.unwrap();
    assert_eq!(a.recv().await, None);
    assert_eq!(b.recv().await.unwrap(), "after");
}

#[tokio::test(start_paused = true)]
async fn subscription_skips_messages_of_another_type() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    let client = client(bus).await;
    let mut sub = client.subscribe::<String>(EVENTS, &[]).await.unwrap();
    server.publish(EVENTS, &[], &7u64).await.unwrap();
    server.publish(EVENTS, &[], &s("ok")).await.unwrap();
    assert_eq!(sub.recv().await.unwrap(), "ok");
    assert_eq!(sub.malformed(), 1);
}

#[tokio::test(start_paused = true)]
async fn errors_with_details_cross_the_wire() {
    let bus = LocalBus::new();
    let detail = prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
        value: b"\n\x0bdetail:boom".to_vec(),
    };
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary(ECHO, &[], move |_ctx, req: String| async move {
            Err::<String, _>(
                Error::new(ErrorCode::NotFound, format!("no such thing: {req}"))
                    .with_detail(format!("detail:{req}")),
            )
        })
        .await
        .unwrap();
    let client = client(bus).await;
    for direct in [true, false] {
        let err = client
            .request::<_, String>(ECHO, &[], &s("boom"), CallOptions::new().direct(direct))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert_eq!(err.message(), "no such thing: boom");
        // Packed as Go's anypb.New packs a StringValue.
        assert_eq!(err.details(), std::slice::from_ref(&detail));
        assert_eq!(err.detail::<String>(), Some(Ok("detail:boom".into())));
    }
}

#[tokio::test(start_paused = true)]
async fn unimplemented_and_unserved_methods() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary(ECHO, &[], |_ctx, _req: String| async move {
            Err::<String, _>(Error::unimplemented("Echo"))
        })
        .await
        .unwrap();
    let client = client(bus).await;
    let err = client
        .request::<_, String>(ECHO, &[], &s("x"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unimplemented);

    const NOBODY: MethodInfo = MethodInfo::unary("Nobody");
    let err = client
        .request::<_, String>(NOBODY, &[], &s("x"), CallOptions::new().direct(false))
        .await
        .unwrap_err();
    assert_eq!(err, Error::no_response());
}

#[tokio::test(start_paused = true)]
async fn malformed_request_gets_malformed_request_on_both_paths() {
    let bus = LocalBus::new();
    let server = echo_server(&bus).await;
    let client = client(bus).await;
    // A UInt64Value puts a varint in field 1, where StringValue wants bytes.
    for direct in [true, false] {
        let started = Instant::now();
        let err = client
            .request::<_, String>(ECHO, &[], &42u64, CallOptions::new().direct(direct))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedRequest, "direct={direct}");
        if !direct {
            // Kept until the claim window closes, in case another server claims.
            assert_eq!(started.elapsed(), Duration::from_secs(1));
        }
    }
    assert_eq!(server.stats().malformed, 2);
    assert_eq!(server.stats().handled, 0);
}

#[tokio::test(start_paused = true)]
async fn malformed_result_is_reported() {
    let bus = LocalBus::new();
    let _server = echo_server(&bus).await;
    let client = client(bus).await;
    // The server answers a StringValue; decoding it as UInt64Value fails.
    let err = client
        .request::<_, u64>(ECHO, &[], &s("x"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MalformedResult);
}

/// The call ended at its deadline, or a little before when the server's copy of the deadline
/// (converted from the wall-clock expiry, which moves on while the paused test clock does not)
/// fired first and answered `deadline_exceeded` itself.
fn assert_ended_by(started: Instant, deadline: Duration) {
    let elapsed = started.elapsed();
    assert!(
        elapsed <= deadline && elapsed + Duration::from_millis(50) >= deadline,
        "ended after {elapsed:?}, deadline {deadline:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_client_default_per_call_and_deadline() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    server
        .register_unary(ECHO, &[], move |ctx, _req: String| {
            record.lock().unwrap().push(ctx.deadline());
            // Never answers before the deadline.
            async move { futures::future::pending::<psrpc::Result<String>>().await }
        })
        .await
        .unwrap();
    let client = Client::with_options(
        SVC,
        bus.clone(),
        ClientOptions::default().timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();

    let started = Instant::now();
    let err = client
        .request::<_, String>(ECHO, &[], &s("x"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err, Error::timed_out());
    assert_ended_by(started, Duration::from_millis(500));

    let started = Instant::now();
    let opts = CallOptions::new().timeout(Duration::from_millis(200));
    assert_eq!(
        client
            .request::<_, String>(ECHO, &[], &s("x"), opts)
            .await
            .unwrap_err(),
        Error::timed_out()
    );
    assert_ended_by(started, Duration::from_millis(200));

    let started = Instant::now();
    let opts = CallOptions::new().deadline(Instant::now() + Duration::from_millis(100));
    assert_eq!(
        client
            .request::<_, String>(ECHO, &[], &s("x"), opts)
            .await
            .unwrap_err(),
        Error::timed_out()
    );
    assert_ended_by(started, Duration::from_millis(100));

    // The handler saw the caller's deadline (to within clock conversion).
    let deadlines = seen.lock().unwrap().clone();
    assert_eq!(deadlines.len(), 3);
    let expected_last = started + Duration::from_millis(100);
    let diff = if deadlines[2] > expected_last {
        deadlines[2] - expected_last
    } else {
        expected_last - deadlines[2]
    };
    assert!(
        diff < Duration::from_millis(50),
        "handler deadline off by {diff:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn handler_sees_metadata_and_caller_identity() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary(ECHO, &[], |ctx, _req: String| async move {
            Ok(format!(
                "{}|{}|{}|{}",
                ctx.metadata().get("user").cloned().unwrap_or_default(),
                ctx.client_id(),
                ctx.request_id().starts_with("REQ_"),
                ctx.method().name()
            ))
        })
        .await
        .unwrap();
    let client = client(bus).await;
    let reply: String = client
        .request(
            ECHO,
            &[],
            &s("x"),
            CallOptions::new().metadata("user", "alice"),
        )
        .await
        .unwrap();
    assert_eq!(reply, format!("alice|{}|true|Echo", client.id()));
}

#[tokio::test(start_paused = true)]
async fn expired_requests_are_dropped_by_servers() {
    let bus = LocalBus::new();
    let server = echo_server(&bus).await;
    let req = Request {
        request_id: "REQ_expiredexpir".into(),
        client_id: "CLI_nobodynobody".into(),
        sent_at: psrpc::wire::now_unix_nanos() - 2_000_000_000,
        expiry: psrpc::wire::now_unix_nanos() - 1_000_000_000,
        raw_request: Bytes::from_static(b"\n\x01x"),
        x_direct: true,
        ..Default::default()
    };
    let channel = Channel::request(SVC, ECHO.name(), [""; 0], true);
    bus.publish(
        &channel,
        wire::encode_envelope(wire::REQUEST_TYPE_URL, &req),
    )
    .await
    .unwrap();
    // Garbage on the same channel is counted as malformed, and the server keeps serving.
    bus.publish(&channel, Bytes::from_static(b"\xff\xff\xff"))
        .await
        .unwrap();
    let client = client(bus).await;
    let _: String = client
        .request(ECHO, &[], &s("alive"), CallOptions::new())
        .await
        .unwrap();
    let stats = server.stats();
    assert_eq!(stats.expired, 1);
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.handled, 1);
}

/// An Echo call running in the background.
fn spawn_call(client: &Client, text: &str) -> tokio::task::JoinHandle<psrpc::Result<String>> {
    let (client, text) = (client.clone(), text.to_owned());
    tokio::spawn(async move {
        client
            .request::<_, String>(ECHO, &[], &text, CallOptions::new())
            .await
    })
}

/// A server whose Echo waits until released, telling the test when it started.
async fn gated_server(bus: &LocalBus, started: Arc<Notify>, release: Arc<Notify>) -> Server {
    let server = Server::new(SVC, bus.clone());
    server
        .register_unary(ECHO, &[], move |_ctx, req: String| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                Ok(req)
            }
        })
        .await
        .unwrap();
    server
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_slow_handler() {
    let bus = LocalBus::new();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server = gated_server(&bus, started.clone(), release.clone()).await;
    let client = client(bus).await;
    let call = spawn_call(&client, "slow");
    started.notified().await;
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown must wait for the running handler"
    );
    release.notify_one();
    shutdown.await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), "slow");
    // After shutdown the server takes no new requests.
    let err = client
        .request::<_, String>(ECHO, &[], &s("late"), CallOptions::new().direct(false))
        .await
        .unwrap_err();
    assert_eq!(err, Error::no_response());
}

#[tokio::test(start_paused = true)]
async fn kill_abandons_handlers_and_tells_callers() {
    let bus = LocalBus::new();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server = gated_server(&bus, started.clone(), release).await;
    let client = client(bus).await;
    let call = spawn_call(&client, "x");
    started.notified().await;
    let at = Instant::now();
    server.kill().await;
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert_eq!(err.message(), "server killed");
    assert!(at.elapsed() < Duration::from_millis(1));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_server_handle_stops_it() {
    let bus = LocalBus::new();
    let server = echo_server(&bus).await;
    let client = client(bus.clone()).await;
    let _: String = client
        .request(ECHO, &[], &s("x"), CallOptions::new())
        .await
        .unwrap();
    drop(server);
    let err = client
        .request::<_, String>(ECHO, &[], &s("x"), CallOptions::new().direct(false))
        .await
        .unwrap_err();
    assert_eq!(err, Error::no_response());
}

#[tokio::test(start_paused = true)]
async fn client_close_fails_pending_calls_at_once() {
    let bus = LocalBus::new();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let _server = gated_server(&bus, started.clone(), release).await;
    let client = client(bus).await;
    let call = spawn_call(&client, "x");
    started.notified().await;
    let at = Instant::now();
    client.close().await.unwrap();
    assert_eq!(call.await.unwrap().unwrap_err(), Error::canceled());
    assert!(at.elapsed() < Duration::from_millis(1));
    let err = client
        .request::<_, String>(ECHO, &[], &s("x"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err, Error::canceled());
    client.closed().await;
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_cancels_the_handler() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (cancelled_tx, cancelled_rx) = oneshot::channel::<bool>();
    let slots = Arc::new(Mutex::new(Some((started_tx, cancelled_tx))));
    server
        .register_unary(ECHO, &[], move |ctx, _req: String| {
            let (started, cancelled) = slots.lock().unwrap().take().unwrap();
            async move {
                let _ = started.send(());
                ctx.cancelled().await;
                let _ = cancelled.send(ctx.is_cancelled());
                Ok::<_, Error>(String::new())
            }
        })
        .await
        .unwrap();
    let client = client(bus).await;
    let call = spawn_call(&client, "x");
    started_rx.await.unwrap();
    call.abort();
    let at = Instant::now();
    assert!(
        cancelled_rx.await.unwrap(),
        "the handler observed the cancellation"
    );
    assert!(at.elapsed() < Duration::from_millis(1));
    assert_eq!(client.stats().pending, 0);
    // No response was sent for the dead call.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(server.stats().cancelled, 1);
    assert_eq!(client.stats().unroutable, 0);
}

#[tokio::test(start_paused = true)]
async fn in_flight_limit_sheds_with_resource_exhausted() {
    let bus = LocalBus::new();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server = Server::with_options(SVC, bus.clone(), ServerOptions::default().max_in_flight(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s2, r2, c2) = (started.clone(), release.clone(), calls.clone());
    server
        .register_unary(ECHO, &[], move |_ctx, req: String| {
            c2.fetch_add(1, Ordering::SeqCst);
            let (started, release) = (s2.clone(), r2.clone());
            async move {
                started.notify_one();
                release.notified().await;
                Ok(req)
            }
        })
        .await
        .unwrap();
    let client = client(bus).await;
    let first = spawn_call(&client, "1");
    started.notified().await;
    let err = client
        .request::<_, String>(ECHO, &[], &s("2"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ResourceExhausted);
    release.notify_one();
    assert_eq!(first.await.unwrap().unwrap(), "1");
    assert_eq!(server.stats().shed, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn oversized_payloads_get_a_clear_error() {
    let bus = LocalBus::with_options(LocalBusOptions::default().max_payload(1024));
    let server = echo_server(&bus).await;
    let client = client(bus).await;
    let err = client
        .request::<_, String>(ECHO, &[], &"x".repeat(2000), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(
        err.message()
            .contains("exceeds the bus limit of 1024 bytes"),
        "{err}"
    );
    let err = server
        .publish(EVENTS, &[], &"y".repeat(2000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(client.stats().pending, 0);
    // A response that would be too large becomes an error response instead of silence.
    const BIG: MethodInfo = MethodInfo::unary("Big");
    server
        .register_unary(BIG, &[], |_ctx, _req: String| async move {
            Ok("z".repeat(2000))
        })
        .await
        .unwrap();
    let err = client
        .request::<_, String>(BIG, &[], &s("x"), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal);
    assert!(err.message().contains("exceeds the bus limit"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn calls_to_nobody_fail_at_once() {
    let bus = LocalBus::new();
    let client = client(bus).await;
    const NOBODY: MethodInfo = MethodInfo::unary("Nobody");
    const NOBODY_STREAM: MethodInfo = MethodInfo::stream("NobodyStream");
    let started = Instant::now();
    for direct in [true, false] {
        let err = client
            .request::<_, String>(NOBODY, &[], &s("x"), CallOptions::new().direct(direct))
            .await
            .unwrap_err();
        assert_eq!(err, Error::no_response());
    }
    let results = client
        .request_multi::<_, String>(GATHER, &[], &s("x"), CallOptions::new())
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(results.is_empty());
    let err = client
        .open_stream::<String, String>(NOBODY_STREAM, &[], CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err, Error::no_response());
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no claim window, no timeout waited"
    );
}

#[tokio::test(start_paused = true)]
async fn servers_stop_waiting_when_no_claim_is_chosen() {
    let bus = LocalBus::new();
    // Affinity 0 is never picked without accept-first: the call fails after the window.
    let server = affinity_server(&bus, 0.0).await;
    let client = client(bus).await;
    let opts = CallOptions::new().timeout(Duration::from_secs(30));
    let err = client
        .request::<_, String>(PICK, &[], &s("x"), opts)
        .await
        .unwrap_err();
    assert_eq!(err, Error::no_servers_available());
    // The claiming server was told, instead of waiting 30 s for a choice.
    let at = Instant::now();
    server.shutdown().await;
    assert!(
        at.elapsed() < Duration::from_millis(1),
        "{:?}",
        at.elapsed()
    );
    assert_eq!(server.stats().claims_lost, 1);
}

/// Issue 16.6: a server that gets a claim request after the caller already chose another
/// server (its delivery lagged) learns the choice at once instead of waiting, parked, until
/// the request's deadline.
#[tokio::test(start_paused = true)]
async fn a_late_claimer_learns_the_choice_without_waiting() {
    const PICK_LATE: MethodInfo = MethodInfo::affinity("PickLate");
    let bus = LocalBus::new();
    let fast = Server::new("Late", bus.clone());
    let slow = Server::new(
        "Late",
        common::LaggingBus::new(bus.clone(), Duration::from_millis(100)),
    );
    for server in [&fast, &slow] {
        server
            .register_unary(PICK_LATE, &[], |ctx: psrpc::RequestContext, _req: String| async move {
                Ok(ctx.server_id().to_owned())
            })
            .await
            .unwrap();
    }
    let client = Client::new("Late", bus).await.unwrap();
    let opts = CallOptions::new()
        .timeout(Duration::from_secs(30))
        .selection(psrpc::SelectionOptions::default().accept_first_available(true));
    let winner: String = client
        .request(PICK_LATE, &[], &"job".to_string(), opts)
        .await
        .unwrap();
    assert_eq!(winner, fast.id());
    // The slow server gets the request 100 ms late; it must not hold it for the 30 s deadline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(slow.stats().claims_lost, 1, "the late claim ended at once");
}

/// Many concurrent claimed calls to four servers all succeed: the claim exchange (with early
/// answers remembered) loses no call under load, for queue and affinity methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_calls_to_four_servers_under_load_all_succeed() {
    const Q: MethodInfo = MethodInfo::unary("LoadQ");
    const A: MethodInfo = MethodInfo::affinity("LoadA");
    let bus = LocalBus::new();
    let mut servers = Vec::new();
    for _ in 0..4 {
        let server = Server::new("Load", bus.clone());
        for method in [Q, A] {
            server
                .register_unary(method, &[], |_ctx, req: String| async move { Ok(req) })
                .await
                .unwrap();
        }
        servers.push(server);
    }
    let client = Client::new("Load", bus).await.unwrap();
    // Every server claims an affinity call: four times the messages, so fewer rounds.
    for (method, rounds) in [(Q, 100), (A, 40)] {
        let calls = (0..64).map(|task| {
            let client = client.clone();
            async move {
                let mut failures = Vec::new();
                for i in 0..rounds {
                    // The first claim wins, so the other servers' claims come late.
                    let opts = CallOptions::new()
                        .direct(false)
                        .timeout(Duration::from_secs(20))
                        .selection(psrpc::SelectionOptions::default().accept_first_available(true));
                    let req = format!("{task}/{i}");
                    match client
                        .request::<String, String>(method, &[], &req, opts)
                        .await
                    {
                        Ok(resp) => assert_eq!(resp, req),
                        Err(err) => failures.push(err),
                    }
                }
                failures
            }
        });
        let failures: Vec<_> = futures::future::join_all(calls).await.concat();
        assert!(failures.is_empty(), "{}: {failures:?}", method.name());
    }
    assert_eq!(client.stats().pending, 0);
}
