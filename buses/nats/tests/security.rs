//! Authentication and TLS against nats-servers configured for them: user/password, token and
//! NKey users; TLS with a test CA and client certificates. Wrong secrets and untrusted
//! certificates fail with a clear error that does not repeat the secret.

use psrpc::bus::BusError;
use psrpc_nats::NatsBus;
use psrpc_testkit::{NatsOptions, NatsServer, TestCerts};

const PASSWORD: &str = "pw-8a1f93";
const TOKEN: &str = "tok-51c0e2";

fn assert_refused(err: &BusError, secret: &str) {
    assert!(matches!(err, BusError::Connection(_)), "{err:?}");
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains(secret), "secret in the error: {shown}");
}

#[tokio::test]
async fn password_nkey_and_token_users() {
    let nkey = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with(NatsOptions {
        credentials: Some(("app".into(), PASSWORD.into())),
        nkeys: vec![nkey.public_key()],
        ..Default::default()
    })
    .expect("nats-server");

    let ok = async_nats::ConnectOptions::with_user_and_password("app".into(), PASSWORD.into());
    let bus = NatsBus::connect_with_options(server.url(), ok)
        .await
        .expect("user and password");
    bus.round_trip().await.expect("a round trip");
    let shown = format!("{bus:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");

    let seed = nkey.seed().unwrap();
    let bus = NatsBus::connect_with_options(
        server.url(),
        async_nats::ConnectOptions::with_nkey(seed.clone()),
    )
    .await
    .expect("nkey");
    bus.round_trip().await.expect("a round trip");
    assert!(!format!("{bus:?}").contains(&seed));

    let wrong = async_nats::ConnectOptions::with_user_and_password("app".into(), "nope-77".into());
    let err = NatsBus::connect_with_options(server.url(), wrong)
        .await
        .unwrap_err();
    assert_refused(&err, "nope-77");
    assert!(
        err.to_string().contains("authorization"),
        "not a clear error: {err}"
    );
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let err = NatsBus::connect_with_options(
        server.url(),
        async_nats::ConnectOptions::with_nkey(stranger.clone()),
    )
    .await
    .unwrap_err();
    assert_refused(&err, &stranger);

    let token_server = NatsServer::start_with(NatsOptions {
        token: Some(TOKEN.into()),
        ..Default::default()
    })
    .expect("nats-server");
    let bus = NatsBus::connect_with_options(
        token_server.url(),
        async_nats::ConnectOptions::with_token(TOKEN.into()),
    )
    .await
    .expect("token");
    bus.round_trip().await.expect("a round trip");
    let err = NatsBus::connect_with_options(
        token_server.url(),
        async_nats::ConnectOptions::with_token("tok-wrong".into()),
    )
    .await
    .unwrap_err();
    assert_refused(&err, "tok-wrong");
}

#[tokio::test]
async fn tls_with_a_test_ca_and_client_certificates() {
    let certs = TestCerts::generate().expect("certificates");
    let server = NatsServer::start_with(NatsOptions {
        tls: Some((certs.server_cert(), certs.server_key())),
        tls_client_ca: Some(certs.ca()),
        ..Default::default()
    })
    .expect("nats-server");
    assert!(server.url().starts_with("tls://"));

    let trusted = || {
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(certs.ca())
    };
    let bus = NatsBus::connect_with_options(
        server.url(),
        trusted().add_client_certificate(certs.client_cert(), certs.client_key()),
    )
    .await
    .expect("TLS with a client certificate");
    bus.round_trip().await.expect("a round trip over TLS");

    // The server's certificate is not trusted without the test CA.
    let err = NatsBus::connect_with_options(
        server.url(),
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_client_certificate(certs.client_cert(), certs.client_key()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BusError::Connection(_)), "{err:?}");
    // The server refuses a client without a certificate.
    let err = NatsBus::connect_with_options(server.url(), trusted())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Connection(_)), "{err:?}");
}
