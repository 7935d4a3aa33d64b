//! The server side: handlers for methods, topic registration, publishing to subscribers.
//!
//! A [`Server`] serves one service. Each registration (a method, optionally on a tuple of
//! topics) subscribes to the method's request channel and its claim-response channel and runs
//! one reader task per channel; each accepted request runs in one task of its own.
//!
//! ```
//! use psrpc::{MethodInfo, Server, bus::LocalBus};
//!
//! const ECHO: MethodInfo = MethodInfo::unary("Echo");
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let server = Server::new("Echoer", LocalBus::new());
//! server.register_unary(ECHO, &["eu"], |_ctx, s: String| async move { Ok(s) }).await.unwrap();
//! assert!(server.deregister(ECHO, &["eu"]));
//! server.shutdown().await;
//! # });
//! ```

mod claim;
mod context;
mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use futures::FutureExt;
use futures::future::BoxFuture;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use context::RequestContext;
use stats::Counters;
pub use stats::ServerStats;

use crate::bus::{Bus, IntoBus, SubscribeOptions};
use crate::interceptor::{BoxResponse, Interceptors, ServerCall, ServerInterceptor, ServerNext};
use crate::stream::{Stream, StreamCore, StreamEnd, StreamOptions, StreamRegistry};
use crate::trace::TraceContext;
use crate::wire::{self, ClaimResponse, Request, Response, stream::Body};
use crate::{Channel, Error, ErrorCode, MethodInfo, MethodKind, Result};

/// Options of a [`Server`]: `Default` plus a setter per field.
///
/// ```
/// use std::time::Duration;
/// use psrpc::ServerOptions;
///
/// let opts = ServerOptions::default()
///     .max_in_flight(64)
///     .drain_timeout(Duration::from_secs(2));
/// assert_eq!(opts.max_in_flight, Some(64));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The server ID; a fresh `SRV_…` when `None`.
    pub server_id: Option<String>,
    /// Most handlers running at once; past it, requests are shed (`resource_exhausted`, or no
    /// claim for fan-out claim methods so another server takes them). `None`: no limit.
    pub max_in_flight: Option<usize>,
    /// Buffer of each request subscription (see [`crate::bus::SubscriptionSink::deliver`]).
    pub subscription_capacity: usize,
    /// Tuning of the streams this server serves.
    pub stream: StreamOptions,
    /// Middleware around every request and stream, outermost first.
    pub interceptors: Interceptors<dyn ServerInterceptor>,
    /// How long [`Server::shutdown`] lets running handlers and open streams finish before it
    /// closes the streams (`unavailable`, "server shut down") and cancels the handlers
    /// (default 10 s).
    pub drain_timeout: std::time::Duration,
    /// How the server announces itself to [`crate::discovery::Discovery`] (on by default).
    pub discovery: crate::discovery::DiscoveryOptions,
}

impl ServerOptions {
    /// Sets [`server_id`](Self::server_id).
    pub fn server_id(mut self, server_id: impl Into<String>) -> Self {
        self.server_id = Some(server_id.into());
        self
    }

    /// Sets [`max_in_flight`](Self::max_in_flight).
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = Some(max_in_flight);
        self
    }

    /// Sets [`subscription_capacity`](Self::subscription_capacity).
    pub fn subscription_capacity(mut self, subscription_capacity: usize) -> Self {
        self.subscription_capacity = subscription_capacity;
        self
    }

    /// Sets [`stream`](Self::stream).
    pub fn stream(mut self, stream: StreamOptions) -> Self {
        self.stream = stream;
        self
    }

    /// Sets [`drain_timeout`](Self::drain_timeout).
    pub fn drain_timeout(mut self, drain_timeout: std::time::Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    /// Sets [`discovery`](Self::discovery).
    pub fn discovery(mut self, discovery: crate::discovery::DiscoveryOptions) -> Self {
        self.discovery = discovery;
        self
    }
}

impl ServerOptions {
    /// Adds an interceptor after those already added.
    pub fn interceptor(mut self, interceptor: impl ServerInterceptor) -> Self {
        self.interceptors.0.push(Arc::new(interceptor));
        self
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            server_id: None,
            max_in_flight: None,
            subscription_capacity: crate::bus::DEFAULT_SUBSCRIPTION_CAPACITY,
            stream: StreamOptions::default(),
            interceptors: Interceptors::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            discovery: crate::discovery::DiscoveryOptions::default(),
        }
    }
}

/// The affinity function of a method: how well this server fits a request (negative: decline).
pub type AffinityFn<Req> = Arc<dyn Fn(&Req) -> f32 + Send + Sync>;

