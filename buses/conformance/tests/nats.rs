//! The conformance suite on the NATS bus, against a nats-server of each test's own.

use std::sync::Arc;

use psrpc_conformance::{Harness, conformance_suite};
use psrpc_nats::NatsBus;
use psrpc_testkit::NatsServer;

fn harness() -> Harness {
    // nats-server's default limit (1 MiB) is what the large-payload case runs against.
    let server = NatsServer::start().expect("nats-server");
    let url = server.url();
    Harness::new("nats", server, move || {
        let url = url.clone();
        async move {
            let bus = NatsBus::connect(url).await.expect("nats bus");
            Arc::new(bus) as Arc<dyn psrpc::Bus>
        }
    })
}

conformance_suite!(harness());

// Scatter/gather batches over queue calls.
psrpc_conformance::batch_suite!(harness());
