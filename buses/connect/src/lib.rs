//! One bus from one URL: the `--bus URL` of the `psrpc` command-line tool and of the examples.
//!
//! ```no_run
//! # async fn f() -> Result<(), psrpc_connect::ConnectError> {
//! let bus = psrpc_connect::connect("nats://127.0.0.1:4222").await?;
//! let _client = psrpc::Client::new("Greeter", bus).await;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use psrpc::bus::{Bus, LocalBus};

/// The URL forms [`connect`] takes, for usage texts and error messages.
pub const URL_FORMS: &str = "nats://HOST:PORT, redis://HOST:PORT (or rediss://), \
     mqtt://[USER:PASS@]HOST:PORT, amqp://USER:PASS@HOST:PORT/VHOST (or amqps://), local";

/// Why [`connect`] gave no bus.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL's scheme names no bus.
    #[error("unsupported bus URL {url}: use {URL_FORMS}")]
    Unsupported {
        /// The URL as given.
        url: String,
    },
    /// The broker could not be reached, or refused the connection.
    #[error("cannot connect to {broker} at {url}: {source}")]
    Connect {
        /// `NATS`, `Redis`, `MQTT` or `AMQP`.
        broker: &'static str,
        /// The URL as given.
        url: String,
        /// The bus crate's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The scheme of `url` (the whole of it when it has no `://`, so that `local` is one).
pub fn scheme(url: &str) -> &str {
    url.split_once("://").map_or(url, |(scheme, _)| scheme)
}

/// Connects to the bus at `url`: `nats://…` for NATS, `redis://…` or `rediss://…` for Redis
/// (TLS needs a TLS feature of the `redis` crate, off in this workspace),
/// `mqtt://[user:pass@]…` for MQTT (`mqtts://` needs the `tls` feature of `psrpc-mqtt`),
/// `amqp://…` or `amqps://…` for RabbitMQ (`amqp://user:pass@HOST:5672/%2f`), `local` for a new
/// in-process bus (shared with nothing outside this process).
///
/// # Errors
/// [`ConnectError::Unsupported`] for an unknown scheme, [`ConnectError::Connect`] for a broker
/// that cannot be reached.
///
/// # Cancel safety
/// Cancel safe: a connection being made is dropped with the future.
pub async fn connect(url: &str) -> Result<Arc<dyn Bus>, ConnectError> {
    fn failed<E>(broker: &'static str, url: &str) -> impl FnOnce(E) -> ConnectError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |err| ConnectError::Connect {
            broker,
            url: url.to_owned(),
            source: Box::new(err),
        }
    }
    Ok(match scheme(url) {
        "local" => Arc::new(LocalBus::new()),
        "nats" => Arc::new(
            psrpc_nats::NatsBus::connect(url)
                .await
                .map_err(failed("NATS", url))?,
        ),
        "redis" | "rediss" => Arc::new(
            psrpc_redis::RedisBus::connect(url)
                .await
                .map_err(failed("Redis", url))?,
        ),
        "mqtt" | "mqtts" => Arc::new(
            psrpc_mqtt::MqttBus::connect(url)
                .await
                .map_err(failed("MQTT", url))?,
        ),
        "amqp" | "amqps" => Arc::new(
            psrpc_amqp::AmqpBus::connect(url)
                .await
                .map_err(failed("AMQP", url))?,
        ),
        _ => {
            return Err(ConnectError::Unsupported {
                url: url.to_owned(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_schemes_are_refused() {
        for url in ["mqttx://h:5672", "kafka://h:9092", "", "nats:/h"] {
            let err = connect(url).await.err().expect("refused");
            assert!(matches!(err, ConnectError::Unsupported { .. }), "{url}");
            assert!(
                err.to_string()
                    .starts_with(&format!("unsupported bus URL {url}: use nats://")),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn local_is_an_in_process_bus() {
        let bus = connect("local").await.expect("a bus");
        assert_eq!(bus.name(), LocalBus::new().name());
    }

    #[test]
    fn schemes() {
        assert_eq!(scheme("nats://h:1"), "nats");
        assert_eq!(scheme("amqps://u:p@h/v"), "amqps");
        assert_eq!(scheme("local"), "local");
    }
}
