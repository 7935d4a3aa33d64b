//! The Redis bus against a real redis-server: fan-out, queue lock, subscribe/unsubscribe,
//! limits, slow subscribers, reconnects, passwords.

mod common;

use bytes::Bytes;
use common::{bus, eventually, numsub, raw, raw_publish, recv, server, try_recv};
use psrpc::Channel;
use psrpc::bus::{Bus, BusError, SubscribeOptions, Subscription};
use psrpc_redis::{RedisBus, RedisBusError, RedisBusOptions, queue_lock_key};
use psrpc_testkit::{RedisOptions, RedisServer};

fn fanout() -> Channel {
    Channel::request("Svc", "Events", ["room1"], false)
}

fn queue() -> Channel {
    Channel::request("Svc", "Jobs", ["room1"], true)
}

fn opts() -> SubscribeOptions {
    SubscribeOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscriber_on_every_bus() {
    let server = server();
    let (a, b, publisher) = (bus(&server).await, bus(&server).await, bus(&server).await);
    let mut subs = vec![
        a.subscribe(&fanout(), opts()).await.unwrap(),
        a.subscribe(&fanout(), opts()).await.unwrap(),
        b.subscribe(&fanout(), opts()).await.unwrap(),
    ];
    assert_eq!(fanout().pipe_name(), "Svc|Events|room1|REQ");
    let receivers = publisher
        .publish_counted(&fanout(), Bytes::from_static(b"hello"))
        .await
        .unwrap();
    // One Redis subscription per bus, however many local subscribers.
    assert_eq!(receivers, 2);
    for sub in &mut subs {
        assert_eq!(recv(sub).await, "hello");
    }
    assert_eq!(publisher.name(), "redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delivers_each_message_once_across_buses() {
    let server = server();
    let buses = [bus(&server).await, bus(&server).await, bus(&server).await];
    let mut subs = vec![
        buses[0].subscribe(&queue(), opts()).await.unwrap(),
        buses[0].subscribe(&queue(), opts()).await.unwrap(),
        buses[1].subscribe(&queue(), opts()).await.unwrap(),
        buses[2].subscribe(&queue(), opts()).await.unwrap(),
    ];
    let publisher = bus(&server).await;
    const N: usize = 30;
    for i in 0..N {
        let receivers = publisher
            .publish_counted(&queue(), Bytes::from(format!("job-{i}")))
            .await
            .unwrap();
        assert_eq!(receivers, 3, "every queue member receives every message");
    }
    // Every bus took its lock decision on every message ...
    eventually("all lock decisions", || async {
        let (won, lost) = buses.iter().fold((0, 0), |(w, l), b| {
            let s = b.stats();
            (w + s.locks_won, l + s.locks_lost)
        });
        won + lost == 3 * N as u64
    })
    .await;
    let won: u64 = buses.iter().map(|b| b.stats().locks_won).sum();
    assert_eq!(won, N as u64, "exactly one winner per message");
    // ... and each message sits in exactly one subscriber's buffer.
    let mut got: Vec<String> = Vec::new();
    for sub in &mut subs {
        while let Some(msg) = try_recv(sub) {
            got.push(String::from_utf8(msg.to_vec()).unwrap());
        }
    }
    got.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("job-{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_lock_key_matches_go_and_swallows_repeats_within_5s() {
    let server = server();
    let (a, b) = (bus(&server).await, bus(&server).await);
    let mut sa = a.subscribe(&queue(), opts()).await.unwrap();
    let mut sb = b.subscribe(&queue(), opts()).await.unwrap();
    // A queue subscription message exactly as Go encodes it (StringValue "qevent").
    let payload = Bytes::from_static(
        b"\n/type.googleapis.com/google.protobuf.StringValue\x12\x08\n\x06qevent",
    );
    let key = queue_lock_key(&payload);
    assert_eq!(key.len(), 44, "standard base64 of 32 bytes, padded");
    assert!(key.ends_with('='));

    let publisher = bus(&server).await;
    let monitor = redis::Client::open(server.url())
        .unwrap()
        .get_async_monitor()
        .await
        .unwrap();
    let mut monitor = Box::pin(monitor.into_on_message::<String>());
    publisher.publish(&queue(), payload.clone()).await.unwrap();
    // What the buses told the server, as the Go capture's MONITOR shows Go's
    // (`"set" "<key>" "<random>" "ex" "5" "nx"`): one SET per queue member.
    let mut sets = 0;
    while sets < 2 {
        let line = tokio::time::timeout(common::PATIENCE, futures::StreamExt::next(&mut monitor))
            .await
            .expect("MONITOR line")
            .expect("MONITOR open")
            .to_lowercase();
        if line.contains(&format!("\"set\" \"{}\" ", key.to_lowercase())) {
            assert!(line.ends_with("\"ex\" \"5\" \"nx\""), "{line}");
            sets += 1;
        }
    }
    let first = tokio::select! {
        m = sa.recv() => m,
        m = sb.recv() => m,
    };
    assert_eq!(first.unwrap(), payload);

    let mut conn = raw(&server).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=5).contains(&ttl), "lock key {key} has TTL {ttl}");

    // The same bytes again within 5 s: both members lose the lock, nobody delivers.
    let lost_before = a.stats().locks_lost + b.stats().locks_lost;
    publisher.publish(&queue(), payload.clone()).await.unwrap();
    eventually("both buses lost the repeat's lock", || async {
        a.stats().locks_lost + b.stats().locks_lost == lost_before + 2
    })
    .await;
    assert!(try_recv(&mut sa).is_none());
    assert!(try_recv(&mut sb).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_then_publish_never_loses_the_first_message() {
    let server = server();
    let bus = bus(&server).await;
    let mut conn = raw(&server).await;
    for i in 0..50 {
        let ch = Channel::request("Svc", "First", [format!("t{i}")], false);
        let mut sub = bus.subscribe(&ch, opts()).await.unwrap();
        // Published by another connection right after subscribe returned.
        assert_eq!(raw_publish(&mut conn, &ch.pipe_name(), b"first").await, 1);
        assert_eq!(recv(&mut sub).await, "first");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_local_subscriber_leaving_unsubscribes_the_channel() {
    let server = server();
    let bus = bus(&server).await;
    let mut conn = raw(&server).await;
    let name = fanout().pipe_name();
    let first = bus.subscribe(&fanout(), opts()).await.unwrap();
    let mut second = bus.subscribe(&fanout(), opts()).await.unwrap();
    assert_eq!(numsub(&mut conn, &name).await, 1);

    drop(first);
    assert_eq!(raw_publish(&mut conn, &name, b"still").await, 1);
    assert_eq!(recv(&mut second).await, "still");
    assert_eq!(numsub(&mut conn, &name).await, 1);

    // close(): buffered messages stay readable, nothing new arrives.
    raw_publish(&mut conn, &name, b"buffered").await;
    eventually("buffered", || async { second.stats().delivered() == 2 }).await;
    second.close();
    assert_eq!(recv(&mut second).await, "buffered");
    assert!(second.recv().await.is_none());
    eventually("UNSUBSCRIBE of the last local subscriber", || {
        let mut conn = conn.clone();
        let name = name.clone();
        async move { numsub(&mut conn, &name).await == 0 }
    })
    .await;
    eventually("channel forgotten", || async { bus.stats().channels == 0 }).await;

    // Subscribing again works (a fresh SUBSCRIBE after the UNSUBSCRIBE).
    let mut again = bus.subscribe(&fanout(), opts()).await.unwrap();
    assert_eq!(raw_publish(&mut conn, &name, b"again").await, 1);
    assert_eq!(recv(&mut again).await, "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_unsubscribe_resubscribe_churn_stays_consistent() {
    let server = server();
    let bus = bus(&server).await;
    let mut conn = raw(&server).await;
    let name = fanout().pipe_name();
    for _ in 0..20 {
        let sub = bus.subscribe(&fanout(), opts()).await.unwrap();
        drop(sub);
    }
    let mut sub = bus.subscribe(&fanout(), opts()).await.unwrap();
    // Whatever order the retirements ran in, the live subscriber is subscribed at Redis.
    assert_eq!(raw_publish(&mut conn, &name, b"live").await, 1);
    assert_eq!(recv(&mut sub).await, "live");
    drop(sub);
    eventually("unsubscribed", || {
        let mut conn = conn.clone();
        let name = name.clone();
        async move { numsub(&mut conn, &name).await == 0 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limit_is_enforced_and_large_payloads_work() {
    let server = server();
    let client = redis::Client::open(server.url()).unwrap();
    let small = RedisBus::with_options(client, RedisBusOptions::default().max_payload(1024))
        .await
        .unwrap();
    assert_eq!(small.max_payload(), 1024);
    let err = small
        .publish(&fanout(), Bytes::from(vec![0u8; 1025]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BusError::PayloadTooLarge {
                size: 1025,
                limit: 1024
            }
        ),
        "{err:?}"
    );
    small
        .publish(&fanout(), Bytes::from(vec![0u8; 1024]))
        .await
        .unwrap();

    let big = bus(&server).await;
    assert_eq!(big.max_payload(), 64 << 20);
    let mut sub = big.subscribe(&fanout(), opts()).await.unwrap();
    let payload: Bytes = (0..1 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    small.publish(&fanout(), Bytes::new()).await.unwrap();
    assert!(recv(&mut sub).await.is_empty());
    big.publish(&fanout(), payload.clone()).await.unwrap();
    assert_eq!(recv(&mut sub).await, payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_does_not_stall_others() {
    let server = server();
    let bus = bus(&server).await;
    let slow_ch = Channel::request("Svc", "Slow", ["x"], false);
    let mut slow = bus
        .subscribe(&slow_ch, SubscribeOptions::default().capacity(1))
        .await
        .unwrap();
    let mut fast_same = bus
        .subscribe(&slow_ch, SubscribeOptions::default().capacity(64))
        .await
        .unwrap();
    let mut fast = bus.subscribe(&fanout(), opts()).await.unwrap();
    let mut conn = raw(&server).await;
    for i in 0..10 {
        raw_publish(&mut conn, &slow_ch.pipe_name(), format!("s{i}").as_bytes()).await;
    }
    raw_publish(&mut conn, &fanout().pipe_name(), b"fast").await;
    // The reader went past the slow subscriber's full buffer to the later message.
    assert_eq!(recv(&mut fast).await, "fast");
    for i in 0..10 {
        assert_eq!(recv(&mut fast_same).await, format!("s{i}"));
    }
    assert_eq!(slow.stats().delivered(), 1);
    assert_eq!(slow.stats().dropped(), 9);
    assert_eq!(recv(&mut slow).await, "s0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_resume_after_server_restart() {
    let mut server = server();
    let bus = bus(&server).await;
    let mut sub = bus.subscribe(&fanout(), opts()).await.unwrap();
    let mut qsub = bus.subscribe(&queue(), opts()).await.unwrap();
    let name = fanout().pipe_name();

    server.kill();
    server.restart().unwrap();

    // The bus resubscribes by itself: wait until the server sees it again.
    let mut conn = raw(&server).await;
    eventually("automatic resubscription", || {
        let mut conn = conn.clone();
        let name = name.clone();
        async move { numsub(&mut conn, &name).await == 1 }
    })
    .await;
    eventually("queue channel resubscribed", || {
        let mut conn = conn.clone();
        async move { numsub(&mut conn, &queue().pipe_name()).await == 1 }
    })
    .await;
    assert_eq!(raw_publish(&mut conn, &name, b"after restart").await, 1);
    assert_eq!(recv(&mut sub).await, "after restart");

    // Publishing through the bus recovers too (the first attempt may see the dead connection).
    eventually("publish through the bus", || async {
        bus.publish(&queue(), Bytes::from_static(b"queued"))
            .await
            .is_ok()
    })
    .await;
    assert_eq!(recv(&mut qsub).await, "queued");
    assert!(bus.stats().disconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_server() {
    let server = RedisServer::start_with(RedisOptions {
        password: Some("s3cret-pw".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(server.url().contains("s3cret-pw"));
    let bus = RedisBus::connect(&server.url()).await.unwrap();
    let mut sub = bus.subscribe(&fanout(), opts()).await.unwrap();
    assert_eq!(
        bus.publish_counted(&fanout(), Bytes::from_static(b"authed"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(recv(&mut sub).await, "authed");

    // A user-built client works the same.
    let client = redis::Client::open(server.url()).unwrap();
    let other = RedisBus::new(client).await.unwrap();
    other
        .publish(&fanout(), Bytes::from_static(b"again"))
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await, "again");

    let wrong = format!("redis://:wrong@127.0.0.1:{}/", server.port());
    let err = RedisBus::connect(&wrong).await.unwrap_err();
    assert!(matches!(err, RedisBusError::Connect(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_reported_not_swallowed() {
    let mut server = server();
    assert!(matches!(
        RedisBus::connect("not a url").await.unwrap_err(),
        RedisBusError::Config(_)
    ));
    let client = redis::Client::open(server.url()).unwrap();
    let bus = RedisBus::with_options(
        client,
        RedisBusOptions::default()
            .response_timeout(Some(std::time::Duration::from_millis(300)))
            .connection_timeout(Some(std::time::Duration::from_millis(300)))
            .health_check_interval(None),
    )
    .await
    .unwrap();
    server.kill();
    let err = bus
        .publish(&fanout(), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BusError::Connection(_) | BusError::Timeout),
        "{err:?}"
    );
    let err = bus.subscribe(&fanout(), opts()).await.unwrap_err();
    assert!(
        matches!(err, BusError::Connection(_) | BusError::Timeout),
        "{err:?}"
    );
    // No server: connecting fails at once instead of retrying.
    let err = RedisBus::connect(&server.url()).await.unwrap_err();
    assert!(matches!(err, RedisBusError::Connect(_)), "{err:?}");
}

/// A bus with `options` holding one queue subscription with room for `capacity` messages, and
/// a raw connection to publish from.
async fn queue_member(
    server: &RedisServer,
    options: RedisBusOptions,
    capacity: usize,
) -> (RedisBus, Subscription, redis::aio::MultiplexedConnection) {
    let client = redis::Client::open(server.url()).unwrap();
    let bus = RedisBus::with_options(client, options).await.unwrap();
    let sub = bus
        .subscribe(&queue(), SubscribeOptions::default().capacity(capacity))
        .await
        .unwrap();
    (bus, sub, raw(server).await)
}

/// A pipeline of `n` publishes (`burst-0`, `burst-1`, …) to the queue channel.
fn queue_burst(n: u64) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("PUBLISH")
            .arg(queue().pipe_name())
            .arg(format!("burst-{i}"))
            .ignore();
    }
    pipe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_backlog_is_bounded_and_accounted() {
    let server = server();
    let options = RedisBusOptions::default()
        .max_concurrent_locks(1)
        .max_pending_locks(1);
    let (bus, mut sub, mut conn) = queue_member(&server, options, 1000).await;
    const N: u64 = 200;
    let () = queue_burst(N).query_async(&mut conn).await.unwrap();
    // Every message is either locked and delivered or dropped for overflow, none lost silently.
    eventually("every message accounted for", || async {
        let s = bus.stats();
        s.locks_won + s.locks_lost + s.lock_errors + s.lock_overflow == N
    })
    .await;
    let stats = bus.stats();
    assert_eq!(stats.locks_lost + stats.lock_errors, 0);
    assert_eq!(sub.stats().delivered(), stats.locks_won);
    assert_eq!(sub.stats().dropped(), stats.lock_overflow);
    assert!(recv(&mut sub).await.starts_with(b"burst-"));
}

/// Queue messages whose lock `SET` is still at the broker when it dies are counted as lock
/// errors (none is delivered without its lock, none is forgotten), and the queue delivers
/// again once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_cut_off_by_a_dead_broker_are_counted_and_the_queue_resumes() {
    let mut server = server();
    let (bus, mut sub, mut conn) = queue_member(&server, RedisBusOptions::default(), 4096).await;
    // The publishes, then a pause of every writing client: the bus's lock SETs, sent as the
    // messages arrive, stay at the broker unanswered (a few may get in before the pause).
    const N: u64 = 1000;
    let mut pipe = queue_burst(N);
    pipe.cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .ignore();
    let () = pipe.query_async(&mut conn).await.unwrap();
    eventually("every message pushed to the bus", || async {
        bus.stats().received == N
    })
    .await;
    server.kill();

    eventually("every lock settled", || async {
        let s = bus.stats();
        s.locks_won + s.locks_lost + s.lock_errors + s.lock_overflow == N
    })
    .await;
    let stats = bus.stats();
    assert!(stats.lock_errors > 0, "{stats:?}");
    assert_eq!(stats.locks_lost, 0, "{stats:?}");
    assert_eq!(sub.stats().delivered(), stats.locks_won, "{stats:?}");

    // Back again: the queue delivers, each message still under its lock.
    server.restart().unwrap();
    let mut conn = raw(&server).await;
    eventually("queue channel resubscribed", || {
        let mut conn = conn.clone();
        async move { numsub(&mut conn, &queue().pipe_name()).await == 1 }
    })
    .await;
    // Whatever was won before the kill and not read yet comes first.
    while try_recv(&mut sub).is_some() {}
    assert_eq!(
        raw_publish(&mut conn, &queue().pipe_name(), b"after restart").await,
        1
    );
    assert_eq!(recv(&mut sub).await, "after restart");
    assert_eq!(bus.stats().locks_won, stats.locks_won + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_keeps_its_bus_alive() {
    let server = server();
    let bus = bus(&server).await;
    let mut sub = bus.subscribe(&fanout(), opts()).await.unwrap();
    drop(bus);
    // Another connection still reaches the subscription of the dropped handle.
    let publisher = self::bus(&server).await;
    publisher
        .publish(&fanout(), Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await, Bytes::from_static(b"still here"));
    // Dropping the subscription then unsubscribes and releases the connection.
    let conn = raw(&server).await;
    drop(sub);
    eventually("channel gone", || {
        let mut conn = conn.clone();
        async move { numsub(&mut conn, &fanout().pipe_name()).await == 0 }
    })
    .await;
}
