//! MQTT 3.1.1, the version Go psrpc speaks: the whole conformance suite on a bus told to speak
//! it, and the automatic fallback from MQTT 5 against a front that refuses MQTT 5 (mosquitto
//! itself cannot be told to refuse it).

use std::sync::Arc;

use bytes::Bytes;
use psrpc::Channel;
use psrpc::bus::{Bus, SubscribeOptions};
use psrpc_conformance::{Harness, conformance_suite, within};
use psrpc_mqtt::{MqttBus, MqttBusOptions, MqttProtocol};
use psrpc_testkit::MosquittoServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn v311() -> MqttBusOptions {
    MqttBusOptions::default()
        .protocol(MqttProtocol::V311)
        // A 1 MiB limit keeps the large-payload case quick.
        .max_payload(1 << 20)
}

fn harness() -> Harness {
    let server = MosquittoServer::start().expect("mosquitto");
    let url = server.url();
    Harness::new("mqtt-3.1.1", server, move || {
        let url = url.clone();
        async move {
            let bus = MqttBus::connect_with(&url, v311())
                .await
                .expect("mqtt 3.1.1 bus");
            assert_eq!(bus.protocol(), MqttProtocol::V311);
            Arc::new(bus) as Arc<dyn psrpc::Bus>
        }
    })
}

// The whole suite but `unserved_methods_fail_fast`: a 3.1.1 broker cannot tell a publisher
// that nobody subscribes (MQTT 5's PUBACK reason does), so an unserved call ends by its
// deadline, as with Go psrpc on MQTT; `timeouts_and_unserved_methods` checks that it does.
// Keep this list in step with `conformance_suite!`.
conformance_suite!(@cases harness();
    fan_out_reaches_every_subscriber,
    queue_delivers_each_message_to_exactly_one_member,
    subscribe_then_publish_never_loses_the_first_message,
    closed_subscription_stops_receiving,
    unary_call_direct_and_claimed,
    queue_calls_spread_over_servers_on_separate_connections,
    affinity_call_picks_the_best_server,
    multi_call_collects_every_server,
    topic_calls_reach_only_their_topic,
    subscriptions_fan_out_queue_and_topics,
    errors_with_details_cross_the_bus,
    timeouts_and_unserved_methods,
    metadata_reaches_the_handler,
    large_payloads_and_the_broker_limit,
    published_events_survive_an_exit_after_shutdown,
);

/// A message round trip through a shared subscription (`$share/psrpc/…`) and a plain one.
async fn round_trip(bus: &MqttBus) {
    for queue in [true, false] {
        let ch = Channel::request("V311", "Echo", ["a"], queue);
        let mut sub = bus
            .subscribe(&ch, SubscribeOptions::default())
            .await
            .expect("subscribe");
        bus.publish(&ch, Bytes::from_static(b"hi")).await.unwrap();
        let got = within("a message", sub.recv()).await;
        assert_eq!(got.as_deref(), Some(&b"hi"[..]), "queue: {queue}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_speaks_mqtt5_where_the_broker_does() {
    let server = MosquittoServer::start().expect("mosquitto");
    let bus = MqttBus::connect(&server.url()).await.expect("bus");
    assert_eq!(bus.protocol(), MqttProtocol::V5);
    round_trip(&bus).await;
}

/// A front for mosquitto that answers every MQTT 5 CONNECT as a 3.1.1-only broker does (a
/// 3.1.1 CONNACK "unacceptable protocol version", then hang up) and passes 3.1.1 connections
/// through to the broker. Returns its port.
async fn mqtt311_only_front(broker_port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                // CONNECT: fixed header, remaining length (< 128 here), "\0\x04MQTT", level.
                let mut head = [0u8; 9];
                if client.read_exact(&mut head).await.is_err() {
                    return;
                }
                if head[8] == 5 {
                    let _ = client.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
                    return;
                }
                let Ok(mut broker) = TcpStream::connect(("127.0.0.1", broker_port)).await else {
                    return;
                };
                if broker.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_mqtt311_when_the_broker_refuses_mqtt5() {
    let server = MosquittoServer::start().expect("mosquitto");
    let broker_port: u16 = server
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the URL");
    let front = mqtt311_only_front(broker_port).await;
    let url = format!("mqtt://127.0.0.1:{front}");

    // Told to speak MQTT 5 only, the bus fails with the broker's refusal.
    let err = MqttBus::connect_with(&url, MqttBusOptions::default().protocol(MqttProtocol::V5))
        .await
        .expect_err("MQTT 5 refused");
    assert!(matches!(err, psrpc_mqtt::MqttBusError::Connect(_)), "{err}");

    let bus = MqttBus::connect(&url).await.expect("fallback to 3.1.1");
    assert_eq!(bus.protocol(), MqttProtocol::V311);
    round_trip(&bus).await;
}
