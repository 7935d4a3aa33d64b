//! The yardsticks: each bus's own client without psrpc.
//!
//! - NATS: async-nats request/reply to queue-subscribed responders, publish/subscribe.
//! - Redis: pub/sub ping-pong between RESP3 connections, publish/subscribe.
//! - MQTT: ping-pong between rumqttc connections (QoS 0), publish/subscribe (see `raw_mqtt`).
//! - in-process: the [`LocalBus`] used directly (psrpc's transport without its RPC layer).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use psrpc::Channel;
use psrpc::bus::{Bus, LocalBus, SubscribeOptions};
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::env::{BusKind, Fabric};
use crate::harness::{Caller, Result};
use crate::raw_mqtt::MqttLink;

/// How long a raw caller waits for its answer before counting an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// One raw connection that can publish (and, made by [`Link::subscribe`], receive).
#[derive(Clone)]
pub enum Link {
    /// The scenario's in-process bus.
    Local(LocalBus),
    /// An async-nats connection.
    Nats(async_nats::Client),
    /// A RESP3 Redis connection (it can publish while subscribed).
    Redis(MultiplexedConnection),
    /// A lapin connection and a channel on it.
    Amqp(Arc<(lapin::Connection, lapin::Channel)>),
    /// A rumqttc MQTT 5 connection.
    Mqtt(MqttLink),
}

/// A raw channel name, with its in-process spelling made once.
#[derive(Clone)]
pub struct RawChannel {
    name: Arc<str>,
    local: Channel,
}

impl RawChannel {
    /// A channel called `name`; `queue` makes it a queue channel on the in-process bus.
    pub fn new(name: &str, queue: bool) -> Self {
        RawChannel {
            name: name.into(),
            local: Channel::request("Raw", name, std::iter::empty::<String>(), queue),
        }
    }
}

impl Link {
    /// A new connection (the shared bus for in-process).
    ///
    /// # Errors
    /// A failed connection.
    pub async fn connect(fabric: &Fabric<'_>) -> Result<Link> {
        Ok(match fabric.kind {
            BusKind::Local => Link::Local(fabric.local().clone()),
            BusKind::Nats => Link::Nats(async_nats::connect(fabric.brokers().nats_url()?).await?),
            BusKind::Redis => {
                Link::Redis(redis_connection(fabric.brokers().redis_url()?, None).await?)
            }
            BusKind::Amqp => Link::Amqp(Arc::new(amqp_connection(fabric).await?)),
            BusKind::Mqtt => Link::Mqtt(
                MqttLink::connect(fabric.brokers().mqtt_url()?, None)
                    .await?
                    .0,
            ),
        })
    }

    /// A new connection subscribed to `channel` (as a queue member if `queue`, on NATS and the
    /// in-process bus) and the stream of payloads it receives.
    ///
    /// # Errors
    /// A failed connection or subscribe.
    pub async fn subscribe(
        fabric: &Fabric<'_>,
        channel: &RawChannel,
        queue: bool,
    ) -> Result<(Link, BoxStream<'static, Bytes>)> {
        match fabric.kind {
            BusKind::Local => {
                let bus = fabric.local().clone();
                let mut channel = channel.local.clone();
                if queue != channel.is_queue() {
                    channel = Channel::request(
                        "Raw",
                        channel.node(),
                        std::iter::empty::<String>(),
                        queue,
                    );
                }
                let sub = bus
                    .subscribe(&channel, SubscribeOptions::default().capacity(1 << 16))
                    .await?;
                Ok((Link::Local(bus), sub.boxed()))
            }
            BusKind::Nats => {
                let client = async_nats::connect(fabric.brokers().nats_url()?).await?;
                let name = channel.name.to_string();
                let sub = if queue {
                    client.queue_subscribe(name, "q".to_owned()).await?
                } else {
                    client.subscribe(name).await?
                };
                // Written out now; callers still let it settle before publishing from another
                // connection.
                client.flush().await?;
                Ok((Link::Nats(client), sub.map(|m| m.payload).boxed()))
            }
            BusKind::Redis => {
                let (tx, rx) = mpsc::unbounded_channel::<PushInfo>();
                let mut conn = redis_connection(fabric.brokers().redis_url()?, Some(tx)).await?;
                conn.subscribe(&*channel.name).await?;
                let payloads = tokio_stream_of(rx).filter_map(|push| async move {
                    if push.kind != PushKind::Message {
                        return None;
                    }
                    match push.data.into_iter().nth(1) {
                        Some(Value::BulkString(payload)) => Some(Bytes::from(payload)),
                        _ => None,
                    }
                });
                Ok((Link::Redis(conn), payloads.boxed()))
            }
            BusKind::Amqp => {
                let (conn, amqp) = amqp_connection(fabric).await?;
                let consumer = amqp_consume(&amqp, &channel.name, queue).await?;
                let payloads = consumer.filter_map(|delivery| async move {
                    delivery.ok().map(|d| Bytes::from(d.data))
                });
                Ok((Link::Amqp(Arc::new((conn, amqp))), payloads.boxed()))
            }
            BusKind::Mqtt => {
                let filter = if queue {
                    format!("$share/psrpc/{}", channel.name)
                } else {
                    channel.name.to_string()
                };
                let (link, payloads) =
                    MqttLink::connect(fabric.brokers().mqtt_url()?, Some(&filter)).await?;
                Ok((Link::Mqtt(link), payloads))
            }
        }
    }

