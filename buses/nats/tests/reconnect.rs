//! Shared subscriptions keep routing after the broker is killed and restarted on the same port.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::connection::State;
use common::{WAIT, bus, envelope, nats, recv_text, text, wait_until};
use psrpc::Channel;
use psrpc::bus::{Bus, SubscribeOptions, Subscription};
use psrpc_nats::NatsBus;

const NO_TOPICS: [&str; 0] = [];

/// Publishes until `sub` receives a message published in this loop, within a bounded time:
/// messages published before both clients have re-sent their SUBs are lost (at-most-once).
async fn publish_until_received(
    publisher: &NatsBus,
    ch: &Channel,
    sub: &mut Subscription,
    tag: &str,
) {
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    for attempt in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery on {} after the restart",
            ch.nats_subject()
        );
        publisher
            .publish(ch, envelope(&format!("{tag}{attempt}")))
            .await
            .unwrap();
        // Bounded wait for this attempt's message; a miss means "not yet re-subscribed".
        match tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            Ok(Some(payload)) => {
                assert!(text(payload).starts_with(tag));
                return;
            }
            Ok(None) => panic!("subscription closed by the reconnect"),
            Err(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_broker_restart() {
    let mut server = nats();
    let (a, publisher) = (bus(&server).await, bus(&server).await);
    let events = Channel::request("Svc", "Events", NO_TOPICS, false);
    let claims = Channel::claim_response("Svc", "Echo", NO_TOPICS);
    let jobs = Channel::request("Svc", "Jobs", NO_TOPICS, true);
    let replies = Channel::response("Svc", "CLI_reconnect");
    let mut subs = Vec::new();
    for ch in [&events, &claims, &jobs, &replies] {
        let mut sub = a.subscribe(ch, SubscribeOptions::default()).await.unwrap();
        publisher.publish(ch, envelope("before")).await.unwrap();
        assert_eq!(recv_text(&mut sub).await, "before");
        subs.push(sub);
    }
    // events and claims share SRV.Svc.
    assert_eq!(a.stats().nats_subscriptions, 3);

    server.kill();
    wait_until("both clients notice the broker is gone", || {
        a.client().connection_state() == State::Disconnected
            && publisher.client().connection_state() == State::Disconnected
    })
    .await;
    server.restart().expect("restart nats-server");
    wait_until("both clients have reconnected", || {
        [&a, &publisher].iter().all(|bus| {
            bus.client().connection_state() == State::Connected
                && bus.client().statistics().connects.load(Ordering::Relaxed) >= 2
        })
    })
    .await;

    // No re-subscribing: the same local subscriptions receive again.
    for (ch, sub) in [&events, &claims, &jobs, &replies]
        .into_iter()
        .zip(&mut subs)
    {
        publish_until_received(&publisher, ch, sub, "after").await;
    }
    let stats = a.stats();
    assert_eq!(stats.nats_subscriptions, 3);
    assert_eq!(stats.local_subscriptions, 4);

    // New subscriptions work too, and still confirm with a round trip.
    let late = Channel::request("Svc", "Late", ["x"], false);
    let mut late_sub = a
        .subscribe(&late, SubscribeOptions::default())
        .await
        .unwrap();
    publisher.publish(&late, envelope("late")).await.unwrap();
    assert_eq!(recv_text(&mut late_sub).await, "late");
}
