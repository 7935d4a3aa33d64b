//! The Redis bus for psrpc, wire-compatible with Go psrpc v0.7 on Redis.
//!
//! [`RedisBus`] implements [`psrpc::Bus`]. Channels are Redis pub/sub channels named with
//! [`Channel::pipe_name`] (`Svc|Method|topic|REQ`, docs/wire.md §4.1); payloads are the envelope bytes
//! as given, published with `PUBLISH`.
//!
//! # Design
//!
//! - **One push connection per bus for receiving.** Every subscription of a bus shares one RESP3
//!   connection (a [`redis::aio::ConnectionManager`] with a push sender and automatic
//!   resubscription). The push sender demultiplexes each message by channel name straight
//!   into the bounded buffers of the local subscriptions, inside the connection's own task
//!   (no unbounded queue, no hand-off to another task per message). Delivery never waits: a
//!   full buffer drops the message and counts it (see [`psrpc::bus::SubscriptionSink::deliver`]),
//!   so one slow subscriber never stalls the others.
//! - **One Redis SUBSCRIBE per channel name**, shared by all local subscribers of that name;
//!   `UNSUBSCRIBE` is sent when the last one goes. [`Bus::subscribe`] returns once the server
//!   has confirmed the SUBSCRIBE, so a message published after it returns is delivered.
//! - **A separate connection for commands**: `PUBLISH` and the queue lock `SET`s, written by
//!   one writer task that sends whatever has queued up as one pipeline (bounded queue,
//!   [`RedisBusOptions::publish_queue`]); each caller still gets its own reply or error.
//!   [`Bus::flush`] waits until everything queued before has been answered by Redis.
//! - **Reconnects** are handled by the connection manager: after the server comes back the
//!   push connection resubscribes every channel by itself (messages published meanwhile are
//!   lost, as with any Redis pub/sub). A periodic `PING` on the push connection
//!   ([`RedisBusOptions::health_check_interval`]) notices dead connections even when the bus
//!   is idle and retries when an earlier reconnect gave up.
//!
//! # Queue channels (Go's lock rule, docs/wire.md §7)
//!
//! Redis has no queue groups, so a channel with [`Channel::is_queue`] works as in Go psrpc:
//! every queue subscriber (in every process) receives every message; on receipt each bus runs
//! `SET <key> <random> EX 5 NX` with key = standard base64 (with padding) of the SHA-256 of the
//! whole payload ([`queue_lock_key`]), and only the bus that set the key delivers the message,
//! to one of its local queue subscribers (round robin). Rust and Go members of the same queue
//! therefore share the work.
//!
//! **Consequence: identical payloads published to queue channels within 5 seconds are delivered
//! only once** (the second finds the key set). RPC requests never repeat (each carries a fresh
//! request ID and timestamps); queue *subscriptions* publishing the same message twice in quick
//! succession see the second one swallowed, exactly as Go peers do.
//!
//! The lock `SET`s run off the reader task, at most [`RedisBusOptions::max_concurrent_locks`]
//! at once; messages waiting for a lock queue up to [`RedisBusOptions::max_pending_locks`], past
//! which they are dropped and counted on the queue subscriber whose turn it was.
//!
//! ```no_run
//! use psrpc::{Client, MethodInfo, Server};
//! use psrpc_redis::RedisBus;
//!
//! const ECHO: MethodInfo = MethodInfo::unary("Echo");
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = RedisBus::connect("redis://127.0.0.1:6379/").await?;
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

pub mod durable;
mod lock;
mod router;
mod writer;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use psrpc::Channel;
use psrpc::bus::{Bus, BusError, NoReceivers, SubscribeOptions, Subscription};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, RedisError, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use lock::LockJob;
pub use lock::{QUEUE_LOCK_TTL_SECS, queue_lock_key};
use router::{Entry, Router};
use writer::Writer;

/// The largest value Redis accepts (`proto-max-bulk-len` default): 512 MiB.
pub const REDIS_MAX_PAYLOAD: usize = 512 << 20;

