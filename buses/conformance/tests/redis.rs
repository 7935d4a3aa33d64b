//! The conformance suite on the Redis bus, against a redis-server of each test's own.

use std::sync::Arc;

use psrpc_conformance::{Harness, conformance_suite};
use psrpc_redis::{RedisBus, RedisBusOptions};
use psrpc_testkit::RedisServer;

fn harness() -> Harness {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    Harness::new("redis", server, move || {
        let url = url.clone();
        async move {
            let client = redis::Client::open(url).expect("redis url");
            // A 1 MiB limit keeps the large-payload case quick.
            let options = RedisBusOptions::default().max_payload(1 << 20);
            let bus = RedisBus::with_options(client, options)
                .await
                .expect("redis bus");
            Arc::new(bus) as Arc<dyn psrpc::Bus>
        }
    })
}

conformance_suite!(harness());

// Scatter/gather batches over queue calls.
psrpc_conformance::batch_suite!(harness());