    /// Publishes `payload` to `channel`; the future owns what it needs.
    pub fn publish(
        &self,
        channel: &RawChannel,
        payload: Bytes,
    ) -> futures::future::BoxFuture<'static, Result<()>> {
        match self {
            Link::Local(bus) => {
                let result = bus.publish(&channel.local, payload).now_or_never();
                Box::pin(std::future::ready(match result {
                    Some(Ok(())) => Ok(()),
                    Some(Err(err)) => Err(err.into()),
                    None => Err("in-process publish did not complete at once".into()),
                }))
            }
            Link::Nats(client) => {
                let client = client.clone();
                let subject = channel.name.to_string();
                Box::pin(async move { Ok(client.publish(subject, payload).await?) })
            }
            Link::Amqp(link) => {
                let link = link.clone();
                let exchange = lapin::types::ShortString::from(&*channel.name);
                Box::pin(async move {
                    link.1
                        .basic_publish(
                            exchange,
                            "".into(),
                            lapin::options::BasicPublishOptions::default(),
                            &payload,
                            lapin::BasicProperties::default(),
                        )
                        .await?;
                    Ok(())
                })
            }
            Link::Redis(conn) => {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(&*channel.name).arg(payload.as_ref());
                Box::pin(async move {
                    cmd.query_async::<i64>(&mut conn).await?;
                    Ok(())
                })
            }
            Link::Mqtt(link) => link.publish(&channel.name, payload),
        }
    }
}

