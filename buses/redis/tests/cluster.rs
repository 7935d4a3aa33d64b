//! psrpc over a Redis Cluster (3 masters, 1 replica each): every RPC kind with clients and
//! servers attached through different nodes, then a master killed under load. One cluster
//! for the whole binary (one test), to keep CI lean.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::PATIENCE;
use common::calls::{ECHO, every_rpc_kind, serve};
use psrpc::{CallOptions, Client, ErrorCode};
use psrpc_redis::{RedisBus, RedisBusOptions};
use psrpc_testkit::RedisCluster;

/// The deadline of each call under load.
const CALL_TIMEOUT: Duration = Duration::from_millis(1000);

async fn cluster_bus(seed: &str) -> RedisBus {
    RedisBus::connect_cluster(&[seed], RedisBusOptions::default())
        .await
        .expect("connect to the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_kind_across_nodes_and_a_master_failover() {
    let mut cluster = RedisCluster::start(3, 1).expect("redis-server and redis-cli");
    let urls = cluster.urls();

    // Servers seeded through two different masters, one client through the third, another
    // through a replica: cluster pub/sub is broadcast, so all of them meet.
    let b1 = cluster_bus(&urls[0]).await;
    let b2 = cluster_bus(&urls[1]).await;
    let s1 = serve("Cluster", b1.clone()).await;
    let s2 = serve("Cluster", b2.clone()).await;
    let client_bus = cluster_bus(&urls[2]).await;
    let client = Client::new("Cluster", client_bus.clone()).await.unwrap();
    let plain_client = Client::new("Cluster", cluster_bus(&urls[4]).await)
        .await
        .unwrap();

    // The queue lock keys land on every shard over the unary calls.
    every_rpc_kind([&client, &plain_client], [&s1, &s2]).await;
    assert_eq!(client_bus.stats().lock_errors, 0);

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
