//! The durable-call suite on the in-process carrier, on tokio's paused clock.

use std::sync::Arc;

use psrpc::durable::{Carrier, LocalCarrier};
use psrpc_conformance::durable::DurableHarness;
use psrpc_conformance::durable_suite;

fn harness() -> DurableHarness {
    let carrier = LocalCarrier::new();
    DurableHarness::new("local", (), move || {
        let carrier = carrier.clone();
        async move { Arc::new(carrier) as Arc<dyn Carrier> }
    })
}

durable_suite!(paused; harness());

// Scatter/gather batches over durable tasks.
psrpc_conformance::batch_suite!(durable [tokio::test(start_paused = true)]; harness());
