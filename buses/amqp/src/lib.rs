//! The AMQP 0-9-1 (RabbitMQ) bus for psrpc, wire-compatible with Go psrpc's AMQP bus.
//!
//! [`AmqpBus`] implements [`psrpc::Bus`] over the [`lapin`] client.
//!
//! # Wire (as Go psrpc)
//!
//! - Payloads are the envelope bytes as given (the same `Msg` envelopes as on Redis: no route
//!   key in `Msg.channel`).
//! - A channel's pipe spelling (`Svc|Method|topic|REQ`, [`Channel::pipe_name`]) with every `|`
//!   replaced by `.` ([`exchange_name`]) names a non-durable, auto-delete **fanout exchange**.
//! - A fan-out subscriber binds an exclusive, auto-delete, server-named queue of its own to it;
//!   a queue subscriber binds the shared, non-exclusive, auto-delete queue named like the
//!   exchange, so the broker hands each message to one consumer across processes.
//! - Fan-out consumers use automatic acknowledgements.
//!
//! # Beyond Go (invisible to Go peers)
//!
//! - **Queue members acknowledge explicitly** (Go's use automatic acks): each message is acked
//!   once in the subscription's buffer, and what the broker pushed to a member that stopped
//!   reading (a server leaving its request channels to drain) goes back to the shared queue
//!   for another member instead of being lost. Only the broker sees the difference.
//! - **Publisher confirms** ([`AmqpBusOptions::confirms`]): a publish resolves once the broker
//!   has the message.
//! - **Fast failure of unserved calls**: [`Bus::publish_watched`] publishes `mandatory` with a
//!   message ID property; the broker returns a message no queue takes, and the returned
//!   [`NoReceivers`] resolves. It resolves too when the broker refuses the message
//!   (`basic.nack`) or its channel fails before the confirm: either way nobody got it, and the
//!   call fails at once rather than at its deadline. (lapin logs each returned message as a `tracing` warning, target
//!   `lapin`: filter it out where unserved calls are routine.)
//! - **Exchanges are declared on publish** (idempotently, pipelined without waiting), so a
//!   publish to a channel nobody ever subscribed to, or whose last subscriber left (the exchange
//!   is auto-deleted with its last binding), never fails the publishing channel with a 404.
//!   Such an exchange has no binding and stays until the broker restarts.
//! - **Reconnection**: a supervisor reconnects with backoff after a lost connection and
//!   restores every live subscription (new server-named queues for fan-out subscribers;
//!   messages published meanwhile are lost, as with any non-durable queue).
//! - **TLS and credentials**: `amqps://user:pass@host:5671/vhost` with the `tls` feature;
//!   credentials and virtual host in the URL either way. [`AmqpTls`] (in
//!   [`AmqpBusOptions`]) adds a trusted certificate authority of your own and a client
//!   certificate. Neither the credentials nor the client key appear in `Debug` output.
//!
//! # One connection per process
//!
//! Each [`AmqpBus`] is one connection, and lapin drives each connection from an I/O thread of
//! its own. Servers and clients of one process should share one bus (it is cheap to clone):
//! on two cores, four servers on four connections ran at about half the calls per second of
//! one (BENCHMARKS.md, session 8), a third of the CPU going to switching between the threads.
//!
//! ```no_run
//! use psrpc::{Client, MethodInfo, Server};
//! use psrpc_amqp::AmqpBus;
//!
//! const ECHO: MethodInfo = MethodInfo::unary("Echo");
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = AmqpBus::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let server = Server::new("Greeter", bus.clone());
//! server
//!     .register_unary(ECHO, &[], |_ctx, req: String| async move { Ok(format!("hi {req}")) })
//!     .await?;
//! let client = Client::new("Greeter", bus).await?;
//! let reply: String = client.request(ECHO, &[], &"bob".to_string(), Default::default()).await?;
//! assert_eq!(reply, "hi bob");
//! # Ok(())
//! # }
//! ```

mod link;
mod publisher;
mod subscriber;
#[cfg(feature = "tls")]
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use psrpc::Channel;
use psrpc::bus::{Bus, BusError, NoReceivers, SubscribeOptions, Subscription};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use link::{Control, Shared};
use publisher::{PublishFailure, Returns};
use subscriber::SubState;
#[cfg(feature = "tls")]
pub use tls::AmqpTls;

/// RabbitMQ's default `max_message_size` since 4.0 (16 MiB; 3.x allowed 128 MiB): the bus's
/// default limit, so a default bus works against either.
pub const RABBITMQ_DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// The longest exchange or queue name AMQP 0-9-1 carries (a short string).
pub const MAX_NAME_LEN: usize = 255;

