//! The conformance suite on the AMQP bus: one rabbitmq-server node for this test binary, a
//! fresh virtual host per test.

use std::sync::Arc;

use psrpc_amqp::{AmqpBus, AmqpBusOptions};
use psrpc_conformance::{Harness, conformance_suite};
use psrpc_testkit::RabbitMqServer;

fn harness() -> Harness {
    let url = RabbitMqServer::shared()
        .expect("rabbitmq-server")
        .fresh_url()
        .expect("a fresh virtual host");
    Harness::new("amqp", (), move || {
        let url = url.clone();
        async move {
            // A 1 MiB limit keeps the large-payload case quick.
            let options = AmqpBusOptions::default().max_payload(1 << 20);
            let bus = AmqpBus::with_options(&url, options)
                .await
                .expect("amqp bus");
            Arc::new(bus) as Arc<dyn psrpc::Bus>
        }
    })
}

conformance_suite!(harness());

// Scatter/gather batches over queue calls.
psrpc_conformance::batch_suite!(harness());
