//! One subscription's broker side: its queue, binding and consumer (on a channel shared with
//! other subscriptions), made again on every new connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Consumer, ExchangeKind};
use psrpc::bus::{Delivery, SubscriptionSink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::link::{ConsumerChannel, Control, Link};
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
    channel: Option<Arc<ConsumerChannel>>,
    tag: ShortString,
    consumer: Option<JoinHandle<()>>,
}

impl Attached {
    fn tear_down(&mut self) {
        self.generation = 0;
        if let Some(task) = self.consumer.take() {
            task.abort();
        }
        if let Some(shared) = self.channel.take() {
            shared.release();
            if shared.channel.status().connected() {
                // The broker deletes the auto-delete queue once its last consumer is
                // cancelled.
                let tag = std::mem::take(&mut self.tag);
                tokio::spawn(async move {
                    let _ = shared
                        .channel
                        .basic_cancel(tag, BasicCancelOptions::default())
                        .await;
                });
            }
        }
    }
}

/// Consumer tags, unique within the bus (and so within every channel).
static NEXT_TAG: AtomicU64 = AtomicU64::new(0);

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
            .is_some_and(|c| c.channel.status().connected());
        if attached.generation == link.generation && healthy {
            return Ok(());
        }
        attached.tear_down();
        // A shared queue or an exchange can vanish between two steps when another member
        // leaves (both are auto-delete): the broker then closes the channel; start over.
        let mut attempt = 0;
        let (channel, tag, consumer) = loop {
            attempt += 1;
            let shared = link.consumer_channel().await?;
            let tag = ShortString::from(format!(
                "psrpc-{}-{}",
                self.id,
                NEXT_TAG.fetch_add(1, Ordering::Relaxed)
            ));
            match self.declare_and_consume(&shared.channel, tag.clone()).await {
                Ok(consumer) => break (shared, tag, consumer),
                Err(err) => {
                    shared.release();
                    if attempt < 3 && link.connection.status().connected() {
                        tracing::debug!(exchange = %self.exchange, %err, "subscribe step failed, retrying");
                    } else {
                        return Err(err);
                    }
                }
            }
        };
        let sub = self.clone();
        let control = control.clone();
        attached.consumer = Some(tokio::spawn(consume(sub, consumer, control)));
        attached.channel = Some(channel);
        attached.tag = tag;
        attached.generation = link.generation;
        Ok(())
    }

    async fn declare_and_consume(
        &self,
        channel: &lapin::Channel,
        tag: ShortString,
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
                tag,
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
