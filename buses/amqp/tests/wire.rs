//! What the AMQP bus leaves on the broker, checked with a raw lapin client: Go psrpc's exchange,
//! queue and binding rules (see the crate docs), and the envelopes as published.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use psrpc::bus::{Bus, SubscribeOptions};
use psrpc::{Channel, wire};
use psrpc_amqp::{AmqpBus, AmqpBusOptions, exchange_name};
use psrpc_conformance::within;
use psrpc_testkit::RabbitMqServer;

fn fresh_url() -> String {
    RabbitMqServer::shared()
        .expect("rabbitmq-server")
        .fresh_url()
        .expect("a virtual host")
}

async fn raw(url: &str) -> (Connection, lapin::Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("raw connection");
    let channel = conn.create_channel().await.expect("raw channel");
    (conn, channel)
}

fn go_exchange(passive: bool) -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive,
        durable: false,
        auto_delete: true,
        internal: false,
        nowait: false,
    }
}

fn envelope(text: &str) -> Bytes {
    wire::encode_envelope_raw("type.googleapis.com/test.Text", text.as_bytes())
}

fn text(payload: &[u8]) -> String {
    let msg = wire::decode_envelope(Bytes::copy_from_slice(payload)).expect("an envelope");
    assert!(msg.channel.is_empty(), "a route key on AMQP: {msg:?}");
    String::from_utf8(msg.value.to_vec()).expect("utf-8")
}

#[test]
fn exchange_names_are_the_pipe_spelling_with_dots() {
    let cases = [
        (
            Channel::request("Svc", "Method", ["eu", "1"], true),
            "Svc.Method.eu.1.REQ",
        ),
        (Channel::response("Svc", "CLI_abc"), "Svc.CLI_abc.RES"),
        (Channel::claim("Svc", "CLI_abc"), "Svc.CLI_abc.CLAIM"),
        (
            Channel::server_stream("Svc", "Chat", ["x-y"]),
            "Svc.Chat.xu+002dy.STR",
        ),
    ];
    for (channel, name) in cases {
        assert_eq!(exchange_name(&channel), name);
        assert_eq!(
            exchange_name(&channel),
            channel.pipe_name().replace('|', ".")
        );
    }
}

