//! The connection and its supervisor: connects, notices a lost connection, reconnects with
//! backoff and restores every live subscription on the new connection.
//!
//! The client library does not reconnect by itself (its experimental recovery would re-declare
//! server-named queues under their old names); this does it the way the bus needs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use lapin::{Connection, ConnectionProperties, Event};
use tokio::sync::{mpsc, watch};

use crate::AmqpBusOptions;
use crate::publisher::{Publisher, Returns};
use crate::subscriber::SubState;

/// Consumers one channel carries: channels are cheap, but a connection has at most
/// `channel_max` of them (2047 by default on RabbitMQ), and a server registers thousands of
/// subscriptions.
const CONSUMERS_PER_CHANNEL: usize = 200;

/// A channel shared by the consumers of several subscriptions.
pub(crate) struct ConsumerChannel {
    pub(crate) channel: lapin::Channel,
    users: AtomicUsize,
}

impl ConsumerChannel {
    /// One subscription less on this channel.
    pub(crate) fn release(&self) {
        self.users.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection to the broker and its publishing channel.
pub(crate) struct Link {
    /// Counts connections of this bus, from 1.
    pub(crate) generation: u64,
    pub(crate) connection: Connection,
    publisher: Mutex<Arc<Publisher>>,
    consumers: tokio::sync::Mutex<Vec<Arc<ConsumerChannel>>>,
}

impl Link {
    /// A channel with room for one more consumer (counted as taken: [`ConsumerChannel::release`]
    /// gives it back). A channel the broker closed (a failed declare closes it) is left behind;
    /// its consumers end and their subscriptions attach again elsewhere.
    pub(crate) async fn consumer_channel(&self) -> lapin::Result<Arc<ConsumerChannel>> {
        let mut channels = self.consumers.lock().await;
        channels.retain(|c| c.channel.status().connected());
        if let Some(c) = channels
            .iter()
            .find(|c| c.users.load(Ordering::Relaxed) < CONSUMERS_PER_CHANNEL)
        {
            c.users.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        let channel = self.connection.create_channel().await?;
        let shared = Arc::new(ConsumerChannel {
            channel,
            users: AtomicUsize::new(1),
        });
        channels.push(shared.clone());
        Ok(shared)
    }

    pub(crate) fn publisher(&self) -> Arc<Publisher> {
        self.publisher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Requests to the supervisor.
pub(crate) enum Control {
    /// A subscription's consumer ended while the subscription lives: consume again.
    Reattach(u64),
    /// The publishing channel failed or is worn out: open a fresh one.
    RenewPublisher,
}

/// What the bus, its subscriptions and the supervisor share.
pub(crate) struct Shared {
    pub(crate) url: String,
    pub(crate) options: AmqpBusOptions,
    pub(crate) link: watch::Sender<Option<Arc<Link>>>,
    pub(crate) subs: Mutex<HashMap<u64, Arc<SubState>>>,
    pub(crate) returns: Arc<Returns>,
    pub(crate) control: mpsc::UnboundedSender<Control>,
    pub(crate) disconnects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

impl Shared {
    pub(crate) fn subs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<SubState>>> {
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current link, waiting for a reconnection in progress.
    pub(crate) async fn current(&self) -> Arc<Link> {
        let mut rx = self.link.subscribe();
        loop {
            if let Some(link) = rx.borrow_and_update().clone()
                && link.connection.status().connected()
            {
                return link;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `Shared` itself, so this does not happen.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Opens a connection as the bus's options say.
pub(crate) async fn connect(url: &str, options: &AmqpBusOptions) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("psrpc-{}", std::process::id()).into());
    #[cfg(feature = "tls")]
    let tls = options.tls.lapin_config();
    #[cfg(not(feature = "tls"))]
    let tls = lapin::tcp::OwnedTLSConfig::default();
    let runtime = lapin::runtime::default_runtime()?;
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(mut uri) => {
            if uri.query.frame_max.is_none() {
                // RabbitMQ's minimum frame size is 4,096.
                uri.query.frame_max = Some(options.frame_max.max(4096));
            }
            Connection::connect_uri_with_config(uri, properties, tls, runtime).await
        }
        // Let lapin report what is wrong with the URL, in its own words.
        Err(_) => Connection::connect_with_config(url, properties, tls, runtime).await,
    }
}

/// Runs until the bus is dropped (the task is aborted then).
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    first: Connection,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut next = Some(first);
    let mut generation = 0;
    loop {
        let connection = match next.take() {
            Some(connection) => connection,
            None => reconnect(&shared).await,
        };
        generation += 1;
        let events = connection.events_listener();
        let publisher = match Publisher::open(&connection, shared.returns.clone()).await {
            Ok(publisher) => publisher,
            Err(err) => {
                tracing::warn!(%err, "amqp: cannot open the publishing channel; reconnecting");
                let _ = connection.close(200, "retry".into()).await;
                continue;
            }
        };
        let link = Arc::new(Link {
            generation,
            connection,
            publisher: Mutex::new(Arc::new(publisher)),
            consumers: tokio::sync::Mutex::default(),
        });
        shared.link.send_replace(Some(link.clone()));
        if generation > 1 {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("amqp: reconnected; restoring subscriptions");
        }
        restore(&shared, &link).await;
        watch_link(&shared, &link, events, &mut control).await;
        shared.link.send_replace(None);
        shared.disconnects.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("amqp: connection lost; reconnecting");
    }
}

/// Re-attaches every live subscription on `link`; one that fails is retried later.
async fn restore(shared: &Shared, link: &Link) {
    let subs: Vec<Arc<SubState>> = shared.subs().values().cloned().collect();
    for sub in subs {
        if let Err(err) = sub.attach(link, &shared.control).await {
            tracing::warn!(exchange = %sub.exchange, %err, "amqp: cannot restore a subscription");
        }
    }
}

/// Serves control requests until the connection fails.
async fn watch_link(
    shared: &Shared,
    link: &Link,
    events: impl futures::Stream<Item = Event> + Send,
    control: &mut mpsc::UnboundedReceiver<Control>,
) {
    let mut events = std::pin::pin!(events);
    // A safety net for a failure reported by no event.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // Subscriptions whose restore failed while the connection stayed up.
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(err)) => {
                    tracing::debug!(%err, "amqp: error event");
                    if !link.connection.status().connected() {
                        return;
                    }
                    renew_publisher_if_broken(shared, link).await;
                }
                Some(_) => {}
                None => return,
            },
            request = control.recv() => match request {
                Some(Control::Reattach(id)) => {
                    let sub = shared.subs().get(&id).cloned();
                    if let Some(sub) = sub
                        && let Err(err) = sub.attach(link, &shared.control).await
                    {
                        tracing::warn!(exchange = %sub.exchange, %err, "amqp: cannot resubscribe");
                    }
                }
                Some(Control::RenewPublisher) => renew_publisher(shared, link).await,
                None => return,
            },
            _ = tick.tick() => {
                if !link.connection.status().connected() {
                    return;
                }
            }
            _ = retry.tick() => restore(shared, link).await,
        }
        if !link.connection.status().connected() {
            return;
        }
    }
}

async fn renew_publisher_if_broken(shared: &Shared, link: &Link) {
    if !link.publisher().channel.status().connected() {
        renew_publisher(shared, link).await;
    }
}

/// Replaces the publishing channel when it failed or is worn out; the old one closes once its
/// confirms are in.
async fn renew_publisher(shared: &Shared, link: &Link) {
    let current = link.publisher();
    if current.channel.status().connected() && !current.worn_out() {
        return;
    }
    match Publisher::open(&link.connection, shared.returns.clone()).await {
        Ok(publisher) => {
            *link
                .publisher
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Arc::new(publisher);
        }
        Err(err) => tracing::warn!(%err, "amqp: cannot open a publishing channel"),
    }
}

/// Connects again, with exponential backoff between the options' bounds, until it works.
async fn reconnect(shared: &Shared) -> Connection {
    let mut delay = shared.options.min_reconnect_delay;
    loop {
        tokio::time::sleep(delay).await;
        match tokio::time::timeout(
            shared.options.connection_timeout,
            connect(&shared.url, &shared.options),
        )
        .await
        {
            Ok(Ok(connection)) => return connection,
            Ok(Err(err)) => tracing::debug!(%err, "amqp: reconnect failed"),
            Err(_) => tracing::debug!("amqp: reconnect timed out"),
        }
        delay = (delay * 2).min(shared.options.max_reconnect_delay);
    }
}