/// A server for one service. Cloning gives another handle; dropping the last one kills it.
///
/// A server only serves while a handle lives, so an unused one is a warning:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// psrpc::Server::new("Greeter", psrpc::bus::LocalBus::new()); // served nothing: dropped at once
/// ```
///
/// ```
/// #![deny(unused_must_use)]
/// let server = psrpc::Server::new("Greeter", psrpc::bus::LocalBus::new());
/// # drop(server);
/// ```
#[derive(Clone)]
#[must_use = "a server stops serving when its last handle is dropped"]
pub struct Server {
    inner: Arc<Inner>,
    _owner: Arc<KillOnDrop>,
}

struct KillOnDrop(Arc<Inner>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill_now();
    }
}

type Processor = Arc<
    dyn Fn(Arc<Inner>, Request, Instant, Arc<[String]>) -> BoxFuture<'static, ()> + Send + Sync,
>;

/// Serves the open of a stream (its first frame).
type StreamProcessor = Arc<
    dyn Fn(Arc<Inner>, wire::Stream, Instant, Arc<[String]>) -> BoxFuture<'static, ()>
        + Send
        + Sync,
>;

/// What a registration does with what arrives on its channel.
#[derive(Clone)]
enum Handler {
    Unary(Processor),
    Stream(StreamProcessor),
}

type RegistrationKey = (&'static str, Vec<String>);

struct Inner {
    service: Arc<str>,
    id: Arc<str>,
    bus: Arc<dyn Bus>,
    options: ServerOptions,
    registrations: Mutex<HashMap<RegistrationKey, CancellationToken>>,
    /// Requests waiting for the caller's choice, by request ID.
    claims: DashMap<String, oneshot::Sender<ClaimResponse>>,
    /// Callers' choices that arrived before this server claimed.
    early: claim::EarlyAnswers,
    /// Handlers running, by request ID, to deliver cancellations.
    running: DashMap<String, CancellationToken>,
    /// Streams being served, by stream ID.
    streams: Arc<StreamRegistry>,
    readers: TaskTracker,
    stop_requests: CancellationToken,
    stop_all: CancellationToken,
    kill: CancellationToken,
    limiter: Option<Arc<Semaphore>>,
    counters: Counters,
    chain: Arc<[Arc<dyn ServerInterceptor>]>,
    /// Set when shutdown's drain deadline passed, so cut-short work says why.
    drain_expired: std::sync::atomic::AtomicBool,
    /// Discovery hook: health, per-method counters, the announcer.
    presence: crate::discovery::Presence,
}

/// What the reader tasks of one registration share.
#[derive(Clone)]
struct Registration {
    method: MethodInfo,
    topics: Arc<[String]>,
    stop: CancellationToken,
    handlers: TaskTracker,
    handler: Handler,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("service", &self.inner.service)
            .field("id", &self.inner.id)
            .field("bus", &self.inner.bus.name())
            .finish()
    }
}

impl Server {
    /// A server for `service` on `bus`, with default options.
    pub fn new(service: impl Into<Arc<str>>, bus: impl IntoBus) -> Self {
        Self::with_options(service, bus, ServerOptions::default())
    }

    /// A server for `service` on `bus`.
    pub fn with_options(
        service: impl Into<Arc<str>>,
        bus: impl IntoBus,
        options: ServerOptions,
    ) -> Self {
        let id: Arc<str> = options
            .server_id
            .clone()
            .unwrap_or_else(crate::id::new_server_id)
            .into();
        let inner = Arc::new(Inner {
            service: service.into(),
            id,
            bus: bus.into_bus(),
            limiter: options.max_in_flight.map(|n| Arc::new(Semaphore::new(n))),
            chain: options.interceptors.chain(),
            presence: crate::discovery::Presence::new(options.discovery.clone()),
            options,
            registrations: Mutex::default(),
            claims: DashMap::new(),
            early: claim::EarlyAnswers::default(),
            running: DashMap::new(),
            streams: Arc::default(),
            readers: TaskTracker::new(),
            stop_requests: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            kill: CancellationToken::new(),
            counters: Counters::default(),
            drain_expired: Default::default(),
        });
        Server {
            _owner: Arc::new(KillOnDrop(inner.clone())),
            inner,
        }
    }