/// Options of a [`RedisBus`].
///
/// ```
/// use std::time::Duration;
/// let options = psrpc_redis::RedisBusOptions {
///     max_payload: 8 << 20,
///     response_timeout: Some(Duration::from_secs(10)),
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct RedisBusOptions {
    /// The largest payload accepted, in bytes (default 64 MiB, capped at
    /// [`REDIS_MAX_PAYLOAD`]). Larger publishes fail with [`BusError::PayloadTooLarge`].
    pub max_payload: usize,
    /// How long one Redis command (PUBLISH, SUBSCRIBE, UNSUBSCRIBE, lock SET, PING) may take,
    /// including waiting for a reconnect in progress; `None` waits forever.
    ///
    /// Default 3 s, replacing the redis crate's 500 ms: go-redis (the Go peers) uses 3 s, it is
    /// psrpc's default call timeout, so a publish never gives up before the call it serves, and
    /// it leaves room to write a large payload. A timed-out command may still have reached the
    /// server: [`BusError::Timeout`] means "unknown", not "not sent".
    pub response_timeout: Option<Duration>,
    /// How long one connection attempt may take (default 3 s); `None` waits forever.
    pub connection_timeout: Option<Duration>,
    /// Longest pause between reconnection attempts (default 1 s), so a restarted server is
    /// found again quickly.
    pub max_reconnect_delay: Duration,
    /// Interval of the `PING` on the push connection that detects a dead connection while
    /// idle and restarts reconnecting after the connection manager gave up (default 1 s);
    /// `None` disables it.
    pub health_check_interval: Option<Duration>,
    /// Lock `SET`s for queue channels in flight at once (default 1024; they are pipelined with
    /// the publishes, so many in flight cost little).
    pub max_concurrent_locks: usize,
    /// Queue messages waiting for a lock `SET` slot (default 4096); past it they are dropped
    /// and counted.
    pub max_pending_locks: usize,
    /// Commands (`PUBLISH`, lock `SET`) waiting to be written (default 4096). A publish waits
    /// for room when the queue is full, so this bounds the memory a burst of publishes holds.
    pub publish_queue: usize,
    /// The most commands sent in one pipeline (default 512).
    pub max_batch: usize,
}

impl Default for RedisBusOptions {
    fn default() -> Self {
        RedisBusOptions {
            max_payload: 64 << 20,
            response_timeout: Some(Duration::from_secs(3)),
            connection_timeout: Some(Duration::from_secs(3)),
            max_reconnect_delay: Duration::from_secs(1),
            health_check_interval: Some(Duration::from_secs(1)),
            max_concurrent_locks: 1024,
            max_pending_locks: 4096,
            publish_queue: 4096,
            max_batch: 512,
        }
    }
}

/// Why a [`RedisBus`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBusError {
    /// The URL or client configuration was rejected.
    #[error("invalid redis configuration: {0}")]
    Config(#[source] RedisError),
    /// The server could not be reached, or refused the connection (e.g. a wrong password).
    #[error("cannot connect to redis: {0}")]
    Connect(#[source] RedisError),
}

impl From<RedisBusError> for BusError {
    fn from(err: RedisBusError) -> Self {
        BusError::Connection(Box::new(err))
    }
}

/// Counters of a [`RedisBus`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisBusStats {
    /// Messages pushed by the server on the receiving connection.
    pub received: u64,
    /// Messages for channels no local subscriber listens to (any more).
    pub unroutable: u64,
    /// Queue messages this bus won the lock for.
    pub locks_won: u64,
    /// Queue messages another member won.
    pub locks_lost: u64,
    /// Queue lock `SET`s that failed (the message was not delivered here).
    pub lock_errors: u64,
    /// Queue messages dropped because too many were waiting for a lock `SET`.
    pub lock_overflow: u64,
    /// Times the receiving connection was lost.
    pub disconnects: u64,
    /// Redis channels this bus is subscribed to (or subscribing).
    pub channels: usize,
}

