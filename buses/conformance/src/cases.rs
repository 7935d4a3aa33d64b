//! The conformance cases. Each takes a [`Harness`] and panics on a violation.
//!
//! Servers, clients and subscribers each get their own bus instance (their own broker
//! connection), as separate processes would.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use psrpc::bus::{SubscribeOptions, Subscription};
use psrpc::{
    CallOptions, Channel, Client, Error, ErrorCode, MethodInfo, SelectionOptions, Server, wire,
};

use crate::{Harness, within};

const SVC: &str = "Conformance";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const PICK: MethodInfo = MethodInfo::affinity("Pick");
const GATHER: MethodInfo = MethodInfo::multi("Gather");
const REGION: MethodInfo = MethodInfo::unary("RegionEcho");
const EVENTS: MethodInfo = MethodInfo::subscription("Events");
const JOBS: MethodInfo = MethodInfo::queue_subscription("Jobs");
const TEST_TYPE_URL: &str = "type.googleapis.com/conformance.Payload";

fn envelope(body: impl AsRef<[u8]>) -> Bytes {
    wire::encode_envelope_raw(TEST_TYPE_URL, body.as_ref())
}

fn body(payload: Bytes) -> Bytes {
    wire::decode_envelope(payload).expect("an envelope").value
}

async fn next(sub: &mut Subscription, what: &str) -> Bytes {
    body(within(what, sub.recv()).await.expect("subscription open"))
}

async fn server(h: &Harness) -> Server {
    Server::new(SVC, h.bus().await)
}

async fn client(h: &Harness) -> Client {
    Client::new(SVC, h.bus().await).await.expect("client")
}

async fn echo_server(h: &Harness) -> Server {
    let server = server(h).await;
    server
        .register_unary(ECHO, &[], |ctx, req: String| async move {
            Ok(format!("{}:{req}", ctx.server_id()))
        })
        .await
        .expect("register");
    server
}

/// Every fan-out subscriber, each on its own connection, gets every message.
pub async fn fan_out_reaches_every_subscriber(h: &Harness) {
    let channel = Channel::request(SVC, "Raw", ["fan"], false);
    let mut subs = Vec::new();
    for _ in 0..3 {
        let bus = h.bus().await;
        subs.push(
            bus.subscribe(&channel, SubscribeOptions::default())
                .await
                .unwrap(),
        );
    }
    let publisher = h.bus().await;
    for i in 0..5 {
        publisher
            .publish(&channel, envelope(format!("m{i}")))
            .await
            .unwrap();
    }
    for sub in &mut subs {
        for i in 0..5 {
            assert_eq!(next(sub, "fan-out message").await, format!("m{i}"));
        }
    }
}

/// Each queue message reaches exactly one of the members, across connections.
pub async fn queue_delivers_each_message_to_exactly_one_member(h: &Harness) {
    let channel = Channel::request(SVC, "Raw", ["queue"], true);
    let mut subs = Vec::new();
    for _ in 0..3 {
        let bus = h.bus().await;
        subs.push(
            bus.subscribe(&channel, SubscribeOptions::default())
                .await
                .unwrap(),
        );
    }
    let publisher = h.bus().await;
    const N: usize = 30;
    for i in 0..N {
        publisher
            .publish(&channel, envelope(format!("job{i}")))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let collect = async {
        let mut merged = futures::stream::select_all(subs.iter_mut());
        while got.len() < N {
            use futures::StreamExt;
            match merged.next().await {
                Some(payload) => got.push(body(payload)),
                None => break,
            }
        }
    };
    within("all queue messages", collect).await;
    let distinct: HashSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), N, "received {got:?}");
    assert_eq!(distinct.len(), N, "a message was delivered twice: {got:?}");
    for sub in &mut subs {
        assert!(
            sub.recv().now_or_never().is_none(),
            "no extra copies buffered"
        );
    }
}

/// A message published right after subscribe returns is delivered, every time.
pub async fn subscribe_then_publish_never_loses_the_first_message(h: &Harness) {
    let subscriber = h.bus().await;
    let publisher = h.bus().await;
    for i in 0..20 {
        let topic = format!("t{i}");
        let queue = i % 2 == 1;
        let channel = Channel::request(SVC, "Raw", [topic.as_str()], queue);
        let mut sub = subscriber
            .subscribe(&channel, SubscribeOptions::default())
            .await
            .unwrap();
        publisher.publish(&channel, envelope(&topic)).await.unwrap();
        assert_eq!(next(&mut sub, "the first message").await, topic);
    }
}

