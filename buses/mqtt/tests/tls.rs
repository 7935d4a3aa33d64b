//! `mqtts://` against a mosquitto serving TLS with a certificate made for the test.
#![cfg(feature = "tls")]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::recv;
use psrpc::Channel;
use psrpc::bus::{Bus, SubscribeOptions};
use psrpc_mqtt::{MqttBus, MqttBusError, MqttBusOptions};
use psrpc_testkit::{MosquittoOptions, MosquittoServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_trusted_certificate_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let server = MosquittoServer::start_with(MosquittoOptions {
        tls: Some((cert_path, key_path)),
        credentials: Some(("bob".into(), "pw".into())),
        ..Default::default()
    })
    .unwrap();
    assert!(server.url().starts_with("mqtts://bob:pw@"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let options = MqttBusOptions::default().tls(Arc::new(config));
    let bus = MqttBus::connect_with(&server.url(), options).await.unwrap();
    let ch = Channel::request("Svc", "Secure", ["x"], false);
    let mut sub = bus
        .subscribe(&ch, SubscribeOptions::default())
        .await
        .unwrap();
    bus.publish(&ch, Bytes::from_static(b"sealed"))
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await, "sealed");

    // Without the test's root the certificate is not trusted.
    let err = MqttBus::connect(&server.url()).await.unwrap_err();
    assert!(
        matches!(err, MqttBusError::Connect(_) | MqttBusError::Tls(_)),
        "{err}"
    );
}