/// A psrpc bus over Redis pub/sub. Cloning gives another handle to the same bus (the same two
/// connections); the connections close when the last handle and subscription are gone.
///
/// See the [crate docs](crate) for the design and the queue lock rule.
///
/// ```no_run
/// use psrpc::{Channel, bus::{Bus, SubscribeOptions}};
/// use psrpc_redis::{RedisBus, RedisBusOptions};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // From a URL ...
/// let bus = RedisBus::connect("redis://127.0.0.1:6379/").await?;
/// // ... or from your own client (password, TLS, database), with options.
/// let client = redis::Client::open("redis://:secret@127.0.0.1:6379/0")?;
/// let other = RedisBus::with_options(client, RedisBusOptions::default()).await?;
///
/// let ch = Channel::request("Svc", "Events", ["room1"], false);
/// let mut sub = bus.subscribe(&ch, SubscribeOptions::default()).await?;
/// let receivers = other.publish_counted(&ch, bytes::Bytes::from_static(b"hello")).await?;
/// assert_eq!(receivers, 1);
/// assert_eq!(sub.recv().await.as_deref(), Some(&b"hello"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    router: Arc<Router>,
    /// The RESP3 connection carrying SUBSCRIBE / UNSUBSCRIBE and the pushed messages.
    sub_conn: ConnectionManager,
    /// Writes PUBLISH and the lock SETs, batched into pipelines, on the command connection.
    writer: Writer,
    options: RedisBusOptions,
    next_id: AtomicU64,
    runtime: tokio::runtime::Handle,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Subscriptions outliving the bus see the end of their stream.
        for entry in self.router.channels.iter() {
            entry.clear();
        }
        self.router.channels.clear();
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("channels", &self.inner.router.channels.len())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects to the server at `url` (e.g. `redis://:password@host:6379/0`, or `rediss://`
    /// when the redis crate is built with a TLS feature), with default options.
    ///
    /// # Errors
    /// [`RedisBusError::Config`] for a bad URL, [`RedisBusError::Connect`] when the server
    /// cannot be reached or refuses the connection (one attempt, no retries: the bus needs a
    /// server to start; only later losses are retried).
    pub async fn connect(url: &str) -> Result<Self, RedisBusError> {
        let client = redis::Client::open(url).map_err(RedisBusError::Config)?;
        Self::with_options(client, RedisBusOptions::default()).await
    }

    /// A bus on `client` (reusing its address, credentials, TLS and database), with default
    /// options.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn new(client: redis::Client) -> Result<Self, RedisBusError> {
        Self::with_options(client, RedisBusOptions::default()).await
    }

    /// A bus on `client` with `options`. Both connections speak RESP3 whatever `client` says,
    /// since the receiving connection needs push messages.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn with_options(
        client: redis::Client,
        mut options: RedisBusOptions,
    ) -> Result<Self, RedisBusError> {
        options.max_payload = options.max_payload.min(REDIS_MAX_PAYLOAD);
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client =
            redis::Client::open(info.set_redis_settings(resp3)).map_err(RedisBusError::Config)?;

        // One plain attempt first: the managers below retry with backoff for seconds, which
        // would hide a wrong password or an unreachable server behind a long wait.
        let probe = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(options.connection_timeout)
            .set_response_timeout(options.response_timeout);
        drop(
            client
                .get_multiplexed_async_connection_with_config(&probe)
                .await
                .map_err(RedisBusError::Connect)?,
        );

        let base = ConnectionManagerConfig::new()
            .set_response_timeout(options.response_timeout)
            .set_connection_timeout(options.connection_timeout)
            .set_max_delay(options.max_reconnect_delay);
        let router = Arc::new(Router::default());
        let (lock_tx, lock_rx) = mpsc::channel(options.max_pending_locks.max(1));
        // Pushes are routed where the connection decodes them: no queue and no task hand-off
        // per message, and delivery never waits (full buffers drop and count).
        let push_router = router.clone();
        let push_sender = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
            route_push(&push_router, &lock_tx, push);
            Ok(())
        };
        let sub_config = base
            .clone()
            .set_push_sender(push_sender)
            .set_automatic_resubscription();
        let sub_conn = ConnectionManager::new_with_config(client.clone(), sub_config)
            .await
            .map_err(RedisBusError::Connect)?;
        let cmd_conn = ConnectionManager::new_with_config(client, base)
            .await
            .map_err(RedisBusError::Connect)?;

        let writer = Writer::start(
            cmd_conn,
            options.publish_queue,
            options.max_batch,
            options.response_timeout,
        );
        let mut tasks = vec![tokio::spawn(lock::dispatch(
            lock_rx,
            writer.clone(),
            router.clone(),
            options.max_concurrent_locks,
        ))];
        if let Some(interval) = options.health_check_interval {
            tasks.push(tokio::spawn(health_check(
                sub_conn.clone(),
                interval,
                options.response_timeout,
            )));
        }
        Ok(RedisBus {
            inner: Arc::new(Inner {
                router,
                sub_conn,
                writer,
                options,
                next_id: AtomicU64::new(0),
                runtime: tokio::runtime::Handle::current(),
                tasks,
            }),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &RedisBusOptions {
        &self.inner.options
    }

    /// A snapshot of the bus's counters.
    pub fn stats(&self) -> RedisBusStats {
        let c = &self.inner.router.counters;
        RedisBusStats {
            received: c.received.load(Ordering::Relaxed),
            unroutable: c.unroutable.load(Ordering::Relaxed),
            locks_won: c.locks_won.load(Ordering::Relaxed),
            locks_lost: c.locks_lost.load(Ordering::Relaxed),
            lock_errors: c.lock_errors.load(Ordering::Relaxed),
            lock_overflow: c.lock_overflow.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            channels: self.inner.router.channels.len(),
        }
    }

    /// Publishes like [`Bus::publish`] and returns the number of Redis connections that
    /// received the message (`PUBLISH`'s reply): 0 means nobody listens on the channel now.
    ///
    /// Each bus counts as one receiver however many local subscribers it has.
    ///
    /// Publishes are queued to the bus's writer task, which sends whatever has queued up as one
    /// Redis pipeline; each publish still gets its own reply or error.
    ///
    /// # Cancel safety
    /// Dropping the future while it waits for room in the queue (see
    /// [`RedisBusOptions::publish_queue`]) publishes nothing. Once queued, the message is sent
    /// even if the future is dropped; only its reply is lost. [`Bus::flush`] waits for it.
    ///
    /// # Errors
    /// [`BusError::PayloadTooLarge`] over [`RedisBusOptions::max_payload`];
    /// [`BusError::Timeout`], [`BusError::Connection`] or [`BusError::Publish`] otherwise.
    pub async fn publish_counted(
        &self,
        channel: &Channel,
        payload: Bytes,
    ) -> Result<usize, BusError> {
        psrpc::bus::check_payload_size(payload.len(), self.inner.options.max_payload)?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel.pipe_name()).arg(payload.as_ref());
        let reply = self
            .inner
            .writer
            .send(cmd)
            .await
            .map_err(|err| err.to_bus_error(BusError::Publish))?;
        match reply {
            Value::Int(receivers) => Ok(usize::try_from(receivers).unwrap_or(0)),
            Value::ServerError(err) => Err(BusError::Publish(Box::new(RedisError::from(err)))),
            other => Err(BusError::Publish(
                format!("unexpected reply to PUBLISH: {other:?}").into(),
            )),
        }
    }

    async fn subscribe_impl(
        &self,
        channel: &Channel,
        options: SubscribeOptions,
    ) -> Result<Subscription, BusError> {
        let inner = &self.inner;
        let name = channel.pipe_name();
        let (sink, sub) = Subscription::new(name.as_str(), options.capacity);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        loop {
            let entry = inner
                .router
                .channels
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Entry::new(name.clone())))
                .clone();
            let mut ctl = entry.ctl.lock().await;
            if ctl.retired {
                // Unsubscribed while we waited: start again with a fresh entry.
                continue;
            }
            entry.add(id, sink.clone(), channel.is_queue());
            // Created before the SUBSCRIBE, so a cancelled subscribe still cleans up.
            let guard = Unsubscribe {
                bus: inner.clone(),
                entry: entry.clone(),
                id,
            };
            if !ctl.subscribed {
                let mut conn = inner.sub_conn.clone();
                with_timeout(inner.options.response_timeout, conn.subscribe(&name))
                    .await
                    .map_err(|err| err.into_bus_error(BusError::Subscribe))?;
                ctl.subscribed = true;
            }
            return Ok(sub.with_guard(guard));
        }
    }
}

