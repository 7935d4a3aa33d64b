//! The request side of the connection on either protocol: rumqttc's MQTT 5 client or its
//! MQTT 3.1.1 (v4) client.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::SubscribeProperties;

/// rumqttc's client of the protocol the bus speaks. Errors are rumqttc's "request channel full
/// or closed", which callers tell apart by the state of the connection task.
pub(crate) enum MqttClient {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// rumqttc could not take the request (its channel is full, or the event loop is gone).
pub(crate) struct NotQueued(pub(crate) String);

impl MqttClient {
    /// True on MQTT 5.
    pub(crate) fn is_v5(&self) -> bool {
        matches!(self, MqttClient::V5(_))
    }

    /// A QoS 0 publish, waiting for room in rumqttc's request channel.
    pub(crate) async fn publish_qos0(
        &self,
        topic: String,
        payload: Bytes,
    ) -> Result<(), NotQueued> {
        match self {
            MqttClient::V5(c) => c
                .publish_bytes(topic, QoS5::AtMostOnce, false, payload)
                .await
                .map_err(|e| NotQueued(e.to_string())),
            MqttClient::V311(c) => c
                .publish_bytes(topic, rumqttc::QoS::AtMostOnce, false, payload)
                .await
                .map_err(|e| NotQueued(e.to_string())),
        }
    }

    /// A QoS 1 publish, if rumqttc's request channel has room now.
    pub(crate) fn try_publish_qos1(&self, topic: &str, payload: Bytes) -> Result<(), NotQueued> {
        match self {
            MqttClient::V5(c) => c
                .try_publish(topic, QoS5::AtLeastOnce, false, payload)
                .map_err(|e| NotQueued(e.to_string())),
            MqttClient::V311(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .map_err(|e| NotQueued(e.to_string())),
        }
    }

    /// A QoS 0 SUBSCRIBE of `filter`, tagged with `sub_id` on MQTT 5, if there is room now.
    pub(crate) fn try_subscribe(&self, filter: &str, sub_id: usize) -> Result<(), NotQueued> {
        match self {
            MqttClient::V5(c) => {
                let props = SubscribeProperties {
                    id: Some(sub_id),
                    user_properties: Vec::new(),
                };
                c.try_subscribe_with_properties(filter, QoS5::AtMostOnce, props)
                    .map_err(|e| NotQueued(e.to_string()))
            }
            MqttClient::V311(c) => c
                .try_subscribe(filter, rumqttc::QoS::AtMostOnce)
                .map_err(|e| NotQueued(e.to_string())),
        }
    }

    /// An UNSUBSCRIBE of `filter`, if there is room now.
    pub(crate) fn try_unsubscribe(&self, filter: &str) -> Result<(), NotQueued> {
        match self {
            MqttClient::V5(c) => c
                .try_unsubscribe(filter)
                .map_err(|e| NotQueued(e.to_string())),
            MqttClient::V311(c) => c
                .try_unsubscribe(filter)
                .map_err(|e| NotQueued(e.to_string())),
        }
    }
}