    /// This server's ID (`SRV_…`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The bus the server runs on.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> ServerStats {
        self.inner.counters.snapshot()
    }

    /// Handlers running now.
    pub fn in_flight(&self) -> usize {
        self.inner.running.len()
    }

    /// The server's health (see [`crate::discovery`]).
    pub fn health(&self) -> crate::discovery::HealthStatus {
        self.inner.presence.health()
    }

    /// Sets the server's health and announces it. Not serving, the server takes no new call
    /// (it leaves its request channels; calls already taken finish); serving again, it
    /// rejoins them.
    pub fn set_health(&self, status: crate::discovery::HealthStatus) {
        self.inner.presence.set_health(status);
    }

    /// Registers the handler of a unary or multi method, on `topics` (empty for none).
    ///
    /// Returns once the server receives requests for it.
    ///
    /// # Errors
    /// `already_exists` if the method is registered on these topics, `unavailable` after
    /// shutdown, or the bus error of a failed subscribe.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it completes, the method is not registered (and can be
    /// registered again).
    pub async fn register_unary<Req, Resp, H, Fut>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        handler: H,
    ) -> Result<()>
    where
        Req: Message + Default + Send + 'static,
        Resp: Message + Send + 'static,
        H: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp>> + Send + 'static,
    {
        method.expect(
            matches!(method.kind(), MethodKind::Unary(_) | MethodKind::Multi),
            "register_unary",
        )?;
        let processor = unary_processor(method, handler, None);
        self.register(method, topics, Handler::Unary(processor))
            .await
    }

    /// Like [`register_unary`](Self::register_unary), with the affinity function servers of an
    /// AFFINITY method claim with (the default affinity is 1.0).
    ///
    /// # Errors
    /// As [`register_unary`](Self::register_unary).
    ///
    /// # Cancel safety
    /// As [`register_unary`](Self::register_unary).
    pub async fn register_unary_with_affinity<Req, Resp, H, Fut>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        handler: H,
        affinity: AffinityFn<Req>,
    ) -> Result<()>
    where
        Req: Message + Default + Send + 'static,
        Resp: Message + Send + 'static,
        H: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp>> + Send + 'static,
    {
        method.expect(
            matches!(method.kind(), MethodKind::Unary(_) | MethodKind::Multi),
            "register_unary_with_affinity",
        )?;
        let processor = unary_processor(method, handler, Some(affinity));
        self.register(method, topics, Handler::Unary(processor))
            .await
    }

    /// Registers the handler of a stream method, on `topics` (empty for none). The handler
    /// gets the stream (it sends `Out`, receives `In`); the stream closes when it returns,
    /// cleanly on `Ok`, with the error on `Err`. The handler's context has no deadline, and
    /// its cancellation fires when the stream ends.
    ///
    /// # Errors
    /// As [`register_unary`](Self::register_unary).
    ///
    /// # Cancel safety
    /// As [`register_unary`](Self::register_unary).
    pub async fn register_stream<In, Out, H, Fut>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        handler: H,
    ) -> Result<()>
    where
        In: Message + Default + Send + 'static,
        Out: Message + Send + 'static,
        H: Fn(RequestContext, Stream<Out, In>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        method.expect(method.is_stream(), "register_stream")?;
        let processor = stream_processor(method, handler);
        self.register(method, topics, Handler::Stream(processor))
            .await
    }

    /// Streams being served now.
    pub fn open_streams(&self) -> usize {
        self.inner.streams.len()
    }

    /// Stops serving `method` on `topics`; handlers already running finish. Returns whether it
    /// was registered.
    pub fn deregister(&self, method: MethodInfo, topics: &[&str]) -> bool {
        let mut regs = lock(&self.inner.registrations);
        let key = regs
            .keys()
            .find(|(m, t)| {
                *m == method.name() && t.iter().map(String::as_str).eq(topics.iter().copied())
            })
            .cloned();
        match key.and_then(|k| regs.remove(&k)) {
            Some(stop) => {
                self.inner.presence.deregistered(method.name(), topics);
                stop.cancel();
                true
            }
            None => false,
        }
    }

    /// True if `method` is registered on `topics`.
    pub fn is_registered(&self, method: MethodInfo, topics: &[&str]) -> bool {
        lock(&self.inner.registrations).keys().any(|(m, t)| {
            *m == method.name() && t.iter().map(String::as_str).eq(topics.iter().copied())
        })
    }

    /// Publishes `msg` to the subscribers of a subscription method on `topics`.
    ///
    /// # Errors
    /// `invalid_argument` for a payload over the bus limit, or the bus error of a failed publish.
    ///
    /// # Cancel safety
    /// Dropped before it completes, the message may or may not have been published; the
    /// server is unaffected.
    pub async fn publish<M: prost::Name>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        msg: &M,
    ) -> Result<()> {
        method.expect(method.is_subscription(), "publish")?;
        let payload = wire::encode_envelope(&wire::type_url_for(&M::full_name()), msg);
        crate::bus::check_payload_size(payload.len(), self.inner.bus.max_payload())?;
        let channel = Channel::request(
            self.inner.service.clone(),
            method.name(),
            topics.iter().copied(),
            method.is_queued(),
        );
        self.inner.bus.publish(&channel, payload).await?;
        Ok(())
    }

    /// Shuts down gracefully: stops taking requests, lets running handlers finish and answer
    /// and open streams end, for at most [`ServerOptions::drain_timeout`]; then closes the
    /// streams still open (their peers see `unavailable`, "server shut down") and cancels the
    /// handlers still running (their callers get the same). Finally unsubscribes everything
    /// and flushes the bus, so what the server published reached the broker.
    ///
    /// Returns within the drain timeout plus at most twice [`FINAL_PUBLISH_BOUND`].
    ///
    /// # Cancel safety
    /// The server stops taking requests at the first poll; dropping the future later leaves
    /// the drain running in the background, without the deadline (call `kill` to end it).
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        // Discovery hook: not serving (and announced so) before the drain.
        inner
            .presence
            .set_health(crate::discovery::HealthStatus::NotServing);
        inner.stop_requests.cancel();
        inner.readers.close();
        let drained = tokio::time::timeout(inner.options.drain_timeout, inner.readers.wait());
        if drained.await.is_err() {
            tracing::info!(
                service = %inner.service,
                streams = inner.streams.len(),
                handlers = inner.running.len(),
                "drain deadline passed: closing streams and cancelling handlers"
            );
            let open: Vec<_> = inner.streams.iter().map(|s| s.value().clone()).collect();
            for core in open {
                drop(core.close_queued(StreamEnd::ServerShutdown));
            }
            inner
                .drain_expired
                .store(true, std::sync::atomic::Ordering::Relaxed);
            inner.kill_now();
            let _ = tokio::time::timeout(FINAL_PUBLISH_BOUND, inner.readers.wait()).await;
        }
        lock(&inner.registrations).clear();
        inner.presence.goodbye().await;
        inner.flush().await;
    }

    /// Stops at once: running handlers are abandoned and their callers told `unavailable`,
    /// open streams closed. Returns once the server's tasks ended (bounded by
    /// [`FINAL_PUBLISH_BOUND`] for their last publishes) and the bus was flushed.
    ///
    /// # Cancel safety
    /// The server is killed at the first poll; dropping the future later only skips the wait.
    pub async fn kill(&self) {
        let inner = &self.inner;
        inner.kill_now();
        inner.readers.close();
        let _ = tokio::time::timeout(FINAL_PUBLISH_BOUND, inner.readers.wait()).await;
        inner.presence.goodbye().await;
        inner.flush().await;
    }

    async fn register(&self, method: MethodInfo, topics: &[&str], handler: Handler) -> Result<()> {
        let inner = &self.inner;
        if inner.stop_requests.is_cancelled() {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "server is shutting down",
            ));
        }
        let topics: Arc<[String]> = topics.iter().map(|t| t.to_string()).collect();
        let key = (method.name(), topics.to_vec());
        let stop = CancellationToken::new();
        {
            let mut regs = lock(&inner.registrations);
            if regs.contains_key(&key) {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("{} is already registered on {:?}", method.name(), topics),
                ));
            }
            regs.insert(key.clone(), stop.clone());
        }
        // Dropped before it is committed (a failed subscribe, or the future dropped), the
        // reservation frees the key, so the method can be registered again.
        let mut reservation = Reservation {
            registrations: &inner.registrations,
            key: Some(key),
        };
        let options = SubscribeOptions {
            capacity: inner.options.subscription_capacity,
        };
        let req_channel = match handler {
            Handler::Unary(_) => Channel::request(
                inner.service.clone(),
                method.name(),
                topics.iter().cloned(),
                method.is_queued(),
            ),
            // Stream frames to servers always fan out; the claim picks the server.
            Handler::Stream(_) => {
                Channel::server_stream(inner.service.clone(), method.name(), topics.iter().cloned())
            }
        };
        let claim_channel =
            Channel::claim_response(inner.service.clone(), method.name(), topics.iter().cloned());
        let subscribed = async {
            let requests = inner.bus.subscribe(&req_channel, options).await?;
            // Claim responses also carry cancellations, so every method listens for them.
            let claims = inner.bus.subscribe(&claim_channel, options).await?;
            Ok::<_, crate::bus::BusError>((requests, claims))
        }
        .await;
        let (requests, claims) = subscribed?;
        reservation.key = None;
        let is_stream = matches!(handler, Handler::Stream(_));
        // Discovery hook: requests stop while not serving (streams keep their frames).
        let requests = crate::discovery::Gate::new(
            requests,
            (!is_stream).then(|| inner.presence.health_watch()),
            inner.bus.clone(),
            req_channel,
            options,
        );
        let reg = Registration {
            method,
            topics,
            stop,
            handlers: TaskTracker::new(),
            handler,
        };
        inner
            .readers
            .spawn(request_loop(inner.clone(), requests, reg.clone()));
        inner
            .readers
            .spawn(claim::claim_loop(inner.clone(), claims, reg.clone()));
        inner
            .presence
            .registered(&method, &reg.topics, is_stream, || presence_identity(inner));
        Ok(())
    }
}