/// A closed subscription stops receiving; others on the same connection keep receiving.
pub async fn closed_subscription_stops_receiving(h: &Harness) {
    let channel = Channel::request(SVC, "Raw", ["close"], false);
    let bus = h.bus().await;
    let mut a = bus
        .subscribe(&channel, SubscribeOptions::default())
        .await
        .unwrap();
    let mut b = bus
        .subscribe(&channel, SubscribeOptions::default())
        .await
        .unwrap();
    let publisher = h.bus().await;
    publisher.publish(&channel, envelope("one")).await.unwrap();
    assert_eq!(next(&mut a, "first to a").await, "one");
    assert_eq!(next(&mut b, "first to b").await, "one");
    a.close();
    publisher.publish(&channel, envelope("two")).await.unwrap();
    assert_eq!(next(&mut b, "second to b").await, "two");
    assert_eq!(within("a closed", a.recv()).await, None);
    drop(b);
    // Publishing with nobody subscribed is not an error.
    publisher
        .publish(&channel, envelope("three"))
        .await
        .unwrap();
}

/// Unary calls work on the direct path and on Go's claim path.
pub async fn unary_call_direct_and_claimed(h: &Harness) {
    let server = echo_server(h).await;
    let client = client(h).await;
    for direct in [true, false] {
        let reply: String = within(
            "unary reply",
            client.request(
                ECHO,
                &[],
                &"hi".to_string(),
                CallOptions::new().direct(direct),
            ),
        )
        .await
        .unwrap();
        assert_eq!(reply, format!("{}:hi", server.id()), "direct={direct}");
    }
}

