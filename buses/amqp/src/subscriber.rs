//! One subscription's broker side: its channel, queue, binding and consumer, made again on
//! every new connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Consumer, ExchangeKind};
use psrpc::bus::{Delivery, SubscriptionSink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::link::{Control, Link};
use crate::publisher::exchange_options;

/// A live subscription as the bus keeps it, across reconnections.
pub(crate) struct SubState {
    pub(crate) id: u64,
    pub(crate) exchange: String,
    pub(crate) queue: bool,
    sink: SubscriptionSink,
    attached: tokio::sync::Mutex<Attached>,
    closed: AtomicBool,
}

#[derive(Default)]
struct Attached {
    /// The connection generation the consumer runs on; 0 for none.
    generation: u64,
    channel: Option<lapin::Channel>,
    consumer: Option<JoinHandle<()>>,
}

impl Attached {
    fn tear_down(&mut self) {
        self.generation = 0;
        if let Some(task) = self.consumer.take() {
            task.abort();
        }
        if let Some(channel) = self.channel.take()
            && channel.status().connected()
        {
            // Closing the channel cancels the consumer; the broker then deletes the
            // auto-delete queue if this was its last consumer.
            tokio::spawn(async move {
                let _ = channel.close(200, ShortString::from("unsubscribed")).await;
            });
        }
    }
}

impl SubState {
    pub(crate) fn new(id: u64, exchange: String, queue: bool, sink: SubscriptionSink) -> Self {
        SubState {
            id,
            exchange,
            queue,
            sink,
            attached: tokio::sync::Mutex::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// Declares the exchange and queue, binds them and starts consuming on `link`, unless
    /// already done there. Returns once the consumer is registered at the broker.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        link: &Link,
        control: &mpsc::UnboundedSender<Control>,
    ) -> lapin::Result<()> {
        let mut attached = self.attached.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let healthy = attached
            .channel
            .as_ref()
            .is_some_and(|c| c.status().connected());
        if attached.generation == link.generation && healthy {
            return Ok(());
        }
        attached.tear_down();
        // A shared queue or an exchange can vanish between two steps when another member
        // leaves (both are auto-delete): the broker then closes the channel; start over.
        let mut attempt = 0;
        let (channel, consumer) = loop {
            attempt += 1;
            let channel = link.connection.create_channel().await?;
            match self.declare_and_consume(&channel, link.generation).await {
                Ok(consumer) => break (channel, consumer),
                Err(err) if attempt < 3 && link.connection.status().connected() => {
                    tracing::debug!(exchange = %self.exchange, %err, "subscribe step failed, retrying");
                }
                Err(err) => return Err(err),
            }
        };
        let sub = self.clone();
        let control = control.clone();
        attached.consumer = Some(tokio::spawn(consume(sub, consumer, control)));
        attached.channel = Some(channel);
        attached.generation = link.generation;
        Ok(())
    }

    async fn declare_and_consume(
        &self,
        channel: &lapin::Channel,
        generation: u64,
    ) -> lapin::Result<Consumer> {
        let exchange = ShortString::from(self.exchange.as_str());
        channel
            .exchange_declare(
                exchange.clone(),
                ExchangeKind::Fanout,
                exchange_options(false),
                FieldTable::default(),
            )
            .await?;
        // Go's queues: a queue subscriber shares one named like the exchange; a fan-out
        // subscriber has its own, named by the server and gone with its connection.
        let (name, options) = if self.queue {
            (
                exchange.clone(),
                QueueDeclareOptions {
                    durable: false,
                    exclusive: false,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
            )
        } else {
            (
                ShortString::from(""),
                QueueDeclareOptions {
                    durable: false,
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
            )
        };
        let queue = channel
            .queue_declare(name, options, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange,
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .basic_consume(
                queue.name().clone(),
                ShortString::from(format!("psrpc-{}-{generation}", self.id)),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
    }

    /// Stops for good: the consumer and its channel go.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.attached.lock().await.tear_down();
    }
}

/// Moves deliveries into the subscription's buffer; when the consumer ends while the
/// subscription lives (channel closed by the broker, connection lost), asks for a new one.
async fn consume(
    sub: Arc<SubState>,
    mut consumer: Consumer,
    control: mpsc::UnboundedSender<Control>,
) {
    while let Some(delivery) = consumer.next().await {
        match delivery {
            Ok(delivery) => {
                if sub.sink.deliver(Bytes::from(delivery.data)) == Delivery::Closed {
                    return;
                }
            }
            Err(err) => {
                tracing::debug!(exchange = %sub.exchange, %err, "amqp consumer failed");
                break;
            }
        }
    }
    if !sub.closed.load(Ordering::Acquire) {
        let _ = control.send(Control::Reattach(sub.id));
    }
}