/// A registration key taken by a registration still subscribing.
struct Reservation<'a> {
    registrations: &'a Mutex<HashMap<RegistrationKey, CancellationToken>>,
    /// `None` once the registration is committed.
    key: Option<RegistrationKey>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(self.registrations).remove(&key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the map half-updated: recover it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who the server is, for its discovery announcer (which must not keep it alive).
fn presence_identity(inner: &Arc<Inner>) -> crate::discovery::Identity {
    let weak = Arc::downgrade(inner);
    crate::discovery::Identity {
        bus: inner.bus.clone(),
        service: inner.service.clone(),
        server_id: inner.id.clone(),
        snapshot: Arc::new(move || {
            let inner = weak.upgrade()?;
            let s = inner.counters.snapshot();
            Some([
                s.received,
                s.handled,
                s.malformed,
                s.shed,
                inner.running.len() as u64,
            ])
        }),
    }
}

async fn request_loop(inner: Arc<Inner>, mut sub: crate::discovery::Gate, reg: Registration) {
    // Streams keep receiving frames after new opens stop, until the streams already open end.
    let keeps_routing = matches!(reg.handler, Handler::Stream(_));
    let mut accepting = true;
    // Built once: re-created per message they would re-register with their tokens each time.
    let drained = reg.handlers.wait();
    let stop_all = inner.stop_all.cancelled();
    let deregistered = reg.stop.cancelled();
    let stopping = inner.stop_requests.cancelled();
    tokio::pin!(drained, stop_all, deregistered, stopping);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop_all => break,
            _ = &mut deregistered, if accepting => {
                accepting = false;
                reg.handlers.close();
                if !keeps_routing {
                    break;
                }
            }
            _ = &mut stopping, if accepting => {
                accepting = false;
                if let Handler::Unary(processor) = &reg.handler {
                    // What the bus delivered before the stop is this server's to handle.
                    for payload in sub.drain_now() {
                        inner.accept(&reg, processor, payload);
                    }
                }
                reg.handlers.close();
                if !keeps_routing {
                    break;
                }
            }
            _ = &mut drained, if !accepting => break,
            payload = sub.recv() => match payload {
                Some(payload) => match &reg.handler {
                    Handler::Unary(processor) => inner.accept(&reg, processor, payload),
                    Handler::Stream(processor) => {
                        let accepting = accepting && inner.presence.is_serving();
                        inner.accept_frame(&reg, processor, payload, accepting);
                    }
                },
                None => break,
            },
        }
    }
    drop(sub);
    reg.handlers.close();
}

