//! Shared pieces of the psrpc examples: the code generated from `proto/` by psrpc-build, and
//! choosing the bus from the command line.

use std::sync::Arc;

use psrpc::bus::{Bus, LocalBus};

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
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    match scheme {
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

/// The bus named by `--bus URL` (or `--bus=URL`) on the command line, or an in-process bus
/// without it.
///
/// # Errors
/// A message for an unknown scheme or a bus that cannot connect.
pub async fn bus_from_args() -> Result<Arc<dyn Bus>, String> {
    match bus_url(std::env::args().skip(1))? {
        None => Ok(Arc::new(LocalBus::new())),
        Some(url) => connect(&url).await,
    }
}

/// [`bus_from_args`], or the end of the program with the message and exit status 2.
pub async fn bus_or_exit() -> Arc<dyn Bus> {
    match bus_from_args().await {
        Ok(bus) => bus,
        Err(msg) => {
            eprintln!("error: {msg}");
            std::process::exit(2);
        }
    }
}

/// The value of `--bus` among `args`, if given.
///
/// # Errors
/// A message when `--bus` has no value.
pub fn bus_url(args: impl IntoIterator<Item = String>) -> Result<Option<String>, String> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--bus" {
            return args
                .next()
                .map(Some)
                .ok_or_else(|| "--bus needs a URL, like nats://127.0.0.1:4222".to_owned());
        }
        if let Some(url) = arg.strip_prefix("--bus=") {
            return Ok(Some(url.to_owned()));
        }
    }
    Ok(None)
}

/// Connects to the bus at `url`: `nats://…` for NATS, `redis://…` or `rediss://…` for Redis
/// (TLS needs a TLS feature of the `redis` crate, off in this workspace),
/// `mqtt://[user:pass@]…` for MQTT (`mqtts://` needs the `tls` feature of `psrpc-mqtt`),
/// `amqp://…` or `amqps://…` for RabbitMQ (`amqp://user:pass@HOST:5672/%2f`), `local` for an
/// in-process bus.
///
/// # Errors
/// A message for an unknown scheme or a broker that cannot be reached.
pub async fn connect(url: &str) -> Result<Arc<dyn Bus>, String> {
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    match scheme {
        "local" => Ok(Arc::new(LocalBus::new())),
        "nats" => psrpc_nats::NatsBus::connect(url)
            .await
            .map(|bus| Arc::new(bus) as Arc<dyn Bus>)
            .map_err(|err| format!("cannot connect to NATS at {url}: {err}")),
        "redis" | "rediss" => psrpc_redis::RedisBus::connect(url)
            .await
            .map(|bus| Arc::new(bus) as Arc<dyn Bus>)
            .map_err(|err| format!("cannot connect to Redis at {url}: {err}")),
        "mqtt" | "mqtts" => psrpc_mqtt::MqttBus::connect(url)
            .await
            .map(|bus| Arc::new(bus) as Arc<dyn Bus>)
            .map_err(|err| format!("cannot connect to MQTT at {url}: {err}")),
        "amqp" | "amqps" => psrpc_amqp::AmqpBus::connect(url)
            .await
            .map(|bus| Arc::new(bus) as Arc<dyn Bus>)
            .map_err(|err| format!("cannot connect to AMQP at {url}: {err}")),
        _ => Err(format!(
            "unsupported bus URL {url}: use nats://HOST:PORT, redis://HOST:PORT (or \
             rediss://), mqtt://[USER:PASS@]HOST:PORT, amqp://USER:PASS@HOST:PORT/VHOST (or \
             amqps://), or leave --bus out for the in-process bus"
        )),
    }
}

/// Server options with a readable server ID, so the output names servers `node-a`, … instead
/// of random IDs.
pub fn named(server_id: &str) -> psrpc::ServerOptions {
    psrpc::ServerOptions {
        server_id: Some(server_id.to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::bus_url;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn bus_url_in_both_spellings() {
        assert_eq!(bus_url(args(&[])), Ok(None));
        assert_eq!(
            bus_url(args(&["--bus", "nats://h:1"])),
            Ok(Some("nats://h:1".into()))
        );
        assert_eq!(
            bus_url(args(&["-v", "--bus=redis://h:2"])),
            Ok(Some("redis://h:2".into()))
        );
        assert!(bus_url(args(&["--bus"])).is_err());
    }

    #[tokio::test]
    async fn unknown_scheme_is_refused() {
        let err = super::connect("mqttx://h:5672").await.err().unwrap();
        assert!(err.contains("unsupported bus URL mqttx://h:5672"), "{err}");
    }
}
