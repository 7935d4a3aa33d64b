//! psrpc over a Redis Cluster with sharded pub/sub (`RedisBusOptions::sharded_pubsub`):
//! every RPC kind with clients and servers attached through different masters, channels
//! spread over the shards rather than broadcast, exact receiver counts (a call nobody serves
//! fails at once), and no crossing with classic pub/sub. One small cluster (3 masters, no
//! replicas) for the whole binary; failover is covered by tests/cluster.rs.

mod common;

use common::calls::{ECHO, every_rpc_kind, serve};
use common::{PATIENCE, within};
use psrpc::bus::Bus;
use psrpc::{CallOptions, Channel, Client, ErrorCode};
use psrpc_redis::{RedisBus, RedisBusOptions};
use psrpc_testkit::RedisCluster;

async fn bus(seed: &str, sharded: bool) -> RedisBus {
    let options = RedisBusOptions::default().sharded_pubsub(sharded);
    RedisBus::connect_cluster(&[seed], options)
        .await
        .expect("connect to the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_kind_over_sharded_pubsub() {
    let cluster = RedisCluster::start(3, 0).expect("redis-server and redis-cli");
    let urls = cluster.urls();

    let s1 = serve("Sharded", bus(&urls[0], true).await).await;
    let s2 = serve("Sharded", bus(&urls[1], true).await).await;
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

    every_rpc_kind([&client, &other], [&s1, &s2]).await;
    assert_eq!(client_bus.stats().lock_errors, 0);

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