impl Inner {
    /// Flushes the bus, bounded: a broker that went away cannot hold a shutdown.
    async fn flush(&self) {
        match tokio::time::timeout(FINAL_PUBLISH_BOUND, self.bus.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "failed to flush the bus at shutdown"),
            Err(_) => tracing::warn!("flushing the bus at shutdown timed out"),
        }
    }

    /// The error a handler cut short by kill or by the drain deadline answers with.
    fn stopped_error(&self) -> Error {
        if self
            .drain_expired
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            Error::new(ErrorCode::Unavailable, "server shut down")
        } else {
            Error::new(ErrorCode::Unavailable, "server killed")
        }
    }

    fn kill_now(&self) {
        self.presence.stop();
        self.kill.cancel();
        self.stop_all.cancel();
        self.stop_requests.cancel();
    }

    /// Decodes a request and hands it to a task of its own.
    fn accept(self: &Arc<Self>, reg: &Registration, processor: &Processor, payload: Bytes) {
        let Some(req) = decode_request(payload) else {
            Counters::incr(&self.counters.malformed);
            tracing::debug!(service = %self.service, method = reg.method.name(), "dropped a malformed request");
            return;
        };
        let Some(deadline) = crate::time::deadline_from_expiry(req.expiry) else {
            Counters::incr(&self.counters.expired);
            tracing::debug!(request_id = %req.request_id, "dropped an expired request");
            return;
        };
        let permit = match self.try_acquire() {
            Ok(permit) => permit,
            Err(()) => {
                Counters::incr(&self.counters.shed);
                // A fan-out claim method has other servers that will claim; stay silent.
                let others_will_claim = reg.method.requires_claim() && !reg.method.is_queued();
                if !others_will_claim {
                    let inner = self.clone();
                    reg.handlers.spawn(async move {
                        let err = Error::new(ErrorCode::ResourceExhausted, "server at capacity");
                        inner.respond(&req, Err(err)).await;
                    });
                }
                return;
            }
        };
        Counters::incr(&self.counters.received);
        let work = processor(self.clone(), req, deadline, reg.topics.clone());
        reg.handlers.spawn(async move {
            work.await;
            drop(permit);
        });
    }

    /// Handles a frame on a stream channel: an open starts a task, other frames go to the
    /// stream they belong to (frames of streams served elsewhere are ignored).
    fn accept_frame(
        self: &Arc<Self>,
        reg: &Registration,
        processor: &StreamProcessor,
        payload: Bytes,
        accepting: bool,
    ) {
        let frame = wire::decode_envelope(payload)
            .ok()
            .filter(|msg| msg.type_url == wire::STREAM_TYPE_URL)
            .and_then(|msg| wire::Stream::decode(msg.value).ok());
        let Some(frame) = frame else {
            Counters::incr(&self.counters.malformed);
            return;
        };
        if !matches!(frame.body, Some(Body::Open(_))) {
            if let Some(core) = self.streams.get(&frame.stream_id).map(|c| c.clone()) {
                core.on_frame(frame);
            }
            return;
        }
        if !accepting {
            // Shutting down or deregistered: other servers may claim it.
            return;
        }
        let Some(deadline) = crate::time::deadline_from_expiry(frame.expiry) else {
            Counters::incr(&self.counters.expired);
            return;
        };
        let Ok(permit) = self.try_acquire() else {
            // Other servers may claim it; this one stays silent.
            Counters::incr(&self.counters.shed);
            return;
        };
        Counters::incr(&self.counters.received);
        let work = processor(self.clone(), frame, deadline, reg.topics.clone());
        reg.handlers.spawn(async move {
            work.await;
            drop(permit);
        });
    }

    fn try_acquire(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        match &self.limiter {
            None => Ok(None),
            Some(limiter) => limiter
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| ()),
        }
    }

    async fn respond(&self, req: &Request, result: Result<Bytes>) {
        let mut resp = Response {
            request_id: req.request_id.clone(),
            server_id: self.id.to_string(),
            sent_at: crate::time::now_unix_nanos(),
            ..Default::default()
        };
        match result {
            Ok(raw) => resp.raw_response = raw,
            Err(err) => set_error(&mut resp, &err),
        }
        let mut payload = wire::encode_envelope(wire::RESPONSE_TYPE_URL, &resp);
        let limit = self.bus.max_payload();
        if payload.len() > limit {
            let err = Error::new(
                ErrorCode::Internal,
                format!(
                    "response of {} bytes exceeds the bus limit of {limit} bytes",
                    payload.len()
                ),
            );
            resp.raw_response = Bytes::new();
            set_error(&mut resp, &err);
            payload = wire::encode_envelope(wire::RESPONSE_TYPE_URL, &resp);
        }
        let channel = Channel::response(self.service.clone(), req.client_id.as_str());
        if let Err(err) = self.bus.publish(&channel, payload).await {
            Counters::incr(&self.counters.publish_errors);
            tracing::warn!(%err, request_id = %req.request_id, "failed to publish a response");
        }
    }
}

