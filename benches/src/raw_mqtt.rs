//! The raw MQTT yardstick: rumqttc (MQTT 5, as the bus uses it) without psrpc. Publishes are
//! QoS 0; queue subscribers use the shared subscription `$share/psrpc/<topic>`, as the bus.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::{mpsc, oneshot};

use crate::harness::Result;

/// One raw connection; its event loop task ends with the last clone.
#[derive(Clone)]
pub struct MqttLink {
    client: AsyncClient,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl MqttLink {
    /// Connects to `url` (`mqtt://HOST:PORT`) and, with `filter`, subscribes to it; returns
    /// the link and the payloads it receives.
    ///
    /// # Errors
    /// A bad URL, a failed connection or a refused subscription.
    pub async fn connect(
        url: &str,
        filter: Option<&str>,
    ) -> Result<(MqttLink, BoxStream<'static, Bytes>)> {
        let authority = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| format!("not an mqtt:// URL: {url}"))?;
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("no port in {url}"))?;
        let id = format!("raw-{:016x}", fastrand::u64(..));
        let mut options = MqttOptions::new(id, host, port.parse::<u16>()?);
        options.set_max_packet_size(Some(16 << 20));
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let (payload_tx, payloads) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel::<std::result::Result<(), String>>();
        let subscribed = filter.is_some();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = payload_tx.send(p.payload);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if !subscribed => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(Err(err.to_string()));
                        }
                        return;
                    }
                }
            }
        });
        if let Some(filter) = filter {
            client.subscribe(filter, QoS::AtMostOnce).await?;
        }
        ready_rx.await.map_err(|_| "raw MQTT event loop ended")??;
        let stream = futures::stream::unfold(payloads, |mut rx| async move {
            rx.recv().await.map(|p| (p, rx))
        })
        .boxed();
        Ok((
            MqttLink {
                client,
                _task: Arc::new(AbortOnDrop(task)),
            },
            stream,
        ))
    }

    /// A QoS 0 publish, queued to the connection.
    pub fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> futures::future::BoxFuture<'static, Result<()>> {
        let client = self.client.clone();
        let topic = topic.to_owned();
        Box::pin(async move {
            client
                .publish_bytes(topic, QoS::AtMostOnce, false, payload)
                .await?;
            Ok(())
        })
    }
}