/// With several servers on separate connections, each call is handled exactly once.
pub async fn queue_calls_spread_over_servers_on_separate_connections(h: &Harness) {
    let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let mut servers = Vec::new();
    for _ in 0..3 {
        let server = server(h).await;
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
    let client = client(h).await;
    let calls = (0..30).map(|i| {
        let client = client.clone();
        async move {
            let opts = CallOptions::new().direct(i % 2 == 0);
            let reply: String = client
                .request(ECHO, &[], &format!("{i}"), opts)
                .await
                .unwrap();
            assert_eq!(reply, format!("{i}"));
        }
    });
    within("30 calls", futures::future::join_all(calls)).await;
    let handled: usize = counts.lock().unwrap().values().sum();
    assert_eq!(handled, 30, "{:?}", counts.lock().unwrap());
    let stats: u64 = servers.iter().map(|s| s.stats().handled).sum();
    assert_eq!(stats, 30);
}

/// An affinity call picks the server with the highest affinity.
pub async fn affinity_call_picks_the_best_server(h: &Harness) {
    let mut servers = Vec::new();
    for affinity in [0.2_f32, 0.8, 0.5] {
        let server = server(h).await;
        server
            .register_unary_with_affinity(
                PICK,
                &[],
                |ctx, _req: String| async move { Ok(ctx.server_id().to_owned()) },
                Arc::new(move |_: &String| affinity),
            )
            .await
            .unwrap();
        servers.push(server);
    }
    let client = client(h).await;
    let chosen: String = within(
        "affinity reply",
        client.request(PICK, &[], &"job".to_string(), CallOptions::new()),
    )
    .await
    .unwrap();
    assert_eq!(chosen, servers[1].id());
}

/// A multi call yields one result per server, errors included.
pub async fn multi_call_collects_every_server(h: &Harness) {
    let mut servers = Vec::new();
    for i in 0..3 {
        let server = server(h).await;
        server
            .register_unary(GATHER, &[], move |ctx, _req: String| async move {
                if i == 2 {
                    return Err(Error::new(ErrorCode::Unavailable, "busy"));
                }
                Ok(ctx.server_id().to_owned())
            })
            .await
            .unwrap();
        servers.push(server);
    }
    let client = client(h).await;
    let opts = CallOptions::new().timeout(Duration::from_millis(1500));
    let results = within(
        "multi results",
        client.request_multi::<_, String>(GATHER, &[], &"q".to_string(), opts),
    )
    .await
    .unwrap()
    .collect_all()
    .await;
    assert_eq!(results.len(), 3, "{results:?}");
    let mut ids: Vec<_> = servers.iter().map(|s| s.id().to_owned()).collect();
    let mut answered: Vec<_> = results.iter().map(|r| r.server_id.clone()).collect();
    ids.sort();
    answered.sort();
    assert_eq!(answered, ids);
    for r in &results {
        if r.server_id == servers[2].id() {
            assert_eq!(r.result, Err(Error::new(ErrorCode::Unavailable, "busy")));
        } else {
            assert_eq!(r.result.as_deref(), Ok(r.server_id.as_str()));
        }
    }
}

/// Topic calls reach only the servers registered on that topic, hostile topics included.
pub async fn topic_calls_reach_only_their_topic(h: &Harness) {
    let topics = ["eu-west.1/🚀", "us|east|RES", "a.b.>"];
    let mut servers = Vec::new();
    for topic in topics {
        let server = server(h).await;
        server
            .register_unary(REGION, &[topic], |ctx, _req: String| async move {
                Ok(ctx.topics().join(","))
            })
            .await
            .unwrap();
        servers.push(server);
    }
    let client = client(h).await;
    for topic in topics {
        for direct in [true, false] {
            let reply: String = within(
                "topic reply",
                client.request(
                    REGION,
                    &[topic],
                    &String::new(),
                    CallOptions::new().direct(direct),
                ),
            )
            .await
            .unwrap();
            assert_eq!(reply, topic);
        }
    }
    assert!(servers[0].deregister(REGION, &[topics[0]]));
    let opts = CallOptions::new()
        .direct(false)
        .selection(SelectionOptions::default().affinity_timeout(Duration::from_millis(300)));
    let err = within(
        "unavailable",
        client.request::<_, String>(REGION, &[topics[0]], &String::new(), opts),
    )
    .await
    .unwrap_err();
    assert_eq!(err, Error::no_response());
}

/// Server publishes reach fan-out, queue and topic subscribers on other connections.
pub async fn subscriptions_fan_out_queue_and_topics(h: &Harness) {
    let server = server(h).await;
    let (c1, c2) = (client(h).await, client(h).await);
    let mut f1 = c1.subscribe::<String>(EVENTS, &[]).await.unwrap();
    let mut f2 = c2.subscribe::<String>(EVENTS, &[]).await.unwrap();
    let mut topic = c2.subscribe::<String>(EVENTS, &["eu"]).await.unwrap();
    let mut q1 = c1.subscribe::<String>(JOBS, &[]).await.unwrap();
    let mut q2 = c2.subscribe::<String>(JOBS, &[]).await.unwrap();

    server
        .publish(EVENTS, &[], &"all".to_string())
        .await
        .unwrap();
    server
        .publish(EVENTS, &["eu"], &"eu".to_string())
        .await
        .unwrap();
    assert_eq!(within("fan-out 1", f1.recv()).await.unwrap(), "all");
    assert_eq!(within("fan-out 2", f2.recv()).await.unwrap(), "all");
    assert_eq!(within("topic", topic.recv()).await.unwrap(), "eu");

    const N: usize = 20;
    for i in 0..N {
        server.publish(JOBS, &[], &format!("job{i}")).await.unwrap();
    }
    let mut got = Vec::new();
    within("queued jobs", async {
        while got.len() < N {
            tokio::select! {
                Some(m) = q1.recv() => got.push(m),
                Some(m) = q2.recv() => got.push(m),
            }
        }
    })
    .await;
    let distinct: HashSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), N, "each job exactly once: {got:?}");
    assert!(
        f1.recv().now_or_never().is_none(),
        "fan-out saw no queue traffic"
    );
}

