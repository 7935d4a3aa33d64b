//! Regression tests for faults found by the reliability suite (`buses/reliability`): a caller
//! is never held past its deadline by a bus that cannot publish, and garbage on a client's
//! reply channels is counted, never dropped silently.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use psrpc::bus::{Bus, BusError, LocalBus, NoReceivers, SubscribeOptions, Subscription};
use psrpc::channel::ChannelKind;
use psrpc::{CallOptions, Channel, Client, Error, MethodInfo, Server, wire};

const SVC: &str = "Faults";
const ECHO: MethodInfo = MethodInfo::unary("Echo");
const GATHER: MethodInfo = MethodInfo::multi("Gather");
const CHAT: MethodInfo = MethodInfo::stream("Chat");

/// A bus whose publishes to some channel kinds never complete, as a broker client waiting
/// for a reconnect (Redis waits up to its response timeout, 3 s by default).
struct StuckBus {
    inner: LocalBus,
    stuck: fn(ChannelKind) -> bool,
}

impl Bus for StuckBus {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        if (self.stuck)(channel.kind()) {
            return Box::pin(std::future::pending());
        }
        self.inner.publish(channel, payload)
    }

    fn publish_watched<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<NoReceivers, BusError>> {
        if (self.stuck)(channel.kind()) {
            return Box::pin(std::future::pending());
        }
        self.inner.publish_watched(channel, payload)
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        self.inner.subscribe(channel, options)
    }

    fn name(&self) -> &'static str {
        "stuck"
    }
}

fn short() -> CallOptions {
    CallOptions::new().timeout(Duration::from_millis(100))
}

/// Fails (instead of hanging the test) when a call outlives its 100 ms deadline by far.
async fn bounded<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .expect("the call hung past its deadline")
}

#[tokio::test(start_paused = true)]
async fn a_stuck_request_publish_ends_the_call_at_its_deadline() {
    let bus = StuckBus {
        inner: LocalBus::new(),
        stuck: |kind| kind.is_server_side(),
    };
    let client = Client::new(SVC, bus).await.unwrap();
    for direct in [true, false] {
        let err =
            bounded(client.request::<_, String>(ECHO, &[], &String::new(), short().direct(direct)))
                .await
                .unwrap_err();
        assert_eq!(err, Error::timed_out(), "direct={direct}");
    }
    let err = bounded(client.request_multi::<_, String>(GATHER, &[], &String::new(), short()))
        .await
        .unwrap_err();
    assert_eq!(err, Error::timed_out());
    let err = bounded(client.open_stream::<String, String>(CHAT, &[], short()))
        .await
        .unwrap_err();
    assert_eq!(err, Error::timed_out());
    assert_eq!(client.stats().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_claim_response_ends_the_call_at_its_deadline() {
    let local = LocalBus::new();
    let server = Server::new(SVC, local.clone());
    server
        .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(req) })
        .await
        .unwrap();
    // Requests go through; the caller's choice among the claims does not.
    let bus = StuckBus {
        inner: local,
        stuck: |kind| kind == ChannelKind::ClaimResponse,
    };
    let client = Client::new(SVC, bus).await.unwrap();
    let err =
        bounded(client.request::<_, String>(ECHO, &[], &String::new(), short().direct(false)))
            .await
            .unwrap_err();
    assert_eq!(err, Error::timed_out());
}

#[tokio::test]
async fn garbage_on_reply_channels_is_counted() {
    let bus = LocalBus::new();
    let client = Client::new(SVC, bus.clone()).await.unwrap();
    let payloads = [
        Bytes::from_static(b"\xff\xfe garbage"),
        wire::encode_envelope_raw(wire::RESPONSE_TYPE_URL, b"\xff\xff\xff"),
        wire::encode_envelope_raw(wire::CLAIM_REQUEST_TYPE_URL, b"\x0a\x7f"),
        wire::encode_envelope_raw(wire::STREAM_TYPE_URL, b"\x0a\x7f"),
        wire::encode_envelope_raw("type.googleapis.com/evil.Thing", b""),
    ];
    let channels = [
        Channel::response(SVC, client.id()),
        Channel::claim(SVC, client.id()),
        Channel::client_stream(SVC, client.id()),
    ];
    for channel in &channels {
        for payload in &payloads {
            bus.publish(channel, payload.clone()).await.unwrap();
        }
    }
    let expected = (channels.len() * payloads.len()) as u64;
    // The reader tasks route asynchronously: poll, bounded.
    for _ in 0..1000 {
        if client.stats().malformed == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stats = client.stats();
    assert_eq!(stats.malformed, expected);
    assert_eq!(stats.unroutable, 0);
}
