//! The in-process bus: fan-out, round-robin queues, bounded buffers, unsubscribe on drop.

use bytes::Bytes;
use psrpc::Channel;
use psrpc::bus::{Bus, LocalBus, SubscribeOptions};

fn payload(i: usize) -> Bytes {
    Bytes::from(i.to_string())
}

fn fanout() -> Channel {
    Channel::request("Svc", "Events", ["t"], false)
}

fn queue() -> Channel {
    Channel::request("Svc", "Jobs", ["t"], true)
}

#[tokio::test]
async fn fan_out_reaches_every_subscriber() {
    let bus = LocalBus::new();
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(
            bus.subscribe(&fanout(), SubscribeOptions::default())
                .await
                .unwrap(),
        );
    }
    bus.publish(&fanout(), payload(1)).await.unwrap();
    for sub in &mut subs {
        assert_eq!(sub.recv().await.unwrap(), payload(1));
    }
}

#[tokio::test]
async fn queue_delivery_is_round_robin_among_live_members() {
    let bus = LocalBus::new();
    let mut a = bus
        .subscribe(&queue(), SubscribeOptions::default())
        .await
        .unwrap();
    let mut b = bus
        .subscribe(&queue(), SubscribeOptions::default())
        .await
        .unwrap();
    for i in 0..4 {
        bus.publish(&queue(), payload(i)).await.unwrap();
    }
    let got_a = [a.recv().await.unwrap(), a.recv().await.unwrap()];
    let got_b = [b.recv().await.unwrap(), b.recv().await.unwrap()];
    assert_eq!(a.stats().delivered() + b.stats().delivered(), 4);
    assert_ne!(got_a, got_b);

    // A member that left is skipped; the survivor gets everything.
    drop(b);
    for i in 10..13 {
        bus.publish(&queue(), payload(i)).await.unwrap();
    }
    for i in 10..13 {
        assert_eq!(a.recv().await.unwrap(), payload(i));
    }
}

#[tokio::test]
async fn full_buffers_drop_new_messages_and_count_them() {
    let bus = LocalBus::new();
    let mut slow = bus
        .subscribe(&fanout(), SubscribeOptions::default().capacity(2))
        .await
        .unwrap();
    let mut fast = bus
        .subscribe(&fanout(), SubscribeOptions::default().capacity(16))
        .await
        .unwrap();
    for i in 0..5 {
        bus.publish(&fanout(), payload(i)).await.unwrap();
    }
    // The slow subscriber kept the oldest two; the fast one was not held back.
    assert_eq!(slow.stats().dropped(), 3);
    assert_eq!(slow.recv().await.unwrap(), payload(0));
    assert_eq!(slow.recv().await.unwrap(), payload(1));
    for i in 0..5 {
        assert_eq!(fast.recv().await.unwrap(), payload(i));
    }
    assert_eq!(fast.stats().dropped(), 0);
}

#[tokio::test]
async fn a_full_queue_member_is_skipped_for_a_free_one() {
    let bus = LocalBus::new();
    let mut tiny = bus
        .subscribe(&queue(), SubscribeOptions::default().capacity(1))
        .await
        .unwrap();
    let mut roomy = bus
        .subscribe(&queue(), SubscribeOptions::default().capacity(16))
        .await
        .unwrap();
    for i in 0..6 {
        bus.publish(&queue(), payload(i)).await.unwrap();
    }
    assert_eq!(tiny.stats().delivered() + roomy.stats().delivered(), 6);
    assert_eq!(tiny.stats().dropped() + roomy.stats().dropped(), 0);
    assert_eq!(tiny.recv().await.unwrap(), payload(0));
    assert_eq!(roomy.recv().await.unwrap(), payload(1));
}

#[tokio::test]
async fn dropping_the_last_subscriber_removes_the_channel() {
    let bus = LocalBus::new();
    let a = bus
        .subscribe(&fanout(), SubscribeOptions::default())
        .await
        .unwrap();
    let mut b = bus
        .subscribe(&queue(), SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(bus.channel_count(), 2);
    drop(a);
    assert_eq!(bus.channel_count(), 1);
    b.close();
    assert_eq!(bus.channel_count(), 0);
    // Publishing to nobody is not an error.
    bus.publish(&fanout(), payload(0)).await.unwrap();
    assert_eq!(b.recv().await, None);
}

#[tokio::test]
async fn topics_with_empty_parts_name_the_same_channel() {
    let bus = LocalBus::new();
    let mut sub = bus
        .subscribe(
            &Channel::request("Svc", "M", ["a", "b"], false),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    bus.publish(
        &Channel::request("Svc", "M", ["a", "", "b"], false),
        payload(7),
    )
    .await
    .unwrap();
    assert_eq!(sub.recv().await.unwrap(), payload(7));
}

#[tokio::test]
async fn a_subscription_outlives_the_bus_handles() {
    let bus = LocalBus::new();
    let mut sub = bus
        .subscribe(&fanout(), SubscribeOptions::default())
        .await
        .unwrap();
    drop(bus);
    // Still open (pending), not closed (which would be ready with None).
    assert!(futures::FutureExt::now_or_never(sub.recv()).is_none());
}
