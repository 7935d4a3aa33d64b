//! The conformance suite on the MQTT bus, against a mosquitto of each test's own.

use std::sync::Arc;

use psrpc_conformance::{Harness, conformance_suite};
use psrpc_mqtt::{MqttBus, MqttBusOptions};
use psrpc_testkit::MosquittoServer;

fn harness() -> Harness {
    let server = MosquittoServer::start().expect("mosquitto");
    let url = server.url();
    Harness::new("mqtt", server, move || {
        let url = url.clone();
        async move {
            // A 1 MiB limit keeps the large-payload case quick.
            let options = MqttBusOptions::default().max_payload(1 << 20);
            let bus = MqttBus::connect_with(&url, options)
                .await
                .expect("mqtt bus");
            Arc::new(bus) as Arc<dyn psrpc::Bus>
        }
    })
}

conformance_suite!(harness());

// Scatter/gather batches over queue calls.
psrpc_conformance::batch_suite!(harness());
