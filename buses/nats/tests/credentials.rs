//! Credentials in a URL (`nats://user:pass@host`) authenticate, as with Go clients: async-nats
//! alone ignores them and the server refuses the connection. Credentials files (`.creds`)
//! authenticate against a server in operator mode (JWT auth), with keys made at test time.

use psrpc::bus::BusError;
use psrpc::{Client, MethodInfo, Server};
use psrpc_nats::{CredentialsError, NatsBus};
use psrpc_testkit::{NatsOptions, NatsServer, TestOperator};

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

const ECHO: MethodInfo = MethodInfo::unary("Echo");

/// The error shows neither the seed nor the JWT's signature, and is a connection error.
fn assert_clear(err: &BusError, seed: &str) {
    assert!(matches!(err, BusError::Connection(_)), "{err:?}");
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains(seed), "seed in the error: {shown}");
}

#[tokio::test]
async fn credentials_files_authenticate_in_operator_mode() {
    let operator = TestOperator::generate().expect("operator keys");
    let server = NatsServer::start_with(NatsOptions {
        trust: Some(operator.trust()),
        ..Default::default()
    })
    .expect("nats-server in operator mode");
    let options = async_nats::ConnectOptions::new;

    let creds = operator.user_creds("app").expect("creds file");
    let seed = TestOperator::seed_in(&creds).expect("a seed in the file");
    let bus = NatsBus::connect_with_credentials_file(server.url(), &creds, options())
        .await
        .expect("a trusted user");
    assert!(!format!("{bus:?}").contains(&seed));
    // A call goes through: the user may publish and subscribe.
    let rpc = Server::new("Creds", bus.clone());
    rpc.register_unary(ECHO, &[], |_ctx, s: String| async move { Ok(s) })
        .await
        .expect("register");
    let client = Client::new("Creds", bus.clone()).await.expect("client");
    let back: String = client
        .request(ECHO, &[], &"hi".to_string(), Default::default())
        .await
        .expect("a call as a JWT user");
    assert_eq!(back, "hi");

    // The server refuses what it cannot trust, naming the reason.
    let no_auth = NatsBus::connect(server.url()).await.unwrap_err();
    assert!(matches!(no_auth, BusError::Connection(_)), "{no_auth:?}");
    for creds in [
        operator.stranger_creds("stranger").expect("creds file"),
        operator.mismatched_creds("thief").expect("creds file"),
    ] {
        let seed = TestOperator::seed_in(&creds).expect("a seed in the file");
        let err = NatsBus::connect_with_credentials_file(server.url(), &creds, options())
            .await
            .unwrap_err();
        assert_clear(&err, &seed);
        assert!(
            err.to_string().contains("authorization"),
            "not a clear error: {err}"
        );
    }

    // A missing or malformed file fails before connecting, naming the file.
    let missing = creds.with_file_name("absent.creds");
    let err = NatsBus::connect_with_credentials_file(server.url(), &missing, options())
        .await
        .unwrap_err();
    let BusError::Connection(source) = &err else {
        panic!("{err:?}")
    };
    let creds_err = source
        .downcast_ref::<CredentialsError>()
        .expect("a credentials error");
    assert_eq!(creds_err.path, missing);
    assert!(err.to_string().contains("absent.creds"), "{err}");

    let garbled = creds.with_file_name("garbled.creds");
    std::fs::write(&garbled, format!("not a creds file {seed}")).expect("write");
    let err = NatsBus::connect_with_credentials_file(server.url(), &garbled, options())
        .await
        .unwrap_err();
    assert_clear(&err, &seed);
    assert!(err.to_string().contains("credentials file"), "{err}");
}
