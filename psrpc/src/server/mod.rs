//! The server side: handlers for methods, topic registration, publishing to subscribers.
//!
//! A [`Server`] serves one service. Each registration (a method, optionally on a tuple of
//! topics) subscribes to the method's request channel and its claim-response channel and runs
//! one reader task per channel; each accepted request runs in one task of its own.
//!
//! Rooms: the `Server` handle and its lifecycle (here), [`ServerOptions`] (`options.rs`),
//! registration (`register.rs`), the reader loop and admission (`dispatch.rs`), the claim
//! exchange (`claim.rs`), the processors of requests and streams (`process.rs`), the handler's
//! [`RequestContext`] (`context.rs`) and counters (`stats.rs`).
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
mod dispatch;
mod options;
mod process;
mod register;
mod stats;

use crate::sync::lock;
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
use dispatch::request_loop;
pub use options::{DEFAULT_DRAIN_TIMEOUT, FINAL_PUBLISH_BOUND, ServerOptions};
use process::{decode_request, set_error, stream_processor, unary_processor};
use stats::Counters;
pub use stats::ServerStats;

use crate::bus::{Bus, IntoBus, SubscribeOptions};
use crate::interceptor::{BoxResponse, Interceptors, ServerCall, ServerInterceptor, ServerNext};
use crate::stream::{Stream, StreamCore, StreamEnd, StreamOptions, StreamRegistry};
use crate::trace::TraceContext;
use crate::wire::{self, ClaimResponse, Request, Response, stream_frame::Body};
use crate::{Channel, Error, ErrorCode, MethodInfo, MethodKind, Result};

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
    dyn Fn(Arc<Inner>, wire::StreamFrame, Instant, Arc<[String]>) -> BoxFuture<'static, ()>
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
        self.publish_named(method, topics, &M::full_name(), msg)
            .await
    }

    /// Like [`publish`](Self::publish), for a message named by its proto full name
    /// (`google.protobuf.Struct`) rather than by [`prost::Name`]: the well-known types such as
    /// `prost_types::Struct` do not implement it. Generated servers use this.
    ///
    /// # Errors
    /// `invalid_argument` for a payload over the bus limit, or the bus error of a failed publish.
    ///
    /// # Cancel safety
    /// Dropped before it completes, the message may or may not have been published; the
    /// server is unaffected.
    pub async fn publish_named<M: Message>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        full_name: &str,
        msg: &M,
    ) -> Result<()> {
        method.expect(method.is_subscription(), "publish")?;
        let payload = wire::encode_envelope(&wire::type_url_for(full_name), msg);
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
}
