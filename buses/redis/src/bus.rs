//! [`RedisBus`]: connecting, publishing through the writer, and subscribing on the push
//! connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use psrpc::Channel;
use psrpc::bus::{Bus, BusError, NoReceivers, SubscribeOptions, Subscription};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, RedisError, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::conn::{Conn, cluster_seeds, cluster_timeouts};
use crate::lock;
use crate::op::with_timeout;
use crate::push::{health_check, route_push};
use crate::router::{Entry, Router};
use crate::writer::{Locks, Writer};
use crate::{REDIS_MAX_PAYLOAD, RedisBusError, RedisBusOptions, RedisBusStats};

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
    sub_conn: Conn,
    /// Writes PUBLISH and the lock SETs, batched into pipelines, on the command connection.
    writer: Writer,
    options: RedisBusOptions,
    next_id: AtomicU64,
    /// On a Redis Cluster, where `PUBLISH` counts only the receiving node's subscribers.
    cluster: bool,
    /// Sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`): on a cluster with
    /// [`RedisBusOptions::sharded_pubsub`].
    sharded: bool,
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
        Ok(Self::assemble(
            Conn::Single(sub_conn),
            Conn::Single(cmd_conn),
            router,
            lock_rx,
            options,
        ))
    }

    /// Connects to a Redis Cluster through any of the seed `urls` (`redis://host:port`, one or
    /// more nodes; the rest of the cluster is discovered), with `options`.
    ///
    /// Commands go through the redis crate's cluster connection: each queue lock `SET` is
    /// routed to the shard owning its key, and `MOVED` replies and failovers are followed.
    /// Channels use classic `PUBLISH`/`SUBSCRIBE`, which a cluster broadcasts to every node, so
    /// Go peers attached to any node of the same cluster interoperate; the cost is that every
    /// message reaches every node (see docs/scaling.md). Subscriptions are restored after a
    /// reconnect or failover; messages published meanwhile are lost, as on one server.
    ///
    /// On a cluster the count of [`publish_counted`](Self::publish_counted) is one node's, so
    /// [`Bus::publish_watched`] never reports "no receivers": calls to a method nobody serves
    /// end at their deadline.
    ///
    /// [`RedisBusOptions::sharded_pubsub`] (opt-in) carries channels with sharded pub/sub
    /// instead: no broadcast, and exact receiver counts, but no interop with Go peers or with
    /// buses without the option.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let seeds = ["redis://10.0.0.1:7000/", "redis://10.0.0.2:7000/"];
    /// let bus = psrpc_redis::RedisBus::connect_cluster(&seeds, Default::default()).await?;
    /// # drop(bus);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`RedisBusError::Config`] for a bad URL, [`RedisBusError::Connect`] when no seed node can
    /// be reached or the cluster refuses the connection.
    pub async fn connect_cluster(
        urls: &[impl AsRef<str>],
        mut options: RedisBusOptions,
    ) -> Result<Self, RedisBusError> {
        options.max_payload = options.max_payload.min(REDIS_MAX_PAYLOAD);
        let seeds: Vec<&str> = urls.iter().map(AsRef::as_ref).collect();
        let builder_from = |seeds: Vec<redis::ConnectionInfo>| {
            let builder = redis::cluster::ClusterClientBuilder::new(seeds)
                .use_protocol(redis::ProtocolVersion::RESP3);
            cluster_timeouts(
                builder,
                options.connection_timeout,
                options.response_timeout,
            )
        };
        let seeds = cluster_seeds(&seeds, async |seeds| {
            builder_from(seeds).build()?.get_async_connection().await
        })
        .await
        .map_err(RedisBusError::Connect)?;
        let builder = || builder_from(seeds.clone());
        let router = Arc::new(Router::default());
        let (lock_tx, lock_rx) = mpsc::channel(options.max_pending_locks.max(1));
        let push_router = router.clone();
        let push_sender = move |mut push: PushInfo| -> Result<(), std::convert::Infallible> {
            // A sharded message has the classic one's shape: [channel, payload].
            if push.kind == PushKind::SMessage {
                push.kind = PushKind::Message;
            }
            route_push(&push_router, &lock_tx, push);
            Ok(())
        };
        let sub_client = builder()
            .push_sender(push_sender)
            .build()
            .map_err(RedisBusError::Config)?;
        let cmd_client = builder().build().map_err(RedisBusError::Config)?;
        let sub_conn = sub_client
            .get_async_connection()
            .await
            .map_err(RedisBusError::Connect)?;
        let cmd_conn = cmd_client
            .get_async_connection()
            .await
            .map_err(RedisBusError::Connect)?;
        Ok(Self::assemble(
            Conn::Cluster(sub_conn),
            Conn::Cluster(cmd_conn),
            router,
            lock_rx,
            options,
        ))
    }

    /// Starts the writer (which also runs the lock `SET`s) and the health check on the two
    /// connections.
    fn assemble(
        sub_conn: Conn,
        cmd_conn: Conn,
        router: Arc<Router>,
        lock_rx: mpsc::Receiver<lock::LockJob>,
        options: RedisBusOptions,
    ) -> Self {
        let cluster = matches!(cmd_conn, Conn::Cluster(_));
        let sharded = cluster && options.sharded_pubsub;
        let writer = Writer::start(
            cmd_conn,
            options.publish_queue,
            options.max_batch,
            options.response_timeout,
            Locks {
                queue: lock_rx,
                limit: options.max_concurrent_locks,
                router: router.clone(),
            },
        );
        let mut tasks = Vec::new();
        if let Some(interval) = options.health_check_interval {
            tasks.push(tokio::spawn(health_check(
                sub_conn.clone(),
                router.clone(),
                interval,
                options.response_timeout,
                sharded,
            )));
        }
        RedisBus {
            inner: Arc::new(Inner {
                router,
                sub_conn,
                writer,
                options,
                next_id: AtomicU64::new(0),
                cluster,
                sharded,
                runtime: tokio::runtime::Handle::current(),
                tasks,
            }),
        }
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
    /// On a Redis Cluster the count covers only the node that took the `PUBLISH`, so there 0
    /// does not mean nobody listens; with [`RedisBusOptions::sharded_pubsub`] it is the
    /// `SPUBLISH` count of the channel's shard, which covers every subscriber.
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
        let mut cmd = redis::cmd(if self.inner.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        });
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
                .or_insert_with(|| {
                    Arc::new(Entry::new(
                        name.clone(),
                        channel.namespace().map(str::to_owned),
                    ))
                })
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
                with_timeout(
                    inner.options.response_timeout,
                    conn.subscribe(&name, inner.sharded),
                )
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
            if self.inner.cluster && !self.inner.sharded {
                // A cluster node counts only its own subscribers: zero says nothing.
                return Ok(NoReceivers::unknown());
            }
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
        conn.unsubscribe(&entry.name, inner.sharded),
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
