//! The durable-call suite on NATS JetStream, against a nats-server of each test's own.

use std::sync::Arc;

use psrpc::durable::Carrier;
use psrpc_conformance::durable::DurableHarness;
use psrpc_conformance::durable_suite;
use psrpc_nats::durable::JetStreamCarrier;
use psrpc_testkit::{NatsOptions, NatsServer};

fn harness() -> DurableHarness {
    let server = NatsServer::start_with(NatsOptions {
        jetstream: true,
        ..Default::default()
    })
    .expect("nats-server");
    let url = server.url();
    DurableHarness::new("nats", server, move || {
        let url = url.clone();
        async move {
            let carrier = JetStreamCarrier::connect(&url).await.expect("connect");
            Arc::new(carrier) as Arc<dyn Carrier>
        }
    })
}

durable_suite!(harness());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_broker_kill() {
    let mut server = NatsServer::start_with(NatsOptions {
        jetstream: true,
        ..Default::default()
    })
    .expect("nats-server");
    let url = server.url();
    let connect = || {
        let url = url.clone();
        async move {
            Arc::new(JetStreamCarrier::connect(&url).await.expect("connect")) as Arc<dyn Carrier>
        }
    };
    psrpc_conformance::durable::survives_broker_kill(connect, || {
        server.kill();
        server.restart().expect("restart");
    })
    .await;
}

// Scatter/gather batches over durable tasks.
psrpc_conformance::batch_suite!(durable [tokio::test(flavor = "multi_thread", worker_threads = 2)]; harness());