impl Bus for RedisBus {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move { self.publish_counted(channel, payload).await.map(drop) })
    }

    /// `PUBLISH` tells how many connections received the message: zero resolves at once.
    fn publish_watched<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<NoReceivers, BusError>> {
        Box::pin(async move {
            let receivers = self.publish_counted(channel, payload).await?;
            Ok(NoReceivers::from_count(receivers))
        })
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(self.subscribe_impl(channel, options))
    }

    /// Resolves once every publish queued before has been written and answered by Redis,
    /// including those whose futures were dropped after queueing.
    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.inner
                .writer
                .flush()
                .await
                .map(drop)
                .map_err(|err| err.to_bus_error(BusError::Publish))
        })
    }

    fn max_payload(&self) -> usize {
        self.inner.options.max_payload
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// Removes one local subscriber when its [`Subscription`] goes; the last one of a channel
/// unsubscribes it at Redis.
struct Unsubscribe {
    // Strong: a subscription keeps its bus (and its connections) alive, per the Bus contract.
    bus: Arc<Inner>,
    entry: Arc<Entry>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.entry.remove(self.id);
        if !self.entry.is_empty() {
            return;
        }
        let inner = self.bus.clone();
        let runtime = inner.runtime.clone();
        runtime.spawn(retire(inner, self.entry.clone()));
    }
}

