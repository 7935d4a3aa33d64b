//! The conformance suite on the in-process bus.

use std::sync::Arc;

use psrpc::bus::{LocalBus, LocalBusOptions};
use psrpc_conformance::{Harness, conformance_suite};

fn harness() -> Harness {
    let bus = LocalBus::with_options(LocalBusOptions::default().max_payload(1 << 20));
    // In process every "connection" is a handle to the same bus.
    Harness::new("local", (), move || {
        let bus = bus.clone();
        async move { Arc::new(bus) as Arc<dyn psrpc::Bus> }
    })
}

conformance_suite!(harness());

// Scatter/gather batches over queue calls.
psrpc_conformance::batch_suite!(harness());
