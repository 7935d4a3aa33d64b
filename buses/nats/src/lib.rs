//! The NATS bus for psrpc, wire-compatible with Go psrpc v0.7 (docs/wire.md §4.2, §7).
//!
//! [`NatsBus`] carries psrpc over core NATS with [async-nats](async_nats): no JetStream, and no
//! headers except one Go peers never see (a queue message handed back to its group carries a
//! hop count, see below). Requests published through [`Bus::publish_watched`] carry a reply subject (a
//! private inbox) only so that the broker reports "no responders" when nobody subscribes, and a
//! call to a method nobody serves fails at once; psrpc servers, Go's included, ignore reply
//! subjects. Every payload is the psrpc envelope; messages to servers carry
//! their route key (`Method.REQ`, `Method.RCLAIM`, `Method.STR`) in the envelope's field 3,
//! because one subject carries all methods of a service and topic tuple:
//!
//! | channel | subject | route key |
//! |---|---|---|
//! | requests, subscription messages | `SRV.Svc[.topic…][.Q]` | `Method.REQ` |
//! | claim responses | `SRV.Svc[.topic…]` | `Method.RCLAIM` |
//! | stream frames to servers | `SRV.Svc[.topic…]` | `Method.STR` |
//! | replies to one client | `CLI.Svc.ClientID.RES` / `.CLAIM` / `.STR` | — |
//!
//! # One NATS subscription per subject
//!
//! A bus instance holds at most one NATS subscription per subject (and per queue flag), shared
//! by every local [`Subscription`] of that subject: all methods of a service and topic tuple
//! share `SRV.Svc[.topics]`, so a server with ten methods sends one SUB, not ten, as Go does. A reader task per NATS subscription reads the route key with a cheap scan
//! ([`psrpc::wire::route_key`], no full decode) and hands the message to the local subscribers of
//! that key: each fan-out subscriber gets it, or one queue subscriber in round robin on `.Q`
//! subjects. Delivery never waits: a full subscriber buffer drops the message and counts it on
//! that subscriber (see [`psrpc::bus::SubscriptionSink::deliver`]), so one slow subscriber never
//! stalls the other methods of its subject, nor other subjects. Messages without a route key, or
//! with one no local subscriber wants, are dropped, counted in [`NatsBusStats::unroutable`] and
//! logged at debug level. The NATS subscription is removed (UNSUB) when its last local
//! subscriber goes.
//!
//! [`Bus::subscribe`] returns only once the server has the subscription, so a message published
//! after `subscribe` returns, from any connection, is delivered. async-nats has no public
//! PING/PONG (its `flush` only flushes the socket), so the bus confirms a new SUB by echo: it
//! publishes an empty message to a private `_INBOX.<id>.<n>` subject of its own client and waits
//! for it to come back, which the server sends only after processing the SUB before it. This
//! needs echo enabled on the connection (the async-nats default, which psrpc needs anyway for a
//! client and a server sharing one bus), and it is the only traffic outside `SRV.`/`CLI.`: one
//! small message per new NATS subscription, invisible to psrpc peers.
//!
//! # Queue methods share one queue subject
//!
//! Queue delivery uses a NATS queue subscription with group `bus` on `SRV.Svc[.topics].Q`. That
//! subject is shared by **all** queue methods and queue subscriptions of the service and topic
//! tuple, so the broker picks one member of the group per message without knowing the method.
//! A bus instance that serves only some of those methods (say, a client holding a queue
//! subscription of a service whose queue RPCs run elsewhere) can therefore receive a queue
//! message for another method. Go psrpc drops it, and the caller waits in vain; this bus hands it
//! back to the group instead (the same subject and payload, with a `Psrpc-Requeued` hop count
//! in a header, which Go peers ignore), so the broker picks a member again, up to 16 times
//! ([`NatsBusStats::requeued`]). Only then is it dropped and counted as unroutable. A Go member
//! that gets a message it cannot serve still drops it, as Go does.
//!
//! # Reconnects
//!
//! async-nats reconnects on its own and re-sends every SUB; the shared subscriptions and their
//! routing survive a broker restart without any action. Messages in flight while the
//! connection is down can be lost either way (core NATS is at-most-once); psrpc calls then time
//! out as they would with Go.