/// The exchange (and shared queue) name of a channel: its pipe spelling with `|` → `.`.
///
/// ```
/// use psrpc::Channel;
/// let ch = Channel::request("Svc", "Method", ["eu"], true);
/// assert_eq!(psrpc_amqp::exchange_name(&ch), "Svc.Method.eu.REQ");
/// ```
pub fn exchange_name(channel: &Channel) -> String {
    channel.pipe_name().replace('|', ".")
}

/// Options of an [`AmqpBus`].
///
/// ```
/// let options = psrpc_amqp::AmqpBusOptions::default().confirms(true);
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AmqpBusOptions {
    /// The largest payload accepted, in bytes (default [`RABBITMQ_DEFAULT_MAX_MESSAGE`]);
    /// keep it at or below the broker's `max_message_size`. Larger publishes fail with
    /// [`BusError::PayloadTooLarge`].
    pub max_payload: usize,
    /// Wait for the broker's confirm before a publish resolves (default off, as Go).
    pub confirms: bool,
    /// How long a publish or subscribe may wait, a reconnection in progress included
    /// (default 3 s); past it, [`BusError::Timeout`].
    pub operation_timeout: Duration,
    /// How long one connection attempt may take (default 3 s).
    pub connection_timeout: Duration,
    /// First pause between reconnection attempts (default 100 ms), doubled up to
    /// [`max_reconnect_delay`](Self::max_reconnect_delay).
    pub min_reconnect_delay: Duration,
    /// Longest pause between reconnection attempts (default 1 s).
    pub max_reconnect_delay: Duration,
    /// The largest AMQP frame this side proposes, in bytes (default 16 KiB, at least 4,096),
    /// unless the URL sets `frame_max`. lapin keeps read and write buffers of 32 frames per
    /// connection, so RabbitMQ's 128 KiB would cost 8 MiB of memory per connection; bodies
    /// above a frame travel as several frames, for 8 bytes each.
    pub frame_max: u32,
    /// TLS settings for `amqps://` URLs: an extra trusted CA, a client certificate (default:
    /// the platform's roots, no client certificate).
    #[cfg(feature = "tls")]
    pub tls: AmqpTls,
}

impl AmqpBusOptions {
    /// Sets [`max_payload`](Self::max_payload).
    pub fn max_payload(mut self, max_payload: usize) -> Self {
        self.max_payload = max_payload;
        self
    }

    /// Sets [`confirms`](Self::confirms).
    pub fn confirms(mut self, confirms: bool) -> Self {
        self.confirms = confirms;
        self
    }

    /// Sets [`operation_timeout`](Self::operation_timeout).
    pub fn operation_timeout(mut self, operation_timeout: Duration) -> Self {
        self.operation_timeout = operation_timeout;
        self
    }

    /// Sets [`connection_timeout`](Self::connection_timeout).
    pub fn connection_timeout(mut self, connection_timeout: Duration) -> Self {
        self.connection_timeout = connection_timeout;
        self
    }

    /// Sets [`min_reconnect_delay`](Self::min_reconnect_delay).
    pub fn min_reconnect_delay(mut self, min_reconnect_delay: Duration) -> Self {
        self.min_reconnect_delay = min_reconnect_delay;
        self
    }

    /// Sets [`max_reconnect_delay`](Self::max_reconnect_delay).
    pub fn max_reconnect_delay(mut self, max_reconnect_delay: Duration) -> Self {
        self.max_reconnect_delay = max_reconnect_delay;
        self
    }

    /// Sets [`frame_max`](Self::frame_max).
    pub fn frame_max(mut self, frame_max: u32) -> Self {
        self.frame_max = frame_max;
        self
    }

    /// Sets [`tls`](Self::tls).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: AmqpTls) -> Self {
        self.tls = tls;
        self
    }
}

impl Default for AmqpBusOptions {
    fn default() -> Self {
        AmqpBusOptions {
            max_payload: RABBITMQ_DEFAULT_MAX_MESSAGE,
            confirms: false,
            operation_timeout: Duration::from_secs(3),
            connection_timeout: Duration::from_secs(3),
            min_reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_secs(1),
            frame_max: 16 * 1024,
            #[cfg(feature = "tls")]
            tls: AmqpTls::default(),
        }
    }
}

/// Why an [`AmqpBus`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpBusError {
    /// The broker could not be reached, refused the credentials, or the URL is invalid.
    #[error("cannot connect to the amqp broker: {0}")]
    Connect(#[source] lapin::Error),
    /// The connection attempt took longer than [`AmqpBusOptions::connection_timeout`].
    #[error("connecting to the amqp broker timed out")]
    Timeout,
}

