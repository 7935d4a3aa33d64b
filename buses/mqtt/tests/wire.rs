//! What a psrpc client/server pair puts on MQTT, watched by a raw MQTT 3.1.1 client (as Go
//! psrpc speaks) subscribed to `#`, checked against Go's rules: topic = pipe spelling with
//! `|` → `/` and `+` → `-`, payload = the envelope without route key, queue subscribers in the
//! shared subscription group `$share/psrpc/`.

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::{Raw, bus, eventually, server, try_recv};
use psrpc::bus::{Bus, SubscribeOptions};
use psrpc::wire;
use psrpc::{CallOptions, Channel, Client, MethodInfo, Server};
use psrpc_mqtt::mqtt_topic;

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const ECHO_ALL: MethodInfo = MethodInfo::multi("EchoAll");

/// The next psrpc message the watcher sees, skipping the buses' own probe and flush topics and
/// the Rust-only discovery announcements (a heartbeat may come at any moment; Go peers never
/// subscribe to them, so they are not part of the Go wire checked here).
async fn next_psrpc(watcher: &mut Raw) -> (String, wire::Msg) {
    let discovery = format!("{}/", psrpc::discovery::DISCOVERY_SERVICE);
    loop {
        let (topic, payload) = watcher.recv().await;
        if topic.starts_with("psrpc.") || topic.starts_with(&discovery) {
            continue;
        }
        let msg = wire::decode_envelope(payload).expect("an envelope");
        assert!(msg.channel.is_empty(), "a route key on {topic}");
        return (topic, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_exchange_and_multi_call_topics_follow_go() {
    let server_broker = server();
    let mut watcher = Raw::connect(&server_broker).await;
    watcher.subscribe("#").await;

    let server = Server::new("Greeter", bus(&server_broker).await);
    server
        .register_unary(
            ECHO,
            &["eu-west"],
            |_ctx, req: String| async move { Ok(req) },
        )
        .await
        .unwrap();
    server
        .register_unary(ECHO_ALL, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    let client = Client::new("Greeter", bus(&server_broker).await)
        .await
        .unwrap();

    // A claimed queue call (as Go clients make them): request, claim, claim response, response.
    let reply: String = client
        .request(
            ECHO,
            &["eu-west"],
            &"hi".to_string(),
            CallOptions::new().direct(false),
        )
        .await
        .unwrap();
    assert_eq!(reply, "hi");
    let expected = [
        ("Greeter/Echo/euu-002dwest/REQ", wire::REQUEST_TYPE_URL),
        (
            &*mqtt_topic(&Channel::claim("Greeter", client.id())),
            wire::CLAIM_REQUEST_TYPE_URL,
        ),
        (
            "Greeter/Echo/euu-002dwest/RCLAIM",
            wire::CLAIM_RESPONSE_TYPE_URL,
        ),
        (
            &*mqtt_topic(&Channel::response("Greeter", client.id())),
            wire::RESPONSE_TYPE_URL,
        ),
    ];
    for (topic, type_url) in expected {
        let (seen, msg) = next_psrpc(&mut watcher).await;
        assert_eq!(seen, topic);
        assert_eq!(msg.type_url, type_url, "on {seen}");
    }
    assert!(
        mqtt_topic(&Channel::claim("Greeter", client.id())).ends_with("/CLAIM"),
        "client channels are Svc/<client id>/CLAIM"
    );

    // A multi call: one request, one response.
    let results = client
        .request_multi::<_, String>(ECHO_ALL, &[], &"all".to_string(), CallOptions::new())
        .await
        .unwrap()
        .collect_all()
        .await;
    assert_eq!(results.len(), 1);
    let (topic, msg) = next_psrpc(&mut watcher).await;
    assert_eq!(topic, "Greeter/EchoAll/REQ");
    assert_eq!(msg.type_url, wire::REQUEST_TYPE_URL);
    let (topic, msg) = next_psrpc(&mut watcher).await;
    assert_eq!(
        topic,
        mqtt_topic(&Channel::response("Greeter", client.id()))
    );
    assert_eq!(msg.type_url, wire::RESPONSE_TYPE_URL);
}

/// Queue subscribers of the bus and raw `$share/psrpc/<topic>` subscribers (Go's queue
/// members) form one group: each message reaches exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_subscribers_share_the_psrpc_group_with_other_clients() {
    let broker = server();
    let ch = Channel::request("Svc", "Jobs", Vec::<String>::new(), true);
    let filter = format!("$share/psrpc/{}", mqtt_topic(&ch));
    assert_eq!(filter, "$share/psrpc/Svc/Jobs/REQ");
    let mut raws = [Raw::connect(&broker).await, Raw::connect(&broker).await];
    for raw in &mut raws {
        raw.subscribe(&filter).await;
    }
    let member = bus(&broker).await;
    let mut sub = member
        .subscribe(&ch, SubscribeOptions::default())
        .await
        .unwrap();
    let publisher = bus(&broker).await;
    const N: usize = 60;
    for i in 0..N {
        publisher
            .publish(&ch, Bytes::from(format!("{i}")))
            .await
            .unwrap();
    }
    let mut per_member = [0usize; 3];
    let mut seen = Vec::new();
    eventually("every message once", || {
        for (i, raw) in raws.iter_mut().enumerate() {
            while let Some((topic, payload)) = raw.try_recv() {
                assert_eq!(topic, "Svc/Jobs/REQ");
                seen.push(String::from_utf8(payload.to_vec()).unwrap());
                per_member[i] += 1;
            }
        }
        while let Some(msg) = try_recv(&mut sub) {
            seen.push(msg);
            per_member[2] += 1;
        }
        let done = seen.len() >= N;
        async move { done }
    })
    .await;
    let distinct: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), N, "no message twice: {per_member:?}");
    assert_eq!(distinct.len(), N);
    assert!(per_member.iter().all(|&n| n > 0), "{per_member:?}");
}

/// Sanitised parts never carry MQTT's separators or wildcards, so no topic of a user can
/// address another channel.
#[test]
fn hostile_topics_stay_in_their_level() {
    for hostile in ["a/b", "#", "+", "$SYS", "x/+/#", "a|b", "-", "u-002f"] {
        let ch = Channel::request("Svc", "Method", [hostile], false);
        let topic = mqtt_topic(&ch);
        let levels: Vec<_> = topic.split('/').collect();
        assert_eq!(levels.len(), 4, "{hostile:?} → {topic}");
        assert_eq!((levels[0], levels[1], levels[3]), ("Svc", "Method", "REQ"));
        assert!(!topic.contains(['#', '+', '$']), "{hostile:?} → {topic}");
    }
    // `-` (escaped as u-002d) and the literal text "u-002d" stay distinct.
    let dash = mqtt_topic(&Channel::request("S", "M", ["-"], false));
    let text = mqtt_topic(&Channel::request("S", "M", ["u-002d"], false));
    assert_ne!(dash, text);
}
