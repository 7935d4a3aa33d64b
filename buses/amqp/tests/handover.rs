//! A queue member that stops reading while messages keep coming loses none of them: what the
//! broker had already pushed to it, past what it buffered, goes back to the shared queue and on
//! to another member. (A server turning not serving leaves its request channels this way; with
//! automatic acks, calls made at that moment went unanswered.)

use std::collections::HashSet;

use bytes::Bytes;
use psrpc::Channel;
use psrpc::bus::{Bus, SubscribeOptions};
use psrpc_amqp::AmqpBus;
use psrpc_conformance::{PATIENCE, within};
use psrpc_testkit::RabbitMqServer;

/// Messages published while one member leaves: enough that the broker still pushes some to it
/// after it stopped reading.
const MESSAGES: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_queue_member_hands_back_what_it_did_not_take() {
    let url = RabbitMqServer::shared()
        .expect("rabbitmq-server")
        .fresh_url()
        .expect("a virtual host");
    let connect = || async { AmqpBus::connect(&url).await.expect("amqp bus") };
    let (leaving_bus, staying_bus, publisher) = (connect().await, connect().await, connect().await);
    let channel = Channel::request("Handover", "Work", Vec::<String>::new(), true);
    // Buffers that never fill: a drop would be counted, not lost, and is not what this tests.
    let options = SubscribeOptions::default().capacity(MESSAGES);
    let mut leaving = leaving_bus
        .subscribe(&channel, options)
        .await
        .expect("subscribe");
    let mut staying = staying_bus
        .subscribe(&channel, options)
        .await
        .expect("subscribe");

    let sender = {
        let channel = channel.clone();
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                let payload = Bytes::from(i.to_string());
                publisher.publish(&channel, payload).await.expect("publish");
            }
            publisher.flush().await.expect("flush");
        })
    };

    // Leave in mid-stream, keeping what was buffered (as a draining server handles it).
    let mut seen = HashSet::new();
    let first = within("the leaving member's first message", leaving.recv())
        .await
        .expect("a message");
    seen.insert(first);
    leaving.close();
    while let Some(payload) = leaving.recv().await {
        assert!(seen.insert(payload), "a message delivered twice");
    }
    within("the publisher", sender).await.expect("join");

    // Bounded: what is missing after the patience is lost.
    let _ = tokio::time::timeout(PATIENCE, async {
        while seen.len() < MESSAGES {
            let payload = staying.recv().await.expect("the staying member");
            assert!(seen.insert(payload), "a message delivered twice");
        }
    })
    .await;
    assert_eq!(MESSAGES - seen.len(), 0, "messages lost");
    assert_eq!(leaving.stats().dropped() + staying.stats().dropped(), 0);
}
