//! `--bus URL` to a connected bus.

use std::sync::Arc;

use psrpc::Bus;

use crate::{BusArgs, Fail};

/// Connects to the bus at `args.bus`, within the connect timeout.
pub(crate) async fn connect(args: &BusArgs) -> Result<Arc<dyn Bus>, Fail> {
    let url = args.bus.as_str();
    match tokio::time::timeout(args.connect_timeout, connect_url(url)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "cannot connect to {url}: no answer within {:?}",
            args.connect_timeout
        )),
    }
}

async fn connect_url(url: &str) -> Result<Arc<dyn Bus>, Fail> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    let bus: Arc<dyn Bus> = match scheme {
        "nats" => Arc::new(
            psrpc_nats::NatsBus::connect(url)
                .await
                .map_err(|err| format!("cannot connect to NATS at {url}: {err}"))?,
        ),
        "redis" | "rediss" => Arc::new(
            psrpc_redis::RedisBus::connect(url)
                .await
                .map_err(|err| format!("cannot connect to Redis at {url}: {err}"))?,
        ),
        "mqtt" | "mqtts" => Arc::new(
            psrpc_mqtt::MqttBus::connect(url)
                .await
                .map_err(|err| format!("cannot connect to MQTT at {url}: {err}"))?,
        ),
        "amqp" | "amqps" => Arc::new(
            psrpc_amqp::AmqpBus::connect(url)
                .await
                .map_err(|err| format!("cannot connect to AMQP at {url}: {err}"))?,
        ),
        _ => {
            return Err(format!(
                "unsupported bus URL {url:?}: use nats://HOST:PORT, redis://HOST:PORT, \
                 mqtt://[USER:PASS@]HOST:PORT or amqp://USER:PASS@HOST:PORT/VHOST"
            ));
        }
    };
    Ok(bus)
}
