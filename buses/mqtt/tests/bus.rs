//! The MQTT bus against a real mosquitto: local fan-out and queue demultiplexing, flush,
//! limits, slow subscribers, unsubscribe, unserved channels, reconnects, credentials.

mod common;

use bytes::Bytes;
use common::{Raw, bus, bus_with, eventually, recv, server, try_recv, within};
use futures::FutureExt;
use psrpc::Channel;
use psrpc::bus::{Bus, BusError, SubscribeOptions};
use psrpc_mqtt::{MqttBus, MqttBusError, MqttBusOptions, PACKET_OVERHEAD};
use psrpc_testkit::{MosquittoOptions, MosquittoServer};

fn fanout() -> Channel {
    Channel::request("Svc", "Events", ["room1"], false)
}

fn queue() -> Channel {
    Channel::request("Svc", "Events", ["room1"], true)
}

fn opts() -> SubscribeOptions {
    SubscribeOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_local_and_remote_subscriber() {
    let server = server();
    let (a, b, publisher) = (bus(&server).await, bus(&server).await, bus(&server).await);
    let mut subs = vec![
        a.subscribe(&fanout(), opts()).await.unwrap(),
        a.subscribe(&fanout(), opts()).await.unwrap(),
        b.subscribe(&fanout(), opts()).await.unwrap(),
    ];
    // One MQTT subscription per bus, however many local subscribers.
    assert_eq!(a.stats().subscriptions, 1);
    // The connect-time probe of shared subscriptions counts as one message.
    let before = a.stats().received;
    publisher
        .publish(&fanout(), Bytes::from_static(b"hello"))
        .await
        .unwrap();
    for sub in &mut subs {
        assert_eq!(recv(sub).await, "hello");
    }
    publisher.flush().await.unwrap();
    assert_eq!(
        a.stats().received - before,
        1,
        "the broker sends one copy per connection"
    );
    assert_eq!(publisher.name(), "mqtt");
}

/// Two local queue members of one bus share the bus's one shared subscription in turn; a
/// fan-out subscriber of the same topic on the same connection gets every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_fan_out_on_one_connection() {
    let server = server();
    let (a, b, publisher) = (bus(&server).await, bus(&server).await, bus(&server).await);
    let mut fan = a.subscribe(&fanout(), opts()).await.unwrap();
    let mut local = vec![
        a.subscribe(&queue(), opts()).await.unwrap(),
        a.subscribe(&queue(), opts()).await.unwrap(),
    ];
    let mut remote = b.subscribe(&queue(), opts()).await.unwrap();
    const N: usize = 40;
    for i in 0..N {
        publisher
            .publish(&fanout(), Bytes::from(format!("m{i}")))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for i in 0..N {
        assert_eq!(recv(&mut fan).await, format!("m{i}"));
    }
    let mut got: Vec<String> = Vec::new();
    let mut per_member = Vec::new();
    eventually("every queue message", || {
        for sub in local.iter_mut().chain(std::iter::once(&mut remote)) {
            while let Some(msg) = try_recv(sub) {
                got.push(msg);
            }
        }
        let done = got.len() >= N;
        async move { done }
    })
    .await;
    for sub in &local {
        per_member.push(sub.stats().delivered());
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), N, "each queue message exactly once");
    assert!(
        try_recv(&mut fan).is_none(),
        "no duplicate on the fan-out side"
    );
    // The broker splits between the two connections; bus `a` splits its share round robin.
    let a_share = per_member[0] + per_member[1];
    assert!(a_share > 0 && remote.stats().delivered() > 0);
    assert!(per_member[0].abs_diff(per_member[1]) <= 1, "{per_member:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_means_the_broker_has_everything() {
    let server = server();
    let receiver = bus(&server).await;
    let mut sub = receiver.subscribe(&fanout(), opts()).await.unwrap();
    let sender = bus(&server).await;
    const N: usize = 500;
    for i in 0..N {
        sender
            .publish(&fanout(), Bytes::from(format!("{i}")))
            .await
            .unwrap();
    }
    sender.flush().await.unwrap();
    // Dropping the bus closes its connection at once: whatever was still queued is lost,
    // so every message arriving proves the flush waited for all of them.
    drop(sender);
    for i in 0..N {
        assert_eq!(recv(&mut sub).await, format!("{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limit_follows_the_broker_maximum_packet_size() {
    let server = MosquittoServer::start_with(MosquittoOptions {
        max_packet_size: Some(100_000),
        ..Default::default()
    })
    .unwrap();
    let a = bus(&server).await;
    let limit = 100_000 - PACKET_OVERHEAD;
    assert_eq!(a.max_payload(), limit);
    let mut sub = a.subscribe(&fanout(), opts()).await.unwrap();
    a.publish(&fanout(), Bytes::from(vec![b'x'; limit]))
        .await
        .unwrap();
    assert_eq!(
        within("the big message", sub.recv()).await.unwrap().len(),
        limit
    );
    let err = a
        .publish(&fanout(), Bytes::from(vec![b'y'; limit + 1]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BusError::PayloadTooLarge { size, limit: l } if size == limit + 1 && l == limit),
        "{err}"
    );
    // The option lowers it further; the connection is still fine.
    let small = bus_with(&server, MqttBusOptions::default().max_payload(1000)).await;
    assert_eq!(small.max_payload(), 1000);
    assert!(matches!(
        small.publish(&fanout(), Bytes::from(vec![0; 1001])).await,
        Err(BusError::PayloadTooLarge { .. })
    ));
    small
        .publish(&fanout(), Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_drops_are_counted_and_others_unaffected() {
    let server = server();
    let a = bus(&server).await;
    let mut slow = a
        .subscribe(&fanout(), SubscribeOptions::default().capacity(2))
        .await
        .unwrap();
    let mut fast = a.subscribe(&fanout(), opts()).await.unwrap();
    for i in 0..10 {
        a.publish(&fanout(), Bytes::from(format!("{i}")))
            .await
            .unwrap();
    }
    for i in 0..10 {
        assert_eq!(recv(&mut fast).await, format!("{i}"));
    }
    assert_eq!(slow.stats().delivered(), 2);
    assert_eq!(slow.stats().dropped(), 8);
    assert_eq!(recv(&mut slow).await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_channels_are_reported_and_unsubscribe_reaches_the_broker() {
    let server = server();
    let a = bus(&server).await;
    let publisher = bus(&server).await;
    // Nobody subscribes: the PUBACK says so.
    let report = publisher
        .publish_watched(&fanout(), Bytes::from_static(b"x"))
        .await
        .unwrap();
    within("a no-receivers report", report).await;

    let sub1 = a.subscribe(&fanout(), opts()).await.unwrap();
    let sub2 = a.subscribe(&queue(), opts()).await.unwrap();
    assert_eq!(a.stats().subscriptions, 2);
    let report = publisher
        .publish_watched(&fanout(), Bytes::from_static(b"x"))
        .await
        .unwrap();
    // The flush's PUBACK comes after the watched publish's: its answer is known by then.
    publisher.flush().await.unwrap();
    assert!(report.now_or_never().is_none(), "somebody subscribes");

    drop(sub1);
    let report = publisher
        .publish_watched(&fanout(), Bytes::from_static(b"x"))
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    assert!(
        report.now_or_never().is_none(),
        "the queue member still listens"
    );
    drop(sub2);
    assert_eq!(a.stats().subscriptions, 0);
    // The UNSUBSCRIBEs were queued on drop; a's flush waits for the broker to handle them.
    a.flush().await.unwrap();
    let report = publisher
        .publish_watched(&fanout(), Bytes::from_static(b"x"))
        .await
        .unwrap();
    within("a no-receivers report after unsubscribing", report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_keeps_its_bus_alive() {
    let server = server();
    let a = bus(&server).await;
    let mut sub = a.subscribe(&fanout(), opts()).await.unwrap();
    drop(a);
    let publisher = bus(&server).await;
    publisher
        .publish(&fanout(), Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_resume_after_a_broker_restart() {
    let mut server = server();
    let a = bus(&server).await;
    let mut fan = a.subscribe(&fanout(), opts()).await.unwrap();
    let mut q = a.subscribe(&queue(), opts()).await.unwrap();
    let publisher = bus(&server).await;

    server.kill();
    eventually("the bus to notice", || {
        let down = !a.is_connected() && !publisher.is_connected();
        async move { down }
    })
    .await;
    let err = publisher
        .publish(&fanout(), Bytes::from_static(b"lost"))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Connection(_)), "{err}");
    assert!(publisher.flush().await.is_err());

    server.restart().unwrap();
    eventually("both buses back", || {
        let up = a.is_connected() && publisher.is_connected();
        async move { up }
    })
    .await;
    // Resubscribed before anything else on the connection: a flush of `a` covers it.
    a.flush().await.unwrap();
    publisher
        .publish(&fanout(), Bytes::from_static(b"back"))
        .await
        .unwrap();
    assert_eq!(recv(&mut fan).await, "back");
    assert_eq!(recv(&mut q).await, "back");
    assert!(a.stats().disconnects >= 1);
    // A new subscription after the restart works too.
    let other = Channel::request("Svc", "Other", ["x"], false);
    let mut late = a.subscribe(&other, opts()).await.unwrap();
    publisher
        .publish(&other, Bytes::from_static(b"late"))
        .await
        .unwrap();
    assert_eq!(recv(&mut late).await, "late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_url() {
    let server = MosquittoServer::start_with(MosquittoOptions {
        credentials: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    })
    .unwrap();
    let a = MqttBus::connect(&server.url()).await.unwrap();
    let mut sub = a.subscribe(&fanout(), opts()).await.unwrap();
    a.publish(&fanout(), Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await, "hi");

    let wrong = format!("mqtt://alice:wrong@127.0.0.1:{}", server.port());
    assert!(matches!(
        MqttBus::connect(&wrong).await,
        Err(MqttBusError::Connect(_))
    ));
    let anonymous = format!("mqtt://127.0.0.1:{}", server.port());
    assert!(matches!(
        MqttBus::connect(&anonymous).await,
        Err(MqttBusError::Connect(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_clear() {
    let server = server();
    let port = server.port();
    drop(server);
    let err = MqttBus::connect(&format!("mqtt://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(err, MqttBusError::Connect(_)), "{err}");
    let err = MqttBus::connect("redis://127.0.0.1:1").await.unwrap_err();
    assert!(matches!(err, MqttBusError::InvalidUrl(_)), "{err}");
    #[cfg(not(feature = "tls"))]
    assert!(matches!(
        MqttBus::connect("mqtts://127.0.0.1:1").await,
        Err(MqttBusError::TlsUnavailable)
    ));
}

/// A raw 3.1.1 client (like Go psrpc) publishes; the bus's subscribers get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_an_mqtt_3_1_1_peer_arrive() {
    let server = server();
    let a = bus(&server).await;
    let mut sub = a.subscribe(&fanout(), opts()).await.unwrap();
    let raw = Raw::connect(&server).await;
    raw.client
        .publish(
            "Svc/Events/room1/REQ",
            rumqttc::QoS::AtMostOnce,
            false,
            "from go",
        )
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await, "from go");
}

/// More SUBSCRIBEs in flight than the broker's Receive Maximum (mosquitto: 20), so rumqttc
/// hands out packet IDs twice: every subscription still completes and receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_subscribes_all_go_live() {
    let server = server();
    let a = bus(&server).await;
    let channels: Vec<_> = (0..200)
        .map(|i| Channel::request("Svc", "Many", [format!("t{i}")], i % 2 == 0))
        .collect();
    let subs = within(
        "200 subscriptions",
        futures::future::join_all(channels.iter().map(|ch| a.subscribe(ch, opts()))),
    )
    .await;
    let mut subs: Vec<_> = subs.into_iter().map(Result::unwrap).collect();
    let publisher = bus(&server).await;
    for (i, ch) in channels.iter().enumerate() {
        publisher
            .publish(ch, Bytes::from(format!("{i}")))
            .await
            .unwrap();
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        assert_eq!(recv(sub).await, format!("{i}"));
    }
}