/// Error codes, messages and details reach the caller intact.
pub async fn errors_with_details_cross_the_bus(h: &Harness) {
    let detail = prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
        value: b"\n\x0bdetail:boom".to_vec(),
    };
    let server = server(h).await;
    server
        .register_unary(ECHO, &[], move |_ctx, req: String| async move {
            Err::<String, _>(
                Error::new(ErrorCode::NotFound, format!("no such thing: {req}"))
                    .with_detail(format!("detail:{req}")),
            )
        })
        .await
        .unwrap();
    let client = client(h).await;
    for direct in [true, false] {
        let err = within(
            "error reply",
            client.request::<_, String>(
                ECHO,
                &[],
                &"boom".to_string(),
                CallOptions::new().direct(direct),
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert_eq!(err.message(), "no such thing: boom");
        // Packed as Go's anypb.New packs a StringValue.
        assert_eq!(err.details(), std::slice::from_ref(&detail));
        assert_eq!(err.detail::<String>(), Some(Ok("detail:boom".into())));
    }
}

/// A handler slower than the caller's timeout gives `deadline_exceeded`; a method nobody serves
/// gives `unavailable`.
pub async fn timeouts_and_unserved_methods(h: &Harness) {
    let server = server(h).await;
    server
        .register_unary(ECHO, &[], |_ctx, _req: String| async move {
            futures::future::pending::<psrpc::Result<String>>().await
        })
        .await
        .unwrap();
    let client = client(h).await;
    let opts = CallOptions::new().timeout(Duration::from_millis(300));
    let err = within(
        "timeout",
        client.request::<_, String>(ECHO, &[], &String::new(), opts),
    )
    .await
    .unwrap_err();
    assert_eq!(err, Error::timed_out());

    const NOBODY: MethodInfo = MethodInfo::unary("Nobody");
    let opts = CallOptions::new()
        .direct(false)
        .selection(SelectionOptions::default().affinity_timeout(Duration::from_millis(300)));
    let err = within(
        "no server",
        client.request::<_, String>(NOBODY, &[], &String::new(), opts),
    )
    .await
    .unwrap_err();
    assert_eq!(err, Error::no_response());
}

/// Calls to a method nobody serves fail at once with `unavailable`, not at their timeout.
///
/// The errors tell the paths apart without timing: a direct call that is not told "nobody"
/// would end with `deadline_exceeded` at its 60 s timeout, long after the harness gives up.
pub async fn unserved_methods_fail_fast(h: &Harness) {
    const NOBODY: MethodInfo = MethodInfo::unary("Nobody");
    const NOBODY_MULTI: MethodInfo = MethodInfo::multi("NobodyMulti");
    const NOBODY_STREAM: MethodInfo = MethodInfo::stream("NobodyStream");
    let client = client(h).await;
    let patient = || CallOptions::new().timeout(Duration::from_secs(60));
    for direct in [true, false] {
        let opts = patient()
            .direct(direct)
            .selection(SelectionOptions::default().affinity_timeout(Duration::from_secs(60)));
        let err = within(
            "a fast failure",
            client.request::<_, String>(NOBODY, &[], &String::new(), opts),
        )
        .await
        .unwrap_err();
        assert_eq!(err, Error::no_response(), "direct={direct}");
    }
    let results = within("an empty multi call", async {
        client
            .request_multi::<_, String>(NOBODY_MULTI, &[], &String::new(), patient())
            .await
            .unwrap()
            .collect_all()
            .await
    })
    .await;
    assert!(results.is_empty());
    let err = within(
        "a failed stream open",
        client.open_stream::<String, String>(NOBODY_STREAM, &[], patient()),
    )
    .await
    .unwrap_err();
    assert_eq!(err, Error::no_response());
}

/// Metadata and the caller's identity reach the handler.
pub async fn metadata_reaches_the_handler(h: &Harness) {
    let server = server(h).await;
    server
        .register_unary(ECHO, &[], |ctx, _req: String| async move {
            let md = ctx.metadata();
            Ok(format!(
                "{}|{}|{}",
                md["traceparent"],
                md["x-user"],
                ctx.client_id()
            ))
        })
        .await
        .unwrap();
    let client = client(h).await;
    let opts = CallOptions::new()
        .metadata(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .metadata("x-user", "ålice");
    let reply: String = within("reply", client.request(ECHO, &[], &String::new(), opts))
        .await
        .unwrap();
    assert_eq!(
        reply,
        format!(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01|ålice|{}",
            client.id()
        )
    );
}

/// Payloads just under the bus limit work; over it the caller gets a clear error.
pub async fn large_payloads_and_the_broker_limit(h: &Harness) {
    let server = echo_server(h).await;
    let client = client(h).await;
    let limit = client.bus().max_payload();
    assert!(
        limit <= 8 << 20,
        "configure the harness with a limit of at most 8 MiB, not {limit}"
    );
    // Room for the envelope and the IDs around the user payload.
    let big = "x".repeat(limit - 512);
    let reply: String = within(
        "large reply",
        client.request(ECHO, &[], &big, CallOptions::new()),
    )
    .await
    .unwrap();
    assert_eq!(reply.len(), big.len() + server.id().len() + 1);

    let too_big = "y".repeat(limit + 1);
    let err = client
        .request::<_, String>(ECHO, &[], &too_big, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(
        err.message().contains(&format!("limit of {limit} bytes")),
        "{err}"
    );
    let err = server.publish(EVENTS, &[], &too_big).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

/// Issue 10.3: what a server published before its shutdown reaches subscribers even when the
/// process exits right after (its runtime dropped with everything in it).
pub async fn published_events_survive_an_exit_after_shutdown(h: &Harness) {
    const N: usize = 500;
    let subscriber = client(h).await;
    let mut events = subscriber.subscribe::<String>(EVENTS, &[]).await.unwrap();
    // The "process": a runtime of its own on a thread of its own, dropped at the end.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let server = Server::new(SVC, h.bus().await);
                    for i in 0..N {
                        server
                            .publish(EVENTS, &[], &format!("event {i}"))
                            .await
                            .unwrap();
                    }
                    server.shutdown().await;
                });
                drop(runtime);
            })
            .join()
            .expect("the publishing process ran");
    });
    for i in 0..N {
        let got = within("every event published before the exit", events.recv())
            .await
            .expect("subscription open");
        assert_eq!(got, format!("event {i}"));
    }
}

