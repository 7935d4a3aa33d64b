//! psrpc over a Redis Cluster with sharded pub/sub (`RedisBusOptions::sharded_pubsub`):
//! every RPC kind with clients and servers attached through different masters, channels
//! spread over the shards rather than broadcast, exact receiver counts (a call nobody serves
//! fails at once), and no crossing with classic pub/sub. One small cluster (3 masters, no
//! replicas) for the whole binary; failover is covered by tests/cluster.rs.

use std::time::Duration;

use psrpc::bus::Bus;
use psrpc::stream::Stream;
use psrpc::{CallOptions, Channel, Client, ErrorCode, MethodInfo, Server};
use psrpc_redis::{RedisBus, RedisBusOptions};
use psrpc_testkit::RedisCluster;

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const ECHO_ALL: MethodInfo = MethodInfo::multi("EchoAll");
const CHAT: MethodInfo = MethodInfo::stream("Chat");
const EVENTS: MethodInfo = MethodInfo::subscription("Events");
const QUEUE_EVENTS: MethodInfo = MethodInfo::queue_subscription("QueueEvents");

/// Upper bound of every wait; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);

async fn bus(seed: &str, sharded: bool) -> RedisBus {
    let options = RedisBusOptions::default().sharded_pubsub(sharded);
    RedisBus::connect_cluster(&[seed], options)
        .await
        .expect("connect to the cluster")
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn serve(bus: RedisBus) -> Server {
    let server = Server::new("Sharded", bus);
    let id = server.id().to_owned();
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move {
            Ok(format!("echo {req}"))
        })
        .await
        .unwrap();
    server
        .register_unary(ECHO_ALL, &[], move |_ctx, req: String| {
            let id = id.clone();
            async move { Ok(format!("{id} {req}")) }
        })
        .await
        .unwrap();
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, mut stream: Stream<String, String>| async move {
                while let Some(msg) = stream.recv().await {
                    stream.send(&format!("echo {}", msg?)).await?;
                }
                Ok(())
            },
        )
        .await
        .unwrap();
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_kind_over_sharded_pubsub() {
    let cluster = RedisCluster::start(3, 0).expect("redis-server and redis-cli");
    let urls = cluster.urls();

    let s1 = serve(bus(&urls[0], true).await).await;
    let s2 = serve(bus(&urls[1], true).await).await;
    let client_bus = bus(&urls[2], true).await;
    let client = Client::new("Sharded", client_bus.clone()).await.unwrap();
    let other_bus = bus(&urls[1], true).await;
    let other = Client::new("Sharded", other_bus.clone()).await.unwrap();

    // The channels are sharded, not broadcast: they live on more than one master.
    let mut holding = 0;
    for node in 0..3 {
        let channels = cluster.command(node, &["PUBSUB", "SHARDCHANNELS"]).unwrap();
        assert!(
            cluster
                .command(node, &["PUBSUB", "CHANNELS"])
                .unwrap()
                .trim()
                .is_empty(),
            "a classic channel on node {node}"
        );
        if !channels.trim().is_empty() {
            holding += 1;
        }
    }
    assert!(holding >= 2, "all channels on one shard");

    // Unary, direct and claimed.
    for direct in [true, false] {
        for i in 0..10 {
            let reply: String = within(
                "unary",
                client.request(
                    ECHO,
                    &[],
                    &format!("{i}"),
                    CallOptions::new().direct(direct),
                ),
            )
            .await
            .unwrap();
            assert_eq!(reply, format!("echo {i}"));
        }
    }
    assert_eq!(client_bus.stats().lock_errors, 0);

    // Multi: both servers answer.
    let results = within(
        "multi",
        client.request_multi::<String, String>(
            ECHO_ALL,
            &[],
            &"m".to_string(),
            CallOptions::new().timeout(Duration::from_millis(800)),
        ),
    )
    .await
    .unwrap()
    .collect_all()
    .await;
    let mut got: Vec<String> = results.into_iter().map(|r| r.result.unwrap()).collect();
    got.sort();
    let mut want = vec![format!("{} m", s1.id()), format!("{} m", s2.id())];
    want.sort();
    assert_eq!(got, want);

    // Stream.
    let mut stream = within(
        "stream open",
        client.open_stream::<String, String>(CHAT, &[], CallOptions::new()),
    )
    .await
    .unwrap();
    for word in ["one", "two"] {
        stream.send(&word.to_string()).await.unwrap();
        let reply = within("stream echo", stream.recv()).await.unwrap().unwrap();
        assert_eq!(reply, format!("echo {word}"));
    }
    within("stream close", stream.close(None)).await.unwrap();

    // Subscriptions: fan-out reaches both clients, the queue exactly one of them.
    let mut sub_a = client.subscribe::<String>(EVENTS, &["r"]).await.unwrap();
    let mut sub_b = other.subscribe::<String>(EVENTS, &["r"]).await.unwrap();
    s1.publish(EVENTS, &["r"], &"evt".to_string())
        .await
        .unwrap();
    for sub in [&mut sub_a, &mut sub_b] {
        assert_eq!(within("event", sub.recv()).await.as_deref(), Some("evt"));
    }
    let mut q_a = client.subscribe::<String>(QUEUE_EVENTS, &[]).await.unwrap();
    let mut q_b = other.subscribe::<String>(QUEUE_EVENTS, &[]).await.unwrap();
    for i in 0..6 {
        s2.publish(QUEUE_EVENTS, &[], &format!("q{i}"))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 6 {
        let msg = within("queue event", async {
            tokio::select! {
                m = q_a.recv() => m,
                m = q_b.recv() => m,
            }
        })
        .await
        .expect("subscription open");
        got.push(msg);
    }
    got.sort();
    assert_eq!(got, ["q0", "q1", "q2", "q3", "q4", "q5"]);

    // The SPUBLISH count covers the whole cluster: a topic nobody serves fails at once
    // ("no response"), not at the deadline as with classic cluster pub/sub.
    let err = within(
        "a call nobody serves",
        client.request::<String, String>(
            ECHO,
            &["nowhere"],
            &"t".to_string(),
            CallOptions::new().timeout(PATIENCE * 2),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err:?}");

    // Sharded and classic channels never meet: a classic subscriber (as Go peers are) is not
    // a receiver of a sharded publish, and the other way round.
    let classic = bus(&urls[0], false).await;
    let channel = Channel::request("Sharded", "Probe", ["x"], false);
    let _classic_sub = classic
        .subscribe(&channel, Default::default())
        .await
        .unwrap();
    let count = client_bus
        .publish_counted(&channel, bytes::Bytes::from_static(b"p"))
        .await
        .unwrap();
    assert_eq!(count, 0, "a sharded publish reached a classic subscriber");
    let _sharded_sub = other_bus
        .subscribe(&channel, Default::default())
        .await
        .unwrap();
    let count = client_bus
        .publish_counted(&channel, bytes::Bytes::from_static(b"p"))
        .await
        .unwrap();
    assert_eq!(count, 1, "the sharded subscriber");
}
