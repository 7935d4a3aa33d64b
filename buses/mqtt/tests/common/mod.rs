//! Helpers shared by the MQTT bus tests: brokers, buses, a raw MQTT 3.1.1 client (as Go psrpc
//! speaks), bounded waits.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use psrpc::bus::Subscription;
use psrpc_mqtt::{MqttBus, MqttBusOptions};
use psrpc_testkit::MosquittoServer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Upper bound of every wait in these tests; reached only when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn server() -> MosquittoServer {
    MosquittoServer::start().expect("mosquitto must be installed (scripts/test.sh installs it)")
}

pub async fn bus(server: &MosquittoServer) -> MqttBus {
    MqttBus::connect(&server.url()).await.expect("connect")
}

pub async fn bus_with(server: &MosquittoServer, options: MqttBusOptions) -> MqttBus {
    MqttBus::connect_with(&server.url(), options)
        .await
        .expect("connect")
}

/// Waits for `fut` at most [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `check` until it holds, at most [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            // Polling interval of a condition, not a synchronisation sleep.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

pub async fn recv(sub: &mut Subscription) -> String {
    let msg = within("a message", sub.recv())
        .await
        .expect("subscription ended");
    String::from_utf8(msg.to_vec()).expect("utf-8")
}

pub fn try_recv(sub: &mut Subscription) -> Option<String> {
    use futures::FutureExt;
    sub.recv()
        .now_or_never()
        .flatten()
        .map(|m| String::from_utf8(m.to_vec()).expect("utf-8"))
}

/// A plain MQTT 3.1.1 client (what Go psrpc speaks), for watching and publishing from outside.
pub struct Raw {
    pub client: rumqttc::AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Bytes)>,
    subacks: mpsc::UnboundedReceiver<Vec<rumqttc::SubscribeReasonCode>>,
    task: JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Raw {
    pub async fn connect(server: &MosquittoServer) -> Raw {
        let id = format!("raw-{:016x}", fastrand::u64(..));
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", server.port());
        options.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1024);
        let (msg_tx, messages) = mpsc::unbounded_channel();
        let (ack_tx, subacks) = mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut conn_tx = Some(conn_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(tx) = conn_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let topic = p.topic;
                        let _ = msg_tx.send((topic, p.payload));
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack))) => {
                        let _ = ack_tx.send(ack.return_codes);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        within("a raw MQTT connection", conn_rx)
            .await
            .expect("raw client connected");
        Raw {
            client,
            messages,
            subacks,
            task,
        }
    }

    /// Subscribes at QoS 0 and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, rumqttc::QoS::AtMostOnce)
            .await
            .expect("queue SUBSCRIBE");
        let codes = within("a SUBACK", self.subacks.recv())
            .await
            .expect("event loop alive");
        assert!(
            matches!(codes[..], [rumqttc::SubscribeReasonCode::Success(_)]),
            "{codes:?}"
        );
    }

    pub async fn recv(&mut self) -> (String, Bytes) {
        within("a raw message", self.messages.recv())
            .await
            .expect("event loop alive")
    }

    pub fn try_recv(&mut self) -> Option<(String, Bytes)> {
        self.messages.try_recv().ok()
    }
}
