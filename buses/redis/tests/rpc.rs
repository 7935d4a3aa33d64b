//! psrpc clients and servers over the Redis bus: what goes on the wire (compared with the Go
//! captures' shape, docs/wire.md §5) and an end-to-end smoke test.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use common::{PATIENCE, bus, server};
use futures::StreamExt;
use prost::Message;
use psrpc::wire::{self, ClaimRequest, ClaimResponse, Request, Response};
use psrpc::{CallOptions, Client, ErrorCode, MethodInfo, Server};

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const ECHO_ALL: MethodInfo = MethodInfo::multi("EchoAll");
const EVENTS: MethodInfo = MethodInfo::subscription("Events");
const QUEUE_EVENTS: MethodInfo = MethodInfo::queue_subscription("QueueEvents");

/// Everything published on the server, seen through `PSUBSCRIBE *` as the Go capture did.
struct Sniffer {
    messages: redis::aio::PubSubStream,
}

impl Sniffer {
    async fn start(server: &psrpc_testkit::RedisServer) -> Self {
        let client = redis::Client::open(server.url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        // Returns once the server confirmed the pattern subscription.
        pubsub.psubscribe("*").await.unwrap();
        Sniffer {
            messages: pubsub.into_on_message(),
        }
    }

    /// The next message: (channel, decoded envelope). Skips the Rust-only discovery
    /// announcements: a heartbeat may come at any moment, and Go peers never see them.
    async fn next(&mut self) -> (String, wire::Msg) {
        let discovery = format!("{}|", psrpc::discovery::DISCOVERY_SERVICE);
        let msg = loop {
            let msg = tokio::time::timeout(PATIENCE, self.messages.next())
                .await
                .expect("sniffer timed out")
                .expect("sniffer stream ended");
            if !msg.get_channel_name().starts_with(&discovery) {
                break msg;
            }
        };
        let channel = msg.get_channel_name().to_owned();
        let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
        let envelope = wire::decode_envelope(payload.clone()).expect("payload is a Msg");
        // Redis carries no route key (docs/wire.md §1), and the bytes are canonical (Go's encoding).
        assert!(
            envelope.channel.is_empty(),
            "route key on Redis: {envelope:?}"
        );
        assert_eq!(
            wire::encode_envelope_raw(&envelope.type_url, &envelope.value),
            payload,
            "non-canonical envelope on {channel}"
        );
        (channel, envelope)
    }

    async fn expect<M: Message + Default>(&mut self, channel: &str, type_url: &str) -> M {
        let (got_channel, envelope) = self.next().await;
        assert_eq!(got_channel, channel);
        assert_eq!(envelope.type_url, type_url, "on {channel}");
        M::decode(envelope.value).expect("inner message decodes")
    }
}

fn string_value(s: &str) -> Vec<u8> {
    s.to_string().encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_shape_matches_go_for_claimed_unary_and_multi() {
    let redis = server();
    let mut sniffer = Sniffer::start(&redis).await;
    let servers = [
        Server::new("Svc", bus(&redis).await),
        Server::new("Svc", bus(&redis).await),
    ];
    for s in &servers {
        s.register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
            .await
            .unwrap();
        s.register_unary(ECHO_ALL, &[], |_ctx, req: String| async move { Ok(req) })
            .await
            .unwrap();
    }
    let client = Client::new("Svc", bus(&redis).await).await.unwrap();
    let cli = client.id().to_owned();
    let server_ids: BTreeSet<String> = servers.iter().map(|s| s.id().to_owned()).collect();

    // Unary with the Go-compatible claim exchange: four messages.
    let reply: String = client
        .request(
            ECHO,
            &[],
            &"x".to_string(),
            CallOptions::new().direct(false),
        )
        .await
        .unwrap();
    assert_eq!(reply, "x");

    let req: Request = sniffer.expect("Svc|Echo|REQ", wire::REQUEST_TYPE_URL).await;
    assert!(req.request_id.starts_with("REQ_") && req.request_id.len() == 16);
    assert_eq!(req.client_id, cli);
    assert!(!req.multi);
    assert!(!req.x_direct, "a claimed call must look like Go's");
    assert!(req.expiry > req.sent_at);
    assert_eq!(req.raw_request.as_ref(), string_value("x"));

    let claim: ClaimRequest = sniffer
        .expect(&format!("Svc|{cli}|CLAIM"), wire::CLAIM_REQUEST_TYPE_URL)
        .await;
    assert_eq!(claim.request_id, req.request_id);
    assert!(server_ids.contains(&claim.server_id));
    assert_eq!(claim.affinity, 1.0);

    let chosen: ClaimResponse = sniffer
        .expect("Svc|Echo|RCLAIM", wire::CLAIM_RESPONSE_TYPE_URL)
        .await;
    assert_eq!(chosen.request_id, req.request_id);
    assert_eq!(chosen.server_id, claim.server_id);

    let resp: Response = sniffer
        .expect(&format!("Svc|{cli}|RES"), wire::RESPONSE_TYPE_URL)
        .await;
    assert_eq!(resp.request_id, req.request_id);
    assert_eq!(resp.server_id, claim.server_id);
    assert!(resp.error.is_empty() && resp.code.is_empty());
    assert_eq!(resp.raw_response.as_ref(), string_value("x"));

    // Multi: one request, one response per server, nothing else (no claims).
    let results = client
        .request_multi::<String, String>(
            ECHO_ALL,
            &[],
            &"y".to_string(),
            CallOptions::new().timeout(Duration::from_millis(800)),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    let answered: BTreeSet<String> = results
        .iter()
        .map(|r| {
            assert_eq!(r.result.as_deref().unwrap(), "y");
            r.server_id.clone()
        })
        .collect();
    assert_eq!(answered, server_ids);

    let req: Request = sniffer
        .expect("Svc|EchoAll|REQ", wire::REQUEST_TYPE_URL)
        .await;
    assert!(req.multi);
    assert_eq!(req.client_id, cli);
    let mut responders = BTreeSet::new();
    for _ in 0..2 {
        let resp: Response = sniffer
            .expect(&format!("Svc|{cli}|RES"), wire::RESPONSE_TYPE_URL)
            .await;
        assert_eq!(resp.request_id, req.request_id);
        assert_eq!(resp.raw_response.as_ref(), string_value("y"));
        responders.insert(resp.server_id);
    }
    assert_eq!(responders, server_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_smoke_over_redis() {
    let redis = server();
    let region = "eu-west.1/🚀";
    let s1 = Server::new("Smoke", bus(&redis).await);
    let s2 = Server::new("Smoke", bus(&redis).await);
    for s in [&s1, &s2] {
        let id = s.id().to_owned();
        s.register_unary(ECHO, &[], |_ctx, req: String| async move {
            Ok(format!("echo {req}"))
        })
        .await
        .unwrap();
        s.register_unary(ECHO_ALL, &[], move |_ctx, req: String| {
            let id = id.clone();
            async move { Ok(format!("{id} {req}")) }
        })
        .await
        .unwrap();
    }
    s1.register_unary(ECHO, &[region], |_ctx, req: String| async move {
        Ok(format!("regional {req}"))
    })
    .await
    .unwrap();

    let client_bus = bus(&redis).await;
    let client = Client::new("Smoke", client_bus.clone()).await.unwrap();

    // Unary, direct (Rust extension) and claimed (Go exchange).
    for direct in [true, false] {
        for i in 0..5 {
            let reply: String = client
                .request(
                    ECHO,
                    &[],
                    &format!("{i}"),
                    CallOptions::new().direct(direct),
                )
                .await
                .unwrap();
            assert_eq!(reply, format!("echo {i}"));
        }
    }

    // Multi: both servers answer.
    let results = client
        .request_multi::<String, String>(
            ECHO_ALL,
            &[],
            &"m".to_string(),
            CallOptions::new().timeout(Duration::from_millis(800)),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    let mut got: Vec<String> = results.into_iter().map(|r| r.result.unwrap()).collect();
    got.sort();
    let mut want = vec![format!("{} m", s1.id()), format!("{} m", s2.id())];
    want.sort();
    assert_eq!(got, want);

    // Topic call, on a topic that needs sanitising; a topic nobody serves fails fast.
    let reply: String = client
        .request(ECHO, &[region], &"t".to_string(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply, "regional t");
    let err = client
        .request::<String, String>(
            ECHO,
            &["nowhere"],
            &"t".to_string(),
            CallOptions::new().timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded
        ),
        "{err:?}"
    );

    // Subscriptions: fan-out reaches every subscriber, queue reaches one.
    let other_client = Client::new("Smoke", bus(&redis).await).await.unwrap();
    let mut sub_a = client.subscribe::<String>(EVENTS, &["r"]).await.unwrap();
    let mut sub_b = other_client
        .subscribe::<String>(EVENTS, &["r"])
        .await
        .unwrap();
    s1.publish(EVENTS, &["r"], &"evt".to_string())
        .await
        .unwrap();
    for sub in [&mut sub_a, &mut sub_b] {
        let msg = tokio::time::timeout(PATIENCE, sub.recv()).await.unwrap();
        assert_eq!(msg.as_deref(), Some("evt"));
    }

    let mut q_a = client.subscribe::<String>(QUEUE_EVENTS, &[]).await.unwrap();
    let mut q_b = other_client
        .subscribe::<String>(QUEUE_EVENTS, &[])
        .await
        .unwrap();
    for i in 0..4 {
        s2.publish(QUEUE_EVENTS, &[], &format!("q{i}"))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 4 {
        let msg = tokio::time::timeout(PATIENCE, async {
            tokio::select! {
                m = q_a.recv() => m,
                m = q_b.recv() => m,
            }
        })
        .await
        .expect("queue message")
        .expect("subscription open");
        got.push(msg);
    }
    got.sort();
    assert_eq!(got, ["q0", "q1", "q2", "q3"]);
    assert_eq!(client_bus.stats().lock_errors, 0);

    s1.shutdown().await;
    s2.shutdown().await;
}
