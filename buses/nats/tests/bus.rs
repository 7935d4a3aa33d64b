//! Bus-level behaviour of `NatsBus` against a real nats-server.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::{WAIT, bus, envelope, nats, nats_with, recv_text, text, wait_until};
use futures::FutureExt;
use psrpc::Channel;
use psrpc::bus::{Bus, BusError, SubscribeOptions};
use psrpc_testkit::NatsOptions;

const NO_TOPICS: [&str; 0] = [];

fn opts() -> SubscribeOptions {
    SubscribeOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscriber() {
    let server = nats();
    let (a, b, publisher) = (bus(&server).await, bus(&server).await, bus(&server).await);
    let ch = Channel::request("Svc", "Events", ["t1"], false);
    let mut a1 = a.subscribe(&ch, opts()).await.unwrap();
    let mut a2 = a.subscribe(&ch, opts()).await.unwrap();
    let mut b1 = b.subscribe(&ch, opts()).await.unwrap();

    for i in 0..3 {
        publisher
            .publish(&ch, envelope(&format!("m{i}")))
            .await
            .unwrap();
    }
    for sub in [&mut a1, &mut a2, &mut b1] {
        for i in 0..3 {
            assert_eq!(recv_text(sub).await, format!("m{i}"));
        }
    }
    // Two local subscribers of one subject share one NATS subscription.
    let stats = a.stats();
    assert_eq!(stats.nats_subscriptions, 1);
    assert_eq!(stats.local_subscriptions, 2);
    assert_eq!(stats.received, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_delivers_each_message_to_exactly_one_bus() {
    let server = nats();
    let (a, b, publisher) = (bus(&server).await, bus(&server).await, bus(&server).await);
    let queue = Channel::request("Svc", "Jobs", NO_TOPICS, true);
    assert_eq!(queue.nats_subject(), "SRV.Svc.Q");
    let marker = Channel::request("Svc", "Marker", NO_TOPICS, false);
    let mut qa = a.subscribe(&queue, opts()).await.unwrap();
    let mut qb = b.subscribe(&queue, opts()).await.unwrap();
    let mut ma = a.subscribe(&marker, opts()).await.unwrap();
    let mut mb = b.subscribe(&marker, opts()).await.unwrap();

    const N: usize = 100;
    for i in 0..N {
        publisher
            .publish(&queue, envelope(&format!("job{i}")))
            .await
            .unwrap();
    }
    publisher.publish(&marker, envelope("end")).await.unwrap();

    let mut seen = HashSet::new();
    let (mut on_a, mut on_b) = (0, 0);
    let collect = async {
        while seen.len() < N {
            tokio::select! {
                Some(p) = qa.recv() => { on_a += 1; assert!(seen.insert(text(p)), "duplicate delivery"); }
                Some(p) = qb.recv() => { on_b += 1; assert!(seen.insert(text(p)), "duplicate delivery"); }
            }
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .expect("queue messages");
    assert_eq!(on_a + on_b, N);
    // NATS picks a member at random: 100 messages all on one side would mean no queue sharing.
    assert!(on_a > 0 && on_b > 0, "a={on_a} b={on_b}");
    // Both connections have seen everything the publisher sent before the marker.
    assert_eq!(recv_text(&mut ma).await, "end");
    assert_eq!(recv_text(&mut mb).await, "end");
    assert!(qa.recv().now_or_never().is_none());
    assert!(qb.recv().now_or_never().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_queue_subscribers_take_turns() {
    let server = nats();
    let (a, publisher) = (bus(&server).await, bus(&server).await);
    let queue = Channel::request("Svc", "Jobs", ["x"], true);
    let mut q1 = a.subscribe(&queue, opts()).await.unwrap();
    let mut q2 = a.subscribe(&queue, opts()).await.unwrap();
    assert_eq!(a.stats().nats_subscriptions, 1);
    for i in 0..4 {
        publisher
            .publish(&queue, envelope(&format!("j{i}")))
            .await
            .unwrap();
    }
    let first = [recv_text(&mut q1).await, recv_text(&mut q1).await];
    let second = [recv_text(&mut q2).await, recv_text(&mut q2).await];
    let mut all: Vec<_> = first.iter().chain(&second).cloned().collect();
    all.sort();
    assert_eq!(all, ["j0", "j1", "j2", "j3"]);
    assert!(q1.recv().now_or_never().is_none());
    assert!(q2.recv().now_or_never().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_keys_demultiplex_methods_on_one_subject() {
    let server = nats();
    let (a, publisher) = (bus(&server).await, bus(&server).await);
    let echo = Channel::request("Svc", "Echo", NO_TOPICS, false);
    let other = Channel::request("Svc", "Other", NO_TOPICS, false);
    let echo_claims = Channel::claim_response("Svc", "Echo", NO_TOPICS);
    let mut echo_sub = a.subscribe(&echo, opts()).await.unwrap();
    let mut other_sub = a.subscribe(&other, opts()).await.unwrap();
    let mut claims_sub = a.subscribe(&echo_claims, opts()).await.unwrap();
    // Three methods' channels, one subject, one SUB.
    assert_eq!(a.stats().nats_subscriptions, 1);
    assert_eq!(a.stats().local_subscriptions, 3);

    // A message without route key and one with a key nobody here wants are dropped, counted.
    let raw = publisher.client();
    raw.publish("SRV.Svc", envelope("no key")).await.unwrap();
    let unknown = psrpc::wire::with_route_key(&envelope("unknown"), "Nope.REQ");
    raw.publish("SRV.Svc", unknown).await.unwrap();
    raw.publish("SRV.Svc", Bytes::from_static(b"\xff\xff garbage"))
        .await
        .unwrap();

    publisher.publish(&other, envelope("o1")).await.unwrap();
    publisher
        .publish(&echo_claims, envelope("c1"))
        .await
        .unwrap();
    publisher.publish(&echo, envelope("e1")).await.unwrap();

    assert_eq!(recv_text(&mut echo_sub).await, "e1");
    assert_eq!(recv_text(&mut other_sub).await, "o1");
    assert_eq!(recv_text(&mut claims_sub).await, "c1");
    // One reader routes in publish order: the strays were handled before "e1".
    assert_eq!(a.stats().unroutable, 3);
    for sub in [&mut echo_sub, &mut other_sub, &mut claims_sub] {
        assert!(sub.recv().now_or_never().is_none());
    }

    // The payload on the wire carries the route key as field 3.
    let mut sniff = raw.subscribe("SRV.Svc").await.unwrap();
    publisher.round_trip().await.unwrap();
    publisher.publish(&echo, envelope("e2")).await.unwrap();
    let msg = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut sniff))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(psrpc::wire::route_key(&msg.payload), Some("Echo.REQ"));
    assert!(msg.headers.is_none() && msg.reply.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_then_publish_never_loses_the_first_message() {
    let server = nats();
    let (a, publisher) = (bus(&server).await, bus(&server).await);
    for i in 0..60 {
        let topic = format!("t{i}");
        let ch = match i % 3 {
            0 => Channel::request("Svc", "M", [topic.as_str()], false),
            1 => Channel::request("Svc", "M", [topic.as_str()], true),
            _ => Channel::response("Svc", format!("CLI_{i}")),
        };
        let mut sub = a.subscribe(&ch, opts()).await.unwrap();
        // Published right away from another connection: must not be lost.
        publisher
            .publish(&ch, envelope(&format!("first{i}")))
            .await
            .unwrap();
        assert_eq!(recv_text(&mut sub).await, format!("first{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_subscriptions_stop_and_the_last_one_removes_the_sub() {
    let server = nats();
    let (a, publisher) = (bus(&server).await, bus(&server).await);
    let marker = Channel::request("Svc", "Marker", ["m"], false);
    let ch = Channel::request("Svc", "Events", NO_TOPICS, false);
    let mut marker_sub = a.subscribe(&marker, opts()).await.unwrap();
    let mut s1 = a.subscribe(&ch, opts()).await.unwrap();
    let mut s2 = a.subscribe(&ch, opts()).await.unwrap();
    let s3 = a.subscribe(&ch, opts()).await.unwrap();
    assert_eq!(a.stats().nats_subscriptions, 2);

    // A closed or dropped subscriber stops receiving; the others keep the shared SUB.
    s1.close();
    drop(s3);
    assert_eq!(a.stats().local_subscriptions, 2);
    publisher
        .publish(&ch, envelope("after close"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut s2).await, "after close");
    assert!(s1.recv().await.is_none());

    // The last one going removes the NATS subscription.
    drop(s2);
    wait_until("the SUB is removed", || a.stats().nats_subscriptions == 1).await;
    // The echo comes back after the server has processed our UNSUB.
    a.round_trip().await.unwrap();
    let before = a.client().statistics().in_messages.load(Ordering::Relaxed);
    publisher.publish(&ch, envelope("nobody")).await.unwrap();
    publisher
        .publish(&marker, envelope("marker"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut marker_sub).await, "marker");
    // The server sent the marker and nothing for the unsubscribed subject.
    let after = a.client().statistics().in_messages.load(Ordering::Relaxed);
    assert_eq!(after - before, 1);
    assert_eq!(a.stats().local_subscriptions, 1);

    // Subscribing again sets up a fresh SUB.
    let mut again = a.subscribe(&ch, opts()).await.unwrap();
    publisher.publish(&ch, envelope("again")).await.unwrap();
    assert_eq!(recv_text(&mut again).await, "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_over_the_broker_limit_is_rejected() {
    let server = nats_with(NatsOptions {
        max_payload: Some(4096),
        ..Default::default()
    });
    let (a, publisher) = (bus(&server).await, bus(&server).await);
    assert_eq!(publisher.max_payload(), 4096);

    // Client channels carry no route key: the payload is sent as is.
    let reply = Channel::response("Svc", "CLI_x");
    let mut reply_sub = a.subscribe(&reply, opts()).await.unwrap();
    let err = publisher
        .publish(&reply, Bytes::from(vec![7u8; 4097]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BusError::PayloadTooLarge {
                size: 4097,
                limit: 4096
            }
        ),
        "{err:?}"
    );
    publisher
        .publish(&reply, Bytes::from(vec![7u8; 4096]))
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, reply_sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 4096);

    // Server channels: the route key added on the wire counts toward the limit.
    let req = Channel::request("Svc", "Big", NO_TOPICS, false);
    let mut req_sub = a.subscribe(&req, opts()).await.unwrap();
    let overhead = psrpc::wire::with_route_key(b"", "Big.REQ").len();
    let base = psrpc::wire::encode_envelope_raw("t", &[0u8; 4000]).len();
    let fits = psrpc::wire::encode_envelope_raw("t", &vec![0u8; 4000 + 4096 - overhead - base]);
    assert_eq!(fits.len() + overhead, 4096);
    let too_big = psrpc::wire::encode_envelope_raw("t", &vec![0u8; 4001 + 4096 - overhead - base]);
    let err = publisher.publish(&req, too_big).await.unwrap_err();
    assert!(
        matches!(
            err,
            BusError::PayloadTooLarge {
                size: 4097,
                limit: 4096
            }
        ),
        "{err:?}"
    );
    publisher.publish(&req, fits).await.unwrap();
    let got = tokio::time::timeout(WAIT, req_sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_stall_its_subject() {
    let server = nats();
    let (a, publisher) = (bus(&server).await, bus(&server).await);
    let slow_ch = Channel::request("Svc", "Slow", NO_TOPICS, false);
    let fast_ch = Channel::request("Svc", "Fast", NO_TOPICS, false);
    let elsewhere_ch = Channel::request("Other", "Fast", NO_TOPICS, false);
    // Never read, room for one message.
    let slow = a
        .subscribe(&slow_ch, SubscribeOptions::default().capacity(1))
        .await
        .unwrap();
    let mut fast = a.subscribe(&fast_ch, opts()).await.unwrap();
    let mut elsewhere = a.subscribe(&elsewhere_ch, opts()).await.unwrap();

    const N: usize = 50;
    for i in 0..N {
        publisher
            .publish(&slow_ch, envelope(&format!("s{i}")))
            .await
            .unwrap();
        publisher
            .publish(&fast_ch, envelope(&format!("f{i}")))
            .await
            .unwrap();
        publisher
            .publish(&elsewhere_ch, envelope(&format!("e{i}")))
            .await
            .unwrap();
    }
    for i in 0..N {
        assert_eq!(recv_text(&mut fast).await, format!("f{i}"));
        assert_eq!(recv_text(&mut elsewhere).await, format!("e{i}"));
    }
    // Every slow message came before the last fast one on the same reader.
    assert_eq!(slow.stats().delivered(), 1);
    assert_eq!(slow.stats().dropped(), (N - 1) as u64);
    assert_eq!(fast.stats().dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_subjects_are_errors_not_panics() {
    let server = nats();
    let a = bus(&server).await;
    // The service name is not sanitised (as in Go); a space makes the subject invalid.
    let ch = Channel::request("Bad Svc", "M", NO_TOPICS, false);
    let err = a.subscribe(&ch, opts()).await.unwrap_err();
    assert!(matches!(err, BusError::Subscribe(_)), "{err:?}");
    let err = a.publish(&ch, envelope("x")).await.unwrap_err();
    assert!(matches!(err, BusError::Publish(_)), "{err:?}");
    assert_eq!(a.stats().nats_subscriptions, 0);
    assert_eq!(a.stats().local_subscriptions, 0);
}

/// All queue methods of a service share `SRV.Svc.Q` and group `bus`, so the broker can pick a
/// member that serves another method; that member hands the message back to the group instead
/// of dropping it, and every message reaches a member that serves its method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_messages_for_a_method_served_elsewhere_are_handed_back() {
    let server = nats();
    let (a, b, publisher) = (bus(&server).await, bus(&server).await, bus(&server).await);
    let echo = Channel::request("Svc", "Echo", NO_TOPICS, true);
    let jobs = Channel::request("Svc", "Jobs", NO_TOPICS, true);
    assert_eq!(echo.nats_subject(), jobs.nats_subject());
    let mut on_a = a.subscribe(&echo, opts()).await.unwrap();
    let mut on_b = b.subscribe(&jobs, opts()).await.unwrap();

    const N: usize = 100;
    for i in 0..N {
        publisher
            .publish(&echo, envelope(&format!("echo{i}")))
            .await
            .unwrap();
        publisher
            .publish(&jobs, envelope(&format!("job{i}")))
            .await
            .unwrap();
    }
    let mut echoes = HashSet::new();
    let mut job_set = HashSet::new();
    for _ in 0..N {
        echoes.insert(recv_text(&mut on_a).await);
        job_set.insert(recv_text(&mut on_b).await);
    }
    assert_eq!(
        echoes.len(),
        N,
        "every Echo message reached the Echo member once"
    );
    assert_eq!(
        job_set.len(),
        N,
        "every Jobs message reached the Jobs member once"
    );
    assert!(echoes.iter().all(|m| m.starts_with("echo")));
    assert!(job_set.iter().all(|m| m.starts_with("job")));
    // With two members of the group, about half the messages first reach the wrong one.
    let requeued = a.stats().requeued + b.stats().requeued;
    assert!(requeued > 0, "some messages were handed back");
    assert_eq!(
        a.stats().unroutable + b.stats().unroutable,
        0,
        "none was lost"
    );
}