/// Two namespaces (and Go's plain names) on one broker never see each other: calls, claims,
/// multi calls, and fan-out and queue messages (identical payloads included) stay in their own
/// namespace.
pub async fn namespaces_do_not_see_each_other(h: &Harness) {
    use psrpc::bus::Namespaced;

    async fn in_ns(h: &Harness, ns: Option<&str>) -> Arc<dyn psrpc::Bus> {
        let bus = h.bus().await;
        match ns {
            Some(ns) => Arc::new(Namespaced::new(bus, ns).expect("namespace")),
            None => bus,
        }
    }
    // The best affinity is in the plain namespace: a leak of claims would pick it.
    let spaces = [
        (Some("tenant_a"), 0.1_f32),
        (Some("tenant_b"), 0.5),
        (None, 0.9),
    ];
    let mut servers = Vec::new();
    for (ns, affinity) in spaces {
        let label = ns.unwrap_or("plain").to_owned();
        let server = Server::new(SVC, in_ns(h, ns).await);
        let l = label.clone();
        server
            .register_unary(ECHO, &[], move |_ctx, _req: String| {
                let l = l.clone();
                async move { Ok(l) }
            })
            .await
            .unwrap();
        let l = label.clone();
        server
            .register_unary(GATHER, &[], move |_ctx, _req: String| {
                let l = l.clone();
                async move { Ok(l) }
            })
            .await
            .unwrap();
        let l = label.clone();
        server
            .register_unary_with_affinity(
                PICK,
                &[],
                move |_ctx, _req: String| {
                    let l = l.clone();
                    async move { Ok(l) }
                },
                Arc::new(move |_: &String| affinity),
            )
            .await
            .unwrap();
        servers.push(server);
    }
    for (ns, _) in spaces {
        let label = ns.unwrap_or("plain");
        let client = Client::new(SVC, in_ns(h, ns).await).await.unwrap();
        for _ in 0..4 {
            let reply: String = within(
                "namespaced call",
                client.request(ECHO, &[], &"x".to_string(), CallOptions::new()),
            )
            .await
            .unwrap();
            assert_eq!(reply, label);
        }
        let picked: String = within(
            "namespaced affinity call",
            client.request(PICK, &[], &"x".to_string(), CallOptions::new()),
        )
        .await
        .unwrap();
        assert_eq!(picked, label, "claims crossed namespaces");
        let results = within(
            "namespaced multi call",
            client.request_multi::<_, String>(
                GATHER,
                &[],
                &"x".to_string(),
                CallOptions::new().timeout(Duration::from_millis(800)),
            ),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
        let answers: Vec<_> = results.into_iter().map(|r| r.result.unwrap()).collect();
        assert_eq!(answers, [label.to_owned()]);
    }

    // Raw messages: the same payload in every namespace, fan-out and queue.
    for queue in [false, true] {
        let channel = Channel::request(SVC, "Raw", ["ns"], queue);
        let mut subs = Vec::new();
        for (ns, _) in spaces {
            let bus = in_ns(h, ns).await;
            let sub = bus
                .subscribe(&channel, SubscribeOptions::default())
                .await
                .unwrap();
            subs.push((bus, sub));
        }
        for (bus, _) in &subs {
            bus.publish(&channel, envelope("same")).await.unwrap();
        }
        for (bus, _) in &subs {
            bus.publish(&channel, envelope("end")).await.unwrap();
        }
        for (_, sub) in &mut subs {
            // Exactly one copy of each, its own namespace's (Redis may deliver queue messages
            // out of order: each waits for its own lock).
            let mut got = vec![
                next(sub, "namespaced message").await,
                next(sub, "namespaced message").await,
            ];
            got.sort();
            assert_eq!(got, ["end", "same"], "queue: {queue}");
        }
    }
}