fn tokio_stream_of<T: Send + 'static>(mut rx: mpsc::UnboundedReceiver<T>) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// A RESP3 connection, with a push sender if given (needed to subscribe).
async fn redis_connection(
    url: &str,
    pushes: Option<mpsc::UnboundedSender<PushInfo>>,
) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let info = client.get_connection_info().clone();
    let resp3 = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(resp3))?;
    let mut config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(CALL_TIMEOUT));
    if let Some(tx) = pushes {
        config = config.set_push_sender(tx);
    }
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// A lapin connection to the run's AMQP broker and a channel on it.
async fn amqp_connection(fabric: &Fabric<'_>) -> Result<(lapin::Connection, lapin::Channel)> {
    let conn = lapin::Connection::connect(
        fabric.brokers().amqp_url()?,
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = conn.create_channel().await?;
    Ok((conn, channel))
}

/// Declares `name` as Go's fanout exchange, binds a queue to it (shared and named like it for
/// a queue member, server-named and exclusive otherwise) and consumes with automatic acks.
async fn amqp_consume(
    channel: &lapin::Channel,
    name: &str,
    queue: bool,
) -> Result<lapin::Consumer> {
    use lapin::options::{
        BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    channel
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let (queue_name, options) = if queue {
        (
            name,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
        )
    } else {
        (
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
        )
    };
    let declared = channel
        .queue_declare(queue_name.into(), options, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            declared.name().clone(),
            name.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(channel
        .basic_consume(
            declared.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?)
}

/// A payload of `size` bytes (at least 8) starting with `tag` (little endian).
pub fn payload(size: usize, tag: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(8));
    buf.put_u64_le(tag);
    buf.resize(size.max(8), 0xab);
    buf.freeze()
}

/// The tag a payload starts with.
pub fn tag(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Raw NATS request/reply: `responders` queue subscribers echo, callers use
/// `async_nats::Client::request`.
pub struct NatsRequestReply {
    client: async_nats::Client,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NatsRequestReply {
    /// Starts the responders, each on a connection of its own, and connects the caller.
    ///
    /// # Errors
    /// A failed connection or subscribe.
    pub async fn start(fabric: &Fabric<'_>, responders: usize) -> Result<Self> {
        let url = fabric.brokers().nats_url()?;
        let mut tasks = Vec::new();
        for _ in 0..responders {
            let client = async_nats::connect(url).await?;
            let mut sub = client.queue_subscribe("bench.rr", "q".to_owned()).await?;
            client.flush().await?;
            tasks.push(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    if let Some(reply) = msg.reply
                        && client.publish(reply, msg.payload).await.is_err()
                    {
                        break;
                    }
                }
            }));
        }
        let client = async_nats::connect(url).await?;
        // Let every SUB settle before the first request (they came from other connections).
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(NatsRequestReply { client, tasks })
    }

    /// A caller sending `size`-byte requests.
    pub fn caller(&self, size: usize) -> impl Caller {
        let client = self.client.clone();
        let body = payload(size, 0);
        crate::harness::FnCaller(move |_seq| {
            let client = client.clone();
            let body = body.clone();
            async move {
                client.request("bench.rr", body).await?;
                Ok(())
            }
        })
    }
}

impl Drop for NatsRequestReply {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Raw ping-pong over pub/sub (Redis, in-process): a responder connection subscribed to
/// `ping` publishes every payload back on `pong`; the caller connection is subscribed to
/// `pong`, and its reader hands each pong to the caller whose index the payload carries.
pub struct PingPong {
    link: Link,
    ping: RawChannel,
    callers: Vec<Option<mpsc::UnboundedReceiver<()>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PingPong {
    /// Sets up both ends for up to `callers` concurrent callers.
    ///
    /// # Errors
    /// A failed connection or subscribe.
    pub async fn start(fabric: &Fabric<'_>, callers: usize) -> Result<Self> {
        let ping = RawChannel::new("bench.ping", false);
        let pong = RawChannel::new("bench.pong", false);
        let (responder, pings) = Link::subscribe(fabric, &ping, false).await?;
        let (link, pongs) = Link::subscribe(fabric, &pong, false).await?;
        let responder_task = tokio::spawn(respond(responder, pings, pong));
        let mut senders = Vec::with_capacity(callers);
        let mut receivers = Vec::with_capacity(callers);
        for _ in 0..callers {
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let reader = tokio::spawn(async move {
            let mut pongs = pongs;
            while let Some(payload) = pongs.next().await {
                if let Some(tx) = tag(&payload).and_then(|t| senders.get(t as usize)) {
                    let _ = tx.send(());
                }
            }
        });
        Ok(PingPong {
            link,
            ping,
            callers: receivers,
            tasks: vec![responder_task, reader],
        })
    }

    /// Caller number `index` (each index once), sending `size`-byte pings.
    ///
    /// # Panics
    /// If the index was taken already or is out of range.
    pub fn caller(&mut self, index: usize, size: usize) -> PingCaller {
        PingCaller {
            link: self.link.clone(),
            ping: self.ping.clone(),
            replies: self.callers[index].take().expect("each caller index once"),
            body: payload(size, index as u64),
        }
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Echoes pings as pongs; publishes are pipelined, not awaited one by one.
async fn respond(link: Link, mut pings: BoxStream<'static, Bytes>, pong: RawChannel) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            ping = pings.next() => match ping {
                Some(payload) => in_flight.push(link.publish(&pong, payload)),
                None => break,
            },
            Some(_) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
}

/// One caller of a [`PingPong`].
pub struct PingCaller {
    link: Link,
    ping: RawChannel,
    replies: mpsc::UnboundedReceiver<()>,
    body: Bytes,
}

impl Caller for PingCaller {
    async fn call(&mut self, _seq: u64) -> Result<()> {
        self.link.publish(&self.ping, self.body.clone()).await?;
        match tokio::time::timeout(CALL_TIMEOUT, self.replies.recv()).await {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err("ping-pong reader stopped".into()),
            Err(_) => Err("raw ping-pong timed out".into()),
        }
    }
}