/// A queue subscription: a fanout exchange with Go's flags, and a shared queue named like it
/// with Go's flags, consumed by both buses, each message delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_subscribers_share_one_queue_named_like_the_fanout_exchange() {
    let url = fresh_url();
    let ch = Channel::request("Wire", "Jobs", ["t1"], true);
    let name = exchange_name(&ch);
    let a = AmqpBus::connect(&url).await.unwrap();
    let b = AmqpBus::connect(&url).await.unwrap();
    let mut sub_a = a.subscribe(&ch, SubscribeOptions::default()).await.unwrap();
    let mut sub_b = b.subscribe(&ch, SubscribeOptions::default()).await.unwrap();

    let (_conn, raw) = raw(&url).await;
    // Declaring with exactly Go's arguments succeeds only if they match (else 406 closes the
    // channel): a fanout exchange, not durable, auto-delete ...
    raw.exchange_declare(
        name.as_str().into(),
        ExchangeKind::Fanout,
        go_exchange(false),
        FieldTable::default(),
    )
    .await
    .expect("the exchange is a non-durable auto-delete fanout");
    // ... and a shared queue named like it: not durable, not exclusive, auto-delete, with the
    // two buses as its consumers.
    let queue = raw
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: false,
                exclusive: false,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the shared queue has Go's flags");
    assert_eq!(queue.consumer_count(), 2);

    // Published by a raw client to the exchange: each message reaches exactly one member.
    for i in 0..20 {
        raw.basic_publish(
            name.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &envelope(&format!("job{i}")),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let mut seen = HashSet::new();
    let mut per_member = [0, 0];
    while seen.len() < 20 {
        let (member, payload) = within("20 jobs", async {
            tokio::select! {
                p = sub_a.recv() => (0, p.expect("open")),
                p = sub_b.recv() => (1, p.expect("open")),
            }
        })
        .await;
        assert!(seen.insert(text(&payload)), "delivered twice");
        per_member[member] += 1;
    }
    // Round robin across the two connections.
    assert!(per_member[0] > 0 && per_member[1] > 0, "{per_member:?}");
    // Nothing more: every message went to one member only.
    let extra = tokio::time::timeout(Duration::from_millis(200), async {
        tokio::select! { p = sub_a.recv() => p, p = sub_b.recv() => p }
    })
    .await;
    assert!(extra.is_err(), "a duplicate delivery");
}

/// A fan-out subscription has a server-named exclusive queue of its own (no queue named like
/// the exchange), and sees what a raw client publishes; a raw queue bound to the exchange
/// sees what the bus publishes, as the same envelope bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_subscribers_bind_private_queues_and_payloads_are_bare_envelopes() {
    let url = fresh_url();
    let ch = Channel::request("Wire", "Events", ["room"], false);
    let name = exchange_name(&ch);
    let bus = AmqpBus::connect(&url).await.unwrap();
    let mut sub = bus
        .subscribe(&ch, SubscribeOptions::default())
        .await
        .unwrap();

    let (_conn, raw) = raw(&url).await;
    raw.exchange_declare(
        name.as_str().into(),
        ExchangeKind::Fanout,
        go_exchange(true),
        FieldTable::default(),
    )
    .await
    .expect("the exchange exists");
    let own = raw
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    raw.queue_bind(
        own.name().clone(),
        name.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = raw
        .basic_consume(
            own.name().clone(),
            "sniffer".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let payload = envelope("hello");
    bus.publish(&ch, payload.clone()).await.unwrap();
    let delivery = within("the raw consumer", consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.data, payload.as_ref());
    assert_eq!(delivery.exchange.as_str(), name);
    assert_eq!(
        text(&within("the bus subscriber", sub.recv()).await.unwrap()),
        "hello"
    );

    raw.basic_publish(
        name.as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        &envelope("from raw"),
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        text(&within("a raw publish", sub.recv()).await.unwrap()),
        "from raw"
    );

    // No shared queue for fan-out subscribers: a passive declare of one named like the
    // exchange fails (404 closes that channel only).
    let probe = raw.clone();
    let missing = probe
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(
        missing.is_err(),
        "a queue named like the exchange: {missing:?}"
    );
}

/// A publish to a channel nobody subscribes to declares its exchange rather than failing the
/// publishing channel; a watched publish there is reported unreceived, one with a subscriber
/// is not; with confirms on, publishes resolve once the broker has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_publishes_are_reported_and_do_not_break_the_bus() {
    let url = fresh_url();
    let options = AmqpBusOptions::default().confirms(true);
    let bus = AmqpBus::with_options(&url, options).await.unwrap();
    let nobody = Channel::request("Wire", "Nobody", ["x"], false);
    for _ in 0..3 {
        bus.publish(&nobody, envelope("lost")).await.unwrap();
        let report = bus
            .publish_watched(&nobody, envelope("lost"))
            .await
            .unwrap();
        within("a return for an unrouted message", report).await;
    }
    let served = Channel::request("Wire", "Served", ["x"], true);
    let mut sub = bus
        .subscribe(&served, SubscribeOptions::default())
        .await
        .unwrap();
    let report = bus
        .publish_watched(&served, envelope("taken"))
        .await
        .unwrap();
    assert_eq!(
        text(&within("the served message", sub.recv()).await.unwrap()),
        "taken"
    );
    bus.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), report)
            .await
            .is_err(),
        "a routed message reported as returned"
    );
    assert_eq!(bus.stats().disconnects, 0);
}

/// Credentials are checked by the broker; the payload limit by the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_and_oversized_payloads_are_refused() {
    let url = fresh_url();
    let wrong = url.replace("psrpc:psrpc@", "psrpc:wrong@");
    assert!(AmqpBus::connect(&wrong).await.is_err());
    let bus = AmqpBus::with_options(&url, AmqpBusOptions::default().max_payload(1000))
        .await
        .unwrap();
    let ch = Channel::request("Wire", "Big", ["x"], false);
    let err = bus
        .publish(&ch, Bytes::from(vec![0u8; 1001]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            psrpc::bus::BusError::PayloadTooLarge {
                size: 1001,
                limit: 1000
            }
        ),
        "{err}"
    );
    bus.publish(&ch, Bytes::from(vec![0u8; 1000]))
        .await
        .unwrap();
}