/// Unsubscribes a channel whose last local subscriber went, unless a new one came meanwhile.
async fn retire(inner: Arc<Inner>, entry: Arc<Entry>) {
    let mut ctl = entry.ctl.lock().await;
    if ctl.retired || !entry.is_empty() {
        return;
    }
    // Sent even if our SUBSCRIBE was never confirmed: a cancelled one may still have landed.
    let mut conn = inner.sub_conn.clone();
    if let Err(err) = with_timeout(
        inner.options.response_timeout,
        conn.unsubscribe(&entry.name),
    )
    .await
    {
        tracing::warn!(channel = %entry.name, %err, "redis UNSUBSCRIBE failed");
    }
    ctl.subscribed = false;
    ctl.retired = true;
    inner
        .router
        .channels
        .remove_if(&entry.name, |_, e| Arc::ptr_eq(e, &entry));
}

/// Routes one pushed message to the local subscribers of its channel; runs inside the push
/// connection's driver, so it never waits.
fn route_push(router: &Router, locks: &mpsc::Sender<LockJob>, push: PushInfo) {
    let counters = &router.counters;
    match push.kind {
        PushKind::Message => {}
        PushKind::Disconnection => {
            counters.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("redis push connection lost; reconnecting and resubscribing");
            return;
        }
        _ => return,
    }
    counters.received.fetch_add(1, Ordering::Relaxed);
    // A `message` push is [channel, payload]; anything else is not ours to interpret.
    let mut data = push.data.into_iter();
    let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
        (data.next(), data.next())
    else {
        counters.unroutable.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let entry = std::str::from_utf8(&name)
        .ok()
        .and_then(|name| router.channels.get(name).map(|e| e.clone()));
    let Some(entry) = entry else {
        counters.unroutable.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let payload = Bytes::from(payload);
    let has_queue = entry.deliver_fanout(&payload);
    // Queue members get it only once the lock is ours; that round trip runs elsewhere.
    if has_queue
        && let Err(mpsc::error::TrySendError::Full(job)) =
            locks.try_send(LockJob { entry, payload })
    {
        counters.lock_overflow.fetch_add(1, Ordering::Relaxed);
        job.entry.record_queue_drop();
    }
}

/// Pings the push connection so a dead one is noticed while idle and reconnection resumes.
async fn health_check(conn: ConnectionManager, interval: Duration, timeout: Option<Duration>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut conn = conn.clone();
        let ping = redis::cmd("PING");
        if let Err(err) = with_timeout(timeout, ping.query_async::<Value>(&mut conn)).await {
            tracing::debug!(%err, "redis health check failed");
        }
    }
}

/// A failed Redis operation.
#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error(transparent)]
    Redis(RedisError),
    #[error("timed out")]
    Timeout,
    /// The writer task is gone (the runtime shut down).
    #[error("redis command writer stopped")]
    Closed,
}

impl OpError {
    /// Maps to the bus error; `other` wraps failures that are neither timeouts nor lost
    /// connections (the server refused the command).
    fn into_bus_error(self, other: fn(psrpc::bus::BoxError) -> BusError) -> BusError {
        match self {
            OpError::Timeout => BusError::Timeout,
            OpError::Closed => BusError::Closed,
            OpError::Redis(err) if err.is_timeout() => BusError::Timeout,
            OpError::Redis(err)
                if err.is_io_error()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                    || err.is_unrecoverable_error() =>
            {
                BusError::Connection(Box::new(err))
            }
            OpError::Redis(err) => other(Box::new(err)),
        }
    }

    /// The connection broke or could not be made (not a refusal of one command, not a timeout).
    fn is_connection_lost(&self) -> bool {
        matches!(self, OpError::Redis(err) if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error())
    }

    /// [`into_bus_error`](Self::into_bus_error) for an error shared by a whole pipeline.
    fn to_bus_error(&self, other: fn(psrpc::bus::BoxError) -> BusError) -> BusError {
        match self {
            OpError::Redis(err) => OpError::Redis(err.clone()).into_bus_error(other),
            OpError::Timeout => BusError::Timeout,
            OpError::Closed => BusError::Closed,
        }
    }
}

/// Runs a Redis command with an overall deadline, which also covers waiting for a reconnect.
async fn with_timeout<T>(
    timeout: Option<Duration>,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, OpError> {
    match timeout {
        Some(limit) => match tokio::time::timeout(limit, fut).await {
            Ok(result) => result.map_err(OpError::Redis),
            Err(_) => Err(OpError::Timeout),
        },
        None => fut.await.map_err(OpError::Redis),
    }
}