mod confirm;
pub mod durable;
mod error;
mod router;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use psrpc::Channel;
use psrpc::bus::{Bus, BusError, NoReceivers, SubscribeOptions, Subscription};

use confirm::Confirmer;
pub use error::CredentialsError;
use router::{Counters, Entry, Membership, Subjects};

/// Options of a [`NatsBus`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct NatsBusOptions {
    /// How long [`Bus::subscribe`] waits for the server to confirm a new NATS subscription
    /// before failing with [`BusError::Timeout`] (default 10 s). While the client is
    /// disconnected the confirmation waits for the reconnect.
    pub subscribe_timeout: Duration,
}

impl Default for NatsBusOptions {
    fn default() -> Self {
        NatsBusOptions {
            subscribe_timeout: Duration::from_secs(10),
        }
    }
}

impl NatsBusOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`subscribe_timeout`](Self::subscribe_timeout).
    pub fn subscribe_timeout(mut self, timeout: Duration) -> Self {
        self.subscribe_timeout = timeout;
        self
    }
}

/// Counters of a [`NatsBus`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsBusStats {
    /// NATS subscriptions confirmed by the server and not yet unsubscribed.
    pub nats_subscriptions: usize,
    /// Local subscriptions fed by them.
    pub local_subscriptions: usize,
    /// Messages read from NATS.
    pub received: u64,
    /// Messages dropped because they had no route key or no local subscriber wanted their key.
    pub unroutable: u64,
    /// Queue messages for a method this bus does not serve, handed back to their queue group.
    pub requeued: u64,
}

