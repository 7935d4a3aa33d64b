//! Security basics on real brokers.
//!
//! - Credentials pass through: a NATS server with user and password and a Redis server with a
//!   password carry a real call; connecting without them fails with an error, not a hang.
//! - Channel names are built only through the sanitiser: a hostile topic (`a|b|RES`, `a.b.>`,
//!   `*`, …) cannot address another channel. Subscribers on the channels a naive concatenation
//!   would hit receive nothing, servers of those channels get no call, and every call reaches
//!   the server registered on exactly its topic.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Broker, Kind, PATIENCE, TestBus, within};
use psrpc::bus::SubscribeOptions;
use psrpc::{CallOptions, Channel, Client, MethodInfo, Server};

const SVC: &str = "Secure";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const REGION: MethodInfo = MethodInfo::unary("Region");
const WHERE: MethodInfo = MethodInfo::affinity("Where");

async fn credentials_pass_through(kind: Kind) {
    let broker = Broker::start_with_credentials(kind, "app", "s3cret-Pass");
    let server = Server::new(SVC, broker.bus().await.arc());
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move {
            Ok(format!("ok:{req}"))
        })
        .await
        .unwrap();
    let client = Client::new(SVC, broker.bus().await.arc()).await.unwrap();
    let reply: String = within(
        "a call with credentials",
        PATIENCE,
        client.request(ECHO, &[], &"x".to_owned(), CallOptions::new()),
    )
    .await
    .unwrap();
    assert_eq!(reply, "ok:x");

    // Without credentials, or with wrong ones, the connection is refused promptly.
    let wrong = match kind {
        Kind::Nats => broker.url().replace("s3cret-Pass", "wrong"),
        Kind::Redis => broker.url().replace("s3cret-Pass", "wrong"),
    };
    for url in [broker.anonymous_url(), wrong] {
        let refused = within(
            "a refused connection",
            PATIENCE,
            TestBus::connect(kind, &url),
        )
        .await;
        let err = refused.err().unwrap_or_else(|| panic!("{url} connected"));
        println!(
            "{{\"test\":\"credentials_pass_through\",\"bus\":\"{}\",\"refused\":{:?}}}",
            kind.name(),
            err
        );
    }
}

/// A naive spelling would put a hostile topic's separators into the channel name; the
/// channels it would then hit, and benign topics that collide with them.
const HOSTILE: [&str; 6] = ["a|b|RES", "a.b.>", "*", ">", "a.b", "eu|REQ"];
const VICTIMS: [&[&str]; 5] = [&["a", "b", "RES"], &["a", "b"], &["a"], &["eu"], &["x"]];

async fn hostile_topics_cannot_address_other_channels(kind: Kind) {
    let broker = Broker::start(kind);
    let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut servers = Vec::new();
    let topic_sets: Vec<Vec<&str>> = HOSTILE
        .iter()
        .map(|t| vec![*t])
        .chain(VICTIMS.iter().map(|v| v.to_vec()))
        .collect();
    // One server per topic tuple, each on its own connection, for a queue and a fan-out method.
    for topics in &topic_sets {
        let server = Server::new(SVC, broker.bus().await.arc());
        let name = topics.join(",");
        for method in [REGION, WHERE] {
            let (calls, name) = (calls.clone(), name.clone());
            server
                .register_unary(method, topics, move |_ctx, _req: String| {
                    *calls.lock().unwrap().entry(name.clone()).or_default() += 1;
                    let name = name.clone();
                    async move { Ok(name) }
                })
                .await
                .unwrap();
        }
        servers.push(server);
    }

    // Spies on every channel a naive concatenation of a hostile topic could reach: the
    // victims' request and claim channels, and a client's reply channels named like them.
    let spy_bus = broker.bus().await;
    let mut spies = Vec::new();
    for victim in VICTIMS {
        for method in [REGION, WHERE] {
            // Plain (not queue) subscriptions, so a spy sees every message instead of
            // competing with the victim server for it: on NATS a plain subscription on the
            // `.Q` subject, on Redis the same channel name.
            let mut request_topics: Vec<&str> = victim.to_vec();
            if kind == Kind::Nats && method.is_queued() {
                request_topics.push("Q");
            }
            for ch in [
                Channel::request(SVC, method.name(), request_topics, false),
                Channel::claim_response(SVC, method.name(), victim.iter().copied()),
            ] {
                spies.push((
                    ch.clone(),
                    spy_bus
                        .arc()
                        .subscribe(&ch, SubscribeOptions::default())
                        .await
                        .unwrap(),
                ));
            }
        }
    }
    for client_id in ["a", "b", "eu", "RES", "REQ"] {
        let ch = Channel::response(SVC, client_id);
        spies.push((
            ch.clone(),
            spy_bus
                .arc()
                .subscribe(&ch, SubscribeOptions::default())
                .await
                .unwrap(),
        ));
    }

    let client = Client::new(SVC, broker.bus().await.arc()).await.unwrap();
    let opts = || CallOptions::new().timeout(Duration::from_secs(5));
    for topic in HOSTILE {
        for direct in [true, false] {
            let reply: String = within(
                "a call on a hostile topic",
                PATIENCE,
                client.request(REGION, &[topic], &String::new(), opts().direct(direct)),
            )
            .await
            .unwrap();
            assert_eq!(
                reply, topic,
                "a queue call on {topic:?} reached another server"
            );
        }
        let reply: String = within(
            "an affinity call on a hostile topic",
            PATIENCE,
            client.request(WHERE, &[topic], &String::new(), opts()),
        )
        .await
        .unwrap();
        assert_eq!(
            reply, topic,
            "an affinity call on {topic:?} reached another server"
        );
    }
    // The calls above are done, so anything they published has been delivered or never will
    // be; a round trip through every spy channel makes sure deliveries are not in flight.
    // An envelope, so that NATS routing can read the route key appended to it.
    let marker = psrpc::wire::encode_envelope_raw("type.googleapis.com/spy.Marker", b"m");
    let publisher = spy_bus.arc();
    for (ch, sub) in &mut spies {
        publisher.publish(ch, marker.clone()).await.unwrap();
        let first = tokio::time::timeout(PATIENCE, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("no marker on {} / {}", ch.pipe_name(), ch.nats_subject()))
            .unwrap();
        // NATS appends the route key: compare the envelopes' contents.
        let first = psrpc::wire::decode_envelope(first).unwrap();
        assert_eq!(
            (first.type_url.as_str(), first.value.as_ref()),
            ("type.googleapis.com/spy.Marker", &b"m"[..]),
            "a hostile call reached {} / {}",
            ch.pipe_name(),
            ch.nats_subject()
        );
    }
    {
        let calls = calls.lock().unwrap();
        for victim in VICTIMS {
            assert_eq!(
                calls.get(&victim.join(",")),
                None,
                "victim {victim:?} got a call"
            );
        }
    }
    // The victims' own calls still reach them, and only them.
    for victim in VICTIMS {
        let reply: String = within(
            "a call on a benign topic",
            PATIENCE,
            client.request(REGION, victim, &String::new(), opts()),
        )
        .await
        .unwrap();
        assert_eq!(reply, victim.join(","));
    }
    println!(
        "{{\"test\":\"hostile_topics_cannot_address_other_channels\",\"bus\":\"{}\",\
         \"hostile_topics\":{},\"spied_channels\":{},\"misrouted\":0}}",
        kind.name(),
        HOSTILE.len(),
        spies.len()
    );
}

on_nats_and_redis!(
    credentials_pass_through,
    hostile_topics_cannot_address_other_channels
);
