//! An ACL user against a redis-server that requires it: the right password works, a wrong
//! one fails with a clear error that does not repeat it, and neither the bus nor its errors
//! show secrets.

use psrpc::Channel;
use psrpc::bus::{Bus, SubscribeOptions};
use psrpc_redis::{RedisBus, RedisBusError};
use psrpc_testkit::{RedisOptions, RedisServer};

const PASSWORD: &str = "pw-3e9d1c";

#[tokio::test]
async fn acl_user_and_wrong_password() {
    let server = RedisServer::start_with(RedisOptions {
        acl_user: Some(("app".into(), PASSWORD.into())),
        ..Default::default()
    })
    .expect("redis-server");
    assert!(server.url().contains("app:"));

    let bus = RedisBus::connect(&server.url()).await.expect("ACL user");
    let ch = Channel::request("Svc", "Secure", ["x"], false);
    let mut sub = bus
        .subscribe(&ch, SubscribeOptions::default())
        .await
        .unwrap();
    bus.publish(&ch, bytes::Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(sub.recv().await.as_deref(), Some(&b"hello"[..]));
    let shown = format!("{bus:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");

    let wrong = server.url().replace(PASSWORD, "nope-4242");
    let err = RedisBus::connect(&wrong).await.unwrap_err();
    assert!(matches!(err, RedisBusError::Connect(_)), "{err:?}");
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains("nope-4242"), "{shown}");
    assert!(
        shown.contains("WRONGPASS") || shown.contains("invalid username-password"),
        "not a clear error: {shown}"
    );
    // No user at all: the default user is off.
    let anonymous = format!("redis://127.0.0.1:{}/", server.port());
    let err = RedisBus::connect(&anonymous).await.unwrap_err();
    assert!(matches!(err, RedisBusError::Connect(_)), "{err:?}");
}

/// `rediss://` with the test CA and a client certificate; without the CA the server's
/// certificate is refused, without a client certificate the server refuses the client.
#[cfg(feature = "tls")]
#[tokio::test]
async fn tls_with_a_test_ca_and_client_certificates() {
    use psrpc_testkit::{RedisTls, TestCerts};
    use redis::{ClientTlsConfig, TlsCertificates};

    let certs = TestCerts::generate().expect("certificates");
    let server = RedisServer::start_with(RedisOptions {
        tls: Some(RedisTls {
            cert: certs.server_cert(),
            key: certs.server_key(),
            client_ca: certs.ca(),
        }),
        ..Default::default()
    })
    .expect("redis-server");
    assert!(server.url().starts_with("rediss://"));
    let read = |path: std::path::PathBuf| std::fs::read(path).unwrap();
    let client_tls = || ClientTlsConfig {
        client_cert: read(certs.client_cert()),
        client_key: read(certs.client_key()),
    };

    let client = redis::Client::build_with_tls(
        server.url(),
        TlsCertificates {
            client_tls: Some(client_tls()),
            root_cert: Some(read(certs.ca())),
        },
    )
    .unwrap();
    let bus = RedisBus::new(client)
        .await
        .expect("TLS with a client certificate");
    let ch = Channel::request("Svc", "Sealed", ["x"], false);
    let mut sub = bus
        .subscribe(&ch, SubscribeOptions::default())
        .await
        .unwrap();
    bus.publish(&ch, bytes::Bytes::from_static(b"sealed"))
        .await
        .unwrap();
    assert_eq!(sub.recv().await.as_deref(), Some(&b"sealed"[..]));

    // Untrusted: the system roots do not include the test CA.
    let untrusted = redis::Client::build_with_tls(
        server.url(),
        TlsCertificates {
            client_tls: Some(client_tls()),
            root_cert: None,
        },
    )
    .unwrap();
    let err = RedisBus::new(untrusted).await.unwrap_err();
    assert!(matches!(err, RedisBusError::Connect(_)), "{err:?}");
    // No client certificate: the server refuses the handshake.
    let anonymous = redis::Client::build_with_tls(
        server.url(),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(read(certs.ca())),
        },
    )
    .unwrap();
    let err = RedisBus::new(anonymous).await.unwrap_err();
    assert!(matches!(err, RedisBusError::Connect(_)), "{err:?}");
}
