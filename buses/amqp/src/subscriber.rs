//! One subscription's broker side: its queue, binding and consumer (on a channel shared with
//! other subscriptions), made again on every new connection.
//!
//! Acknowledgements: a fan-out subscriber consumes with automatic acks, as Go does (what its
//! private queue holds is nobody else's). A queue subscriber acks explicitly, right after
//! the message is in its buffer: the broker pushes messages to a consumer ahead of time, so
//! between the moment a subscription stops reading and the broker's `basic.cancel-ok`, a
//! shared queue can still hand it messages; with automatic acks those were lost (a call during
//! a server's drain went unanswered), with explicit ones they go back to the queue
//! (`basic.reject`, requeue) and another member takes them. Only the broker sees the
//! difference: publishers and Go members of the queue see the same messages and names.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicRejectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Acker, Consumer, ExchangeKind};
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

/// How long a cancelled queue consumer may take to hand back what the broker had already
/// pushed to it before its task is stopped anyway (the broker answers a cancel at once; this
/// only bounds a channel that stopped answering).
const HAND_BACK_BOUND: Duration = Duration::from_secs(5);

impl Attached {
    /// Ends the consumer. `hand_back`: the consumer's task keeps running until the broker
    /// confirmed the cancel, returning to the queue what arrives meanwhile (queue subscribers
    /// leaving a live channel); otherwise the task stops at once (a channel or connection that
    /// is gone already returned its unacknowledged messages to their queues).
    fn tear_down(&mut self, hand_back: bool) {
        self.generation = 0;
        let mut task = self.consumer.take();
        if let Some(shared) = self.channel.take() {
            shared.release();
            if shared.channel.status().connected() {
                // The broker deletes the auto-delete queue once its last consumer is
                // cancelled.
                let tag = std::mem::take(&mut self.tag);
                let draining = if hand_back { task.take() } else { None };
                tokio::spawn(async move {
                    let _ = shared
                        .channel
                        .basic_cancel(tag, BasicCancelOptions::default())
                        .await;
                    // After `cancel-ok` the consumer's stream ends by itself, once what was
                    // delivered before it went back to the queue.
                    if let Some(mut task) = draining
                        && tokio::time::timeout(HAND_BACK_BOUND, &mut task)
                            .await
                            .is_err()
                    {
                        task.abort();
                    }
                });
            }
        }
        if let Some(task) = task {
            task.abort();
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
        // The old channel or connection is gone (or the consumer ended): nothing to hand back.
        attached.tear_down(false);
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
                    // Go's automatic acks, but for queue members (see the module docs).
                    no_ack: !self.queue,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
    }

    /// Stops for good: the consumer goes (a queue member's after handing back what the broker
    /// had already pushed to it).
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.attached.lock().await.tear_down(self.queue);
    }
}

/// An acknowledgement under way.
type Settling = Pin<Box<dyn Future<Output = lapin::Result<bool>> + Send>>;

/// Moves deliveries into the subscription's buffer; when the consumer ends while the
/// subscription lives (channel closed by the broker, connection lost), asks for a new one.
///
/// A queue member acks each message it buffered (or dropped, counted, on a full buffer) and
/// rejects with requeue each one that arrives after its subscriber stopped reading; it then
/// runs on until the broker confirms the cancel, so nothing pushed to it is lost.
async fn consume(
    sub: Arc<SubState>,
    mut consumer: Consumer,
    control: mpsc::UnboundedSender<Control>,
) {
    let mut settling: FuturesUnordered<Settling> = FuturesUnordered::new();
    let mut handed_back = 0u64;
    loop {
        let delivery = tokio::select! {
            biased;
            // Completions only: each acknowledgement was sent when it was made.
            Some(_) = settling.next(), if !settling.is_empty() => continue,
            delivery = consumer.next() => delivery,
        };
        let Some(delivery) = delivery else { break };
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(err) => {
                tracing::debug!(exchange = %sub.exchange, %err, "amqp consumer failed");
                break;
            }
        };
        let outcome = sub.sink.deliver(Bytes::from(delivery.data));
        if !sub.queue {
            if outcome == Delivery::Closed {
                return;
            }
            continue;
        }
        if outcome == Delivery::Closed {
            handed_back += 1;
        }
        settle(&mut settling, delivery.acker, outcome);
    }
    if handed_back > 0 {
        tracing::debug!(exchange = %sub.exchange, handed_back, "amqp: returned messages a closed queue subscription could not take");
    }
    // Let the last acknowledgements reach the connection (they fail at once on a dead one).
    while settling.next().await.is_some() {}
    if !sub.closed.load(Ordering::Acquire) {
        let _ = control.send(Control::Reattach(sub.id));
    }
}

/// Acks a message the subscription took (a full buffer's drop is counted by the sink, as on
/// every bus), or rejects it back to its queue when the subscriber is gone. The frame is
/// queued on the connection now, in delivery order; `settling` keeps its completion.
fn settle(settling: &mut FuturesUnordered<Settling>, acker: Acker, outcome: Delivery) {
    let mut settle: Settling = if outcome == Delivery::Closed {
        Box::pin(async move { acker.reject(BasicRejectOptions { requeue: true }).await })
    } else {
        Box::pin(async move { acker.ack(BasicAckOptions::default()).await })
    };
    // The first poll hands the frame to the connection; most complete later.
    if (&mut settle).now_or_never().is_none() {
        settling.push(settle);
    }
}
