//! What a psrpc Client/Server pair puts on NATS, captured by a raw subscriber on `>` and
//! compared with docs/wire.md §4.2/§5 and the Go v0.7 golden captures.

mod common;

use std::time::Duration;

use common::{WAIT, bus, nats};
use futures::StreamExt;
use prost::Message as _;
use psrpc::wire::{self, ClaimRequest, ClaimResponse, Msg, Request, Response};
use psrpc::{CallOptions, Client, MethodInfo, Server};

const ECHO: MethodInfo = MethodInfo::unary("Echo");
const ECHO_ALL: MethodInfo = MethodInfo::multi("EchoAll");

/// One sniffed message.
struct Captured {
    subject: String,
    msg: Msg,
}

/// The next message, skipping the buses' own `_INBOX.` echoes (see `NatsBus::round_trip`).
async fn next_message(sniff: &mut async_nats::Subscriber) -> async_nats::Message {
    loop {
        let m = tokio::time::timeout(WAIT, sniff.next())
            .await
            .expect("timed out sniffing")
            .expect("sniffer closed");
        if m.subject.starts_with("_INBOX.") {
            assert!(m.payload.is_empty());
            continue;
        }
        return m;
    }
}

async fn next_captured(sniff: &mut async_nats::Subscriber) -> Captured {
    let m = next_message(sniff).await;
    // No headers, as with Go peers. A reply subject appears only on requests: a private inbox
    // where the broker reports "no responders" (Go peers ignore reply subjects).
    assert!(m.headers.is_none(), "headers on {}", m.subject);
    let msg = wire::decode_envelope(m.payload.clone()).expect("an envelope");
    if let Some(reply) = &m.reply {
        assert!(
            reply.starts_with("_INBOX."),
            "reply subject {reply} on {}",
            m.subject
        );
        assert_eq!(
            msg.type_url,
            wire::REQUEST_TYPE_URL,
            "reply subject on {}",
            m.subject
        );
    }
    // Byte layout as Go writes it: type_url, value, then the route key last (if any).
    let relaid = if msg.channel.is_empty() {
        wire::encode_envelope_raw(&msg.type_url, &msg.value)
    } else {
        wire::with_route_key(
            &wire::encode_envelope_raw(&msg.type_url, &msg.value),
            &msg.channel,
        )
    };
    assert_eq!(relaid, m.payload, "field layout on {}", m.subject);
    Captured {
        subject: m.subject.to_string(),
        msg,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_with_claims_and_multi_match_the_go_wire_format() {
    let server = nats();
    let sniffer = async_nats::connect(server.url()).await.unwrap();
    let mut sniff = sniffer.subscribe(">").await.unwrap();
    psrpc_nats::NatsBus::new(sniffer.clone())
        .round_trip()
        .await
        .unwrap();

    let (server_bus, client_bus) = (bus(&server).await, bus(&server).await);
    // Discovery off: its Rust-only subscriptions are not part of the Go wire counted here.
    let mut options = psrpc::ServerOptions::default();
    options.discovery.enabled = false;
    let srv = Server::with_options("Svc", server_bus.clone(), options);
    srv.register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    srv.register_unary(ECHO_ALL, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    // Like Go's server connection: `SUB SRV.Svc.Q bus` and `SUB SRV.Svc`, for all four channels.
    let stats = server_bus.stats();
    assert_eq!(stats.nats_subscriptions, 2);
    assert_eq!(stats.local_subscriptions, 4);

    let client = Client::new("Svc", client_bus.clone()).await.unwrap();
    let cid = client.id().to_owned();
    // The client's reply channels (RES, CLAIM, …) are one subject each: `CLI.Svc.<id>.RES`, ….
    let stats = client_bus.stats();
    assert!(stats.nats_subscriptions >= 2);
    assert_eq!(stats.nats_subscriptions, stats.local_subscriptions);

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

    // 1. Request on the queue subject, route key Echo.REQ.
    let c = next_captured(&mut sniff).await;
    assert_eq!(c.subject, "SRV.Svc.Q");
    assert_eq!(c.msg.type_url, "type.googleapis.com/internal.Request");
    assert_eq!(c.msg.channel, "Echo.REQ");
    let req = Request::decode(c.msg.value).unwrap();
    assert_eq!(req.client_id, cid);
    assert!(req.request_id.starts_with("REQ_") && req.request_id.len() == 16);
    assert!(!req.multi && !req.x_direct);
    assert!(req.expiry > req.sent_at);
    assert_eq!(String::decode(req.raw_request).unwrap(), "x");

    // 2. ClaimRequest to the client's CLAIM subject, no route key.
    let c = next_captured(&mut sniff).await;
    assert_eq!(c.subject, format!("CLI.Svc.{cid}.CLAIM"));
    assert_eq!(c.msg.type_url, "type.googleapis.com/internal.ClaimRequest");
    assert_eq!(c.msg.channel, "");
    let claim = ClaimRequest::decode(c.msg.value).unwrap();
    assert_eq!(claim.request_id, req.request_id);
    assert_eq!(claim.server_id, srv.id());
    assert_eq!(claim.affinity, 1.0);

    // 3. ClaimResponse to the fan-out subject (never .Q), route key Echo.RCLAIM.
    let c = next_captured(&mut sniff).await;
    assert_eq!(c.subject, "SRV.Svc");
    assert_eq!(c.msg.type_url, "type.googleapis.com/internal.ClaimResponse");
    assert_eq!(c.msg.channel, "Echo.RCLAIM");
    let chosen = ClaimResponse::decode(c.msg.value).unwrap();
    assert_eq!(chosen.request_id, req.request_id);
    assert_eq!(chosen.server_id, srv.id());

    // 4. Response to the client's RES subject, no route key.
    let c = next_captured(&mut sniff).await;
    assert_eq!(c.subject, format!("CLI.Svc.{cid}.RES"));
    assert_eq!(c.msg.type_url, "type.googleapis.com/internal.Response");
    assert_eq!(c.msg.channel, "");
    let resp = Response::decode(c.msg.value).unwrap();
    assert_eq!(resp.request_id, req.request_id);
    assert_eq!(resp.server_id, srv.id());
    assert!(resp.error.is_empty() && resp.code.is_empty());
    assert_eq!(String::decode(resp.raw_response).unwrap(), "x");

    // Multi: Request{multi} on the fan-out subject, one Response per server.
    let answers = client
        .request_multi::<String, String>(
            ECHO_ALL,
            &[],
            &"y".to_string(),
            CallOptions::new().timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].server_id, srv.id());
    assert_eq!(answers[0].result.as_deref().ok(), Some("y"));

    let c = next_captured(&mut sniff).await;
    assert_eq!(c.subject, "SRV.Svc");
    assert_eq!(c.msg.type_url, "type.googleapis.com/internal.Request");
    assert_eq!(c.msg.channel, "EchoAll.REQ");
    let req = Request::decode(c.msg.value).unwrap();
    assert!(req.multi);
    assert_eq!(req.client_id, cid);

    let c = next_captured(&mut sniff).await;
    assert_eq!(c.subject, format!("CLI.Svc.{cid}.RES"));
    assert_eq!(c.msg.type_url, "type.googleapis.com/internal.Response");
    assert_eq!(c.msg.channel, "");
    let resp = Response::decode(c.msg.value).unwrap();
    assert_eq!(resp.request_id, req.request_id);
    assert_eq!(resp.server_id, srv.id());
    assert_eq!(String::decode(resp.raw_response).unwrap(), "y");

    // The multi call ended at its deadline, not by cancellation: nothing else was sent.
    client_bus.round_trip().await.unwrap();
    server_bus.round_trip().await.unwrap();
    let marker = async_nats::connect(server.url()).await.unwrap();
    marker
        .publish("marker.end", bytes::Bytes::new())
        .await
        .unwrap();
    let m = next_message(&mut sniff).await;
    assert_eq!(m.subject.as_str(), "marker.end");
}
