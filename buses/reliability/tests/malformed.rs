//! Bad input on every channel kind, published from another connection: garbage bytes,
//! truncated envelopes, wrong type URLs, huge declared lengths, expired requests and replies
//! for unknown IDs, on the servers' channels (REQ, RCLAIM, STR) and on a client's (RES,
//! CLAIM, STR).
//!
//! Checked: nothing panics, each payload is counted exactly once (server `stats()`:
//! malformed / expired; client `stats()`: malformed / unroutable; on NATS a payload whose
//! route key cannot be read is counted by the bus as unroutable before any server sees it),
//! and normal calls and streams work afterwards. Prints a one-line JSON summary.

#[macro_use]
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Broker, Kind, PATIENCE, TestBus, wait_until, within};
use prost::Message;
use psrpc::stream::Stream;
use psrpc::wire::{self, ClaimRequest, ClaimResponse, Request, Response, StreamOpen};
use psrpc::{CallOptions, Channel, Client, MethodInfo, Server};

const SVC: &str = "Malformed";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const CHAT: MethodInfo = MethodInfo::stream("Chat");

/// A channel's name in the report, the channel, and the payloads to publish on it.
type Case = (&'static str, Channel, Vec<(&'static str, Bytes)>);

/// A varint, for hand-made length prefixes.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Bad payloads that fit any channel whose messages have type URL `type_url`, and a valid
/// message of that type to cut short.
fn bad_payloads(type_url: &str, valid: Bytes) -> Vec<(&'static str, Bytes)> {
    let mut huge_envelope = vec![0x0a, 0x03, b'a', b'b', b'c', 0x12];
    huge_envelope.extend(varint(1 << 60));
    huge_envelope.extend(b"tail");
    let mut huge_inner = vec![0x0a];
    huge_inner.extend(varint(u64::from(u32::MAX)));
    huge_inner.extend(b"x");
    vec![
        (
            "garbage",
            Bytes::from_static(b"\xff\xfe\xfd garbage \x80\x80"),
        ),
        ("truncated", valid.slice(..valid.len() / 2)),
        (
            "wrong_type_url",
            wire::encode_envelope_raw("type.googleapis.com/evil.Thing", &valid),
        ),
        ("huge_envelope_length", Bytes::from(huge_envelope)),
        (
            "inner_garbage",
            wire::encode_envelope_raw(type_url, b"\xff\xff\xff"),
        ),
        (
            "huge_inner_length",
            wire::encode_envelope_raw(type_url, &huge_inner),
        ),
    ]
}

fn request(client_id: &str, expiry: i64) -> Request {
    Request {
        request_id: "REQ_hostile00001".into(),
        client_id: client_id.into(),
        sent_at: psrpc::wire::now_unix_nanos(),
        expiry,
        raw_request: Bytes::from("x".to_string().encode_to_vec()),
        ..Default::default()
    }
}

fn stream_open(client_id: &str, expiry: i64) -> wire::StreamFrame {
    wire::StreamFrame {
        stream_id: "STR_hostile00001".into(),
        request_id: "REQ_hostile00002".into(),
        sent_at: psrpc::wire::now_unix_nanos(),
        expiry,
        body: Some(wire::stream_frame::Body::Open(StreamOpen {
            node_id: client_id.into(),
            ..Default::default()
        })),
    }
}

/// A counter snapshot: what the server, the client and the server's bus have counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    server_malformed: u64,
    server_expired: u64,
    server_bus_unroutable: u64,
    client_malformed: u64,
    client_unroutable: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.server_malformed
            + self.server_expired
            + self.server_bus_unroutable
            + self.client_malformed
            + self.client_unroutable
    }

    /// The name of the one counter that moved from `before`.
    fn moved(&self, before: &Counts) -> &'static str {
        let deltas = [
            (
                "server_malformed",
                self.server_malformed - before.server_malformed,
            ),
            (
                "server_expired",
                self.server_expired - before.server_expired,
            ),
            (
                "bus_unroutable",
                self.server_bus_unroutable - before.server_bus_unroutable,
            ),
            (
                "client_malformed",
                self.client_malformed - before.client_malformed,
            ),
            (
                "client_unroutable",
                self.client_unroutable - before.client_unroutable,
            ),
        ];
        let moved: Vec<_> = deltas.iter().filter(|(_, d)| *d > 0).collect();
        assert_eq!(moved.len(), 1, "{deltas:?}");
        moved[0].0
    }
}