/// Keeps a handler's cancellation token findable while it runs, even if the handler panics.
struct Running<'a> {
    inner: &'a Inner,
    request_id: &'a str,
}

impl<'a> Running<'a> {
    fn register(inner: &'a Inner, request_id: &'a str, cancel: &CancellationToken) -> Self {
        inner.running.insert(request_id.to_owned(), cancel.clone());
        Running { inner, request_id }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.inner.running.remove(self.request_id);
    }
}

fn set_error(resp: &mut Response, err: &Error) {
    resp.error = err.message().to_owned();
    resp.code = err.wire_code().to_owned();
    resp.error_details = err.details().to_vec();
}

fn decode_request(payload: Bytes) -> Option<Request> {
    let msg = wire::decode_envelope(payload).ok()?;
    if msg.type_url != wire::REQUEST_TYPE_URL {
        return None;
    }
    Request::decode(msg.value).ok()
}

/// Builds the per-request work of a unary or multi method: decode, claim, handle, respond.
fn unary_processor<Req, Resp, H, Fut>(
    method: MethodInfo,
    handler: H,
    affinity: Option<AffinityFn<Req>>,
) -> Processor
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Send + 'static,
    H: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(
        move |inner: Arc<Inner>, req: Request, deadline: Instant, topics: Arc<[String]>| {
            let handler = handler.clone();
            let affinity = affinity.clone();
            Box::pin(async move {
                let received_at = Instant::now();
                let typed = match Req::decode(req.raw_request.clone()) {
                    Ok(typed) => typed,
                    Err(err) => {
                        Counters::incr(&inner.counters.malformed);
                        inner
                            .respond(&req, Err(Error::malformed_request(err)))
                            .await;
                        return;
                    }
                };
                // A queue-routed request reached this server alone: answer a Rust caller directly.
                let direct = req.x_direct && method.is_queued();
                if method.requires_claim() && !direct {
                    let score = affinity.as_ref().map_or(1.0, |f| f(&typed));
                    if !inner
                        .claim(&req.request_id, &req.client_id, score, deadline)
                        .await
                    {
                        return;
                    }
                }
                let cancel = inner.kill.child_token();
                let _running = Running::register(&inner, &req.request_id, &cancel);
                let mut timer = inner.presence.begin(method.name());
                let trace = TraceContext::from_metadata(&req.metadata).map(|parent| parent.child());
                let span = tracing::debug_span!(
                    "psrpc.server",
                    service = %inner.service,
                    method = method.name(),
                    topics = ?topics,
                    request_id = %req.request_id,
                    client_id = %req.client_id,
                    server_id = %inner.id,
                    trace_id = tracing::field::Empty,
                    code = tracing::field::Empty,
                );
                if let Some(trace) = &trace {
                    span.record("trace_id", trace.trace_id());
                }
                let ctx = RequestContext {
                    service: inner.service.clone(),
                    method,
                    topics,
                    request_id: req.request_id.clone(),
                    client_id: req.client_id.clone(),
                    server_id: inner.id.clone(),
                    metadata: req.metadata.clone(),
                    deadline,
                    cancel: cancel.clone(),
                    multi: req.multi,
                    received_at,
                    sent_at: req.sent_at,
                    trace: trace.clone(),
                };
                let serve = move |ctx: RequestContext| -> BoxResponse {
                    Box::pin(
                        handler(ctx, typed)
                            .map(|r| r.map(|resp| Bytes::from(resp.encode_to_vec()))),
                    )
                };
                let work = if inner.chain.is_empty() {
                    serve(ctx)
                } else {
                    let call = ServerCall {
                        ctx,
                        request: req.raw_request.clone(),
                    };
                    ServerNext::new(inner.chain.clone(), move |call: ServerCall| serve(call.ctx))
                        .run(call)
                };
                // Calls the handler makes continue the caller's trace.
                let work = match trace {
                    Some(trace) => Box::pin(trace.scope(work)) as BoxResponse,
                    None => work,
                };
                let result = tokio::select! {
                    biased;
                    _ = inner.kill.cancelled() => Err(inner.stopped_error()),
                    result = work.instrument(span.clone()) => result,
                    _ = tokio::time::sleep_until(deadline) => Err(Error::timed_out()),
                };
                span.record(
                    "code",
                    result.as_ref().err().map_or("ok", |e| e.code().as_str()),
                );
                Counters::incr(&inner.counters.handled);
                if let Some(mut timer) = timer.take() {
                    timer.ok(result.is_ok());
                }
                if cancel.is_cancelled() && !inner.kill.is_cancelled() {
                    // The caller is gone: nobody would read a response.
                    Counters::incr(&inner.counters.cancelled);
                    return;
                }
                inner.respond(&req, result).await;
            })
        },
    )
}

