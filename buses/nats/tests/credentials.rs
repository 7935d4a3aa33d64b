//! Credentials in a URL (`nats://user:pass@host`) authenticate, as with Go clients: async-nats
//! alone ignores them and the server refuses the connection.

use psrpc_nats::NatsBus;
use psrpc_testkit::{NatsOptions, NatsServer};

#[tokio::test]
async fn credentials_in_the_url_authenticate() {
    let server = NatsServer::start_with(NatsOptions {
        credentials: Some(("app".into(), "s3cret".into())),
        ..Default::default()
    })
    .expect("nats-server");
    let with = format!("nats://app:s3cret@127.0.0.1:{}", server.port());
    let bus = NatsBus::connect(with.as_str())
        .await
        .expect("authenticated");
    bus.round_trip()
        .await
        .expect("a round trip through the server");

    let wrong = format!("nats://app:wrong@127.0.0.1:{}", server.port());
    assert!(NatsBus::connect(wrong.as_str()).await.is_err());
    assert!(NatsBus::connect(server.url()).await.is_err());
}