/// More subscriptions than a connection has channels (RabbitMQ's `channel_max` is 2047):
/// consumers share channels, and every subscription still receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_subscriptions_fit_on_one_connection() {
    const N: usize = 2100;
    let url = fresh_url();
    let bus = AmqpBus::connect(&url).await.unwrap();
    let channels: Vec<Channel> = (0..N)
        .map(|i| Channel::request("Wire", "Many", [format!("t{i}")], false))
        .collect();
    // A capacity check (more consumers than one AMQP channel allows), not a speed check: three
    // broker round trips per subscription, 6,300 in all, take longer than the usual patience
    // on a busy 2-core machine sharing the broker with this binary's other tests.
    let mut subs = tokio::time::timeout(
        Duration::from_secs(90),
        futures::stream::iter(&channels)
            .map(|ch| bus.subscribe(ch, SubscribeOptions::default()))
            .buffered(64)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("2,100 subscriptions within 90 s")
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
    assert_eq!(bus.stats().subscriptions, N);
    for i in [0, N / 2, N - 1] {
        bus.publish(&channels[i], envelope(&format!("to {i}")))
            .await
            .unwrap();
        assert_eq!(
            text(&within("a message", subs[i].recv()).await.unwrap()),
            format!("to {i}")
        );
    }
}

/// `amqps://` through the shared node's TLS listener, whose certificates the test kit made.
#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use psrpc_amqp::AmqpTls;

    fn node() -> &'static RabbitMqServer {
        RabbitMqServer::shared().expect("rabbitmq-server")
    }

    fn options(tls: AmqpTls) -> AmqpBusOptions {
        AmqpBusOptions::default().tls(tls)
    }

    /// A message round trip over `bus`.
    async fn round_trip(bus: &AmqpBus) {
        let ch = Channel::request("Tls", "Echo", [] as [&str; 0], false);
        let mut sub = bus
            .subscribe(&ch, SubscribeOptions::default())
            .await
            .expect("subscribe over TLS");
        bus.publish(&ch, envelope("over tls"))
            .await
            .expect("publish");
        let got = within("a message over TLS", sub.recv()).await;
        assert_eq!(text(&got.expect("a message")), "over tls");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn amqps_with_a_custom_ca_carries_messages() {
        let tls = node().tls();
        let url = node().fresh_tls_url().expect("a virtual host");
        let bus = AmqpBus::with_options(&url, options(AmqpTls::new().ca_pem(tls.ca_pem())))
            .await
            .expect("amqps bus");
        round_trip(&bus).await;
        // Neither the URL's password nor anything of the TLS material shows in Debug output.
        let debug = format!("{bus:?} {:?}", bus.options());
        let userinfo = format!(
            "{}:{}@",
            psrpc_testkit::RABBITMQ_USER,
            psrpc_testkit::RABBITMQ_PASSWORD
        );
        assert!(!debug.contains(&userinfo), "{debug}");
        assert!(!debug.contains("BEGIN"), "{debug}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn amqps_with_a_client_certificate() {
        let tls = node().tls();
        let url = node().fresh_tls_url().expect("a virtual host");
        let settings = AmqpTls::new().ca_pem(tls.ca_pem()).client_identity(
            tls.client_cert_pem().as_bytes().to_vec(),
            tls.client_key_pem().as_bytes().to_vec(),
        );
        let debug = format!("{:?}", options(settings.clone()));
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        let bus = AmqpBus::with_options(&url, options(settings))
            .await
            .expect("amqps bus with a client certificate");
        round_trip(&bus).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_untrusted_server_certificate_is_a_clear_error() {
        let url = node().fresh_tls_url().expect("a virtual host");
        // The platform's roots only: the kit's authority is not among them.
        let err = AmqpBus::with_options(&url, options(AmqpTls::new()))
            .await
            .expect_err("an untrusted certificate must be refused");
        let msg = format!("{err}: {:?}", std::error::Error::source(&err));
        assert!(matches!(err, psrpc_amqp::AmqpBusError::Connect(_)), "{msg}");
        assert!(
            msg.to_lowercase().contains("certificate"),
            "the error should name the certificate problem: {msg}"
        );
        let userinfo = format!(
            "{}:{}@",
            psrpc_testkit::RABBITMQ_USER,
            psrpc_testkit::RABBITMQ_PASSWORD
        );
        assert!(!msg.contains(&userinfo), "credentials in the error: {msg}");
    }
}