/// Builds the work of a stream open: claim, acknowledge, run the handler, close.
fn stream_processor<In, Out, H, Fut>(method: MethodInfo, handler: H) -> StreamProcessor
where
    In: Message + Default + Send + 'static,
    Out: Message + Send + 'static,
    H: Fn(RequestContext, Stream<Out, In>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(
        move |inner: Arc<Inner>, open: wire::Stream, deadline: Instant, topics: Arc<[String]>| {
            let handler = handler.clone();
            Box::pin(async move {
                let received_at = Instant::now();
                let Some(Body::Open(opening)) = &open.body else {
                    return;
                };
                if method.requires_claim()
                    && !inner
                        .claim(&open.request_id, &opening.node_id, 1.0, deadline)
                        .await
                {
                    return;
                }
                let peer = Channel::client_stream(inner.service.clone(), opening.node_id.as_str());
                let (core, inbox) = StreamCore::new(
                    open.stream_id.clone(),
                    open.request_id.clone(),
                    inner.bus.clone(),
                    peer,
                    inner.options.stream,
                );
                core.set_peer_window(opening.x_window);
                inner.streams.insert(open.stream_id.clone(), core.clone());
                let trace =
                    TraceContext::from_metadata(&opening.metadata).map(|parent| parent.child());
                let mut ctx = RequestContext {
                    service: inner.service.clone(),
                    method,
                    topics,
                    request_id: open.request_id.clone(),
                    client_id: opening.node_id.clone(),
                    server_id: inner.id.clone(),
                    metadata: opening.metadata.clone(),
                    // A stream lives until either side closes it.
                    deadline: crate::time::deadline_in(STREAM_HORIZON),
                    cancel: core.closed.clone(),
                    multi: false,
                    received_at,
                    sent_at: open.sent_at,
                    trace: trace.clone(),
                };
                if let Err(err) =
                    crate::interceptor::each(&inner.chain, |i| i.on_stream_open(&mut ctx))
                {
                    // Refused: the client's open fails with this error.
                    if let Err(err) = core.close_now(StreamEnd::ClosedWithError(err)).await {
                        tracing::debug!(%err, stream_id = %open.stream_id, "failed to refuse a stream");
                    }
                    inner.streams.remove(&open.stream_id);
                    return;
                }
                if let Err(err) = core.ack_open(&open).await {
                    Counters::incr(&inner.counters.publish_errors);
                    tracing::warn!(%err, stream_id = %open.stream_id, "failed to acknowledge a stream open");
                    inner.streams.remove(&open.stream_id);
                    return;
                }
                let span = tracing::debug_span!(
                    "psrpc.server.stream",
                    service = %inner.service,
                    method = method.name(),
                    stream_id = %open.stream_id,
                    client_id = %opening.node_id,
                    server_id = %inner.id,
                    trace_id = tracing::field::Empty,
                    code = tracing::field::Empty,
                );
                if let Some(trace) = &trace {
                    span.record("trace_id", trace.trace_id());
                }
                let stream = Stream::new(core.clone(), inbox, None, false);
                let chain = inner.chain.clone();
                let served = async {
                    let observed = ctx.clone();
                    let handled = handler(ctx, stream);
                    let result = match trace {
                        Some(trace) => trace.scope(handled).await,
                        None => handled.await,
                    };
                    for interceptor in chain.iter() {
                        interceptor.on_stream_close(&observed, &result);
                    }
                    let code = result.as_ref().err().map_or("ok", |e| e.code().as_str());
                    tracing::Span::current().record("code", code);
                    if let Err(err) = core.close(result.err()).await {
                        tracing::debug!(%err, "failed to close a stream");
                    }
                };
                let Some(mut driver) = core.spawn_driver() else {
                    // Only without a runtime, which cannot be while this task runs.
                    inner.streams.remove(&open.stream_id);
                    return;
                };
                tokio::select! {
                    biased;
                    // Killed, or shut down past the drain deadline: the handler is dropped.
                    _ = inner.kill.cancelled() => drop(core.close_queued(StreamEnd::ServerShutdown)),
                    _ = served.instrument(span) => {}
                }
                // The driver publishes what is queued (the close last) and ends; a stuck bus
                // cannot hold the server past the bound.
                if tokio::time::timeout(FINAL_PUBLISH_BOUND, &mut driver)
                    .await
                    .is_err()
                {
                    driver.abort();
                    tracing::debug!(stream_id = %open.stream_id, "stream driver did not finish in time");
                }
                inner.streams.remove(&open.stream_id);
                Counters::incr(&inner.counters.handled);
            })
        },
    )
}

/// The default of [`ServerOptions::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long shutdown waits for final publishes (answers of cancelled handlers, stream closes,
/// the bus flush) before it gives up on them: a broker that went away cannot hold it.
pub const FINAL_PUBLISH_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// The deadline a stream handler's context reports: streams have none.
const STREAM_HORIZON: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
