//! psrpc over a Redis Cluster (3 masters, 1 replica each): every RPC kind with clients and
//! servers attached through different nodes, then a master killed under load. One cluster
//! for the whole binary (one test), to keep CI lean.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use psrpc::stream::Stream;
use psrpc::{CallOptions, Client, ErrorCode, MethodInfo, Server};
use psrpc_redis::{RedisBus, RedisBusOptions};
use psrpc_testkit::RedisCluster;

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const ECHO_ALL: MethodInfo = MethodInfo::multi("EchoAll");
const CHAT: MethodInfo = MethodInfo::stream("Chat");
const EVENTS: MethodInfo = MethodInfo::subscription("Events");
const QUEUE_EVENTS: MethodInfo = MethodInfo::queue_subscription("QueueEvents");

/// Upper bound of every wait; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);
/// The deadline of each call under load.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

async fn cluster_bus(seed: &str) -> RedisBus {
    RedisBus::connect_cluster(&[seed], RedisBusOptions::default())
        .await
        .expect("connect to the cluster")
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn serve(bus: RedisBus) -> Server {
    let server = Server::new("Cluster", bus);
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
async fn every_rpc_kind_across_nodes_and_a_master_failover() {
    let mut cluster = RedisCluster::start(3, 1).expect("redis-server and redis-cli");
    let urls = cluster.urls();

    // Servers seeded through two different masters, one client through the third, another
    // through a replica: cluster pub/sub is broadcast, so all of them meet.
    let b1 = cluster_bus(&urls[0]).await;
    let b2 = cluster_bus(&urls[1]).await;
    let s1 = serve(b1.clone()).await;
    let s2 = serve(b2.clone()).await;
    let client_bus = cluster_bus(&urls[2]).await;
    let client = Client::new("Cluster", client_bus.clone()).await.unwrap();
    let plain_client = Client::new("Cluster", cluster_bus(&urls[4]).await)
        .await
        .unwrap();

    // Unary, direct and claimed: the queue lock keys land on every shard over 20 calls.
    for c in [&client, &plain_client] {
        for direct in [true, false] {
            for i in 0..10 {
                let reply: String = within(
                    "unary",
                    c.request(
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
    let mut sub_b = plain_client
        .subscribe::<String>(EVENTS, &["r"])
        .await
        .unwrap();
    s1.publish(EVENTS, &["r"], &"evt".to_string())
        .await
        .unwrap();
    for sub in [&mut sub_a, &mut sub_b] {
        assert_eq!(within("event", sub.recv()).await.as_deref(), Some("evt"));
    }
    let other = Client::new("Cluster", cluster_bus(&urls[1]).await)
        .await
        .unwrap();
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

    // A master dies under load: calls fail by their deadline with a clear code, and succeed
    // again once its replica has taken over.
    let victim = 0;
    let replica = cluster.replicas_of(victim).unwrap()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let last_failure = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut workers = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        let (stop, failed, last_failure) = (stop.clone(), failed.clone(), last_failure.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let started = Instant::now();
                let result: psrpc::Result<String> = client
                    .request(
                        ECHO,
                        &[],
                        &format!("w{w}-{i}"),
                        CallOptions::new().timeout(CALL_TIMEOUT),
                    )
                    .await;
                let took = started.elapsed();
                assert!(
                    took < CALL_TIMEOUT + Duration::from_millis(500),
                    "a call outlived its deadline: {took:?}"
                );
                if let Err(err) = result {
                    assert!(
                        matches!(
                            err.code(),
                            ErrorCode::DeadlineExceeded
                                | ErrorCode::Unavailable
                                | ErrorCode::Internal
                        ),
                        "unexpected error during failover: {err:?}"
                    );
                    failed.fetch_add(1, Ordering::Relaxed);
                    *last_failure.lock().unwrap() = Some(Instant::now());
                }
            }
            i
        }));
    }
    let killed_at = Instant::now();
    cluster.nodes()[victim].kill();
    // The replica reports itself master once promoted (automatic, node timeout 1 s).
    let promoted = loop {
        let role = cluster.command(replica, &["ROLE"]).unwrap();
        if role.starts_with("master") {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < PATIENCE,
            "replica {replica} not promoted: {role}\n{}",
            cluster.command(replica, &["CLUSTER", "NODES"]).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a probe
    };
    // Service resumed: 20 calls in a row succeed, within PATIENCE.
    let mut ok = 0;
    while ok < 20 {
        match client
            .request::<String, String>(ECHO, &[], &"after".to_string(), CallOptions::new())
            .await
        {
            Ok(_) => ok += 1,
            Err(err) => {
                ok = 0;
                assert!(
                    killed_at.elapsed() < PATIENCE,
                    "service did not resume: {err:?}, client bus {:?} b1 {:?} b2 {:?}",
                    client_bus.stats(),
                    b1.stats(),
                    b2.stats()
                );
            }
        }
    }
    let resumed = killed_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut calls = 0;
    for worker in workers {
        calls += worker.await.expect("worker panicked");
    }
    let last_failure = last_failure
        .lock()
        .unwrap()
        .map(|t| t.saturating_duration_since(killed_at));
    println!(
        "redis cluster failover: replica promoted after {promoted:?}, service resumed after \
         {resumed:?}, {} of {calls} calls failed, last failure at {last_failure:?}",
        failed.load(Ordering::Relaxed)
    );
    s1.shutdown().await;
    s2.shutdown().await;
}
