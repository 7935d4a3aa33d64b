//! Why an [`MqttBus`](crate::MqttBus) could not be created.

use psrpc::bus::BusError;

/// Why an [`MqttBus`](crate::MqttBus) could not be created or a broker request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttBusError {
    /// The URL was not `mqtt://[user[:password]@]host[:port]` or `mqtts://…`.
    #[error("invalid MQTT URL: {0}")]
    InvalidUrl(String),
    /// `mqtts://` was asked for, but the crate was built without its `tls` feature.
    #[error("mqtts:// needs the `tls` feature of psrpc-mqtt")]
    TlsUnavailable,
    /// The TLS configuration could not be built.
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    /// The broker could not be reached, or refused the connection (e.g. bad credentials).
    #[error("cannot connect to the MQTT broker: {0}")]
    Connect(#[source] rumqttc::v5::ConnectionError),
    /// As [`Connect`](Self::Connect), on MQTT 3.1.1 ([`MqttProtocol::V311`](crate::MqttProtocol),
    /// or the fallback of [`MqttProtocol::Auto`](crate::MqttProtocol)).
    #[error("cannot connect to the MQTT broker (MQTT 3.1.1): {0}")]
    Connect311(#[source] Box<rumqttc::ConnectionError>),
    /// The broker does not support shared subscriptions, which psrpc's queue channels need.
    #[error("the MQTT broker does not support shared subscriptions ($share/…): {0}")]
    NoSharedSubscriptions(String),
    /// The broker refused a request.
    #[error("the MQTT broker refused: {0}")]
    Refused(String),
    /// The bus failed while starting.
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<MqttBusError> for BusError {
    fn from(err: MqttBusError) -> Self {
        match err {
            MqttBusError::Bus(err) => err,
            err => BusError::Connection(Box::new(err)),
        }
    }
}