/// A psrpc [`Bus`] over NATS.
///
/// Cloning gives another handle to the same connection and subscriptions. Hand it to
/// [`psrpc::Server::new`] and [`psrpc::Client::new`]; see the [crate docs](crate) for how
/// channels map onto subjects.
///
/// ```no_run
/// use psrpc::{Client, MethodInfo, Server};
/// use psrpc_nats::NatsBus;
///
/// const ECHO: MethodInfo = MethodInfo::unary("Echo");
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = NatsBus::connect("nats://127.0.0.1:4222").await?;
///
/// let server = Server::new("Greeter", bus.clone());
/// server
///     .register_unary(ECHO, &[], |_ctx, name: String| async move { Ok(format!("hi {name}")) })
///     .await?;
///
/// let client = Client::new("Greeter", bus).await?;
/// let reply: String = client
///     .request(ECHO, &[], &"bob".to_string(), Default::default())
///     .await?;
/// assert_eq!(reply, "hi bob");
/// # Ok(()) }
/// ```
///
/// Credentials, TLS and reconnect behaviour come from async-nats:
///
/// ```no_run
/// # async fn demo() -> Result<(), psrpc::bus::BusError> {
/// let options = async_nats::ConnectOptions::with_user_and_password("app".into(), "secret".into())
///     .name("my-service");
/// let bus = psrpc_nats::NatsBus::connect_with_options("nats://127.0.0.1:4222", options).await?;
/// # let _ = bus; Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    confirmer: Arc<Confirmer>,
    options: NatsBusOptions,
    subjects: Arc<Subjects>,
    counters: Arc<Counters>,
    next_id: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.confirmer.stop();
    }
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("state", &self.inner.client.connection_state())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects to the NATS server(s) at `addrs` with default client options.
    ///
    /// # Errors
    /// [`BusError::Connection`] when the connection cannot be established.
    ///
    /// A user and password in a URL (`nats://user:pass@host:4222`) are used to authenticate,
    /// as Go clients do.
    pub async fn connect(addrs: impl async_nats::ToServerAddrs) -> Result<Self, BusError> {
        let addrs: Vec<async_nats::ServerAddr> = addrs
            .to_server_addrs()
            .map_err(|err| BusError::Connection(Box::new(err)))?
            .collect();
        // async-nats ignores credentials embedded in a URL: the connection would be refused
        // with "authorization violation". Pass them on explicitly.
        let options = match addrs.iter().find(|addr| addr.has_user_pass()) {
            Some(addr) => async_nats::ConnectOptions::with_user_and_password(
                addr.username().unwrap_or_default().to_owned(),
                addr.password().unwrap_or_default().to_owned(),
            ),
            None => async_nats::ConnectOptions::new(),
        };
        Self::connect_with_options(addrs, options).await
    }

    /// Connects with the given async-nats options (credentials, TLS, reconnect policy, …).
    ///
    /// # Errors
    /// [`BusError::Connection`] when the connection cannot be established.
    pub async fn connect_with_options(
        addrs: impl async_nats::ToServerAddrs,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, BusError> {
        let client = options
            .connect(addrs)
            .await
            .map_err(|err| BusError::Connection(Box::new(err)))?;
        Ok(Self::new(client))
    }

    /// Connects with a NATS credentials file (`.creds`: a user JWT and the user's NKey seed,
    /// as `nsc` writes them) on top of `options` (TLS, name, reconnect policy, …). This is how
    /// servers in operator mode (decentralised JWT auth) admit clients.
    ///
    /// The seed stays in memory to sign the server's nonce; it appears in no error, log or
    /// `Debug` output.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), psrpc::bus::BusError> {
    /// let bus = psrpc_nats::NatsBus::connect_with_credentials_file(
    ///     "tls://nats.example:4222",
    ///     "/etc/app/app.creds",
    ///     async_nats::ConnectOptions::new().name("my-service"),
    /// )
    /// .await?;
    /// # let _ = bus; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`BusError::Connection`] holding a [`CredentialsError`] when the file is missing or
    /// holds no JWT and seed; [`BusError::Connection`] with the server's "authorization
    /// violation" when the server does not accept the user (unknown account, revoked user,
    /// a seed that does not match the JWT); as [`connect`](Self::connect) otherwise.
    pub async fn connect_with_credentials_file(
        addrs: impl async_nats::ToServerAddrs,
        path: impl AsRef<std::path::Path>,
        options: async_nats::ConnectOptions,
    ) -> Result<Self, BusError> {
        let path = path.as_ref();
        let options = options.credentials_file(path).await.map_err(|source| {
            BusError::Connection(Box::new(CredentialsError {
                path: path.to_owned(),
                source,
            }))
        })?;
        Self::connect_with_options(addrs, options).await
    }

    /// A bus over an existing client, with default options. The client can still be used for
    /// other purposes.
    pub fn new(client: async_nats::Client) -> Self {
        Self::with_options(client, NatsBusOptions::default())
    }

    /// A bus over an existing client.
    pub fn with_options(client: async_nats::Client, options: NatsBusOptions) -> Self {
        NatsBus {
            inner: Arc::new(Inner {
                confirmer: Arc::new(Confirmer::new(client.clone())),
                client,
                options,
                subjects: Arc::default(),
                counters: Arc::default(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// The underlying client.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// A snapshot of the bus's counters.
    pub fn stats(&self) -> NatsBusStats {
        let counters = &self.inner.counters;
        let local_subscriptions = router::lock(&self.inner.subjects)
            .values()
            .map(|entry| entry.member_count())
            .sum();
        NatsBusStats {
            nats_subscriptions: counters.nats_subscriptions.load(Ordering::Relaxed),
            local_subscriptions,
            received: counters.received.load(Ordering::Relaxed),
            unroutable: counters.unroutable.load(Ordering::Relaxed),
            requeued: counters.requeued.load(Ordering::Relaxed),
        }
    }

    /// Waits until the server has processed everything this bus sent before the call: every
    /// SUB, UNSUB and PUB. Like nats.go's `Flush` (async-nats's `Client::flush` only flushes
    /// the socket).
    ///
    /// It works by echo: an empty message to a private `_INBOX.` subject of this client, so it
    /// needs echo enabled (the async-nats default). Bounded by
    /// [`NatsBusOptions::subscribe_timeout`].
    ///
    /// # Errors
    /// [`BusError::Timeout`] when no echo came back in time, [`BusError::Connection`] when the
    /// client is closed.
    pub async fn round_trip(&self) -> Result<(), BusError> {
        tokio::time::timeout(
            self.inner.options.subscribe_timeout,
            self.inner.confirmer.round_trip(),
        )
        .await
        .map_err(|_| BusError::Timeout)?
        .map_err(|failure| failure.to_bus_error())
    }

    async fn publish_watched_inner(
        &self,
        channel: &Channel,
        payload: Bytes,
    ) -> Result<NoReceivers, BusError> {
        if channel.route_key().is_none() {
            self.publish_inner(channel, payload, None).await?;
            return Ok(NoReceivers::unknown());
        }
        // A reply subject makes the broker report "no responders" when no subscription
        // matched; psrpc peers (Go's too) ignore reply subjects.
        let (reply, nobody) = self
            .inner
            .confirmer
            .watch()
            .await
            .map_err(|failure| failure.to_bus_error())?;
        self.publish_inner(channel, payload, Some(reply)).await?;
        Ok(nobody)
    }

    async fn publish_inner(
        &self,
        channel: &Channel,
        payload: Bytes,
        reply: Option<String>,
    ) -> Result<(), BusError> {
        // Go receivers on `SRV.` subjects drop messages without the route key.
        let payload = match channel.route_key() {
            Some(key) => psrpc::wire::with_route_key(&payload, &key),
            None => payload,
        };
        let limit = self.max_payload();
        let size = payload.len();
        psrpc::bus::check_payload_size(size, limit)?;
        let client = &self.inner.client;
        let sent = match reply {
            None => client.publish(channel.nats_subject(), payload).await,
            Some(reply) => {
                client
                    .publish_with_reply(channel.nats_subject(), reply, payload)
                    .await
            }
        };
        sent.map_err(|err| error::publish(err, size, self.max_payload()))
    }

    async fn subscribe_inner(
        &self,
        channel: &Channel,
        options: SubscribeOptions,
    ) -> Result<Subscription, BusError> {
        let inner = &self.inner;
        let subject = channel.nats_subject();
        let route_key = channel.route_key();
        let routed = route_key.is_some();
        let route: Box<str> = route_key.unwrap_or_default().into();
        let name = if routed {
            format!("{subject} {route}")
        } else {
            subject.clone()
        };
        let (sink, sub) = Subscription::new(name, options.capacity);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (entry, created) = {
            let mut map = router::lock(&inner.subjects);
            let key = (subject, channel.is_queue());
            let (entry, created) = match map.get(&key) {
                Some(entry) => (entry.clone(), false),
                None => {
                    let entry = Arc::new(Entry::new(key.clone(), routed));
                    map.insert(key, entry.clone());
                    (entry, true)
                }
            };
            entry.add(&route, id, sink);
            (entry, created)
        };
        // From here on, dropping this future (or failing) unregisters the subscriber.
        let membership = Membership {
            subjects: Arc::downgrade(&inner.subjects),
            entry: entry.clone(),
            route,
            id,
        };
        if created {
            tokio::spawn(router::run(
                inner.client.clone(),
                inner.confirmer.clone(),
                Arc::downgrade(&inner.subjects),
                entry.clone(),
                inner.counters.clone(),
                inner.options.subscribe_timeout,
            ));
        }
        entry.ready().await?;
        Ok(sub.with_guard(membership))
    }
}

impl Bus for NatsBus {
    fn publish<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(self.publish_inner(channel, payload, None))
    }

    /// Requests carry a reply subject on which the broker reports "no responders".
    fn publish_watched<'a>(
        &'a self,
        channel: &'a Channel,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<NoReceivers, BusError>> {
        Box::pin(self.publish_watched_inner(channel, payload))
    }

    fn subscribe<'a>(
        &'a self,
        channel: &'a Channel,
        options: SubscribeOptions,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(self.subscribe_inner(channel, options))
    }

    /// A round trip through the server: everything published before has been processed by it
    /// (async-nats's own `flush` only writes the socket).
    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(self.round_trip())
    }

    /// The server's `max_payload` (from its latest INFO); the route key counts toward it.
    fn max_payload(&self) -> usize {
        self.inner.client.max_payload()
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}