async fn garbage_on_every_channel_is_counted(kind: Kind) {
    let broker = Broker::start(kind);
    let server_bus = broker.bus().await;
    // Discovery off: its own subscriptions would count the garbage too.
    let mut options = psrpc::ServerOptions::default();
    options.discovery.enabled = false;
    let server = Server::with_options(SVC, server_bus.arc(), options);
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, mut stream: Stream<String, String>| async move {
                while let Some(msg) = stream.recv().await {
                    stream.send(&msg?).await?;
                }
                Ok(())
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, broker.bus().await.arc()).await.unwrap();
    // The attacker publishes from a connection of its own.
    let attacker: TestBus = broker.bus().await;
    let attacker = attacker.arc();
    let counts = || {
        let (s, c) = (server.stats(), client.stats());
        Counts {
            server_malformed: s.malformed,
            server_expired: s.expired,
            server_bus_unroutable: server_bus.unroutable(),
            client_malformed: c.malformed,
            client_unroutable: c.unroutable,
        }
    };

    let now = psrpc::wire::now_unix_nanos();
    let later = now + 60_000_000_000;
    let past = now - 1_000_000_000;
    let id = client.id().to_owned();
    let enc = |type_url, msg: &dyn Fn() -> Vec<u8>| wire::encode_envelope_raw(type_url, &msg());
    let valid_request = enc(wire::REQUEST_TYPE_URL, &|| {
        request(&id, later).encode_to_vec()
    });
    let valid_claim_response = enc(wire::CLAIM_RESPONSE_TYPE_URL, &|| {
        ClaimResponse {
            request_id: "REQ_hostile00003".into(),
            server_id: "SRV_nobody".into(),
            x_cancel: false,
        }
        .encode_to_vec()
    });
    let valid_open = enc(wire::STREAM_TYPE_URL, &|| {
        stream_open(&id, later).encode_to_vec()
    });
    let valid_response = enc(wire::RESPONSE_TYPE_URL, &|| {
        Response {
            request_id: "REQ_unknown00001".into(),
            server_id: "SRV_nobody".into(),
            ..Default::default()
        }
        .encode_to_vec()
    });
    let valid_claim = enc(wire::CLAIM_REQUEST_TYPE_URL, &|| {
        ClaimRequest {
            request_id: "REQ_unknown00002".into(),
            server_id: "SRV_nobody".into(),
            affinity: 1.0,
        }
        .encode_to_vec()
    });
    let unknown_frame = enc(wire::STREAM_TYPE_URL, &|| {
        wire::StreamFrame {
            stream_id: "STR_unknown00001".into(),
            request_id: "REQ_unknown00003".into(),
            body: Some(wire::stream_frame::Body::Ack(Default::default())),
            ..Default::default()
        }
        .encode_to_vec()
    });

    let mut cases: Vec<Case> = vec![
        (
            "REQ",
            Channel::request(SVC, ECHO.name(), [""; 0], ECHO.is_queued()),
            bad_payloads(wire::REQUEST_TYPE_URL, valid_request.clone()),
        ),
        (
            "RCLAIM",
            Channel::claim_response(SVC, ECHO.name(), [""; 0]),
            bad_payloads(wire::CLAIM_RESPONSE_TYPE_URL, valid_claim_response),
        ),
        (
            "STR(server)",
            Channel::server_stream(SVC, CHAT.name(), [""; 0]),
            bad_payloads(wire::STREAM_TYPE_URL, valid_open),
        ),
        (
            "RES",
            Channel::response(SVC, id.as_str()),
            bad_payloads(wire::RESPONSE_TYPE_URL, valid_response.clone()),
        ),
        (
            "CLAIM",
            Channel::claim(SVC, id.as_str()),
            bad_payloads(wire::CLAIM_REQUEST_TYPE_URL, valid_claim.clone()),
        ),
        (
            "STR(client)",
            Channel::client_stream(SVC, id.as_str()),
            bad_payloads(wire::STREAM_TYPE_URL, unknown_frame.clone()),
        ),
    ];
    // Well-formed but dead or unknown.
    cases[0].2.push((
        "expired",
        enc(wire::REQUEST_TYPE_URL, &|| {
            request(&id, past).encode_to_vec()
        }),
    ));
    cases[2].2.push((
        "expired_open",
        enc(wire::STREAM_TYPE_URL, &|| {
            stream_open(&id, past).encode_to_vec()
        }),
    ));
    cases[3].2.push(("unknown_request_id", valid_response));
    cases[4].2.push(("unknown_request_id", valid_claim));
    cases[5].2.push(("unknown_stream_id", unknown_frame));

    let mut report = Vec::new();
    let mut sent = 0;
    for (channel_name, channel, payloads) in &cases {
        for (what, payload) in payloads {
            let before = counts();
            attacker.publish(channel, payload.clone()).await.unwrap();
            sent += 1;
            // Each payload is counted exactly once, somewhere.
            wait_until(
                &format!("{what} on {channel_name} to be counted"),
                PATIENCE,
                || counts().total() > before.total(),
            )
            .await;
            let after = counts();
            assert_eq!(
                after.total(),
                before.total() + 1,
                "{what} on {channel_name}: {before:?} -> {after:?}"
            );
            report.push(format!(
                "\"{channel_name}/{what}\":\"{}\"",
                after.moved(&before)
            ));
        }
    }
    let end = counts();
    assert_eq!(end.total(), sent);

    // Nothing else was disturbed: calls of both kinds and a stream still work.
    for direct in [true, false] {
        let reply: String = within(
            "a normal call",
            PATIENCE,
            client.request(
                ECHO,
                &[],
                &"fine".to_owned(),
                CallOptions::new().direct(direct),
            ),
        )
        .await
        .unwrap();
        assert_eq!(reply, "fine");
    }
    let mut stream = within(
        "a stream to open",
        PATIENCE,
        client.open_stream::<String, String>(CHAT, &[], CallOptions::new()),
    )
    .await
    .unwrap();
    stream.send(&"still here".to_owned()).await.unwrap();
    let echoed = within("a stream echo", PATIENCE, stream.recv()).await;
    assert_eq!(echoed.unwrap().unwrap(), "still here");
    stream.close(None).await.unwrap();
    assert_eq!(counts(), end, "normal traffic counted as bad");
    assert_eq!(client.stats().pending, 0);
    wait_until("handlers to finish", Duration::from_secs(5), || {
        server.in_flight() == 0
    })
    .await;
    println!(
        "{{\"test\":\"garbage_on_every_channel_is_counted\",\"bus\":\"{}\",\"payloads\":{sent},\
         \"counted_by\":{{{}}}}}",
        kind.name(),
        report.join(",")
    );
}

on_nats_and_redis!(garbage_on_every_channel_is_counted);
