//! Shared pieces of the psrpc examples: the code generated from `proto/` by psrpc-build, the
//! command line (`--bus`, `--role`, `--help`) and connecting to the bus it names.

use std::sync::Arc;

use psrpc::bus::Bus;

pub mod args;

pub use args::{Args, Role, args_or_exit, connect_or_exit, serve_until_stopped};

/// One method of every kind, for the `demo` tour (`proto/demo.proto`).
pub mod demo {
    include!(concat!(env!("OUT_DIR"), "/demo.rs"));
}

/// Fleet statistics by multi call, for `fleet-stats` (`proto/fleet.proto`).
pub mod fleet {
    include!(concat!(env!("OUT_DIR"), "/fleet.rs"));
}

/// Region-scoped calls and events, for `regions` (`proto/regions.proto`).
pub mod regions {
    include!(concat!(env!("OUT_DIR"), "/regions.rs"));
}

/// Job placement by affinity, for `affinity` (`proto/placement.proto`).
pub mod placement {
    include!(concat!(env!("OUT_DIR"), "/placement.rs"));
}

/// Two services calling each other, for `middleware` (`proto/gateway.proto`).
pub mod gateway {
    include!(concat!(env!("OUT_DIR"), "/gateway.rs"));
}

/// Durable render jobs, for `durable-jobs` (`proto/jobs.proto`).
pub mod jobs {
    include!(concat!(env!("OUT_DIR"), "/jobs.rs"));
}

/// Word counting as a batch over a worker fleet, for `word-count` (`proto/wordcount.proto`).
pub mod wordcount {
    include!(concat!(env!("OUT_DIR"), "/wordcount.rs"));
}

/// The durable-call carrier for `--bus URL`: JetStream for `nats://…`, Redis Streams for
/// `redis://…`, the in-process carrier (`local`, or no URL).
///
/// # Errors
/// A message for an unknown scheme or a broker that cannot be reached.
pub async fn carrier(url: Option<&str>) -> Result<Arc<dyn psrpc::durable::Carrier>, String> {
    let Some(url) = url else {
        return Ok(Arc::new(psrpc::durable::LocalCarrier::new()));
    };
    match psrpc_connect::scheme(url) {
        "local" => Ok(Arc::new(psrpc::durable::LocalCarrier::new())),
        "nats" => psrpc_nats::durable::JetStreamCarrier::connect(url)
            .await
            .map(|c| Arc::new(c) as Arc<dyn psrpc::durable::Carrier>)
            .map_err(|err| format!("cannot connect to NATS at {url}: {err}")),
        "redis" | "rediss" => psrpc_redis::durable::RedisStreamsCarrier::connect(url)
            .await
            .map(|c| Arc::new(c) as Arc<dyn psrpc::durable::Carrier>)
            .map_err(|err| format!("cannot connect to Redis at {url}: {err}")),
        _ => Err(format!(
            "unsupported bus URL {url}: use nats://HOST:PORT (with JetStream), \
             redis://HOST:PORT, or leave --bus out for the in-process carrier"
        )),
    }
}

/// Connects to the bus at `url` (see [`psrpc_connect::connect`]: `nats://…`, `redis://…`,
/// `mqtt://…`, `amqp://…`, or `local` for an in-process bus).
///
/// # Errors
/// The message of a [`psrpc_connect::ConnectError`]: an unknown scheme or a broker that
/// cannot be reached.
pub async fn connect(url: &str) -> Result<Arc<dyn Bus>, String> {
    psrpc_connect::connect(url)
        .await
        .map_err(|err| err.to_string())
}

/// Server options with a readable server ID, so the output names servers `node-a`, … instead
/// of random IDs.
pub fn named(server_id: &str) -> psrpc::ServerOptions {
    psrpc::ServerOptions::default().server_id(server_id.to_owned())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn unknown_scheme_is_refused() {
        let err = super::connect("mqttx://h:5672").await.err().unwrap();
        assert!(err.contains("unsupported bus URL mqttx://h:5672"), "{err}");
    }
}