impl From<AmqpBusError> for BusError {
    fn from(err: AmqpBusError) -> Self {
        BusError::Connection(Box::new(err))
    }
}

/// Counters of an [`AmqpBus`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AmqpBusStats {
    /// Connections lost.
    pub disconnects: u64,
    /// Connections made again after a loss.
    pub reconnects: u64,
    /// Live subscriptions.
    pub subscriptions: usize,
}

/// A psrpc bus over AMQP 0-9-1. Cloning gives another handle to the same bus (one
/// connection); it closes when the last handle and subscription are gone.
///
/// See the [crate docs](crate) for the wire and the design.
#[derive(Clone)]
pub struct AmqpBus {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    supervisor: JoinHandle<()>,
    /// For the clean-ups of `Drop`s, which may run outside the runtime.
    runtime: tokio::runtime::Handle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.supervisor.abort();
        if let Some(link) = self.shared.link.send_replace(None) {
            self.runtime.spawn(async move {
                let _ = link.connection.close(200, "bye".into()).await;
            });
        }
    }
}

impl std::fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBus")
            .field("options", &self.inner.shared.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AmqpBus {
    /// Connects to the broker at `url` (`amqp://user:pass@host:5672/vhost`, the virtual host
    /// percent-encoded, `%2f` for `/`), with default options.
    ///
    /// # Errors
    /// [`AmqpBusError::Connect`] when the broker cannot be reached or refuses the connection
    /// (one attempt: the bus needs a broker to start; only later losses are retried).
    pub async fn connect(url: &str) -> Result<Self, AmqpBusError> {
        Self::with_options(url, AmqpBusOptions::default()).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), and [`AmqpBusError::Timeout`].
    pub async fn with_options(url: &str, options: AmqpBusOptions) -> Result<Self, AmqpBusError> {
        let connection =
            tokio::time::timeout(options.connection_timeout, link::connect(url, &options))
                .await
                .map_err(|_| AmqpBusError::Timeout)?
                .map_err(AmqpBusError::Connect)?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            url: url.to_string(),
            options,
            link: watch::Sender::new(None),
            subs: Default::default(),
            returns: Arc::new(Returns::default()),
            control,
            disconnects: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        });
        let supervisor = tokio::spawn(link::supervise(shared.clone(), connection, control_rx));
        let bus = AmqpBus {
            inner: Arc::new(Inner {
                shared,
                next_id: AtomicU64::new(1),
                supervisor,
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        // Ready once the supervisor has opened the publishing channel.
        let timeout = bus.inner.shared.options.connection_timeout;
        tokio::time::timeout(timeout, bus.inner.shared.current())
            .await
            .map_err(|_| AmqpBusError::Timeout)?;
        Ok(bus)
    }

    /// The options in force.
    pub fn options(&self) -> &AmqpBusOptions {
        &self.inner.shared.options
    }

    /// A snapshot of the bus's counters.
    pub fn stats(&self) -> AmqpBusStats {
        let shared = &self.inner.shared;
        AmqpBusStats {
            disconnects: shared.disconnects.load(Ordering::Relaxed),
            reconnects: shared.reconnects.load(Ordering::Relaxed),
            subscriptions: shared.subs().len(),
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.shared.options.operation_timeout
    }

    /// Publishes; `watch` is the message ID a return is reported under.
    async fn publish_impl(
        &self,
        channel: &Channel,
        payload: &[u8],
        watch: Option<u64>,
    ) -> Result<(), BusError> {
        let shared = &self.inner.shared;
        psrpc::bus::check_payload_size(payload.len(), shared.options.max_payload)?;
        let exchange = checked_name(channel, BusError::Publish)?;
        let deadline = self.deadline();
        let link = tokio::time::timeout_at(deadline, shared.current())
            .await
            .map_err(|_| BusError::Timeout)?;
        let publisher = link.publisher();
        if publisher.worn_out() {
            let _ = shared.control.send(Control::RenewPublisher);
        }
        let (confirmed, outcome) = if shared.options.confirms {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let sent = tokio::time::timeout_at(
            deadline,
            publisher.publish(&exchange, payload, watch, confirmed),
        )
        .await
        .map_err(|_| BusError::Timeout)?;
        if let Err(err) = sent {
            let _ = shared.control.send(Control::RenewPublisher);
            return Err(BusError::Connection(Box::new(err)));
        }
        if let Some(outcome) = outcome {
            match tokio::time::timeout_at(deadline, outcome).await {
                Err(_) => return Err(BusError::Timeout),
                Ok(Err(_)) => return Err(BusError::Publish("confirm lost".into())),
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(PublishFailure::Nacked))) => {
                    return Err(BusError::Publish(Box::new(PublishFailure::Nacked)));
                }
                Ok(Ok(Err(err @ PublishFailure::Lost(_)))) => {
                    return Err(BusError::Connection(Box::new(err)));
                }
            }
        }
        Ok(())
    }

    async fn publish_watched_impl(
        &self,
        channel: &Channel,
        payload: &[u8],
    ) -> Result<NoReceivers, BusError> {
        let returns = self.inner.shared.returns.clone();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        returns.insert(id, tx);
        let forget = Forget { returns, id };
        self.publish_impl(channel, payload, Some(id)).await?;
        Ok(NoReceivers::later(async move {
            let _forget = forget;
            if rx.await.is_err() {
                // Nobody will report a return: somebody received it, or we cannot tell.
                std::future::pending::<()>().await;
            }
        }))
    }

    async fn subscribe_impl(
        &self,
        channel: &Channel,
        options: SubscribeOptions,
    ) -> Result<Subscription, BusError> {
        let shared = &self.inner.shared;
        let exchange = checked_name(channel, BusError::Subscribe)?;
        let (sink, sub) = Subscription::new(exchange.as_str(), options.capacity);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(SubState::new(id, exchange, channel.is_queue(), sink));
        shared.subs().insert(id, state.clone());
        // Made before the broker work, so a cancelled subscribe still cleans up.
        let guard = Unsubscribe {
            bus: self.inner.clone(),
            state: state.clone(),
        };
        let deadline = self.deadline();
        loop {
            let link = tokio::time::timeout_at(deadline, shared.current())
                .await
                .map_err(|_| BusError::Timeout)?;
            match tokio::time::timeout_at(deadline, state.attach(&link, &shared.control)).await {
                Err(_) => return Err(BusError::Timeout),
                Ok(Ok(())) => return Ok(sub.with_guard(guard)),
                // The connection went meanwhile: the next one will do.
                Ok(Err(_)) if !link.connection.status().connected() => continue,
                Ok(Err(err)) => return Err(BusError::Subscribe(Box::new(err))),
            }
        }
    }
}

/// The channel's exchange name, refused when AMQP cannot carry it.
fn checked_name(
    channel: &Channel,
    error: fn(psrpc::bus::BoxError) -> BusError,
) -> Result<String, BusError> {
    let name = exchange_name(channel);
    if name.len() > MAX_NAME_LEN {
        return Err(error(
            format!(
                "exchange name of {} bytes exceeds AMQP's {MAX_NAME_LEN}",
                name.len()
            )
            .into(),
        ));
    }
    Ok(name)
}

/// Forgets a watched publish when its [`NoReceivers`] goes.
struct Forget {
    returns: Arc<Returns>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.returns.remove(&self.id);
    }
}

/// Ends a subscription at the broker when its [`Subscription`] goes.
struct Unsubscribe {
    // Strong: a subscription keeps its bus (and its connection) alive, per the Bus contract.
    bus: Arc<Inner>,
    state: Arc<SubState>,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.bus.shared.subs().remove(&self.state.id);
        let state = self.state.clone();
        // Keeps the bus alive until the channel is closed.
        let bus = self.bus.clone();
        self.bus.runtime.spawn(async move {
            state.close().await;
            drop(bus);
        });
    }
}

impl Bus for AmqpBus {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { self.publish_impl(channel, &payload, None).await })
    }

    /// Publishes `mandatory`: the broker returns a message no queue takes, and the
    /// [`NoReceivers`] resolves.
    fn publish_watched<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<NoReceivers, BusError>> {
        Box::pin(async move { self.publish_watched_impl(channel, &payload).await })
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(self.subscribe_impl(channel, options))
    }

    /// Waits until the broker has confirmed everything published before (the publishing
    /// channel is in confirm mode whatever the options say), within the operation timeout.
    /// Resolves at once while disconnected: what was not confirmed then is lost either way.
    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let Some(link) = self.inner.shared.link.borrow().clone() else {
                return Ok(());
            };
            let publisher = link.publisher();
            let deadline = self.deadline();
            match tokio::time::timeout_at(deadline, publisher.channel.wait_for_confirms()).await {
                Err(_) => Err(BusError::Timeout),
                Ok(Err(err)) => Err(BusError::Connection(Box::new(err))),
                Ok(Ok(_)) => Ok(()),
            }
        })
    }

    fn max_payload(&self) -> usize {
        self.inner.shared.options.max_payload
    }

    fn name(&self) -> &'static str {
        "amqp"
    }
}
