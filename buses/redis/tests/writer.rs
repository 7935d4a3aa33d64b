//! The Redis bus's batching writer: every publish of a pipeline gets its own reply or error,
//! nothing is lost or sent twice across batches, a dead broker fails what is pending, dropped publish futures
//! are still sent, and `flush` waits for everything queued before.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{PATIENCE, bus, eventually, raw, recv, server};
use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use psrpc::Channel;
use psrpc::bus::{Bus, BusError, SubscribeOptions, Subscription};
use psrpc_redis::{RedisBus, RedisBusOptions};

fn allowed() -> Channel {
    Channel::request("Svc", "Events", ["room1"], false)
}

fn unheard() -> Channel {
    Channel::request("Svc", "Events", ["nobody"], false)
}

fn denied() -> Channel {
    Channel::request("Svc", "Secret", ["room1"], false)
}

fn big_buffer() -> SubscribeOptions {
    SubscribeOptions::default().capacity(1 << 14)
}

/// Receives `n` messages, failing the test when one does not come.
async fn recv_n(sub: &mut Subscription, n: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(recv(sub).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_each_get_their_own_result() {
    let server = server();
    // A user that may publish on `Svc|Events*` only: PUBLISH elsewhere fails with NOPERM, one
    // command of a pipeline failing while its neighbours succeed.
    let mut admin = raw(&server).await;
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("limited")
        .arg("on")
        .arg(">pw")
        .arg("resetchannels")
        .arg("&Svc|Events*")
        .arg("+@all")
        .arg("~*")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://limited:pw@127.0.0.1:{}/", server.port());
    let publisher = RedisBus::with_options(
        redis::Client::open(url).unwrap(),
        RedisBusOptions::default().max_payload(1024),
    )
    .await
    .unwrap();
    let (a, b) = (bus(&server).await, bus(&server).await);
    let mut sub_a = a.subscribe(&allowed(), big_buffer()).await.unwrap();
    let _sub_b = b.subscribe(&allowed(), big_buffer()).await.unwrap();

    const N: usize = 600;
    let channels: Vec<Channel> = (0..N)
        .map(|i| match i % 3 {
            0 => allowed(),
            1 => unheard(),
            _ => denied(),
        })
        .collect();
    let publishes = channels.iter().enumerate().map(|(i, ch)| {
        // One oversized payload in the middle of the burst.
        let payload = if i == N / 2 {
            Bytes::from(vec![0u8; 2048])
        } else {
            Bytes::from(format!("m{i}"))
        };
        publisher.publish_counted(ch, payload)
    });
    let results = join_all(publishes).await;
    let mut sent = 0;
    for (i, result) in results.into_iter().enumerate() {
        match (i, i % 3, result) {
            (i, _, Err(BusError::PayloadTooLarge { size: 2048, .. })) if i == N / 2 => {}
            (i, _, other) if i == N / 2 => panic!("oversized publish {i}: {other:?}"),
            (_, 0, Ok(2)) => sent += 1,
            (_, 1, Ok(0)) => {}
            (_, 2, Err(BusError::Publish(err))) => {
                assert!(err.to_string().to_lowercase().contains("noperm"), "{err}")
            }
            (i, _, other) => panic!("publish {i}: unexpected {other:?}"),
        }
    }
    // Every allowed message arrives exactly once. (Not in creation order: `join_all` over
    // this many futures and tokio's cooperative budget decide the order they were queued in,
    // which is the order the bus keeps.)
    let mut got = recv_n(&mut sub_a, sent).await;
    let mut expected: Vec<Bytes> = (0..N)
        .filter(|i| i % 3 == 0 && *i != N / 2)
        .map(|i| Bytes::from(format!("m{i}")))
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_publish_futures_are_still_sent_and_flush_waits_for_them() {
    let server = server();
    let (publisher, subscriber) = (bus(&server).await, bus(&server).await);
    let mut sub = subscriber
        .subscribe(&allowed(), big_buffer())
        .await
        .unwrap();
    // An idle bus flushes at once.
    tokio::time::timeout(PATIENCE, publisher.flush())
        .await
        .unwrap()
        .unwrap();

    const N: usize = 1000;
    let ch = allowed();
    for i in 0..N {
        // Polled once (queued), then dropped by the elapsed timeout before any reply.
        let publish = publisher.publish(&ch, Bytes::from(format!("q{i}")));
        let _ = tokio::time::timeout(Duration::ZERO, publish).await;
        // Never polled: nothing queued.
        tokio::select! {
            biased;
            () = std::future::ready(()) => {}
            _ = publisher.publish(&ch, Bytes::from_static(b"never")) => {
                panic!("the ready branch goes first");
            }
        }
    }
    tokio::time::timeout(PATIENCE, publisher.flush())
        .await
        .expect("flush finished")
        .expect("flush succeeded");
    // Redis answered every PUBLISH before flush returned: the subscriber's connection has
    // them all (reading them may take a moment more).
    eventually("all dropped publishes delivered", || async {
        sub.stats().delivered() as usize >= N
    })
    .await;
    let got = recv_n(&mut sub, N).await;
    let expected: Vec<Bytes> = (0..N).map(|i| Bytes::from(format!("q{i}"))).collect();
    assert_eq!(got, expected);
    // The bus is still usable, and nothing else was sent.
    publisher
        .publish(&allowed(), Bytes::from_static(b"last"))
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await, "last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_flushed_survives_dropping_the_bus() {
    let server = server();
    let (publisher, subscriber) = (bus(&server).await, bus(&server).await);
    let mut sub = subscriber
        .subscribe(&allowed(), big_buffer())
        .await
        .unwrap();
    const N: usize = 2000;
    let ch = allowed();
    for i in 0..N {
        // Queued, not waited for, as a process does right before it exits. (Awaiting the
        // timeout lets the publish through tokio's cooperative budget, which `now_or_never`
        // would not: a publish still waiting to be queued is dropped unsent.)
        let publish = publisher.publish(&ch, Bytes::from(format!("f{i}")));
        let _ = tokio::time::timeout(Duration::ZERO, publish).await;
    }
    tokio::time::timeout(PATIENCE, publisher.flush())
        .await
        .unwrap()
        .unwrap();
    drop(publisher);
    let got = recv_n(&mut sub, N).await;
    let expected: Vec<Bytes> = (0..N).map(|i| Bytes::from(format!("f{i}"))).collect();
    assert_eq!(got, expected);
    assert_eq!(sub.stats().dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_batch_fails_pending_publishes() {
    let mut server = server();
    let publisher = RedisBus::with_options(
        redis::Client::open(server.url()).unwrap(),
        RedisBusOptions::default()
            // No deadline: only the lost connection can end the pending publishes.
            .response_timeout(None)
            .connection_timeout(Some(Duration::from_millis(300)))
            .health_check_interval(None),
    )
    .await
    .unwrap();
    let killed = tokio::sync::Notify::new();
    // Keeps up to 2000 publishes pending until the first one fails.
    let burst = async {
        let ch = allowed();
        let payload = Bytes::from(vec![7u8; 512]);
        let (mut ok, mut failed) = (0u64, Vec::new());
        let mut pending = FuturesUnordered::new();
        loop {
            while failed.is_empty() && pending.len() < 2000 {
                pending.push(publisher.publish(&ch, payload.clone()));
            }
            match pending.next().await {
                Some(Ok(())) => ok += 1,
                Some(Err(err)) => failed.push(err),
                None => return (ok, failed),
            }
            if ok == 5_000 {
                killed.notify_one();
            }
        }
    };
    let killer = async {
        killed.notified().await;
        server.kill();
    };
    let ((ok, failed), ()) = tokio::time::timeout(PATIENCE, async { tokio::join!(burst, killer) })
        .await
        .expect("every pending publish ended once the broker died");
    assert!(ok >= 5_000 && !failed.is_empty(), "{ok} {}", failed.len());
    for err in failed {
        assert!(
            matches!(err, BusError::Connection(_) | BusError::Timeout),
            "{err:?}"
        );
    }
    let flushed = tokio::time::timeout(PATIENCE, publisher.flush())
        .await
        .expect("flush ends");
    assert!(flushed.is_err(), "no broker to flush to");
}
