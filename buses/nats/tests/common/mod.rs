//! Helpers shared by the integration tests: brokers, buses and bounded waits.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use psrpc::bus::Subscription;
use psrpc_nats::NatsBus;
use psrpc_testkit::{NatsOptions, NatsServer};

/// Upper bound of any single wait in these tests; reached only when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh nats-server for one test.
pub fn nats() -> NatsServer {
    NatsServer::start().expect("start nats-server")
}

/// A fresh nats-server with options.
pub fn nats_with(options: NatsOptions) -> NatsServer {
    NatsServer::start_with(options).expect("start nats-server")
}

/// A bus on its own connection, reconnecting quickly (tests restart brokers).
pub async fn bus(server: &NatsServer) -> NatsBus {
    let options = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_attempt| Duration::from_millis(50));
    NatsBus::connect_with_options(server.url(), options)
        .await
        .expect("connect")
}

/// An envelope carrying `text`, as the runtime would publish it (no route key yet).
pub fn envelope(text: &str) -> Bytes {
    psrpc::wire::encode_envelope_raw("type.googleapis.com/test.Text", text.as_bytes())
}

/// The text inside a received envelope.
pub fn text(payload: Bytes) -> String {
    let msg = psrpc::wire::decode_envelope(payload).expect("envelope");
    String::from_utf8(msg.value.to_vec()).expect("utf-8")
}

/// The next message's text, failing the test after [`WAIT`].
pub async fn recv_text(sub: &mut Subscription) -> String {
    let payload = tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription closed");
    text(payload)
}

/// Polls `condition` until it holds, failing the test after [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        // Polling interval of a bounded condition check, not a synchronisation sleep.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
